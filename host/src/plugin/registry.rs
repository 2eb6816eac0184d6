//! Loading plugins once at start: read, check the kind of file, compile, link against the host's
//! imports, check the `handler` world, and try one instantiation, with a clear error for each.

use crate::metrics::Ops;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{format_err, Engine, Module, Store};

use super::bindings::{v2, Handler, HandlerPre};
use super::cache::{CodeCache, Source};
use super::core_abi::{self, CorePlugin};
use super::engine;
use super::error::PluginError;
use super::host_api::HostState;
use super::instance::{Handle, Instance};
use super::limits::{self, CutOff, Limits};
use super::services::Services;
use crate::config::{Config, Isolation};
use crate::error::Error;
use crate::server::messaging::Messenger;
use crate::state::{self, Backend, Namespace};

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
    pub chain: Vec<Plugin>,
    /// The per-call time budget.
    pub timeout: Duration,
    pub memory_limit: usize,
    /// `--max-reply-bytes`: a larger reply is a failed call.
    pub max_reply_bytes: usize,
    /// Read by every store: once shutdown sets it, every call past it is cut off.
    cutoff: CutOff,
    /// The host state every 0.2 plugin's namespaces live in (`--state`).
    pub state: Arc<dyn Backend>,
    /// Every namespace the operator shares (`--shared-state`).
    all_shared: Arc<BTreeSet<String>>,
    /// The state and messaging operations plugins called, for `/metrics`.
    pub ops: Arc<Ops>,
}

/// The two linkers of components, one per contract version.
struct Linkers {
    v1: Linker<HostState>,
    v2: Linker<HostState>,
}

/// Which kind of Wasm binary a file is, from its 8-byte header.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Component,
    CoreModule,
}

