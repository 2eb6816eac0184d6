//! One connection's turn on its worker: how much it may read and handle before the worker's
//! other connections get theirs.
//!
//! Without a bound, a worker served one connection for as long as it had input: a client whose
//! next message was always there before its plugin call ended (ping-pong against a fresh Python
//! instance per message, 400 us, or any pipelining client) held the worker while its other
//! connections waited (Python under `--isolation message`: p99 93 ms against a p50 of 0.4 ms,
//! bench/PROFILES.md). A connection whose turn ends with input perhaps left is driven again
//! after the worker's next round of events.

use std::time::{Duration, Instant};

/// Reads that brought data, per turn: after one, the client's next message waits for the others.
const READS: u32 = 1;
/// Messages handled per turn, however cheap: bounds a pipelined batch.
const MESSAGES: u32 = 64;
/// A turn ends after the message that takes it past this, however few it handled.
const TIME: Duration = Duration::from_micros(500);

pub struct Turn {
    started: Instant,
    reads: u32,
    messages: u32,
}

impl Turn {
    pub fn new() -> Turn {
        Turn {
            started: Instant::now(),
            reads: 0,
            messages: 0,
        }
    }

    /// Counts a read that brought data.
    pub fn read(&mut self) {
        self.reads += 1;
    }

    /// Whether the connection may read again this turn.
    pub fn may_read(&self) -> bool {
        self.reads < READS
    }

    /// Counts a handled message; false once the turn is used up.
    pub fn handled(&mut self) -> bool {
        self.messages += 1;
        self.messages < MESSAGES && self.started.elapsed() < TIME
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turn_reads_once_and_handles_a_bounded_batch() {
        let mut t = Turn::new();
        assert!(t.may_read());
        t.read();
        assert!(!t.may_read());
        let mut n = 1;
        while t.handled() {
            n += 1;
        }
        assert!(n <= MESSAGES, "{n} messages in one turn");
    }

    #[test]
    fn a_slow_message_ends_the_turn() {
        let mut t = Turn::new();
        t.started -= TIME;
        assert!(!t.handled());
    }
}
