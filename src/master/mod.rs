//! The master: pure Rust, never initialises Python. It binds the sockets,
//! starts and watches the workers, and runs reloads and shutdowns.
//!
//! The meaning of each signal is written once, in [`Master::on_signal`]; the
//! instance's lifecycle is the [`Phase`] enum.

mod commands;
mod progress;
mod replace;
mod sockets;
mod spawn;
mod stats;
mod systemd;
mod vacuum;
mod workers;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::process::ExitStatus;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::control::{RetireMode, ToMaster, ToWorker, WorkerSpec};
use workers::{Worker, WorkerState, Workers};

pub use sockets::{bind_all, BindError, Listener};
pub use systemd::{activated_sockets, Notifier};
pub use vacuum::remove_at_exit;

/// How long a worker of a fast shutdown gets before it is killed.
const FAST_SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// How long the master waits for an expired worker's diagnostic.
const DIAGNOSTIC_GRACE: Duration = Duration::from_secs(3);
/// A worker that dies sooner than this after its start counts as a quick
/// death, and its respawns back off.
const QUICK_DEATH: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const TICK: Duration = Duration::from_millis(100);

/// How the instance ended, mapped to the process's exit status by `main`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A requested shutdown completed: exit status 0.
    Stopped,
    /// The app could not be loaded at first start: exit status 3.
    AppLoadFailed,
}

/// The instance's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The first generation is loading; a load failure ends the instance.
    Starting,
    /// Every slot has a ready worker.
    Serving,
    /// A new generation is starting (`committed == false`) or, once all of
    /// it is ready, the previous one is retiring.
    Reloading { generation: u64, committed: bool },
    /// A chain reload: slot `slot` is being replaced by a worker of
    /// `generation`; the next slot follows once the old worker is gone.
    ChainReloading { generation: u64, slot: u32 },
    /// Workers are retiring; the master exits when the last one is gone.
    ShuttingDown { mode: RetireMode },
}

/// What a worker slot did before its current worker: its counters carry
/// over respawns and reloads, as uWSGI's do.
#[derive(Debug, Clone, Copy, Default)]
struct SlotHistory {
    requests: u64,
    exceptions: u64,
    tx: u64,
    running_time_us: u64,
    respawns: u64,
    harakiri: u64,
}

/// The outcome of the latest reload, for the stats.
#[derive(Debug, Clone)]
struct ReloadRecord {
    result: &'static str,
    error: Option<String>,
    at: SystemTime,
    generation: u64,
}

/// The counts of a running reload, as last reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ReloadCounts {
    generation: u64,
    /// Workers of the new generation that are ready.
    ready: usize,
    /// Workers of older generations told to retire and not gone yet.
    draining: usize,
    /// Workers of older generations gone since the reload started.
    gone: u32,
    /// Slots.
    total: u32,
    /// The slot a chain reload is replacing.
    slot: Option<u32>,
}

/// Why a worker process is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SpawnReason {
    /// At start, a reload, or one more slot.
    Start,
    /// Its slot's worker died.
    Respawn,
    /// It takes over from the worker with this pid once it is ready.
    Replace(u32),
}

/// Something that happened to a worker, reported by its watcher tasks.
#[derive(Debug)]
enum WorkerEvent {
    Message { pid: u32, message: ToMaster },
    Exited { pid: u32, status: ExitStatus },
}

/// Binds the sockets and supervises workers until a shutdown completes.
pub fn run(
    config: Config,
    listeners: Vec<Listener>,
    notifier: Notifier,
) -> anyhow::Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut master = Master::new(config, listeners, notifier);
        master.main_loop().await
    })
}

