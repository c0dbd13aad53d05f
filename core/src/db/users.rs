//! `users`: accounts, found by normalised email.

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use super::DbError;
use crate::email::Email;

pub const EMAIL_UNIQUE: &str = "users_email_key";

#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub created_at: OffsetDateTime,
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
    }
}

pub async fn insert(
    db: &impl GenericClient,
    email: &Email,
    password_hash: &str,
) -> Result<User, DbError> {
    let row = db
        .query_one(
            "INSERT INTO users (id, email, password_hash) VALUES ($1, $2, $3)
             RETURNING id, email, created_at",
            &[&super::new_id(), &email.as_str(), &password_hash],
        )
        .await?;
    Ok(from_row(&row))
}

pub async fn find_by_email(
    db: &impl GenericClient,
    email: &Email,
) -> Result<Option<UserWithHash>, DbError> {
    let row = db
        .query_opt(
            "SELECT id, email, created_at, password_hash FROM users WHERE email = $1",
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
        .query_opt(
            "SELECT id, email, created_at FROM users WHERE id = $1",
            &[&id],
        )
        .await?;
    Ok(row.as_ref().map(from_row))
}

pub async fn count_by_email(db: &impl GenericClient, email: &str) -> Result<i64, DbError> {
    let row = db
        .query_one("SELECT count(*) FROM users WHERE email = $1", &[&email])
        .await?;
    Ok(row.get(0))
}

/// The stored password hash of `id`, if the account exists.
pub async fn password_hash(db: &impl GenericClient, id: Uuid) -> Result<Option<String>, DbError> {
    let row = db
        .query_opt("SELECT password_hash FROM users WHERE id = $1", &[&id])
        .await?;
    Ok(row.map(|r| r.get(0)))
}

pub async fn set_password_hash(
    db: &impl GenericClient,
    id: Uuid,
    password_hash: &str,
) -> Result<(), DbError> {
    db.execute(
        "UPDATE users SET password_hash = $2 WHERE id = $1",
        &[&id, &password_hash],
    )
    .await?;
    Ok(())
}
