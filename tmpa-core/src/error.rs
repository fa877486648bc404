//! The library's one error type: every variant names the path or the value it concerns.

use std::io;
use std::path::{Path, PathBuf};

use crate::text::path_text;

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, and where.
///
/// The `Display` text names the path; the underlying cause (if any) is the error's
/// `source()`, so callers that print the whole chain ([`Error::chain`], or `anyhow`'s
/// `{:#}`) show both without repeating either. [`Error::path`] gives the path,
/// [`Error::io_kind`] an [`io::ErrorKind`] for every variant, and an `Error` converts into
/// an [`io::Error`] of that kind (keeping the whole error as its inner error).
///
/// # Examples
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let e = tmpa_core::Root::open(dir.path()).unwrap_err(); // holds no data directory
/// assert!(matches!(e, tmpa_core::Error::NotRoot { .. }));
/// assert_eq!(e.path(), Some(std::fs::canonicalize(dir.path()).unwrap().as_path()));
/// let io: std::io::Error = e.into();
/// assert_eq!(io.kind(), std::io::ErrorKind::InvalidInput);
/// ```
///
/// # Not guaranteed
/// The set of variants: the enum is `#[non_exhaustive]`, so match with a wildcard arm (or
/// on [`Error::io_kind`]). The `Display` texts are for people, not for parsing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on `path` failed.
    #[error("{op} {}", path_text(path))]
    Io {
        /// What was being done ("write", "rename", "read", ...), for the message.
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The root directory itself cannot be opened (missing, no permission).
    #[error("open root {}", path_text(path))]
    OpenRoot {
        /// The directory given.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The directory holds none of `notifications/`, `token_stats/`, `chat_history/`.
    #[error(
        "{}: not a TMPA root (it holds none of notifications/, token_stats/, chat_history/)",
        path_text(path)
    )]
    NotRoot {
        /// The directory that was refused.
        path: PathBuf,
    },
    /// A name (day, user, event id, session) that cannot be used as a file name.
    #[error("invalid {kind} {value:?}: {reason}")]
    InvalidName {
        /// Which kind of name.
        kind: NameKind,
        /// The offending value.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A file's content does not follow the format.
    #[error("{}: corrupt: {reason}", path_text(path))]
    Corrupt {
        /// The corrupt file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An event given by the caller is invalid.
    #[error("invalid event: {reason}")]
    InvalidEvent {
        /// What is wrong with it.
        reason: String,
    },
    /// The file already exists with other content; nothing was replaced.
    #[error("{}: already exists with different content", path_text(path))]
    Conflict {
        /// The existing file.
        path: PathBuf,
    },
    /// A path leads through a symlink or a non-directory, or out of its directory.
    #[error("{}: {reason}", path_text(path))]
    Unsafe {
        /// The path refused.
        path: PathBuf,
        /// Why.
        reason: UnsafeReason,
    },
    /// The root's configuration (`{root}/tmpa.toml`) or an archive URL cannot be used.
    #[error("{}: {reason}", path_text(path))]
    Config {
        /// The configuration file (or, for a URL given on the command line, the URL).
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `{root}/tmpa.toml` names an object store, but this build of the library has no
    /// `object-store` feature, so archived sessions there cannot be read.
    #[error(
        "{}: archives are in the object store {url}, but this build of tmpa-core has no \"object-store\" feature (rebuild with it to read them)",
        path_text(path)
    )]
    StoreUnsupported {
        /// The configuration file that names the store.
        path: PathBuf,
        /// The store's URL.
        url: String,
    },
    /// The root directory this [`crate::Root`] holds was removed or replaced since it was
    /// opened (a restore from a backup, a `mv` of another tree into its place): `path` now
    /// names another directory, or none, and the one held is gone. Nothing was done
    /// through the old one. [`crate::Root::reopen`] opens what `path` names now.
    #[error(
        "{}: the root directory was replaced or removed since it was opened (reopen it)",
        path_text(path)
    )]
    RootReplaced {
        /// The root's path.
        path: PathBuf,
        /// The error the call met in the directory held (a `NotFound`, usually).
        source: Box<Error>,
    },
    /// A notification given by the caller cannot be delivered (not JSON, too large).
    #[error("invalid notification: {reason}")]
    InvalidNotification {
        /// What is wrong with it.
        reason: String,
    },
    /// A maintenance program's lock (`{root}/.tmpa/locks/{task}.lock`) that a call which
    /// must not run beside that program needs (forgetting data: [`crate::Root::forget`])
    /// was held by a running job for longer than the call was allowed to wait. Nothing
    /// was changed; call again once the job has finished.
    #[error(
        "{}: held by a running {task} job ({holder}); waited {waited_ms} ms, nothing was changed (try again when it has finished)",
        path_text(path)
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The job's task, as in `.tmpa/runs/{task}.json` (`archive_history`,
        /// `compact_events`).
        task: &'static str,
        /// Who holds it, as its holder's note says (`pid 123 since …`), or `unknown`.
        holder: String,
        /// How long the call waited for it, in milliseconds.
        waited_ms: u64,
    },
    /// Data that was to be forgotten could not be removed from `path` (a file, or an
    /// object's URL), for the reason given: a rewritten archive that does not read back
    /// as written, an object the store would not delete. What was already removed stays
    /// removed; calling again finishes the job once the cause is fixed.
    #[error("{}: not forgotten: {reason}", path_text(path))]
    NotForgotten {
        /// The file, or the object's URL.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A request to the object store failed (after its retries), or the store refused it.
    #[error("{op} {url}: {kind}")]
    Store {
        /// What was being done ("put", "get", "head", "list", ...).
        op: &'static str,
        /// The object (or store) URL concerned.
        url: String,
        /// What kind of failure, for callers to decide on.
        kind: StoreErrorKind,
        /// The store client's own error.
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

/// What kind of object-store failure an [`Error::Store`] is.
///
/// # Examples
/// ```
/// use tmpa_core::StoreErrorKind;
/// assert_eq!(StoreErrorKind::Unavailable.io_kind(), std::io::ErrorKind::TimedOut);
/// assert_eq!(StoreErrorKind::NotFound.to_string(), "no such object");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The object does not exist.
    NotFound,
    /// The object already exists (a conditional put refused to replace it).
    AlreadyExists,
    /// The store refused the credentials or the access (403, 401).
    Denied,
    /// The store does not support the operation (e.g. no conditional put).
    Unsupported,
    /// The store could not be reached, timed out, or kept answering errors after the
    /// retries: the store is down or slow, not the object.
    Unavailable,
    /// The client could not be built from the URL and the environment.
    Config,
    /// The object is larger than the library reads into memory.
    TooLarge,
    /// Any other failure the store reported.
    Other,
}

impl StoreErrorKind {
    /// The [`io::ErrorKind`] this amounts to.
    pub fn io_kind(self) -> io::ErrorKind {
        match self {
            StoreErrorKind::NotFound => io::ErrorKind::NotFound,
            StoreErrorKind::AlreadyExists => io::ErrorKind::AlreadyExists,
            StoreErrorKind::Denied => io::ErrorKind::PermissionDenied,
            StoreErrorKind::Unsupported => io::ErrorKind::Unsupported,
            StoreErrorKind::Unavailable => io::ErrorKind::TimedOut,
            StoreErrorKind::Config => io::ErrorKind::InvalidInput,
            StoreErrorKind::TooLarge => io::ErrorKind::InvalidData,
            StoreErrorKind::Other => io::ErrorKind::Other,
        }
    }
}

impl std::fmt::Display for StoreErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreErrorKind::NotFound => "no such object",
            StoreErrorKind::AlreadyExists => "the object already exists",
            StoreErrorKind::Denied => "access denied by the store",
            StoreErrorKind::Unsupported => "not supported by the store",
            StoreErrorKind::Unavailable => "the store is unreachable, too slow or failing",
            StoreErrorKind::Config => "cannot set up the store client",
            StoreErrorKind::TooLarge => "the object is larger than the limit",
            StoreErrorKind::Other => "the store reported an error",
        })
    }
}

