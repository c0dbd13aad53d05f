//! `workspaces` and `workspace_members`: a workspace is only visible to its members.

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use super::DbError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Owner,
    Admin,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    fn parse(s: &str) -> Role {
        match s {
            "owner" => Role::Owner,
            "admin" => Role::Admin,
            _ => Role::Member,
        }
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
        role: Role::parse(row.get("role")),
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
        .query_one(
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
        .query(
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
        .query_opt(
            "SELECT w.id, w.name, m.role, w.created_at, w.updated_at
             FROM workspace_members m JOIN workspaces w ON w.id = m.workspace_id
             WHERE m.workspace_id = $1 AND m.user_id = $2",
            &[&id, &user],
        )
        .await?;
    Ok(row.as_ref().map(from_row))
}

pub async fn rename(db: &impl GenericClient, id: Uuid, name: &str) -> Result<(), DbError> {
    db.execute(
        "UPDATE workspaces SET name = $2, updated_at = now() WHERE id = $1",
        &[&id, &name],
    )
    .await?;
    Ok(())
}
