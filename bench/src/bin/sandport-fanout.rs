//! `sandport-fanout`: one sender and N room members, through a chat-like plugin (contract 0.2
//! rooms): how many deliveries per second the host fans out, and how long each takes.
//!
//! Every member connects and sends the join line (`/join bench` by default); the sender joins
//! last. The sender then sends `fanout SEQ` lines, keeping at most `--window` of them not yet
//! delivered to every member; each member's event loop (one mio loop for all of them) reads
//! every line, and a line holding `fanout SEQ` is one delivery, timed from the instant SEQ was
//! sent. Other lines (greetings, `* NAME joined`) are ignored. Prints one JSON object: members,
//! messages, deliveries, deliveries/s and latency percentiles. Exits 1 if a member is closed or
//! a delivery is missing at the end.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde::Serialize;

use sandport_bench::{parse_duration, raise_fd_limit};

/// One sender, many room members: deliveries per second and their latency.
#[derive(Debug, Parser)]
#[command(name = "sandport-fanout", version, about)]
struct Args {
    /// Server address.
    #[arg(long, short, default_value = "127.0.0.1:7000")]
    addr: SocketAddr,
    /// The sender's server, when it is another host sharing the members' Redis (rooms across
    /// hosts); by default `--addr`.
    #[arg(long)]
    sender_addr: Option<SocketAddr>,
    /// Room members besides the sender.
    #[arg(long, short, default_value_t = 1000)]
    members: usize,
    /// The line that joins the room (line framing).
    #[arg(long, default_value = "/join bench")]
    join: String,
    /// Messages sent and not yet delivered to every member, at most.
    #[arg(long, short, default_value_t = 4)]
    window: usize,
    /// Measure for this long (after a warm-up of one message).
    #[arg(long, short, default_value = "5s", value_parser = parse_duration)]
    duration: Duration,
}

/// What the run measured, as JSON.
#[derive(Debug, Serialize)]
struct Report {
    members: usize,
    messages: u64,
    deliveries: u64,
    seconds: f64,
    deliveries_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
    errors: Vec<String>,
}

/// What the sender and the members' loop share.
struct Shared {
    start: Instant,
    /// When each message was sent, in ns since `start` (index: its sequence number).
    sent_at: Vec<AtomicU64>,
    /// How many members each message has reached.
    delivered: Vec<AtomicU32>,
    stop: AtomicBool,
}

const MAX_MESSAGES: usize = 1 << 22;

