//! The boot path, from the first Rust instruction to an idle system.
//!
//! Boot core: read the device tree (MMU off), build the EL2 identity map and
//! turn the MMU on, install the console, vectors and `HCR_EL2`, bring up the
//! GIC and the timer, start the other cores, and check that every core takes
//! timer interrupts. Secondary cores: the same per-core steps.
//!
//! Every failure on this path says on the console what went wrong and parks
//! the core; a board without a readable device tree still gets a message on
//! the board's early UART.

use core::fmt;
use core::sync::atomic::{AtomicUsize, Ordering};

use board_configs::{Board, EarlyUart};
use hyp_core::platform::{self, Gic, Platform, UartKind};

use crate::arch::registers;
use crate::arch::{self, mmu};
use crate::console::{self, ConsoleUart};
use hyp_core::root_task::Region;

use crate::{interrupts, println, smp, threads};

/// The board this image was linked for (`HYP_BOARD` at build time).
pub const BOARD: &Board = match board_configs::find(env!("HYP_BOARD")) {
    Some(board) => board,
    // boot: evaluated at compile time, so a wrong HYP_BOARD fails the build.
    None => panic!("HYP_BOARD names no board in board-configs"),
};

/// Timer interrupts each core takes before it reports (the system tests
/// look for this number).
pub const TICKS_TO_REPORT: u64 = 5;
/// Period of the EL2 timer tick.
const TICK_PERIOD_US: u64 = 10_000;
/// How long the boot core waits for the other cores to come online and to
/// report their ticks.
const BRING_UP_TIMEOUT_US: u64 = 10_000_000;
/// The device tree is never larger than this (Linux has the same limit).
const MAX_DEVICE_TREE_SIZE: usize = 2 * 1024 * 1024;

/// Cores that reported their timer interrupts.
static CORES_TICKED: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn early_uart() -> ConsoleUart {
    match BOARD.early_uart {
        EarlyUart::Pl011(base) => ConsoleUart {
            kind: UartKind::Pl011,
            base,
        },
        EarlyUart::Bcm2835Aux(base) => ConsoleUart {
            kind: UartKind::Bcm2835Aux,
            base,
        },
    }
}

/// Writes to `uart` before the console is installed (MMU off, one core).
fn early_print(uart: ConsoleUart, arguments: fmt::Arguments<'_>) {
    // SAFETY: with the MMU off every access is to the physical address as
    // Device memory; `uart` is the board's UART or the device tree's console,
    // and only this core runs.
    unsafe { uart.write_fmt(arguments) };
}

/// The device tree blob at `address`, bounded by its own header.
///
/// # Safety
/// `address` is what the boot loader passed in `x0`: by the boot protocol,
/// a device tree in RAM that nothing else writes while the kernel boots.
unsafe fn device_tree(address: u64) -> Result<&'static [u8], &'static str> {
    if address == 0 || !address.is_multiple_of(8) {
        return Err("no device tree: x0 is 0 or not 8-byte aligned");
    }
    let Ok(pointer) = usize::try_from(address) else {
        return Err("address out of range");
    };
    // SAFETY: the caller's contract: the header (40 bytes) is in RAM.
    let header = unsafe { core::slice::from_raw_parts(pointer as *const u8, 40) };
    let size = platform::total_size(header).ok_or("no device tree: bad magic at x0")?;
    if size > MAX_DEVICE_TREE_SIZE {
        return Err("device tree header claims more than 2 MiB");
    }
    // SAFETY: the caller's contract: the whole blob, `totalsize` bytes, is in
    // RAM and stays unchanged; it is only read through this slice.
    Ok(unsafe { core::slice::from_raw_parts(pointer as *const u8, size) })
}

