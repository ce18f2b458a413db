//! System registers, cache maintenance and firmware calls, each behind a
//! small function that states what it needs to be sound.
//!
//! `aarch64-cpu` makes register writes safe calls; a write to `SCTLR_EL2` or
//! `VBAR_EL2` is anything but, so every write here is an `unsafe fn` with a
//! `# Safety` contract, and reads without side effects are safe functions.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{
    CPTR_EL2, HCR_EL2, ID_AA64MMFR0_EL1, MAIR_EL2, MPIDR_EL1, Readable, SCTLR_EL2, TCR_EL2,
    TPIDR_EL2, TTBR0_EL2, VBAR_EL2, Writeable,
};
use core::arch::asm;

/// The affinity fields (Aff3, Aff2, Aff1, Aff0) of this core's `MPIDR_EL1`.
pub fn mpidr() -> u64 {
    MPIDR_EL1.get() & 0xff_00ff_ffff
}

/// `ID_AA64MMFR0_EL1.PARange`: the physical address size the core supports.
pub fn physical_address_range() -> u64 {
    ID_AA64MMFR0_EL1.get() & 0xf
}

/// Per-core data that entry.S reaches through `TPIDR_EL2`: the save area
/// of the thread the core runs (word 0) and the core's number (word 1).
#[repr(C)]
#[derive(Debug)]
pub struct CoreBlock {
    /// Address of the current thread's `UserContext` (0: none).
    pub context: core::sync::atomic::AtomicU64,
    /// The core's logical number.
    pub index: u64,
}

/// One [`CoreBlock`] per core.
pub static CORE_BLOCKS: [CoreBlock; hyp_abi::MAX_CORES] = {
    let mut blocks = [const {
        CoreBlock {
            context: core::sync::atomic::AtomicU64::new(0),
            index: 0,
        }
    }; hyp_abi::MAX_CORES];
    let mut index = 0;
    while index < hyp_abi::MAX_CORES {
        blocks[index].index = index as u64;
        index += 1;
    }
    blocks
};

/// The logical number of this core (0 = the boot core), found through
/// `TPIDR_EL2`.
pub fn core_index() -> usize {
    let block = TPIDR_EL2.get();
    let first = core::ptr::from_ref(&CORE_BLOCKS[0]) as u64;
    let index = block.wrapping_sub(first) / size_of::<CoreBlock>() as u64;
    match usize::try_from(index) {
        Ok(index) if index < hyp_abi::MAX_CORES => index,
        _ => usize::MAX,
    }
}

/// Points `TPIDR_EL2` at this core's [`CoreBlock`].
///
/// # Safety
/// Called once per core at boot with the core's own, unique index:
/// per-core state (and entry.S's save area) is found through it.
pub unsafe fn set_core_index(index: usize) {
    if let Some(block) = CORE_BLOCKS.get(index) {
        TPIDR_EL2.set(core::ptr::from_ref(block) as u64);
    }
}

/// `HCR_EL2` while native EL0 threads run: stage 2 on (VM), stage 1 off
/// with cacheable defaults (DC), everything from EL0 taken to EL2 (TGE),
/// EL1 AArch64 (RW), SMC trapped (TSC).
pub const HCR_EL2_NATIVE: u64 = (1 << 31) | (1 << 27) | (1 << 19) | (1 << 12) | 1;

/// `CPTR_EL2` trapping FP/SIMD (TFP): user programs are soft-float, so an
/// FP instruction is a fault reported to the thread's handler, and no FP
/// state needs switching.
pub const CPTR_EL2_TRAP_FP: u64 = 0x33ff | (1 << 10);

/// `VTCR_EL2` for the stage-2 tables `hyp-core` builds: 39-bit IPA
/// (T0SZ 25) starting at level 1 (SL0 1), write-back cacheable walks,
/// inner shareable, 4 KiB granule, output size `physical_size` (PARange
/// encoding, at most 48 bits), RES1 bit 31.
pub const fn vtcr(physical_size: u64) -> u64 {
    25 | (0b01 << 6) | (0b01 << 8) | (0b01 << 10) | (0b11 << 12) | (physical_size << 16) | (1 << 31)
}

