//! The hypervisor console: one UART, named by the device tree, shared by all
//! cores.
//!
//! Output is serialized by a lock taken with IRQs masked, so an interrupt
//! handler that prints cannot deadlock against the code it interrupted.
//! [`emergency`] is for the exception and panic reports: it waits a bounded
//! time for the lock and then writes anyway, because a report that never
//! appears is worse than one interleaved with another core's line.

use core::fmt::{self, Write};

use bcm2835_aux_uart::MiniUart;
use hyp_core::platform::UartKind;
use pl011::Pl011;
use spin::Once;
use spin::mutex::Mutex;

use crate::arch::registers::YieldRelax;

use crate::arch::registers;

/// A console UART: its kind and the physical address of its registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsoleUart {
    /// Which driver speaks to it.
    pub kind: UartKind,
    /// Its register block (mapped Device-nGnRE at this address once the
    /// MMU is on; with the MMU off every access is Device anyway).
    pub base: u64,
}

impl ConsoleUart {
    /// Writes `arguments` to the UART.
    ///
    /// # Safety
    /// `self.base` is the register block of a UART of kind `self.kind`,
    /// accessible at that address now (MMU off, or mapped as device
    /// memory), and no other code programs the UART's registers (only the
    /// transmit data register is shared, which interleaves bytes at worst).
    pub unsafe fn write_fmt(self, arguments: fmt::Arguments<'_>) {
        let Ok(base) = usize::try_from(self.base) else {
            return;
        };
        // The drivers' constructors only record the address; the caller
        // guarantees it is the UART's. Errors from `write_fmt` mean a
        // formatting impl failed: there is nowhere better to report that.
        match self.kind {
            UartKind::Pl011 => {
                // SAFETY: the caller's contract: `base` is a PL011.
                let mut uart = unsafe { Pl011::new(base) };
                let _ = uart.write_fmt(arguments);
            }
            UartKind::Bcm2835Aux => {
                // SAFETY: the caller's contract: `base` is a mini-UART.
                let mut uart = unsafe { MiniUart::new(base) };
                let _ = uart.write_fmt(arguments);
            }
        }
    }
}

impl ConsoleUart {
    /// The next byte received, if any (never waits).
    ///
    /// # Safety
    /// As for [`ConsoleUart::write_fmt`]; and only the console code reads
    /// the receive FIFO.
    unsafe fn read_byte(self) -> Option<u8> {
        let base = usize::try_from(self.base).ok()?;
        match self.kind {
            // SAFETY: the caller's contract: `base` is a PL011.
            UartKind::Pl011 => unsafe { Pl011::new(base) }.read_byte(),
            // SAFETY: the caller's contract: `base` is a mini-UART.
            UartKind::Bcm2835Aux => unsafe { MiniUart::new(base) }.read_byte(),
        }
    }

    /// Makes the UART interrupt while received bytes wait.
    ///
    /// # Safety
    /// As for [`ConsoleUart::write_fmt`].
    unsafe fn enable_receive_interrupt(self) {
        let Ok(base) = usize::try_from(self.base) else {
            return;
        };
        match self.kind {
            // SAFETY: the caller's contract: `base` is a PL011.
            UartKind::Pl011 => unsafe { Pl011::new(base) }.enable_receive_interrupt(),
            // SAFETY: the caller's contract: `base` is a mini-UART.
            UartKind::Bcm2835Aux => unsafe { MiniUart::new(base) }.enable_receive_interrupt(),
        }
    }
}

/// The next byte typed on the console, if one waits (the debug system
/// call `DebugGetChar`; the console's interrupt, handed to user space
/// through an IrqHandler, says when to ask).
pub fn read_byte() -> Option<u8> {
    let uart = CONSOLE.get()?;
    let _irqs = registers::mask_irqs();
    let _output = OUTPUT.lock();
    // SAFETY: `install`'s contract covers the installed UART; the output
    // lock keeps this core the only one at its registers.
    unsafe { uart.read_byte() }
}

/// Lets the console's UART raise its interrupt when input arrives (boot).
pub fn enable_input_interrupt() {
    let Some(uart) = CONSOLE.get() else { return };
    let _irqs = registers::mask_irqs();
    let _output = OUTPUT.lock();
    // SAFETY: as in `read_byte`.
    unsafe { uart.enable_receive_interrupt() };
}

/// The console UART, set once when the MMU is on; unset before.
static CONSOLE: Once<ConsoleUart> = Once::new();
/// Serializes output so lines of different cores do not interleave.
static OUTPUT: Mutex<(), YieldRelax> = Mutex::new(());

/// Makes `uart` the console for every core. Only the first call has effect.
///
/// # Safety
/// `uart` satisfies [`ConsoleUart::write_fmt`]'s contract from now on: its
/// registers are mapped as device memory in the EL2 table of every core.
pub unsafe fn install(uart: ConsoleUart) {
    CONSOLE.call_once(|| uart);
}

/// Prints to the console (nothing, before [`install`]).
pub fn print(arguments: fmt::Arguments<'_>) {
    let Some(uart) = CONSOLE.get() else { return };
    let _irqs = registers::mask_irqs();
    let _output = OUTPUT.lock();
    // SAFETY: `install`'s contract covers the installed UART.
    unsafe { uart.write_fmt(arguments) };
}

/// Prints a report from a path that may have interrupted a `print` on this
/// or another core: waits a bounded time for the output lock, then writes
/// without it (the UART accepts bytes from anyone; lines may interleave).
pub fn emergency(arguments: fmt::Arguments<'_>) {
    let Some(uart) = CONSOLE.get() else {
        // Before the console is installed the MMU is off and only the boot
        // core runs: no lock (atomics on Device memory are not reliable),
        // and the board's early UART is the best place to say anything.
        // SAFETY: MMU off, one core: the early UART is reachable at its
        // physical address and nobody else writes it.
        unsafe { crate::boot::early_uart().write_fmt(arguments) };
        return;
    };
    let _irqs = registers::mask_irqs();
    let mut output = None;
    for _attempt in 0..1_000_000 {
        output = OUTPUT.try_lock();
        if output.is_some() {
            break;
        }
        core::hint::spin_loop();
    }
    // SAFETY: `install`'s contract covers the installed UART.
    unsafe { uart.write_fmt(arguments) };
    drop(output);
}

/// `print!` to the hypervisor console.
#[macro_export]
macro_rules! print {
    ($($argument:tt)*) => { $crate::console::print(format_args!($($argument)*)) };
}

/// `println!` to the hypervisor console.
#[macro_export]
macro_rules! println {
    () => { $crate::console::print(format_args!("\n")) };
    ($($argument:tt)*) => {
        $crate::console::print(format_args!("{}\n", format_args!($($argument)*)))
    };
}
