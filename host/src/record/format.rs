//! The capture format, version 1 (docs/record.md): a 16-byte file header, then one record per
//! event, each a fixed 21-byte head and its payload. Binary and length-prefixed, so any bytes
//! round-trip and a file cut short by a crash is read up to its last whole record.

use std::io::{self, Write};

/// The first bytes of every capture file.
pub const MAGIC: &[u8; 6] = b"SPCAP\0";
/// The format version this host writes and reads.
pub const VERSION: u16 = 1;
/// Header: magic, version (u16 LE), the server run's id (u64 LE, its start in µs since 1970).
pub const HEADER_LEN: usize = 16;
/// Record head: kind (u8), connection id (u64 LE), time in µs since 1970 (u64 LE), payload
/// length (u32 LE).
const HEAD_LEN: usize = 21;

/// What happened on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The connection opened; the client's address.
    Connect { peer: String },
    /// A greeting the chain sent at connect.
    Greeting(Vec<u8>),
    /// A whole message from the client, its framing removed.
    Message(Vec<u8>),
    /// The chain's reply to the message before it.
    Reply(Vec<u8>),
    /// The chain gave no reply to the message before it.
    NoReply,
    /// The chain failed on the message before it; why.
    Failed(String),
    /// The connection closed; why.
    Close { reason: String },
}

impl Event {
    /// The bytes it carries (what the recording queue counts).
    pub fn payload_len(&self) -> usize {
        match self {
            Event::Connect { peer } => peer.len(),
            Event::Greeting(b) | Event::Message(b) | Event::Reply(b) => b.len(),
            Event::NoReply => 0,
            Event::Failed(why) => why.len(),
            Event::Close { reason } => reason.len(),
        }
    }
}

/// One event of one connection, and when it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub conn: u64,
    pub at_us: u64,
    pub event: Event,
}

/// Why a capture file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("not a sandport capture (it does not start with the SPCAP header)")]
    NotCapture,
    #[error("capture format version {0}; this sandport reads version {VERSION}")]
    Version(u16),
    #[error("unknown record kind {kind} at byte {offset}")]
    Kind { kind: u8, offset: usize },
}

/// A capture file's contents.
#[derive(Debug)]
pub struct Capture {
    /// Which server run wrote it (connection ids are unique within a run).
    pub run: u64,
    pub records: Vec<Record>,
    /// Whether it ended in the middle of a record (the writer was killed).
    pub cut_short: bool,
}

pub fn write_header(out: &mut impl Write, run: u64) -> io::Result<()> {
    out.write_all(MAGIC)?;
    out.write_all(&VERSION.to_le_bytes())?;
    out.write_all(&run.to_le_bytes())
}

/// Writes one record; returns how many bytes it took.
pub fn write_record(out: &mut impl Write, r: &Record) -> io::Result<usize> {
    let (kind, payload): (u8, &[u8]) = match &r.event {
        Event::Connect { peer } => (1, peer.as_bytes()),
        Event::Greeting(b) => (2, b),
        Event::Message(b) => (3, b),
        Event::Reply(b) => (4, b),
        Event::NoReply => (5, &[]),
        Event::Failed(why) => (6, why.as_bytes()),
        Event::Close { reason } => (7, reason.as_bytes()),
    };
    let mut head = [0u8; HEAD_LEN];
    head[0] = kind;
    head[1..9].copy_from_slice(&r.conn.to_le_bytes());
    head[9..17].copy_from_slice(&r.at_us.to_le_bytes());
    // Messages and replies are capped far below 4 GiB (--max-message-bytes, --max-reply-bytes).
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    head[17..21].copy_from_slice(&len.to_le_bytes());
    out.write_all(&head)?;
    out.write_all(&payload[..len as usize])?;
    Ok(HEAD_LEN + len as usize)
}

/// Reads a whole capture file.
pub fn read(bytes: &[u8]) -> Result<Capture, FormatError> {
    if bytes.len() < HEADER_LEN || &bytes[..6] != MAGIC {
        return Err(FormatError::NotCapture);
    }
    let version = u16::from_le_bytes([bytes[6], bytes[7]]);
    if version != VERSION {
        return Err(FormatError::Version(version));
    }
    let run = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let mut records = Vec::new();
    let mut at = HEADER_LEN;
    while at + HEAD_LEN <= bytes.len() {
        let head = &bytes[at..at + HEAD_LEN];
        let len = u32::from_le_bytes(head[17..21].try_into().expect("4 bytes")) as usize;
        let Some(payload) = bytes.get(at + HEAD_LEN..at + HEAD_LEN + len) else {
            break;
        };
        let text = || String::from_utf8_lossy(payload).into_owned();
        let event = match head[0] {
            1 => Event::Connect { peer: text() },
            2 => Event::Greeting(payload.to_vec()),
            3 => Event::Message(payload.to_vec()),
            4 => Event::Reply(payload.to_vec()),
            5 => Event::NoReply,
            6 => Event::Failed(text()),
            7 => Event::Close { reason: text() },
            kind => return Err(FormatError::Kind { kind, offset: at }),
        };
        records.push(Record {
            conn: u64::from_le_bytes(head[1..9].try_into().expect("8 bytes")),
            at_us: u64::from_le_bytes(head[9..17].try_into().expect("8 bytes")),
            event,
        });
        at += HEAD_LEN + len;
    }
    Ok(Capture {
        run,
        records,
        cut_short: at != bytes.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        let events = [
            Event::Connect {
                peer: "127.0.0.1:5000".into(),
            },
            Event::Greeting(b"hi\n".to_vec()),
            Event::Message(vec![0, 255, 10, 13]),
            Event::Reply(Vec::new()),
            Event::Message(b"x".to_vec()),
            Event::NoReply,
            Event::Message(b"y".to_vec()),
            Event::Failed("trap: unreachable".into()),
            Event::Close {
                reason: "client closed".into(),
            },
        ];
        (events.into_iter().enumerate())
            .map(|(i, event)| Record {
                conn: 7,
                at_us: 1_700_000_000_000_000 + i as u64,
                event,
            })
            .collect()
    }

    fn encode(records: &[Record]) -> Vec<u8> {
        let mut out = Vec::new();
        write_header(&mut out, 42).unwrap();
        for r in records {
            write_record(&mut out, r).unwrap();
        }
        out
    }

    #[test]
    fn every_event_round_trips_with_any_bytes() {
        let records = sample();
        let c = read(&encode(&records)).unwrap();
        assert_eq!(c.run, 42);
        assert_eq!(c.records, records);
        assert!(!c.cut_short);
    }

    #[test]
    fn a_file_cut_in_a_record_keeps_the_whole_ones_and_says_so() {
        let records = sample();
        let bytes = encode(&records);
        let c = read(&bytes[..bytes.len() - 3]).unwrap();
        assert_eq!(c.records, records[..records.len() - 1]);
        assert!(c.cut_short);
    }

    #[test]
    fn other_files_and_versions_are_refused() {
        assert!(matches!(
            read(b"hello world, not a capture"),
            Err(FormatError::NotCapture)
        ));
        let mut v2 = encode(&[]);
        v2[6] = 2;
        assert!(matches!(read(&v2), Err(FormatError::Version(2))));
        let mut bad = encode(&sample()[..1]);
        bad[HEADER_LEN] = 99;
        assert!(matches!(
            read(&bad),
            Err(FormatError::Kind { kind: 99, .. })
        ));
    }
}
