//! Host state through `statetest`: every `wasi:keyvalue` store, atomics and expiry operation, its
//! errors (which are answers, never traps), TTLs running out, and state seen from every
//! connection and worker under `--isolation message`.

use std::time::{Duration, Instant};

use super::{ask, expect_error, statetest, whoami, worker_of};
use crate::support::*;

#[test]
fn every_store_operation_does_what_the_contract_says() {
    let server = statetest(&[]);
    let mut c = server.connect();
    c.roundtrip("get k", "-");
    c.roundtrip("exists k", "false");
    c.roundtrip("set k hello world", "ok");
    c.roundtrip("get k", "hello world");
    c.roundtrip("exists k", "true");
    c.roundtrip("set k again", "ok");
    c.roundtrip("get k", "again");
    c.roundtrip("del k", "ok");
    c.roundtrip("get k", "-");
    c.roundtrip("exists k", "false");
    // Deleting an absent key is not an error.
    c.roundtrip("del k", "ok");
    // An empty value is a value.
    c.roundtrip("set empty ", "ok");
    c.roundtrip("exists empty", "true");
    c.roundtrip("get empty", "");
    server.assert_no_call_failed();
}

#[test]
fn increment_counts_from_zero_and_refuses_what_is_not_an_integer() {
    let server = statetest(&[]);
    let mut c = server.connect();
    c.roundtrip("incr n 1", "1");
    c.roundtrip("incr n 41", "42");
    c.roundtrip("incr n -50", "-8");
    c.roundtrip("get n", "-8");
    c.roundtrip("set word hello", "ok");
    expect_error(&ask(&mut c, "incr word 1"), "incr word 1");
    c.roundtrip("get word", "hello");
    c.roundtrip(&format!("set big {}", i64::MAX), "ok");
    expect_error(&ask(&mut c, "incr big 1"), "incr big 1");
    c.roundtrip("get big", &i64::MAX.to_string());
    // The connection is still served: errors are answers, not failed calls.
    c.roundtrip("incr n 8", "0");
    server.assert_no_call_failed();
}

#[test]
fn compare_and_swap_writes_only_over_the_expected_value() {
    let server = statetest(&[]);
    let mut c = server.connect();
    // `-`: the key must be absent.
    c.roundtrip("cas k - first", "true");
    c.roundtrip("cas k - again", "false");
    c.roundtrip("get k", "first");
    c.roundtrip("cas k wrong second", "false");
    c.roundtrip("get k", "first");
    c.roundtrip("cas k first second", "true");
    c.roundtrip("get k", "second");
    // The read-modify-write helper built on it.
    c.roundtrip("update log a", "a");
    c.roundtrip("update log b", "ab");
    c.roundtrip("get log", "ab");
    // A swap clears a TTL the key had.
    c.roundtrip("setttl t 60000 old", "ok");
    c.roundtrip("cas t old new", "true");
    c.roundtrip("ttl t", "persistent");
}

#[test]
fn concurrent_updates_from_two_workers_lose_nothing() {
    let server = statetest(&["--workers", "2"]);
    let mut a = server.connect();
    let mut b = server.connect();
    let (ida, idb) = (whoami(&mut a), whoami(&mut b));
    assert_ne!(worker_of(&server, ida), worker_of(&server, idb));
    // Pipelined on both connections at once: increments and compare-and-swap updates race.
    let n = 50;
    let burst = |tag: &str| {
        (0..n)
            .map(|_| format!("incr n 1\nupdate s {tag}\n"))
            .collect::<String>()
    };
    a.send(burst("a").as_bytes());
    b.send(burst("b").as_bytes());
    for client in [&mut a, &mut b] {
        for _ in 0..2 * n {
            client.line();
        }
    }
    a.roundtrip("get n", &(2 * n).to_string());
    let s = ask(&mut a, "get s");
    assert_eq!(s.len(), 2 * n, "every append kept: {s:?}");
    assert_eq!(s.matches('a').count(), n);
}