/// Sets up this core for running native EL0 threads: `VTCR_EL2`,
/// `HCR_EL2`, FP traps, and EL0 access to the counters and the physical
/// timer (`CNTHCTL_EL2`, `CNTKCTL_EL1`, with no virtual offset).
///
/// # Safety
/// The EL2 vectors handle exceptions from EL0 (entry.S's lower-EL vectors)
/// before any thread runs.
pub unsafe fn set_up_native_threads() {
    let physical_size = physical_address_range().min(0b101);
    // SAFETY: configuration registers of stage 2 and the timers; no thread
    // runs on this core yet, and the values only change what EL0 and
    // stage 2 do.
    unsafe {
        asm!(
            "msr vtcr_el2, {vtcr}",
            "msr cnthctl_el2, {cnthctl}",
            "msr cntkctl_el1, {cntkctl}",
            "msr cptr_el2, {cptr}",
            "msr cntvoff_el2, xzr",
            "msr hcr_el2, {hcr}",
            "isb",
            vtcr = in(reg) vtcr(physical_size),
            // EL1PCTEN | EL1PCEN: the physical counter and timer are not
            // trapped below EL2.
            cnthctl = in(reg) 0b11u64,
            // EL0 reads both counters and uses the physical timer (the
            // virtual one is the guests').
            cntkctl = in(reg) super::guest::CNTKCTL_NATIVE,
            cptr = in(reg) CPTR_EL2_TRAP_FP,
            hcr = in(reg) HCR_EL2_NATIVE,
            options(nostack, preserves_flags)
        );
    }
    let mdcr: u64;
    // SAFETY: reading MDCR_EL2 has no side effect.
    unsafe { asm!("mrs {}, mdcr_el2", out(reg) mdcr, options(nomem, nostack, preserves_flags)) };
    // Guests must not program the debug hardware (a breakpoint or
    // single-step left armed would fire under the native threads that
    // share the core): their debug-register accesses trap to EL2 (TDA,
    // TDOSA, TDRA) and reach their VMM. So do their PMU accesses (TPM,
    // TPMCR: the counters are shared and a timing channel), except in
    // benchmark builds, where guests read the cycle counter. HPMN keeps
    // its reset value (all counters).
    let traps = (1u64 << 9) | (1 << 10) | (1 << 11);
    let pmu = if cfg!(feature = "bench") {
        0
    } else {
        (1u64 << 5) | (1 << 6)
    };
    // SAFETY: only traps of lower levels change.
    unsafe {
        asm!(
            "msr mdcr_el2, {}",
            "isb",
            in(reg) (mdcr & 0x1f) | traps | pmu,
            options(nomem, nostack, preserves_flags)
        )
    };
}

/// Benchmark builds only: starts the cycle counter, counting at EL0, EL1
/// and EL2 (`PMCCFILTR_EL0.NSH`), and lets EL0 read it (`PMUSERENR_EL0`).
/// Not in normal builds: the counter is a timing side channel.
#[cfg(feature = "bench")]
pub fn enable_cycle_counter_for_el0() {
    // SAFETY: PMU configuration only changes what the cycle counter counts
    // and who may read it.
    unsafe {
        asm!(
            "msr pmccfiltr_el0, {filter}",
            "msr pmcntenset_el0, {enable}",
            "msr pmcr_el0, {control}",
            "msr pmuserenr_el0, {user}",
            "isb",
            filter = in(reg) 1u64 << 27,
            enable = in(reg) 1u64 << 31,
            // E (enable), C (reset the cycle counter), LC (64-bit).
            control = in(reg) (1u64 << 0) | (1 << 2) | (1 << 6),
            // EN: EL0 reads the counters.
            user = in(reg) 1u64,
            options(nostack, preserves_flags)
        );
    }
}

