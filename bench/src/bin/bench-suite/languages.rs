//! The `languages` scenario (issue 10): each language's `upper` example under every isolation
//! mode, as a new user would run it: msg/s and p99 at 16 ping-pong connections, and the RSS one
//! idle connection costs.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::scenarios::{median, thousands, Ctx, LoadSpec, Section, Target};
use crate::server::{self, Running};

/// msg/s under the default `--isolation message` when issue 10 was filed (a different run, on
/// this machine kind), and the factor its target asks for.
type Baseline = Option<(f64, f64)>;

/// Each language's `upper` example, and what its throughput target multiplies.
const LANGUAGES: &[(&str, &str, Baseline)] = &[
    ("Rust", "plugins/upper.wasm", None),
    ("Go", "tests/plugins/upper-go.wasm", Some((8_700.0, 5.0))),
    (
        "JavaScript",
        "tests/plugins/upper-js.wasm",
        Some((1_500.0, 10.0)),
    ),
    (
        "Python",
        "tests/plugins/upper-python.wasm",
        Some((1_100.0, 10.0)),
    ),
];

/// The modes compared, and the flags each adds.
const MODES: &[(&str, &[&str])] = &[
    ("message", &["--isolation", "message"]),
    ("connection", &["--isolation", "connection"]),
    (
        "connection, hibernate 1s",
        &["--isolation", "connection", "--hibernate-after", "1s"],
    ),
    ("worker", &["--isolation", "worker"]),
];

/// What one language measured in one mode.
#[derive(Default)]
struct Cell {
    msgs: Vec<f64>,
    p99: Vec<f64>,
    idle_kib: Option<f64>,
}

pub fn languages(ctx: &mut Ctx, root: &Path) -> Section {
    let idle = if ctx.smoke { 20 } else { 200 };
    let spec = LoadSpec {
        upper: true,
        ..LoadSpec::ping_pong(16, 64)
    };
    let mut body = String::new();
    let mut targets = Vec::new();
    let _ = writeln!(
        body,
        "Each language's `upper` example, 64-byte messages, 16 ping-pong connections, \
         `--workers 2`, every reply checked (`sandport-load --upper`); medians of {} rounds, \
         the modes interleaved. *Idle* is what one more idle connection adds to a fresh \
         server's RSS: connections that each sent one message and went quiet are opened in two \
         halves of {half}, and the RSS growth of the second half is divided by its size (so \
         one-time costs, such as the first instance's pages, are left out); each reading 0.5 s \
         after the last reply (2.5 s with `--hibernate-after 1s`), before the load.\n",
        ctx.rounds,
        half = idle / 2
    );
    let _ = writeln!(
        body,
        "| plugin | mode | msg/s | p99 (us) | idle RSS per connection |\n| --- | --- | ---: | ---: | ---: |"
    );
    for &(lang, rel, baseline) in LANGUAGES {
        let plugin = root.join(rel);
        if !plugin.is_file() {
            ctx.failures.push(format!(
                "languages: {} is not built (cargo xtask plugins)",
                plugin.display()
            ));
            continue;
        }
        let mut running: Vec<(usize, Running)> = Vec::new();
        for (m, (mode, flags)) in MODES.iter().enumerate() {
            match server::start_with(&ctx.bins, &plugin, flags) {
                Ok(r) => running.push((m, r)),
                Err(e) => (ctx.failures).push(format!("languages: {lang} {mode}: {e}")),
            }
        }
        let mut cells: Vec<Cell> = MODES.iter().map(|_| Cell::default()).collect();
        // First, on servers that have served nobody yet: no slot warmed by the load below.
        for (m, r) in running.iter() {
            let settle = if MODES[*m].0.contains("hibernate") {
                Duration::from_millis(2500)
            } else {
                Duration::from_millis(500)
            };
            match idle_cost(r, idle, settle) {
                Ok(kib) => cells[*m].idle_kib = Some(kib),
                Err(e) => (ctx.failures).push(format!("languages: {lang} {}: {e}", MODES[*m].0)),
            }
        }
        for round in 1..=ctx.rounds {
            for (m, r) in running.iter_mut() {
                let what = format!("{lang} upper, {}, round {round}", MODES[*m].0);
                if let Some(died) = r.exited() {
                    ctx.failures
                        .push(format!("{what}: the server died: {died}"));
                    continue;
                }
                if let Some(rep) = ctx.run_load(r.addr, &spec, &what) {
                    crate::scenarios::progress(&what, round, ctx.rounds, &rep);
                    ctx.smoke_check(&what, &rep);
                    cells[*m].msgs.push(rep.msgs_per_sec);
                    cells[*m].p99.push(rep.latency_us.p99);
                }
            }
        }
        for (_, r) in running {
            r.stop();
        }
        for (m, (mode, _)) in MODES.iter().enumerate() {
            let c = &cells[m];
            let _ = writeln!(
                body,
                "| {lang} | {mode} | {} | {} | {} |",
                thousands(median(c.msgs.clone())),
                thousands(median(c.p99.clone())),
                c.idle_kib.map_or("-".into(), |k| format!("{:.0} KiB", k))
            );
        }
        if let Some((before, factor)) = baseline {
            let got = median(cells[0].msgs.clone());
            targets.push(Target {
                what: format!("{lang} `upper`, default `--isolation message`, msg/s"),
                target: format!(">= {factor}x {} (issue 10's run)", thousands(before)),
                measured: format!("{} ({:.1}x)", thousands(got), got / before),
                pass: got.is_finite().then_some(got >= before * factor),
            });
        }
        let worst = (cells.iter().enumerate())
            .filter(|(m, _)| MODES[*m].0 != "connection")
            .filter_map(|(_, c)| c.idle_kib)
            .fold(f64::NAN, f64::max);
        targets.push(Target {
            what: format!(
                "{lang}: RSS per idle connection, every mode (`connection` with hibernation)"
            ),
            target: "<= 1 MiB".into(),
            measured: format!("{worst:.0} KiB at most"),
            pass: worst.is_finite().then_some(worst <= 1024.0),
        });
    }
    let _ = writeln!(
        body,
        "\n`connection` without `--hibernate-after` keeps each connection's instance for its \
         life, so its idle cost is the instance's memory; the target is judged with hibernation."
    );
    Section {
        title: "Languages: every example under every isolation mode".into(),
        body,
        targets,
    }
}

/// Opens `n` connections to `r` in two halves, each sending one message (answered in upper
/// case) and then staying quiet; returns the server's RSS growth per connection of the second
/// half, in KiB, each half read `settle` after its last reply.
fn idle_cost(r: &Running, n: usize, settle: Duration) -> Result<f64, String> {
    let rss = || server::proc_stats(r.pid()).map(|s| s.rss_kib as f64);
    let first = server::probe_connections(r.addr, n / 2, true)?;
    std::thread::sleep(settle);
    let before = rss().ok_or("cannot read the server's RSS")?;
    let second = server::probe_connections(r.addr, n - n / 2, true)?;
    std::thread::sleep(settle);
    let after = rss().ok_or("cannot read the server's RSS")?;
    drop((first, second));
    Ok((after - before).max(0.0) / (n - n / 2) as f64)
}
