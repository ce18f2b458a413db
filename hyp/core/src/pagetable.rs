//! The hypervisor's own stage-1 translation table (the EL2 regime, `TTBR0_EL2`).
//!
//! `hyp` maps physical memory at the same address (an identity map): its
//! image with the permissions each section needs, the rest of RAM as
//! read-write, never-execute data, and the few device pages it drives. This
//! module builds that table from a pool of 4 KiB tables the arch layer hands
//! in; it is pure logic so the host tests can walk the result.
//!
//! Format: VMSAv8-64, 4 KiB granule, 39-bit input addresses
//! (`TCR_EL2.T0SZ = 25`), so a walk starts at level 1 (1 GiB per entry),
//! then level 2 (2 MiB), then level 3 (4 KiB pages). The largest block that
//! fits an aligned range is used.
//!
//! # Invariants
//! - A descriptor is written once: mapping over a range that is already
//!   mapped fails with [`MapError::AlreadyMapped`] and changes nothing
//!   visible to a walk of the ranges mapped before.
//! - Every table the builder links is inside the pool it was given.

/// Entries in one translation table.
pub const ENTRIES_PER_TABLE: usize = 512;
/// Bytes in a page (and in a translation table).
pub const PAGE_SIZE: u64 = 4096;
/// Bits of input address the table covers (`64 - TCR_EL2.T0SZ`).
pub const INPUT_ADDRESS_BITS: u32 = 39;
/// The value of `TCR_EL2.T0SZ` for [`INPUT_ADDRESS_BITS`].
pub const T0SZ: u64 = 64 - INPUT_ADDRESS_BITS as u64;

/// One translation table: 512 descriptors, 4 KiB, 4 KiB aligned in memory.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(4096))]
pub struct Table(pub [u64; ENTRIES_PER_TABLE]);

impl Table {
    /// A table with every entry invalid.
    pub const EMPTY: Table = Table([0; ENTRIES_PER_TABLE]);
}

/// The memory type of a mapping; the arch layer programs `MAIR_EL2` so that
/// each variant's index means what its name says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryType {
    /// Device-nGnRE: MMIO registers.
    Device = 0,
    /// Normal memory, inner and outer write-back, read- and write-allocate.
    Normal = 1,
}

impl MemoryType {
    /// The `MAIR_EL2` value that gives each [`MemoryType`] its meaning.
    pub const MAIR: u64 = 0x04 /* attr 0: Device-nGnRE */ | (0xff << 8) /* attr 1: Normal WB */;
}

/// What a mapping allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attributes {
    /// Memory type.
    pub memory: MemoryType,
    /// Writes allowed.
    pub writable: bool,
    /// Instruction fetches allowed.
    pub executable: bool,
}

impl Attributes {
    /// Kernel code: read and execute.
    pub const CODE: Attributes = Attributes {
        memory: MemoryType::Normal,
        writable: false,
        executable: true,
    };
    /// Read-only data.
    pub const READ_ONLY: Attributes = Attributes {
        memory: MemoryType::Normal,
        writable: false,
        executable: false,
    };
    /// Read-write data, never executable.
    pub const DATA: Attributes = Attributes {
        memory: MemoryType::Normal,
        writable: true,
        executable: false,
    };
    /// Device registers.
    pub const DEVICE: Attributes = Attributes {
        memory: MemoryType::Device,
        writable: true,
        executable: false,
    };
}

/// Why a mapping was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// An address or the size is not a multiple of [`PAGE_SIZE`].
    Unaligned,
    /// The range does not fit in [`INPUT_ADDRESS_BITS`] or in the 48-bit
    /// output address, or wraps around.
    OutOfRange,
    /// The pool has no free table left.
    OutOfTables,
    /// Part of the range is mapped already (at this virtual address).
    AlreadyMapped(u64),
    /// The pool handed to [`TableBuilder::new`] is empty.
    EmptyPool,
}

impl core::fmt::Display for MapError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MapError::Unaligned => formatter.write_str("address or size not 4 KiB aligned"),
            MapError::OutOfRange => formatter.write_str("range outside the 39-bit address space"),
            MapError::OutOfTables => formatter.write_str("out of translation tables"),
            MapError::AlreadyMapped(address) => write!(formatter, "{address:#x} is mapped already"),
            MapError::EmptyPool => formatter.write_str("no translation tables given"),
        }
    }
}

