//! Log partitions kept months ahead by the gateway, rows stranded in the default partition
//! moved when their month is created, and retention by whole partitions.

use std::time::Duration;

use perpetuo_core::db;
use perpetuo_gateway::partitions::{PartitionMaintainer, MONTHS_AHEAD};
use time::{Date, Month, OffsetDateTime, Time};
use uuid::Uuid;

use crate::fault_kit::{reconcile_since, steady_load};
use crate::harness::{eventually, mock, Env, Gateway};

fn month_start(year: i32, month: i32) -> OffsetDateTime {
    let months = year * 12 + month - 1;
    let month = Month::try_from((months.rem_euclid(12) + 1) as u8).unwrap();
    Date::from_calendar_date(months.div_euclid(12), month, 1)
        .unwrap()
        .with_time(Time::MIDNIGHT)
        .assume_utc()
}

fn partition_name(t: OffsetDateTime) -> String {
    format!("request_logs_y{:04}m{:02}", t.year(), u8::from(t.month()))
}

async fn exists(client: &deadpool_postgres::Client, name: &str) -> bool {
    client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn the_gateway_keeps_partitions_ahead_moves_stranded_rows_and_drops_old_months() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("main", &m.base_url(), 1).await;
    let client = env.client().await;
    let now = OffsetDateTime::now_utc();
    let (y, mo) = (now.year(), i32::from(u8::from(now.month())));
    let ahead: Vec<String> = (0..=MONTHS_AHEAD)
        .map(|i| partition_name(month_start(y, mo + i)))
        .collect();

    // Take away every future partition (empty in a fresh database), and strand a row of
    // month +2 in the default partition.
    for name in &ahead[1..] {
        client
            .batch_execute(&format!("DROP TABLE {name}"))
            .await
            .unwrap();
    }
    let mut stranded = db_record(
        env.workspace,
        month_start(y, mo + 2) + time::Duration::days(3),
    );
    stranded.model_requested = Some("stranded".into());
    // An old month with one row, past a 90-day retention.
    let old_at = month_start(y, mo - 6) + time::Duration::days(1);
    db::logs::ensure_partitions(&client, old_at, 0)
        .await
        .unwrap();
    let old = db_record(env.workspace, old_at);
    {
        let mut c = env.client().await;
        db::logs::insert_batch(&mut c, &[stranded.clone(), old.clone()])
            .await
            .unwrap();
    }
    let place = "SELECT tableoid::regclass::text FROM request_logs WHERE id = $1";
    let where_stranded: String = client
        .query_one(place, &[&stranded.id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(where_stranded, "request_logs_default");

    let gw = Gateway::start_with(&env, &env.db.url, &[("LOG_RETENTION_DAYS", "90")]).await;
    eventually(
        "partitions ahead were not created",
        Duration::from_secs(10),
        || async {
            for name in &ahead {
                if !exists(&client, name).await {
                    return false;
                }
            }
            true
        },
    )
    .await;
    let where_stranded: String = client
        .query_one(place, &[&stranded.id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        where_stranded, ahead[2],
        "the stranded row moved to its month"
    );
    eventually(
        "the old partition was not dropped",
        Duration::from_secs(10),
        || async { !exists(&client, &partition_name(month_start(y, mo - 6))).await },
    )
    .await;
    // Its counters stay.
    let kept: i64 = client
        .query_one(
            "SELECT coalesce(sum(requests), 0)::int8 FROM usage_counters WHERE bucket < $1",
            &[&month_start(y, mo - 5)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 1, "usage counters outlive retention");

    // Requests still land, and the counters of what is kept equal its rows.
    let load = steady_load(&gw, &env.key, 3, Duration::ZERO).await;
    assert_eq!(load.statuses, [200, 200, 200]);
    reconcile_since(
        &env,
        &load.answered,
        Duration::from_secs(10),
        month_start(y, mo - 5),
    )
    .await;
}

fn db_record(workspace: Uuid, at: OffsetDateTime) -> db::logs::LogRecord {
    db::logs::LogRecord {
        id: Uuid::now_v7(),
        created_at: at,
        workspace_id: Some(workspace),
        api_key_id: None,
        provider_id: None,
        provider_name: None,
        provider_kind: None,
        route: perpetuo_core::db::logs::Route::Chat,
        model_requested: Some("gpt-4o".into()),
        model_served: None,
        status: 200,
        error_kind: None,
        streamed: false,
        prompt_tokens: 1,
        completion_tokens: 1,
        total_tokens: 2,
        cost_nusd: None,
        usage_source: db::logs::UsageSource::None,
        latency_ms: 1,
        ttfb_ms: None,
        attempts: vec![],
        note: None,
        cache: None,
        cache_saved_nusd: None,
        provider_key_id: None,
        provider_key_label: None,
        skipped: Vec::new(),
        trace_id: None,
    }
}

/// Maintenance steps run under the run's own deadline, not the pool's statement timeout:
/// a step that waits (here for a lock) past the pool's limit still finishes.
#[tokio::test]
async fn maintenance_outlives_the_pool_statement_timeout() {
    let env = Env::new().await;
    let pool = db::pool_with(
        &env.db.url,
        db::PoolSettings {
            max_size: 1,
            statement_timeout: db::StatementTimeout::from_millis(200),
            driver: None,
        },
    )
    .unwrap();
    // The pool's one connection, which the maintenance run will use.
    let runner: i32 = pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let maintainer = PartitionMaintainer {
        pool,
        retention_days: 0,
    };
    let mut locker = env.client().await;
    let tx = locker.transaction().await.unwrap();
    // Every step queues on the partition functions' advisory lock, held here.
    tx.batch_execute("SELECT pg_advisory_xact_lock(7311001)")
        .await
        .unwrap();
    let run = tokio::spawn(async move { maintainer.run_once().await });
    let watcher = env.client().await;
    eventually(
        "no maintenance step waited for the lock longer than the pool's statement timeout",
        Duration::from_secs(20),
        || async {
            assert!(!run.is_finished(), "the run ended while the lock was held");
            watcher
                .query_one(
                    "SELECT count(*) = 1 FROM pg_stat_activity WHERE pid = $1
                     AND wait_event_type = 'Lock'
                     AND clock_timestamp() - query_start > interval '1 second'",
                    &[&runner],
                )
                .await
                .unwrap()
                .get::<_, bool>(0)
        },
    )
    .await;
    tx.rollback().await.unwrap();
    run.await.unwrap().expect("the maintenance run finishes");
}
