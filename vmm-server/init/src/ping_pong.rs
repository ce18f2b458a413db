//! `ping-pong`: the first test of the kernel from user space. Init builds
//! a second thread from untyped memory, in an address space of its own,
//! and the two exchange [`ROUNDS`] calls through an endpoint. It exercises
//! retype, copy, mint and move, TCB configuration, stage-2 page tables and
//! frame mapping, badges, `Call`, `Recv` and `ReplyRecv`.
//!
//! The child runs init's own code: init maps copies of its image frames
//! into the child's VSpace, at the same addresses, read-only and
//! executable, plus a few fresh stack frames. So the child uses only its
//! stack and read-only data: nothing in it may write a static (the data
//! pages it sees are init's, read-only).
//!
//! Protocol: the child calls with label [`PING`] and word `i`; init checks
//! the badge and `i` and replies label 0 with `i + 1`. At the end the child
//! prints its result and calls once more with label [`DONE`] and words
//! (calls completed, 1 if a reply was wrong else 0). Init never replies to
//! that call: it suspends the child, which is how a thread ends while no
//! exit system call exists.

use core::fmt;

use hyp_abi::{Error, ObjectType, Rights, frame_attributes, initial_slots, user_layout};
use hyp_user::boot_info::UntypedDescriptor;
use hyp_user::{BootInfo, CNode, Endpoint, Frame, Message, PageTable, Tcb, Untyped, VSpace};

use crate::slots::{OutOfSlots, SlotAllocator};

/// Calls the child makes.
pub(crate) const ROUNDS: u64 = 10_000;
/// The badge of the child's endpoint capability.
pub(crate) const BADGE: u64 = 0x42;
/// The label of a ping.
pub(crate) const PING: u64 = 1;
/// The label of the child's last message.
pub(crate) const DONE: u64 = 2;
/// The child's priority (below init's, which is the highest).
const CHILD_PRIORITY: u8 = 100;
/// log2 of the child CNode's slots.
const CHILD_CNODE_RADIX: u64 = 8;
/// The guard of the child's CSpace root: the bits of a 64-bit pointer
/// above the radix.
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
/// The slot of the child's CNode that holds its endpoint capability.
///
/// The child's capability pointers are slot indexes of its CNode, as the
/// root task's are of its own. The kernel resolves every pointer to its
/// full 64 bits, so the child's CSpace root is a copy of its CNode
/// capability minted with a guard of 64 − radix zero bits, as the kernel
/// makes the root task's (`CNode::mint_guard`).
const CHILD_ENDPOINT_SLOT: u64 = 1;
/// Pages of the child's stack.
const CHILD_STACK_PAGES: u64 = 4;
/// The top of the child's stack, in its own address space.
const CHILD_STACK_TOP: u64 = user_layout::STACK_TOP;
/// Bytes of a 4 KiB frame.
const FRAME_SIZE: u64 = 4096;
/// log2 of the smallest untyped block ping-pong takes its objects from:
/// an endpoint and a TCB (a few KiB), the CNode (2^8 slots of 256 B = 64
/// KiB, 64 KiB-aligned), the VSpace, a few page tables and the stack
/// frames (4 KiB each) need about 160 KiB with alignment; 256 KiB leaves
/// room for an image spread over several 2 MiB regions.
const UNTYPED_BITS: u8 = 18;

