//! Reads the root task's ELF image: the loadable segments and the entry
//! point, nothing else.
//!
//! The image is built with the kernel, but it is still input: every field is
//! checked (magic, class, byte order, machine, bounds of every header and
//! segment, overflow of every sum), and a bad image is a clear error at
//! boot, never a panic or a read out of bounds.

/// One `PT_LOAD` segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    /// Where it goes (the thread's virtual address, which is its IPA).
    pub address: u64,
    /// The bytes from the file; the rest up to `memory_size` is zero.
    pub data: &'a [u8],
    /// Bytes it takes in memory.
    pub memory_size: u64,
    /// `PF_W`.
    pub writable: bool,
    /// `PF_X`.
    pub executable: bool,
}

/// Why an image was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// Too short, or not `\x7fELF`.
    NotElf,
    /// Not a 64-bit little-endian AArch64 executable.
    WrongKind,
    /// A header or segment lies outside the file, or a size overflows.
    OutOfBounds,
    /// More loadable segments than the loader takes.
    TooManySegments,
}

impl core::fmt::Display for ElfError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter.write_str(match self {
            ElfError::NotElf => "not an ELF file",
            ElfError::WrongKind => "not a 64-bit little-endian AArch64 executable",
            ElfError::OutOfBounds => "a header or segment lies outside the file",
            ElfError::TooManySegments => "more than 8 loadable segments",
        })
    }
}

/// The most loadable segments an image may have.
pub const MAX_SEGMENTS: usize = 8;

/// A parsed image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Image<'a> {
    /// The entry point.
    pub entry: u64,
    /// The loadable segments, `count` of them.
    pub segments: [Option<Segment<'a>>; MAX_SEGMENTS],
}

fn read<const N: usize>(bytes: &[u8], offset: usize) -> Result<[u8; N], ElfError> {
    let end = offset.checked_add(N).ok_or(ElfError::OutOfBounds)?;
    let slice = bytes.get(offset..end).ok_or(ElfError::OutOfBounds)?;
    let mut out = [0; N];
    out.copy_from_slice(slice);
    Ok(out)
}

fn u16_at(bytes: &[u8], offset: usize) -> Result<u16, ElfError> {
    read::<2>(bytes, offset).map(u16::from_le_bytes)
}

fn u32_at(bytes: &[u8], offset: usize) -> Result<u32, ElfError> {
    read::<4>(bytes, offset).map(u32::from_le_bytes)
}

fn u64_at(bytes: &[u8], offset: usize) -> Result<u64, ElfError> {
    read::<8>(bytes, offset).map(u64::from_le_bytes)
}

fn to_usize(value: u64) -> Result<usize, ElfError> {
    usize::try_from(value).map_err(|_| ElfError::OutOfBounds)
}

const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;
const PF_W: u32 = 2;
const EM_AARCH64: u16 = 183;
const ET_EXEC: u16 = 2;

/// Parses `bytes` as an ELF executable.
pub fn parse(bytes: &[u8]) -> Result<Image<'_>, ElfError> {
    if bytes.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err(ElfError::NotElf);
    }
    // Class 64-bit, little endian, version 1, executable, AArch64.
    if read::<3>(bytes, 4)? != [2, 1, 1]
        || u16_at(bytes, 16)? != ET_EXEC
        || u16_at(bytes, 18)? != EM_AARCH64
    {
        return Err(ElfError::WrongKind);
    }
    let entry = u64_at(bytes, 24)?;
    let header_offset = to_usize(u64_at(bytes, 32)?)?;
    let header_size = usize::from(u16_at(bytes, 54)?);
    let header_count = usize::from(u16_at(bytes, 56)?);
    if header_size < 56 {
        return Err(ElfError::OutOfBounds);
    }
    let mut image = Image {
        entry,
        segments: [None; MAX_SEGMENTS],
    };
    let mut count = 0;
    for index in 0..header_count {
        let header = index
            .checked_mul(header_size)
            .and_then(|offset| offset.checked_add(header_offset))
            .ok_or(ElfError::OutOfBounds)?;
        if u32_at(bytes, header)? != PT_LOAD {
            continue;
        }
        let flags = u32_at(bytes, header + 4)?;
        let offset = to_usize(u64_at(bytes, header + 8)?)?;
        let address = u64_at(bytes, header + 16)?;
        let file_size = to_usize(u64_at(bytes, header + 32)?)?;
        let memory_size = u64_at(bytes, header + 40)?;
        let end = offset.checked_add(file_size).ok_or(ElfError::OutOfBounds)?;
        let data = bytes.get(offset..end).ok_or(ElfError::OutOfBounds)?;
        if (file_size as u64) > memory_size || address.checked_add(memory_size).is_none() {
            return Err(ElfError::OutOfBounds);
        }
        if memory_size == 0 {
            continue;
        }
        let slot = image
            .segments
            .get_mut(count)
            .ok_or(ElfError::TooManySegments)?;
        *slot = Some(Segment {
            address,
            data,
            memory_size,
            writable: flags & PF_W != 0,
            executable: flags & PF_X != 0,
        });
        count += 1;
    }
    Ok(image)
}

