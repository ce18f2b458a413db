//! `hyp-core`: the portable logic of the EL2 core.
//!
//! Everything here is plain, safe Rust that runs the same on the host as on
//! the target, so it is tested with `cargo test` (and Miri) on a normal PC.
//! The arch layer in `hyp/src` reads hardware state once at each entry and
//! hands it to these functions; nothing in this crate touches a register or
//! dereferences an address.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

pub mod cap;
pub mod cspace;
pub mod elf;
pub mod esr;
pub mod exit;
pub mod ipc;
pub mod irq;
pub mod kernel;
pub mod layout;
pub mod object;
pub mod pagetable;
pub mod platform;
pub mod psci;
pub mod queue;
pub mod root_task;
pub mod scheduler;
pub mod stage2;
pub mod tcb;
pub mod thread;
pub mod vcpu;
pub mod vspace;
