//! The parts of the guest that are plain computation, tested on the host:
//! a fixed-capacity text buffer for failure reasons, the reading of the
//! device tree's GIC `compatible` and of the `probe=` boot argument, the
//! `ICC_SGI1R_EL1` value that targets the own core, and names for
//! exception syndromes.

use core::fmt;

/// A short text built with `write!` without a heap: what a check reports
/// after `PASS` or `FAIL`. Text beyond the capacity is cut off (at a
/// character boundary).
#[derive(Clone)]
pub(crate) struct Text {
    bytes: [u8; Self::CAPACITY],
    len: usize,
}

impl Text {
    /// Longest text kept, in bytes.
    pub(crate) const CAPACITY: usize = 160;

    /// An empty text.
    pub(crate) const fn new() -> Self {
        Self {
            bytes: [0; Self::CAPACITY],
            len: 0,
        }
    }

    /// The text of `arguments` (from `format_args!`).
    pub(crate) fn format(arguments: fmt::Arguments<'_>) -> Self {
        let mut text = Self::new();
        // `write_str` never fails: it cuts off what does not fit.
        let _ = fmt::write(&mut text, arguments);
        text
    }

    /// The text written so far.
    pub(crate) fn as_str(&self) -> &str {
        let bytes = self.bytes.get(..self.len).unwrap_or(&[]);
        core::str::from_utf8(bytes).unwrap_or("")
    }
}

impl fmt::Write for Text {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let room = Self::CAPACITY - self.len;
        let mut take = text.len().min(room);
        while !text.is_char_boundary(take) {
            take -= 1;
        }
        if let (Some(to), Some(from)) = (
            self.bytes.get_mut(self.len..self.len + take),
            text.as_bytes().get(..take),
        ) {
            to.copy_from_slice(from);
            self.len += take;
        }
        Ok(())
    }
}

impl fmt::Display for Text {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), formatter)
    }
}

/// `Err` with a formatted [`Text`], returned from the enclosing function.
macro_rules! fail {
    ($($argument:tt)*) => {
        return Err($crate::logic::Text::format(format_args!($($argument)*)))
    };
}
pub(crate) use fail;

/// Which GIC architecture an interrupt controller implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GicVersion {
    /// GICv2 (and GIC-400): memory-mapped CPU interface.
    V2,
    /// GICv3: redistributors, system-register CPU interface.
    V3,
}

impl GicVersion {
    /// The version a device-tree `compatible` string names, if it is a GIC
    /// the guest knows (the strings of the Linux bindings
    /// `arm,gic.yaml` and `arm,gic-v3.yaml`).
    pub(crate) fn from_compatible(compatible: &str) -> Option<Self> {
        match compatible {
            "arm,gic-v3" => Some(Self::V3),
            "arm,gic-400"
            | "arm,cortex-a15-gic"
            | "arm,cortex-a9-gic"
            | "arm,cortex-a7-gic"
            | "arm,arm11mp-gic"
            | "arm,arm1176jzf-devchip-gic"
            | "arm,tc11mp-gic" => Some(Self::V2),
            _ => None,
        }
    }

    /// Every `compatible` string [`from_compatible`](Self::from_compatible)
    /// knows, for a device-tree search.
    pub(crate) const COMPATIBLES: &'static [&'static str] = &[
        "arm,gic-v3",
        "arm,gic-400",
        "arm,cortex-a15-gic",
        "arm,cortex-a9-gic",
        "arm,cortex-a7-gic",
        "arm,arm11mp-gic",
        "arm,arm1176jzf-devchip-gic",
        "arm,tc11mp-gic",
    ];

    /// The version `ID_AA64PFR0_EL1` suggests: its GIC field (bits 27:24)
    /// is non-zero when the core has the GICv3 system-register CPU
    /// interface.
    pub(crate) fn from_id_aa64pfr0(value: u64) -> Self {
        if (value >> 24) & 0xf == 0 {
            Self::V2
        } else {
            Self::V3
        }
    }
}

impl fmt::Display for GicVersion {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::V2 => "GICv2",
            Self::V3 => "GICv3",
        })
    }
}

/// Why a `probe=` boot argument is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProbeError<'a> {
    /// The value is not a `0x`-prefixed hexadecimal number of 64 bits.
    NotHex(&'a str),
    /// The address is not 4-byte aligned (the probe is one 32-bit load).
    Unaligned(u64),
    /// More than one `probe=` word.
    Repeated,
}

impl fmt::Display for ProbeError<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotHex(word) => write!(
                formatter,
                "bootargs word \"probe={word}\" is not probe=0x<hex address>"
            ),
            Self::Unaligned(address) => write!(
                formatter,
                "probe address {address:#x} is not 4-byte aligned (the probe is a 32-bit load)"
            ),
            Self::Repeated => formatter.write_str("more than one probe= word in the bootargs"),
        }
    }
}

