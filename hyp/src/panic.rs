//! A kernel panic is a bug in the kernel: say where, on which core, and
//! park that core. Nothing a guest or a user thread does may lead here.

use core::panic::PanicInfo;

use crate::{arch, console};

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    let core = arch::registers::core_index();
    console::emergency(format_args!("hyp: PANIC on core {core}: {info}\n"));
    console::emergency(format_args!("hyp: core {core} parked\n"));
    arch::park()
}
