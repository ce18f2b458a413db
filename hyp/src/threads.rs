//! Running user threads: the big kernel lock around `hyp-core`'s kernel,
//! the entry from EL0, the idle loop, and building the root task at boot.
//!
//! Every exception from EL0 lands in [`handle_lower`] with the thread's
//! registers already in its TCB (entry.S). It takes the kernel lock, hands
//! the event to `hyp_core::kernel::Kernel`, applies the effects that need
//! hardware (console, interrupt controller, TLBs, other cores), and
//! returns the save area of whichever thread runs next; entry.S restores
//! it. A core with nothing to run waits here, with the lock released.

use core::sync::atomic::Ordering;
use hyp_core::elf;
use hyp_core::esr::{ExceptionClass, Syndrome};
use hyp_core::exit::Trap;
use hyp_core::ipc::IpcStore;
use hyp_core::kernel::{Effects, Kernel, Resume, UserFault};
use hyp_core::root_task::{self, Region};
use hyp_core::thread::UserContext;

use spin::mutex::{Mutex, MutexGuard};

use crate::arch::{self, guest, registers};
use crate::interrupts::{self, Source};
use crate::objects::RealStore;
use crate::{print, println};

/// The kernel, behind the big kernel lock. Every core takes it (with IRQs
/// masked) for the whole of a kernel entry.
static KERNEL: Mutex<Kernel<RealStore>, registers::YieldRelax> =
    Mutex::new(Kernel::new(RealStore::empty(), 1, 0, [0, 0, 0]));

/// The root task's ELF image, embedded by build.rs (empty when the build
/// had none).
static ROOT_TASK_IMAGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/init.elf"));

/// The scheduling tick.
const TICK_PERIOD_US: u64 = 10_000;

/// Set once the kernel is ready for the secondary cores to run threads.
static READY: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Where RAM is and what in it is taken.
#[derive(Clone, Copy, Debug)]
pub struct MemoryMap<'a> {
    /// The RAM regions of the device tree.
    pub ram: &'a [hyp_core::platform::MemoryRegion],
    /// Ranges the kernel keeps (its image, the device tree).
    pub reserved: [Region; 2],
}

const MAX_FREE: usize = 16;

/// RAM minus the reserved ranges, and minus everything below the kernel
/// image in the region that holds it (firmware and boot loader data).
fn free_regions(map: &MemoryMap<'_>) -> ([Region; MAX_FREE], usize) {
    let mut out = [Region { base: 0, size: 0 }; MAX_FREE];
    let mut count = 0;
    let image = map.reserved[0];
    for ram in map.ram {
        let mut pieces = [(ram.base, ram.base.saturating_add(ram.size)); 1];
        let (mut start, end) = pieces[0];
        if (ram.base..ram.base.saturating_add(ram.size)).contains(&image.base) {
            start = image.base.saturating_add(image.size);
        }
        pieces[0] = (start, end);
        for (start, end) in pieces {
            // Cut out the device tree if it lies in this piece.
            let tree = map.reserved[1];
            let tree_end = tree.base.saturating_add(tree.size);
            let parts = if tree.size != 0 && tree.base < end && tree_end > start {
                [(start, tree.base.max(start)), (tree_end.min(end), end)]
            } else {
                [(start, end), (end, end)]
            };
            for (base, end) in parts {
                let base = base.div_ceil(4096) * 4096;
                let end = end & !4095;
                if end > base && count < MAX_FREE {
                    out[count] = Region {
                        base,
                        size: end - base,
                    };
                    count += 1;
                }
            }
        }
    }
    (out, count)
}

/// The boot payload the build tool packed after the image (2 MiB aligned
/// after `image_end`), if there is one: its directory's magic and size,
/// read from RAM, decide.
pub fn find_payload(ram: &[hyp_core::platform::MemoryRegion], image_end: u64) -> Option<Region> {
    use hyp_abi::payload;
    let base = image_end.checked_next_multiple_of(payload::ALIGNMENT)?;
    let in_ram = |address: u64, size: u64| {
        ram.iter().any(|region| {
            address >= region.base
                && address.saturating_add(size) <= region.base.saturating_add(region.size)
        })
    };
    if !in_ram(base, payload::DIRECTORY_SIZE as u64) {
        return None;
    }
    let word = |index: u64| {
        let address = usize::try_from(base + 8 * index).ok()? as *const u64;
        // SAFETY: the directory page lies in RAM (checked above), which the
        // EL2 table maps; nothing else uses memory past the image at boot,
        // and any bits are a valid u64.
        Some(unsafe { address.read_volatile() })
    };
    if word(0)? != payload::MAGIC || word(1)? != payload::VERSION {
        return None;
    }
    let size = word(2)?.checked_next_multiple_of(payload::ALIGNMENT)?;
    in_ram(base, size).then_some(Region { base, size })
}

