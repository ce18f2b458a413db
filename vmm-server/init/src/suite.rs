//! The test runner: runs each test in an [`Arena`] of its own, takes the
//! arena apart afterwards, and prints one line per test,
//! `init: <name>: PASS <facts>` or `init: <name>: FAIL <reason>`, and at
//! the end `init: all N tests passed` or `init: M of N tests failed`.
//!
//! A test that fails (or whose resources cannot be taken apart) does not
//! stop the others; one that never returns (a blocked receive the kernel
//! never ends) does, which the system test's timeout reports.

use core::fmt::{self, Display, Write};

use hyp_user::BootInfo;

use crate::arena::{Arena, SetupError};
use crate::slots::SlotAllocator;
use crate::untyped::UntypedPool;
use crate::{errors, fault, ping_pong, priorities, revoke, timer_irq};

/// Runs every system test, each in an arena of its own taken from `pool`
/// and `slots`, writing the lines to `output`; returns the tests that
/// failed and the tests run. `ping-pong-smp` runs only when there is more
/// than one core.
pub(crate) fn run_all<W: Write>(
    boot_info: &BootInfo<'_>,
    pool: &mut UntypedPool,
    slots: &mut SlotAllocator,
    output: W,
) -> (u32, u32) {
    let mut suite = Suite::new(pool, slots, output);
    suite.run("ping-pong", |arena| {
        ping_pong::run(boot_info, arena, ping_pong::ROUNDS, None)
    });
    if boot_info.cores() > 1 {
        suite.run("ping-pong-smp", |arena| {
            ping_pong::run(boot_info, arena, ping_pong::SMP_ROUNDS, Some(1))
        });
    }
    suite.run("fault", |arena| fault::run(boot_info, arena));
    suite.run("errors", |arena| errors::run(boot_info, arena));
    suite.run("revoke", revoke::run);
    suite.run("timer-irq", |arena| timer_irq::run(boot_info, arena));
    suite.run("priorities", |arena| priorities::run(boot_info, arena));
    suite.finish()
}

/// Runs tests and counts their outcomes, writing the lines to `output`.
#[derive(Debug)]
pub(crate) struct Suite<'s, W> {
    pool: &'s mut UntypedPool,
    slots: &'s mut SlotAllocator,
    output: W,
    run: u32,
    failed: u32,
}

impl<'s, W: Write> Suite<'s, W> {
    /// A suite whose tests take their memory from `pool` and their slots
    /// from `slots`.
    pub(crate) fn new(
        pool: &'s mut UntypedPool,
        slots: &'s mut SlotAllocator,
        output: W,
    ) -> Suite<'s, W> {
        Suite {
            pool,
            slots,
            output,
            run: 0,
            failed: 0,
        }
    }

    /// Runs `test` as `name` in a fresh arena and prints its line.
    pub(crate) fn run<P: Display, F: Display>(
        &mut self,
        name: &str,
        test: impl FnOnce(&mut Arena<'_>) -> Result<P, F>,
    ) {
        self.run += 1;
        let outcome = match Arena::new(self.pool, self.slots) {
            Err(error) => Err(Outcome::Setup(error)),
            Ok(mut arena) => {
                let result = test(&mut arena);
                let cleanup = arena.tear_down();
                match (result, cleanup) {
                    (Ok(facts), Ok(())) => Ok(facts),
                    (Ok(_), Err(error)) => Err(Outcome::CleanupOnly(error)),
                    (Err(failure), Ok(())) => Err(Outcome::Failed(failure, None)),
                    (Err(failure), Err(error)) => Err(Outcome::Failed(failure, Some(error))),
                }
            }
        };
        let _ = match outcome {
            Ok(facts) => writeln!(self.output, "init: {name}: PASS {facts}"),
            Err(outcome) => {
                self.failed += 1;
                writeln!(self.output, "init: {name}: FAIL {outcome}")
            }
        };
    }

    /// Prints the last line; returns the tests that failed and the tests
    /// run.
    pub(crate) fn finish(mut self) -> (u32, u32) {
        let _ = if self.failed == 0 {
            writeln!(self.output, "init: all {} tests passed", self.run)
        } else {
            writeln!(
                self.output,
                "init: {} of {} tests failed",
                self.failed, self.run
            )
        };
        (self.failed, self.run)
    }
}

/// Why a test did not pass.
enum Outcome<F> {
    /// Its arena could not be made.
    Setup(SetupError),
    /// It passed, but its arena could not be taken apart.
    CleanupOnly(SetupError),
    /// It failed (and maybe its arena could not be taken apart either).
    Failed(F, Option<SetupError>),
}

impl<F: Display> Display for Outcome<F> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Setup(error) => write!(formatter, "set up the test's memory: {error}"),
            Outcome::CleanupOnly(error) => {
                write!(
                    formatter,
                    "the test passed, but its clean-up was refused: {error}"
                )
            }
            Outcome::Failed(failure, None) => write!(formatter, "{failure}"),
            Outcome::Failed(failure, Some(error)) => {
                write!(formatter, "{failure} (clean-up refused too: {error})")
            }
        }
    }
}

/// `init`'s console as a `fmt::Write` sink.
#[cfg(target_os = "none")]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Console;

