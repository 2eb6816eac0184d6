//! The command line as typed (clap), translated into a [`Config`]; checking it is the config's.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{
    ByteSize, Cidr, Config, Framing, Isolation, IsolationOf, OnError, PluginSetting, SharedState,
    Timeout,
};
use crate::error::Error;
use crate::state::Quotas;

/// Serve TCP clients, passing every message through sandboxed WebAssembly handler plugins.
#[derive(Debug, Parser)]
#[command(name = "sandport", version, about, long_about = None)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Tools for plugin authors; without one, sandport serves.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load a plugin without serving: what kind it is, what it imports, what the sandbox denies.
    /// Exits 2 with the reason when it cannot be served.
    Check {
        /// The plugin file (a bare name is also looked up in --plugins-dir).
        plugin: PathBuf,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Run one connect / message / disconnect cycle in-process, without a socket: prints the
    /// replies on stdout and the plugin's log lines on stderr.
    Call {
        /// The plugin file (a bare name is also looked up in --plugins-dir).
        plugin: PathBuf,
        /// The message to send (without framing).
        #[arg(long, conflicts_with = "file")]
        message: Option<String>,
        /// Send the contents of this file as the message.
        #[arg(long)]
        file: Option<PathBuf>,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Run the sessions of a capture (--record) through other plugins, in-process, and compare
    /// each reply with the recorded one: prints a summary and the first differences. Exits 0
    /// when every reply is the same, 1 when any differs, 2 when the capture cannot be read.
    Replay {
        #[command(flatten)]
        replay: ReplayArgs,
        #[command(flatten)]
        load: LoadArgs,
    },
}

/// `sandport replay`'s own flags.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// A capture file, or a --record folder (every *.spcap in it, oldest first).
    pub capture: PathBuf,
    /// The plugin to replay through, repeatable for a chain (a bare name is also looked up in
    /// --plugins-dir).
    #[arg(long = "plugin", value_name = "PATH", required = true)]
    pub plugins: Vec<PathBuf>,
    /// What gets a fresh plugin instance, as when serving. Messages were recorded without
    /// their framing, so no --framing is needed.
    #[arg(long, value_enum, default_value_t = Isolation::Message)]
    pub isolation: Isolation,
    /// One plugin of the chain under its own mode, PLUGIN=MODE; repeatable.
    #[arg(long, value_name = "PLUGIN=MODE")]
    pub isolation_of: Vec<IsolationOf>,
}

impl ReplayArgs {
    /// The config to replay with: the chain, its settings and budgets.
    pub fn config(self, load: LoadArgs) -> Result<Config, Error> {
        let plugins = crate::plugin::discovery::resolve(&self.plugins, &load.plugins_dir)?;
        Ok(Config {
            isolation: self.isolation,
            isolation_of: (self.isolation_of.into_iter())
                .map(|o| (o.plugin, o.isolation))
                .collect(),
            ..load.into_config(plugins)
        })
    }
}