/// Per-core setup once the MMU is on: index, vectors, traps, routing.
///
/// # Safety
/// Called once per core, with the core's own index, MMU on.
unsafe fn set_up_this_core(index: usize) {
    // SAFETY: the caller's contract gives a unique index.
    unsafe { registers::set_core_index(index) };
    // SAFETY: the vector table is entry.S's, mapped executable.
    unsafe { registers::set_vector_table(arch::vector_table_address()) };
    // SAFETY: no traps are enabled, so no handler is needed.
    unsafe { registers::set_architectural_feature_traps(registers::CPTR_EL2_NO_TRAPS) };
    // SAFETY: the vectors are installed; IRQs stay masked until the GIC is
    // ready, so routing them to EL2 now is safe.
    unsafe { registers::set_hypervisor_configuration(registers::HCR_EL2_HOST) };
}

/// The boot core's Rust entry, from entry.S at EL2 with the MMU off.
#[unsafe(no_mangle)]
extern "C" fn boot_primary(device_tree_address: u64) -> ! {
    // SAFETY: the vector table is entry.S's; with the MMU off it runs from
    // its physical address. Faults from here on are reported.
    unsafe { registers::set_vector_table(arch::vector_table_address()) };
    let early = early_uart();
    // SAFETY: x0 as the boot protocol hands it over.
    let blob = match unsafe { device_tree(device_tree_address) } {
        Ok(blob) => blob,
        Err(problem) => {
            early_print(
                early,
                format_args!("hyp: {problem} (x0 = {device_tree_address:#x})\n"),
            );
            arch::park();
        }
    };
    let platform = match platform::parse(blob) {
        Ok(platform) => platform,
        Err(error) => {
            early_print(
                early,
                format_args!(
                    "hyp: cannot use the device tree at {device_tree_address:#x}: {error}\n"
                ),
            );
            arch::park();
        }
    };
    let uart = ConsoleUart {
        kind: platform.console.kind,
        base: platform.console.region.base,
    };

    // SAFETY: boot core, MMU off, nothing else runs yet.
    let translation = match unsafe { mmu::build(&platform) } {
        Ok(translation) => translation,
        Err(error) => {
            early_print(uart, format_args!("hyp: EL2 page table: {error}\n"));
            arch::park();
        }
    };
    // SAFETY: the table maps this code, the stack and statics (mmu::build).
    unsafe { mmu::enable(translation) };
    // SAFETY: mmu::build mapped the console's registers as device memory.
    unsafe { console::install(uart) };
    // SAFETY: once, on the boot core, which is core 0.
    unsafe { set_up_this_core(0) };

    print_banner(&platform, blob.len());

    if let Err(problem) = interrupts::init(&platform) {
        println!("hyp: interrupts: {problem}");
        arch::park();
    }
    println!("hyp: core 0 online (MPIDR {:#x})", registers::mpidr());
    let started = smp::start_secondary_cores(&platform, translation);
    tick_and_report(0);
    let online = smp::wait_for_cores(started, BRING_UP_TIMEOUT_US);
    wait_for_ticks(online);

    let ticked = CORES_TICKED.load(Ordering::Acquire);
    println!(
        "hyp: ready on {}: GICv{}, {} MiB of RAM, {online} of {} cores online, {ticked} took timer interrupts",
        BOARD.name,
        platform.gic.version(),
        total_memory(&platform) >> 20,
        platform.cpus.len(),
    );
    provoke_fault_if_asked();
    provoke_panic_if_asked();
    let image = arch::image_layout();
    let payload = threads::find_payload(&platform.memory, image.end);
    if let Some(payload) = payload {
        println!(
            "hyp: boot payload at {:#x}: {} MiB",
            payload.base,
            payload.size >> 20
        );
    }
    let image_end = payload.map_or(image.end, |payload| payload.base + payload.size);
    let map = threads::MemoryMap {
        ram: &platform.memory,
        reserved: [
            Region {
                base: image.start,
                size: image_end - image.start,
            },
            Region {
                base: device_tree_address,
                size: blob.len() as u64,
            },
        ],
    };
    let (gic_virtual_cpu_interface, device) = match &platform.gic {
        Gic::V2 {
            virtual_cpu_interface: Some(region),
            ..
        } => (
            region.base,
            Some(Region {
                base: region.base,
                size: region.size,
            }),
        ),
        _ => (0, None),
    };
    let extras = hyp_core::root_task::BootExtras {
        payload,
        gic_version: u64::from(platform.gic.version()),
        gic_virtual_cpu_interface,
        console_irq: u64::from(platform.console.interrupt.unwrap_or(0)),
    };
    if platform.console.interrupt.is_some() {
        console::enable_input_interrupt();
    }
    match threads::start(&map, online, device.as_slice(), &extras) {
        Ok(()) => threads::run(0),
        Err(problem) => {
            println!("hyp: no threads run: {problem}");
            idle()
        }
    }
}

