//! 64 connections ping-pong while the plugin file is replaced 20 times: no failed call, no
//! closed connection, no lost message; every reply is the old or the new behaviour, and the
//! new one is served within a second of the rename.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::{deploy, serve_file, wait_reloads, SWAP_BOUND};
use crate::metrics::{scrape, value};
use crate::support::*;

const THREADS: usize = 8;
const PER_THREAD: usize = 8;
const SWAPS: usize = 20;

/// What one load thread saw.
#[derive(Debug, Default)]
struct Seen {
    sent: u64,
    replies: u64,
    /// Replies that were neither behaviour, and failed reads (timeouts, closes).
    wrong: Vec<String>,
}

fn load(server_addr: std::net::SocketAddr, t: usize, stop: Arc<AtomicBool>) -> Seen {
    let mut clients: Vec<Client> = (0..PER_THREAD)
        .map(|_| Client::connect(server_addr))
        .collect();
    let mut seen = Seen::default();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for (k, c) in clients.iter_mut().enumerate() {
            n += 1;
            let msg = format!("msg-{t}-{k}-{n}");
            c.send_line(&msg);
            seen.sent += 1;
            match c.recv_line(REPLY_TIMEOUT) {
                Ok(r) if r == msg || r == msg.to_uppercase() => seen.replies += 1,
                Ok(r) => seen.wrong.push(format!("{msg:?} answered {r:?}")),
                Err(e) => {
                    seen.wrong.push(format!("{msg:?}: {e:?}"));
                    return seen;
                }
            }
        }
    }
    seen
}

#[test]
fn twenty_swaps_under_64_connections_lose_nothing_and_land_within_a_second() {
    let dir = TempDir::new("live-load");
    let (upper, echo) = (plugin("upper"), plugin("echo"));
    let (server, metrics) = serve_file(&dir, &upper, &["--workers", "2"]);
    let stop = Arc::new(AtomicBool::new(false));
    let loaders: Vec<_> = (0..THREADS)
        .map(|t| {
            let (addr, stop) = (server.addr, stop.clone());
            thread::spawn(move || load(addr, t, stop))
        })
        .collect();
    // A probe connection of its own, opened before the first swap like the load's: under
    // message isolation its next message after a swap gets the new version.
    let mut probe = server.connect();
    probe.roundtrip("hello", "HELLO");
    let mut latencies = Vec::new();
    for i in 0..SWAPS {
        let (file, want) = if i % 2 == 0 {
            (&echo, "hello")
        } else {
            (&upper, "HELLO")
        };
        let renamed = deploy(dir.path(), "p.wasm", file);
        let served = eventually(Duration::from_secs(10), || {
            probe.send_line("hello");
            (probe.line() == want).then(Instant::now)
        })
        .unwrap_or_else(|| panic!("swap {i}: {want:?} never served"));
        latencies.push(served - renamed);
        wait_reloads(metrics, "p", "loaded", (i + 1) as f64);
    }
    // Read while the load's connections are still open (they close when its threads end).
    let text = scrape(metrics);
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<Seen> = loaders.into_iter().map(|h| h.join().unwrap()).collect();
    let wrong: Vec<&String> = seen.iter().flat_map(|s| &s.wrong).collect();
    assert!(
        wrong.is_empty(),
        "replies neither old nor new, or lost: {wrong:?}"
    );
    let (sent, replies) = seen
        .iter()
        .fold((0, 0), |(a, b), s| (a + s.sent, b + s.replies));
    assert_eq!(sent, replies, "every message answered");
    assert!(sent > 0);
    latencies.sort();
    let slowest = *latencies.last().unwrap();
    assert!(
        slowest <= SWAP_BOUND,
        "a swap took {slowest:?} from rename to first new reply (all: {latencies:?})"
    );
    let closed: f64 = text
        .lines()
        .filter(|l| l.starts_with("sandport_connections_closed_total"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(closed, 0.0, "no connection closed during the swaps");
    assert_eq!(
        value(&text, "sandport_plugin_chain_generation", &[]),
        Some(SWAPS as f64)
    );
    server.assert_no_call_failed();
}
