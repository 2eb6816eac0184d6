//! The `ratelimit` example (contract 0.2): at most `max` messages per `window_ms` per client IP
//! address, counted in host state, so across connections and workers and under the default
//! `--isolation message`; the first message over gets `rate limit exceeded` and a close.

use std::time::{Duration, Instant};

use super::worker_of;
use crate::support::*;

const EXCEEDED: &str = "rate limit exceeded";

fn ratelimit(args: &[&str], config: &[&str]) -> Server {
    let mut builder = Server::builder()
        .plugin(test_plugin("ratelimit"))
        .args(args);
    for kv in config {
        builder = builder.config(kv);
    }
    builder.start()
}

/// The connection id of the newest `connection opened` line for `client`'s address.
fn conn_id(server: &Server, client: &Client) -> u64 {
    let peer = client.local_addr().to_string();
    let line = server.wait_for_log_where(
        LOG_TIMEOUT,
        &format!("connection opened from {peer}"),
        |l| l.contains("connection opened") && log_field(l, "peer").as_deref() == Some(&peer),
    );
    log_field(&line, "conn")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no conn= in {line}"))
}

#[test]
fn one_address_shares_its_limit_across_connections_on_different_workers() {
    let server = ratelimit(
        &["--workers", "2"],
        &["ratelimit.max=3", "ratelimit.window_ms=60000"],
    );
    let mut a = server.connect();
    let mut b = server.connect();
    assert_ne!(
        worker_of(&server, conn_id(&server, &a)),
        worker_of(&server, conn_id(&server, &b)),
        "the two connections landed on one worker"
    );
    a.roundtrip("a1", "a1");
    b.roundtrip("b1", "b1");
    a.roundtrip("a2", "a2");
    // The fourth message from 127.0.0.1, whichever connection sends it, is one too many.
    b.roundtrip("b2", EXCEEDED);
    b.expect_closed_without_reply(REPLY_TIMEOUT);
    a.roundtrip("a3", EXCEEDED);
    a.expect_closed_without_reply(REPLY_TIMEOUT);
    let line = server.wait_for_plugin_log("sent more than 3 messages in 60000 ms", "ratelimit");
    assert!(line.contains("WARN"), "not a warning: {line}");
    // A new connection from the same address is refused on its first message ...
    let mut c = server.connect();
    c.roundtrip("c1", EXCEEDED);
    c.expect_closed_without_reply(REPLY_TIMEOUT);
    // ... while another address has a count of its own.
    let mut other = Client::connect_from([127, 0, 0, 2], server.addr);
    for i in 0..3 {
        other.roundtrip(&format!("o{i}"), &format!("o{i}"));
    }
    other.roundtrip("o3", EXCEEDED);
    server.assert_no_call_failed();
}

#[test]
fn messages_under_the_limit_are_echoed_unchanged() {
    let server = ratelimit(&[], &[]);
    let mut c = server.connect();
    // The default limit is 5 a second.
    c.roundtrip("MiXeD cAsE \u{e9}\t{}", "MiXeD cAsE \u{e9}\t{}");
    for i in 0..4 {
        c.roundtrip(&format!("message {i}"), &format!("message {i}"));
    }
    c.expect_silence(Duration::from_millis(100));
}

#[test]
fn a_pipelined_burst_is_cut_at_the_limit() {
    let server = ratelimit(&[], &["ratelimit.max=2", "ratelimit.window_ms=60000"]);
    let mut c = server.connect();
    c.send(b"one\ntwo\nthree\nfour\n");
    c.expect_line("one");
    c.expect_line("two");
    c.expect_line(EXCEEDED);
    c.expect_closed_without_reply(REPLY_TIMEOUT);
}

#[test]
fn the_count_starts_again_once_the_window_has_passed() {
    let window = Duration::from_millis(400);
    let server = ratelimit(&[], &["ratelimit.max=2", "ratelimit.window_ms=400"]);
    let mut c = server.connect();
    let first = Instant::now();
    c.roundtrip("a", "a");
    c.roundtrip("b", "b");
    c.roundtrip("c", EXCEEDED);
    c.expect_closed_without_reply(REPLY_TIMEOUT);
    // New connections are refused until the window that started with "a" has passed.
    let served = eventually(Duration::from_secs(10), || {
        let mut d = server.connect();
        d.send_line("again");
        match d.line().as_str() {
            "again" => Some((Instant::now(), d)),
            EXCEEDED => None,
            other => panic!("unexpected reply {other:?}"),
        }
    });
    let (at, mut d) = served.expect("served again within 10 s");
    assert!(at - first >= window, "served again after {:?}", at - first);
    d.roundtrip("once more", "once more");
}

#[test]
fn an_invalid_setting_refuses_clients_with_the_reason_logged() {
    let server = ratelimit(&[], &["ratelimit.max=lots"]);
    let mut c = server.connect();
    c.send_line("hello");
    c.expect_closed_without_reply(REPLY_TIMEOUT);
    server.wait_for_plugin_log("invalid setting max=", "ratelimit");
}