/// What loading and running plugins needs, for serving and for the tools alike.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Folder holding plugins.
    #[arg(long, env = "SANDPORT_PLUGINS_DIR", default_value = "plugins")]
    pub plugins_dir: PathBuf,

    /// A plugin setting, repeatable: PLUGIN.KEY=VALUE, where PLUGIN is the file name without
    /// `.wasm`. The plugin reads it with `config-get`.
    #[arg(long = "config", value_name = "PLUGIN.KEY=VALUE")]
    pub config: Vec<PluginSetting>,

    /// Time budget of one plugin call, in milliseconds.
    #[arg(long, env = "SANDPORT_TIMEOUT_MS", default_value_t = 1000)]
    pub timeout_ms: u64,

    /// Linear memory one plugin instance may use.
    #[arg(long, env = "SANDPORT_MEMORY_LIMIT", default_value = "128MiB")]
    pub memory_limit: ByteSize,

    /// Where compiled plugins are cached, so an unchanged plugin starts without compiling
    /// (default: $XDG_CACHE_HOME/sandport or ~/.cache/sandport).
    #[arg(long, env = "SANDPORT_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Compile every plugin at start, without reading or writing the cache.
    #[arg(long, env = "SANDPORT_NO_CACHE")]
    pub no_cache: bool,

    /// Run a core module's `_initialize` in every instance. By default it runs once, at load,
    /// and every instance starts from the state it left (what it drew, such as random seeds,
    /// is then the same in every instance; docs/core-abi.md, "Pre-initialization").
    #[arg(long, env = "SANDPORT_NO_PREINIT")]
    pub no_preinit: bool,

    /// Under `--isolation message`, make a new instance for every call. By default a worker
    /// keeps one per plugin and puts it back, in place, into the state instantiation left it in
    /// (memories, globals, tables, handles) after each call: the guest sees the same pristine
    /// instance, made once (docs/architecture.md, "Instances reset in place").
    #[arg(long, env = "SANDPORT_NO_RESET")]
    pub no_reset: bool,

    /// Where contract 0.2 plugins keep state: `memory` (shared by all workers, gone at exit),
    /// `file:PATH` (durable: every acknowledged write is synced to disk first) or
    /// `redis://HOST:PORT[/DB]` (shared by every host naming the same Redis).
    #[arg(long, env = "SANDPORT_STATE", default_value = "memory")]
    pub state: String,

    /// A state namespace shared by the named plugins, repeatable: NAME=PLUGIN,PLUGIN. They open
    /// it as the bucket NAME; each plugin's own bucket `default` stays private to it.
    #[arg(long = "shared-state", value_name = "NAME=PLUGIN,...")]
    pub shared_state: Vec<SharedState>,

    /// Largest state key a plugin may write.
    #[arg(long, env = "SANDPORT_STATE_MAX_KEY_BYTES", default_value = "1KiB")]
    pub state_max_key_bytes: ByteSize,

    /// Largest state value a plugin may write.
    #[arg(long, env = "SANDPORT_STATE_MAX_VALUE_BYTES", default_value = "1MiB")]
    pub state_max_value_bytes: ByteSize,

    /// Most bytes (keys and values) one state namespace may hold.
    #[arg(
        long,
        env = "SANDPORT_STATE_MAX_NAMESPACE_BYTES",
        default_value = "64MiB"
    )]
    pub state_max_namespace_bytes: ByteSize,
}

