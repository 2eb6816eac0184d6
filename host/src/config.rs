//! The validated server configuration, and the small value types its flags are made of.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Everything the server needs to run, already checked: every value here is usable as is.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to accept clients; port 0 lets the OS pick.
    pub listen: SocketAddr,
    /// The plugin files of the chain, in call order, already resolved to existing paths.
    pub plugins: Vec<PathBuf>,
    /// Per-plugin settings read by the `config-get` import, keyed by plugin name.
    pub plugin_config: BTreeMap<String, BTreeMap<String, String>>,
    /// Event-loop threads; each owns its connections and its plugin instances.
    pub workers: usize,
    /// Open connections allowed at once; the next client is closed right after accept.
    pub max_connections: usize,
    /// What gets a fresh plugin instance.
    pub isolation: Isolation,
    /// How bytes on the socket become messages and replies become bytes.
    pub framing: Framing,
    /// Largest message accepted from a client, checked before buffering it.
    pub max_message_bytes: usize,
    /// Unsent reply bytes per connection above which the host stops reading from it.
    pub max_output_bytes: usize,
    /// Wall-clock budget of one plugin call.
    pub timeout: Duration,
    /// Linear memory an instance may grow to.
    pub memory_limit: usize,
    /// What a failed plugin call does to its connection.
    pub on_error: OnError,
    /// How long shutdown waits for in-flight messages and unsent replies.
    pub shutdown_timeout: Duration,
    /// Where compiled plugins are cached; `None` compiles at every start.
    pub cache_dir: Option<PathBuf>,
    /// Benchmarks only: answer every message with itself, in-process, without calling any
    /// plugin, to measure what the sandbox costs against the same server.
    pub native_echo: bool,
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

/// A byte count written as `1048576`, `64KiB`, `1MiB`, `2GiB`, `64KB` or `1MB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        if digits.is_empty() {
            return Err(format!(
                "`{s}` is not a size: expected a number of bytes such as 1048576, 64KiB or 128MiB"
            ));
        }
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("`{s}` is too large a size"))?;
        let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            other => {
                return Err(format!(
                    "`{s}` has an unknown unit `{other}`: use B, KB, KiB, MB, MiB, GB or GiB"
                ))
            }
        };
        n.checked_mul(factor)
            .map(ByteSize)
            .ok_or_else(|| format!("`{s}` is too large a size"))
    }
}

/// One `--config PLUGIN.KEY=VALUE` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSetting {
    pub plugin: String,
    pub key: String,
    pub value: String,
}

impl FromStr for PluginSetting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, value) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}` is not PLUGIN.KEY=VALUE: there is no `=`"))?;
        let (plugin, key) = name
            .split_once('.')
            .ok_or_else(|| format!("`{s}` is not PLUGIN.KEY=VALUE: `{name}` has no `.`"))?;
        if plugin.is_empty() || key.is_empty() {
            return Err(format!(
                "`{s}` is not PLUGIN.KEY=VALUE: the plugin and the key must not be empty"
            ));
        }
        Ok(PluginSetting {
            plugin: plugin.to_string(),
            key: key.to_string(),
            value: value.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_and_without_units() {
        assert_eq!("1024".parse(), Ok(ByteSize(1024)));
        assert_eq!("64KiB".parse(), Ok(ByteSize(64 << 10)));
        assert_eq!("128MiB".parse(), Ok(ByteSize(128 << 20)));
        assert_eq!("1mb".parse(), Ok(ByteSize(1_000_000)));
        assert_eq!("2 GiB".parse(), Ok(ByteSize(2 << 30)));
    }

    #[test]
    fn bad_sizes_say_why() {
        let e = "lots".parse::<ByteSize>().unwrap_err();
        assert!(e.contains("not a size"), "{e}");
        let e = "12parsecs".parse::<ByteSize>().unwrap_err();
        assert!(e.contains("unknown unit `parsecs`"), "{e}");
        let e = "99999999999999999999GiB".parse::<ByteSize>().unwrap_err();
        assert!(e.contains("too large"), "{e}");
        let e = "18446744073709551615GiB".parse::<ByteSize>().unwrap_err();
        assert!(e.contains("too large"), "{e}");
    }

    #[test]
    fn plugin_settings_split_on_first_dot_and_equals() {
        let s: PluginSetting = "upper.prefix=>> a=b".parse().unwrap();
        assert_eq!(s.plugin, "upper");
        assert_eq!(s.key, "prefix");
        assert_eq!(s.value, ">> a=b");
        let s: PluginSetting = "upper.greeting=".parse().unwrap();
        assert_eq!(s.value, "");
    }

    #[test]
    fn malformed_plugin_settings_are_refused() {
        assert!("noequals"
            .parse::<PluginSetting>()
            .unwrap_err()
            .contains("no `=`"));
        assert!("nodot=1"
            .parse::<PluginSetting>()
            .unwrap_err()
            .contains("no `.`"));
        assert!(".key=1"
            .parse::<PluginSetting>()
            .unwrap_err()
            .contains("empty"));
        assert!("plugin.=1"
            .parse::<PluginSetting>()
            .unwrap_err()
            .contains("empty"));
    }
}
