//! Physical interrupts delivered to user space: `IrqControl.Get` hands out
//! one `IrqHandler` capability per interrupt; the handler names a
//! notification that the interrupt signals, and `Ack` lets the interrupt
//! come again.
//!
//! The kernel keeps one [`IrqEntry`] per interrupt number. An interrupt
//! that arrives while it has a notification signals it and stays masked
//! (the arch layer disables it at the interrupt controller) until the
//! handler acknowledges it; one without a notification is masked and
//! reported on the console.
//!
//! # Invariants
//! - An interrupt is `claimed` exactly when one `IrqHandler` capability
//!   for it exists (handler capabilities are never copied).
//! - A notification an interrupt signals counts that as a reference, so it
//!   is not destroyed while the interrupt may still signal it.

use hyp_abi::{Error, Rights};

use crate::cap::Capability;
use crate::ipc::{self, IpcError, IpcStore};
use crate::object::{ObjectRef, ObjectStore};
use crate::scheduler::Scheduler;

/// Interrupt numbers (INTIDs) below this can have handlers: SGIs (0..16)
/// never do, and the rest covers the PPIs and SPIs of the boards we run on.
pub const MAX_IRQS: usize = 1024;
/// The first interrupt number a handler may take (the first PPI).
pub const FIRST_HANDLED_IRQ: u16 = 16;

/// The kernel's state for one interrupt number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct IrqEntry {
    /// An `IrqHandler` capability for it exists.
    pub claimed: bool,
    /// The notification and badge it signals.
    pub notification: Option<(ObjectRef, u64)>,
    /// It fired and waits for `IrqHandler.Ack` (masked until then).
    pub waiting_for_ack: bool,
}

/// Every interrupt's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IrqTable {
    /// Indexed by interrupt number.
    pub entries: [IrqEntry; MAX_IRQS],
}

impl IrqEntry {
    /// No handler.
    pub const EMPTY: IrqEntry = IrqEntry {
        claimed: false,
        notification: None,
        waiting_for_ack: false,
    };
}

impl IrqTable {
    /// No interrupt has a handler.
    pub const EMPTY: IrqTable = IrqTable {
        entries: [IrqEntry::EMPTY; MAX_IRQS],
    };
}

impl Default for IrqTable {
    fn default() -> Self {
        IrqTable::EMPTY
    }
}

/// Where the kernel keeps the interrupt table.
pub trait IrqStore {
    /// The table.
    fn irqs(&self) -> &IrqTable;
    /// The table, for writing.
    fn irqs_mut(&mut self) -> &mut IrqTable;
}

fn entry_mut(store: &mut impl IrqStore, irq: u16) -> Option<&mut IrqEntry> {
    store.irqs_mut().entries.get_mut(usize::from(irq))
}

fn count(store: &mut impl ObjectStore, object: ObjectRef, delta: i32) {
    if let Some(header) = store.header_mut(object) {
        header.references = header.references.saturating_add_signed(delta);
    }
}

/// `IrqControl.Get`: checks `irq` (word 0) for a handler capability: it
/// must be in `[FIRST_HANDLED_IRQ, limit)` (`RangeError`), not one the
/// kernel uses itself (`reserved`: `InvalidArgument`) and not claimed
/// already (`IllegalOperation`: delete its handler first). Returns the
/// capability to put into the (empty) destination slot; the caller puts it
/// there and then calls [`claim`].
pub fn decode_get(
    store: &impl IrqStore,
    irq: u64,
    limit: u16,
    reserved: &[u16],
) -> Result<u16, Error> {
    let limit = limit.min(u16::try_from(MAX_IRQS).unwrap_or(u16::MAX));
    let irq = u16::try_from(irq)
        .ok()
        .filter(|irq| (FIRST_HANDLED_IRQ..limit).contains(irq))
        .ok_or(Error::RangeError {
            argument: 0,
            minimum: u64::from(FIRST_HANDLED_IRQ),
            maximum: u64::from(limit).saturating_sub(1),
        })?;
    if reserved.contains(&irq) {
        return Err(Error::InvalidArgument { argument: 0 });
    }
    if store
        .irqs()
        .entries
        .get(usize::from(irq))
        .is_none_or(|entry| entry.claimed)
    {
        return Err(Error::IllegalOperation);
    }
    Ok(irq)
}

