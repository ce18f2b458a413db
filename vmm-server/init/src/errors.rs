//! `errors`: the kernel refuses bogus requests with the precise error the
//! ABI promises, changes nothing, and the caller carries on (the next test
//! runs).
//!
//! Each check makes one request and compares the answer with the exact
//! [`Error`], details included: a capability pointer naming an empty slot
//! or running past the CSpace, a label no object knows or one of another
//! object type, arguments out of range (priority, core, object type,
//! destination slot) and a system-call number the ABI does not define.
//! The objects invoked are fresh ones (a TCB nobody runs, the test's own
//! untyped block), so a kernel that wrongly accepted a request could not
//! disturb init.

use core::fmt;

use hyp_abi::{
    Error, InvocationLabel, MessageInfo, ObjectType, REGISTER_MESSAGE_WORDS, Syscall, initial_slots,
};
use hyp_user::syscall::{RawReply, raw_syscall, syscall};
use hyp_user::{BootInfo, CNode, Notification, Tcb, Untyped};

use crate::arena::{Arena, SetupError};

/// A system-call number the ABI does not define.
const BOGUS_SYSCALL: u64 = 77;
/// An object type number the ABI does not define.
const BOGUS_OBJECT_TYPE: u64 = 42;
/// A priority above every thread's (the most a priority can be is 255).
const BOGUS_PRIORITY: u64 = 1000;
/// The root task's priority (`hyp-core/src/root_task.rs`): the ceiling of
/// every priority it sets.
const INIT_PRIORITY: u64 = 255;
/// A label past the last invocation label (21).
const BOGUS_LABEL: u64 = 22;

/// What the kernel answered a request: label 0 with words, or another
/// label with words 0..2 as the details.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Label 0: the request was carried out.
    Done,
    /// A refusal.
    Refused {
        /// The label (the error code).
        label: u64,
        /// Words 0..2.
        details: [u64; 3],
    },
}

impl Answer {
    fn of(reply: &RawReply) -> Answer {
        if reply.info.label == 0 {
            Answer::Done
        } else {
            Answer::Refused {
                label: reply.info.label,
                details: [reply.words[0], reply.words[1], reply.words[2]],
            }
        }
    }

    fn of_result(result: Result<(), Error>) -> Answer {
        match result {
            Ok(()) => Answer::Done,
            Err(error) => Answer::Refused {
                label: error.code() as u64,
                details: error.details(),
            },
        }
    }

    /// Whether this is exactly `expected`.
    pub(crate) fn is(&self, expected: Error) -> bool {
        match *self {
            Answer::Done => false,
            Answer::Refused { label, details } => Error::decode(label, details) == Some(expected),
        }
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Answer::Done => formatter.write_str("success"),
            Answer::Refused { label, details } => match Error::decode(label, details) {
                Some(error) => write!(formatter, "{error:?}"),
                None => write!(
                    formatter,
                    "label {label} with details {:#x}, {:#x}, {:#x} (no error of the ABI)",
                    details[0], details[1], details[2]
                ),
            },
        }
    }
}

/// A check whose answer was not the one expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mismatch {
    /// What was asked.
    pub(crate) check: &'static str,
    /// The kernel's answer.
    pub(crate) answer: Answer,
    /// The error expected.
    pub(crate) expected: Error,
}

/// Why `errors` failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Making the objects to invoke failed.
    Setup(SetupError),
    /// Some answers were not the errors expected: the first, and how many.
    Mismatches {
        /// The first wrong answer.
        first: Mismatch,
        /// Checks answered wrongly.
        wrong: u32,
        /// Checks made.
        checks: u32,
    },
}

impl From<SetupError> for Failure {
    fn from(error: SetupError) -> Failure {
        Failure::Setup(error)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Failure::Setup(error) => write!(formatter, "{error}"),
            Failure::Mismatches {
                first,
                wrong,
                checks,
            } => write!(
                formatter,
                "{wrong} of {checks} answers wrong; first: {}: got {}, expected {:?}",
                first.check, first.answer, first.expected
            ),
        }
    }
}

/// What a passing run checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Facts {
    checks: u32,
}

impl fmt::Display for Facts {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{} bogus requests refused with the exact error and details",
            self.checks
        )
    }
}

/// Tallies checks.
#[derive(Debug, Default)]
struct Checks {
    made: u32,
    wrong: u32,
    first: Option<Mismatch>,
}

impl Checks {
    fn expect(&mut self, check: &'static str, answer: Answer, expected: Error) {
        self.made += 1;
        if !answer.is(expected) {
            self.wrong += 1;
            self.first.get_or_insert(Mismatch {
                check,
                answer,
                expected,
            });
        }
    }
}

/// Invokes `object` with any `label` and `words` (the typed handles of
/// `hyp-user` cannot send a bogus label or an out-of-range word).
fn invoke(object: u64, label: u64, words: &[u64], capabilities: &[u64]) -> Answer {
    let mut message = [0; REGISTER_MESSAGE_WORDS];
    let length = words.len().min(REGISTER_MESSAGE_WORDS);
    message[..length].copy_from_slice(&words[..length]);
    let mut extra = [0; 3];
    let count = capabilities.len().min(3);
    extra[..count].copy_from_slice(&capabilities[..count]);
    #[allow(
        clippy::cast_possible_truncation,
        reason = "at most 8 words and 3 capabilities, bounded just above"
    )]
    let info = MessageInfo {
        label,
        length: length as u8,
        extra_capabilities: count as u8,
    };
    Answer::of(&syscall(Syscall::Call, object, info, message, extra))
}

