//! The scenarios of issue 4: each runs its servers interleaved over the rounds and returns a
//! Markdown section with medians, ratios and the targets they are checked against.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sandport_bench::report::LoadReport;

use crate::server::{self, Bins, ProcStats, Server};

/// Settings of the whole run.
pub struct Ctx {
    pub bins: Bins,
    pub smoke: bool,
    pub rounds: usize,
    pub secs: f64,
    pub warmup: f64,
    pub client_threads: usize,
    pub verbose: bool,
    pub target_dir: PathBuf,
    /// Problems that make the run fail (exit 1): servers that do not start, wrong replies, and
    /// in smoke mode any error at all.
    pub failures: Vec<String>,
}

/// A target of the issue, as measured.
pub struct Target {
    pub what: String,
    pub target: String,
    pub measured: String,
    /// None: reported, not judged (or nothing to judge it on).
    pub pass: Option<bool>,
}

/// One part of BENCHMARKS.md.
pub struct Section {
    pub title: String,
    pub body: String,
    pub targets: Vec<Target>,
}

/// What one load run asks for.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub connections: usize,
    pub idle: usize,
    pub size: usize,
    pub pipeline: usize,
    pub connect_rate: Option<f64>,
    /// Replies are the message in upper case (the `upper` examples), not an echo.
    pub upper: bool,
}

impl LoadSpec {
    /// `connections` clients, each with one `size`-byte message in flight, no idle ones.
    pub fn ping_pong(connections: usize, size: usize) -> Self {
        LoadSpec {
            connections,
            idle: 0,
            size,
            pipeline: 1,
            connect_rate: None,
            upper: false,
        }
    }
}

/// The rounds of one server in one scenario.
pub struct Series {
    pub server: Server,
    pub rounds: Vec<LoadReport>,
}

impl Series {
    pub fn median(&self, f: impl Fn(&LoadReport) -> f64) -> f64 {
        median(self.rounds.iter().map(f).collect())
    }

    fn errors(&self) -> String {
        let mut all = sandport_bench::report::Errors::default();
        for r in &self.rounds {
            all.add(&r.errors);
        }
        all.summary()
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let s = format!("{:.0}", x);
    let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    format!("{sign}{out}")
}

fn ratio(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}x")
    } else {
        "-".into()
    }
}

fn verdict(pass: Option<bool>) -> &'static str {
    match pass {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "-",
    }
}

impl Ctx {
    /// Runs `sandport-load` against `addr` and returns its report.
    pub(crate) fn run_load(
        &mut self,
        addr: SocketAddr,
        spec: &LoadSpec,
        what: &str,
    ) -> Option<LoadReport> {
        self.run_load_with(addr, spec, what, &[])
    }

    /// [`Ctx::run_load`] with more `sandport-load` flags (`--tls-ca PATH`).
    pub(crate) fn run_load_with(
        &mut self,
        addr: SocketAddr,
        spec: &LoadSpec,
        what: &str,
        extra: &[String],
    ) -> Option<LoadReport> {
        let mut cmd = Command::new(&self.bins.load);
        cmd.args(extra);
        cmd.arg("--addr")
            .arg(addr.to_string())
            .args(["--connections", &spec.connections.to_string()])
            .args(["--idle", &spec.idle.to_string()])
            .args(["--size", &spec.size.to_string()])
            .args(["--pipeline", &spec.pipeline.to_string()])
            .args(["--framing", "line"])
            .args(["--duration", &format!("{}s", self.secs)])
            .args(["--warmup", &format!("{}s", self.warmup)])
            .args(["--threads", &self.client_threads.to_string()])
            .arg("--json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        if let Some(r) = spec.connect_rate {
            cmd.args(["--connect-rate", &r.to_string()]);
        }
        if spec.upper {
            cmd.arg("--upper");
        }
        if self.verbose {
            cmd.stderr(Stdio::inherit());
        } else {
            cmd.arg("--quiet").stderr(Stdio::piped());
        }
        let out = match cmd.output() {
            Ok(o) => o,
            Err(e) => {
                self.failures
                    .push(format!("{what}: cannot run sandport-load: {e}"));
                return None;
            }
        };
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let report: LoadReport = match serde_json::from_slice(&out.stdout) {
            Ok(r) => r,
            Err(e) => {
                self.failures.push(format!(
                    "{what}: sandport-load failed ({}): {e}: {stderr}",
                    out.status
                ));
                return None;
            }
        };
        if report.errors.wrong_replies > 0 {
            self.failures.push(format!(
                "{what}: {} wrong replies: {}",
                report.errors.wrong_replies,
                report.error_samples.join("; ")
            ));
        }
        Some(report)
    }

