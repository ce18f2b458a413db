//! Transmit-only driver for the BCM2835/BCM2711 auxiliary mini-UART, the
//! Raspberry Pi's default console (`uart1`, the DTB's `stdout-path`).
//!
//! The hypervisor only prints on its console, so only the transmit side is
//! driven. The firmware (`enable_uart=1` in `config.txt`) or QEMU has already
//! enabled the AUX block, set the baud rate and the 8-bit mode; this driver
//! changes none of that. Unlike a PL011 the mini-UART has no enable bits in
//! its own block that matter here: the AUX enable lives in `AUX_ENABLES`, one
//! level up, outside the registers this driver is given.
//!
//! The base address is the one of the device-tree node
//! `brcm,bcm2835-aux-uart`, i.e. the address of `AUX_MU_IO_REG`
//! (`0xfe21_5040` on the Pi 4). The block is used at its physical address,
//! mapped Device-nGnRE by the hypervisor's EL2 page tables (identity mapping).
//!
//! Register layout: BCM2835 ARM Peripherals, section 2.2.

#![no_std]

#[cfg(test)]
extern crate std;

use core::fmt;

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite};
use tock_registers::{register_bitfields, register_structs};

register_bitfields! {u32,
    /// AUX_MU_IO_REG: writing puts one byte into the transmit FIFO (when the
    /// DLAB bit of LCR is clear, as the firmware leaves it).
    IO [
        DATA OFFSET(0) NUMBITS(8) [],
    ],
    /// AUX_MU_LSR_REG: line status.
    LSR [
        /// At least one byte is in the receive FIFO.
        DATA_READY OFFSET(0) NUMBITS(1) [],
        /// The transmit FIFO can accept at least one byte.
        TX_EMPTY OFFSET(5) NUMBITS(1) [],
        /// The transmit FIFO is empty and the transmitter is idle.
        TX_IDLE OFFSET(6) NUMBITS(1) [],
    ],
}

register_structs! {
    /// The `AUX_MU_*` registers, from `AUX_MU_IO_REG` on.
    Registers {
        (0x00 => io: ReadWrite<u32, IO::Register>),
        (0x04 => ier: ReadWrite<u32>),
        (0x08 => _iir: ReadWrite<u32>),
        (0x0c => _lcr: ReadWrite<u32>),
        (0x10 => _mcr: ReadWrite<u32>),
        (0x14 => lsr: ReadOnly<u32, LSR::Register>),
        (0x18 => _msr: ReadOnly<u32>),
        (0x1c => _scratch: ReadWrite<u32>),
        (0x20 => _cntl: ReadWrite<u32>),
        (0x24 => _stat: ReadOnly<u32>),
        (0x28 => _baud: ReadWrite<u32>),
        (0x2c => @END),
    }
}

/// The mini-UART used for output only.
///
/// # Invariants
///
/// `base` is the address of a mapped `AUX_MU_*` register block that stays
/// mapped for the rest of the program (established by [`MiniUart::new`]).
#[derive(Debug)]
pub struct MiniUart {
    base: usize,
}

impl MiniUart {
    /// Takes over the mini-UART whose `AUX_MU_IO_REG` is at `base`. Nothing is
    /// written: the firmware has configured and enabled it.
    ///
    /// # Safety
    ///
    /// `base` must be the address of the mini-UART's `AUX_MU_*` register block
    /// (`AUX_MU_IO_REG` to `AUX_MU_BAUD_REG`), mapped as Device memory for the
    /// rest of the program, and nothing else may write these registers
    /// concurrently with the returned value (another `MiniUart` on the same
    /// block included).
    pub unsafe fn new(base: usize) -> Self {
        Self { base }
    }

    fn registers(&self) -> &Registers {
        // SAFETY: by the invariant of `MiniUart` (the contract of `new`),
        // `base` points to a mapped mini-UART register block that outlives
        // `self`. The `Registers` fields are `UnsafeCell`-based registers,
        // accessed with volatile single loads and stores only, so a shared
        // reference to the block is sound even though the hardware changes it.
        unsafe { &*(self.base as *const Registers) }
    }

    /// Sends one byte, waiting until the transmit FIFO has room for it.
    pub fn write_byte(&self, byte: u8) {
        let registers = self.registers();
        while !registers.lsr.is_set(LSR::TX_EMPTY) {
            core::hint::spin_loop();
        }
        registers.io.write(IO::DATA.val(u32::from(byte)));
    }

    /// Waits until everything written so far has left the UART.
    pub fn flush(&self) {
        let registers = self.registers();
        while !registers.lsr.is_set(LSR::TX_IDLE) {
            core::hint::spin_loop();
        }
    }

