//! System tests: boot real images on QEMU boards and read the console.
//!
//! Each test names a board configuration, the markers that must all appear
//! on the console, and markers that must not. It passes as soon as every
//! expected marker has been seen (and no forbidden one), and fails with the
//! whole transcript on a forbidden marker, an early QEMU exit or the
//! timeout. Two tests run at a time (one TCG thread each), to fit 2 cores.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::image;
use crate::qemu::Machine;

/// How long one boot may take before the test fails.
const TIMEOUT: Duration = Duration::from_secs(90);
/// Tests run at once.
const PARALLEL: usize = 2;
/// The address the `provoke-el2-fault` build reads (hyp's PROVOKED_FAULT_ADDRESS).
const PROVOKED_FAULT_ADDRESS: &str = "0x7fdeadb000";

/// One system test.
#[derive(Debug, Clone)]
pub struct SystemTest {
    name: &'static str,
    board: &'static str,
    features: &'static [&'static str],
    machine: MachineSpec,
    expect: Vec<String>,
    forbid: Vec<&'static str>,
    /// A system description to pack with its guests (`--system`).
    system: Option<&'static str>,
    /// Lines to type on the console, each once the transcript holds its
    /// trigger, in order.
    dialogue: &'static [(&'static str, &'static str)],
}

#[derive(Debug, Clone, Copy)]
enum MachineSpec {
    Virt {
        gic: u8,
        cores: u32,
        at_el2: bool,
    },
    /// `virt` with one host thread per core (MTTCG).
    VirtParallel {
        gic: u8,
        cores: u32,
    },
    Raspi4b,
}

impl MachineSpec {
    fn build(self) -> Result<Machine, String> {
        match self {
            MachineSpec::Virt { gic, cores, at_el2 } => Ok(Machine::virt(gic, cores, at_el2)),
            MachineSpec::VirtParallel { gic, cores } => Ok(Machine {
                single_threaded: false,
                ..Machine::virt(gic, cores, true)
            }),
            MachineSpec::Raspi4b => Machine::raspi4b(),
        }
    }
}

/// The markers of a normal boot on `cores` cores.
fn boot_markers(board: &str, gic: u8, memory: &str, cores: u32) -> Vec<String> {
    let mut markers = vec![
        format!("hyp {} on {board}", env!("CARGO_PKG_VERSION")),
        format!("GICv{gic}"),
        format!("{memory} of RAM"),
    ];
    for core in 0..cores {
        markers.push(format!("core {core} online"));
        // hyp reports a core's count once it reached TICKS_TO_REPORT (5);
        // another tick may land before the line is printed, so the number
        // is not fixed.
        markers.push(format!("core {core} took "));
    }
    markers.push(format!("{cores} of {cores} cores online"));
    markers.push("hyp: ready".into());
    // The root task runs the kernel's system tests at EL0 (init's test
    // suite: IPC with badges, faults, errors, revoke, interrupts,
    // priorities) and says whether all passed.
    markers.push("hyp: root task: entry".into());
    markers.push("init: boot info: ".into());
    markers.push("init: all ".into());
    markers.push(" tests passed".into());
    markers
}

const BOOT_FORBIDDEN: &[&str] = &[
    "unexpected",
    "PANIC",
    "did not come online",
    "failed",
    "FAIL",
    "init: panic",
    "kernel bug",
];