struct Master {
    config: Config,
    listeners: Vec<OwnedFd>,
    protocols: Vec<crate::config::Protocol>,
    addresses: Vec<crate::config::ListenAddress>,
    notifier: Notifier,
    /// Ticks since start, for work done about once a second.
    ticks: u64,
    phase: Phase,
    /// The generation that owns the slots (the newest that started whole).
    generation: u64,
    workers: Workers,
    /// Another reload was requested while one ran (true: a chain reload).
    reload_pending: Option<bool>,
    /// Workers added (positive) or removed (negative) with SIGTTIN and
    /// SIGTTOU while the workers were starting or reloading: applied when
    /// that ends, since a reload counts on a fixed number of slots.
    scale_pending: i32,
    /// Workers of older generations gone since the running reload began.
    reload_gone: u32,
    /// The reload counts last logged, so that each change is logged once.
    reload_reported: Option<ReloadCounts>,
    /// Slots waiting to be respawned, with the time they may start.
    respawns: Vec<(u32, Instant)>,
    /// Per slot: consecutive quick deaths, for the respawn backoff.
    quick_deaths: Vec<u32>,
    /// Workers killed over the instance's life (the stats' forced_kills).
    killed_count: u64,
    /// `killed_count` when the shutdown began: `shutdown_done` counts the
    /// kills since then only.
    killed_before_shutdown: u64,
    slots: HashMap<u32, SlotHistory>,
    last_reload: Option<ReloadRecord>,
    events_tx: mpsc::UnboundedSender<WorkerEvent>,
    events_rx: mpsc::UnboundedReceiver<WorkerEvent>,
    outcome: Option<Outcome>,
}

impl Master {
    fn new(config: Config, listeners: Vec<Listener>, notifier: Notifier) -> Self {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let slots = config.processes as usize;
        Self {
            config,
            protocols: listeners.iter().map(|l| l.protocol).collect(),
            addresses: listeners.iter().map(|l| l.address.clone()).collect(),
            notifier,
            ticks: 0,
            listeners: listeners.into_iter().map(|l| l.fd).collect(),
            phase: Phase::Starting,
            generation: 1,
            workers: Workers::default(),
            reload_pending: None,
            scale_pending: 0,
            reload_gone: 0,
            reload_reported: None,
            respawns: Vec::new(),
            quick_deaths: vec![0; slots + 1],
            killed_count: 0,
            killed_before_shutdown: 0,
            slots: HashMap::new(),
            last_reload: None,
            events_tx,
            events_rx,
            outcome: None,
        }
    }

    async fn main_loop(&mut self) -> anyhow::Result<Outcome> {
        let mut triggers = commands::Triggers::install(
            self.config.master_fifo.as_deref(),
            &self.config.touch_reload,
            &self.config.touch_chain_reload,
        )
        .map_err(|error| anyhow::anyhow!("cannot set up the master's controls: {error}"))?;
        let _fifo_file = self
            .config
            .master_fifo
            .as_deref()
            .and_then(vacuum::OwnedFile::record);
        let stats_listener = match &self.config.stats {
            Some(address) => Some(stats::StatsListener::bind(address).await.map_err(|error| {
                anyhow::anyhow!("cannot listen for --stats on {address}: {error}")
            })?),
            None => None,
        };
        let _stats_file = stats_listener.as_ref().and_then(stats::StatsListener::file);
        let metrics_listener = match &self.config.metrics {
            Some(address) => Some(stats::StatsListener::bind(address).await.map_err(|error| {
                anyhow::anyhow!("cannot listen for --metrics on {address}: {error}")
            })?),
            None => None,
        };
        let _metrics_file = metrics_listener
            .as_ref()
            .and_then(stats::StatsListener::file);
        let stats_framing = if self.config.stats_http {
            stats::Framing::Http {
                content_type: "application/json",
            }
        } else {
            stats::Framing::Raw
        };
        for id in 1..=self.config.processes {
            self.spawn(id, self.generation, SpawnReason::Start);
        }
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        while self.outcome.is_none() {
            tokio::select! {
                (command, cause) = triggers.next() => self.on_command(command, &cause),
                Some(event) = self.events_rx.recv() => self.on_worker_event(event),
                _ = tick.tick() => {
                    self.on_tick();
                    for (command, cause) in triggers.touched() {
                        self.on_command(command, &cause);
                    }
                }
                Ok(client) = stats::accept_optional(stats_listener.as_ref()) => {
                    let body = self.stats_document().to_string();
                    tokio::spawn(stats::answer(client, body, stats_framing));
                }
                Ok(client) = stats::accept_optional(metrics_listener.as_ref()) => {
                    let body = self.metrics_text();
                    let framing = stats::Framing::Http {
                        content_type: "text/plain; version=0.0.4",
                    };
                    tokio::spawn(stats::answer(client, body, framing));
                }
            }
        }
        Ok(self.outcome.expect("the loop ends with an outcome"))
    }

