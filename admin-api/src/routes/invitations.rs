//! Invitations to a workspace: an admin with a verified email invites an email with a
//! role; the invitee gets a single-use link (the token is stored hashed and expires after
//! 7 days), signs up or logs in with that address, and accepts — if the inviter may still
//! grant that role. Invitations are throttled per inviter and per workspace; a member
//! who leaves or is removed takes their pending invitations along.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use perpetuo_core::db::invitations::Invitation;
use perpetuo_core::db::workspaces::Role;
use perpetuo_core::db::{self, DbError};
use perpetuo_core::email::Email;
use perpetuo_core::token;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::dto::{ListOf, WorkspaceDto};
use super::members::parse_role;
use crate::access::{insufficient, snapshot, Member};
use crate::error::ApiError;
use crate::extract::{parse_id, ApiJson, AuthUser, ClientIp, Conn};
use crate::mail;
use crate::state::AppState;

/// Invitation tokens start with this, so a pasted token says what it is.
pub const TOKEN_PREFIX: &str = "ppi-";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvitationInput {
    #[schema(value_type = String, required = true)]
    pub email: Option<String>,
    /// admin, member or viewer (owner: only an owner may invite one).
    #[schema(value_type = String, required = true)]
    pub role: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationDto {
    pub id: Uuid,
    pub email: String,
    pub role: String,
    pub invited_by: Option<Uuid>,
    pub invited_by_email: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl From<Invitation> for InvitationDto {
    fn from(i: Invitation) -> Self {
        Self {
            id: i.id,
            email: i.email,
            role: i.role.as_str().to_string(),
            invited_by: i.invited_by,
            invited_by_email: i.invited_by_email,
            created_at: i.created_at,
            expires_at: i.expires_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedInvitation {
    #[serde(flatten)]
    pub invitation: InvitationDto,
    /// `sent` by SMTP, or `logged` when no SMTP server is configured.
    pub delivery: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptInput {
    /// The token from the invitation link.
    #[schema(value_type = String, required = true)]
    pub token: Option<String>,
}

/// Whether a member with role `inviter` may invite someone as `role`: admins and owners
/// invite, and only an owner invites an owner.
fn may_grant(inviter: Role, role: Role) -> bool {
    inviter >= Role::Admin && (role != Role::Owner || inviter == Role::Owner)
}

/// Invite someone by email; the link goes out by email (or to the log without SMTP).
/// A pending invitation to the same address is replaced. The inviter's email must be
/// verified (403 `email_unverified`, when verification is on), and invitations are
/// throttled per inviter and per workspace (`INVITATION_RATE_PER_INVITER`,
/// `INVITATION_RATE_PER_WORKSPACE`, per hour; 429 with `Retry-After`).
#[utoipa::path(post, path = "/workspaces/{id}/invitations", tag = "members", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id")), request_body = InvitationInput,
    responses((status = 201, body = CreatedInvitation), (status = 400, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody),
              (status = 503, body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    member: Member,
    Conn(mut client): Conn,
    ApiJson(body): ApiJson<InvitationInput>,
) -> Result<(StatusCode, Json<CreatedInvitation>), ApiError> {
    let ws = &member.workspace;
    member.require_verified(&state)?;
    let email = Email::parse(body.email.as_deref().unwrap_or_default())
        .map_err(|_| ApiError::field("email", "must be a valid email address"))?;
    let role = parse_role(body.role.as_deref())?;
    if !may_grant(member.role(), role) {
        return Err(insufficient(Role::Owner, member.role()));
    }
    let members = db::workspaces::members(&client, ws.id).await?;
    if members.iter().any(|m| m.email == email.as_str()) {
        return Err(ApiError::conflict(
            "already_member",
            "this address already belongs to a member of the workspace",
        ));
    }
    state
        .invitation_throttle
        .admit(member.user.id, ws.id)
        .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
    let token = token::generate(TOKEN_PREFIX);
    let tx = client.transaction().await.map_err(DbError::from)?;
    let invitation: InvitationDto = db::invitations::create(
        &tx,
        ws.id,
        email.as_str(),
        role,
        &token.hash,
        member.user.id,
    )
    .await?
    .into();
    let entry = member.audit(
        "member.invited",
        "invitation",
        invitation.id,
        None,
        snapshot(&invitation),
    );
    db::audit::record(&tx, &entry).await?;
    let link = format!(
        "{}/#/invite?token={}",
        state.public_url,
        token.plaintext.expose()
    );
    let message = mail::invitation(
        email.as_str(),
        &ws.name,
        &member.email,
        role.as_str(),
        &link,
    );
    // Sent before the commit: an invitation nobody received is not kept.
    let delivery = state
        .mailer
        .send(message)
        .await
        .map_err(|e| ApiError::Unavailable(format!("invitation email not sent: {e}")))?;
    tx.commit().await.map_err(DbError::from)?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedInvitation {
            invitation,
            delivery: match delivery {
                mail::Delivery::Sent => "sent",
                mail::Delivery::Logged => "logged",
            }
            .to_string(),
        }),
    ))
}

/// Pending invitations, newest first.
#[utoipa::path(get, path = "/workspaces/{id}/invitations", tag = "members", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 200, body = ListOf<InvitationDto>), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)))]
pub async fn list(
    member: Member,
    Conn(client): Conn,
) -> Result<Json<ListOf<InvitationDto>>, ApiError> {
    let rows = db::invitations::list_pending(&client, member.workspace.id).await?;
    Ok(Json(ListOf {
        data: rows.into_iter().map(Into::into).collect(),
    }))
}

/// Revoke a pending invitation; its link stops working.
#[utoipa::path(delete, path = "/workspaces/{id}/invitations/{iid}", tag = "members", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id"), ("iid" = String, Path, description = "invitation id")),
    responses((status = 204), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub async fn revoke(
    member: Member,
    Conn(mut client): Conn,
    Path((_id, iid)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let iid = parse_id(&iid)?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let revoked: InvitationDto = db::invitations::revoke(&tx, member.workspace.id, iid)
        .await?
        .ok_or(ApiError::NotFound)?
        .into();
    let entry = member.audit(
        "invitation.revoked",
        "invitation",
        iid,
        snapshot(&revoked),
        None,
    );
    db::audit::record(&tx, &entry).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Accept an invitation as the signed-in user, whose email must be the invited one.
/// Accepting also verifies that email: the link reached its mailbox. The inviter must
/// still be a member who may grant the role (403 `inviter_cannot_grant` otherwise).
#[utoipa::path(post, path = "/invitations/accept", tag = "members", security(("bearer" = [])),
    request_body = AcceptInput,
    responses((status = 200, body = WorkspaceDto), (status = 400, body = crate::error::ErrorBody),
              (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)))]
pub async fn accept(
    user: AuthUser,
    ip: ClientIp,
    Conn(mut client): Conn,
    ApiJson(body): ApiJson<AcceptInput>,
) -> Result<Json<WorkspaceDto>, ApiError> {
    let presented = body
        .token
        .ok_or_else(|| ApiError::field("token", "is required"))?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let invitation = db::invitations::pending_by_token(&tx, &token::hash(presented.trim()))
        .await?
        .ok_or_else(|| {
            ApiError::BadRequest(
                "invitation_invalid",
                "this invitation is unknown, expired, revoked or already used".into(),
            )
        })?;
    let account = db::users::get(&tx, user.id)
        .await?
        .ok_or(ApiError::Unauthorized(
            crate::error::AuthError::InvalidToken,
        ))?;
    if account.email != invitation.email {
        return Err(ApiError::forbidden(
            "invitation_email_mismatch",
            "this invitation is for another email address: sign in with the invited one",
        ));
    }
    // Locks the inviter's membership, so a concurrent demotion lands before or after.
    let inviter = match invitation.invited_by {
        Some(by) => db::workspaces::member_for_update(&tx, invitation.workspace_id, by).await?,
        None => None,
    };
    if !inviter.is_some_and(|i| may_grant(i.role, invitation.role)) {
        return Err(ApiError::forbidden(
            "inviter_cannot_grant",
            "whoever sent this invitation may no longer grant its role: ask an admin of the workspace for a new one",
        ));
    }
    db::workspaces::add_member(&tx, invitation.workspace_id, user.id, invitation.role).await?;
    db::invitations::mark_accepted(&tx, invitation.id, user.id).await?;
    db::users::mark_verified(&tx, user.id).await?;
    let entry = db::audit::NewEntry {
        workspace_id: Some(invitation.workspace_id),
        actor_id: Some(user.id),
        actor_email: Some(&account.email),
        ip: Some(ip.0),
        action: "invitation.accepted",
        target_type: Some("invitation"),
        target_id: Some(invitation.id.to_string()),
        before: None,
        after: Some(
            serde_json::json!({ "email": account.email, "role": invitation.role.as_str() }),
        ),
    };
    db::audit::record(&tx, &entry).await?;
    let ws = db::workspaces::get_for_user(&tx, invitation.workspace_id, user.id)
        .await?
        .ok_or(ApiError::NotFound)?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(ws.into()))
}