/// Every system test.
pub fn all() -> Vec<SystemTest> {
    let virt = |name, gic, cores| SystemTest {
        name,
        board: "qemu-virt",
        features: &[],
        machine: MachineSpec::Virt {
            gic,
            cores,
            at_el2: true,
        },
        expect: boot_markers("qemu-virt", gic, "1024 MiB", cores),
        forbid: BOOT_FORBIDDEN.to_vec(),
        system: None,
        dialogue: &[],
    };
    vec![
        virt("virt-gicv2-1core", 2, 1),
        virt("virt-gicv2-4cores", 2, 4),
        virt("virt-gicv3-4cores", 3, 4),
        SystemTest {
            name: "raspi4b-4cores",
            board: "rpi4",
            features: &[],
            machine: MachineSpec::Raspi4b,
            expect: boot_markers("rpi4", 2, "960 MiB", 4),
            forbid: BOOT_FORBIDDEN.to_vec(),
            system: None,
            dialogue: &[],
        },
        SystemTest {
            name: "el2-exception-report",
            board: "qemu-virt",
            features: &["provoke-el2-fault"],
            machine: MachineSpec::Virt {
                gic: 2,
                cores: 1,
                at_el2: true,
            },
            expect: vec![
                format!("hyp: provoking an EL2 data abort at {PROVOKED_FAULT_ADDRESS}"),
                "hyp: unexpected synchronous exception from EL2 on core 0".into(),
                "Data Abort taken without a change in Exception level (EC 0x25)".into(),
                "translation fault".into(),
                format!("FAR_EL2 {PROVOKED_FAULT_ADDRESS}"),
                // The faulting instruction is recognized as hyp's own code.
                "(hyp code +0x".into(),
                "hyp: core 0 parked".into(),
            ],
            forbid: vec!["PANIC"],
            system: None,
            dialogue: &[],
        },
        SystemTest {
            name: "panic-report",
            board: "qemu-virt",
            features: &["provoke-panic"],
            machine: MachineSpec::Virt {
                gic: 3,
                cores: 2,
                at_el2: true,
            },
            expect: vec![
                "hyp: provoking a kernel panic".into(),
                "hyp: PANIC on core 0: panicked at hyp/src/boot.rs:".into(),
                "provoked by the provoke-panic feature".into(),
                "hyp: core 0 parked".into(),
            ],
            forbid: vec!["unexpected"],
            system: None,
            dialogue: &[],
        },
        SystemTest {
            name: "entered-at-el1",
            board: "qemu-virt",
            features: &[],
            machine: MachineSpec::Virt {
                gic: 2,
                cores: 1,
                at_el2: false,
            },
            expect: vec!["hyp: entered at EL1; hyp must be started at EL2".into()],
            forbid: vec!["hyp: ready"],
            system: None,
            dialogue: &[],
        },
        guest_test("guest-test-gicv2", 2),
        guest_test("guest-test-gicv3", 3),
        linux("linux-gicv2", 2),
        linux("linux-gicv3", 3),
        SystemTest {
            name: "vmm-crash",
            expect: vec![
                "[rust-test] test-guest: all 5 checks passed".into(),
                "the guest wrote 0xdead to the crash-test device at 0xa000000".into(),
                "init: the VMM of guest rust-test died: a child thread stopped at an undefined instruction".into(),
                "init: guest rust-test is stopped; the other guests run on".into(),
                "[linux] guest-init: shell ready".into(),
                "aarch64 GNU/Linux".into(),
                "vmm linux: guest powered off (PSCI SYSTEM_OFF)".into(),
            ],
            forbid: vec!["PANIC", "kernel bug", "Kernel panic", "test-guest: FAIL"],
            system: Some("vmm-crash"),
            dialogue: &[
                ("guest-init: shell ready", "uname -a\n"),
                ("aarch64 GNU/Linux", "poweroff -f\n"),
            ],
            ..linux("vmm-crash", 3)
        },
        SystemTest {
            name: "linux-smp",
            machine: MachineSpec::VirtParallel { gic: 3, cores: 2 },
            expect: vec![
                "init: guest linux: started with 256 MiB of RAM, 2 vCPU(s)".into(),
                "CPU1: Booted secondary processor 0x0000000001".into(),
                "smp: Brought up 1 node, 2 CPUs".into(),
                "[linux] guest-init: shell ready".into(),
                "aarch64 GNU/Linux".into(),
                "vmm linux: guest powered off (PSCI SYSTEM_OFF)".into(),
            ],
            system: Some("linux-smp"),
            dialogue: &[
                ("guest-init: shell ready", "uname -a\n"),
                ("aarch64 GNU/Linux", "poweroff -f\n"),
            ],
            ..linux("linux-smp", 3)
        },
        SystemTest {
            name: "linux-raspi4b",
            board: "rpi4",
            machine: MachineSpec::Raspi4b,
            ..linux("linux-raspi4b", 2)
        },
    ]
}

