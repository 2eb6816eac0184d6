//! Instance isolation (`--isolation message|connection|worker`), observed with the counter
//! plugin, which replies how many messages its instance has seen.

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