/// Builds the kernel and the root task on the boot core.
pub fn start(
    map: &MemoryMap<'_>,
    cores: usize,
    device: &[Region],
    extras: &root_task::BootExtras,
) -> Result<(), &'static str> {
    let (mut free, count) = free_regions(map);
    let free = &mut free[..count];
    // The page-info table spans all RAM (lowest to highest address).
    let ram_base = map.ram.iter().map(|ram| ram.base).min().ok_or("no RAM")?;
    let ram_end = map
        .ram
        .iter()
        .map(|ram| ram.base.saturating_add(ram.size))
        .max()
        .ok_or("no RAM")?;
    let span = Region {
        base: ram_base,
        size: ram_end - ram_base,
    };
    let table_bytes = RealStore::table_bytes(span).div_ceil(4096) * 4096;
    let holder = free
        .iter_mut()
        .find(|region| region.size > table_bytes)
        .ok_or("no room for the page-info table")?;
    let table = holder.base;
    holder.base += table_bytes;
    holder.size -= table_bytes;

    let image = elf::parse(ROOT_TASK_IMAGE).map_err(|error| match error {
        elf::ElfError::NotElf if ROOT_TASK_IMAGE.is_empty() => {
            "this image has no root task (build it with `cargo xtask build`)"
        }
        elf::ElfError::NotElf => "the root task image is not an ELF file",
        elf::ElfError::WrongKind => "the root task is not a 64-bit AArch64 executable",
        elf::ElfError::OutOfBounds => "the root task's ELF headers are out of bounds",
        elf::ElfError::TooManySegments => "the root task has too many segments",
    })?;

    let mut kernel = KERNEL.lock();
    // SAFETY: the table range was just taken out of the free memory, which
    // the EL2 map covers read-write; nothing else will use it.
    unsafe { kernel.store.init(span, table) };
    kernel.online = cores.clamp(1, hyp_abi::MAX_CORES);
    kernel.irq_limit = u16::try_from(interrupts::interrupt_limit()).unwrap_or(u16::MAX);
    let timer = u16::try_from(interrupts::hyp_timer_intid()).unwrap_or(0);
    kernel.reserved_irqs = [
        timer,
        u16::try_from(interrupts::MAINTENANCE_INTID).unwrap_or(0),
        u16::try_from(interrupts::VIRTUAL_TIMER_INTID).unwrap_or(0),
    ];
    let thread = match root_task::build(&mut kernel, &image, free, device, extras) {
        Ok(thread) => thread,
        Err(error) => {
            println!("hyp: cannot build the root task: {error}");
            return Err("root task");
        }
    };
    let untyped: u64 = free.iter().map(|region| region.size).sum();
    println!(
        "hyp: root task: entry {:#x}, {} segment(s), TCB {:#x}; {} MiB of memory for it to retype",
        image.entry,
        image.segments.iter().flatten().count(),
        thread.0,
        untyped >> 20
    );
    for segment in image.segments.iter().flatten() {
        registers::sync_instruction_cache(segment.address, segment.memory_size);
    }
    // The frames were written through the kernel's window at their
    // physical addresses; make those visible to instruction fetches too.
    registers::sync_instruction_cache(table, 0);
    drop(kernel);
    registers::flush_guest_tlbs();
    READY.store(true, Ordering::Release);
    registers::send_event();
    Ok(())
}

/// Runs threads on this core forever (boot core after [`start`],
/// secondaries once it is done).
pub fn run(core: usize) -> ! {
    while !READY.load(Ordering::Acquire) {
        registers::wait_for_event();
    }
    let _masked = registers::mask_irqs();
    // SAFETY: entry.S's lower-EL vectors are installed (boot), so
    // exceptions from EL0 are handled.
    unsafe { registers::set_up_native_threads() };
    #[cfg(feature = "bench")]
    registers::enable_cycle_counter_for_el0();
    interrupts::arm_tick(TICK_PERIOD_US);
    let mut kernel = KERNEL.lock();
    let mut effects = Effects::default();
    kernel.schedule(core, &mut effects);
    let context = next_context(core, kernel, &effects);
    // SAFETY: next_context returns the live save area of this core's
    // current thread with stage 2 set for it.
    unsafe { arch::resume_user(context) }
}

