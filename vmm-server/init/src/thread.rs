//! Child threads for the tests: an address space with init's code, a
//! CSpace of its own, and threads started in it.
//!
//! A [`Space`] is a VSpace with init's image frames mapped at the same
//! addresses, read-only and executable (copies of init's image frame
//! capabilities), and a CNode that is the CSpace root of its threads. So
//! child threads run init's own code but use only their stacks and
//! read-only data: nothing a child runs may write a static (the data
//! pages it sees are init's, read-only), and shared memory is a frame
//! mapped in the window (`hyp_user::window`) of both address spaces.
//!
//! The child's capability pointers are slot indexes of its CNode, as the
//! root task's are of its own: the kernel resolves every pointer to its
//! full 64 bits, so the CSpace root is a copy of the CNode capability
//! minted with a guard of 64 − radix zero bits, as the kernel makes the
//! root task's (`CNode::mint_guard`).
//!
//! Every object comes from the test's [`Arena`], which logs it for
//! tear-down.

use core::fmt;

use hyp_abi::fault::FaultLabel;
use hyp_abi::{ObjectType, Rights, frame_attributes, user_layout};
use hyp_user::{BootInfo, CNode, Endpoint, Frame, Received, Tcb, VSpace};

use crate::arena::{Arena, Kind, SetupError, step};

/// log2 of a child CNode's slots.
/// The badge of a test thread's fault endpoint capability: a message
/// with it is that thread's crash, not its answer.
pub(crate) const CRASH_BADGE: u64 = 0xc4;

pub(crate) const CHILD_CNODE_RADIX: u64 = 8;
/// The guard of a child's CSpace root: the bits of a 64-bit pointer above
/// the radix.
#[allow(
    clippy::cast_possible_truncation,
    reason = "64 - a radix of at most 24, checked when compiling below"
)]
const CHILD_CNODE_GUARD_BITS: u8 = (64 - CHILD_CNODE_RADIX) as u8;
const _: () = assert!(
    CHILD_CNODE_RADIX >= hyp_abi::invocation::MIN_CNODE_RADIX as u64
        && CHILD_CNODE_RADIX <= hyp_abi::invocation::MAX_CNODE_RADIX as u64,
    "a radix retype accepts"
);
/// Pages of a child thread's stack.
pub(crate) const STACK_PAGES: u64 = 4;
/// Bytes of a 4 KiB frame.
pub(crate) const FRAME_SIZE: u64 = 4096;
/// The top of the first thread's stack in a child address space; each
/// further thread's stack lies below the one before, with an unmapped
/// guard page between them.
pub(crate) const FIRST_STACK_TOP: u64 = user_layout::STACK_TOP;
/// The most threads one space holds (their stacks must stay above the
/// boot-info page's address, which child spaces leave unmapped).
pub(crate) const MAX_THREADS: u64 = 8;

const _: () = assert!(
    FIRST_STACK_TOP <= user_layout::IMAGE_BASE,
    "the stacks must not overlap the image mapped into a child's VSpace"
);
const _: () = assert!(
    FIRST_STACK_TOP - MAX_THREADS * (STACK_PAGES + 1) * FRAME_SIZE >= user_layout::BOOT_INFO,
    "the stacks fit between the boot-info address and the first stack top"
);

/// The entry point of a child thread: it is started with its four
/// arguments in `x0..x3` and never returns (a thread ends when init
/// suspends it).
pub(crate) type Entry = extern "C" fn(u64, u64, u64, u64) -> !;

/// Where image frame `index` is mapped (in init's VSpace and a child's).
pub(crate) const fn image_frame_address(index: u64) -> u64 {
    user_layout::IMAGE_BASE + index * FRAME_SIZE
}

/// The top of the stack of thread `index` of a space.
pub(crate) const fn stack_top(index: u64) -> u64 {
    FIRST_STACK_TOP - index * (STACK_PAGES + 1) * FRAME_SIZE
}

