//! `timer-irq`: an interrupt reaches a thread as a notification signal.
//!
//! Init takes the handler of the physical-timer interrupt (PPI 30) from its
//! IRQ control capability and points it at a notification through a
//! capability badged [`TIMER_BADGE`] (which unmasks the interrupt on
//! init's core, 0). A thread of priority 100 on core 0 programs core 0's
//! physical timer [`DELAY_DIVISOR`]ths of a second ahead, waits on the
//! notification, and on waking checks that the bits are exactly the badge,
//! that the count has reached the compare value and that the timer says
//! its condition is met. It stops the timer before it acknowledges the
//! interrupt (the line is level-triggered: acknowledging first would let
//! the interrupt in again at once), then polls the notification, which
//! must be empty. [`INTERRUPTS`] times; then it reports to init in one
//! call (a [`TimerReport`]).
//!
//! The waiting loop, [`wait_for_interrupts`], is also the high-priority
//! thread of `priorities`.

use core::fmt;

use hyp_abi::{Error, ObjectType, Rights, initial_slots};
use hyp_user::timer::{self, CONTROL_ISTATUS, TIMER_IRQ};
use hyp_user::{BootInfo, Endpoint, IrqControl, IrqHandler, Message, Notification, window};

use crate::arena::{Arena, Kind, SetupError, step};
use crate::thread::{CRASH_BADGE, Crash, Space, Start};

/// Interrupts the thread waits for.
pub(crate) const INTERRUPTS: u64 = 5;
/// The timer fires 1/`DELAY_DIVISOR` s after it is started (5 ms).
pub(crate) const DELAY_DIVISOR: u64 = 200;
/// The badge of the capability the interrupt signals through.
pub(crate) const TIMER_BADGE: u64 = 1 << 4;
/// The label of the waiting thread's report.
pub(crate) const REPORT: u64 = 3;
/// The badge of the report endpoint capability.
pub(crate) const REPORT_BADGE: u64 = 0x7e;
/// The waiting thread's priority.
const WAITER_PRIORITY: u8 = 100;
/// Slots of the child CNode: the notification (read), the IRQ handler and
/// the report endpoint.
pub(crate) const NOTIFICATION_SLOT: u64 = 1;
/// See [`NOTIFICATION_SLOT`].
pub(crate) const HANDLER_SLOT: u64 = 2;
/// See [`NOTIFICATION_SLOT`].
pub(crate) const REPORT_SLOT: u64 = 3;

/// Why the waiting loop stopped early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Problem {
    /// `CNTFRQ_EL0` reads 0.
    NoFrequency,
    /// `Wait` or `Poll` on the notification was refused.
    WaitRefused(Error),
    /// The thread woke with other bits than the badge.
    WrongBits(u64),
    /// It woke before the count reached the compare value.
    Early {
        /// The count on waking.
        count: u64,
        /// The compare value.
        compare: u64,
    },
    /// On waking, the timer did not say its condition was met.
    NoStatus {
        /// `CNTP_CTL_EL0` then.
        control: u64,
    },
    /// `IrqHandlerAck` was refused.
    AckRefused(Error),
    /// After the timer was stopped and the interrupt acknowledged, the
    /// notification had bits.
    Spurious(u64),
}

impl Problem {
    /// Message words: a kind and three details.
    fn encode(self) -> [u64; 4] {
        let error_words = |kind, error: Error| {
            let details = error.details();
            [kind, error.code() as u64, details[0], details[1]]
        };
        match self {
            Problem::NoFrequency => [1, 0, 0, 0],
            Problem::WaitRefused(error) => error_words(2, error),
            Problem::WrongBits(bits) => [3, bits, 0, 0],
            Problem::Early { count, compare } => [4, count, compare, 0],
            Problem::NoStatus { control } => [5, control, 0, 0],
            Problem::AckRefused(error) => error_words(6, error),
            Problem::Spurious(bits) => [7, bits, 0, 0],
        }
    }

