//! The kernel objects in real memory: `hyp-core`'s object store, over the
//! RAM that the EL2 table maps at its physical addresses.
//!
//! Objects live where retype put them, inside untyped memory. Nothing is
//! trusted because of where an address came from: every access first
//! checks the bookkeeping below, and only then turns the address into a
//! reference.
//!
//! - A **page table** (`PageInfo`, one entry per 4 KiB page of RAM, carved
//!   from RAM at boot) says what each page holds: nothing the kernel
//!   knows, a user frame, small objects (TCBs, endpoints, notifications,
//!   several to a page), or the start of a large object (a CNode, VSpace or
//!   PageTable, a page or more) together with that object's header.
//! - A **small object** starts with a word that encodes its own address and
//!   kind ([`seal`]), followed by its header and body. It is only read as
//!   the Rust type after the page says "small objects" and the seal
//!   matches; the seal is written last by `create` and cleared by
//!   `destroy`. User memory (frames) never shares a page with small
//!   objects, so user space cannot forge a seal.
//!
//! # Invariants
//! - Every `PageInfo` entry is a valid value at all times (the table is
//!   initialized completely before it is used).
//! - A page is `SmallObjects` only while no frame covers it, and
//!   `LargeObject` only at the first page of a live CNode, VSpace or
//!   PageTable.
//! - A sealed small object's header and body are valid values of their
//!   types (written by `create` before the seal).
//! - Two live objects never overlap (guaranteed by `hyp-core`'s retype),
//!   so references to different objects never alias.

use core::mem::size_of;

use hyp_abi::ObjectType;
use hyp_core::cap::{Slot, SlotRef};
use hyp_core::ipc::{Endpoint, IpcStore, Notification};
use hyp_core::irq::{IrqStore, IrqTable};
use hyp_core::object::{ObjectHeader, ObjectRef, ObjectStore, ThreadRef};
use hyp_core::queue::{LinkStore, Links};
use hyp_core::root_task::{BootMemory, Region};
use hyp_core::scheduler::SchedulerStore;
use hyp_core::thread::Tcb;
use hyp_core::vcpu::Vcpu;

const PAGE_BITS: u32 = 12;
const PAGE: u64 = 1 << PAGE_BITS;

/// What a page of RAM holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum PageUse {
    /// Nothing the kernel tracks (free, untyped, or the kernel's own).
    Unused,
    /// Part of a user frame.
    Frame,
    /// Small objects, each sealed.
    SmallObjects,
    /// The first page of a large object; its header is in the entry.
    LargeObject,
    /// A later page of a large object.
    LargeObjectTail,
}

/// One page's bookkeeping.
#[derive(Clone, Copy, Debug)]
struct PageInfo {
    usage: PageUse,
    /// The header of the large object starting here (when `LargeObject`).
    header: ObjectHeader,
}

const UNUSED_PAGE: PageInfo = PageInfo {
    usage: PageUse::Unused,
    header: ObjectHeader {
        kind: ObjectType::Untyped,
        size_bits: 0,
        capabilities: 0,
        references: 0,
    },
};

/// A small object in memory: seal, header, body.
#[repr(C)]
struct Small<T> {
    seal: u64,
    header: ObjectHeader,
    body: T,
}

/// One CNode slot, padded to the slot size the ABI reserves.
#[repr(C, align(256))]
struct SlotCell {
    slot: Slot,
}

const _: () = assert!(size_of::<SlotCell>() == 1 << hyp_abi::invocation::SLOT_SIZE_BITS);
const _: () = assert!(size_of::<Small<Tcb>>() <= 1 << 11, "TCB object too big");
const _: () = assert!(
    size_of::<Small<Endpoint>>() <= 1 << 7,
    "endpoint object too big"
);
const _: () = assert!(
    size_of::<Small<Notification>>() <= 1 << 7,
    "notification object too big"
);
const _: () = assert!(size_of::<Small<Vcpu>>() <= 1 << 12, "VCPU object too big");

