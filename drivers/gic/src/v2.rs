//! GICv2 (and the GIC-400): a memory-mapped distributor shared by all cores
//! and a memory-mapped CPU interface whose registers are banked per core.
//!
//! Security Extensions. A GIC-400 has them; QEMU's `virt` GICv2 does not
//! (unless the machine is started with `secure=on`). EL2 is Non-secure, so on
//! a GIC with them the hypervisor sees the Non-secure views: `GICD_IGROUPR` is
//! RAZ/WI (the firmware has already put every interrupt it gives to the
//! Non-secure side into Group 1), and `GICD_CTLR` and `GICC_CTLR` have a
//! single enable, Group 1, in bit 0. Without them, there are two enables
//! (Group 0 in bit 0, Group 1 in bit 1), the driver puts everything into
//! Group 1 itself, and it sets `GICC_CTLR.AckCtl`: without that bit a read of
//! `GICC_IAR` returns the spurious INTID 1022 for a pending Group 1
//! interrupt, because such a GIC treats every access as Secure (IHI 0048B,
//! 4.4.4 and 3.7). `GICD_TYPER.SecurityExtn` says which case applies.

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};
use tock_registers::{register_bitfields, register_structs};

use crate::{
    Acknowledged, DEFAULT_PRIORITY, GicError, INTID_LIMIT, PRIVATE_INTERRUPT_COUNT, SGI_COUNT, cpu,
    lines_from_typer,
};

register_bitfields! {u32,
    /// GICD_CTLR. Without Security Extensions (or Secure view) both enables;
    /// in the Non-secure view, bit 0 enables Group 1 and bit 1 is reserved.
    GICD_CTLR [
        ENABLE_GROUP0 OFFSET(0) NUMBITS(1) [],
        ENABLE_GROUP1 OFFSET(1) NUMBITS(1) [],
    ],
    /// GICD_TYPER.
    GICD_TYPER [
        IT_LINES_NUMBER OFFSET(0) NUMBITS(5) [],
        CPU_NUMBER OFFSET(5) NUMBITS(3) [],
        SECURITY_EXTENSIONS OFFSET(10) NUMBITS(1) [],
    ],
    /// GICD_SGIR.
    GICD_SGIR [
        SGI_INTID OFFSET(0) NUMBITS(4) [],
        NSATT OFFSET(15) NUMBITS(1) [],
        CPU_TARGET_LIST OFFSET(16) NUMBITS(8) [],
        TARGET_LIST_FILTER OFFSET(24) NUMBITS(2) [
            UseTargetList = 0,
            AllButSelf = 1,
            SelfOnly = 2,
        ],
    ],
    /// GICC_CTLR. The field names are those of the layout without Security
    /// Extensions; in the Non-secure view bit 0 enables Group 1 and bits 1
    /// to 4 are reserved.
    GICC_CTLR [
        ENABLE_GROUP0 OFFSET(0) NUMBITS(1) [],
        ENABLE_GROUP1 OFFSET(1) NUMBITS(1) [],
        ACK_CTL OFFSET(2) NUMBITS(1) [],
        FIQ_EN OFFSET(3) NUMBITS(1) [],
        EOI_MODE OFFSET(9) NUMBITS(1) [],
    ],
}

register_structs! {
    /// The distributor registers this driver uses (IHI 0048B, table 4-1).
    DistributorRegisters {
        (0x000 => ctlr: ReadWrite<u32, GICD_CTLR::Register>),
        (0x004 => typer: ReadOnly<u32, GICD_TYPER::Register>),
        (0x008 => _reserved0),
        (0x080 => igroupr: [ReadWrite<u32>; 32]),
        (0x100 => isenabler: [ReadWrite<u32>; 32]),
        (0x180 => icenabler: [ReadWrite<u32>; 32]),
        (0x200 => _reserved1),
        (0x400 => ipriorityr: [ReadWrite<u8>; 1020]),
        (0x7fc => _reserved2),
        (0x800 => itargetsr: [ReadWrite<u8>; 1020]),
        (0xbfc => _reserved3),
        (0xf00 => sgir: WriteOnly<u32, GICD_SGIR::Register>),
        (0xf04 => @END),
    },

    /// The CPU interface registers this driver uses (IHI 0048B, table 4-2).
    CpuInterfaceRegisters {
        (0x000 => ctlr: ReadWrite<u32, GICC_CTLR::Register>),
        (0x004 => pmr: ReadWrite<u32>),
        (0x008 => bpr: ReadWrite<u32>),
        (0x00c => iar: ReadOnly<u32>),
        (0x010 => eoir: WriteOnly<u32>),
        (0x014 => @END),
    }
}

