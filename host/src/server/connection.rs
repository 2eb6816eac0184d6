//! One client connection's bytes: its socket, the read buffer cut into messages by the codec,
//! the queue of framed replies, the output cap, and the close that waits for that queue to drain.
//!
//! The worker asks it for the next message and hands it replies; it never touches the buffers.
//! Modelled on mini-redis's `Connection`.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use super::stats::Close;
use crate::framing::{Codec, FrameError};

/// What one read from the socket did.
#[derive(Debug, PartialEq, Eq)]
pub enum Fill {
    /// Some bytes were buffered.
    Data,
    /// Nothing to read right now.
    WouldBlock,
    /// The client closed its sending side: no more reads.
    Eof,
}

pub struct Connection {
    stream: TcpStream,
    codec: Codec,
    /// Bytes read but not yet handed out; `consumed` bytes at its front already were.
    input: Vec<u8>,
    consumed: usize,
    /// Framed replies not yet written; `written` bytes at its front already were.
    output: Vec<u8>,
    written: usize,
    /// Unsent reply bytes above which no message is handed out and nothing is read.
    max_output: usize,
    /// The client will send nothing more (EOF), or the host reads nothing more (shutdown).
    done_reading: bool,
    /// Set once the connection must close after its output is written; says why.
    closing: Option<Close>,
    /// When a message was last handed out or a reply last written (or the connection opened).
    last_active: Instant,
    /// When the first byte of the message still being received arrived.
    partial_since: Option<Instant>,
}

/// Which time limit a connection ran past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Nothing sent, nothing to send, for `--idle-timeout`.
    Idle,
    /// A message not whole `--message-timeout` after its first byte.
    Message,
}

impl Expired {
    pub fn reason(self) -> Close {
        match self {
            Expired::Idle => Close::IdleTimeout,
            Expired::Message => Close::MessageTimeout,
        }
    }
}

/// The time limits of a connection's input (`--idle-timeout`, `--message-timeout`).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub idle: Option<Duration>,
    pub message: Option<Duration>,
}

impl Connection {
    pub fn new(stream: TcpStream, codec: Codec, max_output: usize) -> Self {
        Connection {
            stream,
            codec,
            input: Vec::new(),
            consumed: 0,
            output: Vec::new(),
            written: 0,
            max_output,
            done_reading: false,
            closing: None,
            last_active: Instant::now(),
            partial_since: None,
        }
    }

    /// Whether a time limit has passed at `now`: a message arriving too slowly, or nothing at
    /// all for too long. A connection with a reply still unsent is not idle (its client is
    /// slow to read, which the output cap bounds), nor one that is already closing.
    pub fn timed_out(&self, now: Instant, limits: Timeouts) -> Option<Expired> {
        if self.closing.is_some() {
            return None;
        }
        let over = |since: Instant, limit: Option<Duration>| {
            limit.is_some_and(|l| now.saturating_duration_since(since) > l)
        };
        if let Some(since) = self.partial_since {
            return over(since, limits.message).then_some(Expired::Message);
        }
        let idle = self.pending_output() == 0 && over(self.last_active, limits.idle);
        idle.then_some(Expired::Idle)
    }

    /// The socket, for registering it with an event loop.
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// The next whole message, or `None` when more input is needed, the output is over its cap
    /// (backpressure: the client must read first), or the connection is closing. After EOF a
    /// last partial message the framing allows (a line without `\n`, a raw read) is handed out.
    /// A message over `--max-message-bytes` is an error; the connection is then closing.
    pub fn next_message(&mut self, now: Instant) -> Result<Option<&[u8]>, FrameError> {
        if self.closing.is_some() || self.over_output_cap() {
            return Ok(None);
        }
        let rest = &self.input[self.consumed..];
        let found = match self.codec.decode(rest) {
            Ok(Some((range, used))) => Some((range, used)),
            Ok(None) if self.done_reading => self
                .codec
                .decode_at_eof(rest)
                .map(|last| (0..last.len(), rest.len())),
            Ok(None) => None,
            Err(e) => {
                self.input = Vec::new();
                self.consumed = 0;
                self.close_after_flush(Close::Oversize);
                return Err(e);
            }
        };
        let Some((range, used)) = found else {
            // Nothing is borrowed from the buffer now: a good time to drop what was handled.
            self.compact_input();
            return Ok(None);
        };
        let start = self.consumed;
        self.consumed += used;
        self.last_active = now;
        // What follows arrived by now: the next message's clock starts no later.
        self.partial_since = (self.consumed < self.input.len()).then_some(now);
        Ok(Some(&self.input[start + range.start..start + range.end]))
    }