    /// Records a problem that fails a smoke run (and is only reported in a full run).
    pub(crate) fn smoke_check(&mut self, what: &str, r: &LoadReport) {
        if self.smoke && (r.errors.total() > 0 || r.messages == 0) {
            self.failures.push(format!(
                "{what}: {} messages, errors: {} {}",
                r.messages,
                r.errors.summary(),
                r.error_samples.join("; ")
            ));
        }
    }

    /// Starts every server, then runs the load on each in turn, round after round (A B C A B C
    /// ...), and stops them.
    fn compare(&mut self, title: &str, servers: &[Server], spec: &LoadSpec) -> Vec<Series> {
        let mut running = Vec::new();
        let mut series = Vec::new();
        for s in servers {
            match server::start(&self.bins, s, "line", &[]) {
                Ok(r) => {
                    running.push(r);
                    series.push(Series {
                        server: s.clone(),
                        rounds: Vec::new(),
                    });
                }
                Err(e) => self
                    .failures
                    .push(format!("{title}: {} did not start: {e}", s.label())),
            }
        }
        for round in 1..=self.rounds {
            for (i, r) in running.iter_mut().enumerate() {
                let what = format!("{title}, {}, round {round}", r.server.label());
                if let Some(died) = r.exited() {
                    self.failures
                        .push(format!("{what}: the server died: {died}"));
                    continue;
                }
                let addr = r.addr;
                if let Some(rep) = self.run_load(addr, spec, &what) {
                    progress(&what, round, self.rounds, &rep);
                    self.smoke_check(&what, &rep);
                    series[i].rounds.push(rep);
                }
            }
        }
        for r in running {
            r.stop();
        }
        series
    }
}

fn describe_all(servers: &[Server]) -> String {
    servers
        .iter()
        .map(|s| s.describe())
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn progress(what: &str, round: usize, rounds: usize, r: &LoadReport) {
    eprintln!(
        "bench: {what} ({round}/{rounds}): {:>9} msg/s  p50 {:>7.1} us  p99 {:>8.1} us  errors {}",
        thousands(r.msgs_per_sec),
        r.latency_us.p50,
        r.latency_us.p99,
        r.errors.summary()
    );
}

/// A throughput table: one row per server, ratios against `baseline`; with `size`, a MiB/s
/// column.
fn throughput_table(
    out: &mut String,
    key: (&str, &str),
    series: &[Series],
    baseline: &Server,
    size: Option<usize>,
) {
    let base = series
        .iter()
        .find(|s| &s.server == baseline)
        .map(|s| s.median(|r| r.msgs_per_sec))
        .unwrap_or(f64::NAN);
    let (key, value) = key;
    let mib = if size.is_some() {
        " MiB/s each way |"
    } else {
        ""
    };
    let mib_align = if size.is_some() { " ---: |" } else { "" };
    let _ = writeln!(
        out,
        "| {key} | server | msg/s |{mib} vs {} | p50 µs | p99 µs | p99.9 µs | errors |",
        baseline.label()
    );
    let _ = writeln!(
        out,
        "| --- | --- | ---: |{mib_align} ---: | ---: | ---: | ---: | --- |"
    );
    for s in series {
        let tput = s.median(|r| r.msgs_per_sec);
        let mib = size.map_or(String::new(), |b| {
            format!(" {:.0} |", tput * b as f64 / (1 << 20) as f64)
        });
        let _ = writeln!(
            out,
            "| {value} | {} | {} |{mib} {} | {:.1} | {:.1} | {:.1} | {} |",
            s.server.label(),
            thousands(tput),
            ratio(tput / base),
            s.median(|r| r.latency_us.p50),
            s.median(|r| r.latency_us.p99),
            s.median(|r| r.latency_us.p99_9),
            s.errors()
        );
    }
}

/// Every round's figures, for judging the noise.
fn raw_rounds(out: &mut String, label: &str, series: &[Series]) {
    let _ = writeln!(out, "\n<details><summary>Every round: {label}</summary>\n");
    let _ = writeln!(
        out,
        "| server | round | msg/s | p50 µs | p99 µs | p99.9 µs | errors |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: | --- |");
    for s in series {
        for (i, r) in s.rounds.iter().enumerate() {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {} |",
                s.server.label(),
                i + 1,
                thousands(r.msgs_per_sec),
                r.latency_us.p50,
                r.latency_us.p99,
                r.latency_us.p99_9,
                r.errors.summary()
            );
        }
    }
    let _ = writeln!(out, "\n</details>\n");
}

