//! `statetest`: every state and messaging operation of contract 0.2 as a line protocol, for the
//! integration tests. Each line is one command; the reply is one line. Errors are replied as
//! `error: <kind>` (`no-such-store`, `access-denied`, `unknown-connection`, `too-many-rooms`,
//! `bad-room-name`) or `error: <the host's text>` (`other`); nothing here traps.
//!
//! With the setting `tag` (`--config PLUGIN.tag=T`), only lines starting with `T ` are commands
//! (the rest of the line); any other line is replied unchanged. In a chain of two copies
//! (`a.wasm`, `b.wasm`, tagged `a` and `b`) each line thus reaches the one it names, and its
//! answer passes through the other.
//!
//! State, in the plugin's own bucket unless the line starts with `in NAME ` (then in bucket
//! NAME); `-` stands for an absent value or no TTL:
//!
//! | command | reply |
//! | --- | --- |
//! | `open NAME` | `ok` if the bucket opens |
//! | `get K` | the value, or `-` |
//! | `set K V` (V: the rest of the line) | `ok` |
//! | `setttl K MS V` | `ok` |
//! | `del K` | `ok` |
//! | `exists K` | `true` or `false` |
//! | `incr K N` | the new value |
//! | `cas K OLD NEW` | `true` if the value was OLD and is now NEW, else `false` |
//! | `update K SUFFIX` | appends SUFFIX (read-modify-write, retried); the new value |
//! | `expire K MS` / `expire K -` | `true` or `false` (whether K exists) |
//! | `ttl K` | `absent`, `persistent` or `remaining MS` |
//! | `keys` | every key, space-separated |
//! | `keep` | `ok`: opens the plugin's bucket and keeps it (its resource handle) past the call |
//! | `kept` | `true` or `false`: whether this instance keeps a bucket |
//!
//! Messaging (this connection is `whoami`):
//!
//! | command | reply |
//! | --- | --- |
//! | `whoami` | this connection's id |
//! | `peer ID` | connection ID's client address, or `-` |
//! | `send ID MSG` / `close ID` | `ok` |
//! | `join ROOM` | `ok` |
//! | `leave ROOM` | `true` or `false` |
//! | `members ROOM` | the member ids, space-separated |
//! | `publish ROOM MSG` / `publishall ROOM MSG` | how many got it (`publishall`: the sender too) |
//! | `flood ROOM N SIZE` | publishes N messages of SIZE bytes to the room's others; the total |

use std::cell::RefCell;
use std::time::Duration;

use sandport_guest::v2::messaging;
use sandport_guest::v2::state::{Bucket, Ttl};
use sandport_guest::v2::{config_get, Handler, Response};

thread_local! {
    /// The bucket `keep` keeps: a handle the guest still holds when its call returns.
    static KEPT: RefCell<Option<Bucket>> = const { RefCell::new(None) };
}

/// A reply line, or the error line to reply instead.
type Answer = Result<String, String>;

fn state_error(e: sandport_guest::v2::state::Error) -> String {
    match e {
        sandport_guest::v2::state::Error::Other(text) => format!("error: {text}"),
        kind => format!("error: {}", kind.kind()),
    }
}

fn messaging_error(e: messaging::Error) -> String {
    format!("error: {}", e.kind())
}

fn usage(what: &str) -> String {
    format!("error: usage: {what}")
}

fn flag(b: bool) -> String {
    b.to_string()
}

/// The next space-separated word of `rest`, and what follows it.
fn word(rest: &str) -> (&str, &str) {
    rest.split_once(' ').unwrap_or((rest, ""))
}

fn number<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, String> {
    text.parse().map_err(|_| usage(what))
}

