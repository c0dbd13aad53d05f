//! What this gateway knows of the provider keys it used lately — each key's breaker and
//! the headroom its provider reported — written every [`EVERY`] to the
//! `gateway_key_status` table, where the admin API reads it (the admin reaches no
//! gateway's memory). One row per key per gateway, replaced in place; keys not used for
//! [`FORGET`] are no longer reported, and rows nobody refreshed for as long are swept.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use perpetuo_core::db::key_status::{self, KeyStatus};
use perpetuo_core::db::{self, Pool};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{headroom, Breakers, Headrooms};

/// How often the status is written.
pub const EVERY: Duration = Duration::from_secs(5);
/// How long a key stays reported after its last request, and a row unrefreshed.
pub const FORGET: Duration = Duration::from_secs(300);
/// Longest one write may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);

pub struct StatusPublisher {
    pub gateway: Uuid,
    pub headrooms: Arc<Headrooms>,
    pub breakers: Arc<Breakers>,
    pub pool: Pool,
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl StatusPublisher {
    /// The rows this gateway reports now.
    pub fn rows(&self) -> Vec<KeyStatus> {
        let now_ms = headroom::now_ms();
        let now = Instant::now();
        let since = now_ms.saturating_sub(FORGET.as_millis() as u64);
        self.headrooms
            .used_since(since)
            .into_iter()
            .map(|(key, owner)| {
                let room = self.headrooms.room(key, now_ms);
                let requests = room.and_then(|r| r.requests);
                let tokens = room.and_then(|r| r.tokens);
                let reset_ms = [
                    requests.map(|l| l.reset_ms),
                    tokens.map(|l| l.reset_ms),
                    room.and_then(|r| r.blocked_until_ms),
                ]
                .into_iter()
                .flatten()
                .max();
                KeyStatus {
                    key_id: key,
                    entry_id: owner.entry_id,
                    workspace_id: owner.workspace_id,
                    breaker: self.breakers.state(key, now),
                    remaining_requests: requests.map(|l| clamp(l.remaining)),
                    remaining_tokens: tokens.map(|l| clamp(l.remaining)),
                    reset_at: reset_ms.and_then(|ms| {
                        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
                    }),
                }
            })
            .collect()
    }

    async fn write(&self) -> Result<(), db::DbError> {
        let rows = self.rows();
        let client = self.pool.get().await?;
        key_status::publish(&client, self.gateway, &rows).await?;
        key_status::sweep(&client, FORGET).await?;
        Ok(())
    }
}

#[async_trait]
impl BackgroundService for StatusPublisher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            match tokio::time::timeout(WRITE_TIMEOUT, self.write()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "provider key status not written"),
                Err(_) => tracing::warn!("provider key status not written in time"),
            }
        }
    }
}
