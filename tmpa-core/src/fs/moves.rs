//! Renames and links between held directories, with the same guarantee on every file
//! system, `RENAME_NOREPLACE` or not.
//!
//! Local file systems (ext4, xfs, btrfs, tmpfs) have `renameat2(RENAME_NOREPLACE)`: a move
//! that fails instead of replacing an entry. NFS, SMB and FUSE file systems (sshfs,
//! bindfs, gcsfuse, rclone) answer it with `EINVAL`, and the classic substitute, `linkat`
//! then `unlinkat` of the old name, is only safe for a name that nobody else uses: the
//! `unlinkat` removes whatever is at that name *when it runs*, which may be a file a
//! writer renamed there a microsecond earlier. So every move here says which of its two
//! names is shared, and never unlinks a shared one:
//!
//! - [`Dir::move_aside`]: a **shared** name (a data file the backend may replace at any
//!   instant) to a **fresh private** name (in a directory only this process uses, such as
//!   the delete step's quarantine). Without `RENAME_NOREPLACE` a plain `renameat`: it
//!   moves exactly one inode, whatever is at the shared name at that instant, and
//!   replaces nothing that anyone else could have put at the private name (checked
//!   absent first).
//! - [`Dir::move_noreplace`] / [`Dir::rename_noreplace`]: a **private** name (a temporary
//!   this process created, a file in its quarantine) to a name that must not be replaced.
//!   Without `RENAME_NOREPLACE`, `linkat` (which fails if the name exists, on every file
//!   system) then `unlinkat` of the private name. Where there are no hard links either
//!   (s3fs, gcsfuse, rclone mount, some SMB servers) the move fails with
//!   [`std::io::ErrorKind::Unsupported`]; the caller keeps the file where it is.
//! - [`Dir::publish_dir`]: a directory built under a private name to its final name,
//!   never replacing an existing entry. Without `RENAME_NOREPLACE`, the final name is
//!   claimed by `mkdirat` (exclusive everywhere), then the built directory renamed over
//!   that empty directory (a rename replaces only an *empty* directory).
//!
//! A kill between the `linkat` and the `unlinkat` of the fallback leaves the file under
//! both names; a repeated [`Dir::move_noreplace`] finds the destination to be the same
//! inode and finishes by removing the private name.

use std::ffi::OsStr;
use std::io;

use rustix::fs::{AtFlags, Mode, RenameFlags};
use rustix::io::Errno;

use super::{Dir, check_name};
use crate::error::Result;

/// `renameat2(RENAME_NOREPLACE)`; in this crate's unit tests, within
/// [`without_rename_flags`], the `EINVAL` of a file system without the flag.
fn renameat_noreplace(
    from: &Dir,
    name: &OsStr,
    to: &Dir,
    to_name: &OsStr,
) -> std::result::Result<(), Errno> {
    #[cfg(test)]
    if WITHOUT_RENAME_FLAGS.with(std::cell::Cell::get) {
        return Err(Errno::INVAL);
    }
    rustix::fs::renameat_with(&from.fd, name, &to.fd, to_name, RenameFlags::NOREPLACE)
}

