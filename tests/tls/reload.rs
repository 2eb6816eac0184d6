//! SIGHUP reloads the certificate and key: under load nothing is dropped and new handshakes
//! get the new certificate; a bad new pair is refused and the old one goes on serving. A pair
//! renamed into place is reloaded without a signal (the files are watched).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;

use super::pki::{tls_args, Pki, TlsClient};
use super::{CLOSED, FAILURES};
use crate::metrics::{metrics_addr, promtool_check, scrape, value, wait_value};

const RELOADS: &str = "sandport_tls_reloads_total";
use crate::support::*;

/// The subject a new connection's handshake shows, once it is `want` (polled: the reload
/// happens on the signal thread, after the signal).
fn wait_for_subject(server: &Server, pki: &Pki, want: &str) {
    let mut last = String::new();
    let seen = eventually(REPLY_TIMEOUT, || {
        // A roundtrip too: served, and the session tickets read (a client closing with
        // bytes unread resets the connection, which the server counts as gone).
        last = TlsClient::connect(server.addr, &pki.client_config())
            .and_then(|mut c| Ok((c.roundtrip("hi")?, c.server_subject())))
            .map_or_else(|e| e.to_string(), |(_, subject)| subject);
        (last == want).then_some(())
    });
    assert!(seen.is_some(), "new handshakes show {last:?}, not {want:?}");
}

#[test]
fn a_new_pair_on_sighup_serves_new_handshakes_and_drops_nothing_under_load() {
    let pki = Pki::new("tls-reload");
    let pair = pki.server("live", "first", false);
    let mut args = tls_args(&pair);
    args.extend(["--metrics-listen".into(), "127.0.0.1:0".into()]);
    let server = Server::builder().plugin(plugin("echo")).args(&args).start();
    let metrics = metrics_addr(&server);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let config = pki.client_config();
    // Long-lived connections echoing all along, and short ones handshaking all along.
    let mut load = Vec::new();
    for n in 0..6 {
        let (stop, done, config, addr) = (stop.clone(), done.clone(), config.clone(), server.addr);
        load.push(thread::spawn(move || -> Result<u64, String> {
            let mut open: Option<TlsClient> = None;
            let mut i = 0u64;
            while !stop.load(Relaxed) {
                let c = match open.as_mut() {
                    Some(c) if n % 2 == 0 => c,
                    _ => open.insert(
                        TlsClient::connect(addr, &config).map_err(|e| format!("#{i}: {e}"))?,
                    ),
                };
                let msg = format!("client {n} message {i}");
                let back = c.roundtrip(&msg).map_err(|e| format!("{msg}: {e}"))?;
                if back != msg {
                    return Err(format!("sent {msg:?}, got {back:?}"));
                }
                i += 1;
                done.fetch_add(1, Relaxed);
            }
            Ok(i)
        }));
    }
    let wait_for_more = |n: u64| {
        let target = done.load(Relaxed) + n;
        wait_until("the load goes on", REPLY_TIMEOUT, || {
            done.load(Relaxed) >= target
        });
    };
    wait_for_more(200);
    wait_for_subject(&server, &pki, "CN=first");
    assert_eq!(
        value(&scrape(metrics), RELOADS, &[("result", "loaded")]),
        Some(0.0)
    );
    pki.server("live", "second", false);
    server.signal(libc::SIGHUP);
    wait_for_subject(&server, &pki, "CN=second");
    let text = wait_value(metrics, RELOADS, &[("result", "loaded")], 1.0);
    assert_eq!(value(&text, RELOADS, &[("result", "refused")]), Some(0.0));
    wait_for_more(200);
    stop.store(true, Relaxed);
    for (n, t) in load.into_iter().enumerate() {
        let sent = t
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("client {n}: {e}"));
        assert!(sent > 0, "client {n} sent nothing");
    }
    let text = scrape(metrics);
    for reason in [
        "timeout",
        "not_tls",
        "client_certificate",
        "client_alert",
        "protocol",
    ] {
        assert_eq!(
            value(&text, FAILURES, &[("reason", reason)]),
            Some(0.0),
            "{reason}"
        );
    }
    for reason in ["client_went_away", "write_timeout", "tls_handshake_failed"] {
        assert_eq!(
            value(&text, CLOSED, &[("reason", reason)]),
            Some(0.0),
            "{reason}"
        );
    }
}

