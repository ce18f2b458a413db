//! Tests of the capability operations: unit tests of each operation, and a
//! model-based property test that runs random sequences of operations
//! against the real code and a simple model, checking every invariant after
//! every step.
#![allow(
    clippy::cast_possible_truncation,
    reason = "test indices and counts are small; a truncation would only weaken a test"
)]

use std::boxed::Box;
use std::collections::BTreeMap;
use std::vec::Vec;

use hyp_abi::{Error, ObjectType, Rights};

use super::*;
use crate::cap::{Capability, Slot, SlotRef};
use crate::ipc::{Endpoint, IpcStore, Notification};
use crate::irq::IrqTable;
use crate::object::{ObjectHeader, ObjectRef, ObjectStore, ThreadRef};
use crate::queue::{LinkStore, Links};
use crate::scheduler::SchedulerStore;
use crate::thread::Tcb;

/// An object in the test arena.
#[derive(Clone, Debug)]
pub(crate) struct ArenaObject {
    pub(crate) size: u64,
    pub(crate) header: Option<ObjectHeader>,
    /// The slots of a CNode: how many it has (none for other objects).
    pub(crate) slot_count: usize,
    /// Its slots up to the last one ever written; the ones after it are
    /// empty. The root task's CNode has 4096 slots, nearly all empty:
    /// cloning and comparing all of them was most of what the kernel tests
    /// cost under Miri.
    pub(crate) slots: Vec<Slot>,
    /// The descriptors of a VSpace or PageTable object.
    pub(crate) table: Option<Box<[u64; 512]>>,
}

/// Equal when all the kernel sees is equal: slots never written equal
/// empty ones.
impl PartialEq for ArenaObject {
    fn eq(&self, other: &Self) -> bool {
        let ArenaObject {
            size,
            header,
            slot_count,
            slots,
            table,
        } = self;
        let common = slots.len().min(other.slots.len());
        *size == other.size
            && *header == other.header
            && *slot_count == other.slot_count
            && *table == other.table
            && slots[..common] == other.slots[..common]
            && slots[common..]
                .iter()
                .chain(&other.slots[common..])
                .all(|slot| *slot == Slot::EMPTY)
    }
}

/// Kernel memory for the tests: objects by address. `create` panics if the
/// kernel ever places an object over a live one (untyped memory handed out
/// twice), `destroy` if it ends an object that does not exist.
#[derive(Clone, Debug, Default)]
pub(crate) struct Arena {
    pub(crate) objects: BTreeMap<u64, ArenaObject>,
    /// The IPC state of TCBs, endpoints and notifications, by address.
    pub(crate) bodies: BTreeMap<u64, Body>,
    /// The interrupt table, made at its first write; until then it is
    /// [`IrqTable::EMPTY`]. Most tests never touch it, and cloning and
    /// comparing its 1024 entries at every step of a random test was most
    /// of what a refused operation cost under Miri.
    irqs: Option<Box<IrqTable>>,
    /// Bytes written into frames at boot, by address.
    pub(crate) written: BTreeMap<u64, Vec<u8>>,
}

/// Equal when all the kernel sees is equal: an interrupt table not made yet
/// equals an empty one.
impl PartialEq for Arena {
    fn eq(&self, other: &Self) -> bool {
        let Arena {
            objects,
            bodies,
            irqs,
            written,
        } = self;
        *objects == other.objects
            && *bodies == other.bodies
            && *written == other.written
            && (irqs.is_none() && other.irqs.is_none() || self.irqs() == other.irqs())
    }
}

impl crate::root_task::BootMemory for Arena {
    fn write(&mut self, address: u64, bytes: &[u8]) {
        self.written.insert(address, bytes.to_vec());
    }
}

impl IrqStore for Arena {
    fn irqs(&self) -> &IrqTable {
        self.irqs.as_deref().unwrap_or(&IrqTable::EMPTY)
    }
    fn irqs_mut(&mut self) -> &mut IrqTable {
        self.irqs.get_or_insert_with(Box::default)
    }
}

