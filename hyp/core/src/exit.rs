//! VM exits: what a VCPU's trap to EL2 means, the message its VMM gets,
//! and what the VMM's reply does to the guest (`docs/fault-protocol.md`).
//!
//! Everything here is a pure function of the syndrome registers and the
//! guest's saved registers, so it is tested on the host. The decoder is
//! total: every syndrome is either handled by the core (`WFI`, `WFE`) or
//! becomes a message to the VMM; nothing a guest does can make it panic.
//!
//! One exit costs two kernel entries: the trap (which sends the message to
//! the VMM as if the VCPU had called it) and the VMM's `ReplyRecv` (which
//! applies the reply here and takes the next exit).

use hyp_abi::fault::{FaultLabel, exit_reply, hypercall, mmio, system_register, vcpu_exception};

use crate::esr::{ExceptionClass, FaultKind, Syndrome, WaitFor};
use crate::thread::{FaultMessage, UserContext};

/// The syndrome registers of a trap, as the arch layer read them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Trap {
    /// `ESR_EL2`.
    pub syndrome: u64,
    /// `FAR_EL2` (aborts only).
    pub address: u64,
    /// `HPFAR_EL2` (stage-2 aborts only).
    pub hpfar: u64,
}

impl Trap {
    /// The guest-physical address of a stage-2 abort: `HPFAR_EL2.FIPA`
    /// (bits 4..43, the IPA's page number) with the page offset from
    /// `FAR_EL2`.
    pub const fn guest_physical(&self) -> u64 {
        ((self.hpfar >> 4) & 0xff_ffff_ffff) << 12 | (self.address & 0xfff)
    }
}

/// Whether the trap with `syndrome` leaves `HPFAR_EL2` UNKNOWN, so the
/// arch layer must find the faulting IPA by translating `FAR_EL2` through
/// the guest's stage 1: a stage-2 permission fault (DFSC `0b0011xx`) on a
/// data or instruction access from a lower level, not taken on a stage-1
/// table walk (Arm ARM, `HPFAR_EL2`).
pub const fn needs_translated_ipa(syndrome: u64) -> bool {
    let class = (syndrome >> 26) & 0x3f;
    let abort = class == 0x24 || class == 0x20;
    let permission = syndrome & 0x3c == 0x0c;
    let on_walk = syndrome & (1 << 7) != 0;
    abort && permission && !on_walk
}

/// What the core does with a VCPU's exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Send this message to the VCPU's VMM (its fault endpoint).
    Message(FaultMessage),
    /// `WFI`: block the VCPU until a virtual interrupt is pending (the PC
    /// is already past the instruction).
    WaitForInterrupt,
    /// `WFE`: give the core to others for a moment (the PC is already past
    /// the instruction).
    WaitForEvent,
}

/// What the core must do to the guest after a reply, besides resuming it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyAction {
    /// Resume (the context is updated).
    Resume,
    /// Do not resume: the VMM stopped the VCPU (or the reply was not one
    /// the exit allows).
    Stop,
    /// Inject this exception, then resume.
    Inject(Injection),
}

/// An exception the core injects into a guest at its next entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Injection {
    /// A synchronous external abort on a data access to `address` (a
    /// guest-virtual address), a store if `write`.
    DataAbort {
        /// `FAR_EL1` for the guest.
        address: u64,
        /// The access was a store (`ESR_EL1.WnR`).
        write: bool,
    },
    /// An undefined instruction.
    Undefined,
}

/// The instruction length of every AArch64 instruction.
const INSTRUCTION_BYTES: u64 = 4;

/// Decodes a VCPU's synchronous trap. `context` is the guest's saved state
/// (its PC is the trapped instruction's, or the one after it for `HVC`).
pub fn decode(trap: Trap, context: &mut UserContext) -> Exit {
    if let Some(message) = mmio_fast(trap, context) {
        return Exit::Message(message);
    }
    decode_general(trap, context)
}

