//! The guest's emulated GIC distributor (GICv2 or GICv3) and, for GICv3,
//! its redistributors, for up to [`MAX_VCPUS`] vCPUs and INTIDs 0..=255
//! (SGIs 0-15, PPIs 16-31, SPIs 32-255).
//!
//! The guest's CPU interface is the hardware's virtual CPU interface (GICV
//! or the `ICC_*` system registers with `ICH_*` list registers, design
//! section 5): the guest acknowledges and completes interrupts without
//! exits, so this model never sees them. It only decides *what should be
//! delivered where*. It does not inject by itself: every call that changes
//! that returns [`Actions`]:
//!
//! - [`Action::Inject`]: make `intid` pending on `vcpu` (in a list
//!   register). Injecting an interrupt that is already pending there must be
//!   a no-op, and one that is active there becomes pending and active, as on
//!   a real GIC. For a GICv2 SGI, `source` is the sending vCPU and each
//!   `(intid, source)` pair is its own interrupt.
//! - [`Action::Withdraw`]: a level-triggered interrupt this model injected
//!   is no longer pending (its line went low, it was disabled, retargeted or
//!   its pending state cleared): remove it from `vcpu`'s list registers if it
//!   is still pending and not yet active. Withdrawing is an optimisation; a
//!   core that ignores it makes the guest take a spurious interrupt.
//!
//! Pending state moves to the vCPU when it is injected: an edge-triggered
//! interrupt or an SGI is then no longer pending here. A level-triggered
//! interrupt stays pending while its line is high. **Re-delivery of a level
//! line**: once the guest has handled (EOIed) a level interrupt whose line is
//! still high, it must be injected again. The VMM does this by calling
//! [`Vgic::set_level`] with the device's line after *every* access to that
//! device (and after feeding it input): `set_level(intid, true)` injects
//! again whenever the line is high and deliverable, which the rule above
//! makes harmless while the interrupt is still pending or active in the
//! vCPU. A VMM that learns of EOIs from the core can call
//! [`Vgic::resample`] instead.
//!
//! Action lists are small ([`ACTION_CAPACITY`]); a change that produces more
//! (enabling the distributor with many interrupts pending) leaves the rest
//! queued: [`Vgic::has_pending_actions`] says so and [`Vgic::take_actions`]
//! returns the next batch. Nothing is lost.
//!
//! Registers: GICv2 distributor `CTLR`, `TYPER`, `IIDR`, `IGROUPR`,
//! `IS/ICENABLER`, `IS/ICPENDR`, `IS/ICACTIVER`, `IPRIORITYR`, `ITARGETSR`,
//! `ICFGR`, `SGIR`, `CPENDSGIR`/`SPENDSGIR` and the ID registers; GICv3
//! distributor with affinity routing always on (`CTLR.ARE` and `CTLR.DS` read
//! as one: one security state, as KVM does), `IROUTER`; GICv3 redistributors
//! (one 128 KiB region per vCPU) with `CTLR`, `IIDR`, `TYPER`, `WAKER`, the ID
//! registers and the SGI/PPI registers of the SGI frame; and the GICv3 SGI
//! system register `ICC_SGI1R_EL1` ([`Vgic::write_sgi1r`]).
//!
//! What it deliberately does not model: the security extensions (one
//! security state; both groups exist, `CTLR` has `EnableGrp0` and
//! `EnableGrp1`), LPIs and the ITS, message-based SPIs, extended SPI/PPI
//! ranges, 1-of-N routing (`IROUTER.IRM` reads as zero, `TYPER.No1N` is
//! set), active state (it lives in the list registers: `ISACTIVER` reads as
//! zero, writes to it and `ICACTIVER` are ignored), GICv2 legacy mode on the
//! GICv3 distributor, and configurable PPI trigger modes (SGIs are edge, PPIs
//! level, as KVM). Priorities keep their top five bits (what a list register
//! holds). An SPI with several GICv2 targets goes to the lowest-numbered one.
//! Unknown and reserved offsets, and accesses of a width or alignment the
//! architecture does not allow, read as zero, ignore writes and count in
//! [`Vgic::unknown_accesses`]. Registers the architecture makes RAZ/WI in
//! this configuration (e.g. the GICv3 distributor's SGI/PPI bits) behave so
//! without being counted.

use heapless::Vec;

use crate::{lo8, lo16, lo32};

/// The most vCPUs a guest may have.
pub const MAX_VCPUS: usize = 8;
/// Number of INTIDs modelled (0..=255).
pub const NR_INTIDS: usize = 256;
/// How many actions one call returns at most.
pub const ACTION_CAPACITY: usize = 32;
/// Size of the distributor's window (both versions).
pub const GICD_SIZE: u64 = 0x1_0000;
/// Size of one vCPU's redistributor (RD_base and SGI_base frames).
pub const GICR_STRIDE: u64 = 0x2_0000;
/// `GICD_IIDR` and `GICR_IIDR`: product 0x48 ('H'), revision 0, Arm.
pub const IIDR: u32 = 0x4800_043B;

/// What the VMM must do after a change; see the module documentation.
pub type Actions = Vec<Action, ACTION_CAPACITY>;

/// One thing the VMM (through the core) must do to a vCPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Make `intid` pending on `vcpu`.
    Inject {
        /// Target vCPU index.
        vcpu: u8,
        /// The interrupt.
        intid: u16,
        /// Its priority (top five bits significant).
        priority: u8,
        /// Group 1 (`true`) or group 0: the list register's group bit.
        group1: bool,
        /// GICv2 SGIs only: the vCPU that sent it (the list register's
        /// CPUID field).
        source: Option<u8>,
    },
    /// Remove `intid` from `vcpu`'s list registers if it is still only
    /// pending there.
    Withdraw {
        /// The vCPU it was injected into.
        vcpu: u8,
        /// The interrupt.
        intid: u16,
    },
}

/// The architecture version of the emulated GIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GicVersion {
    /// GICv2: memory-mapped distributor and CPU interface.
    V2,
    /// GICv3: distributor, redistributors, system-register CPU interface.
    V3,
}

/// Errors of [`Vgic::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VgicError {
    /// The vCPU count is 0 or above [`MAX_VCPUS`].
    BadVcpuCount,
}

/// The decoded fields of an `ICC_SGI1R_EL1` write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sgi1r {
    /// The SGI (0..=15).
    pub intid: u8,
    /// `IRM`: send to every PE but the sender; the affinity is ignored.
    pub broadcast: bool,
    /// Bit n selects the PE with `Aff0 = 16 * range_selector + n`.
    pub target_list: u16,
    /// `RS`: which block of 16 `Aff0` values the target list covers.
    pub range_selector: u8,
    /// `Aff1` of the targets.
    pub aff1: u8,
    /// `Aff2` of the targets.
    pub aff2: u8,
    /// `Aff3` of the targets.
    pub aff3: u8,
}

impl Sgi1r {
    /// Decodes a value written to `ICC_SGI1R_EL1`.
    pub const fn decode(value: u64) -> Self {
        Self {
            intid: lo8(value >> 24) & 0xF,
            broadcast: value & (1 << 40) != 0,
            target_list: lo16(value),
            range_selector: lo8(value >> 44) & 0xF,
            aff1: lo8(value >> 16),
            aff2: lo8(value >> 32),
            aff3: lo8(value >> 48),
        }
    }
}

/// Per-interrupt state bits, each kept as bitmaps of 32 INTIDs.
#[derive(Debug, Clone, Copy)]
enum Bit {
    /// Enabled (`ISENABLER`).
    Enabled,
    /// Pending latch: an edge, an SGI (GICv3) or a write to `ISPENDR`.
    Latch,
    /// The input line is high (devices, through `set_level`).
    Line,
    /// Group 1 (`IGROUPR`).
    Group1,
    /// Edge-triggered (`ICFGR`).
    Edge,
    /// Its delivery must be re-evaluated.
    Dirty,
    /// A level-triggered injection that may still be pending in a vCPU
    /// (private interrupts; SPIs record the vCPU in `spi_inflight`).
    Inflight,
}
const NR_BITS: usize = 7;
/// Words of 32 SPIs (INTIDs 32..=255).
const SPI_WORDS: usize = 7;
const NR_SPIS: usize = NR_INTIDS - 32;
/// "Not injected anywhere" in `spi_inflight`.
const NOWHERE: u8 = u8::MAX;
/// The implemented priority bits.
const PRIORITY_MASK: u8 = 0xF8;

