//! Running guests: switching a core between native EL0 threads and VCPUs,
//! and the EL1 state a VCPU keeps in the hardware while it is loaded.
//!
//! The switch has two parts (`hyp_core::vcpu` explains why):
//!
//! - **Eager**, on every change between a VCPU and a native thread: the
//!   registers that decide what EL0 may do or can see (`HCR_EL2`,
//!   `CNTHCTL_EL2`, `CPTR_EL2`, `CNTKCTL_EL1`, `TPIDR_EL0`, `TPIDRRO_EL0`)
//!   and the virtual GIC's underflow interrupt. A native thread never
//!   sees a guest's thread pointers or timer permissions.
//! - **Lazy**, only when another VCPU is loaded on the core: the rest of
//!   EL1 (translation, vectors, exception registers, the virtual timer),
//!   the floating-point registers and the list registers.
//!
//! Every function here runs at EL2 with IRQs masked, under the kernel lock,
//! on the core whose registers it touches.

use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use gic::virt::{HCR_ENABLE, HCR_UNDERFLOW, LrState, VirtualInterface};
use hyp_abi::vcpu_register as register;
use hyp_core::exit::{self, Injection};
use hyp_core::thread::UserContext;
use hyp_core::vcpu::{MAX_LIST_REGISTERS, Vcpu};
use spin::Once;

use super::registers::{CPTR_EL2_TRAP_FP, HCR_EL2_NATIVE};

/// `HCR_EL2` while a VCPU runs: stage 2 (VM), set/way invalidation as
/// clean+invalidate (SWIO), physical FIQ/IRQ/SError to EL2 and virtual
/// ones to the guest (FMO, IMO, AMO), TLB and barrier broadcast (FB, BSU
/// inner shareable), WFI/WFE trapped (TWI, TWE), SMC trapped (TSC),
/// implementation-defined registers trapped (TIDCP), set/way cache
/// maintenance trapped (TSW), EL1 AArch64 (RW).
pub const HCR_EL2_GUEST: u64 = 1
    | (1 << 1)
    | (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | (1 << 9)
    | (1 << 10)
    | (1 << 13)
    | (1 << 14)
    | (1 << 19)
    | (1 << 20)
    | (1 << 22)
    | (1 << 31);

/// `CNTHCTL_EL2` for guests: the physical counter readable (EL1PCTEN),
/// the physical timer trapped (EL1PCEN clear): a guest uses its virtual
/// timer.
const CNTHCTL_GUEST: u64 = 0b01;
/// `CNTHCTL_EL2` for native threads: physical counter and timer usable.
pub const CNTHCTL_NATIVE: u64 = 0b11;
/// `CNTKCTL_EL1` for native threads: both counters (EL0PCTEN, EL0VCTEN)
/// and the physical timer (EL0PTEN); not the virtual timer, a guest's.
pub const CNTKCTL_NATIVE: u64 = (1 << 0) | (1 << 1) | (1 << 9);
/// `CPTR_EL2` for guests: nothing trapped (guests use FP and SIMD).
const CPTR_EL2_GUEST: u64 = 0x33ff;

/// Per core: a VCPU's eager registers are in the hardware.
static GUEST_MODE: [AtomicBool; hyp_abi::MAX_CORES] =
    [const { AtomicBool::new(false) }; hyp_abi::MAX_CORES];

/// Per core: the EL0-visible registers of the loaded VCPU (`CNTKCTL_EL1`,
/// `TPIDR_EL0`, `TPIDRRO_EL0`) while the core runs a native thread. They
/// are part of the loaded VCPU's state, kept here rather than in the VCPU
/// object so that leaving guest mode needs no lookup of it;
/// [`save_lazy`] puts them into the object when the VCPU is unloaded.
/// Only the owning core touches its entry, under the kernel lock.
static PARKED: [[AtomicU64; 3]; hyp_abi::MAX_CORES] =
    [const { [const { AtomicU64::new(0) }; 3] }; hyp_abi::MAX_CORES];

/// The `PARKED` entry of this core.
fn parked(core: usize) -> Option<&'static [AtomicU64; 3]> {
    PARKED.get(core)
}

/// The virtualization interface of the GIC (set once at boot).
static VGIC: Once<VirtualInterface> = Once::new();

/// Records the GIC's virtualization interface (boot, once).
pub fn set_virtual_interface(interface: VirtualInterface) {
    VGIC.call_once(|| interface);
}

macro_rules! read_sysreg {
    ($name:literal) => {{
        let value: u64;
        // SAFETY: reading an EL1/EL2 system register at EL2 has no side
        // effect and touches no memory.
        unsafe {
            asm!(concat!("mrs {}, ", $name), out(reg) value,
                options(nomem, nostack, preserves_flags))
        };
        value
    }};
}

