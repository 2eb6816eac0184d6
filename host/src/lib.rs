//! sandport: a TCP server that passes every message through sandboxed WebAssembly plugins.
//!
//! The binary parses flags into a [`Config`], loads the plugins into a [`Server`], binds, and
//! runs until the server's [`Shutdown`] is triggered. Embedders and tests do the same with a
//! `Config` of their own (port 0), and read the server's [`Stats`] while it runs.

pub mod cli;
pub mod config;
pub mod error;
pub mod framing;
pub mod plugin;
pub mod server;
pub mod shutdown;
pub mod tools;

pub use config::Config;
pub use error::Error;
pub use server::stats::{Snapshot, Stats};
pub use server::Server;
pub use shutdown::Shutdown;
