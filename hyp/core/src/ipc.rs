//! Synchronous IPC through endpoints, and notifications.
//!
//! These are the state machines behind the `Send`, `NbSend`, `Call`,
//! `Recv`, `Reply`, `ReplyRecv`, `Signal`, `Wait` and `Poll` system calls.
//! They work on threads, endpoints and notifications through an
//! [`IpcStore`], and on the [`Scheduler`] for the threads they wake. The
//! thread that makes the call is the *current* thread: it is running, so
//! it is in no run queue; if it blocks, the caller (the arch layer) picks
//! another thread to run.
//!
//! A message lives in the sender's saved registers until it is delivered:
//! words in `x0..x7`, the [`MessageInfo`] in `x10`. Delivery copies the
//! words, writes the info to the receiver's `x10` and the badge to its
//! `x9`. Longer messages (the IPC buffer) and capability transfer are not
//! implemented yet: a message that asks for them is refused before
//! anything changes.
//!
//! # Invariants
//! - An endpoint's queue holds only threads blocked on that endpoint, all
//!   sending ([`EndpointState::Sending`]) or all receiving
//!   ([`EndpointState::Receiving`]); it is empty exactly when the endpoint
//!   is [`EndpointState::Idle`].
//! - A notification's queue holds only threads waiting on it, and then its
//!   word is 0 (a signal with waiters wakes one instead of setting bits).
//! - A message is delivered once, to one receiver, in the order senders
//!   queued on the endpoint.

use hyp_abi::{
    CAPABILITY_REGISTER, Error, MESSAGE_INFO_REGISTER, MessageInfo, REGISTER_MESSAGE_WORDS, Rights,
};

use crate::cap::Capability;
use crate::object::{ObjectRef, ThreadRef};
use crate::queue::{Queue, QueueError};
use crate::scheduler::{Scheduler, SchedulerError, SchedulerStore};
use crate::thread::{FaultMessage, Tcb, ThreadState};

/// Who waits on an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EndpointState {
    /// Nobody.
    #[default]
    Idle,
    /// Senders.
    Sending,
    /// Receivers.
    Receiving,
}

/// An endpoint: a queue of blocked senders or receivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Endpoint {
    /// Who waits.
    pub state: EndpointState,
    /// The waiting threads, in arrival order.
    pub queue: Queue,
}

/// A notification: a word of pending signal bits and its waiters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Notification {
    /// Bits signalled and not yet taken.
    pub word: u64,
    /// Threads waiting for bits.
    pub waiters: Queue,
    /// The thread this notification is bound to, if any.
    pub bound_thread: Option<ThreadRef>,
}

/// The objects IPC works on. Implemented by the kernel's object store.
pub trait IpcStore: SchedulerStore {
    /// The thread at `thread`.
    fn tcb(&self, thread: ThreadRef) -> Option<&Tcb>;
    /// The thread at `thread`, for writing.
    fn tcb_mut(&mut self, thread: ThreadRef) -> Option<&mut Tcb>;
    /// The endpoint at `endpoint`.
    fn endpoint(&self, endpoint: ObjectRef) -> Option<&Endpoint>;
    /// The endpoint at `endpoint`, for writing.
    fn endpoint_mut(&mut self, endpoint: ObjectRef) -> Option<&mut Endpoint>;
    /// The notification at `notification`.
    fn notification(&self, notification: ObjectRef) -> Option<&Notification>;
    /// The notification at `notification`, for writing.
    fn notification_mut(&mut self, notification: ObjectRef) -> Option<&mut Notification>;
    /// The VCPU at `vcpu`.
    fn vcpu(&self, vcpu: ObjectRef) -> Option<&crate::vcpu::Vcpu>;
    /// The VCPU at `vcpu`, for writing.
    fn vcpu_mut(&mut self, vcpu: ObjectRef) -> Option<&mut crate::vcpu::Vcpu>;
    /// The VCPU at `vcpu` is loaded on the calling core: copy its state
    /// from the hardware into the object (the kernel then counts it as not
    /// loaded). Stores without hardware have nothing to copy.
    fn save_loaded_vcpu(&mut self, _vcpu: ObjectRef) {}
}

