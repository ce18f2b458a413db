//! TCB invocations: set a thread's scheduling parameters and registers,
//! start and stop it, bind a notification to it.
//!
//! Each function is decode-then-invoke: it checks the capability and every
//! argument, returns a precise [`Error`] without changing anything, and
//! only then changes the thread, keeping the scheduler's queues consistent
//! (a queued thread whose priority or core changes is taken out and put
//! back).
//!
//! Authority over priorities follows seL4's rule in its simplest form: a
//! thread cannot give any thread (itself included) a priority above its
//! own, so a low-priority thread cannot create a high-priority one to
//! starve others.

use hyp_abi::{Error, MAX_CORES, Rights};

use crate::cap::Capability;
use crate::ipc::{self, IpcError, IpcStore};
use crate::object::{ObjectRef, ObjectStore, ThreadRef};
use crate::scheduler::Scheduler;
use crate::thread::{ThreadState, UserContext};

/// The thread a TCB capability names, or `InvalidCapability` for capability
/// argument `argument`.
fn thread_of(capability: Capability, argument: u8) -> Result<ThreadRef, IpcError> {
    match capability {
        Capability::Tcb { object } => Ok(object),
        _ => Err(IpcError::Refused(Error::InvalidCapability { argument })),
    }
}

fn priority_of(store: &impl IpcStore, thread: ThreadRef) -> Result<u8, IpcError> {
    store
        .tcb(thread)
        .map(|tcb| tcb.priority)
        .ok_or(IpcError::Inconsistent("missing thread"))
}

/// Takes `thread` out of its run queue if it is in one, applies `change`,
/// and puts it back (at the back of its new priority, on its new core).
fn requeue(
    store: &mut impl IpcStore,
    scheduler: &mut Scheduler,
    thread: ThreadRef,
    change: impl FnOnce(&mut crate::thread::Tcb),
) -> Result<(), IpcError> {
    let tcb = *store
        .tcb(thread)
        .ok_or(IpcError::Inconsistent("missing thread"))?;
    let in_run_queue = tcb.state == ThreadState::Runnable && tcb.links.queued;
    if in_run_queue {
        scheduler.dequeue(store, thread)?;
    }
    change(
        store
            .tcb_mut(thread)
            .ok_or(IpcError::Inconsistent("missing thread"))?,
    );
    if in_run_queue {
        scheduler.enqueue(store, thread)?;
    }
    Ok(())
}

/// `TCB.SetPriority`: `caller` (the running thread) gives the thread in
/// `capability` priority `priority`, at most its own.
pub fn set_priority(
    store: &mut impl IpcStore,
    scheduler: &mut Scheduler,
    caller: ThreadRef,
    capability: Capability,
    priority: u64,
) -> Result<(), IpcError> {
    let target = thread_of(capability, 0)?;
    let ceiling = priority_of(store, caller)?;
    let priority = u8::try_from(priority)
        .ok()
        .filter(|priority| *priority <= ceiling)
        .ok_or(IpcError::Refused(Error::RangeError {
            argument: 0,
            minimum: 0,
            maximum: u64::from(ceiling),
        }))?;
    priority_of(store, target)?;
    // A thread blocked in an endpoint queue keeps its place; only run
    // queues are ordered by priority.
    requeue(store, scheduler, target, |tcb| tcb.priority = priority)
}

/// `TCB.SetAffinity`: moves the thread to core `core` (of `cores` online).
pub fn set_affinity(
    store: &mut impl IpcStore,
    scheduler: &mut Scheduler,
    capability: Capability,
    core: u64,
    cores: usize,
) -> Result<(), IpcError> {
    let target = thread_of(capability, 0)?;
    let online = cores.min(MAX_CORES);
    let core = usize::try_from(core)
        .ok()
        .filter(|core| *core < online)
        .ok_or(IpcError::Refused(Error::RangeError {
            argument: 0,
            minimum: 0,
            maximum: online.saturating_sub(1) as u64,
        }))?;
    priority_of(store, target)?;
    requeue(store, scheduler, target, |tcb| tcb.affinity = core)
}

/// `TCB.Resume`: an inactive thread becomes runnable; a thread that runs or
/// waits already is left alone.
pub fn resume(
    store: &mut impl IpcStore,
    scheduler: &mut Scheduler,
    capability: Capability,
) -> Result<(), IpcError> {
    let target = thread_of(capability, 0)?;
    let state = store
        .tcb(target)
        .ok_or(IpcError::Inconsistent("missing thread"))?
        .state;
    if state != ThreadState::Inactive {
        return Ok(());
    }
    store
        .tcb_mut(target)
        .ok_or(IpcError::Inconsistent("missing thread"))?
        .state = ThreadState::Runnable;
    scheduler.enqueue(store, target)?;
    Ok(())
}

