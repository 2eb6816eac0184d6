//! The messages the load generator sends, and the check of every reply against them.
//!
//! A message body is `CCCCC-SSSSSSSSSSS-` (connection id and sequence number in hex, so every
//! message of a run is unique) followed by printable filler that depends on both, so a reply
//! that comes back for the wrong message, truncated, or with stale bytes is caught. With `line`
//! framing the message is exactly `size` bytes including its `\n`; with `length` framing `size`
//! is the payload the server's handler sees (the 4-byte prefix comes on top).

use crate::Framing;

/// Length of the `CCCCC-SSSSSSSSSSS-` header.
pub const HEADER_LEN: usize = 18;
/// Largest connection id the header can carry.
pub const MAX_CONN_ID: u32 = 0xF_FFFF;
/// Sequence numbers wrap after this (17.6 trillion messages per connection).
const SEQ_MASK: u64 = 0xFFF_FFFF_FFFF;
/// Filler characters: printable, no `\n`.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const HEX: &[u8; 16] = b"0123456789abcdef";

/// Builds and checks the messages of one run: all of the same size and framing.
#[derive(Debug, Clone)]
pub struct Payload {
    framing: Framing,
    /// What the handler sees: the message without its framing.
    body_len: usize,
    /// The filler, repeated so any rotation of it can be sliced without wrapping.
    filler: Vec<u8>,
    /// Replies are the message in ASCII upper case (the `upper` examples) instead of an echo.
    upper: bool,
}

impl Payload {
    /// `size`: bytes on the wire per message for `line` (newline included), payload bytes for
    /// `length`.
    pub fn new(framing: Framing, size: usize) -> Result<Payload, String> {
        let body_len = match framing {
            Framing::Line => size.saturating_sub(1),
            Framing::Length => size,
        };
        if body_len < HEADER_LEN {
            let min = match framing {
                Framing::Line => HEADER_LEN + 1,
                Framing::Length => HEADER_LEN,
            };
            return Err(format!(
                "--size {size} is too small for {framing} framing: messages carry an \
                 {HEADER_LEN}-byte id, so the size must be at least {min}"
            ));
        }
        if body_len > u32::MAX as usize {
            return Err(format!("--size {size} does not fit a 4-byte length prefix"));
        }
        let fill = body_len - HEADER_LEN;
        let filler = (0..fill + ALPHABET.len())
            .map(|i| ALPHABET[i % ALPHABET.len()])
            .collect();
        Ok(Payload {
            framing,
            body_len,
            filler,
            upper: false,
        })
    }

    /// Expects every reply in ASCII upper case, as the `upper` example of each language sends.
    pub fn expect_upper(mut self, upper: bool) -> Payload {
        self.upper = upper;
        self
    }

    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// The message as the handler sees it (without framing).
    pub fn body_len(&self) -> usize {
        self.body_len
    }

    /// Bytes one message takes on the wire, framing included.
    pub fn wire_len(&self) -> usize {
        match self.framing {
            Framing::Line => self.body_len + 1,
            Framing::Length => self.body_len + 4,
        }
    }

