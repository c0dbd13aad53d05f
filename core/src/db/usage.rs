//! `usage_counters` (additive per-hour counters per key, entry and model) and
//! `usage_rollup` (the same without the key), and the totals, series and breakdowns the
//! admin API reports from the rollup.

use deadpool_postgres::GenericClient;
use time::{Duration, OffsetDateTime};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use uuid::Uuid;

use super::logs::{CacheResult, LogRecord};
use super::{DbError, Sql};

/// A counter row's identity: the fields of the `usage_counters_key` constraint, in its
/// order, so that sorting keys sorts rows the way every writer locks them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CounterKey {
    pub workspace_id: Uuid,
    pub bucket: OffsetDateTime,
    pub api_key_id: Option<Uuid>,
    pub provider_id: Option<Uuid>,
    pub model: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterDelta {
    pub requests: i64,
    pub errors: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub cost_nusd: i64,
    pub cache_hits: i64,
    pub cache_hit_tokens: i64,
    pub cache_saved_nusd: i64,
}

impl CounterDelta {
    /// Counts one stored row. A cache hit is a request like any other, but no provider
    /// served it: its tokens and cost stay out of the token and cost counters (which are
    /// what providers were asked for and charged) and are counted as the cache's instead.
    pub fn add(&mut self, r: &LogRecord) {
        self.requests += 1;
        self.errors += i64::from(r.status >= 400);
        if r.cache == Some(CacheResult::Hit) {
            self.cache_hits += 1;
            self.cache_hit_tokens += i64::from(r.total_tokens);
            self.cache_saved_nusd += r.cache_saved_nusd.unwrap_or(0);
            return;
        }
        self.prompt_tokens += i64::from(r.prompt_tokens);
        self.completion_tokens += i64::from(r.completion_tokens);
        self.total_tokens += i64::from(r.total_tokens);
        self.cost_nusd += r.cost_nusd.unwrap_or(0);
    }

    fn merge(&mut self, other: &CounterDelta) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self
            .completion_tokens
            .saturating_add(other.completion_tokens);
        self.total_tokens = self.total_tokens.saturating_add(other.total_tokens);
        self.cost_nusd = self.cost_nusd.saturating_add(other.cost_nusd);
        self.cache_hits = self.cache_hits.saturating_add(other.cache_hits);
        self.cache_hit_tokens = self.cache_hit_tokens.saturating_add(other.cache_hit_tokens);
        self.cache_saved_nusd = self.cache_saved_nusd.saturating_add(other.cache_saved_nusd);
    }
}

pub fn hour_bucket(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.replace_minute(0)
        .and_then(|t| t.replace_second(0))
        .and_then(|t| t.replace_nanosecond(0))
        .unwrap_or(t)
}

/// A `usage_rollup` row's identity: a counter key without the API key, in the order of
/// the `usage_rollup_key` constraint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct RollupKey<'a> {
    workspace_id: Uuid,
    bucket: OffsetDateTime,
    provider_id: Option<Uuid>,
    model: &'a str,
}

/// The per-key counters' columns added on conflict, as the upserts below spell them.
const ADDED: &str = "requests = {t}.requests + EXCLUDED.requests,
    errors = {t}.errors + EXCLUDED.errors,
    prompt_tokens = {t}.prompt_tokens + EXCLUDED.prompt_tokens,
    completion_tokens = {t}.completion_tokens + EXCLUDED.completion_tokens,
    total_tokens = {t}.total_tokens + EXCLUDED.total_tokens,
    cost_nusd = {t}.cost_nusd + EXCLUDED.cost_nusd,
    cache_hits = {t}.cache_hits + EXCLUDED.cache_hits,
    cache_hit_tokens = {t}.cache_hit_tokens + EXCLUDED.cache_hit_tokens,
    cache_saved_nusd = {t}.cache_saved_nusd + EXCLUDED.cache_saved_nusd";

static UPSERT_COUNTERS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "INSERT INTO usage_counters (workspace_id, bucket, api_key_id, provider_id, model, requests, errors,
             prompt_tokens, completion_tokens, total_tokens, cost_nusd, cache_hits, cache_hit_tokens,
             cache_saved_nusd)
         SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::uuid[], $4::uuid[], $5::text[], $6::int8[],
             $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::int8[], $12::int8[], $13::int8[],
             $14::int8[])
         ON CONFLICT ON CONSTRAINT usage_counters_key DO UPDATE SET {}",
        ADDED.replace("{t}", "usage_counters")
    )
});

