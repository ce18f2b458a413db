//! System descriptions: which guests run, with how much memory, how many
//! vCPUs, which kernel, initrd and command line.
//!
//! A description is a small line-based text (`board-configs/systems/*.sys`).
//! The host build tool checks it when it packs an image, and the root task
//! `init` reads it again at boot; so this module allocates nothing and
//! never panics, and its results borrow from the text.
//!
//! # Format
//!
//! ```text
//! # A comment: a line whose first non-blank character is `#`.
//! board qemu-virt
//! guest linux
//!     ram 256M
//!     vcpus 1
//!     kernel linux
//!     initrd initramfs
//!     bootargs console=ttyAMA0 earlycon nokaslr
//!     console-focus
//! guest rust-test
//!     ram 16M
//!     kernel test-guest
//! ```
//!
//! Each line is a keyword and its value, separated by blanks. `board`
//! (required, once) names a board of [`crate::BOARDS`]. `guest NAME`
//! starts a guest; the keywords after it, up to the next `guest`, describe
//! it (indentation is for the reader only):
//!
//! | keyword | value | |
//! | --- | --- | --- |
//! | `ram` | a size: a whole number and `K`, `M` or `G` (`256M`, `1G`, `4096K`), a non-zero multiple of 2 MiB | required |
//! | `vcpus` | a whole number from 1 | default 1 |
//! | `kernel` | an image name | required |
//! | `initrd` | an image name | optional |
//! | `bootargs` | the rest of the line, blanks included | optional |
//! | `console-focus` | none: this guest gets the console input (at most one guest; without one, the first) | optional |
//! | `test-crash-device` | none: its VMM gets a test device at `0x0a00_0000` that crashes the VMM when written (tests only) | optional |
//!
//! Guest names are 1 to 15 bytes of `a-z`, `0-9` and `-`, distinct; there
//! are 1 to [`MAX_GUESTS`] guests. A keyword may appear once per guest.
//!
//! [`parse`] checks the syntax and everything that needs no knowledge of
//! the board or the images: names, duplicates, sizes, the focus.
//! [`validate`] checks a system against [`Limits`]: the images that exist,
//! the board's cores and RAM (and repeats the checks of `parse`, for a
//! [`System`] built by hand). An [`Error`] carries the line it is about
//! and displays as `line N: ...` (or without a line when it is about the
//! whole text: no `board` line, no guests).

use core::fmt;

use heapless::Vec;

/// The most guests a system may have.
pub const MAX_GUESTS: usize = 8;

/// The longest guest name, in bytes.
pub const MAX_NAME_BYTES: usize = 15;

/// Guest RAM comes in multiples of this (the stage-2 block size).
pub const RAM_GRANULE: u64 = 2 << 20;

/// A system: the board and the guests that run on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct System<'a> {
    /// The board's name (one of [`crate::BOARDS`]).
    pub board: &'a str,
    /// The guests, in the order of the text.
    pub guests: Vec<Guest<'a>, MAX_GUESTS>,
}

impl<'a> System<'a> {
    /// The guest that gets the console input: the one with
    /// `console-focus`, or else the first.
    pub fn focus(&self) -> Option<&Guest<'a>> {
        self.guests
            .iter()
            .find(|guest| guest.focus)
            .or_else(|| self.guests.first())
    }

    /// The guest called `name`.
    pub fn guest(&self, name: &str) -> Option<&Guest<'a>> {
        self.guests.iter().find(|guest| guest.name == name)
    }

    /// The RAM of all guests together (saturating).
    pub fn total_ram_bytes(&self) -> u64 {
        self.guests
            .iter()
            .fold(0u64, |total, guest| total.saturating_add(guest.ram_bytes))
    }
}

/// One guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Guest<'a> {
    /// Its name: 1 to [`MAX_NAME_BYTES`] bytes of `a-z`, `0-9`, `-`.
    pub name: &'a str,
    /// Its RAM, a non-zero multiple of [`RAM_GRANULE`].
    pub ram_bytes: u64,
    /// Its virtual CPUs, at least 1.
    pub vcpus: u32,
    /// The image it boots.
    pub kernel: &'a str,
    /// The image loaded as its initial RAM disk, if any.
    pub initrd: Option<&'a str>,
    /// Its kernel command line (empty if none).
    pub bootargs: &'a str,
    /// Whether it gets the console input.
    pub focus: bool,
    /// `test-crash-device`: its VMM has a test device that makes the VMM
    /// panic when the guest writes to it (for the test that a VMM's crash
    /// stops its guest alone).
    pub crash_device: bool,
    /// Where it is described, for error messages.
    pub lines: GuestLines,
}

/// The line numbers (from 1) of a guest's keywords; a keyword that is
/// absent has the line of its `guest`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestLines {
    /// `guest`.
    pub guest: usize,
    /// `ram`.
    pub ram: usize,
    /// `vcpus`.
    pub vcpus: usize,
    /// `kernel`.
    pub kernel: usize,
    /// `initrd`.
    pub initrd: usize,
    /// `console-focus`.
    pub focus: usize,
}

/// What a system may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits<'a> {
    /// The board's cores: no guest may have more vCPUs.
    pub cores: u32,
    /// The RAM the guests may have together.
    pub ram_bytes: u64,
    /// The names of the images there are (kernels, initrds).
    pub images: &'a [&'a str],
}

/// A description that is malformed or does not fit: the line it is about
/// (from 1; `None` for the whole text) and what is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Error<'a> {
    /// The line, or `None` if the error is about the whole text.
    pub line: Option<usize>,
    /// What is wrong.
    pub kind: ErrorKind<'a>,
}