/// Switches stage 2 to the table at `root` with `vmid`.
///
/// # Safety
/// `root` is a live VSpace's root table (zeroed or filled by `hyp-core`'s
/// stage-2 code) that stays live while any thread runs in it; TLB entries
/// tagged with `vmid` belong to this VSpace (flushed when a VMID is
/// recycled).
pub unsafe fn set_stage2(root: u64, vmid: u16) {
    let vttbr = root | (u64::from(vmid & 0xff) << 48);
    let current: u64;
    // SAFETY: reading VTTBR_EL2 has no side effect.
    unsafe {
        asm!("mrs {}, vttbr_el2", out(reg) current, options(nomem, nostack, preserves_flags))
    };
    if current == vttbr {
        return;
    }
    // SAFETY: the caller's contract.
    unsafe { asm!("msr vttbr_el2, {}", "isb", in(reg) vttbr, options(nostack, preserves_flags)) };
}

/// Invalidates every stage-1-and-2 TLB entry of the EL1&0 regime, for all
/// VMIDs, on all cores (after a mapping was removed or a VMID recycled).
pub fn flush_guest_tlbs() {
    // SAFETY: TLB invalidation only drops cached translations; the tables
    // are the truth.
    unsafe {
        asm!(
            "dsb ishst",
            "tlbi alle1is",
            "dsb ish",
            "isb",
            options(nostack, preserves_flags)
        );
    }
}

/// Where [`clean_data_cache`] writes lines back to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CleanTo {
    /// The point of unification: what this core's instruction fetches
    /// see.
    Unification,
    /// The point of coherency: memory, which a core with its caches off
    /// reads.
    Coherency,
}

/// Cleans every data-cache line of `[start, start + size)` to `point`,
/// then invalidates the instruction caches of all cores.
fn clean_data_cache(start: u64, size: u64, point: CleanTo) {
    let line = data_cache_line_size();
    let mut address = start & !(line - 1);
    while address < start.saturating_add(size) {
        match point {
            // SAFETY: cleaning a line of RAM (mapped at EL2 like all RAM)
            // writes back its data; it does not change what a read returns.
            CleanTo::Unification => unsafe {
                asm!("dc cvau, {}", in(reg) address, options(nostack, preserves_flags));
            },
            // SAFETY: as above, to memory.
            CleanTo::Coherency => unsafe {
                asm!("dc cvac, {}", in(reg) address, options(nostack, preserves_flags));
            },
        }
        address += line;
    }
    // SAFETY: barriers and an instruction-cache invalidation only.
    unsafe {
        asm!(
            "dsb ish",
            "ic ialluis",
            "dsb ish",
            "isb",
            options(nostack, preserves_flags)
        )
    };
}

/// Writes `[start, start + size)` back to memory (clean to the point of
/// coherency) and invalidates the instruction caches: what was written
/// through a cacheable mapping is then what a core with its caches off
/// (a guest starting with its MMU off) reads and executes (`FrameClean`).
pub fn clean_to_poc(start: u64, size: u64) {
    clean_data_cache(start, size, CleanTo::Coherency);
}

/// Makes `[start, start + size)` just written by the kernel visible to
/// instruction fetches (root task image at boot).
pub fn sync_instruction_cache(start: u64, size: u64) {
    clean_data_cache(start, size, CleanTo::Unification);
}

/// Installs the EL2 exception vector table.
///
/// # Safety
/// `address` is the 2 KiB aligned vector table of entry.S, mapped executable.
pub unsafe fn set_vector_table(address: u64) {
    VBAR_EL2.set(address);
    barrier::isb(barrier::SY);
}

/// `HCR_EL2` for the hypervisor running on its own (no guest yet): EL1 is
/// AArch64 (RW), and physical IRQs, FIQs and SErrors are taken to EL2 (IMO,
/// FMO, AMO), which also makes them reach EL2 while it runs.
pub const HCR_EL2_HOST: u64 = (1 << 31) | (1 << 5) | (1 << 4) | (1 << 3);

/// Writes `HCR_EL2`.
///
/// # Safety
/// `value` must route exceptions to handlers that exist: the vector table is
/// installed before IMO/FMO/AMO are set and interrupts unmasked.
pub unsafe fn set_hypervisor_configuration(value: u64) {
    HCR_EL2.set(value);
    barrier::isb(barrier::SY);
}

