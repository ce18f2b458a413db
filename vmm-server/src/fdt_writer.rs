//! A minimal flattened-device-tree (DTB, version 17) writer that needs no
//! heap: it writes into one caller-provided byte buffer.
//!
//! Layout of the output: the 40-byte header, an empty memory reservation
//! map (its terminating entry), the structure block, the strings block.
//! While writing, property names are collected at the *end* of the buffer
//! (deduplicated, also as suffixes of longer names); [`FdtWriter::finish`]
//! moves them down behind the structure block and fixes up the name offsets,
//! so no size has to be guessed in advance.
//!
//! What it deliberately does not do: memory reservations, phandle
//! allocation, checking node or property names against the devicetree
//! specification's character set (only empty names where they are not
//! allowed and NUL bytes are refused), or reading trees back (tests use the
//! `fdt` crate for that).

/// The DTB magic.
pub const FDT_MAGIC: u32 = 0xD00D_FEED;
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;
const HEADER_SIZE: usize = 40;
const RSVMAP_SIZE: usize = 16;
const VERSION: u32 = 17;
const LAST_COMPATIBLE_VERSION: u32 = 16;

/// Why writing failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdtError {
    /// The buffer cannot hold the tree.
    BufferTooSmall,
    /// A name is empty (other than the root's) or contains a NUL byte.
    BadName,
    /// `end_node` without a matching `begin_node`, a property outside any
    /// node, a second root, or `finish` with nodes still open.
    Unbalanced,
}

/// Writes one device tree into a buffer; see the module documentation.
#[derive(Debug)]
pub struct FdtWriter<'a> {
    buf: &'a mut [u8],
    /// End of the structure block written so far.
    pos: usize,
    /// Start of the strings collected at the end of `buf`.
    strings_start: usize,
    /// Open nodes.
    depth: usize,
    /// Whether the root node has been opened (and possibly closed).
    root_done: bool,
}

impl<'a> FdtWriter<'a> {
    /// Starts a tree in `buf`.
    pub fn new(buf: &'a mut [u8]) -> Result<Self, FdtError> {
        let start = HEADER_SIZE + RSVMAP_SIZE;
        let header = buf.get_mut(..start).ok_or(FdtError::BufferTooSmall)?;
        header.fill(0);
        let strings_start = buf.len();
        Ok(Self {
            buf,
            pos: start,
            strings_start,
            depth: 0,
            root_done: false,
        })
    }

    /// Opens a node; the root's name is `""`.
    pub fn begin_node(&mut self, name: &str) -> Result<(), FdtError> {
        if name.contains('\0') {
            return Err(FdtError::BadName);
        }
        if self.depth == 0 {
            if self.root_done || !name.is_empty() {
                return Err(if self.root_done {
                    FdtError::Unbalanced
                } else {
                    FdtError::BadName
                });
            }
            self.root_done = true;
        } else if name.is_empty() {
            return Err(FdtError::BadName);
        }
        self.push_u32(FDT_BEGIN_NODE)?;
        self.push_bytes(name.as_bytes())?;
        self.push_bytes(&[0])?;
        self.align()?;
        self.depth += 1;
        Ok(())
    }

    /// Closes the innermost open node.
    pub fn end_node(&mut self) -> Result<(), FdtError> {
        if self.depth == 0 {
            return Err(FdtError::Unbalanced);
        }
        self.push_u32(FDT_END_NODE)?;
        self.depth -= 1;
        Ok(())
    }

    /// Adds a property with a raw value to the open node.
    pub fn property(&mut self, name: &str, value: &[u8]) -> Result<(), FdtError> {
        self.begin_raw_property(name, value.len())?;
        self.push_bytes(value)?;
        self.align()
    }

    /// A property with no value (a flag such as `interrupt-controller`).
    pub fn property_empty(&mut self, name: &str) -> Result<(), FdtError> {
        self.property(name, &[])
    }

    /// A one-cell property.
    pub fn property_u32(&mut self, name: &str, value: u32) -> Result<(), FdtError> {
        self.property(name, &value.to_be_bytes())
    }

    /// A two-cell property.
    pub fn property_u64(&mut self, name: &str, value: u64) -> Result<(), FdtError> {
        self.property(name, &value.to_be_bytes())
    }

