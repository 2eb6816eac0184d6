//! The deployment files in `deploy/`, checked by the real tools (`haproxy -c`, `systemd-analyze
//! verify`, `kubernetes-validate`; a missing tool is installed, or the test fails), and the
//! flags of the systemd unit and of the Kubernetes Deployment run through the real binary, with
//! only their paths and addresses replaced: they parse, it listens, it is ready, and SIGTERM
//! stops it with exit 0. A real HAProxy runs `haproxy.cfg` in front of the unit's host: its
//! `/readyz` checks pass and a client's address reaches the plugin's host in the PROXY header.
//! The numbers that must agree (stop timeouts, descriptors, memory) are checked against the
//! flags too.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::metrics::{metrics_addr, status};
use crate::support::*;

fn deploy(file: &str) -> PathBuf {
    workspace_root().join("deploy").join(file)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Runs `cmd`; panics with what it printed unless it exits 0.
fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn printed(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The value of `--flag` in `args` (given as `--flag VALUE` or `--flag=VALUE`).
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let eq = format!("{name}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if a == name {
            args.get(i + 1).map(String::as_str)
        } else {
            a.strip_prefix(&eq)
        }
    })
}

/// `args` with the values of `replace`'s flags replaced (both spellings), the rest unchanged.
fn substitute(args: &[String], replace: &[(&str, String)]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v)),
            _ => (a.as_str(), None),
        };
        match replace.iter().find(|(f, _)| *f == name) {
            Some((_, value)) => {
                if inline.is_none() {
                    it.next().expect("a value after the flag");
                }
                out.push(name.to_string());
                out.push(value.clone());
            }
            None => out.push(a.clone()),
        }
    }
    out
}

/// A size flag's value in bytes (`64MiB`, `1MiB`; what the deployment files use).
fn bytes(size: &str) -> u64 {
    let units = [
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
    ];
    let (n, unit) = units
        .iter()
        .find_map(|(u, m)| size.strip_suffix(u).map(|n| (n, *m)))
        .unwrap_or_else(|| panic!("no unit this test knows in {size:?}"));
    n.parse::<u64>().expect("a whole number") * unit
}

/// Starts the binary with `args` (addresses and paths already replaced), waits until `/readyz`
/// answers 200, then SIGTERM: it must exit 0 within the shutdown timeout and a margin.
fn starts_ready_and_stops(args: &[String]) {
    let mut server = Server::builder().no_default_listen().args(args).start();
    let metrics = metrics_addr(&server);
    wait_until("/readyz answers 200", STARTUP_TIMEOUT, || {
        status(metrics, "/readyz") == 200
    });
    assert!(
        server.log_lines_containing("unreachable").is_empty(),
        "{}",
        server.logs.dump()
    );
    server.signal(libc::SIGTERM);
    let shutdown_ms: u64 = flag(args, "--shutdown-timeout-ms")
        .unwrap()
        .parse()
        .unwrap();
    let exit = server
        .wait_exit(Duration::from_millis(shutdown_ms) + Duration::from_secs(5))
        .expect("it exits after SIGTERM");
    assert_eq!(exit.code(), Some(0), "{}", server.logs.dump());
}

