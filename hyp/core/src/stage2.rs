//! The stage-2 translation-table format (the EL1&0 regime's second stage,
//! `VTTBR_EL2`): descriptor encoding and decoding, nothing else.
//!
//! One format serves every VSpace, a guest's physical address space and a
//! native thread's address space alike (DESIGN.md section 2). It is kept
//! apart from [`crate::vspace`], which decides *what* may be mapped, so that
//! the exact bits can be checked against the Arm ARM on their own.
//!
//! Format: VMSAv8-64, 4 KiB granule, 39-bit intermediate physical addresses
//! (`VTCR_EL2.T0SZ = 25`, `SL0 = 0b01`: the walk starts at level 1 with a
//! single 4 KiB root table, no concatenated tables). Level 1 entries cover
//! 1 GiB and are only ever tables here; level 2 entries cover 2 MiB (a table
//! or a 2 MiB block); level 3 entries are 4 KiB pages. The 39-bit space is
//! the same as `hyp`'s own (`pagetable`), fits the Cortex-A72's 44-bit
//! physical range, and avoids the concatenated level-1 tables (8 KiB, 8 KiB
//! aligned) that a 40-bit space would need, so a VSpace is one 4 KiB
//! object like a page table.
//!
//! Descriptor bits (Arm ARM D8.3, stage-2 formats; ARMv8.0, no FEAT_XNX):
//!
//! | bits | field | value here |
//! | --- | --- | --- |
//! | 0 | valid | 1 |
//! | 1 | table (levels 1-2) / page (level 3); 0 = block | |
//! | 5:2 | `MemAttr` | `0b1111` Normal WB (inner and outer), `0b0001` Device-nGnRE |
//! | 7:6 | `S2AP` | `01` read, `10` write, `11` read-write |
//! | 9:8 | `SH` | `11` inner shareable for Normal memory, `00` for Device |
//! | 10 | `AF` | 1 (no access-flag faults) |
//! | 47:12 | output address | |
//! | 54 | `XN` | set for non-executable mappings, always for Device |
//!
//! Stage-2 table descriptors have no permission bits (`APTable` and
//! `XNTable` are RES0 at stage 2), so a table descriptor is only its
//! address and `0b11`.

use hyp_abi::Rights;

/// Bits of intermediate physical address a VSpace covers.
pub const IPA_BITS: u32 = 39;
/// Size of the IPA space in bytes.
pub const IPA_LIMIT: u64 = 1 << IPA_BITS;
/// `VTCR_EL2.T0SZ` for [`IPA_BITS`].
pub const T0SZ: u64 = 64 - IPA_BITS as u64;
/// `VTCR_EL2.SL0` for a 4 KiB granule walk starting at level 1.
pub const SL0: u64 = 0b01;
/// The level of a VSpace's root table.
pub const ROOT_LEVEL: u8 = 1;
/// The last level (4 KiB pages).
pub const LAST_LEVEL: u8 = 3;
/// Entries in one table.
pub const ENTRIES: usize = 512;
/// Output addresses are 48 bits at most in this format.
pub const OUTPUT_ADDRESS_LIMIT: u64 = 1 << 48;

const VALID: u64 = 1 << 0;
const TABLE_OR_PAGE: u64 = 1 << 1;
const MEMATTR_SHIFT: u32 = 2;
const MEMATTR_MASK: u64 = 0b1111 << MEMATTR_SHIFT;
/// `MemAttr` for Normal memory, outer and inner write-back cacheable.
pub const MEMATTR_NORMAL_WRITE_BACK: u64 = 0b1111;
/// `MemAttr` for Device-nGnRE.
pub const MEMATTR_DEVICE_NGNRE: u64 = 0b0001;
const S2AP_READ: u64 = 1 << 6;
const S2AP_WRITE: u64 = 1 << 7;
const INNER_SHAREABLE: u64 = 0b11 << 8;
const ACCESS_FLAG: u64 = 1 << 10;
const EXECUTE_NEVER: u64 = 1 << 54;
const ADDRESS_MASK: u64 = 0x0000_ffff_ffff_f000;

/// log2 of the bytes one entry at `level` (1, 2 or 3) maps.
pub const fn entry_span_bits(level: u8) -> u32 {
    12 + 9 * (LAST_LEVEL as u32 - level as u32)
}

/// The index of `ipa`'s entry in the table at `level`.
pub const fn entry_index(ipa: u64, level: u8) -> usize {
    ((ipa >> entry_span_bits(level)) & 0x1ff) as usize
}

/// What a leaf entry allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeafAttributes {
    /// `READ` and/or `WRITE` (other rights have no meaning here).
    pub rights: Rights,
    /// Instruction fetches allowed.
    pub executable: bool,
    /// Device-nGnRE instead of Normal write-back memory.
    pub device: bool,
}

/// A decoded descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Descriptor {
    /// Nothing mapped.
    Invalid,
    /// The next-level table at this physical address (levels 1 and 2).
    Table(u64),
    /// A page (level 3) or block (levels 1 and 2) at this physical address.
    Leaf(u64, LeafAttributes),
}

/// The table descriptor for the next-level table at `table` (4 KiB aligned,
/// below [`OUTPUT_ADDRESS_LIMIT`]).
pub const fn table_descriptor(table: u64) -> u64 {
    (table & ADDRESS_MASK) | TABLE_OR_PAGE | VALID
}

