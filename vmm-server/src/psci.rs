//! PSCI 1.1 for a guest: decoding HVC/SMC calls ([`Request::decode`]) and a
//! per-guest power-state machine ([`Psci`]) that answers them and tells the
//! VMM what to do ([`Outcome`]).
//!
//! The guest's vCPU `i` has `MPIDR` affinity `Aff0 = i` and the other
//! affinity levels 0 (the device tree's `cpu@i` has `reg = <i>`).
//!
//! Implemented: `PSCI_VERSION` (1.1), `CPU_SUSPEND` (standby only: it returns
//! at once, which PSCI allows as an early wake-up; a power-down state is
//! refused, the device tree lists none), `CPU_OFF`, `CPU_ON`,
//! `AFFINITY_INFO`, `MIGRATE_INFO_TYPE` (2: no Trusted OS to migrate),
//! `SYSTEM_OFF`, `SYSTEM_RESET` and `PSCI_FEATURES`, in their SMC32 and SMC64
//! forms where both exist.
//!
//! What it deliberately does not do: `CPU_ON` has no `ON_PENDING` state (a
//! vCPU counts as on as soon as the VMM is told to start it), entry
//! addresses are not checked (a bad one faults in the guest, which is the
//! guest's problem), and the optional calls (`SYSTEM_SUSPEND`,
//! `SYSTEM_RESET2`, `CPU_FREEZE`, `MIGRATE`, statistics, memory protection,
//! the SMCCC `ARCH_*` calls) answer `NOT_SUPPORTED`.

use crate::lo32;

/// Function IDs (SMC32 unless marked 64).
pub mod function {
    /// `PSCI_VERSION`.
    pub const PSCI_VERSION: u32 = 0x8400_0000;
    /// `CPU_SUSPEND`, SMC32.
    pub const CPU_SUSPEND: u32 = 0x8400_0001;
    /// `CPU_SUSPEND`, SMC64.
    pub const CPU_SUSPEND_64: u32 = 0xC400_0001;
    /// `CPU_OFF`.
    pub const CPU_OFF: u32 = 0x8400_0002;
    /// `CPU_ON`, SMC32.
    pub const CPU_ON: u32 = 0x8400_0003;
    /// `CPU_ON`, SMC64.
    pub const CPU_ON_64: u32 = 0xC400_0003;
    /// `AFFINITY_INFO`, SMC32.
    pub const AFFINITY_INFO: u32 = 0x8400_0004;
    /// `AFFINITY_INFO`, SMC64.
    pub const AFFINITY_INFO_64: u32 = 0xC400_0004;
    /// `MIGRATE_INFO_TYPE`.
    pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
    /// `SYSTEM_OFF`.
    pub const SYSTEM_OFF: u32 = 0x8400_0008;
    /// `SYSTEM_RESET`.
    pub const SYSTEM_RESET: u32 = 0x8400_0009;
    /// `PSCI_FEATURES`.
    pub const PSCI_FEATURES: u32 = 0x8400_000A;
}

/// Return values, as the 64-bit `x0` the guest receives.
pub mod ret {
    /// `SUCCESS`.
    pub const SUCCESS: u64 = 0;
    /// `NOT_SUPPORTED` (-1; also SMCCC's "unknown function").
    pub const NOT_SUPPORTED: u64 = (-1i64).cast_unsigned();
    /// `INVALID_PARAMETERS` (-2).
    pub const INVALID_PARAMETERS: u64 = (-2i64).cast_unsigned();
    /// `DENIED` (-3).
    pub const DENIED: u64 = (-3i64).cast_unsigned();
    /// `ALREADY_ON` (-4).
    pub const ALREADY_ON: u64 = (-4i64).cast_unsigned();
    /// `ON_PENDING` (-5).
    pub const ON_PENDING: u64 = (-5i64).cast_unsigned();
    /// `INTERNAL_FAILURE` (-6).
    pub const INTERNAL_FAILURE: u64 = (-6i64).cast_unsigned();
    /// `NOT_PRESENT` (-7).
    pub const NOT_PRESENT: u64 = (-7i64).cast_unsigned();
    /// `DISABLED` (-8).
    pub const DISABLED: u64 = (-8i64).cast_unsigned();
    /// `INVALID_ADDRESS` (-9).
    pub const INVALID_ADDRESS: u64 = (-9i64).cast_unsigned();
}

