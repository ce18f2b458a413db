//! Stage-2 address spaces: the `PageTable.Map`/`Unmap` and
//! `Frame.Map`/`Unmap` invocations, and the translation of an address
//! through a VSpace.
//!
//! A VSpace object is the root (level 1) table of a stage-2 walk; a
//! PageTable object is a level 2 or level 3 table; a frame is a 4 KiB page
//! (level 3) or a 2 MiB block (level 2). The descriptor format is in
//! [`crate::stage2`]. Every invocation is *decode, then invoke*: the decode
//! step checks every argument and the walk and returns a precise [`Error`];
//! the invoke step writes one descriptor and one capability and cannot
//! fail.
//!
//! After an unmap the arch layer must invalidate the TLB for the VSpace's
//! VMID and the address (`TLBI IPAS2E1IS`, then `TLBI VMALLE1IS`) before
//! the memory can be reused; this module only edits the tables.
//!
//! # Invariants (checked after every step by the model-based test)
//! - Every valid entry of a table reachable from a VSpace points at a live
//!   object of the right kind: a table entry at a PageTable object, a leaf
//!   at a frame of the entry's size. Exactly one capability records each
//!   entry in its `mapped` field, and each `mapped` field names an entry
//!   that points back at the capability's object.
//! - A leaf never allows more than the capability that made it: its rights
//!   are `READ`, or `READ` and `WRITE` when the capability has `WRITE`;
//!   Device memory is never executable.
//! - A page table is linked at most once (its capability is never copied)
//!   and is empty while it is not linked.
//! - A VSpace or PageTable object with valid entries is never destroyed,
//!   and a page table with valid entries is never unlinked, so no entry
//!   survives in memory that is no table any more. Deleting a mapped frame
//!   or page-table capability clears its entry first
//!   ([`unmap_for_delete`], called by [`crate::cspace`]'s delete and
//!   revoke).

use hyp_abi::{Error, Rights};

use crate::cap::{Capability, Mapping, SlotRef};
use crate::object::{ObjectRef, ObjectStore};
use crate::stage2::{
    self, Descriptor, IPA_LIMIT, LAST_LEVEL, LeafAttributes, OUTPUT_ADDRESS_LIMIT, ROOT_LEVEL,
};

/// What an address translates to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The physical address.
    pub physical: u64,
    /// `READ`, possibly with `WRITE`.
    pub rights: Rights,
    /// Instruction fetches allowed.
    pub executable: bool,
    /// Device-nGnRE memory.
    pub device: bool,
}

/// Where a walk for one address stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WalkStop {
    /// The entry at this level is invalid: no table below it.
    Missing(u8),
    /// The entry at this level is a leaf (a frame) where a table was needed.
    Leaf(u8),
    /// An entry names memory that is no table (a kernel bug).
    Broken,
}

/// Walks from `root` down to the table at `level` that holds `ipa`'s
/// entry; returns that table and the entry's index.
fn walk_to(
    store: &impl ObjectStore,
    root: ObjectRef,
    ipa: u64,
    level: u8,
) -> Result<(ObjectRef, usize), WalkStop> {
    let mut table = root;
    for current in ROOT_LEVEL..level {
        let entries = store.table(table).ok_or(WalkStop::Broken)?;
        match stage2::decode(entries[stage2::entry_index(ipa, current)], current) {
            Descriptor::Invalid => return Err(WalkStop::Missing(current)),
            Descriptor::Leaf(..) => return Err(WalkStop::Leaf(current)),
            Descriptor::Table(next) => table = ObjectRef(next),
        }
    }
    store.table(table).ok_or(WalkStop::Broken)?;
    Ok((table, stage2::entry_index(ipa, level)))
}

fn entry(store: &impl ObjectStore, table: ObjectRef, index: usize) -> u64 {
    store
        .table(table)
        .and_then(|entries| entries.get(index).copied())
        .unwrap_or(0)
}

