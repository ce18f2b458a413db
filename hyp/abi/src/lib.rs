//! `hyp-abi`: the one definition of the interface between `hyp` and the
//! programs above it: system-call numbers and registers, message info,
//! invocation labels, object types and sizes, capability rights, error codes
//! and the layout of fault messages and of the boot-info page.
//!
//! The kernel and user space both depend on this crate, so no number is
//! written twice and kept in sync by a comment. Every encoding here has a
//! decoder that rejects what it does not know, and host tests that round-trip
//! both. `docs/abi.md` describes the same ABI for a reader.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

pub mod error;
pub mod fault;
pub mod invocation;
pub mod vcpu;

pub use error::{Error, ErrorCode};
pub use invocation::{InvocationLabel, ObjectType};
pub use vcpu::register as vcpu_register;

/// The largest number of cores the hypervisor brings up; a device tree that
/// lists more is truncated at boot with a console message.
pub const MAX_CORES: usize = 8;

/// System calls. The number goes in `x8`; `svc #0` enters the kernel.
///
/// Registers: `x0..x7` carry message registers 0..7 both ways, `x9` the
/// capability pointer of the endpoint, notification or object (on return
/// from a receive: the sender's badge), and `x10` the [`MessageInfo`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Syscall {
    /// Send and wait for the reply, through a one-shot reply capability
    /// (also: invoke a kernel object).
    Call = 0,
    /// Send; block until a receiver takes the message.
    Send = 1,
    /// Send only if a receiver is waiting; otherwise drop the message.
    NbSend = 2,
    /// Wait for a message on an endpoint (or a bound notification's signal).
    Recv = 3,
    /// Answer the last `Call` received.
    Reply = 4,
    /// `Reply`, then `Recv`, in one kernel entry.
    ReplyRecv = 5,
    /// Set notification bits (the capability's badge), waking a waiter.
    Signal = 6,
    /// Wait until a notification has bits set; take and clear them.
    Wait = 7,
    /// Take and clear a notification's bits without blocking.
    Poll = 8,
    /// Give up the rest of the timeslice to threads of the same priority.
    Yield = 9,
    /// Debug builds only: write the byte in `x0` to the kernel console.
    DebugPutChar = 0x100,
    /// Debug console input: returns in `x0` the next byte typed on the
    /// hypervisor console, or `u64::MAX` if none waits. The console
    /// UART's interrupt (boot info) can be taken with an IrqHandler to
    /// learn when to ask.
    DebugGetChar = 0x101,
    /// Debug console output, up to [`DEBUG_STRING_BYTES`] at once: the
    /// bytes of `x0..x7`, eight to a register, the first in the low byte
    /// of `x0`, up to the first zero byte.
    DebugPutString = 0x102,
}

/// The most bytes one `DebugPutString` prints.
pub const DEBUG_STRING_BYTES: usize = 64;

/// Register that holds the syscall number.
pub const SYSCALL_NUMBER_REGISTER: usize = 8;
/// Register that holds the capability pointer (badge on return).
pub const CAPABILITY_REGISTER: usize = 9;
/// Register that holds the [`MessageInfo`].
pub const MESSAGE_INFO_REGISTER: usize = 10;
/// Message registers carried in `x0..x7`.
pub const REGISTER_MESSAGE_WORDS: usize = 8;
/// The extra capability pointers of an invocation (capability arguments 1
/// to 3) travel in `x11`, `x12` and `x13`; `MessageInfo::extra_capabilities`
/// says how many are meaningful. They are resolved in the caller's CSpace.
pub const EXTRA_CAPABILITY_REGISTERS: [usize; 3] = [11, 12, 13];
/// Words a message can have in all: 8 in registers, the rest in the
/// sender's and receiver's IPC buffers.
pub const MAX_MESSAGE_WORDS: usize = 64;

impl Syscall {
    /// The syscall with number `number`, or `None` (the kernel answers an
    /// unknown number with [`Error::IllegalOperation`]).
    pub const fn from_number(number: u64) -> Option<Syscall> {
        Some(match number {
            0 => Syscall::Call,
            1 => Syscall::Send,
            2 => Syscall::NbSend,
            3 => Syscall::Recv,
            4 => Syscall::Reply,
            5 => Syscall::ReplyRecv,
            6 => Syscall::Signal,
            7 => Syscall::Wait,
            8 => Syscall::Poll,
            9 => Syscall::Yield,
            0x100 => Syscall::DebugPutChar,
            0x101 => Syscall::DebugGetChar,
            0x102 => Syscall::DebugPutString,
            _ => return None,
        })
    }
}

