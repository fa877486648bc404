//! Opening a TMPA root and the paths inside it.
//!
//! A [`Root`] is a canonical path to a directory that holds at least one of
//! `notifications/`, `token_stats/`, `chat_history/` (SPEC §1). Paths inside it are built
//! only from typed names ([`Day`], [`UserId`], ...), and directories are created one
//! component at a time, refusing any component that is a symlink or not a directory, so
//! data can never lead a write outside the root.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::atomic::{nofollow_flags, sync_dir};
use crate::dirfd::DirHandle;
use crate::error::{Error, Result};
use crate::names::{Day, SessionId, UserId};

/// The three data directories whose presence makes a directory a TMPA root.
pub const DATA_DIRS: [&str; 3] = ["notifications", "token_stats", "chat_history"];

/// Name of the programs' own state directory inside the root.
pub const STATE_DIR: &str = ".tmpa";

/// An opened, validated TMPA root.
///
/// # Examples
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// assert!(tmpa_core::Root::open(dir.path()).is_err()); // not a root yet
/// std::fs::create_dir(dir.path().join("token_stats")).unwrap();
/// let root = tmpa_core::Root::open(dir.path()).unwrap();
/// assert!(root.token_stats_dir().ends_with("token_stats"));
/// ```
#[derive(Clone, Debug)]
pub struct Root {
    path: PathBuf,
}

impl Root {
    /// Opens `path` as a TMPA root.
    ///
    /// # Errors
    /// [`Error::Io`] when the path cannot be resolved; [`Error::NotRoot`] when it holds
    /// none of the three data directories.
    pub fn open(path: impl AsRef<Path>) -> Result<Root> {
        let given = path.as_ref();
        let path = fs::canonicalize(given).map_err(|e| Error::io("open root", given, e))?;
        let is_root = DATA_DIRS.iter().any(|d| {
            fs::symlink_metadata(path.join(d))
                .map(|m| m.is_dir())
                .unwrap_or(false)
        });
        if !is_root {
            return Err(Error::NotRoot { path });
        }
        Ok(Root { path })
    }

    /// The canonical path of the root.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `{root}/token_stats`.
    pub fn token_stats_dir(&self) -> PathBuf {
        self.path.join("token_stats")
    }

    /// `{root}/token_stats/{day}`.
    pub fn day_dir(&self, day: Day) -> PathBuf {
        self.token_stats_dir().join(day.to_string())
    }

    /// `{root}/notifications`.
    pub fn notifications_dir(&self) -> PathBuf {
        self.path.join("notifications")
    }

    /// `{root}/notifications/{user}/inbox`.
    pub fn inbox_dir(&self, user: &UserId) -> PathBuf {
        self.notifications_dir().join(user.as_str()).join("inbox")
    }

    /// `{root}/notifications/{user}/ack`.
    pub fn ack_dir(&self, user: &UserId) -> PathBuf {
        self.notifications_dir().join(user.as_str()).join("ack")
    }

    /// `{root}/chat_history`.
    pub fn chat_history_dir(&self) -> PathBuf {
        self.path.join("chat_history")
    }

    /// `{root}/chat_history/{user}/sessions`.
    pub fn sessions_dir(&self, user: &UserId) -> PathBuf {
        self.chat_history_dir().join(user.as_str()).join("sessions")
    }

    /// `{root}/chat_history/{user}/archive`.
    pub fn archive_dir(&self, user: &UserId) -> PathBuf {
        self.chat_history_dir().join(user.as_str()).join("archive")
    }

    /// `{root}/chat_history/{user}/sessions/{session}.json`.
    pub fn session_path(&self, user: &UserId, session: &SessionId) -> PathBuf {
        self.sessions_dir(user).join(format!("{session}.json"))
    }

    /// `{root}/chat_history/{user}/archive/{session}.json.gz`.
    pub fn archive_path(&self, user: &UserId, session: &SessionId) -> PathBuf {
        self.archive_dir(user).join(format!("{session}.json.gz"))
    }