/// `GICD_CTLR` bits.
const CTLR_GRP0: u32 = 1 << 0;
const CTLR_GRP1: u32 = 1 << 1;
const CTLR_ARE: u32 = 1 << 4;
const CTLR_DS: u32 = 1 << 6;
/// `GICR_WAKER` bits.
const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
/// `GICR_TYPER.Last`.
const GICR_TYPER_LAST: u64 = 1 << 4;

/// The banked (SGI and PPI) state of one vCPU.
#[derive(Debug, Clone, Copy)]
struct Private {
    bits: [u32; NR_BITS],
    priority: [u8; 32],
    /// GICv2: for each SGI, the bitmap of vCPUs it is pending from.
    sgi_sources: [u8; 16],
}

/// The kinds of one-bit-per-interrupt registers, in address order from
/// offset 0x080.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BitReg {
    Group,
    SetEnable,
    ClearEnable,
    SetPending,
    ClearPending,
    SetActive,
    ClearActive,
}

/// A decoded register.
#[derive(Debug, Clone, Copy)]
enum Reg {
    Ctlr,
    Typer,
    Iidr,
    /// Read as zero, ignore writes (architecturally, not unknown).
    RazWi,
    /// A bitmap register covering INTIDs `32 * n ..`.
    Bits(BitReg, usize),
    /// `IPRIORITYR` bytes from INTID `first`.
    Priority(usize),
    /// `ITARGETSR` bytes from INTID `first`.
    Targets(usize),
    /// `ICFGR<n>`.
    Config(usize),
    Sgir,
    /// `SPENDSGIR` (`true`) or `CPENDSGIR` bytes from SGI `first`.
    SgiPending(bool, usize),
    /// `IROUTER` of SPI index `spi` (INTID - 32): whole, or one half.
    Irouter {
        spi: usize,
        half: Half,
    },
    /// `GICR_TYPER` (whole or one half).
    RedistTyper(Half),
    Waker,
    /// An ID register's value.
    Id(u32),
}

/// Which part of a 64-bit register an access covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Half {
    Whole,
    Low,
    High,
}

/// The emulated distributor and redistributors of one guest.
#[derive(Debug, Clone)]
pub struct Vgic {
    version: GicVersion,
    vcpus: u8,
    ctlr: u32,
    private: [Private; MAX_VCPUS],
    spi_bits: [[u32; SPI_WORDS]; NR_BITS],
    spi_priority: [u8; NR_SPIS],
    /// GICv2 `ITARGETSR` of each SPI.
    spi_targets: [u8; NR_SPIS],
    /// GICv3 `IROUTER` of each SPI as `Aff3 << 24 | Aff2 << 16 | Aff1 << 8 |
    /// Aff0`.
    spi_route: [u32; NR_SPIS],
    /// The vCPU a level-triggered SPI was injected into, or [`NOWHERE`].
    spi_inflight: [u8; NR_SPIS],
    /// `GICR_WAKER.ProcessorSleep` of each vCPU, as a bitmap.
    asleep: u8,
    /// Guest accesses to unknown or reserved offsets, or with a width or
    /// alignment the register does not allow. For the VMM to log.
    pub unknown_accesses: u32,
}

impl Vgic {
    /// A GIC in its reset state for `vcpus` vCPUs: everything disabled and
    /// idle, SGIs enabled, interrupts in group 0 (GICv2) or group 1 (GICv3,
    /// as KVM), SPIs level-triggered and routed to nobody (GICv2) or vCPU 0
    /// (GICv3), redistributors asleep.
    pub fn new(version: GicVersion, vcpus: u8) -> Result<Self, VgicError> {
        if vcpus == 0 || usize::from(vcpus) > MAX_VCPUS {
            return Err(VgicError::BadVcpuCount);
        }
        let group = match version {
            GicVersion::V2 => 0,
            GicVersion::V3 => u32::MAX,
        };
        let mut private = Private {
            bits: [0; NR_BITS],
            priority: [0; 32],
            sgi_sources: [0; 16],
        };
        private.bits[Bit::Enabled as usize] = 0xFFFF;
        private.bits[Bit::Edge as usize] = 0xFFFF;
        private.bits[Bit::Group1 as usize] = group;
        let mut spi_bits = [[0; SPI_WORDS]; NR_BITS];
        spi_bits[Bit::Group1 as usize] = [group; SPI_WORDS];
        Ok(Self {
            version,
            vcpus,
            ctlr: 0,
            private: [private; MAX_VCPUS],
            spi_bits,
            spi_priority: [0; NR_SPIS],
            spi_targets: [0; NR_SPIS],
            spi_route: [0; NR_SPIS],
            spi_inflight: [NOWHERE; NR_SPIS],
            asleep: u8::MAX,
            unknown_accesses: 0,
        })
    }

    /// The emulated architecture version.
    pub const fn version(&self) -> GicVersion {
        self.version
    }

    /// The number of vCPUs.
    pub const fn vcpus(&self) -> u8 {
        self.vcpus
    }

    /// Whether `intid` is enabled (SGIs and PPIs as seen by `vcpu`).
    pub fn is_enabled(&self, vcpu: u8, intid: u16) -> bool {
        self.valid_vcpu(vcpu)
            .is_some_and(|v| self.get(v, usize::from(intid), Bit::Enabled))
    }

    /// The priority of `intid` (SGIs and PPIs as seen by `vcpu`); 0 for an
    /// invalid vCPU or INTID.
    pub fn priority(&self, vcpu: u8, intid: u16) -> u8 {
        self.valid_vcpu(vcpu)
            .map_or(0, |v| self.priority_of(v, usize::from(intid)))
    }

    /// Whether the distributor forwards group `group1` interrupts.
    pub const fn group_enabled(&self, group1: bool) -> bool {
        let bit = if group1 { CTLR_GRP1 } else { CTLR_GRP0 };
        self.ctlr & bit != 0
    }

    // ---- device lines -------------------------------------------------

    /// Sets the level of a device's interrupt line to SPI `intid` (32..=255).
    ///
    /// For a level-triggered SPI, a high line is pending: this injects it
    /// whenever it is deliverable, *also when the line was already high* (so
    /// that the VMM can call this after each device access to re-deliver a
    /// line that stayed high); a falling line withdraws it. For an
    /// edge-triggered SPI a rising edge makes it pending. Other INTIDs are
    /// ignored.
    pub fn set_level(&mut self, intid: u16, high: bool) -> Actions {
        let i = usize::from(intid);
        if !(32..NR_INTIDS).contains(&i) {
            return Actions::new();
        }
        self.drive_line(0, i, high)
    }

    /// Sets the level of `vcpu`'s private line to PPI `intid` (16..=31),
    /// with the same rules as [`Vgic::set_level`]. Other INTIDs and vCPUs
    /// are ignored.
    pub fn set_private_level(&mut self, vcpu: u8, intid: u16, high: bool) -> Actions {
        let i = usize::from(intid);
        match self.valid_vcpu(vcpu) {
            Some(v) if (16..32).contains(&i) => self.drive_line(v, i, high),
            _ => Actions::new(),
        }
    }

    /// Re-delivers SPI `intid` if it is still pending (its line is still
    /// high): for a VMM told by the core that the guest completed it.
    pub fn resample(&mut self, intid: u16) -> Actions {
        let i = usize::from(intid);
        if (32..NR_INTIDS).contains(&i) {
            self.set(0, i, Bit::Dirty, true);
        }
        self.take_actions()
    }

    fn drive_line(&mut self, v: usize, i: usize, high: bool) -> Actions {
        let was_high = self.get(v, i, Bit::Line);
        if high && !was_high && self.get(v, i, Bit::Edge) {
            self.set(v, i, Bit::Latch, true);
        }
        self.set(v, i, Bit::Line, high);
        if high || was_high {
            self.set(v, i, Bit::Dirty, true);
        }
        self.take_actions()
    }

    // ---- SGIs through the system register (GICv3) -----------------------

    /// Handles the guest's (trapped) write of `value` to `ICC_SGI1R_EL1` on
    /// `vcpu`. Our vCPUs have `Aff0` = their index and the other affinity
    /// levels 0. Ignored on a GICv2 or for an invalid vCPU.
    pub fn write_sgi1r(&mut self, vcpu: u8, value: u64) -> Actions {
        let Some(sender) = self.valid_vcpu(vcpu) else {
            return Actions::new();
        };
        if self.version != GicVersion::V3 {
            return Actions::new();
        }
        let sgi = Sgi1r::decode(value);
        let intid = usize::from(sgi.intid);
        let targets: u32 = if sgi.broadcast {
            self.vcpu_mask() & !(1 << sender)
        } else if sgi.aff1 == 0 && sgi.aff2 == 0 && sgi.aff3 == 0 && sgi.range_selector == 0 {
            u32::from(sgi.target_list) & self.vcpu_mask()
        } else {
            0
        };
        for t in 0..usize::from(self.vcpus) {
            if targets & (1 << t) != 0 {
                self.set(t, intid, Bit::Latch, true);
                self.set(t, intid, Bit::Dirty, true);
            }
        }
        self.take_actions()
    }

