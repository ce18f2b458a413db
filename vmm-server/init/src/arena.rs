//! A test's resources: an untyped block of its own, retyped from a large
//! one, the slots of the root CNode it fills, and a log of every
//! capability it made, so that [`Arena::tear_down`] can take it all apart
//! again and the next test starts from the same memory and slots.
//!
//! Tear-down follows the kernel's rules for deleting objects
//! (`hyp-core/src/cspace.rs`): threads are suspended and deleted first
//! (a thread keeps its CSpace root, VSpace and fault endpoint alive),
//! then frames (deleting a frame capability unmaps it), then everything
//! else in the reverse order of creation, which deletes a CNode's
//! contents before the CNode, a level 3 page table before the level 2
//! table it hangs from, page tables before their VSpace, and an IRQ
//! handler before its notification. Last goes the arena's untyped block,
//! which then has no children left, and the slots go back to the
//! allocator.

use core::fmt;

use hyp_abi::{Error, ObjectType, Rights, initial_slots};
use hyp_user::boot_info::UntypedDescriptor;
use hyp_user::{BootInfo, CNode, Frame, PageTable, Tcb, Untyped, VSpace};

use crate::slots::{OutOfSlots, SlotAllocator, SlotMark};

/// Capabilities one arena can log.
pub(crate) const MAX_ENTRIES: usize = 128;
/// log2 of the bytes of a test's untyped block: 2 MiB holds a few child
/// threads with their CNodes (64 KiB each), VSpaces, page tables and
/// stacks.
pub(crate) const ARENA_BITS: u8 = 21;

/// Why a test's resources could not be set up (or taken apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SetupError {
    /// No untyped block is RAM and holds 2^`bits` bytes.
    NoUntyped {
        /// log2 of the bytes needed.
        bits: u8,
    },
    /// The root CNode has no room.
    Slots(OutOfSlots),
    /// The arena's log of capabilities is full.
    LogFull,
    /// A kernel invocation was refused.
    Invocation {
        /// What init was doing.
        step: &'static str,
        /// The kernel's answer.
        error: Error,
    },
    /// Mapping a frame at `address` was refused.
    Map {
        /// The address in the VSpace.
        address: u64,
        /// The kernel's answer.
        error: Error,
    },
    /// The page tables for `address` are still missing after two were
    /// mapped.
    TablesMissing {
        /// The address in the VSpace.
        address: u64,
    },
    /// A child space has no room for another thread's stack.
    TooManyThreads {
        /// Threads it holds.
        threads: u64,
    },
    /// The boot info's image frames do not cover the image contiguously
    /// from `IMAGE_BASE`.
    ImageNotContiguous {
        /// The number of image frames.
        frames: u64,
        /// The first address after the image.
        end: u64,
    },
}

impl From<OutOfSlots> for SetupError {
    fn from(error: OutOfSlots) -> SetupError {
        SetupError::Slots(error)
    }
}

impl fmt::Display for SetupError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SetupError::NoUntyped { bits } => {
                write!(formatter, "no untyped RAM block of 2^{bits} bytes or more")
            }
            SetupError::Slots(error) => write!(formatter, "{error}"),
            SetupError::LogFull => write!(
                formatter,
                "more than {MAX_ENTRIES} capabilities in one test's log"
            ),
            SetupError::Invocation { step, error } => write!(formatter, "{step}: {error}"),
            SetupError::Map { address, error } => {
                write!(formatter, "map a frame at {address:#x}: {error}")
            }
            SetupError::TablesMissing { address } => write!(
                formatter,
                "page tables for {address:#x} still missing after mapping two"
            ),
            SetupError::TooManyThreads { threads } => write!(
                formatter,
                "a child space holds {threads} threads, the most it has stacks for"
            ),
            SetupError::ImageNotContiguous { frames, end } => write!(
                formatter,
                "{frames} image frames from {:#x} do not end at the image's end {end:#x}",
                hyp_abi::user_layout::IMAGE_BASE
            ),
        }
    }
}

/// `error` as the failure of `step`.
pub(crate) fn step(step: &'static str) -> impl FnOnce(Error) -> SetupError {
    move |error| SetupError::Invocation { step, error }
}

/// The untyped block tests take their arenas from: the largest RAM block
/// (the first of them if several are as large), if it holds an arena.
pub(crate) fn choose_source(
    descriptors: impl Iterator<Item = UntypedDescriptor>,
) -> Option<UntypedDescriptor> {
    descriptors
        .filter(|descriptor| !descriptor.device && descriptor.size_bits >= ARENA_BITS)
        .fold(
            None,
            |best: Option<UntypedDescriptor>, descriptor| match best {
                Some(best) if best.size_bits >= descriptor.size_bits => Some(best),
                _ => Some(descriptor),
            },
        )
}