    /// The problem that `encode` made `words` of; `None` for kind 0 (no
    /// problem) and `Some(Err(kind))` for one no problem has.
    fn decode(words: [u64; 4]) -> Option<Result<Problem, u64>> {
        let [kind, first, second, third] = words;
        let error = || Error::decode(first, [second, third, 0]).unwrap_or(Error::IllegalOperation);
        Some(Ok(match kind {
            0 => return None,
            1 => Problem::NoFrequency,
            2 => Problem::WaitRefused(error()),
            3 => Problem::WrongBits(first),
            4 => Problem::Early {
                count: first,
                compare: second,
            },
            5 => Problem::NoStatus { control: first },
            6 => Problem::AckRefused(error()),
            7 => Problem::Spurious(first),
            other => return Some(Err(other)),
        }))
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Problem::NoFrequency => formatter.write_str("CNTFRQ_EL0 reads 0"),
            Problem::WaitRefused(error) => write!(formatter, "Wait or Poll refused: {error}"),
            Problem::WrongBits(bits) => write!(
                formatter,
                "woke with bits {bits:#x}, expected the badge {TIMER_BADGE:#x}"
            ),
            Problem::Early { count, compare } => write!(
                formatter,
                "woke at count {count:#x}, before the compare value {compare:#x}"
            ),
            Problem::NoStatus { control } => write!(
                formatter,
                "woke while CNTP_CTL_EL0 = {control:#x} has no ISTATUS"
            ),
            Problem::AckRefused(error) => write!(formatter, "IrqHandlerAck refused: {error}"),
            Problem::Spurious(bits) => write!(
                formatter,
                "bits {bits:#x} arrived after the timer was stopped and the interrupt acknowledged"
            ),
        }
    }
}

/// What the waiting loop did: sent to init as one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimerReport {
    /// Interrupts taken and checked.
    pub(crate) completed: u64,
    /// Why it stopped early, if it did.
    pub(crate) problem: Option<Problem>,
    /// The shortest time from a compare value to the thread's check on
    /// waking, in counter ticks.
    pub(crate) earliest: u64,
    /// The longest such time.
    pub(crate) latest: u64,
    /// Waits during which the word at the progress address grew.
    pub(crate) grew: u64,
}

impl TimerReport {
    /// The report as a message with label [`REPORT`].
    pub(crate) fn to_message(self) -> Message {
        let [kind, first, second, third] = self.problem.map_or([0; 4], Problem::encode);
        Message::new(
            REPORT,
            [
                self.completed,
                kind,
                first,
                second,
                third,
                self.earliest,
                self.latest,
                self.grew,
            ],
        )
    }

    /// The report in `message`; `Err` with the message's label, or with
    /// the unknown problem kind, if it is none.
    pub(crate) fn from_message(message: &Message) -> Result<TimerReport, ReportError> {
        if message.label() != REPORT || message.length() != 8 {
            return Err(ReportError::NotAReport {
                label: message.label(),
                length: message.length(),
            });
        }
        let word = |index| message.word(index).unwrap_or(0);
        let problem = match Problem::decode([word(1), word(2), word(3), word(4)]) {
            None => None,
            Some(Ok(problem)) => Some(problem),
            Some(Err(kind)) => return Err(ReportError::UnknownProblem { kind }),
        };
        Ok(TimerReport {
            completed: word(0),
            problem,
            earliest: word(5),
            latest: word(6),
            grew: word(7),
        })
    }

    /// `Ok` if every interrupt came and was checked.
    pub(crate) fn check(&self) -> Result<(), TimerFailure> {
        match self.problem {
            Some(problem) => Err(TimerFailure::Problem {
                interrupt: self.completed,
                problem,
            }),
            None if self.completed != INTERRUPTS => Err(TimerFailure::TooFew {
                completed: self.completed,
            }),
            None => Ok(()),
        }
    }
}

/// `ticks` of a counter of `frequency` Hz in microseconds (0 if the
/// frequency is 0).
pub(crate) fn microseconds(ticks: u64, frequency: u64) -> u64 {
    if frequency == 0 {
        return 0;
    }
    let micros = u128::from(ticks) * 1_000_000 / u128::from(frequency);
    u64::try_from(micros).unwrap_or(u64::MAX)
}

/// A message that should have been a [`TimerReport`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReportError {
    /// Wrong label or length.
    NotAReport {
        /// Its label.
        label: u64,
        /// Its length.
        length: usize,
    },
    /// A problem kind the loop does not send.
    UnknownProblem {
        /// The kind.
        kind: u64,
    },
}

impl fmt::Display for ReportError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ReportError::NotAReport { label, length } => write!(
                formatter,
                "a message with label {label} and {length} words instead of the report (label {REPORT}, 8 words)"
            ),
            ReportError::UnknownProblem { kind } => {
                write!(
                    formatter,
                    "the report names problem {kind}, which does not exist"
                )
            }
        }
    }
}

/// What the waiting loop reported wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimerFailure {
    /// It stopped at interrupt `interrupt` (counted from 0).
    Problem {
        /// The interrupt.
        interrupt: u64,
        /// What was wrong.
        problem: Problem,
    },
    /// It reported fewer interrupts and no problem.
    TooFew {
        /// Interrupts it took.
        completed: u64,
    },
}

