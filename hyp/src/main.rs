//! `hyp`: the EL2 core of the hypervisor.
//!
//! This binary is the trusted computing base. Its portable logic lives in
//! `hyp-core` (safe Rust, host-tested); this crate is the glue that needs
//! the hardware: the boot path, the EL2 MMU and vectors, the drivers it
//! wires together, and bringing up the other cores.
//!
//! On the host the crate compiles to a stub that explains how to build the
//! real thing, so `cargo build --workspace` works everywhere.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![allow(
    unreachable_pub,
    reason = "a binary: `pub` marks each module's interface to the rest of the kernel"
)]

#[cfg(target_os = "none")]
mod arch;
#[cfg(target_os = "none")]
mod boot;
#[cfg(target_os = "none")]
mod console;
#[cfg(target_os = "none")]
mod interrupts;
#[cfg(target_os = "none")]
mod objects;
#[cfg(target_os = "none")]
mod panic;
#[cfg(target_os = "none")]
mod smp;
#[cfg(target_os = "none")]
mod threads;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("hyp runs at EL2 on AArch64; build and boot it with `cargo xtask run`.");
    std::process::exit(1);
}
