//! Sign-up (user + default workspace + owner membership + default API key, atomically),
//! login and `me`.

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
use crate::error::{ApiError, FieldErrors};
use crate::extract::{ApiJson, AuthUser};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
pub struct Credentials {
    pub email: Option<String>,
    pub password: Option<String>,
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
    pub token: String,
    pub user: UserDto,
    pub workspace: WorkspaceDto,
    pub api_key: NewKeyDto,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    pub token: String,
    pub user: UserDto,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MeResponse {
    pub user: UserDto,
    pub workspaces: Vec<WorkspaceDto>,
}

fn parse_credentials(c: Credentials, check_length: bool) -> Result<(Email, String), ApiError> {
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
    match c.password.as_deref() {
        None => errs.add("password", "is required"),
        Some(p) if check_length && p.chars().count() < password::MIN_LEN => errs.add(
            "password",
            format!("must be at least {} characters", password::MIN_LEN),
        ),
        Some(p) if p.len() > password::MAX_LEN => errs.add(
            "password",
            format!("must be at most {} bytes", password::MAX_LEN),
        ),
        Some(_) => {}
    }
    errs.into_result()?;
    match (email, c.password) {
        (Some(e), Some(p)) => Ok((e, p)),
        _ => Err(ApiError::internal("credentials validated without values")),
    }
}

/// Create an account with its default workspace and a first API key.
#[utoipa::path(post, path = "/auth/signup", tag = "auth", request_body = Credentials,
    responses((status = 201, body = SignupResponse), (status = 400, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
pub async fn signup(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<(StatusCode, Json<SignupResponse>), ApiError> {
    let (email, pw) = parse_credentials(body, true)?;
    let hash = password::hash(pw).await.map_err(ApiError::internal)?;
    let key = apikey::generate();

    let mut client = state.pool.get().await.map_err(DbError::from)?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let user = match db::users::insert(&tx, &email, &hash).await {
        Ok(u) => u,
        Err(e) if e.unique_violation() == Some(db::users::EMAIL_UNIQUE) => {
            return Err(ApiError::Conflict(
                "an account with this email already exists".into(),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let workspace = db::workspaces::create(&tx, "Default", user.id).await?;
    let api_key =
        db::api_keys::insert(&tx, workspace.id, "Default key", &key, Some(user.id), None).await?;
    tx.commit().await.map_err(DbError::from)?;

    let token = state.jwt.issue(user.id).map_err(ApiError::internal)?;
    Ok((
        StatusCode::CREATED,
        Json(SignupResponse {
            token,
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

/// Exchange email and password for a token.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = Credentials,
    responses((status = 200, body = LoginResponse), (status = 400, body = crate::error::ErrorBody),
              (status = 401, body = crate::error::ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<Json<LoginResponse>, ApiError> {
    let (email, pw) = parse_credentials(body, false)?;
    let client = state.pool.get().await.map_err(DbError::from)?;
    let found = db::users::find_by_email(&client, &email).await?;
    drop(client);
    let (user, phc) = match found {
        Some(u) => (Some(u.user), Some(u.password_hash)),
        None => (None, None),
    };
    let ok = password::verify(pw, phc)
        .await
        .map_err(ApiError::internal)?;
    match user {
        Some(user) if ok => {
            let token = state.jwt.issue(user.id).map_err(ApiError::internal)?;
            Ok(Json(LoginResponse {
                token,
                user: user.into(),
            }))
        }
        _ => Err(ApiError::Unauthorized("invalid_credentials")),
    }
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
        .ok_or(ApiError::Unauthorized("invalid_token"))?;
    let workspaces = db::workspaces::list_for_user(&client, user.id).await?;
    Ok(Json(MeResponse {
        user: found.into(),
        workspaces: workspaces.into_iter().map(Into::into).collect(),
    }))
}
