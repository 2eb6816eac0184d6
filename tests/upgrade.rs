//! Zero-downtime upgrades (`--reuse-port`): a second server starts on the address of a running
//! one, the first gets SIGTERM, and clients connecting all the while never notice.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::support::*;

/// What the load saw: roundtrips answered, and every failure in words.
#[derive(Default)]
struct Tally {
    answered: AtomicU64,
    failures: Mutex<Vec<String>>,
}

/// One client thread: a new connection every few milliseconds, one message each (a unique
/// line the echo plugin sends back), until `stop`.
fn client_loop(addr: SocketAddr, id: usize, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let fail = |what: String| tally.failures.lock().unwrap().push(what);
    let mut n = 0u64;
    while !stop.load(SeqCst) {
        n += 1;
        let line = format!("client {id} message {n}");
        let mut stream = match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(s) => s,
            Err(e) => {
                fail(format!("{line}: connect: {e}"));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if let Err(e) = stream.write_all(format!("{line}\n").as_bytes()) {
            fail(format!("{line}: send: {e}"));
            continue;
        }
        match Client::from_stream(stream).recv_line(REPLY_TIMEOUT) {
            Ok(reply) if reply == line => {
                tally.answered.fetch_add(1, SeqCst);
            }
            Ok(reply) => fail(format!("{line}: wrong reply {reply:?}")),
            Err(e) => fail(format!("{line}: no reply: {e:?}")),
        }
        // Pacing the load (a new client every few ms per thread), not waiting for a state.
        thread::sleep(Duration::from_millis(2));
    }
}

/// Connections the kernel completed that `server` has not accepted yet.
fn queued(server: &Server) -> u64 {
    let mine = socket_inodes(server.pid());
    tcp_sockets()
        .iter()
        .filter(|s| s.state == TCP_LISTEN && s.local == server.addr && mine.contains(&s.inode))
        .map(|s| s.rx_queue)
        .sum()
}

fn opened(server: &Server) -> usize {
    server.log_lines_containing("connection opened").len()
}

#[test]
fn a_new_server_takes_over_the_address_under_load_without_losing_a_client() {
    let mut old = Server::builder()
        .plugin(plugin("echo"))
        .args(["--reuse-port", "--workers", "2"])
        .start();
    let addr = old.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let clients: Vec<_> = (0..8)
        .map(|id| {
            let (stop, tally) = (stop.clone(), tally.clone());
            thread::spawn(move || client_loop(addr, id, stop, tally))
        })
        .collect();
    let answered = || tally.answered.load(SeqCst);
    wait_until("the old server answers the load", LOG_TIMEOUT, || {
        answered() >= 100
    });

    let new = Server::builder()
        .no_default_listen()
        .plugin(plugin("echo"))
        .args([
            "--listen",
            &addr.to_string(),
            "--reuse-port",
            "--workers",
            "2",
        ])
        .start();
    assert_eq!(new.addr, addr, "{}", new.logs.dump());
    // Both listen: the kernel spreads the new clients between them.
    wait_until(
        "the new server gets some of the clients",
        LOG_TIMEOUT,
        || opened(&new) >= 20,
    );
    let before_old = opened(&old);
    assert!(before_old > 0);

    // The old server is stopped for a moment, so the clients the kernel gives it meanwhile wait
    // in its accept queue when the SIGTERM comes (as with a busy server): closing its listener
    // would reset them (Linux does not move them to the other listener), so it must take them.
    old.signal(libc::SIGSTOP);
    wait_until(
        "clients wait in the old server's accept queue",
        LOG_TIMEOUT,
        || queued(&old) >= 3,
    );
    old.signal(libc::SIGTERM);
    old.signal(libc::SIGCONT);
    let status = old
        .wait_exit(Duration::from_secs(7))
        .expect("the old server drains and exits");
    assert_eq!(status.code(), Some(0), "{status:?}\n{}", old.logs.dump());
    let at_exit = answered();
    wait_until("the new server alone answers the load", LOG_TIMEOUT, || {
        answered() >= at_exit + 300
    });
    stop.store(true, SeqCst);
    for c in clients {
        c.join().unwrap();
    }

    let failures = tally.failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} messages failed during the upgrade (first ones: {:?})\n--- old ---\n{}",
        failures.len(),
        answered() as usize + failures.len(),
        &failures[..failures.len().min(10)],
        old.logs.dump()
    );
    // Whether the queue was still full at the SIGTERM depends on which of the old server's
    // threads runs first after SIGCONT (the acceptor may take them before it sees the signal);
    // either way none may be lost.
    let took = old.log_lines_containing("queued at shutdown");
    eprintln!(
        "upgrade under load: {} messages answered; the old server opened {} connections; {:?}",
        answered(),
        opened(&old),
        took.first().and_then(|l| log_field(l, "connections"))
    );
}

#[test]
fn without_reuse_port_a_second_server_on_the_address_is_a_bind_error() {
    for (first, second) in [(false, false), (true, false), (false, true)] {
        let mut args = vec!["--workers", "1"];
        if first {
            args.push("--reuse-port");
        }
        let running = Server::builder().plugin(plugin("echo")).args(args).start();
        let listen = running.addr.to_string();
        let mut args = vec!["--listen", listen.as_str()];
        if second {
            args.push("--reuse-port");
        }
        let (code, stderr) = Server::builder()
            .no_default_listen()
            .plugin(plugin("echo"))
            .args(args)
            .run_expect_failure();
        assert_eq!(
            code, 2,
            "first --reuse-port {first}, second {second}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("error: cannot listen on {listen}"))
                && stderr.contains("in use"),
            "the bind error names the address and the cause: {stderr}"
        );
    }
}
