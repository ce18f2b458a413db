//! `ping-pong` and `ping-pong-smp`: init builds a child thread in an
//! address space of its own (`thread.rs`) and the two exchange calls
//! through an endpoint: [`ROUNDS`] with the child on init's core, and,
//! when there is more than one core, [`SMP_ROUNDS`] with the child on
//! core 1, so every call and every reply wakes a thread on the other
//! core. It exercises retype, copy, mint, TCB configuration and affinity,
//! stage-2 page tables and frame mapping, badges, `Call`, `Recv` and
//! `ReplyRecv`.
//!
//! Protocol: the child calls with label [`PING`] and word `i`; init checks
//! the badge and `i` and replies label 0 with `i + 1`. At the end the child
//! calls once more with label [`DONE`] and words (calls completed, 1 if a
//! reply was wrong else 0, that reply's label and word 0). Init never
//! replies to that call: tear-down suspends the child, which is how a
//! thread ends while no exit system call exists. A fault of the child
//! comes to init as a message with the [`CRASH_BADGE`].

use core::fmt;

use hyp_abi::{ObjectType, Rights};
use hyp_user::{BootInfo, Endpoint, Message};

use crate::arena::{Arena, SetupError};
use crate::thread::{CRASH_BADGE, Crash, Space, Start};

/// Calls the child makes on init's core.
pub(crate) const ROUNDS: u64 = 10_000;
/// Calls the child makes from core 1.
pub(crate) const SMP_ROUNDS: u64 = 1_000;
/// The badge of the child's endpoint capability.
pub(crate) const BADGE: u64 = 0x42;
/// The label of a ping.
pub(crate) const PING: u64 = 1;
/// The label of the child's last message.
pub(crate) const DONE: u64 = 2;
/// The child's priority (below init's, which is the highest).
const CHILD_PRIORITY: u8 = 100;
/// The slot of the child's CNode that holds its endpoint capability.
const CHILD_ENDPOINT_SLOT: u64 = 1;

