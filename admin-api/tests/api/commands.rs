//! The operator commands of the real `perpetuo-admin` binary (`create-user`,
//! `rotate-master-key`, `check-config`) against a test database, and a server whose
//! signup is closed.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use perpetuo_core::crypto::{KeyBinding, MasterKey, SealError, AAD_BOUND, AAD_ENTRY_ID};
use perpetuo_core::db;
use perpetuo_core::provider::ProviderKind;
use perpetuo_core::testing::TestDb;
use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{error_code, TestApp, JWT_SECRET};

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs the binary with exactly `env` (no inherited variables, and a working directory
/// without a `.env`), feeding `stdin`.
async fn admin(env: Vec<(&'static str, String)>, args: &[&str], stdin: &str) -> Run {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let stdin = stdin.to_string();
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_perpetuo-admin"))
            .args(&args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env)
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

fn env_for(db: &TestDb, master_b64: &str) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", db.url.clone()),
        ("JWT_SECRET", JWT_SECRET.to_string()),
        ("PERPETUO_MASTER_KEY", master_b64.to_string()),
    ]
}

fn key_pair() -> (String, MasterKey) {
    let b64 = MasterKey::generate_base64();
    let key = MasterKey::from_base64(&b64).unwrap();
    (b64, key)
}

/// The value of `name=` on a line of `out`.
fn printed(out: &str, name: &str) -> Uuid {
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name}= in {out}"));
    Uuid::parse_str(line.trim()).unwrap()
}

