//! Process-wide counters: what was served and what failed, logged per error and at shutdown,
//! and read as a typed [`Snapshot`] by embedders, tests and the metrics endpoint.
//!
//! How this relates to [`crate::metrics`]: `Stats` is the one count of connections (open,
//! accepted, refused, closed by [`Close`] reason), of failed calls by [`Cause`], and of thread
//! panics; `/metrics` exports these as they are, never counting them a second time. What
//! `Stats` does not count (per plugin and per stage: messages, bytes, call durations,
//! instances; state and messaging operations; buffered bytes) lives in `metrics`, on per-worker
//! counters. `Snapshot::messages` (counted when a connection closes, for the `stopped` line) is
//! not exported: the live count is the first stage's `sandport_plugin_messages_total`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use super::tls::HandshakeFailure;
use crate::plugin::{CallError, Cause};

/// Why a connection ended: the `reason` of its `connection closed` log line and the label of
/// `sandport_connections_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// The client closed its side and every reply was written.
    ClientClosed,
    /// A read or write failed (reset, broken pipe).
    ClientGone,
    /// A plugin's response asked to close.
    PluginClosed,
    /// A call failed and `--on-error close`.
    PluginError,
    /// `on-connect` failed.
    ConnectFailed,
    /// Another connection's plugin closed it (contract 0.2 messaging).
    ClosedByAnother,
    /// More than `--max-output-bytes` waited for it after a delivery.
    SlowConsumer,
    /// `--idle-timeout`.
    IdleTimeout,
    /// `--message-timeout`.
    MessageTimeout,
    /// Output waiting, none of it taken, for `--write-timeout`.
    WriteTimeout,
    /// Among the largest holders when the buffered bytes passed twice `--max-buffered-bytes`.
    OverBudget,
    /// A message over `--max-message-bytes`.
    Oversize,
    /// Drained at shutdown, its replies written.
    Shutdown,
    /// Still open at the shutdown deadline.
    ShutdownTimeout,
    /// Accepted but never served: handed over as shutdown began, or not watchable.
    NotServed,
    /// Its worker panicked.
    WorkerPanic,
    /// `--proxy-protocol`: the peer is not in `--trusted-proxies`.
    ProxyUntrusted,
    /// `--proxy-protocol`: no PROXY header, a malformed or too long one, or the client closed
    /// before it was whole.
    ProxyHeaderInvalid,
    /// `--proxy-protocol`: the header was not whole within its deadline.
    ProxyHeaderTimeout,
    /// `--proxy-protocol`: `--max-connections-per-ip` were open from the address in the header.
    PerIpLimit,
    /// `--tls-cert`: the TLS handshake failed (`sandport_tls_handshake_failures_total` says
    /// why).
    TlsHandshakeFailed,
    /// `--tls-cert`: the TLS handshake was not done within its deadline.
    TlsHandshakeTimeout,
}

impl Close {
    pub const ALL: [Close; 22] = [
        Close::ClientClosed,
        Close::ClientGone,
        Close::PluginClosed,
        Close::PluginError,
        Close::ConnectFailed,
        Close::ClosedByAnother,
        Close::SlowConsumer,
        Close::IdleTimeout,
        Close::MessageTimeout,
        Close::WriteTimeout,
        Close::OverBudget,
        Close::Oversize,
        Close::Shutdown,
        Close::ShutdownTimeout,
        Close::NotServed,
        Close::WorkerPanic,
        Close::ProxyUntrusted,
        Close::ProxyHeaderInvalid,
        Close::ProxyHeaderTimeout,
        Close::PerIpLimit,
        Close::TlsHandshakeFailed,
        Close::TlsHandshakeTimeout,
    ];

