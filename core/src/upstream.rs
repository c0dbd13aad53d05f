//! Where provider base URLs may point. A base URL must be `https://` and must not name or
//! resolve to loopback, private, link-local, metadata or otherwise non-public addresses
//! (including IPv4-mapped IPv6 forms and numeric spellings, which the URL parser
//! normalises, and the IPv6 transition ranges — 6to4, Teredo, NAT64, IPv4-compatible and
//! -translated — through which an IPv6 address can reach any IPv4 one, private included),
//! unless the operator lists the address range in `ALLOWED_PRIVATE_UPSTREAMS` — then
//! `http://` is accepted too. `169.254.0.0/16` (cloud metadata) is never allowed, whether
//! written as IPv4 or embedded in an IPv6 address.
//!
//! A host name (`localhost`, a compose service such as `ollama`, a LAN name) is judged by
//! the addresses it resolves to, with the same two rules: [`UpstreamPolicy::usable`] keeps
//! the addresses a connection may go to — public ones over TLS, allowed private ones over
//! TLS or plain HTTP — and refuses a name with none. The admin API applies it when an
//! entry is written and the gateway before every connection, so a name re-pointed later
//! reaches no other address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::IpNet;
use url::{Host, Url};

#[derive(Debug, Clone, Default)]
pub struct UpstreamPolicy {
    allowed_private: Vec<IpNet>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UpstreamError {
    #[error("base_url is not a valid URL")]
    Invalid,
    #[error(
        "base_url must use https (http:// is accepted only for servers whose addresses \
         ALLOWED_PRIVATE_UPSTREAMS lists)"
    )]
    Scheme,
    #[error("base_url must not carry credentials, a query or a fragment")]
    Extras,
    #[error(
        "base_url points to a private, loopback or link-local address; to use a server on \
         your network (Ollama, vLLM, a test mock), add its range to ALLOWED_PRIVATE_UPSTREAMS \
         on the admin API and the gateway, e.g. 127.0.0.0/8 (169.254.0.0/16 is never allowed)"
    )]
    PrivateAddress,
    #[error(
        "base_url names a local host; to use a server on your machine or network, add the \
         range its name resolves to to ALLOWED_PRIVATE_UPSTREAMS on the admin API and the \
         gateway, e.g. 127.0.0.1/32 for localhost"
    )]
    LocalName,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("ALLOWED_PRIVATE_UPSTREAMS: `{0}` is not a CIDR (e.g. 10.0.0.0/8) or an IP address")]
pub struct PolicyParseError(pub String);

impl FromStr for UpstreamPolicy {
    type Err = PolicyParseError;

    /// Comma-separated CIDRs or single addresses; empty means none.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut allowed_private = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let net = IpNet::from_str(part)
                .or_else(|_| IpAddr::from_str(part).map(IpNet::from))
                .map_err(|_| PolicyParseError(part.to_string()))?;
            allowed_private.push(net);
        }
        Ok(Self { allowed_private })
    }
}

/// A parsed base URL that passed the policy's static checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderBaseUrl(Url);

impl ProviderBaseUrl {
    pub fn as_str(&self) -> &str {
        self.0.as_str().trim_end_matches('/')
    }

    pub fn url(&self) -> &Url {
        &self.0
    }

    /// The host name, when the URL names one rather than a literal address.
    pub fn domain(&self) -> Option<&str> {
        self.0.domain()
    }

    /// Whether the connection would be plain HTTP.
    pub fn plaintext(&self) -> bool {
        self.0.scheme() == "http"
    }

    /// Whether the URL is acceptable only once its name has resolved to allowed
    /// addresses: a plain-HTTP name, or a name that is local by its spelling. A public
    /// `https://` name that does not resolve from the admin API is accepted (the gateway's
    /// network may see it; it checks the addresses before every connection).
    pub fn needs_resolution(&self) -> bool {
        self.domain()
            .is_some_and(|name| self.plaintext() || is_local_name(name))
    }
}

