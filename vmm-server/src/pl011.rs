//! An emulated Arm PL011 UART (PrimeCell UART, r1p5), enough for Linux's
//! `amba-pl011` driver and its `earlycon`.
//!
//! Registers: `DR`, `RSR/ECR`, `FR`, `ILPR`, `IBRD`, `FBRD`, `LCR_H`, `CR`,
//! `IFLS`, `IMSC`, `RIS`, `MIS`, `ICR`, `DMACR` and the identification
//! registers at `0xFE0..=0xFFC` (peripheral ID `0x00341011`, PrimeCell ID
//! `0xB105F00D`; Linux's AMBA bus reads them to bind the driver, and revision
//! 3 tells it the FIFOs are 32 deep).
//!
//! Data flow:
//! - **Input**: the VMM pushes received bytes with [`Pl011::push_input`] into
//!   a 32-byte receive FIFO (1 byte when `LCR_H.FEN` is clear); the guest
//!   reads them from `DR`. A byte pushed into a full FIFO is lost and raises
//!   the overrun error, as on hardware.
//! - **Output**: a byte the guest writes to `DR` goes into the transmit FIFO,
//!   which is this model's output buffer. The VMM reads it with
//!   [`Pl011::output`] and empties it with [`Pl011::clear_output`] (or both at
//!   once with [`Pl011::drain_output`]), and should do so after every access:
//!   the guest then always finds the FIFO empty (`FR.TXFE`) and never waits.
//!   A VMM that drains later only slows the guest down: `FR.TXFF` makes the
//!   guest wait, exactly as a slow line would.
//! - **Interrupt**: [`Pl011::interrupt_level`] is the UART's interrupt line
//!   (`MIS != 0`). The VMM re-reads it after each access, after pushing input
//!   and after draining output, and passes it to the vGIC's `set_level`.
//!
//! Interrupts, as the driver relies on them: RX is raised while the receive
//! FIFO holds at least the `IFLS` trigger level, RT (receive timeout) while
//! it holds anything at all (time is not modelled, so the timeout has always
//! expired), TX while the transmitter is enabled (`CR.UARTEN` and `CR.TXE`)
//! and the transmit FIFO is at or below its trigger level. Linux clears RX,
//! RT and TX by moving data, not through `ICR`; an `ICR` write still clears
//! them until the next byte arrives (RX, RT) or is written (TX). The overrun
//! interrupt is latched until `ICR` clears it.
//!
//! What it deliberately does not model: baud rate and timing (bytes move
//! instantly; `IBRD`/`FBRD`/`LCR_H` are only stored), parity, framing and
//! break errors, DMA (`DMACR` is stored, no requests are made), IrDA, and
//! modem lines: `FR` reports CTS, DSR and DCD asserted (a connected terminal)
//! and the modem interrupts never fire. Bytes move whether or not the guest
//! has set `CR.UARTEN`, `TXE` or `RXE`, like QEMU's model, so that an early
//! console that never enables the UART still prints. Only naturally aligned
//! 8-, 16- and 32-bit accesses at a register's offset are accepted; anything
//! else reads as zero, is ignored and counts in
//! [`Pl011::unknown_accesses`].

use heapless::{Deque, Vec};

use crate::mmio::Device;

/// Depth of each FIFO (PL011 r1p5).
pub const FIFO_DEPTH: usize = 32;
/// The peripheral ID (`UARTPeriphID3..0`): part 0x011, designer Arm,
/// revision 3 (r1p5).
pub const PERIPH_ID: u32 = 0x0034_1011;
/// The PrimeCell ID (`UARTPCellID3..0`).
pub const CELL_ID: u32 = 0xB105_F00D;

