//! The live plugins folder through the real binary: a plugin file replaced, added or removed
//! while clients are connected, under each isolation mode; files that cannot be served are
//! refused while the old version serves on; SIGHUP reloads.
//!
//! Two behaviours clients tell apart: `upper` answers `hello` with `HELLO`, `echo` with `hello`.

mod chains;
mod isolation;
mod refusals;
mod under_load;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::metrics::{metrics_addr, value, wait_value};
use crate::support::*;

/// How long a swap may take from the rename to the first new reply (the bound).
pub(crate) const SWAP_BOUND: Duration = Duration::from_secs(1);

/// Copies `from` into `dir/name` the atomic way: a dotfile next to it, then a rename. Returns
/// the instant of the rename.
pub(crate) fn deploy(dir: &Path, name: &str, from: &Path) -> Instant {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::copy(from, &tmp).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    std::fs::rename(&tmp, dir.join(name)).expect("rename into place");
    Instant::now()
}

/// Writes `bytes` into `dir/name` the atomic way.
pub(crate) fn deploy_bytes(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).expect("write the temporary file");
    std::fs::rename(&tmp, dir.join(name)).expect("rename into place");
}

/// A server whose one plugin is `dir/p.wasm` (a copy of `first`), with metrics, and `args`.
pub(crate) fn serve_file(dir: &TempDir, first: &Path, args: &[&str]) -> (Server, SocketAddr) {
    dir.copy(first, "p.wasm");
    let server = Server::builder()
        .plugin(dir.join("p.wasm"))
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args(args)
        .start();
    let addr = metrics_addr(&server);
    (server, addr)
}

/// Waits until a new connection gets `want` in reply to `line`; returns when it did.
pub(crate) fn wait_served(server: &Server, line: &str, want: &str) -> Instant {
    let mut last = None;
    let found = eventually(Duration::from_secs(10), || {
        let mut c = server.connect();
        c.send_line(line);
        last = c.recv_line(REPLY_TIMEOUT).ok();
        (last.as_deref() == Some(want)).then(Instant::now)
    });
    found.unwrap_or_else(|| panic!("{line:?} never answered {want:?} (last: {last:?})"))
}

/// The reload counter of `plugin` with `result` now (0 before any).
pub(crate) fn reloads(addr: SocketAddr, plugin: &str, result: &str) -> f64 {
    let text = crate::metrics::scrape(addr);
    value(
        &text,
        "sandport_plugin_reloads_total",
        &[("plugin", plugin), ("result", result)],
    )
    .unwrap_or(0.0)
}

/// Waits until the reload counter of `plugin` with `result` is `want`.
pub(crate) fn wait_reloads(addr: SocketAddr, plugin: &str, result: &str, want: f64) {
    wait_value(
        addr,
        "sandport_plugin_reloads_total",
        &[("plugin", plugin), ("result", result)],
        want,
    );
}

/// A SIGHUP makes the server read its files again, also with `--no-watch`.
#[test]
fn sighup_reloads_a_changed_file_without_the_watcher() {
    let dir = TempDir::new("live-hup");
    let (server, metrics) = serve_file(&dir, &plugin("upper"), &["--no-watch"]);
    let mut c = server.connect();
    c.roundtrip("hello", "HELLO");
    deploy(dir.path(), "p.wasm", &plugin("echo"));
    server.signal(libc::SIGHUP);
    wait_reloads(metrics, "p", "loaded", 1.0);
    c.roundtrip("hello", "hello");
    assert!(server.log_lines_containing("panicked").is_empty());
    server.assert_no_call_failed();
}