    // ---- MMIO ---------------------------------------------------------

    /// A guest read of `size` bytes at `offset` in the distributor, by
    /// `vcpu` (which selects the banked SGI/PPI registers on GICv2).
    pub fn read_distributor(&mut self, vcpu: u8, offset: u64, size: u8) -> u64 {
        match (self.valid_vcpu(vcpu), self.decode_distributor(offset, size)) {
            (Some(v), Some(reg)) => self.read_reg(v, reg, size),
            _ => self.unknown(),
        }
    }

    /// A guest write of the low `size` bytes of `value` at `offset` in the
    /// distributor, by `vcpu`.
    pub fn write_distributor(&mut self, vcpu: u8, offset: u64, size: u8, value: u64) -> Actions {
        match (self.valid_vcpu(vcpu), self.decode_distributor(offset, size)) {
            (Some(v), Some(reg)) => self.write_reg(v, reg, size, value),
            _ => {
                self.unknown();
                Actions::new()
            }
        }
    }

    /// A guest read of `size` bytes at `offset` from the start of the
    /// redistributor region (vCPU n's redistributor is at
    /// `n * GICR_STRIDE`). Everything reads as zero on a GICv2.
    pub fn read_redistributor(&mut self, offset: u64, size: u8) -> u64 {
        match self.decode_redistributor(offset, size) {
            Some((v, reg)) => self.read_reg(v, reg, size),
            None => self.unknown(),
        }
    }

    /// A guest write to the redistributor region; see
    /// [`Vgic::read_redistributor`].
    pub fn write_redistributor(&mut self, offset: u64, size: u8, value: u64) -> Actions {
        match self.decode_redistributor(offset, size) {
            Some((v, reg)) => self.write_reg(v, reg, size, value),
            None => {
                self.unknown();
                Actions::new()
            }
        }
    }

    // ---- delivery -----------------------------------------------------

    /// Whether some interrupt's delivery still has to be worked out (a
    /// previous call returned a full action list).
    pub fn has_pending_actions(&self) -> bool {
        let private = self.private[..usize::from(self.vcpus)]
            .iter()
            .any(|p| p.bits[Bit::Dirty as usize] != 0);
        private || self.spi_bits[Bit::Dirty as usize].iter().any(|&w| w != 0)
    }

    /// Works out the delivery of every changed interrupt, up to one full
    /// action list; call again while [`Vgic::has_pending_actions`].
    pub fn take_actions(&mut self) -> Actions {
        let mut out = Actions::new();
        for v in 0..usize::from(self.vcpus) {
            if !self.drain_word(v, 0, &mut out) {
                return out;
            }
        }
        for n in 1..=SPI_WORDS {
            if !self.drain_word(0, n, &mut out) {
                return out;
            }
        }
        out
    }

    /// Processes the dirty interrupts of word `n` (bank `v` for n = 0);
    /// `false` if the action list filled up first.
    fn drain_word(&mut self, v: usize, n: usize, out: &mut Actions) -> bool {
        loop {
            let dirty = self.word(v, n, Bit::Dirty);
            if dirty == 0 {
                return true;
            }
            // One interrupt needs at most two actions.
            if out.capacity() - out.len() < 2 {
                return false;
            }
            let bit = usize::try_from(dirty.trailing_zeros()).unwrap_or(0);
            self.deliver(v, 32 * n + bit, out);
        }
    }

    /// Decides what to do about interrupt `i` (bank `v`), pushes at most
    /// two actions, and clears its dirty bit unless more remains to do.
    fn deliver(&mut self, v: usize, i: usize, out: &mut Actions) {
        let enabled = self.get(v, i, Bit::Enabled);
        let group1 = self.get(v, i, Bit::Group1);
        let line_held = self.get(v, i, Bit::Line) && !self.get(v, i, Bit::Edge);
        let v2_sgi = self.version == GicVersion::V2 && i < 16;
        let sources = if v2_sgi { self.sgi_sources(v, i) } else { 0 };
        let pending = if v2_sgi {
            sources != 0
        } else {
            self.get(v, i, Bit::Latch) || line_held
        };
        let target = if pending && enabled && self.group_enabled(group1) {
            self.target(v, i)
        } else {
            None
        };
        let previous = self.inflight(v, i);
        let intid = u16::try_from(i).unwrap_or(u16::MAX);
        let mut done = true;
        match target {
            Some(t) => {
                if let Some(p) = previous
                    && p != t
                {
                    let _ = out.push(Action::Withdraw { vcpu: p, intid });
                }
                let source = if v2_sgi {
                    let s = sources.trailing_zeros();
                    let remaining = sources & !(1 << s);
                    self.set_sgi_sources(v, i, remaining);
                    done = remaining == 0;
                    Some(lo8(u64::from(s)))
                } else {
                    None
                };
                let _ = out.push(Action::Inject {
                    vcpu: t,
                    intid,
                    priority: self.priority_of(v, i),
                    group1,
                    source,
                });
                self.set(v, i, Bit::Latch, false);
                self.set_inflight(v, i, line_held.then_some(t));
            }
            None => {
                if let Some(p) = previous {
                    let _ = out.push(Action::Withdraw { vcpu: p, intid });
                    self.set_inflight(v, i, None);
                }
            }
        }
        if done {
            self.set(v, i, Bit::Dirty, false);
        }
    }

    /// The vCPU interrupt `i` (bank `v`) goes to, if any.
    fn target(&self, v: usize, i: usize) -> Option<u8> {
        if i < 32 {
            return Some(lo8(v as u64));
        }
        let spi = i - 32;
        match self.version {
            GicVersion::V2 => {
                if self.vcpus == 1 {
                    // A uniprocessor GIC delivers every SPI to CPU 0.
                    return Some(0);
                }
                let targets = u32::from(*self.spi_targets.get(spi)?) & self.vcpu_mask();
                (targets != 0).then(|| lo8(u64::from(targets.trailing_zeros())))
            }
            GicVersion::V3 => {
                let route = *self.spi_route.get(spi)?;
                let aff0 = lo8(u64::from(route));
                (route >> 8 == 0 && aff0 < self.vcpus).then_some(aff0)
            }
        }
    }

    fn inflight(&self, v: usize, i: usize) -> Option<u8> {
        if i < 32 {
            self.get(v, i, Bit::Inflight).then(|| lo8(v as u64))
        } else {
            self.spi_inflight
                .get(i - 32)
                .copied()
                .filter(|&t| t != NOWHERE)
        }
    }

    fn set_inflight(&mut self, v: usize, i: usize, to: Option<u8>) {
        if i < 32 {
            self.set(v, i, Bit::Inflight, to.is_some());
        } else if let Some(slot) = self.spi_inflight.get_mut(i - 32) {
            *slot = to.unwrap_or(NOWHERE);
        }
    }

    // ---- register decoding ---------------------------------------------

