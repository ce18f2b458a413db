//! Just enough GIC to take the virtual timer's PPI and an SGI: GICv2 with
//! its memory-mapped CPU interface, or GICv3 with redistributors and the
//! system-register CPU interface. All interrupts stay in one group (Group 0
//! on GICv2, as after reset, and as Linux leaves them; Group 1 on GICv3,
//! whose Group 0 would arrive as FIQs) with priority 0x80 under a mask of
//! 0xff.
//!
//! Under the hypervisor the distributor (and the redistributors) are the
//! VMM's emulation and the CPU interface is the hardware's virtual one, so
//! the same code runs bare and as a guest.

use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use crate::logic::{GicVersion, Text, fail, redistributor_affinity, sgi1r_to_self};
use crate::mmio::Mmio;
use crate::sysreg::{self, Deadline};

/// The virtual timer's PPI.
pub(crate) const VIRTUAL_TIMER_INTID: u32 = 27;

/// INTIDs from here on are special (1020-1023): nothing to acknowledge.
const FIRST_SPECIAL_INTID: u32 = 1020;

/// The priority given to the interrupts the checks use.
const PRIORITY: u32 = 0x80;

// Distributor (both versions).
const GICD_CTLR: usize = 0x000;
/// `GICD_TYPER`: what the distributor implements (read-only, no effect).
pub(crate) const GICD_TYPER: usize = 0x004;
const GICD_ISENABLER: usize = 0x100;
const GICD_IPRIORITYR: usize = 0x400;
const GICD_SGIR: usize = 0xf00;
/// GICv3 `GICD_CTLR.RWP`: a write to `GICD_CTLR` is still in progress.
const GICD_CTLR_RWP: u32 = 1 << 31;
/// GICv2 `GICD_CTLR`: enable Group 0 and Group 1.
const GICD_CTLR_V2_ENABLE: u32 = 0b11;
/// GICv3 `GICD_CTLR`: affinity routing (`ARE`, `ARE_NS` in the
/// non-secure view) and the group enables (as Linux writes it).
const GICD_CTLR_V3_ENABLE: u32 = (1 << 4) | 0b11;
/// GICv2 `GICD_SGIR.TargetListFilter` = 0b10: to the requesting core only.
const GICD_SGIR_TO_SELF: u32 = 0b10 << 24;

// GICv2 CPU interface.
const GICC_CTLR: usize = 0x00;
const GICC_PMR: usize = 0x04;
const GICC_IAR: usize = 0x0c;
const GICC_EOIR: usize = 0x10;
const GICC_HPPIR: usize = 0x18;
/// Registers of the GICv2 CPU interface the guest uses.
const GICC_SIZE: usize = 0x1000;
/// `GICC_CTLR`: enable Group 0 and Group 1 signalling.
const GICC_CTLR_ENABLE: u32 = 0b11;

// GICv3 redistributor: the RD_base frame, then the SGI_base frame.
const GICR_TYPER: usize = 0x08;
const GICR_WAKER: usize = 0x14;
const GICR_TYPER_VLPIS: u64 = 1 << 1;
const GICR_TYPER_LAST: u64 = 1 << 4;
const GICR_WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
const GICR_WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
const GICR_FRAMES_SIZE: usize = 0x2_0000;
const GICR_SGI_BASE: usize = 0x1_0000;
const GICR_IGROUPR0: usize = 0x080;
const GICR_ISENABLER0: usize = 0x100;
const GICR_IPRIORITYR: usize = 0x400;

/// How long the GIC gets to finish a register write or wake up.
const SETTLE_TIMEOUT_US: u64 = 100_000;

/// Where the GIC's registers are.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    /// GICv2 or GICv3.
    pub(crate) version: GicVersion,
    /// The distributor: base and size.
    pub(crate) distributor: (usize, usize),
    /// GICv2: the CPU interface; GICv3: the redistributors. Base and size.
    pub(crate) cpu: (usize, usize),
}

impl Layout {
    /// QEMU `virt`'s layout (and the guest's under the hypervisor), for
    /// when the device tree does not say.
    pub(crate) const fn qemu_virt(version: GicVersion) -> Self {
        match version {
            GicVersion::V2 => Self {
                version,
                distributor: (0x0800_0000, 0x1_0000),
                cpu: (0x0801_0000, 0x1_0000),
            },
            GicVersion::V3 => Self {
                version,
                distributor: (0x0800_0000, 0x1_0000),
                cpu: (0x080a_0000, GICR_FRAMES_SIZE),
            },
        }
    }
}

