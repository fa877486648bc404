//! What a program run as root (or as the tree's owner) may believe: only files and
//! directories that its own user, or root, could have written alone (sshd's
//! `StrictModes`). The tree's owner writes the tree; a file of the tree that decides what
//! a root run does (where it writes, which lock it holds) must not be the owner's.

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
    /// A file with more than one name: another name could be anywhere.
    Links(u64),
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
            Distrust::Links(n) => write!(f, "has {n} hard links, not one"),
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

/// [`only_runner_writes`] for a file, which must also be a regular file with one name.
///
/// # Errors
/// The first reason it is not trusted.
pub fn trusted_file(meta: &Meta) -> Result<(), Distrust> {
    if meta.kind != Kind::File {
        return Err(Distrust::Kind(meta.kind));
    }
    if meta.links != 1 {
        return Err(Distrust::Links(meta.links));
    }
    only_runner_writes(meta)
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
        std::fs::write(&f, "x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(trusted_file(&meta_of(&f)), Ok(()));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o664)).unwrap();
        assert_eq!(trusted_file(&meta_of(&f)), Err(Distrust::GroupWritable));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o646)).unwrap();
        assert_eq!(trusted_file(&meta_of(&f)), Err(Distrust::WorldWritable));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::hard_link(&f, dir.path().join("g")).unwrap();
        assert_eq!(trusted_file(&meta_of(&f)), Err(Distrust::Links(2)));
        assert_eq!(
            trusted_file(&meta_of(dir.path())),
            Err(Distrust::Kind(Kind::Directory))
        );
    }
}
