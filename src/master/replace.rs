//! Replacing workers one at a time: chain reloads, recycling (max
//! requests, lifetime, memory, a stuck request), and changing the number
//! of workers. A replacement is ready before the worker it replaces stops
//! accepting, so capacity never drops.

use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::workers::WorkerState;
use super::{Master, Phase, SpawnReason};

/// How long a worker whose replacement failed to load serves before the
/// next attempt.
const RECYCLE_RETRY: Duration = Duration::from_secs(30);
use crate::control::{RetireMode, ToWorker};

impl Master {
    pub(super) fn start_chain_reload(&mut self, cause: &str) {
        if let Err(error) = self.reread_config() {
            self.record_reload_failure(self.generation, &error);
            return;
        }
        let generation = self.next_generation();
        info!(
            event = "reload_started",
            generation,
            cause,
            mode = "chain",
            "chain reload: replacing workers one at a time with generation {generation}"
        );
        self.begin_reload_progress();
        self.notifier.reloading(&format!(
            "chain reload: starting generation {generation}, one worker at a time"
        ));
        self.chain_next(generation, 1);
    }

    /// Starts the replacement of slot `slot`, or ends the chain after the
    /// last slot.
    pub(super) fn chain_next(&mut self, generation: u64, slot: u32) {
        if slot > self.config.processes {
            self.finish_reload(generation, "chain");
            return;
        }
        self.phase = Phase::ChainReloading { generation, slot };
        let old = self.workers.serving_in_slot(slot);
        let reason = match old {
            Some(pid) => SpawnReason::Replace(pid),
            None => SpawnReason::Start,
        };
        self.spawn(slot, generation, reason);
        self.report_reload_progress();
    }

    /// A worker asked to be (or must be) replaced: its replacement starts
    /// now and it retires once that one is ready.
    /// Outside the serving phase (a reload runs) the wish is kept and
    /// acted on once the reload is over, unless the worker retires anyway.
    pub(super) fn recycle(&mut self, pid: u32, reason: &str, grace: Option<Duration>) {
        let serving = self.phase == Phase::Serving;
        let Some(worker) = self.workers.get_mut(pid) else {
            return;
        };
        if worker.state != WorkerState::Ready || worker.recycling {
            return;
        }
        if !serving || worker.recycle_after.is_some_and(|at| at > Instant::now()) {
            worker.recycle_wanted = Some((reason.to_owned(), grace));
            return;
        }
        worker.recycle_wanted = None;
        worker.recycling = true;
        worker.retire_grace = grace;
        let (id, generation) = (worker.id, worker.generation);
        info!(
            event = "recycling",
            worker.id = id,
            worker.pid = pid,
            generation,
            reason,
            "worker {id} will be replaced: {reason}"
        );
        self.spawn(id, generation, SpawnReason::Replace(pid));
    }

    /// The replacement of `old` is ready: `old` retires.
    pub(super) fn replacement_ready(&mut self, old: u32) {
        let grace = self.workers.get(old).and_then(|w| w.retire_grace);
        self.retire_with(old, RetireMode::Reload, grace);
    }

    /// A replacement failed to load: the worker it was to replace serves on,
    /// and is replaced again after a pause.
    pub(super) fn replacement_failed(&mut self, old: u32, error: &str) {
        if let Some(worker) = self.workers.get_mut(old) {
            worker.recycling = false;
            worker.recycle_after = Some(Instant::now() + RECYCLE_RETRY);
            if worker.recycle_wanted.is_none() {
                worker.recycle_wanted = Some((
                    "a replacement that failed to load".to_owned(),
                    worker.retire_grace,
                ));
            }
            error!(
                worker.id = worker.id,
                worker.pid = old,
                error,
                "the replacement of worker {} could not load the app; the worker serves on: {error}",
                worker.id
            );
        }
    }

    /// Acts on replacements that were asked for while none could start.
    pub(super) fn recycle_wanted(&mut self) {
        if self.phase != Phase::Serving {
            return;
        }
        let now = Instant::now();
        let due: Vec<(u32, String, Option<Duration>)> = self
            .workers
            .iter()
            .filter(|w| w.recycle_after.is_none_or(|at| at <= now))
            .filter_map(|w| {
                let (reason, grace) = w.recycle_wanted.clone()?;
                Some((w.pid, reason, grace))
            })
            .collect();
        for (pid, reason, grace) in due {
            if let Some(worker) = self.workers.get_mut(pid) {
                worker.recycle_after = None;
            }
            self.recycle(pid, &reason, grace);
        }
    }

