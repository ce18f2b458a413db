//! The VMM server of one guest: a thread in an address space and CSpace of
//! its own (`guest.rs` builds it), which holds that guest's VCPUs and the
//! endpoint their exits arrive on, and nothing else. It runs the exit
//! loop: every VM exit the core does not handle itself arrives as one
//! message (`docs/fault-protocol.md`); the reply (with `ReplyRecv`, which
//! also waits for the next exit) resumes the guest.
//!
//! The device models are `vmm-server`'s (`#![forbid(unsafe_code)]`): the
//! PL011 the guest's console is, the GIC distributor (and on GICv3 the
//! redistributors), PSCI. What the guest writes to its UART appears on the
//! hypervisor console line by line, prefixed with the guest's name; what
//! is typed on the console goes to the guest with the focus.
//!
//! The thread runs `init`'s code, whose statics it sees read-only: all of
//! its state is on its stack.

use hyp_abi::fault::{FaultLabel, exit_reply, hypercall, mmio, system_register, vcpu_exception};
use hyp_user::{
    Endpoint, Frame, IrqHandler, Message, Received, Tcb, VSpace, Vcpu, ipc, println, window,
};
use vmm_server::mmio::Device;
use vmm_server::pl011::Pl011;
use vmm_server::psci::{Outcome, Psci, Request};
use vmm_server::vgic::{Action, Actions, GicVersion, Vgic};

use crate::guest::vmm_slots;

/// The badge of the console-input notification (no VCPU has it: theirs are
/// 1 to 4).
pub(crate) const INPUT_BADGE: u64 = 1 << 32;

/// Guest-physical windows of the emulated devices.
const UART_BASE: u64 = 0x0900_0000;
const UART_SIZE: u64 = 0x1000;
const UART_INTID: u16 = 33;
/// Where the VMM maps the UART register page in its own address space
/// (the start of its memory window; `UartPage`).
pub(crate) const UART_PAGE_ADDRESS: u64 = window::BASE;
const DISTRIBUTOR_BASE: u64 = 0x0800_0000;
const DISTRIBUTOR_SIZE: u64 = 0x1_0000;
const REDISTRIBUTOR_BASE: u64 = 0x080a_0000;
const REDISTRIBUTOR_STRIDE: u64 = 0x2_0000;
/// The crash-test device (`test-crash-device`): a write makes the VMM
/// panic, on purpose.
const CRASH_DEVICE_BASE: u64 = 0x0a00_0000;
const CRASH_DEVICE_SIZE: u64 = 0x1000;
/// `ICC_SGI1R_EL1` as the fault protocol encodes it (op0 3, op1 0, CRn 12,
/// CRm 11, op2 5).
const ICC_SGI1R_EL1: u64 = 3 << 14 | 12 << 7 | 11 << 3 | 5;
/// Longest console line before it is printed anyway.
const LINE: usize = 160;

/// How a VMM is set up, packed into one word for its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Configuration {
    /// 2 or 3.
    pub(crate) gic_version: u64,
    /// VCPUs (1 to 4).
    pub(crate) vcpus: u64,
    /// It gets the console input.
    pub(crate) focus: bool,
    /// It has the crash-test device.
    pub(crate) crash_device: bool,
    /// Guest RAM, guest-physical.
    pub(crate) ram_base: u64,
    /// Bytes of guest RAM.
    pub(crate) ram_size: u64,
}

impl Configuration {
    /// The start word (RAM is not in it: it travels in its own).
    pub(crate) fn encode(&self) -> u64 {
        (self.gic_version & 0xf)
            | (self.vcpus & 0xf) << 4
            | u64::from(self.focus) << 8
            | u64::from(self.crash_device) << 9
    }

    fn decode(word: u64, ram_size: u64) -> Configuration {
        Configuration {
            gic_version: word & 0xf,
            vcpus: (word >> 4) & 0xf,
            focus: (word >> 8) & 1 != 0,
            crash_device: (word >> 9) & 1 != 0,
            ram_base: crate::guest::RAM_BASE,
            ram_size,
        }
    }
}

