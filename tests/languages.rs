//! The same `upper` behaviour from a plugin in every supported language, components and core
//! modules alike: the checks below, run for each language by [`common_tests!`] in its module
//! (`languages/<lang>.rs`, next to the tests of that language's own plugins and quirks).

use crate::support::*;

/// Generates one `#[test]` per check named, calling the function of the same name in this
/// module for `lang` (and the arguments given, if any); attributes and doc comments before a
/// check go on its test:
///
/// ```ignore
/// common_tests! { "zig":
///     upper;
///     /// Why a 4 MiB cap is enough.
///     memory_reuse("4MiB", 1_000_000, "");
/// }
/// ```
macro_rules! common_tests {
    ($lang:literal: $($(#[$attr:meta])* $check:ident $(($($arg:expr),* $(,)?))?;)+) => {
        $(
            $(#[$attr])*
            #[test]
            fn $check() {
                crate::languages::$check($lang $($(, $arg)*)?);
            }
        )+
    };
}
use common_tests;

mod assemblyscript;
mod c;
mod go;
mod js;
mod python;
mod rooms;
mod wat;
mod zig;

use rooms::chat_rooms;

/// The workers the server handed its first `connections` connections to, from their
/// `connection opened ... worker=N` log lines (waited for: the log is read on a thread of its own).
fn workers_serving(server: &Server, connections: usize) -> std::collections::BTreeSet<String> {
    let opened = || server.log_lines_containing("connection opened");
    wait_until(
        &format!("{connections} `connection opened` lines"),
        LOG_TIMEOUT,
        || opened().len() >= connections,
    );
    opened()
        .iter()
        .filter_map(|l| log_field(l, "worker"))
        .collect()
}

/// `upper-<lang>` upper-cases, honours `prefix`, logs through the host (a debug line containing
/// "upper-cased"), keeps the connection open, and behaves the same under every isolation mode
/// (a core module's allocator must not leak or corrupt across calls on a reused instance).
fn upper(lang: &str) {
    upper_at(lang, &test_plugin(&format!("upper-{lang}")));
}

mod rust {
    /// The Rust `upper` is the example in `plugins/`; the same checks, under the same naming.
    #[test]
    fn upper() {
        let dir = crate::support::TempDir::new("upper-rust");
        let path = dir.copy(&crate::support::plugin("upper"), "upper-rust.wasm");
        super::upper_at("rust", &path);
    }

    /// The Rust `chat` (contract 0.2) is the example in `plugins/`: the protocol of the Python
    /// and JavaScript ones, word for word.
    #[test]
    fn chat_rooms() {
        let dir = crate::support::TempDir::new("chat-rust");
        let path = dir.copy(&crate::support::plugin("chat"), "chat-rust.wasm");
        super::rooms::chat_rooms_at("rust", &path);
    }
}

fn upper_at(lang: &str, path: &std::path::Path) {
    let name = format!("upper-{lang}");
    for isolation in ["message", "connection", "worker"] {
        let server = Server::builder()
            .plugin(path)
            .args(["--isolation", isolation, "--workers", "1"])
            .env("RUST_LOG", "debug")
            .start();
        let mut c = server.connect();
        for i in 0..200 {
            c.send_line(&format!("hello {lang} {i}"));
            c.expect_line(&format!("HELLO {} {i}", lang.to_uppercase()));
        }
        c.send_line("a-b_c 123 {x}");
        c.expect_line("A-B_C 123 {X}");
        c.send_line("");
        c.expect_line("");
        server.wait_for_plugin_log("upper-cased", &name);
    }

    let server = Server::builder()
        .plugin(path)
        .config(&format!("{name}.prefix=>> "))
        .start();
    let mut c = server.connect();
    c.send_line("hello");
    c.expect_line(">> HELLO");
}

/// On one long-lived instance (`--isolation worker`, one worker) capped at `memory_limit`, 200
/// messages of 40 KB each (16 MB in all, with their replies), then one of `big` bytes, then a
/// small one, all get through with `prefix` (none if empty): the plugin gives back what it
/// frees, so it never runs out.
fn memory_reuse(lang: &str, memory_limit: &str, big: usize, prefix: &str) {
    let name = format!("upper-{lang}");
    let mut builder = Server::builder().plugin(test_plugin(&name)).args([
        "--isolation",
        "worker",
        "--workers",
        "1",
        "--memory-limit",
        memory_limit,
    ]);
    if !prefix.is_empty() {
        builder = builder.config(&format!("{name}.prefix={prefix}"));
    }
    let server = builder.start();
    let mut c = server.connect();
    let message = "abc".repeat(40_000 / 3);
    let expected = format!("{prefix}{}", message.to_uppercase());
    for _ in 0..200 {
        c.send_line(&message);
        c.expect_line(&expected);
    }
    let big = "x".repeat(big);
    c.send_line(&big);
    c.expect_line(&format!("{prefix}{}", big.to_uppercase()));
    c.send_line("still here");
    c.expect_line(&format!("{prefix}STILL HERE"));
}

/// Only ASCII letters change; every other byte (UTF-8 or not) comes back as it was.
fn ascii_only(lang: &str) {
    let server = Server::builder()
        .plugin(test_plugin(&format!("upper-{lang}")))
        .start();
    let mut c = server.connect();
    c.send(b"stra\xc3\x9fe \xff\xfe z@[`{\n");
    let line = c.recv_line_bytes(REPLY_TIMEOUT).expect("a reply");
    assert_eq!(line, b"STRA\xc3\x9fE \xff\xfe Z@[`{\n");
}

/// A server running `upper-<lang>` with the setting `prefix`, under `--isolation isolation`.
fn prefixed_upper(lang: &str, prefix: &str, isolation: &str) -> Server {
    let name = format!("upper-{lang}");
    Server::builder()
        .plugin(test_plugin(&name))
        .config(&format!("{name}.prefix={prefix}"))
        .args(["--isolation", isolation])
        .start()
}

/// A 1000-byte `prefix` (longer than a first guess at a buffer) arrives whole, call after call
/// on one long-lived instance.
fn long_prefix(lang: &str) {
    let prefix = "p".repeat(1000);
    let server = prefixed_upper(lang, &prefix, "worker");
    let mut c = server.connect();
    for _ in 0..3 {
        c.send_line("hi");
        c.expect_line(&format!("{prefix}HI"));
    }
}
