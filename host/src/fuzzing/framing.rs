//! The `framing` fuzz target: the codec in every mode with any size cap, fed any byte stream cut
//! into any reads, against the whole stream at once and a model of each framing written from
//! its definition; and replies encoded, then decoded.

use super::Input;
use crate::config::Framing;
use crate::framing::{Codec, FrameError};

/// What decoding a stream gave, read the way a connection reads it (`server/connection.rs`):
/// after each read every whole message is taken, an error ends the input, and at EOF the
/// framing may hand out a last partial message.
#[derive(Debug, Default, PartialEq, Eq)]
struct Outcome {
    messages: Vec<Vec<u8>>,
    error: Option<FrameError>,
    /// The message `decode_at_eof` handed out.
    last: Option<Vec<u8>>,
    /// Bytes left undecoded at EOF.
    leftover: usize,
}

/// Checks one case: `[mode, max, n, n chunk lengths..., stream...]` (see [`max_of`]).
pub fn framing(data: &[u8]) {
    let mut input = Input(data);
    let framing = [Framing::Raw, Framing::Line, Framing::Length][input.u8() as usize % 3];
    let max = max_of(&mut input);
    let n = input.u8() as usize % 32;
    let lengths = input.bytes(n);
    let stream = input.rest();
    let codec = Codec::new(framing, max);

    let read_size = codec.read_size();
    assert!(read_size <= 64 << 10, "a read is at most 64 KiB");
    if framing == Framing::Raw {
        assert_eq!(
            read_size,
            max.min(64 << 10),
            "a raw read is capped by the max"
        );
    }
    let chunks = cut(stream, lengths, framing, read_size);
    let whole = feed(&codec, [stream]);
    let chunked = feed(&codec, chunks.iter().copied());
    match framing {
        Framing::Raw => {
            // Each read is a message, whatever it holds.
            let reads: Vec<Vec<u8>> = chunks
                .iter()
                .filter(|c| !c.is_empty())
                .map(|c| c.to_vec())
                .collect();
            assert_eq!(chunked.messages, reads);
            assert_eq!(
                (&chunked.error, &chunked.last, chunked.leftover),
                (&None, &None, 0)
            );
            let all: Vec<Vec<u8>> = [stream]
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| s.to_vec())
                .collect();
            assert_eq!(whole.messages, all);
        }
        Framing::Line | Framing::Length => {
            assert_eq!(
                whole,
                model(framing, max, stream),
                "whole stream against the model"
            );
            assert_same(&whole, &chunked);
        }
    }
    round_trip(&codec, framing, max, stream);
}

/// The size cap: one byte for the small ones most cases need, or one of the extremes.
fn max_of(input: &mut Input) -> usize {
    match input.u8() {
        0xFF => usize::MAX,
        0xFE => u32::MAX as usize,
        0xF0..=0xFD => input.u32() as usize,
        small => small as usize,
    }
}

/// `stream` cut into reads of the given lengths (cycled; a 0 is an empty read), each at most
/// what a raw connection reads at once.
fn cut<'a>(stream: &'a [u8], lengths: &[u8], framing: Framing, read_size: usize) -> Vec<&'a [u8]> {
    let mut lengths: Vec<usize> = lengths.iter().map(|&l| l as usize).collect();
    if lengths.iter().all(|&l| l == 0) {
        lengths.push(1);
    }
    let cap = if framing == Framing::Raw {
        read_size.max(1)
    } else {
        usize::MAX
    };
    let mut chunks = Vec::new();
    let mut rest = stream;
    for len in lengths.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at((*len).min(cap).min(rest.len()));
        chunks.push(chunk);
        rest = tail;
    }
    chunks
}

