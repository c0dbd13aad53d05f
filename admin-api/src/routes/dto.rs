//! Response bodies shared by several routes, and time (de)serialisation helpers.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use perpetuo_core::db::limits::{Limits, Period, SetBy};
use perpetuo_core::db::workspaces::{
    CacheMode, CacheSettings, Role, Routing, RoutingStrategy, TracingSettings,
    MAX_CACHE_TTL_SECONDS,
};
use perpetuo_core::db::{api_keys::ApiKey, users::User, workspaces::Workspace};

#[derive(Debug, Serialize, ToSchema)]
pub struct UserDto {
    pub id: Uuid,
    pub email: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Whether the owner of the address has confirmed it.
    pub email_verified: bool,
}

impl From<User> for UserDto {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            email: u.email,
            created_at: u.created_at,
            email_verified: u.email_verified_at.is_some(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkspaceDto {
    pub id: Uuid,
    pub name: String,
    /// The caller's role: owner, admin, member or viewer.
    pub role: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// The workspace's limits (shown by `GET`/`PUT`/`PATCH /workspaces/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsDto>,
    /// How the entries of one priority share its traffic (shown by
    /// `GET`/`PUT`/`PATCH /workspaces/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing: Option<RoutingDto>,
    /// The response cache (shown by `GET`/`PUT`/`PATCH /workspaces/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheDto>,
    /// What the exported trace spans may carry (shown by `GET`/`PUT`/`PATCH
    /// /workspaces/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingDto>,
}

/// A workspace's tracing settings, as answered and as set (a field left out keeps its
/// value).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TracingDto {
    /// Whether message content goes into the spans (`gen_ai.input.messages`,
    /// `gen_ai.output.messages`, size-capped). Default false.
    #[serde(default)]
    #[schema(value_type = bool)]
    pub capture_content: Option<bool>,
}

impl From<TracingSettings> for TracingDto {
    fn from(t: TracingSettings) -> Self {
        Self {
            capture_content: Some(t.capture_content),
        }
    }
}

impl TracingDto {
    /// `current` with the fields given.
    pub fn merge(&self, current: TracingSettings) -> TracingSettings {
        TracingSettings {
            capture_content: self.capture_content.unwrap_or(current.capture_content),
        }
    }
}

/// A workspace's response-cache settings, as answered.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CacheDto {
    /// `off` (nothing is cached), `on` (every cacheable request) or `opt_in` (only
    /// requests that ask with `Cache-Control: max-age=N`). A key's `cache_mode` may
    /// override it.
    #[schema(pattern = "^(off|on|opt_in)$")]
    pub mode: String,
    /// How long a stored answer may serve, in seconds.
    #[schema(minimum = 1, maximum = 2592000)]
    pub ttl_seconds: u32,
}

impl From<CacheSettings> for CacheDto {
    fn from(c: CacheSettings) -> Self {
        Self {
            mode: c.mode.as_str().to_string(),
            ttl_seconds: c.ttl_seconds,
        }
    }
}

/// Response-cache settings to change; a field left out keeps its value.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheInput {
    /// `off` (default), `on` or `opt_in`.
    #[schema(pattern = "^(off|on|opt_in)$")]
    pub mode: Option<String>,
    /// 1 to 2592000 (30 days); default 3600.
    #[schema(minimum = 1, maximum = 2592000)]
    pub ttl_seconds: Option<u64>,
}

impl CacheInput {
    /// `current` with the fields given; a bad one is named in `errs`.
    pub fn merge(
        &self,
        current: CacheSettings,
        errs: &mut crate::error::FieldErrors,
    ) -> CacheSettings {
        let mode = match self.mode.as_deref() {
            Some(m) => CacheMode::parse(m.trim()).unwrap_or_else(|| {
                errs.add("cache.mode", "must be off, on or opt_in");
                current.mode
            }),
            None => current.mode,
        };
        let ttl_seconds = match self.ttl_seconds {
            Some(t) => match u32::try_from(t) {
                Ok(t) if (1..=MAX_CACHE_TTL_SECONDS).contains(&t) => t,
                _ => {
                    errs.add(
                        "cache.ttl_seconds",
                        format!("must be an integer from 1 to {MAX_CACHE_TTL_SECONDS}"),
                    );
                    current.ttl_seconds
                }
            },
            None => current.ttl_seconds,
        };
        CacheSettings {
            mode,
            ttl_seconds,
            generation: current.generation,
        }
    }
}

/// A workspace's routing settings, as answered.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RoutingDto {
    /// `weighted` (each entry of a priority gets its weight's share, smooth weighted round
    /// robin) or `latency` (power of two choices on each entry's recent time to first
    /// content and errors, weights as a prior).
    pub strategy: String,
    /// Requests of one conversation (its system prompt and first message) or of one
    /// `user` go to the same entry of a priority while it is healthy.
    pub sticky: bool,
}

impl From<Routing> for RoutingDto {
    fn from(r: Routing) -> Self {
        Self {
            strategy: r.strategy.as_str().to_string(),
            sticky: r.sticky,
        }
    }
}

/// Routing settings to change; a field left out keeps its value.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoutingInput {
    /// `weighted` (default) or `latency`.
    #[schema(pattern = "^(weighted|latency)$")]
    pub strategy: Option<String>,
    /// Default false.
    pub sticky: Option<bool>,
}

impl RoutingInput {
    /// `current` with the fields given; a bad one is named in `errs`.
    pub fn merge(&self, current: Routing, errs: &mut crate::error::FieldErrors) -> Routing {
        let strategy = match self.strategy.as_deref() {
            Some(s) => RoutingStrategy::parse(s.trim()).unwrap_or_else(|| {
                errs.add("routing.strategy", "must be weighted or latency");
                current.strategy
            }),
            None => current.strategy,
        };
        Routing {
            strategy,
            sticky: self.sticky.unwrap_or(current.sticky),
        }
    }
}