/// The alignment `small` requires of a `Small<T>`: its size rounded up to
/// a power of two, at least 64. Retype aligns every object to its size
/// (`ObjectType::object_size_bits`), which the assertions above keep at or
/// above `size_of::<Small<T>>()`, so live objects always have it.
const fn small_alignment<T>() -> u64 {
    let size = size_of::<Small<T>>().next_power_of_two() as u64;
    if size < 64 { 64 } else { size }
}

/// `2^bits` of a fixed-size kind (0 if the kind has no fixed size).
const fn kind_size(kind: ObjectType) -> u64 {
    match kind.object_size_bits(0) {
        Some(bits) => 1 << bits,
        None => 0,
    }
}

const _: () = assert!(
    small_alignment::<Tcb>() <= kind_size(ObjectType::Tcb)
        && small_alignment::<Endpoint>() <= kind_size(ObjectType::Endpoint)
        && small_alignment::<Notification>() <= kind_size(ObjectType::Notification)
        && small_alignment::<Vcpu>() <= kind_size(ObjectType::Vcpu)
        && kind_size(ObjectType::Vcpu) <= PAGE
        && kind_size(ObjectType::Tcb) <= PAGE,
    "every small object is aligned to what `small` checks, within a page"
);

/// The seal of a small object of `kind` at `address`: the address (a
/// multiple of 64, checked before the seal is read) with the kind's code
/// (1 to 63) in its low bits. It changes with both, so neither a stale
/// seal at another address nor one of another kind matches, and it is
/// never 0 (the value `destroy` leaves and zeroed memory holds). Two
/// instructions to check, where a mixed constant took six.
const fn seal(address: u64, kind: ObjectType) -> u64 {
    address | kind as u64
}

const _: () = assert!(
    ObjectType::Tcb as u64 != 0
        && ObjectType::Endpoint as u64 != 0
        && ObjectType::Notification as u64 != 0
        && ObjectType::Vcpu as u64 != 0
        && (ObjectType::Vcpu as u64) < 64,
    "small-object kinds have codes 1 to 63"
);

/// The object store over RAM.
#[derive(Debug)]
pub struct RealStore {
    /// First byte of RAM the page table covers.
    ram_base: u64,
    /// `PageInfo` entries, one per page from `ram_base`.
    pages: *mut PageInfo,
    page_count: usize,
    irqs: IrqTable,
}

// SAFETY: the store is only used behind the big kernel lock, one core at a
// time; the raw pointer is to memory reserved for it at boot.
unsafe impl Send for RealStore {}

impl RealStore {
    /// A store with no memory, for the static; [`RealStore::init`] gives it
    /// its page table.
    pub const fn empty() -> RealStore {
        RealStore {
            ram_base: 0,
            pages: core::ptr::null_mut(),
            page_count: 0,
            irqs: IrqTable::EMPTY,
        }
    }

    /// Bytes the page table needs for `ram` (all RAM, in one span).
    pub const fn table_bytes(ram: Region) -> u64 {
        (ram.size >> PAGE_BITS) * size_of::<PageInfo>() as u64
    }

    /// Sets up the page table at `table` for the RAM span `ram`.
    ///
    /// # Safety
    /// `[table, table + table_bytes(ram))` is RAM mapped read-write at EL2,
    /// aligned to 8, used for nothing else from now on; `ram` is all the
    /// RAM objects can ever be in.
    pub unsafe fn init(&mut self, ram: Region, table: u64) {
        let count = usize::try_from(ram.size >> PAGE_BITS).unwrap_or(0);
        let pages = table as *mut PageInfo;
        for index in 0..count {
            // SAFETY: inside the reserved range (the caller's contract),
            // aligned; writing a valid value initializes the entry.
            unsafe { pages.wrapping_add(index).write(UNUSED_PAGE) };
        }
        self.ram_base = ram.base;
        self.pages = pages;
        self.page_count = count;
    }

    #[inline(always)]
    fn page_index(&self, address: u64) -> Option<usize> {
        let offset = address.checked_sub(self.ram_base)?;
        let index = usize::try_from(offset >> PAGE_BITS).ok()?;
        (index < self.page_count).then_some(index)
    }

