//! Tests of the stage-2 invocations: unit tests of each operation and its
//! errors, an exhaustive check of rights, and a model-based property test
//! over random sequences of retype, copy, map, unmap, delete and revoke,
//! reusing the capability tests' arena.
#![allow(
    clippy::cast_possible_truncation,
    reason = "test indices and counts are small; a truncation would only weaken a test"
)]

use std::collections::BTreeMap;
use std::vec::Vec;

use hyp_abi::{Error, ObjectType, Rights};

use super::*;
use crate::cap::{Capability, Mapping};
use crate::cspace::tests::{Arena, boot, check_invariants, descendants, live_slots, slot};
use crate::cspace::{copy, delete, move_capability, retype, revoke};
use crate::object::{ObjectRef, ObjectStore};
use crate::stage2::{self, Descriptor, LeafAttributes};

/// An 8 MiB RAM untyped at this address sits in slot [`BIG`].
const BIG_BASE: u64 = 0x1000_0000;
const BIG: u64 = 62;
/// A 64 KiB device untyped at this address sits in slot [`DEVICE`].
const DEVICE_BASE: u64 = 0x0900_0000;
const DEVICE: u64 = 61;

const READ_WRITE: Rights = Rights::READ.union(Rights::WRITE);
const GIB: u64 = 1 << 30;
const MIB2: u64 = 1 << 21;

fn setup() -> Arena {
    let mut arena = boot();
    arena.slot_mut(slot(BIG)).unwrap().capability = Capability::Untyped {
        base: BIG_BASE,
        size_bits: 23,
        watermark: 0,
        device: false,
    };
    arena.slot_mut(slot(DEVICE)).unwrap().capability = Capability::Untyped {
        base: DEVICE_BASE,
        size_bits: 16,
        watermark: 0,
        device: true,
    };
    arena
}

fn capability(arena: &Arena, index: u64) -> Capability {
    arena.slot(slot(index)).unwrap().capability
}

fn object(arena: &Arena, index: u64) -> ObjectRef {
    capability(arena, index).object().unwrap()
}

/// `setup` plus a VSpace in slot 2, page tables in 3..=5, 4 KiB frames in
/// 6..=9, 2 MiB frames in 10..=11 and device frames in 12..=13.
fn populated() -> Arena {
    let mut arena = setup();
    retype(&mut arena, slot(BIG), ObjectType::VSpace, 0, slot(2), 1).unwrap();
    retype(&mut arena, slot(BIG), ObjectType::PageTable, 0, slot(3), 3).unwrap();
    retype(&mut arena, slot(BIG), ObjectType::Frame4K, 0, slot(6), 4).unwrap();
    retype(&mut arena, slot(BIG), ObjectType::Frame2M, 0, slot(10), 2).unwrap();
    retype(
        &mut arena,
        slot(DEVICE),
        ObjectType::Frame4K,
        0,
        slot(12),
        2,
    )
    .unwrap();
    arena
}

#[test]
fn retype_makes_vspaces_and_page_tables() {
    let arena = populated();
    assert_eq!(
        capability(&arena, 2),
        Capability::VSpace {
            object: ObjectRef(BIG_BASE)
        }
    );
    assert_eq!(
        capability(&arena, 4),
        Capability::PageTable {
            object: ObjectRef(BIG_BASE + 0x2000),
            mapped: None
        }
    );
    assert!(matches!(
        capability(&arena, 10),
        Capability::Frame {
            object: ObjectRef(0x1020_0000),
            size_bits: 21,
            mapped: None,
            ..
        }
    ));
    assert_eq!(arena.table(ObjectRef(BIG_BASE)), Some(&[0; 512]));
    assert_eq!(arena.table(ObjectRef(BIG_BASE + 0x2000)), Some(&[0; 512]));
    assert_eq!(arena.table(object(&arena, 6)), None, "a frame is no table");
    check_invariants(&arena);
}

