//! Starting and stopping an EL0 program: the entry point, the boot-info
//! page of the root task, and the report of a panic.
//!
//! The kernel starts a program with nothing set up but `sp` and `x0` (for
//! the root task: `sp` = `user_layout::STACK_TOP`, `x0` = the boot-info
//! address), so the entry point is a plain function: [`crate::entry!`] defines
//! `_start` to call the program's `main`. The panic handler cannot live
//! in a library, so a program defines it and calls [`panic_report`], which
//! prints where the panic happened and stops the thread with `udf #0` (the
//! kernel reports an undefined instruction and stops the thread, or sends
//! the fault to its fault endpoint).

use core::fmt;
use core::panic::{Location, PanicInfo};

use hyp_abi::user_layout;

use crate::boot_info::{BOOT_INFO_WORDS, BootInfoError};
use crate::console::DebugConsole;
use crate::syscall;

/// Defines the program's entry point `_start`, which calls `$main`, a
/// `fn(boot_info_address: u64) -> !`, with the `x0` the kernel started
/// the thread with. Only on bare-metal AArch64: on the host it expands to
/// nothing.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        /// The ELF entry point. The kernel sets `sp` and `x0` and nothing
        /// else; a Rust function needs nothing more.
        #[cfg(all(target_arch = "aarch64", target_os = "none"))]
        #[allow(
            unsafe_code,
            reason = "`no_mangle` keeps the name `_start` the linker script enters at"
        )]
        #[unsafe(no_mangle)]
        extern "C" fn _start(boot_info_address: u64) -> ! {
            let main: fn(u64) -> ! = $main;
            main(boot_info_address)
        }
    };
}

/// A copy of the boot-info page, which the root task's entry point
/// receives the address of. Refuses any address but
/// [`user_layout::BOOT_INFO`], where the kernel maps it, and fails on the
/// host (no page). Only the root task has this page.
pub fn read_boot_info_page(address: u64) -> Result<[u64; BOOT_INFO_WORDS], BootInfoError> {
    if address != user_layout::BOOT_INFO {
        return Err(BootInfoError::UnexpectedAddress { address });
    }
    syscall::read_boot_info_page().ok_or(BootInfoError::Unavailable)
}

/// Writes `"<program>: panic: <message> at <file>:<line>"` and a newline
/// to `output`.
pub fn write_panic_report(
    output: &mut impl fmt::Write,
    program: &str,
    message: &dyn fmt::Display,
    location: Option<&Location<'_>>,
) -> fmt::Result {
    match location {
        Some(location) => writeln!(
            output,
            "{program}: panic: {message} at {}:{}",
            location.file(),
            location.line()
        ),
        None => writeln!(output, "{program}: panic: {message}"),
    }
}

/// What a program's `#[panic_handler]` calls: prints the panic report of
/// `program` on the debug console and stops the thread.
pub fn panic_report(program: &str, info: &PanicInfo<'_>) -> ! {
    let mut console = DebugConsole::new();
    let _ = write_panic_report(&mut console, program, &info.message(), info.location());
    console.flush();
    stop()
}

/// Stops the thread for good: `udf #0`, which the kernel reports as an
/// undefined instruction (or sends to the thread's fault endpoint).
pub fn stop() -> ! {
    syscall::undefined_instruction()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::String;

    #[test]
    fn the_panic_report_names_program_message_file_and_line() {
        let mut output = String::new();
        let location = Location::caller();
        write_panic_report(&mut output, "init", &"out of slots", Some(location)).unwrap();
        assert_eq!(
            output,
            std::format!(
                "init: panic: out of slots at {}:{}\n",
                location.file(),
                location.line()
            )
        );
        let mut output = String::new();
        write_panic_report(&mut output, "init", &"lost", None).unwrap();
        assert_eq!(output, "init: panic: lost\n");
    }

    #[test]
    fn the_boot_info_page_is_only_read_at_its_address() {
        assert_eq!(
            read_boot_info_page(0x1000),
            Err(BootInfoError::UnexpectedAddress { address: 0x1000 })
        );
        assert_eq!(
            read_boot_info_page(user_layout::BOOT_INFO),
            Err(BootInfoError::Unavailable),
            "the host has no boot-info page"
        );
    }
}