    /// The `reason` field of the `connection closed` log line.
    pub fn text(self) -> &'static str {
        match self {
            Close::ClientClosed => "client closed",
            Close::ClientGone => "client went away",
            Close::PluginClosed => "plugin closed it",
            Close::PluginError => "plugin error",
            Close::ConnectFailed => "on-connect failed",
            Close::ClosedByAnother => "closed by another connection",
            Close::SlowConsumer => "slow consumer",
            Close::IdleTimeout => "idle timeout",
            Close::MessageTimeout => "message timeout",
            Close::WriteTimeout => "write timeout",
            Close::OverBudget => "over the buffered-bytes budget",
            Close::Oversize => "message too large",
            Close::Shutdown => "shutdown",
            Close::ShutdownTimeout => "shutdown timeout",
            Close::NotServed => "not served",
            Close::WorkerPanic => "worker panicked",
            Close::ProxyUntrusted => "PROXY header from an untrusted address",
            Close::ProxyHeaderInvalid => "bad PROXY header",
            Close::ProxyHeaderTimeout => "PROXY header timeout",
            Close::PerIpLimit => "--max-connections-per-ip reached",
            Close::TlsHandshakeFailed => "TLS handshake failed",
            Close::TlsHandshakeTimeout => "TLS handshake timeout",
        }
    }

    /// The metric label: the log text in snake case.
    pub fn label(self) -> &'static str {
        match self {
            Close::ClientClosed => "client_closed",
            Close::ClientGone => "client_went_away",
            Close::PluginClosed => "plugin_closed",
            Close::PluginError => "plugin_error",
            Close::ConnectFailed => "on_connect_failed",
            Close::ClosedByAnother => "closed_by_another_connection",
            Close::SlowConsumer => "slow_consumer",
            Close::IdleTimeout => "idle_timeout",
            Close::MessageTimeout => "message_timeout",
            Close::WriteTimeout => "write_timeout",
            Close::OverBudget => "over_budget",
            Close::Oversize => "oversize",
            Close::Shutdown => "shutdown",
            Close::ShutdownTimeout => "shutdown_timeout",
            Close::NotServed => "not_served",
            Close::WorkerPanic => "worker_panic",
            Close::ProxyUntrusted => "proxy_untrusted",
            Close::ProxyHeaderInvalid => "proxy_header_invalid",
            Close::ProxyHeaderTimeout => "proxy_header_timeout",
            Close::PerIpLimit => "per_ip_limit",
            Close::TlsHandshakeFailed => "tls_handshake_failed",
            Close::TlsHandshakeTimeout => "tls_handshake_timeout",
        }
    }
}

/// The failed-call causes counted, in [`Cause::kind`] order of the `plugin_errors` family.
pub const CAUSES: [&str; 8] = [
    "timeout",
    "memory",
    "stack",
    "trap",
    "err",
    "instantiate",
    "reply-too-large",
    "cutoff",
];

/// Counters shared by the acceptor and the workers; relaxed atomics, off the hot path's locks.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections open now, across workers: checked against `--max-connections` at accept.
    pub(crate) open: AtomicUsize,
    accepted: AtomicU64,
    refused: AtomicU64,
    /// Connections closed, by [`Close`] reason (its index in [`Close::ALL`]).
    closed_by: [AtomicU64; Close::ALL.len()],
    messages: AtomicU64,
    /// Failed calls, by cause (index in [`CAUSES`]).
    failed: [AtomicU64; CAUSES.len()],
    thread_panics: AtomicU64,
    /// `--tls-cert`: handshakes done, and failed by [`HandshakeFailure`] (its index in `ALL`).
    tls_handshakes: AtomicU64,
    tls_failed: [AtomicU64; HandshakeFailure::ALL.len()],
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
    /// Closed connections by reason, in [`Close::ALL`] order (see [`Snapshot::closed_for`]).
    pub closed_by: [u64; Close::ALL.len()],
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
    /// Connections closed by `--write-timeout` (a client that takes none of its replies).
    pub write_timeouts: u64,
    /// Connections shed as the largest holders past twice `--max-buffered-bytes`.
    pub over_budget: u64,
    /// Server threads (workers, the acceptor) that panicked: the server then stops and exits 1.
    pub thread_panics: u64,
    /// TLS handshakes done.
    pub tls_handshakes: u64,
    /// TLS handshakes failed, in [`HandshakeFailure::ALL`] order.
    pub tls_failed: [u64; HandshakeFailure::ALL.len()],
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

    /// TLS handshakes that failed for `why`.
    pub fn tls_failed_for(&self, why: HandshakeFailure) -> u64 {
        self.tls_failed[why as usize]
    }

    /// Connections closed for `reason`.
    pub fn closed_for(&self, reason: Close) -> u64 {
        self.closed_by[reason as usize]
    }

    /// Failed calls of the cause whose [`Cause::kind`] is `kind` (`cutoff` included).
    pub fn failed_by_kind(&self, kind: &str) -> u64 {
        let i = CAUSES.iter().position(|k| *k == kind);
        let all = [
            self.timeouts,
            self.memory,
            self.stack,
            self.traps,
            self.err_results,
            self.instantiate,
            self.replies_too_large,
            self.cut_off,
        ];
        i.map_or(0, |i| all[i])
    }
}

