//! The server's configuration as a plain value with defaults and one `validate()`, and the small
//! value types its fields are made of. The CLI only translates flags into it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::Error;
use crate::server::tls::TlsFiles;

mod cidr;
mod flags;
pub use cidr::Cidr;
pub use flags::{ByteSize, IsolationOf, PluginSetting, SharedState, Timeout};

use crate::state::Quotas;

/// Everything the server needs to run. Build it with struct update syntax from
/// [`Config::default`]; [`crate::Server::new`] calls [`Config::validate`] before using it.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to accept clients (`--listen`); port 0 lets the OS pick.
    pub listen: SocketAddr,
    /// Bind `listen` with `SO_REUSEPORT`, so a new server can start on it while this one runs
    /// (`--reuse-port`).
    pub reuse_port: bool,
    /// Where to serve `/metrics`, `/healthz` and `/readyz` (`--metrics-listen`); `None`: nowhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Whether `/readyz` also asks the state store (`--state-required-for-ready`).
    pub state_required_for_ready: bool,
    /// The plugin files of the chain, in call order (`--plugin`, or the plugins folder).
    pub plugins: Vec<PathBuf>,
    /// The plugins folder, when it defines the chain (no `--plugin`): files added to it or
    /// removed from it change the chain while the server runs.
    pub plugins_dir: Option<PathBuf>,
    /// Reload a plugin file when it changes (`--no-watch` turns it off; SIGHUP always reloads).
    pub watch: bool,
    /// Where sessions are recorded (`--record`); `None`: not recorded.
    pub record: Option<PathBuf>,
    /// The most bytes the recordings may take; the oldest files go first (`--record-max-bytes`).
    pub record_max_bytes: u64,
    /// Per-plugin settings read by the `config-get` import, keyed by plugin name (`--config`).
    pub plugin_config: BTreeMap<String, BTreeMap<String, String>>,
    /// Event-loop threads; each owns its connections and its plugin instances (`--workers`).
    pub workers: usize,
    /// Open connections allowed at once; the next client is closed right after accept.
    pub max_connections: usize,
    /// Open connections allowed from one client address; 0 for no limit.
    pub max_connections_per_ip: usize,
    /// Every connection starts with a PROXY protocol header whose client address becomes its
    /// peer (`--proxy-protocol`); only from `trusted_proxies`.
    pub proxy_protocol: bool,
    /// Where PROXY headers may come from (`--trusted-proxies`).
    pub trusted_proxies: Vec<Cidr>,
    /// TLS: the certificate chain and its key, PEM (`--tls-cert`, `--tls-key`); both or none.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: the CAs client certificates must chain to (`--tls-client-ca`).
    pub tls_client_ca: Option<PathBuf>,
    /// What gets a fresh plugin instance.
    pub isolation: Isolation,
    /// Plugins of the chain under another mode than `isolation`, by name (`--isolation-of`).
    pub isolation_of: BTreeMap<String, Isolation>,
    /// How bytes on the socket become messages and replies become bytes.
    pub framing: Framing,
    /// Largest message accepted from a client, checked before buffering it.
    pub max_message_bytes: usize,
    /// Unsent reply bytes per connection above which the host stops reading from it.
    pub max_output_bytes: usize,
    /// Largest reply a plugin may give; a larger one is a failed call, never buffered.
    pub max_reply_bytes: usize,
    /// Bytes all connections may hold together (input not handed out, output not written)
    /// before the largest holders stop reading; twice it, they are closed.
    pub max_buffered_bytes: usize,
    /// Wall-clock budget of one plugin call (`--timeout-ms`).
    pub timeout: Duration,
    /// Linear memory an instance may grow to.
    pub memory_limit: usize,
    /// What a failed plugin call does to its connection.
    pub on_error: OnError,
    /// How long shutdown waits for in-flight messages and unsent replies, from the signal.
    pub shutdown_timeout: Duration,
    /// A connection with no partial message, no unsent reply and no whole message for this
    /// long is closed (`--idle-timeout`); `None` never closes an idle one.
    pub idle_timeout: Option<Duration>,
    /// A message must arrive whole within this long of its first byte (`--message-timeout`,
    /// against slowloris clients); `None` waits for ever.
    pub message_timeout: Option<Duration>,
    /// A connection whose client takes none of its waiting output for this long is closed
    /// (`--write-timeout`, nginx's `send_timeout`); `None` waits for ever.
    pub write_timeout: Option<Duration>,
    /// Under `--isolation connection`, a connection quiet for this long gives up its instances;
    /// its next call gets fresh ones (`--hibernate-after`). `None` keeps them for its life.
    pub hibernate_after: Option<Duration>,
    /// Where compiled plugins are cached; `None` compiles at every start.
    pub cache_dir: Option<PathBuf>,
    /// Core modules' `_initialize` runs once, at load (`--no-preinit` turns it off).
    pub preinit: bool,
    /// Under `--isolation message`, a worker's instance is put back as instantiation left it
    /// after each call instead of being made anew (`--no-reset` turns it off).
    pub reset: bool,
    /// The host state store of contract 0.2 plugins: `memory`, `file:PATH` or
    /// `redis://HOST:PORT[/DB]` (`--state`).
    pub state: String,
    /// Size limits on what plugins store.
    pub state_quotas: Quotas,
    /// Namespaces the operator shares, with the plugins that may open each (`--shared-state`).
    pub shared_state: BTreeMap<String, BTreeSet<String>>,
    /// Rooms one connection may be in at once.
    pub max_rooms_per_connection: usize,
    /// Benchmarks only: answer every message with itself, in-process, without calling any
    /// plugin, to measure what the sandbox costs against the same server.
    pub native_echo: bool,
}

