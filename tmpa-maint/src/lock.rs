//! One run per program per root at a time.

use std::ffi::OsStr;
use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use tmpa_core::Root;
use tmpa_core::maintenance::{STATE_DIR, root_dir};

use crate::exit::StartError;
use crate::record::Task;

/// The lock a program holds on a root for the duration of its run: an OS file lock
/// (`flock`, via std's `File::try_lock`) on `{root}/.tmpa/locks/{task}.lock`.
///
/// The OS releases it when the process dies, however it dies, so a killed run never
/// leaves a stale lock. The file holds the holder's pid and start time, for the message
/// that a second run prints.
#[derive(Debug)]
pub struct Lock {
    _file: File,
    path: PathBuf,
}

impl Lock {
    /// Takes the lock of `task` on `root` without waiting.
    ///
    /// # Errors
    /// [`StartError::Locked`] naming the holder when another process holds it;
    /// [`StartError::Core`] when the state directory cannot be made or the lock file
    /// opened.
    pub fn acquire(root: &Root, task: Task) -> Result<Lock, StartError> {
        let dir = root_dir(root).create_dir_all(Path::new(STATE_DIR).join("locks"))?;
        let name = format!("{}.lock", task.as_str());
        let path = dir.join(&name);
        let mut file = dir.open_append(OsStr::new(&name), 0o644)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(StartError::Locked {
                    path,
                    holder: if holder.is_empty() {
                        "unknown".into()
                    } else {
                        holder.to_owned()
                    },
                });
            }
            Err(TryLockError::Error(e)) => {
                return Err(dir.error("lock", &name, e).into());
            }
        }
        let note = format!(
            "pid {} since {}\n",
            std::process::id(),
            crate::now_rfc3339()
        );
        // The note is informational: failing to write it must not fail the run.
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(note.as_bytes()));
        Ok(Lock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
