//! `--proxy-protocol` through the real binary: PROXY v1 and v2 headers written here make plugins,
//! logs and `--max-connections-per-ip` see the client's address; a missing, bad, slow or
//! untrusted header closes the connection before any plugin hears of it, counted by reason;
//! and a real HAProxy (`haproxy.rs`) in front gives the plugin the client's own address and port.

mod haproxy;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::metrics::{wait_value, with_metrics};
use crate::support::*;

/// A server running `statetest` (whose `peer ID` answers what messaging's connection-info says
/// of a connection) behind trusted proxies on the loopback network.
fn behind_proxy(args: &[&str]) -> Server {
    Server::builder()
        .plugin(test_plugin("statetest"))
        .args(["--proxy-protocol", "--trusted-proxies", "127.0.0.0/8"])
        .args(args)
        .start()
}

/// A v1 header for a TCP connection from `source` to `destination`.
fn v1(source: &str, destination: &str) -> Vec<u8> {
    let (s, d): (SocketAddr, SocketAddr) = (source.parse().unwrap(), destination.parse().unwrap());
    let proto = if s.is_ipv4() { "TCP4" } else { "TCP6" };
    let (sip, dip, sp, dp) = (s.ip(), d.ip(), s.port(), d.port());
    format!("PROXY {proto} {sip} {dip} {sp} {dp}\r\n").into_bytes()
}

/// A v2 `PROXY` header for a TCP connection from `source` to `destination`.
fn v2(source: &str, destination: &str) -> Vec<u8> {
    let (s, d): (SocketAddr, SocketAddr) = (source.parse().unwrap(), destination.parse().unwrap());
    let octets = |a: SocketAddr| match a {
        SocketAddr::V4(a) => a.ip().octets().to_vec(),
        SocketAddr::V6(a) => a.ip().octets().to_vec(),
    };
    let mut body = [octets(s), octets(d)].concat();
    body.extend(s.port().to_be_bytes());
    body.extend(d.port().to_be_bytes());
    let family = if s.is_ipv4() { 0x11 } else { 0x21 };
    v2_with(0x21, family, &body)
}

/// A v2 header: version and command, family and protocol, then `body`.
fn v2_with(ver_cmd: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend([ver_cmd, family]);
    h.extend((body.len() as u16).to_be_bytes());
    h.extend(body);
    h
}

/// What statetest says connection `client`'s peer is, asked over that same connection.
fn peer_seen(client: &mut Client) -> String {
    client.send_line("whoami");
    let id = client.line();
    client.send_line(&format!("peer {id}"));
    client.line()
}

#[test]
fn v1_and_v2_headers_make_the_plugin_see_the_client_address() {
    let server = behind_proxy(&[]);
    for (header, client) in [
        (v1("203.0.113.7:4711", "192.0.2.1:7000"), "203.0.113.7:4711"),
        (
            v1("[2001:db8::7]:4712", "[2001:db8::1]:7000"),
            "[2001:db8::7]:4712",
        ),
        (v2("203.0.113.8:4713", "192.0.2.1:7000"), "203.0.113.8:4713"),
        (
            v2("[2001:db8::8]:4714", "[2001:db8::1]:7000"),
            "[2001:db8::8]:4714",
        ),
    ] {
        let mut c = server.connect();
        // The header and the first message in one write: the framing gets what follows it.
        c.send(&[&header[..], b"whoami\n"].concat());
        let id = c.line();
        c.send_line(&format!("peer {id}"));
        assert_eq!(
            c.line(),
            client,
            "header {:?}",
            String::from_utf8_lossy(&header)
        );
        let opened = server.wait_for_log_where(LOG_TIMEOUT, "its connection opened line", |l| {
            l.contains("connection opened") && log_field(l, "conn").as_deref() == Some(&id)
        });
        assert_eq!(
            log_field(&opened, "peer").as_deref(),
            Some(client),
            "{opened}"
        );
    }
}

