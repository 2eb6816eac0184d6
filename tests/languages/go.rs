//! Plugins written in Go, built from source by guest-plugins/go/build.sh.

use std::time::Duration;

use crate::support::*;

super::common_tests! { "go":
    upper;
    /// Buffers lent to the host are released by `sandport_free` and collected by Go's garbage
    /// collector: on one long-lived instance with a 32 MiB memory cap, 200 messages of 40 KB each
    /// (16 MB in all, with their replies) all get through.
    memory_reuse("32MiB", 1_000_000, "");
}

/// Upper-cased with Go's `bytes.ToUpper` (Unicode; invalid UTF-8 becomes U+FFFD), and a prefix
/// longer than the first 256-byte buffer is fetched again with room for all of it.
#[test]
fn unicode_and_long_prefix() {
    let prefix = "p".repeat(1000);
    let server = super::prefixed_upper("go", &prefix, "connection");
    let mut c = server.connect();
    c.send_line("é ü ok");
    c.expect_line(&format!("{prefix}É Ü OK"));
    c.send(b"\xffab\n");
    c.expect_line(&format!("{prefix}\u{fffd}AB"));
}

// ---------------------------------------------------------------------------------------------
// limiter-go

fn limiter(args: &[&str], config: &[&str]) -> Server {
    let mut builder = Server::builder()
        .plugin(test_plugin("limiter-go"))
        .args(args)
        .env("RUST_LOG", "info,plugin=debug");
    for kv in config {
        builder = builder.config(kv);
    }
    builder.start()
}

/// Sends `message` and expects `rate limit exceeded`, then the connection closed.
fn expect_limited(c: &mut Client, message: &str) {
    c.send_line(message);
    let rest = c.read_until_closed(Duration::from_secs(5));
    assert_eq!(
        String::from_utf8_lossy(&rest),
        "rate limit exceeded\n",
        "expected the limit reply and a close"
    );
}

#[test]
fn limiter_go_echoes_under_the_default_limit_then_closes() {
    let server = limiter(&["--isolation", "connection"], &[]);
    let mut c = server.connect();
    // The default is 5 messages per second.
    for i in 1..=5 {
        c.send_line(&format!("message {i}"));
        c.expect_line(&format!("message {i}"));
    }
    expect_limited(&mut c, "message 6");
    server.wait_for_log(
        "more than 5 messages in 1s, closing",
        Duration::from_secs(5),
    );
}

#[test]
fn limiter_go_max_setting() {
    let server = limiter(&["--isolation", "connection"], &["limiter-go.max=2"]);
    let mut c = server.connect();
    c.send_line("one");
    c.expect_line("one");
    c.send_line("two");
    c.expect_line("two");
    expect_limited(&mut c, "three");
    // Another connection has its own count.
    let mut d = server.connect();
    d.send_line("again");
    d.expect_line("again");
}

/// A new window starts `window_ms` after the previous one: the count starts over.
#[test]
fn limiter_go_window_setting() {
    let server = limiter(
        &["--isolation", "connection"],
        &["limiter-go.max=2", "limiter-go.window_ms=300"],
    );
    let window = Duration::from_millis(300);
    let mut c = server.connect();
    for round in 0..3 {
        for i in 0..2 {
            c.send_line(&format!("r{round} m{i}"));
            c.expect_line(&format!("r{round} m{i}"));
        }
        // Time passing is what this test is about, so it sleeps. The window began at a message
        // answered by now: a window later it is over (the plugin reads the same monotonic
        // clock).
        std::thread::sleep(window);
    }
    c.send_line("a");
    c.expect_line("a");
    c.send_line("b");
    c.expect_line("b");
    expect_limited(&mut c, "c");
}

/// With `--isolation worker` one instance serves every connection of its worker: the counts are
/// kept per connection id, and a closed connection's entry is forgotten.
#[test]
fn limiter_go_counts_per_connection_on_a_shared_instance() {
    let server = limiter(
        &["--isolation", "worker", "--workers", "1"],
        &["limiter-go.max=3", "limiter-go.window_ms=60000"],
    );
    let mut clients: Vec<Client> = (0..4).map(|_| server.connect()).collect();
    // 4 connections x 3 messages, interleaved: 12 messages on one instance, 3 per connection.
    for round in 0..3 {
        for (n, c) in clients.iter_mut().enumerate() {
            c.send_line(&format!("c{n} r{round}"));
            c.expect_line(&format!("c{n} r{round}"));
        }
    }
    // Each connection's 4th message is over its own limit.
    for (n, c) in clients.iter_mut().enumerate() {
        expect_limited(c, &format!("c{n} over"));
    }
    // on_disconnect dropped every entry.
    server.wait_for_log("0 connections tracked", Duration::from_secs(5));
    // A new connection starts from zero.
    let mut fresh = server.connect();
    for i in 0..3 {
        fresh.send_line(&format!("fresh {i}"));
        fresh.expect_line(&format!("fresh {i}"));
    }
}

/// A setting that is not a number makes the call fail: the host logs the plugin's error and
/// closes the connection.
#[test]
fn limiter_go_rejects_a_bad_setting() {
    let server = limiter(&["--isolation", "connection"], &["limiter-go.max=lots"]);
    let mut c = server.connect();
    c.send_line("hello");
    c.expect_closed_without_reply(Duration::from_secs(5));
    server.wait_for_log("`max` must be a whole number", Duration::from_secs(5));
}
