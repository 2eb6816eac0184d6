//! One worker's plugin instances and the isolation policy: which instance a hook runs on, when
//! it is thrown away, and how a message flows through the chain.

use std::borrow::Cow;
use std::sync::Arc;

use wasmtime::Store;

use super::bindings::{Connection, Response};
use super::host_api::HostState;
use super::instance::Instance;
use super::limits;
use super::live::Live;
use super::registry::Plugins;

mod cause;
use crate::config::Isolation;
use crate::metrics::WorkerMetrics;
use crate::server::messaging::Messenger;
pub use cause::{CallError, Cause};

/// The instances a connection owns under `--isolation connection` (one per plugin), and the
/// chain version they belong to.
#[derive(Default)]
pub struct ConnInstances {
    instances: Vec<Option<Instance>>,
    /// Under a live chain with a stage under `--isolation connection`: the version the
    /// connection started with, which it keeps until it closes (its instances' memory is not
    /// migrated). The version is freed when the last connection holding it closes.
    pinned: Option<Arc<Plugins>>,
    /// The generation `instances` were made under, when not pinned: a swap drops them.
    generation: u64,
}

/// What the chain asks the host to do after a hook.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Bytes for the client, before framing.
    pub reply: Option<Vec<u8>>,
    /// Close once the reply is written.
    pub close: bool,
}

