//! A `file://` store written through the one file layer ([`Dir`]): the configured
//! directory is opened as given (it is the configuration's, root's), and everything below
//! it — `{user}/`, `{user}/{session}.json.gz`, `{user}/versions/{n}/{session}.json.gz`,
//! `{user}/acked-{n}-{16 hex}.tar.gz` — is reached by descriptor without following a
//! symlink, created atomically (`AtomicFile`, `RENAME_NOREPLACE`) and read bounded. A
//! directory that someone made a symlink is refused, never followed. Nothing is unlinked
//! by a name another process could use: an object taken back is first moved aside to a
//! fresh private name and checked there ([`LocalStore::delete_own`]).

use std::ffi::OsStr;
use std::io;
use std::path::PathBuf;

use crate::error::{Error, Result, StoreErrorKind};
use crate::fs::{Dir, Kind, Meta, temp_name_for};

use super::object::{ObjectInfo, ObjectKey, PutNew, Removal};

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

/// Where an object is below the store's directory: the user's directory, the directories
/// below it (`versions/{n}`), and the file's name.
#[derive(Clone, Copy, Debug)]
pub(crate) struct At<'k> {
    user: &'k str,
    dirs: &'k [String],
    name: &'k str,
}

impl LocalStore {
    pub(crate) fn new(base: PathBuf) -> LocalStore {
        LocalStore { base }
    }

