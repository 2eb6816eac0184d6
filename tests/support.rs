//! Shared helpers for the integration tests: start the real `sandport` binary, capture its log,
//! talk TCP to it with bounded reads, and look at the process through /proc.
//!
//! Every blocking operation here has a timeout, so a misbehaving host makes a test fail instead
//! of hanging the whole suite.

#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a server may take from spawn to `listening on` (it compiles the plugins first, and
/// the machine may be busy with other tests running in parallel).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Default timeout for a reply that should come promptly.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Default timeout when waiting for a log line.
pub const LOG_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Paths

/// The workspace root (/work/main), derived from the host crate's manifest dir.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host crate has a parent directory")
        .to_path_buf()
}

/// Directory holding the example plugins (print, echo, upper).
pub fn plugins_dir() -> PathBuf {
    workspace_root().join("plugins")
}

/// Directory holding the test-only plugins.
pub fn test_plugins_dir() -> PathBuf {
    workspace_root().join("tests").join("plugins")
}

fn existing_plugin(path: PathBuf) -> PathBuf {
    if !path.is_file() {
        panic!(
            "plugin {} does not exist: build the plugins first with `cargo xtask plugins` \
             (from {})",
            path.display(),
            workspace_root().display()
        );
    }
    path
}

/// Path to the example plugin `plugins/NAME.wasm`; panics with a hint when it is not built.
pub fn plugin(name: &str) -> PathBuf {
    existing_plugin(plugins_dir().join(format!("{name}.wasm")))
}

/// Path to the test plugin `tests/plugins/NAME.wasm`; panics with a hint when it is not built.
pub fn test_plugin(name: &str) -> PathBuf {
    existing_plugin(test_plugins_dir().join(format!("{name}.wasm")))
}

/// The binary under test.
pub fn sandport_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sandport"))
}

// ---------------------------------------------------------------------------------------------
// Temp dirs

/// A uniquely named directory under the system temp dir, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!(
            "sandport-test-{tag}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("create temp dir {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `contents` to `name` inside the dir and returns the full path.
    pub fn write(&self, name: &str, contents: &[u8]) -> PathBuf {
        let p = self.join(name);
        std::fs::write(&p, contents).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }

    /// Copies `from` to `name` inside the dir and returns the full path.
    pub fn copy(&self, from: &Path, name: &str) -> PathBuf {
        let p = self.join(name);
        std::fs::copy(from, &p)
            .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", from.display(), p.display()));
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------------------------
// Log capture

/// Lines read from a child's stream by a background thread, with a condvar to wait on.
#[derive(Clone, Default)]
pub struct LogBuffer {
    inner: Arc<(Mutex<LogState>, Condvar)>,
}

#[derive(Default)]
struct LogState {
    lines: Vec<String>,
    eof: bool,
}

/// Removes ANSI escape sequences (colours), in case the host colours its log.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // CSI: parameters until a final byte in 0x40..=0x7e.
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

impl LogBuffer {
    /// Spawns a thread that reads `stream` line by line into the buffer.
    pub fn capture<R: Read + Send + 'static>(stream: R) -> (LogBuffer, JoinHandle<()>) {
        let buf = LogBuffer::default();
        let b = buf.clone();
        let handle = thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        while line.last() == Some(&b'\n') {
                            line.pop();
                        }
                        let text = strip_ansi(&String::from_utf8_lossy(&line));
                        let (lock, cv) = &*b.inner;
                        lock.lock().unwrap().lines.push(text);
                        cv.notify_all();
                    }
                }
            }
            let (lock, cv) = &*b.inner;
            lock.lock().unwrap().eof = true;
            cv.notify_all();
        });
        (buf, handle)
    }

    /// A copy of every line captured so far.
    pub fn lines(&self) -> Vec<String> {
        self.inner.0.lock().unwrap().lines.clone()
    }

    /// Whether the stream reached EOF (the process closed it, usually by exiting).
    pub fn eof(&self) -> bool {
        self.inner.0.lock().unwrap().eof
    }

    /// Waits until a line satisfying `pred` has been captured; returns it, or `None` on timeout
    /// or when the stream ended without such a line.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.inner;
        let mut state = lock.lock().unwrap();
        let mut checked = 0;
        loop {
            if let Some(l) = state.lines[checked..].iter().find(|l| pred(l.as_str())) {
                return Some(l.clone());
            }
            checked = state.lines.len();
            if state.eof {
                return None;
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            state = cv.wait_timeout(state, deadline - now).unwrap().0;
        }
    }

    /// Every captured line satisfying `pred`.
    pub fn matching(&self, pred: impl Fn(&str) -> bool) -> Vec<String> {
        self.inner
            .0
            .lock()
            .unwrap()
            .lines
            .iter()
            .filter(|l| pred(l.as_str()))
            .cloned()
            .collect()
    }

    pub fn dump(&self) -> String {
        self.lines().join("\n")
    }
}