    #[inline(always)]
    fn page(&self, address: u64) -> Option<&PageInfo> {
        let index = self.page_index(address)?;
        // SAFETY: index < page_count, and every entry is initialized
        // (init); `&self` keeps writers away.
        Some(unsafe { &*self.pages.wrapping_add(index) })
    }

    #[inline(always)]
    fn page_mut(&mut self, address: u64) -> Option<&mut PageInfo> {
        let index = self.page_index(address)?;
        // SAFETY: as for `page`, and `&mut self` makes this the only
        // reference to the table.
        Some(unsafe { &mut *self.pages.wrapping_add(index) })
    }

    fn set_pages(&mut self, base: u64, size: u64, usage: PageUse) {
        let mut address = base;
        while address < base.saturating_add(size) {
            if let Some(page) = self.page_mut(address) {
                *page = PageInfo {
                    usage,
                    ..UNUSED_PAGE
                };
            }
            address += PAGE;
        }
    }

    /// The live large object of `kinds` starting at `object`.
    #[inline(always)]
    fn large(&self, object: ObjectRef, kinds: &[ObjectType]) -> Option<&ObjectHeader> {
        let page = self.page(object.0)?;
        (page.usage == PageUse::LargeObject
            && object.0.is_multiple_of(PAGE)
            && kinds.contains(&page.header.kind))
        .then_some(&page.header)
    }

    /// The sealed small object of `kind` at `object`.
    #[inline(always)]
    fn small<T>(&self, object: ObjectRef, kind: ObjectType) -> Option<&Small<T>> {
        // Aligned to its size rounded up to a power of two (at most a
        // page): so it lies within its page, and its seal's low 6 bits are
        // free for the kind.
        if self.page(object.0)?.usage != PageUse::SmallObjects
            || object.0 & (small_alignment::<T>() - 1) != 0
        {
            return None;
        }
        let pointer = usize::try_from(object.0).ok()? as *const Small<T>;
        // SAFETY: the page is RAM mapped at EL2 and holds kernel objects
        // only (its usage says so); the address is aligned and the object
        // lies within the page; the seal is the first field of the
        // `repr(C)` object, and reading a u64 is valid for any bits.
        let found = unsafe { pointer.cast::<u64>().read() };
        if found != seal(object.0, kind) {
            return None;
        }
        // SAFETY: the seal matches, so `create` wrote a valid `Small<T>`
        // here (invariant) and it is live; `&self` keeps writers away.
        Some(unsafe { &*pointer })
    }

    #[inline(always)]
    fn small_mut<T>(&mut self, object: ObjectRef, kind: ObjectType) -> Option<&mut Small<T>> {
        self.small::<T>(object, kind)?;
        let pointer = usize::try_from(object.0).ok()? as *mut Small<T>;
        // SAFETY: as in `small` (checked just above), and `&mut self` makes
        // this the only reference into the store.
        Some(unsafe { &mut *pointer })
    }

    fn write_small<T>(&mut self, object: ObjectRef, kind: ObjectType, size_bits: u8, body: T) {
        let Some(page) = self.page_mut(object.0) else {
            return;
        };
        page.usage = PageUse::SmallObjects;
        let Ok(address) = usize::try_from(object.0) else {
            return;
        };
        let pointer = address as *mut Small<T>;
        // SAFETY: retype hands out this range to this object alone (no live
        // object overlaps, hyp-core's invariant); it is RAM mapped at EL2
        // and aligned to the object's size. The seal goes last, so the
        // object is never found half written.
        unsafe {
            pointer.write(Small {
                seal: 0,
                header: ObjectHeader {
                    kind,
                    size_bits,
                    capabilities: 0,
                    references: 0,
                },
                body,
            });
        }
        // SAFETY: as above; the object was just written.
        unsafe { (*pointer).seal = seal(object.0, kind) };
    }

    fn zero(address: u64, size: u64) {
        let (Ok(address), Ok(size)) = (usize::try_from(address), usize::try_from(size)) else {
            return;
        };
        // SAFETY: callers pass a range that retype handed to one new object
        // (RAM mapped at EL2 that nothing else uses).
        unsafe { core::ptr::write_bytes(address as *mut u8, 0, size) };
    }