fn write_entry(store: &mut impl ObjectStore, table: ObjectRef, index: usize, value: u64) {
    if let Some(slot) = store
        .table_mut(table)
        .and_then(|entries| entries.get_mut(index))
    {
        *slot = value;
    }
}

/// Whether the VSpace or PageTable object `object` has no valid entry (or
/// is no table at all).
pub fn table_is_empty(store: &impl ObjectStore, object: ObjectRef) -> bool {
    store.table(object).is_none_or(|entries| {
        entries
            .iter()
            .all(|&descriptor| stage2::decode(descriptor, LAST_LEVEL) == Descriptor::Invalid)
    })
}

fn vspace_at(store: &impl ObjectStore, slot: SlotRef, argument: u8) -> Result<ObjectRef, Error> {
    match store.slot(slot).map(|found| found.capability) {
        Some(Capability::VSpace { object }) if store.table(object).is_some() => Ok(object),
        _ => Err(Error::InvalidCapability { argument }),
    }
}

fn set_mapping(store: &mut impl ObjectStore, slot: SlotRef, mapping: Option<Mapping>) {
    if let Some(found) = store.slot_mut(slot) {
        match &mut found.capability {
            Capability::Frame { mapped, .. } | Capability::PageTable { mapped, .. } => {
                *mapped = mapping;
            }
            _ => {}
        }
    }
}

/// `PageTable.Map`: links the page table in `page_table` into the VSpace
/// in `vspace` for address `ipa`, at the first level where the walk for
/// `ipa` finds an empty entry: as the level 2 table if the root's entry is
/// empty, else as the level 3 table under the level 2 table there. The
/// mapping is recorded aligned to the region the table covers (the low
/// bits of `ipa` are ignored, as in seL4).
///
/// Errors, with nothing changed: [`Error::InvalidCapability`] (0: not a
/// page table; 1: not a VSpace), [`Error::IllegalOperation`] (the table is
/// linked already, or the walk for `ipa` already has a level 3 table),
/// [`Error::RangeError`] (0: `ipa` outside the 39-bit space),
/// [`Error::DeleteFirst`] (1: a frame is mapped where the table would go).
pub fn page_table_map(
    store: &mut impl ObjectStore,
    page_table: SlotRef,
    vspace: SlotRef,
    ipa: u64,
) -> Result<(), Error> {
    // Decode.
    let Some(Capability::PageTable { object, mapped }) =
        store.slot(page_table).map(|found| found.capability)
    else {
        return Err(Error::InvalidCapability { argument: 0 });
    };
    if store.table(object).is_none() || object.0 >= OUTPUT_ADDRESS_LIMIT {
        return Err(Error::InvalidCapability { argument: 0 });
    }
    let root = vspace_at(store, vspace, 1)?;
    // An unlinked table is always empty; the second test is a safeguard.
    if mapped.is_some() || !table_is_empty(store, object) {
        return Err(Error::IllegalOperation);
    }
    if ipa >= IPA_LIMIT {
        return Err(Error::RangeError {
            argument: 0,
            minimum: 0,
            maximum: IPA_LIMIT - 1,
        });
    }
    let (table, index, level) = match walk_to(store, root, ipa, LAST_LEVEL) {
        // Fully populated down to level 3.
        Ok(_) => return Err(Error::IllegalOperation),
        Err(WalkStop::Missing(level)) => {
            let (table, index) = walk_to(store, root, ipa, level)
                .map_err(|_| Error::InvalidCapability { argument: 1 })?;
            (table, index, level)
        }
        Err(WalkStop::Leaf(_)) => return Err(Error::DeleteFirst { argument: 1 }),
        Err(WalkStop::Broken) => return Err(Error::InvalidCapability { argument: 1 }),
    };
    let span_bits = stage2::entry_span_bits(level);

    // Invoke.
    write_entry(store, table, index, stage2::table_descriptor(object.0));
    set_mapping(
        store,
        page_table,
        Some(Mapping {
            vspace: root,
            address: ipa >> span_bits << span_bits,
            level,
        }),
    );
    Ok(())
}