/// Register offsets.
pub mod reg {
    /// Data register.
    pub const DR: u64 = 0x000;
    /// Receive status / error clear register.
    pub const RSR_ECR: u64 = 0x004;
    /// Flag register.
    pub const FR: u64 = 0x018;
    /// IrDA low-power counter register.
    pub const ILPR: u64 = 0x020;
    /// Integer baud rate divisor.
    pub const IBRD: u64 = 0x024;
    /// Fractional baud rate divisor.
    pub const FBRD: u64 = 0x028;
    /// Line control register.
    pub const LCR_H: u64 = 0x02C;
    /// Control register.
    pub const CR: u64 = 0x030;
    /// Interrupt FIFO level select.
    pub const IFLS: u64 = 0x034;
    /// Interrupt mask set/clear.
    pub const IMSC: u64 = 0x038;
    /// Raw interrupt status.
    pub const RIS: u64 = 0x03C;
    /// Masked interrupt status.
    pub const MIS: u64 = 0x040;
    /// Interrupt clear (write only).
    pub const ICR: u64 = 0x044;
    /// DMA control register.
    pub const DMACR: u64 = 0x048;
    /// `UARTPeriphID0`; the IDs are eight word registers from here.
    pub const PERIPH_ID0: u64 = 0xFE0;
}

/// `FR` bits.
pub mod fr {
    /// Clear to send.
    pub const CTS: u32 = 1 << 0;
    /// Data set ready.
    pub const DSR: u32 = 1 << 1;
    /// Data carrier detect.
    pub const DCD: u32 = 1 << 2;
    /// Transmitting (transmit FIFO not empty).
    pub const BUSY: u32 = 1 << 3;
    /// Receive FIFO empty.
    pub const RXFE: u32 = 1 << 4;
    /// Transmit FIFO full.
    pub const TXFF: u32 = 1 << 5;
    /// Receive FIFO full.
    pub const RXFF: u32 = 1 << 6;
    /// Transmit FIFO empty.
    pub const TXFE: u32 = 1 << 7;
}

/// Interrupt bits, as in `IMSC`, `RIS`, `MIS` and `ICR`.
pub mod int {
    /// Receive.
    pub const RX: u32 = 1 << 4;
    /// Transmit.
    pub const TX: u32 = 1 << 5;
    /// Receive timeout.
    pub const RT: u32 = 1 << 6;
    /// Overrun error.
    pub const OE: u32 = 1 << 10;
    /// All eleven interrupt bits (modem, RX, TX, RT and the four errors).
    pub const ALL: u32 = 0x7FF;
}

/// `CR` bits.
pub mod cr {
    /// UART enable.
    pub const UARTEN: u32 = 1 << 0;
    /// Loopback enable: transmitted bytes are received instead.
    pub const LBE: u32 = 1 << 7;
    /// Transmit enable.
    pub const TXE: u32 = 1 << 8;
    /// Receive enable.
    pub const RXE: u32 = 1 << 9;
}

/// `LCR_H.FEN`: FIFOs enabled (otherwise each is one byte deep).
const LCR_H_FEN: u32 = 1 << 4;
/// `RSR.OE`: overrun error.
const RSR_OE: u32 = 1 << 3;
/// The identification bytes at `0xFE0, 0xFE4, ..., 0xFFC`.
const ID_BYTES: [u8; 8] = [0x11, 0x10, 0x34, 0x00, 0x0D, 0xF0, 0x05, 0xB1];

/// The emulated PL011. See the module documentation.
#[derive(Debug, Clone)]
pub struct Pl011 {
    rx: Deque<u8, FIFO_DEPTH>,
    tx: Vec<u8, FIFO_DEPTH>,
    ilpr: u32,
    ibrd: u32,
    fbrd: u32,
    lcr_h: u32,
    cr: u32,
    ifls: u32,
    imsc: u32,
    dmacr: u32,
    /// Error bits for `RSR` (only the overrun is modelled).
    rsr: u32,
    /// Latched interrupts (the overrun), cleared by `ICR`.
    latched: u32,
    /// RX/RT/TX conditions cleared by `ICR` until the data next moves.
    acked: u32,
    /// Guest accesses to unknown registers or with a bad width or alignment.
    pub unknown_accesses: u32,
    /// Bytes the guest wrote while the transmit FIFO was full (lost).
    pub tx_overflows: u32,
    /// Bytes pushed while the receive FIFO was full (lost).
    pub rx_overruns: u32,
}

