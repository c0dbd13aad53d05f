//! The purge of stored responses past their retention: a background service that, at
//! start and then every [`EVERY`], deletes expired turns in batches of [`BATCH`] rows,
//! each batch its own short statement on a connection taken from the pool and given back,
//! until a batch finds none left. At most [`MAX_BATCHES`] run in one go, so the purge
//! never holds the pool for long; when that is not enough, the next run comes after
//! [`CATCH_UP`] rather than after the full interval. A turn that others continue stays
//! until they have gone (see `db::responses::purge_expired`).

use std::time::Duration;

use async_trait::async_trait;
use perpetuo_core::db::{self, responses, DbError, Pool};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

/// Rows deleted per statement.
pub const BATCH: i64 = 1_000;
/// Statements per run at most.
pub const MAX_BATCHES: u32 = 100;
pub const EVERY: Duration = Duration::from_secs(300);
/// The wait before the next run when one stopped at [`MAX_BATCHES`].
const CATCH_UP: Duration = Duration::from_secs(1);
/// The wait after a failed run.
const RETRY: Duration = Duration::from_secs(60);
/// Longest one batch may take.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

pub struct ResponsePurge {
    pub pool: Pool,
}

/// What one run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub deleted: u64,
    /// False when the run stopped at [`MAX_BATCHES`] with rows perhaps left.
    pub caught_up: bool,
}

impl ResponsePurge {
    /// One run: batches until one deletes nothing, or [`MAX_BATCHES`] of them.
    pub async fn run_once(&self) -> Result<Purged, DbError> {
        let mut deleted = 0;
        for _ in 0..MAX_BATCHES {
            let n = db::with_timeout(STATEMENT_TIMEOUT, async {
                let client = self.pool.get().await?;
                responses::purge_expired(&client, BATCH).await
            })
            .await?;
            if n == 0 {
                return Ok(Purged {
                    deleted,
                    caught_up: true,
                });
            }
            deleted += n;
        }
        Ok(Purged {
            deleted,
            caught_up: false,
        })
    }
}

#[async_trait]
impl BackgroundService for ResponsePurge {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let wait = match self.run_once().await {
                Ok(purged) => {
                    if purged.deleted > 0 {
                        tracing::info!(
                            deleted = purged.deleted,
                            "expired stored responses deleted"
                        );
                    }
                    if purged.caught_up {
                        EVERY
                    } else {
                        CATCH_UP
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "purge of expired stored responses failed; retrying");
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
