//! Reading, compiling and checking plugin files, at start and at every reload alike: one
//! engine, one pair of linkers and one compile cache, so a reloaded file meets exactly the
//! checks (and errors) a file given at start does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Module};

use super::bindings::{v2, Handler, HandlerPre};
use super::cache::{CodeCache, Source};
use super::core_abi;
use super::engine;
use super::error::PluginError;
use super::host_api::HostState;
use super::instance::Instance;
use super::limits::{self, CutOff};
use super::preinit;
use super::random;
use super::registry::{kind_of, ms, Kind, Parts, Plugin, PluginKind, Plugins};
use crate::config::Config;
use crate::error::Error;
use crate::state::{self, Namespace};

/// Everything loading a plugin needs, kept for the server's life so reloads reuse it.
pub struct Loader {
    /// An empty chain holding the engine, budgets, state and counters every version shares.
    template: Plugins,
    linkers: Linkers,
    core_linker: wasmtime::Linker<HostState>,
    cache: Option<CodeCache>,
    /// Per-plugin settings and isolation modes, looked up by a new file's name too.
    cfg: Config,
}

/// The two linkers of components, one per contract version.
struct Linkers {
    v1: Linker<HostState>,
    v2: Linker<HostState>,
}

/// The first 12 hex digits of the SHA-256 of a file's bytes: enough to tell versions apart in
/// a log line.
pub fn short_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A plugin file's bytes; a `.wat` file is translated to binary first.
pub fn read(path: &Path) -> Result<Vec<u8>, PluginError> {
    let bytes = std::fs::read(path).map_err(PluginError::Read)?;
    if path.extension().is_some_and(|e| e == "wat") {
        return Ok(wat::parse_bytes(&bytes)
            .map_err(PluginError::BadText)?
            .into_owned());
    }
    Ok(bytes)
}

impl Loader {
    /// The engine (and its epoch ticker), the linkers, the state store and the compile cache.
    pub fn new(cfg: &Config, cutoff: CutOff) -> Result<Loader, Error> {
        let engine = engine::build(cfg).map_err(runtime("cannot set up the WebAssembly engine"))?;
        let core_linker = core_abi::linker(&engine).map_err(runtime("linking the core ABI"))?;
        let linkers = Linkers::new(&engine)?;
        let state = state::open(&cfg.state, cfg.state_quotas).map_err(Error::State)?;
        let cache = cfg.cache_dir.as_ref().and_then(|dir| {
            CodeCache::open(&dir.join("compiled"))
                .map_err(|e| tracing::warn!("compile cache disabled, every start compiles: {e}"))
                .ok()
        });
        // Each tick makes running calls check their deadline (see `limits`); the thread ends
        // with the engine.
        engine::spawn_ticker(&engine)
            .map_err(|e| Error::Runtime(anyhow::anyhow!("cannot start the epoch thread: {e}")))?;
        let parts = Parts {
            engine,
            timeout: cfg.timeout,
            memory_limit: cfg.memory_limit,
            max_reply_bytes: cfg.max_reply_bytes,
            reset: cfg.reset,
            cutoff,
            state,
            all_shared: Arc::new(cfg.shared_state.keys().cloned().collect()),
        };
        Ok(Loader {
            template: Plugins::from_parts(parts, Vec::new()),
            linkers,
            core_linker,
            cache,
            cfg: cfg.clone(),
        })
    }

    /// The chain given at start: the first file that cannot be served stops it.
    pub fn load_start(&self, paths: &[PathBuf]) -> Result<Plugins, Error> {
        let mut chain = Vec::new();
        for path in paths {
            let plugin = read(path)
                .and_then(|bytes| self.load(path, &bytes))
                .map_err(|kind| Error::plugin(path, kind))?;
            tracing::info!(
                plugin = &*plugin.name,
                path = %path.display(),
                kind = plugin.kind.describe(),
                bytes = plugin.size,
                hash = &*plugin.hash,
                cached = plugin.cached,
                load_ms = ms(plugin.load_time),
                isolation = %plugin.isolation,
                "plugin loaded"
            );
            chain.push(Arc::new(plugin));
        }
        Ok(self.version(chain))
    }

