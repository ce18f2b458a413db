//! Capability spaces: resolving capability pointers, and the operations on
//! slots — untyped retype, copy, mint, move, delete and revoke — with the
//! derivation tree kept consistent.
//!
//! Every operation is *decode, then invoke*: the public functions first
//! check every argument against the current state and return a precise
//! [`Error`] without changing anything; only then do they change state, in
//! steps that cannot fail. (The `expect`-free code paths below rely on the
//! decode step: where an invoke step meets an impossible state it leaves
//! the state unchanged rather than panic.)
//!
//! # Invariants (checked after every step by the model-based tests)
//! - The derivation tree is consistent (see [`crate::cap`]).
//! - Untyped memory is never handed out twice: the objects retyped from an
//!   untyped block lie in `[base, base + watermark)`, do not overlap each
//!   other, and the watermark only drops back to 0 once the block has no
//!   descendants left.
//! - `ObjectHeader::capabilities` equals the number of capabilities that
//!   name the object; the object is destroyed when it reaches 0.
//! - No capability has rights its parent lacks.
//! - A capability that leaves its slot leaves no stage-2 entry behind: a
//!   mapped frame or page table is unmapped first, and a VSpace or page
//!   table that still has entries is never destroyed (see
//!   [`crate::vspace`]).

use hyp_abi::invocation::MAX_CNODE_RADIX;
use hyp_abi::{Error, ObjectType, Rights};

use crate::cap::{Capability, Derivation, Slot, SlotRef};
use crate::ipc::{EndpointState, IpcStore};
use crate::irq::{self, IrqStore};
use crate::object::{ObjectRef, ObjectStore};
use crate::tcb;
use crate::thread::ThreadState;
use crate::vspace;

/// The most objects one retype creates.
pub const MAX_RETYPE_COUNT: u64 = 256;

/// Resolves capability pointer `pointer`, of which the top `depth` bits are
/// meaningful, through the CSpace whose root is `root` (a CNode
/// capability). Each CNode on the way consumes its guard and then `radix`
/// bits as the slot index; resolution ends when `depth` bits are used.
/// `argument` is the capability argument's number, for the error.
pub fn resolve(
    store: &impl ObjectStore,
    root: Capability,
    pointer: u64,
    depth: u8,
    argument: u8,
) -> Result<SlotRef, Error> {
    if depth == 0 || depth > 64 {
        return Err(Error::RangeError {
            argument,
            minimum: 1,
            maximum: 64,
        });
    }
    let mut bits_left = u32::from(depth);
    let mut node = root;
    // Every level consumes at least one bit, so this ends within 64 levels.
    loop {
        let Capability::CNode {
            object,
            radix,
            guard,
            guard_bits,
        } = node
        else {
            return Err(lookup_failed(argument, bits_left));
        };
        let level_bits = u32::from(radix) + u32::from(guard_bits);
        if level_bits > bits_left || radix == 0 {
            return Err(lookup_failed(argument, bits_left));
        }
        let shift = bits_left - level_bits;
        let field = (pointer >> shift) & mask(level_bits);
        if field >> radix != guard & mask(u32::from(guard_bits)) {
            return Err(lookup_failed(argument, bits_left));
        }
        let slot = SlotRef {
            cnode: object,
            index: field & mask(u32::from(radix)),
        };
        bits_left = shift;
        if bits_left == 0 {
            return Ok(slot);
        }
        node = match store.slot(slot) {
            Some(found) => found.capability,
            None => {
                return Err(lookup_failed(argument, bits_left));
            }
        };
    }
}

fn lookup_failed(argument: u8, bits_left: u32) -> Error {
    Error::LookupFailed {
        argument,
        bits_left: u8::try_from(bits_left).unwrap_or(u8::MAX),
    }
}

const fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1 << bits) - 1
    }
}

fn capability_at(
    store: &impl ObjectStore,
    slot: SlotRef,
    argument: u8,
) -> Result<Capability, Error> {
    store
        .slot(slot)
        .map(|slot| slot.capability)
        .ok_or(Error::InvalidCapability { argument })
}

