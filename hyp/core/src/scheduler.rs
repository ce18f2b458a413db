//! The run queues: which thread each core runs next.
//!
//! Scheduling is fixed-priority and preemptive, round robin within a priority,
//! with per-core run queues and threads pinned to a core by their affinity
//! (DESIGN.md section 6, the choice seL4 makes). Each core has one intrusive
//! FIFO ([`Queue`]) per priority, 0 the lowest and 255 the highest, and a
//! two-level bitmap of the non-empty ones, so that finding the thread to run
//! takes two `leading_zeros` whatever the number of threads. A thread's
//! [`Timeslice`] drives the round robin: when it runs out, the thread goes to
//! the back of its priority.
//!
//! Nothing here allocates, loops over threads, or panics. Every operation
//! either succeeds or returns an error having changed nothing, so the kernel
//! can call them from the invoke half of an invocation once decoding has
//! checked the thread, its priority and its affinity. Running the queues of
//! several cores from one structure relies on the big kernel lock.

use core::fmt;

use hyp_abi::MAX_CORES;

use crate::object::ThreadRef;
use crate::queue::{LinkStore, Queue, QueueError};

/// The number of priorities: 0 (lowest) to 255 (highest).
pub const PRIORITY_LEVELS: usize = 256;

/// Words of the second bitmap level: one bit per priority.
const BITMAP_WORDS: usize = PRIORITY_LEVELS / u64::BITS as usize;

/// What the scheduler needs to know about a thread, beyond its queue links.
///
/// Implemented by the kernel's object store (over TCBs) and by the tests.
///
/// # Contract
///
/// A thread's priority and affinity must not change while it is queued:
/// [`Scheduler::dequeue`] finds its queue through them. To change either,
/// dequeue the thread, change it, and enqueue it again. Breaking this cannot
/// corrupt the run queues (see [`Queue::remove`]): it is either refused with
/// [`SchedulerError::Inconsistent`] or, for a thread in the interior of its
/// queue, removes it correctly.
pub trait SchedulerStore: LinkStore {
    /// The thread's priority: 0 (lowest) to 255 (highest).
    fn priority(&self, thread: ThreadRef) -> u8;
    /// The logical number of the core the thread runs on.
    fn affinity(&self, thread: ThreadRef) -> usize;
}

/// Why a scheduler operation was refused. In every case nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedulerError {
    /// The core number (a thread's affinity, or the core asked about) is not
    /// below [`MAX_CORES`].
    InvalidCore {
        /// The core number given.
        core: usize,
    },
    /// The thread is in a queue already.
    AlreadyQueued,
    /// The thread is in no queue.
    NotQueued,
    /// The run queue's links disagree with the scheduler: a kernel bug, or a
    /// thread whose priority or affinity changed while it was queued.
    Inconsistent,
}

impl From<QueueError> for SchedulerError {
    fn from(error: QueueError) -> Self {
        match error {
            QueueError::AlreadyQueued => SchedulerError::AlreadyQueued,
            QueueError::NotQueued => SchedulerError::NotQueued,
            QueueError::Inconsistent => SchedulerError::Inconsistent,
        }
    }
}

impl fmt::Display for SchedulerError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchedulerError::InvalidCore { core } => {
                write!(
                    formatter,
                    "core {core} out of range (at most {MAX_CORES} cores)"
                )
            }
            SchedulerError::AlreadyQueued => {
                formatter.write_str("thread is in a run queue already")
            }
            SchedulerError::NotQueued => formatter.write_str("thread is not in a run queue"),
            SchedulerError::Inconsistent => formatter.write_str("run queue links are inconsistent"),
        }
    }
}

/// The word of the second bitmap level that holds `priority`, and its bit.
const fn bitmap_position(priority: u8) -> (usize, u64) {
    (priority as usize / u64::BITS as usize, 1 << (priority % 64))
}

/// The run queues of one core.
///
/// # Invariants
///
/// - Bit `p % 64` of `bitmap[p / 64]` is set iff `queues[p]` is not empty.
/// - Bit `w` of `summary` is set iff `bitmap[w] != 0`; no other bit is set.
/// - Every thread in `queues[p]` has priority `p` and this core as affinity.
#[derive(Debug)]
#[cfg_attr(test, derive(Clone, PartialEq, Eq))]
struct CoreQueues {
    queues: [Queue; PRIORITY_LEVELS],
    summary: u64,
    bitmap: [u64; BITMAP_WORDS],
}

impl CoreQueues {
    const EMPTY: CoreQueues = CoreQueues {
        queues: [Queue::EMPTY; PRIORITY_LEVELS],
        summary: 0,
        bitmap: [0; BITMAP_WORDS],
    };

    fn queue(&mut self, priority: u8) -> &mut Queue {
        &mut self.queues[usize::from(priority)]
    }

