//! Plugins that spin, allocate without bound, recurse, trap, or probe the sandbox, through the
//! binary: what clients see and that the server survives. Which cause each failure is counted
//! under is asserted on typed stats in `in_process.rs`; one test here checks the log line.

use std::time::{Duration, Instant};

use crate::support::*;

/// A server running the test plugin `name` with the extra command-line `args`.
fn start(name: &str, args: &[&str]) -> Server {
    Server::builder()
        .plugin(test_plugin(name))
        .args(args)
        .start()
}

/// A new client still gets `msg` echoed: the server (and its worker) survived.
fn assert_still_serves(server: &Server, msg: &str) {
    server.connect().roundtrip(msg, msg);
}

/// Sends `msg` on a new connection, expects it closed without a reply within `timeout`, and
/// returns how long that took.
fn expect_closed_after(server: &Server, msg: &str, timeout: Duration) -> Duration {
    let mut c = server.connect();
    let t = Instant::now();
    c.send_line(msg);
    c.expect_closed_without_reply(timeout);
    t.elapsed()
}

/// Sends `msg`, expects `reply`, and checks the plugin really took at least `min` over it.
fn expect_slow_reply(c: &mut Client, msg: &str, reply: &str, min: Duration) {
    let t = Instant::now();
    c.roundtrip(msg, reply);
    let elapsed = t.elapsed();
    assert!(elapsed >= min, "{msg} returned in {elapsed:?}");
}

/// Checks a `plugin call failed` line names one of `any_of` (lowercase) as its cause.
fn assert_cause(line: &str, any_of: &[&str]) {
    let lower = line.to_lowercase();
    assert!(
        any_of.iter().any(|w| lower.contains(w)),
        "the `plugin call failed` line should name the cause (one of {any_of:?}): {line}"
    );
}

/// Waits for the first `plugin call failed` line and checks it names one of `any_of`.
fn expect_call_failed(server: &Server, any_of: &[&str]) -> String {
    let line = server.wait_for_log("plugin call failed", LOG_TIMEOUT);
    assert_cause(&line, any_of);
    line
}

/// Checks a `plugin call failed` line blames the on-message hook.
fn assert_hook_on_message(line: &str) {
    assert_eq!(
        log_field(line, "hook").as_deref(),
        Some("on-message"),
        "{line}"
    );
}

#[test]
fn spin_is_interrupted_by_timeout_and_server_keeps_serving() {
    let server = start("spin", &["--timeout-ms", "200"]);
    let elapsed = expect_closed_after(&server, "spin", Duration::from_secs(5));
    assert!(
        elapsed < Duration::from_millis(1500),
        "a 200ms deadline took {elapsed:?} to close the connection"
    );
    assert!(
        elapsed >= Duration::from_millis(100),
        "closed after only {elapsed:?}: was the deadline really applied?"
    );
    let line = expect_call_failed(&server, &["deadline", "timeout", "timed out", "interrupt"]);
    assert_hook_on_message(&line);

    // The same plugin serves the next client normally.
    assert_still_serves(&server, "hi");
}

#[test]
fn spin_does_not_block_other_workers() {
    let server = start("spin", &["--timeout-ms", "3000", "--workers", "2"]);
    // Open both before spinning, so they are spread over the workers whatever the policy;
    // at least one of several clients must be on the other worker.
    let mut spinner = server.connect();
    let mut others: Vec<Client> = (0..4).map(|_| server.connect()).collect();
    for (i, o) in others.iter_mut().enumerate() {
        let warm = format!("warm {i}");
        o.roundtrip(&warm, &warm);
    }
    spinner.send_line("spin");
    // Once the server has read it, the spinning call is running.
    server.wait_until_read(&spinner);
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
    let server = start("spin", &["--timeout-ms", "1000"]);
    let mut c = server.connect();
    expect_slow_reply(&mut c, "busy 50", "done 50", Duration::from_millis(50));
    c.roundtrip("after", "after");
}

#[test]
fn busy_over_the_deadline_is_interrupted() {
    let server = start("spin", &["--timeout-ms", "200"]);
    let elapsed = expect_closed_after(&server, "busy 3000", Duration::from_secs(5));
    assert!(
        elapsed < Duration::from_millis(1500),
        "a call busy in host clock calls was not interrupted in time: {elapsed:?}"
    );
}

#[test]
fn sleep_under_the_deadline_completes() {
    let server = start("spin", &["--timeout-ms", "1000"]);
    let mut c = server.connect();
    expect_slow_reply(&mut c, "sleep 50", "slept 50", Duration::from_millis(50));
}

