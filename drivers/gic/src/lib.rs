//! The physical Arm Generic Interrupt Controller, as the hypervisor drives it
//! at EL2: GICv2 (QEMU `virt` with `gic-version=2`, the Pi 4's GIC-400) and
//! GICv3 (QEMU `virt` with `gic-version=3`).
//!
//! The hypervisor core owns the physical GIC (DESIGN.md, section 5): it
//! configures the distributor once, each core's CPU interface (and, on v3,
//! redistributor), enables the interrupts it hands out, acknowledges and
//! completes them, and sends SGIs between cores. Everything runs at EL2 on
//! registers mapped Device-nGnRE at their physical address.
//!
//! The virtualization interface (GICv2 `GICH`, GICv3 `ICH_*_EL2` list
//! registers), through which guests get virtual interrupts, is in [`virt`].
//! Virtual interrupts are purely virtual (the list registers' HW bit is
//! never set), so this driver keeps `EOImode = 0`, where
//! [`end_of_interrupt`](GicV2::end_of_interrupt) both drops the priority and
//! deactivates.
//!
//! Every interrupt is configured as Group 1 with priority
//! [`DEFAULT_PRIORITY`]. Invalid INTIDs are refused with a [`GicError`]; no
//! operation panics.
//!
//! [`Gic`] holds either version; the state one core needs for itself (its
//! GICv3 redistributor frame) is a [`PerCore`] value that the core keeps and
//! passes back in.
//!
//! Specifications: GIC architecture v2, IHI 0048B; GIC architecture v3/v4,
//! IHI 0069.

#![no_std]

#[cfg(test)]
extern crate std;

mod cpu;
mod v2;
mod v3;
pub mod virt;

#[cfg(test)]
mod fake;

use core::fmt;

pub use v2::GicV2;
pub use v3::{GicV3, Redistributor};

/// The priority given to every interrupt. Lower is more urgent; with the
/// priority mask at `0xff` every interrupt is signalled. The middle of the
/// range leaves room for both more and less urgent interrupts later.
pub const DEFAULT_PRIORITY: u8 = 0xa0;

/// The number of SGIs (INTIDs 0 to 15).
pub const SGI_COUNT: u32 = 16;

/// The number of private interrupts, SGIs and PPIs (INTIDs 0 to 31).
pub const PRIVATE_INTERRUPT_COUNT: u32 = 32;

/// One past the largest SPI INTID: 1020 to 1023 are special (spurious).
const INTID_LIMIT: u32 = 1020;

/// How often a bounded wait polls its register before giving up. A poll is
/// one device-register read; on hardware a million of them take tens of
/// milliseconds, under QEMU about a second, while the waits here normally
/// finish after a few polls.
const POLL_LIMIT: u32 = 1_000_000;

/// Why a GIC operation did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GicError {
    /// `intid` is not one the operation accepts: it must be below `limit`
    /// (the number of interrupt lines, or [`SGI_COUNT`] for SGIs).
    InvalidInterrupt {
        /// The INTID that was asked for.
        intid: u32,
        /// One past the largest INTID the operation accepts.
        limit: u32,
    },
    /// No redistributor in the region has this affinity
    /// (`Aff3.Aff2.Aff1.Aff0`, one byte each, as in `GICR_TYPER`).
    RedistributorNotFound {
        /// The affinity that was looked for.
        affinity: u32,
    },
    /// The redistributor still reported `GICR_WAKER.ChildrenAsleep` after
    /// `ProcessorSleep` was cleared and the wait's bound ran out.
    RedistributorAsleep {
        /// The affinity of the redistributor that did not wake.
        affinity: u32,
    },
    /// A register write stayed pending (`GICD_CTLR.RWP` or `GICR_CTLR.RWP`)
    /// past the wait's bound.
    WritePending,
    /// An SGI target whose `Aff0` is 16 or more needs the range selector
    /// (`ICC_CTLR_EL1.RSS`), which this CPU interface lacks.
    TargetOutOfRange {
        /// The target's MPIDR.
        mpidr: u64,
    },
    /// A [`PerCore`] of one GIC version was passed to a GIC of the other.
    WrongVersion,
}

impl fmt::Display for GicError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidInterrupt { intid, limit } => {
                write!(formatter, "INTID {intid} is out of range (limit {limit})")
            }
            Self::RedistributorNotFound { affinity } => {
                write!(
                    formatter,
                    "no GICv3 redistributor for affinity {affinity:#010x}"
                )
            }
            Self::RedistributorAsleep { affinity } => {
                write!(
                    formatter,
                    "GICv3 redistributor {affinity:#010x} did not wake up"
                )
            }
            Self::WritePending => write!(formatter, "GIC register write did not complete"),
            Self::TargetOutOfRange { mpidr } => {
                write!(
                    formatter,
                    "SGI target MPIDR {mpidr:#x} needs the range selector"
                )
            }
            Self::WrongVersion => write!(formatter, "per-core state of the other GIC version"),
        }
    }
}

