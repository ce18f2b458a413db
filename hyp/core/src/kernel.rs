//! The kernel's entry points: what happens on a system call, a user fault,
//! a timer tick and an interrupt, and which thread runs next.
//!
//! The arch layer saves the interrupted thread's registers into its TCB,
//! takes the big kernel lock, calls one of the `Kernel` methods below, applies
//! the [`Effects`] it returns (print a character, unmask an interrupt, flush
//! the stage-2 TLBs, wake other cores), and resumes whichever thread
//! [`Kernel::current`] names on its core, or idles. Nothing here touches
//! hardware, so every path is tested on the host.
//!
//! A system call is decoded completely before anything changes: a bogus
//! syscall number, capability pointer, label or argument ends in an error
//! reply with the precise [`Error`], and the thread carries on.
//!
//! # Invariants
//! - `cores[c].current`, when set, names a thread that is `Runnable`, is in
//!   no queue, and has affinity `c`, once [`Kernel::schedule`] has run for
//!   core `c`.
//! - A thread is the current thread of at most one core.

use hyp_abi::fault::{FaultLabel, instruction_fault, memory_fault};
use hyp_abi::{
    CAPABILITY_REGISTER, EXTRA_CAPABILITY_REGISTERS, Error, InvocationLabel, MAX_CORES,
    MESSAGE_INFO_REGISTER, MessageInfo, ObjectType, REGISTER_MESSAGE_WORDS, Rights,
    SYSCALL_NUMBER_REGISTER, Syscall, frame_attributes,
};

use crate::cap::{Capability, SlotRef};
use crate::cspace::{self, KernelStore};
use crate::ipc::{self, IpcError, Outcome};
use crate::irq;
use crate::object::{ObjectRef, ThreadRef};
use crate::queue::{Links, Queue};
use crate::scheduler::{Scheduler, Timeslice};
use crate::tcb::{self, Configuration};
use crate::thread::{FaultMessage, Tcb, ThreadState, UserContext};
use crate::vspace;

/// VMIDs the kernel hands to VSpaces (VMID 0 is the kernel's own, unused).
pub const VMIDS: usize = 256;

/// One core's scheduling state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CoreState {
    /// The thread it runs, if any (none: it idles).
    pub current: Option<ThreadRef>,
    /// The VCPU whose EL1 state is in this core's registers.
    pub loaded_vcpu: Option<ObjectRef>,
    /// VCPUs of this core that wait in `WFI`: the tick checks the virtual
    /// timers of those that are not loaded (a loaded one's timer is
    /// armed in the hardware).
    pub sleepers: [Option<ObjectRef>; SLEEPERS],
    /// The rest of the current thread's timeslice.
    pub timeslice: Timeslice,
}

impl CoreState {
    /// Nothing running.
    pub const IDLE: CoreState = CoreState {
        current: None,
        loaded_vcpu: None,
        sleepers: [None; SLEEPERS],
        timeslice: Timeslice::new(Timeslice::DEFAULT_TICKS),
    };
}

/// What the arch layer must do after a kernel entry, besides resuming the
/// current thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Effects {
    /// `DebugPutChar`: print this byte.
    pub put_char: Option<u8>,
    /// Unmask this interrupt at the interrupt controller (`IrqHandler.Ack`).
    pub unmask_irq: Option<u16>,
    /// A mapping may have gone: invalidate the stage-2 TLB entries of all
    /// VMIDs before any thread runs again.
    pub flush_tlb: bool,
    /// Cores (bit per core) whose scheduling decision may have changed:
    /// send them a wake-up interrupt.
    pub kick_cores: u8,
    /// Something to report on the console.
    pub notice: Option<Notice>,
    /// `FrameClean`: clean this physical range `(base, size)` to the
    /// point of coherency and invalidate the instruction caches.
    pub clean: Option<(u64, u64)>,
}

impl Effects {
    /// Nothing to do (cheaper than comparing with `Effects::default()`,
    /// field by field through the derived comparison, on every entry).
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.put_char.is_none()
            && self.unmask_irq.is_none()
            && !self.flush_tlb
            && self.kick_cores == 0
            && self.notice.is_none()
            && self.clean.is_none()
    }
}

/// An event the console should show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A thread faulted and has no fault endpoint: it is stopped.
    UnhandledFault {
        /// The thread.
        thread: ThreadRef,
        /// What happened.
        fault: FaultMessage,
    },
    /// An interrupt arrived that no handler takes; it stays masked.
    UnhandledIrq {
        /// The interrupt number.
        irq: u16,
    },
    /// The kernel found its own state inconsistent (a kernel bug); the
    /// operation was refused.
    Inconsistent(&'static str),
}

impl core::fmt::Display for Notice {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Notice::UnhandledFault { thread, fault } => {
                let kind = match FaultLabel::from_label(fault.label) {
                    Some(FaultLabel::MemoryFault) => "memory fault",
                    Some(FaultLabel::UndefinedInstruction) => "undefined instruction",
                    Some(FaultLabel::UnknownSyscall) => "unknown syscall",
                    Some(
                        label @ (FaultLabel::VcpuMmio
                        | FaultLabel::VcpuHypercall
                        | FaultLabel::VcpuSystemRegister
                        | FaultLabel::VcpuException),
                    ) => {
                        // A VCPU without a VMM: its exit message, raw.
                        write!(
                            formatter,
                            "VCPU thread {:#x}: exit {label:?} with no VMM:",
                            thread.0
                        )?;
                        for word in &fault.words[..usize::from(fault.length).min(8)] {
                            write!(formatter, " {word:#x}")?;
                        }
                        return Ok(());
                    }
                    None => "fault",
                };
                write!(
                    formatter,
                    "thread {:#x}: {kind} at pc {:#x}",
                    thread.0, fault.words[0]
                )?;
                if fault.label == FaultLabel::MemoryFault as u64 {
                    write!(
                        formatter,
                        ", address {:#x} ({}), status {:#x}",
                        fault.words[memory_fault::ADDRESS],
                        if fault.words[memory_fault::INSTRUCTION] != 0 {
                            "instruction fetch"
                        } else {
                            "data access"
                        },
                        fault.words[memory_fault::STATUS]
                    )?;
                } else {
                    write!(
                        formatter,
                        ", syndrome {:#x}",
                        fault.words[instruction_fault::SYNDROME]
                    )?;
                }
                write!(formatter, "; it has no fault handler and is stopped")
            }
            Notice::UnhandledIrq { irq } => {
                write!(formatter, "interrupt {irq} has no handler; masked")
            }
            Notice::Inconsistent(what) => {
                write!(
                    formatter,
                    "kernel bug: inconsistent {what}; request refused"
                )
            }
        }
    }
}

/// The scheduling facts of a thread, copied out of its TCB.
#[derive(Clone, Copy)]
struct Scheduling {
    state: ThreadState,
    queued: bool,
    affinity: usize,
    priority: u8,
}

/// Whether the thread can run on `core` now, ahead of every thread ready
/// there (`highest`: the highest ready priority).
fn runs_next_here(tcb: &Tcb, core: usize, highest: Option<u8>) -> bool {
    tcb.affinity == core
        && tcb.vspace.is_some()
        && highest.is_none_or(|highest| highest <= tcb.priority)
}

/// Puts a delivered message into a receiver's saved registers: the words
/// in `x0..`, the badge in `x9`, the info in `x10`.
#[inline(always)]
fn write_message(context: &mut UserContext, words: &[u64], badge: u64, info: MessageInfo) {
    // Word by word over a fixed range: a slice copy of a length known
    // only at run time would be a memcpy call, dearer than these stores.
    for (index, slot) in context.x[..REGISTER_MESSAGE_WORDS].iter_mut().enumerate() {
        if let Some(word) = words.get(index) {
            *slot = *word;
        }
    }
    context.x[CAPABILITY_REGISTER] = badge;
    context.x[MESSAGE_INFO_REGISTER] = info.encode();
}