    /// Records that the queue of `priority` is not empty.
    fn mark_ready(&mut self, priority: u8) {
        let (word, bit) = bitmap_position(priority);
        self.bitmap[word] |= bit;
        self.summary |= 1 << word;
    }

    /// Clears the bits of `priority` if its queue has become empty.
    fn update_after_removal(&mut self, priority: u8) {
        if self.queues[usize::from(priority)].is_empty() {
            let (word, bit) = bitmap_position(priority);
            self.bitmap[word] &= !bit;
            if self.bitmap[word] == 0 {
                self.summary &= !(1 << word);
            }
        }
    }

    /// The highest priority with a runnable thread: two `leading_zeros`.
    #[inline(always)]
    fn highest(&self) -> Option<u8> {
        // `checked_sub` yields `None` exactly when the word is zero.
        let word = (u64::BITS - 1).checked_sub(self.summary.leading_zeros())?;
        let bits = *self.bitmap.get(word as usize)?;
        let bit = (u64::BITS - 1).checked_sub(bits.leading_zeros())?;
        u8::try_from(word * u64::BITS + bit).ok()
    }
}

/// Which end of its priority's queue a thread joins.
#[derive(Clone, Copy)]
enum End {
    Front,
    Back,
}

/// The run queues of all cores: the threads that are ready to run, not the
/// ones running. A thread leaves its run queue when it is picked to run, and
/// the kernel puts it back when it is preempted, yields or runs out of its
/// timeslice.
///
/// # Invariants
///
/// - Those of each core's queues (bitmap bits set iff the queue is non-empty).
/// - A thread is queued (its `queued` link is set) iff it is in exactly one
///   queue: the one of its priority on the core of its affinity.
#[derive(Debug)]
#[cfg_attr(test, derive(Clone, PartialEq, Eq))]
pub struct Scheduler {
    cores: [CoreQueues; MAX_CORES],
}

impl Default for Scheduler {
    fn default() -> Self {
        Self::new()
    }
}

impl Scheduler {
    /// Run queues with no thread in them, for a `static`.
    pub const fn new() -> Self {
        Scheduler {
            cores: [CoreQueues::EMPTY; MAX_CORES],
        }
    }

    /// Makes `thread` ready: at the back of its priority on the core of its
    /// affinity, behind the threads of that priority that are ready already.
    /// This is the place for a thread that was woken, resumed, yielded or ran
    /// out of its timeslice.
    ///
    /// Only the range of the affinity is checked here; whether that core is
    /// online is for decoding (`SetAffinity`) to check.
    ///
    /// # Errors
    ///
    /// [`SchedulerError::InvalidCore`] if the affinity is not below
    /// [`MAX_CORES`]; [`SchedulerError::AlreadyQueued`] if the thread is in a
    /// queue; [`SchedulerError::Inconsistent`] on corrupt links. Nothing is
    /// changed on error.
    pub fn enqueue(
        &mut self,
        store: &mut impl SchedulerStore,
        thread: ThreadRef,
    ) -> Result<(), SchedulerError> {
        self.insert(store, thread, End::Back)
    }

    /// Makes `thread` ready at the *front* of its priority: for a thread that
    /// was preempted by a higher priority and keeps the rest of its timeslice,
    /// so it resumes before its peers.
    ///
    /// # Errors
    ///
    /// As [`Scheduler::enqueue`].
    pub fn enqueue_front(
        &mut self,
        store: &mut impl SchedulerStore,
        thread: ThreadRef,
    ) -> Result<(), SchedulerError> {
        self.insert(store, thread, End::Front)
    }

    fn insert(
        &mut self,
        store: &mut impl SchedulerStore,
        thread: ThreadRef,
        end: End,
    ) -> Result<(), SchedulerError> {
        let core = store.affinity(thread);
        let queues = self
            .cores
            .get_mut(core)
            .ok_or(SchedulerError::InvalidCore { core })?;
        let priority = store.priority(thread);
        let queue = queues.queue(priority);
        match end {
            End::Back => queue.push_back(store, thread)?,
            End::Front => queue.push_front(store, thread)?,
        }
        queues.mark_ready(priority);
        Ok(())
    }

    /// Takes a ready `thread` out of its run queue: when it blocks or is
    /// suspended, or before its priority or affinity changes.
    ///
    /// # Errors
    ///
    /// [`SchedulerError::InvalidCore`] if the affinity is not below
    /// [`MAX_CORES`]; [`SchedulerError::NotQueued`] if the thread is in no
    /// queue; [`SchedulerError::Inconsistent`] if its links disagree with the
    /// queue of its priority and affinity (see [`SchedulerStore`]). Nothing
    /// is changed on error.
    pub fn dequeue(
        &mut self,
        store: &mut impl SchedulerStore,
        thread: ThreadRef,
    ) -> Result<(), SchedulerError> {
        let core = store.affinity(thread);
        let queues = self
            .cores
            .get_mut(core)
            .ok_or(SchedulerError::InvalidCore { core })?;
        let priority = store.priority(thread);
        queues.queue(priority).remove(store, thread)?;
        queues.update_after_removal(priority);
        Ok(())
    }

