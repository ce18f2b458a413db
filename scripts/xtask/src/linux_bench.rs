//! `cargo xtask bench-linux`: the Linux guest's boot under the hypervisor
//! against the same kernel booted bare, in instructions.
//!
//! Both boots run on QEMU `virt` (GICv2, one core) with
//! `-icount shift=0,sleep=off`, a fixed device tree (`dtb-randomness=off`)
//! and clock (`-rtc base=2024-01-01,clock=vm`), and the kernel argument
//! `bench-poweroff`: the guest's `/init` powers off right after
//! `guest-init: reached /init`. QEMU's QMP command `query-replay` answers
//! the instructions executed so far (`icount`).
//!
//! - Bare: `linux::bench` (`linux-bare --bench`), stopped exactly at the
//!   kernel's PSCI `SYSTEM_OFF`, with the reference 512 MiB and with the
//!   guest's RAM (256 MiB: Linux's boot work grows with RAM).
//! - Under the hypervisor ([`bench_under_hypervisor`]): the image of
//!   `board-configs/systems/linux-bench.sys` (the guest alone). The board
//!   keeps running after the guest's `SYSTEM_OFF` (the hypervisor does not
//!   power it off), so the tool watches the console for its VMM's line
//!   `vmm linux: guest powered off`, then stops the machine (QMP `stop`)
//!   and reads the count. That count is late by the instructions run
//!   between the line and the stop: the idle hypervisor's timer ticks. The
//!   tool measures how many the idle machine runs a second and prints the
//!   bound. A second, separate run stops at a breakpoint on the guest's
//!   first instruction (through QEMU's gdbstub) and reads the count there:
//!   the hypervisor's boot, `init`'s test suite and the building of the
//!   guest, which the bare boot has no equivalent of. Stopping the machine
//!   midway changed what followed by about 40,000 instructions (measured;
//!   the cause is not pinned down), so the two figures come from two runs;
//!   up to the guest's first instruction the runs are identical.

use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use board_configs::system;

use crate::image;
use crate::linux::{self, REACHED_INIT, SHELL_READY, qmp, rsp};
use crate::qemu::Machine;

/// The system description of the benchmark (`board-configs/systems/`).
const SYSTEM: &str = "linux-bench";
/// The guest's name in it.
const GUEST: &str = "linux";
/// The GIC of both boots.
const GIC_VERSION: u8 = 2;
/// How long one QEMU run may take.
const TIMEOUT: Duration = Duration::from_secs(120);
/// How often the console is looked at while waiting for a line.
const POLL: Duration = Duration::from_millis(1);
/// How long the idle machine runs to measure its pace after the stop.
const IDLE_WINDOW: Duration = Duration::from_millis(250);
/// How many console lines a failure report shows.
/// Where a guest's RAM starts in its own address space (`init`'s
/// `guest::RAM_BASE`); the kernel goes at this base plus the `Image`
/// header's `text_offset` (`vmm-server/src/image.rs`). A wrong value shows
/// as no breakpoint hit at EL1.
const GUEST_RAM_BASE: u64 = 0x4000_0000;
/// Where the VMM loads an `Image` whose header gives no size (booting.rst).
const OLD_IMAGE_OFFSET: u64 = 0x8_0000;
/// The signal of a gdbstub stop reply for a breakpoint or a step.
const SIGNAL_TRAP: u8 = 5;
/// Breakpoint stops at other exception levels before the guest's (QEMU's
/// boot code runs at EL2 from the same address at reset).
const MAX_OTHER_STOPS: usize = 8;

/// `init`'s line when the guest's VCPU is about to start.
fn started_line() -> String {
    format!("init: guest {GUEST}: started")
}

/// The VMM's line after the guest's PSCI `SYSTEM_OFF`.
fn powered_off_line() -> String {
    format!("vmm {GUEST}: guest powered off")
}

/// What [`bench_under_hypervisor`] measured.
#[derive(Debug, Clone, Copy)]
pub struct UnderHypervisor {
    /// Instructions from power-on to the stop after the VMM's
    /// `guest powered off` line.
    pub instructions: u64,
    /// Instructions before the guest's first instruction (a separate run,
    /// stopped there): the hypervisor's boot, `init`'s test suite and the
    /// building of the guest.
    pub before_guest: u64,
    /// The most instructions the stop may have come late by.
    pub late_by_at_most: u64,
}