/// A guest name of at most 16 bytes as two words.
pub(crate) fn pack_name(name: &str) -> [u64; 2] {
    let mut bytes = [0u8; 16];
    let length = name.len().min(16);
    bytes[..length].copy_from_slice(&name.as_bytes()[..length]);
    let mut low = [0u8; 8];
    let mut high = [0u8; 8];
    low.copy_from_slice(&bytes[..8]);
    high.copy_from_slice(&bytes[8..]);
    [u64::from_le_bytes(low), u64::from_le_bytes(high)]
}

/// The console line being collected, and the guest's name.
struct Console {
    name: [u8; 16],
    line: [u8; LINE],
    length: usize,
}

impl Console {
    fn name(&self) -> &str {
        let length = self.name.iter().position(|byte| *byte == 0).unwrap_or(16);
        core::str::from_utf8(&self.name[..length]).unwrap_or("guest")
    }

    fn put(&mut self, byte: u8) {
        if byte == b'\r' {
            return;
        }
        if byte == b'\n' || self.length == LINE {
            self.flush();
            if byte == b'\n' {
                return;
            }
        }
        self.line[self.length] = byte;
        self.length += 1;
    }

    fn flush(&mut self) {
        let text = core::str::from_utf8(&self.line[..self.length]).unwrap_or("(not UTF-8)");
        println!("[{}] {text}", self.name());
        self.length = 0;
    }
}

/// How many exits of each kind this VMM handled (reported when the guest
/// stops: where a guest's virtualization cost goes).
#[derive(Default)]
struct ExitCounts {
    uart_reads: u64,
    uart_writes: u64,
    distributor: u64,
    redistributors: u64,
    unbacked: u64,
    hypercalls: u64,
    system_registers: u64,
    exceptions: u64,
}

impl ExitCounts {
    fn total(&self) -> u64 {
        self.uart_reads
            + self.uart_writes
            + self.distributor
            + self.redistributors
            + self.unbacked
            + self.hypercalls
            + self.system_registers
            + self.exceptions
    }
}

/// The UART register page: a frame that holds what each PL011 register
/// reads as, mapped read-only into the guest where the UART is. The
/// guest's console polls the flag register before every byte it writes;
/// with the page those reads are plain loads, and only the writes exit
/// (a stage-2 permission fault, an MMIO exit like any other). The page is
/// rewritten after every change the VMM makes to the UART, and it is
/// unmapped whenever a read would change the UART (received bytes wait:
/// reading `DR` takes one), so then every access exits as before.
/// Unmapping or mapping failing only costs speed: an unmapped page means
/// every access exits.
struct UartPage {
    mapped: bool,
    /// An unmap failed: reported once.
    reported: bool,
}

/// Everything one VMM keeps.
struct Vmm {
    configuration: Configuration,
    console: Console,
    uart: Pl011,
    gic: Vgic,
    psci: Psci,
    uart_level: bool,
    stopped: bool,
    exits: ExitCounts,
    uart_page: UartPage,
}

/// The VMM thread's entry: `name` in two words, the configuration word,
/// the guest's RAM size.
pub(crate) extern "C" fn main(name_low: u64, name_high: u64, word: u64, ram_size: u64) -> ! {
    let configuration = Configuration::decode(word, ram_size);
    let mut name = [0u8; 16];
    name[..8].copy_from_slice(&name_low.to_le_bytes());
    name[8..].copy_from_slice(&name_high.to_le_bytes());
    let version = if configuration.gic_version == 3 {
        GicVersion::V3
    } else {
        GicVersion::V2
    };
    let vcpus = u8::try_from(configuration.vcpus.clamp(1, 4)).unwrap_or(1);
    let Ok(gic) = Vgic::new(version, vcpus) else {
        println!("vmm: bad VCPU count {vcpus}");
        stop_forever()
    };
    let mut vmm = Vmm {
        configuration,
        console: Console {
            name,
            line: [0; LINE],
            length: 0,
        },
        uart: Pl011::new(),
        gic,
        psci: Psci::new(vcpus),
        uart_level: false,
        stopped: false,
        exits: ExitCounts::default(),
        uart_page: UartPage {
            mapped: false,
            reported: false,
        },
    };
    vmm.refresh_uart_page(true);
    let endpoint = Endpoint::new(vmm_slots::ENDPOINT);
    let mut received = ipc::recv(endpoint);
    loop {
        received = match vmm.handle(&received) {
            Some(reply) => ipc::reply_recv(endpoint, &reply),
            None => ipc::recv(endpoint),
        };
    }
}

