//! sandport: a TCP server that passes every message through sandboxed WebAssembly plugins.
//!
//! The binary parses flags into a [`Config`], loads the plugins into a [`Server`], binds, and
//! runs until the server's [`Shutdown`] is triggered. Embedders and tests do the same with a
//! `Config` of their own (port 0), and read the server's [`Stats`] while it runs:
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = sandport::Server::new(sandport::Config {
//!     listen: "127.0.0.1:0".parse()?,
//!     plugins: vec!["plugins/echo.wasm".into()],
//!     ..Default::default()
//! })?; // validates the config, then loads and checks every plugin
//! let listener = server.bind()?;
//! let (shutdown, stats) = (server.shutdown(), server.stats());
//! let running = std::thread::spawn(move || server.run(listener));
//! // ... later: stats.snapshot().messages, stats.snapshot().timeouts, ...
//! shutdown.trigger(); // the deadline is now + shutdown_timeout, for every thread
//! running.join().unwrap()?; // an error if a server thread panicked
//! # Ok(())
//! # }
//! ```

pub mod cli;
pub mod config;
pub mod error;
pub mod framing;
/// The fuzz targets' property checks: for `fuzz/` (feature `fuzzing`) and the corpus replay
/// tests only, not part of the API.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod plugin;
pub mod record;
pub mod reload;
pub mod replay;
pub mod server;
pub mod shutdown;
pub mod state;
pub mod tools;

pub use config::Config;
pub use error::Error;
pub use server::stats::{Snapshot, Stats};
pub use server::Server;
pub use shutdown::Shutdown;
