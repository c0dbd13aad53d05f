//! Shared application state handed to every handler.

use std::sync::Arc;

use perpetuo_core::crypto::MasterKey;
use perpetuo_core::db::Pool;
use perpetuo_core::dns::Resolver;
use perpetuo_core::forwarded::TrustedProxies;
use perpetuo_core::password::Hasher;
use perpetuo_core::upstream::UpstreamPolicy;

use crate::jwt::JwtKeys;
use crate::mail::Mailer;
use crate::throttle::{AuthThrottle, InvitationThrottle};

#[derive(Clone)]
pub struct AppState {
    pub inner: Arc<Inner>,
}

pub struct Inner {
    pub pool: Pool,
    pub jwt: JwtKeys,
    /// Lifetime of refresh tokens, in seconds.
    pub refresh_ttl_seconds: i64,
    pub hasher: Hasher,
    pub throttle: AuthThrottle,
    pub invitation_throttle: InvitationThrottle,
    /// `TRUSTED_PROXIES`: peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
    pub master_key: MasterKey,
    /// `SIGNUP_ENABLED`: whether `POST /auth/signup` creates accounts.
    pub signup_enabled: bool,
    pub upstream_policy: UpstreamPolicy,
    pub resolver: Resolver,
    pub gateway_url: String,
    /// `TRACE_URL_TEMPLATE`: where the dashboard links a trace.
    pub trace_url_template: Option<String>,
    pub mailer: Mailer,
    /// Base URL of the dashboard in emailed links.
    pub public_url: String,
    /// Whether unverified accounts are kept from creating API keys and providers.
    pub verification_required: bool,
    pub resend_cooldown_seconds: i64,
    /// Days a deleted workspace's logs and counters are kept.
    pub deleted_retention_days: u32,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}