/// Why an IPC operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpcError {
    /// The caller's request is wrong; nothing changed. Goes back to the
    /// caller as its error code.
    Refused(Error),
    /// The kernel's own state is inconsistent (a kernel bug): an object
    /// that should exist does not, or queue links are corrupt. Reported on
    /// the console by the caller, never a panic.
    Inconsistent(&'static str),
}

impl From<QueueError> for IpcError {
    fn from(_: QueueError) -> Self {
        IpcError::Inconsistent("queue links")
    }
}

impl From<SchedulerError> for IpcError {
    fn from(_: SchedulerError) -> Self {
        IpcError::Inconsistent("run queue")
    }
}

/// What became of the current thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It carries on running.
    Continue,
    /// It blocked: schedule another thread.
    Blocked,
}

fn tcb(store: &impl IpcStore, thread: ThreadRef) -> Result<&Tcb, IpcError> {
    store
        .tcb(thread)
        .ok_or(IpcError::Inconsistent("missing thread"))
}

fn with_tcb(
    store: &mut impl IpcStore,
    thread: ThreadRef,
    update: impl FnOnce(&mut Tcb),
) -> Result<(), IpcError> {
    update(
        store
            .tcb_mut(thread)
            .ok_or(IpcError::Inconsistent("missing thread"))?,
    );
    Ok(())
}

fn endpoint_of(capability: Capability, needed: Rights) -> Result<(ObjectRef, u64), IpcError> {
    match capability {
        Capability::Endpoint {
            object,
            badge,
            rights,
        } => {
            if rights.contains(needed) {
                Ok((object, badge))
            } else {
                Err(IpcError::Refused(Error::InsufficientRights {
                    argument: 0,
                    needed,
                }))
            }
        }
        _ => Err(IpcError::Refused(Error::InvalidCapability { argument: 0 })),
    }
}

fn notification_of(capability: Capability, needed: Rights) -> Result<(ObjectRef, u64), IpcError> {
    match capability {
        Capability::Notification {
            object,
            badge,
            rights,
        } => {
            if rights.contains(needed) {
                Ok((object, badge))
            } else {
                Err(IpcError::Refused(Error::InsufficientRights {
                    argument: 0,
                    needed,
                }))
            }
        }
        _ => Err(IpcError::Refused(Error::InvalidCapability { argument: 0 })),
    }
}

/// Checks the message the current thread sends (its `x10`).
fn outgoing_message(store: &impl IpcStore, sender: ThreadRef) -> Result<MessageInfo, IpcError> {
    let info = MessageInfo::decode(tcb(store, sender)?.context.x[MESSAGE_INFO_REGISTER])
        .ok_or(IpcError::Refused(Error::InvalidArgument { argument: 0 }))?;
    if usize::from(info.length) > REGISTER_MESSAGE_WORDS {
        // The IPC buffer is not implemented yet.
        return Err(IpcError::Refused(Error::Truncated));
    }
    if info.extra_capabilities != 0 {
        // Capability transfer is not implemented yet.
        return Err(IpcError::Refused(Error::IllegalOperation));
    }
    Ok(info)
}

/// Copies the message in `from`'s registers (or its pending fault message)
/// to `to`, with `badge`.
fn deliver(
    store: &mut impl IpcStore,
    from: ThreadRef,
    to: ThreadRef,
    badge: u64,
) -> Result<(), IpcError> {
    let sender = tcb(store, from)?;
    let (info, words) = match sender.pending_fault {
        Some(fault) => {
            let mut words = [0; REGISTER_MESSAGE_WORDS];
            let length = usize::from(fault.length).min(fault.words.len());
            words[..length].copy_from_slice(&fault.words[..length]);
            (MessageInfo::new(fault.label, fault.length), words)
        }
        None => {
            // Checked when the sender sent; a stored message that no longer
            // decodes is a kernel bug.
            let info = MessageInfo::decode(sender.context.x[MESSAGE_INFO_REGISTER])
                .filter(|info| usize::from(info.length) <= REGISTER_MESSAGE_WORDS)
                .ok_or(IpcError::Inconsistent("a queued message does not decode"))?;
            let mut words = [0; REGISTER_MESSAGE_WORDS];
            words.copy_from_slice(&sender.context.x[..REGISTER_MESSAGE_WORDS]);
            (info, words)
        }
    };
    let length = usize::from(info.length);
    with_tcb(store, to, |receiver| {
        receiver.context.x[..length].copy_from_slice(&words[..length]);
        receiver.context.x[CAPABILITY_REGISTER] = badge;
        receiver.context.x[MESSAGE_INFO_REGISTER] = info.encode();
    })
}

