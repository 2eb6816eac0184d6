//! sandport: a TCP server that passes every message through sandboxed WebAssembly plugins.
//!
//! The binary parses flags into a [`Config`], loads the plugins into a [`Server`], binds, and
//! runs until a [`Shutdown`] is triggered. Tests and embedders can do the same with their own
//! listener (port 0) and shutdown handle.

pub mod cli;
pub mod config;
pub mod error;
pub mod framing;
pub mod plugin;
pub mod server;
pub mod tools;

pub use config::Config;
pub use error::Error;
pub use server::{Server, Shutdown};