// Descriptor bits (Arm ARM D8.3, VMSAv8-64 descriptor formats).
const VALID: u64 = 1 << 0;
/// Bit 1: "table" at levels 1-2, "page" at level 3; clear for a block.
const TABLE_OR_PAGE: u64 = 1 << 1;
const ATTR_INDEX_SHIFT: u32 = 2;
/// AP[1]: RES1 in a regime with one privilege level (EL2 without VHE).
const AP_RES1: u64 = 1 << 6;
/// AP[2]: read-only.
const AP_READ_ONLY: u64 = 1 << 7;
/// SH = inner shareable.
const INNER_SHAREABLE: u64 = 0b11 << 8;
/// Access flag; without it the first access faults.
const ACCESS_FLAG: u64 = 1 << 10;
/// XN: execute never (EL2 regime with one VA range).
const EXECUTE_NEVER: u64 = 1 << 54;
/// Output address bits [47:12].
const ADDRESS_MASK: u64 = 0x0000_ffff_ffff_f000;
const OUTPUT_ADDRESS_LIMIT: u64 = 1 << 48;

/// Bytes mapped by one entry at `level` (1, 2 or 3).
const fn entry_span(level: u32) -> u64 {
    1 << (12 + 9 * (3 - level))
}

const fn entry_index(virtual_address: u64, level: u32) -> usize {
    ((virtual_address >> (12 + 9 * (3 - level))) & 0x1ff) as usize
}

fn leaf_descriptor(physical: u64, level: u32, attributes: Attributes) -> u64 {
    let mut descriptor = VALID
        | (physical & ADDRESS_MASK)
        | ((attributes.memory as u64) << ATTR_INDEX_SHIFT)
        | AP_RES1
        | ACCESS_FLAG;
    if level == 3 {
        descriptor |= TABLE_OR_PAGE;
    }
    if attributes.memory == MemoryType::Normal {
        descriptor |= INNER_SHAREABLE;
    }
    if !attributes.writable {
        descriptor |= AP_READ_ONLY;
    }
    if !attributes.executable {
        descriptor |= EXECUTE_NEVER;
    }
    descriptor
}

fn decode_leaf(descriptor: u64) -> Attributes {
    let memory = if (descriptor >> ATTR_INDEX_SHIFT) & 0b111 == MemoryType::Device as u64 {
        MemoryType::Device
    } else {
        MemoryType::Normal
    };
    Attributes {
        memory,
        writable: descriptor & AP_READ_ONLY == 0,
        executable: descriptor & EXECUTE_NEVER == 0,
    }
}

/// Builds a translation table in a pool of tables whose first entry is the
/// root (level 1).
#[derive(Debug)]
pub struct TableBuilder<'pool> {
    tables: &'pool mut [Table],
    /// Physical address of `tables[0]`; table `n` is at `pool_physical + n * 4096`.
    pool_physical: u64,
    used: usize,
}

impl<'pool> TableBuilder<'pool> {
    /// Starts an empty address space in `tables`, which sit at physical
    /// address `pool_physical`. Every table in the pool is cleared.
    pub fn new(tables: &'pool mut [Table], pool_physical: u64) -> Result<Self, MapError> {
        if tables.is_empty() {
            return Err(MapError::EmptyPool);
        }
        if !pool_physical.is_multiple_of(PAGE_SIZE) {
            return Err(MapError::Unaligned);
        }
        for table in tables.iter_mut() {
            *table = Table::EMPTY;
        }
        Ok(TableBuilder {
            tables,
            pool_physical,
            used: 1,
        })
    }

    /// Physical address of the root table, the value for `TTBR0_EL2`.
    pub fn root_physical(&self) -> u64 {
        self.pool_physical
    }

    /// Tables in use, the root included.
    pub fn tables_used(&self) -> usize {
        self.used
    }

