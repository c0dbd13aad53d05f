//! Accounts and admin sessions: sign-up (user + default workspace + owner membership +
//! default API key + session, atomically), login, refresh, logout, password change and
//! `me`. Credential routes are throttled per client IP and per account before any
//! password is hashed.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use perpetuo_core::db::{self, DbError};
use perpetuo_core::email::Email;
use perpetuo_core::{apikey, password};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::dto::{UserDto, WorkspaceDto};
use crate::accounts;
use crate::error::{ApiError, AuthError, FieldErrors};
use crate::extract::{ApiJson, AuthUser, ClientIp};
use crate::state::AppState;
use crate::throttle::Attempt;

/// Said for a sign-up whose email is taken: it names no account.
const SIGNUP_REFUSED: &str = "cannot create an account with this email; log in instead";

#[derive(Debug, Deserialize, ToSchema)]
pub struct Credentials {
    #[schema(value_type = String, required = true)]
    pub email: Option<String>,
    #[schema(value_type = String, required = true)]
    pub password: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RefreshRequest {
    #[schema(value_type = String, required = true)]
    pub refresh_token: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
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
    pub api_key: NewKeyDto,
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
        return Err(ApiError::Forbidden(
            "signup_disabled",
            "signup is closed on this server; ask an administrator for an account".into(),
        ));
    }
    let (email, pw) = parse_credentials(body, true)?;
    let attempt = admit(&state, ip, email.as_str())?;
    // Hashed before the email is looked at, so a taken email costs the same time.
    let hash = state.hasher.hash(pw).await?;
    let key = apikey::generate();

    let mut client = state.pool.get().await.map_err(DbError::from)?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let (user, workspace) = match accounts::create(&tx, &email, &hash).await {
        Ok(created) => created,
        Err(accounts::CreateError::EmailTaken) => {
            attempt.failed();
            return Err(ApiError::Conflict(SIGNUP_REFUSED.into()));
        }
        Err(accounts::CreateError::Db(e)) => return Err(e.into()),
    };
    let api_key =
        db::api_keys::insert(&tx, workspace.id, "Default key", &key, Some(user.id), None).await?;
    let tokens = open_session(&state, &tx, user.id).await?;
    tx.commit().await.map_err(DbError::from)?;
    drop(attempt);

    Ok((
        StatusCode::CREATED,
        Json(SignupResponse {
            token: tokens.token,
            refresh_token: tokens.refresh_token,
            user: user.into(),
            workspace: workspace.into(),
            api_key: NewKeyDto {
                id: api_key.id,
                key: key.plaintext.expose().clone(),
                prefix: api_key.prefix,
            },
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
        _ => {
            attempt.failed();
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
