//! Safe wrappers of the IPC system calls: messages through endpoints,
//! signals through notifications, yielding and the debug console byte.
//!
//! A message is a label and up to eight words, all carried in registers
//! (the IPC buffer for longer messages does not exist yet). Errors: the
//! kernel answers a refused system call with the error code as the label
//! of `x10` and the details in `x0..x2`. How to tell that from a message:
//!
//! - `wait` and `poll` always get label 0 when they succeed, so any other
//!   label is an error: they return `Result`.
//! - `send`, `nb_send`, `reply` and `signal` receive nothing. They return
//!   `Ok` when `x10` comes back holding label 0 or exactly the info that
//!   was sent (the kernel leaves the registers of a successful send as
//!   they were), and the decoded error otherwise.
//! - `call`, `recv` and `reply_recv` receive a message whose label is the
//!   sender's own, so a refusal (`InvalidCapability` for a wrong pointer,
//!   for example) looks like a message with that label and badge 0. They
//!   return the [`Message`]; [`Message::as_error`] reads it as an error
//!   when the protocol says its label cannot be a sender's.

use hyp_abi::{Error, MessageInfo, REGISTER_MESSAGE_WORDS, Syscall};

use crate::capability::{Endpoint, Notification};
use crate::syscall::{RawReply, syscall};

/// A message: a label and up to [`REGISTER_MESSAGE_WORDS`] words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message {
    label: u64,
    length: u8,
    words: [u64; REGISTER_MESSAGE_WORDS],
}

impl Message {
    /// A message with `label` (52 bits: higher bits are dropped when it is
    /// sent) and the `LENGTH` words `words`, at most eight (checked when
    /// compiling).
    pub const fn new<const LENGTH: usize>(label: u64, words: [u64; LENGTH]) -> Message {
        const {
            assert!(
                LENGTH <= REGISTER_MESSAGE_WORDS,
                "a message carries at most 8 words in registers"
            );
        }
        let mut all = [0; REGISTER_MESSAGE_WORDS];
        let mut index = 0;
        while index < LENGTH {
            all[index] = words[index];
            index += 1;
        }
        #[allow(
            clippy::cast_possible_truncation,
            reason = "LENGTH is at most 8, checked at compile time above"
        )]
        let length = LENGTH as u8;
        Message {
            label,
            length,
            words: all,
        }
    }

    /// A message with `label` and no words.
    pub const fn empty(label: u64) -> Message {
        Message::new(label, [])
    }

    /// The message that a system call left in the registers.
    #[inline(always)]
    pub fn from_reply(reply: &RawReply) -> Message {
        Message {
            label: reply.info.label,
            length: reply.info.length,
            words: reply.words,
        }
    }

    /// The label.
    pub const fn label(&self) -> u64 {
        self.label
    }

    /// The length the sender gave (it may exceed the words in registers
    /// once longer messages exist).
    pub const fn length(&self) -> usize {
        self.length as usize
    }

    /// The words that came in registers, as many as the length says.
    pub fn words(&self) -> &[u64] {
        let length = usize::from(self.length).min(REGISTER_MESSAGE_WORDS);
        &self.words[..length]
    }

    /// Word `index`, or `None` beyond the message's length.
    pub fn word(&self, index: usize) -> Option<u64> {
        self.words().get(index).copied()
    }

    /// The message info that goes in `x10` when this message is sent.
    pub const fn info(&self) -> MessageInfo {
        MessageInfo::new(self.label, self.length)
    }

    /// This message read as a kernel refusal: the error whose code is the
    /// label, with words 0..2 as its details; `None` for label 0 or a
    /// label that is no error code. Only meaningful where the protocol
    /// rules out such a label from a real sender.
    pub fn as_error(&self) -> Option<Error> {
        Error::decode(self.label, [self.words[0], self.words[1], self.words[2]])
    }
}