/// `CPTR_EL2` with its RES1 bits and no traps: the hypervisor is built
/// soft-float and never touches FP/SIMD registers itself.
pub const CPTR_EL2_NO_TRAPS: u64 = 0x33ff;

/// Writes `CPTR_EL2`.
///
/// # Safety
/// Trapping FP/SIMD or trace must have a handler ready for the traps.
pub unsafe fn set_architectural_feature_traps(value: u64) {
    CPTR_EL2.set(value);
    barrier::isb(barrier::SY);
}

/// The translation registers of the EL2 regime, as one set.
#[derive(Clone, Copy, Debug)]
pub struct TranslationRegisters {
    /// `MAIR_EL2`.
    pub mair: u64,
    /// `TCR_EL2`.
    pub tcr: u64,
    /// `TTBR0_EL2`.
    pub ttbr0: u64,
    /// `SCTLR_EL2` once the MMU is on.
    pub sctlr: u64,
}

/// Turns on the EL2 MMU and the caches with `registers`.
///
/// # Safety
/// The table at `registers.ttbr0` maps the code that runs now, its stack and
/// every static it uses at their current (physical) addresses, with those
/// permissions; the table memory is not cached stale (the caller invalidated
/// it after writing it with the MMU off).
pub unsafe fn enable_mmu(registers: TranslationRegisters) {
    MAIR_EL2.set(registers.mair);
    TCR_EL2.set(registers.tcr);
    TTBR0_EL2.set(registers.ttbr0);
    barrier::isb(barrier::SY);
    // SAFETY: invalidating all EL2 TLB entries and the instruction cache
    // only drops cached translations and instructions; it reads and writes
    // no memory.
    unsafe {
        asm!(
            "tlbi alle2",
            "dsb nsh",
            "ic iallu",
            "dsb nsh",
            "isb",
            options(nostack, preserves_flags)
        );
    }
    SCTLR_EL2.set(registers.sctlr);
    barrier::isb(barrier::SY);
}

/// The size of the smallest data cache line, from `CTR_EL0.DminLine`.
fn data_cache_line_size() -> u64 {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 has no side effects.
    unsafe { asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack, preserves_flags)) };
    4 << ((ctr >> 16) & 0xf)
}

/// Cleans and invalidates `[start, start + size)` to the point of
/// coherency, so an observer with caches off sees what was written.
///
/// # Safety
/// The range is mapped (or the MMU is off and it is RAM).
pub unsafe fn clean_and_invalidate_to_poc(start: u64, size: u64) {
    let line = data_cache_line_size();
    let mut address = start & !(line - 1);
    while address < start.saturating_add(size) {
        // SAFETY: cleaning and invalidating a mapped line writes back its
        // data to memory; it does not change what a read returns.
        unsafe { asm!("dc civac, {}", in(reg) address, options(nostack, preserves_flags)) };
        address += line;
    }
    barrier::dsb(barrier::SY);
}

/// Invalidates `[start, start + size)` in the data caches to the point of
/// coherency, discarding any cached copy.
///
/// # Safety
/// No cache line of the range holds data that must survive (with the MMU
/// and caches off on this core, everything written went to memory already).
pub unsafe fn invalidate_to_poc(start: u64, size: u64) {
    let line = data_cache_line_size();
    let mut address = start & !(line - 1);
    while address < start.saturating_add(size) {
        // SAFETY: the caller guarantees no dirty data lives in the range.
        unsafe { asm!("dc ivac, {}", in(reg) address, options(nostack, preserves_flags)) };
        address += line;
    }
    barrier::dsb(barrier::SY);
}

