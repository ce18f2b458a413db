//! The arm64 Linux `Image` header and the guest's memory layout at boot:
//! where the kernel, the device tree and the initrd go in guest RAM.
//!
//! The header (Linux's `Documentation/arch/arm64/booting.rst`) is 64 bytes,
//! little-endian: `code0`, `code1`, `text_offset` at 8, `image_size` at 16,
//! `flags` at 24, three reserved words, the magic `"ARM\x64"` at 56 and the
//! PE header offset at 60.
//!
//! Layout ([`plan`]):
//! - a file with the magic is a Linux `Image`, loaded at RAM base +
//!   `text_offset` (RAM base must be 2 MiB aligned), with `image_size` bytes
//!   (text, data *and* BSS) reserved for it. An old kernel (before 3.17) has
//!   `image_size` = 0: its `text_offset` is taken as 0x80000 and its size as
//!   the file size, as `booting.rst` says;
//! - any other file is a raw binary loaded at RAM base + 0x80000, like QEMU's
//!   `-kernel`;
//! - the entry point is the first byte loaded;
//! - the device tree takes the top 2 MiB block of the first 512 MiB of RAM
//!   (of all of RAM if it is smaller), so it is 8-byte aligned, at most
//!   2 MiB, never crosses a 2 MiB boundary, and stays low as old kernels
//!   require;
//! - the initrd ends just below the device tree, its start page aligned.
//!
//! What it deliberately does not do: read or copy the image (the VMM does
//! that), decompress (`Image.gz`) or parse the PE header, honour the
//! "place anywhere" flag (the kernel always goes at the bottom of RAM), or
//! randomise anything.

/// Size of the `Image` header.
pub const HEADER_SIZE: usize = 64;
/// The magic at offset 56.
pub const MAGIC: [u8; 4] = *b"ARM\x64";
/// Where a raw binary (or an old kernel) goes, from the RAM base.
pub const RAW_LOAD_OFFSET: u64 = 0x8_0000;
/// Alignment required of the RAM base.
pub const RAM_ALIGN: u64 = 2 << 20;
/// Largest device tree, and the block it is placed in.
pub const DTB_MAX_SIZE: u64 = 2 << 20;
/// The device tree stays within this much of the RAM base.
pub const DTB_WINDOW: u64 = 512 << 20;
/// Alignment of the initrd's start.
pub const PAGE_SIZE: u64 = 4096;

/// The page size a kernel was built for (`flags` bits 2:1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageSize {
    /// Not specified (old kernels).
    Unspecified,
    /// 4 KiB.
    K4,
    /// 16 KiB: the Cortex-A72 has no 16 KiB granule, so such a kernel is
    /// refused ([`ImageError::UnsupportedPageSize`]).
    K16,
    /// 64 KiB.
    K64,
}

/// A parsed `Image` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    /// Offset of the image from a 2 MiB-aligned base.
    pub text_offset: u64,
    /// Bytes the kernel occupies once running (0 on old kernels).
    pub image_size: u64,
    /// The raw `flags` word.
    pub flags: u64,
}

impl ImageHeader {
    /// The page size from `flags`.
    pub const fn page_size(&self) -> PageSize {
        match (self.flags >> 1) & 3 {
            0 => PageSize::Unspecified,
            1 => PageSize::K4,
            2 => PageSize::K16,
            _ => PageSize::K64,
        }
    }

    /// `flags` bit 3: the kernel may be placed anywhere in RAM.
    pub const fn place_anywhere(&self) -> bool {
        self.flags & (1 << 3) != 0
    }
}

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageError {
    /// Fewer than 64 bytes.
    TooShort,
    /// No `"ARM\x64"` at offset 56.
    BadMagic,
    /// `flags` bit 0: a big-endian kernel.
    BigEndian,
    /// A page size the CPU does not support.
    UnsupportedPageSize(PageSize),
}

fn le64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    if let Some(src) = bytes.get(at..at + 8) {
        word.copy_from_slice(src);
    }
    u64::from_le_bytes(word)
}

/// Parses the header at the start of `bytes`.
pub fn parse_header(bytes: &[u8]) -> Result<ImageHeader, ImageError> {
    if bytes.len() < HEADER_SIZE {
        return Err(ImageError::TooShort);
    }
    if bytes.get(56..60) != Some(&MAGIC[..]) {
        return Err(ImageError::BadMagic);
    }
    let header = ImageHeader {
        text_offset: le64(bytes, 8),
        image_size: le64(bytes, 16),
        flags: le64(bytes, 24),
    };
    if header.flags & 1 != 0 {
        return Err(ImageError::BigEndian);
    }
    if header.page_size() == PageSize::K16 {
        return Err(ImageError::UnsupportedPageSize(PageSize::K16));
    }
    Ok(header)
}

/// What kind of kernel file [`plan`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelKind {
    /// A Linux `Image` with this header.
    Linux(ImageHeader),
    /// A raw binary.
    Raw,
}

