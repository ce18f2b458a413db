//! How each board is started in QEMU.
//!
//! - `qemu-virt`: `-M virt,virtualization=on` (entered at EL2), a Cortex-A72
//!   so nothing newer than the Raspberry Pi 4's ARMv8.0 sneaks in, GICv2 or
//!   GICv3, 1 GiB of RAM. QEMU generates the device tree.
//! - `rpi4`: `-M raspi4b` (entered at EL2, 4 cores only). QEMU makes no
//!   device tree of its own, so Debian's `bcm2711-rpi-4-b.dtb` is passed in
//!   (QEMU adds memory to it). The console is the mini-UART, QEMU's second
//!   serial port.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{run_command, workspace_root};

/// A QEMU machine configuration for one board.
#[derive(Debug, Clone)]
pub struct Machine {
    /// The board name (`board-configs`).
    pub board: String,
    /// Arguments after `qemu-system-aarch64`, without `-kernel` and without
    /// the serial/display options.
    pub arguments: Vec<String>,
    /// How many `-serial` ports come before the console.
    pub serial_ports_before_console: usize,
    /// Run the emulated cores on one host thread (the default: two runs
    /// fit 2 cores); `false` gives each its own thread (MTTCG), for guests
    /// whose CPUs wait for each other in spin loops, which one thread
    /// serves only at the end of each time slice.
    pub single_threaded: bool,
}

impl Machine {
    /// The machine for `board`; `gic` and `smp` override the defaults
    /// (GICv2 and 4 cores on `virt`; `raspi4b` has a GIC-400 and exactly 4
    /// cores).
    pub fn for_board(board: &str, gic: Option<u8>, smp: Option<u32>) -> Result<Machine, String> {
        match board {
            "qemu-virt" => Ok(Machine::virt(gic.unwrap_or(2), smp.unwrap_or(4), true)),
            "rpi4" => {
                if gic.is_some_and(|version| version != 2) {
                    return Err("raspi4b has a GIC-400 (GICv2); --gic 3 is not possible".into());
                }
                if smp.is_some_and(|cores| cores != 4) {
                    return Err(
                        "raspi4b always has 4 cores (QEMU refuses other -smp values)".into(),
                    );
                }
                Machine::raspi4b()
            }
            other => Err(format!("no QEMU machine for board `{other}`")),
        }
    }

    /// QEMU `virt` with `gic_version` and `cores`; `at_el2` false leaves
    /// out `virtualization=on`, so the image is entered at EL1.
    pub fn virt(gic_version: u8, cores: u32, at_el2: bool) -> Machine {
        let virtualization = if at_el2 { ",virtualization=on" } else { "" };
        let arguments = vec![
            "-M".into(),
            format!("virt{virtualization},gic-version={gic_version}"),
            "-cpu".into(),
            "cortex-a72".into(),
            "-smp".into(),
            cores.to_string(),
            "-m".into(),
            "1G".into(),
            // No default network card (it wants a boot ROM and is unused).
            "-nic".into(),
            "none".into(),
        ];
        Machine {
            board: "qemu-virt".into(),
            arguments,
            serial_ports_before_console: 0,
            single_threaded: true,
        }
    }

    /// QEMU `raspi4b` with Debian's device tree.
    pub fn raspi4b() -> Result<Machine, String> {
        let dtb = raspi4b_device_tree()?;
        let arguments = vec![
            "-M".into(),
            "raspi4b".into(),
            "-smp".into(),
            "4".into(),
            "-dtb".into(),
            dtb.display().to_string(),
        ];
        Ok(Machine {
            board: "rpi4".into(),
            arguments,
            serial_ports_before_console: 1,
            single_threaded: true,
        })
    }

    /// The full command for a non-interactive run: the console on stdout,
    /// no monitor, no display, one TCG thread (so two runs fit 2 cores).
    pub fn batch_command(&self, image: &Path) -> Command {
        let mut command = Command::new("qemu-system-aarch64");
        let threads = if self.single_threaded {
            "tcg,thread=single"
        } else {
            "tcg,thread=multi"
        };
        command.args(&self.arguments).args(["-accel", threads]);
        command.args(["-display", "none", "-monitor", "none"]);
        for _ in 0..self.serial_ports_before_console {
            command.args(["-serial", "null"]);
        }
        command.args(["-serial", "stdio", "-kernel"]).arg(image);
        command
    }
}

/// Boots `image` on `machine` with the console on this terminal.
pub fn run_interactive(machine: &Machine, image: &Path) -> Result<(), String> {
    let mut command = Command::new("qemu-system-aarch64");
    command.args(&machine.arguments).args(["-display", "none"]);
    for _ in 0..machine.serial_ports_before_console {
        command.args(["-serial", "null"]);
    }
    command.args(["-serial", "mon:stdio", "-kernel"]).arg(image);
    println!(
        "xtask: booting {} on QEMU; quit with Ctrl-A X",
        machine.board
    );
    run_command(&mut command)
}

/// Debian's Raspberry Pi 4 device tree, fetched by `scripts/fetch-debian`
/// (run here if it has not run yet).
pub fn raspi4b_device_tree() -> Result<PathBuf, String> {
    let find = || -> Option<PathBuf> {
        let modules = workspace_root().join("build/debian/root/usr/lib");
        let entries = std::fs::read_dir(&modules).ok()?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok())
            .filter(|entry| {
                entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with("linux-image-")
            })
            .map(|entry| entry.path().join("broadcom/bcm2711-rpi-4-b.dtb"))
            .filter(|path| path.exists())
            .collect();
        found.sort();
        found.pop()
    };
    if let Some(path) = find() {
        return Ok(path);
    }
    run_command(&mut Command::new(
        workspace_root().join("scripts/fetch-debian"),
    ))?;
    find().ok_or_else(|| {
        "scripts/fetch-debian ran but bcm2711-rpi-4-b.dtb is not under build/debian/root/usr/lib"
            .into()
    })
}
