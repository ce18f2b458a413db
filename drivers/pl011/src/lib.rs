//! Transmit-only driver for the Arm PL011 UART, the hypervisor's console.
//!
//! The hypervisor prints boot messages, diagnostics and its last words after a
//! kernel bug; it never reads from the console (input belongs to the guests),
//! so only the transmit side is driven here. The firmware (or QEMU) has already
//! programmed the baud rate and line format: this driver does not touch them.
//! It only makes sure that the UART and its transmitter are switched on.
//!
//! The register block is used at its physical address, mapped Device-nGnRE by
//! the hypervisor's EL2 page tables (identity mapping).
//!
//! Register layout and bits: Arm PrimeCell UART (PL011) Technical Reference
//! Manual, DDI 0183, section 3.3.

#![no_std]

#[cfg(test)]
extern crate std;

use core::fmt;

use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite};
use tock_registers::{register_bitfields, register_structs};

register_bitfields! {u32,
    /// UARTDR: data register. Writing pushes one character into the
    /// transmit FIFO.
    DR [
        DATA OFFSET(0) NUMBITS(8) [],
    ],
    /// UARTFR: flag register.
    FR [
        /// The UART is busy transmitting (set until the transmit FIFO is empty
        /// and the last stop bit has left the shift register).
        BUSY OFFSET(3) NUMBITS(1) [],
        /// Receive FIFO empty.
        RXFE OFFSET(4) NUMBITS(1) [],
        /// Transmit FIFO full: writing DR now would lose the character.
        TXFF OFFSET(5) NUMBITS(1) [],
        /// Transmit FIFO empty.
        TXFE OFFSET(7) NUMBITS(1) [],
    ],
    /// UARTCR: control register.
    CR [
        /// UART enable.
        UARTEN OFFSET(0) NUMBITS(1) [],
        /// Loopback enable.
        LBE OFFSET(7) NUMBITS(1) [],
        /// Transmit enable.
        TXE OFFSET(8) NUMBITS(1) [],
        /// Receive enable.
        RXE OFFSET(9) NUMBITS(1) [],
    ],
}

register_structs! {
    /// The PL011 registers this driver uses (offsets from DDI 0183 table 3-1).
    Registers {
        (0x000 => dr: ReadWrite<u32, DR::Register>),
        (0x004 => _reserved0),
        (0x018 => fr: ReadOnly<u32, FR::Register>),
        (0x01c => _reserved1),
        (0x030 => cr: ReadWrite<u32, CR::Register>),
        (0x034 => _reserved2),
        (0x038 => imsc: ReadWrite<u32>),
        (0x03c => @END),
    }
}

/// A PL011 UART used for output only.
///
/// # Invariants
///
/// `base` is the address of a mapped PL011 register block that stays mapped
/// for the rest of the program (established by [`Pl011::new`]).
#[derive(Debug)]
pub struct Pl011 {
    base: usize,
}

impl Pl011 {
    /// Takes over the PL011 at `base` for output, switching on the UART and
    /// its transmitter if the firmware left them off (all other control bits,
    /// the baud rate and the line format are left as they are).
    ///
    /// # Safety
    ///
    /// `base` must be the address of a PL011 register block that is mapped
    /// (Device memory) for the rest of the program, and nothing else may write
    /// these registers concurrently with the returned value (another `Pl011`
    /// on the same block included). The block is treated as MMIO: it is never
    /// read or written as ordinary memory.
    pub unsafe fn new(base: usize) -> Self {
        let uart = Self { base };
        let control = uart.registers().cr.extract();
        if !control.is_set(CR::UARTEN) || !control.is_set(CR::TXE) {
            uart.registers().cr.modify(CR::UARTEN::SET + CR::TXE::SET);
        }
        uart
    }

    fn registers(&self) -> &Registers {
        // SAFETY: by the invariant of `Pl011` (the contract of `new`), `base`
        // points to a mapped PL011 register block that outlives `self`. The
        // `Registers` fields are `UnsafeCell`-based registers, accessed with
        // volatile single loads and stores only, so a shared reference to the
        // block is sound even though the hardware changes it.
        unsafe { &*(self.base as *const Registers) }
    }

