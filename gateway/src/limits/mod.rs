//! Limits per API key and per workspace, checked before any provider is called: model
//! allowed, model priced (when a budget applies), concurrency, requests per minute,
//! tokens per minute, spend budget — in that order (expiry is refused by `auth`). Limits
//! come with the cached key, so a check never touches the database.
//!
//! Windows are calendar minutes; budgets are calendar periods in UTC. Token and spend
//! checks use an estimate ([`Estimate`]); the permit settles them from the real usage when
//! the log record is built, and releases its concurrency slot when it is dropped.
//!
//! [`policy`] holds the rules, [`local`] the counters of this process, [`shared`] the
//! counters every gateway shares through Redis (the local ones stand in, each limit
//! divided by the replica count, while Redis does not answer in time), and [`lease`] the
//! blocks of those counters each gateway takes from Redis, so that a scope with limits
//! large enough to split is admitted without a round trip per request.

pub mod lease;
pub mod local;
pub mod policy;
pub mod shared;

use std::borrow::Cow;
use std::sync::Arc;

use perpetuo_core::pricing::Pricing;
use pingora::http::ResponseHeader;

use crate::auth::AuthedKey;
use crate::errors::{ErrorKind, GatewayError};
use crate::metrics;
pub use lease::{LeaseKeeper, Leases};
use lease::{LeasePermit, NotLeased};
use local::{Local, Permit};
use perpetuo_wire::lazy_json::{LazyJson, Numbers};
pub use policy::{Estimate, Policy, Seed, DEFAULT_COMPLETION_ESTIMATE};
use policy::{Now, Refusal, Scope};
use shared::SharedPermit;
pub use shared::{RedisLink, RedisSettings, RedisStore};

/// One `x-ratelimit-*` trio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub limit: u64,
    pub remaining: u64,
    pub reset_ms: u64,
}

fn window(limit: u32, used: u64, now: &Now) -> Window {
    Window {
        limit: u64::from(limit),
        remaining: u64::from(limit).saturating_sub(used),
        reset_ms: now.minute_reset_ms(),
    }
}

/// The window with less room left.
fn tighter(a: Option<Window>, b: Window) -> Option<Window> {
    match a {
        Some(a) if a.remaining <= b.remaining => Some(a),
        _ => Some(b),
    }
}

/// What an admitted request holds until it ends.
enum Held {
    Local(Permit),
    // Boxed, as `Gate::shadow`: a shared permit is several times the size of the others,
    // and every request's context carries a gate.
    Shared(Box<SharedPermit>),
    Leased(LeasePermit),
}

/// The outcome of the checks, kept in the request's context.
#[derive(Default)]
pub struct Gate {
    permit: Option<Held>,
    /// What Redis may have admitted for a request whose call got no answer in time (the
    /// local counters admitted it): settled with it.
    shadow: Option<Box<SharedPermit>>,
    requests: Option<Window>,
    tokens: Option<Window>,
    refusal: Option<Refusal>,
    /// Made after a cache miss, for a request admitted before its lookup without an
    /// estimate: the estimate's hold on TPM and budget. The real usage settles here.
    reservation: Option<Box<Gate>>,
}

impl Gate {
    fn refused(refusal: Refusal) -> Self {
        metrics::LIMIT_REFUSALS
            .with_label_values(&[refusal.kind_label(), "key"])
            .inc();
        Gate {
            refusal: Some(refusal),
            ..Gate::default()
        }
    }

    /// Counts an admitted request in the windows it reports.
    fn count(&mut self, requests: u64, tokens: u64) {
        let dec = |w: Option<Window>, by: u64| {
            w.map(|w| Window {
                remaining: w.remaining.saturating_sub(by),
                ..w
            })
        };
        self.requests = dec(self.requests, requests);
        self.tokens = dec(self.tokens, tokens);
    }

    /// The refusal that applies: the reservation's, else the admission's.
    fn refusal(&self) -> Option<&Refusal> {
        self.reservation
            .as_ref()
            .and_then(|r| r.refusal.as_ref())
            .or(self.refusal.as_ref())
    }

    /// The refusal, if the request was refused.
    pub fn check(&self) -> Result<(), GatewayError> {
        match self.refusal() {
            Some(r) => Err(r.error.clone()),
            None => Ok(()),
        }
    }

    /// For a refused request: in how many seconds the limit may admit it (`Some(1)` when
    /// the limit names no time). `None` when admitted.
    pub fn refused_for_s(&self) -> Option<u64> {
        self.refusal().map(|r| r.retry_after_s.unwrap_or(1))
    }

