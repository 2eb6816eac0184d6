//! The exposition: [`Stats`] and the per-worker [`Metrics`] read at each scrape and written by
//! `prometheus_client`'s Prometheus text encoder (format 0.0.4), through one [`Collector`].

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    prometheus_text, DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::{Metrics, Op, Ops, StageCounters, BUCKETS_NS, HOOKS};
use crate::plugin::Live;
use crate::server::stats::{Close, Stats, CAUSES};
use crate::server::tls::{HandshakeFailure, Tls};
use crate::state::{Backend, StateError};

/// The `Content-Type` of what [`Exporter::render`] writes.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The plugin contracts this host serves (`wit/`), and the core-module ABI version.
const CONTRACTS: &str = "0.1.0,0.2.0";
const CORE_ABI: &str = "1";

/// One counter of a stage.
type Field = fn(&StageCounters) -> &AtomicU64;

/// Reads a running server's counters and writes them as metrics; cheap to clone.
#[derive(Debug, Clone)]
pub struct Exporter {
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
    ops: Arc<Ops>,
    /// The chain serving (its plugin names, by stage) and its reloads.
    live: Arc<Live>,
    /// The state store `/readyz` asks too (`--state-required-for-ready`).
    state: Option<StateCheck>,
    /// With `--tls-cert`: its reloads.
    tls: Option<Arc<Tls>>,
}

/// The store behind [`Exporter::with_state_check`].
#[derive(Clone)]
struct StateCheck(Arc<dyn Backend>);

impl fmt::Debug for StateCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StateCheck")
    }
}

impl Exporter {
    pub fn new(stats: Arc<Stats>, metrics: Arc<Metrics>, ops: Arc<Ops>, live: Arc<Live>) -> Self {
        Exporter {
            stats,
            metrics,
            ops,
            live,
            state: None,
            tls: None,
        }
    }

    /// Exports `tls`'s reloads too.
    pub fn with_tls(mut self, tls: Arc<Tls>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Makes [`Exporter::state_ready`] (so `/readyz`) ask `state` whether it can answer.
    pub fn with_state_check(mut self, state: Arc<dyn Backend>) -> Self {
        self.state = Some(StateCheck(state));
        self
    }

    /// Whether the state store answers by `deadline`; always, unless asked to check it.
    pub fn state_ready(&self, deadline: Instant) -> Result<(), StateError> {
        match &self.state {
            Some(StateCheck(state)) => state.ready(deadline),
            None => Ok(()),
        }
    }

    /// Every metric now, in Prometheus text format.
    pub fn render(&self) -> Result<String, fmt::Error> {
        let mut registry = Registry::with_prefix("sandport");
        registry.register_collector(Box::new(self.clone()));
        let mut out = String::new();
        prometheus_text::encode(&mut out, &registry)?;
        Ok(out)
    }

    fn encode_stages(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let workers = self.metrics.workers();
        let names = self.live.current().1.names();
        let stages: Vec<(String, &str)> = (names.iter().enumerate())
            .map(|(i, name)| (i.to_string(), &**name))
            .collect();
        // Stage `i`'s `field`, summed over the workers.
        let total = |i: usize, field: Field| -> u64 {
            workers
                .iter()
                .map(|w| field(&w.stages()[i]).load(Relaxed))
                .sum()
        };
        let by_direction = |field_in: Field, field_out: Field| {
            let mut rows = Vec::new();
            for (i, (stage, plugin)) in stages.iter().enumerate() {
                for (direction, field) in [("in", field_in), ("out", field_out)] {
                    let labels = [
                        ("plugin", *plugin),
                        ("stage", stage.as_str()),
                        ("direction", direction),
                    ];
                    rows.push((labels, total(i, field)));
                }
            }
            rows
        };
        family(
            e,
            "plugin_messages",
            "Messages handed to each stage of the chain (in), and the replies it gave within \
             --max-reply-bytes (out)",
            MetricType::Counter,
            by_direction(|s| &s.messages_in, |s| &s.messages_out),
        )?;
        family(
            e,
            "plugin_bytes",
            "Bytes of those messages (in) and replies (out), before framing",
            MetricType::Counter,
            by_direction(|s| &s.bytes_in, |s| &s.bytes_out),
        )?;
        let per_stage = |field: Field| {
            (stages.iter().enumerate())
                .map(|(i, (stage, plugin))| {
                    let labels = [("plugin", *plugin), ("stage", stage.as_str())];
                    (labels, total(i, field))
                })
                .collect::<Vec<_>>()
        };
        family(
            e,
            "plugin_instances_created",
            "Plugin instances made, per stage",
            MetricType::Counter,
            per_stage(|s| &s.instances),
        )?;
        family(
            e,
            "plugin_instances_hibernated",
            "Instances given up by connections quiet for --hibernate-after, per stage",
            MetricType::Counter,
            per_stage(|s| &s.hibernated),
        )?;
        family(
            e,
            "plugin_instances_reset",
            "Instances put back as instantiation left them after a call under --isolation message, \
             per stage",
            MetricType::Counter,
            per_stage(|s| &s.resets),
        )?;
        family(
            e,
            "plugin_instance_reset_scans",
            "Resets that scanned the memories for the pages the call wrote; the others reset only \
             the pages the scan before found, as the worker took no page fault since, per stage",
            MetricType::Counter,
            per_stage(|s| &s.reset_scans),
        )?;

        let mut m = e.encode_descriptor(
            "plugin_call_duration_seconds",
            "Duration of each hook call per stage, its instance's making included",
            None,
            MetricType::Histogram,
        )?;
        let bounds: Vec<f64> = (BUCKETS_NS.iter().map(|ns| *ns as f64 / 1e9))
            .chain([f64::INFINITY])
            .collect();
        for (i, (stage, plugin)) in stages.iter().enumerate() {
            for (h, hook) in HOOKS.iter().enumerate() {
                let mut counts = [0u64; BUCKETS_NS.len() + 1];
                let mut sum_ns = 0u64;
                for w in workers {
                    let (b, s) = w.stages()[i].hooks[h].read();
                    counts.iter_mut().zip(b).for_each(|(c, b)| *c += b);
                    sum_ns = sum_ns.wrapping_add(s);
                }
                let buckets: Vec<(f64, u64)> = bounds.iter().copied().zip(counts).collect();
                let labels = [
                    ("plugin", *plugin),
                    ("stage", stage.as_str()),
                    ("hook", hook),
                ];
                m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                    sum_ns as f64 / 1e9,
                    counts.iter().sum(),
                    &buckets,
                    None,
                )?;
            }
        }
        Ok(())
    }
}

