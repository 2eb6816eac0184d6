//! Plugins written in Python, built from source by guest-plugins/python/build.sh.
//!
//! These components bundle a CPython interpreter (about 18 MB each); the host compiles them at
//! start unless its compile cache already holds them, so each test starts as few servers as it
//! can.

use std::time::Duration;

use crate::support::*;

super::common_tests! { "python":
    upper;
}

fn kv_server(isolation: &str) -> Server {
    Server::builder()
        .plugin(test_plugin("kv-python"))
        .args(["--isolation", isolation, "--workers", "1"])
        .env("RUST_LOG", "info,plugin=debug")
        .start()
}

/// Every command and reply of the protocol on one connection, values with spaces, unknown
/// commands as normal replies; then a second connection starts with an empty store while the
/// first keeps its own.
#[test]
fn kv_python_commands_and_per_connection_state() {
    let server = kv_server("connection");
    let mut a = server.connect();
    a.roundtrip("KEYS", "");
    a.roundtrip("GET missing", "NOT_FOUND");
    a.roundtrip("SET name Ada Lovelace", "OK");
    a.roundtrip("GET name", "Ada Lovelace");
    // Everything after the key is the value, inner and trailing spaces included.
    a.roundtrip("SET spaced  two  spaces ", "OK");
    a.roundtrip("GET spaced", " two  spaces ");
    a.roundtrip("SET name Grace Hopper", "OK");
    a.roundtrip("GET name", "Grace Hopper");
    a.roundtrip("SET b 2", "OK");
    a.roundtrip("KEYS", "b name spaced");
    a.roundtrip("DEL spaced", "1");
    a.roundtrip("DEL spaced", "0");
    a.roundtrip("GET spaced", "NOT_FOUND");
    a.roundtrip("KEYS", "b name");
    // Unknown commands and malformed ones get a normal reply; the connection stays open.
    for bad in [
        "FLUSH",
        "get name",
        "SET onlykey",
        "GET",
        "GET a b",
        "DEL",
        "KEYS x",
        "",
    ] {
        a.roundtrip(bad, "ERR unknown command");
    }
    a.roundtrip("GET b", "2");

    // A second connection has a store of its own, starting empty.
    let mut b = server.connect();
    b.roundtrip("KEYS", "");
    b.roundtrip("GET name", "NOT_FOUND");
    b.roundtrip("SET name Bob", "OK");
    b.roundtrip("KEYS", "name");
    a.roundtrip("GET name", "Grace Hopper");
    a.roundtrip("KEYS", "b name");
    drop(b);

    // A new connection after the others closed starts empty too.
    let mut c = server.connect();
    c.roundtrip("KEYS", "");
    a.roundtrip("KEYS", "b name");

    // The plugin logs each command at debug, through the host, tagged with the plugin.
    let line = server.wait_for_plugin_log("SET -> OK", "kv-python");
    assert!(
        line.contains("DEBUG"),
        "plugin log line not at debug: {line}"
    );
    server.assert_no_call_failed();
}

/// Under `--isolation message` every message gets a fresh instance: nothing set survives.
#[test]
fn kv_python_keeps_no_state_under_message_isolation() {
    let server = kv_server("message");
    let mut c = server.connect();
    c.roundtrip("SET k v", "OK");
    c.roundtrip("GET k", "NOT_FOUND");
    c.roundtrip("KEYS", "");
    c.roundtrip("DEL k", "0");
}

/// Under `--isolation worker` one instance serves every connection of the worker; the plugin
/// keys its stores by connection id, so connections still do not see each other's keys, and a
/// closed connection's keys are dropped by `on-disconnect`.
#[test]
fn kv_python_separates_connections_on_a_shared_instance() {
    let server = kv_server("worker");
    let mut a = server.connect();
    let mut b = server.connect();
    a.roundtrip("SET k from a", "OK");
    b.roundtrip("GET k", "NOT_FOUND");
    b.roundtrip("SET k from b", "OK");
    a.roundtrip("GET k", "from a");
    b.roundtrip("GET k", "from b");
    // Ids are given in accept order, and `a` connected first.
    let id = server
        .log_lines_containing("connection opened")
        .iter()
        .filter_map(|l| log_field(l, "conn")?.parse::<u64>().ok())
        .min()
        .expect("a `connection opened` line");
    drop(a);
    server.wait_for_close_log(id, Duration::from_secs(5));
    b.roundtrip("KEYS", "k");
}
