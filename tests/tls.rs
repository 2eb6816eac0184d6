//! TLS termination (`--tls-cert`, `--tls-key`, `--tls-client-ca`) through the real binary, with a
//! rustls client and real `openssl s_client` (`openssl.rs`): echo over each framing and both
//! versions; a client that does not trust the server, an expired certificate, a stalled
//! handshake and plain text each refused cleanly while others are served; mutual TLS
//! (`mtls.rs`); reload on SIGHUP (`reload.rs`); flags refused at start; the PROXY header first.

mod mtls;
mod openssl;
mod pki;
mod reload;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::metrics::{wait_value, with_metrics};
use crate::support::*;
use pki::{tls_args, Pki, TlsClient};

const FAILURES: &str = "sandport_tls_handshake_failures_total";
const CLOSED: &str = "sandport_connections_closed_total";

/// An echo server on TLS with a certificate from `pki`, and its metrics address.
fn echo_server(pki: &Pki, extra: &[&str]) -> (Server, std::net::SocketAddr) {
    let pair = pki.server("server", "sandport test server", false);
    let mut args: Vec<String> = tls_args(&pair);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    with_metrics(&[plugin("echo")], &args)
}

#[test]
fn echo_over_tls_with_line_and_length_framing_on_tls_1_2_and_1_3() {
    let pki = Pki::new("tls-echo");
    let (line, _) = echo_server(&pki, &[]);
    let (length, _) = echo_server(&pki, &["--framing", "length"]);
    for (version, name) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let config = pki.client_config_with(&[version], None);
        let mut c = TlsClient::connect(line.addr, &config).expect("handshake");
        assert_eq!(c.version(), Some(name));
        assert_eq!(c.roundtrip("hello over tls").unwrap(), "hello over tls");
        // Two messages in one record, and one split over several: framing sees the plaintext.
        c.send(b"one\ntwo\nthr").unwrap();
        c.send(b"ee\n").unwrap();
        assert_eq!(
            [c.line().unwrap(), c.line().unwrap(), c.line().unwrap()],
            ["one", "two", "three"]
        );
        // A reply larger than one TLS record (16 KiB) arrives whole.
        let big = "x".repeat(100_000);
        assert_eq!(c.roundtrip(&big).unwrap(), big);

        let mut c = TlsClient::connect(length.addr, &config).expect("handshake");
        assert_eq!(c.version(), Some(name));
        c.send(&frame(b"\0binary\xffpayload")).unwrap();
        assert_eq!(c.frame().unwrap(), b"\0binary\xffpayload");
    }
}

#[test]
fn limits_apply_to_the_decrypted_stream() {
    let pki = Pki::new("tls-limits");
    let (server, metrics) = echo_server(&pki, &["--max-message-bytes", "1000"]);
    let mut c = TlsClient::connect(server.addr, &pki.client_config()).unwrap();
    assert_eq!(c.roundtrip(&"a".repeat(900)).unwrap(), "a".repeat(900));
    // Over the limit once decrypted (the records carrying it are larger still).
    c.send(format!("{}\n", "b".repeat(5000)).as_bytes())
        .unwrap();
    assert!(
        c.line().is_err(),
        "an oversize message closes the connection"
    );
    wait_value(metrics, CLOSED, &[("reason", "oversize")], 1.0);
}

#[test]
fn a_client_that_does_not_trust_the_server_fails_while_others_are_served() {
    let pki = Pki::new("tls-trust");
    let (server, metrics) = echo_server(&pki, &[]);
    let mut good = TlsClient::connect(server.addr, &pki.client_config()).unwrap();
    let stranger = Pki::new("tls-stranger");
    let refused = TlsClient::connect(server.addr, &stranger.client_config());
    let e = refused
        .err()
        .expect("a client trusting another CA refuses the server");
    assert!(format!("{e}").contains("UnknownIssuer"), "{e}");
    assert_eq!(good.roundtrip("still served").unwrap(), "still served");
    wait_value(metrics, FAILURES, &[("reason", "client_alert")], 1.0);
    wait_value(metrics, CLOSED, &[("reason", "tls_handshake_failed")], 1.0);
    assert_eq!(server.log_lines_containing("connection opened").len(), 1);
}

#[test]
fn an_expired_server_certificate_is_refused_by_the_client() {
    let pki = Pki::new("tls-expired");
    let pair = pki.server("expired", "expired server", true);
    let args = tls_args(&pair);
    let server = Server::builder().plugin(plugin("echo")).args(&args).start();
    let e = TlsClient::connect(server.addr, &pki.client_config())
        .err()
        .expect("an expired certificate is refused");
    assert!(format!("{e}").contains("expired"), "{e}");
    assert!(server.log_lines_containing("connection opened").is_empty());
}