/// The state of an object that IPC works on.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Body {
    Tcb(Box<Tcb>),
    Endpoint(Endpoint),
    Notification(Notification),
    Vcpu(Box<crate::vcpu::Vcpu>),
}

impl ObjectStore for Arena {
    fn slot(&self, slot: SlotRef) -> Option<&Slot> {
        let object = self.objects.get(&slot.cnode.0)?;
        let index = usize::try_from(slot.index)
            .ok()
            .filter(|&index| index < object.slot_count)?;
        Some(object.slots.get(index).unwrap_or(&Slot::EMPTY))
    }

    fn slot_mut(&mut self, slot: SlotRef) -> Option<&mut Slot> {
        let object = self.objects.get_mut(&slot.cnode.0)?;
        let index = usize::try_from(slot.index)
            .ok()
            .filter(|&index| index < object.slot_count)?;
        if index >= object.slots.len() {
            object.slots.resize(index + 1, Slot::EMPTY);
        }
        object.slots.get_mut(index)
    }

    fn create(&mut self, object: ObjectRef, kind: ObjectType, size_bits: u8, _device: bool) {
        let size = 1u64 << kind.object_size_bits(u32::from(size_bits)).unwrap();
        for (&base, existing) in &self.objects {
            assert!(
                object.0 + size <= base || base + existing.size <= object.0,
                "object at {:#x} overlaps the live object at {base:#x}",
                object.0
            );
        }
        let has_header = !matches!(kind, ObjectType::Frame4K | ObjectType::Frame2M);
        let slot_count = if kind == ObjectType::CNode {
            1 << size_bits
        } else {
            0
        };
        let table = matches!(kind, ObjectType::VSpace | ObjectType::PageTable)
            .then(|| Box::new([0u64; 512]));
        let header = has_header.then_some(ObjectHeader {
            kind,
            size_bits,
            capabilities: 0,
            references: 0,
        });
        let body = match kind {
            ObjectType::Tcb => Some(Body::Tcb(Box::default())),
            ObjectType::Endpoint => Some(Body::Endpoint(Endpoint::default())),
            ObjectType::Notification => Some(Body::Notification(Notification::default())),
            ObjectType::Vcpu => Some(Body::Vcpu(Box::default())),
            _ => None,
        };
        if let Some(body) = body {
            self.bodies.insert(object.0, body);
        }
        self.objects.insert(
            object.0,
            ArenaObject {
                size,
                header,
                slot_count,
                slots: Vec::new(),
                table,
            },
        );
    }

    fn destroy(&mut self, object: ObjectRef) {
        self.bodies.remove(&object.0);
        let removed = self.objects.remove(&object.0);
        assert!(
            removed.is_some(),
            "destroyed {:#x}, which is no object",
            object.0
        );
        let removed = removed.unwrap();
        assert!(
            removed.slots.iter().all(|slot| slot.capability.is_null()),
            "destroyed a CNode that still holds capabilities"
        );
        assert!(
            removed
                .table
                .is_none_or(|table| table.iter().all(|&entry| entry == 0)),
            "destroyed a translation table that still has entries"
        );
    }

    fn reclaim(&mut self, base: u64, size: u64) {
        let inside: Vec<u64> = self
            .objects
            .range(base..base + size)
            .map(|(&address, _)| address)
            .collect();
        for address in inside {
            assert!(
                self.objects[&address].header.is_none(),
                "memory reclaimed under the live object at {address:#x}"
            );
            self.objects.remove(&address);
        }
    }

    fn header(&self, object: ObjectRef) -> Option<&ObjectHeader> {
        self.objects.get(&object.0)?.header.as_ref()
    }

    fn header_mut(&mut self, object: ObjectRef) -> Option<&mut ObjectHeader> {
        self.objects.get_mut(&object.0)?.header.as_mut()
    }

