//! SIGTERM / SIGINT: finish in-flight work, refuse new clients, exit 0.

use std::io;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn sigterm_finishes_in_flight_messages_and_exits_zero() {
    let mut server = Server::builder()
        .plugin(test_plugin("spin"))
        .args(["--workers", "2", "--timeout-ms", "2000"])
        .args(["--shutdown-timeout-ms", "5000"])
        .start();
    let per_client = 10;
    let mut clients: Vec<Client> = (0..4).map(|_| server.connect()).collect();
    for c in clients.iter_mut() {
        c.send("busy 30\n".repeat(per_client).as_bytes());
    }
    // Let the server read them (they are tiny: one read each), then ask it to stop while the
    // work (4 x 10 x 30ms over 2 workers, ~600ms) is still going on: however late a worker
    // reads a client, that client's 10 x 30ms are still to do.
    for c in &clients {
        server.wait_until_read(c);
    }
    let t = Instant::now();
    server.signal(libc::SIGTERM);

    let mut handles = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        handles.push(thread::spawn(move || {
            let got = c.read_until_closed(Duration::from_secs(8));
            (i, String::from_utf8_lossy(&got).into_owned())
        }));
    }
    for h in handles {
        let (i, text) = h.join().unwrap();
        let replies: Vec<&str> = text.lines().collect();
        assert!(
            replies.iter().all(|r| *r == "done 30"),
            "client {i}: unexpected replies {replies:?}"
        );
        assert_eq!(
            replies.len(),
            per_client,
            "client {i}: every message the server had received is answered before it closes"
        );
    }
    let status = server
        .wait_exit(Duration::from_secs(7))
        .expect("server exits within the shutdown timeout");
    assert_eq!(status.code(), Some(0), "clean shutdown exits 0: {status:?}");
    assert!(
        t.elapsed() < Duration::from_secs(6),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        !server.log_lines_containing("shutting down").is_empty(),
        "`shutting down` is logged:\n{}",
        server.logs.dump()
    );
}

#[test]
fn sigint_exits_zero() {
    let mut server = Server::builder().plugin(plugin("echo")).start();
    let mut c = server.connect();
    c.send_line("hi");
    c.expect_line("hi");
    server.signal(libc::SIGINT);
    let status = server
        .wait_exit(Duration::from_secs(6))
        .expect("server exits after SIGINT");
    assert_eq!(status.code(), Some(0), "{status:?}");
    server.wait_for_log("shutting down", LOG_TIMEOUT);
    // The idle client's connection was closed.
    c.expect_closed_without_reply(Duration::from_secs(2));
}

#[test]
fn sigterm_on_idle_server_exits_promptly() {
    let mut server = Server::builder().plugin(plugin("echo")).start();
    let t = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server
        .wait_exit(Duration::from_secs(6))
        .expect("server exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "an idle server should not wait for the shutdown timeout: {:?}",
        t.elapsed()
    );
}

#[test]
fn after_sigterm_new_connections_are_refused() {
    let mut server = Server::builder()
        .plugin(test_plugin("spin"))
        .args(["--timeout-ms", "5000", "--shutdown-timeout-ms", "5000"])
        .start();
    let mut busy = server.connect();
    busy.send_line("busy 1500");
    server.wait_until_read(&busy);
    assert!(
        server.is_listening(),
        "the listener is open until the signal"
    );
    server.signal(libc::SIGTERM);
    server.wait_for_log("shutting down", LOG_TIMEOUT);
    // The host closes its listener while the busy call is still running.
    wait_until("the listener is closed", LOG_TIMEOUT, || {
        !server.is_listening()
    });
    assert!(
        server.is_running(),
        "server should still be finishing the busy call"
    );
    match TcpStream::connect_timeout(&server.addr, Duration::from_secs(1)) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
        Err(e) => panic!("expected connection refused, got {e}"),
        Ok(stream) => {
            // Not refused at the TCP level: it must at least be closed at once, unserved.
            let mut c = Client::from_stream(stream);
            c.send_line("late");
            let got = c.recv_some(Duration::from_secs(1));
            panic!(
                "a connection made after SIGTERM was accepted by the kernel (then: {got:?}); \
                 new connections should be refused (listener closed)"
            );
        }
    }
    busy.expect_line("done 1500");
    let status = server.wait_exit(Duration::from_secs(7)).expect("exits");
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn shutdown_timeout_bounds_wait_for_stuck_call() {
    let mut server = Server::builder()
        .plugin(test_plugin("spin"))
        .args(["--timeout-ms", "60000", "--shutdown-timeout-ms", "500"])
        .start();
    let mut c = server.connect();
    c.send_line("spin");
    server.wait_until_read(&c);
    let t = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(10));
    let elapsed = t.elapsed();
    let status = status.expect("server exits even though a call is stuck");
    // One deadline, fixed at the signal, for the drain and the stuck call alike: the timeout,
    // one epoch tick (5 ms), and room for the process to exit on a loaded machine.
    assert!(
        elapsed < Duration::from_millis(500 + 5 + 250),
        "a 500ms shutdown timeout took {elapsed:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(490),
        "the stuck call was cut before the deadline: {elapsed:?}"
    );
    assert_eq!(
        status.code(),
        Some(0),
        "the server exits by itself, cleanly: {status:?}"
    );
    c.read_until_closed(Duration::from_secs(2));
}

/// A client whose close is still unread when the drain starts: the drain reads its EOF and
/// closes it, and must not then touch the connection again (it once panicked the worker, losing
/// every other connection on it).
#[test]
fn a_close_still_unread_when_the_drain_starts_is_handled_once() {
    let mut server = Server::builder()
        .plugin(test_plugin("spin"))
        .args(["--workers", "1", "--timeout-ms", "10000"])
        .start();
    let mut closer = server.connect();
    closer.send_line("hello");
    closer.expect_line("hello");
    let mut busy = server.connect();
    // The only worker is inside this call while the other client closes and the signal lands,
    // so both wait for it and the drain is what finds the close.
    busy.send_line("busy 700");
    server.wait_until_read(&busy);
    drop(closer);
    server.signal(libc::SIGINT);
    busy.expect_line("done 700");
    let status = server
        .wait_exit(Duration::from_secs(6))
        .expect("server exits after SIGINT");
    assert_eq!(status.code(), Some(0), "{status:?}\n{}", server.logs.dump());
    assert!(
        server.log_lines_containing("panicked").is_empty(),
        "{}",
        server.logs.dump()
    );
}

#[test]
fn an_idle_client_does_not_hold_the_drain_past_the_first_message_grace() {
    let mut server = Server::builder()
        .plugin(plugin("echo"))
        .args(["--shutdown-timeout-ms", "20000"])
        .start();
    let mut idle = server.connect();
    let mut talked = server.connect();
    talked.roundtrip("hello", "hello");
    // The pause is the test: older than the 1 s a new connection is spared for its first
    // message, the idle client is just idle.
    thread::sleep(Duration::from_millis(1100));
    let t = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("an idle client held the drain towards its 20 s timeout");
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
    idle.expect_closed_without_reply(REPLY_TIMEOUT);
}
