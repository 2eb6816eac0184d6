//! The `flags` fuzz target: every flag value parser on any text: none panics, a value that
//! parses parses again from its normal form to the same value, and a size is exact or refused.

use crate::config::{ByteSize, PluginSetting, SharedState, Timeout};

/// Checks one case: the bytes as text (lossily, if they are not UTF-8), given to every parser.
pub fn flags(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    size(&text);
    timeout(&text);
    setting(&text);
    shared(&text);
}

fn size(text: &str) {
    let parsed = text.parse::<ByteSize>();
    if let Ok(ByteSize(n)) = parsed {
        // Never wrapped or saturated: the digits times the unit, exactly.
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let digits: u128 = t[..split].parse().expect("a size that parsed has digits");
        let unit = t[split..].trim().to_ascii_lowercase();
        let factor: u128 = match unit.trim_end_matches('b') {
            "" => 1,
            "k" => 1_000,
            "ki" => 1 << 10,
            "m" => 1_000_000,
            "mi" => 1 << 20,
            "g" => 1_000_000_000,
            "gi" => 1 << 30,
            other => panic!("`{text}` parsed with the unit `{other}`"),
        };
        assert_eq!(u128::from(n), digits * factor, "`{text}`");
        assert_eq!(n.to_string().parse(), Ok(ByteSize(n)), "`{text}`");
    }
    if let Err(e) = parsed {
        assert!(!e.is_empty());
    }
}

fn timeout(text: &str) {
    match text.parse::<Timeout>() {
        Ok(Timeout(None)) => assert_eq!("off".parse(), Ok(Timeout(None))),
        Ok(Timeout(Some(d))) => {
            assert!(
                d.as_millis() > 0 && d.subsec_nanos() % 1_000_000 == 0,
                "`{text}`: {d:?}"
            );
            let normal = format!("{}ms", d.as_millis());
            assert_eq!(normal.parse(), Ok(Timeout(Some(d))), "`{text}`");
        }
        Err(e) => assert!(!e.is_empty()),
    }
}

fn setting(text: &str) {
    match text.parse::<PluginSetting>() {
        Ok(s) => {
            assert!(!s.plugin.is_empty() && !s.key.is_empty());
            assert!(
                !s.plugin.contains(['.', '=']) && !s.key.contains('='),
                "{s:?}"
            );
            let normal = format!("{}.{}={}", s.plugin, s.key, s.value);
            assert_eq!(normal, text, "a setting is its own normal form");
            assert_eq!(normal.parse(), Ok(s));
        }
        Err(e) => assert!(!e.is_empty()),
    }
}

fn shared(text: &str) {
    match text.parse::<SharedState>() {
        Ok(s) => {
            assert!(crate::state::Namespace::shared(&s.name).is_ok(), "{s:?}");
            assert!(
                s.plugins
                    .iter()
                    .all(|p| !p.is_empty() && p.trim() == p && !p.contains(',')),
                "{s:?}"
            );
            let normal = format!("{}={}", s.name, s.plugins.join(","));
            assert_eq!(normal.parse(), Ok(s));
        }
        Err(e) => assert!(!e.is_empty()),
    }
}
