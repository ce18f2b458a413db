//! GICv3: a memory-mapped distributor for the SPIs, one memory-mapped
//! redistributor per core for its SGIs and PPIs, and a CPU interface reached
//! through system registers (`ICC_*`).
//!
//! Affinity routing is enabled and everything is Non-secure Group 1. EL2 is
//! Non-secure: on a GIC with two Security states (`GICD_CTLR.DS` = 0) the
//! hypervisor sees the Non-secure view of `GICD_CTLR`, where `ARE_NS` is bit
//! 4 and `EnableGrp1A` bit 1; with a single Security state (`DS` = 1, QEMU
//! `virt` without `secure=on`) the same bits are `ARE` and `EnableGrp1`. So
//! one encoding serves both (IHI 0069, 12.9.4). Where the group registers
//! are RAZ/WI to Non-secure accesses, the firmware has chosen the groups.
//!
//! A core's redistributor is found by walking the redistributor region
//! (section 9.10 "The GIC Redistributor register map"): each redistributor is
//! `RD_base` plus `SGI_base`, 2 × 64 KiB, followed on GICv4 (`GICR_TYPER.VLPIS`)
//! by two more 64 KiB frames; `GICR_TYPER` gives its affinity and whether it
//! is the last one. The caller keeps the resulting [`Redistributor`] per core
//! and passes it to the operations on private interrupts.

use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite};
use tock_registers::{register_bitfields, register_structs};

use crate::{
    Acknowledged, DEFAULT_PRIORITY, GicError, INTID_LIMIT, PRIVATE_INTERRUPT_COUNT, SGI_COUNT,
    affinity_of, cpu, lines_from_typer, wait_until,
};

/// The size of one redistributor register frame.
const FRAME_SIZE: usize = 0x1_0000;

/// The offset of the SGI frame (`SGI_base`) from `RD_base`.
const SGI_FRAME_OFFSET: usize = FRAME_SIZE;

register_bitfields! {u32,
    /// GICD_CTLR as seen by a Non-secure access (or with `DS` = 1).
    GICD_CTLR [
        /// `EnableGrp1A` (Non-secure view) / `EnableGrp1` (`DS` = 1).
        ENABLE_GROUP1 OFFSET(1) NUMBITS(1) [],
        /// `ARE_NS` (Non-secure view) / `ARE` (`DS` = 1).
        AFFINITY_ROUTING OFFSET(4) NUMBITS(1) [],
        /// Register Write Pending.
        RWP OFFSET(31) NUMBITS(1) [],
    ],
    /// GICD_TYPER.
    GICD_TYPER [
        IT_LINES_NUMBER OFFSET(0) NUMBITS(5) [],
    ],
    /// GICR_CTLR.
    GICR_CTLR [
        /// Register Write Pending (for `GICR_ICENABLER0` and LPI settings).
        RWP OFFSET(3) NUMBITS(1) [],
    ],
    /// GICR_WAKER.
    GICR_WAKER [
        PROCESSOR_SLEEP OFFSET(1) NUMBITS(1) [],
        CHILDREN_ASLEEP OFFSET(2) NUMBITS(1) [],
    ],
}

register_bitfields! {u64,
    /// GICD_IROUTER<n>.
    GICD_IROUTER [
        AFF0 OFFSET(0) NUMBITS(8) [],
        AFF1 OFFSET(8) NUMBITS(8) [],
        AFF2 OFFSET(16) NUMBITS(8) [],
        /// Interrupt Routing Mode: 1 = any participating core.
        IRM OFFSET(31) NUMBITS(1) [],
        AFF3 OFFSET(32) NUMBITS(8) [],
    ],
    /// GICR_TYPER.
    GICR_TYPER [
        /// This redistributor has the two extra GICv4 frames.
        VLPIS OFFSET(1) NUMBITS(1) [],
        /// This is the last redistributor of the region.
        LAST OFFSET(4) NUMBITS(1) [],
        PROCESSOR_NUMBER OFFSET(8) NUMBITS(16) [],
        /// `Aff3.Aff2.Aff1.Aff0` of the core this redistributor serves.
        AFFINITY_VALUE OFFSET(32) NUMBITS(32) [],
    ],
    /// ICC_SGI1R_EL1.
    ICC_SGI1R [
        TARGET_LIST OFFSET(0) NUMBITS(16) [],
        AFF1 OFFSET(16) NUMBITS(8) [],
        INTID OFFSET(24) NUMBITS(4) [],
        AFF2 OFFSET(32) NUMBITS(8) [],
        /// Interrupt Routing Mode: 1 = every core but the sender.
        IRM OFFSET(40) NUMBITS(1) [],
        /// Range selector: the target list covers Aff0 = RS × 16 + 0..15.
        RS OFFSET(44) NUMBITS(4) [],
        AFF3 OFFSET(48) NUMBITS(8) [],
    ],
}