fn ratio_of(series: &[Series], a: &Server, b: &Server) -> f64 {
    let get = |s: &Server| {
        series
            .iter()
            .find(|x| &x.server == s)
            .map(|x| x.median(|r| r.msgs_per_sec))
            .unwrap_or(f64::NAN)
    };
    get(a) / get(b)
}

fn ratio_target(what: String, min: f64, r: f64) -> Target {
    Target {
        what,
        target: format!(">= {min:.2}x"),
        measured: ratio(r),
        pass: r.is_finite().then_some(r >= min),
    }
}

/// Echo, 64 B, per isolation mode against the native handler.
pub fn echo(ctx: &mut Ctx) -> Section {
    let conns: &[usize] = if ctx.smoke { &[4] } else { &[16, 64] };
    let servers = [
        Server::Native,
        Server::Sandport("worker"),
        Server::SandportV2("worker"),
        Server::Sandport("connection"),
        Server::Sandport("message"),
        Server::SandportV2("message"),
    ];
    let mut body = String::new();
    let mut targets = Vec::new();
    let mut raw = String::new();
    let _ = writeln!(
        body,
        "64-byte messages (63 + newline), ping-pong (one message in flight per connection), \
         `--framing line`. Servers: {}.\n",
        describe_all(&servers)
    );
    for &c in conns {
        let title = format!("echo 64 B, {c} conns");
        let spec = LoadSpec::ping_pong(c, 64);
        let series = ctx.compare(&title, &servers, &spec);
        throughput_table(
            &mut body,
            ("connections", &c.to_string()),
            &series,
            &Server::Native,
            None,
        );
        body.push('\n');
        for (iso, min) in [("worker", 0.95), ("connection", 0.95), ("message", 0.80)] {
            targets.push(ratio_target(
                format!("echo 64 B, {c} connections, `--isolation {iso}` vs native"),
                min,
                ratio_of(&series, &Server::Sandport(iso), &Server::Native),
            ));
        }
        targets.push(ratio_target(
            format!("echo 64 B, {c} connections, contract 0.2 `--isolation worker` vs native"),
            0.95,
            ratio_of(&series, &Server::SandportV2("worker"), &Server::Native),
        ));
        raw_rounds(&mut raw, &title, &series);
    }
    body.push_str(&raw);
    Section {
        title: "Echo, 64 B: the sandbox's cost per isolation mode".into(),
        body,
        targets,
    }
}

