//! Limits per API key and per workspace (columns of `api_keys` and `workspaces`), and the
//! spend of a budget period summed from `usage_counters`. Gateways load limits with the
//! key; the admin API reads and writes them here.

use deadpool_postgres::GenericClient;
use time::{Date, Duration, OffsetDateTime, Time, UtcOffset};
use tokio_postgres::Row;
use uuid::Uuid;

use super::api_keys::KeyCacheMode;
use super::workspaces::Role;
use super::{DbError, Sql};

/// A budget's calendar period, in UTC. Weeks start on Monday.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Period {
    Day,
    Week,
    #[default]
    Month,
}

impl Period {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "day" => Some(Period::Day),
            "week" => Some(Period::Week),
            "month" => Some(Period::Month),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }

    /// The start of the period holding `t`.
    pub fn start(self, t: OffsetDateTime) -> OffsetDateTime {
        let d = t.to_offset(UtcOffset::UTC).date();
        let first = match self {
            Period::Day => d,
            Period::Week => d - Duration::days(i64::from(d.weekday().number_days_from_monday())),
            Period::Month => d.replace_day(1).unwrap_or(d),
        };
        first.with_time(Time::MIDNIGHT).assume_utc()
    }

    /// The start of the next period after the one holding `t`.
    pub fn end(self, t: OffsetDateTime) -> OffsetDateTime {
        let start = self.start(t);
        match self {
            Period::Day => start + Duration::days(1),
            Period::Week => start + Duration::weeks(1),
            Period::Month => {
                let d = start.date();
                let (y, m) = (d.year(), d.month());
                let (y, m) = if m == time::Month::December {
                    (y + 1, time::Month::January)
                } else {
                    (y, m.next())
                };
                Date::from_calendar_date(y, m, 1)
                    .map(|d| d.with_time(Time::MIDNIGHT).assume_utc())
                    .unwrap_or(start + Duration::days(31))
            }
        }
    }
}

/// Optional limits; `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    pub concurrency: Option<u32>,
    pub budget_nusd: Option<i64>,
    pub budget_period: Period,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.rpm.is_none()
            && self.tpm.is_none()
            && self.concurrency.is_none()
            && self.budget_nusd.is_none()
    }
}

/// The columns holding `Limits`, in both tables.
pub const COLUMNS: &str = "rpm_limit, tpm_limit, concurrency_limit, budget_nusd, budget_period";

fn positive(v: Option<i32>) -> Option<u32> {
    v.and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0)
}

/// Reads `COLUMNS` from a row.
pub fn from_row(row: &Row) -> Limits {
    Limits {
        rpm: positive(row.get("rpm_limit")),
        tpm: positive(row.get("tpm_limit")),
        concurrency: positive(row.get("concurrency_limit")),
        budget_nusd: row.get("budget_nusd"),
        budget_period: Period::parse(row.get("budget_period")).unwrap_or_default(),
    }
}

fn as_i32(v: Option<u32>) -> Option<i32> {
    v.map(|n| i32::try_from(n).unwrap_or(i32::MAX))
}

/// A workspace's limits (`None` when it does not exist).
pub async fn workspace(db: &impl GenericClient, id: Uuid) -> Result<Option<Limits>, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM workspaces WHERE id = $1");
    let row = db.traced_query_opt(&sql, &[&id]).await?;
    Ok(row.as_ref().map(from_row))
}

pub async fn set_workspace(db: &impl GenericClient, id: Uuid, l: &Limits) -> Result<(), DbError> {
    db.traced_execute(
        "UPDATE workspaces SET rpm_limit = $2, tpm_limit = $3, concurrency_limit = $4,
             budget_nusd = $5, budget_period = $6, updated_at = now()
         WHERE id = $1",
        &[
            &id,
            &as_i32(l.rpm),
            &as_i32(l.tpm),
            &as_i32(l.concurrency),
            &l.budget_nusd,
            &l.budget_period.as_str(),
        ],
    )
    .await?;
    Ok(())
}

/// What an admin may change on a key besides its name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySettings {
    pub limits: Limits,
    pub allowed_models: Vec<String>,
    pub expires_at: Option<OffsetDateTime>,
    pub label: Option<String>,
    pub owner_email: Option<String>,
    pub cache_mode: KeyCacheMode,
}

/// The settings of a key that an admin governs: a member may change only those a
/// member set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Governed {
    Limits,
    AllowedModels,
    ExpiresAt,
    CacheMode,
}

impl Governed {
    pub const ALL: [Governed; 4] = [
        Governed::Limits,
        Governed::AllowedModels,
        Governed::ExpiresAt,
        Governed::CacheMode,
    ];

    /// The field's name in the API.
    pub fn field(self) -> &'static str {
        match self {
            Governed::Limits => "limits",
            Governed::AllowedModels => "allowed_models",
            Governed::ExpiresAt => "expires_at",
            Governed::CacheMode => "cache_mode",
        }
    }
}

/// The role that last set each governed setting of a key (`None`: recorded for no one,
/// as for keys made before this was recorded; it counts as a member).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetBy {
    pub limits: Option<Role>,
    pub allowed_models: Option<Role>,
    pub expires_at: Option<Role>,
    pub cache_mode: Option<Role>,
}