    /// What each command does (the triggers are in `commands`).
    fn on_command(&mut self, command: commands::Command, cause: &str) {
        use commands::Command;
        match command {
            Command::Reload => self.request_reload(cause, false),
            Command::ChainReload => self.request_reload(cause, true),
            Command::Shutdown => match self.phase {
                Phase::ShuttingDown {
                    mode: RetireMode::Shutdown,
                } => {
                    info!(
                        cause,
                        "second graceful shutdown request: escalating to a fast shutdown"
                    );
                    self.shutdown(RetireMode::Fast);
                }
                Phase::ShuttingDown { .. } => {}
                _ => self.shutdown(RetireMode::Shutdown),
            },
            Command::FastShutdown => match self.phase {
                Phase::ShuttingDown {
                    mode: RetireMode::Fast,
                } => {}
                _ => self.shutdown(RetireMode::Fast),
            },
            Command::ReopenLogs => self.reopen_logs(),
            Command::AddWorker => self.scale(true, cause),
            Command::RemoveWorker => self.scale(false, cause),
            Command::WritePidfile => self.write_pidfile(cause),
            Command::LogStats => info!(stats = %self.stats_document(), "stats"),
        }
    }

    fn request_reload(&mut self, cause: &str, chain: bool) {
        match self.phase {
            Phase::ShuttingDown { .. } => {
                info!(
                    event = "reload_ignored",
                    cause, "reload requested during shutdown: ignored"
                );
            }
            Phase::Starting | Phase::Reloading { .. } | Phase::ChainReloading { .. } => {
                info!(
                    cause,
                    "reload requested while another runs: it follows when this one ends"
                );
                self.reload_pending = Some(chain);
            }
            Phase::Serving if self.workers.replacing() => {
                info!(
                    cause,
                    "reload requested while a worker is being replaced: it follows when that ends"
                );
                self.reload_pending = Some(chain);
            }
            Phase::Serving if chain => self.start_chain_reload(cause),
            Phase::Serving => self.start_reload(cause),
        }
    }

    fn record_reload_failure(&mut self, generation: u64, error: &str) {
        self.notifier.ready(&format!(
            "reload failed; generation {} serves: {error}",
            self.generation
        ));
        error!(
            event = "reload_failed",
            generation,
            error = %error,
            "reload failed, generation {} keeps serving: {error}",
            self.generation
        );
        self.last_reload = Some(ReloadRecord {
            result: "failed",
            error: Some(error.to_owned()),
            at: SystemTime::now(),
            generation,
        });
    }

    /// The number of a new generation: above the one owning the slots and
    /// any worker serving. A failed reload, none of whose workers served,
    /// hands its number on; a chain reload that failed half-way leaves
    /// workers of its generation serving, and the next reload must not
    /// take them for its own.
    fn next_generation(&self) -> u64 {
        let serving = self
            .workers
            .iter()
            .filter(|w| w.state == WorkerState::Ready)
            .map(|w| w.generation)
            .max();
        self.generation.max(serving.unwrap_or(0)) + 1
    }

    fn start_reload(&mut self, cause: &str) {
        if let Err(error) = self.reread_config() {
            self.record_reload_failure(self.generation, &error);
            return;
        }
        let generation = self.next_generation();
        info!(
            event = "reload_started",
            generation, cause, "graceful reload: starting generation {generation}"
        );
        self.phase = Phase::Reloading {
            generation,
            committed: false,
        };
        self.begin_reload_progress();
        self.notifier
            .reloading(&format!("reloading: starting generation {generation}"));
        for id in 1..=self.config.processes {
            self.spawn(id, generation, SpawnReason::Start);
        }
        self.report_reload_progress();
    }

    /// Reads the options again (the ini files may have changed), as the new
    /// workers will. Sockets stay as they are: changing them needs a restart.
    fn reread_config(&mut self) -> Result<(), String> {
        let loaded =
            crate::config::load(std::env::args().collect()).map_err(|error| match error {
                crate::config::LoadError::Usage(error) => error.to_string(),
                crate::config::LoadError::Config(error) => error.to_string(),
            })?;
        let config = loaded
            .options
            .validate()
            .map_err(|error| error.to_string())?;
        crate::config::report_unmatched_pythonpath(&config.pythonpath_unmatched);
        if config.listen != self.config.listen {
            warn!(
                event = "restart_needed",
                "the sockets in the configuration changed: that needs a restart; \
                 serving on the old ones until mercy is stopped and started again"
            );
        }
        let listen = std::mem::take(&mut self.config.listen);
        self.config = crate::config::Config { listen, ..config };
        let slots = self.config.processes as usize + 1;
        if self.quick_deaths.len() < slots {
            self.quick_deaths.resize(slots, 0);
        }
        Ok(())
    }

