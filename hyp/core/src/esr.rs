//! Decoding of the AArch64 exception syndrome register as seen at EL2
//! (`ESR_EL2`).
//!
//! Every exception taken to the hypervisor comes with a 64-bit syndrome that
//! says why it happened: the exception class (EC, bits [31:26]), the length of
//! the trapped instruction (IL, bit 25), the class-specific syndrome (ISS,
//! bits [24:0]) and, for a few classes, a second syndrome (ISS2, bits
//! [55:32]). The arch layer reads `ESR_EL2` once at the exception entry and
//! hands the raw value here; this module turns it into typed values for
//! VM-exit decoding and into one readable line for the report of an
//! unexpected exception.
//!
//! The decoder is pure and total: every `u64` yields a [`Syndrome`], every
//! 6-bit code an [`ExceptionClass`] (codes the architecture leaves undefined
//! become [`ExceptionClass::Reserved`]), and nothing here can panic, so a
//! guest cannot bring the core down by provoking a strange syndrome.
//!
//! Encodings and names follow the Arm Architecture Reference Manual for
//! A-profile (DDI 0487), description of `ESR_EL2` and its ISS encodings.

use core::fmt;

/// The longest line [`Syndrome`]'s `Display` writes, in bytes, so a caller
/// can format it into a fixed buffer. A test checks the bound against the
/// worst cases of every exception class.
pub const MAX_LINE_LENGTH: usize = 336;

/// Bits `[shift + width - 1 : shift]` of `value`, for a `width` of at most 32.
#[allow(
    clippy::cast_possible_truncation,
    reason = "the mask keeps at most 32 bits, so the narrowing cast loses nothing"
)]
const fn field32(value: u64, shift: u32, width: u32) -> u32 {
    ((value >> shift) & ((1_u64 << width) - 1)) as u32
}

/// Bits `[shift + width - 1 : shift]` of `value`, for a `width` of at most 8.
#[allow(
    clippy::cast_possible_truncation,
    reason = "the mask keeps at most 8 bits, so the narrowing cast loses nothing"
)]
const fn field8(value: u64, shift: u32, width: u32) -> u8 {
    ((value >> shift) & ((1_u64 << width) - 1)) as u8
}

/// Bit `bit` of `value`.
const fn flag(value: u64, bit: u32) -> bool {
    (value >> bit) & 1 == 1
}

/// Exception class, ESR bits [31:26].
///
/// One variant per value the Arm ARM defines for `ESR_EL2` (including the
/// classes only ever reported to EL3, so the same type can describe any
/// `ESR_ELx`). Values the architecture leaves unallocated decode to
/// [`ExceptionClass::Reserved`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExceptionClass {
    /// 0x00: unknown reason, including most UNDEFINED instructions.
    Unknown,
    /// 0x01: trapped WFI, WFE, WFIT or WFET instruction.
    TrappedWfx,
    /// 0x03: trapped AArch32 MCR or MRC access to coprocessor 15.
    TrappedMcrMrcCp15,
    /// 0x04: trapped AArch32 MCRR or MRRC access to coprocessor 15.
    TrappedMcrrMrrcCp15,
    /// 0x05: trapped AArch32 MCR or MRC access to coprocessor 14.
    TrappedMcrMrcCp14,
    /// 0x06: trapped AArch32 LDC or STC access (debug data transfer).
    TrappedLdcStc,
    /// 0x07: access to SME, SVE, Advanced SIMD or floating-point
    /// functionality trapped by an FPEN or TFP control.
    TrappedFloatingPoint,
    /// 0x08: trapped AArch32 VMRS access, from the ID group trap.
    TrappedVmrs,
    /// 0x09: trapped use of a pointer authentication instruction.
    TrappedPointerAuthentication,
    /// 0x0A: trapped execution of an instruction not covered by another
    /// class (LD64B, ST64B, ST64BV, ST64BV0, and some profiling and trace
    /// synchronization instructions).
    TrappedOtherInstruction,
    /// 0x0C: trapped AArch32 MRRC access to coprocessor 14.
    TrappedMrrcCp14,
    /// 0x0D: Branch Target Identification exception.
    BranchTarget,
    /// 0x0E: Illegal Execution state.
    IllegalExecutionState,
    /// 0x11: SVC instruction in AArch32 state.
    SvcAarch32,
    /// 0x12: HVC instruction in AArch32 state.
    HvcAarch32,
    /// 0x13: SMC instruction in AArch32 state.
    SmcAarch32,
    /// 0x14: trapped MSRR, MRRS or 128-bit System instruction in AArch64
    /// state.
    TrappedMsrrMrrs,
    /// 0x15: SVC instruction in AArch64 state.
    SvcAarch64,
    /// 0x16: HVC instruction in AArch64 state.
    HvcAarch64,
    /// 0x17: SMC instruction in AArch64 state.
    SmcAarch64,
    /// 0x18: trapped MSR, MRS or System instruction in AArch64 state.
    TrappedSystemRegister,
    /// 0x19: access to SVE functionality trapped.
    TrappedSve,
    /// 0x1A: trapped ERET, ERETAA or ERETAB (nested virtualization).
    TrappedEret,
    /// 0x1B: exception from a TSTART instruction (transactional memory).
    TransactionStart,
    /// 0x1C: pointer authentication failure (FEAT_FPAC).
    PointerAuthenticationFailure,
    /// 0x1D: access to SME functionality trapped.
    TrappedSme,
    /// 0x1E: Granule Protection Check exception (reported to EL3 only).
    GranuleProtectionCheck,
    /// 0x1F: IMPLEMENTATION DEFINED exception to EL3.
    ImplementationDefinedEl3,
    /// 0x20: Instruction Abort from a lower Exception level.
    InstructionAbortLowerLevel,
    /// 0x21: Instruction Abort taken without a change in Exception level.
    InstructionAbortSameLevel,
    /// 0x22: PC alignment fault.
    PcAlignment,
    /// 0x24: Data Abort from a lower Exception level.
    DataAbortLowerLevel,
    /// 0x25: Data Abort taken without a change in Exception level.
    DataAbortSameLevel,
    /// 0x26: SP alignment fault.
    SpAlignment,
    /// 0x27: Memory Operation exception (FEAT_MOPS CPY* and SET*).
    MemoryOperation,
    /// 0x28: trapped floating-point exception taken from AArch32 state.
    FloatingPointExceptionAarch32,
    /// 0x2C: trapped floating-point exception taken from AArch64 state.
    FloatingPointExceptionAarch64,
    /// 0x2D: Guarded Control Stack exception.
    GuardedControlStack,
    /// 0x2F: SError exception.
    SError,
    /// 0x30: Breakpoint exception from a lower Exception level.
    BreakpointLowerLevel,
    /// 0x31: Breakpoint exception taken without a change in Exception level.
    BreakpointSameLevel,
    /// 0x32: Software Step exception from a lower Exception level.
    SoftwareStepLowerLevel,
    /// 0x33: Software Step exception taken without a change in Exception
    /// level.
    SoftwareStepSameLevel,
    /// 0x34: Watchpoint exception from a lower Exception level.
    WatchpointLowerLevel,
    /// 0x35: Watchpoint exception taken without a change in Exception level.
    WatchpointSameLevel,
    /// 0x38: BKPT instruction in AArch32 state.
    BkptAarch32,
    /// 0x3A: Vector Catch exception from AArch32 state.
    VectorCatchAarch32,
    /// 0x3C: BRK instruction in AArch64 state.
    BrkAarch64,
    /// 0x3D: Profiling exception (FEAT_EBEP, FEAT_SPE_EXC, FEAT_TRBE_EXC).
    Profiling,
    /// A code the architecture does not allocate. [`ExceptionClass::from_code`]
    /// produces it only for such codes; the value is the 6-bit code.
    Reserved(u8),
}