    /// The log row's `error_kind` for a refusal: which limit.
    pub fn refused_kind(&self) -> Option<ErrorKind> {
        self.refusal().map(|r| r.kind)
    }

    /// Settles the permit from the real usage (once; later calls do nothing). With a
    /// reservation, the usage settles there and the admission settles at nothing.
    pub fn settle(&self, tokens: u64, cost_nusd: i64) {
        let (tokens, cost_nusd) = match &self.reservation {
            Some(r) => {
                r.settle(tokens, cost_nusd);
                (0, 0)
            }
            None => (tokens, cost_nusd),
        };
        match &self.permit {
            Some(Held::Local(p)) => p.settle(tokens, cost_nusd),
            Some(Held::Shared(p)) => p.settle(tokens, cost_nusd),
            Some(Held::Leased(p)) => p.settle(tokens, cost_nusd),
            None => {}
        }
        if let Some(s) = &self.shadow {
            s.settle(tokens, cost_nusd);
        }
    }

    /// Applies a shared settlement made by [`Gate::settle`] (or queues it); run once the
    /// request has ended, before its connection takes another request. A request admitted
    /// on leased blocks has nothing to apply: its lease reports it.
    pub async fn apply(&self) {
        if let Some(Held::Shared(p)) = &self.permit {
            p.apply().await;
        }
        if let Some(s) = &self.shadow {
            s.apply().await;
        }
        if let Some(r) = &self.reservation {
            Box::pin(r.apply()).await;
        }
    }

    /// OpenAI's rate-limit headers, and `Retry-After` on a refusal.
    pub fn write_headers(&self, h: &mut ResponseHeader) -> pingora::Result<()> {
        let tokens = match self.reservation.as_ref().and_then(|r| r.tokens) {
            Some(w) => tighter(self.tokens, w),
            None => self.tokens,
        };
        for (w, suffix) in [(self.requests, "requests"), (tokens, "tokens")] {
            if let Some(w) = w {
                h.insert_header(format!("x-ratelimit-limit-{suffix}"), w.limit.to_string())?;
                h.insert_header(
                    format!("x-ratelimit-remaining-{suffix}"),
                    w.remaining.to_string(),
                )?;
                h.insert_header(format!("x-ratelimit-reset-{suffix}"), reset(w.reset_ms))?;
            }
        }
        if let Some(s) = self.refusal().and_then(|r| r.retry_after_s) {
            h.insert_header("retry-after", s.to_string())?;
        }
        Ok(())
    }
}

/// A duration the way OpenAI writes resets: `850ms`, `12s`, `1m3s`.
fn reset(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        let s = ms.div_ceil(1000);
        if s < 60 {
            format!("{s}s")
        } else {
            format!("{}m{}s", s / 60, s % 60)
        }
    }
}

/// Which of the checks an admission makes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Part {
    /// Every check; the request is counted and its estimate held.
    #[default]
    Whole,
    /// Before a cache lookup: the request is counted (concurrency, RPM) and a TPM window
    /// or budget already used up refuses it, but no estimate is held — a hit costs
    /// neither. A miss then makes its [`Limiter::reserve`].
    Counted,
}

/// What a request is admitted on.
pub struct Admission<'a> {
    pub part: Part,
    pub model: &'a str,
    /// The model a provider will be asked for and charged by (the first candidate's),
    /// when it has a price; `None` when no candidate's model is priced.
    pub priced_model: Option<&'a str>,
    pub request: &'a LazyJson,
    pub numbers: Numbers,
}

/// The limiter: in process, or shared through Redis (on leased blocks where a scope's
/// limits are large enough, request by request otherwise) with the local one as fallback.
#[derive(Default)]
pub struct Limiter {
    local: Local,
    shared: Option<Arc<RedisStore>>,
    leases: Option<Arc<Leases>>,
}

impl Limiter {
    pub fn shared(store: Arc<RedisStore>, leases: Arc<Leases>) -> Self {
        Self {
            local: Local::default(),
            shared: Some(store),
            leases: Some(leases),
        }
    }

    /// Runs the checks for one request. Keys and workspaces without limits cost nothing:
    /// not even the estimate is made for them.
    pub async fn admit(&self, key: &AuthedKey, a: Admission<'_>, pricing: &Pricing) -> Gate {
        let (key_id, workspace_id, policy) = (key.id, key.workspace_id, &key.policy);
        if policy.is_unlimited() {
            return Gate::default();
        }
        if !policy.allows_model(a.model) {
            return Gate::refused(Refusal::model_not_allowed(a.model));
        }
        if policy.has_budget() && a.priced_model.is_none() {
            return Gate::refused(Refusal::model_not_priced(a.model));
        }
        if policy.key.is_empty() && policy.workspace.is_empty() {
            return Gate::default();
        }
        let estimate = match a.part {
            Part::Counted => Estimate::default(),
            // Only here is the body read as a tree (for its images).
            Part::Whole => estimate(&a, pricing),
        };
        self.check(Scope::Key(key_id), workspace_id, policy, estimate, true)
            .await
    }

