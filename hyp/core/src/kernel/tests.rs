//! The kernel's entry points driven the way the arch layer drives them:
//! a root task built in the test arena makes system calls by setting its
//! saved registers and entering `Kernel::syscall`, exactly as `svc` would.
#![allow(
    clippy::cast_possible_truncation,
    reason = "test values are small by construction"
)]

use std::vec::Vec;

use hyp_abi::fault::FaultLabel;
use hyp_abi::{
    Error, InvocationLabel, MessageInfo, ObjectType, Rights, Syscall, boot_info, initial_slots,
    user_layout,
};

use super::*;
use crate::cspace::tests::Arena;
use crate::elf::{Image, MAX_SEGMENTS, Segment};
use crate::ipc::IpcStore;
use crate::object::ObjectStore;
use crate::root_task::{self, Region};

const CODE: &[u8] = &[0x1f, 0x20, 0x03, 0xd5];

fn image() -> Image<'static> {
    let mut segments = [None; MAX_SEGMENTS];
    segments[0] = Some(Segment {
        address: user_layout::IMAGE_BASE,
        data: CODE,
        memory_size: 0x1000,
        writable: false,
        executable: true,
    });
    segments[1] = Some(Segment {
        address: user_layout::IMAGE_BASE + 0x1000,
        data: &[],
        memory_size: 0x2000,
        writable: true,
        executable: false,
    });
    Image {
        entry: user_layout::IMAGE_BASE,
        segments,
    }
}

/// A kernel with the root task built from 64 MiB at 16 MiB, running on
/// core 0: built once, and each test gets a copy of it (building it was
/// most of what a test cost under Miri).
fn booted() -> (Kernel<Arena>, ThreadRef) {
    static BOOTED: std::sync::OnceLock<(Kernel<Arena>, ThreadRef)> = std::sync::OnceLock::new();
    let (kernel, thread) = BOOTED.get_or_init(boot);
    (copy_kernel(kernel), *thread)
}

/// A copy of `kernel`, field by field (the kernel itself is never copied,
/// so `Kernel` is not `Clone`).
fn copy_kernel(kernel: &Kernel<Arena>) -> Kernel<Arena> {
    let Kernel {
        store,
        scheduler,
        cores,
        online,
        irq_limit,
        reserved_irqs,
        vmids,
        next_vmid,
        fastpath,
    } = kernel;
    Kernel {
        store: store.clone(),
        scheduler: scheduler.clone(),
        cores: *cores,
        online: *online,
        irq_limit: *irq_limit,
        reserved_irqs: *reserved_irqs,
        vmids: *vmids,
        next_vmid: *next_vmid,
        fastpath: *fastpath,
    }
}

fn boot() -> (Kernel<Arena>, ThreadRef) {
    let mut kernel = Kernel::new(Arena::default(), 2, 256, [26, 25, 27]);
    let free = [Region {
        base: 0x100_0000,
        size: 0x400_0000,
    }];
    let thread = root_task::build(
        &mut kernel,
        &image(),
        &free,
        &[],
        &root_task::BootExtras::default(),
    )
    .unwrap();
    let mut effects = Effects::default();
    kernel.schedule(0, &mut effects);
    assert_eq!(kernel.current(0), Some(thread));
    (kernel, thread)
}

fn boot_word(kernel: &Kernel<Arena>, index: usize) -> u64 {
    let frame = match kernel
        .store
        .slot(SlotRef {
            cnode: root_cnode(kernel),
            index: initial_slots::BOOT_INFO_FRAME,
        })
        .unwrap()
        .capability
    {
        Capability::Frame { object, .. } => object,
        other => panic!("boot info slot holds {other:?}"),
    };
    let bytes = &kernel.store.written[&frame.0];
    u64::from_le_bytes(bytes[index * 8..index * 8 + 8].try_into().unwrap())
}

fn root_cnode(kernel: &Kernel<Arena>) -> ObjectRef {
    let thread = kernel.current(0).unwrap();
    match kernel.store.tcb(thread).unwrap().cspace_root {
        Capability::CNode { object, .. } => object,
        other => panic!("root CSpace is {other:?}"),
    }
}

/// What a system call returned to the thread.
#[derive(Debug, PartialEq)]
struct Returned {
    info: MessageInfo,
    words: [u64; 8],
    badge: u64,
}

impl Returned {
    fn error(&self) -> Option<Error> {
        if self.info.label == 0 {
            return None;
        }
        Error::decode(
            self.info.label,
            [self.words[0], self.words[1], self.words[2]],
        )
    }
}

/// Makes the current thread of `core` enter the kernel with `syscall`.
fn enter(
    kernel: &mut Kernel<Arena>,
    core: usize,
    syscall: u64,
    pointer: u64,
    info: MessageInfo,
    words: &[u64],
    extra: &[u64],
) -> (ThreadRef, Effects) {
    let thread = kernel.current(core).expect("a thread runs");
    let context = kernel.context_mut(thread).unwrap();
    context.x[..words.len()].copy_from_slice(words);
    context.x[8] = syscall;
    context.x[9] = pointer;
    context.x[10] = info.encode();
    for (index, pointer) in extra.iter().enumerate() {
        context.x[11 + index] = *pointer;
    }
    let effects = kernel.syscall(core);
    (thread, effects)
}

fn returned(kernel: &Kernel<Arena>, thread: ThreadRef) -> Returned {
    let context = kernel.context(thread).unwrap();
    let mut words = [0; 8];
    words.copy_from_slice(&context.x[..8]);
    Returned {
        info: MessageInfo::decode(context.x[10]).unwrap(),
        words,
        badge: context.x[9],
    }
}

