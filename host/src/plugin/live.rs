//! The live chain: the version of the plugin chain new work gets, swapped whole by the reloader
//! (`live/reloader.rs`) while workers serve. A worker reads one atomic per message to see
//! whether a new version came, and takes the lock only then.

mod reloader;
mod settle;
mod watch;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

pub use reloader::{Reloader, Trigger};
pub use settle::Settle;
pub use watch::Watched;

use super::registry::Plugins;

/// The most stages a chain may have once the server runs: the per-stage counters are made for
/// this many at start, so a folder that grows past it is refused.
pub const MAX_STAGES: usize = 32;

/// The chain version serving now, and how many swaps made it.
pub struct Live {
    current: RwLock<Arc<Plugins>>,
    /// Bumped under the write lock by every swap; workers compare it between messages.
    generation: AtomicU64,
    /// Reload outcomes per plugin, for `/metrics`.
    reloads: Reloads,
}

/// How a reload of one plugin file ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Compiled, checked and swapped in.
    Loaded,
    /// Refused (not Wasm, wrong world, refused import, cut short...): the old version serves on.
    Refused,
    /// Gone from the folder, and so from the chain.
    Removed,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Loaded => "loaded",
            Outcome::Refused => "refused",
            Outcome::Removed => "removed",
        }
    }
}

/// Reload outcomes counted per plugin name (a handful of rows: one per file and outcome).
#[derive(Debug, Default)]
pub struct Reloads(Mutex<BTreeMap<(String, Outcome), u64>>);

impl Reloads {
    pub fn count(&self, plugin: &str, outcome: Outcome) {
        let mut rows = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *rows.entry((plugin.to_string(), outcome)).or_default() += 1;
    }

    /// Every (plugin, outcome, count), in name order.
    pub fn rows(&self) -> Vec<(String, &'static str, u64)> {
        let rows = self.0.lock().unwrap_or_else(|e| e.into_inner());
        rows.iter()
            .map(|((p, o), n)| (p.clone(), o.label(), *n))
            .collect()
    }
}

impl Live {
    pub fn new(first: Arc<Plugins>) -> Arc<Live> {
        Arc::new(Live {
            current: RwLock::new(first),
            generation: AtomicU64::new(0),
            reloads: Reloads::default(),
        })
    }

    /// How many swaps have happened; cheap enough to read before every message.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The version serving now, with its generation.
    pub fn current(&self) -> (u64, Arc<Plugins>) {
        let guard = self.current.read().unwrap_or_else(|e| e.into_inner());
        (self.generation.load(Ordering::Acquire), guard.clone())
    }

    /// Makes `next` the version new work gets; returns the generation it has.
    pub fn swap(&self, next: Arc<Plugins>) -> u64 {
        let mut guard = self.current.write().unwrap_or_else(|e| e.into_inner());
        *guard = next;
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    pub fn reloads(&self) -> &Reloads {
        &self.reloads
    }
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}