/// The address of the `probe=0xADDR` word of the kernel command line, if
/// there is one.
pub(crate) fn probe_address(bootargs: &str) -> Result<Option<u64>, ProbeError<'_>> {
    let mut found = None;
    for word in bootargs.split_ascii_whitespace() {
        let Some(value) = word.strip_prefix("probe=") else {
            continue;
        };
        if found.is_some() {
            return Err(ProbeError::Repeated);
        }
        let digits = value
            .strip_prefix("0x")
            .or_else(|| value.strip_prefix("0X"))
            .filter(|digits| !digits.is_empty() && !digits.starts_with('+'))
            .ok_or(ProbeError::NotHex(value))?;
        let address = u64::from_str_radix(digits, 16).map_err(|_| ProbeError::NotHex(value))?;
        if !address.is_multiple_of(4) {
            return Err(ProbeError::Unaligned(address));
        }
        found = Some(address);
    }
    Ok(found)
}

/// The `ICC_SGI1R_EL1` value that sends SGI `intid` to the core whose
/// `MPIDR_EL1` is `mpidr` (the core itself): its affinity in Aff3, Aff2,
/// Aff1 and the range selector, and the bit of its Aff0 in the target
/// list (GICv3 architecture, `ICC_SGI1R_EL1`).
pub(crate) fn sgi1r_to_self(mpidr: u64, intid: u32) -> u64 {
    let aff0 = mpidr & 0xff;
    let aff1 = (mpidr >> 8) & 0xff;
    let aff2 = (mpidr >> 16) & 0xff;
    let aff3 = (mpidr >> 32) & 0xff;
    let range = aff0 / 16;
    let target = 1u64 << (aff0 % 16);
    (aff3 << 48)
        | (range << 44)
        | (aff2 << 32)
        | ((u64::from(intid) & 0xf) << 24)
        | (aff1 << 16)
        | target
}

/// The affinity of `mpidr` as `GICR_TYPER` bits 63:32 hold it
/// (Aff3.Aff2.Aff1.Aff0), to find the own redistributor.
pub(crate) fn redistributor_affinity(mpidr: u64) -> u64 {
    ((mpidr >> 32) & 0xff) << 24 | (mpidr & 0xff_ffff)
}

/// Exception class (`ESR_EL1.EC`, bits 31:26).
pub(crate) fn exception_class(esr: u64) -> u64 {
    (esr >> 26) & 0x3f
}

/// `ESR.EC` of a data abort taken without a change of exception level.
pub(crate) const EC_DATA_ABORT_SAME_EL: u64 = 0x25;

/// What `ESR_EL1` says an exception was, in a few words.
pub(crate) fn describe_esr(esr: u64) -> &'static str {
    match exception_class(esr) {
        0x00 => "unknown reason",
        0x01 => "trapped WFI/WFE",
        0x0e => "illegal execution state",
        0x15 => "SVC",
        0x16 => "HVC",
        0x17 => "SMC",
        0x18 => "trapped system register access",
        0x20 | 0x21 => "instruction abort",
        0x22 => "PC alignment fault",
        0x24 | EC_DATA_ABORT_SAME_EL => match esr & 0x3f {
            0x10 => "synchronous external abort",
            0x21 => "alignment fault",
            0x04..=0x07 => "translation fault",
            _ => "data abort",
        },
        0x26 => "SP alignment fault",
        0x2f => "SError",
        0x3c => "BRK",
        _ => "exception",
    }
}

/// Which vector an exception came through, by its index in the table
/// (0-3: current EL with SP_EL0, 4-7: current EL with SP_ELx, 8-15: lower
/// ELs; synchronous, IRQ, FIQ, SError in each group).
pub(crate) fn vector_name(index: u64) -> &'static str {
    match index % 4 {
        0 => "synchronous",
        1 => "IRQ",
        2 => "FIQ",
        _ => "SError",
    }
}

