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
/// Keeps this much of a freed memory slot resident and zeroes it instead of returning it to the
/// OS: a fresh instance then touches no new pages for a typical guest's stack and data.
const KEEP_RESIDENT: usize = 1 << 20;
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

/// Builds the engine every plugin is compiled for and instantiated in.
pub fn build(cfg: &Config) -> wasmtime::Result<Engine> {
    let slots = instance_slots(cfg);
    // A hibernated connection's slot must give its pages back: kept resident, every slot ever
    // busy at once would hold its share for ever (1,000 Python connections: 2.2 GB instead of
    // 0.4 GB, bench/PROFILES.md).
    let keep_resident = match cfg.hibernate_after {
        Some(_) => 0,
        None => KEEP_RESIDENT,
    };
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