/// One worker's view of the plugins: never shared with another thread.
pub struct WorkerPool {
    /// The chain version this worker serves new work with.
    plugins: Arc<Plugins>,
    /// Where new versions come from (`None` for the tools' fixed chain), and the generation of
    /// `plugins`.
    live: Option<Arc<Live>>,
    generation: u64,
    /// Each plugin's isolation mode, in chain order (copied out of `plugins`: read every call).
    isolation: Vec<Isolation>,
    /// Under `--isolation worker`, one long-lived instance per plugin; under `message`, the one
    /// instance reset in place after each call (see [`Instance::reset`]).
    shared: Vec<Option<Instance>>,
    /// Per plugin, whether its instances can be reset in place: cleared the first time one
    /// cannot be (`Instance::prepare_reset`), so the plugin gets a new instance per call.
    resettable: Vec<bool>,
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
        let resettable = plugins.chain.iter().map(|_| plugins.reset).collect();
        WorkerPool {
            metrics: Arc::new(WorkerMetrics::new(plugins.chain.len())),
            plugins,
            live: None,
            generation: 0,
            isolation,
            shared,
            resettable,
            spare,
            messenger,
        }
    }

    /// A pool that follows `live`: each hook first checks (one atomic load) whether a new
    /// version was swapped in, and moves to it between two messages.
    pub fn live(live: Arc<Live>, messenger: Option<Arc<Messenger>>) -> Self {
        let (generation, plugins) = live.current();
        let mut pool = WorkerPool::new(plugins, messenger);
        pool.live = Some(live);
        pool.generation = generation;
        pool
    }

    /// Moves to the live chain's newest version if there is one: this worker's own instances
    /// (`--isolation worker`) and recycled states belong to the old one and are dropped.
    fn refresh(&mut self) {
        let Some(live) = &self.live else { return };
        if live.generation() == self.generation {
            return;
        }
        let (generation, plugins) = live.current();
        self.isolation = plugins.chain.iter().map(|p| p.isolation).collect();
        self.shared = plugins.chain.iter().map(|_| None).collect();
        self.spare = plugins.chain.iter().map(|_| None).collect();
        self.resettable = plugins.chain.iter().map(|_| plugins.reset).collect();
        self.plugins = plugins;
        self.generation = generation;
    }

    /// The older version `own` is pinned to, if it is not the one this worker serves now.
    fn stale(&self, own: &ConnInstances) -> Option<Arc<Plugins>> {
        own.pinned
            .as_ref()
            .filter(|p| !Arc::ptr_eq(p, &self.plugins))
            .cloned()
    }

    /// Readies `own` for a hook under the current version: instances made under an older one
    /// are dropped unless the connection is pinned to it.
    fn follow(&mut self, own: &mut ConnInstances) {
        self.refresh();
        if own.pinned.is_none() && own.generation != self.generation {
            own.instances.clear();
            own.generation = self.generation;
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
        self.follow(own);
        let pins = self
            .plugins
            .chain
            .iter()
            .any(|p| p.isolation == Isolation::Connection);
        if self.live.is_some() && pins {
            own.pinned = Some(self.plugins.clone());
        }
        let mut greetings = Vec::new();
        for i in 0..self.plugins.chain.len() {
            let res = self.call(None, i, conn.id, own, "on-connect", |inst| {
                inst.on_connect(conn)
            });
            match res.map(|r| r.map(|resp| self.capped(None, i, "on-connect", resp))) {
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
                    return (
                        greetings,
                        i,
                        Err(self.returned(None, i, "on-connect", msg, own)),
                    )
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
        self.follow(own);
        let stale = self.stale(own);
        let mut msg = Cow::Borrowed(message);
        let last = stale.as_ref().unwrap_or(&self.plugins).chain.len() - 1;
        for i in 0..=last {
            self.metrics.message_in(i, msg.len());
            let resp = self.call(stale.as_ref(), i, conn.id, own, "on-message", |inst| {
                inst.on_message(conn, &msg)
            })?;
            let resp = match resp {
                Ok(resp) => self.capped(stale.as_ref(), i, "on-message", resp)?,
                Err(m) => return Err(self.returned(stale.as_ref(), i, "on-message", m, own)),
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
        self.follow(own);
        let stale = self.stale(own);
        // A swap may have made the chain shorter since the connection opened.
        let stages = stale.as_ref().unwrap_or(&self.plugins).chain.len();
        let failed = (0..connected.min(stages))
            .filter_map(|i| {
                self.call(stale.as_ref(), i, conn.id, own, "on-disconnect", |inst| {
                    inst.on_disconnect(conn)
                })
                .err()
            })
            .collect();
        // The connection's own instances die with it, and its hold on its version.
        own.instances.clear();
        own.pinned = None;
        failed
    }

    /// Drops the instances a quiet connection owns (`--hibernate-after`): its next call makes
    /// fresh ones, as `--isolation message` does for every call. Returns how many were dropped.
    pub fn hibernate(&mut self, own: &mut ConnInstances) -> usize {
        let mut dropped = 0;
        for (i, slot) in own.instances.iter_mut().enumerate() {
            if slot.take().is_some() {
                self.metrics.instance_hibernated(i);
                dropped += 1;
            }
        }
        dropped
    }

    /// `resp`, unless its reply is over `--max-reply-bytes`: then an error, and the reply is
    /// dropped here rather than queued for the client (the instance itself did nothing wrong).
    fn capped(
        &self,
        stale: Option<&Arc<Plugins>>,
        i: usize,
        hook: &'static str,
        resp: Response,
    ) -> Result<Response, CallError> {
        let plugins = stale.unwrap_or(&self.plugins);
        let max = plugins.max_reply_bytes;
        match resp.reply.as_ref().map(Vec::len) {
            Some(size) if size > max => Err(CallError {
                plugin: plugins.chain[i].name.clone(),
                hook,
                cause: Cause::ReplyTooLarge { size, max },
            }),
            _ => Ok(resp),
        }
    }

    /// An `err` result: logged like a trap, and the instance is not trusted further.
    fn returned(
        &mut self,
        stale: Option<&Arc<Plugins>>,
        i: usize,
        hook: &'static str,
        msg: String,
        own: &mut ConnInstances,
    ) -> CallError {
        let plugins = stale.unwrap_or(&self.plugins).clone();
        let isolation = stale_isolation(stale, plugins.chain[i].isolation, self.isolation.get(i));
        *slot_of(&mut self.shared, isolation, i, own) = None;
        CallError {
            plugin: plugins.chain[i].name.clone(),
            hook,
            cause: Cause::Returned(msg),
        }
    }

    /// Calls one hook of plugin `i` on the instance the isolation mode picks (made first if
    /// there is none), under the call's budget. A trap or timeout throws the instance away.
    /// A call that ran (its instance made) is timed from its start, which `limits` reads once.
    /// `stale` is the older version a pinned connection runs on instead of the current one.
    fn call<R>(
        &mut self,
        stale: Option<&Arc<Plugins>>,
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
            resettable,
            spare,
            messenger,
            metrics,
            ..
        } = self;
        let plugins: &Plugins = stale.map_or(&**plugins, |p| &**p);
        let plugin = &plugins.chain[i];
        let isolation = stale_isolation(stale, plugin.isolation, isolation.get(i));
        // The recycled states belong to the current version's plugins.
        let mut spare = if stale.is_some() {
            None
        } else {
            Some(&mut spare[i])
        };
        let fresh_each_call = isolation == Isolation::Message;
        // A pinned connection's older version keeps new instances per call: its worker's slots
        // belong to the current version.
        let in_place = fresh_each_call && stale.is_none() && resettable[i];
        let fail = |cause| CallError {
            plugin: plugin.name.clone(),
            hook,
            cause,
        };
        // Past the shutdown cut-off the call is refused before any guest code runs.
        let start = |store: &mut Store<HostState>| {
            limits::start_call(store, conn, plugins.timeout).map_err(|_| fail(Cause::CutOff))
        };
        let slot = if in_place {
            &mut shared[i]
        } else {
            slot_of(shared, isolation, i, own)
        };
        let started = match slot {
            Some(inst) => match start(&mut inst.store) {
                Ok(started) => started,
                Err(e) => {
                    *slot = None;
                    return Err(e);
                }
            },
            None => {
                let reuse = spare.as_mut().and_then(|s| s.take());
                let mut store = plugins.new_store(plugin, reuse, messenger.as_ref());
                let started = start(&mut store)?;
                let mut inst = Instance::new(plugin, store)
                    .map_err(|e| fail(Cause::Instantiate(format!("{e:#}"))))?;
                metrics.instance_created(i);
                if in_place && !inst.prepare_reset() {
                    tracing::debug!(plugin = %plugin.name, "instances cannot be reset in place");
                    resettable[i] = false;
                }
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
                if in_place && inst.reset(|| plugins.new_state(plugin, messenger.as_ref())) {
                    metrics.instance_reset(i, inst.last_reset_scanned());
                } else if fresh_each_call {
                    let used = slot.take().expect("called above");
                    let recycled = used.into_state().recycle();
                    if let Some(s) = spare {
                        *s = recycled;
                    }
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

/// The isolation a stage runs under: its own, except that a connection pinned to an older
/// version keeps that version's worker-isolated instances itself (the worker's own belong to
/// the current version). `current` is the worker's mode for stage `i`, when it has one.
fn stale_isolation(
    stale: Option<&Arc<Plugins>>,
    own: Isolation,
    current: Option<&Isolation>,
) -> Isolation {
    match (stale, current) {
        (Some(_), _) if own == Isolation::Worker => Isolation::Connection,
        (Some(_), _) => own,
        (None, Some(&mode)) => mode,
        (None, None) => own,
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
            if own.instances.len() <= i {
                own.instances.resize_with(i + 1, || None);
            }
            &mut own.instances[i]
        }
    }
}