    /// Takes the thread to run next on `core` out of its run queue: the
    /// first of the highest non-empty priority. `None` if no thread is ready
    /// (the core idles).
    ///
    /// # Errors
    ///
    /// [`SchedulerError::InvalidCore`] if `core` is not below [`MAX_CORES`];
    /// [`SchedulerError::Inconsistent`] if the queue's links are corrupt (a
    /// kernel bug). Nothing is changed on error.
    pub fn pick_next(
        &mut self,
        store: &mut impl SchedulerStore,
        core: usize,
    ) -> Result<Option<ThreadRef>, SchedulerError> {
        let queues = self
            .cores
            .get_mut(core)
            .ok_or(SchedulerError::InvalidCore { core })?;
        let Some(priority) = queues.highest() else {
            return Ok(None);
        };
        // The bitmap says this queue is not empty.
        let thread = queues
            .queue(priority)
            .pop_front(store)?
            .ok_or(SchedulerError::Inconsistent)?;
        queues.update_after_removal(priority);
        Ok(Some(thread))
    }

    /// The highest priority of a thread ready on `core`; `None` if none is
    /// ready or `core` is not below [`MAX_CORES`].
    #[inline(always)]
    pub fn highest_priority(&self, core: usize) -> Option<u8> {
        self.cores.get(core)?.highest()
    }

    /// Whether a thread of strictly higher priority than the one running on
    /// `core` is ready, so the running one must be preempted now. Threads of
    /// equal priority wait for the running one's [`Timeslice`] to run out.
    pub fn should_preempt(&self, core: usize, running_priority: u8) -> bool {
        self.highest_priority(core)
            .is_some_and(|highest| highest > running_priority)
    }
}

/// The rest of a running thread's timeslice, in timer ticks: the round robin
/// among threads of one priority.
///
/// The kernel keeps one in each TCB. On each timer tick on a core it calls
/// [`Timeslice::tick`] for the running thread; when that says the slice is
/// used up, it refills it, puts the thread at the back of its priority with
/// [`Scheduler::enqueue`], and picks the next. A thread preempted by a higher
/// priority keeps what is left and goes to the front with
/// [`Scheduler::enqueue_front`]. How long a tick is, is the arch layer's
/// choice of timer period.
///
/// # Invariants
///
/// `1 <= length` and `remaining <= length`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeslice {
    length: u32,
    remaining: u32,
}

impl Timeslice {
    /// The length of a timeslice unless configured otherwise: 5 ticks, as
    /// seL4's default.
    pub const DEFAULT_TICKS: u32 = 5;

    /// A full timeslice of `ticks` ticks. A slice is at least one tick long,
    /// so every thread runs for a tick before it rotates: 0 means 1.
    pub const fn new(ticks: u32) -> Self {
        let length = if ticks == 0 { 1 } else { ticks };
        Timeslice {
            length,
            remaining: length,
        }
    }

    /// The length of a full slice, in ticks.
    pub const fn length(&self) -> u32 {
        self.length
    }

    /// The ticks left before the slice runs out.
    pub const fn remaining(&self) -> u32 {
        self.remaining
    }

    /// Whether the slice has run out.
    pub const fn is_expired(&self) -> bool {
        self.remaining == 0
    }

    /// Accounts one timer tick of running. Returns whether the slice has run
    /// out (and stays run out until [`Timeslice::refill`]).
    pub fn tick(&mut self) -> bool {
        self.remaining = self.remaining.saturating_sub(1);
        self.is_expired()
    }

    /// Ends the slice now (`Yield`); [`Timeslice::refill`] gives a full
    /// one of the same length again.
    pub fn expire(&mut self) {
        self.remaining = 0;
    }

    /// Gives the thread a full slice again.
    pub fn refill(&mut self) {
        self.remaining = self.length;
    }
}

