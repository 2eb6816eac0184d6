//! A worker thread: an event loop over the connections it owns, handing each whole message to its
//! own handler, with backpressure and a drain bounded by the shutdown deadline.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::{Events, Poll, Token};
use slab::Slab;

use super::acceptor::NewConn;
use super::budget::Share;
use super::connection::{Connection, Fill, Timeouts};
use super::handler::Handler;
use super::messaging::{Delivery, Messenger};
use super::stats::Close;
use super::Shared;
use crate::config::OnError;
use crate::framing::Codec;
use crate::metrics::WorkerMetrics;
use crate::plugin::bindings::Connection as ConnInfo;
use crate::plugin::Outcome;
use crate::record::Event;

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
    /// The bytes its worker's budget share counts for it.
    counted: usize,
    /// Stopped reading for the buffered-bytes budget (and listed in `Worker::paused`).
    paused: bool,
    /// Whether its events are recorded (`--record`): until one is dropped, so that what is
    /// recorded of a session is whole.
    recorded: bool,
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
    /// Quiet connections give up their instances after this long (`--hibernate-after`).
    hibernate_after: Option<Duration>,
    /// How often connections are checked against `timeouts` and their buffered bytes summed.
    sweep_every: Duration,
    next_sweep: Instant,
    /// This worker's part of the metrics (the buffered-bytes gauge, here).
    metrics: Arc<WorkerMetrics>,
    /// The chain's plugin names, for connection log lines, and the generation they are of.
    chain: (u64, String),
    /// This worker's part of the buffered bytes, against `--max-buffered-bytes`.
    share: Share,
    /// Connections paused for the budget: nothing wakes them when other connections (of any
    /// worker) drain, so they are driven again every `RETRY_PAUSED`.
    paused: Vec<usize>,
    retry_at: Instant,
    /// Whether this worker has said the budget is over (said once until it is under again).
    over_budget: bool,
    /// When a shedding scan last left the sum over twice the budget: the next waits a moment.
    shed_at: Instant,
    /// With `--proxy-protocol`: connections whose header is still being read.
    waiting: proxied::Waiting,
    /// With `--tls-cert`: connections whose TLS handshake is not done yet.
    handshakes: handshake::Handshakes,
    /// Connections whose turn ended with input perhaps left unread: driven again after the
    /// next round of events, so that one busy client cannot hold its worker.
    again: Vec<usize>,
}

/// How long, in the drain, a new connection that has sent nothing yet is read for its first
/// message: longer than a client's first write takes after `connect`, short enough that idle
/// clients do not hold a shutdown (Go spares new connections for 5 s; our drain is 5 s).
const FIRST_MESSAGE_GRACE: Duration = Duration::from_secs(1);

/// Whether a connection with `messages` so far, opened at `opened`, is still read in the drain.
fn spared(messages: u64, opened: Instant) -> bool {
    messages == 0 && opened.elapsed() < FIRST_MESSAGE_GRACE
}