    /// Where `key` is.
    pub(crate) fn at<'k>(&self, key: &'k ObjectKey) -> At<'k> {
        At {
            user: key.user(),
            dirs: key.dirs(),
            name: key.name(),
        }
    }

    fn base(&self) -> Result<Dir> {
        Dir::open_path(&self.base)
    }

    /// The directory of `at`; `None` when it (or a parent) does not exist.
    fn dir_of(&self, at: At<'_>) -> Result<Option<Dir>> {
        let rel: PathBuf = std::iter::once(at.user)
            .chain(at.dirs.iter().map(String::as_str))
            .collect();
        match self.base()?.open_dir(rel) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.io_kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// What is at `at`, if a regular file (anything else is not an object).
    fn stat(&self, at: At<'_>) -> Result<Option<(Dir, Meta)>> {
        let Some(dir) = self.dir_of(at)? else {
            return Ok(None);
        };
        match dir.stat(at.name)? {
            Some(m) if m.kind == Kind::File => Ok(Some((dir, m))),
            Some(m) => Err(Error::Corrupt {
                path: dir.join(at.name),
                reason: format!("is {}, not a regular file", m.kind.words()),
            }),
            None => Ok(None),
        }
    }

    pub(crate) fn head(&self, at: At<'_>, url: String) -> Result<Option<ObjectInfo>> {
        self.stat(at)
            .map(|m| m.as_ref().map(|(_, m)| info(m)))
            .map_err(|e| store_error("head", url, e))
    }

    pub(crate) fn get(
        &self,
        at: At<'_>,
        bytes_max: u64,
        url: String,
    ) -> Result<Option<(Vec<u8>, ObjectInfo)>> {
        let Some(dir) = self
            .dir_of(at)
            .map_err(|e| store_error("get", url.clone(), e))?
        else {
            return Ok(None);
        };
        match dir.read(at.name, bytes_max) {
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

    pub(crate) fn put_new(&self, at: At<'_>, bytes: &[u8], url: String) -> Result<PutNew> {
        let fail = |e| store_error("put", url.clone(), e);
        let rel: PathBuf = std::iter::once(at.user)
            .chain(at.dirs.iter().map(String::as_str))
            .collect();
        let dir = self
            .base()
            .and_then(|b| b.create_dir_all(rel))
            .map_err(fail)?;
        match crate::fs::write_in(&dir, OsStr::new(at.name), bytes, true) {
            Ok(()) => {}
            Err(e) if e.io_kind() == io::ErrorKind::AlreadyExists => return Ok(PutNew::Exists),
            Err(e) => return Err(fail(e)),
        }
        let meta = dir
            .stat(at.name)
            .map_err(fail)?
            .ok_or_else(|| fail(dir.error("stat", at.name, io::ErrorKind::NotFound)))?;
        Ok(PutNew::Created {
            etag: Some(etag(&meta)),
            version: None,
        })
    }

    /// Deletes the file at `at` only if it is the one whose ETag is `tag`: it is moved
    /// aside to a fresh name only this process knows, checked there, and only then
    /// unlinked; another file is moved back without replacing anything (when a newer
    /// file took the name meanwhile, it stays at the private name, which the error names).
    pub(crate) fn delete_own(&self, at: At<'_>, tag: &str, url: String) -> Result<Removal> {
        let fail = |e| store_error("delete", url.clone(), e);
        let Some((dir, meta)) = self.stat(at).map_err(fail)? else {
            return Ok(Removal::NotOurs);
        };
        if etag(&meta) != tag {
            return Ok(Removal::NotOurs);
        }
        let unique = format!(
            "takeback-{}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let private = temp_name_for(OsStr::new(at.name), &unique);
        match dir.move_aside(OsStr::new(at.name), &dir, &private) {
            Ok(()) => {}
            Err(e) if e.io_kind() == io::ErrorKind::NotFound => return Ok(Removal::NotOurs),
            Err(e) => return Err(fail(e)),
        }
        let moved = dir.stat(&private).map_err(fail)?;
        if moved.is_some_and(|m| m.kind == Kind::File && etag(&m) == tag) {
            #[allow(
                clippy::disallowed_methods,
                reason = "a fresh private name this call moved the object to, checked above"
            )]
            dir.unlink(&private).map_err(fail)?;
            dir.sync().map_err(fail)?;
            return Ok(Removal::Deleted);
        }
        // Another file was at the name at the instant of the move: it goes back, never
        // over a newer one.
        dir.move_noreplace(&private, &dir, OsStr::new(at.name))
            .map_err(fail)?;
        Ok(Removal::NotOurs)
    }

    /// The user's regular files (of the directory `sub` and its version directories when
    /// given: `versions`), each as its path below the user's directory; `suffix`-less.
    pub(crate) fn list(
        &self,
        user: &str,
        sub: Option<&str>,
        url: String,
    ) -> Result<Vec<Vec<String>>> {
        let fail = |e| store_error("list", url.clone(), e);
        let Some(dir) = self
            .dir_of(At {
                user,
                dirs: &[],
                name: "",
            })
            .map_err(fail)?
        else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let files = |d: &Dir, prefix: &[String], out: &mut Vec<Vec<String>>| -> Result<()> {
            for e in d.entries()? {
                let e = e?;
                let Some(name) = e.name.to_str() else {
                    continue;
                };
                if e.kind.is_none_or(|k| k == Kind::File) {
                    let mut rel = prefix.to_vec();
                    rel.push(name.to_owned());
                    out.push(rel);
                }
            }
            Ok(())
        };
        if sub.is_none() {
            files(&dir, &[], &mut out).map_err(fail)?;
        }
        // The version directories: `versions/{n}/` (a symlink among them is refused).
        let versions = match dir.open_dir(crate::versions::VERSIONS_DIR) {
            Ok(v) => v,
            Err(e) if e.io_kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(fail(e)),
        };
        for e in versions.entries().map_err(fail)? {
            let e = e.map_err(fail)?;
            let Some(n) = e
                .name
                .to_str()
                .filter(|n| crate::versions::version_of_dir(n).is_some())
            else {
                continue;
            };
            let vdir = versions.open_dir(&e.name).map_err(fail)?;
            let prefix = [crate::versions::VERSIONS_DIR.to_owned(), n.to_owned()];
            files(&vdir, &prefix, &mut out).map_err(fail)?;
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

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "tests build and break trees by path"
)]
mod tests {
    use crate::maintenance::store::{PutNew, Removal, Store};
    use crate::{ArchiveConfig, SessionId, UserId};

    /// An object taken back is removed only while it is the one written: a file that took
    /// its name meanwhile stays, and nothing is left at a private name. Versions are
    /// listed by number, each session once.
    #[test]
    fn delete_own_removes_only_the_object_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display()).parse().unwrap();
        let store = Store::open(&ArchiveConfig::for_url(url)).unwrap();
        let (u, s) = (UserId::new("u1").unwrap(), SessionId::new("s").unwrap());
        let etag_of = |p: PutNew| match p {
            PutNew::Created { etag, .. } => etag.unwrap(),
            PutNew::Exists => panic!("exists"),
        };
        let v1 = store.key(&u, &s);
        etag_of(store.put_new(&v1, b"one".to_vec()).unwrap());
        let v2 = store.version_key(&u, &s, 2);
        let mine = etag_of(store.put_new(&v2, b"mine".to_vec()).unwrap());
        assert_eq!(v2.version(), Some(2));
        let path = dir.path().join("u1/versions/2/s.json.gz");
        assert_eq!(std::fs::read(&path).unwrap(), b"mine");
        // Another writer replaces it (a new file renamed over the name).
        std::fs::write(dir.path().join("theirs"), b"theirs").unwrap();
        std::fs::rename(dir.path().join("theirs"), &path).unwrap();
        assert_eq!(
            store.delete_own(&v2, &mine, None).unwrap(),
            Removal::NotOurs
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"theirs");
        let v3 = store.version_key(&u, &s, 3);
        let third = etag_of(store.put_new(&v3, b"three".to_vec()).unwrap());
        assert_eq!(store.later_versions(&u).unwrap()[&s], vec![2, 3]);
        assert_eq!(store.list_sessions(&u).unwrap()[&s], 3);
        assert_eq!(
            store.delete_own(&v3, &third, None).unwrap(),
            Removal::Deleted
        );
        let left: Vec<_> = std::fs::read_dir(dir.path().join("u1/versions/3"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(store.list_sessions(&u).unwrap()[&s], 2);
        assert_eq!(
            store.delete_own(&v3, &third, None).unwrap(),
            Removal::NotOurs
        );
    }
}