    fn decode_distributor(&self, offset: u64, size: u8) -> Option<Reg> {
        let v3 = self.version == GicVersion::V3;
        let word = size == 4 && offset.is_multiple_of(4);
        let bytes = size == 1 || word;
        let double = (size == 8 && offset.is_multiple_of(8)) || word;
        let o = usize::try_from(offset).ok()?;
        let reg = match o {
            0x000 if word => Reg::Ctlr,
            0x004 if word => Reg::Typer,
            0x008 if word => Reg::Iidr,
            // GICv3 TYPER2 and STATUSR.
            0x00C | 0x010 if v3 && word => Reg::RazWi,
            0x080..=0x3FF if word => {
                let n = (o % 0x80) / 4;
                if n >= NR_INTIDS / 32 {
                    return None;
                }
                if v3 && n == 0 {
                    // With affinity routing the redistributors own these.
                    Reg::RazWi
                } else {
                    Reg::Bits(bit_reg(o / 0x80 - 1)?, n)
                }
            }
            0x400..=0x7FF if bytes => {
                let first = o - 0x400;
                if first >= NR_INTIDS {
                    return None;
                }
                if v3 && first < 32 {
                    Reg::RazWi
                } else {
                    Reg::Priority(first)
                }
            }
            0x800..=0xBFF if bytes => {
                let first = o - 0x800;
                if first >= NR_INTIDS {
                    return None;
                }
                if v3 { Reg::RazWi } else { Reg::Targets(first) }
            }
            0xC00..=0xCFF if word => {
                let n = (o - 0xC00) / 4;
                if n >= NR_INTIDS / 16 {
                    return None;
                }
                if v3 && n < 2 {
                    Reg::RazWi
                } else {
                    Reg::Config(n)
                }
            }
            // GICv3 IGRPMODR: RES0 with a single security state.
            0xD00..=0xD7F if v3 && word => Reg::RazWi,
            // NSACR: RAZ/WI without security extensions.
            0xE00..=0xEFF if word => Reg::RazWi,
            0xF00 if word => {
                if v3 {
                    Reg::RazWi
                } else {
                    Reg::Sgir
                }
            }
            0xF10..=0xF2F if bytes => {
                if v3 {
                    Reg::RazWi
                } else {
                    Reg::SgiPending(o >= 0xF20, o % 16)
                }
            }
            0xFD0..=0xFFC if !v3 && word => Reg::Id(id_register(o, 2)),
            0x6000..=0x7FFF if v3 && double => {
                let intid = (o - 0x6000) / 8;
                if !(32..NR_INTIDS).contains(&intid) {
                    return None;
                }
                Reg::Irouter {
                    spi: intid - 32,
                    half: half(o, size),
                }
            }
            0xFFD0..=0xFFFC if v3 && word => Reg::Id(id_register(o, 3)),
            _ => return None,
        };
        Some(reg)
    }

    /// Decodes a redistributor offset into the vCPU and the register.
    fn decode_redistributor(&self, offset: u64, size: u8) -> Option<(usize, Reg)> {
        if self.version != GicVersion::V3 {
            return None;
        }
        let v = usize::try_from(offset / GICR_STRIDE).ok()?;
        if v >= usize::from(self.vcpus) {
            return None;
        }
        let o = usize::try_from(offset % GICR_STRIDE).ok()?;
        let word = size == 4 && o.is_multiple_of(4);
        let bytes = size == 1 || word;
        let double = (size == 8 && o.is_multiple_of(8)) || word;
        let reg = match o {
            // CTLR: no LPIs, so EnableLPIs is RAZ/WI and RWP/UWP read 0.
            0x0000 if word => Reg::RazWi,
            0x0004 if word => Reg::Iidr,
            0x0008..=0x000F if double => Reg::RedistTyper(half(o, size)),
            // STATUSR.
            0x0010 if word => Reg::RazWi,
            0x0014 if word => Reg::Waker,
            // PROPBASER, PENDBASER.
            0x0070..=0x007F if double => Reg::RazWi,
            0xFFD0..=0xFFFC if word => Reg::Id(id_register(o, 3)),
            0x1_0080..=0x1_03FF if word && o.is_multiple_of(0x80) => {
                Reg::Bits(bit_reg((o - 0x1_0000) / 0x80 - 1)?, 0)
            }
            0x1_0400..=0x1_041F if bytes => Reg::Priority(o - 0x1_0400),
            0x1_0C00 | 0x1_0C04 if word => Reg::Config((o - 0x1_0C00) / 4),
            // IGRPMODR0, NSACR.
            0x1_0D00 | 0x1_0E00 if word => Reg::RazWi,
            _ => return None,
        };
        Some((v, reg))
    }

    // ---- register access -------------------------------------------------

    fn read_reg(&self, v: usize, reg: Reg, size: u8) -> u64 {
        let value: u64 = match reg {
            Reg::Ctlr => u64::from(match self.version {
                GicVersion::V2 => self.ctlr,
                GicVersion::V3 => self.ctlr | CTLR_ARE | CTLR_DS,
            }),
            Reg::Typer => u64::from(self.typer()),
            Reg::Iidr => u64::from(IIDR),
            Reg::RazWi => 0,
            Reg::Bits(kind, n) => u64::from(match kind {
                BitReg::Group => self.word(v, n, Bit::Group1),
                BitReg::SetEnable | BitReg::ClearEnable => self.word(v, n, Bit::Enabled),
                BitReg::SetPending | BitReg::ClearPending => self.pending_word(v, n),
                BitReg::SetActive | BitReg::ClearActive => 0,
            }),
            Reg::Priority(first) => self.read_bytes(size, |s, k| s.priority_of(v, first + k)),
            Reg::Targets(first) => self.read_bytes(size, |s, k| s.target_byte(v, first + k)),
            Reg::Config(n) => u64::from(self.config_word(v, n)),
            Reg::Sgir => 0,
            Reg::SgiPending(_, first) => self.read_bytes(size, |s, k| s.sgi_sources(v, first + k)),
            Reg::Irouter { spi, half } => {
                let route = self.spi_route.get(spi).copied().unwrap_or(0);
                let whole = u64::from(route & 0xFF_FFFF) | (u64::from(route >> 24) << 32);
                select_half(whole, half)
            }
            Reg::RedistTyper(half) => {
                let v64 = v as u64;
                let last = if v + 1 == usize::from(self.vcpus) {
                    GICR_TYPER_LAST
                } else {
                    0
                };
                select_half(v64 << 32 | v64 << 8 | last, half)
            }
            Reg::Waker => {
                if self.asleep & (1 << v) != 0 {
                    u64::from(WAKER_PROCESSOR_SLEEP | WAKER_CHILDREN_ASLEEP)
                } else {
                    0
                }
            }
            Reg::Id(value) => u64::from(value),
        };
        value & crate::mmio::size_mask(size)
    }

    fn write_reg(&mut self, v: usize, reg: Reg, size: u8, value: u64) -> Actions {
        let value = value & crate::mmio::size_mask(size);
        let word = lo32(value);
        match reg {
            Reg::Ctlr => {
                let new = word & (CTLR_GRP0 | CTLR_GRP1);
                if new != self.ctlr {
                    self.ctlr = new;
                    self.mark_all_dirty();
                }
            }
            Reg::Bits(kind, n) => self.write_bits(v, kind, n, word),
            Reg::Priority(first) => {
                for k in 0..usize::from(size) {
                    let byte = lo8(value >> (8 * k));
                    self.set_priority(v, first + k, byte);
                }
            }
            Reg::Targets(first) => {
                for k in 0..usize::from(size) {
                    let byte = lo8(value >> (8 * k));
                    self.set_target_byte(first + k, byte);
                }
            }
            Reg::Config(n) => self.write_config(n, word),
            Reg::Sgir => self.write_sgir(v, word),
            Reg::SgiPending(set, first) => {
                for k in 0..usize::from(size) {
                    let byte = lo8(value >> (8 * k));
                    self.write_sgi_sources(v, first + k, set, byte);
                }
            }
            Reg::Irouter { spi, half } => self.write_irouter(spi, half, value),
            Reg::Waker => {
                if word & WAKER_PROCESSOR_SLEEP != 0 {
                    self.asleep |= 1 << v;
                } else {
                    self.asleep &= !(1 << v);
                }
            }
            Reg::Typer | Reg::Iidr | Reg::RazWi | Reg::RedistTyper(_) | Reg::Id(_) => {}
        }
        self.take_actions()
    }

    fn typer(&self) -> u32 {
        let it_lines = u32::try_from(NR_INTIDS / 32 - 1).unwrap_or(0);
        match self.version {
            GicVersion::V2 => it_lines | (u32::from(self.vcpus) - 1) << 5,
            // IDbits = 9 (10-bit INTIDs, no LPIs), No1N.
            GicVersion::V3 => it_lines | 9 << 19 | 1 << 25,
        }
    }

    fn pending_word(&self, v: usize, n: usize) -> u32 {
        let level = self.word(v, n, Bit::Line) & !self.word(v, n, Bit::Edge);
        let mut pending = self.word(v, n, Bit::Latch) | level;
        if n == 0 && self.version == GicVersion::V2 {
            pending &= !0xFFFF;
            for sgi in 0..16 {
                if self.sgi_sources(v, sgi) != 0 {
                    pending |= 1 << sgi;
                }
            }
        }
        pending
    }

