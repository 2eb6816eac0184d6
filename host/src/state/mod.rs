//! Host-side plugin state: the [`Backend`] trait every store implements, [`Namespace`]s, and
//! [`open`], which turns a `--state` value into a store.
//!
//! The operations map one to one onto `wasi:keyvalue@0.2.0-draft2` (the version Spin
//! implements; Wasmtime's crate has the older draft without compare-and-swap): `store.bucket`'s
//! get, set, delete, exists and list-keys (a string cursor), `atomics.increment` (s64) and
//! `atomics.swap` (compare-and-swap, here with the expected value passed in rather than held in
//! a `cas` resource). `expire` and `ttl` are what a small sandport interface adds. A bucket is
//! a [`Namespace`]; `no-such-store` and `access-denied` are decided when a plugin opens one,
//! before any backend call; every [`StateError`] is `other(message)`.
//!
//! Every call is bounded by the plugin call's deadline: past it, it returns
//! [`StateError::Unavailable`] instead of waiting, and a call that starts after it does nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

mod error;
pub mod file;
pub mod memory;
mod ops;
mod quota;
pub mod redis;

#[cfg(test)]
mod conformance;

pub use error::{NamespaceError, OpenError, Quota, QuotaError, StateError, Unavailable};
pub use ops::{Op, Reply};
pub use quota::Quotas;

/// What every state operation returns.
pub type Answer<T> = Result<T, StateError>;

/// Most keys one `list_keys` page returns.
pub const LIST_PAGE: usize = 1000;

/// A store of plugin state, shared by every worker (`Arc<dyn Backend>`).
///
/// Backends implement [`run`](Backend::run) (one key, atomically), `list_keys` and `usage`; the
/// typed methods are the API callers use. Every method fails with `Unavailable` rather than
/// block past `deadline`.
pub trait Backend: Send + Sync {
    /// Runs one operation on one key atomically, after [`Quotas::precheck`].
    fn run(&self, ns: &Namespace, key: &str, op: Op, deadline: Instant) -> Answer<Reply>;

    /// Up to [`LIST_PAGE`] live keys of `ns` after `from` (the last page's cursor), in byte
    /// order; the page's cursor is `None` when there are no more. Keys written meanwhile may or
    /// may not be listed.
    fn list_keys(&self, ns: &Namespace, from: Option<&str>, deadline: Instant) -> Answer<KeyPage>;

    /// The bytes (keys + values) `ns`'s live keys hold: what its quota is checked against.
    fn usage(&self, ns: &Namespace, deadline: Instant) -> Answer<u64>;

    /// Whether the store can answer now, by `deadline`: what `/readyz` reports. An in-process
    /// store always can; a networked one says whether it is reachable.
    fn ready(&self, deadline: Instant) -> Result<(), StateError> {
        let _ = deadline;
        Ok(())
    }

    fn get(&self, ns: &Namespace, key: &str, deadline: Instant) -> Answer<Option<Vec<u8>>> {
        match self.run(ns, key, Op::Get, deadline)? {
            Reply::Value(v) => Ok(v),
            other => unreachable!("get answered {other:?}"),
        }
    }

    /// Sets the value; `ttl` (at least 1 ms) makes the key expire, `None` makes it persistent.
    fn set(
        &self,
        ns: &Namespace,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        deadline: Instant,
    ) -> Result<(), StateError> {
        let value = value.to_vec();
        self.run(ns, key, Op::Set { value, ttl }, deadline)
            .map(drop)
    }

    /// Whether the key was there.
    fn delete(&self, ns: &Namespace, key: &str, deadline: Instant) -> Answer<bool> {
        flag(self.run(ns, key, Op::Delete, deadline)?)
    }

    fn exists(&self, ns: &Namespace, key: &str, deadline: Instant) -> Answer<bool> {
        flag(self.run(ns, key, Op::Exists, deadline)?)
    }

    /// The new value.
    fn increment(&self, ns: &Namespace, key: &str, delta: i64, deadline: Instant) -> Answer<i64> {
        match self.run(ns, key, Op::Increment(delta), deadline)? {
            Reply::Int(n) => Ok(n),
            other => unreachable!("increment answered {other:?}"),
        }
    }