/// An invocation by the current thread of core 0.
fn invoke(
    kernel: &mut Kernel<Arena>,
    pointer: u64,
    label: InvocationLabel,
    words: &[u64],
    extra: &[u64],
) -> Returned {
    let mut info = MessageInfo::new(label as u64, words.len() as u8);
    info.extra_capabilities = extra.len() as u8;
    let (thread, _) = enter(kernel, 0, Syscall::Call as u64, pointer, info, words, extra);
    returned(kernel, thread)
}

fn first_free(kernel: &Kernel<Arena>) -> u64 {
    boot_word(kernel, boot_info::FIRST_EMPTY_SLOT)
}

/// The slot of the largest untyped capability the root task got.
fn first_untyped(kernel: &Kernel<Arena>) -> u64 {
    let count = boot_word(kernel, boot_info::UNTYPED_COUNT);
    let largest = (0..count)
        .max_by_key(|index| {
            boot_word(
                kernel,
                boot_info::UNTYPED_DESCRIPTORS + 2 * *index as usize + 1,
            ) & 0xff
        })
        .unwrap();
    boot_word(kernel, boot_info::FIRST_UNTYPED_SLOT) + largest
}

/// `host` rounds of a loop, or `miri` under Miri (which interprets slowly).
fn rounds(host: u64, miri: u64) -> u64 {
    if cfg!(miri) { miri } else { host }
}

fn retype(kernel: &mut Kernel<Arena>, kind: ObjectType, size_bits: u64, slot: u64) {
    let untyped = first_untyped(kernel);
    let reply = invoke(
        kernel,
        untyped,
        InvocationLabel::UntypedRetype,
        &[kind as u64, size_bits, slot, 1],
        &[initial_slots::CNODE],
    );
    assert_eq!(reply.error(), None, "retype {kind:?}");
}

#[test]
fn the_root_task_gets_its_image_stack_and_all_memory() {
    let (kernel, thread) = booted();
    assert_eq!(boot_word(&kernel, 0), boot_info::MAGIC);
    assert_eq!(boot_word(&kernel, boot_info::CORES), 2);
    assert_eq!(boot_word(&kernel, boot_info::IMAGE_FRAMES), 3);
    assert_eq!(
        boot_word(&kernel, boot_info::IMAGE_END),
        user_layout::IMAGE_BASE + 0x3000
    );
    let context = kernel.context(thread).unwrap();
    assert_eq!(context.pc, user_layout::IMAGE_BASE);
    assert_eq!(context.sp, user_layout::STACK_TOP);
    assert_eq!(context.x[0], user_layout::BOOT_INFO);
    // The image is mapped with the segment's rights, the stack writable,
    // the boot info read-only.
    let vspace = kernel.store.tcb(thread).unwrap().vspace.unwrap();
    let code = vspace::translate(&kernel.store, vspace, user_layout::IMAGE_BASE).unwrap();
    assert!(code.executable && !code.rights.contains(Rights::WRITE));
    let data = vspace::translate(&kernel.store, vspace, user_layout::IMAGE_BASE + 0x2000).unwrap();
    assert!(!data.executable && data.rights.contains(Rights::WRITE));
    let stack = vspace::translate(&kernel.store, vspace, user_layout::STACK_TOP - 8).unwrap();
    assert!(stack.rights.contains(Rights::WRITE));
    let info = vspace::translate(&kernel.store, vspace, user_layout::BOOT_INFO).unwrap();
    assert!(!info.rights.contains(Rights::WRITE));
    assert_eq!(kernel.store.written[&code.physical], CODE);
    // Untyped memory: everything the root task's objects did not take,
    // no block overlapping another.
    let count = boot_word(&kernel, boot_info::UNTYPED_COUNT) as usize;
    let mut blocks: Vec<(u64, u64)> = (0..count)
        .map(|index| {
            let base = boot_word(&kernel, boot_info::UNTYPED_DESCRIPTORS + 2 * index);
            let bits = boot_word(&kernel, boot_info::UNTYPED_DESCRIPTORS + 2 * index + 1);
            (base, base + (1 << (bits & 0xff)))
        })
        .collect();
    blocks.sort_unstable();
    for pair in blocks.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "untyped blocks overlap: {pair:?}");
    }
    let total: u64 = blocks.iter().map(|(base, end)| end - base).sum();
    assert!(
        total > 0x400_0000 - 0x20_0000,
        "only {total:#x} bytes handed out"
    );
    assert_eq!(blocks.last().unwrap().1, 0x500_0000);
}

