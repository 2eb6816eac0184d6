//! Plugins that spin, allocate without bound, recurse, trap, or probe the sandbox.

use std::time::{Duration, Instant};

use crate::support::*;

/// The first `plugin call failed` line.
fn wait_call_failed(server: &Server, timeout: Duration) -> String {
    server.wait_for_log("plugin call failed", timeout)
}

/// A new client still gets its echo: the server (and its worker) survived.
fn assert_still_serves(server: &Server) {
    let mut c = server.connect();
    c.send_line("hi");
    c.expect_line("hi");
}

fn assert_cause(line: &str, any_of: &[&str]) {
    let lower = line.to_lowercase();
    assert!(
        any_of.iter().any(|w| lower.contains(w)),
        "the `plugin call failed` line should name the cause (one of {any_of:?}): {line}"
    );
}

#[test]
fn spin_is_interrupted_by_timeout_and_server_keeps_serving() {
    let server = Server::builder()
        .plugin(test_plugin("spin"))
        .args(["--timeout-ms", "200"])
        .start();
    let mut c = server.connect();
    let t = Instant::now();
    c.send_line("spin");
    c.expect_closed_without_reply(Duration::from_secs(5));
    let elapsed = t.elapsed();
    assert!(
        elapsed < Duration::from_millis(1500),
        "a 200ms deadline took {elapsed:?} to close the connection"
    );
    assert!(
        elapsed >= Duration::from_millis(100),
        "closed after only {elapsed:?}: was the deadline really applied?"
    );
    let line = wait_call_failed(&server, LOG_TIMEOUT);
    assert_cause(&line, &["deadline", "timeout", "timed out", "interrupt"]);
    assert_eq!(
        log_field(&line, "hook").as_deref(),
        Some("on-message"),
        "{line}"
    );

    // The same plugin serves the next client normally.
    assert_still_serves(&server);
}

#[test]
fn spin_does_not_block_other_workers() {
    let server = Server::builder()
        .plugin(test_plugin("spin"))
        .args(["--timeout-ms", "3000", "--workers", "2"])
        .start();
    // Open both before spinning, so they are spread over the workers whatever the policy;
    // at least one of several clients must be on the other worker.
    let mut spinner = server.connect();
    let mut others: Vec<Client> = (0..4).map(|_| server.connect()).collect();
    for (i, o) in others.iter_mut().enumerate() {
        o.send_line(&format!("warm {i}"));
        o.expect_line(&format!("warm {i}"));
    }
    spinner.send_line("spin");
    std::thread::sleep(Duration::from_millis(100));
    for o in others.iter_mut() {
        o.send_line("during spin");
    }
    // Clients on the other worker answer well before the 3s deadline frees the spinning one.
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut answered = vec![false; others.len()];
    for (i, o) in others.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Ok(l) = o.recv_line(left.max(Duration::from_millis(1))) {
            assert_eq!(l, "during spin");
            answered[i] = true;
        }
    }
    assert!(
        answered.iter().any(|&a| a),
        "no client was served while one worker was spinning"
    );
    // The others are answered once the spinning call hits its deadline.
    for (i, o) in others.iter_mut().enumerate() {
        if !answered[i] {
            let l = o.recv_line(Duration::from_secs(5)).unwrap_or_else(|e| {
                panic!("client {i} behind the spinning call never answered: {e:?}")
            });
            assert_eq!(l, "during spin");
        }
    }
    spinner.expect_closed_without_reply(Duration::from_secs(6));
}

#[test]
fn busy_under_the_deadline_completes() {
    let server = Server::builder()
        .plugin(test_plugin("spin"))
        .args(["--timeout-ms", "1000"])
        .start();
    let mut c = server.connect();
    let t = Instant::now();
    c.send_line("busy 50");
    c.expect_line("done 50");
    assert!(
        t.elapsed() >= Duration::from_millis(50),
        "busy 50 returned in {:?}",
        t.elapsed()
    );
    c.send_line("after");
    c.expect_line("after");
}

#[test]
fn busy_over_the_deadline_is_interrupted() {
    let server = Server::builder()
        .plugin(test_plugin("spin"))
        .args(["--timeout-ms", "200"])
        .start();
    let mut c = server.connect();
    let t = Instant::now();
    c.send_line("busy 3000");
    c.expect_closed_without_reply(Duration::from_secs(5));
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "a call busy in host clock calls was not interrupted in time: {:?}",
        t.elapsed()
    );
    let line = wait_call_failed(&server, LOG_TIMEOUT);
    assert_cause(&line, &["deadline", "timeout", "timed out", "interrupt"]);
}

#[test]
fn sleep_under_the_deadline_completes() {
    let server = Server::builder()
        .plugin(test_plugin("spin"))
        .args(["--timeout-ms", "1000"])
        .start();
    let mut c = server.connect();
    let t = Instant::now();
    c.send_line("sleep 50");
    c.expect_line("slept 50");
    assert!(
        t.elapsed() >= Duration::from_millis(50),
        "sleep 50 returned in {:?}",
        t.elapsed()
    );
}

