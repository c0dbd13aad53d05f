//! `request_logs` (one row per finished request, monthly partitions) and the batched write
//! that also moves `usage_counters` by exactly the rows it inserted.

use std::collections::HashMap;

use deadpool_postgres::GenericClient;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::Row;
use uuid::Uuid;

use super::usage::{self, CounterDelta, CounterKey};
use super::{DbError, Sql};
use crate::provider::ProviderKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageSource {
    Provider,
    Estimated,
    None,
}

impl UsageSource {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageSource::Provider => "provider",
            UsageSource::Estimated => "estimated",
            UsageSource::None => "none",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "provider" => UsageSource::Provider,
            "estimated" => UsageSource::Estimated,
            _ => UsageSource::None,
        }
    }
}

/// One upstream attempt of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub provider_id: Uuid,
    pub provider_name: String,
    pub status: Option<u16>,
    pub latency_ms: u32,
    pub error_kind: Option<String>,
}

/// Why routing passed an entry (or one of its keys) by without calling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// The provider's reported headroom, or the entry's own quota, could not cover it.
    Quota,
    /// Its circuit breaker was open.
    Breaker,
    /// A standby (weight 0) not needed: the request was served before it.
    Weight,
}

impl SkipReason {
    pub const ALL: [SkipReason; 3] = [SkipReason::Quota, SkipReason::Breaker, SkipReason::Weight];

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Quota => "quota",
            SkipReason::Breaker => "breaker",
            SkipReason::Weight => "weight",
        }
    }
}

/// An entry, or one key of its pool, that routing passed by for a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skip {
    /// The entry's name.
    pub entry: String,
    /// The pool key's label, when one key of the entry was passed by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub reason: SkipReason,
}

/// The front door a request came through, as the `route` column names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    Chat,
    Embeddings,
    Messages,
    Responses,
}

impl Route {
    pub const ALL: [Route; 4] = [
        Route::Chat,
        Route::Embeddings,
        Route::Messages,
        Route::Responses,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Route::Chat => "chat",
            Route::Embeddings => "embeddings",
            Route::Messages => "messages",
            Route::Responses => "responses",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// What the response cache did for a request (`None` on the row: the cache was off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheResult {
    /// Answered from a stored entry, without a provider call.
    Hit,
    /// Looked up, not found; the provider answered (and the answer may have been stored).
    Miss,
    /// Neither read nor written (`Cache-Control: no-store`, `opt_in` without asking, an
    /// uncacheable request).
    Bypass,
}

impl CacheResult {
    pub const ALL: [CacheResult; 3] = [CacheResult::Hit, CacheResult::Miss, CacheResult::Bypass];

