//! The few file-system operations the program makes, all relative to a directory
//! descriptor and none following a symlink: open a child directory, stat an entry, open a
//! file for reading, remove an entry.
//!
//! Every path the program acts on is `(directory descriptor, one name)`. A directory is
//! reached from the root one component at a time with `O_NOFOLLOW | O_DIRECTORY`, so a
//! component swapped for a symlink (even mid-run) is refused instead of followed.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, StatxFlags};
use rustix::io::Errno;
use serde::Serialize;

/// What kind of entry a name is, as `statx` says without following it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A regular file: the only kind ever deleted.
    File,
    /// A directory.
    Directory,
    /// A symbolic link (never followed).
    Symlink,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A character or block device.
    Device,
    /// Anything else.
    Other,
}

impl Kind {
    fn of_mode(mode: u16) -> Kind {
        match FileType::from_raw_mode(u32::from(mode)) {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Directory,
            FileType::Symlink => Kind::Symlink,
            FileType::Fifo => Kind::Fifo,
            FileType::Socket => Kind::Socket,
            FileType::CharacterDevice | FileType::BlockDevice => Kind::Device,
            FileType::Unknown => Kind::Other,
        }
    }

    /// A few words for reports ("a symlink").
    pub fn words(self) -> &'static str {
        match self {
            Kind::File => "a regular file",
            Kind::Directory => "a directory",
            Kind::Symlink => "a symlink",
            Kind::Fifo => "a fifo",
            Kind::Socket => "a socket",
            Kind::Device => "a device",
            Kind::Other => "an unknown kind of file",
        }
    }
}

/// A time as (seconds, nanoseconds) since the epoch; compares chronologically.
pub type Time = (i64, u32);

/// Identity, size and times of one directory entry: what the decision reads and what is
/// compared again immediately before the entry is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Device (`makedev(major, minor)`).
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Mount id, when the kernel reports it (Linux 5.8+).
    pub mnt_id: Option<u64>,
    /// Size in bytes.
    pub size: u64,
    /// Last modification of the content.
    pub mtime: Time,
    /// Last change of the inode (content, mode, owner, links, rename).
    pub ctime: Time,
    /// Kind of entry.
    pub kind: Kind,
}

impl Stamp {
    fn of(st: &rustix::fs::Statx) -> Stamp {
        Stamp {
            dev: rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor),
            ino: st.stx_ino,
            mnt_id: (st.stx_mask & StatxFlags::MNT_ID.bits() != 0).then_some(st.stx_mnt_id),
            size: st.stx_size,
            mtime: (st.stx_mtime.tv_sec, st.stx_mtime.tv_nsec),
            ctime: (st.stx_ctime.tv_sec, st.stx_ctime.tv_nsec),
            kind: Kind::of_mode(st.stx_mode),
        }
    }

    /// The later of mtime and ctime: the last time anything about the file changed.
    pub fn changed(&self) -> Time {
        self.mtime.max(self.ctime)
    }

    /// Whether `other` is the same file, unchanged: same device, inode, kind, size, mtime
    /// and ctime. (The mount id is not compared: the same file is the same file.)
    pub fn same_file_unchanged(&self, other: &Stamp) -> bool {
        self.dev == other.dev
            && self.ino == other.ino
            && self.kind == other.kind
            && self.size == other.size
            && self.mtime == other.mtime
            && self.ctime == other.ctime
    }
}

fn mask() -> StatxFlags {
    StatxFlags::BASIC_STATS | StatxFlags::MNT_ID
}

/// `statx` of the entry `name` of `dir`, not following it if it is a symlink.
///
/// # Errors
/// The OS error (`NOENT` when the entry is gone).
pub fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<Stamp, Errno> {
    rustix::fs::statx(dir, name, AtFlags::SYMLINK_NOFOLLOW, mask()).map(|s| Stamp::of(&s))
}

