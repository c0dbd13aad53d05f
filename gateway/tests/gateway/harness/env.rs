//! The test's world in the database: a fresh database seeded with a workspace, its key and
//! provider entries (through core, as the admin API would write them), the log rows the
//! gateway writes back, and the clock the gateway's limits read.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use perpetuo_core::apikey;
use perpetuo_core::crypto::{self, MasterKey};
use perpetuo_core::db::entry_keys::{self, NewEntryKey};
use perpetuo_core::db::{self, logs::LogRecord, providers::NewProvider};
use perpetuo_core::email::Email;
use perpetuo_core::provider::ProviderKind;
use perpetuo_core::testing::TestDb;
use uuid::Uuid;

use super::eventually;

pub struct Env {
    pub db: TestDb,
    /// The limits' clock of every gateway this environment starts.
    pub clock: Arc<TestClock>,
    pub master_b64: String,
    pub master: MasterKey,
    pub workspace: Uuid,
    pub key: String,
    pub key_id: Uuid,
}

impl Env {
    pub async fn new() -> Self {
        Self::seeded(TestDb::new().await.expect("test database")).await
    }

    /// An environment in a database of its own on the server at `server_url` (a private
    /// cluster of the fault kit).
    pub async fn on_server(server_url: &str) -> Self {
        Self::seeded(TestDb::on_server(server_url).await.expect("test database")).await
    }

    /// An environment seeded in `db` (a database made by the test, migrated to today's
    /// schema): a user, a workspace and a key of it.
    pub async fn seeded(db: TestDb) -> Self {
        let mut client = db.pool.get().await.unwrap();
        let tx = client.transaction().await.unwrap();
        let user = db::users::insert(&tx, &Email::parse("gw@example.com").unwrap(), "x")
            .await
            .unwrap();
        let ws = db::workspaces::create(&tx, "gw", user.id).await.unwrap();
        tx.commit().await.unwrap();
        drop(client);
        Self::of_workspace(db, ws.id).await
    }

    /// An environment for `workspace` of `db`, with a new key of it (the database must
    /// be migrated to today's schema).
    pub async fn of_workspace(db: TestDb, workspace: Uuid) -> Self {
        let master_b64 = MasterKey::generate_base64();
        let master = MasterKey::from_base64(&master_b64).unwrap();
        let mut env = Self {
            db,
            clock: Arc::new(TestClock::new()),
            master_b64,
            master,
            workspace,
            key: String::new(),
            key_id: Uuid::nil(),
        };
        let (key, id) = env.new_key().await;
        env.key = key;
        env.key_id = id;
        env
    }

    pub async fn new_key(&self) -> (String, Uuid) {
        self.new_key_in(self.workspace).await
    }

    /// A new key of `workspace`.
    pub async fn new_key_in(&self, workspace: Uuid) -> (String, Uuid) {
        let k = apikey::generate();
        let client = self.db.pool.get().await.unwrap();
        let row = db::api_keys::insert(&client, workspace, "test", &k, None, None)
            .await
            .unwrap();
        (k.plaintext.expose().clone(), row.id)
    }

    /// Another workspace in the same database, with an owner of its own.
    pub async fn new_workspace(&self, name: &str) -> Uuid {
        let mut client = self.db.pool.get().await.unwrap();
        let tx = client.transaction().await.unwrap();
        let email = Email::parse(&format!("{name}@example.com")).unwrap();
        let user = db::users::insert(&tx, &email, "x").await.unwrap();
        let ws = db::workspaces::create(&tx, name, user.id).await.unwrap();
        tx.commit().await.unwrap();
        ws.id
    }

    pub async fn add_provider(&self, name: &str, base_url: &str, priority: i32) -> Uuid {
        self.add_provider_with(
            name,
            ProviderKind::OpenaiCompatible,
            base_url,
            priority,
            &[],
            &[],
        )
        .await
    }

    pub async fn add_provider_with(
        &self,
        name: &str,
        kind: ProviderKind,
        base_url: &str,
        priority: i32,
        models: &[&str],
        map: &[(&str, &str)],
    ) -> Uuid {
        self.add_provider_in(self.workspace, name, kind, base_url, priority, models, map)
            .await
    }

