//! Threads: the TCB's portable part — the saved user registers, the
//! scheduling parameters, the queue links, and the state that says what the
//! thread waits for.
//!
//! # Invariants
//! - `links.queued` is true exactly when the thread is in one queue: a run
//!   queue when [`ThreadState::Runnable`] and not running, the endpoint's
//!   queue when blocked on a send or receive, the notification's queue when
//!   blocked on it; never otherwise.
//! - A thread [`ThreadState::BlockedOnReply`] is the `caller` of at most one
//!   thread, and that thread received its `Call`.

use crate::cap::Capability;
use crate::object::{ObjectRef, ThreadRef};
use crate::queue::Links;

/// The user registers saved when a thread leaves EL0. `repr(C)`: the arch
/// layer's entry code saves into it (with offsets taken from this type).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
pub struct UserContext {
    /// `x0` to `x30`.
    pub x: [u64; 31],
    /// `SP_EL0`.
    pub sp: u64,
    /// The PC to resume at (`ELR_EL2`).
    pub pc: u64,
    /// The saved `PSTATE` (`SPSR_EL2`), restored as it is on every return
    /// to the thread. Invariant: it is either what the hardware saved when
    /// the thread last entered the kernel (so it names the level and
    /// execution state the thread ran in: EL0 for a native thread, the
    /// guest's EL1 or EL0 for a VCPU, never EL2), or one of the kernel's
    /// own values: 0 (EL0t, a new thread), `hyp_abi::vcpu::INITIAL_SPSR`
    /// (`VcpuSetTcb`) or the guest EL1h state of an injected exception
    /// (`exit::inject`). No invocation writes it from user data
    /// (`TcbWriteRegisters` sets the PC, SP and `x` registers only).
    pub spsr: u64,
}

/// What a thread is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ThreadState {
    /// Not started, or suspended: never scheduled.
    #[default]
    Inactive,
    /// Running, or ready in a run queue.
    Runnable,
    /// Waiting in `endpoint`'s queue for a receiver.
    BlockedOnSend {
        /// The endpoint.
        endpoint: ObjectRef,
        /// The badge of the capability it sends through.
        badge: u64,
        /// A `Call`: the sender waits for the reply afterwards.
        call: bool,
    },
    /// Waiting in `endpoint`'s queue for a sender.
    BlockedOnReceive {
        /// The endpoint.
        endpoint: ObjectRef,
    },
    /// Sent a `Call` that was received; waits for the reply.
    BlockedOnReply,
    /// Waiting in `notification`'s queue for a signal.
    BlockedOnNotification {
        /// The notification.
        notification: ObjectRef,
    },
    /// A VCPU thread that executed `WFI`: it waits (in no queue) until a
    /// virtual interrupt is pending for its VCPU.
    WaitingForInterrupt,
}

/// The portable part of a thread control block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Tcb {
    /// What the thread is doing.
    pub state: ThreadState,
    /// Its user registers.
    pub context: UserContext,
    /// Scheduling priority (255 highest).
    pub priority: u8,
    /// The core it runs on.
    pub affinity: usize,
    /// Its links in whichever queue holds it.
    pub links: Links,
    /// The thread whose `Call` this thread received and has not answered:
    /// the one-shot reply capability, consumed by `Reply`.
    pub caller: Option<ThreadRef>,
    /// While this thread waits for a reply: the thread that holds the
    /// reply capability for it (the reverse of `caller`, so that either
    /// side can end the pairing when it goes away).
    pub reply_holder: Option<ThreadRef>,
    /// A notification bound to the thread: its signals also end a receive
    /// on an endpoint.
    pub bound_notification: Option<ObjectRef>,
    /// The root of the thread's CSpace (a CNode capability), or `Null`
    /// until `TCB.Configure`. Its CNode counts this as a reference.
    pub cspace_root: Capability,
    /// The thread's VSpace (a stage-2 root table), counted as a reference.
    pub vspace: Option<ObjectRef>,
    /// Where the thread's faults go: an endpoint and the badge of the
    /// capability it was configured with, counted as a reference.
    pub fault_endpoint: Option<(ObjectRef, u64)>,
    /// The VMID its VSpace had when it last ran (a hint: valid only while
    /// the kernel's VMID table still gives that VMID to that VSpace).
    pub vmid: u16,
    /// Some core has it as its current thread (it may be executing): its
    /// TCB must not end until that core has switched away.
    pub running: bool,
    /// The fault message the thread sends (or has sent and waits for the
    /// answer to) instead of its registers.
    pub pending_fault: Option<FaultMessage>,
    /// The VCPU the thread runs as (at EL1), counted as a reference on it;
    /// `None` for a native EL0 thread.
    pub vcpu: Option<ObjectRef>,
    /// An exception its VMM asked to inject, taken at the next entry.
    pub injection: Option<crate::exit::Injection>,
}

/// A fault, as the kernel sends it to the thread's fault endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FaultMessage {
    /// The [`hyp_abi::fault::FaultLabel`] as a number.
    pub label: u64,
    /// The message words (the layouts in [`hyp_abi::fault`]).
    pub words: [u64; 8],
    /// How many of `words` are meaningful.
    pub length: u8,
}