impl Stats {
    pub fn snapshot(&self) -> Snapshot {
        let closed_by = self.closed_by.each_ref().map(|c| c.load(Relaxed));
        let f = self.failed.each_ref().map(|c| c.load(Relaxed));
        Snapshot {
            open: self.open.load(Relaxed),
            accepted: self.accepted.load(Relaxed),
            refused: self.refused.load(Relaxed),
            closed: closed_by.iter().sum(),
            closed_by,
            messages: self.messages.load(Relaxed),
            oversize: closed_by[Close::Oversize as usize],
            timeouts: f[0],
            memory: f[1],
            stack: f[2],
            traps: f[3],
            err_results: f[4],
            instantiate: f[5],
            replies_too_large: f[6],
            cut_off: f[7],
            slow_consumers: closed_by[Close::SlowConsumer as usize],
            idle_timeouts: closed_by[Close::IdleTimeout as usize],
            message_timeouts: closed_by[Close::MessageTimeout as usize],
            write_timeouts: closed_by[Close::WriteTimeout as usize],
            over_budget: closed_by[Close::OverBudget as usize],
            thread_panics: self.thread_panics.load(Relaxed),
            tls_handshakes: self.tls_handshakes.load(Relaxed),
            tls_failed: self.tls_failed.each_ref().map(|c| c.load(Relaxed)),
        }
    }

    pub(crate) fn tls_handshake_done(&self) {
        self.tls_handshakes.fetch_add(1, Relaxed);
    }

    pub(crate) fn tls_handshake_failed(&self, why: HandshakeFailure) {
        self.tls_failed[why as usize].fetch_add(1, Relaxed);
    }

    /// A connection was taken off the listener: it is open until [`Stats::closed`].
    pub(crate) fn accepted(&self) {
        self.open.fetch_add(1, Relaxed);
        self.accepted.fetch_add(1, Relaxed);
    }

    pub(crate) fn refused(&self) {
        self.refused.fetch_add(1, Relaxed);
    }

    /// `n` connections ended for `reason`, having handled `messages` messages between them.
    /// Counted once per connection, not per message: a shared counter bumped by every worker
    /// on every message would bounce its cache line between the cores.
    pub(crate) fn closed(&self, n: usize, messages: u64, reason: Close) {
        self.open.fetch_sub(n, Relaxed);
        self.closed_by[reason as usize].fetch_add(n as u64, Relaxed);
        self.messages.fetch_add(messages, Relaxed);
    }

    pub(crate) fn thread_panicked(&self) {
        self.thread_panics.fetch_add(1, Relaxed);
    }

    /// Logs a failed plugin call with its cause and counts it by kind. A hook shutdown did not
    /// let start is only counted: at a shutdown timeout there is one per connection left.
    pub(crate) fn plugin_failed(&self, e: &CallError, conn: u64) {
        let kind = e.cause.kind();
        if let Some(i) = CAUSES.iter().position(|k| *k == kind) {
            self.failed[i].fetch_add(1, Relaxed);
        }
        if let Cause::CutOff = e.cause {
            tracing::debug!(plugin = &*e.plugin, conn, hook = e.hook, "{}", e.cause);
            return;
        }
        tracing::warn!(
            plugin = &*e.plugin,
            conn,
            hook = e.hook,
            kind,
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
            write_timeouts = s.write_timeouts,
            over_budget = s.over_budget,
            thread_panics = s.thread_panics,
            "stopped"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_close_reason_and_cause_has_its_own_slot() {
        for (i, c) in Close::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "{c:?} out of order in Close::ALL");
        }
        let labels: std::collections::BTreeSet<_> = Close::ALL.iter().map(|c| c.label()).collect();
        assert_eq!(labels.len(), Close::ALL.len());
        let causes = [
            Cause::Timeout,
            Cause::MemoryLimit,
            Cause::StackOverflow,
            Cause::Trap(String::new()),
            Cause::Returned(String::new()),
            Cause::Instantiate(String::new()),
            Cause::ReplyTooLarge { size: 2, max: 1 },
            Cause::CutOff,
        ];
        let kinds: Vec<_> = causes.iter().map(Cause::kind).collect();
        assert_eq!(kinds, CAUSES, "CAUSES follows Cause::kind()");
    }
}