/// 4 KiB and 64 KiB messages, `--isolation worker` against native.
pub fn large(ctx: &mut Ctx) -> Section {
    let sizes: &[usize] = if ctx.smoke { &[4096] } else { &[4096, 65536] };
    let c = if ctx.smoke { 4 } else { 16 };
    let servers = [Server::Native, Server::Sandport("worker")];
    let mut body = String::new();
    let mut raw = String::new();
    let mut targets = Vec::new();
    let _ = writeln!(
        body,
        "{c} connections, ping-pong, `--framing line` (each size includes the newline). Servers: \
         {}.\n",
        describe_all(&servers)
    );
    for &size in sizes {
        let title = format!("echo {} KiB, {c} conns", size / 1024);
        let spec = LoadSpec::ping_pong(c, size);
        let series = ctx.compare(&title, &servers, &spec);
        throughput_table(
            &mut body,
            ("size", &format!("{} KiB", size / 1024)),
            &series,
            &Server::Native,
            Some(size),
        );
        body.push('\n');
        targets.push(ratio_target(
            format!(
                "{} KiB messages, `--isolation worker` vs native",
                size / 1024
            ),
            0.90,
            ratio_of(&series, &Server::Sandport("worker"), &Server::Native),
        ));
        raw_rounds(&mut raw, &title, &series);
    }
    body.push_str(&raw);
    Section {
        title: "Large messages".into(),
        body,
        targets,
    }
}

/// sandport against the thread-per-connection server.
pub fn tpc(ctx: &mut Ctx) -> Section {
    let c = if ctx.smoke { 8 } else { 64 };
    let servers = [
        Server::Tpc,
        Server::Sandport("worker"),
        Server::Sandport("message"),
    ];
    let title = format!("vs tpc-server, {c} conns");
    let spec = LoadSpec::ping_pong(c, 64);
    let series = ctx.compare(&title, &servers, &spec);
    let mut body = String::new();
    let _ = writeln!(
        body,
        "64-byte messages, ping-pong, {c} connections. Servers: {}.\n",
        describe_all(&servers)
    );
    throughput_table(
        &mut body,
        ("connections", &c.to_string()),
        &series,
        &Server::Tpc,
        None,
    );
    let p99 = |s: &Server| {
        series
            .iter()
            .find(|x| &x.server == s)
            .map(|x| x.median(|r| r.latency_us.p99))
            .unwrap_or(f64::NAN)
    };
    let mut targets = Vec::new();
    for iso in ["worker", "message"] {
        let sp = Server::Sandport(iso);
        targets.push(ratio_target(
            format!("{c} connections, `--isolation {iso}`: throughput vs tpc-server"),
            1.0,
            ratio_of(&series, &sp, &Server::Tpc),
        ));
        let (a, b) = (p99(&sp), p99(&Server::Tpc));
        targets.push(Target {
            what: format!("{c} connections, `--isolation {iso}`: p99 vs tpc-server"),
            target: "lower".into(),
            measured: format!("{a:.1} µs vs {b:.1} µs"),
            pass: (a.is_finite() && b.is_finite()).then_some(a < b),
        });
    }
    raw_rounds(&mut body, &title, &series);
    Section {
        title: "Against a thread-per-connection server".into(),
        body,
        targets,
    }
}

/// What one round of the many-connections scenario saw.
struct ScaleRound {
    at_2: Option<ProcStats>,
    peak: ProcStats,
    report: Option<LoadReport>,
    died: Option<String>,
}

