//! The PROXY protocol header (v1 text, v2 binary) a load balancer puts before a client's bytes
//! (`--proxy-protocol`): a pure parser over the bytes received so far, with no I/O, which says
//! whether the header is complete (and how many bytes it took), needs more bytes, or is invalid.
//!
//! The parser works on a growing buffer: a result other than [`Parsed::Incomplete`] depends only
//! on the bytes up to where it was decided, so reading the header in any chunks gives the result
//! of the whole at once (the `proxy_header` fuzz target checks this). It never asks for more
//! than [`MAX_HEADER`] bytes, so the buffer a connection holds for it is bounded.
//! Specification: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A v1 header is at most 107 bytes, its `\r\n` included (the specification's limit).
pub const MAX_V1: usize = 107;
/// The v2 signature, then version and command, family and protocol, and the length.
const V2_FIXED: usize = 16;
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// The most a v2 header may declare after its fixed part: addresses (216 bytes at most, for
/// AF_UNIX) and a few TLVs. HAProxy sends none unless asked (`proxy-v2-options`) and AWS's
/// NLB one short one; 4 KiB of them would be a sender's bug or an attack on our memory.
pub const MAX_V2_BODY: usize = 4096;
/// The longest header accepted: any buffer this long is decided one way or the other.
pub const MAX_HEADER: usize = V2_FIXED + MAX_V2_BODY;

/// What a complete header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A proxied TCP connection: the client's address and the one it connected to.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// v2 `LOCAL`: the proxy speaks for itself (a health check); its own address stays.
    Local,
    /// v1 `UNKNOWN`, or a v2 family or protocol other than TCP over IPv4 or IPv6: the
    /// specification says to keep the connection's own addresses.
    Unknown,
}

/// How far the bytes received so far go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A header may still follow: read more (all the bytes so far belong to it).
    Incomplete,
    /// The header, and how many bytes it took; what follows is the client's.
    Complete { header: Header, len: usize },
}

/// Why the bytes are not a PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error(
        "no PROXY protocol header (the bytes start with neither `PROXY ` nor the v2 signature)"
    )]
    Missing,
    #[error("PROXY v1 header longer than {MAX_V1} bytes")]
    V1TooLong,
    #[error("PROXY v1 header has a byte that is not printable ASCII")]
    V1NotText,
    #[error("PROXY v1 header has a `\\r` not followed by `\\n`")]
    V1LineEnd,
    #[error("PROXY v1 header is malformed: {0}")]
    V1Malformed(&'static str),
    #[error("PROXY v2 header has version {0}, not 2")]
    V2Version(u8),
    #[error("PROXY v2 header has an unknown command {0}")]
    V2Command(u8),
    #[error("PROXY v2 header has an unknown address family or protocol (byte {0:#04x})")]
    V2Family(u8),
    #[error("PROXY v2 header declares {0} bytes after its fixed part, more than {MAX_V2_BODY}")]
    V2TooLong(usize),
    #[error("PROXY v2 header declares {0} bytes, too few for its addresses")]
    V2Short(usize),
}

/// Parses the header at the start of `buf`, the bytes received so far.
pub fn parse(buf: &[u8]) -> Result<Parsed, HeaderError> {
    let sniff = buf.len().min(V2_SIGNATURE.len());
    if buf[..sniff] == V2_SIGNATURE[..sniff] && !buf.is_empty() {
        if sniff < V2_SIGNATURE.len() {
            return Ok(Parsed::Incomplete);
        }
        return parse_v2(buf);
    }
    let sniff = buf.len().min(V1_PREFIX.len());
    if buf[..sniff] == V1_PREFIX[..sniff] {
        if sniff < V1_PREFIX.len() {
            return Ok(Parsed::Incomplete);
        }
        return parse_v1(buf);
    }
    Err(HeaderError::Missing)
}

/// `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n` or `PROXY UNKNOWN ...\r\n`. Bytes are checked in
/// order as they come, so a bad one is refused at once rather than at the deadline.
fn parse_v1(buf: &[u8]) -> Result<Parsed, HeaderError> {
    // The `\r` may be at most at MAX_V1 - 2, its `\n` right after.
    for (i, &b) in buf.iter().enumerate().take(MAX_V1 - 1) {
        match b {
            b'\r' => {
                return match buf.get(i + 1) {
                    None => Ok(Parsed::Incomplete),
                    Some(b'\n') => Ok(Parsed::Complete {
                        header: v1_line(&buf[V1_PREFIX.len()..i])?,
                        len: i + 2,
                    }),
                    Some(_) => Err(HeaderError::V1LineEnd),
                };
            }
            0x20..=0x7e => {}
            _ => return Err(HeaderError::V1NotText),
        }
    }
    if buf.len() >= MAX_V1 - 1 {
        return Err(HeaderError::V1TooLong);
    }
    Ok(Parsed::Incomplete)
}

