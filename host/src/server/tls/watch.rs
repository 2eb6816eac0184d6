//! Reloading the TLS files when they change on disk, as the plugins folder's watcher does for
//! plugins: a `notify` watcher on their folders (a renamed-in file replaces an inode, so the
//! folder is watched, not the file), then a reload once events have stopped for a moment, so a
//! certificate and key replaced one after the other load as a pair.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::RecvTimeoutError;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};

use super::Tls;
use crate::shutdown::Shutdown;

/// Events must stop this long before the files are read again.
const QUIET: Duration = Duration::from_millis(300);
/// How often an idle watcher looks whether the server is stopping.
const IDLE_CHECK: Duration = Duration::from_millis(250);

/// Watches `tls`'s files and reloads them on a change, on a thread of its own until shutdown.
/// A watcher that cannot start is logged: SIGHUP still reloads.
pub fn spawn(tls: Arc<Tls>, shutdown: Shutdown) -> std::io::Result<()> {
    let files: Vec<PathBuf> = [Some(&tls.files.cert), Some(&tls.files.key)]
        .into_iter()
        .chain([tls.files.client_ca.as_ref()])
        .flatten()
        .cloned()
        .collect();
    let (tx, rx) = crossbeam_channel::unbounded();
    let names: BTreeSet<_> = files
        .iter()
        .filter_map(|f| f.file_name())
        .map(|n| n.to_owned())
        .collect();
    let handler = move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if ev
                .paths
                .iter()
                .any(|p| p.file_name().is_some_and(|n| names.contains(n)))
            {
                let _ = tx.send(());
            }
        }
    };
    let watcher = RecommendedWatcher::new(handler, notify::Config::default()).and_then(|mut w| {
        for folder in folders(&files) {
            w.watch(&folder, RecursiveMode::NonRecursive)?;
        }
        Ok(w)
    });
    let watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("cannot watch the TLS files ({e}): only SIGHUP reloads them");
            return Ok(());
        }
    };
    std::thread::Builder::new()
        .name("sandport-tls-watch".into())
        .spawn(move || {
            let _watcher = watcher;
            loop {
                match rx.recv_timeout(IDLE_CHECK) {
                    Ok(()) => {
                        // Until the files have been quiet for a moment.
                        while rx.recv_timeout(QUIET).is_ok() {}
                        tls.reload_logged();
                    }
                    Err(RecvTimeoutError::Timeout) if !shutdown.is_triggered() => {}
                    Err(_) => return,
                }
            }
        })
        .map(drop)
}

/// The folders holding `files` (`.` for a bare name).
fn folders(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    files
        .iter()
        .map(|f| match f.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => Path::new(".").to_path_buf(),
        })
        .collect()
}
