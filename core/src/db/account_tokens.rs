//! `account_tokens`: single-use tokens mailed to an account's owner, for email
//! verification and password reset, stored as SHA-256 only.

use deadpool_postgres::GenericClient;
use uuid::Uuid;

use super::{DbError, Sql};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    VerifyEmail,
    ResetPassword,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::VerifyEmail => "verify_email",
            Purpose::ResetPassword => "reset_password",
        }
    }
}

/// Stores a token for `user`, valid for `ttl_seconds`. Earlier unused tokens of the same
/// purpose stop working: only the newest link counts.
pub async fn create(
    db: &impl GenericClient,
    user: Uuid,
    purpose: Purpose,
    token_hash: &[u8; 32],
    ttl_seconds: i64,
) -> Result<(), DbError> {
    db.traced_execute(
        "DELETE FROM account_tokens WHERE user_id = $1 AND purpose = $2",
        &[&user, &purpose.as_str()],
    )
    .await?;
    db.traced_execute(
        "INSERT INTO account_tokens (token_hash, user_id, purpose, expires_at)
         VALUES ($1, $2, $3, now() + $4::bigint * interval '1 second')",
        &[
            &token_hash.as_slice(),
            &user,
            &purpose.as_str(),
            &ttl_seconds,
        ],
    )
    .await?;
    Ok(())
}

/// The user of a live token (unused, unexpired, this purpose), leaving it live: a check
/// that costs one indexed read, made before any expensive work the token would allow.
pub async fn live_user(
    db: &impl GenericClient,
    purpose: Purpose,
    token_hash: &[u8; 32],
) -> Result<Option<Uuid>, DbError> {
    let row = db
        .traced_query_opt(
            "SELECT user_id FROM account_tokens
             WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > now()",
            &[&token_hash.as_slice(), &purpose.as_str()],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Uses the token: returns its user if it was live (unused, unexpired, this purpose),
/// and marks it used so it never works again.
pub async fn consume(
    db: &impl GenericClient,
    purpose: Purpose,
    token_hash: &[u8; 32],
) -> Result<Option<Uuid>, DbError> {
    let row = db
        .traced_query_opt(
            "UPDATE account_tokens SET used_at = now()
             WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > now()
             RETURNING user_id",
            &[&token_hash.as_slice(), &purpose.as_str()],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}
