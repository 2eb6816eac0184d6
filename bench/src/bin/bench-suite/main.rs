//! `bench-suite`: runs the scenarios of issue 4 against sandport, its native-echo baseline and
//! `tpc-server`, interleaving the compared servers round after round, and writes
//! `BENCHMARKS.md` (medians, ratios, targets, the machine and the command). `bench/run.sh`
//! builds everything and calls it; it can be run by hand once the binaries are built.

mod fanout;
mod languages;
mod redis;
mod scenarios;
mod server;
mod soak;
mod swap;
mod tls;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;

use scenarios::{Ctx, Section};
use server::Bins;

const SCENARIOS: &[&str] = &[
    "echo",
    "large",
    "tpc",
    "c10k",
    "startup",
    "fanout",
    "redis",
    "languages",
    "swap",
    "soak",
    "tls",
    "micro",
];

/// Runs sandport's benchmark scenarios and writes BENCHMARKS.md.
#[derive(Debug, Parser)]
#[command(name = "bench-suite", about)]
struct Args {
    /// A tiny run (one short round of each scenario, few connections) that only proves
    /// everything works; any error fails it. Writes target/bench-smoke/BENCHMARKS.md.
    #[arg(long)]
    smoke: bool,

    /// Rounds per compared server (default 3; 1 with --smoke).
    #[arg(long)]
    rounds: Option<usize>,

    /// Measured seconds per round (default 5; 1 with --smoke).
    #[arg(long)]
    secs: Option<f64>,

    /// Warm-up seconds before each measured round (default 1; 0.3 with --smoke).
    #[arg(long)]
    warmup: Option<f64>,

    /// Only these scenarios (comma-separated): echo, large, tpc, c10k, startup, fanout,
    /// redis, languages, swap, soak, tls, micro.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,

    /// Connections of the many-connections scenario (100 of them active).
    #[arg(long, default_value_t = 10_000)]
    c10k: usize,

    /// Length of the soak scenario, seconds (default 600; 4 with --smoke).
    #[arg(long)]
    soak_secs: Option<f64>,

    /// Client threads of the load generator.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,

    /// Plugins to time from start to first reply (default: plugins/echo.wasm and the Python and
    /// JS components in plugins/ if built).
    #[arg(long = "startup-plugin")]
    startup_plugins: Vec<PathBuf>,

    /// Only criterion results written after this Unix time count (bench/run.sh passes its start).
    #[arg(long)]
    micro_since: Option<u64>,

    /// Where to write the report (default: BENCHMARKS.md in the repository root; with --smoke,
    /// target/bench-smoke/BENCHMARKS.md).
    #[arg(long)]
    out: Option<PathBuf>,

    /// The command line to record in the report (bench/run.sh passes its own).
    #[arg(long)]
    command: Option<String>,

    /// The repository root (default: the current directory).
    #[arg(long, default_value = ".")]
    root: PathBuf,