impl SetBy {
    /// Every setting set by `role`.
    pub fn all(role: Role) -> Self {
        Self {
            limits: Some(role),
            allowed_models: Some(role),
            expires_at: Some(role),
            cache_mode: Some(role),
        }
    }

    pub fn get(&self, what: Governed) -> Option<Role> {
        match what {
            Governed::Limits => self.limits,
            Governed::AllowedModels => self.allowed_models,
            Governed::ExpiresAt => self.expires_at,
            Governed::CacheMode => self.cache_mode,
        }
    }

    pub fn set(&mut self, what: Governed, role: Role) {
        let slot = match what {
            Governed::Limits => &mut self.limits,
            Governed::AllowedModels => &mut self.allowed_models,
            Governed::ExpiresAt => &mut self.expires_at,
            Governed::CacheMode => &mut self.cache_mode,
        };
        *slot = Some(role);
    }
}

/// Replaces a key's settings and records who set the governed ones; `false` when the key
/// is not in the workspace.
pub async fn set_key(
    db: &impl GenericClient,
    workspace: Uuid,
    id: Uuid,
    s: &KeySettings,
    set_by: &SetBy,
) -> Result<bool, DbError> {
    let role = |r: Option<Role>| r.map(Role::as_str);
    let n = db
        .traced_execute(
            "UPDATE api_keys SET rpm_limit = $3, tpm_limit = $4, concurrency_limit = $5,
                 budget_nusd = $6, budget_period = $7, allowed_models = $8, expires_at = $9,
                 label = $10, owner_email = $11, limits_set_by = $12,
                 allowed_models_set_by = $13, expires_at_set_by = $14, cache_mode = $15,
                 cache_mode_set_by = $16
             WHERE workspace_id = $1 AND id = $2",
            &[
                &workspace,
                &id,
                &as_i32(s.limits.rpm),
                &as_i32(s.limits.tpm),
                &as_i32(s.limits.concurrency),
                &s.limits.budget_nusd,
                &s.limits.budget_period.as_str(),
                &s.allowed_models,
                &s.expires_at,
                &s.label,
                &s.owner_email,
                &role(set_by.limits),
                &role(set_by.allowed_models),
                &role(set_by.expires_at),
                &s.cache_mode.as_str(),
                &role(set_by.cache_mode),
            ],
        )
        .await?;
    Ok(n == 1)
}

/// Spend in nano-USD since `from`, of one key (`Some`) or of the whole workspace.
pub async fn spend_since(
    db: &impl GenericClient,
    workspace: Uuid,
    key: Option<Uuid>,
    from: OffsetDateTime,
) -> Result<i64, DbError> {
    let row = match key {
        Some(k) => {
            db.traced_query_one(
                "SELECT COALESCE(SUM(cost_nusd), 0)::bigint FROM usage_counters
                 WHERE api_key_id = $1 AND workspace_id = $2 AND bucket >= $3",
                &[&k, &workspace, &from],
            )
            .await?
        }
        None => {
            db.traced_query_one(
                "SELECT COALESCE(SUM(cost_nusd), 0)::bigint FROM usage_counters
                 WHERE workspace_id = $1 AND bucket >= $2",
                &[&workspace, &from],
            )
            .await?
        }
    };
    Ok(row.get(0))
}

/// A key's requests and tokens over the last minute, from its log rows (a cache hit's
/// tokens are not the TPM limit's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recent {
    pub requests: i64,
    pub tokens: i64,
}

pub async fn last_minute(
    db: &impl GenericClient,
    workspace: Uuid,
    key: Uuid,
) -> Result<Recent, DbError> {
    let row = db
        .traced_query_one(
            "SELECT count(*)::bigint,
                    COALESCE(SUM(total_tokens) FILTER (WHERE cache IS DISTINCT FROM 'hit'), 0)::bigint
             FROM request_logs
             WHERE workspace_id = $1 AND api_key_id = $2
               AND created_at >= now() - interval '1 minute'",
            &[&workspace, &key],
        )
        .await?;
    Ok(Recent {
        requests: row.get(0),
        tokens: row.get(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn periods_are_calendar_periods_in_utc() {
        let t = datetime!(2026-12-31 23:30 UTC); // a Thursday
        assert_eq!(Period::Day.start(t), datetime!(2026-12-31 0:00 UTC));
        assert_eq!(Period::Day.end(t), datetime!(2027-01-01 0:00 UTC));
        assert_eq!(Period::Week.start(t), datetime!(2026-12-28 0:00 UTC));
        assert_eq!(Period::Week.end(t), datetime!(2027-01-04 0:00 UTC));
        assert_eq!(Period::Month.start(t), datetime!(2026-12-01 0:00 UTC));
        assert_eq!(Period::Month.end(t), datetime!(2027-01-01 0:00 UTC));
        let other_zone = datetime!(2027-01-01 01:30 +02:00);
        assert_eq!(
            Period::Month.start(other_zone),
            datetime!(2026-12-01 0:00 UTC)
        );
    }
}
