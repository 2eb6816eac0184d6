//! The errors that stop sandport from starting, each mapped to an exit code.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the server could not start (or had to stop).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag value that cannot be used.
    #[error("{0}")]
    Config(String),

    /// A plugin that cannot be served.
    #[error("plugin {path}: {kind}")]
    Plugin { path: PathBuf, kind: PluginError },

    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },

    /// Something failed while running, after a successful start.
    // `:#` prints the whole chain: the context alone ("cannot set up the engine") hides why.
    #[error("{0:#}")]
    Runtime(#[from] anyhow::Error),
}

/// What is wrong with a plugin file.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot read it: {0}")]
    Read(std::io::Error),

    #[error("not a WebAssembly file (it does not start with the `\\0asm` header)")]
    NotWasm,

    #[error("it is a core module that does not implement the sandport core ABI: {0} (see docs/core-abi.md)")]
    WrongAbi(String),

    #[error("it is not valid WebAssembly text: {0}")]
    BadText(String),

    #[error("it cannot be compiled: {0}")]
    Invalid(String),

    #[error("it does not implement the sandport:plugin/handler world: {0}")]
    WrongWorld(String),

    #[error("it imports something the host does not provide: {0}")]
    RefusedImport(String),

    #[error("it cannot be instantiated: {0}")]
    Instantiate(String),
}

impl Error {
    pub fn config(msg: impl Into<String>) -> Self {
        Error::Config(msg.into())
    }

    pub fn plugin(path: impl Into<PathBuf>, kind: PluginError) -> Self {
        Error::Plugin {
            path: path.into(),
            kind,
        }
    }

    /// 2 for anything the user can fix in the command line or the plugins; 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::Plugin { .. } | Error::Bind { .. } => 2,
            Error::Runtime(_) => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runtime_error_names_its_cause_not_only_its_context() {
        let e = Error::Runtime(
            anyhow::anyhow!("mmap failed to reserve 0x100 bytes")
                .context("cannot set up the WebAssembly engine"),
        );
        assert_eq!(
            e.to_string(),
            "cannot set up the WebAssembly engine: mmap failed to reserve 0x100 bytes"
        );
        assert_eq!(e.exit_code(), 1);
    }
}