    fn table(&self, object: ObjectRef) -> Option<&[u64; 512]> {
        self.objects.get(&object.0)?.table.as_deref()
    }

    fn table_mut(&mut self, object: ObjectRef) -> Option<&mut [u64; 512]> {
        self.objects.get_mut(&object.0)?.table.as_deref_mut()
    }
}

impl LinkStore for Arena {
    fn links(&self, thread: ThreadRef) -> Links {
        self.tcb(thread).map(|tcb| tcb.links).unwrap_or_default()
    }
    fn set_links(&mut self, thread: ThreadRef, links: Links) {
        if let Some(tcb) = self.tcb_mut(thread) {
            tcb.links = links;
        }
    }
}

impl SchedulerStore for Arena {
    fn priority(&self, thread: ThreadRef) -> u8 {
        self.tcb(thread).map_or(0, |tcb| tcb.priority)
    }
    fn affinity(&self, thread: ThreadRef) -> usize {
        self.tcb(thread).map_or(0, |tcb| tcb.affinity)
    }
}

impl IpcStore for Arena {
    fn tcb(&self, thread: ThreadRef) -> Option<&Tcb> {
        match self.bodies.get(&thread.0)? {
            Body::Tcb(tcb) => Some(tcb),
            _ => None,
        }
    }
    fn tcb_mut(&mut self, thread: ThreadRef) -> Option<&mut Tcb> {
        match self.bodies.get_mut(&thread.0)? {
            Body::Tcb(tcb) => Some(tcb),
            _ => None,
        }
    }
    fn endpoint(&self, endpoint: ObjectRef) -> Option<&Endpoint> {
        match self.bodies.get(&endpoint.0)? {
            Body::Endpoint(endpoint) => Some(endpoint),
            _ => None,
        }
    }
    fn endpoint_mut(&mut self, endpoint: ObjectRef) -> Option<&mut Endpoint> {
        match self.bodies.get_mut(&endpoint.0)? {
            Body::Endpoint(endpoint) => Some(endpoint),
            _ => None,
        }
    }
    fn notification(&self, notification: ObjectRef) -> Option<&Notification> {
        match self.bodies.get(&notification.0)? {
            Body::Notification(notification) => Some(notification),
            _ => None,
        }
    }
    fn notification_mut(&mut self, notification: ObjectRef) -> Option<&mut Notification> {
        match self.bodies.get_mut(&notification.0)? {
            Body::Notification(notification) => Some(notification),
            _ => None,
        }
    }
    fn vcpu(&self, vcpu: ObjectRef) -> Option<&crate::vcpu::Vcpu> {
        match self.bodies.get(&vcpu.0)? {
            Body::Vcpu(vcpu) => Some(vcpu),
            _ => None,
        }
    }
    fn vcpu_mut(&mut self, vcpu: ObjectRef) -> Option<&mut crate::vcpu::Vcpu> {
        match self.bodies.get_mut(&vcpu.0)? {
            Body::Vcpu(vcpu) => Some(vcpu),
            _ => None,
        }
    }
}

pub(crate) const ROOT: ObjectRef = ObjectRef(0x10_0000);
pub(crate) const ROOT_RADIX: u8 = 6;
pub(crate) const UNTYPED_BASE: u64 = 0x100_0000;
const UNTYPED_BITS: u8 = 20;
const SMALL_UNTYPED_BASE: u64 = 0x200_0000;

pub(crate) fn slot(index: u64) -> SlotRef {
    SlotRef { cnode: ROOT, index }
}

