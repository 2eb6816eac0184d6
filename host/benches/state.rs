//! Microbenchmarks of the state backends on their hot path: get, set and increment of a 64-byte
//! value (the host side of BENCHMARKS' "state get/set from a guest <= 1 µs" target, without the
//! guest), on `memory` and on `redis://` (a `redis-server` of its own on a free loopback port,
//! so the figure is one local round trip plus the script: what a Redis on the same machine
//! costs a worker per state call).
//!
//! Run with `cargo bench -p sandport --bench state`; `-- --test` runs each case once.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

use sandport::state::{open, Namespace, Quotas};

#[path = "../../tests/support/redis_server.rs"]
mod redis_server;

fn memory(c: &mut Criterion) {
    cases(c, "state_memory", "memory");
}

fn redis(c: &mut Criterion) {
    let server = redis_server::RedisServer::start();
    cases(c, "state_redis", &server.url());
}

fn cases(c: &mut Criterion, group: &str, spec: &str) {
    let state = open(spec, Quotas::default()).unwrap();
    let ns = Namespace::plugin("bench").unwrap();
    let value = [7u8; 64];
    let deadline = Instant::now() + Duration::from_secs(3600);
    state.set(&ns, "key", &value, None, deadline).unwrap();
    let mut group = c.benchmark_group(group);
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
    group.bench_function("increment", |b| {
        b.iter(|| black_box(state.increment(&ns, black_box("n"), 1, deadline).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, memory, redis);
criterion_main!(benches);
