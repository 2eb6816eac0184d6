//! Shared helpers for the integration tests: start the real `sandport` binary, capture its log,
//! talk TCP to it with bounded reads, and look at the process and its sockets through /proc.
//!
//! Every blocking operation here has a timeout, so a misbehaving host makes a test fail instead
//! of hanging the whole suite. Tests wait for the state they need ([`eventually`],
//! [`wait_until`], [`Server::wait_until_read`], log lines) rather than for a fixed time.

#![allow(dead_code)]

mod client;
mod files;
mod haproxy;
mod launch;
mod logs;
mod procfs;
mod redis_server;
mod server;

pub use client::*;
pub use files::*;
pub use haproxy::*;
pub use launch::*;
pub use logs::*;
pub use procfs::*;
pub use redis_server::debian::*;
pub use redis_server::*;
pub use server::*;

use std::thread;
use std::time::{Duration, Instant};

/// How long a server may take from spawn to `listening on` (it compiles the plugins first, and
/// the machine may be busy with other tests running in parallel).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Default timeout for a reply that should come promptly.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Default timeout when waiting for a log line.
pub const LOG_TIMEOUT: Duration = Duration::from_secs(5);

/// How often [`eventually`] looks again: the polling period, not a wait for some state.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Retries `f` every few milliseconds until it returns Some or `timeout` passes.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Waits until `condition` holds; panics naming `what` if it does not within `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    if eventually(timeout, || condition().then_some(())).is_none() {
        panic!("timed out after {timeout:?} waiting until {what}");
    }
}