/// A root CNode with two untyped capabilities (1 MiB in slot 0, 64 KiB in
/// slot 1) and a capability to itself in slot 63, none with a parent, as
/// the kernel hands them to the root task.
pub(crate) fn boot() -> Arena {
    let mut arena = Arena::default();
    arena.create(ROOT, ObjectType::CNode, ROOT_RADIX, false);
    arena.header_mut(ROOT).unwrap().capabilities = 1;
    arena.slot_mut(slot(63)).unwrap().capability = Capability::CNode {
        object: ROOT,
        radix: ROOT_RADIX,
        guard: 0,
        guard_bits: 0,
    };
    arena.slot_mut(slot(0)).unwrap().capability = Capability::Untyped {
        base: UNTYPED_BASE,
        size_bits: UNTYPED_BITS,
        watermark: 0,
        device: false,
    };
    arena.slot_mut(slot(1)).unwrap().capability = Capability::Untyped {
        base: SMALL_UNTYPED_BASE,
        size_bits: 16,
        watermark: 0,
        device: false,
    };
    arena
}

#[test]
fn retype_places_objects_in_order_and_returns_memory_on_revoke() {
    let mut arena = boot();
    retype(&mut arena, slot(0), ObjectType::Endpoint, 0, slot(2), 3).unwrap();
    let objects: Vec<_> = (2..5)
        .map(|index| arena.slot(slot(index)).unwrap().capability.object())
        .collect();
    assert_eq!(
        objects,
        [
            Some(ObjectRef(UNTYPED_BASE)),
            // Endpoints are 128 bytes (hyp-abi), placed one after the other.
            Some(ObjectRef(UNTYPED_BASE + 128)),
            Some(ObjectRef(UNTYPED_BASE + 256))
        ]
    );
    assert!(matches!(
        arena.slot(slot(0)).unwrap().capability,
        Capability::Untyped { watermark: 384, .. }
    ));
    // A TCB is aligned to its 2 KiB size.
    retype(&mut arena, slot(0), ObjectType::Tcb, 0, slot(5), 1).unwrap();
    assert_eq!(
        arena.slot(slot(5)).unwrap().capability.object(),
        Some(ObjectRef(UNTYPED_BASE + 2048))
    );

    revoke(&mut arena, slot(0)).unwrap();
    assert!(matches!(
        arena.slot(slot(0)).unwrap().capability,
        Capability::Untyped { watermark: 0, .. }
    ));
    assert_eq!(arena.objects.len(), 1, "only the root CNode is left");
    // The same memory can be retyped again.
    retype(&mut arena, slot(0), ObjectType::Tcb, 0, slot(2), 1).unwrap();
    assert_eq!(
        arena.slot(slot(2)).unwrap().capability.object(),
        Some(ObjectRef(UNTYPED_BASE))
    );
}

#[test]
fn retype_reports_precise_errors_and_changes_nothing() {
    let mut arena = boot();
    retype(&mut arena, slot(0), ObjectType::Endpoint, 0, slot(5), 1).unwrap();
    let before = arena.clone();
    let cases = [
        (
            retype(&mut arena, slot(9), ObjectType::Tcb, 0, slot(2), 1),
            Error::InvalidCapability { argument: 0 },
        ),
        (
            retype(&mut arena, slot(5), ObjectType::Tcb, 0, slot(2), 1),
            Error::InvalidCapability { argument: 0 },
        ),
        (
            retype(&mut arena, slot(0), ObjectType::CNode, 30, slot(2), 1),
            Error::RangeError {
                argument: 1,
                minimum: 1,
                maximum: 24,
            },
        ),
        (
            retype(&mut arena, slot(0), ObjectType::Tcb, 0, slot(2), 0),
            Error::RangeError {
                argument: 3,
                minimum: 1,
                maximum: 256,
            },
        ),
        (
            retype(&mut arena, slot(0), ObjectType::Tcb, 0, slot(4), 2),
            Error::DeleteFirst { argument: 1 },
        ),
        (
            retype(&mut arena, slot(1), ObjectType::Frame2M, 0, slot(2), 1),
            Error::NotEnoughMemory {
                requested: 1 << 21,
                available: 1 << 16,
            },
        ),
        (
            retype(&mut arena, slot(0), ObjectType::Tcb, 0, slot(64), 1),
            Error::InvalidCapability { argument: 1 },
        ),
    ];
    for (result, expected) in cases {
        assert_eq!(result, Err(expected));
        assert_eq!(arena, before, "a refused retype changed state");
    }
}

