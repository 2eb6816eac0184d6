//! What the host gives a plugin instance: the WIT imports (`log`, `config-get`), a WASI context
//! that grants nothing, and stdout/stderr turned into log lines. Its budgets live in
//! [`super::limits`].

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::{sandport, HandlerImports, Level};
use super::limits::Limits;
use super::services::Services;

/// The longest stdout/stderr line kept before it is logged in pieces.
const MAX_LINE: usize = 4096;

/// What a plugin instance's store holds.
pub struct HostState {
    wasi: Wasi,
    /// The memory cap and the current call's deadline, read by the store's limiter, its epoch
    /// callback and the capped waits.
    pub(super) limits: Limits,
    /// Plugin name, for log lines.
    plugin: Arc<str>,
    /// This plugin's `--config` values.
    config: Arc<BTreeMap<String, String>>,
    /// The connection the current call is for (0 outside calls); shared with the stdio streams.
    conn: Arc<AtomicU64>,
    stdout: LogStream,
    stderr: LogStream,
    /// The state store and the other connections, for contract 0.2 plugins; `None` for 0.1.0
    /// plugins, which cannot reach them.
    pub(super) services: Option<Services>,
}

/// The WASI context, in the flavour the plugin's kind links against.
// Built once per store and never moved after: boxing either variant would only add an allocation
// per instance.
#[allow(clippy::large_enum_variant)]
enum Wasi {
    /// WASI 0.2, for components.
    P2 { ctx: WasiCtx, table: ResourceTable },
    /// WASI preview 1, for core modules.
    P1(WasiP1Ctx),
}

impl HostState {
    /// `preview1` picks the WASI flavour: preview 1 for core modules, 0.2 for components.
    pub fn new(
        plugin: Arc<str>,
        config: Arc<BTreeMap<String, String>>,
        preview1: bool,
        limits: Limits,
        services: Option<Services>,
    ) -> Self {
        let conn = Arc::new(AtomicU64::new(0));
        let stdout = LogStream::new(plugin.clone(), conn.clone(), "stdout");
        let stderr = LogStream::new(plugin.clone(), conn.clone(), "stderr");
        // Nothing is granted: no preopened directories, no environment, no arguments, no
        // sockets, no name lookups. Clocks and randomness stay available.
        let mut builder = WasiCtxBuilder::new();
        builder
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let wasi = if preview1 {
            Wasi::P1(builder.build_p1())
        } else {
            Wasi::P2 {
                ctx: builder.build(),
                table: ResourceTable::new(),
            }
        };
        HostState {
            wasi,
            limits,
            plugin,
            config,
            conn,
            stdout,
            stderr,
            services,
        }
    }

    /// Tags the log lines of the call that starts with connection `id` (0 outside connections).
    pub(super) fn tag_conn(&mut self, id: u64) {
        self.conn.store(id, Ordering::Relaxed);
    }

    /// Makes the state of a dropped store ready for the next instance of the same plugin, so
    /// `--isolation message` does not build a WASI context for every message; `None` when it
    /// cannot be reused.
    ///
    /// Only a component's WASI 0.2 context qualifies: it holds configuration (what is granted,
    /// the stdio sinks, clocks and random sources) and no guest-visible state, while the guest's
    /// handles live in the resource table, which is replaced. The one thing instances then share
    /// is `wasi:random/insecure-seed`, which stays the same for a worker's fresh instances as it
    /// does for its long-lived one under `--isolation worker`. A core module's preview 1 context
    /// keeps a descriptor table the guest can change (closing stdout, say), which must not outlive
    /// its instance.
    pub fn recycle(mut self) -> Option<Self> {
        self.renew().then_some(self)
    }

    /// [`HostState::recycle`] in place, for an instance reset in place: `false` when this state
    /// cannot be kept (a core module's), and then it must be replaced.
    pub fn renew(&mut self) -> bool {
        self.flush_output();
        match &mut self.wasi {
            Wasi::P2 { table, .. } => *table = ResourceTable::new(),
            Wasi::P1(_) => return false,
        }
        self.limits.reset();
        self.conn.store(0, Ordering::Relaxed);
        true
    }

    /// Logs what the plugin printed without a final newline, so nothing is held across calls.
    pub fn flush_output(&mut self) {
        self.stdout.flush_partial();
        self.stderr.flush_partial();
    }

    /// The resource table of a component's store (its WASI handles and its buckets).
    pub(super) fn table(&mut self) -> &mut ResourceTable {
        match &mut self.wasi {
            Wasi::P2 { table, .. } => table,
            Wasi::P1(ctx) => ctx.ctx().table,
        }
    }

    /// The resource table of a component's store, read-only; `None` for a core module's.
    pub(super) fn table_ref(&self) -> Option<&ResourceTable> {
        match &self.wasi {
            Wasi::P2 { table, .. } => Some(table),
            Wasi::P1(_) => None,
        }
    }

