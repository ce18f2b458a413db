//! The CPU side of the GIC that is not memory-mapped: the GICv3 CPU interface
//! system registers (`ICC_*`) and the barriers around sending SGIs.
//!
//! `aarch64-cpu` only knows `ICC_SRE_EL2` (and a read-only `ICC_CTLR_EL1`),
//! so the other registers are reached with inline assembly, by their generic
//! `S3_<op1>_C<n>_C<m>_<op2>` names (IHI 0069, chapter 12).
//!
//! On the host there is no GIC: the functions keep their signatures so that
//! the code calling them compiles for the unit tests, but do nothing (reads
//! of `ICC_IAR1_EL1` give the spurious INTID 1023). They are never used by
//! the hypervisor, which is only built for AArch64.

#[cfg(target_arch = "aarch64")]
pub(crate) use aarch64::*;
#[cfg(not(target_arch = "aarch64"))]
pub(crate) use host::*;

#[cfg(target_arch = "aarch64")]
mod aarch64 {
    use aarch64_cpu::asm::barrier;
    use aarch64_cpu::registers::{ICC_SRE_EL2, Writeable};

    /// Makes this core's earlier stores to memory visible to the other cores
    /// before the next write (used before generating an SGI, so the receiver
    /// sees the data the SGI announces). Memory-safe; it only orders.
    pub(crate) fn order_stores_before_sgi() {
        barrier::dsb(barrier::ISHST);
    }

    /// Switches EL2 to the system-register interface of the GIC (and lets EL1
    /// use `ICC_SRE_EL1`), then configures the CPU interface: priority mask
    /// `0xff`, binary point 0, `EOImode` 0, Group 1 enabled.
    ///
    /// # Safety
    ///
    /// Must run at EL2 on a GICv3 system, by the owner of this core's GIC CPU
    /// interface.
    pub(crate) unsafe fn init_cpu_interface() {
        ICC_SRE_EL2.write(ICC_SRE_EL2::SRE::SET + ICC_SRE_EL2::ENABLE::SET);
        barrier::isb(barrier::SY);
        // SAFETY: the caller runs at EL2 on a GICv3 system (this function's
        // contract) and SRE was just set, so the ICC registers exist; the
        // writes touch only this core's CPU interface, no memory:
        // ICC_PMR_EL1 = 0xff, ICC_BPR1_EL1 = 0.
        unsafe {
            core::arch::asm!(
                "msr S3_0_C4_C6_0, {mask}",
                "msr S3_0_C12_C12_3, xzr",
                mask = in(reg) 0xffu64,
                options(nomem, nostack, preserves_flags),
            );
        }
        // ICC_CTLR_EL1: clear EOImode (bit 1), keep the rest.
        let control: u64;
        // SAFETY: as above; reads ICC_CTLR_EL1 only.
        unsafe {
            core::arch::asm!(
                "mrs {control}, S3_0_C12_C12_4",
                control = out(reg) control,
                options(nomem, nostack, preserves_flags),
            );
        }
        // SAFETY: as above; ICC_CTLR_EL1 = control without EOImode, then
        // ICC_IGRPEN1_EL1 = 1 (Group 1 enabled), then an isb so the new
        // configuration is in effect before returning.
        unsafe {
            core::arch::asm!(
                "msr S3_0_C12_C12_4, {control}",
                "msr S3_0_C12_C12_7, {enable}",
                "isb",
                control = in(reg) control & !(1 << 1),
                enable = in(reg) 1u64,
                options(nomem, nostack, preserves_flags),
            );
        }
    }

    /// Reads `ICC_IAR1_EL1` (acknowledging an interrupt), then a `dsb sy` so
    /// the acknowledgement is complete before the handler touches devices.
    ///
    /// # Safety
    ///
    /// As for [`init_cpu_interface`], which must have run on this core.
    pub(crate) unsafe fn read_iar1() -> u32 {
        let value: u64;
        // SAFETY: EL2 with the system-register interface enabled (contract);
        // reading ICC_IAR1_EL1 changes the GIC's state but no memory.
        unsafe {
            core::arch::asm!(
                "mrs {value}, S3_0_C12_C12_0",
                "dsb sy",
                value = out(reg) value,
                options(nostack, preserves_flags),
            );
        }
        u32::try_from(value & 0xffff_ffff).unwrap_or(u32::MAX)
    }

    /// Writes `ICC_EOIR1_EL1`, then an `isb`.
    ///
    /// # Safety
    ///
    /// As for [`read_iar1`]; `value` must come from `read_iar1` on this core.
    pub(crate) unsafe fn write_eoir1(value: u32) {
        // SAFETY: EL2 with the system-register interface enabled (contract);
        // the write touches only the GIC CPU interface.
        unsafe {
            core::arch::asm!(
                "msr S3_0_C12_C12_1, {value}",
                "isb",
                value = in(reg) u64::from(value),
                options(nomem, nostack, preserves_flags),
            );
        }
    }

    /// Writes `ICC_SGI1R_EL1` (generating a Group 1 SGI), then an `isb`.
    ///
    /// # Safety
    ///
    /// As for [`read_iar1`].
    pub(crate) unsafe fn write_sgi1r(value: u64) {
        // SAFETY: EL2 with the system-register interface enabled (contract);
        // the write touches only the GIC.
        unsafe {
            core::arch::asm!(
                "msr S3_0_C12_C11_5, {value}",
                "isb",
                value = in(reg) value,
                options(nomem, nostack, preserves_flags),
            );
        }
    }

    /// Whether this CPU interface can aim SGIs at `Aff0` 16 to 255
    /// (`ICC_CTLR_EL1.RSS`, bit 18).
    ///
    /// # Safety
    ///
    /// As for [`read_iar1`].
    pub(crate) unsafe fn range_selector_supported() -> bool {
        let control: u64;
        // SAFETY: EL2 with the system-register interface enabled (contract);
        // reads ICC_CTLR_EL1 only.
        unsafe {
            core::arch::asm!(
                "mrs {control}, S3_0_C12_C12_4",
                control = out(reg) control,
                options(nomem, nostack, preserves_flags),
            );
        }
        control & (1 << 18) != 0
    }
}

#[cfg(not(target_arch = "aarch64"))]
mod host {
    //! Stand-ins for the host build; see the module documentation above.

    /// Does nothing: a single host thread needs no barrier.
    pub(crate) fn order_stores_before_sgi() {}

    /// Does nothing on the host.
    ///
    /// # Safety
    ///
    /// None needed on the host; the signature matches the AArch64 one.
    pub(crate) unsafe fn init_cpu_interface() {}

    /// The spurious INTID: there is no interrupt on the host.
    ///
    /// # Safety
    ///
    /// None needed on the host; the signature matches the AArch64 one.
    pub(crate) unsafe fn read_iar1() -> u32 {
        1023
    }

    /// Does nothing on the host.
    ///
    /// # Safety
    ///
    /// None needed on the host; the signature matches the AArch64 one.
    pub(crate) unsafe fn write_eoir1(_value: u32) {}

    /// Does nothing on the host.
    ///
    /// # Safety
    ///
    /// None needed on the host; the signature matches the AArch64 one.
    pub(crate) unsafe fn write_sgi1r(_value: u64) {}

    /// No range selector on the host.
    ///
    /// # Safety
    ///
    /// None needed on the host; the signature matches the AArch64 one.
    pub(crate) unsafe fn range_selector_supported() -> bool {
        false
    }
}
