//! One client connection's state: its socket, bounded input and output buffers, and its place
//! in the lifecycle (open, closing, done).

use std::io::{self, Read, Write};
use std::time::Instant;

use mio::net::TcpStream;

use crate::plugin::bindings::Connection;
use crate::plugin::ConnInstances;

/// What one read did.
pub enum ReadResult {
    /// Some bytes were appended to the input.
    Data,
    /// Nothing to read right now.
    WouldBlock,
    /// The client closed its sending side.
    Eof,
}

pub struct Conn {
    pub stream: TcpStream,
    /// What plugins are told about this connection.
    pub info: Connection,
    pub opened: Instant,
    /// Bytes read but not yet handled; `consumed` bytes at its front are already handled.
    pub input: Vec<u8>,
    pub consumed: usize,
    /// Framed replies not yet written; `written` bytes at its front are already sent.
    pub output: Vec<u8>,
    pub written: usize,
    /// The instances this connection owns under `--isolation connection`.
    pub own: ConnInstances,
    /// How many plugins of the chain accepted the connection (they get `on-disconnect`).
    pub connected: usize,
    pub messages: u64,
    pub errors: u64,
    /// The client will send nothing more (EOF), or the host will read nothing more (shutdown).
    pub done_reading: bool,
    /// Set once the connection must close after its output is written; says why.
    pub closing: Option<&'static str>,
}

impl Conn {
    pub fn new(stream: TcpStream, info: Connection) -> Self {
        Conn {
            stream,
            info,
            opened: Instant::now(),
            input: Vec::new(),
            consumed: 0,
            output: Vec::new(),
            written: 0,
            own: ConnInstances::default(),
            connected: 0,
            messages: 0,
            errors: 0,
            done_reading: false,
            closing: None,
        }
    }

    pub fn pending_output(&self) -> usize {
        self.output.len() - self.written
    }

    pub fn close_after_flush(&mut self, reason: &'static str) {
        if self.closing.is_none() {
            self.closing = Some(reason);
        }
    }

    /// Reads once into the spare room of `input`, at most `max` new bytes.
    pub fn read_some(&mut self, scratch: &mut [u8], max: usize) -> io::Result<ReadResult> {
        let room = max.min(scratch.len());
        loop {
            return match self.stream.read(&mut scratch[..room]) {
                Ok(0) => Ok(ReadResult::Eof),
                Ok(n) => {
                    self.input.extend_from_slice(&scratch[..n]);
                    Ok(ReadResult::Data)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(ReadResult::WouldBlock),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
    }

    /// Writes as much pending output as the socket takes now.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.written < self.output.len() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
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

    /// Forgets the input already handled, keeping a partial message at the front.
    pub fn compact_input(&mut self) {
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
