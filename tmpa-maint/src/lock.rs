//! One run per program per root at a time.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::path::{Path, PathBuf};

use rustix::io::Errno;
use tmpa_core::Root;
use tmpa_core::maintenance::{
    Dir, Kind, LockRules, LockTry, Meta, STATE_DIR, Stamp, lock_names, root_dir, take_lock_file,
    write_in,
};

use crate::exit::StartError;
use crate::record::Task;
use crate::trust::{Distrust, links_believed, runner_uid};

/// `.tmpa/locks`, relative to the root.
fn locks_rel() -> PathBuf {
    Path::new(STATE_DIR).join("locks")
}

/// The lock a program holds on a root for the duration of its run: an OS file lock
/// (`flock`, via std's `File::try_lock`) on `{root}/.tmpa/locks/{task}.lock`.
///
/// The OS releases it when the process dies, however it dies, so a killed run never
/// leaves a stale lock. Who holds it (pid and start time) is written beside it, in
/// `{task}.holder`, for the message that a second run prints.
///
/// # Security
/// The lock file lies in a directory the tree's owner may write, and is shared by the
/// runs of every user (root's by hand, the owner's from cron, a snapshot's). It is
/// opened **read-only** (created `O_EXCL` when missing), without following a symlink and
/// without blocking on a FIFO, and is never written: `flock` needs no more. A name the
/// owner planted there can therefore at worst be locked, never changed. It is used when
/// it is a regular file whose other names, if any, could only have been made by someone
/// who may write it ([`links_believed`]: a hard-link backup of the tree, `cp -al`, gives
/// every lock file a second name, which stops nothing; a link to a file of root's planted
/// by a user where `fs.protected_hardlinks` is 0 is refused, exit 2). Whose it is does
/// not matter, so root's runs and the owner's share one lock file whoever made it. The
/// holder's note is a separate file, replaced atomically (a temporary then a rename),
/// never written through an existing name.
///
/// # Guarantees
/// After the `flock`, the path from the root (`.tmpa/locks/{task}.lock`, no symlink
/// followed) must still name the locked file, or the lock is taken again: a file removed
/// or replaced in the meantime is not a lock anyone else would see. [`Lock::still_held`]
/// asks the same again, and a run asks it before each batch of deletions: a lock whose
/// name was taken from it mid-run (by the owner of the directory, the one user who can)
/// stops the run's deletions rather than let two runs delete side by side.
///
/// # Not guaranteed
/// That a second run never starts: whoever may write `.tmpa/locks` (the tree's owner)
/// can remove the lock file while a run holds it, and a run started then takes a new
/// one. The first run then stops before its next batch of deletions (exit 4); a run as
/// root on a tree whose root directory is root's is not exposed to this.
#[derive(Debug)]
pub struct Lock {
    _file: File,
    path: PathBuf,
    name: OsString,
    stamp: Stamp,
}

impl Lock {
    /// Takes the lock of `task` on `root` without waiting, and writes the holder's note.
    ///
    /// # Errors
    /// As [`Lock::take`].
    pub fn acquire(root: &Root, task: Task) -> Result<Lock, StartError> {
        let lock = Lock::take(root, task)?;
        lock.write_note(root);
        Ok(lock)
    }

