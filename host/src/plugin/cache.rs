//! The compiled-code cache: each plugin's compiled form stored under the SHA-256 of its bytes and
//! the engine's compatibility hash, so an unchanged plugin starts without compiling.
//!
//! Entries are written uncompressed by this host's own `serialize` and loaded with
//! `deserialize_file`, which maps them instead of reading and decompressing them: a 15-20 MB
//! Python or JavaScript component then loads in milliseconds instead of seconds.

use std::borrow::Cow;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Engine, Module};

/// Where the cache lives unless `--cache-dir` says otherwise: `$XDG_CACHE_HOME/sandport`, else
/// `~/.cache/sandport`; none without a home.
pub fn default_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("sandport"))
}

/// A folder of compiled plugins that only this user can write to.
pub struct CodeCache {
    dir: PathBuf,
}

/// Whether a load came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cache,
    Compiled,
}

impl CodeCache {
    /// Opens (creating) `dir`; refuses a folder other users could write to, since what is in
    /// it is run as native code.
    pub fn open(dir: &Path) -> Result<CodeCache, String> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me || meta.mode() & 0o022 != 0 {
            return Err(format!(
                "{} is writable by other users or owned by another one: not trusting it",
                dir.display()
            ));
        }
        Ok(CodeCache {
            dir: dir.to_path_buf(),
        })
    }

    fn entry(&self, engine: &Engine, bytes: &[u8], kind: &str) -> PathBuf {
        self.entry_of(engine, &[bytes], kind)
    }

    /// The entry for the contents `parts` (each length-prefixed, so parts cannot run together).
    fn entry_of(&self, engine: &Engine, parts: &[&[u8]], kind: &str) -> PathBuf {
        let mut sha = Sha256::new();
        for part in parts {
            sha.update((part.len() as u64).to_le_bytes());
            sha.update(part);
        }
        let digest = sha.finalize();
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        self.dir
            .join(format!("{hex}-{:016x}.{kind}.cwasm", h.finish()))
    }

    pub fn component(
        &self,
        engine: &Engine,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, Source)> {
        let path = self.entry(engine, bytes, "component");
        // SAFETY: entries are written only by `store` below, from this engine's own
        // `serialize`, into a folder only this user can write (checked in `open`); wasmtime
        // checks the header against the engine and refuses a mismatch.
        if let Ok(c) = unsafe { Component::deserialize_file(engine, &path) } {
            return Ok((c, Source::Cache));
        }
        let component = Component::new(engine, bytes)?;
        self.store(&path, component.serialize());
        Ok((component, Source::Compiled))
    }

    pub fn module(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<(Module, Source)> {
        let path = self.entry(engine, bytes, "module");
        self.cached_module(engine, &path, || Ok(Cow::Borrowed(bytes)))
    }

    /// A module made from `bytes` by `make` (pre-initialization, whose result also depends on
    /// `salt`: the plugin's settings), cached under both: a hit neither runs `make` nor
    /// compiles.
    pub fn derived_module(
        &self,
        engine: &Engine,
        (bytes, salt): (&[u8], &[u8]),
        make: impl FnOnce() -> wasmtime::Result<Vec<u8>>,
    ) -> wasmtime::Result<(Module, Source)> {
        let path = self.entry_of(engine, &[bytes, salt], "preinit");
        self.cached_module(engine, &path, || make().map(Cow::Owned))
    }

    /// The module stored at `path`, or the one compiled from what `source` gives, stored there.
    fn cached_module<'a>(
        &self,
        engine: &Engine,
        path: &Path,
        source: impl FnOnce() -> wasmtime::Result<Cow<'a, [u8]>>,
    ) -> wasmtime::Result<(Module, Source)> {
        // SAFETY: as for components above.
        if let Ok(m) = unsafe { Module::deserialize_file(engine, path) } {
            return Ok((m, Source::Cache));
        }
        let module = Module::new(engine, source()?)?;
        self.store(path, module.serialize());
        Ok((module, Source::Compiled))
    }

    /// Writes an entry atomically (temporary file, then rename); a failure only costs a compile
    /// next time.
    fn store(&self, path: &Path, serialized: wasmtime::Result<Vec<u8>>) {
        let write = |data: &[u8]| -> std::io::Result<()> {
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        let result = serialized
            .map_err(|e| format!("{e:#}"))
            .and_then(|data| write(&data).map_err(|e| e.to_string()));
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), "cannot cache compiled plugin: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("sandport-cache-{tag}-{}", std::process::id()))
    }

    #[test]
    fn a_module_is_compiled_once_then_loaded_from_the_cache() {
        let dir = temp("hit");
        let cache = CodeCache::open(&dir).unwrap();
        let engine = Engine::default();
        let wasm = wat::parse_str("(module (func (export \"f\")))").unwrap();
        let (_, first) = cache.module(&engine, &wasm).unwrap();
        let (_, second) = cache.module(&engine, &wasm).unwrap();
        assert_eq!((first, second), (Source::Compiled, Source::Cache));
        let other = wat::parse_str("(module (func (export \"g\")))").unwrap();
        assert_eq!(cache.module(&engine, &other).unwrap().1, Source::Compiled);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_derived_module_is_made_once_per_source_and_salt() {
        let dir = temp("derived");
        let cache = CodeCache::open(&dir).unwrap();
        let engine = Engine::default();
        let source = wat::parse_str("(module (func (export \"f\")))").unwrap();
        let made = std::cell::Cell::new(0);
        let make = || {
            made.set(made.get() + 1);
            Ok(wat::parse_str("(module (func (export \"g\")))").unwrap())
        };
        let (m, first) = cache
            .derived_module(&engine, (&source, b"a"), make)
            .unwrap();
        assert!(m.get_export("g").is_some());
        let (_, second) = cache
            .derived_module(&engine, (&source, b"a"), make)
            .unwrap();
        let (_, other_salt) = cache
            .derived_module(&engine, (&source, b"b"), make)
            .unwrap();
        assert_eq!(
            (first, second, other_salt, made.get()),
            (Source::Compiled, Source::Cache, Source::Compiled, 2)
        );
        // Not confused with the source's own entry.
        assert_eq!(cache.module(&engine, &source).unwrap().1, Source::Compiled);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_corrupt_entry_is_recompiled_and_replaced() {
        let dir = temp("corrupt");
        let cache = CodeCache::open(&dir).unwrap();
        let engine = Engine::default();
        let wasm = wat::parse_str("(module)").unwrap();
        let entry = cache.entry(&engine, &wasm, "module");
        std::fs::write(&entry, b"not compiled code").unwrap();
        assert_eq!(cache.module(&engine, &wasm).unwrap().1, Source::Compiled);
        assert_eq!(cache.module(&engine, &wasm).unwrap().1, Source::Cache);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_folder_others_can_write_is_refused() {
        let dir = temp("shared");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        let e = CodeCache::open(&dir).err().unwrap();
        assert!(e.contains("writable by other users"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
