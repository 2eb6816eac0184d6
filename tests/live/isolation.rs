//! What a swap does to connections already open, per isolation mode: under `connection` they
//! keep the version they started with until they close; under `message` and `worker` their
//! next message gets the new one.

use super::{deploy, serve_file, wait_reloads, wait_served};
use crate::support::*;

/// Starts upper under `mode`, opens a connection, swaps in echo; returns the server, the
/// connection opened before the swap, and the folder.
fn swapped_under(mode: &str) -> (Server, Client, TempDir) {
    let dir = TempDir::new("live-iso");
    let (server, metrics) = serve_file(&dir, &plugin("upper"), &["--isolation", mode]);
    let mut before = server.connect();
    before.roundtrip("hello", "HELLO");
    deploy(dir.path(), "p.wasm", &plugin("echo"));
    wait_reloads(metrics, "p", "loaded", 1.0);
    wait_served(&server, "hello", "hello");
    (server, before, dir)
}

#[test]
fn connection_isolation_pins_an_open_connection_to_its_version() {
    let (server, mut before, _dir) = swapped_under("connection");
    for _ in 0..3 {
        before.roundtrip("hello", "HELLO");
    }
    let mut after = server.connect();
    after.roundtrip("hello", "hello");
    before.roundtrip("again", "AGAIN");
    server.assert_no_call_failed();
}

#[test]
fn message_isolation_switches_an_open_connection_at_its_next_message() {
    let (server, mut before, _dir) = swapped_under("message");
    before.roundtrip("hello", "hello");
    server.assert_no_call_failed();
}

#[test]
fn worker_isolation_switches_an_open_connection_at_its_next_message() {
    let (server, mut before, _dir) = swapped_under("worker");
    before.roundtrip("hello", "hello");
    server.assert_no_call_failed();
}