#[test]
fn haproxy_accepts_the_config() {
    let haproxy = debian_tool("haproxy", "haproxy");
    let out = run_ok(
        Command::new(haproxy)
            .arg("-c")
            .arg("-f")
            .arg(deploy("haproxy.cfg")),
    );
    let said = printed(&out);
    assert!(
        !said.contains("[WARNING]") && !said.contains("[ALERT]"),
        "{said}"
    );
}

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
fn unit_args_here(dir: &TempDir, trusted: Option<&str>) -> Vec<String> {
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

/// deploy/haproxy.cfg as it is, but for its addresses (the frontend on `front`, its servers
/// replaced by one, `server` with its metrics on `metrics`), its check interval, and its global
/// maxconn, whose descriptors (two a connection) a test machine may not allow.
fn haproxy_cfg_here(front: SocketAddr, server: SocketAddr, metrics: SocketAddr) -> String {
    let cfg = read(&deploy("haproxy.cfg"));
    let mut out = String::new();
    let mut servers = 0;
    for line in cfg.lines() {
        let t = line.trim_start();
        if t.starts_with("maxconn ") {
            out += "    maxconn 1000\n";
        } else if t.starts_with("bind :7000") {
            out += &format!("    bind {front}\n");
        } else if t.starts_with("server ") {
            servers += 1;
            if servers == 1 {
                out += &format!("    server s1 {server}\n");
            }
        } else {
            // Checks every 100 ms instead of 2 s, so that a failing check shows within the test.
            out += &line
                .replace(" port 9000 ", &format!(" port {} ", metrics.port()))
                .replace(" inter 2s ", " inter 100ms ");
            out += "\n";
        }
    }
    assert!(servers >= 2 && out.contains(" inter 100ms "));
    out
}

#[test]
fn haproxy_with_the_config_checks_readyz_and_passes_clients_to_the_units_host() {
    let dir = TempDir::new("haproxy-run");
    let args = unit_args_here(&dir, Some("127.0.0.1/32"));
    let mut server = Server::builder().no_default_listen().args(&args).start();
    let metrics = metrics_addr(&server);
    let front = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let cfg = dir.write(
        "haproxy.cfg",
        haproxy_cfg_here(front, server.addr, metrics).as_bytes(),
    );
    let mut haproxy = Command::new(debian_tool("haproxy", "haproxy"))
        .arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("haproxy starts");
    let (said, _) = LogBuffer::capture(haproxy.stderr.take().unwrap());
    let (logged, _) = LogBuffer::capture(haproxy.stdout.take().unwrap());
    let _kill = KillOnDrop(haproxy);

    // A client from 127.0.0.2 through HAProxy: the plugin (chat) answers it, and sandport saw
    // its own address in the PROXY v2 header.
    let listening = eventually(Duration::from_secs(10), || TcpStream::connect(front).ok());
    assert!(listening.is_some(), "{}", said.dump());
    drop(listening);
    // Ten checks of /readyz on the metrics port, without a PROXY header: all must pass (two
    // failures in a row would mark the host down).
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        said.matching(|l| l.contains("is DOWN")).is_empty(),
        "{}",
        said.dump()
    );
    let mut client = Client::connect_from([127, 0, 0, 2], front);
    let welcome = client.recv_line(REPLY_TIMEOUT).unwrap_or_else(|e| {
        panic!(
            "no welcome through haproxy: {e:?}\n{}{}",
            said.dump(),
            logged.dump()
        )
    });
    assert!(welcome.starts_with("welcome guest"), "{welcome}");
    client.roundtrip("/nick ada", "you are ada");
    let own = client.local_addr().to_string();
    server.wait_for_log_where(LOG_TIMEOUT, "the client's own address", |l| {
        l.contains("connection opened") && l.contains(&own)
    });

    // SIGTERM: /readyz turns 503, then the host exits (with one idle client, at once), and the
    // checks mark it down.
    server.signal(libc::SIGTERM);
    let down = said.wait_for(Duration::from_secs(15), |l| l.contains("s1 is DOWN"));
    assert!(down.is_some(), "{}\n{}", said.dump(), logged.dump());
    assert_eq!(
        server
            .wait_exit(Duration::from_secs(10))
            .and_then(|e| e.code()),
        Some(0)
    );
}

/// Kills the child on drop, so a failing test leaves no haproxy behind.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The virtualenv holding `kubernetes-validate` (PyPI), installed by `validator.sh` if missing.
fn validator_venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let out = run_ok(Command::new("bash").arg(deploy("kubernetes/validator.sh")));
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