    pub fn as_str(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
            CacheResult::Bypass => "bypass",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Longest stored text of each kind, in bytes; longer values are cut at a character
/// boundary. Bounded so a multi-kilobyte value never breaks an index entry.
const MAX_NAME: usize = 200;
const MAX_MODEL: usize = 256;
const MAX_LABEL: usize = 64;
const MAX_ATTEMPTS: usize = 32;
const MAX_SKIPPED: usize = 32;

fn bounded(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    // PostgreSQL text cannot hold NUL.
    s[..end].replace('\0', "\u{fffd}")
}

fn bounded_opt(s: &Option<String>, max: usize) -> Option<String> {
    s.as_deref().map(|s| bounded(s, max))
}

/// Declares the `request_logs` columns once: each field of [`LogRecord`] with its SQL
/// array type and element type for the batched insert, how it is bound from a record,
/// read from a row, and made storable. From the one list come the record type, the
/// column list, the row reader, [`storable`] and the insert's parameters.
macro_rules! log_columns {
    ($(
        $(#[$meta:meta])*
        $field:ident: $ty:ty,
            sql $pg:literal as $elem:ty = |$b:ident| $bind:expr,
            read |$rd:ident, $col:ident| $read:expr,
            store |$st:ident| $store:expr;
    )*) => {
        /// A request in its final state, as written by the gateway and read by the admin
        /// API. Serialisable so the gateway can spool it while the database is away (ISO
        /// 8601 with six-digit years, so even an absurd timestamp round-trips).
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct LogRecord {
            $( $(#[$meta])* pub $field: $ty, )*
        }

        /// Each column's name and SQL array type, in insert order.
        const COLUMN_TYPES: &[(&str, &str)] = &[$( (stringify!($field), $pg), )*];

        fn from_row(row: &Row) -> LogRecord {
            LogRecord {
                $( $field: { let $rd = row; let $col = stringify!($field); $read }, )*
            }
        }

        /// The record as it is stored: texts bounded and free of NUL, counts and durations
        /// not negative, the status a plausible HTTP code. Counters are computed from this
        /// form, so they always equal the sums over the stored rows.
        pub fn storable(r: &LogRecord) -> LogRecord {
            LogRecord {
                $( $field: { let $st = r; $store }, )*
            }
        }

        /// A batch as the insert binds it: one array per column.
        struct Batch<'a> {
            $( $field: Vec<$elem>, )*
        }

        impl<'a> Batch<'a> {
            fn of(records: &'a [LogRecord]) -> Self {
                Self {
                    $( $field: records.iter().map(|$b| $bind).collect(), )*
                }
            }

            fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
                vec![$( &self.$field as &(dyn ToSql + Sync), )*]
            }
        }
    };
}

log_columns! {
    id: Uuid,
        sql "uuid" as Uuid = |r| r.id,
        read |row, col| row.get(col),
        store |r| r.id;
    #[serde(with = "time::serde::iso8601")]
    created_at: OffsetDateTime,
        sql "timestamptz" as OffsetDateTime = |r| r.created_at,
        read |row, col| row.get(col),
        store |r| r.created_at;
    workspace_id: Option<Uuid>,
        sql "uuid" as Option<Uuid> = |r| r.workspace_id,
        read |row, col| row.get(col),
        store |r| r.workspace_id;
    api_key_id: Option<Uuid>,
        sql "uuid" as Option<Uuid> = |r| r.api_key_id,
        read |row, col| row.get(col),
        store |r| r.api_key_id;
    provider_id: Option<Uuid>,
        sql "uuid" as Option<Uuid> = |r| r.provider_id,
        read |row, col| row.get(col),
        store |r| r.provider_id;
    provider_name: Option<String>,
        sql "text" as Option<&'a str> = |r| r.provider_name.as_deref(),
        read |row, col| row.get(col),
        store |r| bounded_opt(&r.provider_name, MAX_NAME);
    provider_kind: Option<ProviderKind>,
        sql "text" as Option<&'static str> = |r| r.provider_kind.map(ProviderKind::as_str),
        read |row, col| row.get::<_, Option<&str>>(col).and_then(|k| k.parse().ok()),
        store |r| r.provider_kind;
    route: Route,
        sql "text" as &'static str = |r| r.route.as_str(),
        read |row, col| Route::parse(row.get(col)).unwrap_or(Route::Chat),
        store |r| r.route;
    model_requested: Option<String>,
        sql "text" as Option<&'a str> = |r| r.model_requested.as_deref(),
        read |row, col| row.get(col),
        store |r| bounded_opt(&r.model_requested, MAX_MODEL);
    model_served: Option<String>,
        sql "text" as Option<&'a str> = |r| r.model_served.as_deref(),
        read |row, col| row.get(col),
        store |r| bounded_opt(&r.model_served, MAX_MODEL);
    status: i16,
        sql "int2" as i16 = |r| r.status,
        read |row, col| row.get(col),
        store |r| r.status.clamp(0, 999);
    error_kind: Option<String>,
        sql "text" as Option<&'a str> = |r| r.error_kind.as_deref(),
        read |row, col| row.get(col),
        store |r| bounded_opt(&r.error_kind, MAX_LABEL);
    streamed: bool,
        sql "bool" as bool = |r| r.streamed,
        read |row, col| row.get(col),
        store |r| r.streamed;
    prompt_tokens: i32,
        sql "int4" as i32 = |r| r.prompt_tokens,
        read |row, col| row.get(col),
        store |r| r.prompt_tokens.max(0);
    completion_tokens: i32,
        sql "int4" as i32 = |r| r.completion_tokens,
        read |row, col| row.get(col),
        store |r| r.completion_tokens.max(0);
    total_tokens: i32,
        sql "int4" as i32 = |r| r.total_tokens,
        read |row, col| row.get(col),
        store |r| r.total_tokens.max(0);
    /// Cost in nano-USD (1e-9 USD); `None` when the model has no known price.
    cost_nusd: Option<i64>,
        sql "int8" as Option<i64> = |r| r.cost_nusd,
        read |row, col| row.get(col),
        store |r| r.cost_nusd.map(|c| c.max(0));
    usage_source: UsageSource,
        sql "text" as &'static str = |r| r.usage_source.as_str(),
        read |row, col| UsageSource::parse(row.get(col)),
        store |r| r.usage_source;
    latency_ms: i32,
        sql "int4" as i32 = |r| r.latency_ms,
        read |row, col| row.get(col),
        store |r| r.latency_ms.max(0);
    ttfb_ms: Option<i32>,
        sql "int4" as Option<i32> = |r| r.ttfb_ms,
        read |row, col| row.get(col),
        store |r| r.ttfb_ms.map(|t| t.max(0));
    attempts: Vec<Attempt>,
        sql "jsonb" as Json<&'a Vec<Attempt>> = |r| Json(&r.attempts),
        read |row, col| row
            .try_get::<_, Json<Vec<Attempt>>>(col)
            .map_or_else(|_| Vec::new(), |Json(a)| a),
        store |r| r
            .attempts
            .iter()
            .take(MAX_ATTEMPTS)
            .map(|a| Attempt {
                provider_id: a.provider_id,
                provider_name: bounded(&a.provider_name, MAX_NAME),
                status: a.status,
                latency_ms: a.latency_ms,
                error_kind: bounded_opt(&a.error_kind, MAX_LABEL),
            })
            .collect();
    /// What the gateway changed in the request, when anything (e.g. dropped blocks).
    #[serde(default)]
    note: Option<String>,
        sql "text" as Option<&'a str> = |r| r.note.as_deref(),
        read |row, col| row.get(col),
        store |r| bounded_opt(&r.note, MAX_NAME);
    /// What the response cache did; `None` when the cache was off for the request.
    #[serde(default)]
    cache: Option<CacheResult>,
        sql "text" as Option<&'static str> = |r| r.cache.map(CacheResult::as_str),
        read |row, col| row.get::<_, Option<&str>>(col).and_then(CacheResult::parse),
        store |r| r.cache;
    /// On a hit: what the provider would have charged, nano-USD (as `cost_nusd`).
    #[serde(default)]
    cache_saved_nusd: Option<i64>,
        sql "int8" as Option<i64> = |r| r.cache_saved_nusd,
        read |row, col| row.get(col),
        store |r| r.cache_saved_nusd.map(|c| c.max(0));
    /// The pool key that served (its id, and its label as it was then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    provider_key_id: Option<Uuid>,
        sql "uuid" as Option<Uuid> = |r| r.provider_key_id,
        read |row, col| row.get(col),
        store |r| r.provider_key_id;
    #[serde(default, skip_serializing_if = "Option::is_none")]
    provider_key_label: Option<String>,
        sql "text" as Option<&'a str> = |r| r.provider_key_label.as_deref(),
        read |row, col| row.get(col),
        store |r| bounded_opt(&r.provider_key_label, MAX_NAME);
    /// Entries or keys routing passed by before the one that answered (stored as NULL
    /// when none was).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    skipped: Vec<Skip>,
        sql "jsonb" as Option<Json<&'a Vec<Skip>>> = |r| (!r.skipped.is_empty()).then_some(Json(&r.skipped)),
        read |row, col| row
            .try_get::<_, Option<Json<Vec<Skip>>>>(col)
            .ok()
            .flatten()
            .map_or_else(Vec::new, |Json(s)| s),
        store |r| r
            .skipped
            .iter()
            .take(MAX_SKIPPED)
            .map(|s| Skip {
                entry: bounded(&s.entry, MAX_NAME),
                key: bounded_opt(&s.key, MAX_NAME),
                reason: s.reason,
            })
            .collect();
    /// The request's W3C trace id (32 lowercase hex digits), when it was traced or came
    /// with a `traceparent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
        sql "text" as Option<&'a str> = |r| r.trace_id.as_deref(),
        read |row, col| row.get(col),
        store |r| r
            .trace_id
            .as_ref()
            .filter(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(|t| t.to_ascii_lowercase());
}

/// The column list, in insert order.
static COLUMNS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    COLUMN_TYPES
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
});

/// The batch insert: one row per element of the columns' parallel arrays.
static INSERT_LOGS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let arrays = COLUMN_TYPES
        .iter()
        .enumerate()
        .map(|(i, (_, pg))| format!("${}::{pg}[]", i + 1))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO request_logs ({cols})
         SELECT * FROM unnest({arrays})
         ON CONFLICT DO NOTHING
         RETURNING id",
        cols = *COLUMNS
    )
});

