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
        ] {
            assert_eq!(FaultLabel::from_label(label as u64), Some(label));
        }
        assert_eq!(FaultLabel::from_label(0), None);
    }
}
