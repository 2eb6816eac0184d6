//! The server's metrics beyond [`Stats`](crate::Stats): per stage of the chain (messages and
//! bytes in and out, call durations per hook, instances made), buffered bytes, and the state and
//! messaging operations plugins ask for. [`Exporter`] writes them with `Stats` in Prometheus
//! text format; [`Endpoint`] serves that, `/healthz` and `/readyz` (`--metrics-listen`).
//!
//! Cheap on the message path: each worker writes only its own [`WorkerMetrics`] (one writer, so
//! a plain load and store, no locked instruction and no cache line shared with another worker),
//! and a scrape only reads them. Histograms are fixed buckets of such counters, not
//! `prometheus_client`'s `Histogram`, whose every `observe` takes a mutex.

mod export;
mod http;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

pub use export::Exporter;
pub use http::Endpoint;

/// The hooks whose calls are timed, in the order of [`StageCounters::hooks`].
pub const HOOKS: [&str; 3] = ["on-connect", "on-message", "on-disconnect"];

/// Upper bounds of the call-duration buckets, in nanoseconds: from 10 µs (a warm call under
/// `--isolation worker`) to 10 s (past any sensible `--timeout-ms`), 1-2.5-5 per decade.
pub const BUCKETS_NS: [u64; 19] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Adds `n` to a counter that only the calling thread writes (readers only load it): a load and
/// a store, without the locked read-modify-write of `fetch_add`.
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

/// A histogram of call durations: a count per bucket (the last one past every bound) and the
/// sum; the count of calls is the buckets' total, so the two never disagree.
#[derive(Debug, Default)]
pub struct CallTimes {
    buckets: [AtomicU64; BUCKETS_NS.len() + 1],
    sum_ns: AtomicU64,
}

impl CallTimes {
    fn observe(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let i = BUCKETS_NS.partition_point(|&bound| bound < ns);
        bump(&self.buckets[i], 1);
        bump(&self.sum_ns, ns);
    }

    /// (count per bucket, not cumulative; the sum in nanoseconds).
    pub fn read(&self) -> ([u64; BUCKETS_NS.len() + 1], u64) {
        (
            self.buckets.each_ref().map(|b| b.load(Relaxed)),
            self.sum_ns.load(Relaxed),
        )
    }
}

/// One stage of the chain as one worker saw it. Aligned so that two never share a cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct StageCounters {
    /// Messages handed to this stage, and their bytes.
    pub messages_in: AtomicU64,
    pub bytes_in: AtomicU64,
    /// Replies and greetings it gave (within `--max-reply-bytes`), and their bytes.
    pub messages_out: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Instances made for it.
    pub instances: AtomicU64,
    /// Instances given up by quiet connections (`--hibernate-after`).
    pub hibernated: AtomicU64,
    /// Instances put back as instantiation left them after a call under `--isolation message`.
    pub resets: AtomicU64,
    /// Those of them that scanned the memories for the pages the call wrote.
    pub reset_scans: AtomicU64,
    /// Call durations per hook, in [`HOOKS`] order.
    pub hooks: [CallTimes; 3],
}

/// What one worker counts; written by that worker's thread only.
#[derive(Debug)]
pub struct WorkerMetrics {
    stages: Vec<StageCounters>,
    /// Connections it paused for `--max-buffered-bytes`.
    paused: AtomicU64,
}

impl WorkerMetrics {
    pub fn new(stages: usize) -> Self {
        WorkerMetrics {
            stages: (0..stages).map(|_| StageCounters::default()).collect(),
            paused: AtomicU64::new(0),
        }
    }

    /// A call of `hook` on stage `stage` took `took` (its instance's making included).
    pub fn called(&self, stage: usize, hook: &str, took: Duration) {
        let h = match hook {
            "on-connect" => 0,
            "on-message" => 1,
            _ => 2,
        };
        self.stages[stage].hooks[h].observe(took);
    }

    pub fn message_in(&self, stage: usize, bytes: usize) {
        let s = &self.stages[stage];
        bump(&s.messages_in, 1);
        bump(&s.bytes_in, bytes as u64);
    }

    pub fn reply_out(&self, stage: usize, bytes: usize) {
        let s = &self.stages[stage];
        bump(&s.messages_out, 1);
        bump(&s.bytes_out, bytes as u64);
    }

    pub fn instance_created(&self, stage: usize) {
        bump(&self.stages[stage].instances, 1);
    }

    pub fn instance_hibernated(&self, stage: usize) {
        bump(&self.stages[stage].hibernated, 1);
    }

    pub fn instance_reset(&self, stage: usize, scanned: bool) {
        bump(&self.stages[stage].resets, 1);
        if scanned {
            bump(&self.stages[stage].reset_scans, 1);
        }
    }

    pub fn stages(&self) -> &[StageCounters] {
        &self.stages
    }

    /// A connection stopped reading for the buffered-bytes budget.
    pub fn paused(&self) {
        bump(&self.paused, 1);
    }

    pub fn pauses(&self) -> u64 {
        self.paused.load(Relaxed)
    }
}

/// Every worker's counters, read together at a scrape.
#[derive(Debug)]
pub struct Metrics {
    /// Recording events dropped because the writer fell behind (`--record`).
    record_dropped: Arc<AtomicU64>,
    workers: Vec<Arc<WorkerMetrics>>,
    /// Bytes all connections hold: the buffered-bytes budget's shared sum, which the workers
    /// keep within 64 KiB each of the truth (exact at least once a second).
    buffered: Arc<AtomicUsize>,
    /// The cross-host messaging bus's counters (all zero without one).
    bus: Arc<BusCounters>,
}

