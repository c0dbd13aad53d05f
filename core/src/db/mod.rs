//! Database access: the pool, migrations, and one module per table with its row structs
//! and queries. Callers never write SQL.

pub mod account_tokens;
pub mod api_keys;
pub mod audit;
pub mod entry_keys;
pub mod invitations;
pub mod key_status;
pub mod limits;
pub mod logs;
pub mod migrate;
pub mod providers;
pub mod responses;
pub mod sessions;
pub mod tls;
pub mod traced;
pub mod usage;
pub mod users;
pub mod workspaces;

use std::task::{Context, Poll};
use std::time::Duration;

use deadpool_postgres::Hook;
pub use deadpool_postgres::{Client, GenericClient, Pool, Transaction};
use deadpool_postgres::{HookError, Manager, ManagerConfig, RecyclingMethod};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, NoTls};
pub use traced::Sql;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database: {0}")]
    Query(tokio_postgres::Error),
    /// PostgreSQL cancelled a statement that ran past the connection's `statement_timeout`
    /// (see [`StatementTimeout`]).
    #[error("database: statement cancelled by the statement timeout")]
    StatementTimeout,
    #[error("migration: {0}")]
    Migration(String),
    #[error("database configuration: {0}")]
    Config(String),
    #[error("database operation timed out")]
    Timeout,
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        // 57014 is any cancellation; the message tells the statement timeout's apart.
        let timed_out = e.code() == Some(&SqlState::QUERY_CANCELED)
            && e.as_db_error()
                .is_some_and(|d| d.message().contains("statement timeout"));
        if timed_out {
            DbError::StatementTimeout
        } else {
            DbError::Query(e)
        }
    }
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

/// How long PostgreSQL lets one statement of a pooled connection run before it cancels
/// it (`statement_timeout`, SQLSTATE 57014). A statement stuck behind a lock or a
/// runaway plan then ends in the server too, not only in the caller that gave up on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatementTimeout(Option<Duration>);

impl StatementTimeout {
    /// Nothing set: the server's own setting applies (no limit unless one was configured
    /// for the role or database). For migrations and operator commands that may run long.
    pub const SERVER_DEFAULT: Self = Self(None);
    /// `DB_STATEMENT_TIMEOUT_MS`'s default.
    pub const DEFAULT: Self = Self(Some(Duration::from_millis(10_000)));
    /// The largest accepted, one day: PostgreSQL takes at most `i32::MAX` ms.
    pub const MAX_MILLIS: u64 = 86_400_000;

    /// `ms` milliseconds; 0 sets nothing ([`Self::SERVER_DEFAULT`]). Longer than
    /// [`Self::MAX_MILLIS`] is capped there.
    pub fn from_millis(ms: u64) -> Self {
        match ms {
            0 => Self::SERVER_DEFAULT,
            ms => Self(Some(Duration::from_millis(ms.min(Self::MAX_MILLIS)))),
        }
    }

    pub fn get(self) -> Option<Duration> {
        self.0
    }

    /// Whole milliseconds, 0 when nothing is set.
    pub fn as_millis(self) -> u64 {
        self.0.map_or(0, |d| {
            u64::try_from(d.as_millis()).unwrap_or(Self::MAX_MILLIS)
        })
    }
}

impl From<Duration> for StatementTimeout {
    fn from(d: Duration) -> Self {
        Self::from_millis(u64::try_from(d.as_millis()).unwrap_or(Self::MAX_MILLIS))
    }
}

impl std::fmt::Display for StatementTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.as_millis())
    }
}

/// How a pool opens its connections.
#[derive(Debug, Clone, Default)]
pub struct PoolSettings {
    /// Connections at most.
    pub max_size: usize,
    /// Set on every connection as the pool opens it.
    pub statement_timeout: StatementTimeout,
    /// A runtime to open and drive every connection on, rather than whichever runtime
    /// first asked for it. The gateway gives its pool a thread of its own, so that the
    /// log writer's inserts and their answers are never read and written on a request
    /// thread.
    pub driver: Option<tokio::runtime::Handle>,
}

/// The connection pool; TLS as `sslmode` in `database_url` says (see [`tls`]), the
/// server's own statement timeout, each connection driven on the runtime that opens it.
/// For migrations, operator commands and tests; servers use [`pool_with`].
pub fn pool(database_url: &str, max_size: usize) -> Result<Pool, DbError> {
    pool_with(
        database_url,
        PoolSettings {
            max_size,
            ..PoolSettings::default()
        },
    )
}