/// An interrupt this core has acknowledged and must complete with
/// `end_of_interrupt`, exactly once: the type is neither `Clone` nor `Copy`.
#[derive(Debug, PartialEq, Eq)]
pub struct Acknowledged {
    /// The value read from `GICC_IAR` / `ICC_IAR1_EL1`, written back
    /// unchanged at the end of the interrupt.
    raw: u32,
    intid: u32,
    sgi_source: Option<u8>,
}

impl Acknowledged {
    /// Decodes a GICv2 `GICC_IAR` value: INTID in bits \[9:0\] and, for SGIs,
    /// the sending CPU interface in bits \[12:10\]. INTIDs 1020 to 1023 mean
    /// "nothing to acknowledge".
    fn from_v2_iar(raw: u32) -> Option<Self> {
        let intid = raw & 0x3ff;
        if intid >= INTID_LIMIT {
            return None;
        }
        let sgi_source = if intid < SGI_COUNT {
            u8::try_from((raw >> 10) & 0x7).ok()
        } else {
            None
        };
        Some(Self {
            raw,
            intid,
            sgi_source,
        })
    }

    /// Decodes a GICv3 `ICC_IAR1_EL1` value: INTID in bits \[23:0\]. INTIDs
    /// 1020 to 1023 mean "nothing to acknowledge".
    fn from_v3_iar(raw: u32) -> Option<Self> {
        let intid = raw & 0x00ff_ffff;
        if (INTID_LIMIT..=1023).contains(&intid) {
            return None;
        }
        Some(Self {
            raw,
            intid,
            sgi_source: None,
        })
    }

    /// The interrupt's ID.
    pub fn intid(&self) -> u32 {
        self.intid
    }

    /// For an SGI on GICv2, the number of the CPU interface that sent it.
    /// `None` for other interrupts and on GICv3.
    pub fn sgi_source(&self) -> Option<u8> {
        self.sgi_source
    }
}

/// The affinity of an MPIDR in the layout of `GICR_TYPER.Affinity_Value`:
/// `Aff3` (MPIDR bits \[39:32\]) in bits \[31:24\], then `Aff2`, `Aff1`, `Aff0`
/// (MPIDR bits \[23:0\]). The MT and U bits are ignored.
pub fn affinity_of(mpidr: u64) -> u32 {
    let low = mpidr & 0x00ff_ffff;
    let aff3 = (mpidr >> 32) & 0xff;
    u32::try_from(low | (aff3 << 24)).unwrap_or(0)
}

/// Polls `done` up to [`POLL_LIMIT`] times; whether it became true.
fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..POLL_LIMIT {
        if done() {
            return true;
        }
        core::hint::spin_loop();
    }
    done()
}

/// Either version of the GIC, for code that does not care which.
#[derive(Debug)]
pub enum Gic {
    /// A GICv2 (or GIC-400).
    V2(GicV2),
    /// A GICv3.
    V3(GicV3),
}

/// What one core needs to drive its own part of the GIC, obtained from
/// [`Gic::init_this_core`] on that core. The core keeps it (e.g. in its
/// per-core data) and passes it to the operations that touch its private
/// interrupts; the kernel may also keep a copy per core as the target of
/// SGIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerCore {
    /// GICv2: the private interrupts are banked by hardware; only the core's
    /// CPU interface number is needed (to aim SGIs at it).
    V2 {
        /// The core's CPU interface number, 0 to 7.
        cpu_interface: u8,
    },
    /// GICv3: the core's redistributor (which also records its affinity).
    V3(Redistributor),
}

impl Gic {
    /// Configures the distributor. Called once, by the boot core, before any
    /// core calls [`init_this_core`](Self::init_this_core).
    pub fn init_distributor(&self) -> Result<(), GicError> {
        match self {
            Self::V2(gic) => {
                gic.init_distributor();
                Ok(())
            }
            Self::V3(gic) => gic.init_distributor(),
        }
    }

    /// Configures the calling core's part of the GIC (v2: banked private
    /// interrupts and the CPU interface; v3: the redistributor and the
    /// system-register CPU interface) and returns what the core must keep.
    ///
    /// # Safety
    ///
    /// Must run at EL2 on the core whose MPIDR is `mpidr`, once per core,
    /// after [`init_distributor`](Self::init_distributor). On GICv3 the
    /// contract of [`GicV3::init_cpu_interface`] applies.
    pub unsafe fn init_this_core(&self, mpidr: u64) -> Result<PerCore, GicError> {
        match self {
            Self::V2(gic) => {
                gic.init_cpu_interface();
                Ok(PerCore::V2 {
                    cpu_interface: gic.cpu_interface_number(),
                })
            }
            Self::V3(gic) => {
                let redistributor = gic.init_redistributor(mpidr)?;
                // SAFETY: forwarded from this function's contract: EL2, the
                // core with this MPIDR, once, after the distributor.
                unsafe { GicV3::init_cpu_interface() };
                Ok(PerCore::V3(redistributor))
            }
        }
    }

