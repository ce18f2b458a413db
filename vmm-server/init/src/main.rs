//! `init`: the root task, the first EL0 program `hyp` starts. The kernel
//! gives it every capability there is at boot (all untyped memory, the IRQ
//! control, its own TCB, CNode and VSpace), and from them it builds the
//! rest of the system.
//!
//! For now it reads the boot-info page, splits its untyped RAM into a
//! pool of 2 MiB blocks (`untyped.rs`, a buddy allocator; it prints
//! `init: untyped pool: N blocks of 2 MiB (M MiB)`), then runs the
//! kernel's system tests from user space, one module each, through the
//! runner in `suite.rs` (one line per test, `init: <name>: PASS <facts>` or
//! `init: <name>: FAIL <reason>`, then `init: all N tests passed` or
//! `init: M of N tests failed`):
//!
//! - `ping-pong` (`ping_pong.rs`): 10 000 calls with a child thread in an
//!   address space of its own; `ping-pong-smp`, with more than one core:
//!   1 000 with the child on core 1;
//! - `fault` (`fault.rs`): a memory fault fixed by its handler, then one
//!   that kills the thread;
//! - `errors` (`errors.rs`): bogus requests get their exact errors;
//! - `revoke` (`revoke.rs`): revoking an untyped block reclaims and zeroes
//!   its memory;
//! - `timer-irq` (`timer_irq.rs`): the virtual timer's interrupt wakes a
//!   thread through a notification;
//! - `priorities` (`priorities.rs`): a spinning thread does not starve a
//!   higher-priority one.
//!
//! Each test takes its objects from an arena of its own (`arena.rs`): a
//! block from the pool, taken apart and given back afterwards; child
//! threads are built by `thread.rs`.
//!
//! It is linked at `hyp_abi::user_layout::IMAGE_BASE` for
//! `aarch64-unknown-none-softfloat` (`build.rs`, `link.ld.in`), and the
//! kernel embeds the ELF. On the host the crate compiles to a stub that
//! says so, and its logic runs as host tests.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![deny(unsafe_code)]

#[cfg(any(target_os = "none", test))]
mod arena;
#[cfg(all(target_os = "none", feature = "bench"))]
mod bench;
#[cfg(any(target_os = "none", test))]
mod errors;
#[cfg(any(target_os = "none", test))]
mod fault;
#[cfg(target_os = "none")]
mod guest;
#[cfg(any(target_os = "none", test))]
mod ping_pong;
#[cfg(any(target_os = "none", test))]
mod priorities;
#[cfg(any(target_os = "none", test))]
mod revoke;
#[cfg(any(target_os = "none", test))]
mod slots;
#[cfg(any(target_os = "none", test))]
mod suite;
#[cfg(any(target_os = "none", test))]
mod thread;
#[cfg(any(target_os = "none", test))]
mod timer_irq;
#[cfg(any(target_os = "none", test))]
mod untyped;
#[cfg(target_os = "none")]
mod vmm;

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
#[cfg_attr(
    feature = "bench",
    allow(
        unreachable_code,
        reason = "a benchmark build stops after the benchmarks"
    )
)]
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
    // A benchmark build measures instead of testing (and retypes the
    // boot untypeds itself, so the pool is not made).
    #[cfg(feature = "bench")]
    {
        if let Err(error) = bench::run(&boot_info, &mut slots) {
            println!("bench: FAIL: {error}");
        }
        idle()
    }
    let mut pool = untyped::UntypedPool::new();
    if let Err(error) = pool.fill(&boot_info, &mut slots) {
        println!("init: FAIL: untyped pool: {error}");
    }
    println!(
        "init: untyped pool: {} blocks of 2 MiB ({} MiB)",
        pool.blocks(),
        pool.blocks() * 2
    );
    suite::run_all(&boot_info, &mut pool, &mut slots, suite::Console);
    if let Some(supervisor) = guest::start_all(&boot_info, &mut pool, &mut slots) {
        supervisor.run()
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
