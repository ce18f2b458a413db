//! Building the guests of the system description with ordinary
//! invocations: for each guest a stage-2 VSpace with its RAM, its images
//! loaded (the loader of `vmm-server`: kernel, initrd, generated device
//! tree), its VCPUs as threads bound to VCPU objects, and its own VMM
//! server — a thread in an address space and CSpace of its own that holds
//! only that guest's VCPUs and the endpoint their exits arrive on
//! (`vmm.rs`).
//!
//! The boot payload (guest images and the description, packed after the
//! hypervisor by the build tool) arrives as 2 MiB frames (boot info);
//! init maps them in its window, read-only, and copies from there into
//! each guest's RAM, which it maps in its window too while it loads.
//!
//! Guest-physical layout (QEMU `virt`-like, the same for every guest):
//! RAM from [`RAM_BASE`], the emulated PL011 at `0x0900_0000`, the GIC
//! distributor at `0x0800_0000` (emulated), the CPU interface at
//! `0x0801_0000` (GICv2: the hardware's virtual CPU interface, mapped
//! here) or the redistributors at `0x080a_0000` (GICv3, emulated).

use core::fmt;

use board_configs::system::{self, Guest, Limits, System};
use hyp_abi::{ObjectType, Rights, frame_attributes, payload, vcpu_register};
use hyp_user::{BootInfo, CNode, Endpoint, Frame, Tcb, Untyped, VSpace, Vcpu, println, window};

use crate::arena::{Arena, Kind, SetupError, step};
use crate::slots::SlotAllocator;
use crate::thread::{Space, Start};
use crate::untyped::UntypedPool;
use crate::vmm;

/// Where every guest's RAM starts (guest-physical).
pub(crate) const RAM_BASE: u64 = 0x4000_0000;
/// The guest-physical address of the GIC CPU interface (GICv2).
const GICC_ADDRESS: u64 = 0x0801_0000;
/// Bytes of a 2 MiB frame.
const LARGE_FRAME: u64 = 2 << 20;
/// Where init maps the payload in its window.
const PAYLOAD_WINDOW: u64 = window::BASE;
/// Where init maps guest `i`'s RAM while it loads: 16 GiB apart.
const fn guest_window(index: usize) -> u64 {
    window::BASE + (index as u64 + 1) * (16 << 30)
}
/// The most vCPUs one guest has here.
pub(crate) const MAX_VCPUS: u32 = 4;
/// Priority of VCPU threads (below their VMM, which must answer exits).
const VCPU_PRIORITY: u8 = 100;
/// Priority of VMM threads.
const VMM_PRIORITY: u8 = 200;
/// The largest device tree init generates for a guest.
const DEVICE_TREE_BYTES: usize = 8192;
/// The most RAM one guest has here (2 MiB frames): 1 GiB.
const MAX_RAM_FRAMES: usize = 512;
/// The largest system description.
const DESCRIPTION_BYTES: usize = 4096;

/// Why a guest could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GuestError {
    /// Objects or slots ran out, or an invocation was refused.
    Setup(SetupError),
    /// The payload's directory is not one.
    BadPayload(&'static str),
    /// The system description names something the payload lacks.
    MissingImage,
    /// The system description is not valid UTF-8 or too long.
    BadDescription,
    /// The image cannot be loaded (header, size).
    Image(vmm_server::image::LayoutError),
    /// The guest device tree does not fit.
    DeviceTree,
    /// GICv2 without a virtual CPU interface in the boot info.
    NoVirtualCpuInterface,
    /// More RAM than one guest may have here.
    TooMuchRam,
}

impl From<SetupError> for GuestError {
    fn from(error: SetupError) -> Self {
        GuestError::Setup(error)
    }
}

impl fmt::Display for GuestError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuestError::Setup(error) => write!(formatter, "{error}"),
            GuestError::BadPayload(what) => write!(formatter, "the boot payload: {what}"),
            GuestError::MissingImage => write!(formatter, "an image is missing from the payload"),
            GuestError::BadDescription => {
                write!(
                    formatter,
                    "the system description is not UTF-8 of at most 4 KiB"
                )
            }
            GuestError::Image(error) => write!(formatter, "loading the kernel: {error:?}"),
            GuestError::DeviceTree => write!(formatter, "the guest device tree does not fit"),
            GuestError::TooMuchRam => write!(formatter, "more than 1 GiB of RAM for one guest"),
            GuestError::NoVirtualCpuInterface => write!(
                formatter,
                "GICv2 without a virtual CPU interface: guests cannot take interrupts"
            ),
        }
    }
}

