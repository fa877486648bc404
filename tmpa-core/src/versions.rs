//! Versions of an archived chat session: a session archived, then written again by the
//! backend (a chat resumed), then archived again, has two archives, never one
//! overwritten (docs/FORMAT.md "Archived session").
//!
//! - Version 1 is `archive/{session}.json.gz`, the only name archives had before
//!   versions; version `n` ≥ 2 is `archive/versions/{n}/{session}.json.gz`, so that the
//!   file name is the same for every version and fits wherever version 1 fits (a session
//!   name of 247 bytes). In an object store the keys are the same below
//!   `{prefix}/{user}/`.
//! - The newest is the one with the highest number. tmpa-archive numbers a new version
//!   one above every version it finds, locally and in the store, so the numbers follow
//!   the order in which the backend wrote what they hold; no clock decides (the machine's
//!   clock can step back, and a gzip header's time has seconds only).
//! - The library reads the newest version (a local copy and a stored one of the same
//!   number hold the same bytes: a migration in flight; the local one is read).
//!
//! This module is the one place that knows the names: the library's readers, the store's
//! client and tmpa-archive all go through it.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io;
use std::path::PathBuf;

use crate::error::Result;
use crate::fs::{Dir, Kind, Meta, temp_final_name};
use crate::names::SessionId;

/// The directory of the versions after the first, in a user's `archive/` (and below
/// `{prefix}/{user}/` in a store).
pub const VERSIONS_DIR: &str = "versions";
/// The highest version number: a session archived more often than this is refused by
/// tmpa-archive (it would need a look long before), and bounds what a reader lists.
pub const VERSION_MAX: u32 = 999_999;

/// The file name of every version of `session`: `{session}.json.gz`.
pub fn archive_file_name(session: &SessionId) -> String {
    format!("{session}.json.gz")
}

/// The session whose archive file is `name` (`{session}.json.gz`, not a temporary).
pub fn session_of_archive_name(name: &OsStr) -> Option<SessionId> {
    if temp_final_name(name).is_some() {
        return None;
    }
    let stem = name.to_str()?.strip_suffix(".json.gz")?;
    SessionId::new(stem).ok()
}

/// The directory of version `n`, relative to the user's `archive/`: empty for version 1,
/// `versions/{n}` after.
///
/// # Panics
/// When `n` is 0 or above [`VERSION_MAX`].
pub fn version_rel(n: u32) -> PathBuf {
    assert!((1..=VERSION_MAX).contains(&n), "no version {n}");
    if n == 1 {
        PathBuf::new()
    } else {
        PathBuf::from(VERSIONS_DIR).join(n.to_string())
    }
}

/// The version a directory of `versions/` stands for: a decimal number from 2 to
/// [`VERSION_MAX`] without leading zeros; `None` for any other name.
pub fn version_of_dir(name: &str) -> Option<u32> {
    if name.starts_with('0') || name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok().filter(|n| (2..=VERSION_MAX).contains(n))
}

/// A user's local session archive, `chat_history/{user}/archive/`, with its version
/// directories, each held by descriptor (listed once: they are few, one per version
/// number any of the user's sessions reached).
#[derive(Debug)]
pub struct LocalVersions {
    base: Dir,
    /// `versions/{n}/`, ascending.
    dirs: Vec<(u32, Dir)>,
}