impl UnderHypervisor {
    /// Instructions from the guest's first instruction to the stop.
    pub fn guest(&self) -> u64 {
        self.instructions.saturating_sub(self.before_guest)
    }
}

/// `cargo xtask bench-linux`.
pub fn run(arguments: &[String]) -> Result<(), String> {
    if !arguments.is_empty() {
        return Err(format!("`bench-linux` takes no options, got {arguments:?}"));
    }
    let guest_memory = guest_memory()?;
    let hyp = bench_under_hypervisor()?;
    let guest = linux::build_initramfs()?;
    let bare = linux::bench::run(&guest, GIC_VERSION, linux::BARE_MEMORY)?;
    let bare_same_ram = linux::bench::run(&guest, GIC_VERSION, &guest_memory)?;

    println!(
        "bench: Linux power-on to poweroff at /init: bare {}, under hyp {} instructions ({})",
        grouped(bare),
        grouped(hyp.instructions),
        change(hyp.instructions, bare)
    );
    println!(
        "bench: the guest alone (its first instruction to its poweroff): {} instructions, \
         {} against bare with its {} of RAM ({}), {} against bare with {}",
        grouped(hyp.guest()),
        change(hyp.guest(), bare_same_ram),
        mebibytes(&guest_memory),
        grouped(bare_same_ram),
        change(hyp.guest(), bare),
        mebibytes(linux::BARE_MEMORY)
    );
    println!(
        "bench: the hyp figure includes {} instructions before the guest starts (the \
         hypervisor's boot, init's test suite, building the guest), and the VMM's handling \
         of SYSTEM_OFF and its line; it may be up to {} late (idle timer ticks before the \
         stop). GICv{GIC_VERSION}, 1 core; the guest's device tree has fewer devices than \
         QEMU's (no PCIe, RTC, GPIO, GICv2m, PMU): docs/benchmarks.md",
        grouped(hyp.before_guest),
        grouped(hyp.late_by_at_most)
    );
    Ok(())
}

/// The guest's RAM in the benchmark's system description, as `-m` takes
/// it (`256M`).
fn guest_memory() -> Result<String, String> {
    let parsed = system::parse(system::shipped::LINUX_BENCH)
        .map_err(|error| format!("{SYSTEM}.sys: {error}"))?;
    let guest = parsed
        .guest(GUEST)
        .ok_or_else(|| format!("{SYSTEM}.sys has no guest `{GUEST}`"))?;
    Ok(format!("{}M", guest.ram_bytes >> 20))
}

/// Builds `hyp` with the `linux-bench` system, boots it twice and
/// measures: the instructions from power-on to the guest's poweroff (as
/// the VMM reports it), with a bound on how late the stop came, and the
/// instructions before the guest's first one.
pub fn bench_under_hypervisor() -> Result<UnderHypervisor, String> {
    let built = image::build_with_system("qemu-virt", &[], SYSTEM)?;
    let guest = linux::build_initramfs()?;
    let entry = kernel_entry(&guest.kernel)?;

    let before_guest = count_to_guest_entry(&built.image, entry)?;
    println!(
        "bench-linux: the guest's first instruction (pc {entry:#x} at EL1, a breakpoint): \
         {} instructions after power-on",
        grouped(before_guest)
    );

    let total = count_to_poweroff(&built.image)?;
    let started = match total.at_started_line {
        Some(count) => format!(
            "; a query while running at `{}` read {}, {} {} the guest's first instruction",
            started_line(),
            grouped(count),
            grouped(before_guest.abs_diff(count)),
            if count <= before_guest {
                "before"
            } else {
                "after"
            }
        ),
        None => String::new(),
    };
    println!(
        "bench-linux: under hyp, power-on to the VMM's `{}` line: {} instructions \
         (stopped {:.1} ms after the line was read{started})",
        powered_off_line(),
        grouped(total.instructions),
        total.latency.as_secs_f64() * 1e3
    );
    // The idle machine's pace includes the restart after `stop` (a
    // warp of the virtual clock), so it overstates the pace of plain
    // ticks: the bound is safe.
    if let Some(exits) = &total.exits {
        println!("bench-linux: {exits}");
    }
    let window = (total.latency + POLL).as_nanos();
    let late_by_at_most = u64::try_from(u128::from(total.idle_per_second) * window / 1_000_000_000)
        .unwrap_or(u64::MAX);
    println!(
        "bench-linux: error: after the poweroff the idle hypervisor ran {} instructions a \
         second (its timer ticks; {} ms measured after the stop), so the stop, {:.1} ms \
         after the line, came at most {} instructions late ({:.4}%)",
        grouped(total.idle_per_second),
        IDLE_WINDOW.as_millis(),
        (total.latency + POLL).as_secs_f64() * 1e3,
        grouped(late_by_at_most),
        late_by_at_most as f64 * 100.0 / total.instructions.max(1) as f64
    );
    Ok(UnderHypervisor {
        instructions: total.instructions,
        before_guest,
        late_by_at_most,
    })
}

