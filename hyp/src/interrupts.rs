//! Physical interrupts at EL2: the GIC the device tree names, and the EL2
//! physical timer's tick.
//!
//! The boot core configures the distributor; every core then configures its
//! own CPU interface (and, on GICv3, its redistributor) and enables the
//! timer's PPI. [`handle_irq`] acknowledges and completes every interrupt;
//! one nobody expects is reported once and disabled, so a stuck line cannot
//! keep a core in the handler.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use generic_timer as timer;
use gic::virt::VirtualInterface;
use gic::{Gic, GicError, GicV2, GicV3, PerCore};
use hyp_abi::MAX_CORES;
use hyp_core::platform::{self, Platform};
use spin::Once;

use crate::arch::{guest, registers};
use crate::println;

static GIC: Once<Gic> = Once::new();
static PER_CORE: [Once<PerCore>; MAX_CORES] = [const { Once::new() }; MAX_CORES];
static TICKS: [AtomicU64; MAX_CORES] = [const { AtomicU64::new(0) }; MAX_CORES];
/// INTID of the EL2 physical timer (a PPI, the same on every core).
static HYP_TIMER_INTID: AtomicU32 = AtomicU32::new(u32::MAX);
/// Counter ticks between two timer interrupts; 0 while the tick is off.
static TICK_INTERVAL: AtomicU64 = AtomicU64::new(0);

fn address(region: platform::MemoryRegion) -> Result<usize, &'static str> {
    usize::try_from(region.base).map_err(|_| "GIC address out of range")
}

/// Why interrupts could not be set up.
#[derive(Clone, Copy, Debug)]
pub enum InterruptError {
    /// The device tree's GIC description cannot be used.
    DeviceTree(&'static str),
    /// The GIC driver refused.
    Gic(GicError),
    /// [`init_this_core`] before [`init`].
    NotInitialized,
}

impl core::fmt::Display for InterruptError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            InterruptError::DeviceTree(problem) => formatter.write_str(problem),
            InterruptError::Gic(error) => write!(formatter, "GIC: {error}"),
            InterruptError::NotInitialized => formatter.write_str("the GIC is not set up yet"),
        }
    }
}

impl From<GicError> for InterruptError {
    fn from(error: GicError) -> Self {
        InterruptError::Gic(error)
    }
}

/// Sets up the GIC on the boot core (distributor and the core's own part).
pub fn init(platform: &Platform) -> Result<(), InterruptError> {
    let gic = match &platform.gic {
        platform::Gic::V2 {
            distributor,
            cpu_interface,
            ..
        } => {
            let distributor = address(*distributor).map_err(InterruptError::DeviceTree)?;
            let cpu_interface = address(*cpu_interface).map_err(InterruptError::DeviceTree)?;
            // SAFETY: both frames come from the device tree and are mapped
            // as device memory by the EL2 table (arch::mmu); the hypervisor
            // is their only user.
            Gic::V2(unsafe { GicV2::new(distributor, cpu_interface) })
        }
        platform::Gic::V3 {
            distributor,
            redistributors,
            ..
        } => {
            let region = redistributors.first().ok_or(InterruptError::DeviceTree(
                "the GICv3 node lists no redistributor region",
            ))?;
            let distributor = address(*distributor).map_err(InterruptError::DeviceTree)?;
            let redistributor_base = address(*region).map_err(InterruptError::DeviceTree)?;
            let size = usize::try_from(region.size)
                .map_err(|_| InterruptError::DeviceTree("redistributor region too large"))?;
            // SAFETY: as for GICv2: device-tree frames, mapped as device
            // memory, used by the hypervisor alone.
            Gic::V3(unsafe { GicV3::new(distributor, redistributor_base, size) })
        }
    };
    gic.init_distributor()?;
    match &platform.gic {
        platform::Gic::V2 {
            hyp_interface: Some(region),
            ..
        } => {
            let base = address(*region).map_err(InterruptError::DeviceTree)?;
            guest::set_virtual_interface(VirtualInterface::V2 { base });
        }
        platform::Gic::V2 { .. } => {}
        platform::Gic::V3 { .. } => guest::set_virtual_interface(VirtualInterface::V3),
    }
    GIC.call_once(|| gic);
    HYP_TIMER_INTID.store(platform.timer.hypervisor_physical, Ordering::Release);
    init_this_core(0)
}

