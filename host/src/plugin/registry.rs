//! Loading plugins once at start: read, check the kind of file, compile, link against the host's
//! imports, check the `handler` world, and try one instantiation, with a clear error for each.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{format_err, Engine, Module, Store};

use super::bindings::{Handler, HandlerPre};
use super::cache::{CodeCache, Source};
use super::core_abi::{self, CorePlugin};
use super::engine;
use super::error::PluginError;
use super::host_api::HostState;
use super::instance::{Handle, Instance};
use super::limits::{self, CutOff, Limits};
use crate::config::Config;
use crate::error::Error;

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
}

/// The two kinds of plugin file, each pre-linked.
pub enum PluginKind {
    /// A component implementing the `handler` world.
    Component(HandlerPre<HostState>),
    /// A core module implementing the core ABI (`docs/core-abi.md`).
    Core(CorePlugin),
}

impl PluginKind {
    pub fn describe(&self) -> &'static str {
        match self {
            PluginKind::Component(_) => "component (world sandport:plugin/handler@0.1.0)",
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
        let mut linker: Linker<HostState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(runtime("linking WASI"))?;
        limits::link_capped_clock(&mut linker).map_err(runtime("linking the capped clock"))?;
        Handler::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(runtime("linking the host API"))?;

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
        };
        // Each tick makes running calls check their deadline (see `limits`); the thread ends
        // with the engine.
        engine::spawn_ticker(&plugins.engine)
            .map_err(|e| Error::Runtime(anyhow::anyhow!("cannot start the epoch thread: {e}")))?;
        for path in &cfg.plugins {
            let name = super::name_of(path);
            let config = cfg.plugin_config.get(&name).cloned().unwrap_or_default();
            let plugin = plugins
                .load_one(&linker, &core_linker, cache.as_ref(), path, name, config)
                .map_err(|kind| Error::plugin(path, kind))?;
            tracing::info!(
                plugin = &*plugin.name,
                path = %path.display(),
                kind = plugin.kind.describe(),
                bytes = plugin.size,
                cached = plugin.cached,
                load_ms = ms(plugin.load_time),
                "plugin loaded"
            );
            plugins.chain.push(plugin);
        }
        Ok(plugins)
    }

    fn load_one(
        &self,
        linker: &Linker<HostState>,
        core_linker: &wasmtime::Linker<HostState>,
        cache: Option<&CodeCache>,
        path: &Path,
        name: String,
        config: BTreeMap<String, String>,
    ) -> Result<Plugin, PluginError> {
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
                PluginKind::Core(core_abi::load(core_linker, &module)?)
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
                    .collect();
                let pre = linker
                    .instantiate_pre(&component)
                    .map_err(PluginError::RefusedImport)?;
                PluginKind::Component(HandlerPre::new(pre).map_err(PluginError::WrongWorld)?)
            }
        };
        let plugin = Plugin {
            name: name.into(),
            path: path.to_path_buf(),
            kind,
            config: Arc::new(config),
            imports,
            size: bytes.len(),
            load_time: started.elapsed(),
            cached: source == Source::Cache,
        };
        // One trial instance, in a call of its own, catches start-up traps and pool limits now,
        // not at the first client.
        let mut store = self.new_store(&plugin, None);
        limits::start_call(&mut store, 0, self.timeout)
            .map_err(|e| PluginError::Instantiate(wasmtime::Error::new(e)))?;
        let mut trial = Instance::new(&plugin, store).map_err(PluginError::Instantiate)?;
        trial.store.data_mut().flush_output();
        Ok(plugin)
    }

    /// A store for one instance of `plugin`, under this server's budgets. `reuse` is the state
    /// of an earlier store of the same plugin, made ready by [`HostState::recycle`]; without it
    /// a new state is built.
    pub fn new_store(&self, plugin: &Plugin, reuse: Option<HostState>) -> Store<HostState> {
        let state = reuse.unwrap_or_else(|| {
            HostState::new(
                plugin.name.clone(),
                plugin.config.clone(),
                matches!(plugin.kind, PluginKind::Core(_)),
                Limits::new(self.memory_limit, self.cutoff.clone()),
            )
        });
        limits::new_store(&self.engine, state)
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
