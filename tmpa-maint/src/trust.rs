//! What a program run as root (or as the tree's owner) may believe: only files and
//! directories that its own user, or root, could have written alone (sshd's
//! `StrictModes`). The tree's owner writes the tree; a file of the tree that decides what
//! a root run does (where it writes, which lock it holds) must not be the owner's.
//!
//! A second hard link to such a file is not in itself a reason to distrust it: backups
//! make them (`cp -al`, rsnapshot, a kept hard-link snapshot), and a file with two names
//! is still written only by whoever may write it. It matters only where someone who
//! could not write the file could have made the name that the program opens: a user who
//! may write the directory, linking there a file of root's that was never meant for this
//! use (another tree's `tmpa.toml`). The kernel forbids exactly that when
//! `fs.protected_hardlinks` is 1 (Debian's and most distributions' setting): only a
//! file's owner, or someone who may read and write it, can link it. So a file with more
//! than one link is believed ([`links_believed`]) when its directory can be written by
//! no one but the file's owner and root, or when the kernel protects hard links; else it
//! is refused, saying why.

use std::fmt;

use tmpa_core::maintenance::{Kind, Meta};

/// Why a file or directory is not trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distrust {
    /// Owned by another user than root and this program's.
    Owner {
        /// Its owner.
        uid: u32,
        /// This program's effective user.
        runner: u32,
    },
    /// Its group may write it.
    GroupWritable,
    /// Everyone may write it.
    WorldWritable,
    /// Not the kind of entry expected.
    Kind(Kind),
    /// A file with more than one name, in a directory that others than its owner and
    /// root may write, where the kernel lets any user link any file
    /// (`fs.protected_hardlinks` = 0): someone who cannot write the file could have
    /// given it this name.
    Links(u64),
    /// A directory of the program's state that another user owns (or may write): what
    /// is in it is not believed.
    StateOwner {
        /// Its owner.
        uid: u32,
        /// This program's effective user.
        runner: u32,
    },
}

impl fmt::Display for Distrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Distrust::Owner { uid, runner } if *runner == 0 => {
                write!(f, "owned by uid {uid}, not by root")
            }
            Distrust::Owner { uid, runner } => {
                write!(
                    f,
                    "owned by uid {uid}, neither by root nor by this program's user (uid {runner})"
                )
            }
            Distrust::GroupWritable => f.write_str("writable by its group"),
            Distrust::WorldWritable => f.write_str("writable by everyone"),
            Distrust::Kind(k) => write!(f, "{}, not a regular file", k.words()),
            Distrust::Links(n) => write!(
                f,
                "has {n} hard links, and others may write its directory while \
                 fs.protected_hardlinks is 0 (any user may then link a file it cannot \
                 write): give it one name, or set fs.protected_hardlinks = 1"
            ),
            Distrust::StateOwner { uid, runner } => write!(
                f,
                "owned by uid {uid}, not by this program's user (uid {runner}) (or \
                 writable by others): left alone"
            ),
        }
    }
}

/// This program's effective user.
pub fn runner_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Whether only root or this program's user could have written what `meta` describes:
/// owned by one of them, not writable by its group or by everyone.
///
/// # Errors
/// The first reason it is not.
pub fn only_runner_writes(meta: &Meta) -> Result<(), Distrust> {
    let runner = runner_uid();
    if meta.uid != 0 && meta.uid != runner {
        return Err(Distrust::Owner {
            uid: meta.uid,
            runner,
        });
    }
    if meta.mode & 0o020 != 0 {
        return Err(Distrust::GroupWritable);
    }
    if meta.mode & 0o002 != 0 {
        return Err(Distrust::WorldWritable);
    }
    Ok(())
}

/// [`only_runner_writes`] for a file, which must also be a regular file whose other
/// names, if any, are [`links_believed`] (`dir` is the directory it was found in).
///
/// # Errors
/// The first reason it is not trusted.
pub fn trusted_file(meta: &Meta, dir: &Meta) -> Result<(), Distrust> {
    if meta.kind != Kind::File {
        return Err(Distrust::Kind(meta.kind));
    }
    links_believed(meta, dir)?;
    only_runner_writes(meta)
}