impl ExceptionClass {
    /// The class for a 6-bit EC value; bits above bit 5 are ignored.
    #[inline]
    pub const fn from_code(code: u8) -> Self {
        match code & 0x3f {
            0x00 => Self::Unknown,
            0x01 => Self::TrappedWfx,
            0x03 => Self::TrappedMcrMrcCp15,
            0x04 => Self::TrappedMcrrMrrcCp15,
            0x05 => Self::TrappedMcrMrcCp14,
            0x06 => Self::TrappedLdcStc,
            0x07 => Self::TrappedFloatingPoint,
            0x08 => Self::TrappedVmrs,
            0x09 => Self::TrappedPointerAuthentication,
            0x0a => Self::TrappedOtherInstruction,
            0x0c => Self::TrappedMrrcCp14,
            0x0d => Self::BranchTarget,
            0x0e => Self::IllegalExecutionState,
            0x11 => Self::SvcAarch32,
            0x12 => Self::HvcAarch32,
            0x13 => Self::SmcAarch32,
            0x14 => Self::TrappedMsrrMrrs,
            0x15 => Self::SvcAarch64,
            0x16 => Self::HvcAarch64,
            0x17 => Self::SmcAarch64,
            0x18 => Self::TrappedSystemRegister,
            0x19 => Self::TrappedSve,
            0x1a => Self::TrappedEret,
            0x1b => Self::TransactionStart,
            0x1c => Self::PointerAuthenticationFailure,
            0x1d => Self::TrappedSme,
            0x1e => Self::GranuleProtectionCheck,
            0x1f => Self::ImplementationDefinedEl3,
            0x20 => Self::InstructionAbortLowerLevel,
            0x21 => Self::InstructionAbortSameLevel,
            0x22 => Self::PcAlignment,
            0x24 => Self::DataAbortLowerLevel,
            0x25 => Self::DataAbortSameLevel,
            0x26 => Self::SpAlignment,
            0x27 => Self::MemoryOperation,
            0x28 => Self::FloatingPointExceptionAarch32,
            0x2c => Self::FloatingPointExceptionAarch64,
            0x2d => Self::GuardedControlStack,
            0x2f => Self::SError,
            0x30 => Self::BreakpointLowerLevel,
            0x31 => Self::BreakpointSameLevel,
            0x32 => Self::SoftwareStepLowerLevel,
            0x33 => Self::SoftwareStepSameLevel,
            0x34 => Self::WatchpointLowerLevel,
            0x35 => Self::WatchpointSameLevel,
            0x38 => Self::BkptAarch32,
            0x3a => Self::VectorCatchAarch32,
            0x3c => Self::BrkAarch64,
            0x3d => Self::Profiling,
            other => Self::Reserved(other),
        }
    }

    /// The 6-bit EC value of this class.
    ///
    /// For [`ExceptionClass::Reserved`] this is the stored code, cut to 6
    /// bits.
    pub const fn code(self) -> u8 {
        match self {
            Self::Unknown => 0x00,
            Self::TrappedWfx => 0x01,
            Self::TrappedMcrMrcCp15 => 0x03,
            Self::TrappedMcrrMrrcCp15 => 0x04,
            Self::TrappedMcrMrcCp14 => 0x05,
            Self::TrappedLdcStc => 0x06,
            Self::TrappedFloatingPoint => 0x07,
            Self::TrappedVmrs => 0x08,
            Self::TrappedPointerAuthentication => 0x09,
            Self::TrappedOtherInstruction => 0x0a,
            Self::TrappedMrrcCp14 => 0x0c,
            Self::BranchTarget => 0x0d,
            Self::IllegalExecutionState => 0x0e,
            Self::SvcAarch32 => 0x11,
            Self::HvcAarch32 => 0x12,
            Self::SmcAarch32 => 0x13,
            Self::TrappedMsrrMrrs => 0x14,
            Self::SvcAarch64 => 0x15,
            Self::HvcAarch64 => 0x16,
            Self::SmcAarch64 => 0x17,
            Self::TrappedSystemRegister => 0x18,
            Self::TrappedSve => 0x19,
            Self::TrappedEret => 0x1a,
            Self::TransactionStart => 0x1b,
            Self::PointerAuthenticationFailure => 0x1c,
            Self::TrappedSme => 0x1d,
            Self::GranuleProtectionCheck => 0x1e,
            Self::ImplementationDefinedEl3 => 0x1f,
            Self::InstructionAbortLowerLevel => 0x20,
            Self::InstructionAbortSameLevel => 0x21,
            Self::PcAlignment => 0x22,
            Self::DataAbortLowerLevel => 0x24,
            Self::DataAbortSameLevel => 0x25,
            Self::SpAlignment => 0x26,
            Self::MemoryOperation => 0x27,
            Self::FloatingPointExceptionAarch32 => 0x28,
            Self::FloatingPointExceptionAarch64 => 0x2c,
            Self::GuardedControlStack => 0x2d,
            Self::SError => 0x2f,
            Self::BreakpointLowerLevel => 0x30,
            Self::BreakpointSameLevel => 0x31,
            Self::SoftwareStepLowerLevel => 0x32,
            Self::SoftwareStepSameLevel => 0x33,
            Self::WatchpointLowerLevel => 0x34,
            Self::WatchpointSameLevel => 0x35,
            Self::BkptAarch32 => 0x38,
            Self::VectorCatchAarch32 => 0x3a,
            Self::BrkAarch64 => 0x3c,
            Self::Profiling => 0x3d,
            Self::Reserved(code) => code & 0x3f,
        }
    }

    /// The class as the Arm ARM words it, without a trailing full stop.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Unknown => "Unknown reason",
            Self::TrappedWfx => "Trapped WF* instruction execution",
            Self::TrappedMcrMrcCp15 => "Trapped MCR or MRC access with coproc 0b1111",
            Self::TrappedMcrrMrrcCp15 => "Trapped MCRR or MRRC access with coproc 0b1111",
            Self::TrappedMcrMrcCp14 => "Trapped MCR or MRC access with coproc 0b1110",
            Self::TrappedLdcStc => "Trapped LDC or STC access",
            Self::TrappedFloatingPoint => {
                "Access to SME, SVE, Advanced SIMD or floating-point functionality trapped"
            }
            Self::TrappedVmrs => "Trapped VMRS access, from ID group trap",
            Self::TrappedPointerAuthentication => {
                "Trapped use of a Pointer authentication instruction"
            }
            Self::TrappedOtherInstruction => {
                "Trapped execution of any instruction not covered by other EC values"
            }
            Self::TrappedMrrcCp14 => "Trapped MRRC access with coproc 0b1110",
            Self::BranchTarget => "Branch Target Exception",
            Self::IllegalExecutionState => "Illegal Execution state",
            Self::SvcAarch32 => "SVC instruction execution in AArch32 state",
            Self::HvcAarch32 => "HVC instruction execution in AArch32 state",
            Self::SmcAarch32 => "SMC instruction execution in AArch32 state",
            Self::TrappedMsrrMrrs => {
                "Trapped MSRR, MRRS or System instruction execution in AArch64 state"
            }
            Self::SvcAarch64 => "SVC instruction execution in AArch64 state",
            Self::HvcAarch64 => "HVC instruction execution in AArch64 state",
            Self::SmcAarch64 => "SMC instruction execution in AArch64 state",
            Self::TrappedSystemRegister => {
                "Trapped MSR, MRS or System instruction execution in AArch64 state"
            }
            Self::TrappedSve => "Access to SVE functionality trapped",
            Self::TrappedEret => "Trapped ERET, ERETAA or ERETAB instruction execution",
            Self::TransactionStart => "Exception from an access to a TSTART instruction",
            Self::PointerAuthenticationFailure => "Exception from a PAC Fail",
            Self::TrappedSme => "Access to SME functionality trapped",
            Self::GranuleProtectionCheck => "Granule Protection Check exception",
            Self::ImplementationDefinedEl3 => "IMPLEMENTATION DEFINED exception to EL3",
            Self::InstructionAbortLowerLevel => "Instruction Abort from a lower Exception level",
            Self::InstructionAbortSameLevel => {
                "Instruction Abort taken without a change in Exception level"
            }
            Self::PcAlignment => "PC alignment fault exception",
            Self::DataAbortLowerLevel => "Data Abort from a lower Exception level",
            Self::DataAbortSameLevel => "Data Abort taken without a change in Exception level",
            Self::SpAlignment => "SP alignment fault exception",
            Self::MemoryOperation => "Memory Operation Exception",
            Self::FloatingPointExceptionAarch32 => {
                "Trapped floating-point exception taken from AArch32 state"
            }
            Self::FloatingPointExceptionAarch64 => {
                "Trapped floating-point exception taken from AArch64 state"
            }
            Self::GuardedControlStack => "GCS exception",
            Self::SError => "SError exception",
            Self::BreakpointLowerLevel => "Breakpoint exception from a lower Exception level",
            Self::BreakpointSameLevel => {
                "Breakpoint exception taken without a change in Exception level"
            }
            Self::SoftwareStepLowerLevel => "Software Step exception from a lower Exception level",
            Self::SoftwareStepSameLevel => {
                "Software Step exception taken without a change in Exception level"
            }
            Self::WatchpointLowerLevel => "Watchpoint exception from a lower Exception level",
            Self::WatchpointSameLevel => {
                "Watchpoint exception taken without a change in Exception level"
            }
            Self::BkptAarch32 => "BKPT instruction execution in AArch32 state",
            Self::VectorCatchAarch32 => "Vector Catch exception from AArch32 state",
            Self::BrkAarch64 => "BRK instruction execution in AArch64 state",
            Self::Profiling => "Profiling exception",
            Self::Reserved(_) => "Reserved exception class",
        }
    }
}

