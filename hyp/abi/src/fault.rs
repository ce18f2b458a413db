//! Fault messages: when a thread faults, the kernel sends a message on the
//! thread's fault endpoint as if the thread had done a `Call`. The label says
//! what kind of fault; the words carry what the handler needs. A reply
//! resumes the thread (with the registers the reply sets, for kinds that
//! allow it); no reply leaves it stopped.

/// Kinds of fault, in the message label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum FaultLabel {
    /// A data or instruction abort of an EL0 thread (no mapping, or one
    /// without the right).
    MemoryFault = 1,
    /// An undefined or not permitted instruction.
    UndefinedInstruction = 2,
    /// A system call the kernel does not know.
    UnknownSyscall = 3,
    /// A VCPU's load or store to guest-physical memory that is not mapped
    /// (or not writable), with a syndrome that describes the access: the
    /// VMM emulates it ([`mmio`]).
    VcpuMmio = 4,
    /// A VCPU executed `HVC` or `SMC` ([`hypercall`]).
    VcpuHypercall = 5,
    /// A VCPU accessed a system register the core traps ([`system_register`]).
    VcpuSystemRegister = 6,
    /// Any other exit of a VCPU: an abort without a usable syndrome, an
    /// instruction fetch from unmapped memory, an unknown instruction, ...
    /// ([`vcpu_exception`]).
    VcpuException = 7,
}

/// Reply labels to a VCPU exit (`Reply` / `ReplyRecv` to the faulted VCPU
/// thread). Any other label stops the VCPU (its thread becomes inactive).
pub mod exit_reply {
    /// Resume the guest, with the result the exit's layout describes.
    pub const RESUME: u64 = 0;
    /// Inject a synchronous external abort into the guest at the exit's
    /// address (as real hardware does for an access with nothing behind
    /// it), then resume.
    pub const INJECT_ABORT: u64 = 1;
    /// Inject an undefined-instruction exception into the guest, then
    /// resume.
    pub const INJECT_UNDEFINED: u64 = 2;
}

/// Message words of a [`FaultLabel::VcpuMmio`] exit. The reply
/// [`exit_reply::RESUME`] carries, for a read, the value in word 0: the
/// core truncates it to the access size, sign-extends it if asked, writes
/// the register and moves the PC past the instruction; for a write the
/// reply needs no words.
pub mod mmio {
    /// The guest-physical address accessed.
    pub const ADDRESS: usize = 0;
    /// The access, encoded with the constants below.
    pub const ACCESS: usize = 1;
    /// The value stored (a write), already truncated to the access size.
    pub const VALUE: usize = 2;
    /// The PC of the access.
    pub const PC: usize = 3;
    /// The guest-virtual address accessed (`FAR_EL2`).
    pub const VIRTUAL_ADDRESS: usize = 4;
    /// Words in the message.
    pub const LENGTH: u8 = 5;

    /// `ACCESS` bits 0..3: the access size in bytes (1, 2, 4 or 8).
    pub const SIZE_MASK: u64 = 0xf;
    /// `ACCESS` bit: a store.
    pub const WRITE: u64 = 1 << 8;
    /// `ACCESS` bit: a load that sign-extends.
    pub const SIGN_EXTEND: u64 = 1 << 9;
    /// `ACCESS` bit: the register is 64 bits wide (else 32).
    pub const SIXTY_FOUR_BIT: u64 = 1 << 10;
    /// `ACCESS` bits 16..20: the register number (31: the zero register).
    pub const REGISTER_SHIFT: u32 = 16;
}

/// Message words of a [`FaultLabel::VcpuHypercall`] exit. The reply
/// [`exit_reply::RESUME`] writes its words to `x0`, `x1`, ... (as many as
/// it has) and resumes after the instruction.
pub mod hypercall {
    /// 0 for `HVC`, 1 for `SMC`; bits 16..31: the instruction's immediate.
    pub const KIND: usize = 0;
    /// `x0` (the function ID under the SMC calling convention); `x1` to
    /// `x6` follow in words 2 to 7.
    pub const X0: usize = 1;
    /// Words in the message.
    pub const LENGTH: u8 = 8;
    /// `KIND` value of an `SMC`.
    pub const SMC: u64 = 1;
}

