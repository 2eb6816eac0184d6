//! The swap scenario (issue 11): a running load's p99 while the plugin file is replaced every
//! few hundred milliseconds, and while an 18 MB Python component compiles in the background,
//! against the same load in steady state; and the swap latency, from the rename into place to
//! the first reply of the new version.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sandport_bench::report::LoadReport;

use crate::scenarios::{median, progress, thousands, Ctx, LoadSpec, Section, Target};
use crate::server;

/// The probe line: the Rust `upper` answers `É`, the WAT one leaves the `é` (ASCII only), and
/// the Python one answers `É`: each reply says which version served it.
const PROBE: &str = "é";
/// Between two swaps of the swapping phase (pacing, not synchronisation).
const SWAP_PAUSE: Duration = Duration::from_millis(200);
/// How long the Python component may take to compile and be served.
const PYTHON_WITHIN: Duration = Duration::from_secs(300);

/// The plugin files the scenario alternates.
struct Files {
    rust: PathBuf,
    wat: PathBuf,
    python: PathBuf,
}

pub fn swap(ctx: &mut Ctx, root: &Path) -> Section {
    let files = Files {
        rust: root.join("plugins/upper.wasm"),
        wat: root.join("tests/plugins/upper-wat.wasm"),
        python: root.join("tests/plugins/upper-python.wasm"),
    };
    let spec = LoadSpec {
        upper: true,
        ..LoadSpec::ping_pong(64, 64)
    };
    let (mut steady, mut swapping, mut compiling) = (Vec::new(), Vec::new(), Vec::new());
    let (mut latencies, mut python_latencies) = (Vec::new(), Vec::new());
    for round in 1..=ctx.rounds {
        match run_round(ctx, &files, &spec, round) {
            Ok(r) => {
                steady.push(r.steady);
                swapping.push(r.swapping);
                compiling.extend(r.compiling);
                latencies.extend(r.latencies);
                python_latencies.extend(r.python);
            }
            Err(e) => ctx.failures.push(format!("swap, round {round}: {e}")),
        }
    }
    let p99 = |v: &[LoadReport]| median(v.iter().map(|r| r.latency_us.p99).collect());
    let p50 = |v: &[LoadReport]| median(v.iter().map(|r| r.latency_us.p50).collect());
    let rate = |v: &[LoadReport]| median(v.iter().map(|r| r.msgs_per_sec).collect());
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    let lat_ms: Vec<f64> = latencies.iter().map(ms).collect();
    let slowest = lat_ms.iter().copied().fold(f64::NAN, f64::max);
    let py_ms: Vec<f64> = python_latencies.iter().map(ms).collect();
    let mut body = String::new();
    let _ = writeln!(
        body,
        "`sandport --plugin DIR/p.wasm --workers 2 --cache-dir FRESH` (a fresh server and \
         compile cache per round: each file compiles the first time it is renamed in, as a new \
         version does, and comes from the cache after), `sandport-load --connections 64 --size 64 --upper` (ping-pong, \
         every reply checked) in three phases per round: steady; while `p.wasm` is replaced by \
         rename every {} ms, alternating the Rust and the WAT `upper` (both answer the load in \
         upper case); and while the 18 MB `upper-python.wasm` is renamed in and compiled in the \
         background (one compile thread at nice 10), the load run in {:.0} s slices until it \
         serves (the slice during which it began to serve is left out: it measures the Python \
         version itself). A probe connection sends `{PROBE}` after each rename until the reply shows the \
         new version: that is the swap latency. Medians of {} rounds.\n",
        SWAP_PAUSE.as_millis(),
        ctx.secs,
        ctx.rounds
    );
    let _ = writeln!(
        body,
        "| phase | msg/s | p50 | p99 |\n| --- | ---: | ---: | ---: |"
    );
    for (what, v) in [
        ("steady", &steady),
        ("swapping", &swapping),
        ("compiling upper-python.wasm", &compiling),
    ] {
        let _ = writeln!(
            body,
            "| {what} | {} | {:.0} µs | {:.0} µs |",
            thousands(rate(v)),
            p50(v),
            p99(v)
        );
    }
    let _ = writeln!(
        body,
        "\nSwap latency (rename to the first reply of the new version), {} swaps of a small \
         plugin under that load (the first of each round compiles the WAT module, the others \
         load from the cache): median {:.0} ms, slowest {:.0} ms. The Python component: median \
         {:.1} s from its rename to its first reply, compiling included.",
        lat_ms.len(),
        median(lat_ms.clone()),
        slowest,
        median(py_ms) / 1e3
    );
    let targets = vec![
        Target {
            what: "swap under load: the new version served within 1 s of the rename".into(),
            target: "≤ 1 s".into(),
            measured: format!("slowest of {} swaps: {slowest:.0} ms", lat_ms.len()),
            pass: (!lat_ms.is_empty()).then_some(slowest <= 1000.0),
        },
        Target {
            what: "p99 of 64 ping-pong connections while swapping, against steady".into(),
            target: "reported".into(),
            measured: format!("{:.0} µs against {:.0} µs", p99(&swapping), p99(&steady)),
            pass: None,
        },
        Target {
            what: "p99 while an 18 MB Python component compiles in the background".into(),
            target: "reported".into(),
            measured: format!("{:.0} µs against {:.0} µs", p99(&compiling), p99(&steady)),
            pass: None,
        },
    ];
    Section {
        title: "Swap: replacing the plugin under load (issue 11)".into(),
        body,
        targets,
    }
}

