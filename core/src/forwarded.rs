//! The client address of a request that may have come through load balancers, for both
//! binaries. Only peers listed in `TRUSTED_PROXIES` are believed about who their client
//! was; anyone else's `X-Forwarded-For` is ignored, since any client can send one.
//!
//! Two pieces: [`TrustedProxies::client_addr`] picks the client address from the TCP peer
//! and the `X-Forwarded-For` header values, and [`client_group`] maps an address to the
//! key a per-client counter should use (an IPv6 host usually holds a whole /64). Pure
//! functions over `std` types: the caller hands over the header values as bytes.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// The variable both binaries read the list from.
pub const TRUSTED_PROXIES: &str = "TRUSTED_PROXIES";

/// At most this many `X-Forwarded-For` entries are read, from the right, per request.
pub const MAX_FORWARDED_ENTRIES: usize = 64;

/// The peers whose `X-Forwarded-For` is believed: comma-separated CIDRs, a bare address
/// meaning that one address (/32 or /128). Empty trusts nobody.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

/// An entry of `TRUSTED_PROXIES` that is neither a CIDR nor an address.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{TRUSTED_PROXIES}: `{0}` is not a CIDR (e.g. 10.0.0.0/8) or an IP address")]
pub struct TrustedProxiesError(pub String);

impl FromStr for TrustedProxies {
    type Err = TrustedProxiesError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut nets = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let net = IpNet::from_str(part)
                .map(|n| n.trunc())
                .or_else(|_| IpAddr::from_str(part).map(IpNet::from))
                .map_err(|_| TrustedProxiesError(part.to_string()))?;
            nets.push(net);
        }
        Ok(Self { nets })
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a dual-stack socket reports for
/// an IPv4 peer) as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

impl TrustedProxies {
    /// Whether nobody is trusted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client of a request that reached us from `peer` carrying these
    /// `X-Forwarded-For` header values (each a comma-separated list; several header lines
    /// read as one list, in order).
    ///
    /// - `peer` not trusted: `peer`; the header is not read.
    /// - Otherwise the list is walked from the right, skipping trusted addresses, and the
    ///   first untrusted address is the client: the address the outermost trusted proxy
    ///   saw. Entries may carry a port (`192.0.2.1:4711`, `[2001:db8::1]:4711`).
    /// - When no untrusted address is found — every entry trusted, a garbled entry
    ///   (`unknown`, an obfuscated name) reached before one, or
    ///   [`MAX_FORWARDED_ENTRIES`] read — the left-most address read so far is the
    ///   client (nothing left of a garbled entry is believed); with none read, `peer`.
    ///
    /// IPv4-mapped IPv6 addresses come back as IPv4.
    pub fn client_addr<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl IntoIterator<Item = &'a [u8]>,
    ) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        // Each line holds at least one entry, so only the last MAX_FORWARDED_ENTRIES lines
        // can be read.
        let mut values: VecDeque<&[u8]> = VecDeque::new();
        for value in forwarded_for {
            if values.len() == MAX_FORWARDED_ENTRIES {
                values.pop_front();
            }
            values.push_back(value);
        }
        let mut leftmost = peer;
        let mut read = 0;
        for value in values.iter().rev() {
            for entry in value.rsplit(|b| *b == b',') {
                if read == MAX_FORWARDED_ENTRIES {
                    return leftmost;
                }
                read += 1;
                let Some(ip) = parse_entry(entry) else {
                    // Left of here no entry was written by a proxy we trust.
                    return leftmost;
                };
                if !self.contains(ip) {
                    return ip;
                }
                leftmost = ip;
            }
        }
        leftmost
    }
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`[v6]:port` for IPv6).
fn parse_entry(raw: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(raw).ok()?.trim();
    if let Ok(ip) = IpAddr::from_str(s) {
        return Some(canonical(ip));
    }
    let host = match s.strip_prefix('[') {
        Some(rest) => {
            let (inside, after) = rest.split_once(']')?;
            if !(after.is_empty() || is_port_suffix(after)) {
                return None;
            }
            inside
        }
        None => {
            let (host, _) = s.rsplit_once(':')?;
            if !is_port_suffix(&s[host.len()..]) {
                return None;
            }
            host
        }
    };
    IpAddr::from_str(host).ok().map(canonical)
}

