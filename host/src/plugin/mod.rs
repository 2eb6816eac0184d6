//! Everything about plugins: the engine, finding, loading and checking them (and why one
//! cannot be served), the budgets of their calls, and running their hooks.

pub mod bindings;
pub mod cache;
pub mod core_abi;
pub mod discovery;
pub mod engine;
pub mod error;
pub mod host_api;
pub mod instance;
pub mod kv;
pub mod limits;
pub mod live;
pub mod loader;
pub mod pool;
pub mod preinit;
pub mod random;
pub mod registry;
pub mod services;

use std::path::Path;

pub use error::PluginError;
pub use limits::CutOff;
pub use live::Live;
pub use loader::Loader;
pub use pool::{CallError, Cause, ConnInstances, Outcome, WorkerPool};
pub use registry::{Plugin, Plugins};

/// A plugin's name: its file name without `.wasm`. Used in logs and in `--config NAME.KEY=...`.
pub fn name_of(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}
