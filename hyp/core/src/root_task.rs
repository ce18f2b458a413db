//! Builds the root task at boot: its CNode, TCB, VSpace with the image,
//! stack, boot-info page and IPC buffer mapped, and capabilities to all
//! the remaining memory as untyped blocks, described by the boot-info page.
//!
//! The kernel has no heap: the root task's own objects are carved from the
//! start of the largest free memory region, and everything left becomes
//! untyped memory that the root task owns. The objects are created and
//! mapped through the same functions the invocations use (`cspace`,
//! `vspace`), so the root task's state satisfies the same invariants as
//! anything it builds later.

use hyp_abi::{Rights, boot_info, initial_slots, user_layout};

use crate::cap::{Capability, SlotRef};
use crate::cspace::{self, KernelStore};
use crate::elf::Image;
use crate::kernel::Kernel;
use crate::object::ObjectRef;
use crate::stage2;
use crate::vspace;
use hyp_abi::ObjectType;
use hyp_abi::invocation::SLOT_SIZE_BITS;

/// log2 of the root CNode's slots.
pub const ROOT_RADIX: u8 = 12;
/// The root task's priority: the highest.
pub const ROOT_PRIORITY: u8 = 255;
const PAGE: u64 = 4096;

/// Writing into memory the kernel just created frames in (boot only).
pub trait BootMemory {
    /// Copies `bytes` to physical address `address`.
    fn write(&mut self, address: u64, bytes: &[u8]);
}

/// A physical memory range `[base, base + size)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First byte.
    pub base: u64,
    /// Bytes.
    pub size: u64,
}

/// Why the root task could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootTaskError {
    /// No free region holds the root task's objects.
    NotEnoughMemory,
    /// A segment lies outside `[IMAGE_BASE, IMAGE_LIMIT)` or is not page
    /// aligned, or two segments share a page.
    BadSegment(u64),
    /// The root CNode has too few slots for the initial capabilities.
    TooManyCapabilities,
    /// An operation on the new objects failed (a kernel bug).
    Internal(hyp_abi::Error),
}

impl core::fmt::Display for RootTaskError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RootTaskError::NotEnoughMemory => {
                write!(formatter, "not enough memory for the root task")
            }
            RootTaskError::BadSegment(address) => write!(
                formatter,
                "the root task's segment at {address:#x} is not page aligned, overlaps another or lies outside {:#x}..{:#x}",
                user_layout::IMAGE_BASE,
                user_layout::IMAGE_LIMIT
            ),
            RootTaskError::TooManyCapabilities => write!(formatter, "the root CNode is too small"),
            RootTaskError::Internal(error) => write!(
                formatter,
                "kernel bug while building the root task: {error:?}"
            ),
        }
    }
}

impl From<hyp_abi::Error> for RootTaskError {
    fn from(error: hyp_abi::Error) -> Self {
        RootTaskError::Internal(error)
    }
}

/// A bump allocator over one region, for the root task's objects.
struct Bump {
    next: u64,
    end: u64,
}

impl Bump {
    fn take(&mut self, size_bits: u32) -> Result<u64, RootTaskError> {
        let size = 1u64 << size_bits;
        let base = self
            .next
            .checked_add(size - 1)
            .map(|value| value & !(size - 1))
            .ok_or(RootTaskError::NotEnoughMemory)?;
        let end = base
            .checked_add(size)
            .ok_or(RootTaskError::NotEnoughMemory)?;
        if end > self.end {
            return Err(RootTaskError::NotEnoughMemory);
        }
        self.next = end;
        Ok(base)
    }
}

struct Builder<'k, S> {
    kernel: &'k mut Kernel<S>,
    bump: Bump,
    cnode: ObjectRef,
    next_slot: u64,
}