#[test]
fn map_translate_unmap_4k() {
    let mut arena = populated();
    let vspace = object(&arena, 2);
    let ipa = 3 * GIB + 5 * MIB2 + 0x7000;
    page_table_map(&mut arena, slot(3), slot(2), ipa).unwrap();
    assert_eq!(
        capability(&arena, 3),
        Capability::PageTable {
            object: object(&arena, 3),
            mapped: Some(Mapping {
                vspace,
                address: 3 * GIB,
                level: 1
            })
        }
    );
    assert_eq!(
        arena.table(vspace).unwrap()[3],
        stage2::table_descriptor(object(&arena, 3).0)
    );
    page_table_map(&mut arena, slot(4), slot(2), ipa).unwrap();
    assert!(matches!(
        capability(&arena, 4),
        Capability::PageTable {
            mapped: Some(Mapping {
                address: 0xc0a0_0000,
                level: 2,
                ..
            }),
            ..
        }
    ));
    frame_map(&mut arena, slot(6), slot(2), ipa, READ_WRITE, false).unwrap();
    let frame = object(&arena, 6);
    assert_eq!(
        translate(&arena, vspace, ipa + 0x123),
        Some(Translation {
            physical: frame.0 + 0x123,
            rights: READ_WRITE,
            executable: false,
            device: false
        })
    );
    assert_eq!(translate(&arena, vspace, ipa + 0x1000), None);
    assert_eq!(translate(&arena, vspace, ipa - 0x1000), None);
    assert_eq!(
        arena.table(object(&arena, 4)).unwrap()[7],
        stage2::leaf_descriptor(
            frame.0,
            3,
            LeafAttributes {
                rights: READ_WRITE,
                executable: false,
                device: false
            }
        )
    );
    // A device frame next to it: never executable, Device memory.
    frame_map(
        &mut arena,
        slot(12),
        slot(2),
        ipa + 0x1000,
        Rights::READ,
        false,
    )
    .unwrap();
    assert_eq!(
        translate(&arena, vspace, ipa + 0x1000),
        Some(Translation {
            physical: DEVICE_BASE,
            rights: Rights::READ,
            executable: false,
            device: true
        })
    );
    check_invariants(&arena);

    frame_unmap(&mut arena, slot(6)).unwrap();
    assert_eq!(translate(&arena, vspace, ipa), None);
    assert!(matches!(
        capability(&arena, 6),
        Capability::Frame { mapped: None, .. }
    ));
    // Unmapping again does nothing; mapping again works.
    let before = arena.clone();
    frame_unmap(&mut arena, slot(6)).unwrap();
    assert_eq!(arena, before);
    frame_map(&mut arena, slot(6), slot(2), ipa, Rights::READ, true).unwrap();
    assert!(translate(&arena, vspace, ipa).unwrap().executable);
    frame_unmap(&mut arena, slot(6)).unwrap();
    frame_unmap(&mut arena, slot(12)).unwrap();
    page_table_unmap(&mut arena, slot(4)).unwrap();
    page_table_unmap(&mut arena, slot(3)).unwrap();
    assert_eq!(arena.table(vspace), Some(&[0; 512]));
    assert_eq!(arena, populated(), "back to where it started");
}

#[test]
fn map_translate_unmap_2m() {
    let mut arena = populated();
    let vspace = object(&arena, 2);
    let ipa = GIB + 3 * MIB2;
    page_table_map(&mut arena, slot(3), slot(2), ipa).unwrap();
    frame_map(&mut arena, slot(10), slot(2), ipa, Rights::READ, true).unwrap();
    let frame = object(&arena, 10);
    assert_eq!(
        translate(&arena, vspace, ipa + 0x1f_fff8),
        Some(Translation {
            physical: frame.0 + 0x1f_fff8,
            rights: Rights::READ,
            executable: true,
            device: false
        })
    );
    assert_eq!(translate(&arena, vspace, ipa + MIB2), None);
    // A 2 MiB block is where a level 3 table or a 4 KiB frame would go.
    let before = arena.clone();
    assert_eq!(
        page_table_map(&mut arena, slot(4), slot(2), ipa + 0x5000),
        Err(Error::DeleteFirst { argument: 1 })
    );
    assert_eq!(
        frame_map(&mut arena, slot(6), slot(2), ipa, Rights::READ, false),
        Err(Error::DeleteFirst { argument: 1 })
    );
    assert_eq!(arena, before);
    check_invariants(&arena);
    frame_unmap(&mut arena, slot(10)).unwrap();
    assert_eq!(translate(&arena, vspace, ipa), None);
    page_table_unmap(&mut arena, slot(3)).unwrap();
    assert_eq!(arena, populated());
}

