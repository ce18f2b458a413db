//! `cargo xtask bench`: boots the benchmark build (hyp with EL0 access to
//! the cycle counter, the root task built with its `bench` feature) on
//! QEMU virt with `-icount shift=0`, where one instruction is one tick of
//! the PMU cycle counter, and prints the table the root task measured.
//!
//! The figures are instruction counts, deterministic for a given build:
//! they are measurements to compare, never asserted by a test.

use std::thread;
use std::time::{Duration, Instant};

use crate::image;
use crate::qemu::Machine;
use crate::systest::{Running, snapshot, start_recording, stop};

/// How long the benchmark boot may take.
const TIMEOUT: Duration = Duration::from_secs(600);
/// The line the root task prints when it is done.
const DONE: &str = "bench: done";

/// Builds, boots and prints the tables: the kernel's (native threads) and
/// the guest's (VM exits and virtual interrupts, measured by the Rust
/// test guest in its benchmark mode under a VMM built with `guest-bench`).
pub fn run() -> Result<(), String> {
    let built = image::build("qemu-virt", &["init/bench".to_owned(), "bench".to_owned()])?;
    boot_and_print(&built.image, DONE, "bench:")?;
    let description = crate::workspace_root().join("board-configs/systems/guest-bench.sys");
    let built = image::build_with_system(
        "qemu-virt",
        &["init/guest-bench".to_owned(), "bench".to_owned()],
        &description.to_string_lossy(),
    )?;
    boot_and_print(&built.image, GUEST_DONE, "[rust-test] test-guest: bench:")
}

/// The line the guest prints when its benchmarks are done.
const GUEST_DONE: &str = "test-guest: bench: done";

/// Boots `image` under `-icount shift=0` until `done` appears, then prints
/// the lines that start with `prefix`.
fn boot_and_print(image: &std::path::Path, done: &str, prefix: &str) -> Result<(), String> {
    let machine = Machine::virt(2, 1, true);
    let mut command = machine.batch_command(image);
    command.args(["-icount", "shift=0"]);
    println!("xtask: {command:?}");
    let started = Instant::now();
    let Running {
        mut child,
        transcript,
        readers,
    } = start_recording(command).map_err(|error| format!("cannot start QEMU: {error}"))?;
    let outcome = loop {
        let text = snapshot(&transcript);
        if text.contains(done) {
            break Ok(text);
        }
        if text.contains("FAIL") || text.contains("PANIC") || text.contains("panic") {
            break Err(format!("the benchmark failed:\n{text}"));
        }
        if matches!(child.try_wait(), Ok(Some(_))) {
            break Err(format!("QEMU exited before the benchmark ended:\n{text}"));
        }
        if started.elapsed() > TIMEOUT {
            break Err(format!(
                "no `{done}` within {} s:\n{text}",
                TIMEOUT.as_secs()
            ));
        }
        thread::sleep(Duration::from_millis(100));
    };
    stop(&mut child);
    for reader in readers.into_iter().flatten() {
        let _ = reader.join();
    }
    let text = outcome?;
    for line in text.lines().filter(|line| line.starts_with(prefix)) {
        println!("{}", line.trim_start_matches("[rust-test] test-guest: "));
    }
    println!(
        "xtask: benchmark boot took {:.1} s (QEMU -icount shift=0: figures are instructions)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
