//! Limits shared by every gateway through Redis: one atomic script call admits a request
//! (`admit.lua`), and its settlement is queued to a background link that applies it
//! (`settle.lua`). This is the path of scopes whose limits are too small to split into
//! blocks; the others are admitted from blocks leased per gateway ([`super::lease`]), which
//! count in the same hash, so both paths can meet on one scope.
//!
//! What this store promises:
//! - A slow Redis is not a lost one. A call that times out sends its request to the local
//!   counters; the request keeps the admission the call may have made in Redis and
//!   settles it like any other when it ends (a no-op if the call never ran, an `undo` if
//!   the local counters refused it), so Redis counts what really runs. Further requests
//!   use the local counters until Redis answers a ping and the queue is applied; nothing
//!   is flushed, no cache is emptied.
//! - Settlements are never dropped: they wait in a bounded queue and are retried, in
//!   order, until Redis takes them; each is idempotent by request id, so a retry of one
//!   that did run changes nothing. Past the queue's bound, spend is still kept (summed
//!   per scope) and applied when the queue empties; the slot and reservation of such a
//!   request then go back when their lease ends.
//! - Only a real loss re-seeds: a scope with a budget whose state Redis does not hold (new,
//!   flushed, restarted) has its period's spend read from PostgreSQL before it is admitted.
//! - Every number sent is an integer below 2^53 (exact in Lua).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use perpetuo_core::db::{self, limits::Limits};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use redis::aio::MultiplexedConnection;
use redis::Script;
use tokio::sync::Notify;
use uuid::Uuid;

use super::policy::{self, refusal, Estimate, Kind, Now, Policy, Scope, MAX_EXACT};
use super::{tighter, window, Gate, Held};
use crate::metrics;

/// Settlements waiting for Redis, at most. Only requests admitted through Redis settle
/// through it, so this holds what was in flight when Redis stopped answering.
const SETTLE_QUEUE: usize = 100_000;

/// Scopes whose spend is kept aside once the queue is full, at most.
const OVERFLOW_SCOPES: usize = 100_000;

/// Longest wait for one settlement, and for a ping that tells Redis answers again.
pub(super) const LINK_TIMEOUT: Duration = Duration::from_secs(1);

/// How often the link checks the connection while Redis is slow or away.
const LINK_TICK: Duration = Duration::from_millis(100);

/// Longest wait for a scope's spend from PostgreSQL when Redis holds no state for it.
const SEED_TIMEOUT: Duration = Duration::from_secs(1);

/// Adds spend kept aside while the queue was full, if the scope is still in that period.
const SPEND: &str = r"
if tonumber(redis.call('HGET', KEYS[1], 'p')) == tonumber(ARGV[1]) then
  redis.call('HINCRBY', KEYS[1], 's', ARGV[2])
end
return 1
";

/// How the shared store behaves.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// Longest a request waits for Redis before using the local limiter.
    pub deadline: Duration,
    /// Gateways sharing the limits: the local fallback allows each this share, and the
    /// blocks each leases are an eighth of it.
    pub replicas: u32,
    /// Prefix of every key this gateway writes.
    pub prefix: String,
    /// How long an admission's slot and reservation are held at most (a gateway killed
    /// mid-request leaves them for this long).
    pub slot_ttl: Duration,
}

/// One admitted request's settlement (or, with `undo`, its admission given back).
#[derive(Debug, Clone)]
struct SettleMsg {
    /// Per scope: its hash, in-flight set, held set and leases set.
    keys: Vec<String>,
    /// Per scope: its hash and budget period, for spend kept aside.
    periods: Vec<(String, i64)>,
    request_id: Uuid,
    minute: i64,
    estimate: Estimate,
    tokens: u64,
    cost_nusd: i64,
    undo: bool,
    /// The admission counted the request toward RPM.
    counted: bool,
}

/// Why a call to Redis did not give an answer.
pub(super) enum CallError {
    /// No answer within the deadline: Redis is slow, not gone.
    Slow,
    /// The connection failed: reconnect.
    Broken(redis::RedisError),
}

/// Limits shared by every gateway through Redis.
pub struct RedisStore {
    client: redis::Client,
    conn: Mutex<Option<MultiplexedConnection>>,
    admit: Script,
    settle: Script,
    spend: Script,
    settings: RedisSettings,
    pub(super) replicas: u32,
    queue: Mutex<VecDeque<SettleMsg>>,
    wake: Notify,
    overflow: Mutex<HashMap<(String, i64), i64>>,
    /// Redis did not answer in time: requests use the local counters until a ping
    /// succeeds.
    slow: AtomicBool,
    /// Where a scope's spend is read when Redis holds no state for it.
    pool: db::Pool,
}

