//! The boot-info page, read and checked: the root task learns from it which
//! capabilities the kernel gave it (untyped memory, its image frames, the
//! empty slots of its CNode) and how many cores there are.
//!
//! The layout is `hyp_abi::boot_info`. [`BootInfo::parse`] works on a copy
//! of the page (`[u64; 512]`) in safe code and refuses a page it cannot
//! trust: a wrong magic or version, more untyped descriptors than fit the
//! page, slot ranges outside the root CNode or overlapping each other, an
//! image outside its region, or a descriptor with unknown bits. Whatever
//! it accepts can be used without further checks.

use core::fmt;

use hyp_abi::boot_info as layout;
use hyp_abi::invocation::{MAX_CNODE_RADIX, MAX_UNTYPED_BITS, MIN_CNODE_RADIX, MIN_UNTYPED_BITS};
use hyp_abi::{MAX_CORES, initial_slots, user_layout};

pub use crate::syscall::BOOT_INFO_WORDS;

/// Bytes of a 4 KiB frame.
const FRAME_SIZE: u64 = 4096;

/// The slot ranges the boot-info page describes, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotRange {
    /// The initial capabilities (`hyp_abi::initial_slots`), from slot 0.
    Initial,
    /// The untyped capabilities.
    Untyped,
    /// The empty slots.
    Empty,
    /// The capabilities to the root task's image frames.
    ImageFrames,
}

impl fmt::Display for SlotRange {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            SlotRange::Initial => "initial capabilities",
            SlotRange::Untyped => "untyped capabilities",
            SlotRange::Empty => "empty slots",
            SlotRange::ImageFrames => "image frames",
        })
    }
}

/// Why a boot-info page was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootInfoError {
    /// The entry point was given another address than
    /// [`user_layout::BOOT_INFO`].
    UnexpectedAddress {
        /// The address given.
        address: u64,
    },
    /// No page can be read here (the host build).
    Unavailable,
    /// Word 0 is not `"hypBOOT\0"`.
    BadMagic {
        /// The word found.
        found: u64,
    },
    /// A layout version this library does not know.
    UnsupportedVersion {
        /// The version found.
        found: u64,
    },
    /// More untyped descriptors than fit the page.
    TooManyUntyped {
        /// The count found.
        count: u64,
        /// The most that fit.
        maximum: usize,
    },
    /// No cores, or more than the kernel supports.
    BadCoreCount {
        /// The count found.
        cores: u64,
    },
    /// A root CNode radix outside `MIN_CNODE_RADIX..=MAX_CNODE_RADIX`.
    BadRootRadix {
        /// The radix found.
        radix: u64,
    },
    /// A slot range runs past the root CNode's end.
    SlotsOutsideCNode {
        /// Which range.
        range: SlotRange,
        /// Its first slot.
        first: u64,
        /// Its number of slots.
        count: u64,
        /// Slots in the root CNode.
        slots: u64,
    },
    /// Two slot ranges overlap.
    OverlappingSlots {
        /// One range.
        first: SlotRange,
        /// The other.
        second: SlotRange,
    },
    /// The image frames do not cover `[IMAGE_BASE, end)` within the image
    /// region.
    BadImage {
        /// The number of image frames.
        frames: u64,
        /// The first address after the image.
        end: u64,
    },
    /// An untyped descriptor with a size out of range or unknown bits.
    BadUntypedDescriptor {
        /// Which descriptor.
        index: usize,
        /// Its size-and-flags word.
        word: u64,
    },
}

impl fmt::Display for BootInfoError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BootInfoError::UnexpectedAddress { address } => write!(
                formatter,
                "boot info at {address:#x}, expected {:#x}",
                user_layout::BOOT_INFO
            ),
            BootInfoError::Unavailable => formatter.write_str("no boot-info page here"),
            BootInfoError::BadMagic { found } => {
                write!(formatter, "bad magic {found:#x}")
            }
            BootInfoError::UnsupportedVersion { found } => write!(
                formatter,
                "version {found}, this program knows {}",
                layout::VERSION
            ),
            BootInfoError::TooManyUntyped { count, maximum } => write!(
                formatter,
                "{count} untyped descriptors, at most {maximum} fit the page"
            ),
            BootInfoError::BadCoreCount { cores } => {
                write!(formatter, "{cores} cores (1 to {MAX_CORES})")
            }
            BootInfoError::BadRootRadix { radix } => write!(
                formatter,
                "root CNode radix {radix} ({MIN_CNODE_RADIX} to {MAX_CNODE_RADIX})"
            ),
            BootInfoError::SlotsOutsideCNode {
                range,
                first,
                count,
                slots,
            } => write!(
                formatter,
                "{range}: slots {first}+{count} beyond the root CNode's {slots}"
            ),
            BootInfoError::OverlappingSlots { first, second } => {
                write!(formatter, "{first} overlap {second}")
            }
            BootInfoError::BadImage { frames, end } => write!(
                formatter,
                "{frames} image frames do not cover an image ending at {end:#x}"
            ),
            BootInfoError::BadUntypedDescriptor { index, word } => {
                write!(formatter, "untyped descriptor {index}: bad word {word:#x}")
            }
        }
    }
}

