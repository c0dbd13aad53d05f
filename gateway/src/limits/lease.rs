//! Leases: limits shared through Redis without a round trip per request. Per scope (key,
//! workspace, provider entry quota), a gateway takes a block of each limit from Redis and
//! admits requests locally while the block lasts; `lease.lua` grants, refills, renews and
//! takes back blocks in one atomic call, counting them in the same hash as `admit.lua`.
//!
//! - Block size: `b = floor(L / (8 · G))` for a limit `L` and `G` gateways
//!   (`GATEWAY_REPLICAS`). A scope is leased only when every one of its limits has a
//!   share per gateway (`L / G`) of at least 60 RPM, 8000 TPM, 8 concurrent requests and
//!   0.008 USD of budget; otherwise the whole scope is admitted request by request
//!   ([`super::shared`]), so a limit of 3 RPM across two gateways still admits exactly 3.
//!   A request whose scopes are not all leased takes that path for every scope.
//! - What a block is: RPM and TPM, requests and tokens of the current calendar minute
//!   (void at the minute's turn; a request admitted in one minute that settles in the next
//!   counts its real tokens in the next, as `settle.lua` does); concurrency, slots held in
//!   the scope's hash under the lease's id (`L`, counted with the in-flight set by both
//!   scripts); budget, a reservation of nano-USD (part of `v`, as a request's is).
//! - Admission: a request takes one request, one slot, its token estimate and its cost
//!   estimate from the blocks of each of its scopes, all or nothing, under one lock per
//!   scope (key before workspace). When a block falls below half its size, a background
//!   call refills it to `b` above what is used. A request that finds a block too small
//!   (the first of a key, a burst, a new minute) waits for one call itself, within
//!   `REDIS_DEADLINE_MS`; if Redis then grants too little, it is refused exactly as
//!   `admit.lua` would refuse it (same order of checks, error, headers, `Retry-After`).
//! - Settlement is local: the token block is corrected by real − estimate, the estimate's
//!   reservation is released and the real cost is added to the lease's spend. Nothing
//!   waits for Redis when a request ends.
//! - Every second (the heartbeat) each lease reports to Redis: its spend (cumulative, so
//!   a report applied twice adds nothing), its tokens and requests used (absolute), and
//!   renews the TTL (5 s) of its slots and reservation, so a killed gateway's blocks go
//!   back on their own. It also gives back spare beyond one block. A scope with no
//!   admission for a second gives back all it does not use; once nothing of it runs, the
//!   lease is forgotten (its markers deleted) and its entry leaves the local map.
//! - A slow Redis is not a lost one: blocks held keep admitting until they run out or
//!   their minute ends; a request that would need a call while Redis is slow or away is
//!   limited by the local counters (each limit divided by `GATEWAY_REPLICAS`), as on the
//!   per-request path. Reports are kept in the lease (never dropped) and sent when Redis
//!   answers again. Nothing is flushed; budgets are re-seeded from PostgreSQL only when
//!   Redis holds no state for the scope.
//!
//! Tolerance, with N gateways and block b: while Redis keeps its state, no request is
//! admitted that Redis did not grant (a block never goes below zero); requests may be
//! refused while other gateways hold up to b each that they do not use, so a limit
//! admits at least L − (N−1)·b, and idle blocks go back within about a second; if Redis
//! loses its state mid-minute, the blocks already held may admit up to N·b more in that
//! minute (budgets are then re-seeded from PostgreSQL). Estimates that turn out low add
//! what they add on the per-request path, no more.
//!
//! Local state is bounded: at most [`MAX_LEASES`] scopes; a scope that finds no room
//! goes the per-request way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use perpetuo_core::db::limits::Limits;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use redis::Script;
use uuid::Uuid;

use super::policy::{refusal, scopes, Estimate, Kind, Now, Policy, Scope, Seed, MAX_EXACT};
use super::shared::{call_result, exact, RedisStore, LINK_TIMEOUT};
use super::{tighter, window, Gate, Held};
use crate::metrics;

/// A limit's share per gateway is split into this many blocks.
pub const SPLIT: i64 = 8;

/// Smallest share per gateway of each limit that is leased (below it, the scope is
/// admitted request by request): requests per minute.
pub const MIN_RPM_SHARE: i64 = 60;
/// ... tokens per minute.
pub const MIN_TPM_SHARE: i64 = 8_000;
/// ... concurrent requests.
pub const MIN_CONCURRENCY_SHARE: i64 = 8;
/// ... budget, in nano-USD (0.008 USD).
pub const MIN_BUDGET_SHARE_NUSD: i64 = 8_000_000;

/// How often leases report and renew.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// A scope with no admission for this long gives back what it does not use.
pub const IDLE: Duration = Duration::from_secs(1);

/// How long Redis keeps a lease's slots and reservation without a renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(5);

