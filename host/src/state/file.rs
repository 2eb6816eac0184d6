//! The `file:PATH` state backend: durable state on one host, in a redb database file.
//!
//! **Sync policy.** Every write is committed with redb's `Durability::Immediate`: the commit
//! fsyncs the file before the call returns, so a write acknowledged to a plugin survives a
//! crash, `kill -9` or power loss (as far as the disk honours fsync). A write that was not
//! acknowledged (it failed, or its deadline passed first) may or may not be there.
//!
//! **Deadlines.** redb runs one write transaction at a time, so writes go through one writer
//! thread ([`writer`]) over a bounded queue: the caller waits for a queue slot and then for the
//! answer, each until its deadline (`send_deadline`, `recv_deadline`), and gets `Unavailable`
//! past it instead of waiting on the disk. The writer drops a job whose deadline passed while
//! queued without running it; a job already committing when its caller gives up stays committed
//! (`Unavailable` means "unknown" for a write, as with any networked store). The writer commits
//! the jobs queued together in one transaction, so a burst of writes shares one fsync. Reads
//! run on the caller's thread in a redb read transaction, which never waits for the writer.
//!
//! **Layout.** Table `data`: `(namespace, key)` → 8-byte big-endian expiry in Unix milliseconds
//! (0: none) then the value. Table `expiry`: `(expires_at, namespace, key)`, so expired keys are
//! found in order. Table `usage`: namespace → its bytes (keys + values, [`super::quota`]).
//! Expired keys are answered as absent, and removed by the writer: up to [`writer::SWEEP_STEP`]
//! after each batch, and every second while idle.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{bounded, RecvTimeoutError, SendTimeoutError, Sender};
use redb::{Database, ReadableDatabase, TableDefinition};

use super::error::{OpenError, Unavailable};
use super::ops::{self, Entry, Op, Reply};
use super::{Answer, Backend, KeyPage, Namespace, Quotas, StateError, LIST_PAGE};

#[cfg(test)]
mod tests;
mod writer;

const DATA: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("data");
const EXPIRY: TableDefinition<(u64, &str, &str), ()> = TableDefinition::new("expiry");
const USAGE: TableDefinition<&str, u64> = TableDefinition::new("usage");

/// Writes waiting for the writer; a caller past this many waits (until its deadline) for a slot.
const QUEUE: usize = 1024;
/// redb's page cache: enough for a working set of hot keys without taking the default 1 GiB.
const CACHE_BYTES: usize = 64 << 20;

/// The `file:PATH` backend.
pub struct File {
    quotas: Quotas,
    db: Arc<Database>,
    jobs: Sender<writer::Job>,
    writer: Option<JoinHandle<()>>,
}

impl File {
    /// Opens (or creates) the database at `path`. The whole file is checked on open, so a file
    /// that is not a redb database, or was corrupted outside redb, is an error, not a panic later.
    pub fn open(path: impl AsRef<Path>, quotas: Quotas) -> Result<Self, OpenError> {
        let path = path.as_ref();
        let db = Database::builder()
            .set_check_integrity_on_open(true)
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| open_error(path, e))?;
        let io = |e: redb::Error| OpenError::Io(path.to_owned(), e);
        let txn = db.begin_write().map_err(|e| io(e.into()))?;
        txn.open_table(DATA).map_err(|e| io(e.into()))?;
        txn.open_table(EXPIRY).map_err(|e| io(e.into()))?;
        txn.open_table(USAGE).map_err(|e| io(e.into()))?;
        txn.commit().map_err(|e| io(e.into()))?;

        let db = Arc::new(db);
        let (jobs, queue) = bounded(QUEUE);
        let writer = writer::Writer::new(db.clone(), quotas);
        let writer = std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || writer.run(queue))
            .map_err(|e| io(redb::StorageError::Io(e).into()))?;
        Ok(File {
            quotas,
            db,
            jobs,
            writer: Some(writer),
        })
    }

    /// Hands a write to the writer thread and waits for its answer, both until `deadline`.
    fn write(&self, ns: &Namespace, key: &str, op: Op, deadline: Instant) -> Answer<Reply> {
        let (reply, answer) = bounded(1);
        let job = writer::Job {
            ns: ns.clone(),
            key: key.to_owned(),
            op,
            deadline,
            reply,
        };
        match self.jobs.send_deadline(job, deadline) {
            Ok(()) => {}
            Err(SendTimeoutError::Timeout(_)) => return Err(StateError::deadline()),
            Err(SendTimeoutError::Disconnected(_)) => return Err(closed()),
        }
        match answer.recv_deadline(deadline) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(StateError::deadline()),
            Err(RecvTimeoutError::Disconnected) => Err(closed()),
        }
    }

    fn read_txn(&self) -> Result<redb::ReadTransaction, StateError> {
        self.db.begin_read().map_err(store)
    }
}

