//! Process-wide counters: what was served and what failed, logged per error and at shutdown.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::plugin::{CallError, Cause};

/// Counters shared by the acceptor and the workers; relaxed atomics, off the hot path's locks.
#[derive(Debug, Default)]
pub struct Stats {
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub messages: AtomicU64,
    pub oversize: AtomicU64,
    pub timeouts: AtomicU64,
    pub memory: AtomicU64,
    pub stack: AtomicU64,
    pub traps: AtomicU64,
    pub err_results: AtomicU64,
    pub instantiate: AtomicU64,
}

impl Stats {
    /// Logs a failed plugin call with its cause and counts it by kind.
    pub fn plugin_failed(&self, e: &CallError, conn: u64) {
        let counter = match e.cause {
            Cause::Timeout => &self.timeouts,
            Cause::MemoryLimit => &self.memory,
            Cause::StackOverflow => &self.stack,
            Cause::Trap(_) => &self.traps,
            Cause::Returned(_) => &self.err_results,
            Cause::Instantiate(_) => &self.instantiate,
        };
        counter.fetch_add(1, Relaxed);
        tracing::warn!(
            plugin = &*e.plugin,
            conn,
            hook = e.hook,
            kind = e.cause.kind(),
            "plugin call failed: {}",
            e.cause
        );
    }

    /// Plugin calls that failed, all kinds together.
    pub fn plugin_errors(&self) -> u64 {
        [
            &self.timeouts,
            &self.memory,
            &self.stack,
            &self.traps,
            &self.err_results,
            &self.instantiate,
        ]
        .iter()
        .map(|c| c.load(Relaxed))
        .sum()
    }

    pub fn log_summary(&self) {
        tracing::info!(
            accepted = self.accepted.load(Relaxed),
            refused = self.refused.load(Relaxed),
            messages = self.messages.load(Relaxed),
            oversize = self.oversize.load(Relaxed),
            plugin_errors = self.plugin_errors(),
            timeouts = self.timeouts.load(Relaxed),
            memory = self.memory.load(Relaxed),
            stack = self.stack.load(Relaxed),
            traps = self.traps.load(Relaxed),
            err_results = self.err_results.load(Relaxed),
            "stopped"
        );
    }
}