register_structs! {
    /// The distributor registers this driver uses (IHI 0069, table 12-25).
    DistributorRegisters {
        (0x0000 => ctlr: ReadWrite<u32, GICD_CTLR::Register>),
        (0x0004 => typer: ReadOnly<u32, GICD_TYPER::Register>),
        (0x0008 => _reserved0),
        (0x0080 => igroupr: [ReadWrite<u32>; 32]),
        (0x0100 => isenabler: [ReadWrite<u32>; 32]),
        (0x0180 => icenabler: [ReadWrite<u32>; 32]),
        (0x0200 => _reserved1),
        (0x0400 => ipriorityr: [ReadWrite<u8>; 1020]),
        (0x07fc => _reserved2),
        // GICD_IROUTER<n> is at 0x6000 + 8n for n = 32 to 1019; the entries
        // for 0 to 31 are reserved and never touched.
        (0x6000 => irouter: [ReadWrite<u64, GICD_IROUTER::Register>; 1020]),
        (0x7fe0 => @END),
    },

    /// The `RD_base` frame of a redistributor (IHI 0069, table 12-27).
    ControlFrame {
        (0x0000 => ctlr: ReadWrite<u32, GICR_CTLR::Register>),
        (0x0004 => _iidr: ReadOnly<u32>),
        (0x0008 => typer: ReadOnly<u64, GICR_TYPER::Register>),
        (0x0010 => _statusr: ReadWrite<u32>),
        (0x0014 => waker: ReadWrite<u32, GICR_WAKER::Register>),
        (0x0018 => @END),
    },

    /// The `SGI_base` frame of a redistributor (IHI 0069, table 12-29).
    SgiFrame {
        (0x0000 => _reserved0),
        (0x0080 => igroupr0: ReadWrite<u32>),
        (0x0084 => _reserved1),
        (0x0100 => isenabler0: ReadWrite<u32>),
        (0x0104 => _reserved2),
        (0x0180 => icenabler0: ReadWrite<u32>),
        (0x0184 => _reserved3),
        (0x0400 => ipriorityr: [ReadWrite<u8>; 32]),
        (0x0420 => @END),
    }
}

/// A GICv3: distributor and redistributor region.
///
/// # Invariants
///
/// `distributor` is the address of the GIC's mapped distributor block and
/// `redistributors` that of its mapped redistributor region of
/// `redistributors_size` bytes, mapped for the rest of the program and
/// programmed by nothing else; the caller runs at EL2 and owns the GIC CPU
/// interface of every core that uses the value (established by
/// [`GicV3::new`]).
#[derive(Debug)]
pub struct GicV3 {
    distributor: usize,
    redistributors: usize,
    redistributors_size: usize,
}

/// One core's redistributor, found by [`GicV3::init_redistributor`].
///
/// The core keeps it and passes it to the [`GicV3`] operations on its SGIs
/// and PPIs. Passing another core's redistributor makes them act on that
/// core's private interrupts instead: not unsound, but a bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redistributor {
    /// The address of its `RD_base` frame, inside the region of the
    /// `GicV3` that found it.
    control: usize,
    /// `GICR_TYPER.Affinity_Value`.
    affinity: u32,
}

impl Redistributor {
    /// The affinity of the core it serves, `Aff3.Aff2.Aff1.Aff0` one byte
    /// each (see [`affinity_of`](crate::affinity_of)).
    pub fn affinity(&self) -> u32 {
        self.affinity
    }

    /// The affinity fields of the core it serves, in MPIDR layout (`Aff3` in
    /// bits \[39:32\], `Aff2`..`Aff0` in bits \[23:0\]).
    pub fn mpidr(&self) -> u64 {
        let affinity = u64::from(self.affinity);
        ((affinity & 0xff00_0000) << 8) | (affinity & 0x00ff_ffff)
    }