    /// Sends one byte, waiting while the transmit FIFO is full.
    pub fn write_byte(&self, byte: u8) {
        let registers = self.registers();
        while registers.fr.is_set(FR::TXFF) {
            core::hint::spin_loop();
        }
        registers.dr.write(DR::DATA.val(u32::from(byte)));
    }

    /// Waits until everything written so far has left the UART.
    pub fn flush(&self) {
        let registers = self.registers();
        while registers.fr.is_set(FR::BUSY) {
            core::hint::spin_loop();
        }
    }

    /// The next received byte, if the receive FIFO holds one.
    pub fn read_byte(&self) -> Option<u8> {
        let registers = self.registers();
        if registers.fr.is_set(FR::RXFE) {
            return None;
        }
        // The low 8 bits are the character; bits 8..11 its error flags.
        Some((registers.dr.get() & 0xff) as u8)
    }

    /// Switches the receiver on and raises the UART's interrupt while
    /// received bytes wait (receive and receive-timeout interrupts, bits
    /// 4 and 6 of UARTIMSC); the other interrupt sources stay masked.
    pub fn enable_receive_interrupt(&self) {
        let registers = self.registers();
        registers.cr.modify(CR::RXE::SET);
        registers.imsc.set((1 << 4) | (1 << 6));
    }
}

impl fmt::Write for Pl011 {
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

    /// A PL011 register block in ordinary memory. It does not model the
    /// hardware: DR keeps the last byte written and FR stays as the test
    /// sets it (zero: never full, never busy).
    struct FakeBlock {
        words: *mut u32,
        len: usize,
    }

    impl FakeBlock {
        fn new() -> Self {
            let words: Box<[u32]> = std::vec![0u32; size_of::<Registers>() / 4].into_boxed_slice();
            let len = words.len();
            Self {
                words: Box::into_raw(words).cast::<u32>(),
                len,
            }
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
    fn new_switches_on_uart_and_transmitter_and_keeps_other_bits() {
        let block = FakeBlock::new();
        block.write(0x030, 1 << 9); // RXE only
        // SAFETY: the fake block is live for the whole test and used by this
        // `Pl011` alone.
        let _uart = unsafe { Pl011::new(block.base()) };
        assert_eq!(block.read(0x030), (1 << 9) | (1 << 8) | 1);
    }

    #[test]
    fn new_leaves_an_enabled_uart_alone() {
        let block = FakeBlock::new();
        block.write(0x030, 0x0301);
        // SAFETY: as above.
        let _uart = unsafe { Pl011::new(block.base()) };
        assert_eq!(block.read(0x030), 0x0301);
    }

    #[test]
    fn write_byte_lands_in_dr() {
        let block = FakeBlock::new();
        // SAFETY: as above.
        let uart = unsafe { Pl011::new(block.base()) };
        uart.write_byte(b'A');
        assert_eq!(block.read(0x000), u32::from(b'A'));
        uart.write_byte(0xff);
        assert_eq!(block.read(0x000), 0xff);
        uart.flush();
    }

    #[test]
    fn newline_becomes_carriage_return_line_feed() {
        let mut sent = Vec::new();
        for_each_terminal_byte("a\nb\n\n", |byte| sent.push(byte));
        assert_eq!(sent, b"a\r\nb\r\n\r\n");
    }

    #[test]
    fn formatted_text_reaches_dr() {
        let block = FakeBlock::new();
        // SAFETY: as above.
        let mut uart = unsafe { Pl011::new(block.base()) };
        writeln!(uart, "{}", 42).unwrap();
        // The fake DR keeps the last byte written: the final '\n'.
        assert_eq!(block.read(0x000), u32::from(b'\n'));
        write!(uart, "x").unwrap();
        assert_eq!(block.read(0x000), u32::from(b'x'));
    }
}
