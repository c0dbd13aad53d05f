//! `create-user --email <e> --password-stdin`: a first account without the signup page
//! (for servers that run with `SIGNUP_ENABLED=false`). The same checks and the same rows
//! as signup; the password comes from standard input so it stays out of the shell history
//! and the process list.

use std::io::Read;
use std::time::Duration;

use perpetuo_core::db::{self, DbError};
use perpetuo_core::password::{self, Hasher};

use crate::accounts;
use crate::config::{Config, CreateUserArgs};
use crate::error::ApiError;
use crate::routes::auth::{parse_credentials, Credentials};

#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    #[error("cannot read the password from standard input: {0}")]
    Stdin(std::io::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("password hashing: {0}")]
    Hash(#[from] password::PasswordError),
    #[error("database: {0}")]
    Db(#[from] DbError),
}

/// The ids of what was created.
#[derive(Debug, Clone, Copy)]
pub struct Created {
    pub user_id: uuid::Uuid,
    pub workspace_id: uuid::Uuid,
}

/// Reads the password from `input` (at most a little more than the longest password
/// accepted, so a stray pipe cannot fill memory), creates the user and their workspace.
pub async fn create_user(
    config: &Config,
    args: &CreateUserArgs,
    input: impl Read,
) -> Result<Created, CreateUserError> {
    let password = read_password(input)?;
    let (email, password) = parse_credentials(
        Credentials {
            email: Some(args.email.clone()),
            password: Some(password),
        },
        true,
    )
    .map_err(|e| match e {
        ApiError::Validation { message, .. } => CreateUserError::Invalid(message),
        other => CreateUserError::Invalid(other.to_string()),
    })?;
    let hasher = Hasher::new(1, Duration::from_secs(60));
    let hash = hasher.hash(password).await?;
    let pool = db::pool(config.database_url.expose(), 1)?;
    let mut client = pool.get().await.map_err(DbError::from)?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let (user, workspace) = match accounts::create(&tx, &email, &hash, true).await {
        Ok(created) => created,
        Err(accounts::CreateError::EmailTaken) => return Err(CreateUserError::EmailTaken),
        Err(accounts::CreateError::Db(e)) => return Err(e.into()),
    };
    tx.commit().await.map_err(DbError::from)?;
    Ok(Created {
        user_id: user.id,
        workspace_id: workspace.id,
    })
}

fn read_password(input: impl Read) -> Result<String, CreateUserError> {
    let mut raw = String::new();
    input
        .take(password::MAX_LEN as u64 + 3)
        .read_to_string(&mut raw)
        .map_err(CreateUserError::Stdin)?;
    let line = raw
        .strip_suffix('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .unwrap_or(&raw);
    if line.contains('\n') {
        return Err(CreateUserError::Invalid(
            "password: must be one line".into(),
        ));
    }
    Ok(line.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_final_newline_is_not_part_of_the_password() {
        assert_eq!(
            read_password(&b"hunter2 hunter2\n"[..]).unwrap(),
            "hunter2 hunter2"
        );
        assert_eq!(
            read_password(&b"pw with spaces \r\n"[..]).unwrap(),
            "pw with spaces "
        );
        assert_eq!(read_password(&b"no newline"[..]).unwrap(), "no newline");
        assert!(read_password(&b"two\nlines\n"[..]).is_err());
    }
}