    fn kind_of(&self, object: ObjectRef) -> Option<ObjectType> {
        let page = self.page(object.0)?;
        match page.usage {
            PageUse::LargeObject if object.0.is_multiple_of(PAGE) => Some(page.header.kind),
            PageUse::SmallObjects => [
                ObjectType::Tcb,
                ObjectType::Endpoint,
                ObjectType::Notification,
                ObjectType::Vcpu,
            ]
            .into_iter()
            .find(|kind| match kind {
                ObjectType::Tcb => self.small::<Tcb>(object, *kind).is_some(),
                ObjectType::Endpoint => self.small::<Endpoint>(object, *kind).is_some(),
                ObjectType::Vcpu => self.small::<Vcpu>(object, *kind).is_some(),
                _ => self.small::<Notification>(object, *kind).is_some(),
            }),
            _ => None,
        }
    }
}

impl ObjectStore for RealStore {
    #[inline(always)]
    fn slot(&self, slot: SlotRef) -> Option<&Slot> {
        let header = self.large(slot.cnode, &[ObjectType::CNode])?;
        if slot.index >= 1u64 << header.size_bits {
            return None;
        }
        let index = usize::try_from(slot.index).ok()?;
        let base = usize::try_from(slot.cnode.0).ok()? as *const SlotCell;
        // SAFETY: the CNode is live (its page says so) and has `2^size_bits`
        // slot cells from its base, all written by `create`; index is below
        // that; `&self` keeps writers away.
        Some(unsafe { &(*base.wrapping_add(index)).slot })
    }

    #[inline(always)]
    fn slot_mut(&mut self, slot: SlotRef) -> Option<&mut Slot> {
        self.slot(slot)?;
        let index = usize::try_from(slot.index).ok()?;
        let base = usize::try_from(slot.cnode.0).ok()? as *mut SlotCell;
        // SAFETY: as in `slot` (checked just above), with `&mut self`.
        Some(unsafe { &mut (*base.wrapping_add(index)).slot })
    }

    fn create(&mut self, object: ObjectRef, kind: ObjectType, size_bits: u8, device: bool) {
        let Some(bits) = kind.object_size_bits(u32::from(size_bits)) else {
            return;
        };
        let size = 1u64 << bits;
        match kind {
            ObjectType::Untyped => {}
            ObjectType::Frame4K | ObjectType::Frame2M => {
                if !device {
                    Self::zero(object.0, size);
                }
                self.set_pages(object.0, size, PageUse::Frame);
            }
            ObjectType::Tcb => self.write_small(object, kind, size_bits, Tcb::default()),
            ObjectType::Endpoint => self.write_small(object, kind, size_bits, Endpoint::default()),
            ObjectType::Notification => {
                self.write_small(object, kind, size_bits, Notification::default());
            }
            ObjectType::Vcpu => self.write_small(object, kind, size_bits, Vcpu::default()),
            ObjectType::CNode | ObjectType::VSpace | ObjectType::PageTable => {
                if self.page_index(object.0).is_none() {
                    return;
                }
                self.set_pages(object.0, size, PageUse::LargeObjectTail);
                if kind == ObjectType::CNode {
                    let (Ok(address), Ok(count)) = (
                        usize::try_from(object.0),
                        usize::try_from(1u64 << size_bits),
                    ) else {
                        return;
                    };
                    let cells = address as *mut SlotCell;
                    for index in 0..count {
                        // SAFETY: retype gave this range to the new CNode
                        // alone; RAM mapped at EL2; `index` is below its
                        // slot count.
                        unsafe {
                            cells
                                .wrapping_add(index)
                                .write(SlotCell { slot: Slot::EMPTY })
                        };
                    }
                } else {
                    Self::zero(object.0, size);
                }
                if let Some(page) = self.page_mut(object.0) {
                    *page = PageInfo {
                        usage: PageUse::LargeObject,
                        header: ObjectHeader {
                            kind,
                            size_bits,
                            capabilities: 0,
                            references: 0,
                        },
                    };
                }
            }
        }
    }