/// What is wrong with a system description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind<'a> {
    /// A line starts with a word that is no keyword.
    UnknownKeyword {
        /// The word.
        word: &'a str,
    },
    /// A keyword that needs a value has none.
    MissingValue {
        /// The keyword.
        keyword: &'static str,
    },
    /// A keyword that takes one word has more.
    ExtraValue {
        /// The keyword.
        keyword: &'static str,
        /// Everything after it.
        value: &'a str,
    },
    /// `console-focus` has a value.
    UnexpectedValue {
        /// The keyword.
        keyword: &'static str,
        /// Everything after it.
        value: &'a str,
    },
    /// A guest keyword before the first `guest`.
    OutsideGuest {
        /// The keyword.
        keyword: &'static str,
    },
    /// A keyword given twice (for the same guest, or `board`).
    DuplicateKeyword {
        /// The guest, for guest keywords.
        guest: Option<&'a str>,
        /// The keyword.
        keyword: &'static str,
        /// The line of its first appearance.
        first_line: usize,
    },
    /// No `board` line.
    MissingBoard,
    /// The board is not one of [`crate::BOARDS`].
    UnknownBoard {
        /// The name given.
        name: &'a str,
    },
    /// A `ram` value that is not a size.
    BadSize {
        /// The guest.
        guest: &'a str,
        /// The value.
        value: &'a str,
    },
    /// RAM that is zero or not a multiple of 2 MiB.
    RamNotMultiple {
        /// The guest.
        guest: &'a str,
        /// Its RAM.
        bytes: u64,
    },
    /// A `vcpus` value that is not a whole number.
    BadCount {
        /// The guest.
        guest: &'a str,
        /// The value.
        value: &'a str,
    },
    /// Zero vCPUs.
    NoVcpus {
        /// The guest.
        guest: &'a str,
    },
    /// A guest without a required keyword (`ram`, `kernel`).
    MissingKeyword {
        /// The guest.
        guest: &'a str,
        /// The keyword.
        keyword: &'static str,
    },
    /// More than [`MAX_GUESTS`] guests.
    TooManyGuests,
    /// Two guests with the same name.
    DuplicateGuest {
        /// The name.
        name: &'a str,
        /// The line of the first.
        first_line: usize,
    },
    /// A guest name longer than [`MAX_NAME_BYTES`].
    NameTooLong {
        /// The name.
        name: &'a str,
    },
    /// A guest name that is empty or has characters other than `a-z`,
    /// `0-9`, `-`.
    BadName {
        /// The name.
        name: &'a str,
    },
    /// No guests at all.
    NoGuests,
    /// A second guest with `console-focus`.
    SecondFocus {
        /// The second guest.
        guest: &'a str,
        /// The first guest with it.
        first: &'a str,
        /// The line of the first guest's `console-focus`.
        first_line: usize,
    },
    /// A kernel or initrd that is not among [`Limits::images`].
    UnknownImage {
        /// The guest.
        guest: &'a str,
        /// The image name.
        image: &'a str,
        /// The images there are.
        images: &'a [&'a str],
    },
    /// More vCPUs than the board has cores.
    TooManyVcpus {
        /// The guest.
        guest: &'a str,
        /// Its vCPUs.
        vcpus: u32,
        /// The board's cores.
        cores: u32,
    },
    /// The guests' RAM, up to and including this guest, exceeds the
    /// board's.
    TooMuchRam {
        /// The guest that makes it too much.
        guest: &'a str,
        /// The RAM of the guests up to it.
        total: u128,
        /// What the board has for them.
        limit: u64,
    },
}

impl<'a> Error<'a> {
    const fn at(line: usize, kind: ErrorKind<'a>) -> Self {
        Self {
            line: Some(line),
            kind,
        }
    }

    const fn whole(kind: ErrorKind<'a>) -> Self {
        Self { line: None, kind }
    }
}

/// A number of bytes, displayed in the largest binary unit that divides
/// it (`256 MiB`, `1 GiB`, `4097 KiB`, `100 bytes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Size(u128);

impl fmt::Display for Size {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0;
        for (unit, name) in [(1u128 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")] {
            if bytes != 0 && bytes.is_multiple_of(unit) {
                return write!(formatter, "{} {name}", bytes / unit);
            }
        }
        write!(formatter, "{bytes} bytes")
    }
}

/// `n` and the noun, with an `s` unless `n` is 1.
struct Count(u32, &'static str);

impl fmt::Display for Count {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.0 == 1 { "" } else { "s" };
        write!(formatter, "{} {}{plural}", self.0, self.1)
    }
}

/// Words separated by `, `.
struct List<'a, I>(I, &'a str);

impl<'a, I> fmt::Display for List<'a, I>
where
    I: Iterator<Item = &'a str> + Clone,
{
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut any = false;
        for (index, word) in self.0.clone().enumerate() {
            if index > 0 {
                formatter.write_str(", ")?;
            }
            formatter.write_str(word)?;
            any = true;
        }
        if !any {
            formatter.write_str(self.1)?;
        }
        Ok(())
    }
}

impl fmt::Display for ErrorKind<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::UnknownKeyword { word } => write!(
                formatter,
                "unknown keyword \"{word}\" (the keywords are board, guest, ram, vcpus, kernel, \
                 initrd, bootargs and console-focus)"
            ),
            Self::MissingValue { keyword } => write!(formatter, "\"{keyword}\" needs a value"),
            Self::ExtraValue { keyword, value } => {
                write!(formatter, "\"{keyword}\" takes one word, found \"{value}\"")
            }
            Self::UnexpectedValue { keyword, value } => {
                write!(formatter, "\"{keyword}\" takes no value, found \"{value}\"")
            }
            Self::OutsideGuest { keyword } => write!(
                formatter,
                "\"{keyword}\" before any \"guest\" line: it describes a guest"
            ),
            Self::DuplicateKeyword {
                guest,
                keyword,
                first_line,
            } => {
                if let Some(guest) = guest {
                    write!(formatter, "guest \"{guest}\": ")?;
                }
                write!(
                    formatter,
                    "second \"{keyword}\" line (the first is line {first_line})"
                )
            }
            Self::MissingBoard => formatter.write_str("no \"board\" line"),
            Self::UnknownBoard { name } => write!(
                formatter,
                "unknown board \"{name}\" (known boards: {})",
                List(crate::BOARDS.iter().map(|board| board.name), "none")
            ),
            Self::BadSize { guest, value } => write!(
                formatter,
                "guest \"{guest}\": bad size \"{value}\": write a whole number and K, M or G \
                 (like 256M, 1G or 4096K)"
            ),
            Self::RamNotMultiple { guest, bytes } => write!(
                formatter,
                "guest \"{guest}\": RAM must be a non-zero multiple of 2 MiB, not {}",
                Size(u128::from(bytes))
            ),
            Self::BadCount { guest, value } => write!(
                formatter,
                "guest \"{guest}\": bad vCPU count \"{value}\": write a whole number from 1"
            ),
            Self::NoVcpus { guest } => {
                write!(formatter, "guest \"{guest}\": needs at least 1 vCPU")
            }
            Self::MissingKeyword { guest, keyword } => {
                write!(formatter, "guest \"{guest}\" has no \"{keyword}\" line")
            }
            Self::TooManyGuests => write!(formatter, "more than {MAX_GUESTS} guests"),
            Self::DuplicateGuest { name, first_line } => write!(
                formatter,
                "guest \"{name}\" is defined twice (first on line {first_line})"
            ),
            Self::NameTooLong { name } => write!(
                formatter,
                "guest name \"{name}\" is longer than {MAX_NAME_BYTES} bytes"
            ),
            Self::BadName { name } => write!(
                formatter,
                "guest name \"{name}\" may only contain a-z, 0-9 and \"-\""
            ),
            Self::NoGuests => formatter.write_str("no guests: a system needs a \"guest\" line"),
            Self::SecondFocus {
                guest,
                first,
                first_line,
            } => write!(
                formatter,
                "guest \"{guest}\": console-focus, but guest \"{first}\" has it already \
                 (line {first_line})"
            ),
            Self::UnknownImage {
                guest,
                image,
                images,
            } => write!(
                formatter,
                "guest \"{guest}\": unknown image \"{image}\" (known images: {})",
                List(images.iter().copied(), "none")
            ),
            Self::TooManyVcpus {
                guest,
                vcpus,
                cores,
            } => write!(
                formatter,
                "guest \"{guest}\": {} but the board has {}",
                Count(vcpus, "vCPU"),
                Count(cores, "core")
            ),
            Self::TooMuchRam {
                guest,
                total,
                limit,
            } => write!(
                formatter,
                "guest \"{guest}\": the guests' RAM adds up to {} but the board has {}",
                Size(total),
                Size(u128::from(limit))
            ),
        }
    }
}

