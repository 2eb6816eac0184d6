//! Several plugins in a chain: each reply is the next plugin's message.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::*;

/// A server builder with `plugins` chained in this order.
fn chain(plugins: &[PathBuf]) -> ServerBuilder {
    plugins.iter().fold(Server::builder(), |b, p| b.plugin(p))
}

/// Starts a chain that includes lifecycle and connects; returns the server, the client whose
/// greeting was consumed, and the connection id it named.
fn start_greeted(plugins: &[PathBuf]) -> (Server, Client, u64) {
    let server = chain(plugins).start();
    let mut c = server.connect();
    let id = greeting_id(&c.line());
    (server, c, id)
}

/// Sends lifecycle's `close` command; expects its own `bye` (not a later plugin's), then the close.
fn close_expecting_bye(c: &mut Client) {
    c.send_line("close");
    c.expect_line("bye");
    c.expect_closed_without_reply(Duration::from_secs(2));
}

#[test]
fn echo_then_upper_with_prefix() {
    let server = chain(&[plugin("echo"), plugin("upper")])
        .config("upper.prefix=>> ")
        .start();
    let mut c = server.connect();
    c.roundtrip("hello", ">> HELLO");
    c.roundtrip("again, Mixed Case", ">> AGAIN, MIXED CASE");
}

#[test]
fn chain_order_is_the_flag_order() {
    // lifecycle first: "close" is its command; upper after it sees "bye".
    let (_server, mut c, _) = start_greeted(&[test_plugin("lifecycle"), plugin("upper")]);
    c.roundtrip("ping", "PING");
    // upper first: lifecycle sees "CLOSE", which is not its command, and echoes it.
    let (_server, mut c, _) = start_greeted(&[plugin("upper"), test_plugin("lifecycle")]);
    c.roundtrip("close", "CLOSE");
    c.roundtrip("still open", "STILL OPEN");
}

#[test]
fn print_in_chain_ends_it_without_reply_and_connection_stays_open() {
    // lifecycle after print: if it ever ran, "close" would make it reply "bye" and close.
    let (server, mut c, _) =
        start_greeted(&[plugin("echo"), plugin("print"), test_plugin("lifecycle")]);
    c.send_line("first message");
    server.wait_for_log("received: first message", LOG_TIMEOUT);
    // print replied nothing: the chain ends, the client gets nothing ...
    c.expect_silence(Duration::from_millis(400));
    // ... and the connection is still served: a later message reaches print too, and
    // lifecycle (after print) does not see it.
    c.send_line("close");
    server.wait_for_log("received: close", LOG_TIMEOUT);
    c.expect_silence(Duration::from_millis(400));
}

#[test]
fn lifecycle_close_in_middle_of_chain_ends_chain_and_closes() {
    // Only lifecycle greets (echo and upper send none).
    let (server, mut c, id) =
        start_greeted(&[plugin("echo"), test_plugin("lifecycle"), plugin("upper")]);
    c.roundtrip("abc", "ABC");
    // Lifecycle asked to close: upper does not run ("BYE" would be wrong).
    close_expecting_bye(&mut c);
    server.wait_for_log(&format!("goodbye {id}"), LOG_TIMEOUT);
}

#[test]
fn every_plugin_in_chain_greets_and_says_goodbye() {
    let dir = TempDir::new("chain2");
    let lifecycle = test_plugin("lifecycle");
    let a = dir.copy(&lifecycle, "a.wasm");
    let b = dir.copy(&lifecycle, "b.wasm");
    let (server, mut c, id) = start_greeted(&[a, b]);
    assert_eq!(
        greeting_id(&c.line()),
        id,
        "second plugin greets the same connection"
    );
    c.roundtrip("ping", "ping");
    close_expecting_bye(&mut c);
    let goodbye = format!("goodbye {id}");
    for name in ["a", "b"] {
        server.wait_for_log_where(LOG_TIMEOUT, &format!("{goodbye} plugin={name}"), |l| {
            l.contains(&goodbye) && log_field(l, "plugin").as_deref() == Some(name)
        });
    }
}

#[test]
fn failure_in_chain_closes_connection() {
    let (server, mut c, _) =
        start_greeted(&[plugin("echo"), test_plugin("lifecycle"), plugin("upper")]);
    c.send_line("fail");
    c.expect_closed_without_reply(Duration::from_secs(3));
    let line = server.wait_for_log("plugin call failed", LOG_TIMEOUT);
    assert_eq!(
        log_field(&line, "plugin").as_deref(),
        Some("lifecycle"),
        "{line}"
    );
}
