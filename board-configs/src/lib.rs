//! What the device tree cannot say about a board.
//!
//! The hypervisor learns memory, devices, interrupts and CPUs from the device
//! tree it is handed at boot. A few facts are not in any device tree: where
//! the boot loader places the image (the kernel is linked for it), which
//! memory the firmware uses without reserving it, and how QEMU models the
//! board. Each board is one plain `const` here, read by the `hyp` build (its
//! linker script), by `hyp` itself and by the host build tool; nothing is
//! composed through cargo features.
#![no_std]
#![forbid(unsafe_code)]

pub mod system;

/// A physical memory range `[base, base + size)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// First byte.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
}

/// How the hypervisor picks its console UART.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsoleChoice {
    /// The device tree's `/chosen/stdout-path`.
    StdoutPath,
}

/// A UART the hypervisor may use before it has read the device tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EarlyUart {
    /// An Arm PL011 at this physical address.
    Pl011(u64),
    /// A BCM2835 auxiliary mini-UART whose `AUX_MU_IO` register is at this
    /// physical address.
    Bcm2835Aux(u64),
}

/// One board.
#[derive(Clone, Copy, Debug)]
pub struct Board {
    /// Short name, used on the command line (`--board`) and in the banner.
    pub name: &'static str,
    /// Physical address where the boot loader places the boot image; `hyp`
    /// is linked to run there. It is also written into the image header as
    /// `text_offset` (relative to `ram_base`).
    pub load_address: u64,
    /// Start of the RAM bank the image header's `text_offset` counts from.
    pub ram_base: u64,
    /// Which UART carries the console.
    pub console: ConsoleChoice,
    /// Memory the firmware uses that its device tree does not reserve. The
    /// hypervisor never hands these ranges out.
    pub firmware_reserved: &'static [Range],
    /// Memory the hypervisor keeps for itself beyond its image: per-core
    /// stacks and its page tables live in the image's BSS, so this is zero
    /// today; kernel objects come from untyped memory (issue 3).
    pub hyp_reserved_bytes: u64,
    /// Where to say that the device tree is missing or unreadable. Used only
    /// on that error path: otherwise the device tree names the console.
    pub early_uart: EarlyUart,
}

/// QEMU `virt` (`-M virt,virtualization=on`): RAM at 1 GiB; QEMU loads an
/// arm64 `Image` at RAM base + `text_offset`.
pub const QEMU_VIRT: Board = Board {
    name: "qemu-virt",
    load_address: 0x4008_0000,
    ram_base: 0x4000_0000,
    console: ConsoleChoice::StdoutPath,
    firmware_reserved: &[],
    hyp_reserved_bytes: 0,
    early_uart: EarlyUart::Pl011(0x0900_0000),
};

/// Raspberry Pi 4 Model B (BCM2711), real or QEMU `raspi4b`. The firmware
/// (with `kernel_address=0x80000` in `config.txt`) and QEMU both load the
/// image at 0x8_0000. The first page holds the firmware's arm stub and the
/// spin-table release addresses of the secondary cores; the real firmware
/// adds a `/memreserve/` for it, QEMU does not, so it is listed here.
pub const RPI4: Board = Board {
    name: "rpi4",
    load_address: 0x8_0000,
    ram_base: 0,
    console: ConsoleChoice::StdoutPath,
    firmware_reserved: &[Range {
        base: 0,
        size: 0x1000,
    }],
    hyp_reserved_bytes: 0,
    // The mini-UART is the console on the GPIO header (config.txt
    // `enable_uart=1`) and QEMU raspi4b's second serial port.
    early_uart: EarlyUart::Bcm2835Aux(0xfe21_5040),
};

/// Every board, for lookup by name.
pub const BOARDS: &[Board] = &[QEMU_VIRT, RPI4];

/// The board called `name`, if there is one.
pub const fn find(name: &str) -> Option<&'static Board> {
    let mut index = 0;
    while index < BOARDS.len() {
        if const_str_eq(BOARDS[index].name, name) {
            return Some(&BOARDS[index]);
        }
        index += 1;
    }
    None
}

const fn const_str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut index = 0;
    while index < a.len() {
        if a[index] != b[index] {
            return false;
        }
        index += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_by_name() {
        assert_eq!(find("qemu-virt").map(|b| b.load_address), Some(0x4008_0000));
        assert_eq!(find("rpi4").map(|b| b.load_address), Some(0x8_0000));
        assert!(find("rpi").is_none());
        assert!(find("").is_none());
    }

    #[test]
    fn load_addresses_suit_the_image_header() {
        for board in BOARDS {
            // The Linux image header's text_offset is relative to a 2 MiB
            // aligned base, and the image must start page aligned.
            assert_eq!(board.ram_base % 0x20_0000, 0, "{}", board.name);
            assert!(board.load_address >= board.ram_base, "{}", board.name);
            assert_eq!(board.load_address % 0x1000, 0, "{}", board.name);
            for range in board.firmware_reserved {
                let end = range.base + range.size;
                assert!(
                    end <= board.load_address || range.base >= board.load_address,
                    "{}: reserved range overlaps the image",
                    board.name
                );
            }
        }
    }
}
