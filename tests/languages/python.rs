//! Plugins written in Python, built from source by guest-plugins/python/build.sh: `upper`
//! (contract 0.1.0), and `kv` and `chat` (contract 0.2.0, on the host's state and messaging).
//!
//! These components bundle a CPython interpreter (about 18 MB each); the host compiles them at
//! start unless its compile cache already holds them, so each test starts as few servers as it
//! can.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::*;

super::common_tests! { "python":
    upper;
    chat_rooms;
}

/// A `kv-python` server with `args` (after `--plugin`), logging the plugin's debug lines.
fn kv_server(args: &[&str]) -> Server {
    Server::builder()
        .plugin(test_plugin("kv-python"))
        .args(args)
        .env("RUST_LOG", "info,plugin=debug")
        .start()
}

/// Every command and reply of the protocol, with the default `--isolation message` (a fresh
/// instance per message) and two workers: the store is the host's, so what one client writes
/// every other client reads at once, whichever worker serves it; values keep their spaces; a
/// value `INCR` cannot parse and unknown commands are normal replies.
#[test]
fn kv_python_commands_on_state_shared_by_every_client() {
    let server = kv_server(&["--workers", "2"]);
    let mut a = server.connect();
    let mut b = server.connect();
    a.roundtrip("KEYS", "");
    b.roundtrip("GET missing", "(nil)");
    assert_eq!(
        super::workers_serving(&server, 2).len(),
        2,
        "a and b on different workers"
    );

    a.roundtrip("SET name Ada Lovelace", "OK");
    b.roundtrip("GET name", "Ada Lovelace");
    // Everything after the key is the value, inner and trailing spaces included.
    b.roundtrip("SET spaced  two  spaces ", "OK");
    a.roundtrip("GET spaced", " two  spaces ");
    b.roundtrip("SET name Grace Hopper", "OK");
    a.roundtrip("GET name", "Grace Hopper");
    a.roundtrip("KEYS", "name spaced");
    b.roundtrip("DEL spaced", "1");
    a.roundtrip("DEL spaced", "0");
    a.roundtrip("GET spaced", "(nil)");

    // INCR counts for everyone; a value that is not an integer is an error reply, and stays.
    a.roundtrip("INCR hits", "1");
    b.roundtrip("INCR hits", "2");
    a.roundtrip("INCR hits", "3");
    b.roundtrip("GET hits", "3");
    b.send_line("INCR name");
    let reply = b.line();
    assert!(
        reply.starts_with("ERR ") && reply.contains("integer"),
        "INCR of a string: {reply:?}"
    );
    a.roundtrip("GET name", "Grace Hopper");

    // SETNX (a compare-and-swap): only the first of two clients gets the key.
    a.roundtrip("SETNX lock a", "1");
    b.roundtrip("SETNX lock b", "0");
    b.roundtrip("GET lock", "a");
    a.roundtrip("DEL lock", "1");
    b.roundtrip("SETNX lock b", "1");
    a.roundtrip("GET lock", "b");

    // Expiry: PTTL in milliseconds, -1 for a key that never expires, -2 for an absent one.
    a.roundtrip("PTTL name", "-1");
    a.roundtrip("PTTL missing", "-2");
    a.roundtrip("PEXPIRE missing 1000", "0");
    a.roundtrip("PEXPIRE name 600000", "1");
    b.send_line("PTTL name");
    let left: u64 = b.line().parse().expect("PTTL answers a number");
    assert!(
        (1..=600_000).contains(&left),
        "PTTL after PEXPIRE 600000: {left}"
    );
    a.roundtrip("SET name Grace Hopper", "OK");
    b.roundtrip("PTTL name", "-1");
    b.roundtrip("SET fleeting here", "OK");
    b.roundtrip("PEXPIRE fleeting 1", "1");
    wait_until("`fleeting` expires", REPLY_TIMEOUT, || {
        a.send_line("GET fleeting");
        a.line() == "(nil)"
    });
    a.roundtrip("KEYS", "hits lock name");

    // Unknown commands and malformed ones get a normal reply; the connection stays open.
    for bad in [
        "FLUSH",
        "get name",
        "SET onlykey",
        "GET",
        "GET a b",
        "DEL",
        "INCR",
        "INCR a b",
        "PEXPIRE name",
        "PEXPIRE name soon",
        "KEYS x",
        "",
    ] {
        a.roundtrip(bad, "ERR unknown command");
    }

    // A client that comes after the others have gone sees the same store.
    drop(a);
    drop(b);
    let mut c = server.connect();
    c.roundtrip("GET hits", "3");
    c.roundtrip("KEYS", "hits lock name");

    // The plugin logs each command at debug, through the host, tagged with the plugin.
    let line = server.wait_for_plugin_log("SET -> OK", "kv-python");
    assert!(
        line.contains("DEBUG"),
        "plugin log line not at debug: {line}"
    );
    server.assert_no_call_failed();
}

