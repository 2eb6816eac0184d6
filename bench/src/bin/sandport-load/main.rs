//! `sandport-load`: a load generator for sandport and other echo servers.
//!
//! It opens N client connections (spread over a few client threads, each driving its sockets
//! with one mio event loop, so 10,000+ connections need no more threads), optionally plus idle
//! connect-only clients, and sends fixed-size messages, ping-pong or pipelined. Every reply is
//! checked against the message it answers (each carries a unique id). After a warm-up it measures
//! for a duration or a message count and reports messages/s, latency percentiles (HDR histogram)
//! and errors; `--json` prints one JSON object on stdout. Exits 1 if any reply was wrong.

mod driver;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;

use sandport_bench::payload::{Payload, MAX_CONN_ID};
use sandport_bench::report::{Errors, Latency, LoadReport};
use sandport_bench::{parse_duration, parse_size, raise_fd_limit, Framing};

use driver::{Mode, Settings, Shared};

/// Load generator for sandport (and any echo server): many connections, every reply checked.
#[derive(Debug, Parser)]
#[command(name = "sandport-load", version, about)]
struct Args {
    /// Server address.
    #[arg(long, short, default_value = "127.0.0.1:7000")]
    addr: SocketAddr,

    /// Active connections, each sending messages.
    #[arg(long, short, default_value_t = 16)]
    connections: usize,

    /// Extra connect-only clients that stay open and silent for the whole run.
    #[arg(long, default_value_t = 0)]
    idle: usize,

    /// Messages in flight per active connection (1: request/response ping-pong).
    #[arg(long, short, default_value_t = 1)]
    pipeline: usize,

    /// Message size (64, 4KiB, 64KiB, ...): bytes on the wire including the newline for `line`
    /// framing, payload bytes (after the 4-byte prefix) for `length`.
    #[arg(long, short, default_value = "64", value_parser = parse_size)]
    size: usize,

    /// How messages are delimited: as the server's --framing.
    #[arg(long, value_enum, default_value_t = Framing::Line)]
    framing: Framing,

    /// Measure for this long after the warm-up (5s, 500ms, 1m).
    #[arg(long, short, default_value = "5s", value_parser = parse_duration)]
    duration: Duration,

    /// Measure this many messages (in total, over all connections) instead of a duration.
    #[arg(long, short = 'n', conflicts_with = "duration")]
    messages: Option<u64>,

    /// Send for this long before measuring; excluded from every figure.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,

    /// Open at most this many connections per second (default: as fast as they complete).
    #[arg(long, value_name = "PER_SEC")]
    connect_rate: Option<f64>,

    /// A connection not established after this long counts as a connect failure.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    connect_timeout: Duration,

    /// A reply not received this long after its message counts as a timeout, and the connection
    /// is dropped.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,

    /// Client threads (default: the number of cores, at most 8 and at most one per connection).
    #[arg(long)]
    threads: Option<usize>,

    /// Spread the connections over this many source addresses 127.0.0.1, 127.0.0.2, ...
    /// (loopback servers only; default: one per 4,000 connections).
    #[arg(long)]
    source_addrs: Option<usize>,

    /// Expect every reply in ASCII upper case (the `upper` example of every language) instead
    /// of an echo of the message.
    #[arg(long)]
    upper: bool,

    /// Speak TLS, verifying the server's certificate (for `localhost`) against this CA (PEM).
    #[arg(long, value_name = "PATH", conflicts_with = "tls_insecure")]
    tls_ca: Option<std::path::PathBuf>,

    /// Speak TLS, accepting any server certificate (a benchmark against a self-signed one).
    #[arg(long)]
    tls_insecure: bool,

    /// Print one JSON object with every figure on stdout at the end.
    #[arg(long)]
    json: bool,

    /// No progress line on stderr.
    #[arg(long, short)]
    quiet: bool,