impl fmt::Display for Error<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(formatter, "line {line}: ")?;
        }
        fmt::Display::fmt(&self.kind, formatter)
    }
}

/// The keywords, by the name written in the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keyword {
    Board,
    Guest,
    Ram,
    Vcpus,
    Kernel,
    Initrd,
    Bootargs,
    ConsoleFocus,
    CrashDevice,
}

impl Keyword {
    fn from_word(word: &str) -> Option<Self> {
        Some(match word {
            "board" => Self::Board,
            "guest" => Self::Guest,
            "ram" => Self::Ram,
            "vcpus" => Self::Vcpus,
            "kernel" => Self::Kernel,
            "initrd" => Self::Initrd,
            "bootargs" => Self::Bootargs,
            "console-focus" => Self::ConsoleFocus,
            "test-crash-device" => Self::CrashDevice,
            _ => return None,
        })
    }

    const fn name(self) -> &'static str {
        match self {
            Self::Board => "board",
            Self::Guest => "guest",
            Self::Ram => "ram",
            Self::Vcpus => "vcpus",
            Self::Kernel => "kernel",
            Self::Initrd => "initrd",
            Self::Bootargs => "bootargs",
            Self::ConsoleFocus => "console-focus",
            Self::CrashDevice => "test-crash-device",
        }
    }
}

/// A guest being read: each keyword's value and line once seen.
struct Draft<'a> {
    name: &'a str,
    line: usize,
    ram: Option<(u64, usize)>,
    vcpus: Option<(u32, usize)>,
    kernel: Option<(&'a str, usize)>,
    initrd: Option<(&'a str, usize)>,
    bootargs: Option<(&'a str, usize)>,
    focus: Option<usize>,
    crash_device: Option<usize>,
}

impl<'a> Draft<'a> {
    const fn new(name: &'a str, line: usize) -> Self {
        Self {
            name,
            line,
            ram: None,
            vcpus: None,
            kernel: None,
            initrd: None,
            bootargs: None,
            focus: None,
            crash_device: None,
        }
    }

    /// The guest, if it has everything it needs.
    fn finish(self) -> Result<Guest<'a>, Error<'a>> {
        let missing = |keyword: &'static str| {
            Error::at(
                self.line,
                ErrorKind::MissingKeyword {
                    guest: self.name,
                    keyword,
                },
            )
        };
        let (ram_bytes, ram_line) = self.ram.ok_or_else(|| missing("ram"))?;
        let (kernel, kernel_line) = self.kernel.ok_or_else(|| missing("kernel"))?;
        let (vcpus, vcpus_line) = self.vcpus.unwrap_or((1, self.line));
        Ok(Guest {
            name: self.name,
            ram_bytes,
            vcpus,
            kernel,
            initrd: self.initrd.map(|(image, _)| image),
            bootargs: self.bootargs.map_or("", |(bootargs, _)| bootargs),
            focus: self.focus.is_some(),
            crash_device: self.crash_device.is_some(),
            lines: GuestLines {
                guest: self.line,
                ram: ram_line,
                vcpus: vcpus_line,
                kernel: kernel_line,
                initrd: self.initrd.map_or(self.line, |(_, line)| line),
                focus: self.focus.unwrap_or(self.line),
            },
        })
    }
}

/// Splits `text` (trimmed) into its first word and the rest (trimmed).
fn first_word(text: &str) -> (&str, &str) {
    match text.find(|c: char| c.is_ascii_whitespace()) {
        Some(end) => {
            let (word, rest) = text.split_at(end);
            (word, rest.trim_start())
        }
        None => (text, ""),
    }
}

/// The single word of a keyword's value.
fn one_word<'a>(keyword: Keyword, value: &'a str, line: usize) -> Result<&'a str, Error<'a>> {
    if value.is_empty() {
        return Err(Error::at(
            line,
            ErrorKind::MissingValue {
                keyword: keyword.name(),
            },
        ));
    }
    if value.contains(|c: char| c.is_ascii_whitespace()) {
        return Err(Error::at(
            line,
            ErrorKind::ExtraValue {
                keyword: keyword.name(),
                value,
            },
        ));
    }
    Ok(value)
}

/// Parses a size: decimal digits and `K`, `M` or `G`. `None` if it is
/// not one or does not fit in 64 bits.
pub fn parse_size(text: &str) -> Option<u64> {
    let (digits, shift) = match text.as_bytes().last()? {
        b'K' => (text.get(..text.len() - 1)?, 10),
        b'M' => (text.get(..text.len() - 1)?, 20),
        b'G' => (text.get(..text.len() - 1)?, 30),
        _ => return None,
    };
    let number = parse_decimal(digits)?;
    number.checked_mul(1u64 << shift)
}

/// Parses a whole decimal number: digits only (no sign, no blanks).
fn parse_decimal(digits: &str) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.bytes().try_fold(0u64, |number, digit| {
        if digit.is_ascii_digit() {
            number.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
        } else {
            None
        }
    })
}

/// Checks a guest name.
fn check_name(name: &str, line: usize) -> Result<(), Error<'_>> {
    if name.len() > MAX_NAME_BYTES {
        return Err(Error::at(line, ErrorKind::NameTooLong { name }));
    }
    let allowed = |byte: u8| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-';
    if name.is_empty() || !name.bytes().all(allowed) {
        return Err(Error::at(line, ErrorKind::BadName { name }));
    }
    Ok(())
}

/// Checks a guest's RAM.
fn check_ram<'a>(guest: &'a str, bytes: u64, line: usize) -> Result<(), Error<'a>> {
    if bytes == 0 || !bytes.is_multiple_of(RAM_GRANULE) {
        return Err(Error::at(line, ErrorKind::RamNotMultiple { guest, bytes }));
    }
    Ok(())
}

/// Checks that `guest` (the next in `earlier`'s order) does not repeat a
/// name or the console focus of the guests before it.
fn check_against_earlier<'a>(earlier: &[Guest<'a>], guest: &Guest<'a>) -> Result<(), Error<'a>> {
    if let Some(first) = earlier.iter().find(|other| other.name == guest.name) {
        return Err(Error::at(
            guest.lines.guest,
            ErrorKind::DuplicateGuest {
                name: guest.name,
                first_line: first.lines.guest,
            },
        ));
    }
    if guest.focus
        && let Some(first) = earlier.iter().find(|other| other.focus)
    {
        return Err(Error::at(
            guest.lines.focus,
            ErrorKind::SecondFocus {
                guest: guest.name,
                first: first.name,
                first_line: first.lines.focus,
            },
        ));
    }
    Ok(())
}