/// Marks `irq` as having its handler capability.
pub fn claim(store: &mut impl IrqStore, irq: u16) {
    if let Some(entry) = entry_mut(store, irq) {
        *entry = IrqEntry {
            claimed: true,
            notification: None,
            waiting_for_ack: false,
        };
    }
}

/// The handler capability of `irq` was deleted: the interrupt is free
/// again and stops signalling its notification.
pub fn release(store: &mut (impl IrqStore + ObjectStore), irq: u16) {
    let Some(entry) = entry_mut(store, irq) else {
        return;
    };
    let old = core::mem::take(entry);
    if let Some((notification, _)) = old.notification {
        count(store, notification, -1);
    }
}

/// `IrqHandler.SetNotification`: `irq` signals the notification in
/// `notification` (which needs `WRITE`) with its badge from now on.
pub fn set_notification(
    store: &mut (impl IrqStore + ObjectStore),
    handler: Capability,
    notification: Capability,
) -> Result<(), Error> {
    let Capability::IrqHandler { irq } = handler else {
        return Err(Error::InvalidCapability { argument: 0 });
    };
    let Capability::Notification {
        object,
        badge,
        rights,
    } = notification
    else {
        return Err(Error::InvalidCapability { argument: 1 });
    };
    if !rights.contains(Rights::WRITE) {
        return Err(Error::InsufficientRights {
            argument: 1,
            needed: Rights::WRITE,
        });
    }
    let old = entry_mut(store, irq)
        .ok_or(Error::InvalidCapability { argument: 0 })?
        .notification;
    if let Some((previous, _)) = old {
        count(store, previous, -1);
    }
    count(store, object, 1);
    if let Some(entry) = entry_mut(store, irq) {
        entry.notification = Some((object, badge));
    }
    Ok(())
}

/// `IrqHandler.Ack`: the handler is done; returns the interrupt for the
/// arch layer to unmask, if it was waiting for the acknowledgement.
pub fn ack(store: &mut impl IrqStore, handler: Capability) -> Result<Option<u16>, Error> {
    let Capability::IrqHandler { irq } = handler else {
        return Err(Error::InvalidCapability { argument: 0 });
    };
    let entry = entry_mut(store, irq).ok_or(Error::InvalidCapability { argument: 0 })?;
    let was_waiting = entry.waiting_for_ack;
    entry.waiting_for_ack = false;
    Ok(was_waiting.then_some(irq))
}

/// What became of an interrupt that arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Raised {
    /// Its notification was signalled; keep it masked until `Ack`.
    Signalled,
    /// Nobody handles it: mask it and report it.
    Unhandled,
}

/// Interrupt `irq` arrived (the arch layer masks it either way).
pub fn raise(
    store: &mut (impl IrqStore + IpcStore),
    scheduler: &mut Scheduler,
    irq: u16,
) -> Result<Raised, IpcError> {
    let Some(entry) = entry_mut(store, irq) else {
        return Ok(Raised::Unhandled);
    };
    let Some((object, badge)) = entry.notification.filter(|_| entry.claimed) else {
        return Ok(Raised::Unhandled);
    };
    entry.waiting_for_ack = true;
    // An unbadged handler notification still wakes its waiter: bit 0.
    let badge = if badge == 0 { 1 } else { badge };
    ipc::signal(
        store,
        scheduler,
        Capability::Notification {
            object,
            badge,
            rights: Rights::WRITE,
        },
    )?;
    Ok(Raised::Signalled)
}