    fn header(conn: u32, seq: u64) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        let conn = (conn & MAX_CONN_ID) as u64;
        for i in 0..5 {
            h[i] = HEX[((conn >> (4 * (4 - i))) & 0xF) as usize];
        }
        h[5] = b'-';
        let seq = seq & SEQ_MASK;
        for i in 0..11 {
            h[6 + i] = HEX[((seq >> (4 * (10 - i))) & 0xF) as usize];
        }
        h[17] = b'-';
        h
    }

    fn filler_for(&self, conn: u32, seq: u64) -> &[u8] {
        let offset =
            (seq.wrapping_mul(7).wrapping_add(conn as u64) % ALPHABET.len() as u64) as usize;
        &self.filler[offset..offset + self.body_len - HEADER_LEN]
    }

    /// Appends message `seq` of connection `conn`, framed, to `out`.
    pub fn write(&self, conn: u32, seq: u64, out: &mut Vec<u8>) {
        out.reserve(self.wire_len());
        if self.framing == Framing::Length {
            out.extend_from_slice(&(self.body_len as u32).to_be_bytes());
        }
        out.extend_from_slice(&Self::header(conn, seq));
        out.extend_from_slice(self.filler_for(conn, seq));
        if self.framing == Framing::Line {
            out.push(b'\n');
        }
    }

    /// Message `seq` of connection `conn` without its framing: the reply an echo must send.
    pub fn body(&self, conn: u32, seq: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body_len);
        out.extend_from_slice(&Self::header(conn, seq));
        out.extend_from_slice(self.filler_for(conn, seq));
        out
    }

    /// Whether `reply` (without its framing) is exactly message `seq` of connection `conn`.
    pub fn check(&self, conn: u32, seq: u64, reply: &[u8]) -> bool {
        if reply.len() != self.body_len {
            return false;
        }
        let (head, fill) = reply.split_at(HEADER_LEN);
        if !self.upper {
            return head == Self::header(conn, seq) && fill == self.filler_for(conn, seq);
        }
        let same = |got: &[u8], sent: &[u8]| {
            (got.iter().zip(sent)).all(|(g, s)| *g == s.to_ascii_uppercase())
        };
        same(head, &Self::header(conn, seq)) && same(fill, self.filler_for(conn, seq))
    }

    /// A short printable excerpt of a reply, for error messages.
    pub fn describe(reply: &[u8]) -> String {
        let shown: String = reply
            .iter()
            .take(40)
            .flat_map(|&b| std::ascii::escape_default(b))
            .map(char::from)
            .collect();
        if reply.len() > 40 {
            format!("{} bytes: \"{shown}...\"", reply.len())
        } else {
            format!("{} bytes: \"{shown}\"", reply.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_messages_have_the_exact_size_and_check_out() {
        let p = Payload::new(Framing::Line, 64).unwrap();
        let mut out = Vec::new();
        p.write(3, 0x1234, &mut out);
        assert_eq!(out.len(), 64);
        assert_eq!(out[63], b'\n');
        assert!(out[..63].iter().all(|b| b.is_ascii_graphic()));
        assert_eq!(&out[..HEADER_LEN], b"00003-00000001234-");
        assert!(p.check(3, 0x1234, &out[..63]));
        assert_eq!(p.body(3, 0x1234), &out[..63]);
        assert!(!p.check(3, 0x1235, &out[..63]));
        assert!(!p.check(4, 0x1234, &out[..63]));
        assert!(!p.check(3, 0x1234, &out[..62]));
        let mut bad = out[..63].to_vec();
        bad[40] ^= 1;
        assert!(!p.check(3, 0x1234, &bad));
    }

    #[test]
    fn length_messages_carry_their_prefix() {
        let p = Payload::new(Framing::Length, 4096).unwrap();
        let mut out = Vec::new();
        p.write(7, 9, &mut out);
        assert_eq!(out.len(), 4100);
        assert_eq!(&out[..4], &4096u32.to_be_bytes());
        assert!(p.check(7, 9, &out[4..]));
    }

    #[test]
    fn upper_replies_check_out_only_when_expected() {
        let p = Payload::new(Framing::Line, 64).unwrap();
        let upper = p.body(3, 9).to_ascii_uppercase();
        assert!(!p.check(3, 9, &upper));
        let p = p.expect_upper(true);
        assert!(p.check(3, 9, &upper));
        assert!(
            !p.check(3, 9, &p.body(3, 9)),
            "an echo is not an upper-case reply"
        );
        assert!(!p.check(3, 10, &upper));
    }

    #[test]
    fn too_small_sizes_are_refused() {
        assert!(Payload::new(Framing::Line, 18).is_err());
        assert!(Payload::new(Framing::Line, 19).is_ok());
        assert!(Payload::new(Framing::Length, 17).is_err());
    }
}
