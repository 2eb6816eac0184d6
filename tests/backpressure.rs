//! A client that writes without reading must not make the server buffer without bound.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use crate::support::*;

const LINE_LEN: usize = 1024;

fn numbered_line(i: usize) -> Vec<u8> {
    let mut l = format!("{i:010} ").into_bytes();
    l.resize(LINE_LEN - 1, b'x');
    l.push(b'\n');
    l
}

#[test]
fn writer_that_never_reads_is_throttled_and_others_are_served() {
    let server = Server::builder().plugin(plugin("echo")).start();
    // Baseline after one served request (instances and buffers warmed up).
    let mut other = server.connect();
    other.send_line("warmup");
    other.expect_line("warmup");
    let baseline = server.rss_kib();
    let sampler = server.rss_sampler();

    let mut flood = server.connect();
    flood
        .stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let limit: usize = 200 << 20;
    let mut written = 0usize;
    let mut next_line = 0usize;
    let mut chunk = Vec::new();
    let started = Instant::now();
    let mut blocked = false;
    'outer: while written < limit {
        chunk.clear();
        for _ in 0..64 {
            chunk.extend_from_slice(&numbered_line(next_line));
            next_line += 1;
        }
        let mut off = 0;
        while off < chunk.len() {
            match flood.stream.write(&chunk[off..]) {
                Ok(n) => {
                    off += n;
                    written += n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    blocked = true;
                    break 'outer;
                }
                Err(e) => panic!("flood write failed after {written} bytes: {e}"),
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "flooding took too long ({written} bytes written)"
        );
    }
    assert!(
        blocked,
        "wrote {written} bytes without the server ever pushing back"
    );

    // While the flooder is stuck, others are served.
    let t = Instant::now();
    other.send_line("still served");
    other.expect_line("still served");
    assert!(t.elapsed() < Duration::from_secs(2));
    let mut fresh = server.connect();
    fresh.send_line("fresh");
    fresh.expect_line("fresh");

    let max_rss = sampler.finish();
    eprintln!(
        "backpressure: blocked after {written} bytes in {:?}; RSS baseline {baseline} KiB, \
         max {max_rss} KiB",
        started.elapsed()
    );
    assert!(
        max_rss < baseline + 150 * 1024,
        "server RSS went from {baseline} KiB to {max_rss} KiB while a client wrote \
         {written} bytes without reading"
    );

    // Once the client reads, the server resumes: every complete line is echoed, in order.
    let complete = written / LINE_LEN;
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..complete {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = flood
            .recv_line_bytes(left.max(Duration::from_millis(100)))
            .unwrap_or_else(|e| {
                panic!("reply {i} of {complete} (after {written} bytes written): {e:?}")
            });
        if got != numbered_line(i) {
            panic!(
                "reply {i} out of order or corrupted: {:?}",
                String::from_utf8_lossy(&got[..got.len().min(40)])
            );
        }
    }
    // The partial last line has no reply (yet).
    flood.expect_silence(Duration::from_millis(200));
}
