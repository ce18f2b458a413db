//! The GIC's virtualization interface, as the hypervisor drives it for the
//! guest CPU loaded on a core: the list registers through which virtual
//! interrupts reach the guest, the virtual machine control register (the
//! guest's own priority mask and enables) and the active priorities.
//!
//! - GICv2 (GIC-400): the `GICH` frame, memory-mapped; the guest sees the
//!   `GICV` frame as its CPU interface (mapped into its stage 2 by its VMM).
//! - GICv3: the `ICH_*_EL2` system registers; the guest's `ICC_*_EL1`
//!   accesses go to the virtual CPU interface when `HCR_EL2.IMO` is set.
//!
//! A list register holds one virtual interrupt (ID, priority, group and
//! state). The encodings differ between the versions; [`ListRegister`]
//! builds and reads both, as pure functions tested on the host.
//!
//! Specifications: IHI 0048B chapter 5 (GICv2 virtualization), IHI 0069
//! chapter 12 (`ICH_*` registers).
#![allow(
    clippy::cast_possible_truncation,
    reason = "GICv2 registers are 32 bits wide, and list-register fields are masked before they are narrowed"
)]

/// The state of a list register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LrState {
    /// Empty: free for a new interrupt.
    Invalid,
    /// Pending: the guest has not acknowledged it yet.
    Pending,
    /// Active: acknowledged, not yet completed.
    Active,
    /// Both (a level interrupt asserted again while active).
    PendingActive,
}

impl LrState {
    const fn from_bits(bits: u64) -> LrState {
        match bits & 0b11 {
            0 => LrState::Invalid,
            1 => LrState::Pending,
            2 => LrState::Active,
            _ => LrState::PendingActive,
        }
    }
}

/// Encoding and decoding of list registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListRegister {
    /// GICv2 `GICH_LR<n>` (32 bits): virtual ID [9:0], priority [27:23]
    /// (the top five bits), state [29:28], Group 1 [30], HW [31].
    V2,
    /// GICv3 `ICH_LR<n>_EL2`: virtual ID [31:0], priority [55:48], Group
    /// [60], HW [61], state [63:62].
    V3,
}

impl ListRegister {
    /// A list register with `intid` pending at `priority`. GICv2 guests
    /// (Linux's GICv2 driver) take Group 0 as IRQs; GICv3 guests use Group
    /// 1.
    pub const fn pending(self, intid: u16, priority: u8) -> u64 {
        match self {
            ListRegister::V2 => (intid as u64 & 0x3ff) | ((priority as u64 >> 3) << 23) | (1 << 28),
            ListRegister::V3 => intid as u64 | ((priority as u64) << 48) | (1 << 60) | (1 << 62),
        }
    }

    /// The virtual interrupt ID in `value`.
    pub const fn intid(self, value: u64) -> u16 {
        match self {
            ListRegister::V2 => (value & 0x3ff) as u16,
            ListRegister::V3 => (value & 0xffff) as u16,
        }
    }

    /// The state of `value`.
    pub const fn state(self, value: u64) -> LrState {
        match self {
            ListRegister::V2 => LrState::from_bits(value >> 28),
            ListRegister::V3 => LrState::from_bits(value >> 62),
        }
    }

    /// `value` with its pending bit set (an interrupt that is active and
    /// made pending again).
    pub const fn with_pending(self, value: u64) -> u64 {
        match self {
            ListRegister::V2 => value | (1 << 28),
            ListRegister::V3 => value | (1 << 62),
        }
    }
}

/// `GICH_HCR` / `ICH_HCR_EL2`: the virtual CPU interface enabled.
pub const HCR_ENABLE: u64 = 1 << 0;
/// `GICH_HCR` / `ICH_HCR_EL2`: a maintenance interrupt when at most one
/// list register holds an interrupt (so more can be filled in).
pub const HCR_UNDERFLOW: u64 = 1 << 1;

/// The virtualization interface of this core's GIC CPU interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtualInterface {
    /// GICv2: the `GICH` frame at this address.
    V2 {
        /// `GICH`, mapped as device memory at EL2.
        base: usize,
    },
    /// GICv3: the `ICH_*_EL2` system registers.
    V3,
}

const GICH_HCR: usize = 0x000;
const GICH_VTR: usize = 0x004;
const GICH_VMCR: usize = 0x008;
const GICH_ELRSR0: usize = 0x030;
const GICH_APR: usize = 0x0f0;
const GICH_LR0: usize = 0x100;

impl VirtualInterface {
    /// The list-register encoding of this interface.
    pub const fn list_register(&self) -> ListRegister {
        match self {
            VirtualInterface::V2 { .. } => ListRegister::V2,
            VirtualInterface::V3 => ListRegister::V3,
        }
    }