    /// The next received byte, if the receive FIFO holds one.
    pub fn read_byte(&self) -> Option<u8> {
        let registers = self.registers();
        if !registers.lsr.is_set(LSR::DATA_READY) {
            return None;
        }
        Some((registers.io.get() & 0xff) as u8)
    }

    /// Raises the UART's (auxiliary) interrupt while received bytes wait
    /// (`AUX_MU_IER_REG` bit 0; the transmit interrupt stays off).
    pub fn enable_receive_interrupt(&self) {
        self.registers().ier.set(1);
    }
}

impl fmt::Write for MiniUart {
    /// Sends `text`, turning each `\n` into `\r\n` for terminals.
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for_each_terminal_byte(text, |byte| self.write_byte(byte));
        Ok(())
    }
}

/// Calls `send` with each byte of `text`, preceding every `\n` with a `\r`.
fn for_each_terminal_byte(text: &str, mut send: impl FnMut(u8)) {
    for byte in text.bytes() {
        if byte == b'\n' {
            send(b'\r');
        }
        send(byte);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;
    use std::boxed::Box;
    use std::vec::Vec;

    const IO_OFFSET: usize = 0x00;
    const LSR_OFFSET: usize = 0x14;
    const LSR_TX_EMPTY_AND_IDLE: u32 = (1 << 5) | (1 << 6);

    /// A mini-UART register block in ordinary memory. It does not model the
    /// hardware: IO keeps the last byte written and LSR stays as the test
    /// sets it.
    struct FakeBlock {
        words: *mut u32,
        len: usize,
    }

    impl FakeBlock {
        /// A block whose LSR says "transmitter empty and idle".
        fn new() -> Self {
            let words: Box<[u32]> = std::vec![0u32; size_of::<Registers>() / 4].into_boxed_slice();
            let len = words.len();
            let block = Self {
                words: Box::into_raw(words).cast::<u32>(),
                len,
            };
            block.write(LSR_OFFSET, LSR_TX_EMPTY_AND_IDLE);
            block
        }

        fn base(&self) -> usize {
            self.words as usize
        }

        fn word(&self, offset: usize) -> *mut u32 {
            assert!(offset.is_multiple_of(4) && offset / 4 < self.len);
            self.words.wrapping_add(offset / 4)
        }

        fn read(&self, offset: usize) -> u32 {
            let word = self.word(offset);
            // SAFETY: `word` is an aligned word of the live allocation owned
            // by `self`.
            unsafe { word.read_volatile() }
        }

        fn write(&self, offset: usize, value: u32) {
            let word = self.word(offset);
            // SAFETY: as in `read`.
            unsafe { word.write_volatile(value) }
        }
    }

    impl Drop for FakeBlock {
        fn drop(&mut self) {
            let slice = core::ptr::slice_from_raw_parts_mut(self.words, self.len);
            // SAFETY: `words` and `len` came from `Box::into_raw` in `new` and
            // are released exactly once, here.
            drop(unsafe { Box::from_raw(slice) });
        }
    }

    #[test]
    fn new_writes_nothing() {
        let block = FakeBlock::new();
        // SAFETY: the fake block is live for the whole test and used by this
        // `MiniUart` alone.
        let _uart = unsafe { MiniUart::new(block.base()) };
        for offset in (0..size_of::<Registers>()).step_by(4) {
            let expected = if offset == LSR_OFFSET {
                LSR_TX_EMPTY_AND_IDLE
            } else {
                0
            };
            assert_eq!(block.read(offset), expected, "offset {offset:#x}");
        }
    }

    #[test]
    fn write_byte_lands_in_io() {
        let block = FakeBlock::new();
        // SAFETY: as above.
        let uart = unsafe { MiniUart::new(block.base()) };
        uart.write_byte(b'Z');
        assert_eq!(block.read(IO_OFFSET), u32::from(b'Z'));
        uart.flush();
    }

    #[test]
    fn newline_becomes_carriage_return_line_feed() {
        let mut sent = Vec::new();
        for_each_terminal_byte("a\nb\n\n", |byte| sent.push(byte));
        assert_eq!(sent, b"a\r\nb\r\n\r\n");
    }

    #[test]
    fn formatted_text_reaches_io() {
        let block = FakeBlock::new();
        // SAFETY: as above.
        let mut uart = unsafe { MiniUart::new(block.base()) };
        write!(uart, "{}", 7).unwrap();
        assert_eq!(block.read(IO_OFFSET), u32::from(b'7'));
        writeln!(uart).unwrap();
        // The fake IO register keeps the last byte: '\n' came after '\r'.
        assert_eq!(block.read(IO_OFFSET), u32::from(b'\n'));
    }
}