macro_rules! write_sysreg {
    ($name:literal, $value:expr) => {{
        // SAFETY: the EL1 registers written here only take effect below
        // EL2, for the guest whose state they are (module documentation);
        // the EL2 controls are set to the values this module documents.
        unsafe {
            asm!(concat!("msr ", $name, ", {}"), in(reg) $value,
                options(nomem, nostack, preserves_flags))
        };
    }};
}

fn index(number: u64) -> usize {
    usize::try_from(number).unwrap_or(0)
}

/// Saves the lazily switched EL1 state of the VCPU loaded on `core`
/// (which runs a native thread now: its EL0-visible registers are parked).
pub fn save_lazy(core: usize, vcpu: &mut Vcpu) {
    if let Some(parked) = parked(core) {
        vcpu.registers[index(register::CNTKCTL_EL1)] = parked[0].load(Ordering::Relaxed);
        vcpu.registers[index(register::TPIDR_EL0)] = parked[1].load(Ordering::Relaxed);
        vcpu.registers[index(register::TPIDRRO_EL0)] = parked[2].load(Ordering::Relaxed);
    }
    let r = &mut vcpu.registers;
    r[index(register::SCTLR_EL1)] = read_sysreg!("sctlr_el1");
    r[index(register::TTBR0_EL1)] = read_sysreg!("ttbr0_el1");
    r[index(register::TTBR1_EL1)] = read_sysreg!("ttbr1_el1");
    r[index(register::TCR_EL1)] = read_sysreg!("tcr_el1");
    r[index(register::MAIR_EL1)] = read_sysreg!("mair_el1");
    r[index(register::AMAIR_EL1)] = read_sysreg!("amair_el1");
    r[index(register::VBAR_EL1)] = read_sysreg!("vbar_el1");
    r[index(register::CONTEXTIDR_EL1)] = read_sysreg!("contextidr_el1");
    r[index(register::TPIDR_EL1)] = read_sysreg!("tpidr_el1");
    r[index(register::SP_EL1)] = read_sysreg!("sp_el1");
    r[index(register::ELR_EL1)] = read_sysreg!("elr_el1");
    r[index(register::SPSR_EL1)] = read_sysreg!("spsr_el1");
    r[index(register::ESR_EL1)] = read_sysreg!("esr_el1");
    r[index(register::FAR_EL1)] = read_sysreg!("far_el1");
    r[index(register::AFSR0_EL1)] = read_sysreg!("afsr0_el1");
    r[index(register::AFSR1_EL1)] = read_sysreg!("afsr1_el1");
    r[index(register::PAR_EL1)] = read_sysreg!("par_el1");
    r[index(register::CPACR_EL1)] = read_sysreg!("cpacr_el1");
    r[index(register::CSSELR_EL1)] = read_sysreg!("csselr_el1");
    r[index(register::CNTV_CTL_EL0)] = read_sysreg!("cntv_ctl_el0");
    r[index(register::CNTV_CVAL_EL0)] = read_sysreg!("cntv_cval_el0");
    r[index(register::MDSCR_EL1)] = read_sysreg!("mdscr_el1");
    r[index(register::VMPIDR)] = read_sysreg!("vmpidr_el2");
    // Stop its timer: the next VCPU's comes in, and this one's deadline
    // is in the object.
    write_sysreg!("cntv_ctl_el0", 0u64);
    save_fp(vcpu);
    if let Some(interface) = VGIC.get() {
        let count = interface.list_registers().min(MAX_LIST_REGISTERS);
        for (number, slot) in vcpu.vgic.lr.iter_mut().enumerate().take(count) {
            *slot = interface.read_lr(number);
        }
        vcpu.vgic.vmcr = interface.vmcr();
        vcpu.vgic.apr = interface.apr();
        interface.set_control(0);
    }
}