/// The most frequent exit, an MMIO access with a valid instruction
/// syndrome, decoded straight from the syndrome's bits: the same message
/// as [`decode_general`] gives (a test compares the two over many
/// syndromes), without building the full syndrome decoding first. `None`
/// for anything else: an abort of another kind, without a syndrome, on a
/// stage-1 table walk, or another class.
#[inline(always)]
fn mmio_fast(trap: Trap, context: &UserContext) -> Option<FaultMessage> {
    let esr = trap.syndrome;
    // EC 0x24 (a data abort from a lower level), ISV (bit 24) set, S1PTW
    // (bit 7) clear, DFSC a translation (levels 0 to 3), access-flag or
    // permission fault (0x04 to 0x0f).
    let status = esr & 0x3f;
    if (esr >> 26) & 0x3f != 0x24
        || esr & (1 << 24) == 0
        || esr & (1 << 7) != 0
        || !(0x04..=0x0f).contains(&status)
    {
        return None;
    }
    let size = 1u64 << ((esr >> 22) & 0b11);
    #[allow(clippy::cast_possible_truncation, reason = "five bits")]
    let register = ((esr >> 16) & 0x1f) as u8;
    let write = esr & (1 << 6) != 0;
    let mut flags = size | u64::from(register) << mmio::REGISTER_SHIFT;
    if write {
        flags |= mmio::WRITE;
    }
    if esr & (1 << 21) != 0 {
        flags |= mmio::SIGN_EXTEND;
    }
    if esr & (1 << 15) != 0 {
        flags |= mmio::SIXTY_FOUR_BIT;
    }
    let mut words = [0; 8];
    words[mmio::ADDRESS] = trap.guest_physical();
    words[mmio::ACCESS] = flags;
    if write {
        words[mmio::VALUE] = truncate(self::register(context, register), size);
    }
    words[mmio::PC] = context.pc;
    words[mmio::VIRTUAL_ADDRESS] = trap.address;
    Some(FaultMessage {
        label: FaultLabel::VcpuMmio as u64,
        words,
        length: mmio::LENGTH,
    })
}

/// [`decode`] through the full syndrome decoding (`crate::esr`).
fn decode_general(trap: Trap, context: &mut UserContext) -> Exit {
    let syndrome = Syndrome::new(trap.syndrome);
    match syndrome.class() {
        ExceptionClass::TrappedWfx => {
            context.pc = context.pc.wrapping_add(INSTRUCTION_BYTES);
            match syndrome.wait_instruction().map(|wait| wait.kind) {
                Some(WaitFor::Interrupt | WaitFor::InterruptWithTimeout) => Exit::WaitForInterrupt,
                _ => Exit::WaitForEvent,
            }
        }
        ExceptionClass::HvcAarch64 | ExceptionClass::SmcAarch64 => {
            let smc = syndrome.class() == ExceptionClass::SmcAarch64;
            let mut words = [0; 8];
            words[hypercall::KIND] = (u64::from(smc) * hypercall::SMC)
                | (u64::from(syndrome.immediate().unwrap_or(0)) << 16);
            words[hypercall::X0..].copy_from_slice(&context.x[..7]);
            Exit::Message(FaultMessage {
                label: FaultLabel::VcpuHypercall as u64,
                words,
                length: hypercall::LENGTH,
            })
        }
        ExceptionClass::TrappedSystemRegister => match syndrome.system_register_access() {
            Some(access) => {
                let mut words = [0; 8];
                words[system_register::ENCODING] = u64::from(access.op0) << 14
                    | u64::from(access.op1) << 11
                    | u64::from(access.crn) << 7
                    | u64::from(access.crm) << 3
                    | u64::from(access.op2);
                words[system_register::READ] = u64::from(access.read);
                words[system_register::VALUE] = if access.read {
                    0
                } else {
                    register(context, access.register)
                };
                words[system_register::PC] = context.pc;
                words[system_register::REGISTER] = u64::from(access.register);
                Exit::Message(FaultMessage {
                    label: FaultLabel::VcpuSystemRegister as u64,
                    words,
                    length: system_register::LENGTH,
                })
            }
            None => exception(trap, context),
        },
        ExceptionClass::DataAbortLowerLevel => match syndrome.data_abort() {
            Some(abort)
                if !abort.stage1_translation_walk
                    && matches!(
                        abort.status.kind,
                        FaultKind::Translation | FaultKind::AccessFlag | FaultKind::Permission
                    ) =>
            {
                let Some(access) = abort.access else {
                    return exception(trap, context);
                };
                let size = u64::from(access.size.bytes());
                let mut flags = size | u64::from(access.register) << mmio::REGISTER_SHIFT;
                if abort.write {
                    flags |= mmio::WRITE;
                }
                if access.sign_extend {
                    flags |= mmio::SIGN_EXTEND;
                }
                if access.register_64bit {
                    flags |= mmio::SIXTY_FOUR_BIT;
                }
                let mut words = [0; 8];
                words[mmio::ADDRESS] = trap.guest_physical();
                words[mmio::ACCESS] = flags;
                words[mmio::VALUE] = if abort.write {
                    truncate(register(context, access.register), size)
                } else {
                    0
                };
                words[mmio::PC] = context.pc;
                words[mmio::VIRTUAL_ADDRESS] = trap.address;
                Exit::Message(FaultMessage {
                    label: FaultLabel::VcpuMmio as u64,
                    words,
                    length: mmio::LENGTH,
                })
            }
            _ => exception(trap, context),
        },
        _ => exception(trap, context),
    }
}

