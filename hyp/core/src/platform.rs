//! The boot device tree, turned into the few facts the hypervisor needs.
//!
//! At boot the firmware (or QEMU) hands the core a flattened device tree
//! (DTB). Before the MMU is on and before there is a heap, the core has to
//! learn from it where RAM is and what must not be touched, which UART is the
//! console, where the GIC and its virtualization interfaces sit, which
//! interrupts the generic timer uses, and how the other CPUs are started.
//! [`parse`] reads all of that in one go and either returns a complete
//! [`Platform`] or says precisely what is missing.
//!
//! The blob is parsed here rather than with the `fdt` crate because `fdt`
//! 0.1.5 panics (`expect`, `unwrap`, slice indexing) on malformed input, has no
//! parent links and does not translate addresses through `ranges`. This
//! parser checks every offset and length, walks the tree iteratively with a
//! fixed stack of [`MAX_DEPTH`] ancestors, allocates nothing and uses no
//! atomics.
//!
//! Addresses in `reg` are bus addresses: they are translated to CPU physical
//! addresses through the `ranges` of every ancestor (the Raspberry Pi 4's
//! peripherals sit under `/soc` at `0x7e..`, which the CPU sees at `0xfe..`).

use core::fmt;

use heapless::{String, Vec};

/// The most CPUs [`Platform::cpus`] holds; the rest are counted as truncated.
pub const MAX_CPUS: usize = 8;

/// The deepest node nesting [`parse`] follows (the root is depth 0). The
/// trees we boot on nest at most 6 deep.
pub const MAX_DEPTH: usize = 16;

/// The most `/memory` ranges [`Platform::memory`] holds.
pub const MAX_MEMORY_REGIONS: usize = 8;

/// The most reserved ranges [`Platform::reserved`] holds.
pub const MAX_RESERVED_REGIONS: usize = 16;

/// The most GICv3 redistributor regions [`Gic::V3`] holds.
pub const MAX_REDISTRIBUTOR_REGIONS: usize = 4;

/// A range of CPU physical addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    /// The first address.
    pub base: u64,
    /// The length in bytes.
    pub size: u64,
}

impl MemoryRegion {
    /// The first address after the region, saturating at `u64::MAX`.
    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.size)
    }
}

/// The UARTs the core can drive as its console.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UartKind {
    /// ARM PrimeCell PL011 (`arm,pl011`): QEMU `virt`, the Pi 4's `uart0`.
    Pl011,
    /// The BCM2835 auxiliary mini-UART (`brcm,bcm2835-aux-uart`): the Pi 4's
    /// `uart1`, its default console.
    Bcm2835Aux,
}

/// The console UART named by `/chosen/stdout-path`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Console {
    /// Which driver it needs.
    pub kind: UartKind,
    /// Its registers (`reg` entry 0, translated).
    pub region: MemoryRegion,
    /// Its interrupt (INTID), if its `interrupts` names a GIC SPI or PPI
    /// with three cells; the console works without it (no input).
    pub interrupt: Option<u32>,
}

/// The interrupt controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gic {
    /// GICv2 (GIC-400 and relatives), memory-mapped CPU interface.
    V2 {
        /// GICD, `reg` entry 0.
        distributor: MemoryRegion,
        /// GICC, `reg` entry 1.
        cpu_interface: MemoryRegion,
        /// GICH, the hypervisor control interface, `reg` entry 2.
        hyp_interface: Option<MemoryRegion>,
        /// GICV, the virtual CPU interface a guest sees as its GICC, `reg`
        /// entry 3.
        virtual_cpu_interface: Option<MemoryRegion>,
        /// INTID of the virtualization maintenance interrupt (`interrupts`).
        maintenance_interrupt: Option<u32>,
    },
    /// GICv3: the CPU interface is reached through system registers.
    V3 {
        /// GICD, `reg` entry 0.
        distributor: MemoryRegion,
        /// GICR regions, `reg` entries 1 to `#redistributor-regions`.
        redistributors: Vec<MemoryRegion, MAX_REDISTRIBUTOR_REGIONS>,
        /// INTID of the virtualization maintenance interrupt (`interrupts`).
        maintenance_interrupt: Option<u32>,
    },
}

impl Gic {
    /// The architecture version: 2 or 3.
    pub fn version(&self) -> u8 {
        match self {
            Gic::V2 { .. } => 2,
            Gic::V3 { .. } => 3,
        }
    }

    /// INTID of the virtualization maintenance interrupt, if the tree names it.
    pub fn maintenance_interrupt(&self) -> Option<u32> {
        match self {
            Gic::V2 {
                maintenance_interrupt,
                ..
            }
            | Gic::V3 {
                maintenance_interrupt,
                ..
            } => *maintenance_interrupt,
        }
    }
}

/// The generic timer's interrupts, as GIC INTIDs (all PPIs, 16..=31).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerInterrupts {
    /// EL3 physical timer (`interrupts` entry 0).
    pub secure_physical: u32,
    /// EL1 physical timer (`interrupts` entry 1).
    pub nonsecure_physical: u32,
    /// EL1 virtual timer, the one guests use (`interrupts` entry 2).
    pub virtual_timer: u32,
    /// EL2 physical timer, the hypervisor's own (`interrupts` entry 3).
    pub hypervisor_physical: u32,
}

/// How a secondary CPU is started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnableMethod {
    /// PSCI `CPU_ON` through [`Platform::psci`].
    Psci,
    /// The CPU spins until a start address is written to `release_address`
    /// (the Raspberry Pi firmware's method).
    SpinTable {
        /// `cpu-release-addr`: where to write the entry point.
        release_address: u64,
    },
    /// No `enable-method`, or one the core does not know (such as the 32-bit
    /// `brcm,bcm2836-smp`): the CPU cannot be started.
    None,
}

/// One `/cpus/cpu@*` node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpu {
    /// `reg`: the MPIDR affinity fields (Aff3 in bits 32..40).
    pub mpidr: u64,
    /// How to start it.
    pub enable_method: EnableMethod,
}

/// The PSCI calling convention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciConduit {
    /// `SMC #0`, handled at EL3 (or by QEMU).
    Smc,
    /// `HVC #0`, handled at EL2: only right for a tree made for a guest.
    Hvc,
}

/// What the hypervisor needs to know about the machine it boots on.
#[derive(Clone, Debug)]
pub struct Platform {
    /// The root node's `model`, cut to 64 bytes; empty if absent.
    pub model: String<64>,
    /// RAM: the `reg` ranges of the nodes under the root with
    /// `device_type = "memory"`, in tree order, zero-size entries dropped.
    pub memory: Vec<MemoryRegion, MAX_MEMORY_REGIONS>,
    /// Memory not to touch: the `/memreserve/` entries, then the `reg` ranges
    /// of the children of `/reserved-memory` (whatever their `status`), in
    /// tree order, zero-size entries dropped.
    pub reserved: Vec<MemoryRegion, MAX_RESERVED_REGIONS>,
    /// The UART `/chosen/stdout-path` names.
    pub console: Console,
    /// The first enabled GICv2 or GICv3 node.
    pub gic: Gic,
    /// From the first enabled `arm,armv8-timer` or `arm,armv7-timer` node.
    pub timer: TimerInterrupts,
    /// The first [`MAX_CPUS`] `/cpus` children with `device_type = "cpu"`,
    /// in tree order.
    pub cpus: Vec<Cpu, MAX_CPUS>,
    /// True if the tree lists more than [`MAX_CPUS`] CPUs.
    pub cpus_truncated: bool,
    /// The `method` of the `/psci` node, if there is one.
    pub psci: Option<PsciConduit>,
    /// `/chosen/bootargs`, cut to 256 bytes; empty if absent.
    pub bootargs: String<256>,
}

/// Why a device tree cannot be used.
///
/// `node` fields name the role of the node, not its path: `"console"`,
/// `"gic"`, `"timer"`, `"memory"`, `"reserved-memory"`, `"cpu"`, `"psci"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlatformError {
    /// The header is shorter than 40 bytes, has the wrong magic, a total size
    /// larger than the blob, or blocks outside it.
    BadHeader,
    /// The blob's format version is older than 17 or incompatible with it.
    UnsupportedVersion {
        /// The header's `version` field.
        version: u32,
    },
    /// The structure block is malformed at this byte offset into it.
    BadStructure {
        /// Offset from the start of the structure block.
        offset: usize,
    },
    /// Nodes nest deeper than [`MAX_DEPTH`].
    TooDeep,
    /// No node with `device_type = "memory"` has a non-empty `reg` range.
    NoMemory,
    /// More ranges than the platform record holds.
    TooManyRegions {
        /// Which list overflowed.
        node: &'static str,
        /// Its capacity.
        limit: usize,
    },
    /// `/chosen` has no `stdout-path`.
    NoConsole,
    /// `stdout-path` names an alias that `/aliases` does not define.
    UnknownAlias,
    /// No node sits at the path `stdout-path` names.
    ConsoleNotFound,
    /// The console node is not a PL011 or a BCM2835 mini-UART.
    UnsupportedConsole,
    /// The tree has no interrupt controller at all.
    NoInterruptController,
    /// The tree has interrupt controllers, but no enabled GICv2 or GICv3.
    UnsupportedInterruptController,
    /// A `reg` entry the hypervisor needs is missing.
    MissingRegister {
        /// The node's role.
        node: &'static str,
        /// The `reg` entry.
        index: usize,
    },
    /// An `interrupts` entry the hypervisor needs is missing.
    MissingInterrupt {
        /// The node's role.
        node: &'static str,
        /// The `interrupts` entry.
        index: usize,
    },
    /// An interrupt specifier is not an SPI or PPI in range.
    BadInterrupt {
        /// The node's role.
        node: &'static str,
        /// The `interrupts` entry.
        index: usize,
    },
    /// A property has the wrong length or a value the parser cannot use.
    BadProperty {
        /// The role of the node whose decoding needed it.
        node: &'static str,
        /// The property.
        property: &'static str,
    },
    /// An ancestor bus has no `ranges`, so its children's addresses are not
    /// CPU addresses.
    NoRanges {
        /// The role of the node whose address was translated.
        node: &'static str,
    },
    /// An ancestor bus's `ranges` do not cover this bus address.
    AddressNotInRanges {
        /// The role of the node whose address was translated.
        node: &'static str,
        /// The address as seen on the bus that could not map it.
        address: u64,
    },
    /// The tree has no enabled `arm,armv8-timer` or `arm,armv7-timer` node.
    NoTimer,
    /// The timer's interrupts go to a controller other than the GIC.
    TimerNotOnGic,
    /// `/cpus` has no child with `device_type = "cpu"`.
    NoCpus,
    /// A CPU uses `spin-table` but has no usable `cpu-release-addr`.
    MissingReleaseAddress {
        /// The CPU's MPIDR.
        mpidr: u64,
    },
    /// `/psci` has no `method`, or one other than `smc` and `hvc`.
    BadPsciMethod,
}

