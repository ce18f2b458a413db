//! Kernel benchmarks, run by the root task in a benchmark build
//! (`cargo xtask bench`: init's `bench` feature, hyp's `bench` feature
//! that lets EL0 read the cycle counter, QEMU `-icount shift=0` so one
//! tick is one instruction).
//!
//! Each benchmark runs its operation many times, measures every iteration
//! with the cycle counter, and reports the median with the cost of reading
//! the counter itself subtracted. The threads live in init's CSpace; the
//! IPC server of the `Call`/`ReplyRecv` benchmark has an address space of
//! its own, the others share init's (they exchange time stamps through
//! statics).

use core::sync::atomic::{AtomicU64, Ordering};

use hyp_abi::{
    MessageInfo, ObjectType, Rights, Syscall, frame_attributes, initial_slots, user_layout,
};
use hyp_user::cycles;
use hyp_user::syscall::{raw_syscall, syscall};
use hyp_user::timer;
use hyp_user::{
    BootInfo, CNode, Endpoint, Frame, IrqControl, IrqHandler, Notification, PageTable, Tcb,
    Untyped, VSpace, println,
};

use crate::slots::SlotAllocator;

/// Iterations per benchmark.
const ITERATIONS: usize = 201;
/// Where the benchmark threads' stacks go in init's address space.
const STACK_REGION: u64 = 0x1000_0000;
/// Pages of stack per thread.
const STACK_PAGES: u64 = 4;
const PAGE: u64 = 4096;

/// Measurements one thread leaves for another.
static SAMPLES: [AtomicU64; ITERATIONS] = [const { AtomicU64::new(0) }; ITERATIONS];
/// A time stamp taken just before an operation, read on the other side.
static STAMP: AtomicU64 = AtomicU64::new(0);

/// A benchmark could not be set up.
#[derive(Debug)]
pub(crate) struct SetupError(&'static str, hyp_abi::Error);

impl core::fmt::Display for SetupError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(formatter, "{}: {}", self.0, self.1)
    }
}

fn step(what: &'static str) -> impl FnOnce(hyp_abi::Error) -> SetupError {
    move |error| SetupError(what, error)
}

struct Kit<'a> {
    untyped: Untyped,
    slots: &'a mut SlotAllocator,
    root: CNode,
    next_stack: u64,
}

impl Kit<'_> {
    fn object(&mut self, kind: ObjectType, what: &'static str) -> Result<u64, SetupError> {
        let slot = self
            .slots
            .allocate()
            .map_err(|_| SetupError(what, hyp_abi::Error::IllegalOperation))?;
        self.untyped
            .retype(kind, 0, self.root, slot, 1)
            .map_err(step(what))?;
        Ok(slot)
    }

    /// Maps fresh read-write pages `[address, address + pages * 4 KiB)` in
    /// `vspace`, linking page tables where the walk has none.
    fn map_pages(&mut self, vspace: VSpace, address: u64, pages: u64) -> Result<(), SetupError> {
        for page in 0..pages {
            let frame = Frame::new(self.object(ObjectType::Frame4K, "retype a stack frame")?);
            let at = address + page * PAGE;
            loop {
                match frame.map(vspace, at, Rights::READ.union(Rights::WRITE), 0) {
                    Ok(()) => break,
                    Err(hyp_abi::Error::LookupFailed { .. }) => {
                        let table = PageTable::new(
                            self.object(ObjectType::PageTable, "retype a page table")?,
                        );
                        table.map(vspace, at).map_err(step("map a page table"))?;
                    }
                    Err(error) => return Err(SetupError("map a stack frame", error)),
                }
            }
        }
        Ok(())
    }

    /// A thread running `entry(argument)` at `priority` in init's CSpace,
    /// in `vspace` (init's own, or a new one that has init's image), with
    /// a fresh stack, and `fault_endpoint` as its fault handler.
    fn thread(
        &mut self,
        entry: extern "C" fn(u64, u64) -> !,
        arguments: [u64; 2],
        priority: u8,
        vspace: VSpace,
        fault_endpoint: Option<Endpoint>,
    ) -> Result<Tcb, SetupError> {
        let tcb = Tcb::new(self.object(ObjectType::Tcb, "retype a TCB")?);
        let bottom = self.next_stack;
        self.next_stack += (STACK_PAGES + 1) * PAGE; // a guard page between stacks
        self.map_pages(vspace, bottom, STACK_PAGES)?;
        tcb.configure(fault_endpoint, priority, self.root, vspace)
            .map_err(step("configure a thread"))?;
        tcb.write_registers(
            entry as usize as u64,
            bottom + STACK_PAGES * PAGE,
            &arguments,
        )
        .map_err(step("set a thread's registers"))?;
        tcb.resume().map_err(step("resume a thread"))?;
        Ok(tcb)
    }

    /// A new VSpace with init's image mapped read-only and executable at
    /// the same addresses.
    fn vspace_with_image(&mut self, boot_info: &BootInfo<'_>) -> Result<VSpace, SetupError> {
        let vspace = VSpace::new(self.object(ObjectType::VSpace, "retype a VSpace")?);
        for index in 0..boot_info.image_frames() {
            let copy = self
                .slots
                .allocate()
                .map_err(|_| SetupError("slots", hyp_abi::Error::IllegalOperation))?;
            self.root
                .copy(
                    copy,
                    self.root,
                    boot_info.first_image_frame_slot() + index,
                    Rights::READ,
                )
                .map_err(step("copy an image frame"))?;
            let at = user_layout::IMAGE_BASE + index * PAGE;
            loop {
                match Frame::new(copy).map(vspace, at, Rights::READ, frame_attributes::EXECUTABLE) {
                    Ok(()) => break,
                    Err(hyp_abi::Error::LookupFailed { .. }) => {
                        let table = PageTable::new(
                            self.object(ObjectType::PageTable, "retype a page table")?,
                        );
                        table.map(vspace, at).map_err(step("map a page table"))?;
                    }
                    Err(error) => return Err(SetupError("map an image frame", error)),
                }
            }
        }
        Ok(vspace)
    }
}