    fn write_bits(&mut self, v: usize, kind: BitReg, n: usize, value: u32) {
        // GICv2 SGIs are made pending through SGIR/SPENDSGIR only.
        let pend_mask = if n == 0 && self.version == GicVersion::V2 {
            0xFFFF_0000
        } else {
            u32::MAX
        };
        let (bit, value) = match kind {
            BitReg::Group => (Bit::Group1, value),
            BitReg::SetEnable | BitReg::ClearEnable => (Bit::Enabled, value),
            BitReg::SetPending | BitReg::ClearPending => (Bit::Latch, value & pend_mask),
            BitReg::SetActive | BitReg::ClearActive => return,
        };
        let old = self.word(v, n, bit);
        let new = match kind {
            BitReg::Group => value,
            BitReg::SetEnable | BitReg::SetPending => old | value,
            _ => old & !value,
        };
        self.update_word(v, n, bit, |_| new);
        // Every pending write asks for delivery (a level interrupt whose
        // line is high stays pending); otherwise only what changed.
        let dirty = match kind {
            BitReg::SetPending | BitReg::ClearPending => value,
            _ => old ^ new,
        };
        self.update_word(v, n, Bit::Dirty, |w| w | dirty);
    }

    fn config_word(&self, v: usize, n: usize) -> u32 {
        let edge = self.word(v, n / 2, Bit::Edge) >> (16 * (n % 2));
        (0..16)
            .filter(|k| edge & (1 << k) != 0)
            .fold(0, |acc, k| acc | 2 << (2 * k))
    }

    fn write_config(&mut self, n: usize, value: u32) {
        if n < 2 {
            // SGIs are always edge, PPIs always level.
            return;
        }
        for k in 0..16 {
            let i = 16 * n + k;
            let edge = value & (2 << (2 * k)) != 0;
            if self.get(0, i, Bit::Edge) != edge {
                self.set(0, i, Bit::Edge, edge);
                self.set(0, i, Bit::Dirty, true);
            }
        }
    }

    fn write_sgir(&mut self, sender: usize, value: u32) {
        let sgi = usize::try_from(value & 0xF).unwrap_or(0);
        let list = (value >> 16) & 0xFF;
        let targets = match (value >> 24) & 3 {
            0 => list,
            1 => !(1 << sender),
            2 => 1 << sender,
            _ => 0,
        } & self.vcpu_mask();
        for t in 0..usize::from(self.vcpus) {
            if targets & (1 << t) != 0 {
                let sources = self.sgi_sources(t, sgi) | 1 << sender;
                self.set_sgi_sources(t, sgi, sources);
                self.set(t, sgi, Bit::Dirty, true);
            }
        }
    }

    fn write_sgi_sources(&mut self, v: usize, sgi: usize, set: bool, byte: u8) {
        let old = self.sgi_sources(v, sgi);
        let byte = byte & lo8(u64::from(self.vcpu_mask()));
        let new = if set { old | byte } else { old & !byte };
        if new != old {
            self.set_sgi_sources(v, sgi, new);
            self.set(v, sgi, Bit::Dirty, true);
        }
    }

    fn write_irouter(&mut self, spi: usize, half: Half, value: u64) {
        let Some(route) = self.spi_route.get_mut(spi) else {
            return;
        };
        let low = lo32(value) & 0xFF_FFFF;
        let aff3 = lo32(value >> 32) & 0xFF;
        let new = match half {
            Half::Whole => low | aff3 << 24,
            Half::Low => (*route & 0xFF00_0000) | low,
            Half::High => (*route & 0xFF_FFFF) | (lo32(value) & 0xFF) << 24,
        };
        if new != *route {
            *route = new;
            self.set(0, spi + 32, Bit::Dirty, true);
        }
    }

    // ---- state helpers -------------------------------------------------

    fn valid_vcpu(&self, vcpu: u8) -> Option<usize> {
        (vcpu < self.vcpus).then_some(usize::from(vcpu))
    }

    fn vcpu_mask(&self) -> u32 {
        (1 << self.vcpus) - 1
    }

    fn unknown(&mut self) -> u64 {
        self.unknown_accesses = self.unknown_accesses.saturating_add(1);
        0
    }

    /// Word `n` of `bit` (n = 0: bank `v`'s SGIs and PPIs); 0 out of range.
    fn word(&self, v: usize, n: usize, bit: Bit) -> u32 {
        let slot = if n == 0 {
            self.private.get(v).map(|p| &p.bits[bit as usize])
        } else {
            self.spi_bits[bit as usize].get(n - 1)
        };
        slot.copied().unwrap_or(0)
    }

    /// Applies `f` to word `n` of `bit`; nothing out of range.
    fn update_word(&mut self, v: usize, n: usize, bit: Bit, f: impl FnOnce(u32) -> u32) {
        let slot = if n == 0 {
            self.private.get_mut(v).map(|p| &mut p.bits[bit as usize])
        } else {
            self.spi_bits[bit as usize].get_mut(n - 1)
        };
        if let Some(w) = slot {
            *w = f(*w);
        }
    }

    fn get(&self, v: usize, i: usize, bit: Bit) -> bool {
        self.word(v, i / 32, bit) & (1 << (i % 32)) != 0
    }

    fn set(&mut self, v: usize, i: usize, bit: Bit, on: bool) {
        let mask = 1 << (i % 32);
        self.update_word(v, i / 32, bit, |w| if on { w | mask } else { w & !mask });
    }

    fn mark_all_dirty(&mut self) {
        for p in &mut self.private[..usize::from(self.vcpus)] {
            p.bits[Bit::Dirty as usize] = u32::MAX;
        }
        self.spi_bits[Bit::Dirty as usize] = [u32::MAX; SPI_WORDS];
    }

    fn priority_of(&self, v: usize, i: usize) -> u8 {
        let slot = if i < 32 {
            self.private.get(v).and_then(|p| p.priority.get(i))
        } else {
            self.spi_priority.get(i - 32)
        };
        slot.copied().unwrap_or(0)
    }

    fn set_priority(&mut self, v: usize, i: usize, value: u8) {
        let slot = if i < 32 {
            self.private.get_mut(v).and_then(|p| p.priority.get_mut(i))
        } else {
            self.spi_priority.get_mut(i - 32)
        };
        if let Some(p) = slot {
            *p = value & PRIORITY_MASK;
        }
    }

    /// `ITARGETSR` byte of INTID `i` as `v` reads it.
    fn target_byte(&self, v: usize, i: usize) -> u8 {
        if i < 32 {
            1 << v
        } else {
            self.spi_targets.get(i - 32).copied().unwrap_or(0)
        }
    }

    fn set_target_byte(&mut self, i: usize, value: u8) {
        if i < 32 {
            return;
        }
        let mask = lo8(u64::from(self.vcpu_mask()));
        if let Some(t) = self.spi_targets.get_mut(i - 32)
            && *t != value & mask
        {
            *t = value & mask;
            self.set(0, i, Bit::Dirty, true);
        }
    }

    fn sgi_sources(&self, v: usize, sgi: usize) -> u8 {
        self.private
            .get(v)
            .and_then(|p| p.sgi_sources.get(sgi))
            .copied()
            .unwrap_or(0)
    }

    fn set_sgi_sources(&mut self, v: usize, sgi: usize, sources: u8) {
        if let Some(s) = self
            .private
            .get_mut(v)
            .and_then(|p| p.sgi_sources.get_mut(sgi))
        {
            *s = sources;
        }
    }

    /// Assembles `size` bytes (little-endian) from `byte(self, k)`.
    fn read_bytes(&self, size: u8, byte: impl Fn(&Self, usize) -> u8) -> u64 {
        (0..usize::from(size)).fold(0, |acc, k| acc | u64::from(byte(self, k)) << (8 * k))
    }
}

/// The bitmap register kind at index `k` (0 = `IGROUPR`).
fn bit_reg(k: usize) -> Option<BitReg> {
    Some(match k {
        0 => BitReg::Group,
        1 => BitReg::SetEnable,
        2 => BitReg::ClearEnable,
        3 => BitReg::SetPending,
        4 => BitReg::ClearPending,
        5 => BitReg::SetActive,
        6 => BitReg::ClearActive,
        _ => return None,
    })
}

/// Which half of a 64-bit register an access at offset `o` of `size` bytes
/// covers (the decoder has checked its alignment).
fn half(o: usize, size: u8) -> Half {
    match (size, o % 8) {
        (8, _) => Half::Whole,
        (_, 0) => Half::Low,
        _ => Half::High,
    }
}

fn select_half(value: u64, half: Half) -> u64 {
    match half {
        Half::Whole => value,
        Half::Low => value & 0xFFFF_FFFF,
        Half::High => value >> 32,
    }
}