/// A guest-physical range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// First address.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
}

impl Region {
    /// One past the last address (saturating).
    pub const fn end(&self) -> u64 {
        self.start.saturating_add(self.size)
    }
}

/// Where everything goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The kernel file's kind.
    pub kind: KernelKind,
    /// Where the file is copied to, and how much RAM it reserves (for a
    /// Linux `Image` `image_size`, which includes its BSS).
    pub kernel: Region,
    /// Where the vCPU starts (x0 = the device tree's address).
    pub entry: u64,
    /// The device tree's block: write at most `size` bytes at `start`.
    pub dtb: Region,
    /// The initrd, if one was given.
    pub initrd: Option<Region>,
}

/// Why a layout is impossible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutError {
    /// The file is a Linux `Image` whose header is refused.
    Image(ImageError),
    /// The RAM base is not 2 MiB aligned, or RAM ends beyond 2^64.
    BadRam,
    /// The device tree is larger than 2 MiB.
    DtbTooLarge,
    /// RAM is smaller than the 2 MiB block for the device tree.
    RamTooSmall,
    /// The kernel does not fit below the device tree.
    KernelTooLarge,
    /// The initrd does not fit between the kernel and the device tree.
    InitrdTooLarge,
}

/// Plans the guest's memory at boot. `kernel_head` is the start of the
/// kernel file (at least its first 64 bytes if it has them), `kernel_len`
/// its whole length; `dtb_len` the device tree's size (or the most it may
/// grow to) and `initrd_len` the initrd's, if any.
pub fn plan(
    ram_base: u64,
    ram_size: u64,
    kernel_head: &[u8],
    kernel_len: u64,
    dtb_len: u64,
    initrd_len: Option<u64>,
) -> Result<Layout, LayoutError> {
    if !ram_base.is_multiple_of(RAM_ALIGN) || ram_base.checked_add(ram_size).is_none() {
        return Err(LayoutError::BadRam);
    }
    let kind = match parse_header(kernel_head) {
        Ok(header) => KernelKind::Linux(header),
        Err(ImageError::TooShort | ImageError::BadMagic) => KernelKind::Raw,
        Err(e) => return Err(LayoutError::Image(e)),
    };
    let (offset, reserve) = match kind {
        KernelKind::Linux(h) if h.image_size != 0 => (h.text_offset, h.image_size.max(kernel_len)),
        KernelKind::Linux(_) | KernelKind::Raw => (RAW_LOAD_OFFSET, kernel_len),
    };
    let kernel = Region {
        start: ram_base
            .checked_add(offset)
            .ok_or(LayoutError::KernelTooLarge)?,
        size: reserve,
    };

    if dtb_len > DTB_MAX_SIZE {
        return Err(LayoutError::DtbTooLarge);
    }
    // The top 2 MiB block of the first 512 MiB (or of all RAM).
    let window_end = ram_base + (ram_size.min(DTB_WINDOW) / RAM_ALIGN) * RAM_ALIGN;
    let dtb_start = window_end
        .checked_sub(DTB_MAX_SIZE)
        .filter(|&s| s >= ram_base)
        .ok_or(LayoutError::RamTooSmall)?;
    let dtb = Region {
        start: dtb_start,
        size: DTB_MAX_SIZE,
    };
    let kernel_end = kernel
        .start
        .checked_add(kernel.size)
        .ok_or(LayoutError::KernelTooLarge)?;
    if kernel_end > dtb_start {
        return Err(LayoutError::KernelTooLarge);
    }

    let initrd = match initrd_len {
        None => None,
        Some(len) => {
            let start = dtb_start
                .checked_sub(len)
                .map(|s| s / PAGE_SIZE * PAGE_SIZE)
                .filter(|&s| s >= kernel_end.next_multiple_of(PAGE_SIZE))
                .ok_or(LayoutError::InitrdTooLarge)?;
            Some(Region { start, size: len })
        }
    };
    Ok(Layout {
        kind,
        kernel,
        entry: kernel.start,
        dtb,
        initrd,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAM: u64 = 0x4000_0000;
    const MIB: u64 = 1 << 20;

    fn header(text_offset: u64, image_size: u64, flags: u64) -> [u8; 64] {
        let mut h = [0u8; 64];
        h[0..4].copy_from_slice(&0x9100_0000_u32.to_le_bytes()); // code0
        h[8..16].copy_from_slice(&text_offset.to_le_bytes());
        h[16..24].copy_from_slice(&image_size.to_le_bytes());
        h[24..32].copy_from_slice(&flags.to_le_bytes());
        h[56..60].copy_from_slice(&MAGIC);
        h
    }

    #[test]
    fn parses_a_modern_header() {
        // Debian's 6.1 kernel: text_offset 0, 4K pages, place anywhere.
        let h = parse_header(&header(0, 0x0200_0000, 0b1010)).unwrap();
        assert_eq!(h.text_offset, 0);
        assert_eq!(h.image_size, 0x0200_0000);
        assert_eq!(h.page_size(), PageSize::K4);
        assert!(h.place_anywhere());
    }

    #[test]
    fn header_errors_are_precise() {
        assert_eq!(parse_header(&[0; 63]), Err(ImageError::TooShort));
        assert_eq!(parse_header(&[0; 64]), Err(ImageError::BadMagic));
        assert_eq!(parse_header(&header(0, 1, 1)), Err(ImageError::BigEndian));
        assert_eq!(
            parse_header(&header(0, 1, 2 << 1)),
            Err(ImageError::UnsupportedPageSize(PageSize::K16))
        );
        assert_eq!(
            parse_header(&header(0, 1, 3 << 1)).unwrap().page_size(),
            PageSize::K64
        );
    }

    #[test]
    fn linux_image_layout() {
        let kernel = header(0x8_0000, 40 * MIB, 0b0010);
        let l = plan(
            RAM,
            1024 * MIB,
            &kernel,
            30 * MIB,
            64 * 1024,
            Some(10 * MIB + 5),
        )
        .unwrap();
        assert!(matches!(l.kind, KernelKind::Linux(_)));
        assert_eq!(l.kernel.start, RAM + 0x8_0000);
        assert_eq!(l.kernel.size, 40 * MIB, "image_size, not the file size");
        assert_eq!(l.entry, l.kernel.start);
        // DTB: the top 2 MiB of the first 512 MiB.
        assert_eq!(l.dtb.start, RAM + 510 * MIB);
        assert_eq!(l.dtb.start % 8, 0);
        let initrd = l.initrd.unwrap();
        assert_eq!(initrd.start % PAGE_SIZE, 0);
        assert!(initrd.end() <= l.dtb.start);
        assert!(l.dtb.start - initrd.end() < PAGE_SIZE);
        assert!(initrd.start >= l.kernel.end());
    }

    #[test]
    fn small_ram_puts_the_dtb_at_its_top() {
        let l = plan(RAM, 64 * MIB + 4096, &[0xAA; 16], 4096, 4096, None).unwrap();
        assert_eq!(l.kind, KernelKind::Raw);
        assert_eq!(l.kernel.start, RAM + RAW_LOAD_OFFSET);
        assert_eq!(l.dtb.start, RAM + 62 * MIB, "2 MiB aligned below the end");
        assert_eq!(l.initrd, None);
    }

    #[test]
    fn old_kernel_with_zero_image_size() {
        let kernel = header(0x1234, 0, 0);
        let l = plan(RAM, 256 * MIB, &kernel, 7 * MIB, 1024, None).unwrap();
        assert_eq!(l.kernel.start, RAM + 0x8_0000);
        assert_eq!(l.kernel.size, 7 * MIB);
    }

    #[test]
    fn layout_errors() {
        let kernel = header(0, 100 * MIB, 0b0010);
        assert_eq!(
            plan(RAM + 4096, 512 * MIB, &kernel, MIB, 1024, None),
            Err(LayoutError::BadRam)
        );
        assert_eq!(
            plan(u64::MAX - (2 * MIB - 1), 4 * MIB, &kernel, MIB, 1, None),
            Err(LayoutError::BadRam),
            "RAM ending beyond 2^64"
        );
        assert_eq!(
            plan(RAM, 512 * MIB, &kernel, MIB, 2 * MIB + 1, None),
            Err(LayoutError::DtbTooLarge)
        );
        assert_eq!(
            plan(RAM, 64 * MIB, &kernel, MIB, 1024, None),
            Err(LayoutError::KernelTooLarge)
        );
        assert_eq!(
            plan(RAM, MIB, &[0; 4], 16, 1024, None),
            Err(LayoutError::RamTooSmall),
            "less than 2 MiB of RAM has no room for the DTB"
        );
        assert_eq!(
            plan(RAM, 512 * MIB, &kernel, MIB, 1024, Some(410 * MIB + 1)),
            Err(LayoutError::InitrdTooLarge)
        );
        assert_eq!(
            plan(RAM, 512 * MIB, &kernel, MIB, 1024, Some(u64::MAX)),
            Err(LayoutError::InitrdTooLarge)
        );
        assert_eq!(
            plan(RAM, 512 * MIB, &header(0, 1, 1), MIB, 1024, None),
            Err(LayoutError::Image(ImageError::BigEndian))
        );
        // Just fits: the initrd ends at the DTB and starts at the kernel's end.
        let fits = plan(RAM, 512 * MIB, &kernel, MIB, 1024, Some(410 * MIB)).unwrap();
        assert_eq!(fits.initrd.unwrap().start, RAM + 100 * MIB);
        assert_eq!(fits.initrd.unwrap().end(), fits.dtb.start);
    }
}
