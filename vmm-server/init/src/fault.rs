//! `fault`: a thread's memory fault reaches its fault handler as a
//! message; the handler can fix the cause and resume the thread, or kill
//! it.
//!
//! A child thread (in its own address space, priority [`CHILD_PRIORITY`]
//! on core 0) has a fault endpoint: a capability of init's CSpace badged
//! [`FAULT_BADGE`]. It reads the unmapped window address
//! [`FIRST_ADDRESS`]. Init receives the fault (label `MemoryFault`, the
//! badge, the PC within init's image, the address, a data access, a
//! translation fault on a read) and checks that the thread's PC is still
//! the faulting one; then it maps a fresh frame at that page in the
//! child's VSpace, writing nothing, and replies with label 0 and no words:
//! the kernel resumes the thread at the same PC, the load is done again
//! and reads 0, which the child reports with a `Call`.
//!
//! Then the child reads [`SECOND_ADDRESS`], unmapped too, and init answers
//! that fault with a non-zero label, which leaves the thread stopped.
//! Init checks that its PC is still the faulting one, that it is inactive
//! (`TcbWriteRegisters`, which the kernel refuses for any thread that is
//! not, is accepted) and that it stays stopped: a sentinel thread of
//! lower priority on the same core sends a message on the same endpoint,
//! and it must be the next message init receives. Had the child been
//! resumed, it would run before the sentinel (higher priority, same core)
//! and fault again on the same load, and that fault would come first.

use core::fmt;

use hyp_abi::fault::{FaultLabel, memory_fault};
use hyp_abi::{Error, ObjectType, Rights, user_layout};
use hyp_user::window;
use hyp_user::{BootInfo, Endpoint, Frame, Message, Received, ipc};

use crate::arena::{Arena, SetupError, step};
use crate::thread::{CRASH_BADGE, Crash, FRAME_SIZE, Space, Start};

/// The badge of the child's fault endpoint capability.
pub(crate) const FAULT_BADGE: u64 = 0xfa;
/// The badge of the child's report endpoint capability.
pub(crate) const REPORT_BADGE: u64 = 0x5e;
/// The badge of the sentinel's endpoint capability.
pub(crate) const SENTINEL_BADGE: u64 = 0x51;
/// The label of the child's report.
pub(crate) const REPORT: u64 = 4;
/// The label of the sentinel's message.
pub(crate) const SENTINEL: u64 = 5;
/// The reply label that kills a faulted thread (any but 0).
pub(crate) const KILL: u64 = 1;
/// The child's priority.
const CHILD_PRIORITY: u8 = 100;
/// The sentinel's priority: below the child's.
const SENTINEL_PRIORITY: u8 = 50;
/// The address the child reads first: in the window, where its VSpace has
/// nothing (not even a level 2 table).
pub(crate) const FIRST_ADDRESS: u64 = window::BASE + 0x123_4560;
/// The address it reads next: in the same 2 MiB as the first, so under
/// the level 3 table the fix created, but another page.
pub(crate) const SECOND_ADDRESS: u64 = FIRST_ADDRESS + 0x3000 + 0x18;
/// Slots of the child CNode.
const REPORT_SLOT: u64 = 1;
const SENTINEL_SLOT: u64 = 2;

const _: () = assert!(
    window::contains(FIRST_ADDRESS) && window::contains(SECOND_ADDRESS),
    "both addresses are words of the window"
);
const _: () = assert!(
    FIRST_ADDRESS >> 21 == SECOND_ADDRESS >> 21 && FIRST_ADDRESS >> 12 != SECOND_ADDRESS >> 12,
    "same 2 MiB, another page"
);

/// `ESR_ELx.ISS` of a data abort: the fault status code.
const DFSC_MASK: u64 = 0x3f;
/// A translation fault at level 0..3 (`0b0001LL`).
const DFSC_TRANSLATION: u64 = 0b00_0100;
/// `ESR_ELx.ISS.WnR`: the access was a write.
const WNR: u64 = 1 << 6;

/// Which fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Which {
    /// The first, fixed.
    First,
    /// The second, killed.
    Second,
}

impl fmt::Display for Which {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Which::First => "first fault",
            Which::Second => "second fault",
        })
    }
}

/// A fault message as init checked it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fault {
    /// The faulting PC.
    pub(crate) pc: u64,
    /// The fault status (ISS).
    pub(crate) status: u64,
}

impl Fault {
    /// The translation table level of the fault.
    fn level(self) -> u64 {
        self.status & 0b11
    }
}

