//! State shared by a worker's threads: who it is, whether it is retiring,
//! which requests are in flight, and its line to the master.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use pyo3::prelude::*;
use pyo3::types::PyModule;
use tokio::sync::watch;
use tracing::warn;

use crate::config::Concurrency;
use crate::config::Config;
use crate::control::{encode, CoreStats, RetireMode, ToMaster, WorkerSpec, WorkerStats};
use crate::wsgi::Request;

static CONTEXT: OnceLock<Arc<WorkerContext>> = OnceLock::new();

/// The context of this worker process. Panics outside a worker, where no
/// Python code runs.
pub fn context() -> &'static Arc<WorkerContext> {
    CONTEXT
        .get()
        .expect("the worker context is set before Python starts")
}

/// Where a retiring worker is (DESIGN.md section 3); named in the
/// diagnostic when its mercy runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Step {
    Serving = 0,
    StopAccepting = 1,
    FinishRequests = 2,
    TrackedWork = 3,
    ShutdownHooks = 4,
    NonDaemonThreads = 5,
    Exit = 6,
}

impl Step {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Serving => "serving",
            Self::StopAccepting => "1: stop accepting",
            Self::FinishRequests => "2: finish in-flight requests",
            Self::TrackedWork => "3: wait for tracked work (mercy.spawn)",
            Self::ShutdownHooks => "4: run shutdown hooks and atexit handlers",
            Self::NonDaemonThreads => "5: wait for non-daemon threads",
            Self::Exit => "6: exit",
        }
    }

    pub fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::StopAccepting,
            2 => Self::FinishRequests,
            3 => Self::TrackedWork,
            4 => Self::ShutdownHooks,
            5 => Self::NonDaemonThreads,
            6 => Self::Exit,
            _ => Self::Serving,
        }
    }
}

/// A request the app is working on.
#[derive(Debug, Clone)]
pub struct InFlight {
    pub method: Box<str>,
    pub path: String,
    pub started: Instant,
}

pub struct WorkerContext {
    pub spec: WorkerSpec,
    pub config: Config,
    /// Requests waiting for a Python thread.
    pub jobs: flume::Receiver<Request>,
    /// Signalled when a thread or greenlet takes a request from `jobs`.
    pub job_taken: tokio::sync::Notify,
    /// None while serving; the retirement mode once the master asked.
    retire: watch::Sender<Option<RetireMode>>,
    /// Open client connections.
    connections: watch::Sender<usize>,
    step: AtomicU8,
    in_flight: Mutex<BTreeMap<u64, InFlight>>,
    next_request: AtomicU64,
    master: Mutex<UnixStream>,
    /// mercy's Python worker module, for the diagnostic.
    pub python: OnceLock<Py<PyModule>>,
    counters: Counters,
    recycle_requested: AtomicBool,
}

/// What the worker has done, for the master's stats.
struct Counters {
    requests: AtomicU64,
    exceptions: AtomicU64,
    tx: AtomicU64,
    running_time_us: AtomicU64,
    cores: Vec<Core>,
}

#[derive(Default)]
struct Core {
    requests: AtomicU64,
    in_request: AtomicBool,
    /// A harakiri was raised in this slot's thread.
    harakiri: AtomicBool,
}

