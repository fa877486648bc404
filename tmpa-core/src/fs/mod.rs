//! The one file layer: every open, stat, rename, link, unlink, mkdir and fsync that the
//! library or a program does goes through a [`Dir`], a directory held by descriptor.
//!
//! A path such as `{root}/token_stats/2026-11-01` is re-resolved by the kernel on every
//! use: if another process swaps a component for a symlink between a check and an
//! action, a path-based action follows it out of the root. A [`Dir`] is opened once,
//! below its parent, with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` where the
//! kernel has it and one `O_NOFOLLOW | O_DIRECTORY` component at a time where it does
//! not; every later operation names one entry of *that* directory (`openat`, `fstatat`,
//! `renameat2`, `linkat`, `unlinkat`, `mkdirat`, `fsync` of the descriptor). Nothing here
//! needs `/proc`.
//!
//! Errors name the path a person would type (`{root}/token_stats/2026-11-01/evt_a.json`),
//! never a descriptor.

// The file layer is where renaming and unlinking by name live, each proven safe where it
// is used (see clippy.toml for the rule everywhere else).
#![allow(
    clippy::disallowed_methods,
    reason = "the file layer: the one place that renames and unlinks by name"
)]

mod atomic;
mod commit;
#[cfg(feature = "maintenance")]
mod dispose;
mod entries;
mod fstype;
mod journal;
#[cfg(feature = "maintenance")]
mod lease;
mod meta;
mod moves;
mod temp;

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::error::{Error, Result, UnsafeReason};

pub use atomic::AtomicFile;
pub(crate) use atomic::write_in;
pub(crate) use commit::sync_dir;
#[cfg(feature = "maintenance")]
pub use dispose::{Disposal, Expected, Keep, dispose};
pub use entries::{Entries, Entry};
pub use fstype::{FsFamily, FsType};
#[cfg(feature = "maintenance")]
pub use lease::{Lease, LeaseRefused};
pub use meta::{Kind, Meta, Stamp};
pub use moves::MovesProbe;
#[cfg(feature = "object-store")]
pub(crate) use temp::temp_name_for;
pub use temp::{Abbreviation, FinalName, TEMP_NAME_BYTES_MAX, temp_final_name, temporary_of};

/// A directory held by descriptor, with the path a person would type for it.
///
/// # Guarantees
/// Every operation acts on an entry of this very directory, whatever its path names by
/// then; no operation follows a symlink (the last component is opened `O_NOFOLLOW`,
/// directories below are reached with `RESOLVE_NO_SYMLINKS` or one `O_NOFOLLOW`
/// component at a time) or leaves the directory (`..` is refused).
///
/// # Not guaranteed
/// That [`Dir::path`] still names this directory: it is what reports show.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// Whether `openat2` works here: unknown, yes, no (an old kernel or a seccomp filter).
static OPENAT2: AtomicU8 = AtomicU8::new(0);
const OPENAT2_YES: u8 = 1;
const OPENAT2_NO: u8 = 2;

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Refuses a name that is not one plain component: empty, `.`, `..`, or holding `/` or NUL.
fn check_name(dir: &Path, name: &OsStr) -> Result<()> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(Error::Unsafe {
            path: dir.join(name),
            reason: UnsafeReason::NotAName,
        });
    }
    Ok(())
}

impl Dir {
    /// Opens the directory at `path` as the caller gives it (symlinks in it are followed:
    /// it is the caller's path, e.g. a root from the command line).
    ///
    /// # Errors
    /// [`Error::Io`] naming the path.
    pub fn open_path(path: &Path) -> Result<Dir> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(rustix::fs::CWD, path, flags, Mode::empty())
            .map_err(|e| Error::io("open directory", path, e.into()))?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The path reports show for this directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path reports show for the entry `name`.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// An [`Error::Io`] about the entry `name` (or the directory itself when `name` is
    /// empty).
    pub fn error(
        &self,
        op: &'static str,
        name: impl AsRef<OsStr>,
        e: impl Into<io::Error>,
    ) -> Error {
        let name = name.as_ref();
        let path = if name.is_empty() {
            self.path.clone()
        } else {
            self.path.join(name)
        };
        Error::io(op, path, e.into())
    }

    /// A second descriptor for this directory.
    ///
    /// # Errors
    /// [`Error::Io`] naming the directory.
    pub fn try_clone(&self) -> Result<Dir> {
        let fd = rustix::io::fcntl_dupfd_cloexec(&self.fd, 0)
            .map_err(|e| self.error("duplicate descriptor", "", e))?;
        Ok(Dir {
            fd,
            path: self.path.clone(),
        })
    }