/// `PageTable.Unmap`: unlinks the page table in `page_table` from where
/// it is linked. Unmapping a table that is not linked does nothing.
///
/// Errors, with nothing changed: [`Error::InvalidCapability`] (0: not a
/// page table), [`Error::RevokeFirst`] (the table still has valid entries:
/// unmap the frames and tables in it first, so none stays reachable from a
/// table that is no longer accounted for).
pub fn page_table_unmap(store: &mut impl ObjectStore, page_table: SlotRef) -> Result<(), Error> {
    let Some(capability @ Capability::PageTable { object, mapped }) =
        store.slot(page_table).map(|found| found.capability)
    else {
        return Err(Error::InvalidCapability { argument: 0 });
    };
    if mapped.is_none() {
        return Ok(());
    }
    if !table_is_empty(store, object) {
        return Err(Error::RevokeFirst);
    }
    unmap_for_delete(store, capability);
    set_mapping(store, page_table, None);
    Ok(())
}

/// `Frame.Map`: maps the frame in `frame` into the VSpace in `vspace` at
/// `ipa` with `rights` (`READ`, or `READ` and `WRITE`), executable or
/// not. A 4 KiB frame needs the level 3 table for `ipa` linked, a 2 MiB
/// frame the level 2 table.
///
/// Errors, with nothing changed: [`Error::InvalidCapability`] (0: not a
/// frame; 1: not a VSpace), [`Error::IllegalOperation`] (this frame
/// capability is mapped already; a copy of it can map elsewhere),
/// [`Error::RangeError`] (0: the frame would end beyond the 39-bit space),
/// [`Error::AlignmentError`] (0: `ipa` not aligned to the frame size),
/// [`Error::InvalidArgument`] (1: rights without `READ` or with rights
/// other than `READ` and `WRITE`; 2: an executable mapping of device
/// memory), [`Error::InsufficientRights`] (0: the capability lacks a
/// right asked for), [`Error::LookupFailed`] (1: a table on the way is not
/// linked; `bits_left` is log2 of the region the missing table would
/// cover: 30 for a level 2 table, 21 for a level 3 table),
/// [`Error::DeleteFirst`] (1: something is mapped at `ipa` already, or a
/// 2 MiB frame covers it).
pub fn frame_map(
    store: &mut impl ObjectStore,
    frame: SlotRef,
    vspace: SlotRef,
    ipa: u64,
    rights: Rights,
    executable: bool,
) -> Result<(), Error> {
    // Decode.
    let Some(Capability::Frame {
        object,
        size_bits,
        rights: capability_rights,
        device,
        mapped,
    }) = store.slot(frame).map(|found| found.capability)
    else {
        return Err(Error::InvalidCapability { argument: 0 });
    };
    let level = match size_bits {
        12 => LAST_LEVEL,
        21 => LAST_LEVEL - 1,
        _ => return Err(Error::InvalidCapability { argument: 0 }),
    };
    let size = 1u64 << size_bits;
    if !object.0.is_multiple_of(size) || object.0 >= OUTPUT_ADDRESS_LIMIT {
        return Err(Error::InvalidCapability { argument: 0 });
    }
    let root = vspace_at(store, vspace, 1)?;
    if mapped.is_some() {
        return Err(Error::IllegalOperation);
    }
    if ipa > IPA_LIMIT - size {
        return Err(Error::RangeError {
            argument: 0,
            minimum: 0,
            maximum: IPA_LIMIT - size,
        });
    }
    if !ipa.is_multiple_of(size) {
        return Err(Error::AlignmentError { argument: 0 });
    }
    let read_write = Rights::READ.union(Rights::WRITE);
    if !rights.contains(Rights::READ) || !read_write.contains(rights) {
        return Err(Error::InvalidArgument { argument: 1 });
    }
    if !capability_rights.contains(rights) {
        return Err(Error::InsufficientRights {
            argument: 0,
            needed: rights,
        });
    }
    if device && executable {
        return Err(Error::InvalidArgument { argument: 2 });
    }
    let (table, index) = walk_to(store, root, ipa, level).map_err(|stop| match stop {
        WalkStop::Missing(level) => Error::LookupFailed {
            argument: 1,
            bits_left: u8::try_from(stage2::entry_span_bits(level)).unwrap_or(u8::MAX),
        },
        WalkStop::Leaf(_) => Error::DeleteFirst { argument: 1 },
        WalkStop::Broken => Error::InvalidCapability { argument: 1 },
    })?;
    if stage2::decode(entry(store, table, index), level) != Descriptor::Invalid {
        return Err(Error::DeleteFirst { argument: 1 });
    }

    // Invoke.
    let descriptor = stage2::leaf_descriptor(
        object.0,
        level,
        LeafAttributes {
            rights,
            executable,
            device,
        },
    );
    write_entry(store, table, index, descriptor);
    set_mapping(
        store,
        frame,
        Some(Mapping {
            vspace: root,
            address: ipa,
            level,
        }),
    );
    Ok(())
}

