//! Address blocks written as CIDR (`10.0.0.0/8`, `fd00::/8`, or a bare address for just that
//! one): the values of `--trusted-proxies`, and the test of whether a peer is inside one.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A block of addresses: `addr` with its first `prefix` bits significant (the rest are zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the block. An IPv4 client seen on an IPv6 socket (`::ffff:a.b.c.d`)
    /// is the IPv4 address it maps, so `--listen [::]:7000` trusts the same proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask(u32::from(ip).into(), self.prefix, 32) == u32::from(net).into()
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask(u128::from(ip), self.prefix, 128) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// `bits` (of a `width`-bit address) with only the first `prefix` kept.
fn mask(bits: u128, prefix: u8, width: u32) -> u128 {
    let drop = width - u32::from(prefix);
    bits.checked_shr(drop)
        .unwrap_or(0)
        .checked_shl(drop)
        .unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (ip, prefix) = s.split_once('/').map_or((s, None), |(a, p)| (a, Some(p)));
        let addr: IpAddr = ip.parse().map_err(|_| {
            format!("`{s}` is not an address block: expected ADDRESS/BITS such as 10.0.0.0/8, fd00::/8 or 192.0.2.7")
        })?;
        let width: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            // Digits only: `u8::from_str` would take `+8` too.
            Some(p) => Some(p)
                .filter(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u8>().ok())
                .filter(|p| *p <= width)
                .ok_or_else(|| {
                    format!("`{s}`: the prefix length must be a number from 0 to {width}")
                })?,
        };
        let bits = match addr {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        };
        // `10.1.2.3/8` most likely means a typo; refusing it beats trusting a surprise.
        if mask(bits, prefix, u32::from(width)) != bits {
            return Err(format!(
                "`{s}` has bits set past its /{prefix} prefix: did you mean the block's first address?"
            ));
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_contain_their_addresses_only() {
        let net = cidr("10.0.0.0/8");
        assert!(net.contains("10.255.1.2".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(
            net.contains("::ffff:10.0.0.1".parse().unwrap()),
            "v4-mapped"
        );
        assert!(!net.contains("::1".parse().unwrap()));
        assert!(cidr("0.0.0.0/0").contains("203.0.113.9".parse().unwrap()));
        assert!(cidr("::/0").contains("2001:db8::1".parse().unwrap()));
        let one = cidr("192.0.2.7");
        assert_eq!(one.to_string(), "192.0.2.7/32");
        assert!(one.contains("192.0.2.7".parse().unwrap()));
        assert!(!one.contains("192.0.2.8".parse().unwrap()));
        let v6 = cidr("fd00::/8");
        assert!(v6.contains("fdab::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        assert!(cidr("::1/128").contains("::1".parse().unwrap()));
    }

    #[test]
    fn bad_blocks_are_refused_with_the_reason() {
        for (bad, says) in [
            ("10.0.0.0/33", "from 0 to 32"),
            ("::/129", "from 0 to 128"),
            ("10.0.0.0/", "prefix length"),
            ("10.0.0.0/+8", "prefix length"),
            ("10.1.2.3/8", "bits set past"),
            ("example.com/8", "not an address block"),
            ("", "not an address block"),
        ] {
            let e = bad.parse::<Cidr>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