impl Default for Timeslice {
    fn default() -> Self {
        Self::new(Self::DEFAULT_TICKS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::ObjectRef;
    use crate::queue::Links;
    use crate::queue::testing::{Rng, check_queue};
    use std::collections::{BTreeMap, VecDeque};
    use std::string::ToString;
    use std::vec::Vec;

    /// Per thread, by its number ([`thread`]): links, priority, affinity.
    /// (A vector rather than a map: the lookups at every queue operation
    /// were most of what these tests cost under Miri.)
    #[derive(Clone, Debug, Default, PartialEq)]
    struct Store(Vec<Option<(Links, u8, usize)>>);

    impl Store {
        fn get(&self, thread: ThreadRef) -> &(Links, u8, usize) {
            self.0
                .get(number(thread))
                .and_then(Option::as_ref)
                .expect("unknown thread")
        }

        fn get_mut(&mut self, thread: ThreadRef) -> &mut (Links, u8, usize) {
            self.0
                .get_mut(number(thread))
                .and_then(Option::as_mut)
                .expect("unknown thread")
        }

        /// How many threads there are.
        fn len(&self) -> usize {
            self.0.iter().flatten().count()
        }
    }

    impl LinkStore for Store {
        fn links(&self, thread: ThreadRef) -> Links {
            self.get(thread).0
        }
        fn set_links(&mut self, thread: ThreadRef, links: Links) {
            self.get_mut(thread).0 = links;
        }
    }

    impl SchedulerStore for Store {
        fn priority(&self, thread: ThreadRef) -> u8 {
            self.get(thread).1
        }
        fn affinity(&self, thread: ThreadRef) -> usize {
            self.get(thread).2
        }
    }

    impl Store {
        /// Adds thread number `index` with `priority` on `core`.
        fn add(&mut self, index: usize, priority: u8, core: usize) -> ThreadRef {
            if self.0.len() <= index {
                self.0.resize(index + 1, None);
            }
            self.0[index] = Some((Links::UNQUEUED, priority, core));
            thread(index)
        }

        fn set_priority(&mut self, thread: ThreadRef, priority: u8) {
            self.get_mut(thread).1 = priority;
        }

        fn set_affinity(&mut self, thread: ThreadRef, core: usize) {
            self.get_mut(thread).2 = core;
        }
    }

    fn thread(index: usize) -> ThreadRef {
        ObjectRef(0x8000_0000 + 0x1000 * index as u64)
    }

    /// The number of `thread` (the inverse of [`thread`]), or `usize::MAX`
    /// for a reference [`thread`] never returns.
    fn number(thread: ThreadRef) -> usize {
        thread
            .0
            .checked_sub(0x8000_0000)
            .filter(|offset| offset % 0x1000 == 0)
            .and_then(|offset| usize::try_from(offset / 0x1000).ok())
            .unwrap_or(usize::MAX)
    }

    /// Drains every core of a copy and returns, per core, the order its
    /// threads were picked in.
    fn pick_orders(scheduler: &Scheduler, store: &Store) -> Vec<Vec<ThreadRef>> {
        let (mut scheduler, mut store) = (scheduler.clone(), store.clone());
        let threads = store.len();
        (0..MAX_CORES)
            .map(|core| {
                let mut order = Vec::new();
                while let Some(thread) = scheduler.pick_next(&mut store, core).unwrap() {
                    order.push(thread);
                    assert!(order.len() <= threads, "picked more threads than exist");
                }
                assert_eq!(
                    scheduler.highest_priority(core),
                    None,
                    "drained core still ready"
                );
                order
            })
            .collect()
    }

    /// The order the threads of `core` would be picked in.
    fn pick_order(scheduler: &Scheduler, store: &Store, core: usize) -> Vec<ThreadRef> {
        let (mut scheduler, mut store) = (scheduler.clone(), store.clone());
        let threads = store.len();
        let mut order = Vec::new();
        while let Some(thread) = scheduler.pick_next(&mut store, core).unwrap() {
            order.push(thread);
            assert!(order.len() <= threads, "picked more threads than exist");
        }
        order
    }

    fn bit_is_set(queues: &CoreQueues, priority: u8) -> bool {
        let (word, bit) = bitmap_position(priority);
        queues.bitmap[word] & bit != 0
    }

    #[test]
    fn a_new_scheduler_has_nothing_to_run() {
        let mut store = Store::default();
        let mut scheduler = Scheduler::new();
        for core in 0..MAX_CORES {
            assert_eq!(scheduler.pick_next(&mut store, core), Ok(None));
            assert_eq!(scheduler.highest_priority(core), None);
            assert!(!scheduler.should_preempt(core, 0));
        }
        let default = Scheduler::default();
        assert!(default.cores.iter().all(|queues| queues.summary == 0));
    }

    #[test]
    fn highest_priority_first_and_fifo_within_a_priority() {
        let mut store = Store::default();
        let mut scheduler = Scheduler::new();
        let low = store.add(0, 3, 0);
        let high_a = store.add(1, 200, 0);
        let middle = store.add(2, 64, 0);
        let high_b = store.add(3, 200, 0);
        for thread in [low, high_a, middle, high_b] {
            scheduler.enqueue(&mut store, thread).unwrap();
        }
        assert_eq!(scheduler.highest_priority(0), Some(200));
        for expected in [high_a, high_b, middle, low] {
            assert_eq!(scheduler.pick_next(&mut store, 0), Ok(Some(expected)));
            assert_eq!(store.links(expected), Links::UNQUEUED);
        }
        assert_eq!(scheduler.pick_next(&mut store, 0), Ok(None));
    }

    #[test]
    fn enqueue_front_goes_before_its_peers_only() {
        let mut store = Store::default();
        let mut scheduler = Scheduler::new();
        let peer = store.add(0, 10, 1);
        let higher = store.add(1, 11, 1);
        let preempted = store.add(2, 10, 1);
        scheduler.enqueue(&mut store, peer).unwrap();
        scheduler.enqueue(&mut store, higher).unwrap();
        scheduler.enqueue_front(&mut store, preempted).unwrap();
        assert_eq!(pick_order(&scheduler, &store, 1), [higher, preempted, peer]);
    }

    #[test]
    fn cores_are_independent() {
        let mut store = Store::default();
        let mut scheduler = Scheduler::new();
        let first = store.add(0, 100, 0);
        let last = store.add(1, 5, MAX_CORES - 1);
        scheduler.enqueue(&mut store, first).unwrap();
        scheduler.enqueue(&mut store, last).unwrap();
        assert_eq!(scheduler.highest_priority(0), Some(100));
        assert_eq!(scheduler.highest_priority(MAX_CORES - 1), Some(5));
        assert_eq!(scheduler.highest_priority(1), None);
        assert_eq!(scheduler.pick_next(&mut store, 1), Ok(None));
        assert_eq!(
            scheduler.pick_next(&mut store, MAX_CORES - 1),
            Ok(Some(last))
        );
        assert_eq!(scheduler.pick_next(&mut store, 0), Ok(Some(first)));
    }

    #[test]
    fn errors_change_nothing() {
        let mut store = Store::default();
        let mut scheduler = Scheduler::new();
        let queued = store.add(0, 7, 2);
        let idle = store.add(1, 7, 2);
        let homeless = store.add(2, 7, MAX_CORES);
        scheduler.enqueue(&mut store, queued).unwrap();
        let before = (scheduler.clone(), store.clone());

        assert_eq!(
            scheduler.enqueue(&mut store, queued),
            Err(SchedulerError::AlreadyQueued)
        );
        assert_eq!(
            scheduler.enqueue_front(&mut store, queued),
            Err(SchedulerError::AlreadyQueued)
        );
        let invalid = Err(SchedulerError::InvalidCore { core: MAX_CORES });
        assert_eq!(scheduler.enqueue(&mut store, homeless), invalid);
        assert_eq!(scheduler.enqueue_front(&mut store, homeless), invalid);
        assert_eq!(scheduler.dequeue(&mut store, homeless), invalid);
        assert_eq!(
            scheduler.dequeue(&mut store, idle),
            Err(SchedulerError::NotQueued)
        );
        let far = Err(SchedulerError::InvalidCore { core: usize::MAX });
        assert_eq!(scheduler.pick_next(&mut store, usize::MAX), far);
        assert_eq!(scheduler.highest_priority(MAX_CORES), None);
        assert!(!scheduler.should_preempt(MAX_CORES, 0));

        assert_eq!(store.0, before.1.0);
        assert!(
            scheduler == before.0,
            "a refused operation changed the run queues"
        );
        assert_eq!(pick_order(&scheduler, &store, 2), [queued]);
    }

    #[test]
    fn dequeue_keeps_the_bitmap_exact() {
        let mut store = Store::default();
        let mut scheduler = Scheduler::new();
        let a = store.add(0, 130, 0);
        let b = store.add(1, 130, 0);
        let c = store.add(2, 129, 0);
        for thread in [a, b, c] {
            scheduler.enqueue(&mut store, thread).unwrap();
        }
        scheduler.dequeue(&mut store, a).unwrap();
        assert!(
            bit_is_set(&scheduler.cores[0], 130),
            "queue of 130 still has b"
        );
        assert_eq!(store.links(a), Links::UNQUEUED);
        scheduler.dequeue(&mut store, b).unwrap();
        assert!(!bit_is_set(&scheduler.cores[0], 130));
        assert_eq!(scheduler.cores[0].summary, 1 << 2, "129 is still in word 2");
        scheduler.dequeue(&mut store, c).unwrap();
        assert_eq!(scheduler.cores[0].summary, 0);
        assert_eq!(scheduler.cores[0].bitmap, [0; BITMAP_WORDS]);
        assert_eq!(scheduler.highest_priority(0), None);
    }

    #[test]
    fn every_priority_is_found() {
        let mut store = Store::default();
        let mut scheduler = Scheduler::new();
        for priority in 0..=u8::MAX {
            let thread = store.add(usize::from(priority), priority, 3);
            scheduler.enqueue(&mut store, thread).unwrap();
            assert_eq!(scheduler.highest_priority(3), Some(priority));
            assert_eq!(scheduler.pick_next(&mut store, 3), Ok(Some(thread)));
            assert_eq!(scheduler.cores[3].summary, 0, "priority {priority}");
        }
        // All at once, queued lowest first: picked highest first.
        let mut rng = Rng::new(256);
        let mut order: Vec<u8> = (0..=u8::MAX).collect();
        for index in (1..order.len()).rev() {
            order.swap(index, rng.below(index + 1));
        }
        for &priority in &order {
            scheduler
                .enqueue(&mut store, thread(usize::from(priority)))
                .unwrap();
        }
        let expected: Vec<_> = (0..=u8::MAX)
            .rev()
            .map(|p| thread(usize::from(p)))
            .collect();
        assert_eq!(pick_order(&scheduler, &store, 3), expected);
    }

    #[test]
    fn preemption_needs_a_strictly_higher_priority() {
        let mut store = Store::default();
        let mut scheduler = Scheduler::new();
        let ready = store.add(0, 64, 0);
        scheduler.enqueue(&mut store, ready).unwrap();
        assert!(scheduler.should_preempt(0, 0));
        assert!(scheduler.should_preempt(0, 63));
        assert!(!scheduler.should_preempt(0, 64));
        assert!(!scheduler.should_preempt(0, 255));
        assert!(!scheduler.should_preempt(1, 0), "another core's thread");
    }

    #[test]
    fn a_priority_changed_while_queued_cannot_corrupt() {
        let mut store = Store::default();
        let mut scheduler = Scheduler::new();
        let threads: Vec<_> = (0..3).map(|index| store.add(index, 40, 0)).collect();
        let other = store.add(3, 41, 0);
        for &thread in threads.iter().chain([&other]) {
            scheduler.enqueue(&mut store, thread).unwrap();
        }
        // Contract broken on the head of its queue: refused, nothing changed.
        store.set_priority(threads[0], 41);
        let before = store.clone();
        assert_eq!(
            scheduler.dequeue(&mut store, threads[0]),
            Err(SchedulerError::Inconsistent)
        );
        assert_eq!(store.0, before.0);
        store.set_priority(threads[0], 40);
        // Broken on the interior: it leaves its real queue correctly.
        store.set_priority(threads[1], 41);
        assert_eq!(scheduler.dequeue(&mut store, threads[1]), Ok(()));
        store.set_priority(threads[1], 40);
        check_queue(
            &store,
            &scheduler.cores[0].queues[40],
            &[threads[0], threads[2]],
        );
        check_queue(&store, &scheduler.cores[0].queues[41], &[other]);
        assert!(bit_is_set(&scheduler.cores[0], 40) && bit_is_set(&scheduler.cores[0], 41));
    }

    #[test]
    fn timeslice_counts_down_and_refills() {
        let mut slice = Timeslice::new(3);
        assert_eq!((slice.length(), slice.remaining()), (3, 3));
        assert!(!slice.tick());
        assert!(!slice.tick());
        assert!(!slice.is_expired());
        assert!(slice.tick());
        assert!(slice.is_expired());
        assert!(slice.tick(), "stays expired");
        assert_eq!(slice.remaining(), 0);
        slice.refill();
        assert_eq!(slice, Timeslice::new(3));

        let mut shortest = Timeslice::new(0);
        assert_eq!(shortest.length(), 1);
        assert!(shortest.tick());
        assert_eq!(Timeslice::default().remaining(), Timeslice::DEFAULT_TICKS);
    }

    #[test]
    fn timeslices_rotate_peers_and_preemption_keeps_the_rest() {
        let mut store = Store::default();
        let mut scheduler = Scheduler::new();
        let peers = [
            store.add(0, 10, 0),
            store.add(1, 10, 0),
            store.add(2, 10, 0),
        ];
        let urgent = store.add(3, 20, 0);
        let mut slices: BTreeMap<ThreadRef, Timeslice> = BTreeMap::new();
        for &thread in &peers {
            slices.insert(thread, Timeslice::new(2));
            scheduler.enqueue(&mut store, thread).unwrap();
        }
        slices.insert(urgent, Timeslice::new(2));

        let mut running = scheduler.pick_next(&mut store, 0).unwrap().unwrap();
        let mut trace = Vec::new();
        for tick in 0..9 {
            if tick == 3 {
                // `urgent` wakes up half-way through the second peer's slice.
                scheduler.enqueue(&mut store, urgent).unwrap();
                assert!(scheduler.should_preempt(0, store.priority(running)));
                scheduler.enqueue_front(&mut store, running).unwrap();
                running = scheduler.pick_next(&mut store, 0).unwrap().unwrap();
            }
            trace.push(running);
            let slice = slices.get_mut(&running).unwrap();
            if tick == 4 {
                // `urgent` blocks; the preempted peer resumes.
                assert_eq!(running, urgent);
                running = scheduler.pick_next(&mut store, 0).unwrap().unwrap();
            } else if slice.tick() {
                slice.refill();
                scheduler.enqueue(&mut store, running).unwrap();
                running = scheduler.pick_next(&mut store, 0).unwrap().unwrap();
            }
        }
        let [a, b, c] = peers;
        // b had one tick left when preempted and gets exactly that one.
        assert_eq!(trace, [a, a, b, urgent, urgent, b, c, c, a]);
    }

    #[test]
    fn errors_display() {
        assert_eq!(
            SchedulerError::InvalidCore { core: 9 }.to_string(),
            std::format!("core 9 out of range (at most {MAX_CORES} cores)")
        );
        assert_eq!(
            SchedulerError::AlreadyQueued.to_string(),
            "thread is in a run queue already"
        );
        assert_eq!(
            SchedulerError::NotQueued.to_string(),
            "thread is not in a run queue"
        );
        assert_eq!(
            SchedulerError::Inconsistent.to_string(),
            "run queue links are inconsistent"
        );
        assert_eq!(
            SchedulerError::from(QueueError::Inconsistent),
            SchedulerError::Inconsistent
        );
    }

    /// The reference: per core, priority -> FIFO.
    struct Model {
        cores: Vec<BTreeMap<u8, VecDeque<ThreadRef>>>,
    }

    impl Model {
        fn new() -> Self {
            Model {
                cores: (0..MAX_CORES).map(|_| BTreeMap::new()).collect(),
            }
        }

        fn locate(&self, thread: ThreadRef) -> Option<(usize, u8, usize)> {
            self.cores
                .iter()
                .enumerate()
                .find_map(|(core, priorities)| {
                    priorities.iter().find_map(|(&priority, deque)| {
                        let position = deque.iter().position(|&t| t == thread)?;
                        Some((core, priority, position))
                    })
                })
        }

        fn enqueue(
            &mut self,
            store: &Store,
            thread: ThreadRef,
            front: bool,
        ) -> Result<(), SchedulerError> {
            let core = store.affinity(thread);
            if core >= MAX_CORES {
                return Err(SchedulerError::InvalidCore { core });
            }
            if self.locate(thread).is_some() {
                return Err(SchedulerError::AlreadyQueued);
            }
            let deque = self.cores[core].entry(store.priority(thread)).or_default();
            if front {
                deque.push_front(thread);
            } else {
                deque.push_back(thread);
            }
            Ok(())
        }

        fn dequeue(&mut self, store: &Store, thread: ThreadRef) -> Result<(), SchedulerError> {
            let core = store.affinity(thread);
            if core >= MAX_CORES {
                return Err(SchedulerError::InvalidCore { core });
            }
            let (found_core, priority, position) =
                self.locate(thread).ok_or(SchedulerError::NotQueued)?;
            // The test keeps the contract: queued threads keep their queue.
            assert_eq!((found_core, priority), (core, store.priority(thread)));
            let deque = self.cores[core].get_mut(&priority).unwrap();
            deque.remove(position);
            if deque.is_empty() {
                self.cores[core].remove(&priority);
            }
            Ok(())
        }

        fn pick_next(&mut self, core: usize) -> Result<Option<ThreadRef>, SchedulerError> {
            let priorities = self
                .cores
                .get_mut(core)
                .ok_or(SchedulerError::InvalidCore { core })?;
            let Some(mut entry) = priorities.last_entry() else {
                return Ok(None);
            };
            let thread = entry.get_mut().pop_front();
            if entry.get().is_empty() {
                entry.remove();
            }
            Ok(thread)
        }

        fn order(&self, core: usize) -> Vec<ThreadRef> {
            self.cores[core].values().rev().flatten().copied().collect()
        }
    }

    const MODEL_THREADS: usize = 24;
    /// Most threads share a few cores, so queues get long.
    const BUSY_CORES: usize = 3;
    /// Priorities at the edges of the bitmap words, so that every word and
    /// both levels are exercised, and FIFO order matters.
    const PALETTE: [u8; 8] = [0, 1, 63, 64, 127, 128, 200, 255];

    fn random_priority(rng: &mut Rng) -> u8 {
        if rng.below(4) == 0 {
            u8::try_from(rng.below(PRIORITY_LEVELS)).unwrap()
        } else {
            PALETTE[rng.below(PALETTE.len())]
        }
    }

    /// Usually a busy core; sometimes the last core or one out of range.
    fn random_core(rng: &mut Rng) -> usize {
        match rng.below(12) {
            0 => MAX_CORES - 1,
            1 => MAX_CORES,
            n => n % BUSY_CORES,
        }
    }

    fn check_against_model(scheduler: &Scheduler, store: &Store, model: &Model) {
        let mut appearances: BTreeMap<ThreadRef, usize> = BTreeMap::new();
        for (core, queues) in scheduler.cores.iter().enumerate() {
            // The queues the model has threads in: walked both ways.
            let mut expected_bitmap = [0; BITMAP_WORDS];
            for (&priority, deque) in &model.cores[core] {
                let (word, bit) = bitmap_position(priority);
                expected_bitmap[word] |= bit;
                let expected: Vec<_> = deque.iter().copied().collect();
                let queue = &queues.queues[usize::from(priority)];
                check_queue(store, queue, &expected);
                for thread in queue.iter(store) {
                    *appearances.entry(thread).or_default() += 1;
                    assert_eq!(
                        store.priority(thread),
                        priority,
                        "{thread:?} in a wrong priority"
                    );
                    assert_eq!(store.affinity(thread), core, "{thread:?} on a wrong core");
                }
            }
            // Every other queue is empty, and a bit is set iff its queue is
            // not empty.
            assert_eq!(queues.bitmap, expected_bitmap, "bitmap of core {core}");
            for (priority, queue) in queues.queues.iter().enumerate() {
                if expected_bitmap[priority / 64] & (1 << (priority % 64)) == 0 {
                    assert!(*queue == Queue::EMPTY, "core {core} priority {priority}");
                }
            }
            for word in 0..BITMAP_WORDS {
                assert_eq!(
                    queues.summary & (1 << word) != 0,
                    queues.bitmap[word] != 0,
                    "summary of core {core} word {word}"
                );
            }
            assert_eq!(queues.summary >> BITMAP_WORDS, 0, "summary of core {core}");

            let highest = model.cores[core].keys().next_back().copied();
            assert_eq!(scheduler.highest_priority(core), highest, "core {core}");
            let around = highest.map_or([0; 3], |h| [h.saturating_sub(1), h, h.saturating_add(1)]);
            for running in [0, 1, 63, 64, 127, 128, 254, 255].into_iter().chain(around) {
                assert_eq!(
                    scheduler.should_preempt(core, running),
                    highest.is_some_and(|h| h > running),
                    "core {core} running at {running}"
                );
            }
        }
        for (core, order) in pick_orders(scheduler, store).into_iter().enumerate() {
            assert_eq!(order, model.order(core), "pick order of core {core}");
        }
        for index in 0..MODEL_THREADS {
            let thread = thread(index);
            let count = appearances.get(&thread).copied().unwrap_or(0);
            assert!(count <= 1, "{thread:?} is in {count} queues");
            let links = store.links(thread);
            assert_eq!(links.queued, count == 1, "queued flag of {thread:?}");
            if !links.queued {
                assert_eq!(links, Links::UNQUEUED, "stale links of {thread:?}");
            }
        }
    }

    #[test]
    fn random_operations_match_a_model() {
        // Under Miri, which interprets slowly: one seed, fewer steps, and
        // the scheduler checked against the model only at every
        // `check_every`th step and after the last.
        let (steps, seeds, check_every): (usize, &[u64], usize) = if cfg!(miri) {
            (10, &[0x5eed], 5)
        } else {
            (2_500, &[0x5eed, 2, 0xfeed_f00d, 0x0bad_cafe_dead_beef], 1)
        };
        for &seed in seeds {
            let mut rng = Rng::new(seed);
            let mut store = Store::default();
            let mut scheduler = Scheduler::new();
            let mut model = Model::new();
            for index in 0..MODEL_THREADS {
                let priority = random_priority(&mut rng);
                store.add(index, priority, rng.below(BUSY_CORES));
            }
            let mut picked = 0;
            for step in 0..steps {
                let thread = thread(rng.below(MODEL_THREADS));
                let context = std::format!("seed {seed:#x} step {step} thread {thread:?}");
                match rng.below(100) {
                    0..30 => {
                        let expected = model.enqueue(&store, thread, false);
                        assert_eq!(scheduler.enqueue(&mut store, thread), expected, "{context}");
                    }
                    30..45 => {
                        let expected = model.enqueue(&store, thread, true);
                        assert_eq!(
                            scheduler.enqueue_front(&mut store, thread),
                            expected,
                            "{context}"
                        );
                    }
                    45..60 => {
                        let expected = model.dequeue(&store, thread);
                        assert_eq!(scheduler.dequeue(&mut store, thread), expected, "{context}");
                    }
                    60..85 => {
                        let core = random_core(&mut rng);
                        let expected = model.pick_next(core);
                        let result = scheduler.pick_next(&mut store, core);
                        assert_eq!(result, expected, "{context} core {core}");
                        picked += usize::from(matches!(result, Ok(Some(_))));
                    }
                    // Change the priority or the affinity the way the kernel
                    // must: out of the queue, change, back in.
                    change => {
                        let queued = store.links(thread).queued;
                        if queued {
                            let expected = model.dequeue(&store, thread);
                            assert_eq!(expected, Ok(()));
                            assert_eq!(
                                scheduler.dequeue(&mut store, thread),
                                expected,
                                "{context}"
                            );
                        }
                        if change < 95 {
                            store.set_priority(thread, random_priority(&mut rng));
                        } else {
                            store.set_affinity(thread, random_core(&mut rng));
                        }
                        if queued {
                            let expected = model.enqueue(&store, thread, false);
                            assert_eq!(
                                scheduler.enqueue(&mut store, thread),
                                expected,
                                "{context}"
                            );
                        }
                    }
                }
                if step % check_every == 0 || step + 1 == steps {
                    check_against_model(&scheduler, &store, &model);
                }
            }
            assert!(picked > steps / 10, "too few threads picked: {picked}");
        }
    }
}
