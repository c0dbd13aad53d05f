//! `users`: accounts, found by normalised email.

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{DbError, Sql};
use crate::email::Email;

pub const EMAIL_UNIQUE: &str = "users_email_key";

#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub created_at: OffsetDateTime,
    /// When the owner of the address proved it; `None` while unverified.
    pub email_verified_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone)]
pub struct UserWithHash {
    pub user: User,
    pub password_hash: String,
}

fn from_row(row: &Row) -> User {
    User {
        id: row.get("id"),
        email: row.get("email"),
        created_at: row.get("created_at"),
        email_verified_at: row.get("email_verified_at"),
    }
}

/// A new account with its email counted as verified.
pub async fn insert(
    db: &impl GenericClient,
    email: &Email,
    password_hash: &str,
) -> Result<User, DbError> {
    insert_with(db, email, password_hash, true).await
}

/// A new account; `verified` when no verification is asked of it.
pub async fn insert_with(
    db: &impl GenericClient,
    email: &Email,
    password_hash: &str,
    verified: bool,
) -> Result<User, DbError> {
    let row = db
        .traced_query_one(
            "INSERT INTO users (id, email, password_hash, email_verified_at)
             VALUES ($1, $2, $3, CASE WHEN $4 THEN now() END)
             RETURNING id, email, created_at, email_verified_at",
            &[&super::new_id(), &email.as_str(), &password_hash, &verified],
        )
        .await?;
    Ok(from_row(&row))
}

pub async fn find_by_email(
    db: &impl GenericClient,
    email: &Email,
) -> Result<Option<UserWithHash>, DbError> {
    let row = db
        .traced_query_opt(
            "SELECT id, email, created_at, email_verified_at, password_hash FROM users WHERE email = $1",
            &[&email.as_str()],
        )
        .await?;
    Ok(row.map(|r| UserWithHash {
        user: from_row(&r),
        password_hash: r.get("password_hash"),
    }))
}

pub async fn get(db: &impl GenericClient, id: Uuid) -> Result<Option<User>, DbError> {
    let row = db
        .traced_query_opt(
            "SELECT id, email, created_at, email_verified_at FROM users WHERE id = $1",
            &[&id],
        )
        .await?;
    Ok(row.as_ref().map(from_row))
}

pub async fn count_by_email(db: &impl GenericClient, email: &str) -> Result<i64, DbError> {
    let row = db
        .traced_query_one("SELECT count(*) FROM users WHERE email = $1", &[&email])
        .await?;
    Ok(row.get(0))
}

/// The stored password hash of `id`, if the account exists.
pub async fn password_hash(db: &impl GenericClient, id: Uuid) -> Result<Option<String>, DbError> {
    let row = db
        .traced_query_opt("SELECT password_hash FROM users WHERE id = $1", &[&id])
        .await?;
    Ok(row.map(|r| r.get(0)))
}

pub async fn set_password_hash(
    db: &impl GenericClient,
    id: Uuid,
    password_hash: &str,
) -> Result<(), DbError> {
    db.traced_execute(
        "UPDATE users SET password_hash = $2 WHERE id = $1",
        &[&id, &password_hash],
    )
    .await?;
    Ok(())
}

pub async fn mark_verified(db: &impl GenericClient, id: Uuid) -> Result<(), DbError> {
    db.traced_execute(
        "UPDATE users SET email_verified_at = COALESCE(email_verified_at, now()) WHERE id = $1",
        &[&id],
    )
    .await?;
    Ok(())
}

/// Claims the right to send `id` a verification email: true (and the time recorded) when
/// none was sent in the last `cooldown_seconds`.
pub async fn claim_verification_send(
    db: &impl GenericClient,
    id: Uuid,
    cooldown_seconds: i64,
) -> Result<bool, DbError> {
    let n = db
        .traced_execute(
            "UPDATE users SET verification_sent_at = now()
             WHERE id = $1 AND (verification_sent_at IS NULL
                   OR verification_sent_at <= now() - $2::bigint * interval '1 second')",
            &[&id, &cooldown_seconds],
        )
        .await?;
    Ok(n == 1)
}

/// Seconds until `id` may be sent another verification email (0: now).
pub async fn verification_wait(
    db: &impl GenericClient,
    id: Uuid,
    cooldown_seconds: i64,
) -> Result<i64, DbError> {
    let row = db
        .traced_query_one(
            "SELECT COALESCE(ceil(extract(epoch FROM
                 verification_sent_at + $2::bigint * interval '1 second' - now()))::bigint, 0)
             FROM users WHERE id = $1",
            &[&id, &cooldown_seconds],
        )
        .await?;
    Ok(row.get::<_, i64>(0).max(0))
}
