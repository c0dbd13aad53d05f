//! Test support: `TestDb` creates a fresh, migrated database per test and drops it after.
//! The server comes from `TEST_DATABASE_URL`, else `DATABASE_URL`, else the local default.
//! A test's database is a copy of a template migrated once per schema and server
//! (`perpetuo_tmpl_<fingerprint of the migrations>`): copying it costs a fraction of
//! running every migration for every test. On the default server a thread of the test
//! process copies it ahead of the tests (see [`spares`]): a copy is a fifth of a second
//! of the server's fsyncs that a test would otherwise wait for.
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

/// Makes `name` a copy of this build's template on the server at `admin_url`, ready for a
/// test.
async fn copy_template(admin_url: &str, name: &str) -> Result<(), DbError> {
    let tmpl = template(admin_url, false).await?;
    let copy = |tmpl: String| format!("CREATE DATABASE {name} TEMPLATE {tmpl}");
    if admin_exec(admin_url, &copy(tmpl)).await.is_err() {
        // Dropped by a process with other migrations since this one made it.
        let tmpl = template(admin_url, true).await?;
        admin_exec(admin_url, &copy(tmpl)).await?;
    }
    // Applies nothing (the template is this build's schema) but the log partitions of the
    // current month and the next, which a template made last month may lack.
    let pool = db::pool(&with_dbname(admin_url, name)?, 2)?;
    let migrated = db::migrate::run(&pool).await;
    pool.close();
    migrated.map(drop)
}

/// Test databases copied ahead, on the default server, by one thread of the process.
///
/// The thread holds a session-level advisory lock named after the process's copies for
/// as long as the process lives, and keeps [`AHEAD`] copies ready (one waiting in a
/// channel, one in hand). A process that ends leaves its unused copies behind; the next
/// process to start copying drops every copy whose owner's lock it can take (its owner's
/// session, and so the owner, is gone).
mod spares {
    use std::sync::OnceLock;

    use tokio::sync::{mpsc, Mutex};

    use super::{admin_connect, admin_exec, copy_template, DbError};

    /// Copies made ahead of the tests that take them.
    pub const AHEAD: usize = 2;
    const PREFIX: &str = "perpetuo_spare_";

    struct Spares {
        admin_url: String,
        ready: Mutex<mpsc::Receiver<String>>,
    }

    static SPARES: OnceLock<Spares> = OnceLock::new();

    /// A copy made ahead on the server at `admin_url`, or `None` if this process does not
    /// copy ahead there (another server) or its copying has stopped (the test then makes
    /// its own copy, and meets the error itself).
    pub async fn take(admin_url: &str) -> Option<String> {
        let spares = SPARES.get_or_init(|| start(admin_url.to_string()));
        if spares.admin_url != admin_url {
            return None;
        }
        spares.ready.lock().await.recv().await
    }

    fn start(admin_url: String) -> Spares {
        // One waits in the channel while the thread holds the next.
        let (tx, rx) = mpsc::channel(AHEAD - 1);
        let url = admin_url.clone();
        let _ = std::thread::Builder::new()
            .name("test-db-spares".into())
            .spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    let _ = rt.block_on(copy_ahead(&url, tx));
                }
            });
        Spares {
            admin_url,
            ready: Mutex::new(rx),
        }
    }

    pub(super) fn lock_key(owner: &str) -> String {
        format!("perpetuo spare {owner}")
    }

    async fn copy_ahead(admin_url: &str, tx: mpsc::Sender<String>) -> Result<(), DbError> {
        let owner = uuid::Uuid::now_v7().simple().to_string();
        // Held until the process ends: its copies are not anyone else's to drop.
        let (session, _task) = admin_connect(admin_url).await?;
        session
            .execute(
                "SELECT pg_advisory_lock(hashtextextended($1, 0))",
                &[&lock_key(&owner)],
            )
            .await?;
        sweep(&session, admin_url).await?;
        for n in 0u64.. {
            let name = format!("{PREFIX}{owner}_{n}");
            copy_template(admin_url, &name).await?;
            if tx.send(name.clone()).await.is_err() {
                admin_exec(admin_url, &format!("DROP DATABASE IF EXISTS {name}")).await?;
                break;
            }
        }
        Ok(())
    }

    /// Drops the copies of processes that have ended.
    pub(super) async fn sweep(
        session: &tokio_postgres::Client,
        admin_url: &str,
    ) -> Result<(), DbError> {
        let rows = session
            .query(
                "SELECT datname FROM pg_database WHERE datname LIKE 'perpetuo\\_spare\\_%'",
                &[],
            )
            .await?;
        let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        let mut owners: Vec<&str> = names
            .iter()
            .filter_map(|n| n.strip_prefix(PREFIX)?.split('_').next())
            .collect();
        owners.sort_unstable();
        owners.dedup();
        for owner in owners {
            let gone: bool = session
                .query_one(
                    "SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
                    &[&lock_key(owner)],
                )
                .await?
                .get(0);
            if !gone {
                continue;
            }
            for name in names
                .iter()
                .filter(|n| n.starts_with(&format!("{PREFIX}{owner}_")))
            {
                admin_exec(
                    admin_url,
                    &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                )
                .await?;
            }
            session
                .execute(
                    "SELECT pg_advisory_unlock(hashtextextended($1, 0))",
                    &[&lock_key(owner)],
                )
                .await?;
        }
        Ok(())
    }
}