    /// A provider entry of another workspace of this database.
    #[allow(clippy::too_many_arguments)]
    pub async fn add_provider_in(
        &self,
        workspace: Uuid,
        name: &str,
        kind: ProviderKind,
        base_url: &str,
        priority: i32,
        models: &[&str],
        map: &[(&str, &str)],
    ) -> Uuid {
        let id = db::providers::new_id();
        let row = NewProvider {
            id,
            workspace_id: workspace,
            kind,
            name: name.into(),
            base_url: Some(base_url.into()),
            priority,
            weight: 1,
            enabled: true,
            models: models.iter().map(|m| m.to_string()).collect(),
            model_map: map
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<BTreeMap<_, _>>(),
            quota_rpm: None,
            quota_tpm: None,
        };
        let client = self.db.pool.get().await.unwrap();
        db::providers::insert(&client, &row).await.unwrap();
        drop(client);
        self.add_key(id, "default", &format!("sk-upstream-{name}"))
            .await;
        id
    }

    /// Adds `key`, labelled `label`, to the pool of `entry` (of any workspace of this
    /// database), sealed as the admin API seals it; returns the key's id.
    pub async fn add_key(&self, entry: Uuid, label: &str, key: &str) -> Uuid {
        let client = self.db.pool.get().await.unwrap();
        let workspace: Uuid = client
            .query_one(
                "SELECT workspace_id FROM provider_keys WHERE id = $1",
                &[&entry],
            )
            .await
            .unwrap()
            .get(0);
        let row = db::providers::get(&client, workspace, entry)
            .await
            .unwrap()
            .unwrap();
        let new = NewEntryKey {
            id: entry_keys::new_id(),
            label: label.into(),
            weight: 1,
            enabled: true,
            sealed: self.master.seal(key, &row.binding()).unwrap(),
            key_last4: crypto::last4(key),
        };
        entry_keys::insert(&client, workspace, entry, &new)
            .await
            .unwrap()
            .id
    }

    pub async fn client(&self) -> deadpool_postgres::Client {
        self.db.pool.get().await.unwrap()
    }

    /// Waits for the log row of a request id.
    pub async fn log_row(&self, request_id: &str) -> LogRecord {
        let id = Uuid::parse_str(request_id).unwrap();
        eventually(
            &format!("the log row of {request_id}"),
            Duration::from_secs(10),
            || async {
                let client = self.client().await;
                db::logs::find_by_id(&client, id)
                    .await
                    .unwrap()
                    .into_iter()
                    .next()
            },
        )
        .await
    }

    /// Every log row of the workspace, once `n` are there.
    pub async fn log_rows(&self, n: usize) -> Vec<LogRecord> {
        eventually(
            &format!("{n} log rows"),
            Duration::from_secs(10),
            || async {
                let client = self.client().await;
                let rows = db::logs::all_for_workspace(&client, self.workspace)
                    .await
                    .unwrap();
                (rows.len() >= n).then_some(rows)
            },
        )
        .await
    }
}

/// The clock a test build of the gateway reads for limit windows and budget periods: the
/// real clock plus an offset kept in a file (`PERPETUO_TEST_CLOCK_FILE`), which a test moves
/// instead of waiting for a calendar minute.
pub struct TestClock {
    dir: tempfile::TempDir,
}

impl TestClock {
    pub(super) fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("clock directory"),
        }
    }

    pub(super) fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("offset-ms")
    }

    fn offset_ms(&self) -> i128 {
        std::fs::read_to_string(self.path())
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Moves the clock to the start of the next calendar minute: a count begun now has the
    /// whole minute before its window resets.
    pub fn fresh_minute(&self) {
        let offset = self.offset_ms();
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000 + offset;
        let to_next = 60_000 - now.rem_euclid(60_000);
        std::fs::write(self.path(), (offset + to_next).to_string()).expect("clock file");
    }

    /// Moves the clock into the next calendar minute: every minute window resets.
    pub fn next_minute(&self) {
        self.fresh_minute();
    }
}
