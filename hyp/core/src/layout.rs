//! How big each kernel object is in memory, checked against the sizes the
//! ABI promises (`ObjectType::object_size_bits`), at compile time.
//!
//! An object with state is to be stored as its [`ObjectHeader`] followed by
//! its body, a CNode's slots as an array of [`Slot`]s (where a CNode keeps
//! its header is for the arch layer's object store to decide, e.g. in a
//! side table, since its `2^radix` slots fill the whole object). If a
//! struct grows past what retype reserves for it, the build fails here
//! instead of objects overlapping.
//!
//! Today's slot is 144 bytes, so a slot reserves 256: compacting slot
//! references to slot addresses would bring it to 64 (a next step).

use core::mem::size_of;

use hyp_abi::ObjectType;
use hyp_abi::invocation::SLOT_SIZE_BITS;

use crate::cap::Slot;
use crate::ipc::{Endpoint, Notification};
use crate::object::ObjectHeader;
use crate::thread::Tcb;

/// Bytes an object with state and body `T` needs: header, then body.
pub const fn stored_size<T>() -> usize {
    size_of::<ObjectHeader>() + size_of::<T>()
}

const fn reserved(kind: ObjectType) -> usize {
    match kind.object_size_bits(1) {
        Some(bits) => 1 << bits,
        None => 0,
    }
}

const _: () = assert!(
    stored_size::<Tcb>() <= reserved(ObjectType::Tcb),
    "TCB too big"
);
const _: () = assert!(
    stored_size::<Endpoint>() <= reserved(ObjectType::Endpoint),
    "endpoint too big"
);
const _: () = assert!(
    stored_size::<Notification>() <= reserved(ObjectType::Notification),
    "notification too big"
);
const _: () = assert!(size_of::<Slot>() <= 1 << SLOT_SIZE_BITS, "slot too big");
