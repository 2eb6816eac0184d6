//! Integration tests for the `sandport` binary: every test starts the real server on
//! `127.0.0.1:0`, talks TCP to it, and inspects its log, exit code and /proc entry.
//!
//! The plugins must be built first: `cargo xtask plugins`.

mod support;

mod backpressure;
mod budget;
mod chains;
mod config;
mod contract_v2;
mod core_abi;
mod deploy;
mod framing;
mod hostile;
mod in_process;
mod isolation;
mod languages;
mod lifecycle;
mod live;
mod load_errors;
mod metrics;
mod misbehaving;
mod oversize;
mod proxy_protocol;
mod replay;
mod reset;
mod resolution;
mod scale;
mod sdk;
mod shutdown;
mod tls;
mod tools;
mod upgrade;