    fn control_frame(&self) -> &ControlFrame {
        // SAFETY: `control` was found inside the mapped redistributor region
        // of a `GicV3` (only `find_redistributor` builds a `Redistributor`,
        // after checking that both frames lie in the region), which stays
        // mapped for the rest of the program by that `GicV3`'s invariant. The
        // fields are `UnsafeCell`-based registers accessed with single
        // volatile loads and stores, so a shared reference is sound.
        unsafe { &*(self.control as *const ControlFrame) }
    }

    fn sgi_frame(&self) -> &SgiFrame {
        let address = self.control.wrapping_add(SGI_FRAME_OFFSET);
        // SAFETY: as in `control_frame`; the SGI frame follows `RD_base` and
        // was checked to lie in the region too.
        unsafe { &*(address as *const SgiFrame) }
    }

    /// Waits (bounded) until the last write to `GICR_ICENABLER0` has taken
    /// effect.
    fn wait_for_writes(&self) -> Result<(), GicError> {
        let control = self.control_frame();
        if wait_until(|| !control.ctlr.is_set(GICR_CTLR::RWP)) {
            Ok(())
        } else {
            Err(GicError::WritePending)
        }
    }
}

impl GicV3 {
    /// Takes over the GICv3 whose distributor block is at `distributor` and
    /// whose redistributors fill the `redistributors_size` bytes at
    /// `redistributors`. Nothing is written.
    ///
    /// The value may be shared by all cores (it is `Sync`).
    ///
    /// # Safety
    ///
    /// `distributor` must be the address of the GIC's distributor block (64
    /// KiB) and `redistributors` that of a region of `redistributors_size`
    /// bytes holding consecutive redistributors, as the device tree's `reg`
    /// gives them, all mapped as Device memory for the rest of the program.
    /// Nothing else may program this GIC while the value exists (a second
    /// `GicV3` on the same GIC counts as something else). The value must be
    /// used only at EL2 and on cores whose GIC CPU interface the caller owns:
    /// its methods read and write the calling core's `ICC_*` registers.
    pub unsafe fn new(
        distributor: usize,
        redistributors: usize,
        redistributors_size: usize,
    ) -> Self {
        Self {
            distributor,
            redistributors,
            redistributors_size,
        }
    }

    fn distributor(&self) -> &DistributorRegisters {
        // SAFETY: by the invariant (the contract of `new`), `distributor` is a
        // mapped distributor block that outlives `self`. Its fields are
        // `UnsafeCell`-based registers accessed with single volatile loads and
        // stores only, so a shared reference is sound although the hardware
        // and other cores change the registers.
        unsafe { &*(self.distributor as *const DistributorRegisters) }
    }

    /// Waits (bounded) until the last write to `GICD_CTLR` or
    /// `GICD_ICENABLER<n>` has taken effect.
    fn wait_for_distributor_writes(&self) -> Result<(), GicError> {
        let distributor = self.distributor();
        if wait_until(|| !distributor.ctlr.is_set(GICD_CTLR::RWP)) {
            Ok(())
        } else {
            Err(GicError::WritePending)
        }
    }

    /// The number of interrupt lines (SGIs, PPIs and SPIs), from
    /// `GICD_TYPER.ITLinesNumber`: INTIDs 0 to this (exclusive) exist. At
    /// most 1020; extended SPIs and LPIs are not counted.
    pub fn number_of_interrupts(&self) -> u32 {
        lines_from_typer(self.distributor().typer.read(GICD_TYPER::IT_LINES_NUMBER))
    }