#[cfg(test)]
thread_local! {
    static WITHOUT_RENAME_FLAGS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` as on a file system without `RENAME_NOREPLACE` (NFS, FUSE), on this thread.
#[cfg(test)]
pub(super) fn without_rename_flags<T>(f: impl FnOnce() -> T) -> T {
    WITHOUT_RENAME_FLAGS.with(|w| w.set(true));
    let out = f();
    WITHOUT_RENAME_FLAGS.with(|w| w.set(false));
    out
}

/// Whether an error of `renameat2` means the file system (or kernel) has no such flag.
fn no_rename_flags(e: Errno) -> bool {
    matches!(e, Errno::INVAL | Errno::NOSYS)
}

/// Whether an error of `linkat` means the file system has no hard links (as opposed to a
/// refusal of this one link: `EEXIST`, `EACCES`, `EXDEV`, ...). `EPERM` is also what an
/// immutable file gives; then the caller's fallback fails the same way, which is right.
fn no_hard_links(e: Errno) -> bool {
    matches!(e, Errno::PERM | Errno::OPNOTSUPP | Errno::NOSYS)
}

impl Dir {
    /// Renames the entry `from` over `to` in this directory, replacing `to`: a private
    /// temporary over its final name ([`super::AtomicFile::commit`]). A plain `renameat`,
    /// the same on every file system.
    ///
    /// # Errors
    /// [`crate::Error::Io`] naming `to`.
    pub fn rename(&self, from: &OsStr, to: &OsStr) -> Result<()> {
        check_name(&self.path, from)?;
        check_name(&self.path, to)?;
        rustix::fs::renameat(&self.fd, from, &self.fd, to).map_err(|e| self.error("rename", to, e))
    }

    /// Moves the entry `name` of this directory, a name other processes may use at any
    /// instant, to `to_name` in `to`, a directory on the same file system that only this
    /// process uses, so that from then on no writer can reach the file by name (the delete
    /// step's first move). See the module documentation for the file systems without
    /// `RENAME_NOREPLACE`.
    ///
    /// # Errors
    /// [`crate::Error::Io`] naming the source: kind `NotFound` when it is gone,
    /// `AlreadyExists` when `to_name` exists (nothing changed), `CrossesDevices` (EXDEV)
    /// when `to` is on another mount, `PermissionDenied` and others as the OS says.
    pub fn move_aside(&self, name: &OsStr, to: &Dir, to_name: &OsStr) -> Result<()> {
        check_name(&self.path, name)?;
        check_name(&to.path, to_name)?;
        let fail = |e: Errno| self.error("move aside", name, e);
        match renameat_noreplace(self, name, to, to_name) {
            Ok(()) => Ok(()),
            Err(e) if no_rename_flags(e) => {
                // `to` is private: nothing can appear at `to_name` after this check but
                // what this process puts there.
                if to.stat(to_name)?.is_some() {
                    return Err(fail(Errno::EXIST));
                }
                rustix::fs::renameat(&self.fd, name, &to.fd, to_name).map_err(fail)
            }
            Err(e) => Err(fail(e)),
        }
    }

    /// Renames the entry `from`, a name only this process uses, to `to` in this directory
    /// unless `to` exists (see [`Dir::move_noreplace`]).
    ///
    /// # Errors
    /// As [`Dir::move_noreplace`], naming `to`.
    pub fn rename_noreplace(&self, from: &OsStr, to: &OsStr) -> Result<()> {
        check_name(&self.path, from)?;
        check_name(&self.path, to)?;
        move_private(self, from, self, to).map_err(|e| self.error("rename", to, e))
    }

    /// Moves the entry `name` of this directory, a name only this process uses (a
    /// temporary it created, a file in its quarantine), to `to_name` in `to` (on the same
    /// file system), unless `to_name` exists. Where the file system has no
    /// `RENAME_NOREPLACE`: `linkat` (exclusive everywhere), then `unlinkat` of `name`.
    /// When `to_name` already is this very inode (such a fallback was interrupted), the
    /// move is finished by removing `name`.
    ///
    /// # Errors
    /// [`crate::Error::Io`] naming the source: kind `NotFound` when it is gone,
    /// `AlreadyExists` when `to_name` is another file (nothing changed), `Unsupported`
    /// when the file system has neither `RENAME_NOREPLACE` nor hard links (nothing
    /// changed), `CrossesDevices` (EXDEV) when `to` is on another mount, and others as
    /// the OS says.
    pub fn move_noreplace(&self, name: &OsStr, to: &Dir, to_name: &OsStr) -> Result<()> {
        check_name(&self.path, name)?;
        check_name(&to.path, to_name)?;
        move_private(self, name, to, to_name).map_err(|e| self.error("move", name, e))
    }

    /// Publishes the directory `name` of this directory, built under a name only this
    /// process uses, as `to_name`, never replacing an existing entry (a snapshot's
    /// `.{name}.partial`). Where the file system has no `RENAME_NOREPLACE`, `to_name` is
    /// first made as an empty directory (`mkdirat`, exclusive everywhere), then `name`
    /// renamed over it: a rename replaces a directory only when it is empty, so a
    /// directory someone filled in that instant is never replaced.
    ///
    /// # Errors
    /// [`crate::Error::Io`] naming `to_name`: kind `AlreadyExists` when it exists
    /// (nothing changed), and others as the OS says (then `name` is still there).
    pub fn publish_dir(&self, name: &OsStr, to_name: &OsStr) -> Result<()> {
        check_name(&self.path, name)?;
        check_name(&self.path, to_name)?;
        let fail = |e: Errno| self.error("publish", to_name, e);
        match renameat_noreplace(self, name, self, to_name) {
            Ok(()) => Ok(()),
            Err(e) if no_rename_flags(e) => {
                rustix::fs::mkdirat(&self.fd, to_name, Mode::from_raw_mode(0o700)).map_err(fail)?;
                let claimed = self.stat(to_name)?;
                rustix::fs::renameat(&self.fd, name, &self.fd, to_name).map_err(|e| {
                    // Give the name back if it is still the empty directory made above
                    // (`AT_REMOVEDIR` removes only an empty one).
                    if let (Some(c), Ok(Some(now))) = (claimed, self.stat(to_name))
                        && now.stamp.same_inode(&c.stamp)
                    {
                        let _ = rustix::fs::unlinkat(&self.fd, to_name, AtFlags::REMOVEDIR);
                    }
                    fail(e)
                })
            }
            Err(e) => Err(fail(e)),
        }
    }

    /// Links the regular file `name` of this directory into `dest` as `dest_name`
    /// (`linkat` without `AT_SYMLINK_FOLLOW`: a symlink is linked as itself, never
    /// followed). The caller checks what it linked with [`Dir::stat`] on `dest`.
    ///
    /// # Errors
    /// [`crate::Error::Io`] naming the entry of this directory (kind `CrossesDevices`
    /// across file systems or mounts, `AlreadyExists` when `dest_name` exists,
    /// `PermissionDenied` where the kernel's `protected_hardlinks` refuses a file of
    /// another user).
    pub fn link_into(&self, name: &OsStr, dest: &Dir, dest_name: &OsStr) -> Result<()> {
        check_name(&self.path, name)?;
        check_name(&dest.path, dest_name)?;
        rustix::fs::linkat(&self.fd, name, &dest.fd, dest_name, AtFlags::empty())
            .map_err(|e| self.error("link", name, e))
    }
}

/// Which exclusive moves a file system offers (see [`Dir::probe_moves`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MovesProbe {
    /// `renameat2(RENAME_NOREPLACE)` works.
    pub rename_noreplace: bool,
    /// `linkat` works (the fallback's exclusive step).
    pub hard_links: bool,
}

impl MovesProbe {
    /// Whether every move of this module is exclusive here (either works).
    pub fn exclusive(self) -> bool {
        self.rename_noreplace || self.hard_links
    }
}

impl Dir {
    /// Tries `renameat2(RENAME_NOREPLACE)` and `linkat` on a file of its own made in this
    /// directory (`.probe-{pid}-{n}`, removed after), to learn what this file system
    /// offers; for tmpa-patrol's report.
    ///
    /// # Errors
    /// [`crate::Error::Io`] when the probe file cannot be made or either call fails for
    /// another reason than the file system lacking it.
    pub fn probe_moves(&self) -> Result<MovesProbe> {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = |step: &str| format!(".probe-{}-{n}.{step}", std::process::id());
        let (a, b, c) = (name("a"), name("b"), name("c"));
        drop(self.create_new(OsStr::new(&a), 0o600)?);
        let result = (|| {
            let rename_noreplace = match renameat_noreplace(self, a.as_ref(), self, b.as_ref()) {
                Ok(()) => {
                    rustix::fs::renameat(&self.fd, &b, &self.fd, &a)
                        .map_err(|e| self.error("probe rename", &b, e))?;
                    true
                }
                Err(e) if no_rename_flags(e) => false,
                Err(e) => return Err(self.error("probe rename", &a, e)),
            };
            let hard_links = match rustix::fs::linkat(&self.fd, &a, &self.fd, &c, AtFlags::empty())
            {
                Ok(()) => true,
                Err(e) if no_hard_links(e) => false,
                Err(e) => return Err(self.error("probe link", &a, e)),
            };
            Ok(MovesProbe {
                rename_noreplace,
                hard_links,
            })
        })();
        // Only this call's own files, by names nobody else uses.
        for n in [&a, &b, &c] {
            let _ = rustix::fs::unlinkat(&self.fd, n, AtFlags::empty());
        }
        result
    }
}

/// `renameat2(RENAME_NOREPLACE)` of a private name; where the file system has no such
/// flag, `linkat` then `unlinkat` of the private name (see [`Dir::move_noreplace`]).
fn move_private(from: &Dir, name: &OsStr, to: &Dir, to_name: &OsStr) -> io::Result<()> {
    let already_there = || -> bool {
        // An interrupted fallback left both names on one inode.
        match (from.stat(name), to.stat(to_name)) {
            (Ok(Some(a)), Ok(Some(b))) => a.stamp.same_inode(&b.stamp),
            _ => false,
        }
    };
    let finish = || -> io::Result<()> {
        rustix::fs::unlinkat(&from.fd, name, AtFlags::empty())?;
        Ok(())
    };
    match renameat_noreplace(from, name, to, to_name) {
        Ok(()) => Ok(()),
        Err(Errno::EXIST) if already_there() => finish(),
        Err(e) if no_rename_flags(e) => {
            match rustix::fs::linkat(&from.fd, name, &to.fd, to_name, AtFlags::empty()) {
                Ok(()) => finish(),
                Err(Errno::EXIST) if already_there() => finish(),
                Err(e) if no_hard_links(e) => Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "this file system has neither RENAME_NOREPLACE nor hard links ({e}): \
                         no move here can be sure not to replace a newer file"
                    ),
                )),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs() -> (tempfile::TempDir, Dir, Dir) {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("d")).unwrap();
        std::fs::create_dir_all(t.path().join("q")).unwrap();
        let top = Dir::open_path(t.path()).unwrap();
        (t, top.open_dir("d").unwrap(), top.open_dir("q").unwrap())
    }

    /// Each test runs with `RENAME_NOREPLACE` and as without it.
    fn both_ways(test: fn()) {
        test();
        without_rename_flags(test);
    }

    #[test]
    fn the_probe_sees_what_the_file_system_offers_and_leaves_nothing() {
        let (t, d, _) = dirs();
        let here = d.probe_moves().unwrap();
        assert!(here.rename_noreplace && here.hard_links, "{here:?}");
        let nfs = without_rename_flags(|| d.probe_moves().unwrap());
        assert_eq!((nfs.rename_noreplace, nfs.hard_links), (false, true));
        assert!(nfs.exclusive());
        assert_eq!(std::fs::read_dir(t.path().join("d")).unwrap().count(), 0);
    }

    #[test]
    fn an_interrupted_fallback_is_finished_not_refused() {
        both_ways(an_interrupted_fallback_is_finished_not_refused_);
    }

    #[test]
    fn move_aside_never_replaces_the_private_name() {
        both_ways(move_aside_never_replaces_the_private_name_);
    }

    #[test]
    fn publish_dir_never_replaces_a_directory() {
        both_ways(publish_dir_never_replaces_a_directory_);
    }

    fn an_interrupted_fallback_is_finished_not_refused_() {
        let (t, d, q) = dirs();
        std::fs::write(t.path().join("q/f"), b"one").unwrap();
        // As a kill between linkat and unlinkat leaves it.
        std::fs::hard_link(t.path().join("q/f"), t.path().join("d/f")).unwrap();
        q.move_noreplace("f".as_ref(), &d, "f".as_ref()).unwrap();
        assert!(!t.path().join("q/f").exists());
        assert_eq!(std::fs::read(t.path().join("d/f")).unwrap(), b"one");
        // Another file at the name is refused and nothing changes.
        std::fs::write(t.path().join("q/g"), b"two").unwrap();
        std::fs::write(t.path().join("d/g"), b"three").unwrap();
        let e = q
            .move_noreplace("g".as_ref(), &d, "g".as_ref())
            .unwrap_err();
        assert_eq!(e.io_kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(t.path().join("q/g")).unwrap(), b"two");
        assert_eq!(std::fs::read(t.path().join("d/g")).unwrap(), b"three");
    }

    fn move_aside_never_replaces_the_private_name_() {
        let (t, d, q) = dirs();
        std::fs::write(t.path().join("d/f"), b"one").unwrap();
        std::fs::write(t.path().join("q/f"), b"mine").unwrap();
        let e = d.move_aside("f".as_ref(), &q, "f".as_ref()).unwrap_err();
        assert_eq!(e.io_kind(), io::ErrorKind::AlreadyExists);
        d.move_aside("f".as_ref(), &q, "g".as_ref()).unwrap();
        assert_eq!(std::fs::read(t.path().join("q/g")).unwrap(), b"one");
    }

    fn publish_dir_never_replaces_a_directory_() {
        let (t, d, _) = dirs();
        std::fs::create_dir(t.path().join("d/.p.partial")).unwrap();
        std::fs::write(t.path().join("d/.p.partial/x"), b"x").unwrap();
        std::fs::create_dir(t.path().join("d/p")).unwrap();
        let e = d
            .publish_dir(".p.partial".as_ref(), "p".as_ref())
            .unwrap_err();
        assert_eq!(e.io_kind(), io::ErrorKind::AlreadyExists);
        std::fs::remove_dir(t.path().join("d/p")).unwrap();
        d.publish_dir(".p.partial".as_ref(), "p".as_ref()).unwrap();
        assert_eq!(std::fs::read(t.path().join("d/p/x")).unwrap(), b"x");
    }
}
