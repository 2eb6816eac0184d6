//! The connection's buffers and clocks against a real loopback socket.

use std::io::Write;
use std::time::{Duration, Instant};

use super::*;
use crate::config::Framing;

/// A connection over one end of a loopback pair; the other end is the client.
fn pair(framing: Framing, max_output: usize) -> (Connection, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    server.set_nonblocking(true).unwrap();
    let conn = Connection::new(
        Transport::plain(TcpStream::from_std(server)),
        Codec::new(framing, 16),
        max_output,
    );
    (conn, client)
}

/// Reads until the client's bytes (or, with `eof`, its close) have arrived.
fn fill_until(conn: &mut Connection, eof: bool) {
    let mut scratch = vec![0; 64 << 10];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        match conn.fill(&mut scratch, Instant::now()).unwrap() {
            Fill::Eof if eof => return,
            Fill::Data if !eof => return,
            _ => std::thread::yield_now(),
        }
    }
    panic!("the client's bytes never arrived");
}

#[test]
fn messages_come_out_whole_and_the_last_line_at_eof() {
    let (mut conn, mut client) = pair(Framing::Line, 1 << 20);
    client.write_all(b"one\ntwo\nthr").unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    loop {
        while let Some(m) = conn.next_message(Instant::now()).unwrap() {
            got.push(m.to_vec());
        }
        if conn.finished(Close::ClientClosed).is_some() {
            break;
        }
        let mut scratch = vec![0; 1024];
        if conn.fill(&mut scratch, Instant::now()).unwrap() == Fill::WouldBlock {
            std::thread::yield_now();
        }
    }
    assert_eq!(got, [b"one".to_vec(), b"two".to_vec(), b"thr".to_vec()]);
    assert_eq!(
        conn.finished(Close::ClientClosed),
        Some(Close::ClientClosed)
    );
}

#[test]
fn no_message_is_handed_out_while_the_output_is_over_its_cap() {
    let (mut conn, mut client) = pair(Framing::Line, 4);
    client.write_all(b"a\nb\n").unwrap();
    fill_until(&mut conn, false);
    assert_eq!(conn.next_message(Instant::now()).unwrap(), Some(&b"a"[..]));
    conn.reply(b"12345");
    assert!(conn.over_output_cap());
    assert!(!conn.wants_read());
    assert_eq!(
        conn.next_message(Instant::now()).unwrap(),
        None,
        "held back"
    );
    conn.flush(Instant::now()).unwrap();
    assert!(!conn.over_output_cap());
    assert_eq!(conn.next_message(Instant::now()).unwrap(), Some(&b"b"[..]));
}

#[test]
fn a_partial_message_times_out_and_a_quiet_connection_goes_idle() {
    let limits = Timeouts {
        idle: Some(Duration::from_secs(10)),
        message: Some(Duration::from_secs(1)),
        write: None,
    };
    let (mut conn, mut client) = pair(Framing::Line, 1 << 20);
    let start = Instant::now();
    assert_eq!(conn.timed_out(start + Duration::from_secs(9), limits), None);
    assert_eq!(
        conn.timed_out(start + Duration::from_secs(11), limits),
        Some(Expired::Idle)
    );
    client.write_all(b"half a li").unwrap();
    fill_until(&mut conn, false);
    let read = Instant::now();
    assert_eq!(
        conn.timed_out(read + Duration::from_millis(900), limits),
        None
    );
    assert_eq!(
        conn.timed_out(read + Duration::from_secs(2), limits),
        Some(Expired::Message),
        "a partial message is on the message clock, not the idle one"
    );
    client.write_all(b"ne\n").unwrap();
    fill_until(&mut conn, false);
    assert_eq!(
        conn.next_message(Instant::now()).unwrap(),
        Some(&b"half a line"[..])
    );
    let done = Instant::now();
    assert_eq!(conn.timed_out(done + Duration::from_secs(2), limits), None);
    conn.reply(b"an answer the client does not read");
    assert_eq!(
        conn.timed_out(done + Duration::from_secs(60), limits),
        None,
        "a reply waiting to be written is not idleness"
    );
}

#[test]
fn a_connection_is_quiet_after_its_last_message_and_not_while_a_reply_waits() {
    let (mut conn, mut client) = pair(Framing::Line, 1 << 20);
    let limit = Duration::from_secs(1);
    client.write_all(b"ping\n").unwrap();
    fill_until(&mut conn, false);
    let handled = Instant::now();
    assert_eq!(conn.next_message(handled).unwrap(), Some(&b"ping"[..]));
    assert!(!conn.quiet_for(handled + Duration::from_millis(900), limit));
    assert!(conn.quiet_for(handled + Duration::from_secs(2), limit));
    conn.reply(b"pong");
    assert!(
        !conn.quiet_for(handled + Duration::from_secs(2), limit),
        "a reply still to be written is not quiet"
    );
}

#[test]
fn an_oversize_message_closes_after_the_queued_replies() {
    let (mut conn, mut client) = pair(Framing::Line, 1 << 20);
    client.write_all(&[b'x'; 40]).unwrap();
    conn.reply(b"earlier");
    fill_until(&mut conn, false);
    assert!(conn.next_message(Instant::now()).is_err());
    assert_eq!(conn.next_message(Instant::now()).unwrap(), None);
    assert_eq!(
        conn.finished(Close::ClientClosed),
        None,
        "the reply is not written yet"
    );
    conn.flush(Instant::now()).unwrap();
    assert_eq!(conn.finished(Close::ClientClosed), Some(Close::Oversize));
}

#[test]
fn output_the_client_takes_none_of_times_out_and_kernel_progress_restarts_the_clock() {
    let limits = Timeouts {
        idle: None,
        message: None,
        write: Some(Duration::from_secs(1)),
    };
    let (mut conn, mut client) = pair(Framing::Raw, 64 << 20);
    // More than loopback's buffers take: some of it waits in ours.
    conn.reply(&vec![b'x'; 16 << 20]);
    conn.flush(Instant::now()).unwrap();
    assert!(conn.pending_output() > 0, "the kernel took 16 MiB at once");
    let stalled = Instant::now();
    assert_eq!(conn.timed_out(stalled, limits), None);
    assert!(
        !conn.kernel_took_bytes(stalled),
        "the first look is the baseline"
    );
    assert_eq!(
        conn.timed_out(stalled + Duration::from_secs(2), limits),
        Some(Expired::Write)
    );
    // The client reads: the kernel's queue shrinks though ours has not moved yet.
    let mut sink = vec![0; 1 << 20];
    let mut taken = 0;
    while taken < (1 << 20) {
        taken += std::io::Read::read(&mut client, &mut sink).unwrap();
    }
    let later = Instant::now();
    assert!(conn.kernel_took_bytes(later));
    assert_eq!(
        conn.timed_out(later + Duration::from_millis(500), limits),
        None
    );
    assert_eq!(
        conn.timed_out(later + Duration::from_secs(2), limits),
        Some(Expired::Write)
    );
}
