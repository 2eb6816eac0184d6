//! The Rust guest SDK's 0.1 API (`guest-plugins/sdk`, crate `sandport-guest`), through the
//! `ratelimit1` test plugin written with it: at most `max` messages (default 5) per `window_ms`
//! (default 1000) on a connection; the first message over the limit gets `rate limit exceeded`
//! and a close. (The 0.2 API and the `ratelimit` example written with it, which limits per
//! client address in host state, are tested in `contract_v2`.)
//!
//! The over-the-limit checks send their messages in one write, so that they reach the plugin
//! within a few milliseconds of each other whatever the machine is doing.

use std::thread;
use std::time::Duration;

use crate::support::*;

const EXCEEDED: &str = "rate limit exceeded";

fn ratelimit1_server(args: &[&str], config: &[&str]) -> Server {
    let mut builder = Server::builder()
        .plugin(test_plugin("ratelimit1"))
        .args(args);
    for kv in config {
        builder = builder.config(kv);
    }
    builder.start()
}

/// Sends `lines` in a single write.
fn send_burst(client: &mut Client, lines: &[&str]) {
    let mut bytes = Vec::new();
    for line in lines {
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
    }
    client.send(&bytes);
}

#[test]
fn ratelimit1_echoes_messages_under_the_limit() {
    let server = ratelimit1_server(&["--isolation", "connection"], &[]);
    let mut c = server.connect();
    // The default limit is 5 per second: 5 messages never exceed it, however fast they come.
    for i in 0..5 {
        c.send_line(&format!("message {i}"));
        c.expect_line(&format!("message {i}"));
    }
    // Bytes come back unchanged, whatever they are.
    let mut d = server.connect();
    d.send_line("MiXeD cAsE \u{e9}\t{}");
    d.expect_line("MiXeD cAsE \u{e9}\t{}");
    d.expect_silence(Duration::from_millis(200));
}

#[test]
fn ratelimit1_closes_the_connection_on_the_first_message_over_the_limit() {
    // A long window, so that the limit applies however slowly the messages arrive.
    let server = ratelimit1_server(
        &["--isolation", "connection"],
        &["ratelimit1.window_ms=60000"],
    );
    let mut c = server.connect();
    for i in 1..=5 {
        c.send_line(&i.to_string());
        c.expect_line(&i.to_string());
    }
    c.send_line("6");
    c.expect_line(EXCEEDED);
    c.expect_closed_without_reply(REPLY_TIMEOUT);
    let line = server.wait_for_plugin_log("sent more than 5 messages in 60000 ms", "ratelimit1");
    assert!(line.contains("WARN"), "not a warning: {line}");

    // Pipelined: the rest of a burst after the refused message is never answered.
    let mut d = server.connect();
    send_burst(&mut d, &["a", "b", "c", "d", "e", "f", "g", "h"]);
    for expected in ["a", "b", "c", "d", "e", EXCEEDED] {
        d.expect_line(expected);
    }
    d.expect_closed_without_reply(REPLY_TIMEOUT);
}

#[test]
fn ratelimit1_honours_a_custom_max() {
    let server = ratelimit1_server(&["--isolation", "connection"], &["ratelimit1.max=2"]);
    let mut c = server.connect();
    send_burst(&mut c, &["one", "two", "three"]);
    c.expect_line("one");
    c.expect_line("two");
    c.expect_line(EXCEEDED);
    c.expect_closed_without_reply(REPLY_TIMEOUT);
    server.wait_for_log("sent more than 2 messages", LOG_TIMEOUT);
}

#[test]
fn ratelimit1_starts_afresh_after_a_window_and_on_a_new_connection() {
    let window = Duration::from_millis(500);
    let server = ratelimit1_server(
        &["--isolation", "connection"],
        &["ratelimit1.max=2", "ratelimit1.window_ms=500"],
    );
    // The window slides: once it has passed, the same connection may send `max` messages again.
    let mut c = server.connect();
    send_burst(&mut c, &["a", "b"]);
    c.expect_line("a");
    c.expect_line("b");
    // Time passing is what this test is about, so it sleeps. The plugin timed both messages
    // before answering them: a window after the last reply, the window is over for both (the
    // plugin reads the same monotonic clock).
    thread::sleep(window);
    send_burst(&mut c, &["c", "d", "e"]);
    c.expect_line("c");
    c.expect_line("d");
    c.expect_line(EXCEEDED);
    c.expect_closed_without_reply(REPLY_TIMEOUT);

    // A new connection is not limited by the old one's messages, right away ...
    let mut d = server.connect();
    send_burst(&mut d, &["x", "y"]);
    d.expect_line("x");
    d.expect_line("y");
    // ... nor after waiting a window (a sleep that is the test).
    thread::sleep(window);
    let mut e = server.connect();
    send_burst(&mut e, &["p", "q"]);
    e.expect_line("p");
    e.expect_line("q");
    e.expect_silence(Duration::from_millis(200));
}

#[test]
fn ratelimit1_keeps_one_count_per_connection_on_a_shared_instance() {
    // With `--isolation worker` and one worker, both connections share one instance: the plugin
    // keys its counts by connection id.
    let server = ratelimit1_server(
        &["--isolation", "worker", "--workers", "1"],
        &["ratelimit1.max=3", "ratelimit1.window_ms=60000"],
    );
    let mut a = server.connect();
    let mut b = server.connect();
    for i in 0..3 {
        a.send_line(&format!("a{i}"));
        a.expect_line(&format!("a{i}"));
        b.send_line(&format!("b{i}"));
        b.expect_line(&format!("b{i}"));
    }
    a.send_line("a3");
    a.expect_line(EXCEEDED);
    a.expect_closed_without_reply(REPLY_TIMEOUT);
    // `b` is at its limit too, and is refused on its own next message.
    b.send_line("b3");
    b.expect_line(EXCEEDED);
    b.expect_closed_without_reply(REPLY_TIMEOUT);
    // A new connection on the same instance starts from zero.
    let mut c = server.connect();
    c.send_line("c0");
    c.expect_line("c0");
}

#[test]
fn ratelimit1_refuses_clients_when_a_setting_is_invalid() {
    let server = ratelimit1_server(&["--isolation", "connection"], &["ratelimit1.max=lots"]);
    let mut c = server.connect();
    c.send_line("hello");
    c.expect_closed_without_reply(REPLY_TIMEOUT);
    server.wait_for_plugin_log("invalid setting max=", "ratelimit1");
}
