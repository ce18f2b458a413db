//! Where the EL2 vectors land.
//!
//! entry.S saves the general registers and reads `ELR_EL2`, `SPSR_EL2`,
//! `ESR_EL2`, `FAR_EL2` and `HPFAR_EL2` once, into an [`ExceptionFrame`];
//! everything after that works on the frame. IRQs go to the interrupt code;
//! anything else is unexpected at this stage (no guest or user thread runs
//! yet), so it is reported, decoded by `hyp_core::esr`, and the core parks.

use hyp_core::esr::Syndrome;

use crate::{arch, console, interrupts};

/// The registers of the interrupted context and the syndrome, as entry.S
/// stores them (its offsets come from this definition).
#[repr(C)]
#[derive(Debug)]
pub struct ExceptionFrame {
    /// `x0` to `x29`.
    pub x: [u64; 30],
    /// `x30` (the link register).
    pub x30: u64,
    /// `ELR_EL2`: where the exception was taken.
    pub elr: u64,
    /// `SPSR_EL2`: the interrupted `PSTATE`.
    pub spsr: u64,
    /// `ESR_EL2`: the syndrome.
    pub esr: u64,
    /// `FAR_EL2`: the faulting virtual address, where the class has one.
    pub far: u64,
    /// `HPFAR_EL2`: the faulting IPA page, for stage-2 aborts.
    pub hpfar: u64,
}

/// Which of the 16 vectors was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Vector(u64);

impl Vector {
    const KIND_NAMES: [&'static str; 4] = ["synchronous exception", "IRQ", "FIQ", "SError"];
    const ORIGIN_NAMES: [&'static str; 4] = [
        "EL2 with SP_EL0",
        "EL2",
        "a lower EL (AArch64)",
        "a lower EL (AArch32)",
    ];

    fn kind(self) -> &'static str {
        Self::KIND_NAMES[(self.0 % 4) as usize]
    }

    fn origin(self) -> &'static str {
        Self::ORIGIN_NAMES[((self.0 / 4) % 4) as usize]
    }

    fn is_irq(self) -> bool {
        self.0 % 4 == 1
    }

    fn is_synchronous(self) -> bool {
        self.0.is_multiple_of(4)
    }
}

/// Called by entry.S for every exception taken to EL2.
#[unsafe(no_mangle)]
extern "C" fn handle_exception(frame: &mut ExceptionFrame, vector: u64) {
    let vector = Vector(vector);
    if vector.is_irq() && vector.0 / 4 == 1 {
        interrupts::handle_irq();
        return;
    }
    report_unexpected(frame, vector);
    arch::park();
}

fn report_unexpected(frame: &ExceptionFrame, vector: Vector) {
    let core = arch::registers::core_index();
    console::emergency(format_args!(
        "hyp: unexpected {} from {} on core {core}\n",
        vector.kind(),
        vector.origin()
    ));
    if vector.is_synchronous() {
        let syndrome = Syndrome::new(frame.esr);
        console::emergency(format_args!("hyp:   {syndrome}\n"));
    }
    console::emergency(format_args!(
        "hyp:   ESR_EL2 {:#010x}  ELR_EL2 {:#x}{}  FAR_EL2 {:#x}  SPSR_EL2 {:#x}\n",
        frame.esr,
        frame.elr,
        CodeLocation(frame.elr),
        frame.far,
        frame.spsr
    ));
    console::emergency(format_args!(
        "hyp:   x0 {:#x}  x1 {:#x}  x2 {:#x}  x3 {:#x}  lr {:#x}\n",
        frame.x[0], frame.x[1], frame.x[2], frame.x[3], frame.x30
    ));
    console::emergency(format_args!("hyp: core {core} parked\n"));
}

/// Says where an address is in hyp's code, as an offset to feed to
/// `addr2line -e build/images/<board>/hyp.elf` (after adding the load
/// address), or nothing if it is not in hyp's code.
struct CodeLocation(u64);

impl core::fmt::Display for CodeLocation {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let image = arch::image_layout();
        if (image.start..image.text_end).contains(&self.0) {
            write!(formatter, " (hyp code +{:#x})", self.0 - image.start)
        } else {
            Ok(())
        }
    }
}
