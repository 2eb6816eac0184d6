//! The `redis://HOST:PORT[/DB]` state backend: state shared by every host that names the same
//! Redis (or Valkey), so plugins behind a load balancer see one store.
//!
//! **Atomicity.** Each operation is one Lua script ([`ops.lua`](./ops.lua), sent by `EVALSHA`,
//! by `EVAL` after a restart emptied Redis's script cache): Redis runs a script alone, so the
//! read, the quota check and the write of increment, compare-and-swap and every other operation
//! are one step for every host at once. The script follows `ops.rs` rule for rule (the
//! conformance suite checks it), with Redis's clock, so hosts with skewed clocks agree on expiry.
//!
//! **Layout**, for namespace `NS` (`plugin:NAME` or `shared:NAME`), under the hash tag `{NS}` so
//! a namespace stays in one slot: `sandport:{NS}:v:KEY` the value, its TTL the native expiry
//! (`SET ... PXAT`, so `redis-cli` shows it); `sandport:{NS}:keys` every key (sorted set,
//! byte order for list-keys); `:exp` the expiries (sorted set, Unix ms); `:size` each key's
//! bytes (hash), so a key Redis expired or evicted on its own still frees exactly its bytes;
//! `:used` the namespace's bytes, which the quota checks across hosts. A script touches the
//! value keys of expired keys it sweeps without declaring them, which a single Redis allows.
//!
//! **Failures.** A call is bounded by its deadline (socket timeouts, see `pool.rs`); Redis down
//! or restarting is `Unavailable`, at once while reconnecting with backoff. A write whose
//! deadline passed may or may not have happened, as with the other backends.

use std::time::{Duration, Instant};

use ::redis::io::tcp::TcpSettings;
use ::redis::{Client, ErrorKind, IntoConnectionInfo, Script, ServerErrorKind, Value};

use super::error::{OpenError, Quota, QuotaError};
use super::ops::{Op, Reply};
use super::{Answer, Backend, KeyPage, Namespace, Quotas, StateError, Ttl, LIST_PAGE};

pub(crate) mod pool;
#[cfg(test)]
#[path = "../../../../tests/support/redis_server.rs"]
pub(crate) mod server;
#[cfg(test)]
mod tests;

/// What every key sandport writes starts with, so a Redis shared with other programs can tell.
const PREFIX: &str = "sandport";
/// Every operation, as one Lua script.
const SCRIPT: &str = include_str!("ops.lua");
/// The longest TTL passed on, about 300 years: beyond it Redis's expiry arithmetic overflows.
const MAX_TTL_MS: u128 = 10_000_000_000_000;

/// The `redis://` backend.
pub struct Redis {
    quotas: Quotas,
    pool: pool::Pool,
    script: Script,
}

impl Redis {
    /// Reads `url` (`redis://HOST:PORT[/DB]`). A Redis that cannot be reached now is not an
    /// error: the host starts, logs it, answers state calls `unavailable` and `/readyz` 503
    /// until Redis answers.
    pub fn open(url: &str, quotas: Quotas) -> Result<Self, OpenError> {
        let client = client(url)?;
        let redis = Redis {
            quotas,
            pool: pool::Pool::new(client),
            script: Script::new(SCRIPT),
        };
        // Connects once now, so an unreachable store is in the log at start.
        let _ = redis.check(Instant::now() + Duration::from_secs(1));
        Ok(redis)
    }