#[test]
fn page_table_map_picks_the_level_and_reports_errors() {
    let mut arena = populated();
    page_table_map(&mut arena, slot(3), slot(2), 0).unwrap();
    page_table_map(&mut arena, slot(4), slot(2), 0).unwrap();
    let before = arena.clone();
    let cases = [
        (
            page_table_map(&mut arena, slot(5), slot(2), 0x1234),
            Error::IllegalOperation,
        ),
        (
            page_table_map(&mut arena, slot(3), slot(2), GIB),
            Error::IllegalOperation,
        ),
        (
            page_table_map(&mut arena, slot(6), slot(2), GIB),
            Error::InvalidCapability { argument: 0 },
        ),
        (
            page_table_map(&mut arena, slot(40), slot(2), GIB),
            Error::InvalidCapability { argument: 0 },
        ),
        (
            page_table_map(&mut arena, slot(5), slot(3), GIB),
            Error::InvalidCapability { argument: 1 },
        ),
        (
            page_table_map(&mut arena, slot(5), slot(2), 1 << 39),
            Error::RangeError {
                argument: 0,
                minimum: 0,
                maximum: (1 << 39) - 1,
            },
        ),
        (page_table_unmap(&mut arena, slot(3)), Error::RevokeFirst),
        (
            page_table_unmap(&mut arena, slot(6)),
            Error::InvalidCapability { argument: 0 },
        ),
        (
            copy(&mut arena, slot(3), slot(40), Rights::ALL, None),
            Error::IllegalOperation,
        ),
    ];
    for (result, expected) in cases {
        assert_eq!(result, Err(expected));
        assert_eq!(arena, before, "a refused operation changed state");
    }
    // The last table can go at the top of the space.
    page_table_map(&mut arena, slot(5), slot(2), (1 << 39) - 1).unwrap();
    assert!(matches!(
        capability(&arena, 5),
        Capability::PageTable {
            mapped: Some(Mapping {
                address: 0x7f_c000_0000,
                level: 1,
                ..
            }),
            ..
        }
    ));
    check_invariants(&arena);
}

#[test]
fn frame_map_reports_precise_errors_and_changes_nothing() {
    let mut arena = populated();
    page_table_map(&mut arena, slot(3), slot(2), 0).unwrap();
    page_table_map(&mut arena, slot(4), slot(2), 0).unwrap();
    frame_map(&mut arena, slot(7), slot(2), 0x1000, Rights::READ, false).unwrap();
    copy(&mut arena, slot(6), slot(20), Rights::READ, None).unwrap();
    let before = arena.clone();
    let cases = [
        (
            frame_map(&mut arena, slot(3), slot(2), 0, Rights::READ, false),
            Error::InvalidCapability { argument: 0 },
        ),
        (
            frame_map(&mut arena, slot(6), slot(3), 0, Rights::READ, false),
            Error::InvalidCapability { argument: 1 },
        ),
        (
            frame_map(&mut arena, slot(6), slot(40), 0, Rights::READ, false),
            Error::InvalidCapability { argument: 1 },
        ),
        (
            frame_map(&mut arena, slot(7), slot(2), 0x2000, Rights::READ, false),
            Error::IllegalOperation,
        ),
        (
            frame_map(&mut arena, slot(6), slot(2), 0x800, Rights::READ, false),
            Error::AlignmentError { argument: 0 },
        ),
        (
            frame_map(&mut arena, slot(10), slot(2), 0x1000, Rights::READ, false),
            Error::AlignmentError { argument: 0 },
        ),
        (
            frame_map(&mut arena, slot(6), slot(2), 1 << 39, Rights::READ, false),
            Error::RangeError {
                argument: 0,
                minimum: 0,
                maximum: (1 << 39) - 0x1000,
            },
        ),
        (
            frame_map(&mut arena, slot(6), slot(2), 0, Rights::WRITE, false),
            Error::InvalidArgument { argument: 1 },
        ),
        (
            frame_map(&mut arena, slot(6), slot(2), 0, Rights::NONE, false),
            Error::InvalidArgument { argument: 1 },
        ),
        (
            frame_map(&mut arena, slot(6), slot(2), 0, Rights::ALL, false),
            Error::InvalidArgument { argument: 1 },
        ),
        (
            frame_map(&mut arena, slot(20), slot(2), 0, READ_WRITE, false),
            Error::InsufficientRights {
                argument: 0,
                needed: READ_WRITE,
            },
        ),
        (
            frame_map(&mut arena, slot(12), slot(2), 0, Rights::READ, true),
            Error::InvalidArgument { argument: 2 },
        ),
        (
            frame_map(&mut arena, slot(6), slot(2), GIB, Rights::READ, false),
            Error::LookupFailed {
                argument: 1,
                bits_left: 30,
            },
        ),
        (
            frame_map(&mut arena, slot(6), slot(2), MIB2, Rights::READ, false),
            Error::LookupFailed {
                argument: 1,
                bits_left: 21,
            },
        ),
        (
            frame_map(&mut arena, slot(10), slot(2), 2 * GIB, Rights::READ, false),
            Error::LookupFailed {
                argument: 1,
                bits_left: 30,
            },
        ),
        (
            frame_map(&mut arena, slot(6), slot(2), 0x1000, Rights::READ, false),
            Error::DeleteFirst { argument: 1 },
        ),
        (
            frame_map(&mut arena, slot(10), slot(2), 0, Rights::READ, false),
            Error::DeleteFirst { argument: 1 },
        ),
        (
            frame_unmap(&mut arena, slot(3)),
            Error::InvalidCapability { argument: 0 },
        ),
        (
            frame_unmap(&mut arena, slot(40)),
            Error::InvalidCapability { argument: 0 },
        ),
    ];
    for (result, expected) in cases {
        assert_eq!(result, Err(expected));
        assert_eq!(arena, before, "a refused operation changed state");
    }
}