fn require_empty(store: &impl ObjectStore, slot: SlotRef, argument: u8) -> Result<(), Error> {
    match store.slot(slot) {
        Some(found) if found.capability.is_null() => Ok(()),
        Some(_) => Err(Error::DeleteFirst { argument }),
        None => Err(Error::InvalidCapability { argument }),
    }
}

// ---------------------------------------------------------------------------
// Tree surgery. These assume the decode step checked the slots exist; a
// missing slot (a kernel bug) makes them do nothing rather than panic.

fn set_derivation(
    store: &mut impl ObjectStore,
    slot: Option<SlotRef>,
    update: impl FnOnce(&mut Derivation),
) {
    if let Some(found) = slot.and_then(|slot| store.slot_mut(slot)) {
        update(&mut found.derivation);
    }
}

/// Puts `capability` into the empty slot `child` as the first child of
/// `parent`, and counts it on its object.
fn insert_child(
    store: &mut impl ObjectStore,
    parent: SlotRef,
    child: SlotRef,
    capability: Capability,
) {
    let old_first = store
        .slot(parent)
        .and_then(|slot| slot.derivation.first_child);
    if let Some(slot) = store.slot_mut(child) {
        *slot = Slot {
            capability,
            derivation: Derivation {
                parent: Some(parent),
                first_child: None,
                next_sibling: old_first,
                previous_sibling: None,
            },
        };
    }
    set_derivation(store, old_first, |links| {
        links.previous_sibling = Some(child)
    });
    set_derivation(store, Some(parent), |links| links.first_child = Some(child));
    count_reference(store, capability, 1);
}

fn count_reference(store: &mut impl ObjectStore, capability: Capability, delta: i32) {
    if let Some(header) = capability
        .object()
        .and_then(|object| store.header_mut(object))
    {
        header.capabilities = header.capabilities.saturating_add_signed(delta);
    }
}

/// Takes the capability out of `slot`: its children move up to its parent
/// (they stay descendants of everything above), the slot becomes empty.
/// Returns the capability and its former parent.
fn unlink(store: &mut impl ObjectStore, slot: SlotRef) -> Option<(Capability, Option<SlotRef>)> {
    let Slot {
        capability,
        derivation,
    } = *store.slot(slot)?;
    let Derivation {
        parent,
        first_child,
        next_sibling,
        previous_sibling,
    } = derivation;

    // The children, in order, replace `slot` in its parent's child list.
    let mut last_child = None;
    let mut child = first_child;
    while let Some(current) = child {
        set_derivation(store, Some(current), |links| links.parent = parent);
        last_child = Some(current);
        child = store
            .slot(current)
            .and_then(|found| found.derivation.next_sibling);
    }
    // Splice the run of children (or nothing) between the siblings.
    let (run_first, run_last) = match (first_child, last_child) {
        (Some(first), Some(last)) => (Some(first), Some(last)),
        _ => (next_sibling, previous_sibling),
    };
    if let (Some(first), Some(last)) = (first_child, last_child) {
        set_derivation(store, Some(first), |links| {
            links.previous_sibling = previous_sibling
        });
        set_derivation(store, Some(last), |links| links.next_sibling = next_sibling);
    }
    set_derivation(store, next_sibling, |links| {
        links.previous_sibling = run_last
    });
    set_derivation(store, previous_sibling, |links| {
        links.next_sibling = run_first
    });
    if previous_sibling.is_none() {
        set_derivation(store, parent, |links| links.first_child = run_first);
    }
    if let Some(found) = store.slot_mut(slot) {
        *found = Slot::EMPTY;
    }
    Some((capability, parent))
}