/// Inserts a batch of records in one statement (a record already present is skipped) and
/// adds the inserted ones to `usage_counters`, in one transaction. Returns rows inserted.
/// Records are stored in their [`storable`] form.
pub async fn insert_batch(
    client: &mut deadpool_postgres::Client,
    records: &[LogRecord],
) -> Result<u64, DbError> {
    if records.is_empty() {
        return Ok(0);
    }
    let mut records: Vec<LogRecord> = records.iter().map(storable).collect();
    // In primary-key order, as the counters are in theirs (see `usage::add`): two writers
    // sending the same records (a replay beside a write given up on but still running in
    // the server) then wait for each other instead of deadlocking.
    records.sort_unstable_by_key(|r| (r.created_at, r.id));
    let records = records.as_slice();
    let tx = client.transaction().await?;
    let batch = Batch::of(records);
    let params = batch.params();
    // Prepared once per connection: every flush sends only its parameters.
    let insert = tx.prepare_cached(&INSERT_LOGS).await?;
    // A prepared statement (`Sql` takes text): the log writer's, outside any trace.
    #[allow(clippy::disallowed_methods)]
    let inserted = tx.query(&insert, &params).await?;
    let inserted: std::collections::HashSet<Uuid> = inserted.iter().map(|r| r.get(0)).collect();

    let mut deltas: HashMap<CounterKey, CounterDelta> = HashMap::new();
    for r in records.iter().filter(|r| inserted.contains(&r.id)) {
        let Some(workspace_id) = r.workspace_id else {
            continue;
        };
        let key = CounterKey {
            workspace_id,
            bucket: usage::hour_bucket(r.created_at),
            api_key_id: r.api_key_id,
            provider_id: r.provider_id,
            model: r
                .model_served
                .clone()
                .or_else(|| r.model_requested.clone())
                .unwrap_or_default(),
        };
        deltas.entry(key).or_default().add(r);
    }
    usage::add(&tx, &deltas).await?;
    tx.commit().await?;
    Ok(inserted.len() as u64)
}