/// The source block of `boot_info`'s untyped memory, as [`choose_source`]
/// picks it.
pub(crate) fn source(boot_info: &BootInfo<'_>) -> Result<Untyped, SetupError> {
    choose_source(boot_info.untyped_descriptors())
        .map(|descriptor| Untyped::new(descriptor.slot))
        .ok_or(SetupError::NoUntyped { bits: ARENA_BITS })
}

/// What tear-down does with a logged capability, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A TCB: suspended, then deleted before anything else.
    Thread,
    /// A frame: deleted (so unmapped) after the threads.
    Frame,
    /// Anything else: deleted last, newest first.
    Other,
}

/// One logged capability: slot `slot` of the CNode `cnode` names (in
/// init's CSpace).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    cnode: CNode,
    slot: u64,
    kind: Kind,
}

/// A test's memory, slots and log (see the module's documentation).
#[derive(Debug)]
pub(crate) struct Arena<'a> {
    untyped: Untyped,
    root: CNode,
    slots: &'a mut SlotAllocator,
    mark: SlotMark,
    entries: [Option<Entry>; MAX_ENTRIES],
    count: usize,
}

impl<'a> Arena<'a> {
    /// Retypes an untyped block of 2^[`ARENA_BITS`] bytes from `source`
    /// into a fresh slot, for one test.
    pub(crate) fn new(
        source: Untyped,
        slots: &'a mut SlotAllocator,
    ) -> Result<Arena<'a>, SetupError> {
        let root = CNode::new(initial_slots::CNODE);
        let mark = slots.mark();
        let slot = slots.allocate()?;
        if let Err(error) = source.retype(ObjectType::Untyped, u64::from(ARENA_BITS), root, slot, 1)
        {
            slots.release_to(mark);
            return Err(SetupError::Invocation {
                step: "retype the test's untyped block",
                error,
            });
        }
        Ok(Arena {
            untyped: Untyped::new(slot),
            root,
            slots,
            mark,
            entries: [None; MAX_ENTRIES],
            count: 0,
        })
    }

    /// Init's root CNode.
    pub(crate) fn root(&self) -> CNode {
        self.root
    }

    /// The arena's untyped block. What a test retypes from it by hand it
    /// must log, with [`Arena::log`] or [`Arena::allocate`].
    pub(crate) fn untyped(&self) -> Untyped {
        self.untyped
    }

    /// Logs slot `slot` of `cnode` (a CNode capability in init's CSpace)
    /// for tear-down: it holds, or will hold, a capability this test made.
    pub(crate) fn log(&mut self, cnode: CNode, slot: u64, kind: Kind) -> Result<(), SetupError> {
        let entry = self
            .entries
            .get_mut(self.count)
            .ok_or(SetupError::LogFull)?;
        *entry = Some(Entry { cnode, slot, kind });
        self.count += 1;
        Ok(())
    }

    /// `count` consecutive empty slots of the root CNode, logged with
    /// `kind` (which must not be [`Kind::Thread`] unless each will hold a
    /// TCB); returns the first.
    pub(crate) fn allocate(&mut self, count: u64, kind: Kind) -> Result<u64, SetupError> {
        let first = self.slots.allocate_range(count)?;
        for slot in first..first + count {
            self.log(self.root, slot, kind)?;
        }
        Ok(first)
    }

    /// An empty slot of the root CNode that nothing is put in (logged, so
    /// tear-down deletes whatever a misbehaving kernel put there).
    pub(crate) fn empty_slot(&mut self) -> Result<u64, SetupError> {
        self.allocate(1, Kind::Other)
    }

    /// Creates one object of `object_type` (`size_bits` as retype takes
    /// it) from the arena's block in a fresh slot, logged; returns the
    /// slot.
    pub(crate) fn create(
        &mut self,
        object_type: ObjectType,
        size_bits: u64,
        what: &'static str,
    ) -> Result<u64, SetupError> {
        let kind = match object_type {
            ObjectType::Tcb => Kind::Thread,
            ObjectType::Frame4K | ObjectType::Frame2M => Kind::Frame,
            _ => Kind::Other,
        };
        let slot = self.slots.allocate()?;
        self.untyped
            .retype(object_type, size_bits, self.root, slot, 1)
            .map_err(step(what))?;
        self.log(self.root, slot, kind)?;
        Ok(slot)
    }

    /// Copies the capability in root slot `source` with at most `rights`
    /// into a fresh slot (logged with `kind`); returns the slot.
    pub(crate) fn copy(
        &mut self,
        source: u64,
        rights: Rights,
        kind: Kind,
        what: &'static str,
    ) -> Result<u64, SetupError> {
        let slot = self.slots.allocate()?;
        self.root
            .copy(slot, self.root, source, rights)
            .map_err(step(what))?;
        self.log(self.root, slot, kind)?;
        Ok(slot)
    }

    /// Mints the endpoint or notification capability in root slot `source`
    /// with `rights` and `badge` into a fresh slot (logged); returns the
    /// slot.
    pub(crate) fn mint(
        &mut self,
        source: u64,
        rights: Rights,
        badge: u64,
        what: &'static str,
    ) -> Result<u64, SetupError> {
        let slot = self.slots.allocate()?;
        self.root
            .mint(slot, self.root, source, rights, badge)
            .map_err(step(what))?;
        self.log(self.root, slot, Kind::Other)?;
        Ok(slot)
    }

    /// Maps `frame` at `address` of `vspace`, creating the page tables the
    /// address lacks (logged): the frame map reports a missing table as a
    /// lookup failure of the VSpace (capability 1), and a page table
    /// mapped there becomes the first missing level (level 2, then 3).
    pub(crate) fn map_frame(
        &mut self,
        frame: Frame,
        vspace: VSpace,
        address: u64,
        rights: Rights,
        attributes: u64,
    ) -> Result<(), SetupError> {
        // At most two tables can be missing, so the third try is the last.
        for _ in 0..3 {
            match frame.map(vspace, address, rights, attributes) {
                Err(Error::LookupFailed { argument: 1, .. }) => {
                    let table = PageTable::new(self.create(
                        ObjectType::PageTable,
                        0,
                        "retype a page table",
                    )?);
                    table
                        .map(vspace, address)
                        .map_err(|error| SetupError::Map { address, error })?;
                }
                Err(error) => return Err(SetupError::Map { address, error }),
                Ok(()) => return Ok(()),
            }
        }
        Err(SetupError::TablesMissing { address })
    }

    /// Takes apart everything the test made (see the module's
    /// documentation) and gives its slots back. On the first refusal it
    /// stops and says which; the slots and memory stay taken then.
    pub(crate) fn tear_down(self) -> Result<(), SetupError> {
        let entries = &self.entries[..self.count];
        let logged = || entries.iter().rev().flatten();
        for entry in logged().filter(|entry| entry.kind == Kind::Thread) {
            Tcb::new(entry.slot)
                .suspend()
                .map_err(step("clean up: suspend a thread"))?;
        }
        for entry in logged().filter(|entry| entry.kind == Kind::Thread) {
            entry
                .cnode
                .delete(entry.slot)
                .map_err(step("clean up: delete a thread"))?;
        }
        for entry in logged().filter(|entry| entry.kind == Kind::Frame) {
            entry
                .cnode
                .delete(entry.slot)
                .map_err(step("clean up: delete a frame"))?;
        }
        for entry in logged().filter(|entry| entry.kind == Kind::Other) {
            entry
                .cnode
                .delete(entry.slot)
                .map_err(step("clean up: delete a capability"))?;
        }
        self.root
            .delete(self.untyped.pointer())
            .map_err(step("clean up: delete the test's untyped block"))?;
        self.slots.release_to(self.mark);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(slot: u64, size_bits: u8, device: bool) -> UntypedDescriptor {
        UntypedDescriptor {
            slot,
            physical_base: 0x4000_0000,
            size_bits,
            device,
        }
    }

    #[test]
    fn the_largest_ram_block_is_the_source() {
        let blocks = [
            descriptor(7, 30, true),
            descriptor(8, 12, false),
            descriptor(9, 25, false),
            descriptor(10, 28, false),
            descriptor(11, 28, false),
        ];
        assert_eq!(
            choose_source(blocks.into_iter()),
            Some(descriptor(10, 28, false))
        );
        assert_eq!(choose_source(blocks[..2].iter().copied()), None);
    }

    #[test]
    fn without_a_kernel_the_arena_is_refused_and_its_slot_given_back() {
        let mut slots = SlotAllocator::new(9, 100);
        // On the host every system call is answered IllegalOperation.
        assert_eq!(
            Arena::new(Untyped::new(7), &mut slots).map(|_| ()),
            Err(SetupError::Invocation {
                step: "retype the test's untyped block",
                error: Error::IllegalOperation
            })
        );
        assert_eq!(slots.remaining(), 100);
    }

    #[test]
    fn errors_name_the_step() {
        assert_eq!(
            std::format!(
                "{}",
                SetupError::Invocation {
                    step: "retype a TCB",
                    error: Error::RevokeFirst
                }
            ),
            "retype a TCB: the capability has children: revoke first"
        );
    }
}
