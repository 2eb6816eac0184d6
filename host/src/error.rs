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

    /// The state store (`--state`) could not be opened; why is its source.
    #[error("cannot open the state store (--state)")]
    State(#[source] crate::state::OpenError),

    /// The TLS certificate, key or client CAs (`--tls-*`) cannot be served; why is its source.
    #[error("cannot set up TLS")]
    Tls(#[source] crate::server::tls::TlsError),

    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },

    /// The metrics endpoint (`--metrics-listen`) could not be opened.
    #[error("cannot serve metrics on {addr} (--metrics-listen)")]
    MetricsBind {
        addr: SocketAddr,
        source: std::io::Error,
    },

    /// A server thread (a worker or the acceptor) panicked: the server stopped, and a worker's
    /// connections were lost.
    #[error("{0} server thread(s) panicked; the server stopped (the log says which, and why)")]
    ThreadPanicked(u64),

    /// Something failed while running, after a successful start; its causes are its sources.
    #[error(transparent)]
    Runtime(#[from] anyhow::Error),
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
            Error::Config(_)
            | Error::Plugin { .. }
            | Error::State(_)
            | Error::Tls(_)
            | Error::Bind { .. }
            | Error::MetricsBind { .. } => 2,
            Error::Runtime(_) | Error::ThreadPanicked(_) => 1,
        }
    }
}

/// The error and every cause under it, joined by `: ` (what `main` prints).
pub fn report(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let text = e.to_string();
        // Some wrappers repeat their cause in their own message; say it once.
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = e.source();
    }
    out
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
            report(&e),
            "cannot set up the WebAssembly engine: mmap failed to reserve 0x100 bytes"
        );
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn a_bind_error_keeps_the_os_error_as_its_source() {
        let e = Error::Bind {
            addr: "127.0.0.1:1".parse().unwrap(),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(e.exit_code(), 2);
    }
}