/// `Frame.Unmap`: removes the mapping that the frame capability in `frame`
/// made. Unmapping a frame capability that is not mapped does nothing.
///
/// Errors, with nothing changed: [`Error::InvalidCapability`] (0: not a
/// frame).
pub fn frame_unmap(store: &mut impl ObjectStore, frame: SlotRef) -> Result<(), Error> {
    let Some(capability @ Capability::Frame { .. }) =
        store.slot(frame).map(|found| found.capability)
    else {
        return Err(Error::InvalidCapability { argument: 0 });
    };
    unmap_for_delete(store, capability);
    set_mapping(store, frame, None);
    Ok(())
}

/// Clears the entry that a mapped frame or page-table `capability` made
/// (it is leaving its slot, or being unmapped). Does nothing for other
/// capabilities, or if the entry no longer points at the capability's
/// object. The caller has checked that a page table is empty
/// ([`crate::cspace`]'s delete and revoke refuse otherwise).
pub fn unmap_for_delete(store: &mut impl ObjectStore, capability: Capability) {
    let (object, mapping) = match capability {
        Capability::Frame {
            object,
            mapped: Some(mapping),
            ..
        }
        | Capability::PageTable {
            object,
            mapped: Some(mapping),
        } => (object, mapping),
        _ => return,
    };
    let Ok((table, index)) = walk_to(store, mapping.vspace, mapping.address, mapping.level) else {
        return;
    };
    let points_here = match stage2::decode(entry(store, table, index), mapping.level) {
        Descriptor::Table(address) | Descriptor::Leaf(address, _) => address == object.0,
        Descriptor::Invalid => false,
    };
    if points_here {
        write_entry(store, table, index, 0);
    }
}

/// The table at `level` that the walk for `ipa` in `vspace` reaches, if
/// every table above it is linked.
pub fn translate_table(
    store: &impl ObjectStore,
    vspace: ObjectRef,
    ipa: u64,
    level: u8,
) -> Option<ObjectRef> {
    walk_to(store, vspace, ipa, level)
        .ok()
        .map(|(table, _)| table)
}

/// What `ipa` translates to in the VSpace `vspace`, if it is mapped.
pub fn translate(store: &impl ObjectStore, vspace: ObjectRef, ipa: u64) -> Option<Translation> {
    if ipa >= IPA_LIMIT {
        return None;
    }
    let mut table = vspace;
    for level in ROOT_LEVEL..=LAST_LEVEL {
        let descriptor = store.table(table)?[stage2::entry_index(ipa, level)];
        match stage2::decode(descriptor, level) {
            Descriptor::Invalid => return None,
            Descriptor::Table(next) => table = ObjectRef(next),
            Descriptor::Leaf(address, attributes) => {
                let offset = ipa & ((1u64 << stage2::entry_span_bits(level)) - 1);
                return Some(Translation {
                    physical: address + offset,
                    rights: attributes.rights,
                    executable: attributes.executable,
                    device: attributes.device,
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;
