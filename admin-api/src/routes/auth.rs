//! Accounts and admin sessions: sign-up (user + default workspace + owner membership +
//! default API key + session, atomically), login, refresh, logout, password change,
//! email verification, password reset and `me`. Credential routes are throttled per
//! client IP and per account before any password is hashed.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use perpetuo_core::db::{self, DbError};
use perpetuo_core::email::Email;
use perpetuo_core::{apikey, password, token};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::dto::{UserDto, WorkspaceDto};
use crate::accounts;
use crate::error::{ApiError, AuthError, FieldErrors};
use crate::extract::{ApiJson, AuthUser, ClientIp};
use crate::mail;
use crate::state::AppState;
use crate::throttle::Attempt;

/// Said for a sign-up whose email is taken: it names no account.
const SIGNUP_REFUSED: &str = "cannot create an account with this email; log in instead";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    #[schema(value_type = String, required = true)]
    pub email: Option<String>,
    #[schema(value_type = String, required = true)]
    pub password: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    #[schema(value_type = String, required = true)]
    pub refresh_token: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    #[schema(value_type = String, required = true)]
    pub current_password: Option<String>,
    #[schema(value_type = String, required = true)]
    pub new_password: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NewKeyDto {
    pub id: Uuid,
    /// The plaintext key; shown only in this response.
    pub key: String,
    pub prefix: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SignupResponse {
    /// Access token (JWT) for `Authorization: Bearer`.
    pub token: String,
    /// Opaque token for `POST /auth/refresh`; each use replaces it.
    pub refresh_token: String,
    pub user: UserDto,
    pub workspace: WorkspaceDto,
    /// The workspace's first API key; null when the email must be verified first.
    pub api_key: Option<NewKeyDto>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// Access token (JWT) for `Authorization: Bearer`.
    pub token: String,
    /// Opaque token for `POST /auth/refresh`; each use replaces it.
    pub refresh_token: String,
    pub user: UserDto,
}

/// A new access token and the refresh token that replaces the one presented.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionTokens {
    pub token: String,
    pub refresh_token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MeResponse {
    pub user: UserDto,
    pub workspaces: Vec<WorkspaceDto>,
}

fn check_password(errs: &mut FieldErrors, field: &str, value: Option<&str>, check_length: bool) {
    match value {
        None => errs.add(field, "is required"),
        Some(p) if check_length && p.chars().count() < password::MIN_LEN => errs.add(
            field,
            format!("must be at least {} characters", password::MIN_LEN),
        ),
        Some(p) if p.len() > password::MAX_LEN => errs.add(
            field,
            format!("must be at most {} bytes", password::MAX_LEN),
        ),
        Some(_) => {}
    }
}

pub(crate) fn parse_credentials(
    c: Credentials,
    check_length: bool,
) -> Result<(Email, String), ApiError> {
    let mut errs = FieldErrors::default();
    let email = match c.email.as_deref().map(Email::parse) {
        None => {
            errs.add("email", "is required");
            None
        }
        Some(Err(e)) => {
            errs.add(
                "email",
                e.to_string().trim_start_matches("email ").to_string(),
            );
            None
        }
        Some(Ok(e)) => Some(e),
    };
    check_password(&mut errs, "password", c.password.as_deref(), check_length);
    errs.into_result()?;
    match (email, c.password) {
        (Some(e), Some(p)) => Ok((e, p)),
        _ => Err(ApiError::internal("credentials validated without values")),
    }
}

/// Admits one credential attempt, or answers 429.
fn admit<'a>(state: &'a AppState, ip: ClientIp, account: &str) -> Result<Attempt<'a>, ApiError> {
    state
        .throttle
        .attempt(ip.0, account)
        .map_err(|retry_after| ApiError::RateLimited { retry_after })
}

/// Opens a session for `user` inside `db` (a transaction where the caller has one) and
/// issues its first tokens.
async fn open_session(
    state: &AppState,
    db: &impl db::GenericClient,
    user: Uuid,
) -> Result<SessionTokens, ApiError> {
    let refresh = db::sessions::new_refresh_token();
    let session = db::sessions::create(db, user, &refresh.hash, state.refresh_ttl_seconds).await?;
    let token = state.jwt.issue(user, session).map_err(ApiError::internal)?;
    Ok(SessionTokens {
        token,
        refresh_token: refresh.plaintext.expose().clone(),
    })
}

