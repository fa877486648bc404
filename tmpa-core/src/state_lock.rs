//! The library's side of the maintenance programs' locks (docs/FORMAT.md "Program state",
//! `locks/{task}.lock`), for the one kind of call that must not run beside a program:
//! forgetting data (`forget.rs`), which a concurrent tmpa-archive or tmpa-compact could
//! otherwise copy back into an archive or a `_compacted.json` it is writing.
//!
//! Taken by the programs' rules (tmpa-maint's `lock.rs`): the lock file is opened
//! read-only, made `O_EXCL` (0644 whatever the umask) when missing, never followed,
//! never blocked on, never written; it must be a regular file; after the `flock`, its
//! name must still name the file locked (else it is taken again). The holder's note
//! (`{task}.holder`) is replaced by rename, so a program refused meanwhile names the
//! library's process. Several locks are taken all or none, in one order, and none is
//! held while waiting for another: a program that takes several (tmpa-snapshot) never
//! waits for the library, nor the library for it while holding one.

use std::ffi::{OsStr, OsString};
use std::fs::{File, TryLockError};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// `EBADF`: what `flock` answers on NFS for a descriptor not open for writing.
const EBADF: i32 = rustix::io::Errno::BADF.raw_os_error();
use crate::fs::{Dir, Kind, Meta};
use crate::root::{Root, STATE_DIR};

/// tmpa-archive's task: it copies sessions and notifications into archives.
pub(crate) const ARCHIVE_TASK: &str = "archive_history";
/// tmpa-compact's task: it copies loose events into `_compacted.json`.
pub(crate) const COMPACT_TASK: &str = "compact_events";
/// A lock file's mode (tmpa-maint's `LOCK_MODE`).
const LOCK_MODE: u32 = 0o644;
/// Largest holder note read.
const NOTE_BYTES_MAX: u64 = 256;
/// Pause between two tries while a job holds a lock.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Tries of one lock whose file is replaced between its open and its `flock`.
const ATTEMPTS: usize = 8;

/// Locks held until dropped (the kernel releases them if the process dies).
#[derive(Debug)]
pub(crate) struct StateLocks {
    _files: Vec<File>,
}

/// What one try of one lock found.
enum Try {
    Held(File),
    Busy {
        path: std::path::PathBuf,
        holder: String,
    },
}

impl StateLocks {
    /// Takes the locks of `tasks` (in that order), waiting at most `wait` for jobs that
    /// hold them.
    ///
    /// # Errors
    /// [`Error::Locked`] naming the lock and its holder when one is still held after
    /// `wait`; [`Error::Corrupt`] when a lock's name is not a regular file (a FIFO, a
    /// directory: refused, as the programs refuse it); [`Error::Io`] when `.tmpa/locks`
    /// cannot be made or a lock file opened (a symlink is refused with `ELOOP`).
    pub(crate) fn take(root: &Root, tasks: &[&'static str], wait: Duration) -> Result<StateLocks> {
        let started = Instant::now();
        let dir = root.hold_dir(&Path::new(STATE_DIR).join("locks"))?;
        'again: loop {
            let mut files = Vec::with_capacity(tasks.len());
            for task in tasks {
                match try_one(root, &dir, task)? {
                    Try::Held(f) => files.push(f),
                    Try::Busy { path, holder } => {
                        drop(files);
                        let waited = started.elapsed();
                        if waited >= wait {
                            return Err(Error::Locked {
                                path,
                                task,
                                holder,
                                waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
                            });
                        }
                        std::thread::sleep(RETRY_PAUSE.min(wait - waited));
                        continue 'again;
                    }
                }
            }
            let note = format!(
                "pid {} since {} (tmpa-core: forgetting data)\n",
                std::process::id(),
                chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
            );
            for task in tasks {
                // Informational, as the programs' notes: a failure is ignored.
                let _ = crate::fs::write_in(
                    &dir,
                    &OsString::from(format!("{task}.holder")),
                    note.as_bytes(),
                    false,
                );
            }
            return Ok(StateLocks { _files: files });
        }
    }
}

