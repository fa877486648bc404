//! A `file://` store written through the one file layer ([`Dir`]): the configured
//! directory is opened as given (it is the configuration's, root's), and everything below
//! it — `{user}/` and `{user}/{session}.json.gz` — is reached by descriptor without
//! following a symlink, created atomically (`AtomicFile`, `RENAME_NOREPLACE`) and read
//! bounded. A user directory that someone made a symlink is refused, never followed.

use std::ffi::OsStr;
use std::io;
use std::path::PathBuf;

use crate::error::{Error, Result, StoreErrorKind};
use crate::fs::{Dir, Kind, Meta};

use super::client::{ObjectInfo, PutNew};

/// The directory of a `file://` store.
#[derive(Debug)]
pub(crate) struct LocalStore {
    base: PathBuf,
}

/// The ETag of a file of the store: its inode, modification time and size, as Arrow's
/// `LocalFileSystem` writes it, so that receipts of either read alike.
fn etag(meta: &Meta) -> String {
    let mtime_us = meta.stamp.mtime_ns.div_euclid(1000);
    format!("{:x}-{:x}-{:x}", meta.stamp.ino, mtime_us, meta.stamp.size)
}

fn info(meta: &Meta) -> ObjectInfo {
    ObjectInfo {
        size: meta.stamp.size,
        etag: Some(etag(meta)),
        version: None,
    }
}

/// A file-layer error as a store error of the right kind.
fn store_error(op: &'static str, url: String, e: Error) -> Error {
    let kind = match &e {
        Error::Unsafe { .. } => StoreErrorKind::Other,
        _ => match e.io_kind() {
            io::ErrorKind::NotFound => StoreErrorKind::NotFound,
            io::ErrorKind::PermissionDenied => StoreErrorKind::Denied,
            io::ErrorKind::AlreadyExists => StoreErrorKind::AlreadyExists,
            _ => StoreErrorKind::Other,
        },
    };
    Error::Store {
        op,
        url,
        kind,
        source: Some(Box::new(e)),
    }
}

impl LocalStore {
    pub(crate) fn new(base: PathBuf) -> LocalStore {
        LocalStore { base }
    }

    fn base(&self) -> Result<Dir> {
        Dir::open_path(&self.base)
    }

    /// The user's directory; `None` when there is none.
    fn user_dir(&self, user: &str) -> Result<Option<Dir>> {
        match self.base()?.open_dir(user) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.io_kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// What is at `user/name`, if a regular file (anything else is not an object).
    fn stat(&self, user: &str, name: &str) -> Result<Option<Meta>> {
        let Some(dir) = self.user_dir(user)? else {
            return Ok(None);
        };
        match dir.stat(name)? {
            Some(m) if m.kind == Kind::File => Ok(Some(m)),
            Some(m) => Err(Error::Corrupt {
                path: dir.join(name),
                reason: format!("is {}, not a regular file", m.kind.words()),
            }),
            None => Ok(None),
        }
    }

    pub(crate) fn head(&self, user: &str, name: &str, url: String) -> Result<Option<ObjectInfo>> {
        self.stat(user, name)
            .map(|m| m.as_ref().map(info))
            .map_err(|e| store_error("head", url, e))
    }

    pub(crate) fn get(
        &self,
        user: &str,
        name: &str,
        bytes_max: u64,
        url: String,
    ) -> Result<Option<(Vec<u8>, ObjectInfo)>> {
        let Some(dir) = self
            .user_dir(user)
            .map_err(|e| store_error("get", url.clone(), e))?
        else {
            return Ok(None);
        };
        match dir.read(name, bytes_max) {
            Ok((bytes, meta)) => Ok(Some((bytes, info(&meta)))),
            Err(e) if e.io_kind() == io::ErrorKind::NotFound => Ok(None),
            Err(Error::Corrupt { reason, .. }) if reason.contains("larger") => Err(Error::Store {
                op: "get",
                url,
                kind: StoreErrorKind::TooLarge,
                source: Some(reason.into()),
            }),
            Err(e) => Err(store_error("get", url, e)),
        }
    }

    pub(crate) fn put_new(
        &self,
        user: &str,
        name: &str,
        bytes: &[u8],
        url: String,
    ) -> Result<PutNew> {
        let fail = |e| store_error("put", url.clone(), e);
        let dir = self
            .base()
            .and_then(|b| b.create_dir_all(user))
            .map_err(fail)?;
        match crate::fs::write_in(&dir, OsStr::new(name), bytes, true) {
            Ok(()) => {}
            Err(e) if e.io_kind() == io::ErrorKind::AlreadyExists => return Ok(PutNew::Exists),
            Err(e) => return Err(fail(e)),
        }
        let meta = dir
            .stat(name)
            .map_err(fail)?
            .ok_or_else(|| fail(dir.error("stat", name, io::ErrorKind::NotFound)))?;
        Ok(PutNew::Created {
            etag: Some(etag(&meta)),
            version: None,
        })
    }

    pub(crate) fn delete_own(
        &self,
        user: &str,
        name: &str,
        tag: &str,
        url: String,
    ) -> Result<bool> {
        let fail = |e| store_error("delete", url.clone(), e);
        match self.stat(user, name).map_err(fail)? {
            Some(m) if etag(&m) == tag => {}
            _ => return Ok(false),
        }
        let dir = self.user_dir(user).map_err(fail)?;
        let Some(dir) = dir else { return Ok(false) };
        dir.unlink(name).map_err(fail)?;
        dir.sync().map_err(fail)?;
        Ok(true)
    }

    /// The names of the user's regular files ending in `suffix`, without it.
    pub(crate) fn list(&self, user: &str, suffix: &str, url: String) -> Result<Vec<String>> {
        let fail = |e| store_error("list", url.clone(), e);
        let Some(dir) = self.user_dir(user).map_err(fail)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for e in dir.entries().map_err(fail)? {
            let e = e.map_err(fail)?;
            let Some(stem) = e.name.to_str().and_then(|n| n.strip_suffix(suffix)) else {
                continue;
            };
            if e.kind.is_none_or(|k| k == Kind::File) {
                out.push(stem.to_owned());
            }
        }
        Ok(out)
    }

    /// Whether the directory is there and can be listed.
    pub(crate) fn probe(&self, url: String) -> Result<()> {
        let unavailable = |source: Box<dyn std::error::Error + Send + Sync>| Error::Store {
            op: "list",
            url: url.clone(),
            kind: StoreErrorKind::Unavailable,
            source: Some(source),
        };
        let dir = self.base().map_err(|e| match e.io_kind() {
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => {
                unavailable(format!("{} is not a directory", self.base.display()).into())
            }
            _ => unavailable(Box::new(e)),
        })?;
        dir.entries().map_err(|e| unavailable(Box::new(e)))?;
        Ok(())
    }
}