/// One block of untyped memory the root task holds a capability to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UntypedDescriptor {
    /// The slot of its capability in the root CNode.
    pub slot: u64,
    /// Its physical address.
    pub physical_base: u64,
    /// log2 of its size in bytes.
    pub size_bits: u8,
    /// Device memory (only frames and smaller untypeds can be made of it).
    pub device: bool,
}

/// The size-and-flags word of a descriptor: `(size_bits, device)`, or
/// `None` for a size out of range or bits other than the size and bit 8.
fn decode_size_word(word: u64) -> Option<(u8, bool)> {
    if word >> 9 != 0 {
        return None;
    }
    let size_bits = u8::try_from(word & 0xff).ok()?;
    if u32::from(size_bits) < MIN_UNTYPED_BITS || u32::from(size_bits) > MAX_UNTYPED_BITS {
        return None;
    }
    Some((size_bits, word >> 8 & 1 == 1))
}

/// The checked contents of the boot-info page.
#[derive(Clone, Copy, Debug)]
pub struct BootInfo<'page> {
    page: &'page [u64; BOOT_INFO_WORDS],
    untyped_count: usize,
    first_untyped_slot: u64,
    first_empty_slot: u64,
    empty_slots: u64,
    cores: usize,
    root_cnode_radix: u8,
    first_image_frame_slot: u64,
    image_frames: u64,
    image_end: u64,
}

