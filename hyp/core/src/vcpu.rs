//! Virtual CPUs: the state of one guest CPU that is not in its thread's
//! registers — the EL1 system registers, the floating-point registers, the
//! virtual GIC interface and the virtual interrupts waiting for a list
//! register.
//!
//! A VCPU is bound to one TCB (`VcpuSetTcb`); the thread then runs at EL1
//! as that CPU, and its exits go to its fault endpoint, the guest's VMM.
//!
//! The EL1 state is switched **lazily**: while a VCPU is *loaded* on a
//! core, the hardware holds its state and the copy here is stale. The arch
//! layer saves it here only when another VCPU is loaded on that core (or
//! the kernel needs to read it), so going from a guest to its VMM and back
//! saves and restores nothing but a few registers EL0 can see.
//!
//! # Invariants
//! - `thread` and the thread's `vcpu` name each other, or both are `None`;
//!   the binding counts as a reference on the VCPU, so a bound VCPU
//!   cannot be destroyed.
//! - `pending_count` is the number of bits set in `pending`.
//! - A VCPU is loaded on at most one core (its thread is pinned to the
//!   core it was bound on: `TcbSetAffinity` is refused for a VCPU thread).

use hyp_abi::Error;
use hyp_abi::vcpu::VIRTUAL_IRQ_LIMIT;
use hyp_abi::vcpu_register as register;

use crate::object::ThreadRef;

/// Interrupt IDs a VCPU tracks (SGIs, PPIs and SPIs up to 1019).
pub const VIRTUAL_IRQS: usize = 1024;

/// The most list registers any GIC has (GICv2: 64, but the hardware
/// here has 4; GICv3: 16).
pub const MAX_LIST_REGISTERS: usize = 16;

/// Floating-point and SIMD registers of a guest CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
pub struct FpState {
    /// `q0` to `q31`.
    pub q: [u128; 32],
    /// `FPSR`.
    pub fpsr: u64,
    /// `FPCR`.
    pub fpcr: u64,
}

/// The virtual GIC interface's state while the VCPU is not loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
pub struct VgicState {
    /// The list registers (GICv2: the 32-bit `GICH_LR` value; GICv3:
    /// `ICH_LR<n>_EL2`).
    pub lr: [u64; MAX_LIST_REGISTERS],
    /// `GICH_VMCR` / `ICH_VMCR_EL2`: the guest's priority mask, binary
    /// point and enables.
    pub vmcr: u64,
    /// Active priorities (`GICH_APR` / `ICH_AP1R0_EL2`).
    pub apr: u64,
}

/// A virtual CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Vcpu {
    /// The thread that runs as this VCPU.
    pub thread: Option<ThreadRef>,
    /// The EL1 registers, indexed by [`hyp_abi::vcpu_register`] numbers
    /// (stale while the VCPU is loaded on a core).
    pub registers: [u64; register::COUNT],
    /// Floating-point state (stale while loaded).
    pub fp: FpState,
    /// The virtual GIC interface (stale while loaded).
    pub vgic: VgicState,
    /// Virtual interrupts made pending and not yet in a list register.
    pub pending: [u64; VIRTUAL_IRQS / 64],
    /// How many bits of `pending` are set.
    pub pending_count: u16,
    /// The priority each pending interrupt was injected with.
    pub priority: [u8; VIRTUAL_IRQS],
}

impl Default for Vcpu {
    fn default() -> Self {
        let mut registers = [0; register::COUNT];
        // SCTLR_EL1's RES1 bits and the MMU off: the state Linux's boot
        // protocol expects.
        #[allow(
            clippy::cast_possible_truncation,
            reason = "register numbers are below COUNT"
        )]
        {
            registers[register::SCTLR_EL1 as usize] = 0x30d0_0800;
            registers[register::VMPIDR as usize] = 1 << 31;
        }
        Vcpu {
            thread: None,
            registers,
            fp: FpState::default(),
            vgic: VgicState::default(),
            pending: [0; VIRTUAL_IRQS / 64],
            pending_count: 0,
            priority: [0; VIRTUAL_IRQS],
        }
    }
}

impl Vcpu {
    /// Register `number`, or the exact error for a number out of range.
    pub fn register(&self, number: u64) -> Result<u64, Error> {
        usize::try_from(number)
            .ok()
            .and_then(|index| self.registers.get(index))
            .copied()
            .ok_or(Error::RangeError {
                argument: 0,
                minimum: 0,
                maximum: register::COUNT as u64 - 1,
            })
    }

