//! Host state: byte values under string keys in a [`Bucket`], kept by the host (`--state`) and
//! shared by every instance, worker and connection of the plugin.
//!
//! [`Bucket::open_default`] is the plugin's own namespace, which no other plugin can read;
//! [`Bucket::open`] with another name opens a namespace the operator shares between plugins
//! (`--shared-state NAME=PLUGIN,...`). Every operation is atomic on its key; none traps: a store
//! that cannot answer in time, a quota or a bad value is an [`Error`].
//!
//! ```ignore
//! let bucket = Bucket::open_default()?;
//! bucket.set_with_ttl("session:7", "alice", Duration::from_secs(60))?;
//! let hits = bucket.increment("hits", 1)?;
//! // Read, change, write back; retried if another call changed the value in between.
//! bucket.update("log", |old| Some([old.unwrap_or_default(), &b"x"[..]].concat()))?;
//! ```

use std::fmt;
use std::time::Duration;

use super::__bindings::sandport::plugin::expiry;
use super::__bindings::wasi::keyvalue::{atomics, store};

/// Why a state operation did nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// [`Bucket::open`] of a name that is neither `default` nor a shared namespace.
    NoSuchStore,
    /// [`Bucket::open`] of a shared namespace this plugin was not given.
    AccessDenied,
    /// The host's reason: the store is unavailable (deadline passed), a quota would be exceeded,
    /// a value is not an integer, a TTL is under 1 ms, ...
    Other(String),
}

impl Error {
    /// The WIT name of the error's case: `no-such-store`, `access-denied` or `other`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NoSuchStore => "no-such-store",
            Error::AccessDenied => "access-denied",
            Error::Other(_) => "other",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoSuchStore => f.write_str("no such store"),
            Error::AccessDenied => f.write_str("access to the store denied"),
            Error::Other(reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for Error {}

impl From<store::Error> for Error {
    fn from(e: store::Error) -> Error {
        match e {
            store::Error::NoSuchStore => Error::NoSuchStore,
            store::Error::AccessDenied => Error::AccessDenied,
            store::Error::Other(reason) => Error::Other(reason),
        }
    }
}

/// `Error`s convert to `String`, so hooks can use `?` on state calls.
impl From<Error> for String {
    fn from(e: Error) -> String {
        e.to_string()
    }
}

/// A key's time to live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ttl {
    /// The key does not exist.
    Absent,
    /// The key never expires.
    Persistent,
    /// The key expires in this long (resolution 1 ms).
    Remaining(Duration),
}

/// Whole milliseconds of `d`, rounded up (the host's resolution; a TTL under 1 ms is an error).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// A namespace of the host's state store.
pub struct Bucket(store::Bucket);

impl Bucket {
    /// The plugin's own namespace (`open("default")`).
    pub fn open_default() -> Result<Bucket, Error> {
        Bucket::open("default")
    }

    /// The namespace `name`: `default` (or empty) for the plugin's own, any other name for a
    /// namespace shared with `--shared-state` ([`Error::NoSuchStore`], [`Error::AccessDenied`]).
    pub fn open(name: &str) -> Result<Bucket, Error> {
        Ok(Bucket(store::open(name)?))
    }

    /// The key's value; `None` when it is absent or expired.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.0.get(key)?)
    }