fn stop_forever() -> ! {
    loop {
        let _ = ipc::recv(Endpoint::new(vmm_slots::ENDPOINT));
    }
}

impl Vmm {
    /// Handles one message; the reply to send, if the sender waits for one.
    fn handle(&mut self, received: &Received) -> Option<Message> {
        let label = received.message.label();
        if label == 0 && received.badge & INPUT_BADGE != 0 {
            self.console_input();
            return None;
        }
        let vcpu = received.badge.wrapping_sub(1);
        if vcpu >= self.configuration.vcpus {
            println!(
                "vmm {}: a message with badge {:#x}, label {label}: ignored",
                self.console.name(),
                received.badge
            );
            return None;
        }
        let words = received.message.words();
        let word = |index: usize| words.get(index).copied().unwrap_or(0);
        #[allow(clippy::cast_possible_truncation, reason = "below 4")]
        let vcpu = vcpu as u8;
        match FaultLabel::from_label(label) {
            Some(FaultLabel::VcpuMmio) => Some(self.mmio(
                vcpu,
                word(mmio::ADDRESS),
                word(mmio::ACCESS),
                word(mmio::VALUE),
                word(mmio::PC),
            )),
            Some(FaultLabel::VcpuHypercall) => Some(self.hypercall(vcpu, words)),
            Some(FaultLabel::VcpuSystemRegister) => Some(self.system_register(
                vcpu,
                word(system_register::ENCODING),
                word(system_register::READ) != 0,
                word(system_register::VALUE),
            )),
            Some(FaultLabel::VcpuException) => Some(self.exception(
                word(vcpu_exception::SYNDROME),
                word(vcpu_exception::PC),
                word(vcpu_exception::GUEST_PHYSICAL),
            )),
            _ => {
                println!(
                    "vmm {}: VCPU {vcpu} sent label {label}: not an exit; it is stopped",
                    self.console.name()
                );
                Some(Message::empty(u64::MAX >> 12))
            }
        }
    }

    fn mmio(&mut self, vcpu: u8, address: u64, access: u64, value: u64, pc: u64) -> Message {
        #[allow(clippy::cast_possible_truncation, reason = "four bits")]
        let size = (access & mmio::SIZE_MASK) as u8;
        let write = access & mmio::WRITE != 0;
        let mut result = 0;
        let mut actions = Actions::new();
        if (UART_BASE..UART_BASE + UART_SIZE).contains(&address) {
            let offset = address - UART_BASE;
            if write {
                self.exits.uart_writes += 1;
                self.uart.write(offset, size, value);
            } else {
                self.exits.uart_reads += 1;
                result = self.uart.read(offset, size);
            }
            let console = &mut self.console;
            self.uart.drain_output(|byte| console.put(byte));
            // A byte written to DR changes only the flags and the
            // interrupt status; anything else may change any register.
            self.refresh_uart_page(!write || offset != vmm_server::pl011::reg::DR);
            actions = self.update_uart_line();
        } else if (DISTRIBUTOR_BASE..DISTRIBUTOR_BASE + DISTRIBUTOR_SIZE).contains(&address) {
            let offset = address - DISTRIBUTOR_BASE;
            self.exits.distributor += 1;
            if write {
                actions = self.gic.write_distributor(vcpu, offset, size, value);
            } else {
                result = self.gic.read_distributor(vcpu, offset, size);
            }
        } else if self.configuration.gic_version == 3
            && (REDISTRIBUTOR_BASE
                ..REDISTRIBUTOR_BASE + REDISTRIBUTOR_STRIDE * self.configuration.vcpus)
                .contains(&address)
        {
            let offset = address - REDISTRIBUTOR_BASE;
            self.exits.redistributors += 1;
            if write {
                actions = self.gic.write_redistributor(offset, size, value);
            } else {
                result = self.gic.read_redistributor(offset, size);
            }
        } else if self.configuration.crash_device
            && (CRASH_DEVICE_BASE..CRASH_DEVICE_BASE + CRASH_DEVICE_SIZE).contains(&address)
            && write
        {
            self.console.flush_if_pending();
            // The test device's whole purpose: this VMM dies here, and the
            // test checks that nothing but its own guest notices.
            panic!(
                "vmm {}: the guest wrote {value:#x} to the crash-test device at {address:#x}",
                self.console.name()
            );
        } else {
            self.exits.unbacked += 1;
            println!(
                "vmm {}: VCPU {vcpu} {} {size} byte(s) at {address:#x} (pc {pc:#x}): nothing is there; \
                 injecting a synchronous external abort",
                self.console.name(),
                if write { "wrote" } else { "read" },
            );
            return Message::empty(exit_reply::INJECT_ABORT);
        }
        self.apply(&actions);
        Message::new(exit_reply::RESUME, [result])
    }

