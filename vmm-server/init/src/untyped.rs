//! Init's untyped memory as a pool of 2 MiB blocks, handed out by a buddy
//! allocator (`buddy_system_allocator::FrameAllocator`).
//!
//! At start [`UntypedPool::fill`] retypes every RAM untyped capability of
//! the boot info that holds 2 MiB or more into child untypeds of
//! 2^[`BLOCK_BITS`] bytes (at most [`RETYPE_BATCH`] per `UntypedRetype`).
//! The kernel places them one after another from the parent's base, each
//! aligned to its size (`hyp-core/src/cspace.rs`, `retype`), so child `i`
//! of a parent at `B` covers `[B + i * 2 MiB, B + (i + 1) * 2 MiB)`; the
//! boot untypeds are aligned to their size, so every block is aligned to
//! 2 MiB. A parent smaller than a block, device memory, and whatever does
//! not fit the table of [`MAX_BLOCKS`] blocks (1 GiB) are left alone.
//!
//! The table maps a block index (the position in the table, which is kept
//! in address order) to the slot of the block's untyped capability; the
//! buddy allocator works on block numbers, the physical address shifted
//! right by [`BLOCK_BITS`], so buddies in the allocator are buddies in
//! memory. [`UntypedPool::allocate`] hands out one block;
//! [`UntypedPool::free`] revokes its capability, which destroys whatever
//! is still made from it (the caller deletes first what the kernel refuses
//! to destroy: threads that are not suspended, CNodes that are not empty,
//! tables with entries), and gives it back to the allocator. Blocks are
//! handed out one at a time: two blocks next to each other in memory are
//! still two untyped capabilities, so a larger run would not be one object.
//!
//! `FrameAllocator` keeps its free lists in `BTreeSet`s, so it needs a heap
//! (the crate offers it only with its `alloc` feature): init uses
//! `hyp_user::heap`, a small fixed heap that nothing else in init uses.

use core::fmt;

use buddy_system_allocator::FrameAllocator;
use hyp_abi::{Error, ObjectType, initial_slots};
use hyp_user::boot_info::UntypedDescriptor;
use hyp_user::{BootInfo, CNode, Untyped};

use crate::slots::{OutOfSlots, SlotAllocator};

/// log2 of the bytes of a block.
pub(crate) const BLOCK_BITS: u8 = 21;
/// The bytes of a block.
pub(crate) const BLOCK_SIZE: u64 = 1 << BLOCK_BITS;
/// The most blocks the pool holds (1 GiB).
pub(crate) const MAX_BLOCKS: usize = 512;
/// The most objects one `UntypedRetype` makes (`docs/abi.md`).
pub(crate) const RETYPE_BATCH: u64 = 256;
/// The buddy allocator's orders: its largest buddy holds all
/// [`MAX_BLOCKS`] blocks.
const ORDER: usize = 10;

const _: () = assert!(
    1 << (ORDER - 1) == MAX_BLOCKS,
    "one buddy can hold the whole pool"
);

/// Why the pool could not do something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PoolError {
    /// Every block is handed out.
    Exhausted {
        /// The blocks the pool has.
        blocks: usize,
    },
    /// The root CNode has no room for the blocks' capabilities.
    Slots(OutOfSlots),
    /// The kernel refused to split the untyped at `base` into blocks.
    Retype {
        /// The parent's physical address.
        base: u64,
        /// The kernel's answer.
        error: Error,
    },
    /// The kernel refused to revoke a block's capability (the block stays
    /// handed out).
    Revoke {
        /// The block's physical address.
        base: u64,
        /// The kernel's answer.
        error: Error,
    },
    /// A run of blocks at `base` that is not 2 MiB aligned, overlaps the
    /// table, or lies beyond what it can record.
    BadRun {
        /// The run's physical address.
        base: u64,
        /// Its blocks.
        blocks: u64,
    },
    /// The table has no room for `blocks` more.
    TableFull {
        /// The blocks that did not fit.
        blocks: u64,
    },
    /// A block was given back that the pool had not handed out, or the
    /// allocator handed out one the table does not hold (a bug).
    Unknown {
        /// The block's physical address.
        base: u64,
    },
}

