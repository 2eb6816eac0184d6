//! A room member that never reads while another client publishes a lot to the room: the host
//! closes it as a slow consumer once more than `--max-output-bytes` waits for it, the publisher
//! is served on, and the server's memory stays bounded.

use std::time::Duration;

use super::{ask, statetest, whoami};
use crate::support::*;

/// The size of each published message (a line of `x`s).
const MESSAGE: usize = 16384;
/// Publishing goes on this long after the receiver is gone, to show memory does not grow.
const MORE_CALLS: usize = 20;
/// What may be sent to the receiver before it is closed: the 256 KiB cap, the kernel's socket
/// buffers on both sides (a few MiB each at most) and a call's worth, with room to spare.
const MAX_DELIVERED: usize = 64 << 20;

#[test]
fn a_receiver_that_never_reads_is_closed_and_memory_stays_bounded() {
    let mut server = statetest(&["--workers", "2", "--max-output-bytes", "256KiB"]);
    let mut receiver = server.connect();
    let mut publisher = server.connect();
    let idr = whoami(&mut receiver);
    receiver.roundtrip("join feed", "ok");
    // The receiver reads nothing from here on.
    let before = server.rss_kib();
    let sampler = server.rss_sampler();
    // 1 MiB a call (64 messages of 16 KiB), until the receiver is no longer in the room. Each
    // message goes to the one receiver until it is closed, which may be mid-call: it is closed
    // by its own worker while the publisher's call runs on the other.
    let mut delivered: usize = 0;
    loop {
        let reached: usize = ask(&mut publisher, &format!("flood feed 64 {MESSAGE}"))
            .parse()
            .expect("flood answers a count");
        if reached == 0 {
            break;
        }
        assert!(
            reached <= 64,
            "{reached} deliveries of 64 messages to one receiver"
        );
        delivered += reached * (MESSAGE + 1);
        assert!(
            delivered <= MAX_DELIVERED,
            "still a member after {} MiB were sent to it",
            delivered >> 20
        );
    }
    server.wait_for_log("closing a slow consumer", LOG_TIMEOUT);
    server.wait_for_close_log(idr, LOG_TIMEOUT);
    // The publisher is served on, and publishing to the now empty room costs nothing.
    for _ in 0..MORE_CALLS {
        publisher.roundtrip(&format!("flood feed 64 {MESSAGE}"), "0");
    }
    publisher.roundtrip("members feed", "");
    let max = sampler.finish();
    let grew_mib = max.saturating_sub(before) / 1024;
    assert!(
        grew_mib < 64,
        "RSS grew by {grew_mib} MiB ({before} KiB before, {max} KiB at most) while {} MiB were \
         sent to a receiver capped at 256 KiB",
        delivered >> 20
    );
    // The receiver gets some of what was sent before the close, then the end of the connection.
    let got = receiver.read_until_closed(Duration::from_secs(10));
    assert!(
        got.len() <= delivered,
        "got {} bytes of {delivered}",
        got.len()
    );
    assert!(got.iter().all(|&b| b == b'x' || b == b'\n'));
    server.signal(libc::SIGTERM);
    server.wait_exit(Duration::from_secs(10)).expect("stopped");
    let stopped = server.wait_for_log_where(LOG_TIMEOUT, "the stopped line", |l| {
        l.contains("stopped") && l.contains("slow_consumers=")
    });
    assert_eq!(
        log_field(&stopped, "slow_consumers").as_deref(),
        Some("1"),
        "{stopped}"
    );
}