impl Backend for File {
    fn run(&self, ns: &Namespace, key: &str, op: Op, deadline: Instant) -> Answer<Reply> {
        self.quotas.precheck(key, deadline)?;
        if op.writes() {
            return self.write(ns, key, op, deadline);
        }
        let data = self.read_txn()?.open_table(DATA).map_err(store)?;
        let stored = data.get((ns.as_str(), key)).map_err(store)?;
        let stored = stored.map(|v| decode(v.value()));
        // The change (removing an expired entry) is left to the writer's sweep.
        ops::apply(op, stored.as_ref(), ops::now_ms()).map(|(reply, _)| reply)
    }

    fn list_keys(&self, ns: &Namespace, from: Option<&str>, deadline: Instant) -> Answer<KeyPage> {
        self.quotas.precheck("", deadline)?;
        let data = self.read_txn()?.open_table(DATA).map_err(store)?;
        let now = ops::now_ms();
        let mut keys = Vec::new();
        for row in data
            .range((ns.as_str(), from.unwrap_or(""))..)
            .map_err(store)?
        {
            let (k, v) = row.map_err(store)?;
            let (row_ns, key) = k.value();
            if row_ns != ns.as_str() || keys.len() > LIST_PAGE {
                break;
            }
            if Some(key) != from && decode(v.value()).live(now) {
                keys.push(key.to_owned());
            }
        }
        Ok(KeyPage::of(keys))
    }

    fn usage(&self, ns: &Namespace, deadline: Instant) -> Answer<u64> {
        self.quotas.precheck("", deadline)?;
        let txn = self.read_txn()?;
        let (data, expiry) = (
            txn.open_table(DATA).map_err(store)?,
            txn.open_table(EXPIRY).map_err(store)?,
        );
        let usage = txn.open_table(USAGE).map_err(store)?;
        let mut used = usage
            .get(ns.as_str())
            .map_err(store)?
            .map_or(0, |v| v.value());
        // Expired keys the writer has not swept yet do not count.
        let now = ops::now_ms();
        for row in expiry.range(..(now, "", "")).map_err(store)? {
            let (k, _) = row.map_err(store)?;
            let (_, row_ns, key) = k.value();
            if row_ns == ns.as_str() {
                if let Some(v) = data.get((row_ns, key)).map_err(store)? {
                    used = used.saturating_sub(decode(v.value()).size(key));
                }
            }
        }
        Ok(used)
    }
}

impl Drop for File {
    fn drop(&mut self) {
        // Closing the queue ends the writer after its current batch; joining it releases the
        // database file (and its lock) before `drop` returns.
        let (closed, _) = bounded(0);
        drop(std::mem::replace(&mut self.jobs, closed));
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn encode(entry: &Entry) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + entry.value.len());
    bytes.extend_from_slice(&entry.expires_at.unwrap_or(0).to_be_bytes());
    bytes.extend_from_slice(&entry.value);
    bytes
}

fn decode(bytes: &[u8]) -> Entry {
    // Only `encode` writes the table, so a row always has its 8-byte header.
    let (at, value) = bytes.split_at(8.min(bytes.len()));
    let at = u64::from_be_bytes(at.try_into().unwrap_or([0; 8]));
    Entry {
        value: value.to_vec(),
        expires_at: (at != 0).then_some(at),
    }
}

fn store(e: impl Into<redb::Error>) -> StateError {
    StateError::store(e.into())
}

fn closed() -> StateError {
    StateError::Unavailable(Unavailable::Closed)
}

fn open_error(path: &Path, e: redb::DatabaseError) -> OpenError {
    let path: PathBuf = path.to_owned();
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => OpenError::Locked(path),
        // redb reports a file without its magic number as invalid data, not as corruption.
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() != std::io::ErrorKind::InvalidData =>
        {
            OpenError::Io(path, redb::StorageError::Io(io).into())
        }
        other => OpenError::NotADatabase(path, other.into()),
    }
}