/// `statx` of an open descriptor.
///
/// # Errors
/// The OS error.
pub fn stat_fd(fd: BorrowedFd<'_>) -> Result<Stamp, Errno> {
    rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, mask()).map(|s| Stamp::of(&s))
}

/// `statx` of a path, following symlinks (used on `/proc/{pid}/fd/{n}`, whose magic links
/// lead to the open file itself).
///
/// # Errors
/// The OS error.
pub fn stat_path_following(dir: BorrowedFd<'_>, name: &OsStr) -> Result<Stamp, Errno> {
    rustix::fs::statx(dir, name, AtFlags::empty(), StatxFlags::BASIC_STATS).map(|s| Stamp::of(&s))
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Opens the child directory `name` of `dir`; a symlink or a non-directory is refused
/// (`LOOP` or `NOTDIR`), never followed.
///
/// # Errors
/// The OS error.
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(dir, name, dir_flags(), Mode::empty())
}

/// Opens an absolute directory path (the root, which is canonical: no symlink in it).
///
/// # Errors
/// The OS error.
pub fn open_dir_path(path: &Path) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(rustix::fs::CWD, path, dir_flags(), Mode::empty())
}

/// Opens `rel` (a relative path of plain components) below `base`, one component at a
/// time, refusing any symlink on the way.
///
/// # Errors
/// The OS error of the first component that cannot be opened; `INVAL` for a component
/// that is not a plain name.
pub fn open_dir_below(base: BorrowedFd<'_>, rel: &Path) -> Result<OwnedFd, Errno> {
    let mut fd: Option<OwnedFd> = None;
    for comp in rel.components() {
        let Component::Normal(name) = comp else {
            return Err(Errno::INVAL);
        };
        let parent = fd.as_ref().map_or(base, AsFd::as_fd);
        fd = Some(open_dir_at(parent, name)?);
    }
    match fd {
        Some(fd) => Ok(fd),
        None => rustix::io::fcntl_dupfd_cloexec(base, 0),
    }
}

/// Opens the regular file `name` of `dir` for reading, without following a symlink,
/// without blocking on a fifo and without becoming its controlling terminal.
///
/// # Errors
/// The OS error.
pub fn open_file_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Removes the (non-directory) entry `name` of `dir`.
///
/// # Errors
/// The OS error.
pub fn unlink_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
    rustix::fs::unlinkat(dir, name, AtFlags::empty())
}

/// Makes the directory's entries durable (after removals).
///
/// # Errors
/// The OS error.
pub fn sync_dir(dir: BorrowedFd<'_>) -> Result<(), Errno> {
    rustix::fs::fsync(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_refuses_symlinked_components() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        std::os::unix::fs::symlink(outside.path(), t.path().join("a/l")).unwrap();
        let base = open_dir_path(t.path()).unwrap();
        assert!(open_dir_below(base.as_fd(), Path::new("a/b")).is_ok());
        let e = open_dir_below(base.as_fd(), Path::new("a/l")).unwrap_err();
        assert!(e == Errno::LOOP || e == Errno::NOTDIR, "{e:?}");
        assert_eq!(
            open_dir_below(base.as_fd(), Path::new("a/../a")).unwrap_err(),
            Errno::INVAL
        );
    }

    #[test]
    fn stamp_sees_symlink_not_target() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("f"), b"abc").unwrap();
        std::os::unix::fs::symlink(t.path().join("f"), t.path().join("l")).unwrap();
        let d = open_dir_path(t.path()).unwrap();
        let f = stat_at(d.as_fd(), OsStr::new("f")).unwrap();
        let l = stat_at(d.as_fd(), OsStr::new("l")).unwrap();
        assert_eq!((f.kind, f.size), (Kind::File, 3));
        assert_eq!(l.kind, Kind::Symlink);
        assert!(!f.same_file_unchanged(&l));
        assert!(f.same_file_unchanged(&stat_at(d.as_fd(), OsStr::new("f")).unwrap()));
    }
}