    /// Whether it swapped.
    fn compare_and_swap(
        &self,
        ns: &Namespace,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
        deadline: Instant,
    ) -> Answer<bool> {
        let op = Op::CompareAndSwap {
            expected: expected.map(<[u8]>::to_vec),
            new: new.to_vec(),
        };
        flag(self.run(ns, key, op, deadline)?)
    }

    /// Sets (`None`: removes) the key's TTL; whether the key exists.
    fn expire(
        &self,
        ns: &Namespace,
        key: &str,
        ttl: Option<Duration>,
        deadline: Instant,
    ) -> Answer<bool> {
        flag(self.run(ns, key, Op::Expire(ttl), deadline)?)
    }

    fn ttl(&self, ns: &Namespace, key: &str, deadline: Instant) -> Answer<Ttl> {
        match self.run(ns, key, Op::Ttl, deadline)? {
            Reply::Ttl(t) => Ok(t),
            other => unreachable!("ttl answered {other:?}"),
        }
    }
}

fn flag(reply: Reply) -> Answer<bool> {
    match reply {
        Reply::Bool(b) => Ok(b),
        other => unreachable!("expected a boolean, got {other:?}"),
    }
}

/// A key's time to live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ttl {
    Absent,
    Persistent,
    Remaining(Duration),
}

/// One page of [`Backend::list_keys`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPage {
    pub keys: Vec<String>,
    pub cursor: Option<String>,
}

impl KeyPage {
    /// The first [`LIST_PAGE`] of `keys` (live keys after the cursor, any order).
    pub(crate) fn of(mut keys: Vec<String>) -> Self {
        keys.sort_unstable();
        let more = keys.len() > LIST_PAGE;
        keys.truncate(LIST_PAGE);
        let cursor = more.then(|| keys.last().cloned()).flatten();
        KeyPage { keys, cursor }
    }
}

/// Whose keys: a plugin's own (its name), or one the operator shares between plugins. The two
/// kinds never collide, so a plugin named `x` cannot reach the shared namespace `x`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace(String);

impl Namespace {
    pub fn plugin(name: &str) -> Result<Self, NamespaceError> {
        Self::new("plugin", name)
    }

    pub fn shared(name: &str) -> Result<Self, NamespaceError> {
        Self::new("shared", name)
    }

    fn new(kind: &str, name: &str) -> Result<Self, NamespaceError> {
        let ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok {
            return Err(NamespaceError(name.to_owned()));
        }
        Ok(Namespace(format!("{kind}:{name}")))
    }

    /// `plugin:NAME` or `shared:NAME`: how the file backend stores it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The store a `--state` value names, enforcing `quotas`: `memory`, `file:PATH` or
/// `redis://HOST:PORT[/DB]`.
pub fn open(spec: &str, quotas: Quotas) -> Result<Arc<dyn Backend>, OpenError> {
    if spec == "memory" {
        return Ok(Arc::new(memory::Memory::new(quotas)));
    }
    if spec.starts_with("redis://") {
        return Ok(Arc::new(redis::Redis::open(spec, quotas)?));
    }
    match spec.strip_prefix("file:") {
        Some(path) if !path.is_empty() => Ok(Arc::new(file::File::open(path, quotas)?)),
        _ => Err(OpenError::UnknownSpec(spec.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_validated_and_kinds_do_not_collide() {
        assert_eq!(Namespace::plugin("echo").unwrap().as_str(), "plugin:echo");
        assert_ne!(
            Namespace::plugin("x").unwrap(),
            Namespace::shared("x").unwrap()
        );
        for bad in ["", "a b", "a:b", "é", &"x".repeat(65)] {
            let err = Namespace::plugin(bad).unwrap_err().to_string();
            assert!(err.contains("1 to 64 ASCII letters"), "{err}");
        }
    }

    #[test]
    fn open_takes_memory_file_and_redis_and_says_what_else_it_takes() {
        assert!(open("memory", Quotas::default()).is_ok());
        for bad in ["", "rediss://localhost", "file:", "Memory", "redis:/x"] {
            let err = open(bad, Quotas::default()).err().unwrap().to_string();
            assert!(
                err.contains("`memory`, `file:PATH` or `redis://HOST:PORT[/DB]`"),
                "{err}"
            );
        }
        for bad in ["redis://host:notaport", "redis://host/notadb"] {
            let err = open(bad, Quotas::default()).err().unwrap().to_string();
            assert!(err.contains("not a usable Redis URL"), "{bad}: {err}");
        }
    }
}
