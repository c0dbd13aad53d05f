//! Limits per API key and per workspace, checked before any provider is called: model
//! allowed, concurrency, requests per minute, tokens per minute, spend budget — in that
//! order (expiry is refused by `auth`). Limits come with the cached key, so a check never
//! touches the database; counters live in this process, bounded in number.
//!
//! Windows are calendar minutes; budgets are calendar periods in UTC. Token and spend
//! checks use an estimate (prompt from the body size, completion from `max_tokens` or a
//! default); the permit settles them from the real usage when the log record is built,
//! and releases its concurrency slot when it is dropped.
//!
//! With Redis, every gateway shares the counters through one atomic script call per
//! request, bounded by a deadline; when Redis is slow or down the local counters stand
//! in, each limit divided by the replica count. Budgets are re-seeded from PostgreSQL
//! (with the key) after Redis loses state.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use redis::aio::MultiplexedConnection;
use redis::Script;
use tokio::sync::mpsc;

use perpetuo_core::db::limits::Limits;
#[cfg(test)]
use perpetuo_core::db::limits::Period;
use perpetuo_core::pricing::{Pricing, TokenCounts};
use pingora::http::ResponseHeader;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::auth::{AuthedKey, KeyCache};
use crate::errors::GatewayError;
use crate::lazy_json::LazyJson;
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