/// Every combination of capability rights, requested rights and
/// executability: a mapping exists exactly when the request is allowed,
/// and then allows exactly what was requested. No frame is ever writable
/// through a mapping unless the capability used has `WRITE`.
#[test]
fn mapping_rights_never_exceed_the_capability() {
    let mut base = populated();
    page_table_map(&mut base, slot(3), slot(2), 0).unwrap();
    page_table_map(&mut base, slot(4), slot(2), 0).unwrap();
    let vspace = object(&base, 2);
    // Under Miri, which interprets slowly, only `READ`, `WRITE`, both, and
    // all rights, for the capability and for the request.
    let all_rights: &[u64] = if cfg!(miri) {
        &[0b0001, 0b0010, 0b0011, 0b1111]
    } else {
        &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
    };
    for frame in [6, 12] {
        for &capability_bits in all_rights {
            for &requested_bits in all_rights {
                for executable in [false, true] {
                    let mut arena = base.clone();
                    let capability_rights = Rights::from_bits(capability_bits).unwrap();
                    let requested = Rights::from_bits(requested_bits).unwrap();
                    copy(&mut arena, slot(frame), slot(30), capability_rights, None).unwrap();
                    let result = frame_map(&mut arena, slot(30), slot(2), 0, requested, executable);
                    let device = frame == 12;
                    let allowed = requested.contains(Rights::READ)
                        && READ_WRITE.contains(requested)
                        && capability_rights.contains(requested)
                        && !(device && executable);
                    assert_eq!(
                        result.is_ok(),
                        allowed,
                        "{capability_rights:?} {requested:?}"
                    );
                    let translation = translate(&arena, vspace, 0);
                    if let Some(translation) = translation {
                        assert_eq!(translation.rights, requested);
                        assert!(capability_rights.contains(translation.rights));
                        assert_eq!(translation.executable, executable);
                        assert_eq!(translation.device, device);
                    } else {
                        assert!(!allowed);
                    }
                }
            }
        }
    }
}

