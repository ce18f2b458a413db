//! The guest's device tree: a QEMU-`virt`-like machine with RAM, N
//! Cortex-A72 vCPUs started through PSCI over HVC, the architected timer, a
//! GICv2 or GICv3, one PL011 UART and `/chosen`.
//!
//! Addresses and interrupts are QEMU `virt`'s (BOARDS.md), so a kernel
//! configured for `virt` finds everything where it expects:
//!
//! | node | reg | interrupts |
//! | --- | --- | --- |
//! | `/intc@8000000` GICv2 | GICD `0x0800_0000`+`0x1_0000`, GICC `0x0801_0000`+`0x2000` | — |
//! | `/intc@8000000` GICv3 | GICD `0x0800_0000`+`0x1_0000`, GICR `0x080a_0000`+`0x2_0000`×N | — |
//! | `/pl011@9000000` | `0x0900_0000`+`0x1000` | SPI 1 (INTID 33), level high |
//! | `/timer` | — | PPIs 13, 14, 11, 10 (INTIDs 29, 30, 27, 26), level high |
//!
//! The GICv2 CPU interface window is two pages: the hypervisor maps the
//! hardware GICV there. The timer's interrupt flags carry the GICv2 PPI CPU
//! mask (one bit per vCPU, e.g. `0xf04` for four), as QEMU writes them; for
//! GICv3, which has no such mask, QEMU writes plain `4` and so does this.
//!
//! What it deliberately does not describe: an ITS or GICv2m (no MSIs), the
//! GIC maintenance interrupt and hypervisor interfaces (the guest runs at
//! EL1), virtio-mmio slots, flash, RTC, GPIO, PCIe, `fw-cfg`, KASLR and RNG
//! seeds, and CPU idle states (so `CPU_SUSPEND` is never used for power-down).

use core::fmt::Write;

use heapless::String;

use crate::fdt_writer::{FdtError, FdtWriter};

/// Guest-physical base of the GIC distributor.
pub const GICD_BASE: u64 = 0x0800_0000;
/// Size of the GIC distributor window.
pub const GICD_SIZE: u64 = 0x1_0000;
/// Guest-physical base of the GICv2 CPU interface (the hardware GICV).
pub const GICC_BASE: u64 = 0x0801_0000;
/// Size of the GICv2 CPU interface window.
pub const GICC_SIZE: u64 = 0x2000;
/// Guest-physical base of the GICv3 redistributors.
pub const GICR_BASE: u64 = 0x080A_0000;
/// Size of one vCPU's GICv3 redistributor.
pub const GICR_STRIDE: u64 = 0x2_0000;
/// Guest-physical base of the PL011.
pub const UART_BASE: u64 = 0x0900_0000;
/// Size of the PL011 window.
pub const UART_SIZE: u64 = 0x1000;
/// The PL011's INTID (SPI 1).
pub const UART_INTID: u16 = 33;
/// Frequency of the fixed `apb-pclk` clock.
pub const APB_CLOCK_HZ: u32 = 24_000_000;
/// Phandle of the clock node.
pub const CLOCK_PHANDLE: u32 = 0x8000;
/// Phandle of the interrupt controller.
pub const GIC_PHANDLE: u32 = 0x8001;
/// The most vCPUs a guest may have.
pub const MAX_VCPUS: u8 = 8;

/// `interrupts` cell: SPI.
const GIC_SPI: u32 = 0;
/// `interrupts` cell: PPI.
const GIC_PPI: u32 = 1;
/// `interrupts` flags: level-triggered, active high.
const IRQ_LEVEL_HIGH: u32 = 4;
/// The UART's node name.
const UART_NODE: &str = "pl011@9000000";
/// The UART's path, for `stdout-path`.
const UART_PATH: &str = "/pl011@9000000";

