//! Printing from an EL0 program through the kernel's debug console, one
//! `DebugPutChar` system call per byte: slow, but it needs no capability
//! and no memory but the stack, so any thread can report what it does.
//! [`crate::print!`] and [`crate::println!`] format through `core::fmt`.

use core::fmt;

use crate::ipc::debug_put_char;

/// The kernel's debug console as a `core::fmt::Write` sink.
#[derive(Clone, Copy, Debug, Default)]
pub struct DebugConsole;

impl fmt::Write for DebugConsole {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for byte in text.bytes() {
            debug_put_char(byte);
        }
        Ok(())
    }
}

/// Writes `arguments` to the debug console. A formatting error of a
/// `Display` implementation ends that line early; nothing else can fail.
pub fn print_arguments(arguments: fmt::Arguments<'_>) {
    let _ = fmt::Write::write_fmt(&mut DebugConsole, arguments);
}

/// Prints to the kernel's debug console, like `std::print!`.
#[macro_export]
macro_rules! print {
    ($($argument:tt)*) => {
        $crate::console::print_arguments(::core::format_args!($($argument)*))
    };
}

/// Prints a line to the kernel's debug console, like `std::println!`.
#[macro_export]
macro_rules! println {
    () => {
        $crate::console::print_arguments(::core::format_args!("\n"))
    };
    ($($argument:tt)*) => {
        $crate::console::print_arguments(::core::format_args!(
            "{}\n",
            ::core::format_args!($($argument)*)
        ))
    };
}

#[cfg(test)]
mod tests {
    use crate::host_kernel::fake;
    use hyp_abi::Syscall;

    #[test]
    fn println_sends_each_byte_and_a_newline() {
        fake::install_success([0; 8]);
        crate::println!("ok {}", 7);
        let bytes: std::vec::Vec<u8> = fake::requests()
            .iter()
            .map(|request| {
                assert_eq!(request.number, Syscall::DebugPutChar);
                u8::try_from(request.words[0]).unwrap()
            })
            .collect();
        assert_eq!(bytes, b"ok 7\n");
        fake::install_success([0; 8]);
        crate::print!("x");
        crate::println!();
        assert_eq!(fake::requests().len(), 2);
    }
}
