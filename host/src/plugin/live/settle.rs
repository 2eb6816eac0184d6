//! Waiting until plugin files are whole: a scan of the watched files is acted on only once it
//! has stayed the same (size, modification time, inode) for a quiet period, so a file still
//! being copied is not read half way. Pure logic, fed by the reloader's scans.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What changes while a file is written or replaced: (size, mtime in ns, inode). `None` when
/// the file is missing.
pub type Stamp = Option<(u64, i128, u64)>;

/// One scan: every file the chain is made of, in chain order, with its stamp.
pub type Scan = Vec<(PathBuf, Stamp)>;

/// A file's stamp now.
pub fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
    let mtime = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
    Some((m.len(), mtime, m.ino()))
}

/// Tells when consecutive scans have stopped changing for `quiet`.
#[derive(Debug)]
pub struct Settle {
    quiet: Duration,
    last: Option<Scan>,
    since: Instant,
}

impl Settle {
    pub fn new(quiet: Duration, now: Instant) -> Settle {
        Settle {
            quiet,
            last: None,
            since: now,
        }
    }

    /// Feeds one scan taken at `now`; true once scans have been equal for at least `quiet`.
    /// A first scan is never settled: a writer may have started just before it.
    pub fn observe(&mut self, scan: &Scan, now: Instant) -> bool {
        if self.last.as_ref() != Some(scan) {
            self.last = Some(scan.clone());
            self.since = now;
            return false;
        }
        now.duration_since(self.since) >= self.quiet
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUIET: Duration = Duration::from_millis(200);

    fn scan(size: u64) -> Scan {
        vec![(PathBuf::from("p.wasm"), Some((size, 7, 1)))]
    }

    #[test]
    fn a_scan_is_settled_only_after_staying_the_same_for_the_quiet_period() {
        let t0 = Instant::now();
        let mut s = Settle::new(QUIET, t0);
        assert!(!s.observe(&scan(10), t0), "a first scan is never settled");
        assert!(!s.observe(&scan(10), t0 + QUIET / 2));
        assert!(s.observe(&scan(10), t0 + QUIET));
    }

    #[test]
    fn a_file_still_growing_restarts_the_wait() {
        let t0 = Instant::now();
        let mut s = Settle::new(QUIET, t0);
        s.observe(&scan(10), t0);
        assert!(!s.observe(&scan(20), t0 + QUIET), "it grew: wait again");
        assert!(!s.observe(&scan(20), t0 + QUIET + QUIET / 2));
        assert!(s.observe(&scan(20), t0 + 2 * QUIET));
    }

    #[test]
    fn a_file_appearing_or_going_restarts_the_wait() {
        let t0 = Instant::now();
        let mut s = Settle::new(QUIET, t0);
        let gone: Scan = vec![(PathBuf::from("p.wasm"), None)];
        s.observe(&gone, t0);
        assert!(!s.observe(&scan(10), t0 + QUIET));
        assert!(s.observe(&scan(10), t0 + 2 * QUIET));
    }

    #[test]
    fn stamps_change_when_a_file_is_replaced_by_a_rename() {
        let dir = std::env::temp_dir().join(format!("sandport-settle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (p, tmp) = (dir.join("p.wasm"), dir.join("p.wasm.tmp"));
        std::fs::write(&p, b"one").unwrap();
        let before = stamp(&p);
        assert!(before.is_some());
        std::fs::write(&tmp, b"two").unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        assert_ne!(stamp(&p), before, "same size, but another inode");
        assert_eq!(stamp(&dir.join("missing.wasm")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