    /// A property of several cells.
    pub fn property_cells(&mut self, name: &str, cells: &[u32]) -> Result<(), FdtError> {
        self.begin_raw_property(name, cells.len().saturating_mul(4))?;
        for &cell in cells {
            self.push_u32(cell)?;
        }
        self.align()
    }

    /// A property of several 64-bit numbers, two cells each (e.g. `reg`
    /// with `#address-cells = #size-cells = 2`).
    pub fn property_u64s(&mut self, name: &str, values: &[u64]) -> Result<(), FdtError> {
        self.begin_raw_property(name, values.len().saturating_mul(8))?;
        for &value in values {
            self.push_bytes(&value.to_be_bytes())?;
        }
        self.align()
    }

    /// A string property.
    pub fn property_string(&mut self, name: &str, value: &str) -> Result<(), FdtError> {
        self.property_strings(name, &[value])
    }

    /// A string-list property (e.g. `compatible`).
    pub fn property_strings(&mut self, name: &str, values: &[&str]) -> Result<(), FdtError> {
        if values.iter().any(|v| v.contains('\0')) {
            return Err(FdtError::BadName);
        }
        let len = values
            .iter()
            .fold(0usize, |acc, v| acc.saturating_add(v.len() + 1));
        self.begin_raw_property(name, len)?;
        for value in values {
            self.push_bytes(value.as_bytes())?;
            self.push_bytes(&[0])?;
        }
        self.align()
    }

    /// Completes the tree and returns its total size in bytes (the start of
    /// the buffer now holds the whole DTB).
    pub fn finish(mut self) -> Result<usize, FdtError> {
        if self.depth != 0 || !self.root_done {
            return Err(FdtError::Unbalanced);
        }
        self.push_u32(FDT_END)?;
        let struct_start = HEADER_SIZE + RSVMAP_SIZE;
        let struct_size = self.pos - struct_start;
        let strings_size = self.buf.len() - self.strings_start;
        self.fix_name_offsets(struct_start, strings_size)?;
        // Move the strings down behind the structure block.
        self.buf.copy_within(self.strings_start.., self.pos);
        let total = self.pos + strings_size;
        let fields = [
            FDT_MAGIC,
            to_u32(total)?,
            to_u32(struct_start)?,
            to_u32(self.pos)?,
            to_u32(HEADER_SIZE)?,
            VERSION,
            LAST_COMPATIBLE_VERSION,
            0, // boot_cpuid_phys
            to_u32(strings_size)?,
            to_u32(struct_size)?,
        ];
        for (i, field) in fields.iter().enumerate() {
            write_be32(self.buf, 4 * i, *field)?;
        }
        Ok(total)
    }

    /// Writes a property's header for a value of `len` bytes that the caller
    /// then pushes.
    fn begin_raw_property(&mut self, name: &str, len: usize) -> Result<(), FdtError> {
        if self.depth == 0 {
            return Err(FdtError::Unbalanced);
        }
        if name.is_empty() || name.contains('\0') {
            return Err(FdtError::BadName);
        }
        let len = u32::try_from(len).map_err(|_| FdtError::BufferTooSmall)?;
        let name_from_end = self.intern(name)?;
        self.push_u32(FDT_PROP)?;
        self.push_u32(len)?;
        self.push_u32(name_from_end)
    }

    /// Finds or adds `name` among the strings at the end of the buffer and
    /// returns its distance from the end of the buffer.
    fn intern(&mut self, name: &str) -> Result<u32, FdtError> {
        let end = self.buf.len();
        let needle = name.as_bytes();
        let strings = &self.buf[self.strings_start..];
        // A match must be followed by the NUL that ends a stored string.
        let found = strings
            .windows(needle.len() + 1)
            .position(|w| w.starts_with(needle) && w.last() == Some(&0));
        let at = match found {
            Some(i) => self.strings_start + i,
            None => {
                let new_start = self
                    .strings_start
                    .checked_sub(needle.len() + 1)
                    .filter(|&s| s >= self.pos)
                    .ok_or(FdtError::BufferTooSmall)?;
                self.buf[new_start..new_start + needle.len()].copy_from_slice(needle);
                self.buf[new_start + needle.len()] = 0;
                self.strings_start = new_start;
                new_start
            }
        };
        to_u32(end - at)
    }

