//! The parser against the specification's examples and its edge cases.

use std::net::SocketAddr;

use super::*;
use crate::fuzzing::proxy_header::{encode_v1, encode_v2};

fn proxied(source: &str, destination: &str) -> Header {
    Header::Proxied {
        source: source.parse::<SocketAddr>().unwrap(),
        destination: destination.parse::<SocketAddr>().unwrap(),
    }
}

fn complete(header: Header, len: usize) -> Result<Parsed, HeaderError> {
    Ok(Parsed::Complete { header, len })
}

#[test]
fn v1_tcp4_tcp6_and_unknown_are_read_and_what_follows_is_left() {
    let line = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET /\n";
    assert_eq!(
        parse(line),
        complete(proxied("192.0.2.1:56324", "198.51.100.2:443"), 45)
    );
    let line = b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n";
    assert_eq!(
        parse(line),
        complete(proxied("[2001:db8::1]:1", "[::1]:65535"), line.len())
    );
    assert_eq!(parse(b"PROXY UNKNOWN\r\n"), complete(Header::Unknown, 15));
    let line = b"PROXY UNKNOWN ffff:f::1 ffff:f::2 1 2\r\nx";
    assert_eq!(parse(line), complete(Header::Unknown, line.len() - 1));
}

#[test]
fn v1_prefixes_wait_for_more_and_bad_bytes_are_refused_at_once() {
    let line = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";
    for k in 0..line.len() {
        assert_eq!(parse(&line[..k]), Ok(Parsed::Incomplete), "prefix {k}");
    }
    assert_eq!(parse(b"PROXY TCP4 1.2\n"), Err(HeaderError::V1NotText));
    assert_eq!(parse(b"PROXY TCP4 1.2\rx"), Err(HeaderError::V1LineEnd));
    assert_eq!(parse(b"PROXY \xff"), Err(HeaderError::V1NotText));
    assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(HeaderError::Missing));
    assert_eq!(parse(b"PROXX"), Err(HeaderError::Missing));
    assert_eq!(parse(b"hello\n"), Err(HeaderError::Missing));
}

#[test]
fn v1_is_at_most_107_bytes() {
    // The specification's worst case.
    let longest = format!(
        "PROXY UNKNOWN {0} {0} 65535 65535\r\n",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    );
    assert_eq!(longest.len(), MAX_V1);
    assert!(matches!(
        parse(longest.as_bytes()),
        Ok(Parsed::Complete { len: MAX_V1, .. })
    ));
    let mut too_long = format!("PROXY UNKNOWN {}", "x".repeat(92)).into_bytes();
    assert_eq!(too_long.len(), MAX_V1 - 1);
    assert_eq!(parse(&too_long[..MAX_V1 - 2]), Ok(Parsed::Incomplete));
    assert_eq!(parse(&too_long), Err(HeaderError::V1TooLong));
    too_long.extend(b"\r\n");
    assert_eq!(parse(&too_long), Err(HeaderError::V1TooLong));
}

#[test]
fn v1_fields_must_match_their_protocol() {
    for bad in [
        &b"PROXY TCP4 2001:db8::1 1.2.3.4 1 2\r\n"[..],
        b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 1.2.3.4 1 65536\r\n",
        b"PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n",
        b"PROXY TCP4 1.2.3.4 1.2.3.4 +1 2\r\n",
        b"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n",
        b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n",
        b"PROXY TCP4  1.2.3.4 1.2.3.4 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 \r\n",
        b"PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n",
        b"PROXY \r\n",
    ] {
        let got = parse(bad);
        assert!(
            matches!(got, Err(HeaderError::V1Malformed(_))),
            "{:?}: {got:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn v2_tcp4_tcp6_local_and_unspec_are_read_with_their_tlvs_skipped() {
    let h4 = proxied("192.0.2.1:56324", "198.51.100.2:443");
    let mut bytes = encode_v2(&h4, &[0x04, 0, 1, 0xaa]);
    assert_eq!(bytes.len(), 16 + 12 + 4);
    bytes.extend(b"client bytes");
    assert_eq!(parse(&bytes), complete(h4, 32));
    let h6 = proxied("[2001:db8::7]:1234", "[2001:db8::1]:7000");
    assert_eq!(parse(&encode_v2(&h6, &[])), complete(h6, 16 + 36));
    assert_eq!(
        parse(&encode_v2(&Header::Local, &[])),
        complete(Header::Local, 16)
    );
    assert_eq!(
        parse(&encode_v2(&Header::Unknown, &[1, 2])),
        complete(Header::Unknown, 18)
    );
    for k in 0..32 {
        assert_eq!(parse(&bytes[..k]), Ok(Parsed::Incomplete), "prefix {k}");
    }
}

#[test]
fn v2_local_keeps_addresses_it_carries_out_of_the_answer() {
    // A LOCAL header may carry addresses (HAProxy's health checks do): they are ignored.
    let mut bytes = encode_v2(&proxied("1.2.3.4:1", "5.6.7.8:2"), &[]);
    bytes[12] = 0x20;
    assert_eq!(parse(&bytes), complete(Header::Local, 28));
}

#[test]
fn v2_bad_fields_are_refused_as_soon_as_they_arrive() {
    let good = encode_v2(&proxied("1.2.3.4:1", "5.6.7.8:2"), &[]);
    let with = |at: usize, byte: u8| {
        let mut b = good[..=at].to_vec();
        b[at] = byte;
        parse(&b)
    };
    assert_eq!(with(12, 0x11), Err(HeaderError::V2Version(1)));
    assert_eq!(with(12, 0x22), Err(HeaderError::V2Command(2)));
    assert_eq!(with(13, 0x41), Err(HeaderError::V2Family(0x41)));
    assert_eq!(with(13, 0x13), Err(HeaderError::V2Family(0x13)));
    let mut short = good[..16].to_vec();
    short[15] = 11;
    assert_eq!(parse(&short), Err(HeaderError::V2Short(11)));
    let mut long = good[..16].to_vec();
    long[14..16].copy_from_slice(&4097u16.to_be_bytes());
    assert_eq!(parse(&long), Err(HeaderError::V2TooLong(4097)));
    long[14..16].copy_from_slice(&4096u16.to_be_bytes());
    assert_eq!(parse(&long), Ok(Parsed::Incomplete), "the longest allowed");
    let mut sig = good.clone();
    sig[5] = b'x';
    assert_eq!(parse(&sig), Err(HeaderError::Missing));
}

#[test]
fn any_max_header_bytes_are_decided() {
    let mut v2 = encode_v2(&Header::Unknown, &vec![0; MAX_V2_BODY]);
    assert_eq!(v2.len(), MAX_HEADER);
    assert_eq!(parse(&v2), complete(Header::Unknown, MAX_HEADER));
    v2.pop();
    assert_eq!(parse(&v2), Ok(Parsed::Incomplete));
    assert_eq!(parse(&[b'P'; MAX_HEADER]), Err(HeaderError::Missing));
}

#[test]
fn written_headers_read_back_in_either_version() {
    for h in [
        proxied("192.0.2.1:56324", "198.51.100.2:443"),
        proxied("[2001:db8::7]:1234", "[::ffff:1.2.3.4]:7000"),
        proxied("0.0.0.0:0", "255.255.255.255:65535"),
    ] {
        let v1 = encode_v1(&h);
        assert_eq!(parse(&v1), complete(h, v1.len()));
        let v2 = encode_v2(&h, b"\x03\x00\x04abcd");
        assert_eq!(parse(&v2), complete(h, v2.len()));
    }
}
