//! The command line as typed (clap), and its check into a validated [`Config`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::config::{ByteSize, Config, Framing, Isolation, OnError, PluginSetting};
use crate::error::Error;

/// Serve TCP clients, passing every message through sandboxed WebAssembly handler plugins.
#[derive(Debug, Parser)]
#[command(name = "sandport", version, about, long_about = None)]
pub struct Cli {
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

    /// Folder holding plugins.
    #[arg(long, env = "SANDPORT_PLUGINS_DIR", default_value = "plugins")]
    pub plugins_dir: PathBuf,

    /// A plugin setting, repeatable: PLUGIN.KEY=VALUE, where PLUGIN is the file name without
    /// `.wasm`. The plugin reads it with `config-get`.
    #[arg(long = "config", value_name = "PLUGIN.KEY=VALUE")]
    pub config: Vec<PluginSetting>,

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

    /// Time budget of one plugin call, in milliseconds.
    #[arg(long, env = "SANDPORT_TIMEOUT_MS", default_value_t = 1000)]
    pub timeout_ms: u64,

    /// Linear memory one plugin instance may use.
    #[arg(long, env = "SANDPORT_MEMORY_LIMIT", default_value = "128MiB")]
    pub memory_limit: ByteSize,

    /// What a failed plugin call does: close the connection, or drop the message and go on.
    #[arg(long, env = "SANDPORT_ON_ERROR", value_enum, default_value_t = OnError::Close)]
    pub on_error: OnError,

    /// On SIGINT/SIGTERM, how long to wait for in-flight messages and unsent replies.
    #[arg(long, env = "SANDPORT_SHUTDOWN_TIMEOUT_MS", default_value_t = 5000)]
    pub shutdown_timeout_ms: u64,

    /// Log line format (the level is set with RUST_LOG, default info).
    #[arg(long, env = "SANDPORT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
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

impl Cli {
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
        let memory_limit = in_range(
            "--memory-limit",
            self.memory_limit,
            64 << 10,
            MAX_MEMORY_LIMIT,
        )?;
        if self.timeout_ms == 0 {
            return Err(Error::config("--timeout-ms must be at least 1"));
        }

        let plugins = resolve_plugins(&self.plugins, &self.plugins_dir)?;
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

        Ok(Config {
            listen: self.listen,
            plugins,
            plugin_config,
            workers,
            max_connections: self.max_connections,
            isolation: self.isolation,
            framing: self.framing,
            max_message_bytes,
            max_output_bytes,
            timeout: Duration::from_millis(self.timeout_ms),
            memory_limit,
            on_error: self.on_error,
            shutdown_timeout: Duration::from_millis(self.shutdown_timeout_ms),
        })
    }
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
        cli.into_config().map_err(|e| e.to_string())
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
