//! `workspaces` and `workspace_members`: a workspace is only visible to its members; members
//! have roles, a workspace always keeps an owner, and a deleted workspace leaves a tombstone
//! until its logs and counters are purged.

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{DbError, Sql};

/// A member's role, from least to most power: the derived order is the order of power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads logs and usage.
    Viewer,
    /// A viewer who also creates and manages their own API keys.
    Member,
    /// Providers, every API key, limits, and members below owner.
    Admin,
    /// Everything, including deleting the workspace and transferring ownership.
    Owner,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Member, Role::Admin, Role::Owner];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A workspace as seen by one member.
#[derive(Debug, Clone)]
pub struct Workspace {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

fn from_row(row: &Row) -> Workspace {
    Workspace {
        id: row.get("id"),
        name: row.get("name"),
        // The column's CHECK admits only the four roles; anything else reads as the least.
        role: Role::parse(row.get("role")).unwrap_or(Role::Viewer),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    }
}

/// Creates a workspace and its owner membership; call inside a transaction.
pub async fn create(
    db: &impl GenericClient,
    name: &str,
    owner: Uuid,
) -> Result<Workspace, DbError> {
    let id = super::new_id();
    let row = db
        .traced_query_one(
            "WITH ws AS (
                 INSERT INTO workspaces (id, name) VALUES ($1, $2)
                 RETURNING id, name, created_at, updated_at
             ), m AS (
                 INSERT INTO workspace_members (workspace_id, user_id, role) VALUES ($1, $3, 'owner')
             )
             SELECT id, name, 'owner' AS role, created_at, updated_at FROM ws",
            &[&id, &name, &owner],
        )
        .await?;
    Ok(from_row(&row))
}

pub async fn list_for_user(db: &impl GenericClient, user: Uuid) -> Result<Vec<Workspace>, DbError> {
    let rows = db
        .traced_query(
            "SELECT w.id, w.name, m.role, w.created_at, w.updated_at
             FROM workspace_members m JOIN workspaces w ON w.id = m.workspace_id
             WHERE m.user_id = $1 ORDER BY m.created_at, w.id",
            &[&user],
        )
        .await?;
    Ok(rows.iter().map(from_row).collect())
}

/// The workspace if `user` is a member of it; `None` otherwise (also when it does not exist).
pub async fn get_for_user(
    db: &impl GenericClient,
    id: Uuid,
    user: Uuid,
) -> Result<Option<Workspace>, DbError> {
    let row = db
        .traced_query_opt(
            "SELECT w.id, w.name, m.role, w.created_at, w.updated_at
             FROM workspace_members m JOIN workspaces w ON w.id = m.workspace_id
             WHERE m.workspace_id = $1 AND m.user_id = $2",
            &[&id, &user],
        )
        .await?;
    Ok(row.as_ref().map(from_row))
}

/// How the entries of one priority share its traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RoutingStrategy {
    /// Smooth weighted round robin: over any window, each entry's share is its weight's.
    #[default]
    Weighted,
    /// Power of two choices on each entry's peak-EWMA time to first content and errors,
    /// weights as a prior.
    Latency,
}

impl RoutingStrategy {
    pub const ALL: [RoutingStrategy; 2] = [RoutingStrategy::Weighted, RoutingStrategy::Latency];

    pub fn as_str(self) -> &'static str {
        match self {
            RoutingStrategy::Weighted => "weighted",
            RoutingStrategy::Latency => "latency",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A workspace's routing settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Routing {
    pub strategy: RoutingStrategy,
    /// Requests of one conversation (or one `user`) go to the same entry while it is
    /// healthy, so the provider's own prompt cache keeps hitting.
    pub sticky: bool,
}

/// The workspace's routing settings (the defaults for a workspace that is gone).
pub async fn routing(db: &impl GenericClient, id: Uuid) -> Result<Routing, DbError> {
    let row = db
        .traced_query_opt(
            "SELECT routing_strategy, routing_sticky FROM workspaces WHERE id = $1",
            &[&id],
        )
        .await?;
    Ok(row
        .map(|r| Routing {
            strategy: RoutingStrategy::parse(r.get(0)).unwrap_or_default(),
            sticky: r.get(1),
        })
        .unwrap_or_default())
}

pub async fn set_routing(
    db: &impl GenericClient,
    id: Uuid,
    routing: Routing,
) -> Result<(), DbError> {
    db.traced_execute(
        "UPDATE workspaces SET routing_strategy = $2, routing_sticky = $3, updated_at = now()
         WHERE id = $1",
        &[&id, &routing.strategy.as_str(), &routing.sticky],
    )
    .await?;
    Ok(())
}

/// What the spans a workspace's requests export may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TracingSettings {
    /// Message content (`gen_ai.input.messages`, `gen_ai.output.messages`) in the spans:
    /// off unless the workspace opts in.
    pub capture_content: bool,
}