/// Sets up the calling core's CPU interface (and redistributor) and
/// enables the EL2 timer's interrupt on it.
pub fn init_this_core(index: usize) -> Result<(), InterruptError> {
    let gic = GIC.get().ok_or(InterruptError::NotInitialized)?;
    let slot = PER_CORE.get(index).ok_or(InterruptError::NotInitialized)?;
    // SAFETY: runs at EL2 on the core with this MPIDR, once per core (each
    // core runs its boot path once), after `init` set up the distributor.
    let per_core = unsafe { gic.init_this_core(registers::mpidr()) }?;
    let per_core = slot.call_once(|| per_core);
    gic.enable_interrupt(per_core, HYP_TIMER_INTID.load(Ordering::Acquire))?;
    gic.enable_interrupt(per_core, KICK_SGI)?;
    gic.enable_interrupt(per_core, VIRTUAL_TIMER_INTID)?;
    gic.enable_interrupt(per_core, MAINTENANCE_INTID)?;
    Ok(())
}

/// The software-generated interrupt one core sends another to make it
/// re-decide what it runs.
pub const KICK_SGI: u32 = KICK_SGI_NUMBER as u32;
const KICK_SGI_NUMBER: u8 = 1;

/// The EL2 timer's INTID, once [`init`] ran.
pub fn hyp_timer_intid() -> u32 {
    HYP_TIMER_INTID.load(Ordering::Acquire)
}

/// Interrupts below this number exist on the GIC (0 before [`init`]).
pub fn interrupt_limit() -> u32 {
    GIC.get().map_or(0, Gic::number_of_interrupts)
}

/// What a pending interrupt was, for the scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// This core's scheduling tick (re-armed already).
    Tick,
    /// Another core asked this one to reschedule.
    Kick,
    /// A device interrupt, now masked until its handler acknowledges it.
    Device(u32),
    /// The virtual timer of the VCPU loaded on this core fired.
    VirtualTimer,
    /// The GIC's virtualization maintenance interrupt (list registers
    /// ran low).
    Maintenance,
}

/// The virtual timer's interrupt (PPI 11): the guests'.
pub const VIRTUAL_TIMER_INTID: u32 = 27;
/// The GIC's maintenance interrupt (PPI 9, on every board here).
pub const MAINTENANCE_INTID: u32 = 25;

/// Takes every pending interrupt on this core (IRQs masked), re-arming the
/// tick and masking device interrupts, and tells `handle` about each.
pub fn take_pending(mut handle: impl FnMut(Source)) {
    let Some(gic) = GIC.get() else { return };
    let core = registers::core_index();
    let per_core = PER_CORE.get(core).and_then(Once::get);
    while let Some(acknowledged) = gic.acknowledge() {
        let intid = acknowledged.intid();
        let source = if intid == HYP_TIMER_INTID.load(Ordering::Relaxed) {
            if let Some(ticks) = TICKS.get(core) {
                ticks.fetch_add(1, Ordering::AcqRel);
            }
            // SAFETY: EL2, owner of this core's EL2 timer.
            unsafe { timer::hyp_timer_arm_in(TICK_INTERVAL.load(Ordering::Acquire).max(1)) };
            Source::Tick
        } else if intid == KICK_SGI {
            Source::Kick
        } else if intid == VIRTUAL_TIMER_INTID {
            Source::VirtualTimer
        } else if intid == MAINTENANCE_INTID {
            Source::Maintenance
        } else {
            if let Some(per_core) = per_core {
                let _ = gic.disable_interrupt(per_core, intid);
            }
            Source::Device(intid)
        };
        gic.end_of_interrupt(acknowledged);
        handle(source);
    }
}

