//! Device registers: a region of device memory read and written with
//! volatile 32- and 64-bit accesses at offsets checked against its size.

use core::ptr;

/// A region `[base, base + size)` of device registers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mmio {
    base: usize,
    size: usize,
}

impl Mmio {
    /// The registers at `[base, base + size)`.
    ///
    /// # Safety
    ///
    /// The range must be device registers (or unmapped, for a hypervisor
    /// to emulate), never memory that Rust code uses as ordinary memory,
    /// and reading or writing them must have no effect on such memory.
    pub(crate) const unsafe fn new(base: usize, size: usize) -> Self {
        Self { base, size }
    }

    /// The first byte of the region.
    pub(crate) fn base(&self) -> usize {
        self.base
    }

    /// The address of the `width`-byte register at `offset`.
    fn address(&self, offset: usize, width: usize) -> usize {
        assert!(
            offset.is_multiple_of(width)
                && offset
                    .checked_add(width)
                    .is_some_and(|end| end <= self.size),
            "register offset {offset:#x} outside the {:#x}-byte region at {:#x}",
            self.size,
            self.base
        );
        self.base + offset
    }

    /// Reads the 32-bit register at `offset`.
    pub(crate) fn read32(&self, offset: usize) -> u32 {
        let address = self.address(offset, 4);
        // SAFETY: an aligned register inside the region, which the
        // constructor's caller promised is device registers.
        unsafe { ptr::read_volatile(address as *const u32) }
    }

    /// Writes the 32-bit register at `offset`.
    pub(crate) fn write32(&self, offset: usize, value: u32) {
        let address = self.address(offset, 4);
        // SAFETY: as for `read32`.
        unsafe { ptr::write_volatile(address as *mut u32, value) }
    }

    /// Reads the 64-bit register at `offset`.
    pub(crate) fn read64(&self, offset: usize) -> u64 {
        let address = self.address(offset, 8);
        // SAFETY: as for `read32`.
        unsafe { ptr::read_volatile(address as *const u64) }
    }

    /// The region `[base + offset, base + offset + size)` inside this one.
    pub(crate) fn subregion(&self, offset: usize, size: usize) -> Option<Self> {
        let end = offset.checked_add(size)?;
        if end > self.size {
            return None;
        }
        // SAFETY: part of this region, which is device registers.
        Some(unsafe { Self::new(self.base + offset, size) })
    }
}
