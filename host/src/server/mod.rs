//! The server: one acceptor thread hands connections to W worker threads, each running its own
//! event loop, connections and plugin instances; plus the shutdown handle that stops them all.

mod acceptor;
mod connection;
pub mod stats;
mod worker;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::Context as _;
use mio::net::TcpListener;
use mio::{Poll, Waker};

use crate::config::Config;
use crate::error::Error;
use crate::plugin::{CutOff, Plugins};
use stats::Stats;

/// Worker threads run plugin code on their own stack, which must hold wasmtime's 512 KiB wasm
/// stack plus the host frames around it.
const WORKER_STACK: usize = 8 << 20;

/// A loaded, ready-to-run server.
pub struct Server {
    config: Config,
    plugins: Arc<Plugins>,
}

/// State every thread of a running server reads.
pub(crate) struct Shared {
    pub config: Config,
    pub plugins: Arc<Plugins>,
    pub stats: Stats,
    /// Connections open now, across workers: checked against `--max-connections` at accept.
    pub open: AtomicUsize,
    /// Connections open per worker, so the acceptor can pick the least loaded one.
    pub per_worker: Vec<AtomicUsize>,
    pub shutdown: Shutdown,
}

/// Stops a running server: stop accepting, finish in-flight messages, close, return from `run`.
#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<ShutdownInner>,
}

#[derive(Default)]
struct ShutdownInner {
    requested: AtomicBool,
    /// When shutdown was first asked for: the drain deadline counts from here.
    since: OnceLock<Instant>,
    wakers: Mutex<Vec<Arc<Waker>>>,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every thread of the server to stop; safe to call from any thread, any number of times.
    pub fn trigger(&self) {
        self.inner.since.get_or_init(Instant::now);
        self.inner.requested.store(true, Ordering::SeqCst);
        for w in self
            .inner
            .wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            // A failed wake means the loop is already gone.
            let _ = w.wake();
        }
    }

    pub fn is_triggered(&self) -> bool {
        self.inner.requested.load(Ordering::SeqCst)
    }

    /// When shutdown was first asked for.
    fn since(&self) -> Option<Instant> {
        self.inner.since.get().copied()
    }

    /// Registers a loop's waker; it is woken at once if shutdown was already asked for.
    fn subscribe(&self, waker: Arc<Waker>) {
        self.inner
            .wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(waker.clone());
        if self.is_triggered() {
            let _ = waker.wake();
        }
    }
}

impl Server {
    /// Loads and checks every plugin; nothing listens yet.
    pub fn new(config: Config) -> Result<Server, Error> {
        let plugins = Arc::new(Plugins::load(&config, CutOff::default())?);
        Ok(Server { config, plugins })
    }

    /// Binds the configured address, so errors there are told apart from plugin errors.
    pub fn bind(&self) -> Result<TcpListener, Error> {
        let addr = self.config.listen;
        TcpListener::bind(addr).map_err(|source| Error::Bind { addr, source })
    }

    /// Serves clients from `listener` until `shutdown` is triggered, then drains and returns.
    pub fn run(self, listener: TcpListener, shutdown: Shutdown) -> Result<(), Error> {
        let workers = self.config.workers;
        let shared = Arc::new(Shared {
            per_worker: (0..workers).map(|_| AtomicUsize::new(0)).collect(),
            config: self.config,
            plugins: self.plugins,
            stats: Stats::default(),
            open: AtomicUsize::new(0),
            shutdown: shutdown.clone(),
        });
        let mut handles: Vec<JoinHandle<()>> = Vec::new();
        let mut inboxes = Vec::new();
        let result = (|| -> anyhow::Result<()> {
            for index in 0..workers {
                let poll = Poll::new().context("cannot create an event loop")?;
                let waker = Arc::new(
                    Waker::new(poll.registry(), worker::WAKER).context("cannot create a waker")?,
                );
                let (tx, rx) = crossbeam_channel::unbounded();
                inboxes.push(acceptor::Inbox {
                    tx,
                    waker: waker.clone(),
                });
                shutdown.subscribe(waker);
                let w = worker::Worker::new(index, poll, rx, shared.clone());
                handles.push(
                    std::thread::Builder::new()
                        .name(format!("sandport-worker-{index}"))
                        .stack_size(WORKER_STACK)
                        .spawn(move || w.run())
                        .context("cannot start a worker thread")?,
                );
            }
            let acc = acceptor::Acceptor::new(listener, inboxes, shared.clone())?;
            shutdown.subscribe(acc.waker());
            handles.push(
                std::thread::Builder::new()
                    .name("sandport-acceptor".into())
                    .spawn(move || acc.run())
                    .context("cannot start the acceptor thread")?,
            );
            Ok(())
        })();
        if result.is_err() {
            shutdown.trigger();
        }
        for h in handles {
            if h.join().is_err() {
                tracing::error!("a server thread panicked");
            }
        }
        shared.stats.log_summary();
        result.map_err(Error::Runtime)
    }
}