/// What a new thread runs, and how.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Start {
    /// Its code.
    pub(crate) entry: Entry,
    /// `x0..x3` at entry.
    pub(crate) arguments: [u64; 4],
    /// Its priority (at most init's, 255).
    pub(crate) priority: u8,
    /// The core it runs on (`None`: the default, core 0).
    pub(crate) core: Option<u64>,
    /// A slot of init's CNode with an endpoint capability (with `WRITE`
    /// and `GRANT_REPLY`) its faults go to, or `None`: a fault stops it.
    pub(crate) fault_endpoint: Option<u64>,
}

/// An address space and CSpace for child threads (see the module's
/// documentation).
#[derive(Debug)]
pub(crate) struct Space {
    vspace: VSpace,
    cnode: CNode,
    threads: u64,
}

impl Space {
    /// Creates the VSpace, with init's image mapped, and the CNode.
    pub(crate) fn new(
        arena: &mut Arena<'_>,
        boot_info: &BootInfo<'_>,
    ) -> Result<Space, SetupError> {
        let root = arena.root();
        let cnode = CNode::new(arena.create(
            ObjectType::CNode,
            CHILD_CNODE_RADIX,
            "retype a child's CNode",
        )?);
        let vspace = VSpace::new(arena.create(ObjectType::VSpace, 0, "retype a child's VSpace")?);
        let cspace_root = arena.allocate(1, Kind::Other)?;
        root.mint_guard(
            cspace_root,
            root,
            cnode.pointer(),
            CHILD_CNODE_GUARD_BITS,
            0,
        )
        .map_err(step("mint a child's CSpace root with its guard"))?;

        // Init's image, read-only and executable, at the same addresses.
        let frames = boot_info.image_frames();
        if image_frame_address(frames) != boot_info.image_end().next_multiple_of(FRAME_SIZE) {
            return Err(SetupError::ImageNotContiguous {
                frames,
                end: boot_info.image_end(),
            });
        }
        for index in 0..frames {
            let copy = arena.copy(
                boot_info.first_image_frame_slot() + index,
                Rights::READ,
                Kind::Frame,
                "copy an image frame capability",
            )?;
            arena.map_frame(
                Frame::new(copy),
                vspace,
                image_frame_address(index),
                Rights::READ,
                frame_attributes::EXECUTABLE,
            )?;
        }
        Ok(Space {
            vspace,
            cnode: CNode::new(cspace_root),
            threads: 0,
        })
    }

    /// The VSpace.
    pub(crate) fn vspace(&self) -> VSpace {
        self.vspace
    }

    /// Puts a copy of the capability in root slot `source`, with at most
    /// `rights` and with `badge` if one is given, into slot `index` of the
    /// space's CNode.
    pub(crate) fn give(
        &self,
        arena: &mut Arena<'_>,
        index: u64,
        source: u64,
        rights: Rights,
        badge: Option<u64>,
    ) -> Result<(), SetupError> {
        let root = arena.root();
        match badge {
            Some(badge) => self.cnode.mint(index, root, source, rights, badge),
            None => self.cnode.copy(index, root, source, rights),
        }
        .map_err(step("put a capability into a child's CNode"))?;
        arena.log(self.cnode, index, Kind::Other)
    }

    /// Moves the capability in root slot `source` into slot `index` of the
    /// space's CNode (for capabilities that are never copied, like an IRQ
    /// handler).
    pub(crate) fn give_by_move(
        &self,
        arena: &mut Arena<'_>,
        index: u64,
        source: u64,
    ) -> Result<(), SetupError> {
        self.cnode
            .move_capability(index, arena.root(), source)
            .map_err(step("move a capability into a child's CNode"))?;
        arena.log(self.cnode, index, Kind::Other)
    }

    /// Maps a new frame at `address`, read-write, not executable; returns
    /// its root slot.
    pub(crate) fn map_new_frame(
        &self,
        arena: &mut Arena<'_>,
        address: u64,
        what: &'static str,
    ) -> Result<u64, SetupError> {
        let frame = arena.create(ObjectType::Frame4K, 0, what)?;
        arena.map_frame(
            Frame::new(frame),
            self.vspace,
            address,
            Rights::READ.union(Rights::WRITE),
            0,
        )?;
        Ok(frame)
    }

