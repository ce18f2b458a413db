//! Typed handles to capabilities, with one method per invocation the
//! kernel object accepts, so a program cannot invoke a TCB operation on an
//! endpoint or pass the arguments in the wrong order.
//!
//! A handle is a capability pointer in the caller's CSpace. For the root
//! task the CSpace is one CNode whose guard makes a pointer exactly its
//! slot index, so a handle is that slot's number; how pointers of other
//! threads resolve is the kernel's rule (`docs/abi.md`, "Capability
//! pointers"). A handle is only a number: creating one does not check that
//! the slot holds that kind of capability; the kernel checks when it is
//! used.
//!
//! An invocation is a `Call` on the object's pointer with the
//! [`InvocationLabel`] as the label, the arguments as message words in the
//! order `hyp_abi::invocation` documents, and capability arguments 1..3 in
//! `x11..x13`. The kernel answers label 0 with result words, or an
//! [`ErrorCode`](hyp_abi::ErrorCode) label with the details in words 0..2:
//! methods return that as `Err`. A label or details the ABI does not know
//! read as [`Error::IllegalOperation`].

use hyp_abi::{
    EXTRA_CAPABILITY_REGISTERS, Error, InvocationLabel, MessageInfo, ObjectType,
    REGISTER_MESSAGE_WORDS, Rights, Syscall,
};

use crate::ipc::{self, Message, Received};
use crate::syscall::syscall;

