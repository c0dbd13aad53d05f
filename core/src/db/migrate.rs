//! Applies the numbered SQL files in `migrations/` (embedded at build time) with refinery,
//! and keeps the monthly `request_logs` partitions ahead of time.

use super::{DbError, Pool, Sql};

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

/// Applies the migrations up to and including `version` only: the schema an earlier
/// build left, for tests of what a later migration does to its rows.
#[cfg(any(test, feature = "test-util"))]
pub async fn run_to(pool: &Pool, version: u32) -> Result<(), DbError> {
    let mut client = pool.get().await?;
    embedded::migrations::runner()
        .set_target(refinery::Target::Version(version))
        .run_async(&mut **client)
        .await
        .map_err(|e| DbError::Migration(e.to_string()))?;
    Ok(())
}

/// A fingerprint of the embedded migrations (each one's version, name and checksum): two
/// builds with the same fingerprint make the same schema. Names the migrated database the
/// tests copy (see `testing`).
pub fn fingerprint() -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for m in embedded::migrations::runner().get_migrations() {
        h.update(m.version().to_be_bytes());
        h.update((m.name().len() as u64).to_be_bytes());
        h.update(m.name().as_bytes());
        h.update(m.checksum().to_be_bytes());
    }
    hex::encode(&h.finalize()[..8])
}

/// Migrations embedded in this build that the database has not applied yet, as
/// `V<version>__<name>`, oldest first.
pub async fn pending(pool: &Pool) -> Result<Vec<String>, DbError> {
    let mut client = pool.get().await?;
    let runner = embedded::migrations::runner();
    // A database never migrated has no history table: everything is pending.
    let has_history: bool = client
        .traced_query_one(
            "SELECT to_regclass('refinery_schema_history') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    let applied = if has_history {
        runner
            .get_applied_migrations_async(&mut **client)
            .await
            .map_err(|e| DbError::Migration(e.to_string()))?
    } else {
        Vec::new()
    };
    let mut pending: Vec<_> = runner
        .get_migrations()
        .iter()
        .filter(|m| !applied.iter().any(|a| a.version() == m.version()))
        .map(|m| (m.version(), format!("V{}__{}", m.version(), m.name())))
        .collect();
    pending.sort();
    Ok(pending.into_iter().map(|(_, name)| name).collect())
}

/// Creates the log partitions of the current month and the next three if missing
/// (idempotent; see `logs::ensure_partitions`).
pub async fn ensure_log_partitions(pool: &Pool) -> Result<(), DbError> {
    let client = pool.get().await?;
    client
        .traced_execute("SELECT perpetuo_ensure_log_partitions(now())", &[])
        .await?;
    Ok(())
}
