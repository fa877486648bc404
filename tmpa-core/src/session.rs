//! Chat sessions, live (`sessions/{session}.json`) or archived
//! (`archive/{session}.json.gz`), read through one call.

use std::io::{self, Read};
use std::path::Path;

use crate::error::{Error, Result};
use crate::names::{SessionId, UserId};
use crate::root::{Root, list_stems, read_bounded};

/// Largest session read into memory, in bytes (compressed or not).
pub const SESSION_BYTES_MAX: u64 = 256 << 20;

/// Where a session lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionLocation {
    /// `sessions/{session}.json`.
    Live,
    /// `archive/{session}.json.gz`.
    Archived,
}

impl Root {
    /// The bytes of a session, live or archived (decompressed).
    ///
    /// When both exist (an archival that was interrupted before deleting the source), the
    /// live file is returned: it is the newer or an equal copy.
    ///
    /// # Errors
    /// [`Error::Io`] of kind `NotFound` when neither exists; [`Error::Corrupt`] when the
    /// archive is not valid gzip or either is larger than [`SESSION_BYTES_MAX`].
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
    /// ```
    pub fn read_session(&self, user: &UserId, session: &SessionId) -> Result<Vec<u8>> {
        let live = self.session_path(user, session);
        match read_bounded(&live, SESSION_BYTES_MAX) {
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            other => return other,
        }
        let archived = self.archive_path(user, session);
        let gz = read_bounded(&archived, SESSION_BYTES_MAX)?;
        gunzip_bounded(&gz, &archived, SESSION_BYTES_MAX)
    }

    /// Every session of a user with where it lives, sorted by name. A session found both
    /// live and archived is listed once, as live. Temporaries (`{final}.tmp.{suffix}`,
    /// which may end in `.json` too) and names that are not valid [`SessionId`]s are left
    /// out.
    ///
    /// # Errors
    /// [`Error::Io`] when a directory cannot be listed (a missing one is empty).
    pub fn list_sessions(&self, user: &UserId) -> Result<Vec<(SessionId, SessionLocation)>> {
        let mut out = list_with_ext(&self.sessions_dir(user), ".json", SessionLocation::Live)?;
        out.extend(list_with_ext(
            &self.archive_dir(user),
            ".json.gz",
            SessionLocation::Archived,
        )?);
        // Live sorts before Archived: dedup keeps the live one.
        out.sort();
        out.dedup_by(|b, a| a.0 == b.0);
        Ok(out)
    }
}

/// Decompresses gzip `bytes` (from `path`), refusing output over `bytes_max`.
///
/// # Errors
/// [`Error::Corrupt`] naming `path`.
pub fn gunzip_bounded(bytes: &[u8], path: &Path, bytes_max: u64) -> Result<Vec<u8>> {
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

fn list_with_ext(
    dir: &Path,
    ext: &str,
    loc: SessionLocation,
) -> Result<Vec<(SessionId, SessionLocation)>> {
    Ok(list_stems(dir, ext)?
        .into_iter()
        // `s.json.tmp.json` ends in `.json` but is a temporary of `s.json` (SPEC §2).
        .filter(|s| crate::temp_final_name(std::ffi::OsStr::new(&format!("{s}{ext}"))).is_none())
        .filter_map(|s| SessionId::new(s).ok())
        .map(|id| (id, loc))
        .collect())
}