/// Unmasks interrupt `intid` on this core (a PPI) or at the distributor.
pub fn unmask(intid: u32) {
    let Some(gic) = GIC.get() else { return };
    if let Some(per_core) = PER_CORE.get(registers::core_index()).and_then(Once::get) {
        let _ = gic.enable_interrupt(per_core, intid);
    }
}

/// Sends the reschedule interrupt to every core in `cores` (bit per core).
pub fn kick(cores: u8) {
    let Some(gic) = GIC.get() else { return };
    for (index, slot) in PER_CORE.iter().enumerate() {
        if cores & (1 << index) != 0
            && let Some(target) = slot.get()
        {
            let _ = gic.send_sgi(KICK_SGI_NUMBER, target);
        }
    }
}

/// Arms this core's periodic tick every `period_us` without unmasking
/// IRQs at EL2 (the scheduler takes them from EL0 or while idle).
pub fn arm_tick(period_us: u64) {
    // SAFETY: reading the frequency at EL2.
    let frequency = unsafe { timer::frequency() };
    let interval = generic_timer::ticks_for(frequency, period_us);
    TICK_INTERVAL.store(interval, Ordering::Release);
    // SAFETY: EL2; this core's EL2 timer belongs to this code alone.
    unsafe { timer::hyp_timer_arm_in(interval) };
}

/// Starts a periodic EL2 timer interrupt on this core every `period_us`,
/// and unmasks IRQs.
pub fn start_tick(period_us: u64) {
    // SAFETY: reading the frequency at EL2.
    let frequency = unsafe { timer::frequency() };
    let interval = generic_timer::ticks_for(frequency, period_us);
    TICK_INTERVAL.store(interval, Ordering::Release);
    // SAFETY: EL2; this core's EL2 timer belongs to this code alone.
    unsafe { timer::hyp_timer_arm_in(interval) };
    // SAFETY: the vectors and the GIC are set up, so an IRQ is handled.
    unsafe { registers::enable_irqs() };
}

/// Stops this core's tick (IRQs stay unmasked).
pub fn stop_tick() {
    // SAFETY: EL2, owner of this core's EL2 timer.
    unsafe { timer::hyp_timer_disable() };
}

/// Timer interrupts core `index` has taken.
pub fn ticks(index: usize) -> u64 {
    TICKS
        .get(index)
        .map_or(0, |ticks| ticks.load(Ordering::Acquire))
}

/// Handles every pending IRQ on this core (called from the IRQ vector).
pub fn handle_irq() {
    let Some(gic) = GIC.get() else { return };
    let core = registers::core_index();
    while let Some(acknowledged) = gic.acknowledge() {
        let intid = acknowledged.intid();
        if intid == HYP_TIMER_INTID.load(Ordering::Relaxed) {
            if let Some(ticks) = TICKS.get(core) {
                ticks.fetch_add(1, Ordering::AcqRel);
            }
            // Re-arm relative to now: a late interrupt does not cause a
            // burst of catch-up ticks.
            let interval = TICK_INTERVAL.load(Ordering::Acquire);
            if interval == 0 {
                // SAFETY: EL2, owner of this core's EL2 timer.
                unsafe { timer::hyp_timer_disable() };
            } else {
                // SAFETY: EL2, owner of this core's EL2 timer.
                unsafe { timer::hyp_timer_arm_in(interval) };
            }
        } else {
            println!("hyp: core {core}: unexpected interrupt INTID {intid}; disabling it");
            if let Some(per_core) = PER_CORE.get(core).and_then(Once::get) {
                let _ = gic.disable_interrupt(per_core, intid);
            }
        }
        gic.end_of_interrupt(acknowledged);
    }
}