impl From<OutOfSlots> for PoolError {
    fn from(error: OutOfSlots) -> PoolError {
        PoolError::Slots(error)
    }
}

impl fmt::Display for PoolError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PoolError::Exhausted { blocks } => write!(
                formatter,
                "no free 2 MiB block of untyped memory (the pool has {blocks}, all in use)"
            ),
            PoolError::Slots(error) => write!(formatter, "{error}"),
            PoolError::Retype { base, error } => write!(
                formatter,
                "split the untyped at {base:#x} into 2 MiB blocks: {error}"
            ),
            PoolError::Revoke { base, error } => {
                write!(formatter, "revoke the 2 MiB block at {base:#x}: {error}")
            }
            PoolError::BadRun { base, blocks } => write!(
                formatter,
                "{blocks} blocks at {base:#x}: not 2 MiB aligned, overlapping or out of range"
            ),
            PoolError::TableFull { blocks } => write!(
                formatter,
                "{blocks} more blocks do not fit the pool's table of {MAX_BLOCKS}"
            ),
            PoolError::Unknown { base } => {
                write!(
                    formatter,
                    "the block at {base:#x} is not one the pool handed out"
                )
            }
        }
    }
}

/// The block number (physical address >> [`BLOCK_BITS`]) of the block at
/// `address`, or `None` if `address` is not 2 MiB aligned or beyond what
/// the table records.
pub(crate) fn block_number(address: u64) -> Option<u32> {
    if !address.is_multiple_of(BLOCK_SIZE) {
        return None;
    }
    u32::try_from(address >> BLOCK_BITS).ok()
}

/// The physical address of block number `number`.
pub(crate) const fn block_address(number: u32) -> u64 {
    (number as u64) << BLOCK_BITS
}

/// The blocks the pool takes from the untyped `descriptor` when the table
/// has room for `room` more: none from device memory, an untyped smaller
/// than a block, or one not aligned to 2 MiB.
pub(crate) fn blocks_in(descriptor: &UntypedDescriptor, room: usize) -> u64 {
    if descriptor.device
        || descriptor.size_bits < BLOCK_BITS
        || block_number(descriptor.physical_base).is_none()
    {
        return 0;
    }
    // At most 2^(47 - 21) blocks: the shift cannot overflow.
    let blocks = 1u64 << (descriptor.size_bits - BLOCK_BITS);
    blocks.min(u64::try_from(room).unwrap_or(u64::MAX))
}

/// One block of the table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Entry {
    /// Its block number.
    number: u32,
    /// The slot of its untyped capability in the root CNode.
    slot: u32,
    /// Handed out.
    taken: bool,
}

/// A 2 MiB block handed out by [`UntypedPool::allocate`]; give it back
/// with [`UntypedPool::free`]. It cannot be copied, so it is given back
/// once.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Block {
    index: usize,
    number: u32,
    slot: u64,
}

impl Block {
    /// Its untyped capability (in the root CNode).
    pub(crate) fn untyped(&self) -> Untyped {
        Untyped::new(self.slot)
    }

    /// Its physical address.
    pub(crate) fn base(&self) -> u64 {
        block_address(self.number)
    }
}

/// The pool of 2 MiB blocks (see the module's documentation).
pub(crate) struct UntypedPool {
    /// `entries[..count]`, in address order.
    entries: [Entry; MAX_BLOCKS],
    count: usize,
    free: usize,
    buddy: FrameAllocator<ORDER>,
}

impl fmt::Debug for UntypedPool {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("UntypedPool")
            .field("blocks", &self.count)
            .field("free", &self.free)
            .finish_non_exhaustive()
    }
}

impl UntypedPool {
    /// An empty pool.
    pub(crate) const fn new() -> UntypedPool {
        UntypedPool {
            entries: [Entry {
                number: 0,
                slot: 0,
                taken: false,
            }; MAX_BLOCKS],
            count: 0,
            free: 0,
            buddy: FrameAllocator::new(),
        }
    }

