//! Microbenchmarks of the plugin call path, through the same `WorkerPool` the server's workers
//! use: a component call on a reused instance (`--isolation worker`), the same for a core-ABI
//! module, a pristine instance for every message (`--isolation message`: reset in place, and
//! made anew with `--no-reset`), and the native echo baseline (no Wasm) as the floor.
//!
//! Needs `plugins/echo.wasm` (`cargo xtask plugins`). Run with
//! `cargo bench -p sandport --bench call_path`; `-- --test` runs each case once, as a smoke test.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use sandport::plugin::ConnInstances;

mod common;
use common::{case_pool, conn, core_echo, echo_component, message, Case, CASES};

/// Benchmarks `pool.on_message` with a `size`-byte message, after checking it echoes.
fn bench_case(c: &mut Criterion, name: &str, size: usize, mut pool: Case) {
    let conn = conn();
    let mut own = ConnInstances::default();
    let msg = message(size);
    let out = pool
        .on_message(&msg, &conn, &mut own)
        .unwrap_or_else(|e| panic!("{name}: the call failed: {}", e.cause));
    assert_eq!(out.reply.as_deref(), Some(&msg[..]), "{name}: not an echo");

    let mut group = c.benchmark_group("call_path");
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::new(name, format!("{size}B")), |b| {
        b.iter(|| {
            pool.on_message(black_box(&msg), &conn, &mut own)
                .expect("call")
        })
    });
    group.finish();
}

fn call_path(c: &mut Criterion) {
    let component = echo_component();
    let core = core_echo();
    for &(name, size) in CASES {
        let pool = case_pool(name, &component, &core).expect("every case has a pool");
        bench_case(c, name, size, pool);
    }
    let _ = std::fs::remove_dir_all(core.parent().expect("in a folder"));
}

criterion_group!(benches, call_path);
criterion_main!(benches);