/// The workspace's tracing settings (the defaults for a workspace that is gone).
pub async fn tracing(db: &impl GenericClient, id: Uuid) -> Result<TracingSettings, DbError> {
    let row = db
        .traced_query_opt(
            "SELECT tracing_capture_content FROM workspaces WHERE id = $1",
            &[&id],
        )
        .await?;
    Ok(row
        .map(|r| TracingSettings {
            capture_content: r.get(0),
        })
        .unwrap_or_default())
}

pub async fn set_tracing(
    db: &impl GenericClient,
    id: Uuid,
    tracing: TracingSettings,
) -> Result<(), DbError> {
    db.traced_execute(
        "UPDATE workspaces SET tracing_capture_content = $2, updated_at = now() WHERE id = $1",
        &[&id, &tracing.capture_content],
    )
    .await?;
    Ok(())
}

/// Whether the gateways answer a workspace's requests from the response cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CacheMode {
    /// Nothing is looked up or stored.
    #[default]
    Off,
    /// Every cacheable request.
    On,
    /// Only the requests that ask for it (`Cache-Control: max-age=N`).
    OptIn,
}

impl CacheMode {
    pub const ALL: [CacheMode; 3] = [CacheMode::Off, CacheMode::On, CacheMode::OptIn];

    pub fn as_str(self) -> &'static str {
        match self {
            CacheMode::Off => "off",
            CacheMode::On => "on",
            CacheMode::OptIn => "opt_in",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// The longest an entry may live: 30 days (the column's CHECK says the same).
pub const MAX_CACHE_TTL_SECONDS: u32 = 2_592_000;

/// A workspace's response-cache settings, as the gateways read them with its entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    pub mode: CacheMode,
    /// How long a stored answer may serve, 1 to [`MAX_CACHE_TTL_SECONDS`].
    pub ttl_seconds: u32,
    /// Part of every cache key: bumping it leaves every stored entry unreachable.
    pub generation: i64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            mode: CacheMode::Off,
            ttl_seconds: 3600,
            generation: 0,
        }
    }
}

/// The workspace's cache settings (the defaults for a workspace that is gone).
pub async fn cache(db: &impl GenericClient, id: Uuid) -> Result<CacheSettings, DbError> {
    let row = db
        .traced_query_opt(
            "SELECT cache_mode, cache_ttl_seconds, cache_generation FROM workspaces WHERE id = $1",
            &[&id],
        )
        .await?;
    Ok(row
        .map(|r| CacheSettings {
            mode: CacheMode::parse(r.get(0)).unwrap_or_default(),
            ttl_seconds: u32::try_from(r.get::<_, i32>(1))
                .unwrap_or(CacheSettings::default().ttl_seconds),
            generation: r.get(2),
        })
        .unwrap_or_default())
}

/// Sets the mode and the entries' time to live (the generation is [`purge_cache`]'s).
pub async fn set_cache(
    db: &impl GenericClient,
    id: Uuid,
    mode: CacheMode,
    ttl_seconds: u32,
) -> Result<(), DbError> {
    let ttl = i32::try_from(ttl_seconds.min(MAX_CACHE_TTL_SECONDS)).unwrap_or(i32::MAX);
    db.traced_execute(
        "UPDATE workspaces SET cache_mode = $2, cache_ttl_seconds = $3, updated_at = now()
         WHERE id = $1",
        &[&id, &mode.as_str(), &ttl],
    )
    .await?;
    Ok(())
}

/// Empties the workspace's cache in every gateway: bumps its generation (gateways hear
/// of it through the change notification) and returns the new one (0 for a workspace that
/// is gone: it has nothing cached).
pub async fn purge_cache(db: &impl GenericClient, id: Uuid) -> Result<i64, DbError> {
    let row = db
        .traced_query_opt(
            "UPDATE workspaces SET cache_generation = cache_generation + 1 WHERE id = $1
             RETURNING cache_generation",
            &[&id],
        )
        .await?;
    Ok(row.map_or(0, |r| r.get(0)))
}

pub async fn rename(db: &impl GenericClient, id: Uuid, name: &str) -> Result<(), DbError> {
    db.traced_execute(
        "UPDATE workspaces SET name = $2, updated_at = now() WHERE id = $1",
        &[&id, &name],
    )
    .await?;
    Ok(())
}

/// One member of a workspace.
#[derive(Debug, Clone)]
pub struct MemberRow {
    pub user_id: Uuid,
    pub email: String,
    pub role: Role,
    pub joined_at: OffsetDateTime,
}