/// Scopes with a lease, at most (beyond, scopes are admitted request by request).
pub const MAX_LEASES: usize = SHARDS * SHARD_CAP;

const SHARDS: usize = 16;
const SHARD_CAP: usize = 1024;

/// Heartbeat calls in flight at once.
const BEATS_AT_ONCE: usize = 64;

/// Forgets a lease: its slots and reservation go back, its markers are deleted. Run once
/// nothing of it is in use; repeating it changes nothing.
const FORGET: &str = concat!(
    include_str!("leases.lua"),
    r"
-- KEYS: the scope's hash and leases set. ARGV: lease id.
release_lease(KEYS[1], ARGV[1])
local id = ARGV[1]
redis.call('HDEL', KEYS[1], 'lm:' .. id, 'lr:' .. id, 'lt:' .. id, 'ln:' .. id, 'lx:' .. id)
redis.call('ZREM', KEYS[2], id)
return 1
"
);

/// The blocks of each limit (0: the scope has no such limit, nothing is leased of it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Sizes {
    requests: i64,
    tokens: i64,
    slots: i64,
    reserve: i64,
}

/// The blocks `limits` are leased in with `gateways` sharing them; `None` when a limit's
/// share per gateway is too small to split (the scope is admitted request by request).
fn sizes(limits: &Limits, gateways: u32) -> Option<Sizes> {
    let g = i64::from(gateways.max(1));
    let block = |limit: Option<i64>, min_share: i64| match limit {
        None => Some(0),
        Some(l) if l >= min_share * g => Some(l / (SPLIT * g)),
        Some(_) => None,
    };
    Some(Sizes {
        requests: block(limits.rpm.map(i64::from), MIN_RPM_SHARE)?,
        tokens: block(limits.tpm.map(i64::from), MIN_TPM_SHARE)?,
        slots: block(limits.concurrency.map(i64::from), MIN_CONCURRENCY_SHARE)?,
        reserve: block(limits.budget_nusd, MIN_BUDGET_SHARE_NUSD)?,
    })
}

/// What a lease holds of one limit in Redis, and what admitted requests use of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Block {
    held: i64,
    used: i64,
}

impl Block {
    fn room(self) -> i64 {
        self.held - self.used
    }

    /// Whether it fell below half of `size` (never, for a limit not leased).
    fn low(self, size: i64) -> bool {
        size > 0 && 2 * self.room() < size
    }
}

/// What a request takes of one scope.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Take {
    requests: i64,
    slots: i64,
    tokens: i64,
    cost: i64,
}

/// Why a lease calls Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A request waits: its take on top of a block.
    Wait(Take),
    /// A block fell below half: a block on top of what is used.
    Refill,
    /// Renew, report, and give back spare beyond one block.
    Heartbeat,
    /// Idle: give back all that is not used.
    Return,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Wait(_) => "wait",
            Mode::Refill => "refill",
            Mode::Heartbeat => "heartbeat",
            Mode::Return => "return",
        }
    }
}

/// What a lease asks Redis to hold of one limit: `held` now, `used` of it, its block
/// `size` and a waiting request's `need`.
fn want(held: i64, used: i64, size: i64, need: i64, mode: Mode) -> i64 {
    if size == 0 {
        return used;
    }
    match mode {
        Mode::Wait(_) | Mode::Refill => held.max(used + need + size),
        Mode::Heartbeat if held - used > size => used + size,
        Mode::Heartbeat => held,
        Mode::Return => used,
    }
}

/// One call's numbers (see `lease.lua`): per limit, what is wanted and used.
#[derive(Debug, Clone, Copy)]
struct Ask {
    minute: i64,
    period: i64,
    limits: Limits,
    seed: i64,
    requests: Block,
    tokens: Block,
    need_tokens: i64,
    slots: Block,
    reserve: Block,
    spend: i64,
    acked: i64,
}

/// One lease's state in this process.
#[derive(Debug)]
struct State {
    limits: Limits,
    sizes: Sizes,
    /// The budget's spend as PostgreSQL knew it when the key was loaded (-1: none).
    seed: i64,
    period: i64,
    minute: i64,
    requests: Block,
    tokens: Block,
    slots: Block,
    /// `used`: the cost estimates of requests not settled yet.
    reserve: Block,
    /// Requests and tokens of this minute that Redis counted for others at the last call.
    others_requests: i64,
    others_tokens: i64,
    /// The scope's spend in Redis at the last call.
    spent: i64,
    /// Real cost of the requests settled on this lease, all told, and the part of it
    /// Redis is known to have applied.
    spend: i64,
    acked: i64,
    /// Admitted requests not ended yet.
    live: u64,
    last_admit: Instant,
    /// Calls applied so far.
    generation: u64,
    refilling: bool,
    /// Out of the map: nothing may be admitted on it any more.
    retired: bool,
}

