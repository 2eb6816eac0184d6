//! Shutdown: the handle that stops a running server, the signals that trigger it, and the one
//! deadline every thread reads.
//!
//! The first [`Shutdown::trigger`] fixes the deadline at that instant plus
//! `--shutdown-timeout-ms`. Workers drain until it, and plugin calls still running then are cut
//! off by it (the same instant, through [`CutOff`]), so a shutdown takes at most the timeout plus
//! one epoch tick, whichever thread notices first.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::Waker;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::error::Error;

use crate::plugin::limits::CutOff;

/// Stops a running server: stop accepting, finish in-flight messages, close, return from `run`.
/// Cheap to clone; every clone stops the same server.
#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

struct Inner {
    requested: AtomicBool,
    /// How long after the trigger in-flight work may go on.
    grace: Duration,
    /// The deadline, set at the trigger; shared with every plugin call's budget.
    cutoff: CutOff,
    /// The event loops to wake when shutdown is asked for.
    wakers: Mutex<Vec<Arc<Waker>>>,
}

impl Shutdown {
    /// A handle whose deadline will be `grace` after the trigger, written into `cutoff`.
    pub(crate) fn new(grace: Duration, cutoff: CutOff) -> Self {
        Shutdown {
            inner: Arc::new(Inner {
                requested: AtomicBool::new(false),
                grace,
                cutoff,
                wakers: Mutex::default(),
            }),
        }
    }

    /// Asks every thread of the server to stop; safe from any thread, any number of times (the
    /// first call fixes the deadline).
    pub fn trigger(&self) {
        self.inner.cutoff.set(Instant::now() + self.inner.grace);
        self.inner.requested.store(true, Ordering::SeqCst);
        for w in self.wakers().iter() {
            // A failed wake means the loop is already gone.
            let _ = w.wake();
        }
    }

    pub fn is_triggered(&self) -> bool {
        self.inner.requested.load(Ordering::SeqCst)
    }

    /// When in-flight work is cut off: `None` until shutdown is triggered.
    pub fn deadline(&self) -> Option<Instant> {
        self.inner.cutoff.at()
    }

    /// Triggers on the first SIGINT or SIGTERM; a second one exits the process at once (130).
    /// SIGHUP calls `on_hangup` (reloading the TLS certificate), and never stops the process.
    pub fn on_signals(&self, on_hangup: impl Fn() + Send + 'static) -> Result<(), Error> {
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])
            .map_err(|e| Error::Runtime(anyhow::Error::new(e).context("cannot handle signals")))?;
        let shutdown = self.clone();
        std::thread::Builder::new()
            .name("sandport-signals".into())
            .spawn(move || {
                let stops = signals.forever().filter(|&sig| {
                    if sig == SIGHUP {
                        tracing::info!(signal = "SIGHUP", "reloading");
                        on_hangup();
                    }
                    sig != SIGHUP
                });
                for (seen, sig) in stops.enumerate() {
                    let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
                    if seen == 0 {
                        tracing::info!(signal = name, "shutting down");
                        shutdown.trigger();
                    } else {
                        tracing::warn!(signal = name, "second signal: exiting now");
                        std::process::exit(130);
                    }
                }
            })
            .map_err(|e| {
                Error::Runtime(anyhow::Error::new(e).context("cannot start the signal thread"))
            })?;
        Ok(())
    }

    /// Registers an event loop's waker; it is woken at once if shutdown was already asked for.
    pub(crate) fn subscribe(&self, waker: Arc<Waker>) {
        self.wakers().push(waker.clone());
        if self.is_triggered() {
            let _ = waker.wake();
        }
    }

    fn wakers(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Waker>>> {
        // A thread that panicked while holding it cannot have left the list half-changed.
        self.inner.wakers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_trigger_fixes_one_deadline_for_every_reader() {
        let cutoff = CutOff::default();
        let shutdown = Shutdown::new(Duration::from_millis(500), cutoff.clone());
        assert!(!shutdown.is_triggered());
        assert_eq!(shutdown.deadline(), None);
        let before = Instant::now();
        shutdown.trigger();
        let deadline = shutdown.deadline().expect("set by the trigger");
        assert!(deadline >= before + Duration::from_millis(500));
        assert!(deadline <= Instant::now() + Duration::from_millis(500));
        assert_eq!(
            cutoff.at(),
            Some(deadline),
            "plugin calls read the same instant"
        );
        std::thread::sleep(Duration::from_millis(2));
        shutdown.clone().trigger();
        assert_eq!(
            shutdown.deadline(),
            Some(deadline),
            "a second signal moves nothing"
        );
    }
}