impl LocalVersions {
    /// Holds `base` (a user's `archive/`) and its version directories. Entries of
    /// `versions/` that are not version directories are passed over.
    ///
    /// # Errors
    /// [`crate::Error::Io`] / [`crate::Error::Unsafe`] when `versions/` or one of its
    /// version directories cannot be opened (a symlink is refused, never followed).
    pub fn open(base: Dir) -> Result<LocalVersions> {
        let mut dirs = Vec::new();
        let versions = match base.open_dir(VERSIONS_DIR) {
            Ok(d) => Some(d),
            Err(e) if e.io_kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if let Some(versions) = versions {
            for entry in versions.entries()? {
                let entry = entry?;
                let Some(n) = entry.name.to_str().and_then(version_of_dir) else {
                    continue;
                };
                let kind = match entry.kind {
                    Some(k) => Some(k),
                    None => versions.stat(&entry.name)?.map(|m| m.kind),
                };
                // A file that happens to have a version's name holds no version; a
                // symlink is refused by `open_dir`, never followed.
                if matches!(kind, Some(Kind::File) | None) {
                    continue;
                }
                dirs.push((n, versions.open_dir(&entry.name)?));
            }
        }
        dirs.sort_by_key(|(n, _)| *n);
        Ok(LocalVersions { base, dirs })
    }

    /// The user's `archive/` itself (version 1's directory).
    pub fn base(&self) -> &Dir {
        &self.base
    }

    /// The directory of version `n`, when it exists.
    pub fn dir(&self, n: u32) -> Option<&Dir> {
        if n == 1 {
            return Some(&self.base);
        }
        self.dirs
            .binary_search_by_key(&n, |(v, _)| *v)
            .ok()
            .map(|i| &self.dirs[i].1)
    }

    /// The highest version number any directory is for (1 when there is none).
    pub fn highest_dir(&self) -> u32 {
        self.dirs.last().map_or(1, |(n, _)| *n)
    }

    /// Every version of `session` present, ascending, with what is at its name (not
    /// followed: a symlink or another kind of entry is there too, for the caller to
    /// refuse).
    ///
    /// # Errors
    /// [`crate::Error::Io`] naming an entry that cannot be looked at.
    pub fn of(&self, session: &SessionId) -> Result<Vec<(u32, Meta)>> {
        let name = archive_file_name(session);
        let mut out = Vec::new();
        if let Some(m) = self.base.stat(&name)? {
            out.push((1, m));
        }
        for (n, dir) in &self.dirs {
            if let Some(m) = dir.stat(&name)? {
                out.push((*n, m));
            }
        }
        Ok(out)
    }

    /// The newest version of `session` present, with its directory.
    ///
    /// # Errors
    /// As [`LocalVersions::of`].
    pub fn newest(&self, session: &SessionId) -> Result<Option<(u32, &Dir)>> {
        let name = archive_file_name(session);
        for (n, dir) in self.dirs.iter().rev() {
            if dir.stat(&name)?.is_some() {
                return Ok(Some((*n, dir)));
            }
        }
        Ok(self.base.stat(&name)?.map(|_| (1, &self.base)))
    }

    /// Every session with an archive here (regular files named `{session}.json.gz`,
    /// temporaries and other names left out), with its newest version.
    ///
    /// # Errors
    /// [`crate::Error::Io`] naming a directory that cannot be listed.
    pub fn sessions(&self) -> Result<BTreeMap<SessionId, u32>> {
        let mut out = BTreeMap::new();
        let dirs = std::iter::once((1, &self.base)).chain(self.dirs.iter().map(|(n, d)| (*n, d)));
        for (n, dir) in dirs {
            for entry in dir.entries()? {
                let entry = entry?;
                if entry.kind.is_some_and(|k| k != Kind::File) {
                    continue;
                }
                if let Some(id) = session_of_archive_name(&entry.name) {
                    out.insert(id, n);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names_are_exact() {
        assert_eq!(version_rel(1), PathBuf::new());
        assert_eq!(version_rel(2), PathBuf::from("versions/2"));
        assert_eq!(version_of_dir("2"), Some(2));
        assert_eq!(version_of_dir("999999"), Some(VERSION_MAX));
        for bad in ["", "1", "0", "02", "1000000", "x", "2a", "-3", "+3"] {
            assert_eq!(version_of_dir(bad), None, "{bad}");
        }
        let s = SessionId::new("a.json.3").unwrap();
        assert_eq!(archive_file_name(&s), "a.json.3.json.gz");
        assert_eq!(
            session_of_archive_name(OsStr::new("a.json.3.json.gz")),
            Some(s)
        );
        assert_eq!(session_of_archive_name(OsStr::new("a.json.gz.tmp.1")), None);
        assert_eq!(session_of_archive_name(OsStr::new("versions")), None);
    }

    /// Versions are found in `archive/` and `archive/versions/{n}/`, the newest first by
    /// number, whatever the files' times; odd entries of `versions/` are passed over.
    #[test]
    fn newest_is_the_highest_number() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("archive");
        std::fs::create_dir_all(a.join("versions/2")).unwrap();
        std::fs::create_dir_all(a.join("versions/10")).unwrap();
        std::fs::create_dir_all(a.join("versions/junk")).unwrap();
        std::fs::write(a.join("versions/readme"), b"").unwrap();
        std::fs::write(a.join("versions/7"), b"not a directory").unwrap();
        std::fs::write(a.join("s.json.gz"), b"1").unwrap();
        std::fs::write(a.join("versions/10/s.json.gz"), b"10").unwrap();
        std::fs::write(a.join("versions/2/s.json.gz"), b"2").unwrap();
        std::fs::write(a.join("versions/2/t.json.gz"), b"2").unwrap();
        std::fs::write(a.join("u.json.gz"), b"1").unwrap();
        let v = LocalVersions::open(Dir::open_path(&a).unwrap()).unwrap();
        let s = SessionId::new("s").unwrap();
        let found: Vec<u32> = v.of(&s).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(found, [1, 2, 10]);
        assert_eq!(v.newest(&s).unwrap().unwrap().0, 10);
        assert_eq!(v.highest_dir(), 10);
        let t_ = SessionId::new("t").unwrap();
        assert_eq!(v.newest(&t_).unwrap().unwrap().0, 2);
        let all = v.sessions().unwrap();
        assert_eq!(all.get(&s), Some(&10));
        assert_eq!(all.get(&t_), Some(&2));
        assert_eq!(all.get(&SessionId::new("u").unwrap()), Some(&1));
        assert!(
            v.newest(&SessionId::new("none").unwrap())
                .unwrap()
                .is_none()
        );
    }
}