#[cfg(test)]
#[allow(
    clippy::cast_possible_truncation,
    reason = "test images are small by construction"
)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// A minimal ELF with the given segments: (address, data, memory size, flags).
    fn build(entry: u64, segments: &[(u64, &[u8], u64, u32)]) -> Vec<u8> {
        let mut bytes = vec![0u8; 64 + 56 * segments.len()];
        bytes[..4].copy_from_slice(b"\x7fELF");
        bytes[4..7].copy_from_slice(&[2, 1, 1]);
        bytes[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
        bytes[18..20].copy_from_slice(&EM_AARCH64.to_le_bytes());
        bytes[24..32].copy_from_slice(&entry.to_le_bytes());
        bytes[32..40].copy_from_slice(&64u64.to_le_bytes());
        bytes[54..56].copy_from_slice(&56u16.to_le_bytes());
        bytes[56..58].copy_from_slice(&(segments.len() as u16).to_le_bytes());
        for (index, (address, data, memory_size, flags)) in segments.iter().enumerate() {
            let offset = bytes.len() as u64;
            bytes.extend_from_slice(data);
            let header = 64 + 56 * index;
            bytes[header..header + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
            bytes[header + 4..header + 8].copy_from_slice(&flags.to_le_bytes());
            bytes[header + 8..header + 16].copy_from_slice(&offset.to_le_bytes());
            bytes[header + 16..header + 24].copy_from_slice(&address.to_le_bytes());
            bytes[header + 32..header + 40].copy_from_slice(&(data.len() as u64).to_le_bytes());
            bytes[header + 40..header + 48].copy_from_slice(&memory_size.to_le_bytes());
        }
        bytes
    }

    #[test]
    fn reads_segments_and_entry() {
        let bytes = build(
            0x40_0000,
            &[
                (0x40_0000, &[1, 2, 3], 3, PF_X),
                (0x40_1000, &[4], 0x2000, PF_W),
            ],
        );
        let image = parse(&bytes).unwrap();
        assert_eq!(image.entry, 0x40_0000);
        let text = image.segments[0].unwrap();
        assert_eq!(
            (text.address, text.data, text.executable, text.writable),
            (0x40_0000, &[1u8, 2, 3][..], true, false)
        );
        let data = image.segments[1].unwrap();
        assert_eq!((data.memory_size, data.writable), (0x2000, true));
        assert_eq!(image.segments[2], None);
    }

    #[test]
    fn refuses_bad_images_without_panicking() {
        assert_eq!(parse(b"MZ"), Err(ElfError::NotElf));
        let good = build(0x40_0000, &[(0x40_0000, &[1, 2, 3], 3, PF_X)]);
        let mut wrong_machine = good.clone();
        wrong_machine[18] = 62;
        assert_eq!(parse(&wrong_machine), Err(ElfError::WrongKind));
        let mut bigger_file_than_memory = good.clone();
        bigger_file_than_memory[64 + 40..64 + 48].copy_from_slice(&1u64.to_le_bytes());
        assert_eq!(parse(&bigger_file_than_memory), Err(ElfError::OutOfBounds));
        // Every truncation and every single-byte change: an error or an
        // image, never a panic.
        for length in 0..good.len() {
            let _ = parse(&good[..length]);
        }
        let all_values = [0u8, 0xff, 0x80];
        for index in 0..good.len() {
            // Under Miri, which interprets slowly, one of them at each byte.
            let values = if cfg!(miri) {
                &all_values[index % 3..=index % 3]
            } else {
                &all_values[..]
            };
            for &value in values {
                let mut changed = good.clone();
                changed[index] = value;
                let _ = parse(&changed);
            }
        }
    }
}