impl fmt::Display for TimerFailure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TimerFailure::Problem { interrupt, problem } => {
                write!(formatter, "interrupt {interrupt}: {problem}")
            }
            TimerFailure::TooFew { completed } => write!(
                formatter,
                "the waiting thread reported {completed} of {INTERRUPTS} interrupts and no problem"
            ),
        }
    }
}

/// The waiting loop (see the module's documentation), run by a thread on
/// the core whose physical timer the handler's interrupt is. If
/// `progress` is a window address, it also counts the waits during which
/// the word there grew (another thread's progress).
pub(crate) fn wait_for_interrupts(
    notification: Notification,
    handler: IrqHandler,
    progress: Option<u64>,
) -> TimerReport {
    let frequency = timer::frequency();
    let mut report = TimerReport {
        completed: 0,
        problem: None,
        earliest: u64::MAX,
        latest: 0,
        grew: 0,
    };
    if frequency == 0 {
        report.problem = Some(Problem::NoFrequency);
        return report;
    }
    let read_progress = || progress.and_then(|address| window::read(address).ok());
    while report.completed < INTERRUPTS {
        let before = read_progress();
        let compare = timer::count().saturating_add(frequency / DELAY_DIVISOR);
        timer::start(compare);
        let woken = notification.wait();
        let count = timer::count();
        let control = timer::control();
        // Stop the timer before the interrupt is let in again: the line
        // stays raised while the condition holds.
        timer::stop();
        let acknowledged = handler.acknowledge();
        let after = notification.poll();
        let problem = match (woken, acknowledged, after) {
            (Err(error), _, _) | (_, _, Err(error)) => Some(Problem::WaitRefused(error)),
            (Ok(bits), _, _) if bits != TIMER_BADGE => Some(Problem::WrongBits(bits)),
            _ if count < compare => Some(Problem::Early { count, compare }),
            _ if control & CONTROL_ISTATUS == 0 => Some(Problem::NoStatus { control }),
            (_, Err(error), _) => Some(Problem::AckRefused(error)),
            (_, _, Ok(bits)) if bits != 0 => Some(Problem::Spurious(bits)),
            _ => None,
        };
        if problem.is_some() {
            report.problem = problem;
            return report;
        }
        report.earliest = report.earliest.min(count - compare);
        report.latest = report.latest.max(count - compare);
        if let (Some(before), Some(after)) = (before, read_progress())
            && after > before
        {
            report.grew += 1;
        }
        report.completed += 1;
    }
    report
}

/// Takes the physical-timer interrupt's handler into a fresh slot and
/// points it at a new notification through a capability badged
/// [`TIMER_BADGE`]. Returns the slots of the notification (the original
/// capability, all rights) and of the handler.
///
/// Init runs on core 0, whose timer the tests use: it stops the timer
/// first, so a timer an earlier test left running (after a failure)
/// cannot signal the new notification before the waiting thread starts
/// it.
pub(crate) fn take_timer_interrupt(arena: &mut Arena<'_>) -> Result<(u64, u64), SetupError> {
    timer::stop();
    let notification = arena.create(ObjectType::Notification, 0, "retype a notification")?;
    let badged = arena.mint(
        notification,
        Rights::WRITE,
        TIMER_BADGE,
        "mint the notification's badged capability",
    )?;
    let handler = arena.allocate(1, Kind::Other)?;
    IrqControl::new(initial_slots::IRQ_CONTROL)
        .get(TIMER_IRQ, arena.root(), handler)
        .map_err(step("IrqControlGet of the physical timer's interrupt (30)"))?;
    IrqHandler::new(handler)
        .set_notification(Notification::new(badged))
        .map_err(step("IrqHandlerSetNotification"))?;
    Ok((notification, handler))
}

/// Why `timer-irq` failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Setting up failed.
    Setup(SetupError),
    /// A thread faulted.
    Crashed(Crash),
    /// The report did not come or did not decode.
    Report(ReportError),
    /// The waiting thread found something wrong.
    Timer(TimerFailure),
}

impl From<SetupError> for Failure {
    fn from(error: SetupError) -> Failure {
        Failure::Setup(error)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Setup(error) => write!(formatter, "{error}"),
            Failure::Crashed(crash) => write!(formatter, "{crash}"),
            Failure::Report(error) => write!(formatter, "{error}"),
            Failure::Timer(failure) => write!(formatter, "{failure}"),
        }
    }
}