    /// Creates a thread in this space with a fresh stack, configures it as
    /// `start` says and resumes it.
    pub(crate) fn spawn(&mut self, arena: &mut Arena<'_>, start: Start) -> Result<Tcb, SetupError> {
        if self.threads >= MAX_THREADS {
            return Err(SetupError::TooManyThreads {
                threads: self.threads,
            });
        }
        let top = stack_top(self.threads);
        self.threads += 1;
        for page in 1..=STACK_PAGES {
            self.map_new_frame(arena, top - page * FRAME_SIZE, "retype a stack frame")?;
        }
        let tcb = Tcb::new(arena.create(ObjectType::Tcb, 0, "retype a TCB")?);
        tcb.configure(
            start.fault_endpoint.map(Endpoint::new),
            start.priority,
            self.cnode,
            self.vspace,
        )
        .map_err(step("configure a thread"))?;
        if let Some(core) = start.core {
            tcb.set_affinity(core)
                .map_err(step("set a thread's affinity"))?;
        }
        let entry = start.entry as usize as u64;
        tcb.write_registers(entry, top, &start.arguments)
            .map_err(step("write a thread's registers"))?;
        tcb.resume().map_err(step("resume a thread"))?;
        Ok(tcb)
    }
}

/// A message that is a fault the kernel sent for a child thread: its
/// badge (which fault endpoint capability), label and words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Crash {
    /// The badge of the fault endpoint capability.
    pub(crate) badge: u64,
    /// The fault label.
    pub(crate) label: u64,
    /// The first four words (PC, then address and so on).
    pub(crate) words: [u64; 4],
}

impl Crash {
    /// `received` read as a fault message.
    pub(crate) fn of(received: &Received) -> Crash {
        let mut words = [0; 4];
        for (index, word) in words.iter_mut().enumerate() {
            *word = received.message.word(index).unwrap_or(0);
        }
        Crash {
            badge: received.badge,
            label: received.message.label(),
            words,
        }
    }
}

impl fmt::Display for Crash {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [pc, second, third, fourth] = self.words;
        match FaultLabel::from_label(self.label) {
            Some(FaultLabel::MemoryFault) => write!(
                formatter,
                "a child thread took a memory fault at pc {pc:#x}, address {second:#x} ({}), status {fourth:#x}",
                if third != 0 { "fetch" } else { "data" }
            ),
            Some(FaultLabel::UndefinedInstruction) => write!(
                formatter,
                "a child thread stopped at an undefined instruction at pc {pc:#x}, syndrome {second:#x} (a panic?)"
            ),
            Some(FaultLabel::UnknownSyscall) => write!(
                formatter,
                "a child thread made an unknown system call at pc {pc:#x}, syndrome {second:#x}"
            ),
            Some(_) | None => write!(
                formatter,
                "a message with badge {:#x}, label {}, words {:#x?}",
                self.badge, self.label, self.words
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyp_user::Message;

    #[test]
    fn the_child_layout_follows_the_user_layout() {
        assert_eq!(image_frame_address(0), user_layout::IMAGE_BASE);
        assert_eq!(image_frame_address(2), user_layout::IMAGE_BASE + 0x2000);
        assert_eq!(stack_top(0), 0x30_0000);
        assert_eq!(stack_top(1), 0x2f_b000);
    }

    #[test]
    fn crashes_say_what_happened() {
        let received = Received {
            badge: 0xc,
            message: Message::new(FaultLabel::MemoryFault as u64, [0x40_1000, 0x10, 0, 0x7]),
        };
        assert_eq!(
            std::format!("{}", Crash::of(&received)),
            "a child thread took a memory fault at pc 0x401000, address 0x10 (data), status 0x7"
        );
    }
}
