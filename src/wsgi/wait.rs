//! How Python code waits for the connection task. In threads mode the
//! thread blocks with the GIL released. In gevent mode the greenlet yields
//! to the hub; the connection task (a Rust thread that never calls into
//! Python) queues the greenlet's wait id and writes to an eventfd that the
//! hub watches, and the hub wakes the greenlet.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use tokio::sync::oneshot;

static MODE: OnceLock<Mode> = OnceLock::new();

/// The Python function a greenlet calls to wait for a wait id.
static GEVENT_WAIT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The concurrency mode of this worker.
pub enum Mode {
    Threads,
    Gevent(Hub),
}

/// Chooses the mode; once per worker, before any request.
pub fn set_mode(mode: Mode) {
    if MODE.set(mode).is_err() {
        panic!("the concurrency mode is set once");
    }
}

fn mode() -> &'static Mode {
    MODE.get_or_init(|| Mode::Threads)
}

/// The gevent hub's side door: an eventfd it watches, the wait ids that
/// are ready, and whether new requests are queued.
pub struct Hub {
    eventfd: OwnedFd,
    ready: Mutex<Vec<u64>>,
    next_id: AtomicU64,
    /// A wake-up is written and not yet consumed: later ones can be skipped.
    signalled: AtomicBool,
}

impl Hub {
    pub fn new() -> std::io::Result<Self> {
        // SAFETY: eventfd creates a new descriptor or returns -1; the result
        // is checked before it is owned.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self {
            // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
            eventfd: unsafe { OwnedFd::from_raw_fd(fd) },
            ready: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            signalled: AtomicBool::new(false),
        })
    }

    pub fn fd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    /// Wakes the hub. Called from Rust threads; takes no GIL.
    pub fn wake(&self) {
        if self.signalled.swap(true, Ordering::SeqCst) {
            return;
        }
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd. A full
        // counter (EAGAIN) still leaves the hub woken.
        unsafe {
            libc::write(
                self.eventfd.as_raw_fd(),
                (&raw const one).cast::<libc::c_void>(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    /// Consumes the wake-up and returns the wait ids that are ready. Called
    /// by the hub's dispatcher greenlet, which then looks at everything a
    /// wake-up can mean (ready ids, queued requests, retirement).
    pub fn take_ready(&self) -> Vec<u64> {
        // The eventfd is emptied first and the flag cleared after: in the
        // other order, a wake-up written in between would be read here
        // while the flag stays set, and every later wake-up would be
        // skipped with nothing left to read: the hub would sleep forever.
        let mut counter = 0u64;
        // SAFETY: reads 8 bytes into a live u64 from our own non-blocking
        // eventfd; EAGAIN (nothing to read) is fine.
        unsafe {
            libc::read(
                self.eventfd.as_raw_fd(),
                (&raw mut counter).cast::<libc::c_void>(),
                std::mem::size_of::<u64>(),
            )
        };
        self.signalled.store(false, Ordering::SeqCst);
        std::mem::take(&mut *self.ready.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A fresh wait id, for an answer the worker itself gives.
    pub fn next_wait_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Marks `id` answered and wakes the hub.
    pub fn complete(&self, id: u64) {
        self.ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(id);
        self.wake();
    }
}

/// Wakes the hub when new requests are queued (no-op in threads mode).
pub fn wake_hub() {
    if let Mode::Gevent(hub) = mode() {
        hub.wake();
    }
}

/// The hub of a gevent worker.
pub fn hub() -> Option<&'static Hub> {
    match mode() {
        Mode::Gevent(hub) => Some(hub),
        Mode::Threads => None,
    }
}

/// Registers the Python function greenlets wait with.
pub fn set_gevent_wait(py: Python<'_>, wait: Py<PyAny>) {
    let _ = GEVENT_WAIT.set(py, wait);
}

/// Where a one-shot answer stands, shared by its two halves so that the
/// hub is woken for it only when a greenlet sleeps on it: an answer that
/// arrives first is simply taken, and leaves nothing behind in the hub.
const ANSWER_OPEN: u8 = 0;
/// A greenlet found no answer and is about to sleep until it is woken.
const ANSWER_AWAITED: u8 = 1;
/// The answer is in the channel, or the channel is closed.
const ANSWER_DONE: u8 = 2;

/// The sending half of a one-shot answer to Python code. Dropped without
/// an answer (the connection went away), it still wakes the greenlet
/// waiting for it, which then sees that no answer will come.
#[derive(Debug)]
pub struct Reply<T> {
    sender: Option<oneshot::Sender<T>>,
    wait_id: u64,
    state: Arc<AtomicU8>,
}

impl<T> Reply<T> {
    /// Answers, and wakes the greenlet waiting for it.
    pub fn send(mut self, value: T) {
        if let Some(sender) = self.sender.take() {
            let _ = sender.send(value);
        }
    }

    /// For a reply that never reached the connection task: nobody will
    /// wait for it, so dropping it must not leave a wake-up behind.
    pub fn abandon(mut self) {
        self.wait_id = 0;
    }
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        // The channel is answered or closed first, then the waiter is woken
        // to look at it: the other order could wake it to an empty channel.
        // Wait id 0 is never handed out.
        drop(self.sender.take());
        let before = self.state.swap(ANSWER_DONE, Ordering::SeqCst);
        if let (Some(hub), 1.., ANSWER_AWAITED) = (hub(), self.wait_id, before) {
            hub.complete(self.wait_id);
        }
    }
}

/// The waiting half, held by Python code.
pub struct Pending<T> {
    receiver: oneshot::Receiver<T>,
    wait_id: u64,
    state: Arc<AtomicU8>,
}

/// A reply channel for one answer.
pub fn reply_channel<T>() -> (Reply<T>, Pending<T>) {
    let (sender, receiver) = oneshot::channel();
    let wait_id = hub().map_or(0, |hub| hub.next_id.fetch_add(1, Ordering::Relaxed));
    let state = Arc::new(AtomicU8::new(ANSWER_OPEN));
    (
        Reply {
            sender: Some(sender),
            wait_id,
            state: state.clone(),
        },
        Pending {
            receiver,
            wait_id,
            state,
        },
    )
}

impl<T: Send> Pending<T> {
    /// Waits for the answer without blocking other requests: None if the
    /// connection task dropped the reply.
    pub fn wait(mut self, py: Python<'_>) -> PyResult<Option<T>> {
        match mode() {
            Mode::Threads => Ok(py.detach(move || self.receiver.blocking_recv().ok())),
            Mode::Gevent(_) => loop {
                match self.receiver.try_recv() {
                    Ok(value) => return Ok(Some(value)),
                    Err(oneshot::error::TryRecvError::Closed) => return Ok(None),
                    Err(oneshot::error::TryRecvError::Empty) => {
                        // Announce the sleep; if the answer came in since
                        // the look above, take it instead (the reply will
                        // not wake the hub for it).
                        let announced = self.state.compare_exchange(
                            ANSWER_OPEN,
                            ANSWER_AWAITED,
                            Ordering::SeqCst,
                            Ordering::SeqCst,
                        );
                        if announced.is_err() {
                            continue;
                        }
                        let wait = GEVENT_WAIT
                            .get(py)
                            .expect("gevent mode registers its wait function first");
                        wait.call1(py, (self.wait_id,))?;
                    }
                }
            },
        }
    }
}