/// The v1 line after `PROXY ` and before `\r\n` (printable ASCII, so valid UTF-8).
fn v1_line(line: &[u8]) -> Result<Header, HeaderError> {
    let line = std::str::from_utf8(line).map_err(|_| HeaderError::V1NotText)?;
    let mut words = line.split(' ');
    let v6 = match words.next() {
        Some("TCP4") => false,
        Some("TCP6") => true,
        // The rest of the line is to be ignored, whatever it is.
        Some("UNKNOWN") => return Ok(Header::Unknown),
        _ => {
            return Err(HeaderError::V1Malformed(
                "the protocol is not TCP4, TCP6 or UNKNOWN",
            ))
        }
    };
    let mut next = || {
        words
            .next()
            .ok_or(HeaderError::V1Malformed("a field is missing"))
    };
    let (src, dst, sport, dport) = (next()?, next()?, next()?, next()?);
    if words.next().is_some() {
        return Err(HeaderError::V1Malformed(
            "more than four fields after the protocol",
        ));
    }
    let ip = |s: &str| -> Result<IpAddr, HeaderError> {
        let bad = HeaderError::V1Malformed("an address is not one of its protocol's");
        if v6 {
            s.parse::<Ipv6Addr>().map(IpAddr::V6).map_err(|_| bad)
        } else {
            s.parse::<Ipv4Addr>().map(IpAddr::V4).map_err(|_| bad)
        }
    };
    Ok(Header::Proxied {
        source: SocketAddr::new(ip(src)?, v1_port(sport)?),
        destination: SocketAddr::new(ip(dst)?, v1_port(dport)?),
    })
}

/// A port in decimal without leading zeros (the specification's form; `u16::from_str` would
/// also take `+80` and `080`).
fn v1_port(s: &str) -> Result<u16, HeaderError> {
    let bad = HeaderError::V1Malformed("a port is not a number from 0 to 65535");
    let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits || (s.len() > 1 && s.starts_with('0')) {
        return Err(bad);
    }
    s.parse().map_err(|_| bad)
}

/// The binary header: signature (already matched), version and command, family and protocol,
/// a big-endian length, then addresses and TLVs (which are skipped).
fn parse_v2(buf: &[u8]) -> Result<Parsed, HeaderError> {
    let Some(&ver_cmd) = buf.get(12) else {
        return Ok(Parsed::Incomplete);
    };
    if ver_cmd >> 4 != 2 {
        return Err(HeaderError::V2Version(ver_cmd >> 4));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        cmd => return Err(HeaderError::V2Command(cmd)),
    };
    let Some(&fam) = buf.get(13) else {
        return Ok(Parsed::Incomplete);
    };
    // Family: UNSPEC, INET, INET6, UNIX; protocol: UNSPEC, STREAM, DGRAM. Anything else must
    // be refused, the specification says.
    if fam >> 4 > 3 || fam & 0x0f > 2 {
        return Err(HeaderError::V2Family(fam));
    }
    let Some(len) = buf.get(14..16) else {
        return Ok(Parsed::Incomplete);
    };
    let body = usize::from(u16::from_be_bytes([len[0], len[1]]));
    if body > MAX_V2_BODY {
        return Err(HeaderError::V2TooLong(body));
    }
    // What the addresses of the family need; a LOCAL header's are ignored, so may be absent.
    let needed = match fam >> 4 {
        1 => 12,
        2 => 36,
        3 => 216,
        _ => 0,
    };
    if !local && body < needed {
        return Err(HeaderError::V2Short(body));
    }
    let total = V2_FIXED + body;
    let Some(addresses) = buf.get(V2_FIXED..total) else {
        return Ok(Parsed::Incomplete);
    };
    let header = match (local, fam) {
        (true, _) => Header::Local,
        (false, 0x11) => {
            let ip = |at: usize| IpAddr::from(<[u8; 4]>::try_from(&addresses[at..at + 4]).unwrap());
            let port = |at: usize| u16::from_be_bytes([addresses[at], addresses[at + 1]]);
            Header::Proxied {
                source: SocketAddr::new(ip(0), port(8)),
                destination: SocketAddr::new(ip(4), port(10)),
            }
        }
        (false, 0x21) => {
            let ip =
                |at: usize| IpAddr::from(<[u8; 16]>::try_from(&addresses[at..at + 16]).unwrap());
            let port = |at: usize| u16::from_be_bytes([addresses[at], addresses[at + 1]]);
            Header::Proxied {
                source: SocketAddr::new(ip(0), port(32)),
                destination: SocketAddr::new(ip(16), port(34)),
            }
        }
        (false, _) => Header::Unknown,
    };
    Ok(Parsed::Complete { header, len: total })
}

#[cfg(test)]
mod tests;
