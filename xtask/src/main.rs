//! Project tasks for sandport, run as `cargo xtask <command>` (see `usage` below).
//!
//! The guest plugins live in their own workspace (`guest-plugins/`) because they are built for
//! `wasm32-wasip2`; `cargo xtask plugins` builds them and copies the components to where the
//! host and the tests look for them. Every child command runs from the repository root with the
//! same `cargo` that runs this task.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{self, Command};

/// The Rust target the plugins are built for; it yields components directly.
const WASM_TARGET: &str = "wasm32-wasip2";
/// Example plugins, copied to `plugins/`.
const EXAMPLE_PLUGINS: &[&str] = &["print", "echo", "upper", "chat"];
/// Test-only plugins, copied to `tests/plugins/`.
const TEST_PLUGINS: &[&str] = &[
    "counter",
    "lifecycle",
    "spin",
    "membomb",
    "recurse",
    "trap",
    "sandbox",
    "badimport",
    "noexport",
    "ratelimit",
    "ratelimit1",
    "echo2",
    "statetest",
    "statebench",
];

type Result<T = (), E = String> = std::result::Result<T, E>;

fn usage() -> &'static str {
    "\
usage: cargo xtask <command> [ARGS...]

commands:
  plugins        build every guest plugin: the Rust ones (wasm32-wasip2) into plugins/
                 (examples) and tests/plugins/ (test-only), then every other language's
                 (guest-plugins/<lang>/build.sh, installing its pinned toolchain once)
  run [ARGS...]  the Rust plugins only, then `cargo run --release -p sandport -- ARGS`
                 (ARGS default to `--plugin print.wasm`; runs from the repository root)
  test [ARGS...] plugins, then `cargo test --release --workspace ARGS`
  lint           rustfmt and clippy (-D warnings) checks of both workspaces, rustfmt of fuzz/
  help           show this text"
}

fn main() {
    let mut args = env::args_os().skip(1);
    let command = args.next().map(|c| c.to_string_lossy().into_owned());
    let rest: Vec<OsString> = args.collect();
    let result = match command.as_deref() {
        None | Some("help" | "-h" | "--help") => {
            println!("{}", usage());
            Ok(())
        }
        Some("plugins") => plugins(),
        Some("run") => rust_plugins().and_then(|()| run(rest)),
        Some("test") => plugins().and_then(|()| test(rest)),
        Some("lint") => ensure_wasm_target().and_then(|()| lint()),
        Some(other) => {
            eprintln!("error: unknown command `{other}`\n\n{}", usage());
            process::exit(2);
        }
    };
    if let Err(message) = result {
        eprintln!("error: {message}");
        process::exit(1);
    }
}

/// The repository root: the parent of this crate's folder.
fn repo_root() -> PathBuf {
    let xtask_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask_dir
        .parent()
        .expect("xtask lives in the repository root")
        .to_path_buf()
}

/// A `cargo` command (the same cargo that runs this task) running in the repository root.
fn cargo() -> Command {
    let mut command = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(repo_root());
    if let Some(dir) = target_dir_from_env() {
        // Made absolute, as the child runs in another directory.
        command.env("CARGO_TARGET_DIR", dir);
    }
    command
}

/// `CARGO_TARGET_DIR` if it is set, made absolute: cargo reads a relative one from where it was
/// started, which is this process's working directory.
fn target_dir_from_env() -> Option<PathBuf> {
    let dir = env::var_os("CARGO_TARGET_DIR").filter(|dir| !dir.is_empty())?;
    Some(std::path::absolute(&dir).unwrap_or_else(|_| dir.into()))
}