/// `PSCI_VERSION`'s answer: major 1, minor 1.
pub const VERSION_1_1: u64 = 0x1_0001;
/// `AFFINITY_INFO`'s answer for an affinity instance that is on.
pub const AFFINITY_ON: u64 = 0;
/// `AFFINITY_INFO`'s answer for an affinity instance that is off.
pub const AFFINITY_OFF: u64 = 1;
/// `MIGRATE_INFO_TYPE`'s answer: no Trusted OS that needs migrating.
pub const MIGRATE_NOT_REQUIRED: u64 = 2;
/// The `MPIDR` bits that hold affinity (Aff3 and Aff2..Aff0).
pub const MPIDR_AFFINITY_MASK: u64 = 0xFF_00FF_FFFF;
/// The most vCPUs [`Psci`] tracks.
pub const MAX_VCPUS: u8 = 8;

/// `CPU_SUSPEND`'s `power_state` bit for a power-down state (original
/// format).
const POWER_STATE_POWERDOWN: u32 = 1 << 16;

/// A decoded PSCI call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `PSCI_VERSION`.
    Version,
    /// `PSCI_FEATURES` for the given function ID.
    Features(u32),
    /// `CPU_SUSPEND`.
    CpuSuspend {
        /// The requested power state.
        power_state: u32,
        /// Where to resume after a power-down state.
        entry: u64,
        /// `x0` at that entry.
        context_id: u64,
    },
    /// `CPU_OFF` of the calling vCPU.
    CpuOff,
    /// `CPU_ON`.
    CpuOn {
        /// `MPIDR` affinity of the vCPU to start.
        target_mpidr: u64,
        /// Its entry point (guest physical).
        entry: u64,
        /// Its `x0` at entry.
        context_id: u64,
    },
    /// `AFFINITY_INFO`.
    AffinityInfo {
        /// The affinity instance asked about.
        target_affinity: u64,
        /// The lowest affinity level that counts (0..=3).
        lowest_level: u32,
    },
    /// `MIGRATE_INFO_TYPE`.
    MigrateInfoType,
    /// `SYSTEM_OFF`.
    SystemOff,
    /// `SYSTEM_RESET`.
    SystemReset,
    /// Anything else (including PSCI functions this model leaves out).
    Unknown(u32),
}

impl Request {
    /// Decodes a call from its registers: the function ID in `w0` (the upper
    /// half of `x0` is ignored, as SMCCC says) and arguments in `x1..x3`,
    /// of which an SMC32 call uses only the low 32 bits.
    pub fn decode(x0: u64, x1: u64, x2: u64, x3: u64) -> Self {
        use function::*;
        let id = lo32(x0);
        let w = |x: u64| u64::from(lo32(x));
        match id {
            PSCI_VERSION => Self::Version,
            PSCI_FEATURES => Self::Features(lo32(x1)),
            CPU_SUSPEND => Self::CpuSuspend {
                power_state: lo32(x1),
                entry: w(x2),
                context_id: w(x3),
            },
            CPU_SUSPEND_64 => Self::CpuSuspend {
                power_state: lo32(x1),
                entry: x2,
                context_id: x3,
            },
            CPU_OFF => Self::CpuOff,
            CPU_ON => Self::CpuOn {
                target_mpidr: w(x1),
                entry: w(x2),
                context_id: w(x3),
            },
            CPU_ON_64 => Self::CpuOn {
                target_mpidr: x1,
                entry: x2,
                context_id: x3,
            },
            AFFINITY_INFO => Self::AffinityInfo {
                target_affinity: w(x1),
                lowest_level: lo32(x2),
            },
            AFFINITY_INFO_64 => Self::AffinityInfo {
                target_affinity: x1,
                lowest_level: lo32(x2),
            },
            MIGRATE_INFO_TYPE => Self::MigrateInfoType,
            SYSTEM_OFF => Self::SystemOff,
            SYSTEM_RESET => Self::SystemReset,
            other => Self::Unknown(other),
        }
    }
}

