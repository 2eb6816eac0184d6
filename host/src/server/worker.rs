//! A worker thread: an event loop over the connections it owns, running each complete message
//! through its own plugin pool, with backpressure and a bounded drain on shutdown.

use std::io;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::acceptor::NewConn;
use super::connection::{Conn, ReadResult};
use super::Shared;
use crate::config::OnError;
use crate::framing::Decoder;
use crate::plugin::bindings::Connection;
use crate::plugin::WorkerPool;

pub const WAKER: Token = Token(usize::MAX);

pub struct Worker {
    index: usize,
    poll: Poll,
    inbox: Receiver<NewConn>,
    conns: Slab<Conn>,
    pool: WorkerPool,
    decoder: Decoder,
    shared: Arc<Shared>,
    /// One read buffer for all connections: bytes go from here into a connection's input.
    scratch: Vec<u8>,
    /// Set once shutdown began: connections still open then are closed.
    drain_deadline: Option<Instant>,
    /// The chain's plugin names, for connection log lines.
    chain: String,
}

impl Worker {
    pub fn new(index: usize, poll: Poll, inbox: Receiver<NewConn>, shared: Arc<Shared>) -> Self {
        let cfg = &shared.config;
        let decoder = Decoder::new(cfg.framing, cfg.max_message_bytes);
        Worker {
            index,
            poll,
            inbox,
            conns: Slab::new(),
            pool: if cfg.native_echo {
                WorkerPool::native_echo(shared.plugins.clone())
            } else {
                WorkerPool::new(shared.plugins.clone(), cfg.isolation)
            },
            scratch: vec![0; decoder.read_size()],
            decoder,
            chain: shared
                .plugins
                .chain
                .iter()
                .map(|p| &*p.name)
                .collect::<Vec<_>>()
                .join(","),
            shared,
            drain_deadline: None,
        }
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self
                .drain_deadline
                .map(|d| d.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(worker = self.index, "event loop failed: {e}");
                self.shared.shutdown.trigger();
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKER => self.take_new_connections(),
                    Token(key) => {
                        if self.conns.contains(key) {
                            self.drive(key);
                        }
                    }
                }
            }
            if self.shared.shutdown.is_triggered() && self.drain_deadline.is_none() {
                self.begin_drain();
            }
            if let Some(deadline) = self.drain_deadline {
                if self.conns.is_empty() {
                    break;
                }
                if Instant::now() >= deadline {
                    let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
                    for key in keys {
                        self.finish(key, "shutdown timeout");
                    }
                    break;
                }
            }
        }
        // Connections handed over after the drain began never got a plugin call: just close them.
        while let Ok(nc) = self.inbox.try_recv() {
            drop(nc);
            self.shared.open.fetch_sub(1, SeqCst);
            self.shared.per_worker[self.index].fetch_sub(1, Relaxed);
        }
    }

    /// Shutdown: read what clients already sent, answer it, then close each connection once
    /// its replies are written (or at the deadline).
    fn begin_drain(&mut self) {
        self.drain_deadline = Some(Instant::now() + self.shared.config.shutdown_timeout);
        self.take_new_connections();
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.drive(key);
            // The first drive may have closed it (its client's close was still unread).
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            conn.done_reading = true;
            self.drive(key);
        }
    }

    fn take_new_connections(&mut self) {
        while let Ok(NewConn { mut stream, id }) = self.inbox.try_recv() {
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            let peer = stream
                .peer_addr()
                .map_or_else(|_| "unknown".into(), |a| a.to_string());
            let local = stream
                .local_addr()
                .map_or_else(|_| "unknown".into(), |a| a.to_string());
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                tracing::warn!(conn = id, %peer, "cannot watch connection: {e}");
                self.shared.open.fetch_sub(1, SeqCst);
                self.shared.per_worker[self.index].fetch_sub(1, Relaxed);
                continue;
            }
            tracing::info!(
                conn = id,
                %peer,
                plugins = %self.chain,
                worker = self.index,
                "connection opened"
            );
            let info = Connection { id, peer, local };
            let conn = entry.insert(Conn::new(stream, info));
            let (greetings, connected, res) = self.pool.on_connect(&conn.info, &mut conn.own);
            conn.connected = connected;
            for g in greetings {
                self.decoder.encode(&g, &mut conn.output);
            }
            match res {
                Ok(true) => conn.close_after_flush("plugin closed it"),
                Ok(false) => {}
                Err(e) => {
                    self.shared.stats.plugin_failed(&e, id);
                    conn.errors += 1;
                    conn.close_after_flush("on-connect failed");
                }
            }
            self.drive(key);
        }
    }

    /// Moves one connection forward as far as it can go now: write, handle, write, read, repeat.
    fn drive(&mut self, key: usize) {
        let max_out = self.shared.config.max_output_bytes;
        loop {
            if !self.flush(key) {
                return;
            }
            let held_back = self.handle_input(key);
            // Replies must leave now: with edge-triggered readiness no event may come to do it.
            if !self.flush(key) {
                return;
            }
            let conn = &mut self.conns[key];
            if held_back && conn.pending_output() <= max_out {
                // The client caught up: handle what backpressure held back before reading more.
                continue;
            }
            let can_read =
                !conn.done_reading && conn.closing.is_none() && conn.pending_output() <= max_out;
            if !can_read {
                break;
            }
            match conn.read_some(&mut self.scratch, self.decoder.read_size()) {
                Ok(ReadResult::Data) => continue,
                Ok(ReadResult::WouldBlock) => break,
                Ok(ReadResult::Eof) => conn.done_reading = true,
                Err(e) => {
                    tracing::debug!(conn = conn.info.id, "read failed: {e}");
                    return self.finish(key, "client went away");
                }
            }
        }
        let conn = &self.conns[key];
        if conn.pending_output() == 0 {
            if let Some(reason) = conn.closing {
                self.finish(key, reason);
            } else if conn.done_reading {
                let reason = if self.drain_deadline.is_some() {
                    "shutdown"
                } else {
                    "client closed"
                };
                self.finish(key, reason);
            }
        }
    }

    /// Writes what the socket takes; closes the connection and returns false if it is gone.
    fn flush(&mut self, key: usize) -> bool {
        let conn = &mut self.conns[key];
        match conn.flush() {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(conn = conn.info.id, "write failed: {e}");
                self.finish(key, "client went away");
                false
            }
        }
    }

    /// Runs every complete buffered message through the chain, stopping while the output is
    /// over its cap (backpressure) or once the connection is closing. Returns whether
    /// backpressure held messages back.
    fn handle_input(&mut self, key: usize) -> bool {
        let max_out = self.shared.config.max_output_bytes;
        let on_error = self.shared.config.on_error;
        let conn = &mut self.conns[key];
        let mut held_back = false;
        loop {
            if conn.closing.is_some() {
                break;
            }
            if conn.pending_output() > max_out {
                held_back = true;
                break;
            }
            let rest = &conn.input[conn.consumed..];
            let (range, used) = match self.decoder.decode(rest) {
                Ok(Some((range, used))) => (range, used),
                Ok(None) => match conn.done_reading.then(|| self.decoder.decode_at_eof(rest)) {
                    Some(Some(last)) => (0..last.len(), rest.len()),
                    _ => break,
                },
                Err(e) => {
                    tracing::warn!(conn = conn.info.id, peer = %conn.info.peer, "closing: {e}");
                    self.shared.stats.oversize.fetch_add(1, Relaxed);
                    conn.input.clear();
                    conn.consumed = 0;
                    conn.close_after_flush("message too large");
                    break;
                }
            };
            let start = conn.consumed;
            let message = &conn.input[start + range.start..start + range.end];
            let res = self.pool.on_message(&conn.info, &mut conn.own, message);
            conn.consumed += used;
            conn.messages += 1;
            match res {
                Ok(out) => {
                    if let Some(reply) = out.reply {
                        self.decoder.encode(&reply, &mut conn.output);
                    }
                    if out.close {
                        conn.close_after_flush("plugin closed it");
                    }
                }
                Err(e) => {
                    self.shared.stats.plugin_failed(&e, conn.info.id);
                    conn.errors += 1;
                    if on_error == OnError::Close {
                        conn.close_after_flush("plugin error");
                    }
                }
            }
        }
        conn.compact_input();
        held_back
    }

    /// Closes a connection: `on-disconnect`, the log line, and its slot in the counters.
    fn finish(&mut self, key: usize, reason: &'static str) {
        let mut conn = self.conns.remove(key);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        // Counted once per connection, not per message: a shared counter bumped by every worker
        // on every message would bounce its cache line between the cores.
        self.shared.stats.messages.fetch_add(conn.messages, Relaxed);
        for e in self
            .pool
            .on_disconnect(&conn.info, &mut conn.own, conn.connected)
        {
            self.shared.stats.plugin_failed(&e, conn.info.id);
        }
        tracing::info!(
            conn = conn.info.id,
            peer = %conn.info.peer,
            plugins = %self.chain,
            messages = conn.messages,
            errors = conn.errors,
            duration_ms = duration_ms(conn.opened.elapsed()),
            reason,
            "connection closed"
        );
        self.shared.open.fetch_sub(1, SeqCst);
        self.shared.per_worker[self.index].fetch_sub(1, Relaxed);
    }
}

fn duration_ms(d: Duration) -> u64 {
    d.as_millis() as u64
}
