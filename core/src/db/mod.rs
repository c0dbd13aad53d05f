//! Database access: the pool, migrations, and one module per table with its row structs
//! and queries. Callers never write SQL.

pub mod api_keys;
pub mod logs;
pub mod migrate;
pub mod providers;
pub mod usage;
pub mod users;
pub mod workspaces;

use std::str::FromStr;

pub use deadpool_postgres::{Client, Pool, Transaction};
use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("migration: {0}")]
    Migration(String),
    #[error("database configuration: {0}")]
    Config(String),
    #[error("database operation timed out")]
    Timeout,
}

impl DbError {
    /// The violated unique constraint's name, if this is a unique violation.
    pub fn unique_violation(&self) -> Option<&str> {
        match self {
            DbError::Query(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                e.as_db_error().and_then(|d| d.constraint()).or(Some(""))
            }
            _ => None,
        }
    }

    /// The SQLSTATE of an error that lies in the rows sent (class 22 data exception, 23
    /// integrity violation, 54 program limit exceeded): sending them again fails again.
    pub fn data_error(&self) -> Option<&str> {
        match self {
            DbError::Query(e) => e
                .code()
                .map(SqlState::code)
                .filter(|c| ["22", "23", "54"].iter().any(|class| c.starts_with(class))),
            _ => None,
        }
    }

    /// Whether the error means the database could not be reached at all.
    pub fn is_unavailable(&self) -> bool {
        match self {
            DbError::Pool(_) | DbError::Timeout => true,
            DbError::Query(e) => e.is_closed() || e.as_db_error().is_none(),
            _ => false,
        }
    }
}

pub fn pool(database_url: &str, max_size: usize) -> Result<Pool, DbError> {
    let mut cfg = tokio_postgres::Config::from_str(database_url)
        .map_err(|e| DbError::Config(e.to_string()))?;
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(std::time::Duration::from_secs(3));
    }
    cfg.application_name("perpetuo");
    let mgr = Manager::from_config(
        cfg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr)
        .max_size(max_size)
        .wait_timeout(Some(std::time::Duration::from_secs(5)))
        .create_timeout(Some(std::time::Duration::from_secs(3)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| DbError::Config(e.to_string()))
}

/// Cheap liveness probe used by health checks.
pub async fn ping(pool: &Pool) -> Result<(), DbError> {
    let client = pool.get().await?;
    client.simple_query("SELECT 1").await?;
    Ok(())
}

/// Runs a database operation with a deadline, so a connection that stopped answering
/// cannot hold its caller forever.
pub async fn with_timeout<T>(
    limit: std::time::Duration,
    op: impl std::future::Future<Output = Result<T, DbError>>,
) -> Result<T, DbError> {
    tokio::time::timeout(limit, op)
        .await
        .unwrap_or(Err(DbError::Timeout))
}

pub(crate) fn new_id() -> uuid::Uuid {
    uuid::Uuid::now_v7()
}
