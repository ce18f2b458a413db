//! The console: the guest's PL011 at `0x0900_0000` (emulated by the VMM;
//! on bare QEMU `virt` the real model). The guest does not program it:
//! it writes characters to `UARTDR` while `UARTFR.TXFF` is clear. The wait
//! for room is bounded: a UART whose FIFO stays full drops the character
//! and is remembered as stuck (the `console` check reports it).

use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::mmio::Mmio;
use crate::sysreg::Deadline;

/// Physical address of the PL011.
pub(crate) const BASE: usize = 0x0900_0000;

// SAFETY: the guest's PL011 registers at `BASE` (4 KiB), device memory on
// the `virt` layout the guest is built for.
static UART: Mmio = unsafe { Mmio::new(BASE, 0x1000) };

const UARTDR: usize = 0x00;
const UARTFR: usize = 0x18;
const FR_TXFF: u32 = 1 << 5;

/// How long one character may wait for room in the FIFO.
const ROOM_TIMEOUT_US: u64 = 20_000;

static STUCK: AtomicBool = AtomicBool::new(false);

/// Whether a character was dropped because `UARTFR.TXFF` stayed set.
pub(crate) fn stuck() -> bool {
    STUCK.load(Ordering::SeqCst)
}

/// `UARTFR`.
pub(crate) fn flags() -> u32 {
    UART.read32(UARTFR)
}

/// One write of `byte` to `UARTDR`, without waiting for room (the
/// benchmark's data-register write: a carriage return, which the VMM's
/// console drops).
pub(crate) fn write_data(byte: u8) {
    UART.write32(UARTDR, u32::from(byte));
}

fn write_byte(byte: u8) {
    if stuck() {
        // Do not wait again for a UART that never made room.
        if UART.read32(UARTFR) & FR_TXFF != 0 {
            return;
        }
    }
    let deadline = Deadline::after_us(ROOM_TIMEOUT_US);
    while UART.read32(UARTFR) & FR_TXFF != 0 {
        if deadline.expired() {
            STUCK.store(true, Ordering::SeqCst);
            return;
        }
    }
    UART.write32(UARTDR, u32::from(byte));
}

struct Console;

impl fmt::Write for Console {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for byte in text.bytes() {
            if byte == b'\n' {
                write_byte(b'\r');
            }
            write_byte(byte);
        }
        Ok(())
    }
}

/// Prints `arguments` (used by `println!`).
pub(crate) fn print(arguments: fmt::Arguments<'_>) {
    // `Console::write_str` never fails.
    let _ = fmt::write(&mut Console, arguments);
}

/// Prints a line on the console.
macro_rules! println {
    ($($argument:tt)*) => {
        $crate::uart::print(format_args!("{}\n", format_args!($($argument)*)))
    };
}
pub(crate) use println;
