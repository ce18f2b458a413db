//! Capabilities, the slots that hold them, and the capability derivation
//! tree (CDT).
//!
//! A capability names an object and says what its holder may do with it. It
//! sits in a [`Slot`] of a CNode; the slot also holds the capability's place
//! in the derivation tree: the capability it was derived from (its parent)
//! and those derived from it (its children, as a doubly-linked sibling
//! list). The tree is what makes `Revoke` (delete every descendant) and the
//! return of untyped memory possible.
//!
//! # Invariants
//! - A slot with [`Capability::Null`] has no parent, no children and no
//!   siblings.
//! - `parent`, `first_child`, `next_sibling` and `previous_sibling` are
//!   consistent both ways: `s` is in the child list of `s.parent`, exactly
//!   once, and only there.
//! - A child never has rights its parent lacks, and a capability to an
//!   object is a descendant of the untyped capability the object was
//!   retyped from (or of a capability it was copied from).

use hyp_abi::Rights;

use crate::object::ObjectRef;

/// A slot: the CNode it is in and its index there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotRef {
    /// The CNode object.
    pub cnode: ObjectRef,
    /// The index in the CNode.
    pub index: u64,
}

/// What a capability names and allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Capability {
    /// An empty slot.
    #[default]
    Null,
    /// A block of untyped memory `[base, base + 2^size_bits)`; objects are
    /// carved from `base + watermark` upwards.
    Untyped {
        /// Physical base, aligned to its size.
        base: u64,
        /// log2 of the size in bytes.
        size_bits: u8,
        /// Bytes handed out so far (everything below is in use or was).
        watermark: u64,
        /// Device memory: only frames may be made from it, never zeroed.
        device: bool,
    },
    /// A CNode of `2^radix` slots. Resolving a capability pointer through
    /// it first consumes `guard_bits` bits that must equal `guard`.
    CNode {
        /// The CNode object.
        object: ObjectRef,
        /// log2 of the number of slots.
        radix: u8,
        /// Guard value.
        guard: u64,
        /// Guard width in bits.
        guard_bits: u8,
    },
    /// A thread.
    Tcb {
        /// The TCB object.
        object: ObjectRef,
    },
    /// A synchronous IPC endpoint.
    Endpoint {
        /// The endpoint object.
        object: ObjectRef,
        /// Delivered to the receiver with each message sent through this
        /// capability (0 = unbadged).
        badge: u64,
        /// READ = receive, WRITE = send, GRANT = send capabilities.
        rights: Rights,
    },
    /// A notification word.
    Notification {
        /// The notification object.
        object: ObjectRef,
        /// The bits `Signal` sets (0 = unbadged).
        badge: u64,
        /// READ = wait/poll, WRITE = signal.
        rights: Rights,
    },
    /// A frame of memory that can be mapped into a VSpace.
    Frame {
        /// Physical base.
        object: ObjectRef,
        /// log2 of the size (12 or 21).
        size_bits: u8,
        /// READ and WRITE: what a mapping through this capability allows.
        rights: Rights,
        /// Device memory (mapped as Device-nGnRE).
        device: bool,
        /// Where this capability mapped the frame, if it did. Each frame
        /// capability maps at most once; a copy of it can map elsewhere.
        mapped: Option<Mapping>,
    },
    /// A stage-2 address space: its root (level 1) table.
    VSpace {
        /// The root table object.
        object: ObjectRef,
    },
    /// Authority to create IRQ handler capabilities.
    IrqControl,
    /// Authority over one physical interrupt: which notification it
    /// signals, and acknowledging it. Never copied, so the interrupt has
    /// one handler capability and its deletion frees the interrupt.
    IrqHandler {
        /// The interrupt number (INTID).
        irq: u16,
    },
    /// A virtual CPU.
    Vcpu {
        /// The VCPU object.
        object: ObjectRef,
    },
    /// A stage-2 table below the root (level 2 or 3). A page-table
    /// capability is never copied, so a table is linked at most once and
    /// its one capability knows where.
    PageTable {
        /// The table object.
        object: ObjectRef,
        /// Where the table is linked, if it is.
        mapped: Option<Mapping>,
    },
}

