//! SIGHUP: what a running server reloads when the operator asks, in one place. Each part of the
//! server that can reload registers a hook (the plugin files, here); one signal thread runs
//! them all, in order, on every SIGHUP.

use signal_hook::consts::SIGHUP;
use signal_hook::iterator::Signals;

use crate::error::Error;

/// Something to reload on SIGHUP; it must not block for long (hand the work to a thread).
pub type Hook = Box<dyn Fn() + Send + 'static>;

/// Runs every hook on each SIGHUP, from a thread of its own, for the process's life. Until this
/// is called SIGHUP keeps its default action (ending the process).
pub fn on_sighup(hooks: Vec<Hook>) -> Result<(), Error> {
    let mut signals = Signals::new([SIGHUP])
        .map_err(|e| Error::Runtime(anyhow::Error::new(e).context("cannot handle SIGHUP")))?;
    std::thread::Builder::new()
        .name("sandport-sighup".into())
        .spawn(move || {
            for _ in signals.forever() {
                tracing::info!(signal = "SIGHUP", "reloading");
                for hook in &hooks {
                    hook();
                }
            }
        })
        .map_err(|e| {
            Error::Runtime(anyhow::Error::new(e).context("cannot start the SIGHUP thread"))
        })?;
    Ok(())
}