/// The server's own flags.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to accept clients on (port 0 picks a free port; the log says which).
    #[arg(long, env = "SANDPORT_LISTEN", default_value = "127.0.0.1:7000")]
    pub listen: SocketAddr,

    /// Serve Prometheus metrics on this address (`/metrics`), with `/healthz` and `/readyz`
    /// probes; off unless given (port 0 picks a free port; the log says which).
    #[arg(long, env = "SANDPORT_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// Make `/readyz` answer 503 while the state store cannot answer (a `redis://` store that
    /// is down), so a load balancer sends clients to hosts that reach theirs. Off by default:
    /// when every host shares one Redis, an outage would take them all out of rotation,
    /// stateless plugins included.
    #[arg(long, env = "SANDPORT_STATE_REQUIRED_FOR_READY")]
    pub state_required_for_ready: bool,

    /// Plugin to run, repeatable: each message goes through them in the order given. A bare name
    /// that is not a file here is looked up in --plugins-dir. Without any, every *.wasm in
    /// --plugins-dir runs, in name order.
    #[arg(
        long = "plugin",
        value_name = "PATH",
        env = "SANDPORT_PLUGIN",
        value_delimiter = ','
    )]
    pub plugins: Vec<PathBuf>,

    #[command(flatten)]
    pub load: LoadArgs,

    /// Do not watch the plugin files (nor the --tls-cert, --tls-key and --tls-client-ca files):
    /// a new version is then loaded only on SIGHUP. By default a file that changes (or, with no
    /// --plugin, a file added to or removed from --plugins-dir) is loaded and swapped in while
    /// serving.
    #[arg(long, env = "SANDPORT_NO_WATCH")]
    pub no_watch: bool,

    /// Record every session (connect, each message with its time, each reply, close) into
    /// this folder, for `sandport replay` (format: docs/record.md). Off unless given.
    #[arg(long, env = "SANDPORT_RECORD", value_name = "DIR")]
    pub record: Option<PathBuf>,

    /// The most bytes the recordings in --record may take: past it the oldest files are
    /// deleted.
    #[arg(long, env = "SANDPORT_RECORD_MAX_BYTES", default_value = "1GiB")]
    pub record_max_bytes: ByteSize,

    /// Worker threads (default: the number of cores). Each owns its connections and instances.
    #[arg(long, env = "SANDPORT_WORKERS")]
    pub workers: Option<usize>,

    /// Connections open at once; clients past it are closed right after they connect.
    #[arg(long, env = "SANDPORT_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Connections open at once from one client address (0: no limit). Behind a load
    /// balancer every client has the balancer's address, hence no limit by default.
    #[arg(long, env = "SANDPORT_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub max_connections_per_ip: usize,

    /// Bind --listen with SO_REUSEPORT: a new sandport can start on the same address while
    /// this one runs, then this one is stopped with SIGTERM (a zero-downtime upgrade).
    #[arg(long, env = "SANDPORT_REUSE_PORT")]
    pub reuse_port: bool,

    /// Every connection starts with a PROXY protocol header (v1 or v2) from a load balancer in
    /// --trusted-proxies; the client address it carries becomes the connection's peer.
    #[arg(long, env = "SANDPORT_PROXY_PROTOCOL")]
    pub proxy_protocol: bool,

    /// Address blocks (CIDR, comma-separated) of the proxies allowed to send a PROXY header;
    /// a connection from anywhere else is closed. Needs --proxy-protocol.
    #[arg(
        long,
        env = "SANDPORT_TRUSTED_PROXIES",
        value_name = "CIDR,...",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<Cidr>,

    /// Serve TLS (1.2 and 1.3) with this certificate chain (PEM, the server's first); needs
    /// --tls-key. SIGHUP reloads both; a bad new pair is refused and the old one kept.
    #[arg(long, env = "SANDPORT_TLS_CERT", value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "SANDPORT_TLS_KEY", value_name = "PATH")]
    pub tls_key: Option<PathBuf>,

    /// Mutual TLS: clients must show a certificate issued by one of these CAs (PEM); its
    /// subject is in the connection log line and given to plugins. Needs --tls-cert.
    #[arg(long, env = "SANDPORT_TLS_CLIENT_CA", value_name = "PATH")]
    pub tls_client_ca: Option<PathBuf>,

    /// What gets a fresh plugin instance: every message, every connection, or one per worker.
    #[arg(long, env = "SANDPORT_ISOLATION", value_enum, default_value_t = Isolation::Message)]
    pub isolation: Isolation,

    /// One plugin of the chain under its own mode, PLUGIN=MODE; repeatable (a trusted router
    /// under `worker` before an untrusted stage under `message`, say).
    #[arg(long, value_name = "PLUGIN=MODE")]
    pub isolation_of: Vec<IsolationOf>,

    /// How the byte stream is cut into messages.
    #[arg(long, env = "SANDPORT_FRAMING", value_enum, default_value_t = Framing::Line)]
    pub framing: Framing,

    /// Largest message a client may send; a larger one closes its connection.
    #[arg(long, env = "SANDPORT_MAX_MESSAGE_BYTES", default_value = "1MiB")]
    pub max_message_bytes: ByteSize,

    /// Unsent reply bytes per connection above which the host stops reading from that client.
    #[arg(long, env = "SANDPORT_MAX_OUTPUT_BYTES", default_value = "1MiB")]
    pub max_output_bytes: ByteSize,

    /// Largest reply a plugin may give (each stage of a chain); a larger one is a failed call
    /// (`reply too large`), never buffered.
    #[arg(long, env = "SANDPORT_MAX_REPLY_BYTES", default_value = "1MiB")]
    pub max_reply_bytes: ByteSize,

    /// Bytes all connections may hold together (input not yet handled, replies not yet
    /// written); past it the largest holders stop reading, past twice it they are closed.
    #[arg(long, env = "SANDPORT_MAX_BUFFERED_BYTES", default_value = "256MiB")]
    pub max_buffered_bytes: ByteSize,

    /// What a failed plugin call does: close the connection, or drop the message and go on.
    #[arg(long, env = "SANDPORT_ON_ERROR", value_enum, default_value_t = OnError::Close)]
    pub on_error: OnError,

    /// Close a connection that has sent no message, and has no reply waiting, for this long
    /// (`250ms`, `30s`, `5m`, `1h`; `off` to keep idle connections for ever).
    #[arg(long, env = "SANDPORT_IDLE_TIMEOUT", default_value = "5m")]
    pub idle_timeout: Timeout,

    /// Close a connection whose message has not arrived whole this long after its first byte
    /// (slow senders, slowloris); `off` to wait for ever.
    #[arg(long, env = "SANDPORT_MESSAGE_TIMEOUT", default_value = "60s")]
    pub message_timeout: Timeout,

    /// Close a connection whose client takes none of its waiting replies for this long
    /// (clients that never read); `off` to wait for ever.
    #[arg(long, env = "SANDPORT_WRITE_TIMEOUT", default_value = "60s")]
    pub write_timeout: Timeout,

    /// Under `--isolation connection`: a connection that has sent nothing for this long gives
    /// up its plugin instances, and its next message gets fresh ones (`1s`, `30s`; `off` keeps
    /// them for the connection's life). Memory then follows busy connections, not open ones;
    /// a plugin keeps what it must remember in host state (contract 0.2).
    #[arg(long, env = "SANDPORT_HIBERNATE_AFTER", default_value = "off")]
    pub hibernate_after: Timeout,

    /// On SIGINT/SIGTERM, how long to wait for in-flight messages and unsent replies.
    #[arg(long, env = "SANDPORT_SHUTDOWN_TIMEOUT_MS", default_value_t = 5000)]
    pub shutdown_timeout_ms: u64,

    /// Rooms one connection may be in at once (contract 0.2 messaging).
    #[arg(long, env = "SANDPORT_MAX_ROOMS_PER_CONNECTION", default_value_t = 16)]
    pub max_rooms_per_connection: usize,

    /// Log line format (the level is set with RUST_LOG, default info).
    #[arg(long, env = "SANDPORT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Benchmark baseline: echo every message in-process instead of calling the plugins.
    #[arg(long, hide = true)]
    pub bench_native_echo: bool,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// For people.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl ServeArgs {
    /// The flags as a [`Config`], with the plugin files found; `Server::new` validates it.
    pub fn into_config(self) -> Result<Config, Error> {
        let plugins = crate::plugin::discovery::resolve(&self.plugins, &self.load.plugins_dir)?;
        let defaults = Config::default();
        let plugins_dir = self
            .plugins
            .is_empty()
            .then(|| self.load.plugins_dir.clone());
        Ok(Config {
            plugins_dir,
            watch: !self.no_watch,
            record: self.record,
            record_max_bytes: self.record_max_bytes.0,
            listen: self.listen,
            reuse_port: self.reuse_port,
            metrics_listen: self.metrics_listen,
            state_required_for_ready: self.state_required_for_ready,
            workers: self.workers.unwrap_or(defaults.workers),
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            proxy_protocol: self.proxy_protocol,
            trusted_proxies: self.trusted_proxies,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            tls_client_ca: self.tls_client_ca,
            isolation: self.isolation,
            isolation_of: (self.isolation_of.into_iter())
                .map(|o| (o.plugin, o.isolation))
                .collect(),
            framing: self.framing,
            max_message_bytes: size(self.max_message_bytes),
            max_output_bytes: size(self.max_output_bytes),
            max_reply_bytes: size(self.max_reply_bytes),
            max_buffered_bytes: size(self.max_buffered_bytes),
            on_error: self.on_error,
            shutdown_timeout: Duration::from_millis(self.shutdown_timeout_ms),
            idle_timeout: self.idle_timeout.0,
            message_timeout: self.message_timeout.0,
            write_timeout: self.write_timeout.0,
            hibernate_after: self.hibernate_after.0,
            native_echo: self.bench_native_echo,
            max_rooms_per_connection: self.max_rooms_per_connection,
            ..self.load.into_config(plugins)
        })
    }
}