/// What the guest looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestConfig<'a> {
    /// Guest-physical base of RAM.
    pub ram_base: u64,
    /// RAM size in bytes.
    pub ram_size: u64,
    /// Number of vCPUs (1..=8).
    pub vcpus: u8,
    /// GIC architecture version: 2 or 3.
    pub gic_version: u8,
    /// The kernel command line.
    pub bootargs: &'a str,
    /// The initrd's guest-physical `(start, end)`, end exclusive.
    pub initrd: Option<(u64, u64)>,
}

/// Why no device tree was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtError {
    /// `vcpus`, `gic_version`, RAM or the initrd range is invalid.
    BadConfig,
    /// Writing failed (typically [`FdtError::BufferTooSmall`]).
    Fdt(FdtError),
}

impl From<FdtError> for DtError {
    fn from(e: FdtError) -> Self {
        Self::Fdt(e)
    }
}

/// Writes the guest's device tree into `buf`; returns its size.
pub fn build(config: &GuestConfig<'_>, buf: &mut [u8]) -> Result<usize, DtError> {
    validate(config)?;
    let mut w = FdtWriter::new(buf)?;
    w.begin_node("")?;
    w.property_string("compatible", "linux,dummy-virt")?;
    w.property_string("model", "linux,dummy-virt")?;
    w.property_u32("#address-cells", 2)?;
    w.property_u32("#size-cells", 2)?;
    w.property_u32("interrupt-parent", GIC_PHANDLE)?;

    let mut name: String<32> = String::new();
    node_name(&mut name, "memory", config.ram_base)?;
    w.begin_node(&name)?;
    w.property_string("device_type", "memory")?;
    w.property_u64s("reg", &[config.ram_base, config.ram_size])?;
    w.end_node()?;

    cpus(&mut w, config.vcpus)?;

    w.begin_node("psci")?;
    w.property_strings("compatible", &["arm,psci-1.0", "arm,psci-0.2"])?;
    w.property_string("method", "hvc")?;
    w.end_node()?;

    timer(&mut w, config)?;
    gic(&mut w, config)?;

    w.begin_node("apb-pclk")?;
    w.property_string("compatible", "fixed-clock")?;
    w.property_u32("#clock-cells", 0)?;
    w.property_u32("clock-frequency", APB_CLOCK_HZ)?;
    w.property_string("clock-output-names", "clk24mhz")?;
    w.property_u32("phandle", CLOCK_PHANDLE)?;
    w.end_node()?;

    w.begin_node(UART_NODE)?;
    w.property_strings("compatible", &["arm,pl011", "arm,primecell"])?;
    w.property_u64s("reg", &[UART_BASE, UART_SIZE])?;
    w.property_cells(
        "interrupts",
        &[GIC_SPI, u32::from(UART_INTID) - 32, IRQ_LEVEL_HIGH],
    )?;
    w.property_cells("clocks", &[CLOCK_PHANDLE, CLOCK_PHANDLE])?;
    w.property_strings("clock-names", &["uartclk", "apb_pclk"])?;
    w.end_node()?;

    w.begin_node("chosen")?;
    w.property_string("bootargs", config.bootargs)?;
    w.property_string("stdout-path", UART_PATH)?;
    if let Some((start, end)) = config.initrd {
        w.property_u64("linux,initrd-start", start)?;
        w.property_u64("linux,initrd-end", end)?;
    }
    w.end_node()?;

    w.end_node()?;
    Ok(w.finish()?)
}

fn validate(config: &GuestConfig<'_>) -> Result<(), DtError> {
    let vcpus_ok = (1..=MAX_VCPUS).contains(&config.vcpus);
    let gic_ok = matches!(config.gic_version, 2 | 3);
    let ram_ok = config.ram_size != 0 && config.ram_base.checked_add(config.ram_size).is_some();
    let initrd_ok = config.initrd.is_none_or(|(start, end)| start <= end);
    if vcpus_ok && gic_ok && ram_ok && initrd_ok {
        Ok(())
    } else {
        Err(DtError::BadConfig)
    }
}

/// `prefix@address` (address in lower-case hex, as the spec wants).
fn node_name(out: &mut String<32>, prefix: &str, address: u64) -> Result<(), DtError> {
    out.clear();
    write!(out, "{prefix}@{address:x}").map_err(|_| DtError::Fdt(FdtError::BufferTooSmall))
}

