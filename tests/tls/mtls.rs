//! Mutual TLS (`--tls-client-ca`): a client with a certificate from the CA is served, and its
//! subject is in the `connection opened` line and answered by `messaging.peer-certificate`
//! (here the core ABI's `peer_certificate`, from a small WAT module); a client with a
//! certificate from another CA, or with none, is refused before any plugin hears of it.

use super::pki::{tls_args, Pki, TlsClient};
use super::FAILURES;
use crate::metrics::{metrics_addr, wait_value};
use crate::support::*;

/// Replies to every message with its connection's client certificate subject, or `none`.
const SUBJECT_ECHO: &str = r#"(module
  (import "sandport" "peer_certificate" (func $cert (param i64 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 8192))
  (data (i32.const 100) "none")
  (func (export "sandport_abi_version") (result i32) (i32.const 2))
  (func (export "sandport_alloc") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    (local.get $p))
  (func (export "sandport_free") (param i32 i32))
  (func (export "sandport_on_message") (param $conn i64) (param $ptr i32) (param $len i32) (result i32)
    (i32.store (i32.const 0) (i32.const 1))
    (if (i32.eqz (call $cert (local.get $conn) (i32.const 1024) (i32.const 4096) (i32.const 16)))
      (then
        (i32.store (i32.const 4) (i32.const 1024))
        (i32.store (i32.const 8) (i32.load (i32.const 16))))
      (else
        (i32.store (i32.const 4) (i32.const 100))
        (i32.store (i32.const 8) (i32.const 4))))
    (i32.const 0)))
"#;

#[test]
fn a_client_from_the_ca_is_served_and_plugins_see_its_subject_others_are_refused() {
    let servers = Pki::new("mtls-server");
    let clients = Pki::new("mtls-clients");
    let strangers = Pki::new("mtls-strangers");
    let module = servers.dir.write("subject.wat", SUBJECT_ECHO.as_bytes());
    let mut args = tls_args(&servers.server("server", "server", false));
    args.extend([
        "--tls-client-ca".into(),
        clients.ca_pem.display().to_string(),
        "--metrics-listen".into(),
        "127.0.0.1:0".into(),
    ]);
    let server = Server::builder().plugin(&module).args(&args).start();
    let metrics = metrics_addr(&server);
    let versions = rustls::ALL_VERSIONS;

    let device = clients.client("device", "device-7", "Acme");
    let config = servers.client_config_with(versions, Some(&device));
    let mut good = TlsClient::connect(server.addr, &config).expect("a known client");
    assert_eq!(good.roundtrip("who am I").unwrap(), "CN=device-7, O=Acme");
    let opened = server.wait_for_log("connection opened", LOG_TIMEOUT);
    assert_eq!(
        log_field(&opened, "client_cert").as_deref(),
        Some("CN=device-7, O=Acme"),
        "{opened}"
    );

    let intruder = strangers.client("intruder", "device-7", "Acme");
    for identity in [Some(&intruder), None] {
        let config = servers.client_config_with(versions, identity);
        // Under TLS 1.3 the client's side of the handshake ends before the server has checked
        // its certificate: the refusal then shows on the first read.
        if let Ok(mut c) = TlsClient::connect(server.addr, &config) {
            assert!(
                c.roundtrip("let me in").is_err(),
                "served without a good certificate"
            );
        }
    }
    wait_value(metrics, FAILURES, &[("reason", "client_certificate")], 2.0);
    assert_eq!(good.roundtrip("still here").unwrap(), "CN=device-7, O=Acme");
    assert_eq!(server.log_lines_containing("connection opened").len(), 1);
}

#[test]
fn without_mutual_tls_a_plugin_hears_there_is_no_client_certificate() {
    let servers = Pki::new("mtls-none");
    let module = servers.dir.write("subject.wat", SUBJECT_ECHO.as_bytes());
    let args = tls_args(&servers.server("server", "server", false));
    let server = Server::builder().plugin(&module).args(&args).start();
    let mut c = TlsClient::connect(server.addr, &servers.client_config()).unwrap();
    assert_eq!(c.roundtrip("who am I").unwrap(), "none");
}
