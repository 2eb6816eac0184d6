//! 0.1 and 0.2 side by side: a chain mixing them, `echo2` (the 0.2 echo), and what `sandport
//! check` and `sandport call` say of a 0.2 component.

use std::time::Duration;

use super::statetest;
use crate::support::*;

#[test]
fn a_chain_mixes_0_1_and_0_2_plugins() {
    // lifecycle (0.1: greets `hello <id>`, echoes, `silent`, `close`) -> statetest (0.2) ->
    // upper (0.1).
    let server = Server::builder()
        .plugin(test_plugin("lifecycle"))
        .plugin(test_plugin("statetest"))
        .plugin(plugin("upper"))
        .start();
    let mut c = server.connect();
    let id = greeting_id(&c.line());
    c.roundtrip("set k hello", "OK");
    c.roundtrip("get k", "HELLO");
    // Both contracts see the same connection id.
    c.roundtrip("whoami", &id.to_string());
    // A 0.1 plugin's silence ends the chain before the 0.2 one.
    c.send_line("silent");
    c.expect_silence(Duration::from_millis(200));
    c.roundtrip("close", "bye");
    c.expect_closed_without_reply(REPLY_TIMEOUT);
    // on-disconnect reached the 0.1 plugin.
    server.wait_for_plugin_log(&format!("goodbye {id}"), "lifecycle");
    server.assert_no_call_failed();
}

#[test]
fn echo2_echoes_alone_and_after_a_0_1_echo() {
    let alone = Server::builder().plugin(test_plugin("echo2")).start();
    let mut c = alone.connect();
    c.roundtrip("hello", "hello");
    c.send(b"one\ntwo\n\xff bytes\n");
    c.expect_line("one");
    c.expect_line("two");
    assert_eq!(c.recv_line_bytes(REPLY_TIMEOUT).unwrap(), b"\xff bytes\n");
    let chain = Server::builder()
        .plugin(plugin("echo"))
        .plugin(test_plugin("echo2"))
        .start();
    let mut d = chain.connect();
    d.roundtrip("through both", "through both");
    chain.assert_no_call_failed();
}

#[test]
fn check_names_the_contract_of_each_plugin() {
    for (plugin, contract) in [
        (plugin("chat"), "sandport:plugin/handler@0.2.0"),
        (test_plugin("statetest"), "sandport:plugin/handler@0.2.0"),
        (test_plugin("echo2"), "sandport:plugin/handler@0.2.0"),
        (plugin("upper"), "sandport:plugin/handler@0.1.0"),
    ] {
        let r = Server::builder()
            .no_default_listen()
            .arg("check")
            .arg(&plugin)
            .run();
        assert_eq!(
            r.code,
            0,
            "check {}: {}{}",
            plugin.display(),
            r.stdout,
            r.stderr
        );
        let kind = r
            .stdout
            .lines()
            .find(|l| l.starts_with("kind:"))
            .unwrap_or_else(|| panic!("no kind line:\n{}", r.stdout));
        assert!(kind.contains(contract), "{}: {kind}", plugin.display());
    }
}

#[test]
fn call_runs_a_0_2_plugin_without_a_server() {
    let r = Server::builder()
        .no_default_listen()
        .arg("call")
        .arg(test_plugin("echo2"))
        .args(["--message", "hello"])
        .run();
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("reply: hello"), "{}", r.stdout);
}

#[test]
fn a_0_2_plugin_works_under_every_isolation_mode() {
    for isolation in ["message", "connection", "worker"] {
        let server = statetest(&["--isolation", isolation, "--workers", "2"]);
        let mut a = server.connect();
        let mut b = server.connect();
        a.roundtrip("incr n 1", "1");
        b.roundtrip("incr n 1", "2");
        a.roundtrip("get n", "2");
    }
}
