//! Paths of the workspace, the binary and the plugins; throw-away folders; the compile cache
//! shared by the servers of one run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use super::procfs::process_start_time;

/// The workspace root, derived from the host crate's manifest dir.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host crate has a parent directory")
        .to_path_buf()
}

/// Directory holding the example plugins (print, echo, upper).
pub fn plugins_dir() -> PathBuf {
    workspace_root().join("plugins")
}

/// Directory holding the test-only plugins.
pub fn test_plugins_dir() -> PathBuf {
    workspace_root().join("tests").join("plugins")
}

fn existing_plugin(path: PathBuf) -> PathBuf {
    if !path.is_file() {
        panic!(
            "plugin {} does not exist: build the plugins first with `cargo xtask plugins` \
             (from {})",
            path.display(),
            workspace_root().display()
        );
    }
    path
}

/// Path to the example plugin `plugins/NAME.wasm`; panics with a hint when it is not built.
pub fn plugin(name: &str) -> PathBuf {
    existing_plugin(plugins_dir().join(format!("{name}.wasm")))
}

/// Path to the test plugin `tests/plugins/NAME.wasm`; panics with a hint when it is not built.
pub fn test_plugin(name: &str) -> PathBuf {
    existing_plugin(test_plugins_dir().join(format!("{name}.wasm")))
}

/// The binary under test.
pub fn sandport_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sandport"))
}

// ---------------------------------------------------------------------------------------------
// Temp dirs

/// A uniquely named directory under the system temp dir, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!(
            "sandport-test-{tag}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("create temp dir {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `contents` to `name` inside the dir and returns the full path.
    pub fn write(&self, name: &str, contents: &[u8]) -> PathBuf {
        let p = self.join(name);
        std::fs::write(&p, contents).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }

    /// Copies `from` to `name` inside the dir and returns the full path.
    pub fn copy(&self, from: &Path, name: &str) -> PathBuf {
        let p = self.join(name);
        std::fs::copy(from, &p)
            .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", from.display(), p.display()));
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------------------------
// The run's compile cache

/// The compile cache (`SANDPORT_CACHE_DIR`) of every `sandport` this run of the test binary
/// starts without choosing its own: `run-<pid>-<start time>` under cargo's scratch folder for
/// integration tests (`CARGO_TARGET_TMPDIR`), so that the tests neither read nor fill the
/// user's `~/.cache/sandport`, and each plugin is compiled once per run rather than per server.
///
/// The first call removes the folders of earlier runs whose process is gone (a pid alone could
/// have been reused by now: the process's start time must match too).
pub fn run_cache_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sandport-compile-cache");
        remove_finished_runs(&root);
        let pid = std::process::id();
        let started = process_start_time(pid).expect("own /proc/PID/stat");
        let dir = root.join(run_folder_name(pid, started));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("create the run's cache {}: {e}", dir.display()));
        dir
    })
}

fn run_folder_name(pid: u32, started: u64) -> String {
    format!("run-{pid}-{started}")
}

/// Removes every `run-<pid>-<start time>` folder under `root` whose process is not running.
fn remove_finished_runs(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((pid, started)) = name.to_str().and_then(parse_run_folder_name) else {
            continue;
        };
        if process_start_time(pid) != Some(started) {
            // Another run starting at the same time may be removing it too.
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn parse_run_folder_name(name: &str) -> Option<(u32, u64)> {
    let (pid, started) = name.strip_prefix("run-")?.split_once('-')?;
    Some((pid.parse().ok()?, started.parse().ok()?))
}

/// Only the folders of runs that are over go: this run's own stays.
#[test]
fn finished_runs_are_removed_and_running_ones_kept() {
    let root = TempDir::new("run-caches");
    let pid = std::process::id();
    let started = process_start_time(pid).unwrap();
    let names = [
        run_folder_name(pid, started),
        // This process's pid, as another process that started earlier had it.
        run_folder_name(pid, started - 1),
        // No process has the pid 0.
        run_folder_name(0, 0),
        "not-a-run".to_string(),
    ];
    for name in &names {
        std::fs::create_dir_all(root.join(name).join("compiled")).unwrap();
    }
    remove_finished_runs(root.path());
    let kept: Vec<bool> = names.iter().map(|n| root.join(n).exists()).collect();
    assert_eq!(kept, [true, false, false, true], "{names:?}");
}
