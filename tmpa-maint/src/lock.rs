//! One run per program per root at a time.

use std::ffi::OsStr;
use std::fs::{File, TryLockError};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustix::process::{Gid, Uid};
use tmpa_core::Root;
use tmpa_core::maintenance::{Kind, Meta, STATE_DIR, name_text, root_dir};

use crate::exit::StartError;
use crate::record::Task;
use crate::trust::{Distrust, runner_uid};

/// Bytes of the holder's note at the start of the lock file (padded with spaces, so that a
/// shorter note overwrites a longer one without truncating the file).
const NOTE_BYTES: usize = 64;

/// The lock a program holds on a root for the duration of its run: an OS file lock
/// (`flock`, via std's `File::try_lock`) on `{root}/.tmpa/locks/{task}.lock`.
///
/// The OS releases it when the process dies, however it dies, so a killed run never
/// leaves a stale lock. The file holds the holder's pid and start time, for the message
/// that a second run prints.
///
/// # Security
/// The lock file lies in a directory the tree's owner may write. It is opened without
/// following a symlink, without blocking on a FIFO and without truncating, and is used
/// only when it is a regular file with one link owned by this program's user, or (for a
/// run as root) by the owner of the locks directory, whose file it is anyway: a link the
/// owner planted there is refused (exit 2), and no other file is ever written through it.
/// A run as root gives a lock file it finds root's the owner of the directory, as it does
/// every file it creates in the tree, so that a run as that owner can use it next.
///
/// A lock file another user owns (a run as root on a tree whose owner now runs the jobs,
/// before this rule) is refused with exit 2, naming the file and the `chown` that fixes
/// it, never reported as an I/O failure.
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
    /// [`StartError::Untrusted`] when the lock file is a symlink, not a regular file, has
    /// another link or another owner; [`StartError::Core`] when the state directory cannot
    /// be made or the lock file opened.
    pub fn acquire(root: &Root, task: Task) -> Result<Lock, StartError> {
        let dir = root_dir(root).create_dir_all(Path::new(STATE_DIR).join("locks"))?;
        let name = format!("{}.lock", task.as_str());
        let path = dir.join(&name);
        let mut file = match dir.open_or_create(OsStr::new(&name), 0o644) {
            Err(e) if e.raw_os_error() == Some(libc_eloop()) => {
                return Err(StartError::Untrusted {
                    path,
                    why: Distrust::Kind(tmpa_core::maintenance::Kind::Symlink),
                });
            }
            Err(e) if e.io_kind() == std::io::ErrorKind::PermissionDenied => {
                // Another user's file, which this one may not write: say whose, and how
                // to give it back, not "I/O error".
                return Err(match dir.stat(OsStr::new(&name)) {
                    Ok(Some(meta)) if meta.uid != runner_uid() => StartError::ForeignLock {
                        path,
                        owner: meta.uid,
                        runner: runner_uid(),
                    },
                    _ => e.into(),
                });
            }
            other => other?,
        };
        let mut meta = Meta::of_fd(&file).map_err(|e| dir.error("stat", &name, e))?;
        let dir_owner = dir.meta()?;
        if meta.uid == 0 && runner_uid() == 0 && dir_owner.uid != 0 && meta.kind == Kind::File {
            // Root's lock file in the owner's directory: the owner's, as root gives every
            // file it makes in the tree (a run as the owner must be able to open it).
            rustix::fs::fchown(
                &file,
                Some(Uid::from_raw(dir_owner.uid)),
                Some(Gid::from_raw(dir_owner.gid)),
            )
            .map_err(|e| dir.error("chown", &name, std::io::Error::from(e)))?;
            meta = Meta::of_fd(&file).map_err(|e| dir.error("stat", &name, e))?;
        }
        check_lock_file(&meta, dir_owner.uid).map_err(|why| match why {
            Distrust::Owner { uid, runner } => StartError::ForeignLock {
                path: path.clone(),
                owner: uid,
                runner,
            },
            why => StartError::Untrusted {
                path: path.clone(),
                why,
            },
        })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = Vec::new();
                let _ = (&mut file).take(NOTE_BYTES as u64).read_to_end(&mut holder);
                let holder = String::from_utf8_lossy(&holder);
                let holder = holder.trim();
                return Err(StartError::Locked {
                    path,
                    holder: if holder.is_empty() {
                        "unknown".into()
                    } else {
                        name_text(holder)
                    },
                });
            }
            Err(TryLockError::Error(e)) => {
                return Err(dir.error("lock", &name, e).into());
            }
        }
        let note = format!("pid {} since {}", std::process::id(), crate::now_rfc3339());
        let note = format!("{note:<width$}\n", width = NOTE_BYTES - 1);
        // The note is informational: failing to write it must not fail the run.
        let _ = file.write_all_at(note.as_bytes(), 0);
        Ok(Lock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `ELOOP`: what `O_NOFOLLOW` answers for a symlink.
fn libc_eloop() -> i32 {
    rustix::io::Errno::LOOP.raw_os_error()
}

/// A lock file is used only when it is a regular file with one link, owned by this
/// program's user, or by root, or (for a run as root) by `dir_owner`, the owner of the
/// locks directory, who could replace it anyway.
fn check_lock_file(meta: &Meta, dir_owner: u32) -> Result<(), Distrust> {
    if meta.kind != Kind::File {
        return Err(Distrust::Kind(meta.kind));
    }
    if meta.links != 1 {
        return Err(Distrust::Links(meta.links));
    }
    let runner = runner_uid();
    let ok = meta.uid == runner || meta.uid == 0 || (runner == 0 && meta.uid == dir_owner);
    if !ok {
        return Err(Distrust::Owner {
            uid: meta.uid,
            runner,
        });
    }
    Ok(())
}