impl TestDb {
    /// A new empty database with every migration applied.
    pub async fn new() -> Result<Self, DbError> {
        Self::on_server(&admin_url()).await
    }

    /// The same on the server at `server_url` (for tests that run their own cluster).
    pub async fn on_server(server_url: &str) -> Result<Self, DbError> {
        let admin_url = with_dbname(server_url, "postgres")?;
        if admin_url == with_dbname(&self::admin_url(), "postgres")? {
            if let Some(name) = spares::take(&admin_url).await {
                return Self::named(admin_url, name);
            }
        }
        Self::copied(admin_url).await
    }

    /// A copy of the template made now, for this test.
    async fn copied(admin_url: String) -> Result<Self, DbError> {
        let name = format!("perpetuo_test_{}", uuid::Uuid::now_v7().simple());
        copy_template(&admin_url, &name).await?;
        Self::named(admin_url, name)
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
        let b = TestDb::copied(with_dbname(&admin, "postgres").unwrap())
            .await
            .unwrap();
        assert_eq!(schema(&b).await, (vec![], 0), "a copy of its own");
        assert_eq!(schema(&a).await.1, 1);
        // Copies made ahead are copies of their own too, each taken once.
        let (c, d) = (TestDb::new().await.unwrap(), TestDb::new().await.unwrap());
        assert_ne!(c.name, d.name);
        assert_eq!(schema(&c).await, (vec![], 0));
        assert_eq!(schema(&d).await, (vec![], 0));
    }

    /// The copies a process made ahead and never used are dropped by the next process to
    /// copy ahead, once the process is gone (its session's lock released), never before.
    #[tokio::test]
    async fn unused_copies_of_an_ended_process_are_dropped_by_the_next() {
        let admin = with_dbname(&admin_url(), "postgres").unwrap();
        let owner = uuid::Uuid::now_v7().simple().to_string();
        let name = format!("perpetuo_spare_{owner}_0");
        admin_exec(&admin, &format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let exists = |name: String| {
            let admin = admin.clone();
            async move {
                let (client, _task) = admin_connect(&admin).await.unwrap();
                let n: i64 = client
                    .query_one(
                        "SELECT count(*) FROM pg_database WHERE datname = $1",
                        &[&name],
                    )
                    .await
                    .unwrap()
                    .get(0);
                n == 1
            }
        };
        // The owner alive: its session holds the lock.
        let (owner_session, owner_task) = admin_connect(&admin).await.unwrap();
        owner_session
            .execute(
                "SELECT pg_advisory_lock(hashtextextended($1, 0))",
                &[&spares::lock_key(&owner)],
            )
            .await
            .unwrap();
        let (sweeper, _task) = admin_connect(&admin).await.unwrap();
        spares::sweep(&sweeper, &admin).await.unwrap();
        assert!(exists(name.clone()).await, "a live owner's copy stays");
        drop(owner_session);
        let _ = owner_task.await;
        eventually("the owner's session ends", Duration::from_secs(10), || {
            let (sweeper, admin, name) = (&sweeper, &admin, name.clone());
            let exists = &exists;
            async move {
                spares::sweep(sweeper, admin).await.unwrap();
                !exists(name).await
            }
        })
        .await;
    }

    #[tokio::test]
    #[should_panic(expected = "not within 50ms: never")]
    async fn eventually_fails_naming_what_never_came() {
        eventually("never", Duration::from_millis(50), || async { false }).await;
    }
}