fn member_from_row(row: &Row) -> MemberRow {
    MemberRow {
        user_id: row.get("user_id"),
        email: row.get("email"),
        role: Role::parse(row.get("role")).unwrap_or(Role::Viewer),
        joined_at: row.get("created_at"),
    }
}

pub async fn members(db: &impl GenericClient, workspace: Uuid) -> Result<Vec<MemberRow>, DbError> {
    let rows = db
        .traced_query(
            "SELECT m.user_id, u.email, m.role, m.created_at
             FROM workspace_members m JOIN users u ON u.id = m.user_id
             WHERE m.workspace_id = $1 ORDER BY m.created_at, u.email",
            &[&workspace],
        )
        .await?;
    Ok(rows.iter().map(member_from_row).collect())
}

/// The member row, locked for the rest of the transaction.
pub async fn member_for_update(
    db: &impl GenericClient,
    workspace: Uuid,
    user: Uuid,
) -> Result<Option<MemberRow>, DbError> {
    let row = db
        .traced_query_opt(
            "SELECT m.user_id, u.email, m.role, m.created_at
             FROM workspace_members m JOIN users u ON u.id = m.user_id
             WHERE m.workspace_id = $1 AND m.user_id = $2 FOR UPDATE OF m",
            &[&workspace, &user],
        )
        .await?;
    Ok(row.as_ref().map(member_from_row))
}

/// Adds `user` with `role`; a user who is already a member keeps the higher of the two.
pub async fn add_member(
    db: &impl GenericClient,
    workspace: Uuid,
    user: Uuid,
    role: Role,
) -> Result<(), DbError> {
    let current = db
        .traced_query_opt(
            "SELECT role FROM workspace_members WHERE workspace_id = $1 AND user_id = $2",
            &[&workspace, &user],
        )
        .await?
        .and_then(|r| Role::parse(r.get(0)));
    match current {
        Some(existing) if existing >= role => {}
        Some(_) => set_role(db, workspace, user, role).await?,
        None => {
            db.traced_execute(
                "INSERT INTO workspace_members (workspace_id, user_id, role) VALUES ($1, $2, $3)",
                &[&workspace, &user, &role.as_str()],
            )
            .await?;
        }
    }
    Ok(())
}

pub async fn set_role(
    db: &impl GenericClient,
    workspace: Uuid,
    user: Uuid,
    role: Role,
) -> Result<(), DbError> {
    db.traced_execute(
        "UPDATE workspace_members SET role = $3 WHERE workspace_id = $1 AND user_id = $2",
        &[&workspace, &user, &role.as_str()],
    )
    .await?;
    Ok(())
}

pub async fn remove_member(
    db: &impl GenericClient,
    workspace: Uuid,
    user: Uuid,
) -> Result<bool, DbError> {
    let n = db
        .traced_execute(
            "DELETE FROM workspace_members WHERE workspace_id = $1 AND user_id = $2",
            &[&workspace, &user],
        )
        .await?;
    Ok(n == 1)
}