/// Regression: the epoch deadline only interrupts running Wasm code, so a guest sleeping in a
/// WASI host call held its worker for as long as it asked, whatever --timeout-ms said.
#[test]
fn sleep_past_the_deadline_is_cut_at_the_deadline() {
    let server = Server::builder()
        .plugin(test_plugin("spin"))
        .args(["--timeout-ms", "200", "--workers", "1"])
        .start();
    let mut c = server.connect();
    let t = Instant::now();
    c.send_line("sleep 30000");
    c.expect_closed_without_reply(Duration::from_secs(5));
    let elapsed = t.elapsed();
    assert!(
        elapsed < Duration::from_millis(1500),
        "a 30s sleep under a 200ms deadline held the connection for {elapsed:?}"
    );
    let line = wait_call_failed(&server, LOG_TIMEOUT);
    assert_cause(&line, &["deadline"]);
    // The only worker is free again.
    assert_still_serves(&server);
}

#[test]
fn spin_with_on_error_drop_keeps_connection() {
    let server = Server::builder()
        .plugin(test_plugin("spin"))
        .args(["--timeout-ms", "200", "--on-error", "drop"])
        .start();
    let mut c = server.connect();
    c.send(b"spin\nafter spin\n");
    c.expect_line("after spin");
}

#[test]
fn membomb_hits_memory_limit_and_server_survives() {
    let server = Server::builder()
        .plugin(test_plugin("membomb"))
        .args(["--memory-limit", "16MiB", "--timeout-ms", "10000"])
        .start();
    let baseline = server.rss_kib();
    let sampler = server.rss_sampler();
    let mut c = server.connect();
    c.send_line("bomb");
    c.expect_closed_without_reply(Duration::from_secs(10));
    let line = wait_call_failed(&server, LOG_TIMEOUT);
    let max_rss = sampler.finish();
    assert_cause(&line, &["memory"]);
    assert!(
        max_rss < 200 * 1024,
        "server RSS reached {max_rss} KiB (baseline {baseline} KiB) with a 16MiB memory limit"
    );
    let mut d = server.connect();
    d.send_line("small");
    d.expect_line("small");
}

#[test]
fn recurse_overflows_stack_and_server_survives() {
    let server = Server::builder()
        .plugin(test_plugin("recurse"))
        .args(["--timeout-ms", "10000"])
        .start();
    let mut c = server.connect();
    c.send_line("recurse");
    c.expect_closed_without_reply(Duration::from_secs(10));
    let line = wait_call_failed(&server, LOG_TIMEOUT);
    assert_cause(&line, &["stack"]);
    let mut d = server.connect();
    d.send_line("fine");
    d.expect_line("fine");
    // Twice, to be sure the thread's stack is fine after an overflow.
    let mut e = server.connect();
    e.send_line("recurse");
    e.expect_closed_without_reply(Duration::from_secs(10));
    let mut f = server.connect();
    f.send_line("fine again");
    f.expect_line("fine again");
}

#[test]
fn trap_closes_every_connection_but_on_connect_keeps_working() {
    let server = Server::builder().plugin(test_plugin("trap")).start();
    for round in 0..3 {
        let mut c = server.connect();
        // on-connect is fine: the connection is not closed right away.
        c.expect_silence(Duration::from_millis(200));
        c.send_line(&format!("message {round}"));
        c.expect_closed_without_reply(Duration::from_secs(3));
    }
    let failures = eventually(LOG_TIMEOUT, || {
        let v = server.log_lines_containing("plugin call failed");
        (v.len() >= 3).then_some(v)
    })
    .unwrap_or_else(|| {
        panic!(
            "expected 3 `plugin call failed` lines:\n{}",
            server.logs.dump()
        )
    });
    for line in &failures {
        assert_eq!(
            log_field(line, "hook").as_deref(),
            Some("on-message"),
            "{line}"
        );
        assert_cause(line, &["unreachable", "panic", "trap"]);
    }
}

#[test]
fn trap_with_on_error_drop_drops_each_message() {
    let server = Server::builder()
        .plugin(test_plugin("trap"))
        .args(["--on-error", "drop"])
        .start();
    let mut c = server.connect();
    c.send(b"one\ntwo\nthree\n");
    c.expect_silence(Duration::from_millis(500));
    let n = eventually(LOG_TIMEOUT, || {
        let n = server.log_lines_containing("plugin call failed").len();
        (n >= 3).then_some(n)
    });
    assert_eq!(n, Some(3), "{}", server.logs.dump());
}

#[test]
fn sandbox_grants_nothing() {
    let server = Server::builder()
        .plugin(test_plugin("sandbox"))
        .args(["--framing", "length"])
        .env("SANDPORT_TEST_SECRET", "do-not-leak")
        .start();
    let mut c = server.connect();
    c.send_frame(b"report");
    let report = c.recv_frame(REPLY_TIMEOUT).expect("sandbox report");
    let report = String::from_utf8_lossy(&report).into_owned();
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), 4, "four report lines: {report:?}");
    assert!(lines[0].starts_with("file: denied"), "{report}");
    assert_eq!(lines[1], "env: 0 vars", "{report}");
    assert_eq!(lines[2], "args: 0", "{report}");
    assert!(lines[3].starts_with("net: denied"), "{report}");
}