/// The message descriptor that travels in `x10`.
///
/// Layout: bits 0..=6 the number of message words, bits 7..=8 the number
/// of capabilities sent, bits 12..=63 the label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MessageInfo {
    /// What the message means to its receiver (for a kernel object: the
    /// [`InvocationLabel`]; for a fault: the [`fault::FaultLabel`]).
    pub label: u64,
    /// Message words, at most [`MAX_MESSAGE_WORDS`].
    pub length: u8,
    /// Capabilities transferred (0 to [`MAX_EXTRA_CAPABILITIES`]).
    pub extra_capabilities: u8,
}

/// Capabilities a message can carry.
pub const MAX_EXTRA_CAPABILITIES: u8 = 3;
/// Largest label (52 bits).
pub const MAX_LABEL: u64 = (1 << 52) - 1;

impl MessageInfo {
    /// A message with `label` and `length` words, no capabilities.
    pub const fn new(label: u64, length: u8) -> MessageInfo {
        MessageInfo {
            label,
            length,
            extra_capabilities: 0,
        }
    }

    /// The register encoding. Out-of-range fields are not silently
    /// truncated: [`MessageInfo::decode`] of the result would differ, and
    /// the kernel checks lengths on decode.
    pub const fn encode(self) -> u64 {
        (self.length as u64 & 0x7f)
            | ((self.extra_capabilities as u64 & 0x3) << 7)
            | ((self.label & MAX_LABEL) << 12)
    }

    /// Decodes `x10`; `None` if the length or capability count is beyond
    /// what a message can carry, or reserved bits 9..=11 are set.
    pub const fn decode(word: u64) -> Option<MessageInfo> {
        let length = (word & 0x7f) as u8;
        let extra_capabilities = ((word >> 7) & 0x3) as u8;
        if length as usize > MAX_MESSAGE_WORDS
            || extra_capabilities > MAX_EXTRA_CAPABILITIES
            || (word >> 9) & 0x7 != 0
        {
            return None;
        }
        Some(MessageInfo {
            label: word >> 12,
            length,
            extra_capabilities,
        })
    }
}

/// What a capability allows, as a bit set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Rights(u8);

impl Rights {
    /// Nothing.
    pub const NONE: Rights = Rights(0);
    /// Receive on an endpoint, wait on a notification, map readable.
    pub const READ: Rights = Rights(1 << 0);
    /// Send on an endpoint, signal a notification, map writable.
    pub const WRITE: Rights = Rights(1 << 1);
    /// Send capabilities through an endpoint.
    pub const GRANT: Rights = Rights(1 << 2);
    /// Let the receiver of a `Call` reply (seL4's grant-reply).
    pub const GRANT_REPLY: Rights = Rights(1 << 3);
    /// Every right.
    pub const ALL: Rights = Rights(0b1111);

    /// The bits.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Rights from bits; `None` if an unknown bit is set.
    pub const fn from_bits(bits: u64) -> Option<Rights> {
        if bits & !(Rights::ALL.0 as u64) != 0 {
            None
        } else {
            #[allow(
                clippy::cast_possible_truncation,
                reason = "checked above: only bits 0..=3 are set"
            )]
            Some(Rights(bits as u8))
        }
    }

    /// Whether every right in `other` is in `self`.
    pub const fn contains(self, other: Rights) -> bool {
        self.0 & other.0 == other.0
    }

    /// The rights in both (a derived capability never has more rights than
    /// its parent).
    pub const fn intersect(self, other: Rights) -> Rights {
        Rights(self.0 & other.0)
    }

    /// The rights in either.
    pub const fn union(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }
}