/// Prints `step`, runs `command` and fails unless it exits successfully.
fn step(step: &str, command: &mut Command) -> Result {
    println!("xtask: {step}");
    let status = command
        .status()
        .map_err(|e| format!("{step}: cannot run {}: {e}", show(command)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{step}: `{}` failed ({status})", show(command)))
    }
}

/// The command line of `command`, for messages.
fn show(command: &Command) -> String {
    let mut line = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// `cargo xtask plugins`: builds every guest plugin and copies the components into place.
fn plugins() -> Result {
    rust_plugins()?;
    other_languages(&repo_root().join("tests").join("plugins"))
}

/// The Rust plugins: the examples the README starts with, and the test-only ones.
fn rust_plugins() -> Result {
    ensure_wasm_target()?;

    let root = repo_root();
    let manifest = root.join("guest-plugins").join("Cargo.toml");
    step(
        &format!("building guest plugins ({WASM_TARGET}, release)"),
        cargo()
            .args([
                "build",
                "--release",
                "--target",
                WASM_TARGET,
                "--manifest-path",
            ])
            .arg(&manifest),
    )?;

    // Where cargo put them: `<target dir>/wasm32-wasip2/release/<crate>.wasm`.
    let target_dir = target_dir_from_env().unwrap_or_else(|| root.join("guest-plugins/target"));
    let built = target_dir.join(WASM_TARGET).join("release");

    copy_plugins(&built, EXAMPLE_PLUGINS, &root.join("plugins"))?;
    copy_plugins(&built, TEST_PLUGINS, &root.join("tests").join("plugins"))
}

/// Plugins in languages other than Rust: every `guest-plugins/<lang>/build.sh` installs its
/// pinned toolchain into the tools cache (once) and builds that language's plugins from source
/// into the folder it is given, as `<plugin>-<lang>.wasm`. A failing script fails the build.
fn other_languages(out: &Path) -> Result {
    let root = repo_root();
    let mut scripts: Vec<(String, PathBuf)> = fs::read_dir(root.join("guest-plugins"))
        .map_err(|e| format!("reading guest-plugins/: {e}"))?
        .filter_map(|entry| {
            let dir = entry.ok()?.path();
            let script = dir.join("build.sh");
            let lang = dir.file_name()?.to_string_lossy().into_owned();
            script.is_file().then_some((lang, script))
        })
        .collect();
    scripts.sort();
    fs::create_dir_all(out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    let tools = tools_dir();
    for (lang, script) in scripts {
        step(
            &format!("building the {lang} plugins"),
            Command::new("bash")
                .arg(&script)
                .arg(out)
                .current_dir(&root)
                .env("SANDPORT_TOOLS", &tools)
                .env("SANDPORT_WIT", root.join("wit")),
        )?;
    }
    Ok(())
}

/// Where language toolchains are installed: `SANDPORT_TOOLS`, or the user's cache folder, so
/// they survive between runs (and CI runs) on the same machine.
fn tools_dir() -> PathBuf {
    if let Some(dir) = env::var_os("SANDPORT_TOOLS").filter(|d| !d.is_empty()) {
        return std::path::absolute(&dir).unwrap_or_else(|_| dir.into());
    }
    let cache = env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| repo_root().join("target"));
    cache.join("sandport").join("tools")
}

/// Fails unless the `wasm32-wasip2` standard library is installed, adding it with rustup if
/// it is missing.
fn ensure_wasm_target() -> Result {
    let rustup = |args: &[&str]| {
        let mut command = Command::new("rustup");
        command.args(args).current_dir(repo_root());
        command
    };
    let output = match rustup(&["target", "list", "--installed"]).output() {
        Ok(output) if output.status.success() => output,
        Ok(output) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(format!(
                "`rustup target list --installed` failed: {}",
                stderr.trim()
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!(
                "rustup not found: it installs the {WASM_TARGET} target that the plugins are \
                 built for (see https://rustup.rs)"
            ));
        }
        Err(e) => return Err(format!("cannot run rustup: {e}")),
    };
    if String::from_utf8_lossy(&output.stdout)
        .lines()
        .any(|line| line.trim() == WASM_TARGET)
    {
        return Ok(());
    }
    step(
        &format!("installing the {WASM_TARGET} target"),
        &mut rustup(&["target", "add", WASM_TARGET]),
    )
}

/// Copies `<built>/<name>.wasm` to `<dest>/<name>.wasm` for each name.
fn copy_plugins(built: &Path, names: &[&str], dest: &Path) -> Result {
    println!("xtask: copying {} to {}", names.join(", "), dest.display());
    fs::create_dir_all(dest).map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
    for name in names {
        let file = format!("{name}.wasm");
        let (from, to) = (built.join(&file), dest.join(&file));
        // Through a temporary file and a rename, so that a host loading the plugin meanwhile
        // sees either the old file or the new one, never half of one.
        let partial = dest.join(format!(".{file}.partial"));
        fs::copy(&from, &partial)
            .and_then(|_| fs::rename(&partial, &to))
            .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))?;
    }
    Ok(())
}

/// `cargo xtask run [ARGS...]`: runs the host (after `plugins`).
fn run(mut args: Vec<OsString>) -> Result {
    if args.is_empty() {
        args = vec!["--plugin".into(), "print.wasm".into()];
    }
    let mut command = cargo();
    command
        .args(["run", "--release", "-p", "sandport", "--"])
        .args(args);
    println!("xtask: running sandport");
    exec(command)
}

/// Replaces this process with `command` (so signals such as Ctrl-C go straight to it), or on
/// other platforms runs it and exits with its status.
fn exec(mut command: Command) -> Result {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let error = command.exec();
        Err(format!("cannot run {}: {error}", show(&command)))
    }
    #[cfg(not(unix))]
    {
        let status = command
            .status()
            .map_err(|e| format!("cannot run {}: {e}", show(&command)))?;
        process::exit(status.code().unwrap_or(1));
    }
}

/// `cargo xtask test [ARGS...]`: runs every test of the workspace in release mode, so the
/// integration tests spawn the optimised host (after `plugins`).
fn test(args: Vec<OsString>) -> Result {
    step(
        "testing the workspace (release)",
        cargo()
            .args(["test", "--release", "--workspace"])
            .args(args),
    )
}

/// `cargo xtask lint`: formatting and clippy of both workspaces (no plugins needed).
fn lint() -> Result {
    let guests = repo_root().join("guest-plugins").join("Cargo.toml");
    step(
        "checking formatting",
        cargo().args(["fmt", "--all", "--", "--check"]),
    )?;
    step(
        "checking formatting of the guest plugins",
        cargo()
            .args(["fmt", "--all", "--manifest-path"])
            .arg(&guests)
            .args(["--", "--check"]),
    )?;
    // The fuzz targets are one line each (their checks are in the host crate, linted below);
    // building them needs nightly and cargo-fuzz, so only their formatting is checked here.
    step(
        "checking formatting of the fuzz targets",
        cargo()
            .args(["fmt", "--all", "--manifest-path"])
            .arg(repo_root().join("fuzz").join("Cargo.toml"))
            .args(["--", "--check"]),
    )?;
    step(
        "running clippy",
        cargo().args([
            "clippy",
            "--release",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    step(
        "running clippy on the guest plugins",
        cargo()
            .args([
                "clippy",
                "--release",
                "--workspace",
                "--all-targets",
                "--target",
                WASM_TARGET,
            ])
            .arg("--manifest-path")
            .arg(&guests)
            .args(["--", "-D", "warnings"]),
    )
}
