//! The three hooks and their effects, observed with the lifecycle and print plugins.

use std::time::Duration;

use crate::support::*;

fn lifecycle_server(extra: &[&str]) -> Server {
    Server::builder()
        .plugin(test_plugin("lifecycle"))
        .args(extra)
        .start()
}

#[test]
fn on_connect_greeting_is_sent_first() {
    let server = lifecycle_server(&[]);
    let mut c = server.connect();
    let id = greeting_id(&c.line());
    assert!(id >= 1, "connection ids start at 1");
    c.send_line("ping");
    c.expect_line("ping");
}

#[test]
fn connection_ids_start_at_one_and_increase() {
    let server = lifecycle_server(&[]);
    let mut a = server.connect();
    assert_eq!(
        a.line(),
        "hello 1",
        "first connection of the process has id 1"
    );
    let mut b = server.connect();
    let id_b = greeting_id(&b.line());
    assert_eq!(id_b, 2);
    drop(a);
    drop(b);
    let mut c = server.connect();
    let id_c = greeting_id(&c.line());
    assert_eq!(id_c, 3, "ids are never reused");
}

#[test]
fn close_replies_bye_and_server_closes_socket() {
    let server = lifecycle_server(&[]);
    let mut c = server.connect();
    let id = greeting_id(&c.line());
    c.send_line("close");
    c.expect_line("bye");
    c.expect_closed_without_reply(Duration::from_secs(2));
    // on-disconnect runs for a hook-requested close too.
    server.wait_for_log(&format!("goodbye {id}"), LOG_TIMEOUT);
}

#[test]
fn close_discards_messages_pipelined_after_it() {
    let server = lifecycle_server(&[]);
    let mut c = server.connect();
    c.line();
    c.send(b"close\nafter\n");
    c.expect_line("bye");
    c.expect_closed_without_reply(Duration::from_secs(2));
}

#[test]
fn fail_closes_connection_by_default() {
    let server = lifecycle_server(&[]);
    let mut c = server.connect();
    let id = greeting_id(&c.line());
    c.send_line("fail");
    c.expect_closed_without_reply(Duration::from_secs(3));
    let line = server.wait_for_log("plugin call failed", LOG_TIMEOUT);
    assert!(
        line.contains("asked to fail"),
        "the plugin's own err string is logged: {line}"
    );
    assert_eq!(log_field(&line, "conn"), Some(id.to_string()), "{line}");
    // on-disconnect still runs when the host closes after an error.
    server.wait_for_log(&format!("goodbye {id}"), LOG_TIMEOUT);
    // The server is unaffected.
    let mut d = server.connect();
    greeting_id(&d.line());
    d.send_line("still here");
    d.expect_line("still here");
}

#[test]
fn fail_with_on_error_close_explicit_closes() {
    let server = lifecycle_server(&["--on-error", "close"]);
    let mut c = server.connect();
    c.line();
    c.send(b"fail\nafter\n");
    c.expect_closed_without_reply(Duration::from_secs(3));
}

#[test]
fn fail_with_on_error_drop_keeps_connection_usable() {
    let server = lifecycle_server(&["--on-error", "drop"]);
    let mut c = server.connect();
    c.line();
    c.send_line("fail");
    c.send_line("next");
    // The failed message is dropped (no reply), the next one is answered.
    c.expect_line("next");
    server.wait_for_log("plugin call failed", LOG_TIMEOUT);
    // Pipelined failures too, in order.
    c.send(b"one\nfail\ntwo\nfail\nthree\n");
    c.expect_line("one");
    c.expect_line("two");
    c.expect_line("three");
    c.expect_silence(Duration::from_millis(200));
}

#[test]
fn silent_sends_nothing_but_next_message_is_answered_in_order() {
    let server = lifecycle_server(&[]);
    let mut c = server.connect();
    c.line();
    c.send_line("silent");
    c.expect_silence(Duration::from_millis(300));
    c.send(b"silent\nfirst\nsilent\nsecond\n");
    c.expect_line("first");
    c.expect_line("second");
    c.expect_silence(Duration::from_millis(200));
}