impl State {
    fn new() -> Self {
        Self {
            limits: Limits::default(),
            sizes: Sizes::default(),
            seed: -1,
            period: 0,
            minute: i64::MIN,
            requests: Block::default(),
            tokens: Block::default(),
            slots: Block::default(),
            reserve: Block::default(),
            others_requests: 0,
            others_tokens: 0,
            spent: 0,
            spend: 0,
            acked: 0,
            live: 0,
            last_admit: Instant::now(),
            generation: 0,
            refilling: false,
            retired: false,
        }
    }

    /// A newer minute voids the minute's blocks.
    fn roll(&mut self, minute: i64) {
        if minute > self.minute {
            self.minute = minute;
            self.requests = Block::default();
            self.tokens = Block::default();
            self.others_requests = 0;
            self.others_tokens = 0;
        }
    }

    /// Takes the scope's current limits (and the budget period's seed) from the request.
    fn update(&mut self, limits: &Limits, sizes: Sizes, seed: Option<Seed>, now: &Now) {
        let start = limits.budget_period.start(now.at);
        let period = start.unix_timestamp();
        if period != self.period {
            self.period = period;
            self.spent = 0;
        }
        self.seed = seed
            .filter(|s| s.period_start == start)
            .map_or(-1, |s| s.spent_nusd.clamp(0, MAX_EXACT));
        self.limits = *limits;
        self.sizes = sizes;
        self.roll(now.minute);
    }

    fn unreported(&self) -> i64 {
        self.spend - self.acked
    }

    /// The first limit whose block does not cover `take`, in admit.lua's order.
    fn short(&self, take: &Take) -> Option<Kind> {
        let l = &self.limits;
        // A reservation after a cache miss takes no slot and no request: those are not
        // checked again.
        if l.concurrency.is_some() && take.slots > 0 && self.slots.room() < take.slots {
            Some(Kind::Concurrency)
        } else if l.rpm.is_some() && take.requests > 0 && self.requests.room() < take.requests {
            Some(Kind::Rpm)
        } else if l.tpm.is_some() && self.tokens.room() < take.tokens {
            Some(Kind::Tpm)
        } else if l.budget_nusd.is_some_and(|budget| {
            let unreported = self.unreported();
            self.spent.saturating_add(unreported) >= budget
                || self.reserve.room() - unreported < take.cost
        }) {
            Some(Kind::Budget)
        } else {
            None
        }
    }

    fn debit(&mut self, take: &Take) {
        self.requests.used += take.requests;
        self.slots.used += take.slots;
        self.tokens.used += take.tokens;
        self.reserve.used += take.cost;
        self.live += 1;
        self.last_admit = Instant::now();
    }

    /// Whether a block fell below half its size.
    fn low(&self) -> bool {
        let s = &self.sizes;
        let reserve = Block {
            held: self.reserve.held - self.unreported(),
            ..self.reserve
        };
        self.requests.low(s.requests)
            || self.tokens.low(s.tokens)
            || self.slots.low(s.slots)
            || reserve.low(s.reserve)
    }

    /// The call's numbers for `mode`. What is given back leaves the blocks here, before
    /// the call: requests admitted while it runs cannot take it.
    fn ask(&mut self, mode: Mode) -> Ask {
        let need = match mode {
            Mode::Wait(t) => t,
            _ => Take::default(),
        };
        let s = self.sizes;
        let unreported = self.unreported();
        let requests = want(
            self.requests.held,
            self.requests.used,
            s.requests,
            need.requests,
            mode,
        );
        let tokens = want(
            self.tokens.held,
            self.tokens.used,
            s.tokens,
            need.tokens,
            mode,
        );
        let slots = want(self.slots.held, self.slots.used, s.slots, need.slots, mode);
        // The spend reported by this call leaves the reservation for the scope's spend.
        let reserve = want(
            self.reserve.held - unreported,
            self.reserve.used,
            s.reserve,
            need.cost,
            mode,
        );
        self.requests.held = self.requests.held.min(requests);
        self.tokens.held = self.tokens.held.min(tokens);
        self.slots.held = self.slots.held.min(slots);
        self.reserve.held = self.reserve.held.min(reserve + unreported);
        let block = |held: i64, used: i64| Block {
            held: held.clamp(0, MAX_EXACT),
            used: used.clamp(0, MAX_EXACT),
        };
        Ask {
            minute: self.minute,
            period: self.period,
            limits: self.limits,
            seed: self.seed,
            requests: block(requests, self.requests.used),
            tokens: block(tokens, self.tokens.used),
            need_tokens: need.tokens.clamp(0, MAX_EXACT),
            slots: block(slots, self.slots.used),
            reserve: block(reserve, self.reserve.used),
            spend: self.spend.clamp(0, MAX_EXACT),
            acked: self.acked.clamp(0, MAX_EXACT),
        }
    }

