//! Hostile clients against the real binary: connections that send nothing (an idle flood that
//! would lock everyone out at `--max-connections`) and messages that never finish (slowloris)
//! are closed by `--idle-timeout` and `--message-timeout`, while others are served; a client
//! that always has its next message waiting does not hold its worker.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
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

#[test]
fn the_per_ip_cap_refuses_the_next_connection_from_that_address_and_serves_others() {
    let server = echo(&["--max-connections-per-ip", "2"]);
    let mut first = server.connect();
    let mut second = server.connect();
    first.roundtrip("one", "one");
    second.roundtrip("two", "two");
    let mut third = server.connect();
    third.expect_closed_without_reply(REPLY_TIMEOUT);
    // Another address of the loopback network is another client.
    let mut other = Client::connect_from([127, 0, 0, 2], server.addr);
    other.roundtrip("from elsewhere", "from elsewhere");
    // A slot freed is a slot for the same address again.
    drop(first);
    let again = eventually(Duration::from_secs(5), || {
        let mut c = Client::try_connect(server.addr).ok()?;
        c.send_line("back");
        (c.recv_line(Duration::from_millis(200)).ok()? == "back").then_some(c)
    });
    assert!(again.is_some(), "the address got its slot back");
}

#[test]
fn a_reply_over_max_reply_bytes_closes_only_its_connection() {
    let server = echo(&["--max-reply-bytes", "1KiB"]);
    let mut greedy = server.connect();
    let mut other = server.connect();
    greedy.send_line(&"x".repeat(4096));
    greedy.expect_closed_without_reply(REPLY_TIMEOUT);
    other.roundtrip("still fine", "still fine");
}

#[test]
fn bad_limit_values_are_refused_at_start_with_what_was_expected() {
    let echo = plugin("echo");
    for (flag, value, want) in [
        ("--idle-timeout", "soon", "not a time"),
        ("--message-timeout", "30", "has no unit"),
        (
            "--max-reply-bytes",
            "0",
            "--max-reply-bytes 0 is out of range",
        ),
        ("--max-connections-per-ip", "-1", "-1"),
    ] {
        let (code, stderr) = run_expect_failure([
            "--plugin".as_ref(),
            echo.as_os_str(),
            flag.as_ref(),
            value.as_ref(),
        ]);
        assert_eq!(code, 2, "{flag} {value}: {stderr}");
        assert!(stderr.contains(want), "{flag} {value}: {stderr}");
    }
}

/// Regression: a worker handled a connection for as long as it had input, so a client whose next
/// message was always waiting (pipelining, or ping-pong against a plugin slower than the client)
/// was served alone while the worker's other connections waited for it to stop.
#[test]
fn a_client_with_input_always_waiting_does_not_hold_its_worker() {
    // One worker: both clients are its connections. Each call takes 2 ms of plugin time.
    let server = Server::builder()
        .plugin(test_plugin("spin"))
        .args(["--workers", "1", "--isolation", "worker"])
        .start();
    let mut greedy = server.connect();
    greedy.roundtrip("busy 2", "done 2");
    let mut other = server.connect();
    other.roundtrip("warmup", "warmup");

    // 100 calls (200 ms of plugin time) sent at once: all of them wait to be handled.
    const BATCH: usize = 100;
    greedy.send("busy 2\n".repeat(BATCH).as_bytes());
    server.wait_until_read(&greedy);
    let replies = Arc::new(AtomicUsize::new(0));
    let reader = {
        let replies = replies.clone();
        std::thread::spawn(move || {
            for _ in 0..BATCH {
                greedy.expect_line("done 2");
                replies.fetch_add(1, SeqCst);
            }
        })
    };
    // The other client's call is long (50 ms): served in turn, it runs after about one more
    // greedy call, and the next greedy reply comes at least 50 ms after it starts; served after
    // the batch, every greedy reply is in 50 ms before its reply.
    // Served in turns, its replies come one by one (each turn's are written at its end).
    wait_until("a greedy reply", Duration::from_secs(10), || {
        replies.load(SeqCst) >= 1
    });
    let before = replies.load(SeqCst);
    other.send_line("busy 50");
    other.expect_line("done 50");
    let meanwhile = replies.load(SeqCst) - before;
    reader.join().unwrap();
    assert!(
        before < BATCH / 2,
        "{before} of the greedy client's {BATCH} calls were answered at once"
    );
    assert!(
        meanwhile <= 10,
        "{meanwhile} of the greedy client's {BATCH} calls were answered while one call of \
         another client waited ({before} before it was sent)"
    );
}

/// A batch longer than one turn, sent before the client shuts its side: every message is still
/// answered before the connection closes (its turn ending with messages left is not its end).
#[test]
fn a_batch_longer_than_a_turn_then_eof_is_answered_whole() {
    let server = echo(&["--workers", "1"]);
    let mut c = server.connect();
    const N: usize = 1000;
    let batch: String = (0..N).map(|i| format!("m{i}\n")).collect();
    c.send(batch.as_bytes());
    c.shutdown_write();
    let got = c.read_until_closed(Duration::from_secs(10));
    let text = String::from_utf8_lossy(&got);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), N, "replies before the close");
    assert!(lines.iter().enumerate().all(|(i, l)| *l == format!("m{i}")));
}
