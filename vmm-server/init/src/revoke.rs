//! `revoke`: revoking an untyped capability destroys everything made from
//! it and gives its memory back, zeroed.
//!
//! Init retypes a 64 KiB untyped block from its arena and fills it with
//! [`FRAMES`] 4 KiB frames; one more frame is refused with
//! `NotEnoughMemory` (4096 bytes asked, 0 left). It maps frame [`PROBE`]
//! into its own address space (in the window), writes a pattern over the
//! whole page and reads it back, and unmaps it. Then it revokes the block:
//! every frame capability is gone, and [`FRAMES`] frames fit again. The
//! frame in the same position (so at the same address: objects are
//! placed from the block's start) is mapped again and must read all zero.

use core::fmt;

use hyp_abi::{Error, ObjectType, Rights, initial_slots};
use hyp_user::window::{self, OutsideWindow};
use hyp_user::{Frame, Untyped, VSpace};

use crate::arena::{Arena, Kind, SetupError, step};
use crate::thread::FRAME_SIZE;

/// log2 of the block's bytes.
const BLOCK_BITS: u64 = 16;
/// 4 KiB frames that fill it.
pub(crate) const FRAMES: u64 = (1 << BLOCK_BITS) / FRAME_SIZE;
/// The frame that is written, then looked at after the revoke.
const PROBE: u64 = 5;
/// Where init maps it (in the window of its own VSpace).
const ADDRESS: u64 = window::BASE;
/// Words in a frame.
const WORDS: u64 = FRAME_SIZE / 8;

const _: () = assert!(PROBE < FRAMES, "the probe is one of the frames");

/// The pattern word `index` of the page gets.
const fn pattern(index: u64) -> u64 {
    0xa5a5_0000_0000_0000 | (index << 8) | 0x5a
}

/// Why `revoke` failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Creating or mapping an object failed.
    Setup(SetupError),
    /// A retype from the full block was not refused as expected.
    NotFull {
        /// The kernel's answer (`Ok` if it made the frame).
        answer: Result<(), Error>,
    },
    /// The window refused the address (a bug of this test).
    Window(OutsideWindow),
    /// A word of the probe frame did not keep the pattern written.
    PatternLost {
        /// The word.
        index: u64,
        /// What it read.
        value: u64,
    },
    /// A frame capability survived the revoke.
    Survived {
        /// Its position in the block.
        position: u64,
        /// What `FrameUnmap` on its slot answered.
        answer: Result<(), Error>,
    },
    /// A word of the frame made after the revoke was not zero.
    NotZeroed {
        /// The word.
        index: u64,
        /// What it read.
        value: u64,
    },
}

impl From<SetupError> for Failure {
    fn from(error: SetupError) -> Failure {
        Failure::Setup(error)
    }
}

impl From<OutsideWindow> for Failure {
    fn from(error: OutsideWindow) -> Failure {
        Failure::Window(error)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Failure::Setup(error) => write!(formatter, "{error}"),
            Failure::NotFull { answer } => write!(
                formatter,
                "a frame more from the full 64 KiB block: got {answer:?}, expected NotEnoughMemory {{ requested: 4096, available: 0 }}"
            ),
            Failure::Window(error) => write!(formatter, "{error}"),
            Failure::PatternLost { index, value } => write!(
                formatter,
                "word {index} of the probe frame read {value:#x} right after writing {:#x}",
                pattern(index)
            ),
            Failure::Survived { position, answer } => write!(
                formatter,
                "frame {position} survived the revoke (FrameUnmap on its slot: {answer:?}, expected InvalidCapability {{ argument: 0 }})"
            ),
            Failure::NotZeroed { index, value } => write!(
                formatter,
                "word {index} of frame {PROBE} made again after the revoke reads {value:#x}, not 0 (the pattern written was {:#x})",
                pattern(index)
            ),
        }
    }
}

/// What a passing run saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Facts;

impl fmt::Display for Facts {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{FRAMES} frames fill 64 KiB, one more: NotEnoughMemory (4096 asked, 0 left); after \
             the revoke all {FRAMES} are gone, {FRAMES} fit again and frame {PROBE} reads zero \
             where the pattern was"
        )
    }
}

/// Runs the test.
pub(crate) fn run(arena: &mut Arena<'_>) -> Result<Facts, Failure> {
    let root = arena.root();
    let own = VSpace::new(initial_slots::VSPACE);
    let block_slot = arena.allocate(1, Kind::Other)?;
    arena
        .untyped()
        .retype(ObjectType::Untyped, BLOCK_BITS, root, block_slot, 1)
        .map_err(step("retype a 64 KiB untyped block"))?;
    let block = Untyped::new(block_slot);
    let frames = arena.allocate(FRAMES, Kind::Frame)?;
    let one_more = arena.allocate(1, Kind::Frame)?;
    let probe = Frame::new(frames + PROBE);
    let read_write = Rights::READ.union(Rights::WRITE);

    block
        .retype(ObjectType::Frame4K, 0, root, frames, FRAMES)
        .map_err(step("fill the block with 4 KiB frames"))?;
    let answer = block.retype(ObjectType::Frame4K, 0, root, one_more, 1);
    if answer
        != Err(Error::NotEnoughMemory {
            requested: FRAME_SIZE,
            available: 0,
        })
    {
        return Err(Failure::NotFull { answer });
    }

    arena.map_frame(probe, own, ADDRESS, read_write, 0)?;
    let written = write_and_check(ADDRESS);
    let unmapped = probe.unmap().map_err(step("unmap the probe frame"));
    written?;
    unmapped?;

    root.revoke(block_slot)
        .map_err(step("revoke the 64 KiB block"))?;
    for position in 0..FRAMES {
        let answer = Frame::new(frames + position).unmap();
        if answer != Err(Error::InvalidCapability { argument: 0 }) {
            return Err(Failure::Survived { position, answer });
        }
    }
    block
        .retype(ObjectType::Frame4K, 0, root, frames, FRAMES)
        .map_err(step("retype the frames again after the revoke"))?;
    arena.map_frame(probe, own, ADDRESS, read_write, 0)?;
    let zero = check_zero(ADDRESS);
    let unmapped = probe.unmap().map_err(step("unmap the new probe frame"));
    zero?;
    unmapped?;
    Ok(Facts)
}

/// Writes the pattern over the page at `address` and reads it back.
fn write_and_check(address: u64) -> Result<(), Failure> {
    for index in 0..WORDS {
        window::write(address + index * 8, pattern(index))?;
    }
    for index in 0..WORDS {
        let value = window::read(address + index * 8)?;
        if value != pattern(index) {
            return Err(Failure::PatternLost { index, value });
        }
    }
    Ok(())
}

/// Checks that the page at `address` reads all zero.
fn check_zero(address: u64) -> Result<(), Failure> {
    for index in 0..WORDS {
        let value = window::read(address + index * 8)?;
        if value != 0 {
            return Err(Failure::NotZeroed { index, value });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_holds_sixteen_frames_and_the_pattern_is_never_zero() {
        assert_eq!(FRAMES, 16);
        assert!((0..WORDS).all(|index| pattern(index) != 0));
        assert_ne!(pattern(1), pattern(2));
    }

    #[test]
    fn failures_say_what_was_read() {
        assert_eq!(
            std::format!(
                "{}",
                Failure::NotZeroed {
                    index: 3,
                    value: 0x5a
                }
            ),
            "word 3 of frame 5 made again after the revoke reads 0x5a, not 0 (the pattern written was 0xa5a500000000035a)"
        );
    }
}
