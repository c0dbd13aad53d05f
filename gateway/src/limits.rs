//! Limits per API key and per workspace, checked before any provider is called: model
//! allowed, concurrency, requests per minute, tokens per minute, spend budget — in that
//! order (expiry is refused by `auth`). Limits come with the cached key, so a check never
//! touches the database; counters live in this process, bounded in number.
//!
//! Windows are calendar minutes; budgets are calendar periods in UTC. Token and spend
//! checks use an estimate (prompt from the body size, completion from `max_tokens` or a
//! default); the permit settles them from the real usage when the log record is built,
//! and releases its concurrency slot when it is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use perpetuo_core::db::limits::{Limits, Period};
use perpetuo_core::pricing::{Pricing, TokenCounts};
use pingora::http::ResponseHeader;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::errors::GatewayError;
use crate::metrics;

/// Completion tokens assumed for a request that sets no `max_tokens`.
pub const DEFAULT_COMPLETION_ESTIMATE: u64 = 256;

/// Bound on the scopes (keys and workspaces) with counters; idle ones go first.
const MAX_SCOPES: usize = 200_000;

/// What the key carries from the database for its limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub key: Limits,
    pub workspace: Limits,
    /// Exact names and `prefix*` patterns; empty allows all.
    pub allowed_models: Vec<String>,
    /// Spend recorded in PostgreSQL for the key's / workspace's period, when loaded.
    pub key_seed: Option<Seed>,
    pub workspace_seed: Option<Seed>,
}

/// Spend of one budget period as PostgreSQL knew it when the key was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seed {
    pub period_start: OffsetDateTime,
    pub spent_nusd: i64,
}

impl Policy {
    fn is_unlimited(&self) -> bool {
        self.key.is_empty() && self.workspace.is_empty() && self.allowed_models.is_empty()
    }

    pub fn allows_model(&self, model: &str) -> bool {
        self.allowed_models.is_empty()
            || self
                .allowed_models
                .iter()
                .any(|p| match p.strip_suffix('*') {
                    Some(prefix) => model.starts_with(prefix),
                    None => p == model,
                })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Scope {
    Key(Uuid),
    Workspace(Uuid),
}

impl Scope {
    fn label(self) -> &'static str {
        match self {
            Scope::Key(_) => "key",
            Scope::Workspace(_) => "workspace",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Scope::Key(_) => "API key",
            Scope::Workspace(_) => "workspace",
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    inflight: u32,
    minute: i64,
    requests: u64,
    tokens: u64,
    period_start: i64,
    spent_nusd: i64,
    /// Estimated cost of admitted requests not settled yet.
    reserved_nusd: i64,
}

impl Counters {
    fn roll(&mut self, minute: i64, period_start: i64, seed: Option<Seed>) {
        if self.minute != minute {
            self.minute = minute;
            self.requests = 0;
            self.tokens = 0;
        }
        if self.period_start != period_start {
            self.period_start = period_start;
            self.spent_nusd = 0;
        }
        if let Some(s) = seed.filter(|s| s.period_start.unix_timestamp() == period_start) {
            self.spent_nusd = self.spent_nusd.max(s.spent_nusd);
        }
    }
}

type Shared = Arc<Mutex<Counters>>;

fn lock(c: &Shared) -> MutexGuard<'_, Counters> {
    // A poisoned counter is still a counter: the panic happened elsewhere.
    c.lock().unwrap_or_else(|p| p.into_inner())
}

/// The limiter of one gateway process.
#[derive(Default)]
pub struct Limiter {
    scopes: Mutex<HashMap<Scope, Shared>>,
}

/// One request's estimate.
#[derive(Debug, Clone, Copy, Default)]
pub struct Estimate {
    pub tokens: u64,
    pub cost_nusd: i64,
}

impl Estimate {
    /// Prompt tokens from the body size (about four bytes a token), completion from the
    /// request's own cap or `DEFAULT_COMPLETION_ESTIMATE`; the cost at `model`'s price.
    pub fn of(request: &Value, body_len: usize, model: &str, pricing: &Pricing) -> Self {
        let prompt = (body_len / 4) as u64;
        let completion = ["max_tokens", "max_completion_tokens", "max_output_tokens"]
            .iter()
            .find_map(|k| request.get(*k).and_then(Value::as_u64))
            .unwrap_or(DEFAULT_COMPLETION_ESTIMATE);
        let counts = TokenCounts {
            prompt_tokens: prompt,
            completion_tokens: completion,
            cached_tokens: 0,
            cache_write_tokens: 0,
        };
        Self {
            tokens: prompt.saturating_add(completion),
            cost_nusd: pricing.cost_nusd(model, &counts).unwrap_or(0),
        }
    }
}

/// One `x-ratelimit-*` trio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub limit: u64,
    pub remaining: u64,
    pub reset_ms: u64,
}

/// The outcome of the checks, kept in the request's context.
#[derive(Default)]
pub struct Gate {
    permit: Option<Permit>,
    requests: Option<Window>,
    tokens: Option<Window>,
    refusal: Option<Refusal>,
}

struct Refusal {
    error: GatewayError,
    kind: &'static str,
    retry_after_s: Option<u64>,
}

impl Gate {
    /// The refusal, if the request was refused.
    pub fn check(&self) -> Result<(), GatewayError> {
        match &self.refusal {
            Some(r) => Err(r.error.clone()),
            None => Ok(()),
        }
    }

