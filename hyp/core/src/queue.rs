//! Intrusive FIFO queues of threads.
//!
//! The kernel has no heap, so a queue of threads (a core's run queue at one
//! priority, the senders blocked on an endpoint, ...) cannot own an array or
//! allocate list nodes: the links live inside each TCB, in memory that was
//! retyped from untyped when the thread was made, and the queue itself is only
//! a head and a tail. Queueing a thread therefore never needs memory, and every
//! operation except iteration is O(1). `hyp-core` never dereferences a TCB, so
//! the links are reached through [`LinkStore`], which the object store
//! implements over real memory and the tests implement over a map.
//!
//! A mistake here (a thread in two queues, a link that points nowhere) would
//! corrupt scheduling silently and much later, so every operation reads and
//! checks all the links it is about to change before it writes any of them.
//! It either does all of its work or returns an error and changes nothing; it
//! never panics, and iteration cannot loop forever even over corrupt links.

use core::fmt;
use core::iter::FusedIterator;

use crate::object::ThreadRef;

/// The queue links inside one thread's TCB.
///
/// Only [`Queue`] writes them; the rest of the kernel may read `queued` to
/// ask whether a thread waits in some queue.
///
/// # Invariants
///
/// - A thread in no queue has [`Links::UNQUEUED`]: no neighbours and
///   `queued == false`.
/// - A thread in a queue has `queued == true`, and its neighbours point back
///   at it: `links(next).prev == Some(thread)` and
///   `links(prev).next == Some(thread)`. The head has no `prev`, the tail no
///   `next`.
/// - A thread is in at most one queue at a time. `queued` is what makes this
///   checkable in O(1): every insertion refuses a thread that has it set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Links {
    /// The thread behind this one (towards the tail), if any.
    pub next: Option<ThreadRef>,
    /// The thread in front of this one (towards the head), if any.
    pub prev: Option<ThreadRef>,
    /// Whether the thread is in a queue at all.
    pub queued: bool,
}

impl Links {
    /// The links of the only thread of a queue.
    pub const ALONE: Links = Links {
        next: None,
        prev: None,
        queued: true,
    };

    /// The links of a thread that is in no queue. A new TCB starts with these.
    pub const UNQUEUED: Links = Links {
        next: None,
        prev: None,
        queued: false,
    };
}

/// Where the [`Links`] of each thread are kept: inside its TCB.
///
/// Implemented by the kernel's object store over real memory and by the tests
/// over a map. Links are passed by value so that the store decides how they
/// are laid out in a TCB, and so that a queue kept inside another kernel
/// object (an endpoint) can be copied out, changed and written back while the
/// store is borrowed mutably.
///
/// # Contract
///
/// `links(thread)` returns what `set_links(thread, ..)` last stored, and
/// [`Links::UNQUEUED`] for a thread whose links were never set. The queue
/// code is only ever given threads that exist; validating a capability to a
/// thread is the caller's job, before the queue is touched.
pub trait LinkStore {
    /// The links stored in `thread`'s TCB.
    fn links(&self, thread: ThreadRef) -> Links;
    /// Stores `links` in `thread`'s TCB.
    fn set_links(&mut self, thread: ThreadRef, links: Links);
}

/// Why a queue operation was refused. In every case nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// The thread is in a queue already (this one or another one).
    AlreadyQueued,
    /// The thread is in no queue.
    NotQueued,
    /// The links disagree with the queue. Either the thread sits at the
    /// head or tail of a *different* queue than the one named, or the links
    /// were corrupted (a kernel bug, or a stale copy of a [`Queue`] used after
    /// the original changed).
    Inconsistent,
}

impl fmt::Display for QueueError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            QueueError::AlreadyQueued => "thread is queued already",
            QueueError::NotQueued => "thread is not queued",
            QueueError::Inconsistent => "queue links are inconsistent",
        })
    }
}

/// An intrusive FIFO of threads: only a head and a tail; the links are in the
/// threads (see [`LinkStore`]).
///
/// A `Queue` is `Copy` so that one kept inside a kernel object can be copied
/// out, operated on with the store borrowed mutably, and written back. Only
/// the latest copy is valid: using an older one after the queue changed is a
/// bug. The checks below catch it whenever it touches a changed end of the
/// queue, and then refuse with [`QueueError::Inconsistent`].
///
/// # Invariants
///
/// - `head.is_none() == tail.is_none()`.
/// - Following `next` from `head` visits every thread of the queue once, in
///   FIFO order, and ends at `tail`; following `prev` from `tail` visits them
///   in reverse and ends at `head`. Each of them has `queued == true`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Queue {
    head: Option<ThreadRef>,
    tail: Option<ThreadRef>,
}

