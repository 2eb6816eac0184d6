//! What reaches a worker's connections besides their own bytes: what other connections send
//! them (deliveries, closes, slow consumers), and the clock (`--idle-timeout`,
//! `--message-timeout`, `--write-timeout`, `--hibernate-after`).

use std::time::Instant;

use super::super::connection::Expired;
use super::super::handler::Handler;
use super::super::messaging::Delivery;
use super::super::stats::Close;
use super::Worker;

impl<H: Handler> Worker<H> {
    /// Queues what other connections sent to this worker's connections and writes it, and
    /// closes those they asked to close; a receiver still over its output cap once it is flushed
    /// is a slow consumer and is closed at once, its queued output dropped.
    pub(super) fn take_deliveries(&mut self) {
        self.messenger.taking(self.index);
        while let Ok(delivery) = self.deliveries.try_recv() {
            let to = match &delivery {
                Delivery::Bytes { to, bytes } => {
                    self.messenger.taken(*to, bytes.len());
                    *to
                }
                Delivery::Close { to } | Delivery::SlowConsumer { to } => *to,
            };
            // The receiver may have closed since it was sent to.
            let Some(&key) = self.by_id.get(&to) else {
                continue;
            };
            let at_end = self.end_of_reading();
            let io = &mut self.sessions[key].io;
            match delivery {
                Delivery::Bytes { bytes, .. } => io.reply(&bytes),
                Delivery::Close { .. } => io.close_after_flush(Close::ClosedByAnother),
                Delivery::SlowConsumer { .. } => {
                    self.slow_consumer(key);
                    continue;
                }
            }
            // Only written here, never handled: a handler call must not start from inside
            // another (this runs between two calls of the worker's handler).
            let flushed = io.flush(self.now);
            self.sync(key);
            let io = &mut self.sessions[key].io;
            if let Err(e) = flushed {
                tracing::debug!(conn = to, "write failed: {e}");
                self.finish(key, Close::ClientGone);
            } else if io.over_output_cap() {
                self.slow_consumer(key);
            } else if let Some(reason) = io.finished(at_end) {
                self.finish(key, reason);
            }
        }
    }

    /// Closes the connections past a time limit (`--message-timeout`, `--idle-timeout`,
    /// `--write-timeout`), and publishes this worker's exact share of the buffered bytes.
    pub(super) fn sweep(&mut self) {
        let (now, limits) = (Instant::now(), self.timeouts);
        let late: Vec<(usize, Expired)> = (self.sessions.iter_mut())
            .filter_map(|(key, s)| {
                s.io.kernel_took_bytes(now);
                s.io.timed_out(now, limits).map(|why| (key, why))
            })
            .collect();
        for (key, why) in late {
            self.finish(key, why.reason());
        }
        if let Some(after) = self.hibernate_after {
            let mut dropped = 0;
            for (_, s) in self.sessions.iter_mut() {
                if s.io.quiet_for(now, after) {
                    dropped += self.handler.hibernate(&mut s.state);
                }
            }
            if dropped > 0 {
                tracing::debug!(worker = self.index, dropped, "quiet connections hibernated");
            }
        }
        // Exact at least once a sweep, whatever the drift allowed between.
        self.share.publish();
    }

    fn slow_consumer(&mut self, key: usize) {
        let s = &self.sessions[key];
        tracing::warn!(
            conn = s.info.id,
            peer = %s.info.peer,
            "closing a slow consumer: more than --max-output-bytes waits for it"
        );
        self.finish(key, Close::SlowConsumer);
    }
}