    /// Opens the directory `rel` (one or more plain components) below this one, never
    /// following a symlink and never leaving this directory. An empty `rel` is this
    /// directory again.
    ///
    /// # Errors
    /// [`Error::Unsafe`] when a component is a symlink, not a directory, or not a plain
    /// name; [`Error::Io`] naming the path for anything else (missing, no permission).
    pub fn open_dir(&self, rel: impl AsRef<Path>) -> Result<Dir> {
        let rel = rel.as_ref();
        let shown = self.path.join(rel);
        for c in rel.components() {
            if !matches!(c, Component::Normal(_)) {
                return Err(Error::Unsafe {
                    path: shown,
                    reason: UnsafeReason::NotAName,
                });
            }
        }
        if rel.as_os_str().is_empty() {
            return self.try_clone();
        }
        if OPENAT2.load(Ordering::Relaxed) != OPENAT2_NO {
            let how =
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            match rustix::fs::openat2(&self.fd, rel, dir_flags(), Mode::empty(), how) {
                Ok(fd) => {
                    OPENAT2.store(OPENAT2_YES, Ordering::Relaxed);
                    return Ok(Dir { fd, path: shown });
                }
                // Not there, or refused by a seccomp filter: the portable way below.
                Err(Errno::NOSYS | Errno::PERM) => OPENAT2.store(OPENAT2_NO, Ordering::Relaxed),
                // Which component is a symlink or not a directory: the walk below says.
                Err(Errno::LOOP | Errno::NOTDIR | Errno::XDEV | Errno::AGAIN) => {}
                Err(e) => return Err(Error::io("open directory", shown, e.into())),
            }
        }
        self.open_dir_stepwise(rel)
    }

    /// [`Dir::open_dir`] one `O_NOFOLLOW | O_DIRECTORY` component at a time.
    fn open_dir_stepwise(&self, rel: &Path) -> Result<Dir> {
        let mut cur: Option<Dir> = None;
        for c in rel.components() {
            let Component::Normal(name) = c else {
                unreachable!("checked by open_dir")
            };
            let parent = cur.as_ref().unwrap_or(self);
            let next = parent.open_child(name)?;
            cur = Some(next);
        }
        cur.map_or_else(|| self.try_clone(), Ok)
    }

    /// Opens the child directory `name`; a symlink or non-directory is [`Error::Unsafe`].
    fn open_child(&self, name: &OsStr) -> Result<Dir> {
        check_name(&self.path, name)?;
        match rustix::fs::openat(&self.fd, name, dir_flags(), Mode::empty()) {
            Ok(fd) => Ok(Dir {
                fd,
                path: self.path.join(name),
            }),
            // With O_DIRECTORY a symlink gives ENOTDIR as often as ELOOP: ask which.
            Err(Errno::LOOP | Errno::NOTDIR) => Err(Error::Unsafe {
                path: self.path.join(name),
                reason: match self.stat(name) {
                    Ok(Some(m)) if m.kind == Kind::Symlink => UnsafeReason::Symlink,
                    _ => UnsafeReason::NotADirectory,
                },
            }),
            Err(e) => Err(self.error("open directory", name, e)),
        }
    }

    /// Opens the directory `rel` below this one like [`Dir::open_dir`], creating the
    /// missing components first. A new directory is fsynced into its parent and, when
    /// running as root, takes the owner and group of its parent (so a tree owned by the
    /// backend's user stays writable by it after a root cron job).
    ///
    /// # Errors
    /// As [`Dir::open_dir`]; [`Error::Io`] when a directory cannot be created.
    pub fn create_dir_all(&self, rel: impl AsRef<Path>) -> Result<Dir> {
        let rel = rel.as_ref();
        match self.open_dir(rel) {
            Err(e) if e.io_kind() == io::ErrorKind::NotFound => {}
            other => return other,
        }
        let mut cur = self.try_clone()?;
        for c in rel.components() {
            let Component::Normal(name) = c else {
                return Err(Error::Unsafe {
                    path: self.path.join(rel),
                    reason: UnsafeReason::NotAName,
                });
            };
            cur = match cur.open_child(name) {
                Ok(d) => d,
                Err(e) if e.io_kind() == io::ErrorKind::NotFound => cur.make_child(name)?,
                Err(e) => return Err(e),
            };
        }
        Ok(cur)
    }