    /// The blocks the pool holds.
    pub(crate) fn blocks(&self) -> usize {
        self.count
    }

    /// The blocks not handed out.
    pub(crate) fn free_blocks(&self) -> usize {
        self.free
    }

    /// Splits the RAM untypeds of `boot_info` into blocks (see the
    /// module's documentation), taking their slots from `slots`. On a
    /// refusal it stops: the blocks made before stay in the pool, and the
    /// slots of those that were not made go back.
    pub(crate) fn fill(
        &mut self,
        boot_info: &BootInfo<'_>,
        slots: &mut SlotAllocator,
    ) -> Result<(), PoolError> {
        let root = CNode::new(initial_slots::CNODE);
        for descriptor in boot_info.untyped_descriptors() {
            let blocks = blocks_in(&descriptor, MAX_BLOCKS - self.count);
            if blocks == 0 {
                continue;
            }
            let parent = Untyped::new(descriptor.slot);
            let mark = slots.mark();
            let first_slot = slots.allocate_range(blocks)?;
            let mut made = 0;
            let mut refused = None;
            while made < blocks {
                let count = (blocks - made).min(RETYPE_BATCH);
                match parent.retype(
                    ObjectType::Untyped,
                    u64::from(BLOCK_BITS),
                    root,
                    first_slot + made,
                    count,
                ) {
                    Ok(()) => made += count,
                    Err(error) => {
                        refused = Some(error);
                        break;
                    }
                }
            }
            if made < blocks {
                // The slots are handed out like a stack: taking `made`
                // again after the mark gives the same first slot.
                slots.release_to(mark);
                if made > 0 {
                    slots.allocate_range(made)?;
                }
            }
            self.add_run(descriptor.physical_base, first_slot, made)?;
            if let Some(error) = refused {
                return Err(PoolError::Retype {
                    base: descriptor.physical_base,
                    error,
                });
            }
        }
        Ok(())
    }

    /// Records `blocks` blocks from the physical address `base`, whose
    /// untyped capabilities are in the root slots from `first_slot`, and
    /// gives them to the allocator. Nothing changes on a refusal.
    pub(crate) fn add_run(
        &mut self,
        base: u64,
        first_slot: u64,
        blocks: u64,
    ) -> Result<(), PoolError> {
        if blocks == 0 {
            return Ok(());
        }
        let bad = PoolError::BadRun { base, blocks };
        let length = usize::try_from(blocks)
            .ok()
            .filter(|length| *length <= MAX_BLOCKS - self.count)
            .ok_or(PoolError::TableFull { blocks })?;
        let first = block_number(base).ok_or(bad)?;
        // The run's numbers and slots must fit the table's entries.
        let blocks_u32 = u32::try_from(blocks).map_err(|_| bad)?;
        let end = first.checked_add(blocks_u32).ok_or(bad)?;
        let first_slot = u32::try_from(first_slot).map_err(|_| bad)?;
        first_slot.checked_add(blocks_u32).ok_or(bad)?;
        let position = self.entries[..self.count].partition_point(|entry| entry.number < first);
        let overlaps_before = position > 0 && self.entries[position - 1].number >= first;
        let overlaps_after = position < self.count && self.entries[position].number < end;
        if overlaps_before || overlaps_after {
            return Err(bad);
        }
        self.entries
            .copy_within(position..self.count, position + length);
        for (offset, entry) in (0u32..).zip(&mut self.entries[position..position + length]) {
            *entry = Entry {
                number: first + offset,
                slot: first_slot + offset,
                taken: false,
            };
        }
        self.count += length;
        self.free += length;
        self.buddy.add_frame(number(first), number(end));
        Ok(())
    }

