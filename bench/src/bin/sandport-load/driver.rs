//! One client thread: connects its share of the sockets, then drives them with a mio event loop:
//! sends messages, reads and checks replies, records latencies, and counts errors.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};

use sandport_bench::payload::Payload;
use sandport_bench::report::Errors;
use sandport_bench::tls::{self, Stream};
use sandport_bench::Framing;

/// Connects in progress at once per thread: keeps the server's accept queue from overflowing.
const MAX_PENDING_CONNECTS: usize = 256;
/// Error messages kept for the report.
const MAX_ERROR_SAMPLES: usize = 10;
/// Error messages printed as they happen.
const PRINTED_ERRORS: usize = 5;

/// When the measurement ends.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// After this long past the warm-up.
    Duration(Duration),
    /// After this many measured messages, over all connections.
    Count(u64),
}

/// The run's parameters, the same for every thread.
pub struct Settings {
    pub addr: SocketAddr,
    pub payload: Payload,
    pub pipeline: usize,
    pub warmup: Duration,
    pub mode: Mode,
    pub connect_rate_per_thread: Option<f64>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub quiet: bool,
    /// `--tls-ca` / `--tls-insecure`: every connection speaks TLS with this configuration.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// What the threads and the coordinating main thread share.
pub struct Shared {
    /// Set by main once every thread has connected: sending starts, the warm-up begins.
    pub start: OnceLock<Instant>,
    /// Set by main once every thread has finished: close everything and report.
    pub stop: AtomicBool,
    /// Messages left to measure (count mode).
    pub budget: AtomicI64,
    pub threads: Vec<ThreadCounters>,
    pub error_samples: Mutex<Vec<String>>,
    printed_errors: AtomicUsize,
}

/// Live counters of one thread, for the progress line and the coordination.
#[derive(Default)]
#[repr(align(128))]
pub struct ThreadCounters {
    pub replies: AtomicU64,
    pub open_active: AtomicUsize,
    pub open_idle: AtomicUsize,
    pub errors: AtomicU64,
    pub wrong: AtomicU64,
    /// Every connection of this thread is established or has failed.
    pub connect_done: AtomicBool,
    /// Sending is over and every reply is in (or timed out).
    pub finished: AtomicBool,
}

impl Shared {
    pub fn new(threads: usize, budget: Option<u64>) -> Shared {
        Shared {
            start: OnceLock::new(),
            stop: AtomicBool::new(false),
            budget: AtomicI64::new(budget.map_or(i64::MAX, |b| b.min(i64::MAX as u64) as i64)),
            threads: (0..threads).map(|_| ThreadCounters::default()).collect(),
            error_samples: Mutex::new(Vec::new()),
            printed_errors: AtomicUsize::new(0),
        }
    }

    pub fn all(&self, f: impl Fn(&ThreadCounters) -> bool) -> bool {
        self.threads.iter().all(f)
    }

    pub fn sum(&self, f: impl Fn(&ThreadCounters) -> u64) -> u64 {
        self.threads.iter().map(f).sum()
    }

    fn note_error(&self, quiet: bool, msg: String) {
        if !quiet && self.printed_errors.fetch_add(1, Ordering::Relaxed) < PRINTED_ERRORS {
            eprintln!("sandport-load: {msg}");
        }
        if let Ok(mut s) = self.error_samples.lock() {
            if s.len() < MAX_ERROR_SAMPLES {
                s.push(msg);
            }
        }
    }
}

/// A connection this thread is to open.
#[derive(Debug, Clone)]
pub struct Planned {
    pub id: u32,
    pub active: bool,
    /// Source address to bind before connecting, to spread the 4-tuples.
    pub src: Option<IpAddr>,
}

/// What one thread measured.
pub struct ThreadResult {
    pub hist: Histogram<u64>,
    pub errors: Errors,
    pub measured: u64,
    pub replies: u64,
    pub last_measured_reply: Option<Instant>,
    pub active_open: usize,
    pub idle_open: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Planned,
    Connecting(Instant),
    Open,
    Closed,
}

struct Sent {
    seq: u64,
    at: Instant,
    measured: bool,
}

struct Conn {
    plan: Planned,
    state: State,
    stream: Option<Stream>,
    /// Bytes to send, from `out_pos` on.
    out: Vec<u8>,
    out_pos: usize,
    /// Received bytes not yet consumed: `inb[start..end]`; `scan` is where the newline search
    /// resumes (line framing).
    inb: Vec<u8>,
    start: usize,
    end: usize,
    scan: usize,
    next_seq: u64,
    in_flight: VecDeque<Sent>,
}

/// Why a connection was dropped.
enum Drop {
    Closed,
    Reset(std::io::Error),
    Wrong(String),
}

struct Thread<'a> {
    index: usize,
    settings: &'a Settings,
    shared: &'a Shared,
    counters: &'a ThreadCounters,
    hist: Histogram<u64>,
    errors: Errors,
    measured: u64,
    replies: u64,
    last_measured_reply: Option<Instant>,
    budget_exhausted: bool,
    /// Longest reply accepted before the connection is declared broken.
    max_reply: usize,
    read_buf_len: usize,
}