impl<S: KernelStore> Builder<'_, S> {
    fn slot(&self, index: u64) -> SlotRef {
        SlotRef {
            cnode: self.cnode,
            index,
        }
    }

    fn allocate_slot(&mut self) -> Result<SlotRef, RootTaskError> {
        if self.next_slot >= 1 << ROOT_RADIX {
            return Err(RootTaskError::TooManyCapabilities);
        }
        let slot = self.slot(self.next_slot);
        self.next_slot += 1;
        Ok(slot)
    }

    /// Creates an object of `kind` and puts its capability into `slot`.
    fn object(&mut self, kind: ObjectType, slot: SlotRef) -> Result<ObjectRef, RootTaskError> {
        let bits = kind
            .object_size_bits(0)
            .ok_or(RootTaskError::NotEnoughMemory)?;
        let object = ObjectRef(self.bump.take(bits)?);
        self.kernel.store.create(object, kind, 0, false);
        let capability = match kind {
            ObjectType::Tcb => Capability::Tcb { object },
            ObjectType::VSpace => Capability::VSpace { object },
            ObjectType::PageTable => Capability::PageTable {
                object,
                mapped: None,
            },
            _ => Capability::Frame {
                object,
                size_bits: 12,
                rights: Rights::READ.union(Rights::WRITE),
                device: false,
                mapped: None,
            },
        };
        cspace::insert_root(&mut self.kernel.store, slot, capability)?;
        Ok(object)
    }

    /// A new frame mapped at `address` with `rights`, in `slot`.
    fn frame(
        &mut self,
        slot: SlotRef,
        vspace: SlotRef,
        address: u64,
        rights: Rights,
        executable: bool,
    ) -> Result<u64, RootTaskError> {
        let frame = self.object(ObjectType::Frame4K, slot)?;
        self.ensure_tables(vspace, address)?;
        vspace::frame_map(
            &mut self.kernel.store,
            slot,
            vspace,
            address,
            rights,
            executable,
        )?;
        Ok(frame.0)
    }

    /// Links page tables until the walk for `address` reaches level 3.
    fn ensure_tables(&mut self, vspace: SlotRef, address: u64) -> Result<(), RootTaskError> {
        loop {
            let Some(Capability::VSpace { object }) =
                self.kernel.store.slot(vspace).map(|found| found.capability)
            else {
                return Err(RootTaskError::Internal(hyp_abi::Error::IllegalOperation));
            };
            if vspace::translate_table(&self.kernel.store, object, address, stage2::LAST_LEVEL)
                .is_some()
            {
                return Ok(());
            }
            let slot = self.allocate_slot()?;
            self.object(ObjectType::PageTable, slot)?;
            vspace::page_table_map(&mut self.kernel.store, slot, vspace, address)?;
        }
    }
}

/// What else the root task learns at boot besides its memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BootExtras {
    /// The boot payload (2 MiB aligned, reserved by the kernel), if the
    /// image has one: the root task gets 2 MiB frames over it.
    pub payload: Option<Region>,
    /// The GIC version (2 or 3).
    pub gic_version: u64,
    /// The GICv2 virtual CPU interface's physical address (0: none).
    pub gic_virtual_cpu_interface: u64,
    /// The console UART's interrupt (0: unknown).
    pub console_irq: u64,
}