impl From<Workspace> for WorkspaceDto {
    fn from(w: Workspace) -> Self {
        Self {
            id: w.id,
            name: w.name,
            role: w.role.as_str().to_string(),
            created_at: w.created_at,
            updated_at: w.updated_at,
            limits: None,
            routing: None,
            cache: None,
            tracing: None,
        }
    }
}

/// Optional limits of a key or a workspace; an absent or null field means no limit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsDto {
    /// Requests per minute.
    pub rpm: Option<u32>,
    /// Tokens (prompt + completion) per minute.
    pub tpm: Option<u32>,
    /// Requests in flight at once.
    pub max_concurrency: Option<u32>,
    /// Spend budget in USD per period, with a hard stop.
    pub budget_usd: Option<f64>,
    /// The budget's calendar period in UTC: `day`, `week` (from Monday) or `month` (default).
    pub budget_period: Option<String>,
}

/// Largest budget accepted, in USD: 10^15 nano-USD, so that every budget and spend the
/// gateways send to Redis stays an integer Lua holds exactly (below 2^53).
const MAX_BUDGET_USD: f64 = 1e6;

impl LimitsDto {
    /// Validates into `Limits`, reporting errors under `prefix.<field>`.
    pub fn parse(&self, prefix: &str, errs: &mut crate::error::FieldErrors) -> Limits {
        let count = |field: &str, v: Option<u32>, errs: &mut crate::error::FieldErrors| match v {
            Some(0) => {
                errs.add(
                    &format!("{prefix}.{field}"),
                    "must be at least 1 (null for no limit)",
                );
                None
            }
            Some(n) if n > i32::MAX as u32 => {
                errs.add(&format!("{prefix}.{field}"), "is too large");
                None
            }
            v => v,
        };
        let budget_nusd = match self.budget_usd {
            None => None,
            Some(b) if b.is_finite() && (0.0..=MAX_BUDGET_USD).contains(&b) => {
                Some((b * 1e9).round() as i64)
            }
            Some(_) => {
                errs.add(
                    &format!("{prefix}.budget_usd"),
                    "must be a number between 0 and 1000000",
                );
                None
            }
        };
        let budget_period = match self.budget_period.as_deref() {
            None => Period::Month,
            Some(p) => Period::parse(p).unwrap_or_else(|| {
                errs.add(
                    &format!("{prefix}.budget_period"),
                    "must be day, week or month",
                );
                Period::Month
            }),
        };
        Limits {
            rpm: count("rpm", self.rpm, errs),
            tpm: count("tpm", self.tpm, errs),
            concurrency: count("max_concurrency", self.max_concurrency, errs),
            budget_nusd,
            budget_period,
        }
    }
}

impl From<Limits> for LimitsDto {
    fn from(l: Limits) -> Self {
        Self {
            rpm: l.rpm,
            tpm: l.tpm,
            max_concurrency: l.concurrency,
            budget_usd: l.budget_nusd.map(usd),
            budget_period: Some(l.budget_period.as_str().to_string()),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyDto {
    pub id: Uuid,
    pub name: String,
    /// The first characters of the key, for recognising it.
    pub prefix: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    pub limits: LimitsDto,
    /// Exact model names and `prefix*` patterns; empty allows every model.
    pub allowed_models: Vec<String>,
    pub label: Option<String>,
    pub owner_email: Option<String>,
    /// The user who created the key (null once that account is gone).
    pub created_by: Option<Uuid>,
    pub created_by_email: Option<String>,
    /// The response-cache mode of requests through this key: `inherit` (the workspace's),
    /// `off`, `on` or `opt_in`.
    #[schema(pattern = "^(inherit|off|on|opt_in)$")]
    pub cache_mode: String,
    pub set_by: SetByDto,
}

/// The role (`owner`, `admin` or `member`) that last set each governed setting of a key.
/// A member may change only what a member set; null counts as a member.
#[derive(Debug, Serialize, ToSchema)]
pub struct SetByDto {
    pub limits: Option<String>,
    pub allowed_models: Option<String>,
    pub expires_at: Option<String>,
    pub cache_mode: Option<String>,
}

impl From<SetBy> for SetByDto {
    fn from(s: SetBy) -> Self {
        let name = |r: Option<Role>| r.map(|r| r.as_str().to_string());
        Self {
            limits: name(s.limits),
            allowed_models: name(s.allowed_models),
            expires_at: name(s.expires_at),
            cache_mode: name(s.cache_mode),
        }
    }
}

impl From<ApiKey> for ApiKeyDto {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id,
            name: k.name,
            prefix: k.prefix,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
            expires_at: k.expires_at,
            limits: k.limits.into(),
            allowed_models: k.allowed_models,
            label: k.label,
            owner_email: k.owner_email,
            created_by: k.created_by,
            created_by_email: k.created_by_email,
            cache_mode: k.cache_mode.as_str().to_string(),
            set_by: k.set_by.into(),
        }
    }
}

/// A list response: `{"data": [...]}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListOf<T> {
    pub data: Vec<T>,
}

/// Parses an RFC 3339 timestamp from a request field.
pub fn parse_time(field: &str, raw: &str) -> Result<OffsetDateTime, crate::error::ApiError> {
    OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
        .map_err(|_| crate::error::ApiError::field(field, "must be an RFC 3339 timestamp"))
}

/// nano-USD to USD.
pub fn usd(nusd: i64) -> f64 {
    nusd as f64 / 1e9
}
