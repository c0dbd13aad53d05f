//! `DB_STATEMENT_TIMEOUT_MS`: serving queries stuck in the database are cancelled there and
//! answered 503; the purge of deleted workspaces runs under its own, longer deadline.

use std::time::Duration;

use perpetuo_core::db::{self, StatementTimeout};
use perpetuo_core::testing::{eventually, TestDb};
use reqwest::StatusCode;

use crate::helpers::TestApp;

/// The server's connections carry `DB_STATEMENT_TIMEOUT_MS`: a listing stuck behind a lock
/// is cancelled by PostgreSQL and answered 503 `unavailable`, instead of waiting for as
/// long as the lock is held.
#[tokio::test]
async fn a_query_past_the_statement_timeout_is_answered_503() {
    let app = TestApp::spawn_configured(|c| {
        c.db_statement_timeout = StatementTimeout::from_millis(200);
    })
    .await;
    let acc = app.signup("slow-logs@example.com").await;
    // The test's own connection has no statement timeout; it holds the lock until the
    // answer has come (or the bound below has passed).
    let mut locker = app.client().await;
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE request_logs IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let answer = app
        .http
        .get(format!("{}/workspaces/{}/logs", app.base, acc.workspace))
        .bearer_auth(&acc.token)
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await;
    tx.rollback().await.unwrap();
    let answer = answer.expect("answered while the lock was held");
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    // The same connections answer once the lock is gone.
    let (status, _) = app
        .get(&format!("/workspaces/{}/logs", acc.workspace), &acc.token)
        .await;
    assert_eq!(status, StatusCode::OK);
}

/// The purge of deleted workspaces is not held to the pool's statement timeout: a step
/// that waits (here for a lock) past it still finishes.
#[tokio::test]
async fn the_purge_outlives_the_pool_statement_timeout() {
    let test_db = TestDb::new().await.unwrap();
    let pool = db::pool_with(
        &test_db.url,
        db::PoolSettings {
            max_size: 1,
            statement_timeout: StatementTimeout::from_millis(200),
            driver: None,
        },
    )
    .unwrap();
    // The pool's one connection, which the purge will use.
    let purger: i32 = pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let mut locker = test_db.pool.get().await.unwrap();
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE deleted_workspaces IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let purge = tokio::spawn(async move { perpetuo_admin::teams::purge_once(&pool, 0).await });
    let watcher = test_db.pool.get().await.unwrap();
    eventually(
        "the purge waits for the lock longer than the pool's statement timeout",
        Duration::from_secs(20),
        || async {
            assert!(
                !purge.is_finished(),
                "the purge ended while the lock was held"
            );
            watcher
                .query_one(
                    "SELECT count(*) = 1 FROM pg_stat_activity WHERE pid = $1
                     AND wait_event_type = 'Lock'
                     AND clock_timestamp() - query_start > interval '1 second'",
                    &[&purger],
                )
                .await
                .unwrap()
                .get::<_, bool>(0)
        },
    )
    .await;
    tx.rollback().await.unwrap();
    purge.await.unwrap().expect("the purge finishes");
}
