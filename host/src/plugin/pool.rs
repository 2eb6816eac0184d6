//! One worker's plugin instances and the isolation policy: which instance a hook runs on, when
//! it is thrown away, and how a message flows through the chain.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use wasmtime::{Store, Trap};

use super::bindings::{Connection, Response};
use super::core_abi::ResultError;
use super::host_api::HostState;
use super::instance::Instance;
use super::limits;
use super::registry::Plugins;
use crate::config::Isolation;
use crate::metrics::WorkerMetrics;
use crate::server::messaging::Messenger;

/// The instances a connection owns under `--isolation connection` (one per plugin).
#[derive(Default)]
pub struct ConnInstances(Vec<Option<Instance>>);

/// What the chain asks the host to do after a hook.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Bytes for the client, before framing.
    pub reply: Option<Vec<u8>>,
    /// Close once the reply is written.
    pub close: bool,
}

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

    fn of(err: wasmtime::Error, store: &Store<HostState>) -> Cause {
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

/// One worker's view of the plugins: never shared with another thread.
pub struct WorkerPool {
    plugins: Arc<Plugins>,
    /// Each plugin's isolation mode, in chain order (copied out of `plugins`: read every call).
    isolation: Vec<Isolation>,
    /// Under `--isolation worker`, one long-lived instance per plugin.
    shared: Vec<Option<Instance>>,
    /// Under `--isolation message`, each plugin's host state from its last instance, recycled
    /// for the next one (see `HostState::recycle`).
    spare: Vec<Option<HostState>>,
    /// The server's connections and rooms, for contract 0.2 plugins (`None` without a server).
    messenger: Option<Arc<Messenger>>,
    /// This worker's counters: messages, bytes, call durations and instances per stage.
    metrics: Arc<WorkerMetrics>,
}

impl WorkerPool {
    pub fn new(plugins: Arc<Plugins>, messenger: Option<Arc<Messenger>>) -> Self {
        let isolation = plugins.chain.iter().map(|p| p.isolation).collect();
        let shared = plugins.chain.iter().map(|_| None).collect();
        let spare = plugins.chain.iter().map(|_| None).collect();
        WorkerPool {
            metrics: Arc::new(WorkerMetrics::new(plugins.chain.len())),
            plugins,
            isolation,
            shared,
            spare,
            messenger,
        }
    }

    /// Counts into `metrics` (a server worker's part of them) instead of counters of its own.
    pub fn observed(mut self, metrics: Arc<WorkerMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Runs `on-connect` on every plugin in order; returns the greetings to send, how many
    /// plugins accepted the connection (those get `on-disconnect` later), and whether to close.
    pub fn on_connect(
        &mut self,
        conn: &Connection,
        own: &mut ConnInstances,
    ) -> (Vec<Vec<u8>>, usize, Result<bool, CallError>) {
        let mut greetings = Vec::new();
        for i in 0..self.plugins.chain.len() {
            let res = self.call(i, conn.id, own, "on-connect", |inst| inst.on_connect(conn));
            match res.map(|r| r.map(|resp| self.capped(i, "on-connect", resp))) {
                Ok(Ok(Err(e))) => return (greetings, i, Err(e)),
                Ok(Ok(Ok(resp))) => {
                    if let Some(g) = &resp.reply {
                        self.metrics.reply_out(i, g.len());
                    }
                    greetings.extend(resp.reply);
                    if resp.close {
                        return (greetings, i + 1, Ok(true));
                    }
                }
                Ok(Err(msg)) => {
                    return (greetings, i, Err(self.returned(i, "on-connect", msg, own)))
                }
                Err(e) => return (greetings, i, Err(e)),
            }
        }
        (greetings, self.plugins.chain.len(), Ok(false))
    }

    /// Runs one message through the chain: each reply is the next plugin's message; no reply
    /// or a close ends the chain early.
    pub fn on_message(
        &mut self,
        conn: &Connection,
        own: &mut ConnInstances,
        message: &[u8],
    ) -> Result<Outcome, CallError> {
        let mut msg = Cow::Borrowed(message);
        let last = self.plugins.chain.len() - 1;
        for i in 0..=last {
            self.metrics.message_in(i, msg.len());
            let resp = self.call(i, conn.id, own, "on-message", |inst| {
                inst.on_message(conn, &msg)
            })?;
            let resp = match resp {
                Ok(resp) => self.capped(i, "on-message", resp)?,
                Err(m) => return Err(self.returned(i, "on-message", m, own)),
            };
            if let Some(r) = &resp.reply {
                self.metrics.reply_out(i, r.len());
            }
            match resp {
                Response { reply, close: true } => return Ok(Outcome { reply, close: true }),
                Response { reply: None, .. } => return Ok(Outcome::default()),
                Response { reply: Some(r), .. } if i == last => {
                    return Ok(Outcome {
                        reply: Some(r),
                        close: false,
                    })
                }
                Response { reply: Some(r), .. } => msg = Cow::Owned(r),
            }
        }
        unreachable!("the chain has at least one plugin")
    }

    /// Runs `on-disconnect` on the first `connected` plugins; returns the calls that failed.
    pub fn on_disconnect(
        &mut self,
        conn: &Connection,
        own: &mut ConnInstances,
        connected: usize,
    ) -> Vec<CallError> {
        let failed = (0..connected)
            .filter_map(|i| {
                self.call(i, conn.id, own, "on-disconnect", |inst| {
                    inst.on_disconnect(conn)
                })
                .err()
            })
            .collect();
        // The connection's own instances die with it.
        own.0.clear();
        failed
    }

    /// Drops the instances a quiet connection owns (`--hibernate-after`): its next call makes
    /// fresh ones, as `--isolation message` does for every call. Returns how many were dropped.
    pub fn hibernate(&mut self, own: &mut ConnInstances) -> usize {
        let mut dropped = 0;
        for (i, slot) in own.0.iter_mut().enumerate() {
            if slot.take().is_some() {
                self.metrics.instance_hibernated(i);
                dropped += 1;
            }
        }
        dropped
    }

    /// `resp`, unless its reply is over `--max-reply-bytes`: then an error, and the reply is
    /// dropped here rather than queued for the client (the instance itself did nothing wrong).
    fn capped(&self, i: usize, hook: &'static str, resp: Response) -> Result<Response, CallError> {
        let max = self.plugins.max_reply_bytes;
        match resp.reply.as_ref().map(Vec::len) {
            Some(size) if size > max => Err(CallError {
                plugin: self.plugins.chain[i].name.clone(),
                hook,
                cause: Cause::ReplyTooLarge { size, max },
            }),
            _ => Ok(resp),
        }
    }

    /// An `err` result: logged like a trap, and the instance is not trusted further.
    fn returned(
        &mut self,
        i: usize,
        hook: &'static str,
        msg: String,
        own: &mut ConnInstances,
    ) -> CallError {
        *self.slot(i, own) = None;
        CallError {
            plugin: self.plugins.chain[i].name.clone(),
            hook,
            cause: Cause::Returned(msg),
        }
    }

    fn slot<'a>(&'a mut self, i: usize, own: &'a mut ConnInstances) -> &'a mut Option<Instance> {
        slot_of(&mut self.shared, self.isolation[i], i, own)
    }

    /// Calls one hook of plugin `i` on the instance the isolation mode picks (made first if
    /// there is none), under the call's budget. A trap or timeout throws the instance away.
    /// A call that ran (its instance made) is timed from its start, which `limits` reads once.
    fn call<R>(
        &mut self,
        i: usize,
        conn: u64,
        own: &mut ConnInstances,
        hook: &'static str,
        f: impl FnOnce(&mut Instance) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        // Borrowed field by field: cloning the shared `Arc<Plugins>` on every call would bounce
        // its counter's cache line between the worker threads.
        let WorkerPool {
            plugins,
            isolation,
            shared,
            spare,
            messenger,
            metrics,
        } = self;
        let plugin = &plugins.chain[i];
        let fresh_each_call = isolation[i] == Isolation::Message;
        let fail = |cause| CallError {
            plugin: plugin.name.clone(),
            hook,
            cause,
        };
        // Past the shutdown cut-off the call is refused before any guest code runs.
        let start = |store: &mut Store<HostState>| {
            limits::start_call(store, conn, plugins.timeout).map_err(|_| fail(Cause::CutOff))
        };
        let slot = slot_of(shared, isolation[i], i, own);
        let started = match slot {
            Some(inst) => match start(&mut inst.store) {
                Ok(started) => started,
                Err(e) => {
                    *slot = None;
                    return Err(e);
                }
            },
            None => {
                let mut store = plugins.new_store(plugin, spare[i].take(), messenger.as_ref());
                let started = start(&mut store)?;
                let inst = Instance::new(plugin, store)
                    .map_err(|e| fail(Cause::Instantiate(format!("{e:#}"))))?;
                metrics.instance_created(i);
                *slot = Some(inst);
                started
            }
        };
        let inst = slot.as_mut().expect("made above");
        let res = f(inst);
        metrics.called(i, hook, started.elapsed());
        inst.store.data_mut().flush_output();
        match res {
            Ok(r) => {
                if fresh_each_call {
                    let used = slot.take().expect("called above");
                    spare[i] = used.into_state().recycle();
                }
                Ok(r)
            }
            Err(e) => {
                let cause = Cause::of(e, &inst.store);
                *slot = None;
                Err(fail(cause))
            }
        }
    }
}

/// The instance slot of plugin `i` that `isolation` picks: the worker's own, or the connection's.
fn slot_of<'a>(
    shared: &'a mut [Option<Instance>],
    isolation: Isolation,
    i: usize,
    own: &'a mut ConnInstances,
) -> &'a mut Option<Instance> {
    match isolation {
        Isolation::Worker => &mut shared[i],
        Isolation::Connection | Isolation::Message => {
            if own.0.len() <= i {
                own.0.resize_with(shared.len(), || None);
            }
            &mut own.0[i]
        }
    }
}
