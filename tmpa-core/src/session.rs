//! Chat sessions, live (`sessions/{session}.json`) or archived
//! (`archive/{session}.json.gz`), written and read through one call each.

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::names::{SessionId, UserId};
use crate::root::{Root, rel};

/// Largest session read into memory, in bytes (compressed or not).
pub const SESSION_BYTES_MAX: u64 = 256 << 20;

/// Where a session lives ([`Root::list_sessions`]).
///
/// # Examples
/// ```
/// use tmpa_core::{Root, SessionId, SessionLocation, UserId};
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::create_dir(dir.path().join("chat_history")).unwrap();
/// let root = Root::open(dir.path()).unwrap();
/// let (u, s) = (UserId::new("u1").unwrap(), SessionId::new("s1").unwrap());
/// root.write_session(&u, &s, b"{}").unwrap();
/// assert_eq!(root.list_sessions(&u).unwrap(), vec![(s, SessionLocation::Live)]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum SessionLocation {
    /// `sessions/{session}.json`.
    Live,
    /// `archive/{session}.json.gz`.
    Archived,
}

impl Root {
    /// Writes a live session, `chat_history/{user}/sessions/{session}.json`, atomically,
    /// replacing the previous version. The bytes are stored as given (a session is
    /// normally a JSON object; nothing here parses it).
    ///
    /// # Errors
    /// [`Error::Io`] / [`Error::Unsafe`] naming the path.
    ///
    /// # Examples
    /// ```
    /// use tmpa_core::{Root, SessionId, UserId};
    /// let dir = tempfile::tempdir().unwrap();
    /// std::fs::create_dir(dir.path().join("chat_history")).unwrap();
    /// let root = Root::open(dir.path()).unwrap();
    /// let (u, s) = (UserId::new("u1").unwrap(), SessionId::new("s1").unwrap());
    /// root.write_session(&u, &s, br#"{"messages":[]}"#).unwrap();
    /// assert_eq!(root.read_session(&u, &s).unwrap(), br#"{"messages":[]}"#);
    /// ```
    pub fn write_session(
        &self,
        user: &UserId,
        session: &SessionId,
        bytes: &[u8],
    ) -> Result<PathBuf> {
        let dir = self.hold_dir(&rel::sessions(user))?;
        let name = rel::session_file(session);
        crate::fs::write_in(&dir, OsStr::new(&name), bytes, false)?;
        Ok(dir.join(&name))
    }

    /// The bytes of a session, live or archived (decompressed).
    ///
    /// When both exist (an archival that was interrupted before deleting the source), the
    /// live file is returned: it is the newer or an equal copy.
    ///
    /// # Errors
    /// [`Error::Io`] of kind `NotFound` when neither exists; [`Error::Corrupt`] when the
    /// archive is not valid gzip or either is larger than 256 MiB.
    ///
    /// # Examples
    /// ```
    /// use tmpa_core::{Root, SessionId, UserId};
    /// let dir = tempfile::tempdir().unwrap();
    /// std::fs::create_dir_all(dir.path().join("chat_history/u1/sessions")).unwrap();
    /// std::fs::write(dir.path().join("chat_history/u1/sessions/s1.json"), b"{}").unwrap();
    /// let root = Root::open(dir.path()).unwrap();
    /// let (u, s) = (UserId::new("u1").unwrap(), SessionId::new("s1").unwrap());
    /// assert_eq!(root.read_session(&u, &s).unwrap(), b"{}");
    /// let none = SessionId::new("s2").unwrap();
    /// assert_eq!(root.read_session(&u, &none).unwrap_err().io_kind(), std::io::ErrorKind::NotFound);
    /// ```
    pub fn read_session(&self, user: &UserId, session: &SessionId) -> Result<Vec<u8>> {
        let live_rel = rel::sessions(user);
        let live_name = rel::session_file(session);
        if let Some(dir) = self.open_dir_if_any(&live_rel)? {
            match dir.read(&live_name, SESSION_BYTES_MAX) {
                Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => {}
                other => return other.map(|(b, _)| b),
            }
        }
        let archive_name = rel::archive_file(session);
        let not_found = || {
            Error::io(
                "read session",
                self.path().join(&live_rel).join(&live_name),
                rustix::io::Errno::NOENT.into(),
            )
        };
        let Some(dir) = self.open_dir_if_any(&rel::archive(user))? else {
            return Err(not_found());
        };
        let gz = match dir.read(&archive_name, SESSION_BYTES_MAX) {
            Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
            other => other?.0,
        };
        gunzip_bounded(&gz, &dir.join(&archive_name), SESSION_BYTES_MAX)
    }

    /// Every session of a user with where it lives, sorted by name. A session found both
    /// live and archived is listed once, as live. Temporaries and names that are not valid
    /// [`SessionId`]s are left out.
    ///
    /// # Errors
    /// [`Error::Io`] when a directory cannot be listed (a missing one is empty).
    pub fn list_sessions(&self, user: &UserId) -> Result<Vec<(SessionId, SessionLocation)>> {
        let mut out = self.list_located(&rel::sessions(user), ".json", SessionLocation::Live)?;
        out.extend(self.list_located(
            &rel::archive(user),
            ".json.gz",
            SessionLocation::Archived,
        )?);
        // Live sorts before Archived: dedup keeps the live one.
        out.sort();
        out.dedup_by(|b, a| a.0 == b.0);
        Ok(out)
    }

    fn list_located(
        &self,
        dir: &Path,
        ext: &str,
        loc: SessionLocation,
    ) -> Result<Vec<(SessionId, SessionLocation)>> {
        Ok(self
            .list_stems(dir, ext)?
            .into_iter()
            .filter_map(|s| SessionId::new(s).ok())
            .map(|id| (id, loc))
            .collect())
    }
}

/// Decompresses gzip `bytes` (from `path`), refusing output over `bytes_max`.
///
/// # Errors
/// [`Error::Corrupt`] naming `path`.
pub(crate) fn gunzip_bounded(bytes: &[u8], path: &Path, bytes_max: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .take(bytes_max + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::Corrupt {
            path: path.to_path_buf(),
            reason: format!("not valid gzip: {e}"),
        })?;
    if out.len() as u64 > bytes_max {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            reason: format!("decompresses to more than {bytes_max} bytes"),
        });
    }
    Ok(out)
}
