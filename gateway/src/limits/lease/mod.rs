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
//!   Redis holds no state for the scope. The spend a key was loaded with (PostgreSQL's)
//!   is a floor under the scope's, compared after a lease's report and never added to
//!   it: a key loaded while Redis was slow already has the requests the report carries.
//!
//! Tolerance, with N gateways and block b: while Redis keeps its state (and each lease is
//! renewed within its TTL), no request is admitted that Redis did not grant (a block never
//! goes below zero); requests may be refused while other gateways hold up to b each that
//! they do not use (spare grown by slots freed or tokens under their estimate is trimmed
//! back to b at the next heartbeat), so a limit admits at least L − (N−1)·b, and idle
//! blocks go back within about a second. If Redis loses its state mid-minute, each lease
//! writes back what it uses at its next call, and until then Redis grants as if it were
//! not used: the minute may go over by the blocks held then (up to N·b) plus what is
//! granted before every gateway has called again (within a heartbeat); budgets are
//! re-seeded from PostgreSQL. Estimates that turn out low add what they add on the
//! per-request path, no more.
//!
//! Local state is bounded: at most [`MAX_LEASES`] scopes; a scope that finds no room
//! goes the per-request way.
//!
//! [`state`] holds the arithmetic of one lease, [`keeper`] its heartbeat; this module the
//! map of leases, admission and the calls to Redis.

mod keeper;
mod state;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use perpetuo_core::db::limits::Limits;
use redis::Script;
use uuid::Uuid;

use super::policy::{refusal, scopes, Estimate, Kind, Now, Policy, Scope, Seed, MAX_EXACT};
use super::shared::{call_result, exact, RedisStore, LINK_TIMEOUT};
use super::{tighter, window, Gate, Held};
use crate::metrics;
pub use keeper::LeaseKeeper;
use state::{sizes, Ask, Block, Mode, Sizes, State, Take};

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
                include_str!("../leases.lua"),
                include_str!("lease.lua")
            )),
            forget: Script::new(keeper::FORGET),
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
