//! The command line as typed (clap), and its check into a validated [`Config`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{ByteSize, Config, Framing, Isolation, OnError, PluginSetting};
use crate::error::Error;

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
}

/// The server's own flags.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to accept clients on (port 0 picks a free port; the log says which).
    #[arg(long, env = "SANDPORT_LISTEN", default_value = "127.0.0.1:7000")]
    pub listen: SocketAddr,

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

    /// Worker threads (default: the number of cores). Each owns its connections and instances.
    #[arg(long, env = "SANDPORT_WORKERS")]
    pub workers: Option<usize>,

    /// Connections open at once; clients past it are closed right after they connect.
    #[arg(long, env = "SANDPORT_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// What gets a fresh plugin instance: every message, every connection, or one per worker.
    #[arg(long, env = "SANDPORT_ISOLATION", value_enum, default_value_t = Isolation::Message)]
    pub isolation: Isolation,

    /// How the byte stream is cut into messages.
    #[arg(long, env = "SANDPORT_FRAMING", value_enum, default_value_t = Framing::Line)]
    pub framing: Framing,

    /// Largest message a client may send; a larger one closes its connection.
    #[arg(long, env = "SANDPORT_MAX_MESSAGE_BYTES", default_value = "1MiB")]
    pub max_message_bytes: ByteSize,

    /// Unsent reply bytes per connection above which the host stops reading from that client.
    #[arg(long, env = "SANDPORT_MAX_OUTPUT_BYTES", default_value = "1MiB")]
    pub max_output_bytes: ByteSize,

    /// What a failed plugin call does: close the connection, or drop the message and go on.
    #[arg(long, env = "SANDPORT_ON_ERROR", value_enum, default_value_t = OnError::Close)]
    pub on_error: OnError,

    /// On SIGINT/SIGTERM, how long to wait for in-flight messages and unsent replies.
    #[arg(long, env = "SANDPORT_SHUTDOWN_TIMEOUT_MS", default_value_t = 5000)]
    pub shutdown_timeout_ms: u64,

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

/// The most linear memory a 32-bit Wasm instance can address.
const MAX_MEMORY_LIMIT: u64 = 4 << 30;
/// Keeps frame lengths representable in the 4-byte length prefix and buffers allocatable.
const MAX_MESSAGE_LIMIT: u64 = u32::MAX as u64;

impl ServeArgs {
    /// Checks every value and resolves the plugin files, so the server never sees a bad one.
    pub fn into_config(self) -> Result<Config, Error> {
        let workers = match self.workers {
            Some(0) => return Err(Error::config("--workers must be at least 1")),
            Some(n) if n > 1024 => {
                return Err(Error::config(format!(
                    "--workers {n} is more than the 1024 allowed"
                )))
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        if self.max_connections == 0 {
            return Err(Error::config("--max-connections must be at least 1"));
        }
        if self.max_connections > 1_000_000 {
            return Err(Error::config(format!(
                "--max-connections {} is more than the 1000000 allowed",
                self.max_connections
            )));
        }
        let max_message_bytes = in_range(
            "--max-message-bytes",
            self.max_message_bytes,
            1,
            MAX_MESSAGE_LIMIT,
        )?;
        let max_output_bytes = in_range(
            "--max-output-bytes",
            self.max_output_bytes,
            1,
            MAX_MESSAGE_LIMIT,
        )?;
        let plugins = resolve_plugins(&self.plugins, &self.load.plugins_dir)?;
        let mut cfg = self.load.into_config(plugins)?;
        cfg.listen = self.listen;
        cfg.workers = workers;
        cfg.max_connections = self.max_connections;
        cfg.isolation = self.isolation;
        cfg.framing = self.framing;
        cfg.max_message_bytes = max_message_bytes;
        cfg.max_output_bytes = max_output_bytes;
        cfg.on_error = self.on_error;
        cfg.shutdown_timeout = Duration::from_millis(self.shutdown_timeout_ms);
        cfg.native_echo = self.bench_native_echo;
        Ok(cfg)
    }
}

impl LoadArgs {
    /// A config for running `plugin` alone, in-process (the `check` and `call` tools).
    pub fn config_for_one(self, plugin: &Path) -> Result<Config, Error> {
        let plugins = resolve_plugins(&[plugin.to_path_buf()], &self.plugins_dir)?;
        self.into_config(plugins)
    }

    /// The plugin settings and budgets checked; the server's own fields get their defaults.
    fn into_config(self, plugins: Vec<PathBuf>) -> Result<Config, Error> {
        let memory_limit = in_range(
            "--memory-limit",
            self.memory_limit,
            64 << 10,
            MAX_MEMORY_LIMIT,
        )?;
        if self.timeout_ms == 0 {
            return Err(Error::config("--timeout-ms must be at least 1"));
        }
        let names: Vec<String> = plugins.iter().map(|p| crate::plugin::name_of(p)).collect();
        let mut plugin_config: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for setting in self.config {
            if !names.contains(&setting.plugin) {
                return Err(Error::config(format!(
                    "--config {}.{}: no plugin named `{}` is loaded (loaded: {})",
                    setting.plugin,
                    setting.key,
                    setting.plugin,
                    names.join(", ")
                )));
            }
            plugin_config
                .entry(setting.plugin)
                .or_default()
                .insert(setting.key, setting.value);
        }
        let cache_dir = if self.no_cache {
            None
        } else {
            self.cache_dir.or_else(default_cache_dir)
        };
        Ok(Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            plugins,
            plugin_config,
            workers: 1,
            max_connections: 1,
            isolation: Isolation::Message,
            framing: Framing::Line,
            max_message_bytes: 1 << 20,
            max_output_bytes: 1 << 20,
            timeout: Duration::from_millis(self.timeout_ms),
            memory_limit,
            on_error: OnError::Close,
            shutdown_timeout: Duration::from_secs(5),
            cache_dir,
            native_echo: false,
        })
    }
}

/// `$XDG_CACHE_HOME/sandport`, else `~/.cache/sandport`; none without a home.
fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("sandport"))
}

