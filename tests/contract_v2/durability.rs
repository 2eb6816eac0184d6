//! The file backend (`--state file:PATH`): what a plugin was told is written survives a clean
//! restart and a `kill -9`, TTLs included; the memory backend (the default) starts empty.

use std::time::Duration;

use super::{ask, statetest};
use crate::support::*;

fn file_server(path: &std::path::Path) -> Server {
    statetest(&["--state", &format!("file:{}", path.display())])
}

/// The milliseconds left of `key`'s TTL (`ttl K` answers `remaining MS`).
fn remaining(client: &mut Client, key: &str) -> u64 {
    let reply = ask(client, &format!("ttl {key}"));
    reply
        .strip_prefix("remaining ")
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("ttl {key}: {reply:?}"))
}

#[test]
fn the_file_backend_keeps_state_across_a_clean_restart() {
    let dir = TempDir::new("state-file");
    let path = dir.join("state.redb");
    {
        let mut server = file_server(&path);
        let mut c = server.connect();
        c.roundtrip("set k kept", "ok");
        c.roundtrip("incr n 7", "7");
        c.roundtrip("setttl t 600000 for a while", "ok");
        c.roundtrip("setttl short 1 gone", "ok");
        c.roundtrip("set deleted x", "ok");
        c.roundtrip("del deleted", "ok");
        server.signal(libc::SIGTERM);
        let status = server.wait_exit(Duration::from_secs(10)).expect("stopped");
        assert!(status.success(), "exit status {status:?}");
    }
    let server = file_server(&path);
    let mut c = server.connect();
    c.roundtrip("get k", "kept");
    c.roundtrip("incr n 1", "8");
    c.roundtrip("get t", "for a while");
    let left = remaining(&mut c, "t");
    assert!((1..=600_000).contains(&left), "{left} ms left");
    c.roundtrip("get short", "-");
    c.roundtrip("exists deleted", "false");
    c.roundtrip("keys", "k n t");
}

#[test]
fn an_acknowledged_write_survives_kill_9() {
    let dir = TempDir::new("state-file");
    let path = dir.join("state.redb");
    {
        let mut server = file_server(&path);
        let mut c = server.connect();
        for i in 0..20 {
            c.roundtrip(&format!("set k{i:02} v{i}"), "ok");
        }
        c.roundtrip("incr n 41", "41");
        c.roundtrip("cas k00 v0 swapped", "true");
        // The replies were sent: every write was on disk before its answer. No warning given.
        server.signal(libc::SIGKILL);
        server.wait_exit(Duration::from_secs(10)).expect("killed");
    }
    let server = file_server(&path);
    let mut c = server.connect();
    c.roundtrip("get k00", "swapped");
    for i in 1..20 {
        c.roundtrip(&format!("get k{i:02}"), &format!("v{i}"));
    }
    c.roundtrip("incr n 1", "42");
}

#[test]
fn the_memory_backend_starts_empty_on_every_start() {
    {
        let server = statetest(&["--state", "memory"]);
        let mut c = server.connect();
        c.roundtrip("set k v", "ok");
    }
    let server = statetest(&[]);
    let mut c = server.connect();
    c.roundtrip("get k", "-");
}

/// A `--state` the host cannot use stops it at start with exit 2 and why, before any client:
/// an unknown backend, a file that is not a state database, a database another server holds.
#[test]
fn a_state_store_that_cannot_be_opened_stops_the_start_with_the_reason() {
    let dir = TempDir::new("bad-state");
    let not_db = dir.write("notes.txt", b"this is not a redb database, just text\n");
    let held = dir.path().join("held.redb");
    let statetest = test_plugin("statetest");
    let refused = |state: &str, want: &str| {
        let (code, stderr) = run_expect_failure([
            "--plugin".as_ref(),
            statetest.as_os_str(),
            "--state".as_ref(),
            state.as_ref(),
        ]);
        assert_eq!(code, 2, "--state {state}: {stderr}");
        assert!(stderr.contains("cannot open the state store"), "{stderr}");
        assert!(stderr.contains(want), "--state {state}: {stderr}");
    };
    refused(
        "postgres://127.0.0.1:5432",
        "expected `memory`, `file:PATH` or `redis://HOST:PORT[/DB]`",
    );
    refused("redis://127.0.0.1:notaport", "not a usable Redis URL");
    refused(
        &format!("file:{}", not_db.display()),
        "cannot be opened as a state database",
    );
    let _holder = file_server(&held);
    refused(
        &format!("file:{}", held.display()),
        "in use by another process",
    );
}