impl Collector for Exporter {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let s = self.stats.snapshot();
        let build = [
            ("version", env!("CARGO_PKG_VERSION")),
            ("wasmtime", env!("SANDPORT_WASMTIME_VERSION")),
            ("contracts", CONTRACTS),
            ("core_abi", CORE_ABI),
        ];
        family(
            &mut e,
            "build_info",
            "Always 1; the labels say what this binary is: sandport's version, wasmtime's, \
             the plugin contracts and the core-module ABI it serves",
            MetricType::Gauge,
            [(build, 1)],
        )?;
        single(
            &mut e,
            "connections_open",
            "Connections open now",
            MetricType::Gauge,
            s.open as u64,
        )?;
        single(
            &mut e,
            "connections_accepted",
            "Connections taken off the listener and handed to a worker",
            MetricType::Counter,
            s.accepted,
        )?;
        single(
            &mut e,
            "connections_refused",
            "Connections closed as soon as they were accepted: --max-connections or \
             --max-connections-per-ip reached",
            MetricType::Counter,
            s.refused,
        )?;
        let closed = Close::ALL.map(|c| ([("reason", c.label())], s.closed_for(c)));
        family(
            &mut e,
            "connections_closed",
            "Accepted connections that ended, by reason",
            MetricType::Counter,
            closed,
        )?;
        let errors = CAUSES.map(|k| ([("cause", k)], s.failed_by_kind(k)));
        family(
            &mut e,
            "plugin_errors",
            "Failed hook calls, by cause (cutoff: not called, the shutdown deadline had passed)",
            MetricType::Counter,
            errors,
        )?;
        single(
            &mut e,
            "thread_panics",
            "Server threads that panicked (the server then stops)",
            MetricType::Counter,
            s.thread_panics,
        )?;
        let buffered = self.metrics.buffered().load(Relaxed) as u64;
        single(
            &mut e,
            "buffered_bytes",
            "Bytes held for connections: input not yet handed to a plugin and replies not yet \
             written (within 64 KiB per worker, exact each second)",
            MetricType::Gauge,
            buffered,
        )?;
        let pauses = self.metrics.workers().iter().map(|w| w.pauses()).sum();
        single(
            &mut e,
            "budget_pauses",
            "Times a connection stopped reading because the buffered bytes were over \
             --max-buffered-bytes and it held more than its share",
            MetricType::Counter,
            pauses,
        )?;
        let bus = self.metrics.bus();
        family(
            &mut e,
            "bus_messages",
            "Messages between hosts through Redis (--state redis://): sends, closes and room \
             publishes this host made, and those it received",
            MetricType::Counter,
            [
                ([("direction", "sent")], bus.sent.load(Relaxed)),
                ([("direction", "received")], bus.received.load(Relaxed)),
            ],
        )?;
        single(
            &mut e,
            "bus_errors",
            "Messaging bus failures: Redis calls that failed, subscriptions lost, payloads \
             that were not the bus's",
            MetricType::Counter,
            bus.errors.load(Relaxed),
        )?;
        single(
            &mut e,
            "bus_subscribed",
            "1 while this host's subscription to the other hosts' messages is up",
            MetricType::Gauge,
            bus.connected.load(Relaxed).into(),
        )?;
        single(
            &mut e,
            "tls_handshakes",
            "TLS handshakes done (--tls-cert)",
            MetricType::Counter,
            s.tls_handshakes,
        )?;
        let tls_failed =
            HandshakeFailure::ALL.map(|f| ([("reason", f.label())], s.tls_failed_for(f)));
        family(
            &mut e,
            "tls_handshake_failures",
            "TLS handshakes that failed, by reason; none of them reached a plugin",
            MetricType::Counter,
            tls_failed,
        )?;
        self.encode_stages(&mut e)?;
        let ops = |state: bool| {
            (Op::ALL.into_iter().filter(move |op| op.is_state() == state))
                .map(|op| ([("op", op.label())], self.ops.get(op)))
        };
        family(
            &mut e,
            "state_operations",
            "State store calls by contract 0.2 plugins (wasi:keyvalue and expiry), by operation",
            MetricType::Counter,
            ops(true),
        )?;
        family(
            &mut e,
            "messaging_operations",
            "Messaging calls by contract 0.2 plugins, by operation",
            MetricType::Counter,
            ops(false),
        )?;
        let reloads = self.live.reloads().rows();
        family(
            &mut e,
            "plugin_reloads",
            "Plugin files reloaded while serving, by plugin and result (loaded: swapped in; \
             refused: could not be served, the old version serves on; removed: left the folder)",
            MetricType::Counter,
            (reloads.iter()).map(|(p, r, n)| ([("plugin", p.as_str()), ("result", *r)], *n)),
        )?;
        if let Some(tls) = &self.tls {
            let (loaded, refused) = tls.reloads();
            family(
                &mut e,
                "tls_reloads",
                "TLS certificate and key reloads (SIGHUP, or the files changing), by result \
                 (loaded: new handshakes use them; refused: the previous pair serves on)",
                MetricType::Counter,
                [
                    ([("result", "loaded")], loaded),
                    ([("result", "refused")], refused),
                ],
            )?;
        }
        single(
            &mut e,
            "plugin_chain_generation",
            "How many times the chain was swapped since start",
            MetricType::Gauge,
            self.live.generation(),
        )?;
        single(
            &mut e,
            "record_dropped",
            "Recording events (--record) dropped because the writer fell behind; the session \
             they belonged to is not recorded further",
            MetricType::Counter,
            self.metrics.record_dropped().load(Relaxed),
        )?;
        Ok(())
    }
}

/// One metric without labels.
fn single(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    v: u64,
) -> fmt::Result {
    let m = e.encode_descriptor(name, help, None, kind)?;
    match kind {
        MetricType::Counter => ConstCounter::new(v).encode(m),
        _ => ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(m),
    }
}

/// A family of counters or gauges, one per label set.
fn family<L: EncodeLabelSet>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in rows {
        let f = m.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(v).encode(f)?,
            _ => ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(f)?,
        }
    }
    Ok(())
}
