//! Applies the numbered SQL files in `migrations/` (embedded at build time) with refinery,
//! and keeps the monthly `request_logs` partitions ahead of time.

use super::{DbError, Pool};

mod embedded {
    refinery::embed_migrations!("../migrations");
}

/// Runs pending migrations; returns how many were applied.
pub async fn run(pool: &Pool) -> Result<usize, DbError> {
    let mut client = pool.get().await?;
    let report = embedded::migrations::runner()
        .run_async(&mut **client)
        .await
        .map_err(|e| DbError::Migration(e.to_string()))?;
    ensure_log_partitions(pool).await?;
    Ok(report.applied_migrations().len())
}

/// Creates the log partitions of the current month and the next three if missing
/// (idempotent; see `logs::ensure_partitions`).
pub async fn ensure_log_partitions(pool: &Pool) -> Result<(), DbError> {
    let client = pool.get().await?;
    client
        .execute("SELECT perpetuo_ensure_log_partitions(now())", &[])
        .await?;
    Ok(())
}
