//! A room member that never reads while another client publishes a lot to the room: the host
//! closes it as a slow consumer once more than `--max-output-bytes` waits for it, the publisher
//! is served on, and the server's memory stays bounded.

use std::time::Duration;

use super::{ask, statetest, whoami};
use crate::support::*;

/// Publishing goes on this long after the receiver is gone, to show memory does not grow.
const MORE_CALLS: usize = 20;

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
    // 1 MiB a call (64 messages of 16 KiB): far more than the socket buffers and the cap.
    let mut sent_mib: usize = 0;
    loop {
        let reached = ask(&mut publisher, "flood feed 64 16384");
        if reached == "0" {
            break;
        }
        assert_eq!(reached, "64", "each message went to the one receiver");
        sent_mib += 1;
        assert!(
            sent_mib <= 256,
            "still a member after {sent_mib} MiB sent to it"
        );
    }
    server.wait_for_log("closing a slow consumer", LOG_TIMEOUT);
    server.wait_for_close_log(idr, LOG_TIMEOUT);
    // The publisher is served on, and publishing to the now empty room costs nothing.
    for _ in 0..MORE_CALLS {
        publisher.roundtrip("flood feed 64 16384", "0");
    }
    publisher.roundtrip("members feed", "");
    let max = sampler.finish();
    let grew_mib = max.saturating_sub(before) / 1024;
    assert!(
        grew_mib < 64,
        "RSS grew by {grew_mib} MiB ({before} KiB before, {max} KiB at most) while {sent_mib} MiB \
         were published to a receiver capped at 256 KiB"
    );
    // The receiver gets what was written before the close, then the end of the connection.
    let got = receiver.read_until_closed(Duration::from_secs(10));
    assert!(got.len() < sent_mib << 20, "got {} bytes", got.len());
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