/// Hands `bits` to `thread` as the result of a receive or wait.
fn deliver_signal(store: &mut impl IpcStore, thread: ThreadRef, bits: u64) -> Result<(), IpcError> {
    with_tcb(store, thread, |receiver| {
        receiver.context.x[CAPABILITY_REGISTER] = bits;
        receiver.context.x[MESSAGE_INFO_REGISTER] = MessageInfo::new(0, 0).encode();
    })
}

fn make_runnable(
    store: &mut impl IpcStore,
    scheduler: &mut Scheduler,
    thread: ThreadRef,
) -> Result<(), IpcError> {
    with_tcb(store, thread, |woken| woken.state = ThreadState::Runnable)?;
    scheduler.enqueue(store, thread)?;
    Ok(())
}

/// Takes the first waiter of `endpoint`, updating the endpoint's state.
pub(crate) fn dequeue_first(
    store: &mut impl IpcStore,
    endpoint: ObjectRef,
) -> Result<ThreadRef, IpcError> {
    let mut object = *store
        .endpoint(endpoint)
        .ok_or(IpcError::Inconsistent("missing endpoint"))?;
    let first = object
        .queue
        .pop_front(store)?
        .ok_or(IpcError::Inconsistent("endpoint queue empty"))?;
    if object.queue.is_empty() {
        object.state = EndpointState::Idle;
    }
    *store
        .endpoint_mut(endpoint)
        .ok_or(IpcError::Inconsistent("missing endpoint"))? = object;
    Ok(first)
}

/// Puts `thread` at the back of `endpoint`'s queue in `state`.
pub(crate) fn enqueue_waiter(
    store: &mut impl IpcStore,
    endpoint: ObjectRef,
    thread: ThreadRef,
    state: EndpointState,
) -> Result<(), IpcError> {
    let mut object = *store
        .endpoint(endpoint)
        .ok_or(IpcError::Inconsistent("missing endpoint"))?;
    object.queue.push_back(store, thread)?;
    object.state = state;
    *store
        .endpoint_mut(endpoint)
        .ok_or(IpcError::Inconsistent("missing endpoint"))? = object;
    Ok(())
}

/// After `caller`'s `Call` reached `callee`: the caller waits for the
/// reply, the callee holds the one-shot reply capability. A reply
/// capability the callee still held for an earlier caller is dropped (that
/// caller keeps waiting, as in seL4, until it is suspended).
fn pair_for_reply(
    store: &mut impl IpcStore,
    caller: ThreadRef,
    callee: ThreadRef,
) -> Result<(), IpcError> {
    if let Some(earlier) = tcb(store, callee)?.caller {
        with_tcb(store, earlier, |earlier| earlier.reply_holder = None)?;
    }
    with_tcb(store, callee, |callee| callee.caller = Some(caller))?;
    with_tcb(store, caller, |caller| {
        caller.state = ThreadState::BlockedOnReply;
        caller.reply_holder = Some(callee);
    })
}

/// Ends the reply pairing of `thread` in both directions: the reply
/// capability it holds, and the one held for it.
fn unpair(store: &mut impl IpcStore, thread: ThreadRef) -> Result<(), IpcError> {
    let &Tcb {
        caller,
        reply_holder,
        ..
    } = tcb(store, thread)?;
    if let Some(caller) = caller {
        with_tcb(store, caller, |caller| caller.reply_holder = None)?;
    }
    if let Some(holder) = reply_holder {
        with_tcb(store, holder, |holder| holder.caller = None)?;
    }
    with_tcb(store, thread, |tcb| {
        tcb.caller = None;
        tcb.reply_holder = None;
    })
}

