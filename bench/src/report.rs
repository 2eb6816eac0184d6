//! The figures of one `sandport-load` run: printed as one JSON object by `--json`, read back by
//! `bench-suite`.

use serde::{Deserialize, Serialize};

use crate::Framing;

/// Everything one load run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadReport {
    /// The server address the clients connected to.
    pub addr: String,
    /// Clients sending messages.
    pub connections: usize,
    /// Connect-only clients that stayed silent.
    pub idle: usize,
    /// Messages in flight per active connection (1: request/response ping-pong).
    pub pipeline: usize,
    /// Bytes per message on the wire for `line` (newline included), payload bytes for `length`.
    pub size: usize,
    pub framing: Framing,
    /// Client threads, each driving its share of the sockets with one mio event loop.
    pub threads: usize,
    /// Distinct 127.0.0.x source addresses the connections were spread over.
    pub source_addrs: usize,
    /// Warm-up before measuring, seconds (excluded from every figure below).
    pub warmup_secs: f64,
    /// Length of the measured window, seconds.
    pub measured_secs: f64,
    /// Time taken to open every connection, seconds.
    pub connect_secs: f64,
    /// Replies received and checked for messages sent in the measured window.
    pub messages: u64,
    /// `messages` / `measured_secs`.
    pub msgs_per_sec: f64,
    /// Latency from sending a message to receiving its whole reply, microseconds.
    pub latency_us: Latency,
    /// Replies checked over the whole run, warm-up and drain included.
    pub replies_checked: u64,
    pub errors: Errors,
    /// Active connections still open at the end.
    pub active_open_at_end: usize,
    /// Idle connections still open at the end.
    pub idle_open_at_end: usize,
    /// The first few error messages, for the log.
    pub error_samples: Vec<String>,
}

/// Latency percentiles, microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
}

/// What went wrong, by kind.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Errors {
    /// Connections refused, timed out or failed while connecting.
    pub connect_failed: u64,
    /// Active connections that failed with a read or write error (reset, broken pipe).
    pub reset: u64,
    /// Active connections the server closed while replies were expected.
    pub closed: u64,
    /// Idle connections the server closed or reset.
    pub idle_closed: u64,
    /// Replies that did not arrive within `--timeout` (the connection is then dropped).
    pub timeouts: u64,
    /// Replies whose content was not the message sent, and bytes nobody asked for.
    pub wrong_replies: u64,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.connect_failed
            + self.reset
            + self.closed
            + self.idle_closed
            + self.timeouts
            + self.wrong_replies
    }

    pub fn add(&mut self, o: &Errors) {
        self.connect_failed += o.connect_failed;
        self.reset += o.reset;
        self.closed += o.closed;
        self.idle_closed += o.idle_closed;
        self.timeouts += o.timeouts;
        self.wrong_replies += o.wrong_replies;
    }

    /// `connect_failed=3 reset=1`, or `none`.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = [
            ("connect_failed", self.connect_failed),
            ("reset", self.reset),
            ("closed", self.closed),
            ("idle_closed", self.idle_closed),
            ("timeouts", self.timeouts),
            ("wrong_replies", self.wrong_replies),
        ]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(" ")
        }
    }
}