    /// The key's value as text (invalid UTF-8 replaced); `None` when it is absent.
    pub fn get_string(&self, key: &str) -> Result<Option<String>, Error> {
        Ok(self.get(key)?.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Sets the value (a TTL the key had is cleared).
    pub fn set(&self, key: &str, value: impl AsRef<[u8]>) -> Result<(), Error> {
        Ok(self.0.set(key, value.as_ref())?)
    }

    /// Sets the value and makes the key expire after `ttl` (at least 1 ms).
    pub fn set_with_ttl(
        &self,
        key: &str,
        value: impl AsRef<[u8]>,
        ttl: Duration,
    ) -> Result<(), Error> {
        Ok(expiry::set_with_ttl(&self.0, key, value.as_ref(), millis(ttl))?)
    }

    /// Removes the key; removing an absent key is not an error.
    pub fn delete(&self, key: &str) -> Result<(), Error> {
        Ok(self.0.delete(key)?)
    }

    /// Whether the key exists (and has not expired).
    pub fn exists(&self, key: &str) -> Result<bool, Error> {
        Ok(self.0.exists(key)?)
    }

    /// Adds `delta` to the key's value, a decimal integer in ASCII (an absent key counts as 0),
    /// and returns the new value; a TTL the key has is kept. Like Redis `INCRBY`.
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64, Error> {
        Ok(atomics::increment(&self.0, key, delta)?)
    }

    /// Makes the key expire after `ttl` (at least 1 ms), or never (`None`); whether it exists.
    pub fn expire(&self, key: &str, ttl: Option<Duration>) -> Result<bool, Error> {
        Ok(expiry::expire(&self.0, key, ttl.map(millis))?)
    }

    /// The key's time to live.
    pub fn ttl(&self, key: &str) -> Result<Ttl, Error> {
        Ok(match expiry::ttl(&self.0, key)? {
            expiry::TimeToLive::Absent => Ttl::Absent,
            expiry::TimeToLive::Persistent => Ttl::Persistent,
            expiry::TimeToLive::Remaining(ms) => Ttl::Remaining(Duration::from_millis(ms)),
        })
    }

    /// Every key of the namespace, in byte order (reads all the pages of `list-keys`).
    pub fn keys(&self) -> Result<Vec<String>, Error> {
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.0.list_keys(cursor.as_deref())?;
            keys.extend(page.keys);
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(keys),
            }
        }
    }

    /// Starts a compare-and-swap on `key`: reads its current value, to be replaced with
    /// [`Cas::swap`] only if nobody changed it meanwhile.
    pub fn cas(&self, key: &str) -> Result<Cas, Error> {
        let handle = atomics::Cas::new(&self.0, key)?;
        Cas::read(handle)
    }

    /// Sets `key` to `new` if its value is `expected` (`None`: absent); whether it did. A TTL
    /// the key had is cleared.
    pub fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: impl AsRef<[u8]>,
    ) -> Result<bool, Error> {
        let cas = self.cas(key)?;
        if cas.current() != expected {
            return Ok(false);
        }
        match cas.swap(new) {
            Ok(()) => Ok(true),
            Err(SwapError::Changed(_)) => Ok(false),
            Err(SwapError::Store(e)) => Err(e),
        }
    }

    /// Read-modify-write: calls `change` with the key's value and writes what it returns, again
    /// with the fresh value whenever another call changed the key in between (at most
    /// [`UPDATE_ATTEMPTS`] times). `None` from `change` writes nothing. Returns the value the key
    /// was left with.
    pub fn update(
        &self,
        key: &str,
        mut change: impl FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>, Error> {
        let mut cas = self.cas(key)?;
        for _ in 0..UPDATE_ATTEMPTS {
            let Some(new) = change(cas.current()) else {
                return Ok(cas.value);
            };
            match cas.swap(&new) {
                Ok(()) => return Ok(Some(new)),
                Err(SwapError::Changed(fresh)) => cas = fresh,
                Err(SwapError::Store(e)) => return Err(e),
            }
        }
        Err(Error::Other(format!("{key}: changed by others {UPDATE_ATTEMPTS} times in a row")))
    }
}

/// How many times [`Bucket::update`] tries before giving up.
pub const UPDATE_ATTEMPTS: usize = 100;

/// A compare-and-swap in progress: the key's value when it was read, and the right to replace it
/// if it has not changed since.
pub struct Cas {
    handle: atomics::Cas,
    value: Option<Vec<u8>>,
}

/// Why [`Cas::swap`] did not write.
pub enum SwapError {
    /// The value changed since it was read: the new `Cas` holds the current value, ready for a
    /// retry.
    Changed(Cas),
    /// The store failed (unavailable, a quota, ...).
    Store(Error),
}

impl Cas {
    fn read(handle: atomics::Cas) -> Result<Cas, Error> {
        let value = handle.current()?;
        Ok(Cas { handle, value })
    }

    /// The value read (`None`: the key was absent).
    pub fn current(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }

    /// Sets the key to `value` if it still holds [`Cas::current`]; clears a TTL it had.
    pub fn swap(self, value: impl AsRef<[u8]>) -> Result<(), SwapError> {
        atomics::swap(self.handle, value.as_ref()).map_err(|e| match e {
            atomics::CasError::StoreError(e) => SwapError::Store(e.into()),
            atomics::CasError::CasFailed(fresh) => match Cas::read(fresh) {
                Ok(cas) => SwapError::Changed(cas),
                Err(e) => SwapError::Store(e),
            },
        })
    }
}
