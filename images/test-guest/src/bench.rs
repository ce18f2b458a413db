//! Benchmarks (the boot argument `bench`), for `cargo xtask bench` under
//! the hypervisor's benchmark build and QEMU `-icount shift=0`, where one
//! instruction is one tick of the PMU cycle counter (which that build
//! enables, counting EL0, EL1 and EL2). Each figure is the median of
//! [`ROUNDS`] samples with the counter's own overhead subtracted:
//!
//! - `null HVC round trip`: `hvc #0` with `PSCI_VERSION`, answered by the
//!   VMM (trap, message to the VMM, its reply, back in the guest);
//! - `MMIO read round trip`: a load of the emulated GIC distributor's
//!   `GICD_TYPER` (a stage-2 fault, the VMM's model, the value written
//!   into the register);
//! - `UART flag register read`: a load of the PL011's flag register,
//!   which the guest reads from the VMM's UART register page (no exit);
//! - `UART data register write round trip`: a carriage return stored to
//!   the PL011's data register (what a console does for every byte: a
//!   stage-2 permission fault on the register page, the VMM's model and
//!   console; the VMM's console drops carriage returns);
//! - `virtual IRQ injection to delivery`: from the VMM's `VcpuInjectIrq`
//!   (it reads the counter just before, and returns that reading; the VMM
//!   serves the vendor hypercall [`INJECT_AND_TIME`] only in its
//!   `guest-bench` build) to the first instruction of the guest's IRQ
//!   handler.

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::gic::{self, Gic};
use crate::psci;
use crate::sysreg;
use crate::uart::{self, println};

/// Samples per figure.
const ROUNDS: usize = 201;
/// The VMM's benchmark hypercall (SMCCC vendor-specific hypervisor
/// service, 32-bit): `x1` = an SGI to inject now; returns the counter
/// read just before the injection.
const INJECT_AND_TIME: u64 = 0x8600_0001;
/// The SGI the injection benchmark uses.
const BENCH_SGI: u32 = 7;

/// The counter at the IRQ handler's entry (written by [`gic::handle_irq`]
/// while [`TIMING`] is set).
pub(crate) static IRQ_ENTRY: AtomicU64 = AtomicU64::new(0);
/// Whether the IRQ handler records [`IRQ_ENTRY`].
pub(crate) static TIMING: core::sync::atomic::AtomicBool =
    core::sync::atomic::AtomicBool::new(false);

/// The cycle counter, after an instruction barrier.
#[inline(always)]
pub(crate) fn cycles() -> u64 {
    let value: u64;
    // SAFETY: reads PMCCNTR_EL0, which EL1 may read (the hypervisor does
    // not trap the PMU); no memory is touched.
    unsafe {
        asm!("isb", "mrs {}, pmccntr_el0", out(reg) value, options(nomem, nostack, preserves_flags))
    };
    value
}

fn median(samples: &mut [u64; ROUNDS]) -> u64 {
    samples.sort_unstable();
    samples[ROUNDS / 2]
}

fn measure(mut body: impl FnMut() -> u64) -> u64 {
    let mut samples = [0u64; ROUNDS];
    for sample in &mut samples {
        *sample = body();
    }
    median(&mut samples)
}

/// Runs the benchmarks and prints one line each, then `test-guest: bench: done`.
pub(crate) fn run(gic: Option<&Gic>) {
    let overhead = measure(|| {
        let start = cycles();
        cycles() - start
    });
    let hvc = measure(|| {
        let start = cycles();
        let _ = psci::call(psci::PSCI_VERSION);
        cycles() - start
    });
    let flags = measure(|| {
        let start = cycles();
        let _ = uart::flags();
        cycles() - start
    });
    println!(
        "test-guest: bench: null HVC round trip: {} instructions",
        hvc.saturating_sub(overhead)
    );
    if let Some(gic) = gic {
        let mmio = measure(|| {
            let start = cycles();
            let _ = gic.distributor_type();
            cycles() - start
        });
        println!(
            "test-guest: bench: MMIO read round trip: {} instructions",
            mmio.saturating_sub(overhead)
        );
    }
    println!(
        "test-guest: bench: UART flag register read (register page, no exit): {} instructions",
        flags.saturating_sub(overhead)
    );
    let data = measure(|| {
        let start = cycles();
        uart::write_data(b'\r');
        cycles() - start
    });
    println!(
        "test-guest: bench: UART data register write round trip: {} instructions",
        data.saturating_sub(overhead)
    );
    match gic {
        Some(gic) => {
            gic.enable_private(BENCH_SGI);
            TIMING.store(true, Ordering::SeqCst);
            let delivery = measure(|| {
                sysreg::mask_irqs();
                gic::clear_received();
                let start = inject_and_time(BENCH_SGI);
                sysreg::unmask_irqs();
                while gic::received() == 0 {}
                sysreg::mask_irqs();
                IRQ_ENTRY.load(Ordering::SeqCst).wrapping_sub(start)
            });
            TIMING.store(false, Ordering::SeqCst);
            println!(
                "test-guest: bench: virtual IRQ injection to delivery: {} instructions",
                delivery.saturating_sub(overhead)
            );
        }
        None => println!("test-guest: bench: FAIL no GIC for the injection benchmark"),
    }
    println!("test-guest: bench: counter overhead {overhead} instructions, medians of {ROUNDS}");
    println!("test-guest: bench: done");
}

/// Asks the VMM to inject `sgi` now; returns its counter reading.
fn inject_and_time(sgi: u32) -> u64 {
    let mut x0 = INJECT_AND_TIME;
    // SAFETY: an SMCCC call through the hypervisor's VMM (x0 function,
    // x1 argument; results in x0-x3, x4-x17 may be clobbered); it takes
    // no pointers.
    unsafe {
        asm!("hvc #0", inout("x0") x0, in("x1") u64::from(sgi), clobber_abi("C"), options(nostack));
    }
    x0
}
