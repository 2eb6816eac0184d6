//! The operator's quotas (`--state-max-key-bytes`, `--state-max-value-bytes`,
//! `--state-max-namespace-bytes`, `--max-rooms-per-connection`): a write over one is an error the
//! plugin gets back, nothing is changed, and the connection is served on.

use super::{ask, expect_error, statetest};

#[test]
fn a_value_over_the_limit_is_refused_and_nothing_changes() {
    let server = statetest(&["--state-max-value-bytes", "16"]);
    let mut c = server.connect();
    let full = "0123456789abcdef";
    c.roundtrip(&format!("set k {full}"), "ok");
    let why = expect_error(&ask(&mut c, &format!("set k {full}!")), "set 17 bytes");
    assert!(why.contains("quota"), "not a quota error: {why:?}");
    c.roundtrip("get k", full);
    expect_error(
        &ask(&mut c, &format!("setttl k 60000 {full}!")),
        "setttl 17 bytes",
    );
    c.roundtrip("ttl k", "persistent");
    expect_error(
        &ask(&mut c, &format!("cas k {full} {full}!")),
        "cas to 17 bytes",
    );
    c.roundtrip("get k", full);
    expect_error(&ask(&mut c, "update k !"), "update to 17 bytes");
    c.roundtrip("get k", full);
    server.assert_no_call_failed();
}

#[test]
fn a_key_over_the_limit_is_refused() {
    let server = statetest(&["--state-max-key-bytes", "8"]);
    let mut c = server.connect();
    c.roundtrip("set 12345678 v", "ok");
    let why = expect_error(&ask(&mut c, "set 123456789 v"), "set a 9-byte key");
    assert!(why.contains("quota"), "not a quota error: {why:?}");
    expect_error(&ask(&mut c, "incr 123456789 1"), "incr a 9-byte key");
    c.roundtrip("keys", "12345678");
}

#[test]
fn a_namespace_over_its_limit_refuses_writes_until_space_is_freed() {
    let server = statetest(&["--state-max-namespace-bytes", "64"]);
    let mut c = server.connect();
    // Keys and values together: 2 + 14 bytes a key.
    let value = "x".repeat(14);
    let mut stored = 0;
    let why = loop {
        let reply = ask(&mut c, &format!("set k{stored} {value}"));
        if reply != "ok" {
            break expect_error(&reply, "one set too many");
        }
        stored += 1;
        assert!(stored <= 4, "{stored} keys of 16 bytes fit in 64 bytes");
    };
    assert!(why.contains("quota"), "not a quota error: {why:?}");
    assert!(
        stored >= 3,
        "only {stored} keys of 16 bytes fit in 64 bytes"
    );
    c.roundtrip(&format!("exists k{stored}"), "false");
    c.roundtrip("del k0", "ok");
    c.roundtrip(&format!("set k{stored} {value}"), "ok");
    server.assert_no_call_failed();
}

#[test]
fn rooms_per_connection_and_room_names_are_bounded() {
    let server = statetest(&["--max-rooms-per-connection", "2"]);
    let mut c = server.connect();
    c.roundtrip("join r1", "ok");
    c.roundtrip("join r2", "ok");
    c.roundtrip("join r3", "error: too-many-rooms");
    // Joining a room one is in is not a new room.
    c.roundtrip("join r1", "ok");
    c.roundtrip("members r3", "");
    c.roundtrip("leave r2", "true");
    c.roundtrip("join r3", "ok");
    c.roundtrip("join ", "error: bad-room-name");
    c.roundtrip(&format!("join {}", "r".repeat(257)), "error: bad-room-name");
    c.roundtrip("leave r1", "true");
    c.roundtrip(&format!("join {}", "r".repeat(256)), "ok");
    server.assert_no_call_failed();
}