/// Whether the name under which the file `meta` was found in the directory `dir` was
/// given by someone who could write the file anyway: it has one link; or `dir` can be
/// written by no one but the file's owner and root; or the kernel lets no one link a
/// file it could not write ([`protected_hardlinks`]). See the module's documentation.
///
/// # Errors
/// [`Distrust::Links`] when none of these holds.
pub fn links_believed(meta: &Meta, dir: &Meta) -> Result<(), Distrust> {
    let dir_is_the_owners = (dir.uid == meta.uid || dir.uid == 0) && dir.mode & 0o022 == 0;
    if meta.links <= 1 || dir_is_the_owners || protected_hardlinks() {
        Ok(())
    } else {
        Err(Distrust::Links(meta.links))
    }
}

/// Whether a directory of the program's state may be believed: a directory owned by
/// this program's user, that neither its group nor everyone may write. What such a
/// directory holds was put there by this program's user (or root).
///
/// # Errors
/// [`Distrust::Kind`] for something else than a directory, [`Distrust::StateOwner`]
/// otherwise.
pub fn own_state_dir(meta: &Meta) -> Result<(), Distrust> {
    if meta.kind != Kind::Directory {
        return Err(Distrust::Kind(meta.kind));
    }
    let runner = runner_uid();
    if meta.uid != runner || meta.mode & 0o022 != 0 {
        return Err(Distrust::StateOwner {
            uid: meta.uid,
            runner,
        });
    }
    Ok(())
}

/// Whether the kernel lets a user link only files it owns or may read and write
/// (`/proc/sys/fs/protected_hardlinks` is 1). Read once per process; `false` when it
/// cannot be read (no `/proc`): the strict answer.
pub fn protected_hardlinks() -> bool {
    static PROTECTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PROTECTED.get_or_init(|| {
        std::fs::read("/proc/sys/fs/protected_hardlinks").is_ok_and(|b| b.trim_ascii() == b"1")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn meta_of(path: &std::path::Path) -> Meta {
        Meta::of_fd(std::fs::File::open(path).unwrap()).unwrap()
    }

    #[test]
    fn a_file_of_ours_is_trusted_until_others_may_write_it() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        let d = || meta_of(dir.path());
        std::fs::write(&f, "x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(trusted_file(&meta_of(&f), &d()), Ok(()));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o664)).unwrap();
        assert_eq!(
            trusted_file(&meta_of(&f), &d()),
            Err(Distrust::GroupWritable)
        );
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o646)).unwrap();
        assert_eq!(
            trusted_file(&meta_of(&f), &d()),
            Err(Distrust::WorldWritable)
        );
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        // A second name (a hard-link backup) in a directory only its owner writes.
        std::fs::hard_link(&f, dir.path().join("g")).unwrap();
        assert_eq!(trusted_file(&meta_of(&f), &d()), Ok(()));
        assert_eq!(
            trusted_file(&meta_of(dir.path()), &d()),
            Err(Distrust::Kind(Kind::Directory))
        );
    }

    #[test]
    fn a_second_link_in_a_directory_others_write_needs_protected_hardlinks() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "x").unwrap();
        std::fs::hard_link(&f, dir.path().join("g")).unwrap();
        let file = meta_of(&f);
        let mut others = meta_of(dir.path());
        others.uid = file.uid.wrapping_add(4242);
        assert_eq!(
            links_believed(&file, &others),
            if protected_hardlinks() {
                Ok(())
            } else {
                Err(Distrust::Links(2))
            }
        );
        let mut shared = meta_of(dir.path());
        shared.mode |= 0o020;
        assert_eq!(
            links_believed(&file, &shared).is_ok(),
            protected_hardlinks()
        );
        let one = Meta { links: 1, ..file };
        assert_eq!(links_believed(&one, &others), Ok(()));
    }

    #[test]
    fn state_directories_are_believed_only_when_the_runner_s_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = meta_of(dir.path());
        assert_eq!(own_state_dir(&m), Ok(()));
        m.mode |= 0o002;
        assert!(matches!(
            own_state_dir(&m),
            Err(Distrust::StateOwner { .. })
        ));
        let other = Meta {
            uid: runner_uid().wrapping_add(1),
            ..meta_of(dir.path())
        };
        assert!(own_state_dir(&other).is_err());
    }
}