/// What one round measured.
struct Round {
    steady: LoadReport,
    swapping: LoadReport,
    compiling: Vec<LoadReport>,
    latencies: Vec<Duration>,
    python: Option<Duration>,
}

fn run_round(ctx: &mut Ctx, files: &Files, spec: &LoadSpec, round: usize) -> Result<Round, String> {
    let dir = ctx
        .target_dir
        .join(format!("bench-swap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let target = dir.join("p.wasm");
    std::fs::copy(&files.rust, &target).map_err(|e| format!("copy: {e}"))?;
    let target_s = target.to_string_lossy().into_owned();
    // A fresh compile cache per round, as a server with its default cache sees a new version:
    // each file compiles the first time it is renamed in, and comes from the cache after.
    let cache = dir.join("cache");
    let cache_s = cache.to_string_lossy().into_owned();
    let running = server::start_with(&ctx.bins, Path::new(&target_s), &["--cache-dir", &cache_s])?;
    let addr = running.addr;
    let rounds = ctx.rounds;
    let load = |ctx: &mut Ctx, what: &str| {
        let r = ctx.run_load(addr, spec, what);
        if let Some(r) = &r {
            progress(what, round, rounds, r);
        }
        r.ok_or_else(|| format!("{what}: no report"))
    };
    let steady = load(ctx, "swap: steady")?;

    let stop = Arc::new(AtomicBool::new(false));
    let warmup = Duration::from_secs_f64(ctx.warmup);
    let swapper = spawn_swapper(addr, dir.clone(), files, warmup, stop.clone());
    let swapping = load(ctx, "swap: swapping");
    stop.store(true, Ordering::Relaxed);
    let latencies = swapper.join().map_err(|_| "the swapper panicked")??;
    let swapping = swapping?;

    // The WAT version serves before the Python one is renamed in (the probe tells them apart).
    deploy(&dir, &files.wat)?;
    wait_for(addr, "é", Duration::from_secs(10))?;
    let python = files.python.clone();
    let pdir = dir.clone();
    let compile = std::thread::spawn(move || -> Result<Duration, String> {
        std::thread::sleep(warmup);
        let renamed = deploy(&pdir, &python)?;
        wait_for(addr, "É", PYTHON_WITHIN)?;
        Ok(renamed.elapsed())
    });
    let mut compiling = Vec::new();
    while !compile.is_finished() {
        compiling.push(load(ctx, "swap: compiling upper-python.wasm")?);
    }
    let python = compile.join().map_err(|_| "the Python deploy panicked")??;
    // The last slice ran partly against the Python version (much slower per message under
    // `--isolation message`): it measures that version, not the compile.
    if compiling.len() > 1 {
        compiling.pop();
    }
    eprintln!(
        "bench: swap: upper-python.wasm served {:.1} s after its rename",
        python.as_secs_f64()
    );
    running.stop();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Round {
        steady,
        swapping,
        compiling,
        latencies,
        python: Some(python),
    })
}

/// Alternates the WAT and the Rust `upper` in `dir/p.wasm` until `stop`, timing each swap.
fn spawn_swapper(
    addr: SocketAddr,
    dir: PathBuf,
    files: &Files,
    warmup: Duration,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Result<Vec<Duration>, String>> {
    let (rust, wat) = (files.rust.clone(), files.wat.clone());
    std::thread::spawn(move || {
        std::thread::sleep(warmup);
        let mut took = Vec::new();
        let mut next_wat = true;
        while !stop.load(Ordering::Relaxed) {
            let (file, want) = if next_wat {
                (&wat, "é")
            } else {
                (&rust, "É")
            };
            let renamed = deploy(&dir, file)?;
            wait_for(addr, want, Duration::from_secs(10))?;
            took.push(renamed.elapsed());
            next_wat = !next_wat;
            std::thread::sleep(SWAP_PAUSE);
        }
        Ok(took)
    })
}

/// Copies `file` next to `dir/p.wasm` as a dotfile and renames it into place.
fn deploy(dir: &Path, file: &Path) -> Result<Instant, String> {
    let tmp = dir.join(".p.wasm.tmp");
    std::fs::copy(file, &tmp).map_err(|e| format!("copy {}: {e}", file.display()))?;
    std::fs::rename(&tmp, dir.join("p.wasm")).map_err(|e| format!("rename: {e}"))?;
    Ok(Instant::now())
}

/// Probes on one connection until the reply to [`PROBE`] is `want`.
fn wait_for(addr: SocketAddr, want: &str, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    let stream = TcpStream::connect(addr).map_err(|e| format!("probe: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while Instant::now() < deadline {
        writer
            .write_all(format!("{PROBE}\n").as_bytes())
            .map_err(|e| format!("probe: {e}"))?;
        line.clear();
        reader
            .read_line(&mut line)
            .map_err(|e| format!("probe: {e}"))?;
        if line.trim_end() == want {
            return Ok(());
        }
    }
    Err(format!("the probe never got {want:?} (last {line:?})"))
}