/// 10,000 connections (9,900 idle, 100 active): threads, memory and latency, sandport and
/// tpc-server side by side.
pub fn c10k(ctx: &mut Ctx, total: usize) -> Section {
    let (active, idle) = if ctx.smoke {
        (10, 190)
    } else {
        (100, total.saturating_sub(100))
    };
    let total = active + idle;
    // The default mode and the cheapest per message: the 2 ms target is about the event loop
    // under 10,000 connections, which `message` hides behind a fresh instance per message.
    let servers = [
        Server::Sandport("message"),
        Server::Sandport("worker"),
        Server::Tpc,
    ];
    let spec = LoadSpec {
        connections: active,
        idle,
        size: 64,
        pipeline: 1,
        connect_rate: (!ctx.smoke).then_some(4000.0),
        upper: false,
    };
    let mut results: Vec<Vec<ScaleRound>> = servers.iter().map(|_| Vec::new()).collect();
    for round in 1..=ctx.rounds {
        for (i, s) in servers.iter().enumerate() {
            let what = format!("{total} conns, {}, round {round}", s.label());
            let extra: Vec<String> = match s {
                Server::Tpc => Vec::new(),
                _ => vec!["--max-connections".into(), (total + 2000).to_string()],
            };
            let mut running = match server::start(&ctx.bins, s, "line", &extra) {
                Ok(r) => r,
                Err(e) => {
                    ctx.failures.push(format!("{what}: did not start: {e}"));
                    continue;
                }
            };
            let pid = running.pid();
            // Two served connections: the thread count to compare with.
            let at_2 = match server::probe_connections(running.addr, 2, false) {
                Ok(conns) => {
                    std::thread::sleep(Duration::from_millis(200));
                    let st = server::proc_stats(pid);
                    drop(conns);
                    st
                }
                Err(e) => {
                    ctx.failures.push(format!("{what}: probe: {e}"));
                    None
                }
            };
            std::thread::sleep(Duration::from_millis(200));
            let stop = Arc::new(AtomicBool::new(false));
            let sampler = {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut peak = ProcStats::default();
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(st) = server::proc_stats(pid) {
                            peak.threads = peak.threads.max(st.threads);
                            peak.rss_kib = peak.rss_kib.max(st.rss_kib);
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    peak
                })
            };
            let report = ctx.run_load(running.addr, &spec, &what);
            stop.store(true, Ordering::Relaxed);
            let peak = sampler.join().unwrap_or_default();
            let died = running.exited();
            if let Some(r) = &report {
                progress(&what, round, ctx.rounds, r);
                eprintln!(
                    "bench: {what}: threads {} with 2 connections, {} at peak; RSS peak {:.1} MiB",
                    at_2.map_or("?".into(), |s| s.threads.to_string()),
                    peak.threads,
                    peak.rss_kib as f64 / 1024.0
                );
                if *s != Server::Tpc || ctx.smoke {
                    ctx.smoke_check(&what, r);
                }
            }
            if let (Some(d), false) = (&died, *s == Server::Tpc && !ctx.smoke) {
                ctx.failures.push(format!("{what}: the server died: {d}"));
            }
            running.stop();
            results[i].push(ScaleRound {
                at_2,
                peak,
                report,
                died,
            });
        }
    }

    let mut body = String::new();
    let _ = writeln!(
        body,
        "{total} connections: {idle} idle (connected, silent) and {active} active (64 B \
         ping-pong), opened {} before the measurement starts. Threads and \
         resident memory (VmRSS) come from /proc/PID/status: once with 2 connections open, and \
         the peak sampled every 100 ms during the load. sandport runs `--isolation message` \
         (the default) and `--isolation worker`, with `--max-connections {}`.\n",
        spec.connect_rate
            .map_or("as fast as they complete".to_string(), |r| format!(
                "{r:.0}"
            )),
        total + 2000
    );
    let _ = writeln!(
        body,
        "| server | threads, 2 conns | threads, {total} conns | RSS, 2 conns | RSS, {total} conns \
         | active p99 µs | active msg/s | idle open at end | connect failures | other errors | \
         server died |"
    );
    let _ = writeln!(
        body,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"
    );
    let mut targets = Vec::new();
    for (s, rounds) in servers.iter().zip(&results) {
        let med =
            |f: &dyn Fn(&ScaleRound) -> Option<f64>| median(rounds.iter().filter_map(f).collect());
        let t2 = med(&|r| r.at_2.map(|s| s.threads as f64));
        let tpeak = med(&|r| Some(r.peak.threads as f64));
        let rss2 = med(&|r| r.at_2.map(|s| s.rss_kib as f64 / 1024.0));
        let rsspeak = med(&|r| Some(r.peak.rss_kib as f64 / 1024.0));
        let p99 = med(&|r| r.report.as_ref().map(|r| r.latency_us.p99));
        let tput = med(&|r| r.report.as_ref().map(|r| r.msgs_per_sec));
        let idle_open = med(&|r| r.report.as_ref().map(|r| r.idle_open_at_end as f64));
        let mut errs = sandport_bench::report::Errors::default();
        for r in rounds.iter().filter_map(|r| r.report.as_ref()) {
            errs.add(&r.errors);
        }
        let connect_failed = errs.connect_failed;
        errs.connect_failed = 0;
        let died = rounds.iter().filter(|r| r.died.is_some()).count();
        let _ = writeln!(
            body,
            "| {} | {:.0} | {:.0} | {:.1} MiB | {:.1} MiB | {:.1} | {} | {:.0} / {idle} | {} | {} | \
             {} |",
            s.label(),
            t2,
            tpeak,
            rss2,
            rsspeak,
            p99,
            thousands(tput),
            idle_open,
            connect_failed,
            errs.summary(),
            if died == 0 {
                "no".to_string()
            } else {
                format!("{died} of {} rounds", rounds.len())
            }
        );
        if let Server::Sandport(iso) = s {
            targets.push(Target {
                what: format!(
                    "{total} connections, `--isolation {iso}`: sandport thread count vs 2 \
                     connections"
                ),
                target: "unchanged".into(),
                measured: format!("{t2:.0} -> {tpeak:.0}"),
                pass: (t2.is_finite() && tpeak.is_finite()).then_some(tpeak <= t2),
            });
            targets.push(Target {
                what: format!("{total} connections, `--isolation {iso}`: sandport RSS"),
                target: "<= 200 MB".into(),
                measured: format!("{:.1} MB", rsspeak * 1.048576),
                pass: rsspeak.is_finite().then_some(rsspeak * 1.048576 <= 200.0),
            });
            targets.push(Target {
                what: format!(
                    "{total} connections, `--isolation {iso}`: p99 of the {active} active clients"
                ),
                target: "<= 2 ms".into(),
                measured: format!("{:.2} ms", p99 / 1e3),
                pass: p99.is_finite().then_some(p99 <= 2000.0),
            });
        } else {
            targets.push(Target {
                what: format!("{total} connections against tpc-server"),
                target: "report".into(),
                measured: format!(
                    "{tpeak:.0} threads, {rsspeak:.0} MiB, p99 {:.2} ms, {} failures",
                    p99 / 1e3,
                    connect_failed + errs.total()
                ),
                pass: None,
            });
        }
    }
    let _ = writeln!(
        body,
        "\nRSS is the server process's resident memory; a thread's kernel stack and socket \
         buffers are not part of it. Errors summed over the rounds."
    );
    for (s, rounds) in servers.iter().zip(&results) {
        for (i, r) in rounds.iter().enumerate() {
            if let Some(d) = &r.died {
                let _ = writeln!(body, "\n{} died in round {}: {d}", s.label(), i + 1);
            }
            if let Some(rep) = &r.report {
                if !rep.error_samples.is_empty() {
                    let _ = writeln!(
                        body,
                        "\n{} round {} errors, first ones: {}",
                        s.label(),
                        i + 1,
                        rep.error_samples.join("; ")
                    );
                }
            }
        }
    }
    Section {
        title: format!("{total} concurrent connections"),
        body,
        targets,
    }
}

