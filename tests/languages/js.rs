//! Plugins written in JavaScript, built from source by guest-plugins/js/build.sh: `upper` and
//! `router` (contract 0.1.0), and `chat` (contract 0.2.0, on the host's state and messaging).
//!
//! These components embed the SpiderMonkey engine (about 12 MB each); the host compiles them at
//! start unless its compile cache already holds them, so each test starts as few servers as it
//! can.

use crate::support::*;

super::common_tests! { "js":
    upper;
    chat_rooms;
}

fn router(config: &[&str]) -> Server {
    let mut builder = Server::builder()
        .plugin(test_plugin("router-js"))
        .args(["--workers", "1"])
        .env("RUST_LOG", "info,plugin=debug");
    for kv in config {
        builder = builder.config(kv);
    }
    builder.start()
}

fn accepted(route: &str, message: &str) -> String {
    format!(
        r#"{{"route":"{route}","accepted":true,"bytes":{}}}"#,
        message.len()
    )
}

/// Every kind of reply with the default routes (`orders,users`), all on one connection, which
/// stays open after each rejection; each rejection is logged at warn.
#[test]
fn router_js_replies() {
    let server = router(&[]);
    let mut c = server.connect();

    for ok in [
        r#"{"route":"orders","id":1}"#,
        r#"{"route":"users"}"#,
        r#"  { "route" : "users", "nested": {"route": "x"}, "list": [1, 2.5, null, true] }  "#,
        r#"{"route":"orders","note":"héllo ✓"}"#,
    ] {
        let route = if ok.contains(r#""orders""#) {
            "orders"
        } else {
            "users"
        };
        c.roundtrip(ok, &accepted(route, ok));
    }

    // Malformed JSON: the parser's own message follows `invalid JSON: `.
    for bad in [
        "{bad json",
        r#"{"route":"orders"} trailing"#,
        "",
        "{\"route\":",
    ] {
        c.send_line(bad);
        let line = c.line();
        assert!(
            line.starts_with(r#"{"error":"invalid JSON: "#) && line.ends_with(r#""}"#),
            "reply to {bad:?}: {line}"
        );
    }

    // Valid JSON without a string `route`, or not an object at all.
    for no_route in [
        "{}",
        r#"{"Route":"orders"}"#,
        r#"{"route":5}"#,
        r#"{"route":null}"#,
        r#"{"route":["orders"]}"#,
        r#"["orders"]"#,
        r#""orders""#,
        "42",
        "null",
    ] {
        c.roundtrip(no_route, r#"{"error":"missing route"}"#);
    }

    c.roundtrip(
        r#"{"route":"payments"}"#,
        r#"{"error":"unknown route: payments"}"#,
    );
    // Routes are matched exactly; the reply stays valid JSON whatever the route holds.
    c.roundtrip(
        r#"{"route":"Orders"}"#,
        r#"{"error":"unknown route: Orders"}"#,
    );
    c.roundtrip(r#"{"route":"a\"b"}"#, r#"{"error":"unknown route: a\"b"}"#);

    // Still open and serving after all that.
    c.roundtrip(
        r#"{"route":"users"}"#,
        &accepted("users", r#"{"route":"users"}"#),
    );

    let warn = server.wait_for_plugin_log("unknown route: payments", "router-js");
    assert!(
        warn.contains("WARN"),
        "rejection not logged at warn: {warn}"
    );
    // The server's log is read from its stderr on a thread of its own, so the last lines may be
    // read after the last reply: wait for them, then check there are no more.
    let rejections = 4 + 9 + 3;
    let warnings = || {
        server
            .log_lines_containing("rejected")
            .into_iter()
            .filter(|l| l.contains("WARN"))
            .collect::<Vec<_>>()
    };
    let all_logged = eventually(LOG_TIMEOUT, || {
        (warnings().len() >= rejections).then_some(())
    });
    let warnings = warnings();
    assert!(
        all_logged.is_some() && warnings.len() == rejections,
        "one warn line per rejection ({rejections}), got {}:\n{}",
        warnings.len(),
        warnings.join("\n")
    );
    server.assert_no_call_failed();
}

/// `--config router-js.routes=a,b` replaces the default routes.
#[test]
fn router_js_custom_routes() {
    let server = router(&["router-js.routes=a,b"]);
    let mut c = server.connect();
    for route in ["a", "b"] {
        let message = format!(r#"{{"route":"{route}"}}"#);
        c.roundtrip(&message, &accepted(route, &message));
    }
    for route in ["orders", "users", "c", "a,b"] {
        c.roundtrip(
            &format!(r#"{{"route":"{route}"}}"#),
            &format!(r#"{{"error":"unknown route: {route}"}}"#),
        );
    }
}

/// Many messages, accepted and rejected in turn, on one connection, sent in one go (pipelined)
/// and answered in order.
#[test]
fn router_js_many_messages_on_one_connection() {
    let server = router(&[]);
    let mut c = server.connect();
    let n = 500;
    let mut batch = String::new();
    let mut expected = Vec::with_capacity(n);
    for i in 0..n {
        let (message, reply) = match i % 4 {
            0 => {
                let m = format!(r#"{{"route":"orders","seq":{i}}}"#);
                let r = accepted("orders", &m);
                (m, r)
            }
            1 => {
                let m = format!(r#"{{"route":"users","name":"user {i}","tags":["x","y"]}}"#);
                let r = accepted("users", &m);
                (m, r)
            }
            2 => (
                format!(r#"{{"route":"r{i}"}}"#),
                format!(r#"{{"error":"unknown route: r{i}"}}"#),
            ),
            _ => (
                format!(r#"{{"seq":{i}}}"#),
                r#"{"error":"missing route"}"#.to_string(),
            ),
        };
        batch.push_str(&message);
        batch.push('\n');
        expected.push(reply);
    }
    c.send(batch.as_bytes());
    for (i, want) in expected.iter().enumerate() {
        let got = c.line();
        assert_eq!(&got, want, "reply {i}");
    }
}