/// Why ping-pong failed, precisely enough to find the broken step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No untyped block is RAM and big enough.
    NoUntyped,
    /// The root CNode has no room.
    Slots(OutOfSlots),
    /// A kernel invocation was refused.
    Invocation {
        /// What init was doing.
        step: &'static str,
        /// The kernel's answer.
        error: Error,
    },
    /// Mapping a frame of the child at `address` was refused.
    Map {
        /// The address in the child's VSpace.
        address: u64,
        /// The kernel's answer.
        error: Error,
    },
    /// The boot info's image frames do not cover the image contiguously
    /// from `IMAGE_BASE`, so frame `i` is not at `IMAGE_BASE + i * 4096`.
    ImageNotContiguous {
        /// The number of image frames.
        frames: u64,
        /// The first address after the image.
        end: u64,
    },
    /// The page tables for `address` are still missing after two were
    /// mapped.
    TablesMissing {
        /// The address in the child's VSpace.
        address: u64,
    },
    /// A message came with the wrong badge.
    WrongBadge {
        /// Pings answered before it.
        round: u64,
        /// Its badge.
        badge: u64,
        /// Its label.
        label: u64,
    },
    /// A ping carried the wrong number.
    WrongWord {
        /// Pings answered before it (the number expected).
        round: u64,
        /// Its word 0, if it had one.
        word: Option<u64>,
    },
    /// A message had a label of no ping-pong message.
    UnexpectedLabel {
        /// Pings answered before it.
        round: u64,
        /// Its label.
        label: u64,
    },
    /// The child's last message says it failed or stopped early.
    ChildFailed {
        /// Pings init answered.
        answered: u64,
        /// Calls the child completed, by its own count.
        completed: Option<u64>,
        /// Whether the child saw a wrong reply.
        wrong_reply: bool,
    },
}

impl From<OutOfSlots> for Failure {
    fn from(error: OutOfSlots) -> Failure {
        Failure::Slots(error)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Failure::NoUntyped => write!(
                formatter,
                "no untyped RAM block of 2^{UNTYPED_BITS} bytes or more"
            ),
            Failure::Slots(error) => write!(formatter, "{error}"),
            Failure::Invocation { step, error } => write!(formatter, "{step}: {error}"),
            Failure::Map { address, error } => {
                write!(formatter, "map the child's frame at {address:#x}: {error}")
            }
            Failure::ImageNotContiguous { frames, end } => write!(
                formatter,
                "{frames} image frames from {:#x} do not end at the image's end {end:#x}",
                user_layout::IMAGE_BASE
            ),
            Failure::TablesMissing { address } => write!(
                formatter,
                "page tables for {address:#x} still missing after mapping two"
            ),
            Failure::WrongBadge {
                round,
                badge,
                label,
            } => write!(
                formatter,
                "after {round} round trips: badge {badge:#x} (label {label}), expected {BADGE:#x}"
            ),
            Failure::WrongWord { round, word } => match word {
                Some(word) => write!(
                    formatter,
                    "after {round} round trips: ping {word}, expected {round}"
                ),
                None => write!(
                    formatter,
                    "after {round} round trips: a ping without a word"
                ),
            },
            Failure::UnexpectedLabel { round, label } => write!(
                formatter,
                "after {round} round trips: unexpected label {label}"
            ),
            Failure::ChildFailed {
                answered,
                completed,
                wrong_reply,
            } => {
                write!(formatter, "init answered {answered} pings, the child ")?;
                match completed {
                    Some(completed) => write!(formatter, "completed {completed} calls")?,
                    None => write!(formatter, "did not say how many calls it completed")?,
                }
                if wrong_reply {
                    write!(formatter, " and then got a wrong reply")?;
                }
                Ok(())
            }
        }
    }
}

/// `error` as the failure of `step`.
fn step(step: &'static str) -> impl FnOnce(Error) -> Failure {
    move |error| Failure::Invocation { step, error }
}

/// The first untyped block that is RAM and holds 2^[`UNTYPED_BITS`]
/// bytes.
pub(crate) fn choose_untyped(
    mut descriptors: impl Iterator<Item = UntypedDescriptor>,
) -> Option<UntypedDescriptor> {
    descriptors.find(|descriptor| !descriptor.device && descriptor.size_bits >= UNTYPED_BITS)
}

/// Where image frame `index` is mapped (in init's VSpace and the child's).
pub(crate) const fn image_frame_address(index: u64) -> u64 {
    user_layout::IMAGE_BASE + index * FRAME_SIZE
}

/// The lowest address of the child's stack.
pub(crate) const CHILD_STACK_BOTTOM: u64 = CHILD_STACK_TOP - CHILD_STACK_PAGES * FRAME_SIZE;