    /// Takes Redis's answer to `ask`: what the lease now holds.
    fn apply(&mut self, ask: &Ask, out: &[i64]) {
        let at = |i: usize| out.get(i).copied().unwrap_or(0);
        let minute = at(1);
        self.roll(minute);
        // Blocks of a minute this lease has left behind are void.
        if minute == self.minute {
            self.requests.held = at(2);
            self.tokens.held = at(3);
            self.others_requests = (at(6) - at(2)).max(0);
            self.others_tokens = (at(7) - at(3)).max(0);
        }
        self.slots.held = at(4);
        // Spend settled while the call ran stays unreported, taken from this reservation.
        self.reserve.held = at(5);
        self.spent = at(8);
        self.acked = self.acked.max(ask.spend);
        self.generation += 1;
    }

    /// Whether nothing of the lease is in use or owed to Redis.
    fn done(&self) -> bool {
        self.live == 0
            && self.spend == self.acked
            && self.slots.held == 0
            && self.reserve.held == 0
            && self.last_admit.elapsed() >= IDLE
    }
}

/// One gateway's lease on one scope.
struct ScopeLease {
    scope: Scope,
    workspace_id: Uuid,
    /// The lease's id in Redis: this gateway's id and a counter.
    id: String,
    keys: [String; 4],
    state: Mutex<State>,
    /// Held while a call for this lease runs: one at a time, so that what it holds in
    /// Redis is what the last answer said.
    calling: tokio::sync::Mutex<()>,
}

impl ScopeLease {
    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lease is still a lease: the panic happened elsewhere.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a request holds of each scope's blocks until it ends: its slot (given back when
/// it is dropped) and its estimates (replaced by the real usage in `settle`).
pub struct LeasePermit {
    /// Per scope: its lease, what was taken, and in which minute.
    parts: Vec<(Arc<ScopeLease>, Take, i64)>,
    settled: AtomicBool,
}

impl LeasePermit {
    pub(super) fn settle(&self, tokens: u64, cost_nusd: i64) {
        if self.settled.swap(true, Ordering::AcqRel) {
            return;
        }
        let tokens = exact(tokens);
        let cost = cost_nusd.clamp(0, MAX_EXACT);
        for (lease, take, minute) in &self.parts {
            let mut st = lease.state();
            // The estimate is replaced in its own minute; a later minute counts the real
            // tokens alone.
            if st.minute == *minute {
                st.tokens.used = (st.tokens.used - take.tokens).max(0);
            }
            st.tokens.used = st.tokens.used.saturating_add(tokens).min(MAX_EXACT);
            st.reserve.used = (st.reserve.used - take.cost).max(0);
            st.spend = st.spend.saturating_add(cost).min(MAX_EXACT);
        }
    }
}

impl Drop for LeasePermit {
    fn drop(&mut self) {
        let settled = self.settled.load(Ordering::Acquire);
        for (lease, take, _) in &self.parts {
            let mut st = lease.state();
            st.slots.used = (st.slots.used - take.slots).max(0);
            if !settled {
                // Never settled: the estimate stays counted as tokens, the reservation goes.
                st.reserve.used = (st.reserve.used - take.cost).max(0);
            }
            st.live = st.live.saturating_sub(1);
        }
    }
}

/// Why the leases gave a request neither an admission nor a refusal.
pub(super) enum NotLeased {
    /// A scope is not leased: admit the request request by request.
    PerRequest,
    /// A call was needed and Redis did not answer in time: use the local counters.
    Unavailable,
}

/// Why the local blocks did not admit a request.
enum Short {
    /// Scope `i`'s lease was retired meanwhile: take the scope's new one.
    Retired(usize),
    /// Scope `i`'s block of `kind` does not cover the request; its lease had answered
    /// `generation` calls.
    Limit(usize, Kind, u64),
}

/// One scope of a request.
struct Part {
    scope: Scope,
    limits: Limits,
    seed: Option<Seed>,
    sizes: Sizes,
    take: Take,
}

/// This gateway's leases, one per scope, in a bounded sharded map.
pub struct Leases {
    store: Arc<RedisStore>,
    shards: Vec<Mutex<HashMap<Scope, Arc<ScopeLease>>>>,
    gateway: Uuid,
    next: AtomicU64,
    script: Script,
    forget: Script,
}

impl Leases {
    pub fn new(store: Arc<RedisStore>) -> Self {
        Self {
            store,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            gateway: Uuid::now_v7(),
            next: AtomicU64::new(0),
            script: Script::new(concat!(
                include_str!("leases.lua"),
                include_str!("lease.lua")
            )),
            forget: Script::new(FORGET),
        }
    }

