//! What the call-path benchmarks share: the plugins they call (the example `echo.wasm` and a
//! core-ABI echo written here), pools built the way a worker builds them, and the inputs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sandport::config::Isolation;
use sandport::plugin::bindings::Connection;
use sandport::plugin::{CallError, ConnInstances, CutOff, Outcome, Plugins, WorkerPool};
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

pub fn echo_component() -> PathBuf {
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

/// The contract 0.2 echo that makes `ops` state calls per message (`tests/plugins`, built by
/// `cargo xtask plugins`).
pub fn statebench() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/plugins/statebench.wasm");
    if !path.is_file() {
        panic!(
            "{} is missing: build the test plugins first with `cargo xtask plugins`",
            path.display()
        );
    }
    path
}

pub fn core_echo() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sandport-call-path-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a temporary folder");
    let path = dir.join("core_echo.wat");
    std::fs::write(&path, CORE_ECHO).expect("write the core echo module");
    path
}

/// The config `sandport call` would use for `plugin` alone, with the compile cache.
fn config(plugin: &Path, isolation: Isolation) -> Config {
    let cfg = Config {
        plugins: vec![plugin.to_path_buf()],
        isolation,
        ..Config::default()
    };
    cfg.validate()
        .unwrap_or_else(|e| panic!("config for {}: {e}", plugin.display()));
    cfg
}

/// What a case calls: a worker's pool, or (`Native`) the message copied into the reply with no
/// Wasm, as the server's `--bench-native-echo` baseline answers: the floor of every other case.
pub enum Case {
    Pool(WorkerPool),
    Native,
}

impl Case {
    pub fn on_message(&mut self, m: &[u8], c: &Connection, own: &mut ConnInstances) -> Reply {
        match self {
            Case::Pool(pool) => pool.on_message(c, own, m),
            Case::Native => Ok(Outcome {
                reply: Some(m.to_vec()),
                close: false,
            }),
        }
    }
}

pub type Reply = Result<Outcome, CallError>;

pub fn pool(plugin: &Path, isolation: Isolation) -> Case {
    pool_with(plugin, isolation, &[])
}

/// A pool of `plugin` with its `--config` `settings` (key, value).
pub fn pool_with(plugin: &Path, isolation: Isolation, settings: &[(&str, &str)]) -> Case {
    pool_of(config(plugin, isolation), plugin, settings)
}

/// `--isolation message` with `--no-reset`: a new instance made for every message.
fn pool_no_reset(plugin: &Path) -> Case {
    let mut cfg = config(plugin, Isolation::Message);
    cfg.reset = false;
    pool_of(cfg, plugin, &[])
}

fn pool_of(mut cfg: Config, plugin: &Path, settings: &[(&str, &str)]) -> Case {
    let name = sandport::plugin::name_of(plugin);
    for (key, value) in settings {
        cfg.plugin_config
            .entry(name.clone())
            .or_default()
            .insert(key.to_string(), value.to_string());
    }
    let plugins = Arc::new(Plugins::load(&cfg, CutOff::default()).unwrap_or_else(|e| {
        panic!(
            "loading {}: {}",
            plugin.display(),
            sandport::error::report(&e)
        )
    }));
    Case::Pool(WorkerPool::new(plugins, None))
}

pub fn conn() -> Connection {
    Connection {
        id: 1,
        peer: "127.0.0.1:40000".into(),
        local: "127.0.0.1:7000".into(),
    }
}

pub fn message(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Every case the call-path benchmarks measure: a name and a message size.
pub const CASES: &[(&str, usize)] = &[
    ("component_reused", 64),
    ("component_reused", 1024),
    ("core_reused", 64),
    ("core_reused", 1024),
    // `--isolation message`: a pristine instance per message, the worker's own reset in place
    // (the default) ...
    ("component_fresh", 64),
    ("core_fresh", 64),
    // ... or a new one made for each (`--no-reset`).
    ("component_new", 64),
    // Contract 0.2: the same reused echo, called by connection id (`statebench`, no state op).
    ("v2_component_reused", 64),
    ("v2_component_fresh", 64),
    // ... and with 16 state ops (8 set + get pairs of 64-byte values) per message: the
    // difference from `v2_component_reused`, over 16, is one state call from a guest.
    ("v2_state_16_ops", 64),
    ("native_echo", 64),
];

/// The case `name` calls: `component` is `echo.wasm`, `core` the core-ABI echo.
pub fn case_pool(name: &str, component: &Path, core: &Path) -> Option<Case> {
    Some(match name {
        "component_reused" => pool(component, Isolation::Worker),
        "core_reused" => pool(core, Isolation::Worker),
        "component_fresh" => pool(component, Isolation::Message),
        "core_fresh" => pool(core, Isolation::Message),
        "component_new" => pool_no_reset(component),
        "v2_component_reused" => pool(&statebench(), Isolation::Worker),
        "v2_component_fresh" => pool(&statebench(), Isolation::Message),
        "v2_state_16_ops" => pool_with(&statebench(), Isolation::Worker, &[("ops", "16")]),
        "native_echo" => Case::Native,
        _ => return None,
    })
}
