//! Creating an account: the user and their personal workspace, owned by them. Signup and
//! `perpetuo-admin create-user` both go through here, so the two make the same rows.

use perpetuo_core::db::{self, users::User, workspaces::Workspace, DbError};
use perpetuo_core::email::Email;

/// Name of the workspace every new account starts with.
pub const PERSONAL_WORKSPACE: &str = "Default";

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Inserts the user (`verified` when no email verification is asked of it) and their
/// workspace; call inside the caller's transaction.
pub async fn create(
    tx: &impl db::GenericClient,
    email: &Email,
    password_hash: &str,
    verified: bool,
) -> Result<(User, Workspace), CreateError> {
    let user = match db::users::insert_with(tx, email, password_hash, verified).await {
        Ok(u) => u,
        Err(e) if e.unique_violation() == Some(db::users::EMAIL_UNIQUE) => {
            return Err(CreateError::EmailTaken)
        }
        Err(e) => return Err(e.into()),
    };
    let workspace = db::workspaces::create(tx, PERSONAL_WORKSPACE, user.id).await?;
    Ok((user, workspace))
}
