//! Every budget of a plugin call, in one place: the memory cap, the call's deadline and the
//! epoch check that enforces it, the shutdown cut-off, the store that carries them, and (in
//! `waits`) the WASI waits clamped to the budget.
//!
//! How a budget holds, whatever the guest does:
//! - running wasm: each epoch tick ([`TICK`]) asks the wall clock whether the call is overdue
//!   and interrupts it if so, so the deadline holds however late the ticker runs;
//! - a guest blocked in the host (a WASI sleep or poll): the epoch cannot interrupt it, so the
//!   wait itself ends by the deadline and the next epoch check stops the guest;
//! - memory: growth past `--memory-limit` is refused, and remembered so the trap that usually
//!   follows is reported as the memory cap;
//! - shutdown: past the [`CutOff`] every running call is overdue, and no new one starts.

mod waits;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use wasmtime::{Engine, ResourceLimiter, Store, UpdateDeadline};

use super::host_api::HostState;

pub use waits::{link_capped_clock, link_capped_poll};

/// How often the epoch advances: the resolution of every call's deadline.
pub const TICK: Duration = Duration::from_millis(5);

/// Elements one table may hold (large interpreters' function tables included).
pub const TABLE_ELEMENTS: usize = 100_000;

/// When shutdown cuts every running call off; unset until shutdown begins. One per server,
/// shared by every store (clones share the instant).
#[derive(Clone, Debug, Default)]
pub struct CutOff(Arc<OnceLock<Instant>>);

impl CutOff {
    /// Fixes the instant; the first call wins.
    pub fn set(&self, at: Instant) {
        // A later call (a second shutdown path) must not move a cut-off stores already read.
        let _ = self.0.set(at);
    }

    pub fn at(&self) -> Option<Instant> {
        self.0.get().copied()
    }

    /// Whether the cut-off has passed at `now`.
    fn passed(&self, now: Instant) -> bool {
        self.at().is_some_and(|cut| cut <= now)
    }
}

/// One store's budgets, kept in its `HostState`: the memory limiter, the epoch callback and the
/// capped waits all read them.
pub struct Limits {
    /// `--memory-limit`, for every memory of the instance.
    memory: usize,
    /// Whether a memory growth was refused, so a trap that follows it is reported as the memory
    /// cap, not as whatever the guest did next.
    memory_hit: bool,
    /// When the current call's time budget ends; set by [`start_call`].
    deadline: Instant,
    /// The server's shutdown cut-off, which ends every call's budget early.
    cutoff: CutOff,
}

impl Limits {
    /// Budgets for a new store; it has no call budget until [`start_call`].
    pub fn new(memory: usize, cutoff: CutOff) -> Self {
        Limits {
            memory,
            memory_hit: false,
            deadline: Instant::now(),
            cutoff,
        }
    }

    /// What is left of the current call's budget: up to its deadline, or the cut-off if that
    /// comes first.
    pub fn left(&self) -> Duration {
        let end = match self.cutoff.at() {
            Some(cut) => cut.min(self.deadline),
            None => self.deadline,
        };
        end.saturating_duration_since(Instant::now())
    }

    /// Whether the current call has used up its budget (or shutdown is cutting every call off).
    pub fn overdue(&self) -> bool {
        self.left().is_zero()
    }

    /// Whether the instance was refused memory past `--memory-limit`.
    pub fn memory_hit(&self) -> bool {
        self.memory_hit
    }

    /// A call budget of `timeout` from now, without a store (unit tests of host imports).
    #[cfg(test)]
    pub(crate) fn start_for_test(&mut self, timeout: Duration) {
        self.deadline = Instant::now() + timeout;
    }

    /// Forgets what the last instance ran into, for a state recycled into a new instance.
    pub(super) fn reset(&mut self) {
        self.memory_hit = false;
    }
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory {
            self.memory_hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= TABLE_ELEMENTS)
    }
}

/// A store for one plugin instance with `state`'s budgets enforced: the memory cap as its
/// limiter, and the deadline checked at every epoch tick. Until [`start_call`] any guest code
/// run in it is interrupted at its first epoch check: it has no budget yet.
pub fn new_store(engine: &Engine, state: HostState) -> Store<HostState> {
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
    // Every epoch tick during a call asks the wall clock whether the call is over budget,
    // so the deadline holds however late the ticker runs, and after a guest's clamped sleep.
    store.epoch_deadline_callback(|ctx| {
        Ok(if ctx.data().limits.overdue() {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::Continue(1)
        })
    });
    store
}

/// Why a call was not started.
#[derive(Debug, thiserror::Error)]
#[error("shutdown has cut every call off: this one was not started")]
pub struct CutOffPassed;

/// Starts one call on `store`, for connection `conn` (0 outside connections), with `timeout`
/// of wall-clock time: tags the plugin's log lines with `conn`, fixes the deadline, and arms
/// the epoch check for the next tick. Made once per call, before a fresh instance is made
/// too, so its start-up code runs within the call's budget.
///
/// Past the shutdown cut-off the call is refused before any guest code runs: entering the
/// guest would only buy it one more epoch tick, and each of the connections shutdown is
/// closing would add its own. Returns the instant the call started (its deadline's base, and
/// the start of its duration in the metrics), read once.
pub fn start_call(
    store: &mut Store<HostState>,
    conn: u64,
    timeout: Duration,
) -> Result<Instant, CutOffPassed> {
    let now = Instant::now();
    let state = store.data_mut();
    if state.limits.cutoff.passed(now) {
        return Err(CutOffPassed);
    }
    state.limits.deadline = now + timeout;
    state.tag_conn(conn);
    store.set_epoch_deadline(1);
    Ok(now)
}

#[cfg(test)]
mod tests;