    /// Hands out a block: `Exhausted` when all are in use.
    pub(crate) fn allocate(&mut self) -> Result<Block, PoolError> {
        let exhausted = PoolError::Exhausted { blocks: self.count };
        let found = self.buddy.alloc(1).ok_or(exhausted)?;
        let Some(number) = u32::try_from(found).ok() else {
            return Err(PoolError::Unknown {
                base: u64::try_from(found)
                    .unwrap_or(u64::MAX)
                    .saturating_mul(BLOCK_SIZE),
            });
        };
        let unknown = PoolError::Unknown {
            base: block_address(number),
        };
        let index = self.index_of(number).ok_or(unknown)?;
        let entry = &mut self.entries[index];
        if entry.taken {
            return Err(unknown);
        }
        entry.taken = true;
        self.free -= 1;
        Ok(Block {
            index,
            number,
            slot: u64::from(entry.slot),
        })
    }

    /// Revokes `block`'s untyped capability, destroying everything made
    /// from it, and gives the block back. If the kernel refuses, the block
    /// stays handed out (its memory is still in use).
    pub(crate) fn free(&mut self, block: Block) -> Result<(), PoolError> {
        CNode::new(initial_slots::CNODE)
            .revoke(block.slot)
            .map_err(|error| PoolError::Revoke {
                base: block.base(),
                error,
            })?;
        self.give_back(block)
    }

    /// Gives `block` back to the allocator (its memory must be free: no
    /// object is made from it any more).
    pub(crate) fn give_back(&mut self, block: Block) -> Result<(), PoolError> {
        let unknown = PoolError::Unknown { base: block.base() };
        let entry = self.entries[..self.count]
            .get_mut(block.index)
            .filter(|entry| {
                entry.taken && entry.number == block.number && u64::from(entry.slot) == block.slot
            })
            .ok_or(unknown)?;
        entry.taken = false;
        self.free += 1;
        self.buddy.dealloc(number(block.number), 1);
        Ok(())
    }

    /// The table index of block number `number`.
    fn index_of(&self, number: u32) -> Option<usize> {
        self.entries[..self.count]
            .binary_search_by_key(&number, |entry| entry.number)
            .ok()
    }
}

