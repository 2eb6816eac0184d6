//! One client connection's bytes: its transport (the socket, or TLS on it), the read buffer cut
//! into messages by the codec, the queue of framed replies, the output cap, and the close that
//! waits for that queue to drain.
//!
//! The worker asks it for the next message and hands it replies; it never touches the buffers.
//! Modelled on mini-redis's `Connection`.

use std::io;
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use super::stats::Close;
use super::transport::Transport;
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
    /// Plain TCP, or TLS whose decrypted stream is what the codec sees.
    transport: Transport,
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
    /// Since when queued output has waited with the client taking none of it.
    stalled_since: Option<Instant>,
    /// The kernel's unsent bytes on the socket when last looked at while stalled: the client
    /// may be taking bytes from the kernel's buffer while ours does not move.
    kernel_unsent: Option<usize>,
}

/// Which time limit a connection ran past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Nothing sent, nothing to send, for `--idle-timeout`.
    Idle,
    /// A message not whole `--message-timeout` after its first byte.
    Message,
    /// Output waiting, and none of it taken by the client, for `--write-timeout`.
    Write,
}

impl Expired {
    pub fn reason(self) -> Close {
        match self {
            Expired::Idle => Close::IdleTimeout,
            Expired::Message => Close::MessageTimeout,
            Expired::Write => Close::WriteTimeout,
        }
    }
}

/// The time limits of a connection (`--idle-timeout`, `--message-timeout`, `--write-timeout`).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub idle: Option<Duration>,
    pub message: Option<Duration>,
    pub write: Option<Duration>,
}

impl Connection {
    pub fn new(transport: Transport, codec: Codec, max_output: usize) -> Self {
        Connection {
            transport,
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
            stalled_since: None,
            kernel_unsent: None,
        }
    }

    /// Whether the connection has been quiet (no message handled, nothing written) for longer
    /// than `limit` at `now`, with nothing waiting to go out.
    pub fn quiet_for(&self, now: Instant, limit: Duration) -> bool {
        self.pending_output() == 0
            && !self.transport.holds_output()
            && now.saturating_duration_since(self.last_active) > limit
    }

    /// Whether a time limit has passed at `now`: output the client takes none of, a message
    /// arriving too slowly, or nothing at all for too long. A connection with a reply still
    /// unsent is not idle (the write clock is its limit), nor one that is closing (it waits
    /// only for its output, on the write clock too).
    pub fn timed_out(&self, now: Instant, limits: Timeouts) -> Option<Expired> {
        let over = |since: Instant, limit: Option<Duration>| {
            limit.is_some_and(|l| now.saturating_duration_since(since) > l)
        };
        if let Some(since) = self.stalled_since {
            if over(since, limits.write) {
                return Some(Expired::Write);
            }
        }
        if self.closing.is_some() {
            return None;
        }
        if let Some(since) = self.partial_since {
            return over(since, limits.message).then_some(Expired::Message);
        }
        let idle = limits.idle.is_some_and(|l| self.quiet_for(now, l));
        idle.then_some(Expired::Idle)
    }

    /// While output waits: whether the client took bytes from the kernel's send buffer since
    /// the last look, which restarts the write clock. Our queue moves only when the kernel's
    /// buffer has room for a good part of it, and a slow reader is not a deaf one.
    pub fn kernel_took_bytes(&mut self, now: Instant) -> bool {
        if self.stalled_since.is_none() {
            return false;
        }
        let unsent = unsent_in_kernel(self.transport.tcp());
        let took =
            matches!((self.kernel_unsent, unsent), (Some(before), Some(now)) if now < before);
        self.kernel_unsent = unsent;
        if took {
            self.stalled_since = Some(now);
        }
        took
    }

    /// The socket, for registering it with an event loop.
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        self.transport.tcp_mut()
    }

    /// The connection is being closed: a TLS session says so to its client (close_notify).
    pub fn end_session(&mut self) {
        self.transport.close_notify();
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

    /// Bytes this connection holds: input not yet handed out, and the memory of output not
    /// yet written (its buffer's capacity: what the process pays for it).
    pub fn buffered(&self) -> usize {
        let output = if self.pending_output() > 0 {
            self.output.capacity()
        } else {
            0
        };
        self.input.len() - self.consumed + output
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
        if self.written < self.output.len() || self.transport.holds_output() {
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
            return match self.transport.read(&mut scratch[..room]) {
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

    /// Writes as much queued output as the socket takes now. Output left over starts the
    /// write clock, unless it was already running and the client took nothing.
    /// Over TLS, records rustls still holds count as waiting output too: they go first.
    pub fn flush(&mut self, now: Instant) -> io::Result<()> {
        let mut took_some = self.transport.push()?;
        if took_some {
            self.last_active = now;
        }
        while self.written < self.output.len() {
            match self.transport.write(&self.output[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n;
                    self.last_active = now;
                    took_some = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if took_some {
            self.kernel_unsent = None;
        }
        if self.written == self.output.len() {
            self.output.clear();
            self.written = 0;
            shrink_idle(&mut self.output);
            if !self.transport.holds_output() {
                self.stalled_since = None;
                return Ok(());
            }
        }
        if took_some || self.stalled_since.is_none() {
            self.stalled_since = Some(now);
        }
        if self.written > (64 << 10) && self.written * 2 > self.output.len() {
            // Keep the buffer from growing by what was already sent, and from holding a large
            // reply's memory for a small tail the client has not taken yet.
            self.output.drain(..self.written);
            self.written = 0;
            if self.output.capacity() > 2 * self.output.len().max(KEEP_CAPACITY) {
                self.output.shrink_to(self.output.len().max(KEEP_CAPACITY));
            }
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

/// Bytes the kernel holds in `stream`'s send buffer, not yet taken by the client.
#[cfg(target_os = "linux")]
fn unsent_in_kernel(stream: &TcpStream) -> Option<usize> {
    use std::os::fd::AsRawFd;
    let mut unsent: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one c_int for a socket we own.
    let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut unsent) };
    (rc == 0).then(|| usize::try_from(unsent).unwrap_or(0))
}

#[cfg(not(target_os = "linux"))]
fn unsent_in_kernel(_: &TcpStream) -> Option<usize> {
    None
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
mod tests;
