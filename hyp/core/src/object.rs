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