    fn destroy(&mut self, object: ObjectRef) {
        match self.kind_of(object) {
            Some(ObjectType::CNode | ObjectType::VSpace | ObjectType::PageTable) => {
                let size_bits = self.page(object.0).map_or(0, |page| page.header.size_bits);
                let kind = self.page(object.0).map(|page| page.header.kind);
                let size = kind
                    .and_then(|kind| kind.object_size_bits(u32::from(size_bits)))
                    .map_or(PAGE, |bits| 1u64 << bits);
                self.set_pages(object.0, size, PageUse::Unused);
            }
            Some(kind @ ObjectType::Tcb) => {
                if let Some(found) = self.small_mut::<Tcb>(object, kind) {
                    found.seal = 0;
                }
            }
            Some(kind @ ObjectType::Endpoint) => {
                if let Some(found) = self.small_mut::<Endpoint>(object, kind) {
                    found.seal = 0;
                }
            }
            Some(kind @ ObjectType::Notification) => {
                if let Some(found) = self.small_mut::<Notification>(object, kind) {
                    found.seal = 0;
                }
            }
            Some(kind @ ObjectType::Vcpu) => {
                if let Some(found) = self.small_mut::<Vcpu>(object, kind) {
                    found.seal = 0;
                }
            }
            // Frames end with their untyped memory's reclaim.
            _ => {}
        }
    }

    fn reclaim(&mut self, base: u64, size: u64) {
        self.set_pages(base, size, PageUse::Unused);
    }

    fn header(&self, object: ObjectRef) -> Option<&ObjectHeader> {
        match self.kind_of(object)? {
            ObjectType::CNode | ObjectType::VSpace | ObjectType::PageTable => {
                self.page(object.0).map(|page| &page.header)
            }
            kind @ ObjectType::Tcb => self.small::<Tcb>(object, kind).map(|found| &found.header),
            kind @ ObjectType::Endpoint => self
                .small::<Endpoint>(object, kind)
                .map(|found| &found.header),
            kind @ ObjectType::Notification => self
                .small::<Notification>(object, kind)
                .map(|found| &found.header),
            kind @ ObjectType::Vcpu => self.small::<Vcpu>(object, kind).map(|found| &found.header),
            _ => None,
        }
    }

    fn header_mut(&mut self, object: ObjectRef) -> Option<&mut ObjectHeader> {
        match self.kind_of(object)? {
            ObjectType::CNode | ObjectType::VSpace | ObjectType::PageTable => {
                self.page_mut(object.0).map(|page| &mut page.header)
            }
            kind @ ObjectType::Tcb => self
                .small_mut::<Tcb>(object, kind)
                .map(|found| &mut found.header),
            kind @ ObjectType::Endpoint => self
                .small_mut::<Endpoint>(object, kind)
                .map(|found| &mut found.header),
            kind @ ObjectType::Notification => self
                .small_mut::<Notification>(object, kind)
                .map(|found| &mut found.header),
            kind @ ObjectType::Vcpu => self
                .small_mut::<Vcpu>(object, kind)
                .map(|found| &mut found.header),
            _ => None,
        }
    }

    fn table(&self, object: ObjectRef) -> Option<&[u64; 512]> {
        self.large(object, &[ObjectType::VSpace, ObjectType::PageTable])?;
        let pointer = usize::try_from(object.0).ok()? as *const [u64; 512];
        // SAFETY: a live VSpace or PageTable (its page says so): 4 KiB of
        // descriptors that `create` zeroed, page aligned; `&self` keeps
        // writers away.
        Some(unsafe { &*pointer })
    }

    fn table_mut(&mut self, object: ObjectRef) -> Option<&mut [u64; 512]> {
        self.table(object)?;
        let pointer = usize::try_from(object.0).ok()? as *mut [u64; 512];
        // SAFETY: as in `table` (checked just above), with `&mut self`.
        Some(unsafe { &mut *pointer })
    }
}