    /// A chain version sharing the engine, budgets, state and counters of every other.
    pub fn version(&self, chain: Vec<Arc<Plugin>>) -> Plugins {
        self.template.with_chain(chain)
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Compiles and checks `bytes`, read from `path`, and makes one trial instance.
    pub fn load(&self, path: &Path, bytes: &[u8]) -> Result<Plugin, PluginError> {
        let name = super::name_of(path);
        let cfg = &self.cfg;
        let engine = &self.template.engine;
        let namespace = Namespace::plugin(&name);
        let shared = cfg
            .shared_state
            .iter()
            .filter(|(_, plugins)| plugins.contains(&name))
            .map(|(ns, _)| ns.clone())
            .collect();
        let started = Instant::now();
        let imports;
        let mut source = Source::Compiled;
        let mut core_module = None;
        let kind = match kind_of(bytes)? {
            Kind::CoreModule => {
                let module = match &self.cache {
                    Some(c) => c.module(engine, bytes).map(|(m, s)| {
                        source = s;
                        m
                    }),
                    None => Module::new(engine, bytes),
                }
                .map_err(PluginError::Invalid)?;
                imports = module
                    .imports()
                    .map(|i| format!("{}::{}", i.module(), i.name()))
                    .collect();
                let core = core_abi::load(&self.core_linker, &module, cfg.max_reply_bytes)?;
                core_module = Some(module);
                PluginKind::Core(core)
            }
            Kind::Component => {
                let component = match &self.cache {
                    Some(c) => c.component(engine, bytes).map(|(m, s)| {
                        source = s;
                        m
                    }),
                    None => Component::new(engine, bytes),
                }
                .map_err(PluginError::Invalid)?;
                imports = component
                    .component_type()
                    .imports(engine)
                    .map(|(name, _)| name.to_string())
                    .collect::<Vec<_>>();
                // A component's exports use the types of the contract it was built against, so
                // it imports that version's `types` interface.
                if imports
                    .iter()
                    .any(|i| i.starts_with("sandport:plugin/types@0.2."))
                {
                    let pre = (self.linkers.v2)
                        .instantiate_pre(&component)
                        .map_err(PluginError::RefusedImport)?;
                    PluginKind::ComponentV2(
                        v2::HandlerPre::new(pre).map_err(PluginError::WrongWorld)?,
                    )
                } else {
                    let pre = (self.linkers.v1)
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
        let config: BTreeMap<String, String> =
            cfg.plugin_config.get(&name).cloned().unwrap_or_default();
        let mut plugin = Plugin {
            isolation: cfg.isolation_for(&name),
            name: name.into(),
            path: path.to_path_buf(),
            kind,
            config: Arc::new(config),
            imports,
            size: bytes.len(),
            load_time: started.elapsed(),
            cached: source == Source::Cache,
            hash: short_hash(bytes).into(),
            namespace,
            shared: Arc::new(shared),
        };
        if cfg.preinit && core_module.as_ref().is_some_and(preinit::wants) {
            self.preinitialize(&mut plugin, bytes)?;
        }
        // One trial instance, in a call of its own, catches start-up traps and pool limits now,
        // not at the first client.
        let mut store = self.template.new_store(&plugin, None, None);
        limits::start_call(&mut store, 0, self.template.timeout)
            .map_err(|e| PluginError::Instantiate(wasmtime::Error::new(e)))?;
        let mut trial = Instance::new(&plugin, store).map_err(PluginError::Instantiate)?;
        trial.store.data_mut().flush_output();
        Ok(plugin)
    }
}

impl Loader {
    /// Replaces a core module that exports `_initialize` by its pre-initialized form
    /// (plugin/preinit.rs), cached under its bytes, name and settings. One that cannot be
    /// pre-initialized is served as it is, running `_initialize` in every instance; an
    /// `_initialize` that fails fails the trial instance after this, as it would have.
    fn preinitialize(&self, plugin: &mut Plugin, bytes: &[u8]) -> Result<(), PluginError> {
        let started = Instant::now();
        let engine = &self.template.engine;
        let make = || {
            let store = self.template.new_store(plugin, None, None);
            preinit::run(&self.core_linker, store, self.template.timeout, bytes)
        };
        let salt = format!("{:?}", (preinit::VERSION, &plugin.name, &plugin.config));
        let made = match &self.cache {
            Some(c) => c.derived_module(engine, (bytes, salt.as_bytes()), make),
            None => make()
                .and_then(|b| Module::new(engine, b))
                .map(|m| (m, Source::Compiled)),
        };
        match made {
            Ok((pre, source)) => {
                plugin.kind = PluginKind::Core(core_abi::load(
                    &self.core_linker,
                    &pre,
                    self.cfg.max_reply_bytes,
                )?);
                tracing::debug!(
                    plugin = %plugin.name,
                    cached = source == Source::Cache,
                    ms = ms(started.elapsed()),
                    "pre-initialized: `_initialize` ran once, at load"
                );
            }
            Err(e) => tracing::warn!(
                plugin = %plugin.name,
                "cannot pre-initialize, `_initialize` runs in every instance: {e:#}"
            ),
        }
        Ok(())
    }
}

impl Linkers {
    /// WASI 0.2 (with the capped clock) and each contract's host API.
    fn new(engine: &Engine) -> Result<Linkers, Error> {
        let base = || -> Result<Linker<HostState>, Error> {
            let mut linker = Linker::new(engine);
            wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(runtime("linking WASI"))?;
            limits::link_capped_clock(&mut linker).map_err(runtime("linking the capped clock"))?;
            random::link_bulk_random(&mut linker).map_err(runtime("linking wasi:random"))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_hashes_tell_contents_apart_and_are_stable() {
        assert_eq!(short_hash(b"a"), short_hash(b"a"));
        assert_ne!(short_hash(b"a"), short_hash(b"b"));
        assert_eq!(short_hash(b"").len(), 12);
    }
}