    /// Recomputes the UART's interrupt line after an access or input.
    fn update_uart_line(&mut self) -> Actions {
        let level = self.uart.interrupt_level();
        if level == self.uart_level && !level {
            return Actions::new();
        }
        self.uart_level = level;
        self.gic.set_level(UART_INTID, level)
    }

    fn apply(&mut self, actions: &Actions) {
        for action in actions {
            if let Action::Inject {
                vcpu,
                intid,
                priority,
                ..
            } = *action
            {
                let target = Vcpu::new(vmm_slots::vcpu(u64::from(vcpu)));
                if let Err(error) = target.inject_irq(u64::from(intid), u64::from(priority)) {
                    println!(
                        "vmm {}: injecting interrupt {intid} into VCPU {vcpu}: {error}",
                        self.console.name()
                    );
                }
            }
        }
    }

    /// Brings the UART register page up to date (`UartPage`): unmapped
    /// while reads have effects; otherwise rewritten (`full`: every
    /// register, else the flags and interrupt status) and mapped.
    fn refresh_uart_page(&mut self, full: bool) {
        let guest_page = Frame::new(vmm_slots::UART_PAGE);
        if self.uart.reads_have_effects() {
            if self.uart_page.mapped {
                match guest_page.unmap() {
                    Ok(()) => self.uart_page.mapped = false,
                    Err(error) if !self.uart_page.reported => {
                        self.uart_page.reported = true;
                        println!(
                            "vmm {}: cannot unmap the UART register page ({error}): \
                             the guest may not see its input",
                            self.console.name()
                        );
                    }
                    Err(_) => {}
                }
            }
            return;
        }
        let write = |(offset, value): (u64, u64)| {
            let _ = window::write(UART_PAGE_ADDRESS + offset, value);
        };
        if full || !self.uart_page.mapped {
            self.uart.register_page().into_iter().for_each(write);
        } else {
            self.uart.status_words().into_iter().for_each(write);
        }
        if !self.uart_page.mapped {
            let mapped = guest_page.map(
                VSpace::new(vmm_slots::GUEST_VSPACE),
                UART_BASE,
                hyp_abi::Rights::READ,
                0,
            );
            self.uart_page.mapped = mapped.is_ok();
        }
    }

    fn console_input(&mut self) {
        while self.uart.can_accept_input() {
            let Some(byte) = ipc::debug_get_char() else {
                break;
            };
            self.uart.push_input(byte);
        }
        self.refresh_uart_page(true);
        let actions = self.update_uart_line();
        self.apply(&actions);
        let _ = IrqHandler::new(vmm_slots::INPUT_IRQ).acknowledge();
    }