impl LinkStore for RealStore {
    #[inline(always)]
    fn links(&self, thread: ThreadRef) -> Links {
        self.tcb(thread).map(|tcb| tcb.links).unwrap_or_default()
    }
    #[inline(always)]
    fn set_links(&mut self, thread: ThreadRef, links: Links) {
        if let Some(tcb) = self.tcb_mut(thread) {
            tcb.links = links;
        }
    }
}

impl SchedulerStore for RealStore {
    fn priority(&self, thread: ThreadRef) -> u8 {
        self.tcb(thread).map_or(0, |tcb| tcb.priority)
    }
    fn affinity(&self, thread: ThreadRef) -> usize {
        self.tcb(thread).map_or(0, |tcb| tcb.affinity)
    }
}

impl IpcStore for RealStore {
    #[inline(always)]
    fn tcb(&self, thread: ThreadRef) -> Option<&Tcb> {
        self.small::<Tcb>(thread, ObjectType::Tcb)
            .map(|found| &found.body)
    }
    #[inline(always)]
    fn tcb_mut(&mut self, thread: ThreadRef) -> Option<&mut Tcb> {
        self.small_mut::<Tcb>(thread, ObjectType::Tcb)
            .map(|found| &mut found.body)
    }
    #[inline(always)]
    fn endpoint(&self, endpoint: ObjectRef) -> Option<&Endpoint> {
        self.small::<Endpoint>(endpoint, ObjectType::Endpoint)
            .map(|found| &found.body)
    }
    #[inline(always)]
    fn endpoint_mut(&mut self, endpoint: ObjectRef) -> Option<&mut Endpoint> {
        self.small_mut::<Endpoint>(endpoint, ObjectType::Endpoint)
            .map(|found| &mut found.body)
    }
    #[inline(always)]
    fn notification(&self, notification: ObjectRef) -> Option<&Notification> {
        self.small::<Notification>(notification, ObjectType::Notification)
            .map(|found| &found.body)
    }
    #[inline(always)]
    fn notification_mut(&mut self, notification: ObjectRef) -> Option<&mut Notification> {
        self.small_mut::<Notification>(notification, ObjectType::Notification)
            .map(|found| &mut found.body)
    }
    #[inline(always)]
    fn vcpu(&self, vcpu: ObjectRef) -> Option<&Vcpu> {
        self.small::<Vcpu>(vcpu, ObjectType::Vcpu)
            .map(|found| &found.body)
    }
    #[inline(always)]
    fn vcpu_mut(&mut self, vcpu: ObjectRef) -> Option<&mut Vcpu> {
        self.small_mut::<Vcpu>(vcpu, ObjectType::Vcpu)
            .map(|found| &mut found.body)
    }
    fn save_loaded_vcpu(&mut self, vcpu: ObjectRef) {
        // The kernel only asks for the VCPU loaded on this core, from a
        // native thread's invocation (so the eager part is saved already).
        if let Some(state) = self.vcpu_mut(vcpu) {
            crate::arch::guest::save_lazy(crate::arch::registers::core_index(), state);
        }
    }
}

impl IrqStore for RealStore {
    fn irqs(&self) -> &IrqTable {
        &self.irqs
    }
    fn irqs_mut(&mut self) -> &mut IrqTable {
        &mut self.irqs
    }
}

impl BootMemory for RealStore {
    fn write(&mut self, address: u64, bytes: &[u8]) {
        // Only into a frame the root-task builder just created.
        let whole = bytes.len() as u64;
        let end = address.saturating_add(whole);
        let mut page = address & !(PAGE - 1);
        while page < end {
            if self
                .page(page)
                .is_none_or(|info| info.usage != PageUse::Frame)
            {
                return;
            }
            page += PAGE;
        }
        let Ok(destination) = usize::try_from(address) else {
            return;
        };
        // SAFETY: every page of the destination is a user frame (checked
        // above) in RAM mapped at EL2; no user thread runs yet at boot, so
        // nothing else accesses it; the source is a separate Rust slice.
        unsafe {
            core::ptr::copy_nonoverlapping(bytes.as_ptr(), destination as *mut u8, bytes.len());
        }
    }
}
