//! The one wasmtime engine: pooling allocator sized from the config, epochs, and the ticker.
//! What a call may spend is [`super::limits`]'s; this only sizes the pool and keeps time.

use wasmtime::{Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::limits::{TABLE_ELEMENTS, TICK};
use crate::config::{Config, Isolation};

/// Per-component allowances in the pool. Components from ordinary toolchains use a handful of
/// core instances and tables and one or two memories; a plugin needing more fails at load.
const CORE_INSTANCES_PER_COMPONENT: u32 = 32;
const MEMORIES_PER_COMPONENT: u32 = 2;
const TABLES_PER_COMPONENT: u32 = 8;
/// Keeps up to this much of a freed memory slot's dirty pages resident, reset by copying the
/// image back instead of returning them to the OS: the next instance then takes no page fault
/// (and no cross-core TLB flush) for them. Under `message` isolation an interpreter dirties
/// hundreds of scattered pages per call (CPython: 4.8x the msg/s of 1 MiB, bench/PROFILES.md);
/// the pool has 2 x workers + 1 slots per plugin, so at most that many times this stays resident.
const KEEP_RESIDENT_FRESH: usize = 64 << 20;
/// What a slot keeps when any plugin runs under `connection` isolation: there are
/// `--max-connections` slots, and each slot ever busy would keep its share for ever.
const KEEP_RESIDENT_PER_CONNECTION: usize = 1 << 20;
/// Address space above which slots stop reserving 4 GiB each (and use bounds checks instead).
const RESERVATION_BUDGET: u64 = 32 << 40;

/// Component instances that can be alive at once: what the pool must hold.
pub fn instance_slots(cfg: &Config) -> u32 {
    let workers = cfg.workers as u64;
    // Per plugin: each worker runs one call at a time; an instance being replaced after an
    // error can overlap with its successor, and loading instantiates each plugin once to check
    // it. Under `connection`, each connection holds one more.
    let slots: u64 = (cfg.plugins.iter())
        .map(|p| match cfg.isolation_for(&super::name_of(p)) {
            Isolation::Message | Isolation::Worker => workers * 2 + 1,
            Isolation::Connection => cfg.max_connections as u64 + workers * 2 + 1,
        })
        .sum();
    slots.min(u32::MAX as u64 / CORE_INSTANCES_PER_COMPONENT as u64) as u32
}

/// How much of a freed memory slot stays resident (see [`KEEP_RESIDENT_FRESH`]).
fn keep_resident(cfg: &Config) -> usize {
    let per_connection = std::iter::once(&cfg.isolation)
        .chain(cfg.isolation_of.values())
        .any(|i| *i == Isolation::Connection);
    match (cfg.hibernate_after, per_connection) {
        // A hibernated connection's slot must give its pages back: kept resident, every slot
        // ever busy at once would hold its share for ever (1,000 Python connections: 2.2 GB
        // instead of 0.4 GB, bench/PROFILES.md).
        (Some(_), _) => 0,
        (None, true) => KEEP_RESIDENT_PER_CONNECTION,
        (None, false) => KEEP_RESIDENT_FRESH,
    }
}

/// Builds the engine every plugin is compiled for and instantiated in.
pub fn build(cfg: &Config) -> wasmtime::Result<Engine> {
    let slots = instance_slots(cfg);
    let keep_resident = keep_resident(cfg);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(slots)
        .total_core_instances(slots * CORE_INSTANCES_PER_COMPONENT)
        .total_memories(slots * MEMORIES_PER_COMPONENT)
        .total_tables(slots * TABLES_PER_COMPONENT)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .table_elements(TABLE_ELEMENTS)
        .max_memory_size(cfg.memory_limit)
        .linear_memory_keep_resident(keep_resident)
        .table_keep_resident(keep_resident.min(64 << 10))
        // Where the kernel has PAGEMAP_SCAN (Linux 6.7+), reset only the pages a guest dirtied
        // instead of zeroing all of KEEP_RESIDENT after every instance.
        .pagemap_scan(Enabled::Auto);

    let mut wc = wasmtime::Config::new();
    wc.wasm_component_model(true)
        .epoch_interruption(true)
        // sandport calls plugins synchronously; the async machinery only costs time per call.
        .concurrency_support(false)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let memories = slots as u64 * MEMORIES_PER_COMPONENT as u64;
    if memories * (4u64 << 30) > RESERVATION_BUDGET {
        // Many slots (one per connection): reserve only what the memory cap allows.
        wc.memory_reservation(cfg.memory_limit as u64)
            .memory_guard_size(64 << 10);
    }
    Engine::new(&wc)
}

/// Advances the engine's epoch every [`TICK`] until the engine is dropped. Each advance makes
/// running calls check their deadline (see `limits::new_store`).
pub fn spawn_ticker(engine: &Engine) -> std::io::Result<std::thread::JoinHandle<()>> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("sandport-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(TICK);
            let Some(engine) = weak.upgrade() else {
                return;
            };
            engine.increment_epoch();
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fresh_instances_keep_their_dirty_pages_unless_slots_follow_connections() {
        let mut cfg = Config::default();
        assert_eq!(keep_resident(&cfg), KEEP_RESIDENT_FRESH);
        cfg.isolation = Isolation::Worker;
        assert_eq!(keep_resident(&cfg), KEEP_RESIDENT_FRESH);
        cfg.isolation_of
            .insert("chat".into(), Isolation::Connection);
        assert_eq!(keep_resident(&cfg), KEEP_RESIDENT_PER_CONNECTION);
        cfg.isolation_of.clear();
        cfg.isolation = Isolation::Connection;
        assert_eq!(keep_resident(&cfg), KEEP_RESIDENT_PER_CONNECTION);
        cfg.hibernate_after = Some(Duration::from_secs(1));
        assert_eq!(keep_resident(&cfg), 0);
    }
}