#[test]
fn bogus_requests_get_precise_errors_and_change_nothing() {
    let (mut kernel, thread) = booted();
    let before = kernel.store.clone();
    let untyped = first_untyped(&kernel);

    // An unknown syscall number.
    let (_, _) = enter(&mut kernel, 0, 77, 0, MessageInfo::new(0, 0), &[], &[]);
    assert_eq!(
        returned(&kernel, thread).error(),
        Some(Error::IllegalOperation)
    );
    // An empty slot.
    let reply = invoke(&mut kernel, 4000, InvocationLabel::TcbResume, &[], &[]);
    assert_eq!(
        reply.error(),
        Some(Error::InvalidCapability { argument: 0 })
    );
    // A pointer beyond the CNode's guard.
    let reply = invoke(&mut kernel, 1 << 40, InvocationLabel::TcbResume, &[], &[]);
    assert!(matches!(
        reply.error(),
        Some(Error::LookupFailed { argument: 0, .. })
    ));
    // A label the object does not have.
    let reply = invoke(&mut kernel, untyped, InvocationLabel::TcbResume, &[], &[]);
    assert_eq!(reply.error(), Some(Error::IllegalOperation));
    let reply = invoke(
        &mut kernel,
        untyped,
        InvocationLabel::UntypedRetype,
        &[],
        &[],
    );
    assert_eq!(reply.error(), Some(Error::Truncated));
    // A label nobody has.
    let (_, _) = enter(
        &mut kernel,
        0,
        Syscall::Call as u64,
        untyped,
        MessageInfo::new(999, 0),
        &[],
        &[],
    );
    assert_eq!(
        returned(&kernel, thread).error(),
        Some(Error::IllegalOperation)
    );
    // Out-of-range arguments: the object type, the destination slot.
    let reply = invoke(
        &mut kernel,
        untyped,
        InvocationLabel::UntypedRetype,
        &[42, 0, 100, 1],
        &[initial_slots::CNODE],
    );
    assert_eq!(
        reply.error(),
        Some(Error::RangeError {
            argument: 0,
            minimum: 0,
            maximum: ObjectType::Frame2M as u64
        })
    );
    let reply = invoke(
        &mut kernel,
        untyped,
        InvocationLabel::UntypedRetype,
        &[ObjectType::Endpoint as u64, 0, 1 << 12, 1],
        &[initial_slots::CNODE],
    );
    assert_eq!(
        reply.error(),
        Some(Error::RangeError {
            argument: 2,
            minimum: 0,
            maximum: (1 << 12) - 1
        })
    );
    // The destination CNode argument missing, or not a CNode.
    let reply = invoke(
        &mut kernel,
        untyped,
        InvocationLabel::UntypedRetype,
        &[ObjectType::Endpoint as u64, 0, 100, 1],
        &[],
    );
    assert_eq!(
        reply.error(),
        Some(Error::InvalidCapability { argument: 1 })
    );
    let reply = invoke(
        &mut kernel,
        untyped,
        InvocationLabel::UntypedRetype,
        &[ObjectType::Endpoint as u64, 0, 100, 1],
        &[initial_slots::TCB],
    );
    assert_eq!(
        reply.error(),
        Some(Error::InvalidCapability { argument: 1 })
    );
    // A priority above the caller's own is refused with the allowed range.
    let reply = invoke(
        &mut kernel,
        initial_slots::TCB,
        InvocationLabel::TcbSetPriority,
        &[256],
        &[],
    );
    assert_eq!(
        reply.error(),
        Some(Error::RangeError {
            argument: 0,
            minimum: 0,
            maximum: 255
        })
    );

    // Nothing but the thread's own registers changed.
    let mut after = kernel.store.clone();
    let context = before.tcb(thread).unwrap().context;
    after.tcb_mut(thread).unwrap().context = context;
    assert_eq!(after, before);
    assert_eq!(kernel.current(0), Some(thread), "the caller still runs");
}

/// Creates a thread in the root task's CSpace and VSpace at `priority`,
/// with `fault_endpoint` (a slot, or 0), and resumes it. Returns its slot.
fn spawn(kernel: &mut Kernel<Arena>, slot: u64, priority: u64, fault_endpoint: u64) -> ObjectRef {
    retype(kernel, ObjectType::Tcb, 0, slot);
    let reply = invoke(
        kernel,
        slot,
        InvocationLabel::TcbConfigure,
        &[fault_endpoint, priority],
        &[initial_slots::CNODE, initial_slots::VSPACE],
    );
    assert_eq!(reply.error(), None, "configure");
    let reply = invoke(kernel, slot, InvocationLabel::TcbResume, &[], &[]);
    assert_eq!(reply.error(), None, "resume");
    match kernel
        .store
        .slot(SlotRef {
            cnode: root_cnode(kernel),
            index: slot,
        })
        .unwrap()
        .capability
    {
        Capability::Tcb { object } => object,
        other => panic!("{other:?}"),
    }
}

#[test]
fn call_and_reply_recv_carry_messages_and_badges_between_threads() {
    let (mut kernel, root) = booted();
    let free = first_free(&kernel);
    let endpoint = free;
    let badged = free + 1;
    retype(&mut kernel, ObjectType::Endpoint, 0, endpoint);
    let reply = invoke(
        &mut kernel,
        initial_slots::CNODE,
        InvocationLabel::CNodeMint,
        &[badged, endpoint, Rights::ALL.bits() as u64, 0x42],
        &[initial_slots::CNODE],
    );
    assert_eq!(reply.error(), None);
    let client = spawn(&mut kernel, free + 2, 100, 0);

    // The root task (priority 255) waits; the client runs and calls.
    let (_, _) = enter(
        &mut kernel,
        0,
        Syscall::Recv as u64,
        endpoint,
        MessageInfo::new(0, 0),
        &[],
        &[],
    );
    assert_eq!(kernel.current(0), Some(client));
    for round in 0..rounds(100, 10) {
        enter(
            &mut kernel,
            0,
            Syscall::Call as u64,
            badged,
            MessageInfo::new(7, 2),
            &[round, round * 3],
            &[],
        );
        assert_eq!(kernel.current(0), Some(root), "the server runs");
        let request = returned(&kernel, root);
        assert_eq!(request.badge, 0x42);
        assert_eq!(request.info, MessageInfo::new(7, 2));
        assert_eq!(&request.words[..2], &[round, round * 3]);
        enter(
            &mut kernel,
            0,
            Syscall::ReplyRecv as u64,
            endpoint,
            MessageInfo::new(0, 1),
            &[round + 1],
            &[],
        );
        assert_eq!(kernel.current(0), Some(client), "the client runs again");
        let answer = returned(&kernel, client);
        assert_eq!(answer.words[0], round + 1);
        assert_eq!(answer.info, MessageInfo::new(0, 1));
    }
}

