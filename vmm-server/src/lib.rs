//! `vmm-server`: the per-guest VMM that runs at EL0 and receives its guest's
//! VM exits over IPC (design sections 4 and 5).
//!
//! This crate holds the VMM's pure logic, with no system calls and no heap,
//! so that every piece is tested on the host:
//!
//! - [`mmio`]: the shape of an MMIO access and the [`mmio::Device`] trait;
//! - [`pl011`]: the guest's PL011 UART;
//! - [`vgic`]: the guest's emulated GIC distributor (GICv2 and GICv3) and
//!   GICv3 redistributors, which say what to inject rather than injecting;
//! - [`psci`]: decoding PSCI calls and the per-guest CPU power state;
//! - [`image`]: the arm64 Linux `Image` header and where the kernel, the
//!   device tree and the initrd go in guest RAM;
//! - [`fdt_writer`] and [`guest_dt`]: a flattened-device-tree writer and the
//!   guest's QEMU-`virt`-like device tree.
//!
//! Every model keeps its state in a struct the caller owns (the VMM thread's
//! statics are read-only), each a few KiB at most. Nothing a guest does can
//! panic or loop here: every guest-controlled value is checked.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

pub mod fdt_writer;
pub mod guest_dt;
pub mod image;
pub mod mmio;
pub mod pl011;
pub mod psci;
pub mod vgic;

/// The low 32 bits of `value` (the upper bits are deliberately dropped).
#[allow(
    clippy::cast_possible_truncation,
    reason = "taking the low half is the point"
)]
pub(crate) const fn lo32(value: u64) -> u32 {
    value as u32
}

/// The low 16 bits of `value` (the upper bits are deliberately dropped).
#[allow(
    clippy::cast_possible_truncation,
    reason = "taking the low half-word is the point"
)]
pub(crate) const fn lo16(value: u64) -> u16 {
    value as u16
}

/// The low 8 bits of `value` (the upper bits are deliberately dropped).
#[allow(
    clippy::cast_possible_truncation,
    reason = "taking the low byte is the point"
)]
pub(crate) const fn lo8(value: u64) -> u8 {
    value as u8
}

#[cfg(test)]
mod tests {
    use core::mem::size_of;

    /// The models live on the VMM thread's stack: keep them small.
    #[test]
    fn model_state_stays_small() {
        assert!(size_of::<crate::vgic::Vgic>() <= 4096);
        assert!(size_of::<crate::pl011::Pl011>() <= 256);
        assert!(size_of::<crate::vgic::Actions>() <= 512);
        assert!(size_of::<crate::psci::Psci>() <= 8);
    }
}
