//! Who a request comes from, and how many requests one client may have in flight when it
//! arrives through a trusted proxy.
//!
//! Behind a load balancer the TCP peer is the balancer and its connections are pooled, so
//! the per-connection caps of [`crate::downstream`] cannot see clients. For a request from
//! a peer in `TRUSTED_PROXIES` the client is read from `X-Forwarded-For` (the right-most
//! untrusted entry), and its requests in flight are capped (`MAX_REQUESTS_PER_CLIENT`)
//! instead. IPv6 clients count by their /64.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use perpetuo_core::forwarded::{client_group, TrustedProxies};

/// Clients of this gateway: whom to believe, and the requests each has in flight.
#[derive(Debug)]
pub struct Clients {
    trusted: TrustedProxies,
    /// Requests in flight per client behind a trusted proxy (0: no cap).
    max_per_client: usize,
    /// In flight, per client group; an entry goes when its count reaches zero, so the map
    /// holds at most one entry per request in flight.
    active: Mutex<HashMap<IpAddr, usize>>,
}

/// A request's place among its client's requests in flight; freed when dropped.
#[derive(Debug)]
pub struct ClientSlot {
    clients: Arc<Clients>,
    group: IpAddr,
}

impl Clients {
    pub fn new(trusted: TrustedProxies, max_per_client: usize) -> Arc<Self> {
        Arc::new(Self {
            trusted,
            max_per_client,
            active: Mutex::new(HashMap::new()),
        })
    }

    /// Whether connections from `peer` come through a trusted proxy.
    pub fn is_proxy(&self, peer: IpAddr) -> bool {
        self.trusted.contains(peer)
    }

    /// The client of a request from `peer` with these `X-Forwarded-For` values: the peer
    /// itself unless it is a trusted proxy.
    pub fn client<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl IntoIterator<Item = &'a [u8]>,
    ) -> IpAddr {
        self.trusted.client_addr(peer, forwarded_for)
    }

    /// A place for one more request of `client`, which came through a trusted proxy;
    /// `None` past the cap.
    pub fn admit(self: &Arc<Self>, client: IpAddr) -> Option<ClientSlot> {
        let group = client_group(client);
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        let n = active.entry(group).or_insert(0);
        if self.max_per_client > 0 && *n >= self.max_per_client {
            if *n == 0 {
                active.remove(&group);
            }
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            clients: self.clone(),
            group,
        })
    }

    /// Clients with requests in flight (for tests).
    pub fn tracked(&self) -> usize {
        self.active.lock().map_or(0, |a| a.len())
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut active = self
            .clients
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = active.get_mut(&self.group) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                active.remove(&self.group);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn clients_behind_a_trusted_proxy_are_capped_each_and_ipv6_by_its_64() {
        let c = Clients::new("10.0.0.0/8".parse().unwrap(), 2);
        let proxy = ip("10.0.0.1");
        assert!(c.is_proxy(proxy));
        assert!(!c.is_proxy(ip("192.0.2.1")));
        let a = c.client(proxy, [&b"198.51.100.7, 10.0.0.2"[..]]);
        assert_eq!(a, ip("198.51.100.7"));
        // An untrusted peer's header is not read.
        assert_eq!(
            c.client(ip("192.0.2.1"), [&b"198.51.100.7"[..]]),
            ip("192.0.2.1")
        );

        let s1 = c.admit(a).unwrap();
        let s2 = c.admit(a).unwrap();
        assert!(c.admit(a).is_none(), "a third request of one client");
        assert!(c.admit(ip("198.51.100.8")).is_some(), "another client");
        // Two addresses of one /64 are one client.
        let v6 = c.admit(ip("2001:db8:1:2::1")).unwrap();
        let v6b = c.admit(ip("2001:db8:1:2:ffff::9")).unwrap();
        assert!(c.admit(ip("2001:db8:1:2::42")).is_none());
        assert!(c.admit(ip("2001:db8:1:3::1")).is_some());
        drop((s1, s2, v6, v6b));
        assert_eq!(c.tracked(), 0, "no client is kept once idle");
    }
}