/// Names that can only be local: `localhost` and its subdomains, mDNS `.local`,
/// `.internal`, the bare `metadata`, and dotless names (a compose service, a search-domain
/// host).
fn is_local_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.ends_with(".local")
        || name.ends_with(".internal")
        || name == "metadata"
        || !name.contains('.')
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// The IPv4 addresses an IPv6 address carries in the transition formats: the low 32
/// bits of IPv4-compatible, -translated and NAT64 (64:ff9b::/96, 64:ff9b:1::/48)
/// addresses, bits 16–48 of 6to4 (2002::/16), and both the server and the (inverted)
/// client address of Teredo (2001::/32).
fn embedded_v4(v6: Ipv6Addr) -> Vec<Ipv4Addr> {
    let s = v6.segments();
    let pair = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    let low = pair(s[6], s[7]);
    match s {
        [0, 0, 0, 0, 0, 0, _, _] | [0, 0, 0, 0, 0xffff, 0, _, _] => vec![low],
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => vec![low],
        [0x64, 0xff9b, 1, ..] => vec![low],
        [0x2002, hi, lo, ..] => vec![pair(hi, lo)],
        [0x2001, 0, hi, lo, ..] => vec![pair(hi, lo), pair(!s[6], !s[7])],
        _ => Vec::new(),
    }
}

fn is_metadata(ip: IpAddr) -> bool {
    let v4_metadata = |v4: Ipv4Addr| v4.octets()[0] == 169 && v4.octets()[1] == 254;
    match canonical(ip) {
        IpAddr::V4(v4) => v4_metadata(v4),
        IpAddr::V6(v6) => {
            v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
                || embedded_v4(v6).into_iter().any(v4_metadata)
        }
    }
}

fn is_public_v4(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    !(v4.is_unspecified()
        || v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_broadcast()
        || v4.is_documentation()
        || v4.is_multicast()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10 shared address space
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24 protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15 benchmarking
        || o[0] >= 240)
}

/// Only global unicast (2000::/3) outside the special-purpose blocks is public. The
/// transition ranges are refused whatever they embed: a gateway with a 6to4 relay, a
/// Teredo client or a NAT64 resolver path would reach the embedded IPv4 address.
fn is_public_v6(v6: Ipv6Addr) -> bool {
    let seg = v6.segments();
    // Global unicast 2000::/3; everything outside it is reserved, local or multicast.
    let global_unicast = (seg[0] & 0xe000) == 0x2000;
    let special_purpose = match seg[0] {
        // 2001::/23 IETF protocol assignments (Teredo 2001::/32, benchmarking, ORCHID)
        // and 2001:db8::/32 documentation.
        0x2001 => seg[1] < 0x0200 || seg[1] == 0x0db8,
        0x2002 => true,            // 6to4
        0x3fff => seg[1] < 0x1000, // 3fff::/20 documentation
        _ => false,
    };
    global_unicast && !special_purpose
}

pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

impl UpstreamPolicy {
    pub fn allows_private(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.allowed_private.iter().any(|net| net.contains(&ip))
    }

