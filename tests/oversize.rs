//! --max-message-bytes: oversize messages close the connection, nothing else.

use std::time::{Duration, Instant};

use crate::support::*;

fn line_server() -> Server {
    Server::builder()
        .plugin(plugin("echo"))
        .args(["--framing", "line", "--max-message-bytes", "64"])
        .start()
}

fn length_server() -> Server {
    Server::builder()
        .plugin(plugin("echo"))
        .args(["--framing", "length", "--max-message-bytes", "64"])
        .start()
}

#[test]
fn line_longer_than_limit_closes_only_that_connection() {
    let server = line_server();
    let mut other = server.connect();
    other.send_line("before");
    other.expect_line("before");

    let mut c = server.connect();
    let mut big = vec![b'a'; 1000];
    big.push(b'\n');
    c.send(&big);
    c.expect_closed_without_reply(Duration::from_secs(3));

    other.send_line("after");
    other.expect_line("after");
    let mut fresh = server.connect();
    fresh.send_line("fresh");
    fresh.expect_line("fresh");
}

#[test]
fn line_exactly_at_limit_is_accepted_one_more_byte_is_not() {
    let server = line_server();
    let mut c = server.connect();
    let at_limit = "b".repeat(64);
    c.send_line(&at_limit);
    c.expect_line(&at_limit);

    let mut d = server.connect();
    d.send_line(&"c".repeat(65));
    d.expect_closed_without_reply(Duration::from_secs(3));
}

#[test]
fn unterminated_line_growing_past_limit_closes_connection() {
    let server = line_server();
    let mut c = server.connect();
    // No newline ever: the host must not keep buffering.
    c.send(&[b'z'; 1000]);
    c.expect_closed_without_reply(Duration::from_secs(3));
}

#[test]
fn length_prefix_ffffffff_closes_connection_at_once() {
    let server = length_server();
    let rss_before = server.rss_kib();
    let mut other = server.connect();
    other.send_frame(b"before");
    assert_eq!(other.recv_frame(REPLY_TIMEOUT).unwrap(), b"before");

    let mut c = server.connect();
    let t = Instant::now();
    // Only the prefix: the host must not wait for (or allocate) 4 GiB of payload.
    c.send(&[0xFF, 0xFF, 0xFF, 0xFF]);
    c.expect_closed_without_reply(Duration::from_secs(3));
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "closing took {:?}",
        t.elapsed()
    );
    let rss_after = server.rss_kib();
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );

    other.send_frame(b"after");
    assert_eq!(other.recv_frame(REPLY_TIMEOUT).unwrap(), b"after");
}

#[test]
fn length_prefix_at_limit_is_accepted_one_more_is_not() {
    let server = length_server();
    let mut c = server.connect();
    let payload = vec![7u8; 64];
    c.send_frame(&payload);
    assert_eq!(c.recv_frame(REPLY_TIMEOUT).unwrap(), payload);

    let mut d = server.connect();
    d.send(&65u32.to_be_bytes());
    d.expect_closed_without_reply(Duration::from_secs(3));
}

/// A core module whose reply is 60,000 bytes of its memory for a message over 5 bytes, and the
/// message itself otherwise.
const BIG_REPLY_CORE: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "sandport_abi_version") (result i32) (i32.const 1))
  (func (export "sandport_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "sandport_free") (param i32 i32))
  (func (export "sandport_on_message") (param i64 i32 i32) (result i32)
    (local $big i32)
    (local.set $big (i32.gt_u (local.get 2) (i32.const 5)))
    (i32.store (i32.const 0) (i32.const 1))
    (i32.store (i32.const 4) (select (i32.const 16) (local.get 1) (local.get $big)))
    (i32.store (i32.const 8) (select (i32.const 60000) (local.get 2) (local.get $big)))
    (i32.const 0)))"#;

#[test]
fn a_core_module_reply_over_max_reply_bytes_fails_its_call_only() {
    let dir = TempDir::new("core-big-reply");
    let path = dir.write("big.wat", BIG_REPLY_CORE.as_bytes());
    let server = Server::builder()
        .plugin(&path)
        .args(["--max-reply-bytes", "1KiB"])
        .start();
    let mut greedy = server.connect();
    let mut other = server.connect();
    greedy.send_line("give me lots");
    greedy.expect_closed_without_reply(REPLY_TIMEOUT);
    let line = server.wait_for_log("plugin call failed", Duration::from_secs(5));
    assert!(
        line.contains("reply too large: 60000 bytes, over --max-reply-bytes 1024"),
        "{line}"
    );
    other.roundtrip("hi", "hi");
}