/// Create an account with its default workspace and a first API key. Answers 403
/// `signup_disabled` when the server runs with `SIGNUP_ENABLED=false` (see `GET /meta`).
#[utoipa::path(post, path = "/auth/signup", tag = "auth", request_body = Credentials,
    responses((status = 201, body = SignupResponse), (status = 400, body = crate::error::ErrorBody),
              (status = 403, description = "signup is disabled (`signup_disabled`)", body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody),
              (status = 503, body = crate::error::ErrorBody)))]
pub async fn signup(
    ip: ClientIp,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<(StatusCode, Json<SignupResponse>), ApiError> {
    if !state.signup_enabled {
        return Err(ApiError::forbidden(
            "signup_disabled",
            "signup is closed on this server; ask an administrator for an account",
        ));
    }
    let (email, pw) = parse_credentials(body, true)?;
    let attempt = admit(&state, ip, email.as_str())?;
    // Hashed before the email is looked at, so a taken email costs the same time.
    let hash = state.hasher.hash(pw).await?;
    let verified = !state.verification_required;
    let key = verified.then(apikey::generate);

    let mut client = state.pool.get().await.map_err(DbError::from)?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let (user, workspace) = match accounts::create(&tx, &email, &hash, verified).await {
        Ok(created) => created,
        Err(accounts::CreateError::EmailTaken) => {
            attempt.failed();
            return Err(ApiError::Conflict(SIGNUP_REFUSED.into()));
        }
        Err(accounts::CreateError::Db(e)) => return Err(e.into()),
    };
    let api_key = match &key {
        Some(key) => {
            let row =
                db::api_keys::insert(&tx, workspace.id, "Default key", key, Some(user.id), None)
                    .await?;
            Some(NewKeyDto {
                id: row.id,
                key: key.plaintext.expose().clone(),
                prefix: row.prefix,
            })
        }
        None => None,
    };
    let verification = if verified {
        None
    } else {
        db::users::claim_verification_send(&tx, user.id, 0).await?;
        Some(verification_token(&tx, user.id).await?)
    };
    let tokens = open_session(&state, &tx, user.id).await?;
    tx.commit().await.map_err(DbError::from)?;
    drop(attempt);
    if let Some(link) = verification {
        // The account exists either way; a failed send is logged and can be retried.
        send_verification(&state, &user.email, &link).await;
    }

    Ok((
        StatusCode::CREATED,
        Json(SignupResponse {
            token: tokens.token,
            refresh_token: tokens.refresh_token,
            user: user.into(),
            workspace: workspace.into(),
            api_key,
        }),
    ))
}

/// Exchange email and password for an access token and a refresh token.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = Credentials,
    responses((status = 200, body = LoginResponse), (status = 400, body = crate::error::ErrorBody),
              (status = 401, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody),
              (status = 503, body = crate::error::ErrorBody)))]
pub async fn login(
    ip: ClientIp,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<Json<LoginResponse>, ApiError> {
    let (email, pw) = parse_credentials(body, false)?;
    let attempt = admit(&state, ip, email.as_str())?;
    let client = state.pool.get().await.map_err(DbError::from)?;
    let found = db::users::find_by_email(&client, &email).await?;
    drop(client);
    let (user, phc) = match found {
        Some(u) => (Some(u.user), Some(u.password_hash)),
        None => (None, None),
    };
    // Unknown emails are verified against a dummy hash: same time, same answer.
    let ok = state.hasher.verify(pw, phc).await?;
    let user = match user {
        Some(user) if ok => user,
        found => {
            attempt.failed();
            if let Some(account) = found {
                record_account_event(&state, &account, ip, "auth.login_failed").await?;
            }
            return Err(ApiError::Unauthorized(AuthError::InvalidCredentials));
        }
    };
    drop(attempt);
    let mut client = state.pool.get().await.map_err(DbError::from)?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let tokens = open_session(&state, &tx, user.id).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(LoginResponse {
        token: tokens.token,
        refresh_token: tokens.refresh_token,
        user: user.into(),
    }))
}

/// Exchange a refresh token for a new access token and a new refresh token. A refresh
/// token works once: presenting it again revokes its session.
#[utoipa::path(post, path = "/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = SessionTokens), (status = 400, body = crate::error::ErrorBody),
              (status = 401, body = crate::error::ErrorBody)))]
