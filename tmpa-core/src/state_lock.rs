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
use crate::fs::{Dir, Kind, Meta, Stamp};
use crate::root::{Root, STATE_DIR};

/// `EBADF`: what `flock` answers on NFS for a descriptor not open for writing.
const EBADF: i32 = rustix::io::Errno::BADF.raw_os_error();

/// tmpa-archive's task: it copies sessions and notifications into archives.
pub(crate) const ARCHIVE_TASK: &str = "archive_history";
/// tmpa-compact's task: it copies loose events into `_compacted.json`.
pub(crate) const COMPACT_TASK: &str = "compact_events";
/// A lock file's mode: readable by every user whose runs share it (writable by its owner
/// only for NFS's `flock`; never written).
pub const LOCK_MODE: u32 = 0o644;
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

/// One try of the lock of `task`, without waiting, by the library's rules: the lock file
/// must be a regular file; on NFS it is opened for writing only when it is this process
/// user's with one name.
fn try_one(root: &Root, dir: &Dir, task: &str) -> Result<Try> {
    let name = OsString::from(format!("{task}.lock"));
    let path = dir.join(&name);
    let refuse = |reason: String| Error::Corrupt {
        path: path.clone(),
        reason,
    };
    let rules = LockRules {
        check: &|meta: &Meta, _dir: &Meta| {
            if meta.kind == Kind::File {
                Ok(())
            } else {
                Err(refuse(format!(
                    "is {}, not a lock file (refused)",
                    meta.kind.words()
                )))
            }
        },
        may_write: &|meta: &Meta| {
            let euid = rustix::process::geteuid().as_raw();
            if meta.uid == euid && meta.links == 1 {
                Ok(())
            } else {
                Err(refuse(format!(
                    "cannot be locked on this file system without opening it for writing, \
                     which is done only for a lock file of this user (uid {euid}) with one \
                     name; it is uid {}'s with {} names",
                    meta.uid, meta.links
                )))
            }
        },
        open_error: &|e: Error| e,
    };
    Ok(match take_lock_file(root, dir, &name, &rules)? {
        LockTry::Held { file, .. } => Try::Held(file),
        LockTry::Busy => Try::Busy {
            holder: holder_note(dir, task),
            path,
        },
        LockTry::Replaced => Try::Busy {
            path,
            holder: "unknown (the lock file was removed or replaced each time it was taken)".into(),
        },
    })
}

/// How a caller judges a lock file (the library and tmpa-maint each have theirs), for
/// [`take_lock_file`].
pub struct LockRules<'a, E> {
    /// Whether the lock file opened read-only (`meta`) may be used, beside its
    /// directory (`dir`).
    pub check: &'a dyn Fn(&Meta, &Meta) -> std::result::Result<(), E>,
    /// Whether it may be opened for writing, where `flock` wants that (NFS).
    pub may_write: &'a dyn Fn(&Meta) -> std::result::Result<(), E>,
    /// An error opening it read-only, in the caller's words.
    pub open_error: &'a dyn Fn(Error) -> E,
}

/// What one try of a lock file found.
#[derive(Debug)]
pub enum LockTry {
    /// Locked: the file, and its stamp (what [`lock_names`] checks later).
    Held {
        /// The lock file, locked until dropped.
        file: File,
        /// Its stamp when locked.
        stamp: Stamp,
    },
    /// Another process holds it.
    Busy,
    /// Its name was removed or replaced each time it was locked: no lock anyone else
    /// would see.
    Replaced,
}

/// Tries once, without waiting, to lock `name` of `dir` (the locks directory of `root`)
/// by the protocol every process of a root shares (docs/FORMAT.md "Program state"): the
/// file opened read-only (made `O_EXCL`, [`LOCK_MODE`] whatever the umask, when
/// missing), never followed, never blocked on, never written, judged by `rules.check`;
/// `flock`ed; where `flock` wants a descriptor open for writing (NFS emulates it with
/// byte-range locks: `EBADF` on a read-only one), the same file opened for writing if
/// `rules.may_write` allows; then the name, reached again from the root, must still name
/// the file locked, else it is taken again (a few times).
///
/// # Errors
/// What `rules` says, and [`Error::Io`] (as `E`) when the file cannot be stat'ed or
/// locked.
pub fn take_lock_file<E: From<Error>>(
    root: &Root,
    dir: &Dir,
    name: &OsStr,
    rules: &LockRules<'_, E>,
) -> std::result::Result<LockTry, E> {
    let path = dir.join(name);
    for _ in 0..ATTEMPTS {
        let file = match dir.open_lock(name, LOCK_MODE) {
            Ok((file, created)) => {
                if created {
                    // Whatever the umask: every user's runs open it for reading.
                    let _ = rustix::fs::fchmod(&file, rustix::fs::Mode::from_raw_mode(LOCK_MODE));
                }
                file
            }
            Err(e) => return Err((rules.open_error)(e)),
        };
        let meta = Meta::of_fd(&file).map_err(|e| Error::io("stat", &path, e))?;
        (rules.check)(&meta, &dir.meta()?)?;
        let file = match file.try_lock() {
            Ok(()) => file,
            Err(TryLockError::WouldBlock) => return Ok(LockTry::Busy),
            Err(TryLockError::Error(e)) if e.raw_os_error() == Some(EBADF) => {
                (rules.may_write)(&meta)?;
                let file = dir.open_write_existing(name)?;
                let now = Meta::of_fd(&file).map_err(|e| Error::io("stat", &path, e))?;
                (rules.check)(&now, &dir.meta()?)?;
                if !now.stamp.same_inode(&meta.stamp) {
                    // Replaced between the two opens: try again.
                    continue;
                }
                match file.try_lock() {
                    Ok(()) => file,
                    Err(TryLockError::WouldBlock) => return Ok(LockTry::Busy),
                    Err(TryLockError::Error(e)) => return Err(Error::io("lock", &path, e).into()),
                }
            }
            Err(TryLockError::Error(e)) => return Err(Error::io("lock", &path, e).into()),
        };
        // A file removed or replaced between the open and the lock is locked in vain:
        // take the one the name names now.
        if lock_names(root, name, &meta.stamp)? {
            return Ok(LockTry::Held {
                file,
                stamp: meta.stamp,
            });
        }
    }
    Ok(LockTry::Replaced)
}

/// Whether `.tmpa/locks/{name}` of `root`, reached from the root without following a
/// symlink, names the file `stamp` describes (a lock still held is one whose name was not
/// taken from it).
///
/// # Errors
/// [`Error::Io`] when the locks directory cannot be opened for another reason than its
/// absence or a symlink on the way (both: `false`).
pub fn lock_names(root: &Root, name: &OsStr, stamp: &Stamp) -> Result<bool> {
    let dir = match root.dir().open_dir(Path::new(STATE_DIR).join("locks")) {
        Ok(d) => d,
        Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(Error::Unsafe { .. }) => return Ok(false),
        Err(e) => return Err(e),
    };
    Ok(dir
        .stat(name)?
        .is_some_and(|m| m.kind == Kind::File && m.stamp.same_inode(stamp)))
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