    fn shutdown(&mut self, mode: RetireMode) {
        let graceful = mode == RetireMode::Shutdown;
        info!(
            event = "shutdown_started",
            mode = if graceful { "graceful" } else { "fast" },
            workers = self.workers.len(),
            "{} shutdown started",
            if graceful { "graceful" } else { "fast" }
        );
        // A graceful shutdown escalated to a fast one is still the same
        // shutdown: its kills count from the first request.
        if !matches!(self.phase, Phase::ShuttingDown { .. }) {
            self.killed_before_shutdown = self.killed_count;
        }
        self.phase = Phase::ShuttingDown { mode };
        self.notifier.stopping(&format!(
            "{} shutdown: {} workers retiring",
            if graceful { "graceful" } else { "fast" },
            self.workers.len()
        ));
        self.respawns.clear();
        // No worker will be started again: the workers' copies of the
        // listening sockets are the last ones, so each socket closes as soon
        // as the last worker has taken its queued connections. A client
        // arriving later is refused (and a load balancer tries elsewhere)
        // instead of waiting in a queue nobody takes from, to be reset at
        // exit.
        self.listeners.clear();
        let pids: Vec<u32> = self.workers.pids();
        for pid in pids {
            let starting = matches!(
                self.workers.get(pid).map(|w| &w.state),
                Some(WorkerState::Starting { .. })
            );
            if starting {
                self.kill(pid, "the worker was still loading when the shutdown began");
            } else {
                self.retire(pid, mode);
            }
        }
        self.check_shutdown_done();
    }

    fn on_worker_event(&mut self, event: WorkerEvent) {
        match event {
            WorkerEvent::Message { pid, message } => self.on_message(pid, message),
            WorkerEvent::Exited { pid, status } => self.on_exit(pid, status),
        }
    }

    fn on_message(&mut self, pid: u32, message: ToMaster) {
        match message {
            ToMaster::Ready => self.on_ready(pid),
            ToMaster::LoadFailed { error } => self.on_load_failed(pid, &error),
            ToMaster::Reload => self.request_reload("the app called reload()", false),
            ToMaster::Recycle { reason } => self.recycle(pid, &reason, None),
            ToMaster::Stuck { reason } => {
                let grace = self.config.harakiri_graceful_timeout;
                self.recycle(pid, &reason, Some(grace));
            }
            ToMaster::Harakiri => {
                if let Some(history) = self.slots_history_mut(pid) {
                    history.harakiri += 1;
                }
            }
            ToMaster::Stats(stats) => {
                if let Some(worker) = self.workers.get_mut(pid) {
                    worker.stats = stats;
                }
            }
            ToMaster::Diagnosed => {
                let expired = self
                    .workers
                    .get(pid)
                    .filter(|w| matches!(w.state, WorkerState::Expired { .. }));
                if let Some(worker) = expired {
                    let reason = format!("{} expired", grace_option(worker));
                    self.kill(pid, &reason);
                }
            }
        }
    }

    fn on_ready(&mut self, pid: u32) {
        let Some(worker) = self.workers.get_mut(pid) else {
            return;
        };
        if !matches!(worker.state, WorkerState::Starting { .. }) {
            return;
        }
        worker.state = WorkerState::Ready;
        let (id, generation, replaces) = (worker.id, worker.generation, worker.replaces.take());
        info!(
            event = "ready",
            worker.id = id,
            worker.pid = pid,
            generation,
            "worker {id} ready"
        );

        if let Some(old) = replaces {
            self.replacement_ready(old);
        }
        self.report_reload_progress();
        match self.phase {
            Phase::ChainReloading {
                generation: new,
                slot,
            } if generation == new && slot == id && replaces.is_none() => {
                self.chain_next(new, slot + 1);
            }
            Phase::Starting
                if self.workers.ready_count(generation) == self.config.processes as usize =>
            {
                info!(
                    workers = self.config.processes,
                    generation, "all workers ready"
                );
                self.phase = Phase::Serving;
                self.notifier
                    .ready(&format!("{} workers ready", self.config.processes));
                self.after_reload_or_start();
            }
            Phase::Reloading {
                generation: new,
                committed: false,
            } if generation == new
                && self.workers.ready_count(new) == self.config.processes as usize =>
            {
                self.commit_reload(new);
            }
            _ => {}
        }
    }

