//! `hyp-abi`: the single definition of the system-call ABI (syscall numbers,
//! invocation labels, error codes, message layouts), shared by the kernel and
//! user space so no constant is duplicated and kept in sync by a comment.
//!
//! The ABI arrives with the capability microkernel (issue 3); today the crate
//! holds only what the boot path already shares.
#![no_std]
#![forbid(unsafe_code)]

/// The largest number of cores the hypervisor brings up; a device tree that
/// lists more is truncated at boot with a console message.
pub const MAX_CORES: usize = 8;
