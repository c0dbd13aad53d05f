//! Cache invalidation: a background service LISTENs on `perpetuo_invalidate` and drops
//! the cached key, workspace keys or workspace entries a notification names; a key's
//! stale copy goes only when the notification says the key was revoked (or deleted,
//! re-keyed, moved, or its expiry changed). Notifications are not replayed, so when it
//! listens again after its connection dropped (it reconnects with backoff), and when it
//! first listens after requests already filled the caches, it clears both fresh caches
//! and checks the stale keys against the database; a starting gateway reports itself not
//! ready until it listens ([`Hearing`]), so that normally nothing is cached before. It
//! also flushes
//! `last_used_at` every second.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use perpetuo_core::apikey::KeyHash;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::Deserialize;
use tokio_postgres::AsyncMessage;
use uuid::Uuid;

use crate::auth::KeyCache;
use crate::metrics;
use crate::routing::EntryCache;

pub const CHANNEL: &str = "perpetuo_invalidate";
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Longest a starting gateway reports itself not ready while it cannot listen yet (the
/// database does not answer): it then serves, and clears what it cached once it listens.
pub const READY_WITHIN: Duration = Duration::from_secs(2);

/// Whether the gateway hears change notifications yet. `/healthz` answers 503 until it
/// does (or until [`READY_WITHIN`] has passed since the start), so that nothing is cached
/// before a change to it can be heard.
#[derive(Debug)]
pub struct Hearing {
    listening: AtomicBool,
    since: Instant,
}

impl Default for Hearing {
    fn default() -> Self {
        Self {
            listening: AtomicBool::new(false),
            since: Instant::now(),
        }
    }
}

impl Hearing {
    /// Listening, or no longer waiting to.
    pub fn ready(&self) -> bool {
        self.listening.load(Ordering::Acquire) || self.since.elapsed() >= READY_WITHIN
    }

    /// Notes a LISTEN in place; whether it is the first.
    fn heard(&self) -> bool {
        !self.listening.swap(true, Ordering::AcqRel)
    }
}

#[derive(Debug, Deserialize)]
struct Notice {
    table: String,
    key_hash: Option<String>,
    workspace_id: Option<Uuid>,
    /// For `api_keys`: whether the key can no longer be trusted as it was. Absent (a
    /// notification from before migration V10) counts as a revocation.
    revocation: Option<bool>,
}

pub struct Invalidator {
    pub database_url: String,
    pub keys: Arc<KeyCache>,
    pub entries: Arc<EntryCache>,
    pub hearing: Arc<Hearing>,
}

impl Invalidator {
    async fn apply(&self, payload: &str) {
        let Ok(n) = serde_json::from_str::<Notice>(payload) else {
            tracing::warn!("unreadable change notification; clearing caches");
            self.entries.invalidate_all();
            self.forget_keys().await;
            return;
        };
        match n.table.as_str() {
            "api_keys" => match n.key_hash.as_deref().and_then(KeyHash::from_hex) {
                Some(h) if n.revocation.unwrap_or(true) => self.keys.invalidate(&h).await,
                Some(h) => self.keys.refresh(&h).await,
                None => self.forget_keys().await,
            },
            // Workspace limits travel with every key of the workspace.
            "workspaces" => match n.workspace_id {
                Some(ws) => self.keys.refresh_workspace(ws),
                None => self.keys.invalidate_all(),
            },
            "provider_keys" => match n.workspace_id {
                Some(ws) => self.entries.invalidate(ws).await,
                None => self.entries.invalidate_all(),
            },
            _ => {}
        }
    }

    /// Every key is read again; stale copies of keys no longer usable go.
    async fn forget_keys(&self) {
        self.keys.invalidate_all();
        self.revalidate_stale().await;
    }

    /// Checks the stale key copies against the database.
    async fn revalidate_stale(&self) {
        if let Err(e) = self.keys.revalidate_stale().await {
            tracing::warn!(error = %e, "stale keys not checked against the database");
        }
    }

    /// One connection's life: returns when it ends.
    async fn listen_once(&self) -> Result<(), perpetuo_core::db::DbError> {
        // TLS as `sslmode` in DATABASE_URL says, like the pool.
        let (client, mut conn) = perpetuo_core::db::connect(&self.database_url).await?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
            while let Some(msg) = messages.next().await {
                match msg {
                    Ok(AsyncMessage::Notification(n)) => {
                        if tx.send(Some(n.payload().to_string())).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "change listener connection failed");
                        break;
                    }
                }
            }
            let _ = tx.send(None);
        });
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        let first = self.hearing.heard();
        // Whatever changed before this LISTEN (while away, or, the first time, since
        // requests served before it filled the caches) was not heard.
        let unheard = !first || self.entries.holds_any() || self.keys.holds_any();
        if unheard {
            self.entries.invalidate_all();
            self.keys.invalidate_all();
        }
        // From here every change is heard; the stale copies' check runs on beside the
        // notifications.
        metrics::LISTENER_UP.set(1);
        let recheck_stale = async {
            if unheard {
                self.revalidate_stale().await;
            }
        };
        tracing::info!("listening for change notifications");
        // New notifications are applied while the stale keys are checked, so that a
        // revocation never waits for that check.
        let notifications = async {
            while let Some(Some(payload)) = rx.recv().await {
                self.apply(&payload).await;
            }
        };
        tokio::join!(recheck_stale, notifications);
        driver.abort();
        Ok(())
    }
}

#[async_trait]
impl BackgroundService for Invalidator {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let started = tokio::time::Instant::now();
            tokio::select! {
                r = self.listen_once() => {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "change listener cannot connect");
                    }
                }
                _ = shutdown.changed() => return,
            }
            metrics::LISTENER_UP.set(0);
            metrics::LISTENER_RECONNECTS.inc();
            if started.elapsed() > Duration::from_secs(10) {
                backoff = Duration::from_millis(100);
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// Writes `last_used_at` in batches, once a second.
pub struct LastUsedFlusher {
    pub keys: Arc<KeyCache>,
}

#[async_trait]
impl BackgroundService for LastUsedFlusher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => {
                    let _ = self.keys.flush_last_used().await;
                    return;
                }
            }
            if let Err(e) = self.keys.flush_last_used().await {
                tracing::debug!(error = %e, "last_used_at not written this round");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_is_ready_once_it_listens_or_once_it_stopped_waiting() {
        let starting = Hearing::default();
        assert!(!starting.ready());
        assert!(starting.heard(), "the first LISTEN");
        assert!(starting.ready());
        assert!(
            !starting.heard(),
            "a LISTEN after a reconnect is not the first"
        );
        let waited = Hearing {
            listening: AtomicBool::new(false),
            since: Instant::now() - READY_WITHIN,
        };
        assert!(waited.ready());
    }
}