fn cpus(w: &mut FdtWriter<'_>, vcpus: u8) -> Result<(), DtError> {
    w.begin_node("cpus")?;
    w.property_u32("#address-cells", 1)?;
    w.property_u32("#size-cells", 0)?;
    let mut name: String<32> = String::new();
    for i in 0..vcpus {
        node_name(&mut name, "cpu", u64::from(i))?;
        w.begin_node(&name)?;
        w.property_string("device_type", "cpu")?;
        w.property_string("compatible", "arm,cortex-a72")?;
        w.property_u32("reg", u32::from(i))?;
        if vcpus > 1 {
            w.property_string("enable-method", "psci")?;
        }
        w.end_node()?;
    }
    w.end_node()?;
    Ok(())
}

fn timer(w: &mut FdtWriter<'_>, config: &GuestConfig<'_>) -> Result<(), DtError> {
    let flags = if config.gic_version == 2 {
        ((1u32 << config.vcpus) - 1) << 8 | IRQ_LEVEL_HIGH
    } else {
        IRQ_LEVEL_HIGH
    };
    w.begin_node("timer")?;
    w.property_strings("compatible", &["arm,armv8-timer", "arm,armv7-timer"])?;
    // Secure physical, non-secure physical, virtual, hypervisor.
    let mut cells = [0u32; 12];
    for (slot, ppi) in cells.chunks_exact_mut(3).zip([13, 14, 11, 10]) {
        slot.copy_from_slice(&[GIC_PPI, ppi, flags]);
    }
    w.property_cells("interrupts", &cells)?;
    w.property_empty("always-on")?;
    w.end_node()?;
    Ok(())
}