    /// `{root}/.tmpa`, the programs' state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.path.join(STATE_DIR)
    }

    /// Makes sure `dir` (which must lie inside the root) exists as a real directory,
    /// creating missing components and refusing symlinks on the way.
    ///
    /// New directories are fsynced into their parent and, when running as root, take the
    /// owner and group of their parent.
    ///
    /// # Errors
    /// [`Error::Unsafe`] when a component is a symlink or not a directory, or `dir` is
    /// outside the root; [`Error::Io`] when one cannot be created.
    pub fn ensure_dir(&self, dir: &Path) -> Result<PathBuf> {
        let rel = dir.strip_prefix(&self.path).map_err(|_| Error::Unsafe {
            path: dir.to_path_buf(),
            reason: "is outside the root",
        })?;
        let mut cur = self.path.clone();
        for comp in rel.components() {
            let std::path::Component::Normal(c) = comp else {
                return Err(Error::Unsafe {
                    path: dir.to_path_buf(),
                    reason: "holds '..' or '.'",
                });
            };
            let parent = cur.clone();
            cur.push(c);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.is_dir() => continue,
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(Error::Unsafe {
                        path: cur,
                        reason: "is a symlink (not followed)",
                    });
                }
                Ok(_) => {
                    return Err(Error::Unsafe {
                        path: cur,
                        reason: "is not a directory",
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("stat", cur, e)),
            }
            match fs::create_dir(&cur) {
                Ok(()) => {
                    own_like_parent(&cur, &parent)?;
                    sync_dir(&parent)?;
                }
                // Another thread or process created it first: check it again.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if !fs::symlink_metadata(&cur)
                        .map(|m| m.is_dir())
                        .unwrap_or(false)
                    {
                        return Err(Error::Unsafe {
                            path: cur,
                            reason: "is not a directory",
                        });
                    }
                }
                Err(e) => return Err(Error::io("create directory", cur, e)),
            }
        }
        Ok(cur)
    }
}

impl Root {
    /// Holds `dir` (inside the root) by descriptor, creating it and its missing parents
    /// first. Writes through the handle ([`DirHandle::op`]) land in that directory even if
    /// another process swaps a component of its path for a symlink meanwhile.
    ///
    /// # Errors
    /// As [`Root::ensure_dir`] and [`DirHandle::open`].
    pub fn hold_dir(&self, dir: &Path) -> Result<DirHandle> {
        match DirHandle::open(self, dir) {
            Err(e) if e.io_kind() == Some(io::ErrorKind::NotFound) => {
                self.ensure_dir(dir)?;
                DirHandle::open(self, dir)
            }
            other => other,
        }
    }
}

fn own_like_parent(dir: &Path, parent: &Path) -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    let m = fs::metadata(parent).map_err(|e| Error::io("stat", parent, e))?;
    std::os::unix::fs::chown(dir, Some(m.uid()), Some(m.gid()))
        .map_err(|e| Error::io("chown", dir, e))
}

/// Reads a regular file of at most `bytes_max` bytes without following a symlink and
/// without blocking on a FIFO or device.
///
/// # Errors
/// [`Error::Corrupt`] when the path is not a regular file or is larger than `bytes_max`
/// (it is then not read into memory); [`Error::Io`] when it cannot be read.
pub fn read_bounded(path: &Path, bytes_max: u64) -> Result<Vec<u8>> {
    read_bounded_with_meta(path, bytes_max).map(|(bytes, _)| bytes)
}

/// [`read_bounded`], also returning the metadata of the file that was read (from the open
/// descriptor, so it describes exactly those bytes' file).
///
/// # Errors
/// As [`read_bounded`].
pub fn read_bounded_with_meta(path: &Path, bytes_max: u64) -> Result<(Vec<u8>, fs::Metadata)> {
    let nonblock = rustix::fs::OFlags::NONBLOCK.bits() as i32;
    let file = File::options()
        .read(true)
        .custom_flags(nofollow_flags() | nonblock)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                Error::Corrupt {
                    path: path.to_path_buf(),
                    reason: "is a symlink (not followed)".into(),
                }
            } else {
                Error::io("open", path, e)
            }
        })?;
    read_open_bounded(file, path, bytes_max)
}

fn read_open_bounded(file: File, path: &Path, bytes_max: u64) -> Result<(Vec<u8>, fs::Metadata)> {
    let meta = file.metadata().map_err(|e| Error::io("stat", path, e))?;
    if !meta.is_file() {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            reason: "is not a regular file".into(),
        });
    }
    if meta.len() > bytes_max {
        return Err(too_large(path, bytes_max));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    // take(max + 1): a file that grew after the stat is still caught.
    file.take(bytes_max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io("read", path, e))?;
    if buf.len() as u64 > bytes_max {
        return Err(too_large(path, bytes_max));
    }
    Ok((buf, meta))
}

fn too_large(path: &Path, bytes_max: u64) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        reason: format!("larger than the limit of {bytes_max} bytes (not read)"),
    }
}

/// The names in `dir` that are valid UTF-8 and end with `ext`, with `ext` stripped, sorted.
/// A missing directory is an empty one.
pub(crate) fn list_stems(dir: &Path, ext: &str) -> Result<Vec<String>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        if let Some(stem) = entry.file_name().to_str().and_then(|n| n.strip_suffix(ext)) {
            out.push(stem.to_owned());
        }
    }
    out.sort();
    Ok(out)
}