/// What the VMM must do about a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Resume the caller with `x0` = this value.
    Reply(u64),
    /// Start vCPU `index` at `entry` with `x0 = context_id` (MMU off, as
    /// PSCI specifies), then resume the caller with `x0 = reply`.
    StartVcpu {
        /// vCPU to start.
        index: u8,
        /// Its entry point.
        entry: u64,
        /// Its `x0`.
        context_id: u64,
        /// The caller's `x0`.
        reply: u64,
    },
    /// Stop the calling vCPU `index` (it does not resume).
    StopVcpu(u8),
    /// Power the guest off.
    PowerOff,
    /// Reset the guest (the VMM then calls [`Psci::reset`]).
    Reset,
}

/// The power state of one guest's vCPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Psci {
    vcpus: u8,
    /// Bit i: vCPU i is on.
    on: u8,
}

impl Psci {
    /// A guest of `vcpus` vCPUs (clamped to 1..=[`MAX_VCPUS`]) in which only
    /// the boot vCPU 0 is on.
    pub fn new(vcpus: u8) -> Self {
        Self {
            vcpus: vcpus.clamp(1, MAX_VCPUS),
            on: 1,
        }
    }

    /// Back to the state after [`Psci::new`] (after a system reset).
    pub fn reset(&mut self) {
        self.on = 1;
    }

    /// The number of vCPUs.
    pub const fn vcpus(&self) -> u8 {
        self.vcpus
    }

    /// Whether vCPU `index` is on.
    pub const fn is_on(&self, index: u8) -> bool {
        index < self.vcpus && self.on & (1 << index) != 0
    }

    /// The vCPU whose `MPIDR` affinity is `mpidr`, if any.
    pub fn vcpu_of_mpidr(&self, mpidr: u64) -> Option<u8> {
        if mpidr & !0xFF != 0 {
            return None;
        }
        let index = crate::lo8(mpidr);
        (index < self.vcpus).then_some(index)
    }

    /// Answers `request` made by vCPU `caller`.
    pub fn handle(&mut self, caller: u8, request: Request) -> Outcome {
        match request {
            Request::Version => Outcome::Reply(VERSION_1_1),
            Request::Features(id) => Outcome::Reply(features(id)),
            Request::CpuSuspend { power_state, .. } => {
                if power_state & POWER_STATE_POWERDOWN != 0 {
                    Outcome::Reply(ret::INVALID_PARAMETERS)
                } else {
                    Outcome::Reply(ret::SUCCESS)
                }
            }
            Request::CpuOff => {
                if caller >= self.vcpus {
                    return Outcome::Reply(ret::DENIED);
                }
                self.on &= !(1 << caller);
                Outcome::StopVcpu(caller)
            }
            Request::CpuOn {
                target_mpidr,
                entry,
                context_id,
            } => {
                if target_mpidr & !MPIDR_AFFINITY_MASK != 0 {
                    return Outcome::Reply(ret::INVALID_PARAMETERS);
                }
                let Some(index) = self.vcpu_of_mpidr(target_mpidr) else {
                    return Outcome::Reply(ret::INVALID_PARAMETERS);
                };
                if self.is_on(index) {
                    return Outcome::Reply(ret::ALREADY_ON);
                }
                self.on |= 1 << index;
                Outcome::StartVcpu {
                    index,
                    entry,
                    context_id,
                    reply: ret::SUCCESS,
                }
            }
            Request::AffinityInfo {
                target_affinity,
                lowest_level,
            } => Outcome::Reply(self.affinity_info(target_affinity, lowest_level)),
            Request::MigrateInfoType => Outcome::Reply(MIGRATE_NOT_REQUIRED),
            Request::SystemOff => Outcome::PowerOff,
            Request::SystemReset => Outcome::Reset,
            Request::Unknown(_) => Outcome::Reply(ret::NOT_SUPPORTED),
        }
    }

    /// `AFFINITY_INFO`: on if any vCPU whose affinity matches `target` at
    /// levels `lowest` and above is on.
    fn affinity_info(&self, target: u64, lowest: u32) -> u64 {
        // Aff0 is bits 7:0, Aff1 15:8, Aff2 23:16, Aff3 39:32.
        let mask = match lowest {
            0 => MPIDR_AFFINITY_MASK,
            1 => 0xFF_00FF_FF00,
            2 => 0xFF_00FF_0000,
            3 => 0xFF_0000_0000,
            _ => return ret::INVALID_PARAMETERS,
        };
        if target & !MPIDR_AFFINITY_MASK != 0 {
            return ret::INVALID_PARAMETERS;
        }
        let mut matched = false;
        for index in 0..self.vcpus {
            if u64::from(index) & mask == target & mask {
                matched = true;
                if self.is_on(index) {
                    return AFFINITY_ON;
                }
            }
        }
        if matched {
            AFFINITY_OFF
        } else {
            ret::INVALID_PARAMETERS
        }
    }
}