impl fmt::Display for ExceptionClass {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// What kind of fault a fault status code (DFSC or IFSC, ISS bits [5:0])
/// reports. The translation level, where there is one, is kept apart in
/// [`FaultStatus::level`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Address size fault (output address or table base too wide).
    AddressSize,
    /// Translation fault (no valid descriptor).
    Translation,
    /// Access flag fault.
    AccessFlag,
    /// Permission fault.
    Permission,
    /// Synchronous External abort, not on a translation table walk.
    SynchronousExternalAbort,
    /// Synchronous Tag Check fault (FEAT_MTE2; data side only).
    SynchronousTagCheck,
    /// Synchronous External abort on a translation table walk or hardware
    /// update of a translation table.
    SynchronousExternalAbortOnWalk,
    /// Synchronous parity or ECC error on a memory access, not on a
    /// translation table walk (only without FEAT_RAS).
    SynchronousParityOrEcc,
    /// Synchronous parity or ECC error on a translation table walk or
    /// hardware update of a translation table (only without FEAT_RAS).
    SynchronousParityOrEccOnWalk,
    /// Alignment fault (data side only).
    Alignment,
    /// Granule Protection Fault on a translation table walk or hardware
    /// update of a translation table (FEAT_RME).
    GranuleProtectionOnWalk,
    /// Granule Protection Fault, not on a translation table walk (FEAT_RME).
    GranuleProtection,
    /// TLB conflict abort.
    TlbConflict,
    /// Unsupported atomic hardware update fault (FEAT_HAFDBS).
    UnsupportedAtomicUpdate,
    /// IMPLEMENTATION DEFINED fault (Lockdown) (data side only).
    ImplementationDefinedLockdown,
    /// IMPLEMENTATION DEFINED fault (Unsupported Exclusive or Atomic access)
    /// (data side only).
    ImplementationDefinedExclusiveOrAtomic,
    /// A code with no meaning for this kind of abort. The AArch32-only
    /// domain faults (0x3D, 0x3E) are counted here too.
    Reserved,
}

impl FaultKind {
    /// The kind in lower case, for use inside a sentence.
    pub const fn name(self) -> &'static str {
        match self {
            Self::AddressSize => "address size fault",
            Self::Translation => "translation fault",
            Self::AccessFlag => "access flag fault",
            Self::Permission => "permission fault",
            Self::SynchronousExternalAbort => "synchronous external abort",
            Self::SynchronousTagCheck => "synchronous tag check fault",
            Self::SynchronousExternalAbortOnWalk => {
                "synchronous external abort on translation table walk"
            }
            Self::SynchronousParityOrEcc => "synchronous parity or ECC error",
            Self::SynchronousParityOrEccOnWalk => {
                "synchronous parity or ECC error on translation table walk"
            }
            Self::Alignment => "alignment fault",
            Self::GranuleProtectionOnWalk => "granule protection fault on translation table walk",
            Self::GranuleProtection => "granule protection fault",
            Self::TlbConflict => "TLB conflict abort",
            Self::UnsupportedAtomicUpdate => "unsupported atomic hardware update fault",
            Self::ImplementationDefinedLockdown => "IMPLEMENTATION DEFINED fault (lockdown)",
            Self::ImplementationDefinedExclusiveOrAtomic => {
                "IMPLEMENTATION DEFINED fault (unsupported exclusive or atomic access)"
            }
            Self::Reserved => "reserved fault status code",
        }
    }
}

/// A decoded fault status code: DFSC for a Data Abort, IFSC for an
/// Instruction Abort (ISS bits [5:0]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultStatus {
    /// The raw 6-bit code.
    pub code: u8,
    /// What the code reports.
    pub kind: FaultKind,
    /// The translation table level the fault was found at, -2 to 3, where
    /// the code names one. Level 0 of an address size fault also covers a
    /// fault on the translation table base register.
    pub level: Option<i8>,
}

impl FaultStatus {
    /// Decodes a Data Fault Status Code (DFSC). Bits above bit 5 are ignored.
    pub const fn data(code: u8) -> Self {
        Self::decode(code, true)
    }

    /// Decodes an Instruction Fault Status Code (IFSC). Bits above bit 5 are
    /// ignored. Codes that exist only for data accesses (tag check,
    /// alignment, IMPLEMENTATION DEFINED lockdown and exclusive faults) are
    /// reserved here.
    pub const fn instruction(code: u8) -> Self {
        Self::decode(code, false)
    }

    /// The kind's name, see [`FaultKind::name`].
    pub const fn name(self) -> &'static str {
        self.kind.name()
    }

    const fn decode(code: u8, data_side: bool) -> Self {
        let code = code & 0x3f;
        // The low two bits give levels 0 to 3 in the blocks of four codes.
        let low_level = Some((code & 0b11) as i8);
        let (kind, level) = match code {
            0x00..=0x03 => (FaultKind::AddressSize, low_level),
            0x04..=0x07 => (FaultKind::Translation, low_level),
            0x08..=0x0b => (FaultKind::AccessFlag, low_level),
            0x0c..=0x0f => (FaultKind::Permission, low_level),
            0x10 => (FaultKind::SynchronousExternalAbort, None),
            0x11 if data_side => (FaultKind::SynchronousTagCheck, None),
            0x12 => (FaultKind::SynchronousExternalAbortOnWalk, Some(-2)),
            0x13 => (FaultKind::SynchronousExternalAbortOnWalk, Some(-1)),
            0x14..=0x17 => (FaultKind::SynchronousExternalAbortOnWalk, low_level),
            0x18 => (FaultKind::SynchronousParityOrEcc, None),
            0x1b => (FaultKind::SynchronousParityOrEccOnWalk, Some(-1)),
            0x1c..=0x1f => (FaultKind::SynchronousParityOrEccOnWalk, low_level),
            0x21 if data_side => (FaultKind::Alignment, None),
            0x22 => (FaultKind::GranuleProtectionOnWalk, Some(-2)),
            0x23 => (FaultKind::GranuleProtectionOnWalk, Some(-1)),
            0x24..=0x27 => (FaultKind::GranuleProtectionOnWalk, low_level),
            0x28 => (FaultKind::GranuleProtection, None),
            0x29 => (FaultKind::AddressSize, Some(-1)),
            0x2a => (FaultKind::Translation, Some(-2)),
            0x2b => (FaultKind::Translation, Some(-1)),
            0x2c => (FaultKind::AddressSize, Some(-2)),
            0x30 => (FaultKind::TlbConflict, None),
            0x31 => (FaultKind::UnsupportedAtomicUpdate, None),
            0x34 if data_side => (FaultKind::ImplementationDefinedLockdown, None),
            0x35 if data_side => (FaultKind::ImplementationDefinedExclusiveOrAtomic, None),
            _ => (FaultKind::Reserved, None),
        };
        Self { code, kind, level }
    }
}

impl fmt::Display for FaultStatus {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())?;
        if let FaultKind::Reserved = self.kind {
            write!(formatter, " {:#04x}", self.code)?;
        }
        if let Some(level) = self.level {
            write!(formatter, ", level {level}")?;
        }
        Ok(())
    }
}

/// Size of a data access, from the SAS field of a Data Abort syndrome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessSize {
    /// 1 byte.
    Byte,
    /// 2 bytes.
    Halfword,
    /// 4 bytes.
    Word,
    /// 8 bytes.
    Doubleword,
}

impl AccessSize {
    /// The size from the 2-bit SAS encoding; bits above bit 1 are ignored.
    pub const fn from_encoding(encoding: u8) -> Self {
        match encoding & 0b11 {
            0 => Self::Byte,
            1 => Self::Halfword,
            2 => Self::Word,
            _ => Self::Doubleword,
        }
    }

    /// Number of bytes accessed.
    pub const fn bytes(self) -> u8 {
        match self {
            Self::Byte => 1,
            Self::Halfword => 2,
            Self::Word => 4,
            Self::Doubleword => 8,
        }
    }
}