#[test]
fn a_header_in_pieces_is_read_whole_and_on_connect_sees_the_client() {
    let server = Server::builder()
        .plugin(plugin("print"))
        .args(["--proxy-protocol", "--trusted-proxies", "127.0.0.1"])
        .start();
    let header = v2("198.51.100.9:50000", "192.0.2.1:7000");
    let mut c = server.connect();
    for piece in header.chunks(5) {
        c.send(piece);
    }
    c.send_line("hi");
    // `print` logs the peer its on-connect was given, then each message.
    server.wait_for_plugin_log("connection from 198.51.100.9:50000", "print");
    server.wait_for_plugin_log("received: hi", "print");
}

#[test]
fn a_v2_local_header_keeps_the_proxy_address() {
    let server = behind_proxy(&[]);
    let mut c = server.connect();
    let own = c.local_addr().to_string();
    // HAProxy's health checks: LOCAL, with or without addresses (which are ignored).
    c.send(&v2_with(0x20, 0x00, &[]));
    assert_eq!(peer_seen(&mut c), own);
    let mut c = server.connect();
    let own = c.local_addr().to_string();
    let mut local = v2("203.0.113.7:1", "192.0.2.1:2");
    local[12] = 0x20;
    c.send(&local);
    assert_eq!(peer_seen(&mut c), own);
}

#[test]
fn missing_bad_truncated_and_slow_headers_close_the_connection_before_any_plugin() {
    let (server, metrics) = with_metrics(
        &[plugin("print")],
        &[
            "--proxy-protocol",
            "--trusted-proxies",
            "127.0.0.0/8",
            "--message-timeout",
            "300ms",
        ],
    );
    // No header: the client's first message is not one.
    let mut missing = server.connect();
    missing.send_line("hello");
    missing.expect_closed_without_reply(REPLY_TIMEOUT);
    server.wait_for_log("no PROXY protocol header", LOG_TIMEOUT);
    // A header that is not one.
    let mut garbage = server.connect();
    garbage.send(b"PROXY TCP4 999.0.0.1 192.0.2.1 1 2\r\nhello\n");
    garbage.expect_closed_without_reply(REPLY_TIMEOUT);
    server.wait_for_log("an address is not one of its protocol's", LOG_TIMEOUT);
    // Longer than a v1 header may be.
    let mut long = server.connect();
    long.send(format!("PROXY UNKNOWN {}", "x".repeat(200)).as_bytes());
    long.expect_closed_without_reply(REPLY_TIMEOUT);
    server.wait_for_log("PROXY v1 header longer than 107 bytes", LOG_TIMEOUT);
    // Half a header, then the client's close.
    let mut truncated = server.connect();
    truncated.send(&v2("203.0.113.7:1", "192.0.2.1:2")[..20]);
    truncated.shutdown_write();
    truncated.expect_closed_without_reply(REPLY_TIMEOUT);
    server.wait_for_log("closed in the middle of its PROXY header", LOG_TIMEOUT);
    // Half a header, then nothing: cut off by --message-timeout.
    let started = Instant::now();
    let mut slow = server.connect();
    slow.send(b"PROXY TCP4 203.0.113.7");
    slow.expect_closed_without_reply(REPLY_TIMEOUT);
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(300) && after < Duration::from_secs(2),
        "a slow header was cut after {after:?} with a 300ms message timeout"
    );
    server.wait_for_log("no whole PROXY header within 300ms", LOG_TIMEOUT);
    let closed = "sandport_connections_closed_total";
    wait_value(metrics, closed, &[("reason", "proxy_header_invalid")], 4.0);
    wait_value(metrics, closed, &[("reason", "proxy_header_timeout")], 1.0);
    // None of them reached the plugin.
    assert!(server.log_lines_containing("connection from").is_empty());
    assert!(server.log_lines_containing("connection opened").is_empty());
}