#[test]
fn copy_mint_move_delete() {
    let mut arena = boot();
    retype(&mut arena, slot(0), ObjectType::Endpoint, 0, slot(2), 1).unwrap();
    let endpoint = ObjectRef(UNTYPED_BASE);
    copy(&mut arena, slot(2), slot(3), Rights::WRITE, Some(42)).unwrap();
    assert_eq!(
        arena.slot(slot(3)).unwrap().capability,
        Capability::Endpoint {
            object: endpoint,
            badge: 42,
            rights: Rights::WRITE
        }
    );
    assert_eq!(arena.header(endpoint).unwrap().capabilities, 2);
    assert_eq!(
        copy(&mut arena, slot(3), slot(4), Rights::ALL, Some(7)),
        Err(Error::IllegalOperation)
    );
    assert_eq!(
        copy(&mut arena, slot(2), slot(3), Rights::ALL, None),
        Err(Error::DeleteFirst { argument: 0 })
    );
    assert_eq!(
        copy(&mut arena, slot(0), slot(4), Rights::ALL, None),
        Err(Error::IllegalOperation),
        "untyped is never copied"
    );

    move_capability(&mut arena, slot(3), slot(10)).unwrap();
    assert!(arena.slot(slot(3)).unwrap().capability.is_null());
    assert_eq!(
        arena.slot(slot(10)).unwrap().derivation.parent,
        Some(slot(2))
    );

    // Deleting the original moves the copy up to the untyped; the object
    // lives on until its last capability goes.
    delete(&mut arena, slot(2)).unwrap();
    assert_eq!(
        arena.slot(slot(10)).unwrap().derivation.parent,
        Some(slot(0))
    );
    assert_eq!(arena.header(endpoint).unwrap().capabilities, 1);
    delete(&mut arena, slot(10)).unwrap();
    assert!(
        arena.header(endpoint).is_none(),
        "the last capability destroyed the object"
    );
    assert!(matches!(
        arena.slot(slot(0)).unwrap().capability,
        Capability::Untyped { watermark: 0, .. }
    ));
}

#[test]
fn a_non_empty_cnode_is_never_destroyed() {
    let mut arena = boot();
    retype(&mut arena, slot(0), ObjectType::CNode, 4, slot(2), 1).unwrap();
    let Capability::CNode { object: inner, .. } = arena.slot(slot(2)).unwrap().capability else {
        panic!()
    };
    retype(
        &mut arena,
        slot(1),
        ObjectType::Notification,
        0,
        SlotRef {
            cnode: inner,
            index: 0,
        },
        1,
    )
    .unwrap();
    let before = arena.clone();
    assert_eq!(delete(&mut arena, slot(2)), Err(Error::IllegalOperation));
    assert_eq!(revoke(&mut arena, slot(0)), Err(Error::IllegalOperation));
    assert_eq!(arena, before);
    // Emptied, it goes.
    delete(
        &mut arena,
        SlotRef {
            cnode: inner,
            index: 0,
        },
    )
    .unwrap();
    revoke(&mut arena, slot(0)).unwrap();
    assert!(arena.header(inner).is_none());
}