/// After a capability left the tree: uncount it, destroy its object if it
/// was the last capability, and give the parent untyped its memory back if
/// it has no descendants left.
fn finish_removal(store: &mut impl KernelStore, capability: Capability, parent: Option<SlotRef>) {
    // A mapped frame or page table must not stay reachable through a
    // VSpace once its capability is gone (its memory may be reused).
    vspace::unmap_for_delete(store, capability);
    if let Capability::IrqHandler { irq } = capability {
        irq::release(store, irq);
    }
    if let Some(object) = capability.object() {
        count_reference(store, capability, -1);
        if store
            .header(object)
            .is_some_and(|header| header.capabilities == 0)
        {
            if let Capability::Tcb { object } = capability {
                tcb::release_references(store, object);
                tcb::release_vcpu(store, object);
            }
            store.destroy(object);
        }
    }
    let Some(parent) = parent else { return };
    let mut reclaimed = None;
    if let Some(found) = store.slot_mut(parent)
        && found.derivation.first_child.is_none()
        && let Capability::Untyped {
            base,
            size_bits,
            watermark,
            ..
        } = &mut found.capability
    {
        *watermark = 0;
        reclaimed = Some((*base, 1u64 << *size_bits));
    }
    if let Some((base, size)) = reclaimed {
        store.reclaim(base, size);
    }
}

/// Whether deleting `capability` would destroy a container that is not
/// empty: a CNode with capabilities in it (nothing could reach them any
/// more), or a VSpace or page table with valid entries (they would stay in
/// memory that is no table any more). A page-table capability is the only
/// one to its table, so deleting it always destroys the table.
fn would_destroy_a_non_empty_container(store: &impl KernelStore, capability: Capability) -> bool {
    let Some(object) = capability.object() else {
        return false;
    };
    store
        .header(object)
        .is_some_and(|header| header.capabilities <= 1)
        && !container_is_empty(store, capability)
}

/// Whether the object that `capability` names can end without leaving
/// something behind that refers to it: a CNode, VSpace or page table that
/// holds nothing; an endpoint nobody waits on; a notification nobody waits
/// on and no thread is bound to; a thread that is inactive, bound to no
/// notification and in no reply pairing (suspend it first). True for every
/// other capability.
fn container_is_empty(store: &impl KernelStore, capability: Capability) -> bool {
    if capability
        .object()
        .and_then(|object| store.header(object))
        .is_some_and(|header| header.references != 0)
    {
        return false;
    }
    match capability {
        Capability::CNode { .. } => cnode_is_empty(store, capability),
        Capability::VSpace { object } | Capability::PageTable { object, .. } => {
            vspace::table_is_empty(store, object)
        }
        Capability::Endpoint { object, .. } => store
            .endpoint(object)
            .is_none_or(|endpoint| endpoint.state == EndpointState::Idle),
        Capability::Notification { object, .. } => {
            store.notification(object).is_none_or(|notification| {
                notification.waiters.is_empty() && notification.bound_thread.is_none()
            })
        }
        Capability::Tcb { object } => store.tcb(object).is_none_or(|tcb| {
            tcb.state == ThreadState::Inactive
                && !tcb.running
                && tcb.bound_notification.is_none()
                && tcb.caller.is_none()
                && tcb.reply_holder.is_none()
        }),
        _ => true,
    }
}

/// The object store the capability operations that can destroy objects
/// need: memory for objects, and the IPC state that must be idle before an
/// object ends.
pub trait KernelStore: ObjectStore + IpcStore + IrqStore {}

impl<T: ObjectStore + IpcStore + IrqStore> KernelStore for T {}

// ---------------------------------------------------------------------------
// Operations.

