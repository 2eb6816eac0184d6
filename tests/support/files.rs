//! Paths of the workspace, the binary and the plugins; throw-away folders; the compile cache
//! shared by the servers of one run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

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
// The tests' compile cache

/// The compile cache (`SANDPORT_CACHE_DIR`) of every `sandport` the tests start without choosing
/// their own: one folder under cargo's scratch folder for integration tests
/// (`CARGO_TARGET_TMPDIR`, removed by `cargo clean`), so that the tests neither read nor fill
/// the user's `~/.cache/sandport`.
///
/// It is shared by the test runs of one target dir, not made anew per run: its entries are keyed
/// by the plugin's bytes, the engine's settings and wasmtime's version, so a run can only reuse
/// code compiled for exactly what it loads, and a fresh folder per run measured about 52 s more
/// per run (seven compiles of the Python and JavaScript components).
pub fn test_cache_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sandport-compile-cache");
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("create the tests' cache {}: {e}", dir.display()));
        dir
    })
}