    /// Show the load generator's progress lines.
    #[arg(long, short)]
    verbose: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bench: error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<ExitCode, String> {
    for s in &args.only {
        if !SCENARIOS.contains(&s.as_str()) {
            return Err(format!(
                "unknown scenario `{s}` (known: {})",
                SCENARIOS.join(", ")
            ));
        }
    }
    let root = std::path::absolute(&args.root).map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    let bin_dir = exe.parent().expect("in a folder").to_path_buf();
    let target_dir = bin_dir.parent().expect("in target/<profile>").to_path_buf();
    let bins = Bins {
        sandport: bin_dir.join("sandport"),
        load: bin_dir.join("sandport-load"),
        tpc: bin_dir.join("tpc-server"),
        echo_wasm: root.join("plugins/echo.wasm"),
        v2_echo_wasm: root.join("tests/plugins/statebench.wasm"),
    };
    for p in [
        &bins.sandport,
        &bins.load,
        &bins.tpc,
        &bins.echo_wasm,
        &bins.v2_echo_wasm,
    ] {
        if !p.is_file() {
            return Err(format!(
                "{} is missing: build with bench/run.sh (or cargo build --release -p sandport \
                 -p sandport-bench, and cargo xtask plugins)",
                p.display()
            ));
        }
    }
    let fd_limit = sandport_bench::raise_fd_limit();
    let wanted = |s: &str| args.only.is_empty() || args.only.iter().any(|o| o == s);
    if wanted("c10k") && !args.smoke && fd_limit < args.c10k as u64 + 100 {
        return Err(format!(
            "the open-file limit is {fd_limit}, the {}-connection scenario needs more: raise it \
             (ulimit -n 20000) or use --c10k N",
            args.c10k
        ));
    }
    let smoke = args.smoke;
    let mut ctx = Ctx {
        bins,
        smoke,
        rounds: args.rounds.unwrap_or(if smoke { 1 } else { 3 }).max(1),
        secs: args.secs.unwrap_or(if smoke { 1.0 } else { 5.0 }),
        warmup: args.warmup.unwrap_or(if smoke { 0.3 } else { 1.0 }),
        client_threads: args.client_threads.max(1),
        verbose: args.verbose,
        target_dir: target_dir.clone(),
        failures: Vec::new(),
    };
    let out = args.out.clone().unwrap_or_else(|| {
        if smoke {
            target_dir.join("bench-smoke/BENCHMARKS.md")
        } else {
            root.join("BENCHMARKS.md")
        }
    });
    let command = args.command.clone().unwrap_or_else(|| {
        std::env::args()
            .map(|a| shell_quote(&a))
            .collect::<Vec<_>>()
            .join(" ")
    });
    let started = SystemTime::now();

    let mut sections: Vec<Section> = Vec::new();
    if wanted("echo") {
        sections.push(scenarios::echo(&mut ctx));
    }
    if wanted("large") {
        sections.push(scenarios::large(&mut ctx));
    }
    if wanted("tpc") {
        sections.push(scenarios::tpc(&mut ctx));
    }
    if wanted("c10k") {
        sections.push(scenarios::c10k(&mut ctx, args.c10k));
    }
    if wanted("startup") {
        let plugins = if !args.startup_plugins.is_empty() {
            args.startup_plugins.clone()
        } else {
            startup_plugins(&root, smoke)
        };
        sections.push(scenarios::startup(&mut ctx, &plugins));
    }
    if wanted("fanout") {
        sections.push(fanout::fanout(&mut ctx, &root.join("plugins/chat.wasm")));
    }
    if wanted("redis") {
        sections.push(redis::redis(&mut ctx, &root));
    }
    if wanted("languages") {
        sections.push(languages::languages(&mut ctx, &root));
    }
    if wanted("swap") {
        sections.push(swap::swap(&mut ctx, &root));
    }
    if wanted("soak") {
        let (total, interval) = match args.soak_secs {
            Some(t) => (t, if t >= 60.0 { 10.0 } else { 1.0 }),
            None if smoke => (4.0, 1.0),
            None => (600.0, 10.0),
        };
        sections.push(soak::soak(&mut ctx, total, interval));
    }
    if wanted("tls") {
        sections.push(tls::tls(&mut ctx));
    }
    if wanted("micro") && !smoke {
        let since = args
            .micro_since
            .map(|s| UNIX_EPOCH + Duration::from_secs(s));
        sections.push(scenarios::micro(&ctx, since));
    }

    let doc = document(&ctx, &sections, &command, started, &root);
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(&out, doc).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    eprintln!("bench: wrote {}", out.display());
    eprint!("{}", scenarios::targets_table(&sections));
    if ctx.failures.is_empty() {
        eprintln!("bench: ok");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("bench: {} problems:", ctx.failures.len());
        for f in &ctx.failures {
            eprintln!("  - {f}");
        }
        Ok(ExitCode::from(1))
    }
}

/// echo.wasm (always), and the Python and JS components (built by `cargo xtask plugins` into
/// tests/plugins/; a full run says so loudly when they are missing).
fn startup_plugins(root: &Path, smoke: bool) -> Vec<PathBuf> {
    let mut v = vec![root.join("plugins/echo.wasm")];
    if !smoke {
        for name in ["upper-python.wasm", "upper-js.wasm"] {
            let p = root.join("tests/plugins").join(name);
            if p.is_file() {
                v.push(p);
            } else {
                eprintln!(
                    "bench: WARNING: {} is not built, so its start-up is not measured \
                     (run bench/run.sh --all-plugins, or cargo xtask plugins first)",
                    p.display()
                );
            }
        }
    }
    v
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn output_of(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

fn document(
    ctx: &Ctx,
    sections: &[Section],
    command: &str,
    started: SystemTime,
    root: &Path,
) -> String {
    let root_s = root.to_string_lossy();
    let commit = output_of("git", &["-C", &root_s, "rev-parse", "--short", "HEAD"]);
    let dirty = !output_of("git", &["-C", &root_s, "status", "--porcelain"]).is_empty();
    let secs = started.elapsed().map_or(0, |d| d.as_secs());
    let mut d = String::new();
    let _ = writeln!(d, "# sandport benchmarks\n");
    if ctx.smoke {
        let _ = writeln!(
            d,
            "**Smoke run**: tiny and short, only proves the tools work. The figures mean \
             nothing.\n"
        );
    }
    let _ = writeln!(
        d,
        "Generated by `bench/run.sh` (issue 4). Every figure is the median over the rounds; \
         the compared servers run interleaved (A B C, A B C, ...), each on its own free port \
         with `--workers 2`; the load generator (`sandport-load`, {} client threads) runs on \
         the same machine and checks every reply.\n",
        ctx.client_threads
    );
    let _ = writeln!(
        d,
        "Where the time goes, for every missed target (instruction counts from \
         `bench/profile.sh`, time profiles, and what was tried): \
         [bench/PROFILES.md](bench/PROFILES.md).\n"
    );
    let _ = writeln!(d, "| | |\n| --- | --- |");
    let _ = writeln!(
        d,
        "| date | {} |",
        output_of("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
    );
    let _ = writeln!(d, "| command | `{command}` |");
    let _ = writeln!(
        d,
        "| commit | {commit}{} |",
        if dirty {
            " (with uncommitted changes)"
        } else {
            ""
        }
    );
    let _ = writeln!(d, "| cores (nproc) | {} |", output_of("nproc", &[]));
    let _ = writeln!(d, "| CPU | {} |", cpu_model());
    let _ = writeln!(d, "| kernel | {} |", output_of("uname", &["-srm"]));
    let _ = writeln!(d, "| rustc | {} |", output_of("rustc", &["-V"]));
    let _ = writeln!(
        d,
        "| rounds | {} per server, {} s measured after {} s warm-up |",
        ctx.rounds, ctx.secs, ctx.warmup
    );
    let _ = writeln!(d, "| run time | {} min {} s |", secs / 60, secs % 60);
    let _ = writeln!(d, "\n## Targets\n");
    d.push_str(&scenarios::targets_table(sections));
    if !ctx.failures.is_empty() {
        let _ = writeln!(d, "\n## Problems\n");
        for f in &ctx.failures {
            let _ = writeln!(d, "- {}", f.replace('\n', " "));
        }
    }
    for s in sections {
        let _ = writeln!(d, "\n## {}\n", s.title);
        d.push_str(&s.body);
    }
    d
}
