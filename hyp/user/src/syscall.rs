//! The machine instructions an EL0 program needs and the compiler cannot
//! check: `svc #0` to enter the kernel, `udf #0` to stop after a panic, and
//! the one read of the boot-info page the kernel maps at a fixed address.
//! The rest of `hyp-user` builds on these three functions (the only other
//! instructions it needs are the timer's, in `timer`, and the window's
//! loads and stores, in `window`).
//!
//! The real instructions are compiled only for bare-metal AArch64
//! (`target_arch = "aarch64"`, `target_os = "none"`). Elsewhere (the host,
//! where the tests run) each function has a stand-in without `unsafe`: a
//! system call goes to `host_kernel`, which answers like a kernel
//! that knows no system call.

use hyp_abi::{ErrorCode, MessageInfo, REGISTER_MESSAGE_WORDS, Syscall};

/// Words in the boot-info page (4 KiB of `u64`s).
pub const BOOT_INFO_WORDS: usize = 512;

/// What the kernel left in the registers when a system call returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawReply {
    /// Message words 0..7 (`x0..x7`).
    pub words: [u64; REGISTER_MESSAGE_WORDS],
    /// The sender's badge after a receive, the notification bits after a
    /// wait (`x9`).
    pub badge: u64,
    /// The message info (`x10`). A word that does not decode (which only a
    /// kernel breaking the ABI returns) reads as an `IllegalOperation`
    /// error with no words.
    pub info: MessageInfo,
}

impl RawReply {
    /// The reply that the registers `x0..x7`, `x9` and `x10` hold.
    #[inline(always)]
    pub fn from_registers(words: [u64; REGISTER_MESSAGE_WORDS], badge: u64, info: u64) -> RawReply {
        RawReply {
            words,
            badge,
            info: MessageInfo::decode(info)
                .unwrap_or(MessageInfo::new(ErrorCode::IllegalOperation as u64, 0)),
        }
    }
}

/// Enters the kernel with system call `number`: `capability` in `x9`,
/// `info` in `x10`, `words` in `x0..x7` and `extra_capabilities` in
/// `x11..x13`, and returns what the kernel left in `x0..x7`, `x9` and
/// `x10`. The kernel may change `x0..x13` and nothing else.
#[inline(always)]
pub fn syscall(
    number: Syscall,
    capability: u64,
    info: MessageInfo,
    words: [u64; REGISTER_MESSAGE_WORDS],
    extra_capabilities: [u64; 3],
) -> RawReply {
    raw_syscall(number as u64, capability, info, words, extra_capabilities)
}

/// [`syscall`] with any number in `x8`, including one the ABI does not
/// define (the kernel answers those with `IllegalOperation`): for testing
/// the kernel's decoding.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
#[inline(always)]
pub fn raw_syscall(
    number: u64,
    capability: u64,
    info: MessageInfo,
    words: [u64; REGISTER_MESSAGE_WORDS],
    extra_capabilities: [u64; 3],
) -> RawReply {
    let [
        mut word0,
        mut word1,
        mut word2,
        mut word3,
        mut word4,
        mut word5,
        mut word6,
        mut word7,
    ] = words;
    let mut badge = capability;
    let mut info_word = info.encode();
    // SAFETY: `svc #0` traps to the kernel, which runs the system call and
    // returns to the next instruction. The ABI lets the kernel change only
    // x0..x13: each of them is an output here (x8 and x11..x13 discarded),
    // so the compiler keeps nothing live in them. The kernel never touches
    // this thread's stack (`nostack`). Memory is not declared untouched: a
    // system call may read or write this thread's IPC buffer and wakes
    // other threads that share memory with it. The condition flags are
    // not declared preserved either. An unknown number changes nothing but
    // the reply registers.
    unsafe {
        core::arch::asm!(
            "svc #0",
            inout("x0") word0,
            inout("x1") word1,
            inout("x2") word2,
            inout("x3") word3,
            inout("x4") word4,
            inout("x5") word5,
            inout("x6") word6,
            inout("x7") word7,
            inout("x8") number => _,
            inout("x9") badge,
            inout("x10") info_word,
            inout("x11") extra_capabilities[0] => _,
            inout("x12") extra_capabilities[1] => _,
            inout("x13") extra_capabilities[2] => _,
            options(nostack),
        );
    }
    RawReply::from_registers(
        [word0, word1, word2, word3, word4, word5, word6, word7],
        badge,
        info_word,
    )
}

