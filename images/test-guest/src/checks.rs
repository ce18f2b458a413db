//! The checks, and the runner that prints one line for each
//! (`test-guest: <name>: PASS <facts>` or `test-guest: <name>: FAIL
//! <reason>`) and the summary.
//!
//! Every wait is bounded by the virtual counter. Waiting for an interrupt
//! uses WFI only where the interrupt is certain to come or where the
//! wait cannot miss it: see [`vtimer`].

use crate::boot::{self, Probe};
use crate::gic::{self, Gic, VIRTUAL_TIMER_INTID};
use crate::logic::{Text, describe_esr, fail, overlaps_any};
use crate::psci;
use crate::sysreg::{self, Deadline};
use crate::uart::{self, println};

/// What a check returns: facts for `PASS`, or the reason for `FAIL`.
pub(crate) type Outcome = Result<Text, Text>;

/// How long any single wait may take.
const WAIT_US: u64 = 100_000;
/// The virtual timer's interval.
const TIMER_US: u64 = 1_000;
/// The SGI the `sgi` check sends.
const SGI_INTID: u32 = 5;
/// `CNTV_CTL_EL0` bits.
const TIMER_ENABLE: u64 = 1 << 0;
const TIMER_ISTATUS: u64 = 1 << 2;
/// The PSCI version the VMM (and QEMU) implement: 1.1.
const EXPECTED_PSCI_VERSION: u32 = 0x0001_0001;

/// Counts the checks and their failures.
#[derive(Debug, Default)]
pub(crate) struct Suite {
    run: u32,
    failed: u32,
}

impl Suite {
    /// Runs the check `body` called `name` and prints its line.
    pub(crate) fn check(&mut self, name: &str, body: impl FnOnce() -> Outcome) {
        self.run += 1;
        match body() {
            Ok(facts) if facts.as_str().is_empty() => println!("test-guest: {name}: PASS"),
            Ok(facts) => println!("test-guest: {name}: PASS {facts}"),
            Err(reason) => {
                self.failed += 1;
                println!("test-guest: {name}: FAIL {reason}");
            }
        }
    }

    /// Prints the summary line.
    pub(crate) fn summary(&self) {
        if self.failed == 0 {
            println!("test-guest: all {} checks passed", self.run);
        } else {
            println!("test-guest: {} of {} checks failed", self.failed, self.run);
        }
    }
}

/// `console`: the banner went out without the UART's FIFO staying full.
pub(crate) fn console() -> Outcome {
    if uart::stuck() {
        fail!(
            "UARTFR.TXFF stayed set: characters were dropped (UARTFR {:#x})",
            uart::flags()
        );
    }
    Ok(Text::format(format_args!("PL011 at {:#x}", uart::BASE)))
}

/// `hvc`: `PSCI_VERSION` through `hvc #0` says PSCI 1.1.
pub(crate) fn hvc() -> Outcome {
    // A 32-bit SMCCC function: the result is in w0 (PSCI errors are
    // negative 32-bit numbers; NOT_SUPPORTED is -1).
    let version = u32::try_from(psci::call(psci::PSCI_VERSION) & 0xffff_ffff).unwrap_or(0);
    if version != EXPECTED_PSCI_VERSION {
        fail!(
            "PSCI_VERSION returned {version:#x} ({}), expected {EXPECTED_PSCI_VERSION:#x} (PSCI 1.1)",
            version.cast_signed()
        );
    }
    Ok(Text::format(format_args!(
        "PSCI_VERSION {version:#x} (PSCI 1.1)"
    )))
}

/// `aarch32-el0`: the guest's EL0 runs AArch32 code that reads the GIC
/// distributor's `GICD_TYPER`: an MMIO exit from AArch32, answered by the
/// VMM, after which the AArch32 code goes on (its state survived the
/// exit) and returns with `svc`.
pub(crate) fn aarch32_el0(gic: Result<&Gic, &Text>) -> Outcome {
    let gic = match gic {
        Ok(gic) => gic,
        Err(reason) => fail!("GIC setup: {reason}"),
    };
    let address = u64::try_from(gic.distributor_base() + gic::GICD_TYPER).unwrap_or(0);
    let expected = gic.distributor_type();
    let read = boot::read32_from_aarch32_el0(address);
    if read != expected {
        fail!("AArch32 EL0 read GICD_TYPER {read:#x}; EL1 read {expected:#x}");
    }
    Ok(Text::format(format_args!(
        "GICD_TYPER {read:#x} read from AArch32 EL0"
    )))
}

