//! sandport patch: every instance of a store put back, in place, into the state instantiation
//! left it in (see `vm/instance/reset.rs`), so a host can give each call a pristine instance
//! without making a new one.

use crate::Store;
use crate::prelude::*;
use crate::runtime::vm::InstanceResetPoint;
use crate::runtime::vm::thread_faults;
use crate::store::{InstanceId, StoreInstanceKind, StoreOpaque};
use alloc::vec::Vec;

/// A store's instances as instantiation left them, taken by [`Store::reset_point`].
pub struct ResetPoint {
    instances: Vec<(InstanceId, InstanceResetPoint)>,
    /// How many instances (the empty ones included) the store had.
    count: usize,
    /// The thread and its page-fault count when the last reset started: if neither has changed
    /// when the next one starts, no page became writable in between (that reset and the call
    /// after it), and the memories reset only the pages their last scan found (see
    /// `MemoryImageSlot::sandport_reset`). One `getrusage` per reset, not two.
    faults_at_last_reset: Option<(u64, u64)>,
    /// Whether the last reset scanned the memories (see [`ResetPoint::last_reset_scanned`]).
    last_scanned: bool,
}

impl ResetPoint {
    /// Whether the last [`Store::reset`] scanned the memories for the pages the call wrote,
    /// rather than resetting only the pages the scan before found (which it does when the
    /// thread took no page fault since).
    pub fn last_reset_scanned(&self) -> bool {
        self.last_scanned
    }
}

impl<T> Store<T> {
    /// Copies the state of every instance in this store, to be taken right after
    /// instantiation; `None` when a reset could not restore all of it exactly (GC references,
    /// shared memories, host-made memories, tables or globals, no `PAGEMAP_SCAN`).
    pub fn reset_point(&mut self) -> Option<ResetPoint> {
        self.inner.reset_point()
    }

    /// Puts every instance back to `point`, which this store's [`Store::reset_point`] gave:
    /// memories (contents and size), globals, tables, dropped segments and, for components,
    /// the handle tables. `Ok(false)` when the guest holds what a reset cannot take back (a
    /// live resource handle, a trap, an instance made since): the instances must then not run
    /// again. The store's data (`T`), fuel and epoch deadline are the caller's.
    pub fn reset(&mut self, point: &mut ResetPoint) -> Result<bool> {
        let now = thread_faults();
        let clean = now.is_some() && point.faults_at_last_reset == now;
        point.faults_at_last_reset = None;
        point.last_scanned = !clean;
        let reset = self.inner.reset(point, clean)?;
        if reset {
            point.faults_at_last_reset = now;
        }
        Ok(reset)
    }
}

impl StoreOpaque {
    fn reset_point(&mut self) -> Option<ResetPoint> {
        if self.gc_store.is_some() {
            return None;
        }
        #[cfg(feature = "component-model")]
        if !self.sandport_components_idle(false) {
            return None;
        }
        let engine = self.engine().clone();
        let mut instances = Vec::new();
        for (id, instance) in self.instances.iter() {
            // Every store has an empty one (the default callee); one made for a host-made memory,
            // table or global holds state the guest may change.
            if let StoreInstanceKind::Dummy = instance.kind {
                let m = instance.handle.get().env_module();
                if m.num_defined_memories() + m.num_defined_tables() + m.num_defined_globals() > 0 {
                    return None;
                }
                continue;
            }
            let point = InstanceResetPoint::new(instance.handle.get(), engine.allocator())?;
            instances.push((id, point));
        }
        Some(ResetPoint {
            instances,
            count: self.instances.len(),
            faults_at_last_reset: None,
            last_scanned: false,
        })
    }

    fn reset(&mut self, point: &mut ResetPoint, clean: bool) -> Result<bool> {
        if self.instances.len() != point.count || self.gc_store.is_some() {
            return Ok(false);
        }
        #[cfg(feature = "component-model")]
        if !self.sandport_components_idle(true) {
            return Ok(false);
        }
        // Borrowed apart, not cloned: the engine's count is shared by every thread.
        let StoreOpaque {
            engine, instances, ..
        } = self;
        for (id, instance) in &mut point.instances {
            let handle = instances[*id].handle.get_mut();
            if !handle.sandport_reset(instance, engine.allocator(), engine.tunables(), clean)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