/// A general-purpose register named in a syndrome, printed the way the
/// assembler spells it (`x3`, `w3`; register 31 is the zero register).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GeneralRegister {
    /// Register number, 0 to 31.
    pub number: u8,
    /// Whether the access used the 64-bit view (`x`) rather than the 32-bit
    /// view (`w`).
    pub wide: bool,
}

impl fmt::Display for GeneralRegister {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = if self.wide { 'x' } else { 'w' };
        if self.number == 31 {
            write!(formatter, "{prefix}zr")
        } else {
            write!(formatter, "{prefix}{}", self.number)
        }
    }
}

/// The instruction syndrome of a Data Abort, present only when ISV is 1:
/// enough to emulate the load or store without decoding the instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessSyndrome {
    /// Access size (SAS).
    pub size: AccessSize,
    /// Whether a load sign-extends the value (SSE).
    pub sign_extend: bool,
    /// The transfer register number, 0 to 31 (SRT).
    pub register: u8,
    /// Whether the register is used as 64 bits (SF).
    pub register_64bit: bool,
    /// Whether the instruction has acquire or release semantics (AR).
    pub acquire_release: bool,
}

impl AccessSyndrome {
    /// The transfer register as it appears in the instruction.
    pub const fn general_register(self) -> GeneralRegister {
        GeneralRegister {
            number: self.register,
            wide: self.register_64bit,
        }
    }
}

/// A decoded Data Abort syndrome (EC 0x24 or 0x25).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataAbort {
    /// The fault status code (DFSC, ISS bits [5:0]).
    pub status: FaultStatus,
    /// Whether the access was a write (WnR, bit 6). Always set for cache
    /// maintenance and address translation instructions.
    pub write: bool,
    /// The instruction syndrome, if valid (ISV, bit 24, and bits [23:14]).
    pub access: Option<AccessSyndrome>,
    /// Whether the fault came from the stage 2 translation of a stage 1
    /// translation table walk (S1PTW, bit 7).
    pub stage1_translation_walk: bool,
    /// Whether the fault came from a cache maintenance or address
    /// translation instruction (CM, bit 8).
    pub cache_maintenance: bool,
    /// The IMPLEMENTATION DEFINED external abort type (EA, bit 9).
    pub external_abort_type: bool,
    /// Whether the fault address register does not hold a valid address
    /// (FnV, bit 10).
    pub far_not_valid: bool,
    /// Whether the fault came from a register access redirected to memory by
    /// `VNCR_EL2` (VNCR, bit 13).
    pub vncr: bool,
}

/// A decoded Instruction Abort syndrome (EC 0x20 or 0x21).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstructionAbort {
    /// The fault status code (IFSC, ISS bits [5:0]).
    pub status: FaultStatus,
    /// Whether the fault came from the stage 2 translation of a stage 1
    /// translation table walk (S1PTW, bit 7).
    pub stage1_translation_walk: bool,
    /// The IMPLEMENTATION DEFINED external abort type (EA, bit 9).
    pub external_abort_type: bool,
    /// Whether the fault address register does not hold a valid address
    /// (FnV, bit 10).
    pub far_not_valid: bool,
}

/// A trapped MSR, MRS or System instruction (EC 0x18).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SystemRegisterAccess {
    /// Op0, ISS bits [21:20].
    pub op0: u8,
    /// Op1, ISS bits [16:14].
    pub op1: u8,
    /// CRn, ISS bits [13:10].
    pub crn: u8,
    /// CRm, ISS bits [4:1].
    pub crm: u8,
    /// Op2, ISS bits [19:17].
    pub op2: u8,
    /// The general-purpose register transferred, 0 to 31 (Rt, bits [9:5]).
    pub register: u8,
    /// Whether the instruction reads the system register (MRS, SYSL); a
    /// write is MSR or SYS (Direction, bit 0).
    pub read: bool,
}

impl fmt::Display for SystemRegisterAccess {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let register = GeneralRegister {
            number: self.register,
            wide: true,
        };
        let Self {
            op0,
            op1,
            crn,
            crm,
            op2,
            ..
        } = *self;
        match (op0, self.read) {
            (1, true) => write!(formatter, "SYSL {register}, #{op1}, C{crn}, C{crm}, #{op2}"),
            (1, false) => write!(formatter, "SYS #{op1}, C{crn}, C{crm}, #{op2}, {register}"),
            (_, true) => write!(
                formatter,
                "MRS {register}, S{op0}_{op1}_C{crn}_C{crm}_{op2}"
            ),
            (_, false) => write!(
                formatter,
                "MSR S{op0}_{op1}_C{crn}_C{crm}_{op2}, {register}"
            ),
        }
    }
}

/// Which wait instruction was trapped (TI, ISS bits [1:0]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitFor {
    /// WFI.
    Interrupt,
    /// WFE.
    Event,
    /// WFIT (FEAT_WFxT).
    InterruptWithTimeout,
    /// WFET (FEAT_WFxT).
    EventWithTimeout,
}

impl WaitFor {
    /// The instruction's mnemonic.
    pub const fn mnemonic(self) -> &'static str {
        match self {
            Self::Interrupt => "WFI",
            Self::Event => "WFE",
            Self::InterruptWithTimeout => "WFIT",
            Self::EventWithTimeout => "WFET",
        }
    }
}

/// A trapped WFI, WFE, WFIT or WFET instruction (EC 0x01).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitInstruction {
    /// Which instruction.
    pub kind: WaitFor,
    /// For WFIT and WFET, the register holding the timeout, when the
    /// syndrome reports it (RV, bit 2; RN, bits [9:5]).
    pub register: Option<u8>,
}

impl fmt::Display for WaitInstruction {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.kind.mnemonic())?;
        if let Some(number) = self.register {
            let register = GeneralRegister { number, wide: true };
            write!(formatter, " {register}")?;
        }
        Ok(())
    }
}

/// The PE error state after an asynchronous SError (AET, ISS bits [12:10]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsynchronousErrorType {
    /// Uncontainable (UC).
    Uncontainable,
    /// Unrecoverable state (UEU).
    Unrecoverable,
    /// Restartable state (UEO).
    Restartable,
    /// Recoverable state (UER).
    Recoverable,
    /// Corrected (CE).
    Corrected,
    /// A reserved encoding; the value is the 3-bit field.
    Reserved(u8),
}

impl AsynchronousErrorType {
    /// The type from the 3-bit AET encoding; bits above bit 2 are ignored.
    pub const fn from_encoding(encoding: u8) -> Self {
        match encoding & 0b111 {
            0b000 => Self::Uncontainable,
            0b001 => Self::Unrecoverable,
            0b010 => Self::Restartable,
            0b011 => Self::Recoverable,
            0b110 => Self::Corrected,
            other => Self::Reserved(other),
        }
    }

    /// The Arm ARM's name for the state.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Uncontainable => "Uncontainable (UC)",
            Self::Unrecoverable => "Unrecoverable state (UEU)",
            Self::Restartable => "Restartable state (UEO)",
            Self::Recoverable => "Recoverable state (UER)",
            Self::Corrected => "Corrected (CE)",
            Self::Reserved(_) => "reserved error type",
        }
    }
}

/// A decoded SError syndrome (EC 0x2F).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SErrorSyndrome {
    /// IDS (bit 24) is set: bits [23:0] hold an IMPLEMENTATION DEFINED
    /// syndrome, given here.
    ImplementationDefined(u32),
    /// DFSC 0x00: uncategorized error.
    Uncategorized,
    /// DFSC 0x11: asynchronous SError interrupt.
    Asynchronous {
        /// The PE error state (AET).
        error_type: AsynchronousErrorType,
        /// Whether the error was synchronized by the implicit error
        /// synchronization barrier and taken at once (IESB, bit 13).
        implicit_barrier: bool,
        /// The IMPLEMENTATION DEFINED external abort type (EA, bit 9).
        external_abort_type: bool,
    },
    /// Any other DFSC, which is reserved for SError; the value is the code.
    ReservedStatus(u8),
}

impl fmt::Display for SErrorSyndrome {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::ImplementationDefined(syndrome) => {
                write!(formatter, "IMPLEMENTATION DEFINED syndrome {syndrome:#08x}")
            }
            Self::Uncategorized => formatter.write_str("uncategorized error"),
            Self::Asynchronous {
                error_type,
                implicit_barrier,
                external_abort_type,
            } => {
                write!(
                    formatter,
                    "asynchronous SError interrupt, {}",
                    error_type.name()
                )?;
                if let AsynchronousErrorType::Reserved(encoding) = error_type {
                    write!(formatter, " {encoding:#05b}")?;
                }
                if implicit_barrier {
                    formatter.write_str(", synchronized by implicit error barrier")?;
                }
                if external_abort_type {
                    formatter.write_str(", EA set")?;
                }
                Ok(())
            }
            Self::ReservedStatus(code) => {
                write!(formatter, "reserved fault status code {code:#04x}")
            }
        }
    }
}