pub async fn refresh(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Json<SessionTokens>, ApiError> {
    let presented = body
        .refresh_token
        .ok_or_else(|| ApiError::field("refresh_token", "is required"))?;
    let next = db::sessions::new_refresh_token();
    let mut client = state.pool.get().await.map_err(DbError::from)?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let rotation = db::sessions::rotate(
        &tx,
        &db::sessions::refresh_token_hash(&presented),
        &next.hash,
        state.refresh_ttl_seconds,
    )
    .await?;
    // Committed whatever the outcome: a detected reuse must stay revoked.
    tx.commit().await.map_err(DbError::from)?;
    match rotation {
        db::sessions::Rotation::Rotated { session, user } => Ok(Json(SessionTokens {
            token: state.jwt.issue(user, session).map_err(ApiError::internal)?,
            refresh_token: next.plaintext.expose().clone(),
        })),
        db::sessions::Rotation::Reused | db::sessions::Rotation::Invalid => {
            Err(ApiError::Unauthorized(AuthError::InvalidRefreshToken))
        }
    }
}

/// End the current session: its refresh token and every access token issued for it.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = crate::error::ErrorBody)))]
pub async fn logout(State(state): State<AppState>, user: AuthUser) -> Result<StatusCode, ApiError> {
    let client = state.pool.get().await.map_err(DbError::from)?;
    db::sessions::revoke(&client, user.session, user.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Change the password. Every session of the account ends, this one included; the
/// response carries the tokens of a new session.
#[utoipa::path(post, path = "/auth/password", tag = "auth", security(("bearer" = [])),
    request_body = PasswordChange,
    responses((status = 200, body = SessionTokens), (status = 400, body = crate::error::ErrorBody),
              (status = 401, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody),
              (status = 503, body = crate::error::ErrorBody)))]
pub async fn change_password(
    ip: ClientIp,
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<PasswordChange>,
) -> Result<Json<SessionTokens>, ApiError> {
    let mut errs = FieldErrors::default();
    check_password(
        &mut errs,
        "current_password",
        body.current_password.as_deref(),
        false,
    );
    check_password(
        &mut errs,
        "new_password",
        body.new_password.as_deref(),
        true,
    );
    errs.into_result()?;
    let (Some(current), Some(new)) = (body.current_password, body.new_password) else {
        return Err(ApiError::internal("passwords validated without values"));
    };

    let client = state.pool.get().await.map_err(DbError::from)?;
    let account = db::users::get(&client, user.id)
        .await?
        .ok_or(ApiError::Unauthorized(AuthError::InvalidToken))?;
    let phc = db::users::password_hash(&client, user.id).await?;
    drop(client);
    let attempt = admit(&state, ip, &account.email)?;
    if !state.hasher.verify(current, phc).await? {
        attempt.failed();
        return Err(ApiError::field("current_password", "is incorrect"));
    }
    drop(attempt);
    let hash = state.hasher.hash(new).await?;

    let mut client = state.pool.get().await.map_err(DbError::from)?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    db::users::set_password_hash(&tx, user.id, &hash).await?;
    db::sessions::revoke_all(&tx, user.id).await?;
    let tokens = open_session(&state, &tx, user.id).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(tokens))
}

