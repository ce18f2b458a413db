//! `test-guest`: a small bare-metal guest kernel that checks, from EL1,
//! what the hypervisor gives a guest. It prints through the guest's PL011
//! at `0x0900_0000` and runs these checks, one line each
//! (`test-guest: <name>: PASS <facts>` or `test-guest: <name>: FAIL
//! <reason>`), then `test-guest: all N checks passed` or `test-guest: M of
//! N checks failed`, then powers off with PSCI `SYSTEM_OFF`:
//!
//! - `console`: the banner went out (`uart.rs`);
//! - `hvc`: PSCI `PSCI_VERSION` through `hvc #0` returns 1.1 (`psci.rs`);
//! - `vtimer`: the EL1 virtual timer's PPI 27 arrives through the GIC,
//!   polled and then waking WFI (`checks.rs`, `gic.rs`);
//! - `sgi`: SGI 5 sent to itself arrives;
//! - `aarch32-el0`: AArch32 code at EL0 reads the GIC distributor's
//!   `GICD_TYPER` (an MMIO exit) and goes on after the exit (`boot.S`,
//!   `run_aarch32_user`);
//! - `isolation`, only with a `probe=0xADDR` word in `/chosen/bootargs`:
//!   reading that physical address, outside the guest's RAM, takes an
//!   abort (the synchronous handler in `boot.rs` prints `test-guest:
//!   isolation: abort at 0x... (ESR 0x...)` and skips the load).
//!
//! If `SYSTEM_OFF` returns it prints `test-guest: FAIL SYSTEM_OFF returned`
//! and waits forever.
//!
//! The GIC version and addresses come from the device tree (`platform.rs`).
//! Entry is the Linux arm64 boot protocol (`boot.S`: an arm64 `Image`
//! header, EL1h, MMU off, `x0` = device tree), linked at `0x4008_0000`
//! (`build.rs`, `link.ld`). Build and run: `images/test-guest/README.md`.
//! On the host the crate compiles to a stub, and its pure logic
//! (`logic.rs`) runs as host tests.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![allow(
    clippy::result_large_err,
    reason = "a failure carries its reason as a fixed-size text (no heap); it is returned once per check"
)]

#[cfg(target_os = "none")]
mod bench;
#[cfg(target_os = "none")]
mod boot;
#[cfg(target_os = "none")]
mod checks;
#[cfg(target_os = "none")]
mod gic;
#[cfg(any(target_os = "none", test))]
mod logic;
#[cfg(target_os = "none")]
mod mmio;
#[cfg(target_os = "none")]
mod platform;
#[cfg(target_os = "none")]
mod psci;
#[cfg(target_os = "none")]
mod sysreg;
#[cfg(target_os = "none")]
mod uart;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "test-guest is a guest kernel for EL1: build it with \
         `cargo build -p test-guest --target aarch64-unknown-none-softfloat --release` \
         (see images/test-guest/README.md)."
    );
    std::process::exit(1);
}

/// The VMM's crash-test device (`test-crash-device` in the system
/// description).
#[cfg(target_os = "none")]
const CRASH_DEVICE: usize = 0x0a00_0000;

/// Entered from `_start` (`boot.S`) with the device tree address, on the
/// stack, with BSS zeroed and the vectors installed.
#[cfg(target_os = "none")]
extern "C" fn guest_main(device_tree: usize) -> ! {
    use checks::Suite;
    use uart::println;

    let level = sysreg::current_el();
    println!(
        "test-guest {}: Rust test guest at EL{level}, device tree at {device_tree:#x}",
        env!("CARGO_PKG_VERSION")
    );
    if level != 1 {
        println!(
            "test-guest: FAIL entered at EL{level}: this guest runs at EL1 \
             (under the hypervisor, or QEMU without virtualization=on)"
        );
        psci::halt();
    }
    sysreg::unmask_serrors();
    let mut suite = Suite::default();
    suite.check("console", checks::console);

    let platform = platform::discover(device_tree);
    println!(
        "test-guest: {} ({}): distributor {:#x}, {} {:#x}",
        platform.gic.version,
        platform.gic_source,
        platform.gic.distributor.0,
        match platform.gic.version {
            logic::GicVersion::V2 => "CPU interface",
            logic::GicVersion::V3 => "redistributors",
        },
        platform.gic.cpu.0
    );
    let gic = gic::Gic::init(&platform.gic);

    if platform.bench {
        bench::run(gic.as_ref().ok());
        psci::power_off()
    }
    suite.check("hvc", checks::hvc);
    suite.check("vtimer", || checks::vtimer(gic.as_ref()));
    suite.check("sgi", || checks::sgi(gic.as_ref()));
    suite.check("aarch32-el0", || checks::aarch32_el0(gic.as_ref()));
    match &platform.probe {
        Ok(Some(address)) => {
            suite.check("isolation", || checks::isolation(*address, platform.ram()));
        }
        Ok(None) => {}
        Err(reason) => suite.check("isolation", || Err(reason.clone())),
    }
    suite.summary();
    if platform.crash_vmm {
        println!(
            "test-guest: crash-vmm: writing to the crash-test device at {CRASH_DEVICE:#x}; \
             this guest stops with its VMM"
        );
        // SAFETY: a store to an address outside the guest's RAM, where its
        // VMM emulates the crash-test device (or, without one, the store
        // aborts); no Rust object lives there.
        unsafe { core::ptr::write_volatile(CRASH_DEVICE as *mut u32, 0xdead) };
        println!("test-guest: FAIL crash-vmm: the write to the crash-test device returned");
    }
    psci::power_off()
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    uart::println!("test-guest: FAIL panic: {info}");
    psci::power_off()
}
