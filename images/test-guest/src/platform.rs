//! What the device tree tells the guest: where the GIC is and which
//! version it is, where its RAM is, and the `probe=` boot argument.
//!
//! The GIC version comes from the `compatible` of the interrupt controller
//! node (`arm,gic-v3` or one of the GICv2 strings, see
//! [`GicVersion::from_compatible`]) and its addresses from that node's
//! `reg`. Without a usable device tree or GIC node the guest falls back to
//! `ID_AA64PFR0_EL1.GIC` (non-zero: GICv3 system registers) and QEMU
//! `virt`'s addresses, and says so.

use fdt::Fdt;

use crate::gic::Layout;
use crate::logic::{GicVersion, Text, fail, probe_address};
use crate::sysreg;
use crate::uart::println;

/// The most RAM ranges remembered.
const MAX_RAM_RANGES: usize = 8;

/// The largest device tree the guest accepts.
const MAX_DEVICE_TREE_BYTES: u32 = 2 << 20;

/// What the guest knows about its machine.
#[derive(Debug)]
pub(crate) struct Platform {
    /// Where the GIC is.
    pub(crate) gic: Layout,
    /// How the GIC was found, for the console.
    pub(crate) gic_source: Text,
    ram: [(u64, u64); MAX_RAM_RANGES],
    ram_count: usize,
    /// The `probe=` address of the boot arguments, if any, or why it is
    /// unusable.
    pub(crate) probe: Result<Option<u64>, Text>,
    /// The boot arguments hold the word `crash-vmm`: after its checks the
    /// guest writes to its VMM's crash-test device.
    pub(crate) crash_vmm: bool,
    /// The boot arguments hold the word `bench`: run the benchmarks
    /// instead of the checks.
    pub(crate) bench: bool,
}

impl Platform {
    /// The RAM ranges of the device tree's memory nodes, `(base, size)`.
    pub(crate) fn ram(&self) -> &[(u64, u64)] {
        self.ram.get(..self.ram_count).unwrap_or(&[])
    }
}

/// Reads the device tree at `address` (the boot protocol's `x0`).
pub(crate) fn discover(address: usize) -> Platform {
    let mut platform = Platform {
        gic: fallback_layout(),
        gic_source: Text::new(),
        ram: [(0, 0); MAX_RAM_RANGES],
        ram_count: 0,
        probe: Ok(None),
        crash_vmm: false,
        bench: false,
    };
    let tree = match device_tree(address) {
        Ok(tree) => tree,
        Err(reason) => {
            println!("test-guest: no usable device tree at {address:#x}: {reason}");
            platform.gic_source = fallback_source("no device tree");
            return platform;
        }
    };
    match gic_from_tree(&tree) {
        Ok((layout, compatible)) => {
            platform.gic = layout;
            platform.gic_source =
                Text::format(format_args!("device tree: compatible \"{compatible}\""));
        }
        Err(reason) => platform.gic_source = fallback_source(reason.as_str()),
    }
    for node in tree.all_nodes() {
        let is_memory = node
            .property("device_type")
            .and_then(|property| property.as_str())
            == Some("memory");
        let Some(regions) = node.reg().filter(|_| is_memory) else {
            continue;
        };
        for region in regions {
            if let Some(slot) = platform.ram.get_mut(platform.ram_count) {
                *slot = (
                    region.starting_address as u64,
                    region.size.unwrap_or(0) as u64,
                );
                platform.ram_count += 1;
            }
        }
    }
    let bootargs = tree
        .find_node("/chosen")
        .and_then(|chosen| chosen.property("bootargs"))
        .and_then(|property| property.as_str())
        .unwrap_or("");
    platform.probe = probe_address(bootargs).map_err(|error| Text::format(format_args!("{error}")));
    platform.crash_vmm = bootargs
        .split_ascii_whitespace()
        .any(|word| word == "crash-vmm");
    platform.bench = bootargs
        .split_ascii_whitespace()
        .any(|word| word == "bench");
    platform
}

/// The GIC version `ID_AA64PFR0_EL1` suggests, at QEMU `virt`'s addresses.
fn fallback_layout() -> Layout {
    Layout::qemu_virt(GicVersion::from_id_aa64pfr0(sysreg::id_aa64pfr0()))
}

fn fallback_source(why: &str) -> Text {
    Text::format(format_args!(
        "{why}; ID_AA64PFR0_EL1 {:#x} and QEMU virt's addresses",
        sysreg::id_aa64pfr0()
    ))
}

/// The first interrupt controller the guest knows, and the `compatible`
/// string that says which.
fn gic_from_tree(tree: &Fdt<'static>) -> Result<(Layout, &'static str), Text> {
    let Some(node) = tree.find_compatible(GicVersion::COMPATIBLES) else {
        fail!("no GICv2 or GICv3 node in the device tree");
    };
    let Some((version, compatible)) = node.compatible().and_then(|compatible| {
        compatible
            .all()
            .find_map(|name| GicVersion::from_compatible(name).map(|version| (version, name)))
    }) else {
        fail!(
            "the GIC node {} has no compatible the guest knows",
            node.name
        );
    };
    let mut regions = node.reg().into_iter().flatten();
    let (Some(distributor), Some(cpu)) = (regions.next(), regions.next()) else {
        fail!("the GIC node {} has fewer than two reg ranges", node.name);
    };
    let range = |region: fdt::standard_nodes::MemoryRegion| {
        (
            region.starting_address as usize,
            region.size.unwrap_or(0x1_0000),
        )
    };
    Ok((
        Layout {
            version,
            distributor: range(distributor),
            cpu: range(cpu),
        },
        compatible,
    ))
}

/// The device tree at `address`, after checking its header.
fn device_tree(address: usize) -> Result<Fdt<'static>, Text> {
    if address == 0 || !address.is_multiple_of(8) {
        fail!("the address is null or not 8-byte aligned");
    }
    // SAFETY: the boot protocol passes the physical address of the device
    // tree, in RAM, in x0 (non-null and aligned, checked above); the MMU is
    // off, so it is the address to read. Its first 8 bytes are the magic
    // and the total size.
    let header = unsafe { core::ptr::read_volatile(address as *const [u32; 2]) };
    let (magic, total_size) = (u32::from_be(header[0]), u32::from_be(header[1]));
    if magic != 0xd00d_feed {
        fail!("magic {magic:#x}, not 0xd00dfeed");
    }
    if !(40..=MAX_DEVICE_TREE_BYTES).contains(&total_size) {
        fail!("implausible total size {total_size:#x}");
    }
    let size = total_size as usize;
    let (start, end) = image_range();
    if address < end && address.saturating_add(size) > start {
        fail!("it overlaps the guest image [{start:#x}, {end:#x})");
    }
    // SAFETY: the boot protocol hands the guest `total_size` bytes of device
    // tree at `address` for good; they lie outside the guest's image, BSS
    // and stack (checked above), and nothing in the guest writes them.
    let bytes = unsafe { core::slice::from_raw_parts(address as *const u8, size) };
    Fdt::new(bytes).map_err(|error| Text::format(format_args!("{error}")))
}

/// The guest image in memory, BSS and stack included.
fn image_range() -> (usize, usize) {
    unsafe extern "C" {
        static __image_start: u8;
        static __image_end: u8;
    }
    (
        (&raw const __image_start) as usize,
        (&raw const __image_end) as usize,
    )
}
