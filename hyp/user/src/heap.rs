//! A small heap for EL0 programs that need one (feature `heap`): 64 KiB of
//! the program's BSS, managed by `buddy_system_allocator`'s buddy heap and
//! given to it on the first allocation. `init` uses it for the free lists
//! of its untyped pool (about 19 KiB at most for 512 blocks); the VMM
//! servers will use it too. Running out is an allocation failure, which
//! panics the program (its fault handler or the kernel's console reports
//! that).
//!
//! Only the bare-metal build installs it as the global allocator; host
//! builds (the tests) keep the system allocator.

use core::alloc::Layout;

use buddy_system_allocator::{Heap, LockedHeapWithRescue};

/// The heap's bytes.
pub const BYTES: usize = 64 * 1024;
/// Orders of the heap: blocks of up to 64 KiB.
const ORDER: usize = 17;

/// The heap's memory.
#[repr(C, align(4096))]
struct Memory([u8; BYTES]);

/// Only [`give_memory`] takes its address, once.
static mut MEMORY: Memory = Memory([0; BYTES]);

#[global_allocator]
static HEAP: LockedHeapWithRescue<ORDER> = LockedHeapWithRescue::new(give_memory);

/// Called with the heap locked when an allocation does not fit: adds
/// [`MEMORY`] the first time (while the heap has no bytes yet).
fn give_memory(heap: &mut Heap<ORDER>, _layout: &Layout) {
    if heap.stats_total_bytes() == 0 {
        let start = (&raw mut MEMORY).addr();
        // SAFETY: MEMORY is valid and writable for BYTES bytes for the
        // program's life, and nothing but this heap touches it: no
        // reference to it is ever made, and only here is its address
        // taken. It is added once: the heap's total is 0 only before this
        // call, and the lock held makes the check and the add one step.
        unsafe {
            heap.init(start, BYTES);
        }
    }
}
