//! The kernel's part in running guests: VCPU invocations, VM exits, the
//! `WFI` wait, the forwarded virtual timer, and which VCPU each core has
//! loaded (the lazy switch of EL1 state, `crate::vcpu`).

use hyp_abi::vcpu::VIRTUAL_TIMER_INTID;
use hyp_abi::{Error, InvocationLabel};

use super::{Effects, Kernel, Notice, Reply, SLEEPERS, success};
use crate::cap::Capability;
use crate::cspace::KernelStore;
use crate::exit::{self, Exit, Trap};
use crate::ipc::{self, FaultDelivery};
use crate::object::{ObjectRef, ThreadRef};
use crate::thread::{FaultMessage, ThreadState};

/// The priority the core gives the virtual timer's interrupt (Linux
/// programs every interrupt's priority to 0xa0).
pub const VIRTUAL_TIMER_PRIORITY: u8 = 0xa0;

/// What the arch layer must do about VCPU state when it resumes a thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VcpuSwitch {
    /// The thread runs as this VCPU (at EL1); `None`: a native thread.
    pub vcpu: Option<ObjectRef>,
    /// First save the hardware's EL1 state into this VCPU (it was loaded
    /// on this core and another one is loaded now).
    pub unload: Option<ObjectRef>,
    /// Load `vcpu`'s state into the hardware (it was not loaded here).
    pub load: bool,
    /// The VCPU loaded on this core afterwards (also for a native thread:
    /// the one whose EL0-visible registers are to be put aside).
    pub loaded: Option<ObjectRef>,
}

/// Decides the VCPU switch for resuming a thread that runs as `vcpu` on
/// the core whose state is `state`, and records the result as the core's
/// loaded VCPU.
#[inline(always)]
pub(super) fn switch_for(state: &mut super::CoreState, vcpu: Option<ObjectRef>) -> VcpuSwitch {
    let loaded = state.loaded_vcpu;
    match vcpu {
        None => VcpuSwitch {
            vcpu: None,
            unload: None,
            load: false,
            loaded,
        },
        Some(vcpu) if loaded == Some(vcpu) => VcpuSwitch {
            vcpu: Some(vcpu),
            unload: None,
            load: false,
            loaded,
        },
        Some(vcpu) => {
            state.loaded_vcpu = Some(vcpu);
            VcpuSwitch {
                vcpu: Some(vcpu),
                unload: loaded,
                load: true,
                loaded: Some(vcpu),
            }
        }
    }
}

impl<S: KernelStore> Kernel<S> {
    /// The VCPU loaded on `core` (its state is in that core's registers).
    pub fn loaded_vcpu(&self, core: usize) -> Option<ObjectRef> {
        self.cores.get(core)?.loaded_vcpu
    }

    /// Forgets loaded VCPUs that no longer exist (after a delete or
    /// revoke): their state in the hardware is garbage now.
    pub(super) fn forget_dead_vcpus(&mut self) {
        for core in 0..self.cores.len() {
            if let Some(vcpu) = self.cores[core].loaded_vcpu
                && self.store.vcpu(vcpu).is_none()
            {
                self.cores[core].loaded_vcpu = None;
            }
            for index in 0..SLEEPERS {
                if let Some(vcpu) = self.cores[core].sleepers[index]
                    && self.store.vcpu(vcpu).is_none()
                {
                    self.cores[core].sleepers[index] = None;
                }
            }
        }
    }

    /// A synchronous trap of the VCPU thread that `core` runs (its
    /// registers are saved). `interrupt_pending`: the hardware's list
    /// registers hold a pending virtual interrupt.
    pub fn vm_exit(&mut self, core: usize, trap: Trap, interrupt_pending: bool) -> Effects {
        let mut effects = Effects::default();
        self.vm_exit_into(core, trap, interrupt_pending, &mut effects);
        effects
    }

    /// [`Kernel::vm_exit`], adding its effects to `effects`.
    pub fn vm_exit_into(
        &mut self,
        core: usize,
        trap: Trap,
        interrupt_pending: bool,
        effects: &mut Effects,
    ) {
        let Some(thread) = self.current(core) else {
            return;
        };
        let Some(tcb) = self.store.tcb_mut(thread) else {
            return;
        };
        let vcpu = tcb.vcpu;
        match exit::decode(trap, &mut tcb.context) {
            Exit::WaitForInterrupt => {
                let pending = interrupt_pending
                    || vcpu
                        .and_then(|vcpu| self.store.vcpu(vcpu))
                        .is_some_and(|vcpu| vcpu.pending_count != 0);
                if pending {
                    return;
                }
                if let Some(tcb) = self.store.tcb_mut(thread) {
                    tcb.state = ThreadState::WaitingForInterrupt;
                }
                if let (Some(vcpu), Some(state)) = (vcpu, self.cores.get_mut(core))
                    && let Some(free) = state.sleepers.iter_mut().find(|slot| slot.is_none())
                {
                    *free = Some(vcpu);
                }
                self.schedule(core, effects);
            }
            Exit::WaitForEvent => {
                if let Some(state) = self.cores.get_mut(core) {
                    state.timeslice.expire();
                }
                self.schedule(core, effects);
            }
            Exit::Message(message) => self.deliver_fault(core, thread, &message, effects),
        }
    }

