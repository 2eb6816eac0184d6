//! The `chat` example under the default `--isolation message` with two workers: every line is a
//! fresh instance, names and rooms live in host state and the host's rooms, and clients on
//! different workers talk to each other.

use std::time::Duration;

use super::worker_of;
use crate::support::*;

/// A chat client: connected and welcomed; its connection id.
fn join_chat(server: &Server) -> (Client, u64) {
    let mut client = server.connect();
    let welcome = client.line();
    let id = welcome
        .strip_prefix("welcome guest")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("expected `welcome guest<ID>`, got {welcome:?}"));
    (client, id)
}

#[test]
fn chat_rooms_nicks_and_who_across_workers() {
    let server = Server::builder()
        .plugin(plugin("chat"))
        .args(["--workers", "2"])
        .start();
    let (mut a, ida) = join_chat(&server);
    let (mut b, idb) = join_chat(&server);
    let (mut c, idc) = join_chat(&server);
    assert_ne!(
        worker_of(&server, ida),
        worker_of(&server, idb),
        "a and b landed on one worker"
    );

    // Nothing to say before joining a room.
    a.roundtrip("hello?", "join a room first");
    a.roundtrip("/who", "join a room first");
    a.roundtrip("/nick alice", "you are alice");
    a.roundtrip("/join lobby", "joined lobby");
    b.roundtrip("/join lobby", "joined lobby");
    a.expect_line(&format!("* guest{idb} joined lobby"));
    b.roundtrip("/nick bob", "you are bob");
    a.expect_line(&format!("* guest{idb} is now bob"));

    // A line goes to the others, not back to its sender.
    b.send_line("hi all");
    a.expect_line("bob: hi all");
    c.roundtrip("/join lobby", "joined lobby");
    a.expect_line(&format!("* guest{idc} joined lobby"));
    b.expect_line(&format!("* guest{idc} joined lobby"));
    a.roundtrip("/who", &format!("alice bob guest{idc}"));

    // Moving to another room: the old one is told.
    c.roundtrip("/join other", "joined other");
    a.expect_line(&format!("* guest{idc} left lobby"));
    b.expect_line(&format!("* guest{idc} left lobby"));
    c.roundtrip("/who", &format!("guest{idc}"));
    a.send_line("just us");
    b.expect_line("alice: just us");
    c.expect_silence(Duration::from_millis(200));

    // A client that goes leaves its room, and the room is told.
    drop(b);
    a.expect_line("* bob left lobby");
    a.roundtrip("/who", "alice");
    // ... and its name is forgotten: a new client gets a fresh guest name.
    let (mut d, idd) = join_chat(&server);
    d.roundtrip("/join lobby", "joined lobby");
    a.expect_line(&format!("* guest{idd} joined lobby"));
    d.roundtrip("/who", &format!("alice guest{idd}"));
    server.assert_no_call_failed();
}

#[test]
fn chat_leave_usage_and_rejoining_the_same_room() {
    let server = Server::builder().plugin(plugin("chat")).start();
    let (mut a, _) = join_chat(&server);
    let (mut b, idb) = join_chat(&server);
    a.roundtrip("/leave", "join a room first");
    a.roundtrip("/nick", "usage: /nick NAME (1 to 32 bytes, no spaces)");
    a.roundtrip("/join", "usage: /join ROOM (1 to 32 bytes, no spaces)");
    a.roundtrip("/join lobby", "joined lobby");
    b.roundtrip("/join lobby", "joined lobby");
    a.expect_line(&format!("* guest{idb} joined lobby"));
    // Joining the room one is in again tells no one.
    b.roundtrip("/join lobby", "joined lobby");
    b.roundtrip("/leave", "left lobby");
    a.expect_line(&format!("* guest{idb} left lobby"));
    b.roundtrip("still there?", "join a room first");
    a.expect_silence(Duration::from_millis(200));
}