/// `Send` (`blocking`), `NbSend` (not `blocking`) and `Call` (`call`) by
/// the current thread `sender` through `capability`.
pub fn send(
    store: &mut impl IpcStore,
    scheduler: &mut Scheduler,
    sender: ThreadRef,
    capability: Capability,
    blocking: bool,
    call: bool,
) -> Result<Outcome, IpcError> {
    // Decode.
    let (endpoint, badge) = endpoint_of(capability, Rights::WRITE)?;
    if call && !capability.rights().contains(Rights::GRANT_REPLY) {
        return Err(IpcError::Refused(Error::InsufficientRights {
            argument: 0,
            needed: Rights::GRANT_REPLY,
        }));
    }
    outgoing_message(store, sender)?;
    let state = store
        .endpoint(endpoint)
        .ok_or(IpcError::Inconsistent("missing endpoint"))?
        .state;

    // Invoke.
    if state == EndpointState::Receiving {
        let receiver = dequeue_first(store, endpoint)?;
        deliver(store, sender, receiver, badge)?;
        make_runnable(store, scheduler, receiver)?;
        if call {
            pair_for_reply(store, sender, receiver)?;
            return Ok(Outcome::Blocked);
        }
        return Ok(Outcome::Continue);
    }
    if !blocking {
        // NbSend with no receiver: the message is dropped, as documented.
        return Ok(Outcome::Continue);
    }
    with_tcb(store, sender, |blocked| {
        blocked.state = ThreadState::BlockedOnSend {
            endpoint,
            badge,
            call,
        };
    })?;
    enqueue_waiter(store, endpoint, sender, EndpointState::Sending)?;
    Ok(Outcome::Blocked)
}

/// `Recv` by the current thread `receiver` through `capability`. A signal
/// pending on the receiver's bound notification is taken first.
pub fn receive(
    store: &mut impl IpcStore,
    scheduler: &mut Scheduler,
    receiver: ThreadRef,
    capability: Capability,
) -> Result<Outcome, IpcError> {
    let (endpoint, _) = endpoint_of(capability, Rights::READ)?;
    let endpoint_state = store
        .endpoint(endpoint)
        .ok_or(IpcError::Inconsistent("missing endpoint"))?
        .state;
    let bound = tcb(store, receiver)?.bound_notification;

    if let Some(notification) = bound {
        let word = store
            .notification(notification)
            .ok_or(IpcError::Inconsistent("missing notification"))?
            .word;
        if word != 0 {
            if let Some(object) = store.notification_mut(notification) {
                object.word = 0;
            }
            deliver_signal(store, receiver, word)?;
            return Ok(Outcome::Continue);
        }
    }
    if endpoint_state == EndpointState::Sending {
        let sender = dequeue_first(store, endpoint)?;
        let ThreadState::BlockedOnSend { badge, call, .. } = tcb(store, sender)?.state else {
            return Err(IpcError::Inconsistent("a queued sender is not sending"));
        };
        deliver(store, sender, receiver, badge)?;
        if call {
            pair_for_reply(store, sender, receiver)?;
        } else {
            make_runnable(store, scheduler, sender)?;
        }
        return Ok(Outcome::Continue);
    }
    with_tcb(store, receiver, |blocked| {
        blocked.state = ThreadState::BlockedOnReceive { endpoint }
    })?;
    enqueue_waiter(store, endpoint, receiver, EndpointState::Receiving)?;
    Ok(Outcome::Blocked)
}

/// `Reply` by the current thread `replier`: delivers its message to the
/// thread whose `Call` it received last, and wakes that thread. The reply
/// capability is used up. Without a caller waiting: `InvalidCapability`.
///
/// A reply to a fault does not touch the faulted thread's registers: label
/// 0 resumes it (at word 0 as its new PC if the reply has a word, else
/// where it faulted); any other label leaves it stopped (`Inactive`).
pub fn reply(
    store: &mut impl IpcStore,
    scheduler: &mut Scheduler,
    replier: ThreadRef,
) -> Result<(), IpcError> {
    let caller = tcb(store, replier)?.caller;
    let Some(caller) = caller.filter(|caller| {
        store
            .tcb(*caller)
            .is_some_and(|tcb| tcb.state == ThreadState::BlockedOnReply)
    }) else {
        return Err(IpcError::Refused(Error::InvalidCapability { argument: 0 }));
    };
    let info = outgoing_message(store, replier)?;
    with_tcb(store, replier, |tcb| tcb.caller = None)?;
    with_tcb(store, caller, |tcb| tcb.reply_holder = None)?;
    if let Some(fault) = tcb(store, caller)?.pending_fault {
        let mut words = [0; REGISTER_MESSAGE_WORDS];
        words.copy_from_slice(&tcb(store, replier)?.context.x[..REGISTER_MESSAGE_WORDS]);
        let length = usize::from(info.length).min(REGISTER_MESSAGE_WORDS);
        let mut resume = true;
        with_tcb(store, caller, |faulted| {
            faulted.pending_fault = None;
            resume = apply_fault_reply(faulted, &fault, info.label, &words[..length]);
        })?;
        if !resume {
            return with_tcb(store, caller, |stopped| {
                stopped.state = ThreadState::Inactive;
            });
        }
        return make_runnable(store, scheduler, caller);
    }
    deliver(store, replier, caller, 0)?;
    make_runnable(store, scheduler, caller)
}