/// The CPU interface.
#[derive(Debug)]
enum CpuInterface {
    /// GICv2: memory-mapped.
    Memory(Mmio),
    /// GICv3: system registers; the SGI_base frame of this core's
    /// redistributor configures SGIs and PPIs.
    SystemRegisters { sgi_frame: Mmio, mpidr: u64 },
}

/// A GIC set up for this core.
#[derive(Debug)]
pub(crate) struct Gic {
    version: GicVersion,
    distributor: Mmio,
    cpu: CpuInterface,
}

/// The GIC version the IRQ handler works with: 0 before `Gic::init`, then 2
/// or 3.
static HANDLER_VERSION: AtomicU32 = AtomicU32::new(0);
/// The GICv2 CPU interface base for the IRQ handler.
static HANDLER_GICC: AtomicUsize = AtomicUsize::new(0);

const NONE: u32 = u32::MAX;
/// The first INTID acknowledged since `clear_received`.
static FIRST_RECEIVED: AtomicU32 = AtomicU32::new(NONE);
/// INTIDs acknowledged since `clear_received`.
static RECEIVED: AtomicU32 = AtomicU32::new(0);
/// IRQs that acknowledged a special INTID (1020-1023) since
/// `clear_received`.
static SPURIOUS: AtomicU32 = AtomicU32::new(0);

impl Gic {
    /// `GICD_TYPER`: a read of the emulated distributor (an MMIO exit).
    pub(crate) fn distributor_type(&self) -> u32 {
        self.distributor.read32(GICD_TYPER)
    }

    /// The distributor's base address.
    pub(crate) fn distributor_base(&self) -> usize {
        self.distributor.base()
    }

    /// Sets up the distributor, this core's redistributor (GICv3) and the
    /// CPU interface; every interrupt stays disabled.
    pub(crate) fn init(layout: &Layout) -> Result<Self, Text> {
        // SAFETY: the layout's ranges are the GIC's registers: from the
        // device tree's interrupt-controller node, or QEMU virt's layout.
        let distributor = unsafe { Mmio::new(layout.distributor.0, layout.distributor.1) };
        // SAFETY: as above.
        let cpu_region = unsafe { Mmio::new(layout.cpu.0, layout.cpu.1) };
        match layout.version {
            GicVersion::V2 => {
                let Some(cpu) = cpu_region.subregion(0, GICC_SIZE) else {
                    fail!(
                        "the GICv2 CPU interface region at {:#x} is smaller than {GICC_SIZE:#x} bytes",
                        layout.cpu.0
                    );
                };
                distributor.write32(GICD_CTLR, GICD_CTLR_V2_ENABLE);
                cpu.write32(GICC_PMR, 0xff);
                cpu.write32(GICC_CTLR, GICC_CTLR_ENABLE);
                HANDLER_GICC.store(cpu.base(), Ordering::SeqCst);
                HANDLER_VERSION.store(2, Ordering::SeqCst);
                Ok(Self {
                    version: layout.version,
                    distributor,
                    cpu: CpuInterface::Memory(cpu),
                })
            }
            GicVersion::V3 => {
                // The system-register interface first: without it every
                // ICC_* access below is undefined.
                let features = sysreg::id_aa64pfr0();
                if GicVersion::from_id_aa64pfr0(features) != GicVersion::V3 {
                    fail!(
                        "a GICv3, but the core has no GIC system registers (ID_AA64PFR0_EL1 {features:#x})"
                    );
                }
                if sysreg::icc_sre() & 1 == 0 {
                    sysreg::set_icc_sre(sysreg::icc_sre() | 1);
                    sysreg::isb();
                    if sysreg::icc_sre() & 1 == 0 {
                        fail!(
                            "ICC_SRE_EL1.SRE stays 0: the GICv3 system-register interface is not available at EL1"
                        );
                    }
                }
                let control = distributor.read32(GICD_CTLR);
                distributor.write32(GICD_CTLR, control | GICD_CTLR_V3_ENABLE);
                let deadline = Deadline::after_us(SETTLE_TIMEOUT_US);
                while distributor.read32(GICD_CTLR) & GICD_CTLR_RWP != 0 {
                    if deadline.expired() {
                        fail!(
                            "GICD_CTLR.RWP still set {} ms after enabling the distributor",
                            SETTLE_TIMEOUT_US / 1000
                        );
                    }
                }
                let mpidr = sysreg::mpidr();
                let frames = own_redistributor(&cpu_region, mpidr)?;
                let waker = frames.read32(GICR_WAKER);
                frames.write32(GICR_WAKER, waker & !GICR_WAKER_PROCESSOR_SLEEP);
                let deadline = Deadline::after_us(SETTLE_TIMEOUT_US);
                while frames.read32(GICR_WAKER) & GICR_WAKER_CHILDREN_ASLEEP != 0 {
                    if deadline.expired() {
                        fail!(
                            "GICR_WAKER.ChildrenAsleep still set {} ms after clearing ProcessorSleep (redistributor at {:#x})",
                            SETTLE_TIMEOUT_US / 1000,
                            frames.base()
                        );
                    }
                }
                let Some(sgi_frame) = frames.subregion(GICR_SGI_BASE, GICR_SGI_BASE) else {
                    fail!(
                        "the redistributor at {:#x} has no SGI_base frame",
                        frames.base()
                    );
                };
                sysreg::set_icc_pmr(0xff);
                sysreg::set_icc_igrpen1(1);
                sysreg::isb();
                HANDLER_VERSION.store(3, Ordering::SeqCst);
                Ok(Self {
                    version: layout.version,
                    distributor,
                    cpu: CpuInterface::SystemRegisters { sgi_frame, mpidr },
                })
            }
        }
    }