/// Creates the monthly log partitions from the month of `at` through `months_ahead`
/// months later, where missing, moving rows the default partition holds for those months
/// into them. Idempotent and safe from several processes. Returns how many were created.
pub async fn ensure_partitions(
    db: &impl GenericClient,
    at: OffsetDateTime,
    months_ahead: i32,
) -> Result<i32, DbError> {
    Ok(db
        .traced_query_one(
            "SELECT perpetuo_ensure_log_partitions($1, $2)",
            &[&at, &months_ahead],
        )
        .await?
        .get(0))
}

/// Drops the monthly log partitions that end at or before `cutoff` (and older rows of
/// the default partition); usage counters stay. Returns the dropped partitions' names.
pub async fn drop_partitions_before(
    db: &impl GenericClient,
    cutoff: OffsetDateTime,
) -> Result<Vec<String>, DbError> {
    let rows = db
        .traced_query("SELECT perpetuo_drop_log_partitions($1)", &[&cutoff])
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Most rows one listing returns, whatever the caller asks.
pub const MAX_LIST_LIMIT: u32 = 1000;

/// A row's place in the listing order (newest first: `created_at`, then `id`, both
/// descending). Ids are time-ordered, so ties on the timestamp are broken the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPosition {
    pub created_at: OffsetDateTime,
    pub id: Uuid,
}

