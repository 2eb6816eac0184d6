//! Rooms and sends across hosts that share one Redis (`--state redis://...`): this host's
//! identity among them, and the Redis calls that carry messages and memberships between them.
//!
//! **Ids.** Each host claims a tag (1 to [`MAX_TAG`]) in Redis at start, alive while its
//! heartbeat key is; its connection ids are `tag << 40 | n`, so any host tells from an id which
//! host owns the connection, and ids stay below 2^53 (exact as JavaScript numbers and Lua's).
//!
//! **Messages** go through Redis pub/sub, at most once: `send` and `close` to a connection on
//! another host publish to that host's channel (`sandport:host:TAG`); `publish` to a room
//! publishes to `sandport:room:ROOM`, which every host's one subscriber connection receives (a
//! pattern subscription) and fans out to its own members. A host that is not subscribed at that
//! moment (reconnecting after Redis restarted) misses what was published meanwhile.
//!
//! **Memberships** are written to Redis behind the plugins' calls, in order, by one thread
//! ([`threads`]); they serve `members` and publish's count only, never delivery, so a join is
//! reached by the next publish from any host at once. After any failed write the thread
//! rewrites all of this host's memberships; a host whose heartbeat stops (killed) is pruned
//! from rooms by the next `members` or `publish` that meets it.
//!
//! Every call a plugin waits for is bounded by its deadline, like a state call; a failure is
//! counted and degrades to this host's view (the local members, an unknown remote connection).

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use ::redis::{Client, Script, Value};
use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::Messenger;
use crate::metrics::BusCounters;
use crate::state::redis::pool::{self, Pool};
use crate::state::{OpenError, StateError};

mod threads;
pub(crate) mod wire;

#[cfg(test)]
mod tests;

/// An id's low bits count the host's connections; the bits above are its host's tag.
pub const TAG_SHIFT: u32 = 40;
/// The highest tag: ids stay below 2^53.
pub const MAX_TAG: u64 = (1 << (53 - TAG_SHIFT)) - 1;
/// How often the host renews its heartbeat key, and how long the key outlives a renewal: a
/// host killed is pruned from rooms within [`HOST_TTL`].
const HEARTBEAT: Duration = Duration::from_secs(1);
const HOST_TTL: Duration = Duration::from_secs(5);
/// Membership changes waiting for the writer thread; past this (Redis slow or down) they are
/// dropped and the thread rewrites every membership once it can.
const MAX_PENDING: usize = 4096;
/// Tags tried at start before keeping one another host holds (a collision is logged).
const CLAIM_TRIES: usize = 16;

const SCRIPT: &str = include_str!("bus/bus.lua");

/// The host that owns connection `id` (0: ids of a host without the bus).
pub fn tag_of(id: u64) -> u64 {
    id >> TAG_SHIFT
}

/// A membership change for Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    Join { id: u64, room: String },
    Leave { id: u64, room: String },
}

/// What a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Beat {
    /// The tag was this host's.
    Renewed,
    /// The tag was free: claimed now (at start, or after Redis lost it).
    Claimed,
    /// Another live host holds the tag.
    Taken,
}

/// This host's end of the bus; shared by the messenger and the bus's two threads.
pub struct Bus {
    tag: u64,
    /// What the heartbeat key holds, so a host tells its own claim from another's.
    nonce: String,
    client: Client,
    /// Connections for the calls plugins wait for (and the writer's), bounded by deadlines.
    pool: Pool,
    script: Script,
    changes: Sender<Change>,
    /// The writer's end of `changes`, until it starts.
    pending: Mutex<Option<Receiver<Change>>>,
    /// Set when a change was dropped: the writer rewrites every membership.
    resync: AtomicBool,
    counters: Arc<BusCounters>,
}

impl Bus {
    /// The bus on the Redis at `url`, with a tag claimed if Redis answers now (else the writer
    /// claims it once Redis does).
    pub fn open(url: &str, counters: Arc<BusCounters>) -> Result<Self, OpenError> {
        let client = crate::state::redis::client(url)?;
        let (changes, pending) = crossbeam_channel::bounded(MAX_PENDING);
        let mut bus = Bus {
            tag: random() % MAX_TAG + 1,
            nonce: format!("{:016x}", random()),
            pool: Pool::new(client.clone()),
            client,
            script: Script::new(SCRIPT),
            changes,
            pending: Mutex::new(Some(pending)),
            resync: AtomicBool::new(true),
            counters,
        };
        for _ in 0..CLAIM_TRIES {
            match bus.beat(Instant::now() + Duration::from_secs(1)) {
                Ok(Beat::Taken) => bus.tag = random() % MAX_TAG + 1,
                Ok(_) | Err(_) => break,
            }
        }
        tracing::info!(
            tag = bus.tag,
            "rooms and sends span the hosts sharing this Redis"
        );
        Ok(bus)
    }

    pub fn tag(&self) -> u64 {
        self.tag
    }

    /// The id of this host's first connection.
    pub fn first_id(&self) -> u64 {
        self.tag << TAG_SHIFT | 1
    }

    /// Whether `id` names a connection another host owns.
    pub fn is_remote(&self, id: u64) -> bool {
        let tag = tag_of(id);
        tag != self.tag && (1..=MAX_TAG).contains(&tag)
    }