    /// GICv2 or GICv3.
    pub(crate) fn version(&self) -> GicVersion {
        self.version
    }

    /// Enables the SGI or PPI `intid` (below 32) for this core, in the
    /// group the guest uses, at priority [`PRIORITY`].
    pub(crate) fn enable_private(&self, intid: u32) {
        let bit = 1u32 << (intid % 32);
        let priority_offset = (intid as usize & 31) / 4 * 4;
        let priority_shift = (intid % 4) * 8;
        let set_priority = |registers: &Mmio, base: usize| {
            let old = registers.read32(base + priority_offset);
            let new = (old & !(0xff << priority_shift)) | (PRIORITY << priority_shift);
            registers.write32(base + priority_offset, new);
        };
        match &self.cpu {
            CpuInterface::Memory(_) => {
                set_priority(&self.distributor, GICD_IPRIORITYR);
                self.distributor.write32(GICD_ISENABLER, bit);
            }
            CpuInterface::SystemRegisters { sgi_frame, .. } => {
                let groups = sgi_frame.read32(GICR_IGROUPR0);
                sgi_frame.write32(GICR_IGROUPR0, groups | bit);
                set_priority(sgi_frame, GICR_IPRIORITYR);
                sgi_frame.write32(GICR_ISENABLER0, bit);
            }
        }
    }

    /// The highest-priority pending interrupt at the CPU interface (1023
    /// if none), without acknowledging it.
    pub(crate) fn highest_pending(&self) -> u32 {
        match &self.cpu {
            CpuInterface::Memory(cpu) => cpu.read32(GICC_HPPIR) & 0x3ff,
            CpuInterface::SystemRegisters { .. } => {
                u32::try_from(sysreg::icc_hppir1() & 0xff_ffff).unwrap_or(NONE)
            }
        }
    }

    /// Sends SGI `intid` to this core.
    pub(crate) fn send_sgi_to_self(&self, intid: u32) {
        match &self.cpu {
            CpuInterface::Memory(_) => {
                self.distributor
                    .write32(GICD_SGIR, GICD_SGIR_TO_SELF | (intid & 0xf));
            }
            CpuInterface::SystemRegisters { mpidr, .. } => {
                sysreg::set_icc_sgi1r(sgi1r_to_self(*mpidr, intid));
                sysreg::isb();
            }
        }
    }
}