/// Start to first reply, cold (empty compile cache) and warm.
pub fn startup(ctx: &mut Ctx, plugins: &[PathBuf]) -> Section {
    let mut body = String::new();
    let mut targets = Vec::new();
    let _ = writeln!(
        body,
        "Time from starting `sandport --plugin P --cache-dir DIR` to the first reply on a new \
         connection (`ping`), median of {} rounds. Cold: DIR empty, the plugin is compiled; \
         warm: a second start with the same DIR. `--isolation message`, so the first message \
         also instantiates the plugin.\n",
        ctx.rounds
    );
    let _ = writeln!(body, "| plugin | size | cold ms | warm ms | reply |");
    let _ = writeln!(body, "| --- | ---: | ---: | ---: | --- |");
    for plugin in plugins {
        let name = plugin
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let size = std::fs::metadata(plugin).map(|m| m.len()).unwrap_or(0);
        let mut cold = Vec::new();
        let mut warm = Vec::new();
        let mut reply = String::new();
        for round in 1..=ctx.rounds {
            let cache = ctx
                .target_dir
                .join("bench-startup-cache")
                .join(format!("{name}-{round}"));
            let _ = std::fs::remove_dir_all(&cache);
            for (kind, into) in [("cold", &mut cold), ("warm", &mut warm)] {
                let what = format!("start-up {name} {kind}, round {round}");
                match time_first_reply(&ctx.bins, plugin, &cache) {
                    Ok((ms, r)) => {
                        eprintln!("bench: {what}: {ms:.1} ms (reply {r:?})");
                        into.push(ms);
                        reply = r;
                    }
                    Err(e) => ctx.failures.push(format!("{what}: {e}")),
                }
            }
            let _ = std::fs::remove_dir_all(&cache);
        }
        let (c, w) = (median(cold), median(warm));
        let shown: String = reply.chars().take(30).collect();
        let _ = writeln!(
            body,
            "| {name} | {} | {c:.1} | {w:.1} | `{shown}` |",
            megabytes(size)
        );
        let big = size >= 10_000_000;
        targets.push(Target {
            what: format!(
                "start to first reply, {name} ({}), warm cache",
                megabytes(size)
            ),
            target: if big {
                "<= 100 ms"
            } else {
                "<= 100 ms (for 15-20 MB components)"
            }
            .into(),
            measured: format!("{w:.1} ms warm, {c:.1} ms cold"),
            pass: (big && w.is_finite()).then_some(w <= 100.0),
        });
    }
    Section {
        title: "Start-up: start to first reply".into(),
        body,
        targets,
    }
}

