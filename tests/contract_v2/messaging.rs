//! Messaging through `statetest`: sends and closes by connection id across workers, addresses
//! on demand, rooms (join, leave, members, publish), and what happens to a connection that has
//! gone.

use super::{statetest, whoami, worker_of};
use crate::support::*;

#[test]
fn connections_reach_each_other_by_id_across_workers() {
    let server = statetest(&["--workers", "2"]);
    let mut a = server.connect();
    let mut b = server.connect();
    let (ida, idb) = (whoami(&mut a), whoami(&mut b));
    assert_ne!(worker_of(&server, ida), worker_of(&server, idb));
    a.roundtrip(&format!("send {idb} hello from a"), "ok");
    b.expect_line("hello from a");
    // In order, per sender.
    for i in 0..20 {
        a.roundtrip(&format!("send {idb} n{i}"), "ok");
    }
    for i in 0..20 {
        b.expect_line(&format!("n{i}"));
    }
    // Sending to oneself works too.
    a.send_line(&format!("send {ida} to me"));
    let mut got = vec![a.line(), a.line()];
    got.sort();
    assert_eq!(got, ["ok", "to me"]);
    b.expect_silence(std::time::Duration::from_millis(100));
}

#[test]
fn the_peer_of_any_open_connection_is_known() {
    let server = statetest(&["--workers", "2"]);
    let mut a = server.connect();
    let mut b = server.connect();
    let (ida, idb) = (whoami(&mut a), whoami(&mut b));
    assert!(ida >= 1 && idb > ida, "ids {ida}, {idb}");
    let (pa, pb) = (a.local_addr().to_string(), b.local_addr().to_string());
    a.roundtrip(&format!("peer {ida}"), &pa);
    a.roundtrip(&format!("peer {idb}"), &pb);
    a.roundtrip("peer 999999", "-");
}

#[test]
fn sends_to_an_unknown_or_closed_connection_fail_with_unknown_connection() {
    let server = statetest(&[]);
    let mut a = server.connect();
    let mut b = server.connect();
    let idb = whoami(&mut b);
    a.roundtrip("send 999999 anyone?", "error: unknown-connection");
    a.roundtrip("close 999999", "error: unknown-connection");
    a.roundtrip("send 0 anyone?", "error: unknown-connection");
    // The client goes: once the server has seen it, sends to it fail.
    drop(b);
    server.wait_for_close_log(idb, LOG_TIMEOUT);
    a.roundtrip(&format!("send {idb} late"), "error: unknown-connection");
    a.roundtrip(&format!("peer {idb}"), "-");
    a.roundtrip(&format!("close {idb}"), "error: unknown-connection");
    server.assert_no_call_failed();
}

#[test]
fn close_by_id_writes_what_was_queued_then_closes() {
    let server = statetest(&["--workers", "2"]);
    let mut a = server.connect();
    let mut b = server.connect();
    let idb = whoami(&mut b);
    a.roundtrip(&format!("send {idb} last words"), "ok");
    a.roundtrip(&format!("close {idb}"), "ok");
    let got = b.read_until_closed(REPLY_TIMEOUT);
    assert_eq!(String::from_utf8_lossy(&got), "last words\n");
    server.wait_for_close_log(idb, LOG_TIMEOUT);
    a.roundtrip(&format!("send {idb} gone"), "error: unknown-connection");
}

#[test]
fn rooms_join_leave_list_and_publish() {
    let server = statetest(&["--workers", "2"]);
    let mut a = server.connect();
    let mut b = server.connect();
    let mut c = server.connect();
    let (ida, idb, idc) = (whoami(&mut a), whoami(&mut b), whoami(&mut c));
    a.roundtrip("members lobby", "");
    a.roundtrip("join lobby", "ok");
    // Joining twice is not an error.
    a.roundtrip("join lobby", "ok");
    c.roundtrip("join lobby", "ok");
    b.roundtrip("join lobby", "ok");
    a.roundtrip("members lobby", &format!("{ida} {idb} {idc}"));
    // publish: everyone but the sender; publishall: the sender too.
    a.roundtrip("publish lobby hi all", "2");
    b.expect_line("hi all");
    c.expect_line("hi all");
    b.send_line("publishall lobby from b");
    let mut got = vec![b.line(), b.line()];
    got.sort();
    assert_eq!(got, ["3", "from b"]);
    a.expect_line("from b");
    c.expect_line("from b");
    // A non-member may publish to a room.
    c.roundtrip("leave lobby", "true");
    c.roundtrip("leave lobby", "false");
    a.roundtrip("members lobby", &format!("{ida} {idb}"));
    c.roundtrip("publish lobby from outside", "2");
    a.expect_line("from outside");
    b.expect_line("from outside");
    c.roundtrip("publish nowhere anyone?", "0");
    c.expect_silence(std::time::Duration::from_millis(100));
}

#[test]
fn a_closed_connection_leaves_its_rooms() {
    let server = statetest(&["--workers", "2"]);
    let mut a = server.connect();
    let mut b = server.connect();
    let (ida, idb) = (whoami(&mut a), whoami(&mut b));
    a.roundtrip("join r", "ok");
    b.roundtrip("join r", "ok");
    b.roundtrip("join s", "ok");
    drop(b);
    server.wait_for_close_log(idb, LOG_TIMEOUT);
    a.roundtrip("members r", &ida.to_string());
    a.roundtrip("members s", "");
    a.roundtrip("publish r anyone?", "0");
}
