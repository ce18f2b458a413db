//! PSCI (Arm Power State Coordination Interface, DEN 0022) as the
//! hypervisor uses it towards the firmware: function identifiers and the
//! meaning of the status codes it returns.

/// `PSCI_VERSION`.
pub const VERSION: u64 = 0x8400_0000;
/// `CPU_ON`, SMC64 calling convention: (target MPIDR, entry point, context).
pub const CPU_ON_64: u64 = 0xc400_0003;
/// `SYSTEM_OFF`.
pub const SYSTEM_OFF: u64 = 0x8400_0008;

/// A PSCI error status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// -1
    NotSupported,
    /// -2
    InvalidParameters,
    /// -3
    Denied,
    /// -4
    AlreadyOn,
    /// -5
    OnPending,
    /// -6
    InternalFailure,
    /// -7
    NotPresent,
    /// -8
    Disabled,
    /// -9
    InvalidAddress,
    /// Any other negative value.
    Unknown(i64),
}

impl Error {
    /// The specification's name, for the console.
    pub fn name(self) -> &'static str {
        match self {
            Error::NotSupported => "PSCI NOT_SUPPORTED",
            Error::InvalidParameters => "PSCI INVALID_PARAMETERS",
            Error::Denied => "PSCI DENIED",
            Error::AlreadyOn => "PSCI ALREADY_ON",
            Error::OnPending => "PSCI ON_PENDING",
            Error::InternalFailure => "PSCI INTERNAL_FAILURE",
            Error::NotPresent => "PSCI NOT_PRESENT",
            Error::Disabled => "PSCI DISABLED",
            Error::InvalidAddress => "PSCI INVALID_ADDRESS",
            Error::Unknown(_) => "PSCI error with an unknown code",
        }
    }
}

/// Decodes the `x0` a PSCI call returned: non-negative is success (and, for
/// some functions, a value).
pub fn result(x0: u64) -> Result<u64, Error> {
    let status = x0 as i64;
    match status {
        0.. => Ok(x0),
        -1 => Err(Error::NotSupported),
        -2 => Err(Error::InvalidParameters),
        -3 => Err(Error::Denied),
        -4 => Err(Error::AlreadyOn),
        -5 => Err(Error::OnPending),
        -6 => Err(Error::InternalFailure),
        -7 => Err(Error::NotPresent),
        -8 => Err(Error::Disabled),
        -9 => Err(Error::InvalidAddress),
        other => Err(Error::Unknown(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_status_codes() {
        assert_eq!(result(0), Ok(0));
        assert_eq!(result(0x1_0001), Ok(0x1_0001));
        assert_eq!(result(u64::MAX), Err(Error::NotSupported));
        assert_eq!(result(-4i64 as u64), Err(Error::AlreadyOn));
        assert_eq!(result(-9i64 as u64), Err(Error::InvalidAddress));
        assert_eq!(result(-10i64 as u64), Err(Error::Unknown(-10)));
        assert_eq!(Error::AlreadyOn.name(), "PSCI ALREADY_ON");
    }
}