    /// Maps `[virtual_address, virtual_address + size)` to the physical
    /// range at `physical` with `attributes`, using the largest blocks that
    /// fit. On error, entries written for the part of the range before the
    /// failing address stay (the caller treats any error as fatal at boot).
    pub fn map(
        &mut self,
        virtual_address: u64,
        physical: u64,
        size: u64,
        attributes: Attributes,
    ) -> Result<(), MapError> {
        if !virtual_address.is_multiple_of(PAGE_SIZE)
            || !physical.is_multiple_of(PAGE_SIZE)
            || !size.is_multiple_of(PAGE_SIZE)
        {
            return Err(MapError::Unaligned);
        }
        let virtual_end = virtual_address
            .checked_add(size)
            .ok_or(MapError::OutOfRange)?;
        let physical_end = physical.checked_add(size).ok_or(MapError::OutOfRange)?;
        if virtual_end > 1 << INPUT_ADDRESS_BITS || physical_end > OUTPUT_ADDRESS_LIMIT {
            return Err(MapError::OutOfRange);
        }
        let mut offset = 0;
        while offset < size {
            let step = self.map_one(
                virtual_address + offset,
                physical + offset,
                size - offset,
                attributes,
            )?;
            offset += step;
        }
        Ok(())
    }

    /// Maps the largest block or page at `virtual_address` that fits in
    /// `remaining` bytes and is aligned on both sides; returns its size.
    fn map_one(
        &mut self,
        virtual_address: u64,
        physical: u64,
        remaining: u64,
        attributes: Attributes,
    ) -> Result<u64, MapError> {
        let mut table = 0;
        for level in 1..=3 {
            let span = entry_span(level);
            let index = entry_index(virtual_address, level);
            let descriptor = self.tables[table].0[index];
            let aligned = virtual_address.is_multiple_of(span) && physical.is_multiple_of(span);
            // Blocks exist at levels 1 and 2 with a 4 KiB granule; level 3 holds pages.
            if descriptor & VALID == 0 && aligned && remaining >= span {
                self.tables[table].0[index] = leaf_descriptor(physical, level, attributes);
                return Ok(span);
            }
            if level == 3 {
                return Err(MapError::AlreadyMapped(virtual_address));
            }
            table = if descriptor & VALID == 0 {
                self.link_new_table(table, index)?
            } else if descriptor & TABLE_OR_PAGE != 0 {
                self.table_index_of(descriptor)?
            } else {
                return Err(MapError::AlreadyMapped(virtual_address));
            };
        }
        Err(MapError::AlreadyMapped(virtual_address))
    }

    fn link_new_table(&mut self, parent: usize, index: usize) -> Result<usize, MapError> {
        if self.used >= self.tables.len() {
            return Err(MapError::OutOfTables);
        }
        let child = self.used;
        self.used += 1;
        let child_physical = self.pool_physical + child as u64 * PAGE_SIZE;
        self.tables[parent].0[index] = VALID | TABLE_OR_PAGE | (child_physical & ADDRESS_MASK);
        Ok(child)
    }

    fn table_index_of(&self, descriptor: u64) -> Result<usize, MapError> {
        let physical = descriptor & ADDRESS_MASK;
        let offset = physical.wrapping_sub(self.pool_physical);
        let index = usize::try_from(offset / PAGE_SIZE).map_err(|_| MapError::OutOfTables)?;
        if physical < self.pool_physical || index >= self.used {
            // Only this builder writes table descriptors, so this is a bug.
            return Err(MapError::OutOfTables);
        }
        Ok(index)
    }