#[test]
fn a_connection_from_outside_the_trusted_proxies_is_closed_and_counted() {
    let (server, metrics) = with_metrics(
        &[test_plugin("statetest")],
        &[
            "--proxy-protocol",
            "--trusted-proxies",
            "127.0.0.2/32,10.0.0.0/8",
            "--workers",
            "1",
        ],
    );
    let header = v1("203.0.113.7:4711", "192.0.2.1:7000");
    for _ in 0..5 {
        let mut untrusted = Client::connect_from([127, 0, 0, 1], server.addr);
        untrusted.send(&[&header[..], b"whoami\n"].concat());
        untrusted.expect_closed_without_reply(REPLY_TIMEOUT);
    }
    let line = server.wait_for_log("not in --trusted-proxies", LOG_TIMEOUT);
    assert!(line.contains("127.0.0.1:"), "{line}");
    wait_value(
        metrics,
        "sandport_connections_closed_total",
        &[("reason", "proxy_untrusted")],
        5.0,
    );
    // Anyone can make these: they are logged at most once a second, not once each.
    let lines = server
        .log_lines_containing("not in --trusted-proxies")
        .len();
    assert!((1..=2).contains(&lines), "{lines} lines for 5 refusals");
    let mut trusted = Client::connect_from([127, 0, 0, 2], server.addr);
    trusted.send(&header);
    assert_eq!(peer_seen(&mut trusted), "203.0.113.7:4711");
}

#[test]
fn the_per_ip_cap_counts_the_client_behind_the_proxy_not_the_proxy() {
    let (server, metrics) = with_metrics(
        &[test_plugin("statetest")],
        &[
            "--proxy-protocol",
            "--trusted-proxies",
            "127.0.0.1",
            "--max-connections-per-ip",
            "1",
        ],
    );
    // Every connection comes from the one proxy address, 127.0.0.1.
    let mut first = server.connect();
    first.send(&v2("203.0.113.7:1000", "192.0.2.1:7000"));
    assert_eq!(peer_seen(&mut first), "203.0.113.7:1000");
    let mut other = server.connect();
    other.send(&v2("203.0.113.8:1000", "192.0.2.1:7000"));
    assert_eq!(peer_seen(&mut other), "203.0.113.8:1000");
    let mut second = server.connect();
    second.send(&[&v2("203.0.113.7:1001", "192.0.2.1:7000")[..], b"whoami\n"].concat());
    second.expect_closed_without_reply(REPLY_TIMEOUT);
    server.wait_for_log(
        "--max-connections-per-ip 1 reached for 203.0.113.7",
        LOG_TIMEOUT,
    );
    wait_value(
        metrics,
        "sandport_connections_closed_total",
        &[("reason", "per_ip_limit")],
        1.0,
    );
    // Its slot freed, the client gets in again.
    drop(first);
    let again = eventually(Duration::from_secs(5), || {
        let mut c = Client::try_connect(server.addr).ok()?;
        c.send(&[&v2("203.0.113.7:1002", "192.0.2.1:7000")[..], b"whoami\n"].concat());
        c.recv_line(Duration::from_millis(200)).ok().map(|_| c)
    });
    assert!(again.is_some(), "the client got its slot back");
}

#[test]
fn bad_proxy_flags_are_refused_at_start() {
    let echo = plugin("echo");
    let echo = echo.to_str().unwrap();
    for (args, want) in [
        (
            &["--proxy-protocol"][..],
            "--proxy-protocol needs --trusted-proxies",
        ),
        (
            &["--trusted-proxies", "10.0.0.0/8"],
            "--trusted-proxies is given without --proxy-protocol",
        ),
        (
            &["--proxy-protocol", "--trusted-proxies", "10.0.0.0/33"],
            "the prefix length must be a number from 0 to 32",
        ),
        (
            &[
                "--proxy-protocol",
                "--trusted-proxies",
                "10.0.0.0/8,lb.internal",
            ],
            "`lb.internal` is not an address block",
        ),
    ] {
        let all = [&["--plugin", echo][..], args].concat();
        let (code, stderr) = run_expect_failure(all);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}
