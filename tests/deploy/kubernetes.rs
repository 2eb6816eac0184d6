//! deploy/kubernetes/: `kubernetes-validate --strict` (PyPI) on every manifest, and the
//! Deployment's flags run through the binary, its grace period and memory limit checked
//! against them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::*;

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