/// Receives the report of the waiting thread on `endpoint`: a fault of a
/// thread (badge [`CRASH_BADGE`]) or another message is a failure.
pub(crate) fn receive_report(endpoint: Endpoint) -> Result<TimerReport, Failure> {
    let received = endpoint.recv();
    if received.badge != REPORT_BADGE {
        return Err(Failure::Crashed(Crash::of(&received)));
    }
    let report = TimerReport::from_message(&received.message).map_err(Failure::Report)?;
    report.check().map_err(Failure::Timer)?;
    Ok(report)
}

/// What a passing run saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Facts {
    report: TimerReport,
    frequency: u64,
}

impl fmt::Display for Facts {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{} interrupts (IRQ {TIMER_IRQ}) woke a priority-{WAITER_PRIORITY} thread, \
             badge {TIMER_BADGE:#x}, none early; counter {} Hz, woke {} to {} us late",
            self.report.completed,
            self.frequency,
            microseconds(self.report.earliest, self.frequency),
            microseconds(self.report.latest, self.frequency)
        )
    }
}

/// Runs the test.
pub(crate) fn run(boot_info: &BootInfo<'_>, arena: &mut Arena<'_>) -> Result<Facts, Failure> {
    let endpoint = arena.create(ObjectType::Endpoint, 0, "retype the endpoint")?;
    let calls = Rights::WRITE.union(Rights::GRANT_REPLY);
    let crash = arena.mint(endpoint, calls, CRASH_BADGE, "mint the fault endpoint")?;
    let (notification, handler) = take_timer_interrupt(arena)?;
    let mut space = Space::new(arena, boot_info)?;
    space.give(arena, NOTIFICATION_SLOT, notification, Rights::READ, None)?;
    space.give_by_move(arena, HANDLER_SLOT, handler)?;
    space.give(arena, REPORT_SLOT, endpoint, calls, Some(REPORT_BADGE))?;
    space.spawn(
        arena,
        Start {
            entry: waiter,
            arguments: [NOTIFICATION_SLOT, HANDLER_SLOT, REPORT_SLOT, 0],
            priority: WAITER_PRIORITY,
            core: Some(0),
            fault_endpoint: Some(crash),
        },
    )?;
    let report = receive_report(Endpoint::new(endpoint))?;
    Ok(Facts {
        report,
        frequency: timer::frequency(),
    })
}

/// The waiting thread: runs the loop and reports to init, which never
/// answers (tear-down suspends the thread).
extern "C" fn waiter(notification: u64, handler: u64, report: u64, _: u64) -> ! {
    let result = wait_for_interrupts(
        Notification::new(notification),
        IrqHandler::new(handler),
        None,
    );
    Endpoint::new(report).call(&result.to_message());
    loop {
        hyp_user::ipc::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip_through_a_message() {
        let problems = [
            None,
            Some(Problem::NoFrequency),
            Some(Problem::WaitRefused(Error::InsufficientRights {
                argument: 0,
                needed: Rights::READ,
            })),
            Some(Problem::WrongBits(3)),
            Some(Problem::Early {
                count: 5,
                compare: 9,
            }),
            Some(Problem::NoStatus { control: 1 }),
            Some(Problem::AckRefused(Error::InvalidCapability {
                argument: 0,
            })),
            Some(Problem::Spurious(0x10)),
        ];
        for problem in problems {
            let report = TimerReport {
                completed: 2,
                problem,
                earliest: 62,
                latest: 625,
                grew: 1,
            };
            assert_eq!(TimerReport::from_message(&report.to_message()), Ok(report));
        }
    }

    #[test]
    fn only_a_full_clean_report_passes() {
        let mut report = TimerReport {
            completed: INTERRUPTS,
            problem: None,
            earliest: 62,
            latest: 625,
            grew: 0,
        };
        assert_eq!(report.check(), Ok(()));
        assert_eq!(microseconds(report.latest, 62_500_000), 10);
        assert_eq!(microseconds(report.latest, 0), 0);
        report.completed = 4;
        assert_eq!(report.check(), Err(TimerFailure::TooFew { completed: 4 }));
        report.problem = Some(Problem::Spurious(1));
        assert_eq!(
            std::format!("{}", report.check().unwrap_err()),
            "interrupt 4: bits 0x1 arrived after the timer was stopped and the interrupt acknowledged"
        );
        assert_eq!(
            TimerReport::from_message(&Message::new(9, [1])),
            Err(ReportError::NotAReport {
                label: 9,
                length: 1
            })
        );
    }

    #[test]
    fn on_the_host_the_loop_stops_at_once() {
        let report = wait_for_interrupts(Notification::new(1), IrqHandler::new(2), None);
        assert_eq!(report.problem, Some(Problem::NoFrequency));
        assert_eq!(report.completed, 0);
    }
}
