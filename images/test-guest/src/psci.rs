//! PSCI through `hvc #0` (SMC Calling Convention): the hypervisor's VMM
//! answers it, and so does QEMU's built-in PSCI when QEMU runs the guest
//! bare (`virt` without EL2 and EL3 uses the HVC conduit).

use core::arch::asm;

use crate::sysreg;
use crate::uart::println;

/// `PSCI_VERSION`: returns major << 16 | minor.
pub(crate) const PSCI_VERSION: u32 = 0x8400_0000;
/// `SYSTEM_OFF`: does not return.
pub(crate) const SYSTEM_OFF: u32 = 0x8400_0008;

/// Calls PSCI `function` (no arguments) and returns `x0`.
pub(crate) fn call(function: u32) -> u64 {
    let mut result = u64::from(function);
    // SAFETY: an SMCCC call: the conduit's handler reads x0 (the function
    // id), writes results to x0-x3 and may clobber x4-x17 (SMCCC 1.0), all
    // declared. The functions used take no pointers, so no memory the
    // compiler knows about changes.
    unsafe { asm!("hvc #0", inout("x0") result, clobber_abi("C"), options(nostack)) };
    result
}

/// Powers the guest off with `SYSTEM_OFF`; should that return, says so and
/// waits for interrupts forever with IRQs masked.
pub(crate) fn power_off() -> ! {
    call(SYSTEM_OFF);
    println!("test-guest: FAIL SYSTEM_OFF returned");
    halt()
}

/// Stops: IRQs masked, waiting for interrupts forever.
pub(crate) fn halt() -> ! {
    sysreg::mask_irqs();
    loop {
        sysreg::wfi();
    }
}
