//! Chat sessions, live (`sessions/{session}.json`), archived locally
//! (`archive/{session}.json.gz`, and `archive/versions/{n}/{session}.json.gz` for the
//! versions of a chat resumed after its archival: `versions.rs`) or in the root's object
//! store (`{root}/tmpa.toml`), written and read through one call each.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::names::{SessionId, UserId};
use crate::root::{Root, rel};
use crate::store::ArchiveConfig;
use crate::versions::{LocalVersions, archive_file_name};

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
    /// `archive/{session}.json.gz` or `archive/versions/{n}/{session}.json.gz` (its newest
    /// version is there).
    Archived,
    /// In the object store the configuration names ([`Root::archive_config`]; its newest
    /// version is there).
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

    /// The bytes of a session, live or archived (decompressed): the live file when there
    /// is one, else the newest archived version (docs/FORMAT.md "Archived session": the
    /// highest version number, locally in `archive/` and `archive/versions/{n}/`, or in
    /// the object store that the configuration names ([`Root::archive_config`]), if any;
    /// read at each call that gets that far). A version in the store and a local one of
    /// the same number hold the same bytes (a migration in flight): the local one is read.
    ///
    /// When both a live file and an archive exist (an archival that was interrupted
    /// before deleting the source, or a chat resumed after its archival), the live file
    /// is returned: it is the newer or an equal copy.
    ///
    /// A call that gets past the live file with a store configured lists the user's
    /// `versions/` in the store (one request; it holds only sessions that came back after
    /// their archival) and reads the version it picks; it sets up its client and runtime
    /// for that call (a tokio current-thread runtime of its own: the caller needs none,
    /// and may be inside one), so connections are not reused between calls.
    ///
    /// # Errors
    /// [`Error::Io`] of kind `NotFound` when none exists; [`Error::Corrupt`] when the
    /// archive is not valid gzip or any copy is larger than 256 MiB; [`Error::Config`]
    /// when `tmpa.toml` cannot be used; [`Error::Store`] when the store fails (after
    /// retries); [`Error::StoreUnsupported`] when `tmpa.toml` names a store and the
    /// library was built without the `object-store` feature (even when a local archive
    /// exists: the store could hold a newer version); [`Error::RootReplaced`] when the
    /// root directory was replaced since it was opened.
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
        let not_found = || {
            self.or_replaced(Error::io(
                "read session",
                self.path().join(&live_rel).join(&live_name),
                rustix::io::Errno::NOENT.into(),
            ))
        };
        // A version that vanishes between the lookup and its read (taken back by an
        // archival whose session changed meanwhile, which means the live file is back,
        // or moved to the store): look again, from the live file on.
        for _ in 0..READ_TURNS_MAX {
            if let Some(dir) = self.open_dir_if_any(&live_rel)? {
                match dir.read(&live_name, SESSION_BYTES_MAX) {
                    Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => {}
                    other => return other.map(|(b, _)| b),
                }
            }
            match self.read_archived_session(user, session)? {
                Lookup::Found(bytes) => return Ok(bytes),
                Lookup::Absent => return Err(not_found()),
                Lookup::Raced => {}
            }
        }
        Err(not_found())
    }

    /// The newest archived version of a session, local or stored.
    fn read_archived_session(&self, user: &UserId, session: &SessionId) -> Result<Lookup> {
        let local = match self.open_dir_if_any(&rel::archive(user))? {
            Some(dir) => Some(LocalVersions::open(dir)?),
            None => None,
        };
        let newest = match &local {
            Some(l) => l.newest(session)?,
            None => None,
        };
        if let Some(config) = self.archive_config()? {
            let above = newest.map(|(n, _)| n);
            match stored::read_newer(self, &config, user, session, above)? {
                Lookup::Absent => {}
                found_or_raced => return Ok(found_or_raced),
            }
        }
        let Some((_, dir)) = newest else {
            return Ok(Lookup::Absent);
        };
        let name = archive_file_name(session);
        match dir.read(&name, SESSION_BYTES_MAX) {
            Ok((gz, _)) => {
                gunzip_bounded(&gz, &dir.join(&name), SESSION_BYTES_MAX).map(Lookup::Found)
            }
            Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => Ok(Lookup::Raced),
            Err(e) => Err(e),
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
    /// locally, and in the object store the configuration names ([`Root::archive_config`];
    /// one listing request). A session found in several places (or in several versions)
    /// is listed once, where [`Root::read_session`] reads it: live, else where its newest
    /// version is (locally at equal numbers). Temporaries and names that are not valid
    /// [`SessionId`]s are left out.
    ///
    /// # Errors
    /// [`Error::Io`] when a directory cannot be listed (a missing one is empty); the
    /// errors of [`Root::read_session`] for the configuration and the store.
    pub fn list_sessions(&self, user: &UserId) -> Result<Vec<(SessionId, SessionLocation)>> {
        let mut out: BTreeMap<SessionId, (u32, SessionLocation)> = BTreeMap::new();
        if let Some(dir) = self.open_dir_if_any(&rel::archive(user))? {
            for (id, n) in LocalVersions::open(dir)?.sessions()? {
                out.insert(id, (n, SessionLocation::Archived));
            }
        }
        if let Some(config) = self.archive_config()? {
            for (id, n) in stored::list(self, &config, user)? {
                let at = out.entry(id).or_insert((n, SessionLocation::Stored));
                if n > at.0 {
                    *at = (n, SessionLocation::Stored);
                }
            }
        }
        for s in self.list_stems(&rel::sessions(user), ".json")? {
            if let Ok(id) = SessionId::new(s) {
                out.insert(id, (u32::MAX, SessionLocation::Live));
            }
        }
        Ok(out.into_iter().map(|(id, (_, loc))| (id, loc)).collect())
    }
}

/// What a look for an archived session found.
enum Lookup {
    /// Its newest version's bytes, decompressed.
    Found(Vec<u8>),
    /// No archived version anywhere.
    Absent,
    /// The version picked vanished before it could be read.
    Raced,
}

/// Looks for a session at most this many times when versions vanish under the reader.
const READ_TURNS_MAX: usize = 3;

/// Sessions in the object store.
#[cfg(feature = "object-store")]
mod stored {
    use super::*;
    use crate::store::client::Store;

    /// The session's newest version in the store, read, when its number is above
    /// `above` (the newest local one): one listing of the user's `versions/`, then a GET
    /// (of version 1 only when there is no local copy to prefer).
    pub(super) fn read_newer(
        _root: &Root,
        config: &ArchiveConfig,
        user: &UserId,
        session: &SessionId,
        above: Option<u32>,
    ) -> Result<Lookup> {
        let store = Store::open(config)?;
        let later = store.later_versions(user)?;
        let n = later
            .get(session)
            .and_then(|v| v.last().copied())
            .unwrap_or(1);
        if above.is_some_and(|a| n <= a) {
            return Ok(Lookup::Absent);
        }
        let key = store.version_key(user, session, n);
        match store.get(&key, SESSION_BYTES_MAX)? {
            Some((gz, _)) => {
                gunzip_bounded(&gz, Path::new(&store.object_url(&key)), SESSION_BYTES_MAX)
                    .map(Lookup::Found)
            }
            None if n > 1 => Ok(Lookup::Raced),
            None => Ok(Lookup::Absent),
        }
    }

    pub(super) fn list(
        _root: &Root,
        config: &ArchiveConfig,
        user: &UserId,
    ) -> Result<BTreeMap<SessionId, u32>> {
        Store::open(config)?.list_sessions(user)
    }
}

/// Without the `object-store` feature: a store in `tmpa.toml` is an error, never
/// "no such session".
#[cfg(not(feature = "object-store"))]
mod stored {
    use super::*;

    pub(super) fn read_newer(
        root: &Root,
        config: &ArchiveConfig,
        _user: &UserId,
        _session: &SessionId,
        _above: Option<u32>,
    ) -> Result<Lookup> {
        Err(config.unsupported(root.path()))
    }

    pub(super) fn list(
        root: &Root,
        config: &ArchiveConfig,
        _user: &UserId,
    ) -> Result<BTreeMap<SessionId, u32>> {
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