impl LogPosition {
    fn of(r: &LogRecord) -> Self {
        Self {
            created_at: r.created_at,
            id: r.id,
        }
    }
}

/// Which rows of the filtered listing a page holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogPaging {
    /// The newest rows.
    #[default]
    Newest,
    /// The rows just older than a position (the next page, going back in time).
    Older(LogPosition),
    /// The rows just newer than a position (the page before), still listed newest first.
    Newer(LogPosition),
    /// The `n`th page of `limit` rows, from 1 (offset paging, kept for old clients: it
    /// reads and skips every row before the page).
    Page(u32),
}

#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    pub workspace_id: Uuid,
    pub paging: LogPaging,
    /// Rows per page, 1 to [`MAX_LIST_LIMIT`].
    pub limit: u32,
    /// Whether to count every row the filters match (a scan of the whole filtered set).
    pub count: bool,
    pub api_key_id: Option<Uuid>,
    pub provider_id: Option<Uuid>,
    pub model: Option<String>,
    pub status: Option<i16>,
    pub cache: Option<CacheResult>,
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
}

#[derive(Debug, Clone)]
pub struct LogPage {
    /// Newest first.
    pub rows: Vec<LogRecord>,
    /// Rows matching the filters, when asked for.
    pub total: Option<i64>,
    /// Where the next older page starts ([`LogPaging::Older`]), when older rows match.
    pub older: Option<LogPosition>,
    /// Where the next newer page starts ([`LogPaging::Newer`]), when newer rows match.
    pub newer: Option<LogPosition>,
}

/// Older or newer than a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Older,
    Newer,
}

impl Side {
    fn op(self) -> &'static str {
        match self {
            Side::Older => "<",
            Side::Newer => ">",
        }
    }
}