/// `Untyped.Retype`: carves `count` objects of `object_type` (with
/// `size_bits` as [`ObjectType::object_size_bits`] takes it) from the
/// untyped capability in `untyped` and puts capabilities to them, as its
/// children, into the empty slots `destination.index ..
/// destination.index + count` of `destination.cnode`.
pub fn retype(
    store: &mut impl ObjectStore,
    untyped: SlotRef,
    object_type: ObjectType,
    size_bits: u64,
    destination: SlotRef,
    count: u64,
) -> Result<(), Error> {
    // Decode.
    let Capability::Untyped {
        base,
        size_bits: untyped_bits,
        watermark,
        device,
    } = capability_at(store, untyped, 0)?
    else {
        return Err(Error::InvalidCapability { argument: 0 });
    };
    let requested_bits = u32::try_from(size_bits).unwrap_or(u32::MAX);
    let object_bits = object_type
        .object_size_bits(requested_bits)
        .ok_or(match object_type {
            ObjectType::CNode => Error::RangeError {
                argument: 1,
                minimum: 1,
                maximum: u64::from(MAX_CNODE_RADIX),
            },
            _ => Error::RangeError {
                argument: 1,
                minimum: 4,
                maximum: 47,
            },
        })?;
    if count == 0 || count > MAX_RETYPE_COUNT {
        return Err(Error::RangeError {
            argument: 3,
            minimum: 1,
            maximum: MAX_RETYPE_COUNT,
        });
    }
    if device
        && !matches!(
            object_type,
            ObjectType::Untyped | ObjectType::Frame4K | ObjectType::Frame2M
        )
    {
        return Err(Error::InvalidArgument { argument: 0 });
    }
    let object_size = 1u64 << object_bits;
    let untyped_size = 1u64 << untyped_bits;
    let first = watermark.next_multiple_of(object_size);
    let needed = object_size
        .checked_mul(count)
        .ok_or(Error::InvalidArgument { argument: 3 })?;
    let available = untyped_size.saturating_sub(watermark);
    if object_bits > u32::from(untyped_bits) || first.saturating_add(needed) > untyped_size {
        return Err(Error::NotEnoughMemory {
            requested: needed,
            available,
        });
    }
    let Some(last_index) = destination.index.checked_add(count - 1) else {
        return Err(Error::RangeError {
            argument: 2,
            minimum: 0,
            maximum: u64::MAX - count,
        });
    };
    for index in destination.index..=last_index {
        require_empty(
            store,
            SlotRef {
                cnode: destination.cnode,
                index,
            },
            1,
        )?;
    }

    // Both fit in a byte: object_size_bits bounded them above (47, 24).
    let object_bits_u8 =
        u8::try_from(object_bits).map_err(|_| Error::InvalidArgument { argument: 1 })?;
    let requested_bits_u8 = u8::try_from(requested_bits).unwrap_or(0);

    // Invoke.
    let new_watermark = first + needed;
    if let Some(found) = store.slot_mut(untyped)
        && let Capability::Untyped { watermark, .. } = &mut found.capability
    {
        *watermark = new_watermark;
    }
    let rights = Rights::READ
        .union(Rights::WRITE)
        .union(Rights::GRANT)
        .union(Rights::GRANT_REPLY);
    for number in 0..count {
        let address = base + first + number * object_size;
        let object = ObjectRef(address);
        let capability = match object_type {
            ObjectType::Untyped => Capability::Untyped {
                base: address,
                size_bits: object_bits_u8,
                watermark: 0,
                device,
            },
            ObjectType::CNode => Capability::CNode {
                object,
                radix: requested_bits_u8,
                guard: 0,
                guard_bits: 0,
            },
            ObjectType::Tcb => Capability::Tcb { object },
            ObjectType::Endpoint => Capability::Endpoint {
                object,
                badge: 0,
                rights,
            },
            ObjectType::Notification => Capability::Notification {
                object,
                badge: 0,
                rights,
            },
            ObjectType::VSpace => Capability::VSpace { object },
            ObjectType::Vcpu => Capability::Vcpu { object },
            ObjectType::PageTable => Capability::PageTable {
                object,
                mapped: None,
            },
            ObjectType::Frame4K | ObjectType::Frame2M => Capability::Frame {
                object,
                size_bits: object_bits_u8,
                rights: Rights::READ.union(Rights::WRITE),
                device,
                mapped: None,
            },
        };
        if object_type != ObjectType::Untyped {
            let header_bits = if object_type == ObjectType::CNode {
                requested_bits_u8
            } else {
                object_bits_u8
            };
            store.create(object, object_type, header_bits, device);
        }
        insert_child(
            store,
            untyped,
            SlotRef {
                cnode: destination.cnode,
                index: destination.index + number,
            },
            capability,
        );
    }
    Ok(())
}

