//! The file backend's one writer thread: batches of queued writes, each batch one durable
//! commit, and the sweep of expired keys.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use redb::{Database, Durability, ReadableTable, Table, WriteTransaction};

use super::{decode, encode, DATA, EXPIRY, USAGE};
use crate::state::ops::{self, Change, Entry, Op, Reply};
use crate::state::{Answer, Namespace, Quotas, StateError};

/// Most writes committed together (one fsync).
const BATCH: usize = 256;
/// Most expired keys removed after each batch.
pub(super) const SWEEP_STEP: usize = 64;
/// How often an idle writer sweeps expired keys.
const IDLE_SWEEP: Duration = Duration::from_secs(1);

/// One write, and where its answer goes once it is durable.
pub(super) struct Job {
    pub ns: Namespace,
    pub key: String,
    pub op: Op,
    pub deadline: Instant,
    pub reply: Sender<Result<Reply, StateError>>,
}

pub(super) struct Writer {
    db: Arc<Database>,
    quotas: Quotas,
}

/// The tables of one write transaction.
struct Tables<'t> {
    data: Table<'t, (&'static str, &'static str), &'static [u8]>,
    expiry: Table<'t, (u64, &'static str, &'static str), ()>,
    usage: Table<'t, &'static str, u64>,
}

impl Writer {
    pub fn new(db: Arc<Database>, quotas: Quotas) -> Self {
        Writer { db, quotas }
    }

    /// Runs until the queue closes (the backend was dropped).
    pub fn run(self, queue: Receiver<Job>) {
        loop {
            let first = match queue.recv_timeout(IDLE_SWEEP) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    // A failed sweep is retried on the next tick; no caller waits on it.
                    let _ = self.commit(&mut [], SWEEP_STEP * 16);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut batch = vec![first];
            batch.extend(queue.try_iter().take(BATCH - 1));
            // A job whose deadline passed in the queue is not run: its caller has given up.
            let now = Instant::now();
            batch.retain(|job| {
                let late = job.deadline <= now;
                if late {
                    let _ = job.reply.send(Err(StateError::deadline()));
                }
                !late
            });
            let mut jobs: Vec<_> = batch.into_iter().map(|job| (job, None)).collect();
            let answers = match self.commit(&mut jobs, SWEEP_STEP) {
                Ok(()) => jobs
                    .into_iter()
                    .map(|(job, answer)| (job, answer.expect("run")))
                    .collect(),
                Err(e) => {
                    let shared = Arc::new(e);
                    let failed = |_| Err(StateError::store(shared.clone()));
                    jobs.into_iter()
                        .map(|(job, _)| (job, failed(())))
                        .collect::<Vec<_>>()
                }
            };
            // Answers go out only now that the commit is durable.
            for (job, answer) in answers {
                let _ = job.reply.send(answer);
            }
        }
    }

    /// Runs `jobs` (storing each one's answer next to it) and up to `sweep` expired-key removals
    /// in one transaction, committed durably; a transaction that changed nothing is not.
    #[allow(clippy::type_complexity)]
    fn commit(
        &self,
        jobs: &mut [(Job, Option<Result<Reply, StateError>>)],
        sweep: usize,
    ) -> Result<(), redb::Error> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| redb::Error::from(redb::StorageError::Backend(Box::new(e))))?;
        let now = ops::now_ms();
        let changed = {
            let mut t = Tables::open(&txn)?;
            for (job, answer) in jobs.iter_mut() {
                let op = std::mem::replace(&mut job.op, Op::Get);
                *answer = Some(self.apply(&mut t, &job.ns, &job.key, op, now)?);
            }
            t.sweep(now, sweep)? > 0 || !jobs.is_empty()
        };
        if changed {
            txn.commit()?;
        } else {
            txn.abort()?;
        }
        Ok(())
    }

    /// One job inside the transaction: the outer error is the store's, the inner the plugin's.
    fn apply(
        &self,
        t: &mut Tables<'_>,
        ns: &Namespace,
        key: &str,
        op: Op,
        now: u64,
    ) -> Result<Answer<Reply>, redb::Error> {
        let ns = ns.as_str();
        let growth = op.growth(key);
        if growth > 0 && t.used(ns)? + growth > self.quotas.max_namespace_bytes {
            t.sweep(now, usize::MAX)?;
        }
        let stored = t.data.get((ns, key))?.map(|v| decode(v.value()));
        let (reply, change) = match ops::apply(op, stored.as_ref(), now) {
            Ok(done) => done,
            Err(e) => return Ok(Err(e)),
        };
        let used = match self
            .quotas
            .admit(key, stored.as_ref(), &change, t.used(ns)?)
        {
            Ok(used) => used,
            Err(e) => return Ok(Err(e.into())),
        };
        t.write(ns, key, stored.as_ref(), change)?;
        t.usage.insert(ns, used)?;
        Ok(Ok(reply))
    }
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self, redb::Error> {
        Ok(Tables {
            data: txn.open_table(DATA)?,
            expiry: txn.open_table(EXPIRY)?,
            usage: txn.open_table(USAGE)?,
        })
    }

    fn used(&self, ns: &str) -> Result<u64, redb::Error> {
        Ok(self.usage.get(ns)?.map_or(0, |v| v.value()))
    }

    /// Writes `change` over `old` (the stored entry), keeping the expiry index in step.
    fn write(
        &mut self,
        ns: &str,
        key: &str,
        old: Option<&Entry>,
        change: Change,
    ) -> Result<(), redb::Error> {
        if matches!(change, Change::Keep) {
            return Ok(());
        }
        if let Some(at) = old.and_then(|e| e.expires_at) {
            self.expiry.remove((at, ns, key))?;
        }
        match change {
            Change::Keep => {}
            Change::Remove => {
                self.data.remove((ns, key))?;
            }
            Change::Put(entry) => {
                if let Some(at) = entry.expires_at {
                    self.expiry.insert((at, ns, key), ())?;
                }
                self.data.insert((ns, key), encode(&entry).as_slice())?;
            }
        }
        Ok(())
    }

    /// Removes up to `max` keys expired at `now` (see `Entry::live`), adjusting their namespaces' usage; how many.
    fn sweep(&mut self, now: u64, max: usize) -> Result<usize, redb::Error> {
        let mut expired = Vec::new();
        for row in self
            .expiry
            .range(..(now, "", ""))
            .map_err(redb::Error::from)?
            .take(max)
        {
            let (k, _) = row?;
            let (at, ns, key) = k.value();
            expired.push((at, ns.to_owned(), key.to_owned()));
        }
        for (at, ns, key) in &expired {
            self.expiry.remove((*at, ns.as_str(), key.as_str()))?;
            let removed = self.data.remove((ns.as_str(), key.as_str()))?;
            if let Some(entry) = removed.map(|v| decode(v.value())) {
                let used = self.used(ns)?.saturating_sub(entry.size(key));
                self.usage.insert(ns.as_str(), used)?;
            }
        }
        Ok(expired.len())
    }
}