/// `:` followed by a port number.
fn is_port_suffix(s: &str) -> bool {
    s.strip_prefix(':').is_some_and(|p| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
    })
}

/// The key under which a per-client counter counts `ip`: IPv4 addresses as they are,
/// IPv6 addresses by their /64 (one host or home network usually holds a whole /64, so
/// counting per address would let it take 2^64 allowances). IPv4-mapped IPv6 addresses
/// count as the IPv4 address.
pub fn client_group(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let mut seg = v6.segments();
            seg[4..].fill(0);
            IpAddr::V6(seg.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_list_parses_cidrs_and_bare_addresses_and_names_a_bad_entry() {
        let t: TrustedProxies = " 10.0.0.0/8, 192.0.2.7 ,2001:db8::/32,::1,"
            .parse()
            .unwrap();
        for (addr, trusted) in [
            ("10.1.2.3", true),
            ("11.0.0.1", false),
            ("192.0.2.7", true),
            ("192.0.2.8", false),
            ("2001:db8:5::1", true),
            ("2001:db9::1", false),
            ("::1", true),
            ("::2", false),
            ("::ffff:10.9.9.9", true),
        ] {
            assert_eq!(t.contains(ip(addr)), trusted, "{addr}");
        }
        // Host bits are dropped: 10.0.0.1/8 means 10.0.0.0/8.
        let t: TrustedProxies = "10.0.0.1/8".parse().unwrap();
        assert!(t.contains(ip("10.200.0.1")));

        let empty: TrustedProxies = "".parse().unwrap();
        assert!(empty.is_empty());
        assert_eq!(" , ".parse::<TrustedProxies>().unwrap(), empty);

        for bad in ["10.0.0.0/33", "proxy.internal", "10.0.0.0/8;", "1.2.3.4:80"] {
            let err = format!("10.0.0.0/8, {bad}")
                .parse::<TrustedProxies>()
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("TRUSTED_PROXIES: "), "{err}");
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
    }

    #[test]
    fn the_client_is_the_right_most_untrusted_entry_behind_a_trusted_peer() {
        let t: TrustedProxies = "10.0.0.0/8, 2001:db8:ffff::/48".parse().unwrap();
        let none: TrustedProxies = "".parse().unwrap();
        // (trusted list, peer, header lines, client)
        let cases: &[(&TrustedProxies, &str, &[&str], &str)] = &[
            // An untrusted peer is the client, whatever it claims.
            (&t, "203.0.113.9", &["198.51.100.1"], "203.0.113.9"),
            (&none, "10.0.0.1", &["198.51.100.1"], "10.0.0.1"),
            // A trusted peer without a header: the peer.
            (&t, "10.0.0.1", &[], "10.0.0.1"),
            (&t, "10.0.0.1", &[""], "10.0.0.1"),
            // One balancer: the last entry is the client.
            (&t, "10.0.0.1", &["198.51.100.1"], "198.51.100.1"),
            // A client's own spoofed entries stay left of the one the balancer wrote.
            (
                &t,
                "10.0.0.1",
                &["1.1.1.1, 2.2.2.2, 198.51.100.1"],
                "198.51.100.1",
            ),
            // Two balancers: trusted entries are skipped.
            (
                &t,
                "10.0.0.1",
                &["1.1.1.1, 198.51.100.1, 10.0.0.2"],
                "198.51.100.1",
            ),
            // Several header lines are one list, in order.
            (
                &t,
                "10.0.0.1",
                &["1.1.1.1", "198.51.100.1, 10.0.0.2"],
                "198.51.100.1",
            ),
            (
                &t,
                "10.0.0.1",
                &["198.51.100.1", "10.0.0.2"],
                "198.51.100.1",
            ),
            // Everything trusted: the left-most entry.
            (&t, "10.0.0.1", &["10.0.0.5, 10.0.0.2"], "10.0.0.5"),
            // Garbled before an untrusted entry: the left-most valid entry read so far,
            // or the peer; nothing left of the garble is believed.
            (&t, "10.0.0.1", &["1.1.1.1, unknown"], "10.0.0.1"),
            (&t, "10.0.0.1", &["1.1.1.1, unknown, 10.0.0.3"], "10.0.0.3"),
            (&t, "10.0.0.1", &["1.1.1.1,,10.0.0.3"], "10.0.0.3"),
            (&t, "10.0.0.1", &["garbage"], "10.0.0.1"),
            // Ports and brackets, spaces, IPv6, IPv4-mapped addresses.
            (&t, "10.0.0.1", &["198.51.100.1:4711"], "198.51.100.1"),
            (&t, "10.0.0.1", &["[2001:db8::7]:4711"], "2001:db8::7"),
            (&t, "10.0.0.1", &["[2001:db8::7]"], "2001:db8::7"),
            (&t, "10.0.0.1", &["  2001:db8::7  "], "2001:db8::7"),
            (&t, "10.0.0.1", &["::ffff:198.51.100.1"], "198.51.100.1"),
            (&t, "::ffff:10.0.0.1", &["198.51.100.1"], "198.51.100.1"),
            (&t, "2001:db8:ffff::1", &["2001:db8::7"], "2001:db8::7"),
            (&t, "10.0.0.1", &["198.51.100.1:99999"], "10.0.0.1"),
            (&t, "10.0.0.1", &["[2001:db8::7]x"], "10.0.0.1"),
        ];
        for (trusted, peer, lines, want) in cases {
            let got = trusted.client_addr(ip(peer), lines.iter().map(|l| l.as_bytes()));
            assert_eq!(got, ip(want), "peer {peer}, X-Forwarded-For {lines:?}");
        }
        // Not UTF-8: garbled.
        let got = t.client_addr(ip("10.0.0.1"), [b"198.51.100.1, \xff".as_slice()]);
        assert_eq!(got, ip("10.0.0.1"));
    }

    #[test]
    fn at_most_64_entries_are_read() {
        let t: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let trusted_hops = vec!["10.0.0.2"; MAX_FORWARDED_ENTRIES - 1].join(", ");
        let within = format!("198.51.100.1, {trusted_hops}");
        assert_eq!(
            t.client_addr(ip("10.0.0.1"), [within.as_bytes()]),
            ip("198.51.100.1")
        );
        let past = format!("198.51.100.1, 10.0.0.9, {trusted_hops}");
        assert_eq!(
            t.client_addr(ip("10.0.0.1"), [past.as_bytes()]),
            ip("10.0.0.9"),
            "the 64th entry read is the left-most believed"
        );
        // The bound holds across header lines too.
        let lines: Vec<&[u8]> = std::iter::once(b"198.51.100.1".as_slice())
            .chain(std::iter::repeat_n(b"10.0.0.2".as_slice(), 100))
            .collect();
        assert_eq!(t.client_addr(ip("10.0.0.1"), lines), ip("10.0.0.2"));
    }

    #[test]
    fn clients_are_grouped_by_ipv4_address_and_ipv6_slash_64() {
        let cases = [
            ("192.0.2.1", "192.0.2.1"),
            ("::ffff:192.0.2.1", "192.0.2.1"),
            ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::"),
            ("2001:db8:1:2:bbbb:cccc:dddd:eeee", "2001:db8:1:2::"),
            ("2001:db8:1:3::1", "2001:db8:1:3::"),
            ("::1", "::"),
        ];
        for (addr, group) in cases {
            assert_eq!(client_group(ip(addr)), ip(group), "{addr}");
        }
        assert_ne!(
            client_group(ip("2001:db8:1:2::1")),
            client_group(ip("2001:db8:1:3::1"))
        );
    }
}
