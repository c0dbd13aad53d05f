//! Test support: `TestDb` creates a fresh, migrated database per test and drops it after.
//! The server comes from `TEST_DATABASE_URL`, else `DATABASE_URL`, else the local default.
//! [`eventually`] is the one way a test waits for something another process does.

use std::str::FromStr;

use crate::db::{self, DbError, Pool};

pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub struct TestDb {
    pub url: String,
    pub name: String,
    pub pool: Pool,
    admin_url: String,
}

fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_string())
}

fn with_dbname(url: &str, name: &str) -> Result<String, DbError> {
    let mut u = url::Url::parse(url).map_err(|e| DbError::Config(e.to_string()))?;
    u.set_path(&format!("/{name}"));
    Ok(u.to_string())
}

async fn admin_exec(admin_url: &str, sql: &str) -> Result<(), DbError> {
    let cfg =
        tokio_postgres::Config::from_str(admin_url).map_err(|e| DbError::Config(e.to_string()))?;
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
    let task = tokio::spawn(conn);
    client.batch_execute(sql).await?;
    drop(client);
    let _ = task.await;
    Ok(())
}

impl TestDb {
    /// A new empty database with every migration applied.
    pub async fn new() -> Result<Self, DbError> {
        Self::on_server(&admin_url()).await
    }

    /// The same on the server at `server_url` (for tests that run their own cluster).
    pub async fn on_server(server_url: &str) -> Result<Self, DbError> {
        let db = Self::empty(server_url).await?;
        db::migrate::run(&db.pool).await?;
        Ok(db)
    }

    /// A new database with the migrations up to and including `version` only (the
    /// schema an earlier build left); [`db::migrate::run`] applies the rest.
    pub async fn at_version(version: u32) -> Result<Self, DbError> {
        let db = Self::empty(&admin_url()).await?;
        db::migrate::run_to(&db.pool, version).await?;
        Ok(db)
    }

    async fn empty(server_url: &str) -> Result<Self, DbError> {
        let admin_url = with_dbname(server_url, "postgres")?;
        let name = format!("perpetuo_test_{}", uuid::Uuid::now_v7().simple());
        admin_exec(&admin_url, &format!("CREATE DATABASE {name}")).await?;
        let url = with_dbname(&admin_url, &name)?;
        let pool = db::pool(&url, 8)?;
        Ok(Self {
            url,
            name,
            pool,
            admin_url,
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        self.pool.close();
        let admin_url = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop runs inside the test's runtime; use a private one on its own thread.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                let _ = rt.block_on(admin_exec(&admin_url, &sql));
            }
        })
        .join();
    }
}

/// What an [`eventually`] check yields: `true`, or `Some(value)`, once the condition holds.
pub trait Settled {
    type Value;
    fn settled(self) -> Option<Self::Value>;
}

impl Settled for bool {
    type Value = ();
    fn settled(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Settled for Option<T> {
    type Value = T;
    fn settled(self) -> Option<T> {
        self
    }
}

/// How often [`eventually`] checks again.
const POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// Runs `check` until it settles (`true`, or `Some(value)`, which is returned) and fails
/// the test naming `what` if it has not after `within`. For waiting on what another
/// process (the gateway, the database, a mail server) does in its own time: the deadline
/// is only a bound on a hung run, never a measurement, so it is generous.
#[allow(clippy::panic)] // failing the test is the point
pub async fn eventually<F, Fut>(
    what: &str,
    within: std::time::Duration,
    mut check: F,
) -> <Fut::Output as Settled>::Value
where
    F: FnMut() -> Fut,
    Fut: std::future::Future,
    Fut::Output: Settled,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await.settled() {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("not within {within:?}: {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::eventually;

    #[tokio::test]
    async fn eventually_returns_what_settles_it() {
        let mut asked = 0;
        let got = eventually("the third ask", Duration::from_secs(5), || {
            asked += 1;
            let n = asked;
            async move { (n == 3).then_some(n) }
        })
        .await;
        assert_eq!(got, 3);
        eventually("true at once", Duration::ZERO, || async { true }).await;
    }

    #[tokio::test]
    #[should_panic(expected = "not within 50ms: never")]
    async fn eventually_fails_naming_what_never_came() {
        eventually("never", Duration::from_millis(50), || async { false }).await;
    }
}