    /// After a cache miss, for a request admitted with [`Part::Counted`]: holds its
    /// estimate against TPM and budget (a refusal lands in `gate`, as an admission's
    /// would), without counting the request again.
    pub async fn reserve(
        &self,
        gate: &mut Gate,
        key: &AuthedKey,
        a: Admission<'_>,
        pricing: &Pricing,
    ) {
        let policy = &key.policy;
        if gate.refusal.is_some() || policy.is_unlimited() {
            return;
        }
        let reserving = policy::reserving(policy);
        if reserving.key.is_empty() && reserving.workspace.is_empty() {
            return;
        }
        let estimate = estimate(&a, pricing);
        let reservation = self
            .check(
                Scope::Key(key.id),
                key.workspace_id,
                policy,
                estimate,
                false,
            )
            .await;
        gate.reservation = Some(Box::new(reservation));
    }

    /// Admits a request of `tokens` on `entry`'s own quota (requests and tokens per
    /// minute), locally or through Redis as the keys' limits are. A refusal passes the
    /// entry by; the gate, kept with the request, settles with the real usage.
    pub async fn admit_entry(
        &self,
        entry: uuid::Uuid,
        workspace_id: uuid::Uuid,
        quota: crate::routing::Quota,
        tokens: u64,
    ) -> Gate {
        let policy = Policy {
            key: perpetuo_core::db::limits::Limits {
                rpm: quota.rpm,
                tpm: quota.tpm.map(|t| u32::try_from(t).unwrap_or(u32::MAX)),
                ..Default::default()
            },
            ..Policy::default()
        };
        let estimate = Estimate {
            tokens: tokens.min(policy::MAX_EXACT as u64),
            cost_nusd: 0,
        };
        self.check(Scope::Entry(entry), workspace_id, &policy, estimate, true)
            .await
    }

    /// `counted`: the request counts toward concurrency and RPM; otherwise only the
    /// reservation part of `policy` is checked ([`policy::reserving`]).
    async fn check(
        &self,
        first: Scope,
        workspace_id: uuid::Uuid,
        policy: &Policy,
        estimate: Estimate,
        counted: bool,
    ) -> Gate {
        let part = if counted {
            Cow::Borrowed(policy)
        } else {
            Cow::Owned(policy::reserving(policy))
        };
        let Some(store) = &self.shared else {
            return self
                .local
                .admit(first, workspace_id, &part, estimate, 1, counted);
        };
        if let Some(leases) = &self.leases {
            match leases
                .admit(first, workspace_id, policy, estimate, counted)
                .await
            {
                Ok(gate) => return gate,
                Err(NotLeased::PerRequest) => {}
                Err(NotLeased::Unavailable) => {
                    return self.fallback(first, workspace_id, &part, estimate, counted, None)
                }
            }
        }
        match store
            .admit(first, workspace_id, &part, estimate, counted)
            .await
        {
            Ok(gate) => gate,
            Err(shadow) => self.fallback(first, workspace_id, &part, estimate, counted, shadow),
        }
    }

    /// The local counters stand in for Redis (each limit divided by the replica count);
    /// `shadow` is what Redis may have admitted for a call with no answer in time.
    fn fallback(
        &self,
        first: Scope,
        workspace_id: uuid::Uuid,
        policy: &Policy,
        estimate: Estimate,
        counted: bool,
        shadow: Option<SharedPermit>,
    ) -> Gate {
        metrics::LIMIT_FALLBACKS.inc();
        let replicas = self.shared.as_ref().map_or(1, |s| s.replicas);
        let mut gate = self
            .local
            .admit(first, workspace_id, policy, estimate, replicas, counted);
        match shadow {
            Some(s) if gate.refusal.is_some() => s.undo(),
            shadow => gate.shadow = shadow.map(Box::new),
        }
        gate
    }
}

fn estimate(a: &Admission<'_>, pricing: &Pricing) -> Estimate {
    Estimate::of(a.request, a.numbers, a.priced_model, pricing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_are_written_like_openai() {
        assert_eq!(reset(850), "850ms");
        assert_eq!(reset(12_000), "12s");
        assert_eq!(reset(63_000), "1m3s");
    }
}