/// The ID register at offset `o` (only its low 12 bits matter) of a GIC of
/// architecture revision `arch`: Arm's JEP106 code, part number 0, and the
/// PrimeCell component ID.
fn id_register(o: usize, arch: u32) -> u32 {
    match o & 0xFFF {
        0xFD0 => 0x04,             // PIDR4: JEP106 continuation code 4
        0xFE4 => 0xB0,             // PIDR1: JEP106 ID bits 3:0 (0xB)
        0xFE8 => arch << 4 | 0x0B, // PIDR2: ArchRev, JEDEC, JEP106 6:4
        0xFF0 => 0x0D,             // CIDR0
        0xFF4 => 0xF0,             // CIDR1
        0xFF8 => 0x05,             // CIDR2
        0xFFC => 0xB1,             // CIDR3
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec as StdVec;

    const UART: u16 = 33;

    fn inject(vcpu: u8, intid: u16, priority: u8, group1: bool) -> Action {
        Action::Inject {
            vcpu,
            intid,
            priority,
            group1,
            source: None,
        }
    }

    fn wr(g: &mut Vgic, vcpu: u8, offset: u64, value: u32) -> StdVec<Action> {
        g.write_distributor(vcpu, offset, 4, u64::from(value))
            .into_iter()
            .collect()
    }

    fn rd(g: &mut Vgic, vcpu: u8, offset: u64) -> u32 {
        u32::try_from(g.read_distributor(vcpu, offset, 4)).unwrap()
    }

    fn rd_r(g: &mut Vgic, offset: u64) -> u32 {
        u32::try_from(g.read_redistributor(offset, 4)).unwrap()
    }

    /// A GICv2 set up roughly as Linux's irq-gic.c leaves it: distributor
    /// on, every SPI to vCPU 0 at priority 0xa0, SGIs enabled.
    fn linux_v2(vcpus: u8) -> Vgic {
        let mut g = Vgic::new(GicVersion::V2, vcpus).unwrap();
        for n in 8..64 {
            wr(&mut g, 0, 0x800 + 4 * n, 0x0101_0101);
        }
        for n in 8..64 {
            wr(&mut g, 0, 0x400 + 4 * n, 0xa0a0_a0a0);
        }
        for v in 0..vcpus {
            for n in 0..8 {
                wr(&mut g, v, 0x400 + 4 * n, 0xa0a0_a0a0);
            }
        }
        assert!(wr(&mut g, 0, 0x000, 1).is_empty());
        g
    }

    /// A GICv3 set up roughly as Linux's irq-gic-v3.c leaves it.
    fn linux_v3(vcpus: u8) -> Vgic {
        let mut g = Vgic::new(GicVersion::V3, vcpus).unwrap();
        for n in 1..8 {
            wr(&mut g, 0, 0x080 + 4 * n, u32::MAX);
        }
        for n in 8..64 {
            wr(&mut g, 0, 0x400 + 4 * n, 0xa0a0_a0a0);
        }
        assert!(wr(&mut g, 0, 0x000, 0x13).is_empty());
        for v in 0..u64::from(vcpus) {
            let sgi = v * GICR_STRIDE + 0x1_0000;
            g.write_redistributor(sgi + 0x080, 4, u64::from(u32::MAX));
            for n in 0..8 {
                g.write_redistributor(sgi + 0x400 + 4 * n, 4, 0xa0a0_a0a0);
            }
        }
        g
    }

    #[test]
    fn new_refuses_bad_vcpu_counts() {
        assert_eq!(
            Vgic::new(GicVersion::V2, 0).unwrap_err(),
            VgicError::BadVcpuCount
        );
        assert!(Vgic::new(GicVersion::V3, 9).is_err());
        assert!(Vgic::new(GicVersion::V3, 8).is_ok());
    }

    #[test]
    fn v2_identification_registers() {
        let mut g = Vgic::new(GicVersion::V2, 4).unwrap();
        // ITLinesNumber 7 (256 INTIDs), CPUNumber 3 (four CPUs).
        assert_eq!(rd(&mut g, 0, 0x004), 7 | 3 << 5);
        assert_eq!(rd(&mut g, 0, 0x008), IIDR);
        assert_eq!(rd(&mut g, 0, 0xFE8) >> 4, 2);
        assert_eq!(rd(&mut g, 0, 0xFF0), 0x0D);
        assert_eq!(rd(&mut g, 0, 0xFFC), 0xB1);
        assert_eq!(g.unknown_accesses, 0);
    }

    #[test]
    fn v2_banked_target_bytes_read_the_current_cpu() {
        let mut g = Vgic::new(GicVersion::V2, 4).unwrap();
        assert_eq!(rd(&mut g, 0, 0x800), 0x0101_0101);
        assert_eq!(rd(&mut g, 2, 0x81C), 0x0404_0404);
        assert_eq!(g.read_distributor(3, 0x801, 1), 0x08);
        // Read-only: writes are ignored.
        wr(&mut g, 2, 0x800, 0xFFFF_FFFF);
        assert_eq!(rd(&mut g, 2, 0x800), 0x0404_0404);
        // SPI targets keep only implemented CPUs.
        g.write_distributor(0, 0x821, 1, 0xFF);
        assert_eq!(rd(&mut g, 0, 0x820), 0x0000_0F00);
    }

    #[test]
    fn priorities_are_byte_accessible_and_keep_five_bits() {
        let mut g = Vgic::new(GicVersion::V2, 2).unwrap();
        g.write_distributor(0, 0x400 + 33, 1, 0xFF);
        assert_eq!(g.read_distributor(0, 0x400 + 33, 1), 0xF8);
        assert_eq!(rd(&mut g, 0, 0x420), 0x0000_F800);
        assert_eq!(g.priority(0, 33), 0xF8);
        // Private priorities are banked per vCPU.
        g.write_distributor(1, 0x41B, 1, 0x80);
        assert_eq!(g.priority(1, 27), 0x80);
        assert_eq!(g.priority(0, 27), 0);
        // A halfword access to a byte register is not allowed.
        assert_eq!(g.read_distributor(0, 0x420, 2), 0);
        assert_eq!(g.unknown_accesses, 1);
    }

    #[test]
    fn enable_set_and_clear_registers() {
        let mut g = Vgic::new(GicVersion::V2, 1).unwrap();
        // SGIs start enabled.
        assert_eq!(rd(&mut g, 0, 0x100), 0xFFFF);
        wr(&mut g, 0, 0x104, 0b1010);
        wr(&mut g, 0, 0x104, 0b0100);
        assert_eq!(rd(&mut g, 0, 0x104), 0b1110);
        assert_eq!(rd(&mut g, 0, 0x184), 0b1110);
        wr(&mut g, 0, 0x184, 0b0010);
        assert_eq!(rd(&mut g, 0, 0x104), 0b1100);
        assert!(g.is_enabled(0, 35));
        assert!(!g.is_enabled(0, 33));
        // Active state is not modelled: reads 0, writes ignored.
        wr(&mut g, 0, 0x304, u32::MAX);
        assert_eq!(rd(&mut g, 0, 0x304), 0);
    }

    #[test]
    fn level_spi_is_injected_only_when_enabled_and_distributor_on() {
        let mut g = Vgic::new(GicVersion::V2, 1).unwrap();
        // Line high while the distributor is off: pending, not delivered.
        assert!(g.set_level(UART, true).is_empty());
        assert_eq!(rd(&mut g, 0, 0x204), 1 << 1);
        assert!(wr(&mut g, 0, 0x000, 1).is_empty()); // still disabled
        // Enabling it delivers it to the only CPU, group 0.
        assert_eq!(wr(&mut g, 0, 0x104, 1 << 1), [inject(0, UART, 0, false)]);
        // Disabling withdraws it.
        assert_eq!(
            wr(&mut g, 0, 0x184, 1 << 1),
            [Action::Withdraw {
                vcpu: 0,
                intid: UART
            }]
        );
        wr(&mut g, 0, 0x104, 1 << 1);
        // The line falling withdraws; pending reads follow the line.
        assert_eq!(
            StdVec::from_iter(g.set_level(UART, false)),
            [Action::Withdraw {
                vcpu: 0,
                intid: UART
            }]
        );
        assert_eq!(rd(&mut g, 0, 0x204), 0);
        assert!(g.set_level(UART, false).is_empty());
    }

    #[test]
    fn level_line_still_high_is_redelivered() {
        let mut g = linux_v2(2);
        wr(&mut g, 0, 0x104, 1 << 1);
        let once = StdVec::from_iter(g.set_level(UART, true));
        assert_eq!(once, [inject(0, UART, 0xa0, false)]);
        // The VMM re-reports the line after each UART access.
        assert_eq!(StdVec::from_iter(g.set_level(UART, true)), once);
        assert_eq!(StdVec::from_iter(g.resample(UART)), once);
        // Clearing the pending state of a level interrupt whose line is
        // high leaves it pending.
        wr(&mut g, 0, 0x284, 1 << 1);
        assert_eq!(rd(&mut g, 0, 0x204), 1 << 1);
        g.set_level(UART, false);
        assert!(g.resample(UART).is_empty());
    }

    #[test]
    fn edge_spi_is_handed_off_once() {
        let mut g = linux_v2(1);
        // ICFGR2 covers INTIDs 32..=47: make 40 edge-triggered.
        wr(&mut g, 0, 0xC08, 2 << (2 * 8));
        assert_eq!(rd(&mut g, 0, 0xC08), 2 << 16);
        wr(&mut g, 0, 0x104, 1 << 8);
        assert_eq!(
            StdVec::from_iter(g.set_level(40, true)),
            [inject(0, 40, 0xa0, false)]
        );
        // Staying high is not another edge, and no withdraw on the fall.
        assert!(g.set_level(40, true).is_empty());
        assert!(g.set_level(40, false).is_empty());
        assert_eq!(rd(&mut g, 0, 0x204), 0);
        // A write to ISPENDR makes it pending once more.
        assert_eq!(wr(&mut g, 0, 0x204, 1 << 8), [inject(0, 40, 0xa0, false)]);
    }

    #[test]
    fn sgi_and_ppi_configuration_is_fixed() {
        let mut g = Vgic::new(GicVersion::V2, 1).unwrap();
        assert_eq!(rd(&mut g, 0, 0xC00), 0xAAAA_AAAA);
        assert_eq!(rd(&mut g, 0, 0xC04), 0);
        wr(&mut g, 0, 0xC00, 0);
        wr(&mut g, 0, 0xC04, 0xFFFF_FFFF);
        assert_eq!(rd(&mut g, 0, 0xC00), 0xAAAA_AAAA);
        assert_eq!(rd(&mut g, 0, 0xC04), 0);
    }

    #[test]
    fn v2_spi_goes_to_its_lowest_target_and_follows_retargeting() {
        let mut g = linux_v2(4);
        wr(&mut g, 0, 0x104, 1 << 1);
        g.write_distributor(0, 0x821, 1, 0b1100);
        assert_eq!(
            StdVec::from_iter(g.set_level(UART, true)),
            [inject(2, UART, 0xa0, false)]
        );
        // Retargeting moves it: withdraw from 2, inject into 1.
        let moved = g.write_distributor(0, 0x821, 1, 0b0010);
        assert_eq!(
            StdVec::from_iter(moved),
            [
                Action::Withdraw {
                    vcpu: 2,
                    intid: UART
                },
                inject(1, UART, 0xa0, false)
            ]
        );
        // No target: withdrawn, nothing injected.
        assert_eq!(
            StdVec::from_iter(g.write_distributor(0, 0x821, 1, 0)),
            [Action::Withdraw {
                vcpu: 1,
                intid: UART
            }]
        );
    }

    #[test]
    fn groups_are_gated_by_their_enable_bits() {
        let mut g = linux_v2(1);
        wr(&mut g, 0, 0x084, 1 << 1); // UART in group 1
        wr(&mut g, 0, 0x104, 1 << 1);
        assert!(g.set_level(UART, true).is_empty()); // only group 0 enabled
        assert_eq!(wr(&mut g, 0, 0x000, 3), [inject(0, UART, 0xa0, true)]);
        assert_eq!(rd(&mut g, 0, 0x000), 3);
        // Moving it to group 0 re-injects with the new group.
        assert_eq!(wr(&mut g, 0, 0x084, 0), [inject(0, UART, 0xa0, false)]);
    }

    #[test]
    fn v2_sgir_target_filters_and_sources() {
        let mut g = linux_v2(4);
        let sgi = |vcpu, source| Action::Inject {
            vcpu,
            intid: 3,
            priority: 0xa0,
            group1: false,
            source: Some(source),
        };
        // Filter 0: the target list (CPUs 1 and 3; bit 7 does not exist).
        assert_eq!(
            wr(&mut g, 0, 0xF00, 0b1000_1010 << 16 | 3),
            [sgi(1, 0), sgi(3, 0)]
        );
        // Filter 1: everyone but the sender.
        assert_eq!(
            wr(&mut g, 2, 0xF00, 1 << 24 | 3),
            [sgi(0, 2), sgi(1, 2), sgi(3, 2)]
        );
        // Filter 2: the sender only. Filter 3 is reserved.
        assert_eq!(wr(&mut g, 1, 0xF00, 2 << 24 | 3), [sgi(1, 1)]);
        assert!(wr(&mut g, 1, 0xF00, 3 << 24 | 0xFF << 16 | 3).is_empty());
    }

    #[test]
    fn v2_sgi_pending_per_source_while_disabled() {
        let mut g = linux_v2(4);
        wr(&mut g, 1, 0x180, 1 << 5); // vCPU 1 disables SGI 5
        assert!(wr(&mut g, 0, 0xF00, 0b10 << 16 | 5).is_empty());
        assert!(wr(&mut g, 2, 0xF00, 0b10 << 16 | 5).is_empty());
        // SPENDSGIR1 byte 1 (SGI 5) shows sources 0 and 2 to vCPU 1 only.
        assert_eq!(g.read_distributor(1, 0xF25, 1), 0b101);
        assert_eq!(rd(&mut g, 1, 0xF24), 0b101 << 8);
        assert_eq!(rd(&mut g, 0, 0xF24), 0);
        assert_eq!(rd(&mut g, 1, 0x200), 1 << 5);
        // ISPENDR cannot set SGIs on a GICv2.
        assert!(wr(&mut g, 1, 0x200, 1 << 6).is_empty());
        assert_eq!(rd(&mut g, 1, 0x200), 1 << 5);
        // CPENDSGIR clears source 0; enabling delivers source 2 only.
        g.write_distributor(1, 0xF15, 1, 0b001);
        let delivered = wr(&mut g, 1, 0x100, 1 << 5);
        assert_eq!(
            delivered,
            [Action::Inject {
                vcpu: 1,
                intid: 5,
                priority: 0xa0,
                group1: false,
                source: Some(2)
            }]
        );
        assert_eq!(rd(&mut g, 1, 0x200), 0);
    }

    #[test]
    fn enabling_the_distributor_delivers_everything_pending_in_batches() {
        let mut g = Vgic::new(GicVersion::V2, 1).unwrap();
        for n in 1..8 {
            wr(&mut g, 0, 0x100 + 4 * n, u32::MAX);
        }
        for intid in 32..256 {
            g.set_level(intid, true);
        }
        let mut seen = StdVec::new();
        seen.extend(wr(&mut g, 0, 0x000, 1));
        assert_eq!(seen.len(), ACTION_CAPACITY - 1);
        let mut rounds = 0;
        while g.has_pending_actions() {
            seen.extend(g.take_actions());
            rounds += 1;
            assert!(rounds < 20);
        }
        let intids: StdVec<u16> = seen
            .iter()
            .map(|a| match a {
                Action::Inject { intid, .. } => *intid,
                Action::Withdraw { .. } => panic!("unexpected {a:?}"),
            })
            .collect();
        assert_eq!(intids, StdVec::from_iter(32..256));
    }

    #[test]
    fn v3_distributor_registers() {
        let mut g = Vgic::new(GicVersion::V3, 2).unwrap();
        // ARE and DS read as one; the group enables are writable.
        assert_eq!(rd(&mut g, 0, 0x000), CTLR_ARE | CTLR_DS);
        wr(&mut g, 0, 0x000, 0x13);
        assert_eq!(rd(&mut g, 0, 0x000), CTLR_ARE | CTLR_DS | 0x3);
        let typer = rd(&mut g, 0, 0x004);
        assert_eq!(typer & 0x1F, 7);
        assert_eq!((typer >> 19) & 0x1F, 9);
        assert_eq!(typer & (1 << 17), 0, "no LPIs");
        assert_eq!(rd(&mut g, 0, 0xFFE8) >> 4 & 0xF, 3);
        // Affinity routing: the SGI/PPI parts are RAZ/WI, not unknown.
        wr(&mut g, 0, 0x100, u32::MAX);
        assert_eq!(rd(&mut g, 0, 0x100), 0);
        assert_eq!(rd(&mut g, 0, 0x800), 0);
        assert_eq!(rd(&mut g, 0, 0xF00), 0);
        // Group 1 by default.
        assert_eq!(rd(&mut g, 0, 0x084), u32::MAX);
        assert_eq!(g.unknown_accesses, 0);
        // The GICv2 ID offsets are not there on a GICv3.
        assert_eq!(rd(&mut g, 0, 0xFE8), 0);
        assert_eq!(g.unknown_accesses, 1);
    }

    #[test]
    fn v3_irouter_64_and_32_bit_accesses_route_spis() {
        let mut g = linux_v3(4);
        let irouter = 0x6000 + 8 * u64::from(UART);
        assert_eq!(irouter, 0x6108);
        g.write_distributor(0, 0x104, 4, 1 << 1);
        assert_eq!(
            StdVec::from_iter(g.set_level(UART, true)),
            [inject(0, UART, 0xa0, true)]
        );
        let moved = g.write_distributor(0, irouter, 8, 3);
        assert_eq!(
            StdVec::from_iter(moved),
            [
                Action::Withdraw {
                    vcpu: 0,
                    intid: UART
                },
                inject(3, UART, 0xa0, true)
            ]
        );
        assert_eq!(g.read_distributor(0, irouter, 8), 3);
        // Aff1 != 0 routes to a PE that does not exist.
        let gone = g.write_distributor(0, irouter, 4, 0x100);
        assert_eq!(
            StdVec::from_iter(gone),
            [Action::Withdraw {
                vcpu: 3,
                intid: UART
            }]
        );
        // Aff3 lives in the upper word; IRM (bit 31) reads as zero.
        g.write_distributor(0, irouter, 4, 0x8000_0001);
        g.write_distributor(0, irouter + 4, 4, 0x7);
        assert_eq!(g.read_distributor(0, irouter, 8), 0x7_0000_0001);
        assert!(g.set_level(UART, true).is_empty());
        // INTIDs below 32 have no IROUTER.
        assert_eq!(g.read_distributor(0, 0x6000, 8), 0);
        assert_eq!(g.unknown_accesses, 1);
    }

    #[test]
    fn v3_redistributor_typer_and_waker() {
        let mut g = Vgic::new(GicVersion::V3, 3).unwrap();
        for v in 0..3u64 {
            let typer = g.read_redistributor(v * GICR_STRIDE + 8, 8);
            assert_eq!(typer >> 32, v, "affinity = vCPU index in Aff0");
            assert_eq!((typer >> 8) & 0xFFFF, v, "processor number");
            assert_eq!(typer & GICR_TYPER_LAST != 0, v == 2, "Last");
            assert_eq!(g.read_redistributor(v * GICR_STRIDE + 0xC, 4), typer >> 32);
            assert_eq!(rd_r(&mut g, v * GICR_STRIDE + 0xFFE8) >> 4 & 0xF, 3);
            assert_eq!(rd_r(&mut g, v * GICR_STRIDE + 4), IIDR);
        }
        // Linux's wake-up: clear ProcessorSleep, wait for ChildrenAsleep.
        let waker = GICR_STRIDE + 0x14;
        assert_eq!(rd_r(&mut g, waker), 0b110);
        g.write_redistributor(waker, 4, 0);
        assert_eq!(rd_r(&mut g, waker), 0);
        assert_eq!(rd_r(&mut g, 0x14), 0b110, "vCPU 0 still asleep");
        g.write_redistributor(waker, 4, 0b010);
        assert_eq!(rd_r(&mut g, waker), 0b110);
        // Beyond the last vCPU there is nothing.
        assert_eq!(g.read_redistributor(3 * GICR_STRIDE + 8, 8), 0);
        assert_eq!(g.unknown_accesses, 1);
    }

    #[test]
    fn v3_redistributor_sgi_frame_banks_per_vcpu() {
        let mut g = linux_v3(2);
        let sgi1 = GICR_STRIDE + 0x1_0000;
        // Enable PPI 27 on vCPU 1 only.
        g.write_redistributor(sgi1 + 0x100, 4, 1 << 27);
        assert!(g.is_enabled(1, 27));
        assert!(!g.is_enabled(0, 27));
        assert_eq!(rd_r(&mut g, sgi1 + 0x100), 0xFFFF | 1 << 27);
        g.write_redistributor(sgi1 + 0x180, 4, 1 << 27);
        assert!(!g.is_enabled(1, 27));
        // Byte priority access and fixed configuration.
        g.write_redistributor(sgi1 + 0x41B, 1, 0x80);
        assert_eq!(g.priority(1, 27), 0x80);
        assert_eq!(rd_r(&mut g, sgi1 + 0xC00), 0xAAAA_AAAA);
        assert_eq!(rd_r(&mut g, sgi1 + 0xC04), 0);
        // ISPENDR0 sets an SGI pending directly on a GICv3.
        let got = StdVec::from_iter(g.write_redistributor(sgi1 + 0x200, 4, 1 << 2));
        assert_eq!(got, [inject(1, 2, 0xa0, true)]);
        assert_eq!(g.unknown_accesses, 0);
    }

    #[test]
    fn v3_ppi_line_goes_to_its_own_vcpu() {
        let mut g = linux_v3(2);
        g.write_redistributor(GICR_STRIDE + 0x1_0100, 4, 1 << 23);
        assert!(g.set_private_level(0, 23, true).is_empty(), "disabled on 0");
        assert_eq!(
            StdVec::from_iter(g.set_private_level(1, 23, true)),
            [inject(1, 23, 0xa0, true)]
        );
        assert!(g.set_private_level(1, 40, true).is_empty(), "not a PPI");
        assert!(g.set_private_level(5, 23, true).is_empty(), "no vCPU 5");
    }

    #[test]
    fn sgi1r_decoding() {
        let value: u64 =
            0xAB << 48 | 1 << 40 | 0x3 << 44 | 0xCD << 32 | 0x9 << 24 | 0xEF << 16 | 0x8421;
        let d = Sgi1r::decode(value);
        assert_eq!(
            d,
            Sgi1r {
                intid: 9,
                broadcast: true,
                target_list: 0x8421,
                range_selector: 3,
                aff1: 0xEF,
                aff2: 0xCD,
                aff3: 0xAB,
            }
        );
    }

    #[test]
    fn sgi1r_targets_by_list_or_broadcast() {
        let mut g = linux_v3(4);
        let got = StdVec::from_iter(g.write_sgi1r(0, 1 << 24 | 0b1_0110));
        assert_eq!(got, [inject(1, 1, 0xa0, true), inject(2, 1, 0xa0, true)]);
        let got = StdVec::from_iter(g.write_sgi1r(2, 1 << 40 | 7 << 24));
        assert_eq!(
            got,
            [
                inject(0, 7, 0xa0, true),
                inject(1, 7, 0xa0, true),
                inject(3, 7, 0xa0, true)
            ]
        );
        // Aff1 or RS that match no vCPU send nothing.
        assert!(g.write_sgi1r(0, 1 << 16 | 1).is_empty());
        assert!(g.write_sgi1r(0, 1 << 44 | 1).is_empty());
        // A GICv2 ignores the system register.
        let mut v2 = linux_v2(2);
        assert!(v2.write_sgi1r(0, 0b10).is_empty());
    }

    #[test]
    fn garbage_accesses_never_panic_and_are_counted() {
        for version in [GicVersion::V2, GicVersion::V3] {
            let mut g = Vgic::new(version, 2).unwrap();
            let offsets = [
                0,
                3,
                0x7F,
                0xFFF,
                0x1000,
                0x7FF8,
                0xFFFF,
                u64::MAX - 3,
                u64::MAX,
            ];
            for &o in &offsets {
                for size in [0, 1, 2, 3, 4, 8, 255] {
                    g.read_distributor(0, o, size);
                    g.write_distributor(1, o, size, u64::MAX);
                    g.read_redistributor(o, size);
                    g.write_redistributor(o, size, u64::MAX);
                    g.read_distributor(9, o, size);
                }
            }
            assert!(g.unknown_accesses > 0);
            // Bad vCPU indices are refused, not used.
            assert!(g.write_distributor(7, 0x000, 4, 1).is_empty());
            assert!(!g.is_enabled(200, 0));
            assert!(g.set_level(300, true).is_empty());
            assert!(g.set_level(5, true).is_empty());
        }
    }
}
