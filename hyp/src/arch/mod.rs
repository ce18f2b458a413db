//! The AArch64 layer of `hyp`: entry code, system registers, the EL2 MMU
//! and the exception vectors.
//!
//! This is one of the few places in the project with `unsafe` code. Every
//! system-register write sits in a small `unsafe fn` whose `# Safety`
//! section says what the caller must guarantee; the rest of the kernel calls
//! those, and the logic that decides *what* to write lives in `hyp-core`.

pub mod exception;
pub mod guest;
pub mod mmu;
pub mod registers;

use core::arch::global_asm;
use core::mem::offset_of;

use hyp_abi::MAX_CORES;

use hyp_core::thread::UserContext;

use crate::arch::exception::ExceptionFrame;

/// Bytes of EL2 stack per core.
pub const STACK_SIZE: usize = 64 * 1024;

/// The EL2 stacks of all cores, one after the other: core `n` uses
/// `[n * STACK_SIZE, (n + 1) * STACK_SIZE)`. Written only by the core that
/// owns each slice, through its stack pointer.
#[repr(C, align(16))]
pub struct Stacks([u8; STACK_SIZE * MAX_CORES]);

#[unsafe(no_mangle)]
static mut BOOT_STACKS: Stacks = Stacks([0; STACK_SIZE * MAX_CORES]);

/// What a secondary core needs before its MMU is on: the boot core's
/// translation registers and the MPIDR of each core it starts (the index in
/// `mpidrs` is the core's logical number). Read by `secondary_entry` with
/// the MMU off, so the boot core cleans it to the point of coherency.
#[repr(C)]
#[derive(Debug)]
pub struct SecondaryBoot {
    /// `MAIR_EL2`.
    pub mair: u64,
    /// `TCR_EL2`.
    pub tcr: u64,
    /// `TTBR0_EL2`.
    pub ttbr0: u64,
    /// `SCTLR_EL2` with the MMU on.
    pub sctlr: u64,
    /// Entries used in `mpidrs`.
    pub cores: u64,
    /// Affinity fields of `MPIDR_EL1` (Aff3..Aff0) of each logical core.
    pub mpidrs: [u64; MAX_CORES],
}

#[unsafe(no_mangle)]
static mut SECONDARY_BOOT: SecondaryBoot = SecondaryBoot {
    mair: 0,
    tcr: 0,
    ttbr0: 0,
    sctlr: 0,
    cores: 0,
    mpidrs: [0; MAX_CORES],
};

// The kernel's memcpy and memset (see memory.S for why).
global_asm!(include_str!("memory.S"));

global_asm!(
    include_str!("entry.S"),
    STACK_SIZE = const STACK_SIZE,
    SECONDARY_MAIR = const offset_of!(SecondaryBoot, mair),
    SECONDARY_TCR = const offset_of!(SecondaryBoot, tcr),
    SECONDARY_TTBR0 = const offset_of!(SecondaryBoot, ttbr0),
    SECONDARY_SCTLR = const offset_of!(SecondaryBoot, sctlr),
    SECONDARY_CORES = const offset_of!(SecondaryBoot, cores),
    SECONDARY_MPIDRS = const offset_of!(SecondaryBoot, mpidrs),
    FRAME_SIZE = const size_of::<ExceptionFrame>(),
    FRAME_X30 = const offset_of!(ExceptionFrame, x30),
    FRAME_SPSR = const offset_of!(ExceptionFrame, spsr),
    FRAME_FAR = const offset_of!(ExceptionFrame, far),
    CONTEXT_X = const offset_of!(UserContext, x),
    CONTEXT_SP = const offset_of!(UserContext, sp),
    CONTEXT_PC = const offset_of!(UserContext, pc),
    CONTEXT_SPSR = const offset_of!(UserContext, spsr),
);

/// Resumes the EL0 thread whose saved registers are at `context`.
///
/// # Safety
/// `context` is the live TCB save area of the thread this core's kernel
/// state names as current, with an EL0 `spsr`, and stage 2 is set to that
/// thread's VSpace.
pub unsafe fn resume_user(context: *const UserContext) -> ! {
    // SAFETY: the caller's contract; return_to_user never returns.
    unsafe { return_to_user(context) }
}

unsafe extern "C" {
    /// Restores a thread's registers and enters EL0 (see entry.S).
    fn return_to_user(context: *const UserContext) -> !;
    /// First instruction of a secondary core (see entry.S).
    fn secondary_entry();
    /// The EL2 vector table (see entry.S).
    static el2_vectors: u8;
    static __image_start: u8;
    static __text_end: u8;
    static __rodata_end: u8;
    static __image_end: u8;
}

/// Physical address of `secondary_entry`, for PSCI `CPU_ON` and the spin table.
pub fn secondary_entry_address() -> u64 {
    secondary_entry as *const () as u64
}

/// The physical extent of the image, split by permission.
#[derive(Clone, Copy, Debug)]
pub struct ImageLayout {
    /// First byte of the image (the header).
    pub start: u64,
    /// End of code, start of read-only data.
    pub text_end: u64,
    /// End of read-only data, start of data and BSS.
    pub rodata_end: u64,
    /// End of the image, BSS included (page aligned).
    pub end: u64,
}

/// Where the linker put the image's parts.
pub fn image_layout() -> ImageLayout {
    // Only the addresses of these linker symbols are taken; nothing is read
    // through them.
    ImageLayout {
        start: (&raw const __image_start) as u64,
        text_end: (&raw const __text_end) as u64,
        rodata_end: (&raw const __rodata_end) as u64,
        end: (&raw const __image_end) as u64,
    }
}

/// Physical address of the EL2 vector table.
pub fn vector_table_address() -> u64 {
    (&raw const el2_vectors) as u64
}

/// Fills in [`SECONDARY_BOOT`] and cleans it to the point of coherency so
/// that a core with its MMU off reads what was written here.
///
/// # Safety
/// Only the boot core calls this, before it starts any secondary core and
/// never concurrently with itself.
pub unsafe fn publish_secondary_boot(boot: SecondaryBoot) {
    let pointer = &raw mut SECONDARY_BOOT;
    // SAFETY: no other core runs yet (the caller's contract), so nothing
    // reads or writes SECONDARY_BOOT concurrently; the pointer is to a
    // static, valid and aligned.
    unsafe { pointer.write_volatile(boot) };
    let start = pointer as u64;
    // SAFETY: the range is the static itself, mapped as normal memory.
    unsafe { registers::clean_and_invalidate_to_poc(start, size_of::<SecondaryBoot>() as u64) };
}

/// Stops this core for good: interrupts masked, waiting for events forever.
pub fn park() -> ! {
    loop {
        // SAFETY: masking interrupts and waiting for an event touch no
        // memory; parking is what the caller asked for.
        unsafe { core::arch::asm!("msr daifset, #0xf", "wfe", options(nomem, nostack)) };
    }
}
