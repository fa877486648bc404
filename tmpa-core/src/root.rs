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
///   fsync, rename, directory fsync): a reader, or a crash, sees the old file or the new
///   one, never a part.
/// - Safe from many threads and processes at once, and while the maintenance programs
///   run. Nothing needs `/proc`.
/// - When running as root, new files and directories take the owner and group of their
///   directory, and a replaced file keeps its mode and owner.
///
/// # Not guaranteed
/// - The root is held by descriptor from [`Root::open`] on: if the directory is renamed or
///   replaced later, this `Root` keeps acting on the directory it opened (open a new one
///   to follow the path).
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

    /// The canonical path of the root.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The root directory, held by descriptor.
    pub(crate) fn dir(&self) -> &Dir {
        &self.dir
    }

    /// Opens the directory `rel` inside the root, creating what is missing.
    pub(crate) fn hold_dir(&self, rel: &Path) -> Result<Dir> {
        self.dir.create_dir_all(rel)
    }

    /// Opens the directory `rel` inside the root; `None` when it (or a parent) does not
    /// exist.
    pub(crate) fn open_dir_if_any(&self, rel: &Path) -> Result<Option<Dir>> {
        match self.dir.open_dir(rel) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Where things live, relative to the root.
pub(crate) mod rel {
    use super::*;

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
            .join(crate::notify_archive::NOTIFICATION_ARCHIVE_DIR)
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
