//! Register blocks in ordinary memory for the host tests.
//!
//! A fake block does not model the GIC: it is plain memory, so a register
//! reads back what was last written (or what the test put there), and
//! "write 1 to set" registers simply hold the last value written. The tests
//! check what the driver wrote and steer it through the values it reads.

use std::boxed::Box;

/// A zeroed, 8-byte aligned block of `size` bytes, accessed only through the
/// pointer it was allocated with.
pub(crate) struct FakeBlock {
    words: *mut u64,
    len: usize,
}

impl FakeBlock {
    pub(crate) fn new(size: usize) -> Self {
        let words: Box<[u64]> = std::vec![0u64; size.div_ceil(8)].into_boxed_slice();
        let len = words.len();
        Self {
            words: Box::into_raw(words).cast::<u64>(),
            len,
        }
    }

    pub(crate) fn base(&self) -> usize {
        self.words as usize
    }

    pub(crate) fn size(&self) -> usize {
        self.len * 8
    }

    fn at<T>(&self, offset: usize) -> *mut T {
        assert!(
            offset.is_multiple_of(size_of::<T>()),
            "misaligned offset {offset:#x}"
        );
        assert!(
            offset + size_of::<T>() <= self.size(),
            "offset {offset:#x} out of the block"
        );
        self.words.cast::<u8>().wrapping_add(offset).cast::<T>()
    }

    pub(crate) fn read8(&self, offset: usize) -> u8 {
        let place = self.at::<u8>(offset);
        // SAFETY: `at` checked that the byte lies in the live allocation.
        unsafe { place.read_volatile() }
    }

    pub(crate) fn read32(&self, offset: usize) -> u32 {
        let place = self.at::<u32>(offset);
        // SAFETY: `at` checked alignment and bounds in the live allocation.
        unsafe { place.read_volatile() }
    }

    pub(crate) fn write32(&self, offset: usize, value: u32) {
        let place = self.at::<u32>(offset);
        // SAFETY: `at` checked alignment and bounds in the live allocation.
        unsafe { place.write_volatile(value) }
    }

    pub(crate) fn read64(&self, offset: usize) -> u64 {
        let place = self.at::<u64>(offset);
        // SAFETY: `at` checked alignment and bounds in the live allocation.
        unsafe { place.read_volatile() }
    }

    pub(crate) fn write64(&self, offset: usize, value: u64) {
        let place = self.at::<u64>(offset);
        // SAFETY: `at` checked alignment and bounds in the live allocation.
        unsafe { place.write_volatile(value) }
    }
}

impl Drop for FakeBlock {
    fn drop(&mut self) {
        let slice = core::ptr::slice_from_raw_parts_mut(self.words, self.len);
        // SAFETY: `words` and `len` came from `Box::into_raw` in `new` and are
        // released exactly once, here.
        drop(unsafe { Box::from_raw(slice) });
    }
}
