//! Usage of a workspace from the hourly counters: totals with a time series, and a
//! breakdown by provider entry and model.

use std::collections::HashMap;

use axum::extract::Query;
use axum::Json;
use perpetuo_core::db;
use perpetuo_core::db::usage::{Granularity, Totals};
use serde::Serialize;
use time::{Duration, OffsetDateTime};
use utoipa::ToSchema;
use uuid::Uuid;

use super::dto::{parse_time, usd};
use crate::access::Member;
use crate::error::{ApiError, FieldErrors};
use crate::extract::Conn;

const DEFAULT_RANGE_DAYS: i64 = 30;
const MAX_RANGE_DAYS: i64 = 400;

#[derive(Debug, Serialize, ToSchema)]
pub struct TotalsDto {
    pub requests: i64,
    pub errors: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub cost_usd: f64,
    /// Requests answered from the response cache (counted in `requests`; their tokens and
    /// cost are not in the fields above, which count what providers served).
    pub cache_hits: i64,
    /// The tokens of the answers the cache served.
    pub cache_hit_tokens: i64,
    /// What the providers would have charged for the cache hits, USD.
    pub cache_saved_usd: f64,
}

impl From<Totals> for TotalsDto {
    fn from(t: Totals) -> Self {
        Self {
            requests: t.requests,
            errors: t.errors,
            prompt_tokens: t.prompt_tokens,
            completion_tokens: t.completion_tokens,
            total_tokens: t.total_tokens,
            cost_usd: usd(t.cost_nusd),
            cache_hits: t.cache_hits,
            cache_hit_tokens: t.cache_hit_tokens,
            cache_saved_usd: usd(t.cache_saved_nusd),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SeriesPoint {
    /// Start of the hour or day (UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub bucket: OffsetDateTime,
    #[serde(flatten)]
    pub totals: TotalsDto,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageDto {
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub to: OffsetDateTime,
    /// hour for ranges up to two days, day beyond.
    pub granularity: String,
    pub totals: TotalsDto,
    pub series: Vec<SeriesPoint>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderUsageDto {
    pub provider_id: Option<Uuid>,
    pub provider_name: Option<String>,
    pub provider_kind: Option<String>,
    pub model: String,
    #[serde(flatten)]
    pub totals: TotalsDto,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ByProviderDto {
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub to: OffsetDateTime,
    pub data: Vec<ProviderUsageDto>,
}

fn parse_range(q: &HashMap<String, String>) -> Result<(OffsetDateTime, OffsetDateTime), ApiError> {
    let mut errs = FieldErrors::default();
    let now = OffsetDateTime::now_utc();
    let mut get = |field: &str| match q.get(field).filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => parse_time(field, raw)
            .map_err(|_| errs.add(field, "must be an RFC 3339 timestamp"))
            .ok(),
    };
    let to = get("to");
    let from = get("from");
    let to = to.unwrap_or(now);
    let from = from.unwrap_or(to - Duration::days(DEFAULT_RANGE_DAYS));
    if from >= to {
        errs.add("from", "must be before to");
    } else if to - from > Duration::days(MAX_RANGE_DAYS) {
        errs.add(
            "from",
            format!("range must be at most {MAX_RANGE_DAYS} days"),
        );
    }
    errs.into_result()?;
    Ok((from, to))
}

/// Totals and a time series for `[from, to)` (default: the last 30 days).
#[utoipa::path(get, path = "/workspaces/{id}/usage", tag = "usage", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id"),
           ("from" = Option<String>, Query, description = "RFC 3339, inclusive"),
           ("to" = Option<String>, Query, description = "RFC 3339, exclusive")),
    responses((status = 200, body = UsageDto), (status = 400, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)))]
pub async fn summary(
    Conn(client): Conn,
    member: Member,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<UsageDto>, ApiError> {
    let ws = &member.workspace;
    let (from, to) = parse_range(&q)?;
    let g = Granularity::for_range(from, to);
    let totals = db::usage::totals(&client, ws.id, from, to).await?;
    let series = db::usage::series(&client, ws.id, from, to, g).await?;
    Ok(Json(UsageDto {
        from,
        to,
        granularity: g.as_str().to_string(),
        totals: totals.into(),
        series: series
            .into_iter()
            .map(|(bucket, t)| SeriesPoint {
                bucket,
                totals: t.into(),
            })
            .collect(),
    }))
}

/// Usage by provider entry and model for `[from, to)`.
#[utoipa::path(get, path = "/workspaces/{id}/usage/by-provider", tag = "usage", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id"),
           ("from" = Option<String>, Query, description = "RFC 3339, inclusive"),
           ("to" = Option<String>, Query, description = "RFC 3339, exclusive")),
    responses((status = 200, body = ByProviderDto), (status = 400, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)))]
pub async fn by_provider(
    Conn(client): Conn,
    member: Member,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<ByProviderDto>, ApiError> {
    let ws = &member.workspace;
    let (from, to) = parse_range(&q)?;
    let rows = db::usage::by_provider(&client, ws.id, from, to).await?;
    Ok(Json(ByProviderDto {
        from,
        to,
        data: rows
            .into_iter()
            .map(|r| ProviderUsageDto {
                provider_id: r.provider_id,
                provider_name: r.provider_name,
                provider_kind: r.provider_kind,
                model: r.model,
                totals: r.totals.into(),
            })
            .collect(),
    }))
}
