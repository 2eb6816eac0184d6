//! The global budget of buffered bytes (`--max-buffered-bytes`): what every connection holds
//! (input not yet handed to a plugin, replies not yet written), summed across workers, and what
//! the pressure on it asks of a connection: go on, stop reading, or be shed.
//!
//! Modelled on Envoy's overload manager. Past the budget, connections holding more than their
//! fair share (the budget over the open connections) are paused: no reads, no plugin calls,
//! while their writes go on, so they drain and everyone else is still served. Past twice the
//! budget the largest holders are closed (Envoy's `reset_high_memory_stream`): a pause cannot
//! bound what clients that never read hold once each has had one reply, nor what thousands of
//! paused partial messages hold, and an operator's bound must hold against both.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// How far a worker's own count may drift from what it published to the shared sum. Publishing
/// every change would bounce the sum's cache line between cores on every message; this keeps
/// the shared sum within `workers × GRAIN` of the truth.
pub const GRAIN: usize = 64 << 10;

/// The budget and the bytes held against it, shared by every worker.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    /// Shared with the metrics, whose `buffered_bytes` gauge it is.
    held: Arc<AtomicUsize>,
}

/// What the budget asks of connections now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pressure {
    /// Under the budget: every connection goes on.
    Normal,
    /// Over it: a connection holding more than `fair` bytes stops reading and calling plugins.
    Pause { fair: usize },
    /// Over twice the budget: connections holding more than `fair` bytes are closed, largest
    /// first, until the sum is back under twice the budget.
    Shed { fair: usize },
}

impl Pressure {
    /// Whether a connection holding `held` bytes must wait (or go) rather than take more.
    pub fn holds_back(self, held: usize) -> bool {
        match self {
            Pressure::Normal => false,
            Pressure::Pause { fair } | Pressure::Shed { fair } => held > fair,
        }
    }
}

impl Budget {
    /// A budget of `limit` bytes, its sum kept in `held`.
    pub fn new(limit: usize, held: Arc<AtomicUsize>) -> Arc<Self> {
        Arc::new(Budget { limit, held })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The bytes held, as the workers last published them.
    pub fn held(&self) -> usize {
        self.held.load(Relaxed)
    }

    /// The pressure, with `open` the connections open server-wide (read only when over).
    pub fn pressure(&self, open: &AtomicUsize) -> Pressure {
        let held = self.held();
        if held <= self.limit {
            return Pressure::Normal;
        }
        let fair = self.limit / open.load(Relaxed).max(1);
        if held > self.limit.saturating_mul(2) {
            Pressure::Shed { fair }
        } else {
            Pressure::Pause { fair }
        }
    }

    /// Whether the sum is still over twice the budget (shedding goes on while it is).
    pub fn over_hard(&self) -> bool {
        self.held() > self.limit.saturating_mul(2)
    }
}

/// One worker's part: the exact bytes its connections hold, published to the shared sum.
#[derive(Debug)]
pub struct Share {
    budget: Arc<Budget>,
    local: usize,
    published: usize,
}

impl Share {
    pub fn new(budget: Arc<Budget>) -> Self {
        Share {
            budget,
            local: 0,
            published: 0,
        }
    }

    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// The bytes this worker's connections hold, exactly.
    #[cfg(test)]
    pub fn local(&self) -> usize {
        self.local
    }

    /// A connection that held `before` bytes now holds `after`.
    pub fn update(&mut self, before: usize, after: usize) {
        if before == after {
            return;
        }
        self.local = self.local + after - before;
        if self.local.abs_diff(self.published) >= GRAIN {
            self.publish();
        }
    }

    /// Brings the shared sum up to date with this worker's count.
    pub fn publish(&mut self) {
        if self.local >= self.published {
            self.budget
                .held
                .fetch_add(self.local - self.published, Relaxed);
        } else {
            self.budget
                .held
                .fetch_sub(self.published - self.local, Relaxed);
        }
        self.published = self.local;
    }
}

impl Drop for Share {
    /// A worker that stops takes what it published back out of the sum.
    fn drop(&mut self) {
        self.local = 0;
        self.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_changes_are_published_in_grains_and_the_sum_follows_every_worker() {
        let budget = Budget::new(1 << 20, Arc::default());
        let mut a = Share::new(budget.clone());
        let mut b = Share::new(budget.clone());
        a.update(0, 100);
        assert_eq!(a.local(), 100);
        assert_eq!(budget.held(), 0, "under a grain of drift stays local");
        a.update(100, GRAIN + 100);
        b.update(0, 2 * GRAIN);
        assert_eq!(budget.held(), 3 * GRAIN + 100);
        a.update(GRAIN + 100, 0);
        assert_eq!(budget.held(), 2 * GRAIN);
        drop(b);
        assert_eq!(budget.held(), 0, "a stopped worker holds nothing");
    }

    #[test]
    fn pressure_pauses_over_the_budget_and_sheds_over_twice_it() {
        let budget = Budget::new(1000 * GRAIN, Arc::default());
        let mut w = Share::new(budget.clone());
        w.update(0, 1000 * GRAIN);
        let ten = AtomicUsize::new(10);
        assert_eq!(
            budget.pressure(&ten),
            Pressure::Normal,
            "at the budget is not over it"
        );
        w.update(1000 * GRAIN, 1001 * GRAIN);
        let p = budget.pressure(&ten);
        assert_eq!(p, Pressure::Pause { fair: 100 * GRAIN });
        assert!(!p.holds_back(100 * GRAIN), "a fair share goes on");
        assert!(p.holds_back(100 * GRAIN + 1));
        w.update(1001 * GRAIN, 2001 * GRAIN);
        assert_eq!(
            budget.pressure(&AtomicUsize::new(0)),
            Pressure::Shed { fair: 1000 * GRAIN }
        );
        assert!(budget.over_hard());
        assert!(!Pressure::Normal.holds_back(usize::MAX));
    }
}