impl WorkerContext {
    /// Creates the context and makes it the process's.
    pub fn install(
        spec: WorkerSpec,
        config: Config,
        jobs: flume::Receiver<Request>,
        master: UnixStream,
    ) -> &'static Arc<Self> {
        let config_cores = config.concurrency;
        let context = Arc::new(Self {
            spec,
            config,
            jobs,
            job_taken: tokio::sync::Notify::new(),
            retire: watch::Sender::new(None),
            connections: watch::Sender::new(0),
            step: AtomicU8::new(Step::Serving as u8),
            in_flight: Mutex::new(BTreeMap::new()),
            next_request: AtomicU64::new(0),
            master: Mutex::new(master),
            python: OnceLock::new(),
            recycle_requested: AtomicBool::new(false),
            counters: Counters {
                requests: AtomicU64::new(0),
                exceptions: AtomicU64::new(0),
                tx: AtomicU64::new(0),
                running_time_us: AtomicU64::new(0),
                cores: (0..core_count(&config_cores))
                    .map(|_| Core::default())
                    .collect(),
            },
        });
        if CONTEXT.set(context).is_err() {
            panic!("the worker context is installed once");
        }
        self::context()
    }

    pub fn send_master(&self, message: &ToMaster) {
        let mut master = self.master.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(error) = master.write_all(&encode(message)) {
            warn!(%error, "cannot reach the master");
        }
    }

    pub fn request_reload(&self) {
        self.send_master(&ToMaster::Reload);
    }

    /// Starts retirement, or makes a running one fast. Never slows one down.
    pub fn retire(&self, mode: RetireMode) {
        self.retire.send_if_modified(|current| match current {
            None => {
                *current = Some(mode);
                true
            }
            Some(existing) if mode == RetireMode::Fast && *existing != RetireMode::Fast => {
                *current = Some(RetireMode::Fast);
                true
            }
            Some(_) => false,
        });
        crate::wsgi::wake_hub();
    }

    pub fn is_retiring(&self) -> bool {
        self.retire.borrow().is_some()
    }

    pub fn retire_mode(&self) -> Option<RetireMode> {
        *self.retire.borrow()
    }

    pub fn watch_retire(&self) -> watch::Receiver<Option<RetireMode>> {
        self.retire.subscribe()
    }

    pub fn set_step(&self, step: Step) {
        self.step.store(step as u8, Ordering::SeqCst);
    }

    pub fn step(&self) -> Step {
        Step::from_u8(self.step.load(Ordering::SeqCst))
    }

    /// Counts a connection until the guard drops.
    pub fn open_connection(self: &Arc<Self>) -> ConnectionGuard {
        self.connections.send_modify(|count| *count += 1);
        ConnectionGuard {
            context: self.clone(),
        }
    }

    pub fn watch_connections(&self) -> watch::Receiver<usize> {
        self.connections.subscribe()
    }

    pub fn begin_request(&self, method: &str, path: &[u8]) -> u64 {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let request = InFlight {
            method: method.into(),
            path: String::from_utf8_lossy(path).into_owned(),
            started: Instant::now(),
        };
        self.lock_in_flight().insert(id, request);
        id
    }

    /// Counts a finished request: its response bytes and its duration.
    pub fn record_request(&self, sent: u64, duration: std::time::Duration) {
        let counters = &self.counters;
        counters.requests.fetch_add(1, Ordering::Relaxed);
        counters.tx.fetch_add(sent, Ordering::Relaxed);
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        counters
            .running_time_us
            .fetch_add(micros, Ordering::Relaxed);
    }

    /// Asks the master for a replacement once `--max-requests` is reached
    /// (once; the worker serves on until the replacement is ready).
    pub fn check_max_requests(&self) {
        let Some(limit) = self.config.max_requests else {
            return;
        };
        let limit = limit + u64::from(self.spec.id) * self.config.max_requests_delta;
        let served = self.counters.requests.load(Ordering::Relaxed);
        if served >= limit && !self.recycle_requested.swap(true, Ordering::Relaxed) {
            self.send_master(&ToMaster::Recycle {
                reason: format!("--max-requests ({limit}) reached"),
            });
        }
    }

    /// Counts an exception raised by the app.
    pub fn record_exception(&self) {
        self.counters.exceptions.fetch_add(1, Ordering::Relaxed);
    }

    /// Marks request slot `core` busy (or idle again).
    pub fn core_busy(&self, core: usize, busy: bool) {
        if let Some(slot) = self.counters.cores.get(core) {
            slot.in_request.store(busy, Ordering::Relaxed);
            if busy {
                slot.requests.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The number of requests slot `core` has started, and whether it is in
    /// one now: a request is identified by the pair.
    pub fn core_state(&self, core: usize) -> Option<(u64, bool)> {
        self.counters.cores.get(core).map(|slot| {
            (
                slot.requests.load(Ordering::Relaxed),
                slot.in_request.load(Ordering::Relaxed),
            )
        })
    }

    pub fn mark_harakiri(&self, core: usize) {
        if let Some(slot) = self.counters.cores.get(core) {
            slot.harakiri.store(true, Ordering::Relaxed);
        }
    }

    /// Whether a harakiri was raised in slot `core` (and forgets it).
    pub fn take_harakiri(&self, core: usize) -> bool {
        self.counters
            .cores
            .get(core)
            .is_some_and(|slot| slot.harakiri.swap(false, Ordering::Relaxed))
    }

    /// The counters as the master's stats want them.
    pub fn stats(&self) -> WorkerStats {
        let counters = &self.counters;
        let requests = counters.requests.load(Ordering::Relaxed);
        let running_time_us = counters.running_time_us.load(Ordering::Relaxed);
        WorkerStats {
            requests,
            exceptions: counters.exceptions.load(Ordering::Relaxed),
            tx: counters.tx.load(Ordering::Relaxed),
            running_time_us,
            avg_rt_us: running_time_us.checked_div(requests).unwrap_or(0),
            cores: counters
                .cores
                .iter()
                .map(|core| CoreStats {
                    requests: core.requests.load(Ordering::Relaxed),
                    in_request: core.in_request.load(Ordering::Relaxed),
                })
                .collect(),
        }
    }

    pub fn end_request(&self, id: u64) {
        self.lock_in_flight().remove(&id);
    }

    /// The unfinished requests, one per line, for the diagnostic.
    pub fn describe_in_flight(&self) -> String {
        let in_flight = self.lock_in_flight();
        if in_flight.is_empty() {
            return "none".to_owned();
        }
        in_flight
            .values()
            .map(|r| {
                format!(
                    "{} {} (running for {:.1}s)",
                    r.method,
                    r.path,
                    r.started.elapsed().as_secs_f64()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn lock_in_flight(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, InFlight>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The number of request slots: threads, or greenlets in gevent mode.
fn core_count(concurrency: &Concurrency) -> usize {
    match *concurrency {
        Concurrency::Threads(threads) => threads as usize,
        Concurrency::Gevent { greenlets, .. } => greenlets as usize,
    }
}

/// Keeps a connection counted while it is open.
pub struct ConnectionGuard {
    context: Arc<WorkerContext>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.context.connections.send_modify(|count| *count -= 1);
    }
}