/// Finds the redistributor of the core with `mpidr` in the redistributor
/// region: the one whose `GICR_TYPER` affinity matches.
fn own_redistributor(region: &Mmio, mpidr: u64) -> Result<Mmio, Text> {
    let wanted = redistributor_affinity(mpidr);
    let mut offset = 0;
    loop {
        let Some(frames) = region.subregion(offset, GICR_FRAMES_SIZE) else {
            fail!(
                "no redistributor with affinity {wanted:#x} (MPIDR {mpidr:#x}) in the region at {:#x}",
                region.base()
            );
        };
        let typer = frames.read64(GICR_TYPER);
        if typer >> 32 == wanted {
            return Ok(frames);
        }
        if typer & GICR_TYPER_LAST != 0 {
            fail!(
                "no redistributor with affinity {wanted:#x} (MPIDR {mpidr:#x}): the last one, at {:#x}, has {:#x}",
                frames.base(),
                typer >> 32
            );
        }
        offset += if typer & GICR_TYPER_VLPIS != 0 {
            2 * GICR_FRAMES_SIZE
        } else {
            GICR_FRAMES_SIZE
        };
    }
}

/// Forgets the interrupts received so far.
pub(crate) fn clear_received() {
    FIRST_RECEIVED.store(NONE, Ordering::SeqCst);
    RECEIVED.store(0, Ordering::SeqCst);
    SPURIOUS.store(0, Ordering::SeqCst);
}

/// The first INTID acknowledged since `clear_received`, if any.
pub(crate) fn first_received() -> Option<u32> {
    match FIRST_RECEIVED.load(Ordering::SeqCst) {
        NONE => None,
        intid => Some(intid),
    }
}

/// How many interrupts were acknowledged since `clear_received`.
pub(crate) fn received() -> u32 {
    RECEIVED.load(Ordering::SeqCst)
}

/// How many IRQs found nothing to acknowledge since `clear_received`.
pub(crate) fn spurious() -> u32 {
    SPURIOUS.load(Ordering::SeqCst)
}

/// The IRQ handler: acknowledges the interrupt, quiets the virtual timer
/// if it was the timer's (its output is level-sensitive), ends the
/// interrupt and records it. Only this handler writes the records (one
/// core, no nesting), so plain loads and stores suffice.
pub(crate) fn handle_irq() {
    if crate::bench::TIMING.load(Ordering::Relaxed) {
        crate::bench::IRQ_ENTRY.store(crate::bench::cycles(), Ordering::SeqCst);
    }
    let (intid, acknowledged) = match HANDLER_VERSION.load(Ordering::SeqCst) {
        2 => {
            // SAFETY: the GICv2 CPU interface `Gic::init` found and stored.
            let cpu = unsafe { Mmio::new(HANDLER_GICC.load(Ordering::SeqCst), GICC_SIZE) };
            let iar = cpu.read32(GICC_IAR);
            (iar & 0x3ff, u64::from(iar))
        }
        3 => {
            let iar = sysreg::icc_iar1();
            (u32::try_from(iar & 0xff_ffff).unwrap_or(NONE), iar)
        }
        _ => {
            crate::uart::println!("test-guest: FAIL an IRQ before the GIC was set up");
            crate::psci::power_off()
        }
    };
    if intid >= FIRST_SPECIAL_INTID {
        SPURIOUS.store(SPURIOUS.load(Ordering::SeqCst) + 1, Ordering::SeqCst);
        return;
    }
    if intid == VIRTUAL_TIMER_INTID {
        sysreg::set_virtual_timer_control(0);
        sysreg::isb();
    }
    match HANDLER_VERSION.load(Ordering::SeqCst) {
        2 => {
            // SAFETY: as above.
            let cpu = unsafe { Mmio::new(HANDLER_GICC.load(Ordering::SeqCst), GICC_SIZE) };
            cpu.write32(GICC_EOIR, u32::try_from(acknowledged).unwrap_or(NONE));
        }
        _ => {
            sysreg::set_icc_eoir1(acknowledged);
            sysreg::isb();
        }
    }
    if FIRST_RECEIVED.load(Ordering::SeqCst) == NONE {
        FIRST_RECEIVED.store(intid, Ordering::SeqCst);
    }
    RECEIVED.store(RECEIVED.load(Ordering::SeqCst) + 1, Ordering::SeqCst);
}
