//! Reload progress: how many workers of the new generation are ready, how
//! many of the old one are draining and how many are gone, in the log
//! (`reload_progress`) and in systemd's `STATUS=` line.

use tracing::info;

use super::{Master, Phase, ReloadCounts};

impl Master {
    /// The generation a running reload (full or chain) is bringing in.
    pub(super) fn reloading_generation(&self) -> Option<u64> {
        match self.phase {
            Phase::Reloading { generation, .. } | Phase::ChainReloading { generation, .. } => {
                Some(generation)
            }
            _ => None,
        }
    }

    /// A reload starts: nothing is gone yet and nothing was reported.
    pub(super) fn begin_reload_progress(&mut self) {
        self.reload_gone = 0;
        self.reload_reported = None;
    }

    /// Logs the reload's counts and sends them to systemd, once per change.
    pub(super) fn report_reload_progress(&mut self) {
        let Some(counts) = self.reload_counts() else {
            return;
        };
        if self.reload_reported == Some(counts) {
            return;
        }
        self.reload_reported = Some(counts);

        let ReloadCounts {
            generation,
            ready,
            draining,
            gone,
            total,
            slot,
        } = counts;
        let mode = if slot.is_some() { "chain" } else { "full" };
        let summary =
            format!("{ready} of {total} new workers ready, {draining} draining, {gone} gone");
        info!(
            event = "reload_progress",
            generation,
            mode,
            ready,
            draining,
            gone,
            total,
            slot,
            "{mode} reload to generation {generation}: {summary}"
        );
        let status = match slot {
            Some(slot) => format!(
                "chain reload to generation {generation}, worker {slot} of {total}: {summary}"
            ),
            None => format!("reload to generation {generation}: {summary}"),
        };
        self.notifier.status(&status);
    }

    fn reload_counts(&self) -> Option<ReloadCounts> {
        let (generation, slot) = match self.phase {
            Phase::Reloading { generation, .. } => (generation, None),
            Phase::ChainReloading { generation, slot } => (generation, Some(slot)),
            _ => return None,
        };
        Some(ReloadCounts {
            generation,
            ready: self.workers.ready_count(generation),
            draining: self.workers.draining_older_than(generation),
            gone: self.reload_gone,
            total: self.config.processes,
            slot,
        })
    }
}
