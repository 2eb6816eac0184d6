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
// limiter-go: a rate limit per client IP on the host's state (core ABI version 2)

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

/// Sends `lines` in a single write, so that they reach the plugin within a few milliseconds of
/// each other whatever the machine is doing.
fn send_burst(c: &mut Client, lines: &[&str]) {
    let bytes: String = lines.iter().map(|l| format!("{l}\n")).collect();
    c.send(bytes.as_bytes());
}

/// Expects `rate limit exceeded`, then the connection closed.
fn expect_limited(c: &mut Client) {
    let rest = c.read_until_closed(Duration::from_secs(5));
    assert_eq!(
        String::from_utf8_lossy(&rest),
        "rate limit exceeded\n",
        "expected the limit reply and a close"
    );
}

/// Under the default `--isolation message` (a fresh instance for every message): the count lives
/// in the host's state.
#[test]
fn limiter_go_echoes_under_the_default_limit_then_closes() {
    let server = limiter(&[], &[]);
    let mut c = server.connect();
    // The default is 5 messages per second.
    let lines: Vec<String> = (1..=6).map(|i| format!("message {i}")).collect();
    send_burst(
        &mut c,
        &lines.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    for line in &lines[..5] {
        c.expect_line(line);
    }
    expect_limited(&mut c);
    server.wait_for_log(
        "127.0.0.1 (conn 1): more than 5 messages in 1s, closing",
        Duration::from_secs(5),
    );
}

/// The limit is per client address: a second connection from the same IP shares the count.
#[test]
fn limiter_go_max_setting_counts_per_ip() {
    let server = limiter(&[], &["limiter-go.max=2", "limiter-go.window_ms=60000"]);
    let mut c = server.connect();
    c.send_line("one");
    c.expect_line("one");
    c.send_line("two");
    c.expect_line("two");
    c.send_line("three");
    expect_limited(&mut c);
    let mut d = server.connect();
    d.send_line("again");
    expect_limited(&mut d);
}

/// Two connections from one IP, on two workers (each has its own instances): one count.
#[test]
fn limiter_go_counts_across_connections_and_workers() {
    let server = limiter(
        &["--workers", "2"],
        &["limiter-go.max=3", "limiter-go.window_ms=60000"],
    );
    let mut a = server.connect();
    let mut b = server.connect();
    // The acceptor gives each new connection to the least loaded worker.
    for worker in ["worker=0", "worker=1"] {
        server.wait_for_log_where(LOG_TIMEOUT, worker, |l| {
            l.contains("connection opened") && l.contains(worker)
        });
    }
    a.send_line("a1");
    a.expect_line("a1");
    b.send_line("b1");
    b.expect_line("b1");
    a.send_line("a2");
    a.expect_line("a2");
    // The 4th message from 127.0.0.1 is over the limit, whichever connection sends it.
    b.send_line("b2");
    expect_limited(&mut b);
    a.send_line("a3");
    expect_limited(&mut a);
}

/// The window starts with its first message; once it is over, the count starts again.
#[test]
fn limiter_go_resets_after_the_window() {
    let window = Duration::from_millis(500);
    let server = limiter(&[], &["limiter-go.max=2", "limiter-go.window_ms=500"]);
    let mut c = server.connect();
    send_burst(&mut c, &["a", "b"]);
    c.expect_line("a");
    c.expect_line("b");
    // Time passing is what this test is about, so it sleeps. The window began before the
    // first reply: a window after the last reply, it is over. Expiry times count whole
    // milliseconds of the wall clock, so a message 0.7 ms after the window's end could still
    // fall in its last millisecond: a few more make it certain.
    let window = window + Duration::from_millis(5);
    std::thread::sleep(window);
    send_burst(&mut c, &["c", "d", "e"]);
    c.expect_line("c");
    c.expect_line("d");
    expect_limited(&mut c);
    // A new connection from the same address, a window later, starts from zero too.
    std::thread::sleep(window);
    let mut d = server.connect();
    send_burst(&mut d, &["x", "y"]);
    d.expect_line("x");
    d.expect_line("y");
}

/// The same behaviour whatever the instances' lifetime.
#[test]
fn limiter_go_in_every_isolation_mode() {
    for isolation in ["connection", "worker"] {
        let server = limiter(
            &["--isolation", isolation, "--workers", "1"],
            &["limiter-go.max=2", "limiter-go.window_ms=60000"],
        );
        let mut c = server.connect();
        let mut d = server.connect();
        c.send_line("1");
        c.expect_line("1");
        d.send_line("2");
        d.expect_line("2");
        c.send_line("3");
        expect_limited(&mut c);
    }
}

/// A setting that is not a number makes the call fail: the host logs the plugin's error and
/// closes the connection.
#[test]
fn limiter_go_rejects_a_bad_setting() {
    let server = limiter(&[], &["limiter-go.max=lots"]);
    let mut c = server.connect();
    c.send_line("hello");
    c.expect_closed_without_reply(Duration::from_secs(5));
    server.wait_for_log("`max` must be a whole number", Duration::from_secs(5));
}

// ---------------------------------------------------------------------------------------------
// chat-go: the Go package's messaging and state wrappers, through a chat room

#[test]
fn chat_go_rooms_nicknames_and_private_messages() {
    // Two workers and fresh instances for every call: everything lives in the host.
    let server = Server::builder()
        .plugin(test_plugin("chat-go"))
        .args(["--workers", "2"])
        .start();
    let mut a = server.connect();
    a.expect_line("welcome, 1 in the lobby");
    let mut b = server.connect();
    b.expect_line("welcome, 2 in the lobby");

    a.roundtrip("/nick ann", "you are ann");
    b.roundtrip("/nick ann", "nick ann is taken");
    b.roundtrip("/nick bob", "you are bob");
    a.roundtrip("/who", "in the lobby: ann, bob");
    a.roundtrip("/nicks", "nicks: ann bob");

    // A line goes to the others in the room, not back to its sender.
    a.send_line("hello all");
    b.expect_line("ann: hello all");
    b.roundtrip("/msg ann psst", "sent");
    a.expect_line("bob whispers: psst");
    b.roundtrip("/msg carol hi", "no such nick: carol");

    a.roundtrip("/leave", "left");
    a.roundtrip("/leave", "not in the lobby");
    b.roundtrip("/who", "in the lobby: bob");
    b.send_line("anyone?");
    a.expect_silence(Duration::from_millis(200));

    // Kicking closes the connection; its nickname is freed when it disconnects.
    b.roundtrip("/kick ann", "kicked ann");
    a.expect_closed_without_reply(Duration::from_secs(5));
    wait_until("ann's nickname is freed", Duration::from_secs(5), || {
        b.send_line("/nicks");
        b.line() == "nicks: bob"
    });
    let mut c = server.connect();
    c.expect_line("welcome, 2 in the lobby");
    c.roundtrip("/nick ann", "you are ann");
}