    /// The whole new generation is ready: it takes the slots and every
    /// older worker retires.
    fn commit_reload(&mut self, generation: u64) {
        self.phase = Phase::Reloading {
            generation,
            committed: true,
        };
        let previous = self.generation;
        self.generation = generation;
        self.respawns.clear();
        for pid in self.workers.older_than(generation) {
            self.retire(pid, RetireMode::Reload);
        }
        info!(
            generation,
            draining = self.workers.older_than(generation).len(),
            "reload: generation {generation} serves; generation {previous} is draining"
        );
        self.report_reload_progress();
        self.check_reload_done();
    }

    fn on_load_failed(&mut self, pid: u32, error: &str) {
        let Some(worker) = self.workers.get_mut(pid) else {
            return;
        };
        worker.load_failed = true;
        let (id, generation) = (worker.id, worker.generation);
        self.fail_loading_worker(pid, id, generation, error);
    }

    /// A worker that was loading the app will never be ready.
    fn fail_loading_worker(&mut self, pid: u32, id: u32, generation: u64, error: &str) {
        let replaces = self.workers.get(pid).and_then(|w| w.replaces);
        if let Some(old) = replaces {
            if let Some(worker) = self.workers.get_mut(pid) {
                worker.replaces = None;
            }
            if let Phase::ChainReloading {
                generation: new,
                slot,
            } = self.phase
            {
                if generation == new {
                    self.record_reload_failure(new, error);
                    if slot > 1 {
                        warn!(
                            generation = new,
                            "the chain reload stopped at worker {slot}: workers 1 to {} \
                             already serve generation {new}, the others generation {}; \
                             the next reload makes them one generation again",
                            slot - 1,
                            self.generation
                        );
                    }
                    self.replacement_failed(old, error);
                    self.phase = Phase::Serving;
                    self.after_reload_or_start();
                    return;
                }
            }
            self.replacement_failed(old, error);
            return;
        }
        match self.phase {
            Phase::Starting => {
                error!(
                    event = "start_failed",
                    worker.id = id,
                    worker.pid = pid,
                    generation,
                    error,
                    "the app could not be loaded at start: {error}"
                );
                self.outcome_after_kill_all(Outcome::AppLoadFailed);
            }
            Phase::Reloading {
                generation: new,
                committed: false,
            } if generation == new => {
                self.record_reload_failure(new, error);
                for pid in self.workers.of_generation(new) {
                    self.stop_unneeded(pid);
                }
                self.phase = Phase::Serving;
                self.after_reload_or_start();
            }
            _ => {
                error!(
                    worker.id = id,
                    worker.pid = pid,
                    generation,
                    error,
                    "worker {id} of generation {generation} could not load the app: {error}"
                );
            }
        }
    }

    /// Retires a worker that is ready, kills one that is still loading.
    fn stop_unneeded(&mut self, pid: u32) {
        match self.workers.get(pid).map(|w| &w.state) {
            Some(WorkerState::Starting { .. }) => self.kill(pid, "its generation failed to load"),
            Some(WorkerState::Ready) => self.retire(pid, RetireMode::Reload),
            _ => {}
        }
    }