/// Entered at EL1 (or EL0) instead of EL2, from entry.S with the MMU off
/// and BSS zeroed: there is no way up, so say so as clearly as possible and
/// stop.
#[unsafe(no_mangle)]
extern "C" fn boot_at_wrong_level(device_tree_address: u64, level: u64) -> ! {
    // The device tree's console if it can be read, else the board's.
    // SAFETY: x0 as the boot protocol hands it over.
    let uart = unsafe { device_tree(device_tree_address) }
        .ok()
        .and_then(|blob| platform::parse(blob).ok())
        .map(|platform| ConsoleUart {
            kind: platform.console.kind,
            base: platform.console.region.base,
        })
        .unwrap_or_else(early_uart);
    early_print(
        uart,
        format_args!(
            "hyp: entered at EL{level}; hyp must be started at EL2 (QEMU: -M virt,virtualization=on; \
             Raspberry Pi 4: the stock firmware without a custom armstub). Stopping.\n"
        ),
    );
    arch::park()
}

/// A secondary core's Rust entry, from entry.S with the MMU on.
#[unsafe(no_mangle)]
extern "C" fn boot_secondary(index: usize) -> ! {
    // SAFETY: entry.S passes the core's unique index (its slot in the MPIDR
    // list); the MMU is on.
    unsafe { set_up_this_core(index) };
    if let Err(problem) = interrupts::init_this_core(index) {
        println!("hyp: core {index}: interrupts: {problem}");
        arch::park();
    }
    println!("hyp: core {index} online (MPIDR {:#x})", registers::mpidr());
    smp::report_online();
    tick_and_report(index);
    threads::run(index)
}

fn total_memory(platform: &Platform) -> u64 {
    platform.memory.iter().map(|region| region.size).sum()
}

fn print_banner(platform: &Platform, device_tree_size: usize) {
    let image = arch::image_layout();
    println!(
        "hyp {} on {} ({}), entered at EL2 on core 0 (MPIDR {:#x})",
        env!("CARGO_PKG_VERSION"),
        BOARD.name,
        platform.model,
        registers::mpidr()
    );
    for region in &platform.memory {
        println!(
            "hyp: memory [{:#x}, {:#x}): {} MiB",
            region.base,
            region.end(),
            region.size >> 20
        );
    }
    println!(
        "hyp: {} MiB of RAM in {} region(s); hyp image [{:#x}, {:#x}); device tree {} bytes",
        total_memory(platform) >> 20,
        platform.memory.len(),
        image.start,
        image.end,
        device_tree_size
    );
    match &platform.gic {
        Gic::V2 {
            distributor,
            cpu_interface,
            hyp_interface,
            virtual_cpu_interface,
            maintenance_interrupt,
        } => {
            println!(
                "hyp: GICv2: distributor {:#x}, CPU interface {:#x}, virtualization: GICH {}, GICV {}, maintenance INTID {}",
                distributor.base,
                cpu_interface.base,
                OptionalAddress(hyp_interface.map(|region| region.base)),
                OptionalAddress(virtual_cpu_interface.map(|region| region.base)),
                OptionalNumber(*maintenance_interrupt),
            );
        }
        Gic::V3 {
            distributor,
            redistributors,
            maintenance_interrupt,
        } => {
            println!(
                "hyp: GICv3: distributor {:#x}, redistributors {:#x} ({} region(s)), maintenance INTID {}",
                distributor.base,
                redistributors
                    .first()
                    .map(|region| region.base)
                    .unwrap_or(0),
                redistributors.len(),
                OptionalNumber(*maintenance_interrupt),
            );
        }
    }
    println!(
        "hyp: console {:?} at {:#x}; timer INTIDs: EL2 physical {}, virtual {}, EL1 physical {}",
        platform.console.kind,
        platform.console.region.base,
        platform.timer.hypervisor_physical,
        platform.timer.virtual_timer,
        platform.timer.nonsecure_physical
    );
    println!(
        "hyp: {} CPU(s) in the device tree{}; PSCI: {}",
        platform.cpus.len(),
        if platform.cpus_truncated {
            " (more ignored: hyp supports 8)"
        } else {
            ""
        },
        match platform.psci {
            Some(platform::PsciConduit::Smc) => "smc",
            Some(platform::PsciConduit::Hvc) => "hvc",
            None => "none",
        }
    );
    if !platform.bootargs.is_empty() {
        println!("hyp: bootargs: {}", platform.bootargs);
    }
}

