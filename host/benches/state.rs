//! Microbenchmarks of the `memory` state backend on its hot path: get and set of a 64-byte value
//! (the host side of BENCHMARKS' "state get/set from a guest <= 1 µs" target, without the guest).
//!
//! Run with `cargo bench -p sandport --bench state`; `-- --test` runs each case once.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

use sandport::state::{open, Namespace, Quotas};

fn memory(c: &mut Criterion) {
    let state = open("memory", Quotas::default()).unwrap();
    let ns = Namespace::plugin("bench").unwrap();
    let value = [7u8; 64];
    let deadline = Instant::now() + Duration::from_secs(3600);
    state.set(&ns, "key", &value, None, deadline).unwrap();
    let mut group = c.benchmark_group("state_memory");
    group.bench_function("get_64B", |b| {
        b.iter(|| black_box(state.get(&ns, black_box("key"), deadline).unwrap()))
    });
    group.bench_function("set_64B", |b| {
        b.iter(|| {
            state
                .set(&ns, black_box("key"), &value, None, deadline)
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, memory);
criterion_main!(benches);
