//! `--metrics-listen` through the real binary: `/metrics` scraped while tests drive traffic (the
//! counters move as they should), validated by Prometheus's own `promtool check metrics`, the
//! `/healthz` and `/readyz` probes through a drain, and the flag's bad values.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

/// A server running `plugins` (tests' or examples' paths) with metrics on a free port.
pub(crate) fn with_metrics(plugins: &[PathBuf], args: &[&str]) -> (Server, SocketAddr) {
    let mut b = Server::builder().args(["--metrics-listen", "127.0.0.1:0"]);
    for p in plugins {
        b = b.plugin(p);
    }
    let server = b.args(args).start();
    let addr = metrics_addr(&server);
    (server, addr)
}

/// The metrics address from the `metrics served on http://ADDR/metrics` log line.
pub(crate) fn metrics_addr(server: &Server) -> SocketAddr {
    let line = server.wait_for_log("metrics served on http://", LOG_TIMEOUT);
    let rest = &line[line.find("http://").unwrap() + "http://".len()..];
    let addr = &rest[..rest.find('/').expect("a path after the address")];
    addr.parse()
        .unwrap_or_else(|e| panic!("no address in {line:?}: {e}"))
}

/// One HTTP/1.1 request; returns the status code, the head and the body.
fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to the metrics endpoint {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (code, head.to_string(), body.to_string())
}

pub(crate) fn status(addr: SocketAddr, path: &str) -> u16 {
    request(addr, "GET", path).0
}

/// The body of `GET /metrics`, which must answer 200 in the Prometheus text format.
pub(crate) fn scrape(addr: SocketAddr) -> String {
    let (code, head, body) = request(addr, "GET", "/metrics");
    assert_eq!(code, 200, "{head}\n{body}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    body
}

/// The value of the sample `name` whose labels include every `labels` pair.
pub(crate) fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, v) = l.rsplit_once(' ')?;
        let (n, ls) = series.split_once('{').unwrap_or((series, ""));
        let all = labels
            .iter()
            .all(|(k, want)| ls.contains(&format!("{k}=\"{want}\"")));
        (n == name && all).then(|| v.parse().expect("a number"))
    })
}

/// Scrapes until the sample is `want`; panics with the last scrape after five seconds.
pub(crate) fn wait_value(
    addr: SocketAddr,
    name: &str,
    labels: &[(&str, &str)],
    want: f64,
) -> String {
    let mut last = String::new();
    let found = eventually(Duration::from_secs(5), || {
        last = scrape(addr);
        (value(&last, name, labels) == Some(want)).then(|| last.clone())
    });
    found.unwrap_or_else(|| {
        panic!(
            "{name}{labels:?} never became {want} (now {:?}):\n{last}",
            value(&last, name, labels)
        )
    })
}

/// `promtool`, from Debian's `prometheus` package, installed if it is missing. The exposition
/// must be checked by the real validator: no promtool is a failure, never a skip.
fn promtool() -> PathBuf {
    debian_tool("promtool", "prometheus")
}

