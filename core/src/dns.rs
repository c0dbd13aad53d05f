//! Asynchronous, cached DNS resolution (hickory) for provider hosts, checked against the
//! upstream policy so that a name cannot be pointed at a private address later.

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

    /// Every address of `host` (a literal address resolves to itself), each checked
    /// against `policy`.
    pub async fn resolve_checked(
        &self,
        host: &str,
        policy: &UpstreamPolicy,
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
        policy.check_resolved(&addrs)?;
        Ok(addrs)
    }
}
