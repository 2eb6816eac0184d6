//! `chat`: named clients talking in rooms, one line per message, on contract 0.2. Everything it
//! remembers is host state, so it works under the default `--isolation message` and with any
//! number of `--workers`.
//!
//! The protocol, word for word the same as the Python and JavaScript `chat` examples:
//!
//! | client sends | the client gets | others get |
//! | --- | --- | --- |
//! | (connects) | `welcome guest<ID>` (ID: the connection id; that is its name) | |
//! | `/nick NAME` | `you are NAME` | |
//! | `/join ROOM` | `joined ROOM` | old room: `* NAME left OLD`; ROOM's other members: `* NAME joined ROOM` |
//! | `/who` | the room's member names, sorted in byte order, separated by single spaces | |
//! | any other line | nothing | the room's other members: `NAME: line` |
//! | (disconnects) | | the room's other members: `* NAME left ROOM` |
//!
//! A line or `/who` from a client in no room gets `join a room first`. `/join` of the room one is
//! in leaves and joins it again (with both notices); a room the host refuses (over
//! `--max-rooms-per-connection`, a name over 256 bytes) gets `cannot join ROOM: KIND` (the
//! error's WIT name, such as `too-many-rooms`). `/nick` and `/join` without an argument are
//! ordinary lines. Each message is logged at debug level (`conn ID: "line" -> "reply"`).
//!
//! State, in the plugin's own bucket: `conn:<ID>:name` and `conn:<ID>:room`, cleared when the
//! connection opens (a `--state file:` store may hold them from a process that was killed: ids
//! start at 1 again) and deleted when it closes. Room membership itself is the host's.

use sandport_guest::v2::state::Bucket;
use sandport_guest::v2::{log, messaging, Connection, Handler, Level, Response};

fn name_key(conn: u64) -> String {
    format!("conn:{conn}:name")
}

fn room_key(conn: u64) -> String {
    format!("conn:{conn}:room")
}

/// Connection `conn`'s name: the one it chose, or `guest<ID>`.
fn name_of(bucket: &Bucket, conn: u64) -> Result<String, String> {
    Ok(bucket.get_string(&name_key(conn))?.unwrap_or_else(|| format!("guest{conn}")))
}

/// The argument of `COMMAND ARG` (trimmed, not empty); `None` when `line` is not that command.
fn argument<'a>(line: &'a str, command: &str) -> Option<&'a str> {
    let arg = line.strip_prefix(command)?.strip_prefix(' ')?.trim();
    (!arg.is_empty()).then_some(arg)
}

/// Runs one line from `conn`; the reply, if any.
fn handle(bucket: &Bucket, conn: u64, line: &str) -> Result<Option<String>, String> {
    let name = name_of(bucket, conn)?;
    let room = bucket.get_string(&room_key(conn))?;

    if let Some(new) = argument(line, "/nick") {
        bucket.set(&name_key(conn), new)?;
        return Ok(Some(format!("you are {new}")));
    }

    if let Some(target) = argument(line, "/join") {
        if let Some(old) = room {
            messaging::leave(conn, &old);
            bucket.delete(&room_key(conn))?;
            messaging::publish(conn, &old, format!("* {name} left {old}"), false);
        }
        if let Err(e) = messaging::join(conn, target) {
            return Ok(Some(format!("cannot join {target}: {}", e.kind())));
        }
        bucket.set(&room_key(conn), target)?;
        messaging::publish(conn, target, format!("* {name} joined {target}"), false);
        return Ok(Some(format!("joined {target}")));
    }

    let Some(room) = room else {
        return Ok(Some("join a room first".into()));
    };

    if line == "/who" {
        let mut names = messaging::members(&room)
            .into_iter()
            .map(|member| name_of(bucket, member))
            .collect::<Result<Vec<_>, _>>()?;
        names.sort();
        return Ok(Some(names.join(" ")));
    }

    messaging::publish(conn, &room, format!("{name}: {line}"), false);
    Ok(None)
}

/// At most `max` characters of `text`, for the log.
fn head(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

struct Chat;

impl Handler for Chat {
    fn on_connect(conn: &Connection) -> Result<Response, String> {
        let bucket = Bucket::open_default()?;
        bucket.delete(&name_key(conn.id))?;
        bucket.delete(&room_key(conn.id))?;
        Ok(Response::reply(format!("welcome guest{}", conn.id)))
    }

    fn on_message(conn: u64, message: Vec<u8>) -> Result<Response, String> {
        let text = String::from_utf8_lossy(&message);
        let line = text.strip_suffix('\r').unwrap_or(&text);
        // A store that cannot answer is an `err`: the host logs it (and closes the connection).
        let bucket = Bucket::open_default().map_err(|e| format!("chat: {e}"))?;
        let answer = handle(&bucket, conn, line).map_err(|e| format!("chat: {e}"))?;
        let shown = answer.as_deref().unwrap_or_default();
        log(Level::Debug, &format!("conn {conn}: {:?} -> {:?}", head(line, 16), head(shown, 32)));
        Ok(answer.map_or_else(Response::none, Response::reply))
    }

    fn on_disconnect(conn: u64) {
        // The host has taken the connection out of its rooms already; tell the others.
        let Ok(bucket) = Bucket::open_default() else { return };
        let name = name_of(&bucket, conn).unwrap_or_else(|_| format!("guest{conn}"));
        if let Ok(Some(room)) = bucket.get_string(&room_key(conn)) {
            messaging::publish(conn, &room, format!("* {name} left {room}"), false);
        }
        let _ = bucket.delete(&room_key(conn));
        let _ = bucket.delete(&name_key(conn));
    }
}

sandport_guest::export_handler_v2!(Chat);