pub(super) fn call_result<T>(
    r: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
) -> Result<T, CallError> {
    match r {
        Ok(Ok(v)) => Ok(v),
        // A command that waited too long is a slow Redis, not a broken connection.
        Ok(Err(e)) if e.is_timeout() => Err(CallError::Slow),
        Ok(Err(e)) => Err(CallError::Broken(e)),
        Err(_) => Err(CallError::Slow),
    }
}

pub(super) fn exact(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(MAX_EXACT).min(MAX_EXACT)
}

impl RedisStore {
    pub fn new(
        url: &str,
        settings: RedisSettings,
        pool: db::Pool,
    ) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            conn: Mutex::new(None),
            admit: Script::new(concat!(
                include_str!("leases.lua"),
                include_str!("admit.lua")
            )),
            settle: Script::new(include_str!("settle.lua")),
            spend: Script::new(SPEND),
            replicas: settings.replicas.max(1),
            settings,
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            overflow: Mutex::new(HashMap::new()),
            slow: AtomicBool::new(false),
            pool,
        })
    }

    pub(super) fn conn(&self) -> Option<MultiplexedConnection> {
        self.conn.lock().ok().and_then(|c| c.clone())
    }

    /// Whether Redis is taken for slow or away (until the link's ping says otherwise).
    pub(super) fn is_slow(&self) -> bool {
        self.slow.load(Ordering::Acquire)
    }

    /// Notes a call that got no answer: Redis is slow (the link pings until it answers) or
    /// the connection broke (the link reconnects).
    pub(super) fn failed(&self, e: CallError) {
        match e {
            CallError::Slow => {
                self.slow.store(true, Ordering::Release);
                metrics::LIMIT_REDIS_SLOW.inc();
            }
            CallError::Broken(e) => self.broken(&e),
        }
    }

    /// How the store behaves.
    pub(super) fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// Forgets a broken connection; the link reconnects.
    fn broken(&self, e: &redis::RedisError) {
        tracing::warn!(error = %e, "shared limits connection failed; limiting locally");
        if let Ok(mut c) = self.conn.lock() {
            *c = None;
        }
        self.slow.store(true, Ordering::Release);
    }

    /// Settlements waiting, for tests and the shutdown drain.
    pub fn pending(&self) -> usize {
        self.queue.lock().map_or(0, |q| q.len())
    }

    /// A scope's hash, in-flight set, held set and leases set.
    pub(super) fn scope_keys(&self, scope: Scope) -> [String; 4] {
        let h = match scope {
            Scope::Key(id) => format!("{}limits:k:{id}", self.settings.prefix),
            Scope::Entry(id) => format!("{}limits:e:{id}", self.settings.prefix),
            Scope::Workspace(id) => format!("{}limits:w:{id}", self.settings.prefix),
        };
        let z = format!("{h}:inflight");
        let q = format!("{h}:held");
        let l = format!("{h}:leases");
        [h, z, q, l]
    }

    /// Queues a settlement; past the bound its spend is kept aside per scope.
    fn enqueue(&self, m: SettleMsg) {
        let Ok(mut q) = self.queue.lock() else {
            return;
        };
        if q.len() < SETTLE_QUEUE {
            q.push_back(m);
            metrics::LIMIT_SETTLE_PENDING.set(q.len() as i64);
            drop(q);
            self.wake.notify_one();
            return;
        }
        drop(q);
        if m.undo || m.cost_nusd <= 0 {
            return;
        }
        let Ok(mut spent) = self.overflow.lock() else {
            return;
        };
        for (h, period) in &m.periods {
            let key = (h.clone(), *period);
            if spent.len() >= OVERFLOW_SCOPES && !spent.contains_key(&key) {
                metrics::LIMIT_SETTLE_DROPPED.inc();
                continue;
            }
            let e = spent.entry(key).or_insert(0);
            *e = e.saturating_add(m.cost_nusd).min(MAX_EXACT);
        }
    }

    /// The spend of each budget scope's period, read from PostgreSQL (the seed Redis
    /// lacks); the key's loaded seed where the read fails.
    pub(super) async fn read_seeds(
        &self,
        workspace_id: Uuid,
        scopes: &[(Scope, Limits, i64)],
        now: &Now,
    ) -> Vec<i64> {
        let mut out = scopes.iter().map(|(_, _, s)| *s).collect::<Vec<_>>();
        let read = async {
            let client = self.pool.get().await?;
            let mut seeds = Vec::with_capacity(scopes.len());
            for (scope, limits, _) in scopes {
                if limits.budget_nusd.is_none() {
                    seeds.push(None);
                    continue;
                }
                let key = match scope {
                    Scope::Key(id) => Some(*id),
                    _ => None,
                };
                let from = limits.budget_period.start(now.at);
                seeds.push(Some(
                    db::limits::spend_since(&client, workspace_id, key, from).await?,
                ));
            }
            Ok::<_, db::DbError>(seeds)
        };
        match db::with_timeout(SEED_TIMEOUT, read).await {
            Ok(seeds) => {
                metrics::LIMIT_RESEEDS.with_label_values(&["read"]).inc();
                for (o, s) in out.iter_mut().zip(seeds) {
                    if let Some(s) = s {
                        *o = (*o).max(s.clamp(0, MAX_EXACT));
                    }
                }
            }
            Err(e) => {
                metrics::LIMIT_RESEEDS.with_label_values(&["failed"]).inc();
                tracing::warn!(error = %e, "budget spend unreadable; admitting on the key's loaded spend");
            }
        }
        out
    }

    /// Admission through Redis within the deadline. `Err` sends the request to the local
    /// limiter: with nothing when Redis was not asked, with the admission Redis may have
    /// made when a call got no answer in time.
    pub(super) async fn admit(
        self: &Arc<Self>,
        first: Scope,
        workspace_id: Uuid,
        policy: &Policy,
        estimate: Estimate,
        counted: bool,
    ) -> Result<Gate, Option<SharedPermit>> {
        if self.slow.load(Ordering::Acquire) {
            return Err(None);
        }
        let Some(mut conn) = self.conn() else {
            return Err(None);
        };
        let now = Now::get();
        let request_id = Uuid::now_v7();
        let mut scopes: Vec<(Scope, Limits, i64)> = Vec::with_capacity(2);
        let mut keys = Vec::with_capacity(8);
        let mut periods = Vec::with_capacity(2);
        for (scope, limits, seed) in policy::scopes(policy, first, workspace_id) {
            let start = limits.budget_period.start(now.at);
            let seed = seed
                .filter(|s| s.period_start == start)
                .map_or(-1, |s| s.spent_nusd.clamp(0, MAX_EXACT));
            let [h, z, q, l] = self.scope_keys(scope);
            periods.push((h.clone(), start.unix_timestamp()));
            keys.extend([h, z, q, l]);
            scopes.push((scope, *limits, seed));
        }
        let lease = u64::try_from(self.settings.slot_ttl.as_millis()).unwrap_or(u64::MAX);
        let mut seeded = false;
        let out = loop {
            let mut inv = self.admit.prepare_invoke();
            for k in &keys {
                inv.key(k);
            }
            inv.arg(now.ms)
                .arg(now.minute)
                .arg(exact(estimate.tokens))
                .arg(estimate.cost_nusd.clamp(0, MAX_EXACT))
                .arg(request_id.to_string())
                .arg(exact(lease))
                .arg(scopes.len())
                .arg(i64::from(counted));
            let opt = |v: Option<u32>| v.map_or(-1, i64::from);
            for ((_, limits, seed), (_, start)) in scopes.iter().zip(&periods) {
                inv.arg(*start)
                    .arg(opt(limits.rpm))
                    .arg(opt(limits.tpm))
                    .arg(opt(limits.concurrency))
                    .arg(limits.budget_nusd.map_or(-1, |b| b.clamp(0, MAX_EXACT)))
                    .arg(*seed)
                    .arg(i64::from(seeded));
            }
            let called = tokio::time::timeout(
                self.settings.deadline,
                inv.invoke_async::<Vec<i64>>(&mut conn),
            )
            .await;
            let out = match call_result(called) {
                Ok(out) => out,
                Err(e) => {
                    self.failed(e);
                    // The call may have run: the request keeps what Redis may have given
                    // it and settles it like any admission (a no-op if it never ran).
                    return Err(Some(SharedPermit {
                        store: self.clone(),
                        keys,
                        periods,
                        request_id,
                        minute: now.minute,
                        estimate,
                        counted,
                        settled: AtomicBool::new(false),
                        pending: Mutex::new(None),
                    }));
                }
            };
            if out.first() == Some(&5) && !seeded {
                let seeds = self.read_seeds(workspace_id, &scopes, &now).await;
                for ((_, _, s), seed) in scopes.iter_mut().zip(seeds) {
                    *s = seed;
                }
                seeded = true;
                continue;
            }
            break out;
        };
        let mut gate = self.gate(&out, &scopes, &now);
        if gate.refusal.is_none() {
            gate.permit = Some(Held::Shared(Box::new(SharedPermit {
                store: self.clone(),
                keys,
                periods,
                request_id,
                minute: now.minute,
                estimate,
                counted,
                settled: AtomicBool::new(false),
                pending: Mutex::new(None),
            })));
        }
        Ok(gate)
    }

    /// The gate from the script's answer: a refusal, or the windows of an admission.
    fn gate(&self, out: &[i64], scopes: &[(Scope, Limits, i64)], now: &Now) -> Gate {
        let at = |i: usize| {
            out.get(i)
                .copied()
                .map_or(0, |v| u64::try_from(v).unwrap_or(0))
        };
        let mut gate = Gate::default();
        let code = out.first().copied().unwrap_or(0);
        if code != 0 {
            let i = usize::try_from(out.get(1).copied().unwrap_or(1) - 1).unwrap_or(0);
            let (scope, limits) = match scopes.get(i) {
                Some((scope, limits, _)) => (*scope, *limits),
                None => return gate,
            };
            if let Some(rpm) = limits.rpm {
                gate.requests = Some(window(rpm, at(2), now));
            }
            if let Some(tpm) = limits.tpm {
                gate.tokens = Some(window(tpm, at(3), now));
            }
            let r = refusal(Kind::from_code(code), scope, &limits, now);
            metrics::LIMIT_REFUSALS
                .with_label_values(&[r.kind_label(), scope.label()])
                .inc();
            gate.refusal = Some(r);
            return gate;
        }
        for (n, (_, limits, _)) in scopes.iter().enumerate() {
            if let Some(rpm) = limits.rpm {
                gate.requests = tighter(gate.requests, window(rpm, at(1 + 2 * n), now));
            }
            if let Some(tpm) = limits.tpm {
                gate.tokens = tighter(gate.tokens, window(tpm, at(2 + 2 * n), now));
            }
        }
        gate
    }

    /// Applies one settlement.
    async fn apply(
        &self,
        conn: &mut MultiplexedConnection,
        m: &SettleMsg,
    ) -> Result<(), CallError> {
        let mut inv = self.settle.prepare_invoke();
        for k in &m.keys {
            inv.key(k);
        }
        inv.arg(m.minute)
            .arg(exact(m.estimate.tokens))
            .arg(exact(m.tokens))
            .arg(m.cost_nusd.clamp(0, MAX_EXACT))
            .arg(m.request_id.to_string())
            .arg(i64::from(m.undo))
            .arg(i64::from(m.counted));
        call_result(tokio::time::timeout(LINK_TIMEOUT, inv.invoke_async::<i64>(conn)).await)
            .map(|_| ())
    }

    /// Applies the spend kept aside while the queue was full.
    async fn apply_overflow(&self, conn: &mut MultiplexedConnection) -> Result<(), CallError> {
        let kept: Vec<((String, i64), i64)> = match self.overflow.lock() {
            Ok(mut m) if !m.is_empty() => m.drain().collect(),
            _ => return Ok(()),
        };
        let mut left = kept.into_iter();
        while let Some(((h, period), cost)) = left.next() {
            let mut inv = self.spend.prepare_invoke();
            inv.key(&h).arg(period).arg(cost);
            let r = tokio::time::timeout(LINK_TIMEOUT, inv.invoke_async::<i64>(conn)).await;
            if let Err(e) = call_result(r) {
                // Keep what was not applied for the next round.
                if let Ok(mut m) = self.overflow.lock() {
                    m.insert((h, period), cost);
                    m.extend(left);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    async fn connect(&self) -> Option<MultiplexedConnection> {
        // Every call brings its own timeout (the deadline, or the link's): none of the
        // client's own, which would end a slow call as if the connection had failed.
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        let connecting = self
            .client
            .get_multiplexed_async_connection_with_config(&config);
        match tokio::time::timeout(LINK_TIMEOUT, connecting).await {
            Ok(Ok(c)) => {
                if let Ok(mut slot) = self.conn.lock() {
                    *slot = Some(c.clone());
                }
                Some(c)
            }
            _ => None,
        }
    }

    /// Whether Redis answers a ping within the link's timeout.
    async fn answers(&self, conn: &mut MultiplexedConnection) -> bool {
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(conn);
        matches!(tokio::time::timeout(LINK_TIMEOUT, ping).await, Ok(Ok(_)))
    }

    /// Applies queued settlements in order until the queue is empty or Redis fails; a
    /// settlement that failed stays first in line.
    async fn drain(&self, conn: &mut MultiplexedConnection) -> Result<(), CallError> {
        loop {
            let next = self.queue.lock().ok().and_then(|q| q.front().cloned());
            let Some(m) = next else {
                return self.apply_overflow(conn).await;
            };
            self.apply(conn, &m).await?;
            if let Ok(mut q) = self.queue.lock() {
                q.pop_front();
                metrics::LIMIT_SETTLE_PENDING.set(q.len() as i64);
            }
        }
    }

    /// One round of the link: connect, tell whether Redis answers again, apply what waits.
    async fn link_round(&self) {
        let conn = match self.conn() {
            Some(c) => Some(c),
            None => self.connect().await,
        };
        let Some(mut conn) = conn else {
            self.slow.store(true, Ordering::Release);
            return;
        };
        let slow = self.slow.load(Ordering::Acquire);
        if slow && !self.answers(&mut conn).await {
            return;
        }
        match self.drain(&mut conn).await {
            // Admissions given back before Redis takes new ones: a call that timed out
            // but ran must not hold a slot against the next request.
            Ok(()) if slow => self.slow.store(false, Ordering::Release),
            Ok(()) => {}
            Err(CallError::Slow) => {
                self.slow.store(true, Ordering::Release);
                metrics::LIMIT_REDIS_SLOW.inc();
            }
            Err(CallError::Broken(e)) => self.broken(&e),
        }
    }
}

/// A request admitted by the shared store. Its settlement (from the real usage or, if
/// never settled, from its estimate) is applied by the request itself once it has ended
/// ([`SharedPermit::apply`], before its connection takes another request, so a client's
/// next request finds its slot free), or queued for the link when Redis does not take it
/// in time or the request ends without applying it.
pub struct SharedPermit {
    store: Arc<RedisStore>,
    keys: Vec<String>,
    periods: Vec<(String, i64)>,
    request_id: Uuid,
    minute: i64,
    estimate: Estimate,
    counted: bool,
    settled: AtomicBool,
    /// The settlement made and not yet applied or queued.
    pending: Mutex<Option<SettleMsg>>,
}

impl SharedPermit {
    pub(super) fn settle(&self, tokens: u64, cost_nusd: i64) {
        self.send(tokens, cost_nusd, false);
    }

    /// Gives the admission back whole: the request was not served on it.
    pub(super) fn undo(&self) {
        self.send(0, 0, true);
    }

    fn send(&self, tokens: u64, cost_nusd: i64, undo: bool) {
        if self.settled.swap(true, Ordering::AcqRel) {
            return;
        }
        let msg = SettleMsg {
            keys: self.keys.clone(),
            periods: self.periods.clone(),
            request_id: self.request_id,
            minute: self.minute,
            estimate: self.estimate,
            tokens,
            cost_nusd,
            undo,
            counted: self.counted,
        };
        match self.pending.lock() {
            Ok(mut p) => *p = Some(msg),
            Err(_) => self.store.enqueue(msg),
        }
    }

    fn take_pending(&self) -> Option<SettleMsg> {
        self.pending.lock().ok().and_then(|mut p| p.take())
    }

    /// Applies the settlement now, within the store's deadline; queues it for the link
    /// when Redis is slow, away or does not answer in time (a retry of one that did run
    /// is a no-op).
    pub(super) async fn apply(&self) {
        let Some(msg) = self.take_pending() else {
            return;
        };
        let store = &self.store;
        let conn = if store.slow.load(Ordering::Acquire) {
            None
        } else {
            store.conn()
        };
        let Some(mut conn) = conn else {
            store.enqueue(msg);
            return;
        };
        let applied = tokio::time::timeout(store.settings.deadline, store.apply(&mut conn, &msg))
            .await
            .unwrap_or(Err(CallError::Slow));
        match applied {
            Ok(()) => {}
            Err(e) => {
                store.failed(e);
                store.enqueue(msg);
            }
        }
    }
}

impl Drop for SharedPermit {
    fn drop(&mut self) {
        self.settle(self.estimate.tokens, 0);
        if let Some(msg) = self.take_pending() {
            self.store.enqueue(msg);
        }
    }
}

/// Keeps the Redis connection up (reconnecting while it is down, pinging while it is
/// slow) and applies settlements in order.
pub struct RedisLink {
    pub store: Arc<RedisStore>,
}

#[async_trait]
impl BackgroundService for RedisLink {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(LINK_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.store.link_round().await;
            tokio::select! {
                _ = self.store.wake.notified() => {}
                _ = tick.tick() => {}
                _ = shutdown.changed() => {
                    // Requests still ending get a bounded moment to settle.
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
                    while tokio::time::Instant::now() < deadline {
                        self.store.link_round().await;
                        if self.store.pending() == 0 {
                            return;
                        }
                        let _ = tokio::time::timeout_at(deadline, self.store.wake.notified()).await;
                    }
                    return;
                }
            }
        }
    }
}