/// What the messaging bus (`server::messaging::bus`) counts.
#[derive(Debug, Default)]
pub struct BusCounters {
    /// Messages this host published to other hosts, and received from them.
    pub sent: AtomicU64,
    pub received: AtomicU64,
    /// Redis calls that failed, lost subscriptions, and payloads that were not the bus's.
    pub errors: AtomicU64,
    /// Whether the subscriber connection is subscribed now.
    pub connected: AtomicBool,
}

impl Metrics {
    pub fn new(workers: usize, stages: usize) -> Self {
        Metrics {
            record_dropped: Arc::default(),
            workers: (0..workers)
                .map(|_| Arc::new(WorkerMetrics::new(stages)))
                .collect(),
            buffered: Arc::default(),
            bus: Arc::default(),
        }
    }

    /// The messaging bus's counters.
    pub fn bus(&self) -> Arc<BusCounters> {
        self.bus.clone()
    }

    /// Worker `index`'s counters.
    pub fn worker(&self, index: usize) -> Arc<WorkerMetrics> {
        self.workers[index].clone()
    }

    pub fn workers(&self) -> &[Arc<WorkerMetrics>] {
        &self.workers
    }

    /// The buffered-bytes sum, shared with the server's budget.
    pub fn buffered(&self) -> Arc<AtomicUsize> {
        self.buffered.clone()
    }

    /// The count of recording events dropped, shared with the recorder.
    pub fn record_dropped(&self) -> Arc<AtomicU64> {
        self.record_dropped.clone()
    }
}

/// A state or messaging operation a contract 0.2 plugin called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Open,
    Get,
    Set,
    Delete,
    Exists,
    ListKeys,
    Increment,
    Cas,
    Swap,
    SetWithTtl,
    Expire,
    Ttl,
    Send,
    Close,
    ConnectionInfo,
    Join,
    Leave,
    Members,
    Publish,
    PeerCertificate,
}

impl Op {
    pub const ALL: [Op; 20] = [
        Op::Open,
        Op::Get,
        Op::Set,
        Op::Delete,
        Op::Exists,
        Op::ListKeys,
        Op::Increment,
        Op::Cas,
        Op::Swap,
        Op::SetWithTtl,
        Op::Expire,
        Op::Ttl,
        Op::Send,
        Op::Close,
        Op::ConnectionInfo,
        Op::Join,
        Op::Leave,
        Op::Members,
        Op::Publish,
        Op::PeerCertificate,
    ];

    /// The import's name, as the plugin calls it: the `op` label.
    pub fn label(self) -> &'static str {
        match self {
            Op::Open => "open",
            Op::Get => "get",
            Op::Set => "set",
            Op::Delete => "delete",
            Op::Exists => "exists",
            Op::ListKeys => "list-keys",
            Op::Increment => "increment",
            Op::Cas => "cas",
            Op::Swap => "swap",
            Op::SetWithTtl => "set-with-ttl",
            Op::Expire => "expire",
            Op::Ttl => "ttl",
            Op::Send => "send",
            Op::Close => "close",
            Op::ConnectionInfo => "connection-info",
            Op::Join => "join",
            Op::Leave => "leave",
            Op::Members => "members",
            Op::Publish => "publish",
            Op::PeerCertificate => "peer-certificate",
        }
    }

    /// A state operation (`wasi:keyvalue`, `expiry`), else a messaging one.
    pub fn is_state(self) -> bool {
        (self as usize) < (Op::Send as usize)
    }
}

/// State and messaging operations by [`Op`], shared by every worker: each costs a lock or a
/// channel send already, so one shared counter more does not show.
#[derive(Debug, Default)]
pub struct Ops([AtomicU64; Op::ALL.len()]);

impl Ops {
    pub fn count(&self, op: Op) {
        self.0[op as usize].fetch_add(1, Relaxed);
    }

    pub fn get(&self, op: Op) -> u64 {
        self.0[op as usize].load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_lands_in_the_first_bucket_it_fits() {
        let t = CallTimes::default();
        for us in [1, 10, 11, 999_999, 10_000_000, 20_000_000] {
            t.observe(Duration::from_micros(us));
        }
        let (buckets, sum) = t.read();
        assert_eq!(buckets[0], 2, "1 µs and 10 µs are under 10 µs");
        assert_eq!(buckets[1], 1, "11 µs");
        assert_eq!(buckets[BUCKETS_NS.len() - 4], 1, "999.999 ms, under 1 s");
        assert_eq!(buckets[BUCKETS_NS.len() - 1], 1, "10 s");
        assert_eq!(buckets[BUCKETS_NS.len()], 1, "20 s: past every bound");
        assert_eq!(buckets.iter().sum::<u64>(), 6);
        assert_eq!(sum, 31_000_021_000);
    }

    #[test]
    fn ops_are_in_label_order_and_split_state_from_messaging() {
        for (i, op) in Op::ALL.iter().enumerate() {
            assert_eq!(*op as usize, i);
        }
        assert!(Op::Ttl.is_state() && !Op::Send.is_state() && !Op::Publish.is_state());
    }
}