#[test]
fn expiry_sets_reads_and_clears_time_to_live() {
    let server = statetest(&[]);
    let mut c = server.connect();
    c.roundtrip("ttl k", "absent");
    c.roundtrip("expire k 1000", "false");
    c.roundtrip("set k v", "ok");
    c.roundtrip("ttl k", "persistent");
    c.roundtrip("expire k 60000", "true");
    let ttl = ask(&mut c, "ttl k");
    let left: u64 = ttl
        .strip_prefix("remaining ")
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("ttl after expire: {ttl:?}"));
    assert!((50_000..=60_000).contains(&left), "{left} ms left of 60000");
    // Increments keep the TTL; set clears it; `expire K -` makes it persistent.
    c.roundtrip("setttl n 60000 1", "ok");
    c.roundtrip("incr n 1", "2");
    assert!(ask(&mut c, "ttl n").starts_with("remaining "));
    c.roundtrip("set n 5", "ok");
    c.roundtrip("ttl n", "persistent");
    c.roundtrip("expire k -", "true");
    c.roundtrip("ttl k", "persistent");
    // A TTL under 1 ms is refused.
    expect_error(&ask(&mut c, "setttl z 0 v"), "setttl z 0 v");
    expect_error(&ask(&mut c, "expire k 0"), "expire k 0");
    c.roundtrip("exists z", "false");
    c.roundtrip("ttl k", "persistent");
}

#[test]
fn an_expired_key_reads_as_absent_everywhere() {
    let server = statetest(&[]);
    let mut c = server.connect();
    let set = Instant::now();
    c.roundtrip("setttl short 300 soon gone", "ok");
    c.roundtrip("set long stays", "ok");
    // It may already be gone on a slow machine; if it is still there it has its value.
    let early = ask(&mut c, "get short");
    assert!(
        early == "soon gone" || set.elapsed() >= Duration::from_millis(300),
        "{early:?}"
    );
    let gone = eventually(Duration::from_secs(5), || {
        (ask(&mut c, "get short") == "-").then(|| set.elapsed())
    })
    .expect("the key expired within 5 s");
    assert!(gone >= Duration::from_millis(300), "expired after {gone:?}");
    c.roundtrip("exists short", "false");
    c.roundtrip("ttl short", "absent");
    c.roundtrip("keys", "long");
}

#[test]
fn keys_lists_every_key_in_byte_order_across_pages() {
    let server = statetest(&[]);
    let mut c = server.connect();
    c.roundtrip("keys", "");
    // More than one page of `list-keys` (1,000 keys a page), pipelined.
    let n = 1200;
    let sets: String = (0..n).map(|i| format!("set k{i:04} {i}\n")).collect();
    c.send(sets.as_bytes());
    for _ in 0..n {
        assert_eq!(c.line(), "ok");
    }
    let keys = ask(&mut c, "keys");
    let keys: Vec<&str> = keys.split(' ').collect();
    let want: Vec<String> = (0..n).map(|i| format!("k{i:04}")).collect();
    assert_eq!(keys, want);
}

#[test]
fn state_is_shared_by_every_connection_and_worker_under_message_isolation() {
    let server = statetest(&["--workers", "2"]);
    let mut a = server.connect();
    let mut b = server.connect();
    let (ida, idb) = (whoami(&mut a), whoami(&mut b));
    assert_ne!(
        worker_of(&server, ida),
        worker_of(&server, idb),
        "the two clients landed on one worker"
    );
    a.roundtrip("set shared from a", "ok");
    b.roundtrip("get shared", "from a");
    b.roundtrip("incr hits 1", "1");
    a.roundtrip("incr hits 1", "2");
    drop(a);
    let mut c = server.connect();
    c.roundtrip("get shared", "from a");
}

#[test]
fn opening_a_bucket_that_is_not_there_is_an_error_not_a_trap() {
    let server = statetest(&[]);
    let mut c = server.connect();
    c.roundtrip("open default", "ok");
    c.roundtrip("open ", "ok");
    c.roundtrip("open nosuch", "error: no-such-store");
    c.roundtrip("in nosuch get k", "error: no-such-store");
    c.roundtrip("in default set k v", "ok");
    c.roundtrip("get k", "v");
    server.assert_no_call_failed();
}
