//! Process-wide counters: what was served and what failed, logged per error and at shutdown,
//! and read as a typed [`Snapshot`] by embedders and tests.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use crate::plugin::{CallError, Cause};

/// Counters shared by the acceptor and the workers; relaxed atomics, off the hot path's locks.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections open now, across workers: checked against `--max-connections` at accept.
    pub(crate) open: AtomicUsize,
    accepted: AtomicU64,
    refused: AtomicU64,
    closed: AtomicU64,
    messages: AtomicU64,
    oversize: AtomicU64,
    timeouts: AtomicU64,
    memory: AtomicU64,
    stack: AtomicU64,
    traps: AtomicU64,
    err_results: AtomicU64,
    instantiate: AtomicU64,
    replies_too_large: AtomicU64,
    cut_off: AtomicU64,
    slow_consumers: AtomicU64,
    idle_timeouts: AtomicU64,
    message_timeouts: AtomicU64,
    thread_panics: AtomicU64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Connections open now.
    pub open: usize,
    /// Connections taken off the listener and handed to a worker.
    pub accepted: u64,
    /// Connections closed at once because `--max-connections` (or, from their address,
    /// `--max-connections-per-ip`) were open.
    pub refused: u64,
    /// Accepted connections that have ended, for any reason (a worker's panic included).
    pub closed: u64,
    /// Messages handed to the handler, counted when their connection closes.
    pub messages: u64,
    /// Connections closed for a message over `--max-message-bytes`.
    pub oversize: u64,
    /// Failed plugin calls, by cause.
    pub timeouts: u64,
    pub memory: u64,
    pub stack: u64,
    pub traps: u64,
    pub err_results: u64,
    pub instantiate: u64,
    pub replies_too_large: u64,
    /// Hooks not called because the shutdown deadline had passed (not plugin errors).
    pub cut_off: u64,
    /// Connections closed because more than `--max-output-bytes` waited for them.
    pub slow_consumers: u64,
    /// Connections closed by `--idle-timeout`.
    pub idle_timeouts: u64,
    /// Connections closed by `--message-timeout` (a message arriving too slowly).
    pub message_timeouts: u64,
    /// Server threads (workers, the acceptor) that panicked: the server then stops and exits 1.
    pub thread_panics: u64,
}

impl Snapshot {
    /// Plugin calls that failed, all causes together.
    pub fn plugin_errors(&self) -> u64 {
        self.timeouts
            + self.memory
            + self.stack
            + self.traps
            + self.err_results
            + self.instantiate
            + self.replies_too_large
    }
}

impl Stats {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            open: self.open.load(Relaxed),
            accepted: self.accepted.load(Relaxed),
            refused: self.refused.load(Relaxed),
            closed: self.closed.load(Relaxed),
            messages: self.messages.load(Relaxed),
            oversize: self.oversize.load(Relaxed),
            timeouts: self.timeouts.load(Relaxed),
            memory: self.memory.load(Relaxed),
            stack: self.stack.load(Relaxed),
            traps: self.traps.load(Relaxed),
            err_results: self.err_results.load(Relaxed),
            instantiate: self.instantiate.load(Relaxed),
            replies_too_large: self.replies_too_large.load(Relaxed),
            cut_off: self.cut_off.load(Relaxed),
            slow_consumers: self.slow_consumers.load(Relaxed),
            idle_timeouts: self.idle_timeouts.load(Relaxed),
            message_timeouts: self.message_timeouts.load(Relaxed),
            thread_panics: self.thread_panics.load(Relaxed),
        }
    }

    /// A connection was taken off the listener: it is open until [`Stats::closed`].
    pub(crate) fn accepted(&self) {
        self.open.fetch_add(1, Relaxed);
        self.accepted.fetch_add(1, Relaxed);
    }

    pub(crate) fn refused(&self) {
        self.refused.fetch_add(1, Relaxed);
    }

    /// `n` connections ended, having handled `messages` messages between them. Counted once
    /// per connection, not per message: a shared counter bumped by every worker on every
    /// message would bounce its cache line between the cores.
    pub(crate) fn closed(&self, n: usize, messages: u64) {
        self.open.fetch_sub(n, Relaxed);
        self.closed.fetch_add(n as u64, Relaxed);
        self.messages.fetch_add(messages, Relaxed);
    }

    /// A connection was closed by `--idle-timeout` (`idle`) or `--message-timeout`.
    pub(crate) fn timed_out(&self, idle: bool) {
        let counter = if idle {
            &self.idle_timeouts
        } else {
            &self.message_timeouts
        };
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn slow_consumer(&self) {
        self.slow_consumers.fetch_add(1, Relaxed);
    }

    pub(crate) fn oversize(&self) {
        self.oversize.fetch_add(1, Relaxed);
    }

    pub(crate) fn thread_panicked(&self) {
        self.thread_panics.fetch_add(1, Relaxed);
    }

    /// Logs a failed plugin call with its cause and counts it by kind. A hook shutdown did not
    /// let start is only counted: at a shutdown timeout there is one per connection left.
    pub(crate) fn plugin_failed(&self, e: &CallError, conn: u64) {
        let counter = match e.cause {
            Cause::CutOff => {
                self.cut_off.fetch_add(1, Relaxed);
                tracing::debug!(plugin = &*e.plugin, conn, hook = e.hook, "{}", e.cause);
                return;
            }
            Cause::Timeout => &self.timeouts,
            Cause::MemoryLimit => &self.memory,
            Cause::StackOverflow => &self.stack,
            Cause::Trap(_) => &self.traps,
            Cause::Returned(_) => &self.err_results,
            Cause::Instantiate(_) => &self.instantiate,
            Cause::ReplyTooLarge { .. } => &self.replies_too_large,
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

    pub(crate) fn log_summary(&self) {
        let s = self.snapshot();
        tracing::info!(
            accepted = s.accepted,
            refused = s.refused,
            messages = s.messages,
            oversize = s.oversize,
            plugin_errors = s.plugin_errors(),
            timeouts = s.timeouts,
            memory = s.memory,
            stack = s.stack,
            traps = s.traps,
            err_results = s.err_results,
            cut_off = s.cut_off,
            slow_consumers = s.slow_consumers,
            idle_timeouts = s.idle_timeouts,
            message_timeouts = s.message_timeouts,
            thread_panics = s.thread_panics,
            "stopped"
        );
    }
}
