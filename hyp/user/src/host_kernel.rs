//! What answers a system call when `hyp-user` runs on the host, where no
//! kernel exists: the crate must build and its tests must run on the
//! development machine.
//!
//! Outside tests every system call is answered the way the kernel answers
//! a number it does not know: `IllegalOperation`, no words, badge 0. In
//! this crate's own tests a test installs a fake kernel (a closure) that
//! sees every request and chooses the reply, so the tests check which
//! registers each wrapper fills and how it reads the answer.

use hyp_abi::{ErrorCode, MessageInfo, REGISTER_MESSAGE_WORDS, Syscall};

use crate::syscall::RawReply;

/// The reply of a kernel that does not know the system call.
pub(crate) fn illegal_operation() -> RawReply {
    RawReply {
        words: [0; REGISTER_MESSAGE_WORDS],
        badge: 0,
        info: MessageInfo::new(ErrorCode::IllegalOperation as u64, 0),
    }
}

/// Answers a system call on the host (see the module's documentation).
#[cfg(not(test))]
pub(crate) fn syscall(
    _number: Syscall,
    _capability: u64,
    _info: MessageInfo,
    _words: [u64; REGISTER_MESSAGE_WORDS],
    _extra_capabilities: [u64; 3],
) -> RawReply {
    illegal_operation()
}

/// Answers a system call on the host through the fake kernel the running
/// test installed, or with `IllegalOperation` if it installed none.
#[cfg(test)]
pub(crate) fn syscall(
    number: Syscall,
    capability: u64,
    info: MessageInfo,
    words: [u64; REGISTER_MESSAGE_WORDS],
    extra_capabilities: [u64; 3],
) -> RawReply {
    fake::handle(fake::Request {
        number,
        capability,
        info,
        words,
        extra_capabilities,
    })
}

/// The fake kernel of the tests: one per test thread.
#[cfg(test)]
pub(crate) mod fake {
    use std::boxed::Box;
    use std::cell::RefCell;
    use std::vec::Vec;

    use hyp_abi::{MessageInfo, REGISTER_MESSAGE_WORDS, Syscall};

    use crate::syscall::RawReply;

    /// One system call as the kernel would see it.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) struct Request {
        pub(crate) number: Syscall,
        pub(crate) capability: u64,
        pub(crate) info: MessageInfo,
        pub(crate) words: [u64; REGISTER_MESSAGE_WORDS],
        pub(crate) extra_capabilities: [u64; 3],
    }

    type Kernel = Box<dyn FnMut(&Request) -> RawReply>;

    std::thread_local! {
        static KERNEL: RefCell<Option<Kernel>> = const { RefCell::new(None) };
        static REQUESTS: RefCell<Vec<Request>> = const { RefCell::new(Vec::new()) };
    }

    /// Makes `kernel` answer this thread's system calls from now on, and
    /// forgets the requests seen so far.
    pub(crate) fn install(kernel: impl FnMut(&Request) -> RawReply + 'static) {
        KERNEL.with(|slot| *slot.borrow_mut() = Some(Box::new(kernel)));
        REQUESTS.with(|requests| requests.borrow_mut().clear());
    }

    /// A kernel that answers every call with success: label 0 and `words`.
    pub(crate) fn install_success(words: [u64; REGISTER_MESSAGE_WORDS]) {
        install(move |_| RawReply {
            words,
            badge: 0,
            info: MessageInfo::new(0, 0),
        });
    }

    /// The requests this thread made since the last [`install`].
    pub(crate) fn requests() -> Vec<Request> {
        REQUESTS.with(|requests| requests.borrow().clone())
    }

    pub(super) fn handle(request: Request) -> RawReply {
        REQUESTS.with(|requests| requests.borrow_mut().push(request));
        KERNEL.with(|slot| match slot.borrow_mut().as_mut() {
            Some(kernel) => kernel(&request),
            None => super::illegal_operation(),
        })
    }
}