impl fmt::Display for PlatformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PlatformError::BadHeader => f.write_str(
                "the device tree header is invalid: wrong magic, too short, \
                 or blocks outside its total size",
            ),
            PlatformError::UnsupportedVersion { version } => write!(
                f,
                "the device tree has format version {version}; version 17 is required"
            ),
            PlatformError::BadStructure { offset } => write!(
                f,
                "the device tree's structure block is malformed at byte {offset:#x}"
            ),
            PlatformError::TooDeep => {
                write!(f, "device tree nodes nest deeper than {MAX_DEPTH} levels")
            }
            PlatformError::NoMemory => {
                f.write_str("the device tree has no memory node with a non-empty range")
            }
            PlatformError::TooManyRegions { node, limit } => {
                write!(f, "the device tree lists more than {limit} {node} ranges")
            }
            PlatformError::NoConsole => f.write_str("/chosen has no stdout-path"),
            PlatformError::UnknownAlias => {
                f.write_str("stdout-path names an alias that /aliases does not define")
            }
            PlatformError::ConsoleNotFound => {
                f.write_str("no node sits at the path stdout-path names")
            }
            PlatformError::UnsupportedConsole => f.write_str(
                "the stdout-path node is neither an arm,pl011 nor a brcm,bcm2835-aux-uart",
            ),
            PlatformError::NoInterruptController => {
                f.write_str("the device tree has no interrupt controller")
            }
            PlatformError::UnsupportedInterruptController => {
                f.write_str("the device tree has no enabled GICv2 or GICv3")
            }
            PlatformError::MissingRegister { node, index } => {
                write!(f, "the {node} node has no reg entry {index}")
            }
            PlatformError::MissingInterrupt { node, index } => {
                write!(f, "the {node} node has no interrupts entry {index}")
            }
            PlatformError::BadInterrupt { node, index } => write!(
                f,
                "interrupts entry {index} of the {node} node is not an SPI or PPI in range"
            ),
            PlatformError::BadProperty { node, property } => write!(
                f,
                "the {property} property met while decoding the {node} node is malformed \
                 or unsupported"
            ),
            PlatformError::NoRanges { node } => write!(
                f,
                "a bus above the {node} node has no ranges, so its address cannot be translated"
            ),
            PlatformError::AddressNotInRanges { node, address } => write!(
                f,
                "bus address {address:#x} of the {node} node lies outside its bus's ranges"
            ),
            PlatformError::NoTimer => {
                f.write_str("the device tree has no enabled arm,armv8-timer node")
            }
            PlatformError::TimerNotOnGic => {
                f.write_str("the timer's interrupt parent is not the GIC")
            }
            PlatformError::NoCpus => f.write_str("/cpus has no node with device_type \"cpu\""),
            PlatformError::MissingReleaseAddress { mpidr } => write!(
                f,
                "CPU {mpidr:#x} uses spin-table but has no 64-bit cpu-release-addr"
            ),
            PlatformError::BadPsciMethod => {
                f.write_str("/psci has no method, or one other than \"smc\" and \"hvc\"")
            }
        }
    }
}

/// Reads the `totalsize` field of an FDT header (so the caller knows how many
/// bytes to hand to [`parse`]); `None` if the magic is wrong or `header` is
/// shorter than 8 bytes.
pub fn total_size(header: &[u8]) -> Option<usize> {
    if be32(header, 0)? != FDT_MAGIC {
        return None;
    }
    usize::try_from(be32(header, 4)?).ok()
}

/// Parses a flattened device tree (version 17) into a [`Platform`].
///
/// `dtb` must hold at least the header's `totalsize` bytes; bytes after it are
/// ignored. Every offset and length in the blob is checked: garbage yields an
/// error, never a panic.
pub fn parse(dtb: &[u8]) -> Result<Platform, PlatformError> {
    let blob = Blob::new(dtb)?;

    // Pass 1: the root's properties, /chosen and /aliases, which say where the
    // console is before pass 2 meets it.
    let mut root = None;
    let mut chosen = None;
    let mut aliases = None;
    walk(&blob, |path| {
        match path {
            [node] => root = Some(node.properties),
            [_, node] if node.name == "chosen" => chosen = Some(node.properties),
            [_, node] if node.name == "aliases" => aliases = Some(node.properties),
            _ => {}
        }
        Ok(())
    })?;
    let console_path = match chosen.and_then(stdout_path) {
        None => None,
        Some(name) if name.starts_with('/') => Some(name),
        Some(alias) => Some(
            aliases
                .and_then(|aliases| aliases.string(alias))
                .ok_or(PlatformError::UnknownAlias)?,
        ),
    };

    // Pass 2: everything else.
    let mut found = Found::default();
    walk(&blob, |path| found.visit(path, console_path))?;

    let mut reserved = Vec::new();
    for region in blob.memory_reservations() {
        push_region(&mut reserved, region?, "reserved-memory")?;
    }
    for &region in &found.reserved_memory {
        push_region(&mut reserved, region, "reserved-memory")?;
    }

    if found.memory.is_empty() {
        return Err(PlatformError::NoMemory);
    }
    let console = match (console_path, found.console) {
        (None, _) => return Err(PlatformError::NoConsole),
        (Some(_), None) => return Err(PlatformError::ConsoleNotFound),
        (Some(_), Some(console)) => console,
    };
    let Some(gic) = found.gic else {
        return Err(if found.any_interrupt_controller {
            PlatformError::UnsupportedInterruptController
        } else {
            PlatformError::NoInterruptController
        });
    };
    let timer = found.timer.ok_or(PlatformError::NoTimer)?.decode(&gic)?;
    if found.cpus.is_empty() {
        return Err(PlatformError::NoCpus);
    }

    let properties = root.ok_or(PlatformError::BadStructure { offset: 0 })?;
    Ok(Platform {
        model: truncated(properties.string("model").unwrap_or("")),
        memory: found.memory,
        reserved,
        console,
        gic: gic.gic,
        timer,
        cpus: found.cpus,
        cpus_truncated: found.cpus_truncated,
        psci: found.psci,
        bootargs: truncated(
            chosen
                .and_then(|chosen| chosen.string("bootargs"))
                .unwrap_or(""),
        ),
    })
}

/// `/chosen`'s `stdout-path` (or its old name `linux,stdout-path`) without
/// the `:options` suffix.
fn stdout_path<'a>(chosen: Properties<'a>) -> Option<&'a str> {
    let value = chosen
        .string("stdout-path")
        .or_else(|| chosen.string("linux,stdout-path"))?;
    value.split(':').next()
}

/// Appends a non-empty `region` to `list`; empty ones are dropped.
fn push_region<const N: usize>(
    list: &mut Vec<MemoryRegion, N>,
    region: MemoryRegion,
    node: &'static str,
) -> Result<(), PlatformError> {
    if region.size == 0 {
        return Ok(());
    }
    list.push(region)
        .map_err(|_| PlatformError::TooManyRegions { node, limit: N })
}

/// The prefix of `text` that fits in `N` bytes, cut at a character boundary.
fn truncated<const N: usize>(text: &str) -> String<N> {
    let mut out = String::new();
    for character in text.chars() {
        if out.push(character).is_err() {
            break;
        }
    }
    out
}

// ---- What pass 2 collects ------------------------------------------------------

const GIC_V2_COMPATIBLES: &[&str] = &[
    "arm,cortex-a15-gic",
    "arm,gic-400",
    "arm,cortex-a9-gic",
    "arm,gic-v2",
];
const GIC_V3_COMPATIBLES: &[&str] = &["arm,gic-v3"];
const TIMER_COMPATIBLES: &[&str] = &["arm,armv8-timer", "arm,armv7-timer"];

/// The GIC with what decoding the timer's interrupts needs.
struct FoundGic {
    gic: Gic,
    phandle: Option<u32>,
    interrupt_cells: usize,
}

/// The timer node's raw interrupts, decoded once the GIC is known (it may come
/// later in the tree).
#[derive(Clone, Copy)]
struct FoundTimer<'a> {
    interrupts: Option<&'a [u8]>,
    interrupt_parent: Option<&'a [u8]>,
}

impl FoundTimer<'_> {
    fn decode(self, gic: &FoundGic) -> Result<TimerInterrupts, PlatformError> {
        let parent = self.interrupt_parent.and_then(be32_value);
        if parent.is_none() || parent != gic.phandle {
            return Err(PlatformError::TimerNotOnGic);
        }
        let interrupts = self.interrupts.ok_or(PlatformError::MissingInterrupt {
            node: "timer",
            index: 0,
        })?;
        let interrupt = |index| {
            gic_interrupt(interrupts, gic.interrupt_cells, index, "timer")?.ok_or(
                PlatformError::MissingInterrupt {
                    node: "timer",
                    index,
                },
            )
        };
        Ok(TimerInterrupts {
            secure_physical: interrupt(0)?,
            nonsecure_physical: interrupt(1)?,
            virtual_timer: interrupt(2)?,
            hypervisor_physical: interrupt(3)?,
        })
    }
}

#[derive(Default)]
struct Found<'a> {
    memory: Vec<MemoryRegion, MAX_MEMORY_REGIONS>,
    reserved_memory: Vec<MemoryRegion, MAX_RESERVED_REGIONS>,
    console: Option<Console>,
    gic: Option<FoundGic>,
    any_interrupt_controller: bool,
    timer: Option<FoundTimer<'a>>,
    cpus: Vec<Cpu, MAX_CPUS>,
    cpus_truncated: bool,
    psci: Option<PsciConduit>,
}

