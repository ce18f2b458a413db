//! `hyp_core::platform::parse` on the device trees the hypervisor really
//! receives: QEMU `virt` with GICv2 and GICv3, and QEMU `raspi4b` with
//! Debian's BCM2711 tree (see `fixtures/README.md` for where they come from).
//! The expected values are those in `docs`/BOARDS.md, checked against
//! `dtc -I dtb -O dts` of each fixture.

use hyp_core::platform::{
    self, Console, Cpu, EnableMethod, Gic, MemoryRegion, Platform, PsciConduit, TimerInterrupts,
    UartKind,
};

const VIRT_GICV2_SMP4: &[u8] = include_bytes!("fixtures/qemu-virt-gicv2-smp4.dtb");
const VIRT_GICV3_SMP4: &[u8] = include_bytes!("fixtures/qemu-virt-gicv3-smp4.dtb");
const VIRT_GICV2_SMP1: &[u8] = include_bytes!("fixtures/qemu-virt-gicv2-smp1.dtb");
const RASPI4B: &[u8] = include_bytes!("fixtures/raspi4b.dtb");

const FIXTURES: [(&str, &[u8]); 4] = [
    ("qemu-virt-gicv2-smp4", VIRT_GICV2_SMP4),
    ("qemu-virt-gicv3-smp4", VIRT_GICV3_SMP4),
    ("qemu-virt-gicv2-smp1", VIRT_GICV2_SMP1),
    ("raspi4b", RASPI4B),
];

fn region(base: u64, size: u64) -> MemoryRegion {
    MemoryRegion { base, size }
}

fn parsed(dtb: &[u8]) -> Platform {
    match platform::parse(dtb) {
        Ok(platform) => platform,
        Err(error) => panic!("parse failed: {error}"),
    }
}

fn psci_cpus(count: u64) -> Vec<Cpu> {
    (0..count)
        .map(|mpidr| Cpu {
            mpidr,
            enable_method: EnableMethod::Psci,
        })
        .collect()
}

/// What QEMU `virt` with `-m 1G` says apart from the GIC and the CPUs.
fn check_virt_common(platform: &Platform) {
    assert_eq!(platform.model.as_str(), "linux,dummy-virt");
    assert_eq!(
        platform.memory.as_slice(),
        &[region(0x4000_0000, 0x4000_0000)]
    );
    assert_eq!(platform.reserved.as_slice(), &[]);
    assert_eq!(
        platform.console,
        Console {
            kind: UartKind::Pl011,
            region: region(0x0900_0000, 0x1000),
            interrupt: Some(33),
        }
    );
    assert_eq!(
        platform.timer,
        TimerInterrupts {
            secure_physical: 29,
            nonsecure_physical: 30,
            virtual_timer: 27,
            hypervisor_physical: 26,
        }
    );
    assert_eq!(platform.psci, Some(PsciConduit::Smc));
    assert_eq!(platform.bootargs.as_str(), "");
    assert!(!platform.cpus_truncated);
}

#[test]
fn qemu_virt_gicv2_smp4() {
    let platform = parsed(VIRT_GICV2_SMP4);
    check_virt_common(&platform);
    assert_eq!(
        platform.gic,
        Gic::V2 {
            distributor: region(0x0800_0000, 0x1_0000),
            cpu_interface: region(0x0801_0000, 0x1_0000),
            hyp_interface: Some(region(0x0803_0000, 0x1_0000)),
            virtual_cpu_interface: Some(region(0x0804_0000, 0x1_0000)),
            maintenance_interrupt: Some(25),
        }
    );
    assert_eq!(platform.gic.version(), 2);
    assert_eq!(platform.cpus.as_slice(), psci_cpus(4).as_slice());
}

#[test]
fn qemu_virt_gicv3_smp4() {
    let platform = parsed(VIRT_GICV3_SMP4);
    check_virt_common(&platform);
    let Gic::V3 {
        distributor,
        redistributors,
        maintenance_interrupt,
    } = &platform.gic
    else {
        panic!("expected a GICv3, got {:?}", platform.gic);
    };
    assert_eq!(*distributor, region(0x0800_0000, 0x1_0000));
    // QEMU sizes the first redistributor region for 123 CPUs (0x20000 each).
    assert_eq!(redistributors.as_slice(), &[region(0x080a_0000, 0xf6_0000)]);
    assert_eq!(*maintenance_interrupt, Some(25));
    assert_eq!(platform.gic.version(), 3);
    assert_eq!(platform.cpus.as_slice(), psci_cpus(4).as_slice());
}

#[test]
fn qemu_virt_gicv2_smp1() {
    let platform = parsed(VIRT_GICV2_SMP1);
    check_virt_common(&platform);
    assert_eq!(platform.gic.version(), 2);
    assert_eq!(platform.gic.maintenance_interrupt(), Some(25));
    // With one CPU QEMU writes no enable-method: there is nothing to start.
    assert_eq!(
        platform.cpus.as_slice(),
        &[Cpu {
            mpidr: 0,
            enable_method: EnableMethod::None
        }]
    );
}

