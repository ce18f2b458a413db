//! `hyp-user`: what an EL0 program needs to run on `hyp`. It is the user
//! side of the ABI that `hyp-abi` defines: the system calls, typed handles
//! for capabilities with a method per invocation, the boot-info page of
//! the root task, printing through the kernel's debug console, the entry
//! point and the panic report.
//!
//! The unsafe code is in a few small modules, each allowed it alone and
//! each instruction with its reason: [`syscall`] (the `svc #0`, the `udf
//! #0` and the one read of the boot-info page), [`timer`] (the virtual
//! timer's registers), [`window`] (loads and stores at addresses a
//! program maps frames at itself) and `cycles` (the cycle counter of
//! benchmark builds). Everything above them is safe, and builds on the
//! host, where a system call is answered as by a kernel that knows none
//! (`IllegalOperation`), so the crate's logic is tested with `cargo test
//! -p hyp-user`.
#![no_std]
#![deny(unsafe_code)]

#[cfg(test)]
extern crate std;

pub mod boot_info;
pub mod capability;
pub mod console;
#[allow(
    unsafe_code,
    reason = "reads the PMU cycle counter register (benchmark builds)"
)]
pub mod cycles;
#[cfg(all(feature = "heap", target_os = "none"))]
#[allow(unsafe_code, reason = "hands the heap its static memory, once")]
pub mod heap;
#[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
mod host_kernel;
pub mod ipc;
pub mod runtime;
#[allow(
    unsafe_code,
    reason = "the one module with the instructions the compiler cannot check: svc, udf and the boot-info page read"
)]
pub mod syscall;
#[allow(
    unsafe_code,
    reason = "reads and writes the virtual timer's system registers, which EL0 may use"
)]
pub mod timer;
#[allow(
    unsafe_code,
    reason = "single loads and stores at window addresses, where no Rust object lives"
)]
pub mod window;

pub use boot_info::BootInfo;
pub use capability::{
    CNode, Endpoint, Frame, IrqControl, IrqHandler, Notification, PageTable, Tcb, Untyped, VSpace,
    Vcpu,
};
pub use hyp_abi::{Error, Rights};
pub use ipc::{Message, Received};
