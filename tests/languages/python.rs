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

/// Sends `command` and expects the reply line `expected`.
fn ask(c: &mut Client, command: &str, expected: &str) {
    c.send_line(command);
    match c.recv_line(REPLY_TIMEOUT) {
        Ok(line) => assert_eq!(line, expected, "reply to {command:?}"),
        Err(e) => panic!("expected {expected:?} in reply to {command:?}, got {e:?}"),
    }
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
    ask(&mut a, "KEYS", "");
    ask(&mut a, "GET missing", "NOT_FOUND");
    ask(&mut a, "SET name Ada Lovelace", "OK");
    ask(&mut a, "GET name", "Ada Lovelace");
    // Everything after the key is the value, inner and trailing spaces included.
    ask(&mut a, "SET spaced  two  spaces ", "OK");
    ask(&mut a, "GET spaced", " two  spaces ");
    ask(&mut a, "SET name Grace Hopper", "OK");
    ask(&mut a, "GET name", "Grace Hopper");
    ask(&mut a, "SET b 2", "OK");
    ask(&mut a, "KEYS", "b name spaced");
    ask(&mut a, "DEL spaced", "1");
    ask(&mut a, "DEL spaced", "0");
    ask(&mut a, "GET spaced", "NOT_FOUND");
    ask(&mut a, "KEYS", "b name");
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
        ask(&mut a, bad, "ERR unknown command");
    }
    ask(&mut a, "GET b", "2");

    // A second connection has a store of its own, starting empty.
    let mut b = server.connect();
    ask(&mut b, "KEYS", "");
    ask(&mut b, "GET name", "NOT_FOUND");
    ask(&mut b, "SET name Bob", "OK");
    ask(&mut b, "KEYS", "name");
    ask(&mut a, "GET name", "Grace Hopper");
    ask(&mut a, "KEYS", "b name");
    drop(b);

    // A new connection after the others closed starts empty too.
    let mut c = server.connect();
    ask(&mut c, "KEYS", "");
    ask(&mut a, "KEYS", "b name");

    // The plugin logs each command at debug, through the host, tagged with the plugin.
    let line = server.wait_for_log("SET -> OK", LOG_TIMEOUT);
    assert!(
        line.contains("DEBUG"),
        "plugin log line not at debug: {line}"
    );
    assert!(
        line.contains("kv-python"),
        "log line not tagged with the plugin: {line}"
    );
    assert!(
        server.log_lines_containing("plugin call failed").is_empty(),
        "a plugin call failed:\n{}",
        server.logs.dump()
    );
}

/// Under `--isolation message` every message gets a fresh instance: nothing set survives.
#[test]
fn kv_python_keeps_no_state_under_message_isolation() {
    let server = kv_server("message");
    let mut c = server.connect();
    ask(&mut c, "SET k v", "OK");
    ask(&mut c, "GET k", "NOT_FOUND");
    ask(&mut c, "KEYS", "");
    ask(&mut c, "DEL k", "0");
}

/// Under `--isolation worker` one instance serves every connection of the worker; the plugin
/// keys its stores by connection id, so connections still do not see each other's keys, and a
/// closed connection's keys are dropped by `on-disconnect`.
#[test]
fn kv_python_separates_connections_on_a_shared_instance() {
    let server = kv_server("worker");
    let mut a = server.connect();
    let mut b = server.connect();
    ask(&mut a, "SET k from a", "OK");
    ask(&mut b, "GET k", "NOT_FOUND");
    ask(&mut b, "SET k from b", "OK");
    ask(&mut a, "GET k", "from a");
    ask(&mut b, "GET k", "from b");
    // Ids are given in accept order, and `a` connected first.
    let id = server
        .log_lines_containing("connection opened")
        .iter()
        .filter_map(|l| log_field(l, "conn")?.parse::<u64>().ok())
        .min()
        .expect("a `connection opened` line");
    drop(a);
    server.wait_for_close_log(id, Duration::from_secs(5));
    ask(&mut b, "KEYS", "k");
}
