//! The reloader thread: on a watcher event or SIGHUP it waits until the plugin files are whole,
//! loads what changed off the worker threads (one low-priority compile thread), and swaps the
//! chain whole. A file that cannot be served is refused, logged and counted; the version
//! serving keeps serving.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::settle::{stamp, Scan, Settle, Stamp};
use super::watch::{self, is_plugin_name, Watched};
use super::{Live, Outcome, MAX_STAGES};
use crate::error::report;
use crate::plugin::loader::{self, short_hash, Loader};
use crate::plugin::registry::{ms, Plugin};
use crate::shutdown::Shutdown;

/// How long scans of the files must stay the same before they are read (see `settle`).
const QUIET: Duration = Duration::from_millis(200);
/// How often files are scanned while they settle.
const SCAN_EVERY: Duration = Duration::from_millis(50);
/// How often an idle reloader looks whether the server is stopping.
const IDLE_CHECK: Duration = Duration::from_millis(250);
/// Worker threads run at nice 0; compiling a new version yields to them.
const COMPILE_NICE: i32 = 10;
/// The compile thread runs the trial instance too, so it needs a worker's stack.
const COMPILE_STACK: usize = 8 << 20;

/// What wakes the reloader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A watched file or folder changed.
    Changed,
    /// SIGHUP: read every file again, whatever its stamp says.
    Hangup,
}

/// Reloads the live chain from the files it was made of.
pub struct Reloader {
    loader: Loader,
    live: Arc<Live>,
    watched: Watched,
    /// Each file's stamp when it was last read: an unchanged file is not read again.
    seen: BTreeMap<PathBuf, Stamp>,
    rx: Receiver<Trigger>,
    tx: Sender<Trigger>,
    shutdown: Shutdown,
}

