//! Database access: the pool, migrations, and one module per table with its row structs
//! and queries. Callers never write SQL.

pub mod account_tokens;
pub mod api_keys;
pub mod audit;
pub mod invitations;
pub mod limits;
pub mod logs;
pub mod migrate;
pub mod providers;
pub mod responses;
pub mod sessions;
pub mod tls;
pub mod usage;
pub mod users;
pub mod workspaces;

use std::task::{Context, Poll};

pub use deadpool_postgres::{Client, GenericClient, Pool, Transaction};
use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, NoTls};

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

/// The connection pool; TLS as `sslmode` in `database_url` says (see [`tls`]). Each
/// connection is driven (its socket read and written) on the runtime that opens it.
pub fn pool(database_url: &str, max_size: usize) -> Result<Pool, DbError> {
    pool_driven_on(database_url, max_size, None)
}

/// [`pool`], with every connection opened and driven on `driver`'s runtime rather than on
/// whichever runtime first asked for it. The gateway gives its pool a thread of its own,
/// so that the log writer's inserts and their answers are never read and written on a
/// request thread.
pub fn pool_driven_on(
    database_url: &str,
    max_size: usize,
    driver: Option<tokio::runtime::Handle>,
) -> Result<Pool, DbError> {
    let tls::ConnectConfig {
        pg: mut cfg, tls, ..
    } = tls::parse(database_url)?;
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(std::time::Duration::from_secs(3));
    }
    if cfg.get_application_name().is_none() {
        cfg.application_name("perpetuo");
    }
    let mc = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let mgr = match (tls, driver) {
        (Some(tls), None) => Manager::from_config(cfg, tls, mc),
        (None, None) => Manager::from_config(cfg, NoTls, mc),
        (Some(tls), Some(driver)) => Manager::from_connect(cfg, DrivenOn { tls, driver }, mc),
        (None, Some(driver)) => Manager::from_connect(cfg, DrivenOn { tls: NoTls, driver }, mc),
    };
    Pool::builder(mgr)
        .max_size(max_size)
        .wait_timeout(Some(std::time::Duration::from_secs(5)))
        .create_timeout(Some(std::time::Duration::from_secs(3)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| DbError::Config(e.to_string()))
}

/// A pooled connection's client half and the task driving it.
type Opened = Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>;

/// Opens a pooled connection on `driver`'s runtime and drives it there: the socket is
/// registered with that runtime's reactor, and only the client half comes back.
struct DrivenOn<T> {
    tls: T,
    driver: tokio::runtime::Handle,
}

impl<T> deadpool_postgres::Connect for DrivenOn<T>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as tokio_postgres::tls::TlsConnect<tokio_postgres::Socket>>::Future: Send,
{
    fn connect(
        &self,
        pg_config: &tokio_postgres::Config,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Opened> + Send + '_>> {
        let (tls, here_tls) = (self.tls.clone(), self.tls.clone());
        let (config, here_config) = (pg_config.clone(), pg_config.clone());
        let (opened, client) = tokio::sync::oneshot::channel();
        let task = self.driver.spawn(async move {
            match config.connect(tls).await {
                Ok((client, connection)) => {
                    if opened.send(Ok(client)).is_ok() {
                        if let Err(e) = connection.await {
                            tracing::warn!(error = %e, "database connection closed with an error");
                        }
                    }
                }
                Err(e) => {
                    let _ = opened.send(Err(e));
                }
            }
        });
        Box::pin(async move {
            match client.await {
                Ok(Ok(client)) => Ok((client, task)),
                Ok(Err(e)) => Err(e),
                // The driver runtime is gone (the process is stopping): open and drive
                // the connection here instead.
                Err(_) => {
                    let (client, connection) = here_config.connect(here_tls).await?;
                    let task = tokio::spawn(async move {
                        if let Err(e) = connection.await {
                            tracing::warn!(error = %e, "database connection closed with an error");
                        }
                    });
                    Ok((client, task))
                }
            }
        })
    }
}

/// One connection outside the pool (the gateway's LISTEN connection), with the same TLS
/// rules as [`pool`]. The caller drives the returned [`Connection`] for messages.
pub async fn connect(database_url: &str) -> Result<(tokio_postgres::Client, Connection), DbError> {
    let tls::ConnectConfig {
        pg: mut cfg, tls, ..
    } = tls::parse(database_url)?;
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(std::time::Duration::from_secs(3));
    }
    if cfg.get_application_name().is_none() {
        cfg.application_name("perpetuo");
    }
    Ok(match tls {
        Some(tls) => {
            let (client, conn) = cfg.connect(tls).await?;
            (client, Connection(Box::new(conn)))
        }
        None => {
            let (client, conn) = cfg.connect(NoTls).await?;
            (client, Connection(Box::new(conn)))
        }
    })
}

/// The I/O half of a [`connect`]ed client, plain or TLS alike.
pub struct Connection(Box<dyn PollMessage + Send>);

impl Connection {
    /// Drives the connection; yields notifications and notices until it closes.
    pub fn poll_message(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<AsyncMessage, tokio_postgres::Error>>> {
        self.0.poll_message(cx)
    }
}

trait PollMessage {
    fn poll_message(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<AsyncMessage, tokio_postgres::Error>>>;
}

impl<S, T> PollMessage for tokio_postgres::Connection<S, T>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_message(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<AsyncMessage, tokio_postgres::Error>>> {
        tokio_postgres::Connection::poll_message(self, cx)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn test_url() -> String {
        std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
    }

    /// A pool given a driver runtime opens and drives its connections there: the client
    /// works from another runtime, and stops working when the driver runtime is gone.
    #[tokio::test]
    async fn pooled_connections_live_on_the_driver_runtime() {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let driver = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            handle_tx.send(rt.handle().clone()).unwrap();
            rt.block_on(async {
                let _ = stop_rx.await;
            });
            // Dropping the runtime cancels every task it drives.
        });
        let handle = handle_rx.recv().unwrap();
        let pool = pool_driven_on(&test_url(), 1, Some(handle)).unwrap();
        let client = pool.get().await.unwrap();
        let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1);

        stop_tx.send(()).unwrap();
        driver.join().unwrap();
        let after = client.query_one("SELECT 1", &[]).await;
        assert!(
            after.is_err_and(|e| e.is_closed()),
            "the connection was driven somewhere other than the driver runtime"
        );
    }
}