    /// Configures the distributor: called once, by the boot core, before the
    /// cores initialize their redistributors.
    ///
    /// With the distributor disabled, it puts every SPI into Group 1 (no
    /// effect where the register is RAZ/WI), disables every SPI and gives it
    /// priority [`DEFAULT_PRIORITY`]; edge/level configuration is left as it
    /// is. Then it enables affinity routing, routes every SPI to the core
    /// with affinity 0.0.0.0 (`GICD_IROUTER`, `IRM` = 0), and enables
    /// Non-secure Group 1.
    ///
    /// Fails if the distributor never finishes a write (`GICD_CTLR.RWP`).
    pub fn init_distributor(&self) -> Result<(), GicError> {
        let distributor = self.distributor();
        distributor.ctlr.set(0);
        self.wait_for_distributor_writes()?;

        let lines = self.number_of_interrupts();
        let words = usize::try_from(lines.div_ceil(32)).unwrap_or(0);
        // Word 0 (SGIs, PPIs) is in the redistributors once ARE is set.
        for word in distributor.igroupr.iter().take(words).skip(1) {
            word.set(u32::MAX);
        }
        for word in distributor.icenabler.iter().take(words).skip(1) {
            word.set(u32::MAX);
        }
        self.wait_for_distributor_writes()?;
        let lines = usize::try_from(lines).unwrap_or(0);
        let first_spi = usize::try_from(PRIVATE_INTERRUPT_COUNT).unwrap_or(0);
        for priority in distributor.ipriorityr.iter().take(lines).skip(first_spi) {
            priority.set(DEFAULT_PRIORITY);
        }

        // Affinity routing first: GICD_IROUTER means nothing without it, and
        // ARE may only change while the groups are disabled.
        distributor.ctlr.write(GICD_CTLR::AFFINITY_ROUTING::SET);
        self.wait_for_distributor_writes()?;
        for route in distributor.irouter.iter().take(lines).skip(first_spi) {
            route.write(
                GICD_IROUTER::IRM::CLEAR
                    + GICD_IROUTER::AFF3.val(0)
                    + GICD_IROUTER::AFF2.val(0)
                    + GICD_IROUTER::AFF1.val(0)
                    + GICD_IROUTER::AFF0.val(0),
            );
        }

        distributor
            .ctlr
            .write(GICD_CTLR::AFFINITY_ROUTING::SET + GICD_CTLR::ENABLE_GROUP1::SET);
        self.wait_for_distributor_writes()
    }

    /// Finds the redistributor serving the core with this MPIDR: walks the
    /// region frame by frame, comparing `GICR_TYPER.Affinity_Value`, until
    /// the one marked `Last` or the end of the region.
    fn find_redistributor(&self, mpidr: u64) -> Result<Redistributor, GicError> {
        let affinity = affinity_of(mpidr);
        let not_found = GicError::RedistributorNotFound { affinity };
        let mut offset = 0usize;
        loop {
            // Both frames of this redistributor must lie inside the region.
            let end = offset.checked_add(2 * FRAME_SIZE).ok_or(not_found)?;
            if end > self.redistributors_size {
                return Err(not_found);
            }
            let control = self.redistributors.checked_add(offset).ok_or(not_found)?;
            // SAFETY: `control` and the frame after it lie inside the mapped
            // redistributor region (checked above; the region is mapped by
            // the invariant of `GicV3`). Only the `UnsafeCell`-based register
            // fields are accessed, with volatile single accesses.
            let frame = unsafe { &*(control as *const ControlFrame) };
            let typer = frame.typer.extract();
            let candidate = typer.read(GICR_TYPER::AFFINITY_VALUE);
            if u64::from(affinity) == candidate {
                return Ok(Redistributor { control, affinity });
            }
            if typer.is_set(GICR_TYPER::LAST) {
                return Err(not_found);
            }
            let frames = if typer.is_set(GICR_TYPER::VLPIS) {
                4
            } else {
                2
            };
            offset = offset.checked_add(frames * FRAME_SIZE).ok_or(not_found)?;
        }
    }

    /// Finds and wakes the redistributor of the core with this MPIDR and
    /// configures that core's SGIs and PPIs: Group 1, priority
    /// [`DEFAULT_PRIORITY`], PPIs disabled (the hypervisor enables those it
    /// uses). Called by each core for itself, after
    /// [`init_distributor`](Self::init_distributor); the core keeps the
    /// returned [`Redistributor`].
    ///
    /// Waking means clearing `GICR_WAKER.ProcessorSleep` and waiting, bounded,
    /// for `ChildrenAsleep` to clear.
    pub fn init_redistributor(&self, mpidr: u64) -> Result<Redistributor, GicError> {
        let redistributor = self.find_redistributor(mpidr)?;
        let control = redistributor.control_frame();
        control.waker.modify(GICR_WAKER::PROCESSOR_SLEEP::CLEAR);
        if !wait_until(|| !control.waker.is_set(GICR_WAKER::CHILDREN_ASLEEP)) {
            return Err(GicError::RedistributorAsleep {
                affinity: redistributor.affinity,
            });
        }

        let sgi = redistributor.sgi_frame();
        sgi.igroupr0.set(u32::MAX);
        sgi.icenabler0.set(0xffff_0000);
        redistributor.wait_for_writes()?;
        for priority in &sgi.ipriorityr {
            priority.set(DEFAULT_PRIORITY);
        }
        Ok(redistributor)
    }