#[test]
fn deleting_or_revoking_a_mapped_frame_unmaps_it() {
    let mut arena = populated();
    let vspace = object(&arena, 2);
    page_table_map(&mut arena, slot(3), slot(2), 0).unwrap();
    page_table_map(&mut arena, slot(4), slot(2), 0).unwrap();
    // The original maps at 0, two copies (read-only) at 0x1000 and 0x2000.
    copy(&mut arena, slot(6), slot(20), Rights::READ, None).unwrap();
    copy(&mut arena, slot(20), slot(21), Rights::ALL, None).unwrap();
    assert_eq!(capability(&arena, 21).rights(), Rights::READ);
    frame_map(&mut arena, slot(6), slot(2), 0, READ_WRITE, false).unwrap();
    frame_map(&mut arena, slot(20), slot(2), 0x1000, Rights::READ, false).unwrap();
    frame_map(&mut arena, slot(21), slot(2), 0x2000, Rights::READ, false).unwrap();
    assert_eq!(
        frame_map(&mut arena, slot(21), slot(2), 0x3000, READ_WRITE, false),
        Err(Error::IllegalOperation)
    );
    // A copy of a mapped capability starts unmapped.
    copy(&mut arena, slot(21), slot(22), Rights::ALL, None).unwrap();
    assert!(matches!(
        capability(&arena, 22),
        Capability::Frame { mapped: None, .. }
    ));
    check_invariants(&arena);
    // A moved capability takes its mapping along; deleting it unmaps.
    move_capability(&mut arena, slot(21), slot(23)).unwrap();
    delete(&mut arena, slot(23)).unwrap();
    assert_eq!(translate(&arena, vspace, 0x2000), None);
    assert!(translate(&arena, vspace, 0x1000).is_some());
    // Revoking the original removes the copy's mapping, not its own.
    revoke(&mut arena, slot(6)).unwrap();
    assert_eq!(translate(&arena, vspace, 0x1000), None);
    assert!(translate(&arena, vspace, 0).is_some());
    delete(&mut arena, slot(6)).unwrap();
    assert_eq!(translate(&arena, vspace, 0), None);
    check_invariants(&arena);
    // Deleting a mapped, empty page table unlinks it.
    delete(&mut arena, slot(4)).unwrap();
    assert_eq!(
        frame_map(&mut arena, slot(7), slot(2), 0, Rights::READ, false),
        Err(Error::LookupFailed {
            argument: 1,
            bits_left: 21
        })
    );
    delete(&mut arena, slot(3)).unwrap();
    assert_eq!(arena.table(vspace), Some(&[0; 512]));
    check_invariants(&arena);
}

#[test]
fn non_empty_tables_are_never_unlinked_or_destroyed() {
    let mut arena = populated();
    let vspace = object(&arena, 2);
    page_table_map(&mut arena, slot(3), slot(2), 0).unwrap();
    frame_map(&mut arena, slot(10), slot(2), 0, Rights::READ, false).unwrap();
    copy(&mut arena, slot(2), slot(20), Rights::ALL, None).unwrap();
    let before = arena.clone();
    assert_eq!(
        page_table_unmap(&mut arena, slot(3)),
        Err(Error::RevokeFirst)
    );
    assert_eq!(delete(&mut arena, slot(3)), Err(Error::IllegalOperation));
    assert_eq!(revoke(&mut arena, slot(BIG)), Err(Error::IllegalOperation));
    assert_eq!(arena, before);
    // Not the last VSpace capability: deleting it is fine.
    delete(&mut arena, slot(20)).unwrap();
    let before = arena.clone();
    assert_eq!(delete(&mut arena, slot(2)), Err(Error::IllegalOperation));
    assert_eq!(arena, before);
    // Emptied from the bottom up, everything goes.
    frame_unmap(&mut arena, slot(10)).unwrap();
    assert_eq!(delete(&mut arena, slot(2)), Err(Error::IllegalOperation));
    delete(&mut arena, slot(3)).unwrap();
    delete(&mut arena, slot(2)).unwrap();
    assert!(arena.header(vspace).is_none());
    revoke(&mut arena, slot(BIG)).unwrap();
    revoke(&mut arena, slot(DEVICE)).unwrap();
    assert_eq!(arena, setup());
}

// ---------------------------------------------------------------------------
// Stage-2 invariants, checked after every step of the property test.

/// A mapping as either side sees it: the object, where, and whether it is
/// a table.
type Seen = (ObjectRef, Mapping, bool);