#[test]
fn a_fault_reaches_the_handler_whose_reply_resumes_the_thread() {
    let (mut kernel, root) = booted();
    let free = first_free(&kernel);
    let endpoint = free;
    retype(&mut kernel, ObjectType::Endpoint, 0, endpoint);
    let child = spawn(&mut kernel, free + 1, 10, endpoint);
    enter(
        &mut kernel,
        0,
        Syscall::Recv as u64,
        endpoint,
        MessageInfo::new(0, 0),
        &[],
        &[],
    );
    assert_eq!(kernel.current(0), Some(child));
    kernel.context_mut(child).unwrap().pc = 0x40_0040;
    kernel.context_mut(child).unwrap().x[5] = 1234;
    let effects = kernel.fault(
        0,
        UserFault::Memory {
            address: 0xdead_0000,
            instruction: false,
            status: 0x47,
        },
    );
    assert_eq!(effects.notice, None);
    assert_eq!(kernel.current(0), Some(root), "the handler runs");
    let message = returned(&kernel, root);
    assert_eq!(message.info.label, FaultLabel::MemoryFault as u64);
    assert_eq!(&message.words[..4], &[0x40_0040, 0xdead_0000, 0, 0x47]);
    // The handler answers with a new PC: the thread resumes there with its
    // registers untouched.
    enter(
        &mut kernel,
        0,
        Syscall::ReplyRecv as u64,
        endpoint,
        MessageInfo::new(0, 1),
        &[0x40_0100],
        &[],
    );
    assert_eq!(kernel.current(0), Some(child));
    let context = kernel.context(child).unwrap();
    assert_eq!(context.pc, 0x40_0100);
    assert_eq!(context.x[5], 1234);
}

#[test]
fn a_thread_without_a_fault_handler_is_stopped_and_reported() {
    let (mut kernel, root) = booted();
    let free = first_free(&kernel);
    let child = spawn(&mut kernel, free, 200, 0);
    // The root task blocks on a notification nobody signals.
    retype(&mut kernel, ObjectType::Notification, 0, free + 1);
    enter(
        &mut kernel,
        0,
        Syscall::Wait as u64,
        free + 1,
        MessageInfo::new(0, 0),
        &[],
        &[],
    );
    assert_eq!(kernel.current(0), Some(child));
    let effects = kernel.fault(0, UserFault::Instruction { syndrome: 0 });
    assert!(matches!(
        effects.notice,
        Some(Notice::UnhandledFault { thread, .. }) if thread == child
    ));
    assert_eq!(
        kernel.store.tcb(child).unwrap().state,
        ThreadState::Inactive
    );
    assert_eq!(kernel.current(0), None, "nothing left to run");
    assert_eq!(
        kernel.store.tcb(root).unwrap().state,
        ThreadState::BlockedOnNotification {
            notification: kernel
                .store
                .tcb(root)
                .map(|_| {
                    match kernel
                        .store
                        .slot(SlotRef {
                            cnode: root_cnode_of(&kernel, root),
                            index: free + 1,
                        })
                        .unwrap()
                        .capability
                    {
                        Capability::Notification { object, .. } => object,
                        other => panic!("{other:?}"),
                    }
                })
                .unwrap()
        }
    );
}

fn root_cnode_of(kernel: &Kernel<Arena>, thread: ThreadRef) -> ObjectRef {
    match kernel.store.tcb(thread).unwrap().cspace_root {
        Capability::CNode { object, .. } => object,
        other => panic!("{other:?}"),
    }
}

#[test]
fn higher_priority_threads_preempt_and_equal_ones_share_by_timeslice() {
    let (mut kernel, root) = booted();
    let free = first_free(&kernel);
    let low_a = spawn(&mut kernel, free, 10, 0);
    let low_b = spawn(&mut kernel, free + 1, 10, 0);
    retype(&mut kernel, ObjectType::Notification, 0, free + 2);
    // The root task waits; the two low threads alternate every timeslice.
    enter(
        &mut kernel,
        0,
        Syscall::Wait as u64,
        free + 2,
        MessageInfo::new(0, 0),
        &[],
        &[],
    );
    let mut seen = Vec::new();
    for _ in 0..4 * Timeslice::DEFAULT_TICKS {
        seen.push(kernel.current(0).unwrap());
        kernel.tick(0, 0);
    }
    assert!(
        seen.contains(&low_a) && seen.contains(&low_b),
        "round robin"
    );
    // A signal wakes the root task, which preempts at once.
    enter(
        &mut kernel,
        0,
        Syscall::Signal as u64,
        free + 2,
        MessageInfo::new(0, 0),
        &[],
        &[],
    );
    assert_eq!(
        kernel.current(0),
        Some(root),
        "the high priority runs first"
    );
    assert_eq!(returned(&kernel, root).badge, 0, "unbadged signal");
}

#[test]
fn revoking_an_untyped_lets_the_same_memory_be_retyped_again() {
    let (mut kernel, _) = booted();
    let free = first_free(&kernel);
    let untyped = first_untyped(&kernel);
    retype(&mut kernel, ObjectType::Endpoint, 0, free);
    let first = kernel
        .store
        .slot(SlotRef {
            cnode: root_cnode(&kernel),
            index: free,
        })
        .unwrap()
        .capability
        .object();
    let reply = invoke(
        &mut kernel,
        initial_slots::CNODE,
        InvocationLabel::CNodeRevoke,
        &[untyped],
        &[],
    );
    assert_eq!(reply.error(), None);
    retype(&mut kernel, ObjectType::Endpoint, 0, free);
    let second = kernel
        .store
        .slot(SlotRef {
            cnode: root_cnode(&kernel),
            index: free,
        })
        .unwrap()
        .capability
        .object();
    assert_eq!(first, second, "the same memory again");
}