#[tokio::test]
async fn create_user_makes_an_account_that_logs_in_while_signup_is_closed() {
    let app = TestApp::spawn_configured(|c| c.auth.signup_enabled = false).await;
    let (b64, _) = key_pair();
    let env = env_for(&app.db, &b64);
    let password = "correct horse battery";

    let run = admin(
        env.clone(),
        &[
            "create-user",
            "--email",
            "Root@Example.com",
            "--password-stdin",
        ],
        &format!("{password}\n"),
    )
    .await;
    assert!(run.ok, "{}", run.all());
    assert!(!run.all().contains(password), "{}", run.all());
    let user_id = printed(&run.stdout, "user_id");
    let workspace_id = printed(&run.stdout, "workspace_id");

    // Public signup is closed, and says so with its own code.
    let (status, body) = app
        .raw(
            Method::POST,
            "/auth/signup",
            None,
            Some(json!({"email": "other@example.com", "password": "correct horse"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(error_code(&body), "signup_disabled");
    let (_, meta) = app.raw(Method::GET, "/meta", None, None).await;
    assert_eq!(meta["signup_enabled"], false);

    // The account logs in with the password read from stdin (without its newline) and
    // owns the workspace signup would have made.
    let (status, login) = app
        .raw(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({"email": "root@example.com", "password": password})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{login}");
    assert_eq!(login["user"]["id"], user_id.to_string());
    let token = login["token"].as_str().unwrap();
    let (_, me) = app.get("/auth/me", token).await;
    assert_eq!(
        me["workspaces"],
        json!([{
            "id": workspace_id.to_string(), "name": "Default", "role": "owner",
            "created_at": me["workspaces"][0]["created_at"],
            "updated_at": me["workspaces"][0]["updated_at"],
        }])
    );

    // A taken email, a weak password, a bad email or no --password-stdin: an error,
    // a non-zero exit, and no second account.
    let cases: [(&[&str], &str, &str); 4] = [
        (
            &[
                "create-user",
                "--email",
                "root@example.com",
                "--password-stdin",
            ],
            "another good password\n",
            "already exists",
        ),
        (
            &[
                "create-user",
                "--email",
                "new@example.com",
                "--password-stdin",
            ],
            "short\n",
            "at least 8 characters",
        ),
        (
            &["create-user", "--email", "not-an-email", "--password-stdin"],
            "a fine password\n",
            "email",
        ),
        (
            &["create-user", "--email", "new@example.com"],
            "a fine password\n",
            "--password-stdin",
        ),
    ];
    for (args, stdin, says) in cases {
        let run = admin(env.clone(), args, stdin).await;
        assert!(!run.ok, "{args:?} succeeded: {}", run.all());
        assert!(run.stderr.contains(says), "{args:?}: {}", run.all());
        assert!(!run.all().contains(stdin.trim()), "{}", run.all());
    }
    let client = app.client().await;
    let users: i64 = client
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(users, 1);
}

#[tokio::test]
async fn signup_is_open_by_default_and_meta_says_so() {
    let app = TestApp::spawn().await;
    let (_, meta) = app.raw(Method::GET, "/meta", None, None).await;
    assert_eq!(meta["signup_enabled"], true);
    app.signup("open@example.com").await;
}

/// A workspace owned by a fresh user, made directly in the database.
async fn workspace(db: &TestDb, email: &str) -> Uuid {
    let mut client = db.pool.get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let user = db::users::insert(
        &tx,
        &perpetuo_core::email::Email::parse(email).unwrap(),
        "x",
    )
    .await
    .unwrap();
    let ws = db::workspaces::create(&tx, "w", user.id).await.unwrap();
    tx.commit().await.unwrap();
    ws.id
}

/// An entry whose key `sk-<name>` is sealed under `key` with associated-data format `aad`.
async fn entry(db: &TestDb, key: &MasterKey, ws: Uuid, name: &str, aad: i16) -> Uuid {
    let id = db::providers::new_id();
    let base_url = Some(format!("https://{name}.example/v1"));
    let binding = KeyBinding {
        entry_id: id,
        workspace_id: ws,
        kind: ProviderKind::OpenaiCompatible,
        base_url: base_url.as_deref(),
    };
    let sealed = key.seal_as(&format!("sk-{name}"), &binding, aad).unwrap();
    let row = db::providers::NewProvider {
        id,
        workspace_id: ws,
        kind: ProviderKind::OpenaiCompatible,
        name: name.into(),
        base_url,
        priority: 1,
        weight: 1,
        enabled: true,
        models: vec![],
        model_map: BTreeMap::new(),
        quota_rpm: None,
        quota_tpm: None,
    };
    let client = db.pool.get().await.unwrap();
    db::providers::insert(&client, &row).await.unwrap();
    let key = db::entry_keys::NewEntryKey {
        id: db::entry_keys::new_id(),
        label: "default".into(),
        weight: 1,
        enabled: true,
        sealed,
        key_last4: "xxxx".into(),
    };
    db::entry_keys::insert(&client, ws, id, &key).await.unwrap();
    id
}

/// Adds key `sk-<entry name>-<label>`, sealed under `key`, to the pool of `entry`.
async fn pool_key(db: &TestDb, key: &MasterKey, ws: Uuid, entry: Uuid, label: &str) -> Uuid {
    let client = db.pool.get().await.unwrap();
    let row = db::providers::get(&client, ws, entry)
        .await
        .unwrap()
        .unwrap();
    let sealed = key
        .seal(&format!("sk-{}-{label}", row.name), &row.binding())
        .unwrap();
    let new = db::entry_keys::NewEntryKey {
        id: db::entry_keys::new_id(),
        label: label.into(),
        weight: 1,
        enabled: true,
        sealed,
        key_last4: "xxxx".into(),
    };
    db::entry_keys::insert(&client, ws, entry, &new)
        .await
        .unwrap()
        .id
}

/// Every pool key's sealed columns with its entry's id, by key id.
async fn sealed_rows(db: &TestDb) -> Vec<(Uuid, Vec<u8>, Vec<u8>, i16)> {
    let client = db.pool.get().await.unwrap();
    client
        .query(
            "SELECT entry_id, sealed_key, key_nonce, aad_version FROM provider_entry_keys
             ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

/// Each pool key as `key` opens it (by its entry's name, then its label), or the error.
async fn opened(db: &TestDb, key: &MasterKey) -> Vec<(String, Result<String, SealError>)> {
    let client = db.pool.get().await.unwrap();
    db::entry_keys::all(&client)
        .await
        .unwrap()
        .into_iter()
        .map(|b| {
            let got = key
                .open(&b.key.sealed, &b.binding())
                .map(|k| k.expose().clone());
            let name = match b.key.label.as_str() {
                "default" => b.entry_name.clone(),
                label => format!("{}/{label}", b.entry_name),
            };
            (name, got)
        })
        .collect()
}

#[tokio::test]
async fn rotate_master_key_reseals_every_key_under_the_new_key_once() {
    let db = TestDb::new().await.unwrap();
    let (old_b64, old) = key_pair();
    let (new_b64, new) = key_pair();
    let ws = workspace(&db, "rotate@example.com").await;
    let a = entry(&db, &old, ws, "a", AAD_BOUND).await;
    entry(&db, &old, ws, "b", AAD_BOUND).await;
    entry(&db, &old, ws, "legacy", AAD_ENTRY_ID).await;
    let already = entry(&db, &new, ws, "fresh", AAD_BOUND).await;
    // A pool of several keys: each is re-sealed.
    pool_key(&db, &old, ws, a, "spare").await;
    let before = sealed_rows(&db).await;

    // Without the previous key there is nothing to rotate from: refused, nothing changes.
    let run = admin(env_for(&db, &new_b64), &["rotate-master-key"], "").await;
    assert!(!run.ok, "{}", run.all());
    assert!(
        run.stderr.contains("PERPETUO_MASTER_KEY_PREVIOUS"),
        "{}",
        run.all()
    );
    assert_eq!(sealed_rows(&db).await, before);

    let mut env = env_for(&db, &new_b64);
    env.push(("PERPETUO_MASTER_KEY_PREVIOUS", old_b64.clone()));
    let run = admin(env.clone(), &["rotate-master-key"], "").await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stdout.contains(": 4 (already under it: 1)"),
        "{}",
        run.all()
    );
    for secret in [&old_b64, &new_b64, &"sk-a".to_string()] {
        assert!(!run.all().contains(secret.as_str()), "{}", run.all());
    }

    // Every key opens under the new key alone, in the current format; the old key opens
    // none; the entry already under the new key was not touched.
    let after = sealed_rows(&db).await;
    assert!(after.iter().all(|r| r.3 == AAD_BOUND), "{after:?}");
    assert_eq!(
        before.iter().find(|r| r.0 == already),
        after.iter().find(|r| r.0 == already)
    );
    let mut under_new: Vec<_> = opened(&db, &new)
        .await
        .into_iter()
        .map(|(name, got)| (name, got.unwrap()))
        .collect();
    under_new.sort();
    assert_eq!(
        under_new,
        [
            ("a", "sk-a"),
            ("a/spare", "sk-a-spare"),
            ("b", "sk-b"),
            ("fresh", "sk-fresh"),
            ("legacy", "sk-legacy")
        ]
        .map(|(n, k)| (n.to_string(), k.to_string()))
    );
    for (name, got) in opened(&db, &old).await {
        assert_eq!(
            got,
            Err(SealError::Open),
            "{name} still opens under the old key"
        );
    }

    // Running it again re-seals nothing.
    let run = admin(env, &["rotate-master-key"], "").await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stdout.contains(": 0 (already under it: 5)"),
        "{}",
        run.all()
    );
    assert_eq!(sealed_rows(&db).await, after);
}

#[tokio::test]
async fn a_rotation_that_fails_midway_changes_nothing() {
    let db = TestDb::new().await.unwrap();
    let (old_b64, old) = key_pair();
    let (new_b64, new) = key_pair();
    let (_, stranger) = key_pair();
    let ws = workspace(&db, "atomic-rotate@example.com").await;
    entry(&db, &old, ws, "a", AAD_BOUND).await;
    entry(&db, &old, ws, "b", AAD_BOUND).await;
    // Ids are time-ordered: this row comes last, after the others were re-sealed in the
    // transaction.
    let lost = entry(&db, &stranger, ws, "lost", AAD_BOUND).await;
    let before = sealed_rows(&db).await;
    assert_eq!(before.last().unwrap().0, lost);

    let mut env = env_for(&db, &new_b64);
    env.push(("PERPETUO_MASTER_KEY_PREVIOUS", old_b64));
    let run = admin(env, &["rotate-master-key"], "").await;
    assert!(!run.ok, "{}", run.all());
    assert!(run.stderr.contains(&lost.to_string()), "{}", run.all());
    assert!(run.stderr.contains("nothing changed"), "{}", run.all());

    assert_eq!(sealed_rows(&db).await, before);
    for (name, got) in opened(&db, &old).await {
        if name != "lost" {
            assert_eq!(got.unwrap(), format!("sk-{name}"));
        }
    }
    for (name, got) in opened(&db, &new).await {
        assert_eq!(got, Err(SealError::Open), "{name} opens under the new key");
    }
}

#[tokio::test]
async fn check_config_lists_every_problem_and_no_value() {
    let env = vec![
        (
            "DATABASE_URL",
            "postgres://u:hunter2@127.0.0.1:1/x".to_string(),
        ),
        ("JWT_SECRET", "short-secret-value".to_string()),
        ("PERPETUO_MASTER_KEY", "not-base64-master!".to_string()),
        ("ADMIN_DB_POOL_SIZE", "many".to_string()),
        ("SIGNUP_ENABLED", "perhaps".to_string()),
        ("ADMIN_ADDR", "localhost".to_string()),
        (
            "CORS_ALLOWED_ORIGINS",
            "https://ok.example,bad\u{1}origin".to_string(),
        ),
        ("TRUSTED_PROXIES", "10.0.0.0/8, lb.internal".to_string()),
        // Tracing's headers carry a credential: a malformed pair is named by position.
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "authorization=Bearer otel-secret-7c1d,otel-secret-pair-9f2a".to_string(),
        ),
        ("OTEL_TRACES_SAMPLER", "sometimes".to_string()),
    ];
    let run = admin(env, &["check-config"], "").await;
    assert!(!run.ok, "{}", run.all());
    for named in [
        "JWT_SECRET: must be at least 32 characters",
        "PERPETUO_MASTER_KEY: must be base64",
        "ADMIN_DB_POOL_SIZE:",
        "SIGNUP_ENABLED:",
        "ADMIN_ADDR:",
        "CORS_ALLOWED_ORIGINS:",
        "TRUSTED_PROXIES: `lb.internal` is not a CIDR",
        "OTEL_EXPORTER_OTLP_HEADERS: pair 2 is not key=value",
        "OTEL_TRACES_SAMPLER:",
        "database: not reachable",
    ] {
        assert!(run.stderr.contains(named), "{named} missing: {}", run.all());
    }
    assert!(
        run.stderr.contains("configuration has 10 problems"),
        "{}",
        run.all()
    );
    for value in [
        "hunter2",
        "short-secret-value",
        "not-base64-master",
        "many",
        "perhaps",
        "otel-secret",
        "sometimes",
    ] {
        assert!(!run.all().contains(value), "{value} printed: {}", run.all());
    }

    // Nothing set at all: each required variable is named.
    let run = admin(vec![], &["check-config"], "").await;
    assert!(!run.ok);
    for var in ["DATABASE_URL", "JWT_SECRET", "PERPETUO_MASTER_KEY"] {
        assert!(
            run.stderr.contains(&format!("{var}: is not set")),
            "{}",
            run.all()
        );
    }
}

#[tokio::test]
async fn check_config_checks_migrations_and_that_provider_keys_open() {
    let db = TestDb::new().await.unwrap();
    let (b64, key) = key_pair();
    let ws = workspace(&db, "check@example.com").await;
    let good = entry(&db, &key, ws, "good", AAD_BOUND).await;
    pool_key(&db, &key, ws, good, "second").await;

    let run = admin(env_for(&db, &b64), &["check-config"], "").await;
    assert!(run.ok, "{}", run.all());
    assert!(run.stdout.contains("configuration OK"), "{}", run.all());
    assert!(run.stdout.contains("2 provider keys open"), "{}", run.all());
    assert!(!run.all().contains(&b64), "{}", run.all());

    // A key sealed under another master key is named by its entry and label, in a pool
    // whose other keys open.
    let (_, other) = key_pair();
    pool_key(&db, &other, ws, good, "stray").await;
    let run = admin(env_for(&db, &b64), &["check-config"], "").await;
    assert!(!run.ok, "{}", run.all());
    assert!(
        run.stderr
            .contains("PERPETUO_MASTER_KEY: 1 of 3 provider keys do not open"),
        "{}",
        run.all()
    );
    assert!(
        run.stderr.contains(&format!("`stray` of entry {good}")),
        "{}",
        run.all()
    );
    assert!(!run.all().contains("sk-good"), "{}", run.all());
    let lost = entry(&db, &other, ws, "lost", AAD_BOUND).await;
    let run = admin(env_for(&db, &b64), &["check-config"], "").await;
    assert!(
        run.stderr
            .contains("PERPETUO_MASTER_KEY: 2 of 4 provider keys do not open"),
        "{}",
        run.all()
    );
    assert!(run.stderr.contains(&lost.to_string()), "{}", run.all());
    let client = db.pool.get().await.unwrap();
    client
        .execute("DELETE FROM provider_entry_keys WHERE label = 'stray'", &[])
        .await
        .unwrap();
    client
        .execute("DELETE FROM provider_keys WHERE id = $1", &[&lost])
        .await
        .unwrap();

    // A database behind this build's migrations.
    let last: String = client
        .query_one(
            "DELETE FROM refinery_schema_history
             WHERE version = (SELECT max(version) FROM refinery_schema_history)
             RETURNING 'V' || version || '__' || name",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let run = admin(env_for(&db, &b64), &["check-config"], "").await;
    assert!(!run.ok, "{}", run.all());
    assert!(
        run.stderr
            .contains(&format!("1 migration not applied ({last})")),
        "{}",
        run.all()
    );
    assert!(
        run.stderr.contains("perpetuo-admin migrate"),
        "{}",
        run.all()
    );
}

#[tokio::test]
async fn help_lists_the_operator_commands() {
    let run = admin(vec![], &["--help"], "").await;
    assert!(run.ok, "{}", run.all());
    for command in [
        "serve",
        "migrate",
        "create-user",
        "rotate-master-key",
        "check-config",
    ] {
        assert!(
            run.stdout.contains(&format!("\n  {command} ")),
            "{command}: {}",
            run.stdout
        );
    }
}

/// A log that is not a terminal (a pipe here; a file under `scripts/dev`) holds no colour
/// codes.
#[tokio::test]
async fn a_log_that_is_not_a_terminal_holds_no_colour_codes() {
    let db = TestDb::new().await.unwrap();
    let (b64, _) = key_pair();
    let run = admin(env_for(&db, &b64), &["migrate"], "").await;
    assert!(run.ok, "{}", run.all());
    assert!(run.stdout.contains("migrations applied"), "{}", run.all());
    assert!(!run.all().contains('\u{1b}'), "{:?}", run.all());
}
