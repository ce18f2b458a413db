//! Errors of system calls and invocations.
//!
//! A failed invocation returns a [`crate::MessageInfo`] whose label is the
//! [`ErrorCode`] and whose message words are the details (which argument,
//! which range), so user space learns *precisely* what was wrong. Label 0
//! means success. Arguments are numbered from 0 in the order of the
//! invocation's message words; capability arguments are numbered from 0 as
//! well, with 0 the capability invoked and 1 to 3 the extra capabilities.

use crate::Rights;

/// The error codes, as they travel in the label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum ErrorCode {
    /// A capability argument names an empty slot or an object of the
    /// wrong type.
    InvalidCapability = 1,
    /// Resolving a capability pointer failed: a guard did not match, or the
    /// pointer runs past the CSpace.
    LookupFailed = 2,
    /// An argument has a value the operation does not accept.
    InvalidArgument = 3,
    /// An argument is outside its range.
    RangeError = 4,
    /// The object does not support this operation (unknown label or
    /// syscall), or not in its current state.
    IllegalOperation = 5,
    /// The capability lacks a right the operation needs.
    InsufficientRights = 6,
    /// The untyped memory has too little room left.
    NotEnoughMemory = 7,
    /// An address or size is not aligned as required.
    AlignmentError = 8,
    /// The destination slot is not empty.
    DeleteFirst = 9,
    /// The capability has derived capabilities that must be revoked first.
    RevokeFirst = 10,
    /// The message is longer than the receiver or the IPC buffer allows.
    Truncated = 11,
}

/// An error with its details.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// Capability argument `argument` is empty or of the wrong type.
    InvalidCapability {
        /// Which capability argument.
        argument: u8,
    },
    /// Capability argument `argument` could not be resolved;
    /// `bits_left` of the pointer were unresolved when it failed.
    LookupFailed {
        /// Which capability argument.
        argument: u8,
        /// Bits of the capability pointer not yet resolved.
        bits_left: u8,
    },
    /// Message word `argument` has a value the operation does not accept.
    InvalidArgument {
        /// Which word.
        argument: u8,
    },
    /// Message word `argument` is outside `[minimum, maximum]`.
    RangeError {
        /// Which word.
        argument: u8,
        /// Smallest accepted value.
        minimum: u64,
        /// Largest accepted value.
        maximum: u64,
    },
    /// Unknown operation for this object, or not possible in its state.
    IllegalOperation,
    /// Capability argument `argument` lacks `needed`.
    InsufficientRights {
        /// Which capability argument.
        argument: u8,
        /// The rights that were needed.
        needed: Rights,
    },
    /// `requested` bytes asked of an untyped with `available` left.
    NotEnoughMemory {
        /// Bytes asked for.
        requested: u64,
        /// Bytes left.
        available: u64,
    },
    /// Message word `argument` is not aligned as required.
    AlignmentError {
        /// Which word.
        argument: u8,
    },
    /// Capability argument `argument` names a slot that is not empty.
    DeleteFirst {
        /// Which capability argument.
        argument: u8,
    },
    /// The capability has derived capabilities; revoke them first.
    RevokeFirst,
    /// The message does not fit.
    Truncated,
}

impl Error {
    /// The code that goes in the label.
    pub const fn code(self) -> ErrorCode {
        match self {
            Error::InvalidCapability { .. } => ErrorCode::InvalidCapability,
            Error::LookupFailed { .. } => ErrorCode::LookupFailed,
            Error::InvalidArgument { .. } => ErrorCode::InvalidArgument,
            Error::RangeError { .. } => ErrorCode::RangeError,
            Error::IllegalOperation => ErrorCode::IllegalOperation,
            Error::InsufficientRights { .. } => ErrorCode::InsufficientRights,
            Error::NotEnoughMemory { .. } => ErrorCode::NotEnoughMemory,
            Error::AlignmentError { .. } => ErrorCode::AlignmentError,
            Error::DeleteFirst { .. } => ErrorCode::DeleteFirst,
            Error::RevokeFirst => ErrorCode::RevokeFirst,
            Error::Truncated => ErrorCode::Truncated,
        }
    }