/// Reads a system description. See the [module documentation](self) for
/// the format; the first problem found, in the order of the text, is the
/// error.
pub fn parse(text: &str) -> Result<System<'_>, Error<'_>> {
    let mut board: Option<(&str, usize)> = None;
    let mut guests: Vec<Guest<'_>, MAX_GUESTS> = Vec::new();
    let mut draft: Option<Draft<'_>> = None;

    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let (word, value) = first_word(content);
        let Some(keyword) = Keyword::from_word(word) else {
            return Err(Error::at(line, ErrorKind::UnknownKeyword { word }));
        };
        match keyword {
            Keyword::Board => {
                let name = one_word(keyword, value, line)?;
                if let Some((_, first_line)) = board {
                    return Err(Error::at(
                        line,
                        ErrorKind::DuplicateKeyword {
                            guest: None,
                            keyword: keyword.name(),
                            first_line,
                        },
                    ));
                }
                if crate::find(name).is_none() {
                    return Err(Error::at(line, ErrorKind::UnknownBoard { name }));
                }
                board = Some((name, line));
                continue;
            }
            Keyword::Guest => {
                let name = one_word(keyword, value, line)?;
                check_name(name, line)?;
                if let Some(previous) = draft.take() {
                    finish_guest(&mut guests, previous)?;
                }
                if guests.len() == MAX_GUESTS {
                    return Err(Error::at(line, ErrorKind::TooManyGuests));
                }
                if let Some(first) = guests.iter().find(|guest| guest.name == name) {
                    return Err(Error::at(
                        line,
                        ErrorKind::DuplicateGuest {
                            name,
                            first_line: first.lines.guest,
                        },
                    ));
                }
                draft = Some(Draft::new(name, line));
                continue;
            }
            _ => {}
        }
        // A guest keyword.
        let Some(guest) = draft.as_mut() else {
            return Err(Error::at(
                line,
                ErrorKind::OutsideGuest {
                    keyword: keyword.name(),
                },
            ));
        };
        let first_line = match keyword {
            Keyword::Ram => guest.ram.map(|(_, line)| line),
            Keyword::Vcpus => guest.vcpus.map(|(_, line)| line),
            Keyword::Kernel => guest.kernel.map(|(_, line)| line),
            Keyword::Initrd => guest.initrd.map(|(_, line)| line),
            Keyword::Bootargs => guest.bootargs.map(|(_, line)| line),
            Keyword::CrashDevice => guest.crash_device,
            _ => guest.focus,
        };
        if let Some(first_line) = first_line {
            return Err(Error::at(
                line,
                ErrorKind::DuplicateKeyword {
                    guest: Some(guest.name),
                    keyword: keyword.name(),
                    first_line,
                },
            ));
        }
        match keyword {
            Keyword::Ram => {
                let value = one_word(keyword, value, line)?;
                let bytes = parse_size(value).ok_or(Error::at(
                    line,
                    ErrorKind::BadSize {
                        guest: guest.name,
                        value,
                    },
                ))?;
                check_ram(guest.name, bytes, line)?;
                guest.ram = Some((bytes, line));
            }
            Keyword::Vcpus => {
                let value = one_word(keyword, value, line)?;
                let bad = Error::at(
                    line,
                    ErrorKind::BadCount {
                        guest: guest.name,
                        value,
                    },
                );
                let vcpus = parse_decimal(value)
                    .and_then(|count| u32::try_from(count).ok())
                    .ok_or(bad)?;
                if vcpus == 0 {
                    return Err(Error::at(line, ErrorKind::NoVcpus { guest: guest.name }));
                }
                guest.vcpus = Some((vcpus, line));
            }
            Keyword::Kernel => guest.kernel = Some((one_word(keyword, value, line)?, line)),
            Keyword::Initrd => guest.initrd = Some((one_word(keyword, value, line)?, line)),
            Keyword::Bootargs => {
                if value.is_empty() {
                    return Err(Error::at(
                        line,
                        ErrorKind::MissingValue {
                            keyword: keyword.name(),
                        },
                    ));
                }
                guest.bootargs = Some((value, line));
            }
            Keyword::CrashDevice => {
                if !value.is_empty() {
                    return Err(Error::at(
                        line,
                        ErrorKind::UnexpectedValue {
                            keyword: keyword.name(),
                            value,
                        },
                    ));
                }
                guest.crash_device = Some(line);
            }
            _ => {
                if !value.is_empty() {
                    return Err(Error::at(
                        line,
                        ErrorKind::UnexpectedValue {
                            keyword: keyword.name(),
                            value,
                        },
                    ));
                }
                if let Some(first) = guests.iter().find(|guest| guest.focus) {
                    return Err(Error::at(
                        line,
                        ErrorKind::SecondFocus {
                            guest: guest.name,
                            first: first.name,
                            first_line: first.lines.focus,
                        },
                    ));
                }
                guest.focus = Some(line);
            }
        }
    }
    if let Some(last) = draft.take() {
        finish_guest(&mut guests, last)?;
    }
    let Some((board, _)) = board else {
        return Err(Error::whole(ErrorKind::MissingBoard));
    };
    if guests.is_empty() {
        return Err(Error::whole(ErrorKind::NoGuests));
    }
    Ok(System { board, guests })
}

/// Completes `draft` and appends it to `guests`.
fn finish_guest<'a>(
    guests: &mut Vec<Guest<'a>, MAX_GUESTS>,
    draft: Draft<'a>,
) -> Result<(), Error<'a>> {
    let line = draft.line;
    let guest = draft.finish()?;
    guests
        .push(guest)
        .map_err(|_| Error::at(line, ErrorKind::TooManyGuests))
}