/// Puts `capability`, which has no parent (an original: the kernel made
/// it, at boot or for `IrqControl.Get`), into the empty slot `slot`.
/// `DeleteFirst` if the slot is not empty.
pub fn insert_root(
    store: &mut impl ObjectStore,
    slot: SlotRef,
    capability: Capability,
) -> Result<(), Error> {
    require_empty(store, slot, 0)?;
    if let Some(found) = store.slot_mut(slot) {
        *found = Slot {
            capability,
            derivation: Derivation::default(),
        };
    }
    count_reference(store, capability, 1);
    Ok(())
}

/// `CNode.Copy` (`badge` `None`) and `CNode.Mint` (`badge` `Some`): puts a
/// capability derived from the one in `source`, with `rights` intersected
/// and the badge set, into the empty slot `destination`, as a child of the
/// source.
pub fn copy(
    store: &mut impl ObjectStore,
    source: SlotRef,
    destination: SlotRef,
    rights: Rights,
    badge: Option<u64>,
) -> Result<(), Error> {
    let capability = capability_at(store, source, 1)?;
    if capability.is_null() {
        return Err(Error::InvalidCapability { argument: 1 });
    }
    require_empty(store, destination, 0)?;
    let derived = capability
        .derive(rights, badge)
        .ok_or(Error::IllegalOperation)?;
    insert_child(store, source, destination, derived);
    Ok(())
}

/// `CNode.Move`: moves the capability in `source` to the empty slot
/// `destination`, keeping its place in the derivation tree.
pub fn move_capability(
    store: &mut impl ObjectStore,
    source: SlotRef,
    destination: SlotRef,
) -> Result<(), Error> {
    let moved = *store
        .slot(source)
        .ok_or(Error::InvalidCapability { argument: 1 })?;
    if moved.capability.is_null() {
        return Err(Error::InvalidCapability { argument: 1 });
    }
    require_empty(store, destination, 0)?;
    if source == destination {
        return Ok(());
    }
    let Derivation {
        parent,
        first_child,
        next_sibling,
        previous_sibling,
    } = moved.derivation;
    if let Some(found) = store.slot_mut(destination) {
        *found = moved;
    }
    if let Some(found) = store.slot_mut(source) {
        *found = Slot::EMPTY;
    }
    set_derivation(store, previous_sibling, |links| {
        links.next_sibling = Some(destination)
    });
    set_derivation(store, next_sibling, |links| {
        links.previous_sibling = Some(destination)
    });
    if previous_sibling.is_none() {
        set_derivation(store, parent, |links| links.first_child = Some(destination));
    }
    let mut child = first_child;
    while let Some(current) = child {
        set_derivation(store, Some(current), |links| {
            links.parent = Some(destination)
        });
        child = store
            .slot(current)
            .and_then(|found| found.derivation.next_sibling);
    }
    Ok(())
}

/// `CNode.Delete`: empties `slot`. Capabilities derived from it move up to
/// its parent. The last capability to an object destroys it. Refused, with
/// nothing changed: deleting an untyped capability that still has children
/// ([`Error::RevokeFirst`]: its objects would outlive the record of where
/// they came from), and deleting the last capability to a CNode that still
/// holds capabilities, or to a VSpace or page table that still has valid
/// entries, or to an endpoint or notification with waiters or a binding,
/// or to a thread that is not suspended ([`Error::IllegalOperation`]: empty
/// or suspend it first; nothing may keep referring to an ended object). A
/// mapped frame or page table is unmapped as its capability goes.
pub fn delete(store: &mut impl KernelStore, slot: SlotRef) -> Result<(), Error> {
    let found = *store
        .slot(slot)
        .ok_or(Error::InvalidCapability { argument: 1 })?;
    let capability = found.capability;
    if capability.is_null() {
        return Ok(());
    }
    if matches!(capability, Capability::Untyped { .. }) && found.derivation.first_child.is_some() {
        return Err(Error::RevokeFirst);
    }
    if would_destroy_a_non_empty_container(store, capability) {
        return Err(Error::IllegalOperation);
    }
    if let Some((capability, parent)) = unlink(store, slot) {
        finish_removal(store, capability, parent);
    }
    Ok(())
}