/// Stops the virtual timer.
fn stop_timer() {
    sysreg::set_virtual_timer_control(0);
    sysreg::isb();
}

/// Sets the virtual timer to fire in [`TIMER_US`]; returns the counter
/// value it fires at.
fn start_timer() -> u64 {
    let interval = sysreg::ticks_for_us(TIMER_US);
    let now = sysreg::virtual_count();
    sysreg::set_virtual_timer_value(interval);
    sysreg::set_virtual_timer_control(TIMER_ENABLE);
    sysreg::isb();
    now.wrapping_add(interval)
}

/// `vtimer`: the virtual timer's PPI 27 is delivered, once with IRQs
/// masked and polled, then by waking the guest from WFI.
///
/// 1. With IRQs masked the timer is set for 1 ms; the guest polls until
///    `CNTV_CTL_EL0.ISTATUS` says it fired and then until the CPU
///    interface shows INTID 27 as the highest pending interrupt
///    (`GICC_HPPIR` or `ICC_HPPIR1_EL1`); unmasking IRQs then takes it
///    (the handler reads 27 from the IAR, stops the timer, writes EOIR).
///    Each wait fails after 100 ms with what was seen.
/// 2. Now that delivery is known to work, the timer is set again and the
///    guest waits in WFI. WFI is executed with IRQs masked (it ends when
///    an interrupt is pending all the same) and IRQs are unmasked after
///    it, so an interrupt that arrives just before the WFI cannot leave it
///    asleep; the loop around it ends after 100 ms. The interrupt must not
///    come before the timer's deadline.
pub(crate) fn vtimer(gic: Result<&Gic, &Text>) -> Outcome {
    let gic = match gic {
        Ok(gic) => gic,
        Err(reason) => fail!("GIC setup: {reason}"),
    };
    sysreg::mask_irqs();
    gic.enable_private(VIRTUAL_TIMER_INTID);

    // 1. Masked and polled.
    gic::clear_received();
    start_timer();
    let deadline = Deadline::after_us(WAIT_US);
    while sysreg::virtual_timer_control() & TIMER_ISTATUS == 0 {
        if deadline.expired() {
            let control = sysreg::virtual_timer_control();
            stop_timer();
            fail!(
                "the virtual timer set for {TIMER_US} us had not fired after {} ms (CNTV_CTL_EL0 {control:#x})",
                WAIT_US / 1000
            );
        }
    }
    let deadline = Deadline::after_us(WAIT_US);
    loop {
        let pending = gic.highest_pending();
        if pending == VIRTUAL_TIMER_INTID {
            break;
        }
        if deadline.expired() {
            stop_timer();
            fail!(
                "the timer fired (CNTV_CTL_EL0.ISTATUS) but INTID {VIRTUAL_TIMER_INTID} was not pending at the {} CPU interface within {} ms (highest pending: {pending})",
                gic.version(),
                WAIT_US / 1000
            );
        }
    }
    sysreg::unmask_irqs();
    let deadline = Deadline::after_us(WAIT_US);
    while gic::received() == 0 {
        if deadline.expired() {
            sysreg::mask_irqs();
            stop_timer();
            fail!(
                "INTID {VIRTUAL_TIMER_INTID} was pending but no IRQ was taken within {} ms of unmasking IRQs ({} spurious)",
                WAIT_US / 1000,
                gic::spurious()
            );
        }
    }
    sysreg::mask_irqs();
    match gic::first_received() {
        Some(VIRTUAL_TIMER_INTID) => {}
        Some(other) => fail!("with INTID 27 pending, the IAR gave {other}"),
        None => fail!("the IRQ handler recorded nothing"),
    }

    // 2. WFI.
    gic::clear_received();
    let fires_at = start_timer();
    let started = Deadline::after_us(WAIT_US);
    let mut wakeups = 0u32;
    while gic::received() == 0 {
        if started.expired() {
            stop_timer();
            fail!(
                "no interrupt within {} ms of WFI (timer set for {TIMER_US} us, {wakeups} wake-ups, {} spurious, CNTV_CTL_EL0 {:#x})",
                WAIT_US / 1000,
                gic::spurious(),
                sysreg::virtual_timer_control()
            );
        }
        sysreg::wfi();
        wakeups += 1;
        sysreg::unmask_irqs();
        sysreg::mask_irqs();
    }
    let arrived = sysreg::virtual_count();
    let waited_us = started.elapsed_us();
    match gic::first_received() {
        Some(VIRTUAL_TIMER_INTID) => {}
        Some(other) => {
            stop_timer();
            fail!("waiting in WFI for the timer, the IAR gave {other}");
        }
        None => fail!("the IRQ handler recorded nothing"),
    }
    // `arrived - fires_at` is negative (as a two's-complement difference)
    // if the interrupt came before the deadline.
    if (arrived.wrapping_sub(fires_at) as i64) < 0 {
        fail!(
            "the timer interrupt came {} ticks before the deadline it was set for",
            fires_at.wrapping_sub(arrived)
        );
    }
    Ok(Text::format(format_args!(
        "IAR {VIRTUAL_TIMER_INTID} on the {} (polled, then woke WFI after {waited_us} us for a {TIMER_US} us timer)",
        gic.version()
    )))
}

