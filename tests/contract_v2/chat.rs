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
    // A rename is the renamed one's business: the room sees it in the next lines.
    b.roundtrip("/nick bob", "you are bob");

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
fn chat_rejoins_refusals_and_commands_without_arguments() {
    let server = Server::builder()
        .plugin(plugin("chat"))
        .env("RUST_LOG", "info,plugin=debug")
        .start();
    let (mut a, ida) = join_chat(&server);
    let (mut b, idb) = join_chat(&server);
    // Without an argument, `/nick` and `/join` are ordinary lines.
    a.roundtrip("/nick", "join a room first");
    a.roundtrip("/join   ", "join a room first");
    a.roundtrip("/join lobby", "joined lobby");
    b.roundtrip("/join lobby", "joined lobby");
    a.expect_line(&format!("* guest{idb} joined lobby"));
    b.send_line("/nick");
    a.expect_line(&format!("guest{idb}: /nick"));
    // Joining the room one is in leaves it and joins it again.
    b.roundtrip("/join lobby", "joined lobby");
    a.expect_line(&format!("* guest{idb} left lobby"));
    a.expect_line(&format!("* guest{idb} joined lobby"));
    // A room the host refuses is refused in words; the client is then in no room.
    let long = "r".repeat(257);
    b.roundtrip(
        &format!("/join {long}"),
        &format!("cannot join {long}: bad-room-name"),
    );
    a.expect_line(&format!("* guest{idb} left lobby"));
    b.roundtrip("still there?", "join a room first");
    a.roundtrip("/who", &format!("guest{ida}"));
    // Every message is logged at debug level, line and reply.
    server.wait_for_plugin_log(&format!("\"/who\" -> \"guest{ida}\""), "chat");
    a.expect_silence(Duration::from_millis(200));
    server.assert_no_call_failed();
}

#[test]
fn chat_forgets_what_a_killed_process_left_in_a_state_file() {
    let dir = TempDir::new("chat-state");
    let state = format!("file:{}", dir.join("chat.redb").display());
    let start = || {
        Server::builder()
            .plugin(plugin("chat"))
            .args(["--state", &state])
            .start()
    };
    {
        let mut server = start();
        let (mut a, ida) = join_chat(&server);
        assert_eq!(ida, 1);
        a.roundtrip("/nick alice", "you are alice");
        a.roundtrip("/join lobby", "joined lobby");
        // No on-disconnect: the name and room of connection 1 stay in the file.
        server.signal(libc::SIGKILL);
        server.wait_exit(Duration::from_secs(10)).expect("killed");
    }
    let server = start();
    // Connection ids start at 1 again: the new connection 1 is a guest in no room.
    let (mut a, ida) = join_chat(&server);
    assert_eq!(ida, 1);
    a.roundtrip("hello", "join a room first");
    a.roundtrip("/join lobby", "joined lobby");
    a.roundtrip("/who", "guest1");
}