    /// Takes the lock of `task` on `root` without waiting, and without a note (for a
    /// caller that takes several locks, all or none, and notes them once it has them).
    ///
    /// # Errors
    /// [`StartError::Locked`] naming the holder when another process holds it;
    /// [`StartError::Untrusted`] when the lock file is a symlink, not a regular file, or
    /// has a second name that someone who cannot write it could have made;
    /// [`StartError::ForeignLock`] when it cannot be opened because another user owns it;
    /// [`StartError::Core`] when the state directory cannot be made or the lock file
    /// opened.
    pub fn take(root: &Root, task: Task) -> Result<Lock, StartError> {
        let dir = root_dir(root).create_dir_all(locks_rel())?;
        let name = OsString::from(format!("{}.lock", task.as_str()));
        let path = dir.join(&name);
        let untrusted = |why| StartError::Untrusted {
            path: path.clone(),
            why,
        };
        let rules = LockRules {
            check: &|meta: &Meta, locks: &Meta| check_lock_file(meta, locks).map_err(untrusted),
            // Opened for writing (NFS) only when it is this program's user's with one
            // name, the very file checked read-only; nothing is written through it.
            may_write: &|meta: &Meta| {
                if meta.links != 1 {
                    Err(untrusted(Distrust::Links(meta.links)))
                } else if meta.uid != runner_uid() {
                    Err(untrusted(Distrust::Owner {
                        uid: meta.uid,
                        runner: runner_uid(),
                    }))
                } else {
                    Ok(())
                }
            },
            open_error: &|e: tmpa_core::Error| open_error(&dir, &name, &path, e),
        };
        match take_lock_file(root, &dir, &name, &rules)? {
            LockTry::Held { file, stamp } => Ok(Lock {
                _file: file,
                path,
                name,
                stamp,
            }),
            LockTry::Busy => Err(StartError::Locked {
                holder: read_note(&dir, task),
                path,
            }),
            LockTry::Replaced => Err(StartError::Locked {
                path,
                holder: "unknown (the lock file was removed or replaced each time it was \
                         taken)"
                    .into(),
            }),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `{root}/.tmpa/locks/{task}.lock` still names the file this lock holds (no
    /// symlink followed): if not, someone removed or replaced it, and another run may
    /// have taken a lock of its own.
    ///
    /// # Errors
    /// [`tmpa_core::Error::Io`] naming the lock file when it does not, or when its
    /// directory cannot be opened.
    pub fn still_held(&self, root: &Root) -> tmpa_core::Result<()> {
        match lock_names(root, &self.name, &self.stamp) {
            Ok(true) => Ok(()),
            Ok(false) => Err(tmpa_core::Error::io(
                "check the lock",
                self.path.clone(),
                std::io::Error::other(
                    "no longer names the lock this run holds (removed or replaced by \
                     someone else while the run held it): another run may have started, \
                     so this one stops before deleting more",
                ),
            )),
            Err(e) => Err(e),
        }
    }

    /// Writes who holds the lock (`pid 123 since …`) to `{task}.holder` beside it,
    /// replacing the previous note atomically. Informational: a failure is ignored.
    pub fn write_note(&self, root: &Root) {
        let Ok(dir) = root_dir(root).open_dir(locks_rel()) else {
            return;
        };
        let note = format!(
            "pid {} since {}\n",
            std::process::id(),
            crate::now_rfc3339()
        );
        let _ = write_in(&dir, &note_name_of(&self.name), note.as_bytes(), false);
    }
}

/// `{task}.holder` for `{task}.lock`.
fn note_name_of(lock_name: &OsStr) -> OsString {
    let stem = lock_name.to_string_lossy();
    let stem = stem.strip_suffix(".lock").unwrap_or(&stem);
    OsString::from(format!("{stem}.holder"))
}

/// The holder's note of `task`'s lock (tmpa-core reads it for the library's locks too).
fn read_note(dir: &Dir, task: Task) -> String {
    tmpa_core::maintenance::holder_note(dir, task.as_str())
}

/// An error opening the lock file `name` of `dir` read-only, as a run reports it: a
/// symlink at its name is untrusted; another user's file that this one may not even read
/// says whose, and how to give it back, not "I/O error".
fn open_error(dir: &Dir, name: &OsStr, path: &Path, e: tmpa_core::Error) -> StartError {
    if e.raw_os_error() == Some(Errno::LOOP.raw_os_error()) {
        return StartError::Untrusted {
            path: path.to_path_buf(),
            why: Distrust::Kind(Kind::Symlink),
        };
    }
    if e.io_kind() == std::io::ErrorKind::PermissionDenied {
        return match dir.stat(name) {
            Ok(Some(meta)) if meta.uid != runner_uid() => StartError::ForeignLock {
                path: path.to_path_buf(),
                owner: meta.uid,
                runner: runner_uid(),
            },
            _ => e.into(),
        };
    }
    e.into()
}

/// A lock file is used when it is a regular file whose other names, if any, someone who
/// could not write it could not have made (`dir` is the locks directory). Whose it is
/// does not matter: it is never written.
fn check_lock_file(meta: &Meta, dir: &Meta) -> Result<(), Distrust> {
    if meta.kind != Kind::File {
        return Err(Distrust::Kind(meta.kind));
    }
    links_believed(meta, dir)
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "tests build and break trees by path"
)]
mod tests {
    use super::*;
    use crate::testing::tree;

    #[test]
    fn a_second_run_is_refused_and_named_and_a_hard_link_copy_stops_nothing() {
        let (t, root) = tree();
        let held = Lock::acquire(&root, Task::CompactEvents).unwrap();
        let lock = t.path().join(".tmpa/locks/compact_events.lock");
        assert_eq!(std::fs::metadata(&lock).unwrap().len(), 0, "never written");
        let e = Lock::acquire(&root, Task::CompactEvents).unwrap_err();
        let StartError::Locked { holder, .. } = &e else {
            panic!("{e}")
        };
        assert!(
            holder.starts_with(&format!("pid {} since ", std::process::id())),
            "{holder}"
        );
        drop(held);
        // `cp -al` of the tree: every lock file gets a second name.
        let copy = tempfile::tempdir().unwrap();
        std::fs::hard_link(&lock, copy.path().join("compact_events.lock")).unwrap();
        let again = Lock::acquire(&root, Task::CompactEvents).unwrap();
        again.still_held(&root).unwrap();
    }

    #[test]
    fn a_lock_whose_name_was_taken_is_no_longer_held() {
        let (t, root) = tree();
        let held = Lock::acquire(&root, Task::ArchiveHistory).unwrap();
        let lock = t.path().join(".tmpa/locks/archive_history.lock");
        std::fs::remove_file(&lock).unwrap();
        let e = held.still_held(&root).unwrap_err();
        assert!(e.chain().contains("no longer names"), "{}", e.chain());
        // A second run takes a new lock, which the first one sees is not its own.
        let second = Lock::acquire(&root, Task::ArchiveHistory).unwrap();
        assert!(held.still_held(&root).is_err());
        second.still_held(&root).unwrap();
    }

    #[test]
    fn a_fifo_or_a_symlink_at_the_lock_s_name_is_refused_without_blocking() {
        let (t, root) = tree();
        let locks = t.path().join(".tmpa/locks");
        std::fs::create_dir_all(&locks).unwrap();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            locks.join("tmp_cleanup.lock"),
            rustix::fs::Mode::from_raw_mode(0o644),
        )
        .unwrap();
        let e = Lock::acquire(&root, Task::TmpCleanup).unwrap_err();
        assert!(e.to_string().contains("a fifo"), "{e}");
        std::os::unix::fs::symlink("/etc/passwd", locks.join("snapshot.lock")).unwrap();
        let e = Lock::acquire(&root, Task::Snapshot).unwrap_err();
        assert!(e.to_string().contains("a symlink"), "{e}");
    }

    /// Each task has a lock of its own: a compaction does not stop an archival; a lock
    /// taken without a note (a snapshot's, all or none) names no holder until noted, and
    /// the note is replaced, never written through the lock file.
    #[test]
    fn tasks_lock_apart_and_the_holder_s_note_is_a_file_of_its_own() {
        let (t, root) = tree();
        let compacting = Lock::acquire(&root, Task::CompactEvents).unwrap();
        let archiving = Lock::take(&root, Task::ArchiveHistory).unwrap();
        let locks = t.path().join(".tmpa/locks");
        assert!(
            !locks.join("archive_history.holder").exists(),
            "no note yet"
        );
        archiving.write_note(&root);
        let note = std::fs::read_to_string(locks.join("archive_history.holder")).unwrap();
        assert!(
            note.starts_with(&format!("pid {} since ", std::process::id())),
            "{note}"
        );
        assert_eq!(std::fs::metadata(archiving.path()).unwrap().len(), 0);
        assert_eq!(archiving.path(), locks.join("archive_history.lock"));
        drop(compacting);
        let again = Lock::acquire(&root, Task::CompactEvents).unwrap();
        again.still_held(&root).unwrap();
        archiving.still_held(&root).unwrap();
    }
}
