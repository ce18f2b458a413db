//! MMIO accesses and the device trait.
//!
//! A guest's load or store to an emulated device arrives at the VMM as an
//! MMIO exit: the faulting IPA, the access width, the direction and, for a
//! store, the value (design section 4). The VMM turns the IPA into an offset
//! inside one device's window ([`Window::offset_of`]) and hands the device an
//! [`Access`].
//!
//! What this module deliberately does not do: it does not know any device's
//! address (that is the VMM's memory map), does not sign-extend read values
//! (the core does that, it knows the target register) and does not model
//! accesses that straddle two devices (such an access is refused by
//! [`Window::offset_of`]).

/// One MMIO access, with the offset relative to the device's base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// Byte offset from the device's base address.
    pub offset: u64,
    /// Width in bytes: 1, 2, 4 or 8.
    pub size: u8,
    /// `true` for a store, `false` for a load.
    pub write: bool,
    /// The stored value for a write (only the low `size` bytes count);
    /// ignored for a read.
    pub value: u64,
}

impl Access {
    /// A load of `size` bytes at `offset`.
    pub const fn read(offset: u64, size: u8) -> Self {
        Self {
            offset,
            size,
            write: false,
            value: 0,
        }
    }

    /// A store of the low `size` bytes of `value` at `offset`.
    pub const fn write(offset: u64, size: u8, value: u64) -> Self {
        Self {
            offset,
            size,
            write: true,
            value,
        }
    }

    /// Whether `size` is 1, 2, 4 or 8 and the offset is a multiple of it.
    pub const fn is_natural(&self) -> bool {
        size_mask(self.size) != 0 && self.offset.is_multiple_of(self.size as u64)
    }
}

/// The mask of the low `size` bytes of a value; 0 for a size other than
/// 1, 2, 4 or 8.
pub const fn size_mask(size: u8) -> u64 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        8 => u64::MAX,
        _ => 0,
    }
}

/// An emulated device behind an MMIO window.
///
/// Implementations must accept any `offset` and `size` (the guest chooses
/// them): an unknown register reads as zero and ignores writes.
pub trait Device {
    /// A load of `size` bytes at `offset`; returns the value (the low
    /// `size` bytes are used).
    fn read(&mut self, offset: u64, size: u8) -> u64;
    /// A store of the low `size` bytes of `value` at `offset`.
    fn write(&mut self, offset: u64, size: u8, value: u64);
}

/// Performs `access` on `device`: returns the value read, masked to the
/// access size, or 0 for a write (whose value is masked before the device
/// sees it).
pub fn dispatch<D: Device + ?Sized>(device: &mut D, access: &Access) -> u64 {
    let mask = size_mask(access.size);
    if access.write {
        device.write(access.offset, access.size, access.value & mask);
        0
    } else {
        device.read(access.offset, access.size) & mask
    }
}

/// A device's window in the guest-physical address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First guest-physical address.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
}

impl Window {
    /// The offset of an access of `size` bytes at `addr` inside this
    /// window, or `None` if any byte of it lies outside (no overflow).
    pub const fn offset_of(&self, addr: u64, size: u8) -> Option<u64> {
        let Some(offset) = addr.checked_sub(self.base) else {
            return None;
        };
        let Some(end) = offset.checked_add(size as u64) else {
            return None;
        };
        if size == 0 || end > self.size {
            None
        } else {
            Some(offset)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Remembers the last write and reads back a fixed pattern.
    struct Probe {
        last_write: Option<(u64, u8, u64)>,
    }

    impl Device for Probe {
        fn read(&mut self, _offset: u64, _size: u8) -> u64 {
            0x1122_3344_5566_7788
        }
        fn write(&mut self, offset: u64, size: u8, value: u64) {
            self.last_write = Some((offset, size, value));
        }
    }

    #[test]
    fn dispatch_masks_reads_and_writes_to_the_access_size() {
        let mut probe = Probe { last_write: None };
        assert_eq!(dispatch(&mut probe, &Access::read(0, 1)), 0x88);
        assert_eq!(dispatch(&mut probe, &Access::read(0, 2)), 0x7788);
        assert_eq!(dispatch(&mut probe, &Access::read(0, 4)), 0x5566_7788);
        assert_eq!(
            dispatch(&mut probe, &Access::read(0, 8)),
            0x1122_3344_5566_7788
        );
        assert_eq!(dispatch(&mut probe, &Access::read(0, 3)), 0);
        assert_eq!(
            dispatch(&mut probe, &Access::write(0x10, 2, 0xdead_beef)),
            0
        );
        assert_eq!(probe.last_write, Some((0x10, 2, 0xbeef)));
    }

    #[test]
    fn natural_alignment() {
        assert!(Access::read(8, 8).is_natural());
        assert!(Access::read(6, 2).is_natural());
        assert!(!Access::read(6, 4).is_natural());
        assert!(!Access::read(0, 3).is_natural());
        assert!(!Access::read(0, 0).is_natural());
    }

    #[test]
    fn window_offsets_refuse_straddling_and_overflow() {
        let w = Window {
            base: 0x0900_0000,
            size: 0x1000,
        };
        assert_eq!(w.offset_of(0x0900_0018, 4), Some(0x18));
        assert_eq!(w.offset_of(0x0900_0ffc, 4), Some(0xffc));
        assert_eq!(w.offset_of(0x0900_0ffe, 4), None);
        assert_eq!(w.offset_of(0x08ff_fffc, 4), None);
        assert_eq!(w.offset_of(0x0900_0000, 0), None);
        // An offset near u64::MAX must not wrap around into the window.
        let at_zero = Window { base: 0, size: 16 };
        assert_eq!(at_zero.offset_of(u64::MAX - 2, 8), None);
        assert_eq!(at_zero.offset_of(8, 8), Some(8));
    }
}