fn gic(w: &mut FdtWriter<'_>, config: &GuestConfig<'_>) -> Result<(), DtError> {
    let mut name: String<32> = String::new();
    node_name(&mut name, "intc", GICD_BASE)?;
    w.begin_node(&name)?;
    if config.gic_version == 2 {
        w.property_string("compatible", "arm,cortex-a15-gic")?;
        w.property_u64s("reg", &[GICD_BASE, GICD_SIZE, GICC_BASE, GICC_SIZE])?;
    } else {
        w.property_string("compatible", "arm,gic-v3")?;
        let redist_size = GICR_STRIDE * u64::from(config.vcpus);
        w.property_u64s("reg", &[GICD_BASE, GICD_SIZE, GICR_BASE, redist_size])?;
    }
    w.property_u32("#interrupt-cells", 3)?;
    w.property_empty("interrupt-controller")?;
    w.property_u32("phandle", GIC_PHANDLE)?;
    w.end_node()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn config(vcpus: u8, gic_version: u8) -> GuestConfig<'static> {
        GuestConfig {
            ram_base: 0x4000_0000,
            ram_size: 0x2000_0000,
            vcpus,
            gic_version,
            bootargs: "console=ttyAMA0 earlycon nokaslr",
            initrd: Some((0x5000_0000, 0x5012_3456)),
        }
    }

    fn build_vec(config: &GuestConfig<'_>) -> Vec<u8> {
        let mut buf = std::vec![0u8; 4096];
        let size = build(config, &mut buf).unwrap();
        buf.truncate(size);
        buf
    }

    fn cells(value: &[u8]) -> Vec<u32> {
        value
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn u64s(value: &[u8]) -> Vec<u64> {
        value
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn strings(value: &[u8]) -> Vec<&str> {
        value
            .strip_suffix(&[0])
            .unwrap()
            .split(|&b| b == 0)
            .map(|s| core::str::from_utf8(s).unwrap())
            .collect()
    }

    fn prop<'a>(fdt: &fdt::Fdt<'a>, path: &str, name: &str) -> &'a [u8] {
        fdt.find_node(path)
            .unwrap_or_else(|| panic!("no node {path}"))
            .property(name)
            .unwrap_or_else(|| panic!("no {name} in {path}"))
            .value
    }

    #[test]
    fn root_memory_and_chosen() {
        let dtb = build_vec(&config(4, 2));
        let fdt = fdt::Fdt::new(&dtb).unwrap();
        assert_eq!(strings(prop(&fdt, "/", "compatible")), ["linux,dummy-virt"]);
        assert_eq!(cells(prop(&fdt, "/", "#address-cells")), [2]);
        assert_eq!(cells(prop(&fdt, "/", "#size-cells")), [2]);
        assert_eq!(cells(prop(&fdt, "/", "interrupt-parent")), [GIC_PHANDLE]);
        assert_eq!(
            u64s(prop(&fdt, "/memory@40000000", "reg")),
            [0x4000_0000, 0x2000_0000]
        );
        let region = fdt.memory().regions().next().unwrap();
        assert_eq!(region.size, Some(0x2000_0000));
        let chosen = fdt.chosen();
        assert_eq!(chosen.bootargs(), Some("console=ttyAMA0 earlycon nokaslr"));
        assert_eq!(chosen.stdout().unwrap().name, "pl011@9000000");
        assert_eq!(
            u64s(prop(&fdt, "/chosen", "linux,initrd-start")),
            [0x5000_0000]
        );
        assert_eq!(
            u64s(prop(&fdt, "/chosen", "linux,initrd-end")),
            [0x5012_3456]
        );
    }

    #[test]
    fn no_initrd_properties_without_an_initrd() {
        let mut c = config(1, 3);
        c.initrd = None;
        let dtb = build_vec(&c);
        let fdt = fdt::Fdt::new(&dtb).unwrap();
        let chosen = fdt.find_node("/chosen").unwrap();
        assert!(chosen.property("linux,initrd-start").is_none());
        assert!(chosen.property("linux,initrd-end").is_none());
    }

    #[test]
    fn cpus_and_psci() {
        let dtb = build_vec(&config(3, 2));
        let fdt = fdt::Fdt::new(&dtb).unwrap();
        let ids: Vec<usize> = fdt.cpus().map(|c| c.ids().first()).collect();
        assert_eq!(ids, [0, 1, 2]);
        for i in 0..3 {
            let path = std::format!("/cpus/cpu@{i}");
            assert_eq!(strings(prop(&fdt, &path, "compatible")), ["arm,cortex-a72"]);
            assert_eq!(strings(prop(&fdt, &path, "device_type")), ["cpu"]);
            assert_eq!(strings(prop(&fdt, &path, "enable-method")), ["psci"]);
        }
        assert_eq!(
            strings(prop(&fdt, "/psci", "compatible")),
            ["arm,psci-1.0", "arm,psci-0.2"]
        );
        assert_eq!(strings(prop(&fdt, "/psci", "method")), ["hvc"]);

        // One vCPU: no enable-method.
        let dtb = build_vec(&config(1, 2));
        let fdt = fdt::Fdt::new(&dtb).unwrap();
        let cpu = fdt.find_node("/cpus/cpu@0").unwrap();
        assert!(cpu.property("enable-method").is_none());
        assert!(fdt.find_node("/cpus/cpu@1").is_none());
    }

    #[test]
    fn gicv2_node_and_timer_cpu_mask() {
        let dtb = build_vec(&config(4, 2));
        let fdt = fdt::Fdt::new(&dtb).unwrap();
        let gic = "/intc@8000000";
        assert_eq!(
            strings(prop(&fdt, gic, "compatible")),
            ["arm,cortex-a15-gic"]
        );
        assert_eq!(
            u64s(prop(&fdt, gic, "reg")),
            [0x0800_0000, 0x1_0000, 0x0801_0000, 0x2000]
        );
        assert_eq!(cells(prop(&fdt, gic, "#interrupt-cells")), [3]);
        assert_eq!(prop(&fdt, gic, "interrupt-controller"), &[] as &[u8]);
        assert_eq!(cells(prop(&fdt, gic, "phandle")), [GIC_PHANDLE]);
        assert_eq!(
            cells(prop(&fdt, "/timer", "interrupts")),
            [1, 13, 0xf04, 1, 14, 0xf04, 1, 11, 0xf04, 1, 10, 0xf04]
        );
        assert_eq!(prop(&fdt, "/timer", "always-on"), &[] as &[u8]);
        assert_eq!(
            strings(prop(&fdt, "/timer", "compatible"))[0],
            "arm,armv8-timer"
        );
        // Two vCPUs: mask 0b11.
        let dtb = build_vec(&config(2, 2));
        let fdt = fdt::Fdt::new(&dtb).unwrap();
        assert_eq!(cells(prop(&fdt, "/timer", "interrupts"))[2], 0x304);
    }

    #[test]
    fn gicv3_node() {
        let dtb = build_vec(&config(8, 3));
        let fdt = fdt::Fdt::new(&dtb).unwrap();
        let gic = fdt.find_compatible(&["arm,gic-v3"]).unwrap();
        assert_eq!(gic.name, "intc@8000000");
        let reg: Vec<(usize, Option<usize>)> = gic
            .reg()
            .unwrap()
            .map(|r| (r.starting_address as usize, r.size))
            .collect();
        assert_eq!(
            reg,
            [
                (0x0800_0000, Some(0x1_0000)),
                (0x080A_0000, Some(8 * 0x2_0000))
            ]
        );
        assert_eq!(
            cells(prop(&fdt, "/timer", "interrupts")),
            [1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4]
        );
        assert_eq!(fdt.cpus().count(), 8);
    }

    #[test]
    fn uart_and_its_clock() {
        let dtb = build_vec(&config(1, 2));
        let fdt = fdt::Fdt::new(&dtb).unwrap();
        let uart = "/pl011@9000000";
        assert_eq!(
            strings(prop(&fdt, uart, "compatible")),
            ["arm,pl011", "arm,primecell"]
        );
        assert_eq!(u64s(prop(&fdt, uart, "reg")), [0x0900_0000, 0x1000]);
        assert_eq!(cells(prop(&fdt, uart, "interrupts")), [0, 1, 4]);
        assert_eq!(
            cells(prop(&fdt, uart, "clocks")),
            [CLOCK_PHANDLE, CLOCK_PHANDLE]
        );
        assert_eq!(
            strings(prop(&fdt, uart, "clock-names")),
            ["uartclk", "apb_pclk"]
        );
        let clock = fdt.find_phandle(CLOCK_PHANDLE).unwrap();
        assert_eq!(clock.name, "apb-pclk");
        assert_eq!(
            clock.property("clock-frequency").unwrap().as_usize(),
            Some(24_000_000)
        );
        assert_eq!(
            strings(clock.property("compatible").unwrap().value),
            ["fixed-clock"]
        );
        assert_eq!(cells(prop(&fdt, "/apb-pclk", "#clock-cells")), [0]);
        // The UART inherits the root's interrupt parent: the GIC.
        let parent = fdt.find_node("/").unwrap().interrupt_parent().unwrap();
        assert_eq!(parent.name, "intc@8000000");
        assert!(parent.property("interrupt-controller").is_some());
    }

    #[test]
    fn bad_configs_and_small_buffers_are_refused() {
        let mut buf = [0u8; 4096];
        for bad in [
            GuestConfig {
                vcpus: 0,
                ..config(1, 2)
            },
            GuestConfig {
                vcpus: 9,
                ..config(1, 2)
            },
            GuestConfig {
                gic_version: 4,
                ..config(1, 2)
            },
            GuestConfig {
                ram_size: 0,
                ..config(1, 2)
            },
            GuestConfig {
                ram_base: u64::MAX,
                ..config(1, 2)
            },
            GuestConfig {
                initrd: Some((2, 1)),
                ..config(1, 2)
            },
        ] {
            assert_eq!(build(&bad, &mut buf), Err(DtError::BadConfig), "{bad:?}");
        }
        let mut small = [0u8; 512];
        assert_eq!(
            build(&config(4, 3), &mut small),
            Err(DtError::Fdt(FdtError::BufferTooSmall))
        );
    }
}