/// A message and the badge of the capability it was sent through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    /// The badge of the sender's endpoint capability (0 if unbadged), or,
    /// when a bound notification ended the receive, its bits.
    pub badge: u64,
    /// What was sent.
    pub message: Message,
}

#[inline(always)]
fn message_syscall(number: Syscall, capability: u64, message: &Message) -> RawReply {
    syscall(number, capability, message.info(), message.words, [0; 3])
}

#[inline(always)]
fn received(reply: &RawReply) -> Received {
    Received {
        badge: reply.badge,
        message: Message::from_reply(reply),
    }
}

/// The outcome of a system call that only sends (see the module's
/// documentation for why `sent` matters).
fn send_result(sent: MessageInfo, reply: &RawReply) -> Result<(), Error> {
    if reply.info.label == 0 || reply.info == sent {
        Ok(())
    } else {
        Err(error_of(reply))
    }
}

/// The error a reply with a non-zero label reports. A label the ABI does
/// not know, or details out of range, read as `IllegalOperation`: this
/// library cannot say more than that the kernel refused.
pub(crate) fn error_of(reply: &RawReply) -> Error {
    Error::decode(
        reply.info.label,
        [reply.words[0], reply.words[1], reply.words[2]],
    )
    .unwrap_or(Error::IllegalOperation)
}

/// `Call`: sends `message` through `endpoint` (which needs `WRITE` and
/// `GRANT_REPLY`) and waits for the reply, which is returned.
#[inline(always)]
pub fn call(endpoint: Endpoint, message: &Message) -> Message {
    Message::from_reply(&message_syscall(Syscall::Call, endpoint.pointer(), message))
}

/// `Send`: sends `message` through `endpoint` (which needs `WRITE`),
/// blocking until a receiver takes it.
pub fn send(endpoint: Endpoint, message: &Message) -> Result<(), Error> {
    let reply = message_syscall(Syscall::Send, endpoint.pointer(), message);
    send_result(message.info(), &reply)
}

/// `NbSend`: sends `message` through `endpoint` if a receiver waits;
/// otherwise the message is dropped (which is not an error).
pub fn nb_send(endpoint: Endpoint, message: &Message) -> Result<(), Error> {
    let reply = message_syscall(Syscall::NbSend, endpoint.pointer(), message);
    send_result(message.info(), &reply)
}

/// `Recv`: waits for a message on `endpoint` (which needs `READ`).
#[inline(always)]
pub fn recv(endpoint: Endpoint) -> Received {
    received(&syscall(
        Syscall::Recv,
        endpoint.pointer(),
        MessageInfo::new(0, 0),
        [0; REGISTER_MESSAGE_WORDS],
        [0; 3],
    ))
}

/// `Reply`: answers the last `Call` this thread received with `message`.
pub fn reply(message: &Message) -> Result<(), Error> {
    let reply = message_syscall(Syscall::Reply, 0, message);
    send_result(message.info(), &reply)
}

/// `ReplyRecv`: answers the last `Call` received with `message` (if its
/// caller still waits), then waits for a message on `endpoint`.
#[inline(always)]
pub fn reply_recv(endpoint: Endpoint, message: &Message) -> Received {
    received(&message_syscall(
        Syscall::ReplyRecv,
        endpoint.pointer(),
        message,
    ))
}

/// `Signal`: sets the badge bits of `notification` (which needs `WRITE`).
pub fn signal(notification: Notification) -> Result<(), Error> {
    let info = MessageInfo::new(0, 0);
    let reply = syscall(
        Syscall::Signal,
        notification.pointer(),
        info,
        [0; REGISTER_MESSAGE_WORDS],
        [0; 3],
    );
    send_result(info, &reply)
}

fn notification_bits(number: Syscall, notification: Notification) -> Result<u64, Error> {
    let reply = syscall(
        number,
        notification.pointer(),
        MessageInfo::new(0, 0),
        [0; REGISTER_MESSAGE_WORDS],
        [0; 3],
    );
    if reply.info.label == 0 {
        Ok(reply.badge)
    } else {
        Err(error_of(&reply))
    }
}