/// Builds the root task from `image` in `free` memory (sorted or not; the
/// regions must not overlap each other or anything the kernel uses), gives
/// it the rest of `free` and all of `device` as untyped capabilities, and
/// makes it ready to run on core 0. Returns the thread.
pub fn build<S: KernelStore + BootMemory>(
    kernel: &mut Kernel<S>,
    image: &Image<'_>,
    free: &[Region],
    device: &[Region],
    extras: &BootExtras,
) -> Result<ObjectRef, RootTaskError> {
    // The root task's objects come from the start of the largest region.
    let largest = free
        .iter()
        .enumerate()
        .max_by_key(|(_, region)| region.size)
        .map(|(index, region)| (index, *region))
        .ok_or(RootTaskError::NotEnoughMemory)?;
    let (largest_index, largest) = largest;
    let mut bump = Bump {
        next: largest.base,
        end: largest.base.saturating_add(largest.size),
    };
    let cnode_bits = u32::from(ROOT_RADIX) + SLOT_SIZE_BITS;
    let cnode = ObjectRef(bump.take(cnode_bits)?);
    kernel
        .store
        .create(cnode, ObjectType::CNode, ROOT_RADIX, false);
    let mut builder = Builder {
        kernel,
        bump,
        cnode,
        next_slot: initial_slots::FIRST_FREE,
    };
    let cnode_capability = Capability::CNode {
        object: cnode,
        radix: ROOT_RADIX,
        guard: 0,
        guard_bits: 64 - ROOT_RADIX,
    };
    let cnode_slot = builder.slot(initial_slots::CNODE);
    cspace::insert_root(&mut builder.kernel.store, cnode_slot, cnode_capability)?;
    let thread = builder.object(ObjectType::Tcb, builder.slot(initial_slots::TCB))?;
    let vspace_slot = builder.slot(initial_slots::VSPACE);
    builder.object(ObjectType::VSpace, vspace_slot)?;
    let irq_control_slot = builder.slot(initial_slots::IRQ_CONTROL);
    cspace::insert_root(
        &mut builder.kernel.store,
        irq_control_slot,
        Capability::IrqControl,
    )?;
    let read_only = Rights::READ;
    let read_write = Rights::READ.union(Rights::WRITE);
    let boot_info_frame = builder.frame(
        builder.slot(initial_slots::BOOT_INFO_FRAME),
        vspace_slot,
        user_layout::BOOT_INFO,
        read_only,
        false,
    )?;
    builder.frame(
        builder.slot(initial_slots::IPC_BUFFER_FRAME),
        vspace_slot,
        user_layout::IPC_BUFFER,
        read_write,
        false,
    )?;
    for page in 0..user_layout::STACK_PAGES {
        let slot = builder.allocate_slot()?;
        let address = user_layout::STACK_TOP - (page + 1) * PAGE;
        builder.frame(slot, vspace_slot, address, read_write, false)?;
    }

    // The image, page by page, in address order; its page tables first, so
    // the image frames' capabilities are consecutive.
    let mut image_end = user_layout::IMAGE_BASE;
    let mut segments: [Option<crate::elf::Segment<'_>>; crate::elf::MAX_SEGMENTS] = image.segments;
    segments.sort_unstable_by_key(|segment| segment.map_or(u64::MAX, |segment| segment.address));
    for segment in segments.iter().flatten() {
        let end = segment.address.saturating_add(segment.memory_size);
        if segment.address < user_layout::IMAGE_BASE || end > user_layout::IMAGE_LIMIT {
            return Err(RootTaskError::BadSegment(segment.address));
        }
        let mut address = segment.address & !(PAGE - 1);
        while address < end {
            builder.ensure_tables(vspace_slot, address)?;
            address += PAGE;
        }
    }
    let first_image_slot = builder.next_slot;
    for segment in segments.iter().flatten() {
        let end = segment.address.saturating_add(segment.memory_size);
        if segment.address % PAGE != 0
            || segment.address < image_end
            || end > user_layout::IMAGE_LIMIT
        {
            return Err(RootTaskError::BadSegment(segment.address));
        }
        let rights = if segment.writable {
            read_write
        } else {
            read_only
        };
        let mut address = segment.address;
        while address < end {
            let slot = builder.allocate_slot()?;
            let frame = builder.frame(slot, vspace_slot, address, rights, segment.executable)?;
            let offset = address - segment.address;
            if let Ok(offset) = usize::try_from(offset)
                && let Some(bytes) = segment.data.get(offset..)
            {
                let length = bytes.len().min(4096);
                builder.kernel.store.write(frame, &bytes[..length]);
            }
            address += PAGE;
        }
        image_end = end.div_ceil(PAGE) * PAGE;
    }
    let image_frames = builder.next_slot - first_image_slot;

    // The payload's frames keep their contents: they are made over memory
    // the kernel reserved (never untyped), not zeroed.
    let first_payload_slot = builder.next_slot;
    let mut payload_frames = 0;
    if let Some(payload) = extras.payload {
        let frame_size = 1u64 << 21;
        if !payload.base.is_multiple_of(frame_size) {
            return Err(RootTaskError::BadSegment(payload.base));
        }
        let mut address = payload.base;
        while address < payload.base.saturating_add(payload.size) {
            let slot = builder.allocate_slot()?;
            let object = ObjectRef(address);
            builder
                .kernel
                .store
                .create(object, ObjectType::Frame2M, 0, true);
            cspace::insert_root(
                &mut builder.kernel.store,
                slot,
                Capability::Frame {
                    object,
                    size_bits: 21,
                    rights: read_write,
                    device: false,
                    mapped: None,
                },
            )?;
            payload_frames += 1;
            address += frame_size;
        }
    }

    // Untyped capabilities for everything left.
    let mut words = [0u64; 512];
    let first_untyped = builder.next_slot;
    let mut untyped = 0usize;
    let leftover = Region {
        base: builder.bump.next,
        size: builder.bump.end - builder.bump.next,
    };
    let regions = free.iter().enumerate().map(|(index, region)| {
        if index == largest_index {
            leftover
        } else {
            *region
        }
    });
    let all = regions
        .map(|region| (region, false))
        .chain(device.iter().map(|region| (*region, true)));
    for (region, is_device) in all {
        let mut base = region.base;
        let end = region.base.saturating_add(region.size);
        while base < end && untyped < boot_info::MAX_UNTYPED {
            let alignment_bits = if base == 0 { 63 } else { base.trailing_zeros() };
            let size_bits = alignment_bits
                .min(63 - (end - base).leading_zeros())
                .min(hyp_abi::invocation::MAX_UNTYPED_BITS);
            if size_bits >= 12 {
                let slot = builder.allocate_slot()?;
                cspace::insert_root(
                    &mut builder.kernel.store,
                    slot,
                    Capability::Untyped {
                        base,
                        #[allow(clippy::cast_possible_truncation, reason = "at most 47")]
                        size_bits: size_bits as u8,
                        watermark: 0,
                        device: is_device,
                    },
                )?;
                words[boot_info::UNTYPED_DESCRIPTORS + 2 * untyped] = base;
                words[boot_info::UNTYPED_DESCRIPTORS + 2 * untyped + 1] =
                    u64::from(size_bits) | (u64::from(is_device) << 8);
                untyped += 1;
            }
            base += 1u64 << size_bits;
        }
    }
    words[0] = boot_info::MAGIC;
    words[1] = boot_info::VERSION;
    words[boot_info::UNTYPED_COUNT] = untyped as u64;
    words[boot_info::FIRST_UNTYPED_SLOT] = first_untyped;
    words[boot_info::FIRST_EMPTY_SLOT] = builder.next_slot;
    words[boot_info::EMPTY_SLOTS] = (1u64 << ROOT_RADIX) - builder.next_slot;
    words[boot_info::CORES] = builder.kernel.online as u64;
    words[boot_info::ROOT_CNODE_RADIX] = u64::from(ROOT_RADIX);
    words[boot_info::FIRST_IMAGE_FRAME_SLOT] = first_image_slot;
    words[boot_info::IMAGE_FRAMES] = image_frames;
    words[boot_info::IMAGE_END] = image_end;
    words[boot_info::FIRST_PAYLOAD_FRAME_SLOT] = first_payload_slot;
    words[boot_info::PAYLOAD_FRAMES] = payload_frames;
    words[boot_info::PAYLOAD_SIZE] = extras.payload.map_or(0, |payload| payload.size);
    words[boot_info::GIC_VERSION] = extras.gic_version;
    words[boot_info::GIC_VIRTUAL_CPU_INTERFACE] = extras.gic_virtual_cpu_interface;
    words[boot_info::CONSOLE_IRQ] = extras.console_irq;
    let mut bytes = [0u8; 4096];
    for (chunk, word) in bytes.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    builder.kernel.store.write(boot_info_frame, &bytes);

    // The thread.
    let kernel = builder.kernel;
    if let Some(tcb) = kernel.store.tcb_mut(thread) {
        tcb.priority = ROOT_PRIORITY;
    }
    let vspace = builder_vspace(&kernel.store, vspace_slot)?;
    crate::tcb::configure(
        &mut kernel.store,
        thread,
        Capability::Tcb { object: thread },
        crate::tcb::Configuration {
            fault_endpoint: None,
            priority: u64::from(ROOT_PRIORITY),
            cspace_root: cnode_capability,
            vspace: Capability::VSpace { object: vspace },
        },
    )
    .map_err(|_| RootTaskError::Internal(hyp_abi::Error::IllegalOperation))?;
    if let Some(tcb) = kernel.store.tcb_mut(thread) {
        tcb.context.pc = image.entry;
        tcb.context.sp = user_layout::STACK_TOP;
        tcb.context.x[0] = user_layout::BOOT_INFO;
        tcb.context.spsr = 0; // EL0t, interrupts unmasked
    }
    kernel
        .start(0, thread)
        .map_err(|_| RootTaskError::Internal(hyp_abi::Error::IllegalOperation))?;
    Ok(thread)
}

fn builder_vspace(store: &impl KernelStore, slot: SlotRef) -> Result<ObjectRef, RootTaskError> {
    match store.slot(slot).map(|found| found.capability) {
        Some(Capability::VSpace { object }) => Ok(object),
        _ => Err(RootTaskError::Internal(hyp_abi::Error::IllegalOperation)),
    }
}