/// `sgi`: an SGI the guest sends itself arrives.
pub(crate) fn sgi(gic: Result<&Gic, &Text>) -> Outcome {
    let gic = match gic {
        Ok(gic) => gic,
        Err(reason) => fail!("GIC setup: {reason}"),
    };
    sysreg::mask_irqs();
    gic.enable_private(SGI_INTID);
    gic::clear_received();
    let deadline = Deadline::after_us(WAIT_US);
    gic.send_sgi_to_self(SGI_INTID);
    sysreg::unmask_irqs();
    while gic::received() == 0 {
        if deadline.expired() {
            sysreg::mask_irqs();
            fail!(
                "SGI {SGI_INTID} sent to self did not arrive within {} ms (highest pending: {}, {} spurious)",
                WAIT_US / 1000,
                gic.highest_pending(),
                gic::spurious()
            );
        }
    }
    sysreg::mask_irqs();
    let waited_us = deadline.elapsed_us();
    match gic::first_received() {
        Some(SGI_INTID) => Ok(Text::format(format_args!(
            "IAR {SGI_INTID} after {waited_us} us ({})",
            match gic.version() {
                crate::logic::GicVersion::V2 => "GICD_SGIR, target filter self",
                crate::logic::GicVersion::V3 => "ICC_SGI1R_EL1, own Aff0",
            }
        ))),
        Some(other) => fail!("after sending SGI {SGI_INTID} the IAR gave {other}"),
        None => fail!("the IRQ handler recorded nothing"),
    }
}

/// `isolation`: a read of `address`, outside the guest's RAM, is refused
/// with an abort (under the hypervisor: a synchronous external abort for
/// an address with nothing behind it).
pub(crate) fn isolation(address: u64, ram: &[(u64, u64)]) -> Outcome {
    if let Some(&(base, size)) = ram.iter().find(|&&range| overlaps_any(address, &[range])) {
        fail!(
            "probe address {address:#x} is inside the guest's RAM [{base:#x}, {:#x}): give one outside it",
            base.saturating_add(size)
        );
    }
    println!("test-guest: isolation: reading {address:#x}, outside the guest's RAM");
    match boot::probe(address) {
        Probe::Aborted { esr } => Ok(Text::format(format_args!(
            "the read of {address:#x} was refused: {} (ESR {esr:#x})",
            describe_esr(esr)
        ))),
        Probe::Read(value) => fail!(
            "read {value:#010x} from {address:#x}: memory outside the guest's RAM is readable"
        ),
    }
}