/// Counters kept in this process: exact for one gateway, and the fallback of the shared
/// store.
#[derive(Default)]
pub struct Local {
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

/// What an admitted request holds until it ends.
enum Held {
    Local(Permit),
    Shared(SharedPermit),
}

/// The outcome of the checks, kept in the request's context.
#[derive(Default)]
pub struct Gate {
    permit: Option<Held>,
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
        match &self.permit {
            Some(Held::Local(p)) => p.settle(tokens, cost_nusd),
            Some(Held::Shared(p)) => p.settle(tokens, cost_nusd),
            None => {}
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

impl Local {
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

    /// Runs the rate and budget checks in this process, with the rate limits divided by
    /// `divide` (the replica count when this stands in for the shared store).
    fn admit(
        &self,
        key_id: Uuid,
        workspace_id: Uuid,
        policy: &Policy,
        estimate: Estimate,
        divide: u32,
    ) -> Gate {
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
                let limits = divided(limits, divide);
                scopes.push((scope, limits, seed, self.counters(scope)));
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
        gate.permit = Some(Held::Local(Permit {
            scopes: scopes
                .into_iter()
                .zip(held)
                .map(|((_, _, _, c), h)| (c, h))
                .collect(),
            estimate,
            minute: now.minute,
            settled: AtomicBool::new(false),
        }));
        gate
    }
}

/// Rate limits shared by `n` replicas: each takes its share (at least 1).
fn divided(l: &Limits, n: u32) -> Limits {
    let share = |v: Option<u32>| v.map(|v| (v / n.max(1)).max(1));
    Limits {
        rpm: share(l.rpm),
        tpm: share(l.tpm),
        concurrency: share(l.concurrency),
        ..*l
    }
}

/// The limiter: in process, or shared through Redis with the local one as fallback.
#[derive(Default)]
pub struct Limiter {
    local: Local,
    shared: Option<Arc<RedisStore>>,
}

impl Limiter {
    pub fn shared(store: Arc<RedisStore>) -> Self {
        Self {
            local: Local::default(),
            shared: Some(store),
        }
    }

    /// Runs the checks for one request. Keys and workspaces without limits cost nothing:
    /// not even the estimate is made for them.
    pub async fn admit(
        &self,
        key: &AuthedKey,
        model: &str,
        request: &LazyJson,
        pricing: &Pricing,
    ) -> Gate {
        let (key_id, workspace_id, policy) = (key.id, key.workspace_id, &key.policy);
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
        if policy.key.is_empty() && policy.workspace.is_empty() {
            return Gate::default();
        }
        // Only here is the body read as a tree (for its completion cap).
        let estimate = Estimate::of(request, request.raw().len(), model, pricing);
        match &self.shared {
            None => self.local.admit(key_id, workspace_id, policy, estimate, 1),
            Some(store) => match store.admit(key_id, workspace_id, policy, estimate).await {
                Some(gate) => gate,
                None => {
                    metrics::LIMIT_FALLBACKS.inc();
                    self.local
                        .admit(key_id, workspace_id, policy, estimate, store.replicas)
                }
            },
        }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Concurrency,
    Rpm,
    Tpm,
    Budget,
}

/// The first limit of `scope` the request would break, in the documented order.
fn refuse(
    scope: Scope,
    limits: &Limits,
    c: &Counters,
    estimate: Estimate,
    now: &Now,
) -> Option<Refusal> {
    let kind = if limits.concurrency.is_some_and(|m| c.inflight >= m) {
        Kind::Concurrency
    } else if limits.rpm.is_some_and(|m| c.requests >= u64::from(m)) {
        Kind::Rpm
    // The first request of a minute always passes, or one larger than the whole limit
    // could never be served.
    } else if limits
        .tpm
        .is_some_and(|m| c.tokens > 0 && c.tokens.saturating_add(estimate.tokens) > u64::from(m))
    {
        Kind::Tpm
    } else if limits.budget_nusd.is_some_and(|budget| {
        let committed = c.spent_nusd.saturating_add(c.reserved_nusd);
        c.spent_nusd >= budget || committed.saturating_add(estimate.cost_nusd) > budget
    }) {
        Kind::Budget
    } else {
        return None;
    };
    Some(refusal(kind, scope, limits, now))
}

fn refusal(kind: Kind, scope: Scope, limits: &Limits, now: &Now) -> Refusal {
    let retry_minute = now.minute_reset_ms().div_ceil(1000).max(1);
    let limit = |v: Option<u32>| u64::from(v.unwrap_or(0));
    let (error, kind, retry_after_s) = match kind {
        Kind::Concurrency => (
            GatewayError::limit_exceeded(
                "concurrent requests",
                scope.noun(),
                limit(limits.concurrency),
                1,
            ),
            "concurrency_limit",
            Some(1),
        ),
        Kind::Rpm => (
            GatewayError::limit_exceeded(
                "requests per minute (RPM)",
                scope.noun(),
                limit(limits.rpm),
                retry_minute,
            ),
            "rate_limit_rpm",
            Some(retry_minute),
        ),
        Kind::Tpm => (
            GatewayError::limit_exceeded(
                "tokens per minute (TPM)",
                scope.noun(),
                limit(limits.tpm),
                retry_minute,
            ),
            "rate_limit_tpm",
            Some(retry_minute),
        ),
        Kind::Budget => {
            let end = limits.budget_period.end(now.at);
            let wait = (end - now.at).whole_seconds().max(1);
            (
                GatewayError::budget_exhausted(scope.noun(), limits.budget_period.as_str()),
                "budget_exceeded",
                u64::try_from(wait).ok(),
            )
        }
    };
    Refusal {
        error,
        kind,
        retry_after_s,
    }
}

/// Admission, atomic across every gateway: rolls the minute and period of each scope,
/// checks concurrency, RPM, TPM and budget in order, and counts the request only if all
/// pass. `KEYS`: per scope its hash and its in-flight set, then the epoch key (missing
/// after a Redis restart or flush). `ARGV`: now (ms), minute, estimated tokens, estimated
/// cost, request id, slot lifetime (ms), scope count, then per scope: period start, rpm,
/// tpm, concurrency, budget, seed (-1: none). Returns `{0, 0, lost, used requests,
/// used tokens, ...}` or `{kind, scope, requests, tokens, lost}`.
const ADMIT: &str = r#"
local now = tonumber(ARGV[1]); local minute = tonumber(ARGV[2])
local est_t = tonumber(ARGV[3]); local est_c = tonumber(ARGV[4])
local rid = ARGV[5]; local ttl = tonumber(ARGV[6]); local n = tonumber(ARGV[7])
local lost = 0
if redis.call('EXISTS', KEYS[#KEYS]) == 0 then
  redis.call('SET', KEYS[#KEYS], '1'); lost = 1
end
local st = {}
for i = 1, n do
  local h = KEYS[2*i-1]; local z = KEYS[2*i]; local b = 7 + (i-1)*6
  local period = tonumber(ARGV[b+1]); local rpm = tonumber(ARGV[b+2])
  local tpm = tonumber(ARGV[b+3]); local conc = tonumber(ARGV[b+4])
  local budget = tonumber(ARGV[b+5]); local seed = tonumber(ARGV[b+6])
  local v = redis.call('HMGET', h, 'm', 'r', 't', 'p', 's', 'v')
  local r = tonumber(v[2]) or 0; local t = tonumber(v[3]) or 0
  local s = tonumber(v[5]) or 0; local res = tonumber(v[6]) or 0
  if tonumber(v[1]) ~= minute then r = 0; t = 0 end
  if tonumber(v[4]) ~= period then s = 0; res = 0 end
  if seed > s then s = seed end
  if res < 0 then res = 0 end
  local c = 0
  if conc >= 0 then
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
    c = redis.call('ZCARD', z)
  end
  if conc >= 0 and c >= conc then return {1, i, r, t, lost} end
  if rpm >= 0 and r >= rpm then return {2, i, r, t, lost} end
  if tpm >= 0 and t > 0 and t + est_t > tpm then return {3, i, r, t, lost} end
  if budget >= 0 and (s >= budget or s + res + est_c > budget) then return {4, i, r, t, lost} end
  st[i] = {r + 1, t + est_t, s, res + est_c, period, conc}
end
local out = {0, 0, lost}
for i = 1, n do
  local x = st[i]
  redis.call('HSET', KEYS[2*i-1], 'm', minute, 'r', x[1], 't', x[2], 'p', x[5], 's', x[3], 'v', x[4])
  redis.call('PEXPIRE', KEYS[2*i-1], 3024000000)
  if x[6] >= 0 then
    redis.call('ZADD', KEYS[2*i], now + ttl, rid)
    redis.call('PEXPIRE', KEYS[2*i], ttl)
  end
  out[#out+1] = x[1]; out[#out+1] = x[2]
end
return out
"#;

/// Settlement: the real tokens replace the estimate (in the same minute), the reservation
/// becomes the real cost, and the concurrency slot is released. `KEYS`: hash and set per
/// scope. `ARGV`: minute, estimated tokens, tokens, estimated cost, cost, request id.
const SETTLE: &str = r#"
for i = 1, #KEYS, 2 do
  local h = KEYS[i]
  redis.call('ZREM', KEYS[i+1], ARGV[6])
  if redis.call('EXISTS', h) == 1 then
    local dt = tonumber(ARGV[3])
    if tonumber(redis.call('HGET', h, 'm')) == tonumber(ARGV[1]) then dt = dt - tonumber(ARGV[2]) end
    if redis.call('HINCRBY', h, 't', dt) < 0 then redis.call('HSET', h, 't', 0) end
    -- `0 - x`, not `-x`: Lua's -0 reaches Redis as "-0", which HINCRBY refuses.
    if redis.call('HINCRBY', h, 'v', 0 - tonumber(ARGV[4])) < 0 then redis.call('HSET', h, 'v', 0) end
    redis.call('HINCRBY', h, 's', tonumber(ARGV[5]))
  end
end
return 1
"#;

/// Settlements waiting for the background link; beyond it they are dropped (the spend
/// is still in PostgreSQL and comes back with the next re-seed).
const SETTLE_QUEUE: usize = 10_000;

/// How the shared store behaves.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// Longest a request waits for Redis before using the local limiter.
    pub deadline: Duration,
    /// Gateways sharing the limits: the local fallback allows each this share.
    pub replicas: u32,
    /// Prefix of every key this gateway writes.
    pub prefix: String,
    /// How long a concurrency slot lives at most (a gateway killed mid-request leaks it
    /// for this long).
    pub slot_ttl: Duration,
}

struct SettleMsg {
    keys: Vec<String>,
    request_id: Uuid,
    minute: i64,
    estimate: Estimate,
    tokens: u64,
    cost_nusd: i64,
}

/// Limits shared by every gateway through Redis.
pub struct RedisStore {
    client: redis::Client,
    conn: Mutex<Option<MultiplexedConnection>>,
    admit: Script,
    settle: Script,
    settings: RedisSettings,
    replicas: u32,
    tx: mpsc::Sender<SettleMsg>,
    rx: Mutex<Option<mpsc::Receiver<SettleMsg>>>,
    /// A call failed: the store may have lost state, so budgets are re-seeded once it
    /// answers again.
    lost: AtomicBool,
    keys: Arc<KeyCache>,
    /// What this gateway has settled per scope and budget period: with the PostgreSQL
    /// seed, the floor of the spend sent with every admission, so a flushed store
    /// gets back at least this gateway's share at once.
    spent: Mutex<HashMap<(Scope, i64), i64>>,
}

impl RedisStore {
    pub fn new(
        url: &str,
        settings: RedisSettings,
        keys: Arc<KeyCache>,
    ) -> Result<Self, redis::RedisError> {
        let (tx, rx) = mpsc::channel(SETTLE_QUEUE);
        Ok(Self {
            client: redis::Client::open(url)?,
            conn: Mutex::new(None),
            admit: Script::new(ADMIT),
            settle: Script::new(SETTLE),
            replicas: settings.replicas.max(1),
            settings,
            tx,
            rx: Mutex::new(Some(rx)),
            lost: AtomicBool::new(false),
            keys,
            spent: Mutex::new(HashMap::new()),
        })
    }

    fn conn(&self) -> Option<MultiplexedConnection> {
        self.conn.lock().ok().and_then(|c| c.clone())
    }

    /// Forgets the connection (the link reconnects) and marks state as possibly lost.
    fn failed(&self) {
        if let Ok(mut c) = self.conn.lock() {
            *c = None;
        }
        self.lost.store(true, Ordering::Release);
    }

    fn spent_here(&self, scope: Scope, period_start: i64) -> i64 {
        self.spent
            .lock()
            .ok()
            .and_then(|m| m.get(&(scope, period_start)).copied())
            .unwrap_or(0)
    }

    fn add_spent(&self, scopes: &[(Scope, i64)], cost_nusd: i64) {
        if cost_nusd <= 0 {
            return;
        }
        if let Ok(mut m) = self.spent.lock() {
            if m.len() >= MAX_SCOPES {
                m.clear();
            }
            for s in scopes {
                let e = m.entry(*s).or_insert(0);
                *e = e.saturating_add(cost_nusd);
            }
        }
    }

    fn scope_keys(&self, scope: Scope) -> (String, String) {
        let h = match scope {
            Scope::Key(id) => format!("{}limits:k:{id}", self.settings.prefix),
            Scope::Workspace(id) => format!("{}limits:w:{id}", self.settings.prefix),
        };
        let z = format!("{h}:inflight");
        (h, z)
    }

    /// One script call within the deadline; `None` sends the request to the local limiter.
    async fn admit(
        self: &Arc<Self>,
        key_id: Uuid,
        workspace_id: Uuid,
        policy: &Policy,
        estimate: Estimate,
    ) -> Option<Gate> {
        let mut conn = self.conn()?;
        let now = Now::get();
        let request_id = Uuid::now_v7();
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
                scopes.push((scope, *limits, seed));
            }
        }
        let mut inv = self.admit.prepare_invoke();
        let mut keys = Vec::with_capacity(4);
        for (scope, _, _) in &scopes {
            let (h, z) = self.scope_keys(*scope);
            inv.key(&h).key(&z);
            keys.push(h);
            keys.push(z);
        }
        inv.key(format!("{}limits:epoch", self.settings.prefix));
        inv.arg(now.ms)
            .arg(now.minute)
            .arg(estimate.tokens)
            .arg(estimate.cost_nusd)
            .arg(request_id.to_string())
            .arg(u64::try_from(self.settings.slot_ttl.as_millis()).unwrap_or(u64::MAX))
            .arg(scopes.len());
        let opt = |v: Option<u32>| v.map_or(-1, i64::from);
        let mut periods = Vec::with_capacity(scopes.len());
        for (scope, limits, seed) in &scopes {
            let start = limits.budget_period.start(now.at);
            periods.push((*scope, start.unix_timestamp()));
            let seed = seed
                .filter(|s| s.period_start == start)
                .map_or(-1, |s| s.spent_nusd)
                .max(self.spent_here(*scope, start.unix_timestamp()));
            inv.arg(start.unix_timestamp())
                .arg(opt(limits.rpm))
                .arg(opt(limits.tpm))
                .arg(opt(limits.concurrency))
                .arg(limits.budget_nusd.unwrap_or(-1))
                .arg(seed);
        }
        let out: Vec<i64> =
            match tokio::time::timeout(self.settings.deadline, inv.invoke_async(&mut conn)).await {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "shared limits unavailable; limiting locally");
                    self.failed();
                    return None;
                }
                Err(_) => {
                    self.failed();
                    return None;
                }
            };
        let lost_flag = out.get(2).copied().unwrap_or(0);
        let code = out.first().copied().unwrap_or(0);
        let at = |i: usize| {
            out.get(i)
                .copied()
                .map_or(0, |v| u64::try_from(v).unwrap_or(0))
        };
        let was_lost = if code == 0 {
            lost_flag
        } else {
            out.get(4).copied().unwrap_or(0)
        };
        if self.lost.swap(false, Ordering::AcqRel) || was_lost == 1 {
            // The store lost state or could not be reached: budgets come back from
            // PostgreSQL as keys are loaded again.
            self.keys.invalidate_all();
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
        if code != 0 {
            let i = usize::try_from(out.get(1).copied().unwrap_or(1) - 1).unwrap_or(0);
            let (scope, limits, _) = scopes.get(i).copied()?;
            if let Some(rpm) = limits.rpm {
                gate.requests = Some(window(rpm, at(2)));
            }
            if let Some(tpm) = limits.tpm {
                gate.tokens = Some(window(tpm, at(3)));
            }
            let kind = match code {
                1 => Kind::Concurrency,
                2 => Kind::Rpm,
                3 => Kind::Tpm,
                _ => Kind::Budget,
            };
            let r = refusal(kind, scope, &limits, &now);
            metrics::LIMIT_REFUSALS
                .with_label_values(&[r.kind_label(), scope.label()])
                .inc();
            gate.refusal = Some(r);
            return Some(gate);
        }
        for (n, (_, limits, _)) in scopes.iter().enumerate() {
            if let Some(rpm) = limits.rpm {
                gate.requests = tighter(gate.requests, window(rpm, at(3 + 2 * n)));
            }
            if let Some(tpm) = limits.tpm {
                gate.tokens = tighter(gate.tokens, window(tpm, at(4 + 2 * n)));
            }
        }
        gate.permit = Some(Held::Shared(SharedPermit {
            store: self.clone(),
            keys,
            periods,
            request_id,
            minute: now.minute,
            estimate,
            settled: AtomicBool::new(false),
        }));
        Some(gate)
    }

    async fn apply(&self, m: SettleMsg) {
        let Some(mut conn) = self.conn() else {
            self.lost.store(true, Ordering::Release);
            return;
        };
        let mut inv = self.settle.prepare_invoke();
        for k in &m.keys {
            inv.key(k);
        }
        inv.arg(m.minute)
            .arg(m.estimate.tokens)
            .arg(m.tokens)
            .arg(m.estimate.cost_nusd)
            .arg(m.cost_nusd)
            .arg(m.request_id.to_string());
        let r: Result<Result<i64, _>, _> =
            tokio::time::timeout(Duration::from_secs(1), inv.invoke_async(&mut conn)).await;
        match r {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "a settlement did not reach the shared limits");
                self.failed();
            }
            Err(_) => self.failed(),
        }
    }

    async fn connect(&self) {
        let connecting = self.client.get_multiplexed_async_connection();
        if let Ok(Ok(c)) = tokio::time::timeout(Duration::from_secs(1), connecting).await {
            if let Ok(mut slot) = self.conn.lock() {
                *slot = Some(c);
            }
        }
    }
}

/// A request admitted by the shared store: settles (and releases its slot) through the
/// background link, from the real usage or, if never settled, from its estimate.
pub struct SharedPermit {
    store: Arc<RedisStore>,
    keys: Vec<String>,
    periods: Vec<(Scope, i64)>,
    request_id: Uuid,
    minute: i64,
    estimate: Estimate,
    settled: AtomicBool,
}

impl SharedPermit {
    fn settle(&self, tokens: u64, cost_nusd: i64) {
        if self.settled.swap(true, Ordering::AcqRel) {
            return;
        }
        self.store.add_spent(&self.periods, cost_nusd);
        let msg = SettleMsg {
            keys: self.keys.clone(),
            request_id: self.request_id,
            minute: self.minute,
            estimate: self.estimate,
            tokens,
            cost_nusd,
        };
        if self.store.tx.try_send(msg).is_err() {
            metrics::LIMIT_SETTLE_DROPPED.inc();
            self.store.lost.store(true, Ordering::Release);
        }
    }
}

impl Drop for SharedPermit {
    fn drop(&mut self) {
        self.settle(self.estimate.tokens, 0);
    }
}

/// Keeps the Redis connection up (reconnecting while it is down) and applies
/// settlements in order.
pub struct RedisLink {
    pub store: Arc<RedisStore>,
}

#[async_trait]
impl BackgroundService for RedisLink {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(mut rx) = self.store.rx.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        self.store.connect().await;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => self.store.apply(m).await,
                    None => return,
                },
                _ = tick.tick() => {
                    if self.store.conn().is_none() {
                        self.store.connect().await;
                    }
                }
                _ = shutdown.changed() => {
                    // Requests still ending get a bounded moment to settle.
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
                    while let Ok(Some(m)) = tokio::time::timeout_at(deadline, rx.recv()).await {
                        self.store.apply(m).await;
                    }
                    return;
                }
            }
        }
    }
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
        let l = Local::default();
        let p = policy(Limits {
            concurrency: Some(1),
            ..Limits::default()
        });
        let (k, w) = (Uuid::now_v7(), Uuid::now_v7());
        let first = l.admit(k, w, &p, Estimate::default(), 1);
        assert!(first.check().is_ok());
        let second = l.admit(k, w, &p, Estimate::default(), 1);
        assert_eq!(second.refused_kind(), Some("concurrency_limit"));
        drop(first);
        assert!(l.admit(k, w, &p, Estimate::default(), 1).check().is_ok());
    }

    #[test]
    fn budget_counts_settled_spend_and_reservations() {
        let l = Local::default();
        let p = policy(Limits {
            budget_nusd: Some(100),
            ..Limits::default()
        });
        let (k, w) = (Uuid::now_v7(), Uuid::now_v7());
        let est = Estimate {
            tokens: 1,
            cost_nusd: 60,
        };
        let a = l.admit(k, w, &p, est, 1);
        assert!(a.check().is_ok());
        // 60 reserved: another 60 would cross the budget.
        let b = l.admit(k, w, &p, est, 1);
        assert_eq!(b.refused_kind(), Some("budget_exceeded"));
        a.settle(1, 10);
        drop(a);
        assert!(l.admit(k, w, &p, est, 1).check().is_ok());
    }

    #[test]
    fn seed_from_the_database_counts_for_its_period_only() {
        let l = Local::default();
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
        assert!(l.admit(k, w, &p, Estimate::default(), 1).check().is_ok());
        p.key_seed = Some(Seed {
            period_start: Period::Month.start(now),
            spent_nusd: 100,
        });
        let g = l.admit(k, w, &p, Estimate::default(), 1);
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