const _: () = assert!(
    CHILD_STACK_TOP <= user_layout::IMAGE_BASE,
    "the child's stack must not overlap the image mapped into its VSpace"
);

/// Makes objects from one untyped block into the root CNode.
struct Memory {
    untyped: Untyped,
    root: CNode,
}

impl Memory {
    /// Creates one object of `object_type` (`size_bits` as retype takes
    /// it) in a fresh slot of the root CNode, and returns that slot.
    fn create(
        &self,
        slots: &mut SlotAllocator,
        object_type: ObjectType,
        size_bits: u64,
        what: &'static str,
    ) -> Result<u64, Failure> {
        let slot = slots.allocate()?;
        self.untyped
            .retype(object_type, size_bits, self.root, slot, 1)
            .map_err(step(what))?;
        Ok(slot)
    }

    /// Maps `frame` at `address` of `vspace`, creating the page tables the
    /// address lacks: the frame map reports a missing table as a lookup
    /// failure of the VSpace (capability 1), and a page table mapped there
    /// becomes the first missing level (level 2, then level 3).
    fn map_frame(
        &self,
        slots: &mut SlotAllocator,
        frame: Frame,
        vspace: VSpace,
        address: u64,
        rights: Rights,
        attributes: u64,
    ) -> Result<(), Failure> {
        // At most two tables can be missing, so the third try is the last.
        for _ in 0..3 {
            match frame.map(vspace, address, rights, attributes) {
                Err(Error::LookupFailed { argument: 1, .. }) => {
                    let table = PageTable::new(self.create(
                        slots,
                        ObjectType::PageTable,
                        0,
                        "retype a page table",
                    )?);
                    table
                        .map(vspace, address)
                        .map_err(|error| Failure::Map { address, error })?;
                }
                Err(error) => return Err(Failure::Map { address, error }),
                Ok(()) => return Ok(()),
            }
        }
        Err(Failure::TablesMissing { address })
    }
}