    /// Enables `intid`; SGIs and PPIs are those of the core `this_core`
    /// belongs to (the calling core, on GICv2).
    pub fn enable_interrupt(&self, this_core: &PerCore, intid: u32) -> Result<(), GicError> {
        match (self, this_core) {
            (Self::V2(gic), PerCore::V2 { .. }) => gic.enable_interrupt(intid),
            (Self::V3(gic), PerCore::V3(redistributor)) => {
                gic.enable_interrupt(redistributor, intid)
            }
            _ => Err(GicError::WrongVersion),
        }
    }

    /// Disables `intid`; SGIs and PPIs as for
    /// [`enable_interrupt`](Self::enable_interrupt).
    pub fn disable_interrupt(&self, this_core: &PerCore, intid: u32) -> Result<(), GicError> {
        match (self, this_core) {
            (Self::V2(gic), PerCore::V2 { .. }) => gic.disable_interrupt(intid),
            (Self::V3(gic), PerCore::V3(redistributor)) => {
                gic.disable_interrupt(redistributor, intid)
            }
            _ => Err(GicError::WrongVersion),
        }
    }

    /// Acknowledges the calling core's highest-priority pending interrupt;
    /// `None` if there is none (a spurious INTID).
    pub fn acknowledge(&self) -> Option<Acknowledged> {
        match self {
            Self::V2(gic) => gic.acknowledge(),
            Self::V3(gic) => gic.acknowledge(),
        }
    }

    /// Completes an interrupt acknowledged on this core.
    pub fn end_of_interrupt(&self, acknowledged: Acknowledged) {
        match self {
            Self::V2(gic) => gic.end_of_interrupt(acknowledged),
            Self::V3(gic) => gic.end_of_interrupt(acknowledged),
        }
    }

    /// Sends SGI `sgi` (0 to 15) to the core that `target` belongs to.
    pub fn send_sgi(&self, sgi: u8, target: &PerCore) -> Result<(), GicError> {
        match (self, target) {
            (Self::V2(gic), PerCore::V2 { cpu_interface }) => {
                let target_list = 1u8.checked_shl(u32::from(*cpu_interface)).unwrap_or(0);
                gic.send_sgi(sgi, target_list)
            }
            (Self::V3(gic), PerCore::V3(redistributor)) => gic.send_sgi(sgi, redistributor.mpidr()),
            _ => Err(GicError::WrongVersion),
        }
    }

    /// The number of interrupt lines (INTIDs 0 to this, exclusive).
    pub fn number_of_interrupts(&self) -> u32 {
        match self {
            Self::V2(gic) => gic.number_of_interrupts(),
            Self::V3(gic) => gic.number_of_interrupts(),
        }
    }
}

/// The number of interrupt lines that `GICD_TYPER.ITLinesNumber` announces:
/// 32 × (N + 1), at most 1020.
fn lines_from_typer(it_lines_number: u32) -> u32 {
    (32 * ((it_lines_number & 0x1f) + 1)).min(INTID_LIMIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_spurious_intids_are_none() {
        for raw in [1020, 1021, 1022, 1023, 0x1c00 | 1023] {
            assert_eq!(Acknowledged::from_v2_iar(raw), None, "{raw:#x}");
        }
    }

    #[test]
    fn v2_acknowledge_decodes_intid_and_sgi_source() {
        let sgi = Acknowledged::from_v2_iar((5 << 10) | 3).unwrap();
        assert_eq!(
            (sgi.intid(), sgi.sgi_source(), sgi.raw),
            (3, Some(5), (5 << 10) | 3)
        );
        let spi = Acknowledged::from_v2_iar(33).unwrap();
        assert_eq!((spi.intid(), spi.sgi_source()), (33, None));
        let last = Acknowledged::from_v2_iar(1019).unwrap();
        assert_eq!(last.intid(), 1019);
    }

    #[test]
    fn v3_spurious_intids_are_none() {
        for raw in [1020, 1021, 1022, 1023] {
            assert_eq!(Acknowledged::from_v3_iar(raw), None, "{raw}");
        }
        let lpi = Acknowledged::from_v3_iar(8192).unwrap();
        assert_eq!(lpi.intid(), 8192);
        let ppi = Acknowledged::from_v3_iar(27).unwrap();
        assert_eq!((ppi.intid(), ppi.sgi_source()), (27, None));
    }

    #[test]
    fn affinity_packs_mpidr_fields() {
        assert_eq!(affinity_of(0), 0);
        assert_eq!(affinity_of(0x8000_0003), 3); // bit 31 (RES1) ignored
        assert_eq!(affinity_of(0x4100_0000 | 0x01_02_03), 0x0001_0203); // U, MT ignored
        assert_eq!(affinity_of(0xab_0000_0000 | 0x01_02_03), 0xab01_0203);
    }

    #[test]
    fn lines_follow_it_lines_number() {
        assert_eq!(lines_from_typer(0), 32);
        assert_eq!(lines_from_typer(2), 96);
        assert_eq!(lines_from_typer(7), 256);
        assert_eq!(lines_from_typer(31), 1020);
    }

    #[test]
    fn bounded_wait_gives_up() {
        let mut polls = 0u32;
        assert!(!wait_until(|| {
            polls += 1;
            false
        }));
        assert_eq!(polls, POLL_LIMIT + 1);
        assert!(wait_until(|| true));
    }
}