/// Applies a fault handler's reply (`label`, `words`) to the thread that
/// sent `fault` ([`crate::exit::apply_reply`]); `false` if the thread is to
/// stop instead of resuming.
pub fn apply_fault_reply(
    faulted: &mut Tcb,
    fault: &FaultMessage,
    label: u64,
    words: &[u64],
) -> bool {
    apply_fault_reply_to(
        &mut faulted.context,
        &mut faulted.injection,
        fault,
        label,
        words,
    )
}

/// [`apply_fault_reply`] on the faulted thread's registers and pending
/// injection (for a caller that holds other fields of its TCB).
#[inline(always)]
pub fn apply_fault_reply_to(
    context: &mut crate::thread::UserContext,
    injection: &mut Option<crate::exit::Injection>,
    fault: &FaultMessage,
    label: u64,
    words: &[u64],
) -> bool {
    use crate::exit::{ReplyAction, apply_reply};
    match apply_reply(context, fault, label, words) {
        ReplyAction::Resume => true,
        ReplyAction::Stop => false,
        ReplyAction::Inject(taken) => {
            *injection = Some(taken);
            true
        }
    }
}

/// Why a fault could not be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultDelivery {
    /// The message is on its way (or queued); the thread waits for the
    /// handler's reply.
    Sent(Outcome),
    /// The thread has no fault endpoint: the caller stops it and says so.
    NoHandler,
}

/// The current thread `thread` faulted: sends `fault` to its fault endpoint
/// as if it had made a `Call` there, so the handler's reply resumes it.
pub fn send_fault(
    store: &mut impl IpcStore,
    scheduler: &mut Scheduler,
    thread: ThreadRef,
    fault: FaultMessage,
) -> Result<FaultDelivery, IpcError> {
    let Some((endpoint, badge)) = tcb(store, thread)?.fault_endpoint else {
        return Ok(FaultDelivery::NoHandler);
    };
    let state = store
        .endpoint(endpoint)
        .ok_or(IpcError::Inconsistent("missing fault endpoint"))?
        .state;
    with_tcb(store, thread, |faulted| faulted.pending_fault = Some(fault))?;
    if state == EndpointState::Receiving {
        let receiver = dequeue_first(store, endpoint)?;
        deliver(store, thread, receiver, badge)?;
        make_runnable(store, scheduler, receiver)?;
        pair_for_reply(store, thread, receiver)?;
    } else {
        with_tcb(store, thread, |blocked| {
            blocked.state = ThreadState::BlockedOnSend {
                endpoint,
                badge,
                call: true,
            };
        })?;
        enqueue_waiter(store, endpoint, thread, EndpointState::Sending)?;
    }
    Ok(FaultDelivery::Sent(Outcome::Blocked))
}

/// `ReplyRecv`: [`reply`] (if there is a caller to reply to), then
/// [`receive`].
pub fn reply_receive(
    store: &mut impl IpcStore,
    scheduler: &mut Scheduler,
    thread: ThreadRef,
    capability: Capability,
) -> Result<Outcome, IpcError> {
    // Decode the receive first, so a bad capability changes nothing.
    endpoint_of(capability, Rights::READ)?;
    match reply(store, scheduler, thread) {
        Ok(()) | Err(IpcError::Refused(Error::InvalidCapability { .. })) => {}
        Err(error) => return Err(error),
    }
    receive(store, scheduler, thread, capability)
}