fn manifests() -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(deploy("kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    all.sort();
    assert!(all.len() >= 2, "{all:?}");
    all
}

#[test]
fn kubernetes_validate_accepts_the_manifests() {
    let venv = validator_venv();
    let out = run_ok(
        Command::new(venv.join("bin/kubernetes-validate"))
            .arg("--strict")
            .args(manifests()),
    );
    let said = printed(&out);
    assert!(!said.contains("WARN") && !said.contains("ERROR"), "{said}");
    for kind in [
        "deployment/sandport",
        "service/sandport",
        "deployment/redis",
        "service/redis",
    ] {
        assert!(
            said.contains(&format!("passed for resource {kind} ")),
            "{said}"
        );
    }
}

/// What this test reads of the sandport Deployment, printed by PyYAML (installed with the
/// validator), one `key<TAB>value` a line.
const READ_DEPLOYMENT: &str = r#"
import sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if doc["kind"] != "Deployment":
        continue
    pod = doc["spec"]["template"]["spec"]
    c = pod["containers"][0]
    for a in c["args"]:
        print("arg\t" + a)
    print("grace\t%d" % pod["terminationGracePeriodSeconds"])
    print("prestop\t%d" % c["lifecycle"]["preStop"]["sleep"]["seconds"])
    print("memory\t" + c["resources"]["limits"]["memory"])
    print("readiness\t" + c["readinessProbe"]["httpGet"]["path"])
    print("liveness\t" + c["livenessProbe"]["httpGet"]["path"])
"#;

#[test]
fn the_deployments_flags_start_the_binary_and_its_limits_fit_them() {
    let venv = validator_venv();
    let out = run_ok(
        Command::new(venv.join("bin/python"))
            .arg("-c")
            .arg(READ_DEPLOYMENT)
            .arg(deploy("kubernetes/sandport.yaml")),
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let fields: Vec<(&str, &str)> = text.lines().filter_map(|l| l.split_once('\t')).collect();
    let one = |k: &str| fields.iter().find(|(f, _)| *f == k).unwrap().1;
    let args: Vec<String> = fields
        .iter()
        .filter(|(f, _)| *f == "arg")
        .map(|(_, a)| a.to_string())
        .collect();
    assert_eq!(one("readiness"), "/readyz");
    assert_eq!(one("liveness"), "/healthz");

    // The kubelet's SIGKILL comes terminationGracePeriodSeconds after the preStop starts: the
    // sleep and the whole drain must fit, with a margin.
    let shutdown_ms: u64 = flag(&args, "--shutdown-timeout-ms")
        .unwrap()
        .parse()
        .unwrap();
    let grace: u64 = one("grace").parse().unwrap();
    let prestop: u64 = one("prestop").parse().unwrap();
    assert!(
        grace * 1000 >= prestop * 1000 + shutdown_ms + 2000,
        "grace {grace}s, preStop {prestop}s, drain {shutdown_ms}ms"
    );
    // The README's bound (How it works, "A global budget"): buffered bytes under
    // 2 x budget + workers x (message + output + reply), plus one instance per worker and plugin
    // at most --memory-limit each, plus a base of about 10 MiB; the limit must hold it.
    let workers: u64 = flag(&args, "--workers").unwrap().parse().unwrap();
    let per_worker = 3 * (1 << 20); // the three 1 MiB defaults
    for f in [
        "--max-message-bytes",
        "--max-output-bytes",
        "--max-reply-bytes",
    ] {
        assert!(flag(&args, f).is_none(), "{f} changed: update this bound");
    }
    let plugins = args.iter().filter(|a| a.starts_with("--plugin=")).count() as u64;
    let bound = 2 * bytes(flag(&args, "--max-buffered-bytes").unwrap())
        + workers * per_worker
        + workers * plugins * bytes(flag(&args, "--memory-limit").unwrap())
        + (10 << 20);
    let limit = bytes(one("memory"));
    assert!(
        limit > bound,
        "memory limit {limit} under the bound {bound}"
    );

    let redis = RedisServer::start();
    assert_eq!(flag(&args, "--state"), Some("redis://redis:6379"));
    let args = substitute(
        &args,
        &[
            ("--listen", "127.0.0.1:0".into()),
            ("--metrics-listen", "127.0.0.1:0".into()),
            ("--plugins-dir", plugins_dir().display().to_string()),
            ("--state", redis.url()),
            ("--cache-dir", test_cache_dir().display().to_string()),
        ],
    );
    starts_ready_and_stops(&args);
}