/// Capability slots of the root task's CNode that hold its initial
/// capabilities; the rest is described by the boot-info page.
pub mod initial_slots {
    /// Always empty: capability pointer 0 names nothing.
    pub const NULL: u64 = 0;
    /// The root task's own TCB.
    pub const TCB: u64 = 1;
    /// The root task's CNode (its whole CSpace).
    pub const CNODE: u64 = 2;
    /// The root task's VSpace.
    pub const VSPACE: u64 = 3;
    /// Authority to create IRQ handlers.
    pub const IRQ_CONTROL: u64 = 4;
    /// The frame holding the boot-info page.
    pub const BOOT_INFO_FRAME: u64 = 5;
    /// The frame of the root task's IPC buffer.
    pub const IPC_BUFFER_FRAME: u64 = 6;
    /// First slot that is not one of the above.
    pub const FIRST_FREE: u64 = 7;
}

/// Where the kernel puts the root task in its address space (its virtual
/// addresses are its IPAs: native threads have no stage-1 translation).
pub mod user_layout {
    /// The boot-info page (read-only); its address is in `x0` at entry.
    pub const BOOT_INFO: u64 = 0x0020_0000;
    /// The root task's IPC buffer page (read-write).
    pub const IPC_BUFFER: u64 = 0x0020_1000;
    /// The top of the root task's stack (`sp` at entry).
    pub const STACK_TOP: u64 = 0x0030_0000;
    /// Pages of stack below [`STACK_TOP`].
    pub const STACK_PAGES: u64 = 16;
    /// Where user programs are linked: the root task's ELF segments must
    /// lie at or above this address, below [`IMAGE_LIMIT`].
    pub const IMAGE_BASE: u64 = 0x0040_0000;
    /// The end of the region the root task's image may occupy.
    pub const IMAGE_LIMIT: u64 = 0x0200_0000;
}

/// `Frame.Map`'s attribute word (message word 2).
pub mod frame_attributes {
    /// Instruction fetches allowed (never for device memory).
    pub const EXECUTABLE: u64 = 1 << 0;
    /// Every defined bit.
    pub const ALL: u64 = EXECUTABLE;
}

/// The boot-info page the kernel writes for the root task, as words.
///
/// Word layout: 0 magic, 1 version, 2 number of untyped descriptors `n`,
/// 3 first slot of the untyped capabilities, 4 first empty slot, 5 number
/// of empty slots (up to the CNode's end), 6 number of cores, 7 the root
/// CNode's radix (log2 of its slots), 8 first slot of the capabilities to
/// the root task's image frames, 9 their number (4 KiB frames, in address
/// order from [`crate::user_layout::IMAGE_BASE`]), 10 the first address
/// after the image; 11 the first slot of the boot payload's 2 MiB frame
/// capabilities (guest images and the system description, packed after
/// the hypervisor image; see [`payload`]), 12 their number, 13 the
/// payload's size in bytes (0: none); 14 the GIC version (2 or 3), 15 the
/// physical address of the GICv2 virtual CPU interface (`GICV`; 0 if
/// none), 16 the console UART's interrupt (0 if unknown); then, from word
/// 20, `n` pairs (physical base, `size bits | device << 8`), in slot
/// order.
pub mod boot_info {
    /// First word: "hypBOOT\0" as a little-endian u64.
    pub const MAGIC: u64 = u64::from_le_bytes(*b"hypBOOT\0");
    /// Layout version.
    pub const VERSION: u64 = 2;
    /// Word index of the untyped count.
    pub const UNTYPED_COUNT: usize = 2;
    /// Word index of the first untyped slot.
    pub const FIRST_UNTYPED_SLOT: usize = 3;
    /// Word index of the first empty slot.
    pub const FIRST_EMPTY_SLOT: usize = 4;
    /// Word index of the number of empty slots.
    pub const EMPTY_SLOTS: usize = 5;
    /// Word index of the number of cores.
    pub const CORES: usize = 6;
    /// Word index of the root CNode's radix.
    pub const ROOT_CNODE_RADIX: usize = 7;
    /// Word index of the first slot of the image frame capabilities.
    pub const FIRST_IMAGE_FRAME_SLOT: usize = 8;
    /// Word index of the number of image frames.
    pub const IMAGE_FRAMES: usize = 9;
    /// Word index of the first address after the image.
    pub const IMAGE_END: usize = 10;
    /// Word index of the first slot of the payload's frame capabilities.
    pub const FIRST_PAYLOAD_FRAME_SLOT: usize = 11;
    /// Word index of the number of payload frames (2 MiB each).
    pub const PAYLOAD_FRAMES: usize = 12;
    /// Word index of the payload's size in bytes.
    pub const PAYLOAD_SIZE: usize = 13;
    /// Word index of the GIC version.
    pub const GIC_VERSION: usize = 14;
    /// Word index of the GICv2 virtual CPU interface's physical address.
    pub const GIC_VIRTUAL_CPU_INTERFACE: usize = 15;
    /// Word index of the console UART's interrupt.
    pub const CONSOLE_IRQ: usize = 16;
    /// Word index of the first untyped descriptor.
    pub const UNTYPED_DESCRIPTORS: usize = 20;
    /// Untyped descriptors that fit in the 4 KiB page.
    pub const MAX_UNTYPED: usize = (4096 / 8 - UNTYPED_DESCRIPTORS) / 2;