/// `Wait`: blocks until `notification` (which needs `READ`) has bits set,
/// then takes and clears them.
pub fn wait(notification: Notification) -> Result<u64, Error> {
    notification_bits(Syscall::Wait, notification)
}

/// `Poll`: takes and clears the bits of `notification` without blocking
/// (0 if none were set).
pub fn poll(notification: Notification) -> Result<u64, Error> {
    notification_bits(Syscall::Poll, notification)
}

/// `Yield`: gives the rest of the timeslice to threads of the same
/// priority.
pub fn yield_now() {
    syscall(
        Syscall::Yield,
        0,
        MessageInfo::new(0, 0),
        [0; REGISTER_MESSAGE_WORDS],
        [0; 3],
    );
}

/// `DebugPutChar`: writes `byte` to the kernel console (debug kernels
/// only; a release kernel refuses it, which is ignored here).
pub fn debug_put_char(byte: u8) {
    let mut words = [0; REGISTER_MESSAGE_WORDS];
    words[0] = u64::from(byte);
    syscall(
        Syscall::DebugPutChar,
        0,
        MessageInfo::new(0, 1),
        words,
        [0; 3],
    );
}

/// `DebugPutString`: writes `text` (at most [`hyp_abi::DEBUG_STRING_BYTES`]
/// bytes are taken, and a zero byte ends it) to the kernel console in one
/// system call. Returns how many bytes it took.
pub fn debug_put_string(text: &[u8]) -> usize {
    let length = text.len().min(hyp_abi::DEBUG_STRING_BYTES);
    let mut words = [0u64; REGISTER_MESSAGE_WORDS];
    for (index, byte) in text[..length].iter().enumerate() {
        words[index / 8] |= u64::from(*byte) << (8 * (index % 8));
    }
    syscall(
        Syscall::DebugPutString,
        0,
        MessageInfo::new(0, 0),
        words,
        [0; 3],
    );
    length
}

