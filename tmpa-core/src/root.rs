//! Opening a TMPA root, and where things live inside it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::fs::{Dir, Kind};
use crate::names::{Day, SessionId, UserId};

/// The three data directories whose presence makes a directory a TMPA root.
pub const DATA_DIRS: [&str; 3] = ["notifications", "token_stats", "chat_history"];

/// Name of the programs' own state directory inside the root.
pub const STATE_DIR: &str = ".tmpa";

/// An opened TMPA root: a directory that holds at least one of `notifications/`,
/// `token_stats/`, `chat_history/` (docs/FORMAT.md "The tree"), and every call a backend makes on it.
///
/// # Guarantees
/// - Every path inside the root is built from typed names ([`Day`], [`UserId`], ...) that
///   cannot leave their directory, and reached by descriptor from the root without
///   following any symlink: a directory swapped for a symlink, even while a call runs,
///   makes the call fail ([`Error::Unsafe`]), never act outside the root.
/// - Every file is written atomically and durably (temporary in the same directory,
///   fsync or, on ext4 with a journal and XFS, write-back; rename; directory fsync): a
///   reader, or a crash, sees the old file or the new one, never a part.
/// - Safe from many threads and processes at once, and while the maintenance programs
///   run. Nothing needs `/proc`.
/// - When running as root, new files and directories take the owner and group of their
///   directory, and a replaced file keeps its mode and owner.
///
/// # A root replaced under a running service
/// The root is held by descriptor from [`Root::open`] on. When the directory is removed
/// and another put at its path (a restore from a backup), the one held is empty and
/// gone: every call that then fails to find what it looks for, or would answer "none"
/// from a directory that is missing only because the root is gone, fails with
/// [`Error::RootReplaced`] instead (checked by comparing the held directory with what
/// the path names: device and inode, and whether it still has a link). Nothing is
/// written into the old directory. [`Root::reopen`] opens what the path names now.
///
/// # Not guaranteed
/// - A root *renamed* away (still present under another name) is not noticed: calls
///   keep acting on the directory held, under its new name, until [`Root::reopen`].
///   Stop the service, or reopen after a restore that moves the old tree aside.
/// - Uniqueness of event ids across days is the backend's to keep (an id recorded on two
///   days is two events).
/// - Reads are bounded (1 MiB an event, 256 MiB a session); larger files are reported,
///   not read.
///
/// # Examples
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// assert!(tmpa_core::Root::open(dir.path()).is_err()); // not a root yet
/// std::fs::create_dir(dir.path().join("token_stats")).unwrap();
/// let root = tmpa_core::Root::open(dir.path()).unwrap();
/// assert_eq!(root.path(), std::fs::canonicalize(dir.path()).unwrap());
/// ```
#[derive(Clone, Debug)]
pub struct Root {
    dir: Arc<Dir>,
}

impl Root {
    /// Opens `path` as a TMPA root.
    ///
    /// # Errors
    /// [`Error::OpenRoot`] when the path cannot be resolved or opened;
    /// [`Error::NotRoot`] when it holds none of the three data directories (as real
    /// directories: a symlinked data directory does not count).
    pub fn open(path: impl AsRef<Path>) -> Result<Root> {
        let given = path.as_ref();
        let open_root = |source| Error::OpenRoot {
            path: given.to_path_buf(),
            source,
        };
        let canonical = std::fs::canonicalize(given).map_err(open_root)?;
        let dir = Dir::open_path(&canonical).map_err(|e| match e {
            Error::Io { source, .. } => open_root(source),
            other => other,
        })?;
        let mut is_root = false;
        for d in DATA_DIRS {
            if dir.stat(d)?.is_some_and(|m| m.kind == Kind::Directory) {
                is_root = true;
            }
        }
        if !is_root {
            return Err(Error::NotRoot { path: canonical });
        }
        Ok(Root { dir: Arc::new(dir) })
    }