/// The payload's directory, read from the window.
struct Payload {
    names: [[u8; payload::NAME_SIZE]; payload::MAX_ENTRIES],
    places: [(u64, u64); payload::MAX_ENTRIES],
    count: usize,
}

impl Payload {
    /// Offset and size of the entry called `name`.
    fn entry(&self, name: &str) -> Option<(u64, u64)> {
        let wanted = name.as_bytes();
        (0..self.count).find_map(|index| {
            let stored = &self.names[index];
            let length = stored
                .iter()
                .position(|byte| *byte == 0)
                .unwrap_or(stored.len());
            (&stored[..length] == wanted).then_some(self.places[index])
        })
    }

    /// The names of all entries (for validation).
    fn name(&self, index: usize) -> &str {
        let stored = &self.names[index];
        let length = stored
            .iter()
            .position(|byte| *byte == 0)
            .unwrap_or(stored.len());
        core::str::from_utf8(&stored[..length]).unwrap_or("")
    }
}

fn read_word(address: u64) -> Result<u64, GuestError> {
    window::read(address).map_err(|_| GuestError::BadPayload("outside the window"))
}

/// Fills `bytes` from the window at `address` (8-byte aligned), a word at a
/// time (the last word may reach past `bytes`: payload entries are padded).
fn read_bytes(address: u64, bytes: &mut [u8]) -> Result<(), GuestError> {
    for (word, chunk) in bytes.chunks_mut(8).enumerate() {
        let value = read_word(address + 8 * word as u64)?.to_le_bytes();
        chunk.copy_from_slice(&value[..chunk.len()]);
    }
    Ok(())
}

/// Writes `bytes` into the window at `address` (8-byte aligned), a word at
/// a time, the last one padded with zeros.
fn write_bytes(address: u64, bytes: &[u8]) -> Result<(), GuestError> {
    for (word, chunk) in bytes.chunks(8).enumerate() {
        let mut value = [0u8; 8];
        value[..chunk.len()].copy_from_slice(chunk);
        window::write(address + 8 * word as u64, u64::from_le_bytes(value))
            .map_err(|_| GuestError::BadPayload("guest RAM outside the window"))?;
    }
    Ok(())
}

/// Maps the payload's frames at [`PAYLOAD_WINDOW`] and reads the directory.
fn map_payload(boot_info: &BootInfo<'_>, arena: &mut Arena<'_>) -> Result<Payload, GuestError> {
    let vspace = VSpace::new(hyp_abi::initial_slots::VSPACE);
    for index in 0..boot_info.payload_frames() {
        arena.map_frame(
            Frame::new(boot_info.first_payload_frame_slot() + index),
            vspace,
            PAYLOAD_WINDOW + index * LARGE_FRAME,
            Rights::READ,
            0,
        )?;
    }
    if read_word(PAYLOAD_WINDOW)? != payload::MAGIC {
        return Err(GuestError::BadPayload("no magic"));
    }
    let count = usize::try_from(read_word(PAYLOAD_WINDOW + 24)?).unwrap_or(usize::MAX);
    if count > payload::MAX_ENTRIES {
        return Err(GuestError::BadPayload("too many entries"));
    }
    let mut found = Payload {
        names: [[0; payload::NAME_SIZE]; payload::MAX_ENTRIES],
        places: [(0, 0); payload::MAX_ENTRIES],
        count,
    };
    let size = boot_info.payload_size();
    for index in 0..count {
        let at = PAYLOAD_WINDOW + (payload::FIRST_ENTRY + index * payload::ENTRY_SIZE) as u64;
        read_bytes(at, &mut found.names[index])?;
        let offset = read_word(at + payload::NAME_SIZE as u64)?;
        let length = read_word(at + payload::NAME_SIZE as u64 + 8)?;
        if offset % payload::ALIGNMENT != 0 || offset.saturating_add(length) > size {
            return Err(GuestError::BadPayload("an entry lies outside the payload"));
        }
        found.places[index] = (offset, length);
    }
    Ok(found)
}

