//! A loaded plugin and a chain of them (one version of the chain): what every call needs to
//! make an instance and run it. `loader.rs` makes them, at start and at every reload.

use crate::metrics::Ops;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::{format_err, Engine, Store};

use super::bindings::{v2, HandlerPre};
use super::core_abi::CorePlugin;
use super::error::PluginError;
use super::host_api::HostState;
use super::instance::Handle;
use super::limits::{self, CutOff, Limits};
use super::loader::Loader;
use super::services::Services;
use crate::config::{Config, Isolation};
use crate::error::Error;
use crate::server::messaging::Messenger;
use crate::state::{Backend, Namespace};

/// One loaded plugin, ready to instantiate cheaply any number of times.
pub struct Plugin {
    /// File name without `.wasm`: the name in logs and in `--config`.
    pub name: Arc<str>,
    pub path: PathBuf,
    /// Imports resolved and exports checked once, so instantiation does no lookups.
    pub kind: PluginKind,
    /// This plugin's `--config` values, shared by all its instances.
    pub config: Arc<BTreeMap<String, String>>,
    /// What it imports (`wasi:cli/stdout@0.2.6`, `sandport::log`, ...), for `sandport check`.
    pub imports: Vec<String>,
    /// The file's size, and how long reading, compiling and checking it took.
    pub size: usize,
    pub load_time: Duration,
    /// Whether the compiled code came from the cache.
    pub cached: bool,
    /// The start of the SHA-256 of the file's bytes: which version of it this is, in logs.
    pub hash: Arc<str>,
    /// Its own state namespace (`None` only for a 0.1.0 component, which has no state), and the
    /// shared ones the operator gave it (`--shared-state`).
    pub namespace: Option<Namespace>,
    pub shared: Arc<BTreeSet<String>>,
    /// What gets a fresh instance of it (`--isolation`, or its own `--isolation-of`).
    pub isolation: Isolation,
}

/// The two kinds of plugin file, each pre-linked.
pub enum PluginKind {
    /// A component implementing the `handler` world of contract 0.1.0.
    Component(HandlerPre<HostState>),
    /// A component implementing the `handler` world of contract 0.2.0.
    ComponentV2(v2::HandlerPre<HostState>),
    /// A core module implementing the core ABI (`docs/core-abi.md`).
    Core(CorePlugin),
}

impl PluginKind {
    pub fn describe(&self) -> &'static str {
        match self {
            PluginKind::Component(_) => "component (world sandport:plugin/handler@0.1.0)",
            PluginKind::ComponentV2(_) => "component (world sandport:plugin/handler@0.2.0)",
            PluginKind::Core(core) if core.version() == Some(2) => {
                "core module (sandport core ABI version 2)"
            }
            PluginKind::Core(_) => "core module (sandport core ABI version 1)",
        }
    }
}

/// The chain of plugins and what every call of theirs needs.
pub struct Plugins {
    pub engine: Engine,
    /// Shared with the chain versions before and after a reload that left the plugin as it was.
    pub chain: Vec<Arc<Plugin>>,
    /// The per-call time budget.
    pub timeout: Duration,
    pub memory_limit: usize,
    /// `--max-reply-bytes`: a larger reply is a failed call.
    pub max_reply_bytes: usize,
    /// Under `--isolation message`, instances are reset in place between calls (`--no-reset`).
    pub reset: bool,
    /// Read by every store: once shutdown sets it, every call past it is cut off.
    cutoff: CutOff,
    /// The host state every 0.2 plugin's namespaces live in (`--state`).
    pub state: Arc<dyn Backend>,
    /// Every namespace the operator shares (`--shared-state`).
    all_shared: Arc<BTreeSet<String>>,
    /// The state and messaging operations plugins called, for `/metrics`.
    pub ops: Arc<Ops>,
}

/// What the loader shares with the [`Plugins`] it makes (`loader.rs` builds them).
pub(super) struct Parts {
    pub engine: Engine,
    pub timeout: Duration,
    pub memory_limit: usize,
    pub max_reply_bytes: usize,
    pub reset: bool,
    pub cutoff: CutOff,
    pub state: Arc<dyn Backend>,
    pub all_shared: Arc<BTreeSet<String>>,
}

impl Plugins {
    pub(super) fn from_parts(parts: Parts, chain: Vec<Arc<Plugin>>) -> Plugins {
        Plugins {
            engine: parts.engine,
            chain,
            timeout: parts.timeout,
            memory_limit: parts.memory_limit,
            max_reply_bytes: parts.max_reply_bytes,
            reset: parts.reset,
            cutoff: parts.cutoff,
            state: parts.state,
            all_shared: parts.all_shared,
            ops: Arc::default(),
        }
    }
}

