//! Message framing: raw, line and length.

use std::time::Duration;

use crate::support::*;

fn echo_server(framing: &str) -> Server {
    Server::builder()
        .plugin(plugin("echo"))
        .args(["--framing", framing])
        .start()
}

#[test]
fn raw_framing_echoes_bytes_without_adding_a_newline() {
    let server = echo_server("raw");
    let mut c = server.connect();
    c.send(b"hello");
    let got = c.recv_exact(5, REPLY_TIMEOUT).expect("raw reply");
    assert_eq!(got, b"hello");
    // Nothing is appended to a raw reply.
    c.expect_silence(Duration::from_millis(300));
    // The connection keeps working for the next message.
    c.send(b"\x00\x01binary\xff");
    let got = c.recv_exact(9, REPLY_TIMEOUT).expect("second raw reply");
    assert_eq!(got, b"\x00\x01binary\xff");
}

#[test]
fn line_framing_appends_newline_to_reply() {
    let server = echo_server("line");
    let mut c = server.connect();
    c.send(b"x\n");
    let got = c.recv_line_bytes(REPLY_TIMEOUT).expect("line reply");
    assert_eq!(
        got, b"x\n",
        "reply must be the message plus exactly one newline"
    );
    c.expect_silence(Duration::from_millis(200));
}

#[test]
fn line_framing_is_the_default() {
    let server = Server::builder().plugin(plugin("echo")).start();
    let mut c = server.connect();
    c.send(b"one\ntwo\n");
    c.expect_line("one");
    c.expect_line("two");
}

#[test]
fn line_framing_splits_several_lines_in_one_write() {
    let server = echo_server("line");
    let mut c = server.connect();
    c.send(b"alpha\nbeta\ngamma\n");
    c.expect_line("alpha");
    c.expect_line("beta");
    c.expect_line("gamma");
    c.expect_silence(Duration::from_millis(200));
}

#[test]
fn line_framing_joins_a_line_split_across_writes() {
    let server = echo_server("line");
    let mut c = server.connect();
    c.send(b"hel");
    // Half a line is not a message yet.
    c.expect_silence(Duration::from_millis(300));
    c.send(b"lo wor");
    // The server reads this part before the rest is sent: the line spans several reads.
    server.wait_until_read(&c);
    c.send(b"ld\nnext");
    c.expect_line("hello world");
    c.expect_silence(Duration::from_millis(200));
    c.send(b"\n");
    c.expect_line("next");
}

#[test]
fn line_framing_keeps_carriage_return() {
    let server = echo_server("line");
    let mut c = server.connect();
    c.send(b"abc\r\n");
    let got = c.recv_line_bytes(REPLY_TIMEOUT).expect("line reply");
    assert_eq!(got, b"abc\r\n", "a trailing \\r is part of the message");
}

#[test]
fn length_framing_prefixes_reply() {
    let server = echo_server("length");
    let mut c = server.connect();
    c.send(&[0, 0, 0, 5]);
    c.send(b"hello");
    // Check the raw bytes on the wire, prefix included.
    let got = c.recv_exact(9, REPLY_TIMEOUT).expect("length reply");
    assert_eq!(got, b"\x00\x00\x00\x05hello");
    c.expect_silence(Duration::from_millis(200));
}

#[test]
fn length_framing_handles_pipelined_messages() {
    let server = echo_server("length");
    let mut c = server.connect();
    let mut batch = Vec::new();
    let msgs: Vec<Vec<u8>> = vec![
        b"first".to_vec(),
        b"second message".to_vec(),
        b"with\nnewline\ninside".to_vec(),
        vec![0xAB; 3000],
    ];
    for m in &msgs {
        batch.extend_from_slice(&frame(m));
    }
    c.send(&batch);
    for m in &msgs {
        let got = c.recv_frame(REPLY_TIMEOUT).expect("pipelined frame reply");
        assert_eq!(&got, m);
    }
    c.expect_silence(Duration::from_millis(200));
}

#[test]
fn length_framing_joins_prefix_and_payload_split_across_writes() {
    let server = echo_server("length");
    let mut c = server.connect();
    let f = frame(b"split payload");
    c.send(&f[..2]);
    c.expect_silence(Duration::from_millis(200));
    c.send(&f[2..7]);
    c.expect_silence(Duration::from_millis(200));
    c.send(&f[7..]);
    let got = c.recv_frame(REPLY_TIMEOUT).expect("frame reply");
    assert_eq!(got, b"split payload");
}