    fn shard(&self, scope: Scope) -> MutexGuard<'_, HashMap<Scope, Arc<ScopeLease>>> {
        let id = match scope {
            Scope::Key(id) | Scope::Workspace(id) | Scope::Entry(id) => id,
        };
        // A v7 id's low bits are random.
        let i = (id.as_u128() % SHARDS as u128) as usize;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The scope's lease, made if needed; `None` when the map is full.
    fn lease(&self, scope: Scope, workspace_id: Uuid) -> Option<Arc<ScopeLease>> {
        let mut shard = self.shard(scope);
        if let Some(l) = shard.get(&scope) {
            return Some(l.clone());
        }
        if shard.len() >= SHARD_CAP {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let lease = Arc::new(ScopeLease {
            scope,
            workspace_id,
            id: format!("{}.{n}", self.gateway),
            keys: self.store.scope_keys(scope),
            state: Mutex::new(State::new()),
            calling: tokio::sync::Mutex::new(()),
        });
        shard.insert(scope, lease.clone());
        Some(lease)
    }

    /// Scopes with a lease now.
    fn all(&self) -> Vec<Arc<ScopeLease>> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            out.extend(shard.values().cloned());
        }
        out
    }

    /// Admits a request on its scopes' blocks, waiting for one call per scope at most when
    /// a block does not cover it; `counted`: it takes a request and a slot (not for a
    /// reservation made after a cache miss, which takes tokens and cost only).
    pub(super) async fn admit(
        self: &Arc<Self>,
        first: Scope,
        workspace_id: Uuid,
        policy: &Policy,
        estimate: Estimate,
        counted: bool,
    ) -> Result<Gate, NotLeased> {
        let now = Now::get();
        let gateways = self.store.replicas;
        let mut parts = Vec::with_capacity(2);
        for (scope, limits, seed) in scopes(policy, first, workspace_id) {
            if !counted && limits.tpm.is_none() && limits.budget_nusd.is_none() {
                continue;
            }
            let Some(sizes) = sizes(limits, gateways) else {
                return Err(NotLeased::PerRequest);
            };
            let take = Take {
                requests: i64::from(counted),
                slots: i64::from(counted && limits.concurrency.is_some()),
                tokens: exact(estimate.tokens),
                cost: estimate.cost_nusd.clamp(0, MAX_EXACT),
            };
            parts.push(Part {
                scope,
                limits: *limits,
                seed,
                sizes,
                take,
            });
        }
        let mut leases = Vec::with_capacity(parts.len());
        for p in &parts {
            match self.lease(p.scope, workspace_id) {
                Some(l) => leases.push(l),
                None => return Err(NotLeased::PerRequest),
            }
        }
        let mut called = vec![false; parts.len()];
        let mut last = None;
        for _ in 0..(2 * parts.len() + 2) {
            match self.take(&leases, &parts, &now) {
                Ok(gate) => return Ok(gate),
                Err(Short::Retired(i)) => match self.lease(parts[i].scope, workspace_id) {
                    Some(l) => leases[i] = l,
                    None => return Err(NotLeased::PerRequest),
                },
                Err(Short::Limit(i, kind, _)) if called[i] => {
                    last = Some((i, kind));
                    break;
                }
                Err(Short::Limit(i, kind, generation)) => {
                    last = Some((i, kind));
                    if self.store.is_slow() {
                        return Err(NotLeased::Unavailable);
                    }
                    let lease = &leases[i];
                    let deadline = self.store.settings().deadline;
                    let Ok(guard) = tokio::time::timeout(deadline, lease.calling.lock()).await
                    else {
                        return Err(NotLeased::Unavailable);
                    };
                    let mode = Mode::Wait(parts[i].take);
                    match self
                        .call_held(lease, &guard, mode, Some(generation), deadline)
                        .await
                    {
                        Ok(made) => called[i] |= made,
                        Err(()) => return Err(NotLeased::Unavailable),
                    }
                }
            }
        }
        match last {
            Some((i, kind)) => Ok(self.refuse(&leases[i], &parts[i], kind, &now)),
            None => Err(NotLeased::PerRequest),
        }
    }

    /// Takes the request from every scope's blocks, all or nothing, locks taken in the
    /// scopes' order.
    fn take(
        self: &Arc<Self>,
        leases: &[Arc<ScopeLease>],
        parts: &[Part],
        now: &Now,
    ) -> Result<Gate, Short> {
        let mut states: Vec<MutexGuard<'_, State>> = leases.iter().map(|l| l.state()).collect();
        for (i, (st, p)) in states.iter_mut().zip(parts).enumerate() {
            if st.retired {
                return Err(Short::Retired(i));
            }
            st.update(&p.limits, p.sizes, p.seed, now);
            if let Some(kind) = st.short(&p.take) {
                return Err(Short::Limit(i, kind, st.generation));
            }
        }
        let mut gate = Gate::default();
        let mut held = Vec::with_capacity(parts.len());
        for ((st, p), lease) in states.iter_mut().zip(parts).zip(leases) {
            st.debit(&p.take);
            held.push((lease.clone(), p.take, st.minute));
            windows(&mut gate, st, now);
            if st.low() && !st.refilling {
                st.refilling = true;
                self.refill(lease.clone());
            }
        }
        drop(states);
        gate.permit = Some(Held::Leased(LeasePermit {
            parts: held,
            settled: AtomicBool::new(false),
        }));
        Ok(gate)
    }