    /// Configures the calling core's CPU interface: the system-register
    /// interface at EL2 (`ICC_SRE_EL2` = `SRE` | `Enable`, so EL1 may use
    /// `ICC_SRE_EL1`), priority mask `0xff`, binary point 0 (`ICC_BPR1_EL1`),
    /// `EOImode` 0, Group 1 enabled (`ICC_IGRPEN1_EL1`). Does nothing on a
    /// host build.
    ///
    /// # Safety
    ///
    /// Must run at EL2 on a system with a GICv3, on each core, after
    /// [`init_redistributor`](Self::init_redistributor) on that core. Nothing
    /// else may use this core's GIC CPU interface.
    pub unsafe fn init_cpu_interface() {
        // SAFETY: the same contract, forwarded.
        unsafe { cpu::init_cpu_interface() }
    }

    fn check_intid(&self, intid: u32) -> Result<(), GicError> {
        let limit = self.number_of_interrupts();
        if intid >= limit || intid >= INTID_LIMIT {
            return Err(GicError::InvalidInterrupt { intid, limit });
        }
        Ok(())
    }

    /// Enables `intid`: an SGI or PPI in `redistributor` (the calling
    /// core's), an SPI in the distributor.
    pub fn enable_interrupt(
        &self,
        redistributor: &Redistributor,
        intid: u32,
    ) -> Result<(), GicError> {
        self.check_intid(intid)?;
        let bit = 1 << (intid % 32);
        if intid < PRIVATE_INTERRUPT_COUNT {
            redistributor.sgi_frame().isenabler0.set(bit);
        } else {
            let word = usize::try_from(intid / 32).ok();
            let register = word.and_then(|word| self.distributor().isenabler.get(word));
            let limit = self.number_of_interrupts();
            register
                .ok_or(GicError::InvalidInterrupt { intid, limit })?
                .set(bit);
        }
        Ok(())
    }

    /// Disables `intid` (as for [`enable_interrupt`](Self::enable_interrupt))
    /// and waits, bounded, until the GIC has stopped forwarding it.
    pub fn disable_interrupt(
        &self,
        redistributor: &Redistributor,
        intid: u32,
    ) -> Result<(), GicError> {
        self.check_intid(intid)?;
        let bit = 1 << (intid % 32);
        if intid < PRIVATE_INTERRUPT_COUNT {
            redistributor.sgi_frame().icenabler0.set(bit);
            redistributor.wait_for_writes()
        } else {
            let word = usize::try_from(intid / 32).ok();
            let register = word.and_then(|word| self.distributor().icenabler.get(word));
            let limit = self.number_of_interrupts();
            register
                .ok_or(GicError::InvalidInterrupt { intid, limit })?
                .set(bit);
            self.wait_for_distributor_writes()
        }
    }

    /// Acknowledges the calling core's highest-priority pending Group 1
    /// interrupt (reads `ICC_IAR1_EL1`); `None` for a spurious INTID (1020 to
    /// 1023). Always `None` on a host build.
    pub fn acknowledge(&self) -> Option<Acknowledged> {
        // SAFETY: by the invariant of `GicV3`, this runs at EL2 on a core
        // whose GIC CPU interface the owner of `self` owns.
        let raw = unsafe { cpu::read_iar1() };
        Acknowledged::from_v3_iar(raw)
    }

    /// Completes an interrupt this core acknowledged (writes
    /// `ICC_EOIR1_EL1`: priority drop and deactivation).
    pub fn end_of_interrupt(&self, acknowledged: Acknowledged) {
        // SAFETY: as in `acknowledge`; the value came from `ICC_IAR1_EL1`.
        unsafe { cpu::write_eoir1(acknowledged.raw) }
    }