/// Owners of the workspace, locking their rows so that two concurrent demotions cannot
/// both see another owner remaining.
pub async fn lock_owners(db: &impl GenericClient, workspace: Uuid) -> Result<Vec<Uuid>, DbError> {
    let rows = db
        .traced_query(
            "SELECT user_id FROM workspace_members
             WHERE workspace_id = $1 AND role = 'owner' ORDER BY user_id FOR UPDATE",
            &[&workspace],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Deletes a workspace: every API key is revoked first (gateways hear of it through the
/// same notification as any revocation), then the row goes with its members, providers,
/// keys and invitations. Logs, usage counters and audit entries stay, named by a
/// tombstone, until [`purge_deleted`]. Call inside a transaction. Returns the number of
/// keys revoked.
pub async fn delete(db: &impl GenericClient, id: Uuid, deleted_by: Uuid) -> Result<u64, DbError> {
    let revoked = db
        .traced_execute(
            "UPDATE api_keys SET revoked_at = now() WHERE workspace_id = $1 AND revoked_at IS NULL",
            &[&id],
        )
        .await?;
    db.traced_execute(
        "INSERT INTO deleted_workspaces (id, name, deleted_by)
         SELECT id, name, $2 FROM workspaces WHERE id = $1",
        &[&id, &deleted_by],
    )
    .await?;
    db.traced_execute("DELETE FROM workspaces WHERE id = $1", &[&id])
        .await?;
    Ok(revoked)
}

/// What one purge removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub workspaces: u64,
    pub log_rows: u64,
    pub counter_rows: u64,
    pub audit_rows: u64,
}

/// Drops the logs, usage counters and audit entries of workspaces deleted before
/// `cutoff`, then their tombstones. At most `batch` workspaces per call.
pub async fn purge_deleted(
    db: &impl GenericClient,
    cutoff: OffsetDateTime,
    batch: i64,
) -> Result<Purged, DbError> {
    let ids: Vec<Uuid> = db
        .traced_query(
            "SELECT id FROM deleted_workspaces WHERE deleted_at < $1 ORDER BY deleted_at LIMIT $2",
            &[&cutoff, &batch],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if ids.is_empty() {
        return Ok(Purged::default());
    }
    let log_rows = db
        .traced_execute(
            "DELETE FROM request_logs WHERE workspace_id = ANY($1)",
            &[&ids],
        )
        .await?;
    let counter_rows = db
        .traced_execute(
            "DELETE FROM usage_counters WHERE workspace_id = ANY($1)",
            &[&ids],
        )
        .await?;
    db.traced_execute(
        "DELETE FROM usage_rollup WHERE workspace_id = ANY($1)",
        &[&ids],
    )
    .await?;
    let audit_rows = db
        .traced_execute(
            "DELETE FROM audit_log WHERE workspace_id = ANY($1)",
            &[&ids],
        )
        .await?;
    let workspaces = db
        .traced_execute("DELETE FROM deleted_workspaces WHERE id = ANY($1)", &[&ids])
        .await?;
    Ok(Purged {
        workspaces,
        log_rows,
        counter_rows,
        audit_rows,
    })
}

/// A user's membership as the admin API checks it on every workspace route.
#[derive(Debug, Clone)]
pub struct Membership {
    pub workspace: Workspace,
    pub email: String,
    pub email_verified: bool,
}

/// The workspace with `user`'s role, email and verification; `None` if not a member.
pub async fn membership(
    db: &impl GenericClient,
    id: Uuid,
    user: Uuid,
) -> Result<Option<Membership>, DbError> {
    let row = db
        .traced_query_opt(
            "SELECT w.id, w.name, m.role, w.created_at, w.updated_at, u.email,
                    u.email_verified_at IS NOT NULL AS email_verified
             FROM workspace_members m
             JOIN workspaces w ON w.id = m.workspace_id
             JOIN users u ON u.id = m.user_id
             WHERE m.workspace_id = $1 AND m.user_id = $2",
            &[&id, &user],
        )
        .await?;
    Ok(row.map(|r| Membership {
        workspace: from_row(&r),
        email: r.get("email"),
        email_verified: r.get("email_verified"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::api_keys::KeyCacheMode;
    use crate::testing::TestDb;

    #[test]
    fn modes_read_back_what_they_write_and_a_key_overrides_its_workspace() {
        for m in CacheMode::ALL {
            assert_eq!(CacheMode::parse(m.as_str()), Some(m));
        }
        for m in KeyCacheMode::ALL {
            assert_eq!(KeyCacheMode::parse(m.as_str()), Some(m));
        }
        assert_eq!(CacheMode::parse("inherit"), None);
        use CacheMode::{Off, On, OptIn};
        for ws in CacheMode::ALL {
            assert_eq!(KeyCacheMode::Inherit.resolve(ws), ws);
            assert_eq!(KeyCacheMode::Off.resolve(ws), Off);
            assert_eq!(KeyCacheMode::On.resolve(ws), On);
            assert_eq!(KeyCacheMode::OptIn.resolve(ws), OptIn);
        }
    }

    #[tokio::test]
    async fn cache_settings_round_trip_and_a_purge_bumps_the_generation() {
        let db = TestDb::new().await.unwrap();
        let client = db.pool.get().await.unwrap();
        let id = crate::db::new_id();
        client
            .traced_execute("INSERT INTO workspaces (id, name) VALUES ($1, 'w')", &[&id])
            .await
            .unwrap();
        assert_eq!(cache(&client, id).await.unwrap(), CacheSettings::default());
        set_cache(&client, id, CacheMode::OptIn, MAX_CACHE_TTL_SECONDS)
            .await
            .unwrap();
        assert_eq!(purge_cache(&client, id).await.unwrap(), 1);
        assert_eq!(purge_cache(&client, id).await.unwrap(), 2);
        assert_eq!(
            cache(&client, id).await.unwrap(),
            CacheSettings {
                mode: CacheMode::OptIn,
                ttl_seconds: MAX_CACHE_TTL_SECONDS,
                generation: 2,
            }
        );
        let gone = crate::db::new_id();
        assert_eq!(
            cache(&client, gone).await.unwrap(),
            CacheSettings::default()
        );
        assert_eq!(purge_cache(&client, gone).await.unwrap(), 0);
    }
}
