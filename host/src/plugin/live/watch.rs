//! Noticing that plugin files changed: a `notify` watcher on the folders that hold them
//! (inotify on Linux), or its polling watcher where inotify cannot be used. Events only wake
//! the reloader; what changed is found by its own scan, so a missed or merged event costs
//! nothing but a moment.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crossbeam_channel::Sender;
use notify::{PollWatcher, RecommendedWatcher, RecursiveMode, Watcher};

use super::reloader::Trigger;

/// How often the polling fallback looks at the folders.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// Whether a file name may be a plugin of a folder: `*.wasm`, and not a dotfile (editors' and
/// copy tools' temporary files). `x.wasm.tmp` is not one, so writing it then renaming it into
/// place is the atomic way to deploy.
pub fn is_plugin_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.') && name.ends_with(".wasm")
}

/// What the watcher looks at: the plugins folder (every plugin name in it counts), or the
/// `--plugin` files (only those names count).
#[derive(Debug, Clone)]
pub enum Watched {
    Folder(PathBuf),
    Files(Vec<PathBuf>),
}

impl Watched {
    /// The folders to watch: renames into place replace a file's inode, so its folder is
    /// watched, not the file.
    fn folders(&self) -> BTreeSet<PathBuf> {
        match self {
            Watched::Folder(dir) => [dir.clone()].into(),
            Watched::Files(files) => files
                .iter()
                .map(|f| match f.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => PathBuf::from("."),
                })
                .collect(),
        }
    }

    /// Whether an event on `path` may change the chain.
    fn concerns(&self, path: &Path) -> bool {
        match self {
            Watched::Folder(_) => is_plugin_name(path),
            Watched::Files(files) => files.iter().any(|f| f.file_name() == path.file_name()),
        }
    }
}

/// A running watcher; dropping it stops it.
pub struct Watch(#[allow(dead_code)] Box<dyn Watcher + Send>);

/// Watches `what`, sending [`Trigger::Changed`] on every event that concerns it; falls back to
/// polling when the native watcher cannot start (no inotify, its watch limit reached).
pub fn start(what: &Watched, tx: Sender<Trigger>) -> notify::Result<Watch> {
    let handler = {
        let what = what.clone();
        move |res: notify::Result<notify::Event>| match res {
            Ok(ev) if ev.paths.iter().any(|p| what.concerns(p)) => {
                let _ = tx.send(Trigger::Changed);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("watching the plugin files: {e}"),
        }
    };
    let folders = what.folders();
    let native = RecommendedWatcher::new(handler.clone(), notify::Config::default())
        .and_then(|w| watch_all(w, &folders));
    match native {
        Ok(w) => Ok(Watch(Box::new(w))),
        Err(e) => {
            tracing::warn!("cannot watch the plugin files natively ({e}): polling them instead");
            let poll = notify::Config::default().with_poll_interval(POLL_EVERY);
            let w = watch_all(PollWatcher::new(handler, poll)?, &folders)?;
            Ok(Watch(Box::new(w)))
        }
    }
}

fn watch_all<W: Watcher>(mut w: W, folders: &BTreeSet<PathBuf>) -> notify::Result<W> {
    for f in folders {
        w.watch(f, RecursiveMode::NonRecursive)?;
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_wasm_names_that_are_not_dotfiles_are_plugins() {
        assert!(is_plugin_name(Path::new("dir/upper.wasm")));
        assert!(!is_plugin_name(Path::new("dir/upper.wasm.tmp")));
        assert!(!is_plugin_name(Path::new("dir/.upper.wasm")));
        assert!(!is_plugin_name(Path::new("dir/notes.txt")));
    }

    #[test]
    fn named_files_are_watched_through_their_folders() {
        let w = Watched::Files(vec!["a/x.wasm".into(), "a/y.wasm".into(), "z.wasm".into()]);
        let folders: Vec<_> = w.folders().into_iter().collect();
        assert_eq!(folders, [PathBuf::from("."), PathBuf::from("a")]);
        assert!(w.concerns(Path::new("/abs/a/x.wasm")));
        assert!(!w.concerns(Path::new("a/other.wasm")));
    }
}
