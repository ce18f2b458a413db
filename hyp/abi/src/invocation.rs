//! Invocations of kernel objects: a `Call` on an object capability with an
//! [`InvocationLabel`] in the message label and the arguments in the message
//! words. The kernel decodes every argument before it changes anything.

/// What to do with the invoked object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum InvocationLabel {
    /// Untyped: `(type, size_bits, destination slot, count)` with the
    /// destination CNode as extra capability 1; creates `count` objects.
    UntypedRetype = 1,
    /// CNode: `(destination slot, source slot, rights)`; source CNode as
    /// extra capability 1.
    CNodeCopy = 2,
    /// CNode: `(destination slot, source slot, rights, badge)`.
    CNodeMint = 3,
    /// CNode: `(destination slot, source slot)`: moves the capability.
    CNodeMove = 4,
    /// CNode: `(slot)`: deletes the capability; the last one destroys the object.
    CNodeDelete = 5,
    /// CNode: `(slot)`: deletes every capability derived from it.
    CNodeRevoke = 6,
    /// TCB: `(fault endpoint capability pointer, or 0 for none;
    /// priority)` with the CSpace root CNode and the VSpace as extra
    /// capabilities 1 and 2. The fault endpoint is looked up in the
    /// caller's CSpace now, and the thread keeps that capability's object
    /// and badge.
    TcbConfigure = 7,
    /// TCB: returns `(pc, sp, x0, x1, x2, x3, x4, x5)`.
    TcbReadRegisters = 8,
    /// TCB: `(pc, sp, x0, x1, ...)`: 2 to 8 words; the thread must be
    /// suspended.
    TcbWriteRegisters = 9,
    /// TCB: make runnable.
    TcbResume = 10,
    /// TCB: stop.
    TcbSuspend = 11,
    /// TCB: `(priority)`.
    TcbSetPriority = 12,
    /// TCB: notification as extra capability 1.
    TcbBindNotification = 13,
    /// TCB: `(core)`.
    TcbSetAffinity = 14,
    /// Frame: `(address, rights, attributes)` with the VSpace as extra
    /// capability 1; attributes from [`crate::frame_attributes`].
    FrameMap = 15,
    /// Frame: unmap from wherever it is mapped.
    FrameUnmap = 16,
    /// PageTable: `(address)` with the VSpace as extra capability 1.
    PageTableMap = 17,
    /// PageTable: unmap.
    PageTableUnmap = 18,
    /// IrqControl: `(irq, destination slot)` with the destination CNode
    /// as extra capability 1: creates an IrqHandler.
    IrqControlGet = 19,
    /// IrqHandler: notification as extra capability 1.
    IrqHandlerSetNotification = 20,
    /// IrqHandler: re-enable the interrupt after handling it.
    IrqHandlerAck = 21,
    /// VCPU: the TCB as extra capability 1: from now on the thread runs
    /// as this virtual CPU at EL1 (it must be suspended and not yet bound).
    VcpuSetTcb = 22,
    /// VCPU: `(register)` from [`crate::vcpu_register`]: returns its value.
    VcpuReadRegister = 23,
    /// VCPU: `(register, value)`: the VCPU's thread must be suspended or
    /// blocked (not running on a core).
    VcpuWriteRegister = 24,
    /// VCPU: `(intid, priority)`: makes virtual interrupt `intid` (below
    /// 1020) pending with `priority` (0 to 255, lower is more urgent).
    VcpuInjectIrq = 25,
    /// Frame: writes its data back to memory (clean to the point of
    /// coherency) and invalidates the instruction caches, so that a guest
    /// starting with its MMU off (caches bypassed) sees what was written
    /// into the frame through a cacheable mapping.
    FrameClean = 26,
}

impl InvocationLabel {
    /// The label with number `label`, or `None`.
    pub const fn from_label(label: u64) -> Option<InvocationLabel> {
        use InvocationLabel::*;
        Some(match label {
            1 => UntypedRetype,
            2 => CNodeCopy,
            3 => CNodeMint,
            4 => CNodeMove,
            5 => CNodeDelete,
            6 => CNodeRevoke,
            7 => TcbConfigure,
            8 => TcbReadRegisters,
            9 => TcbWriteRegisters,
            10 => TcbResume,
            11 => TcbSuspend,
            12 => TcbSetPriority,
            13 => TcbBindNotification,
            14 => TcbSetAffinity,
            22 => VcpuSetTcb,
            23 => VcpuReadRegister,
            24 => VcpuWriteRegister,
            25 => VcpuInjectIrq,
            26 => FrameClean,
            15 => FrameMap,
            16 => FrameUnmap,
            17 => PageTableMap,
            18 => PageTableUnmap,
            19 => IrqControlGet,
            20 => IrqHandlerSetNotification,
            21 => IrqHandlerAck,
            _ => return None,
        })
    }
}