/// The reply of a successful system call without results (as the
/// general path's `success(&[])`): no words, label 0.
#[inline(always)]
fn write_empty_reply(context: &mut UserContext) {
    context.x[..REGISTER_MESSAGE_WORDS].fill(0);
    context.x[MESSAGE_INFO_REGISTER] = MessageInfo::new(0, 0).encode();
}

/// What the fast paths read from the sender, decoded.
#[derive(Clone, Copy)]
struct FastMessage {
    info: MessageInfo,
    capability: Capability,
    /// The sender's priority.
    priority: u8,
    /// The thread whose `Call` (or fault) the sender is to answer.
    caller: Option<ThreadRef>,
    /// The sender has a bound notification.
    bound: bool,
}

/// Where and how to resume a thread: its save area, its VSpace and VMID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resume {
    /// The thread.
    pub thread: ThreadRef,
    /// The address of its saved registers (in its TCB).
    pub context: usize,
    /// Its VSpace's root table.
    pub vspace: ObjectRef,
    /// The VSpace's VMID.
    pub vmid: u16,
    /// The VMID was taken from another VSpace: flush the TLBs first.
    pub recycled: bool,
    /// What to do about VCPU state (native threads: `vcpu` is `None`).
    pub vcpu: VcpuSwitch,
    /// An exception to inject into the guest before it runs.
    pub injection: Option<crate::exit::Injection>,
}

/// A user fault as the arch layer read it from the syndrome registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserFault {
    /// A data or instruction abort.
    Memory {
        /// The faulting address (IPA).
        address: u64,
        /// An instruction fetch.
        instruction: bool,
        /// The ESR's ISS.
        status: u64,
    },
    /// An undefined instruction, or any other exception the thread caused.
    Instruction {
        /// The whole ESR.
        syndrome: u64,
    },
}

/// The kernel: its objects, its run queues, and each core's current thread.
#[derive(Debug)]
pub struct Kernel<S> {
    /// Where the objects live.
    pub store: S,
    /// The run queues.
    pub scheduler: Scheduler,
    /// Per core.
    pub cores: [CoreState; MAX_CORES],
    /// Cores online.
    pub online: usize,
    /// Interrupt numbers below this exist on the interrupt controller.
    pub irq_limit: u16,
    /// Interrupts the kernel uses itself (never handed out).
    pub reserved_irqs: [u16; 3],
    /// Which VSpace holds each VMID (index 0 unused).
    pub vmids: [Option<ObjectRef>; VMIDS],
    /// The VMID handed out last (round robin).
    next_vmid: usize,
    /// Take the fast paths for `Call` and `ReplyRecv` when they apply (the
    /// tests turn them off to compare against the general path).
    pub fastpath: bool,
}

type Reply = Result<(MessageInfo, [u64; REGISTER_MESSAGE_WORDS]), Error>;

/// VCPUs waiting in `WFI` that one core keeps track of.
pub const SLEEPERS: usize = 8;

/// Registers `x0..x13`: all a system call reads (message words, number,
/// capability pointer, message info, extra capability pointers).
const REGISTERS_READ: usize = 14;

/// A copy of the registers a system call reads.
#[derive(Clone, Copy, Debug, Default)]
struct Registers {
    x: [u64; REGISTERS_READ],
}

fn success(words: &[u64]) -> Reply {
    let mut message = [0; REGISTER_MESSAGE_WORDS];
    let length = words.len().min(REGISTER_MESSAGE_WORDS);
    message[..length].copy_from_slice(&words[..length]);
    #[allow(
        clippy::cast_possible_truncation,
        reason = "at most REGISTER_MESSAGE_WORDS (8)"
    )]
    Ok((MessageInfo::new(0, length as u8), message))
}

/// An invocation's arguments, read from the caller's registers. Extra
/// capability pointers are resolved only when the invocation asks for
/// them ([`Kernel::extra`]).
struct Arguments {
    words: [u64; REGISTER_MESSAGE_WORDS],
    length: usize,
    pointers: [u64; 3],
    extra_count: usize,
    thread: ThreadRef,
}

impl Arguments {
    fn word(&self, index: usize) -> Result<u64, Error> {
        if index < self.length {
            Ok(self.words[index])
        } else {
            Err(Error::Truncated)
        }
    }
}

fn refused(error: IpcError, effects: &mut Effects) -> Error {
    match error {
        IpcError::Refused(error) => error,
        IpcError::Inconsistent(what) => {
            effects.notice = Some(Notice::Inconsistent(what));
            Error::IllegalOperation
        }
    }
}

impl<S: KernelStore> Kernel<S> {
    /// A kernel over `store` with `online` cores and no thread running.
    pub const fn new(store: S, online: usize, irq_limit: u16, reserved_irqs: [u16; 3]) -> Self {
        Kernel {
            store,
            scheduler: Scheduler::new(),
            cores: [CoreState::IDLE; MAX_CORES],
            online: if online == 0 {
                1
            } else if online > MAX_CORES {
                MAX_CORES
            } else {
                online
            },
            irq_limit,
            reserved_irqs,
            vmids: [None; VMIDS],
            next_vmid: 0,
            fastpath: true,
        }
    }

    /// The thread `core` runs, if any.
    pub fn current(&self, core: usize) -> Option<ThreadRef> {
        self.cores.get(core).and_then(|state| state.current)
    }

    /// The saved registers of `thread`.
    pub fn context(&self, thread: ThreadRef) -> Option<&UserContext> {
        self.store.tcb(thread).map(|tcb| &tcb.context)
    }

    /// The saved registers of `thread`, for the arch layer to save into.
    pub fn context_mut(&mut self, thread: ThreadRef) -> Option<&mut UserContext> {
        self.store.tcb_mut(thread).map(|tcb| &mut tcb.context)
    }

    /// The VSpace `thread` runs in and its VMID, assigning a VMID if the
    /// VSpace has none. The second value says that the VMID was taken from
    /// another VSpace: flush its TLB entries first.
    pub fn address_space(&mut self, thread: ThreadRef) -> Option<(ObjectRef, u16, bool)> {
        let tcb = self.store.tcb(thread)?;
        let vspace = tcb.vspace?;
        // The thread remembers the VMID it ran with; it is still its
        // VSpace's if the table says so (the common case: no search).
        let hint = usize::from(tcb.vmid);
        if hint != 0 && self.vmids.get(hint).copied().flatten() == Some(vspace) {
            return Some((vspace, tcb.vmid, false));
        }
        if let Some(vmid) = self.vmids.iter().position(|owner| *owner == Some(vspace)) {
            #[allow(clippy::cast_possible_truncation, reason = "below VMIDS (256)")]
            let vmid = vmid as u16;
            if let Some(tcb) = self.store.tcb_mut(thread) {
                tcb.vmid = vmid;
            }
            return Some((vspace, vmid, false));
        }
        let free = self.vmids.iter().skip(1).position(Option::is_none);
        let (vmid, recycled) = match free {
            Some(index) => (index + 1, false),
            None => {
                self.next_vmid = self.next_vmid % (VMIDS - 1) + 1;
                (self.next_vmid, true)
            }
        };
        self.vmids[vmid] = Some(vspace);
        #[allow(clippy::cast_possible_truncation, reason = "below VMIDS (256)")]
        let vmid = vmid as u16;
        if let Some(tcb) = self.store.tcb_mut(thread) {
            tcb.vmid = vmid;
        }
        Some((vspace, vmid, recycled))
    }