/// `Signal` through `capability`: wakes the first waiter with the badge,
/// or ends the bound thread's receive, or sets the badge bits in the word.
pub fn signal(
    store: &mut impl IpcStore,
    scheduler: &mut Scheduler,
    capability: Capability,
) -> Result<(), IpcError> {
    let (notification, badge) = notification_of(capability, Rights::WRITE)?;
    let mut object = *store
        .notification(notification)
        .ok_or(IpcError::Inconsistent("missing notification"))?;
    let bits = object.word | badge;
    if let Some(waiter) = object.waiters.pop_front(store)? {
        object.word = 0;
        *store
            .notification_mut(notification)
            .ok_or(IpcError::Inconsistent("missing notification"))? = object;
        deliver_signal(store, waiter, bits)?;
        return make_runnable(store, scheduler, waiter);
    }
    if let Some(bound) = object.bound_thread
        && let ThreadState::BlockedOnReceive { endpoint } = tcb(store, bound)?.state
    {
        remove_from_endpoint(store, endpoint, bound)?;
        object.word = 0;
        *store
            .notification_mut(notification)
            .ok_or(IpcError::Inconsistent("missing notification"))? = object;
        deliver_signal(store, bound, bits)?;
        return make_runnable(store, scheduler, bound);
    }
    object.word = bits;
    *store
        .notification_mut(notification)
        .ok_or(IpcError::Inconsistent("missing notification"))? = object;
    Ok(())
}

/// `Wait` (`blocking`) and `Poll` by the current thread `waiter`.
pub fn wait(
    store: &mut impl IpcStore,
    waiter: ThreadRef,
    capability: Capability,
    blocking: bool,
) -> Result<Outcome, IpcError> {
    let (notification, _) = notification_of(capability, Rights::READ)?;
    let mut object = *store
        .notification(notification)
        .ok_or(IpcError::Inconsistent("missing notification"))?;
    if object.word != 0 || !blocking {
        let bits = object.word;
        object.word = 0;
        *store
            .notification_mut(notification)
            .ok_or(IpcError::Inconsistent("missing notification"))? = object;
        deliver_signal(store, waiter, bits)?;
        return Ok(Outcome::Continue);
    }
    object.waiters.push_back(store, waiter)?;
    *store
        .notification_mut(notification)
        .ok_or(IpcError::Inconsistent("missing notification"))? = object;
    with_tcb(store, waiter, |blocked| {
        blocked.state = ThreadState::BlockedOnNotification { notification }
    })?;
    Ok(Outcome::Blocked)
}

fn remove_from_endpoint(
    store: &mut impl IpcStore,
    endpoint: ObjectRef,
    thread: ThreadRef,
) -> Result<(), IpcError> {
    let mut object = *store
        .endpoint(endpoint)
        .ok_or(IpcError::Inconsistent("missing endpoint"))?;
    object.queue.remove(store, thread)?;
    if object.queue.is_empty() {
        object.state = EndpointState::Idle;
    }
    *store
        .endpoint_mut(endpoint)
        .ok_or(IpcError::Inconsistent("missing endpoint"))? = object;
    Ok(())
}

/// Takes `thread` out of whatever it waits in, drops the reply capability
/// it holds and the one held for it, and makes it inactive (for `Suspend`,
/// and before its TCB can be destroyed).
pub fn cancel(
    store: &mut impl IpcStore,
    scheduler: &mut Scheduler,
    thread: ThreadRef,
) -> Result<(), IpcError> {
    match tcb(store, thread)?.state {
        ThreadState::Inactive | ThreadState::BlockedOnReply | ThreadState::WaitingForInterrupt => {}
        ThreadState::Runnable => {
            if store.links(thread).queued {
                scheduler.dequeue(store, thread)?;
            }
        }
        ThreadState::BlockedOnSend { endpoint, .. }
        | ThreadState::BlockedOnReceive { endpoint } => {
            remove_from_endpoint(store, endpoint, thread)?;
        }
        ThreadState::BlockedOnNotification { notification } => {
            let mut object = *store
                .notification(notification)
                .ok_or(IpcError::Inconsistent("missing notification"))?;
            object.waiters.remove(store, thread)?;
            *store
                .notification_mut(notification)
                .ok_or(IpcError::Inconsistent("missing notification"))? = object;
        }
    }
    unpair(store, thread)?;
    with_tcb(store, thread, |cancelled| {
        cancelled.state = ThreadState::Inactive;
        cancelled.pending_fault = None;
    })
}

#[cfg(test)]
pub(crate) mod tests;
