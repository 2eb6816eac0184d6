//! The budgets obeyed and violated: the cut-off refusing new calls and interrupting running ones.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::*;

use crate::config::{Config, Isolation};
use crate::plugin::bindings::Connection;
use crate::plugin::{Cause, ConnInstances, Plugins, WorkerPool};

/// A core-ABI plugin (docs/core-abi.md) whose `sandport_on_message` spins forever on a message
/// starting with `l`; otherwise it answers the first message of an instance (no reply) and traps
/// on any later one, so a call that fails with a timeout instead was never let in.
const GUEST: &str = r#"
(module
  (memory (export "memory") 1)
  (global $calls (mut i32) (i32.const 0))
  (func (export "sandport_abi_version") (result i32) (i32.const 1))
  (func (export "sandport_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "sandport_free") (param i32 i32))
  (func (export "sandport_on_message") (param i64 i32 i32) (result i32)
    (if (i32.eq (i32.load8_u (local.get 1)) (i32.const 0x6c))
      (then (loop $spin (br $spin))))
    (if (global.get $calls) (then unreachable))
    (global.set $calls (i32.const 1))
    (i32.const 0)))
"#;

/// A pool of [`GUEST`] whose calls have a minute each, so only the cut-off can stop them.
fn pool(isolation: Isolation, cutoff: &CutOff) -> WorkerPool {
    // A file per pool: tests run in parallel, and one must not read another's half-written file.
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("sandport-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!(
        "guest-{}.wat",
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, GUEST).unwrap();
    let cfg = Config {
        plugins: vec![path],
        timeout: Duration::from_secs(60),
        memory_limit: 16 << 20,
        cache_dir: None,
        isolation,
        ..Config::default()
    };
    let plugins = Plugins::load(&cfg, cutoff.clone()).unwrap();
    WorkerPool::new(Arc::new(plugins), None)
}

fn conn() -> Connection {
    Connection {
        id: 1,
        peer: "127.0.0.1:40000".into(),
        local: "127.0.0.1:7000".into(),
    }
}

#[test]
fn a_cut_off_keeps_its_first_instant_and_clones_share_it() {
    let cutoff = CutOff::default();
    assert_eq!(cutoff.at(), None);
    let shared = cutoff.clone();
    let first = Instant::now();
    cutoff.set(first);
    shared.set(first + Duration::from_secs(1));
    assert_eq!((cutoff.at(), shared.at()), (Some(first), Some(first)));
}

#[test]
fn a_calls_budget_ends_at_the_cut_off_when_that_comes_first() {
    let cutoff = CutOff::default();
    let mut limits = Limits::new(1 << 20, cutoff.clone());
    limits.deadline = Instant::now() + Duration::from_secs(60);
    assert!(!limits.overdue());
    assert!(limits.left() > Duration::from_secs(59));
    cutoff.set(Instant::now());
    assert!(limits.overdue(), "past the cut-off no budget is left");
}

#[test]
fn a_hook_starting_after_the_cut_off_is_refused_without_entering_the_guest() {
    // Worker isolation reuses the first call's instance; message isolation makes a fresh one.
    for isolation in [Isolation::Worker, Isolation::Message] {
        let cutoff = CutOff::default();
        let mut pool = pool(isolation, &cutoff);
        let mut own = ConnInstances::default();
        pool.on_message(&conn(), &mut own, b"first")
            .unwrap_or_else(|e| panic!("{isolation}: the first call is answered: {}", e.cause));

        cutoff.set(Instant::now());
        let e = pool.on_message(&conn(), &mut own, b"second").unwrap_err();
        // Entered, the guest would have trapped (worker) or answered (message).
        assert!(matches!(e.cause, Cause::CutOff), "{isolation}: {}", e.cause);
        let failed = pool.on_disconnect(&conn(), &mut own, 1);
        assert!(
            matches!(failed.as_slice(), [e] if matches!(e.cause, Cause::CutOff)),
            "{isolation}: on-disconnect is refused too: {failed:?}"
        );
    }
}

#[test]
fn a_running_call_is_interrupted_once_the_cut_off_passes() {
    let cutoff = CutOff::default();
    let mut pool = pool(Isolation::Message, &cutoff);
    let started = Instant::now();
    cutoff.set(started + Duration::from_millis(100));
    let e = pool
        .on_message(&conn(), &mut ConnInstances::default(), b"loop")
        .unwrap_err();
    assert!(matches!(e.cause, Cause::Timeout), "{}", e.cause);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_secs(10),
        "stopped after {took:?}, not at the cut-off"
    );
}
