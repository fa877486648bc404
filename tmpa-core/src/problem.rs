//! [`Problem`]: a file that could not be used, with its kind, reason and source error.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Error;
use crate::text::{line_text, path_text, serialize_path};

/// What kind of problem a file has ([`Problem`] has an example).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProblemKind {
    /// Its content does not follow the format (not JSON, a missing field, an id that
    /// differs from the file name, too large, not a regular file).
    Corrupt,
    /// A loose event whose id is already compacted with other content.
    Conflict,
    /// A symlink or an entry of the wrong kind where a file or directory was expected.
    Unsafe,
    /// It could not be read (permission, I/O error): see [`Problem::io_kind`].
    Unreadable,
}

/// A file that could not be used, and why.
///
/// # Examples
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let day = dir.path().join("token_stats/2026-11-23");
/// std::fs::create_dir_all(&day).unwrap();
/// std::fs::write(day.join("evt_a.json"), b"not json").unwrap();
/// let root = tmpa_core::Root::open(dir.path()).unwrap();
/// let read = root.read_day("2026-11-23".parse().unwrap()).unwrap();
/// assert_eq!(read.problems[0].kind, tmpa_core::ProblemKind::Corrupt);
/// assert!(read.problems[0].path.ends_with("evt_a.json"));
/// ```
#[derive(Clone, Debug, serde::Serialize)]
pub struct Problem {
    /// The file concerned.
    #[serde(serialize_with = "serialize_path")]
    pub path: PathBuf,
    /// What kind of problem.
    pub kind: ProblemKind,
    /// What is wrong, in words.
    pub reason: String,
    /// The line of the file concerned (1-based), when the problem is in one line of it:
    /// a damaged line of a `_compacted.json`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// The I/O error behind an [`ProblemKind::Unreadable`] file.
    #[serde(skip)]
    pub source: Option<Arc<io::Error>>,
}

impl Problem {
    /// A problem of `kind` with `path`, in words.
    pub fn new(path: impl Into<PathBuf>, kind: ProblemKind, reason: impl Into<String>) -> Problem {
        Problem {
            path: path.into(),
            kind,
            reason: reason.into(),
            line: None,
            source: None,
        }
    }

    /// The same problem, in line `line` (1-based) of its file.
    #[must_use]
    pub fn at_line(mut self, line: u64) -> Problem {
        self.line = Some(line);
        self
    }

    /// The problem a library error about `path` amounts to.
    pub fn from_error(path: &Path, e: Error) -> Problem {
        let (kind, reason, source) = match e {
            Error::Corrupt { reason, .. } => (ProblemKind::Corrupt, reason, None),
            Error::InvalidEvent { reason } => (ProblemKind::Corrupt, reason, None),
            Error::Conflict { .. } => (ProblemKind::Conflict, e.to_string(), None),
            Error::Unsafe { reason, .. } => (ProblemKind::Unsafe, reason.to_string(), None),
            other => {
                let reason = other.chain();
                let source = match other {
                    Error::Io { source, .. } | Error::OpenRoot { source, .. } => {
                        Some(Arc::new(source))
                    }
                    _ => None,
                };
                (ProblemKind::Unreadable, reason, source)
            }
        };
        Problem {
            path: path.to_path_buf(),
            kind,
            reason,
            line: None,
            source,
        }
    }

    /// The kind of the I/O error behind the problem, if there is one.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        self.source.as_ref().map(|e| e.kind())
    }
}

impl PartialEq for Problem {
    fn eq(&self, o: &Problem) -> bool {
        (&self.path, self.line, self.kind, &self.reason) == (&o.path, o.line, o.kind, &o.reason)
    }
}

impl Eq for Problem {}

impl PartialOrd for Problem {
    fn partial_cmp(&self, o: &Problem) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Problem {
    fn cmp(&self, o: &Problem) -> std::cmp::Ordering {
        (&self.path, self.line, &self.reason, self.kind).cmp(&(&o.path, o.line, &o.reason, o.kind))
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(n) => write!(
                f,
                "{}:{n}: {}",
                path_text(&self.path),
                line_text(&self.reason)
            ),
            None => write!(f, "{}: {}", path_text(&self.path), line_text(&self.reason)),
        }
    }
}