/// Copies `length` bytes from payload offset `from` to guest RAM offset
/// `to` (both 8-byte aligned) of the guest mapped at `window`. Whole
/// words: the payload pads every entry with zeros to 2 MiB.
fn copy_into_guest(from: u64, to: u64, length: u64, window: u64) -> Result<(), GuestError> {
    // The hot loop of loading a guest (millions of words): one load and
    // one store each, no byte shuffling.
    for word in 0..length.div_ceil(8) {
        let value = read_word(PAYLOAD_WINDOW + from + 8 * word)?;
        window::write(window + to + 8 * word, value)
            .map_err(|_| GuestError::BadPayload("guest RAM outside the window"))?;
    }
    Ok(())
}

/// What init keeps of a running guest: its name and its VCPU threads.
#[derive(Clone, Copy, Debug, Default)]
struct Record {
    name: [u8; 16],
    threads: [u64; MAX_VCPUS as usize],
    vcpus: usize,
}

/// Init after the guests started: it waits on the endpoint every VMM's
/// faults go to, and when a VMM dies it says which and why, and stops
/// that VMM's guest. Nothing else depends on a VMM, so every other guest
/// runs on.
#[derive(Debug)]
pub(crate) struct Supervisor {
    endpoint: u64,
    guests: [Record; system::MAX_GUESTS],
}

impl Supervisor {
    /// Serves forever.
    pub(crate) fn run(&self) -> ! {
        let endpoint = Endpoint::new(self.endpoint);
        loop {
            let received = hyp_user::ipc::recv(endpoint);
            let index = usize::try_from(received.badge.wrapping_sub(1)).unwrap_or(usize::MAX);
            let Some(record) = self.guests.get(index).filter(|record| record.vcpus > 0) else {
                println!(
                    "init: a message with badge {:#x} on the VMM supervisor endpoint: ignored",
                    received.badge
                );
                continue;
            };
            let length = record.name.iter().position(|byte| *byte == 0).unwrap_or(16);
            let name = core::str::from_utf8(&record.name[..length]).unwrap_or("?");
            let crash = crate::thread::Crash::of(&received);
            println!("init: the VMM of guest {name} died: {crash}");
            for thread in &record.threads[..record.vcpus] {
                if let Err(error) = Tcb::new(*thread).suspend() {
                    println!("init: stopping a VCPU of guest {name}: {error}");
                }
            }
            println!("init: guest {name} is stopped; the other guests run on");
        }
    }
}

/// Reads the system description from the payload, checks it against what
/// the board and the payload have, and builds every guest. Prints what
/// it does; a guest that cannot be built is reported and skipped. Returns
/// the supervisor of the VMMs, if guests run.
pub(crate) fn start_all(
    boot_info: &BootInfo<'_>,
    pool: &mut UntypedPool,
    slots: &mut SlotAllocator,
) -> Option<Supervisor> {
    if boot_info.payload_size() == 0 {
        println!("init: no boot payload: no guests to start");
        return None;
    }
    let mut arena = match Arena::new(pool, slots) {
        Ok(arena) => arena,
        Err(error) => {
            println!("init: FAIL: guests: {error}");
            return None;
        }
    };
    let payload = match map_payload(boot_info, &mut arena) {
        Ok(payload) => payload,
        Err(error) => {
            println!("init: FAIL: guests: {error}");
            return None;
        }
    };
    // The arena's objects (the payload's page tables) stay for good.
    arena.keep();
    let mut text = [0u8; DESCRIPTION_BYTES];
    let description = match read_description(&payload, &mut text) {
        Ok(description) => description,
        Err(error) => {
            println!("init: FAIL: guests: {error}");
            return None;
        }
    };
    let system = match system::parse(description) {
        Ok(system) => system,
        Err(error) => {
            println!("init: FAIL: the system description: {error}");
            return None;
        }
    };
    let mut names = [""; payload::MAX_ENTRIES];
    for (index, name) in names.iter_mut().enumerate().take(payload.count) {
        *name = payload.name(index);
    }
    let limits = Limits {
        cores: u32::try_from(boot_info.cores()).unwrap_or(1),
        ram_bytes: (pool.free_blocks() as u64).saturating_sub(8) * LARGE_FRAME,
        images: &names[..payload.count],
    };
    if let Err(error) = system::validate(&system, &limits) {
        println!("init: FAIL: the system description: {error}");
        return None;
    }
    println!(
        "init: system description: board {}, {} guest(s)",
        system.board,
        system.guests.len()
    );
    let mut arena = match Arena::new(pool, slots) {
        Ok(arena) => arena,
        Err(error) => {
            println!("init: FAIL: guests: {error}");
            return None;
        }
    };
    let supervisor = match arena.create(ObjectType::Endpoint, 0, "retype the supervisor endpoint") {
        Ok(endpoint) => endpoint,
        Err(error) => {
            println!("init: FAIL: guests: {error}");
            return None;
        }
    };
    arena.keep();
    let guests = start_guests(boot_info, pool, slots, &payload, &system, supervisor);
    Some(Supervisor {
        endpoint: supervisor,
        guests,
    })
}