/// The message of an exit the core does not decode further.
fn exception(trap: Trap, context: &UserContext) -> Exit {
    let class = Syndrome::new(trap.syndrome).class();
    let stage2 = matches!(
        class,
        ExceptionClass::DataAbortLowerLevel | ExceptionClass::InstructionAbortLowerLevel
    );
    let mut words = [0; 8];
    words[vcpu_exception::SYNDROME] = trap.syndrome;
    words[vcpu_exception::PC] = context.pc;
    words[vcpu_exception::ADDRESS] = if stage2 { trap.address } else { 0 };
    words[vcpu_exception::GUEST_PHYSICAL] = if stage2 { trap.guest_physical() } else { 0 };
    words[vcpu_exception::SPSR] = context.spsr;
    Exit::Message(FaultMessage {
        label: FaultLabel::VcpuException as u64,
        words,
        length: vcpu_exception::LENGTH,
    })
}

/// General-purpose register `number` (31 reads as zero).
#[inline(always)]
fn register(context: &UserContext, number: u8) -> u64 {
    context.x.get(usize::from(number)).copied().unwrap_or(0)
}

/// Writes general-purpose register `number` (31 discards).
fn set_register(context: &mut UserContext, number: u8, value: u64) {
    if let Some(slot) = context.x.get_mut(usize::from(number)) {
        *slot = value;
    }
}

/// The low `size` bytes of `value`.
const fn truncate(value: u64, size: u64) -> u64 {
    if size >= 8 {
        value
    } else {
        value & ((1 << (size * 8)) - 1)
    }
}

/// The value a load of `size` bytes puts in its register: truncated,
/// sign-extended if asked, and cut to 32 bits for a `w` register.
pub const fn loaded_value(value: u64, size: u64, sign_extend: bool, sixty_four_bit: bool) -> u64 {
    let mut result = truncate(value, size);
    if sign_extend && size < 8 {
        let shift = 64 - size * 8;
        result = (((result << shift) as i64) >> shift) as u64;
    }
    if !sixty_four_bit {
        result &= 0xffff_ffff;
    }
    result
}

/// Applies the handler's reply (`label`, `words`) to a thread stopped by
/// `fault`, updating its saved registers. For a native thread's fault:
/// label 0 resumes it (at word 0 if the reply has one); any other label
/// stops it. For VCPU exits, see the layouts in [`hyp_abi::fault`].
#[inline]
pub fn apply_reply(
    context: &mut UserContext,
    fault: &FaultMessage,
    label: u64,
    words: &[u64],
) -> ReplyAction {
    let kind = FaultLabel::from_label(fault.label);
    let vcpu_exit = matches!(
        kind,
        Some(
            FaultLabel::VcpuMmio
                | FaultLabel::VcpuHypercall
                | FaultLabel::VcpuSystemRegister
                | FaultLabel::VcpuException
        )
    );
    if vcpu_exit && label == exit_reply::INJECT_UNDEFINED {
        return ReplyAction::Inject(Injection::Undefined);
    }
    if vcpu_exit && label == exit_reply::INJECT_ABORT {
        let (address, write) = match kind {
            Some(FaultLabel::VcpuMmio) => (
                fault.words[mmio::VIRTUAL_ADDRESS],
                fault.words[mmio::ACCESS] & mmio::WRITE != 0,
            ),
            Some(FaultLabel::VcpuException) => (fault.words[vcpu_exception::ADDRESS], false),
            _ => (0, false),
        };
        return ReplyAction::Inject(Injection::DataAbort { address, write });
    }
    if label != exit_reply::RESUME {
        return ReplyAction::Stop;
    }
    let first = words.first().copied();
    match kind {
        Some(FaultLabel::VcpuMmio) => {
            let access = fault.words[mmio::ACCESS];
            if access & mmio::WRITE == 0 {
                let value = loaded_value(
                    first.unwrap_or(0),
                    access & mmio::SIZE_MASK,
                    access & mmio::SIGN_EXTEND != 0,
                    access & mmio::SIXTY_FOUR_BIT != 0,
                );
                #[allow(clippy::cast_possible_truncation, reason = "five bits")]
                let number = ((access >> mmio::REGISTER_SHIFT) & 0x1f) as u8;
                set_register(context, number, value);
            }
            context.pc = context.pc.wrapping_add(INSTRUCTION_BYTES);
        }
        Some(FaultLabel::VcpuSystemRegister) => {
            if fault.words[system_register::READ] != 0 {
                let number = fault.words[system_register::REGISTER] & 0x1f;
                #[allow(clippy::cast_possible_truncation, reason = "five bits")]
                set_register(context, number as u8, first.unwrap_or(0));
            }
            context.pc = context.pc.wrapping_add(INSTRUCTION_BYTES);
        }
        Some(FaultLabel::VcpuHypercall) => {
            let count = words.len().min(context.x.len());
            context.x[..count].copy_from_slice(&words[..count]);
            if fault.words[hypercall::KIND] & 0xffff == hypercall::SMC {
                // A trapped SMC returns to the instruction itself.
                context.pc = context.pc.wrapping_add(INSTRUCTION_BYTES);
            }
        }
        _ => {
            // A native fault or an undecoded exit: word 0, if given, is
            // where the thread resumes.
            if let Some(pc) = first {
                context.pc = pc;
            }
        }
    }
    ReplyAction::Resume
}