    /// The detail words (message words 0 to 2 of the error reply).
    pub const fn details(self) -> [u64; 3] {
        match self {
            Error::InvalidCapability { argument }
            | Error::InvalidArgument { argument }
            | Error::AlignmentError { argument }
            | Error::DeleteFirst { argument } => [argument as u64, 0, 0],
            Error::LookupFailed {
                argument,
                bits_left,
            } => [argument as u64, bits_left as u64, 0],
            Error::RangeError {
                argument,
                minimum,
                maximum,
            } => [argument as u64, minimum, maximum],
            Error::InsufficientRights { argument, needed } => {
                [argument as u64, needed.bits() as u64, 0]
            }
            Error::NotEnoughMemory {
                requested,
                available,
            } => [requested, available, 0],
            Error::IllegalOperation | Error::RevokeFirst | Error::Truncated => [0, 0, 0],
        }
    }

    /// Rebuilds an error from its label and details (user space); `None`
    /// for a label that is no error code or details out of range.
    pub fn decode(label: u64, details: [u64; 3]) -> Option<Error> {
        let argument = u8::try_from(details[0]).ok();
        Some(match label {
            1 => Error::InvalidCapability {
                argument: argument?,
            },
            2 => Error::LookupFailed {
                argument: argument?,
                bits_left: u8::try_from(details[1]).ok()?,
            },
            3 => Error::InvalidArgument {
                argument: argument?,
            },
            4 => Error::RangeError {
                argument: argument?,
                minimum: details[1],
                maximum: details[2],
            },
            5 => Error::IllegalOperation,
            6 => Error::InsufficientRights {
                argument: argument?,
                needed: Rights::from_bits(details[1])?,
            },
            7 => Error::NotEnoughMemory {
                requested: details[0],
                available: details[1],
            },
            8 => Error::AlignmentError {
                argument: argument?,
            },
            9 => Error::DeleteFirst {
                argument: argument?,
            },
            10 => Error::RevokeFirst,
            11 => Error::Truncated,
            _ => return None,
        })
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Error::InvalidCapability { argument } => {
                write!(
                    formatter,
                    "capability argument {argument} is empty or of the wrong type"
                )
            }
            Error::LookupFailed {
                argument,
                bits_left,
            } => write!(
                formatter,
                "capability argument {argument} could not be resolved ({bits_left} bits left)"
            ),
            Error::InvalidArgument { argument } => {
                write!(
                    formatter,
                    "argument {argument} has a value the operation does not accept"
                )
            }
            Error::RangeError {
                argument,
                minimum,
                maximum,
            } => write!(
                formatter,
                "argument {argument} is outside [{minimum:#x}, {maximum:#x}]"
            ),
            Error::IllegalOperation => formatter.write_str("illegal operation for this object"),
            Error::InsufficientRights { argument, needed } => write!(
                formatter,
                "capability argument {argument} lacks rights {:#06b}",
                needed.bits()
            ),
            Error::NotEnoughMemory {
                requested,
                available,
            } => write!(
                formatter,
                "not enough untyped memory: {requested:#x} bytes asked, {available:#x} left"
            ),
            Error::AlignmentError { argument } => {
                write!(formatter, "argument {argument} is misaligned")
            }
            Error::DeleteFirst { argument } => {
                write!(
                    formatter,
                    "capability argument {argument} names a slot that is not empty"
                )
            }
            Error::RevokeFirst => formatter.write_str("the capability has children: revoke first"),
            Error::Truncated => formatter.write_str("the message does not fit"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_round_trips() {
        let errors = [
            Error::InvalidCapability { argument: 2 },
            Error::LookupFailed {
                argument: 1,
                bits_left: 61,
            },
            Error::InvalidArgument { argument: 0 },
            Error::RangeError {
                argument: 3,
                minimum: 4,
                maximum: 62,
            },
            Error::IllegalOperation,
            Error::InsufficientRights {
                argument: 0,
                needed: Rights::WRITE,
            },
            Error::NotEnoughMemory {
                requested: 0x1000,
                available: 0x800,
            },
            Error::AlignmentError { argument: 1 },
            Error::DeleteFirst { argument: 1 },
            Error::RevokeFirst,
            Error::Truncated,
        ];
        for error in errors {
            assert_eq!(
                Error::decode(error.code() as u64, error.details()),
                Some(error),
                "{error}"
            );
        }
        assert_eq!(Error::decode(0, [0; 3]), None, "label 0 is success");
        assert_eq!(Error::decode(12, [0; 3]), None);
        assert_eq!(Error::decode(1, [256, 0, 0]), None, "argument beyond u8");
    }

    #[test]
    fn messages_name_the_argument_and_range() {
        let error = Error::RangeError {
            argument: 3,
            minimum: 4,
            maximum: 62,
        };
        assert_eq!(std::format!("{error}"), "argument 3 is outside [0x4, 0x3e]");
    }
}
