//! Log partition maintenance: a background service that, at start and every hour, creates
//! the monthly `request_logs` partitions from the current month through
//! `MONTHS_AHEAD` months later (moving any rows the default partition holds for them),
//! and drops whole partitions older than the retention. Every gateway may run it: the SQL
//! functions are idempotent and serialised by an advisory lock. Usage counters are kept.

use std::time::Duration;

use async_trait::async_trait;
use perpetuo_core::db::{self, DbError, Pool};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use time::OffsetDateTime;

use crate::metrics;

/// Months created ahead of the current one.
pub const MONTHS_AHEAD: i32 = 3;
pub const EVERY: Duration = Duration::from_secs(3600);
/// A failed run is tried again this much later rather than after the full hour.
const RETRY: Duration = Duration::from_secs(60);
const TIMEOUT: Duration = Duration::from_secs(60);

pub struct PartitionMaintainer {
    pub pool: Pool,
    /// Days of logs kept; 0 keeps them forever.
    pub retention_days: u32,
}

impl PartitionMaintainer {
    /// One run: returns the partitions created and the ones dropped.
    pub async fn run_once(&self) -> Result<(i32, Vec<String>), DbError> {
        let client = self.pool.get().await?;
        let now = OffsetDateTime::now_utc();
        let created = db::logs::ensure_partitions(&client, now, MONTHS_AHEAD).await?;
        let dropped = if self.retention_days > 0 {
            let cutoff = now - time::Duration::days(i64::from(self.retention_days));
            db::logs::drop_partitions_before(&client, cutoff).await?
        } else {
            Vec::new()
        };
        Ok((created, dropped))
    }
}

#[async_trait]
impl BackgroundService for PartitionMaintainer {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let wait = match db::with_timeout(TIMEOUT, self.run_once()).await {
                Ok((created, dropped)) => {
                    metrics::PARTITION_MAINTENANCE
                        .with_label_values(&["ok"])
                        .inc();
                    if created > 0 || !dropped.is_empty() {
                        tracing::info!(created, dropped = ?dropped, "log partitions maintained");
                    }
                    EVERY
                }
                Err(e) => {
                    metrics::PARTITION_MAINTENANCE
                        .with_label_values(&["error"])
                        .inc();
                    tracing::warn!(error = %e, "log partition maintenance failed; retrying");
                    RETRY
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
