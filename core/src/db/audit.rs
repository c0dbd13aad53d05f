//! `audit_log`: who changed what through the admin API, when and from where, with the
//! non-secret fields before and after. Entries are written in the transaction of the
//! change they record.

use std::net::IpAddr;

use deadpool_postgres::GenericClient;
use serde_json::Value;
use time::OffsetDateTime;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{DbError, Sql};

/// One entry to record.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    pub workspace_id: Option<Uuid>,
    pub actor_id: Option<Uuid>,
    pub actor_email: Option<&'a str>,
    pub ip: Option<IpAddr>,
    /// `resource.verb`, e.g. `provider.updated`.
    pub action: &'a str,
    pub target_type: Option<&'a str>,
    pub target_id: Option<String>,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub id: Uuid,
    pub created_at: OffsetDateTime,
    pub workspace_id: Option<Uuid>,
    pub actor_id: Option<Uuid>,
    pub actor_email: Option<String>,
    pub ip: Option<IpAddr>,
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

fn from_row(row: &Row) -> Entry {
    Entry {
        id: row.get("id"),
        created_at: row.get("created_at"),
        workspace_id: row.get("workspace_id"),
        actor_id: row.get("actor_id"),
        actor_email: row.get("actor_email"),
        ip: row.get("ip"),
        action: row.get("action"),
        target_type: row.get("target_type"),
        target_id: row.get("target_id"),
        before: row.get("before"),
        after: row.get("after"),
    }
}

pub async fn record(db: &impl GenericClient, e: &NewEntry<'_>) -> Result<(), DbError> {
    db.traced_execute(
        "INSERT INTO audit_log (id, workspace_id, actor_id, actor_email, ip, action,
                                target_type, target_id, before, after)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            &super::new_id(),
            &e.workspace_id,
            &e.actor_id,
            &e.actor_email,
            &e.ip,
            &e.action,
            &e.target_type,
            &e.target_id,
            &e.before,
            &e.after,
        ],
    )
    .await?;
    Ok(())
}

/// Filters of a workspace's audit listing.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// The actor's user id.
    pub actor: Option<Uuid>,
    /// An exact action, or every action of a resource when it ends with `.` (`member.`).
    pub action: Option<String>,
}

/// A page of a workspace's entries, newest first, and the total that match.
pub async fn list(
    db: &impl GenericClient,
    workspace: Uuid,
    filter: &Filter,
    limit: i64,
    offset: i64,
) -> Result<(Vec<Entry>, i64), DbError> {
    let mut conds = vec!["workspace_id = $1".to_string()];
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(workspace)];
    if let Some(actor) = filter.actor {
        params.push(Box::new(actor));
        conds.push(format!("actor_id = ${}", params.len()));
    }
    if let Some(action) = &filter.action {
        if let Some(resource) = action.strip_suffix('.') {
            params.push(Box::new(format!("{resource}.")));
            conds.push(format!("starts_with(action, ${})", params.len()));
        } else {
            params.push(Box::new(action.clone()));
            conds.push(format!("action = ${}", params.len()));
        }
    }
    let filter_sql = conds.join(" AND ");
    let refs: Vec<&(dyn ToSql + Sync)> = params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let total: i64 = db
        .traced_query_one(
            &format!("SELECT count(*) FROM audit_log WHERE {filter_sql}"),
            &refs,
        )
        .await?
        .get(0);
    let mut page_refs = refs.clone();
    page_refs.push(&limit);
    page_refs.push(&offset);
    let rows = db
        .traced_query(
            &format!(
                "SELECT id, created_at, workspace_id, actor_id, actor_email, ip, action,
                        target_type, target_id, before, after
                 FROM audit_log WHERE {filter_sql}
                 ORDER BY created_at DESC, id DESC LIMIT ${} OFFSET ${}",
                refs.len() + 1,
                refs.len() + 2
            ),
            &page_refs,
        )
        .await?;
    Ok((rows.iter().map(from_row).collect(), total))
}

/// An account's own recorded events outside any workspace (failed logins, password
/// resets), newest first.
pub async fn for_account(
    db: &impl GenericClient,
    actor: Uuid,
    limit: i64,
) -> Result<Vec<Entry>, DbError> {
    let rows = db
        .traced_query(
            "SELECT id, created_at, workspace_id, actor_id, actor_email, ip, action,
                    target_type, target_id, before, after
             FROM audit_log WHERE actor_id = $1 AND workspace_id IS NULL
             ORDER BY created_at DESC, id DESC LIMIT $2",
            &[&actor, &limit],
        )
        .await?;
    Ok(rows.iter().map(from_row).collect())
}
