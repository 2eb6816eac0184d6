//! The bus's payloads on Redis pub/sub: version 1, big-endian, the message's bytes last.
//!
//! - on a host's channel: `1`, `S` or `C` (send or close), the receiver's id (8 bytes), then for
//!   `S` the bytes;
//! - on a room's channel (the room is in the channel's name): `1`, `P`, the publishing host's
//!   tag (2 bytes, so it skips its own), the sender's id (8 bytes), the bytes.
//!
//! Anything else (another version, a program writing to sandport's channels) is dropped and
//! counted by the receiver.

const VERSION: u8 = 1;

/// What a host's channel carries.
#[derive(Debug, PartialEq, Eq)]
pub enum Direct<'a> {
    Send { to: u64, bytes: &'a [u8] },
    Close { to: u64 },
}

/// A room's message.
#[derive(Debug, PartialEq, Eq)]
pub struct Published<'a> {
    pub origin: u64,
    pub from: u64,
    pub bytes: &'a [u8],
}

/// A send of `bytes` to `to`, or a close for `None`.
pub fn direct(to: u64, bytes: Option<&[u8]>) -> Vec<u8> {
    let kind = if bytes.is_some() { b'S' } else { b'C' };
    let bytes = bytes.unwrap_or_default();
    let mut out = Vec::with_capacity(10 + bytes.len());
    out.extend_from_slice(&[VERSION, kind]);
    out.extend_from_slice(&to.to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

pub fn parse_direct(payload: &[u8]) -> Option<Direct<'_>> {
    let (&[VERSION, kind], rest) = payload.split_first_chunk::<2>()? else {
        return None;
    };
    let (to, bytes) = rest.split_first_chunk::<8>()?;
    let to = u64::from_be_bytes(*to);
    match kind {
        b'S' => Some(Direct::Send { to, bytes }),
        b'C' if bytes.is_empty() => Some(Direct::Close { to }),
        _ => None,
    }
}

/// A publish of `bytes` from `from`, by the host with tag `origin`.
pub fn room(origin: u64, from: u64, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + bytes.len());
    out.extend_from_slice(&[VERSION, b'P']);
    out.extend_from_slice(&(origin as u16).to_be_bytes());
    out.extend_from_slice(&from.to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

pub fn parse_room(payload: &[u8]) -> Option<Published<'_>> {
    let (&[VERSION, b'P'], rest) = payload.split_first_chunk::<2>()? else {
        return None;
    };
    let (origin, rest) = rest.split_first_chunk::<2>()?;
    let (from, bytes) = rest.split_first_chunk::<8>()?;
    Some(Published {
        origin: u16::from_be_bytes(*origin).into(),
        from: u64::from_be_bytes(*from),
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_read_back_as_written() {
        let to = 0x1fff_0000_0000_0042;
        assert_eq!(
            parse_direct(&direct(to, Some(b"hi"))),
            Some(Direct::Send { to, bytes: b"hi" })
        );
        assert_eq!(
            parse_direct(&direct(to, Some(b""))),
            Some(Direct::Send { to, bytes: b"" })
        );
        assert_eq!(parse_direct(&direct(to, None)), Some(Direct::Close { to }));
        let p = room(8191, to, b"\x00\xffbytes");
        assert_eq!(
            parse_room(&p),
            Some(Published {
                origin: 8191,
                from: to,
                bytes: b"\x00\xffbytes"
            })
        );
    }

    #[test]
    fn anything_else_is_refused() {
        let good = direct(7, Some(b"x"));
        for bad in [
            &b""[..],
            b"\x01",
            b"\x01S\x00",
            b"\x02S\x00\x00\x00\x00\x00\x00\x00\x07x",
            b"\x01X\x00\x00\x00\x00\x00\x00\x00\x07x",
            b"\x01C\x00\x00\x00\x00\x00\x00\x00\x07trailing",
        ] {
            assert_eq!(parse_direct(bad), None, "{bad:?}");
        }
        assert_eq!(parse_room(&good), None);
        assert_eq!(parse_room(b"\x01P\x00\x01\x00"), None);
        assert_eq!(parse_direct(&room(1, 2, b"x")), None);
    }
}