impl Default for Pl011 {
    fn default() -> Self {
        Self::new()
    }
}

impl Pl011 {
    /// A UART in its reset state (`CR` = `TXE | RXE`, `IFLS` = 1/2 full,
    /// FIFOs disabled, all interrupts masked).
    pub const fn new() -> Self {
        Self {
            rx: Deque::new(),
            tx: Vec::new(),
            ilpr: 0,
            ibrd: 0,
            fbrd: 0,
            lcr_h: 0,
            cr: cr::TXE | cr::RXE,
            ifls: 0x12,
            imsc: 0,
            dmacr: 0,
            rsr: 0,
            latched: 0,
            acked: 0,
            unknown_accesses: 0,
            tx_overflows: 0,
            rx_overruns: 0,
        }
    }

    /// Queues a received byte for the guest. Returns `false` if the
    /// receive FIFO was full: the byte is lost and the overrun error is
    /// raised.
    pub fn push_input(&mut self, byte: u8) -> bool {
        self.acked &= !(int::RX | int::RT);
        self.receive(byte)
    }

    /// Whether the receive FIFO can take another byte now.
    pub fn can_accept_input(&self) -> bool {
        self.rx.len() < self.fifo_capacity()
    }

    /// The bytes the guest has written and the VMM has not yet cleared.
    pub fn output(&self) -> &[u8] {
        &self.tx
    }

    /// Empties the output buffer (the bytes have been sent on).
    pub fn clear_output(&mut self) {
        self.tx.clear();
    }

    /// Passes each output byte to `sink`, then empties the buffer.
    pub fn drain_output(&mut self, mut sink: impl FnMut(u8)) {
        for &byte in &self.tx {
            sink(byte);
        }
        self.tx.clear();
    }

    /// Whether a read of some register changes the UART (reading `DR`
    /// takes a received byte): then every read must reach the model, and
    /// [`Pl011::register_page`] does not describe what reads return.
    pub fn reads_have_effects(&self) -> bool {
        !self.rx.is_empty()
    }

    /// The eight-byte words of the register page: for each defined
    /// register pair, its offset and the two 32-bit values that reads
    /// return now (low word first), so a VMM can let the guest read them
    /// from memory. Valid while [`Pl011::reads_have_effects`] is false (a
    /// test checks that every aligned 32-bit read then equals the page and
    /// changes nothing); unlisted words read as 0.
    pub fn register_page(&self) -> [(u64, u64); 12] {
        let pair = |low: u32, high: u32| u64::from(low) | u64::from(high) << 32;
        let ris = self.ris();
        [
            (reg::DR, pair(0, self.rsr)),
            (reg::FR, pair(self.flags(), 0)),
            (reg::ILPR, pair(self.ilpr, self.ibrd)),
            (reg::FBRD, pair(self.fbrd, self.lcr_h)),
            (reg::CR, pair(self.cr, self.ifls)),
            (reg::IMSC, pair(self.imsc, ris)),
            (reg::MIS, pair(ris & self.imsc, 0)),
            (reg::DMACR, pair(self.dmacr, 0)),
            (0xFE0, pair(ID_BYTES[0].into(), ID_BYTES[1].into())),
            (0xFE8, pair(ID_BYTES[2].into(), ID_BYTES[3].into())),
            (0xFF0, pair(ID_BYTES[4].into(), ID_BYTES[5].into())),
            (0xFF8, pair(ID_BYTES[6].into(), ID_BYTES[7].into())),
        ]
    }