/// What must not appear when guests run: the boot's list, minus "failed"
/// (Linux prints it for harmless probes).
const GUEST_FORBIDDEN: &[&str] = &[
    "PANIC",
    "init: panic",
    "kernel bug",
    "FAIL",
    "Kernel panic",
    "vmm: ",
];

/// The Rust test guest alone under the hypervisor.
fn guest_test(name: &'static str, gic: u8) -> SystemTest {
    SystemTest {
        name,
        board: "qemu-virt",
        features: &[],
        machine: MachineSpec::Virt {
            gic,
            cores: 2,
            at_el2: true,
        },
        expect: vec![
            "init: guest rust-test: started".into(),
            "[rust-test] test-guest: console: PASS".into(),
            "[rust-test] test-guest: hvc: PASS".into(),
            "[rust-test] test-guest: vtimer: PASS".into(),
            "[rust-test] test-guest: sgi: PASS".into(),
            "[rust-test] test-guest: aarch32-el0: PASS".into(),
            "[rust-test] test-guest: all 5 checks passed".into(),
            "vmm rust-test: guest powered off (PSCI SYSTEM_OFF)".into(),
        ],
        forbid: GUEST_FORBIDDEN.to_vec(),
        system: Some("test-guest"),
        dialogue: &[],
    }
}

/// The default system: the Debian kernel with its busybox initramfs, and
/// the Rust test guest beside it, which reads outside its RAM (into where
/// the Linux guest's RAM is in that guest's address space) and gets an
/// abort from its VMM.
fn linux(name: &'static str, gic: u8) -> SystemTest {
    SystemTest {
        name,
        board: "qemu-virt",
        features: &[],
        machine: MachineSpec::Virt {
            gic,
            cores: 2,
            at_el2: true,
        },
        expect: vec![
            "init: guest linux: started".into(),
            "Booting Linux on physical CPU 0x0000000000".into(),
            "CPU: All CPU(s) started at EL1".into(),
            "[linux] guest-init: reached /init".into(),
            "[linux] guest-init: shell ready".into(),
            "[linux] Linux (none) 6.1".into(),
            "aarch64 GNU/Linux".into(),
            "arch_timer".into(),
            if gic == 2 {
                "GIC-0".into()
            } else {
                "GICv3".into()
            },
            "vmm linux: guest powered off (PSCI SYSTEM_OFF)".into(),
            "[rust-test] test-guest: isolation: PASS".into(),
            "vmm rust-test: VCPU 0 read 4 byte(s) at 0x48000000".into(),
            "[rust-test] test-guest: all 6 checks passed".into(),
        ],
        forbid: GUEST_FORBIDDEN.to_vec(),
        system: Some("default"),
        dialogue: &[
            ("guest-init: shell ready", "uname -a\n"),
            ("aarch64 GNU/Linux", "cat /proc/interrupts\n"),
            ("arch_timer", "poweroff -f\n"),
        ],
    }
}