/// The fast paths of `Call` and `ReplyRecv` must leave exactly the state
/// the general path leaves: the same scenario runs twice, with and without
/// them, and every step is compared (the next test shows the fast path is
/// really taken in this situation).
#[test]
fn fast_paths_change_exactly_what_the_general_path_changes() {
    fn scenario(fastpath: bool) -> Vec<Arena> {
        let (mut kernel, root) = booted();
        kernel.fastpath = fastpath;
        let free = first_free(&kernel);
        retype(&mut kernel, ObjectType::Endpoint, 0, free);
        let client = spawn(&mut kernel, free + 1, 255, 0);
        // A second client at a lower priority, so the run queue is not
        // empty while the first one calls.
        let _background = spawn(&mut kernel, free + 2, 7, 0);
        let mut states = Vec::new();
        enter(
            &mut kernel,
            0,
            Syscall::Recv as u64,
            free,
            MessageInfo::new(0, 0),
            &[],
            &[],
        );
        assert_eq!(kernel.current(0), Some(client));
        // Under Miri, one round for each message length.
        for round in 0..rounds(20, 9) {
            enter(
                &mut kernel,
                0,
                Syscall::Call as u64,
                free,
                MessageInfo::new(round, (round % 9) as u8),
                &[round; 8],
                &[],
            );
            assert_eq!(kernel.current(0), Some(root));
            states.push(kernel.store.clone());
            enter(
                &mut kernel,
                0,
                Syscall::ReplyRecv as u64,
                free,
                MessageInfo::new(0, (round % 5) as u8),
                &[round * 7; 8],
                &[],
            );
            assert_eq!(kernel.current(0), Some(client));
            states.push(kernel.store.clone());
        }
        states
    }
    let general = scenario(false);
    let fast = scenario(true);
    assert_eq!(general.len(), fast.len());
    for (step, (general, fast)) in general.iter().zip(&fast).enumerate() {
        assert_eq!(general, fast, "step {step} differs");
    }
}

#[test]
fn the_fast_path_is_taken_for_a_plain_call() {
    let (mut kernel, root) = booted();
    let free = first_free(&kernel);
    retype(&mut kernel, ObjectType::Endpoint, 0, free);
    let client = spawn(&mut kernel, free + 1, 255, 0);
    enter(
        &mut kernel,
        0,
        Syscall::Recv as u64,
        free,
        MessageInfo::new(0, 0),
        &[],
        &[],
    );
    assert_eq!(kernel.current(0), Some(client));
    {
        let context = kernel.context_mut(client).unwrap();
        context.x[9] = free;
        context.x[10] = MessageInfo::new(1, 1).encode();
    }
    assert!(kernel.fast_call(0, client), "fast path taken");
    assert_eq!(kernel.current(0), Some(root));
    // A message with a capability to transfer never takes it.
    let mut with_capability = MessageInfo::new(1, 1);
    with_capability.extra_capabilities = 1;
    {
        let context = kernel.context_mut(root).unwrap();
        context.x[9] = free;
        context.x[10] = with_capability.encode();
    }
    let before = kernel.store.clone();
    assert!(!kernel.fast_reply_receive(0, root));
    assert_eq!(kernel.store, before, "a refused fast path changes nothing");
}

/// `Send` and `Signal` to a waiting thread of higher priority: the fast
/// paths must leave what the general path leaves, step by step, and must
/// really be taken.
#[test]
fn send_and_signal_fast_paths_match_the_general_path() {
    fn scenario(fastpath: bool) -> Vec<Arena> {
        let (mut kernel, root) = booted();
        kernel.fastpath = fastpath;
        let free = first_free(&kernel);
        retype(&mut kernel, ObjectType::Endpoint, 0, free);
        retype(&mut kernel, ObjectType::Notification, 0, free + 1);
        retype(&mut kernel, ObjectType::Notification, 0, free + 2);
        let low = spawn(&mut kernel, free + 3, 10, 0);
        // The root task (255) alternates between waiting for a message and
        // for a signal; the low thread sends and signals.
        let mut states = Vec::new();
        for round in 0..rounds(10, 4) {
            let waiting_for = if round % 2 == 0 {
                Syscall::Recv
            } else {
                Syscall::Wait
            };
            let object = if round % 2 == 0 { free } else { free + 1 };
            enter(
                &mut kernel,
                0,
                waiting_for as u64,
                object,
                MessageInfo::new(0, 0),
                &[],
                &[],
            );
            assert_eq!(kernel.current(0), Some(low));
            states.push(kernel.store.clone());
            let (action, info) = if round % 2 == 0 {
                (Syscall::Send, MessageInfo::new(round, 3))
            } else {
                (Syscall::Signal, MessageInfo::new(0, 0))
            };
            enter(
                &mut kernel,
                0,
                action as u64,
                object,
                info,
                &[round, 2, 3],
                &[],
            );
            assert_eq!(
                kernel.current(0),
                Some(root),
                "round {round}: the waiter runs"
            );
            states.push(kernel.store.clone());
        }
        states
    }
    let general = scenario(false);
    let fast = scenario(true);
    for (step, (general, fast)) in general.iter().zip(&fast).enumerate() {
        assert_eq!(general, fast, "step {step} differs");
    }
    // The fast paths are taken in this situation.
    let (mut kernel, _) = booted();
    let free = first_free(&kernel);
    retype(&mut kernel, ObjectType::Notification, 0, free);
    let low = spawn(&mut kernel, free + 1, 10, 0);
    enter(
        &mut kernel,
        0,
        Syscall::Wait as u64,
        free,
        MessageInfo::new(0, 0),
        &[],
        &[],
    );
    assert_eq!(kernel.current(0), Some(low));
    kernel.context_mut(low).unwrap().x[9] = free;
    assert!(kernel.fast_signal(0, low), "fast signal taken");
}