/// The leaf descriptor at `level` (2: block, 3: page) for `physical`.
/// Device memory is never executable, whatever `attributes` asks; rights
/// other than `READ` and `WRITE` are ignored.
pub const fn leaf_descriptor(physical: u64, level: u8, attributes: LeafAttributes) -> u64 {
    let mut descriptor = (physical & ADDRESS_MASK) | VALID | ACCESS_FLAG;
    if level == LAST_LEVEL {
        descriptor |= TABLE_OR_PAGE;
    }
    if attributes.device {
        descriptor |= (MEMATTR_DEVICE_NGNRE << MEMATTR_SHIFT) | EXECUTE_NEVER;
    } else {
        descriptor |= (MEMATTR_NORMAL_WRITE_BACK << MEMATTR_SHIFT) | INNER_SHAREABLE;
        if !attributes.executable {
            descriptor |= EXECUTE_NEVER;
        }
    }
    if attributes.rights.contains(Rights::READ) {
        descriptor |= S2AP_READ;
    }
    if attributes.rights.contains(Rights::WRITE) {
        descriptor |= S2AP_WRITE;
    }
    descriptor
}

/// Decodes the descriptor `descriptor` found in a table at `level`.
pub const fn decode(descriptor: u64, level: u8) -> Descriptor {
    if descriptor & VALID == 0 {
        return Descriptor::Invalid;
    }
    let address = descriptor & ADDRESS_MASK;
    let is_table_bit = descriptor & TABLE_OR_PAGE != 0;
    if level < LAST_LEVEL && is_table_bit {
        return Descriptor::Table(address);
    }
    let mut rights = Rights::NONE;
    if descriptor & S2AP_READ != 0 {
        rights = rights.union(Rights::READ);
    }
    if descriptor & S2AP_WRITE != 0 {
        rights = rights.union(Rights::WRITE);
    }
    Descriptor::Leaf(
        address,
        LeafAttributes {
            rights,
            executable: descriptor & EXECUTE_NEVER == 0,
            device: (descriptor & MEMATTR_MASK) >> MEMATTR_SHIFT == MEMATTR_DEVICE_NGNRE,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const READ_WRITE: Rights = Rights::READ.union(Rights::WRITE);

    #[test]
    fn descriptors_carry_the_architectural_bits() {
        // Normal RAM, read-write, not executable, 4 KiB page:
        // XN | AF | SH=11 | S2AP=11 | MemAttr=1111 | page | valid.
        let page = leaf_descriptor(
            0x8_1234_5000,
            3,
            LeafAttributes {
                rights: READ_WRITE,
                executable: false,
                device: false,
            },
        );
        assert_eq!(page, (1 << 54) | 0x8_1234_5000 | 0x7ff);
        // Normal RAM, read-only, executable, 2 MiB block: bit 1 clear,
        // S2AP=01, no XN.
        let block = leaf_descriptor(
            0x4020_0000,
            2,
            LeafAttributes {
                rights: Rights::READ,
                executable: true,
                device: false,
            },
        );
        assert_eq!(block, 0x4020_0000 | 0x400 | 0x300 | 0x40 | 0x3c | 0b01);
        // Device-nGnRE, read-write, asked to be executable: XN anyway,
        // MemAttr=0001, SH=00.
        let device = leaf_descriptor(
            0x0900_0000,
            3,
            LeafAttributes {
                rights: READ_WRITE,
                executable: true,
                device: true,
            },
        );
        assert_eq!(device, (1 << 54) | 0x0900_0000 | 0x400 | 0xc0 | 0x04 | 0b11);
        // Write-only is encodable (S2AP=10); vspace refuses to make it.
        let write_only = leaf_descriptor(
            0x1000,
            3,
            LeafAttributes {
                rights: Rights::WRITE,
                executable: false,
                device: false,
            },
        );
        assert_eq!(write_only & 0xc0, 0x80);
        assert_eq!(table_descriptor(0x4000_3000), 0x4000_3003);
        assert_eq!(T0SZ, 25);
    }

    #[test]
    fn decode_inverts_encode() {
        assert_eq!(decode(0, 1), Descriptor::Invalid);
        assert_eq!(decode(0x4000_3003, 1), Descriptor::Table(0x4000_3000));
        assert_eq!(decode(0x4000_3003, 2), Descriptor::Table(0x4000_3000));
        for level in [2, 3] {
            for rights_bits in 0..4 {
                for (executable, device) in [(false, false), (true, false), (false, true)] {
                    let attributes = LeafAttributes {
                        rights: Rights::from_bits(rights_bits).unwrap(),
                        executable,
                        device,
                    };
                    let address = 0xab_cde0_0000;
                    let descriptor = leaf_descriptor(address, level, attributes);
                    assert_eq!(
                        decode(descriptor, level),
                        Descriptor::Leaf(address, attributes)
                    );
                }
            }
        }
    }

    #[test]
    fn indices_and_spans() {
        assert_eq!(entry_span_bits(1), 30);
        assert_eq!(entry_span_bits(2), 21);
        assert_eq!(entry_span_bits(3), 12);
        let ipa = (5 << 30) | (7 << 21) | (9 << 12) | 0x123;
        assert_eq!(entry_index(ipa, 1), 5);
        assert_eq!(entry_index(ipa, 2), 7);
        assert_eq!(entry_index(ipa, 3), 9);
    }
}