struct OptionalAddress(Option<u64>);

impl fmt::Display for OptionalAddress {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(address) => write!(formatter, "{address:#x}"),
            None => formatter.write_str("absent"),
        }
    }
}

struct OptionalNumber(Option<u32>);

impl fmt::Display for OptionalNumber {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(number) => write!(formatter, "{number}"),
            None => formatter.write_str("absent"),
        }
    }
}

/// Starts this core's tick, waits for [`TICKS_TO_REPORT`] timer interrupts,
/// reports them and stops the tick (nothing needs it until the scheduler
/// arrives).
fn tick_and_report(index: usize) {
    interrupts::start_tick(TICK_PERIOD_US);
    while interrupts::ticks(index) < TICKS_TO_REPORT {
        registers::wait_for_interrupt();
    }
    interrupts::stop_tick();
    println!(
        "hyp: core {index} took {} timer interrupts",
        interrupts::ticks(index)
    );
    CORES_TICKED.fetch_add(1, Ordering::AcqRel);
}

fn wait_for_ticks(cores: usize) {
    let deadline = smp::deadline_in(BRING_UP_TIMEOUT_US);
    while CORES_TICKED.load(Ordering::Acquire) < cores {
        if smp::passed(deadline) {
            println!(
                "hyp: only {} of {cores} cores reported timer interrupts in time",
                CORES_TICKED.load(Ordering::Acquire)
            );
            return;
        }
        core::hint::spin_loop();
    }
}

/// Debug builds with `provoke-el2-fault`: read an unmapped address, so the
/// system test sees the exception report. The address is in the 39-bit
/// range but mapped by nothing.
fn provoke_fault_if_asked() {
    #[cfg(feature = "provoke-el2-fault")]
    {
        const PROVOKED_FAULT_ADDRESS: usize = 0x7f_dead_b000;
        println!("hyp: provoking an EL2 data abort at {PROVOKED_FAULT_ADDRESS:#x}");
        let value: u64;
        // SAFETY: the load targets an address no table maps, so it faults
        // and the exception handler reports it and parks this core; the
        // instruction touches no memory Rust knows about.
        unsafe {
            core::arch::asm!(
                "ldr {value}, [{address}]",
                address = in(reg) PROVOKED_FAULT_ADDRESS,
                value = out(reg) value,
                options(nostack, readonly)
            );
        }
        println!("hyp: the provoked fault did not happen (read {value:#x})");
    }
}

/// Debug builds with `provoke-panic`: panic, so the system test sees the
/// panic report.
fn provoke_panic_if_asked() {
    #[cfg(feature = "provoke-panic")]
    {
        println!("hyp: provoking a kernel panic");
        // boot: deliberate, only in the provoke-panic test build.
        panic!("provoked by the provoke-panic feature");
    }
}

fn idle() -> ! {
    loop {
        registers::wait_for_interrupt();
    }
}
