//! Where a snapshot goes: `--to` checked before anything is taken (a new name outside
//! the root, reached without a symlink through directories no other user may write), and
//! how its files are taken ([`Method`]: links on the root's file system, else copies).

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;
use tmpa_core::Root;
use tmpa_core::maintenance::{Dir, Kind, Stamp, path_text, root_dir};
use tmpa_maint::{StartError, only_runner_writes, runner_uid};

/// How the files are taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Hard links (the destination is on the root's file system).
    Link,
    /// Copies, because `--copy` asked.
    CopyAsked,
    /// Copies, because the destination is on another file system.
    CopyOtherFs,
}

impl Method {
    /// A few words for the report.
    pub fn words(self) -> &'static str {
        match self {
            Method::Link => "hard links",
            Method::CopyAsked => "copies, --copy",
            Method::CopyOtherFs => "copies: another file system",
        }
    }

    pub(crate) fn copies(self) -> bool {
        self != Method::Link
    }
}

/// A checked destination: its parent held by descriptor, the names of the snapshot and
/// of its partial build.
#[derive(Debug)]
pub struct Destination {
    path: PathBuf,
    /// The directory the snapshot goes into.
    pub(crate) parent: Dir,
    /// The snapshot's name in it.
    pub(crate) name: OsString,
    /// The name it is built under, published by one rename.
    pub(crate) partial: OsString,
    /// Links or copies.
    pub(crate) method: Method,
}

impl Destination {
    /// Checks `to` for a snapshot of `root`: a new name in an existing directory, outside
    /// the root, with no partial build left by an interrupted run, reached from `/` one
    /// directory at a time without following a symlink, through directories only root
    /// (or this program's user) may write, or sticky ones of root's (`/tmp`), where no
    /// one else may rename what root puts there. A directory on the way that another user
    /// may write could swap the snapshot, or the directory above it, for its own while the
    /// snapshot is built or after it is published; a symlink on the way could lead the
    /// snapshot anywhere. A relative `to` starts from the current directory's real path.
    ///
    /// # Errors
    /// [`StartError::Usage`] saying what is wrong; [`StartError::Untrusted`] naming a
    /// directory on the way that another user may write; [`StartError::Core`] when a
    /// directory cannot be opened.
    pub fn check(root: &Root, to: &Path, copy: bool) -> Result<Destination, StartError> {
        let usage = |why: String| StartError::Usage(format!("--to {}: {why}", path_text(to)));
        let absolute = if to.is_absolute() {
            to.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| usage(format!("the current directory cannot be used: {e}")))?
                .join(to)
        };
        // `..` is taken lexically: no symlink is ever followed, so it means the
        // directory above.
        let mut parts: Vec<OsString> = Vec::new();
        for c in absolute.components() {
            match c {
                Component::Normal(n) => parts.push(n.to_os_string()),
                Component::ParentDir => {
                    parts.pop();
                }
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
        let name = parts
            .pop()
            .filter(|n| !n.as_bytes().starts_with(b"."))
            .ok_or_else(|| usage("give a directory name that does not start with '.'".into()))?;
        let root_stamp = root_dir(root).meta()?.stamp;
        let mut parent = Dir::open_path(Path::new("/"))?;
        check_on_the_way(&parent, &root_stamp, to)?;
        for part in &parts {
            let shown = parent.join(part);
            match parent.stat(part)? {
                None => return Err(usage(format!("{} does not exist", path_text(&shown)))),
                Some(m) if m.kind == Kind::Symlink => {
                    return Err(usage(format!(
                        "{} is a symlink, which is never followed (another user could point \
                         it elsewhere): give the path it stands for (realpath)",
                        path_text(&shown)
                    )));
                }
                Some(m) if m.kind != Kind::Directory => {
                    return Err(usage(format!("{} is not a directory", path_text(&shown))));
                }
                Some(_) => {}
            }
            parent = parent.open_dir(part).map_err(|e| match e {
                tmpa_core::Error::Unsafe { .. } => usage(format!(
                    "{} was replaced by a symlink as it was opened; never followed",
                    path_text(&shown)
                )),
                other => other.into(),
            })?;
            check_on_the_way(&parent, &root_stamp, to)?;
        }
        if parent.stat(&name)?.is_some() {
            return Err(usage("exists; a snapshot goes to a new directory".into()));
        }
        let mut partial = OsString::from(".");
        partial.push(&name);
        partial.push(".partial");
        if parent.stat(&partial)?.is_some() {
            return Err(StartError::Usage(format!(
                "{}: left by an interrupted snapshot; remove it (rm -r) and run again",
                path_text(&parent.join(&partial))
            )));
        }
        let same_fs = parent.meta()?.stamp.same_device(&root_stamp);
        let method = match (copy, same_fs) {
            (true, _) => Method::CopyAsked,
            (false, false) => Method::CopyOtherFs,
            (false, true) => Method::Link,
        };
        Ok(Destination {
            path: parent.join(&name),
            parent,
            name,
            partial,
            method,
        })
    }

    /// Where the snapshot goes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Links or copies.
    pub fn method(&self) -> Method {
        self.method
    }
}

/// A directory on the way to `--to`: not the root (the snapshot goes outside the tree),
/// and written by no one but root and this program's user, or sticky and root's.
fn check_on_the_way(dir: &Dir, root: &Stamp, to: &Path) -> Result<(), StartError> {
    let meta = dir.meta()?;
    if meta.stamp.same_inode(root) {
        return Err(StartError::Usage(format!(
            "--to {}: is inside the root {}; a snapshot goes outside the tree",
            path_text(to),
            path_text(dir.path())
        )));
    }
    let sticky_and_ours = meta.mode & 0o1000 != 0 && (meta.uid == 0 || meta.uid == runner_uid());
    match only_runner_writes(&meta) {
        Ok(()) => Ok(()),
        Err(_) if sticky_and_ours => Ok(()),
        Err(why) => Err(StartError::Untrusted {
            path: dir.path().to_path_buf(),
            why,
        }),
    }
}