/// Loads the lazily switched EL1 state of `vcpu` into this core.
pub fn load_lazy(vcpu: &Vcpu) {
    let r = &vcpu.registers;
    write_sysreg!("sctlr_el1", r[index(register::SCTLR_EL1)]);
    write_sysreg!("ttbr0_el1", r[index(register::TTBR0_EL1)]);
    write_sysreg!("ttbr1_el1", r[index(register::TTBR1_EL1)]);
    write_sysreg!("tcr_el1", r[index(register::TCR_EL1)]);
    write_sysreg!("mair_el1", r[index(register::MAIR_EL1)]);
    write_sysreg!("amair_el1", r[index(register::AMAIR_EL1)]);
    write_sysreg!("vbar_el1", r[index(register::VBAR_EL1)]);
    write_sysreg!("contextidr_el1", r[index(register::CONTEXTIDR_EL1)]);
    write_sysreg!("tpidr_el1", r[index(register::TPIDR_EL1)]);
    write_sysreg!("sp_el1", r[index(register::SP_EL1)]);
    write_sysreg!("elr_el1", r[index(register::ELR_EL1)]);
    write_sysreg!("spsr_el1", r[index(register::SPSR_EL1)]);
    write_sysreg!("esr_el1", r[index(register::ESR_EL1)]);
    write_sysreg!("far_el1", r[index(register::FAR_EL1)]);
    write_sysreg!("afsr0_el1", r[index(register::AFSR0_EL1)]);
    write_sysreg!("afsr1_el1", r[index(register::AFSR1_EL1)]);
    write_sysreg!("par_el1", r[index(register::PAR_EL1)]);
    write_sysreg!("cpacr_el1", r[index(register::CPACR_EL1)]);
    write_sysreg!("csselr_el1", r[index(register::CSSELR_EL1)]);
    write_sysreg!("cntv_cval_el0", r[index(register::CNTV_CVAL_EL0)]);
    write_sysreg!("cntv_ctl_el0", r[index(register::CNTV_CTL_EL0)]);
    write_sysreg!("mdscr_el1", r[index(register::MDSCR_EL1)]);
    write_sysreg!("vmpidr_el2", r[index(register::VMPIDR)]);
    load_fp(vcpu);
    if let Some(interface) = VGIC.get() {
        let count = interface.list_registers().min(MAX_LIST_REGISTERS);
        for (number, value) in vcpu.vgic.lr.iter().enumerate().take(count) {
            interface.write_lr(number, *value);
        }
        interface.set_vmcr(vcpu.vgic.vmcr);
        interface.set_apr(vcpu.vgic.apr);
        interface.set_control(HCR_ENABLE);
    }
}

/// Runs `body` with FP and SIMD untrapped at EL2 (`CPTR_EL2.TFP` traps
/// EL2's own FP instructions too), then puts `CPTR_EL2` back.
fn with_fp(body: impl FnOnce()) {
    let saved = read_sysreg!("cptr_el2");
    write_sysreg!("cptr_el2", saved & !(1u64 << 10));
    // SAFETY: a barrier only.
    unsafe { asm!("isb", options(nomem, nostack, preserves_flags)) };
    body();
    write_sysreg!("cptr_el2", saved);
    // SAFETY: a barrier only.
    unsafe { asm!("isb", options(nomem, nostack, preserves_flags)) };
}

fn save_fp(vcpu: &mut Vcpu) {
    with_fp(|| save_fp_registers(vcpu));
}

fn load_fp(vcpu: &Vcpu) {
    with_fp(|| load_fp_registers(vcpu));
}

fn save_fp_registers(vcpu: &mut Vcpu) {
    let base = vcpu.fp.q.as_mut_ptr();
    // SAFETY: `base` points to 32 u128s (512 bytes) owned by `vcpu`,
    // which the stores fill; FP is not trapped at EL2 (CPTR_EL2.TFP only
    // traps lower levels); the status registers are read into registers.
    unsafe {
        asm!(
            ".arch_extension fp",
            "stp q0, q1, [{base}, #0]",
            "stp q2, q3, [{base}, #32]",
            "stp q4, q5, [{base}, #64]",
            "stp q6, q7, [{base}, #96]",
            "stp q8, q9, [{base}, #128]",
            "stp q10, q11, [{base}, #160]",
            "stp q12, q13, [{base}, #192]",
            "stp q14, q15, [{base}, #224]",
            "stp q16, q17, [{base}, #256]",
            "stp q18, q19, [{base}, #288]",
            "stp q20, q21, [{base}, #320]",
            "stp q22, q23, [{base}, #352]",
            "stp q24, q25, [{base}, #384]",
            "stp q26, q27, [{base}, #416]",
            "stp q28, q29, [{base}, #448]",
            "stp q30, q31, [{base}, #480]",
            "mrs {fpsr}, fpsr",
            "mrs {fpcr}, fpcr",
            base = in(reg) base,
            fpsr = out(reg) vcpu.fp.fpsr,
            fpcr = out(reg) vcpu.fp.fpcr,
            options(nostack, preserves_flags)
        );
    }
}

