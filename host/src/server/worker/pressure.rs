//! The buffered-bytes budget as one worker applies it: counting what each connection holds,
//! pausing the largest holders past `--max-buffered-bytes`, trying them again, and shedding the
//! largest past twice it.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::super::budget::Pressure;
use super::super::handler::Handler;
use super::super::stats::Close;
use super::{Worker, RETRY_PAUSED, SHED_EVERY};

impl<H: Handler> Worker<H> {
    /// What the budget asks of connections now.
    pub(super) fn pressure(&self) -> Pressure {
        self.share.budget().pressure(&self.shared.stats.open)
    }

    /// Counts what connection `key` holds now in this worker's share.
    pub(super) fn sync(&mut self, key: usize) {
        let s = &mut self.sessions[key];
        let now = s.io.buffered();
        self.share.update(s.counted, now);
        s.counted = now;
    }

    /// Connection `key` stops reading and calling plugins until the budget lets it go on.
    pub(super) fn pause(&mut self, key: usize) {
        let s = &mut self.sessions[key];
        if !s.paused {
            s.paused = true;
            self.paused.push(key);
            self.metrics.paused();
            tracing::debug!(conn = s.info.id, held = s.counted, "paused for the budget");
        }
        if !self.over_budget {
            self.over_budget = true;
            let budget = self.share.budget();
            tracing::warn!(
                worker = self.index,
                held = budget.held(),
                limit = budget.limit(),
                "buffered bytes over --max-buffered-bytes: the largest holders stop reading \
                 until they drain"
            );
        }
    }

    /// Drives the paused connections again: those the budget still holds back pause again.
    pub(super) fn retry_paused(&mut self) {
        self.retry_at = self.now + RETRY_PAUSED;
        let keys = std::mem::take(&mut self.paused);
        for key in keys {
            if self.sessions.get(key).is_some_and(|s| s.paused) {
                self.drive(key);
                if self.sessions.get(key).is_some_and(|s| s.paused) {
                    self.paused.push(key);
                }
            }
        }
        if self.paused.is_empty() && self.over_budget && self.pressure() == Pressure::Normal {
            self.over_budget = false;
            tracing::info!(worker = self.index, "buffered bytes back under the budget");
        }
    }

    /// Past twice the budget: closes this worker's connections holding more than their share,
    /// largest first, until the sum is back under twice the budget. A pause cannot bound what
    /// clients that read nothing hold once each has had its reply; this does.
    pub(super) fn shed(&mut self) {
        let Pressure::Shed { fair } = self.pressure() else {
            return;
        };
        // A scan that found too little to shed waits a moment: the rest is another worker's.
        if Instant::now() < self.shed_at + SHED_EVERY {
            return;
        }
        let mut largest: Vec<(usize, usize)> = (self.sessions.iter())
            .filter(|(_, s)| s.counted > fair)
            .map(|(key, s)| (s.counted, key))
            .collect();
        largest.sort_unstable_by(|a, b| b.cmp(a));
        for (held, key) in largest {
            if !self.share.budget().over_hard() {
                break;
            }
            let s = &self.sessions[key];
            tracing::warn!(
                conn = s.info.id,
                peer = %s.info.peer,
                held,
                open = self.shared.stats.open.load(Relaxed),
                "closing one of the largest holders: buffered bytes over twice \
                 --max-buffered-bytes"
            );
            self.finish(key, Close::OverBudget);
            // The sum must show it at once, or the next check would shed one too many.
            self.share.publish();
        }
        if self.share.budget().over_hard() {
            self.shed_at = Instant::now();
        }
    }
}