/// The caller and the workspaces they belong to.
#[utoipa::path(get, path = "/auth/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = MeResponse), (status = 401, body = crate::error::ErrorBody)))]
pub async fn me(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<MeResponse>, ApiError> {
    let client = state.pool.get().await.map_err(DbError::from)?;
    let found = db::users::get(&client, user.id)
        .await?
        .ok_or(ApiError::Unauthorized(AuthError::InvalidToken))?;
    let workspaces = db::workspaces::list_for_user(&client, user.id).await?;
    Ok(Json(MeResponse {
        user: found.into(),
        workspaces: workspaces.into_iter().map(Into::into).collect(),
    }))
}

/// Verification tokens start with this, so a pasted token says what it is.
const VERIFY_PREFIX: &str = "ppv-";
/// Password-reset tokens start with this.
const RESET_PREFIX: &str = "ppr-reset-";
/// How long a verification link works.
const VERIFY_TTL_SECONDS: i64 = 48 * 3600;
/// How long a password-reset link works.
const RESET_TTL_SECONDS: i64 = 3600;
/// Said to every password-reset request, whether or not the address has an account.
const RESET_ANSWER: &str =
    "if an account uses this address, a link to reset its password is on its way";

/// Records an event of an account outside any workspace (a failed login, a reset).
async fn record_account_event(
    state: &AppState,
    account: &db::users::User,
    ip: ClientIp,
    action: &str,
) -> Result<(), ApiError> {
    let client = state.pool.get().await.map_err(DbError::from)?;
    db::audit::record(
        &client,
        &db::audit::NewEntry {
            workspace_id: None,
            actor_id: Some(account.id),
            actor_email: Some(&account.email),
            ip: Some(ip.0),
            action,
            target_type: Some("user"),
            target_id: Some(account.id.to_string()),
            before: None,
            after: None,
        },
    )
    .await?;
    Ok(())
}

/// Stores a new verification token for `user` and returns the link that carries it.
async fn verification_token(db: &impl db::GenericClient, user: Uuid) -> Result<String, ApiError> {
    let t = token::generate(VERIFY_PREFIX);
    db::account_tokens::create(
        db,
        user,
        db::account_tokens::Purpose::VerifyEmail,
        &t.hash,
        VERIFY_TTL_SECONDS,
    )
    .await?;
    Ok(t.plaintext.expose().clone())
}

async fn send_verification(state: &AppState, email: &str, token: &str) {
    let link = format!("{}/#/verify-email?token={token}", state.public_url);
    if let Err(e) = state.mailer.send(mail::verification(email, &link)).await {
        tracing::error!(error = %e, "verification email not sent");
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenInput {
    /// The token from the emailed link.
    #[schema(value_type = String, required = true)]
    pub token: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    #[schema(value_type = String, required = true)]
    pub email: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetConfirm {
    #[schema(value_type = String, required = true)]
    pub token: Option<String>,
    #[schema(value_type = String, required = true)]
    pub new_password: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageResponse {
    pub message: String,
}

fn required_token(t: Option<String>) -> Result<String, ApiError> {
    t.map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::field("token", "is required"))
}

fn invalid_link() -> ApiError {
    ApiError::BadRequest(
        "token_invalid",
        "this link is unknown, expired or already used; ask for a new one".into(),
    )
}

/// Confirm an email address with the token from the verification link.
#[utoipa::path(post, path = "/auth/verify-email", tag = "auth", request_body = TokenInput,
    responses((status = 200, body = UserDto), (status = 400, body = crate::error::ErrorBody)))]
pub async fn verify_email(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<TokenInput>,
) -> Result<Json<UserDto>, ApiError> {
    let presented = required_token(body.token)?;
    let mut client = state.pool.get().await.map_err(DbError::from)?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let user = db::account_tokens::consume(
        &tx,
        db::account_tokens::Purpose::VerifyEmail,
        &token::hash(&presented),
    )
    .await?
    .ok_or_else(invalid_link)?;
    db::users::mark_verified(&tx, user).await?;
    let found = db::users::get(&tx, user).await?.ok_or_else(invalid_link)?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(found.into()))
}

/// Send the verification email again; at most once per cool-down
/// (`VERIFICATION_RESEND_COOLDOWN_SECONDS`, 429 with `Retry-After` before it ends).
#[utoipa::path(post, path = "/auth/verify-email/resend", tag = "auth", security(("bearer" = [])),
    responses((status = 202, body = MessageResponse), (status = 401, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody)))]
pub async fn resend_verification(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<(StatusCode, Json<MessageResponse>), ApiError> {
    let mut client = state.pool.get().await.map_err(DbError::from)?;
    let account = db::users::get(&client, user.id)
        .await?
        .ok_or(ApiError::Unauthorized(AuthError::InvalidToken))?;
    if account.email_verified_at.is_some() {
        return Err(ApiError::conflict(
            "already_verified",
            "this email address is already verified",
        ));
    }
    let tx = client.transaction().await.map_err(DbError::from)?;
    if !db::users::claim_verification_send(&tx, user.id, state.resend_cooldown_seconds).await? {
        let wait =
            db::users::verification_wait(&tx, user.id, state.resend_cooldown_seconds).await?;
        return Err(ApiError::RateLimited {
            retry_after: std::time::Duration::from_secs(u64::try_from(wait).unwrap_or(1)),
        });
    }
    let link = verification_token(&tx, user.id).await?;
    tx.commit().await.map_err(DbError::from)?;
    send_verification(&state, &account.email, &link).await;
    Ok((
        StatusCode::ACCEPTED,
        Json(MessageResponse {
            message: "a new verification link is on its way".into(),
        }),
    ))
}

/// Ask for a password-reset link. The answer is the same whether or not the address has
/// an account; the email goes out in the background.
#[utoipa::path(post, path = "/auth/password-reset", tag = "auth", request_body = ResetRequest,
    responses((status = 202, body = MessageResponse), (status = 400, body = crate::error::ErrorBody),
              (status = 429, body = crate::error::ErrorBody)))]