    /// Walks the table as the MMU would: the physical address and the
    /// attributes `virtual_address` translates to, or `None` if it faults.
    pub fn translate(&self, virtual_address: u64) -> Option<(u64, Attributes)> {
        if virtual_address >= 1 << INPUT_ADDRESS_BITS {
            return None;
        }
        let mut table = 0;
        for level in 1..=3 {
            let descriptor = self.tables[table].0[entry_index(virtual_address, level)];
            if descriptor & VALID == 0 {
                return None;
            }
            let is_leaf = level == 3 || descriptor & TABLE_OR_PAGE == 0;
            if is_leaf {
                let span = entry_span(level);
                let base = descriptor & ADDRESS_MASK & !(span - 1);
                return Some((base + virtual_address % span, decode_leaf(descriptor)));
            }
            table = self.table_index_of(descriptor).ok()?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    const POOL_PHYSICAL: u64 = 0x4100_0000;

    fn pool(tables: usize) -> Vec<Table> {
        vec![Table::EMPTY; tables]
    }

    #[test]
    fn identity_maps_ram_with_blocks_and_pages() {
        let mut tables = pool(8);
        let mut builder = TableBuilder::new(&mut tables, POOL_PHYSICAL).unwrap();
        // 1 GiB of RAM at 1 GiB, the way QEMU virt has it: one level-1 block.
        builder
            .map(0x4000_0000, 0x4000_0000, 0x4000_0000, Attributes::DATA)
            .unwrap();
        assert_eq!(builder.tables_used(), 1);
        assert_eq!(
            builder.translate(0x4123_4567),
            Some((0x4123_4567, Attributes::DATA))
        );
        assert_eq!(builder.translate(0x3fff_ffff), None);
        assert_eq!(builder.translate(0x8000_0000), None);
    }

    #[test]
    fn unaligned_ranges_use_smaller_entries() {
        let mut tables = pool(8);
        let mut builder = TableBuilder::new(&mut tables, POOL_PHYSICAL).unwrap();
        // 3 pages below a 2 MiB boundary, then 2 MiB, then one page.
        let start = 0x4020_0000 - 3 * PAGE_SIZE;
        let size = 3 * PAGE_SIZE + 0x20_0000 + PAGE_SIZE;
        builder.map(start, start, size, Attributes::CODE).unwrap();
        // Root, one level-2 table, two level-3 tables.
        assert_eq!(builder.tables_used(), 4);
        for address in [start, 0x4020_0000, 0x403f_f000, 0x4040_0000] {
            assert_eq!(
                builder.translate(address),
                Some((address, Attributes::CODE)),
                "{address:#x}"
            );
        }
        assert_eq!(builder.translate(start - PAGE_SIZE), None);
        assert_eq!(builder.translate(0x4040_1000), None);
    }

    #[test]
    fn non_identity_mapping_translates_offsets() {
        let mut tables = pool(4);
        let mut builder = TableBuilder::new(&mut tables, POOL_PHYSICAL).unwrap();
        builder
            .map(0x10_0000_0000, 0x9000_0000, 0x20_0000, Attributes::DEVICE)
            .unwrap();
        assert_eq!(
            builder.translate(0x10_0000_1234),
            Some((0x9000_1234, Attributes::DEVICE))
        );
    }

    #[test]
    fn descriptors_carry_the_architectural_bits() {
        let mut tables = pool(5);
        {
            let mut builder = TableBuilder::new(&mut tables, POOL_PHYSICAL).unwrap();
            builder
                .map(0x0900_0000, 0x0900_0000, PAGE_SIZE, Attributes::DEVICE)
                .unwrap();
            builder
                .map(0x4000_0000, 0x4000_0000, PAGE_SIZE, Attributes::CODE)
                .unwrap();
        }
        let table_of = |descriptor: u64| {
            usize::try_from(((descriptor & ADDRESS_MASK) - POOL_PHYSICAL) / PAGE_SIZE).unwrap()
        };
        // Level 1 entry 0 -> table 1 (level 2) -> table 2 (level 3).
        assert_eq!(tables[0].0[0], (POOL_PHYSICAL + 0x1000) | 0b11);
        let device_page = tables[2].0[0];
        assert_eq!(
            device_page,
            0x0900_0000 | 0b11 | AP_RES1 | ACCESS_FLAG | EXECUTE_NEVER
        );
        // Code: normal memory (index 1), inner shareable, read-only, executable.
        let code_l2 = tables[table_of(tables[0].0[1])].0[0];
        let code_page = tables[table_of(code_l2)].0[0];
        assert_eq!(
            code_page,
            0x4000_0000 | 0b11 | (1 << 2) | AP_RES1 | AP_READ_ONLY | INNER_SHAREABLE | ACCESS_FLAG
        );
    }

    #[test]
    fn refuses_overlaps_and_bad_ranges() {
        let mut tables = pool(4);
        let mut builder = TableBuilder::new(&mut tables, POOL_PHYSICAL).unwrap();
        builder
            .map(0x4000_0000, 0x4000_0000, 0x20_0000, Attributes::DATA)
            .unwrap();
        assert_eq!(
            builder.map(0x401f_f000, 0x401f_f000, PAGE_SIZE, Attributes::CODE),
            Err(MapError::AlreadyMapped(0x401f_f000))
        );
        assert_eq!(
            builder.map(0x4000_0000, 0x4000_0000, 0x4000_0000, Attributes::CODE),
            Err(MapError::AlreadyMapped(0x4000_0000))
        );
        assert_eq!(
            builder.map(0x123, 0x123, PAGE_SIZE, Attributes::DATA),
            Err(MapError::Unaligned)
        );
        assert_eq!(
            builder.map(
                0x80_0000_0000 - PAGE_SIZE,
                0,
                2 * PAGE_SIZE,
                Attributes::DATA
            ),
            Err(MapError::OutOfRange)
        );
        assert_eq!(
            builder.map(u64::MAX - 0xfff, 0, PAGE_SIZE, Attributes::DATA),
            Err(MapError::OutOfRange)
        );
        // The first mapping is intact.
        assert_eq!(
            builder.translate(0x401f_f000),
            Some((0x401f_f000, Attributes::DATA))
        );
        assert_eq!(builder.translate(0x80_0000_0000), None);
    }

    #[test]
    fn reports_an_exhausted_pool() {
        let mut tables = pool(2);
        let mut builder = TableBuilder::new(&mut tables, POOL_PHYSICAL).unwrap();
        // A single page needs a level-2 and a level-3 table: one too many.
        assert_eq!(
            builder.map(0x4000_0000, 0x4000_0000, PAGE_SIZE, Attributes::DATA),
            Err(MapError::OutOfTables)
        );
        assert!(matches!(
            TableBuilder::new(&mut [], 0),
            Err(MapError::EmptyPool)
        ));
        assert!(matches!(
            TableBuilder::new(&mut pool(1), 0x10),
            Err(MapError::Unaligned)
        ));
    }

    /// Random ranges mapped into a fresh table translate exactly as a
    /// simple model (a list of ranges) says, overlaps included.
    #[test]
    fn random_mappings_agree_with_a_model() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let rounds = if cfg!(miri) { 2 } else { 200 };
        for _round in 0..rounds {
            let mut tables = pool(64);
            let mut builder = TableBuilder::new(&mut tables, POOL_PHYSICAL).unwrap();
            let mut model: Vec<(u64, u64, u64, Attributes)> = Vec::new();
            for _ in 0..6 {
                let pages = 1 + next() % 1100;
                let virtual_address = (next() % 0x4_0000) * PAGE_SIZE;
                let physical = (next() % 0x4_0000) * PAGE_SIZE;
                let attributes =
                    [Attributes::DATA, Attributes::CODE, Attributes::DEVICE][(next() % 3) as usize];
                let size = pages * PAGE_SIZE;
                let overlaps = model
                    .iter()
                    .any(|&(v, _, s, _)| virtual_address < v + s && v < virtual_address + size);
                match builder.map(virtual_address, physical, size, attributes) {
                    Ok(()) => {
                        assert!(!overlaps, "mapped over an existing range");
                        model.push((virtual_address, physical, size, attributes));
                    }
                    Err(MapError::AlreadyMapped(_)) => {
                        assert!(overlaps, "refused a free range");
                        // A partial map may have happened; stop this round.
                        break;
                    }
                    Err(error) => panic!("unexpected {error:?}"),
                }
            }
            for _ in 0..if cfg!(miri) { 50 } else { 300 } {
                let address = (next() % 0x4_2000) * PAGE_SIZE + next() % PAGE_SIZE;
                let expected = model
                    .iter()
                    .find(|&&(v, _, s, _)| address >= v && address < v + s)
                    .map(|&(v, p, _, a)| (p + (address - v), a));
                if let Some(expected) = expected {
                    assert_eq!(builder.translate(address), Some(expected), "{address:#x}");
                }
            }
        }
    }
}