/// Runs ping-pong: builds the child, serves its pings and checks its last
/// message. Returns the round trips made.
pub(crate) fn run(boot_info: &BootInfo<'_>, slots: &mut SlotAllocator) -> Result<u64, Failure> {
    let root = CNode::new(initial_slots::CNODE);
    let untyped = choose_untyped(boot_info.untyped_descriptors()).ok_or(Failure::NoUntyped)?;
    let memory = Memory {
        untyped: Untyped::new(untyped.slot),
        root,
    };

    // The endpoint, and the badged capability the child will call through.
    let endpoint =
        Endpoint::new(memory.create(slots, ObjectType::Endpoint, 0, "retype the endpoint")?);
    let badged = slots.allocate()?;
    root.mint(
        badged,
        root,
        endpoint.pointer(),
        Rights::WRITE.union(Rights::GRANT_REPLY),
        BADGE,
    )
    .map_err(step("mint the badged endpoint"))?;

    // The child's objects; the badged endpoint goes into its CNode.
    let tcb = Tcb::new(memory.create(slots, ObjectType::Tcb, 0, "retype the child's TCB")?);
    let cnode = CNode::new(memory.create(
        slots,
        ObjectType::CNode,
        CHILD_CNODE_RADIX,
        "retype the child's CNode",
    )?);
    let vspace =
        VSpace::new(memory.create(slots, ObjectType::VSpace, 0, "retype the child's VSpace")?);
    let cspace_root = CNode::new(slots.allocate()?);
    root.mint_guard(
        cspace_root.pointer(),
        root,
        cnode.pointer(),
        CHILD_CNODE_GUARD_BITS,
        0,
    )
    .map_err(step("mint the child's CSpace root with its guard"))?;
    cnode
        .move_capability(CHILD_ENDPOINT_SLOT, root, badged)
        .map_err(step("move the badged endpoint into the child's CNode"))?;

    // Init's image, read-only and executable, at the same addresses.
    let frames = boot_info.image_frames();
    if image_frame_address(frames) != boot_info.image_end().next_multiple_of(FRAME_SIZE) {
        return Err(Failure::ImageNotContiguous {
            frames,
            end: boot_info.image_end(),
        });
    }
    for index in 0..frames {
        let copy = slots.allocate()?;
        root.copy(
            copy,
            root,
            boot_info.first_image_frame_slot() + index,
            Rights::READ,
        )
        .map_err(step("copy an image frame capability"))?;
        memory.map_frame(
            slots,
            Frame::new(copy),
            vspace,
            image_frame_address(index),
            Rights::READ,
            frame_attributes::EXECUTABLE,
        )?;
    }

    // The child's stack: fresh frames, read-write, not executable.
    let first_stack_frame = slots.allocate_range(CHILD_STACK_PAGES)?;
    memory
        .untyped
        .retype(
            ObjectType::Frame4K,
            0,
            root,
            first_stack_frame,
            CHILD_STACK_PAGES,
        )
        .map_err(step("retype the child's stack frames"))?;
    for page in 0..CHILD_STACK_PAGES {
        memory.map_frame(
            slots,
            Frame::new(first_stack_frame + page),
            vspace,
            CHILD_STACK_BOTTOM + page * FRAME_SIZE,
            Rights::READ.union(Rights::WRITE),
            0,
        )?;
    }

    // Start it: pc = `child`, sp = the stack top, x0 = its endpoint.
    tcb.configure(None, CHILD_PRIORITY, cspace_root, vspace)
        .map_err(step("configure the child's TCB"))?;
    let entry = child as extern "C" fn(u64) -> ! as usize as u64;
    tcb.write_registers(entry, CHILD_STACK_TOP, &[CHILD_ENDPOINT_SLOT])
        .map_err(step("write the child's registers"))?;
    tcb.resume().map_err(step("resume the child"))?;
    hyp_user::println!(
        "init: ping-pong: child started ({} image frames, stack at {CHILD_STACK_BOTTOM:#x}), serving",
        boot_info.image_frames()
    );

    let served = serve(endpoint);
    // The child is blocked in its last call (or in a call init did not
    // answer after a failure): stop it for good.
    let suspended = tcb.suspend().map_err(step("suspend the child"));
    let round_trips = served?;
    suspended?;
    Ok(round_trips)
}

/// Answers the child's pings on `endpoint` until its last message.
fn serve(endpoint: Endpoint) -> Result<u64, Failure> {
    let mut received = endpoint.recv();
    let mut round = 0;
    loop {
        let message = received.message;
        if received.badge != BADGE {
            return Err(Failure::WrongBadge {
                round,
                badge: received.badge,
                label: message.label(),
            });
        }
        match message.label() {
            PING => {
                let word = message.word(0);
                if word != Some(round) {
                    return Err(Failure::WrongWord { round, word });
                }
                round += 1;
                received = endpoint.reply_recv(&Message::new(0, [round]));
            }
            DONE => {
                let completed = message.word(0);
                let wrong_reply = message.word(1) != Some(0);
                if round != ROUNDS || completed != Some(ROUNDS) || wrong_reply {
                    return Err(Failure::ChildFailed {
                        answered: round,
                        completed,
                        wrong_reply,
                    });
                }
                return Ok(round);
            }
            label => return Err(Failure::UnexpectedLabel { round, label }),
        }
    }
}