    /// What the arch layer needs to resume the current thread of `core`.
    /// Its saved `spsr` needs no cleaning: only the hardware (an exception
    /// from the thread's own level) and the kernel's own constants write
    /// it (`UserContext::spsr`). `None`: nothing to run, or the thread has
    /// no VSpace (it is then stopped and reported).
    pub fn resume(&mut self, core: usize) -> Option<Result<Resume, ThreadRef>> {
        let thread = self.current(core)?;
        // The common case in one lookup: the thread's VMID hint is valid.
        let vmids = &self.vmids;
        let state = self.cores.get_mut(core)?;
        let tcb = self.store.tcb_mut(thread)?;
        let vcpu = guest::switch_for(state, tcb.vcpu);
        if let Some(vspace) = tcb.vspace {
            let hint = usize::from(tcb.vmid);
            if hint != 0 && vmids.get(hint).copied().flatten() == Some(vspace) {
                return Some(Ok(Resume {
                    thread,
                    context: core::ptr::from_ref(&tcb.context) as usize,
                    vspace,
                    vmid: tcb.vmid,
                    recycled: false,
                    vcpu,
                    injection: tcb.injection.take(),
                }));
            }
        }
        let Some((vspace, vmid, recycled)) = self.address_space(thread) else {
            if let Some(tcb) = self.store.tcb_mut(thread) {
                tcb.state = ThreadState::Inactive;
            }
            return Some(Err(thread));
        };
        let tcb = self.store.tcb_mut(thread)?;
        let context = core::ptr::from_ref(&tcb.context) as usize;
        Some(Ok(Resume {
            thread,
            context,
            vspace,
            vmid,
            recycled,
            vcpu,
            injection: tcb.injection.take(),
        }))
    }

    /// Forgets VMIDs of VSpaces that no longer exist (after a delete or
    /// revoke; the arch layer flushes the TLB for those anyway).
    fn forget_dead_vmids(&mut self) {
        for owner in &mut self.vmids {
            if owner.is_some_and(|vspace| self.store.table(vspace).is_none()) {
                *owner = None;
            }
        }
    }

    /// Makes `thread` the running thread of `core` (boot: the root task).
    pub fn start(&mut self, core: usize, thread: ThreadRef) -> Result<(), IpcError> {
        if let Some(tcb) = self.store.tcb_mut(thread) {
            tcb.state = ThreadState::Runnable;
            tcb.affinity = core;
        }
        self.scheduler.enqueue(&mut self.store, thread)?;
        Ok(())
    }

    fn resolve(
        &self,
        thread: ThreadRef,
        pointer: u64,
        argument: u8,
    ) -> Result<(SlotRef, Capability), Error> {
        let root = self
            .store
            .tcb(thread)
            .map_or(Capability::Null, |tcb| tcb.cspace_root);
        let slot = cspace::resolve(&self.store, root, pointer, 64, argument)?;
        let capability = self
            .store
            .slot(slot)
            .map(|found| found.capability)
            .ok_or(Error::InvalidCapability { argument })?;
        if capability.is_null() {
            return Err(Error::InvalidCapability { argument });
        }
        Ok((slot, capability))
    }

    /// The current thread of `core` made a system call (its registers are
    /// saved in its TCB).
    pub fn syscall(&mut self, core: usize) -> Effects {
        let mut effects = Effects::default();
        self.syscall_into(core, &mut effects);
        effects
    }

    /// [`Kernel::syscall`], adding its effects to `effects` (which the
    /// caller keeps where it wants them: no copy on the hot path).
    pub fn syscall_into(&mut self, core: usize, effects: &mut Effects) {
        let Some(thread) = self.current(core) else {
            return;
        };
        let Some(number) = self
            .context(thread)
            .map(|context| context.x[SYSCALL_NUMBER_REGISTER])
        else {
            effects.notice = Some(Notice::Inconsistent("current thread"));
            return;
        };
        self.syscall_numbered(core, number, effects);
    }

    /// [`Kernel::syscall_into`] for an arch layer that has read the system
    /// call's number (`x8`) from the current thread's save area itself:
    /// one lookup of the thread fewer.
    pub fn syscall_numbered(&mut self, core: usize, number: u64, effects: &mut Effects) {
        let Some(thread) = self.current(core) else {
            return;
        };
        if self.fastpath {
            let taken = if number == Syscall::Call as u64 {
                self.fast_call(core, thread)
            } else if number == Syscall::ReplyRecv as u64 {
                self.fast_reply_receive(core, thread)
            } else if number == Syscall::Send as u64 || number == Syscall::NbSend as u64 {
                self.fast_send(core, thread)
            } else if number == Syscall::Signal as u64 {
                self.fast_signal(core, thread)
            } else if number == Syscall::Yield as u64 {
                self.fast_yield(core, thread)
            } else {
                false
            };
            if taken {
                return;
            }
        }
        let Some(syscall) = Syscall::from_number(number) else {
            // An unknown number: refused, nothing changes.
            self.write_reply(thread, Err(Error::IllegalOperation));
            return;
        };
        // Only the registers a system call reads: x0..x13.
        let Some(context) = self.context(thread).map(|context| {
            let mut registers = Registers::default();
            registers.x.copy_from_slice(&context.x[..REGISTERS_READ]);
            registers
        }) else {
            return;
        };
        let result = self.dispatch(core, thread, syscall, &context, effects);
        match result {
            Ok(Some(reply)) => self.write_reply(thread, Ok(reply)),
            Ok(None) => {}
            Err(error) => {
                // A refused request changed nothing (decode, then invoke):
                // the caller runs on, no scheduling decision changed.
                self.write_reply(thread, Err(error));
                if effects.notice.is_none() {
                    return;
                }
            }
        }
        self.schedule(core, effects);
    }

    fn write_reply(&mut self, thread: ThreadRef, reply: Reply) {
        let (info, words) = match reply {
            Ok(reply) => reply,
            Err(error) => {
                let details = error.details();
                let mut words = [0; REGISTER_MESSAGE_WORDS];
                words[..3].copy_from_slice(&details);
                (MessageInfo::new(error.code() as u64, 3), words)
            }
        };
        if let Some(tcb) = self.store.tcb_mut(thread) {
            tcb.context.x[..REGISTER_MESSAGE_WORDS].copy_from_slice(&words);
            tcb.context.x[MESSAGE_INFO_REGISTER] = info.encode();
        }
    }