fn in_range(flag: &str, value: ByteSize, min: u64, max: u64) -> Result<usize, Error> {
    if value.0 < min || value.0 > max {
        return Err(Error::config(format!(
            "{flag} {} is out of range: it must be between {min} and {max} bytes",
            value.0
        )));
    }
    Ok(value.0 as usize)
}

/// Turns `--plugin` values into existing files: a path that exists is used as is; a bare name
/// that does not is looked up in the plugins folder. No `--plugin` means the whole folder.
fn resolve_plugins(given: &[PathBuf], dir: &Path) -> Result<Vec<PathBuf>, Error> {
    if given.is_empty() {
        return plugins_in(dir);
    }
    given
        .iter()
        .map(|p| {
            if p.is_file() {
                return Ok(p.clone());
            }
            let in_dir = dir.join(p);
            if p.components().count() == 1 && in_dir.is_file() {
                return Ok(in_dir);
            }
            let looked = if p.components().count() == 1 {
                format!("{} or {}", p.display(), in_dir.display())
            } else {
                p.display().to_string()
            };
            Err(Error::config(format!(
                "plugin `{}` not found: there is no file {looked}",
                p.display()
            )))
        })
        .collect()
}

fn plugins_in(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Error::config(format!(
            "no --plugin given and the plugins folder {} cannot be read: {e}",
            dir.display()
        ))
    })?;
    let mut found = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| Error::config(format!("reading {}: {e}", dir.display())))?
            .path();
        if path.extension().is_some_and(|e| e == "wasm") && path.is_file() {
            found.push(path);
        }
    }
    if found.is_empty() {
        return Err(Error::config(format!(
            "no --plugin given and the plugins folder {} holds no *.wasm file",
            dir.display()
        )));
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(std::iter::once("sandport").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.serve.into_config().map_err(|e| e.to_string())
    }

    fn temp_plugins(names: &[&str]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sandport-cli-{}-{}",
            std::process::id(),
            names.join("-")
        ));
        std::fs::create_dir_all(&dir).unwrap();
        for n in names {
            std::fs::write(dir.join(n), b"\0asm").unwrap();
        }
        dir
    }

    #[test]
    fn folder_plugins_load_in_name_order_and_skip_other_files() {
        let dir = temp_plugins(&["b.wasm", "a.wasm", "notes.txt"]);
        let cfg = parse(&["--plugins-dir", dir.to_str().unwrap()]).unwrap();
        let names: Vec<_> = cfg.plugins.iter().map(|p| p.file_name().unwrap()).collect();
        assert_eq!(names, ["a.wasm", "b.wasm"]);
    }

    #[test]
    fn bare_names_are_looked_up_in_the_plugins_folder() {
        let dir = temp_plugins(&["echo.wasm"]);
        let cfg = parse(&[
            "--plugins-dir",
            dir.to_str().unwrap(),
            "--plugin",
            "echo.wasm",
        ])
        .unwrap();
        assert_eq!(cfg.plugins, [dir.join("echo.wasm")]);
    }

    #[test]
    fn a_missing_plugin_names_both_places_looked_in() {
        let dir = temp_plugins(&["x.wasm"]);
        let e = parse(&[
            "--plugins-dir",
            dir.to_str().unwrap(),
            "--plugin",
            "nope.wasm",
        ])
        .unwrap_err();
        assert!(e.contains("plugin `nope.wasm` not found"), "{e}");
        assert!(
            e.contains(&dir.join("nope.wasm").display().to_string()),
            "{e}"
        );
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
        ] {
            let mut all = vec!["--plugins-dir", d];
            all.extend(args);
            let e = parse(&all).unwrap_err();
            assert!(e.contains(want), "{all:?}: {e}");
        }
    }
}
