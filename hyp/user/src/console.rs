//! Printing from an EL0 program through the kernel's debug console:
//! what one `print!` or `println!` formats is gathered into 64-byte pieces,
//! each sent with one `DebugPutString` system call (a zero byte, which
//! that call would take as the end, goes with `DebugPutChar`). It needs no
//! capability and no memory but the stack, so any thread can report what
//! it does. [`crate::print!`] and [`crate::println!`] format through
//! `core::fmt`.

use core::fmt;

use hyp_abi::DEBUG_STRING_BYTES;

use crate::ipc::{debug_put_char, debug_put_string};

/// The kernel's debug console as a `core::fmt::Write` sink: bytes wait in
/// a 64-byte buffer until it is full or [`DebugConsole::flush`] is called.
#[derive(Debug)]
pub struct DebugConsole {
    buffer: [u8; DEBUG_STRING_BYTES],
    length: usize,
}

impl Default for DebugConsole {
    fn default() -> Self {
        Self::new()
    }
}

impl DebugConsole {
    /// An empty console buffer.
    pub const fn new() -> Self {
        Self {
            buffer: [0; DEBUG_STRING_BYTES],
            length: 0,
        }
    }

    /// Sends what the buffer holds.
    pub fn flush(&mut self) {
        if self.length != 0 {
            debug_put_string(&self.buffer[..self.length]);
            self.length = 0;
        }
    }
}

impl fmt::Write for DebugConsole {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for byte in text.bytes() {
            if byte == 0 {
                self.flush();
                debug_put_char(0);
                continue;
            }
            if self.length == DEBUG_STRING_BYTES {
                self.flush();
            }
            self.buffer[self.length] = byte;
            self.length += 1;
        }
        Ok(())
    }
}

/// Formats `arguments` to the kernel console (the `print!` macros).
pub fn print_arguments(arguments: fmt::Arguments<'_>) {
    let mut console = DebugConsole::new();
    let _ = fmt::Write::write_fmt(&mut console, arguments);
    console.flush();
}

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

    /// The bytes the recorded console system calls carried.
    fn printed() -> std::vec::Vec<u8> {
        let mut bytes = std::vec::Vec::new();
        for request in fake::requests() {
            match request.number {
                Syscall::DebugPutChar => bytes.push(u8::try_from(request.words[0]).unwrap()),
                Syscall::DebugPutString => {
                    let text: std::vec::Vec<u8> = request
                        .words
                        .iter()
                        .flat_map(|word| word.to_le_bytes())
                        .collect();
                    let end = text
                        .iter()
                        .position(|byte| *byte == 0)
                        .unwrap_or(text.len());
                    bytes.extend_from_slice(&text[..end]);
                }
                other => panic!("not a console call: {other:?}"),
            }
        }
        bytes
    }

    #[test]
    fn println_sends_the_line_in_one_call() {
        fake::install_success([0; 8]);
        crate::println!("ok {}", 7);
        assert_eq!(fake::requests().len(), 1);
        assert_eq!(printed(), b"ok 7\n");
        fake::install_success([0; 8]);
        crate::print!("x");
        crate::println!();
        assert_eq!(fake::requests().len(), 2);
        assert_eq!(printed(), b"x\n");
    }

    #[test]
    fn long_text_goes_in_64_byte_pieces_and_a_zero_byte_alone() {
        fake::install_success([0; 8]);
        let long: std::string::String = (0..150)
            .map(|index| char::from(b'a' + index % 26))
            .collect();
        crate::print!("{long}");
        assert_eq!(fake::requests().len(), 3, "64 + 64 + 22 bytes");
        assert_eq!(printed(), long.as_bytes());
        fake::install_success([0; 8]);
        crate::print!("a\0b");
        assert_eq!(printed(), b"a\0b");
        assert_eq!(fake::requests()[1].number, Syscall::DebugPutChar);
    }
}