    /// Starts the subscriber and the membership writer, delivering to `messenger`; they end
    /// once it is gone.
    pub(crate) fn start(self: &Arc<Self>, messenger: Weak<Messenger>) -> std::io::Result<()> {
        let Some(rx) = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return Ok(());
        };
        threads::spawn(self.clone(), messenger, rx)
    }

    /// Queues a membership change for Redis; never blocks.
    pub(crate) fn changed(&self, change: Change) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.changes.try_send(change)
        {
            self.resync.store(true, Relaxed);
        }
    }

    /// Sends `bytes` (or a close, for `None`) to connection `to` on its host; false when no
    /// host is listening for it (its host is gone).
    pub fn direct(&self, to: u64, bytes: Option<&[u8]>, deadline: Instant) -> Answer<bool> {
        let channel = host_channel(tag_of(to));
        let payload = wire::direct(to, bytes);
        let listeners: u64 = self.counted(self.pool.run(deadline, |c| {
            ::redis::cmd("PUBLISH").arg(&channel).arg(&payload).query(c)
        }))?;
        self.counters.sent.fetch_add(1, Relaxed);
        Ok(listeners > 0)
    }

    /// Publishes `bytes` from `from` to `room`'s members on the other hosts; how many there are.
    pub fn publish(&self, room: &str, from: u64, bytes: &[u8], deadline: Instant) -> Answer<u64> {
        let payload = wire::room(self.tag, from, bytes);
        let value = self.run(deadline, "publish", &[room.as_bytes(), &payload])?;
        self.counters.sent.fetch_add(1, Relaxed);
        match value {
            Value::Int(n) => Ok(n.max(0) as u64),
            other => Err(malformed(&other)),
        }
    }

    /// The members of `room` on the other live hosts.
    pub fn members(&self, room: &str, deadline: Instant) -> Answer<Vec<u64>> {
        match self.run(deadline, "members", &[room.as_bytes()])? {
            Value::Array(ids) => ids
                .iter()
                .map(|id| match id {
                    Value::BulkString(digits) => std::str::from_utf8(digits)
                        .ok()
                        .and_then(|d| d.parse().ok())
                        .ok_or_else(|| malformed(id)),
                    other => Err(malformed(other)),
                })
                .collect(),
            other => Err(malformed(&other)),
        }
    }

    /// Renews or claims this host's tag.
    fn beat(&self, deadline: Instant) -> Answer<Beat> {
        let ttl = HOST_TTL.as_millis().to_string();
        match self.run(deadline, "beat", &[self.nonce.as_bytes(), ttl.as_bytes()])? {
            Value::Int(1) => Ok(Beat::Renewed),
            Value::Int(2) => Ok(Beat::Claimed),
            Value::Int(0) => Ok(Beat::Taken),
            other => Err(malformed(&other)),
        }
    }

    /// Writes `changes` in order, in one round trip.
    fn write(&self, changes: &[Change], deadline: Instant) -> Answer<()> {
        let mut pipe = ::redis::pipe();
        for change in changes {
            let (op, id, room) = match change {
                Change::Join { id, room } => ("join", id, room),
                Change::Leave { id, room } => ("leave", id, room),
            };
            let id = id.to_string();
            pipe.add_command(self.command(op, &[id.as_bytes(), room.as_bytes()]))
                .ignore();
        }
        self.scripted(deadline, |c| pipe.query::<()>(c))
    }

    /// Makes Redis hold exactly `memberships` for this host.
    fn sync(&self, memberships: &[(u64, String)], deadline: Instant) -> Answer<()> {
        let entries: Vec<String> = memberships
            .iter()
            .map(|(id, room)| format!("{id} {room}"))
            .collect();
        let args: Vec<&[u8]> = entries.iter().map(|e| e.as_bytes()).collect();
        self.run(deadline, "sync", &args).map(drop)
    }

    /// Runs the script's `op` with `args` after the operation and tag.
    fn run(&self, deadline: Instant, op: &str, args: &[&[u8]]) -> Answer<Value> {
        self.scripted(deadline, |c| self.command(op, args).query(c))
    }

    /// Runs `calls` on a pooled connection, loading the script first when Redis lost it.
    fn scripted<T>(
        &self,
        deadline: Instant,
        calls: impl Fn(&mut ::redis::Connection) -> ::redis::RedisResult<T>,
    ) -> Answer<T> {
        let result = self.pool.run(deadline, |c| match calls(c) {
            Err(e)
                if e.kind() == ::redis::ErrorKind::Server(::redis::ServerErrorKind::NoScript) =>
            {
                pool::bound(c, deadline)?;
                ::redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(SCRIPT)
                    .query::<()>(c)?;
                pool::bound(c, deadline)?;
                calls(c)
            }
            other => other,
        });
        self.counted(result)
    }

    /// `EVALSHA` of the script's `op`; [`Bus::scripted`] loads the script if Redis lost it.
    fn command(&self, op: &str, args: &[&[u8]]) -> ::redis::Cmd {
        let mut cmd = ::redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash()).arg(0).arg(op).arg(self.tag);
        for arg in args {
            cmd.arg(*arg);
        }
        cmd
    }

    /// Counts a failed call.
    fn counted<T>(&self, result: Answer<T>) -> Answer<T> {
        if result.is_err() {
            self.counters.errors.fetch_add(1, Relaxed);
        }
        result
    }
}

type Answer<T> = Result<T, StateError>;

/// The channel of the host with `tag`.
fn host_channel(tag: u64) -> String {
    format!("sandport:host:{tag}")
}

/// 64 random bits from the standard library's per-process hash keys (no dependency for it).
fn random() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// An answer the bus script never gives.
fn malformed(what: &impl std::fmt::Debug) -> StateError {
    StateError::store(Malformed(format!("{what:?}")))
}

#[derive(Debug, thiserror::Error)]
#[error("unexpected answer from the messaging bus script: {0}")]
struct Malformed(String);