/// Why a path was refused ([`Error::Unsafe`]).
///
/// # Examples
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::create_dir(dir.path().join("chat_history")).unwrap();
/// let root = tmpa_core::Root::open(dir.path()).unwrap();
/// let e = root.write_file("../x", b"").unwrap_err();
/// assert!(matches!(e, tmpa_core::Error::Unsafe { reason: tmpa_core::UnsafeReason::NotAName, .. }));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UnsafeReason {
    /// A component is a symlink; symlinks are never followed.
    Symlink,
    /// A component that must be a directory is something else.
    NotADirectory,
    /// A name that is not one plain component (empty, `.`, `..`, holding `/` or NUL), or
    /// a path that is absolute or holds `..`.
    NotAName,
}

impl std::fmt::Display for UnsafeReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UnsafeReason::Symlink => "is a symlink (not followed)",
            UnsafeReason::NotADirectory => "is not a directory",
            UnsafeReason::NotAName => "is not a plain relative name (no '..', no absolute path)",
        })
    }
}

/// The kinds of names ([`Error::InvalidName`]).
///
/// # Examples
/// ```
/// let e = tmpa_core::UserId::new("a/b").unwrap_err();
/// assert!(matches!(e, tmpa_core::Error::InvalidName { kind: tmpa_core::NameKind::User, .. }));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NameKind {
    /// A `YYYY-MM-DD` day.
    Day,
    /// An event id.
    Event,
    /// A user id.
    User,
    /// A chat session name.
    Session,
    /// A notification id.
    Notification,
}