fn read_description<'t>(
    payload: &Payload,
    text: &'t mut [u8; DESCRIPTION_BYTES],
) -> Result<&'t str, GuestError> {
    let (offset, length) = payload.entry("system").ok_or(GuestError::MissingImage)?;
    let length = usize::try_from(length).unwrap_or(usize::MAX);
    if length > DESCRIPTION_BYTES {
        return Err(GuestError::BadDescription);
    }
    read_bytes(PAYLOAD_WINDOW + offset, &mut text[..length])?;
    core::str::from_utf8(&text[..length]).map_err(|_| GuestError::BadDescription)
}

fn start_guests(
    boot_info: &BootInfo<'_>,
    pool: &mut UntypedPool,
    slots: &mut SlotAllocator,
    payload: &Payload,
    system: &System<'_>,
    supervisor: u64,
) -> [Record; system::MAX_GUESTS] {
    let mut records = [Record::default(); system::MAX_GUESTS];
    let cores = boot_info.cores().max(1);
    let gicv = match gicv_frames(boot_info, slots) {
        Ok(gicv) => gicv,
        Err(error) => {
            println!("init: FAIL: guests: {error}");
            return records;
        }
    };
    for (index, guest) in system.guests.iter().enumerate() {
        // Guests spread over the cores: guest i's VCPU j on core (i + j).
        let first_core = index % cores;
        match build(
            boot_info, pool, slots, payload, guest, index, first_core, gicv, supervisor,
        ) {
            Ok(record) => {
                records[index] = record;
                println!(
                    "init: guest {}: started with {} MiB of RAM, {} vCPU(s) from core {first_core}, and its own VMM",
                    guest.name,
                    guest.ram_bytes >> 20,
                    guest.vcpus
                );
            }
            Err(error) => println!("init: FAIL: guest {}: {error}", guest.name),
        }
    }
    records
}

/// The two frames of the GICv2 virtual CPU interface, made once from its
/// device untyped (every guest maps copies); `None` on GICv3.
fn gicv_frames(
    boot_info: &BootInfo<'_>,
    slots: &mut SlotAllocator,
) -> Result<Option<u64>, GuestError> {
    if boot_info.gic_version() != 2 {
        return Ok(None);
    }
    let gicv = boot_info
        .untyped_descriptors()
        .find(|descriptor| {
            descriptor.device && descriptor.physical_base == boot_info.gic_virtual_cpu_interface()
        })
        .ok_or(GuestError::NoVirtualCpuInterface)?;
    let first = slots.allocate_range(2).map_err(SetupError::Slots)?;
    Untyped::new(gicv.slot)
        .retype(
            ObjectType::Frame4K,
            0,
            CNode::new(hyp_abi::initial_slots::CNODE),
            first,
            2,
        )
        .map_err(step("retype the GICV frames"))?;
    Ok(Some(first))
}