/// The connection pool, as `settings` say.
pub fn pool_with(database_url: &str, settings: PoolSettings) -> Result<Pool, DbError> {
    let tls::ConnectConfig {
        pg: mut cfg, tls, ..
    } = tls::parse(database_url)?;
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(Duration::from_secs(3));
    }
    if cfg.get_application_name().is_none() {
        cfg.application_name("perpetuo");
    }
    let mc = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let mgr = match (tls, settings.driver) {
        (Some(tls), None) => Manager::from_config(cfg, tls, mc),
        (None, None) => Manager::from_config(cfg, NoTls, mc),
        (Some(tls), Some(driver)) => Manager::from_connect(cfg, DrivenOn { tls, driver }, mc),
        (None, Some(driver)) => Manager::from_connect(cfg, DrivenOn { tls: NoTls, driver }, mc),
    };
    let mut builder = Pool::builder(mgr)
        .max_size(settings.max_size)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(3)))
        .runtime(deadpool_postgres::Runtime::Tokio1);
    // A session setting, so a transaction's `SET LOCAL` (a long maintenance step) ends
    // with the transaction and the connection is back to this value.
    if let Some(limit) = settings.statement_timeout.get() {
        let set = format!("SET statement_timeout = {}", limit.as_millis());
        builder = builder.post_create(Hook::async_fn(move |client, _| {
            let set = set.clone();
            Box::pin(async move { client.batch_execute(&set).await.map_err(HookError::Backend) })
        }));
    }
    builder.build().map_err(|e| DbError::Config(e.to_string()))
}

/// Lets the statements of `tx` run for `limit` rather than the pool's statement timeout,
/// until `tx` ends ([`StatementTimeout::SERVER_DEFAULT`] here means no limit at all). For
/// maintenance steps that legitimately take long.
pub async fn set_local_statement_timeout(
    tx: &Transaction<'_>,
    limit: StatementTimeout,
) -> Result<(), DbError> {
    tx.traced_batch_execute(&format!(
        "SET LOCAL statement_timeout = {}",
        limit.as_millis()
    ))
    .await?;
    Ok(())
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
        cfg.connect_timeout(Duration::from_secs(3));
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

/// Runs `read` on a pooled connection within `limit`, the wait for the connection
/// included. A connection whose read did not finish in time is closed rather than
/// returned to the pool: its server process may still be busy (waiting for a lock, say),
/// and the next read would queue behind it.
pub async fn read_within<T>(
    pool: &Pool,
    limit: std::time::Duration,
    read: impl AsyncFnOnce(&Client) -> Result<T, DbError>,
) -> Result<T, DbError> {
    let deadline = tokio::time::Instant::now() + limit;
    let client = tokio::time::timeout_at(deadline, pool.get())
        .await
        .map_err(|_| DbError::Timeout)??;
    match tokio::time::timeout_at(deadline, read(&client)).await {
        Ok(read) => read,
        Err(_) => {
            drop(Client::take(client));
            Err(DbError::Timeout)
        }
    }
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

    /// A pool built with a statement timeout has PostgreSQL cancel a statement that runs
    /// past it, with an error that says so; the connection stays usable.
    #[tokio::test]
    async fn a_statement_past_the_pool_statement_timeout_is_cancelled() {
        let pool = pool_with(
            &test_url(),
            PoolSettings {
                max_size: 1,
                statement_timeout: StatementTimeout::from_millis(200),
                driver: None,
            },
        )
        .unwrap();
        let client = pool.get().await.unwrap();
        let err = DbError::from(client.simple_query("SELECT pg_sleep(5)").await.unwrap_err());
        assert!(matches!(err, DbError::StatementTimeout), "{err:?}");
        assert_eq!(
            err.to_string(),
            "database: statement cancelled by the statement timeout"
        );
        assert!(!err.is_unavailable());
        let one: i32 = client
            .traced_query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(one, 1);
    }

    /// Inside a transaction, `set_local_statement_timeout` lifts the pool's limit for that
    /// transaction only.
    #[tokio::test]
    async fn a_transaction_may_lift_the_pool_statement_timeout_for_itself() {
        let pool = pool_with(
            &test_url(),
            PoolSettings {
                max_size: 1,
                statement_timeout: StatementTimeout::from_millis(200),
                driver: None,
            },
        )
        .unwrap();
        let mut client = pool.get().await.unwrap();
        let show = "SELECT current_setting('statement_timeout')";
        let tx = client.transaction().await.unwrap();
        set_local_statement_timeout(&tx, StatementTimeout::from_millis(60_000))
            .await
            .unwrap();
        let inside: String = tx.traced_query_one(show, &[]).await.unwrap().get(0);
        tx.commit().await.unwrap();
        let after: String = client.traced_query_one(show, &[]).await.unwrap().get(0);
        assert_eq!((inside.as_str(), after.as_str()), ("1min", "200ms"));
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
        let pool = pool_with(
            &test_url(),
            PoolSettings {
                max_size: 1,
                driver: Some(handle),
                ..PoolSettings::default()
            },
        )
        .unwrap();
        let client = pool.get().await.unwrap();
        let one: i32 = client
            .traced_query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(one, 1);

        stop_tx.send(()).unwrap();
        driver.join().unwrap();
        let after = client.traced_query_one("SELECT 1", &[]).await;
        assert!(
            after.is_err_and(|e| e.is_closed()),
            "the connection was driven somewhere other than the driver runtime"
        );
    }
}
