//! Test support: `TestDb` creates a fresh, migrated database per test and drops it after.
//! The server comes from `TEST_DATABASE_URL`, else `DATABASE_URL`, else the local default.
//! A test's database is a copy of a template migrated once per schema and server
//! (`perpetuo_tmpl_<fingerprint of the migrations>`): copying it costs a fraction of
//! running every migration for every test.
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

/// A connection to the server's maintenance database, and the task that drives it (ends
/// once the client is dropped).
async fn admin_connect(
    admin_url: &str,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), DbError> {
    let cfg =
        tokio_postgres::Config::from_str(admin_url).map_err(|e| DbError::Config(e.to_string()))?;
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok((client, task))
}

async fn admin_exec(admin_url: &str, sql: &str) -> Result<(), DbError> {
    let (client, task) = admin_connect(admin_url).await?;
    client.batch_execute(sql).await?;
    drop(client);
    let _ = task.await;
    Ok(())
}

/// The servers (maintenance database URLs) whose template this process has made or found.
static TEMPLATES: tokio::sync::Mutex<Vec<String>> = tokio::sync::Mutex::const_new(Vec::new());

/// The name of the template for this build's migrations on the server at `admin_url`,
/// made if the server has none. Processes (the crates' test binaries, two checkouts)
/// serialise on an advisory lock; a template is built under another name and renamed once
/// migrated, so a run killed half way leaves nothing that looks finished. Templates of
/// other migrations are dropped (a process that still wants one makes it again).
async fn template(admin_url: &str, rebuild: bool) -> Result<String, DbError> {
    let name = format!("perpetuo_tmpl_{}", db::migrate::fingerprint());
    let mut known = TEMPLATES.lock().await;
    if !rebuild && known.iter().any(|u| u == admin_url) {
        return Ok(name);
    }
    let (client, task) = admin_connect(admin_url).await?;
    client
        .batch_execute("SELECT pg_advisory_lock(hashtext('perpetuo test template'))")
        .await?;
    let exists = !client
        .query("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await?
        .is_empty();
    if !exists {
        let part = format!("{name}_part");
        // A part left by a run killed half way (the lock says no one is building it).
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {part} WITH (FORCE)"))
            .await?;
        client
            .batch_execute(&format!("CREATE DATABASE {part}"))
            .await?;
        // Two: `migrate::run` holds one connection while it makes the log partitions.
        let pool = db::pool(&with_dbname(admin_url, &part)?, 2)?;
        db::migrate::run(&pool).await?;
        pool.close();
        drop(pool);
        // A closed pool's connection ends on its own task: wait until the server has seen
        // it go (a database with a session cannot be renamed or copied).
        let gone = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1";
        for _ in 0..250 {
            let n: i64 = client.query_one(gone, &[&part]).await?.get(0);
            if n == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        client
            .batch_execute(&format!("ALTER DATABASE {part} RENAME TO {name}"))
            .await?;
        let stale = client
            .query(
                "SELECT datname FROM pg_database WHERE datname LIKE 'perpetuo\\_tmpl\\_%' AND datname <> $1",
                &[&name],
            )
            .await?;
        for row in stale {
            let old: String = row.get(0);
            // In use by a process copying it right now: it stays, for a later run to drop.
            let _ = client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {old}"))
                .await;
        }
    }
    client
        .batch_execute("SELECT pg_advisory_unlock(hashtext('perpetuo test template'))")
        .await?;
    drop(client);
    let _ = task.await;
    if !known.iter().any(|u| u == admin_url) {
        known.push(admin_url.to_string());
    }
    Ok(name)
}

impl TestDb {
    /// A new empty database with every migration applied.
    pub async fn new() -> Result<Self, DbError> {
        Self::on_server(&admin_url()).await
    }

    /// The same on the server at `server_url` (for tests that run their own cluster).
    pub async fn on_server(server_url: &str) -> Result<Self, DbError> {
        let admin_url = with_dbname(server_url, "postgres")?;
        let name = format!("perpetuo_test_{}", uuid::Uuid::now_v7().simple());
        let tmpl = template(&admin_url, false).await?;
        let copy = |tmpl: String| format!("CREATE DATABASE {name} TEMPLATE {tmpl}");
        if admin_exec(&admin_url, &copy(tmpl)).await.is_err() {
            // Dropped by a process with other migrations since this one made it.
            let tmpl = template(&admin_url, true).await?;
            admin_exec(&admin_url, &copy(tmpl)).await?;
        }
        let db = Self::named(admin_url, name)?;
        // Applies nothing (the template is this build's schema) but the log partitions
        // of the current month and the next, which a template made last month may lack.
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
        Self::named(admin_url, name)
    }

    fn named(admin_url: String, name: String) -> Result<Self, DbError> {
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

    use super::*;

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

    /// A test's database is a copy of the template with every migration, its own; a
    /// template dropped under a running process (by a run with other migrations) is made
    /// again.
    #[tokio::test]
    async fn test_databases_are_migrated_copies_and_a_dropped_template_is_made_again() {
        let schema = |db: &TestDb| {
            let pool = db.pool.clone();
            async move {
                let client = pool.get().await.unwrap();
                let pending = crate::db::migrate::pending(&pool).await.unwrap();
                let n: i64 = client
                    .query_one("SELECT count(*) FROM users", &[])
                    .await
                    .unwrap()
                    .get(0);
                (pending, n)
            }
        };
        let a = TestDb::new().await.unwrap();
        assert_eq!(schema(&a).await, (vec![], 0));
        let client = a.pool.get().await.unwrap();
        client
            .execute(
                "INSERT INTO users (id, email, password_hash) VALUES (gen_random_uuid(), 'a@example.com', 'x')",
                &[],
            )
            .await
            .unwrap();
        let admin = admin_url();
        let tmpl = format!("perpetuo_tmpl_{}", crate::db::migrate::fingerprint());
        // Another process may be copying it this moment: then it is not dropped, and the
        // copy below is an ordinary one.
        let _ = admin_exec(
            &with_dbname(&admin, "postgres").unwrap(),
            &format!("DROP DATABASE IF EXISTS {tmpl}"),
        )
        .await;
        let b = TestDb::new().await.unwrap();
        assert_eq!(schema(&b).await, (vec![], 0), "a copy of its own");
        assert_eq!(schema(&a).await.1, 1);
    }

    #[tokio::test]
    #[should_panic(expected = "not within 50ms: never")]
    async fn eventually_fails_naming_what_never_came() {
        eventually("never", Duration::from_millis(50), || async { false }).await;
    }
}