    /// The words of the page that a write to `DR` (a transmitted byte,
    /// drained at once) can change: the flags and the interrupt status.
    pub fn status_words(&self) -> [(u64, u64); 3] {
        let pair = |low: u32, high: u32| u64::from(low) | u64::from(high) << 32;
        let ris = self.ris();
        [
            (reg::FR, pair(self.flags(), 0)),
            (reg::IMSC, pair(self.imsc, ris)),
            (reg::MIS, pair(ris & self.imsc, 0)),
        ]
    }

    /// Whether the UART's interrupt line is high (`MIS != 0`).
    pub fn interrupt_level(&self) -> bool {
        self.mis() != 0
    }

    /// The raw interrupt status (`RIS`).
    pub fn ris(&self) -> u32 {
        let mut ris = self.latched;
        let rx_len = self.rx.len();
        if rx_len >= self.rx_trigger() {
            ris |= int::RX;
        }
        if rx_len > 0 {
            ris |= int::RT;
        }
        let tx_enabled = self.cr & (cr::UARTEN | cr::TXE) == cr::UARTEN | cr::TXE;
        if tx_enabled && self.tx.len() <= self.tx_trigger() {
            ris |= int::TX;
        }
        ris & !self.acked
    }

    /// The masked interrupt status (`MIS = RIS & IMSC`).
    pub fn mis(&self) -> u32 {
        self.ris() & self.imsc
    }

    fn fifo_capacity(&self) -> usize {
        if self.lcr_h & LCR_H_FEN != 0 {
            FIFO_DEPTH
        } else {
            1
        }
    }

    /// How many eighths of the FIFO an `IFLS` level field selects.
    fn eighths(field: u32) -> usize {
        match field {
            0 => 1,
            1 => 2,
            3 => 6,
            4 => 7,
            // 2 is a half; 5..=7 are reserved: treat them as the default.
            _ => 4,
        }
    }

    /// Receive FIFO level at or above which RX is raised.
    fn rx_trigger(&self) -> usize {
        if self.lcr_h & LCR_H_FEN == 0 {
            return 1;
        }
        FIFO_DEPTH * Self::eighths((self.ifls >> 3) & 7) / 8
    }

    /// Transmit FIFO level at or below which TX is raised.
    fn tx_trigger(&self) -> usize {
        if self.lcr_h & LCR_H_FEN == 0 {
            return 0;
        }
        FIFO_DEPTH * Self::eighths(self.ifls & 7) / 8
    }

    fn receive(&mut self, byte: u8) -> bool {
        if self.rx.len() >= self.fifo_capacity() || self.rx.push_back(byte).is_err() {
            self.rsr |= RSR_OE;
            self.latched |= int::OE;
            self.rx_overruns = self.rx_overruns.saturating_add(1);
            return false;
        }
        true
    }

    fn transmit(&mut self, byte: u8) {
        self.acked &= !int::TX;
        if self.cr & cr::LBE != 0 {
            self.acked &= !(int::RX | int::RT);
            self.receive(byte);
            return;
        }
        if self.tx.len() >= self.fifo_capacity() || self.tx.push(byte).is_err() {
            self.tx_overflows = self.tx_overflows.saturating_add(1);
        }
    }

    fn flags(&self) -> u32 {
        let mut flags = fr::CTS | fr::DSR | fr::DCD;
        if self.rx.is_empty() {
            flags |= fr::RXFE;
        }
        if self.rx.len() >= self.fifo_capacity() {
            flags |= fr::RXFF;
        }
        if self.tx.is_empty() {
            flags |= fr::TXFE;
        } else {
            flags |= fr::BUSY;
        }
        if self.tx.len() >= self.fifo_capacity() {
            flags |= fr::TXFF;
        }
        flags
    }

    /// Whether an access of `size` bytes at `offset` is one this model
    /// serves: 1, 2 or 4 bytes at a word-aligned offset below 0x1000.
    fn valid(offset: u64, size: u8) -> bool {
        matches!(size, 1 | 2 | 4) && offset.is_multiple_of(4) && offset < 0x1000
    }