    /// The preview 1 context of a core module's store.
    pub fn p1(&mut self) -> &mut WasiP1Ctx {
        match &mut self.wasi {
            Wasi::P1(ctx) => ctx,
            // Core modules, the only users of preview 1, always get a preview 1 store.
            Wasi::P2 { .. } => unreachable!("a component's store used as a core module's"),
        }
    }

    /// A plugin's log line, tagged with the plugin and the connection.
    pub fn log_line(&self, level: Level, message: &str) {
        let plugin = &*self.plugin;
        let conn = self.conn.load(Ordering::Relaxed);
        match level {
            Level::Trace => tracing::trace!(target: "plugin", plugin, conn, "{message}"),
            Level::Debug => tracing::debug!(target: "plugin", plugin, conn, "{message}"),
            Level::Info => tracing::info!(target: "plugin", plugin, conn, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", plugin, conn, "{message}"),
            Level::Error => tracing::error!(target: "plugin", plugin, conn, "{message}"),
        }
    }

    /// This plugin's `--config` value for `key`.
    pub fn config_value(&self, key: &str) -> Option<&str> {
        self.config.get(key).map(String::as_str)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        match &mut self.wasi {
            Wasi::P2 { ctx, table } => WasiCtxView { ctx, table },
            Wasi::P1(p1) => p1.ctx(),
        }
    }
}

impl sandport::plugin::types::Host for HostState {}

impl HandlerImports for HostState {
    fn log(&mut self, level: Level, message: String) {
        self.log_line(level, &message);
    }

    fn config_get(&mut self, key: String) -> Option<String> {
        self.config_value(&key).map(str::to_string)
    }
}

/// A plugin's stdout or stderr: every complete line becomes a log event tagged with the plugin
/// and connection. Clones share one line buffer.
#[derive(Clone)]
pub struct LogStream {
    plugin: Arc<str>,
    conn: Arc<AtomicU64>,
    stream: &'static str,
    partial: Arc<Mutex<Vec<u8>>>,
    /// Whether `partial` may hold bytes: lets the flush after every call skip the lock.
    pending: Arc<AtomicBool>,
}

impl LogStream {
    fn new(plugin: Arc<str>, conn: Arc<AtomicU64>, stream: &'static str) -> Self {
        LogStream {
            plugin,
            conn,
            stream,
            partial: Arc::default(),
            pending: Arc::default(),
        }
    }

    fn emit(&self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches('\r');
        tracing::info!(
            target: "plugin",
            plugin = &*self.plugin,
            conn = self.conn.load(Ordering::Relaxed),
            stream = self.stream,
            "{line}"
        );
    }

    fn push(&self, mut bytes: &[u8]) {
        let mut partial = self.partial.lock().unwrap_or_else(|e| e.into_inner());
        while !bytes.is_empty() {
            match bytes.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    partial.extend_from_slice(&bytes[..end]);
                    self.emit(&partial);
                    partial.clear();
                    bytes = &bytes[end + 1..];
                }
                None => {
                    partial.extend_from_slice(bytes);
                    self.pending.store(true, Ordering::Relaxed);
                    bytes = &[];
                }
            }
            if partial.len() >= MAX_LINE {
                self.emit(&partial);
                partial.clear();
            }
        }
    }

    fn flush_partial(&self) {
        if !self.pending.swap(false, Ordering::Relaxed) {
            return;
        }
        let mut partial = self.partial.lock().unwrap_or_else(|e| e.into_inner());
        if !partial.is_empty() {
            self.emit(&partial);
            partial.clear();
        }
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for LogStream {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogStream {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for LogStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use wasmtime::ResourceLimiter;

    use crate::plugin::limits::CutOff;

    fn state(preview1: bool) -> HostState {
        HostState::new(
            "p".into(),
            Arc::default(),
            preview1,
            Limits::new(1 << 20, CutOff::default()),
            None,
        )
    }

    #[test]
    fn a_components_state_is_recycled_clean() {
        let mut s = state(false);
        let grown = s.limits.memory_growing(0, 2 << 20, None).unwrap();
        assert!(
            !grown && s.limits.memory_hit(),
            "growth past the cap is refused"
        );
        s.tag_conn(7);
        if let Wasi::P2 { table, .. } = &mut s.wasi {
            table.push(5u32).expect("room in the table");
        }
        let s = s.recycle().expect("a WASI 0.2 state is reusable");
        assert!(
            !s.limits.memory_hit(),
            "the next instance starts under its memory cap"
        );
        assert_eq!(s.conn.load(Ordering::Relaxed), 0);
        match &s.wasi {
            Wasi::P2 { table, .. } => assert!(table.is_empty(), "no handle outlives its instance"),
            Wasi::P1(_) => unreachable!(),
        }
    }

    #[test]
    fn a_core_modules_state_is_never_recycled() {
        assert!(state(true).recycle().is_none());
    }
}
