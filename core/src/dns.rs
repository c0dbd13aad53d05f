//! Asynchronous, cached DNS resolution (hickory) for provider hosts, checked against the
//! upstream policy so that a name cannot be pointed at a private address later: only the
//! addresses the policy lets a connection reach are returned (see
//! [`UpstreamPolicy::usable`]).

use std::net::IpAddr;

use hickory_resolver::TokioAsyncResolver;

use crate::upstream::{UpstreamError, UpstreamPolicy};

#[derive(Clone)]
pub struct Resolver {
    inner: TokioAsyncResolver,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot resolve host: {0}")]
    Lookup(String),
    #[error(transparent)]
    Policy(#[from] UpstreamError),
}

impl Resolver {
    /// Uses the system's resolver configuration, falling back to defaults without one.
    pub fn from_system() -> Self {
        let inner = TokioAsyncResolver::tokio_from_system_conf()
            .unwrap_or_else(|_| TokioAsyncResolver::tokio(Default::default(), Default::default()));
        Self { inner }
    }

    /// The system's resolver, with `extra` (lines in `/etc/hosts` format) beside the
    /// system's hosts file: names a test can resolve without editing the machine's files
    /// or running a DNS server, such as a compose service's dotless name.
    #[cfg(any(test, feature = "test-util"))]
    pub fn from_system_with_hosts(extra: &str) -> Self {
        let mut inner = Self::from_system().inner;
        let hosts = hickory_resolver::Hosts::new()
            .read_hosts_conf(extra.as_bytes())
            .unwrap_or_default();
        inner.set_hosts(Some(hosts));
        Self { inner }
    }

    /// The addresses of `host` (a literal address resolves to itself) a connection may go
    /// to under `policy` — over plain HTTP when `plaintext` — in the resolver's order;
    /// a policy error when it resolves only to refused addresses.
    pub async fn resolve_checked(
        &self,
        host: &str,
        policy: &UpstreamPolicy,
        plaintext: bool,
    ) -> Result<Vec<IpAddr>, ResolveError> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => self
                .inner
                .lookup_ip(host)
                .await
                .map_err(|e| ResolveError::Lookup(e.to_string()))?
                .iter()
                .collect(),
        };
        if addrs.is_empty() {
            return Err(ResolveError::Lookup(format!("{host} has no addresses")));
        }
        Ok(policy.usable(&addrs, plaintext)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_resolve_to_the_addresses_the_policy_allows() {
        let resolver = Resolver::from_system_with_hosts("127.0.0.1 ollama\n::1 ollama\n");
        let policy: UpstreamPolicy = "127.0.0.1/32".parse().unwrap();
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        // A dotless name, as a compose service is called, and localhost.
        for host in ["ollama", "localhost"] {
            let addrs = resolver.resolve_checked(host, &policy, true).await.unwrap();
            assert_eq!(addrs, vec![loopback], "{host}");
        }
        let closed = UpstreamPolicy::default();
        assert!(matches!(
            resolver.resolve_checked("ollama", &closed, false).await,
            Err(ResolveError::Policy(UpstreamError::PrivateAddress))
        ));
        // Plain HTTP never reaches a public address, whatever names it.
        assert!(matches!(
            resolver.resolve_checked("8.8.8.8", &policy, true).await,
            Err(ResolveError::Policy(UpstreamError::Scheme))
        ));
        assert!(resolver
            .resolve_checked("[2a00:1450:4001::200e]", &policy, false)
            .await
            .is_ok());
    }
}