fn kind_of(bytes: &[u8]) -> Result<Kind, PluginError> {
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
        let engine = engine::build(cfg).map_err(runtime("cannot set up the WebAssembly engine"))?;
        let core_linker = core_abi::linker(&engine).map_err(runtime("linking the core ABI"))?;
        let linkers = Linkers::new(&engine)?;
        let state = state::open(&cfg.state, cfg.state_quotas).map_err(Error::State)?;

        let cache = cfg.cache_dir.as_ref().and_then(|dir| {
            CodeCache::open(&dir.join("compiled"))
                .map_err(|e| tracing::warn!("compile cache disabled, every start compiles: {e}"))
                .ok()
        });
        let mut plugins = Plugins {
            engine,
            chain: Vec::new(),
            timeout: cfg.timeout,
            memory_limit: cfg.memory_limit,
            max_reply_bytes: cfg.max_reply_bytes,
            cutoff,
            state,
            all_shared: Arc::new(cfg.shared_state.keys().cloned().collect()),
            ops: Arc::default(),
        };
        // Each tick makes running calls check their deadline (see `limits`); the thread ends
        // with the engine.
        engine::spawn_ticker(&plugins.engine)
            .map_err(|e| Error::Runtime(anyhow::anyhow!("cannot start the epoch thread: {e}")))?;
        for path in &cfg.plugins {
            let name = super::name_of(path);
            let config = cfg.plugin_config.get(&name).cloned().unwrap_or_default();
            let plugin = plugins
                .load_one(
                    &linkers,
                    &core_linker,
                    cache.as_ref(),
                    path,
                    name,
                    config,
                    cfg,
                )
                .map_err(|kind| Error::plugin(path, kind))?;
            tracing::info!(
                plugin = &*plugin.name,
                path = %path.display(),
                kind = plugin.kind.describe(),
                bytes = plugin.size,
                cached = plugin.cached,
                load_ms = ms(plugin.load_time),
                isolation = %plugin.isolation,
                "plugin loaded"
            );
            plugins.chain.push(plugin);
        }
        Ok(plugins)
    }

    #[allow(clippy::too_many_arguments)]
    fn load_one(
        &self,
        linkers: &Linkers,
        core_linker: &wasmtime::Linker<HostState>,
        cache: Option<&CodeCache>,
        path: &Path,
        name: String,
        config: BTreeMap<String, String>,
        cfg: &Config,
    ) -> Result<Plugin, PluginError> {
        let namespace = Namespace::plugin(&name);
        let shared = cfg
            .shared_state
            .iter()
            .filter(|(_, plugins)| plugins.contains(&name))
            .map(|(ns, _)| ns.clone())
            .collect();
        let mut bytes = std::fs::read(path).map_err(PluginError::Read)?;
        if path.extension().is_some_and(|e| e == "wat") {
            bytes = wat::parse_bytes(&bytes)
                .map_err(PluginError::BadText)?
                .into_owned();
        }
        let started = Instant::now();
        let imports;
        let mut source = Source::Compiled;
        let kind = match kind_of(&bytes)? {
            Kind::CoreModule => {
                let module = match cache {
                    Some(c) => c.module(&self.engine, &bytes).map(|(m, s)| {
                        source = s;
                        m
                    }),
                    None => Module::new(&self.engine, &bytes),
                }
                .map_err(PluginError::Invalid)?;
                imports = module
                    .imports()
                    .map(|i| format!("{}::{}", i.module(), i.name()))
                    .collect();
                PluginKind::Core(core_abi::load(core_linker, &module, cfg.max_reply_bytes)?)
            }
            Kind::Component => {
                let component = match cache {
                    Some(c) => c.component(&self.engine, &bytes).map(|(m, s)| {
                        source = s;
                        m
                    }),
                    None => Component::new(&self.engine, &bytes),
                }
                .map_err(PluginError::Invalid)?;
                imports = component
                    .component_type()
                    .imports(&self.engine)
                    .map(|(name, _)| name.to_string())
                    .collect::<Vec<_>>();
                // A component's exports use the types of the contract it was built against, so
                // it imports that version's `types` interface.
                if imports
                    .iter()
                    .any(|i| i.starts_with("sandport:plugin/types@0.2."))
                {
                    let pre = linkers
                        .v2
                        .instantiate_pre(&component)
                        .map_err(PluginError::RefusedImport)?;
                    PluginKind::ComponentV2(
                        v2::HandlerPre::new(pre).map_err(PluginError::WrongWorld)?,
                    )
                } else {
                    let pre = linkers
                        .v1
                        .instantiate_pre(&component)
                        .map_err(PluginError::RefusedImport)?;
                    PluginKind::Component(HandlerPre::new(pre).map_err(PluginError::WrongWorld)?)
                }
            }
        };
        // Only plugins that can reach the state need a namespace; a 0.1.0 one may have any name.
        let namespace = match (&kind, namespace) {
            (PluginKind::Component(_), ns) => ns.ok(),
            (_, ns) => Some(ns.map_err(PluginError::BadName)?),
        };
        let plugin = Plugin {
            isolation: cfg.isolation_for(&name),
            name: name.into(),
            path: path.to_path_buf(),
            kind,
            config: Arc::new(config),
            imports,
            size: bytes.len(),
            load_time: started.elapsed(),
            cached: source == Source::Cache,
            namespace,
            shared: Arc::new(shared),
        };
        // One trial instance, in a call of its own, catches start-up traps and pool limits now,
        // not at the first client.
        let mut store = self.new_store(&plugin, None, None);
        limits::start_call(&mut store, 0, self.timeout)
            .map_err(|e| PluginError::Instantiate(wasmtime::Error::new(e)))?;
        let mut trial = Instance::new(&plugin, store).map_err(PluginError::Instantiate)?;
        trial.store.data_mut().flush_output();
        Ok(plugin)
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
        let state = reuse.unwrap_or_else(|| {
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
        });
        limits::new_store(&self.engine, state)
    }
}

impl Linkers {
    /// WASI 0.2 (with the capped clock) and each contract's host API.
    fn new(engine: &Engine) -> Result<Linkers, Error> {
        let base = || -> Result<Linker<HostState>, Error> {
            let mut linker = Linker::new(engine);
            wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(runtime("linking WASI"))?;
            limits::link_capped_clock(&mut linker).map_err(runtime("linking the capped clock"))?;
            Ok(linker)
        };
        let mut v1 = base()?;
        Handler::add_to_linker::<_, HasSelf<HostState>>(&mut v1, |s| s)
            .map_err(runtime("linking the host API"))?;
        let mut v2 = base()?;
        v2::Handler::add_to_linker::<_, HasSelf<HostState>>(&mut v2, |s| s)
            .map_err(runtime("linking the host API 0.2"))?;
        Ok(Linkers { v1, v2 })
    }
}

/// Wraps a failure to set up the engine or a linker with what was being set up, keeping
/// wasmtime's cause chain.
fn runtime(what: &'static str) -> impl FnOnce(wasmtime::Error) -> Error {
    move |e| Error::Runtime(anyhow::Error::from_boxed(e.into_boxed_dyn_error()).context(what))
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

fn ms(d: Duration) -> f64 {
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
