//! Why a hook failed: the budgets, traps and results a call can end with, sorted so logs and
//! counters can tell them apart.

use std::fmt;
use std::sync::Arc;

use wasmtime::{Store, Trap};

use crate::plugin::core_abi::ResultError;
use crate::plugin::host_api::HostState;

/// A hook that failed; the instance it ran on has been thrown away.
#[derive(Debug)]
pub struct CallError {
    pub plugin: Arc<str>,
    pub hook: &'static str,
    pub cause: Cause,
}

/// Why a hook failed, sorted so logs and counters can tell the budgets apart.
#[derive(Debug)]
pub enum Cause {
    /// The call ran past `--timeout-ms`.
    Timeout,
    /// The hook was never called: shutdown had passed its deadline (not the plugin's fault).
    CutOff,
    /// The reply was over `--max-reply-bytes`; it is dropped, never buffered.
    ReplyTooLarge { size: usize, max: usize },
    /// The instance tried to grow its memory past `--memory-limit`.
    MemoryLimit,
    /// The guest's stack overflowed.
    StackOverflow,
    /// Any other trap.
    Trap(String),
    /// The hook returned `err(message)`.
    Returned(String),
    /// A fresh instance could not be made.
    Instantiate(String),
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Timeout => f.write_str("deadline exceeded: the call ran past --timeout-ms"),
            Cause::CutOff => f.write_str("not called: the shutdown deadline had passed"),
            Cause::ReplyTooLarge { size, max } => write!(
                f,
                "reply too large: {size} bytes, over --max-reply-bytes {max}"
            ),
            Cause::MemoryLimit => f.write_str("memory limit exceeded (--memory-limit)"),
            Cause::StackOverflow => f.write_str("stack overflow"),
            Cause::Trap(t) => write!(f, "trap: {t}"),
            Cause::Returned(e) => write!(f, "plugin returned an error: {e}"),
            Cause::Instantiate(e) => write!(f, "cannot instantiate: {e}"),
        }
    }
}

impl Cause {
    /// A short label for counters and the `kind` log field.
    pub fn kind(&self) -> &'static str {
        match self {
            Cause::Timeout => "timeout",
            Cause::CutOff => "cutoff",
            Cause::ReplyTooLarge { .. } => "reply-too-large",
            Cause::MemoryLimit => "memory",
            Cause::StackOverflow => "stack",
            Cause::Trap(_) => "trap",
            Cause::Returned(_) => "err",
            Cause::Instantiate(_) => "instantiate",
        }
    }

    pub(super) fn of(err: wasmtime::Error, store: &Store<HostState>) -> Cause {
        if store.data().limits.memory_hit() {
            return Cause::MemoryLimit;
        }
        // A core module's reply over the cap, refused before it was copied (`core_abi`).
        if let Some(&ResultError::TooLarge { len, max, .. }) = err.downcast_ref::<ResultError>() {
            return Cause::ReplyTooLarge {
                size: len as usize,
                max,
            };
        }
        match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => Cause::Timeout,
            Some(Trap::StackOverflow) => Cause::StackOverflow,
            Some(trap) => Cause::Trap(trap.to_string()),
            None => Cause::Trap(format!("{err:#}")),
        }
    }
}
