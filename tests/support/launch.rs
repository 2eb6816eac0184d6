//! Starting the real `sandport` binary: as a server on a free port (a [`Server`]), or to
//! completion (startup failures, the `check` and `call` subcommands).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::server::Server;
use super::{eventually, sandport_bin, test_cache_dir, LogBuffer, TempDir, STARTUP_TIMEOUT};

/// How long a run to completion (a startup failure, `check`, `call`) may take.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Plugins from this size on (Python, JavaScript) take seconds to compile: see
/// [`ServerBuilder::first_loads`].
const LARGE_PLUGIN_BYTES: u64 = 1 << 20;

/// Builder for a `sandport` child process.
pub struct ServerBuilder {
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    cwd: Option<PathBuf>,
    listen: bool,
}

/// What a run to completion printed, and its exit code.
pub struct Finished {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl ServerBuilder {
    pub fn new() -> ServerBuilder {
        ServerBuilder {
            args: Vec::new(),
            envs: Vec::new(),
            cwd: None,
            listen: true,
        }
    }

    /// Adds one argument.
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_os_string());
        self
    }

    /// Adds several arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Adds `--plugin PATH`.
    pub fn plugin(self, path: impl AsRef<OsStr>) -> Self {
        self.arg("--plugin").arg(path)
    }

    /// Adds `--config VALUE`.
    pub fn config(self, kv: &str) -> Self {
        self.arg("--config").arg(kv)
    }

    /// Sets an environment variable for the child.
    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((k.as_ref().to_os_string(), v.as_ref().to_os_string()));
        self
    }

    /// Runs the child in `dir` (default: a fresh empty temp dir).
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Do not add `--listen 127.0.0.1:0` (the test passes its own `--listen`, or runs a
    /// subcommand).
    pub fn no_default_listen(mut self) -> Self {
        self.listen = false;
        self
    }

    /// Whether the test chose the compile cache itself (a folder, or none).
    fn chooses_its_cache(&self) -> bool {
        let flag = |a: &OsString| {
            let a = a.to_string_lossy();
            a == "--no-cache" || a == "--cache-dir" || a.starts_with("--cache-dir=")
        };
        self.args.iter().any(flag)
            || self
                .envs
                .iter()
                .any(|(k, _)| k == "SANDPORT_CACHE_DIR" || k == "SANDPORT_NO_CACHE")
    }

    /// The large plugins (`--plugin PATH`, absolute) no server of this test run has loaded yet, each
    /// locked: a server starting with one compiles it into the tests' compile cache while the
    /// others starting with it wait, then load it from there, instead of all compiling it at
    /// once. Set each to `true` once the server has loaded them (a panic instead leaves the next
    /// server to try). Locked in path order, so that two chains cannot wait for each other.
    fn first_loads(&self) -> Vec<MutexGuard<'static, bool>> {
        static LOADED: Mutex<BTreeMap<PathBuf, &'static Mutex<bool>>> = Mutex::new(BTreeMap::new());
        if self.chooses_its_cache() {
            return Vec::new();
        }
        let mut large: Vec<PathBuf> = self
            .args
            .windows(2)
            .filter(|w| w[0] == "--plugin")
            .map(|w| PathBuf::from(&w[1]))
            .filter(|p| {
                p.is_absolute() && std::fs::metadata(p).is_ok_and(|m| m.len() >= LARGE_PLUGIN_BYTES)
            })
            .collect();
        large.sort();
        large.dedup();
        let locks: Vec<&'static Mutex<bool>> = {
            let mut all = LOADED.lock().unwrap_or_else(PoisonError::into_inner);
            large
                .into_iter()
                .map(|p| *all.entry(p).or_insert_with(|| Box::leak(Box::default())))
                .collect()
        };
        locks
            .into_iter()
            .map(|l| l.lock().unwrap_or_else(PoisonError::into_inner))
            .filter(|loaded| !**loaded)
            .collect()
    }

    fn command(&self, default_cwd: &Path) -> Command {
        let mut cmd = Command::new(sandport_bin());
        if self.listen {
            cmd.arg("--listen").arg("127.0.0.1:0");
        }
        cmd.args(&self.args);
        // A predictable environment: no SANDPORT_* leaking in from the outside, no colours.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("SANDPORT_") {
                cmd.env_remove(&k);
            }
        }
        if !self.chooses_its_cache() {
            cmd.env("SANDPORT_CACHE_DIR", test_cache_dir());
        }
        cmd.env("RUST_LOG", "info");
        cmd.env("NO_COLOR", "1");
        cmd.env_remove("RUST_BACKTRACE");
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        cmd.current_dir(self.cwd.as_deref().unwrap_or(default_cwd));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Spawns the child in its working directory (a fresh one unless [`Self::cwd`] was given).
    fn spawn(&self) -> (Child, TempDir) {
        let workdir = TempDir::new("cwd");
        let child = self
            .command(workdir.path())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", sandport_bin().display()));
        (child, workdir)
    }

    /// Spawns the server and waits for `listening on ADDR`; panics (with the log) when it exits
    /// or does not listen within [`STARTUP_TIMEOUT`].
    pub fn start(self) -> Server {
        let first_loads = self.first_loads();
        let (mut child, workdir) = self.spawn();
        let (logs, _) = LogBuffer::capture(child.stderr.take().unwrap());
        let (stdout, _) = LogBuffer::capture(child.stdout.take().unwrap());
        let line = logs.wait_for(STARTUP_TIMEOUT, |l| l.contains("listening on"));
        let addr = line.as_deref().and_then(parse_listen_addr);
        let addr = match addr {
            Some(a) => a,
            None => {
                let _ = child.kill();
                let status = child.wait();
                // Let the reader threads pick up the tail of the output.
                logs.wait_for(Duration::from_secs(2), |_| false);
                panic!(
                    "server did not report `listening on ADDR` (found line: {line:?}); \
                     exit status {status:?}; args {:?}\n--- stderr ---\n{}\n--- stdout ---\n{}",
                    self.args,
                    logs.dump(),
                    stdout.dump()
                );
            }
        };
        for mut loaded in first_loads {
            *loaded = true;
        }
        Server {
            child,
            addr,
            logs,
            stdout,
            exit: None,
            _workdir: workdir,
        }
    }

    /// Runs the binary expecting it to fail at startup; returns (exit code, stderr).
    /// Panics if it starts listening instead, is killed by a signal, or runs for more than
    /// [`RUN_TIMEOUT`].
    pub fn run_expect_failure(self) -> (i32, String) {
        let (mut child, _workdir) = self.spawn();
        let (logs, err_thread) = LogBuffer::capture(child.stderr.take().unwrap());
        let (_stdout, out_thread) = LogBuffer::capture(child.stdout.take().unwrap());
        let outcome = eventually(RUN_TIMEOUT, || {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return Some(Ok(status));
            }
            let listening = logs.lines().iter().any(|l| l.contains("listening on"));
            listening.then_some(Err("it started listening"))
        });
        let status = match outcome {
            Some(Ok(status)) => status,
            failure => {
                let _ = child.kill();
                let _ = child.wait();
                let why = match failure {
                    Some(Err(why)) => why.to_string(),
                    _ => format!("it neither failed nor listened within {RUN_TIMEOUT:?}"),
                };
                panic!(
                    "expected sandport {:?} to fail at startup, but {why}:\n{}",
                    self.args,
                    logs.dump()
                );
            }
        };
        let _ = err_thread.join();
        let _ = out_thread.join();
        (self.exit_code(status, &logs.dump()), logs.dump())
    }

    /// Runs the binary to completion (a subcommand such as `check` or `call`, with
    /// [`Self::no_default_listen`]); panics if it runs for more than [`RUN_TIMEOUT`] or is
    /// killed by a signal.
    pub fn run(self) -> Finished {
        let (mut child, _workdir) = self.spawn();
        let stdout = read_to_end_in_background(child.stdout.take().unwrap());
        let stderr = read_to_end_in_background(child.stderr.take().unwrap());
        let status = wait_child(&mut child, RUN_TIMEOUT).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "sandport {:?} did not finish within {RUN_TIMEOUT:?}",
                self.args
            )
        });
        let stdout = String::from_utf8_lossy(&stdout.join().unwrap()).into_owned();
        let stderr = String::from_utf8_lossy(&stderr.join().unwrap()).into_owned();
        Finished {
            code: self.exit_code(status, &stderr),
            stdout,
            stderr,
        }
    }

    fn exit_code(&self, status: ExitStatus, stderr: &str) -> i32 {
        status.code().unwrap_or_else(|| {
            panic!(
                "sandport {:?} was killed by a signal ({status:?}):\n{stderr}",
                self.args
            )
        })
    }
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs sandport with `args` (plus `--listen 127.0.0.1:0`) expecting a startup failure.
pub fn run_expect_failure<I, S>(args: I) -> (i32, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    ServerBuilder::new().args(args).run_expect_failure()
}

/// Reads `stream` to its end on a thread of its own (so that a full pipe never blocks the
/// child); join the handle for the bytes.
fn read_to_end_in_background<R: Read + Send + 'static>(mut stream: R) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        bytes
    })
}

/// Waits up to `timeout` for `child` to exit.
pub(super) fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    eventually(timeout, || child.try_wait().expect("try_wait"))
}

/// Pulls `IP:PORT` out of a `listening on IP:PORT` line (text or JSON log format).
pub fn parse_listen_addr(line: &str) -> Option<SocketAddr> {
    let idx = line.find("listening on")?;
    let rest = line[idx + "listening on".len()..].trim_start_matches([' ', '=', ':', '"']);
    let token: String = rest
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    token.parse().ok()
}
