//! Request logs of a workspace: filtered, newest first, paged by opaque cursors (offset
//! pages still answered, deprecated).

use std::collections::HashMap;

use axum::extract::Query;
use axum::Json;
use perpetuo_core::db;
use perpetuo_core::db::logs::{Attempt, CacheResult, LogPaging, LogQuery, LogRecord};
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::dto::{parse_time, usd};
use crate::access::Member;
use crate::error::{ApiError, FieldErrors};
use crate::extract::Conn;

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 200;

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptDto {
    pub provider_id: Uuid,
    pub provider_name: String,
    /// Upstream status; null when no response arrived (connect error, timeout).
    pub status: Option<u16>,
    pub latency_ms: u32,
    pub error_kind: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LogDto {
    /// The request id (also sent to the client as `x-request-id`).
    pub id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub api_key_id: Option<Uuid>,
    pub provider_id: Option<Uuid>,
    pub provider_name: Option<String>,
    pub provider_kind: Option<String>,
    pub route: String,
    pub model_requested: Option<String>,
    pub model_served: Option<String>,
    pub status: i16,
    pub error_kind: Option<String>,
    pub streamed: bool,
    pub prompt_tokens: i32,
    pub completion_tokens: i32,
    pub total_tokens: i32,
    /// USD; null when the model has no known price.
    pub cost_usd: Option<f64>,
    /// provider, estimated or none.
    pub usage_source: String,
    pub latency_ms: i32,
    pub ttfb_ms: Option<i32>,
    pub attempts: Vec<AttemptDto>,
    /// What the gateway changed in the request (e.g. dropped thinking blocks), if anything.
    pub note: Option<String>,
    /// What the response cache did: `hit` (answered from the cache, no provider called,
    /// cost 0), `miss` or `bypass`; null when the cache was off for the request.
    #[schema(pattern = "^(hit|miss|bypass)$")]
    pub cache: Option<String>,
    /// On a hit: what the provider would have charged, USD.
    pub cache_saved_usd: Option<f64>,
    /// The key of the entry's pool that served the request (null when none did, or for
    /// an entry without keys).
    #[schema(required = true)]
    pub provider_key_id: Option<Uuid>,
    /// That key's label when the request was served.
    #[schema(required = true)]
    pub provider_key_label: Option<String>,
    /// The entries or keys passed over on the way to the one that served, with why; null
    /// when nothing was skipped.
    #[schema(required = true)]
    pub skipped: Option<Vec<SkippedDto>>,
    /// The request's W3C trace id (32 hex digits), when it was traced or came with a
    /// `traceparent`; `GET /meta`'s `trace_url_template` links it.
    #[schema(required = true)]
    pub trace_id: Option<String>,
}

/// An entry, or one key of an entry, that routing passed over for a request.
#[derive(Debug, Serialize, ToSchema)]
pub struct SkippedDto {
    /// The entry's name.
    pub entry: String,
    /// The key's label, when one key of the entry was skipped (null: the whole entry).
    #[schema(required = true)]
    pub key: Option<String>,
    /// Why: `quota` (the headroom its provider reported, or the entry's own quota, could
    /// not cover the request), `breaker` (its breaker was open) or `weight` (another
    /// entry of its priority served, ahead of it in the balancing's order).
    #[schema(pattern = "^(quota|breaker|weight)$")]
    pub reason: String,
}

impl From<Attempt> for AttemptDto {
    fn from(a: Attempt) -> Self {
        Self {
            provider_id: a.provider_id,
            provider_name: a.provider_name,
            status: a.status,
            latency_ms: a.latency_ms,
            error_kind: a.error_kind,
        }
    }
}

impl From<LogRecord> for LogDto {
    fn from(r: LogRecord) -> Self {
        Self {
            provider_key_id: r.provider_key_id,
            provider_key_label: r.provider_key_label,
            skipped: (!r.skipped.is_empty()).then(|| {
                r.skipped
                    .into_iter()
                    .map(|s| SkippedDto {
                        entry: s.entry,
                        key: s.key,
                        reason: s.reason.as_str().to_string(),
                    })
                    .collect()
            }),
            trace_id: r.trace_id,
            id: r.id,
            created_at: r.created_at,
            api_key_id: r.api_key_id,
            provider_id: r.provider_id,
            provider_name: r.provider_name,
            provider_kind: r.provider_kind.map(|k| k.as_str().to_string()),
            note: r.note,
            route: r.route.as_str().to_string(),
            model_requested: r.model_requested,
            model_served: r.model_served,
            status: r.status,
            error_kind: r.error_kind,
            streamed: r.streamed,
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            total_tokens: r.total_tokens,
            cost_usd: r.cost_nusd.map(usd),
            usage_source: r.usage_source.as_str().to_string(),
            latency_ms: r.latency_ms,
            ttfb_ms: r.ttfb_ms,
            attempts: r.attempts.into_iter().map(Into::into).collect(),
            cache: r.cache.map(|c| c.as_str().to_string()),
            cache_saved_usd: r.cache_saved_nusd.map(usd),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LogPageDto {
    /// Newest first.
    pub data: Vec<LogDto>,
    /// Rows per page, as asked (or the default).
    pub limit: u32,
    /// Pass as `cursor` for the next page of older rows; null when no older row matches.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
    /// Pass as `cursor` for the page of rows just newer than this one; null on the newest
    /// page.
    #[schema(required = true)]
    pub prev_cursor: Option<String>,
    /// Rows matching the filters over all pages, counted only when asked (`count=true`,
    /// or the deprecated `page` without `count=false`); null otherwise.
    #[schema(required = true)]
    pub total: Option<i64>,
    /// Deprecated with the `page` parameter: the page number when `page` was given; null
    /// otherwise.
    #[schema(required = true, deprecated)]
    pub page: Option<u32>,
}

/// A cursor is opaque to clients: base64url (no padding) of a direction byte, the row's
/// `created_at` in microseconds since the epoch (big-endian i64) and its id (16 bytes).
mod cursor {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use perpetuo_core::db::logs::{LogPaging, LogPosition};
    use time::OffsetDateTime;
    use uuid::Uuid;

    const OLDER: u8 = b'o';
    const NEWER: u8 = b'n';
    const LEN: usize = 1 + 8 + 16;
    /// Longest text looked at: a cursor is 34 characters.
    const MAX_TEXT: usize = 64;

    fn encode(direction: u8, at: LogPosition) -> String {
        let micros = (at.created_at.unix_timestamp_nanos() / 1_000) as i64;
        let mut bytes = Vec::with_capacity(LEN);
        bytes.push(direction);
        bytes.extend_from_slice(&micros.to_be_bytes());
        bytes.extend_from_slice(at.id.as_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The cursor of the page of rows older than `at`.
    pub fn older(at: LogPosition) -> String {
        encode(OLDER, at)
    }

    /// The cursor of the page of rows newer than `at`.
    pub fn newer(at: LogPosition) -> String {
        encode(NEWER, at)
    }

    /// The page a cursor names; `None` when it is not one this server made.
    pub fn decode(text: &str) -> Option<LogPaging> {
        if text.len() > MAX_TEXT {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        let (&direction, rest) = bytes.split_first()?;
        if rest.len() != LEN - 1 {
            return None;
        }
        let (micros, id) = rest.split_at(8);
        let micros = i64::from_be_bytes(micros.try_into().ok()?);
        let created_at =
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000).ok()?;
        let at = LogPosition {
            created_at,
            id: Uuid::from_slice(id).ok()?,
        };
        match direction {
            OLDER => Some(LogPaging::Older(at)),
            NEWER => Some(LogPaging::Newer(at)),
            _ => None,
        }
    }
}

fn parse_query(workspace_id: Uuid, q: &HashMap<String, String>) -> Result<LogQuery, ApiError> {
    let mut errs = FieldErrors::default();
    let mut out = LogQuery {
        workspace_id,
        limit: DEFAULT_LIMIT,
        ..Default::default()
    };
    let mut page = None;
    if let Some(p) = q.get("page") {
        match p.parse::<u32>() {
            Ok(p) if (1..=1_000_000).contains(&p) => page = Some(p),
            _ => errs.add("page", "must be an integer of at least 1"),
        }
    }
    if let Some(c) = q.get("cursor").filter(|c| !c.is_empty()) {
        if q.contains_key("page") {
            errs.add("cursor", "cannot be combined with page");
        } else {
            match cursor::decode(c) {
                Some(paging) => out.paging = paging,
                None => errs.add(
                    "cursor",
                    "must be a next_cursor or prev_cursor from an earlier answer",
                ),
            }
        }
    }
    let count = match q.get("count").map(String::as_str) {
        None | Some("") => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => {
            errs.add("count", "must be true or false");
            None
        }
    };
    if let Some(p) = page {
        out.paging = LogPaging::Page(p);
    }
    // Offset paging keeps its answer as it was (a total on every page) unless told not to.
    out.count = count.unwrap_or(page.is_some());
    if let Some(l) = q.get("limit") {
        match l.parse::<u32>() {
            Ok(l) if (1..=MAX_LIMIT).contains(&l) => out.limit = l,
            _ => errs.add("limit", format!("must be an integer from 1 to {MAX_LIMIT}")),
        }
    }
    if let Some(k) = q.get("api_key_id").filter(|k| !k.is_empty()) {
        match Uuid::parse_str(k) {
            Ok(id) => out.api_key_id = Some(id),
            Err(_) => errs.add("api_key_id", "must be an API key id"),
        }
    }
    if let Some(p) = q.get("provider").filter(|p| !p.is_empty()) {
        match Uuid::parse_str(p) {
            Ok(id) => out.provider_id = Some(id),
            Err(_) => errs.add("provider", "must be a provider id"),
        }
    }
    out.model = q.get("model").filter(|m| !m.is_empty()).cloned();
    // PostgreSQL refuses NUL in text, so no logged model holds one: 400, not a failed query.
    if out.model.as_deref().is_some_and(|m| m.contains('\0')) {
        errs.add("model", "must not contain NUL characters");
    }
    if let Some(s) = q.get("status").filter(|s| !s.is_empty()) {
        match s.parse::<i16>() {
            Ok(s) if (100..=599).contains(&s) => out.status = Some(s),
            _ => errs.add("status", "must be an HTTP status code"),
        }
    }
    if let Some(c) = q.get("cache").filter(|c| !c.is_empty()) {
        match CacheResult::parse(c) {
            Some(c) => out.cache = Some(c),
            None => errs.add("cache", "must be hit, miss or bypass"),
        }
    }
    for (field, slot) in [("from", &mut out.from), ("to", &mut out.to)] {
        if let Some(raw) = q.get(field).filter(|s| !s.is_empty()) {
            match parse_time(field, raw) {
                Ok(t) => *slot = Some(t),
                Err(_) => errs.add(field, "must be an RFC 3339 timestamp"),
            }
        }
    }
    if let (Some(f), Some(t)) = (out.from, out.to) {
        if f >= t {
            errs.add("from", "must be before to");
        }
    }
    errs.into_result()?;
    Ok(out)
}

/// Logs of the workspace, newest first, a page at a time: follow `next_cursor` for
/// older rows and `prev_cursor` for newer ones.
#[utoipa::path(get, path = "/workspaces/{id}/logs", tag = "logs", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id"),
           ("limit" = Option<u32>, Query, minimum = 1, maximum = 200,
             description = "rows per page, 1 to 200 (default 50)"),
           ("cursor" = Option<String>, Query, max_length = 64, description = "an earlier answer's `next_cursor` \
             (the page of older rows) or `prev_cursor` (the page of newer rows); opaque; \
             absent: the newest rows. Works with any filter; not with `page` (400)"),
           ("count" = Option<bool>, Query, description = "true: count every row the filters \
             match into `total` (a scan of the whole filtered set); otherwise `total` is \
             null (with `page`: counted unless false)"),
           ("page" = Option<u32>, Query, deprecated, minimum = 1, maximum = 1000000, description = "deprecated, to be removed: \
             page number from 1 (offset paging); use `cursor`"),
           ("api_key_id" = Option<String>, Query, description = "API key id (a revoked or \
             deleted key's rows stay listed under its id)"),
           ("provider" = Option<String>, Query, description = "provider entry id"),
           ("model" = Option<String>, Query, description = "requested model"),
           ("status" = Option<i16>, Query, description = "HTTP status sent to the client"),
           ("cache" = Option<String>, Query, pattern = "^(hit|miss|bypass)$",
             description = "what the response cache did: hit, miss or bypass"),
           ("from" = Option<String>, Query, description = "RFC 3339, inclusive"),
           ("to" = Option<String>, Query, description = "RFC 3339, exclusive")),
    responses((status = 200, body = LogPageDto), (status = 400, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)))]
pub async fn list(
    Conn(client): Conn,
    member: Member,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<LogPageDto>, ApiError> {
    let ws = &member.workspace;
    let query = parse_query(ws.id, &q)?;
    let page = db::logs::list(&client, &query).await?;
    Ok(Json(LogPageDto {
        data: page.rows.into_iter().map(Into::into).collect(),
        limit: query.limit,
        next_cursor: page.older.map(cursor::older),
        prev_cursor: page.newer.map(cursor::newer),
        total: page.total,
        page: match query.paging {
            LogPaging::Page(n) => Some(n),
            _ => None,
        },
    }))
}