fn main() -> ExitCode {
    let args = Args::parse();
    raise_fd_limit();
    match run(&args) {
        Ok(report) => {
            println!(
                "{}",
                serde_json::to_string(&report).expect("a report serialises")
            );
            if report.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("sandport-fanout: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<Report, String> {
    let shared = Arc::new(Shared {
        start: Instant::now(),
        sent_at: (0..MAX_MESSAGES).map(|_| AtomicU64::new(0)).collect(),
        delivered: (0..MAX_MESSAGES).map(|_| AtomicU32::new(0)).collect(),
        stop: AtomicBool::new(false),
    });
    let join_line = format!("{}\n", args.join);
    let mut members = Vec::with_capacity(args.members);
    for i in 0..args.members {
        let mut s = StdStream::connect(args.addr).map_err(|e| format!("member {i}: {e}"))?;
        s.set_nodelay(true).ok();
        s.write_all(join_line.as_bytes())
            .map_err(|e| format!("member {i} join: {e}"))?;
        members.push(s);
    }
    // The members' loop reads from the start, so joins' notices never fill a socket.
    let loop_shared = shared.clone();
    let member_loop = std::thread::spawn(move || members_loop(members, &loop_shared));

    let sender_addr = args.sender_addr.unwrap_or(args.addr);
    let mut sender = StdStream::connect(sender_addr).map_err(|e| format!("sender: {e}"))?;
    sender.set_nodelay(true).ok();
    sender
        .write_all(join_line.as_bytes())
        .map_err(|e| format!("sender join: {e}"))?;
    let drain = sender.try_clone().map_err(|e| e.to_string())?;
    // The sender's own replies (greeting, join notices) are read and dropped.
    std::thread::spawn(move || io::copy(&mut { drain }, &mut io::sink()));

    let n = args.members as u32;
    let send = |sender: &mut StdStream, seq: usize| -> Result<(), String> {
        shared.sent_at[seq].store(shared.start.elapsed().as_nanos() as u64, Relaxed);
        sender
            .write_all(format!("fanout {seq}\n").as_bytes())
            .map_err(|e| format!("send {seq}: {e}"))
    };
    let all_delivered = |seq: usize| shared.delivered[seq].load(Relaxed) >= n;
    // Warm-up: message 0 must reach every member, which also proves they all joined (a
    // member whose join was not yet handled would miss it, so it is resent until all have it).
    // Members count it once each, however many copies they get: counting copies, the resends'
    // duplicates could make up for members still joining, which then missed message 1.
    let warm_deadline = Instant::now() + Duration::from_secs(60);
    let mut next = 0;
    while !all_delivered(0) {
        if Instant::now() > warm_deadline {
            return Err(format!(
                "only {} of {n} members got the first message in 60 s: did they all join?",
                shared.delivered[0].load(Relaxed)
            ));
        }
        if next == 0
            || shared.start.elapsed().as_nanos() as u64
                > shared.sent_at[0].load(Relaxed) + 500_000_000
        {
            send(&mut sender, 0)?;
            next = 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let measure_from = Instant::now();
    let mut oldest = 1;
    next = 1;
    while measure_from.elapsed() < args.duration && next < MAX_MESSAGES {
        while oldest < next && all_delivered(oldest) {
            oldest += 1;
        }
        if next - oldest < args.window {
            send(&mut sender, next)?;
            next += 1;
        } else {
            std::thread::yield_now();
        }
    }
    // Let the last messages arrive (or time out: a missing delivery is an error).
    let tail_deadline = Instant::now() + Duration::from_secs(10);
    while oldest < next && Instant::now() < tail_deadline {
        if all_delivered(oldest) {
            oldest += 1;
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let seconds = measure_from.elapsed().as_secs_f64();
    shared.stop.store(true, Relaxed);
    let (hist, mut errors) = member_loop
        .join()
        .map_err(|_| "the members' loop panicked")?;
    if oldest < next {
        errors.push(format!(
            "message {oldest} reached only {} of {n} members",
            shared.delivered[oldest].load(Relaxed)
        ));
    }
    let messages = (next - 1) as u64;
    let deliveries = messages * n as u64;
    Ok(Report {
        members: args.members,
        messages,
        deliveries,
        seconds,
        deliveries_per_sec: deliveries as f64 / seconds,
        p50_us: hist.value_at_quantile(0.50) as f64 / 1e3,
        p99_us: hist.value_at_quantile(0.99) as f64 / 1e3,
        max_us: hist.max() as f64 / 1e3,
        errors,
    })
}

/// Reads every member's socket until `stop`; counts and times each `fanout SEQ` line (the warm-up
/// message 0 is counted once per member, not timed). Returns the latency histogram (ns) and the errors.
fn members_loop(members: Vec<StdStream>, shared: &Shared) -> (Histogram<u64>, Vec<String>) {
    let mut hist = Histogram::<u64>::new(3).expect("a histogram");
    let mut errors = Vec::new();
    let mut poll = Poll::new().expect("a poll");
    // Each member's socket, unparsed bytes, and whether it has counted message 0.
    let mut conns: HashMap<usize, (TcpStream, Vec<u8>, bool)> = HashMap::new();
    for (i, s) in members.into_iter().enumerate() {
        s.set_nonblocking(true).expect("non-blocking");
        let mut s = TcpStream::from_std(s);
        poll.registry()
            .register(&mut s, Token(i), Interest::READABLE)
            .expect("register");
        conns.insert(i, (s, Vec::new(), false));
    }
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 << 10];
    while !shared.stop.load(Relaxed) {
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(10))) {
            errors.push(format!("poll: {e}"));
            break;
        }
        for ev in events.iter() {
            let Some((sock, pending, warmed)) = conns.get_mut(&ev.token().0) else {
                continue;
            };
            loop {
                match sock.read(&mut buf) {
                    Ok(0) => {
                        errors.push(format!("member {} was closed by the server", ev.token().0));
                        conns.remove(&ev.token().0);
                        break;
                    }
                    Ok(k) => {
                        pending.extend_from_slice(&buf[..k]);
                        let mut start = 0;
                        while let Some(end) = memchr::memchr(b'\n', &pending[start..]) {
                            let line = &pending[start..start + end];
                            if let Some(seq) = fanout_seq(line) {
                                if seq == 0 && !*warmed {
                                    *warmed = true;
                                    shared.delivered[0].fetch_add(1, Relaxed);
                                } else if seq > 0 && seq < MAX_MESSAGES {
                                    shared.delivered[seq].fetch_add(1, Relaxed);
                                    let now = shared.start.elapsed().as_nanos() as u64;
                                    let sent = shared.sent_at[seq].load(Relaxed);
                                    let _ = hist.record(now.saturating_sub(sent).max(1));
                                }
                            }
                            start += end + 1;
                        }
                        pending.drain(..start);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        errors.push(format!("member {}: {e}", ev.token().0));
                        conns.remove(&ev.token().0);
                        break;
                    }
                }
            }
        }
    }
    (hist, errors)
}

/// The sequence number of a line holding `fanout SEQ` (after the chat's `NAME: ` prefix).
fn fanout_seq(line: &[u8]) -> Option<usize> {
    let at = memchr::memmem::find(line, b"fanout ")?;
    std::str::from_utf8(&line[at + 7..])
        .ok()?
        .trim()
        .parse()
        .ok()
}