/// Message words of a [`FaultLabel::VcpuSystemRegister`] exit. The reply
/// [`exit_reply::RESUME`] carries, for a read, the value in word 0; the
/// core writes the register and moves the PC past the instruction.
pub mod system_register {
    /// The encoding `op0 << 14 | op1 << 11 | CRn << 7 | CRm << 3 | op2`.
    pub const ENCODING: usize = 0;
    /// 1 for a read (`MRS`), 0 for a write (`MSR`).
    pub const READ: usize = 1;
    /// The value written.
    pub const VALUE: usize = 2;
    /// The PC of the instruction.
    pub const PC: usize = 3;
    /// The general-purpose register transferred (31: the zero register).
    pub const REGISTER: usize = 4;
    /// Words in the message.
    pub const LENGTH: u8 = 5;
}

/// Message words of a [`FaultLabel::VcpuException`] exit. The reply
/// [`exit_reply::RESUME`] resumes the guest at word 0 if the reply has a
/// word, else where it stopped.
pub mod vcpu_exception {
    /// The whole syndrome (`ESR_EL2`).
    pub const SYNDROME: usize = 0;
    /// The PC.
    pub const PC: usize = 1;
    /// The faulting virtual address (`FAR_EL2`; aborts only).
    pub const ADDRESS: usize = 2;
    /// The guest-physical address (stage-2 aborts only, else 0).
    pub const GUEST_PHYSICAL: usize = 3;
    /// The guest's `PSTATE`.
    pub const SPSR: usize = 4;
    /// Words in the message.
    pub const LENGTH: u8 = 5;
}

/// Message words of a [`FaultLabel::MemoryFault`].
pub mod memory_fault {
    /// The faulting PC.
    pub const PC: usize = 0;
    /// The faulting address (the thread's virtual address, which is its IPA).
    pub const ADDRESS: usize = 1;
    /// 1 for an instruction fetch, 0 for a data access.
    pub const INSTRUCTION: usize = 2;
    /// The fault status (ESR ISS) as the hardware reported it.
    pub const STATUS: usize = 3;
    /// Words in the message.
    pub const LENGTH: u8 = 4;
}

/// Message words of a [`FaultLabel::UndefinedInstruction`] or
/// [`FaultLabel::UnknownSyscall`].
pub mod instruction_fault {
    /// The faulting PC.
    pub const PC: usize = 0;
    /// The ESR of the exception.
    pub const SYNDROME: usize = 1;
    /// Words in the message.
    pub const LENGTH: u8 = 2;
}

impl FaultLabel {
    /// The fault kind with label `label`, or `None`.
    pub const fn from_label(label: u64) -> Option<FaultLabel> {
        Some(match label {
            1 => FaultLabel::MemoryFault,
            2 => FaultLabel::UndefinedInstruction,
            3 => FaultLabel::UnknownSyscall,
            4 => FaultLabel::VcpuMmio,
            5 => FaultLabel::VcpuHypercall,
            6 => FaultLabel::VcpuSystemRegister,
            7 => FaultLabel::VcpuException,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_labels_round_trip() {
        for label in [
            FaultLabel::MemoryFault,
            FaultLabel::UndefinedInstruction,
            FaultLabel::UnknownSyscall,
            FaultLabel::VcpuMmio,
            FaultLabel::VcpuHypercall,
            FaultLabel::VcpuSystemRegister,
            FaultLabel::VcpuException,
        ] {
            assert_eq!(FaultLabel::from_label(label as u64), Some(label));
        }
        assert_eq!(FaultLabel::from_label(0), None);
        assert_eq!(FaultLabel::from_label(8), None);
    }
}
