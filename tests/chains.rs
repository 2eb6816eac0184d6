//! Several plugins in a chain: each reply is the next plugin's message.

use std::time::Duration;

use crate::support::*;

#[test]
fn echo_then_upper_with_prefix() {
    let server = Server::builder()
        .plugin(plugin("echo"))
        .plugin(plugin("upper"))
        .config("upper.prefix=>> ")
        .start();
    let mut c = server.connect();
    c.send_line("hello");
    c.expect_line(">> HELLO");
    c.send_line("again, Mixed Case");
    c.expect_line(">> AGAIN, MIXED CASE");
}

#[test]
fn chain_order_is_the_flag_order() {
    // lifecycle first: "close" is its command; upper after it sees "bye".
    let server = Server::builder()
        .plugin(test_plugin("lifecycle"))
        .plugin(plugin("upper"))
        .start();
    let mut c = server.connect();
    greeting_id(&c.line());
    c.send_line("ping");
    c.expect_line("PING");
    // upper first: lifecycle sees "CLOSE", which is not its command, and echoes it.
    let server = Server::builder()
        .plugin(plugin("upper"))
        .plugin(test_plugin("lifecycle"))
        .start();
    let mut c = server.connect();
    greeting_id(&c.line());
    c.send_line("close");
    c.expect_line("CLOSE");
    c.send_line("still open");
    c.expect_line("STILL OPEN");
}

#[test]
fn print_in_chain_ends_it_without_reply_and_connection_stays_open() {
    // lifecycle after print: if it ever ran, "close" would make it reply "bye" and close.
    let server = Server::builder()
        .plugin(plugin("echo"))
        .plugin(plugin("print"))
        .plugin(test_plugin("lifecycle"))
        .start();
    let mut c = server.connect();
    greeting_id(&c.line());
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
    let server = Server::builder()
        .plugin(plugin("echo"))
        .plugin(test_plugin("lifecycle"))
        .plugin(plugin("upper"))
        .start();
    let mut c = server.connect();
    // Greeting from lifecycle (echo and upper send none).
    let id = greeting_id(&c.line());
    c.send_line("abc");
    c.expect_line("ABC");
    c.send_line("close");
    // "bye" comes from lifecycle, which asked to close: upper does not run ("BYE" would be wrong).
    c.expect_line("bye");
    c.expect_closed_without_reply(Duration::from_secs(2));
    server.wait_for_log(&format!("goodbye {id}"), LOG_TIMEOUT);
}

#[test]
fn every_plugin_in_chain_greets_and_says_goodbye() {
    let dir = TempDir::new("chain2");
    let lifecycle = test_plugin("lifecycle");
    let a = dir.copy(&lifecycle, "a.wasm");
    let b = dir.copy(&lifecycle, "b.wasm");
    let server = Server::builder().plugin(&a).plugin(&b).start();
    let mut c = server.connect();
    let id = greeting_id(&c.line());
    assert_eq!(
        greeting_id(&c.line()),
        id,
        "second plugin greets the same connection"
    );
    c.send_line("ping");
    c.expect_line("ping");
    c.send_line("close");
    c.expect_line("bye");
    c.expect_closed_without_reply(Duration::from_secs(2));
    let goodbye = format!("goodbye {id}");
    for name in ["a", "b"] {
        server.wait_for_log_where(LOG_TIMEOUT, &format!("{goodbye} plugin={name}"), |l| {
            l.contains(&goodbye) && log_field(l, "plugin").as_deref() == Some(name)
        });
    }
}

#[test]
fn failure_in_chain_closes_connection() {
    let server = Server::builder()
        .plugin(plugin("echo"))
        .plugin(test_plugin("lifecycle"))
        .plugin(plugin("upper"))
        .start();
    let mut c = server.connect();
    greeting_id(&c.line());
    c.send_line("fail");
    c.expect_closed_without_reply(Duration::from_secs(3));
    let line = server.wait_for_log("plugin call failed", LOG_TIMEOUT);
    assert_eq!(
        log_field(&line, "plugin").as_deref(),
        Some("lifecycle"),
        "{line}"
    );
}