/// Regression: the epoch deadline only interrupts running Wasm code, so a guest sleeping in a
/// WASI host call held its worker for as long as it asked, whatever --timeout-ms said.
#[test]
fn sleep_past_the_deadline_is_cut_at_the_deadline() {
    let server = start("spin", &["--timeout-ms", "200", "--workers", "1"]);
    let elapsed = expect_closed_after(&server, "sleep 30000", Duration::from_secs(5));
    assert!(
        elapsed < Duration::from_millis(1500),
        "a 30s sleep under a 200ms deadline held the connection for {elapsed:?}"
    );
    // The only worker is free again.
    assert_still_serves(&server, "hi");
}

#[test]
fn spin_with_on_error_drop_keeps_connection() {
    let server = start("spin", &["--timeout-ms", "200", "--on-error", "drop"]);
    let mut c = server.connect();
    c.send(b"spin\nafter spin\n");
    c.expect_line("after spin");
}

#[test]
fn membomb_hits_memory_limit_and_server_survives() {
    let server = start(
        "membomb",
        &["--memory-limit", "16MiB", "--timeout-ms", "10000"],
    );
    let baseline = server.rss_kib();
    let sampler = server.rss_sampler();
    expect_closed_after(&server, "bomb", Duration::from_secs(10));
    let max_rss = sampler.finish();
    assert!(
        max_rss < 200 * 1024,
        "server RSS reached {max_rss} KiB (baseline {baseline} KiB) with a 16MiB memory limit"
    );
    assert_still_serves(&server, "small");
}

#[test]
fn recurse_overflows_stack_and_server_survives() {
    let server = start("recurse", &["--timeout-ms", "10000"]);
    expect_closed_after(&server, "recurse", Duration::from_secs(10));
    assert_still_serves(&server, "fine");
    // Twice, to be sure the thread's stack is fine after an overflow.
    expect_closed_after(&server, "recurse", Duration::from_secs(10));
    assert_still_serves(&server, "fine again");
}

#[test]
fn trap_closes_every_connection_but_on_connect_keeps_working() {
    let server = start("trap", &[]);
    for round in 0..3 {
        let mut c = server.connect();
        // on-connect is fine: the connection is not closed right away.
        c.expect_silence(Duration::from_millis(200));
        c.send_line(&format!("message {round}"));
        c.expect_closed_without_reply(Duration::from_secs(3));
    }
    // Each failure's cause is counted as a trap: in_process::each_budget_is_counted_under_its_own_cause.
}

#[test]
fn trap_with_on_error_drop_drops_each_message() {
    let server = start("trap", &["--on-error", "drop"]);
    let mut c = server.connect();
    c.send(b"one\ntwo\nthree\n");
    c.expect_silence(Duration::from_millis(500));
    // Three failures counted, connection kept: in_process::on_error_drop_counts_each_failure...
}

#[test]
fn sandbox_grants_nothing() {
    let server = Server::builder()
        .plugin(test_plugin("sandbox"))
        .args(["--framing", "length"])
        .env("SANDPORT_TEST_SECRET", "do-not-leak")
        .start();
    let mut c = server.connect();
    let mut report = || {
        c.send_frame(b"report");
        let report = c.recv_frame(REPLY_TIMEOUT).expect("sandbox report");
        String::from_utf8_lossy(&report).into_owned()
    };
    let (first, second) = (report(), report());
    let lines: Vec<&str> = first.lines().collect();
    assert_eq!(lines.len(), 5, "five report lines: {first:?}");
    assert!(lines[0].starts_with("file: denied"), "{first}");
    assert_eq!(lines[1], "env: 0 vars", "{first}");
    assert_eq!(lines[2], "args: 0", "{first}");
    assert!(lines[3].starts_with("net: denied"), "{first}");

    // Secure random bytes are granted, and fresh in every call: under the default
    // `--isolation message` both calls start from the same reset instance, so a generator kept
    // in the instance would repeat itself.
    let random = |report: &str| {
        let line = report.lines().nth(4).unwrap_or_default().to_string();
        let digits = line
            .strip_prefix("random: ")
            .unwrap_or_default()
            .to_string();
        assert!(
            digits.len() == 32 && digits.chars().all(|c| c.is_ascii_hexdigit()),
            "16 random bytes in hex: {report:?}"
        );
        digits
    };
    let (a, b) = (random(&first), random(&second));
    assert_ne!(a, b, "two calls drew the same bytes");
    assert_ne!(a, "0".repeat(32), "no bytes were drawn");
}