/// Whether `[address, address + 4)` touches one of the `(base, size)`
/// ranges.
pub(crate) fn overlaps_any(address: u64, ranges: &[(u64, u64)]) -> bool {
    ranges.iter().any(|&(base, size)| {
        let end = base.saturating_add(size);
        address < end && address.saturating_add(4) > base
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[test]
    fn text_formats_and_cuts_at_a_character_boundary() {
        let text = Text::format(format_args!("IAR gave {} ({:#x})", 1023, 1023));
        assert_eq!(text.as_str(), "IAR gave 1023 (0x3ff)");
        let mut long = Text::new();
        for _ in 0..Text::CAPACITY - 1 {
            long.write_str("a").unwrap();
        }
        long.write_str("é and more").unwrap();
        assert_eq!(long.as_str().len(), Text::CAPACITY - 1);
        long.write_str("b").unwrap();
        assert_eq!(long.as_str().len(), Text::CAPACITY);
        long.write_str("c").unwrap();
        assert!(long.as_str().ends_with("ab"));
    }

    fn failing(value: u32) -> Result<(), Text> {
        if value != 27 {
            crate::logic::fail!("IAR gave {value}, expected 27");
        }
        Ok(())
    }

    #[test]
    fn fail_returns_the_reason() {
        assert!(failing(27).is_ok());
        assert_eq!(failing(5).unwrap_err().as_str(), "IAR gave 5, expected 27");
    }

    #[test]
    fn gic_versions() {
        assert_eq!(
            GicVersion::from_compatible("arm,gic-v3"),
            Some(GicVersion::V3)
        );
        assert_eq!(
            GicVersion::from_compatible("arm,cortex-a15-gic"),
            Some(GicVersion::V2)
        );
        assert_eq!(
            GicVersion::from_compatible("arm,gic-400"),
            Some(GicVersion::V2)
        );
        assert_eq!(GicVersion::from_compatible("arm,gic-v3-its"), None);
        for compatible in GicVersion::COMPATIBLES {
            assert!(GicVersion::from_compatible(compatible).is_some());
        }
        assert_eq!(
            GicVersion::from_id_aa64pfr0(0x0000_0000_0100_0011),
            GicVersion::V3
        );
        assert_eq!(
            GicVersion::from_id_aa64pfr0(0x0000_0000_0000_0011),
            GicVersion::V2
        );
    }

    #[test]
    fn probe_words() {
        assert_eq!(probe_address(""), Ok(None));
        assert_eq!(probe_address("console=ttyAMA0 nokaslr"), Ok(None));
        assert_eq!(probe_address("probe=0x48000000"), Ok(Some(0x4800_0000)));
        assert_eq!(
            probe_address("earlycon  probe=0XFFFF0000\tquiet"),
            Ok(Some(0xffff_0000))
        );
        assert_eq!(
            probe_address("probe=48000000"),
            Err(ProbeError::NotHex("48000000"))
        );
        assert_eq!(probe_address("probe=0x"), Err(ProbeError::NotHex("0x")));
        assert_eq!(
            probe_address("probe=0x+10"),
            Err(ProbeError::NotHex("0x+10"))
        );
        assert_eq!(probe_address("probe=0xzz"), Err(ProbeError::NotHex("0xzz")));
        assert_eq!(
            probe_address("probe=0x10000000000000000"),
            Err(ProbeError::NotHex("0x10000000000000000"))
        );
        assert_eq!(
            probe_address("probe=0x1002"),
            Err(ProbeError::Unaligned(0x1002))
        );
        assert_eq!(
            probe_address("probe=0x1000 probe=0x2000"),
            Err(ProbeError::Repeated)
        );
        // Only whole words count.
        assert_eq!(probe_address("noprobe=0x1000"), Ok(None));
        assert_eq!(
            ProbeError::NotHex("12").to_string(),
            "bootargs word \"probe=12\" is not probe=0x<hex address>"
        );
    }

    #[test]
    fn sgi_to_self() {
        // Core 0 of QEMU virt (MPIDR 0x8000_0000: bit 31 is RES1).
        assert_eq!(sgi1r_to_self(0x8000_0000, 5), 0x0500_0001);
        // Aff0 3, Aff1 2, Aff2 1, Aff3 7.
        assert_eq!(
            sgi1r_to_self(0x07_8001_0203, 5),
            (7 << 48) | (1 << 32) | (5 << 24) | (2 << 16) | (1 << 3)
        );
        // Aff0 17: range selector 1, target bit 1.
        assert_eq!(sgi1r_to_self(17, 15), (1 << 44) | (15 << 24) | 0b10);
        assert_eq!(redistributor_affinity(0x07_8001_0203), 0x0701_0203);
    }

    #[test]
    fn syndromes() {
        assert_eq!(exception_class(0x9600_0010), EC_DATA_ABORT_SAME_EL);
        assert_eq!(describe_esr(0x9600_0010), "synchronous external abort");
        assert_eq!(describe_esr(0x9600_0021), "alignment fault");
        assert_eq!(describe_esr(0xfc00_0000), "exception");
        assert_eq!(describe_esr(0x0200_0000), "unknown reason");
        assert_eq!(describe_esr(0), "unknown reason");
        assert_eq!(vector_name(4), "synchronous");
        assert_eq!(vector_name(5), "IRQ");
        assert_eq!(vector_name(7), "SError");
    }

    #[test]
    fn ranges() {
        let ram = [(0x4000_0000, 0x100_0000)];
        assert!(overlaps_any(0x4000_0000, &ram));
        assert!(overlaps_any(0x40ff_fffc, &ram));
        assert!(!overlaps_any(0x4100_0000, &ram));
        assert!(overlaps_any(0x3fff_fffe, &ram));
        assert!(!overlaps_any(0x3fff_fffc, &ram));
        assert!(!overlaps_any(u64::MAX - 3, &ram));
    }
}
