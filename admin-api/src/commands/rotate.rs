//! `rotate-master-key`: re-seals every provider key of every entry's pool under
//! `PERPETUO_MASTER_KEY`, opening those still under `PERPETUO_MASTER_KEY_PREVIOUS`. One transaction: a key that opens
//! under neither stops the run and nothing changes. Keys already under the new key are
//! left alone, so it can be run again.

use perpetuo_core::db::{self, entry_keys::Rotation, DbError};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("PERPETUO_MASTER_KEY_PREVIOUS is not set: set it to the key being replaced and PERPETUO_MASTER_KEY to the new one")]
    NoPrevious,
    #[error("nothing changed: {0}")]
    Reseal(#[from] db::entry_keys::ResealError),
    #[error("database: {0}")]
    Db(#[from] DbError),
}

pub async fn rotate_master_key(config: &Config) -> Result<Rotation, RotateError> {
    if config.master_key_previous.is_none() {
        return Err(RotateError::NoPrevious);
    }
    let pool = db::pool(config.database_url.expose(), 1)?;
    let mut client = pool.get().await.map_err(DbError::from)?;
    Ok(db::entry_keys::rotate_master_key(&mut client, &config.master_keys()).await?)
}