/// Decodes `reads` one after the other, as a connection does.
fn feed<'a>(codec: &Codec, reads: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
    let mut out = Outcome::default();
    let (mut buf, mut consumed) = (Vec::new(), 0);
    for read in reads {
        buf.extend_from_slice(read);
        loop {
            let rest = &buf[consumed..];
            match codec.decode(rest) {
                Ok(Some((range, used))) => {
                    assert!(used > 0, "a message uses up at least one byte");
                    assert!(range.start <= range.end && range.end <= used && used <= rest.len());
                    out.messages.push(rest[range].to_vec());
                    consumed += used;
                }
                Ok(None) => break,
                Err(e) => {
                    out.error = Some(e);
                    return out;
                }
            }
        }
    }
    let rest = &buf[consumed..];
    out.last = codec.decode_at_eof(rest).map(<[u8]>::to_vec);
    out.leftover = rest.len();
    out
}

/// Line and length framing from their definitions, for the whole stream at once.
fn model(framing: Framing, max: usize, mut rest: &[u8]) -> Outcome {
    let mut out = Outcome::default();
    let too_large = |size: usize| FrameError::TooLarge {
        size: size as u64,
        max,
    };
    loop {
        if framing == Framing::Line {
            match rest.iter().position(|&b| b == b'\n') {
                Some(end) if end <= max => {
                    out.messages.push(rest[..end].to_vec());
                    rest = &rest[end + 1..];
                    continue;
                }
                // A line over the cap fails once the cap is exceeded, before its end is seen.
                Some(_) => out.error = Some(too_large(rest.len())),
                None if rest.len() > max => out.error = Some(too_large(rest.len())),
                None => {
                    out.last = (!rest.is_empty()).then(|| rest.to_vec());
                    out.leftover = rest.len();
                }
            }
            return out;
        }
        let Some(prefix) = rest.get(..4) else { break };
        let len = u32::from_be_bytes(prefix.try_into().expect("4 bytes")) as usize;
        if len > max {
            out.error = Some(too_large(len));
            return out;
        }
        let Some(body) = rest.get(4..4 + len) else {
            break;
        };
        out.messages.push(body.to_vec());
        rest = &rest[4 + len..];
    }
    out.leftover = rest.len();
    out
}

/// The same messages and decisions whatever the reads; only a line's reported size may differ,
/// as it is what was buffered when the cap was passed (never more than the whole stream's).
fn assert_same(whole: &Outcome, chunked: &Outcome) {
    assert_eq!(
        whole.messages, chunked.messages,
        "messages depend on the reads"
    );
    match (&whole.error, &chunked.error) {
        (None, None) => {
            assert_eq!(
                (&whole.last, whole.leftover),
                (&chunked.last, chunked.leftover)
            );
        }
        (
            Some(FrameError::TooLarge { size: w, max }),
            Some(FrameError::TooLarge { size: c, max: m }),
        ) => {
            assert_eq!(max, m);
            assert!(
                *c as u128 > *m as u128 && c <= w,
                "reported size {c} of {w}, max {m}"
            );
        }
        (w, c) => panic!("whole stream: {w:?}, in reads: {c:?}"),
    }
}

/// A reply encoded, then decoded as a client of the same framing would.
fn round_trip(codec: &Codec, framing: Framing, max: usize, reply: &[u8]) {
    let mut out = b"before".to_vec();
    codec.encode(reply, &mut out);
    assert_eq!(&out[..6], b"before", "encode only appends");
    let out = &out[6..];
    match framing {
        Framing::Raw => assert_eq!(out, reply),
        Framing::Line => {
            let body = reply.strip_suffix(b"\n").unwrap_or(reply);
            assert_eq!((&out[..body.len()], &out[body.len()..]), (body, &b"\n"[..]));
            let got = feed(codec, [out]);
            if got.error.is_none() {
                assert_eq!((got.last, got.leftover), (None, 0), "a reply ends its line");
                assert_eq!(got.messages.join(&b'\n'), body);
            }
            if !body.contains(&b'\n') && body.len() <= max {
                assert_eq!(got.messages, [body]);
            }
        }
        Framing::Length => {
            assert_eq!(out[..4], (reply.len() as u32).to_be_bytes());
            assert_eq!(&out[4..], reply);
            let expected = if reply.len() <= max {
                Ok(Some((4..4 + reply.len(), out.len())))
            } else {
                Err(FrameError::TooLarge {
                    size: reply.len() as u64,
                    max,
                })
            };
            assert_eq!(codec.decode(out), expected);
        }
    }
}