impl Reloader {
    /// A reloader of `live`, which `loader` made from the files of `watched`.
    pub fn new(loader: Loader, live: Arc<Live>, watched: Watched, shutdown: Shutdown) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        let seen = (live.current().1.chain.iter())
            .map(|p| (p.path.clone(), stamp(&p.path)))
            .collect();
        Reloader {
            loader,
            live,
            watched,
            seen,
            rx,
            tx,
            shutdown,
        }
    }

    /// Where SIGHUP (and tests) send their [`Trigger`].
    pub fn trigger(&self) -> Sender<Trigger> {
        self.tx.clone()
    }

    /// Starts watching (unless `watch` is false: then only SIGHUP reloads) and runs the
    /// reloader on a thread of its own until shutdown.
    pub fn spawn(self, watch: bool) -> std::io::Result<()> {
        let watcher = match watch {
            true => match watch::start(&self.watched, self.tx.clone()) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!("cannot watch the plugin files ({e}): only SIGHUP reloads");
                    None
                }
            },
            false => None,
        };
        // Returns once the compile thread is made too: every thread the server keeps exists
        // before it accepts a client (a thread count read then is final).
        let (ready, started) = crossbeam_channel::bounded(1);
        std::thread::Builder::new()
            .name("sandport-reload".into())
            .spawn(move || {
                let _watcher = watcher;
                self.run(ready);
            })?;
        let _ = started.recv();
        Ok(())
    }

    fn run(mut self, ready: Sender<()>) {
        lower_priority();
        // One compile thread, made here so it inherits the lowered priority: wasmtime compiles
        // functions in parallel on the rayon pool it is called from.
        let pool = match rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .stack_size(COMPILE_STACK)
            .thread_name(|_| "sandport-compile".into())
            .build()
        {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("cannot start the compile thread ({e}): plugins do not reload");
                return;
            }
        };
        let _ = ready.send(());
        loop {
            let force = match self.rx.recv_timeout(IDLE_CHECK) {
                Ok(t) => t == Trigger::Hangup,
                Err(RecvTimeoutError::Timeout) if !self.shutdown.is_triggered() => continue,
                Err(_) => return,
            };
            let Some((scan, hangup)) = self.settled() else {
                return;
            };
            pool.install(|| self.reload(&scan, force || hangup));
        }
    }

    /// Scans until the files stay the same for [`QUIET`]; `None` if shutdown came first.
    /// Also says whether a SIGHUP arrived meanwhile.
    fn settled(&self) -> Option<(Scan, bool)> {
        let mut settle = Settle::new(QUIET, Instant::now());
        let mut hangup = false;
        loop {
            let scan = self.scan();
            if settle.observe(&scan, Instant::now()) {
                return Some((scan, hangup));
            }
            match self.rx.recv_timeout(SCAN_EVERY) {
                Ok(t) => hangup |= t == Trigger::Hangup,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return None,
            }
            if self.shutdown.is_triggered() {
                return None;
            }
        }
    }

    /// The files the chain should be made of now, in chain order, with their stamps.
    fn scan(&self) -> Scan {
        match &self.watched {
            Watched::Files(files) => files.iter().map(|f| (f.clone(), stamp(f))).collect(),
            Watched::Folder(dir) => {
                let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
                    .map(|entries| {
                        entries
                            .filter_map(|e| e.ok().map(|e| e.path()))
                            .filter(|p| is_plugin_name(p))
                            .collect()
                    })
                    .unwrap_or_default();
                found.sort();
                found
                    .into_iter()
                    .map(|f| {
                        let s = stamp(&f);
                        (f, s)
                    })
                    .filter(|(_, s)| s.is_some())
                    .collect()
            }
        }
    }

    /// Loads what changed since the last look (everything when `force`) and swaps the chain
    /// if it changed.
    fn reload(&mut self, scan: &Scan, force: bool) {
        let (_, current) = self.live.current();
        let serving = |path: &Path| current.chain.iter().find(|p| p.path == path).cloned();
        let mut chain: Vec<Arc<Plugin>> = Vec::new();
        let mut swapped = Vec::new();
        for (path, now) in scan {
            let old = serving(path);
            if now.is_none() {
                // A `--plugin` file gone: nothing to load instead, so it serves on.
                if let Some(old) = &old {
                    if self.seen.insert(path.clone(), None).flatten().is_some() {
                        tracing::warn!(plugin = &*old.name, path = %path.display(),
                            "plugin file is gone: the loaded version serves on");
                    }
                }
                chain.extend(old);
                continue;
            }
            if !force && self.seen.get(path) == Some(now) {
                // Unchanged since last read (loaded, or refused and still left out).
                chain.extend(old);
                continue;
            }
            self.seen.insert(path.clone(), *now);
            match self.load(path, old.as_deref()) {
                Ok(Some(new)) => {
                    swapped.push((old.map(|o| o.hash.clone()), new.clone()));
                    chain.push(new);
                }
                Ok(None) => chain.extend(old),
                Err(()) => chain.extend(old),
            }
        }
        let removed: Vec<Arc<Plugin>> = (current.chain.iter())
            .filter(|p| !scan.iter().any(|(path, _)| *path == p.path))
            .cloned()
            .collect();
        if swapped.is_empty() && removed.is_empty() {
            return;
        }
        if chain.is_empty() {
            for gone in &removed {
                self.live.reloads().count(&gone.name, Outcome::Refused);
            }
            tracing::warn!(
                plugins = %names(&current.chain),
                "the plugins folder holds no plugin that can be served: removing the last \
                 plugin is refused, the chain stays as it is"
            );
            return;
        }
        if chain.len() > MAX_STAGES {
            tracing::warn!(
                stages = chain.len(),
                "a chain of more than {MAX_STAGES} plugins is refused: the chain stays as it is"
            );
            return;
        }
        let reloads = self.live.reloads();
        for gone in &removed {
            reloads.count(&gone.name, Outcome::Removed);
            tracing::info!(
                plugin = &*gone.name,
                hash = &*gone.hash,
                "plugin removed from the chain"
            );
        }
        let generation = self.live.swap(Arc::new(self.loader.version(chain.clone())));
        for (old, new) in &swapped {
            reloads.count(&new.name, Outcome::Loaded);
            tracing::info!(
                plugin = &*new.name,
                path = %new.path.display(),
                old_hash = old.as_deref().unwrap_or("none"),
                new_hash = &*new.hash,
                load_ms = ms(new.load_time),
                cached = new.cached,
                generation,
                "plugin swapped"
            );
        }
        tracing::info!(plugins = %names(&chain), generation, "plugin chain swapped");
    }

    /// Reads and loads `path`: `Ok(None)` when its bytes are those of the version serving.
    fn load(&self, path: &Path, old: Option<&Plugin>) -> Result<Option<Arc<Plugin>>, ()> {
        let name = crate::plugin::name_of(path);
        let refused = |e: &dyn std::error::Error| {
            self.live.reloads().count(&name, Outcome::Refused);
            tracing::warn!(
                plugin = %name,
                path = %path.display(),
                serving = old.map_or("nothing", |o| &*o.hash),
                reason = %report(e),
                "plugin refused: the version serving keeps serving"
            );
        };
        let bytes = loader::read(path).map_err(|e| refused(&e))?;
        if old.is_some_and(|o| *o.hash == short_hash(&bytes)) {
            return Ok(None);
        }
        match self.loader.load(path, &bytes) {
            Ok(p) => Ok(Some(Arc::new(p))),
            Err(e) => {
                refused(&e);
                Err(())
            }
        }
    }
}

fn names(chain: &[Arc<Plugin>]) -> String {
    chain.iter().map(|p| &*p.name).collect::<Vec<_>>().join(",")
}

/// Makes the calling thread (and the threads it starts) yield to the workers.
fn lower_priority() {
    // SAFETY: setpriority only reads its arguments; on Linux a thread id names one thread.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as _, COMPILE_NICE) };
    if rc != 0 {
        tracing::debug!(
            "cannot lower the reload thread's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}
