//! The EL1 physical timer of the core a thread runs on, which EL0 programs
//! directly: the kernel lets native EL0 threads read the counters and use
//! the physical timer (`CNTKCTL_EL1.EL0PCTEN`, `EL0VCTEN` and `EL0PTEN`).
//! The physical timer belongs to guests: the core forwards its interrupt
//! to the VCPU loaded on the core, so native threads cannot use it.
//!
//! When the timer's condition is met and it is enabled and not masked,
//! the core's physical-timer interrupt ([`TIMER_IRQ`], a PPI) is
//! raised and stays raised (the line is level-triggered) until the timer
//! is disabled, masked or given a later compare value. A thread that takes
//! the interrupt through an `IrqHandler` must do one of those before
//! `IrqHandlerAck`, or the interrupt comes again at once.
//!
//! The timer and the counter belong to the core, not to the thread: a
//! thread that programs the timer must stay on that core (its affinity)
//! until it is done with it.
//!
//! On the host there is no timer: the frequency and the counter read 0
//! and writes are dropped.

/// The interrupt number (INTID) of the EL1 physical timer: PPI 14, the
/// same on every board (the architecture recommends it; QEMU's `virt` and
/// the Raspberry Pi 4 use it).
pub const TIMER_IRQ: u64 = 30;

/// `CNTP_CTL_EL0.ENABLE`: the timer runs.
pub const CONTROL_ENABLE: u64 = 1 << 0;
/// `CNTP_CTL_EL0.IMASK`: the timer's condition raises no interrupt.
pub const CONTROL_IMASK: u64 = 1 << 1;
/// `CNTP_CTL_EL0.ISTATUS` (read-only): the condition is met (the count is
/// at or past the compare value, and the timer is enabled).
pub const CONTROL_ISTATUS: u64 = 1 << 2;

/// The counter frequency in Hz (`CNTFRQ_EL0`).
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub fn frequency() -> u64 {
    let value: u64;
    // SAFETY: reading a system register that EL0 may read; no memory,
    // stack or flags are touched.
    unsafe {
        core::arch::asm!(
            "mrs {}, cntfrq_el0",
            out(reg) value,
            options(nomem, nostack, preserves_flags)
        );
    }
    value
}

/// The physical count now (`CNTPCT_EL0`), read after an instruction
/// barrier so it is not taken before earlier instructions.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub fn count() -> u64 {
    let value: u64;
    // SAFETY: `isb` and a read of a counter EL0 may read (EL0VCTEN); no
    // memory, stack or flags are touched.
    unsafe {
        core::arch::asm!(
            "isb",
            "mrs {}, cntpct_el0",
            out(reg) value,
            options(nomem, nostack, preserves_flags)
        );
    }
    value
}

/// Sets the physical timer's compare value (`CNTP_CVAL_EL0`): its condition
/// is met once the physical count reaches `value`.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub fn set_compare(value: u64) {
    // SAFETY: a write of the timer register EL0 may write (EL0VTEN); it
    // changes when this core's physical-timer interrupt is raised and
    // nothing else (no memory, stack or flags). The `isb` makes the write
    // take effect before the next instruction.
    unsafe {
        core::arch::asm!(
            "msr cntp_cval_el0, {}",
            "isb",
            in(reg) value,
            options(nomem, nostack, preserves_flags)
        );
    }
}

/// Sets the physical timer's control register (`CNTP_CTL_EL0`):
/// [`CONTROL_ENABLE`] and [`CONTROL_IMASK`] (the status bit is read-only).
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub fn set_control(value: u64) {
    // SAFETY: as in `set_compare`: a timer register EL0 may write, which
    // only decides whether this core's physical-timer interrupt is raised.
    unsafe {
        core::arch::asm!(
            "msr cntp_ctl_el0, {}",
            "isb",
            in(reg) value,
            options(nomem, nostack, preserves_flags)
        );
    }
}

/// The physical timer's control register (`CNTP_CTL_EL0`), with
/// [`CONTROL_ISTATUS`].
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub fn control() -> u64 {
    let value: u64;
    // SAFETY: a read of a timer register EL0 may read (EL0VTEN); no
    // memory, stack or flags are touched.
    unsafe {
        core::arch::asm!(
            "mrs {}, cntp_ctl_el0",
            out(reg) value,
            options(nomem, nostack, preserves_flags)
        );
    }
    value
}

/// On the host: no counter, frequency 0.
#[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
pub fn frequency() -> u64 {
    0
}

/// On the host: no counter, count 0.
#[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
pub fn count() -> u64 {
    0
}

/// On the host: no timer; the write is dropped.
#[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
pub fn set_compare(_value: u64) {}

/// On the host: no timer; the write is dropped.
#[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
pub fn set_control(_value: u64) {}

/// On the host: no timer, control 0 (disabled).
#[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
pub fn control() -> u64 {
    0
}

/// Starts the physical timer: its interrupt comes once the physical count
/// reaches `compare` (at once if it has).
pub fn start(compare: u64) {
    set_compare(compare);
    set_control(CONTROL_ENABLE);
}

/// Stops the physical timer, which lowers its interrupt line.
pub fn stop() {
    set_control(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_has_no_timer() {
        start(100);
        assert_eq!(frequency(), 0);
        assert_eq!(count(), 0);
        assert_eq!(control() & CONTROL_ENABLE, 0);
        stop();
    }

    #[test]
    fn control_bits_are_the_architected_ones() {
        assert_eq!(CONTROL_ENABLE | CONTROL_IMASK | CONTROL_ISTATUS, 0b111);
        assert_eq!(TIMER_IRQ, 16 + 14, "PPI 14");
    }
}