/// `TCB.Suspend`: the thread stops, whatever it was doing or waiting for.
/// (Suspending the running thread itself: the caller must then schedule
/// another thread.)
pub fn suspend(
    store: &mut impl IpcStore,
    scheduler: &mut Scheduler,
    capability: Capability,
) -> Result<(), IpcError> {
    let target = thread_of(capability, 0)?;
    ipc::cancel(store, scheduler, target)
}

/// `TCB.ReadRegisters`.
pub fn read_registers(
    store: &impl IpcStore,
    capability: Capability,
) -> Result<UserContext, IpcError> {
    let target = thread_of(capability, 0)?;
    store
        .tcb(target)
        .map(|tcb| tcb.context)
        .ok_or(IpcError::Inconsistent("missing thread"))
}

/// `TCB.WriteRegisters`: sets the PC, the stack pointer and the first
/// `arguments.len()` general registers (at most 8) of a thread that is not
/// running (`Inactive`), so no saved state is overwritten under a thread
/// that is executing or in a system call.
pub fn write_registers(
    store: &mut impl IpcStore,
    capability: Capability,
    pc: u64,
    sp: u64,
    arguments: &[u64],
) -> Result<(), IpcError> {
    let target = thread_of(capability, 0)?;
    if arguments.len() > 8 {
        return Err(IpcError::Refused(Error::RangeError {
            argument: 2,
            minimum: 0,
            maximum: 8,
        }));
    }
    let tcb = store
        .tcb_mut(target)
        .ok_or(IpcError::Inconsistent("missing thread"))?;
    // Suspended, and no core still runs it (a core that ran it switches
    // away at its next kernel entry, and would save its registers over
    // these).
    if tcb.state != ThreadState::Inactive || tcb.running {
        return Err(IpcError::Refused(Error::IllegalOperation));
    }
    tcb.context.pc = pc;
    tcb.context.sp = sp;
    tcb.context.x[..arguments.len()].copy_from_slice(arguments);
    Ok(())
}

/// What `TCB.Configure` gives a thread, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Configuration {
    /// The fault endpoint and the badge of the capability it came from.
    pub fault_endpoint: Option<(ObjectRef, u64)>,
    /// The priority (checked against the caller's).
    pub priority: u64,
    /// The CSpace root: a CNode capability.
    pub cspace_root: Capability,
    /// The VSpace capability.
    pub vspace: Capability,
}

/// `TCB.Configure`: gives the suspended thread in `capability` its CSpace,
/// VSpace, fault endpoint and priority (at most `caller`'s). The objects
/// it now refers to count the reference (so they stay alive while it
/// does); the ones it referred to before are released.
///
/// Errors, with nothing changed: `InvalidCapability` (0: not a TCB; 1: not
/// a CNode; 2: not a VSpace; 3: the fault endpoint is not an endpoint
/// capability with `WRITE` and `GRANT_REPLY`), `RangeError` (word 1: the
/// priority), `IllegalOperation` (the thread is not suspended).
pub fn configure(
    store: &mut (impl IpcStore + ObjectStore),
    caller: ThreadRef,
    capability: Capability,
    configuration: Configuration,
) -> Result<(), IpcError> {
    let target = thread_of(capability, 0)?;
    if !matches!(configuration.cspace_root, Capability::CNode { .. }) {
        return Err(IpcError::Refused(Error::InvalidCapability { argument: 1 }));
    }
    let Capability::VSpace { object: vspace } = configuration.vspace else {
        return Err(IpcError::Refused(Error::InvalidCapability { argument: 2 }));
    };
    let ceiling = priority_of(store, caller)?;
    let priority = u8::try_from(configuration.priority)
        .ok()
        .filter(|priority| *priority <= ceiling)
        .ok_or(IpcError::Refused(Error::RangeError {
            argument: 1,
            minimum: 0,
            maximum: u64::from(ceiling),
        }))?;
    let old = *store
        .tcb(target)
        .ok_or(IpcError::Inconsistent("missing thread"))?;
    // Suspended, and no core still runs it in its old VSpace.
    if old.state != ThreadState::Inactive || old.running {
        return Err(IpcError::Refused(Error::IllegalOperation));
    }
    let new_references = [
        configuration.cspace_root.object(),
        Some(vspace),
        configuration.fault_endpoint.map(|(endpoint, _)| endpoint),
    ];
    if new_references
        .iter()
        .flatten()
        .any(|object| store.header(*object).is_none())
    {
        return Err(IpcError::Inconsistent("a configured object is not live"));
    }

    // Invoke.
    release_references(store, target);
    for object in new_references.into_iter().flatten() {
        if let Some(header) = store.header_mut(object) {
            header.references = header.references.saturating_add(1);
        }
    }
    let tcb = store
        .tcb_mut(target)
        .ok_or(IpcError::Inconsistent("missing thread"))?;
    tcb.cspace_root = configuration.cspace_root;
    tcb.vspace = Some(vspace);
    tcb.fault_endpoint = configuration.fault_endpoint;
    tcb.priority = priority;
    Ok(())
}