/// How often connections paused for the budget try again.
const RETRY_PAUSED: Duration = Duration::from_millis(20);
/// The least time between two shedding scans of one worker.
const SHED_EVERY: Duration = Duration::from_millis(5);

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
            write: cfg.write_timeout,
        };
        // A quarter of the shortest limit: a connection is closed at most a quarter late; at
        // least once a second, when the buffered-bytes gauge is summed too.
        let sweep_every = [
            timeouts.idle,
            timeouts.message,
            timeouts.write,
            cfg.hibernate_after,
        ]
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
            hibernate_after: cfg.hibernate_after,
            scratch: vec![0; codec.read_size()],
            codec,
            share: Share::new(shared.budget.clone()),
            paused: Vec::new(),
            retry_at: Instant::now(),
            over_budget: false,
            shed_at: Instant::now() - SHED_EVERY,
            chain: (u64::MAX, String::new()),
            shared,
            draining: None,
            now: Instant::now(),
            timeouts,
            next_sweep: Instant::now() + sweep_every,
            sweep_every,
            waiting: proxied::Waiting::default(),
            handshakes: handshake::Handshakes::default(),
            again: Vec::new(),
        }
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let mut wake_at = match self.draining {
                // Often enough to end the grace of connections spared for their first message.
                Some(deadline) => deadline.min(self.now + FIRST_MESSAGE_GRACE / 4),
                None => self.next_sweep,
            };
            if !self.paused.is_empty() {
                wake_at = wake_at.min(self.retry_at);
            }
            // Connections left with input to read take their next turn after this round's events.
            let again = std::mem::take(&mut self.again);
            let timeout = match again.is_empty() {
                true => Some(wake_at.saturating_duration_since(Instant::now())),
                false => Some(Duration::ZERO),
            };
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
                    Token(key) if key >= handshake::FIRST_TOKEN => self.shake(key),
                    Token(key) => {
                        if self.sessions.contains(key) {
                            self.drive(key);
                        }
                    }
                }
            }
            for key in again {
                // A key freed and reused meanwhile is driven once for nothing: a read that blocks.
                if self.sessions.contains(key) {
                    self.drive(key);
                }
            }
            if !self.paused.is_empty() && self.now >= self.retry_at {
                self.retry_paused();
            }
            if self.now >= self.next_sweep {
                self.sweep();
                self.expire_headers();
                self.expire_handshakes();
                self.next_sweep = self.now + self.sweep_every;
            }
            if let (None, Some(deadline)) = (self.draining, self.shared.shutdown.deadline()) {
                self.begin_drain(deadline);
            }
            if let Some(deadline) = self.draining {
                self.end_grace();
                if self.sessions.is_empty() && !self.inbox.is_empty() {
                    // Handed over by the acceptor as it took its queue (no wake may be left).
                    self.take_new_connections();
                }
                if self.sessions.is_empty() && !self.shared.accepting.load(SeqCst) {
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
        self.abandon_handshakes();
        self.take_new_connections();
        let keys: Vec<usize> = self.sessions.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.drive(key);
            // The first drive may have closed it (its client's close was still unread).
            let Some(s) = self.sessions.get_mut(key) else {
                continue;
            };
            if !spared(s.messages, s.opened) {
                s.io.stop_reading();
                self.drive(key);
            }
        }
    }

    /// In the drain: connections spared for their first message that sent none within the
    /// grace stop reading, and close once their replies (greetings) are written.
    fn end_grace(&mut self) {
        let over: Vec<usize> = (self.sessions.iter())
            .filter(|(_, s)| s.messages == 0 && !spared(0, s.opened))
            .map(|(k, _)| k)
            .collect();
        for key in over {
            self.sessions[key].io.stop_reading();
            self.drive(key);
        }
    }

    /// In the drain, a connection stops reading once it has had a message and read what was
    /// there. One that has had none yet, opened less than `FIRST_MESSAGE_GRACE` ago, is read
    /// until its first (as Go's `Server.Shutdown` spares new connections): its client saw
    /// `connect` succeed a moment ago, and its first message may be on the wire, so closing it
    /// would lose that message. An older quiet one is idle, and must not hold the drain.
    fn stop_reading_if_drained(&mut self, key: usize) {
        let s = &self.sessions[key];
        if self.draining.is_some() && !spared(s.messages, s.opened) {
            self.sessions[key].io.stop_reading();
        }
    }

    /// Moves one connection forward as far as it can go now: handle what is buffered, write,
    /// read, repeat; closes it once it is over.
    fn drive(&mut self, key: usize) {
        let mut turn = Turn::new();
        loop {
            let handled = self.handle_messages(key, &mut turn);
            if !self.sessions.contains(key) {
                // A delivery taken between two calls closed it.
                return;
            }
            // Replies must leave now: with edge-triggered readiness no event may come to do it.
            let s = &mut self.sessions[key];
            let flushed = s.io.flush(self.now);
            self.sync(key);
            if let Err(e) = flushed {
                tracing::debug!(conn = self.sessions[key].info.id, "write failed: {e}");
                return self.finish(key, Close::ClientGone);
            }
            let pressure = self.pressure();
            let s = &mut self.sessions[key];
            if pressure.holds_back(s.counted) {
                // Over the budget and holding more than its share: only writes go on, until it
                // drains or the others do.
                self.pause(key);
                break;
            }
            s.paused = false;
            if handled == Handled::TurnOver {
                // Messages may be left: it is not over, whatever its reading says.
                return self.again.push(key);
            }
            if handled == Handled::HeldBack && !s.io.over_output_cap() {
                // The client caught up: answer what is buffered before reading more.
                continue;
            }
            if !s.io.wants_read() {
                // Over the output cap a writable event resumes it; closing, nothing more to read.
                break;
            }
            if !turn.may_read() {
                // Edge-triggered: no event may come for what is already waiting.
                return self.again.push(key);
            }
            let filled = s.io.fill(&mut self.scratch, self.now);
            self.sync(key);
            match filled {
                Ok(Fill::Data) => {
                    turn.read();
                    continue;
                }
                Ok(Fill::Eof) => continue,
                Ok(Fill::WouldBlock) => {
                    self.stop_reading_if_drained(key);
                    break;
                }
                Err(e) => {
                    tracing::debug!(conn = self.sessions[key].info.id, "read failed: {e}");
                    return self.finish(key, Close::ClientGone);
                }
            }
        }
        if let Some(reason) = self.sessions[key].io.finished(self.end_of_reading()) {
            self.finish(key, reason);
        }
        if self.share.budget().over_hard() {
            self.shed();
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
    fn handle_messages(&mut self, key: usize, turn: &mut Turn) -> Handled {
        let on_error = self.shared.config.on_error;
        loop {
            let pressure = self.pressure();
            let s = &mut self.sessions[key];
            if pressure.holds_back(s.counted) {
                return Handled::HeldBack;
            }
            let message = match s.io.next_message(self.now) {
                Ok(Some(m)) => m,
                Ok(None) => {
                    return match s.io.over_output_cap() {
                        true => Handled::HeldBack,
                        false => Handled::All,
                    }
                }
                Err(e) => {
                    tracing::warn!(conn = s.info.id, peer = %s.info.peer, "closing: {e}");
                    return Handled::All;
                }
            };
            s.messages += 1;
            let recorder = self.shared.recorder.as_ref().filter(|_| s.recorded);
            if let Some(r) = recorder {
                s.recorded = r.record(s.info.id, Event::Message(message.to_vec()));
            }
            let res = self.handler.on_message(&s.info, &mut s.state, message);
            if let Some(r) = recorder.filter(|_| s.recorded) {
                let outcome = match &res {
                    Ok(Outcome { reply: Some(b), .. }) => Event::Reply(b.clone()),
                    Ok(Outcome { reply: None, .. }) => Event::NoReply,
                    Err(e) => Event::Failed(e.cause.kind().to_string()),
                };
                s.recorded = r.record(s.info.id, outcome);
            }
            match res {
                Ok(out) => {
                    if let Some(reply) = out.reply {
                        s.io.reply(&reply);
                    }
                    if out.close {
                        s.io.close_after_flush(Close::PluginClosed);
                    }
                    self.sync(key);
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
                    return Handled::All;
                }
            }
            if !turn.handled() {
                return Handled::TurnOver;
            }
        }
    }
}

impl<H: Handler> Worker<H> {
    /// The plugin names of the chain serving now, for log lines (made again after a swap).
    fn chain(&mut self) -> String {
        let live = &self.shared.live;
        if self.chain.0 != live.generation() {
            let (generation, plugins) = live.current();
            self.chain = (generation, plugins.names().join(","));
        }
        self.chain.1.clone()
    }
}

mod handshake;
mod lifecycle;
mod pressure;
mod proxied;
mod turn;
mod upkeep;

use turn::Turn;

/// Where a connection's handling of its buffered messages stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handled {
    /// Every whole message buffered was handled (or the connection is closing).
    All,
    /// The budget or the output cap stopped it; messages may be left.
    HeldBack,
    /// Its turn is used up; messages may be left.
    TurnOver,
}