    fn unknown(&mut self) {
        self.unknown_accesses = self.unknown_accesses.saturating_add(1);
    }
}

impl Device for Pl011 {
    fn read(&mut self, offset: u64, size: u8) -> u64 {
        if !Self::valid(offset, size) {
            self.unknown();
            return 0;
        }
        let value = match offset {
            reg::DR => {
                let byte = self.rx.pop_front().unwrap_or(0);
                u32::from(byte)
            }
            reg::RSR_ECR => self.rsr,
            reg::FR => self.flags(),
            reg::ILPR => self.ilpr,
            reg::IBRD => self.ibrd,
            reg::FBRD => self.fbrd,
            reg::LCR_H => self.lcr_h,
            reg::CR => self.cr,
            reg::IFLS => self.ifls,
            reg::IMSC => self.imsc,
            reg::RIS => self.ris(),
            reg::MIS => self.mis(),
            reg::ICR => 0,
            reg::DMACR => self.dmacr,
            0xFE0..=0xFFC => {
                let index = usize::try_from((offset - reg::PERIPH_ID0) / 4).unwrap_or(0);
                ID_BYTES.get(index).copied().map_or(0, u32::from)
            }
            _ => {
                self.unknown();
                0
            }
        };
        u64::from(value) & crate::mmio::size_mask(size)
    }

