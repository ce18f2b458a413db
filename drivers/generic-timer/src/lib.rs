//! The Arm generic timer as the hypervisor uses it: the system counter and the
//! EL2 physical timer (`CNTHP_*_EL2`, PPI 26 on QEMU `virt`) that drives the
//! hypervisor's own tick.
//!
//! The guests' virtual timer (`CNTV_*`) is not driven here: it runs directly
//! on the hardware for the guest, and only its PPI is forwarded (DESIGN.md,
//! section 5).
//!
//! The register accessors exist only when building for AArch64; they are
//! `unsafe fn`s whose contract is "this runs at EL2 and owns the EL2 timer".
//! The conversions between ticks and microseconds are pure functions, built
//! and tested on the host too.

#![no_std]

/// The longest delay `hyp_timer_arm_in` (AArch64 only) can program in one go, in ticks:
/// `CNTHP_TVAL_EL2` is a signed 32-bit down-counter. At 62.5 MHz (QEMU) this
/// is about 34 s, at 54 MHz (Pi 4) about 40 s.
pub const MAX_TIMER_TICKS: u64 = i32::MAX as u64;

/// The value to program into a `TVAL` register for a delay of `ticks`:
/// `ticks` clamped to [`MAX_TIMER_TICKS`] (a larger value would be read as a
/// negative delay, i.e. "already expired").
pub fn timer_value_for(ticks: u64) -> u64 {
    ticks.min(MAX_TIMER_TICKS)
}

/// The number of counter ticks in `period_us` microseconds at `frequency_hz`,
/// rounded up so that the period is never shorter than asked, and at least 1
/// (a zero delay would make the timer fire at once, forever).
///
/// Saturates at `u64::MAX` instead of overflowing.
pub fn ticks_for(frequency_hz: u64, period_us: u64) -> u64 {
    let ticks = (u128::from(frequency_hz) * u128::from(period_us)).div_ceil(1_000_000);
    u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
}

/// The number of whole microseconds that `ticks` counter ticks last at
/// `frequency_hz` (rounded down).
///
/// A frequency of 0 (an unprogrammed `CNTFRQ_EL0`) gives 0 rather than a
/// division by zero. Saturates at `u64::MAX` instead of overflowing.
pub fn microseconds(ticks: u64, frequency_hz: u64) -> u64 {
    if frequency_hz == 0 {
        return 0;
    }
    let microseconds = u128::from(ticks) * 1_000_000 / u128::from(frequency_hz);
    u64::try_from(microseconds).unwrap_or(u64::MAX)
}

#[cfg(target_arch = "aarch64")]
pub use registers::{counter, frequency, hyp_timer_arm_in, hyp_timer_disable, hyp_timer_pending};

#[cfg(target_arch = "aarch64")]
mod registers {
    //! The system-register side. `aarch64-cpu` accessors are safe calls; the
    //! functions here are `unsafe` because the registers they touch belong to
    //! the hypervisor at EL2, and their callers must say so.

    use aarch64_cpu::asm::barrier;
    use aarch64_cpu::registers::{CNTFRQ_EL0, CNTHP_CTL_EL2, CNTPCT_EL0, Readable, Writeable};

    use super::timer_value_for;

    /// The frequency of the system counter in Hz, as the firmware programmed
    /// it into `CNTFRQ_EL0` (0 if it did not).
    ///
    /// # Safety
    ///
    /// Must run at EL1 or above (EL2 for the hypervisor); at EL0 the access
    /// may trap.
    pub unsafe fn frequency() -> u64 {
        CNTFRQ_EL0.get()
    }

    /// The current value of the physical system counter (`CNTPCT_EL0`).
    ///
    /// An `isb` comes first, so the counter is not read ahead of the
    /// instructions before the call.
    ///
    /// # Safety
    ///
    /// Must run at EL2 (or at EL1 with `CNTHCTL_EL2.EL1PCTEN` set); elsewhere
    /// the access may trap.
    pub unsafe fn counter() -> u64 {
        barrier::isb(barrier::SY);
        CNTPCT_EL0.get()
    }

