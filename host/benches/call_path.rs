//! Microbenchmarks of the plugin call path, through the same `WorkerPool` the server's workers
//! use: a component call on a reused instance (`--isolation worker`), the same for a core-ABI
//! module, a fresh instance for every message (`--isolation message`), and the native echo
//! baseline (no Wasm) as the floor.
//!
//! Needs `plugins/echo.wasm` (`cargo xtask plugins`). Run with
//! `cargo bench -p sandport --bench call_path`; `-- --test` runs each case once, as a smoke test.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use sandport::cli::LoadArgs;
use sandport::config::{ByteSize, Isolation};
use sandport::plugin::bindings::Connection;
use sandport::plugin::{ConnInstances, Plugins, WorkerPool};
use sandport::Config;

/// A core-ABI echo (docs/core-abi.md): replies with the message buffer itself. Only one buffer
/// is live at a time (the message, handed back as the reply, which the host frees after reading
/// it), so freeing resets the bump allocator and a reused instance never runs out of memory.
const CORE_ECHO: &str = r#"
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (func (export "sandport_abi_version") (result i32) (i32.const 1))
  (func (export "sandport_alloc") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    (local.get $p))
  (func (export "sandport_free") (param i32 i32)
    (global.set $heap (i32.const 1024)))
  (func (export "sandport_on_message") (param $conn i64) (param $ptr i32) (param $len i32) (result i32)
    (i32.store (i32.const 0) (i32.const 1))
    (i32.store (i32.const 4) (local.get $ptr))
    (i32.store (i32.const 8) (local.get $len))
    (i32.const 0)))
"#;

fn echo_component() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/echo.wasm");
    if !path.is_file() {
        panic!(
            "{} is missing: build the example plugins first with `cargo xtask plugins` \
             (or bench/run.sh, which builds echo.wasm)",
            path.display()
        );
    }
    path
}

fn core_echo() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sandport-call-path-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a temporary folder");
    let path = dir.join("core_echo.wat");
    std::fs::write(&path, CORE_ECHO).expect("write the core echo module");
    path
}

/// The config `sandport call` would use for `plugin` alone, with the compile cache.
fn config(plugin: &Path, isolation: Isolation) -> Config {
    let load = LoadArgs {
        plugins_dir: PathBuf::from("plugins"),
        config: Vec::new(),
        timeout_ms: 1000,
        memory_limit: ByteSize(128 << 20),
        cache_dir: None,
        no_cache: false,
    };
    let mut cfg = load
        .config_for_one(plugin)
        .unwrap_or_else(|e| panic!("config for {}: {e}", plugin.display()));
    cfg.isolation = isolation;
    cfg
}

fn pool(plugin: &Path, isolation: Isolation, native: bool) -> WorkerPool {
    let cfg = config(plugin, isolation);
    let plugins = Arc::new(
        Plugins::load(&cfg).unwrap_or_else(|e| panic!("loading {}: {e}", plugin.display())),
    );
    if native {
        WorkerPool::native_echo(plugins)
    } else {
        WorkerPool::new(plugins, isolation)
    }
}

fn conn() -> Connection {
    Connection {
        id: 1,
        peer: "127.0.0.1:40000".into(),
        local: "127.0.0.1:7000".into(),
    }
}

fn message(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Benchmarks `pool.on_message` with a `size`-byte message, after checking it echoes.
fn bench_case(c: &mut Criterion, name: &str, size: usize, mut pool: WorkerPool) {
    let conn = conn();
    let mut own = ConnInstances::default();
    let msg = message(size);
    let out = pool
        .on_message(&conn, &mut own, &msg)
        .unwrap_or_else(|e| panic!("{name}: the call failed: {}", e.cause));
    assert_eq!(out.reply.as_deref(), Some(&msg[..]), "{name}: not an echo");

    let mut group = c.benchmark_group("call_path");
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::new(name, format!("{size}B")), |b| {
        b.iter(|| {
            pool.on_message(&conn, &mut own, black_box(&msg))
                .expect("call")
        })
    });
    group.finish();
}

fn call_path(c: &mut Criterion) {
    let component = echo_component();
    let core = core_echo();
    for size in [64, 1024] {
        bench_case(
            c,
            "component_reused",
            size,
            pool(&component, Isolation::Worker, false),
        );
    }
    for size in [64, 1024] {
        bench_case(
            c,
            "core_reused",
            size,
            pool(&core, Isolation::Worker, false),
        );
    }
    bench_case(
        c,
        "component_fresh",
        64,
        pool(&component, Isolation::Message, false),
    );
    bench_case(c, "core_fresh", 64, pool(&core, Isolation::Message, false));
    bench_case(
        c,
        "native_echo",
        64,
        pool(&component, Isolation::Message, true),
    );
    let _ = std::fs::remove_dir_all(core.parent().expect("in a folder"));
}

criterion_group!(benches, call_path);
criterion_main!(benches);
