//! The `memory` state backend: in-process, shared by every worker, gone when the process exits.
//!
//! It is on the path of every stateful message, so a call takes no lock shared between
//! namespaces: the namespace table is read-locked only to clone one `Arc`, and each namespace is
//! split into [`SHARDS`] independently locked shards by key hash, so workers running the same
//! plugin rarely wait for each other. A namespace's byte total is one atomic, updated through
//! [`Quotas::admit`] while the key's shard is locked.
//!
//! Expiry: an expired key is answered as absent and removed when touched (lazy), and every call
//! also removes up to [`SWEEP_STEP`] keys already expired from its shard, found in O(log n) by an
//! index ordered by expiry; a write that might go over the namespace quota first removes all of
//! the namespace's expired keys. So expired keys neither pin memory in a namespace in use nor
//! ever cause a quota error.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Instant;

use super::ops::{self, Change, Entry, Op, Reply};
use super::{Answer, Backend, KeyPage, Namespace, Quotas};

/// Shards per namespace: a power of two well above the worker count of most hosts.
const SHARDS: usize = 16;
/// Most expired keys one call removes from its shard besides its own key.
const SWEEP_STEP: usize = 8;

/// The `memory` backend.
pub struct Memory {
    quotas: Quotas,
    spaces: RwLock<HashMap<Namespace, Arc<Space>>>,
}

/// One namespace.
struct Space {
    shards: [Mutex<Shard>; SHARDS],
    hasher: RandomState,
    used: AtomicU64,
}

#[derive(Default)]
struct Shard {
    entries: HashMap<String, Entry>,
    /// `(expires_at, key)` of every entry with a TTL, soonest first.
    expiries: BTreeSet<(u64, String)>,
}

impl Memory {
    pub fn new(quotas: Quotas) -> Self {
        Memory {
            quotas,
            spaces: RwLock::default(),
        }
    }

    fn space(&self, ns: &Namespace) -> Arc<Space> {
        let found = read(&self.spaces).get(ns).cloned();
        found.unwrap_or_else(|| {
            let mut spaces = self.spaces.write().unwrap_or_else(PoisonError::into_inner);
            spaces
                .entry(ns.clone())
                .or_insert_with(|| Arc::new(Space::new()))
                .clone()
        })
    }
}

impl Backend for Memory {
    fn run(&self, ns: &Namespace, key: &str, op: Op, deadline: Instant) -> Answer<Reply> {
        self.quotas.precheck(key, deadline)?;
        let space = self.space(ns);
        let now = ops::now_ms();
        let growth = op.growth(key);
        if growth > 0
            && space.used.load(Ordering::Acquire) + growth > self.quotas.max_namespace_bytes
        {
            space.sweep_all(now);
        }
        let mut shard = space.shard(key);
        let stored = shard.entries.get(key);
        let (reply, change) = ops::apply(op, stored, now)?;
        let mut refused = None;
        let admitted = space
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                self.quotas
                    .admit(key, stored, &change, used)
                    .map_err(|e| refused = Some(e))
                    .ok()
            });
        if admitted.is_err() {
            return Err(refused.expect("set when refused").into());
        }
        shard.write(key, change);
        let freed = shard.sweep(now, SWEEP_STEP);
        space.used.fetch_sub(freed, Ordering::AcqRel);
        Ok(reply)
    }

    fn list_keys(&self, ns: &Namespace, from: Option<&str>, deadline: Instant) -> Answer<KeyPage> {
        self.quotas.precheck("", deadline)?;
        let space = self.space(ns);
        let now = ops::now_ms();
        let mut keys = Vec::new();
        for shard in &space.shards {
            let shard = lock(shard);
            let after = |k: &String| from.is_none_or(|c| k.as_str() > c);
            keys.extend(
                shard
                    .entries
                    .iter()
                    .filter(|(k, e)| e.live(now) && after(k))
                    .map(|(k, _)| k.clone()),
            );
        }
        Ok(KeyPage::of(keys))
    }

    fn usage(&self, ns: &Namespace, deadline: Instant) -> Answer<u64> {
        self.quotas.precheck("", deadline)?;
        let space = self.space(ns);
        space.sweep_all(ops::now_ms());
        Ok(space.used.load(Ordering::Acquire))
    }
}

impl Space {
    fn new() -> Self {
        Space {
            shards: std::array::from_fn(|_| Mutex::default()),
            hasher: RandomState::new(),
            used: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        let i = self.hasher.hash_one(key) as usize % SHARDS;
        lock(&self.shards[i])
    }

    /// Removes every expired key of the namespace, one shard at a time.
    fn sweep_all(&self, now: u64) {
        for shard in &self.shards {
            let freed = lock(shard).sweep(now, usize::MAX);
            self.used.fetch_sub(freed, Ordering::AcqRel);
        }
    }
}

impl Shard {
    /// Writes `change` for `key`, keeping the expiry index in step.
    fn write(&mut self, key: &str, change: Change) {
        let old = match change {
            Change::Keep => return,
            Change::Remove => self.entries.remove(key),
            Change::Put(entry) => {
                if let Some(at) = entry.expires_at {
                    self.expiries.insert((at, key.to_owned()));
                }
                match self.entries.get_mut(key) {
                    Some(slot) => Some(std::mem::replace(slot, entry)),
                    None => self.entries.insert(key.to_owned(), entry),
                }
            }
        };
        if let Some(at) = old.and_then(|e| e.expires_at) {
            // Unless the new entry expires at the same instant, which re-inserted it above.
            let same = self.entries.get(key).and_then(|e| e.expires_at) == Some(at);
            if !same {
                self.expiries.remove(&(at, key.to_owned()));
            }
        }
    }

    /// Removes up to `max` expired keys; the bytes they held.
    fn sweep(&mut self, now: u64, max: usize) -> u64 {
        let mut freed = 0;
        for _ in 0..max {
            match self.expiries.first() {
                Some((at, _)) if *at < now => {}
                _ => break,
            }
            let (_, key) = self.expiries.pop_first().expect("checked above");
            if let Some(entry) = self.entries.remove(&key) {
                freed += entry.size(&key);
            }
        }
        freed
    }
}

/// A panic while a lock was held cannot leave a shard half-written (every write is one map
/// operation after the checks), so a poisoned lock is used as is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::state::conformance::suite!(|quotas| std::sync::Arc::new(Memory::new(quotas)));
}