    /// SIGTTIN / SIGTTOU: one worker more or fewer. While the workers are
    /// starting or a reload runs, the change waits until that ends: a
    /// reload counts on the slots it started with.
    pub(super) fn scale(&mut self, more: bool, cause: &str) {
        let what = if more {
            "one more worker"
        } else {
            "one worker fewer"
        };
        match self.phase {
            Phase::ShuttingDown { .. } => {
                info!(cause, "{what} requested during shutdown: ignored");
            }
            Phase::Serving => self.apply_scale(more),
            Phase::Starting | Phase::Reloading { .. } | Phase::ChainReloading { .. } => {
                self.scale_pending += if more { 1 } else { -1 };
                info!(
                    cause,
                    pending = self.scale_pending,
                    "{what} requested while workers are loading: done when the {} ends",
                    if self.phase == Phase::Starting {
                        "start"
                    } else {
                        "reload"
                    }
                );
            }
        }
    }

    /// Applies the changes of the number of workers asked for while the
    /// workers were starting or reloading.
    pub(super) fn apply_pending_scale(&mut self) {
        let pending = std::mem::take(&mut self.scale_pending);
        if pending == 0 {
            return;
        }
        if self.reload_pending.is_some() {
            info!(
                change = pending,
                "a change of the number of workers ({pending:+}) is dropped: \
                 the reload that follows reads --processes again"
            );
            return;
        }
        info!(
            change = pending,
            "applying the change of the number of workers ({pending:+}) asked for while workers were loading"
        );
        for _ in 0..pending.unsigned_abs() {
            self.apply_scale(pending > 0);
        }
    }

    fn apply_scale(&mut self, more: bool) {
        if more {
            self.config.processes += 1;
            let slot = self.config.processes;
            if self.quick_deaths.len() <= slot as usize {
                self.quick_deaths.resize(slot as usize + 1, 0);
            }
            info!(workers = slot, "one more worker: now {slot}");
            self.spawn(slot, self.generation, SpawnReason::Start);
        } else if self.config.processes > 1 {
            let slot = self.config.processes;
            self.config.processes -= 1;
            self.respawns.retain(|(id, _)| *id != slot);
            info!(
                workers = self.config.processes,
                "one worker fewer: now {}", self.config.processes
            );
            for pid in self.workers.in_slot(slot) {
                self.stop_unneeded(pid);
            }
        } else {
            warn!("one worker fewer requested: mercy keeps at least one worker");
        }
    }

    /// FIFO `P`: writes the pidfile again (after it was removed, say).
    pub(super) fn write_pidfile(&mut self, cause: &str) {
        let Some(path) = self.config.pidfile.clone() else {
            info!(
                cause,
                "pidfile rewrite requested, but there is no --pidfile"
            );
            return;
        };
        match std::fs::write(&path, format!("{}\n", std::process::id())) {
            Ok(()) => info!(cause, path = %path.display(), "pidfile written"),
            Err(error) => error!(cause, %error, "cannot write the pidfile {}", path.display()),
        }
    }

    /// SIGUSR1 or FIFO `l`: the master and every worker reopen the log file.
    pub(super) fn reopen_logs(&mut self) {
        let Some(path) = self.config.logto.clone() else {
            info!("log reopen requested, but the log goes to standard error (no --logto)");
            return;
        };
        if let Err(error) = crate::logging::redirect_to_file(&path) {
            error!(%error, "cannot reopen the log file {}", path.display());
            return;
        }
        for worker in self.workers.iter() {
            worker.send(&ToWorker::ReopenLog);
        }
        info!(path = %path.display(), "log file reopened");
    }

    /// `--max-worker-lifetime` and `--reload-on-rss`, checked by the master.
    pub(super) fn check_limits(&mut self) {
        let lifetime = self.config.max_worker_lifetime;
        let rss_limit = self.config.reload_on_rss;
        if lifetime.is_none() && rss_limit.is_none() {
            return;
        }
        let now = Instant::now();
        let mut due = Vec::new();
        for worker in self.workers.iter() {
            if worker.state != WorkerState::Ready || worker.recycling {
                continue;
            }
            if let Some(limit) = lifetime {
                let limit = limit + self.lifetime_delta(worker.id);
                if now.duration_since(worker.started_at) >= limit {
                    due.push((
                        worker.pid,
                        format!("--max-worker-lifetime ({}s)", limit.as_secs()),
                    ));
                    continue;
                }
            }
            if let Some(limit) = rss_limit {
                let (rss, _) = super::stats::memory(worker.pid);
                if rss >= limit {
                    due.push((
                        worker.pid,
                        format!(
                            "--reload-on-rss: {} MB resident, limit {} MB",
                            rss >> 20,
                            limit >> 20
                        ),
                    ));
                }
            }
        }
        for (pid, reason) in due {
            self.recycle(pid, &reason, None);
        }
    }

    fn lifetime_delta(&self, id: u32) -> Duration {
        self.config.max_worker_lifetime_delta * id
    }
}