/// `PSCI_FEATURES`: 0 for the implemented functions (for `CPU_SUSPEND`
/// that also says: original `power_state` format, no OS-initiated mode).
fn features(id: u32) -> u64 {
    use function::*;
    match id {
        PSCI_VERSION | CPU_SUSPEND | CPU_SUSPEND_64 | CPU_OFF | CPU_ON | CPU_ON_64
        | AFFINITY_INFO | AFFINITY_INFO_64 | MIGRATE_INFO_TYPE | SYSTEM_OFF | SYSTEM_RESET
        | PSCI_FEATURES => ret::SUCCESS,
        _ => ret::NOT_SUPPORTED,
    }
}

#[cfg(test)]
mod tests {
    use super::function::*;
    use super::*;

    #[test]
    fn return_codes_are_negative_numbers_in_x0() {
        assert_eq!(ret::NOT_SUPPORTED, 0xFFFF_FFFF_FFFF_FFFF);
        assert_eq!(ret::INVALID_PARAMETERS, 0xFFFF_FFFF_FFFF_FFFE);
        assert_eq!(ret::ALREADY_ON, 0xFFFF_FFFF_FFFF_FFFC);
        assert_eq!(ret::INVALID_ADDRESS.cast_signed(), -9);
    }

    #[test]
    fn decode_smc32_truncates_and_smc64_keeps_arguments() {
        let big = 0xDEAD_BEEF_4000_1000;
        assert_eq!(
            Request::decode(u64::from(CPU_ON), 0x1_0000_0002, big, big),
            Request::CpuOn {
                target_mpidr: 2,
                entry: 0x4000_1000,
                context_id: 0x4000_1000
            }
        );
        assert_eq!(
            Request::decode(u64::from(CPU_ON_64), 2, big, 7),
            Request::CpuOn {
                target_mpidr: 2,
                entry: big,
                context_id: 7
            }
        );
        // The upper half of x0 is not part of the function ID.
        assert_eq!(
            Request::decode(0xFFFF_FFFF_0000_0000 | u64::from(PSCI_VERSION), 0, 0, 0),
            Request::Version
        );
        assert_eq!(
            Request::decode(u64::from(AFFINITY_INFO_64), 3, 0, 0),
            Request::AffinityInfo {
                target_affinity: 3,
                lowest_level: 0
            }
        );
        assert_eq!(Request::decode(0x8400_0008, 0, 0, 0), Request::SystemOff);
        assert_eq!(Request::decode(0x8400_0009, 0, 0, 0), Request::SystemReset);
        assert_eq!(Request::decode(0x8400_0002, 0, 0, 0), Request::CpuOff);
        assert_eq!(
            Request::decode(0x8400_0006, 0, 0, 0),
            Request::MigrateInfoType
        );
        assert_eq!(
            Request::decode(0x8400_000A, 0xC400_0003, 0, 0),
            Request::Features(CPU_ON_64)
        );
        assert_eq!(
            Request::decode(0x8400_0012, 0, 0, 0),
            Request::Unknown(0x8400_0012)
        );
    }

    #[test]
    fn version_features_and_unknown_calls() {
        let mut psci = Psci::new(2);
        let mut call = |x0: u32, x1: u64| psci.handle(0, Request::decode(u64::from(x0), x1, 0, 0));
        assert_eq!(call(PSCI_VERSION, 0), Outcome::Reply(0x1_0001));
        assert_eq!(
            call(PSCI_FEATURES, u64::from(CPU_ON_64)),
            Outcome::Reply(ret::SUCCESS)
        );
        assert_eq!(
            call(PSCI_FEATURES, u64::from(PSCI_FEATURES)),
            Outcome::Reply(ret::SUCCESS)
        );
        // SYSTEM_RESET2 and the SMCCC version call are not implemented.
        assert_eq!(
            call(PSCI_FEATURES, 0xC400_0012),
            Outcome::Reply(ret::NOT_SUPPORTED)
        );
        assert_eq!(
            call(PSCI_FEATURES, 0x8000_0000),
            Outcome::Reply(ret::NOT_SUPPORTED)
        );
        assert_eq!(call(0x8400_000E, 0), Outcome::Reply(ret::NOT_SUPPORTED));
        assert_eq!(
            call(MIGRATE_INFO_TYPE, 0),
            Outcome::Reply(MIGRATE_NOT_REQUIRED)
        );
        assert_eq!(call(SYSTEM_OFF, 0), Outcome::PowerOff);
        assert_eq!(call(SYSTEM_RESET, 0), Outcome::Reset);
    }

