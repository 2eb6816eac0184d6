//! A real HAProxy (Debian package `haproxy`) in front of sandport, in TCP mode with
//! `send-proxy-v2`, as the README's "Behind HAProxy" section sets it up.

use std::net::SocketAddr;
use std::time::Duration;

use super::{behind_proxy, peer_seen};
use crate::support::*;

/// A running `haproxy` in front of one sandport: its frontend's address.
struct Front {
    haproxy: Haproxy,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Front {
    /// Starts HAProxy on a free port of 127.0.0.1, forwarding to `backend` with a v2 header;
    /// `lines` go into the backend section, `options` at the end of its `server` line.
    fn start(backend: SocketAddr, lines: &str, options: &str) -> Front {
        let addr = free_addr();
        let dir = TempDir::new("haproxy");
        let config = dir.write(
            "haproxy.cfg",
            format!(
                "global\n    maxconn 100\n\
                 defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
                 frontend clients\n    bind {addr}\n    default_backend sandport\n\
                 backend sandport\n{lines}    server s1 {backend} send-proxy-v2 {options}\n"
            )
            .as_bytes(),
        );
        Front {
            haproxy: Haproxy::start(&config, addr),
            addr,
            _dir: dir,
        }
    }
}

#[test]
fn through_haproxy_the_plugin_sees_the_clients_own_address_and_the_per_ip_cap_counts_it() {
    let server = behind_proxy(&["--max-connections-per-ip", "1"]);
    let front = Front::start(server.addr, "", "");
    // Clients on two other loopback addresses: HAProxy itself connects from 127.0.0.1.
    let mut client = Client::connect_from([127, 0, 0, 2], front.addr);
    let own = client.local_addr().to_string();
    assert_eq!(
        peer_seen(&mut client),
        own,
        "haproxy log:\n{}",
        front.haproxy.said.dump()
    );
    // The log reaches the test through a pipe and a reader thread: wait for the line.
    server.wait_for_log_where(LOG_TIMEOUT, "the client's own address logged", |l| {
        l.contains("connection opened") && log_field(l, "peer").as_deref() == Some(&*own)
    });
    // A second connection from that client is over its cap of 1, though HAProxy's address
    // has two open; a client from elsewhere is served.
    let mut second = Client::connect_from([127, 0, 0, 2], front.addr);
    second.send_line("whoami");
    second.expect_closed_without_reply(REPLY_TIMEOUT);
    server.wait_for_log(
        "--max-connections-per-ip 1 reached for 127.0.0.2",
        LOG_TIMEOUT,
    );
    let mut other = Client::connect_from([127, 0, 0, 3], front.addr);
    let own = other.local_addr().to_string();
    assert_eq!(peer_seen(&mut other), own);
    // The first client is still served.
    assert_eq!(peer_seen(&mut client), client.local_addr().to_string());
}

#[test]
fn haproxy_health_checks_send_a_local_header_and_keep_the_proxy_address() {
    let server = Server::builder()
        .plugin(test_plugin("statetest"))
        .args(["--proxy-protocol", "--trusted-proxies", "127.0.0.1/32"])
        .env("RUST_LOG", "info,sandport::server::worker::proxied=debug")
        .start();
    // A check every 100 ms that asks statetest `whoami` and expects a number back. HAProxy
    // puts the server's PROXY header before it: v2 LOCAL, as no client is behind a check.
    let check = "    option tcp-check\n    tcp-check connect default\n    \
                 tcp-check send-binary 77686f616d690a\n    tcp-check expect rstring ^[0-9]+\n";
    let front = Front::start(server.addr, check, "check inter 100ms");
    // (Waiting for HAProxy to listen made a client connection through it too: not a check.)
    let line = server.wait_for_log_where(Duration::from_secs(10), "a check's LOCAL header", |l| {
        l.contains("PROXY header read") && l.contains("header=Local")
    });
    let proxy = log_field(&line, "proxy");
    let client = log_field(&line, "client");
    assert_eq!(
        client,
        proxy,
        "{line}\nhaproxy:\n{}",
        front.haproxy.said.dump()
    );
    let conn = log_field(&line, "conn").expect("a conn field");
    let opened = server.wait_for_log_where(LOG_TIMEOUT, "the check's connection opened", |l| {
        l.contains("connection opened") && log_field(l, "conn").as_deref() == Some(&*conn)
    });
    let peer = log_field(&opened, "peer").unwrap_or_default();
    assert!(
        peer.starts_with("127.0.0.1:"),
        "the proxy's own address: {opened}"
    );
    assert!(server
        .log_lines_containing("closed before it was opened")
        .is_empty());
}

#[test]
fn through_haproxy_the_ratelimit_plugin_counts_each_client_not_the_proxy() {
    // The `ratelimit` example keys its counts on the peer's IP address (host state).
    let server = Server::builder()
        .plugin(test_plugin("ratelimit"))
        .args(["--proxy-protocol", "--trusted-proxies", "127.0.0.1"])
        .config("ratelimit.max=2")
        .config("ratelimit.window_ms=60000")
        .start();
    let front = Front::start(server.addr, "", "");
    let mut noisy = Client::connect_from([127, 0, 0, 2], front.addr);
    let mut quiet = Client::connect_from([127, 0, 0, 3], front.addr);
    noisy.roundtrip("1", "1");
    noisy.roundtrip("2", "2");
    quiet.roundtrip("1", "1");
    noisy.roundtrip("3", "rate limit exceeded");
    noisy.expect_closed_without_reply(REPLY_TIMEOUT);
    let line = server.wait_for_plugin_log("sent more than 2 messages", "ratelimit");
    let own = noisy.local_addr().to_string();
    assert!(
        line.contains(&own),
        "the client's own address {own}: {line}"
    );
    // The other client, through the same proxy address, has its own count.
    quiet.roundtrip("2", "2");
}
