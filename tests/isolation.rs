//! Instance isolation (`--isolation message|connection|worker`), observed with the counter
//! plugin, which replies how many messages its instance has seen.

use std::time::{Duration, Instant};

use crate::support::*;

fn counter_server(extra: &[&str]) -> Server {
    Server::builder()
        .plugin(test_plugin("counter"))
        .args(extra)
        .start()
}

#[test]
fn message_isolation_gives_every_message_a_fresh_instance() {
    let server = counter_server(&["--isolation", "message"]);
    let mut a = server.connect();
    let mut b = server.connect();
    for _ in 0..5 {
        a.send_line("tick");
        a.expect_line("1");
    }
    // Pipelined messages too.
    b.send(b"x\nx\nx\n");
    for _ in 0..3 {
        b.expect_line("1");
    }
}

#[test]
fn message_isolation_is_the_default() {
    let server = counter_server(&[]);
    let mut a = server.connect();
    a.send(b"x\nx\nx\n");
    for _ in 0..3 {
        a.expect_line("1");
    }
}

#[test]
fn connection_isolation_counts_per_connection() {
    let server = counter_server(&["--isolation", "connection"]);
    let mut a = server.connect();
    for n in 1..=3 {
        a.send_line("tick");
        a.expect_line(&n.to_string());
    }
    // A second connection has its own instance: it starts again at 1 ...
    let mut b = server.connect();
    b.send_line("tick");
    b.expect_line("1");
    b.send_line("tick");
    b.expect_line("2");
    // ... and the first one keeps its own state.
    a.send_line("tick");
    a.expect_line("4");
}

#[test]
fn connection_isolation_does_not_leak_state_to_the_next_connection() {
    let server = counter_server(&["--isolation", "connection", "--workers", "1"]);
    let mut a = server.connect();
    a.send(b"x\nx\nx\n");
    for n in 1..=3 {
        a.expect_line(&n.to_string());
    }
    drop(a);
    let mut b = server.connect();
    b.send_line("tick");
    b.expect_line("1");
}

#[test]
fn worker_isolation_with_one_worker_shares_state_across_connections() {
    let server = counter_server(&["--isolation", "worker", "--workers", "1"]);
    let mut a = server.connect();
    a.send_line("tick");
    a.expect_line("1");
    a.send_line("tick");
    a.expect_line("2");
    drop(a);
    let mut b = server.connect();
    b.send_line("tick");
    b.expect_line("3");
    // Two connections open at once share the one worker's instance.
    let mut c = server.connect();
    c.send_line("tick");
    c.expect_line("4");
    b.send_line("tick");
    b.expect_line("5");
}

/// A chain of `upper` (stateless, under the server's mode) then `counter` under its own mode.
fn mixed_chain(extra: &[&str]) -> Server {
    Server::builder()
        .plugin(plugin("upper"))
        .plugin(test_plugin("counter"))
        .args(["--workers", "1"])
        .args(extra)
        .start()
}

#[test]
fn one_stage_of_a_chain_can_run_under_worker_isolation_while_the_rest_is_per_message() {
    let server = mixed_chain(&["--isolation", "message", "--isolation-of", "counter=worker"]);
    let mut a = server.connect();
    let mut b = server.connect();
    // One instance of `counter` for the worker: it counts across messages and connections.
    a.roundtrip("tick", "1");
    a.roundtrip("tick", "2");
    b.roundtrip("tick", "3");
    a.roundtrip("tick", "4");
}

#[test]
fn isolation_of_can_make_one_stage_stricter_or_per_connection() {
    let strict = mixed_chain(&["--isolation", "worker", "--isolation-of", "counter=message"]);
    let mut a = strict.connect();
    for _ in 0..3 {
        a.roundtrip("tick", "1");
    }
    let per_conn = mixed_chain(&["--isolation-of", "counter=connection"]);
    let mut a = per_conn.connect();
    let mut b = per_conn.connect();
    a.roundtrip("tick", "1");
    a.roundtrip("tick", "2");
    b.roundtrip("tick", "1");
    a.roundtrip("tick", "3");
}

#[test]
fn isolation_of_a_plugin_not_loaded_or_an_unknown_mode_is_refused_at_start() {
    let counter = test_plugin("counter");
    for (value, want) in [
        ("nosuch=worker", "no plugin named `nosuch`"),
        ("counter=fast", "message, connection or worker"),
        ("counter", "PLUGIN=MODE"),
    ] {
        let (code, stderr) = run_expect_failure([
            "--plugin".as_ref(),
            counter.as_os_str(),
            "--isolation-of".as_ref(),
            value.as_ref(),
        ]);
        assert_eq!(code, 2, "{value}: {stderr}");
        assert!(stderr.contains(want), "{value}: {stderr}");
    }
}

/// `--hibernate-after`: a quiet connection's instance is dropped (its next message meets a
/// fresh one, as under message isolation), a busy one keeps its own, and the counter shows it.
#[test]
fn a_quiet_connection_gives_up_its_instance_and_a_busy_one_keeps_it() {
    let (server, metrics) = crate::metrics::with_metrics(
        &[test_plugin("counter")],
        &["--isolation", "connection", "--hibernate-after", "500ms"],
    );
    let mut quiet = server.connect();
    let mut busy = server.connect();
    quiet.roundtrip("tick", "1");
    quiet.roundtrip("tick", "2");
    // The busy client sends more often than the limit for well over it, and keeps counting.
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_millis(1200) {
        n += 1;
        busy.roundtrip("tick", &n.to_string());
        std::thread::sleep(Duration::from_millis(50));
    }
    // The quiet one was hibernated meanwhile (only it: one instance in all) ...
    crate::metrics::wait_value(
        metrics,
        "sandport_plugin_instances_hibernated_total",
        &[("plugin", "counter")],
        1.0,
    );
    // ... so its next message starts again from a fresh instance, which it then keeps.
    quiet.roundtrip("tick", "1");
    quiet.roundtrip("tick", "2");
    busy.roundtrip("tick", &(n + 1).to_string());
}

#[test]
fn hibernate_after_without_a_connection_isolated_plugin_or_not_a_time_is_refused() {
    let counter = test_plugin("counter");
    for (args, want) in [
        (
            &["--hibernate-after", "1s"][..],
            "--hibernate-after applies to plugins under --isolation connection",
        ),
        (
            &["--isolation", "worker", "--hibernate-after", "1s"],
            "--hibernate-after applies to plugins under --isolation connection",
        ),
        (
            &["--isolation", "connection", "--hibernate-after", "soon"],
            "`soon` is not a time",
        ),
    ] {
        let all = [&["--plugin", counter.to_str().unwrap()][..], args].concat();
        let (code, stderr) = run_expect_failure(all);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}

/// What a plugin keeps in host state (contract 0.2) outlives its instance's hibernation.
#[test]
fn host_state_outlives_a_hibernated_instance() {
    let (server, metrics) = crate::metrics::with_metrics(
        &[test_plugin("statetest")],
        &["--isolation", "connection", "--hibernate-after", "100ms"],
    );
    let mut c = server.connect();
    c.roundtrip("set k kept", "ok");
    c.roundtrip("incr n 7", "7");
    crate::metrics::wait_value(
        metrics,
        "sandport_plugin_instances_hibernated_total",
        &[("plugin", "statetest")],
        1.0,
    );
    c.roundtrip("get k", "kept");
    c.roundtrip("incr n 1", "8");
}