    #[test]
    fn cpu_on_starts_each_vcpu_once() {
        let mut psci = Psci::new(4);
        assert!(psci.is_on(0));
        assert!(!psci.is_on(2));
        let on = |mpidr| Request::CpuOn {
            target_mpidr: mpidr,
            entry: 0x4008_0000,
            context_id: 0x55,
        };
        assert_eq!(
            psci.handle(0, on(2)),
            Outcome::StartVcpu {
                index: 2,
                entry: 0x4008_0000,
                context_id: 0x55,
                reply: ret::SUCCESS
            }
        );
        assert!(psci.is_on(2));
        assert_eq!(psci.handle(0, on(2)), Outcome::Reply(ret::ALREADY_ON));
        assert_eq!(psci.handle(2, on(0)), Outcome::Reply(ret::ALREADY_ON));
        // MPIDRs that name no vCPU.
        for bad in [4, 0x100, 1 << 32, 1 << 31, 0xFF] {
            assert_eq!(
                psci.handle(0, on(bad)),
                Outcome::Reply(ret::INVALID_PARAMETERS),
                "mpidr {bad:#x}"
            );
        }
    }

    #[test]
    fn cpu_off_and_affinity_info() {
        let mut psci = Psci::new(3);
        let info = |target, level| Request::AffinityInfo {
            target_affinity: target,
            lowest_level: level,
        };
        assert_eq!(psci.handle(0, info(1, 0)), Outcome::Reply(AFFINITY_OFF));
        psci.handle(
            0,
            Request::CpuOn {
                target_mpidr: 1,
                entry: 0,
                context_id: 0,
            },
        );
        assert_eq!(psci.handle(0, info(1, 0)), Outcome::Reply(AFFINITY_ON));
        assert_eq!(psci.handle(1, Request::CpuOff), Outcome::StopVcpu(1));
        assert_eq!(psci.handle(0, info(1, 0)), Outcome::Reply(AFFINITY_OFF));
        // Level 1: the whole cluster (all our vCPUs), on because of vCPU 0.
        assert_eq!(psci.handle(0, info(2, 1)), Outcome::Reply(AFFINITY_ON));
        assert_eq!(
            psci.handle(0, info(5, 0)),
            Outcome::Reply(ret::INVALID_PARAMETERS)
        );
        assert_eq!(
            psci.handle(0, info(0, 4)),
            Outcome::Reply(ret::INVALID_PARAMETERS)
        );
        // After CPU_OFF it can be started again.
        assert!(matches!(
            psci.handle(
                0,
                Request::CpuOn {
                    target_mpidr: 1,
                    entry: 0,
                    context_id: 0
                }
            ),
            Outcome::StartVcpu { index: 1, .. }
        ));
        // A bogus caller index is refused; reset leaves only vCPU 0 on.
        assert_eq!(psci.handle(9, Request::CpuOff), Outcome::Reply(ret::DENIED));
        psci.reset();
        assert!(psci.is_on(0) && !psci.is_on(1));
    }

    #[test]
    fn cpu_suspend_standby_returns_and_powerdown_is_refused() {
        let mut psci = Psci::new(1);
        let suspend = |state| Request::CpuSuspend {
            power_state: state,
            entry: 0,
            context_id: 0,
        };
        assert_eq!(psci.handle(0, suspend(0)), Outcome::Reply(ret::SUCCESS));
        assert_eq!(
            psci.handle(0, suspend(1 << 16)),
            Outcome::Reply(ret::INVALID_PARAMETERS)
        );
    }

    #[test]
    fn vcpu_count_is_clamped() {
        assert_eq!(Psci::new(0).vcpus(), 1);
        assert_eq!(Psci::new(200).vcpus(), MAX_VCPUS);
        assert!(!Psci::new(200).is_on(200));
    }
}