/// Checks `system` against `limits`: every kernel and initrd is one of
/// `limits.images`, no guest has more vCPUs than `limits.cores`, and the
/// guests' RAM together fits in `limits.ram_bytes`. It first repeats the
/// checks [`parse`] makes (a known board, at least one guest, names,
/// duplicates, RAM sizes, vCPUs, the console focus), so a [`System`] built
/// by hand is checked as thoroughly. The first problem, guest by guest, is
/// the error.
pub fn validate<'a>(system: &System<'a>, limits: &Limits<'a>) -> Result<(), Error<'a>> {
    if crate::find(system.board).is_none() {
        return Err(Error::whole(ErrorKind::UnknownBoard { name: system.board }));
    }
    if system.guests.is_empty() {
        return Err(Error::whole(ErrorKind::NoGuests));
    }
    let mut total = 0u128;
    for (index, guest) in system.guests.iter().enumerate() {
        let lines = &guest.lines;
        check_name(guest.name, lines.guest)?;
        check_against_earlier(system.guests.get(..index).unwrap_or(&[]), guest)?;
        check_ram(guest.name, guest.ram_bytes, lines.ram)?;
        if guest.vcpus == 0 {
            return Err(Error::at(
                lines.vcpus,
                ErrorKind::NoVcpus { guest: guest.name },
            ));
        }
        if guest.kernel.is_empty() {
            return Err(Error::at(
                lines.guest,
                ErrorKind::MissingKeyword {
                    guest: guest.name,
                    keyword: "kernel",
                },
            ));
        }
        let images = [
            (Some(guest.kernel), lines.kernel),
            (guest.initrd, lines.initrd),
        ];
        for (image, line) in images {
            if let Some(image) = image
                && !limits.images.contains(&image)
            {
                return Err(Error::at(
                    line,
                    ErrorKind::UnknownImage {
                        guest: guest.name,
                        image,
                        images: limits.images,
                    },
                ));
            }
        }
        if guest.vcpus > limits.cores {
            return Err(Error::at(
                lines.vcpus,
                ErrorKind::TooManyVcpus {
                    guest: guest.name,
                    vcpus: guest.vcpus,
                    cores: limits.cores,
                },
            ));
        }
        total += u128::from(guest.ram_bytes);
        if total > u128::from(limits.ram_bytes) {
            return Err(Error::at(
                lines.ram,
                ErrorKind::TooMuchRam {
                    guest: guest.name,
                    total,
                    limit: limits.ram_bytes,
                },
            ));
        }
    }
    Ok(())
}

/// The system descriptions shipped in `board-configs/systems/`.
pub mod shipped {
    /// `default.sys`: the Linux guest and the Rust test guest.
    pub const DEFAULT: &str = include_str!("../systems/default.sys");
    /// `test-guest.sys`: the Rust test guest alone.
    pub const TEST_GUEST: &str = include_str!("../systems/test-guest.sys");
    /// `vmm-crash.sys`: the Linux guest beside a Rust test guest that
    /// crashes its own VMM.
    pub const VMM_CRASH: &str = include_str!("../systems/vmm-crash.sys");
    /// `linux-bench.sys`: the Linux guest alone, powering off at its
    /// `/init` (`bench-poweroff`), for `cargo xtask bench-linux`.
    pub const LINUX_BENCH: &str = include_str!("../systems/linux-bench.sys");
    /// `linux-smp.sys`: the Linux guest with two vCPUs.
    pub const LINUX_SMP: &str = include_str!("../systems/linux-smp.sys");
    /// Every shipped description, by name (the file name without `.sys`).
    pub const ALL: &[(&str, &str)] = &[
        ("default", DEFAULT),
        ("test-guest", TEST_GUEST),
        ("vmm-crash", VMM_CRASH),
        ("linux-bench", LINUX_BENCH),
        ("linux-smp", LINUX_SMP),
    ];
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::format;
    use std::string::{String, ToString};
    use std::vec::Vec as StdVec;

    use super::*;