/// Slots of a VMM's CNode: the endpoint its VCPUs' exits arrive on, and
/// each VCPU's object and thread.
pub(crate) mod vmm_slots {
    /// The exit endpoint (receive right).
    pub(crate) const ENDPOINT: u64 = 1;
    /// The console UART's interrupt handler, for the guest with focus.
    pub(crate) const INPUT_IRQ: u64 = 3;
    /// The UART register page, read-only: the capability that maps it
    /// into the guest (vmm.rs, `UartPage`).
    pub(crate) const UART_PAGE: u64 = 4;
    /// The guest's VSpace, where the VMM maps the UART register page.
    pub(crate) const GUEST_VSPACE: u64 = 5;
    /// VCPU `i`'s object.
    pub(crate) const fn vcpu(index: u64) -> u64 {
        8 + 2 * index
    }
    /// VCPU `i`'s thread.
    pub(crate) const fn vcpu_thread(index: u64) -> u64 {
        9 + 2 * index
    }
}

#[allow(
    clippy::too_many_lines,
    clippy::too_many_arguments,
    reason = "one guest's construction, step by step, reads best in one place"
)]
fn build(
    boot_info: &BootInfo<'_>,
    pool: &mut UntypedPool,
    slots: &mut SlotAllocator,
    payload: &Payload,
    guest: &Guest<'_>,
    index: usize,
    first_core: usize,
    gicv: Option<u64>,
    supervisor: u64,
) -> Result<Record, GuestError> {
    let (kernel_offset, kernel_size) = payload
        .entry(guest.kernel)
        .ok_or(GuestError::MissingImage)?;
    let initrd = match guest.initrd {
        Some(name) => Some(payload.entry(name).ok_or(GuestError::MissingImage)?),
        None => None,
    };
    // The kernel's first bytes say how to load it.
    let mut header = [0u8; 64];
    read_bytes(PAYLOAD_WINDOW + kernel_offset, &mut header)?;
    let plan = vmm_server::image::plan(
        RAM_BASE,
        guest.ram_bytes,
        &header,
        kernel_size,
        DEVICE_TREE_BYTES as u64,
        initrd.map(|(_, size)| size),
    )
    .map_err(GuestError::Image)?;

    // RAM: 2 MiB frames from the pool (taken for good), mapped into the
    // guest and, for loading, into init's window.
    let root = CNode::new(hyp_abi::initial_slots::CNODE);
    let init_vspace = VSpace::new(hyp_abi::initial_slots::VSPACE);
    let frames = guest.ram_bytes / LARGE_FRAME;
    if frames > MAX_RAM_FRAMES as u64 {
        return Err(GuestError::TooMuchRam);
    }
    let mut ram = [(0u64, 0u64); MAX_RAM_FRAMES];
    for slot_pair in ram.iter_mut().take(frames as usize) {
        let block = pool.allocate().map_err(SetupError::Pool)?;
        let slot = slots.allocate().map_err(SetupError::Slots)?;
        let copy = slots.allocate().map_err(SetupError::Slots)?;
        block
            .untyped()
            .retype(ObjectType::Frame2M, 0, root, slot, 1)
            .map_err(step("retype guest RAM"))?;
        root.copy(copy, root, slot, Rights::ALL)
            .map_err(step("copy a guest RAM frame"))?;
        // The block stays taken when `block` goes: guests are never torn
        // down.
        *slot_pair = (slot, copy);
    }
    let mut arena = Arena::new(pool, slots)?;
    let vspace = VSpace::new(arena.create(ObjectType::VSpace, 0, "retype a guest VSpace")?);
    let window = guest_window(index);
    for (frame, (slot, copy)) in ram.iter().take(frames as usize).enumerate() {
        let offset = frame as u64 * LARGE_FRAME;
        arena.map_frame(
            Frame::new(*slot),
            vspace,
            RAM_BASE + offset,
            Rights::READ.union(Rights::WRITE),
            frame_attributes::EXECUTABLE,
        )?;
        arena.map_frame(
            Frame::new(*copy),
            init_vspace,
            window + offset,
            Rights::READ.union(Rights::WRITE),
            0,
        )?;
    }

    // Load: kernel, initrd, device tree.
    copy_into_guest(
        kernel_offset,
        plan.kernel.start - RAM_BASE,
        kernel_size,
        window,
    )?;
    let mut initrd_range = None;
    if let (Some((offset, size)), Some(at)) = (initrd, plan.initrd) {
        copy_into_guest(offset, at.start - RAM_BASE, size, window)?;
        initrd_range = Some((at.start, at.start + size));
    }
    let gic_version = boot_info.gic_version();
    let mut tree = [0u8; DEVICE_TREE_BYTES];
    let config = vmm_server::guest_dt::GuestConfig {
        ram_base: RAM_BASE,
        ram_size: guest.ram_bytes,
        vcpus: u8::try_from(guest.vcpus.min(MAX_VCPUS)).unwrap_or(1),
        gic_version: u8::try_from(gic_version).unwrap_or(2),
        bootargs: guest.bootargs,
        initrd: initrd_range,
    };
    let tree_length =
        vmm_server::guest_dt::build(&config, &mut tree).map_err(|_| GuestError::DeviceTree)?;
    write_bytes(window + plan.dtb.start - RAM_BASE, &tree[..tree_length])?;

    // The guest starts with its MMU off, reading memory past the caches:
    // write back what was just loaded through init's cacheable mapping.
    let mut written = [
        (plan.kernel.start, kernel_size),
        (plan.dtb.start, tree_length as u64),
        (0, 0),
    ];
    if let Some((start, end)) = initrd_range {
        written[2] = (start, end - start);
    }
    for (frame, (slot, _)) in ram.iter().take(frames as usize).enumerate() {
        let base = RAM_BASE + frame as u64 * LARGE_FRAME;
        let touched = written
            .iter()
            .any(|&(start, size)| size != 0 && start < base + LARGE_FRAME && start + size > base);
        if touched {
            Frame::new(*slot)
                .clean()
                .map_err(step("clean a loaded guest RAM frame"))?;
        }
    }

    // GICv2: the hardware's virtual CPU interface where the guest expects
    // its GIC CPU interface.
    if gic_version == 2 {
        let first = gicv.ok_or(GuestError::NoVirtualCpuInterface)?;
        for page in 0..2 {
            let copy = arena.copy(
                first + page,
                Rights::READ.union(Rights::WRITE),
                Kind::Frame,
                "copy a GICV frame",
            )?;
            arena.map_frame(
                Frame::new(copy),
                vspace,
                GICC_ADDRESS + page * 0x1000,
                Rights::READ.union(Rights::WRITE),
                0,
            )?;
        }
    }

    // The VMM: an endpoint for the exits, a space of its own.
    let endpoint = arena.create(ObjectType::Endpoint, 0, "retype a VMM endpoint")?;
    let mut space = Space::new(&mut arena, boot_info)?;
    space.give(
        &mut arena,
        vmm_slots::ENDPOINT,
        endpoint,
        Rights::READ,
        None,
    )?;
    // The UART register page (vmm.rs, `UartPage`): the VMM writes it
    // through its own mapping and maps it read-only into the guest where
    // the UART is. The guest's page tables for that address are made
    // here, by mapping it once; the VMM maps it again when it has filled
    // it.
    let page = arena.create(ObjectType::Frame4K, 0, "retype the UART register page")?;
    let guest_page = arena.copy(
        page,
        Rights::READ,
        Kind::Frame,
        "copy the UART register page",
    )?;
    arena.map_frame(
        Frame::new(guest_page),
        vspace,
        vmm_server::guest_dt::UART_BASE,
        Rights::READ,
        0,
    )?;
    Frame::new(guest_page)
        .unmap()
        .map_err(step("unmap the UART register page"))?;
    arena.map_frame(
        Frame::new(page),
        space.vspace(),
        vmm::UART_PAGE_ADDRESS,
        Rights::READ.union(Rights::WRITE),
        0,
    )?;
    space.give(
        &mut arena,
        vmm_slots::UART_PAGE,
        guest_page,
        Rights::READ,
        None,
    )?;
    space.give(
        &mut arena,
        vmm_slots::GUEST_VSPACE,
        vspace.pointer(),
        Rights::ALL,
        None,
    )?;
    let vcpu_cnode = arena.create(ObjectType::CNode, 4, "retype a VCPU thread's CNode")?;
    let mut boot_thread = None;
    let mut record = Record::default();
    let length = guest.name.len().min(16);
    record.name[..length].copy_from_slice(&guest.name.as_bytes()[..length]);
    for vcpu_index in 0..u64::from(guest.vcpus.min(MAX_VCPUS)) {
        let vcpu = arena.create(ObjectType::Vcpu, 0, "retype a VCPU")?;
        let thread = arena.create(ObjectType::Tcb, 0, "retype a VCPU thread")?;
        let fault = arena.mint(
            endpoint,
            Rights::WRITE.union(Rights::GRANT_REPLY),
            vcpu_index + 1,
            "mint a VCPU's exit endpoint",
        )?;
        let tcb = Tcb::new(thread);
        tcb.configure(
            Some(Endpoint::new(fault)),
            VCPU_PRIORITY,
            CNode::new(vcpu_cnode),
            vspace,
        )
        .map_err(step("configure a VCPU thread"))?;
        let core = (first_core as u64 + vcpu_index) % boot_info.cores().max(1) as u64;
        tcb.set_affinity(core)
            .map_err(step("place a VCPU thread"))?;
        let handle = Vcpu::new(vcpu);
        handle
            .set_tcb(tcb)
            .map_err(step("bind a VCPU to its thread"))?;
        handle
            .write_register(vcpu_register::VMPIDR, vcpu_index)
            .map_err(step("set a VCPU's MPIDR"))?;
        if vcpu_index == 0 {
            // Linux's boot protocol: x0 = the device tree, x1..x3 = 0.
            tcb.write_registers(plan.entry, 0, &[plan.dtb.start, 0, 0, 0])
                .map_err(step("set the boot VCPU's registers"))?;
            boot_thread = Some(tcb);
        }
        space.give(
            &mut arena,
            vmm_slots::vcpu(vcpu_index),
            vcpu,
            Rights::ALL,
            None,
        )?;
        space.give(
            &mut arena,
            vmm_slots::vcpu_thread(vcpu_index),
            thread,
            Rights::ALL,
            None,
        )?;
        record.threads[record.vcpus] = thread;
        record.vcpus += 1;
    }
    let input = guest.focus && boot_info.console_irq() != 0;
    let notification = if input {
        let notification =
            arena.create(ObjectType::Notification, 0, "retype a VMM notification")?;
        let handler = arena.empty_slot()?;
        hyp_user::IrqControl::new(hyp_abi::initial_slots::IRQ_CONTROL)
            .get(boot_info.console_irq(), root, handler)
            .map_err(step("take the console's interrupt"))?;
        let signal = arena.mint(
            notification,
            Rights::WRITE,
            vmm::INPUT_BADGE,
            "mint the console-input notification",
        )?;
        hyp_user::IrqHandler::new(handler)
            .set_notification(hyp_user::Notification::new(signal))
            .map_err(step("route the console's interrupt"))?;
        space.give_by_move(&mut arena, vmm_slots::INPUT_IRQ, handler)?;
        Some(notification)
    } else {
        None
    };
    let vmm_fault = arena.mint(
        supervisor,
        Rights::WRITE.union(Rights::GRANT_REPLY),
        index as u64 + 1,
        "mint a VMM's fault endpoint",
    )?;
    let name = vmm::pack_name(guest.name);
    let configuration = vmm::Configuration {
        gic_version,
        vcpus: u64::from(guest.vcpus.min(MAX_VCPUS)),
        focus: input,
        crash_device: guest.crash_device,
        ram_base: RAM_BASE,
        ram_size: guest.ram_bytes,
    };
    let vmm_thread = space.spawn(
        &mut arena,
        Start {
            entry: vmm::main,
            arguments: [name[0], name[1], configuration.encode(), guest.ram_bytes],
            priority: VMM_PRIORITY,
            core: Some(first_core as u64),
            fault_endpoint: Some(vmm_fault),
        },
    )?;
    if let Some(notification) = notification {
        vmm_thread
            .bind_notification(hyp_user::Notification::new(notification))
            .map_err(step("bind the console input to the VMM"))?;
    }
    // The boot VCPU starts last, once its VMM waits for its exits.
    if let Some(thread) = boot_thread {
        thread.resume().map_err(step("start the boot VCPU"))?;
    }
    arena.keep();
    Ok(record)
}