    /// Arms the EL2 physical timer to fire `ticks` counter ticks from now
    /// (clamped to [`MAX_TIMER_TICKS`](super::MAX_TIMER_TICKS)), enabled and
    /// with its interrupt unmasked.
    ///
    /// # Safety
    ///
    /// Must run at EL2. The EL2 physical timer of this core belongs to the
    /// caller: nothing else on this core may program it meanwhile.
    pub unsafe fn hyp_timer_arm_in(ticks: u64) {
        let value = timer_value_for(ticks);
        // SAFETY: the caller runs at EL2 and owns the EL2 physical timer (the
        // contract above). Writing CNTHP_TVAL_EL2 reads no memory and writes
        // none; it only sets this core's timer compare value.
        unsafe {
            core::arch::asm!(
                "msr cnthp_tval_el2, {value}",
                value = in(reg) value,
                options(nomem, nostack, preserves_flags),
            );
        }
        CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::SET + CNTHP_CTL_EL2::IMASK::CLEAR);
        barrier::isb(barrier::SY);
    }

    /// Stops the EL2 physical timer (its interrupt is no longer signalled).
    ///
    /// # Safety
    ///
    /// Must run at EL2, by the owner of this core's EL2 physical timer.
    pub unsafe fn hyp_timer_disable() {
        CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::CLEAR);
        barrier::isb(barrier::SY);
    }

    /// Whether the EL2 physical timer's condition is met (`ISTATUS`): it was
    /// armed and its deadline has passed. Meaningful only while enabled.
    ///
    /// # Safety
    ///
    /// Must run at EL2.
    pub unsafe fn hyp_timer_pending() -> bool {
        CNTHP_CTL_EL2.is_set(CNTHP_CTL_EL2::ISTATUS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_for_common_periods() {
        assert_eq!(ticks_for(62_500_000, 1_000), 62_500); // QEMU, 1 ms
        assert_eq!(ticks_for(54_000_000, 10_000), 540_000); // Pi 4, 10 ms
        assert_eq!(ticks_for(1_000_000, 1), 1);
    }

    #[test]
    fn ticks_for_rounds_up_and_is_at_least_one() {
        assert_eq!(ticks_for(62_500_000, 0), 1);
        assert_eq!(ticks_for(0, 1_000), 1);
        assert_eq!(ticks_for(1, 1), 1); // 1 µs at 1 Hz: a fraction of a tick
        assert_eq!(ticks_for(3, 1_000_000), 3);
        assert_eq!(ticks_for(3, 500_000), 2); // 1.5 ticks -> 2
    }

    #[test]
    fn ticks_for_does_not_overflow() {
        assert_eq!(ticks_for(u64::MAX, u64::MAX), u64::MAX);
        assert_eq!(ticks_for(u64::MAX, 1_000_000), u64::MAX);
        assert_eq!(ticks_for(1_000_000, u64::MAX), u64::MAX);
    }

    #[test]
    fn microseconds_converts_and_rounds_down() {
        assert_eq!(microseconds(62_500, 62_500_000), 1_000);
        assert_eq!(microseconds(62_499, 62_500_000), 999);
        assert_eq!(microseconds(54_000_000, 54_000_000), 1_000_000);
    }

    #[test]
    fn microseconds_handles_zero_frequency_and_overflow() {
        assert_eq!(microseconds(12345, 0), 0);
        assert_eq!(microseconds(u64::MAX, 1), u64::MAX);
        assert_eq!(microseconds(u64::MAX, u64::MAX), 1_000_000);
    }

    #[test]
    fn round_trip() {
        let frequency = 62_500_000;
        assert_eq!(microseconds(ticks_for(frequency, 4_000), frequency), 4_000);
    }

    #[test]
    fn timer_value_is_clamped_to_signed_32_bits() {
        assert_eq!(timer_value_for(0), 0);
        assert_eq!(timer_value_for(1000), 1000);
        assert_eq!(timer_value_for(0x7fff_ffff), 0x7fff_ffff);
        assert_eq!(timer_value_for(0x8000_0000), 0x7fff_ffff);
        assert_eq!(timer_value_for(u64::MAX), 0x7fff_ffff);
    }
}