fn walk_all(
    arena: &Arena,
    vspace: ObjectRef,
    table: ObjectRef,
    level: u8,
    base: u64,
    found: &mut Vec<(Seen, Rights, LeafAttributes)>,
) {
    let entries = arena.table(table).expect("a linked table is a live table");
    // Most entries are empty: they are skipped without decoding each one
    // (which was most of what this check cost under Miri), as an empty
    // entry decodes as invalid.
    assert_eq!(stage2::decode(0, level), Descriptor::Invalid);
    for (index, &descriptor) in entries.iter().enumerate() {
        if descriptor == 0 {
            continue;
        }
        let address = base + ((index as u64) << stage2::entry_span_bits(level));
        let mapping = Mapping {
            vspace,
            address,
            level,
        };
        match stage2::decode(descriptor, level) {
            Descriptor::Invalid => assert_eq!(descriptor, 0, "stray bits in an invalid entry"),
            Descriptor::Table(next) => {
                let object = &arena.objects[&next];
                assert_eq!(
                    object.header.map(|header| header.kind),
                    Some(ObjectType::PageTable),
                    "a table entry points at {next:#x}, which is no page table"
                );
                found.push((
                    (ObjectRef(next), mapping, true),
                    Rights::NONE,
                    LeafAttributes {
                        rights: Rights::NONE,
                        executable: false,
                        device: false,
                    },
                ));
                walk_all(arena, vspace, ObjectRef(next), level + 1, address, found);
            }
            Descriptor::Leaf(frame, attributes) => {
                assert!(level >= 2, "a level {level} block");
                let object = arena
                    .objects
                    .get(&frame)
                    .unwrap_or_else(|| panic!("a leaf points at {frame:#x}, which is no object"));
                assert!(
                    object.header.is_none(),
                    "a leaf points at an object with state"
                );
                assert_eq!(object.size, 1 << stage2::entry_span_bits(level));
                found.push(((ObjectRef(frame), mapping, false), Rights::NONE, attributes));
            }
        }
    }
}

fn check_stage2_invariants(arena: &Arena) {
    // What the tables hold.
    let mut from_tables = Vec::new();
    for (&base, object) in &arena.objects {
        if object.header.map(|header| header.kind) == Some(ObjectType::VSpace) {
            walk_all(
                arena,
                ObjectRef(base),
                ObjectRef(base),
                1,
                0,
                &mut from_tables,
            );
        }
    }
    // What the capabilities say.
    let mut from_capabilities: BTreeMap<(ObjectRef, u64, u64, u8, bool), Capability> =
        BTreeMap::new();
    for (_, found) in live_slots(arena) {
        let (object, mapping, table) = match found.capability {
            Capability::Frame {
                object,
                mapped: Some(mapping),
                ..
            } => (object, mapping, false),
            Capability::PageTable {
                object,
                mapped: Some(mapping),
            } => (object, mapping, true),
            _ => continue,
        };
        let key = (
            object,
            mapping.vspace.0,
            mapping.address,
            mapping.level,
            table,
        );
        assert!(
            from_capabilities.insert(key, found.capability).is_none(),
            "two capabilities record the same entry"
        );
    }
    assert_eq!(
        from_tables.len(),
        from_capabilities.len(),
        "entries and recorded mappings differ"
    );
    let mut linked_tables = BTreeMap::new();
    for ((object, mapping, table), _, attributes) in &from_tables {
        let key = (
            *object,
            mapping.vspace.0,
            mapping.address,
            mapping.level,
            *table,
        );
        let capability = from_capabilities
            .get(&key)
            .unwrap_or_else(|| panic!("no capability records the entry {key:x?}"));
        if *table {
            assert!(
                linked_tables.insert(*object, ()).is_none(),
                "a page table is linked twice"
            );
        } else if let Capability::Frame { rights, device, .. } = *capability {
            assert!(attributes.rights.contains(Rights::READ));
            assert!(
                rights.contains(attributes.rights),
                "a leaf allows {:?}, its capability {rights:?}",
                attributes.rights
            );
            assert_eq!(attributes.device, device);
            assert!(!(device && attributes.executable));
        }
    }
    // A table that is not linked is empty.
    for (&base, object) in &arena.objects {
        if object.header.map(|header| header.kind) == Some(ObjectType::PageTable)
            && !linked_tables.contains_key(&ObjectRef(base))
        {
            assert!(vspace_table_is_empty(arena, ObjectRef(base)));
        }
    }
}

fn vspace_table_is_empty(arena: &Arena, object: ObjectRef) -> bool {
    arena
        .table(object)
        .is_some_and(|entries| *entries == [0; 512])
}