    /// Sends `message` for the current thread of `core` to its fault
    /// endpoint, stopping the thread (and saying so) if it has none.
    pub(super) fn deliver_fault(
        &mut self,
        core: usize,
        thread: ThreadRef,
        message: &FaultMessage,
        effects: &mut Effects,
    ) {
        if self.fastpath && self.fast_fault(core, thread, message) {
            return;
        }
        match ipc::send_fault(&mut self.store, &mut self.scheduler, thread, *message) {
            Ok(FaultDelivery::Sent(_)) => {}
            Ok(FaultDelivery::NoHandler) => {
                if let Some(tcb) = self.store.tcb_mut(thread) {
                    tcb.state = ThreadState::Inactive;
                }
                effects.notice = Some(Notice::UnhandledFault {
                    thread,
                    fault: *message,
                });
            }
            Err(error) => {
                super::refused(error, effects);
                if let Some(tcb) = self.store.tcb_mut(thread) {
                    tcb.state = ThreadState::Inactive;
                }
            }
        }
        self.schedule(core, effects);
    }

    /// The virtual timer's interrupt fired on `core` (the arch layer has
    /// masked the timer). `false`: no VCPU is loaded here to take it, so
    /// the arch layer turns the timer off.
    pub fn virtual_timer(&mut self, core: usize) -> (Effects, bool) {
        let mut effects = Effects::default();
        let Some(vcpu) = self.loaded_vcpu(core) else {
            return (effects, false);
        };
        let thread = match self.store.vcpu_mut(vcpu) {
            Some(state) => {
                let _ = state.inject(VIRTUAL_TIMER_INTID, u64::from(VIRTUAL_TIMER_PRIORITY));
                state.thread
            }
            None => return (effects, false),
        };
        if let Some(thread) = thread {
            self.wake_from_wfi(core, thread, &mut effects);
        }
        self.schedule(core, &mut effects);
        (effects, true)
    }

    /// Wakes the VCPUs of `core` that wait in `WFI`, are not loaded, and
    /// whose saved virtual timer (enabled, not masked) is due at `now`.
    pub(super) fn wake_due_sleepers(&mut self, core: usize, now: u64, effects: &mut Effects) {
        use hyp_abi::vcpu_register::{CNTV_CTL_EL0, CNTV_CVAL_EL0};
        let Some(state) = self.cores.get(core) else {
            return;
        };
        if state.sleepers.iter().all(Option::is_none) {
            return;
        }
        let (sleepers, loaded) = (state.sleepers, state.loaded_vcpu);
        for (index, sleeper) in sleepers.iter().enumerate() {
            let Some(vcpu) = *sleeper else { continue };
            if Some(vcpu) == loaded {
                continue;
            }
            let waiting = self
                .store
                .vcpu(vcpu)
                .and_then(|saved| saved.thread)
                .and_then(|thread| self.store.tcb(thread))
                .is_some_and(|tcb| tcb.state == ThreadState::WaitingForInterrupt);
            if !waiting {
                // Suspended meanwhile: nothing to wake.
                if let Some(state) = self.cores.get_mut(core) {
                    state.sleepers[index] = None;
                }
                continue;
            }
            let due = self.store.vcpu(vcpu).is_some_and(|saved| {
                let control = saved.register(CNTV_CTL_EL0).unwrap_or(0);
                let deadline = saved.register(CNTV_CVAL_EL0).unwrap_or(u64::MAX);
                control & 0b11 == 0b01 && deadline <= now
            });
            if !due {
                continue;
            }
            let thread = self.store.vcpu_mut(vcpu).and_then(|saved| {
                let _ = saved.inject(VIRTUAL_TIMER_INTID, u64::from(VIRTUAL_TIMER_PRIORITY));
                saved.thread
            });
            if let Some(state) = self.cores.get_mut(core) {
                state.sleepers[index] = None;
            }
            if let Some(thread) = thread {
                self.wake_from_wfi(core, thread, effects);
            }
        }
    }