/// Drops the references the thread holds on its CSpace root, VSpace and
/// fault endpoint (at `Configure`, and when the thread is destroyed).
pub fn release_references(store: &mut (impl IpcStore + ObjectStore), thread: ThreadRef) {
    let Some(tcb) = store.tcb(thread).copied() else {
        return;
    };
    for object in [
        tcb.cspace_root.object(),
        tcb.vspace,
        tcb.fault_endpoint.map(|(endpoint, _)| endpoint),
    ]
    .into_iter()
    .flatten()
    {
        if let Some(header) = store.header_mut(object) {
            header.references = header.references.saturating_sub(1);
        }
    }
    if let Some(tcb) = store.tcb_mut(thread) {
        tcb.cspace_root = Capability::Null;
        tcb.vspace = None;
        tcb.fault_endpoint = None;
    }
}

/// Unbinds the thread's VCPU, if it has one (when the thread is
/// destroyed): the VCPU can then be bound again or destroyed.
pub fn release_vcpu(store: &mut (impl IpcStore + ObjectStore), thread: ThreadRef) {
    let Some(vcpu) = store.tcb_mut(thread).and_then(|tcb| tcb.vcpu.take()) else {
        return;
    };
    if let Some(state) = store.vcpu_mut(vcpu) {
        state.thread = None;
    }
    if let Some(header) = store.header_mut(vcpu) {
        header.references = header.references.saturating_sub(1);
    }
}

