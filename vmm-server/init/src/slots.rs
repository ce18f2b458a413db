//! The root task's slot allocator: every capability init creates needs an
//! empty slot of its CNode, and the boot-info page says which slots are
//! empty (a contiguous range up to the CNode's end). Slots are handed out
//! in order, like a stack: a test takes a [`SlotMark`] before it starts
//! and, once it has emptied every slot it took, gives them all back with
//! [`SlotAllocator::release_to`].

use core::fmt;

/// The root CNode has no empty slot left for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OutOfSlots {
    /// Slots asked for.
    pub(crate) wanted: u64,
    /// Slots left.
    pub(crate) left: u64,
}

impl fmt::Display for OutOfSlots {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "out of CNode slots: {} wanted, {} left",
            self.wanted, self.left
        )
    }
}

/// Where the allocator stood: slots handed out after it can be given back
/// together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlotMark(u64);

/// Hands out the empty slots `[next, end)` of the root CNode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlotAllocator {
    next: u64,
    end: u64,
}

impl SlotAllocator {
    /// An allocator of the `count` empty slots from `first`.
    pub(crate) fn new(first: u64, count: u64) -> SlotAllocator {
        SlotAllocator {
            next: first,
            end: first.saturating_add(count),
        }
    }

    /// The next empty slot.
    pub(crate) fn allocate(&mut self) -> Result<u64, OutOfSlots> {
        self.allocate_range(1)
    }

    /// The first of `count` consecutive empty slots.
    pub(crate) fn allocate_range(&mut self, count: u64) -> Result<u64, OutOfSlots> {
        let left = self.remaining();
        if count > left {
            return Err(OutOfSlots {
                wanted: count,
                left,
            });
        }
        let first = self.next;
        self.next += count;
        Ok(first)
    }

    /// Empty slots not handed out yet.
    pub(crate) fn remaining(&self) -> u64 {
        self.end - self.next
    }

    /// The current position, to give back what is handed out after it.
    pub(crate) fn mark(&self) -> SlotMark {
        SlotMark(self.next)
    }

    /// Takes back every slot handed out since `mark`, which the caller
    /// has emptied. A mark from before an earlier release (ahead of the
    /// current position) changes nothing.
    pub(crate) fn release_to(&mut self, mark: SlotMark) {
        if mark.0 <= self.next {
            self.next = mark.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_come_in_order_until_none_are_left() {
        let mut slots = SlotAllocator::new(29, 5);
        assert_eq!(slots.allocate(), Ok(29));
        assert_eq!(slots.allocate_range(3), Ok(30));
        assert_eq!(slots.remaining(), 1);
        assert_eq!(
            slots.allocate_range(2),
            Err(OutOfSlots { wanted: 2, left: 1 })
        );
        assert_eq!(slots.allocate(), Ok(33));
        assert_eq!(slots.allocate(), Err(OutOfSlots { wanted: 1, left: 0 }));
        assert_eq!(slots.remaining(), 0);
    }

    #[test]
    fn slots_after_a_mark_come_back() {
        let mut slots = SlotAllocator::new(10, 6);
        assert_eq!(slots.allocate(), Ok(10));
        let mark = slots.mark();
        assert_eq!(slots.allocate_range(3), Ok(11));
        slots.release_to(mark);
        assert_eq!(slots.remaining(), 5);
        assert_eq!(slots.allocate(), Ok(11));
        let later = slots.mark();
        slots.release_to(mark);
        slots.release_to(later);
        assert_eq!(
            slots.allocate(),
            Ok(11),
            "a mark ahead of the position is ignored"
        );
    }

    #[test]
    fn a_range_at_the_top_of_u64_does_not_overflow() {
        let mut slots = SlotAllocator::new(u64::MAX - 1, 10);
        assert_eq!(slots.remaining(), 1);
        assert_eq!(slots.allocate(), Ok(u64::MAX - 1));
        assert!(slots.allocate().is_err());
    }
}
