//! The `redis://` state backend through the real binary and a real `redis-server`: hosts sharing
//! one Redis see each other's keys and one quota, and a rate limit holds across them; Redis
//! stopped mid-run, under load too, makes state calls answer `unavailable` errors at once (never
//! hang, never fail the call), `/readyz` says so when asked, and everything works again once
//! Redis is back on its port.

use std::time::{Duration, Instant};

use super::{ask, expect_error};
use crate::metrics::{metrics_addr, status};
use crate::support::*;

/// A `statetest` host on `redis`, with `args`.
fn host(redis: &RedisServer, args: &[&str]) -> Server {
    Server::builder()
        .plugin(test_plugin("statetest"))
        .args(["--state", &redis.url()])
        .args(args)
        .start()
}

#[test]
fn hosts_sharing_a_redis_see_each_others_keys_and_one_quota() {
    let redis = RedisServer::start();
    let quota = ["--state-max-namespace-bytes", "100"];
    let (one, two) = (host(&redis, &quota), host(&redis, &quota));
    let (mut a, mut b) = (one.connect(), two.connect());
    a.roundtrip("set greeting hello from one", "ok");
    b.roundtrip("get greeting", "hello from one");
    b.roundtrip("incr n 2", "2");
    a.roundtrip("incr n 3", "5");
    a.roundtrip("setttl t 60000 x", "ok");
    let ttl = ask(&mut b, "ttl t");
    assert!(ttl.starts_with("remaining "), "{ttl}");
    b.roundtrip("keys", "greeting n t");
    // 22 + 2 + 2 bytes are used through both hosts: 74 more fit, 75 do not.
    let refused = expect_error(&ask(&mut b, &format!("set big {}", "x".repeat(72))), "set");
    assert!(refused.contains("quota"), "{refused}");
    a.roundtrip(&format!("set big {}", "x".repeat(71)), "ok");
    b.roundtrip("del big", "ok");
    a.roundtrip("exists big", "false");
    one.assert_no_call_failed();
    two.assert_no_call_failed();
}

#[test]
fn the_rate_limiter_counts_a_client_across_hosts() {
    let redis = RedisServer::start();
    let limiter = || {
        Server::builder()
            .plugin(test_plugin("ratelimit"))
            .args(["--state", &redis.url()])
            .config("ratelimit.max=3")
            .config("ratelimit.window_ms=60000")
            .start()
    };
    let (one, two) = (limiter(), limiter());
    let (mut a, mut b) = (one.connect(), two.connect());
    a.roundtrip("a1", "a1");
    b.roundtrip("b1", "b1");
    a.roundtrip("a2", "a2");
    // The fourth message from 127.0.0.1, on whichever host, is one too many.
    b.roundtrip("b2", "rate limit exceeded");
    b.expect_closed_without_reply(REPLY_TIMEOUT);
    a.roundtrip("a3", "rate limit exceeded");
}

#[test]
fn a_redis_restart_is_unavailable_errors_at_once_then_recovery() {
    let mut redis = RedisServer::start();
    let server = host(
        &redis,
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--state-required-for-ready",
        ],
    );
    let m = metrics_addr(&server);
    let mut c = server.connect();
    c.roundtrip("set k before", "ok");
    assert_eq!(status(m, "/readyz"), 200);

    redis.stop();
    // Every call of the outage answers an error well within its 1 s deadline.
    for _ in 0..20 {
        let started = Instant::now();
        let error = expect_error(&ask(&mut c, "get k"), "get k");
        assert!(error.contains("unavailable"), "{error}");
        let took = started.elapsed();
        assert!(took < Duration::from_millis(500), "an error took {took:?}");
    }
    wait_until("/readyz answers 503", REPLY_TIMEOUT, || {
        status(m, "/readyz") == 503
    });

    redis.restart();
    // Redis came back empty (no persistence here); the host reconnects within its backoff.
    wait_until("state calls succeed again", REPLY_TIMEOUT, || {
        ask(&mut c, "set k after") == "ok"
    });
    c.roundtrip("get k", "after");
    wait_until("/readyz answers 200", REPLY_TIMEOUT, || {
        status(m, "/readyz") == 200
    });
    // The outage's errors were answers: the connection was served throughout.
    server.assert_no_call_failed();
}

#[test]
fn a_host_starts_without_its_redis_and_serves_once_it_comes() {
    let mut redis = RedisServer::start();
    redis.stop();
    let server = host(
        &redis,
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--state-required-for-ready",
        ],
    );
    server.wait_for_log("state store unreachable", LOG_TIMEOUT);
    let m = metrics_addr(&server);
    assert_eq!(status(m, "/readyz"), 503);
    assert_eq!(status(m, "/healthz"), 200, "alive, only not ready");
    let mut c = server.connect();
    let error = expect_error(&ask(&mut c, "incr n 1"), "incr n 1");
    assert!(error.contains("unavailable"), "{error}");

    redis.restart();
    wait_until("/readyz answers 200", REPLY_TIMEOUT, || {
        status(m, "/readyz") == 200
    });
    c.roundtrip("incr n 1", "1");
}

/// Redis restarted under load: every reply of the outage is an `unavailable` error within the
/// call's deadline (never a hang, never a closed connection), and every client is served again.
#[test]
fn a_redis_restart_under_load_costs_errors_never_hangs() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

    let mut redis = RedisServer::start();
    let server = host(&redis, &["--workers", "2"]);
    let (stop, served, refused) = (AtomicBool::new(false), AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        for _ in 0..8 {
            let mut c = server.connect();
            let (stop, served, refused) = (&stop, &served, &refused);
            s.spawn(move || {
                while !stop.load(Relaxed) {
                    c.send_line("incr n 1");
                    // 1 s deadline per call (the default --timeout-ms), plus slack for a busy box.
                    let reply = c
                        .recv_line(Duration::from_secs(2))
                        .unwrap_or_else(|e| panic!("no reply within 2 s: {e:?}"));
                    if reply.parse::<i64>().is_ok() {
                        served.fetch_add(1, Relaxed);
                    } else {
                        let error = expect_error(&reply, "incr n 1");
                        assert!(error.contains("unavailable"), "{error}");
                        refused.fetch_add(1, Relaxed);
                    }
                }
            });
        }
        let served = &served;
        wait_until("clients are served", REPLY_TIMEOUT, || {
            served.load(Relaxed) >= 100
        });
        redis.stop();
        wait_until("the outage is answered with errors", REPLY_TIMEOUT, || {
            refused.load(Relaxed) >= 50
        });
        redis.restart();
        let before = served.load(Relaxed);
        wait_until("clients are served again", REPLY_TIMEOUT, || {
            served.load(Relaxed) >= before + 100
        });
        stop.store(true, Relaxed);
    });
    server.assert_no_call_failed();
}