/// `CNode.Revoke`: deletes every capability derived from the one in `slot`
/// (not the capability itself). An untyped capability gets all its memory
/// back. Refused, with nothing deleted, if that would destroy an object
/// that is not idle (every capability to it is in the subtree): a CNode
/// that still holds capabilities, a VSpace or page table with valid
/// entries, an endpoint or notification with waiters or a binding, a
/// thread that is not suspended. Empty or suspend it first. (So a VSpace is torn down by unmapping its frames, then its
/// page tables, then revoking.) (Destroying it would mean deleting its contents too,
/// which can nest without bound; seL4 needs "zombie" capabilities and
/// preemption for that, which this kernel does not have yet.)
pub fn revoke(store: &mut impl KernelStore, slot: SlotRef) -> Result<(), Error> {
    capability_at(store, slot, 1)?;
    // Decode: check every CNode in the subtree, so the invoke below never
    // stops half way.
    let mut pending = store
        .slot(slot)
        .and_then(|found| found.derivation.first_child);
    while let Some(current) = pending {
        let Some(found) = store.slot(current) else {
            break;
        };
        if let Some(object) = found.capability.object() {
            let all_in_subtree = store.header(object).is_some_and(|header| {
                u64::from(header.capabilities) <= capabilities_in_subtree(store, object, slot)
            });
            if all_in_subtree && !container_is_empty(store, found.capability) {
                return Err(Error::IllegalOperation);
            }
        }
        pending = next_in_subtree(store, current, slot);
    }
    // Invoke: delete the first child until there is none; the children of
    // a deleted capability move up and are deleted in turn.
    while let Some(child) = store
        .slot(slot)
        .and_then(|found| found.derivation.first_child)
    {
        match unlink(store, child) {
            Some((capability, parent)) => finish_removal(store, capability, parent),
            None => break,
        }
    }
    Ok(())
}

/// Capabilities to `object` in the subtree below `root`.
fn capabilities_in_subtree(store: &impl ObjectStore, object: ObjectRef, root: SlotRef) -> u64 {
    let mut count = 0;
    let mut pending = store
        .slot(root)
        .and_then(|found| found.derivation.first_child);
    while let Some(current) = pending {
        if store
            .slot(current)
            .is_some_and(|found| found.capability.object() == Some(object))
        {
            count += 1;
        }
        pending = next_in_subtree(store, current, root);
    }
    count
}

/// Whether the CNode that `capability` names holds no capability.
fn cnode_is_empty(store: &impl ObjectStore, capability: Capability) -> bool {
    let Capability::CNode { object, radix, .. } = capability else {
        return true;
    };
    (0..1u64 << radix).all(|index| {
        store
            .slot(SlotRef {
                cnode: object,
                index,
            })
            .is_none_or(|slot| slot.capability.is_null())
    })
}
/// Depth-first successor of `current` within the subtree below `root`.
fn next_in_subtree(store: &impl ObjectStore, current: SlotRef, root: SlotRef) -> Option<SlotRef> {
    let found = store.slot(current)?;
    if let Some(child) = found.derivation.first_child {
        return Some(child);
    }
    let mut node = current;
    loop {
        let links = store.slot(node)?.derivation;
        if let Some(next) = links.next_sibling {
            return Some(next);
        }
        let parent = links.parent?;
        if parent == root {
            return None;
        }
        node = parent;
    }
}

#[cfg(test)]
pub(crate) mod tests;
