//! The master's table of worker processes.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use tokio::net::unix::OwnedWriteHalf;
use tracing::warn;

use crate::control::{encode, ToWorker, WorkerStats};

/// Where a worker is in its life, as the master sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Started, importing the app; not serving yet.
    Starting { since: Instant },
    /// Serving.
    Ready,
    /// Told to retire; killed at `deadline` (after a diagnostic if
    /// `diagnose`).
    Retiring { deadline: Instant, diagnose: bool },
    /// Its mercy ran out; it is writing its diagnostic, then killed.
    Expired { kill_at: Instant },
    /// SIGKILL sent; waiting for the exit.
    Killed,
}

impl WorkerState {
    /// Told to retire, or killed: the worker is on its way out.
    pub fn is_leaving(&self) -> bool {
        matches!(
            self,
            Self::Retiring { .. } | Self::Expired { .. } | Self::Killed
        )
    }
}

/// One worker process.
#[derive(Debug)]
pub struct Worker {
    pub id: u32,
    pub pid: u32,
    pub generation: u64,
    pub started_at: Instant,
    pub state: WorkerState,
    /// The worker reported that it could not load the app.
    pub load_failed: bool,
    pub control: OwnedWriteHalf,
    /// Its latest counters.
    pub stats: WorkerStats,
    pub spawned_at: SystemTime,
    /// The worker this one takes over from once it is ready.
    pub replaces: Option<u32>,
    /// A replacement for this worker is starting.
    pub recycling: bool,
    /// How long this worker gets to retire, if not --worker-reload-mercy.
    pub retire_grace: Option<std::time::Duration>,
    /// A replacement was asked for when none could start (during a
    /// reload, or too soon after a failed one): reason and grace.
    pub recycle_wanted: Option<(String, Option<std::time::Duration>)>,
    /// Not before this time (after a replacement failed to load).
    pub recycle_after: Option<Instant>,
}

impl Worker {
    /// Sends a control message. Messages are a few bytes on a socket that
    /// the worker drains all the time, so a write that would block means
    /// the worker is gone or wedged; the deadlines handle both.
    pub fn send(&self, message: &ToWorker) {
        let line = encode(message);
        match self.control.try_write(&line) {
            Ok(written) if written == line.len() => {}
            Ok(_) => warn!(worker.pid = self.pid, "control message cut short"),
            Err(error) => warn!(worker.pid = self.pid, %error, "cannot reach worker"),
        }
    }
}

/// Every worker process the master has started and not yet reaped, by pid.
#[derive(Debug, Default)]
pub struct Workers {
    by_pid: BTreeMap<u32, Worker>,
}

impl Workers {
    pub fn insert(&mut self, worker: Worker) {
        self.by_pid.insert(worker.pid, worker);
    }

    pub fn remove(&mut self, pid: u32) -> Option<Worker> {
        self.by_pid.remove(&pid)
    }

    pub fn get(&self, pid: u32) -> Option<&Worker> {
        self.by_pid.get(&pid)
    }

    pub fn get_mut(&mut self, pid: u32) -> Option<&mut Worker> {
        self.by_pid.get_mut(&pid)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Worker> {
        self.by_pid.values()
    }

    pub fn len(&self) -> usize {
        self.by_pid.len()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.by_pid.keys().copied().collect()
    }

    pub fn ready_count(&self, generation: u64) -> usize {
        self.by_pid
            .values()
            .filter(|w| w.generation == generation && w.state == WorkerState::Ready)
            .count()
    }

    pub fn of_generation(&self, generation: u64) -> Vec<u32> {
        self.pids_where(|w| w.generation == generation)
    }

    pub fn older_than(&self, generation: u64) -> Vec<u32> {
        self.pids_where(|w| w.generation < generation)
    }

    /// Workers of generations before `generation` that are leaving.
    pub fn draining_older_than(&self, generation: u64) -> usize {
        self.by_pid
            .values()
            .filter(|w| w.generation < generation && w.state.is_leaving())
            .count()
    }

    /// Whether a worker is starting or serving in slot `id`.
    pub fn slot_filled(&self, id: u32) -> bool {
        self.by_pid.values().any(|w| {
            w.id == id && matches!(w.state, WorkerState::Starting { .. } | WorkerState::Ready)
        })
    }

    /// The serving worker of slot `id` that is not being replaced.
    pub fn serving_in_slot(&self, id: u32) -> Option<u32> {
        self.by_pid
            .values()
            .find(|w| w.id == id && w.state == WorkerState::Ready && !w.recycling)
            .map(|w| w.pid)
    }

    /// Whether a replacement (recycling) is in progress.
    pub fn replacing(&self) -> bool {
        self.by_pid
            .values()
            .any(|w| w.recycling || w.replaces.is_some())
    }

    /// Every worker of slot `id`.
    pub fn in_slot(&self, id: u32) -> Vec<u32> {
        self.pids_where(|w| w.id == id)
    }

    fn pids_where(&self, keep: impl Fn(&Worker) -> bool) -> Vec<u32> {
        self.by_pid
            .values()
            .filter(|w| keep(w))
            .map(|w| w.pid)
            .collect()
    }
}
