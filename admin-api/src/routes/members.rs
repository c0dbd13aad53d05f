//! A workspace's members: list, change a role, remove, leave, transfer ownership. A member
//! who leaves, is removed or is made a viewer loses the API keys they created (revoked,
//! and named in the response: viewers hold none); one who leaves or is removed also loses
//! the invitations they sent; a workspace always keeps at least one owner.

use axum::extract::Path;
use axum::Json;
use perpetuo_core::db::workspaces::{MemberRow, Role};
use perpetuo_core::db::{self, DbError, Transaction};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::dto::ListOf;
use crate::access::Member;
use crate::error::ApiError;
use crate::extract::{parse_id, ApiJson, Conn};

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberDto {
    pub user_id: Uuid,
    pub email: String,
    /// owner, admin, member or viewer.
    pub role: String,
    #[serde(with = "time::serde::rfc3339")]
    pub joined_at: OffsetDateTime,
}

impl From<MemberRow> for MemberDto {
    fn from(m: MemberRow) -> Self {
        Self {
            user_id: m.user_id,
            email: m.email,
            role: m.role.as_str().to_string(),
            joined_at: m.joined_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleInput {
    /// owner, admin, member or viewer.
    #[schema(value_type = String, required = true)]
    pub role: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferInput {
    /// The member who becomes owner; the caller becomes admin.
    #[schema(value_type = String, required = true)]
    pub user_id: Option<String>,
}

/// An API key revoked because its creator left the workspace or became a viewer.
#[derive(Debug, Serialize, ToSchema)]
pub struct RevokedKeyDto {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
}

/// A member with a new role.
#[derive(Debug, Serialize, ToSchema)]
pub struct UpdatedMember {
    #[serde(flatten)]
    pub member: MemberDto,
    /// The API keys this member created here, revoked because the new role is viewer
    /// (empty otherwise); gateways stop accepting them within a second.
    pub revoked_api_keys: Vec<RevokedKeyDto>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RemovedMember {
    pub user_id: Uuid,
    /// The API keys this member created here, now revoked; gateways stop accepting them
    /// within a second.
    pub revoked_api_keys: Vec<RevokedKeyDto>,
    /// The pending invitations this member sent here, now revoked.
    pub revoked_invitations: Vec<Uuid>,
}

pub fn parse_role(raw: Option<&str>) -> Result<Role, ApiError> {
    let raw = raw.ok_or_else(|| ApiError::field("role", "is required"))?;
    Role::parse(raw.trim())
        .ok_or_else(|| ApiError::field("role", "must be owner, admin, member or viewer"))
}

fn last_owner() -> ApiError {
    ApiError::conflict(
        "last_owner",
        "a workspace keeps at least one owner: make another member owner first",
    )
}

/// Fails with 409 `last_owner` if `user` is the workspace's only owner.
async fn keep_an_owner(tx: &Transaction<'_>, workspace: Uuid, user: Uuid) -> Result<(), ApiError> {
    let owners = db::workspaces::lock_owners(tx, workspace).await?;
    if owners.iter().all(|o| *o == user) {
        return Err(last_owner());
    }
    Ok(())
}

/// Members of the workspace, by join date.
#[utoipa::path(get, path = "/workspaces/{id}/members", tag = "members", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 200, body = ListOf<MemberDto>), (status = 404, body = crate::error::ErrorBody)))]
pub async fn list(member: Member, Conn(client): Conn) -> Result<Json<ListOf<MemberDto>>, ApiError> {
    let rows = db::workspaces::members(&client, member.workspace.id).await?;
    Ok(Json(ListOf {
        data: rows.into_iter().map(Into::into).collect(),
    }))
}

/// Change a member's role. Admins manage roles below owner; only an owner makes or
/// unmakes owners; the last owner cannot be demoted (409 `last_owner`). Making someone a
/// viewer revokes the API keys they created here, in the same change.
#[utoipa::path(put, path = "/workspaces/{id}/members/{uid}", tag = "members", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id"), ("uid" = String, Path, description = "user id")),
    request_body = RoleInput,
    responses((status = 200, body = UpdatedMember), (status = 400, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
pub async fn update(
    member: Member,
    Conn(mut client): Conn,
    Path((_id, uid)): Path<(String, String)>,
    ApiJson(body): ApiJson<RoleInput>,
) -> Result<Json<UpdatedMember>, ApiError> {
    let ws = member.workspace.id;
    let uid = parse_id(&uid)?;
    let role = parse_role(body.role.as_deref())?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let target = db::workspaces::member_for_update(&tx, ws, uid)
        .await?
        .ok_or(ApiError::NotFound)?;
    if target.role == Role::Owner || role == Role::Owner {
        member.require(Role::Owner)?;
    }
    if target.role == Role::Owner && role != Role::Owner {
        keep_an_owner(&tx, ws, uid).await?;
    }
    db::workspaces::set_role(&tx, ws, uid, role).await?;
    // Viewers hold no keys.
    let revoked = if role == Role::Viewer {
        revoked_keys(db::api_keys::revoke_created_by(&tx, ws, uid).await?)
    } else {
        Vec::new()
    };
    let before = serde_json::json!({ "email": target.email, "role": target.role.as_str() });
    let mut after = serde_json::json!({ "email": target.email, "role": role.as_str() });
    if !revoked.is_empty() {
        after["revoked_api_keys"] = revoked.iter().map(|k| k.id.to_string()).collect();
    }
    let entry = member.audit(
        "member.role_changed",
        "user",
        uid,
        Some(before),
        Some(after),
    );
    db::audit::record(&tx, &entry).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(UpdatedMember {
        member: MemberDto {
            role: role.as_str().to_string(),
            ..MemberDto::from(target)
        },
        revoked_api_keys: revoked,
    }))
}

fn revoked_keys(keys: Vec<db::api_keys::ApiKey>) -> Vec<RevokedKeyDto> {
    keys.into_iter()
        .map(|k| RevokedKeyDto {
            id: k.id,
            name: k.name,
            prefix: k.prefix,
        })
        .collect()
}

/// Takes `target` out of the workspace with the keys they created and the invitations
/// they sent; records `action`.
async fn remove_member(
    member: &Member,
    tx: &Transaction<'_>,
    target: MemberRow,
    action: &str,
) -> Result<RemovedMember, ApiError> {
    let ws = member.workspace.id;
    if target.role == Role::Owner {
        keep_an_owner(tx, ws, target.user_id).await?;
    }
    let revoked = revoked_keys(db::api_keys::revoke_created_by(tx, ws, target.user_id).await?);
    let invitations = db::invitations::revoke_sent_by(tx, ws, target.user_id).await?;
    db::workspaces::remove_member(tx, ws, target.user_id).await?;
    let before = serde_json::json!({ "email": target.email, "role": target.role.as_str() });
    let after = serde_json::json!({
        "revoked_api_keys": revoked.iter().map(|k| k.id).collect::<Vec<_>>(),
        "revoked_invitations": invitations,
    });
    let entry = member.audit(action, "user", target.user_id, Some(before), Some(after));
    db::audit::record(tx, &entry).await?;
    Ok(RemovedMember {
        user_id: target.user_id,
        revoked_api_keys: revoked,
        revoked_invitations: invitations,
    })
}

/// Remove a member; the API keys they created and the invitations they sent are revoked.
/// Only an owner removes an owner, and never the last one.
#[utoipa::path(delete, path = "/workspaces/{id}/members/{uid}", tag = "members", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id"), ("uid" = String, Path, description = "user id")),
    responses((status = 200, body = RemovedMember), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn remove(
    member: Member,
    Conn(mut client): Conn,
    Path((_id, uid)): Path<(String, String)>,
) -> Result<Json<RemovedMember>, ApiError> {
    let uid = parse_id(&uid)?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let target = db::workspaces::member_for_update(&tx, member.workspace.id, uid)
        .await?
        .ok_or(ApiError::NotFound)?;
    if target.role == Role::Owner {
        member.require(Role::Owner)?;
    }
    let removed = remove_member(&member, &tx, target, "member.removed").await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(removed))
}

/// Leave the workspace; the API keys the caller created and the invitations they sent are
/// revoked. The last owner cannot leave (409 `last_owner`).
#[utoipa::path(post, path = "/workspaces/{id}/leave", tag = "members", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 200, body = RemovedMember), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
pub async fn leave(
    member: Member,
    Conn(mut client): Conn,
) -> Result<Json<RemovedMember>, ApiError> {
    let tx = client.transaction().await.map_err(DbError::from)?;
    let me = db::workspaces::member_for_update(&tx, member.workspace.id, member.user.id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let removed = remove_member(&member, &tx, me, "member.left").await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(removed))
}

/// Make another member the owner; the caller becomes admin.
#[utoipa::path(post, path = "/workspaces/{id}/transfer", tag = "members", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id")), request_body = TransferInput,
    responses((status = 200, body = ListOf<MemberDto>), (status = 400, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub async fn transfer(
    member: Member,
    Conn(mut client): Conn,
    ApiJson(body): ApiJson<TransferInput>,
) -> Result<Json<ListOf<MemberDto>>, ApiError> {
    let ws = member.workspace.id;
    let raw = body
        .user_id
        .ok_or_else(|| ApiError::field("user_id", "is required"))?;
    let uid =
        Uuid::parse_str(raw.trim()).map_err(|_| ApiError::field("user_id", "must be a user id"))?;
    if uid == member.user.id {
        return Err(ApiError::field(
            "user_id",
            "is already an owner: name another member",
        ));
    }
    let tx = client.transaction().await.map_err(DbError::from)?;
    let target = db::workspaces::member_for_update(&tx, ws, uid)
        .await?
        .ok_or_else(|| ApiError::field("user_id", "is not a member of this workspace"))?;
    db::workspaces::lock_owners(&tx, ws).await?;
    db::workspaces::set_role(&tx, ws, uid, Role::Owner).await?;
    db::workspaces::set_role(&tx, ws, member.user.id, Role::Admin).await?;
    let before =
        serde_json::json!({ "owner": member.email, "new_owner_role": target.role.as_str() });
    let after = serde_json::json!({ "owner": target.email, "previous_owner_role": "admin" });
    let entry = member.audit(
        "ownership.transferred",
        "user",
        uid,
        Some(before),
        Some(after),
    );
    db::audit::record(&tx, &entry).await?;
    let rows = db::workspaces::members(&tx, ws).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(ListOf {
        data: rows.into_iter().map(Into::into).collect(),
    }))
}