/// A decoded syndrome: the raw `ESR_ELx` value with typed views of its
/// fields.
///
/// Every accessor is total. The typed views return `None` when the
/// exception class is not the one they describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Syndrome {
    /// The register value as read.
    pub raw: u64,
}

impl Syndrome {
    /// Wraps a raw `ESR_ELx` value.
    pub const fn new(esr: u64) -> Self {
        Self { raw: esr }
    }

    /// The exception class, bits [31:26].
    #[inline]
    pub const fn class(self) -> ExceptionClass {
        ExceptionClass::from_code(field8(self.raw, 26, 6))
    }

    /// IL, bit 25: whether the trapped instruction was 32 bits long. The
    /// architecture also sets it for exceptions not caused by an instruction
    /// (aborts without a valid instruction syndrome, SError, most debug
    /// exceptions, class 0x00).
    pub const fn instruction_length_32(self) -> bool {
        flag(self.raw, 25)
    }

    /// The instruction specific syndrome, bits [24:0].
    pub const fn iss(self) -> u32 {
        field32(self.raw, 0, 25)
    }

    /// The second instruction specific syndrome, bits [55:32].
    pub const fn iss2(self) -> u32 {
        field32(self.raw, 32, 24)
    }

    /// The Data Abort syndrome, for classes 0x24 and 0x25.
    pub const fn data_abort(self) -> Option<DataAbort> {
        match self.class() {
            ExceptionClass::DataAbortLowerLevel | ExceptionClass::DataAbortSameLevel => {}
            _ => return None,
        }
        let raw = self.raw;
        let access = if flag(raw, 24) {
            Some(AccessSyndrome {
                size: AccessSize::from_encoding(field8(raw, 22, 2)),
                sign_extend: flag(raw, 21),
                register: field8(raw, 16, 5),
                register_64bit: flag(raw, 15),
                acquire_release: flag(raw, 14),
            })
        } else {
            None
        };
        Some(DataAbort {
            status: FaultStatus::data(field8(raw, 0, 6)),
            write: flag(raw, 6),
            access,
            stage1_translation_walk: flag(raw, 7),
            cache_maintenance: flag(raw, 8),
            external_abort_type: flag(raw, 9),
            far_not_valid: flag(raw, 10),
            vncr: flag(raw, 13),
        })
    }

    /// The Instruction Abort syndrome, for classes 0x20 and 0x21.
    pub const fn instruction_abort(self) -> Option<InstructionAbort> {
        match self.class() {
            ExceptionClass::InstructionAbortLowerLevel
            | ExceptionClass::InstructionAbortSameLevel => {}
            _ => return None,
        }
        let raw = self.raw;
        Some(InstructionAbort {
            status: FaultStatus::instruction(field8(raw, 0, 6)),
            stage1_translation_walk: flag(raw, 7),
            external_abort_type: flag(raw, 9),
            far_not_valid: flag(raw, 10),
        })
    }

    /// The trapped MSR, MRS or System instruction, for class 0x18.
    pub const fn system_register_access(self) -> Option<SystemRegisterAccess> {
        match self.class() {
            ExceptionClass::TrappedSystemRegister => {}
            _ => return None,
        }
        let raw = self.raw;
        Some(SystemRegisterAccess {
            op0: field8(raw, 20, 2),
            op1: field8(raw, 14, 3),
            crn: field8(raw, 10, 4),
            crm: field8(raw, 1, 4),
            op2: field8(raw, 17, 3),
            register: field8(raw, 5, 5),
            read: flag(raw, 0),
        })
    }

    /// The trapped wait instruction, for class 0x01.
    pub const fn wait_instruction(self) -> Option<WaitInstruction> {
        match self.class() {
            ExceptionClass::TrappedWfx => {}
            _ => return None,
        }
        let raw = self.raw;
        let kind = match field8(raw, 0, 2) {
            0 => WaitFor::Interrupt,
            1 => WaitFor::Event,
            2 => WaitFor::InterruptWithTimeout,
            _ => WaitFor::EventWithTimeout,
        };
        let has_timeout = matches!(
            kind,
            WaitFor::InterruptWithTimeout | WaitFor::EventWithTimeout
        );
        let register = if has_timeout && flag(raw, 2) {
            Some(field8(raw, 5, 5))
        } else {
            None
        };
        Some(WaitInstruction { kind, register })
    }

    /// The 16-bit immediate of an SVC, HVC or SMC (AArch64) call, or the
    /// comment of a BRK or BKPT, for the classes that report one (0x11,
    /// 0x12, 0x15, 0x16, 0x17, 0x38, 0x3C). An AArch32 SMC does not report
    /// its immediate.
    pub const fn immediate(self) -> Option<u16> {
        match self.class() {
            ExceptionClass::SvcAarch32
            | ExceptionClass::HvcAarch32
            | ExceptionClass::SvcAarch64
            | ExceptionClass::HvcAarch64
            | ExceptionClass::SmcAarch64
            | ExceptionClass::BkptAarch32
            | ExceptionClass::BrkAarch64 => {
                let low = field8(self.raw, 0, 8);
                let high = field8(self.raw, 8, 8);
                Some(u16::from_le_bytes([low, high]))
            }
            _ => None,
        }
    }

    /// The SError syndrome, for class 0x2F.
    pub const fn serror(self) -> Option<SErrorSyndrome> {
        match self.class() {
            ExceptionClass::SError => {}
            _ => return None,
        }
        let raw = self.raw;
        if flag(raw, 24) {
            return Some(SErrorSyndrome::ImplementationDefined(field32(raw, 0, 24)));
        }
        Some(match field8(raw, 0, 6) {
            0x00 => SErrorSyndrome::Uncategorized,
            0x11 => SErrorSyndrome::Asynchronous {
                error_type: AsynchronousErrorType::from_encoding(field8(raw, 10, 3)),
                implicit_barrier: flag(raw, 13),
                external_abort_type: flag(raw, 9),
            },
            other => SErrorSyndrome::ReservedStatus(other),
        })
    }

    /// Writes the mnemonic and immediate of a call or breakpoint instruction.
    fn write_immediate(self, formatter: &mut fmt::Formatter<'_>, immediate: u16) -> fmt::Result {
        let mnemonic = match self.class() {
            ExceptionClass::SvcAarch32 | ExceptionClass::SvcAarch64 => "SVC",
            ExceptionClass::HvcAarch32 | ExceptionClass::HvcAarch64 => "HVC",
            ExceptionClass::SmcAarch64 => "SMC",
            ExceptionClass::BkptAarch32 => "BKPT",
            _ => "BRK",
        };
        write!(formatter, "{mnemonic} #{immediate:#x}")
    }
}

fn write_data_abort(formatter: &mut fmt::Formatter<'_>, abort: &DataAbort) -> fmt::Result {
    write!(formatter, "{}", abort.status)?;
    let direction = if abort.cache_maintenance {
        "cache maintenance"
    } else if abort.write {
        "write"
    } else {
        "read"
    };
    write!(formatter, ", {direction}")?;
    if let Some(access) = abort.access {
        write!(formatter, ", {}-byte", access.size.bytes())?;
        if access.sign_extend {
            formatter.write_str(" sign-extended")?;
        }
        if access.acquire_release {
            formatter.write_str(" acquire/release")?;
        }
        write!(formatter, " access via {}", access.general_register())?;
    }
    write_abort_flags(
        formatter,
        abort.stage1_translation_walk,
        abort.far_not_valid,
        abort.external_abort_type,
    )?;
    if abort.vncr {
        formatter.write_str(", VNCR_EL2 access")?;
    }
    Ok(())
}

fn write_abort_flags(
    formatter: &mut fmt::Formatter<'_>,
    stage1_translation_walk: bool,
    far_not_valid: bool,
    external_abort_type: bool,
) -> fmt::Result {
    if stage1_translation_walk {
        formatter.write_str(", on stage 1 translation table walk")?;
    }
    if far_not_valid {
        formatter.write_str(", FAR not valid")?;
    }
    if external_abort_type {
        formatter.write_str(", EA set")?;
    }
    Ok(())
}

