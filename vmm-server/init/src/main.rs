//! `init`: the root task, the first EL0 program `hyp` starts. The kernel
//! gives it every capability there is at boot (all untyped memory, the IRQ
//! control, its own TCB, CNode and VSpace), and from them it builds the
//! rest of the system.
//!
//! For now it reads the boot-info page, then runs `ping-pong`, a test of
//! the kernel's objects and IPC from user space: it creates a second
//! thread in an address space of its own and exchanges 10 000 calls with
//! it (`ping_pong.rs`).
//!
//! It is linked at `hyp_abi::user_layout::IMAGE_BASE` for
//! `aarch64-unknown-none-softfloat` (`build.rs`, `link.ld.in`), and the
//! kernel embeds the ELF. On the host the crate compiles to a stub that
//! says so, and its logic runs as host tests.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![deny(unsafe_code)]

#[cfg(any(target_os = "none", test))]
mod ping_pong;
#[cfg(any(target_os = "none", test))]
mod slots;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "init is the root task: it runs at EL0 under hyp, which embeds and starts it; \
         build it with `cargo build -p init --target aarch64-unknown-none-softfloat --release`."
    );
    std::process::exit(1);
}

#[cfg(target_os = "none")]
hyp_user::entry!(main);

/// The root task: started with `sp` = `user_layout::STACK_TOP` and the
/// boot-info page's address.
#[cfg(target_os = "none")]
fn main(boot_info_address: u64) -> ! {
    use hyp_user::{BootInfo, println, runtime};

    let page = match runtime::read_boot_info_page(boot_info_address) {
        Ok(page) => page,
        Err(error) => {
            println!("init: FAIL: boot info: {error}");
            idle()
        }
    };
    let boot_info = match BootInfo::parse(&page) {
        Ok(boot_info) => boot_info,
        Err(error) => {
            println!("init: FAIL: boot info: {error}");
            idle()
        }
    };
    println!(
        "init: boot info: {} untyped, first free slot {}, cores {}",
        boot_info.untyped_count(),
        boot_info.first_empty_slot(),
        boot_info.cores()
    );
    let mut slots =
        slots::SlotAllocator::new(boot_info.first_empty_slot(), boot_info.empty_slots());
    match ping_pong::run(&boot_info, &mut slots) {
        Ok(round_trips) => {
            println!("init: ping-pong: {round_trips} round trips, badges checked");
        }
        Err(failure) => println!("init: ping-pong: FAIL: {failure}"),
    }
    idle()
}

/// Init has nothing more to do: it suspends itself. Should the kernel
/// refuse that, it says so and yields forever.
#[cfg(target_os = "none")]
fn idle() -> ! {
    use hyp_abi::initial_slots;
    use hyp_user::{Tcb, ipc, println};

    if let Err(error) = Tcb::new(initial_slots::TCB).suspend() {
        println!("init: cannot suspend itself ({error}); yielding forever");
    }
    loop {
        ipc::yield_now();
    }
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    hyp_user::runtime::panic_report("init", info)
}