static UPSERT_ROLLUP: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "INSERT INTO usage_rollup (workspace_id, bucket, provider_id, model, requests, errors,
             prompt_tokens, completion_tokens, total_tokens, cost_nusd, cache_hits, cache_hit_tokens,
             cache_saved_nusd)
         SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::uuid[], $4::text[], $5::int8[],
             $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::int8[], $12::int8[],
             $13::int8[])
         ON CONFLICT ON CONSTRAINT usage_rollup_key DO UPDATE SET {}",
        ADDED.replace("{t}", "usage_rollup")
    )
});

/// The sums of deltas as parameter arrays, in the upserts' order (after the key columns).
fn sums(vals: &[&CounterDelta]) -> [Vec<i64>; 9] {
    let col = |f: fn(&CounterDelta) -> i64| -> Vec<i64> { vals.iter().map(|v| f(v)).collect() };
    [
        col(|v| v.requests),
        col(|v| v.errors),
        col(|v| v.prompt_tokens),
        col(|v| v.completion_tokens),
        col(|v| v.total_tokens),
        col(|v| v.cost_nusd),
        col(|v| v.cache_hits),
        col(|v| v.cache_hit_tokens),
        col(|v| v.cache_saved_nusd),
    ]
}

/// Adds every delta to `usage_counters` in one statement, rows in the order of their key
/// (deltas of one key are added together first), then their sums without the API key to
/// `usage_rollup` in a second, in that table's key order.
///
/// The order is what keeps writers apart: an upsert locks its rows one after the other,
/// so two gateways adding overlapping batches in different orders could each hold a row
/// the other waits for (a deadlock, 40P01, that rolls one batch back). In one order, the
/// second simply waits for the first; every writer takes the counters' rows before the
/// rollup's, so the two tables never cross either.
pub async fn add<'a>(
    db: &impl GenericClient,
    deltas: impl IntoIterator<Item = (&'a CounterKey, &'a CounterDelta)>,
) -> Result<(), DbError> {
    let mut rows: Vec<(&CounterKey, CounterDelta)> =
        deltas.into_iter().map(|(k, v)| (k, *v)).collect();
    if rows.is_empty() {
        return Ok(());
    }
    rows.sort_unstable_by(|a, b| a.0.cmp(b.0));
    // One statement may not update a row twice: equal keys, adjacent now, become one row.
    rows.dedup_by(|later, kept| {
        if later.0 != kept.0 {
            return false;
        }
        kept.1.merge(&later.1);
        true
    });
    let (keys, vals): (Vec<&CounterKey>, Vec<&CounterDelta>) =
        rows.iter().map(|(k, v)| (*k, v)).unzip();
    let ws: Vec<Uuid> = keys.iter().map(|k| k.workspace_id).collect();
    let bucket: Vec<OffsetDateTime> = keys.iter().map(|k| k.bucket).collect();
    let key: Vec<Option<Uuid>> = keys.iter().map(|k| k.api_key_id).collect();
    let pid: Vec<Option<Uuid>> = keys.iter().map(|k| k.provider_id).collect();
    let model: Vec<&str> = keys.iter().map(|k| k.model.as_str()).collect();
    let added = sums(&vals);
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&ws, &bucket, &key, &pid, &model];
    params.extend(added.iter().map(|s| s as &(dyn ToSql + Sync)));
    // Prepared once per connection: every flush sends only its parameters. `unnest` yields
    // the arrays in order, so the rows are locked in the order sorted above.
    let upsert = db.prepare_cached(&UPSERT_COUNTERS).await?;
    // A prepared statement (`Sql` takes text): the log writer's, outside any trace.
    #[allow(clippy::disallowed_methods)]
    db.execute(&upsert, &params).await?;

    let mut rollup: std::collections::BTreeMap<RollupKey<'_>, CounterDelta> =
        std::collections::BTreeMap::new();
    for (k, v) in &rows {
        let key = RollupKey {
            workspace_id: k.workspace_id,
            bucket: k.bucket,
            provider_id: k.provider_id,
            model: k.model.as_str(),
        };
        rollup.entry(key).or_default().merge(v);
    }
    let ws: Vec<Uuid> = rollup.keys().map(|k| k.workspace_id).collect();
    let bucket: Vec<OffsetDateTime> = rollup.keys().map(|k| k.bucket).collect();
    let pid: Vec<Option<Uuid>> = rollup.keys().map(|k| k.provider_id).collect();
    let model: Vec<&str> = rollup.keys().map(|k| k.model).collect();
    let vals: Vec<&CounterDelta> = rollup.values().collect();
    let added = sums(&vals);
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&ws, &bucket, &pid, &model];
    params.extend(added.iter().map(|s| s as &(dyn ToSql + Sync)));
    let upsert = db.prepare_cached(&UPSERT_ROLLUP).await?;
    // A prepared statement (`Sql` takes text): the log writer's, outside any trace.
    #[allow(clippy::disallowed_methods)]
    db.execute(&upsert, &params).await?;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Hour,
    Day,
}

