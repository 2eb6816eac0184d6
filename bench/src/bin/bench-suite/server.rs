//! Starting and stopping the compared servers, finding their port, and reading their thread
//! count and memory from /proc.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One of the servers a scenario compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Server {
    /// sandport with `plugins/echo.wasm` (contract 0.1.0) in this isolation mode.
    Sandport(&'static str),
    /// sandport with the contract 0.2.0 echo, `tests/plugins/statebench.wasm` (no state op).
    SandportV2(&'static str),
    /// sandport with `--bench-native-echo`: the same server, no Wasm.
    Native,
    /// The thread-per-connection baseline.
    Tpc,
}

impl Server {
    /// Short name for tables.
    pub fn label(&self) -> String {
        match self {
            Server::Sandport(iso) => format!("sandport {iso}"),
            Server::SandportV2(iso) => format!("sandport {iso}, 0.2 echo"),
            Server::Native => "native echo".into(),
            Server::Tpc => "tpc-server".into(),
        }
    }

    /// What was run, for the notes under a table.
    pub fn describe(&self) -> String {
        match self {
            Server::Sandport(iso) => {
                format!("`sandport --plugin plugins/echo.wasm --isolation {iso}`")
            }
            Server::SandportV2(iso) => format!(
                "`sandport --plugin tests/plugins/statebench.wasm --isolation {iso}` (a contract \
                 0.2 echo: `on-message` gets the connection id, no addresses)"
            ),
            Server::Native => "`sandport --plugin plugins/echo.wasm --bench-native-echo` \
                               (same server, messages echoed in-process, no Wasm call)"
                .into(),
            Server::Tpc => "`tpc-server` (thread per connection)".into(),
        }
    }
}

/// Where the binaries and the plugin are.
#[derive(Debug, Clone)]
pub struct Bins {
    pub sandport: PathBuf,
    pub load: PathBuf,
    pub tpc: PathBuf,
    pub echo_wasm: PathBuf,
    /// The contract 0.2 echo (`statebench` with no state op).
    pub v2_echo_wasm: PathBuf,
}

/// A server process started by the suite; killed when dropped.
pub struct Running {
    pub server: Server,
    pub addr: SocketAddr,
    child: Child,
    /// The last lines it wrote on stderr, for error messages.
    tail: Arc<Mutex<Vec<String>>>,
}

/// sandport logs its `listening on` line (target `sandport`) but not one line per connection.
const SANDPORT_LOG: &str = "warn,sandport=info,sandport::server=warn,sandport::plugin=warn";

/// Starts `server` on a free port with 2 workers and waits for its `listening on` line.
pub fn start(
    bins: &Bins,
    server: &Server,
    framing: &str,
    extra: &[String],
) -> Result<Running, String> {
    let mut cmd = match server {
        Server::Tpc => {
            let mut c = Command::new(&bins.tpc);
            c.args(["--listen", "127.0.0.1:0", "--framing", framing]);
            c
        }
        Server::Sandport(_) | Server::Native | Server::SandportV2(_) => {
            let mut c = Command::new(&bins.sandport);
            c.args([
                "--listen",
                "127.0.0.1:0",
                "--workers",
                "2",
                "--framing",
                framing,
            ])
            .arg("--plugin")
            .arg(match server {
                Server::SandportV2(_) => &bins.v2_echo_wasm,
                _ => &bins.echo_wasm,
            });
            match server {
                Server::Sandport(iso) | Server::SandportV2(iso) => c.args(["--isolation", iso]),
                _ => c.arg("--bench-native-echo"),
            };
            c.env("RUST_LOG", SANDPORT_LOG).env("NO_COLOR", "1");
            c
        }
    };
    cmd.args(extra);
    spawn_and_wait(cmd, server.clone(), Duration::from_secs(120))
}

/// Starts sandport with `plugin` and `cache_dir`, for the start-up scenario.
pub fn start_plugin(bins: &Bins, plugin: &Path, cache_dir: &Path) -> Result<Running, String> {
    let mut c = Command::new(&bins.sandport);
    c.args(["--listen", "127.0.0.1:0", "--workers", "2"])
        .arg("--plugin")
        .arg(plugin)
        .arg("--cache-dir")
        .arg(cache_dir)
        .env("RUST_LOG", SANDPORT_LOG)
        .env("NO_COLOR", "1");
    spawn_and_wait(c, Server::Sandport("message"), Duration::from_secs(300))
}

/// Starts sandport with `plugin` and `args` on a free port, with 2 workers.
pub fn start_with(bins: &Bins, plugin: &Path, args: &[&str]) -> Result<Running, String> {
    let mut c = Command::new(&bins.sandport);
    c.args(["--listen", "127.0.0.1:0", "--workers", "2"])
        .arg("--plugin")
        .arg(plugin)
        .args(args)
        .env("RUST_LOG", SANDPORT_LOG)
        .env("NO_COLOR", "1");
    spawn_and_wait(c, Server::Sandport("message"), Duration::from_secs(120))
}

fn spawn_and_wait(mut cmd: Command, server: Server, wait: Duration) -> Result<Running, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {shown}: {e}"))?;
    let stderr = child.stderr.take().expect("piped");
    let tail = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let keep = tail.clone();
    // Reads stderr for the whole life of the server, so its pipe never fills.
    std::thread::spawn(move || {
        let mut found = false;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let line = strip_ansi(&line);
            if !found {
                if let Some(addr) = listening_addr(&line) {
                    found = true;
                    let _ = tx.send(addr);
                }
            }
            if let Ok(mut t) = keep.lock() {
                if t.len() >= 20 {
                    t.remove(0);
                }
                t.push(line);
            }
        }
    });
    let deadline = Instant::now() + wait;
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(addr) => {
                return Ok(Running {
                    server,
                    addr,
                    child,
                    tail,
                })
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {}
        }
        if let Ok(Some(status)) = child.try_wait() {
            std::thread::sleep(Duration::from_millis(50));
            let said = tail.lock().map(|t| t.join("\n")).unwrap_or_default();
            return Err(format!(
                "{shown} exited ({status}) before listening:\n{said}"
            ));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{shown} did not print `listening on` within {wait:?}"
            ));
        }
    }
}