/// Block number `number` as the allocator counts.
const fn number(number: u32) -> usize {
    number as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyp_abi::boot_info as layout;
    use hyp_abi::user_layout;
    use hyp_user::boot_info::BOOT_INFO_WORDS;

    const MIB: u64 = 1 << 20;

    fn descriptor(physical_base: u64, size_bits: u8, device: bool) -> UntypedDescriptor {
        UntypedDescriptor {
            slot: 7,
            physical_base,
            size_bits,
            device,
        }
    }

    #[test]
    fn addresses_and_block_numbers_map_both_ways() {
        assert_eq!(block_number(0), Some(0));
        assert_eq!(block_number(0x4000_0000), Some(512));
        assert_eq!(block_number(0x4020_0000), Some(513));
        assert_eq!(block_number(0x4010_0000), None, "not 2 MiB aligned");
        assert_eq!(block_number(0x1000), None);
        assert_eq!(block_number(1 << 53), None, "beyond the table's numbers");
        assert_eq!(block_address(513), 0x4020_0000);
        assert_eq!(block_address(u32::MAX), u64::from(u32::MAX) << 21);
        for address in [0, 0x4000_0000, 0x7fe0_0000, 0xfe00_0000_0000] {
            assert_eq!(block_address(block_number(address).unwrap()), address);
        }
    }

    #[test]
    fn ram_untypeds_of_2_mib_or_more_are_split() {
        assert_eq!(blocks_in(&descriptor(0x4000_0000, 30, false), 1000), 512);
        assert_eq!(blocks_in(&descriptor(0x4000_0000, 30, false), 100), 100);
        assert_eq!(blocks_in(&descriptor(0x4020_0000, 21, false), 1000), 1);
        assert_eq!(blocks_in(&descriptor(0x4000_0000, 30, false), 0), 0);
        assert_eq!(blocks_in(&descriptor(0x4010_0000, 20, false), 1000), 0);
        assert_eq!(blocks_in(&descriptor(0x0800_0000, 24, true), 1000), 0);
        assert_eq!(blocks_in(&descriptor(0x4010_0000, 21, false), 1000), 0);
        assert_eq!(blocks_in(&descriptor(0, 47, false), usize::MAX), 1 << 26);
    }

    #[test]
    fn blocks_come_from_the_table_and_go_back() {
        let mut pool = UntypedPool::new();
        pool.add_run(0x4000_0000, 100, 4).unwrap();
        assert_eq!((pool.blocks(), pool.free_blocks()), (4, 4));
        let mut taken = Vec::new();
        for _ in 0..4 {
            let block = pool.allocate().unwrap();
            let index = usize::try_from(block.slot - 100).unwrap();
            assert_eq!(block.index, index, "table order is address order");
            assert_eq!(block.base(), 0x4000_0000 + 2 * MIB * (block.slot - 100));
            assert_eq!(block.untyped(), Untyped::new(block.slot));
            taken.push(block);
        }
        let mut slots: Vec<u64> = taken.iter().map(|block| block.slot).collect();
        slots.sort_unstable();
        assert_eq!(slots, [100, 101, 102, 103], "each block once");
        assert_eq!(pool.free_blocks(), 0);
        assert_eq!(pool.allocate(), Err(PoolError::Exhausted { blocks: 4 }));
        let second = taken.remove(1);
        let slot = second.slot;
        pool.give_back(second).unwrap();
        assert_eq!(pool.free_blocks(), 1);
        assert_eq!(pool.allocate().map(|block| block.slot), Ok(slot));
        for block in taken {
            pool.give_back(block).unwrap();
        }
        assert_eq!(pool.free_blocks(), 3);
    }

    #[test]
    fn the_same_block_comes_back_after_a_free() {
        let mut pool = UntypedPool::new();
        pool.add_run(0x4000_0000, 10, 256).unwrap();
        pool.add_run(0x6000_0000, 266, 256).unwrap();
        let first = pool.allocate().unwrap();
        let base = first.base();
        pool.give_back(first).unwrap();
        for _ in 0..3 {
            let block = pool.allocate().unwrap();
            assert_eq!(
                block.base(),
                base,
                "a test's arena is always the same memory"
            );
            pool.give_back(block).unwrap();
        }
    }

    #[test]
    fn runs_are_kept_in_address_order_and_must_not_overlap() {
        let mut pool = UntypedPool::new();
        pool.add_run(0x8000_0000, 50, 2).unwrap();
        pool.add_run(0x4000_0000, 60, 3).unwrap();
        pool.add_run(0x4060_0000, 70, 1).unwrap();
        let numbers: Vec<u32> = pool.entries[..pool.blocks()]
            .iter()
            .map(|entry| entry.number)
            .collect();
        assert_eq!(numbers, [512, 513, 514, 515, 1024, 1025]);
        assert_eq!(pool.index_of(515), Some(3));
        assert_eq!(pool.entries[3].slot, 70);
        assert_eq!(pool.index_of(1024), Some(4));
        assert_eq!(pool.index_of(516), None);
        for (base, blocks) in [(0x4040_0000, 1), (0x3fe0_0000, 2), (0x7fe0_0000, 4)] {
            assert_eq!(
                pool.add_run(base, 1, blocks),
                Err(PoolError::BadRun { base, blocks }),
                "{base:#x}"
            );
        }
        assert_eq!(
            pool.add_run(0x4010_0000, 1, 1),
            Err(PoolError::BadRun {
                base: 0x4010_0000,
                blocks: 1
            }),
            "not aligned"
        );
        assert_eq!(
            pool.add_run(1 << 60, 1, 1),
            Err(PoolError::BadRun {
                base: 1 << 60,
                blocks: 1
            }),
            "beyond the numbers"
        );
        assert_eq!(pool.add_run(0x1_0000_0000, 1, 0), Ok(()));
        assert_eq!(pool.blocks(), 6, "refused runs change nothing");
        assert_eq!(pool.free_blocks(), 6);
    }

    #[test]
    fn the_table_holds_at_most_512_blocks() {
        let mut pool = UntypedPool::new();
        pool.add_run(0x4000_0000, 100, 500).unwrap();
        assert_eq!(
            pool.add_run(0x8000_0000, 600, 13),
            Err(PoolError::TableFull { blocks: 13 })
        );
        pool.add_run(0x8000_0000, 600, 12).unwrap();
        assert_eq!(pool.blocks(), MAX_BLOCKS);
        let mut blocks = Vec::new();
        while let Ok(block) = pool.allocate() {
            blocks.push(block);
        }
        assert_eq!(blocks.len(), MAX_BLOCKS);
        assert_eq!(
            pool.allocate(),
            Err(PoolError::Exhausted { blocks: MAX_BLOCKS })
        );
        for block in blocks {
            pool.give_back(block).unwrap();
        }
        assert_eq!(pool.free_blocks(), MAX_BLOCKS);
    }

    #[test]
    fn an_empty_pool_is_exhausted() {
        let mut pool = UntypedPool::new();
        assert_eq!(pool.allocate(), Err(PoolError::Exhausted { blocks: 0 }));
        assert_eq!(
            std::format!("{}", PoolError::Exhausted { blocks: 0 }),
            "no free 2 MiB block of untyped memory (the pool has 0, all in use)"
        );
    }

    #[test]
    fn a_block_the_pool_did_not_hand_out_is_refused() {
        let mut pool = UntypedPool::new();
        pool.add_run(0x4000_0000, 100, 2).unwrap();
        let stranger = Block {
            index: 0,
            number: 512,
            slot: 100,
        };
        assert_eq!(
            pool.give_back(stranger),
            Err(PoolError::Unknown { base: 0x4000_0000 }),
            "not handed out"
        );
        let block = pool.allocate().unwrap();
        let wrong = Block {
            index: block.index,
            number: block.number,
            slot: 7,
        };
        assert!(pool.give_back(wrong).is_err(), "another slot");
        assert_eq!(pool.free_blocks(), 1);
        pool.give_back(block).unwrap();
        assert_eq!(pool.free_blocks(), 2);
    }

    #[test]
    fn without_a_kernel_the_revoke_is_refused_and_the_block_stays_taken() {
        let mut pool = UntypedPool::new();
        pool.add_run(0x4000_0000, 100, 1).unwrap();
        let block = pool.allocate().unwrap();
        // On the host every system call is answered IllegalOperation.
        assert_eq!(
            pool.free(block),
            Err(PoolError::Revoke {
                base: 0x4000_0000,
                error: Error::IllegalOperation
            })
        );
        assert_eq!(pool.free_blocks(), 0);
    }

    #[test]
    fn without_a_kernel_filling_stops_and_gives_the_slots_back() {
        let mut page = [0; BOOT_INFO_WORDS];
        page[0] = layout::MAGIC;
        page[1] = layout::VERSION;
        page[layout::UNTYPED_COUNT] = 2;
        page[layout::FIRST_UNTYPED_SLOT] = 7;
        page[layout::FIRST_EMPTY_SLOT] = 10;
        page[layout::EMPTY_SLOTS] = 4096 - 10;
        page[layout::CORES] = 1;
        page[layout::ROOT_CNODE_RADIX] = 12;
        page[layout::FIRST_IMAGE_FRAME_SLOT] = 9;
        page[layout::IMAGE_FRAMES] = 1;
        page[layout::IMAGE_END] = user_layout::IMAGE_BASE + 0x800;
        page[layout::UNTYPED_DESCRIPTORS] = 0x4010_0000;
        page[layout::UNTYPED_DESCRIPTORS + 1] = 20;
        page[layout::UNTYPED_DESCRIPTORS + 2] = 0x4000_0000;
        page[layout::UNTYPED_DESCRIPTORS + 3] = 30;
        let boot_info = BootInfo::parse(&page).unwrap();
        let mut slots = SlotAllocator::new(10, 4096 - 10);
        let mut pool = UntypedPool::new();
        assert_eq!(
            pool.fill(&boot_info, &mut slots),
            Err(PoolError::Retype {
                base: 0x4000_0000,
                error: Error::IllegalOperation
            })
        );
        assert_eq!(pool.blocks(), 0);
        assert_eq!(slots.remaining(), 4096 - 10);
    }
}