    /// Runs the script for `op` (its name and arguments) on `key` of `ns`.
    fn call(
        &self,
        ns: &Namespace,
        key: &str,
        op: &str,
        args: &[&[u8]],
        deadline: Instant,
    ) -> Answer<Vec<Value>> {
        let base = format!("{PREFIX}:{{{}}}:", ns.as_str());
        let keys = [
            format!("{base}v:{key}"),
            format!("{base}keys"),
            format!("{base}exp"),
            format!("{base}size"),
            format!("{base}used"),
        ];
        let limits = [
            self.quotas.max_value_bytes.to_string(),
            self.quotas.max_namespace_bytes.to_string(),
        ];
        let value_prefix = format!("{base}v:");
        let fixed: [&[u8]; 5] = [
            value_prefix.as_bytes(),
            key.as_bytes(),
            op.as_bytes(),
            limits[0].as_bytes(),
            limits[1].as_bytes(),
        ];
        // `EVALSHA`, then `EVAL` if Redis lost the script (a restart): two commands, each
        // bounded by what is left of the deadline (redis-rs's `Script::invoke` would give each
        // of its three steps the whole timeout).
        let script = |command: &str, body: &str| {
            let mut cmd = ::redis::cmd(command);
            cmd.arg(body).arg(keys.len()).arg(&keys[..]);
            for arg in fixed.iter().chain(args) {
                cmd.arg(*arg);
            }
            cmd
        };
        let reply: Value = self.pool.run(deadline, |conn| {
            match script("EVALSHA", self.script.get_hash()).query(conn) {
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    pool::bound(conn, deadline)?;
                    script("EVAL", SCRIPT).query(conn)
                }
                other => other,
            }
        })?;
        let Value::Array(items) = reply else {
            return Err(malformed(&reply));
        };
        match items.first() {
            Some(Value::BulkString(tag)) if tag == b"q" => Err(self.refusal(&items)),
            Some(Value::BulkString(tag)) if tag == b"nan" => Err(StateError::NotAnInteger),
            Some(Value::BulkString(tag)) if tag == b"overflow" => Err(StateError::Overflow),
            _ => Ok(items),
        }
    }

    fn refusal(&self, items: &[Value]) -> StateError {
        let (quota, limit) = match items.get(1) {
            Some(Value::BulkString(which)) if which == b"value" => {
                (Quota::ValueBytes, self.quotas.max_value_bytes as u64)
            }
            _ => (Quota::NamespaceBytes, self.quotas.max_namespace_bytes),
        };
        let asked = match items.get(2) {
            Some(Value::Int(n)) => *n as u64,
            _ => 0,
        };
        QuotaError {
            quota,
            limit,
            asked,
        }
        .into()
    }

    /// Whether Redis answers a `PING` before `deadline`: what `/readyz` asks.
    pub fn check(&self, deadline: Instant) -> Result<(), StateError> {
        self.pool
            .run(deadline, |conn| ::redis::cmd("PING").query::<()>(conn))
    }
}

/// A client for `url` (`redis://HOST:PORT[/DB]`), set up for sandport's request-and-wait calls;
/// the cross-host messaging bus uses it too.
pub(crate) fn client(url: &str) -> Result<Client, OpenError> {
    let bad_url = |e| OpenError::RedisUrl(url.to_owned(), e);
    let info = url.into_connection_info().map_err(bad_url)?;
    // No `CLIENT SETINFO` at connect: one round trip less for every new connection.
    let settings = info.redis_settings().clone().set_skip_set_lib_name();
    // Every call is a request then a wait for its reply: never hold a request back (Nagle).
    let info = info
        .set_redis_settings(settings)
        .set_tcp_settings(TcpSettings::default().set_nodelay(true));
    Client::open(info).map_err(bad_url)
}

impl Backend for Redis {
    fn run(&self, ns: &Namespace, key: &str, op: Op, deadline: Instant) -> Answer<Reply> {
        self.quotas.precheck(key, deadline)?;
        let items = match op {
            Op::Get => self.call(ns, key, "get", &[], deadline)?,
            Op::Exists => self.call(ns, key, "exists", &[], deadline)?,
            Op::Set { value, ttl } => {
                let ttl = ttl_ms(ttl)?;
                self.call(ns, key, "set", &[ttl.as_bytes(), &value], deadline)?
            }
            Op::Delete => self.call(ns, key, "delete", &[], deadline)?,
            Op::Increment(delta) => {
                let delta = delta.to_string();
                self.call(ns, key, "increment", &[delta.as_bytes()], deadline)?
            }
            Op::CompareAndSwap { expected, new } => {
                let (has, expected) = match &expected {
                    Some(v) => (&b"1"[..], v.as_slice()),
                    None => (&b"0"[..], &b""[..]),
                };
                self.call(ns, key, "cas", &[has, expected, &new], deadline)?
            }
            Op::Expire(ttl) => {
                let ttl = ttl_ms(ttl)?;
                self.call(ns, key, "expire", &[ttl.as_bytes()], deadline)?
            }
            Op::Ttl => self.call(ns, key, "ttl", &[], deadline)?,
        };
        reply(&items)
    }

