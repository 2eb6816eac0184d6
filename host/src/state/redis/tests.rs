//! The Redis backend against a real `redis-server`: the conformance suite, then what only a
//! shared, networked store has (hosts sharing keys and quotas, Redis down, frozen, restarted).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::server::RedisServer;
use super::Redis;
use crate::state::{
    Answer, Backend, KeyPage, Namespace, Op, Quota, Quotas, Reply, StateError, Ttl, Unavailable,
};

/// A backend on a `redis-server` of its own, stopped with it.
struct Owned {
    backend: Redis,
    _server: RedisServer,
}

impl Backend for Owned {
    fn run(&self, ns: &Namespace, key: &str, op: Op, deadline: Instant) -> Answer<Reply> {
        self.backend.run(ns, key, op, deadline)
    }
    fn list_keys(&self, ns: &Namespace, from: Option<&str>, deadline: Instant) -> Answer<KeyPage> {
        self.backend.list_keys(ns, from, deadline)
    }
    fn usage(&self, ns: &Namespace, deadline: Instant) -> Answer<u64> {
        self.backend.usage(ns, deadline)
    }
}

fn owned(quotas: Quotas) -> Arc<dyn Backend> {
    let server = RedisServer::start();
    let backend = Redis::open(&server.url(), quotas).unwrap();
    Arc::new(Owned {
        backend,
        _server: server,
    })
}

crate::state::conformance::suite!(owned);

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

fn ns() -> Namespace {
    Namespace::plugin("a").unwrap()
}

/// Polls `done` every 5 ms for up to 10 s.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < until, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn unavailable<T: std::fmt::Debug>(result: Answer<T>) -> Unavailable {
    match result {
        Err(StateError::Unavailable(why)) => why,
        other => panic!("expected unavailable, got {other:?}"),
    }
}

#[test]
fn hosts_sharing_a_redis_share_keys_and_quotas() {
    let server = RedisServer::start();
    let quotas = Quotas {
        max_namespace_bytes: 100,
        ..Quotas::default()
    };
    let one = Redis::open(&server.url(), quotas).unwrap();
    let two = Redis::open(&server.url(), quotas).unwrap();
    one.set(&ns(), "k", b"from one", None, soon()).unwrap();
    assert_eq!(
        two.get(&ns(), "k", soon()).unwrap().as_deref(),
        Some(&b"from one"[..])
    );
    assert_eq!(two.increment(&ns(), "n", 2, soon()).unwrap(), 2);
    assert_eq!(one.increment(&ns(), "n", 3, soon()).unwrap(), 5);
    // One namespace total for every host: 9 + 2 bytes used, so 89 more fit and 90 do not.
    let big = vec![0; 88];
    assert!(matches!(
        two.set(&ns(), "b", &[0; 89], None, soon()),
        Err(StateError::Quota(q)) if q.quota == Quota::NamespaceBytes && q.asked == 101
    ));
    one.set(&ns(), "b", &big, None, soon()).unwrap();
    assert_eq!(two.usage(&ns(), soon()).unwrap(), 100);
}

#[test]
fn keys_are_laid_out_under_the_namespace_with_native_ttls() {
    let server = RedisServer::start();
    let backend = Redis::open(&server.url(), Quotas::default()).unwrap();
    backend
        .set(&ns(), "k", b"v", Some(Duration::from_secs(60)), soon())
        .unwrap();
    let mut conn = ::redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let value: Vec<u8> = ::redis::cmd("GET")
        .arg("sandport:{plugin:a}:v:k")
        .query(&mut conn)
        .unwrap();
    assert_eq!(value, b"v");
    let pttl: i64 = ::redis::cmd("PTTL")
        .arg("sandport:{plugin:a}:v:k")
        .query(&mut conn)
        .unwrap();
    assert!((59_000..=60_000).contains(&pttl), "{pttl}");
    // A key Redis expires or evicts on its own still frees its bytes.
    let _: () = ::redis::cmd("DEL")
        .arg("sandport:{plugin:a}:v:k")
        .query(&mut conn)
        .unwrap();
    assert_eq!(backend.get(&ns(), "k", soon()).unwrap(), None);
    assert_eq!(backend.usage(&ns(), soon()).unwrap(), 0);
}