    const _: () = assert!(
        UNTYPED_DESCRIPTORS + 2 * MAX_UNTYPED <= 4096 / 8,
        "fits a page"
    );
}

/// The boot payload: what the build tool packs after the hypervisor
/// image, 2 MiB aligned (guest kernels, initrds, the system description).
/// It starts with a 4 KiB directory: word 0 [`payload::MAGIC`], word 1
/// [`payload::VERSION`], word 2 the payload's size in bytes, word 3 the
/// number of entries; then from byte 64 one 48-byte entry each: a name of
/// 32 bytes (UTF-8, NUL padded), the offset from the payload's start (a
/// multiple of 2 MiB) and the size in bytes.
pub mod payload {
    /// "hypPAYLD" as a little-endian u64.
    pub const MAGIC: u64 = u64::from_le_bytes(*b"hypPAYLD");
    /// Layout version.
    pub const VERSION: u64 = 1;
    /// Bytes of the directory.
    pub const DIRECTORY_SIZE: usize = 4096;
    /// Byte offset of the first entry.
    pub const FIRST_ENTRY: usize = 64;
    /// Bytes per entry.
    pub const ENTRY_SIZE: usize = 48;
    /// Bytes of an entry's name.
    pub const NAME_SIZE: usize = 32;
    /// Entries that fit the directory.
    pub const MAX_ENTRIES: usize = (DIRECTORY_SIZE - FIRST_ENTRY) / ENTRY_SIZE;
    /// Alignment of the payload and of each entry.
    pub const ALIGNMENT: u64 = 2 << 20;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_numbers_round_trip() {
        for syscall in [
            Syscall::Call,
            Syscall::Send,
            Syscall::NbSend,
            Syscall::Recv,
            Syscall::Reply,
            Syscall::ReplyRecv,
            Syscall::Signal,
            Syscall::Wait,
            Syscall::Poll,
            Syscall::Yield,
            Syscall::DebugPutChar,
            Syscall::DebugGetChar,
            Syscall::DebugPutString,
        ] {
            assert_eq!(Syscall::from_number(syscall as u64), Some(syscall));
        }
        assert_eq!(Syscall::from_number(10), None);
        assert_eq!(Syscall::from_number(u64::MAX), None);
    }

    #[test]
    fn message_info_round_trips_and_rejects_bad_words() {
        let info = MessageInfo {
            label: MAX_LABEL,
            length: 64,
            extra_capabilities: 3,
        };
        assert_eq!(MessageInfo::decode(info.encode()), Some(info));
        assert_eq!(
            MessageInfo::decode(MessageInfo::new(7, 2).encode()),
            Some(MessageInfo::new(7, 2))
        );
        assert_eq!(MessageInfo::decode(65), None, "length beyond 64 words");
        assert_eq!(MessageInfo::decode(1 << 9), None, "reserved bit");
        assert_eq!(MessageInfo::new(0x123, 5).encode(), 0x123_005);
    }

    #[test]
    fn rights_never_grow_by_intersection() {
        let read_write = Rights::READ.union(Rights::WRITE);
        assert!(read_write.contains(Rights::READ));
        assert!(!read_write.contains(Rights::GRANT));
        assert_eq!(
            read_write.intersect(Rights::WRITE.union(Rights::GRANT)),
            Rights::WRITE
        );
        assert_eq!(Rights::from_bits(0b1_0000), None);
        assert_eq!(Rights::from_bits(0b1111), Some(Rights::ALL));
    }

    #[test]
    fn boot_info_magic_spells_its_name() {
        assert_eq!(boot_info::MAGIC.to_le_bytes(), *b"hypBOOT\0");
    }
}