/// A state command on `bucket`.
fn state(bucket: &Bucket, command: &str, rest: &str) -> Answer {
    let (key, args) = word(rest);
    let key = key.to_string();
    let answer = match command {
        "get" => {
            bucket.get(&key).map(|v| v.map_or("-".into(), |v| String::from_utf8_lossy(&v).into()))
        }
        "set" => bucket.set(&key, args).map(|()| "ok".into()),
        "setttl" => {
            let (ms, value) = word(args);
            let ms = number(ms, "setttl K MS V")?;
            bucket.set_with_ttl(&key, value, Duration::from_millis(ms)).map(|()| "ok".into())
        }
        "del" => bucket.delete(&key).map(|()| "ok".into()),
        "exists" => bucket.exists(&key).map(flag),
        "incr" => bucket.increment(&key, number(args, "incr K N")?).map(|n| n.to_string()),
        "cas" => {
            let (old, new) = word(args);
            let old = (old != "-").then_some(old.as_bytes());
            bucket.compare_and_swap(&key, old, new).map(flag)
        }
        "update" => bucket
            .update(&key, |old| Some([old.unwrap_or_default(), args.as_bytes()].concat()))
            .map(|v| String::from_utf8_lossy(&v.unwrap_or_default()).into()),
        "expire" => {
            let ttl = match args {
                "-" => None,
                ms => Some(Duration::from_millis(number(ms, "expire K MS|-")?)),
            };
            bucket.expire(&key, ttl).map(flag)
        }
        "ttl" => bucket.ttl(&key).map(|ttl| match ttl {
            Ttl::Absent => "absent".into(),
            Ttl::Persistent => "persistent".into(),
            Ttl::Remaining(left) => format!("remaining {}", left.as_millis()),
        }),
        "keys" => bucket.keys().map(|keys| keys.join(" ")),
        _ => return Err(format!("error: unknown command {command:?}")),
    };
    answer.map_err(state_error)
}

/// A messaging command from connection `me`; `None` if `command` is not one.
fn messaging(me: u64, command: &str, rest: &str) -> Option<Answer> {
    let (first, tail) = word(rest);
    let id = || number::<u64>(first, "COMMAND ID ...");
    let ok =
        |r: Result<(), messaging::Error>| r.map(|()| "ok".to_string()).map_err(messaging_error);
    Some(match command {
        "whoami" => Ok(me.to_string()),
        "peer" => id().map(|id| messaging::connection(id).map_or("-".into(), |c| c.peer)),
        "send" => id().and_then(|id| ok(messaging::send(id, tail))),
        "close" => id().and_then(|id| ok(messaging::close(id))),
        "join" => ok(messaging::join(me, rest)),
        "leave" => Ok(flag(messaging::leave(me, rest))),
        "members" => {
            let ids: Vec<String> = messaging::members(rest).iter().map(u64::to_string).collect();
            Ok(ids.join(" "))
        }
        "publish" => Ok(messaging::publish(me, first, tail, false).to_string()),
        "publishall" => Ok(messaging::publish(me, first, tail, true).to_string()),
        "flood" => flood(me, first, tail),
        _ => return None,
    })
}

/// `flood ROOM N SIZE`: N messages of SIZE bytes (`x`s) to the room's other members.
fn flood(me: u64, room: &str, args: &str) -> Answer {
    let (n, size) = word(args);
    let n: u32 = number(n, "flood ROOM N SIZE")?;
    let message = vec![b'x'; number(size, "flood ROOM N SIZE")?];
    let total: u64 = (0..n).map(|_| u64::from(messaging::publish(me, room, &message, false))).sum();
    Ok(total.to_string())
}

fn run(me: u64, line: &str) -> Answer {
    let (command, rest) = word(line);
    if let Some(answer) = messaging(me, command, rest) {
        return answer;
    }
    match command {
        "open" => return Bucket::open(rest).map(|_| "ok".into()).map_err(state_error),
        "keep" => {
            let bucket = Bucket::open_default().map_err(state_error)?;
            KEPT.with(|k| *k.borrow_mut() = Some(bucket));
            return Ok("ok".into());
        }
        "kept" => return Ok(flag(KEPT.with(|k| k.borrow().is_some()))),
        _ => {}
    }
    let (bucket, command, rest) = match command {
        "in" => {
            let (name, line) = word(rest);
            let (command, rest) = word(line);
            (Bucket::open(name), command, rest)
        }
        _ => (Bucket::open_default(), command, rest),
    };
    state(&bucket.map_err(state_error)?, command, rest)
}

struct StateTest;

impl Handler for StateTest {
    fn on_message(conn: u64, message: Vec<u8>) -> Result<Response, String> {
        let text = String::from_utf8_lossy(&message);
        let mut line = text.trim_end_matches('\r');
        if let Some(tag) = config_get("tag") {
            match line.strip_prefix(&tag).and_then(|rest| rest.strip_prefix(' ')) {
                Some(command) => line = command,
                None => return Ok(Response::reply(message)),
            }
        }
        Ok(Response::reply(run(conn, line).unwrap_or_else(|error| error)))
    }
}

sandport_guest::export_handler_v2!(StateTest);