    fn read32(&self, offset: usize) -> u32 {
        match *self {
            VirtualInterface::V2 { base } => {
                // SAFETY: `base` is the GICH frame mapped as device memory
                // (the contract of constructing `V2`), the offsets are
                // registers of that 4 KiB frame, and reading them has no
                // side effect.
                unsafe { core::ptr::read_volatile((base + offset) as *const u32) }
            }
            VirtualInterface::V3 => 0,
        }
    }

    fn write32(&self, offset: usize, value: u32) {
        if let VirtualInterface::V2 { base } = *self {
            // SAFETY: as in `read32`; the caller owns this core's GICH.
            unsafe { core::ptr::write_volatile((base + offset) as *mut u32, value) }
        }
    }

    /// How many list registers the hardware has (1 to 16 used here).
    pub fn list_registers(&self) -> usize {
        let vtr = match self {
            VirtualInterface::V2 { .. } => u64::from(self.read32(GICH_VTR)),
            VirtualInterface::V3 => sys::read_vtr(),
        };
        ((vtr & 0x3f) as usize + 1).min(16)
    }

    /// Reads list register `index` (below [`Self::list_registers`]).
    pub fn read_lr(&self, index: usize) -> u64 {
        match self {
            VirtualInterface::V2 { .. } => u64::from(self.read32(GICH_LR0 + 4 * index)),
            VirtualInterface::V3 => sys::read_lr(index),
        }
    }

    /// Writes list register `index`.
    pub fn write_lr(&self, index: usize, value: u64) {
        match self {
            VirtualInterface::V2 { .. } => self.write32(GICH_LR0 + 4 * index, value as u32),
            VirtualInterface::V3 => sys::write_lr(index, value),
        }
    }

    /// Bit n set: list register n is empty.
    pub fn empty_lrs(&self) -> u64 {
        match self {
            VirtualInterface::V2 { .. } => u64::from(self.read32(GICH_ELRSR0)),
            VirtualInterface::V3 => sys::read_elrsr(),
        }
    }

    /// Writes the control register (`HCR_*` bits).
    pub fn set_control(&self, value: u64) {
        match self {
            VirtualInterface::V2 { .. } => self.write32(GICH_HCR, value as u32),
            VirtualInterface::V3 => sys::write_hcr(value),
        }
    }

    /// Reads the virtual machine control register.
    pub fn vmcr(&self) -> u64 {
        match self {
            VirtualInterface::V2 { .. } => u64::from(self.read32(GICH_VMCR)),
            VirtualInterface::V3 => sys::read_vmcr(),
        }
    }

    /// Writes the virtual machine control register.
    pub fn set_vmcr(&self, value: u64) {
        match self {
            VirtualInterface::V2 { .. } => self.write32(GICH_VMCR, value as u32),
            VirtualInterface::V3 => sys::write_vmcr(value),
        }
    }

    /// Reads the active priorities.
    pub fn apr(&self) -> u64 {
        match self {
            VirtualInterface::V2 { .. } => u64::from(self.read32(GICH_APR)),
            VirtualInterface::V3 => sys::read_apr(),
        }
    }

