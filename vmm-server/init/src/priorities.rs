//! `priorities`: a thread that never blocks does not starve a thread of
//! higher priority on its core.
//!
//! On core 0, a spinner of priority [`SPINNER_PRIORITY`] loops forever,
//! adding one to a counter in a frame it shares with init (mapped in the
//! window of both address spaces) and touching nothing else but its
//! stack. A thread of priority [`HIGH_PRIORITY`] on the same core runs the
//! timer-interrupt loop of `timer-irq` ([`INTERRUPTS`] interrupts) and
//! then reports to init. Init (priority 255) waits for the report with a
//! blocking receive: if the kernel let the spinner starve the high thread
//! (an interrupt that does not preempt it, a wake-up that is not
//! scheduled), the report never comes and the test hangs rather than
//! pass (the system test's timeout reports it). Then init suspends the
//! spinner and checks that the counter moved: the spinner did run, so the
//! interrupts came while it was running.

use core::fmt;

use hyp_abi::{ObjectType, Rights, initial_slots};
use hyp_user::window::{self, OutsideWindow};
use hyp_user::{BootInfo, Endpoint, Frame, IrqHandler, Notification, VSpace};

use crate::arena::{Arena, Kind, SetupError, step};
use crate::thread::{CRASH_BADGE, Space, Start};
use crate::timer_irq::{
    self, HANDLER_SLOT, NOTIFICATION_SLOT, REPORT_BADGE, REPORT_SLOT, TimerReport,
};

/// The spinner's priority.
pub(crate) const SPINNER_PRIORITY: u8 = 10;
/// The waiting thread's priority.
pub(crate) const HIGH_PRIORITY: u8 = 20;
/// Where the counter is in the child space.
const CHILD_COUNTER: u64 = window::BASE + 0x10_0000;
/// Where init maps the same frame (its own window).
const INIT_COUNTER: u64 = window::BASE + 0x20_0000;

const _: () = assert!(
    SPINNER_PRIORITY < HIGH_PRIORITY
        && window::contains(CHILD_COUNTER)
        && window::contains(INIT_COUNTER),
    "the spinner is below the waiting thread, and the counters are window words"
);

/// Why `priorities` failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Setting up failed.
    Setup(SetupError),
    /// The waiting thread's report was wrong or a thread faulted.
    Timer(timer_irq::Failure),
    /// The window refused an address (a bug of this test).
    Window(OutsideWindow),
    /// The counter did not move: the spinner never ran.
    SpinnerNeverRan {
        /// The counter, as before the threads started.
        counter: u64,
    },
}

impl From<SetupError> for Failure {
    fn from(error: SetupError) -> Failure {
        Failure::Setup(error)
    }
}

impl From<OutsideWindow> for Failure {
    fn from(error: OutsideWindow) -> Failure {
        Failure::Window(error)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Setup(error) => write!(formatter, "{error}"),
            Failure::Timer(failure) => write!(formatter, "the high-priority thread: {failure}"),
            Failure::Window(error) => write!(formatter, "{error}"),
            Failure::SpinnerNeverRan { counter } => write!(
                formatter,
                "the spinner's counter is still {counter}: it never ran, so nothing competed with the high-priority thread"
            ),
        }
    }
}

/// What a passing run saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Facts {
    report: TimerReport,
    counter: u64,
    frequency: u64,
}

impl fmt::Display for Facts {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "priority-{HIGH_PRIORITY} thread took {} timer interrupts on core 0 beside a \
             priority-{SPINNER_PRIORITY} spinner (counter +{}, grew in {} of the waits; woke {} \
             to {} us late), then the spinner was suspended",
            self.report.completed,
            self.counter,
            self.report.grew,
            timer_irq::microseconds(self.report.earliest, self.frequency),
            timer_irq::microseconds(self.report.latest, self.frequency)
        )
    }
}

/// Runs the test.
pub(crate) fn run(boot_info: &BootInfo<'_>, arena: &mut Arena<'_>) -> Result<Facts, Failure> {
    let endpoint = arena.create(ObjectType::Endpoint, 0, "retype the endpoint")?;
    let calls = Rights::WRITE.union(Rights::GRANT_REPLY);
    let crash = arena.mint(endpoint, calls, CRASH_BADGE, "mint the fault endpoint")?;
    let (notification, handler) = timer_irq::take_timer_interrupt(arena)?;
    let mut space = Space::new(arena, boot_info)?;
    space.give(arena, NOTIFICATION_SLOT, notification, Rights::READ, None)?;
    space.give_by_move(arena, HANDLER_SLOT, handler)?;
    space.give(arena, REPORT_SLOT, endpoint, calls, Some(REPORT_BADGE))?;

    // The counter: a frame in the child space, and a read-only copy in
    // init's.
    let counter = space.map_new_frame(arena, CHILD_COUNTER, "retype the counter's frame")?;
    let view = arena.copy(
        counter,
        Rights::READ,
        Kind::Frame,
        "copy the counter's frame",
    )?;
    arena.map_frame(
        Frame::new(view),
        VSpace::new(initial_slots::VSPACE),
        INIT_COUNTER,
        Rights::READ,
        0,
    )?;
    let start = window::read(INIT_COUNTER)?;

    let spinning = space.spawn(
        arena,
        Start {
            entry: spinner,
            arguments: [CHILD_COUNTER, 0, 0, 0],
            priority: SPINNER_PRIORITY,
            core: Some(0),
            fault_endpoint: Some(crash),
        },
    )?;
    space.spawn(
        arena,
        Start {
            entry: high,
            arguments: [NOTIFICATION_SLOT, HANDLER_SLOT, REPORT_SLOT, CHILD_COUNTER],
            priority: HIGH_PRIORITY,
            core: Some(0),
            fault_endpoint: Some(crash),
        },
    )?;
    // Blocks until the high thread reports: a starved thread never does.
    let received = timer_irq::receive_report(Endpoint::new(endpoint));
    let suspended = spinning.suspend().map_err(step("suspend the spinner"));
    let report = received.map_err(Failure::Timer)?;
    suspended?;
    let counter = window::read(INIT_COUNTER)?;
    if counter == start {
        return Err(Failure::SpinnerNeverRan { counter });
    }
    Ok(Facts {
        report,
        counter: counter.wrapping_sub(start),
        frequency: hyp_user::timer::frequency(),
    })
}

/// The spinner: adds one to the counter at `counter` forever.
extern "C" fn spinner(counter: u64, _: u64, _: u64, _: u64) -> ! {
    loop {
        if let Ok(value) = window::read(counter) {
            let _ = window::write(counter, value.wrapping_add(1));
        }
    }
}

/// The high-priority thread: the timer loop, watching the counter, then
/// the report (never answered: tear-down suspends the thread).
extern "C" fn high(notification: u64, handler: u64, report: u64, counter: u64) -> ! {
    let result = timer_irq::wait_for_interrupts(
        Notification::new(notification),
        IrqHandler::new(handler),
        Some(counter),
    );
    Endpoint::new(report).call(&result.to_message());
    loop {
        hyp_user::ipc::yield_now();
    }
}