    /// The log row's `error_kind` for a refusal: which limit.
    pub fn refused_kind(&self) -> Option<&'static str> {
        self.refusal.as_ref().map(|r| r.kind)
    }

    /// Settles the permit from the real usage (once; later calls do nothing).
    pub fn settle(&self, tokens: u64, cost_nusd: i64) {
        if let Some(p) = &self.permit {
            p.settle(tokens, cost_nusd);
        }
    }

    /// OpenAI's rate-limit headers, and `Retry-After` on a refusal.
    pub fn write_headers(&self, h: &mut ResponseHeader) -> pingora::Result<()> {
        for (w, suffix) in [(self.requests, "requests"), (self.tokens, "tokens")] {
            if let Some(w) = w {
                h.insert_header(format!("x-ratelimit-limit-{suffix}"), w.limit.to_string())?;
                h.insert_header(
                    format!("x-ratelimit-remaining-{suffix}"),
                    w.remaining.to_string(),
                )?;
                h.insert_header(format!("x-ratelimit-reset-{suffix}"), reset(w.reset_ms))?;
            }
        }
        if let Some(s) = self.refusal.as_ref().and_then(|r| r.retry_after_s) {
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

/// An admitted request's hold on its scopes: the concurrency slot (released on drop) and
/// the token and spend estimates (replaced by the real usage in `settle`).
pub struct Permit {
    scopes: Vec<(Shared, bool)>,
    estimate: Estimate,
    minute: i64,
    settled: AtomicBool,
}

impl Permit {
    fn settle(&self, tokens: u64, cost_nusd: i64) {
        if self.settled.swap(true, Ordering::AcqRel) {
            return;
        }
        for (c, _) in &self.scopes {
            let mut c = lock(c);
            if c.minute == self.minute {
                c.tokens = c.tokens.saturating_sub(self.estimate.tokens);
            }
            c.tokens = c.tokens.saturating_add(tokens);
            c.reserved_nusd = c.reserved_nusd.saturating_sub(self.estimate.cost_nusd);
            c.spent_nusd = c.spent_nusd.saturating_add(cost_nusd.max(0));
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let settled = self.settled.load(Ordering::Acquire);
        for (c, holds_slot) in &self.scopes {
            let mut c = lock(c);
            if *holds_slot {
                c.inflight = c.inflight.saturating_sub(1);
            }
            if !settled {
                // Never settled: the estimate stays counted as tokens, the reservation goes.
                c.reserved_nusd = c.reserved_nusd.saturating_sub(self.estimate.cost_nusd);
            }
        }
    }
}

struct Now {
    ms: i64,
    minute: i64,
    at: OffsetDateTime,
}

impl Now {
    fn get() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Self {
            ms,
            minute: ms.div_euclid(60_000),
            at: OffsetDateTime::now_utc(),
        }
    }

    fn minute_reset_ms(&self) -> u64 {
        u64::try_from(60_000 - self.ms.rem_euclid(60_000)).unwrap_or(60_000)
    }
}

impl Limiter {
    fn counters(&self, scope: Scope) -> Shared {
        let mut map = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(&scope) {
            return c.clone();
        }
        if map.len() >= MAX_SCOPES {
            // Keep the scopes some request holds; the others restart from zero (budgets
            // are re-seeded from PostgreSQL when their key is loaded again).
            map.retain(|_, c| Arc::strong_count(c) > 1);
        }
        let c = Shared::default();
        map.insert(scope, c.clone());
        c
    }

    /// Runs the checks for one request. Keys and workspaces without limits cost nothing.
    pub fn admit(
        &self,
        key_id: Uuid,
        workspace_id: Uuid,
        policy: &Policy,
        model: &str,
        estimate: Estimate,
    ) -> Gate {
        if policy.is_unlimited() {
            return Gate::default();
        }
        if !policy.allows_model(model) {
            metrics::LIMIT_REFUSALS
                .with_label_values(&["model", "key"])
                .inc();
            return Gate {
                refusal: Some(Refusal {
                    error: GatewayError::model_not_allowed(model),
                    kind: "model_not_allowed",
                    retry_after_s: None,
                }),
                ..Gate::default()
            };
        }
        let now = Now::get();
        let mut scopes = Vec::with_capacity(2);
        for (scope, limits, seed) in [
            (Scope::Key(key_id), &policy.key, policy.key_seed),
            (
                Scope::Workspace(workspace_id),
                &policy.workspace,
                policy.workspace_seed,
            ),
        ] {
            if !limits.is_empty() {
                scopes.push((scope, *limits, seed, self.counters(scope)));
            }
        }
        // Key before workspace, always: the locks are taken in one order.
        let mut guards: Vec<MutexGuard<'_, Counters>> =
            scopes.iter().map(|(_, _, _, c)| lock(c)).collect();
        for ((_, limits, seed, _), g) in scopes.iter().zip(guards.iter_mut()) {
            let start = limits.budget_period.start(now.at).unix_timestamp();
            g.roll(now.minute, start, *seed);
        }

        let mut gate = Gate::default();
        let window = |limit: u32, used: u64| Window {
            limit: u64::from(limit),
            remaining: u64::from(limit).saturating_sub(used),
            reset_ms: now.minute_reset_ms(),
        };
        let tighter = |a: Option<Window>, b: Window| match a {
            Some(a) if a.remaining <= b.remaining => Some(a),
            _ => Some(b),
        };
        for ((scope, limits, _, _), g) in scopes.iter().zip(guards.iter()) {
            if let Some(rpm) = limits.rpm {
                gate.requests = tighter(gate.requests, window(rpm, g.requests));
            }
            if let Some(tpm) = limits.tpm {
                gate.tokens = tighter(gate.tokens, window(tpm, g.tokens));
            }
            let refusal = refuse(*scope, limits, g, estimate, &now);
            if let Some(r) = refusal {
                metrics::LIMIT_REFUSALS
                    .with_label_values(&[r.kind_label(), scope.label()])
                    .inc();
                gate.refusal = Some(r);
                return gate;
            }
        }
        let mut held = Vec::with_capacity(scopes.len());
        for ((_, limits, _, _), g) in scopes.iter().zip(guards.iter_mut()) {
            g.requests = g.requests.saturating_add(1);
            g.tokens = g.tokens.saturating_add(estimate.tokens);
            g.reserved_nusd = g.reserved_nusd.saturating_add(estimate.cost_nusd);
            let slot = limits.concurrency.is_some();
            if slot {
                g.inflight = g.inflight.saturating_add(1);
            }
            held.push(slot);
        }
        drop(guards);
        let dec = |w: Option<Window>, by: u64| {
            w.map(|w| Window {
                remaining: w.remaining.saturating_sub(by),
                ..w
            })
        };
        gate.requests = dec(gate.requests, 1);
        gate.tokens = dec(gate.tokens, estimate.tokens);
        gate.permit = Some(Permit {
            scopes: scopes
                .into_iter()
                .zip(held)
                .map(|((_, _, _, c), h)| (c, h))
                .collect(),
            estimate,
            minute: now.minute,
            settled: AtomicBool::new(false),
        });
        gate
    }
}

impl Refusal {
    fn kind_label(&self) -> &'static str {
        match self.kind {
            "concurrency_limit" => "concurrency",
            "rate_limit_rpm" => "rpm",
            "rate_limit_tpm" => "tpm",
            "budget_exceeded" => "budget",
            _ => "model",
        }
    }
}

/// The first limit of `scope` the request would break, in the documented order.
fn refuse(
    scope: Scope,
    limits: &Limits,
    c: &Counters,
    estimate: Estimate,
    now: &Now,
) -> Option<Refusal> {
    let retry_minute = now.minute_reset_ms().div_ceil(1000).max(1);
    if let Some(max) = limits.concurrency.filter(|m| c.inflight >= *m) {
        return Some(Refusal {
            error: GatewayError::limit_exceeded(
                "concurrent requests",
                scope.noun(),
                u64::from(max),
                1,
            ),
            kind: "concurrency_limit",
            retry_after_s: Some(1),
        });
    }
    if let Some(rpm) = limits.rpm.filter(|m| c.requests >= u64::from(*m)) {
        return Some(Refusal {
            error: GatewayError::limit_exceeded(
                "requests per minute (RPM)",
                scope.noun(),
                u64::from(rpm),
                retry_minute,
            ),
            kind: "rate_limit_rpm",
            retry_after_s: Some(retry_minute),
        });
    }
    // The first request of a minute always passes, or one larger than the whole limit
    // could never be served.
    if let Some(tpm) = limits
        .tpm
        .filter(|m| c.tokens > 0 && c.tokens.saturating_add(estimate.tokens) > u64::from(*m))
    {
        return Some(Refusal {
            error: GatewayError::limit_exceeded(
                "tokens per minute (TPM)",
                scope.noun(),
                u64::from(tpm),
                retry_minute,
            ),
            kind: "rate_limit_tpm",
            retry_after_s: Some(retry_minute),
        });
    }
    if let Some(budget) = limits.budget_nusd {
        let committed = c.spent_nusd.saturating_add(c.reserved_nusd);
        if c.spent_nusd >= budget || committed.saturating_add(estimate.cost_nusd) > budget {
            let end = limits.budget_period.end(now.at);
            let wait = (end - now.at).whole_seconds().max(1);
            return Some(Refusal {
                error: GatewayError::budget_exhausted(
                    scope.noun(),
                    period_noun(limits.budget_period),
                ),
                kind: "budget_exceeded",
                retry_after_s: u64::try_from(wait).ok(),
            });
        }
    }
    None
}

fn period_noun(p: Period) -> &'static str {
    p.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(key: Limits) -> Policy {
        Policy {
            key,
            ..Policy::default()
        }
    }

    #[test]
    fn patterns_allow_exact_names_and_prefixes() {
        let p = Policy {
            allowed_models: vec!["gpt-4o-mini".into(), "claude-*".into()],
            ..Policy::default()
        };
        assert!(p.allows_model("gpt-4o-mini"));
        assert!(p.allows_model("claude-3-haiku"));
        assert!(!p.allows_model("gpt-4o"));
        assert!(!p.allows_model("gpt-4o-mini-2"));
        assert!(Policy::default().allows_model("anything"));
    }

    #[test]
    fn concurrency_slot_is_released_on_drop() {
        let l = Limiter::default();
        let p = policy(Limits {
            concurrency: Some(1),
            ..Limits::default()
        });
        let (k, w) = (Uuid::now_v7(), Uuid::now_v7());
        let first = l.admit(k, w, &p, "m", Estimate::default());
        assert!(first.check().is_ok());
        let second = l.admit(k, w, &p, "m", Estimate::default());
        assert_eq!(second.refused_kind(), Some("concurrency_limit"));
        drop(first);
        assert!(l.admit(k, w, &p, "m", Estimate::default()).check().is_ok());
    }

    #[test]
    fn budget_counts_settled_spend_and_reservations() {
        let l = Limiter::default();
        let p = policy(Limits {
            budget_nusd: Some(100),
            ..Limits::default()
        });
        let (k, w) = (Uuid::now_v7(), Uuid::now_v7());
        let est = Estimate {
            tokens: 1,
            cost_nusd: 60,
        };
        let a = l.admit(k, w, &p, "m", est);
        assert!(a.check().is_ok());
        // 60 reserved: another 60 would cross the budget.
        let b = l.admit(k, w, &p, "m", est);
        assert_eq!(b.refused_kind(), Some("budget_exceeded"));
        a.settle(1, 10);
        drop(a);
        assert!(l.admit(k, w, &p, "m", est).check().is_ok());
    }

    #[test]
    fn seed_from_the_database_counts_for_its_period_only() {
        let l = Limiter::default();
        let now = OffsetDateTime::now_utc();
        let mut p = policy(Limits {
            budget_nusd: Some(100),
            ..Limits::default()
        });
        p.key_seed = Some(Seed {
            period_start: Period::Month.start(now) - time::Duration::days(40),
            spent_nusd: 1_000,
        });
        let (k, w) = (Uuid::now_v7(), Uuid::now_v7());
        assert!(l.admit(k, w, &p, "m", Estimate::default()).check().is_ok());
        p.key_seed = Some(Seed {
            period_start: Period::Month.start(now),
            spent_nusd: 100,
        });
        let g = l.admit(k, w, &p, "m", Estimate::default());
        assert_eq!(g.refused_kind(), Some("budget_exceeded"));
        assert_eq!(g.check().unwrap_err().code, "insufficient_quota");
    }

    #[test]
    fn resets_are_written_like_openai() {
        assert_eq!(reset(850), "850ms");
        assert_eq!(reset(12_000), "12s");
        assert_eq!(reset(63_000), "1m3s");
    }
}
