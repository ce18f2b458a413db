//! The boot payload: guest images and the system description, packed after
//! the hypervisor in its boot image (`hyp_abi::payload` is the format).
//!
//! The hypervisor's image ends at its BSS; the payload starts at the next
//! 2 MiB boundary after that (the file is padded with zeros up to it), so
//! the hypervisor finds it without being told, and every entry starts on a
//! 2 MiB boundary, so `init` maps entries as whole 2 MiB frames. The
//! image header's `image_size` is raised to cover the payload, so a boot
//! loader keeps its own data (the device tree) out of it.

use hyp_abi::payload::{
    ALIGNMENT, DIRECTORY_SIZE, ENTRY_SIZE, FIRST_ENTRY, MAGIC, MAX_ENTRIES, NAME_SIZE, VERSION,
};

/// One file to pack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The name `init` looks it up by.
    pub name: String,
    /// Its bytes.
    pub data: Vec<u8>,
}

const fn align(value: u64, alignment: u64) -> u64 {
    value.div_ceil(alignment) * alignment
}

/// The payload for `entries`: directory, then each entry 2 MiB aligned.
pub fn pack(entries: &[Entry]) -> Result<Vec<u8>, String> {
    if entries.len() > MAX_ENTRIES {
        return Err(format!(
            "{} payload entries, at most {MAX_ENTRIES} fit",
            entries.len()
        ));
    }
    let mut directory = vec![0u8; DIRECTORY_SIZE];
    let mut offset = ALIGNMENT;
    let mut placed = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let name = entry.name.as_bytes();
        if name.is_empty() || name.len() > NAME_SIZE {
            return Err(format!(
                "payload entry name `{}` must be 1 to {NAME_SIZE} bytes",
                entry.name
            ));
        }
        if entries[..index]
            .iter()
            .any(|other| other.name == entry.name)
        {
            return Err(format!("payload entry `{}` given twice", entry.name));
        }
        let at = FIRST_ENTRY + index * ENTRY_SIZE;
        directory[at..at + name.len()].copy_from_slice(name);
        directory[at + NAME_SIZE..at + NAME_SIZE + 8].copy_from_slice(&offset.to_le_bytes());
        let size = entry.data.len() as u64;
        directory[at + NAME_SIZE + 8..at + NAME_SIZE + 16].copy_from_slice(&size.to_le_bytes());
        placed.push(offset);
        offset = align(offset + size.max(1), ALIGNMENT);
    }
    let total = offset;
    directory[0..8].copy_from_slice(&MAGIC.to_le_bytes());
    directory[8..16].copy_from_slice(&VERSION.to_le_bytes());
    directory[16..24].copy_from_slice(&total.to_le_bytes());
    directory[24..32].copy_from_slice(&(entries.len() as u64).to_le_bytes());
    // The last entry is padded to the 2 MiB boundary too: the frames
    // cover whole 2 MiB, and bytes after a kernel's file end are its BSS,
    // which must start out zero.
    let mut payload = vec![0u8; usize::try_from(total).map_err(|_| "payload too large")?];
    payload[..DIRECTORY_SIZE].copy_from_slice(&directory);
    for (entry, offset) in entries.iter().zip(placed) {
        let start = usize::try_from(offset).map_err(|_| "payload too large")?;
        payload[start..start + entry.data.len()].copy_from_slice(&entry.data);
    }
    Ok(payload)
}

/// Appends `payload` to the boot image `image` (a flat binary whose
/// header's `image_size` at byte 16 covers the hypervisor's BSS) and
/// raises `image_size` to cover it. The boot loader puts the image at
/// `text_offset` (byte 8) past a 2 MiB aligned RAM base, so the payload
/// goes where that makes its physical address 2 MiB aligned.
pub fn append(image: &mut Vec<u8>, payload: &[u8]) -> Result<(), String> {
    let field = |offset: usize| -> Result<u64, String> {
        let bytes = image
            .get(offset..offset + 8)
            .ok_or("the boot image is too short for an arm64 Image header")?;
        Ok(u64::from_le_bytes(
            bytes.try_into().map_err(|_| "bad header")?,
        ))
    };
    let text_offset = field(8)?;
    let image_size = field(16)?;
    if (image.len() as u64) > image_size {
        return Err(format!(
            "the boot image file ({} bytes) is longer than its image_size ({image_size:#x})",
            image.len()
        ));
    }
    let start = align(text_offset + image_size, ALIGNMENT) - text_offset;
    image.resize(usize::try_from(start).map_err(|_| "image too large")?, 0);
    image.extend_from_slice(payload);
    let new_size = image.len() as u64;
    image[16..24].copy_from_slice(&new_size.to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, data: &[u8]) -> Entry {
        Entry {
            name: name.into(),
            data: data.to_vec(),
        }
    }

    fn word(bytes: &[u8], offset: usize) -> u64 {
        u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap())
    }

    #[test]
    fn entries_are_2_mib_aligned_and_listed_in_the_directory() {
        let big = vec![7u8; (2 << 20) + 1];
        let payload = pack(&[entry("system", b"board qemu-virt\n"), entry("linux", &big)]).unwrap();
        assert_eq!(word(&payload, 0), MAGIC);
        assert_eq!(word(&payload, 8), VERSION);
        assert_eq!(word(&payload, 24), 2);
        assert_eq!(&payload[FIRST_ENTRY..FIRST_ENTRY + 6], b"system");
        assert_eq!(word(&payload, FIRST_ENTRY + NAME_SIZE), 2 << 20);
        assert_eq!(word(&payload, FIRST_ENTRY + NAME_SIZE + 8), 16);
        let second = FIRST_ENTRY + ENTRY_SIZE;
        assert_eq!(word(&payload, second + NAME_SIZE), 4 << 20);
        assert_eq!(
            word(&payload, 16),
            8 << 20,
            "the big entry takes two frames"
        );
        assert_eq!(payload.len(), 8 << 20);
        assert_eq!(
            payload[(4 << 20) + (2 << 20)],
            7,
            "the big entry's last byte"
        );
        assert_eq!(
            payload[(4 << 20) + (2 << 20) + 1],
            0,
            "zero padding after it"
        );
    }

    #[test]
    fn bad_entries_are_refused_with_the_reason() {
        assert_eq!(
            pack(&[entry("a", b"1"), entry("a", b"2")]).unwrap_err(),
            "payload entry `a` given twice"
        );
        assert!(
            pack(&[entry("", b"1")])
                .unwrap_err()
                .contains("1 to 32 bytes")
        );
        let too_many: Vec<Entry> = (0..=MAX_ENTRIES)
            .map(|i| entry(&i.to_string(), b""))
            .collect();
        assert!(pack(&too_many).unwrap_err().contains("at most"));
    }

    #[test]
    fn appending_pads_to_2_mib_after_the_bss_and_covers_the_payload() {
        let mut image = vec![0u8; 0x3000];
        image[8..16].copy_from_slice(&0x8_0000u64.to_le_bytes());
        image[16..24].copy_from_slice(&0x5_0000u64.to_le_bytes());
        append(&mut image, &[1, 2, 3]).unwrap();
        let start = (2 << 20) - 0x8_0000;
        assert_eq!(
            image.len(),
            start + 3,
            "2 MiB aligned once loaded at 0x80000"
        );
        assert_eq!(image[start], 1);
        assert_eq!(word(&image, 16), start as u64 + 3);
        let mut short = vec![0u8; 8];
        assert!(append(&mut short, &[]).is_err());
    }
}