    /// The refusal of `kind` on scope `p`, with its windows.
    fn refuse(&self, lease: &ScopeLease, p: &Part, kind: Kind, now: &Now) -> Gate {
        let mut gate = Gate::default();
        windows(&mut gate, &lease.state(), now);
        let r = refusal(kind, p.scope, &p.limits, now);
        metrics::LIMIT_REFUSALS
            .with_label_values(&[r.kind_label(), p.scope.label()])
            .inc();
        gate.refusal = Some(r);
        gate
    }

    /// Refills `lease`'s blocks in the background.
    fn refill(self: &Arc<Self>, lease: Arc<ScopeLease>) {
        let leases = self.clone();
        tokio::spawn(async move {
            let guard = lease.calling.lock().await;
            let _ = leases
                .call_held(&lease, &guard, Mode::Refill, None, LINK_TIMEOUT)
                .await;
            drop(guard);
            lease.state().refilling = false;
        });
    }

    /// One call for `lease` (whose `calling` lock the caller holds), its answer applied.
    /// `Ok(false)`: no call was made (the lease was retired, or `seen` is given and
    /// another call answered since). `Err`: Redis did not answer in `timeout`.
    async fn call_held(
        &self,
        lease: &ScopeLease,
        _calling: &tokio::sync::MutexGuard<'_, ()>,
        mode: Mode,
        seen: Option<u64>,
        timeout: Duration,
    ) -> Result<bool, ()> {
        let now = Now::get();
        let ask = {
            let mut st = lease.state();
            if st.retired || seen.is_some_and(|g| g != st.generation) {
                return Ok(false);
            }
            st.roll(now.minute);
            st.ask(mode)
        };
        metrics::LIMIT_LEASE_CALLS
            .with_label_values(&[mode.label()])
            .inc();
        let out = self.invoke(lease, &ask, &now, timeout).await?;
        lease.state().apply(&ask, &out);
        Ok(true)
    }

    /// Runs `lease.lua`, reading the scope's spend from PostgreSQL first when Redis holds
    /// no state for a scope with a budget.
    async fn invoke(
        &self,
        lease: &ScopeLease,
        ask: &Ask,
        now: &Now,
        timeout: Duration,
    ) -> Result<Vec<i64>, ()> {
        let mut seed = ask.seed;
        let mut seeded = false;
        loop {
            let Some(mut conn) = self.store.conn() else {
                return Err(());
            };
            let mut inv = self.script.prepare_invoke();
            for k in &lease.keys {
                inv.key(k);
            }
            let opt = |v: Option<u32>| v.map_or(-1, i64::from);
            let l = &ask.limits;
            inv.arg(now.ms)
                .arg(&lease.id)
                .arg(ask.minute)
                .arg(ask.period)
                .arg(opt(l.rpm))
                .arg(opt(l.tpm))
                .arg(opt(l.concurrency))
                .arg(l.budget_nusd.map_or(-1, |b| b.clamp(0, MAX_EXACT)))
                .arg(seed)
                .arg(i64::from(seeded))
                .arg(ask.requests.held)
                .arg(ask.requests.used)
                .arg(ask.tokens.held)
                .arg(ask.tokens.used)
                .arg(ask.need_tokens)
                .arg(ask.slots.held)
                .arg(ask.slots.used)
                .arg(ask.reserve.held)
                .arg(ask.reserve.used)
                .arg(ask.spend)
                .arg(ask.acked)
                .arg(exact(LEASE_TTL.as_millis() as u64));
            let called =
                tokio::time::timeout(timeout, inv.invoke_async::<Vec<i64>>(&mut conn)).await;
            match call_result(called) {
                Ok(out) if out.first() == Some(&5) && !seeded => {
                    let scopes = [(lease.scope, ask.limits, seed)];
                    seed = self
                        .store
                        .read_seeds(lease.workspace_id, &scopes, now)
                        .await
                        .first()
                        .copied()
                        .unwrap_or(seed);
                    seeded = true;
                }
                Ok(out) if out.first() == Some(&0) => return Ok(out),
                Ok(_) => return Err(()),
                Err(e) => {
                    self.store.failed(e);
                    return Err(());
                }
            }
        }
    }

    /// Every lease reports and renews; idle ones give back what they do not use, and
    /// those with nothing left in use are forgotten. Skipped while Redis is slow or away
    /// (the link pings it; what is owed waits in the leases).
    async fn heartbeat(&self, closing: bool) {
        let all = self.all();
        metrics::LIMIT_LEASES.set(all.len() as i64);
        if self.store.is_slow() {
            return;
        }
        futures::stream::iter(all)
            .for_each_concurrent(BEATS_AT_ONCE, |lease| async move {
                self.beat(&lease, closing).await;
            })
            .await;
        metrics::LIMIT_LEASES.set(self.all().len() as i64);
    }

