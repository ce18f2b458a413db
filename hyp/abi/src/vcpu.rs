//! Virtual CPUs: the registers a VMM reads and writes with
//! `VcpuReadRegister` / `VcpuWriteRegister`, and the virtual interrupt
//! limits of `VcpuInjectIrq`.
//!
//! The general-purpose registers, `SP_EL0`, the PC and `PSTATE` of a guest
//! CPU are its thread's registers (`TcbReadRegisters` /
//! `TcbWriteRegisters`); the numbers here name the EL1 system registers
//! that the VCPU object keeps for it.

/// Numbers of the VCPU's EL1 registers (the argument of
/// `VcpuReadRegister` / `VcpuWriteRegister`).
pub mod register {
    /// `SCTLR_EL1`.
    pub const SCTLR_EL1: u64 = 0;
    /// `TTBR0_EL1`.
    pub const TTBR0_EL1: u64 = 1;
    /// `TTBR1_EL1`.
    pub const TTBR1_EL1: u64 = 2;
    /// `TCR_EL1`.
    pub const TCR_EL1: u64 = 3;
    /// `MAIR_EL1`.
    pub const MAIR_EL1: u64 = 4;
    /// `AMAIR_EL1`.
    pub const AMAIR_EL1: u64 = 5;
    /// `VBAR_EL1`.
    pub const VBAR_EL1: u64 = 6;
    /// `CONTEXTIDR_EL1`.
    pub const CONTEXTIDR_EL1: u64 = 7;
    /// `TPIDR_EL1`.
    pub const TPIDR_EL1: u64 = 8;
    /// `SP_EL1`.
    pub const SP_EL1: u64 = 9;
    /// `ELR_EL1`.
    pub const ELR_EL1: u64 = 10;
    /// `SPSR_EL1`.
    pub const SPSR_EL1: u64 = 11;
    /// `ESR_EL1`.
    pub const ESR_EL1: u64 = 12;
    /// `FAR_EL1`.
    pub const FAR_EL1: u64 = 13;
    /// `AFSR0_EL1`.
    pub const AFSR0_EL1: u64 = 14;
    /// `AFSR1_EL1`.
    pub const AFSR1_EL1: u64 = 15;
    /// `PAR_EL1`.
    pub const PAR_EL1: u64 = 16;
    /// `CPACR_EL1`.
    pub const CPACR_EL1: u64 = 17;
    /// `CSSELR_EL1`.
    pub const CSSELR_EL1: u64 = 18;
    /// `CNTKCTL_EL1`.
    pub const CNTKCTL_EL1: u64 = 19;
    /// `CNTV_CTL_EL0` (the guest's virtual timer control).
    pub const CNTV_CTL_EL0: u64 = 20;
    /// `CNTV_CVAL_EL0` (the guest's virtual timer deadline).
    pub const CNTV_CVAL_EL0: u64 = 21;
    /// `TPIDR_EL0`.
    pub const TPIDR_EL0: u64 = 22;
    /// `TPIDRRO_EL0`.
    pub const TPIDRRO_EL0: u64 = 23;
    /// `MDSCR_EL1`.
    pub const MDSCR_EL1: u64 = 24;
    /// The guest's `MPIDR_EL1` (`VMPIDR_EL2`): what the guest reads as its
    /// CPU's affinity. Bit 31 (RES1) is always set.
    pub const VMPIDR: u64 = 25;
    /// Registers in all.
    pub const COUNT: usize = 26;
}

/// The first interrupt ID `VcpuInjectIrq` refuses (1020 to 1023 are
/// special INTIDs).
pub const VIRTUAL_IRQ_LIMIT: u64 = 1020;

/// The virtual timer's interrupt (PPI 11): the core forwards the guest's
/// own timer to it; a VMM does not inject it.
pub const VIRTUAL_TIMER_INTID: u64 = 27;

/// `PSTATE` of a VCPU thread that has never run: EL1h with all exceptions
/// masked (what Linux's boot protocol asks for).
pub const INITIAL_SPSR: u64 = 0x3c5;
