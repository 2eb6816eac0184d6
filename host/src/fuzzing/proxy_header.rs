//! The `proxy_header` target: the PROXY protocol parser (`server/proxy_header.rs`) on any bytes
//! in any chunks, and on headers written from their definition.

use std::net::{IpAddr, SocketAddr};

use super::Input;
use crate::server::proxy_header::{parse, Header, Parsed, MAX_HEADER};

/// Input: a mode byte. Below 128, the rest is `[4 chunk sizes][stream]`: the stream as it
/// arrives in those chunk sizes (each byte mod 64, plus 1, in turn). From 128, a header is
/// written from fields: `[v2?][family][16 source][16 destination][2+2 ports][tlv length]
/// [chunk size][tlvs and what follows]`, then read back.
pub fn proxy_header(data: &[u8]) {
    let mut input = Input(data);
    if input.u8() < 128 {
        let cuts: Vec<usize> = input
            .bytes(4)
            .iter()
            .map(|b| usize::from(b % 64) + 1)
            .collect();
        let stream = input.rest();
        check_stream(stream, &cuts);
    } else {
        written_headers_read_back(&mut input);
    }
}

/// What any stream must give: the result of the whole at once, whichever chunks it comes in.
fn check_stream(stream: &[u8], cuts: &[usize]) {
    let whole = parse(stream);
    if let Ok(Parsed::Incomplete) = whole {
        assert!(
            stream.len() < MAX_HEADER,
            "undecided after {} bytes",
            stream.len()
        );
    }
    if let Ok(Parsed::Complete { header, len }) = whole {
        assert!(len <= stream.len() && len <= MAX_HEADER);
        // The header is decided by its own bytes: what follows changes nothing, and no
        // shorter prefix decides anything.
        assert_eq!(parse(&stream[..len]), whole);
        for k in 0..len {
            assert_eq!(
                parse(&stream[..k]),
                Ok(Parsed::Incomplete),
                "prefix {k} of {header:?}"
            );
        }
    }
    // As the worker reads: a growing buffer, parsed after each chunk, until decided.
    let mut got = 0;
    let mut sizes = cuts.iter().cycle();
    let chunked = loop {
        got = (got + sizes.next().copied().unwrap_or(1)).min(stream.len());
        let r = parse(&stream[..got]);
        if r != Ok(Parsed::Incomplete) || got == stream.len() {
            break r;
        }
    };
    assert_eq!(chunked, whole, "chunks {cuts:?}");
}

/// A header written from the specification's grammar parses back to itself, followed by any
/// bytes, in any chunks.
fn written_headers_read_back(input: &mut Input) {
    let v2 = input.u8() & 1 == 1;
    let family = input.u8() % 4;
    let (a, b) = (input.bytes(16).to_vec(), input.bytes(16).to_vec());
    let (sport, dport) = (u16_of(input.bytes(2)), u16_of(input.bytes(2)));
    let tlv_len = usize::from(input.u8()) * 8;
    let cut = usize::from(input.u8() % 64) + 1;
    let rest = input.rest();
    let ip = |bytes: &[u8], v6: bool| -> IpAddr {
        let mut full = [0u8; 16];
        full[..bytes.len()].copy_from_slice(bytes);
        if v6 {
            IpAddr::from(full)
        } else {
            IpAddr::from([full[0], full[1], full[2], full[3]])
        }
    };
    let header = match family {
        0 => Header::Unknown,
        1 if v2 => Header::Local,
        1 => Header::Unknown,
        _ => Header::Proxied {
            source: SocketAddr::new(ip(&a, family == 3), sport),
            destination: SocketAddr::new(ip(&b, family == 3), dport),
        },
    };
    let tlvs = &rest[..tlv_len.min(rest.len())];
    let mut stream = if v2 {
        encode_v2(&header, tlvs)
    } else {
        encode_v1(&header)
    };
    let len = stream.len();
    stream.extend_from_slice(rest);
    assert_eq!(
        parse(&stream),
        Ok(Parsed::Complete { header, len }),
        "{stream:?}"
    );
    check_stream(&stream, &[cut]);
}

fn u16_of(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0, |n, b| n << 8 | u16::from(*b))
}

/// A v1 header as the specification writes it (`Local` has no v1 form: written as `UNKNOWN`).
pub(crate) fn encode_v1(header: &Header) -> Vec<u8> {
    match header {
        Header::Proxied {
            source,
            destination,
        } => {
            let proto = if source.is_ipv4() { "TCP4" } else { "TCP6" };
            let (s, d) = (source.ip(), destination.ip());
            let (sp, dp) = (source.port(), destination.port());
            format!("PROXY {proto} {s} {d} {sp} {dp}\r\n").into_bytes()
        }
        Header::Local | Header::Unknown => b"PROXY UNKNOWN\r\n".to_vec(),
    }
}

/// A v2 header with `tlvs` after its addresses (`Unknown`: family UNSPEC under `PROXY`).
pub(crate) fn encode_v2(header: &Header, tlvs: &[u8]) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    let mut body = Vec::new();
    let (ver_cmd, fam) = match header {
        Header::Local => (0x20, 0x00),
        Header::Unknown => (0x21, 0x00),
        Header::Proxied {
            source,
            destination,
        } => {
            let octets = |ip: IpAddr| match ip {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            };
            body.extend(octets(source.ip()));
            body.extend(octets(destination.ip()));
            body.extend(source.port().to_be_bytes());
            body.extend(destination.port().to_be_bytes());
            (0x21, if source.is_ipv4() { 0x11 } else { 0x21 })
        }
    };
    body.extend_from_slice(tlvs);
    out.extend([ver_cmd, fam]);
    out.extend(
        u16::try_from(body.len())
            .expect("a short body")
            .to_be_bytes(),
    );
    out.extend(body);
    out
}