    async fn beat(&self, lease: &Arc<ScopeLease>, closing: bool) {
        let Ok(guard) = lease.calling.try_lock() else {
            return; // a call is under way: it renews the lease too
        };
        let (idle, never_called) = {
            let st = lease.state();
            (
                closing || st.last_admit.elapsed() >= IDLE,
                st.generation == 0,
            )
        };
        if idle && never_called {
            // Nothing was ever granted on it (no request was admitted on it): nothing to
            // give back. A call that timed out may have run; what it granted expires.
            self.retire(lease, closing);
            return;
        }
        let mode = if idle { Mode::Return } else { Mode::Heartbeat };
        let called = self
            .call_held(lease, &guard, mode, None, LINK_TIMEOUT)
            .await;
        if !(idle && called.is_ok()) {
            return;
        }
        if !self.retire(lease, closing) {
            return;
        }
        metrics::LIMIT_LEASE_CALLS
            .with_label_values(&["forget"])
            .inc();
        if let Some(mut conn) = self.store.conn() {
            let mut inv = self.forget.prepare_invoke();
            inv.key(&lease.keys[0]).key(&lease.keys[3]).arg(&lease.id);
            // Best effort: a lease not forgotten expires in Redis on its own.
            let forgot = tokio::time::timeout(LINK_TIMEOUT, inv.invoke_async::<i64>(&mut conn));
            if let Err(e) = call_result(forgot.await) {
                self.store.failed(e);
            }
        }
        drop(guard);
    }

    /// Takes an idle lease with nothing in use out of the map; whether it was.
    fn retire(&self, lease: &Arc<ScopeLease>, closing: bool) -> bool {
        let mut shard = self.shard(lease.scope);
        let mut st = lease.state();
        let done = st.done() || (closing && st.live == 0 && st.spend == st.acked);
        if !done || st.retired {
            return false;
        }
        st.retired = true;
        if shard
            .get(&lease.scope)
            .is_some_and(|l| Arc::ptr_eq(l, lease))
        {
            shard.remove(&lease.scope);
        }
        true
    }
}

/// The request and token windows of a scope after an admission (or at a refusal): others'
/// counts at the last call plus what this lease uses.
fn windows(gate: &mut Gate, st: &State, now: &Now) {
    let used = |others: i64, b: Block| u64::try_from(others + b.used).unwrap_or(0);
    if let Some(rpm) = st.limits.rpm {
        let w = window(rpm, used(st.others_requests, st.requests), now);
        gate.requests = tighter(gate.requests, w);
    }
    if let Some(tpm) = st.limits.tpm {
        let w = window(tpm, used(st.others_tokens, st.tokens), now);
        gate.tokens = tighter(gate.tokens, w);
    }
}

/// Renews and reports the leases every [`HEARTBEAT`]; on shutdown, gives back what they
/// hold within a bounded time.
pub struct LeaseKeeper {
    pub leases: Arc<Leases>,
}

