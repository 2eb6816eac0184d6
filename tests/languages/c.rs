//! Plugins written in C, built from source by guest-plugins/c/build.sh.
//!
//! `upper-c` is a component: C compiled with Debian's clang for wasm32-wasi (preview 1) against
//! bindings from `wit-bindgen c`, then wrapped with `wasm-tools component new` and wasmtime's
//! preview 1 reactor adapter.

use crate::support::*;

super::common_tests! { "c":
    upper;
    /// Every buffer goes back to wasi-libc's malloc (the message, the prefix from `config-get`,
    /// the reply after the call): on one long-lived instance with a 4 MiB memory cap, 200
    /// messages of 40 KB each with a prefix (16 MB in all, with their replies) and then a 1 MB
    /// one all get through.
    memory_reuse("4MiB", 1_000_000, "> ");
}

/// Only ASCII letters change: every other byte, valid UTF-8 or not, comes back as it was.
#[test]
fn changes_ascii_letters_only() {
    let server = Server::builder().plugin(test_plugin("upper-c")).start();
    let mut c = server.connect();
    c.send_line("straße é 😀 ok");
    c.expect_line("STRAßE é 😀 OK");
    for bad in [&b"\xff\xfeabc"[..], b"ab\xc3", b"\x00z\x7f"] {
        let mut message = bad.to_vec();
        message.push(b'\n');
        c.send(&message);
        let line = c.recv_line_bytes(REPLY_TIMEOUT).expect("a reply");
        assert_eq!(line, message.to_ascii_uppercase(), "reply to {bad:?}");
    }
}

/// A long prefix, and a prefix before an empty message (the reply is the prefix alone).
#[test]
fn long_prefix_and_empty_message() {
    let prefix = "p".repeat(5000);
    let server = super::prefixed_upper("c", &prefix, "connection");
    let mut c = server.connect();
    for _ in 0..3 {
        c.send_line("hi");
        c.expect_line(&format!("{prefix}HI"));
        c.send_line("");
        c.expect_line(&prefix);
    }
}
