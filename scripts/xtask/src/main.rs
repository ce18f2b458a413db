//! `cargo xtask`: the host build tool.
//!
//! It builds the hypervisor for a board, packs the boot image, starts QEMU
//! with the flags each board needs, and runs the tests (host tests, clippy
//! for host and target, and the system tests that boot images in QEMU and
//! read the console). `scripts/run` and `scripts/test` call it after
//! `scripts/setup`.
#![allow(
    unreachable_pub,
    reason = "a binary: `pub` marks each module's interface to the rest of the tool"
)]

mod bench;
mod image;
mod linux;
mod linux_bench;
mod payload;
mod qemu;
mod sdcard;
mod system;
mod systest;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The bare-metal target of the EL2 core (soft-float: it never touches the
/// FP/SIMD registers, which belong to guests and user threads).
pub const HYP_TARGET: &str = "aarch64-unknown-none-softfloat";

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  build    [--board B] [--features F] [--system S]
                                          build hyp and its boot image; with --system,
                                          pack a system description (a name in
                                          board-configs/systems/ or a file) and its guests
  run      [--board B] [--gic 2|3] [--smp N] [--features F] [--system S | --no-system]
                                          build, then boot in QEMU (quit: Ctrl-A X); the
                                          `default` system (Linux and the Rust test guest)
                                          unless told otherwise
  test                                    host tests, clippy (host and target), the
                                          Miri tests, every system test in QEMU, and
                                          one benchmark run (figures printed only)
  systest  [NAME...]                      only the system tests (all, or those named)
  clippy                                  clippy for the host and the target
  miri                                    the kernel-object tests of hyp-core under Miri
                                          (nightly; about 2.5 minutes on 2 cores)
  sdcard                                  an SD card image that boots hyp on a real
                                          Raspberry Pi 4: build/sdcard/hyp-rpi4-sdcard.img
  bench                                   kernel benchmarks under QEMU -icount shift=0
                                          (instruction counts; a table, not a test)
  linux-bare [--gic 2|3] [--bench]        the Linux guest without the hypervisor: boot it,
                                          type at its shell, power it off; --bench: count
                                          the instructions from power-on to its /init
  bench-linux                             the Linux guest's boot to /init under hyp against
                                          bare, in instructions (GICv2, 1 core)

boards: qemu-virt (default), rpi4 (QEMU raspi4b; the image also boots a real Pi 4)";

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    match run(&arguments) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(arguments: &[String]) -> Result<(), String> {
    let Some((command, rest)) = arguments.split_first() else {
        println!("{USAGE}");
        return Err("no command given".into());
    };
    match command.as_str() {
        "build" => {
            let options = Options::parse(rest)?;
            let built = match &options.system {
                Some(system) => {
                    image::build_with_system(&options.board, &options.features, system)?
                }
                None => image::build(&options.board, &options.features)?,
            };
            println!("xtask: boot image {}", built.image.display());
            println!("xtask: ELF with symbols {}", built.elf.display());
            Ok(())
        }
        "run" => {
            let options = Options::parse(rest)?;
            // `run` boots the default system unless told otherwise.
            let built = if options.no_system {
                image::build(&options.board, &options.features)?
            } else {
                let system = options.system.as_deref().unwrap_or("default");
                image::build_with_system(&options.board, &options.features, system)?
            };
            let machine = qemu::Machine::for_board(&options.board, options.gic, options.smp)?;
            qemu::run_interactive(&machine, &built.image)
        }
        "test" => {
            if !rest.is_empty() {
                return Err(format!("`test` takes no options, got {rest:?}"));
            }
            host_tests()?;
            clippy()?;
            miri()?;
            systest::run_all(&[])?;
            // The benchmark build must keep working; its figures are
            // printed for the log, never compared with anything.
            bench::run()
        }
        "systest" => systest::run_all(rest),
        "clippy" => clippy(),
        "miri" => miri(),
        "sdcard" => sdcard::run(rest),
        "bench" => {
            if !rest.is_empty() {
                return Err(format!("`bench` takes no options, got {rest:?}"));
            }
            bench::run()
        }
        "linux-bare" => linux::run_bare(rest),
        "bench-linux" => linux_bench::run(rest),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command `{other}`\n{USAGE}")),
    }
}

/// Options of `build` and `run`.
#[derive(Debug, PartialEq, Eq)]
struct Options {
    board: String,
    gic: Option<u8>,
    smp: Option<u32>,
    features: Vec<String>,
    /// `--system NAME|FILE`: pack this system description and its guests.
    system: Option<String>,
    /// `--no-system`: `run` boots the hypervisor without guests.
    no_system: bool,
}

impl Options {
    fn parse(arguments: &[String]) -> Result<Options, String> {
        let mut options = Options {
            board: "qemu-virt".into(),
            gic: None,
            smp: None,
            features: Vec::new(),
            system: None,
            no_system: false,
        };
        let mut iterator = arguments.iter();
        while let Some(flag) = iterator.next() {
            let mut value = || {
                iterator
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("option {flag} needs a value"))
            };
            match flag.as_str() {
                "--board" => options.board = value()?,
                "--gic" => {
                    let text = value()?;
                    options.gic = Some(match text.as_str() {
                        "2" => 2,
                        "3" => 3,
                        _ => return Err(format!("--gic takes 2 or 3, not `{text}`")),
                    });
                }
                "--smp" => {
                    let text = value()?;
                    let cores: u32 = text
                        .parse()
                        .map_err(|_| format!("--smp takes a number of cores, not `{text}`"))?;
                    if !(1..=8).contains(&cores) {
                        return Err(format!("--smp takes 1 to 8 cores, not {cores}"));
                    }
                    options.smp = Some(cores);
                }
                "--features" => options.features.push(value()?),
                "--system" => options.system = Some(value()?),
                "--no-system" => options.no_system = true,
                other => return Err(format!("unknown option `{other}`\n{USAGE}")),
            }
        }
        if board_configs::find(&options.board).is_none() {
            let known: Vec<&str> = board_configs::BOARDS
                .iter()
                .map(|board| board.name)
                .collect();
            return Err(format!(
                "unknown board `{}`; known: {}",
                options.board,
                known.join(", ")
            ));
        }
        Ok(options)
    }
}