impl Granularity {
    /// Hourly for ranges up to two days, daily beyond.
    pub fn for_range(from: OffsetDateTime, to: OffsetDateTime) -> Self {
        if to - from <= Duration::days(2) {
            Granularity::Hour
        } else {
            Granularity::Day
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Hour => "hour",
            Granularity::Day => "day",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub requests: i64,
    pub errors: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub cost_nusd: i64,
    /// Requests answered from the response cache (counted in `requests` too).
    pub cache_hits: i64,
    /// The cached answers' tokens (not in the token counts above).
    pub cache_hit_tokens: i64,
    /// What the providers would have charged for the cache hits, nano-USD.
    pub cache_saved_nusd: i64,
}

const SUMS: &str = "COALESCE(sum(requests), 0)::int8 AS requests, COALESCE(sum(errors), 0)::int8 AS errors,
    COALESCE(sum(prompt_tokens), 0)::int8 AS prompt_tokens,
    COALESCE(sum(completion_tokens), 0)::int8 AS completion_tokens,
    COALESCE(sum(total_tokens), 0)::int8 AS total_tokens, COALESCE(sum(cost_nusd), 0)::int8 AS cost_nusd,
    COALESCE(sum(cache_hits), 0)::int8 AS cache_hits,
    COALESCE(sum(cache_hit_tokens), 0)::int8 AS cache_hit_tokens,
    COALESCE(sum(cache_saved_nusd), 0)::int8 AS cache_saved_nusd";

fn totals_from(row: &Row) -> Totals {
    Totals {
        requests: row.get("requests"),
        errors: row.get("errors"),
        prompt_tokens: row.get("prompt_tokens"),
        completion_tokens: row.get("completion_tokens"),
        total_tokens: row.get("total_tokens"),
        cost_nusd: row.get("cost_nusd"),
        cache_hits: row.get("cache_hits"),
        cache_hit_tokens: row.get("cache_hit_tokens"),
        cache_saved_nusd: row.get("cache_saved_nusd"),
    }
}

/// Totals over buckets in `[from, to)` (from `usage_rollup`, as every report below).
pub async fn totals(
    db: &impl GenericClient,
    ws: Uuid,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<Totals, DbError> {
    let row = db
        .traced_query_one(
            &format!("SELECT {SUMS} FROM usage_rollup WHERE workspace_id = $1 AND bucket >= $2 AND bucket < $3"),
            &[&ws, &from, &to],
        )
        .await?;
    Ok(totals_from(&row))
}

/// One point per hour or day from `from` to `to`, empty periods included.
pub async fn series(
    db: &impl GenericClient,
    ws: Uuid,
    from: OffsetDateTime,
    to: OffsetDateTime,
    g: Granularity,
) -> Result<Vec<(OffsetDateTime, Totals)>, DbError> {
    let unit = g.as_str();
    let sql = format!(
        "WITH periods AS (
             SELECT generate_series(date_trunc('{unit}', $2::timestamptz AT TIME ZONE 'UTC'),
                                    $3::timestamptz AT TIME ZONE 'UTC' - interval '1 microsecond',
                                    interval '1 {unit}') AT TIME ZONE 'UTC' AS period
         ), sums AS (
             SELECT date_trunc('{unit}', bucket AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS period, {SUMS}
             FROM usage_rollup WHERE workspace_id = $1 AND bucket >= $2 AND bucket < $3
             GROUP BY 1
         )
         SELECT p.period, COALESCE(s.requests, 0) AS requests, COALESCE(s.errors, 0) AS errors,
                COALESCE(s.prompt_tokens, 0) AS prompt_tokens, COALESCE(s.completion_tokens, 0) AS completion_tokens,
                COALESCE(s.total_tokens, 0) AS total_tokens, COALESCE(s.cost_nusd, 0) AS cost_nusd,
                COALESCE(s.cache_hits, 0) AS cache_hits,
                COALESCE(s.cache_hit_tokens, 0) AS cache_hit_tokens,
                COALESCE(s.cache_saved_nusd, 0) AS cache_saved_nusd
         FROM periods p LEFT JOIN sums s ON s.period = p.period ORDER BY p.period"
    );
    let rows = db.traced_query(&sql, &[&ws, &from, &to]).await?;
    Ok(rows
        .iter()
        .map(|r| (r.get("period"), totals_from(r)))
        .collect())
}

#[derive(Debug, Clone)]
pub struct ProviderModelUsage {
    pub provider_id: Option<Uuid>,
    pub provider_name: Option<String>,
    pub provider_kind: Option<String>,
    pub model: String,
    pub totals: Totals,
}

/// Usage by provider entry and model, largest request count first.
pub async fn by_provider(
    db: &impl GenericClient,
    ws: Uuid,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<Vec<ProviderModelUsage>, DbError> {
    let sql = format!(
        "SELECT u.provider_id, p.name AS provider_name, p.kind AS provider_kind, u.model, {SUMS}
         FROM usage_rollup u LEFT JOIN provider_keys p ON p.id = u.provider_id
         WHERE u.workspace_id = $1 AND u.bucket >= $2 AND u.bucket < $3
         GROUP BY u.provider_id, p.name, p.kind, u.model
         ORDER BY requests DESC, u.model"
    );
    let rows = db.traced_query(&sql, &[&ws, &from, &to]).await?;
    Ok(rows
        .iter()
        .map(|r| ProviderModelUsage {
            provider_id: r.get("provider_id"),
            provider_name: r.get("provider_name"),
            provider_kind: r.get("provider_kind"),
            model: r.get("model"),
            totals: totals_from(r),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDb;

    const ROWS: usize = 400;
    const ROUNDS: usize = 25;

    async fn add_in_transaction(
        client: &mut deadpool_postgres::Client,
        deltas: &[(&CounterKey, &CounterDelta)],
    ) -> Result<(), DbError> {
        let tx = client.transaction().await?;
        add(&tx, deltas.iter().copied()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Two writers adding to the same counter rows at once, one in the opposite order of
    /// the other, round after round (as two gateways' batches for the same keys do): no
    /// batch is ever rolled back as a deadlock victim, and every addition lands, in the
    /// counters and in the rollup.
    #[tokio::test]
    async fn writers_in_opposite_orders_never_deadlock() {
        let db = TestDb::new().await.unwrap();
        let workspace_id = Uuid::now_v7();
        let bucket = hour_bucket(OffsetDateTime::now_utc());
        // Every key its own counter row; the rollup's rows (entry and model) shared by many.
        let entry = Uuid::now_v7();
        let keys: Vec<CounterKey> = (0..ROWS)
            .map(|i| CounterKey {
                workspace_id,
                bucket,
                api_key_id: Some(Uuid::now_v7()),
                provider_id: (i % 2 == 0).then_some(entry),
                model: format!("model-{}", i % 7),
            })
            .collect();
        let one = CounterDelta {
            requests: 1,
            total_tokens: 10,
            ..CounterDelta::default()
        };
        let forward: Vec<(&CounterKey, &CounterDelta)> = keys.iter().map(|k| (k, &one)).collect();
        let backward: Vec<(&CounterKey, &CounterDelta)> = forward.iter().rev().copied().collect();
        let mut a = db.pool.get().await.unwrap();
        let mut b = db.pool.get().await.unwrap();
        for round in 0..ROUNDS {
            let (first, second) = tokio::join!(
                add_in_transaction(&mut a, &forward),
                add_in_transaction(&mut b, &backward)
            );
            for result in [first, second] {
                if let Err(e) = result {
                    panic!("round {round}: a batch failed: {e:?}");
                }
            }
        }
        let row = a
            .traced_query_one(
                "SELECT count(*), sum(requests)::int8 FROM usage_counters WHERE workspace_id = $1",
                &[&workspace_id],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), ROWS as i64);
        assert_eq!(row.get::<_, i64>(1), (ROWS * ROUNDS * 2) as i64);
        let rollup = a
            .traced_query_one(
                "SELECT count(*), sum(requests)::int8 FROM usage_rollup WHERE workspace_id = $1",
                &[&workspace_id],
            )
            .await
            .unwrap();
        assert_eq!(
            rollup.get::<_, i64>(0),
            14,
            "two entries (one none) by seven models"
        );
        assert_eq!(rollup.get::<_, i64>(1), (ROWS * ROUNDS * 2) as i64);
    }

    /// Deltas of one key given twice are added as one row (one statement may not update a
    /// row twice).
    #[tokio::test]
    async fn a_key_given_twice_is_added_once_with_both_deltas() {
        let db = TestDb::new().await.unwrap();
        let key = CounterKey {
            workspace_id: Uuid::now_v7(),
            bucket: hour_bucket(OffsetDateTime::now_utc()),
            api_key_id: None,
            provider_id: None,
            model: String::new(),
        };
        let delta = CounterDelta {
            requests: 1,
            cost_nusd: 5,
            ..CounterDelta::default()
        };
        let client = db.pool.get().await.unwrap();
        add(&client, [(&key, &delta), (&key, &delta)])
            .await
            .unwrap();
        let t = totals(
            &client,
            key.workspace_id,
            key.bucket,
            key.bucket + Duration::hours(1),
        )
        .await
        .unwrap();
        assert_eq!((t.requests, t.cost_nusd), (2, 10));
    }
}
