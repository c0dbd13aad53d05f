//! The gateway's `DATA_DIR`, held under an advisory lock (`flock` on [`LOCK_FILE`]) for
//! the life of the process. Two gateways on one directory would corrupt its spool: both
//! number their files from what they found at start, so they append to the same file
//! (their frames interleave) and each replays and removes the other's records. The kernel
//! releases the lock when the process ends however it ends, `kill -9` included, so a
//! restart never finds a stale one. Depends on nothing of the gateway.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

/// The lock file inside `DATA_DIR`; it holds the process id of its holder, for the message
/// a second gateway prints.
pub const LOCK_FILE: &str = "gateway.lock";

/// `DATA_DIR`, locked until this value (or the process) goes.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "DATA_DIR {} is in use by another gateway ({holder} holds {}): give each gateway its own DATA_DIR",
        dir.display(),
        dir.join(LOCK_FILE).display()
    )]
    Held { dir: PathBuf, holder: String },
    #[error("DATA_DIR {}: cannot lock {}: {source}", dir.display(), dir.join(LOCK_FILE).display())]
    Io { dir: PathBuf, source: io::Error },
}

impl DataDir {
    /// Creates `dir` if needed and locks it, without waiting: a directory another process
    /// holds is an error at once.
    pub fn lock(dir: &Path) -> Result<Self, LockError> {
        let io_err = |source| LockError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(io_err)?;
        // Not truncated on open: the holder's pid stays readable for the refused process.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
            .map_err(io_err)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                return Err(LockError::Held {
                    dir: dir.to_path_buf(),
                    holder: holder(&mut file),
                })
            }
            Err(e) => return Err(io_err(e.into())),
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(io_err)?;
        Ok(Self {
            path: dir.to_path_buf(),
            _lock: file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Who holds the lock, as its file says (the holder may be writing it right now).
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let pid = file
        .take(32)
        .read_to_string(&mut text)
        .ok()
        .and_then(|_| text.trim().parse::<u32>().ok());
    match pid {
        Some(pid) => format!("process {pid}"),
        None => "a process".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_directory_is_refused_until_its_holder_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let held = DataDir::lock(&data).unwrap();
        // flock locks belong to the open file: a second open in this process conflicts
        // exactly as another process's would.
        let err = DataDir::lock(&data).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, LockError::Held { .. }), "{msg}");
        assert!(msg.contains(&data.display().to_string()), "{msg}");
        assert!(
            msg.contains(&format!("process {}", std::process::id())),
            "{msg}"
        );
        drop(held);
        DataDir::lock(&data).unwrap();
    }
}