#[cfg(target_os = "none")]
impl Write for Console {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        hyp_user::print!("{text}");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::untyped::PoolError;
    use hyp_abi::boot_info as layout;
    use hyp_abi::{Error, user_layout};
    use hyp_user::boot_info::BOOT_INFO_WORDS;
    use std::string::String;
    use std::vec::Vec;

    /// A boot-info page with one large RAM block and `cores` cores.
    fn page(cores: u64) -> [u64; BOOT_INFO_WORDS] {
        let mut page = [0; BOOT_INFO_WORDS];
        page[0] = layout::MAGIC;
        page[1] = layout::VERSION;
        page[layout::UNTYPED_COUNT] = 1;
        page[layout::FIRST_UNTYPED_SLOT] = 7;
        page[layout::FIRST_EMPTY_SLOT] = 9;
        page[layout::EMPTY_SLOTS] = 4096 - 9;
        page[layout::CORES] = cores;
        page[layout::ROOT_CNODE_RADIX] = 12;
        page[layout::FIRST_IMAGE_FRAME_SLOT] = 8;
        page[layout::IMAGE_FRAMES] = 1;
        page[layout::IMAGE_END] = user_layout::IMAGE_BASE + 0x800;
        page[layout::UNTYPED_DESCRIPTORS] = 0x4100_0000;
        page[layout::UNTYPED_DESCRIPTORS + 1] = 28;
        page
    }

    #[test]
    fn every_test_runs_and_fails_alone_without_a_kernel() {
        for (cores, names) in [
            (
                1,
                &[
                    "ping-pong",
                    "fault",
                    "errors",
                    "revoke",
                    "timer-irq",
                    "priorities",
                ][..],
            ),
            (
                4,
                &[
                    "ping-pong",
                    "ping-pong-smp",
                    "fault",
                    "errors",
                    "revoke",
                    "timer-irq",
                    "priorities",
                ][..],
            ),
        ] {
            let page = page(cores);
            let boot_info = BootInfo::parse(&page).unwrap();
            let mut slots = SlotAllocator::new(9, 4096 - 9);
            let mut output = String::new();
            // On the host every system call is answered IllegalOperation,
            // so init cannot fill the pool, each test fails making its
            // arena, and the next one runs.
            let mut pool = UntypedPool::new();
            assert!(pool.fill(&boot_info, &mut slots).is_err());
            let (failed, run) = run_all(&boot_info, &mut pool, &mut slots, &mut output);
            assert_eq!((failed as usize, run as usize), (names.len(), names.len()));
            let lines: Vec<&str> = output.lines().collect();
            assert_eq!(lines.len(), names.len() + 1);
            for (line, name) in lines.iter().zip(names) {
                assert_eq!(
                    *line,
                    std::format!(
                        "init: {name}: FAIL set up the test's memory: no free 2 MiB block of \
                         untyped memory (the pool has 0, all in use)"
                    )
                );
            }
            assert_eq!(
                lines[names.len()],
                std::format!("init: {0} of {0} tests failed", names.len())
            );
            assert_eq!(slots.remaining(), 4096 - 9, "every slot given back");
        }
    }

    #[test]
    fn a_test_runs_with_a_block_and_without_one_fails_setting_up() {
        let mut pool = UntypedPool::new();
        pool.add_run(0x4000_0000, 7, 1).unwrap();
        let mut slots = SlotAllocator::new(9, 100);
        let mut output = String::new();
        let mut suite = Suite::new(&mut pool, &mut slots, &mut output);
        let mut ran = 0;
        suite.run("first", |arena| {
            ran += 1;
            assert_eq!(arena.untyped(), hyp_user::Untyped::new(7));
            Ok::<_, &str>("facts")
        });
        // Without a kernel the first test's block cannot be revoked, so it
        // stays taken and the pool has none for the second.
        suite.run("second", |_| {
            ran += 1;
            Err::<&str, _>("reason")
        });
        assert_eq!(suite.finish(), (2, 2));
        assert_eq!(ran, 1, "a test whose arena cannot be made does not run");
        assert_eq!(
            output,
            "init: first: FAIL the test passed, but its clean-up was refused: clean up: revoke the test's untyped block: illegal operation for this object\n\
             init: second: FAIL set up the test's memory: no free 2 MiB block of untyped memory (the pool has 1, all in use)\n\
             init: 2 of 2 tests failed\n"
        );
        assert_eq!(slots.remaining(), 100);
        assert_eq!(pool.free_blocks(), 0);
    }

    #[test]
    fn lines_name_the_test_and_its_outcome() {
        let failure: Outcome<&str> = Outcome::Failed(
            "reason",
            Some(SetupError::Invocation {
                step: "clean up: delete a frame",
                error: Error::IllegalOperation,
            }),
        );
        assert_eq!(
            std::format!("{failure}"),
            "reason (clean-up refused too: clean up: delete a frame: illegal operation for this object)"
        );
        assert_eq!(
            std::format!(
                "{}",
                Outcome::<&str>::Setup(SetupError::Pool(PoolError::Exhausted { blocks: 3 }))
            ),
            "set up the test's memory: no free 2 MiB block of untyped memory (the pool has 3, all in use)"
        );
        let mut pool = UntypedPool::new();
        let mut slots = SlotAllocator::new(9, 100);
        let mut output = String::new();
        let suite = Suite::new(&mut pool, &mut slots, &mut output);
        assert_eq!(suite.finish(), (0, 0));
        assert_eq!(output, "init: all 0 tests passed\n");
    }
}