    /// Writes the active priorities.
    pub fn set_apr(&self, value: u64) {
        match self {
            VirtualInterface::V2 { .. } => self.write32(GICH_APR, value as u32),
            VirtualInterface::V3 => sys::write_apr(value),
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod sys {
    //! `ICH_*_EL2` by their generic names (IHI 0069, 12.4). Each function
    //! is called only on a GICv3 system at EL2 (the `V3` variant exists
    //! only there), where these registers exist and belong to the
    //! hypervisor; they touch no memory.

    macro_rules! read {
        ($name:literal) => {{
            let value: u64;
            // SAFETY: see the module documentation.
            unsafe {
                core::arch::asm!(concat!("mrs {}, ", $name), out(reg) value,
                    options(nomem, nostack, preserves_flags))
            };
            value
        }};
    }
    macro_rules! write {
        ($name:literal, $value:expr) => {{
            // SAFETY: see the module documentation.
            unsafe {
                core::arch::asm!(concat!("msr ", $name, ", {}"), in(reg) $value,
                    options(nomem, nostack, preserves_flags))
            };
        }};
    }

    pub(super) fn read_vtr() -> u64 {
        read!("S3_4_C12_C11_1")
    }
    pub(super) fn read_elrsr() -> u64 {
        read!("S3_4_C12_C11_5")
    }
    pub(super) fn write_hcr(value: u64) {
        write!("S3_4_C12_C11_0", value)
    }
    pub(super) fn read_vmcr() -> u64 {
        read!("S3_4_C12_C11_7")
    }
    pub(super) fn write_vmcr(value: u64) {
        write!("S3_4_C12_C11_7", value)
    }
    /// `ICH_AP1R0_EL2` in the low half, `ICH_AP0R0_EL2` in the high half.
    pub(super) fn read_apr() -> u64 {
        read!("S3_4_C12_C9_0") & 0xffff_ffff | read!("S3_4_C12_C8_0") << 32
    }
    pub(super) fn write_apr(value: u64) {
        write!("S3_4_C12_C9_0", value & 0xffff_ffff);
        write!("S3_4_C12_C8_0", value >> 32);
    }
    pub(super) fn read_lr(index: usize) -> u64 {
        match index {
            0 => read!("S3_4_C12_C12_0"),
            1 => read!("S3_4_C12_C12_1"),
            2 => read!("S3_4_C12_C12_2"),
            3 => read!("S3_4_C12_C12_3"),
            4 => read!("S3_4_C12_C12_4"),
            5 => read!("S3_4_C12_C12_5"),
            6 => read!("S3_4_C12_C12_6"),
            7 => read!("S3_4_C12_C12_7"),
            8 => read!("S3_4_C12_C13_0"),
            9 => read!("S3_4_C12_C13_1"),
            10 => read!("S3_4_C12_C13_2"),
            11 => read!("S3_4_C12_C13_3"),
            12 => read!("S3_4_C12_C13_4"),
            13 => read!("S3_4_C12_C13_5"),
            14 => read!("S3_4_C12_C13_6"),
            15 => read!("S3_4_C12_C13_7"),
            _ => 0,
        }
    }
    pub(super) fn write_lr(index: usize, value: u64) {
        match index {
            0 => write!("S3_4_C12_C12_0", value),
            1 => write!("S3_4_C12_C12_1", value),
            2 => write!("S3_4_C12_C12_2", value),
            3 => write!("S3_4_C12_C12_3", value),
            4 => write!("S3_4_C12_C12_4", value),
            5 => write!("S3_4_C12_C12_5", value),
            6 => write!("S3_4_C12_C12_6", value),
            7 => write!("S3_4_C12_C12_7", value),
            8 => write!("S3_4_C12_C13_0", value),
            9 => write!("S3_4_C12_C13_1", value),
            10 => write!("S3_4_C12_C13_2", value),
            11 => write!("S3_4_C12_C13_3", value),
            12 => write!("S3_4_C12_C13_4", value),
            13 => write!("S3_4_C12_C13_5", value),
            14 => write!("S3_4_C12_C13_6", value),
            15 => write!("S3_4_C12_C13_7", value),
            _ => {}
        }
    }
}

#[cfg(not(target_arch = "aarch64"))]
mod sys {
    //! On the host there is no GIC: reads give 0, writes do nothing.
    pub(super) fn read_vtr() -> u64 {
        0
    }
    pub(super) fn read_elrsr() -> u64 {
        0
    }
    pub(super) fn write_hcr(_value: u64) {}
    pub(super) fn read_vmcr() -> u64 {
        0
    }
    pub(super) fn write_vmcr(_value: u64) {}
    pub(super) fn read_apr() -> u64 {
        0
    }
    pub(super) fn write_apr(_value: u64) {}
    pub(super) fn read_lr(_index: usize) -> u64 {
        0
    }
    pub(super) fn write_lr(_index: usize, _value: u64) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gicv2_list_registers_match_the_specification() {
        let lr = ListRegister::V2.pending(27, 0xa0);
        // IHI 0048B 5.3.13: VirtualID 27, Priority 0xa0 >> 3 = 20 at
        // [27:23], State pending = 0b01 at [29:28], Group 0, HW 0.
        assert_eq!(lr, 27 | 20 << 23 | 1 << 28);
        assert_eq!(ListRegister::V2.intid(lr), 27);
        assert_eq!(ListRegister::V2.state(lr), LrState::Pending);
        assert_eq!(ListRegister::V2.state(lr ^ 3 << 28), LrState::Active);
        assert_eq!(
            ListRegister::V2.state(ListRegister::V2.with_pending(lr ^ 3 << 28)),
            LrState::PendingActive
        );
        assert_eq!(ListRegister::V2.state(0), LrState::Invalid);
    }

    #[test]
    fn gicv3_list_registers_match_the_specification() {
        let lr = ListRegister::V3.pending(33, 0xa0);
        // IHI 0069 12.4.6: vINTID 33, Priority 0xa0 at [55:48], Group 1
        // at 60, State pending = 0b01 at [63:62].
        assert_eq!(lr, 33 | 0xa0 << 48 | 1 << 60 | 1 << 62);
        assert_eq!(ListRegister::V3.intid(lr), 33);
        assert_eq!(ListRegister::V3.state(lr), LrState::Pending);
        assert_eq!(ListRegister::V3.state(3 << 62), LrState::PendingActive);
    }
}