#[test]
fn an_unreachable_redis_fails_fast_and_is_retried_with_backoff() {
    let mut server = RedisServer::start();
    let url = server.url();
    server.stop();
    let backend = Redis::open(&url, Quotas::default()).expect("starts without its store");
    assert!(backend.ready(soon()).is_err());
    let started = Instant::now();
    for _ in 0..100 {
        let why = unavailable(backend.get(&ns(), "k", soon()));
        assert!(
            matches!(why, Unavailable::Backoff | Unavailable::Store(_)),
            "{why:?}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "100 calls took {:?}: not failing fast",
        started.elapsed()
    );
    server.restart();
    eventually("the backend reconnected", || {
        backend.set(&ns(), "k", b"v", None, soon()).is_ok()
    });
    assert!(backend.ready(soon()).is_ok());
}

#[test]
fn a_restarted_redis_is_reconnected_to() {
    let mut server = RedisServer::start();
    let backend = Redis::open(&server.url(), Quotas::default()).unwrap();
    // Several pooled connections, all of which the restart breaks.
    std::thread::scope(|s| {
        for t in 0..4 {
            let backend = &backend;
            s.spawn(move || {
                backend
                    .set(&ns(), &format!("k{t}"), b"v", None, soon())
                    .unwrap()
            });
        }
    });
    server.restart();
    eventually("calls succeed again", || {
        backend.get(&ns(), "k0", soon()).is_ok()
    });
    // Redis restarted empty (no persistence): the state is gone, the backend is fine.
    assert_eq!(backend.get(&ns(), "k0", soon()).unwrap(), None);
    assert_eq!(backend.increment(&ns(), "n", 1, soon()).unwrap(), 1);
    assert_eq!(backend.usage(&ns(), soon()).unwrap(), 2);
}

#[test]
fn a_frozen_redis_never_holds_a_call_past_its_deadline() {
    let server = RedisServer::start();
    let backend = Redis::open(&server.url(), Quotas::default()).unwrap();
    backend.set(&ns(), "k", b"v", None, soon()).unwrap();
    let pid = server.pid().unwrap() as libc::pid_t;
    // SAFETY: signals our own child process.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let budget = Duration::from_millis(200);
    let started = Instant::now();
    let why = unavailable(backend.get(&ns(), "k", started + budget));
    let took = started.elapsed();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert!(matches!(why, Unavailable::Deadline), "{why:?}");
    assert!(took < budget + Duration::from_millis(100), "took {took:?}");
    eventually("the thawed store answers", || {
        backend.get(&ns(), "k", soon()).is_ok()
    });
    assert_eq!(backend.ttl(&ns(), "k", soon()).unwrap(), Ttl::Persistent);
}

#[test]
fn workers_waiting_on_redis_wait_side_by_side_not_in_line() {
    let server = RedisServer::start();
    let backend = Redis::open(&server.url(), Quotas::default()).unwrap();
    backend.set(&ns(), "k", b"v", None, soon()).unwrap();
    let pid = server.pid().unwrap() as libc::pid_t;
    // SAFETY: signals our own child process.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    // Four calls that each wait out a 300 ms deadline: on one shared socket they would take
    // 1.2 s, one after the other; on a connection each, 300 ms together.
    let budget = Duration::from_millis(300);
    let started = Instant::now();
    let took: Vec<Duration> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    unavailable(backend.get(&ns(), "k", started + budget));
                    started.elapsed()
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    for t in &took {
        assert!(*t < budget + Duration::from_millis(150), "{took:?}");
    }
    eventually("the thawed store answers", || {
        backend.get(&ns(), "k", soon()).is_ok()
    });
}