/// Why ping-pong failed, precisely enough to find the broken step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Building the child failed.
    Setup(SetupError),
    /// A message came with the wrong badge.
    WrongBadge {
        /// Pings answered before it.
        round: u64,
        /// Its badge.
        badge: u64,
        /// Its label.
        label: u64,
    },
    /// The child faulted.
    Crashed {
        /// Pings answered before.
        round: u64,
        /// The fault.
        crash: Crash,
    },
    /// A ping carried the wrong number.
    WrongWord {
        /// Pings answered before it (the number expected).
        round: u64,
        /// Its word 0, if it had one.
        word: Option<u64>,
    },
    /// A message had a label of no ping-pong message.
    UnexpectedLabel {
        /// Pings answered before it.
        round: u64,
        /// Its label.
        label: u64,
    },
    /// The child's last message says it failed or stopped early.
    ChildFailed {
        /// Pings init answered.
        answered: u64,
        /// Calls the child completed, by its own count.
        completed: Option<u64>,
        /// The label and word 0 of a wrong reply the child got.
        wrong_reply: Option<(u64, u64)>,
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
            Failure::WrongBadge {
                round,
                badge,
                label,
            } => write!(
                formatter,
                "after {round} round trips: badge {badge:#x} (label {label}), expected {BADGE:#x}"
            ),
            Failure::Crashed { round, crash } => {
                write!(formatter, "after {round} round trips: {crash}")
            }
            Failure::WrongWord { round, word } => match word {
                Some(word) => write!(
                    formatter,
                    "after {round} round trips: ping {word}, expected {round}"
                ),
                None => write!(
                    formatter,
                    "after {round} round trips: a ping without a word"
                ),
            },
            Failure::UnexpectedLabel { round, label } => write!(
                formatter,
                "after {round} round trips: label {label} is no ping-pong message"
            ),
            Failure::ChildFailed {
                answered,
                completed,
                wrong_reply,
            } => {
                write!(formatter, "init answered {answered} pings, the child ")?;
                match completed {
                    Some(completed) => write!(formatter, "completed {completed} calls")?,
                    None => write!(formatter, "did not say how many calls it completed")?,
                }
                if let Some((label, word)) = wrong_reply {
                    write!(
                        formatter,
                        " and then got a wrong reply (label {label}, word {word:#x})"
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// What a passing run did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Facts {
    round_trips: u64,
    core: Option<u64>,
}

impl fmt::Display for Facts {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} round trips", self.round_trips)?;
        if let Some(core) = self.core {
            write!(
                formatter,
                " between init on core 0 and the child on core {core}"
            )?;
        }
        write!(formatter, ", badges checked")
    }
}

/// Runs ping-pong with `rounds` calls, the child on `core` (`None`: the
/// default core, init's): builds the child, serves its pings and checks
/// its last message.
pub(crate) fn run(
    boot_info: &BootInfo<'_>,
    arena: &mut Arena<'_>,
    rounds: u64,
    core: Option<u64>,
) -> Result<Facts, Failure> {
    let endpoint = arena.create(ObjectType::Endpoint, 0, "retype the endpoint")?;
    let calls = Rights::WRITE.union(Rights::GRANT_REPLY);
    let crash = arena.mint(endpoint, calls, CRASH_BADGE, "mint the fault endpoint")?;
    let mut space = Space::new(arena, boot_info)?;
    space.give(arena, CHILD_ENDPOINT_SLOT, endpoint, calls, Some(BADGE))?;
    space.spawn(
        arena,
        Start {
            entry: child,
            arguments: [CHILD_ENDPOINT_SLOT, rounds, 0, 0],
            priority: CHILD_PRIORITY,
            core,
            fault_endpoint: Some(crash),
        },
    )?;
    let round_trips = serve(Endpoint::new(endpoint), rounds)?;
    Ok(Facts { round_trips, core })
}

/// Answers the child's pings on `endpoint` until its last message.
fn serve(endpoint: Endpoint, rounds: u64) -> Result<u64, Failure> {
    let mut received = endpoint.recv();
    let mut round = 0;
    loop {
        let message = received.message;
        if received.badge == CRASH_BADGE {
            return Err(Failure::Crashed {
                round,
                crash: Crash::of(&received),
            });
        }
        if received.badge != BADGE {
            return Err(Failure::WrongBadge {
                round,
                badge: received.badge,
                label: message.label(),
            });
        }
        match message.label() {
            PING => {
                let word = message.word(0);
                if word != Some(round) {
                    return Err(Failure::WrongWord { round, word });
                }
                round += 1;
                received = endpoint.reply_recv(&Message::new(0, [round]));
            }
            DONE => {
                let completed = message.word(0);
                let wrong_reply = match message.word(1) {
                    Some(0) => None,
                    _ => Some((
                        message.word(2).unwrap_or(u64::MAX),
                        message.word(3).unwrap_or(u64::MAX),
                    )),
                };
                if round != rounds || completed != Some(rounds) || wrong_reply.is_some() {
                    return Err(Failure::ChildFailed {
                        answered: round,
                        completed,
                        wrong_reply,
                    });
                }
                return Ok(round);
            }
            label => return Err(Failure::UnexpectedLabel { round, label }),
        }
    }
}

/// The child thread: calls init `rounds` times through the endpoint
/// capability `endpoint_pointer` (a slot of its own CNode), checks every
/// reply and reports the result to init. It runs init's code in its own
/// address space, on its own stack, with nothing else mapped.
extern "C" fn child(endpoint_pointer: u64, rounds: u64, _: u64, _: u64) -> ! {
    let endpoint = Endpoint::new(endpoint_pointer);
    let mut completed = 0;
    let mut wrong_reply = None;
    while completed < rounds {
        let reply = endpoint.call(&Message::new(PING, [completed]));
        if reply.label() != 0 || reply.word(0) != Some(completed + 1) {
            wrong_reply = Some(reply);
            break;
        }
        completed += 1;
    }
    let done = match wrong_reply {
        None => Message::new(DONE, [completed, 0, 0, 0]),
        Some(reply) => Message::new(
            DONE,
            [
                completed,
                1,
                reply.label(),
                reply.word(0).unwrap_or(u64::MAX),
            ],
        ),
    };
    // Init never replies to this call: tear-down suspends this thread.
    endpoint.call(&done);
    // Only if that call came back (refused): nothing is left to do.
    loop {
        hyp_user::ipc::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_name_the_step_and_the_numbers() {
        let failure = Failure::WrongBadge {
            round: 17,
            badge: 0,
            label: 1,
        };
        assert_eq!(
            std::format!("{failure}"),
            "after 17 round trips: badge 0x0 (label 1), expected 0x42"
        );
        let failure = Failure::ChildFailed {
            answered: 3,
            completed: Some(3),
            wrong_reply: Some((5, 0x10)),
        };
        assert_eq!(
            std::format!("{failure}"),
            "init answered 3 pings, the child completed 3 calls and then got a wrong reply (label 5, word 0x10)"
        );
    }

    #[test]
    fn facts_say_where_the_child_ran() {
        let facts = Facts {
            round_trips: 1000,
            core: Some(1),
        };
        assert_eq!(
            std::format!("{facts}"),
            "1000 round trips between init on core 0 and the child on core 1, badges checked"
        );
        let facts = Facts {
            round_trips: 10,
            core: None,
        };
        assert_eq!(std::format!("{facts}"), "10 round trips, badges checked");
    }
}
