//! A directory's listing, read through a descriptor of its own: [`Entries`] of [`Entry`].

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rustix::fs::FileType;

use super::Kind;
#[cfg(doc)]
use super::{Dir, Stamp};
use crate::error::{Error, Result};

/// One entry of a directory listing.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Its name.
    pub name: OsString,
    /// Its kind as the listing says (`d_type`); `None` where the file system does not
    /// say (ask [`Dir::stat`]).
    pub kind: Option<Kind>,
    /// Its inode number as the listing says (`d_ino`): visiting many files in this order
    /// reads the inode tables and data of a large directory in disk order (what `find`
    /// does on directories of more than 10,000 entries). Not a proof of identity: the
    /// entry may be replaced after the listing; [`Stamp`] from its descriptor is.
    pub ino: u64,
}

/// The entries of a [`Dir`], without `.` and `..` (see [`Dir::entries`]). It reads
/// through a descriptor of its own, so it outlives neither nor borrows the [`Dir`].
pub struct Entries {
    pub(super) path: PathBuf,
    pub(super) stream: rustix::fs::Dir,
}

impl std::fmt::Debug for Entries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entries").field("dir", &self.path).finish()
    }
}

impl Iterator for Entries {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Result<Entry>> {
        loop {
            let e = match self.stream.read()? {
                Ok(e) => e,
                Err(e) => return Some(Err(Error::io("list", self.path.clone(), e.into()))),
            };
            let name = e.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let kind = match e.file_type() {
                FileType::Unknown => None,
                t => Some(Kind::of_type(t)),
            };
            return Some(Ok(Entry {
                name: OsStr::from_bytes(name).to_os_string(),
                kind,
                ino: e.ino(),
            }));
        }
    }
}