/// The guest's first instruction: where the VMM loads the kernel `Image`.
fn kernel_entry(kernel: &Path) -> Result<u64, String> {
    let bytes = std::fs::read(kernel)
        .map_err(|error| format!("cannot read {}: {error}", kernel.display()))?;
    let word = |offset: usize| {
        bytes
            .get(offset..offset + 8)
            .and_then(|field| field.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if bytes.get(56..60) != Some(b"ARM\x64".as_slice()) {
        return Err(format!("{} is not an arm64 Image", kernel.display()));
    }
    let text_offset = word(8).ok_or("truncated Image header")?;
    let image_size = word(16).ok_or("truncated Image header")?;
    let offset = if image_size == 0 {
        OLD_IMAGE_OFFSET
    } else {
        text_offset
    };
    Ok(GUEST_RAM_BASE + offset)
}

/// The QEMU command of both hypervisor runs: `virt` as the system tests
/// start it, with one core and the benchmark's determinism flags.
fn hypervisor_command(image: &Path) -> Command {
    let mut machine = Machine::virt(GIC_VERSION, 1, true);
    if let Some(at) = machine
        .arguments
        .iter()
        .position(|argument| argument == "-M")
    {
        machine.arguments[at + 1].push_str(",dtb-randomness=off");
    }
    let mut command = machine.batch_command(image);
    command
        .args(["-icount", "shift=0,sleep=off"])
        .args(["-rtc", "base=2024-01-01,clock=vm"]);
    command
}

/// Boots `image` stopped at reset, puts a breakpoint on the guest's first
/// instruction, runs to it (stepping over hits at other exception levels)
/// and returns the instructions executed before it.
fn count_to_guest_entry(image: &Path, entry: u64) -> Result<u64, String> {
    let gdb_port = linux::free_port()?;
    let qmp_port = linux::free_port()?;
    let mut command = hypervisor_command(image);
    command
        .arg("-S")
        .arg("-gdb")
        .arg(format!("tcp:127.0.0.1:{gdb_port}"))
        .arg("-qmp")
        .arg(format!("tcp:127.0.0.1:{qmp_port},server,wait=off"));
    let mut qemu = linux::Console::start(command, "bench-linux")?;
    let outcome = run_to_guest_entry(&mut qemu, gdb_port, qmp_port, entry);
    qemu.finish();
    outcome
}

fn run_to_guest_entry(
    qemu: &mut linux::Console,
    gdb_port: u16,
    qmp_port: u16,
    entry: u64,
) -> Result<u64, String> {
    let deadline = qemu.started + TIMEOUT;
    let mut gdb = rsp::Client::new(qemu.connect(gdb_port, "gdbstub")?)?;
    let registers = gdb.target_registers(deadline)?;
    let number = |name: &str| {
        rsp::number_of(&registers, name)
            .ok_or_else(|| format!("the gdbstub's target description has no {name}"))
    };
    let pc = number("pc")?;
    let cpsr = number("cpsr")?;
    let breakpoint = format!("{entry:x},4");
    let set = |gdb: &mut rsp::Client, packet: String| -> Result<(), String> {
        let reply = gdb.request(packet.as_bytes(), deadline)?;
        if reply == b"OK" {
            Ok(())
        } else {
            Err(format!(
                "gdbstub: `{packet}` answered `{}`",
                String::from_utf8_lossy(&reply)
            ))
        }
    };
    set(&mut gdb, format!("Z0,{breakpoint}"))?;
    let mut other_stops = 0;
    loop {
        gdb.send(b"c", deadline)?;
        let reply = loop {
            if let Some(reply) = gdb.receive_until(Instant::now() + Duration::from_millis(200))? {
                break reply;
            }
            qemu.check_running("the guest's first instruction", deadline)?;
            if qemu.text().contains(&powered_off_line()) {
                return Err(qemu.failure(&format!(
                    "the guest ran and powered off without reaching the breakpoint at \
                     {entry:#x}: is its RAM still at {GUEST_RAM_BASE:#x}?"
                )));
            }
        };
        if rsp::stop_signal(&reply) != Some(SIGNAL_TRAP) {
            return Err(qemu.failure(&format!(
                "the machine stopped with `{}`, not at the breakpoint",
                String::from_utf8_lossy(&reply)
            )));
        }
        let at = gdb.read_register(pc, deadline)?;
        let level = (gdb.read_register(cpsr, deadline)? >> 2) & 0b11;
        if at == entry && level == 1 {
            break;
        }
        other_stops += 1;
        if other_stops > MAX_OTHER_STOPS {
            return Err(qemu.failure(&format!(
                "{other_stops} breakpoint stops at pc {at:#x} (EL{level}) and none at EL1"
            )));
        }
        // Step over it (QEMU's boot code at reset) with the breakpoint
        // out of the way, then put it back.
        set(&mut gdb, format!("z0,{breakpoint}"))?;
        gdb.request(b"s", deadline)?;
        set(&mut gdb, format!("Z0,{breakpoint}"))?;
    }
    let mut monitor = qmp::Client::new(qemu.connect(qmp_port, "QMP monitor")?, deadline)?;
    let count = icount(&mut monitor, deadline)?;
    if !qemu.text().contains(&started_line()) {
        return Err(qemu.failure(&format!(
            "stopped in a guest at EL1 without init's `{}` line",
            started_line()
        )));
    }
    Ok(count)
}

/// What [`count_to_poweroff`] measured.
#[derive(Debug)]
struct Poweroff {
    /// The count after the stop.
    instructions: u64,
    /// The count read without stopping when `init` said the guest starts.
    at_started_line: Option<u64>,
    /// From reading the VMM's line to the stop.
    latency: Duration,
    /// The idle machine's instructions a second after the stop.
    idle_per_second: u64,
    /// The VMM's count of the guest's exits by kind (printed right after
    /// its poweroff line).
    exits: Option<String>,
}

/// Boots `image` undisturbed, stops it when the VMM reports the guest's
/// poweroff, and reads the count; then lets the idle machine run a moment
/// to measure its pace.
fn count_to_poweroff(image: &Path) -> Result<Poweroff, String> {
    let qmp_port = linux::free_port()?;
    let mut command = hypervisor_command(image);
    command
        .arg("-S")
        .arg("-qmp")
        .arg(format!("tcp:127.0.0.1:{qmp_port},server,wait=off"));
    let mut qemu = linux::Console::start(command, "bench-linux")?;
    let outcome = run_to_poweroff(&mut qemu, qmp_port);
    qemu.finish();
    outcome
}

fn run_to_poweroff(qemu: &mut linux::Console, qmp_port: u16) -> Result<Poweroff, String> {
    let deadline = qemu.started + TIMEOUT;
    let mut monitor = qmp::Client::new(qemu.connect(qmp_port, "QMP monitor")?, deadline)?;
    monitor.execute("cont", deadline)?;
    let started = started_line();
    let powered_off = powered_off_line();
    let mut at_started_line = None;
    let (instructions, latency) = loop {
        let text = qemu.text();
        if at_started_line.is_none() && text.contains(&started) {
            at_started_line = Some(icount(&mut monitor, deadline)?);
        }
        if text.contains(&powered_off) {
            let seen = Instant::now();
            monitor.execute("stop", deadline)?;
            let latency = seen.elapsed();
            break (icount(&mut monitor, deadline)?, latency);
        }
        qemu.check_running(&format!("`{powered_off}`"), deadline)?;
        thread::sleep(POLL);
    };
    let text = qemu.text();
    if !text.contains(REACHED_INIT) || text.contains(SHELL_READY) {
        return Err(qemu.failure(&format!(
            "the guest powered off, but not from /init's `bench-poweroff` path \
             (`{REACHED_INIT}` without `{SHELL_READY}`)"
        )));
    }
    if !text.contains(" tests passed") || text.contains("FAIL") {
        return Err(qemu.failure("init's test suite did not pass"));
    }

    let before = icount(&mut monitor, deadline)?;
    let resumed = Instant::now();
    monitor.execute("cont", deadline)?;
    thread::sleep(IDLE_WINDOW);
    monitor.execute("stop", deadline)?;
    let elapsed = resumed.elapsed();
    let after = icount(&mut monitor, deadline)?;
    let idle_per_second = u64::try_from(
        u128::from(after.saturating_sub(before)) * 1_000_000_000 / elapsed.as_nanos().max(1),
    )
    .unwrap_or(u64::MAX);
    let exits = qemu
        .text()
        .lines()
        .find(|line| line.contains(" exits handled: "))
        .map(str::to_owned);
    Ok(Poweroff {
        instructions,
        at_started_line,
        latency,
        idle_per_second,
        exits,
    })
}

/// QEMU's instruction count (`query-replay`).
fn icount(monitor: &mut qmp::Client, deadline: Instant) -> Result<u64, String> {
    let reply = monitor.execute("query-replay", deadline)?;
    qmp::icount(&reply)
        .ok_or_else(|| format!("QMP query-replay answered without an icount: {reply}"))
}

/// A `-m` size in megabytes (`256M`) as the text says sizes (`256 MiB`).
fn mebibytes(size: &str) -> String {
    match size.strip_suffix('M') {
        Some(number) => format!("{number} MiB"),
        None => size.to_owned(),
    }
}

/// `value` with its thousands separated by commas.
fn grouped(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// `value` against `reference`, as a signed percentage.
fn change(value: u64, reference: u64) -> String {
    format!(
        "{:+.2}%",
        (value as f64 / reference.max(1) as f64 - 1.0) * 100.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(914_503_445), "914,503,445");
        assert_eq!(grouped(1_178_909_493), "1,178,909,493");
    }

    #[test]
    fn changes_are_signed_percentages() {
        assert_eq!(change(110, 100), "+10.00%");
        assert_eq!(change(90, 100), "-10.00%");
        assert_eq!(change(914_503_445, 914_503_445), "+0.00%");
    }

    #[test]
    fn the_guest_memory_comes_from_the_description() {
        assert_eq!(guest_memory().unwrap(), "256M");
        assert_eq!(mebibytes("256M"), "256 MiB");
        assert_eq!(mebibytes("1G"), "1G");
    }

    #[test]
    fn the_entry_follows_the_image_header() {
        let directory = std::env::temp_dir().join(format!("xtask-lbench-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("Image");
        let mut header = vec![0u8; 64];
        header[56..60].copy_from_slice(b"ARM\x64");
        header[16..24].copy_from_slice(&0x100_0000u64.to_le_bytes());
        std::fs::write(&path, &header).unwrap();
        assert_eq!(kernel_entry(&path).unwrap(), GUEST_RAM_BASE);
        header[16..24].copy_from_slice(&0u64.to_le_bytes());
        std::fs::write(&path, &header).unwrap();
        assert_eq!(
            kernel_entry(&path).unwrap(),
            GUEST_RAM_BASE + OLD_IMAGE_OFFSET
        );
        std::fs::write(&path, [0u8; 64]).unwrap();
        assert!(kernel_entry(&path).is_err());
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