impl std::fmt::Display for NameKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NameKind::Day => "day",
            NameKind::Event => "event id",
            NameKind::User => "user id",
            NameKind::Session => "session id",
            NameKind::Notification => "notification id",
        })
    }
}

impl Error {
    /// An [`Error::Io`]: `op` ("read", "delete", ...) failed on `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The path the error concerns, when it concerns one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Error::Io { path, .. }
            | Error::OpenRoot { path, .. }
            | Error::NotRoot { path }
            | Error::Corrupt { path, .. }
            | Error::Conflict { path }
            | Error::Unsafe { path, .. }
            | Error::Config { path, .. }
            | Error::StoreUnsupported { path, .. }
            | Error::RootReplaced { path, .. }
            | Error::Locked { path, .. }
            | Error::NotForgotten { path, .. } => Some(path),
            Error::InvalidName { .. }
            | Error::InvalidEvent { .. }
            | Error::InvalidNotification { .. }
            | Error::Store { .. } => None,
        }
    }

    /// The [`io::ErrorKind`] this error amounts to: the OS error's for I/O errors,
    /// `AlreadyExists` for a conflict, `InvalidInput` for bad names, events,
    /// notifications, roots and configuration, `InvalidData` for corrupt files, `Other`
    /// for unsafe paths, [`StoreErrorKind::io_kind`] for object-store failures, and
    /// `StaleNetworkFileHandle` (`ESTALE`) for a root replaced since it was opened: never
    /// `NotFound`, so that no caller takes a replaced root for a missing file; `WouldBlock`
    /// for a maintenance lock held too long ([`Error::Locked`]), `Other` for data that
    /// could not be forgotten.
    pub fn io_kind(&self) -> io::ErrorKind {
        match self {
            Error::Io { source, .. } | Error::OpenRoot { source, .. } => source.kind(),
            Error::Conflict { .. } => io::ErrorKind::AlreadyExists,
            Error::NotRoot { .. }
            | Error::InvalidName { .. }
            | Error::InvalidEvent { .. }
            | Error::InvalidNotification { .. } => io::ErrorKind::InvalidInput,
            Error::RootReplaced { .. } => io::ErrorKind::StaleNetworkFileHandle,
            Error::Corrupt { .. } => io::ErrorKind::InvalidData,
            Error::Unsafe { .. } => io::ErrorKind::Other,
            Error::Config { .. } => io::ErrorKind::InvalidInput,
            Error::StoreUnsupported { .. } => io::ErrorKind::Unsupported,
            Error::Store { kind, .. } => kind.io_kind(),
            Error::Locked { .. } => io::ErrorKind::WouldBlock,
            Error::NotForgotten { .. } => io::ErrorKind::Other,
        }
    }

    /// The object URL the error concerns, for object-store errors.
    pub fn url(&self) -> Option<&str> {
        match self {
            Error::Store { url, .. } | Error::StoreUnsupported { url, .. } => Some(url),
            _ => None,
        }
    }

    /// The OS error number, for I/O errors.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } | Error::OpenRoot { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// The whole cause chain on one line: `"rename /a/b: No space left on device (os error 28)"`.
    pub fn chain(&self) -> String {
        chain(self)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        io::Error::new(e.io_kind(), e)
    }
}

/// Formats an error and all its sources on one line, joined by `": "`.
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        s.push_str(": ");
        s.push_str(&e.to_string());
        cur = e.source();
    }
    s
}
