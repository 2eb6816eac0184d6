//! Hostile clients against the real binary: connections that send nothing (an idle flood that
//! would lock everyone out at `--max-connections`) and messages that never finish (slowloris)
//! are closed by `--idle-timeout` and `--message-timeout`, while others are served.

use std::time::{Duration, Instant};

use crate::support::*;

fn echo(args: &[&str]) -> Server {
    Server::builder().plugin(plugin("echo")).args(args).start()
}

#[test]
fn an_idle_flood_is_closed_by_the_idle_timeout_and_others_get_in_again() {
    let server = echo(&["--max-connections", "5", "--idle-timeout", "300ms"]);
    let started = Instant::now();
    let mut flood: Vec<Client> = (0..5).map(|_| server.connect()).collect();
    let mut refused = server.connect();
    refused.expect_closed_without_reply(REPLY_TIMEOUT);
    // Served again once the idle ones are gone: after the timeout, within a sweep (a quarter
    // of it) and a margin.
    let served = eventually(Duration::from_secs(5), || {
        let mut c = Client::try_connect(server.addr).ok()?;
        c.send_line("let me in");
        (c.recv_line(Duration::from_millis(200)).ok()? == "let me in").then(Instant::now)
    })
    .expect("a new client is served once the idle flood is closed");
    let waited = served - started;
    assert!(
        waited >= Duration::from_millis(300),
        "served after {waited:?}: the idle clients were closed before their timeout"
    );
    assert!(
        waited < Duration::from_millis(300 + 75 + 700),
        "served only after {waited:?}"
    );
    for c in flood.iter_mut() {
        c.expect_closed_without_reply(REPLY_TIMEOUT);
    }
}

#[test]
fn a_client_that_keeps_talking_is_never_idle() {
    let server = echo(&["--idle-timeout", "300ms"]);
    let mut c = server.connect();
    let until = Instant::now() + Duration::from_millis(1200);
    let mut n = 0;
    while Instant::now() < until {
        c.roundtrip(&format!("still here {n}"), &format!("still here {n}"));
        n += 1;
        // The pause is the test: each one is shorter than the idle timeout.
        std::thread::sleep(Duration::from_millis(100));
    }
    c.roundtrip("last", "last");
}

#[test]
fn slowloris_is_cut_by_the_message_timeout_and_others_are_served() {
    let server = echo(&["--message-timeout", "300ms", "--idle-timeout", "off"]);
    let mut slow = server.connect();
    let mut fine = server.connect();
    let started = Instant::now();
    slow.send(b"never");
    let mut closed_after = None;
    // One byte every 50 ms, never a newline, for at most 3 s.
    while started.elapsed() < Duration::from_secs(3) {
        if std::io::Write::write_all(&mut slow.stream, b"x").is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        match slow.recv_some(Duration::from_millis(50)) {
            Err(RecvError::Closed(_)) => {
                closed_after = Some(started.elapsed());
                break;
            }
            Err(RecvError::Timeout) => {}
            other => panic!("unexpected: {other:?}"),
        }
    }
    let closed_after = closed_after.expect("the slow sender was never cut off");
    assert!(
        closed_after >= Duration::from_millis(300) && closed_after < Duration::from_millis(1000),
        "cut after {closed_after:?} with a 300ms message timeout"
    );
    fine.roundtrip("and me?", "and me?");
}
