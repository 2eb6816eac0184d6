//! deploy/sandport.service: `systemd-analyze verify` and `security`, and its ExecStart flags run
//! through the binary.

use std::path::PathBuf;
use std::process::Command;

use super::*;

/// The unit with its ExecStart binary replaced by the one under test, which `verify` requires
/// to exist.
fn unit_with_test_binary(dir: &TempDir) -> PathBuf {
    let unit = read(&deploy("sandport.service"));
    assert!(unit.contains("ExecStart=/usr/local/bin/sandport "));
    let bin = sandport_bin();
    dir.write(
        "sandport.service",
        unit.replace("/usr/local/bin/sandport", bin.to_str().unwrap())
            .as_bytes(),
    )
}

#[test]
fn systemd_analyze_verifies_the_unit_and_rates_it_ok() {
    let analyze = debian_tool("systemd-analyze", "systemd");
    let dir = TempDir::new("unit");
    let unit = unit_with_test_binary(&dir);
    let out = run_ok(Command::new(&analyze).arg("verify").arg(&unit));
    // Unknown keys and bad values are warnings, not failures: none may be printed.
    let said = printed(&out);
    assert!(!said.contains("sandport.service"), "{said}");
    // An exposure of 3.0 or less is what systemd calls "OK" (its scale is 0 to 10, the
    // threshold's 0 to 100).
    run_ok(
        Command::new(&analyze)
            .args(["security", "--offline=true", "--threshold=30"])
            .arg(&unit),
    );
}

/// The ExecStart command line of the unit, continuation lines joined, split on blanks.
fn unit_exec_start(unit: &str) -> Vec<String> {
    let joined = unit.replace("\\\n", " ");
    let line = joined
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    line.split_whitespace().skip(1).map(String::from).collect()
}

fn unit_setting<'a>(unit: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}=");
    unit.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
}

#[test]
fn the_units_flags_start_the_binary_and_its_limits_fit_them() {
    let unit = read(&deploy("sandport.service"));
    let args = unit_exec_start(&unit);

    // systemd's SIGKILL must not come before the drain's deadline.
    let shutdown_ms: u64 = flag(&args, "--shutdown-timeout-ms")
        .unwrap()
        .parse()
        .unwrap();
    let stop: u64 = unit_setting(&unit, "TimeoutStopSec")
        .strip_suffix('s')
        .unwrap()
        .parse()
        .unwrap();
    assert!(stop * 1000 >= shutdown_ms + 2000, "TimeoutStopSec={stop}s");
    // A descriptor per client, and some for the process itself.
    let max_conns: u64 = flag(&args, "--max-connections").unwrap().parse().unwrap();
    let nofile: u64 = unit_setting(&unit, "LimitNOFILE").parse().unwrap();
    assert!(nofile >= max_conns + 1024, "LimitNOFILE={nofile}");
    // The state file and cache are where systemd lets the service write.
    assert_eq!(
        flag(&args, "--state"),
        Some("file:/var/lib/sandport/state.redb")
    );
    assert_eq!(unit_setting(&unit, "StateDirectory"), "sandport");
    assert_eq!(flag(&args, "--cache-dir"), Some("/var/cache/sandport"));
    assert_eq!(unit_setting(&unit, "CacheDirectory"), "sandport");

    let dir = TempDir::new("unit-run");
    // The balancer's own address stays: the flag parses whatever the CIDR.
    let args = unit_args_here(&dir, None);
    assert_eq!(flag(&args, "--trusted-proxies"), Some("10.0.0.2/32"));
    starts_ready_and_stops(&args);
}

/// The unit's ExecStart flags with its addresses and paths replaced by ones of this machine
/// (and `trusted`, if given, as the proxies trusted).
pub(super) fn unit_args_here(dir: &TempDir, trusted: Option<&str>) -> Vec<String> {
    let args = unit_exec_start(&read(&deploy("sandport.service")));
    let state = format!("file:{}", dir.join("state.redb").display());
    let mut replace = vec![
        ("--listen", "127.0.0.1:0".to_string()),
        ("--metrics-listen", "127.0.0.1:0".into()),
        ("--plugins-dir", plugins_dir().display().to_string()),
        ("--state", state),
        ("--cache-dir", test_cache_dir().display().to_string()),
    ];
    if let Some(t) = trusted {
        replace.push(("--trusted-proxies", t.to_string()));
    }
    substitute(&args, &replace)
}