/// Issues a firmware call through `SMC #0` (SMC Calling Convention) with
/// `function` and three arguments, returning `x0`.
///
/// # Safety
/// The call must not hand the firmware memory it may overwrite that Rust
/// still uses; PSCI `CPU_ON` starts another core at `entry`, which must be
/// ready for it.
pub unsafe fn smc(function: u64, argument1: u64, argument2: u64, argument3: u64) -> u64 {
    let result: u64;
    // SAFETY: per SMCCC, SMC preserves x18-x30 and SP; x0-x17 may be
    // clobbered, so they are all declared as clobbered here.
    unsafe {
        asm!(
            "smc #0",
            inlateout("x0") function => result,
            inlateout("x1") argument1 => _,
            inlateout("x2") argument2 => _,
            inlateout("x3") argument3 => _,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _,
            out("x8") _, out("x9") _, out("x10") _, out("x11") _,
            out("x12") _, out("x13") _, out("x14") _, out("x15") _,
            out("x16") _, out("x17") _,
            options(nostack)
        );
    }
    result
}

/// Sends an event to all cores (wakes cores in `WFE`), after a full barrier.
pub fn send_event() {
    barrier::dsb(barrier::SY);
    // SAFETY: SEV only signals other cores; it reads and writes no memory.
    unsafe { asm!("sev", options(nomem, nostack, preserves_flags)) };
}

/// How a core waits for a spin lock: with `YIELD`, the architecture's hint
/// that the core is spinning. On hardware it lets a multithreaded core run
/// its other threads; under QEMU's single-threaded TCG it hands the host
/// CPU to the next virtual core (without it, a core waiting for the kernel
/// lock spins for its whole time slice while the holder cannot run: a
/// 4-core test suite took 48 s instead of 0.7 s).
#[derive(Debug)]
pub struct YieldRelax;

impl spin::RelaxStrategy for YieldRelax {
    #[inline(always)]
    fn relax() {
        // SAFETY: YIELD is a hint; it reads and writes nothing.
        unsafe { asm!("yield", options(nomem, nostack, preserves_flags)) };
    }
}

/// The system count now (`CNTPCT_EL0`; guests' virtual count is the same:
/// no virtual offset).
pub fn physical_count() -> u64 {
    let value: u64;
    // SAFETY: reading the counter at EL2 has no side effect.
    unsafe {
        asm!("isb", "mrs {}, cntpct_el0", out(reg) value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Waits for an event (`SEV` from another core) or an interrupt.
pub fn wait_for_event() {
    // SAFETY: WFE only pauses the core until an event or interrupt.
    unsafe { asm!("wfe", options(nomem, nostack, preserves_flags)) };
}

/// Waits for an interrupt.
pub fn wait_for_interrupt() {
    // SAFETY: WFI only pauses the core until an interrupt is pending.
    unsafe { asm!("wfi", options(nomem, nostack, preserves_flags)) };
}

/// Unmasks IRQs at EL2 (`DAIF.I` cleared).
///
/// # Safety
/// The vector table and the interrupt controller are set up, so an IRQ
/// reaches a handler that acknowledges it.
pub unsafe fn enable_irqs() {
    // SAFETY: the caller's contract: the IRQ vector is ready.
    unsafe { asm!("msr daifclr, #2", options(nomem, nostack, preserves_flags)) };
}

/// IRQs masked on this core until the guard is dropped, which restores the
/// mask that was in force before (so guards nest).
#[derive(Debug)]
pub struct IrqsMasked {
    saved_daif: u64,
}

/// Masks IRQs on this core for the life of the returned guard.
pub fn mask_irqs() -> IrqsMasked {
    let saved_daif: u64;
    // SAFETY: reading DAIF and masking IRQs only delays interrupts.
    unsafe {
        asm!(
            "mrs {}, daif",
            "msr daifset, #2",
            out(reg) saved_daif,
            options(nomem, nostack, preserves_flags)
        );
    }
    IrqsMasked { saved_daif }
}

impl Drop for IrqsMasked {
    fn drop(&mut self) {
        // SAFETY: the value is the DAIF this core ran with when the guard
        // was made, so restoring it returns to a state the code was already
        // in. The guard cannot be built any other way.
        unsafe {
            asm!("msr daif, {}", in(reg) self.saved_daif, options(nomem, nostack, preserves_flags));
        }
    }
}