    fn hypercall(&mut self, vcpu: u8, words: &[u64]) -> Message {
        self.exits.hypercalls += 1;
        let mut x = [0u64; 4];
        for (index, value) in x.iter_mut().enumerate() {
            *value = words.get(hypercall::X0 + index).copied().unwrap_or(0);
        }
        // The guest benchmark's vendor call: inject SGI x1 into the caller
        // now and tell it when (the cycle counter just before).
        #[cfg(feature = "guest-bench")]
        if x[0] == 0x8600_0001 {
            let start = hyp_user::cycles::now();
            let target = Vcpu::new(vmm_slots::vcpu(u64::from(vcpu)));
            let _ = target.inject_irq(x[1] & 0xf, 0xa0);
            return Message::new(exit_reply::RESUME, [start]);
        }
        match self
            .psci
            .handle(vcpu, Request::decode(x[0], x[1], x[2], x[3]))
        {
            Outcome::Reply(value) => Message::new(exit_reply::RESUME, [value]),
            Outcome::StartVcpu {
                index,
                entry,
                context_id,
                reply,
            } => {
                let thread = Tcb::new(vmm_slots::vcpu_thread(u64::from(index)));
                let started = thread
                    .write_registers(entry, 0, &[context_id])
                    .and_then(|()| thread.resume());
                if let Err(error) = started {
                    println!(
                        "vmm {}: starting VCPU {index}: {error}",
                        self.console.name()
                    );
                }
                Message::new(exit_reply::RESUME, [reply])
            }
            Outcome::StopVcpu(_) => Message::empty(STOP),
            Outcome::PowerOff => {
                self.console.flush_if_pending();
                println!(
                    "vmm {}: guest powered off (PSCI SYSTEM_OFF)",
                    self.console.name()
                );
                self.stop_all(vcpu);
                Message::empty(STOP)
            }
            Outcome::Reset => {
                self.console.flush_if_pending();
                println!(
                    "vmm {}: guest asked for a reset (PSCI SYSTEM_RESET); resets are not supported, it is stopped",
                    self.console.name()
                );
                self.stop_all(vcpu);
                Message::empty(STOP)
            }
        }
    }

    /// Stops every VCPU but `caller` (whose reply stops it), and says how
    /// many exits of each kind the guest made.
    fn stop_all(&mut self, caller: u8) {
        self.stopped = true;
        let exits = &self.exits;
        println!(
            "vmm {}: {} exits handled: UART {} reads, {} writes; GIC distributor {}, \
             redistributors {}; nothing there {}; hypercalls {}; system registers {}; \
             other exceptions {}",
            self.console.name(),
            exits.total(),
            exits.uart_reads,
            exits.uart_writes,
            exits.distributor,
            exits.redistributors,
            exits.unbacked,
            exits.hypercalls,
            exits.system_registers,
            exits.exceptions
        );
        for index in 0..self.configuration.vcpus {
            if index != u64::from(caller) {
                let _ = Tcb::new(vmm_slots::vcpu_thread(index)).suspend();
            }
        }
    }

    fn system_register(&mut self, vcpu: u8, encoding: u64, read: bool, value: u64) -> Message {
        self.exits.system_registers += 1;
        if encoding == ICC_SGI1R_EL1 && !read {
            let actions = self.gic.write_sgi1r(vcpu, value);
            self.apply(&actions);
        }
        // Anything else the core traps reads as zero and ignores writes.
        Message::new(exit_reply::RESUME, [0])
    }

    fn exception(&mut self, syndrome: u64, pc: u64, guest_physical: u64) -> Message {
        self.exits.exceptions += 1;
        let class = syndrome >> 26;
        self.console.flush_if_pending();
        let abort = class == 0x24 || class == 0x20;
        if abort {
            println!(
                "vmm {}: guest access to {guest_physical:#x} at pc {pc:#x} (syndrome {syndrome:#x}) has nothing behind it; \
                 injecting a synchronous external abort",
                self.console.name()
            );
            Message::empty(exit_reply::INJECT_ABORT)
        } else {
            println!(
                "vmm {}: guest exception class {class:#x} at pc {pc:#x} (syndrome {syndrome:#x}); \
                 injecting an undefined instruction",
                self.console.name()
            );
            Message::empty(exit_reply::INJECT_UNDEFINED)
        }
    }
}

/// A reply label that stops the VCPU (any label the protocol does not
/// define).
const STOP: u64 = 0xff;

impl Console {
    fn flush_if_pending(&mut self) {
        if self.length != 0 {
            self.flush();
        }
    }
}