#[test]
fn resolve_walks_guards_and_levels() {
    let mut arena = boot();
    retype(&mut arena, slot(0), ObjectType::CNode, 4, slot(7), 1).unwrap();
    let Capability::CNode { object: inner, .. } = arena.slot(slot(7)).unwrap().capability else {
        panic!()
    };
    // Give the inner CNode a guard of 2 bits (0b10).
    if let Capability::CNode {
        guard, guard_bits, ..
    } = &mut arena.slot_mut(slot(7)).unwrap().capability
    {
        *guard = 0b10;
        *guard_bits = 2;
    }
    let root = Capability::CNode {
        object: ROOT,
        radix: ROOT_RADIX,
        guard: 0,
        guard_bits: 0,
    };
    assert_eq!(resolve(&arena, root, 5, 6, 0), Ok(slot(5)));
    // 6 bits root index 7, 2 guard bits 0b10, 4 bits index 9: 12 bits.
    let pointer = (7 << 6) | (0b10 << 4) | 9;
    assert_eq!(
        resolve(&arena, root, pointer, 12, 0),
        Ok(SlotRef {
            cnode: inner,
            index: 9
        })
    );
    assert_eq!(
        resolve(&arena, root, (7 << 6) | (0b01 << 4) | 9, 12, 1),
        Err(Error::LookupFailed {
            argument: 1,
            bits_left: 6
        })
    );
    assert_eq!(
        resolve(&arena, root, pointer, 10, 0),
        Err(Error::LookupFailed {
            argument: 0,
            bits_left: 4
        })
    );
    assert_eq!(
        resolve(&arena, root, 0, 0, 2),
        Err(Error::RangeError {
            argument: 2,
            minimum: 1,
            maximum: 64
        })
    );
    assert_eq!(
        resolve(&arena, root, (5 << 6) | 1, 12, 0),
        Err(Error::LookupFailed {
            argument: 0,
            bits_left: 6
        }),
        "slot 5 is empty"
    );
}

// ---------------------------------------------------------------------------
// Invariants, checked after every step of the property test.

/// Every CNode slot and where it is, but for the empty ones after the last
/// slot ever written (see [`ArenaObject::slots`]).
pub(crate) fn live_slots(arena: &Arena) -> Vec<(SlotRef, Slot)> {
    let mut slots = Vec::new();
    for (&base, object) in &arena.objects {
        for (index, found) in object.slots.iter().enumerate() {
            slots.push((
                SlotRef {
                    cnode: ObjectRef(base),
                    index: index as u64,
                },
                *found,
            ));
        }
    }
    slots
}

