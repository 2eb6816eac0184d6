//! The state quotas and their accounting: the one place every backend asks whether a write fits.
//!
//! A namespace's size is the sum of `key.len() + value.len()` over its stored keys: what the
//! plugin put there, not the store's overhead (which differs per backend). Every write goes
//! through [`Quotas::admit`] with the entry it replaces, so set, delete, increment,
//! compare-and-swap and expiry all move the total by exactly the bytes they add or free.

use std::time::Instant;

use super::error::{Quota, QuotaError, StateError};
use super::ops::{Change, Entry};

/// Size limits on what plugins store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quotas {
    /// Largest key, in bytes. Default 1 KiB: keys are names (`session:1234`, `room:lobby:count`);
    /// a longer key is a value in disguise, and every key is also an index entry in the store.
    pub max_key_bytes: usize,
    /// Largest value, in bytes. Default 1 MiB, the same as `--max-message-bytes`: a plugin can
    /// store any message it received, and one value never takes more than a message's buffer.
    pub max_value_bytes: usize,
    /// Most bytes (keys + values) one namespace holds. Default 64 MiB: room for a million small
    /// counters or sessions, yet a runaway plugin cannot take the host's memory (the memory
    /// backend keeps everything in RAM) or its disk; raise it for plugins that cache.
    pub max_namespace_bytes: u64,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            max_key_bytes: 1 << 10,
            max_value_bytes: 1 << 20,
            max_namespace_bytes: 64 << 20,
        }
    }
}

impl Quotas {
    /// What every operation checks before it touches the store: the deadline has not passed
    /// (then nothing happens) and the key could exist at all.
    pub(crate) fn precheck(&self, key: &str, deadline: Instant) -> Result<(), StateError> {
        if Instant::now() >= deadline {
            return Err(StateError::deadline());
        }
        check(Quota::KeyBytes, self.max_key_bytes as u64, key.len() as u64)?;
        Ok(())
    }

    /// The namespace's new total if `change` replaces `old` (the stored entry, live or expired)
    /// under `key`, given its total `used` now; or which quota it breaks. A write that shrinks
    /// the namespace is always admitted, so a namespace over a lowered quota can be cleaned up.
    pub(crate) fn admit(
        &self,
        key: &str,
        old: Option<&Entry>,
        change: &Change,
        used: u64,
    ) -> Result<u64, QuotaError> {
        let freed = old.map_or(0, |e| e.size(key));
        let without = used.saturating_sub(freed);
        match change {
            Change::Keep => Ok(used),
            Change::Remove => Ok(without),
            Change::Put(new) => {
                check(Quota::KeyBytes, self.max_key_bytes as u64, key.len() as u64)?;
                let value = new.value.len() as u64;
                check(Quota::ValueBytes, self.max_value_bytes as u64, value)?;
                let total = without + new.size(key);
                if total > used {
                    check(Quota::NamespaceBytes, self.max_namespace_bytes, total)?;
                }
                Ok(total)
            }
        }
    }
}

fn check(quota: Quota, limit: u64, asked: u64) -> Result<(), QuotaError> {
    if asked > limit {
        return Err(QuotaError {
            quota,
            limit,
            asked,
        });
    }
    Ok(())
}