fn megabytes(bytes: u64) -> String {
    if bytes >= 1_000_000 {
        format!("{:.1} MB", bytes as f64 / 1e6)
    } else {
        format!("{:.0} KB", bytes as f64 / 1e3)
    }
}

fn time_first_reply(bins: &Bins, plugin: &Path, cache: &Path) -> Result<(f64, String), String> {
    let t = Instant::now();
    let running = server::start_plugin(bins, plugin, cache)?;
    let reply = server::first_reply(running.addr, Duration::from_secs(60))?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    running.stop();
    Ok((ms, reply))
}

/// The criterion results of `cargo bench -p sandport --bench call_path`, if fresh.
pub fn micro(ctx: &Ctx, since: Option<SystemTime>) -> Section {
    let dir = ctx.target_dir.join("criterion");
    let mut found = Vec::new();
    collect_criterion(&dir, since, &mut found);
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let mut body = String::new();
    let mut targets = Vec::new();
    if found.is_empty() {
        let _ = writeln!(
            body,
            "No fresh results in {}: run `cargo bench -p sandport --bench call_path` (bench/run.sh \
             does, unless --no-micro or --smoke).",
            dir.display()
        );
    } else {
        let _ = writeln!(
            body,
            "`cargo bench -p sandport --bench call_path` (criterion): one `on-message` call \
             through the worker's `WorkerPool`, the server's own call path (store, deadline, \
             output flush, reply copy included).\n"
        );
        let _ = writeln!(body, "| benchmark | time per call | median |");
        let _ = writeln!(body, "| --- | ---: | ---: |");
        for (id, typical, med) in &found {
            let _ = writeln!(body, "| {id} | {} | {} |", ns(*typical), ns(*med));
            let limit = match id.as_str() {
                s if s.contains("v2_state") => None,
                s if s.contains("component_reused") => Some(250.0),
                s if s.contains("component_fresh") => Some(6000.0),
                _ => None,
            };
            if let Some(limit) = limit {
                targets.push(Target {
                    what: format!("micro: {id}"),
                    target: format!("<= {}", ns(limit)),
                    measured: ns(*typical),
                    pass: Some(*typical <= limit),
                });
            }
        }
    }
    if let Some(line) = redis_state_op(&found) {
        let _ = writeln!(body, "\n{line}");
    }
    if let Some(t) = state_op_target(&found) {
        let _ = writeln!(
            body,
            "\nOne state call from a guest (contract 0.2, memory backend, 64-byte values): \
             (`v2_state_16_ops` - `v2_component_reused`) / 16 = {}.",
            t.measured
        );
        targets.push(t);
    }
    Section {
        title: "Microbenchmarks: the call path".into(),
        body,
        targets,
    }
}