/// The guest state after taking `injection` (the arch layer writes
/// `elr`, `spsr_el1`, `esr` and `far` to the guest's EL1 registers and
/// resumes at `pc` with `spsr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Injected {
    /// The new PC: the vector entry.
    pub pc: u64,
    /// The new `PSTATE`: EL1h with all exceptions masked.
    pub spsr: u64,
    /// `ELR_EL1`: where the guest was.
    pub elr: u64,
    /// `SPSR_EL1`: the guest's `PSTATE` before.
    pub spsr_el1: u64,
    /// `ESR_EL1`.
    pub esr: u64,
    /// `FAR_EL1` (unchanged for an undefined instruction: `None`).
    pub far: Option<u64>,
}

/// How a guest at `pc` with `PSTATE` `spsr` and vectors at `vbar` takes
/// `injection` (Arm ARM, "Exception entry": the vector offset depends on
/// the exception level and stack pointer it was taken from).
pub const fn inject(injection: Injection, pc: u64, spsr: u64, vbar: u64) -> Injected {
    let (offset, from_el1) = match spsr & 0x1f {
        0b0_0101 => (0x200, true),                      // EL1h: current EL, SP_ELx
        0b0_0100 => (0x000, true),                      // EL1t: current EL, SP_EL0
        mode if mode & 0b1_0000 != 0 => (0x600, false), // EL0 in AArch32
        _ => (0x400, false),                            // EL0: lower EL, AArch64
    };
    let (class, iss, far) = match injection {
        // EC 0x25 / 0x24: data abort from the same / a lower level;
        // DFSC 0x10: synchronous external abort, not on a table walk.
        Injection::DataAbort { address, write } => (
            if from_el1 { 0x25 } else { 0x24 },
            0x10 | (write as u64) << 6,
            Some(address),
        ),
        // EC 0: unknown reason (an undefined instruction).
        Injection::Undefined => (0x00, 0, None),
    };
    Injected {
        pc: (vbar & !0x7ff) + offset,
        spsr: 0x3c5,
        elr: pc,
        spsr_el1: spsr,
        esr: class << 26 | 1 << 25 | iss,
        far,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PC: u64 = 0x4008_1000;

    fn context() -> UserContext {
        let mut context = UserContext {
            pc: PC,
            spsr: 0x3c5,
            ..UserContext::default()
        };
        for (index, value) in context.x.iter_mut().enumerate() {
            *value = 0x1000 + index as u64;
        }
        context
    }

    /// ESR of a stage-2 data abort from a lower level with a valid
    /// syndrome: size `sas`, register `srt`, `write`, `sse`, `sf`, DFSC
    /// translation fault level 3.
    fn data_abort(sas: u64, srt: u64, write: bool, sse: bool, sf: bool) -> u64 {
        0x24 << 26
            | 1 << 25
            | 1 << 24
            | sas << 22
            | u64::from(sse) << 21
            | srt << 16
            | u64::from(sf) << 15
            | u64::from(write) << 6
            | 0x07
    }

    fn message(exit: Exit) -> FaultMessage {
        match exit {
            Exit::Message(message) => message,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    #[test]
    fn only_stage_2_permission_faults_off_a_walk_need_a_translated_ipa() {
        let abort = |class: u64, status: u64, walk: bool| {
            class << 26 | 1 << 25 | u64::from(walk) << 7 | status
        };
        for status in 0x0c..=0x0f {
            assert!(needs_translated_ipa(abort(0x24, status, false)));
            assert!(needs_translated_ipa(abort(0x20, status, false)));
            assert!(
                !needs_translated_ipa(abort(0x24, status, true)),
                "on a walk"
            );
            assert!(
                !needs_translated_ipa(abort(0x25, status, false)),
                "same level"
            );
        }
        for status in (0x00..0x40).filter(|status| !(0x0c..=0x0f).contains(status)) {
            assert!(
                !needs_translated_ipa(abort(0x24, status, false)),
                "{status:#x}"
            );
        }
        assert!(!needs_translated_ipa(0x16 << 26), "an HVC");
    }

    #[test]
    fn the_fast_mmio_decoding_agrees_with_the_general_one() {
        // xorshift64: a fixed, reproducible stream. Half the syndromes are
        // forced to the data-abort class with ISV set, a quarter also to a
        // status the fast path takes, so its every branch runs many times.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        // Miri runs a hundredth of the rounds (each is slow there).
        let rounds = if cfg!(miri) { 2_000 } else { 200_000 };
        let mut fast = 0;
        for round in 0..rounds {
            let mut syndrome = next();
            if round % 2 == 0 {
                syndrome = (syndrome & !(0x3f << 26)) | 0x24 << 26 | 1 << 24;
            }
            if round % 4 == 0 {
                // No table walk, and a status the fast path takes.
                syndrome = (syndrome & !0xbf) | (0x04 + (syndrome >> 40) % 12);
            }
            let trap = Trap {
                syndrome,
                address: next(),
                hpfar: next(),
            };
            let guest = context();
            let (mut by_decode, mut by_general) = (guest, guest);
            let general = decode_general(trap, &mut by_general);
            if let Some(message) = mmio_fast(trap, &guest) {
                fast += 1;
                assert_eq!(Exit::Message(message), general, "syndrome {syndrome:#x}");
            }
            assert_eq!(
                decode(trap, &mut by_decode),
                general,
                "syndrome {syndrome:#x}"
            );
            assert_eq!(by_decode, by_general, "syndrome {syndrome:#x}");
        }
        assert!(fast > rounds / 5, "the fast path ran {fast} times");
    }

    #[test]
    fn an_mmio_read_becomes_one_message_and_the_reply_fills_the_register() {
        let mut guest = context();
        let trap = Trap {
            syndrome: data_abort(2, 3, false, false, false),
            address: 0xffff_0000_0900_0018,
            hpfar: 0x0900_0000 >> 8,
        };
        let exit = message(decode(trap, &mut guest));
        assert_eq!(exit.label, FaultLabel::VcpuMmio as u64);
        assert_eq!(exit.words[mmio::ADDRESS], 0x0900_0018);
        assert_eq!(exit.words[mmio::ACCESS], 4 | 3 << mmio::REGISTER_SHIFT);
        assert_eq!(exit.words[mmio::PC], PC);
        assert_eq!(exit.words[mmio::VIRTUAL_ADDRESS], 0xffff_0000_0900_0018);
        let action = apply_reply(
            &mut guest,
            &exit,
            exit_reply::RESUME,
            &[0xdead_beef_1234_5678],
        );
        assert_eq!(action, ReplyAction::Resume);
        assert_eq!(guest.x[3], 0x1234_5678, "a w register gets 32 bits");
        assert_eq!(guest.pc, PC + 4);
    }

    #[test]
    fn an_mmio_write_carries_the_truncated_value_and_leaves_registers() {
        let mut guest = context();
        guest.x[7] = 0xaabb_ccdd_eeff_1122;
        let trap = Trap {
            syndrome: data_abort(1, 7, true, false, true),
            address: 0x0800_0004,
            hpfar: 0x0800_0000 >> 8,
        };
        let exit = message(decode(trap, &mut guest));
        assert_eq!(exit.words[mmio::VALUE], 0x1122);
        assert_ne!(exit.words[mmio::ACCESS] & mmio::WRITE, 0);
        let before = guest;
        apply_reply(&mut guest, &exit, exit_reply::RESUME, &[0x5555]);
        assert_eq!(guest.x, before.x, "a write's reply changes no register");
        assert_eq!(guest.pc, PC + 4);
    }

    #[test]
    fn loads_extend_as_the_syndrome_says() {
        assert_eq!(loaded_value(0x80, 1, true, true), 0xffff_ffff_ffff_ff80);
        assert_eq!(loaded_value(0x80, 1, true, false), 0xffff_ff80);
        assert_eq!(loaded_value(0x180, 1, false, true), 0x80);
        assert_eq!(
            loaded_value(0x8000_0000, 4, true, true),
            0xffff_ffff_8000_0000
        );
        assert_eq!(loaded_value(u64::MAX, 8, true, true), u64::MAX);
    }

    #[test]
    fn a_load_into_the_zero_register_changes_nothing() {
        let mut guest = context();
        let trap = Trap {
            syndrome: data_abort(3, 31, false, false, true),
            address: 0x0900_0000,
            hpfar: 0x0900_0000 >> 8,
        };
        let exit = message(decode(trap, &mut guest));
        let before = guest.x;
        apply_reply(&mut guest, &exit, exit_reply::RESUME, &[42]);
        assert_eq!(guest.x, before);
    }

    #[test]
    fn aborts_without_a_syndrome_or_on_a_table_walk_go_out_whole() {
        for syndrome in [
            data_abort(2, 3, false, false, false) & !(1 << 24), // no ISV
            data_abort(2, 3, false, false, false) | 1 << 7,     // S1PTW
            0x20 << 26 | 1 << 25 | 0x07,                        // instruction abort
        ] {
            let mut guest = context();
            let trap = Trap {
                syndrome,
                address: 0x1234,
                hpfar: 0x8000_0000 >> 8,
            };
            let exit = message(decode(trap, &mut guest));
            assert_eq!(exit.label, FaultLabel::VcpuException as u64);
            assert_eq!(exit.words[vcpu_exception::SYNDROME], syndrome);
            assert_eq!(exit.words[vcpu_exception::GUEST_PHYSICAL], 0x8000_0234);
            assert_eq!(exit.words[vcpu_exception::PC], PC);
        }
    }

    #[test]
    fn an_abort_reply_injects_an_external_abort_at_the_virtual_address() {
        let mut guest = context();
        let trap = Trap {
            syndrome: data_abort(2, 1, true, false, false),
            address: 0xffff_8000_1000_0000,
            hpfar: 0x1_0000_0000 >> 8,
        };
        let exit = message(decode(trap, &mut guest));
        let action = apply_reply(&mut guest, &exit, exit_reply::INJECT_ABORT, &[]);
        assert_eq!(
            action,
            ReplyAction::Inject(Injection::DataAbort {
                address: 0xffff_8000_1000_0000,
                write: true
            })
        );
        assert_eq!(guest.pc, PC, "the PC stays for the guest's handler");
    }

    #[test]
    fn hvc_carries_x0_to_x6_and_the_reply_sets_x0_to_x3() {
        let mut guest = context();
        guest.pc = PC + 4; // HVC returns after itself
        let trap = Trap {
            syndrome: 0x16 << 26 | 1 << 25,
            ..Trap::default()
        };
        let exit = message(decode(trap, &mut guest));
        assert_eq!(exit.label, FaultLabel::VcpuHypercall as u64);
        assert_eq!(exit.words[hypercall::KIND], 0);
        assert_eq!(exit.words[hypercall::X0..], guest.x[..7]);
        apply_reply(&mut guest, &exit, exit_reply::RESUME, &[0x1_0001, 7]);
        assert_eq!(guest.x[..3], [0x1_0001, 7, 0x1002]);
        assert_eq!(guest.pc, PC + 4, "HVC's return address is already past it");
    }

    #[test]
    fn a_trapped_smc_resumes_after_the_instruction() {
        let mut guest = context();
        let trap = Trap {
            syndrome: 0x17 << 26 | 1 << 25,
            ..Trap::default()
        };
        let exit = message(decode(trap, &mut guest));
        assert_eq!(exit.words[hypercall::KIND], hypercall::SMC);
        apply_reply(&mut guest, &exit, exit_reply::RESUME, &[0]);
        assert_eq!(guest.pc, PC + 4);
        assert_eq!(
            apply_reply(&mut guest, &exit, exit_reply::INJECT_UNDEFINED, &[]),
            ReplyAction::Inject(Injection::Undefined)
        );
    }

    #[test]
    fn wfi_and_wfe_are_the_cores_and_step_over_the_instruction() {
        let mut guest = context();
        let wfi = Trap {
            syndrome: 0x01 << 26 | 1 << 25,
            ..Trap::default()
        };
        assert_eq!(decode(wfi, &mut guest), Exit::WaitForInterrupt);
        assert_eq!(guest.pc, PC + 4);
        let wfe = Trap {
            syndrome: 0x01 << 26 | 1 << 25 | 1,
            ..Trap::default()
        };
        assert_eq!(decode(wfe, &mut guest), Exit::WaitForEvent);
        assert_eq!(guest.pc, PC + 8);
    }

    #[test]
    fn a_system_register_write_carries_the_encoding_and_value() {
        let mut guest = context();
        // MSR ICC_SGI1R_EL1 (S3_0_C12_C11_5), x2: op0 3, op1 0, CRn 12,
        // CRm 11, op2 5, Rt 2, write.
        let iss = 3 << 20 | 5 << 17 | 12 << 10 | 2 << 5 | 11 << 1;
        let trap = Trap {
            syndrome: 0x18 << 26 | 1 << 25 | iss,
            ..Trap::default()
        };
        let exit = message(decode(trap, &mut guest));
        assert_eq!(exit.label, FaultLabel::VcpuSystemRegister as u64);
        assert_eq!(
            exit.words[system_register::ENCODING],
            3 << 14 | 12 << 7 | 11 << 3 | 5
        );
        assert_eq!(exit.words[system_register::READ], 0);
        assert_eq!(exit.words[system_register::VALUE], 0x1002);
    }

    #[test]
    fn unknown_reply_labels_stop_the_vcpu() {
        let mut guest = context();
        let trap = Trap {
            syndrome: 0x16 << 26 | 1 << 25,
            ..Trap::default()
        };
        let exit = message(decode(trap, &mut guest));
        assert_eq!(apply_reply(&mut guest, &exit, 99, &[]), ReplyAction::Stop);
    }

    #[test]
    fn every_syndrome_decodes_without_panicking() {
        for class in 0..64u64 {
            for iss in [0, 1, 0x1ff_ffff, 0x100_0007, 0x3c_0000] {
                let mut guest = context();
                let trap = Trap {
                    syndrome: class << 26 | 1 << 25 | iss,
                    address: u64::MAX,
                    hpfar: u64::MAX,
                };
                let _ = decode(trap, &mut guest);
            }
        }
    }

    #[test]
    fn injected_exceptions_enter_the_right_vector() {
        let from_el1h = inject(Injection::Undefined, PC, 0x3c5, 0xffff_8000_0801_0000);
        assert_eq!(from_el1h.pc, 0xffff_8000_0801_0200);
        assert_eq!(from_el1h.spsr, 0x3c5);
        assert_eq!(from_el1h.elr, PC);
        assert_eq!(from_el1h.esr, 1 << 25);
        assert_eq!(from_el1h.far, None);
        let from_el0 = inject(
            Injection::DataAbort {
                address: 0x1000,
                write: false,
            },
            PC,
            0x0,
            0x4000_0000,
        );
        assert_eq!(from_el0.pc, 0x4000_0400);
        assert_eq!(from_el0.esr, 0x24 << 26 | 1 << 25 | 0x10);
        assert_eq!(from_el0.far, Some(0x1000));
        assert_eq!(from_el0.spsr_el1, 0);
        let from_el1t = inject(Injection::Undefined, PC, 0x3c4, 0x4000_0000);
        assert_eq!(from_el1t.pc, 0x4000_0000);
        // AArch32 User mode (M = 0b10000, Thumb): the lower-EL AArch32
        // vector, and the guest's PSTATE kept whole in SPSR_EL1.
        let from_aarch32 = inject(Injection::Undefined, PC, 0x30, 0x4000_0000);
        assert_eq!(from_aarch32.pc, 0x4000_0600);
        assert_eq!(from_aarch32.spsr_el1, 0x30);
        assert_eq!(from_aarch32.spsr, 0x3c5);
    }
}