/// A fault and the handler's reply: the fast paths must leave what the
/// general path leaves, and the fault's fast path must really be taken.
#[test]
fn fault_fast_paths_match_the_general_path() {
    fn scenario(fastpath: bool) -> Vec<Arena> {
        let (mut kernel, root) = booted();
        kernel.fastpath = fastpath;
        let free = first_free(&kernel);
        retype(&mut kernel, ObjectType::Endpoint, 0, free);
        let child = spawn(&mut kernel, free + 1, 10, free);
        let mut states = Vec::new();
        enter(
            &mut kernel,
            0,
            Syscall::Recv as u64,
            free,
            MessageInfo::new(0, 0),
            &[],
            &[],
        );
        for round in 0..rounds(10, 4) {
            assert_eq!(kernel.current(0), Some(child));
            kernel.context_mut(child).unwrap().pc = 0x40_0000 + 4 * round;
            kernel.fault(0, UserFault::Instruction { syndrome: round });
            assert_eq!(
                kernel.current(0),
                Some(root),
                "round {round}: the handler runs"
            );
            states.push(kernel.store.clone());
            let message = returned(&kernel, root);
            assert_eq!(message.words[0], 0x40_0000 + 4 * round);
            enter(
                &mut kernel,
                0,
                Syscall::ReplyRecv as u64,
                free,
                MessageInfo::new(0, (round % 2) as u8),
                &[message.words[0] + 4],
                &[],
            );
            states.push(kernel.store.clone());
        }
        states
    }
    let general = scenario(false);
    let fast = scenario(true);
    for (step, (general, fast)) in general.iter().zip(&fast).enumerate() {
        assert_eq!(general, fast, "step {step} differs");
    }
    let (mut kernel, _) = booted();
    let free = first_free(&kernel);
    retype(&mut kernel, ObjectType::Endpoint, 0, free);
    let child = spawn(&mut kernel, free + 1, 10, free);
    enter(
        &mut kernel,
        0,
        Syscall::Recv as u64,
        free,
        MessageInfo::new(0, 0),
        &[],
        &[],
    );
    let message = FaultMessage {
        label: FaultLabel::UndefinedInstruction as u64,
        words: [0; 8],
        length: 2,
    };
    assert!(kernel.fast_fault(0, child, &message), "fast fault taken");
}

/// VMIDs: each VSpace keeps its VMID while it has one; with more VSpaces
/// than VMIDs they are recycled round robin, and the arch layer is told to
/// flush the TLBs each time; a VMID never names two VSpaces at once.
#[test]
fn vmids_are_assigned_once_and_recycled_with_a_flush() {
    let (mut kernel, root) = booted();
    let free = first_free(&kernel);
    let (own, first_vmid, _) = kernel.address_space(root).unwrap();
    assert_eq!(
        kernel.address_space(root),
        Some((own, first_vmid, false)),
        "kept"
    );
    // 300 threads, each in a VSpace of its own.
    let mut recycled = 0;
    let mut seen = std::collections::BTreeMap::new();
    for index in 0..rounds(300, 10) {
        let thread_slot = free + 2 * index;
        let vspace_slot = thread_slot + 1;
        retype(&mut kernel, ObjectType::Tcb, 0, thread_slot);
        retype(&mut kernel, ObjectType::VSpace, 0, vspace_slot);
        let reply = invoke(
            &mut kernel,
            thread_slot,
            InvocationLabel::TcbConfigure,
            &[0, 1],
            &[initial_slots::CNODE, vspace_slot],
        );
        assert_eq!(reply.error(), None);
        let thread = match kernel
            .store
            .slot(SlotRef {
                cnode: root_cnode(&kernel),
                index: thread_slot,
            })
            .unwrap()
            .capability
        {
            Capability::Tcb { object } => object,
            other => panic!("{other:?}"),
        };
        let (vspace, vmid, flush) = kernel.address_space(thread).unwrap();
        assert!(vmid != 0 && usize::from(vmid) < VMIDS);
        recycled += usize::from(flush);
        seen.insert(vmid, vspace);
        // No other VSpace holds this VMID now.
        let holders = kernel
            .vmids
            .iter()
            .filter(|owner| **owner == Some(vspace))
            .count();
        assert_eq!(holders, 1);
    }
    // Under Miri, too few VSpaces were made to run out of VMIDs.
    if !cfg!(miri) {
        assert!(recycled >= 300 - (VMIDS - 2), "recycled {recycled} times");
        assert_eq!(seen.len(), VMIDS - 1, "every VMID but 0 was used");
    }
}

/// An interrupt whose notification has a waiting thread of higher
/// priority: the fast path must leave what the general path leaves, and
/// be taken.
#[test]
fn interrupt_fast_path_matches_the_general_path() {
    fn scenario(fastpath: bool) -> (Vec<Arena>, bool) {
        let (mut kernel, root) = booted();
        kernel.fastpath = fastpath;
        let free = first_free(&kernel);
        retype(&mut kernel, ObjectType::Notification, 0, free);
        let reply = invoke(
            &mut kernel,
            initial_slots::IRQ_CONTROL,
            InvocationLabel::IrqControlGet,
            &[40, free + 1],
            &[initial_slots::CNODE],
        );
        assert_eq!(reply.error(), None);
        let reply = invoke(
            &mut kernel,
            free + 1,
            InvocationLabel::IrqHandlerSetNotification,
            &[],
            &[free],
        );
        assert_eq!(reply.error(), None);
        let low = spawn(&mut kernel, free + 2, 10, 0);
        let mut states = Vec::new();
        let mut took_fast = false;
        for round in 0..rounds(5, 3) {
            enter(
                &mut kernel,
                0,
                Syscall::Wait as u64,
                free,
                MessageInfo::new(0, 0),
                &[],
                &[],
            );
            assert_eq!(kernel.current(0), Some(low));
            if fastpath && round == 0 {
                let before = kernel.store.clone();
                took_fast = kernel.fast_interrupt(0, 40);
                assert_ne!(kernel.store, before);
            } else {
                kernel.interrupt(0, 40);
            }
            assert_eq!(
                kernel.current(0),
                Some(root),
                "round {round}: the handler runs"
            );
            assert_eq!(returned(&kernel, root).badge, 1);
            states.push(kernel.store.clone());
            let reply = invoke(
                &mut kernel,
                free + 1,
                InvocationLabel::IrqHandlerAck,
                &[],
                &[],
            );
            assert_eq!(reply.error(), None);
        }
        (states, took_fast)
    }
    let (general, _) = scenario(false);
    let (fast, took_fast) = scenario(true);
    assert!(took_fast, "the fast path was taken");
    for (step, (general, fast)) in general.iter().zip(&fast).enumerate() {
        assert_eq!(general, fast, "step {step} differs");
    }
}