#[test]
fn on_disconnect_runs_when_client_closes() {
    let server = lifecycle_server(&[]);
    let c = server.connect();
    let mut c = c;
    let id = greeting_id(&c.line());
    drop(c);
    let line = server.wait_for_log(&format!("goodbye {id}"), LOG_TIMEOUT);
    assert_eq!(
        log_field(&line, "plugin").as_deref(),
        Some("lifecycle"),
        "plugin log lines carry plugin=NAME: {line}"
    );
    assert_eq!(
        log_field(&line, "conn"),
        Some(id.to_string()),
        "plugin log lines carry conn=ID: {line}"
    );
}

#[test]
fn on_disconnect_runs_when_client_half_closes() {
    let server = lifecycle_server(&[]);
    let mut c = server.connect();
    let id = greeting_id(&c.line());
    c.send_line("last");
    c.shutdown_write();
    // The reply to a message sent before the EOF is still delivered.
    c.expect_line("last");
    server.wait_for_log(&format!("goodbye {id}"), LOG_TIMEOUT);
}

#[test]
fn plugin_stdout_is_captured_into_the_log() {
    let server = lifecycle_server(&[]);
    let mut c = server.connect();
    let id = greeting_id(&c.line());
    let line = server.wait_for_log(&format!("stdout from {id}"), LOG_TIMEOUT);
    assert_eq!(
        log_field(&line, "plugin").as_deref(),
        Some("lifecycle"),
        "{line}"
    );
    assert_eq!(log_field(&line, "conn"), Some(id.to_string()), "{line}");
    assert!(
        server
            .stdout
            .lines()
            .iter()
            .all(|l| !l.contains("stdout from")),
        "plugin stdout must not go to the host's own stdout"
    );
}

#[test]
fn connection_closed_log_counts_messages() {
    let server = lifecycle_server(&[]);
    let mut c = server.connect();
    let peer = c.local_addr().to_string();
    let id = greeting_id(&c.line());
    c.send(b"a\nb\nc\n");
    c.expect_line("a");
    c.expect_line("b");
    c.expect_line("c");
    drop(c);
    let line = server.wait_for_close_log(id, LOG_TIMEOUT);
    assert_eq!(log_field(&line, "messages").as_deref(), Some("3"), "{line}");
    assert_eq!(log_field(&line, "peer"), Some(peer), "{line}");
    let ms = log_field(&line, "duration_ms").unwrap_or_else(|| panic!("duration_ms: {line}"));
    assert!(ms.parse::<f64>().is_ok(), "duration_ms is a number: {line}");
    assert!(
        log_field(&line, "reason").is_some(),
        "reason= present: {line}"
    );
}

#[test]
fn print_logs_connect_messages_and_disconnect() {
    let server = Server::builder().plugin(plugin("print")).start();
    let mut c = server.connect();
    let peer = c.local_addr().to_string();
    server.wait_for_log(&format!("connection from {peer}"), LOG_TIMEOUT);
    c.send_line("hello print");
    server.wait_for_log("received: hello print", LOG_TIMEOUT);
    // print replies nothing.
    c.expect_silence(Duration::from_millis(300));
    drop(c);
    server.wait_for_log("client closed the connection", LOG_TIMEOUT);
}

#[test]
fn json_log_format_writes_json_lines() {
    let server = lifecycle_server(&["--log-format", "json"]);
    let mut c = server.connect();
    let id = greeting_id(&c.line());
    drop(c);
    let line = server.wait_for_log(&format!("goodbye {id}"), LOG_TIMEOUT);
    assert!(
        line.trim_start().starts_with('{') && line.trim_end().ends_with('}'),
        "json log lines are JSON objects: {line}"
    );
    let closed = server.wait_for_log("connection closed", LOG_TIMEOUT);
    assert!(closed.contains("\"messages\""), "{closed}");
}
