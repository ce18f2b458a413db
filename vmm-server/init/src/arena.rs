//! A test's resources: a 2 MiB untyped block of its own from init's pool
//! (`untyped.rs`), the slots of the root CNode it fills, and a log of
//! every capability it made, so that [`Arena::tear_down`] can take it all
//! apart again and the next test starts from the same memory and slots.
//!
//! Tear-down follows the kernel's rules for deleting objects
//! (`hyp-core/src/cspace.rs`): threads are suspended and deleted first
//! (a thread keeps its CSpace root, VSpace and fault endpoint alive),
//! then frames (deleting a frame capability unmaps it), then everything
//! else in the reverse order of creation, which deletes a CNode's
//! contents before the CNode, a level 3 page table before the level 2
//! table it hangs from, page tables before their VSpace, and an IRQ
//! handler before its notification. Last the arena's block goes back to
//! the pool, which revokes its capability (destroying whatever the test
//! made from it and did not log), and the slots go back to the allocator.

use core::fmt;

use hyp_abi::{Error, ObjectType, Rights, initial_slots};
use hyp_user::{CNode, Frame, PageTable, Tcb, Untyped, VSpace};

use crate::slots::{OutOfSlots, SlotAllocator, SlotMark};
use crate::untyped::{Block, PoolError, UntypedPool};

/// Capabilities one arena can log.
pub(crate) const MAX_ENTRIES: usize = 128;

/// Why a test's resources could not be set up (or taken apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SetupError {
    /// The untyped pool has no block for the test, or refused one back.
    Pool(PoolError),
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

impl From<PoolError> for SetupError {
    fn from(error: PoolError) -> SetupError {
        SetupError::Pool(error)
    }
}

impl fmt::Display for SetupError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SetupError::Pool(error) => write!(formatter, "{error}"),
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
    block: Block,
    root: CNode,
    pool: &'a mut UntypedPool,
    slots: &'a mut SlotAllocator,
    mark: SlotMark,
    entries: [Option<Entry>; MAX_ENTRIES],
    count: usize,
}

impl<'a> Arena<'a> {
    /// Takes a 2 MiB untyped block from `pool` for one test (2 MiB holds
    /// a few child threads with their CNodes of 64 KiB, VSpaces, page
    /// tables and stacks); its slots come from `slots`.
    pub(crate) fn new(
        pool: &'a mut UntypedPool,
        slots: &'a mut SlotAllocator,
    ) -> Result<Arena<'a>, SetupError> {
        let block = pool.allocate()?;
        let mark = slots.mark();
        Ok(Arena {
            block,
            root: CNode::new(initial_slots::CNODE),
            pool,
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
        self.block.untyped()
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
        self.block
            .untyped()
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

    /// Ends the arena without taking anything apart: what it made stays
    /// for good (the guests, which live as long as the system), and so do
    /// its block and slots.
    #[cfg(target_os = "none")]
    pub(crate) fn keep(self) {}

    /// Takes apart everything the test made (see the module's
    /// documentation) and gives its block and slots back. On the first
    /// refusal it stops and says which; the slots and memory stay taken
    /// then.
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
        self.pool.free(self.block).map_err(|error| match error {
            PoolError::Revoke { error, .. } => SetupError::Invocation {
                step: "clean up: revoke the test's untyped block",
                error,
            },
            other => SetupError::Pool(other),
        })?;
        self.slots.release_to(self.mark);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_free_block_the_arena_is_refused_and_takes_no_slot() {
        let mut pool = UntypedPool::new();
        let mut slots = SlotAllocator::new(9, 100);
        assert_eq!(
            Arena::new(&mut pool, &mut slots).map(|_| ()),
            Err(SetupError::Pool(PoolError::Exhausted { blocks: 0 }))
        );
        assert_eq!(slots.remaining(), 100);
    }

    #[test]
    fn the_arena_takes_a_block_and_without_a_kernel_cannot_give_it_back() {
        let mut pool = UntypedPool::new();
        pool.add_run(0x4000_0000, 7, 1).unwrap();
        let mut slots = SlotAllocator::new(9, 100);
        let mut arena = Arena::new(&mut pool, &mut slots).unwrap();
        assert_eq!(arena.untyped(), Untyped::new(7));
        assert_eq!(arena.empty_slot(), Ok(9));
        // On the host every system call is answered IllegalOperation: the
        // logged slot is not deleted, so the block and slots stay taken.
        assert_eq!(
            arena.tear_down(),
            Err(SetupError::Invocation {
                step: "clean up: delete a capability",
                error: Error::IllegalOperation
            })
        );
        assert_eq!(pool.free_blocks(), 0);
        assert_eq!(slots.remaining(), 99);

        let mut pool = UntypedPool::new();
        pool.add_run(0x4000_0000, 7, 1).unwrap();
        let arena = Arena::new(&mut pool, &mut slots).unwrap();
        assert_eq!(
            arena.tear_down(),
            Err(SetupError::Invocation {
                step: "clean up: revoke the test's untyped block",
                error: Error::IllegalOperation
            })
        );
        assert_eq!(pool.free_blocks(), 0);
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
