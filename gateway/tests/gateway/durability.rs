//! The log writer under bad rows, a slow database and `kill -9`: every test ends with the
//! reconciliation check (one row per answered request, counters equal the rows' sums).

use std::sync::Arc;
use std::time::{Duration, Instant};

use perpetuo_core::db::{self, logs::LogRecord, logs::UsageSource};
use perpetuo_core::email::Email;
use perpetuo_gateway::data_dir::LOCK_FILE;
use perpetuo_gateway::log_spool::{Spool, REJECT_FILE};
use perpetuo_gateway::{log_writer, metrics};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::fault_kit::{reconcile, spool_files, steady_load, Load};
use crate::harness::{
    behind_relay, eventually, metric_value, mock, BehindRelay, Env, Gateway, RelayMode,
};

fn record(workspace: Uuid, key: Option<Uuid>, model: &str) -> LogRecord {
    LogRecord {
        id: Uuid::now_v7(),
        created_at: OffsetDateTime::now_utc(),
        workspace_id: Some(workspace),
        api_key_id: key,
        provider_id: None,
        provider_name: Some("main".into()),
        provider_kind: Some(perpetuo_core::provider::ProviderKind::Openai),
        route: perpetuo_core::db::logs::Route::Chat,
        model_requested: Some(model.into()),
        model_served: Some(model.into()),
        status: 200,
        error_kind: None,
        streamed: false,
        prompt_tokens: 10,
        completion_tokens: 5,
        total_tokens: 15,
        cost_nusd: Some(1234),
        usage_source: UsageSource::Provider,
        latency_ms: 12,
        ttfb_ms: Some(3),
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

#[tokio::test]
async fn a_refused_row_is_set_aside_and_every_other_row_lands() {
    let env = Env::new().await;
    let other = {
        let mut client = env.client().await;
        let tx = client.transaction().await.unwrap();
        let user = db::users::insert(&tx, &Email::parse("two@example.com").unwrap(), "x")
            .await
            .unwrap();
        let ws = db::workspaces::create(&tx, "second", user.id)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        ws.id
    };
    let mut batch: Vec<LogRecord> = Vec::new();
    for i in 0..40 {
        let ws = if i % 2 == 0 { env.workspace } else { other };
        batch.push(record(ws, Some(env.key_id), "gpt-4o"));
    }
    // Stored after cleaning: a NUL in a model name, a 12 KB model name, negative numbers.
    batch.push(record(env.workspace, None, "gpt\u{0}4o"));
    batch.push(record(other, None, &"m".repeat(12_000)));
    let mut absurd = record(other, None, "gpt-4o");
    absurd.prompt_tokens = -7;
    absurd.cost_nusd = Some(-1);
    absurd.latency_ms = -1;
    batch.push(absurd);
    // Refused by PostgreSQL: a timestamp before its range (4713 BC).
    let mut refused = record(env.workspace, Some(env.key_id), "gpt-4o");
    refused.created_at = time::macros::datetime!(-9999-01-01 0:00 UTC);
    batch.insert(17, refused.clone());

    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
    let rejected_before = metrics::LOG_REJECTED.get();
    assert!(log_writer::write_batch(&env.db.pool, &mut spool, &batch).await);

    let good: Vec<Uuid> = batch
        .iter()
        .filter(|r| r.id != refused.id)
        .map(|r| r.id)
        .collect();
    let rows = reconcile(&env, &good, Duration::from_secs(5)).await;
    assert_eq!(rows, good.len(), "every good row, and only those");
    assert_eq!(metrics::LOG_REJECTED.get() - rejected_before, 1);
    let rejects = std::fs::read_to_string(spool.dir().join(REJECT_FILE)).unwrap();
    assert_eq!(rejects.lines().count(), 1, "{rejects}");
    assert!(rejects.contains(&refused.id.to_string()));
    assert!(rejects.contains("\"sqlstate\":\"22008\""), "{rejects}");
    assert!(spool_files(dir.path()).is_empty(), "nothing was spooled");

    // The cleaned rows: NUL replaced, the long name cut, negatives clamped to zero.
    let client = env.client().await;
    let stored = db::logs::all_for_workspace(&client, other).await.unwrap();
    assert!(stored
        .iter()
        .all(|r| r.model_requested.as_deref().is_some_and(|m| m.len() <= 256)));
    assert!(stored
        .iter()
        .all(|r| r.prompt_tokens >= 0 && r.latency_ms >= 0 && r.cost_nusd >= Some(0)));
}

/// Requests sent through a gateway whose database answers every packet 700 ms late:
/// writes pass `SUSPECT_AFTER`, so records are spooled meanwhile and replayed; nothing is
/// lost and nothing is counted twice.
#[tokio::test]
async fn a_slow_database_loses_and_doubles_nothing() {
    let BehindRelay {
        env,
        mock: _mock,
        relay,
        gw,
    } = behind_relay(&[]).await;
    let warm = steady_load(&gw, &env.key, 2, Duration::ZERO).await;
    relay.set_mode(RelayMode::Delay(Duration::from_millis(700)));
    let load = steady_load(&gw, &env.key, 20, Duration::from_millis(50)).await;
    assert!(
        load.statuses.iter().all(|s| *s == 200),
        "{:?}",
        load.statuses
    );
    eventually("nothing was spooled", Duration::from_secs(10), || async {
        metric_value(&gw.metrics_text().await, "perpetuo_log_rows_spooled_total") > 0.0
    })
    .await;
    relay.set_mode(RelayMode::Pass);
    let ids: Vec<Uuid> = warm
        .answered
        .iter()
        .chain(&load.answered)
        .copied()
        .collect();
    let rows = reconcile(&env, &ids, Duration::from_secs(30)).await;
    assert_eq!(rows, ids.len());
}

/// Sends `workers` × `n` requests while `kill` runs; returns what was answered and when
/// the kill was sent.
async fn load_while(
    gw: &Gateway,
    key: &str,
    workers: usize,
    n: usize,
    kill: impl std::future::Future<Output = Instant>,
) -> (Load, Instant) {
    let loads = futures::future::join_all(
        (0..workers).map(|_| steady_load(gw, key, n, Duration::from_millis(5))),
    );
    let (loads, killed_at) = tokio::join!(loads, kill);
    let mut all = Load::default();
    for l in loads {
        all.sent += l.sent;
        all.answered.extend(l.answered);
        all.statuses.extend(l.statuses);
        all.answered_at.extend(l.answered_at);
    }
    (all, killed_at)
}

/// After `kill -9` and a restart on the same `DATA_DIR`: no request has two rows, no row
/// lacks its answered request, counters equal the rows; returns the answered requests
/// without a row.
async fn after_restart(env: &Env, gw: &mut Gateway, load: &Load) -> Vec<Uuid> {
    gw.restart().await;
    eventually(
        "the spool was not replayed",
        Duration::from_secs(30),
        || async { spool_files(gw.data_dir()).is_empty() },
    )
    .await;
    // The restarted gateway writes within a tick; the rows of the killed one are final.
    let client = env.client().await;
    let rows: std::collections::HashSet<Uuid> = client
        .query("SELECT id FROM request_logs", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let (landed, lost): (Vec<Uuid>, Vec<Uuid>) =
        load.answered.iter().partition(|id| rows.contains(id));
    reconcile(env, &landed, Duration::from_secs(5)).await;
    lost
}

/// Requests per worker: more than fit before the kill, so the kill lands mid-run (those
/// after it fail at once on a refused connection).
const N: usize = 200;
/// How long the load runs before the kill: the point of the run the test kills at.
const KILL_AFTER: Duration = Duration::from_millis(800);

async fn kill_after(pid: u32) -> Instant {
    tokio::time::sleep(KILL_AFTER).await;
    let at = Instant::now();
    crate::harness::kill(pid, "KILL");
    at
}

/// The measured loss: as records, as milliseconds of traffic at the observed rate, and
/// how long before the kill the oldest lost answer was complete (how long a record sat
/// only in memory, at least).
fn report(database: &str, load: &Load, lost: &[Uuid], killed_at: Instant) {
    let rate = load.answered.len() as f64 / KILL_AFTER.as_secs_f64();
    let oldest = load
        .answered
        .iter()
        .zip(&load.answered_at)
        .filter(|(id, _)| lost.contains(id))
        .map(|(_, at)| killed_at.saturating_duration_since(*at))
        .max()
        .unwrap_or_default();
    eprintln!(
        "kill -9, database {database}: {} sent, {} answered, {} answered without a row (~{:.0} ms of traffic at {rate:.0} req/s; the oldest answered {} ms before the kill)",
        load.sent,
        load.answered.len(),
        lost.len(),
        lost.len() as f64 / rate * 1000.0,
        oldest.as_millis()
    );
}

/// What `kill -9` can lose is what the log writer holds only in memory: the queue and the
/// batch being inserted, until the insert lands or `SUSPECT_AFTER` passes and both go to
/// the spool. Run with `-- --nocapture` for the figures (README: Reliability and security).
#[tokio::test]
async fn kill_9_under_load_duplicates_nothing_and_loses_at_most_the_queue() {
    let BehindRelay {
        env,
        mock: _mock,
        relay,
        mut gw,
    } = behind_relay(&[]).await;
    let warm = steady_load(&gw, &env.key, 1, Duration::ZERO).await;
    assert_eq!(warm.statuses, [200]);

    // With the database up.
    let pid = gw.pid();
    let (load, killed_at) = load_while(&gw, &env.key, 4, N, kill_after(pid)).await;
    let lost = after_restart(&env, &mut gw, &load).await;
    report("up", &load, &lost, killed_at);

    // With the database slow (every packet 40 ms late each way): each insert stays in
    // flight for a few hundred milliseconds, under `SUSPECT_AFTER`.
    steady_load(&gw, &env.key, 1, Duration::ZERO).await;
    relay.set_mode(RelayMode::Delay(Duration::from_millis(40)));
    let pid = gw.pid();
    let (load, killed_at) = load_while(&gw, &env.key, 4, N, kill_after(pid)).await;
    relay.set_mode(RelayMode::Pass);
    let lost = after_restart(&env, &mut gw, &load).await;
    report("slow", &load, &lost, killed_at);

    // With the database gone: records go to the spool, which the next process replays.
    steady_load(&gw, &env.key, 1, Duration::ZERO).await;
    relay.set_mode(RelayMode::Reset);
    let pid = gw.pid();
    let (load, killed_at) = load_while(&gw, &env.key, 4, N, kill_after(pid)).await;
    let mut left = spool_files(gw.data_dir());
    left.sort();
    let newest = left.last().expect("the killed gateway left a spool");
    // A write cut short by the kill: half a frame header at the end of the newest file.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(newest)
        .unwrap();
    std::io::Write::write_all(&mut f, &[0x40, 0x00]).unwrap();
    drop(f);
    relay.set_mode(RelayMode::Pass);
    let lost = after_restart(&env, &mut gw, &load).await;
    report("down", &load, &lost, killed_at);
    let metrics = gw.metrics_text().await;
    assert_eq!(
        metric_value(&metrics, "perpetuo_log_spool_torn_records_total"),
        1.0,
        "the torn tail is skipped and counted"
    );
}

/// Values a client controls that PostgreSQL would refuse or could not index (a NUL, a
/// 12 KB model name) arrive through the gateway among ordinary requests: every request
/// still gets its row.
#[tokio::test]
async fn odd_values_from_clients_still_get_their_rows() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("main", &m.base_url(), 1).await;
    let gw = Gateway::start(&env).await;
    let long = "m".repeat(12_000);
    let mut ids = Vec::new();
    for model in ["gpt-4o", "gpt\u{0}4o", long.as_str(), "gpt-4o"] {
        let r = gw
            .chat(&env.key, crate::harness::chat_body(model))
            .send()
            .await
            .unwrap();
        let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
        ids.push(Uuid::parse_str(&id).unwrap());
    }
    reconcile(&env, &ids, Duration::from_secs(10)).await;
    let metrics = gw.metrics_text().await;
    assert_eq!(
        metric_value(&metrics, "perpetuo_log_rows_rejected_total"),
        0.0
    );
}

/// A spool file whose last frame is torn (a crash mid-write, or a failed write the spool
/// could not cut back) ends there; the records before the tear and every later file still
/// reach the database, and the tear is counted once.
#[tokio::test]
async fn a_torn_tail_ends_only_its_own_file_and_later_files_replay() {
    let env = Env::new().await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let records = |n| -> Vec<LogRecord> {
        (0..n)
            .map(|_| record(env.workspace, Some(env.key_id), "gpt-4o"))
            .collect()
    };
    let (before, after) = (records(3), records(4));
    {
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spool.append(&before), 3);
        spool.seal().unwrap();
        let torn = spool.oldest().unwrap().to_path_buf();
        // A frame header announcing 200 bytes, and only 10 of them.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&torn)
            .unwrap();
        let mut frame = 200u32.to_le_bytes().to_vec();
        frame.extend_from_slice(&[0x5a; 14]);
        std::io::Write::write_all(&mut f, &frame).unwrap();
        assert_eq!(spool.append(&after), 4);
        spool.seal().unwrap();
    }
    assert_eq!(spool_files(dir.path()).len(), 2);

    let gw = Gateway::start_in(&env, dir.clone()).await;
    eventually(
        "the spool was not replayed",
        Duration::from_secs(30),
        || async { spool_files(gw.data_dir()).is_empty() },
    )
    .await;
    let ids: Vec<Uuid> = before.iter().chain(&after).map(|r| r.id).collect();
    assert_eq!(reconcile(&env, &ids, Duration::from_secs(10)).await, 7);
    assert_eq!(
        metric_value(
            &gw.metrics_text().await,
            "perpetuo_log_spool_torn_records_total"
        ),
        1.0
    );
}

/// Two gateways on one `DATA_DIR` would interleave their frames in one spool file and
/// replay each other's records: the second refuses to start, at once and saying why, and
/// the first keeps serving. The lock dies with its process: a restart after `kill -9`
/// takes the directory.
#[tokio::test]
async fn a_second_gateway_on_the_same_data_dir_refuses_to_start() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("main", &m.base_url(), 1).await;
    let mut gw = Gateway::start(&env).await;
    let (status, out) = gw.run_beside(Duration::from_secs(20)).await;
    assert!(!status.success(), "{status}: {out}");
    let dir = gw.data_dir().display().to_string();
    assert!(
        out.contains(&format!("DATA_DIR {dir} is in use by another gateway")),
        "{out}"
    );
    assert!(out.contains(LOCK_FILE), "{out}");
    let r = gw
        .chat(&env.key, crate::harness::chat_body("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    gw.restart().await;
    let r = gw
        .chat(&env.key, crate::harness::chat_body("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
