//! Directories held by file descriptor, for programs that run as root over a tree that
//! less trusted code writes.
//!
//! A path such as `{root}/token_stats/2026-11-01` is re-resolved by the kernel on every
//! use: if another process swaps a component for a symlink between a check and an action,
//! the action follows it out of the root. A [`DirHandle`] is opened once, one component
//! at a time from the root with `O_NOFOLLOW | O_DIRECTORY` (so no symlink is ever
//! followed on the way), and every later operation goes through its descriptor: the
//! operational path `/proc/self/fd/{n}/{name}` names an entry of *that* directory, whatever
//! the path names by then. Reports keep showing the ordinary path.
//!
//! Requires `/proc` (always mounted on the servers this runs on); [`DirHandle::open`]
//! fails with a clear error where it is not.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags, openat};

use crate::error::{Error, Result};
use crate::root::Root;

/// An open directory inside the root, reached without following any symlink.
#[derive(Debug)]
pub struct DirHandle {
    fd: OwnedFd,
    display: PathBuf,
    op: PathBuf,
}

impl DirHandle {
    /// Opens `dir` (which must lie inside `root`) component by component from the root,
    /// refusing any component that is a symlink or not a directory.
    ///
    /// # Errors
    /// [`Error::Unsafe`] for a symlink or non-directory component (or a path outside the
    /// root); [`Error::Io`] naming the path for anything else (missing, no permission,
    /// no `/proc`).
    pub fn open(root: &Root, dir: &Path) -> Result<DirHandle> {
        let rel = dir.strip_prefix(root.path()).map_err(|_| Error::Unsafe {
            path: dir.to_path_buf(),
            reason: "is outside the root",
        })?;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut fd = openat(rustix::fs::CWD, root.path(), flags, Mode::empty())
            .map_err(|e| Error::io("open directory", root.path(), e.into()))?;
        let mut so_far = root.path().to_path_buf();
        for comp in rel.components() {
            let Component::Normal(name) = comp else {
                return Err(Error::Unsafe {
                    path: dir.to_path_buf(),
                    reason: "holds '..' or '.'",
                });
            };
            so_far.push(name);
            let next = openat(&fd, name, flags, Mode::empty()).map_err(|e| match e {
                // With O_DIRECTORY a symlink gives ENOTDIR as often as ELOOP: ask which.
                rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => {
                    let is_link =
                        rustix::fs::statat(&fd, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                            .is_ok_and(|st| {
                                rustix::fs::FileType::from_raw_mode(st.st_mode)
                                    == rustix::fs::FileType::Symlink
                            });
                    Error::Unsafe {
                        path: so_far.clone(),
                        reason: if is_link {
                            "is a symlink (not followed)"
                        } else {
                            "is not a directory"
                        },
                    }
                }
                other => Error::io("open directory", &so_far, other.into()),
            })?;
            fd = next;
        }
        let op = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        if !op.is_dir() {
            return Err(Error::io(
                "open directory",
                dir,
                std::io::Error::other("/proc is not mounted: cannot hold directories safely"),
            ));
        }
        Ok(DirHandle {
            fd,
            display: dir.to_path_buf(),
            op,
        })
    }

    /// The ordinary path, for reports.
    pub fn display(&self) -> &Path {
        &self.display
    }

    /// The operational path of the directory itself (`/proc/self/fd/{n}`).
    pub fn op_path(&self) -> &Path {
        &self.op
    }

    /// The operational path of an entry: acts on this directory's entry `name`, whatever
    /// the ordinary path has become.
    pub fn op(&self, name: impl AsRef<OsStr>) -> PathBuf {
        self.op.join(name.as_ref())
    }

    /// The ordinary path of an entry, for reports.
    pub fn shown(&self, name: impl AsRef<OsStr>) -> PathBuf {
        self.display.join(name.as_ref())
    }

    /// Rewrites operational paths in a message into ordinary ones.
    pub fn describe(&self, message: &str) -> String {
        message.replace(&*self.op.to_string_lossy(), &self.display.to_string_lossy())
    }

    /// An error about an entry reached through the operational path, rewritten to name
    /// the ordinary path (errors about other paths are returned as they are).
    pub fn shown_error(&self, e: Error) -> Error {
        let fix = |p: PathBuf| match p.strip_prefix(&self.op) {
            Ok(rest) if rest.as_os_str().is_empty() => self.display.clone(),
            Ok(rest) => self.display.join(rest),
            Err(_) => p,
        };
        match e {
            Error::Io { op, path, source } => Error::Io {
                op,
                path: fix(path),
                source,
            },
            Error::Corrupt { path, reason } => Error::Corrupt {
                path: fix(path),
                reason,
            },
            Error::Conflict { path } => Error::Conflict { path: fix(path) },
            Error::Unsafe { path, reason } => Error::Unsafe {
                path: fix(path),
                reason,
            },
            other => other,
        }
    }

    /// Whether the ordinary path still names this same directory (device and inode).
    pub fn still_at_path(&self) -> bool {
        let Ok(here) = rustix::fs::fstat(self.fd.as_fd()) else {
            return false;
        };
        std::fs::symlink_metadata(&self.display).is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt;
            m.is_dir() && m.dev() == here.st_dev && m.ino() == here.st_ino
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_symlinks_on_the_way_and_survives_a_swap() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("token_stats/d1")).unwrap();
        std::os::unix::fs::symlink(outside.path(), t.path().join("token_stats/d2")).unwrap();
        let root = Root::open(t.path()).unwrap();
        let e = DirHandle::open(&root, &root.token_stats_dir().join("d2")).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        let h = DirHandle::open(&root, &root.token_stats_dir().join("d1")).unwrap();
        // Swap the directory for a symlink to the outside: the handle still acts inside.
        std::fs::rename(
            root.token_stats_dir().join("d1"),
            root.token_stats_dir().join("moved"),
        )
        .unwrap();
        std::os::unix::fs::symlink(outside.path(), root.token_stats_dir().join("d1")).unwrap();
        assert!(!h.still_at_path());
        std::fs::write(h.op("x.json"), b"{}").unwrap();
        assert!(root.token_stats_dir().join("moved/x.json").exists());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        assert_eq!(
            h.describe(&format!("{}/x", h.op_path().display())),
            format!("{}/x", h.display().display())
        );
    }
}