    fn on_exit(&mut self, pid: u32, status: ExitStatus) {
        let Some(worker) = self.workers.remove(pid) else {
            return;
        };
        let Worker {
            id,
            generation,
            started_at,
            state,
            load_failed,
            stats,
            replaces,
            ..
        } = worker;
        if self
            .reloading_generation()
            .is_some_and(|new| generation < new)
            && state.is_leaving()
        {
            self.reload_gone += 1;
        }
        let history = self.slots.entry(id).or_default();
        history.requests += stats.requests;
        history.exceptions += stats.exceptions;
        history.tx += stats.tx;
        history.running_time_us += stats.running_time_us;
        match state {
            WorkerState::Retiring { .. } | WorkerState::Expired { .. } => {
                info!(
                    event = "retired",
                    worker.id = id,
                    worker.pid = pid,
                    generation,
                    status = %describe(status),
                    "worker {id} retired"
                );
            }
            WorkerState::Killed => {}
            WorkerState::Starting { .. } => {
                if !load_failed {
                    let error = format!(
                        "the worker exited before it was ready ({})",
                        describe(status)
                    );
                    self.fail_loading_worker(pid, id, generation, &error);
                }
            }
            WorkerState::Ready => {
                warn!(
                    event = "died",
                    worker.id = id,
                    worker.pid = pid,
                    generation,
                    status = %describe(status),
                    "worker {id} died unexpectedly ({})",
                    describe(status)
                );
            }
        }
        self.refill_slot(id, started_at);
        self.report_reload_progress();
        if let Phase::ChainReloading {
            generation: new,
            slot,
        } = self.phase
        {
            // The chain moves on once the replaced worker is gone.
            if slot == id && generation < new && replaces.is_none() {
                self.chain_next(new, slot + 1);
            }
        }
        // Only then may a reload that waited for this exit start: in the
        // other order, the exit that let a chain reload start would also
        // count as the end of its first slot, and two slots would be
        // replaced at once.
        if self.phase == Phase::Serving && !self.workers.replacing() {
            self.after_reload_or_start();
        }
        self.check_shutdown_done();
        self.check_reload_done();
    }

    /// After a worker is gone, its slot gets a new one unless a worker is
    /// starting or serving in it already.
    fn refill_slot(&mut self, id: u32, started_at: Instant) {
        let serving = matches!(
            self.phase,
            Phase::Serving | Phase::Reloading { .. } | Phase::ChainReloading { .. }
        );
        let already_pending = self.respawns.iter().any(|(slot, _)| *slot == id);
        if serving
            && id <= self.config.processes
            && !already_pending
            && !self.workers.slot_filled(id)
        {
            self.schedule_respawn(id, started_at);
        }
    }

    fn schedule_respawn(&mut self, id: u32, started_at: Instant) {
        let slot = id as usize;
        if slot >= self.quick_deaths.len() {
            return;
        }
        let delay = if started_at.elapsed() < QUICK_DEATH {
            self.quick_deaths[slot] += 1;
            let doublings = self.quick_deaths[slot].saturating_sub(1).min(5);
            (Duration::from_secs(1) * 2u32.pow(doublings)).min(MAX_BACKOFF)
        } else {
            self.quick_deaths[slot] = 0;
            Duration::ZERO
        };
        if !delay.is_zero() {
            info!(
                worker.id = id,
                delay_s = delay.as_secs(),
                "worker {id} died soon after it started: respawning in {}s",
                delay.as_secs()
            );
        }
        self.respawns.push((id, Instant::now() + delay));
    }

    fn check_reload_done(&mut self) {
        let Phase::Reloading {
            generation,
            committed: true,
        } = self.phase
        else {
            return;
        };
        if !self.workers.older_than(generation).is_empty() {
            return;
        }
        self.finish_reload(generation, "full");
    }

    /// A reload (`mode` "full" or "chain") is over: generation
    /// `generation` serves every slot.
    fn finish_reload(&mut self, generation: u64, mode: &'static str) {
        self.generation = generation;
        self.last_reload = Some(ReloadRecord {
            result: "done",
            error: None,
            at: SystemTime::now(),
            generation,
        });
        info!(
            event = "reload_done",
            generation,
            mode,
            workers = self.workers.len(),
            "reload done: generation {generation} serves"
        );
        self.notifier.ready(&format!(
            "{} workers ready, generation {generation}",
            self.config.processes
        ));
        self.phase = Phase::Serving;
        self.after_reload_or_start();
    }

    fn after_reload_or_start(&mut self) {
        self.reload_reported = None;
        self.apply_pending_scale();
        match self.reload_pending.take() {
            Some(true) => self.start_chain_reload("a reload requested while another ran"),
            Some(false) => self.start_reload("a reload requested while another ran"),
            None => {}
        }
    }

    fn check_shutdown_done(&mut self) {
        if matches!(self.phase, Phase::ShuttingDown { .. }) && self.workers.len() == 0 {
            info!(
                event = "shutdown_done",
                killed = self.killed_count - self.killed_before_shutdown,
                "shutdown done"
            );
            self.outcome = Some(Outcome::Stopped);
        }
    }

