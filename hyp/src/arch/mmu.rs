//! The EL2 MMU: builds the hypervisor's identity map from the device tree
//! and turns translation and the caches on.
//!
//! What is mapped (all at its physical address):
//! - the image: code read-only and executable, read-only data, then data
//!   and BSS read-write and never executable;
//! - the rest of every RAM region: read-write, never executable (the device
//!   tree blob, and later kernel objects, live there);
//! - the console UART and the GIC's register frames: Device-nGnRE.
//!
//! Nothing else is: an access anywhere else faults, and the fault is
//! reported. `SCTLR_EL2.WXN` makes every writable page never-executable
//! whatever the table says.

use hyp_core::pagetable::{self, Attributes, MapError, MemoryType, Table, TableBuilder};
use hyp_core::platform::{Gic, MemoryRegion, Platform};

use crate::arch::registers::{self, TranslationRegisters};
use crate::arch::{self, ImageLayout};

/// Tables in the pool: the root, and enough level-2/3 tables for the image
/// edges, a few RAM regions and the devices.
const TABLE_COUNT: usize = 32;

static mut TABLES: [Table; TABLE_COUNT] = [Table::EMPTY; TABLE_COUNT];

/// `SCTLR_EL2` bits that are RES1 without VHE (4, 5, 11, 16, 18, 22, 23,
/// 28, 29), then M (MMU), C (data cache), SA (stack alignment check),
/// I (instruction cache) and WXN (writable implies never-execute).
const SCTLR_EL2_RES1: u64 = 0x30c5_0830;
const SCTLR_EL2_MMU_ON: u64 =
    SCTLR_EL2_RES1 | (1 << 0) | (1 << 2) | (1 << 3) | (1 << 12) | (1 << 19);

/// Why the identity map could not be built.
#[derive(Clone, Copy, Debug)]
pub struct MmuError {
    /// What was being mapped.
    pub what: &'static str,
    /// The range.
    pub region: MemoryRegion,
    /// What the table builder said.
    pub error: MapError,
}

impl core::fmt::Display for MmuError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            formatter,
            "cannot map {} [{:#x}, {:#x}): {}",
            self.what,
            self.region.base,
            self.region.base.saturating_add(self.region.size),
            self.error
        )
    }
}

fn page_round(region: MemoryRegion) -> MemoryRegion {
    let base = region.base & !(pagetable::PAGE_SIZE - 1);
    let end = region
        .base
        .saturating_add(region.size)
        .saturating_add(pagetable::PAGE_SIZE - 1)
        & !(pagetable::PAGE_SIZE - 1);
    MemoryRegion {
        base,
        size: end - base,
    }
}

fn map(
    builder: &mut TableBuilder<'_>,
    what: &'static str,
    region: MemoryRegion,
    attributes: Attributes,
) -> Result<(), MmuError> {
    builder
        .map(region.base, region.base, region.size, attributes)
        .map_err(|error| MmuError {
            what,
            region,
            error,
        })
}

/// Maps a device range page by page, skipping pages another device range
/// mapped already (two small register blocks may share a page).
fn map_device(
    builder: &mut TableBuilder<'_>,
    what: &'static str,
    region: MemoryRegion,
) -> Result<(), MmuError> {
    let region = page_round(region);
    let mut page = region.base;
    while page < region.base + region.size {
        match builder.translate(page) {
            Some((_, attributes)) if attributes.memory == MemoryType::Device => {}
            _ => map(
                builder,
                what,
                MemoryRegion {
                    base: page,
                    size: pagetable::PAGE_SIZE,
                },
                Attributes::DEVICE,
            )?,
        }
        page += pagetable::PAGE_SIZE;
    }
    Ok(())
}

/// Maps `ram` minus the image (which is mapped with finer permissions).
fn map_ram_around_image(
    builder: &mut TableBuilder<'_>,
    ram: MemoryRegion,
    image: ImageLayout,
) -> Result<(), MmuError> {
    let ram = MemoryRegion {
        base: ram.base.next_multiple_of(pagetable::PAGE_SIZE),
        size: ram.size & !(pagetable::PAGE_SIZE - 1),
    };
    let ram_end = ram.base.saturating_add(ram.size);
    let below = MemoryRegion {
        base: ram.base,
        size: image.start.clamp(ram.base, ram_end) - ram.base,
    };
    let above_start = image.end.clamp(ram.base, ram_end);
    let above = MemoryRegion {
        base: above_start,
        size: ram_end - above_start,
    };
    for part in [below, above] {
        if part.size != 0 {
            map(builder, "RAM", part, Attributes::DATA)?;
        }
    }
    Ok(())
}

