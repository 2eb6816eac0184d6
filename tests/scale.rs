//! Many clients, thread usage and --max-connections.

use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn two_thousand_concurrent_clients_without_extra_threads() {
    let server = Server::builder()
        .plugin(plugin("echo"))
        .args(["--workers", "2"])
        .start();

    // Baseline: two clients connected and served.
    let mut first: Vec<Client> = (0..2).map(|_| server.connect()).collect();
    for (i, c) in first.iter_mut().enumerate() {
        c.send_line(&format!("warmup {i}"));
        c.expect_line(&format!("warmup {i}"));
    }
    let threads_with_2 = server.threads();

    // Open all the others before any of them sends anything.
    let total = 2000;
    let started = Instant::now();
    let mut clients = first;
    while clients.len() < total {
        match Client::try_connect(server.addr) {
            Ok(c) => clients.push(c),
            Err(e) => panic!("connect #{} failed: {e}", clients.len()),
        }
    }
    for (i, c) in clients.iter_mut().enumerate() {
        c.send_line(&format!("client {i}"));
    }
    let deadline = started + Duration::from_secs(60);
    for (i, c) in clients.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.recv_line(left.max(Duration::from_millis(500))) {
            Ok(l) => assert_eq!(l, format!("client {i}")),
            Err(e) => panic!("client {i} of {total} got no reply: {e:?}"),
        }
    }
    let threads_with_2000 = server.threads();
    eprintln!(
        "scale: {total} clients served in {:?}; threads {threads_with_2} -> {threads_with_2000}; \
         RSS {} KiB",
        started.elapsed(),
        server.rss_kib()
    );
    assert_eq!(
        threads_with_2000, threads_with_2,
        "thread count must not grow with the number of connections"
    );
    // Still all open and served: a second round on a sample of them.
    for i in (0..total).step_by(97) {
        clients[i].send_line("again");
        clients[i].expect_line("again");
    }
}

#[test]
fn max_connections_closes_extra_clients_and_recovers() {
    let server = Server::builder()
        .plugin(plugin("echo"))
        .args(["--max-connections", "5"])
        .start();
    let mut clients: Vec<Client> = (0..5).map(|_| server.connect()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send_line(&format!("c{i}"));
        c.expect_line(&format!("c{i}"));
    }

    // The sixth is accepted and closed at once.
    let mut sixth = server.connect();
    let t = Instant::now();
    let got = sixth.read_until_closed(Duration::from_secs(1));
    assert!(got.is_empty(), "rejected client got data: {got:?}");
    assert!(t.elapsed() < Duration::from_secs(1));

    // The first five are unaffected.
    for (i, c) in clients.iter_mut().enumerate() {
        c.send_line(&format!("still {i}"));
        c.expect_line(&format!("still {i}"));
    }

    // One leaves; a new client is served again (once the server has noticed).
    drop(clients.remove(0));
    let served = eventually(Duration::from_secs(5), || {
        let mut c = Client::try_connect(server.addr).ok()?;
        c.send_line("newcomer");
        match c.recv_line(Duration::from_millis(500)) {
            Ok(l) if l == "newcomer" => Some(c),
            _ => None,
        }
    });
    let mut newcomer = served.expect("a new client is served after one of the five left");
    // And we are at the limit again.
    let mut extra = server.connect();
    let got = extra.read_until_closed(Duration::from_secs(1));
    assert!(got.is_empty(), "rejected client got data: {got:?}");
    newcomer.send_line("ok");
    newcomer.expect_line("ok");
}