    /// Turns each property's "distance from the end of the buffer" into
    /// the offset inside a strings block of `strings_size` bytes.
    fn fix_name_offsets(&mut self, mut at: usize, strings_size: usize) -> Result<(), FdtError> {
        let strings_size = to_u32(strings_size)?;
        while at < self.pos {
            let token = read_be32(self.buf, at)?;
            at += 4;
            match token {
                FDT_BEGIN_NODE => {
                    let name_len = self.buf[at..self.pos]
                        .iter()
                        .position(|&b| b == 0)
                        .ok_or(FdtError::Unbalanced)?;
                    at = (at + name_len + 1).next_multiple_of(4);
                }
                FDT_PROP => {
                    let len = read_be32(self.buf, at)?;
                    let from_end = read_be32(self.buf, at + 4)?;
                    let offset = strings_size
                        .checked_sub(from_end)
                        .ok_or(FdtError::Unbalanced)?;
                    write_be32(self.buf, at + 4, offset)?;
                    let len = usize::try_from(len).map_err(|_| FdtError::Unbalanced)?;
                    at = (at + 8 + len).next_multiple_of(4);
                }
                FDT_END_NODE | FDT_NOP | FDT_END => {}
                _ => return Err(FdtError::Unbalanced),
            }
        }
        Ok(())
    }