/// One try of the lock of `task`, without waiting.
fn try_one(root: &Root, dir: &Dir, task: &str) -> Result<Try> {
    let name = OsString::from(format!("{task}.lock"));
    let path = dir.join(&name);
    for _ in 0..ATTEMPTS {
        let (file, created) = dir.open_lock(&name, LOCK_MODE)?;
        if created {
            // Whatever the umask: every user's runs open it for reading.
            let _ = rustix::fs::fchmod(&file, rustix::fs::Mode::from_raw_mode(LOCK_MODE));
        }
        let meta = Meta::of_fd(&file).map_err(|e| Error::io("stat", &path, e))?;
        if meta.kind != Kind::File {
            return Err(Error::Corrupt {
                path,
                reason: format!("is {}, not a lock file (refused)", meta.kind.words()),
            });
        }
        let file = match file.try_lock() {
            Ok(()) => file,
            Err(TryLockError::WouldBlock) => {
                return Ok(Try::Busy {
                    holder: holder_note(dir, task),
                    path,
                });
            }
            // NFS emulates flock with byte-range locks, which want a descriptor open for
            // writing: the same file, opened so (never written), as the programs do.
            Err(TryLockError::Error(e)) if e.raw_os_error() == Some(EBADF) => {
                match lock_for_writing(dir, &name, &path, &meta)? {
                    Some(f) => f,
                    None => {
                        return Ok(Try::Busy {
                            holder: holder_note(dir, task),
                            path,
                        });
                    }
                }
            }
            Err(TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
        };
        // A file removed or replaced between the open and the lock is locked in vain:
        // take the one the name names now (reached again from the root).
        let now = root
            .dir()
            .open_dir(Path::new(STATE_DIR).join("locks"))
            .ok()
            .and_then(|d| d.stat(&name).ok().flatten());
        if now.is_some_and(|m| m.kind == Kind::File && m.stamp.same_inode(&meta.stamp)) {
            return Ok(Try::Held(file));
        }
    }
    Ok(Try::Busy {
        path,
        holder: "unknown (the lock file was removed or replaced each time it was taken)".into(),
    })
}

/// The lock taken on a descriptor open for writing, where the file system wants one
/// (NFS), by the programs' rule (tmpa-maint's `lock.rs`): only for a file of this
/// process's user with one name, the very file `read` (its metadata) describes. `None`
/// when another process holds it.
///
/// # Errors
/// [`Error::Corrupt`] naming the lock file when it is
/// another user's or has other names; [`Error::Io`] when it cannot be opened or locked.
fn lock_for_writing(dir: &Dir, name: &OsStr, path: &Path, read: &Meta) -> Result<Option<File>> {
    let euid = rustix::process::geteuid().as_raw();
    if read.uid != euid || read.links != 1 {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            reason: format!(
                "cannot be locked on this file system without opening it for writing, \
                 which is done only for a lock file of this user (uid {euid}) with one \
                 name; it is uid {}'s with {} names",
                read.uid, read.links
            ),
        });
    }
    let file = dir.open_write_existing(name)?;
    let meta = Meta::of_fd(&file).map_err(|e| Error::io("stat", path, e))?;
    if meta.kind != Kind::File || !meta.stamp.same_inode(&read.stamp) {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            reason: "was replaced while it was being locked (refused)".into(),
        });
    }
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(Error::io("lock", path, e)),
    }
}

/// The holder's note of `task`'s lock (`{task}.holder` in the locks directory `dir`), as
/// its holder wrote it and escaped for one line, or `unknown`: what a refused run or
/// call names. tmpa-maint's locks read it here too.
pub fn holder_note(dir: &Dir, task: &str) -> String {
    match dir.read(format!("{task}.holder"), NOTE_BYTES_MAX) {
        Ok((bytes, _)) => match String::from_utf8_lossy(&bytes).trim() {
            "" => "unknown".into(),
            t => crate::text::name_text(t),
        },
        Err(_) => "unknown".into(),
    }
}
