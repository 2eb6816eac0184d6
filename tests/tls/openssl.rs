//! Real `openssl s_client` (Debian's `openssl`) against the server: each framing over TLS 1.2
//! and 1.3, and a client verifying against another CA refusing the server.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;

use super::echo_server;
use super::pki::{Pki, TlsClient};
use crate::support::*;

/// `openssl s_client` to `addr`, verifying the server against `ca`, speaking `version`.
fn s_client(addr: std::net::SocketAddr, ca: &std::path::Path, version: &str) -> Child {
    Command::new(debian_tool("openssl", "openssl"))
        .args([
            "s_client",
            "-quiet",
            "-verify_return_error",
            "-servername",
            "localhost",
        ])
        .arg("-connect")
        .arg(addr.to_string())
        .arg("-CAfile")
        .arg(ca)
        .arg(version)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl s_client")
}

/// Writes `input` to s_client and returns the first `want` bytes it prints (the server's
/// answer), or panics after REPLY_TIMEOUT with what its stderr said.
fn exchange(mut child: Child, input: &[u8], want: usize) -> Vec<u8> {
    child.stdin.as_mut().unwrap().write_all(input).unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut got = vec![0; want];
        let _ = tx.send(stdout.read_exact(&mut got).map(|()| got));
    });
    let got = rx.recv_timeout(REPLY_TIMEOUT);
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    match got {
        Ok(Ok(got)) => got,
        other => panic!(
            "s_client got no answer ({other:?}); it said:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[test]
fn openssl_s_client_talks_to_each_framing_on_tls_1_2_and_1_3() {
    let pki = Pki::new("tls-openssl");
    let (line, _) = echo_server(&pki, &[]);
    let (length, _) = echo_server(&pki, &["--framing", "length"]);
    for version in ["-tls1_2", "-tls1_3"] {
        let child = s_client(line.addr, &pki.ca_pem, version);
        assert_eq!(exchange(child, b"hello openssl\n", 14), b"hello openssl\n");
        let child = s_client(length.addr, &pki.ca_pem, version);
        let framed = frame(b"framed \x00 bytes");
        assert_eq!(exchange(child, &framed, framed.len()), framed);
    }
}

#[test]
fn openssl_s_client_refuses_a_server_its_ca_did_not_sign() {
    let pki = Pki::new("tls-openssl-trust");
    let (server, _) = echo_server(&pki, &[]);
    let stranger = Pki::new("tls-openssl-stranger");
    let mut child = s_client(server.addr, &stranger.ca_pem, "-tls1_3");
    drop(child.stdin.take());
    let status = wait_child_exit(&mut child);
    assert!(
        !status.success(),
        "s_client accepted a server from another CA"
    );
    let mut good = TlsClient::connect(server.addr, &pki.client_config()).unwrap();
    assert_eq!(good.roundtrip("still served").unwrap(), "still served");
}

/// Waits for `child` to exit by itself (polled), killing it after REPLY_TIMEOUT.
fn wait_child_exit(child: &mut Child) -> std::process::ExitStatus {
    let status = eventually(REPLY_TIMEOUT, || child.try_wait().unwrap());
    status.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("s_client did not exit")
    })
}
