//! The file backend: the conformance suite, plus what only a file has (reopening, a real
//! `kill -9` mid-stream, locked and corrupt files).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::File;
use crate::state::{open, Backend, Namespace, OpenError, Quotas, Ttl};

/// A fresh path in the temp folder; the caller removes the file.
fn temp_path(tag: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "sandport-state-{}-{tag}-{n}.redb",
        std::process::id()
    ))
}

/// A backend on a file that is unlinked at once: the open descriptor keeps it alive.
fn unlinked(quotas: Quotas) -> Arc<dyn Backend> {
    let path = temp_path("suite");
    let file = File::open(&path, quotas).unwrap();
    std::fs::remove_file(&path).unwrap();
    Arc::new(file)
}

crate::state::conformance::suite!(unlinked);

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

fn ns() -> Namespace {
    Namespace::plugin("a").unwrap()
}

#[test]
fn state_survives_reopening() {
    let path = temp_path("reopen");
    let spec = format!("file:{}", path.display());
    {
        let b = open(&spec, Quotas::default()).unwrap();
        b.set(&ns(), "k", b"v", None, soon()).unwrap();
        b.set(&ns(), "t", b"v", Some(Duration::from_secs(600)), soon())
            .unwrap();
        b.increment(&ns(), "n", 3, soon()).unwrap();
    }
    let b = open(&spec, Quotas::default()).unwrap();
    assert_eq!(
        b.get(&ns(), "k", soon()).unwrap().as_deref(),
        Some(&b"v"[..])
    );
    assert!(
        matches!(b.ttl(&ns(), "t", soon()).unwrap(), Ttl::Remaining(left) if left > Duration::from_secs(590))
    );
    assert_eq!(b.increment(&ns(), "n", 1, soon()).unwrap(), 4);
    assert_eq!(b.usage(&ns(), soon()).unwrap(), 2 + 2 + 2);
    drop(b);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn an_open_database_is_locked() {
    let path = temp_path("locked");
    let first = File::open(&path, Quotas::default()).unwrap();
    let err = File::open(&path, Quotas::default()).err().expect("locked");
    assert!(matches!(err, OpenError::Locked(_)), "{err:?}");
    assert!(
        err.to_string().contains("is in use by another process"),
        "{err}"
    );
    drop(first);
    File::open(&path, Quotas::default()).expect("free again once closed");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_file_that_is_not_a_database_is_refused() {
    let path = temp_path("corrupt");
    std::fs::write(
        &path,
        "this is a text file, not a redb database\n".repeat(200),
    )
    .unwrap();
    let err = File::open(&path, Quotas::default()).err().expect("refused");
    assert!(matches!(err, OpenError::NotADatabase(..)), "{err:?}");
    let text = crate::error::report(&err);
    assert!(
        text.contains("cannot be opened as a state database (not a redb file, or corrupt)"),
        "{text}"
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_database_corrupted_outside_redb_is_refused() {
    let path = temp_path("damaged");
    {
        let b = File::open(&path, Quotas::default()).unwrap();
        for i in 0..100 {
            b.set(&ns(), &format!("k{i}"), &[7; 100], None, soon())
                .unwrap();
        }
    }
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len();
    bytes[len / 4..].iter_mut().for_each(|b| *b = !*b);
    std::fs::write(&path, bytes).unwrap();
    let err = File::open(&path, Quotas::default()).err().expect("refused");
    assert!(matches!(err, OpenError::NotADatabase(..)), "{err:?}");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_missing_folder_is_an_io_error() {
    let err = File::open("/nonexistent-sandport/state.redb", Quotas::default())
        .err()
        .unwrap();
    assert!(matches!(err, OpenError::Io(..)), "{err:?}");
    assert!(
        crate::error::report(&err).contains("No such file or directory"),
        "{err}"
    );
}

/// Set in the child process [`kill_9_loses_no_acknowledged_write`] starts: the database path.
const WRITER_ENV: &str = "SANDPORT_STATE_TEST_WRITER";

#[test]
fn kill_9_loses_no_acknowledged_write() {
    if let Ok(path) = std::env::var(WRITER_ENV) {
        return acknowledge_writes_forever(&path);
    }
    let path = temp_path("kill9");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "state::file::tests::kill_9_loses_no_acknowledged_write",
        ])
        .args(["--nocapture", "--test-threads=1"])
        .env(WRITER_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Killed mid-stream: after some writes were acknowledged, while more are in flight.
    while acked.len() < 300 {
        let line = lines.next().expect("the writer stopped early").unwrap();
        if let Some(i) = line.strip_prefix("ack ") {
            acked.push(i.parse::<u64>().unwrap());
        }
    }
    child.kill().unwrap(); // SIGKILL on Unix
                           // Lines printed before the kill were acknowledged too.
    for line in lines.map_while(Result::ok) {
        if let Some(i) = line.strip_prefix("ack ").and_then(|i| i.parse().ok()) {
            acked.push(i);
        }
    }
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );

    let b = File::open(&path, Quotas::default()).expect("reopens after kill -9");
    for &i in &acked {
        let value = b.get(&ns(), &format!("k{i}"), soon()).unwrap();
        assert_eq!(
            value,
            Some(i.to_string().into_bytes()),
            "acknowledged key k{i} lost"
        );
    }
    let count = b.increment(&ns(), "count", 0, soon()).unwrap();
    assert!(
        count as usize >= acked.len(),
        "{count} increments kept, {} acknowledged",
        acked.len()
    );
    drop(b);
    std::fs::remove_file(&path).unwrap();
}

/// The child: two threads writing, each printing `ack N` once write N has returned.
fn acknowledge_writes_forever(path: &str) {
    let b = File::open(path, Quotas::default()).unwrap();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                b.set(
                    &ns(),
                    &format!("k{i}"),
                    i.to_string().as_bytes(),
                    None,
                    soon(),
                )
                .unwrap();
                b.increment(&ns(), "count", 1, soon()).unwrap();
                println!("ack {i}");
            });
        }
    });
}