fn load_fp_registers(vcpu: &Vcpu) {
    let base = vcpu.fp.q.as_ptr();
    // SAFETY: as in `save_fp`, reading the 512 bytes instead; the hypervisor
    // is soft-float, so nothing of its own lives in the FP registers.
    unsafe {
        asm!(
            ".arch_extension fp",
            "ldp q0, q1, [{base}, #0]",
            "ldp q2, q3, [{base}, #32]",
            "ldp q4, q5, [{base}, #64]",
            "ldp q6, q7, [{base}, #96]",
            "ldp q8, q9, [{base}, #128]",
            "ldp q10, q11, [{base}, #160]",
            "ldp q12, q13, [{base}, #192]",
            "ldp q14, q15, [{base}, #224]",
            "ldp q16, q17, [{base}, #256]",
            "ldp q18, q19, [{base}, #288]",
            "ldp q20, q21, [{base}, #320]",
            "ldp q22, q23, [{base}, #352]",
            "ldp q24, q25, [{base}, #384]",
            "ldp q26, q27, [{base}, #416]",
            "ldp q28, q29, [{base}, #448]",
            "ldp q30, q31, [{base}, #480]",
            "msr fpsr, {fpsr}",
            "msr fpcr, {fpcr}",
            base = in(reg) base,
            fpsr = in(reg) vcpu.fp.fpsr,
            fpcr = in(reg) vcpu.fp.fpcr,
            options(nostack, preserves_flags, readonly)
        );
    }
}

/// Whether this core runs with a VCPU's eager registers.
pub fn in_guest_mode(core: usize) -> bool {
    GUEST_MODE
        .get(core)
        .is_some_and(|mode| mode.load(Ordering::Relaxed))
}

/// Leaves guest mode on this core: the loaded VCPU's EL0-visible
/// registers are parked (`PARKED`), and the native values go in.
pub fn leave_guest_mode(core: usize) {
    if let Some(parked) = parked(core) {
        parked[0].store(read_sysreg!("cntkctl_el1"), Ordering::Relaxed);
        parked[1].store(read_sysreg!("tpidr_el0"), Ordering::Relaxed);
        parked[2].store(read_sysreg!("tpidrro_el0"), Ordering::Relaxed);
    }
    write_sysreg!("cntkctl_el1", CNTKCTL_NATIVE);
    write_sysreg!("tpidr_el0", 0u64);
    write_sysreg!("tpidrro_el0", 0u64);
    write_sysreg!("cnthctl_el2", CNTHCTL_NATIVE);
    write_sysreg!("cptr_el2", CPTR_EL2_TRAP_FP);
    write_sysreg!("hcr_el2", HCR_EL2_NATIVE);
    if let Some(interface) = VGIC.get() {
        // No underflow interrupts while the guest does not run.
        interface.set_control(HCR_ENABLE);
    }
    // SAFETY: a barrier only.
    unsafe { asm!("isb", options(nomem, nostack, preserves_flags)) };
    if let Some(mode) = GUEST_MODE.get(core) {
        mode.store(false, Ordering::Relaxed);
    }
}

/// Enters guest mode on this core for the loaded `vcpu`: its EL0-visible
/// registers come from the object if it was just loaded (`loaded`),
/// otherwise from where [`leave_guest_mode`] parked them.
pub fn enter_guest_mode(core: usize, vcpu: &Vcpu, loaded: bool) {
    let (cntkctl, tpidr, tpidrro) = match parked(core) {
        Some(parked) if !loaded => (
            parked[0].load(Ordering::Relaxed),
            parked[1].load(Ordering::Relaxed),
            parked[2].load(Ordering::Relaxed),
        ),
        _ => (
            vcpu.registers[index(register::CNTKCTL_EL1)],
            vcpu.registers[index(register::TPIDR_EL0)],
            vcpu.registers[index(register::TPIDRRO_EL0)],
        ),
    };
    write_sysreg!("cntkctl_el1", cntkctl);
    write_sysreg!("tpidr_el0", tpidr);
    write_sysreg!("tpidrro_el0", tpidrro);
    write_sysreg!("cnthctl_el2", CNTHCTL_GUEST);
    write_sysreg!("cptr_el2", CPTR_EL2_GUEST);
    write_sysreg!("hcr_el2", HCR_EL2_GUEST);
    // SAFETY: a barrier only.
    unsafe { asm!("isb", options(nomem, nostack, preserves_flags)) };
    if let Some(mode) = GUEST_MODE.get(core) {
        mode.store(true, Ordering::Relaxed);
    }
}