/// The workspace root (this crate lives in `scripts/xtask`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs `command`, echoing it, and fails with its description if it fails.
pub fn run_command(command: &mut Command) -> Result<(), String> {
    let description = format!("{command:?}");
    println!("xtask: {description}");
    let status = command
        .status()
        .map_err(|error| format!("cannot start {description}: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{description} failed ({status})"))
    }
}

pub fn cargo_command() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

fn host_tests() -> Result<(), String> {
    run_command(cargo_command().args(["test", "--workspace"]))
}

/// The hyp-core modules whose tests run under Miri: all the kernel-object
/// logic (the device-tree and ESR tests feed hundreds of thousands of
/// inputs and take hours under Miri; they are plain safe code without
/// pointers). Two groups, run as two processes side by side (Miri
/// interprets on one thread), each about 2.5 minutes on 2 cores. The
/// random tests take fewer steps and check every few steps under
/// `cfg(miri)`; the host run checks every step.
const MIRI_TEST_GROUPS: [&[&str]; 2] = [
    &[
        "kernel::",
        "ipc::",
        "tcb::",
        "elf::",
        "stage2::",
        "cap::",
        "irq::",
        "root_task::",
    ],
    &[
        "cspace::",
        "vspace::",
        "queue::",
        "scheduler::",
        "pagetable::",
        "exit::",
        "vcpu::",
    ],
];

/// Runs the Miri tests, the two groups of [`MIRI_TEST_GROUPS`] side by
/// side. `cargo miri` builds Miri's sysroot itself (`cargo miri setup`)
/// the first time.
fn miri() -> Result<(), String> {
    // `cargo +nightly` must reach rustup's proxy on PATH, not the pinned
    // toolchain's cargo that runs this tool, and not inherit its choice.
    let miri_test = || {
        let mut command = Command::new("cargo");
        command
            .current_dir(workspace_root())
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("RUSTC")
            .args(["+nightly", "miri", "test", "-p", "hyp-core", "--lib"]);
        command
    };
    // Set up and build once, so that the two runs do not race to.
    run_command(miri_test().arg("--no-run"))?;
    let [alongside, rest] = MIRI_TEST_GROUPS;
    let mut background = miri_test();
    background.arg("--").args(alongside);
    let description = format!("{background:?}");
    println!("xtask: {description} (alongside the next; its output follows when it ends)");
    let background = std::thread::spawn(move || background.output());
    let foreground = run_command(miri_test().arg("--").args(rest));
    let output = background
        .join()
        .map_err(|_| format!("the thread running {description} panicked"))?
        .map_err(|error| format!("cannot start {description}: {error}"))?;
    print!("{}", String::from_utf8_lossy(&output.stderr));
    print!("{}", String::from_utf8_lossy(&output.stdout));
    foreground?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("{description} failed ({})", output.status))
    }
}

fn clippy() -> Result<(), String> {
    run_command(cargo_command().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The bare-metal crates, for the target they run on.
    run_command(cargo_command().args([
        "clippy",
        "--target",
        HYP_TARGET,
        "-p",
        "hyp",
        "-p",
        "hyp-core",
        "-p",
        "hyp-abi",
        "-p",
        "hyp-user",
        "-p",
        "vmm-server",
        "-p",
        "pl011",
        "-p",
        "bcm2835-aux-uart",
        "-p",
        "gic",
        "-p",
        "generic-timer",
        "-p",
        "board-configs",
        "-p",
        "init",
        "-p",
        "test-guest",
        "--",
        "-D",
        "warnings",
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|word| (*word).to_owned()).collect()
    }

    #[test]
    fn parses_options() {
        let options =
            Options::parse(&strings(&["--board", "rpi4", "--smp", "4", "--gic", "3"])).unwrap();
        assert_eq!(
            options,
            Options {
                board: "rpi4".into(),
                gic: Some(3),
                smp: Some(4),
                features: vec![],
                system: None,
                no_system: false,
            }
        );
        let with_system = Options::parse(&strings(&["--system", "test-guest"])).unwrap();
        assert_eq!(with_system.system.as_deref(), Some("test-guest"));
        assert_eq!(Options::parse(&[]).unwrap().board, "qemu-virt");
    }

    #[test]
    fn rejects_bad_options_with_the_reason() {
        assert_eq!(
            Options::parse(&strings(&["--gic", "4"])).unwrap_err(),
            "--gic takes 2 or 3, not `4`"
        );
        assert_eq!(
            Options::parse(&strings(&["--smp", "0"])).unwrap_err(),
            "--smp takes 1 to 8 cores, not 0"
        );
        assert_eq!(
            Options::parse(&strings(&["--smp"])).unwrap_err(),
            "option --smp needs a value"
        );
        assert_eq!(
            Options::parse(&strings(&["--board", "pi5"])).unwrap_err(),
            "unknown board `pi5`; known: qemu-virt, rpi4"
        );
        assert!(
            Options::parse(&strings(&["--frobnicate"]))
                .unwrap_err()
                .starts_with("unknown option")
        );
    }
}
