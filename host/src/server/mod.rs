//! The server: one acceptor thread hands connections to W worker threads, each running its own
//! event loop, connections and handler. A worker that panics stops the whole server.

mod acceptor;
mod budget;
mod connection;
mod handler;
pub mod messaging;
pub(crate) mod proxy_header;
pub mod stats;
pub mod tls;
mod transport;
mod worker;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context as _;
use mio::net::TcpListener;
use mio::{Poll, Waker};

use crate::config::Config;
use crate::error::Error;
use crate::metrics::{Exporter, Metrics};
use crate::plugin::limits::CutOff;
use crate::plugin::live::{self, Reloader, Trigger};
use crate::plugin::{Live, Loader, WorkerPool};
use crate::record::Recorder;
use crate::shutdown::Shutdown;
use handler::{Handler, NativeEcho};
use messaging::Messenger;
use stats::Stats;
use tls::Tls;

/// Worker threads run plugin code on their own stack, which must hold wasmtime's 512 KiB wasm
/// stack plus the host frames around it.
const WORKER_STACK: usize = 8 << 20;

/// A loaded, ready-to-run server.
pub struct Server {
    config: Config,
    /// The chain serving now, swapped whole by the reloader.
    live: Arc<Live>,
    /// Watches the plugin files and swaps `live`; started by `run`.
    reloader: Option<Reloader>,
    /// With `--record`: the workers' handle, and the writer thread to wait for at the end.
    recorder: Option<(Recorder, JoinHandle<()>)>,
    shutdown: Shutdown,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
    tls: Option<Arc<Tls>>,
}

/// State every thread of a running server reads.
pub(crate) struct Shared {
    pub config: Config,
    pub live: Arc<Live>,
    pub stats: Arc<Stats>,
    /// What the workers count beyond `stats`, one part per worker.
    pub metrics: Arc<Metrics>,
    /// Connections open per worker, so the acceptor can pick the least loaded one.
    pub per_worker: Vec<AtomicUsize>,
    /// Connections open per client address.
    pub per_ip: acceptor::PerIp,
    /// The bytes all connections hold, against `--max-buffered-bytes`.
    pub budget: Arc<budget::Budget>,
    pub shutdown: Shutdown,
    /// Where sessions are recorded (`--record`).
    pub recorder: Option<Recorder>,
    /// Until the acceptor has handed over the connections queued at shutdown (then it wakes
    /// every worker): a draining worker with no connection left waits for this to end.
    pub accepting: AtomicBool,
    /// With `--tls-cert`: what new connections' handshakes use (reloaded on SIGHUP).
    pub tls: Option<Arc<Tls>>,
}

impl Server {
    /// Checks the configuration, then loads and checks every plugin; nothing listens yet.
    pub fn new(config: Config) -> Result<Server, Error> {
        config.validate()?;
        let tls = (config.tls_files())
            .map(|files| Tls::load(files).map(Arc::new).map_err(Error::Tls))
            .transpose()?;
        let cutoff = CutOff::default();
        let loader = Loader::new(&config, cutoff.clone())?;
        let live = Live::new(Arc::new(loader.load_start(&config.plugins)?));
        let shutdown = Shutdown::new(config.shutdown_timeout, cutoff);
        let watched = match &config.plugins_dir {
            Some(dir) => live::Watched::Folder(dir.clone()),
            None => live::Watched::Files(config.plugins.clone()),
        };
        // Counters for as many stages as a reloaded chain may have.
        let stages = config.plugins.len().max(live::MAX_STAGES);
        let metrics = Arc::new(Metrics::new(config.workers, stages));
        let recorder = match &config.record {
            Some(dir) => Some(
                Recorder::start(dir, config.record_max_bytes, metrics.record_dropped()).map_err(
                    |e| {
                        Error::config(format!(
                            "--record {}: cannot record there: {e}",
                            dir.display()
                        ))
                    },
                )?,
            ),
            None => None,
        };
        Ok(Server {
            recorder,
            reloader: Some(Reloader::new(
                loader,
                live.clone(),
                watched,
                shutdown.clone(),
            )),
            shutdown,
            metrics,
            config,
            live,
            stats: Arc::default(),
            tls,
        })
    }

