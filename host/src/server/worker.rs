//! A worker thread: an event loop over the connections it owns, handing each whole message to its
//! own handler, with backpressure and a drain bounded by the shutdown deadline.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::acceptor::NewConn;
use super::connection::{Connection, Fill, Timeouts};
use super::handler::Handler;
use super::messaging::{Delivery, Messenger};
use super::stats::Close;
use super::Shared;
use crate::config::OnError;
use crate::framing::Codec;
use crate::metrics::WorkerMetrics;
use crate::plugin::bindings::Connection as ConnInfo;

pub const WAKER: Token = Token(usize::MAX);

/// One connection as its worker sees it: the bytes, and what the handler and the logs know.
struct Session<S> {
    io: Connection,
    /// What plugins are told about this connection.
    info: ConnInfo,
    /// The handler's own state for it (its instances under `--isolation connection`).
    state: S,
    /// The client's address, counted in `--max-connections-per-ip` while it is open.
    ip: Option<std::net::IpAddr>,
    /// How many stages of the chain accepted the connection (they get `on-disconnect`).
    connected: usize,
    opened: Instant,
    messages: u64,
    errors: u64,
}

pub struct Worker<H: Handler> {
    index: usize,
    poll: Poll,
    inbox: Receiver<NewConn>,
    /// Bytes and closes other connections sent to this worker's connections.
    deliveries: Receiver<Delivery>,
    messenger: Arc<Messenger>,
    sessions: Slab<Session<H::Session>>,
    /// Each session's slab key, by connection id (what deliveries name).
    by_id: HashMap<u64, usize>,
    handler: H,
    codec: Codec,
    shared: Arc<Shared>,
    /// One read buffer for all connections: bytes go from here into a connection's input.
    scratch: Vec<u8>,
    /// Set once shutdown began: connections still open then are closed.
    draining: Option<Instant>,
    /// The clock, read once per event batch.
    now: Instant,
    timeouts: Timeouts,
    /// How often connections are checked against `timeouts` and their buffered bytes summed.
    sweep_every: Duration,
    next_sweep: Instant,
    /// This worker's part of the metrics (the buffered-bytes gauge, here).
    metrics: Arc<WorkerMetrics>,
    /// The chain's plugin names, for connection log lines.
    chain: String,
    /// With `--proxy-protocol`: connections whose header is still being read.
    waiting: proxied::Waiting,
}