/// Runs the tests named in `names` (all of them if empty).
pub fn run_all(names: &[String]) -> Result<(), String> {
    let tests: Vec<SystemTest> = all()
        .into_iter()
        .filter(|test| names.is_empty() || names.iter().any(|n| n == test.name))
        .collect();
    if tests.is_empty() {
        let known: Vec<&str> = all().iter().map(|test| test.name).collect();
        return Err(format!(
            "no system test named {names:?}; known: {}",
            known.join(", ")
        ));
    }

    // Build each image once, then boot.
    let mut prepared: Vec<(SystemTest, Machine, PathBuf)> = Vec::new();
    for test in tests {
        let features: Vec<String> = test.features.iter().map(|f| (*f).to_owned()).collect();
        let built = match test.system {
            Some(system) => image::build_with_system(test.board, &features, system)?,
            None => image::build(test.board, &features)?,
        };
        let machine = test.machine.build()?;
        prepared.push((test, machine, built.image));
    }

    let queue = Arc::new(Mutex::new(prepared));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let workers: Vec<_> = (0..PARALLEL)
        .map(|_| {
            let queue = Arc::clone(&queue);
            let failures = Arc::clone(&failures);
            thread::spawn(move || {
                loop {
                    let next = queue.lock().map(|mut queue| queue.pop()).unwrap_or(None);
                    let Some((test, machine, image)) = next else {
                        break;
                    };
                    if let Err(report) = run_one(&test, &machine, &image) {
                        eprintln!("{report}");
                        if let Ok(mut failures) = failures.lock() {
                            failures.push(test.name.to_owned());
                        }
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker
            .join()
            .map_err(|_| "a system-test worker panicked".to_owned())?;
    }
    let failures = failures
        .lock()
        .map(|failures| failures.clone())
        .unwrap_or_default();
    if failures.is_empty() {
        println!("systest: all passed");
        Ok(())
    } else {
        Err(format!("system tests failed: {}", failures.join(", ")))
    }
}

/// What a finished boot showed.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Passed,
    Forbidden(&'static str),
    Missing(Vec<String>),
}

fn judge(transcript: &str, test: &SystemTest, finished: bool) -> Option<Verdict> {
    if let Some(marker) = test
        .forbid
        .iter()
        .find(|marker| transcript.contains(*marker))
    {
        return Some(Verdict::Forbidden(marker));
    }
    let missing: Vec<String> = test
        .expect
        .iter()
        .filter(|marker| !transcript.contains(marker.as_str()))
        .cloned()
        .collect();
    if missing.is_empty() {
        Some(Verdict::Passed)
    } else if finished {
        Some(Verdict::Missing(missing))
    } else {
        None
    }
}

fn run_one(test: &SystemTest, machine: &Machine, image: &std::path::Path) -> Result<(), String> {
    let started = Instant::now();
    let Running {
        mut child,
        transcript,
        readers,
    } = start_recording_with_input(machine.batch_command(image))
        .map_err(|error| format!("systest {}: cannot start QEMU: {error}", test.name))?;
    let mut input = child.stdin.take();
    let mut said = 0;

    let verdict = loop {
        let exited = matches!(child.try_wait(), Ok(Some(_)));
        let text = snapshot(&transcript);
        if let Some((trigger, line)) = test.dialogue.get(said)
            && text.contains(trigger)
        {
            if let Some(stdin) = input.as_mut() {
                use std::io::Write;
                let _ = stdin.write_all(line.as_bytes());
                let _ = stdin.flush();
            }
            said += 1;
        }
        let timed_out = started.elapsed() > TIMEOUT;
        if let Some(verdict) = judge(&text, test, exited || timed_out) {
            break verdict;
        }
        thread::sleep(Duration::from_millis(50));
    };
    drop(input);
    stop(&mut child);
    for reader in readers.into_iter().flatten() {
        let _ = reader.join();
    }
    let seconds = started.elapsed().as_secs_f64();
    let text = snapshot(&transcript);
    match verdict {
        Verdict::Passed => {
            println!("systest {} ... ok ({seconds:.1} s)", test.name);
            Ok(())
        }
        Verdict::Forbidden(marker) => Err(failure(
            test,
            seconds,
            &format!("forbidden marker {marker:?} appeared"),
            &text,
        )),
        Verdict::Missing(missing) => Err(failure(
            test,
            seconds,
            &format!(
                "QEMU exited or {} s passed without {missing:?}",
                TIMEOUT.as_secs()
            ),
            &text,
        )),
    }
}

fn failure(test: &SystemTest, seconds: f64, why: &str, transcript: &str) -> String {
    format!(
        "systest {} ... FAILED after {seconds:.1} s: {why}\n----- console transcript -----\n{transcript}\n----- end of transcript -----",
        test.name
    )
}

/// A QEMU run whose console output (stdout and stderr) is being collected.
pub(crate) struct Running {
    /// The QEMU process.
    pub(crate) child: Child,
    /// Everything it printed so far.
    pub(crate) transcript: Arc<Mutex<Vec<u8>>>,
    /// The threads that collect it (joined after the process is stopped).
    pub(crate) readers: [Option<thread::JoinHandle<()>>; 2],
}

/// Starts `command` with its output collected into a transcript.
pub(crate) fn start_recording(mut command: std::process::Command) -> std::io::Result<Running> {
    command.stdin(Stdio::null());
    record(command)
}

/// Like [`start_recording`], with the child's stdin a pipe (in
/// `child.stdin`) that the caller types into.
pub(crate) fn start_recording_with_input(
    mut command: std::process::Command,
) -> std::io::Result<Running> {
    command.stdin(Stdio::piped());
    record(command)
}

fn record(mut command: std::process::Command) -> std::io::Result<Running> {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn()?;
    let transcript = Arc::new(Mutex::new(Vec::<u8>::new()));
    let readers = [
        spawn_reader(
            child
                .stdout
                .take()
                .map(|out| Box::new(out) as Box<dyn Read + Send>),
            &transcript,
        ),
        spawn_reader(
            child
                .stderr
                .take()
                .map(|out| Box::new(out) as Box<dyn Read + Send>),
            &transcript,
        ),
    ];
    Ok(Running {
        child,
        transcript,
        readers,
    })
}

fn spawn_reader(
    source: Option<Box<dyn Read + Send>>,
    transcript: &Arc<Mutex<Vec<u8>>>,
) -> Option<thread::JoinHandle<()>> {
    let mut source = source?;
    let transcript = Arc::clone(transcript);
    Some(thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(count) = source.read(&mut buffer) {
            if count == 0 {
                break;
            }
            if let Ok(mut transcript) = transcript.lock() {
                transcript.extend_from_slice(&buffer[..count]);
            }
        }
    }))
}

pub(crate) fn snapshot(transcript: &Arc<Mutex<Vec<u8>>>) -> String {
    transcript
        .lock()
        .map(|bytes| String::from_utf8_lossy(&bytes).replace('\r', ""))
        .unwrap_or_default()
}

pub(crate) fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_with(expect: &[&str], forbid: &[&'static str]) -> SystemTest {
        SystemTest {
            name: "unit",
            board: "qemu-virt",
            features: &[],
            machine: MachineSpec::Virt {
                gic: 2,
                cores: 1,
                at_el2: true,
            },
            expect: expect.iter().map(|marker| (*marker).to_owned()).collect(),
            forbid: forbid.to_vec(),
            system: None,
            dialogue: &[],
        }
    }

    #[test]
    fn judges_transcripts() {
        let test = test_with(&["banner", "ready"], &["PANIC"]);
        assert_eq!(judge("banner\n", &test, false), None);
        assert_eq!(
            judge("banner\n", &test, true),
            Some(Verdict::Missing(vec!["ready".into()]))
        );
        assert_eq!(
            judge("banner\nready\n", &test, false),
            Some(Verdict::Passed)
        );
        assert_eq!(
            judge("banner\nPANIC\nready", &test, false),
            Some(Verdict::Forbidden("PANIC"))
        );
    }

    #[test]
    fn boot_markers_cover_every_core() {
        let markers = boot_markers("qemu-virt", 3, "1024 MiB", 4);
        for core in 0..4 {
            assert!(markers.contains(&format!("core {core} online")));
            assert!(markers.contains(&format!("core {core} took ")));
        }
        assert!(markers.contains(&"4 of 4 cores online".to_owned()));
        assert!(markers.contains(&"GICv3".to_owned()));
    }

    #[test]
    fn test_names_are_unique() {
        let mut names: Vec<&str> = all().iter().map(|test| test.name).collect();
        names.sort_unstable();
        let count = names.len();
        names.dedup();
        assert_eq!(names.len(), count);
    }
}