    /// Also exit non-zero (3) on any other error, or when no message was measured.
    #[arg(long)]
    strict: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sandport-load: error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<ExitCode, String> {
    let payload = Payload::new(args.framing, args.size)?.expect_upper(args.upper);
    if args.pipeline == 0 {
        return Err("--pipeline must be at least 1".into());
    }
    let total = args.connections + args.idle;
    if total == 0 {
        return Err("no connections: set --connections or --idle".into());
    }
    if total > MAX_CONN_ID as usize + 1 {
        return Err(format!(
            "{total} connections is more than the {} supported",
            MAX_CONN_ID + 1
        ));
    }
    let fd_limit = raise_fd_limit();
    if (total as u64) + 32 > fd_limit {
        return Err(format!(
            "{total} connections need about {} open files but the limit is {fd_limit}: raise it \
             (ulimit -n)",
            total + 32
        ));
    }
    if let Some(r) = args.connect_rate {
        if r.is_nan() || r <= 0.0 {
            return Err("--connect-rate must be positive".into());
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args
        .threads
        .unwrap_or_else(|| cores.min(8).min(args.connections.max(1)))
        .clamp(1, total);
    let loopback = args.addr.ip().is_loopback() && args.addr.is_ipv4();
    let source_addrs = match args.source_addrs {
        Some(0) | None if total <= 4000 => 1,
        Some(0) | None => total.div_ceil(4000),
        Some(n) => n.min(254),
    };
    let source_addrs = if loopback { source_addrs } else { 1 };

    let mode = match args.messages {
        Some(n) => Mode::Count(n),
        None => Mode::Duration(args.duration),
    };
    let tls = match (&args.tls_ca, args.tls_insecure) {
        (None, false) => None,
        (ca, _) => Some(sandport_bench::tls::client_config(ca.as_deref())?),
    };
    let settings = Arc::new(Settings {
        addr: args.addr,
        payload,
        pipeline: args.pipeline,
        warmup: args.warmup,
        mode,
        connect_rate_per_thread: args.connect_rate.map(|r| r / threads as f64),
        connect_timeout: args.connect_timeout,
        timeout: args.timeout,
        quiet: args.quiet,
        tls,
    });
    let shared = Arc::new(Shared::new(threads, args.messages));

    // Connection i goes to thread i % threads; actives first, so each thread gets its share.
    let mut plans: Vec<Vec<driver::Planned>> = vec![Vec::new(); threads];
    for id in 0..total {
        let src = (source_addrs > 1)
            .then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (id % source_addrs) as u8)));
        plans[id % threads].push(driver::Planned {
            id: id as u32,
            active: id < args.connections,
            src,
        });
    }
    let started = Instant::now();
    let handles: Vec<_> = plans
        .into_iter()
        .enumerate()
        .map(|(i, plan)| {
            let (settings, shared) = (settings.clone(), shared.clone());
            std::thread::Builder::new()
                .name(format!("load-{i}"))
                .spawn(move || driver::run(i, plan, &settings, &shared))
                .map_err(|e| format!("cannot start a client thread: {e}"))
        })
        .collect::<Result<_, _>>()?;

    // Coordinate: start everybody once every thread has connected, print progress each second,
    // stop once every thread has drained.
    let mut last_print = started;
    let mut last_replies = 0u64;
    let mut start_at: Option<Instant> = None;
    loop {
        std::thread::sleep(Duration::from_millis(5));
        let now = Instant::now();
        if start_at.is_none() && shared.all(|t| t.connect_done.load(Ordering::Acquire)) {
            start_at = Some(now);
            let _ = shared.start.set(now);
        }
        if start_at.is_some() && shared.all(|t| t.finished.load(Ordering::Acquire)) {
            shared.stop.store(true, Ordering::Release);
            break;
        }
        if !args.quiet && now.duration_since(last_print) >= Duration::from_secs(1) {
            let replies = shared.sum(|t| t.replies.load(Ordering::Relaxed));
            let rate =
                (replies - last_replies) as f64 / now.duration_since(last_print).as_secs_f64();
            last_replies = replies;
            last_print = now;
            eprintln!(
                "{}",
                progress_line(&settings, &shared, started, start_at, now, rate, total)
            );
        }
    }
    let results: Vec<driver::ThreadResult> = handles
        .into_iter()
        .map(|h| h.join().map_err(|_| "a client thread panicked".to_string()))
        .collect::<Result<_, _>>()?;