/// A statement's WHERE clauses and their parameters, numbered as they are added.
#[derive(Default)]
struct Conditions {
    clauses: Vec<String>,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Conditions {
    /// Adds `value` as the next parameter and returns how the statement names it (`$n`).
    fn param(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.params.push(Box::new(value));
        format!("${}", self.params.len())
    }

    fn filter(q: &LogQuery) -> Self {
        let mut c = Self::default();
        let ws = c.param(q.workspace_id);
        c.clauses.push(format!("workspace_id = {ws}"));
        if let Some(k) = q.api_key_id {
            let k = c.param(k);
            c.clauses.push(format!("api_key_id = {k}"));
        }
        if let Some(p) = q.provider_id {
            let p = c.param(p);
            c.clauses.push(format!("provider_id = {p}"));
        }
        if let Some(m) = &q.model {
            let m = c.param(m.clone());
            c.clauses.push(format!("model_requested = {m}"));
        }
        if let Some(s) = q.status {
            let s = c.param(s);
            c.clauses.push(format!("status = {s}"));
        }
        if let Some(r) = q.cache {
            let r = c.param(r.as_str());
            c.clauses.push(format!("cache = {r}"));
        }
        if let Some(f) = q.from {
            let f = c.param(f);
            c.clauses.push(format!("created_at >= {f}"));
        }
        if let Some(t) = q.to {
            let t = c.param(t);
            c.clauses.push(format!("created_at < {t}"));
        }
        c
    }

    /// Only rows on `side` of `at` in the listing order. Written so that the timestamp
    /// bound alone can use the `(workspace_id, created_at)` index.
    fn beyond(&mut self, at: LogPosition, side: Side) {
        let op = side.op();
        let t = self.param(at.created_at);
        let id = self.param(at.id);
        self.clauses.push(format!(
            "created_at {op}= {t} AND (created_at {op} {t} OR id {op} {id})"
        ));
    }

    fn sql(&self) -> String {
        self.clauses.join(" AND ")
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// One page of a workspace's logs, newest first, with where the pages beside it start.
/// Reads at most `limit + 1` rows past the page's start (plus, for a page reached by a
/// position, one index probe for rows on the other side); counts the filtered set only
/// when `count` is set.
pub async fn list(db: &impl GenericClient, q: &LogQuery) -> Result<LogPage, DbError> {
    let limit = i64::from(q.limit.clamp(1, MAX_LIST_LIMIT));
    let mut page = Conditions::filter(q);
    let (order, offset) = match q.paging {
        LogPaging::Newest => ("DESC", 0),
        LogPaging::Page(n) => ("DESC", i64::from(n.max(1) - 1) * limit),
        LogPaging::Older(at) => {
            page.beyond(at, Side::Older);
            ("DESC", 0)
        }
        // The rows nearest `at` first, then turned newest first.
        LogPaging::Newer(at) => {
            page.beyond(at, Side::Newer);
            ("ASC", 0)
        }
    };
    // One row more than the page says whether another page follows in its direction.
    let fetch = page.param(limit + 1);
    let skip = page.param(offset);
    let sql = format!(
        "SELECT {cols} FROM request_logs WHERE {}
         ORDER BY created_at {order}, id {order} LIMIT {fetch} OFFSET {skip}",
        page.sql(),
        cols = *COLUMNS
    );
    let mut rows: Vec<LogRecord> = db
        .traced_query(&sql, &page.refs())
        .await?
        .iter()
        .map(from_row)
        .collect();
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    if matches!(q.paging, LogPaging::Newer(_)) {
        rows.reverse();
    }
    let first = rows.first().map(LogPosition::of);
    let last = rows.last().map(LogPosition::of);
    let (older, newer) = match q.paging {
        LogPaging::Newest => (last.filter(|_| more), None),
        LogPaging::Page(_) => (last.filter(|_| more), first.filter(|_| offset > 0)),
        LogPaging::Older(at) => {
            let edge = first.unwrap_or(at);
            let newer = any_beyond(db, q, edge, Side::Newer).await?.then_some(edge);
            (last.filter(|_| more), newer)
        }
        LogPaging::Newer(at) => {
            let edge = last.unwrap_or(at);
            let older = any_beyond(db, q, edge, Side::Older).await?.then_some(edge);
            (older, first.filter(|_| more))
        }
    };
    let total = if q.count {
        let all = Conditions::filter(q);
        let sql = format!("SELECT count(*) FROM request_logs WHERE {}", all.sql());
        Some(db.traced_query_one(&sql, &all.refs()).await?.get(0))
    } else {
        None
    };
    Ok(LogPage {
        rows,
        total,
        older,
        newer,
    })
}

/// Whether any row the filters match lies on `side` of `at`: the nearest one is looked
/// for, walking the index away from `at`, so the answer usually costs one row.
async fn any_beyond(
    db: &impl GenericClient,
    q: &LogQuery,
    at: LogPosition,
    side: Side,
) -> Result<bool, DbError> {
    let mut c = Conditions::filter(q);
    c.beyond(at, side);
    let order = match side {
        Side::Older => "DESC",
        Side::Newer => "ASC",
    };
    let sql = format!(
        "SELECT 1 FROM request_logs WHERE {} ORDER BY created_at {order}, id {order} LIMIT 1",
        c.sql()
    );
    Ok(db.traced_query_opt(&sql, &c.refs()).await?.is_some())
}

/// For tests: every row of one request id.
pub async fn find_by_id(db: &impl GenericClient, id: Uuid) -> Result<Vec<LogRecord>, DbError> {
    let rows = db
        .traced_query(
            &format!("SELECT {} FROM request_logs WHERE id = $1", *COLUMNS),
            &[&id],
        )
        .await?;
    Ok(rows.iter().map(from_row).collect())
}

/// For tests: every row of a workspace, oldest first.
pub async fn all_for_workspace(
    db: &impl GenericClient,
    workspace: Uuid,
) -> Result<Vec<LogRecord>, DbError> {
    let rows = db
        .traced_query(
            &format!(
                "SELECT {} FROM request_logs WHERE workspace_id = $1 ORDER BY created_at, id",
                *COLUMNS
            ),
            &[&workspace],
        )
        .await?;
    Ok(rows.iter().map(from_row).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDb;

    const ROWS: usize = 300;
    const ROUNDS: usize = 15;

    fn record(workspace_id: Uuid, created_at: OffsetDateTime, model: String) -> LogRecord {
        LogRecord {
            id: Uuid::now_v7(),
            created_at,
            workspace_id: Some(workspace_id),
            api_key_id: None,
            provider_id: None,
            provider_name: None,
            provider_kind: None,
            route: Route::Chat,
            model_requested: Some(model),
            model_served: None,
            status: 200,
            error_kind: None,
            streamed: false,
            prompt_tokens: 1,
            completion_tokens: 1,
            total_tokens: 2,
            cost_nusd: None,
            usage_source: UsageSource::Provider,
            latency_ms: 1,
            ttfb_ms: None,
            attempts: Vec::new(),
            note: None,
            cache: None,
            cache_saved_nusd: None,
            provider_key_id: None,
            provider_key_label: None,
            skipped: Vec::new(),
            trace_id: None,
        }
    }

    /// A cache hit counts as a request, but its tokens and what it saved go to the cache's
    /// counters, not to the token and cost counters; both tables equal the sums over the
    /// stored rows under that rule, and a hit's row keeps its answer's tokens.
    #[tokio::test]
    async fn a_cache_hit_is_counted_apart_from_provider_usage() {
        let db = TestDb::new().await.unwrap();
        let workspace_id = Uuid::now_v7();
        let now = OffsetDateTime::now_utc();
        let model = || "gpt-4o".to_string();
        let miss = LogRecord {
            prompt_tokens: 10,
            completion_tokens: 5,
            total_tokens: 15,
            cost_nusd: Some(300),
            cache: Some(CacheResult::Miss),
            ..record(workspace_id, now, model())
        };
        let hit = LogRecord {
            prompt_tokens: 10,
            completion_tokens: 5,
            total_tokens: 15,
            cost_nusd: Some(0),
            cache: Some(CacheResult::Hit),
            cache_saved_nusd: Some(300),
            ..record(workspace_id, now, model())
        };
        let failed_hit = LogRecord {
            id: Uuid::now_v7(),
            status: 499,
            cache_saved_nusd: Some(-5),
            ..hit.clone()
        };
        let plain = record(workspace_id, now, model());
        let mut client = db.pool.get().await.unwrap();
        let n = insert_batch(&mut client, &[miss, hit.clone(), failed_hit, plain])
            .await
            .unwrap();
        assert_eq!(n, 4);

        let stored = find_by_id(&client, hit.id).await.unwrap();
        let kept = |r: &LogRecord| {
            let t = (
                r.prompt_tokens,
                r.completion_tokens,
                r.total_tokens,
                r.cost_nusd,
            );
            (t, r.cache, r.cache_saved_nusd)
        };
        assert_eq!(
            stored.iter().map(kept).collect::<Vec<_>>(),
            vec![kept(&hit)],
            "a hit's row keeps its answer's tokens"
        );
        let sums = "requests, errors, prompt_tokens, completion_tokens, total_tokens, cost_nusd,
                    cache_hits, cache_hit_tokens, cache_saved_nusd";
        let from_rows = format!(
            "SELECT count(*)::int8, count(*) FILTER (WHERE status >= 400)::int8,
                 COALESCE(sum(prompt_tokens) FILTER (WHERE {own}), 0)::int8,
                 COALESCE(sum(completion_tokens) FILTER (WHERE {own}), 0)::int8,
                 COALESCE(sum(total_tokens) FILTER (WHERE {own}), 0)::int8,
                 COALESCE(sum(COALESCE(cost_nusd, 0)) FILTER (WHERE {own}), 0)::int8,
                 count(*) FILTER (WHERE cache = 'hit')::int8,
                 COALESCE(sum(total_tokens) FILTER (WHERE cache = 'hit'), 0)::int8,
                 COALESCE(sum(COALESCE(cache_saved_nusd, 0)) FILTER (WHERE cache = 'hit'), 0)::int8
             FROM request_logs WHERE workspace_id = $1",
            own = "cache IS DISTINCT FROM 'hit'"
        );
        let read = |sql: String| {
            let client = &client;
            async move {
                let row = client
                    .traced_query_one(&sql, &[&workspace_id])
                    .await
                    .unwrap();
                (0..9).map(|i| row.get::<_, i64>(i)).collect::<Vec<_>>()
            }
        };
        let rows = read(from_rows).await;
        assert_eq!(rows, vec![4, 1, 11, 6, 17, 300, 2, 30, 300]);
        for table in ["usage_counters", "usage_rollup"] {
            let counted = read(format!(
                "SELECT {} FROM {table} WHERE workspace_id = $1",
                sums.split(',')
                    .map(|c| format!("sum({})::int8", c.trim()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .await;
            assert_eq!(counted, rows, "{table} equal the sums over the rows");
        }
        let t = usage::totals(
            &client,
            workspace_id,
            usage::hour_bucket(now),
            now + time::Duration::hours(1),
        )
        .await
        .unwrap();
        assert_eq!(
            (
                t.requests,
                t.total_tokens,
                t.cost_nusd,
                t.cache_hits,
                t.cache_hit_tokens,
                t.cache_saved_nusd
            ),
            (4, 17, 300, 2, 30, 300)
        );
    }

    /// Two writers inserting the same records at once, one in the opposite order of the
    /// other (a replay beside a write still running in the server): neither is rolled back
    /// as a deadlock victim, each record is one row, and the counters count it once.
    #[tokio::test]
    async fn the_same_batch_from_two_writers_in_opposite_orders_never_deadlocks() {
        let db = TestDb::new().await.unwrap();
        let workspace_id = Uuid::now_v7();
        let now = OffsetDateTime::now_utc();
        let mut a = db.pool.get().await.unwrap();
        let mut b = db.pool.get().await.unwrap();
        let mut inserted = 0;
        for round in 0..ROUNDS {
            let forward: Vec<LogRecord> = (0..ROWS)
                .map(|i| {
                    let at = now - time::Duration::milliseconds((round * ROWS + i) as i64);
                    record(workspace_id, at, format!("model-{}", i % 7))
                })
                .collect();
            let backward: Vec<LogRecord> = forward.iter().rev().cloned().collect();
            let (first, second) = tokio::join!(
                insert_batch(&mut a, &forward),
                insert_batch(&mut b, &backward)
            );
            match (first, second) {
                (Ok(x), Ok(y)) => inserted += x + y,
                (first, second) => panic!("round {round}: {first:?} / {second:?}"),
            }
        }
        assert_eq!(inserted, (ROWS * ROUNDS) as u64);
        let counted: i64 = a
            .traced_query_one(
                "SELECT sum(requests)::int8 FROM usage_counters WHERE workspace_id = $1",
                &[&workspace_id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(counted, (ROWS * ROUNDS) as i64);
    }
}