/// The host stand-in for the system call: there is no kernel, so
/// `host_kernel` answers (`IllegalOperation`, or in this crate's
/// tests whatever the test installed). A number the ABI does not define
/// is answered `IllegalOperation`, as the kernel does.
#[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
pub fn raw_syscall(
    number: u64,
    capability: u64,
    info: MessageInfo,
    words: [u64; REGISTER_MESSAGE_WORDS],
    extra_capabilities: [u64; 3],
) -> RawReply {
    match Syscall::from_number(number) {
        Some(number) => {
            crate::host_kernel::syscall(number, capability, info, words, extra_capabilities)
        }
        None => crate::host_kernel::illegal_operation(),
    }
}

/// Executes `udf #0`. The kernel reports the undefined instruction and
/// stops the thread (or sends the fault to its fault endpoint), so this
/// never returns.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub fn undefined_instruction() -> ! {
    // SAFETY: `udf #0` is permanently undefined: it traps to the kernel,
    // touching no memory and no register. Execution never continues after
    // it: the kernel stops the thread, or a fault handler's reply resumes
    // it at this same instruction (which traps again) or at a new PC the
    // handler chose, never at the next instruction.
    unsafe { core::arch::asm!("udf #0", options(noreturn, nomem, nostack)) }
}

/// The host stand-in for `udf #0`: panics, since no kernel can stop the
/// thread.
#[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
pub fn undefined_instruction() -> ! {
    panic!("udf #0: an EL0 program stopped itself (host build: no kernel to stop it)")
}

/// A copy of the boot-info page, which the kernel maps read-only at
/// [`hyp_abi::user_layout::BOOT_INFO`] in the root task's address space.
/// Only the root task may call this, and only while that page is mapped
/// (the kernel maps it before the root task starts; nothing unmaps it
/// unless the root task unmaps its boot-info frame itself). Other
/// threads have no such page: for them this read faults.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub fn read_boot_info_page() -> Option<[u64; BOOT_INFO_WORDS]> {
    let page = hyp_abi::user_layout::BOOT_INFO as *const [u64; BOOT_INFO_WORDS];
    // SAFETY: the kernel maps the 4 KiB boot-info page read-only at this
    // fixed, page-aligned (so u64-aligned) address of the root task before
    // the root task runs, and never writes it afterwards; every bit
    // pattern is a valid `[u64; 512]`. The read is volatile because the
    // compiler cannot know what the kernel put there. The page is copied,
    // so no reference to it outlives this call.
    Some(unsafe { core::ptr::read_volatile(page) })
}

/// The host stand-in: there is no boot-info page.
#[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
pub fn read_boot_info_page() -> Option<[u64; BOOT_INFO_WORDS]> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_info_that_does_not_decode_is_an_illegal_operation() {
        let reply = RawReply::from_registers([0; 8], 0, 1 << 9);
        assert_eq!(reply.info.label, ErrorCode::IllegalOperation as u64);
        let reply = RawReply::from_registers([1; 8], 7, MessageInfo::new(3, 2).encode());
        assert_eq!(reply.info, MessageInfo::new(3, 2));
        assert_eq!(reply.badge, 7);
    }

    #[test]
    fn an_unknown_number_is_an_illegal_operation_and_a_known_one_goes_through() {
        crate::host_kernel::fake::install_success([7; 8]);
        let reply = raw_syscall(77, 3, MessageInfo::new(0, 0), [0; 8], [0; 3]);
        assert_eq!(reply.info.label, ErrorCode::IllegalOperation as u64);
        assert!(crate::host_kernel::fake::requests().is_empty());
        let reply = raw_syscall(
            Syscall::Poll as u64,
            3,
            MessageInfo::new(0, 0),
            [0; 8],
            [0; 3],
        );
        assert_eq!(reply.info.label, 0);
        assert_eq!(reply.words, [7; 8]);
        assert_eq!(
            crate::host_kernel::fake::requests()[0].number,
            Syscall::Poll
        );
    }

    #[test]
    fn the_host_has_no_boot_info_page() {
        assert_eq!(read_boot_info_page(), None);
    }
}