impl Queue {
    /// A queue with no threads.
    pub const EMPTY: Queue = Queue {
        head: None,
        tail: None,
    };

    /// The queue holding only `thread` (whose links must then be
    /// [`Links::ALONE`]): for the kernel's fast paths, which put a thread
    /// into an empty queue without the general insertion.
    pub const fn of_one(thread: ThreadRef) -> Queue {
        Queue {
            head: Some(thread),
            tail: Some(thread),
        }
    }

    /// Whether no thread is in the queue.
    pub const fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    /// The thread that [`Queue::pop_front`] would return.
    pub const fn head(&self) -> Option<ThreadRef> {
        self.head
    }

    /// The thread at the back: the last one [`Queue::pop_front`] would
    /// return.
    pub const fn tail(&self) -> Option<ThreadRef> {
        self.tail
    }

    /// Puts `thread` at the back of the queue.
    ///
    /// # Errors
    ///
    /// [`QueueError::AlreadyQueued`] if `thread` is in any queue;
    /// [`QueueError::Inconsistent`] if the current tail's links do not say it
    /// is the tail of a queue. Nothing is changed on error.
    pub fn push_back(
        &mut self,
        store: &mut impl LinkStore,
        thread: ThreadRef,
    ) -> Result<(), QueueError> {
        if store.links(thread).queued {
            return Err(QueueError::AlreadyQueued);
        }
        match (self.head, self.tail) {
            (None, None) => self.push_only(store, thread),
            (Some(_), Some(tail)) => {
                let mut tail_links = store.links(tail);
                // `thread == tail` cannot pass: `thread` is not queued.
                if !tail_links.queued || tail_links.next.is_some() {
                    return Err(QueueError::Inconsistent);
                }
                tail_links.next = Some(thread);
                store.set_links(tail, tail_links);
                store.set_links(
                    thread,
                    Links {
                        next: None,
                        prev: Some(tail),
                        queued: true,
                    },
                );
                self.tail = Some(thread);
            }
            _ => return Err(QueueError::Inconsistent),
        }
        Ok(())
    }

    /// Puts `thread` at the front of the queue, so that it is the next one
    /// [`Queue::pop_front`] returns.
    ///
    /// # Errors
    ///
    /// As [`Queue::push_back`], with the head in place of the tail.
    pub fn push_front(
        &mut self,
        store: &mut impl LinkStore,
        thread: ThreadRef,
    ) -> Result<(), QueueError> {
        if store.links(thread).queued {
            return Err(QueueError::AlreadyQueued);
        }
        match (self.head, self.tail) {
            (None, None) => self.push_only(store, thread),
            (Some(head), Some(_)) => {
                let mut head_links = store.links(head);
                if !head_links.queued || head_links.prev.is_some() {
                    return Err(QueueError::Inconsistent);
                }
                head_links.prev = Some(thread);
                store.set_links(head, head_links);
                store.set_links(
                    thread,
                    Links {
                        next: Some(head),
                        prev: None,
                        queued: true,
                    },
                );
                self.head = Some(thread);
            }
            _ => return Err(QueueError::Inconsistent),
        }
        Ok(())
    }

    /// Makes `thread` the only member of this empty queue.
    fn push_only(&mut self, store: &mut impl LinkStore, thread: ThreadRef) {
        store.set_links(
            thread,
            Links {
                next: None,
                prev: None,
                queued: true,
            },
        );
        self.head = Some(thread);
        self.tail = Some(thread);
    }

    /// Takes the thread at the front out of the queue and returns it, or
    /// `None` if the queue is empty.
    ///
    /// # Errors
    ///
    /// [`QueueError::Inconsistent`] if the head's links disagree with the
    /// queue (a kernel bug). Nothing is changed on error.
    pub fn pop_front(
        &mut self,
        store: &mut impl LinkStore,
    ) -> Result<Option<ThreadRef>, QueueError> {
        let Some(head) = self.head else {
            return Ok(None);
        };
        match self.remove(store, head) {
            Ok(()) => Ok(Some(head)),
            // The head of a queue must be queued.
            Err(QueueError::NotQueued) => Err(QueueError::Inconsistent),
            Err(error) => Err(error),
        }
    }