/// `TCB.BindNotification`: binds the notification in `notification` (which
/// needs READ: the thread will take its signals) to the thread in
/// `capability`. Each side binds at most once.
pub fn bind_notification(
    store: &mut impl IpcStore,
    capability: Capability,
    notification: Capability,
) -> Result<(), IpcError> {
    let target = thread_of(capability, 0)?;
    let Capability::Notification { object, rights, .. } = notification else {
        return Err(IpcError::Refused(Error::InvalidCapability { argument: 1 }));
    };
    if !rights.contains(Rights::READ) {
        return Err(IpcError::Refused(Error::InsufficientRights {
            argument: 1,
            needed: Rights::READ,
        }));
    }
    let thread_bound = store
        .tcb(target)
        .ok_or(IpcError::Inconsistent("missing thread"))?
        .bound_notification;
    let notification_bound = store
        .notification(object)
        .ok_or(IpcError::Inconsistent("missing notification"))?
        .bound_thread;
    if thread_bound.is_some() || notification_bound.is_some() {
        return Err(IpcError::Refused(Error::IllegalOperation));
    }
    store
        .tcb_mut(target)
        .ok_or(IpcError::Inconsistent("missing thread"))?
        .bound_notification = Some(object);
    store
        .notification_mut(object)
        .ok_or(IpcError::Inconsistent("missing notification"))?
        .bound_thread = Some(target);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::tests::{NOTIFICATION, Store, setup, thread};
    use crate::object::ObjectRef;
    use crate::queue::LinkStore;

    fn tcb_capability(number: u64) -> Capability {
        Capability::Tcb {
            object: thread(number),
        }
    }

    fn refused(error: Error) -> Result<(), IpcError> {
        Err(IpcError::Refused(error))
    }

    /// `setup` gives every thread priority 10, state Runnable; make them
    /// inactive and unqueued like fresh TCBs.
    fn fresh(threads: u64) -> (Store, Scheduler) {
        let (mut store, scheduler) = setup(threads);
        for tcb in store.threads.values_mut() {
            tcb.state = ThreadState::Inactive;
        }
        (store, scheduler)
    }

    #[test]
    fn resume_and_suspend() {
        let (mut store, mut scheduler) = fresh(2);
        resume(&mut store, &mut scheduler, tcb_capability(1)).unwrap();
        assert_eq!(store.threads[&thread(1)].state, ThreadState::Runnable);
        resume(&mut store, &mut scheduler, tcb_capability(1)).unwrap();
        assert_eq!(
            scheduler.pick_next(&mut store, 0),
            Ok(Some(thread(1))),
            "queued once"
        );
        assert_eq!(scheduler.pick_next(&mut store, 0), Ok(None));
        scheduler.enqueue(&mut store, thread(1)).unwrap();
        suspend(&mut store, &mut scheduler, tcb_capability(1)).unwrap();
        assert_eq!(store.threads[&thread(1)].state, ThreadState::Inactive);
        assert!(!store.links(thread(1)).queued);
        assert_eq!(scheduler.pick_next(&mut store, 0), Ok(None));
    }

    #[test]
    fn priorities_are_capped_by_the_caller_and_requeue() {
        let (mut store, mut scheduler) = fresh(3);
        store.threads.get_mut(&thread(0)).unwrap().priority = 50;
        for number in [1, 2] {
            resume(&mut store, &mut scheduler, tcb_capability(number)).unwrap();
        }
        let before = store.clone();
        assert_eq!(
            set_priority(&mut store, &mut scheduler, thread(0), tcb_capability(2), 51),
            refused(Error::RangeError {
                argument: 0,
                minimum: 0,
                maximum: 50
            })
        );
        assert_eq!(
            set_priority(
                &mut store,
                &mut scheduler,
                thread(0),
                tcb_capability(2),
                1 << 40
            ),
            refused(Error::RangeError {
                argument: 0,
                minimum: 0,
                maximum: 50
            })
        );
        assert_eq!(
            set_priority(&mut store, &mut scheduler, thread(0), Capability::Null, 5),
            refused(Error::InvalidCapability { argument: 0 })
        );
        assert_eq!(store, before);
        set_priority(&mut store, &mut scheduler, thread(0), tcb_capability(2), 50).unwrap();
        assert_eq!(
            scheduler.pick_next(&mut store, 0),
            Ok(Some(thread(2))),
            "now first"
        );
        assert_eq!(scheduler.pick_next(&mut store, 0), Ok(Some(thread(1))));
    }

    #[test]
    fn affinity_moves_a_queued_thread_to_another_core() {
        let (mut store, mut scheduler) = fresh(1);
        resume(&mut store, &mut scheduler, tcb_capability(0)).unwrap();
        assert_eq!(
            set_affinity(&mut store, &mut scheduler, tcb_capability(0), 4, 4),
            refused(Error::RangeError {
                argument: 0,
                minimum: 0,
                maximum: 3
            })
        );
        set_affinity(&mut store, &mut scheduler, tcb_capability(0), 3, 4).unwrap();
        assert_eq!(scheduler.pick_next(&mut store, 0), Ok(None));
        assert_eq!(scheduler.pick_next(&mut store, 3), Ok(Some(thread(0))));
    }

    #[test]
    fn registers_are_written_only_while_inactive() {
        let (mut store, mut scheduler) = fresh(1);
        write_registers(&mut store, tcb_capability(0), 0x40_0000, 0x80_0000, &[1, 2]).unwrap();
        let context = read_registers(&store, tcb_capability(0)).unwrap();
        assert_eq!(
            (context.pc, context.sp, context.x[0], context.x[1]),
            (0x40_0000, 0x80_0000, 1, 2)
        );
        assert_eq!(
            write_registers(&mut store, tcb_capability(0), 0, 0, &[0; 9]),
            refused(Error::RangeError {
                argument: 2,
                minimum: 0,
                maximum: 8
            })
        );
        resume(&mut store, &mut scheduler, tcb_capability(0)).unwrap();
        let before = store.clone();
        assert_eq!(
            write_registers(&mut store, tcb_capability(0), 0, 0, &[]),
            refused(Error::IllegalOperation)
        );
        assert_eq!(store, before);
    }

    #[test]
    fn notifications_bind_once_each_way() {
        let (mut store, _) = fresh(2);
        let notification = Capability::Notification {
            object: NOTIFICATION,
            badge: 0,
            rights: Rights::ALL,
        };
        let write_only = Capability::Notification {
            object: NOTIFICATION,
            badge: 0,
            rights: Rights::WRITE,
        };
        assert_eq!(
            bind_notification(&mut store, tcb_capability(0), write_only),
            refused(Error::InsufficientRights {
                argument: 1,
                needed: Rights::READ
            })
        );
        assert_eq!(
            bind_notification(
                &mut store,
                tcb_capability(0),
                Capability::Tcb {
                    object: ObjectRef(1)
                }
            ),
            refused(Error::InvalidCapability { argument: 1 })
        );
        bind_notification(&mut store, tcb_capability(0), notification).unwrap();
        assert_eq!(
            store.threads[&thread(0)].bound_notification,
            Some(NOTIFICATION)
        );
        assert_eq!(
            store.notifications[&NOTIFICATION].bound_thread,
            Some(thread(0))
        );
        let before = store.clone();
        assert_eq!(
            bind_notification(&mut store, tcb_capability(1), notification),
            refused(Error::IllegalOperation)
        );
        assert_eq!(
            bind_notification(&mut store, tcb_capability(0), notification),
            refused(Error::IllegalOperation)
        );
        assert_eq!(store, before);
    }
}
