//! Clients that never read, against the real binary: `--write-timeout` closes a connection
//! whose client takes none of its replies, and `--max-buffered-bytes` keeps what a thousand of
//! them make the server hold (and its RSS) under the bound the README states, while a client
//! that reads is served throughout.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::metrics::{scrape, value, wait_value, with_metrics};
use crate::support::*;

const MIB: u64 = 1 << 20;

/// Asks for `n` replies of 1 MiB in one write.
fn ask_replies(c: &mut Client, n: usize) {
    c.stream
        .write_all("reply 1048576\n".repeat(n).as_bytes())
        .expect("asking for replies");
}

/// A client whose receive buffer is small, so what it does not read piles up in the server
/// rather than in its kernel (loopback would otherwise take megabytes per socket first).
fn small_window_client(addr: std::net::SocketAddr) -> Client {
    let c = Client::connect(addr);
    set_receive_buffer(&c, 4096);
    c
}

fn set_receive_buffer(c: &Client, size: libc::c_int) {
    // SAFETY: a valid socket and a pointer to a c_int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            c.stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt SO_RCVBUF");
}

#[test]
fn a_client_that_reads_none_of_its_replies_is_closed_by_the_write_timeout() {
    let membomb = test_plugin("membomb");
    let (server, m) = with_metrics(&[membomb], &["--write-timeout", "300ms"]);
    let mut deaf = small_window_client(server.addr);
    let mut other = server.connect();
    let asked = Instant::now();
    ask_replies(&mut deaf, 8);
    wait_value(
        m,
        "sandport_connections_closed_total",
        &[("reason", "write_timeout")],
        1.0,
    );
    let closed_after = asked.elapsed();
    assert!(
        closed_after >= Duration::from_millis(300),
        "closed after {closed_after:?}, before its 300ms write timeout"
    );
    // (Reading what the kernel still holds for it through its small window would take
    // minutes: the metric is the proof it was closed, and for what.)
    other.roundtrip("still served", "still served");
}

#[test]
fn a_slow_reader_that_keeps_reading_is_not_cut_by_the_write_timeout() {
    let membomb = test_plugin("membomb");
    let (server, m) = with_metrics(&[membomb], &["--write-timeout", "200ms"]);
    let mut slow = server.connect();
    ask_replies(&mut slow, 8);
    let mut got = 0u64;
    while got < 8 * (MIB + 1) {
        // At most 64 KiB a read, with pauses shorter than the write timeout: the client is
        // slow (about 1 MB/s), not deaf, and the server's queue waits on it for seconds.
        std::thread::sleep(Duration::from_millis(50));
        got += slow.recv_some(REPLY_TIMEOUT).expect("replies").len() as u64;
    }
    assert_eq!(got, 8 * (MIB + 1), "every reply and its newline");
    let text = scrape(m);
    let closed = value(
        &text,
        "sandport_connections_closed_total",
        &[("reason", "write_timeout")],
    );
    assert_eq!(closed, Some(0.0), "{text}");
}

/// The README's bound on buffered bytes: twice `--max-buffered-bytes`, plus one connection's
/// worth (message, output cap, reply) per worker.
fn stated_bound(budget: u64, workers: u64) -> u64 {
    2 * budget + workers * 3 * MIB
}

#[test]
fn a_thousand_clients_asking_1mib_replies_and_reading_nothing_stay_under_the_budget() {
    const CLIENTS: usize = 1000;
    let budget = 32 * MIB;
    let membomb = test_plugin("membomb");
    let (server, m) = with_metrics(
        &[membomb],
        &[
            "--workers",
            "2",
            "--max-buffered-bytes",
            "32MiB",
            "--write-timeout",
            "off",
        ],
    );
    let mut reader = server.connect();
    reader.roundtrip("warm up", "warm up");
    let baseline = server.rss_kib() * 1024;
    let sampler = server.rss_sampler();
    let mut deaf: Vec<Client> = (0..CLIENTS)
        .map(|_| small_window_client(server.addr))
        .collect();
    for c in &mut deaf {
        ask_replies(c, 4);
    }
    // The server has met the budget: some clients paused, the largest shed.
    let pressed = eventually(Duration::from_secs(30), || {
        let text = scrape(m);
        let pauses = value(&text, "sandport_budget_pauses_total", &[])?;
        let shed = value(
            &text,
            "sandport_connections_closed_total",
            &[("reason", "over_budget")],
        )?;
        (pauses > 0.0).then_some((pauses, shed))
    });
    let (pauses, shed) = pressed.expect("no connection was ever paused for the budget");
    // And one that reads is served meanwhile.
    reader.roundtrip("still served", "still served");
    let held = value(&scrape(m), "sandport_buffered_bytes", &[]).unwrap() as u64;
    let max_rss = sampler.finish() * 1024;
    eprintln!(
        "budget: {pauses} pauses, {shed} shed; buffered {held} B; RSS baseline {} MiB, max {} \
         MiB",
        baseline / MIB,
        max_rss / MIB
    );
    let bound = stated_bound(budget, 2);
    assert!(
        held <= bound,
        "{held} bytes buffered, over the bound {bound}"
    );
    // RSS adds the allocator's slack to what is buffered: a quarter more, in this test.
    assert!(
        max_rss < baseline + bound + bound / 4,
        "RSS went from {} MiB to {} MiB, over the stated bound of {} MiB buffered",
        baseline / MIB,
        max_rss / MIB,
        bound / MIB
    );
    // Without the budget, each would hold its output cap and a reply: about 2 GB.
    drop(deaf);
    wait_value(m, "sandport_connections_open", &[], 1.0);
    reader.roundtrip("after", "after");
}

#[test]
fn past_twice_the_budget_the_largest_holders_are_closed_and_the_others_served() {
    let membomb = test_plugin("membomb");
    let (server, m) = with_metrics(
        &[membomb],
        &[
            "--workers",
            "2",
            "--max-buffered-bytes",
            "1MiB",
            "--write-timeout",
            "off",
        ],
    );
    let mut reader = server.connect();
    let mut deaf: Vec<Client> = (0..40).map(|_| small_window_client(server.addr)).collect();
    for c in &mut deaf {
        ask_replies(c, 4);
    }
    let shed = eventually(Duration::from_secs(10), || {
        let text = scrape(m);
        let shed = value(
            &text,
            "sandport_connections_closed_total",
            &[("reason", "over_budget")],
        )?;
        (shed > 0.0).then_some(shed)
    });
    assert!(shed.is_some(), "no holder was shed past twice the budget");
    reader.roundtrip("still served", "still served");
    // What is left is under the stated bound once each worker has summed it (every second).
    let bound = stated_bound(MIB, 2);
    let held = eventually(Duration::from_secs(3), || {
        let held = value(&scrape(m), "sandport_buffered_bytes", &[])? as u64;
        (held <= bound).then_some(held)
    });
    assert!(
        held.is_some(),
        "buffered bytes stayed over the bound {bound}"
    );
}