#[test]
fn random_operations_keep_stage2_invariants() {
    // Under Miri, which interprets slowly: fewer steps, started afresh more
    // often, a refused operation checked to change nothing only at every
    // `compare_every`th step, and the invariants checked only at every
    // `check_every`th step and after the last.
    let (steps, restart, compare_every, check_every) = if cfg!(miri) {
        (150, 25, 5, 50)
    } else {
        (20_000, 200, 1, 1)
    };
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut random = move |bound: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % bound
    };
    let start = {
        let mut arena = populated();
        // A second VSpace and two more tables.
        retype(&mut arena, slot(BIG), ObjectType::VSpace, 0, slot(14), 1).unwrap();
        retype(&mut arena, slot(BIG), ObjectType::PageTable, 0, slot(15), 2).unwrap();
        arena
    };
    let mut arena = start.clone();
    let mut successes = [0u32; 9];
    for step in 0..steps {
        if step % restart == 0 {
            arena = start.clone();
        }
        // Slots 2..=17 hold what was retyped; 20..=60 hold copies.
        let any_slot = |random: &mut dyn FnMut(u64) -> u64| slot(2 + random(59));
        let vspace_slot = |random: &mut dyn FnMut(u64) -> u64| {
            slot(match random(8) {
                0 => 2 + random(59),
                1..=4 => 2,
                _ => 14,
            })
        };
        let ipa = |random: &mut dyn FnMut(u64) -> u64| {
            let mut ipa = random(2) * GIB + random(3) * MIB2;
            if random(2) == 0 {
                ipa += random(3) * 0x1000;
            }
            if random(20) == 0 {
                ipa += 0x10;
            }
            ipa
        };
        let before = (step % compare_every == 0).then(|| arena.clone());
        // Maps twice as often as the rest, so the tables fill up.
        let operation = match random(12) {
            9 => 1,
            10 => 4,
            11 => 2,
            other => other,
        };
        let result = match operation {
            0 => {
                let rights = Rights::from_bits(random(16)).unwrap();
                copy(
                    &mut arena,
                    any_slot(&mut random),
                    any_slot(&mut random),
                    rights,
                    None,
                )
            }
            1 | 2 => {
                let rights = match random(8) {
                    0 => Rights::from_bits(random(16)).unwrap(),
                    1..=3 => Rights::READ,
                    _ => READ_WRITE,
                };
                let executable = random(3) == 0;
                let frame = if random(2) == 0 {
                    slot(6 + random(8))
                } else {
                    any_slot(&mut random)
                };
                let vspace = vspace_slot(&mut random);
                frame_map(
                    &mut arena,
                    frame,
                    vspace,
                    ipa(&mut random),
                    rights,
                    executable,
                )
            }
            3 => frame_unmap(&mut arena, any_slot(&mut random)),
            4 => {
                let table = slot(3 + random(3) + if random(2) == 0 { 12 } else { 0 });
                let vspace = vspace_slot(&mut random);
                page_table_map(&mut arena, table, vspace, ipa(&mut random))
            }
            5 => page_table_unmap(&mut arena, any_slot(&mut random)),
            6 => delete(&mut arena, any_slot(&mut random)),
            7 => {
                let target = if random(10) == 0 {
                    slot(BIG)
                } else {
                    any_slot(&mut random)
                };
                revoke(&mut arena, target).map(|()| {
                    assert_eq!(descendants(&arena, target), 0);
                })
            }
            _ => move_capability(&mut arena, any_slot(&mut random), any_slot(&mut random)),
        };
        match (result, before) {
            (Ok(()), _) => successes[operation as usize] += 1,
            (Err(_), Some(before)) => assert_eq!(
                arena, before,
                "step {step}: a refused operation changed state"
            ),
            (Err(_), None) => {}
        }
        if step % check_every == 0 || step + 1 == steps {
            check_invariants(&arena);
            check_stage2_invariants(&arena);
        }
    }
    // Under Miri, too few steps for every operation to succeed (the tests
    // above make each succeed).
    if !cfg!(miri) {
        for (operation, count) in successes.iter().enumerate() {
            assert!(
                *count > steps / 500,
                "operation {operation} succeeded only {count} times"
            );
        }
    }
}