    fn push_bytes(&mut self, bytes: &[u8]) -> Result<(), FdtError> {
        let end = self
            .pos
            .checked_add(bytes.len())
            .filter(|&e| e <= self.strings_start)
            .ok_or(FdtError::BufferTooSmall)?;
        self.buf[self.pos..end].copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    fn push_u32(&mut self, value: u32) -> Result<(), FdtError> {
        self.push_bytes(&value.to_be_bytes())
    }

    /// Pads the structure block with zeros to a multiple of four.
    fn align(&mut self) -> Result<(), FdtError> {
        let padding = self.pos.next_multiple_of(4) - self.pos;
        self.push_bytes(&[0; 3][..padding])
    }
}

fn to_u32(value: usize) -> Result<u32, FdtError> {
    u32::try_from(value).map_err(|_| FdtError::BufferTooSmall)
}

fn read_be32(buf: &[u8], at: usize) -> Result<u32, FdtError> {
    let bytes = buf.get(at..at + 4).ok_or(FdtError::Unbalanced)?;
    let mut word = [0; 4];
    word.copy_from_slice(bytes);
    Ok(u32::from_be_bytes(word))
}

fn write_be32(buf: &mut [u8], at: usize, value: u32) -> Result<(), FdtError> {
    buf.get_mut(at..at + 4)
        .ok_or(FdtError::BufferTooSmall)?
        .copy_from_slice(&value.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(buf: &mut [u8]) -> Result<usize, FdtError> {
        let mut w = FdtWriter::new(buf)?;
        w.begin_node("")?;
        w.property_u32("#address-cells", 2)?;
        w.property_u32("#size-cells", 2)?;
        w.property_strings("compatible", &["vendor,board", "generic"])?;
        w.begin_node("memory@40000000")?;
        w.property_string("device_type", "memory")?;
        w.property_u64s("reg", &[0x4000_0000, 0x2000_0000])?;
        w.end_node()?;
        w.begin_node("node")?;
        w.property_empty("flag")?;
        w.property("raw", &[1, 2, 3])?;
        w.property_u32("size-cells", 7)?; // a suffix of "#size-cells"
        w.property_cells("cells", &[1, 2, 3])?;
        w.property_u64("big", 0x1_0000_0002)?;
        w.end_node()?;
        w.end_node()?;
        w.finish()
    }

    #[test]
    fn writes_a_tree_the_fdt_crate_reads() {
        let mut buf = [0u8; 1024];
        let size = sample(&mut buf).unwrap();
        let fdt = fdt::Fdt::new(&buf[..size]).unwrap();
        assert_eq!(fdt.total_size(), size);
        let root = fdt.find_node("/").unwrap();
        assert_eq!(root.property("#address-cells").unwrap().as_usize(), Some(2));
        let compatible: std::vec::Vec<_> = root.compatible().unwrap().all().collect();
        assert_eq!(compatible, ["vendor,board", "generic"]);
        let memory = fdt.memory();
        let region = memory.regions().next().unwrap();
        assert_eq!(region.starting_address as usize, 0x4000_0000);
        assert_eq!(region.size, Some(0x2000_0000));
        let node = fdt.find_node("/node").unwrap();
        assert_eq!(node.property("flag").unwrap().value, &[] as &[u8]);
        assert_eq!(node.property("raw").unwrap().value, &[1, 2, 3]);
        assert_eq!(node.property("size-cells").unwrap().as_usize(), Some(7));
        assert_eq!(
            node.property("cells").unwrap().value,
            &[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]
        );
        assert_eq!(
            node.property("big").unwrap().value,
            &0x1_0000_0002_u64.to_be_bytes()
        );
        assert_eq!(fdt.memory_reservations().count(), 0);
    }

    #[test]
    fn header_fields_and_string_deduplication() {
        let mut buf = [0u8; 1024];
        let size = sample(&mut buf).unwrap();
        let be = |at: usize| u32::from_be_bytes(buf[at..at + 4].try_into().unwrap());
        assert_eq!(be(0), FDT_MAGIC);
        assert_eq!(be(4) as usize, size);
        assert_eq!(be(8), 56, "struct block after header and rsvmap");
        assert_eq!(be(16), 56 - 16, "rsvmap right after the header");
        assert_eq!(be(20), 17);
        assert_eq!(be(24), 16);
        let strings_off = be(12) as usize;
        let strings_size = be(32) as usize;
        assert_eq!(strings_off + strings_size, size);
        assert_eq!(be(8) as usize + be(36) as usize, strings_off);
        // Each name once; "size-cells" and "cells" reuse the tails of
        // "#size-cells" and "#address-cells".
        let strings = &buf[strings_off..size];
        let expected: usize = [
            "#address-cells",
            "#size-cells",
            "compatible",
            "device_type",
            "reg",
            "flag",
            "raw",
            "big",
        ]
        .iter()
        .map(|s| s.len() + 1)
        .sum();
        assert_eq!(strings.len(), expected);
    }

    #[test]
    fn every_too_small_buffer_is_refused() {
        let mut big = [0u8; 1024];
        let needed = sample(&mut big).unwrap();
        for len in 0..needed {
            let mut buf = std::vec![0u8; len];
            assert_eq!(sample(&mut buf), Err(FdtError::BufferTooSmall), "{len}");
        }
        let mut exact = std::vec![0u8; needed];
        assert_eq!(sample(&mut exact), Ok(needed));
        assert_eq!(exact[..], big[..needed]);
    }

    #[test]
    fn misuse_is_refused() {
        let mut buf = [0u8; 256];
        let mut w = FdtWriter::new(&mut buf).unwrap();
        assert_eq!(w.property_u32("x", 1), Err(FdtError::Unbalanced));
        assert_eq!(w.end_node(), Err(FdtError::Unbalanced));
        assert_eq!(w.begin_node("named-root"), Err(FdtError::BadName));
        w.begin_node("").unwrap();
        assert_eq!(w.begin_node(""), Err(FdtError::BadName));
        assert_eq!(w.begin_node("a\0b"), Err(FdtError::BadName));
        assert_eq!(w.property_u32("", 1), Err(FdtError::BadName));
        assert_eq!(w.property_string("s", "a\0"), Err(FdtError::BadName));
        w.begin_node("child").unwrap();
        w.end_node().unwrap();
        w.end_node().unwrap();
        assert_eq!(w.begin_node(""), Err(FdtError::Unbalanced));
        assert!(w.finish().is_ok());

        let mut buf = [0u8; 256];
        let mut w = FdtWriter::new(&mut buf).unwrap();
        w.begin_node("").unwrap();
        assert_eq!(w.finish(), Err(FdtError::Unbalanced));
        let mut buf = [0u8; 256];
        assert_eq!(
            FdtWriter::new(&mut buf).unwrap().finish(),
            Err(FdtError::Unbalanced)
        );
    }
}
