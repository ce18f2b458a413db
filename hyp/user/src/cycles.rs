//! The PMU cycle counter, for benchmarks. Only a benchmark build of `hyp`
//! (`cargo xtask bench`) lets EL0 read it; anywhere else the read is an
//! undefined instruction and the kernel reports the thread's fault.
//!
//! Under QEMU with `-icount shift=0` one instruction is one tick, so
//! differences of two reads are instruction counts.

/// The cycle counter (`PMCCNTR_EL0`), after an instruction barrier so
/// earlier instructions are counted.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
#[inline(always)]
pub fn now() -> u64 {
    let value: u64;
    // SAFETY: reading a counter register has no side effect; in a build
    // that does not allow it the read traps to the kernel, which reports
    // the fault (it cannot corrupt anything).
    unsafe {
        core::arch::asm!(
            "isb",
            "mrs {}, pmccntr_el0",
            out(reg) value,
            options(nomem, nostack, preserves_flags)
        );
    }
    value
}

/// On the host there is no cycle counter: always 0.
#[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
pub fn now() -> u64 {
    0
}

/// Executes one undefined instruction (`udf #0`), for the fault benchmark:
/// the kernel sends the fault to the thread's handler, and when the
/// handler's reply moves the PC past the instruction, this returns.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
#[inline(always)]
pub fn undefined_instruction_and_continue() {
    // SAFETY: the instruction traps to the kernel; the thread continues
    // only where its fault handler says, which for this function is the
    // next instruction. It touches no memory.
    unsafe { core::arch::asm!("udf #0", options(nomem, nostack)) };
}

/// On the host: nothing happens.
#[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
pub fn undefined_instruction_and_continue() {}