/// Runs `promtool check metrics` on `exposition`; panics with what it says if it objects.
pub(crate) fn promtool_check(exposition: &str) {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {:?}\n{}{}\n--- exposition ---\n{exposition}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn counters_move_with_the_traffic_and_promtool_accepts_the_exposition() {
    let (server, m) = with_metrics(&[plugin("echo"), plugin("upper")], &["--workers", "2"]);
    let idle = scrape(m);
    promtool_check(&idle);
    assert_eq!(
        value(&idle, "sandport_connections_accepted_total", &[]),
        Some(0.0)
    );
    let build = value(
        &idle,
        "sandport_build_info",
        &[("contracts", "0.1.0,0.2.0")],
    );
    assert_eq!(build, Some(1.0), "{idle}");

    let mut c = server.connect();
    for _ in 0..3 {
        c.roundtrip("hello", "HELLO");
    }
    let echo = [("plugin", "echo"), ("stage", "0")];
    let upper_out = [("plugin", "upper"), ("stage", "1"), ("direction", "out")];
    let s = wait_value(m, "sandport_plugin_messages_total", &upper_out, 3.0);
    assert_eq!(
        value(&s, "sandport_connections_accepted_total", &[]),
        Some(1.0)
    );
    assert_eq!(value(&s, "sandport_connections_open", &[]), Some(1.0));
    let echo_in = [echo[0], echo[1], ("direction", "in")];
    assert_eq!(
        value(&s, "sandport_plugin_messages_total", &echo_in),
        Some(3.0)
    );
    assert_eq!(
        value(&s, "sandport_plugin_bytes_total", &echo_in),
        Some(15.0)
    );
    assert_eq!(
        value(&s, "sandport_plugin_bytes_total", &upper_out),
        Some(15.0)
    );
    let calls = |hook| [echo[0], echo[1], ("hook", hook)];
    let count = "sandport_plugin_call_duration_seconds_count";
    assert_eq!(value(&s, count, &calls("on-connect")), Some(1.0), "{s}");
    assert_eq!(value(&s, count, &calls("on-message")), Some(3.0), "{s}");
    let inf = [echo[0], echo[1], ("hook", "on-message"), ("le", "+Inf")];
    let bucket = "sandport_plugin_call_duration_seconds_bucket";
    assert_eq!(value(&s, bucket, &inf), Some(3.0), "{s}");
    let sum = value(
        &s,
        "sandport_plugin_call_duration_seconds_sum",
        &calls("on-message"),
    );
    assert!(sum.is_some_and(|v| v > 0.0), "{s}");
    // --isolation message: one instance, made for on-connect and put back as instantiation
    // left it after that call and each message.
    let made = value(&s, "sandport_plugin_instances_created_total", &echo);
    assert_eq!(made, Some(1.0), "{s}");
    let reset = value(&s, "sandport_plugin_instances_reset_total", &echo);
    assert_eq!(reset, Some(4.0), "{s}");
    // The first reset scans memory for the pages the call wrote; later ones may not.
    let scans = value(&s, "sandport_plugin_instance_reset_scans_total", &echo);
    assert!(scans.is_some_and(|n| (1.0..=4.0).contains(&n)), "{s}");

    drop(c);
    let closed = [("reason", "client_closed")];
    let s = wait_value(m, "sandport_connections_closed_total", &closed, 1.0);
    assert_eq!(value(&s, "sandport_connections_open", &[]), Some(0.0));
    assert_eq!(value(&s, count, &calls("on-disconnect")), Some(1.0), "{s}");
    promtool_check(&s);
}

#[test]
fn a_plugin_error_is_counted_by_cause_and_its_close_by_reason() {
    let (server, m) = with_metrics(&[test_plugin("trap")], &[]);
    let mut c = server.connect();
    c.send_line("boom");
    c.expect_closed_without_reply(REPLY_TIMEOUT);
    wait_value(m, "sandport_plugin_errors_total", &[("cause", "trap")], 1.0);
    let closed = [("reason", "plugin_error")];
    let s = wait_value(m, "sandport_connections_closed_total", &closed, 1.0);
    assert_eq!(
        value(&s, "sandport_plugin_errors_total", &[("cause", "timeout")]),
        Some(0.0)
    );
    promtool_check(&s);
}

#[test]
fn buffered_bytes_count_a_message_still_arriving() {
    let (server, m) = with_metrics(&[plugin("echo")], &["--workers", "1"]);
    let mut c = server.connect();
    c.send(b"abcd");
    server.wait_until_read(&c);
    // Each worker sums its connections' bytes at least once a second.
    wait_value(m, "sandport_buffered_bytes", &[], 4.0);
    c.send(b"ef\n");
    c.expect_line("abcdef");
    wait_value(m, "sandport_buffered_bytes", &[], 0.0);
}

#[test]
fn state_and_messaging_operations_are_counted_by_op() {
    let (server, m) = with_metrics(&[test_plugin("statetest")], &[]);
    let mut c = server.connect();
    for (line, reply) in [
        ("set k v", "ok"),
        ("get k", "v"),
        ("incr n 2", "2"),
        ("join lobby", "ok"),
    ] {
        c.roundtrip(line, reply);
    }
    let s = wait_value(
        m,
        "sandport_messaging_operations_total",
        &[("op", "join")],
        1.0,
    );
    for op in ["set", "get", "increment"] {
        let n = value(&s, "sandport_state_operations_total", &[("op", op)]);
        assert_eq!(n, Some(1.0), "{op}:\n{s}");
    }
    let ttl = value(
        &s,
        "sandport_state_operations_total",
        &[("op", "set-with-ttl")],
    );
    assert_eq!(ttl, Some(0.0), "{s}");
    promtool_check(&s);
}

#[test]
fn probes_answer_and_readyz_turns_503_once_the_drain_begins() {
    // Set through the environment this time; a call in flight keeps the drain going.
    let mut server = Server::builder()
        .plugin(test_plugin("spin"))
        .env("SANDPORT_METRICS_LISTEN", "127.0.0.1:0")
        .args(["--timeout-ms", "20000", "--shutdown-timeout-ms", "30000"])
        .start();
    let m = metrics_addr(&server);
    assert_eq!(status(m, "/healthz"), 200);
    assert_eq!(status(m, "/readyz"), 200);
    assert_eq!(status(m, "/readyz?verbose"), 200);
    assert_eq!(status(m, "/"), 404);
    assert_eq!(status(m, "/metrics/extra"), 404);
    let (code, head, _) = request(m, "POST", "/metrics");
    assert_eq!(code, 405, "{head}");
    let (code, head, body) = request(m, "HEAD", "/metrics");
    assert_eq!((code, body.as_str()), (200, ""), "{head}");

    let mut busy = server.connect();
    busy.send_line("busy 2000");
    server.wait_until_read(&busy);
    server.signal(libc::SIGTERM);
    wait_until("/readyz answers 503", REPLY_TIMEOUT, || {
        status(m, "/readyz") == 503
    });
    assert_eq!(status(m, "/healthz"), 200, "alive while it drains");
    assert!(server.is_running(), "still draining");
    busy.expect_line("done 2000");
    let exit = server.wait_exit(Duration::from_secs(10));
    assert_eq!(exit.and_then(|s| s.code()), Some(0), "{exit:?}");
}

#[test]
fn a_bad_metrics_address_is_refused_at_startup() {
    let refused = |addr: &str| {
        Server::builder()
            .plugin(plugin("echo"))
            .args(["--metrics-listen", addr])
            .run_expect_failure()
    };
    let (code, err) = refused("localhost");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--metrics-listen"), "{err}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, err) = refused(&addr);
    assert_eq!(code, 2, "{err}");
    let want = format!("cannot serve metrics on {addr} (--metrics-listen)");
    assert!(err.contains(&want), "{err}");

    // Off by default.
    let server = Server::builder().plugin(plugin("echo")).start();
    assert!(server.log_lines_containing("metrics served").is_empty());
}
