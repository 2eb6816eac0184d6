//! The deployment files in `deploy/`, checked by the real tools (`haproxy -c`, `systemd-analyze
//! verify`, `kubernetes-validate`; a missing tool is installed, or the test fails), and the
//! flags of the systemd unit and of the Kubernetes Deployment run through the real binary, with
//! only their paths and addresses replaced: they parse, it listens, it is ready, and SIGTERM
//! stops it with exit 0. A real HAProxy runs `haproxy.cfg` in front of the unit's host: its
//! `/readyz` checks pass and a client's address reaches the plugin's host in the PROXY header.
//! The numbers that must agree (stop timeouts, descriptors, memory) are checked against the
//! flags too.

mod cluster;
mod haproxy;
mod kubernetes;
mod systemd;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::metrics::{metrics_addr, status};
use crate::support::*;

fn deploy(file: &str) -> PathBuf {
    workspace_root().join("deploy").join(file)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Runs `cmd`; panics with what it printed unless it exits 0.
fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn printed(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The value of `--flag` in `args` (given as `--flag VALUE` or `--flag=VALUE`).
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let eq = format!("{name}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if a == name {
            args.get(i + 1).map(String::as_str)
        } else {
            a.strip_prefix(&eq)
        }
    })
}

/// `args` with the values of `replace`'s flags replaced (both spellings), the rest unchanged.
fn substitute(args: &[String], replace: &[(&str, String)]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v)),
            _ => (a.as_str(), None),
        };
        match replace.iter().find(|(f, _)| *f == name) {
            Some((_, value)) => {
                if inline.is_none() {
                    it.next().expect("a value after the flag");
                }
                out.push(name.to_string());
                out.push(value.clone());
            }
            None => out.push(a.clone()),
        }
    }
    out
}

/// A size flag's value in bytes (`64MiB`, `1MiB`; what the deployment files use).
fn bytes(size: &str) -> u64 {
    let units = [
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
    ];
    let (n, unit) = units
        .iter()
        .find_map(|(u, m)| size.strip_suffix(u).map(|n| (n, *m)))
        .unwrap_or_else(|| panic!("no unit this test knows in {size:?}"));
    n.parse::<u64>().expect("a whole number") * unit
}

/// Starts the binary with `args` (addresses and paths already replaced), waits until `/readyz`
/// answers 200, then SIGTERM: it must exit 0 within the shutdown timeout and a margin.
fn starts_ready_and_stops(args: &[String]) {
    let mut server = Server::builder().no_default_listen().args(args).start();
    let metrics = metrics_addr(&server);
    wait_until("/readyz answers 200", STARTUP_TIMEOUT, || {
        status(metrics, "/readyz") == 200
    });
    assert!(
        server.log_lines_containing("unreachable").is_empty(),
        "{}",
        server.logs.dump()
    );
    server.signal(libc::SIGTERM);
    let shutdown_ms: u64 = flag(args, "--shutdown-timeout-ms")
        .unwrap()
        .parse()
        .unwrap();
    let exit = server
        .wait_exit(Duration::from_millis(shutdown_ms) + Duration::from_secs(5))
        .expect("it exits after SIGTERM");
    assert_eq!(exit.code(), Some(0), "{}", server.logs.dump());
}