fn median(samples: &mut [u64]) -> u64 {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// The cost of reading the counter twice in a row: subtracted from every
/// measurement.
fn counter_overhead() -> u64 {
    let mut samples = [0u64; ITERATIONS];
    for sample in &mut samples {
        let start = cycles::now();
        let end = cycles::now();
        *sample = end - start;
    }
    median(&mut samples)
}

fn collected() -> [u64; ITERATIONS] {
    let mut samples = [0; ITERATIONS];
    for (sample, shared) in samples.iter_mut().zip(&SAMPLES) {
        *sample = shared.load(Ordering::Acquire);
    }
    samples
}

fn report(name: &str, mut samples: [u64; ITERATIONS], overhead: u64, sel4: Option<u64>) {
    // The first iteration warms caches and TLBs: leave it out.
    let middle = median(&mut samples[1..]).saturating_sub(overhead);
    match sel4 {
        Some(sel4) => {
            let verdict = if middle <= sel4 { "better" } else { "worse" };
            println!("bench: {name:<34} {middle:>6} instructions   (seL4 {sel4:>5}: {verdict})");
        }
        None => println!("bench: {name:<34} {middle:>6} instructions"),
    }
}

// ---------------------------------------------------------------------------
// Thread bodies.

#[inline(always)]
fn raw(
    number: Syscall,
    capability: u64,
    info: MessageInfo,
    words: [u64; 8],
) -> hyp_user::syscall::RawReply {
    syscall(number, capability, info, words, [0; 3])
}

/// The IPC server: answers each call with the time stamp taken just
/// before its `ReplyRecv` and the one-way `Call` time it measured.
extern "C" fn ipc_server(endpoint: u64, _: u64) -> ! {
    let mut reply = [0u64; 8];
    let mut info = MessageInfo::new(0, 0);
    let mut first = true;
    loop {
        let received = if first {
            first = false;
            raw(Syscall::Recv, endpoint, MessageInfo::new(0, 0), [0; 8])
        } else {
            reply[0] = cycles::now();
            raw(Syscall::ReplyRecv, endpoint, info, reply)
        };
        let arrived = cycles::now();
        reply[1] = arrived.wrapping_sub(received.words[0]);
        info = MessageInfo::new(0, 2);
    }
}

/// Receives `ITERATIONS` messages at high priority, recording how long
/// each took from the sender's stamp; then reports to init.
extern "C" fn high_receiver(endpoint: u64, done: u64) -> ! {
    for sample in &SAMPLES {
        let received = raw(Syscall::Recv, endpoint, MessageInfo::new(0, 0), [0; 8]);
        let arrived = cycles::now();
        sample.store(arrived.wrapping_sub(received.words[0]), Ordering::Release);
    }
    // Init never answers: the thread stays blocked for good.
    raw(Syscall::Call, done, MessageInfo::new(0, 0), [0; 8]);
    parked(0)
}

/// Sends `ITERATIONS` time-stamped messages at low priority.
extern "C" fn low_sender(endpoint: u64, park: u64) -> ! {
    for _ in 0..ITERATIONS {
        let mut words = [0u64; 8];
        words[0] = cycles::now();
        raw(Syscall::Send, endpoint, MessageInfo::new(0, 1), words);
    }
    parked(park)
}

/// Blocks for good on an endpoint nobody sends to.
fn parked(park: u64) -> ! {
    loop {
        raw(Syscall::Recv, park, MessageInfo::new(0, 0), [0; 8]);
    }
}

/// Waits for `ITERATIONS` signals at high priority.
extern "C" fn high_waiter(notification: u64, done: u64) -> ! {
    for sample in &SAMPLES {
        raw(Syscall::Wait, notification, MessageInfo::new(0, 0), [0; 8]);
        let arrived = cycles::now();
        sample.store(
            arrived.wrapping_sub(STAMP.load(Ordering::Acquire)),
            Ordering::Release,
        );
    }
    // Init never answers: the thread stays blocked for good.
    raw(Syscall::Call, done, MessageInfo::new(0, 0), [0; 8]);
    parked(0)
}

/// Signals at low priority, stamping the time first.
extern "C" fn low_signaller(notification: u64, park: u64) -> ! {
    for _ in 0..ITERATIONS {
        STAMP.store(cycles::now(), Ordering::Release);
        raw(
            Syscall::Signal,
            notification,
            MessageInfo::new(0, 0),
            [0; 8],
        );
    }
    parked(park)
}

/// Faults `ITERATIONS` times; its handler moves it past the instruction.
extern "C" fn faulter(done: u64, _: u64) -> ! {
    for sample in &SAMPLES {
        let start = cycles::now();
        cycles::undefined_instruction_and_continue();
        let end = cycles::now();
        sample.store(end - start, Ordering::Release);
    }
    // Init never answers: the thread stays blocked for good.
    raw(Syscall::Call, done, MessageInfo::new(0, 0), [0; 8]);
    parked(0)
}

/// The fault handler: resumes the faulter after the faulting instruction.
extern "C" fn fault_handler(endpoint: u64, _: u64) -> ! {
    let mut received = raw(Syscall::Recv, endpoint, MessageInfo::new(0, 0), [0; 8]);
    loop {
        let mut words = [0u64; 8];
        words[0] = received.words[0] + 4;
        received = raw(Syscall::ReplyRecv, endpoint, MessageInfo::new(0, 1), words);
    }
}

/// Spins at low priority, stamping the cycle counter as fast as it can:
/// the interrupt lands between two stamps.
extern "C" fn spinner(_: u64, _: u64) -> ! {
    loop {
        STAMP.store(cycles::now(), Ordering::Release);
    }
}

/// Takes `ITERATIONS` virtual-timer interrupts through its handler
/// capability and notification, measuring from the spinner's last stamp
/// to its own wake-up.
extern "C" fn interrupt_handler(handler_and_notification: u64, done: u64) -> ! {
    let handler = IrqHandler::new(handler_and_notification & 0xffff_ffff);
    let notification = Notification::new(handler_and_notification >> 32);
    // A short while: long enough for the spinner to run again.
    let delay = (timer::frequency() / 10_000).max(1);
    for sample in &SAMPLES {
        timer::start(timer::count() + delay);
        raw(
            Syscall::Wait,
            notification.pointer(),
            MessageInfo::new(0, 0),
            [0; 8],
        );
        let arrived = cycles::now();
        sample.store(
            arrived.wrapping_sub(STAMP.load(Ordering::Acquire)),
            Ordering::Release,
        );
        timer::stop();
        let _ = handler.acknowledge();
    }
    raw(Syscall::Call, done, MessageInfo::new(0, 0), [0; 8]);
    parked(0)
}

// ---------------------------------------------------------------------------

/// Runs every benchmark and prints the table.
pub(crate) fn run(boot_info: &BootInfo<'_>, slots: &mut SlotAllocator) -> Result<(), SetupError> {
    let untyped = boot_info
        .untyped_descriptors()
        .filter(|descriptor| !descriptor.device && descriptor.size_bits >= 22)
        .map(|descriptor| Untyped::new(descriptor.slot))
        .next()
        .ok_or(SetupError(
            "find 4 MiB of untyped memory",
            hyp_abi::Error::IllegalOperation,
        ))?;
    let root = CNode::new(initial_slots::CNODE);
    let own = VSpace::new(initial_slots::VSPACE);
    let mut kit = Kit {
        untyped,
        slots,
        root,
        next_stack: STACK_REGION,
    };
    let overhead = counter_overhead();
    println!("bench: counter read overhead {overhead} instructions (subtracted)");

    // Yield with nobody else to run.
    let mut samples = [0u64; ITERATIONS];
    for sample in &mut samples {
        let start = cycles::now();
        raw(Syscall::Yield, 0, MessageInfo::new(0, 0), [0; 8]);
        *sample = cycles::now() - start;
    }
    report("Yield", samples, overhead, Some(365));

    // Poll of an empty notification: the cheapest system call that does
    // a capability lookup.
    let notification = kit.object(ObjectType::Notification, "retype a notification")?;
    for sample in &mut samples {
        let start = cycles::now();
        raw(Syscall::Poll, notification, MessageInfo::new(0, 0), [0; 8]);
        *sample = cycles::now() - start;
    }
    report("Poll (nothing pending)", samples, overhead, None);

    // The null system call: a number the kernel does not know, answered
    // with an error (entry, decode, reply, exit).
    for sample in &mut samples {
        let start = cycles::now();
        raw_syscall(0x1ff, 0, MessageInfo::new(0, 0), [0; 8], [0; 3]);
        *sample = cycles::now() - start;
    }
    report("null syscall (unknown number)", samples, overhead, Some(91));

    // Call and ReplyRecv between two address spaces, same priority.
    let endpoint = kit.object(ObjectType::Endpoint, "retype an endpoint")?;
    let server_space = kit.vspace_with_image(boot_info)?;
    kit.thread(ipc_server, [endpoint, 0], 255, server_space, None)?;
    let mut calls = [0u64; ITERATIONS];
    let mut replies = [0u64; ITERATIONS];
    for (call, reply) in calls.iter_mut().zip(&mut replies) {
        let mut words = [0u64; 8];
        words[0] = cycles::now();
        let answer = raw(Syscall::Call, endpoint, MessageInfo::new(0, 1), words);
        let back = cycles::now();
        *call = answer.words[1];
        *reply = back.wrapping_sub(answer.words[0]);
    }
    report(
        "Call one-way (two address spaces)",
        calls,
        overhead,
        Some(208),
    );
    report("ReplyRecv one-way", replies, overhead, Some(232));

    let done = kit.object(ObjectType::Endpoint, "retype an endpoint")?;
    let park = kit.object(ObjectType::Endpoint, "retype an endpoint")?;

    // Send from low to high priority.
    let channel = kit.object(ObjectType::Endpoint, "retype an endpoint")?;
    kit.thread(high_receiver, [channel, done], 200, own, None)?;
    kit.thread(low_sender, [channel, park], 100, own, None)?;
    raw(Syscall::Recv, done, MessageInfo::new(0, 0), [0; 8]);
    report(
        "Send low -> high priority",
        collected(),
        overhead,
        Some(647),
    );

    // Signal waking a higher-priority thread.
    let signals = kit.object(ObjectType::Notification, "retype a notification")?;
    kit.thread(high_waiter, [signals, done], 210, own, None)?;
    kit.thread(low_signaller, [signals, park], 110, own, None)?;
    raw(Syscall::Recv, done, MessageInfo::new(0, 0), [0; 8]);
    report(
        "Signal waking a higher priority",
        collected(),
        overhead,
        Some(569),
    );

    // Fault round trip: fault -> handler -> reply -> resume.
    let faults = kit.object(ObjectType::Endpoint, "retype an endpoint")?;
    kit.thread(fault_handler, [faults, 0], 220, own, None)?;
    kit.thread(faulter, [done, 0], 120, own, Some(Endpoint::new(faults)))?;
    raw(Syscall::Recv, done, MessageInfo::new(0, 0), [0; 8]);
    report("fault round trip", collected(), overhead, Some(1173));

    // A physical interrupt (the physical timer's PPI) to a user-level
    // handler thread, from the interrupted spinner's last instruction.
    let handler_slot = kit
        .slots
        .allocate()
        .map_err(|_| SetupError("slots", hyp_abi::Error::IllegalOperation))?;
    IrqControl::new(initial_slots::IRQ_CONTROL)
        .get(timer::TIMER_IRQ, root, handler_slot)
        .map_err(step("get the timer's IRQ handler"))?;
    let interrupts = kit.object(ObjectType::Notification, "retype a notification")?;
    IrqHandler::new(handler_slot)
        .set_notification(Notification::new(interrupts))
        .map_err(step("set the handler's notification"))?;
    let spinning = kit.thread(spinner, [0, 0], 50, own, None)?;
    kit.thread(
        interrupt_handler,
        [handler_slot | (interrupts << 32), done],
        230,
        own,
        None,
    )?;
    raw(Syscall::Recv, done, MessageInfo::new(0, 0), [0; 8]);
    let _ = spinning.suspend();
    report(
        "IRQ to a user handler thread",
        collected(),
        overhead,
        Some(352),
    );

    println!("bench: done");
    Ok(())
}
