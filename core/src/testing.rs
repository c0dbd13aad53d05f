//! Test support: `TestDb` creates a fresh, migrated database per test and drops it after.
//! The server comes from `TEST_DATABASE_URL`, else `DATABASE_URL`, else the local default.

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