    fn write(&mut self, offset: u64, size: u8, value: u64) {
        if !Self::valid(offset, size) {
            self.unknown();
            return;
        }
        let value = crate::lo32(value & crate::mmio::size_mask(size));
        match offset {
            reg::DR => self.transmit(crate::lo8(u64::from(value))),
            reg::RSR_ECR => self.rsr = 0,
            reg::ILPR => self.ilpr = value & 0xFF,
            reg::IBRD => self.ibrd = value & 0xFFFF,
            reg::FBRD => self.fbrd = value & 0x3F,
            reg::LCR_H => {
                self.lcr_h = value & 0xFF;
                // Shrinking the receive FIFO to one byte keeps the oldest.
                while self.rx.len() > self.fifo_capacity() {
                    self.rx.pop_back();
                }
            }
            reg::CR => self.cr = value & 0xFF87,
            reg::IFLS => self.ifls = value & 0x3F,
            reg::IMSC => self.imsc = value & int::ALL,
            reg::ICR => {
                self.latched &= !value;
                self.acked |= value & (int::RX | int::RT | int::TX);
                if value & int::OE != 0 {
                    self.rsr &= !RSR_OE;
                }
            }
            reg::DMACR => self.dmacr = value & 0x7,
            // Read-only registers: the write is ignored.
            reg::FR | reg::RIS | reg::MIS | 0xFE0..=0xFFC => {}
            _ => self.unknown(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec as StdVec;

    fn read(uart: &mut Pl011, offset: u64) -> u32 {
        u32::try_from(uart.read(offset, 4)).unwrap()
    }

    /// A UART set up the way Linux's driver leaves it after `startup`.
    fn linux_configured() -> Pl011 {
        let mut uart = Pl011::new();
        uart.write(reg::IBRD, 4, 13);
        uart.write(reg::FBRD, 4, 1);
        uart.write(reg::LCR_H, 4, 0x70); // 8 bits, FIFOs on
        uart.write(reg::IFLS, 4, 0x12); // RX 1/2, TX 1/2
        uart.write(reg::CR, 4, u64::from(cr::UARTEN | cr::TXE | cr::RXE));
        uart.write(reg::IMSC, 4, u64::from(int::RX | int::RT));
        uart
    }

    /// The register page as 32-bit words by offset.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "splits 64-bit page words into their 32-bit halves; offsets below 0x1000"
    )]
    fn page_of(uart: &Pl011) -> [u32; 1024] {
        let mut page = [0u32; 1024];
        for (offset, value) in uart.register_page() {
            let index = usize::try_from(offset / 4).unwrap();
            page[index] = value as u32;
            page[index + 1] = (value >> 32) as u32;
        }
        page
    }

    /// Every aligned 32-bit read returns what the page says and changes
    /// nothing, whenever `reads_have_effects` is false.
    #[allow(clippy::cast_possible_truncation, reason = "offsets below 0x1000")]
    fn check_page(uart: &Pl011, step: &str) {
        if uart.reads_have_effects() {
            return;
        }
        let page = page_of(uart);
        for (fr, status) in [(reg::FR, 0), (reg::IMSC, 1), (reg::MIS, 2)] {
            assert_eq!(
                uart.status_words()[status],
                (
                    fr,
                    u64::from(page[fr as usize / 4]) | u64::from(page[fr as usize / 4 + 1]) << 32
                ),
                "{step}: status word at {fr:#x}"
            );
        }
        for offset in (0..0x1000u64).step_by(4) {
            let mut copy = uart.clone();
            let value = read(&mut copy, offset);
            assert_eq!(
                value,
                page[offset as usize / 4],
                "{step}: offset {offset:#x}"
            );
            let mut again = copy.clone();
            assert_eq!(
                read(&mut again, offset),
                value,
                "{step}: a second read of {offset:#x}"
            );
            assert_eq!(
                page_of(&copy),
                page,
                "{step}: the read of {offset:#x} changed the UART"
            );
        }
    }

    #[test]
    fn the_register_page_is_what_reads_return_while_reads_change_nothing() {
        let mut uart = Pl011::new();
        check_page(&uart, "reset");
        uart = linux_configured();
        check_page(&uart, "configured");
        for (step, (offset, value)) in [
            (reg::DR, u64::from(b'a')),
            (reg::IMSC, u64::from(int::TX | int::RX)),
            (reg::DR, u64::from(b'b')),
            (reg::ICR, u64::from(int::TX)),
            (reg::LCR_H, 0x60),
            (reg::DR, u64::from(b'c')),
            (reg::CR, u64::from(cr::UARTEN | cr::TXE)),
            (reg::IFLS, 0x09),
        ]
        .into_iter()
        .enumerate()
        {
            uart.write(offset, 4, value);
            uart.drain_output(|_| {});
            check_page(&uart, &std::format!("write {step} to {offset:#x}"));
        }
        // Input: reads of DR now take bytes, so the page does not apply;
        // once they are read it does again.
        uart.push_input(b'x');
        assert!(uart.reads_have_effects());
        assert_eq!(read(&mut uart, reg::DR), u32::from(b'x'));
        assert!(!uart.reads_have_effects());
        check_page(&uart, "after the input was read");
        // Loopback: a transmitted byte is received.
        uart.write(
            reg::CR,
            4,
            u64::from(cr::UARTEN | cr::TXE | cr::RXE | cr::LBE),
        );
        uart.write(reg::DR, 4, u64::from(b'y'));
        assert!(uart.reads_have_effects(), "a looped-back byte waits");
    }

    #[test]
    fn identification_registers_match_a_pl011_r1p5() {
        let mut uart = Pl011::new();
        let mut periph = 0;
        let mut cell = 0;
        for i in 0..4 {
            periph |= read(&mut uart, 0xFE0 + 4 * i) << (8 * i);
            cell |= read(&mut uart, 0xFF0 + 4 * i) << (8 * i);
        }
        assert_eq!(periph, PERIPH_ID);
        assert_eq!(cell, CELL_ID);
        assert_eq!(uart.unknown_accesses, 0);
    }

    #[test]
    fn reset_state_flags_and_registers() {
        let mut uart = Pl011::new();
        let flags = read(&mut uart, reg::FR);
        assert_eq!(flags & (fr::TXFE | fr::RXFE), fr::TXFE | fr::RXFE);
        assert_eq!(flags & (fr::BUSY | fr::TXFF | fr::RXFF), 0);
        assert_eq!(read(&mut uart, reg::CR), cr::TXE | cr::RXE);
        assert_eq!(read(&mut uart, reg::IFLS), 0x12);
        assert!(!uart.interrupt_level());
    }

    #[test]
    fn configuration_registers_are_stored_with_their_widths() {
        let mut uart = linux_configured();
        uart.write(reg::DMACR, 4, 0xFFFF_FFFF);
        uart.write(reg::IBRD, 4, 0x1_2345);
        uart.write(reg::FBRD, 4, 0xFF);
        assert_eq!(read(&mut uart, reg::DMACR), 7);
        assert_eq!(read(&mut uart, reg::IBRD), 0x2345);
        assert_eq!(read(&mut uart, reg::FBRD), 0x3F);
        assert_eq!(read(&mut uart, reg::LCR_H), 0x70);
        assert_eq!(read(&mut uart, reg::IMSC), int::RX | int::RT);
        // A 16-bit access (the driver's default iotype) works the same.
        uart.write(reg::CR, 2, 0x0301);
        assert_eq!(uart.read(reg::CR, 2), 0x0301);
    }

    #[test]
    fn output_goes_to_the_buffer_and_fills_the_fifo() {
        let mut uart = linux_configured();
        for &b in b"hi\n" {
            uart.write(reg::DR, 1, u64::from(b));
        }
        assert_eq!(uart.output(), b"hi\n");
        let flags = read(&mut uart, reg::FR);
        assert_eq!(flags & (fr::BUSY | fr::TXFE), fr::BUSY);
        let mut sent = StdVec::new();
        uart.drain_output(|b| sent.push(b));
        assert_eq!(sent, b"hi\n");
        assert!(uart.output().is_empty());
        assert_ne!(read(&mut uart, reg::FR) & fr::TXFE, 0);

        // An undrained FIFO fills up and says so; a write beyond is lost.
        for i in 0..FIFO_DEPTH {
            uart.write(reg::DR, 4, u64::try_from(i).unwrap());
        }
        assert_ne!(read(&mut uart, reg::FR) & fr::TXFF, 0);
        uart.write(reg::DR, 4, 0x55);
        assert_eq!(uart.tx_overflows, 1);
        assert_eq!(uart.output().len(), FIFO_DEPTH);
    }

    #[test]
    fn without_fifos_each_direction_holds_one_byte() {
        let mut uart = Pl011::new();
        uart.write(reg::DR, 4, u64::from(b'a'));
        assert_ne!(read(&mut uart, reg::FR) & fr::TXFF, 0);
        assert!(uart.push_input(1));
        assert_ne!(read(&mut uart, reg::FR) & fr::RXFF, 0);
        assert!(!uart.push_input(2));
        assert_eq!(read(&mut uart, reg::DR), 1);
    }

    #[test]
    fn input_is_read_in_order_and_raises_rx_interrupts() {
        let mut uart = linux_configured();
        assert!(!uart.interrupt_level());
        assert!(uart.push_input(b'x'));
        // One byte is below the half-full trigger: only the timeout fires.
        assert_eq!(read(&mut uart, reg::MIS), int::RT);
        assert!(uart.interrupt_level());
        for b in 0..15 {
            uart.push_input(b);
        }
        assert_eq!(read(&mut uart, reg::MIS), int::RX | int::RT);
        assert_eq!(read(&mut uart, reg::DR), u32::from(b'x'));
        // 15 left: below the trigger of 16 again.
        assert_eq!(read(&mut uart, reg::RIS) & int::RX, 0);
        while read(&mut uart, reg::FR) & fr::RXFE == 0 {
            read(&mut uart, reg::DR);
        }
        assert!(!uart.interrupt_level());
        // Reading an empty FIFO returns 0 and changes nothing.
        assert_eq!(read(&mut uart, reg::DR), 0);
    }

    #[test]
    fn overrun_is_latched_until_cleared() {
        let mut uart = linux_configured();
        uart.write(reg::IMSC, 4, u64::from(int::OE));
        for b in 0..32 {
            assert!(uart.push_input(b));
        }
        assert!(!uart.can_accept_input());
        assert!(!uart.push_input(0xEE));
        assert_eq!(uart.rx_overruns, 1);
        assert_eq!(read(&mut uart, reg::MIS), int::OE);
        assert_eq!(read(&mut uart, reg::RSR_ECR), RSR_OE);
        // Draining the FIFO does not clear a latched error; ICR does.
        while read(&mut uart, reg::FR) & fr::RXFE == 0 {
            read(&mut uart, reg::DR);
        }
        assert!(uart.interrupt_level());
        uart.write(reg::ICR, 4, u64::from(int::OE));
        assert!(!uart.interrupt_level());
        assert_eq!(read(&mut uart, reg::RSR_ECR), 0);
    }

    #[test]
    fn tx_interrupt_follows_enable_and_fifo_level() {
        let mut uart = linux_configured();
        // Linux unmasks TX only while it has more to send.
        uart.write(reg::IMSC, 4, u64::from(int::TX));
        assert_eq!(read(&mut uart, reg::MIS), int::TX);
        // Disabling the transmitter drops it.
        uart.write(reg::CR, 4, u64::from(cr::UARTEN | cr::RXE));
        assert!(!uart.interrupt_level());
        uart.write(reg::CR, 4, u64::from(cr::UARTEN | cr::TXE | cr::RXE));
        assert!(uart.interrupt_level());
        // Above the trigger level (16 of 32) TX is low; draining raises it.
        for _ in 0..17 {
            uart.write(reg::DR, 4, u64::from(b'.'));
        }
        assert!(!uart.interrupt_level());
        uart.clear_output();
        assert!(uart.interrupt_level());
        // ICR clears it until the next write.
        uart.write(reg::ICR, 4, u64::from(int::TX));
        assert!(!uart.interrupt_level());
        uart.write(reg::DR, 4, u64::from(b'.'));
        assert!(uart.interrupt_level());
        // Masking it lowers the line, the raw status stays.
        uart.write(reg::IMSC, 4, 0);
        assert!(!uart.interrupt_level());
        assert_ne!(read(&mut uart, reg::RIS) & int::TX, 0);
    }

    #[test]
    fn loopback_returns_written_bytes_as_input() {
        let mut uart = linux_configured();
        uart.write(
            reg::CR,
            4,
            u64::from(cr::UARTEN | cr::TXE | cr::RXE | cr::LBE),
        );
        uart.write(reg::DR, 4, u64::from(b'q'));
        assert!(uart.output().is_empty());
        assert_eq!(read(&mut uart, reg::DR), u32::from(b'q'));
    }

    #[test]
    fn bad_accesses_read_zero_and_are_counted() {
        let mut uart = linux_configured();
        uart.push_input(b'z');
        assert_eq!(uart.read(reg::DR + 1, 1), 0); // misaligned
        assert_eq!(uart.read(reg::FR, 8), 0); // too wide
        assert_eq!(uart.read(0x100, 4), 0); // no register
        assert_eq!(uart.read(0x1000, 4), 0); // outside the page
        uart.write(0x04C, 4, 1);
        uart.write(reg::DR, 3, u64::from(b'!'));
        assert_eq!(uart.unknown_accesses, 6);
        assert!(uart.output().is_empty());
        // The byte was not consumed by the bad reads.
        assert_eq!(read(&mut uart, reg::DR), u32::from(b'z'));
        // Writes to read-only registers are ignored but are not unknown.
        uart.write(reg::FR, 4, 0);
        uart.write(reg::PERIPH_ID0, 4, 0);
        assert_eq!(uart.unknown_accesses, 6);
        assert_eq!(read(&mut uart, reg::PERIPH_ID0), 0x11);
    }
}