    const IMAGES: &[&str] = &["linux", "initramfs", "test-guest"];
    const VIRT: Limits<'static> = Limits {
        cores: 4,
        ram_bytes: 1 << 30,
        images: IMAGES,
    };

    /// The message of the error `parse` gives for `text`.
    fn parse_error(text: &str) -> String {
        match parse(text) {
            Ok(system) => panic!("parsed {system:?}"),
            Err(error) => error.to_string(),
        }
    }

    /// The message of the error `validate` gives for `text` and `limits`.
    fn validate_error(text: &str, limits: &Limits<'_>) -> String {
        let system = parse(text).unwrap();
        validate(&system, limits).unwrap_err().to_string()
    }

    /// `board qemu-virt` and one guest `a` with the lines `body`.
    fn one_guest(body: &str) -> String {
        format!("board qemu-virt\nguest a\n{body}")
    }

    #[test]
    fn parses_the_default_system() {
        let system = parse(shipped::DEFAULT).unwrap();
        assert_eq!(system.board, "qemu-virt");
        assert_eq!(system.guests.len(), 2);
        assert_eq!(
            system.guests[0],
            Guest {
                name: "linux",
                ram_bytes: 256 << 20,
                vcpus: 1,
                kernel: "linux",
                initrd: Some("initramfs"),
                bootargs: "console=ttyAMA0 earlycon nokaslr",
                focus: true,
                crash_device: false,
                lines: GuestLines {
                    guest: 5,
                    ram: 6,
                    vcpus: 7,
                    kernel: 8,
                    initrd: 9,
                    focus: 11,
                },
            }
        );
        assert_eq!(
            system.guests[1],
            Guest {
                name: "rust-test",
                ram_bytes: 16 << 20,
                vcpus: 1,
                kernel: "test-guest",
                initrd: None,
                bootargs: "probe=0x48000000",
                focus: false,
                crash_device: false,
                lines: GuestLines {
                    guest: 16,
                    ram: 17,
                    vcpus: 18,
                    kernel: 19,
                    initrd: 16,
                    focus: 16,
                },
            }
        );
        assert_eq!(system.focus().map(|guest| guest.name), Some("linux"));
        assert_eq!(
            system.guest("rust-test").map(|guest| guest.ram_bytes),
            Some(16 << 20)
        );
        assert!(system.guest("rust").is_none());
        assert_eq!(system.total_ram_bytes(), 272 << 20);
        validate(&system, &VIRT).unwrap();
    }

    #[test]
    fn parses_the_test_guest_system() {
        let system = parse(shipped::TEST_GUEST).unwrap();
        assert_eq!(system.board, "qemu-virt");
        assert_eq!(system.guests.len(), 1);
        let guest = &system.guests[0];
        assert_eq!(
            (guest.name, guest.ram_bytes, guest.vcpus, guest.kernel),
            ("rust-test", 16 << 20, 1, "test-guest")
        );
        assert_eq!(
            (guest.initrd, guest.bootargs, guest.focus),
            (None, "", false)
        );
        // Without console-focus the first guest has the console.
        assert_eq!(system.focus().map(|guest| guest.name), Some("rust-test"));
        validate(&system, &VIRT).unwrap();
        // It fits a single core and 16 MiB.
        let small = Limits {
            cores: 1,
            ram_bytes: 16 << 20,
            images: &["test-guest"],
        };
        validate(&system, &small).unwrap();
    }

    #[test]
    fn every_shipped_system_is_valid() {
        assert_eq!(shipped::ALL.len(), 5);
        for (name, text) in shipped::ALL {
            let system = parse(text).unwrap_or_else(|error| panic!("{name}.sys: {error}"));
            validate(&system, &VIRT).unwrap_or_else(|error| panic!("{name}.sys: {error}"));
        }
        let crash = parse(shipped::VMM_CRASH).unwrap();
        assert!(crash.guest("rust-test").unwrap().crash_device);
        assert!(!crash.guest("linux").unwrap().crash_device);
        let bench = parse(shipped::LINUX_BENCH).unwrap();
        assert_eq!(bench.guests.len(), 1);
        assert!(bench.guests[0].bootargs.ends_with(" bench-poweroff"));
    }

    #[test]
    fn the_crash_device_takes_no_value_and_comes_once() {
        let text =
            "board qemu-virt\nguest a\n    ram 2M\n    kernel k\n    test-crash-device now\n";
        assert_eq!(
            parse(text).unwrap_err().to_string(),
            "line 5: \"test-crash-device\" takes no value, found \"now\""
        );
        let twice = "board qemu-virt\nguest a\n    ram 2M\n    kernel k\n    test-crash-device\n    test-crash-device\n";
        assert!(
            parse(twice)
                .unwrap_err()
                .to_string()
                .starts_with("line 6: ")
        );
    }

    #[test]
    fn layout_is_free() {
        let text = "\r\n  # comment\r\n\tboard   qemu-virt  \r\nguest a\r\nram 2M\r\n\
                    kernel linux\r\n   bootargs  a=1   b  #c  \r\n#guest b\r\nguest b\n\
                    \t\tram\t4096K\n kernel test-guest\n initrd initramfs\n vcpus 4\n\
                    console-focus";
        let system = parse(text).unwrap();
        assert_eq!(system.board, "qemu-virt");
        let [a, b] = [&system.guests[0], &system.guests[1]];
        assert_eq!(
            (a.name, a.ram_bytes, a.vcpus, a.kernel),
            ("a", 2 << 20, 1, "linux")
        );
        // bootargs: the rest of the line, inner blanks and `#` kept.
        assert_eq!(a.bootargs, "a=1   b  #c");
        assert_eq!(a.lines.vcpus, 4);
        assert_eq!(
            (b.name, b.ram_bytes, b.vcpus, b.initrd),
            ("b", 4 << 20, 4, Some("initramfs"))
        );
        assert_eq!((b.lines.guest, b.lines.focus), (9, 14));
        assert_eq!(system.focus().map(|guest| guest.name), Some("b"));
        validate(&system, &VIRT).unwrap();
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256M"), Some(256 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("4096K"), Some(4 << 20));
        assert_eq!(parse_size("2048K"), Some(2 << 20));
        assert_eq!(parse_size("0M"), Some(0));
        assert_eq!(parse_size("007M"), Some(7 << 20));
        assert_eq!(parse_size("16777215G"), Some(16_777_215 << 30));
        for bad in [
            "",
            "M",
            "256",
            "256MB",
            "256m",
            "1.5G",
            "-2M",
            "+2M",
            " 2M",
            "2 M",
            "0x10M",
            "2T",
            "½M",
            "17179869184G",
            "18446744073709551616K",
        ] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn size_display() {
        assert_eq!(Size(1 << 30).to_string(), "1 GiB");
        assert_eq!(Size(3 << 30).to_string(), "3 GiB");
        assert_eq!(Size(1536 << 20).to_string(), "1536 MiB");
        assert_eq!(Size(4097 << 10).to_string(), "4097 KiB");
        assert_eq!(Size(100).to_string(), "100 bytes");
        assert_eq!(Size(0).to_string(), "0 bytes");
    }

    #[test]
    fn rejects_an_unknown_keyword() {
        assert_eq!(
            parse_error(&one_guest("  memory 16M\n")),
            "line 3: unknown keyword \"memory\" (the keywords are board, guest, ram, vcpus, \
             kernel, initrd, bootargs and console-focus)"
        );
        // Keywords are case-sensitive.
        assert_eq!(
            parse_error("Board qemu-virt\n"),
            "line 1: unknown keyword \"Board\" (the keywords are board, guest, ram, vcpus, \
             kernel, initrd, bootargs and console-focus)"
        );
    }

    #[test]
    fn rejects_a_missing_value() {
        assert_eq!(
            parse_error(&one_guest("  ram\n")),
            "line 3: \"ram\" needs a value"
        );
        assert_eq!(
            parse_error(&one_guest("  vcpus \n")),
            "line 3: \"vcpus\" needs a value"
        );
        assert_eq!(
            parse_error(&one_guest("  kernel\n")),
            "line 3: \"kernel\" needs a value"
        );
        assert_eq!(
            parse_error(&one_guest("  initrd\n")),
            "line 3: \"initrd\" needs a value"
        );
        assert_eq!(
            parse_error(&one_guest("  bootargs   \n")),
            "line 3: \"bootargs\" needs a value"
        );
        assert_eq!(
            parse_error("board qemu-virt\nguest\n"),
            "line 2: \"guest\" needs a value"
        );
        assert_eq!(parse_error("board\n"), "line 1: \"board\" needs a value");
    }

    #[test]
    fn rejects_more_than_one_word() {
        assert_eq!(
            parse_error(&one_guest("  kernel linux extra\n")),
            "line 3: \"kernel\" takes one word, found \"linux extra\""
        );
        assert_eq!(
            parse_error("board qemu-virt rpi4\n"),
            "line 1: \"board\" takes one word, found \"qemu-virt rpi4\""
        );
        assert_eq!(
            parse_error("board qemu-virt\nguest linux two\n"),
            "line 2: \"guest\" takes one word, found \"linux two\""
        );
        assert_eq!(
            parse_error(&one_guest("  ram 256 M\n")),
            "line 3: \"ram\" takes one word, found \"256 M\""
        );
        assert_eq!(
            parse_error(&one_guest("  console-focus yes\n")),
            "line 3: \"console-focus\" takes no value, found \"yes\""
        );
    }

    #[test]
    fn rejects_guest_keywords_before_a_guest() {
        assert_eq!(
            parse_error("board qemu-virt\nram 16M\nguest a\n"),
            "line 2: \"ram\" before any \"guest\" line: it describes a guest"
        );
        assert_eq!(
            parse_error("console-focus\n"),
            "line 1: \"console-focus\" before any \"guest\" line: it describes a guest"
        );
    }

    #[test]
    fn rejects_a_repeated_keyword() {
        assert_eq!(
            parse_error(&one_guest("  ram 16M\n  kernel linux\n  ram 32M\n")),
            "line 5: guest \"a\": second \"ram\" line (the first is line 3)"
        );
        assert_eq!(
            parse_error(&one_guest("  bootargs a\n  bootargs b\n")),
            "line 4: guest \"a\": second \"bootargs\" line (the first is line 3)"
        );
        assert_eq!(
            parse_error(&one_guest("  console-focus\n  console-focus\n")),
            "line 4: guest \"a\": second \"console-focus\" line (the first is line 3)"
        );
        assert_eq!(
            parse_error("board qemu-virt\nguest a\n  ram 2M\n  kernel linux\nboard qemu-virt\n"),
            "line 5: second \"board\" line (the first is line 1)"
        );
    }

    #[test]
    fn rejects_a_missing_or_unknown_board() {
        assert_eq!(
            parse_error("guest a\n  ram 2M\n  kernel linux\n"),
            "no \"board\" line"
        );
        assert_eq!(
            parse_error("# x\nboard qemu\n"),
            "line 2: unknown board \"qemu\" (known boards: qemu-virt, rpi4)"
        );
        parse("board rpi4\nguest a\n ram 2M\n kernel linux\n").unwrap();
    }

    #[test]
    fn rejects_bad_size_syntax() {
        for bad in [
            "256",
            "256MB",
            "1.5G",
            "0x10M",
            "-2M",
            "256m",
            "2T",
            "99999999999G",
        ] {
            assert_eq!(
                parse_error(&one_guest(&format!("  ram {bad}\n"))),
                format!(
                    "line 3: guest \"a\": bad size \"{bad}\": write a whole number and K, M or \
                     G (like 256M, 1G or 4096K)"
                )
            );
        }
    }

    #[test]
    fn rejects_ram_that_is_not_a_multiple_of_2_mib() {
        assert_eq!(
            parse_error(&one_guest("  ram 3M\n")),
            "line 3: guest \"a\": RAM must be a non-zero multiple of 2 MiB, not 3 MiB"
        );
        assert_eq!(
            parse_error(&one_guest("  ram 4097K\n")),
            "line 3: guest \"a\": RAM must be a non-zero multiple of 2 MiB, not 4097 KiB"
        );
        assert_eq!(
            parse_error(&one_guest("  ram 0G\n")),
            "line 3: guest \"a\": RAM must be a non-zero multiple of 2 MiB, not 0 bytes"
        );
        parse(&one_guest("  ram 2048K\n  kernel linux\n")).unwrap();
        parse(&one_guest("  ram 1G\n  kernel linux\n")).unwrap();
    }

    #[test]
    fn rejects_a_bad_vcpu_count() {
        for bad in ["two", "-1", "+1", "1.0", "4294967296", "0x2"] {
            assert_eq!(
                parse_error(&one_guest(&format!("  ram 2M\n  vcpus {bad}\n"))),
                format!(
                    "line 4: guest \"a\": bad vCPU count \"{bad}\": write a whole number from 1"
                )
            );
        }
        assert_eq!(
            parse_error(&one_guest("  ram 2M\n  vcpus 0\n")),
            "line 4: guest \"a\": needs at least 1 vCPU"
        );
    }

    #[test]
    fn rejects_a_guest_without_kernel_or_ram() {
        assert_eq!(
            parse_error(&one_guest("  ram 16M\n")),
            "line 2: guest \"a\" has no \"kernel\" line"
        );
        assert_eq!(
            parse_error(&one_guest("  kernel linux\n")),
            "line 2: guest \"a\" has no \"ram\" line"
        );
        // Found when the next guest starts; the line is the guest's own.
        assert_eq!(
            parse_error("board qemu-virt\nguest a\n  ram 16M\nguest b\n  ram 2M\n  kernel linux\n"),
            "line 2: guest \"a\" has no \"kernel\" line"
        );
    }

    #[test]
    fn rejects_a_duplicate_guest_name() {
        assert_eq!(
            parse_error(
                "board qemu-virt\nguest a\n  ram 2M\n  kernel linux\n\nguest a\n  ram 2M\n  \
                 kernel linux\n"
            ),
            "line 6: guest \"a\" is defined twice (first on line 2)"
        );
    }

    #[test]
    fn rejects_bad_guest_names() {
        assert_eq!(
            parse_error("board qemu-virt\nguest abcdefghijklmnop\n"),
            "line 2: guest name \"abcdefghijklmnop\" is longer than 15 bytes"
        );
        parse("board qemu-virt\nguest abcdefghijklmno\n ram 2M\n kernel linux\n").unwrap();
        for bad in ["Linux", "rust_test", "a.b", "é", "a/b"] {
            assert_eq!(
                parse_error(&format!("board qemu-virt\nguest {bad}\n")),
                format!("line 2: guest name \"{bad}\" may only contain a-z, 0-9 and \"-\"")
            );
        }
        parse("board qemu-virt\nguest 0-9-z\n ram 2M\n kernel linux\n").unwrap();
    }

    #[test]
    fn rejects_zero_guests() {
        assert_eq!(
            parse_error("board qemu-virt\n"),
            "no guests: a system needs a \"guest\" line"
        );
        assert_eq!(parse_error(""), "no \"board\" line");
    }

    #[test]
    fn rejects_more_than_eight_guests() {
        let mut text = String::from("board qemu-virt\n");
        for index in 0..9 {
            text.push_str(&format!("guest g{index}\n  ram 2M\n  kernel linux\n"));
        }
        // The ninth guest's line: 1 + 8 * 3 + 1.
        assert_eq!(parse_error(&text), "line 26: more than 8 guests");
        let eight: String = text
            .lines()
            .take(25)
            .map(|line| format!("{line}\n"))
            .collect();
        assert_eq!(parse(&eight).unwrap().guests.len(), 8);
    }

    #[test]
    fn rejects_a_second_console_focus() {
        let text = shipped::DEFAULT.replace(
            "    kernel test-guest\n",
            "    kernel test-guest\n    console-focus\n",
        );
        assert_eq!(
            parse_error(&text),
            "line 20: guest \"rust-test\": console-focus, but guest \"linux\" has it already \
             (line 11)"
        );
    }

    #[test]
    fn rejects_an_unknown_image() {
        let text = shipped::DEFAULT.replace("kernel linux", "kernel linx");
        assert_eq!(
            validate_error(&text, &VIRT),
            "line 8: guest \"linux\": unknown image \"linx\" (known images: linux, initramfs, \
             test-guest)"
        );
        let text = shipped::DEFAULT.replace("initrd initramfs", "initrd busybox");
        assert_eq!(
            validate_error(&text, &VIRT),
            "line 9: guest \"linux\": unknown image \"busybox\" (known images: linux, \
             initramfs, test-guest)"
        );
        let none = Limits {
            images: &[],
            ..VIRT
        };
        assert_eq!(
            validate_error(shipped::TEST_GUEST, &none),
            "line 7: guest \"rust-test\": unknown image \"test-guest\" (known images: none)"
        );
    }

    #[test]
    fn rejects_more_vcpus_than_cores() {
        let text = shipped::DEFAULT.replace(
            "    vcpus 1\n    kernel test-guest",
            "    vcpus 5\n    kernel test-guest",
        );
        assert_eq!(
            validate_error(&text, &VIRT),
            "line 18: guest \"rust-test\": 5 vCPUs but the board has 4 cores"
        );
        let one_core = Limits { cores: 1, ..VIRT };
        let text = shipped::TEST_GUEST.replace("vcpus 1", "vcpus 2");
        assert_eq!(
            validate_error(&text, &one_core),
            "line 6: guest \"rust-test\": 2 vCPUs but the board has 1 core"
        );
        // A default of one vCPU is reported at the guest's line.
        let no_cores = Limits { cores: 0, ..VIRT };
        let text = shipped::TEST_GUEST.replace("    vcpus 1\n", "");
        assert_eq!(
            validate_error(&text, &no_cores),
            "line 4: guest \"rust-test\": 1 vCPU but the board has 0 cores"
        );
    }

    #[test]
    fn rejects_more_ram_than_the_board_has() {
        let limits = Limits {
            ram_bytes: 256 << 20,
            ..VIRT
        };
        assert_eq!(
            validate_error(shipped::DEFAULT, &limits),
            "line 17: guest \"rust-test\": the guests' RAM adds up to 272 MiB but the board \
             has 256 MiB"
        );
        let limits = Limits {
            ram_bytes: 272 << 20,
            ..VIRT
        };
        validate(&parse(shipped::DEFAULT).unwrap(), &limits).unwrap();
        let text = shipped::DEFAULT.replace("ram 256M", "ram 1G");
        assert_eq!(
            validate_error(&text, &VIRT),
            "line 17: guest \"rust-test\": the guests' RAM adds up to 1040 MiB but the board \
             has 1 GiB"
        );
    }

    #[test]
    fn validate_checks_a_system_built_by_hand() {
        let good = parse(shipped::DEFAULT).unwrap();
        validate(&good, &VIRT).unwrap();
        let check = |change: &dyn Fn(&mut System<'static>)| {
            let mut system = parse(shipped::DEFAULT).unwrap();
            change(&mut system);
            validate(&system, &VIRT).unwrap_err().to_string()
        };
        assert_eq!(
            check(&|system| system.board = "pi"),
            "unknown board \"pi\" (known boards: qemu-virt, rpi4)"
        );
        assert_eq!(
            check(&|system| system.guests.clear()),
            "no guests: a system needs a \"guest\" line"
        );
        assert_eq!(
            check(&|system| system.guests[1].name = "linux"),
            "line 16: guest \"linux\" is defined twice (first on line 5)"
        );
        assert_eq!(
            check(&|system| system.guests[1].name = ""),
            "line 16: guest name \"\" may only contain a-z, 0-9 and \"-\""
        );
        assert_eq!(
            check(&|system| system.guests[0].name = "a-very-long-name"),
            "line 5: guest name \"a-very-long-name\" is longer than 15 bytes"
        );
        assert_eq!(
            check(&|system| system.guests[1].focus = true),
            "line 16: guest \"rust-test\": console-focus, but guest \"linux\" has it already \
             (line 11)"
        );
        assert_eq!(
            check(&|system| system.guests[0].ram_bytes = 1),
            "line 6: guest \"linux\": RAM must be a non-zero multiple of 2 MiB, not 1 bytes"
        );
        assert_eq!(
            check(&|system| system.guests[0].vcpus = 0),
            "line 7: guest \"linux\": needs at least 1 vCPU"
        );
        assert_eq!(
            check(&|system| system.guests[1].kernel = ""),
            "line 16: guest \"rust-test\" has no \"kernel\" line"
        );
        assert_eq!(
            check(&|system| {
                system.guests[0].ram_bytes = u64::MAX - (2 << 20) + 1;
                system.guests[1].ram_bytes = u64::MAX - (2 << 20) + 1;
            }),
            "line 6: guest \"linux\": the guests' RAM adds up to 17592186044414 MiB but the \
             board has 1 GiB"
        );
    }

    #[test]
    fn guest_ram_adds_up_without_overflow() {
        let mut system = parse(shipped::DEFAULT).unwrap();
        system.guests[0].ram_bytes = u64::MAX - (2 << 20) + 1;
        system.guests[1].ram_bytes = 2 << 20;
        let limits = Limits {
            ram_bytes: u64::MAX,
            ..VIRT
        };
        assert_eq!(
            validate(&system, &limits).unwrap_err().to_string(),
            "line 17: guest \"rust-test\": the guests' RAM adds up to 17179869184 GiB but the \
             board has 18446744073709551615 bytes"
        );
        assert_eq!(system.total_ram_bytes(), u64::MAX);
    }

    #[test]
    fn errors_carry_their_line() {
        let text = one_guest("  ram 3M\n");
        let error = parse(&text).unwrap_err();
        assert_eq!(error.line, Some(3));
        assert_eq!(
            error.kind,
            ErrorKind::RamNotMultiple {
                guest: "a",
                bytes: 3 << 20
            }
        );
        let error = parse("board qemu-virt\n").unwrap_err();
        assert_eq!(error.line, None);
        assert_eq!(error.kind, ErrorKind::NoGuests);
    }

    #[test]
    fn limits_may_live_shorter_than_the_text() {
        let system = parse(shipped::DEFAULT).unwrap();
        let message = {
            let images = StdVec::from(["linux".to_string(), "initramfs".to_string()]);
            let names: StdVec<&str> = images.iter().map(String::as_str).collect();
            let limits = Limits {
                cores: 4,
                ram_bytes: 1 << 30,
                images: &names,
            };
            validate(&system, &limits).unwrap_err().to_string()
        };
        assert_eq!(
            message,
            "line 19: guest \"rust-test\": unknown image \"test-guest\" (known images: linux, \
             initramfs)"
        );
    }

    /// Mangled descriptions are refused or accepted, never a panic.
    #[test]
    fn never_panics() {
        let mut inputs: StdVec<String> = StdVec::new();
        for text in [shipped::DEFAULT, shipped::TEST_GUEST] {
            for end in 0..=text.len() {
                if let Some(prefix) = text.get(..end) {
                    inputs.push(prefix.to_string());
                }
            }
            let lines: StdVec<&str> = text.lines().collect();
            for skip in 0..lines.len() {
                let mut without = String::new();
                let mut doubled = String::new();
                for (index, line) in lines.iter().enumerate() {
                    if index != skip {
                        without.push_str(line);
                        without.push('\n');
                    }
                    doubled.push_str(line);
                    doubled.push('\n');
                    if index == skip {
                        doubled.push_str(line);
                        doubled.push('\n');
                    }
                }
                inputs.push(without);
                inputs.push(doubled);
            }
        }
        // Pseudo-random bytes from the description's alphabet.
        let alphabet = b"board guest ram vcpus kernel initrd bootargs console-focus qemu-virt \
                         1G 16M 0 K M G # \n\n\n\t-_\xc3\xa9";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut bytes = StdVec::new();
            for _ in 0..64 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                bytes.push(alphabet[usize::try_from(state % alphabet.len() as u64).unwrap()]);
            }
            inputs.push(String::from_utf8_lossy(&bytes).into_owned());
        }
        let mut accepted = 0;
        for input in &inputs {
            if let Ok(system) = parse(input) {
                accepted += 1;
                let _ = validate(&system, &VIRT).map_err(|error| error.to_string());
            } else if let Err(error) = parse(input) {
                assert!(!error.to_string().is_empty());
            }
        }
        assert!(accepted > 0);
    }
}