    /// Sends SGI `sgi` (0 to 15) as a Group 1 interrupt to the core with
    /// affinity `target_mpidr` (through `ICC_SGI1R_EL1`). Earlier stores to
    /// memory are made visible to the other cores first.
    ///
    /// Fails for an `Aff0` of 16 or more when the CPU interface has no range
    /// selector (`ICC_CTLR_EL1.RSS`).
    pub fn send_sgi(&self, sgi: u8, target_mpidr: u64) -> Result<(), GicError> {
        let value = sgi1r_value(sgi, target_mpidr)?;
        if target_mpidr & 0xf0 != 0 {
            // SAFETY: as in `acknowledge`.
            let supported = unsafe { cpu::range_selector_supported() };
            if !supported {
                return Err(GicError::TargetOutOfRange {
                    mpidr: target_mpidr,
                });
            }
        }
        cpu::order_stores_before_sgi();
        // SAFETY: as in `acknowledge`; generating an SGI writes no memory.
        unsafe { cpu::write_sgi1r(value) };
        Ok(())
    }
}

/// The `ICC_SGI1R_EL1` value that sends SGI `sgi` to the one core with
/// affinity `mpidr`: its `Aff3`, `Aff2`, `Aff1`, and `Aff0` as range selector
/// (`Aff0` / 16) plus one bit in the target list (`Aff0` % 16).
fn sgi1r_value(sgi: u8, mpidr: u64) -> Result<u64, GicError> {
    if u32::from(sgi) >= SGI_COUNT {
        return Err(GicError::InvalidInterrupt {
            intid: u32::from(sgi),
            limit: SGI_COUNT,
        });
    }
    let aff0 = mpidr & 0xff;
    let value = ICC_SGI1R::TARGET_LIST.val(1 << (aff0 % 16))
        + ICC_SGI1R::RS.val(aff0 / 16)
        + ICC_SGI1R::AFF1.val((mpidr >> 8) & 0xff)
        + ICC_SGI1R::AFF2.val((mpidr >> 16) & 0xff)
        + ICC_SGI1R::AFF3.val((mpidr >> 32) & 0xff)
        + ICC_SGI1R::IRM::CLEAR
        + ICC_SGI1R::INTID.val(u64::from(sgi));
    Ok(value.value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeBlock;

    const GICD_CTLR: usize = 0x0000;
    const GICD_TYPER: usize = 0x0004;
    const GICD_IGROUPR: usize = 0x0080;
    const GICD_ISENABLER: usize = 0x0100;
    const GICD_ICENABLER: usize = 0x0180;
    const GICD_IPRIORITYR: usize = 0x0400;
    const GICD_IROUTER: usize = 0x6000;

    const GICR_CTLR: usize = 0x0000;
    const GICR_TYPER: usize = 0x0008;
    const GICR_WAKER: usize = 0x0014;
    const GICR_IGROUPR0: usize = 0x1_0080;
    const GICR_ISENABLER0: usize = 0x1_0100;
    const GICR_ICENABLER0: usize = 0x1_0180;
    const GICR_IPRIORITYR: usize = 0x1_0400;

    const TYPER_VLPIS: u64 = 1 << 1;
    const TYPER_LAST: u64 = 1 << 4;
    const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
    const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;

    const STRIDE: usize = 2 * FRAME_SIZE;

    struct Fixture {
        distributor: FakeBlock,
        redistributors: FakeBlock,
        gic: GicV3,
    }

    /// A GIC with 96 lines and redistributors whose `GICR_TYPER` values are
    /// `typers`, laid out at `offsets` in a region of `region_size` bytes.
    fn fixture(typers: &[(usize, u64)], region_size: usize) -> Fixture {
        let distributor = FakeBlock::new(0x1_0000);
        distributor.write32(GICD_TYPER, 2);
        let redistributors = FakeBlock::new(region_size);
        for &(offset, typer) in typers {
            redistributors.write64(offset + GICR_TYPER, typer);
            redistributors.write32(offset + GICR_WAKER, WAKER_PROCESSOR_SLEEP);
        }
        // SAFETY: the fake blocks are live for the whole test and used by
        // this `GicV3` alone; on the host the system-register accesses are
        // stand-ins.
        let gic = unsafe { GicV3::new(distributor.base(), redistributors.base(), region_size) };
        Fixture {
            distributor,
            redistributors,
            gic,
        }
    }

    fn typer(affinity: u32, flags: u64) -> u64 {
        (u64::from(affinity) << 32) | flags
    }

    /// Four redistributors of two frames each, the last one marked.
    fn four_cores() -> Fixture {
        fixture(
            &[
                (0, typer(0x0000_0000, 0)),
                (STRIDE, typer(0x0000_0001, 0)),
                (2 * STRIDE, typer(0x0000_0100, 0)),
                (3 * STRIDE, typer(0x0100_0000, TYPER_LAST)),
            ],
            4 * STRIDE,
        )
    }

    #[test]
    fn distributor_init_configures_spis_and_enables_group_1() {
        let f = four_cores();
        for intid in 32..97 {
            f.distributor.write64(GICD_IROUTER + 8 * intid, 0xdead_beef);
        }
        f.gic.init_distributor().unwrap();

        assert_eq!(
            f.distributor.read32(GICD_CTLR),
            (1 << 4) | (1 << 1),
            "ARE_NS | Grp1"
        );
        assert_eq!(
            f.distributor.read32(GICD_IGROUPR),
            0,
            "word 0 is in the redistributors"
        );
        assert_eq!(f.distributor.read32(GICD_ICENABLER), 0);
        for word in 1..3 {
            assert_eq!(f.distributor.read32(GICD_IGROUPR + 4 * word), u32::MAX);
            assert_eq!(f.distributor.read32(GICD_ICENABLER + 4 * word), u32::MAX);
        }
        assert_eq!(f.distributor.read32(GICD_IGROUPR + 12), 0);
        for intid in 0..32 {
            assert_eq!(f.distributor.read8(GICD_IPRIORITYR + intid), 0);
        }
        for intid in 32..96 {
            assert_eq!(f.distributor.read8(GICD_IPRIORITYR + intid), 0xa0);
            assert_eq!(
                f.distributor.read64(GICD_IROUTER + 8 * intid),
                0,
                "IROUTER{intid}"
            );
        }
        assert_eq!(f.distributor.read8(GICD_IPRIORITYR + 96), 0);
        assert_eq!(f.distributor.read64(GICD_IROUTER + 8 * 96), 0xdead_beef);
    }

    #[test]
    fn redistributor_search_finds_matching_affinity() {
        let f = four_cores();
        let base = f.redistributors.base();
        for (mpidr, index) in [(0x8000_0000, 0), (0x8000_0001, 1), (0x100, 2), (1 << 32, 3)] {
            let found = f.gic.find_redistributor(mpidr).unwrap();
            assert_eq!(found.control, base + index * STRIDE, "MPIDR {mpidr:#x}");
            assert_eq!(found.mpidr(), mpidr & 0xff_00ff_ffff);
        }
    }

    #[test]
    fn redistributor_search_stops_at_last() {
        // A fifth redistributor after the one marked Last must not be found.
        let f = fixture(
            &[
                (0, typer(0, 0)),
                (STRIDE, typer(1, TYPER_LAST)),
                (2 * STRIDE, typer(2, 0)),
            ],
            3 * STRIDE,
        );
        assert_eq!(
            f.gic.find_redistributor(2),
            Err(GicError::RedistributorNotFound { affinity: 2 })
        );
        assert!(f.gic.find_redistributor(1).is_ok());
    }

    #[test]
    fn redistributor_search_fails_cleanly_when_absent() {
        let f = four_cores();
        assert_eq!(
            f.gic.find_redistributor(0x0002),
            Err(GicError::RedistributorNotFound { affinity: 2 })
        );
        // No Last bit anywhere: the walk ends at the end of the region.
        let g = fixture(
            &[(0, typer(0, 0)), (STRIDE, typer(1, 0))],
            2 * STRIDE + FRAME_SIZE,
        );
        assert_eq!(
            g.gic.find_redistributor(5),
            Err(GicError::RedistributorNotFound { affinity: 5 })
        );
        // A region too small for even one redistributor.
        let h = fixture(&[(0, typer(0, TYPER_LAST))], FRAME_SIZE);
        assert!(h.gic.find_redistributor(0).is_err());
    }

    #[test]
    fn redistributor_search_skips_gicv4_frames() {
        let f = fixture(
            &[
                (0, typer(0, TYPER_VLPIS)),
                (2 * STRIDE, typer(1, TYPER_VLPIS)),
                (4 * STRIDE, typer(2, TYPER_VLPIS | TYPER_LAST)),
            ],
            6 * STRIDE,
        );
        let found = f.gic.find_redistributor(2).unwrap();
        assert_eq!(found.control, f.redistributors.base() + 4 * STRIDE);
    }

    #[test]
    fn redistributor_init_wakes_and_configures_private_interrupts() {
        let f = four_cores();
        let redistributor = f.gic.init_redistributor(1).unwrap();
        assert_eq!(redistributor.affinity(), 1);
        let frame = STRIDE;
        assert_eq!(f.redistributors.read32(frame + GICR_WAKER), 0);
        assert_eq!(f.redistributors.read32(frame + GICR_IGROUPR0), u32::MAX);
        assert_eq!(
            f.redistributors.read32(frame + GICR_ICENABLER0),
            0xffff_0000
        );
        for intid in 0..32 {
            assert_eq!(
                f.redistributors.read8(frame + GICR_IPRIORITYR + intid),
                0xa0
            );
        }
        // The other redistributors are untouched.
        assert_eq!(f.redistributors.read32(GICR_WAKER), WAKER_PROCESSOR_SLEEP);
        assert_eq!(f.redistributors.read32(GICR_IGROUPR0), 0);
    }

    #[test]
    fn redistributor_that_stays_asleep_is_an_error() {
        let f = four_cores();
        f.redistributors.write32(
            2 * STRIDE + GICR_WAKER,
            WAKER_PROCESSOR_SLEEP | WAKER_CHILDREN_ASLEEP,
        );
        assert_eq!(
            f.gic.init_redistributor(0x100),
            Err(GicError::RedistributorAsleep { affinity: 0x100 })
        );
        // ProcessorSleep was cleared, ChildrenAsleep (read-only) kept.
        assert_eq!(
            f.redistributors.read32(2 * STRIDE + GICR_WAKER),
            WAKER_CHILDREN_ASLEEP
        );
    }

    #[test]
    fn private_interrupts_go_to_the_redistributor_and_spis_to_the_distributor() {
        let f = four_cores();
        let redistributor = f.gic.init_redistributor(0).unwrap();
        f.gic.enable_interrupt(&redistributor, 26).unwrap();
        assert_eq!(f.redistributors.read32(GICR_ISENABLER0), 1 << 26);
        f.gic.enable_interrupt(&redistributor, 33).unwrap();
        assert_eq!(f.distributor.read32(GICD_ISENABLER + 4), 1 << 1);
        f.gic.disable_interrupt(&redistributor, 5).unwrap();
        assert_eq!(f.redistributors.read32(GICR_ICENABLER0), 1 << 5);
        f.gic.disable_interrupt(&redistributor, 95).unwrap();
        assert_eq!(f.distributor.read32(GICD_ICENABLER + 8), 1 << 31);
        for intid in [96, 1020, 1023, u32::MAX] {
            assert_eq!(
                f.gic.enable_interrupt(&redistributor, intid),
                Err(GicError::InvalidInterrupt { intid, limit: 96 })
            );
        }
    }

    #[test]
    fn a_write_that_stays_pending_is_an_error() {
        let f = four_cores();
        let redistributor = f.gic.init_redistributor(0).unwrap();
        f.redistributors.write32(GICR_CTLR, 1 << 3); // RWP stuck
        assert_eq!(
            f.gic.disable_interrupt(&redistributor, 27),
            Err(GicError::WritePending)
        );
    }

    #[test]
    fn acknowledge_on_the_host_sees_nothing() {
        let f = four_cores();
        assert_eq!(f.gic.acknowledge(), None);
    }

    #[test]
    fn sgi1r_encodes_target_affinity() {
        // SGI 1 to 0.0.0.0.
        assert_eq!(sgi1r_value(1, 0x8000_0000), Ok((1 << 24) | 1));
        // SGI 15 to Aff3 2, Aff2 3, Aff1 4, Aff0 5.
        assert_eq!(
            sgi1r_value(15, (2 << 32) | 0x03_04_05),
            Ok((2 << 48) | (3 << 32) | (15 << 24) | (4 << 16) | (1 << 5))
        );
        // Aff0 = 17: range selector 1, bit 1.
        assert_eq!(sgi1r_value(0, 17), Ok((1 << 44) | (1 << 1)));
        assert_eq!(
            sgi1r_value(16, 0),
            Err(GicError::InvalidInterrupt {
                intid: 16,
                limit: 16
            })
        );
    }

    #[test]
    fn send_sgi_checks_its_arguments() {
        let f = four_cores();
        assert!(f.gic.send_sgi(16, 0).is_err());
        // The host has no range selector.
        assert_eq!(
            f.gic.send_sgi(0, 16),
            Err(GicError::TargetOutOfRange { mpidr: 16 })
        );
        assert_eq!(f.gic.send_sgi(0, 1), Ok(()));
    }
}