/// What the `redis://` backend costs a state call next to `memory` (`--bench state`, host side).
fn redis_state_op(found: &[(String, f64, f64)]) -> Option<String> {
    let time = |id: &str| {
        found
            .iter()
            .find(|(found, _, _)| found == id)
            .map(|(_, typical, _)| *typical)
    };
    let (redis_get, redis_set) = (time("state_redis/get_64B")?, time("state_redis/set_64B")?);
    let (memory_get, memory_set) = (time("state_memory/get_64B")?, time("state_memory/set_64B")?);
    Some(format!(
        "One state get / set on the `redis://` backend (`cargo bench -p sandport --bench state`: \
         host side, a redis-server on loopback, one round trip and the operation's Lua script): \
         {} / {}, against {} / {} on `memory`; the throughput cost end to end is measured by \
         `bench/state-redis.sh` (see docs/state-redis.md).",
        ns(redis_get),
        ns(redis_set),
        ns(memory_get),
        ns(memory_set)
    ))
}

/// A state call's cost from a guest: the 16-op echo minus the plain one, over 16.
fn state_op_target(found: &[(String, f64, f64)]) -> Option<Target> {
    let time = |name: &str| {
        found
            .iter()
            .find(|(id, _, _)| id.contains(name) && id.ends_with("64B"))
            .map(|(_, typical, _)| *typical)
    };
    let per_op = (time("v2_state_16_ops")? - time("v2_component_reused")?) / 16.0;
    Some(Target {
        what: "micro: one state get or set from a guest (64 B, memory backend)".into(),
        target: "<= 1.00 µs".into(),
        measured: ns(per_op),
        pass: Some(per_op <= 1000.0),
    })
}

fn ns(x: f64) -> String {
    if x >= 1000.0 {
        format!("{:.2} µs", x / 1000.0)
    } else {
        format!("{x:.0} ns")
    }
}

/// Finds `new/benchmark.json` + `new/estimates.json` pairs under `dir`: (id, typical, median).
fn collect_criterion(dir: &Path, since: Option<SystemTime>, found: &mut Vec<(String, f64, f64)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") {
            let est = path.join("estimates.json");
            let fresh = std::fs::metadata(&est)
                .and_then(|m| m.modified())
                .is_ok_and(|m| since.is_none_or(|s| m >= s));
            if !fresh {
                continue;
            }
            let read = |f: &str| -> Option<serde_json::Value> {
                serde_json::from_slice(&std::fs::read(path.join(f)).ok()?).ok()
            };
            let (Some(b), Some(est)) = (read("benchmark.json"), read("estimates.json")) else {
                continue;
            };
            let id = b["full_id"].as_str().unwrap_or("?").to_string();
            let point = |k: &str| est[k]["point_estimate"].as_f64();
            let typical = point("slope").or_else(|| point("mean")).unwrap_or(f64::NAN);
            let med = point("median").unwrap_or(f64::NAN);
            found.push((id, typical, med));
        } else {
            collect_criterion(&path, since, found);
        }
    }
}

/// The summary table of every target.
pub fn targets_table(sections: &[Section]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| scenario | target | measured | |");
    let _ = writeln!(out, "| --- | --- | --- | --- |");
    for t in sections.iter().flat_map(|s| &s.targets) {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            t.what,
            t.target,
            t.measured,
            verdict(t.pass)
        );
    }
    out
}
