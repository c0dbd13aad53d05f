//! `invitations`: a workspace's pending invitations. The token is stored as SHA-256 only,
//! works once, and expires; a new invitation to the same email replaces the pending one.

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use super::workspaces::Role;
use super::{DbError, Sql};

/// How long an invitation can be accepted.
pub const TTL_DAYS: i64 = 7;

#[derive(Debug, Clone)]
pub struct Invitation {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub email: String,
    pub role: Role,
    pub invited_by: Option<Uuid>,
    pub invited_by_email: Option<String>,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

const SELECT: &str = "SELECT i.id, i.workspace_id, i.email, i.role, i.invited_by, \
     u.email AS invited_by_email, i.created_at, i.expires_at \
     FROM invitations i LEFT JOIN users u ON u.id = i.invited_by";

fn from_row(row: &Row) -> Invitation {
    Invitation {
        id: row.get("id"),
        workspace_id: row.get("workspace_id"),
        email: row.get("email"),
        role: Role::parse(row.get("role")).unwrap_or(Role::Viewer),
        invited_by: row.get("invited_by"),
        invited_by_email: row.get("invited_by_email"),
        created_at: row.get("created_at"),
        expires_at: row.get("expires_at"),
    }
}

/// Creates an invitation, revoking a pending one to the same email. Call inside a
/// transaction.
pub async fn create(
    db: &impl GenericClient,
    workspace: Uuid,
    email: &str,
    role: Role,
    token_hash: &[u8; 32],
    invited_by: Uuid,
) -> Result<Invitation, DbError> {
    db.traced_execute(
        "UPDATE invitations SET revoked_at = now()
         WHERE workspace_id = $1 AND email = $2 AND accepted_at IS NULL AND revoked_at IS NULL",
        &[&workspace, &email],
    )
    .await?;
    let id = super::new_id();
    db.traced_execute(
        "INSERT INTO invitations (id, workspace_id, email, role, token_hash, invited_by, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, now() + $7::bigint * interval '1 day')",
        &[
            &id,
            &workspace,
            &email,
            &role.as_str(),
            &token_hash.as_slice(),
            &invited_by,
            &TTL_DAYS,
        ],
    )
    .await?;
    let row = db
        .traced_query_one(&format!("{SELECT} WHERE i.id = $1"), &[&id])
        .await?;
    Ok(from_row(&row))
}

/// Pending, unexpired invitations of a workspace, newest first.
pub async fn list_pending(
    db: &impl GenericClient,
    workspace: Uuid,
) -> Result<Vec<Invitation>, DbError> {
    let rows = db
        .traced_query(
            &format!(
                "{SELECT} WHERE i.workspace_id = $1 AND i.accepted_at IS NULL
                 AND i.revoked_at IS NULL AND i.expires_at > now()
                 ORDER BY i.created_at DESC, i.id DESC"
            ),
            &[&workspace],
        )
        .await?;
    Ok(rows.iter().map(from_row).collect())
}

/// Revokes a pending invitation; `None` if there is none with this id.
pub async fn revoke(
    db: &impl GenericClient,
    workspace: Uuid,
    id: Uuid,
) -> Result<Option<Invitation>, DbError> {
    let n = db
        .traced_execute(
            "UPDATE invitations SET revoked_at = now()
             WHERE workspace_id = $1 AND id = $2 AND accepted_at IS NULL AND revoked_at IS NULL",
            &[&workspace, &id],
        )
        .await?;
    if n == 0 {
        return Ok(None);
    }
    let row = db
        .traced_query_one(&format!("{SELECT} WHERE i.id = $1"), &[&id])
        .await?;
    Ok(Some(from_row(&row)))
}

/// Revokes the pending invitations `user` sent in the workspace (a member leaving or
/// removed); returns their ids.
pub async fn revoke_sent_by(
    db: &impl GenericClient,
    workspace: Uuid,
    user: Uuid,
) -> Result<Vec<Uuid>, DbError> {
    let rows = db
        .traced_query(
            "UPDATE invitations SET revoked_at = now()
             WHERE workspace_id = $1 AND invited_by = $2
               AND accepted_at IS NULL AND revoked_at IS NULL
             RETURNING id",
            &[&workspace, &user],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The pending, unexpired invitation with this token hash, locked until the end of the
/// transaction so that it is accepted once.
pub async fn pending_by_token(
    db: &impl GenericClient,
    token_hash: &[u8; 32],
) -> Result<Option<Invitation>, DbError> {
    let row = db
        .traced_query_opt(
            &format!(
                "{SELECT} WHERE i.token_hash = $1 AND i.accepted_at IS NULL
                 AND i.revoked_at IS NULL AND i.expires_at > now() FOR UPDATE OF i"
            ),
            &[&token_hash.as_slice()],
        )
        .await?;
    Ok(row.as_ref().map(from_row))
}

pub async fn mark_accepted(db: &impl GenericClient, id: Uuid, user: Uuid) -> Result<(), DbError> {
    db.traced_execute(
        "UPDATE invitations SET accepted_at = now(), accepted_by = $2 WHERE id = $1",
        &[&id, &user],
    )
    .await?;
    Ok(())
}