/// Where a frame or page table is mapped: in which VSpace, at which
/// intermediate physical address, and at which level of the walk the entry
/// that points at it is (1 or 2 for a page table, which then serves as a
/// level 2 or level 3 table; 2 for a 2 MiB frame, 3 for a 4 KiB frame).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// The VSpace (root table) object.
    pub vspace: ObjectRef,
    /// The intermediate physical address, aligned to what one entry at
    /// `level` covers.
    pub address: u64,
    /// The level of the table that holds the entry (1, 2 or 3).
    pub level: u8,
}

impl Capability {
    /// Whether the slot is empty.
    pub const fn is_null(&self) -> bool {
        matches!(self, Capability::Null)
    }

    /// The object this capability names, if it names one (untyped memory
    /// is a range, not an object).
    pub const fn object(&self) -> Option<ObjectRef> {
        match *self {
            Capability::Null
            | Capability::Untyped { .. }
            | Capability::IrqControl
            | Capability::IrqHandler { .. } => None,
            Capability::CNode { object, .. }
            | Capability::Tcb { object }
            | Capability::Endpoint { object, .. }
            | Capability::Notification { object, .. }
            | Capability::Frame { object, .. }
            | Capability::VSpace { object }
            | Capability::Vcpu { object }
            | Capability::PageTable { object, .. } => Some(object),
        }
    }

    /// The rights of a capability that has rights; all rights otherwise.
    pub const fn rights(&self) -> Rights {
        match *self {
            Capability::Endpoint { rights, .. }
            | Capability::Notification { rights, .. }
            | Capability::Frame { rights, .. } => rights,
            _ => Rights::ALL,
        }
    }

    /// The physical range the capability covers: an untyped block, or the
    /// object's memory for objects whose size the capability knows.
    pub const fn untyped_range(&self) -> Option<(u64, u64)> {
        match *self {
            Capability::Untyped {
                base, size_bits, ..
            } => Some((base, base + (1 << size_bits))),
            _ => None,
        }
    }

    /// A copy with rights reduced to `rights ∩ self.rights()` and, if
    /// `badge` is `Some`, that badge, for `Copy` and `Mint`. `None` if the
    /// capability cannot be derived that way: untyped memory is never
    /// copied (its memory would be handed out twice), a page table is never
    /// copied (it could then be linked twice, and at two levels), and only
    /// an unbadged endpoint or notification capability can be badged. A
    /// CNode capability without a guard takes one through the badge word
    /// (`guard_bits | guard << 6`). A copy of a frame capability starts
    /// unmapped.
    pub fn derive(&self, rights: Rights, badge: Option<u64>) -> Option<Capability> {
        let mut derived = *self;
        match &mut derived {
            Capability::Null
            | Capability::Untyped { .. }
            | Capability::PageTable { .. }
            | Capability::IrqHandler { .. } => {
                return None;
            }
            Capability::Endpoint {
                badge: current,
                rights: current_rights,
                ..
            }
            | Capability::Notification {
                badge: current,
                rights: current_rights,
                ..
            } => {
                if let Some(badge) = badge {
                    if *current != 0 || badge == 0 {
                        return None;
                    }
                    *current = badge;
                }
                *current_rights = current_rights.intersect(rights);
            }
            Capability::Frame {
                rights: current_rights,
                mapped,
                ..
            } => {
                if badge.is_some() {
                    return None;
                }
                *current_rights = current_rights.intersect(rights);
                *mapped = None;
            }
            Capability::CNode {
                radix,
                guard,
                guard_bits,
                ..
            } => {
                // Minting a CNode capability sets its guard (as in seL4):
                // the badge word is `guard_bits | guard << 6`.
                if let Some(word) = badge {
                    let bits = (word & 0x3f) as u8;
                    let value = word >> 6;
                    if *guard_bits != 0
                        || u32::from(bits) + u32::from(*radix) > 64
                        || (bits < 58 && value >> bits != 0)
                    {
                        return None;
                    }
                    *guard_bits = bits;
                    *guard = value;
                }
            }
            Capability::Tcb { .. }
            | Capability::VSpace { .. }
            | Capability::Vcpu { .. }
            | Capability::IrqControl => {
                if badge.is_some() {
                    return None;
                }
            }
        }
        Some(derived)
    }
}