/// INCR is atomic in the host: four clients, two on each worker, each sending 100 INCRs of one
/// key in one go, see their own replies strictly increase, and the key ends at exactly 400.
#[test]
fn kv_python_incr_is_atomic_across_workers() {
    let server = kv_server(&["--workers", "2"]);
    let mut clients: Vec<Client> = (0..4).map(|_| server.connect()).collect();
    for c in &mut clients {
        c.roundtrip("GET counter", "(nil)");
    }
    assert_eq!(
        super::workers_serving(&server, 4).len(),
        2,
        "clients on both workers"
    );
    let per_client = 100;
    let batch = "INCR counter\n".repeat(per_client);
    for c in &mut clients {
        c.send(batch.as_bytes());
    }
    let mut seen = BTreeSet::new();
    for c in &mut clients {
        let mut last = 0;
        for _ in 0..per_client {
            let n: u64 = c.line().parse().expect("INCR answers a number");
            assert!(n > last, "replies to one client increase: {n} after {last}");
            last = n;
            assert!(seen.insert(n), "{n} was handed out twice");
        }
    }
    let total = (4 * per_client) as u64;
    assert_eq!(seen, (1..=total).collect::<BTreeSet<u64>>());
    clients[0].roundtrip("GET counter", &total.to_string());
    server.assert_no_call_failed();
}

/// With `--state file:PATH` the store survives a restart: a clean one (SIGTERM), and a
/// `kill -9` right after the replies, under each isolation mode in turn. Without `--state` (the
/// memory store) a restart starts empty; there a write over `--state-max-value-bytes` is a
/// normal reply with the host's reason, and nothing is written.
#[test]
fn kv_python_state_survives_restarts_with_a_state_file() {
    let dir = TempDir::new("kv-python-state");
    let state = format!("file:{}", dir.join("kv.redb").display());
    let start = |isolation: &str| kv_server(&["--state", &state, "--isolation", isolation]);

    let mut server = start("message");
    let mut c = server.connect();
    c.roundtrip("SET greeting hello world", "OK");
    for n in 1..=3 {
        c.roundtrip("INCR n", &n.to_string());
    }
    c.roundtrip("SET gone soon", "OK");
    c.roundtrip("DEL gone", "1");
    drop(c);
    server.signal(libc::SIGTERM);
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("the server exits after SIGTERM");
    assert!(status.success(), "exit after SIGTERM: {status:?}");

    let mut server = start("connection");
    let mut c = server.connect();
    c.roundtrip("GET greeting", "hello world");
    c.roundtrip("GET gone", "(nil)");
    c.roundtrip("INCR n", "4");
    c.roundtrip("SET after the restart", "OK");
    // No shutdown at all: what was answered is on disk.
    server.signal(libc::SIGKILL);
    server
        .wait_exit(Duration::from_secs(10))
        .expect("the server dies of SIGKILL");

    let server = start("worker");
    let mut c = server.connect();
    c.roundtrip("GET after", "the restart");
    c.roundtrip("INCR n", "5");
    c.roundtrip("KEYS", "after greeting n");
    server.assert_no_call_failed();
    drop(server);

    let server = kv_server(&["--state-max-value-bytes", "16"]);
    let mut c = server.connect();
    c.roundtrip("KEYS", "");
    c.roundtrip("GET greeting", "(nil)");
    c.roundtrip("SET small sixteen bytes!!!", "OK");
    c.send_line("SET big seventeen bytes!!");
    let reply = c.line();
    assert!(
        reply.starts_with("ERR ") && reply.contains("over the limit of 16"),
        "a value over the quota: {reply:?}"
    );
    c.roundtrip("GET big", "(nil)");
    c.roundtrip("KEYS", "small");
    server.assert_no_call_failed();
}