/// The most linear memory a 32-bit Wasm instance can address.
const MAX_MEMORY_LIMIT: usize = 4 << 30;
/// The least memory limit: one Wasm page.
const MIN_MEMORY_LIMIT: usize = 64 << 10;
/// Keeps frame lengths representable in the 4-byte length prefix and buffers allocatable.
const MAX_MESSAGE_LIMIT: usize = u32::MAX as usize;
const MAX_WORKERS: usize = 1024;
const MAX_CONNECTIONS: usize = 1_000_000;
/// Each membership costs memory and makes every publish to the room do work.
const MAX_ROOMS: usize = 1024;

impl Default for Config {
    /// The documented defaults of the command line, with no plugin.
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7000)),
            reuse_port: false,
            metrics_listen: None,
            state_required_for_ready: false,
            plugins: Vec::new(),
            plugins_dir: None,
            watch: true,
            record: None,
            record_max_bytes: 1 << 30,
            plugin_config: BTreeMap::new(),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_connections: 10_000,
            max_connections_per_ip: 0,
            proxy_protocol: false,
            trusted_proxies: Vec::new(),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            isolation: Isolation::Message,
            isolation_of: BTreeMap::new(),
            framing: Framing::Line,
            max_message_bytes: 1 << 20,
            max_output_bytes: 1 << 20,
            max_reply_bytes: 1 << 20,
            max_buffered_bytes: 256 << 20,
            timeout: Duration::from_secs(1),
            memory_limit: 128 << 20,
            on_error: OnError::Close,
            shutdown_timeout: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(300)),
            message_timeout: Some(Duration::from_secs(60)),
            write_timeout: Some(Duration::from_secs(60)),
            hibernate_after: None,
            cache_dir: crate::plugin::cache::default_dir(),
            preinit: true,
            reset: true,
            state: "memory".to_string(),
            state_quotas: Quotas::default(),
            shared_state: BTreeMap::new(),
            max_rooms_per_connection: 16,
            native_echo: false,
        }
    }
}

