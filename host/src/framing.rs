//! The wire format of messages both ways: cutting a byte stream into messages (raw, line,
//! length-prefixed) and framing replies, with the message size cap applied before buffering.

use crate::config::Framing;

/// Why a connection's input cannot be framed; the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("message of {size} bytes is larger than --max-message-bytes {max}")]
    TooLarge { size: u64, max: usize },
}

/// Decodes buffered input into whole messages (never holding more than one message's worth)
/// and encodes replies, for one `--framing` mode.
#[derive(Debug, Clone, Copy)]
pub struct Codec {
    framing: Framing,
    max: usize,
}

/// Length of the `length` framing's prefix.
const PREFIX: usize = 4;

impl Codec {
    pub fn new(framing: Framing, max_message_bytes: usize) -> Self {
        Codec {
            framing,
            max: max_message_bytes,
        }
    }

    /// How many bytes one read may add to the buffer: a raw message is one read, so it caps it.
    pub fn read_size(&self) -> usize {
        match self.framing {
            Framing::Raw => self.max.min(64 << 10),
            Framing::Line | Framing::Length => 64 << 10,
        }
    }

    /// Finds the next whole message at the start of `buf`. Returns the message's range in `buf`
    /// and how many bytes it used up (frame included), or `None` when more input is needed.
    /// Fails as soon as the buffered data shows the message will be too large.
    pub fn decode(
        &self,
        buf: &[u8],
    ) -> Result<Option<(std::ops::Range<usize>, usize)>, FrameError> {
        match self.framing {
            Framing::Raw => {
                if buf.is_empty() {
                    Ok(None)
                } else {
                    Ok(Some((0..buf.len(), buf.len())))
                }
            }
            Framing::Line => {
                // Only the first max+1 bytes can hold a newline of an acceptable line (any
                // max: the codec is public, and `usize::MAX + 1` would wrap to an empty window).
                let window = &buf[..buf.len().min(self.max.saturating_add(1))];
                match window.iter().position(|&b| b == b'\n') {
                    Some(end) => Ok(Some((0..end, end + 1))),
                    None if buf.len() > self.max => Err(FrameError::TooLarge {
                        size: buf.len() as u64,
                        max: self.max,
                    }),
                    None => Ok(None),
                }
            }
            Framing::Length => {
                let Some(prefix) = buf.get(..PREFIX) else {
                    return Ok(None);
                };
                let len = u32::from_be_bytes(prefix.try_into().expect("4 bytes")) as usize;
                if len > self.max {
                    return Err(FrameError::TooLarge {
                        size: len as u64,
                        max: self.max,
                    });
                }
                if buf.len() < PREFIX + len {
                    return Ok(None);
                }
                Ok(Some((PREFIX..PREFIX + len, PREFIX + len)))
            }
        }
    }

    /// What is left in the buffer when the client closes: a last line without its `\n` is still
    /// a message; a partial length frame is not.
    pub fn decode_at_eof<'a>(&self, buf: &'a [u8]) -> Option<&'a [u8]> {
        match self.framing {
            Framing::Line if !buf.is_empty() && buf.len() <= self.max => Some(buf),
            Framing::Raw if !buf.is_empty() => Some(buf),
            _ => None,
        }
    }

    /// Appends `reply` to `out`, framed for the client.
    pub fn encode(&self, reply: &[u8], out: &mut Vec<u8>) {
        match self.framing {
            Framing::Raw => out.extend_from_slice(reply),
            Framing::Line => {
                out.extend_from_slice(reply);
                if reply.last() != Some(&b'\n') {
                    out.push(b'\n');
                }
            }
            Framing::Length => {
                // Replies come from a 32-bit instance, so they always fit the prefix.
                let len = u32::try_from(reply.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&reply[..len as usize]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(d: &Codec, mut buf: &[u8]) -> Result<(Vec<Vec<u8>>, usize), FrameError> {
        let mut out = Vec::new();
        while let Some((range, used)) = d.decode(buf)? {
            out.push(buf[range].to_vec());
            buf = &buf[used..];
        }
        Ok((out, buf.len()))
    }

    #[test]
    fn lines_split_on_newline_and_keep_the_partial_tail() {
        let d = Codec::new(Framing::Line, 100);
        let (msgs, rest) = all(&d, b"one\ntwo\r\n\nthr").unwrap();
        assert_eq!(msgs, [b"one".to_vec(), b"two\r".to_vec(), b"".to_vec()]);
        assert_eq!(rest, 3);
        assert_eq!(d.decode_at_eof(b"thr"), Some(&b"thr"[..]));
    }

    #[test]
    fn a_line_of_exactly_max_bytes_is_accepted_one_more_is_not() {
        let d = Codec::new(Framing::Line, 4);
        assert_eq!(all(&d, b"abcd\n").unwrap().0, [b"abcd".to_vec()]);
        assert_eq!(d.decode(b"abcd").unwrap(), None);
        assert_eq!(
            d.decode(b"abcde"),
            Err(FrameError::TooLarge { size: 5, max: 4 })
        );
        assert_eq!(
            d.decode(b"abcde\n"),
            Err(FrameError::TooLarge { size: 6, max: 4 })
        );
    }

    #[test]
    fn the_largest_max_takes_lines_without_overflowing() {
        // The `framing` fuzz target's arbitrary max: max + 1 overflowed (a panic in debug
        // builds, an empty window and never a line in release ones).
        let d = Codec::new(Framing::Line, usize::MAX);
        assert_eq!(all(&d, b"ab\ncd").unwrap(), (vec![b"ab".to_vec()], 2));
    }

    #[test]
    fn length_frames_wait_for_the_whole_body() {
        let d = Codec::new(Framing::Length, 10);
        assert_eq!(d.decode(b"\0\0").unwrap(), None);
        assert_eq!(d.decode(b"\0\0\0\x03ab").unwrap(), None);
        let (msgs, rest) = all(&d, b"\0\0\0\x03abc\0\0\0\0\0\0\0\x01z\0").unwrap();
        assert_eq!(msgs, [b"abc".to_vec(), b"".to_vec(), b"z".to_vec()]);
        assert_eq!(rest, 1);
        assert_eq!(d.decode_at_eof(b"\0\0\0\x03ab"), None);
    }

    #[test]
    fn an_oversize_length_prefix_fails_before_the_body_arrives() {
        let d = Codec::new(Framing::Length, 1 << 20);
        assert_eq!(
            d.decode(&[0xff, 0xff, 0xff, 0xff]),
            Err(FrameError::TooLarge {
                size: u32::MAX as u64,
                max: 1 << 20
            })
        );
    }

    #[test]
    fn raw_takes_whatever_was_read() {
        let d = Codec::new(Framing::Raw, 1 << 20);
        assert_eq!(d.decode(b"").unwrap(), None);
        assert_eq!(d.decode(b"a\nb").unwrap(), Some((0..3, 3)));
        assert_eq!(Codec::new(Framing::Raw, 10).read_size(), 10);
    }

    #[test]
    fn replies_are_framed() {
        let mut out = Vec::new();
        Codec::new(Framing::Line, 9).encode(b"hi", &mut out);
        Codec::new(Framing::Line, 9).encode(b"ho\n", &mut out);
        Codec::new(Framing::Length, 9).encode(b"abc", &mut out);
        Codec::new(Framing::Raw, 9).encode(b"r", &mut out);
        assert_eq!(out, b"hi\nho\n\0\0\0\x03abcr");
    }
}
