//! `chat`: a chat server with rooms, on contract 0.2. Everything it remembers is host state, so it
//! works under the default `--isolation message` and with any number of `--workers`.
//!
//! The protocol, one line per message:
//!
//! | client sends | the client gets | the room's other members get |
//! | --- | --- | --- |
//! | (connects) | `welcome guest<ID>` (ID: the connection id) | |
//! | `/nick NAME` | `you are NAME` | `* OLD is now NAME` (if in a room) |
//! | `/join ROOM` | `joined ROOM` | old room: `* NAME left OLD`; ROOM: `* NAME joined ROOM` |
//! | `/leave` | `left ROOM` | `* NAME left ROOM` |
//! | `/who` | the room's member names, sorted by byte order, space-separated | |
//! | any other line | nothing | `NAME: line` |
//! | (disconnects) | | `* NAME left ROOM` |
//!
//! `/who`, `/leave` and chat lines from a client in no room get `join a room first`. A NAME is 1
//! to 32 bytes without spaces; `/nick` and `/join` without one get a usage line. Joining the
//! room one is in just says `joined ROOM` again.
//!
//! State, in the plugin's own bucket: `name:<ID>` (only once renamed: absent means
//! `guest<ID>`) and `room:<ID>` (the room the connection is in); both are deleted when it
//! disconnects. Room membership itself is the host's (`messaging::join`).

use sandport_guest::v2::messaging;
use sandport_guest::v2::state::Bucket;
use sandport_guest::v2::{Connection, Handler, Response};

const NOT_IN_A_ROOM: &str = "join a room first";
const MAX_NAME: usize = 32;

fn name_key(conn: u64) -> String {
    format!("name:{conn}")
}

fn room_key(conn: u64) -> String {
    format!("room:{conn}")
}

/// Connection `conn`'s name: the one it chose, or `guest<ID>`.
fn name_of(bucket: &Bucket, conn: u64) -> Result<String, String> {
    Ok(bucket.get_string(&name_key(conn))?.unwrap_or_else(|| format!("guest{conn}")))
}

/// A name or room argument: 1 to [`MAX_NAME`] bytes, no spaces.
fn valid(arg: &str) -> bool {
    !arg.is_empty() && arg.len() <= MAX_NAME && !arg.contains(char::is_whitespace)
}

/// Takes `conn` out of its room (if any), telling the others; the room it left.
fn leave_room(bucket: &Bucket, conn: u64, name: &str) -> Result<Option<String>, String> {
    let Some(room) = bucket.get_string(&room_key(conn))? else {
        return Ok(None);
    };
    messaging::leave(conn, &room);
    bucket.delete(&room_key(conn))?;
    messaging::publish(conn, &room, format!("* {name} left {room}"), false);
    Ok(Some(room))
}

fn nick(bucket: &Bucket, conn: u64, new: &str) -> Result<Response, String> {
    if !valid(new) {
        return Ok(Response::reply("usage: /nick NAME (1 to 32 bytes, no spaces)"));
    }
    let old = name_of(bucket, conn)?;
    bucket.set(&name_key(conn), new)?;
    if let Some(room) = bucket.get_string(&room_key(conn))? {
        messaging::publish(conn, &room, format!("* {old} is now {new}"), false);
    }
    Ok(Response::reply(format!("you are {new}")))
}

fn join(bucket: &Bucket, conn: u64, room: &str) -> Result<Response, String> {
    if !valid(room) {
        return Ok(Response::reply("usage: /join ROOM (1 to 32 bytes, no spaces)"));
    }
    let name = name_of(bucket, conn)?;
    if bucket.get_string(&room_key(conn))?.as_deref() != Some(room) {
        leave_room(bucket, conn, &name)?;
        if let Err(e) = messaging::join(conn, room) {
            return Ok(Response::reply(format!("error: {e}")));
        }
        bucket.set(&room_key(conn), room)?;
        messaging::publish(conn, room, format!("* {name} joined {room}"), false);
    }
    Ok(Response::reply(format!("joined {room}")))
}

fn who(bucket: &Bucket, room: &str) -> Result<Response, String> {
    let mut names = messaging::members(room)
        .into_iter()
        .map(|member| name_of(bucket, member))
        .collect::<Result<Vec<_>, _>>()?;
    names.sort();
    Ok(Response::reply(names.join(" ")))
}

struct Chat;

impl Handler for Chat {
    fn on_connect(conn: &Connection) -> Result<Response, String> {
        Ok(Response::reply(format!("welcome guest{}", conn.id)))
    }

    fn on_message(conn: u64, message: Vec<u8>) -> Result<Response, String> {
        let line = String::from_utf8_lossy(&message);
        let line = line.trim_end_matches('\r');
        let bucket = Bucket::open_default()?;
        let (command, arg) = line.split_once(' ').unwrap_or((line, ""));
        match command {
            "/nick" => return nick(&bucket, conn, arg.trim()),
            "/join" => return join(&bucket, conn, arg.trim()),
            _ => {}
        }
        let Some(room) = bucket.get_string(&room_key(conn))? else {
            return Ok(Response::reply(NOT_IN_A_ROOM));
        };
        match line {
            "/who" => who(&bucket, &room),
            "/leave" => {
                leave_room(&bucket, conn, &name_of(&bucket, conn)?)?;
                Ok(Response::reply(format!("left {room}")))
            }
            _ => {
                let name = name_of(&bucket, conn)?;
                messaging::publish(conn, &room, format!("{name}: {line}"), false);
                Ok(Response::none())
            }
        }
    }

    fn on_disconnect(conn: u64) {
        // The host has taken the connection out of its rooms already; tell the room, forget it.
        let Ok(bucket) = Bucket::open_default() else { return };
        if let Ok(name) = name_of(&bucket, conn) {
            let _ = leave_room(&bucket, conn, &name);
        }
        let _ = bucket.delete(&name_key(conn));
        let _ = bucket.delete(&room_key(conn));
    }
}

sandport_guest::export_handler_v2!(Chat);
