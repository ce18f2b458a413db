//! Bringing up the secondary cores.
//!
//! The device tree says how each core is started: PSCI `CPU_ON` (QEMU
//! `virt`; through `SMC`, the only conduit that reaches firmware from EL2)
//! or a spin table (Raspberry Pi 4: the core waits in the firmware's stub
//! until its `cpu-release-addr` holds an entry address). Either way the
//! core enters `secondary_entry` at EL2 with its MMU off.

use core::sync::atomic::{AtomicUsize, Ordering};

use hyp_abi::MAX_CORES;
use hyp_core::platform::{EnableMethod, Platform, PsciConduit};
use hyp_core::psci;

use crate::arch::registers::{self, TranslationRegisters};
use crate::arch::{self, SecondaryBoot};
use crate::println;

/// Cores that reached `boot_secondary`.
static SECONDARIES_ONLINE: AtomicUsize = AtomicUsize::new(0);

/// Called by a secondary core once it is set up.
pub fn report_online() {
    SECONDARIES_ONLINE.fetch_add(1, Ordering::AcqRel);
}

/// A point on the system counter `microseconds` from now.
pub fn deadline_in(microseconds: u64) -> u64 {
    // SAFETY: reading the counter at EL2.
    let now = unsafe { generic_timer::counter() };
    // SAFETY: reading the counter's frequency at EL2.
    let frequency = unsafe { generic_timer::frequency() };
    now.saturating_add(generic_timer::ticks_for(frequency, microseconds))
}

/// Whether the counter passed `deadline`.
pub fn passed(deadline: u64) -> bool {
    // SAFETY: reading the counter at EL2.
    unsafe { generic_timer::counter() >= deadline }
}

/// Starts every other core the device tree lists; returns how many were
/// started (asked to start without an error). Logical core numbers follow
/// the device tree's order with the boot core as 0.
pub fn start_secondary_cores(platform: &Platform, translation: TranslationRegisters) -> usize {
    let own = registers::mpidr();
    let mut boot = SecondaryBoot {
        mair: translation.mair,
        tcr: translation.tcr,
        ttbr0: translation.ttbr0,
        sctlr: translation.sctlr,
        cores: 1,
        mpidrs: [0; MAX_CORES],
    };
    boot.mpidrs[0] = own;
    let mut order = [None; MAX_CORES];
    let mut cores = 1;
    for cpu in platform
        .cpus
        .iter()
        .filter(|cpu| cpu.mpidr != own)
        .take(MAX_CORES - 1)
    {
        boot.mpidrs[cores] = cpu.mpidr;
        order[cores] = Some(*cpu);
        cores += 1;
    }
    boot.cores = cores as u64;
    if !platform.cpus.iter().any(|cpu| cpu.mpidr == own) {
        println!("hyp: the boot core (MPIDR {own:#x}) is not in the device tree's /cpus");
    }
    // SAFETY: boot core, before any secondary is started.
    unsafe { arch::publish_secondary_boot(boot) };

    let entry = arch::secondary_entry_address();
    let mut started = 0;
    for (index, cpu) in order.iter().enumerate().skip(1) {
        let Some(cpu) = cpu else { continue };
        let result = match cpu.enable_method {
            EnableMethod::Psci => start_with_psci(platform.psci, cpu.mpidr, entry, index),
            EnableMethod::SpinTable { release_address } => {
                start_with_spin_table(platform, release_address, entry)
            }
            EnableMethod::None => Err("the device tree gives no enable-method"),
        };
        match result {
            Ok(()) => started += 1,
            Err(problem) => {
                println!(
                    "hyp: core {index} (MPIDR {:#x}) not started: {problem}",
                    cpu.mpidr
                )
            }
        }
    }
    started
}

fn start_with_psci(
    conduit: Option<PsciConduit>,
    mpidr: u64,
    entry: u64,
    index: usize,
) -> Result<(), &'static str> {
    match conduit {
        Some(PsciConduit::Smc) => {}
        Some(PsciConduit::Hvc) => {
            return Err("PSCI is reached through HVC, which from EL2 would call hyp itself");
        }
        None => return Err("enable-method is psci but the device tree has no /psci node"),
    }
    // SAFETY: CPU_ON starts the core at `secondary_entry`, which is ready:
    // SECONDARY_BOOT is published and cleaned. No memory is handed over.
    let result = unsafe { registers::smc(psci::CPU_ON_64, mpidr, entry, index as u64) };
    psci::result(result).map(|_| ()).map_err(psci::Error::name)
}

fn start_with_spin_table(
    platform: &Platform,
    release_address: u64,
    entry: u64,
) -> Result<(), &'static str> {
    let in_ram = platform.memory.iter().any(|region| {
        release_address >= region.base && release_address.saturating_add(8) <= region.end()
    });
    let image = arch::image_layout();
    let in_image = release_address < image.end && release_address.saturating_add(8) > image.start;
    if !release_address.is_multiple_of(8) || !in_ram || in_image {
        return Err("cpu-release-addr is not an aligned RAM address outside hyp");
    }
    let Ok(address) = usize::try_from(release_address) else {
        return Err("cpu-release-addr out of range");
    };
    // SAFETY: the address is 8-byte aligned, in RAM (mapped as normal
    // memory by the identity map) and outside the image; by the spin-table
    // protocol the firmware's stub of that core polls it and nothing else
    // uses it.
    unsafe { core::ptr::write_volatile(address as *mut u64, entry) };
    // SAFETY: the line is mapped; the waiting core reads with caches off.
    unsafe { registers::clean_and_invalidate_to_poc(release_address, 8) };
    registers::send_event();
    Ok(())
}

/// Waits until `started` secondary cores are online or `timeout_us` passes;
/// returns the number of cores online, the boot core included.
pub fn wait_for_cores(started: usize, timeout_us: u64) -> usize {
    let deadline = deadline_in(timeout_us);
    while SECONDARIES_ONLINE.load(Ordering::Acquire) < started && !passed(deadline) {
        core::hint::spin_loop();
    }
    let online = SECONDARIES_ONLINE.load(Ordering::Acquire);
    if online < started {
        println!(
            "hyp: {} started core(s) did not come online",
            started - online
        );
    }
    online + 1
}