impl Config {
    /// Checks every value, so the server never meets one it cannot use. The messages name the
    /// command-line flag that sets each field.
    pub fn validate(&self) -> Result<(), Error> {
        if self.plugins.is_empty() {
            return Err(Error::config("no plugin to run"));
        }
        at_least("--workers", self.workers, 1)?;
        at_most("--workers", self.workers, MAX_WORKERS)?;
        at_least("--max-connections", self.max_connections, 1)?;
        at_most("--max-connections", self.max_connections, MAX_CONNECTIONS)?;
        // Trusting nobody would refuse every client; trusting without the header, a typo.
        match (self.proxy_protocol, self.trusted_proxies.is_empty()) {
            (true, true) => return Err(Error::config(
                "--proxy-protocol needs --trusted-proxies: the load balancers' addresses (CIDR)",
            )),
            (false, false) => {
                return Err(Error::config(
                    "--trusted-proxies is given without --proxy-protocol",
                ))
            }
            _ => {}
        }
        match (&self.tls_cert, &self.tls_key, &self.tls_client_ca) {
            (Some(_), None, _) => return Err(Error::config("--tls-cert needs --tls-key")),
            (None, Some(_), _) => return Err(Error::config("--tls-key needs --tls-cert")),
            (None, None, Some(_)) => {
                return Err(Error::config(
                    "--tls-client-ca needs --tls-cert and --tls-key: mutual TLS is TLS first",
                ))
            }
            _ => {}
        }
        let ms = |d: Duration| d.as_millis().min(usize::MAX as u128) as usize;
        at_least("--timeout-ms", ms(self.timeout), 1)?;
        for (flag, d) in [
            ("--idle-timeout", self.idle_timeout),
            ("--message-timeout", self.message_timeout),
            ("--write-timeout", self.write_timeout),
            ("--hibernate-after", self.hibernate_after),
        ] {
            if d.is_some_and(|d| d < Duration::from_millis(1)) {
                return Err(Error::config(format!(
                    "{flag} must be at least 1ms, or off"
                )));
            }
        }
        in_range(
            "--max-message-bytes",
            self.max_message_bytes,
            1,
            MAX_MESSAGE_LIMIT,
        )?;
        in_range(
            "--max-output-bytes",
            self.max_output_bytes,
            1,
            MAX_MESSAGE_LIMIT,
        )?;
        in_range(
            "--max-reply-bytes",
            self.max_reply_bytes,
            1,
            MAX_MESSAGE_LIMIT,
        )?;
        in_range(
            "--max-buffered-bytes",
            self.max_buffered_bytes,
            1,
            usize::MAX / 4,
        )?;
        in_range(
            "--memory-limit",
            self.memory_limit,
            MIN_MEMORY_LIMIT,
            MAX_MEMORY_LIMIT,
        )?;
        let names: Vec<String> = self
            .plugins
            .iter()
            .map(|p| crate::plugin::name_of(p))
            .collect();
        for (flag, value) in [
            ("--state-max-key-bytes", self.state_quotas.max_key_bytes),
            ("--state-max-value-bytes", self.state_quotas.max_value_bytes),
        ] {
            in_range(flag, value, 1, MAX_MESSAGE_LIMIT)?;
        }
        if self.state_quotas.max_namespace_bytes == 0 {
            return Err(Error::config(
                "--state-max-namespace-bytes must be at least 1",
            ));
        }
        at_least(
            "--max-rooms-per-connection",
            self.max_rooms_per_connection,
            1,
        )?;
        at_most(
            "--max-rooms-per-connection",
            self.max_rooms_per_connection,
            MAX_ROOMS,
        )?;
        for (ns, plugins) in &self.shared_state {
            if let Some(p) = plugins.iter().find(|p| !names.contains(p)) {
                return Err(Error::config(format!(
                    "--shared-state {ns}: no plugin named `{p}` is loaded (loaded: {})",
                    names.join(", ")
                )));
            }
        }
        if let Some(p) = self.isolation_of.keys().find(|p| !names.contains(p)) {
            return Err(Error::config(format!(
                "--isolation-of {p}: no plugin named `{p}` is loaded (loaded: {})",
                names.join(", ")
            )));
        }
        // A typo'd mode would otherwise leave every instance alive, silently.
        if self.hibernate_after.is_some()
            && !(names.iter()).any(|n| self.isolation_for(n) == Isolation::Connection)
        {
            return Err(Error::config(
                "--hibernate-after applies to plugins under --isolation connection, and none is",
            ));
        }
        for (plugin, settings) in &self.plugin_config {
            if !names.contains(plugin) {
                let key = settings.keys().next().map_or("", String::as_str);
                return Err(Error::config(format!(
                    "--config {plugin}.{key}: no plugin named `{plugin}` is loaded (loaded: {})",
                    names.join(", ")
                )));
            }
        }
        Ok(())
    }
}

impl Config {
    /// The TLS files, when TLS is on (`validate` made sure both halves of the pair are given).
    pub fn tls_files(&self) -> Option<TlsFiles> {
        Some(TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }

    /// The isolation mode plugin `name` runs under.
    pub fn isolation_for(&self, name: &str) -> Isolation {
        self.isolation_of
            .get(name)
            .copied()
            .unwrap_or(self.isolation)
    }
}

fn at_least(flag: &str, value: usize, min: usize) -> Result<(), Error> {
    if value < min {
        return Err(Error::config(format!("{flag} must be at least {min}")));
    }
    Ok(())
}

fn at_most(flag: &str, value: usize, max: usize) -> Result<(), Error> {
    if value > max {
        return Err(Error::config(format!(
            "{flag} {value} is more than the {max} allowed"
        )));
    }
    Ok(())
}

fn in_range(flag: &str, value: usize, min: usize, max: usize) -> Result<(), Error> {
    if value < min || value > max {
        return Err(Error::config(format!(
            "{flag} {value} is out of range: it must be between {min} and {max} bytes"
        )));
    }
    Ok(())
}

/// What gets a fresh plugin instance, trading isolation for speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Isolation {
    /// A fresh instance for every call: nothing survives between messages or clients.
    Message,
    /// One instance per connection: state lives for the session, never shared between clients.
    Connection,
    /// One long-lived instance per worker thread, shared by its connections: for trusted plugins.
    Worker,
}

/// How the byte stream of a connection is cut into messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Framing {
    /// Each buffer read from the socket is one message; replies are written as they are.
    Raw,
    /// Messages end with `\n` (not passed on); replies get a `\n` unless they end with one.
    Line,
    /// A 4-byte big-endian length, then that many bytes; replies are framed the same way.
    Length,
}

/// What a failed plugin call (trap, timeout, memory cap, `err` result) does to its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnError {
    /// Close the connection (fail closed).
    Close,
    /// Drop the message and keep the connection.
    Drop,
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Isolation::Message => "message",
            Isolation::Connection => "connection",
            Isolation::Worker => "worker",
        })
    }
}

impl fmt::Display for Framing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Framing::Raw => "raw",
            Framing::Line => "line",
            Framing::Length => "length",
        })
    }
}