#[test]
fn a_stalled_handshake_is_closed_after_the_deadline_while_others_are_served() {
    let pki = Pki::new("tls-stall");
    let (server, metrics) = echo_server(&pki, &["--message-timeout", "500ms"]);
    let started = Instant::now();
    let mut stalled = server.connect();
    // A handshake record's header, then nothing (slowloris on the handshake).
    stalled.send(&[0x16, 0x03, 0x01, 0x02, 0x00]);
    let mut good = TlsClient::connect(server.addr, &pki.client_config()).unwrap();
    assert_eq!(
        good.roundtrip("served meanwhile").unwrap(),
        "served meanwhile"
    );
    stalled.read_until_closed(REPLY_TIMEOUT);
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(500) && after < Duration::from_secs(3),
        "a stalled handshake was closed after {after:?} with a 500ms message timeout"
    );
    wait_value(metrics, FAILURES, &[("reason", "timeout")], 1.0);
    wait_value(metrics, CLOSED, &[("reason", "tls_handshake_timeout")], 1.0);
    assert_eq!(good.roundtrip("and after").unwrap(), "and after");
}

#[test]
fn handshakes_in_progress_count_against_max_connections() {
    let pki = Pki::new("tls-max");
    let (server, metrics) = echo_server(&pki, &["--max-connections", "1"]);
    let mut stalled = server.connect();
    stalled.send(&[0x16, 0x03, 0x01]);
    wait_value(metrics, "sandport_connections_open", &[], 1.0);
    let refused = TlsClient::connect(server.addr, &pki.client_config());
    assert!(refused.is_err(), "the one slot is held by the handshake");
    drop(stalled);
    wait_value(metrics, "sandport_connections_open", &[], 0.0);
    let mut c = TlsClient::connect(server.addr, &pki.client_config()).unwrap();
    assert_eq!(c.roundtrip("now").unwrap(), "now");
}

#[test]
fn plain_text_to_the_tls_port_is_refused_before_any_plugin() {
    let pki = Pki::new("tls-plain");
    let pair = pki.server("server", "server", false);
    let mut args = tls_args(&pair);
    args.extend(["--metrics-listen".into(), "127.0.0.1:0".into()]);
    let server = Server::builder()
        .plugin(plugin("print"))
        .args(&args)
        .start();
    let metrics = crate::metrics::metrics_addr(&server);
    let mut plain = server.connect();
    plain.send(b"hello plugin\n");
    let got = plain.read_until_closed(REPLY_TIMEOUT);
    // At most a TLS alert record (content type 21), never the message back.
    assert!(got.is_empty() || got[0] == 0x15, "received {got:?}");
    wait_value(metrics, FAILURES, &[("reason", "not_tls")], 1.0);
    assert!(server.log_lines_containing("received:").is_empty());
    assert!(server.log_lines_containing("connection from").is_empty());
}

#[test]
fn the_proxy_header_comes_first_in_clear_then_tls() {
    let pki = Pki::new("tls-proxy");
    let pair = pki.server("server", "server", false);
    let mut args = tls_args(&pair);
    args.extend(["--proxy-protocol", "--trusted-proxies", "127.0.0.0/8"].map(String::from));
    let server = Server::builder()
        .plugin(test_plugin("statetest"))
        .args(&args)
        .start();
    let mut tcp = TcpStream::connect(server.addr).unwrap();
    tcp.write_all(b"PROXY TCP4 203.0.113.7 192.0.2.1 4711 7000\r\n")
        .unwrap();
    let mut c = TlsClient::over(tcp, &pki.client_config()).unwrap();
    let id = c.roundtrip("whoami").unwrap();
    assert_eq!(
        c.roundtrip(&format!("peer {id}")).unwrap(),
        "203.0.113.7:4711"
    );
}

#[test]
fn sighup_without_tls_reloads_nothing_and_serves_on() {
    let server = Server::builder().plugin(plugin("echo")).start();
    let mut c = server.connect();
    server.signal(libc::SIGHUP);
    server.wait_for_log("SIGHUP", LOG_TIMEOUT);
    c.roundtrip("alive", "alive");
    let mut d = server.connect();
    d.roundtrip("new", "new");
}

#[test]
fn bad_tls_flags_are_refused_at_start() {
    let pki = Pki::new("tls-flags");
    let pair = pki.server("server", "server", false);
    let other = pki.server("other", "other", false);
    let echo = plugin("echo");
    let (cert, key) = (pair.cert.to_str().unwrap(), pair.key.to_str().unwrap());
    let garbage = pki.dir.write("garbage.pem", b"not a certificate");
    let garbage = garbage.to_str().unwrap();
    let missing = pki.dir.join("missing.pem");
    let missing = missing.to_str().unwrap();
    let p = echo.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--tls-cert", cert], "--tls-key"),
        (vec!["--tls-key", key], "--tls-cert"),
        (vec!["--tls-client-ca", cert], "--tls-client-ca"),
        (vec!["--tls-cert", missing, "--tls-key", key], missing),
        (vec!["--tls-cert", garbage, "--tls-key", key], garbage),
        (vec!["--tls-cert", cert, "--tls-key", garbage], garbage),
        (
            vec!["--tls-cert", cert, "--tls-key", other.key.to_str().unwrap()],
            "not a usable pair",
        ),
        (
            vec![
                "--tls-cert",
                cert,
                "--tls-key",
                key,
                "--tls-client-ca",
                garbage,
            ],
            garbage,
        ),
    ];
    for (args, says) in cases {
        let (code, log) = Server::builder().plugin(p).args(&args).run_expect_failure();
        assert_eq!(code, 2, "{args:?}: {log}");
        assert!(log.contains(says), "{args:?} should say {says:?}: {log}");
    }
}