/// Why `fault` failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Setting up, or an invocation, failed.
    Setup(SetupError),
    /// The fault message is not the one expected.
    WrongFault {
        /// Which.
        which: Which,
        /// What is wrong with it.
        reason: &'static str,
        /// The message.
        message: Crash,
    },
    /// The faulted thread's PC is not the faulting one.
    PcMoved {
        /// Which fault.
        which: Which,
        /// The faulting PC.
        expected: u64,
        /// `TcbReadRegisters`' PC.
        found: u64,
    },
    /// After the fix, the child did not report the value 0.
    BadReport {
        /// The message init got instead.
        message: Crash,
    },
    /// After the kill, `TcbWriteRegisters` was refused: the thread is not
    /// inactive.
    NotStopped(Error),
    /// After the kill, a message came before the sentinel's.
    KilledThreadRan {
        /// That message.
        message: Crash,
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
            Failure::WrongFault {
                which,
                reason,
                message,
            } => write!(
                formatter,
                "{which}: {reason}; got {message} (badge {:#x}, label {})",
                message.badge, message.label
            ),
            Failure::PcMoved {
                which,
                expected,
                found,
            } => write!(
                formatter,
                "{which}: the thread's PC is {found:#x}, not the faulting {expected:#x}"
            ),
            Failure::BadReport { message } => write!(
                formatter,
                "after the fix: expected the report of value 0 (badge {REPORT_BADGE:#x}, label {REPORT}), got {message}"
            ),
            Failure::NotStopped(error) => write!(
                formatter,
                "after the kill: TcbWriteRegisters refused ({error}), so the thread is not inactive"
            ),
            Failure::KilledThreadRan { message } => write!(
                formatter,
                "after the kill: before the sentinel's message came {message}"
            ),
        }
    }
}

/// What a passing run saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Facts {
    first: Fault,
    second: Fault,
}

impl fmt::Display for Facts {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "fault at pc {:#x} reading {FIRST_ADDRESS:#x} (level-{} translation, badge \
             {FAULT_BADGE:#x}) fixed by a mapping, the retried load read 0; second fault \
             (level {}) killed: inactive at pc {:#x}, overtaken by a lower-priority sentinel",
            self.first.pc,
            self.first.level(),
            self.second.level(),
            self.second.pc
        )
    }
}

/// Checks that `received` is the memory fault of a data read of
/// `address` by init's code, through the fault endpoint capability.
pub(crate) fn check_fault(
    received: &Received,
    which: Which,
    address: u64,
    image_end: u64,
) -> Result<Fault, Failure> {
    let message = received.message;
    let word = |index| message.word(index).unwrap_or(u64::MAX);
    let pc = word(memory_fault::PC);
    let status = word(memory_fault::STATUS);
    let reason = if received.badge != FAULT_BADGE {
        Some("not the fault endpoint's badge")
    } else if message.label() != FaultLabel::MemoryFault as u64 {
        Some("not a memory fault")
    } else if message.length() != usize::from(memory_fault::LENGTH) {
        Some("not four words")
    } else if word(memory_fault::ADDRESS) != address {
        Some("another address")
    } else if word(memory_fault::INSTRUCTION) != 0 {
        Some("an instruction fetch, not a data access")
    } else if status & DFSC_MASK & !0b11 != DFSC_TRANSLATION {
        Some("not a translation fault")
    } else if status & WNR != 0 {
        Some("a write, not a read")
    } else if !(user_layout::IMAGE_BASE..image_end).contains(&pc) {
        Some("a PC outside init's image")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Failure::WrongFault {
            which,
            reason,
            message: Crash::of(received),
        }),
        None => Ok(Fault { pc, status }),
    }
}

