//! The system registers the guest uses, each behind a small function, and
//! bounded waits on the virtual counter. GIC CPU-interface registers are
//! written as `S3_<op1>_C<n>_C<m>_<op2>` (IHI 0069, chapter 12), like the
//! hypervisor's own GIC driver.
//!
//! None of these accesses can break Rust's memory safety: they read or set
//! timer, interrupt-controller and exception state, not memory the
//! compiler knows about. Accesses that change interrupt state are not
//! marked `nomem`, so the compiler keeps memory accesses (the atomics the
//! IRQ handler writes) in program order around them.

use core::arch::asm;

/// Defines a function that reads a register without side effects.
macro_rules! read_register {
    ($(#[$doc:meta])* $name:ident, $register:literal) => {
        $(#[$doc])*
        pub(crate) fn $name() -> u64 {
            let value: u64;
            // SAFETY: reading this register has no side effect and touches
            // no memory (see the module documentation).
            unsafe {
                asm!(
                    concat!("mrs {value}, ", $register),
                    value = out(reg) value,
                    options(nomem, nostack, preserves_flags),
                );
            }
            value
        }
    };
}

/// Defines a function that writes a register of timer or interrupt state.
macro_rules! write_register {
    ($(#[$doc:meta])* $name:ident, $register:literal) => {
        $(#[$doc])*
        pub(crate) fn $name(value: u64) {
            // SAFETY: this register holds timer or interrupt-controller
            // state, no memory the compiler knows about (see the module
            // documentation).
            unsafe {
                asm!(
                    concat!("msr ", $register, ", {value}"),
                    value = in(reg) value,
                    options(nostack, preserves_flags),
                );
            }
        }
    };
}

read_register!(
    /// `CurrentEL`: the exception level in bits 3:2.
    current_el_raw, "CurrentEL"
);
read_register!(
    /// `MPIDR_EL1`: this core's affinity.
    mpidr, "mpidr_el1"
);
read_register!(
    /// `ID_AA64PFR0_EL1`: its GIC field says whether the GICv3 system
    /// registers exist.
    id_aa64pfr0, "id_aa64pfr0_el1"
);
read_register!(
    /// `CNTFRQ_EL0`: the counter frequency in Hz.
    counter_frequency, "cntfrq_el0"
);
read_register!(
    /// `CNTVCT_EL0`: the virtual counter.
    virtual_count, "cntvct_el0"
);
read_register!(
    /// `CNTV_CTL_EL0`: bit 0 ENABLE, bit 1 IMASK, bit 2 ISTATUS.
    virtual_timer_control, "cntv_ctl_el0"
);
read_register!(
    /// `ESR_EL1`: syndrome of the exception being handled.
    esr, "esr_el1"
);
read_register!(
    /// `FAR_EL1`: faulting address of the abort being handled.
    far, "far_el1"
);
read_register!(
    /// `ELR_EL1`: where the exception being handled returns to.
    elr, "elr_el1"
);
read_register!(
    /// `ICC_SRE_EL1`: bit 0 SRE (system-register interface enabled).
    icc_sre, "S3_0_C12_C12_5"
);
read_register!(
    /// `ICC_HPPIR1_EL1`: the highest-priority pending Group 1 interrupt
    /// (reading it acknowledges nothing).
    icc_hppir1, "S3_0_C12_C12_2"
);

write_register!(
    /// `CNTV_TVAL_EL0`: fire the virtual timer this many ticks from now.
    set_virtual_timer_value, "cntv_tval_el0"
);
write_register!(
    /// `CNTV_CTL_EL0`: bit 0 ENABLE, bit 1 IMASK.
    set_virtual_timer_control, "cntv_ctl_el0"
);
write_register!(
    /// `ICC_SRE_EL1`.
    set_icc_sre, "S3_0_C12_C12_5"
);
write_register!(
    /// `ICC_PMR_EL1`: the priority mask.
    set_icc_pmr, "S3_0_C4_C6_0"
);
write_register!(
    /// `ICC_IGRPEN1_EL1`: bit 0 enables Group 1 interrupts.
    set_icc_igrpen1, "S3_0_C12_C12_7"
);
write_register!(
    /// `ICC_EOIR1_EL1`: end of interrupt (priority drop and deactivation,
    /// with `ICC_CTLR_EL1.EOImode` 0).
    set_icc_eoir1, "S3_0_C12_C12_1"
);
write_register!(
    /// `ICC_SGI1R_EL1`: sends a Group 1 SGI.
    set_icc_sgi1r, "S3_0_C12_C11_5"
);

/// `ICC_IAR1_EL1`: acknowledges the highest-priority pending Group 1
/// interrupt and returns its INTID (1023 if none).
pub(crate) fn icc_iar1() -> u64 {
    let value: u64;
    // SAFETY: acknowledging changes interrupt state only (see the module
    // documentation); not `nomem`, so it stays in order with the handler's
    // atomics.
    unsafe {
        asm!("mrs {value}, S3_0_C12_C12_0", value = out(reg) value, options(nostack, preserves_flags));
    }
    value
}

/// The exception level the guest runs at.
pub(crate) fn current_el() -> u64 {
    (current_el_raw() >> 2) & 3
}

/// Lets IRQs in (clears `PSTATE.I`).
pub(crate) fn unmask_irqs() {
    // SAFETY: the vector table is installed before `main` runs, and its IRQ
    // handler saves and restores every register the interrupted code may
    // use. Not `nomem`: memory accesses stay on their side of it.
    unsafe { asm!("msr daifclr, #2", "isb", options(nostack, preserves_flags)) };
}

/// Keeps IRQs out (sets `PSTATE.I`).
pub(crate) fn mask_irqs() {
    // SAFETY: masking interrupts touches no memory. Not `nomem`: memory
    // accesses stay on their side of it.
    unsafe { asm!("msr daifset, #2", "isb", options(nostack, preserves_flags)) };
}

/// Lets SErrors in (clears `PSTATE.A`), so that one is reported at once.
pub(crate) fn unmask_serrors() {
    // SAFETY: as for `unmask_irqs`: the vectors are installed and report an
    // SError.
    unsafe { asm!("msr daifclr, #4", "isb", options(nostack, preserves_flags)) };
}

/// Instruction synchronization barrier: later instructions see the effect
/// of earlier system-register writes.
pub(crate) fn isb() {
    // SAFETY: a barrier changes no state.
    unsafe { asm!("isb", options(nostack, preserves_flags)) };
}

/// Waits for an interrupt (which need not be unmasked to end the wait).
pub(crate) fn wfi() {
    // SAFETY: waiting changes no state. Not `nomem`: an interrupt handler
    // may have written memory when it returns.
    unsafe { asm!("wfi", options(nostack, preserves_flags)) };
}

/// Makes the exception being handled return to the instruction after the
/// one that took it (`ELR_EL1 += 4`).
///
/// Called only by the synchronous-exception handler for the isolation
/// probe's load, whose destination register holds a defined value before
/// the load (see `probe_read32` in `boot.S`), so skipping it leaves the
/// program in a defined state.
pub(crate) fn skip_faulting_instruction() {
    let next = elr().wrapping_add(4);
    // SAFETY: see above: the caller checked that ELR_EL1 is the probe's
    // load instruction, and skipping it is part of `probe_read32`'s
    // contract.
    unsafe {
        asm!("msr elr_el1, {next}", next = in(reg) next, options(nomem, nostack, preserves_flags))
    };
}

/// A point in time on the virtual counter, for bounded waits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline {
    start: u64,
    ticks: u64,
}

impl Deadline {
    /// `microseconds` from now.
    pub(crate) fn after_us(microseconds: u64) -> Self {
        Self {
            start: virtual_count(),
            ticks: ticks_for_us(microseconds),
        }
    }

    /// Whether the deadline has passed.
    pub(crate) fn expired(&self) -> bool {
        virtual_count().wrapping_sub(self.start) > self.ticks
    }

    /// Microseconds since the deadline was set.
    pub(crate) fn elapsed_us(&self) -> u64 {
        let ticks = virtual_count().wrapping_sub(self.start);
        ticks.saturating_mul(1_000_000) / counter_frequency().max(1)
    }
}

/// Counter ticks in `microseconds` (at least 1).
pub(crate) fn ticks_for_us(microseconds: u64) -> u64 {
    (counter_frequency().saturating_mul(microseconds) / 1_000_000).max(1)
}
