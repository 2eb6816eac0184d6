//! The errors of the state layer: what a plugin's state call can return, and why a store cannot open.
//!
//! A state call's error is an answer the plugin handles (the next session maps it onto
//! `wasi:keyvalue`'s `other(string)` with [`crate::error::report`]'s text), never a trap. Each
//! variant's message says what happened in words a plugin can show; causes stay `source()`s.

use std::fmt;
use std::path::PathBuf;

/// Why a state call failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The store did not answer in time or cannot answer at all. For a write, its outcome is
    /// unknown when the deadline passed after the write was handed to the store.
    #[error("the state store is unavailable")]
    Unavailable(#[source] Unavailable),

    /// A write would go over one of the operator's quotas; nothing was written.
    #[error("state quota exceeded")]
    Quota(#[source] QuotaError),

    /// `increment` on a value that is not a decimal 64-bit integer (like Redis `INCRBY`).
    #[error("the value is not a decimal 64-bit integer")]
    NotAnInteger,

    /// `increment` whose result does not fit in a signed 64-bit integer; nothing was written.
    #[error("the increment overflows a 64-bit integer")]
    Overflow,

    /// A TTL under one millisecond, the store's resolution (delete the key instead).
    #[error("a TTL must be at least 1 ms")]
    InvalidTtl,
}

impl StateError {
    pub(crate) fn deadline() -> Self {
        StateError::Unavailable(Unavailable::Deadline)
    }

    pub(crate) fn store(cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        StateError::Unavailable(Unavailable::Store(Box::new(cause)))
    }
}

impl From<QuotaError> for StateError {
    fn from(e: QuotaError) -> Self {
        StateError::Quota(e)
    }
}

/// Why the store is unavailable.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// The call's deadline passed before the store answered (or before the call started).
    #[error("the call's deadline passed before the store answered")]
    Deadline,
    /// The store has shut down (its writer thread is gone).
    #[error("the store has shut down")]
    Closed,
    /// A networked store could not be reached lately; calls fail at once until the next
    /// connection attempt, which backs off (see the Redis backend's pool).
    #[error("the store could not be reached; reconnecting with backoff")]
    Backoff,
    /// The store itself failed (I/O, a corrupt page, a dropped connection); the cause is the
    /// source.
    #[error("the store failed")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Which quota a write went over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quota {
    KeyBytes,
    ValueBytes,
    NamespaceBytes,
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Quota::KeyBytes => "the key",
            Quota::ValueBytes => "the value",
            Quota::NamespaceBytes => "the namespace's keys and values together",
        })
    }
}

/// A write refused by a quota: which one, its limit, and the size the write asked for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{quota} would take {asked} bytes, over the limit of {limit}")]
pub struct QuotaError {
    pub quota: Quota,
    pub limit: u64,
    pub asked: u64,
}

/// A namespace name that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid state namespace {0:?}: use 1 to 64 ASCII letters, digits, `.`, `_` or `-`")]
pub struct NamespaceError(pub String);

/// Why a state backend could not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "unknown state backend {0:?}: expected `memory`, `file:PATH` or `redis://HOST:PORT[/DB]`"
    )]
    UnknownSpec(String),

    #[error("{0:?} is not a usable Redis URL (`redis://HOST:PORT[/DB]`)")]
    RedisUrl(String, #[source] ::redis::RedisError),

    #[error("state database {0} is in use by another process (or already open in this one)")]
    Locked(PathBuf),

    #[error("{0} cannot be opened as a state database (not a redb file, or corrupt)")]
    NotADatabase(PathBuf, #[source] redb::Error),

    #[error("cannot open state database {0}")]
    Io(PathBuf, #[source] redb::Error),
}