impl LoadArgs {
    /// A config for running `plugin` alone, in-process (the `check` and `call` tools).
    pub fn config_for_one(self, plugin: &Path) -> Result<Config, Error> {
        let plugins =
            crate::plugin::discovery::resolve(&[plugin.to_path_buf()], &self.plugins_dir)?;
        Ok(self.into_config(plugins))
    }

    /// The plugin settings and budgets; the server's own fields keep their defaults.
    fn into_config(self, plugins: Vec<PathBuf>) -> Config {
        let mut plugin_config: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for setting in self.config {
            plugin_config
                .entry(setting.plugin)
                .or_default()
                .insert(setting.key, setting.value);
        }
        let mut shared_state: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for share in self.shared_state {
            shared_state
                .entry(share.name)
                .or_default()
                .extend(share.plugins);
        }
        Config {
            plugins,
            plugin_config,
            state: self.state,
            state_quotas: Quotas {
                max_key_bytes: size(self.state_max_key_bytes),
                max_value_bytes: size(self.state_max_value_bytes),
                max_namespace_bytes: self.state_max_namespace_bytes.0,
            },
            shared_state,
            timeout: Duration::from_millis(self.timeout_ms),
            memory_limit: size(self.memory_limit),
            cache_dir: if self.no_cache {
                None
            } else {
                self.cache_dir.or_else(crate::plugin::cache::default_dir)
            },
            preinit: !self.no_preinit,
            reset: !self.no_reset,
            ..Config::default()
        }
    }
}

