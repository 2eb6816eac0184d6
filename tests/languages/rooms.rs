//! The `chat` protocol of contract 0.2 (names and rooms in the host's state and messaging), the
//! same for a plugin in every language that has one: [`chat_rooms`], run for a language by
//! `common_tests!` in its module (and for Rust's `plugins/chat.wasm` by [`chat_rooms_at`]).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use crate::support::*;

/// How long a client that should get nothing more is watched at the end.
const QUIET: Duration = Duration::from_millis(300);

/// A chat client: its connection id, parsed from its `welcome guest<ID>`.
struct Member {
    client: Client,
    id: u64,
}

impl Member {
    fn join(server: &Server) -> Member {
        let mut client = server.connect();
        let welcome = client.line();
        let id = welcome
            .strip_prefix("welcome guest")
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("expected `welcome guest<ID>`, got {welcome:?}"));
        Member { client, id }
    }

    fn guest(&self) -> String {
        format!("guest{}", self.id)
    }
}

/// `chat-<lang>` under `--workers 2` (four clients, two on each worker): the welcome and its
/// name, `/nick`, `join a room first` outside a room, `/join` with its notices to the old and the
/// new room, lines to the room's other members only, `/who` sorted, a move between rooms, a room
/// name the host refuses, and `* NAME left ROOM` when a member disconnects. No plugin call fails.
pub fn chat_rooms(lang: &str) {
    chat_rooms_at(lang, &test_plugin(&format!("chat-{lang}")));
}

/// [`chat_rooms`] for the plugin at `path`, a file named `chat-<lang>.wasm`.
pub fn chat_rooms_at(lang: &str, path: &Path) {
    let name = format!("chat-{lang}");
    let server = Server::builder()
        .plugin(path)
        .args(["--workers", "2"])
        .env("RUST_LOG", "info,plugin=debug")
        .start();
    let mut a = Member::join(&server);
    let mut b = Member::join(&server);
    let mut c = Member::join(&server);
    let mut d = Member::join(&server);
    let ids = BTreeSet::from([a.id, b.id, c.id, d.id]);
    assert_eq!(ids.len(), 4, "connection ids are unique");
    // The acceptor hands each connection to the least loaded worker: both workers serve some.
    let workers = super::workers_serving(&server, 4);
    assert_eq!(workers.len(), 2, "clients on both workers: {workers:?}");

    // Outside a room, lines and /who are refused; commands work.
    a.client.roundtrip("hello?", "join a room first");
    a.client.roundtrip("/who", "join a room first");
    a.client.roundtrip("/nick zed", "you are zed");
    b.client.roundtrip("/nick bob", "you are bob");

    // Joining: the joiner is told, the room's members are told, nobody else.
    a.client.roundtrip("/join lobby", "joined lobby");
    b.client.roundtrip("/join lobby", "joined lobby");
    a.client.expect_line("* bob joined lobby");
    c.client.roundtrip("/join lobby", "joined lobby");
    let c_name = c.guest();
    a.client.expect_line(&format!("* {c_name} joined lobby"));
    b.client.expect_line(&format!("* {c_name} joined lobby"));
    d.client.roundtrip("/join garden", "joined garden");
    a.client.roundtrip("/who", &format!("bob {c_name} zed"));
    d.client.roundtrip("/who", &d.guest());

    // A line goes to the room's other members as `NAME: line`; the sender gets no reply (its
    // next reply is the /who), and the other room nothing.
    a.client.send_line("hi all, from zed");
    b.client.expect_line("zed: hi all, from zed");
    c.client.expect_line("zed: hi all, from zed");
    a.client.roundtrip("/who", &format!("bob {c_name} zed"));
    d.client.send_line("anyone?");
    d.client.roundtrip("/who", &d.guest());

    // A rename shows in the next lines and in /who.
    b.client.roundtrip("/nick alice", "you are alice");
    b.client.send_line("it is alice now");
    a.client.expect_line("alice: it is alice now");
    c.client.expect_line("alice: it is alice now");
    c.client.roundtrip("/who", &format!("alice {c_name} zed"));

    // Moving: the old room hears `left`, the new one `joined`.
    c.client.roundtrip("/join garden", "joined garden");
    a.client.expect_line(&format!("* {c_name} left lobby"));
    b.client.expect_line(&format!("* {c_name} left lobby"));
    d.client.expect_line(&format!("* {c_name} joined garden"));
    let garden = {
        let mut names = [c_name.clone(), d.guest()];
        names.sort();
        names.join(" ")
    };
    c.client.roundtrip("/who", &garden);
    a.client.roundtrip("/who", "alice zed");
    d.client.send_line("welcome to the garden");
    c.client
        .expect_line(&format!("{}: welcome to the garden", d.guest()));

    // A member that disconnects leaves its room; the others are told.
    let b_id = b.id;
    drop(b);
    a.client.expect_line("* alice left lobby");
    server.wait_for_close_log(b_id, LOG_TIMEOUT);
    a.client.roundtrip("/who", "zed");
    let d_name = d.guest();
    drop(d);
    c.client.expect_line(&format!("* {d_name} left garden"));
    c.client.roundtrip("/who", &c_name);

    // A newcomer is a guest again, outside every room. A room name the host refuses (over 256
    // bytes) is answered with the error's kind, and leaves it outside.
    let mut e = Member::join(&server);
    assert!(!ids.contains(&e.id), "a new connection gets a new id");
    e.client.roundtrip("hello", "join a room first");
    let long = "r".repeat(257);
    e.client.roundtrip(
        &format!("/join {long}"),
        &format!("cannot join {long}: bad-room-name"),
    );
    e.client.roundtrip("/who", "join a room first");
    e.client.roundtrip("/join lobby", "joined lobby");
    a.client
        .expect_line(&format!("* {} joined lobby", e.guest()));
    e.client.roundtrip("/who", &format!("{} zed", e.guest()));

    for member in [&mut a, &mut c, &mut e] {
        member.client.expect_silence(QUIET);
    }
    server.wait_for_plugin_log("-> ", &name);
    server.assert_no_call_failed();
}