    /// Creates the child directory `name` (or takes the one another process just made).
    fn make_child(&self, name: &OsStr) -> Result<Dir> {
        match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o755)) {
            Ok(()) => {
                let child = self.open_child(name)?;
                if rustix::process::geteuid().is_root() {
                    let parent = Meta::of_fd(&self.fd).map_err(|e| self.error("stat", "", e))?;
                    chown_to(&child.fd, parent.uid, parent.gid)
                        .map_err(|e| self.error("chown", name, e))?;
                }
                self.sync()?;
                Ok(child)
            }
            Err(Errno::EXIST) => self.open_child(name),
            Err(e) => Err(self.error("create directory", name, e)),
        }
    }

    /// The metadata of this directory itself.
    ///
    /// # Errors
    /// [`Error::Io`] naming the directory.
    pub fn meta(&self) -> Result<Meta> {
        Meta::of_fd(&self.fd).map_err(|e| self.error("stat", "", e))
    }

    /// The metadata of the entry `name`, not following it; `None` when there is none.
    ///
    /// # Errors
    /// [`Error::Io`] naming the entry for anything but its absence.
    pub fn stat(&self, name: impl AsRef<OsStr>) -> Result<Option<Meta>> {
        let name = name.as_ref();
        check_name(&self.path, name)?;
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(Meta::of(&st))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(self.error("stat", name, e)),
        }
    }

    /// The mount id of this directory (`statx`, Linux 5.8 and later), to tell bind mounts
    /// of one file system apart; `None` where the kernel does not say.
    pub fn mount_id(&self) -> Option<u64> {
        use rustix::fs::StatxFlags;
        let st = rustix::fs::statx(&self.fd, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID).ok()?;
        (st.stx_mask & StatxFlags::MNT_ID.bits() != 0).then_some(st.stx_mnt_id)
    }

    /// Opens the entry `name` for reading, without following a symlink, without blocking
    /// on a FIFO and without making it a controlling terminal. The caller checks what it
    /// opened with [`Meta::of_fd`].
    ///
    /// The read does not change the file's access time (`O_NOATIME`, where the process
    /// owns the file or has `CAP_FOWNER`; otherwise the kernel's `relatime` rule applies):
    /// reading every event of a day would otherwise dirty every inode, and a live
    /// service's next fsync would wait for the journal to write them all.
    ///
    /// # Errors
    /// [`Error::Io`] naming the entry (kind `NotFound` when absent; a symlink is refused
    /// with `ELOOP`).
    pub fn open_read(&self, name: impl AsRef<OsStr>) -> Result<File> {
        /// Set once `O_NOATIME` was refused (a file of another user, no `CAP_FOWNER`):
        /// the files of a tree mostly share an owner, so the next opens do without.
        static NOATIME_REFUSED: AtomicBool = AtomicBool::new(false);
        let name = name.as_ref();
        check_name(&self.path, name)?;
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        if !NOATIME_REFUSED.load(Ordering::Relaxed) {
            match rustix::fs::openat(&self.fd, name, flags | OFlags::NOATIME, Mode::empty()) {
                Err(Errno::PERM) => NOATIME_REFUSED.store(true, Ordering::Relaxed),
                other => {
                    return other
                        .map(File::from)
                        .map_err(|e| self.error("open", name, e));
                }
            }
        }
        rustix::fs::openat(&self.fd, name, flags, Mode::empty())
            .map(File::from)
            .map_err(|e| self.error("open", name, e))
    }

    /// Reads the regular file `name` whole, if it is at most `bytes_max` bytes, with the
    /// metadata of the file read (from its descriptor: it describes exactly those bytes).
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the entry is a symlink, not a regular file, or larger than
    /// `bytes_max` (then not read into memory); [`Error::Io`] naming the entry otherwise
    /// (kind `NotFound` when absent).
    pub fn read(&self, name: impl AsRef<OsStr>, bytes_max: u64) -> Result<(Vec<u8>, Meta)> {
        let name = name.as_ref();
        let path = || self.path.join(name);
        let file = self.open_read(name).map_err(|e| {
            if e.raw_os_error() == Some(Errno::LOOP.raw_os_error()) {
                Error::Corrupt {
                    path: path(),
                    reason: "is a symlink (not followed)".into(),
                }
            } else {
                e
            }
        })?;
        read_open(file, &path(), bytes_max)
    }

    /// The entries of this directory, in the order the file system lists them, without
    /// `.` and `..`.
    ///
    /// # Errors
    /// [`Error::Io`] naming the directory when it cannot be opened for listing; an error
    /// in the middle of the listing is an item of the iterator.
    pub fn entries(&self) -> Result<Entries> {
        let stream = rustix::fs::Dir::read_from(&self.fd).map_err(|e| self.error("list", "", e))?;
        Ok(Entries {
            path: self.path.clone(),
            stream,
        })
    }

    /// Calls `visit` with the name, the kind as the listing says (`d_type`; `None` where
    /// the file system does not say: ask [`Dir::stat`]) and the inode number of each
    /// entry of this directory, without `.` and `..`, each name borrowed from one buffer:
    /// a listing that allocates nothing per entry, for the backend's hot listings (a
    /// large inbox).
    ///
    /// # Errors
    /// [`Error::Io`] naming the directory when it cannot be listed.
    pub fn visit_entries(&self, mut visit: impl FnMut(&OsStr, Option<Kind>, u64)) -> Result<()> {
        /// One `getdents64` fills it with about 2,000 entries of a short name.
        const LISTING_BUF_BYTES: usize = 64 << 10;
        // A descriptor of its own, as Dir::entries: a listing moves its offset.
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, ".", flags, Mode::empty())
            .map_err(|e| self.error("list", "", e))?;
        let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); LISTING_BUF_BYTES];
        let mut listing = rustix::fs::RawDir::new(&fd, &mut buf);
        while let Some(entry) = listing.next() {
            let entry = entry.map_err(|e| self.error("list", "", e))?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let kind = match entry.file_type() {
                FileType::Unknown => None,
                t => Some(Kind::of_type(t)),
            };
            visit(OsStr::from_bytes(name), kind, entry.ino());
        }
        Ok(())
    }

    /// The names of the entries of this directory for which `keep` holds, sorted.
    ///
    /// # Errors
    /// [`Error::Io`] naming the directory.
    pub fn names(&self, mut keep: impl FnMut(&OsStr) -> bool) -> Result<Vec<OsString>> {
        let mut out = Vec::new();
        for e in self.entries()? {
            let e = e?;
            if keep(&e.name) {
                out.push(e.name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes the (non-directory) entry `name`.
    ///
    /// # Errors
    /// [`Error::Io`] naming the entry (kind `NotFound` when it is already gone).
    pub fn unlink(&self, name: impl AsRef<OsStr>) -> Result<()> {
        let name = name.as_ref();
        check_name(&self.path, name)?;
        rustix::fs::unlinkat(&self.fd, name, AtFlags::empty())
            .map_err(|e| self.error("delete", name, e))
    }

    /// Whether this directory is on a read-only mount (`fstatvfs`); `false` when the
    /// kernel does not say.
    pub fn on_read_only_mount(&self) -> bool {
        rustix::fs::fstatvfs(&self.fd)
            .is_ok_and(|s| s.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
    }

    /// Removes the empty directory `name`.
    ///
    /// # Errors
    /// [`Error::Io`] naming it (kind `DirectoryNotEmpty` when it holds anything).
    pub fn remove_dir(&self, name: impl AsRef<OsStr>) -> Result<()> {
        let name = name.as_ref();
        check_name(&self.path, name)?;
        rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR)
            .map_err(|e| self.error("remove directory", name, e))
    }

    /// Creates the directory `name` in this one with permission bits `mode` (less the
    /// umask) and opens it; an existing entry is an error, never reused.
    ///
    /// # Errors
    /// [`Error::Io`] naming the entry (kind `AlreadyExists` when there is one).
    pub fn create_dir_new(&self, name: &OsStr, mode: u32) -> Result<Dir> {
        check_name(&self.path, name)?;
        rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(mode))
            .map_err(|e| self.error("create directory", name, e))?;
        self.open_child(name)
    }

    /// Makes this directory's entries durable (after creations, renames, removals).
    ///
    /// # Errors
    /// [`Error::Io`] naming the directory.
    pub fn sync(&self) -> Result<()> {
        rustix::fs::fsync(&self.fd).map_err(|e| self.error("fsync directory", "", e))
    }

    /// Creates a new file `name` for writing (`O_EXCL`, never following a symlink), with
    /// permission bits `mode` (less the umask).
    ///
    /// # Errors
    /// [`Error::Io`] naming the entry (kind `AlreadyExists` when it exists).
    pub fn create_new(&self, name: &OsStr, mode: u32) -> Result<File> {
        check_name(&self.path, name)?;
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(mode))
            .map(File::from)
            .map_err(|e| self.error("create", name, e))
    }

    /// Creates a file in this directory that has no name (`O_TMPFILE`, read and write):
    /// it is gone when its last descriptor closes, however the process ends, so a kill
    /// leaves nothing behind. `Ok(None)` where the file system or kernel cannot create
    /// one (then create a named file and unlink it).
    ///
    /// # Errors
    /// [`Error::Io`] naming the directory (a full disk, permissions).
    pub fn create_unnamed(&self, mode: u32) -> Result<Option<File>> {
        let flags = OFlags::RDWR | OFlags::TMPFILE | OFlags::CLOEXEC;
        match rustix::fs::openat(&self.fd, ".", flags, Mode::from_raw_mode(mode)) {
            Ok(fd) => Ok(Some(File::from(fd))),
            // EOPNOTSUPP: the file system has no unnamed files; EISDIR or EINVAL: a kernel
            // older than O_TMPFILE reads the flags as O_DIRECTORY.
            Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL) => Ok(None),
            Err(e) => Err(self.error("create an unnamed file in", "", e)),
        }
    }

    /// Opens the file `name` for reading only, creating it first (`O_EXCL`, permission
    /// bits `mode` less the umask) when there is none: lock files, which are only ever
    /// `flock`ed and never written, so that a name that turns out to be another name of
    /// someone else's file can at worst be locked, never changed. Never follows a
    /// symlink, never blocks on a FIFO nor makes it a controlling terminal. The caller
    /// checks what it opened with [`Meta::of_fd`]. Returns the file and whether this call
    /// created it.
    ///
    /// # Errors
    /// [`Error::Io`] naming the entry (a symlink is refused with `ELOOP`; a name that
    /// keeps appearing and disappearing between the two opens, with `EAGAIN`).
    pub fn open_lock(&self, name: &OsStr, mode: u32) -> Result<(File, bool)> {
        /// Opens tried before giving up on a name another process creates and removes
        /// again and again.
        const ATTEMPTS: usize = 8;
        check_name(&self.path, name)?;
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY;
        for _ in 0..ATTEMPTS {
            match rustix::fs::openat(&self.fd, name, flags | OFlags::CLOEXEC, Mode::empty()) {
                Ok(fd) => return Ok((File::from(fd), false)),
                Err(Errno::NOENT) => {}
                Err(e) => return Err(self.error("open", name, e)),
            }
            let create = flags | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
            match rustix::fs::openat(&self.fd, name, create, Mode::from_raw_mode(mode)) {
                Ok(fd) => return Ok((File::from(fd), true)),
                // Made by another process in between: open that one.
                Err(Errno::EXIST) => {}
                Err(e) => return Err(self.error("create", name, e)),
            }
        }
        Err(self.error("open", name, Errno::AGAIN))
    }

    /// Opens the existing file `name` for writing, without creating, truncating or
    /// following it, without blocking on a FIFO: the one use is a lock file on NFS, whose
    /// client emulates `flock` with byte-range locks that need a descriptor open for
    /// writing. Nothing is written through it; the caller checks it is the very file it
    /// already checked ([`Meta::of_fd`]).
    ///
    /// # Errors
    /// [`Error::Io`] naming the entry.
    pub fn open_write_existing(&self, name: &OsStr) -> Result<File> {
        check_name(&self.path, name)?;
        let flags =
            OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        rustix::fs::openat(&self.fd, name, flags, Mode::empty())
            .map(File::from)
            .map_err(|e| self.error("open", name, e))
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Gives an open file or directory the owner and group `(uid, gid)`, unless it has them.
pub(crate) fn chown_to(fd: impl AsFd, uid: u32, gid: u32) -> io::Result<()> {
    let st = rustix::fs::fstat(&fd)?;
    if (st.st_uid, st.st_gid) == (uid, gid) {
        return Ok(());
    }
    let (u, g) = (
        rustix::fs::Uid::from_raw(uid),
        rustix::fs::Gid::from_raw(gid),
    );
    rustix::fs::fchown(&fd, Some(u), Some(g))?;
    Ok(())
}

/// Reads an open regular file whole, if it is at most `bytes_max` bytes.
fn read_open(mut file: File, path: &Path, bytes_max: u64) -> Result<(Vec<u8>, Meta)> {
    let meta = Meta::of_fd(&file).map_err(|e| Error::io("stat", path, e))?;
    if meta.kind != Kind::File {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            reason: "is not a regular file".into(),
        });
    }
    let too_large = || Error::Corrupt {
        path: path.to_path_buf(),
        reason: format!("larger than the limit of {bytes_max} bytes (not read)"),
    };
    if meta.stamp.size > bytes_max {
        return Err(too_large());
    }
    let mut buf = Vec::with_capacity(usize::try_from(meta.stamp.size).unwrap_or(0));
    // take(max + 1): a file that grew after the stat is still caught.
    (&mut file)
        .take(bytes_max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io("read", path, e))?;
    if buf.len() as u64 > bytes_max {
        return Err(too_large());
    }
    Ok((buf, meta))
}

#[cfg(test)]
mod tests;
