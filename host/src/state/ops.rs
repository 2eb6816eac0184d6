//! What each state operation means, once for every backend: a pure function from the stored
//! entry to the reply and the change to write.
//!
//! A backend's job is only to run [`apply`] atomically on one key (under a lock, in a
//! transaction) and to write back the [`Change`] after [`super::Quotas::admit`] accepts it. So
//! increment's parsing, compare-and-swap's comparison, the TTL rules and lazy expiry cannot
//! differ between backends.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::error::StateError;
use super::{Answer, Ttl};

/// A stored value and when it expires, in milliseconds since the Unix epoch. Wall-clock time,
/// not `Instant`, so that the file backend's expiries keep their meaning across a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub value: Vec<u8>,
    pub expires_at: Option<u64>,
}

impl Entry {
    /// Whether the entry has not expired at `now`. Both are whole milliseconds, rounded down, so
    /// a key set at 10.9 ms with a 400 ms TTL expires at 411 ms: never early (a rate limiter's
    /// window must not end before its length), at most 1 ms late.
    pub fn live(&self, now: u64) -> bool {
        self.expires_at.is_none_or(|at| at >= now)
    }

    /// What the entry counts for in its namespace's quota.
    pub fn size(&self, key: &str) -> u64 {
        (key.len() + self.value.len()) as u64
    }
}

/// Now, in the unit of [`Entry::expires_at`].
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One operation on one key: what [`super::Backend::run`] takes.
#[derive(Clone, Debug)]
pub enum Op {
    Get,
    Exists,
    /// Replaces the value, and its TTL (none: the key does not expire), like Redis `SET`.
    Set {
        value: Vec<u8>,
        ttl: Option<Duration>,
    },
    Delete,
    /// Adds to a decimal ASCII integer (missing: 0); keeps the key's TTL, like Redis `INCRBY`.
    Increment(i64),
    /// Writes `new` (with no TTL, as `Set` does) only if the value is `expected` (`None`: the
    /// key is absent).
    CompareAndSwap {
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    },
    /// Sets (or with `None` removes) the TTL of a key that exists.
    Expire(Option<Duration>),
    Ttl,
}

impl Op {
    /// Whether the operation may write (the file backend sends those to its writer thread).
    pub fn writes(&self) -> bool {
        !matches!(self, Op::Get | Op::Exists | Op::Ttl)
    }

    /// The most bytes the key could hold after this operation (a decimal `i64` has at most 20
    /// characters); 0 if it cannot grow. Lets a backend free expired keys first when a write
    /// might not fit, so that expired data never causes a quota error.
    pub(crate) fn growth(&self, key: &str) -> u64 {
        let value = match self {
            Op::Set { value, .. } | Op::CompareAndSwap { new: value, .. } => value.len(),
            Op::Increment(_) => 20,
            _ => return 0,
        };
        (key.len() + value) as u64
    }
}

/// What an operation answers; [`super::Backend`]'s typed methods unwrap the one they expect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Value(Option<Vec<u8>>),
    Bool(bool),
    Int(i64),
    Ttl(Ttl),
}

/// What the backend writes back for the key.
#[derive(Debug)]
pub(crate) enum Change {
    Keep,
    Put(Entry),
    Remove,
}

/// Runs `op` on `stored` (the entry as stored, maybe expired) at `now`. An expired entry is
/// answered as absent and removed (lazy expiry), whatever the operation.
pub(crate) fn apply(
    op: Op,
    stored: Option<&Entry>,
    now: u64,
) -> Result<(Reply, Change), StateError> {
    let live = stored.filter(|e| e.live(now));
    // Unless the operation writes something else, an expired entry goes.
    let untouched = || match (stored, live) {
        (Some(_), None) => Change::Remove,
        _ => Change::Keep,
    };
    let put = |value: Vec<u8>, ttl: Option<Duration>| -> Answer<Change> {
        Ok(Change::Put(Entry {
            value,
            expires_at: expiry(ttl, now)?,
        }))
    };
    Ok(match op {
        Op::Get => (Reply::Value(live.map(|e| e.value.clone())), untouched()),
        Op::Exists => (Reply::Bool(live.is_some()), untouched()),
        Op::Set { value, ttl } => (Reply::Bool(true), put(value, ttl)?),
        Op::Delete => (
            Reply::Bool(live.is_some()),
            stored.map_or(Change::Keep, |_| Change::Remove),
        ),
        Op::Increment(delta) => {
            let current = match live {
                None => 0,
                Some(e) => parse_int(&e.value)?,
            };
            let next = current.checked_add(delta).ok_or(StateError::Overflow)?;
            let expires_at = live.and_then(|e| e.expires_at);
            let value = next.to_string().into_bytes();
            (Reply::Int(next), Change::Put(Entry { value, expires_at }))
        }
        Op::CompareAndSwap { expected, new } => {
            if live.map(|e| e.value.as_slice()) == expected.as_deref() {
                (Reply::Bool(true), put(new, None)?)
            } else {
                (Reply::Bool(false), untouched())
            }
        }
        Op::Expire(ttl) => match live {
            None => (Reply::Bool(false), untouched()),
            Some(e) => (Reply::Bool(true), put(e.value.clone(), ttl)?),
        },
        Op::Ttl => {
            let ttl = match live {
                None => Ttl::Absent,
                Some(Entry {
                    expires_at: None, ..
                }) => Ttl::Persistent,
                Some(Entry {
                    expires_at: Some(at),
                    ..
                }) => Ttl::Remaining(Duration::from_millis(at - now)),
            };
            (Reply::Ttl(ttl), untouched())
        }
    })
}

/// The expiry instant of a TTL given now; a TTL is rounded up to whole milliseconds.
fn expiry(ttl: Option<Duration>, now: u64) -> Answer<Option<u64>> {
    let Some(ttl) = ttl else { return Ok(None) };
    let ms = ttl.as_nanos().div_ceil(1_000_000);
    if ms == 0 {
        return Err(StateError::InvalidTtl);
    }
    Ok(Some(
        now.saturating_add(u64::try_from(ms).unwrap_or(u64::MAX)),
    ))
}

/// A stored counter: ASCII decimal, an optional `-`, no spaces (what Redis `INCRBY` accepts).
fn parse_int(value: &[u8]) -> Answer<i64> {
    let text = std::str::from_utf8(value).map_err(|_| StateError::NotAnInteger)?;
    if text.starts_with('+') {
        return Err(StateError::NotAnInteger);
    }
    text.parse().map_err(|_| StateError::NotAnInteger)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rate limiter's window ended 0.3 ms early: times are whole milliseconds rounded down,
    /// so a key set at 10.9 ms with a 400 ms TTL must still be live at 410.9 ms.
    #[test]
    fn a_ttl_never_ends_early() {
        let set_at = 10; // 10.9 ms, rounded down
        let entry = Entry {
            value: Vec::new(),
            expires_at: expiry(Some(Duration::from_millis(400)), set_at).unwrap(),
        };
        assert!(entry.live(410), "at 410.9 ms only 400 ms have passed");
        assert!(!entry.live(411));
    }
}