    let start_at = start_at.expect("set before stopping");
    let measure_start = start_at + args.warmup;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds");
    let mut errors = Errors::default();
    let mut messages = 0;
    let mut replies = 0;
    let mut last_reply: Option<Instant> = None;
    let (mut active_open, mut idle_open) = (0, 0);
    for r in &results {
        hist.add(&r.hist).expect("same bounds");
        errors.add(&r.errors);
        messages += r.measured;
        replies += r.replies;
        last_reply = last_reply.max(r.last_measured_reply);
        active_open += r.active_open;
        idle_open += r.idle_open;
    }
    let measured_secs = match mode {
        Mode::Duration(d) => d.as_secs_f64(),
        Mode::Count(_) => last_reply
            .map(|t| t.saturating_duration_since(measure_start).as_secs_f64())
            .unwrap_or(0.0),
    };
    let us = |ns: u64| ns as f64 / 1e3;
    let latency = if hist.is_empty() {
        Latency::default()
    } else {
        Latency {
            min: us(hist.min()),
            mean: hist.mean() / 1e3,
            p50: us(hist.value_at_quantile(0.50)),
            p90: us(hist.value_at_quantile(0.90)),
            p99: us(hist.value_at_quantile(0.99)),
            p99_9: us(hist.value_at_quantile(0.999)),
            max: us(hist.max()),
        }
    };
    let report = LoadReport {
        addr: args.addr.to_string(),
        connections: args.connections,
        idle: args.idle,
        pipeline: args.pipeline,
        size: args.size,
        framing: args.framing,
        threads,
        source_addrs,
        warmup_secs: args.warmup.as_secs_f64(),
        measured_secs,
        connect_secs: start_at.duration_since(started).as_secs_f64(),
        messages,
        msgs_per_sec: if measured_secs > 0.0 {
            messages as f64 / measured_secs
        } else {
            0.0
        },
        latency_us: latency,
        replies_checked: replies,
        errors,
        active_open_at_end: active_open,
        idle_open_at_end: idle_open,
        error_samples: shared
            .error_samples
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default(),
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| format!("cannot print JSON: {e}"))?
        );
    } else {
        print_human(&report);
    }
    if report.errors.wrong_replies > 0 {
        eprintln!(
            "sandport-load: {} wrong replies: the server did not echo what was sent",
            report.errors.wrong_replies
        );
        return Ok(ExitCode::from(1));
    }
    if args.strict && (report.errors.total() > 0 || report.messages == 0) {
        eprintln!(
            "sandport-load: --strict: errors: {}, messages measured: {}",
            report.errors.summary(),
            report.messages
        );
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

fn progress_line(
    settings: &Settings,
    shared: &Shared,
    started: Instant,
    start_at: Option<Instant>,
    now: Instant,
    rate: f64,
    total: usize,
) -> String {
    let open_active = shared.sum(|t| t.open_active.load(Ordering::Relaxed) as u64);
    let open_idle = shared.sum(|t| t.open_idle.load(Ordering::Relaxed) as u64);
    let errors = shared.sum(|t| t.errors.load(Ordering::Relaxed));
    let wrong = shared.sum(|t| t.wrong.load(Ordering::Relaxed));
    let phase = match start_at {
        None => "connect".to_string(),
        Some(s) => {
            let since = now.duration_since(s);
            let in_measure = since.saturating_sub(settings.warmup);
            match settings.mode {
                _ if since < settings.warmup => "warmup".to_string(),
                Mode::Duration(d) if in_measure < d => "measure".to_string(),
                Mode::Count(n) => {
                    let left = shared.budget.load(Ordering::Relaxed).max(0) as u64;
                    if left > 0 {
                        format!("measure {}/{n}", n - left)
                    } else {
                        "drain".to_string()
                    }
                }
                Mode::Duration(_) => "drain".to_string(),
            }
        }
    };
    format!(
        "sandport-load: {:>5.1}s {phase:<8} open {open_active}+{open_idle} idle of {total}  \
         {rate:>9.0} msg/s  errors {errors}  wrong {wrong}",
        now.duration_since(started).as_secs_f64()
    )
}

fn print_human(r: &LoadReport) {
    println!(
        "sandport-load: {}  {} connections (+{} idle)  pipeline {}  {} B {}  {} threads",
        r.addr, r.connections, r.idle, r.pipeline, r.size, r.framing, r.threads
    );
    println!(
        "  measured  {:.2} s after {:.2} s warm-up (connecting took {:.2} s)",
        r.measured_secs, r.warmup_secs, r.connect_secs
    );
    println!(
        "  messages  {} ({:.0} msg/s); {} replies checked in all",
        r.messages, r.msgs_per_sec, r.replies_checked
    );
    let l = &r.latency_us;
    println!(
        "  latency   p50 {:.1} us  p90 {:.1} us  p99 {:.1} us  p99.9 {:.1} us  max {:.1} us",
        l.p50, l.p90, l.p99, l.p99_9, l.max
    );
    println!(
        "  open      {} active and {} idle connections at the end",
        r.active_open_at_end, r.idle_open_at_end
    );
    println!("  errors    {}", r.errors.summary());
    for s in &r.error_samples {
        println!("            {s}");
    }
}