    fn outcome_after_kill_all(&mut self, outcome: Outcome) {
        for pid in self.workers.pids() {
            let exiting = self.workers.get(pid).is_some_and(|w| w.load_failed);
            if !exiting {
                self.kill(pid, "the instance is ending");
            }
        }
        self.outcome = Some(outcome);
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        for pid in self.workers.pids() {
            let Some(worker) = self.workers.get(pid) else {
                continue;
            };
            match worker.state {
                WorkerState::Starting { since }
                    if now.duration_since(since) > self.config.spawn_timeout =>
                {
                    let (id, generation) = (worker.id, worker.generation);
                    let error = format!(
                        "not ready within --spawn-timeout ({}s)",
                        self.config.spawn_timeout.as_secs()
                    );
                    self.kill(pid, &error);
                    self.fail_loading_worker(pid, id, generation, &error);
                }
                WorkerState::Retiring { deadline, diagnose } if now >= deadline => {
                    if diagnose {
                        self.expire(pid);
                    } else {
                        self.kill(pid, "fast shutdown");
                    }
                }
                WorkerState::Expired { kill_at } if now >= kill_at => {
                    let reason =
                        format!("{} expired (no diagnostic in time)", grace_option(worker));
                    self.kill(pid, &reason);
                }
                _ => {}
            }
        }

        let due: Vec<u32> = self
            .respawns
            .iter()
            .filter(|(_, at)| *at <= now)
            .map(|(id, _)| *id)
            .collect();
        self.respawns.retain(|(_, at)| *at > now);
        for id in due {
            if !matches!(self.phase, Phase::ShuttingDown { .. }) {
                self.spawn(id, self.generation, SpawnReason::Respawn);
            }
        }
        self.check_limits();
        self.recycle_wanted();
        self.ticks += 1;
        if self.ticks % 10 == 0 {
            systemd::reap_orphans(&self.workers.pids());
        }
    }

    /// The mercy deadline passed: ask for the diagnostic; the kill follows
    /// when it is written or after a short grace.
    fn expire(&mut self, pid: u32) {
        let Some(worker) = self.workers.get_mut(pid) else {
            return;
        };
        worker.state = WorkerState::Expired {
            kill_at: Instant::now() + DIAGNOSTIC_GRACE,
        };
        let grace = worker.retire_grace.unwrap_or(self.config.reload_mercy);
        warn!(
            worker.id = worker.id,
            worker.pid = pid,
            generation = worker.generation,
            mercy_s = grace.as_secs_f64(),
            "worker {} is still retiring after {} ({}s): asking what it waits for",
            worker.id,
            grace_option(worker),
            grace.as_secs_f64()
        );
        worker.send(&ToWorker::Expired {
            option: grace_option(worker).to_owned(),
            grace_s: grace.as_secs_f64(),
        });
    }

    fn retire(&mut self, pid: u32, mode: RetireMode) {
        self.retire_with(pid, mode, None);
    }

    /// Retires a worker; `grace` replaces `--worker-reload-mercy` (a stuck
    /// worker gets `--harakiri-graceful-timeout`).
    fn retire_with(&mut self, pid: u32, mode: RetireMode, grace: Option<Duration>) {
        let Some(worker) = self.workers.get_mut(pid) else {
            return;
        };
        let now = Instant::now();
        let (deadline, diagnose) = match mode {
            RetireMode::Fast => (now + FAST_SHUTDOWN_GRACE, false),
            _ => (now + grace.unwrap_or(self.config.reload_mercy), true),
        };
        if let WorkerState::Retiring {
            deadline: current, ..
        } = worker.state
        {
            if mode != RetireMode::Fast || current <= deadline {
                return;
            }
        }
        if matches!(
            worker.state,
            WorkerState::Expired { .. } | WorkerState::Killed
        ) {
            return;
        }
        worker.state = WorkerState::Retiring { deadline, diagnose };
        info!(
            event = "retiring",
            worker.id = worker.id,
            worker.pid = pid,
            generation = worker.generation,
            mode = ?mode,
            "worker {} retiring",
            worker.id
        );
        worker.send(&ToWorker::Retire { mode });
    }