/// Called by entry.S for every exception from EL0, with the thread's
/// registers saved in its TCB; returns the save area to resume.
#[unsafe(no_mangle)]
extern "C" fn handle_lower(vector: u64, syndrome: u64, fault_address: u64) -> *const UserContext {
    let core = registers::core_index();
    let mut kernel = KERNEL.lock();
    let effects = match vector % 4 {
        0 => {
            // The system call is by far the most frequent: test its class
            // before decoding the syndrome.
            if syndrome >> 26 == u64::from(ExceptionClass::SvcAarch64.code()) {
                let mut saved_number = None;
                if let Some(block) = registers::CORE_BLOCKS.get(core)
                    && let context = block.context.load(Ordering::Relaxed) as *mut UserContext
                    && !context.is_null()
                {
                    // SAFETY: entry.S just saved the calling thread's
                    // registers into this save area (its TCB's, live while
                    // the thread runs), and the kernel lock is held, so
                    // nothing else reads or writes it now.
                    let saved = unsafe { &mut *context };
                    let number = saved.x[hyp_abi::SYSCALL_NUMBER_REGISTER];
                    saved_number = Some(number);
                    if number == hyp_abi::Syscall::DebugGetChar as u64 {
                        // Console input: the UART is the arch layer's.
                        saved.x[0] = crate::console::read_byte().map_or(u64::MAX, u64::from);
                        drop(kernel);
                        return context;
                    }
                    if number == hyp_abi::Syscall::DebugPutString as u64 {
                        // Console output, many bytes to one kernel entry.
                        let mut text = [0u8; hyp_abi::DEBUG_STRING_BYTES];
                        for (bytes, word) in text.chunks_exact_mut(8).zip(&saved.x[..8]) {
                            bytes.copy_from_slice(&word.to_le_bytes());
                        }
                        let length = text
                            .iter()
                            .position(|byte| *byte == 0)
                            .unwrap_or(text.len());
                        crate::console::print(format_args!("{}", Latin1(&text[..length])));
                        saved.x[..8].fill(0);
                        saved.x[hyp_abi::MESSAGE_INFO_REGISTER] =
                            hyp_abi::MessageInfo::new(0, 0).encode();
                        drop(kernel);
                        return context;
                    }
                }
                let mut effects = Effects::default();
                let caller = kernel.current(core);
                match saved_number {
                    Some(number) => kernel.syscall_numbered(core, number, &mut effects),
                    None => kernel.syscall_into(core, &mut effects),
                }
                // The caller runs on and nothing else is to be done.
                if caller.is_some() && kernel.current(core) == caller && effects.is_empty() {
                    return resume_unchanged(core, kernel);
                }
                return next_context(core, kernel, &effects);
            }
            let class = Syndrome::new(syndrome).class();
            // The core is in guest mode exactly when the thread it resumed last
            // (the one that trapped) runs as a VCPU (`switch_guest_state`).
            if guest::in_guest_mode(core) {
                let Some(hpfar) = guest::fault_page(syndrome, fault_address) else {
                    // The guest's own tables changed under the access:
                    // it retries it (its registers are as it left them).
                    return resume_unchanged(core, kernel);
                };
                let trap = Trap {
                    syndrome,
                    address: fault_address,
                    hpfar,
                };
                let pending = class == ExceptionClass::TrappedWfx && guest::list_register_pending();
                let mut effects = Effects::default();
                kernel.vm_exit_into(core, trap, pending, &mut effects);
                return next_context(core, kernel, &effects);
            }
            let mut effects = Effects::default();
            match class {
                ExceptionClass::SvcAarch64 => kernel.syscall_into(core, &mut effects),
                ExceptionClass::DataAbortLowerLevel
                | ExceptionClass::InstructionAbortLowerLevel => kernel.fault_into(
                    core,
                    UserFault::Memory {
                        address: fault_address,
                        instruction: class == ExceptionClass::InstructionAbortLowerLevel,
                        status: syndrome & 0x1ff_ffff,
                    },
                    &mut effects,
                ),
                _ => kernel.fault_into(core, UserFault::Instruction { syndrome }, &mut effects),
            }
            effects
        }
        // IRQ or FIQ: the interrupt controller says which interrupts.
        1 | 2 => {
            let mut effects = Effects::default();
            take_interrupts(core, &mut kernel, &mut effects);
            effects
        }
        // SError: an asynchronous abort, most likely of the interrupted
        // thread's own access; it is reported to that thread's handler
        // (a guest's to its VMM, as an exit it does not decode).
        _ if guest::in_guest_mode(core) => {
            let trap = Trap {
                syndrome,
                address: fault_address,
                hpfar: 0,
            };
            kernel.vm_exit(core, trap, false)
        }
        _ => kernel.fault(core, UserFault::Instruction { syndrome }),
    };
    next_context(core, kernel, &effects)
}

/// Resumes the thread that entered the kernel on `core`, unchanged, from
/// the save area it entered with: its VSpace is still the one in
/// `VTTBR_EL2` and its SPSR the one the hardware saved, so nothing is to
/// be switched.
fn resume_unchanged(
    core: usize,
    kernel: MutexGuard<'static, Kernel<RealStore>, registers::YieldRelax>,
) -> *const UserContext {
    match registers::CORE_BLOCKS.get(core) {
        Some(block) => {
            drop(kernel);
            block.context.load(Ordering::Relaxed) as *const UserContext
        }
        None => next_context(core, kernel, &Effects::default()),
    }
}