#[test]
fn raspi4b() {
    let platform = parsed(RASPI4B);
    assert_eq!(platform.model.as_str(), "Raspberry Pi 4 Model B");
    // QEMU replaces Debian's empty /memory@0 with the 960 MiB it models.
    assert_eq!(platform.memory.as_slice(), &[region(0, 0x3c00_0000)]);
    // Debian's /memreserve/ for the spin tables; /reserved-memory/linux,cma
    // has no reg and nvram@0 an empty one.
    assert_eq!(platform.reserved.as_slice(), &[region(0, 0x1000)]);
    // stdout-path = "serial1:115200n8", serial1 = "/soc/serial@7e215040",
    // and /soc maps 0x7e000000 to 0xfe000000.
    assert_eq!(
        platform.console,
        Console {
            kind: UartKind::Bcm2835Aux,
            region: region(0xfe21_5040, 0x40),
            interrupt: Some(125),
        }
    );
    // /soc maps 0x40000000 to 0xff800000; the legacy ARM local interrupt
    // controller at 0x40000000 is not a GIC and is passed over.
    assert_eq!(
        platform.gic,
        Gic::V2 {
            distributor: region(0xff84_1000, 0x1000),
            cpu_interface: region(0xff84_2000, 0x2000),
            hyp_interface: Some(region(0xff84_4000, 0x2000)),
            virtual_cpu_interface: Some(region(0xff84_6000, 0x2000)),
            maintenance_interrupt: Some(25),
        }
    );
    assert_eq!(
        platform.timer,
        TimerInterrupts {
            secure_physical: 29,
            nonsecure_physical: 30,
            virtual_timer: 27,
            hypervisor_physical: 26,
        }
    );
    // The cpu nodes' "spin-table" overrides /cpus' 32-bit "brcm,bcm2836-smp".
    let spin = |mpidr, release_address| Cpu {
        mpidr,
        enable_method: EnableMethod::SpinTable { release_address },
    };
    assert_eq!(
        platform.cpus.as_slice(),
        &[spin(0, 0xd8), spin(1, 0xe0), spin(2, 0xe8), spin(3, 0xf0)]
    );
    assert!(!platform.cpus_truncated);
    assert_eq!(platform.psci, None);
    assert_eq!(platform.bootargs.as_str(), "");
}

#[test]
fn total_size_matches_each_fixture() {
    for (name, dtb) in FIXTURES {
        assert_eq!(platform::total_size(dtb), Some(dtb.len()), "{name}");
        assert_eq!(platform::total_size(&dtb[..8]), Some(dtb.len()), "{name}");
    }
}

/// The `fdt` crate, an independent reader, sees the same model, RAM and CPUs
/// in the `virt` trees. Not in `raspi4b.dtb`: QEMU removes the nodes it does
/// not model with `fdt_nop_node`, and `fdt` 0.1.5 panics on the NOP tokens
/// that leaves between nodes (`skip_current_node`: "bad node").
#[test]
fn fdt_crate_agrees() {
    for (name, dtb) in &FIXTURES[..3] {
        let platform = parsed(dtb);
        let tree = fdt::Fdt::new(dtb).expect("fdt reads the fixture");
        assert_eq!(tree.root().model(), platform.model.as_str(), "{name}");
        let memory: Vec<MemoryRegion> = tree
            .memory()
            .regions()
            .map(|r| region(r.starting_address as u64, r.size.unwrap_or(0) as u64))
            .collect();
        assert_eq!(memory.as_slice(), platform.memory.as_slice(), "{name}");
        let mpidrs: Vec<u64> = tree.cpus().map(|cpu| cpu.ids().first() as u64).collect();
        let parsed: Vec<u64> = platform.cpus.iter().map(|cpu| cpu.mpidr).collect();
        assert_eq!(mpidrs, parsed, "{name}");
    }
}

/// Flipping any byte of a real tree or cutting it anywhere gives a result or
/// an error, never a panic.
#[test]
fn corrupted_fixture_never_panics() {
    let original = VIRT_GICV2_SMP1;
    let mut dtb = original.to_vec();
    let mut errors = 0;
    for index in 0..dtb.len() {
        // One flip per byte keeps the test quick; the masks take turns.
        let flip = [0x01, 0x80, 0xff][index % 3];
        dtb[index] ^= flip;
        errors += usize::from(platform::parse(&dtb).is_err());
        dtb[index] ^= flip;
    }
    // Most flips land in values the parser does not read, but not all.
    assert!(errors > 100, "only {errors} corruptions were noticed");
    for length in 0..original.len() {
        assert!(
            platform::parse(&original[..length]).is_err(),
            "cut at {length}"
        );
    }
    assert!(platform::parse(original).is_ok());
}
