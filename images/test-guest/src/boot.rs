//! Entry, exception vectors and the isolation probe (`boot.S`), and the
//! Rust side of exceptions: IRQs go to the GIC code; a synchronous abort of
//! the probe's load is reported and skipped; anything else is reported and
//! powers the guest off.

use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::logic::{EC_DATA_ABORT_SAME_EL, describe_esr, exception_class, vector_name};
use crate::uart::println;
use crate::{gic, psci, sysreg};

/// Bytes the vectors push: x0-x18, x29, x30, rounded up to 16.
const FRAME_SIZE: usize = 176;

global_asm!(
    include_str!("boot.S"),
    main = sym crate::guest_main,
    exception = sym exception,
    FRAME = const FRAME_SIZE,
);

unsafe extern "C" {
    /// One 32-bit load from `address`; `if_aborted` if it took an abort
    /// (which the synchronous handler skipped). Defined in `boot.S`.
    fn probe_read32(address: u64, if_aborted: u32) -> u32;
    /// Runs a 32-bit load of `address` at EL0 in AArch32 and returns what
    /// it read. Defined in `boot.S`.
    fn run_aarch32_user(address: u64) -> u64;
}

/// Reads the 32-bit device register at `address` from EL0 in AArch32 (a
/// VM exit from the lower-EL AArch32 vectors of the core).
pub(crate) fn read32_from_aarch32_el0(address: u64) -> u32 {
    // SAFETY: `run_aarch32_user` keeps every callee-saved register and the
    // stack pointer across the excursion (boot.S); the AArch32 code makes
    // one load from `address`, a device register outside the guest's RAM
    // with the MMU off, and changes no memory.
    let value = unsafe { run_aarch32_user(address) };
    u32::try_from(value & 0xffff_ffff).unwrap_or(0)
}

/// Vector index of a synchronous exception at EL1 with SP_EL1.
const SYNCHRONOUS_CURRENT_EL: u64 = 4;
/// Vector index of an IRQ at EL1 with SP_EL1.
const IRQ_CURRENT_EL: u64 = 5;

/// Whether the probe's load is under way (and may abort).
static PROBE_ARMED: AtomicBool = AtomicBool::new(false);
/// Whether the probe's load aborted.
static PROBE_ABORTED: AtomicBool = AtomicBool::new(false);
/// `ESR_EL1` of the probe's abort.
static PROBE_ESR: AtomicU64 = AtomicU64::new(0);

/// What a probe of an address found.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Probe {
    /// The load completed and read this.
    Read(u32),
    /// The load took a data abort with this syndrome.
    Aborted { esr: u64 },
}

/// Reads the 32-bit word at the physical address `address` (4-byte
/// aligned), which may have nothing behind it.
pub(crate) fn probe(address: u64) -> Probe {
    PROBE_ABORTED.store(false, Ordering::SeqCst);
    PROBE_ARMED.store(true, Ordering::SeqCst);
    // SAFETY: one load from `address`, with the MMU off a physical address
    // outside anything Rust uses (the caller checked it is not the guest's
    // RAM); a load changes no memory. If it aborts, `synchronous` skips it
    // and `probe_read32` returns `if_aborted`.
    let value = unsafe { probe_read32(address, 0) };
    PROBE_ARMED.store(false, Ordering::SeqCst);
    if PROBE_ABORTED.load(Ordering::SeqCst) {
        Probe::Aborted {
            esr: PROBE_ESR.load(Ordering::SeqCst),
        }
    } else {
        Probe::Read(value)
    }
}

/// Called by the vectors with the vector's index.
extern "C" fn exception(index: u64) {
    match index {
        SYNCHRONOUS_CURRENT_EL => synchronous(index),
        IRQ_CURRENT_EL => gic::handle_irq(),
        _ => unexpected(index),
    }
}

/// A synchronous exception: the probe's abort, or fatal.
fn synchronous(index: u64) {
    let (esr, far, elr) = (sysreg::esr(), sysreg::far(), sysreg::elr());
    let probe_load = probe_read32 as *const () as u64;
    if PROBE_ARMED.load(Ordering::SeqCst)
        && elr == probe_load
        && exception_class(esr) == EC_DATA_ABORT_SAME_EL
    {
        println!("test-guest: isolation: abort at {far:#x} (ESR {esr:#x})");
        PROBE_ESR.store(esr, Ordering::SeqCst);
        PROBE_ABORTED.store(true, Ordering::SeqCst);
        sysreg::skip_faulting_instruction();
        return;
    }
    unexpected(index)
}

/// Any other exception: says what it was and powers off.
fn unexpected(index: u64) -> ! {
    let (esr, far, elr) = (sysreg::esr(), sysreg::far(), sysreg::elr());
    println!(
        "test-guest: FAIL unexpected {} exception (vector {index}): {}, ESR {esr:#x}, FAR {far:#x}, ELR {elr:#x}",
        vector_name(index),
        describe_esr(esr)
    );
    psci::power_off()
}