    /// Takes `thread` out of the queue, wherever it is in it, in O(1).
    ///
    /// # Contract
    ///
    /// If `thread` is queued, the caller names the queue it is in: the links
    /// do not say which queue that is. A wrong queue cannot corrupt anything:
    /// if `thread` is at the head or tail of its real queue, the mismatch with
    /// this queue's head or tail is detected and refused; if it is in the
    /// interior of its real queue, unlinking it touches neither queue's ends,
    /// so the thread leaves its real queue correctly (and `Ok` is returned).
    ///
    /// # Errors
    ///
    /// [`QueueError::NotQueued`] if `thread` is in no queue;
    /// [`QueueError::Inconsistent`] if `thread` is at an end of another queue,
    /// or its neighbours' links do not point back at it. Nothing is changed on
    /// error.
    pub fn remove(
        &mut self,
        store: &mut impl LinkStore,
        thread: ThreadRef,
    ) -> Result<(), QueueError> {
        let links = store.links(thread);
        if !links.queued {
            return Err(QueueError::NotQueued);
        }
        // Read and check both neighbours before writing anything. A thread is
        // never its own neighbour, and its two neighbours are never the same
        // thread: either would mean a cycle.
        let prev = match links.prev {
            None if self.head == Some(thread) => None,
            Some(prev) if prev != thread && links.next != Some(prev) => {
                let prev_links = store.links(prev);
                if !prev_links.queued || prev_links.next != Some(thread) {
                    return Err(QueueError::Inconsistent);
                }
                Some((prev, prev_links))
            }
            _ => return Err(QueueError::Inconsistent),
        };
        let next = match links.next {
            None if self.tail == Some(thread) => None,
            Some(next) if next != thread => {
                let next_links = store.links(next);
                if !next_links.queued || next_links.prev != Some(thread) {
                    return Err(QueueError::Inconsistent);
                }
                Some((next, next_links))
            }
            _ => return Err(QueueError::Inconsistent),
        };

        match prev {
            None => self.head = links.next,
            Some((prev, mut prev_links)) => {
                prev_links.next = links.next;
                store.set_links(prev, prev_links);
            }
        }
        match next {
            None => self.tail = links.prev,
            Some((next, mut next_links)) => {
                next_links.prev = links.prev;
                store.set_links(next, next_links);
            }
        }
        store.set_links(thread, Links::UNQUEUED);
        Ok(())
    }

    /// The threads of the queue from head to tail.
    ///
    /// The walk checks every step: it stops early, without returning the
    /// offending thread, at a thread that is not queued or whose `prev` does
    /// not point at the thread returned before it (the head must have no
    /// `prev`), and it stops after the tail. Those checks make it terminate on
    /// any links, even corrupt ones, without a step limit: a thread's `prev`
    /// names the one thread allowed before it, and the store cannot change
    /// while it is borrowed, so the walk can never come back to a thread it
    /// has returned: it returns each thread of the store at most once.
    pub fn iter<'a, S: LinkStore + ?Sized>(&self, store: &'a S) -> Iter<'a, S> {
        Iter {
            store,
            next: self.head,
            prev: None,
            tail: self.tail,
        }
    }
}

/// The iterator of [`Queue::iter`].
///
/// # Invariants
///
/// `prev` is the thread returned last (`None` before the first), so the
/// thread returned next must have `links.prev == prev`.
pub struct Iter<'a, S: LinkStore + ?Sized> {
    store: &'a S,
    next: Option<ThreadRef>,
    prev: Option<ThreadRef>,
    tail: Option<ThreadRef>,
}

impl<S: LinkStore + ?Sized> Iterator for Iter<'_, S> {
    type Item = ThreadRef;

    fn next(&mut self) -> Option<ThreadRef> {
        let thread = self.next.take()?;
        let links = self.store.links(thread);
        if !links.queued || links.prev != self.prev {
            return None;
        }
        self.prev = Some(thread);
        if Some(thread) != self.tail {
            self.next = links.next;
        }
        Some(thread)
    }
}

impl<S: LinkStore + ?Sized> FusedIterator for Iter<'_, S> {}

impl<S: LinkStore + ?Sized> fmt::Debug for Iter<'_, S> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Iter")
            .field("next", &self.next)
            .field("prev", &self.prev)
            .field("tail", &self.tail)
            .finish_non_exhaustive()
    }
}