    /// Makes a VCPU thread that waits in `WFI` runnable again (a virtual
    /// interrupt is pending for it).
    fn wake_from_wfi(&mut self, core: usize, thread: ThreadRef, effects: &mut Effects) {
        let Some(tcb) = self.store.tcb_mut(thread) else {
            return;
        };
        if tcb.state == ThreadState::WaitingForInterrupt {
            // It waited on the core it is pinned to: forget it there.
            if let Some(vcpu) = tcb.vcpu
                && let Some(state) = self.cores.get_mut(tcb.affinity)
            {
                for sleeper in &mut state.sleepers {
                    if *sleeper == Some(vcpu) {
                        *sleeper = None;
                    }
                }
            }
            tcb.state = ThreadState::Runnable;
            if self.scheduler.enqueue(&mut self.store, thread).is_err() {
                effects.notice = Some(Notice::Inconsistent("run queue"));
            }
        }
        self.kick_for(thread, core, effects);
    }

    /// Decodes and performs a VCPU invocation.
    pub(super) fn invoke_vcpu(
        &mut self,
        core: usize,
        label: InvocationLabel,
        capability: Capability,
        words: &[u64],
        tcb: Option<Capability>,
        effects: &mut Effects,
    ) -> Reply {
        let Capability::Vcpu { object: vcpu } = capability else {
            return Err(Error::IllegalOperation);
        };
        let word = |index: usize| words.get(index).copied().ok_or(Error::Truncated);
        match label {
            InvocationLabel::VcpuSetTcb => {
                let Some(Capability::Tcb { object: thread }) = tcb else {
                    return Err(Error::InvalidCapability { argument: 1 });
                };
                let thread_free = self.store.tcb(thread).is_some_and(|tcb| {
                    tcb.vcpu.is_none() && tcb.state == ThreadState::Inactive && !tcb.running
                });
                let vcpu_free = self
                    .store
                    .vcpu(vcpu)
                    .is_some_and(|state| state.thread.is_none());
                if !thread_free || !vcpu_free {
                    return Err(Error::IllegalOperation);
                }
                if let Some(state) = self.store.vcpu_mut(vcpu) {
                    state.thread = Some(thread);
                }
                if let Some(tcb) = self.store.tcb_mut(thread) {
                    tcb.vcpu = Some(vcpu);
                    tcb.context.spsr = hyp_abi::vcpu::INITIAL_SPSR;
                }
                if let Some(header) = self.store.header_mut(vcpu) {
                    header.references = header.references.saturating_add(1);
                }
                success(&[])
            }
            InvocationLabel::VcpuReadRegister => {
                self.bring_home(core, vcpu)?;
                let state = self.store.vcpu(vcpu).ok_or(Error::IllegalOperation)?;
                let value = state.register(word(0)?)?;
                success(&[value])
            }
            InvocationLabel::VcpuWriteRegister => {
                let (number, value) = (word(0)?, word(1)?);
                self.bring_home(core, vcpu)?;
                let running = self
                    .store
                    .vcpu(vcpu)
                    .and_then(|state| state.thread)
                    .and_then(|thread| self.store.tcb(thread))
                    .is_some_and(|tcb| tcb.running);
                if running {
                    return Err(Error::IllegalOperation);
                }
                let state = self.store.vcpu_mut(vcpu).ok_or(Error::IllegalOperation)?;
                state.set_register(number, value)?;
                success(&[])
            }
            InvocationLabel::VcpuInjectIrq => {
                let (intid, priority) = (word(0)?, word(1)?);
                let state = self.store.vcpu_mut(vcpu).ok_or(Error::IllegalOperation)?;
                state.inject(intid, priority)?;
                if let Some(thread) = state.thread {
                    self.wake_from_wfi(core, thread, effects);
                }
                success(&[])
            }
            _ => Err(Error::IllegalOperation),
        }
    }

    /// Makes the VCPU object's copy of its state the current one: if it is
    /// loaded on this core, the store saves it from the hardware and the
    /// core no longer counts it as loaded; if it is loaded on another
    /// core, the request is refused (that core's registers hold it).
    fn bring_home(&mut self, core: usize, vcpu: ObjectRef) -> Result<(), Error> {
        for other in 0..self.cores.len() {
            if self.cores[other].loaded_vcpu == Some(vcpu) {
                if other != core {
                    return Err(Error::IllegalOperation);
                }
                self.store.save_loaded_vcpu(vcpu);
                self.cores[other].loaded_vcpu = None;
            }
        }
        Ok(())
    }
}
