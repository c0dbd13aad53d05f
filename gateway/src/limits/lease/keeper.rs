//! The leases' heartbeat: every second each lease reports to Redis and renews what it
//! holds; an idle one gives back all it does not use, and once nothing of it runs it is
//! forgotten, in Redis and in the map. On shutdown every lease gives back what it holds.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::state::Mode;
use super::{Leases, ScopeLease, HEARTBEAT, IDLE};
use crate::limits::shared::{call_result, LINK_TIMEOUT};
use crate::metrics;

/// Heartbeat calls in flight at once.
const BEATS_AT_ONCE: usize = 64;

/// Forgets a lease: its slots and reservation go back, its markers are deleted. Run once
/// nothing of it is in use; repeating it changes nothing.
pub(super) const FORGET: &str = concat!(
    include_str!("../leases.lua"),
    r"
-- KEYS: the scope's hash and leases set. ARGV: lease id.
release_lease(KEYS[1], ARGV[1])
local id = ARGV[1]
redis.call('HDEL', KEYS[1], 'lm:' .. id, 'lr:' .. id, 'lt:' .. id, 'ln:' .. id, 'lx:' .. id)
redis.call('ZREM', KEYS[2], id)
return 1
"
);

impl Leases {
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