    /// Makes `path` a root, durably, and opens it: creates the directory if it is missing
    /// (its parent must exist), then `notifications/`, `token_stats/` and
    /// `chat_history/` in it, each new directory fsynced into its parent (as root, each
    /// takes the owner and group of its parent). Idempotent: an existing root, or a
    /// directory holding some of the three, is completed and opened; nothing existing is
    /// changed.
    ///
    /// # Errors
    /// [`Error::OpenRoot`] when the path or its parent cannot be resolved or opened;
    /// [`Error::Unsafe`] when one of the three data directories is a symlink or not a
    /// directory; [`Error::Io`] naming the directory that could not be created.
    ///
    /// # Examples
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("app");
    /// let root = tmpa_core::Root::create(&path).unwrap();
    /// assert!(path.join("notifications").is_dir() && path.join("chat_history").is_dir());
    /// assert_eq!(tmpa_core::Root::create(&path).unwrap().path(), root.path()); // idempotent
    /// ```
    pub fn create(path: impl AsRef<Path>) -> Result<Root> {
        let given = path.as_ref();
        let open_root = |source| Error::OpenRoot {
            path: given.to_path_buf(),
            source,
        };
        let dir = match std::fs::canonicalize(given) {
            Ok(canonical) => Dir::open_path(&canonical)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let name = given.file_name().ok_or_else(|| open_root(e))?;
                let parent = match given.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ => Path::new("."),
                };
                let parent = std::fs::canonicalize(parent).map_err(open_root)?;
                Dir::open_path(&parent)?.create_dir_all(name)?
            }
            Err(e) => return Err(open_root(e)),
        };
        for d in DATA_DIRS {
            dir.create_dir_all(d)?;
        }
        Root::open(given)
    }

    /// Opens the directory the root's path names now, as [`Root::open`] does: after a
    /// restore replaced the root ([`Error::RootReplaced`]), the new `Root` acts on the
    /// restored tree. This `Root` (and its clones) keep the directory they hold.
    ///
    /// # Errors
    /// As [`Root::open`].
    ///
    /// # Examples
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("app");
    /// let root = tmpa_core::Root::create(&path).unwrap();
    /// std::fs::rename(&path, dir.path().join("app.old")).unwrap(); // a restore moves it aside
    /// std::fs::remove_dir_all(dir.path().join("app.old")).unwrap();  // and removes it
    /// tmpa_core::Root::create(&path).unwrap();                        // the restored tree
    /// let u = tmpa_core::UserId::new("u1").unwrap();
    /// let e = root.unacked(&u).unwrap_err();
    /// assert!(matches!(e, tmpa_core::Error::RootReplaced { .. }), "{e}");
    /// let root = root.reopen().unwrap();
    /// assert!(root.unacked(&u).unwrap().is_empty());
    /// ```
    pub fn reopen(&self) -> Result<Root> {
        Root::open(self.path())
    }

    /// The canonical path of the root.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the directory held is no longer the root's: removed (no link left), or
    /// the path names another directory or nothing. A question the held descriptor
    /// cannot answer (`ESTALE` on NFS) counts as replaced.
    fn replaced(&self) -> bool {
        let Ok(held) = self.dir.meta() else {
            return true;
        };
        if held.links == 0 {
            return true;
        }
        match rustix::fs::stat(self.path()) {
            Ok(now) => !crate::fs::Stamp::of(&now).same_inode(&held.stamp),
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => true,
            Err(_) => false,
        }
    }

    /// `e`, or, when it is a `NotFound` (or `ESTALE`) met because the root directory was
    /// replaced, an [`Error::RootReplaced`] around it: the one check behind every call.
    pub(crate) fn or_replaced(&self, e: Error) -> Error {
        let kind = e.io_kind();
        let may_be_replaced = kind == std::io::ErrorKind::NotFound
            || kind == std::io::ErrorKind::StaleNetworkFileHandle;
        if may_be_replaced && !matches!(e, Error::RootReplaced { .. }) && self.replaced() {
            Error::RootReplaced {
                path: self.path().to_path_buf(),
                source: Box::new(e),
            }
        } else {
            e
        }
    }

    /// The root directory, held by descriptor.
    pub(crate) fn dir(&self) -> &Dir {
        &self.dir
    }

    /// Opens the directory `rel` inside the root, creating what is missing.
    ///
    /// # Errors
    /// As [`Dir::create_dir_all`]; [`Error::RootReplaced`] when the root was replaced.
    pub(crate) fn hold_dir(&self, rel: &Path) -> Result<Dir> {
        self.dir
            .create_dir_all(rel)
            .map_err(|e| self.or_replaced(e))
    }

    /// Opens the directory `rel` inside the root; `None` when it (or a parent) does not
    /// exist.
    ///
    /// # Errors
    /// As [`Dir::open_dir`]; [`Error::RootReplaced`] when it is missing because the root
    /// was replaced (a removed root has no directories: "none" would be a wrong answer).
    pub(crate) fn open_dir_if_any(&self, rel: &Path) -> Result<Option<Dir>> {
        match self.dir.open_dir(rel) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => match self.or_replaced(e) {
                replaced @ Error::RootReplaced { .. } => Err(replaced),
                _ => Ok(None),
            },
            Err(e) => Err(self.or_replaced(e)),
        }
    }
}

/// Where things live, relative to the root.
pub(crate) mod rel {
    use super::*;

    /// The directory of a user's archived notifications, beside `inbox/` and `ack/`.
    pub const NOTIFICATION_ARCHIVE_DIR: &str = "archive";

    pub(crate) fn token_stats() -> PathBuf {
        PathBuf::from("token_stats")
    }

    pub(crate) fn day(day: Day) -> PathBuf {
        token_stats().join(day.to_string())
    }

    pub(crate) fn inbox(user: &UserId) -> PathBuf {
        Path::new("notifications").join(user.as_str()).join("inbox")
    }

    pub(crate) fn ack(user: &UserId) -> PathBuf {
        Path::new("notifications").join(user.as_str()).join("ack")
    }

    pub(crate) fn notification_archive(user: &UserId) -> PathBuf {
        Path::new("notifications")
            .join(user.as_str())
            .join(NOTIFICATION_ARCHIVE_DIR)
    }

    pub(crate) fn chat_history() -> PathBuf {
        PathBuf::from("chat_history")
    }

    pub(crate) fn sessions(user: &UserId) -> PathBuf {
        chat_history().join(user.as_str()).join("sessions")
    }

    pub(crate) fn archive(user: &UserId) -> PathBuf {
        chat_history().join(user.as_str()).join("archive")
    }

    pub(crate) fn session_file(session: &SessionId) -> String {
        format!("{session}.json")
    }
}