/// Extracts the value of `name=VALUE` from a text-format log line (quotes removed), e.g.
/// `log_field("... conn=3 messages=2", "messages") == Some("2")`.
pub fn log_field(line: &str, name: &str) -> Option<String> {
    let pat = format!("{name}=");
    let mut search = 0;
    while let Some(pos) = line[search..].find(&pat) {
        let start = search + pos;
        let at_boundary = start == 0 || {
            let prev = line[..start].chars().next_back().unwrap();
            !(prev.is_alphanumeric() || prev == '_' || prev == '.')
        };
        let value_start = start + pat.len();
        if at_boundary {
            let rest = &line[value_start..];
            if let Some(stripped) = rest.strip_prefix('"') {
                let mut out = String::new();
                let mut chars = stripped.chars();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                out.push(n)
                            }
                        }
                        '"' => break,
                        c => out.push(c),
                    }
                }
                return Some(out);
            }
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            return Some(rest[..end].to_string());
        }
        search = value_start;
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Server

/// Builder for a `sandport` child process.
pub struct ServerBuilder {
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    cwd: Option<PathBuf>,
    listen: bool,
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

    /// Do not add `--listen 127.0.0.1:0` (the test passes its own `--listen`).
    pub fn no_default_listen(mut self) -> Self {
        self.listen = false;
        self
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

    /// Spawns the server and waits for `listening on ADDR`; panics (with the log) when it exits
    /// or does not listen within [`STARTUP_TIMEOUT`].
    pub fn start(self) -> Server {
        let workdir = TempDir::new("cwd");
        let mut cmd = self.command(workdir.path());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", sandport_bin().display()));
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
    /// Panics if it starts listening instead, is killed by a signal, or runs for more than 60s.
    pub fn run_expect_failure(self) -> (i32, String) {
        let workdir = TempDir::new("cwd");
        let mut cmd = self.command(workdir.path());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", sandport_bin().display()));
        let (logs, err_thread) = LogBuffer::capture(child.stderr.take().unwrap());
        let (_stdout, out_thread) = LogBuffer::capture(child.stdout.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if logs.lines().iter().any(|l| l.contains("listening on")) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "expected sandport {:?} to fail at startup, but it started listening:\n{}",
                    self.args,
                    logs.dump()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "sandport {:?} neither failed nor listened within 60s:\n{}",
                    self.args,
                    logs.dump()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        let _ = err_thread.join();
        let _ = out_thread.join();
        let code = status.code().unwrap_or_else(|| {
            panic!(
                "sandport {:?} was killed by a signal ({status:?}):\n{}",
                self.args,
                logs.dump()
            )
        });
        (code, logs.dump())
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

/// A running `sandport`; killed (SIGKILL) on drop. On a panicking test its log is printed.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub logs: LogBuffer,
    pub stdout: LogBuffer,
    exit: Option<ExitStatus>,
    _workdir: TempDir,
}

impl Server {
    pub fn builder() -> ServerBuilder {
        ServerBuilder::new()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Connects a new client.
    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Waits for a log line containing `pattern`; panics with the whole log on timeout.
    pub fn wait_for_log(&self, pattern: &str, timeout: Duration) -> String {
        self.wait_for_log_where(timeout, &format!("a line containing {pattern:?}"), |l| {
            l.contains(pattern)
        })
    }

    /// Waits for a log line satisfying `pred`; panics with `what` and the whole log on timeout.
    pub fn wait_for_log_where(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        match self.logs.wait_for(timeout, pred) {
            Some(l) => l,
            None => panic!(
                "no log line matched ({what}) within {timeout:?}\n--- server log ---\n{}",
                self.logs.dump()
            ),
        }
    }

    /// Waits for the `connection closed` line of connection `id` (matched on the `conn=` field).
    pub fn wait_for_close_log(&self, id: u64, timeout: Duration) -> String {
        let id = id.to_string();
        self.wait_for_log_where(timeout, &format!("connection closed conn={id}"), |l| {
            l.contains("connection closed") && log_field(l, "conn").as_deref() == Some(&id)
        })
    }

    /// Every log line so far containing `pattern`.
    pub fn log_lines_containing(&self, pattern: &str) -> Vec<String> {
        self.logs.matching(|l| l.contains(pattern))
    }

    /// Sends a signal to the server process.
    pub fn signal(&self, sig: i32) {
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.child.id());
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.exit {
            return Some(s);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                self.exit = Some(s);
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.exit.is_none() && self.child.try_wait().expect("try_wait").is_none()
    }

    /// Number of threads of the server process (from /proc/PID/status).
    pub fn threads(&self) -> u64 {
        proc_status_field(self.pid(), "Threads")
            .unwrap_or_else(|| panic!("no Threads in /proc/{}/status", self.pid()))
    }

    /// Resident set size of the server process in KiB (from /proc/PID/status).
    pub fn rss_kib(&self) -> u64 {
        proc_status_field(self.pid(), "VmRSS")
            .unwrap_or_else(|| panic!("no VmRSS in /proc/{}/status", self.pid()))
    }

    /// Starts sampling the server's RSS every 10ms in the background.
    pub fn rss_sampler(&self) -> RssSampler {
        RssSampler::start(self.pid())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            // Give the reader thread a moment to drain the pipe, then show the log.
            self.logs.wait_for(Duration::from_millis(500), |_| false);
            eprintln!(
                "--- sandport log (pid {}, {}) ---\n{}\n--- end of sandport log ---",
                self.child.id(),
                self.addr,
                self.logs.dump()
            );
            let out = self.stdout.dump();
            if !out.is_empty() {
                eprintln!("--- sandport stdout ---\n{out}\n--- end of stdout ---");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// /proc

/// Reads the numeric value of `Field:` from /proc/PID/status (VmRSS is in kB).
pub fn proc_status_field(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Samples a process's VmRSS in the background and remembers the maximum.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicU64::new(0));
        let (s, m) = (stop.clone(), max.clone());
        let handle = thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                if let Some(rss) = proc_status_field(pid, "VmRSS") {
                    m.fetch_max(rss, Ordering::SeqCst);
                }
                thread::sleep(Duration::from_millis(10));
            }
        });
        RssSampler {
            stop,
            max,
            handle: Some(handle),
        }
    }

    /// Stops sampling; returns the maximum RSS seen, in KiB.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.max.load(Ordering::SeqCst)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------
// Client

/// Why a receive did not produce a message.
#[derive(Debug)]
pub enum RecvError {
    /// Nothing (complete) arrived within the timeout.
    Timeout,
    /// The server closed the connection (EOF, or reset/aborted).
    Closed(String),
    /// Some other I/O error.
    Io(io::Error),
}

impl RecvError {
    pub fn is_closed(&self) -> bool {
        matches!(self, RecvError::Closed(_))
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// A TCP client with an internal receive buffer; every read is bounded by a timeout.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
}

impl Client {
    /// Connects with a 5s timeout; panics on failure.
    pub fn connect(addr: SocketAddr) -> Client {
        Client::try_connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    pub fn try_connect(addr: SocketAddr) -> io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        Ok(Client::from_stream(stream))
    }

    /// Wraps an already connected stream.
    pub fn from_stream(stream: TcpStream) -> Client {
        Client {
            stream,
            buf: Vec::new(),
            start: 0,
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().unwrap()
    }

    /// Writes bytes as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("send {} bytes: {e}", bytes.len()));
    }

    /// Writes `line` followed by `\n`.
    pub fn send_line(&mut self, line: &str) {
        let mut v = Vec::with_capacity(line.len() + 1);
        v.extend_from_slice(line.as_bytes());
        v.push(b'\n');
        self.send(&v);
    }

    /// Writes a 4-byte big-endian length prefix and the payload.
    pub fn send_frame(&mut self, payload: &[u8]) {
        self.send(&frame(payload));
    }

    /// Closes our writing side (the server sees EOF).
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn consume(&mut self, n: usize) -> Vec<u8> {
        let out = self.buf[self.start..self.start + n].to_vec();
        self.start += n;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 1 << 20 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        out
    }

    /// One read() into the buffer, bounded by `deadline`. Ok(n) with n > 0, or an error.
    fn fill(&mut self, deadline: Instant) -> Result<usize, RecvError> {
        let now = Instant::now();
        if now >= deadline {
            return Err(RecvError::Timeout);
        }
        let wait = (deadline - now).max(Duration::from_millis(1));
        self.stream
            .set_read_timeout(Some(wait))
            .map_err(RecvError::Io)?;
        let mut chunk = [0u8; 65536];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(RecvError::Closed("EOF".into())),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_timeout(&e) => return Err(RecvError::Timeout),
                Err(e) if is_reset(&e) => return Err(RecvError::Closed(e.to_string())),
                Err(e) => return Err(RecvError::Io(e)),
            }
        }
    }

    /// Receives one `\n`-terminated line, returned as raw bytes including the `\n`.
    pub fn recv_line_bytes(&mut self, timeout: Duration) -> Result<Vec<u8>, RecvError> {
        let deadline = Instant::now() + timeout;
        let mut scanned = 0;
        loop {
            if let Some(i) = self.pending()[scanned..].iter().position(|&b| b == b'\n') {
                return Ok(self.consume(scanned + i + 1));
            }
            scanned = self.pending().len();
            self.fill(deadline)?;
        }
    }

    /// Receives one line, without its `\n` (a `\r` before it is kept).
    pub fn recv_line(&mut self, timeout: Duration) -> Result<String, RecvError> {
        let mut b = self.recv_line_bytes(timeout)?;
        b.pop();
        Ok(String::from_utf8_lossy(&b).into_owned())
    }

    /// Receives one line and panics unless it arrives within [`REPLY_TIMEOUT`] and equals
    /// `expected`.
    pub fn expect_line(&mut self, expected: &str) {
        match self.recv_line(REPLY_TIMEOUT) {
            Ok(l) => assert_eq!(l, expected, "unexpected reply line"),
            Err(e) => panic!("expected the line {expected:?}, got {e:?}"),
        }
    }

    /// Sends `line` and expects exactly `expected` back within [`REPLY_TIMEOUT`].
    pub fn roundtrip(&mut self, line: &str, expected: &str) {
        self.send_line(line);
        self.expect_line(expected);
    }

    /// Receives a line, panicking on timeout/close.
    pub fn line(&mut self) -> String {
        self.recv_line(REPLY_TIMEOUT)
            .unwrap_or_else(|e| panic!("expected a reply line, got {e:?}"))
    }

    /// Receives exactly `n` bytes.
    pub fn recv_exact(&mut self, n: usize, timeout: Duration) -> Result<Vec<u8>, RecvError> {
        let deadline = Instant::now() + timeout;
        while self.pending().len() < n {
            self.fill(deadline)?;
        }
        Ok(self.consume(n))
    }

    /// Receives whatever arrives first (at least one byte).
    pub fn recv_some(&mut self, timeout: Duration) -> Result<Vec<u8>, RecvError> {
        let deadline = Instant::now() + timeout;
        if self.pending().is_empty() {
            self.fill(deadline)?;
        }
        let n = self.pending().len();
        Ok(self.consume(n))
    }

    /// Receives one length-prefixed frame; returns its payload.
    pub fn recv_frame(&mut self, timeout: Duration) -> Result<Vec<u8>, RecvError> {
        let deadline = Instant::now() + timeout;
        while self.pending().len() < 4 {
            self.fill(deadline)?;
        }
        let p = self.pending();
        let len = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize;
        assert!(
            len <= 256 << 20,
            "server sent an absurd frame length prefix {len:#x}"
        );
        while self.pending().len() < 4 + len {
            self.fill(deadline)?;
        }
        let mut f = self.consume(4 + len);
        f.drain(..4);
        Ok(f)
    }

    /// Reads until the server closes the connection; returns every byte received before that.
    /// Panics if the connection is still open after `timeout`.
    pub fn read_until_closed(&mut self, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.fill(deadline) {
                Ok(_) => continue,
                Err(RecvError::Closed(_)) => {
                    let n = self.pending().len();
                    return self.consume(n);
                }
                Err(RecvError::Timeout) => panic!(
                    "connection still open after {timeout:?} (received so far: {:?})",
                    String::from_utf8_lossy(self.pending())
                ),
                Err(RecvError::Io(e)) => panic!("read error while waiting for close: {e}"),
            }
        }
    }

    /// Panics unless the server closes the connection within `timeout` without sending anything.
    pub fn expect_closed_without_reply(&mut self, timeout: Duration) {
        let got = self.read_until_closed(timeout);
        assert!(
            got.is_empty(),
            "expected the connection to close without a reply, but received {:?}",
            String::from_utf8_lossy(&got)
        );
    }

    /// Panics if anything arrives, or the connection is closed, within `window`.
    pub fn expect_silence(&mut self, window: Duration) {
        if !self.pending().is_empty() {
            panic!(
                "expected silence, but already have {:?}",
                String::from_utf8_lossy(self.pending())
            );
        }
        match self.fill(Instant::now() + window) {
            Err(RecvError::Timeout) => {}
            Ok(_) => panic!(
                "expected nothing within {window:?}, but received {:?}",
                String::from_utf8_lossy(self.pending())
            ),
            Err(RecvError::Closed(why)) => {
                panic!("expected the connection to stay open, but it was closed ({why})")
            }
            Err(RecvError::Io(e)) => panic!("read error: {e}"),
        }
    }
}

/// A 4-byte big-endian length prefix followed by the payload.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + payload.len());
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Parses the `<id>` out of a lifecycle greeting `hello <id>`.
pub fn greeting_id(line: &str) -> u64 {
    line.strip_prefix("hello ")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("expected a greeting `hello <id>`, got {line:?}"))
}

/// Retries `f` every 20ms until it returns Some or `timeout` passes.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}