/// Builds the identity map for `platform` in the static pool.
///
/// # Safety
/// Only the boot core calls this, once, before the MMU is on and before
/// any other core runs (it takes the table pool by `&mut`).
pub unsafe fn build(platform: &Platform) -> Result<TranslationRegisters, MmuError> {
    let pool = &raw mut TABLES;
    // SAFETY: the caller's contract: this is the only reference to TABLES
    // ever made, so it is unique; the pointer is to a static, so valid.
    let tables = unsafe { &mut *pool };
    let pool_physical = tables.as_ptr() as u64;
    let no_region = MemoryRegion {
        base: pool_physical,
        size: 0,
    };
    let mut builder = TableBuilder::new(tables, pool_physical).map_err(|error| MmuError {
        what: "the table pool",
        region: no_region,
        error,
    })?;

    let image = arch::image_layout();
    let part = |base: u64, end: u64| MemoryRegion {
        base,
        size: end - base,
    };
    map(
        &mut builder,
        "hyp code",
        part(image.start, image.text_end),
        Attributes::CODE,
    )?;
    map(
        &mut builder,
        "hyp rodata",
        part(image.text_end, image.rodata_end),
        Attributes::READ_ONLY,
    )?;
    map(
        &mut builder,
        "hyp data",
        part(image.rodata_end, image.end),
        Attributes::DATA,
    )?;
    for ram in &platform.memory {
        map_ram_around_image(&mut builder, *ram, image)?;
    }

    map_device(&mut builder, "the console UART", platform.console.region)?;
    match &platform.gic {
        Gic::V2 {
            distributor,
            cpu_interface,
            hyp_interface,
            virtual_cpu_interface,
            ..
        } => {
            map_device(&mut builder, "the GIC distributor", *distributor)?;
            map_device(&mut builder, "the GIC CPU interface", *cpu_interface)?;
            for region in [hyp_interface, virtual_cpu_interface].into_iter().flatten() {
                map_device(&mut builder, "the GIC virtualization interface", *region)?;
            }
        }
        Gic::V3 {
            distributor,
            redistributors,
            ..
        } => {
            map_device(&mut builder, "the GIC distributor", *distributor)?;
            for region in redistributors {
                map_device(&mut builder, "the GIC redistributors", *region)?;
            }
        }
    }

    // TCR_EL2: T0SZ for 39 bits; IRGN0 = ORGN0 = write-back write-allocate;
    // SH0 inner shareable; TG0 4 KiB; PS = the core's PARange, capped at
    // 48 bits (the descriptor format's limit); RES1 bits 23 and 31.
    let physical_size = registers::physical_address_range().min(0b101);
    let tcr = pagetable::T0SZ
        | (0b01 << 8)
        | (0b01 << 10)
        | (0b11 << 12)
        | (physical_size << 16)
        | (1 << 23)
        | (1u64 << 31);
    Ok(TranslationRegisters {
        mair: MemoryType::MAIR,
        tcr,
        ttbr0: builder.root_physical(),
        sctlr: SCTLR_EL2_MMU_ON,
    })
}

/// Turns the MMU on with `registers` on this core (the boot core; the
/// secondaries do it in entry.S).
///
/// # Safety
/// `registers` came from [`build`]: the table maps this code, its stack and
/// statics at their addresses.
pub unsafe fn enable(registers: TranslationRegisters) {
    let image = arch::image_layout();
    // Everything the boot core wrote so far went to memory (caches off);
    // drop any stale cached copy of the image, its tables and its stack
    // before the caches start being used.
    // SAFETY: with the MMU off no cache line holds data of ours that is not
    // in memory.
    unsafe { registers::invalidate_to_poc(image.start, image.end - image.start) };
    // SAFETY: the caller's contract.
    unsafe { registers::enable_mmu(registers) };
}