/// Runs one client thread until main sets `stop`.
pub fn run(index: usize, plan: Vec<Planned>, settings: &Settings, shared: &Shared) -> ThreadResult {
    let counters = &shared.threads[index];
    let wire = settings.payload.wire_len();
    let mut t = Thread {
        index,
        settings,
        shared,
        counters,
        hist: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds"),
        errors: Errors::default(),
        measured: 0,
        replies: 0,
        last_measured_reply: None,
        budget_exhausted: false,
        max_reply: wire * 2 + (64 << 10),
        read_buf_len: (wire * 4).max(16 << 10),
    };
    let mut poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            shared.note_error(settings.quiet, format!("thread {index}: cannot poll: {e}"));
            counters.connect_done.store(true, Ordering::Release);
            counters.finished.store(true, Ordering::Release);
            return t.result(0, 0);
        }
    };
    let mut events = Events::with_capacity(1024);
    let mut conns: Vec<Conn> = plan
        .into_iter()
        .map(|plan| Conn {
            plan,
            state: State::Planned,
            stream: None,
            out: Vec::new(),
            out_pos: 0,
            inb: Vec::new(),
            start: 0,
            end: 0,
            scan: 0,
            next_seq: 0,
            in_flight: VecDeque::new(),
        })
        .collect();

    let began = Instant::now();
    let mut next_connect = 0;
    let mut pending = 0usize;
    let mut connect_done = false;
    let mut kicked = false;
    let mut drain_deadline: Option<Instant> = None;
    let mut finished = false;
    let mut last_sweep = began;

    loop {
        let now = Instant::now();

        // Open connections, within the rate and the pending limit.
        if next_connect < conns.len() {
            let allowed = match settings.connect_rate_per_thread {
                Some(r) => (now.duration_since(began).as_secs_f64() * r) as usize + 1,
                None => usize::MAX,
            };
            while next_connect < conns.len()
                && pending < MAX_PENDING_CONNECTS
                && next_connect < allowed
            {
                if t.start_connect(&poll, &mut conns[next_connect], Token(next_connect), now) {
                    pending += 1;
                }
                next_connect += 1;
            }
        }
        if !connect_done && next_connect == conns.len() && pending == 0 {
            connect_done = true;
            counters.connect_done.store(true, Ordering::Release);
        }

        // Start sending once main says so.
        let start = shared.start.get().copied();
        if let (Some(_), false) = (start, kicked) {
            kicked = true;
            for c in conns
                .iter_mut()
                .filter(|c| c.state == State::Open && c.plan.active)
            {
                if let Err(d) = t.refill_and_flush(c, now) {
                    t.drop_conn(c, d);
                }
            }
        }

        // Sending over: drain the replies in flight, then report finished.
        if let (Some(_), false) = (start, finished) {
            let open_active = counters.open_active.load(Ordering::Relaxed);
            if t.sending_over(now) || open_active == 0 {
                let deadline = *drain_deadline.get_or_insert(now + settings.timeout);
                let in_flight = conns.iter().any(|c| !c.in_flight.is_empty());
                if !in_flight || now >= deadline {
                    for c in conns.iter_mut().filter(|c| !c.in_flight.is_empty()) {
                        let msg = format!(
                            "conn {}: {} replies still missing at the end",
                            c.plan.id,
                            c.in_flight.len()
                        );
                        t.errors.timeouts += 1;
                        t.note(msg);
                        c.in_flight.clear();
                    }
                    finished = true;
                    counters.finished.store(true, Ordering::Release);
                }
            }
        }
        if finished && shared.stop.load(Ordering::Acquire) {
            break;
        }

        // Every 100 ms: connects and replies that take too long.
        if now.duration_since(last_sweep) >= Duration::from_millis(100) {
            last_sweep = now;
            for c in conns.iter_mut() {
                match c.state {
                    State::Connecting(since)
                        if now.duration_since(since) >= settings.connect_timeout =>
                    {
                        pending -= 1;
                        t.errors.connect_failed += 1;
                        let msg = format!(
                            "conn {}: connect: no answer within {:?}",
                            c.plan.id, settings.connect_timeout
                        );
                        t.note(msg);
                        c.stream = None;
                        c.state = State::Closed;
                    }
                    State::Open => {
                        if let Some(first) = c.in_flight.front() {
                            if now.duration_since(first.at) >= settings.timeout {
                                t.errors.timeouts += 1;
                                let msg = format!(
                                    "conn {}: no reply to message {} within {:?}",
                                    c.plan.id, first.seq, settings.timeout
                                );
                                t.note(msg);
                                c.in_flight.clear();
                                t.close(c);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }

        let timeout = if next_connect < conns.len() || start.is_none() || finished {
            Duration::from_millis(2)
        } else {
            Duration::from_millis(20)
        };
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != ErrorKind::Interrupted {
                let msg = format!("thread {}: poll failed: {e}", t.index);
                t.note(msg);
                break;
            }
        }
        for ev in events.iter() {
            let i = ev.token().0;
            let c = &mut conns[i];
            match c.state {
                State::Connecting(_) => match t.finish_connect(c) {
                    Ok(false) => continue,
                    Ok(true) => {
                        pending -= 1;
                        c.state = State::Open;
                        if c.plan.active {
                            counters.open_active.fetch_add(1, Ordering::Relaxed);
                            c.inb = vec![0; t.read_buf_len];
                            if kicked {
                                if let Err(d) = t.refill_and_flush(c, Instant::now()) {
                                    t.drop_conn(c, d);
                                }
                            }
                        } else {
                            counters.open_idle.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        pending -= 1;
                        t.errors.connect_failed += 1;
                        let msg = format!("conn {}: connect: {e}", c.plan.id);
                        t.note(msg);
                        c.stream = None;
                        c.state = State::Closed;
                    }
                },
                State::Open if c.plan.active => {
                    let mut res = Ok(());
                    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                        res = t.read_active(c);
                    }
                    if res.is_ok() && (ev.is_writable() || ev.is_readable()) {
                        res = t.flush(c);
                    }
                    if let Err(d) = res {
                        t.drop_conn(c, d);
                    }
                }
                State::Open => t.read_idle(c),
                State::Planned | State::Closed => {}
            }
        }
    }
    let active_open = conns
        .iter()
        .filter(|c| c.plan.active && c.state == State::Open)
        .count();
    let idle_open = conns
        .iter()
        .filter(|c| !c.plan.active && c.state == State::Open)
        .count();
    t.result(active_open, idle_open)
}

impl Thread<'_> {
    fn result(self, active_open: usize, idle_open: usize) -> ThreadResult {
        ThreadResult {
            hist: self.hist,
            errors: self.errors,
            measured: self.measured,
            replies: self.replies,
            last_measured_reply: self.last_measured_reply,
            active_open,
            idle_open,
        }
    }

    fn note(&self, msg: String) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        self.shared.note_error(self.settings.quiet, msg);
    }

    /// Starts a non-blocking connect; false (and the error counted) if it failed at once.
    fn start_connect(&mut self, poll: &Poll, c: &mut Conn, token: Token, now: Instant) -> bool {
        match connect(self.settings.addr, c.plan.src) {
            Ok(mut tcp) => {
                if let Err(e) = poll.registry().register(
                    &mut tcp,
                    token,
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    self.errors.connect_failed += 1;
                    self.note(format!("conn {}: cannot watch the socket: {e}", c.plan.id));
                    c.state = State::Closed;
                    return false;
                }
                c.stream = Some(match &self.settings.tls {
                    Some(config) => Stream::Tls(Box::new((tcp, tls::session(config)))),
                    None => Stream::Plain(tcp),
                });
                c.state = State::Connecting(now);
                true
            }
            Err(e) => {
                self.errors.connect_failed += 1;
                self.note(format!("conn {}: connect: {e}", c.plan.id));
                c.state = State::Closed;
                false
            }
        }
    }

    /// After an event on a connecting socket: Ok(true) once established, Ok(false) if not yet.
    fn finish_connect(&self, c: &mut Conn) -> std::io::Result<bool> {
        let stream = c.stream.as_mut().expect("connecting has a stream");
        let tcp = stream.tcp_mut();
        if let Some(e) = tcp.take_error()? {
            return Err(e);
        }
        match tcp.peer_addr() {
            // A TLS client speaks first: its ClientHello goes now, idle connections included.
            Ok(_) => stream.push().map(|()| true),
            Err(e) if e.kind() == ErrorKind::NotConnected => Ok(false),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether new messages are no longer sent (start is known to be set).
    fn sending_over(&self, now: Instant) -> bool {
        let start = *self.shared.start.get().expect("started");
        match self.settings.mode {
            Mode::Duration(d) => now >= start + self.settings.warmup + d,
            Mode::Count(_) => self.budget_exhausted,
        }
    }

    /// Queues messages until `pipeline` are in flight (while sending lasts), then writes.
    fn refill_and_flush(&mut self, c: &mut Conn, now: Instant) -> Result<(), Drop> {
        let Some(&start) = self.shared.start.get() else {
            return Ok(());
        };
        let measure_start = start + self.settings.warmup;
        while c.in_flight.len() < self.settings.pipeline {
            if now < start || self.sending_over(now) {
                break;
            }
            let measured = match self.settings.mode {
                _ if now < measure_start => false,
                Mode::Duration(_) => true,
                Mode::Count(_) => {
                    if self.shared.budget.fetch_sub(1, Ordering::Relaxed) > 0 {
                        true
                    } else {
                        self.budget_exhausted = true;
                        break;
                    }
                }
            };
            self.settings
                .payload
                .write(c.plan.id, c.next_seq, &mut c.out);
            c.in_flight.push_back(Sent {
                seq: c.next_seq,
                at: now,
                measured,
            });
            c.next_seq += 1;
        }
        self.flush(c)
    }

    /// Writes queued bytes until done or the socket is full.
    fn flush(&mut self, c: &mut Conn) -> Result<(), Drop> {
        let stream = c.stream.as_mut().expect("open has a stream");
        // TLS records left from a handshake step or a write the socket did not take.
        stream.push().map_err(Drop::Reset)?;
        while c.out_pos < c.out.len() {
            match stream.write(&c.out[c.out_pos..]) {
                Ok(0) => return Err(Drop::Closed),
                Ok(n) => c.out_pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(Drop::Reset(e)),
            }
        }
        c.out.clear();
        c.out_pos = 0;
        Ok(())
    }

    /// Reads what the server sent, checks every whole reply, and queues the next messages.
    fn read_active(&mut self, c: &mut Conn) -> Result<(), Drop> {
        loop {
            if c.end == c.inb.len() {
                if c.start > 0 {
                    c.inb.copy_within(c.start..c.end, 0);
                    c.end -= c.start;
                    c.scan -= c.start;
                    c.start = 0;
                } else {
                    let grown = c.inb.len() * 2;
                    c.inb.resize(grown, 0);
                }
            }
            let space = c.inb.len() - c.end;
            let stream = c.stream.as_mut().expect("open has a stream");
            match stream.read(&mut c.inb[c.end..]) {
                Ok(0) => return Err(Drop::Closed),
                Ok(n) => {
                    c.end += n;
                    let now = Instant::now();
                    self.take_replies(c, now)?;
                    self.refill_and_flush(c, now)?;
                    // A short read emptied the socket: epoll reports the next data anew. Not
                    // so over TLS: a short read may only have emptied rustls's plaintext.
                    let tls = matches!(c.stream, Some(Stream::Tls(_)));
                    if n < space && !tls {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(Drop::Reset(e)),
            }
        }
    }

    /// Cuts whole replies out of the input buffer and checks each against its message.
    fn take_replies(&mut self, c: &mut Conn, now: Instant) -> Result<(), Drop> {
        loop {
            let avail = &c.inb[c.start..c.end];
            let (body, used) = match self.settings.payload.framing() {
                Framing::Line => {
                    let from = c.scan - c.start;
                    match memchr::memchr(b'\n', &avail[from..]) {
                        Some(i) => (c.start..c.start + from + i, from + i + 1),
                        None => {
                            c.scan = c.end;
                            if avail.len() > self.max_reply {
                                return Err(Drop::Wrong(format!(
                                    "a reply of more than {} bytes without a newline",
                                    avail.len()
                                )));
                            }
                            break;
                        }
                    }
                }
                Framing::Length => {
                    if avail.len() < 4 {
                        break;
                    }
                    let len = u32::from_be_bytes(avail[..4].try_into().expect("4 bytes")) as usize;
                    if len > self.max_reply {
                        return Err(Drop::Wrong(format!(
                            "a reply announcing {len} bytes, expected {}",
                            self.settings.payload.body_len()
                        )));
                    }
                    if avail.len() < 4 + len {
                        break;
                    }
                    (c.start + 4..c.start + 4 + len, 4 + len)
                }
            };
            let reply = &c.inb[body];
            self.replies += 1;
            self.counters.replies.fetch_add(1, Ordering::Relaxed);
            match c.in_flight.pop_front() {
                None => {
                    self.errors.wrong_replies += 1;
                    self.counters.wrong.fetch_add(1, Ordering::Relaxed);
                    let msg = format!(
                        "conn {}: a reply nobody asked for: {}",
                        c.plan.id,
                        Payload::describe(reply)
                    );
                    self.note(msg);
                }
                Some(sent) => {
                    if !self.settings.payload.check(c.plan.id, sent.seq, reply) {
                        self.errors.wrong_replies += 1;
                        self.counters.wrong.fetch_add(1, Ordering::Relaxed);
                        let expected = self.settings.payload.body(c.plan.id, sent.seq);
                        let msg = format!(
                            "conn {}: wrong reply to message {}: got {}, expected {}",
                            c.plan.id,
                            sent.seq,
                            Payload::describe(reply),
                            Payload::describe(&expected)
                        );
                        self.note(msg);
                    } else if sent.measured {
                        self.measured += 1;
                        self.last_measured_reply = Some(now);
                        let ns = now.duration_since(sent.at).as_nanos() as u64;
                        self.hist.saturating_record(ns.max(1));
                    }
                }
            }
            c.start += used;
            c.scan = c.start;
        }
        if c.start == c.end {
            c.start = 0;
            c.end = 0;
            c.scan = 0;
        }
        Ok(())
    }

    /// An idle client should hear nothing; the server closing it is an error.
    fn read_idle(&mut self, c: &mut Conn) {
        let mut buf = [0u8; 512];
        loop {
            let stream = c.stream.as_mut().expect("open has a stream");
            match stream.read(&mut buf) {
                Ok(0) => {
                    self.errors.idle_closed += 1;
                    self.note(format!("idle conn {}: closed by the server", c.plan.id));
                    self.close(c);
                    return;
                }
                Ok(n) => {
                    self.errors.wrong_replies += 1;
                    self.counters.wrong.fetch_add(1, Ordering::Relaxed);
                    let msg = format!(
                        "idle conn {}: the server sent {}",
                        c.plan.id,
                        Payload::describe(&buf[..n])
                    );
                    self.note(msg);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.errors.idle_closed += 1;
                    self.note(format!("idle conn {}: {e}", c.plan.id));
                    self.close(c);
                    return;
                }
            }
        }
    }

    fn drop_conn(&mut self, c: &mut Conn, why: Drop) {
        let msg = match why {
            Drop::Closed => {
                self.errors.closed += 1;
                format!(
                    "conn {}: closed by the server with {} replies missing",
                    c.plan.id,
                    c.in_flight.len()
                )
            }
            Drop::Reset(e) => {
                self.errors.reset += 1;
                format!("conn {}: {e}", c.plan.id)
            }
            Drop::Wrong(m) => {
                self.errors.wrong_replies += 1;
                self.counters.wrong.fetch_add(1, Ordering::Relaxed);
                format!("conn {}: {m}", c.plan.id)
            }
        };
        self.note(msg);
        c.in_flight.clear();
        self.close(c);
    }

    fn close(&mut self, c: &mut Conn) {
        if c.state == State::Open {
            let open = if c.plan.active {
                &self.counters.open_active
            } else {
                &self.counters.open_idle
            };
            open.fetch_sub(1, Ordering::Relaxed);
        }
        c.stream = None;
        c.state = State::Closed;
        c.inb = Vec::new();
        c.out = Vec::new();
        c.out_pos = 0;
        c.start = 0;
        c.end = 0;
        c.scan = 0;
    }
}

/// A non-blocking connect, bound first to `src` (port chosen at connect time) when given.
fn connect(addr: SocketAddr, src: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_nonblocking(true)?;
    sock.set_tcp_nodelay(true)?;
    if let Some(ip) = src {
        // Let connect() pick the port for the whole 4-tuple, not bind() for the address alone:
        // otherwise each source address is limited to the ephemeral port range.
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads `one` (an int) for the length given.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        sock.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match sock.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(sock.into()))
}