/// Runs the test.
pub(crate) fn run(boot_info: &BootInfo<'_>, arena: &mut Arena<'_>) -> Result<Facts, Failure> {
    let endpoint = arena.create(ObjectType::Endpoint, 0, "retype the endpoint")?;
    let calls = Rights::WRITE.union(Rights::GRANT_REPLY);
    let fault_slot = arena.mint(endpoint, calls, FAULT_BADGE, "mint the fault endpoint")?;
    let crash_slot = arena.mint(
        endpoint,
        calls,
        CRASH_BADGE,
        "mint the sentinel's fault endpoint",
    )?;
    let mut space = Space::new(arena, boot_info)?;
    space.give(arena, REPORT_SLOT, endpoint, calls, Some(REPORT_BADGE))?;
    space.give(arena, SENTINEL_SLOT, endpoint, calls, Some(SENTINEL_BADGE))?;
    let child = space.spawn(
        arena,
        Start {
            entry: faulting_child,
            arguments: [REPORT_SLOT, FIRST_ADDRESS, SECOND_ADDRESS, 0],
            priority: CHILD_PRIORITY,
            core: Some(0),
            fault_endpoint: Some(fault_slot),
        },
    )?;
    let endpoint = Endpoint::new(endpoint);
    let image_end = boot_info.image_end();

    // The first fault: fix it and resume the thread.
    let first = check_fault(&endpoint.recv(), Which::First, FIRST_ADDRESS, image_end)?;
    let registers = child
        .read_registers()
        .map_err(step("read the faulted thread's registers"))?;
    if registers.program_counter != first.pc {
        return Err(Failure::PcMoved {
            which: Which::First,
            expected: first.pc,
            found: registers.program_counter,
        });
    }
    let frame = arena.create(
        ObjectType::Frame4K,
        0,
        "retype the frame that fixes the fault",
    )?;
    arena.map_frame(
        Frame::new(frame),
        space.vspace(),
        FIRST_ADDRESS & !(FRAME_SIZE - 1),
        Rights::READ,
        0,
    )?;
    ipc::reply(&Message::empty(0)).map_err(step("reply to the first fault"))?;
    let received = endpoint.recv();
    if received.badge != REPORT_BADGE
        || received.message.label() != REPORT
        || received.message.word(0) != Some(0)
        || received.message.word(1) != Some(FIRST_ADDRESS)
    {
        return Err(Failure::BadReport {
            message: Crash::of(&received),
        });
    }
    ipc::reply(&Message::empty(0)).map_err(step("reply to the report"))?;

    // The second fault: kill the thread and check that it stays stopped.
    let second = check_fault(&endpoint.recv(), Which::Second, SECOND_ADDRESS, image_end)?;
    ipc::reply(&Message::empty(KILL)).map_err(step("reply to the second fault"))?;
    let registers = child
        .read_registers()
        .map_err(step("read the killed thread's registers"))?;
    if registers.program_counter != second.pc {
        return Err(Failure::PcMoved {
            which: Which::Second,
            expected: second.pc,
            found: registers.program_counter,
        });
    }
    // The same values back: accepted only for an inactive thread.
    child
        .write_registers(
            registers.program_counter,
            registers.stack_pointer,
            &registers.general,
        )
        .map_err(Failure::NotStopped)?;
    space.spawn(
        arena,
        Start {
            entry: sentinel,
            arguments: [SENTINEL_SLOT, 0, 0, 0],
            priority: SENTINEL_PRIORITY,
            core: Some(0),
            fault_endpoint: Some(crash_slot),
        },
    )?;
    let received = endpoint.recv();
    if received.badge != SENTINEL_BADGE || received.message.label() != SENTINEL {
        return Err(Failure::KilledThreadRan {
            message: Crash::of(&received),
        });
    }
    Ok(Facts { first, second })
}

/// The faulting child: reads `first` (init fixes the fault), reports the
/// value, reads `second` (init kills it there). A report after that would
/// mean the kill did not stop it.
extern "C" fn faulting_child(report: u64, first: u64, second: u64, _: u64) -> ! {
    let endpoint = Endpoint::new(report);
    let value = window::read(first).unwrap_or(u64::MAX);
    endpoint.call(&Message::new(REPORT, [value, first]));
    let value = window::read(second).unwrap_or(u64::MAX);
    endpoint.call(&Message::new(REPORT, [value, second]));
    loop {
        ipc::yield_now();
    }
}

/// The sentinel: one message (never answered: tear-down suspends it).
extern "C" fn sentinel(endpoint: u64, _: u64, _: u64, _: u64) -> ! {
    Endpoint::new(endpoint).call(&Message::empty(SENTINEL));
    loop {
        ipc::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(badge: u64, words: [u64; 4]) -> Received {
        Received {
            badge,
            message: Message::new(FaultLabel::MemoryFault as u64, words),
        }
    }

    #[test]
    fn only_the_expected_fault_passes() {
        let end = user_layout::IMAGE_BASE + 0x8000;
        let pc = user_layout::IMAGE_BASE + 0x100;
        let good = fault(FAULT_BADGE, [pc, FIRST_ADDRESS, 0, 0x05]);
        assert_eq!(
            check_fault(&good, Which::First, FIRST_ADDRESS, end),
            Ok(Fault { pc, status: 0x05 })
        );
        let reason =
            |received: Received| match check_fault(&received, Which::First, FIRST_ADDRESS, end) {
                Err(Failure::WrongFault { reason, .. }) => reason,
                other => panic!("{other:?}"),
            };
        assert_eq!(
            reason(fault(1, [pc, FIRST_ADDRESS, 0, 5])),
            "not the fault endpoint's badge"
        );
        assert_eq!(reason(fault(FAULT_BADGE, [pc, 8, 0, 5])), "another address");
        assert_eq!(
            reason(fault(FAULT_BADGE, [pc, FIRST_ADDRESS, 1, 5])),
            "an instruction fetch, not a data access"
        );
        assert_eq!(
            reason(fault(FAULT_BADGE, [pc, FIRST_ADDRESS, 0, 0x0d])),
            "not a translation fault"
        );
        assert_eq!(
            reason(fault(FAULT_BADGE, [pc, FIRST_ADDRESS, 0, 0x47])),
            "a write, not a read"
        );
        assert_eq!(
            reason(fault(FAULT_BADGE, [end, FIRST_ADDRESS, 0, 0x07])),
            "a PC outside init's image"
        );
        assert_eq!(Fault { pc, status: 0x07 }.level(), 3);
    }
}