/// A capability's place in the derivation tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Derivation {
    /// The capability this one was derived from.
    pub parent: Option<SlotRef>,
    /// The first capability derived from this one.
    pub first_child: Option<SlotRef>,
    /// The next child of the same parent.
    pub next_sibling: Option<SlotRef>,
    /// The previous child of the same parent.
    pub previous_sibling: Option<SlotRef>,
}

/// One CNode slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Slot {
    /// The capability (or [`Capability::Null`]).
    pub capability: Capability,
    /// Its place in the derivation tree.
    pub derivation: Derivation,
}

impl Slot {
    /// An empty slot.
    pub const EMPTY: Slot = Slot {
        capability: Capability::Null,
        derivation: Derivation {
            parent: None,
            first_child: None,
            next_sibling: None,
            previous_sibling: None,
        },
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENDPOINT: Capability = Capability::Endpoint {
        object: ObjectRef(0x1000),
        badge: 0,
        rights: Rights::ALL,
    };

    #[test]
    fn derivation_never_adds_rights() {
        let read_only = ENDPOINT.derive(Rights::READ, None).unwrap();
        assert_eq!(read_only.rights(), Rights::READ);
        let still_read_only = read_only.derive(Rights::ALL, None).unwrap();
        assert_eq!(still_read_only.rights(), Rights::READ);
    }

    #[test]
    fn badges_are_set_once_and_never_zero() {
        let badged = ENDPOINT.derive(Rights::ALL, Some(7)).unwrap();
        assert!(matches!(badged, Capability::Endpoint { badge: 7, .. }));
        assert_eq!(badged.derive(Rights::ALL, Some(8)), None, "re-badging");
        assert_eq!(
            ENDPOINT.derive(Rights::ALL, Some(0)),
            None,
            "badge 0 means unbadged"
        );
        assert_eq!(
            badged.derive(Rights::ALL, None),
            Some(badged),
            "copying keeps the badge"
        );
    }

    #[test]
    fn untyped_and_null_are_not_derivable() {
        let untyped = Capability::Untyped {
            base: 0,
            size_bits: 12,
            watermark: 0,
            device: false,
        };
        assert_eq!(untyped.derive(Rights::ALL, None), None);
        assert_eq!(Capability::Null.derive(Rights::ALL, None), None);
        let tcb = Capability::Tcb {
            object: ObjectRef(0x2000),
        };
        assert_eq!(
            tcb.derive(Rights::ALL, Some(1)),
            None,
            "only endpoints and notifications take badges"
        );
    }

    #[test]
    fn stage2_capabilities_derive_unmapped_and_unbadged() {
        let mapping = Some(Mapping {
            vspace: ObjectRef(0x3000),
            address: 0x4000,
            level: 3,
        });
        let frame = Capability::Frame {
            object: ObjectRef(0x1000),
            size_bits: 12,
            rights: Rights::READ.union(Rights::WRITE),
            device: false,
            mapped: mapping,
        };
        assert_eq!(
            frame.derive(Rights::READ, None),
            Some(Capability::Frame {
                object: ObjectRef(0x1000),
                size_bits: 12,
                rights: Rights::READ,
                device: false,
                mapped: None,
            }),
            "a copy starts unmapped, with no more rights"
        );
        assert_eq!(frame.derive(Rights::ALL, Some(1)), None);
        let vspace = Capability::VSpace {
            object: ObjectRef(0x3000),
        };
        assert_eq!(vspace.derive(Rights::READ, None), Some(vspace));
        assert_eq!(vspace.derive(Rights::ALL, Some(1)), None);
        let table = Capability::PageTable {
            object: ObjectRef(0x2000),
            mapped: None,
        };
        assert_eq!(table.derive(Rights::ALL, None), None, "never copied");
        assert_eq!(table.object(), Some(ObjectRef(0x2000)));
        assert_eq!(vspace.object(), Some(ObjectRef(0x3000)));
    }
}