    /// Sets register `number` (VMPIDR keeps its RES1 bit 31).
    pub fn set_register(&mut self, number: u64, value: u64) -> Result<(), Error> {
        let maximum = register::COUNT as u64 - 1;
        let slot = usize::try_from(number)
            .ok()
            .and_then(|index| self.registers.get_mut(index))
            .ok_or(Error::RangeError {
                argument: 0,
                minimum: 0,
                maximum,
            })?;
        *slot = if number == register::VMPIDR {
            value | 1 << 31
        } else {
            value
        };
        Ok(())
    }

    /// Makes virtual interrupt `intid` pending with `priority`. Decodes
    /// both (argument 0 and 1 of `VcpuInjectIrq`). Pending twice is
    /// pending once (with the later priority).
    pub fn inject(&mut self, intid: u64, priority: u64) -> Result<(), Error> {
        if intid >= VIRTUAL_IRQ_LIMIT {
            return Err(Error::RangeError {
                argument: 0,
                minimum: 0,
                maximum: VIRTUAL_IRQ_LIMIT - 1,
            });
        }
        let priority = u8::try_from(priority).map_err(|_| Error::RangeError {
            argument: 1,
            minimum: 0,
            maximum: 255,
        })?;
        let index = usize::try_from(intid).unwrap_or(0);
        let word = index / 64;
        let bit = 1u64 << (index % 64);
        if self.pending[word] & bit == 0 {
            self.pending[word] |= bit;
            self.pending_count = self.pending_count.saturating_add(1);
        }
        self.priority[index] = priority;
        Ok(())
    }

    /// Takes the most urgent pending interrupt (lowest priority value,
    /// then lowest ID) out of the pending set: the next one for a free
    /// list register.
    pub fn take_most_urgent(&mut self) -> Option<(u16, u8)> {
        if self.pending_count == 0 {
            return None;
        }
        let mut best: Option<(usize, u8)> = None;
        for (word_index, word) in self.pending.iter().enumerate() {
            let mut bits = *word;
            while bits != 0 {
                let index = word_index * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let priority = self.priority[index];
                if best.is_none_or(|(_, best_priority)| priority < best_priority) {
                    best = Some((index, priority));
                }
            }
        }
        let (index, priority) = best?;
        self.pending[index / 64] &= !(1u64 << (index % 64));
        self.pending_count = self.pending_count.saturating_sub(1);
        Some((u16::try_from(index).unwrap_or(0), priority))
    }

    /// Whether interrupt `intid` waits for a list register.
    pub fn is_pending(&self, intid: u16) -> bool {
        let index = usize::from(intid);
        index < VIRTUAL_IRQS && self.pending[index / 64] & (1u64 << (index % 64)) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn registers_are_checked_and_vmpidr_keeps_its_res1_bit() {
        let mut vcpu = Vcpu::default();
        vcpu.set_register(register::VBAR_EL1, 0x4000_0800).unwrap();
        assert_eq!(vcpu.register(register::VBAR_EL1), Ok(0x4000_0800));
        vcpu.set_register(register::VMPIDR, 3).unwrap();
        assert_eq!(vcpu.register(register::VMPIDR), Ok(0x8000_0003));
        let out_of_range = Error::RangeError {
            argument: 0,
            minimum: 0,
            maximum: register::COUNT as u64 - 1,
        };
        assert_eq!(vcpu.register(register::COUNT as u64), Err(out_of_range));
        assert_eq!(vcpu.set_register(u64::MAX, 0), Err(out_of_range));
    }

    #[test]
    fn more_pending_interrupts_than_list_registers_come_out_by_priority() {
        let mut vcpu = Vcpu::default();
        for (intid, priority) in [(33, 0xa0), (27, 0x20), (1, 0xa0), (900, 0x10), (64, 0xf0)] {
            vcpu.inject(intid, priority).unwrap();
        }
        vcpu.inject(33, 0xa0).unwrap(); // pending twice is pending once
        assert_eq!(vcpu.pending_count, 5);
        let order: Vec<_> = core::iter::from_fn(|| vcpu.take_most_urgent()).collect();
        assert_eq!(
            order,
            [(900, 0x10), (27, 0x20), (1, 0xa0), (33, 0xa0), (64, 0xf0)]
        );
        assert_eq!(vcpu.pending_count, 0);
        assert!(!vcpu.is_pending(33));
    }

    #[test]
    fn injection_arguments_are_range_checked() {
        let mut vcpu = Vcpu::default();
        assert_eq!(
            vcpu.inject(1020, 0),
            Err(Error::RangeError {
                argument: 0,
                minimum: 0,
                maximum: 1019
            })
        );
        assert_eq!(
            vcpu.inject(5, 256),
            Err(Error::RangeError {
                argument: 1,
                minimum: 0,
                maximum: 255
            })
        );
        assert_eq!(vcpu.pending_count, 0);
    }
}