pub(crate) fn check_invariants(arena: &Arena) {
    let slots = live_slots(arena);
    // Links are followed in the arena itself, not in a map of `slots`:
    // building that map at every step was most of what this check cost
    // under Miri.
    let linked = |at: SlotRef| -> Slot {
        *arena
            .slot(at)
            .unwrap_or_else(|| panic!("a link to {at:?}, which is no slot"))
    };
    let mut references: BTreeMap<ObjectRef, u64> = BTreeMap::new();
    for &(at, found) in &slots {
        let links = found.derivation;
        if found.capability.is_null() {
            assert_eq!(links, Default::default(), "empty slot {at:?} has links");
            continue;
        }
        if let Some(object) = found.capability.object() {
            *references.entry(object).or_default() += 1;
        }
        // Two-way links.
        if let Some(next) = links.next_sibling {
            assert_eq!(linked(next).derivation.previous_sibling, Some(at));
            assert_eq!(linked(next).derivation.parent, links.parent);
        }
        if let Some(previous) = links.previous_sibling {
            assert_eq!(linked(previous).derivation.next_sibling, Some(at));
        } else if let Some(parent) = links.parent {
            assert_eq!(
                linked(parent).derivation.first_child,
                Some(at),
                "{at:?} unreachable from its parent"
            );
        }
        if let Some(child) = links.first_child {
            assert_eq!(linked(child).derivation.parent, Some(at));
            assert_eq!(linked(child).derivation.previous_sibling, None);
        }
        // Ancestors: no cycle; rights never grow; an object lies inside the
        // used part of the untyped it descends from.
        let mut ancestor = links.parent;
        let mut steps = 0;
        let mut checked_untyped = found.capability.object().is_none();
        while let Some(up) = ancestor {
            steps += 1;
            assert!(steps <= slots.len(), "cycle above {at:?}");
            let above = linked(up);
            if let (Some(_), Some(_)) = (found.capability.object(), above.capability.object()) {
                assert!(
                    above
                        .capability
                        .rights()
                        .contains(found.capability.rights()),
                    "rights grew at {at:?}"
                );
            }
            if let (
                false,
                Capability::Untyped {
                    base, watermark, ..
                },
            ) = (checked_untyped, above.capability)
            {
                let object = found.capability.object().unwrap().0;
                assert!(
                    object >= base && object < base + watermark,
                    "{object:#x} outside its untyped's used part"
                );
                checked_untyped = true;
            }
            ancestor = above.derivation.parent;
        }
        let boot_capability = found
            .capability
            .object()
            .is_none_or(|object| object == ROOT);
        assert!(
            checked_untyped || boot_capability,
            "{at:?} ({:?}, parent {:?}) descends from no untyped",
            found.capability,
            links.parent.map(linked)
        );
        // An untyped without children has all its memory back.
        if let Capability::Untyped { watermark, .. } = found.capability
            && links.first_child.is_none()
        {
            assert_eq!(watermark, 0, "{at:?}: childless untyped keeps a watermark");
        }
    }
    // Reference counts are exact; objects without capabilities are gone.
    for (&base, object) in &arena.objects {
        if let Some(header) = object.header {
            let counted = references.get(&ObjectRef(base)).copied().unwrap_or(0);
            assert_eq!(
                u64::from(header.capabilities),
                counted,
                "count of {base:#x}"
            );
            assert!(counted > 0, "{base:#x} lives without capabilities");
        }
    }
}

pub(crate) fn descendants(arena: &Arena, root: SlotRef) -> usize {
    let mut count = 0;
    let mut pending = arena
        .slot(root)
        .and_then(|found| found.derivation.first_child);
    while let Some(current) = pending {
        count += 1;
        pending = next_in_subtree(arena, current, root);
    }
    count
}

