//! `hyp-user`: system-call stubs and typed capability handles for EL0
//! programs. The stubs arrive with the capability microkernel (issue 3).
#![no_std]
#![forbid(unsafe_code)]
