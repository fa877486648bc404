//! Chat sessions, live (`sessions/{session}.json`), archived locally
//! (`archive/{session}.json.gz`) or in the root's object store (`{root}/tmpa.toml`),
//! written and read through one call each.

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::names::{SessionId, UserId};
use crate::root::{Root, rel};
use crate::store::ArchiveConfig;

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
    /// `{prefix}/{user}/{session}.json.gz` in the object store the configuration names ([`Root::archive_config`]).
    Stored,
}

impl Root {
    /// Writes a live session, `chat_history/{user}/sessions/{session}.json`, atomically,
    /// replacing the previous version. The bytes are stored as given (a session is
    /// normally a JSON object; nothing here parses it).
    ///
    /// # Errors
    /// [`Error::Io`] / [`Error::Unsafe`] naming the path; [`Error::RootReplaced`].
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
        crate::fs::write_in(&dir, OsStr::new(&name), bytes, false)
            .map_err(|e| self.or_replaced(e))?;
        Ok(dir.join(&name))
    }

    /// The bytes of a session, live or archived (decompressed): looked for live, then in
    /// the local `archive/`, then in the object store that the configuration names
    /// ([`Root::archive_config`]; read at each call that gets that far).
    ///
    /// When several exist (an archival that was interrupted before deleting the source),
    /// the first found is returned: the live file is the newer or an equal copy.
    ///
    /// A call that reaches the store sets up its client and runtime for that call (a
    /// tokio current-thread runtime of its own: the caller needs none, and may be inside
    /// one), so connections are not reused between calls.
    ///
    /// # Errors
    /// [`Error::Io`] of kind `NotFound` when none exists; [`Error::Corrupt`] when the
    /// archive is not valid gzip or any copy is larger than 256 MiB; [`Error::Config`]
    /// when `tmpa.toml` cannot be used; [`Error::Store`] when the store fails (after
    /// retries); [`Error::StoreUnsupported`] when `tmpa.toml` names a store and the
    /// library was built without the `object-store` feature; [`Error::RootReplaced`]
    /// when the root directory was replaced since it was opened.
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
            self.or_replaced(Error::io(
                "read session",
                self.path().join(&live_rel).join(&live_name),
                rustix::io::Errno::NOENT.into(),
            ))
        };
        if let Some(dir) = self.open_dir_if_any(&rel::archive(user))? {
            match dir.read(&archive_name, SESSION_BYTES_MAX) {
                Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => {}
                other => {
                    let gz = other?.0;
                    return gunzip_bounded(&gz, &dir.join(&archive_name), SESSION_BYTES_MAX);
                }
            }
        }
        let Some(config) = self.archive_config()? else {
            return Err(not_found());
        };
        match stored::read(self, &config, user, session)? {
            Some(bytes) => Ok(bytes),
            None => Err(not_found()),
        }
    }

    /// The archive tier the configuration names: `/etc/tmpa/tmpa.toml` (the machine's)
    /// when it exists, else `{root}/tmpa.toml` (the tree's), the same
    /// precedence as the maintenance programs' (which also take `--to`); `None` when
    /// archives are local (no file, or no `[archive]` table in the one read). Read at
    /// every call that needs it, never through a symlink. Unlike the programs, the library
    /// does not check who could have written the file: it only reads archives by it, as
    /// the tree's owner.
    ///
    /// # Errors
    /// [`Error::Config`] naming the file and the problem (or `/etc/tmpa` when it is a
    /// symlink or not a directory).
    ///
    /// # Examples
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// std::fs::create_dir(dir.path().join("chat_history")).unwrap();
    /// let root = tmpa_core::Root::open(dir.path()).unwrap();
    /// assert_eq!(root.archive_config().unwrap(), None);
    /// std::fs::write(dir.path().join("tmpa.toml"), "[archive]\nurl = \"s3://b/host-a\"\n").unwrap();
    /// assert_eq!(root.archive_config().unwrap().unwrap().url.to_string(), "s3://b/host-a");
    /// ```
    pub fn archive_config(&self) -> Result<Option<ArchiveConfig>> {
        ArchiveConfig::load(self.dir())
    }

    /// Every session of a user with where it lives, sorted by name: live, archived
    /// locally, and in the object store the configuration names ([`Root::archive_config`]) (one listing request).
    /// A session found in several places is listed once, where [`Root::read_session`]
    /// finds it first (live, then local archive, then store). Temporaries and names that
    /// are not valid [`SessionId`]s are left out.
    ///
    /// # Errors
    /// [`Error::Io`] when a directory cannot be listed (a missing one is empty); the
    /// errors of [`Root::read_session`] for the configuration and the store.
    pub fn list_sessions(&self, user: &UserId) -> Result<Vec<(SessionId, SessionLocation)>> {
        let mut out = self.list_located(&rel::sessions(user), ".json", SessionLocation::Live)?;
        out.extend(self.list_located(
            &rel::archive(user),
            ".json.gz",
            SessionLocation::Archived,
        )?);
        if let Some(config) = self.archive_config()? {
            out.extend(
                stored::list(self, &config, user)?
                    .into_iter()
                    .map(|id| (id, SessionLocation::Stored)),
            );
        }
        // Live sorts before Archived before Stored: dedup keeps the first.
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

/// Sessions in the object store.
#[cfg(feature = "object-store")]
mod stored {
    use super::*;
    use crate::store::client::Store;

    pub(super) fn read(
        _root: &Root,
        config: &ArchiveConfig,
        user: &UserId,
        session: &SessionId,
    ) -> Result<Option<Vec<u8>>> {
        let store = Store::open(config)?;
        let key = store.key(user, session);
        let Some((gz, _)) = store.get(&key, SESSION_BYTES_MAX)? else {
            return Ok(None);
        };
        gunzip_bounded(&gz, Path::new(&store.object_url(&key)), SESSION_BYTES_MAX).map(Some)
    }

    pub(super) fn list(
        _root: &Root,
        config: &ArchiveConfig,
        user: &UserId,
    ) -> Result<Vec<SessionId>> {
        Store::open(config)?.list_sessions(user)
    }
}

/// Without the `object-store` feature: a store in `tmpa.toml` is an error, never
/// "no such session".
#[cfg(not(feature = "object-store"))]
mod stored {
    use super::*;

    pub(super) fn read(
        root: &Root,
        config: &ArchiveConfig,
        _user: &UserId,
        _session: &SessionId,
    ) -> Result<Option<Vec<u8>>> {
        Err(config.unsupported(root.path()))
    }

    pub(super) fn list(
        root: &Root,
        config: &ArchiveConfig,
        _user: &UserId,
    ) -> Result<Vec<SessionId>> {
        Err(config.unsupported(root.path()))
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