/// Which kind of Wasm binary a file is, from its 8-byte header.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Component,
    CoreModule,
}

pub(super) fn kind_of(bytes: &[u8]) -> Result<Kind, PluginError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(PluginError::NotWasm);
    }
    // Core modules have version 1; components carry version 0xd with layer 1.
    match bytes[4..8] {
        [1, 0, 0, 0] => Ok(Kind::CoreModule),
        [_, _, 1, 0] => Ok(Kind::Component),
        _ => Err(PluginError::Invalid(format_err!(
            "unknown binary version {:02x?}",
            &bytes[4..8]
        ))),
    }
}

impl Plugins {
    /// Compiles and checks every plugin of the chain; the first that cannot be served stops it.
    /// Every call of theirs is cut off once `cutoff` passes (the server sets it at shutdown).
    pub fn load(cfg: &Config, cutoff: CutOff) -> Result<Plugins, Error> {
        Loader::new(cfg, cutoff).and_then(|l| l.load_start(&cfg.plugins))
    }

    /// The same budgets, engine, state and counters around another chain (a reload's).
    pub fn with_chain(&self, chain: Vec<Arc<Plugin>>) -> Plugins {
        Plugins {
            engine: self.engine.clone(),
            chain,
            timeout: self.timeout,
            memory_limit: self.memory_limit,
            max_reply_bytes: self.max_reply_bytes,
            reset: self.reset,
            cutoff: self.cutoff.clone(),
            state: self.state.clone(),
            all_shared: self.all_shared.clone(),
            ops: self.ops.clone(),
        }
    }

    /// The chain's plugin names, by stage.
    pub fn names(&self) -> Vec<Arc<str>> {
        self.chain.iter().map(|p| p.name.clone()).collect()
    }

    /// A store for one instance of `plugin`, under this server's budgets. `reuse` is the state
    /// of an earlier store of the same plugin, made ready by [`HostState::recycle`]; without it
    /// a new state is built, reaching the server's connections through `messenger`.
    pub fn new_store(
        &self,
        plugin: &Plugin,
        reuse: Option<HostState>,
        messenger: Option<&Arc<Messenger>>,
    ) -> Store<HostState> {
        let state = reuse.unwrap_or_else(|| self.new_state(plugin, messenger));
        limits::new_store(&self.engine, state)
    }

    /// A new host state for an instance of `plugin`.
    pub fn new_state(&self, plugin: &Plugin, messenger: Option<&Arc<Messenger>>) -> HostState {
        // 0.1.0 components cannot reach state or other connections: they get none.
        let services = plugin.namespace.clone().map(|own| Services {
            state: self.state.clone(),
            own,
            shared: plugin.shared.clone(),
            all_shared: self.all_shared.clone(),
            messenger: messenger.cloned(),
            ops: self.ops.clone(),
        });
        HostState::new(
            plugin.name.clone(),
            plugin.config.clone(),
            matches!(plugin.kind, PluginKind::Core(_)),
            Limits::new(self.memory_limit, self.cutoff.clone()),
            services,
        )
    }
}

impl Plugin {
    /// A fresh instance's entry points in `store` (made by [`Plugins::new_store`] for this
    /// plugin); [`Instance::new`] wraps them with their store.
    pub fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Handle> {
        Ok(match &self.kind {
            PluginKind::Component(pre) => Handle::Component(pre.instantiate(store)?),
            PluginKind::ComponentV2(pre) => Handle::ComponentV2(pre.instantiate(store)?),
            PluginKind::Core(core) => Handle::Core(core.instantiate(store)?),
        })
    }
}

pub(super) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_tell_components_from_modules_and_non_wasm() {
        assert_eq!(kind_of(b"\0asm\x01\0\0\0").unwrap(), Kind::CoreModule);
        assert_eq!(kind_of(b"\0asm\x0d\0\x01\0").unwrap(), Kind::Component);
        assert!(matches!(kind_of(b"hello world"), Err(PluginError::NotWasm)));
        assert!(matches!(kind_of(b"\0asm"), Err(PluginError::NotWasm)));
        assert!(matches!(
            kind_of(b"\0asm\x02\0\0\0"),
            Err(PluginError::Invalid(_))
        ));
    }
}