impl<'page> BootInfo<'page> {
    /// Reads and checks `page` (see the module's documentation).
    pub fn parse(page: &'page [u64; BOOT_INFO_WORDS]) -> Result<BootInfo<'page>, BootInfoError> {
        if page[0] != layout::MAGIC {
            return Err(BootInfoError::BadMagic { found: page[0] });
        }
        if page[1] != layout::VERSION {
            return Err(BootInfoError::UnsupportedVersion { found: page[1] });
        }
        let count = page[layout::UNTYPED_COUNT];
        let untyped_count = usize::try_from(count)
            .ok()
            .filter(|count| *count <= layout::MAX_UNTYPED)
            .ok_or(BootInfoError::TooManyUntyped {
                count,
                maximum: layout::MAX_UNTYPED,
            })?;
        let cores = page[layout::CORES];
        let cores = usize::try_from(cores)
            .ok()
            .filter(|cores| (1..=MAX_CORES).contains(cores))
            .ok_or(BootInfoError::BadCoreCount { cores })?;
        let radix = page[layout::ROOT_CNODE_RADIX];
        let root_cnode_radix = u8::try_from(radix)
            .ok()
            .filter(|radix| (MIN_CNODE_RADIX..=MAX_CNODE_RADIX).contains(&u32::from(*radix)))
            .ok_or(BootInfoError::BadRootRadix { radix })?;
        let slots = 1u64 << root_cnode_radix;

        // The slot ranges: inside the CNode and disjoint.
        let ranges = [
            (SlotRange::Initial, 0, initial_slots::FIRST_FREE),
            (SlotRange::Untyped, page[layout::FIRST_UNTYPED_SLOT], count),
            (
                SlotRange::Empty,
                page[layout::FIRST_EMPTY_SLOT],
                page[layout::EMPTY_SLOTS],
            ),
            (
                SlotRange::ImageFrames,
                page[layout::FIRST_IMAGE_FRAME_SLOT],
                page[layout::IMAGE_FRAMES],
            ),
        ];
        for (range, first, count) in ranges {
            if first.checked_add(count).is_none_or(|end| end > slots) {
                return Err(BootInfoError::SlotsOutsideCNode {
                    range,
                    first,
                    count,
                    slots,
                });
            }
        }
        for (index, (range, first, count)) in ranges.iter().enumerate() {
            for (other, other_first, other_count) in &ranges[index + 1..] {
                // Both ends are below 2^24 after the check above.
                let disjoint = *count == 0
                    || *other_count == 0
                    || first + count <= *other_first
                    || other_first + other_count <= *first;
                if !disjoint {
                    return Err(BootInfoError::OverlappingSlots {
                        first: *range,
                        second: *other,
                    });
                }
            }
        }

        // The image: frames from IMAGE_BASE that cover it, inside its region.
        let image_frames = page[layout::IMAGE_FRAMES];
        let image_end = page[layout::IMAGE_END];
        let region = user_layout::IMAGE_LIMIT - user_layout::IMAGE_BASE;
        let covered = image_frames
            .checked_mul(FRAME_SIZE)
            .filter(|bytes| *bytes <= region);
        let image_fits = covered.is_some_and(|bytes| {
            image_end >= user_layout::IMAGE_BASE && image_end <= user_layout::IMAGE_BASE + bytes
        });
        if !image_fits {
            return Err(BootInfoError::BadImage {
                frames: image_frames,
                end: image_end,
            });
        }

        for index in 0..untyped_count {
            let word = page[layout::UNTYPED_DESCRIPTORS + 2 * index + 1];
            if decode_size_word(word).is_none() {
                return Err(BootInfoError::BadUntypedDescriptor { index, word });
            }
        }

        Ok(BootInfo {
            page,
            untyped_count,
            first_untyped_slot: page[layout::FIRST_UNTYPED_SLOT],
            first_empty_slot: page[layout::FIRST_EMPTY_SLOT],
            empty_slots: page[layout::EMPTY_SLOTS],
            cores,
            root_cnode_radix,
            first_image_frame_slot: page[layout::FIRST_IMAGE_FRAME_SLOT],
            image_frames,
            image_end,
        })
    }

    /// The number of untyped capabilities.
    pub const fn untyped_count(&self) -> usize {
        self.untyped_count
    }

    /// The slot of the first untyped capability.
    pub const fn first_untyped_slot(&self) -> u64 {
        self.first_untyped_slot
    }

    /// The first empty slot of the root CNode.
    pub const fn first_empty_slot(&self) -> u64 {
        self.first_empty_slot
    }

    /// The number of empty slots from [`BootInfo::first_empty_slot`] on.
    pub const fn empty_slots(&self) -> u64 {
        self.empty_slots
    }

    /// The number of cores the kernel runs on.
    pub const fn cores(&self) -> usize {
        self.cores
    }

    /// log2 of the number of slots of the root CNode.
    pub const fn root_cnode_radix(&self) -> u8 {
        self.root_cnode_radix
    }

    /// The slot of the capability to the first image frame (the frame at
    /// [`user_layout::IMAGE_BASE`]); frame `i` is in the slot `i` later
    /// and maps at `IMAGE_BASE + i * 4096`.
    pub const fn first_image_frame_slot(&self) -> u64 {
        self.first_image_frame_slot
    }

    /// The number of 4 KiB image frames.
    pub const fn image_frames(&self) -> u64 {
        self.image_frames
    }

    /// The first address after the image.
    pub const fn image_end(&self) -> u64 {
        self.image_end
    }

    /// The slot of the boot payload's first 2 MiB frame capability; frame
    /// `i` (the payload's bytes from `i * 2 MiB`) is `i` slots later.
    pub fn first_payload_frame_slot(&self) -> u64 {
        self.page[layout::FIRST_PAYLOAD_FRAME_SLOT]
    }

    /// The number of 2 MiB payload frames.
    pub fn payload_frames(&self) -> u64 {
        self.page[layout::PAYLOAD_FRAMES]
    }

    /// The payload's size in bytes (0: the image has no payload); never
    /// more than its frames cover.
    pub fn payload_size(&self) -> u64 {
        self.page[layout::PAYLOAD_SIZE].min(self.payload_frames().saturating_mul(2 << 20))
    }

    /// The GIC version (2 or 3).
    pub fn gic_version(&self) -> u64 {
        self.page[layout::GIC_VERSION]
    }

    /// The physical address of the GICv2 virtual CPU interface (0: none).
    pub fn gic_virtual_cpu_interface(&self) -> u64 {
        self.page[layout::GIC_VIRTUAL_CPU_INTERFACE]
    }

    /// The console UART's interrupt (0: unknown).
    pub fn console_irq(&self) -> u64 {
        self.page[layout::CONSOLE_IRQ]
    }

    /// Untyped descriptor `index`, or `None` beyond the count.
    pub fn untyped(&self, index: usize) -> Option<UntypedDescriptor> {
        if index >= self.untyped_count {
            return None;
        }
        let word = layout::UNTYPED_DESCRIPTORS + 2 * index;
        let (size_bits, device) = decode_size_word(*self.page.get(word + 1)?)?;
        Some(UntypedDescriptor {
            // `parse` checked that the slots fit the CNode.
            slot: self.first_untyped_slot + u64::try_from(index).ok()?,
            physical_base: *self.page.get(word)?,
            size_bits,
            device,
        })
    }

    /// Every untyped descriptor, in slot order.
    pub fn untyped_descriptors(&self) -> impl Iterator<Item = UntypedDescriptor> + '_ {
        (0..self.untyped_count).filter_map(|index| self.untyped(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page as the kernel would write it: two untypeds (the second device
    /// memory), radix 12, 20 image frames.
    fn good_page() -> [u64; BOOT_INFO_WORDS] {
        let mut page = [0; BOOT_INFO_WORDS];
        page[0] = layout::MAGIC;
        page[1] = layout::VERSION;
        page[layout::UNTYPED_COUNT] = 2;
        page[layout::FIRST_UNTYPED_SLOT] = 7;
        page[layout::FIRST_EMPTY_SLOT] = 29;
        page[layout::EMPTY_SLOTS] = 4096 - 29;
        page[layout::CORES] = 4;
        page[layout::ROOT_CNODE_RADIX] = 12;
        page[layout::FIRST_IMAGE_FRAME_SLOT] = 9;
        page[layout::IMAGE_FRAMES] = 20;
        page[layout::IMAGE_END] = user_layout::IMAGE_BASE + 20 * 4096 - 100;
        page[layout::UNTYPED_DESCRIPTORS] = 0x4100_0000;
        page[layout::UNTYPED_DESCRIPTORS + 1] = 24;
        page[layout::UNTYPED_DESCRIPTORS + 2] = 0x0900_0000;
        page[layout::UNTYPED_DESCRIPTORS + 3] = 12 | 1 << 8;
        page
    }

    #[test]
    fn a_good_page_is_read() {
        let page = good_page();
        let info = BootInfo::parse(&page).unwrap();
        assert_eq!(info.untyped_count(), 2);
        assert_eq!(info.first_untyped_slot(), 7);
        assert_eq!(info.first_empty_slot(), 29);
        assert_eq!(info.empty_slots(), 4096 - 29);
        assert_eq!(info.cores(), 4);
        assert_eq!(info.root_cnode_radix(), 12);
        assert_eq!(info.first_image_frame_slot(), 9);
        assert_eq!(info.image_frames(), 20);
        let untyped: std::vec::Vec<_> = info.untyped_descriptors().collect();
        assert_eq!(
            untyped,
            [
                UntypedDescriptor {
                    slot: 7,
                    physical_base: 0x4100_0000,
                    size_bits: 24,
                    device: false
                },
                UntypedDescriptor {
                    slot: 8,
                    physical_base: 0x0900_0000,
                    size_bits: 12,
                    device: true
                }
            ]
        );
        assert_eq!(info.untyped(2), None);
    }

    #[test]
    fn bad_magic_and_version_are_refused() {
        let mut page = good_page();
        page[0] = u64::from_le_bytes(*b"hypBOOTX");
        assert!(matches!(
            BootInfo::parse(&page),
            Err(BootInfoError::BadMagic { .. })
        ));
        let mut page = good_page();
        page[1] = 1;
        assert_eq!(
            BootInfo::parse(&page).unwrap_err(),
            BootInfoError::UnsupportedVersion { found: 1 }
        );
    }

    #[test]
    fn counts_that_overflow_the_page_are_refused() {
        let mut page = good_page();
        page[layout::UNTYPED_COUNT] = layout::MAX_UNTYPED as u64 + 1;
        assert_eq!(
            BootInfo::parse(&page).unwrap_err(),
            BootInfoError::TooManyUntyped {
                count: layout::MAX_UNTYPED as u64 + 1,
                maximum: layout::MAX_UNTYPED
            }
        );
        page[layout::UNTYPED_COUNT] = u64::MAX;
        assert!(matches!(
            BootInfo::parse(&page),
            Err(BootInfoError::TooManyUntyped { .. })
        ));
    }

    #[test]
    fn the_largest_untyped_count_that_fits_is_read() {
        let mut page = good_page();
        let count = layout::MAX_UNTYPED;
        page[layout::UNTYPED_COUNT] = count as u64;
        page[layout::FIRST_UNTYPED_SLOT] = 100;
        page[layout::FIRST_EMPTY_SLOT] = 100 + count as u64;
        page[layout::EMPTY_SLOTS] = 4096 - 100 - count as u64;
        for index in 0..count {
            page[layout::UNTYPED_DESCRIPTORS + 2 * index + 1] = 12;
        }
        let info = BootInfo::parse(&page).unwrap();
        assert_eq!(info.untyped_descriptors().count(), count);
        assert_eq!(
            info.untyped(count - 1).unwrap().slot,
            100 + count as u64 - 1
        );
    }

    #[test]
    fn bad_cores_and_radix_are_refused() {
        let mut page = good_page();
        page[layout::CORES] = 0;
        assert_eq!(
            BootInfo::parse(&page).unwrap_err(),
            BootInfoError::BadCoreCount { cores: 0 }
        );
        page[layout::CORES] = MAX_CORES as u64 + 1;
        assert!(BootInfo::parse(&page).is_err());
        let mut page = good_page();
        page[layout::ROOT_CNODE_RADIX] = 25;
        assert_eq!(
            BootInfo::parse(&page).unwrap_err(),
            BootInfoError::BadRootRadix { radix: 25 }
        );
        page[layout::ROOT_CNODE_RADIX] = u64::from(MIN_CNODE_RADIX) - 1;
        assert!(matches!(
            BootInfo::parse(&page),
            Err(BootInfoError::BadRootRadix { .. })
        ));
    }

    #[test]
    fn slot_ranges_must_fit_the_cnode_and_not_overlap() {
        let mut page = good_page();
        page[layout::EMPTY_SLOTS] = 4096 - 28;
        assert_eq!(
            BootInfo::parse(&page).unwrap_err(),
            BootInfoError::SlotsOutsideCNode {
                range: SlotRange::Empty,
                first: 29,
                count: 4096 - 28,
                slots: 4096
            }
        );
        page[layout::EMPTY_SLOTS] = u64::MAX;
        assert!(matches!(
            BootInfo::parse(&page),
            Err(BootInfoError::SlotsOutsideCNode { .. })
        ));
        let mut page = good_page();
        page[layout::FIRST_IMAGE_FRAME_SLOT] = 8;
        assert_eq!(
            BootInfo::parse(&page).unwrap_err(),
            BootInfoError::OverlappingSlots {
                first: SlotRange::Untyped,
                second: SlotRange::ImageFrames
            }
        );
        let mut page = good_page();
        page[layout::FIRST_UNTYPED_SLOT] = 6;
        assert_eq!(
            BootInfo::parse(&page).unwrap_err(),
            BootInfoError::OverlappingSlots {
                first: SlotRange::Initial,
                second: SlotRange::Untyped
            }
        );
    }

    #[test]
    fn the_image_must_be_covered_by_its_frames() {
        let mut page = good_page();
        page[layout::IMAGE_END] = user_layout::IMAGE_BASE + 20 * 4096 + 1;
        assert!(matches!(
            BootInfo::parse(&page),
            Err(BootInfoError::BadImage { .. })
        ));
        page[layout::IMAGE_END] = user_layout::IMAGE_BASE - 1;
        assert!(BootInfo::parse(&page).is_err());
        // More frames than the image region holds (the slots would fit).
        let mut page = good_page();
        page[layout::ROOT_CNODE_RADIX] = 24;
        page[layout::FIRST_IMAGE_FRAME_SLOT] = 10_000;
        let region_frames = (user_layout::IMAGE_LIMIT - user_layout::IMAGE_BASE) / 4096;
        page[layout::IMAGE_FRAMES] = region_frames + 1;
        assert!(matches!(
            BootInfo::parse(&page),
            Err(BootInfoError::BadImage { .. })
        ));
        page[layout::IMAGE_FRAMES] = region_frames;
        assert!(BootInfo::parse(&page).is_ok());
    }

    #[test]
    fn bad_descriptors_are_refused() {
        for word in [3, 48, 1 << 9 | 12, 0xff] {
            let mut page = good_page();
            page[layout::UNTYPED_DESCRIPTORS + 3] = word;
            assert_eq!(
                BootInfo::parse(&page).unwrap_err(),
                BootInfoError::BadUntypedDescriptor { index: 1, word },
                "{word:#x}"
            );
        }
    }

    #[test]
    fn errors_say_what_was_wrong() {
        let error = BootInfoError::TooManyUntyped {
            count: 300,
            maximum: 250,
        };
        assert_eq!(
            std::format!("{error}"),
            "300 untyped descriptors, at most 250 fit the page"
        );
    }
}