/// `Yield` with nobody else of the caller's priority ready: the fast path
/// and the general path leave the same objects and the same timeslice;
/// with another thread of that priority ready, the general path runs it.
#[test]
fn yield_fast_path_matches_the_general_path() {
    let run = |fastpath: bool| {
        let (mut kernel, root) = booted();
        kernel.fastpath = fastpath;
        let free = first_free(&kernel);
        let _low = spawn(&mut kernel, free, 10, 0);
        enter(
            &mut kernel,
            0,
            Syscall::Yield as u64,
            0,
            MessageInfo::new(0, 0),
            &[],
            &[],
        );
        assert_eq!(kernel.current(0), Some(root), "nobody else of priority 255");
        (kernel.store.clone(), kernel.cores[0])
    };
    assert_eq!(run(true), run(false));
    let (mut kernel, root) = booted();
    let free = first_free(&kernel);
    let peer = spawn(&mut kernel, free, 255, 0);
    enter(
        &mut kernel,
        0,
        Syscall::Yield as u64,
        0,
        MessageInfo::new(0, 0),
        &[],
        &[],
    );
    assert_eq!(
        kernel.current(0),
        Some(peer),
        "the peer of equal priority runs"
    );
    enter(
        &mut kernel,
        0,
        Syscall::Yield as u64,
        0,
        MessageInfo::new(0, 0),
        &[],
        &[],
    );
    assert_eq!(kernel.current(0), Some(root), "and yields back");
}