macro_rules! capability_handles {
    ($($(#[$documentation:meta])* $name:ident;)*) => {$(
        $(#[$documentation])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct $name(u64);

        impl $name {
            /// The capability that `pointer` names in the caller's CSpace.
            pub const fn new(pointer: u64) -> $name {
                $name(pointer)
            }

            /// Its capability pointer.
            pub const fn pointer(self) -> u64 {
                self.0
            }
        }
    )*};
}

capability_handles! {
    /// Untyped memory, from which every kernel object is made.
    Untyped;
    /// A CNode: a table of capability slots.
    CNode;
    /// A thread.
    Tcb;
    /// A synchronous IPC endpoint.
    Endpoint;
    /// A notification word.
    Notification;
    /// A stage-2 address space.
    VSpace;
    /// A stage-2 translation table below the root.
    PageTable;
    /// A 4 KiB or 2 MiB frame of memory.
    Frame;
    /// The authority to create IRQ handlers.
    IrqControl;
    /// The authority over one interrupt.
    IrqHandler;
    /// A virtual CPU.
    Vcpu;
}

/// The registers `TcbReadRegisters` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ThreadRegisters {
    /// The PC the thread resumes at.
    pub program_counter: u64,
    /// Its stack pointer.
    pub stack_pointer: u64,
    /// `x0` to `x5`.
    pub general: [u64; 6],
}

/// General registers `TcbWriteRegisters` can set: the eight message words
/// less the PC and the stack pointer.
pub const WRITABLE_GENERAL_REGISTERS: usize = REGISTER_MESSAGE_WORDS - 2;

/// The badge word of a `CNodeMint` of a CNode capability: the kernel
/// reads it as the guard to set, `guard_bits | guard << 6`
/// (`Capability::derive` in `hyp-core/src/cap.rs`; the encoding is not in
/// `hyp-abi` yet). `guard_bits` has 6 bits (at most 63). The kernel refuses a guard that does not fit
/// `guard_bits`, or guard bits and radix that exceed 64.
pub const fn cnode_guard_badge(guard_bits: u8, guard: u64) -> u64 {
    (guard_bits as u64 & 0x3f) | guard << 6
}

/// Invokes the object at `object` with `label`, the message words
/// `arguments` and the capability arguments 1.. `capabilities`. Returns
/// the reply's words on success. More than eight words or three
/// capabilities cannot be sent: `Truncated`, without entering the kernel.
fn invoke(
    object: u64,
    label: InvocationLabel,
    arguments: &[u64],
    capabilities: &[u64],
) -> Result<[u64; REGISTER_MESSAGE_WORDS], Error> {
    if arguments.len() > REGISTER_MESSAGE_WORDS
        || capabilities.len() > EXTRA_CAPABILITY_REGISTERS.len()
    {
        return Err(Error::Truncated);
    }
    // Both fit a byte after the check above.
    let (Ok(length), Ok(extra_count)) = (
        u8::try_from(arguments.len()),
        u8::try_from(capabilities.len()),
    ) else {
        return Err(Error::Truncated);
    };
    let mut words = [0; REGISTER_MESSAGE_WORDS];
    words[..arguments.len()].copy_from_slice(arguments);
    let mut extra = [0; EXTRA_CAPABILITY_REGISTERS.len()];
    extra[..capabilities.len()].copy_from_slice(capabilities);
    let info = MessageInfo {
        label: label as u64,
        length,
        extra_capabilities: extra_count,
    };
    let reply = syscall(Syscall::Call, object, info, words, extra);
    if reply.info.label == 0 {
        Ok(reply.words)
    } else {
        Err(ipc::error_of(&reply))
    }
}

/// [`invoke`] for invocations that return nothing.
fn invoke_unit(
    object: u64,
    label: InvocationLabel,
    arguments: &[u64],
    capabilities: &[u64],
) -> Result<(), Error> {
    invoke(object, label, arguments, capabilities).map(|_| ())
}

impl Untyped {
    /// `UntypedRetype`: makes `count` objects of `object_type` (with
    /// `size_bits` the block size of an untyped or the radix of a CNode,
    /// ignored otherwise) and puts their capabilities in slots
    /// `destination_slot..destination_slot + count` of `destination`.
    pub fn retype(
        self,
        object_type: ObjectType,
        size_bits: u64,
        destination: CNode,
        destination_slot: u64,
        count: u64,
    ) -> Result<(), Error> {
        invoke_unit(
            self.0,
            InvocationLabel::UntypedRetype,
            &[object_type as u64, size_bits, destination_slot, count],
            &[destination.0],
        )
    }
}

impl CNode {
    /// `CNodeCopy`: puts a copy of the capability in slot `source_slot` of
    /// `source`, with at most `rights`, in the empty slot
    /// `destination_slot` of this CNode.
    pub fn copy(
        self,
        destination_slot: u64,
        source: CNode,
        source_slot: u64,
        rights: Rights,
    ) -> Result<(), Error> {
        invoke_unit(
            self.0,
            InvocationLabel::CNodeCopy,
            &[destination_slot, source_slot, u64::from(rights.bits())],
            &[source.0],
        )
    }

    /// `CNodeMint`: as [`CNode::copy`], with `badge` set on the copy (an
    /// endpoint or notification capability that has no badge yet).
    pub fn mint(
        self,
        destination_slot: u64,
        source: CNode,
        source_slot: u64,
        rights: Rights,
        badge: u64,
    ) -> Result<(), Error> {
        invoke_unit(
            self.0,
            InvocationLabel::CNodeMint,
            &[
                destination_slot,
                source_slot,
                u64::from(rights.bits()),
                badge,
            ],
            &[source.0],
        )
    }

    /// `CNodeMint` of a CNode capability, which sets its guard: puts a copy
    /// of the CNode capability in slot `source_slot` of `source` (one
    /// without a guard yet) in the empty slot `destination_slot` of this
    /// CNode, with a guard of `guard_bits` bits equal to `guard`. A
    /// pointer resolved through the copy must then start with those bits;
    /// with `guard_bits` = 64 − radix and `guard` 0, a 64-bit pointer is
    /// simply the slot index (how the root task's CNode is made).
    pub fn mint_guard(
        self,
        destination_slot: u64,
        source: CNode,
        source_slot: u64,
        guard_bits: u8,
        guard: u64,
    ) -> Result<(), Error> {
        self.mint(
            destination_slot,
            source,
            source_slot,
            Rights::ALL,
            cnode_guard_badge(guard_bits, guard),
        )
    }

    /// `CNodeMove`: moves the capability in slot `source_slot` of `source`
    /// to the empty slot `destination_slot` of this CNode.
    pub fn move_capability(
        self,
        destination_slot: u64,
        source: CNode,
        source_slot: u64,
    ) -> Result<(), Error> {
        invoke_unit(
            self.0,
            InvocationLabel::CNodeMove,
            &[destination_slot, source_slot],
            &[source.0],
        )
    }

    /// `CNodeDelete`: deletes the capability in `slot`; the last capability
    /// to an object destroys it.
    pub fn delete(self, slot: u64) -> Result<(), Error> {
        invoke_unit(self.0, InvocationLabel::CNodeDelete, &[slot], &[])
    }

    /// `CNodeRevoke`: deletes every capability derived from the one in
    /// `slot`.
    pub fn revoke(self, slot: u64) -> Result<(), Error> {
        invoke_unit(self.0, InvocationLabel::CNodeRevoke, &[slot], &[])
    }
}

impl Tcb {
    /// `TcbConfigure`: gives the thread its fault endpoint (looked up now,
    /// in the caller's CSpace; `None` for no fault handler), its priority,
    /// its CSpace root and its address space.
    pub fn configure(
        self,
        fault_endpoint: Option<Endpoint>,
        priority: u8,
        cspace_root: CNode,
        vspace: VSpace,
    ) -> Result<(), Error> {
        invoke_unit(
            self.0,
            InvocationLabel::TcbConfigure,
            &[
                fault_endpoint.map_or(0, Endpoint::pointer),
                u64::from(priority),
            ],
            &[cspace_root.0, vspace.0],
        )
    }

    /// `TcbReadRegisters`: the thread's PC, stack pointer and `x0..x5`.
    pub fn read_registers(self) -> Result<ThreadRegisters, Error> {
        let words = invoke(self.0, InvocationLabel::TcbReadRegisters, &[], &[])?;
        let [program_counter, stack_pointer, x0, x1, x2, x3, x4, x5] = words;
        Ok(ThreadRegisters {
            program_counter,
            stack_pointer,
            general: [x0, x1, x2, x3, x4, x5],
        })
    }

    /// `TcbWriteRegisters`: sets the PC, the stack pointer and the first
    /// `general.len()` registers from `x0` of a thread that is not running.
    /// At most [`WRITABLE_GENERAL_REGISTERS`] fit in the message; more are
    /// refused with `Truncated` before entering the kernel.
    pub fn write_registers(
        self,
        program_counter: u64,
        stack_pointer: u64,
        general: &[u64],
    ) -> Result<(), Error> {
        if general.len() > WRITABLE_GENERAL_REGISTERS {
            return Err(Error::Truncated);
        }
        let mut arguments = [0; REGISTER_MESSAGE_WORDS];
        arguments[0] = program_counter;
        arguments[1] = stack_pointer;
        arguments[2..2 + general.len()].copy_from_slice(general);
        invoke_unit(
            self.0,
            InvocationLabel::TcbWriteRegisters,
            &arguments[..2 + general.len()],
            &[],
        )
    }

    /// `TcbResume`: makes the thread runnable.
    pub fn resume(self) -> Result<(), Error> {
        invoke_unit(self.0, InvocationLabel::TcbResume, &[], &[])
    }

    /// `TcbSuspend`: stops the thread.
    pub fn suspend(self) -> Result<(), Error> {
        invoke_unit(self.0, InvocationLabel::TcbSuspend, &[], &[])
    }

    /// `TcbSetPriority`: at most the caller's own priority.
    pub fn set_priority(self, priority: u8) -> Result<(), Error> {
        invoke_unit(
            self.0,
            InvocationLabel::TcbSetPriority,
            &[u64::from(priority)],
            &[],
        )
    }

    /// `TcbBindNotification`: signals of `notification` (which needs
    /// `READ`) end this thread's receives.
    pub fn bind_notification(self, notification: Notification) -> Result<(), Error> {
        invoke_unit(
            self.0,
            InvocationLabel::TcbBindNotification,
            &[],
            &[notification.0],
        )
    }

    /// `TcbSetAffinity`: the core the thread runs on.
    pub fn set_affinity(self, core: u64) -> Result<(), Error> {
        invoke_unit(self.0, InvocationLabel::TcbSetAffinity, &[core], &[])
    }
}

impl Endpoint {
    /// [`ipc::call`] through this endpoint.
    pub fn call(self, message: &Message) -> Message {
        ipc::call(self, message)
    }

    /// [`ipc::send`] through this endpoint.
    pub fn send(self, message: &Message) -> Result<(), Error> {
        ipc::send(self, message)
    }

    /// [`ipc::nb_send`] through this endpoint.
    pub fn nb_send(self, message: &Message) -> Result<(), Error> {
        ipc::nb_send(self, message)
    }

    /// [`ipc::recv`] on this endpoint.
    pub fn recv(self) -> Received {
        ipc::recv(self)
    }

    /// [`ipc::reply_recv`] on this endpoint.
    pub fn reply_recv(self, message: &Message) -> Received {
        ipc::reply_recv(self, message)
    }
}

impl Notification {
    /// [`ipc::signal`] this notification.
    pub fn signal(self) -> Result<(), Error> {
        ipc::signal(self)
    }

    /// [`ipc::wait`] on this notification.
    pub fn wait(self) -> Result<u64, Error> {
        ipc::wait(self)
    }

    /// [`ipc::poll`] this notification.
    pub fn poll(self) -> Result<u64, Error> {
        ipc::poll(self)
    }
}

impl Frame {
    /// `FrameMap`: maps the frame at `address` of `vspace` with `rights`
    /// (`READ`, or `READ` and `WRITE`) and `attributes` from
    /// [`hyp_abi::frame_attributes`]. The translation tables for the
    /// address must exist: `LookupFailed` (capability 1) says which is
    /// missing.
    pub fn map(
        self,
        vspace: VSpace,
        address: u64,
        rights: Rights,
        attributes: u64,
    ) -> Result<(), Error> {
        invoke_unit(
            self.0,
            InvocationLabel::FrameMap,
            &[address, u64::from(rights.bits()), attributes],
            &[vspace.0],
        )
    }

    /// `FrameUnmap`: unmaps the frame from wherever this capability mapped
    /// it.
    pub fn unmap(self) -> Result<(), Error> {
        invoke_unit(self.0, InvocationLabel::FrameUnmap, &[], &[])
    }
}

impl Frame {
    /// `FrameClean`: writes the frame's data back to memory and invalidates
    /// the instruction caches (before a guest that starts with its MMU off
    /// runs what was written into it).
    pub fn clean(self) -> Result<(), Error> {
        invoke_unit(self.0, InvocationLabel::FrameClean, &[], &[])
    }
}

impl PageTable {
    /// `PageTableMap`: links the table into `vspace` for `address`, at the
    /// first level of the walk that has no table yet.
    pub fn map(self, vspace: VSpace, address: u64) -> Result<(), Error> {
        invoke_unit(
            self.0,
            InvocationLabel::PageTableMap,
            &[address],
            &[vspace.0],
        )
    }

    /// `PageTableUnmap`: unlinks the (empty) table.
    pub fn unmap(self) -> Result<(), Error> {
        invoke_unit(self.0, InvocationLabel::PageTableUnmap, &[], &[])
    }
}

impl IrqControl {
    /// `IrqControlGet`: creates the handler of interrupt `irq` in slot
    /// `destination_slot` of `destination`.
    pub fn get(self, irq: u64, destination: CNode, destination_slot: u64) -> Result<(), Error> {
        invoke_unit(
            self.0,
            InvocationLabel::IrqControlGet,
            &[irq, destination_slot],
            &[destination.0],
        )
    }
}

impl IrqHandler {
    /// `IrqHandlerSetNotification`: the interrupt signals `notification`.
    pub fn set_notification(self, notification: Notification) -> Result<(), Error> {
        invoke_unit(
            self.0,
            InvocationLabel::IrqHandlerSetNotification,
            &[],
            &[notification.0],
        )
    }

    /// `IrqHandlerAck`: re-enables the interrupt after handling it.
    pub fn acknowledge(self) -> Result<(), Error> {
        invoke_unit(self.0, InvocationLabel::IrqHandlerAck, &[], &[])
    }
}

impl Vcpu {
    /// `VcpuSetTcb`: `thread` (suspended, not bound yet) runs as this VCPU
    /// from now on, at EL1.
    pub fn set_tcb(self, thread: Tcb) -> Result<(), Error> {
        invoke_unit(self.0, InvocationLabel::VcpuSetTcb, &[], &[thread.0])
    }

    /// `VcpuReadRegister`: EL1 register `register`
    /// ([`hyp_abi::vcpu_register`]).
    pub fn read_register(self, register: u64) -> Result<u64, Error> {
        invoke(self.0, InvocationLabel::VcpuReadRegister, &[register], &[]).map(|words| words[0])
    }

    /// `VcpuWriteRegister`: sets EL1 register `register` of a VCPU whose
    /// thread is not running.
    pub fn write_register(self, register: u64, value: u64) -> Result<(), Error> {
        invoke_unit(
            self.0,
            InvocationLabel::VcpuWriteRegister,
            &[register, value],
            &[],
        )
    }

    /// `VcpuInjectIrq`: makes virtual interrupt `intid` pending at
    /// `priority`.
    pub fn inject_irq(self, intid: u64, priority: u64) -> Result<(), Error> {
        invoke_unit(
            self.0,
            InvocationLabel::VcpuInjectIrq,
            &[intid, priority],
            &[],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host_kernel::fake;
    use crate::syscall::RawReply;
    use hyp_abi::{ErrorCode, frame_attributes};

    /// Runs `invocation` against a kernel that answers success, and checks
    /// the one request it made.
    fn check(
        invocation: impl FnOnce() -> Result<(), Error>,
        object: u64,
        label: InvocationLabel,
        arguments: &[u64],
        capabilities: &[u64],
    ) {
        fake::install_success([0; 8]);
        assert_eq!(invocation(), Ok(()), "{label:?}");
        let requests = fake::requests();
        assert_eq!(requests.len(), 1, "{label:?}");
        let request = requests[0];
        assert_eq!(request.number, Syscall::Call, "{label:?}");
        assert_eq!(request.capability, object, "{label:?}");
        assert_eq!(request.info.label, label as u64, "{label:?}");
        assert_eq!(
            usize::from(request.info.length),
            arguments.len(),
            "{label:?}"
        );
        assert_eq!(&request.words[..arguments.len()], arguments, "{label:?}");
        assert_eq!(
            usize::from(request.info.extra_capabilities),
            capabilities.len(),
            "{label:?}"
        );
        assert_eq!(
            &request.extra_capabilities[..capabilities.len()],
            capabilities,
            "{label:?}"
        );
    }

    #[test]
    fn every_invocation_sends_its_arguments_in_the_documented_order() {
        let read_write = Rights::READ.union(Rights::WRITE);
        check(
            || Untyped::new(9).retype(ObjectType::CNode, 8, CNode::new(2), 30, 1),
            9,
            InvocationLabel::UntypedRetype,
            &[ObjectType::CNode as u64, 8, 30, 1],
            &[2],
        );
        check(
            || CNode::new(2).copy(31, CNode::new(3), 30, read_write),
            2,
            InvocationLabel::CNodeCopy,
            &[31, 30, 0b11],
            &[3],
        );
        check(
            || CNode::new(2).mint(32, CNode::new(2), 30, Rights::WRITE, 0x42),
            2,
            InvocationLabel::CNodeMint,
            &[32, 30, 0b10, 0x42],
            &[2],
        );
        check(
            || CNode::new(2).mint_guard(35, CNode::new(2), 34, 56, 0),
            2,
            InvocationLabel::CNodeMint,
            &[35, 34, 0b1111, 56],
            &[2],
        );
        check(
            || CNode::new(40).move_capability(1, CNode::new(2), 32),
            40,
            InvocationLabel::CNodeMove,
            &[1, 32],
            &[2],
        );
        check(
            || CNode::new(2).delete(33),
            2,
            InvocationLabel::CNodeDelete,
            &[33],
            &[],
        );
        check(
            || CNode::new(2).revoke(34),
            2,
            InvocationLabel::CNodeRevoke,
            &[34],
            &[],
        );
        check(
            || {
                Tcb::new(20).configure(
                    Some(Endpoint::new(21)),
                    100,
                    CNode::new(22),
                    VSpace::new(23),
                )
            },
            20,
            InvocationLabel::TcbConfigure,
            &[21, 100],
            &[22, 23],
        );
        check(
            || Tcb::new(20).configure(None, 7, CNode::new(22), VSpace::new(23)),
            20,
            InvocationLabel::TcbConfigure,
            &[0, 7],
            &[22, 23],
        );
        check(
            || Tcb::new(20).write_registers(0x40_1000, 0x30_0000, &[1, 2]),
            20,
            InvocationLabel::TcbWriteRegisters,
            &[0x40_1000, 0x30_0000, 1, 2],
            &[],
        );
        check(
            || Tcb::new(20).resume(),
            20,
            InvocationLabel::TcbResume,
            &[],
            &[],
        );
        check(
            || Tcb::new(20).suspend(),
            20,
            InvocationLabel::TcbSuspend,
            &[],
            &[],
        );
        check(
            || Tcb::new(20).set_priority(99),
            20,
            InvocationLabel::TcbSetPriority,
            &[99],
            &[],
        );
        check(
            || Tcb::new(20).bind_notification(Notification::new(24)),
            20,
            InvocationLabel::TcbBindNotification,
            &[],
            &[24],
        );
        check(
            || Tcb::new(20).set_affinity(3),
            20,
            InvocationLabel::TcbSetAffinity,
            &[3],
            &[],
        );
        check(
            || {
                Frame::new(50).map(
                    VSpace::new(23),
                    0x40_0000,
                    Rights::READ,
                    frame_attributes::EXECUTABLE,
                )
            },
            50,
            InvocationLabel::FrameMap,
            &[0x40_0000, 0b1, frame_attributes::EXECUTABLE],
            &[23],
        );
        check(
            || Frame::new(50).unmap(),
            50,
            InvocationLabel::FrameUnmap,
            &[],
            &[],
        );
        check(
            || PageTable::new(51).map(VSpace::new(23), 0x40_0000),
            51,
            InvocationLabel::PageTableMap,
            &[0x40_0000],
            &[23],
        );
        check(
            || PageTable::new(51).unmap(),
            51,
            InvocationLabel::PageTableUnmap,
            &[],
            &[],
        );
        check(
            || IrqControl::new(4).get(33, CNode::new(2), 60),
            4,
            InvocationLabel::IrqControlGet,
            &[33, 60],
            &[2],
        );
        check(
            || IrqHandler::new(60).set_notification(Notification::new(24)),
            60,
            InvocationLabel::IrqHandlerSetNotification,
            &[],
            &[24],
        );
        check(
            || IrqHandler::new(60).acknowledge(),
            60,
            InvocationLabel::IrqHandlerAck,
            &[],
            &[],
        );
    }

    #[test]
    fn read_registers_returns_pc_sp_and_x0_to_x5() {
        fake::install_success([1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            Tcb::new(20).read_registers(),
            Ok(ThreadRegisters {
                program_counter: 1,
                stack_pointer: 2,
                general: [3, 4, 5, 6, 7, 8],
            })
        );
        let request = fake::requests()[0];
        assert_eq!(
            request.info,
            MessageInfo::new(InvocationLabel::TcbReadRegisters as u64, 0)
        );
    }

    #[test]
    fn too_many_registers_are_refused_without_a_system_call() {
        fake::install_success([0; 8]);
        assert_eq!(
            Tcb::new(20).write_registers(0, 0, &[0; 7]),
            Err(Error::Truncated)
        );
        assert!(fake::requests().is_empty());
        assert_eq!(
            Tcb::new(20).write_registers(0, 0, &[0; 6]),
            Ok(()),
            "pc, sp and six registers fill the eight words"
        );
    }

    #[test]
    fn errors_come_back_decoded() {
        fake::install(|_| RawReply {
            words: [0x1000, 0x800, 0, 0, 0, 0, 0, 0],
            badge: 0,
            info: MessageInfo::new(ErrorCode::NotEnoughMemory as u64, 2),
        });
        assert_eq!(
            Untyped::new(9).retype(ObjectType::Tcb, 0, CNode::new(2), 30, 1),
            Err(Error::NotEnoughMemory {
                requested: 0x1000,
                available: 0x800
            })
        );
        fake::install(|_| RawReply {
            words: [1, 30, 0, 0, 0, 0, 0, 0],
            badge: 0,
            info: MessageInfo::new(ErrorCode::LookupFailed as u64, 2),
        });
        assert_eq!(
            Frame::new(50).map(VSpace::new(23), 0x40_0000, Rights::READ, 0),
            Err(Error::LookupFailed {
                argument: 1,
                bits_left: 30
            })
        );
    }

    #[test]
    fn unknown_error_labels_read_as_illegal_operation() {
        fake::install(|_| RawReply {
            words: [0; 8],
            badge: 0,
            info: MessageInfo::new(99, 0),
        });
        assert_eq!(Tcb::new(20).resume(), Err(Error::IllegalOperation));
        // Details out of range (an argument number beyond a byte).
        fake::install(|_| RawReply {
            words: [300, 0, 0, 0, 0, 0, 0, 0],
            badge: 0,
            info: MessageInfo::new(ErrorCode::InvalidCapability as u64, 1),
        });
        assert_eq!(Tcb::new(20).resume(), Err(Error::IllegalOperation));
    }

    #[test]
    fn without_a_kernel_every_invocation_is_illegal() {
        fake::install(|_| crate::host_kernel::illegal_operation());
        assert_eq!(CNode::new(2).delete(7), Err(Error::IllegalOperation));
    }

    #[test]
    fn a_guard_travels_as_bits_and_value() {
        assert_eq!(cnode_guard_badge(56, 0), 56);
        assert_eq!(cnode_guard_badge(4, 0b1010), 4 | 0b1010 << 6);
    }

    #[test]
    fn handles_are_their_pointers() {
        assert_eq!(Endpoint::new(42).pointer(), 42);
        assert_eq!(Untyped::new(7), Untyped::new(7));
    }
}