    /// SIGHUP's TLS part (see `reload`): reload the certificate and key, if any (new handshakes
    /// use them, open connections keep theirs; a bad pair is refused and logged).
    pub fn on_hangup(&self) -> impl Fn() + Send + 'static {
        let tls = self.tls.clone();
        move || {
            if let Some(tls) = &tls {
                tls.reload_logged();
            }
        }
    }

    /// The handle that stops this server (from a signal handler, another thread, a test).
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// The server's counters; they go on counting while it runs.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// What makes the server reload its plugin files now (SIGHUP sends to it; see `reload`).
    pub fn reload_trigger(&self) -> impl Fn() + Send + 'static {
        let tx = self.reloader.as_ref().map(Reloader::trigger);
        move || {
            if let Some(tx) = &tx {
                let _ = tx.send(Trigger::Hangup);
            }
        }
    }

    /// What `/metrics` serves: these stats and the workers' counters, read at each scrape; and
    /// with `--state-required-for-ready`, the store `/readyz` asks.
    pub fn exporter(&self) -> Exporter {
        let plugins = self.live.current().1;
        let exporter = Exporter::new(
            self.stats.clone(),
            self.metrics.clone(),
            plugins.ops.clone(),
            self.live.clone(),
        );
        let exporter = match &self.tls {
            Some(tls) => exporter.with_tls(tls.clone()),
            None => exporter,
        };
        if self.config.state_required_for_ready {
            exporter.with_state_check(plugins.state.clone())
        } else {
            exporter
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Binds the configured address, so errors there are told apart from plugin errors.
    pub fn bind(&self) -> Result<TcpListener, Error> {
        let addr = self.config.listen;
        let bound = if self.config.reuse_port {
            bind_reusing_port(addr)
        } else {
            TcpListener::bind(addr)
        };
        bound.map_err(|source| Error::Bind { addr, source })
    }

    /// Serves clients from `listener` until shutdown is triggered, then drains and returns;
    /// an error if a server thread panicked.
    pub fn run(mut self, listener: TcpListener) -> Result<(), Error> {
        if self.config.native_echo {
            self.run_with(listener, |_, _| NativeEcho)
        } else {
            if let Some(reloader) = self.reloader.take() {
                reloader.spawn(self.config.watch).map_err(|e| {
                    Error::Runtime(anyhow::Error::new(e).context("cannot start the reloader"))
                })?;
            }
            if let (Some(tls), true) = (&self.tls, self.config.watch) {
                tls::watch::spawn(tls.clone(), self.shutdown.clone()).map_err(|e| {
                    Error::Runtime(anyhow::Error::new(e).context("cannot watch the TLS files"))
                })?;
            }
            let live = self.live.clone();
            let metrics = self.metrics.clone();
            self.run_with(listener, move |index, messenger| {
                WorkerPool::live(live.clone(), Some(messenger.clone()))
                    .observed(metrics.worker(index))
            })
        }
    }

    /// Runs with the handler `handler(worker index, messenger)` makes for each worker.
    fn run_with<H>(
        self,
        listener: TcpListener,
        handler: impl Fn(usize, &Arc<Messenger>) -> H,
    ) -> Result<(), Error>
    where
        H: Handler + Send + 'static,
    {
        let workers = self.config.workers;
        let shutdown = self.shutdown;
        let (recorder, record_writer) = self.recorder.unzip();
        let shared = Arc::new(Shared {
            recorder,
            per_worker: (0..workers).map(|_| AtomicUsize::new(0)).collect(),
            per_ip: acceptor::PerIp::default(),
            budget: budget::Budget::new(self.config.max_buffered_bytes, self.metrics.buffered()),
            config: self.config,
            live: self.live,
            stats: self.stats,
            metrics: self.metrics,
            shutdown: shutdown.clone(),
            accepting: AtomicBool::new(true),
            tls: self.tls,
        });
        let mut handles: Vec<JoinHandle<()>> = Vec::new();
        let mut inboxes = Vec::new();
        let result = (|| -> anyhow::Result<()> {
            // Every worker's inboxes exist before any worker runs: a handler may send to a
            // connection of any of them.
            let mut loops = Vec::new();
            let mut outboxes = Vec::new();
            for _ in 0..workers {
                let poll = Poll::new().context("cannot create an event loop")?;
                let waker = Arc::new(
                    Waker::new(poll.registry(), worker::WAKER).context("cannot create a waker")?,
                );
                let (tx, rx) = crossbeam_channel::unbounded();
                inboxes.push(acceptor::Inbox {
                    tx,
                    waker: waker.clone(),
                });
                // Bounded by the bytes in flight to each receiver (see `messaging`).
                let (dtx, drx) = crossbeam_channel::unbounded();
                outboxes.push(messaging::Inbox::new(dtx, waker.clone()));
                shutdown.subscribe(waker);
                loops.push((poll, rx, drx));
            }
            let mut messenger = Messenger::new(
                outboxes,
                shared.config.max_output_bytes,
                shared.config.max_rooms_per_connection,
            );
            if shared.config.state.starts_with("redis://") {
                let bus = messaging::bus::Bus::open(&shared.config.state, shared.metrics.bus())
                    .context("cannot open the messaging bus")?;
                messenger = messenger.with_bus(Arc::new(bus));
            }
            let messenger = Arc::new(messenger);
            messenger
                .start_bus()
                .context("cannot start the messaging bus's threads")?;
            for (index, (poll, rx, drx)) in loops.into_iter().enumerate() {
                let w = worker::Worker::new(
                    index,
                    poll,
                    (rx, drx),
                    shared.clone(),
                    messenger.clone(),
                    handler(index, &messenger),
                );
                let shared = shared.clone();
                handles.push(
                    std::thread::Builder::new()
                        .name(format!("sandport-worker-{index}"))
                        .stack_size(WORKER_STACK)
                        .spawn(move || {
                            if std::panic::catch_unwind(AssertUnwindSafe(|| w.run())).is_err() {
                                worker_panicked(&shared, index);
                            }
                        })
                        .context("cannot start a worker thread")?,
                );
            }
            let first_id = messenger.first_id();
            let acc = acceptor::Acceptor::new(listener, inboxes, shared.clone(), first_id)?;
            shutdown.subscribe(acc.waker());
            let shared = shared.clone();
            handles.push(
                std::thread::Builder::new()
                    .name("sandport-acceptor".into())
                    .spawn(move || {
                        if std::panic::catch_unwind(AssertUnwindSafe(|| acc.run())).is_err() {
                            // Nothing would accept again: stop rather than serve on half-alive.
                            tracing::error!("the acceptor panicked: stopping the server");
                            shared.stats.thread_panicked();
                            shared
                                .accepting
                                .store(false, std::sync::atomic::Ordering::SeqCst);
                            shared.shutdown.trigger();
                        }
                    })
                    .context("cannot start the acceptor thread")?,
            );
            Ok(())
        })();
        if result.is_err() {
            // No acceptor (or not all of it) runs: nothing will be handed over.
            shared
                .accepting
                .store(false, std::sync::atomic::Ordering::SeqCst);
            shutdown.trigger();
        }
        for h in handles {
            if h.join().is_err() {
                tracing::error!("a server thread panicked");
            }
        }
        shared.stats.log_summary();
        let stats = shared.stats.clone();
        // Every thread holding a recorder has ended: the writer writes what is queued and ends.
        drop(shared);
        if let Some(w) = record_writer {
            if w.join().is_err() {
                tracing::error!("the recording thread panicked");
            }
        }
        result.map_err(Error::Runtime)?;
        match stats.snapshot().thread_panics {
            0 => Ok(()),
            n => Err(Error::ThreadPanicked(n)),
        }
    }
}

/// A listener sharing its address with other sockets that set `SO_REUSEPORT` (a newer sandport
/// during an upgrade): the kernel spreads new connections between them. Otherwise as mio's
/// `bind`: `SO_REUSEADDR` (a restart does not wait out `TIME_WAIT`), non-blocking, backlog 1024.
fn bind_reusing_port(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(acceptor::BACKLOG as i32)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// Reported as soon as the worker's stack has unwound (its sockets are closed by then): its
/// connections are counted closed and the whole server stops, rather than serving on with
/// a thread fewer and its clients silently gone.
fn worker_panicked(shared: &Shared, index: usize) {
    let lost = shared.per_worker[index].swap(0, Relaxed);
    shared.stats.closed(lost, 0, stats::Close::WorkerPanic);
    shared.stats.thread_panicked();
    tracing::error!(
        worker = index,
        connections = lost,
        "worker panicked: its connections are closed; stopping the server"
    );
    shared.shutdown.trigger();
}

#[cfg(test)]
mod tests;