/// `DebugGetChar`: the next byte typed on the hypervisor console, if one
/// waits.
pub fn debug_get_char() -> Option<u8> {
    let reply = syscall(
        Syscall::DebugGetChar,
        0,
        MessageInfo::new(0, 0),
        [0; REGISTER_MESSAGE_WORDS],
        [0; 3],
    );
    u8::try_from(reply.words[0]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host_kernel::fake;
    use hyp_abi::ErrorCode;

    fn reply_with(label: u64, words: [u64; 8], badge: u64) -> RawReply {
        RawReply {
            words,
            badge,
            info: MessageInfo::new(label, 8),
        }
    }

    #[test]
    fn messages_keep_their_length() {
        let message = Message::new(7, [1, 2, 3]);
        assert_eq!(message.label(), 7);
        assert_eq!(message.words(), &[1, 2, 3]);
        assert_eq!(message.word(2), Some(3));
        assert_eq!(message.word(3), None);
        assert_eq!(message.info(), MessageInfo::new(7, 3));
        assert_eq!(Message::empty(9).words(), &[] as &[u64]);
    }

    #[test]
    fn call_sends_the_words_and_returns_the_reply() {
        fake::install(|_| reply_with(0, [43, 0, 0, 0, 0, 0, 0, 0], 0));
        let answer = call(Endpoint::new(12), &Message::new(0, [42]));
        assert_eq!(answer.label(), 0);
        assert_eq!(answer.word(0), Some(43));
        let requests = fake::requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].number, Syscall::Call);
        assert_eq!(requests[0].capability, 12);
        assert_eq!(requests[0].info, MessageInfo::new(0, 1));
        assert_eq!(requests[0].words[0], 42);
    }

    #[test]
    fn receives_return_the_badge() {
        fake::install(|_| reply_with(5, [1, 2, 3, 4, 5, 6, 7, 8], 0x42));
        let got = recv(Endpoint::new(3));
        assert_eq!(got.badge, 0x42);
        assert_eq!(got.message.label(), 5);
        assert_eq!(got.message.words().len(), 8);
        let got = reply_recv(Endpoint::new(3), &Message::new(0, [9]));
        assert_eq!(got.badge, 0x42);
        let requests = fake::requests();
        assert_eq!(requests[0].number, Syscall::Recv);
        assert_eq!(requests[1].number, Syscall::ReplyRecv);
        assert_eq!(requests[1].words[0], 9);
        assert_eq!(requests[1].info, MessageInfo::new(0, 1));
    }

    #[test]
    fn sends_succeed_on_label_zero_or_untouched_info() {
        let message = Message::new(3, [1, 2]);
        fake::install(|request| RawReply {
            words: request.words,
            badge: request.capability,
            info: request.info,
        });
        assert_eq!(send(Endpoint::new(4), &message), Ok(()));
        assert_eq!(nb_send(Endpoint::new(4), &message), Ok(()));
        assert_eq!(reply(&message), Ok(()));
        assert_eq!(fake::requests()[2].number, Syscall::Reply);
        assert_eq!(fake::requests()[2].capability, 0);
        fake::install_success([0; 8]);
        assert_eq!(send(Endpoint::new(4), &message), Ok(()));
        assert_eq!(signal(Notification::new(5)), Ok(()));
    }

    #[test]
    fn refused_sends_report_the_error() {
        fake::install(|_| RawReply {
            words: [0, 2, 0, 0, 0, 0, 0, 0],
            badge: 0,
            info: MessageInfo::new(ErrorCode::InsufficientRights as u64, 2),
        });
        assert_eq!(
            send(Endpoint::new(4), &Message::new(0, [1])),
            Err(Error::InsufficientRights {
                argument: 0,
                needed: hyp_abi::Rights::WRITE
            })
        );
        // Without a kernel (no fake installed): IllegalOperation.
        fake::install(|_| crate::host_kernel::illegal_operation());
        assert_eq!(signal(Notification::new(1)), Err(Error::IllegalOperation));
    }

    #[test]
    fn wait_and_poll_return_the_bits_or_the_error() {
        fake::install(|_| RawReply {
            words: [0; 8],
            badge: 0b1010,
            info: MessageInfo::new(0, 0),
        });
        assert_eq!(wait(Notification::new(6)), Ok(0b1010));
        assert_eq!(poll(Notification::new(6)), Ok(0b1010));
        assert_eq!(fake::requests()[0].number, Syscall::Wait);
        assert_eq!(fake::requests()[1].number, Syscall::Poll);
        fake::install(|_| RawReply {
            words: [0; 8],
            badge: 0,
            info: MessageInfo::new(ErrorCode::InvalidCapability as u64, 1),
        });
        assert_eq!(
            poll(Notification::new(6)),
            Err(Error::InvalidCapability { argument: 0 })
        );
    }

    #[test]
    fn a_received_refusal_reads_as_an_error() {
        let refusal = Message::from_reply(&RawReply {
            words: [0, 61, 0, 0, 0, 0, 0, 0],
            badge: 0,
            info: MessageInfo::new(ErrorCode::LookupFailed as u64, 2),
        });
        assert_eq!(
            refusal.as_error(),
            Some(Error::LookupFailed {
                argument: 0,
                bits_left: 61
            })
        );
        assert_eq!(Message::new(0, [1]).as_error(), None);
    }

    #[test]
    fn debug_put_char_and_yield_use_their_numbers() {
        fake::install_success([0; 8]);
        debug_put_char(b'h');
        yield_now();
        let requests = fake::requests();
        assert_eq!(requests[0].number, Syscall::DebugPutChar);
        assert_eq!(requests[0].words[0], u64::from(b'h'));
        assert_eq!(requests[1].number, Syscall::Yield);
    }
}
