//! The library's error type: every variant names the path or the value it concerns.

use std::io;
use std::path::PathBuf;

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, and where.
///
/// The `Display` text names the path; the underlying cause (if any) is the error's
/// `source()`, so callers that print the whole chain (`anyhow`'s `{:#}`, or
/// [`chain`]) show both without repeating either.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on `path` failed.
    #[error("{op} {}", path.display())]
    Io {
        /// What was being done ("write", "rename", "read", ...).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The directory holds none of `notifications/`, `token_stats/`, `chat_history/`.
    #[error("{}: not a TMPA root (it holds none of notifications/, token_stats/, chat_history/)", path.display())]
    NotRoot {
        /// The directory that was refused.
        path: PathBuf,
    },
    /// A name (day, user, event id, session) that cannot be used as a path component.
    #[error("invalid {kind} {value:?}: {reason}")]
    InvalidName {
        /// Which kind of name ("day", "event id", ...).
        kind: &'static str,
        /// The offending value.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A file's content does not follow the format.
    #[error("{}: corrupt: {reason}", path.display())]
    Corrupt {
        /// The corrupt file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An event or value given by the caller is invalid.
    #[error("invalid event: {reason}")]
    InvalidEvent {
        /// What is wrong with it.
        reason: String,
    },
    /// The file already exists with other content; nothing was replaced.
    #[error("{}: already exists with different content", path.display())]
    Conflict {
        /// The existing file.
        path: PathBuf,
    },
    /// A path inside the root is a symlink or not a directory where a directory is needed.
    #[error("{}: {reason}", path.display())]
    Unsafe {
        /// The path refused.
        path: PathBuf,
        /// Why ("is a symlink", "is not a directory").
        reason: &'static str,
    },
    /// Another run holds the program's lock on this root.
    #[error("{}: lock held by {holder}", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// Who holds it, as the holder wrote it ("pid 123 since ..."), or "unknown".
        holder: String,
    },
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

    /// The OS error kind, for I/O errors.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Error::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }

    /// The whole cause chain on one line: `"rename /a/b: No space left on device (os error 28)"`.
    pub fn chain(&self) -> String {
        chain(self)
    }
}

/// Formats an error and all its sources on one line, joined by `": "`.
///
/// # Examples
/// ```
/// let e = std::io::Error::other("disk on fire");
/// assert_eq!(tmpa_core::error::chain(&e), "disk on fire");
/// ```
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        s.push_str(": ");
        s.push_str(&e.to_string());
        cur = e.source();
    }
    s
}