pub async fn request_password_reset(
    ip: ClientIp,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ResetRequest>,
) -> Result<(StatusCode, Json<MessageResponse>), ApiError> {
    let email = Email::parse(body.email.as_deref().unwrap_or_default())
        .map_err(|_| ApiError::field("email", "must be a valid email address"))?;
    // Every request counts against the account's limit, so nobody floods a mailbox.
    let attempt = admit(&state, ip, email.as_str())?;
    attempt.failed();
    let client = state.pool.get().await.map_err(DbError::from)?;
    if let Some(found) = db::users::find_by_email(&client, &email).await? {
        let t = token::generate(RESET_PREFIX);
        db::account_tokens::create(
            &client,
            found.user.id,
            db::account_tokens::Purpose::ResetPassword,
            &t.hash,
            RESET_TTL_SECONDS,
        )
        .await?;
        let link = format!(
            "{}/#/reset-password?token={}",
            state.public_url,
            t.plaintext.expose()
        );
        let state = state.clone();
        // Not awaited: the answer must not take longer for an address that has an account.
        tokio::spawn(async move {
            let message = mail::password_reset(&found.user.email, &link);
            if let Err(e) = state.mailer.send(message).await {
                tracing::error!(error = %e, "password-reset email not sent");
            }
        });
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(MessageResponse {
            message: RESET_ANSWER.into(),
        }),
    ))
}

/// Set a new password with the token from the reset link. Every earlier session of the
/// account ends. Attempts count against the client's login allowance
/// (`AUTH_RATE_PER_IP`), and the token is checked before the new password is hashed, so
/// made-up tokens cost no argon2id work.
#[utoipa::path(post, path = "/auth/password-reset/confirm", tag = "auth", request_body = ResetConfirm,
    responses((status = 204), (status = 400, body = crate::error::ErrorBody),
              (status = 429, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
pub async fn confirm_password_reset(
    ip: ClientIp,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ResetConfirm>,
) -> Result<StatusCode, ApiError> {
    let mut errs = FieldErrors::default();
    if body.token.as_deref().is_none_or(|t| t.trim().is_empty()) {
        errs.add("token", "is required");
    }
    check_password(
        &mut errs,
        "new_password",
        body.new_password.as_deref(),
        true,
    );
    errs.into_result()?;
    let (Some(presented), Some(new)) = (body.token, body.new_password) else {
        return Err(ApiError::internal("reset validated without values"));
    };
    state
        .throttle
        .attempt_from(ip.0)
        .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
    let token_hash = token::hash(presented.trim());
    let purpose = db::account_tokens::Purpose::ResetPassword;
    let client = state.pool.get().await.map_err(DbError::from)?;
    db::account_tokens::live_user(&client, purpose, &token_hash)
        .await?
        .ok_or_else(invalid_link)?;
    drop(client);
    let hash = state.hasher.hash(new).await?;
    let mut client = state.pool.get().await.map_err(DbError::from)?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    // Consumed only now: of two confirms racing with one token, one wins.
    let user = db::account_tokens::consume(&tx, purpose, &token_hash)
        .await?
        .ok_or_else(invalid_link)?;
    db::users::set_password_hash(&tx, user, &hash).await?;
    db::sessions::revoke_all(&tx, user).await?;
    // The link reached the mailbox, which is what verification proves.
    db::users::mark_verified(&tx, user).await?;
    let account = db::users::get(&tx, user).await?.ok_or_else(invalid_link)?;
    db::audit::record(
        &tx,
        &db::audit::NewEntry {
            workspace_id: None,
            actor_id: Some(user),
            actor_email: Some(&account.email),
            ip: Some(ip.0),
            action: "auth.password_reset",
            target_type: Some("user"),
            target_id: Some(user.to_string()),
            before: None,
            after: None,
        },
    )
    .await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(StatusCode::NO_CONTENT)
}