/// Moves pending virtual interrupts of the loaded `vcpu` into free list
/// registers, most urgent first, and asks for an underflow interrupt if
/// some still wait.
pub fn fill_list_registers(vcpu: &mut Vcpu) {
    let Some(interface) = VGIC.get() else { return };
    if vcpu.pending_count == 0 {
        return;
    }
    let encoding = interface.list_register();
    let count = interface.list_registers().min(MAX_LIST_REGISTERS);
    // An interrupt already in a list register: pending there already, or
    // active and now pending again.
    for number in 0..count {
        let value = interface.read_lr(number);
        let state = encoding.state(value);
        let intid = encoding.intid(value);
        if state != LrState::Invalid && vcpu.is_pending(intid) {
            if state == LrState::Active {
                interface.write_lr(number, encoding.with_pending(value));
            }
            let index = usize::from(intid);
            vcpu.pending[index / 64] &= !(1u64 << (index % 64));
            vcpu.pending_count = vcpu.pending_count.saturating_sub(1);
        }
    }
    let mut empty = interface.empty_lrs();
    for number in 0..count {
        if empty & (1 << number) == 0 {
            continue;
        }
        let Some((intid, priority)) = vcpu.take_most_urgent() else {
            break;
        };
        interface.write_lr(number, encoding.pending(intid, priority));
        empty &= !(1 << number);
    }
    let control = if vcpu.pending_count != 0 {
        HCR_ENABLE | HCR_UNDERFLOW
    } else {
        HCR_ENABLE
    };
    interface.set_control(control);
}

/// The maintenance interrupt: the list registers ran low. Turns the
/// underflow interrupt off; the next entry fills them again.
pub fn maintenance() {
    if let Some(interface) = VGIC.get() {
        interface.set_control(HCR_ENABLE);
    }
}

/// Whether a list register of the loaded VCPU holds a pending interrupt
/// (a `WFI` then returns at once).
pub fn list_register_pending() -> bool {
    let Some(interface) = VGIC.get() else {
        return false;
    };
    let encoding = interface.list_register();
    let count = interface.list_registers().min(MAX_LIST_REGISTERS);
    (0..count).any(|number| {
        matches!(
            encoding.state(interface.read_lr(number)),
            LrState::Pending | LrState::PendingActive
        )
    })
}

/// Masks the virtual timer's interrupt in the hardware (it fired; the
/// guest unmasks it when it programs the timer again).
pub fn mask_virtual_timer() {
    let control = read_sysreg!("cntv_ctl_el0");
    write_sysreg!("cntv_ctl_el0", control | 0b10);
}

/// Turns the virtual timer off (no VCPU is loaded to take it).
pub fn stop_virtual_timer() {
    write_sysreg!("cntv_ctl_el0", 0u64);
}

/// Makes the loaded guest take `injection` when it resumes with
/// `context`.
pub fn inject(injection: Injection, context: &mut UserContext) {
    let vbar = read_sysreg!("vbar_el1");
    let taken = exit::inject(injection, context.pc, context.spsr, vbar);
    write_sysreg!("elr_el1", taken.elr);
    write_sysreg!("spsr_el1", taken.spsr_el1);
    write_sysreg!("esr_el1", taken.esr);
    if let Some(address) = taken.far {
        write_sysreg!("far_el1", address);
    }
    context.pc = taken.pc;
    context.spsr = taken.spsr;
}

/// The `HPFAR_EL2` value of the guest's trap with `syndrome` at
/// `address` (`FAR_EL2`): the register itself, except where the
/// architecture leaves it UNKNOWN, a stage-2 permission fault not taken on
/// a stage-1 table walk (a write to a read-only page, say); there the
/// same value comes from translating `address` through the guest's stage
/// 1, which is still in the hardware (`AT S1E1R`; KVM does the same).
/// `None`: the guest's stage 1 no longer maps `address` (another of its
/// CPUs changed it): the guest is to retry the access.
pub fn fault_page(syndrome: u64, address: u64) -> Option<u64> {
    if !exit::needs_translated_ipa(syndrome) {
        return Some(read_sysreg!("hpfar_el2"));
    }
    let saved = read_sysreg!("par_el1");
    // SAFETY: address translation only writes PAR_EL1 (the guest's, put
    // back below); it reads the guest's stage-1 tables, which the guest
    // controls but cannot use to reach anything: the walk itself goes
    // through the guest's stage 2.
    unsafe {
        asm!("at s1e1r, {}", "isb", in(reg) address, options(nostack, preserves_flags));
    }
    let result = read_sysreg!("par_el1");
    write_sysreg!("par_el1", saved);
    if result & 1 != 0 {
        return None;
    }
    // PAR_EL1.PA (bits 12 to 47) is the IPA's page; HPFAR_EL2.FIPA holds
    // it from bit 4.
    Some(((result >> 12) & 0xf_ffff_ffff) << 4)
}
