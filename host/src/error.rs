//! The errors that stop sandport from starting, each mapped to an exit code.

use std::net::SocketAddr;
use std::path::PathBuf;

pub use crate::plugin::error::PluginError;

/// Why the server could not start (or had to stop).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag value that cannot be used.
    #[error("{0}")]
    Config(String),

    /// A plugin that cannot be served. What is wrong with it is its source, printed after it.
    #[error("plugin {path}")]
    Plugin {
        path: PathBuf,
        #[source]
        kind: PluginError,
    },

    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },

    /// Something failed while running, after a successful start.
    // `:#` prints the whole chain: the context alone ("cannot set up the engine") hides why.
    // Not a `source()` then, or the chain would be printed twice.
    #[error("{0:#}")]
    Runtime(anyhow::Error),
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