    /// Whether a connection to `ip` is allowed over TLS.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), UpstreamError> {
        self.check_connect(ip, false)
    }

    /// Whether a connection to `ip` is allowed: never to metadata; to a public address
    /// over TLS only; to a private one only when its range is allowed (TLS or not).
    pub fn check_connect(&self, ip: IpAddr, plaintext: bool) -> Result<(), UpstreamError> {
        if is_metadata(ip) {
            return Err(UpstreamError::PrivateAddress);
        }
        if is_public(ip) {
            return if plaintext {
                Err(UpstreamError::Scheme)
            } else {
                Ok(())
            };
        }
        if self.allows_private(ip) {
            Ok(())
        } else {
            Err(UpstreamError::PrivateAddress)
        }
    }

    /// Static checks: scheme, credentials, literal addresses, and names that no address
    /// could make acceptable while no private range is allowed. Other names are judged by
    /// what they resolve to, with [`UpstreamPolicy::usable`].
    pub fn parse_base_url(&self, raw: &str) -> Result<ProviderBaseUrl, UpstreamError> {
        let url = Url::parse(raw.trim()).map_err(|_| UpstreamError::Invalid)?;
        if !url.username().is_empty()
            || url.password().is_some()
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(UpstreamError::Extras);
        }
        let plaintext = match url.scheme() {
            "https" => false,
            "http" => true,
            _ => return Err(UpstreamError::Scheme),
        };
        match url.host().ok_or(UpstreamError::Invalid)? {
            Host::Ipv4(v4) => self.check_connect(IpAddr::V4(v4), plaintext)?,
            Host::Ipv6(v6) => self.check_connect(IpAddr::V6(v6), plaintext)?,
            // Without an allowed private range, a local name or plain HTTP cannot pass
            // whatever the name resolves to: say so without a lookup.
            Host::Domain(name) if self.allowed_private.is_empty() => {
                if is_local_name(name) {
                    return Err(UpstreamError::LocalName);
                }
                if plaintext {
                    return Err(UpstreamError::Scheme);
                }
            }
            Host::Domain(_) => {}
        }
        Ok(ProviderBaseUrl(url))
    }

    /// The addresses of a resolved name a connection may go to (see
    /// [`UpstreamPolicy::check_connect`]), in their order; the first refusal when none
    /// may.
    pub fn usable(&self, addrs: &[IpAddr], plaintext: bool) -> Result<Vec<IpAddr>, UpstreamError> {
        let mut refusal = None;
        let usable: Vec<IpAddr> = addrs
            .iter()
            .copied()
            .filter(|ip| match self.check_connect(*ip, plaintext) {
                Ok(()) => true,
                Err(e) => {
                    refusal.get_or_insert(e);
                    false
                }
            })
            .collect();
        match (usable.is_empty(), refusal) {
            (false, _) => Ok(usable),
            (true, Some(e)) => Err(e),
            (true, None) => Err(UpstreamError::Invalid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_local_and_private_by_default() {
        let p = UpstreamPolicy::default();
        assert!(p.parse_base_url("https://api.openai.com/v1").is_ok());
        for bad in [
            "http://api.openai.com/v1",
            "https://127.0.0.1/v1",
            "https://localhost/v1",
            "https://LOCALHOST./v1",
            "https://foo.localhost/v1",
            "https://10.1.2.3/v1",
            "https://192.168.0.1",
            "https://172.16.0.1",
            "https://169.254.169.254/latest",
            "https://[::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://[::ffff:169.254.169.254]/",
            "https://[fe80::1]/",
            "https://[fd00::1]/",
            "https://2130706433/",
            "https://0x7f.0.0.1/",
            "https://0177.0.0.1/",
            "https://017700000001/",
            "https://0/",
            "https://100.64.0.1/",
            "https://user:pw@api.openai.com/",
            "ftp://api.openai.com/",
            "not a url",
        ] {
            assert!(p.parse_base_url(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn operator_allowed_ranges() {
        let p: UpstreamPolicy = "127.0.0.0/8, 10.0.0.0/8,169.254.0.0/16".parse().unwrap();
        assert!(p.parse_base_url("http://127.0.0.1:8000/v1").is_ok());
        assert!(p.parse_base_url("https://10.2.3.4/v1").is_ok());
        assert!(p.parse_base_url("http://[::ffff:127.0.0.1]:9/").is_ok());
        assert!(p.parse_base_url("http://169.254.169.254/").is_err());
        assert!(p.parse_base_url("http://192.168.1.1/").is_err());
        assert!(p.usable(&["127.0.0.1".parse().unwrap()], true).is_ok());
        assert!("10.0.0.0/33".parse::<UpstreamPolicy>().is_err());
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn names_are_judged_by_the_addresses_they_resolve_to() {
        let p: UpstreamPolicy = "127.0.0.1/32, 10.0.0.0/8".parse().unwrap();
        // Any name passes the static checks once a private range is allowed; its
        // addresses decide.
        for url in [
            "http://localhost:8000/v1",
            "http://ollama:11434/v1",
            "https://vllm.internal/v1",
            "http://api.example.com/v1",
        ] {
            let parsed = p.parse_base_url(url).unwrap();
            assert!(parsed.needs_resolution(), "{url}");
        }
        let public = p.parse_base_url("https://api.openai.com/v1").unwrap();
        assert!(!public.needs_resolution());
        assert!(!p
            .parse_base_url("http://127.0.0.1:9/v1")
            .unwrap()
            .needs_resolution());

        // localhost resolving to both loopbacks: only the allowed one is used.
        assert_eq!(
            p.usable(&ips(&["::1", "127.0.0.1"]), true),
            Ok(ips(&["127.0.0.1"]))
        );
        assert_eq!(
            p.usable(&ips(&["::1", "127.0.0.2"]), true),
            Err(UpstreamError::PrivateAddress)
        );
        // Plain HTTP never goes to a public address; TLS does.
        assert_eq!(
            p.usable(&ips(&["8.8.8.8"]), true),
            Err(UpstreamError::Scheme)
        );
        assert_eq!(
            p.usable(&ips(&["8.8.8.8", "10.1.1.1"]), true),
            Ok(ips(&["10.1.1.1"]))
        );
        assert_eq!(
            p.usable(&ips(&["8.8.8.8", "192.168.1.1"]), false),
            Ok(ips(&["8.8.8.8"]))
        );
        // Metadata stays out even inside an allowed range.
        let wide: UpstreamPolicy = "0.0.0.0/0".parse().unwrap();
        assert_eq!(
            wide.usable(&ips(&["169.254.169.254"]), true),
            Err(UpstreamError::PrivateAddress)
        );
        assert_eq!(
            wide.usable(&ips(&["169.254.169.254", "10.0.0.1"]), true),
            Ok(ips(&["10.0.0.1"]))
        );
    }

    #[test]
    fn without_an_allowed_range_local_names_and_plain_http_are_refused_unresolved() {
        let p = UpstreamPolicy::default();
        assert_eq!(
            p.parse_base_url("http://localhost:8000/v1"),
            Err(UpstreamError::LocalName)
        );
        assert_eq!(
            p.parse_base_url("https://ollama:11434/v1"),
            Err(UpstreamError::LocalName)
        );
        assert_eq!(
            p.parse_base_url("http://api.example.com/v1"),
            Err(UpstreamError::Scheme)
        );
        assert_eq!(
            p.parse_base_url("http://8.8.8.8/v1"),
            Err(UpstreamError::Scheme)
        );
    }

    #[test]
    fn ipv6_transition_and_special_ranges_are_refused() {
        let p = UpstreamPolicy::default();
        for bad in [
            "::",
            "::1",
            "::10.0.0.1",                           // IPv4-compatible
            "::ffff:10.0.0.1",                      // IPv4-mapped private
            "::ffff:8.8.8.8",                       // IPv4-mapped public is that public address...
            "::ffff:0:10.0.0.1",                    // IPv4-translated
            "64:ff9b::8.8.8.8",                     // NAT64 well-known prefix
            "64:ff9b::10.0.0.1",                    // NAT64 to a private address
            "64:ff9b:1::a00:1",                     // NAT64 local-use prefix
            "2002:a00:1::1",                        // 6to4 embedding 10.0.0.1
            "2002:808:808::1", // 6to4 embedding a public address: still a relay path
            "2001:0:4136:e378:8000:63bf:3fff:fdd2", // Teredo
            "2001:2::1",       // benchmarking
            "2001:20::1",      // ORCHIDv2
            "2001:db8::1",     // documentation
            "3fff::1",         // documentation (RFC 9637)
            "100::1",          // discard-only
            "fc00::1",
            "fd12:3456::1", // unique local
            "fe80::1",      // link-local
            "fec0::1",      // site-local (deprecated, still routed by some stacks)
            "feff::1",
            "ff02::1", // multicast
            "5f00::1", // SRv6 SIDs
        ] {
            let ip: IpAddr = bad.parse().unwrap();
            let public = bad == "::ffff:8.8.8.8";
            assert_eq!(is_public(ip), public, "{bad}");
            if !public {
                let url = format!("https://[{bad}]/v1");
                assert_eq!(
                    p.parse_base_url(&url),
                    Err(UpstreamError::PrivateAddress),
                    "{bad}"
                );
                assert!(p.usable(&[ip], false).is_err(), "{bad}");
            }
        }
        for good in [
            "2606:4700::6810:84e5",
            "2a00:1450:4001::200e",
            "2001:4860::8888",
        ] {
            let ip: IpAddr = good.parse().unwrap();
            assert!(is_public(ip), "{good}");
            assert!(p.parse_base_url(&format!("https://[{good}]/v1")).is_ok());
        }
    }

    #[test]
    fn embedded_metadata_is_refused_even_when_its_range_is_allowed() {
        let p: UpstreamPolicy = "64:ff9b::/96, 2002::/16, 2001::/32, ::/96, 10.0.0.0/8"
            .parse()
            .unwrap();
        assert!(p.check_ip("64:ff9b::10.0.0.1".parse().unwrap()).is_ok());
        for bad in [
            "64:ff9b::169.254.169.254",
            "64:ff9b:1::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "::169.254.169.254",
            "::ffff:169.254.169.254",
            "::ffff:0:169.254.169.254",
            // Teredo carries the client address inverted in its last 32 bits.
            "2001:0:4136:e378:8000:63bf:5601:5601",
        ] {
            assert_eq!(
                p.check_ip(bad.parse().unwrap()),
                Err(UpstreamError::PrivateAddress),
                "{bad}"
            );
        }
    }
}