/// Kernel object types that `UntypedRetype` creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum ObjectType {
    /// A smaller untyped block (size given by the caller).
    Untyped = 0,
    /// A thread.
    Tcb = 1,
    /// A synchronous endpoint.
    Endpoint = 2,
    /// A notification word.
    Notification = 3,
    /// A CNode of `2^size_bits` slots.
    CNode = 4,
    /// A stage-2 address space (its root table).
    VSpace = 5,
    /// A stage-2 translation table below the root.
    PageTable = 6,
    /// A 4 KiB frame.
    Frame4K = 7,
    /// A 2 MiB frame.
    Frame2M = 8,
    /// A virtual CPU: the EL1 state of one guest CPU.
    Vcpu = 9,
}

/// log2 of the bytes one CNode slot takes.
pub const SLOT_SIZE_BITS: u32 = 8;
/// Smallest untyped block (16 bytes).
pub const MIN_UNTYPED_BITS: u32 = 4;
/// Largest untyped block (2^47 bytes).
pub const MAX_UNTYPED_BITS: u32 = 47;
/// Smallest CNode radix (16 slots: a CNode fills at least a 4 KiB page,
/// so no two CNodes share a page and the kernel can keep a CNode's
/// bookkeeping per page).
pub const MIN_CNODE_RADIX: u32 = 4;
/// Largest CNode radix (2^24 slots).
pub const MAX_CNODE_RADIX: u32 = 24;

impl ObjectType {
    /// The type with number `number`, or `None`.
    pub const fn from_number(number: u64) -> Option<ObjectType> {
        Some(match number {
            0 => ObjectType::Untyped,
            1 => ObjectType::Tcb,
            2 => ObjectType::Endpoint,
            3 => ObjectType::Notification,
            4 => ObjectType::CNode,
            5 => ObjectType::VSpace,
            6 => ObjectType::PageTable,
            7 => ObjectType::Frame4K,
            8 => ObjectType::Frame2M,
            9 => ObjectType::Vcpu,
            _ => return None,
        })
    }

    /// log2 of the object's size in bytes. `size_bits` is the caller's
    /// argument: the block size for `Untyped`, the radix for `CNode`,
    /// ignored otherwise. `None` if `size_bits` is out of range.
    pub const fn object_size_bits(self, size_bits: u32) -> Option<u32> {
        match self {
            ObjectType::Untyped => {
                if size_bits >= MIN_UNTYPED_BITS && size_bits <= MAX_UNTYPED_BITS {
                    Some(size_bits)
                } else {
                    None
                }
            }
            ObjectType::CNode => {
                if size_bits >= MIN_CNODE_RADIX && size_bits <= MAX_CNODE_RADIX {
                    Some(size_bits + SLOT_SIZE_BITS)
                } else {
                    None
                }
            }
            ObjectType::Tcb => Some(11),
            ObjectType::Endpoint => Some(7),
            ObjectType::Notification => Some(7),
            ObjectType::VSpace | ObjectType::PageTable | ObjectType::Frame4K | ObjectType::Vcpu => {
                Some(12)
            }
            ObjectType::Frame2M => Some(21),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_types_round_trip() {
        for label in 1..=26 {
            let decoded = InvocationLabel::from_label(label).unwrap();
            assert_eq!(decoded as u64, label);
        }
        assert_eq!(InvocationLabel::from_label(0), None);
        assert_eq!(InvocationLabel::from_label(27), None);
        for number in 0..=9 {
            assert_eq!(ObjectType::from_number(number).unwrap() as u64, number);
        }
        assert_eq!(ObjectType::from_number(10), None);
    }

    #[test]
    fn sizes_check_their_argument() {
        assert_eq!(ObjectType::CNode.object_size_bits(8), Some(16));
        assert_eq!(ObjectType::CNode.object_size_bits(0), None);
        assert_eq!(ObjectType::CNode.object_size_bits(25), None);
        assert_eq!(ObjectType::Untyped.object_size_bits(3), None);
        assert_eq!(ObjectType::Untyped.object_size_bits(12), Some(12));
        assert_eq!(ObjectType::Frame2M.object_size_bits(0), Some(21));
    }
}