/// The child thread: calls init [`ROUNDS`] times through the endpoint
/// capability `endpoint_pointer` (a slot of its own CNode), checks every
/// reply, prints the result and reports it to init. It runs init's code
/// in its own address space, on its own stack, with nothing else mapped.
extern "C" fn child(endpoint_pointer: u64) -> ! {
    let endpoint = Endpoint::new(endpoint_pointer);
    let mut completed = 0;
    let mut wrong_reply = None;
    while completed < ROUNDS {
        let reply = endpoint.call(&Message::new(PING, [completed]));
        if reply.label() != 0 || reply.word(0) != Some(completed + 1) {
            wrong_reply = Some(reply);
            break;
        }
        completed += 1;
    }
    match wrong_reply {
        None => hyp_user::println!("ping-pong child: {ROUNDS} calls, every reply checked"),
        Some(reply) => match reply.as_error() {
            Some(error) => {
                hyp_user::println!("ping-pong child: FAIL: call {completed} refused: {error}")
            }
            None => hyp_user::println!(
                "ping-pong child: FAIL: call {completed}: reply label {} words {:?}, expected label 0 word {}",
                reply.label(),
                reply.words(),
                completed + 1
            ),
        },
    }
    let done = Message::new(DONE, [completed, u64::from(wrong_reply.is_some())]);
    // Init suspends this thread on this message and never replies.
    endpoint.call(&done);
    // Only if that call came back (refused): nothing is left to do.
    loop {
        hyp_user::ipc::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyp_abi::boot_info as layout;
    use hyp_user::boot_info::BOOT_INFO_WORDS;

    fn descriptor(slot: u64, size_bits: u8, device: bool) -> UntypedDescriptor {
        UntypedDescriptor {
            slot,
            physical_base: 0x4000_0000,
            size_bits,
            device,
        }
    }

    #[test]
    fn the_first_ram_block_big_enough_is_chosen() {
        let blocks = [
            descriptor(7, 30, true),
            descriptor(8, 12, false),
            descriptor(9, 18, false),
            descriptor(10, 28, false),
        ];
        assert_eq!(
            choose_untyped(blocks.into_iter()),
            Some(descriptor(9, 18, false))
        );
        assert_eq!(choose_untyped(blocks[..2].iter().copied()), None);
    }

    #[test]
    fn the_child_layout_follows_the_user_layout() {
        assert_eq!(image_frame_address(0), user_layout::IMAGE_BASE);
        assert_eq!(image_frame_address(2), user_layout::IMAGE_BASE + 0x2000);
        assert_eq!(CHILD_STACK_BOTTOM, 0x2f_c000);
    }

    #[test]
    fn without_a_kernel_the_first_invocation_fails_precisely() {
        let mut page = [0; BOOT_INFO_WORDS];
        page[0] = layout::MAGIC;
        page[1] = layout::VERSION;
        page[layout::UNTYPED_COUNT] = 1;
        page[layout::FIRST_UNTYPED_SLOT] = 7;
        page[layout::FIRST_EMPTY_SLOT] = 9;
        page[layout::EMPTY_SLOTS] = 256 - 9;
        page[layout::CORES] = 1;
        page[layout::ROOT_CNODE_RADIX] = 8;
        page[layout::FIRST_IMAGE_FRAME_SLOT] = 8;
        page[layout::IMAGE_FRAMES] = 1;
        page[layout::IMAGE_END] = user_layout::IMAGE_BASE + 0x800;
        page[layout::UNTYPED_DESCRIPTORS] = 0x4100_0000;
        page[layout::UNTYPED_DESCRIPTORS + 1] = 20;
        let boot_info = BootInfo::parse(&page).unwrap();
        let mut slots = SlotAllocator::new(9, 256 - 9);
        // On the host every system call is answered IllegalOperation.
        assert_eq!(
            run(&boot_info, &mut slots),
            Err(Failure::Invocation {
                step: "retype the endpoint",
                error: Error::IllegalOperation
            })
        );
        assert_eq!(slots.remaining(), 256 - 10);
    }

    #[test]
    fn failures_name_the_step_and_the_numbers() {
        let failure = Failure::WrongBadge {
            round: 17,
            badge: 0,
            label: 1,
        };
        assert_eq!(
            std::format!("{failure}"),
            "after 17 round trips: badge 0x0 (label 1), expected 0x42"
        );
        let failure = Failure::ChildFailed {
            answered: 3,
            completed: Some(3),
            wrong_reply: true,
        };
        assert_eq!(
            std::format!("{failure}"),
            "init answered 3 pings, the child completed 3 calls and then got a wrong reply"
        );
    }
}