/// One line: class name, EC, IL, ISS (and ISS2 when non-zero), then the
/// decoded ISS for the classes this module understands, for example
/// `Data Abort taken without a change in Exception level (EC 0x25),
/// IL=32-bit, ISS 0x000007: translation fault, level 3, read`.
impl fmt::Display for Syndrome {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let class = self.class();
        let length = if self.instruction_length_32() { 32 } else { 16 };
        write!(
            formatter,
            "{} (EC {:#04x}), IL={length}-bit, ISS {:#08x}",
            class.name(),
            class.code(),
            self.iss()
        )?;
        if self.iss2() != 0 {
            write!(formatter, ", ISS2 {:#08x}", self.iss2())?;
        }
        if let Some(abort) = self.data_abort() {
            formatter.write_str(": ")?;
            write_data_abort(formatter, &abort)
        } else if let Some(abort) = self.instruction_abort() {
            write!(formatter, ": {}", abort.status)?;
            write_abort_flags(
                formatter,
                abort.stage1_translation_walk,
                abort.far_not_valid,
                abort.external_abort_type,
            )
        } else if let Some(access) = self.system_register_access() {
            write!(formatter, ": {access}")
        } else if let Some(wait) = self.wait_instruction() {
            write!(formatter, ": {wait}")
        } else if let Some(immediate) = self.immediate() {
            formatter.write_str(": ")?;
            self.write_immediate(formatter, immediate)
        } else if let Some(serror) = self.serror() {
            write!(formatter, ": {serror}")
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write as _;

    /// Every class the Arm ARM defines: code, variant, name.
    const DEFINED: [(u8, ExceptionClass, &str); 49] = [
        (0x00, ExceptionClass::Unknown, "Unknown reason"),
        (
            0x01,
            ExceptionClass::TrappedWfx,
            "Trapped WF* instruction execution",
        ),
        (
            0x03,
            ExceptionClass::TrappedMcrMrcCp15,
            "Trapped MCR or MRC access with coproc 0b1111",
        ),
        (
            0x04,
            ExceptionClass::TrappedMcrrMrrcCp15,
            "Trapped MCRR or MRRC access with coproc 0b1111",
        ),
        (
            0x05,
            ExceptionClass::TrappedMcrMrcCp14,
            "Trapped MCR or MRC access with coproc 0b1110",
        ),
        (
            0x06,
            ExceptionClass::TrappedLdcStc,
            "Trapped LDC or STC access",
        ),
        (
            0x07,
            ExceptionClass::TrappedFloatingPoint,
            "Access to SME, SVE, Advanced SIMD or floating-point functionality trapped",
        ),
        (
            0x08,
            ExceptionClass::TrappedVmrs,
            "Trapped VMRS access, from ID group trap",
        ),
        (
            0x09,
            ExceptionClass::TrappedPointerAuthentication,
            "Trapped use of a Pointer authentication instruction",
        ),
        (
            0x0a,
            ExceptionClass::TrappedOtherInstruction,
            "Trapped execution of any instruction not covered by other EC values",
        ),
        (
            0x0c,
            ExceptionClass::TrappedMrrcCp14,
            "Trapped MRRC access with coproc 0b1110",
        ),
        (
            0x0d,
            ExceptionClass::BranchTarget,
            "Branch Target Exception",
        ),
        (
            0x0e,
            ExceptionClass::IllegalExecutionState,
            "Illegal Execution state",
        ),
        (
            0x11,
            ExceptionClass::SvcAarch32,
            "SVC instruction execution in AArch32 state",
        ),
        (
            0x12,
            ExceptionClass::HvcAarch32,
            "HVC instruction execution in AArch32 state",
        ),
        (
            0x13,
            ExceptionClass::SmcAarch32,
            "SMC instruction execution in AArch32 state",
        ),
        (
            0x14,
            ExceptionClass::TrappedMsrrMrrs,
            "Trapped MSRR, MRRS or System instruction execution in AArch64 state",
        ),
        (
            0x15,
            ExceptionClass::SvcAarch64,
            "SVC instruction execution in AArch64 state",
        ),
        (
            0x16,
            ExceptionClass::HvcAarch64,
            "HVC instruction execution in AArch64 state",
        ),
        (
            0x17,
            ExceptionClass::SmcAarch64,
            "SMC instruction execution in AArch64 state",
        ),
        (
            0x18,
            ExceptionClass::TrappedSystemRegister,
            "Trapped MSR, MRS or System instruction execution in AArch64 state",
        ),
        (
            0x19,
            ExceptionClass::TrappedSve,
            "Access to SVE functionality trapped",
        ),
        (
            0x1a,
            ExceptionClass::TrappedEret,
            "Trapped ERET, ERETAA or ERETAB instruction execution",
        ),
        (
            0x1b,
            ExceptionClass::TransactionStart,
            "Exception from an access to a TSTART instruction",
        ),
        (
            0x1c,
            ExceptionClass::PointerAuthenticationFailure,
            "Exception from a PAC Fail",
        ),
        (
            0x1d,
            ExceptionClass::TrappedSme,
            "Access to SME functionality trapped",
        ),
        (
            0x1e,
            ExceptionClass::GranuleProtectionCheck,
            "Granule Protection Check exception",
        ),
        (
            0x1f,
            ExceptionClass::ImplementationDefinedEl3,
            "IMPLEMENTATION DEFINED exception to EL3",
        ),
        (
            0x20,
            ExceptionClass::InstructionAbortLowerLevel,
            "Instruction Abort from a lower Exception level",
        ),
        (
            0x21,
            ExceptionClass::InstructionAbortSameLevel,
            "Instruction Abort taken without a change in Exception level",
        ),
        (
            0x22,
            ExceptionClass::PcAlignment,
            "PC alignment fault exception",
        ),
        (
            0x24,
            ExceptionClass::DataAbortLowerLevel,
            "Data Abort from a lower Exception level",
        ),
        (
            0x25,
            ExceptionClass::DataAbortSameLevel,
            "Data Abort taken without a change in Exception level",
        ),
        (
            0x26,
            ExceptionClass::SpAlignment,
            "SP alignment fault exception",
        ),
        (
            0x27,
            ExceptionClass::MemoryOperation,
            "Memory Operation Exception",
        ),
        (
            0x28,
            ExceptionClass::FloatingPointExceptionAarch32,
            "Trapped floating-point exception taken from AArch32 state",
        ),
        (
            0x2c,
            ExceptionClass::FloatingPointExceptionAarch64,
            "Trapped floating-point exception taken from AArch64 state",
        ),
        (0x2d, ExceptionClass::GuardedControlStack, "GCS exception"),
        (0x2f, ExceptionClass::SError, "SError exception"),
        (
            0x30,
            ExceptionClass::BreakpointLowerLevel,
            "Breakpoint exception from a lower Exception level",
        ),
        (
            0x31,
            ExceptionClass::BreakpointSameLevel,
            "Breakpoint exception taken without a change in Exception level",
        ),
        (
            0x32,
            ExceptionClass::SoftwareStepLowerLevel,
            "Software Step exception from a lower Exception level",
        ),
        (
            0x33,
            ExceptionClass::SoftwareStepSameLevel,
            "Software Step exception taken without a change in Exception level",
        ),
        (
            0x34,
            ExceptionClass::WatchpointLowerLevel,
            "Watchpoint exception from a lower Exception level",
        ),
        (
            0x35,
            ExceptionClass::WatchpointSameLevel,
            "Watchpoint exception taken without a change in Exception level",
        ),
        (
            0x38,
            ExceptionClass::BkptAarch32,
            "BKPT instruction execution in AArch32 state",
        ),
        (
            0x3a,
            ExceptionClass::VectorCatchAarch32,
            "Vector Catch exception from AArch32 state",
        ),
        (
            0x3c,
            ExceptionClass::BrkAarch64,
            "BRK instruction execution in AArch64 state",
        ),
        (0x3d, ExceptionClass::Profiling, "Profiling exception"),
    ];

    /// The codes the Arm ARM leaves unallocated.
    const UNALLOCATED: [u8; 15] = [
        0x02, 0x0b, 0x0f, 0x10, 0x23, 0x29, 0x2a, 0x2b, 0x2e, 0x36, 0x37, 0x39, 0x3b, 0x3e, 0x3f,
    ];

    /// A `fmt::Write` sink of fixed size that refuses to grow, like the
    /// console line buffer of the core.
    struct LineBuffer {
        bytes: [u8; MAX_LINE_LENGTH],
        length: usize,
    }

    impl LineBuffer {
        fn new() -> Self {
            Self {
                bytes: [0; MAX_LINE_LENGTH],
                length: 0,
            }
        }

        fn as_str(&self) -> &str {
            core::str::from_utf8(&self.bytes[..self.length]).unwrap()
        }
    }

    impl fmt::Write for LineBuffer {
        fn write_str(&mut self, text: &str) -> fmt::Result {
            let end = self.length.checked_add(text.len()).ok_or(fmt::Error)?;
            let target = self.bytes.get_mut(self.length..end).ok_or(fmt::Error)?;
            target.copy_from_slice(text.as_bytes());
            self.length = end;
            Ok(())
        }
    }

    fn render(esr: u64) -> std::string::String {
        std::format!("{}", Syndrome::new(esr))
    }

    #[test]
    fn every_defined_exception_class_decodes_to_its_variant_and_name() {
        for (code, class, name) in DEFINED {
            assert_eq!(ExceptionClass::from_code(code), class, "code {code:#04x}");
            assert_eq!(class.code(), code, "{class:?}");
            assert_eq!(class.name(), name, "{class:?}");
            assert_ne!(class, ExceptionClass::Reserved(code));
            let esr = u64::from(code) << 26;
            assert_eq!(Syndrome::new(esr).class(), class);
        }
        // No two entries share a code or a name.
        for (index, (code, _, name)) in DEFINED.iter().enumerate() {
            for (other_code, _, other_name) in &DEFINED[index + 1..] {
                assert_ne!(code, other_code);
                assert_ne!(name, other_name);
            }
        }
    }

    #[test]
    fn all_64_codes_decode_and_round_trip() {
        let mut reserved = 0;
        for code in 0_u8..64 {
            let class = ExceptionClass::from_code(code);
            assert_eq!(class.code(), code);
            let defined = DEFINED
                .iter()
                .any(|(defined_code, ..)| *defined_code == code);
            if UNALLOCATED.contains(&code) {
                assert!(!defined, "code {code:#04x} is both defined and unallocated");
                assert_eq!(class, ExceptionClass::Reserved(code));
                assert_eq!(class.name(), "Reserved exception class");
                reserved += 1;
            } else {
                assert!(defined, "code {code:#04x} is missing from the table");
            }
            // Bits above the 6-bit field are ignored.
            assert_eq!(ExceptionClass::from_code(code | 0xc0), class);
        }
        assert_eq!(reserved, UNALLOCATED.len());
        assert_eq!(DEFINED.len() + UNALLOCATED.len(), 64);
    }

    #[test]
    fn fields_are_extracted_from_the_right_bits() {
        let syndrome = Syndrome::new(0x00ab_cdef_9600_0045);
        assert_eq!(syndrome.class(), ExceptionClass::DataAbortSameLevel);
        assert!(syndrome.instruction_length_32());
        assert_eq!(syndrome.iss(), 0x45);
        assert_eq!(syndrome.iss2(), 0x00ab_cdef);
        assert_eq!(Syndrome::new(0xffff_ffff_ffff_ffff).iss(), 0x01ff_ffff);
        assert_eq!(Syndrome::new(0xffff_ffff_ffff_ffff).iss2(), 0x00ff_ffff);
        assert!(!Syndrome::new(0x5400_0000).instruction_length_32());
    }

    #[test]
    fn display_data_abort_read_translation_fault_level_3() {
        assert_eq!(
            render(0x9600_0007),
            "Data Abort taken without a change in Exception level (EC 0x25), IL=32-bit, \
             ISS 0x000007: translation fault, level 3, read"
        );
    }

    #[test]
    fn display_data_abort_write_translation_fault() {
        assert_eq!(
            render(0x9600_0045),
            "Data Abort taken without a change in Exception level (EC 0x25), IL=32-bit, \
             ISS 0x000045: translation fault, level 1, write"
        );
        let abort = Syndrome::new(0x9600_0045).data_abort().unwrap();
        assert!(abort.write);
        assert_eq!(abort.access, None);
        assert_eq!(abort.status.kind, FaultKind::Translation);
        assert_eq!(abort.status.level, Some(1));
    }

    #[test]
    fn display_guest_data_abort_with_instruction_syndrome() {
        // A 32-bit store of w1 from the guest to an unmapped stage 2 page:
        // ISV, SAS=word, SRT=1, WnR, DFSC translation fault level 3.
        let esr = 0x9381_0047;
        assert_eq!(
            render(esr),
            "Data Abort from a lower Exception level (EC 0x24), IL=32-bit, ISS 0x1810047: \
             translation fault, level 3, write, 4-byte access via w1"
        );
        let abort = Syndrome::new(esr).data_abort().unwrap();
        assert_eq!(
            abort.access,
            Some(AccessSyndrome {
                size: AccessSize::Word,
                sign_extend: false,
                register: 1,
                register_64bit: false,
                acquire_release: false,
            })
        );
        assert!(!abort.far_not_valid && !abort.cache_maintenance);
    }

    #[test]
    fn display_data_abort_flags_and_iss2() {
        // 64-bit load-acquire into xzr, sign extension set, S1PTW, CM, FnV,
        // EA and VNCR set, permission fault level 2, ISS2 non-zero.
        let esr = (0x20_u64 << 32) | 0x93ff_e7ce;
        assert_eq!(
            render(esr),
            "Data Abort from a lower Exception level (EC 0x24), IL=32-bit, ISS 0x1ffe7ce, \
             ISS2 0x000020: permission fault, level 2, cache maintenance, \
             8-byte sign-extended acquire/release access via xzr, on stage 1 translation table walk, FAR not valid, EA set, VNCR_EL2 access"
        );
    }

    #[test]
    fn display_hvc_zero() {
        assert_eq!(
            render(0x5a00_0000),
            "HVC instruction execution in AArch64 state (EC 0x16), IL=32-bit, \
             ISS 0x000000: HVC #0x0"
        );
        assert_eq!(Syndrome::new(0x5a00_0000).immediate(), Some(0));
    }

    #[test]
    fn display_svc() {
        assert_eq!(
            render(0x5600_0080),
            "SVC instruction execution in AArch64 state (EC 0x15), IL=32-bit, \
             ISS 0x000080: SVC #0x80"
        );
        // An AArch32 SMC does not report an immediate.
        assert_eq!(Syndrome::new(0x4e00_0000).immediate(), None);
        assert_eq!(
            render(0x4e00_0000),
            "SMC instruction execution in AArch32 state (EC 0x13), IL=32-bit, ISS 0x000000"
        );
    }

    #[test]
    fn display_trapped_mrs_and_msr() {
        // MRS x1, ID_AA64MMFR0_EL1 (op0 3, op1 0, CRn 0, CRm 7, op2 0).
        let read = Syndrome::new(0x6230_002f);
        assert_eq!(
            read.system_register_access(),
            Some(SystemRegisterAccess {
                op0: 3,
                op1: 0,
                crn: 0,
                crm: 7,
                op2: 0,
                register: 1,
                read: true,
            })
        );
        assert_eq!(
            render(read.raw),
            "Trapped MSR, MRS or System instruction execution in AArch64 state (EC 0x18), \
             IL=32-bit, ISS 0x30002f: MRS x1, S3_0_C0_C7_0"
        );
        // MSR SCTLR_EL1, x2 (op0 3, op1 0, CRn 1, CRm 0, op2 0).
        assert_eq!(
            render(0x6230_0440),
            "Trapped MSR, MRS or System instruction execution in AArch64 state (EC 0x18), \
             IL=32-bit, ISS 0x300440: MSR S3_0_C1_C0_0, x2"
        );
        // DC CIVAC, x0 is SYS #3, C7, C14, #1, x0.
        let iss = (1 << 20) | (1 << 17) | (3 << 14) | (7 << 10) | (14 << 1);
        assert!(render(0x6200_0000 | iss).ends_with(": SYS #3, C7, C14, #1, x0"));
    }

    #[test]
    fn display_brk() {
        assert_eq!(
            render(0xf200_03e8),
            "BRK instruction execution in AArch64 state (EC 0x3c), IL=32-bit, \
             ISS 0x0003e8: BRK #0x3e8"
        );
        assert_eq!(Syndrome::new(0xf200_03e8).immediate(), Some(0x3e8));
    }

    #[test]
    fn display_instruction_aborts() {
        assert_eq!(
            render(0x8200_0006),
            "Instruction Abort from a lower Exception level (EC 0x20), IL=32-bit, \
             ISS 0x000006: translation fault, level 2"
        );
        assert_eq!(
            render(0x8600_068f),
            "Instruction Abort taken without a change in Exception level (EC 0x21), \
             IL=32-bit, ISS 0x00068f: permission fault, level 3, \
             on stage 1 translation table walk, FAR not valid, EA set"
        );
        // Alignment is a data-only code.
        assert_eq!(
            Syndrome::new(0x8600_0021)
                .instruction_abort()
                .unwrap()
                .status
                .kind,
            FaultKind::Reserved
        );
        assert!(render(0x8600_0021).ends_with(": reserved fault status code 0x21"));
    }

    #[test]
    fn display_wait_instructions() {
        assert!(render(0x0600_0000).ends_with("(EC 0x01), IL=32-bit, ISS 0x000000: WFI"));
        assert!(render(0x0600_0001).ends_with(": WFE"));
        assert!(render(0x0600_0066).ends_with(": WFIT x3"));
        assert!(render(0x0600_0003).ends_with(": WFET"));
        assert_eq!(
            Syndrome::new(0x0600_0066).wait_instruction(),
            Some(WaitInstruction {
                kind: WaitFor::InterruptWithTimeout,
                register: Some(3),
            })
        );
    }

    #[test]
    fn display_serror() {
        assert_eq!(
            render(0xbe00_0000),
            "SError exception (EC 0x2f), IL=32-bit, ISS 0x000000: uncategorized error"
        );
        assert_eq!(
            render(0xbe00_2c11),
            "SError exception (EC 0x2f), IL=32-bit, ISS 0x002c11: asynchronous SError \
             interrupt, Recoverable state (UER), synchronized by implicit error barrier"
        );
        assert_eq!(
            Syndrome::new(0xbf00_0123).serror(),
            Some(SErrorSyndrome::ImplementationDefined(0x123))
        );
        assert!(render(0xbf00_0123).ends_with(": IMPLEMENTATION DEFINED syndrome 0x000123"));
        assert!(render(0xbe00_0005).ends_with(": reserved fault status code 0x05"));
    }

    #[test]
    fn display_classes_without_iss_decoding() {
        assert_eq!(
            render(0x0200_0000),
            "Unknown reason (EC 0x00), IL=32-bit, ISS 0x000000"
        );
        assert_eq!(
            render(0xfe00_0000),
            "Reserved exception class (EC 0x3f), IL=32-bit, ISS 0x000000"
        );
        assert_eq!(
            render(0x8a00_1234),
            "PC alignment fault exception (EC 0x22), IL=32-bit, ISS 0x001234"
        );
    }

    #[test]
    fn typed_views_return_none_for_other_classes() {
        let hvc = Syndrome::new(0x5a00_0000);
        assert_eq!(hvc.data_abort(), None);
        assert_eq!(hvc.instruction_abort(), None);
        assert_eq!(hvc.system_register_access(), None);
        assert_eq!(hvc.wait_instruction(), None);
        assert_eq!(hvc.serror(), None);
        assert_eq!(Syndrome::new(0x9600_0045).immediate(), None);
    }

    #[test]
    fn fault_status_codes_follow_the_dfsc_table() {
        let expectations = [
            (0x00, FaultKind::AddressSize, Some(0)),
            (0x03, FaultKind::AddressSize, Some(3)),
            (0x04, FaultKind::Translation, Some(0)),
            (0x07, FaultKind::Translation, Some(3)),
            (0x08, FaultKind::AccessFlag, Some(0)),
            (0x0b, FaultKind::AccessFlag, Some(3)),
            (0x0c, FaultKind::Permission, Some(0)),
            (0x0f, FaultKind::Permission, Some(3)),
            (0x10, FaultKind::SynchronousExternalAbort, None),
            (0x11, FaultKind::SynchronousTagCheck, None),
            (0x12, FaultKind::SynchronousExternalAbortOnWalk, Some(-2)),
            (0x13, FaultKind::SynchronousExternalAbortOnWalk, Some(-1)),
            (0x14, FaultKind::SynchronousExternalAbortOnWalk, Some(0)),
            (0x17, FaultKind::SynchronousExternalAbortOnWalk, Some(3)),
            (0x18, FaultKind::SynchronousParityOrEcc, None),
            (0x19, FaultKind::Reserved, None),
            (0x1b, FaultKind::SynchronousParityOrEccOnWalk, Some(-1)),
            (0x1f, FaultKind::SynchronousParityOrEccOnWalk, Some(3)),
            (0x20, FaultKind::Reserved, None),
            (0x21, FaultKind::Alignment, None),
            (0x22, FaultKind::GranuleProtectionOnWalk, Some(-2)),
            (0x23, FaultKind::GranuleProtectionOnWalk, Some(-1)),
            (0x26, FaultKind::GranuleProtectionOnWalk, Some(2)),
            (0x28, FaultKind::GranuleProtection, None),
            (0x29, FaultKind::AddressSize, Some(-1)),
            (0x2a, FaultKind::Translation, Some(-2)),
            (0x2b, FaultKind::Translation, Some(-1)),
            (0x2c, FaultKind::AddressSize, Some(-2)),
            (0x30, FaultKind::TlbConflict, None),
            (0x31, FaultKind::UnsupportedAtomicUpdate, None),
            (0x34, FaultKind::ImplementationDefinedLockdown, None),
            (
                0x35,
                FaultKind::ImplementationDefinedExclusiveOrAtomic,
                None,
            ),
            (0x3d, FaultKind::Reserved, None),
            (0x3e, FaultKind::Reserved, None),
        ];
        for (code, kind, level) in expectations {
            let status = FaultStatus::data(code);
            assert_eq!(
                (status.code, status.kind, status.level),
                (code, kind, level)
            );
        }
        for data_only in [0x11, 0x21, 0x34, 0x35] {
            assert_eq!(
                FaultStatus::instruction(data_only).kind,
                FaultKind::Reserved
            );
        }
        assert_eq!(FaultStatus::instruction(0x0f), FaultStatus::data(0x0f));
        assert_eq!(
            std::format!("{}", FaultStatus::data(0x2b)),
            "translation fault, level -1"
        );
        assert_eq!(
            std::format!("{}", FaultStatus::data(0x30)),
            "TLB conflict abort"
        );
    }

    #[test]
    fn every_class_with_extreme_syndromes_fits_one_line() {
        for code in 0_u64..64 {
            for low in [0, 0x01ff_ffff, 0x0155_5555, 0x00aa_aaaa] {
                for high in [0, 0xffff_ffff] {
                    let esr = (high << 32) | (code << 26) | (1 << 25) | low;
                    let mut line = LineBuffer::new();
                    write!(line, "{}", Syndrome::new(esr)).unwrap();
                    assert!(line.as_str().contains(&std::format!("(EC {code:#04x})")));
                    assert!(!line.as_str().contains('\n'));
                }
            }
        }
    }

    #[test]
    fn longest_line_fits_max_line_length() {
        // Every class, every value of the low 6 bits (fault status codes,
        // wait kinds), with all other ISS flags set, with and without bit 24
        // (ISV, IDS), with and without ISS2: the longest lines there are.
        let mut longest = 0;
        for code in 0_u64..64 {
            for low in 0_u64..64 {
                for flags in [0x01ff_ffc0, 0x00ff_ffc0, 0] {
                    for iss2 in [0, 0x00ff_ffff] {
                        let esr = (iss2 << 32) | (code << 26) | (1 << 25) | flags | low;
                        let mut line = LineBuffer::new();
                        write!(line, "{}", Syndrome::new(esr)).unwrap();
                        longest = longest.max(line.length);
                    }
                }
            }
        }
        std::println!("longest line: {longest} bytes");
        assert!(longest <= MAX_LINE_LENGTH);
    }

    #[test]
    fn display_never_panics_on_pseudo_random_values() {
        // xorshift64: a fixed, reproducible stream of values that reaches
        // every bit of the register.
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let syndrome = Syndrome::new(state);
            let mut line = LineBuffer::new();
            // A fixed-size buffer: the line must fit, not just not panic.
            write!(line, "{syndrome}").unwrap();
            let text = line.as_str();
            assert!(text.starts_with(syndrome.class().name()), "{text}");
            assert!(!text.contains('\n'));
            // The typed views agree with the class.
            let class = syndrome.class();
            assert_eq!(
                syndrome.data_abort().is_some(),
                matches!(
                    class,
                    ExceptionClass::DataAbortLowerLevel | ExceptionClass::DataAbortSameLevel
                )
            );
        }
    }
}