    fn kill(&mut self, pid: u32, reason: &str) {
        let Some(worker) = self.workers.get_mut(pid) else {
            return;
        };
        if matches!(worker.state, WorkerState::Killed) {
            return;
        }
        let raw_pid = nix::unistd::Pid::from_raw(pid as i32);
        if let Err(errno) = nix::sys::signal::kill(raw_pid, nix::sys::signal::Signal::SIGKILL) {
            warn!(worker.pid = pid, %errno, "could not kill worker");
        }
        worker.state = WorkerState::Killed;
        self.killed_count += 1;
        warn!(
            event = "killed",
            worker.id = worker.id,
            worker.pid = pid,
            generation = worker.generation,
            reason,
            "worker {} killed: {reason}",
            worker.id
        );
    }

    /// Starts the worker for slot `id` in `generation`.
    fn spawn(&mut self, id: u32, generation: u64, reason: SpawnReason) {
        let respawn = reason == SpawnReason::Respawn;
        let spec = WorkerSpec {
            id,
            generation,
            master_pid: std::process::id(),
            listeners: self.protocols.clone(),
        };
        let spawned = match spawn::spawn_worker(&spec, &self.listeners) {
            Ok(spawned) => spawned,
            Err(error) if self.phase == Phase::Starting => {
                error!(
                    event = "start_failed",
                    worker.id = id,
                    generation,
                    %error,
                    "could not start worker process {id} at start: {error}"
                );
                self.outcome_after_kill_all(Outcome::AppLoadFailed);
                return;
            }
            Err(error) => {
                error!(worker.id = id, generation, %error, "could not start a worker process");
                self.respawns
                    .push((id, Instant::now() + Duration::from_secs(1)));
                return;
            }
        };
        let mut child = spawned.child;
        let pid = child.id().expect("a just-spawned child has a pid");
        let control = tokio::net::UnixStream::from_std({
            spawned
                .control
                .set_nonblocking(true)
                .expect("a fresh socket can be made non-blocking");
            spawned.control
        })
        .expect("the control socket registers with the runtime");
        let (reader, writer) = control.into_split();

        let events = self.events_tx.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(reader).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<ToMaster>(&line) {
                    Ok(message) => {
                        if events.send(WorkerEvent::Message { pid, message }).is_err() {
                            break;
                        }
                    }
                    Err(error) => warn!(worker.pid = pid, %error, "bad control message: {line:?}"),
                }
            }
        });
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            match child.wait().await {
                Ok(status) => {
                    let _ = events.send(WorkerEvent::Exited { pid, status });
                }
                Err(error) => error!(worker.pid = pid, %error, "cannot wait for worker"),
            }
        });

        info!(
            event = if respawn { "respawned" } else { "spawned" },
            worker.id = id,
            worker.pid = pid,
            generation,
            "worker {id} {} (pid {pid})",
            if respawn { "respawned" } else { "spawned" }
        );
        self.workers.insert(Worker {
            id,
            pid,
            generation,
            started_at: Instant::now(),
            state: WorkerState::Starting {
                since: Instant::now(),
            },
            load_failed: false,
            control: writer,
            stats: Default::default(),
            spawned_at: SystemTime::now(),
            replaces: match reason {
                SpawnReason::Replace(old) => Some(old),
                _ => None,
            },
            recycling: false,
            retire_grace: None,
            recycle_wanted: None,
            recycle_after: None,
        });
        if respawn {
            self.slots.entry(id).or_default().respawns += 1;
        }
    }
}

impl Master {
    /// The history of the slot of worker `pid`.
    fn slots_history_mut(&mut self, pid: u32) -> Option<&mut SlotHistory> {
        let id = self.workers.get(pid)?.id;
        Some(self.slots.entry(id).or_default())
    }

    /// The counters a slot carried before its current worker.
    fn history(&self, id: u32) -> SlotHistory {
        self.slots.get(&id).copied().unwrap_or_default()
    }
}

/// A worker's exit status in words.
fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => match nix::sys::signal::Signal::try_from(signal) {
            Ok(signal) => format!("killed by {signal}"),
            Err(_) => format!("killed by signal {signal}"),
        },
        _ => "unknown status".to_owned(),
    }
}

/// The option whose time a retiring worker had: `--harakiri-graceful-timeout`
/// for a worker replaced because a request was stuck, else
/// `--worker-reload-mercy`.
fn grace_option(worker: &Worker) -> &'static str {
    if worker.retire_grace.is_some() {
        "--harakiri-graceful-timeout"
    } else {
        "--worker-reload-mercy"
    }
}