#[test]
fn a_bad_new_pair_on_sighup_is_refused_and_the_old_one_keeps_serving() {
    let pki = Pki::new("tls-bad-reload");
    let pair = pki.server("live", "first", false);
    // SIGHUP alone reloads here, so each refusal is the signal's.
    let server = Server::builder()
        .plugin(plugin("echo"))
        .args(tls_args(&pair))
        .args(["--no-watch", "--metrics-listen", "127.0.0.1:0"])
        .start();
    let metrics = metrics_addr(&server);
    let mut open = TlsClient::connect(server.addr, &pki.client_config()).unwrap();
    // A key that is not the certificate's, then a certificate file that is not PEM: each
    // refusal is counted, for monitoring to see a rotation that did not happen.
    let other = pki.server("other", "other", false);
    std::fs::copy(&other.key, &pair.key).unwrap();
    server.signal(libc::SIGHUP);
    wait_value(metrics, RELOADS, &[("result", "refused")], 1.0);
    std::fs::write(&pair.cert, "not a certificate").unwrap();
    server.signal(libc::SIGHUP);
    let text = wait_value(metrics, RELOADS, &[("result", "refused")], 2.0);
    assert_eq!(value(&text, RELOADS, &[("result", "loaded")]), Some(0.0));
    // The TLS families (reloads, handshake failures) pass Prometheus's own validator.
    promtool_check(&text);
    let mut new = TlsClient::connect(server.addr, &pki.client_config()).unwrap();
    assert_eq!(new.server_subject(), "CN=first");
    assert_eq!(new.roundtrip("new").unwrap(), "new");
    assert_eq!(open.roundtrip("old").unwrap(), "old");
}

#[test]
fn a_new_pair_renamed_into_place_is_served_without_a_signal() {
    let pki = Pki::new("tls-watch");
    let pair = pki.server("live", "first", false);
    let server = Server::builder()
        .plugin(plugin("echo"))
        .args(tls_args(&pair))
        .args(["--metrics-listen", "127.0.0.1:0"])
        .start();
    let metrics = metrics_addr(&server);
    let mut open = TlsClient::connect(server.addr, &pki.client_config()).unwrap();
    assert_eq!(open.server_subject(), "CN=first");
    // The deploy way: write the new files beside, then rename each into place.
    let next = pki.server("next", "second", false);
    std::fs::rename(&next.key, &pair.key).unwrap();
    std::fs::rename(&next.cert, &pair.cert).unwrap();
    wait_for_subject(&server, &pki, "CN=second");
    assert_eq!(open.roundtrip("still open").unwrap(), "still open");
    // A broken file dropped in is refused (and counted); the pair serving goes on. (The two
    // renames above may have been read as two changes, the first a key without its
    // certificate: refusals are counted from here.)
    let refused = || value(&scrape(metrics), RELOADS, &[("result", "refused")]).unwrap_or(-1.0);
    let before = refused();
    std::fs::write(pair.cert.with_extension("tmp"), "not a certificate").unwrap();
    std::fs::rename(pair.cert.with_extension("tmp"), &pair.cert).unwrap();
    let counted = eventually(REPLY_TIMEOUT, || (refused() > before).then_some(()));
    assert!(counted.is_some(), "no refusal counted after {before}");
    let new = TlsClient::connect(server.addr, &pki.client_config()).unwrap();
    assert_eq!(new.server_subject(), "CN=second");
}