    /// Queues `reply`, framed for the client.
    pub fn reply(&mut self, reply: &[u8]) {
        self.codec.encode(reply, &mut self.output);
    }

    /// Bytes this connection holds: input not yet handed out, and output not yet written.
    pub fn buffered(&self) -> usize {
        self.input.len() - self.consumed + self.pending_output()
    }

    /// Reply bytes queued and not yet written.
    pub fn pending_output(&self) -> usize {
        self.output.len() - self.written
    }

    /// Whether unsent output is over the cap: no message is handed out and nothing is read until
    /// the client catches up.
    pub fn over_output_cap(&self) -> bool {
        self.pending_output() > self.max_output
    }

    /// Closes the connection once its queued output is written; the first reason given stays.
    pub fn close_after_flush(&mut self, reason: Close) {
        self.closing.get_or_insert(reason);
    }

    /// Reads nothing more (shutdown): what is buffered is still handed out and answered.
    pub fn stop_reading(&mut self) {
        self.done_reading = true;
    }

    /// Whether the socket should be read now.
    pub fn wants_read(&self) -> bool {
        !self.done_reading && self.closing.is_none() && !self.over_output_cap()
    }

    /// Once everything queued is written: why the connection is over (`closing`'s reason, or
    /// `at_end` when the client or shutdown ended the reading), or `None` while it goes on.
    pub fn finished(&self, at_end: Close) -> Option<Close> {
        if self.written < self.output.len() {
            return None;
        }
        self.closing.or(self.done_reading.then_some(at_end))
    }

    /// Reads once, at most `scratch.len()` bytes (the codec's read size), into the buffer.
    /// `now` (here and below) is the worker's clock, read once per event batch: a clock read
    /// per message would cost more than the timeouts need.
    pub fn fill(&mut self, scratch: &mut [u8], now: Instant) -> io::Result<Fill> {
        let room = self.codec.read_size().min(scratch.len());
        loop {
            return match self.stream.read(&mut scratch[..room]) {
                Ok(0) => {
                    self.done_reading = true;
                    Ok(Fill::Eof)
                }
                Ok(n) => {
                    if self.consumed == self.input.len() {
                        self.partial_since = Some(now);
                    }
                    self.input.extend_from_slice(&scratch[..n]);
                    Ok(Fill::Data)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Fill::WouldBlock),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
    }

    /// Writes as much queued output as the socket takes now.
    pub fn flush(&mut self, now: Instant) -> io::Result<()> {
        while self.written < self.output.len() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n;
                    self.last_active = now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.written == self.output.len() {
            self.output.clear();
            self.written = 0;
            shrink_idle(&mut self.output);
        } else if self.written > (64 << 10) && self.written * 2 > self.output.len() {
            // Keep the buffer from growing by what was already sent.
            self.output.drain(..self.written);
            self.written = 0;
        }
        Ok(())
    }

    /// Forgets the input already handed out, keeping a partial message at the front.
    fn compact_input(&mut self) {
        if self.consumed > 0 {
            self.input.drain(..self.consumed);
            self.consumed = 0;
        }
        shrink_idle(&mut self.input);
    }
}

/// Capacity a buffer keeps between messages; one large message must not pin its size for the
/// rest of a long-lived connection (10,000 idle clients times 1 MiB would be 10 GB).
const KEEP_CAPACITY: usize = 16 << 10;

fn shrink_idle(buf: &mut Vec<u8>) {
    if buf.capacity() > 4 * KEEP_CAPACITY && buf.len() <= KEEP_CAPACITY {
        buf.shrink_to(KEEP_CAPACITY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Framing;

    /// A connection over one end of a loopback pair; the other end is the client.
    fn pair(framing: Framing, max_output: usize) -> (Connection, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let conn = Connection::new(
            TcpStream::from_std(server),
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
}