/// A size flag as a byte count; one too large for this machine saturates, and the config's
/// validation then says it is out of range.
fn size(value: ByteSize) -> usize {
    usize::try_from(value.0).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::discovery::tests::temp_plugins;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(std::iter::once("sandport").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        let cfg = cli.serve.into_config().map_err(|e| e.to_string())?;
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(cfg)
    }

    #[test]
    fn config_for_a_plugin_not_loaded_is_refused() {
        let dir = temp_plugins(&["upper.wasm"]);
        let d = dir.to_str().unwrap();
        let ok = parse(&["--plugins-dir", d, "--config", "upper.prefix=>"]).unwrap();
        assert_eq!(ok.plugin_config["upper"]["prefix"], ">");
        let e = parse(&["--plugins-dir", d, "--config", "lower.prefix=>"]).unwrap_err();
        assert!(e.contains("no plugin named `lower`"), "{e}");
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let dir = temp_plugins(&["p.wasm"]);
        let d = dir.to_str().unwrap();
        for (args, want) in [
            (vec!["--workers", "0"], "--workers must be at least 1"),
            (
                vec!["--max-connections", "0"],
                "--max-connections must be at least 1",
            ),
            (vec!["--timeout-ms", "0"], "--timeout-ms must be at least 1"),
            (
                vec!["--memory-limit", "1KiB"],
                "--memory-limit 1024 is out of range",
            ),
            (vec!["--memory-limit", "5GiB"], "out of range"),
            (vec!["--max-message-bytes", "0"], "out of range"),
            (vec!["--state-max-value-bytes", "0"], "out of range"),
            (vec!["--state-max-key-bytes", "0"], "out of range"),
            (
                vec!["--state-max-namespace-bytes", "0"],
                "--state-max-namespace-bytes must be at least 1",
            ),
            (
                vec!["--max-rooms-per-connection", "0"],
                "--max-rooms-per-connection must be at least 1",
            ),
            (
                vec!["--max-rooms-per-connection", "5000"],
                "more than the 1024",
            ),
            (
                vec!["--shared-state", "team=p,q"],
                "--shared-state team: no plugin named `q`",
            ),
            (vec!["--shared-state", "team"], "there is no `=`"),
            (vec!["--shared-state", "a b=p"], "invalid state namespace"),
            (vec!["--shared-state", "team=p,"], "a plugin name is empty"),
        ] {
            let mut all = vec!["--plugins-dir", d];
            all.extend(args);
            let e = parse(&all).unwrap_err();
            assert!(e.contains(want), "{all:?}: {e}");
        }
    }
}
