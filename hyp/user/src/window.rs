//! The memory window: a range of addresses where a program maps frames
//! itself (`Frame::map`) and reaches them by address, one 64-bit word at a
//! time, to share memory with another thread, to look at what a frame
//! holds, or to touch an address on purpose that nothing is mapped at.
//!
//! Rust code never has an object in the window: a program's image is
//! linked in `[IMAGE_BASE, IMAGE_LIMIT)`, the root task's stack, boot-info
//! page and IPC buffer lie below `IMAGE_BASE`, there is no heap, and the
//! window lies far above all of them ([`BASE`] to [`END`], the top half of
//! the 39-bit address space). Nothing in safe code can make a reference
//! into it, so [`read`] and [`write`], which reach it only through
//! single load and store instructions, cannot break what the compiler
//! assumes about memory. What they see is a matter between the threads
//! that map the same frame: a word written by one is read by the others
//! (the frame is normal, inner-shareable memory).
//!
//! A read or write of a window address with nothing mapped (or, for a
//! write, nothing writable) faults like any other access: the kernel
//! sends the fault to the thread's fault endpoint (whose reply may map a
//! frame there and resume the thread at the same instruction, which then
//! completes) or stops the thread.
//!
//! One rule is the program's: a frame mapped in the window must not also
//! be memory that Rust code uses (a thread's stack, say), or a write here
//! changes it behind the compiler's back. The kernel's system calls let a
//! program do that, as they let it unmap its own stack; this module
//! cannot check it.
//!
//! On the host there is no window: reads see 0 and writes are dropped.

use core::fmt;

use hyp_abi::user_layout;

/// The first address of the window (256 GiB).
pub const BASE: u64 = 0x40_0000_0000;
/// The first address after the window: the end of the 39-bit address
/// space (IPA) of a `hyp` VSpace.
pub const END: u64 = 1 << 39;

const _: () = assert!(
    BASE >= user_layout::IMAGE_LIMIT
        && BASE > user_layout::STACK_TOP
        && BASE > user_layout::BOOT_INFO
        && BASE > user_layout::IPC_BUFFER,
    "the window lies above every Rust object of a program"
);

/// An address outside the window, or not aligned to 8 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutsideWindow {
    /// The address refused.
    pub address: u64,
}

impl fmt::Display for OutsideWindow {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{:#x} is not an aligned word of the window [{BASE:#x}, {END:#x})",
            self.address
        )
    }
}

/// Whether the 8-byte word at `address` lies in the window and is
/// aligned to 8 bytes.
pub const fn contains(address: u64) -> bool {
    address >= BASE && address < END && address.is_multiple_of(8)
}

fn check(address: u64) -> Result<(), OutsideWindow> {
    if contains(address) {
        Ok(())
    } else {
        Err(OutsideWindow { address })
    }
}

/// Reads the word at `address` with one load. Refuses (without an access)
/// an address [`contains`] rejects.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub fn read(address: u64) -> Result<u64, OutsideWindow> {
    check(address)?;
    let value: u64;
    // SAFETY: `address` is an aligned word of the window, where no Rust
    // object lives (see the module's documentation), so the load cannot
    // read memory the compiler tracks. If nothing is mapped there the load
    // faults to the kernel, which stops the thread or resumes it at this
    // instruction (then the load is simply done again). No stack or flags
    // are touched; memory is not declared untouched, so the compiler
    // orders the load with the thread's other accesses and system calls.
    unsafe {
        core::arch::asm!(
            "ldr {value}, [{address}]",
            address = in(reg) address,
            value = out(reg) value,
            options(nostack, preserves_flags)
        );
    }
    Ok(value)
}

/// Writes `value` to the word at `address` with one store. Refuses
/// (without an access) an address [`contains`] rejects.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub fn write(address: u64, value: u64) -> Result<(), OutsideWindow> {
    check(address)?;
    // SAFETY: as in `read`: an aligned word of the window, where no Rust
    // object lives; a store with nothing writable mapped faults to the
    // kernel, which stops the thread or resumes it at this instruction.
    unsafe {
        core::arch::asm!(
            "str {value}, [{address}]",
            address = in(reg) address,
            value = in(reg) value,
            options(nostack, preserves_flags)
        );
    }
    Ok(())
}

/// On the host: no window; an address in it reads 0.
#[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
pub fn read(address: u64) -> Result<u64, OutsideWindow> {
    check(address).map(|()| 0)
}

/// On the host: no window; a write to it is dropped.
#[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
pub fn write(address: u64, _value: u64) -> Result<(), OutsideWindow> {
    check(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_has_its_words_and_nothing_else() {
        assert!(contains(BASE));
        assert!(contains(END - 8));
        assert!(!contains(END));
        assert!(!contains(BASE - 8));
        assert!(!contains(BASE + 4), "unaligned");
    }

    #[test]
    fn addresses_outside_are_refused() {
        assert_eq!(
            read(user_layout::IMAGE_BASE),
            Err(OutsideWindow {
                address: user_layout::IMAGE_BASE
            })
        );
        assert_eq!(write(BASE + 1, 0), Err(OutsideWindow { address: BASE + 1 }));
        assert_eq!(read(BASE), Ok(0), "the host window reads 0");
        assert_eq!(write(BASE, 5), Ok(()));
        assert_eq!(
            std::format!("{}", OutsideWindow { address: 0x10 }),
            "0x10 is not an aligned word of the window [0x4000000000, 0x8000000000)"
        );
    }
}