/// A VCPU thread: its exits reach the VMM (the root task here) as one
/// message each, the VMM's reply does what the fault protocol says, `WFI`
/// blocks it until a virtual interrupt is pending, and the binding rules
/// hold.
#[test]
fn a_vcpu_exit_is_one_message_and_its_reply_resumes_the_guest() {
    use crate::exit::Trap;
    use hyp_abi::fault::{exit_reply, mmio};
    let (mut kernel, root) = booted();
    let free = first_free(&kernel);
    let (endpoint, vcpu_slot, thread_slot) = (free, free + 1, free + 2);
    retype(&mut kernel, ObjectType::Endpoint, 0, endpoint);
    retype(&mut kernel, ObjectType::Vcpu, 0, vcpu_slot);
    retype(&mut kernel, ObjectType::Tcb, 0, thread_slot);
    let reply = invoke(
        &mut kernel,
        thread_slot,
        InvocationLabel::TcbConfigure,
        &[endpoint, 100],
        &[initial_slots::CNODE, initial_slots::VSPACE],
    );
    assert_eq!(reply.error(), None);
    let reply = invoke(
        &mut kernel,
        vcpu_slot,
        InvocationLabel::VcpuSetTcb,
        &[],
        &[thread_slot],
    );
    assert_eq!(reply.error(), None, "bind");
    let again = invoke(
        &mut kernel,
        vcpu_slot,
        InvocationLabel::VcpuSetTcb,
        &[],
        &[thread_slot],
    );
    assert_eq!(again.error(), Some(Error::IllegalOperation), "bound once");
    let moved = invoke(
        &mut kernel,
        thread_slot,
        InvocationLabel::TcbSetAffinity,
        &[1],
        &[],
    );
    assert_eq!(
        moved.error(),
        Some(Error::IllegalOperation),
        "a VCPU stays on its core"
    );
    let bad = invoke(
        &mut kernel,
        vcpu_slot,
        InvocationLabel::VcpuInjectIrq,
        &[1020, 0],
        &[],
    );
    assert_eq!(
        bad.error(),
        Some(Error::RangeError {
            argument: 0,
            minimum: 0,
            maximum: 1019
        })
    );
    let reply = invoke(
        &mut kernel,
        vcpu_slot,
        InvocationLabel::VcpuWriteRegister,
        &[hyp_abi::vcpu_register::VBAR_EL1, 0x4000_0800],
        &[],
    );
    assert_eq!(reply.error(), None);
    let reply = invoke(
        &mut kernel,
        vcpu_slot,
        InvocationLabel::VcpuReadRegister,
        &[hyp_abi::vcpu_register::VBAR_EL1],
        &[],
    );
    assert_eq!(reply.words[0], 0x4000_0800);
    let reply = invoke(
        &mut kernel,
        thread_slot,
        InvocationLabel::TcbResume,
        &[],
        &[],
    );
    assert_eq!(reply.error(), None);
    let guest = match kernel
        .store
        .slot(SlotRef {
            cnode: root_cnode(&kernel),
            index: thread_slot,
        })
        .unwrap()
        .capability
    {
        Capability::Tcb { object } => object,
        other => panic!("{other:?}"),
    };
    enter(
        &mut kernel,
        0,
        Syscall::Recv as u64,
        endpoint,
        MessageInfo::new(0, 0),
        &[],
        &[],
    );
    assert_eq!(kernel.current(0), Some(guest));
    let resume = kernel.resume(0).unwrap().unwrap();
    assert!(
        resume.vcpu.vcpu.is_some() && resume.vcpu.load,
        "the VCPU is loaded"
    );
    assert_eq!(
        kernel.context(guest).unwrap().spsr,
        hyp_abi::vcpu::INITIAL_SPSR
    );

    // An MMIO read of a 32-bit register into w2: one message, one reply.
    kernel.context_mut(guest).unwrap().pc = 0x4008_0000;
    let syndrome = 0x24 << 26 | 1 << 25 | 1 << 24 | 2 << 22 | 2 << 16 | 0x07;
    let trap = Trap {
        syndrome,
        address: 0x0900_0018,
        hpfar: 0x0900_0000 >> 8,
    };
    kernel.vm_exit(0, trap, false);
    assert_eq!(kernel.current(0), Some(root), "the VMM runs");
    let message = returned(&kernel, root);
    assert_eq!(message.info.label, FaultLabel::VcpuMmio as u64);
    assert_eq!(message.badge, 0, "the unbadged endpoint");
    assert_eq!(message.words[mmio::ADDRESS], 0x0900_0018);
    enter(
        &mut kernel,
        0,
        Syscall::ReplyRecv as u64,
        endpoint,
        MessageInfo::new(exit_reply::RESUME, 1),
        &[0x90],
        &[],
    );
    assert_eq!(kernel.current(0), Some(guest), "the guest runs again");
    assert_eq!(kernel.context(guest).unwrap().x[2], 0x90);
    assert_eq!(kernel.context(guest).unwrap().pc, 0x4008_0004);

    // WFI with nothing pending: the VCPU waits, and the core idles.
    let wfi = Trap {
        syndrome: 0x01 << 26 | 1 << 25,
        ..Trap::default()
    };
    kernel.vm_exit(0, wfi, false);
    assert_eq!(
        kernel.store.tcb(guest).unwrap().state,
        ThreadState::WaitingForInterrupt
    );
    assert_eq!(kernel.current(0), None);
    // Another VCPU is loaded on the core meanwhile: the tick watches the
    // saved virtual timer and wakes the guest when it is due.
    let vcpu = resume.vcpu.vcpu.unwrap();
    kernel.cores[0].loaded_vcpu = None;
    let saved = kernel.store.vcpu_mut(vcpu).unwrap();
    saved
        .set_register(hyp_abi::vcpu_register::CNTV_CVAL_EL0, 1000)
        .unwrap();
    saved
        .set_register(hyp_abi::vcpu_register::CNTV_CTL_EL0, 1)
        .unwrap();
    kernel.tick(0, 999);
    assert_eq!(
        kernel.store.tcb(guest).unwrap().state,
        ThreadState::WaitingForInterrupt,
        "not due yet"
    );
    kernel.tick(0, 1000);
    assert_eq!(kernel.current(0), Some(guest), "woken at its deadline");
    assert!(
        kernel.store.vcpu_mut(vcpu).unwrap().take_most_urgent()
            == Some((27, VIRTUAL_TIMER_PRIORITY))
    );
    kernel.resume(0).unwrap().unwrap();
    // Waiting again, loaded: its virtual timer fires in the hardware, the
    // interrupt is pending and it runs.
    kernel.vm_exit(0, wfi, false);
    assert_eq!(kernel.current(0), None);
    let (_, taken) = kernel.virtual_timer(0);
    assert!(taken, "the loaded VCPU takes its timer");
    assert_eq!(kernel.current(0), Some(guest));
    assert!(kernel.store.vcpu(vcpu).unwrap().is_pending(27));

    // An abort reply: the guest takes an injected exception at its next entry.
    let syndrome = 0x24 << 26 | 1 << 25 | 1 << 24 | 2 << 22 | 1 << 16 | 1 << 6 | 0x07;
    kernel.vm_exit(
        0,
        Trap {
            syndrome,
            address: 0x4800_0000,
            hpfar: 0x4800_0000 >> 8,
        },
        false,
    );
    assert_eq!(kernel.current(0), Some(root));
    enter(
        &mut kernel,
        0,
        Syscall::ReplyRecv as u64,
        endpoint,
        MessageInfo::new(exit_reply::INJECT_ABORT, 0),
        &[],
        &[],
    );
    assert_eq!(kernel.current(0), Some(guest));
    let resume = kernel.resume(0).unwrap().unwrap();
    assert_eq!(
        resume.injection,
        Some(crate::exit::Injection::DataAbort {
            address: 0x4800_0000,
            write: true
        })
    );
    assert!(!resume.vcpu.load, "still loaded: nothing to switch");
}

/// `FrameClean` asks the arch layer to clean exactly the frame's memory,
/// and only a frame capability can ask.
#[test]
fn frame_clean_names_the_frames_memory() {
    let (mut kernel, _) = booted();
    let free = first_free(&kernel);
    retype(&mut kernel, ObjectType::Frame4K, 0, free);
    retype(&mut kernel, ObjectType::Tcb, 0, free + 1);
    let base = match kernel
        .store
        .slot(SlotRef {
            cnode: root_cnode(&kernel),
            index: free,
        })
        .unwrap()
        .capability
    {
        Capability::Frame { object, .. } => object.0,
        other => panic!("{other:?}"),
    };
    let info = MessageInfo::new(InvocationLabel::FrameClean as u64, 0);
    let (thread, effects) = enter(&mut kernel, 0, Syscall::Call as u64, free, info, &[], &[]);
    assert_eq!(returned(&kernel, thread).error(), None);
    assert_eq!(effects.clean, Some((base, 4096)));
    let (thread, effects) = enter(
        &mut kernel,
        0,
        Syscall::Call as u64,
        free + 1,
        info,
        &[],
        &[],
    );
    assert_eq!(
        returned(&kernel, thread).error(),
        Some(Error::IllegalOperation)
    );
    assert_eq!(effects.clean, None);
}
