//! `vmm-server`: the per-guest VMM that runs at EL0 and receives its guest's
//! VM exits over IPC. It arrives with virtualization (issue 4); the crate
//! exists now so the workspace layout is the design's from the start.
#![no_std]
#![forbid(unsafe_code)]