/// Runs every check.
pub(crate) fn run(boot_info: &BootInfo<'_>, arena: &mut Arena<'_>) -> Result<Facts, Failure> {
    let root = CNode::new(initial_slots::CNODE);
    let radix = boot_info.root_cnode_radix();
    let root_slots = 1u64 << radix;
    let cores = u64::try_from(boot_info.cores()).unwrap_or(u64::MAX);
    let empty = arena.empty_slot()?;
    let tcb = arena.create(ObjectType::Tcb, 0, "retype a TCB to invoke")?;
    let untyped = arena.untyped();
    let mut checks = Checks::default();

    // Capability pointers.
    checks.expect(
        "TcbResume on an empty slot",
        Answer::of_result(Tcb::new(empty).resume()),
        Error::InvalidCapability { argument: 0 },
    );
    checks.expect(
        "Poll on the null slot 0",
        Answer::of_result(Notification::new(initial_slots::NULL).poll().map(|_| ())),
        Error::InvalidCapability { argument: 0 },
    );
    // The root CNode's guard is 64 - radix zero bits: a pointer with a
    // bit above the radix fails the guard before any bit is resolved.
    checks.expect(
        "TcbResume on a pointer beyond the root CNode",
        Answer::of_result(Tcb::new(root_slots).resume()),
        Error::LookupFailed {
            argument: 0,
            bits_left: 64,
        },
    );
    checks.expect(
        "UntypedRetype into a CNode pointer beyond the root CNode",
        Answer::of_result(Untyped::new(untyped.pointer()).retype(
            ObjectType::Endpoint,
            0,
            CNode::new(root_slots),
            empty,
            1,
        )),
        Error::LookupFailed {
            argument: 1,
            bits_left: 64,
        },
    );

    // Labels.
    checks.expect(
        "label 22 (no invocation) on a TCB",
        invoke(tcb, BOGUS_LABEL, &[], &[]),
        Error::IllegalOperation,
    );
    checks.expect(
        "label 0 on a TCB",
        invoke(tcb, 0, &[], &[]),
        Error::IllegalOperation,
    );
    checks.expect(
        "TcbReadRegisters on a CNode",
        Answer::of_result(Tcb::new(root.pointer()).read_registers().map(|_| ())),
        Error::IllegalOperation,
    );
    checks.expect(
        "UntypedRetype on a TCB",
        Answer::of_result(Untyped::new(tcb).retype(ObjectType::Endpoint, 0, root, empty, 1)),
        Error::IllegalOperation,
    );

    // Arguments out of range.
    checks.expect(
        "TcbSetPriority 1000",
        invoke(
            tcb,
            InvocationLabel::TcbSetPriority as u64,
            &[BOGUS_PRIORITY],
            &[],
        ),
        Error::RangeError {
            argument: 0,
            minimum: 0,
            maximum: INIT_PRIORITY,
        },
    );
    checks.expect(
        "TcbSetAffinity to a core past the last",
        Answer::of_result(Tcb::new(tcb).set_affinity(cores)),
        Error::RangeError {
            argument: 0,
            minimum: 0,
            maximum: cores.saturating_sub(1),
        },
    );
    checks.expect(
        "UntypedRetype of object type 42",
        invoke(
            untyped.pointer(),
            InvocationLabel::UntypedRetype as u64,
            &[BOGUS_OBJECT_TYPE, 0, empty, 1],
            &[root.pointer()],
        ),
        Error::RangeError {
            argument: 0,
            minimum: 0,
            maximum: ObjectType::Frame2M as u64,
        },
    );
    checks.expect(
        "UntypedRetype into a slot past the root CNode's end",
        Answer::of_result(untyped.retype(ObjectType::Endpoint, 0, root, root_slots, 1)),
        Error::RangeError {
            argument: 2,
            minimum: 0,
            maximum: root_slots - 1,
        },
    );

    // A system call the ABI does not define.
    checks.expect(
        "system call 77",
        Answer::of(&raw_syscall(
            BOGUS_SYSCALL,
            initial_slots::NULL,
            MessageInfo::new(0, 0),
            [0; REGISTER_MESSAGE_WORDS],
            [0; 3],
        )),
        Error::IllegalOperation,
    );

    match checks.first {
        None => Ok(Facts {
            checks: checks.made,
        }),
        Some(first) => Err(Failure::Mismatches {
            first,
            wrong: checks.wrong,
            checks: checks.made,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_match_only_the_exact_error() {
        let answer = Answer::of_result(Err(Error::RangeError {
            argument: 0,
            minimum: 0,
            maximum: 255,
        }));
        assert!(answer.is(Error::RangeError {
            argument: 0,
            minimum: 0,
            maximum: 255
        }));
        assert!(!answer.is(Error::RangeError {
            argument: 0,
            minimum: 0,
            maximum: 254
        }));
        assert!(!Answer::Done.is(Error::IllegalOperation));
        assert_eq!(std::format!("{}", Answer::Done), "success");
        assert_eq!(
            std::format!(
                "{}",
                Answer::Refused {
                    label: 99,
                    details: [1, 0, 0]
                }
            ),
            "label 99 with details 0x1, 0x0, 0x0 (no error of the ABI)"
        );
    }

    #[test]
    fn the_first_mismatch_and_the_count_are_kept() {
        let mut checks = Checks::default();
        checks.expect("a", Answer::Done, Error::IllegalOperation);
        checks.expect(
            "b",
            Answer::of_result(Err(Error::IllegalOperation)),
            Error::IllegalOperation,
        );
        checks.expect("c", Answer::Done, Error::RevokeFirst);
        assert_eq!((checks.made, checks.wrong), (3, 2));
        assert_eq!(checks.first.map(|first| first.check), Some("a"));
    }
}