/// The address in a `... listening on 127.0.0.1:PORT ...` line.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... final byte in @..~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's exit status if it has died.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!("{status}: {}", self.tail_text())),
            _ => None,
        }
    }

    pub fn tail_text(&self) -> String {
        self.tail
            .lock()
            .map(|t| {
                t.iter()
                    .rev()
                    .take(5)
                    .rev()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" | ")
            })
            .unwrap_or_default()
    }

    /// SIGTERM, then SIGKILL if it has not exited after a few seconds.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: kill() with the pid of our own child process.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Threads and resident memory of a process, from /proc/PID/status.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    pub threads: u64,
    pub rss_kib: u64,
}

pub fn proc_stats(pid: u32) -> Option<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some(ProcStats {
        threads: field("Threads:")?,
        rss_kib: field("VmRSS:")?,
    })
}

/// Sends one line on each of `n` new connections and waits for its echo (in upper case with
/// `upper`); returns the open connections (so the caller decides how long they stay).
pub fn probe_connections(
    addr: SocketAddr,
    n: usize,
    upper: bool,
) -> Result<Vec<TcpStream>, String> {
    let mut conns = Vec::new();
    for i in 0..n {
        let mut s = TcpStream::connect(addr).map_err(|e| format!("probe connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let msg = format!("probe-{i:013}\n");
        let want = match upper {
            true => msg.to_ascii_uppercase(),
            false => msg.clone(),
        };
        s.write_all(msg.as_bytes())
            .map_err(|e| format!("probe write: {e}"))?;
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got)
            .map_err(|e| format!("probe read: {e}"))?;
        if got != want.as_bytes() {
            return Err(format!(
                "probe: expected {want:?}, got {:?}",
                String::from_utf8_lossy(&got)
            ));
        }
        conns.push(s);
    }
    Ok(conns)
}

/// Connects (retrying while the port is not open yet), sends `ping`, and waits for a reply line.
pub fn first_reply(addr: SocketAddr, within: Duration) -> Result<String, String> {
    let deadline = Instant::now() + within;
    let mut s = loop {
        match TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(e) if Instant::now() >= deadline => return Err(format!("connect: {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    };
    s.set_read_timeout(Some(within))
        .map_err(|e| e.to_string())?;
    s.write_all(b"ping\n").map_err(|e| format!("write: {e}"))?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .map_err(|e| format!("read: {e}"))?;
    if line.is_empty() {
        return Err("closed without a reply".into());
    }
    Ok(line.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_address_in_log_lines() {
        let line = "2026-01-01T00:00:00Z  INFO sandport: listening on 127.0.0.1:4567 workers=2";
        assert_eq!(
            listening_addr(line),
            Some("127.0.0.1:4567".parse().unwrap())
        );
        assert_eq!(
            listening_addr("listening on 127.0.0.1:80 framing=Line"),
            Some("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(listening_addr("plugin loaded"), None);
        assert_eq!(strip_ansi("\u{1b}[32m INFO\u{1b}[0m x"), " INFO x");
    }
}