#[async_trait]
impl BackgroundService for LeaseKeeper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.leases.heartbeat(false).await,
                _ = shutdown.changed() => {
                    // Requests still ending get a bounded moment; then what is held goes back.
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
                    while tokio::time::Instant::now() < deadline {
                        let _ = tokio::time::timeout_at(deadline, self.leases.heartbeat(true)).await;
                        if self.leases.all().is_empty() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
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

    fn limits(rpm: u32, tpm: u32, concurrency: u32, budget_nusd: i64) -> Limits {
        Limits {
            rpm: Some(rpm),
            tpm: Some(tpm),
            concurrency: Some(concurrency),
            budget_nusd: Some(budget_nusd),
            ..Limits::default()
        }
    }

    #[test]
    fn blocks_are_an_eighth_of_each_gateways_share_and_small_limits_are_not_split() {
        let s = sizes(&limits(960, 1_000_000, 32, 1_000_000_000), 2).unwrap();
        assert_eq!(
            s,
            Sizes {
                requests: 60,
                tokens: 62_500,
                slots: 2,
                reserve: 62_500_000
            }
        );
        // One limit too small to split keeps the whole scope request by request.
        assert_eq!(sizes(&limits(3, 1_000_000, 32, 1_000_000_000), 2), None);
        assert_eq!(sizes(&limits(960, 1_000_000, 15, 1_000_000_000), 2), None);
        assert_eq!(sizes(&limits(960, 15_999, 32, 1_000_000_000), 2), None);
        assert_eq!(sizes(&limits(960, 1_000_000, 32, 15_999_999), 2), None);
        // The thresholds themselves are leased; absent limits lease nothing.
        let rpm_only = Limits {
            rpm: Some(60),
            ..Limits::default()
        };
        assert_eq!(
            sizes(&rpm_only, 1),
            Some(Sizes {
                requests: 7,
                ..Sizes::default()
            })
        );
    }

    fn leased(l: Limits, gateways: u32) -> State {
        let mut st = State::new();
        st.limits = l;
        st.sizes = sizes(&l, gateways).unwrap();
        st.minute = 0;
        st
    }

    #[test]
    fn a_request_waits_for_a_block_and_the_next_ones_use_it() {
        let mut st = leased(limits(960, 1_000_000, 32, 1_000_000_000), 2);
        let take = Take {
            requests: 1,
            slots: 1,
            tokens: 100,
            cost: 1_000,
        };
        assert_eq!(st.short(&take), Some(Kind::Concurrency));
        let ask = st.ask(Mode::Wait(take));
        assert_eq!(ask.requests.held, 61, "the request and one block");
        assert_eq!(ask.slots.held, 3);
        assert_eq!(ask.tokens.held, 62_600);
        assert_eq!(ask.reserve.held, 62_501_000);
        // Redis grants all of it.
        st.apply(&ask, &[0, 0, 61, 62_600, 3, 62_501_000, 61, 62_600, 0]);
        assert_eq!(st.short(&take), None);
        st.debit(&take);
        assert!(!st.low(), "a whole block is left");
        for _ in 0..30 {
            st.debit(&Take { slots: 0, ..take });
        }
        assert!(!st.low(), "half a block is left");
        st.debit(&Take { slots: 0, ..take });
        assert!(st.low(), "below half a block: refill");
        let ask = st.ask(Mode::Refill);
        assert_eq!(ask.requests.held, 32 + 60);
    }

    #[test]
    fn heartbeats_give_back_spare_beyond_a_block_and_idle_leases_all_they_do_not_use() {
        let mut st = leased(limits(960, 1_000_000, 32, 1_000_000_000), 2);
        st.slots = Block { held: 10, used: 3 };
        st.requests = Block { held: 61, used: 50 };
        let ask = st.ask(Mode::Heartbeat);
        assert_eq!(ask.slots.held, 5, "three used and one block of two");
        assert_eq!(st.slots.held, 5, "given back before the call");
        assert_eq!(ask.requests.held, 61, "eleven spare: less than a block");
        let ask = st.ask(Mode::Return);
        assert_eq!((ask.slots.held, ask.requests.held), (3, 50));
        assert_eq!(st.slots.room(), 0);
    }

    #[test]
    fn spend_reported_leaves_the_reservation_and_is_never_lost_between_calls() {
        let mut st = leased(limits(960, 1_000_000, 32, 1_000_000_000), 2);
        st.reserve = Block {
            held: 100_000_000,
            used: 1_000,
        };
        st.spend = 5_000;
        let ask = st.ask(Mode::Heartbeat);
        assert_eq!((ask.spend, ask.acked), (5_000, 0));
        assert_eq!(
            ask.reserve.held, 62_501_000,
            "spare beyond a block given back"
        );
        // A request settles while the call runs: its cost is not in this report.
        st.spend += 700;
        st.apply(&ask, &[0, 0, 0, 0, 0, 62_501_000, 0, 0, 5_000]);
        assert_eq!(st.acked, 5_000);
        assert_eq!(st.unreported(), 700);
        assert_eq!(st.spent, 5_000);
        assert_eq!(st.reserve.room() - st.unreported(), 62_500_000 - 700);
        // Spend at the budget refuses even a request that costs nothing.
        st.spent = 1_000_000_000;
        assert_eq!(st.short(&Take::default()), Some(Kind::Budget));
    }

    #[test]
    fn a_new_minute_voids_the_minutes_blocks_and_late_answers_for_the_old_one() {
        let mut st = leased(limits(960, 1_000_000, 32, 1_000_000_000), 2);
        st.requests = Block { held: 61, used: 10 };
        st.slots = Block { held: 3, used: 1 };
        let ask = st.ask(Mode::Refill);
        st.roll(1);
        assert_eq!(st.requests, Block::default());
        st.apply(&ask, &[0, 0, 70, 0, 3, 0, 70, 0, 0]);
        assert_eq!(
            st.requests,
            Block::default(),
            "the old minute's block stays void"
        );
        assert_eq!(st.slots.held, 3, "slots do not belong to a minute");
    }

    #[test]
    fn what_a_lease_wants_of_a_limit() {
        let wait = Mode::Wait(Take::default());
        assert_eq!(want(10, 4, 0, 1, wait), 4, "not leased: what is used");
        assert_eq!(want(10, 4, 5, 1, wait), 10);
        assert_eq!(want(5, 4, 5, 1, wait), 10);
        assert_eq!(want(5, 4, 5, 0, Mode::Refill), 9);
        assert_eq!(want(20, 4, 5, 0, Mode::Heartbeat), 9);
        assert_eq!(want(8, 4, 5, 0, Mode::Heartbeat), 8);
        assert_eq!(want(8, 4, 5, 0, Mode::Return), 4);
    }
}