/// A GICv2: distributor and CPU interface.
///
/// # Invariants
///
/// `distributor` and `cpu_interface` are the addresses of the GIC's mapped
/// register blocks, mapped for the rest of the program and programmed by
/// nothing else (established by [`GicV2::new`]).
#[derive(Debug)]
pub struct GicV2 {
    distributor: usize,
    cpu_interface: usize,
}

impl GicV2 {
    /// Takes over the GICv2 whose distributor (`GICD`) and CPU interface
    /// (`GICC`) register blocks are at these addresses. Nothing is written.
    ///
    /// The value may be shared by all cores (it is `Sync`): the CPU interface
    /// and the private interrupts' registers are banked, so each core reaches
    /// its own through the same addresses.
    ///
    /// # Safety
    ///
    /// `distributor` must be the address of the GIC's distributor block (at
    /// least 4 KiB) and `cpu_interface` that of its CPU interface block (at
    /// least 4 KiB), both mapped as Device memory for the rest of the program.
    /// Nothing else may program this GIC while the value exists (the firmware
    /// is done with it; a second `GicV2` on the same GIC counts as something
    /// else).
    pub unsafe fn new(distributor: usize, cpu_interface: usize) -> Self {
        Self {
            distributor,
            cpu_interface,
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

    fn cpu_interface(&self) -> &CpuInterfaceRegisters {
        // SAFETY: as in `distributor`, for the CPU interface block.
        unsafe { &*(self.cpu_interface as *const CpuInterfaceRegisters) }
    }

    fn has_security_extensions(&self) -> bool {
        self.distributor()
            .typer
            .is_set(GICD_TYPER::SECURITY_EXTENSIONS)
    }

    /// The number of interrupt lines, from `GICD_TYPER.ITLinesNumber`:
    /// INTIDs 0 to this (exclusive) exist. At most 1020.
    pub fn number_of_interrupts(&self) -> u32 {
        lines_from_typer(self.distributor().typer.read(GICD_TYPER::IT_LINES_NUMBER))
    }

    /// Configures the distributor: called once, by the boot core, before the
    /// cores call [`init_cpu_interface`](Self::init_cpu_interface).
    ///
    /// With the distributor disabled, it puts every interrupt into Group 1
    /// (no effect where `GICD_IGROUPR` is RAZ/WI, see the module
    /// documentation), disables every SPI, gives every interrupt priority
    /// [`DEFAULT_PRIORITY`], and targets every SPI at CPU interface 0. The
    /// private interrupts (SGIs, PPIs) configured here are the boot core's
    /// own (banked). Edge/level configuration is left as it is. Then it
    /// enables the distributor for both groups (for Group 1 alone in the
    /// Non-secure view).
    pub fn init_distributor(&self) {
        let distributor = self.distributor();
        distributor.ctlr.set(0);

        let lines = self.number_of_interrupts();
        let words = usize::try_from(lines.div_ceil(32)).unwrap_or(0);
        for word in distributor.igroupr.iter().take(words) {
            word.set(u32::MAX);
        }
        // Word 0 holds the private interrupts: left to `init_cpu_interface`.
        for word in distributor.icenabler.iter().take(words).skip(1) {
            word.set(u32::MAX);
        }
        let lines = usize::try_from(lines).unwrap_or(0);
        for priority in distributor.ipriorityr.iter().take(lines) {
            priority.set(DEFAULT_PRIORITY);
        }
        let first_spi = usize::try_from(PRIVATE_INTERRUPT_COUNT).unwrap_or(0);
        for target in distributor.itargetsr.iter().take(lines).skip(first_spi) {
            target.set(1 << 0);
        }

        if self.has_security_extensions() {
            // Non-secure view: bit 0 is the Group 1 enable.
            distributor.ctlr.write(GICD_CTLR::ENABLE_GROUP0::SET);
        } else {
            distributor
                .ctlr
                .write(GICD_CTLR::ENABLE_GROUP0::SET + GICD_CTLR::ENABLE_GROUP1::SET);
        }
    }

    /// Configures the calling core's banked private interrupts and its CPU
    /// interface; called by each core (the boot core included) after
    /// [`init_distributor`](Self::init_distributor).
    ///
    /// The SGIs and PPIs go into Group 1 with priority [`DEFAULT_PRIORITY`];
    /// the PPIs are disabled (the hypervisor enables those it uses); the
    /// SGIs' enables are left alone (often fixed at 1). The CPU interface
    /// gets priority mask `0xff` (everything passes), binary point 0, and
    /// `EOImode` 0. Without Security Extensions it signals both groups as IRQ
    /// (`FIQEn` 0) with `AckCtl` set; in the Non-secure view it signals
    /// Group 1 (bit 0). See the module documentation.
    pub fn init_cpu_interface(&self) {
        let distributor = self.distributor();
        if let Some(word) = distributor.igroupr.first() {
            word.set(u32::MAX);
        }
        if let Some(word) = distributor.icenabler.first() {
            word.set(0xffff_0000);
        }
        let private = usize::try_from(PRIVATE_INTERRUPT_COUNT).unwrap_or(0);
        for priority in distributor.ipriorityr.iter().take(private) {
            priority.set(DEFAULT_PRIORITY);
        }

        let cpu_interface = self.cpu_interface();
        cpu_interface.pmr.set(0xff);
        cpu_interface.bpr.set(0);
        if self.has_security_extensions() {
            // Non-secure view: bit 0 is the Group 1 enable, EOImodeNS (bit 9)
            // stays 0.
            cpu_interface.ctlr.write(GICC_CTLR::ENABLE_GROUP0::SET);
        } else {
            cpu_interface.ctlr.write(
                GICC_CTLR::ENABLE_GROUP0::SET
                    + GICC_CTLR::ENABLE_GROUP1::SET
                    + GICC_CTLR::ACK_CTL::SET,
            );
        }
    }

    /// Checks that `intid` names an interrupt line and returns the index of
    /// its 32-bit word and its bit in that word.
    fn locate(&self, intid: u32) -> Result<(usize, u32), GicError> {
        let limit = self.number_of_interrupts();
        if intid >= limit || intid >= INTID_LIMIT {
            return Err(GicError::InvalidInterrupt { intid, limit });
        }
        let word =
            usize::try_from(intid / 32).map_err(|_| GicError::InvalidInterrupt { intid, limit })?;
        Ok((word, 1 << (intid % 32)))
    }

    /// Enables `intid`. For an SGI or PPI, the calling core's (banked).
    pub fn enable_interrupt(&self, intid: u32) -> Result<(), GicError> {
        let (word, bit) = self.locate(intid)?;
        let limit = self.number_of_interrupts();
        let register = self
            .distributor()
            .isenabler
            .get(word)
            .ok_or(GicError::InvalidInterrupt { intid, limit })?;
        register.set(bit);
        Ok(())
    }

    /// Disables `intid`. For an SGI or PPI, the calling core's (banked).
    pub fn disable_interrupt(&self, intid: u32) -> Result<(), GicError> {
        let (word, bit) = self.locate(intid)?;
        let limit = self.number_of_interrupts();
        let register = self
            .distributor()
            .icenabler
            .get(word)
            .ok_or(GicError::InvalidInterrupt { intid, limit })?;
        register.set(bit);
        Ok(())
    }

    /// Acknowledges the calling core's highest-priority pending interrupt
    /// (reads `GICC_IAR`); `None` for a spurious INTID (1020 to 1023).
    pub fn acknowledge(&self) -> Option<Acknowledged> {
        Acknowledged::from_v2_iar(self.cpu_interface().iar.get())
    }

    /// Completes an interrupt this core acknowledged: writes the `GICC_IAR`
    /// value back to `GICC_EOIR` (priority drop and deactivation).
    pub fn end_of_interrupt(&self, acknowledged: Acknowledged) {
        self.cpu_interface().eoir.set(acknowledged.raw);
    }

    /// Sends SGI `sgi` (0 to 15) to the CPU interfaces in `target_list` (bit
    /// n for interface n; an empty list sends nothing). Earlier stores to
    /// memory are made visible to the other cores first.
    pub fn send_sgi(&self, sgi: u8, target_list: u8) -> Result<(), GicError> {
        if u32::from(sgi) >= SGI_COUNT {
            return Err(GicError::InvalidInterrupt {
                intid: u32::from(sgi),
                limit: SGI_COUNT,
            });
        }
        cpu::order_stores_before_sgi();
        self.distributor().sgir.write(
            GICD_SGIR::TARGET_LIST_FILTER::UseTargetList
                + GICD_SGIR::CPU_TARGET_LIST.val(u32::from(target_list))
                + GICD_SGIR::SGI_INTID.val(u32::from(sgi)),
        );
        Ok(())
    }

    /// The calling core's CPU interface number (0 to 7), from its own bit in
    /// the banked `GICD_ITARGETSR0`. 0 on a uniprocessor GIC, where the
    /// register reads as zero.
    pub fn cpu_interface_number(&self) -> u8 {
        let own = self
            .distributor()
            .itargetsr
            .first()
            .map_or(0, |target| target.get());
        if own == 0 {
            0
        } else {
            u8::try_from(own.trailing_zeros()).unwrap_or(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeBlock;

    const CTLR: usize = 0x000;
    const TYPER: usize = 0x004;
    const IGROUPR: usize = 0x080;
    const ISENABLER: usize = 0x100;
    const ICENABLER: usize = 0x180;
    const IPRIORITYR: usize = 0x400;
    const ITARGETSR: usize = 0x800;
    const SGIR: usize = 0xf00;
    const GICC_CTLR: usize = 0x000;
    const GICC_PMR: usize = 0x004;
    const GICC_BPR: usize = 0x008;
    const GICC_IAR: usize = 0x00c;
    const GICC_EOIR: usize = 0x010;

    const SECURITY_EXTENSIONS: u32 = 1 << 10;

    struct Fixture {
        distributor: FakeBlock,
        cpu_interface: FakeBlock,
        gic: GicV2,
    }

    /// A GIC with `32 * (it_lines_number + 1)` lines.
    fn fixture(typer: u32) -> Fixture {
        let distributor = FakeBlock::new(0x1000);
        let cpu_interface = FakeBlock::new(0x1000);
        distributor.write32(TYPER, typer);
        // SAFETY: both fake blocks are live for the whole test and used by
        // this `GicV2` alone.
        let gic = unsafe { GicV2::new(distributor.base(), cpu_interface.base()) };
        Fixture {
            distributor,
            cpu_interface,
            gic,
        }
    }

    #[test]
    fn distributor_init_configures_every_line() {
        let f = fixture(2); // 96 lines
        f.distributor.write32(CTLR, 0x3);
        f.distributor.write32(IGROUPR + 12, 0x1234); // beyond the lines
        f.gic.init_distributor();

        assert_eq!(f.distributor.read32(CTLR), 0b11);
        for word in 0..3 {
            assert_eq!(
                f.distributor.read32(IGROUPR + 4 * word),
                u32::MAX,
                "IGROUPR{word}"
            );
        }
        assert_eq!(f.distributor.read32(IGROUPR + 12), 0x1234);
        assert_eq!(
            f.distributor.read32(ICENABLER),
            0,
            "private enables are per core"
        );
        assert_eq!(f.distributor.read32(ICENABLER + 4), u32::MAX);
        assert_eq!(f.distributor.read32(ICENABLER + 8), u32::MAX);
        assert_eq!(f.distributor.read32(ICENABLER + 12), 0);
        for intid in 0..96 {
            assert_eq!(
                f.distributor.read8(IPRIORITYR + intid),
                0xa0,
                "priority {intid}"
            );
        }
        assert_eq!(f.distributor.read8(IPRIORITYR + 96), 0);
        for intid in 0..32 {
            assert_eq!(f.distributor.read8(ITARGETSR + intid), 0, "target {intid}");
        }
        for intid in 32..96 {
            assert_eq!(f.distributor.read8(ITARGETSR + intid), 1, "target {intid}");
        }
        assert_eq!(f.distributor.read8(ITARGETSR + 96), 0);
    }

    #[test]
    fn distributor_init_with_security_extensions_enables_bit_0_only() {
        let f = fixture(SECURITY_EXTENSIONS);
        f.gic.init_distributor();
        assert_eq!(f.distributor.read32(CTLR), 0b01);
    }

    #[test]
    fn cpu_interface_init_configures_banked_interrupts_and_interface() {
        let f = fixture(2);
        f.gic.init_cpu_interface();
        assert_eq!(f.distributor.read32(IGROUPR), u32::MAX);
        assert_eq!(f.distributor.read32(ICENABLER), 0xffff_0000);
        for intid in 0..32 {
            assert_eq!(f.distributor.read8(IPRIORITYR + intid), 0xa0);
        }
        assert_eq!(f.distributor.read8(IPRIORITYR + 32), 0);
        assert_eq!(f.cpu_interface.read32(GICC_PMR), 0xff);
        assert_eq!(f.cpu_interface.read32(GICC_BPR), 0);
        assert_eq!(
            f.cpu_interface.read32(GICC_CTLR),
            0b111,
            "Grp0, Grp1, AckCtl"
        );
    }

    #[test]
    fn cpu_interface_init_with_security_extensions_enables_bit_0_only() {
        let f = fixture(SECURITY_EXTENSIONS);
        f.cpu_interface.write32(GICC_BPR, 3);
        f.gic.init_cpu_interface();
        assert_eq!(f.cpu_interface.read32(GICC_CTLR), 0b1);
        assert_eq!(f.cpu_interface.read32(GICC_BPR), 0);
    }

    #[test]
    fn number_of_interrupts_comes_from_typer() {
        assert_eq!(fixture(0).gic.number_of_interrupts(), 32);
        assert_eq!(
            fixture(SECURITY_EXTENSIONS | 7).gic.number_of_interrupts(),
            256
        );
        assert_eq!(fixture(31).gic.number_of_interrupts(), 1020);
    }

    #[test]
    fn enable_and_disable_write_one_bit() {
        let f = fixture(2);
        f.gic.enable_interrupt(95).unwrap();
        assert_eq!(f.distributor.read32(ISENABLER + 8), 1 << 31);
        f.gic.enable_interrupt(27).unwrap();
        assert_eq!(f.distributor.read32(ISENABLER), 1 << 27);
        f.gic.disable_interrupt(33).unwrap();
        assert_eq!(f.distributor.read32(ICENABLER + 4), 1 << 1);
    }

    #[test]
    fn invalid_intids_are_refused_without_writing() {
        let f = fixture(2);
        for intid in [96, 1019, 1020, 1023, u32::MAX] {
            assert_eq!(
                f.gic.enable_interrupt(intid),
                Err(GicError::InvalidInterrupt { intid, limit: 96 })
            );
            assert!(f.gic.disable_interrupt(intid).is_err());
        }
        let all = fixture(31);
        assert_eq!(
            all.gic.enable_interrupt(1020),
            Err(GicError::InvalidInterrupt {
                intid: 1020,
                limit: 1020
            })
        );
        for word in 0..32 {
            assert_eq!(f.distributor.read32(ISENABLER + 4 * word), 0);
            assert_eq!(f.distributor.read32(ICENABLER + 4 * word), 0);
            assert_eq!(all.distributor.read32(ISENABLER + 4 * word), 0);
        }
    }

    #[test]
    fn acknowledge_and_end_of_interrupt() {
        let f = fixture(2);
        f.cpu_interface.write32(GICC_IAR, 1023);
        assert_eq!(f.gic.acknowledge(), None);
        f.cpu_interface.write32(GICC_IAR, 1022);
        assert_eq!(f.gic.acknowledge(), None);

        f.cpu_interface.write32(GICC_IAR, (2 << 10) | 1);
        let sgi = f.gic.acknowledge().unwrap();
        assert_eq!((sgi.intid(), sgi.sgi_source()), (1, Some(2)));
        f.gic.end_of_interrupt(sgi);
        assert_eq!(f.cpu_interface.read32(GICC_EOIR), (2 << 10) | 1);

        f.cpu_interface.write32(GICC_IAR, 33);
        let spi = f.gic.acknowledge().unwrap();
        assert_eq!(spi.intid(), 33);
        f.gic.end_of_interrupt(spi);
        assert_eq!(f.cpu_interface.read32(GICC_EOIR), 33);
    }

    #[test]
    fn send_sgi_encodes_target_list() {
        let f = fixture(2);
        f.gic.send_sgi(3, 0b0000_0110).unwrap();
        assert_eq!(f.distributor.read32(SGIR), 0x0006_0003);
        f.gic.send_sgi(15, 0x80).unwrap();
        assert_eq!(f.distributor.read32(SGIR), 0x0080_000f);
        assert_eq!(
            f.gic.send_sgi(16, 1),
            Err(GicError::InvalidInterrupt {
                intid: 16,
                limit: 16
            })
        );
        assert_eq!(f.distributor.read32(SGIR), 0x0080_000f);
    }

    #[test]
    fn cpu_interface_number_comes_from_banked_itargetsr0() {
        let f = fixture(2);
        assert_eq!(f.gic.cpu_interface_number(), 0);
        f.distributor.write32(ITARGETSR, 0x0404_0404);
        assert_eq!(f.gic.cpu_interface_number(), 2);
        f.distributor.write32(ITARGETSR, 0x8080_8080);
        assert_eq!(f.gic.cpu_interface_number(), 7);
    }
}
