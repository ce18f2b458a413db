//! Kernel objects are named by where they live.
//!
//! Every kernel object (TCB, endpoint, CNode, ...) is carved out of untyped
//! memory by a retype and lives at a physical address inside that untyped
//! block, so its address is its identity: two live objects never share an
//! address. `hyp-core` never dereferences an address itself; it asks the
//! object store (implemented by `hyp` over real memory and by the host tests
//! over an arena) for the object behind an [`ObjectRef`].

/// The physical address of a kernel object: its identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef(pub u64);

/// A thread (TCB) by address.
pub type ThreadRef = ObjectRef;

use hyp_abi::ObjectType;

use crate::cap::{Slot, SlotRef};

/// The kernel's bookkeeping at the start of every object that has state
/// (all types except frames, whose memory belongs to user space).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectHeader {
    /// What the object is.
    pub kind: ObjectType,
    /// For a CNode, log2 of its slots; for others, log2 of its size.
    pub size_bits: u8,
    /// Capabilities that name the object; the last one's deletion
    /// destroys it.
    pub capabilities: u32,
    /// Other kernel objects that refer to this one without a capability:
    /// threads using it as their CSpace root, VSpace or fault endpoint,
    /// interrupts that signal it. While it is not 0 the object is busy and
    /// its last capability cannot be deleted.
    pub references: u32,
}

/// Where kernel objects live. `hyp` implements it over real memory (the
/// objects sit at their physical addresses); the host tests implement it
/// over an arena that also checks every access.
///
/// # Contract
/// - `create` is only asked for a range inside untyped memory that no live
///   object overlaps (the untyped watermark guarantees it); it zeroes the
///   memory (except device frames) and, for objects with state, writes the
///   header with `capabilities = 0`; a CNode starts with every slot empty.
/// - `slot` and `slot_mut` return `None` unless `slot.cnode` is a live CNode
///   and `slot.index` is below its size: an implementation checks this
///   itself, whatever the caller believes.
/// - `header` / `header_mut` return `None` for anything that is not a live
///   object with state.
/// - `table` / `table_mut` return `None` unless `object` is a live VSpace
///   or PageTable object: the 512 descriptors of that translation table,
///   which `create` zeroed.
pub trait ObjectStore {
    /// The slot, if `slot` names one.
    fn slot(&self, slot: SlotRef) -> Option<&Slot>;
    /// The slot, if `slot` names one, for writing.
    fn slot_mut(&mut self, slot: SlotRef) -> Option<&mut Slot>;
    /// Brings a new object of `kind` into existence at `object`
    /// (`size_bits` as for [`ObjectType::object_size_bits`]' argument).
    fn create(&mut self, object: ObjectRef, kind: ObjectType, size_bits: u8, device: bool);
    /// Ends the object at `object`; its memory is no object any more.
    fn destroy(&mut self, object: ObjectRef);
    /// Untyped memory `[base, base + size)` has no object in it any more
    /// (its untyped capability lost its last descendant): frames in it end
    /// too. An implementation may check that no object with state is left.
    fn reclaim(&mut self, base: u64, size: u64);
    /// The header of a live object with state.
    fn header(&self, object: ObjectRef) -> Option<&ObjectHeader>;
    /// The header of a live object with state, for writing.
    fn header_mut(&mut self, object: ObjectRef) -> Option<&mut ObjectHeader>;
    /// The descriptors of a live VSpace or PageTable object.
    fn table(&self, object: ObjectRef) -> Option<&[u64; 512]>;
    /// The descriptors of a live VSpace or PageTable object, for writing.
    fn table_mut(&mut self, object: ObjectRef) -> Option<&mut [u64; 512]>;
}