/// Bytes shown as the characters U+0000 to U+00FF, as `DebugPutChar`
/// shows each byte.
struct Latin1<'a>(&'a [u8]);

impl core::fmt::Display for Latin1<'_> {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for byte in self.0 {
            core::fmt::Write::write_char(formatter, char::from(*byte))?;
        }
        Ok(())
    }
}

fn take_interrupts(core: usize, kernel: &mut Kernel<RealStore>, effects: &mut Effects) {
    interrupts::take_pending(|source| {
        let more = match source {
            Source::Tick => kernel.tick(core, registers::physical_count()),
            Source::Kick => {
                let mut more = Effects::default();
                kernel.schedule(core, &mut more);
                more
            }
            Source::Device(intid) => {
                let mut more = Effects::default();
                kernel.interrupt_into(core, u16::try_from(intid).unwrap_or(u16::MAX), &mut more);
                more
            }
            Source::VirtualTimer => {
                guest::mask_virtual_timer();
                let (more, taken) = kernel.virtual_timer(core);
                if !taken {
                    guest::stop_virtual_timer();
                }
                more
            }
            Source::Maintenance => {
                guest::maintenance();
                Effects::default()
            }
        };
        apply(&more);
        effects.kick_cores |= more.kick_cores;
    });
}

/// Does what the kernel asked of the hardware.
#[inline(always)]
fn apply(effects: &Effects) {
    if !effects.is_empty() {
        apply_some(effects);
    }
}

fn apply_some(effects: &Effects) {
    if let Some(byte) = effects.put_char {
        print!("{}", char::from(byte));
    }
    if let Some(irq) = effects.unmask_irq {
        interrupts::unmask(u32::from(irq));
    }
    if effects.flush_tlb {
        registers::flush_guest_tlbs();
    }
    if let Some(notice) = effects.notice {
        println!("hyp: {notice}");
    }
    if let Some((base, size)) = effects.clean {
        registers::clean_to_poc(base, size);
    }
    if effects.kick_cores != 0 {
        interrupts::kick(effects.kick_cores);
    }
}

/// Puts the EL1 state `resume` needs into this core (`arch::guest`): the
/// eager part on every change between a guest and a native thread, the
/// lazy part when another VCPU is loaded; then fills the list registers
/// and takes an injection the VMM asked for.
fn switch_guest_state(core: usize, kernel: &mut Kernel<RealStore>, resume: &Resume) {
    let switch = resume.vcpu;
    if guest::in_guest_mode(core) && (switch.vcpu.is_none() || switch.unload.is_some()) {
        guest::leave_guest_mode(core);
    }
    if let Some(state) = switch.unload.and_then(|vcpu| kernel.store.vcpu_mut(vcpu)) {
        guest::save_lazy(core, state);
    }
    let Some(vcpu) = switch.vcpu else { return };
    if let Some(state) = kernel.store.vcpu_mut(vcpu) {
        if switch.load {
            guest::load_lazy(state);
        }
        if !guest::in_guest_mode(core) {
            guest::enter_guest_mode(core, state, switch.load);
        }
        guest::fill_list_registers(state);
    }
    if let Some(injection) = resume.injection
        && let Some(context) = kernel.context_mut(resume.thread)
    {
        guest::inject(injection, context);
    }
}

/// Applies `effects`, then finds the thread this core runs next, idling
/// (lock released) while there is none, and sets stage 2 for it.
fn next_context(
    core: usize,
    mut kernel: MutexGuard<'static, Kernel<RealStore>, registers::YieldRelax>,
    effects: &Effects,
) -> *const UserContext {
    apply(effects);
    loop {
        match kernel.resume(core) {
            Some(Ok(resume)) => {
                if resume.recycled {
                    registers::flush_guest_tlbs();
                }
                switch_guest_state(core, &mut kernel, &resume);
                // SAFETY: the thread's VSpace is live (the thread holds a
                // reference to it) and its VMID is its own.
                unsafe { registers::set_stage2(resume.vspace.0, resume.vmid) };
                return resume.context as *const UserContext;
            }
            Some(Err(thread)) => {
                println!("hyp: thread {:#x} has no VSpace; it is stopped", thread.0);
                let mut effects = Effects::default();
                kernel.schedule(core, &mut effects);
                apply(&effects);
            }
            None => {
                drop(kernel);
                registers::wait_for_interrupt();
                kernel = KERNEL.lock();
                let mut effects = Effects::default();
                take_interrupts(core, &mut kernel, &mut effects);
                kernel.schedule(core, &mut effects);
                apply(&effects);
            }
        }
    }
}