impl<H: Handler> Worker<H> {
    pub fn new(
        index: usize,
        poll: Poll,
        (inbox, deliveries): (Receiver<NewConn>, Receiver<Delivery>),
        shared: Arc<Shared>,
        messenger: Arc<Messenger>,
        handler: H,
    ) -> Self {
        let cfg = &shared.config;
        let codec = Codec::new(cfg.framing, cfg.max_message_bytes);
        let timeouts = Timeouts {
            idle: cfg.idle_timeout,
            message: cfg.message_timeout,
        };
        // A quarter of the shortest limit: a connection is closed at most a quarter late; at
        // least once a second, when the buffered-bytes gauge is summed too.
        let sweep_every = [timeouts.idle, timeouts.message]
            .into_iter()
            .flatten()
            .min()
            .map_or(Duration::from_secs(1), |d| {
                (d / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
            });
        Worker {
            metrics: shared.metrics.worker(index),
            index,
            poll,
            inbox,
            deliveries,
            messenger,
            sessions: Slab::new(),
            by_id: HashMap::new(),
            handler,
            scratch: vec![0; codec.read_size()],
            codec,
            chain: shared
                .plugins
                .chain
                .iter()
                .map(|p| &*p.name)
                .collect::<Vec<_>>()
                .join(","),
            shared,
            draining: None,
            now: Instant::now(),
            timeouts,
            next_sweep: Instant::now() + sweep_every,
            sweep_every,
            waiting: proxied::Waiting::default(),
        }
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let wake_at = self.draining.unwrap_or(self.next_sweep);
            let timeout = Some(wake_at.saturating_duration_since(Instant::now()));
            let polled = self.poll.poll(&mut events, timeout);
            self.now = Instant::now();
            if let Err(e) = polled {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(worker = self.index, "event loop failed: {e}");
                self.shared.shutdown.trigger();
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {
                        self.take_new_connections();
                        self.take_deliveries();
                    }
                    Token(key) if key >= proxied::FIRST_TOKEN => self.read_header(key),
                    Token(key) => {
                        if self.sessions.contains(key) {
                            self.drive(key);
                        }
                    }
                }
            }
            if self.now >= self.next_sweep {
                self.sweep();
                self.expire_headers();
                self.next_sweep = self.now + self.sweep_every;
            }
            if let (None, Some(deadline)) = (self.draining, self.shared.shutdown.deadline()) {
                self.begin_drain(deadline);
            }
            if let Some(deadline) = self.draining {
                if self.sessions.is_empty() {
                    break;
                }
                if Instant::now() >= deadline {
                    let keys: Vec<usize> = self.sessions.iter().map(|(k, _)| k).collect();
                    for key in keys {
                        self.finish(key, Close::ShutdownTimeout);
                    }
                    break;
                }
            }
        }
        self.metrics.set_buffered(0);
        // Connections handed over after the drain began never got a handler call: just close.
        let mut late = 0;
        while let Ok(nc) = self.inbox.try_recv() {
            self.shared.per_ip.release(nc.ip);
            late += 1;
        }
        self.forget(late, 0, Close::NotServed);
    }

    /// Shutdown: read what clients already sent, answer it, then close each connection once
    /// its replies are written (or at the deadline, fixed when shutdown was triggered).
    fn begin_drain(&mut self, deadline: Instant) {
        self.draining = Some(deadline);
        self.abandon_headers();
        self.take_new_connections();
        let keys: Vec<usize> = self.sessions.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.drive(key);
            // The first drive may have closed it (its client's close was still unread).
            let Some(s) = self.sessions.get_mut(key) else {
                continue;
            };
            s.io.stop_reading();
            self.drive(key);
        }
    }

    fn take_new_connections(&mut self) {
        while let Ok(nc) = self.inbox.try_recv() {
            if self.shared.config.proxy_protocol {
                self.await_header(nc);
            } else {
                self.open(nc, None);
            }
        }
    }

    /// Serves a new connection: `on-connect`, then its messages. `client` is the address a
    /// PROXY header gave, which plugins, logs and limits see instead of the socket's peer.
    fn open(&mut self, NewConn { mut stream, id, ip }: NewConn, client: Option<SocketAddr>) {
        let entry = self.sessions.vacant_entry();
        let key = entry.key();
        let peer = client
            .or_else(|| stream.peer_addr().ok())
            .map_or_else(|| "unknown".into(), |a| a.to_string());
        let local = stream
            .local_addr()
            .map_or_else(|_| "unknown".into(), |a| a.to_string());
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!(conn = id, %peer, "cannot watch connection: {e}");
            self.shared.per_ip.release(ip);
            self.forget(1, 0, Close::NotServed);
            return;
        }
        tracing::info!(
            conn = id,
            %peer,
            plugins = %self.chain,
            worker = self.index,
            "connection opened"
        );
        self.messenger.register(id, self.index, &peer, &local);
        self.by_id.insert(id, key);
        let max_output = self.shared.config.max_output_bytes;
        let s = entry.insert(Session {
            io: Connection::new(stream, self.codec, max_output),
            info: ConnInfo { id, peer, local },
            ip,
            state: H::Session::default(),
            connected: 0,
            opened: Instant::now(),
            messages: 0,
            errors: 0,
        });
        let (greetings, connected, res) = self.handler.on_connect(&s.info, &mut s.state);
        s.connected = connected;
        for g in greetings {
            s.io.reply(&g);
        }
        match res {
            Ok(true) => s.io.close_after_flush(Close::PluginClosed),
            Ok(false) => {}
            Err(e) => {
                self.shared.stats.plugin_failed(&e, id);
                s.errors += 1;
                s.io.close_after_flush(Close::ConnectFailed);
            }
        }
        self.drive(key);
    }

    /// Moves one connection forward as far as it can go now: handle what is buffered, write,
    /// read, repeat; closes it once it is over.
    fn drive(&mut self, key: usize) {
        loop {
            let held_back = self.handle_messages(key);
            if !self.sessions.contains(key) {
                // A delivery taken between two calls closed it.
                return;
            }
            // Replies must leave now: with edge-triggered readiness no event may come to do it.
            let s = &mut self.sessions[key];
            if let Err(e) = s.io.flush(self.now) {
                tracing::debug!(conn = s.info.id, "write failed: {e}");
                return self.finish(key, Close::ClientGone);
            }
            if held_back && !s.io.over_output_cap() {
                // The client caught up: answer what is buffered before reading more.
                continue;
            }
            if !s.io.wants_read() {
                // Over the output cap a writable event resumes it; closing, nothing more to read.
                break;
            }
            match s.io.fill(&mut self.scratch, self.now) {
                Ok(Fill::Data | Fill::Eof) => continue,
                Ok(Fill::WouldBlock) => break,
                Err(e) => {
                    tracing::debug!(conn = s.info.id, "read failed: {e}");
                    return self.finish(key, Close::ClientGone);
                }
            }
        }
        if let Some(reason) = self.sessions[key].io.finished(self.end_of_reading()) {
            self.finish(key, reason);
        }
    }

    /// Why a connection whose reading ended is closed once its replies are written.
    fn end_of_reading(&self) -> Close {
        if self.draining.is_some() {
            Close::Shutdown
        } else {
            Close::ClientClosed
        }
    }

    /// Hands every whole buffered message to the handler and queues its replies, until the
    /// connection has no whole message, is over its output cap, or is closing. Returns whether
    /// the output cap stopped it (backpressure), so messages may still be buffered.
    fn handle_messages(&mut self, key: usize) -> bool {
        let on_error = self.shared.config.on_error;
        loop {
            let s = &mut self.sessions[key];
            let message = match s.io.next_message(self.now) {
                Ok(Some(m)) => m,
                Ok(None) => return s.io.over_output_cap(),
                Err(e) => {
                    tracing::warn!(conn = s.info.id, peer = %s.info.peer, "closing: {e}");
                    return false;
                }
            };
            s.messages += 1;
            match self.handler.on_message(&s.info, &mut s.state, message) {
                Ok(out) => {
                    if let Some(reply) = out.reply {
                        s.io.reply(&reply);
                    }
                    if out.close {
                        s.io.close_after_flush(Close::PluginClosed);
                    }
                }
                Err(e) => {
                    self.shared.stats.plugin_failed(&e, s.info.id);
                    s.errors += 1;
                    if on_error == OnError::Close {
                        s.io.close_after_flush(Close::PluginError);
                    }
                }
            }
            // What the call sent to this worker's own connections is queued before the next
            // call, so bytes in flight to them stay bounded by one call's worth.
            if !self.deliveries.is_empty() {
                self.take_deliveries();
                if !self.sessions.contains(key) {
                    return false;
                }
            }
        }
    }

    /// Closes a connection: `on-disconnect`, the log line, and its slot in the counters.
    fn finish(&mut self, key: usize, reason: Close) {
        let mut s = self.sessions.remove(key);
        self.by_id.remove(&s.info.id);
        self.messenger.unregister(s.info.id);
        self.shared.per_ip.release(s.ip);
        let _ = self.poll.registry().deregister(s.io.stream_mut());
        for e in self
            .handler
            .on_disconnect(&s.info, &mut s.state, s.connected)
        {
            self.shared.stats.plugin_failed(&e, s.info.id);
        }
        tracing::info!(
            conn = s.info.id,
            peer = %s.info.peer,
            plugins = %self.chain,
            messages = s.messages,
            errors = s.errors,
            duration_ms = s.opened.elapsed().as_millis() as u64,
            reason = reason.text(),
            "connection closed"
        );
        self.forget(1, s.messages, reason);
    }

    /// `n` of this worker's connections are gone for `reason`: the counters stop counting them.
    fn forget(&self, n: usize, messages: u64, reason: Close) {
        if n > 0 {
            self.shared.per_worker[self.index].fetch_sub(n, Relaxed);
            self.shared.stats.closed(n, messages, reason);
        }
    }
}

mod proxied;
mod upkeep;
