//! The values flags are written in: sizes (`64KiB`), times (`30s`, `off`) and plugin settings
//! (`PLUGIN.KEY=VALUE`), each parsed with an error that says what was expected.

use std::str::FromStr;
use std::time::Duration;

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

/// A time span written as `250ms`, `30s`, `5m` or `1h`; `0` or `off` for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(pub Option<Duration>);

impl FromStr for Timeout {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s == "0" || s.eq_ignore_ascii_case("off") {
            return Ok(Timeout(None));
        }
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits.parse().map_err(|_| {
            format!("`{s}` is not a time: expected a number and a unit, such as 250ms, 30s, 5m or 1h, or off")
        })?;
        let ms = match unit.trim() {
            "ms" => Some(n),
            "s" => n.checked_mul(1_000),
            "m" => n.checked_mul(60_000),
            "h" => n.checked_mul(3_600_000),
            "" => {
                return Err(format!(
                    "`{s}` has no unit: write {s}ms, {s}s, {s}m or {s}h"
                ))
            }
            other => {
                return Err(format!(
                    "`{s}` has an unknown unit `{other}`: use ms, s, m or h"
                ))
            }
        };
        let ms = ms.ok_or_else(|| format!("`{s}` is too long a time"))?;
        Ok(Timeout((ms > 0).then(|| Duration::from_millis(ms))))
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

/// `--shared-state NAME=PLUGIN,PLUGIN`: a state namespace the named plugins share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedState {
    pub name: String,
    pub plugins: Vec<String>,
}

impl FromStr for SharedState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, plugins) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}` is not NAME=PLUGIN,PLUGIN: there is no `=`"))?;
        crate::state::Namespace::shared(name).map_err(|e| e.to_string())?;
        let plugins: Vec<String> = plugins.split(',').map(|p| p.trim().to_string()).collect();
        if plugins.iter().any(String::is_empty) {
            return Err(format!(
                "`{s}` is not NAME=PLUGIN,PLUGIN: a plugin name is empty"
            ));
        }
        Ok(SharedState {
            name: name.to_string(),
            plugins,
        })
    }
}

/// `--isolation-of PLUGIN=MODE`: one plugin of a chain under its own isolation mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsolationOf {
    pub plugin: String,
    pub isolation: super::Isolation,
}

impl FromStr for IsolationOf {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (plugin, mode) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}` is not PLUGIN=MODE: there is no `=`"))?;
        let plugin = plugin.trim();
        if plugin.is_empty() {
            return Err(format!(
                "`{s}` is not PLUGIN=MODE: the plugin name is empty"
            ));
        }
        let isolation = <super::Isolation as clap::ValueEnum>::from_str(mode.trim(), true)
            .map_err(|_| {
                format!("`{mode}` is not an isolation mode: message, connection or worker")
            })?;
        Ok(IsolationOf {
            plugin: plugin.to_string(),
            isolation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn isolation_of_names_a_plugin_and_a_mode() {
        let want = IsolationOf {
            plugin: "router".into(),
            isolation: crate::config::Isolation::Worker,
        };
        assert_eq!("router=worker".parse(), Ok(want));
        assert!("router"
            .parse::<IsolationOf>()
            .unwrap_err()
            .contains("no `=`"));
        assert!("=worker"
            .parse::<IsolationOf>()
            .unwrap_err()
            .contains("empty"));
        let bad = "router=fast".parse::<IsolationOf>().unwrap_err();
        assert!(bad.contains("message, connection or worker"), "{bad}");
    }

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
    fn timeouts_parse_with_units_and_off() {
        let ms = |n| Ok(Timeout(Some(Duration::from_millis(n))));
        assert_eq!("250ms".parse(), ms(250));
        assert_eq!("30s".parse(), ms(30_000));
        assert_eq!("5m".parse(), ms(300_000));
        assert_eq!("1h".parse(), ms(3_600_000));
        assert_eq!("off".parse(), Ok(Timeout(None)));
        assert_eq!("0".parse(), Ok(Timeout(None)));
        assert!("30".parse::<Timeout>().unwrap_err().contains("no unit"));
        assert!("3d"
            .parse::<Timeout>()
            .unwrap_err()
            .contains("unknown unit `d`"));
        assert!("soon"
            .parse::<Timeout>()
            .unwrap_err()
            .contains("not a time"));
        let e = "99999999999999999h".parse::<Timeout>().unwrap_err();
        assert!(e.contains("too long"), "{e}");
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