#[test]
fn random_operations_keep_every_invariant() {
    // Under Miri, which interprets slowly: fewer steps, a refused operation
    // checked to change nothing only at every `compare_every`th step, and
    // the invariants checked only at every `check_every`th step and after
    // the last.
    let (steps, compare_every, check_every) = if cfg!(miri) {
        (180, 5, 20)
    } else {
        (20_000, 1, 1)
    };
    let trace = std::env::var_os("CSPACE_TRACE").is_some();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = move |bound: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % bound
    };
    let mut arena = boot();
    let slots_in_root = 1u64 << ROOT_RADIX;
    let mut successes = [0u32; 6];
    for step in 0..steps {
        if step % 2_000 == 0 {
            arena = boot();
        }
        // Slots in the root CNode, or in any CNode made so far.
        let cnodes: Vec<(ObjectRef, u64)> = arena
            .objects
            .iter()
            .filter(|(_, object)| object.slot_count > 0)
            .map(|(&base, object)| (ObjectRef(base), object.slot_count as u64))
            .collect();
        let pick = |random: &mut dyn FnMut(u64) -> u64| {
            let (cnode, size) = if random(4) == 0 {
                cnodes[random(cnodes.len() as u64) as usize]
            } else {
                (ROOT, slots_in_root)
            };
            SlotRef {
                cnode,
                index: random(size),
            }
        };
        let before = (step % compare_every == 0).then(|| arena.clone());
        let operation = random(6);
        let (a, b) = (pick(&mut random), pick(&mut random));
        if trace {
            std::eprintln!("step {step}: op {operation} a {a:?} b {b:?}");
            for (at, found) in live_slots(&arena) {
                if !found.capability.is_null() {
                    std::eprintln!(
                        "    {}/{}: {:?} parent {:?}",
                        at.cnode.0,
                        at.index,
                        found.capability,
                        found.derivation.parent.map(|p| p.index)
                    );
                }
            }
        }
        let result = match operation {
            0 => {
                let types = [
                    ObjectType::Endpoint,
                    ObjectType::Notification,
                    ObjectType::Tcb,
                    ObjectType::CNode,
                    ObjectType::Frame4K,
                    ObjectType::Untyped,
                ];
                let kind = types[random(types.len() as u64) as usize];
                let size_bits = match kind {
                    ObjectType::CNode => 4 + random(2),
                    ObjectType::Untyped => 8 + random(8),
                    _ => 0,
                };
                let source = SlotRef {
                    cnode: ROOT,
                    index: random(4),
                };
                retype(&mut arena, source, kind, size_bits, b, 1 + random(3))
            }
            1 => copy(
                &mut arena,
                a,
                b,
                Rights::from_bits(random(16)).unwrap(),
                None,
            ),
            2 => copy(
                &mut arena,
                a,
                b,
                Rights::from_bits(random(16)).unwrap(),
                Some(1 + random(1000)),
            ),
            3 => move_capability(&mut arena, a, b),
            4 => delete(&mut arena, a),
            _ => revoke(&mut arena, a),
        };
        if trace {
            std::eprintln!("  -> {result:?}");
        }
        match (result, before) {
            (Ok(()), _) => {
                successes[operation as usize] += 1;
                if operation == 5 {
                    assert_eq!(descendants(&arena, a), 0, "revoke left descendants");
                }
            }
            (Err(_), Some(before)) => assert_eq!(
                arena, before,
                "step {step}: a refused operation changed state"
            ),
            (Err(_), None) => {}
        }
        if step % check_every == 0 || step + 1 == steps {
            check_invariants(&arena);
        }
    }
    // The test exercised every operation for real.
    for (operation, count) in successes.iter().enumerate() {
        assert!(
            *count > steps / 200,
            "operation {operation} succeeded only {count} times"
        );
    }
}

#[test]
fn objects_in_use_by_ipc_are_never_destroyed() {
    use crate::ipc::{self, Outcome};
    use crate::scheduler::Scheduler;
    use crate::thread::ThreadState;

    let mut arena = boot();
    let mut scheduler = Scheduler::new();
    retype(&mut arena, slot(0), ObjectType::Tcb, 0, slot(2), 1).unwrap();
    retype(&mut arena, slot(0), ObjectType::Endpoint, 0, slot(3), 1).unwrap();
    retype(&mut arena, slot(0), ObjectType::Notification, 0, slot(4), 1).unwrap();
    let tcb = arena.slot(slot(2)).unwrap().capability;
    let endpoint = arena.slot(slot(3)).unwrap().capability;
    let thread = tcb.object().unwrap();

    // The thread runs and waits on the endpoint.
    arena.tcb_mut(thread).unwrap().state = ThreadState::Runnable;
    assert_eq!(
        ipc::receive(&mut arena, &mut scheduler, thread, endpoint),
        Ok(Outcome::Blocked)
    );
    let before = arena.clone();
    assert_eq!(
        delete(&mut arena, slot(3)),
        Err(Error::IllegalOperation),
        "endpoint has a waiter"
    );
    assert_eq!(
        delete(&mut arena, slot(2)),
        Err(Error::IllegalOperation),
        "thread not suspended"
    );
    assert_eq!(revoke(&mut arena, slot(0)), Err(Error::IllegalOperation));
    assert_eq!(arena, before);

    // Suspended, everything can go, and the untyped is whole again.
    ipc::cancel(&mut arena, &mut scheduler, thread).unwrap();
    revoke(&mut arena, slot(0)).unwrap();
    assert!(arena.bodies.is_empty());
    assert!(matches!(
        arena.slot(slot(0)).unwrap().capability,
        Capability::Untyped { watermark: 0, .. }
    ));
}