    /// Runs one system call. `Ok(None)`: the IPC path wrote the thread's
    /// registers itself (or it blocked); `Ok(Some(..))`: reply with this.
    fn dispatch(
        &mut self,
        core: usize,
        thread: ThreadRef,
        syscall: Syscall,
        context: &Registers,
        effects: &mut Effects,
    ) -> Result<Option<(MessageInfo, [u64; REGISTER_MESSAGE_WORDS])>, Error> {
        let pointer = context.x[CAPABILITY_REGISTER];
        let ipc = |result: Result<Outcome, IpcError>, effects: &mut Effects| {
            result
                .map(|_| None)
                .map_err(|error| refused(error, effects))
        };
        match syscall {
            Syscall::Call => {
                let (slot, capability) = self.resolve(thread, pointer, 0)?;
                if matches!(capability, Capability::Endpoint { .. }) {
                    let result = ipc::send(
                        &mut self.store,
                        &mut self.scheduler,
                        thread,
                        capability,
                        true,
                        true,
                    );
                    ipc(result, effects)
                } else {
                    self.invoke(core, thread, slot, capability, context, effects)
                        .map(Some)
                }
            }
            Syscall::Send | Syscall::NbSend => {
                let (_, capability) = self.resolve(thread, pointer, 0)?;
                let blocking = syscall == Syscall::Send;
                let result = ipc::send(
                    &mut self.store,
                    &mut self.scheduler,
                    thread,
                    capability,
                    blocking,
                    false,
                );
                ipc(result, effects)
            }
            Syscall::Recv => {
                let (_, capability) = self.resolve(thread, pointer, 0)?;
                let result = ipc::receive(&mut self.store, &mut self.scheduler, thread, capability);
                ipc(result, effects)
            }
            Syscall::Reply => {
                let result = ipc::reply(&mut self.store, &mut self.scheduler, thread);
                result
                    .map(|()| success(&[]).ok())
                    .map_err(|error| refused(error, effects))
            }
            Syscall::ReplyRecv => {
                let (_, capability) = self.resolve(thread, pointer, 0)?;
                let result =
                    ipc::reply_receive(&mut self.store, &mut self.scheduler, thread, capability);
                ipc(result, effects)
            }
            Syscall::Signal => {
                let (_, capability) = self.resolve(thread, pointer, 0)?;
                ipc::signal(&mut self.store, &mut self.scheduler, capability)
                    .map_err(|error| refused(error, effects))?;
                success(&[]).map(Some)
            }
            Syscall::Wait | Syscall::Poll => {
                let (_, capability) = self.resolve(thread, pointer, 0)?;
                let blocking = syscall == Syscall::Wait;
                let result = ipc::wait(&mut self.store, thread, capability, blocking);
                ipc(result, effects)
            }
            Syscall::Yield => {
                if let Some(state) = self.cores.get_mut(core) {
                    state.timeslice.expire();
                }
                success(&[]).map(Some)
            }
            Syscall::DebugPutChar => {
                #[allow(
                    clippy::cast_possible_truncation,
                    reason = "the low byte is the character"
                )]
                {
                    effects.put_char = Some(context.x[0] as u8);
                }
                success(&[]).map(Some)
            }
            // The arch layer answers it before the kernel is entered (it
            // reads the UART); a kernel without a console has no input.
            Syscall::DebugGetChar => success(&[u64::MAX]).map(Some),
            // The arch layer prints it before the kernel is entered; a
            // kernel without a console has nowhere to print.
            Syscall::DebugPutString => success(&[]).map(Some),
        }
    }

    fn arguments(&self, thread: ThreadRef, context: &Registers) -> Result<Arguments, Error> {
        let info = MessageInfo::decode(context.x[MESSAGE_INFO_REGISTER])
            .ok_or(Error::InvalidArgument { argument: 0 })?;
        let mut arguments = Arguments {
            words: [0; REGISTER_MESSAGE_WORDS],
            length: usize::from(info.length).min(REGISTER_MESSAGE_WORDS),
            pointers: [0; 3],
            extra_count: usize::from(info.extra_capabilities),
            thread,
        };
        arguments
            .words
            .copy_from_slice(&context.x[..REGISTER_MESSAGE_WORDS]);
        for (pointer, register) in arguments
            .pointers
            .iter_mut()
            .zip(EXTRA_CAPABILITY_REGISTERS)
        {
            *pointer = context.x[register];
        }
        Ok(arguments)
    }

    /// Extra capability `number` (1 to 3) of an invocation, resolved in the
    /// caller's CSpace: `InvalidCapability` if the caller did not pass it
    /// or its slot is empty, `LookupFailed` if the pointer does not
    /// resolve.
    fn extra(&self, arguments: &Arguments, number: usize) -> Result<(SlotRef, Capability), Error> {
        #[allow(clippy::cast_possible_truncation, reason = "1 to 3")]
        let argument = number as u8;
        if number == 0 || number > arguments.extra_count.min(3) {
            return Err(Error::InvalidCapability { argument });
        }
        self.resolve(arguments.thread, arguments.pointers[number - 1], argument)
    }

    /// Decodes and performs an invocation of a kernel object.
    fn invoke(
        &mut self,
        core: usize,
        thread: ThreadRef,
        slot: SlotRef,
        capability: Capability,
        context: &Registers,
        effects: &mut Effects,
    ) -> Reply {
        let info = MessageInfo::decode(context.x[MESSAGE_INFO_REGISTER])
            .ok_or(Error::InvalidArgument { argument: 0 })?;
        let label = InvocationLabel::from_label(info.label).ok_or(Error::IllegalOperation)?;
        let arguments = self.arguments(thread, context)?;
        let ipc_error = |error: IpcError, effects: &mut Effects| refused(error, effects);
        use InvocationLabel as L;
        match (label, capability) {
            (L::UntypedRetype, Capability::Untyped { .. }) => {
                let object_type = arguments.word(0)?;
                let object_type =
                    ObjectType::from_number(object_type).ok_or(Error::RangeError {
                        argument: 0,
                        minimum: 0,
                        maximum: ObjectType::Frame2M as u64,
                    })?;
                let size_bits = arguments.word(1)?;
                let index = arguments.word(2)?;
                let count = arguments.word(3)?;
                let destination = self.cnode_slot(&arguments, 1, index, 2)?;
                cspace::retype(
                    &mut self.store,
                    slot,
                    object_type,
                    size_bits,
                    destination,
                    count,
                )?;
                success(&[])
            }
            (L::CNodeCopy | L::CNodeMint, Capability::CNode { .. }) => {
                let destination = self.own_slot(capability, arguments.word(0)?, 0)?;
                let source = self.cnode_slot(&arguments, 1, arguments.word(1)?, 1)?;
                let rights = Rights::from_bits(arguments.word(2)?)
                    .ok_or(Error::InvalidArgument { argument: 2 })?;
                let badge = if label == L::CNodeMint {
                    Some(arguments.word(3)?)
                } else {
                    None
                };
                cspace::copy(&mut self.store, source, destination, rights, badge)?;
                success(&[])
            }
            (L::CNodeMove, Capability::CNode { .. }) => {
                let destination = self.own_slot(capability, arguments.word(0)?, 0)?;
                let source = self.cnode_slot(&arguments, 1, arguments.word(1)?, 1)?;
                cspace::move_capability(&mut self.store, source, destination)?;
                success(&[])
            }
            (L::CNodeDelete | L::CNodeRevoke, Capability::CNode { .. }) => {
                let target = self.own_slot(capability, arguments.word(0)?, 0)?;
                if label == L::CNodeDelete {
                    cspace::delete(&mut self.store, target)?;
                } else {
                    cspace::revoke(&mut self.store, target)?;
                }
                effects.flush_tlb = true;
                self.forget_dead_vmids();
                self.forget_dead_vcpus();
                self.kick_all_others(core, effects);
                success(&[])
            }
            (L::TcbConfigure, Capability::Tcb { .. }) => {
                let fault_pointer = arguments.word(0)?;
                let priority = arguments.word(1)?;
                let (_, cspace_root) = self.extra(&arguments, 1)?;
                let (_, vspace) = self.extra(&arguments, 2)?;
                let fault_endpoint = if fault_pointer == 0 {
                    None
                } else {
                    match self.resolve(thread, fault_pointer, 3) {
                        Ok((
                            _,
                            Capability::Endpoint {
                                object,
                                badge,
                                rights,
                            },
                        )) if rights.contains(Rights::WRITE.union(Rights::GRANT_REPLY)) => {
                            Some((object, badge))
                        }
                        Ok(_) => return Err(Error::InvalidCapability { argument: 3 }),
                        Err(error) => return Err(error),
                    }
                };
                tcb::configure(
                    &mut self.store,
                    thread,
                    capability,
                    Configuration {
                        fault_endpoint,
                        priority,
                        cspace_root,
                        vspace,
                    },
                )
                .map_err(|error| ipc_error(error, effects))?;
                success(&[])
            }
            (L::TcbReadRegisters, Capability::Tcb { .. }) => {
                let registers = tcb::read_registers(&self.store, capability)
                    .map_err(|error| ipc_error(error, effects))?;
                let mut words = [0; 8];
                words[0] = registers.pc;
                words[1] = registers.sp;
                words[2..].copy_from_slice(&registers.x[..6]);
                success(&words)
            }
            (L::TcbWriteRegisters, Capability::Tcb { .. }) => {
                if arguments.length < 2 {
                    return Err(Error::Truncated);
                }
                tcb::write_registers(
                    &mut self.store,
                    capability,
                    arguments.words[0],
                    arguments.words[1],
                    &arguments.words[2..arguments.length],
                )
                .map_err(|error| ipc_error(error, effects))?;
                success(&[])
            }
            (L::TcbResume, Capability::Tcb { object }) => {
                let configured = self
                    .store
                    .tcb(object)
                    .is_some_and(|tcb| tcb.vspace.is_some() && !tcb.cspace_root.is_null());
                if !configured {
                    // A thread without a CSpace and VSpace cannot run.
                    return Err(Error::IllegalOperation);
                }
                tcb::resume(&mut self.store, &mut self.scheduler, capability)
                    .map_err(|error| ipc_error(error, effects))?;
                self.kick_for(object, core, effects);
                success(&[])
            }
            (L::TcbSuspend, Capability::Tcb { object }) => {
                tcb::suspend(&mut self.store, &mut self.scheduler, capability)
                    .map_err(|error| ipc_error(error, effects))?;
                self.kick_all_others(core, effects);
                if object == thread {
                    // Suspended itself: it gets no reply.
                    return Ok((MessageInfo::new(0, 0), [0; 8]));
                }
                success(&[])
            }
            (L::TcbSetPriority, Capability::Tcb { object }) => {
                tcb::set_priority(
                    &mut self.store,
                    &mut self.scheduler,
                    thread,
                    capability,
                    arguments.word(0)?,
                )
                .map_err(|error| ipc_error(error, effects))?;
                self.kick_for(object, core, effects);
                success(&[])
            }
            (L::TcbBindNotification, Capability::Tcb { .. }) => {
                let (_, notification) = self.extra(&arguments, 1)?;
                tcb::bind_notification(&mut self.store, capability, notification)
                    .map_err(|error| ipc_error(error, effects))?;
                success(&[])
            }
            (L::TcbSetAffinity, Capability::Tcb { object })
                if self.store.tcb(object).is_some_and(|tcb| tcb.vcpu.is_some()) =>
            {
                // A VCPU's state may be in the registers of the core it ran
                // on: it stays there.
                Err(Error::IllegalOperation)
            }
            (L::TcbSetAffinity, Capability::Tcb { object }) => {
                tcb::set_affinity(
                    &mut self.store,
                    &mut self.scheduler,
                    capability,
                    arguments.word(0)?,
                    self.online,
                )
                .map_err(|error| ipc_error(error, effects))?;
                self.kick_for(object, core, effects);
                success(&[])
            }
            (L::FrameMap, Capability::Frame { .. }) => {
                let address = arguments.word(0)?;
                let rights = Rights::from_bits(arguments.word(1)?)
                    .ok_or(Error::InvalidArgument { argument: 1 })?;
                let attributes = arguments.word(2)?;
                if attributes & !frame_attributes::ALL != 0 {
                    return Err(Error::InvalidArgument { argument: 2 });
                }
                let (vspace, _) = self.extra(&arguments, 1)?;
                vspace::frame_map(
                    &mut self.store,
                    slot,
                    vspace,
                    address,
                    rights,
                    attributes & frame_attributes::EXECUTABLE != 0,
                )?;
                success(&[])
            }
            (L::FrameUnmap, Capability::Frame { .. }) => {
                vspace::frame_unmap(&mut self.store, slot)?;
                effects.flush_tlb = true;
                self.kick_all_others(core, effects);
                success(&[])
            }
            (
                L::FrameClean,
                Capability::Frame {
                    object, size_bits, ..
                },
            ) => {
                effects.clean = Some((object.0, 1u64 << size_bits));
                success(&[])
            }
            (L::PageTableMap, Capability::PageTable { .. }) => {
                let address = arguments.word(0)?;
                let (vspace, _) = self.extra(&arguments, 1)?;
                vspace::page_table_map(&mut self.store, slot, vspace, address)?;
                success(&[])
            }
            (L::PageTableUnmap, Capability::PageTable { .. }) => {
                vspace::page_table_unmap(&mut self.store, slot)?;
                effects.flush_tlb = true;
                self.kick_all_others(core, effects);
                success(&[])
            }
            (L::IrqControlGet, Capability::IrqControl) => {
                let irq = irq::decode_get(
                    &self.store,
                    arguments.word(0)?,
                    self.irq_limit,
                    &self.reserved_irqs,
                )?;
                let destination = self.cnode_slot(&arguments, 1, arguments.word(1)?, 1)?;
                cspace::insert_root(&mut self.store, destination, Capability::IrqHandler { irq })?;
                irq::claim(&mut self.store, irq);
                success(&[])
            }
            (L::IrqHandlerSetNotification, Capability::IrqHandler { .. }) => {
                let (_, notification) = self.extra(&arguments, 1)?;
                irq::set_notification(&mut self.store, capability, notification)?;
                // From now on the interrupt has somewhere to go: let it in
                // (a PPI on the invoking core, an SPI at the distributor).
                if let Capability::IrqHandler { irq } = capability {
                    effects.unmask_irq = Some(irq);
                }
                success(&[])
            }
            (L::IrqHandlerAck, Capability::IrqHandler { .. }) => {
                effects.unmask_irq = irq::ack(&mut self.store, capability)?;
                success(&[])
            }
            (
                L::VcpuSetTcb | L::VcpuReadRegister | L::VcpuWriteRegister | L::VcpuInjectIrq,
                Capability::Vcpu { .. },
            ) => {
                let tcb = if label == L::VcpuSetTcb {
                    Some(self.extra(&arguments, 1)?.1)
                } else {
                    None
                };
                let words = arguments.words;
                let length = arguments.length;
                self.invoke_vcpu(core, label, capability, &words[..length], tcb, effects)
            }
            _ => Err(Error::IllegalOperation),
        }
    }

    /// Slot `index` of the CNode that capability argument `number` (1..3)
    /// names; word `word` held the index.
    fn cnode_slot(
        &self,
        arguments: &Arguments,
        number: usize,
        index: u64,
        word: u8,
    ) -> Result<SlotRef, Error> {
        let (_, capability) = self.extra(arguments, number)?;
        #[allow(clippy::cast_possible_truncation, reason = "1 to 3")]
        let argument = number as u8;
        let Capability::CNode { .. } = capability else {
            return Err(Error::InvalidCapability { argument });
        };
        self.own_slot(capability, index, word)
    }

    /// Slot `index` of the CNode `capability` names (word `word` held the
    /// index): `RangeError` past its end.
    fn own_slot(&self, capability: Capability, index: u64, word: u8) -> Result<SlotRef, Error> {
        let Capability::CNode { object, radix, .. } = capability else {
            return Err(Error::InvalidCapability { argument: 0 });
        };
        let slots = 1u64 << radix;
        if index >= slots {
            return Err(Error::RangeError {
                argument: word,
                minimum: 0,
                maximum: slots - 1,
            });
        }
        Ok(SlotRef {
            cnode: object,
            index,
        })
    }

    fn kick_for(&self, thread: ThreadRef, core: usize, effects: &mut Effects) {
        if let Some(target) = self.store.tcb(thread).map(|tcb| tcb.affinity)
            && target != core
            && target < MAX_CORES
        {
            effects.kick_cores |= 1 << target;
        }
    }

    fn kick_all_others(&self, core: usize, effects: &mut Effects) {
        for other in 0..self.online {
            if other != core {
                effects.kick_cores |= 1 << other;
            }
        }
    }

    /// The message the current thread sends (its `x0..x7`, badge-less)
    /// and the endpoint its `x9` names, when that pointer resolves in a
    /// CSpace that is a single CNode whose guard makes the pointer exactly
    /// 64 bits deep (the common layout), and the message fits in
    /// registers. `None` sends the caller to the general path.
    #[inline(always)]
    fn fast_message(&self, thread: ThreadRef) -> Option<FastMessage> {
        let tcb = self.store.tcb(thread)?;
        let info = MessageInfo::decode(tcb.context.x[MESSAGE_INFO_REGISTER])?;
        if usize::from(info.length) > REGISTER_MESSAGE_WORDS || info.extra_capabilities != 0 {
            return None;
        }
        let Capability::CNode {
            object,
            radix,
            guard,
            guard_bits,
        } = tcb.cspace_root
        else {
            return None;
        };
        let pointer = tcb.context.x[CAPABILITY_REGISTER];
        if u32::from(radix) + u32::from(guard_bits) != 64 || radix == 0 || radix >= 64 {
            return None;
        }
        if pointer >> radix != guard {
            return None;
        }
        let (priority, caller, bound) =
            (tcb.priority, tcb.caller, tcb.bound_notification.is_some());
        let index = pointer & ((1u64 << radix) - 1);
        let capability = self
            .store
            .slot(SlotRef {
                cnode: object,
                index,
            })?
            .capability;
        Some(FastMessage {
            info,
            capability,
            priority,
            caller,
            bound,
        })
    }

    /// The fast path of `Send` (and `NbSend`) to an endpoint where one
    /// receiver of higher priority waits that can run at once on this core:
    /// the message goes straight into its registers, the sender goes back
    /// to the front of its run queue (it was preempted) and the core
    /// switches. Same outcome as `ipc::send` then `schedule`; returns
    /// false, having changed nothing, when a condition does not hold.
    fn fast_send(&mut self, core: usize, sender: ThreadRef) -> bool {
        let Some(FastMessage {
            info,
            capability:
                Capability::Endpoint {
                    object: endpoint,
                    badge,
                    rights,
                },
            priority,
            ..
        }) = self.fast_message(sender)
        else {
            return false;
        };
        if !rights.contains(Rights::WRITE) {
            return false;
        }
        // Only a lone receiver, whose removal cannot fail: putting the
        // sender back into its run queue is the last step that can.
        let Some((receiver, true)) = self.receiver_for(core, endpoint, Some(priority), false)
        else {
            return false;
        };
        if self
            .scheduler
            .enqueue_front(&mut self.store, sender)
            .is_err()
            || !self.take_receiver(endpoint, receiver, true)
        {
            return false;
        }
        let length = usize::from(info.length);
        let words = self.leave(sender, |_| {});
        self.run_next(core, receiver, |tcb| {
            write_message(&mut tcb.context, &words[..length], badge, info);
        });
        true
    }

    /// The fast path of `Signal` waking the one waiter of a notification,
    /// of higher priority, that can run at once on this core. Same outcome
    /// as `ipc::signal`, the reply, then `schedule`; returns false, having
    /// changed nothing, when a condition does not hold.
    fn fast_signal(&mut self, core: usize, signaller: ThreadRef) -> bool {
        let Some(FastMessage {
            capability:
                Capability::Notification {
                    object: notification,
                    badge,
                    rights,
                },
            priority,
            ..
        }) = self.fast_message(signaller)
        else {
            return false;
        };
        if !rights.contains(Rights::WRITE) {
            return false;
        }
        if !self.fast_wake(core, notification, badge, Some((signaller, priority))) {
            return false;
        }
        if let Some(tcb) = self.store.tcb_mut(signaller) {
            write_empty_reply(&mut tcb.context);
        }
        true
    }

    /// The fast path of `Yield` when no other thread of the caller's
    /// priority (or higher) is ready on its core: it keeps running with a
    /// fresh timeslice, exactly as the general path decides.
    fn fast_yield(&mut self, core: usize, thread: ThreadRef) -> bool {
        let highest = self.scheduler.highest_priority(core);
        let Some(tcb) = self.store.tcb_mut(thread) else {
            return false;
        };
        if tcb.affinity != core || highest.is_some_and(|highest| highest >= tcb.priority) {
            return false;
        }
        write_empty_reply(&mut tcb.context);
        self.cores[core].timeslice = Timeslice::default();
        true
    }

    /// Wakes the one thread waiting on `notification` with `badge` and
    /// switches `core` to it, when it can run at once there ahead of
    /// `running` (the thread the core ran, with its priority; it goes back
    /// to the front of its run queue), as `ipc::signal` then `schedule`
    /// would. Returns false, having changed nothing, otherwise.
    fn fast_wake(
        &mut self,
        core: usize,
        notification: ObjectRef,
        badge: u64,
        running: Option<(ThreadRef, u8)>,
    ) -> bool {
        let Some((waiter, word)) = self.store.notification(notification).and_then(|object| {
            let head = object.waiters.head()?;
            (object.waiters.tail() == Some(head)).then_some((head, object.word))
        }) else {
            return false;
        };
        let highest = self.scheduler.highest_priority(core);
        let eligible = self.store.tcb(waiter).is_some_and(|tcb| {
            tcb.state == ThreadState::BlockedOnNotification { notification }
                && tcb.links == Links::ALONE
                && running.is_none_or(|(_, priority)| tcb.priority > priority)
                && runs_next_here(tcb, core, highest)
        });
        if !eligible {
            return false;
        }
        if let Some((thread, _)) = running
            && self
                .scheduler
                .enqueue_front(&mut self.store, thread)
                .is_err()
        {
            return false;
        }
        // From here on nothing can be refused.
        if let Some(object) = self.store.notification_mut(notification) {
            object.word = 0;
            object.waiters = Queue::EMPTY;
        }
        let deliver = |tcb: &mut Tcb| {
            write_message(&mut tcb.context, &[], word | badge, MessageInfo::new(0, 0));
        };
        if let Some((thread, _)) = running {
            let _ = self.leave(thread, |_| {});
        }
        self.run_next(core, waiter, deliver);
        true
    }

    /// The fast path of a fault: the fault endpoint's one waiting receiver
    /// (the handler) can run at once on this core, so the message goes
    /// straight into its registers and the core switches to it. Same
    /// outcome as `ipc::send_fault` then `schedule`; returns false, having
    /// changed nothing, when a condition does not hold.
    fn fast_fault(&mut self, core: usize, thread: ThreadRef, message: &FaultMessage) -> bool {
        let Some((endpoint, badge)) = self.store.tcb(thread).and_then(|tcb| tcb.fault_endpoint)
        else {
            return false;
        };
        let Some((handler, alone)) = self.receiver_for(core, endpoint, None, true) else {
            return false;
        };
        if !self.take_receiver(endpoint, handler, alone) {
            return false;
        }
        let length = usize::from(message.length).min(message.words.len());
        let _ = self.leave(thread, |tcb| {
            tcb.pending_fault = Some(*message);
            tcb.state = ThreadState::BlockedOnReply;
            tcb.reply_holder = Some(handler);
        });
        self.run_next(core, handler, |tcb| {
            let info = MessageInfo::new(message.label, message.length);
            write_message(&mut tcb.context, &message.words[..length], badge, info);
            tcb.caller = Some(thread);
        });
        true
    }

    /// The receiver a message sent to `endpoint` goes to, when a fast path
    /// may take it: the first thread waiting to receive there, able to run
    /// at once on `core` (ahead of a running thread of priority `outranks`,
    /// if given) and, when the message pairs for a reply (`pairs`),
    /// holding no reply capability already. With whether it waits alone.
    /// Changes nothing.
    #[inline(always)]
    fn receiver_for(
        &self,
        core: usize,
        endpoint: ObjectRef,
        outranks: Option<u8>,
        pairs: bool,
    ) -> Option<(ThreadRef, bool)> {
        let object = self
            .store
            .endpoint(endpoint)
            .filter(|object| object.state == ipc::EndpointState::Receiving)?;
        let receiver = object.queue.head()?;
        let alone = object.queue.tail() == Some(receiver);
        let highest = self.scheduler.highest_priority(core);
        self.store
            .tcb(receiver)
            .is_some_and(|tcb| {
                tcb.state == ThreadState::BlockedOnReceive { endpoint }
                    && (!alone || tcb.links == Links::ALONE)
                    && (!pairs || tcb.caller.is_none())
                    && outranks.is_none_or(|priority| tcb.priority > priority)
                    && runs_next_here(tcb, core, highest)
            })
            .then_some((receiver, alone))
    }

    /// Takes `receiver`, the first in `endpoint`'s queue, out of it; a lone
    /// receiver leaves the endpoint idle (this cannot fail; its links are
    /// reset by [`Kernel::run_next`], which writes its TCB anyway). False,
    /// with nothing changed, on inconsistent queue links.
    #[inline(always)]
    fn take_receiver(&mut self, endpoint: ObjectRef, receiver: ThreadRef, alone: bool) -> bool {
        if !alone {
            return ipc::dequeue_first(&mut self.store, endpoint) == Ok(receiver);
        }
        if let Some(object) = self.store.endpoint_mut(endpoint) {
            *object = ipc::Endpoint::default();
        }
        true
    }

    /// The first half of every fast path that switches threads: `from`
    /// stops running on its core, with `update`; returns the message words
    /// it holds (`x0..x7`), read in the same lookup (unused, they cost
    /// nothing: the function is inlined).
    #[inline(always)]
    fn leave(
        &mut self,
        from: ThreadRef,
        update: impl FnOnce(&mut Tcb),
    ) -> [u64; REGISTER_MESSAGE_WORDS] {
        let mut words = [0; REGISTER_MESSAGE_WORDS];
        if let Some(tcb) = self.store.tcb_mut(from) {
            // Element by element: the compiler keeps a fixed copy of eight
            // words in registers, where `copy_from_slice` calls memcpy.
            let x = &tcb.context.x;
            words = [x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]];
            update(tcb);
            tcb.running = false;
        }
        words
    }

    /// The end of every fast path that switches threads (after
    /// [`Kernel::leave`] of the thread that ran, if one did): `to`, taken
    /// out of its queue, gets what `deliver` writes and becomes `core`'s
    /// running thread with a fresh timeslice.
    #[inline(always)]
    fn run_next(&mut self, core: usize, to: ThreadRef, deliver: impl FnOnce(&mut Tcb)) {
        if let Some(tcb) = self.store.tcb_mut(to) {
            deliver(tcb);
            tcb.links = Links::UNQUEUED;
            tcb.state = ThreadState::Runnable;
            tcb.running = true;
        }
        if let Some(state) = self.cores.get_mut(core) {
            state.current = Some(to);
            state.timeslice = Timeslice::default();
        }
    }

    /// The fast path of `Call` on an endpoint where a receiver waits that
    /// can run at once on this core: the message goes straight into the
    /// receiver's registers and the core switches to it, with the same
    /// outcome as the general path (`ipc::send`, then `schedule`). Returns
    /// false, having changed nothing, when any condition does not hold.
    fn fast_call(&mut self, core: usize, caller: ThreadRef) -> bool {
        let Some(FastMessage {
            info,
            capability:
                Capability::Endpoint {
                    object: endpoint,
                    badge,
                    rights,
                },
            ..
        }) = self.fast_message(caller)
        else {
            return false;
        };
        if !rights.contains(Rights::WRITE.union(Rights::GRANT_REPLY)) {
            return false;
        }
        let Some((receiver, alone)) = self.receiver_for(core, endpoint, None, true) else {
            return false;
        };
        if !self.take_receiver(endpoint, receiver, alone) {
            return false;
        }
        // From here on nothing can be refused.
        let length = usize::from(info.length);
        let words = self.leave(caller, |tcb| {
            tcb.state = ThreadState::BlockedOnReply;
            tcb.reply_holder = Some(receiver);
        });
        self.run_next(core, receiver, |tcb| {
            write_message(&mut tcb.context, &words[..length], badge, info);
            tcb.caller = Some(caller);
        });
        true
    }

    /// The fast path of `ReplyRecv`: the reply goes straight into the
    /// registers of the waiting caller, which can run at once on this core,
    /// and the replier waits on an endpoint where no sender is queued.
    /// Returns false, having changed nothing, when a condition does not
    /// hold.
    fn fast_reply_receive(&mut self, core: usize, replier: ThreadRef) -> bool {
        // Read everything first, one lookup per object; write only when
        // every condition holds.
        let Some(FastMessage {
            info,
            capability:
                Capability::Endpoint {
                    object: endpoint,
                    rights,
                    ..
                },
            caller: Some(caller),
            bound: false,
            ..
        }) = self.fast_message(replier)
        else {
            return false;
        };
        if !rights.contains(Rights::READ) {
            return false;
        }
        let highest = self.scheduler.highest_priority(core);
        let Some((fault, vcpu)) = self.store.tcb(caller).and_then(|tcb| {
            (tcb.state == ThreadState::BlockedOnReply
                && tcb.reply_holder == Some(replier)
                && runs_next_here(tcb, core, highest))
            .then_some((tcb.pending_fault.is_some(), tcb.vcpu.is_some()))
        }) else {
            return false;
        };
        // A reply to a fault resumes the thread with label 0 (or an
        // injection, for a VCPU); a reply that stops it takes the general
        // path.
        if fault
            && info.label != hyp_abi::fault::exit_reply::RESUME
            && (info.label > hyp_abi::fault::exit_reply::INJECT_UNDEFINED || !vcpu)
        {
            return false;
        }
        // No sender may be queued: the receive would take it at once.
        let Some(state) = self.store.endpoint(endpoint).map(|object| object.state) else {
            return false;
        };
        if state == ipc::EndpointState::Sending {
            return false;
        }
        let words = if state == ipc::EndpointState::Idle {
            // The first receiver: the endpoint's queue is just this thread.
            if let Some(object) = self.store.endpoint_mut(endpoint) {
                *object = ipc::Endpoint {
                    state: ipc::EndpointState::Receiving,
                    queue: Queue::of_one(replier),
                };
            }
            self.leave(replier, |tcb| {
                tcb.links = Links::ALONE;
                tcb.state = ThreadState::BlockedOnReceive { endpoint };
                tcb.caller = None;
            })
        } else {
            if let Some(tcb) = self.store.tcb_mut(replier) {
                tcb.state = ThreadState::BlockedOnReceive { endpoint };
            }
            if ipc::enqueue_waiter(
                &mut self.store,
                endpoint,
                replier,
                ipc::EndpointState::Receiving,
            )
            .is_err()
            {
                if let Some(tcb) = self.store.tcb_mut(replier) {
                    tcb.state = ThreadState::Runnable;
                }
                return false;
            }
            self.leave(replier, |tcb| tcb.caller = None)
        };
        // From here on nothing can be refused.
        let length = usize::from(info.length);
        self.run_next(core, caller, |tcb| {
            let Tcb {
                context,
                pending_fault,
                injection,
                reply_holder,
                ..
            } = tcb;
            if let Some(fault) = pending_fault {
                // The faulted thread's registers stay, but for what the
                // reply sets (exit::apply_reply).
                ipc::apply_fault_reply_to(context, injection, fault, info.label, &words[..length]);
                *pending_fault = None;
            } else {
                write_message(context, &words[..length], 0, info);
            }
            *reply_holder = None;
        });
        true
    }

    /// The current thread of `core` faulted (its registers are saved).
    pub fn fault(&mut self, core: usize, fault: UserFault) -> Effects {
        let mut effects = Effects::default();
        self.fault_into(core, fault, &mut effects);
        effects
    }

    /// [`Kernel::fault`], adding its effects to `effects`.
    pub fn fault_into(&mut self, core: usize, fault: UserFault, effects: &mut Effects) {
        let Some(thread) = self.current(core) else {
            return;
        };
        let pc = self.context(thread).map_or(0, |context| context.pc);
        let message = match fault {
            UserFault::Memory {
                address,
                instruction,
                status,
            } => FaultMessage {
                label: FaultLabel::MemoryFault as u64,
                words: [pc, address, u64::from(instruction), status, 0, 0, 0, 0],
                length: memory_fault::LENGTH,
            },
            UserFault::Instruction { syndrome } => FaultMessage {
                label: FaultLabel::UndefinedInstruction as u64,
                words: [pc, syndrome, 0, 0, 0, 0, 0, 0],
                length: instruction_fault::LENGTH,
            },
        };
        self.deliver_fault(core, thread, &message, effects);
    }

    /// A timer tick on `core` at system count `now`: the current thread's
    /// timeslice shrinks, and VCPUs waiting in `WFI` whose virtual timer
    /// is due but not in this core's registers wake.
    pub fn tick(&mut self, core: usize, now: u64) -> Effects {
        let mut effects = Effects::default();
        if let Some(state) = self.cores.get_mut(core) {
            state.timeslice.tick();
        }
        self.wake_due_sleepers(core, now, &mut effects);
        self.schedule(core, &mut effects);
        effects
    }

    /// Interrupt `irq` arrived on `core` (the arch layer has masked it).
    pub fn interrupt(&mut self, core: usize, irq: u16) -> Effects {
        let mut effects = Effects::default();
        self.interrupt_into(core, irq, &mut effects);
        effects
    }

    /// [`Kernel::interrupt`], adding its effects to `effects`.
    pub fn interrupt_into(&mut self, core: usize, irq: u16, effects: &mut Effects) {
        if self.fastpath && self.fast_interrupt(core, irq) {
            return;
        }
        match irq::raise(&mut self.store, &mut self.scheduler, irq) {
            Ok(irq::Raised::Signalled) => self.kick_all_others(core, effects),
            Ok(irq::Raised::Unhandled) => effects.notice = Some(Notice::UnhandledIrq { irq }),
            Err(error) => {
                refused(error, effects);
            }
        }
        self.schedule(core, effects);
    }

    /// The fast path of an interrupt whose notification has one waiter
    /// that can run at once on this core: as `irq::raise` then `schedule`.
    fn fast_interrupt(&mut self, core: usize, irq: u16) -> bool {
        let Some(&irq::IrqEntry {
            claimed: true,
            notification: Some((notification, badge)),
            ..
        }) = self.store.irqs().entries.get(usize::from(irq))
        else {
            return false;
        };
        // The running thread, if it is still running (it is preempted).
        let running = self.current(core).and_then(|thread| {
            let tcb = self.store.tcb(thread)?;
            (tcb.state == ThreadState::Runnable && !tcb.links.queued)
                .then_some((thread, tcb.priority))
        });
        if self.current(core).is_some() && running.is_none() {
            return false;
        }
        let badge = if badge == 0 { 1 } else { badge };
        if !self.fast_wake(core, notification, badge, running) {
            return false;
        }
        if let Some(entry) = self.store.irqs_mut().entries.get_mut(usize::from(irq)) {
            entry.waiting_for_ack = true;
        }
        true
    }

    /// Re-decides what `core` runs: the current thread unless it stopped
    /// running, moved to another core, ran out of its timeslice while
    /// another thread of its priority is ready, or a higher priority is
    /// ready. Called at the end of every kernel entry.
    pub fn schedule(&mut self, core: usize, effects: &mut Effects) {
        if core >= MAX_CORES {
            return;
        }
        if let Some(thread) = self.cores[core].current {
            let tcb = self.store.tcb(thread).map(|tcb| Scheduling {
                state: tcb.state,
                queued: tcb.links.queued,
                affinity: tcb.affinity,
                priority: tcb.priority,
            });
            let keep = match tcb {
                Some(tcb) if tcb.state == ThreadState::Runnable && !tcb.queued => {
                    if tcb.affinity != core {
                        // Moved away: it runs on its new core.
                        if self.scheduler.enqueue(&mut self.store, thread).is_err() {
                            effects.notice = Some(Notice::Inconsistent("run queue"));
                        }
                        if tcb.affinity < MAX_CORES {
                            effects.kick_cores |= 1 << tcb.affinity;
                        }
                        false
                    } else if self.scheduler.should_preempt(core, tcb.priority) {
                        if self
                            .scheduler
                            .enqueue_front(&mut self.store, thread)
                            .is_err()
                        {
                            effects.notice = Some(Notice::Inconsistent("run queue"));
                        }
                        false
                    } else if self.cores[core].timeslice.is_expired()
                        && self.scheduler.highest_priority(core) == Some(tcb.priority)
                    {
                        if self.scheduler.enqueue(&mut self.store, thread).is_err() {
                            effects.notice = Some(Notice::Inconsistent("run queue"));
                        }
                        false
                    } else {
                        true
                    }
                }
                _ => false,
            };
            if keep {
                if self.cores[core].timeslice.is_expired() {
                    self.cores[core].timeslice.refill();
                }
                return;
            }
        }
        let next = match self.scheduler.pick_next(&mut self.store, core) {
            Ok(next) => next,
            Err(_) => {
                effects.notice = Some(Notice::Inconsistent("run queue"));
                None
            }
        };
        if let Some(previous) = self.cores[core].current
            && let Some(tcb) = self.store.tcb_mut(previous)
        {
            tcb.running = false;
        }
        if let Some(tcb) = next.and_then(|thread| self.store.tcb_mut(thread)) {
            tcb.running = true;
        }
        self.cores[core].current = next;
        self.cores[core].timeslice = Timeslice::default();
        // Threads woken for other cores: let those cores decide.
        for other in 0..self.online {
            if other == core {
                continue;
            }
            let running = self.cores[other]
                .current
                .and_then(|thread| self.store.tcb(thread))
                .map(|tcb| tcb.priority);
            let wake = match running {
                Some(priority) => self.scheduler.should_preempt(other, priority),
                None => self.scheduler.highest_priority(other).is_some(),
            };
            if wake {
                effects.kick_cores |= 1 << other;
            }
        }
    }
}

mod guest;
pub use guest::{VIRTUAL_TIMER_PRIORITY, VcpuSwitch};

#[cfg(test)]
mod tests;