    fn list_keys(&self, ns: &Namespace, from: Option<&str>, deadline: Instant) -> Answer<KeyPage> {
        self.quotas.precheck("", deadline)?;
        let (has, cursor) = from.map_or(("0", ""), |c| ("1", c));
        // One more than a page says whether there is a next one.
        let want = (LIST_PAGE + 1).to_string();
        let args = [has.as_bytes(), cursor.as_bytes(), want.as_bytes()];
        let items = self.call(ns, "", "list", &args, deadline)?;
        let Some(Value::Array(found)) = items.get(1) else {
            return Err(malformed(&Value::Array(items)));
        };
        let keys = found
            .iter()
            .map(|k| match k {
                Value::BulkString(k) => String::from_utf8(k.clone()).map_err(|e| malformed(&e)),
                other => Err(malformed(other)),
            })
            .collect::<Answer<Vec<String>>>()?;
        Ok(KeyPage::of(keys))
    }

    fn usage(&self, ns: &Namespace, deadline: Instant) -> Answer<u64> {
        self.quotas.precheck("", deadline)?;
        let items = self.call(ns, "", "usage", &[], deadline)?;
        match items.get(1) {
            Some(Value::BulkString(n)) => decimal(n),
            _ => Err(malformed(&Value::Array(items))),
        }
    }

    /// A probe while reconnecting fails at once (backoff), so probes cannot storm Redis
    /// either; one that comes after the backoff is the next attempt, so `/readyz` recovers
    /// even when no plugin calls the store.
    fn ready(&self, deadline: Instant) -> Result<(), StateError> {
        self.check(deadline)
    }
}

/// The script's argument for a TTL: whole milliseconds, rounded up ('' for none).
fn ttl_ms(ttl: Option<Duration>) -> Answer<String> {
    let Some(ttl) = ttl else {
        return Ok(String::new());
    };
    let ms = ttl.as_nanos().div_ceil(1_000_000);
    if ms == 0 {
        return Err(StateError::InvalidTtl);
    }
    Ok(ms.min(MAX_TTL_MS).to_string())
}

/// The typed reply of a script's answer (tags in `ops.lua`).
fn reply(items: &[Value]) -> Answer<Reply> {
    let tag = match items.first() {
        Some(Value::BulkString(tag)) => tag.as_slice(),
        _ => return Err(malformed(&Value::Array(items.to_vec()))),
    };
    Ok(match (tag, items.get(1)) {
        (b"v", Some(Value::BulkString(v))) => Reply::Value(Some(v.clone())),
        (b"n", None) => Reply::Value(None),
        (b"b", Some(Value::Int(b))) => Reply::Bool(*b != 0),
        (b"i", Some(Value::BulkString(n))) => Reply::Int(decimal(n)?),
        (b"t", Some(Value::Int(-2))) => Reply::Ttl(Ttl::Absent),
        (b"t", Some(Value::Int(-1))) => Reply::Ttl(Ttl::Persistent),
        (b"t", Some(Value::Int(ms))) => {
            Reply::Ttl(Ttl::Remaining(Duration::from_millis((*ms).max(0) as u64)))
        }
        _ => return Err(malformed(&Value::Array(items.to_vec()))),
    })
}

fn decimal<T: std::str::FromStr>(digits: &[u8]) -> Answer<T> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| malformed(&String::from_utf8_lossy(digits)))
}

/// An answer `ops.lua` never gives: another program wrote sandport's keys, or a bug.
fn malformed(what: &impl std::fmt::Debug) -> StateError {
    StateError::store(Malformed(format!("{what:?}")))
}

#[derive(Debug, thiserror::Error)]
#[error("unexpected answer from the state script: {0}")]
struct Malformed(String);