/// Helpers shared by the queue and scheduler tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use std::vec::Vec;

    /// xorshift64*: a small deterministic generator, so the property tests
    /// need no external crate and every failure replays from its seed.
    pub(crate) struct Rng(u64);

    impl Rng {
        pub(crate) fn new(seed: u64) -> Self {
            // The state must never be zero.
            Rng(seed | 1)
        }

        pub(crate) fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        /// A number in `0..bound` (`bound > 0`).
        pub(crate) fn below(&mut self, bound: usize) -> usize {
            usize::try_from(self.next_u64() % bound as u64).unwrap()
        }
    }

    /// Checks `queue` holds exactly `expected`, in order, by walking its raw
    /// links forward from the head and backward from the tail (each visited
    /// thread must be queued and its links must agree both ways), and by
    /// [`Queue::iter`].
    pub(crate) fn check_queue<S: LinkStore>(store: &S, queue: &Queue, expected: &[ThreadRef]) {
        assert_eq!(
            queue.is_empty(),
            expected.is_empty(),
            "is_empty of {queue:?}"
        );
        assert_eq!(queue.head(), expected.first().copied(), "head");
        assert_eq!(queue.tail(), expected.last().copied(), "tail");

        let mut forward = Vec::new();
        let mut previous = None;
        let mut cursor = queue.head();
        while let Some(thread) = cursor {
            assert!(
                forward.len() < expected.len(),
                "forward walk longer than {expected:?}"
            );
            let links = store.links(thread);
            assert!(links.queued, "{thread:?} in a queue but not marked queued");
            assert_eq!(links.prev, previous, "prev of {thread:?}");
            forward.push(thread);
            previous = Some(thread);
            cursor = links.next;
        }
        assert_eq!(forward, expected, "forward walk");

        let mut backward = Vec::new();
        let mut following = None;
        let mut cursor = queue.tail();
        while let Some(thread) = cursor {
            assert!(
                backward.len() < expected.len(),
                "backward walk longer than {expected:?}"
            );
            let links = store.links(thread);
            assert_eq!(links.next, following, "next of {thread:?}");
            backward.push(thread);
            following = Some(thread);
            cursor = links.prev;
        }
        backward.reverse();
        assert_eq!(backward, expected, "backward walk");

        assert_eq!(queue.iter(store).collect::<Vec<_>>(), expected, "iter");
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{Rng, check_queue};
    use super::*;
    use crate::object::ObjectRef;
    use std::collections::{BTreeMap, BTreeSet, VecDeque};
    use std::string::ToString;
    use std::vec::Vec;

    /// Links kept in a map; a thread never written has [`Links::UNQUEUED`].
    #[derive(Clone, Debug, Default)]
    struct Store(BTreeMap<ThreadRef, Links>);

    impl LinkStore for Store {
        fn links(&self, thread: ThreadRef) -> Links {
            self.0.get(&thread).copied().unwrap_or_default()
        }
        fn set_links(&mut self, thread: ThreadRef, links: Links) {
            self.0.insert(thread, links);
        }
    }

    /// Thread number `index`, at a TCB-like address.
    fn thread(index: usize) -> ThreadRef {
        ObjectRef(0x4000_0000 + 0x1000 * index as u64)
    }

    fn queue_of(store: &mut Store, indices: &[usize]) -> Queue {
        let mut queue = Queue::EMPTY;
        for &index in indices {
            queue.push_back(store, thread(index)).unwrap();
        }
        queue
    }

    fn threads(indices: &[usize]) -> Vec<ThreadRef> {
        indices.iter().map(|&index| thread(index)).collect()
    }

    #[test]
    fn empty_queue() {
        let mut store = Store::default();
        let mut queue = Queue::EMPTY;
        assert_eq!(queue, Queue::default());
        check_queue(&store, &queue, &[]);
        assert_eq!(queue.pop_front(&mut store), Ok(None));
        assert!(store.0.is_empty(), "popping an empty queue wrote links");
    }

    #[test]
    fn push_back_and_pop_front_are_fifo() {
        let mut store = Store::default();
        let mut queue = queue_of(&mut store, &[1, 2, 3]);
        check_queue(&store, &queue, &threads(&[1, 2, 3]));
        assert_eq!(queue.pop_front(&mut store), Ok(Some(thread(1))));
        assert_eq!(store.links(thread(1)), Links::UNQUEUED);
        check_queue(&store, &queue, &threads(&[2, 3]));
        assert_eq!(queue.pop_front(&mut store), Ok(Some(thread(2))));
        assert_eq!(queue.pop_front(&mut store), Ok(Some(thread(3))));
        assert_eq!(queue.pop_front(&mut store), Ok(None));
        check_queue(&store, &queue, &[]);
        for index in 1..=3 {
            assert_eq!(store.links(thread(index)), Links::UNQUEUED);
        }
    }

    #[test]
    fn push_front_goes_before_the_head() {
        let mut store = Store::default();
        let mut queue = Queue::EMPTY;
        queue.push_front(&mut store, thread(1)).unwrap();
        check_queue(&store, &queue, &threads(&[1]));
        queue.push_back(&mut store, thread(2)).unwrap();
        queue.push_front(&mut store, thread(3)).unwrap();
        check_queue(&store, &queue, &threads(&[3, 1, 2]));
        assert_eq!(queue.pop_front(&mut store), Ok(Some(thread(3))));
    }

    #[test]
    fn push_refuses_a_queued_thread_without_change() {
        let mut store = Store::default();
        let mut queue = queue_of(&mut store, &[1, 2]);
        let mut other = queue_of(&mut store, &[3]);
        let (before_store, before_queue, before_other) = (store.clone(), queue, other);
        for candidate in [1, 2, 3] {
            assert_eq!(
                queue.push_back(&mut store, thread(candidate)),
                Err(QueueError::AlreadyQueued)
            );
            assert_eq!(
                queue.push_front(&mut store, thread(candidate)),
                Err(QueueError::AlreadyQueued)
            );
            assert_eq!(
                other.push_back(&mut store, thread(candidate)),
                Err(QueueError::AlreadyQueued)
            );
        }
        assert_eq!(store.0, before_store.0);
        assert_eq!((queue, other), (before_queue, before_other));
    }

    #[test]
    fn remove_from_every_position() {
        // (queue, thread to remove, what is left)
        let cases: [(&[usize], usize, &[usize]); 5] = [
            (&[1], 1, &[]),
            (&[1, 2, 3], 1, &[2, 3]),
            (&[1, 2, 3], 2, &[1, 3]),
            (&[1, 2, 3], 3, &[1, 2]),
            (&[1, 2], 2, &[1]),
        ];
        for (initial, removed, left) in cases {
            let mut store = Store::default();
            let mut queue = queue_of(&mut store, initial);
            assert_eq!(queue.remove(&mut store, thread(removed)), Ok(()));
            assert_eq!(store.links(thread(removed)), Links::UNQUEUED);
            check_queue(&store, &queue, &threads(left));
        }
    }

    #[test]
    fn remove_refuses_an_unqueued_thread() {
        let mut store = Store::default();
        let mut queue = queue_of(&mut store, &[1]);
        assert_eq!(
            queue.remove(&mut store, thread(9)),
            Err(QueueError::NotQueued)
        );
        let mut empty = Queue::EMPTY;
        assert_eq!(
            empty.remove(&mut store, thread(9)),
            Err(QueueError::NotQueued)
        );
        assert_eq!(store.0.len(), 1, "a refused remove wrote links");
        check_queue(&store, &queue, &threads(&[1]));
    }

    #[test]
    fn remove_from_the_wrong_queue_at_an_end_is_refused() {
        let mut store = Store::default();
        let mut queue = queue_of(&mut store, &[1, 2, 3]);
        let mut other = queue_of(&mut store, &[4, 5]);
        let before = store.clone();
        for candidate in [1, 3] {
            assert_eq!(
                other.remove(&mut store, thread(candidate)),
                Err(QueueError::Inconsistent)
            );
        }
        let mut empty = Queue::EMPTY;
        assert_eq!(
            empty.remove(&mut store, thread(4)),
            Err(QueueError::Inconsistent)
        );
        assert_eq!(
            queue.remove(&mut store, thread(5)),
            Err(QueueError::Inconsistent)
        );
        assert_eq!(store.0, before.0);
        check_queue(&store, &queue, &threads(&[1, 2, 3]));
        check_queue(&store, &other, &threads(&[4, 5]));
    }

    #[test]
    fn remove_from_the_wrong_queue_in_the_interior_unlinks_correctly() {
        // Documented behaviour: the interior of a queue does not involve the
        // queue's ends, so the thread leaves its real queue intact.
        let mut store = Store::default();
        let queue = queue_of(&mut store, &[1, 2, 3]);
        let mut other = queue_of(&mut store, &[4, 5]);
        assert_eq!(other.remove(&mut store, thread(2)), Ok(()));
        check_queue(&store, &queue, &threads(&[1, 3]));
        check_queue(&store, &other, &threads(&[4, 5]));
        assert_eq!(store.links(thread(2)), Links::UNQUEUED);
    }

    #[test]
    fn a_stale_copy_of_a_queue_is_refused() {
        let mut store = Store::default();
        let mut queue = queue_of(&mut store, &[1, 2]);
        let mut stale = queue;
        queue.push_back(&mut store, thread(3)).unwrap();
        queue.pop_front(&mut store).unwrap();
        let before = store.clone();
        // The stale copy still has 1 as head and 2 as tail.
        assert_eq!(
            stale.push_back(&mut store, thread(4)),
            Err(QueueError::Inconsistent)
        );
        assert_eq!(
            stale.push_front(&mut store, thread(4)),
            Err(QueueError::Inconsistent)
        );
        assert_eq!(stale.pop_front(&mut store), Err(QueueError::Inconsistent));
        assert_eq!(
            stale.remove(&mut store, thread(2)),
            Err(QueueError::Inconsistent)
        );
        assert_eq!(store.0, before.0);
        check_queue(&store, &queue, &threads(&[2, 3]));
    }

    #[test]
    fn corrupt_links_are_refused_without_change() {
        let mut store = Store::default();
        let mut queue = queue_of(&mut store, &[1, 2, 3]);

        // The tail claims a successor: push_back must not overwrite it.
        let mut tail = store.links(thread(3));
        tail.next = Some(thread(7));
        store.set_links(thread(3), tail);
        let before = store.clone();
        assert_eq!(
            queue.push_back(&mut store, thread(4)),
            Err(QueueError::Inconsistent)
        );
        assert_eq!(store.0, before.0);
        tail.next = None;
        store.set_links(thread(3), tail);

        // The middle thread's successor does not point back at it.
        let mut last = store.links(thread(3));
        last.prev = Some(thread(1));
        store.set_links(thread(3), last);
        let before = store.clone();
        assert_eq!(
            queue.remove(&mut store, thread(2)),
            Err(QueueError::Inconsistent)
        );
        assert_eq!(store.0, before.0);
        last.prev = Some(thread(2));
        store.set_links(thread(3), last);

        // A thread that is its own neighbour.
        let mut middle = store.links(thread(2));
        middle.next = Some(thread(2));
        store.set_links(thread(2), middle);
        assert_eq!(
            queue.remove(&mut store, thread(2)),
            Err(QueueError::Inconsistent)
        );
        // Both neighbours the same thread.
        middle.next = Some(thread(1));
        store.set_links(thread(2), middle);
        assert_eq!(
            queue.remove(&mut store, thread(2)),
            Err(QueueError::Inconsistent)
        );

        // The head not marked queued: pop_front reports corruption, not
        // "not queued".
        let mut store = Store::default();
        let mut queue = queue_of(&mut store, &[1]);
        store.set_links(thread(1), Links::UNQUEUED);
        assert_eq!(queue.pop_front(&mut store), Err(QueueError::Inconsistent));
        assert_eq!(queue.head(), Some(thread(1)));
    }

    #[test]
    fn iter_stops_at_corrupt_links() {
        let mut store = Store::default();
        let queue = queue_of(&mut store, &[1, 2, 3, 4]);

        // A cycle 4 -> 2 (with 4 no longer the tail, as a stale copy would
        // see it): the walk stops at the broken back link, never repeats.
        let mut last = store.links(thread(4));
        last.next = Some(thread(2));
        store.set_links(thread(4), last);
        let stale_tail = Queue {
            head: queue.head,
            tail: Some(thread(9)),
        };
        assert_eq!(
            stale_tail.iter(&store).take(10).collect::<Vec<_>>(),
            threads(&[1, 2, 3, 4])
        );

        // A thread in the middle marked unqueued ends the walk before it.
        store.set_links(thread(3), Links::UNQUEUED);
        assert_eq!(queue.iter(&store).collect::<Vec<_>>(), threads(&[1, 2]));

        // A head that has a predecessor is not the head of anything.
        let mut store = Store::default();
        let queue = queue_of(&mut store, &[1, 2]);
        let mut head = store.links(thread(1));
        head.prev = Some(thread(2));
        store.set_links(thread(1), head);
        assert_eq!(queue.iter(&store).take(10).count(), 0);

        // The walk ends at the tail even if the tail claims a successor that
        // points back at it.
        let mut store = Store::default();
        let queue = queue_of(&mut store, &[1, 2, 3]);
        let mut tail = store.links(thread(3));
        tail.next = Some(thread(4));
        store.set_links(thread(3), tail);
        store.set_links(
            thread(4),
            Links {
                next: None,
                prev: Some(thread(3)),
                queued: true,
            },
        );
        assert_eq!(
            queue.iter(&store).take(10).collect::<Vec<_>>(),
            threads(&[1, 2, 3])
        );

        // A ring closed by its forward links, with no tail to stop at: walked
        // once, because the head has no `prev`.
        let mut store = Store::default();
        for index in 0..3 {
            store.set_links(
                thread(index),
                Links {
                    next: Some(thread((index + 1) % 3)),
                    prev: if index == 0 {
                        None
                    } else {
                        Some(thread(index - 1))
                    },
                    queued: true,
                },
            );
        }
        let ring = Queue {
            head: Some(thread(0)),
            tail: None,
        };
        let mut iter = ring.iter(&store);
        assert_eq!(
            iter.by_ref().take(10).collect::<Vec<_>>(),
            threads(&[0, 1, 2])
        );
        assert_eq!(iter.next(), None, "not fused");
    }

    #[test]
    fn errors_display() {
        assert_eq!(
            QueueError::AlreadyQueued.to_string(),
            "thread is queued already"
        );
        assert_eq!(QueueError::NotQueued.to_string(), "thread is not queued");
        assert_eq!(
            QueueError::Inconsistent.to_string(),
            "queue links are inconsistent"
        );
        let store = Store::default();
        let text = std::format!("{:?}", Queue::EMPTY.iter(&store));
        assert!(text.starts_with("Iter"), "{text}");
    }

    const MODEL_THREADS: usize = 10;
    const MODEL_QUEUES: usize = 3;

    fn model_steps() -> usize {
        if cfg!(miri) { 50 } else { 20_000 }
    }

    /// Every how many steps the model test checks every queue and link
    /// (and after the last): fewer checks under Miri, which interprets
    /// slowly.
    fn model_check_every() -> usize {
        if cfg!(miri) { 5 } else { 1 }
    }

    fn model_seeds() -> &'static [u64] {
        if cfg!(miri) {
            &[0x5eed]
        } else {
            &[0x5eed, 1, 0xdead_beef, 0x0123_4567_89ab_cdef]
        }
    }

    /// Which model queue holds `thread`, and where, if any.
    fn find(model: &[VecDeque<ThreadRef>], thread: ThreadRef) -> Option<(usize, usize)> {
        model.iter().enumerate().find_map(|(queue, deque)| {
            deque
                .iter()
                .position(|&t| t == thread)
                .map(|position| (queue, position))
        })
    }

    fn check_all(store: &Store, queues: &[Queue], model: &[VecDeque<ThreadRef>]) {
        let mut seen = BTreeMap::new();
        for (queue, deque) in queues.iter().zip(model) {
            let expected: Vec<_> = deque.iter().copied().collect();
            check_queue(store, queue, &expected);
            for thread in queue.iter(store) {
                *seen.entry(thread).or_insert(0) += 1;
            }
        }
        for index in 0..MODEL_THREADS {
            let links = store.links(thread(index));
            let count = seen.get(&thread(index)).copied().unwrap_or(0);
            assert!(count <= 1, "{:?} is in {count} queues", thread(index));
            assert_eq!(
                links.queued,
                count == 1,
                "queued flag of {:?}",
                thread(index)
            );
            if !links.queued {
                assert_eq!(links, Links::UNQUEUED, "stale links of {:?}", thread(index));
            }
        }
    }

    #[test]
    fn random_operations_match_a_vecdeque_model() {
        for &seed in model_seeds() {
            let mut rng = Rng::new(seed);
            let mut store = Store::default();
            let mut queues = [Queue::EMPTY; MODEL_QUEUES];
            let mut model: [VecDeque<ThreadRef>; MODEL_QUEUES] = Default::default();
            let mut wrong_queue_refusals = 0;
            let mut middle_removals = 0;
            for step in 0..model_steps() {
                let q = rng.below(MODEL_QUEUES);
                let candidate = thread(rng.below(MODEL_THREADS));
                let found = find(&model, candidate);
                match rng.below(10) {
                    0..=2 => {
                        let expected = match found {
                            Some(_) => Err(QueueError::AlreadyQueued),
                            None => {
                                model[q].push_back(candidate);
                                Ok(())
                            }
                        };
                        assert_eq!(queues[q].push_back(&mut store, candidate), expected);
                    }
                    3..=4 => {
                        let expected = match found {
                            Some(_) => Err(QueueError::AlreadyQueued),
                            None => {
                                model[q].push_front(candidate);
                                Ok(())
                            }
                        };
                        assert_eq!(queues[q].push_front(&mut store, candidate), expected);
                    }
                    5..=6 => {
                        let expected = model[q].pop_front();
                        assert_eq!(queues[q].pop_front(&mut store), Ok(expected));
                    }
                    _ => {
                        // Usually the right queue; sometimes a wrong one, to
                        // check that misuse cannot corrupt.
                        let named = match found {
                            Some((real, _)) if rng.below(4) != 0 => real,
                            _ => q,
                        };
                        let expected = match found {
                            None => Err(QueueError::NotQueued),
                            Some((real, position)) => {
                                let at_end = position == 0 || position + 1 == model[real].len();
                                if real != named && at_end {
                                    wrong_queue_refusals += 1;
                                    Err(QueueError::Inconsistent)
                                } else {
                                    if real != named {
                                        middle_removals += 1;
                                    }
                                    model[real].remove(position);
                                    Ok(())
                                }
                            }
                        };
                        assert_eq!(
                            queues[named].remove(&mut store, candidate),
                            expected,
                            "seed {seed:#x} step {step}"
                        );
                    }
                }
                if step % model_check_every() == 0 || step + 1 == model_steps() {
                    check_all(&store, &queues, &model);
                }
            }
            if !cfg!(miri) {
                assert!(
                    wrong_queue_refusals > 0 && middle_removals > 0,
                    "misuse not exercised"
                );
            }
        }
    }

    #[test]
    fn random_corruption_never_panics_or_loops() {
        // Scribble random links, then run random operations: nothing may
        // panic, every error must leave the store alone, and a walk never
        // returns a thread twice.
        let rounds = if cfg!(miri) { 3 } else { 2_000 };
        let mut rng = Rng::new(0x00c0_ffee);
        for _ in 0..rounds {
            let mut store = Store::default();
            let mut queues = [Queue::EMPTY; MODEL_QUEUES];
            let random_thread = |rng: &mut Rng| match rng.below(MODEL_THREADS + 1) {
                MODEL_THREADS => None,
                index => Some(thread(index)),
            };
            for index in 0..MODEL_THREADS {
                let links = Links {
                    next: random_thread(&mut rng),
                    prev: random_thread(&mut rng),
                    queued: rng.below(2) == 0,
                };
                store.set_links(thread(index), links);
            }
            for queue in &mut queues {
                queue.head = random_thread(&mut rng);
                queue.tail = random_thread(&mut rng);
            }
            for _ in 0..20 {
                let q = rng.below(MODEL_QUEUES);
                let candidate = thread(rng.below(MODEL_THREADS));
                let (store_before, queue_before) = (store.clone(), queues[q]);
                let result = match rng.below(4) {
                    0 => queues[q].push_back(&mut store, candidate),
                    1 => queues[q].push_front(&mut store, candidate),
                    2 => queues[q].pop_front(&mut store).map(|_| ()),
                    _ => queues[q].remove(&mut store, candidate),
                };
                if result.is_err() {
                    assert_eq!(store.0, store_before.0, "a refused operation wrote links");
                    assert_eq!(queues[q], queue_before);
                }
                for queue in &queues {
                    // Bounded, so that a walk that loops fails the test
                    // instead of hanging it.
                    let walked: Vec<_> = queue.iter(&store).take(MODEL_THREADS + 1).collect();
                    assert!(walked.len() <= MODEL_THREADS, "walk too long: {walked:?}");
                    let distinct: BTreeSet<_> = walked.iter().collect();
                    assert_eq!(distinct.len(), walked.len(), "walk repeated a thread");
                }
            }
        }
    }
}