impl<'a> Found<'a> {
    /// Looks at the last node of `path` (root first).
    fn visit(
        &mut self,
        path: &[Node<'a>],
        console_path: Option<&str>,
    ) -> Result<(), PlatformError> {
        let Some(node) = path.last() else {
            return Ok(());
        };
        let depth = path.len() - 1;
        let parent_name = path.len().checked_sub(2).and_then(|index| path.get(index));
        let parent_name = parent_name.map_or("", |parent| parent.name);

        if depth == 1 && node.is_device_type("memory") {
            self.add_memory(path)?;
        }
        if depth == 2 && parent_name == "reserved-memory" {
            self.add_reserved(path)?;
        }
        if self.console.is_none() && console_path.is_some_and(|target| is_at_path(path, target)) {
            self.console = Some(console(path)?);
        }
        if node.interrupt_controller {
            self.any_interrupt_controller = true;
            if self.gic.is_none() && node.is_enabled() {
                self.gic = gic(path)?;
            }
        }
        if self.timer.is_none() && node.is_compatible(TIMER_COMPATIBLES) && node.is_enabled() {
            self.timer = Some(FoundTimer {
                interrupts: node.properties.get("interrupts"),
                interrupt_parent: node.interrupt_parent,
            });
        }
        if depth == 2 && parent_name == "cpus" && node.is_device_type("cpu") {
            let cpu = cpu(path)?;
            if self.cpus.push(cpu).is_err() {
                self.cpus_truncated = true;
            }
        }
        if depth == 1 && (node.name == "psci" || node.is_compatible(&["arm,psci"])) {
            self.psci = Some(match node.properties.string("method") {
                Some("smc") => PsciConduit::Smc,
                Some("hvc") => PsciConduit::Hvc,
                _ => return Err(PlatformError::BadPsciMethod),
            });
        }
        Ok(())
    }

    fn add_memory(&mut self, path: &[Node<'a>]) -> Result<(), PlatformError> {
        for index in 0.. {
            let Some(region) = register(path, index, "memory")? else {
                break;
            };
            push_region(&mut self.memory, region, "memory")?;
        }
        Ok(())
    }

    fn add_reserved(&mut self, path: &[Node<'a>]) -> Result<(), PlatformError> {
        for index in 0.. {
            let Some(region) = register(path, index, "reserved-memory")? else {
                break;
            };
            push_region(&mut self.reserved_memory, region, "reserved-memory")?;
        }
        Ok(())
    }
}

/// Whether the last node of `path` is the node `target` (an absolute path;
/// a component without `@unit` matches a node name with any unit address).
fn is_at_path(path: &[Node<'_>], target: &str) -> bool {
    let mut components = target.split('/').filter(|component| !component.is_empty());
    for node in path.iter().skip(1) {
        match components.next() {
            Some(component)
                if node.name == component
                    || (!component.contains('@')
                        && node.name.split('@').next() == Some(component)) => {}
            _ => return false,
        }
    }
    path.len() > 1 && components.next().is_none()
}

fn console(path: &[Node<'_>]) -> Result<Console, PlatformError> {
    let Some(node) = path.last() else {
        return Err(PlatformError::ConsoleNotFound);
    };
    let kind = if node.is_compatible(&["arm,pl011"]) {
        UartKind::Pl011
    } else if node.is_compatible(&["brcm,bcm2835-aux-uart"]) {
        UartKind::Bcm2835Aux
    } else {
        return Err(PlatformError::UnsupportedConsole);
    };
    let region = register(path, 0, "console")?.ok_or(PlatformError::MissingRegister {
        node: "console",
        index: 0,
    })?;
    let interrupt = node
        .properties
        .get("interrupts")
        .and_then(|interrupts| gic_interrupt(interrupts, 3, 0, "console").ok().flatten());
    Ok(Console {
        kind,
        region,
        interrupt,
    })
}

/// The GIC at the end of `path`, or `None` if it is another kind of
/// interrupt controller.
fn gic(path: &[Node<'_>]) -> Result<Option<FoundGic>, PlatformError> {
    let Some(node) = path.last() else {
        return Ok(None);
    };
    let version = if node.is_compatible(GIC_V2_COMPATIBLES) {
        2
    } else if node.is_compatible(GIC_V3_COMPATIBLES) {
        3
    } else {
        return Ok(None);
    };
    let required = |index| {
        register(path, index, "gic")?.ok_or(PlatformError::MissingRegister { node: "gic", index })
    };
    let interrupt_cells = node
        .u32_property("#interrupt-cells", "gic")?
        .and_then(|cells| usize::try_from(cells).ok())
        // Type and number, flags, and for GICv3 PPIs an affinity partition.
        .filter(|cells| (2..=4).contains(cells))
        .ok_or(PlatformError::BadProperty {
            node: "gic",
            property: "#interrupt-cells",
        })?;
    let maintenance_interrupt = match node.properties.get("interrupts") {
        Some(interrupts) => gic_interrupt(interrupts, interrupt_cells, 0, "gic")?,
        None => None,
    };
    let gic = if version == 2 {
        Gic::V2 {
            distributor: required(0)?,
            cpu_interface: required(1)?,
            hyp_interface: register(path, 2, "gic")?,
            virtual_cpu_interface: register(path, 3, "gic")?,
            maintenance_interrupt,
        }
    } else {
        let count = node
            .u32_property("#redistributor-regions", "gic")?
            .unwrap_or(1);
        let mut redistributors = Vec::new();
        for index in 1..=usize::try_from(count).unwrap_or(usize::MAX) {
            redistributors
                .push(required(index)?)
                .map_err(|_| PlatformError::TooManyRegions {
                    node: "gic",
                    limit: MAX_REDISTRIBUTOR_REGIONS,
                })?;
        }
        Gic::V3 {
            distributor: required(0)?,
            redistributors,
            maintenance_interrupt,
        }
    };
    let phandle = node
        .u32_property("phandle", "gic")?
        .or(node.u32_property("linux,phandle", "gic")?);
    Ok(Some(FoundGic {
        gic,
        phandle,
        interrupt_cells,
    }))
}

fn cpu(path: &[Node<'_>]) -> Result<Cpu, PlatformError> {
    let (Some(node), Some(cpus)) = (
        path.last(),
        path.len().checked_sub(2).and_then(|i| path.get(i)),
    ) else {
        return Err(PlatformError::NoCpus);
    };
    // A CPU's reg is an MPIDR, not an address: it is read, not translated.
    let address_cells = cpus.cells("#address-cells", 2, "cpu")?;
    let size_cells = cpus.cells("#size-cells", 1, "cpu")?;
    let reg = node
        .properties
        .get("reg")
        .ok_or(PlatformError::MissingRegister {
            node: "cpu",
            index: 0,
        })?;
    let (mpidr, _) = reg_entry(reg, address_cells, size_cells, 0, "cpu")?.ok_or(
        PlatformError::MissingRegister {
            node: "cpu",
            index: 0,
        },
    )?;
    let enable_method = if node.has_string("enable-method", "psci") {
        EnableMethod::Psci
    } else if node.has_string("enable-method", "spin-table") {
        // Always 64 bits (two cells), whatever /cpus says about addresses.
        let release_address = node
            .properties
            .get("cpu-release-addr")
            .and_then(|value| read_cells(value, 2))
            .ok_or(PlatformError::MissingReleaseAddress { mpidr })?;
        EnableMethod::SpinTable { release_address }
    } else {
        EnableMethod::None
    };
    Ok(Cpu {
        mpidr,
        enable_method,
    })
}

/// Decodes entry `index` of a GIC interrupt specifier list into an INTID;
/// `None` past the end.
fn gic_interrupt(
    interrupts: &[u8],
    cells: usize,
    index: usize,
    node: &'static str,
) -> Result<Option<u32>, PlatformError> {
    let entry_length = cells * 4;
    if !interrupts.len().is_multiple_of(entry_length) {
        return Err(PlatformError::BadProperty {
            node,
            property: "interrupts",
        });
    }
    let Some(start) = index.checked_mul(entry_length) else {
        return Ok(None);
    };
    let (Some(kind), Some(number)) = (
        be32(interrupts, start),
        be32(interrupts, start.saturating_add(4)),
    ) else {
        return Ok(None);
    };
    // Cell 0: 0 = SPI (INTID 32 + n), 1 = PPI (INTID 16 + n); cell 1: n.
    let intid = match kind {
        0 if number < 988 => 32 + number,
        1 if number < 16 => 16 + number,
        _ => return Err(PlatformError::BadInterrupt { node, index }),
    };
    Ok(Some(intid))
}

// ---- Addresses -----------------------------------------------------------------

/// `reg` entry `index` of the last node of `path`, translated to a CPU
/// physical address; `None` past the end (or without `reg`).
fn register(
    path: &[Node<'_>],
    index: usize,
    role: &'static str,
) -> Result<Option<MemoryRegion>, PlatformError> {
    let Some((node, ancestors)) = path.split_last() else {
        return Ok(None);
    };
    let Some(parent) = ancestors.last() else {
        return Ok(None);
    };
    let Some(reg) = node.properties.get("reg") else {
        return Ok(None);
    };
    let address_cells = parent.cells("#address-cells", 2, role)?;
    let size_cells = parent.cells("#size-cells", 1, role)?;
    if address_cells == 0 {
        return Err(PlatformError::BadProperty {
            node: role,
            property: "#address-cells",
        });
    }
    let Some((address, size)) = reg_entry(reg, address_cells, size_cells, index, role)? else {
        return Ok(None);
    };
    translate(ancestors, address, size, role).map(Some)
}

/// Entry `index` of a `reg`-like list of (address, size) pairs; `None` past
/// the end.
fn reg_entry(
    value: &[u8],
    address_cells: usize,
    size_cells: usize,
    index: usize,
    role: &'static str,
) -> Result<Option<(u64, u64)>, PlatformError> {
    let entry_length = (address_cells + size_cells) * 4;
    if entry_length == 0 || !value.len().is_multiple_of(entry_length) {
        return Err(PlatformError::BadProperty {
            node: role,
            property: "reg",
        });
    }
    let Some(entry) = index
        .checked_mul(entry_length)
        .and_then(|start| value.get(start..start.checked_add(entry_length)?))
    else {
        return Ok(None);
    };
    let (address, size) = entry.split_at(address_cells * 4);
    match (
        read_cells(address, address_cells),
        read_cells(size, size_cells),
    ) {
        (Some(address), Some(size)) => Ok(Some((address, size))),
        _ => Err(PlatformError::BadProperty {
            node: role,
            property: "reg",
        }),
    }
}

/// Maps a bus address of a child of `ancestors.last()` up to the root's
/// address space through each bus's `ranges`.
fn translate(
    ancestors: &[Node<'_>],
    mut address: u64,
    size: u64,
    role: &'static str,
) -> Result<MemoryRegion, PlatformError> {
    // Walk from the innermost bus up; the root's space is the CPU's.
    for level in (1..ancestors.len()).rev() {
        let (Some(bus), Some(above)) = (ancestors.get(level), ancestors.get(level - 1)) else {
            break;
        };
        let ranges = bus
            .properties
            .get("ranges")
            .ok_or(PlatformError::NoRanges { node: role })?;
        if ranges.is_empty() {
            continue; // `ranges;`: identity mapping.
        }
        let child_cells = bus.cells("#address-cells", 2, role)?;
        let parent_cells = above.cells("#address-cells", 2, role)?;
        let size_cells = bus.cells("#size-cells", 1, role)?;
        let entry_length = (child_cells + parent_cells + size_cells) * 4;
        if entry_length == 0 || !ranges.len().is_multiple_of(entry_length) {
            return Err(PlatformError::BadProperty {
                node: role,
                property: "ranges",
            });
        }
        let mut translated = None;
        for entry in ranges.chunks_exact(entry_length) {
            let (child, rest) = entry.split_at(child_cells * 4);
            let (parent, length) = rest.split_at(parent_cells * 4);
            let (Some(child), Some(parent), Some(length)) = (
                read_cells(child, child_cells),
                read_cells(parent, parent_cells),
                read_cells(length, size_cells),
            ) else {
                return Err(PlatformError::BadProperty {
                    node: role,
                    property: "ranges",
                });
            };
            let Some(offset) = address.checked_sub(child) else {
                continue;
            };
            if offset < length && size <= length - offset {
                translated = parent.checked_add(offset);
                break;
            }
        }
        address = translated.ok_or(PlatformError::AddressNotInRanges {
            node: role,
            address,
        })?;
    }
    Ok(MemoryRegion {
        base: address,
        size,
    })
}

/// A big-endian number of 0, 1 or 2 cells; `None` for more cells or the
/// wrong length.
fn read_cells(bytes: &[u8], cells: usize) -> Option<u64> {
    match (cells, bytes.len()) {
        (0, 0) => Some(0),
        (1, 4) => be32(bytes, 0).map(u64::from),
        (2, 8) => be64(bytes, 0),
        _ => None,
    }
}

// ---- The blob ------------------------------------------------------------------

const FDT_MAGIC: u32 = 0xd00d_feed;
const HEADER_LENGTH: usize = 40;
const TOKEN_BEGIN_NODE: u32 = 1;
const TOKEN_END_NODE: u32 = 2;
const TOKEN_PROP: u32 = 3;
const TOKEN_NOP: u32 = 4;
const TOKEN_END: u32 = 9;

fn be32(bytes: &[u8], offset: usize) -> Option<u32> {
    let bytes = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

fn be64(bytes: &[u8], offset: usize) -> Option<u64> {
    let bytes = bytes.get(offset..offset.checked_add(8)?)?;
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// A property value that is exactly one cell.
fn be32_value(value: &[u8]) -> Option<u32> {
    if value.len() == 4 {
        be32(value, 0)
    } else {
        None
    }
}

/// A checked view of the blob's three blocks.
///
/// # Invariants
///
/// `structure` and `strings` lie inside the header's `totalsize`;
/// `reservations` starts at the memory reservation block and runs to the end
/// of the blob.
struct Blob<'a> {
    structure: &'a [u8],
    strings: &'a [u8],
    reservations: &'a [u8],
}

impl<'a> Blob<'a> {
    fn new(dtb: &'a [u8]) -> Result<Self, PlatformError> {
        let field = |index: usize| {
            be32(dtb, index * 4)
                .and_then(|value| usize::try_from(value).ok())
                .ok_or(PlatformError::BadHeader)
        };
        if dtb.len() < HEADER_LENGTH || be32(dtb, 0) != Some(FDT_MAGIC) {
            return Err(PlatformError::BadHeader);
        }
        let total_size = field(1)?;
        let (off_struct, off_strings, off_reservations) = (field(2)?, field(3)?, field(4)?);
        let (version, last_compatible) = (field(5)?, field(6)?);
        let (size_strings, size_struct) = (field(8)?, field(9)?);
        if version < 17 || last_compatible > 17 {
            return Err(PlatformError::UnsupportedVersion {
                version: u32::try_from(version).unwrap_or(u32::MAX),
            });
        }
        let data = dtb
            .get(..total_size)
            .filter(|data| data.len() >= HEADER_LENGTH)
            .ok_or(PlatformError::BadHeader)?;
        let block = |offset: usize, size: usize| {
            offset
                .checked_add(size)
                .and_then(|end| data.get(offset..end))
                .filter(|_| offset >= HEADER_LENGTH)
                .ok_or(PlatformError::BadHeader)
        };
        if !off_struct.is_multiple_of(4) || !off_reservations.is_multiple_of(8) {
            return Err(PlatformError::BadHeader);
        }
        Ok(Blob {
            structure: block(off_struct, size_struct)?,
            strings: block(off_strings, size_strings)?,
            reservations: block(
                off_reservations,
                total_size.saturating_sub(off_reservations),
            )?,
        })
    }

    /// The `/memreserve/` entries, up to the terminating empty entry.
    fn memory_reservations(&self) -> impl Iterator<Item = Result<MemoryRegion, PlatformError>> {
        let mut offset = 0usize;
        let mut done = false;
        core::iter::from_fn(move || {
            if done {
                return None;
            }
            let entry = be64(self.reservations, offset).zip(
                offset
                    .checked_add(8)
                    .and_then(|next| be64(self.reservations, next)),
            );
            offset = offset.saturating_add(16);
            match entry {
                None => {
                    done = true;
                    Some(Err(PlatformError::BadHeader))
                }
                Some((0, 0)) => {
                    done = true;
                    None
                }
                Some((base, size)) => Some(Ok(MemoryRegion { base, size })),
            }
        })
    }
}

/// Reads tokens from the structure block.
#[derive(Clone, Copy)]
struct Cursor<'a> {
    structure: &'a [u8],
    offset: usize,
}

impl<'a> Cursor<'a> {
    fn error(&self) -> PlatformError {
        PlatformError::BadStructure {
            offset: self.offset,
        }
    }

    fn peek(&self) -> Result<u32, PlatformError> {
        be32(self.structure, self.offset).ok_or(self.error())
    }

    fn u32(&mut self) -> Result<u32, PlatformError> {
        let value = self.peek()?;
        self.offset += 4;
        Ok(value)
    }

    /// Moves past `length` bytes and the padding to the next 4-byte boundary.
    fn skip(&mut self, length: usize) -> Result<(), PlatformError> {
        self.offset = self
            .offset
            .checked_add(length)
            .and_then(|end| end.checked_next_multiple_of(4))
            .ok_or(self.error())?;
        Ok(())
    }

    /// The NUL-terminated name after a `BEGIN_NODE` token.
    fn node_name(&mut self) -> Result<&'a str, PlatformError> {
        let rest = self.structure.get(self.offset..).ok_or(self.error())?;
        let length = rest
            .iter()
            .position(|&byte| byte == 0)
            .ok_or(self.error())?;
        let name = rest.get(..length).ok_or(self.error())?;
        let name = core::str::from_utf8(name).map_err(|_| self.error())?;
        self.skip(length + 1)?;
        Ok(name)
    }

    /// The name's offset in the strings block and the value after a `PROP`
    /// token.
    fn property(&mut self, strings: &[u8]) -> Result<(usize, &'a [u8]), PlatformError> {
        let at = self.error();
        let length = usize::try_from(self.u32()?).map_err(|_| at)?;
        let name = usize::try_from(self.u32()?).map_err(|_| at)?;
        let value = self
            .offset
            .checked_add(length)
            .and_then(|end| self.structure.get(self.offset..end))
            .ok_or(at)?;
        self.skip(length)?;
        if name >= strings.len() {
            return Err(at);
        }
        Ok((name, value))
    }
}

/// Whether the string at `offset` in the strings block is `name`.
fn name_is(strings: &[u8], offset: usize, name: &str) -> bool {
    let end = offset.saturating_add(name.len());
    strings.get(offset..end) == Some(name.as_bytes()) && strings.get(end) == Some(&0)
}

/// The properties of one node: a validated run of `PROP` and `NOP` tokens.
#[derive(Clone, Copy)]
struct Properties<'a> {
    structure: &'a [u8],
    strings: &'a [u8],
    start: usize,
    end: usize,
}

impl<'a> Properties<'a> {
    /// (name offset, value) pairs.
    fn iter(self) -> impl Iterator<Item = (usize, &'a [u8])> {
        let mut cursor = Cursor {
            structure: self.structure,
            offset: self.start,
        };
        core::iter::from_fn(move || {
            // The walk checked these tokens; stop quietly if they change.
            while cursor.offset < self.end {
                match cursor.u32().ok()? {
                    TOKEN_NOP => {}
                    TOKEN_PROP => return cursor.property(self.strings).ok(),
                    _ => return None,
                }
            }
            None
        })
    }

    fn get(self, name: &str) -> Option<&'a [u8]> {
        self.iter()
            .find(|&(offset, _)| name_is(self.strings, offset, name))
            .map(|(_, value)| value)
    }

    /// The first string of a string or string-list property.
    fn string(self, name: &str) -> Option<&'a str> {
        first_string(self.get(name)?)
    }
}

/// The first string of a string-list value (strings each end with a NUL).
fn first_string(value: &[u8]) -> Option<&str> {
    let length = value.iter().position(|&byte| byte == 0)?;
    core::str::from_utf8(value.get(..length)?).ok()
}

fn string_list_contains(value: &[u8], wanted: &str) -> bool {
    // Each string ends with a NUL; split the value without the last one.
    value.strip_suffix(&[0]).is_some_and(|strings| {
        strings
            .split(|&byte| byte == 0)
            .any(|item| item == wanted.as_bytes())
    })
}

/// A node on the walk's stack.
#[derive(Clone, Copy)]
struct Node<'a> {
    /// The name with its unit address; empty for the root.
    name: &'a str,
    properties: Properties<'a>,
    /// The raw `interrupt-parent`, this node's or the nearest ancestor's.
    interrupt_parent: Option<&'a [u8]>,
    /// The properties every node is checked for, found while walking so the
    /// checks do not scan the properties again.
    compatible: &'a [u8],
    device_type: Option<&'a [u8]>,
    status: Option<&'a [u8]>,
    interrupt_controller: bool,
}

impl<'a> Node<'a> {
    /// Whether the string list property `name` contains `wanted`.
    fn has_string(&self, name: &str, wanted: &str) -> bool {
        self.properties
            .get(name)
            .is_some_and(|value| string_list_contains(value, wanted))
    }

    fn is_compatible(&self, any_of: &[&str]) -> bool {
        any_of
            .iter()
            .any(|wanted| string_list_contains(self.compatible, wanted))
    }

    /// Whether `device_type` is `wanted`.
    fn is_device_type(&self, wanted: &str) -> bool {
        self.device_type.and_then(first_string) == Some(wanted)
    }

    fn is_enabled(&self) -> bool {
        matches!(
            self.status.and_then(first_string),
            None | Some("okay" | "ok")
        )
    }

    fn u32_property(
        &self,
        name: &'static str,
        role: &'static str,
    ) -> Result<Option<u32>, PlatformError> {
        match self.properties.get(name) {
            None => Ok(None),
            Some(value) => be32_value(value)
                .map(Some)
                .ok_or(PlatformError::BadProperty {
                    node: role,
                    property: name,
                }),
        }
    }

    /// `#address-cells` or `#size-cells` for this node's children: at most 2.
    fn cells(
        &self,
        name: &'static str,
        default: usize,
        role: &'static str,
    ) -> Result<usize, PlatformError> {
        match self.u32_property(name, role)? {
            None => Ok(default),
            Some(cells @ 0..=2) => Ok(cells as usize),
            Some(_) => Err(PlatformError::BadProperty {
                node: role,
                property: name,
            }),
        }
    }
}

/// Calls `visit` for every node in depth-first order with the path from the
/// root to it. Iterative: the stack holds [`MAX_DEPTH`] nodes.
fn walk<'a>(
    blob: &Blob<'a>,
    mut visit: impl FnMut(&[Node<'a>]) -> Result<(), PlatformError>,
) -> Result<(), PlatformError> {
    let mut stack: Vec<Node<'a>, MAX_DEPTH> = Vec::new();
    let mut cursor = Cursor {
        structure: blob.structure,
        offset: 0,
    };
    let mut root_done = false;
    loop {
        let token_at = cursor.error();
        match cursor.u32()? {
            TOKEN_NOP => {}
            TOKEN_BEGIN_NODE if !root_done => {
                let name = cursor.node_name()?;
                let mut node = Node {
                    name,
                    properties: Properties {
                        structure: blob.structure,
                        strings: blob.strings,
                        start: cursor.offset,
                        end: cursor.offset,
                    },
                    interrupt_parent: stack.last().and_then(|parent| parent.interrupt_parent),
                    compatible: &[],
                    device_type: None,
                    status: None,
                    interrupt_controller: false,
                };
                loop {
                    match cursor.peek()? {
                        TOKEN_NOP => cursor.skip(4)?,
                        TOKEN_PROP => {
                            // Errors point at the PROP token.
                            let token_at = cursor.error();
                            cursor.skip(4)?;
                            let (name, value) =
                                cursor.property(blob.strings).map_err(|_| token_at)?;
                            let is = |wanted| name_is(blob.strings, name, wanted);
                            if is("compatible") {
                                node.compatible = value;
                            } else if is("device_type") {
                                node.device_type = Some(value);
                            } else if is("status") {
                                node.status = Some(value);
                            } else if is("interrupt-controller") {
                                node.interrupt_controller = true;
                            } else if is("interrupt-parent") {
                                node.interrupt_parent = Some(value);
                            }
                        }
                        _ => break,
                    }
                }
                node.properties.end = cursor.offset;
                stack.push(node).map_err(|_| PlatformError::TooDeep)?;
                visit(&stack)?;
            }
            TOKEN_END_NODE => {
                stack.pop().ok_or(token_at)?;
                root_done = stack.is_empty();
            }
            TOKEN_END if root_done => return Ok(()),
            _ => return Err(token_at),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Error paths and corner cases on small synthetic trees. The trees are
    //! made by a tiny FDT writer that exists only here (the tests have `std`).
    //! The real trees are checked in `tests/platform.rs`.

    use super::*;
    use std::borrow::ToOwned;
    use std::format;
    use std::string::String as StdString;
    use std::vec;
    use std::vec::Vec as StdVec;

    // ---- A tiny FDT writer ----------------------------------------------------

    #[derive(Clone, Debug)]
    struct TestNode {
        name: StdString,
        properties: StdVec<(StdString, StdVec<u8>)>,
        children: StdVec<TestNode>,
    }

    impl TestNode {
        fn new(name: &str) -> Self {
            TestNode {
                name: name.to_owned(),
                properties: vec![],
                children: vec![],
            }
        }

        fn with(mut self, name: &str, value: StdVec<u8>) -> Self {
            self.properties.push((name.to_owned(), value));
            self
        }

        fn child(mut self, child: TestNode) -> Self {
            self.children.push(child);
            self
        }

        /// The node at `path` ("/" is the root); panics if there is none.
        fn at(&mut self, path: &str) -> &mut TestNode {
            let mut node = self;
            for component in path.split('/').filter(|c| !c.is_empty()) {
                node = node
                    .children
                    .iter_mut()
                    .find(|child| child.name == component)
                    .unwrap_or_else(|| panic!("no node {component} in {path}"));
            }
            node
        }

        fn set(&mut self, path: &str, name: &str, value: StdVec<u8>) -> &mut Self {
            let node = self.at(path);
            node.properties.retain(|(existing, _)| existing != name);
            node.properties.push((name.to_owned(), value));
            self
        }

        fn unset(&mut self, path: &str, name: &str) -> &mut Self {
            let node = self.at(path);
            let before = node.properties.len();
            node.properties.retain(|(existing, _)| existing != name);
            assert_ne!(before, node.properties.len(), "{path} has no {name}");
            self
        }

        fn remove(&mut self, path: &str) -> &mut Self {
            let (parent, name) = path.rsplit_once('/').expect("absolute path");
            let parent = self.at(parent);
            let before = parent.children.len();
            parent.children.retain(|child| child.name != name);
            assert_ne!(before, parent.children.len(), "no node {path}");
            self
        }

        fn add(&mut self, path: &str, child: TestNode) -> &mut Self {
            self.at(path).children.push(child);
            self
        }
    }

    fn cells(values: &[u32]) -> StdVec<u8> {
        values
            .iter()
            .flat_map(|value| value.to_be_bytes())
            .collect()
    }

    /// A string or, with `\0` inside, a string list.
    fn text(value: &str) -> StdVec<u8> {
        let mut bytes = value.as_bytes().to_vec();
        bytes.push(0);
        bytes
    }

    fn empty() -> StdVec<u8> {
        vec![]
    }

    /// Serializes a tree as dtc does: header, memory reservations, structure,
    /// strings.
    fn dtb(root: &TestNode, reservations: &[(u64, u64)]) -> StdVec<u8> {
        fn write_node(out: &mut StdVec<u8>, strings: &mut StdVec<u8>, node: &TestNode) {
            out.extend(TOKEN_BEGIN_NODE.to_be_bytes());
            out.extend(node.name.as_bytes());
            out.push(0);
            pad(out);
            for (name, value) in &node.properties {
                let offset = find_or_add(strings, name);
                out.extend(TOKEN_PROP.to_be_bytes());
                out.extend(u32::try_from(value.len()).unwrap().to_be_bytes());
                out.extend(u32::try_from(offset).unwrap().to_be_bytes());
                out.extend(value);
                pad(out);
            }
            for child in &node.children {
                write_node(out, strings, child);
            }
            out.extend(TOKEN_END_NODE.to_be_bytes());
        }
        fn pad(out: &mut StdVec<u8>) {
            while !out.len().is_multiple_of(4) {
                out.push(0);
            }
        }
        fn find_or_add(strings: &mut StdVec<u8>, name: &str) -> usize {
            let mut wanted = name.as_bytes().to_vec();
            wanted.push(0);
            if let Some(offset) = strings.windows(wanted.len()).position(|w| w == wanted)
                && (offset == 0 || strings[offset - 1] == 0)
            {
                return offset;
            }
            strings.extend(&wanted);
            strings.len() - wanted.len()
        }

        let mut structure = vec![];
        let mut strings = vec![];
        write_node(&mut structure, &mut strings, root);
        structure.extend(TOKEN_END.to_be_bytes());
        let mut reservation_block = vec![];
        for &(address, size) in reservations.iter().chain(&[(0, 0)]) {
            reservation_block.extend(address.to_be_bytes());
            reservation_block.extend(size.to_be_bytes());
        }
        let off_reservations = HEADER_LENGTH;
        let off_struct = off_reservations + reservation_block.len();
        let off_strings = off_struct + structure.len();
        let total = off_strings + strings.len();
        let header = [
            FDT_MAGIC as usize,
            total,
            off_struct,
            off_strings,
            off_reservations,
            17,
            16,
            0,
            strings.len(),
            structure.len(),
        ]
        .map(|field| u32::try_from(field).unwrap());
        let mut blob: StdVec<u8> = header
            .iter()
            .flat_map(|field| field.to_be_bytes())
            .collect();
        blob.extend(reservation_block);
        blob.extend(structure);
        blob.extend(strings);
        blob
    }

    // ---- The base tree ----------------------------------------------------------

    /// A Pi-like tree that parses: the UART and the GIC sit under a bus whose
    /// `ranges` move 0x7e000000 to 0xfe000000 and 0x40000000 to 0xff800000.
    fn base() -> TestNode {
        let cpu = |reg: u32| {
            TestNode::new(&format!("cpu@{reg}"))
                .with("device_type", text("cpu"))
                .with("reg", cells(&[reg]))
                .with("enable-method", text("psci"))
        };
        TestNode::new("")
            .with("#address-cells", cells(&[2]))
            .with("#size-cells", cells(&[1]))
            .with("model", text("Test board"))
            .with("interrupt-parent", cells(&[1]))
            .child(
                TestNode::new("memory@40000000")
                    .with("device_type", text("memory"))
                    .with("reg", cells(&[0, 0x4000_0000, 0x1000_0000])),
            )
            .child(
                TestNode::new("chosen")
                    .with("stdout-path", text("serial0:115200n8"))
                    .with("bootargs", text("console=ttyAMA0 quiet")),
            )
            .child(TestNode::new("aliases").with("serial0", text("/soc/serial@7e201000")))
            .child(
                TestNode::new("cpus")
                    .with("#address-cells", cells(&[1]))
                    .with("#size-cells", cells(&[0]))
                    .child(TestNode::new("cpu-map"))
                    .child(cpu(0))
                    .child(cpu(1)),
            )
            .child(
                TestNode::new("psci")
                    .with("compatible", text("arm,psci-1.0\0arm,psci-0.2"))
                    .with("method", text("hvc")),
            )
            .child(
                TestNode::new("timer")
                    .with("compatible", text("arm,armv8-timer"))
                    .with(
                        "interrupts",
                        cells(&[1, 13, 8, 1, 14, 8, 1, 11, 8, 1, 10, 8]),
                    ),
            )
            .child(
                TestNode::new("soc")
                    .with("compatible", text("simple-bus"))
                    .with("#address-cells", cells(&[1]))
                    .with("#size-cells", cells(&[1]))
                    .with(
                        "ranges",
                        cells(&[
                            0x7e00_0000,
                            0,
                            0xfe00_0000,
                            0x0180_0000, // peripherals
                            0x4000_0000,
                            0,
                            0xff80_0000,
                            0x0080_0000, // ARM local
                        ]),
                    )
                    .child(
                        TestNode::new("serial@7e201000")
                            .with("compatible", text("arm,pl011\0arm,primecell"))
                            .with("reg", cells(&[0x7e20_1000, 0x200])),
                    )
                    .child(
                        TestNode::new("interrupt-controller@40041000")
                            .with("compatible", text("arm,gic-400"))
                            .with("interrupt-controller", empty())
                            .with("#interrupt-cells", cells(&[3]))
                            .with("phandle", cells(&[1]))
                            .with(
                                "reg",
                                cells(&[
                                    0x4004_1000,
                                    0x1000,
                                    0x4004_2000,
                                    0x2000, // GICD, GICC
                                    0x4004_4000,
                                    0x2000,
                                    0x4004_6000,
                                    0x2000, // GICH, GICV
                                ]),
                            )
                            .with("interrupts", cells(&[1, 9, 0xf04])),
                    ),
            )
    }

    fn parse_tree(root: &TestNode) -> Result<Platform, PlatformError> {
        parse(&dtb(root, &[]))
    }

    fn error_of(root: &TestNode) -> PlatformError {
        match parse_tree(root) {
            Ok(platform) => panic!("expected an error, parsed {platform:?}"),
            Err(error) => error,
        }
    }

    fn region(base: u64, size: u64) -> MemoryRegion {
        MemoryRegion { base, size }
    }

    fn uart(tree: &mut TestNode) -> &mut TestNode {
        tree.at("/soc/serial@7e201000")
    }

    const GIC: &str = "/soc/interrupt-controller@40041000";

    // ---- The happy path ---------------------------------------------------------

    #[test]
    fn base_tree_parses_with_translated_addresses() {
        let platform = parse(&dtb(&base(), &[(0x4000_0000, 0x1000)])).unwrap();
        assert_eq!(platform.model.as_str(), "Test board");
        assert_eq!(
            platform.memory.as_slice(),
            &[region(0x4000_0000, 0x1000_0000)]
        );
        assert_eq!(platform.reserved.as_slice(), &[region(0x4000_0000, 0x1000)]);
        assert_eq!(
            platform.console,
            Console {
                kind: UartKind::Pl011,
                region: region(0xfe20_1000, 0x200),
                interrupt: None,
            }
        );
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
        let psci = |mpidr| Cpu {
            mpidr,
            enable_method: EnableMethod::Psci,
        };
        assert_eq!(platform.cpus.as_slice(), &[psci(0), psci(1)]);
        assert!(!platform.cpus_truncated);
        assert_eq!(platform.psci, Some(PsciConduit::Hvc));
        assert_eq!(platform.bootargs.as_str(), "console=ttyAMA0 quiet");
    }

    #[test]
    fn memory_region_end_saturates() {
        assert_eq!(region(0x4000_0000, 0x1000).end(), 0x4000_1000);
        assert_eq!(region(u64::MAX - 1, 0x10).end(), u64::MAX);
    }

    // ---- Header and structure -------------------------------------------------------

    #[test]
    fn garbage_is_bad_header() {
        let good = dtb(&base(), &[]);
        assert_eq!(parse(&[]).unwrap_err(), PlatformError::BadHeader);
        assert_eq!(parse(&[0; 64]).unwrap_err(), PlatformError::BadHeader);
        assert_eq!(
            parse(b"not a device tree, just some text.......").unwrap_err(),
            PlatformError::BadHeader
        );
        assert_eq!(parse(&good[..39]).unwrap_err(), PlatformError::BadHeader);
        // Truncated: the header claims more bytes than there are.
        assert_eq!(
            parse(&good[..good.len() - 1]).unwrap_err(),
            PlatformError::BadHeader
        );
        let mut bad_magic = good.clone();
        bad_magic[0] ^= 1;
        assert_eq!(parse(&bad_magic).unwrap_err(), PlatformError::BadHeader);
        // The structure block reaching past the end.
        let mut bad_offset = good.clone();
        bad_offset[8..12].copy_from_slice(&0x00ff_fff0u32.to_be_bytes());
        assert_eq!(parse(&bad_offset).unwrap_err(), PlatformError::BadHeader);
        // Bytes after totalsize are ignored.
        let mut padded = good.clone();
        padded.extend([0xa5; 100]);
        assert!(parse(&padded).is_ok());
    }

    #[test]
    fn old_format_version_is_refused() {
        let mut blob = dtb(&base(), &[]);
        blob[20..24].copy_from_slice(&16u32.to_be_bytes());
        assert_eq!(
            parse(&blob).unwrap_err(),
            PlatformError::UnsupportedVersion { version: 16 }
        );
    }

    #[test]
    fn total_size_reads_the_header() {
        let blob = dtb(&base(), &[]);
        assert_eq!(total_size(&blob[..8]), Some(blob.len()));
        assert_eq!(total_size(&blob[..7]), None);
        assert_eq!(total_size(&[0xd0, 0x0d, 0xfe, 0xef, 0, 0, 1, 0]), None);
    }

    #[test]
    fn unknown_token_is_bad_structure() {
        let mut blob = dtb(&base(), &[]);
        let structure = usize::try_from(be32(&blob, 8).unwrap()).unwrap();
        blob[structure..structure + 4].copy_from_slice(&7u32.to_be_bytes());
        assert_eq!(
            parse(&blob).unwrap_err(),
            PlatformError::BadStructure { offset: 0 }
        );
    }

    #[test]
    fn property_longer_than_the_block_is_bad_structure() {
        let mut blob = dtb(&base(), &[]);
        let structure = usize::try_from(be32(&blob, 8).unwrap()).unwrap();
        // Root: BEGIN_NODE, "" padded to 4, then the first PROP's length.
        let length = structure + 12;
        assert_eq!(be32(&blob, structure + 8), Some(TOKEN_PROP));
        blob[length..length + 4].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
        assert_eq!(
            parse(&blob).unwrap_err(),
            PlatformError::BadStructure { offset: 8 }
        );
    }

    #[test]
    fn nesting_is_limited_to_max_depth() {
        let nested = |levels: usize| {
            let mut node = TestNode::new("leaf");
            for level in 1..levels {
                node = TestNode::new(&format!("level{level}")).child(node);
            }
            let mut tree = base();
            tree.add("/", node);
            tree
        };
        // The root plus MAX_DEPTH - 1 levels fit; one more does not.
        assert!(parse_tree(&nested(MAX_DEPTH - 1)).is_ok());
        assert_eq!(error_of(&nested(MAX_DEPTH)), PlatformError::TooDeep);
    }

    #[test]
    fn nop_tokens_are_skipped() {
        // QEMU's raspi4b leaves NOPs where it removed nodes; put one before the
        // first property and one between two nodes.
        let blob = dtb(&base(), &[]);
        let structure = usize::try_from(be32(&blob, 8).unwrap()).unwrap();
        let nop = TOKEN_NOP.to_be_bytes();
        let mut with_nops = blob[..structure + 8].to_vec();
        with_nops.extend(nop);
        with_nops.extend(&blob[structure + 8..]);
        let end = with_nops.len() - usize::try_from(be32(&blob, 32).unwrap()).unwrap() - 8;
        // The last two tokens are the root's END_NODE and END.
        assert_eq!(be32(&with_nops, end), Some(TOKEN_END_NODE));
        with_nops.splice(end..end, nop);
        let grow = |field: usize, by: u32, blob: &mut StdVec<u8>| {
            let value = be32(blob, field).unwrap() + by;
            blob[field..field + 4].copy_from_slice(&value.to_be_bytes());
        };
        grow(4, 8, &mut with_nops); // totalsize
        grow(12, 8, &mut with_nops); // off_dt_strings
        grow(36, 8, &mut with_nops); // size_dt_struct
        let platform = parse(&with_nops).unwrap();
        assert_eq!(platform.model.as_str(), "Test board");
        assert_eq!(platform.cpus.len(), 2);
    }

    // ---- Memory -----------------------------------------------------------------------

    #[test]
    fn no_memory_node_is_no_memory() {
        let mut tree = base();
        tree.remove("/memory@40000000");
        assert_eq!(error_of(&tree), PlatformError::NoMemory);
    }

    #[test]
    fn zero_size_memory_is_dropped() {
        let mut tree = base();
        tree.set("/memory@40000000", "reg", cells(&[0, 0x4000_0000, 0]));
        assert_eq!(error_of(&tree), PlatformError::NoMemory);
        tree.set("/memory@40000000", "reg", cells(&[0, 0, 0, 1, 0, 0x1000]));
        let platform = parse_tree(&tree).unwrap();
        assert_eq!(platform.memory.as_slice(), &[region(0x1_0000_0000, 0x1000)]);
    }

    #[test]
    fn too_many_memory_ranges_is_an_error() {
        let mut tree = base();
        let reg: StdVec<u32> = (0..9).flat_map(|i| [0, i * 0x1000_0000, 0x1000]).collect();
        tree.set("/memory@40000000", "reg", cells(&reg));
        assert_eq!(
            error_of(&tree),
            PlatformError::TooManyRegions {
                node: "memory",
                limit: MAX_MEMORY_REGIONS
            }
        );
    }

    #[test]
    fn reserved_memory_children_and_memreserve_entries_are_reserved() {
        let mut tree = base();
        tree.add(
            "/",
            TestNode::new("reserved-memory")
                .with("#address-cells", cells(&[2]))
                .with("#size-cells", cells(&[1]))
                .with("ranges", empty())
                .child(
                    TestNode::new("linux,cma")
                        .with("size", cells(&[0x400_0000]))
                        .with("reusable", empty()),
                )
                .child(
                    TestNode::new("firmware@4f000000")
                        .with("reg", cells(&[0, 0x4f00_0000, 0x10_0000])),
                )
                .child(
                    TestNode::new("nvram@0")
                        .with("reg", cells(&[0, 0, 0]))
                        .with("status", text("disabled")),
                ),
        );
        let platform = parse(&dtb(&tree, &[(0, 0x1000), (0x4800_0000, 0)])).unwrap();
        assert_eq!(
            platform.reserved.as_slice(),
            &[region(0, 0x1000), region(0x4f00_0000, 0x10_0000)]
        );
    }

    // ---- Console --------------------------------------------------------------------------

    #[test]
    fn no_stdout_path_is_no_console() {
        let mut tree = base();
        tree.unset("/chosen", "stdout-path");
        assert_eq!(error_of(&tree), PlatformError::NoConsole);
        tree.remove("/chosen");
        assert_eq!(error_of(&tree), PlatformError::NoConsole);
    }

    #[test]
    fn stdout_path_may_be_a_path_with_options() {
        let mut tree = base();
        tree.set(
            "/chosen",
            "stdout-path",
            text("/soc/serial@7e201000:115200n8"),
        );
        assert_eq!(
            parse_tree(&tree).unwrap().console.region,
            region(0xfe20_1000, 0x200)
        );
        // A component without a unit address matches the node's base name.
        tree.set("/chosen", "stdout-path", text("/soc/serial"));
        assert_eq!(
            parse_tree(&tree).unwrap().console.region,
            region(0xfe20_1000, 0x200)
        );
    }

    #[test]
    fn stdout_path_to_nowhere_is_console_not_found() {
        let mut tree = base();
        tree.set("/chosen", "stdout-path", text("/soc/serial@7e215040"));
        assert_eq!(error_of(&tree), PlatformError::ConsoleNotFound);
        tree.set("/chosen", "stdout-path", text("/soc/serial@7e201000/extra"));
        assert_eq!(error_of(&tree), PlatformError::ConsoleNotFound);
    }

    #[test]
    fn stdout_path_with_unknown_alias_is_unknown_alias() {
        let mut tree = base();
        tree.set("/chosen", "stdout-path", text("serial1:115200n8"));
        assert_eq!(error_of(&tree), PlatformError::UnknownAlias);
        tree.remove("/aliases");
        tree.set("/chosen", "stdout-path", text("serial0"));
        assert_eq!(error_of(&tree), PlatformError::UnknownAlias);
    }

    #[test]
    fn console_kinds() {
        let mut tree = base();
        uart(&mut tree).properties[0].1 = text("brcm,bcm2835-aux-uart");
        assert_eq!(
            parse_tree(&tree).unwrap().console.kind,
            UartKind::Bcm2835Aux
        );
        uart(&mut tree).properties[0].1 = text("ns16550a");
        assert_eq!(error_of(&tree), PlatformError::UnsupportedConsole);
    }

    #[test]
    fn console_without_reg_is_missing_register() {
        let mut tree = base();
        tree.unset("/soc/serial@7e201000", "reg");
        assert_eq!(
            error_of(&tree),
            PlatformError::MissingRegister {
                node: "console",
                index: 0
            }
        );
    }

    #[test]
    fn reg_of_the_wrong_length_is_bad_property() {
        let mut tree = base();
        tree.set(
            "/soc/serial@7e201000",
            "reg",
            cells(&[0x7e20_1000, 0x200, 0]),
        );
        assert_eq!(
            error_of(&tree),
            PlatformError::BadProperty {
                node: "console",
                property: "reg"
            }
        );
    }

    // ---- Address translation ----------------------------------------------------------

    #[test]
    fn bus_without_ranges_is_not_translatable() {
        let mut tree = base();
        tree.unset("/soc", "ranges");
        assert_eq!(error_of(&tree), PlatformError::NoRanges { node: "console" });
    }

    #[test]
    fn empty_ranges_are_the_identity() {
        let mut tree = base();
        tree.set("/soc", "ranges", empty());
        let platform = parse_tree(&tree).unwrap();
        assert_eq!(platform.console.region, region(0x7e20_1000, 0x200));
        let Gic::V2 { distributor, .. } = platform.gic else {
            panic!("not a GICv2")
        };
        assert_eq!(distributor, region(0x4004_1000, 0x1000));
    }

    #[test]
    fn address_outside_ranges_is_an_error() {
        let mut tree = base();
        tree.set("/soc/serial@7e201000", "reg", cells(&[0x7f80_0000, 0x200]));
        assert_eq!(
            error_of(&tree),
            PlatformError::AddressNotInRanges {
                node: "console",
                address: 0x7f80_0000
            }
        );
        // Starts inside the range but runs past its end.
        tree.set("/soc/serial@7e201000", "reg", cells(&[0x7f7f_ff00, 0x200]));
        assert_eq!(
            error_of(&tree),
            PlatformError::AddressNotInRanges {
                node: "console",
                address: 0x7f7f_ff00
            }
        );
    }

    #[test]
    fn nested_buses_translate_at_every_level() {
        // /soc/bridge maps its 0x1000.. to /soc's 0x7e200000.., which /soc
        // maps to 0xfe200000..; the bridge uses 2 address cells.
        let mut tree = base();
        tree.add(
            "/soc",
            TestNode::new("bridge@7e200000")
                .with("#address-cells", cells(&[2]))
                .with("#size-cells", cells(&[1]))
                .with("ranges", cells(&[0, 0x1000, 0x7e20_0000, 0x1_0000]))
                .child(
                    TestNode::new("serial@1200")
                        .with("compatible", text("arm,pl011"))
                        .with("reg", cells(&[0, 0x1200, 0x100])),
                ),
        );
        tree.set(
            "/chosen",
            "stdout-path",
            text("/soc/bridge@7e200000/serial@1200"),
        );
        assert_eq!(
            parse_tree(&tree).unwrap().console.region,
            region(0xfe20_0200, 0x100)
        );
    }

    #[test]
    fn three_address_cells_are_unsupported() {
        let mut tree = base();
        tree.set("/soc", "#address-cells", cells(&[3]));
        assert_eq!(
            error_of(&tree),
            PlatformError::BadProperty {
                node: "console",
                property: "#address-cells"
            }
        );
    }

    // ---- Interrupt controller --------------------------------------------------------------

    #[test]
    fn no_interrupt_controller_is_reported() {
        let mut tree = base();
        tree.remove(GIC);
        assert_eq!(error_of(&tree), PlatformError::NoInterruptController);
    }

    #[test]
    fn only_other_interrupt_controllers_is_unsupported() {
        let mut tree = base();
        tree.set(GIC, "compatible", text("brcm,bcm2836-l1-intc"));
        assert_eq!(
            error_of(&tree),
            PlatformError::UnsupportedInterruptController
        );
        // A disabled GIC does not count either.
        tree.set(GIC, "compatible", text("arm,gic-400"));
        tree.set(GIC, "status", text("disabled"));
        assert_eq!(
            error_of(&tree),
            PlatformError::UnsupportedInterruptController
        );
        tree.set(GIC, "status", text("okay"));
        assert!(parse_tree(&tree).is_ok());
    }

    #[test]
    fn the_gic_is_chosen_among_several_controllers() {
        // Like the Pi: the ARM local controller comes first in /soc.
        let mut tree = base();
        let soc = tree.at("/soc");
        soc.children.insert(
            0,
            TestNode::new("local_intc@40000000")
                .with("compatible", text("brcm,bcm2836-l1-intc"))
                .with("interrupt-controller", empty())
                .with("#interrupt-cells", cells(&[2]))
                .with("reg", cells(&[0x4000_0000, 0x100])),
        );
        let platform = parse_tree(&tree).unwrap();
        assert_eq!(platform.gic.version(), 2);
        let Gic::V2 { distributor, .. } = platform.gic else {
            panic!("not a GICv2")
        };
        assert_eq!(distributor, region(0xff84_1000, 0x1000));
    }

    #[test]
    fn gicv2_needs_distributor_and_cpu_interface() {
        let mut tree = base();
        tree.set(GIC, "reg", cells(&[0x4004_1000, 0x1000]));
        assert_eq!(
            error_of(&tree),
            PlatformError::MissingRegister {
                node: "gic",
                index: 1
            }
        );
        tree.unset(GIC, "reg");
        assert_eq!(
            error_of(&tree),
            PlatformError::MissingRegister {
                node: "gic",
                index: 0
            }
        );
    }

    #[test]
    fn gicv2_without_virtualization_extensions() {
        let mut tree = base();
        tree.set(
            GIC,
            "reg",
            cells(&[0x4004_1000, 0x1000, 0x4004_2000, 0x2000]),
        );
        tree.unset(GIC, "interrupts");
        let platform = parse_tree(&tree).unwrap();
        assert_eq!(
            platform.gic,
            Gic::V2 {
                distributor: region(0xff84_1000, 0x1000),
                cpu_interface: region(0xff84_2000, 0x2000),
                hyp_interface: None,
                virtual_cpu_interface: None,
                maintenance_interrupt: None,
            }
        );
        assert_eq!(platform.gic.maintenance_interrupt(), None);
    }

    #[test]
    fn gicv3_with_two_redistributor_regions() {
        let mut tree = base();
        tree.set(GIC, "compatible", text("arm,gic-v3"));
        tree.set(GIC, "#redistributor-regions", cells(&[2]));
        tree.set(
            GIC,
            "reg",
            cells(&[
                0x4000_0000,
                0x1_0000,
                0x4010_0000,
                0x4_0000,
                0x4020_0000,
                0x4_0000,
            ]),
        );
        let platform = parse_tree(&tree).unwrap();
        let Gic::V3 {
            distributor,
            redistributors,
            maintenance_interrupt,
        } = &platform.gic
        else {
            panic!("not a GICv3: {:?}", platform.gic);
        };
        assert_eq!(*distributor, region(0xff80_0000, 0x1_0000));
        assert_eq!(
            redistributors.as_slice(),
            &[region(0xff90_0000, 0x4_0000), region(0xffa0_0000, 0x4_0000)]
        );
        assert_eq!(*maintenance_interrupt, Some(25));
        assert_eq!(platform.gic.version(), 3);

        tree.set(GIC, "#redistributor-regions", cells(&[3]));
        assert_eq!(
            error_of(&tree),
            PlatformError::MissingRegister {
                node: "gic",
                index: 3
            }
        );
        tree.set(GIC, "#redistributor-regions", cells(&[5]));
        let reg: StdVec<u32> = (0..6)
            .flat_map(|i| [0x4000_0000 + i * 0x10_0000, 0x1000])
            .collect();
        tree.set(GIC, "reg", cells(&reg));
        assert_eq!(
            error_of(&tree),
            PlatformError::TooManyRegions {
                node: "gic",
                limit: MAX_REDISTRIBUTOR_REGIONS
            }
        );
    }

    #[test]
    fn gic_interrupt_cells_must_hold_type_and_number() {
        let mut tree = base();
        tree.set(GIC, "#interrupt-cells", cells(&[1]));
        assert_eq!(
            error_of(&tree),
            PlatformError::BadProperty {
                node: "gic",
                property: "#interrupt-cells"
            }
        );
    }

    // ---- Timer -----------------------------------------------------------------------------

    #[test]
    fn no_timer_is_reported() {
        let mut tree = base();
        tree.remove("/timer");
        assert_eq!(error_of(&tree), PlatformError::NoTimer);
        let mut tree = base();
        tree.set("/timer", "status", text("disabled"));
        assert_eq!(error_of(&tree), PlatformError::NoTimer);
    }

    #[test]
    fn armv7_timer_is_accepted() {
        let mut tree = base();
        tree.set("/timer", "compatible", text("arm,armv7-timer"));
        assert_eq!(parse_tree(&tree).unwrap().timer.virtual_timer, 27);
    }

    #[test]
    fn timer_with_three_interrupts_is_missing_one() {
        let mut tree = base();
        tree.set(
            "/timer",
            "interrupts",
            cells(&[1, 13, 8, 1, 14, 8, 1, 11, 8]),
        );
        assert_eq!(
            error_of(&tree),
            PlatformError::MissingInterrupt {
                node: "timer",
                index: 3
            }
        );
    }

    #[test]
    fn timer_interrupt_that_is_no_ppi_or_spi_is_bad() {
        let mut tree = base();
        tree.set(
            "/timer",
            "interrupts",
            cells(&[1, 13, 8, 1, 16, 8, 1, 11, 8, 1, 10, 8]),
        );
        assert_eq!(
            error_of(&tree),
            PlatformError::BadInterrupt {
                node: "timer",
                index: 1
            }
        );
        tree.set(
            "/timer",
            "interrupts",
            cells(&[1, 13, 8, 1, 14, 8, 2, 11, 8, 1, 10, 8]),
        );
        assert_eq!(
            error_of(&tree),
            PlatformError::BadInterrupt {
                node: "timer",
                index: 2
            }
        );
        // An SPI is decoded as 32 + n (odd for a timer, but well-formed).
        tree.set(
            "/timer",
            "interrupts",
            cells(&[0, 3, 4, 1, 14, 8, 1, 11, 8, 1, 10, 8]),
        );
        assert_eq!(parse_tree(&tree).unwrap().timer.secure_physical, 35);
    }

    #[test]
    fn timer_routed_elsewhere_is_not_on_the_gic() {
        let mut tree = base();
        tree.set("/timer", "interrupt-parent", cells(&[7]));
        assert_eq!(error_of(&tree), PlatformError::TimerNotOnGic);
        // No interrupt-parent anywhere on the way up.
        let mut tree = base();
        tree.unset("/", "interrupt-parent");
        assert_eq!(error_of(&tree), PlatformError::TimerNotOnGic);
        // Its own interrupt-parent naming the GIC is enough.
        tree.set("/timer", "interrupt-parent", cells(&[1]));
        assert!(parse_tree(&tree).is_ok());
    }

    // ---- CPUs and PSCI ---------------------------------------------------------------------

    #[test]
    fn no_cpu_nodes_is_no_cpus() {
        let mut tree = base();
        tree.remove("/cpus/cpu@0").remove("/cpus/cpu@1");
        assert_eq!(error_of(&tree), PlatformError::NoCpus);
        tree.remove("/cpus");
        assert_eq!(error_of(&tree), PlatformError::NoCpus);
    }

    #[test]
    fn cpus_beyond_max_cpus_are_truncated() {
        let mut tree = base();
        for mpidr in 2..10 {
            tree.add(
                "/cpus",
                TestNode::new(&format!("cpu@{mpidr}"))
                    .with("device_type", text("cpu"))
                    .with("reg", cells(&[mpidr])),
            );
        }
        let platform = parse_tree(&tree).unwrap();
        assert!(platform.cpus_truncated);
        assert_eq!(platform.cpus.len(), MAX_CPUS);
        let mpidrs: StdVec<u64> = platform.cpus.iter().map(|cpu| cpu.mpidr).collect();
        assert_eq!(mpidrs, [0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(platform.cpus[7].enable_method, EnableMethod::None);
    }

    #[test]
    fn spin_table_cpus_with_two_cell_mpidrs() {
        let mut tree = base();
        tree.set("/cpus", "#address-cells", cells(&[2]));
        tree.set("/cpus/cpu@0", "reg", cells(&[0, 0]));
        tree.set("/cpus/cpu@1", "reg", cells(&[0x1, 0x0000_0100]));
        for cpu in ["/cpus/cpu@0", "/cpus/cpu@1"] {
            tree.set(cpu, "enable-method", text("spin-table"));
        }
        tree.set("/cpus/cpu@0", "cpu-release-addr", cells(&[0, 0xd8]));
        tree.set("/cpus/cpu@1", "cpu-release-addr", cells(&[0x1, 0xe0]));
        let platform = parse_tree(&tree).unwrap();
        assert_eq!(
            platform.cpus.as_slice(),
            &[
                Cpu {
                    mpidr: 0,
                    enable_method: EnableMethod::SpinTable {
                        release_address: 0xd8
                    }
                },
                Cpu {
                    mpidr: 0x1_0000_0100,
                    enable_method: EnableMethod::SpinTable {
                        release_address: 0x1_0000_00e0
                    },
                },
            ]
        );
    }

    #[test]
    fn spin_table_without_release_address_is_an_error() {
        let mut tree = base();
        tree.set("/cpus/cpu@1", "enable-method", text("spin-table"));
        assert_eq!(
            error_of(&tree),
            PlatformError::MissingReleaseAddress { mpidr: 1 }
        );
        // One cell is not the 64-bit address the binding asks for.
        tree.set("/cpus/cpu@1", "cpu-release-addr", cells(&[0xe0]));
        assert_eq!(
            error_of(&tree),
            PlatformError::MissingReleaseAddress { mpidr: 1 }
        );
    }

    #[test]
    fn unknown_enable_method_is_none() {
        let mut tree = base();
        tree.set("/cpus/cpu@1", "enable-method", text("brcm,bcm2836-smp"));
        assert_eq!(
            parse_tree(&tree).unwrap().cpus[1].enable_method,
            EnableMethod::None
        );
    }

    #[test]
    fn cpu_without_reg_is_missing_register() {
        let mut tree = base();
        tree.unset("/cpus/cpu@1", "reg");
        assert_eq!(
            error_of(&tree),
            PlatformError::MissingRegister {
                node: "cpu",
                index: 0
            }
        );
    }

    #[test]
    fn psci_method() {
        let mut tree = base();
        tree.set("/psci", "method", text("smc"));
        assert_eq!(parse_tree(&tree).unwrap().psci, Some(PsciConduit::Smc));
        tree.set("/psci", "method", text("svc"));
        assert_eq!(error_of(&tree), PlatformError::BadPsciMethod);
        tree.unset("/psci", "method");
        assert_eq!(error_of(&tree), PlatformError::BadPsciMethod);
        tree.remove("/psci");
        assert_eq!(parse_tree(&tree).unwrap().psci, None);
    }

    // ---- Strings ------------------------------------------------------------------------------

    #[test]
    fn long_model_and_bootargs_are_cut_not_refused() {
        let mut tree = base();
        let bootargs: StdString = (0..300)
            .map(|i| char::from(b"abcdefghijklmnopqrstuvwxyz"[i % 26]))
            .collect();
        tree.set("/chosen", "bootargs", text(&bootargs));
        // 63 ASCII bytes then a 2-byte character: it does not fit in 64.
        let model = format!("{}é and more", "m".repeat(63));
        tree.set("/", "model", text(&model));
        let platform = parse_tree(&tree).unwrap();
        assert_eq!(platform.bootargs.as_str(), &bootargs[..256]);
        assert_eq!(platform.model.as_str(), "m".repeat(63));
    }

    #[test]
    fn missing_model_and_bootargs_are_empty() {
        let mut tree = base();
        tree.unset("/", "model").unset("/chosen", "bootargs");
        let platform = parse_tree(&tree).unwrap();
        assert_eq!(platform.model.as_str(), "");
        assert_eq!(platform.bootargs.as_str(), "");
    }

    #[test]
    fn errors_read_as_sentences() {
        assert_eq!(
            format!(
                "{}",
                PlatformError::MissingRegister {
                    node: "gic",
                    index: 1
                }
            ),
            "the gic node has no reg entry 1"
        );
        assert_eq!(
            format!(
                "{}",
                PlatformError::AddressNotInRanges {
                    node: "console",
                    address: 0x7f80_0000
                }
            ),
            "bus address 0x7f800000 of the console node lies outside its bus's ranges"
        );
        assert_eq!(
            format!("{}", PlatformError::NoConsole),
            "/chosen has no stdout-path"
        );
        assert_eq!(
            format!("{}", PlatformError::BadStructure { offset: 0x10 }),
            "the device tree's structure block is malformed at byte 0x10"
        );
    }
}
