//! The walk: streams the three data directories through directory descriptors and keeps
//! only the temporaries (SPEC §2), each with its stamp and a first decision.
//!
//! Memory is bounded by the depth of the tree (one open directory stream per level,
//! at most [`DEPTH_MAX`]) plus the temporaries found (at most [`TEMPORARIES_MAX`]); the
//! other entries are looked at once, by name and `d_type`, and forgotten.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Dir, FileType};
use rustix::io::Errno;
use tmpa_core::Problem;
use tmpa_core::temp_final_name;

use crate::fsops::{self, Kind, Stamp, Time};

/// The data directories walked (tmpa-core's, in its order). `.tmpa/` and anything else
/// at the top of the root are never entered.
pub use tmpa_core::root::DATA_DIRS;
/// Deepest directory entered below a data directory (the layout needs 3; deeper trees
/// are reported, not entered, so a bind-mount loop cannot recurse without end).
pub const DEPTH_MAX: usize = 32;
/// Most temporaries held by one run; the rest wait for the next run (reported).
pub const TEMPORARIES_MAX: usize = 500_000;

/// Why a temporary is kept, or that it may go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Old, unchanged, final file present, not in use: delete (or, in a dry run, would).
    Stale,
    /// Deleted by this run.
    Deleted,
    /// Changed (by mtime or ctime) within `--older-than`: a write may be in progress.
    Young,
    /// Some process has it open or mapped.
    Open,
    /// Some process holds a lock on it.
    Locked,
    /// Some process could not be inspected, so it cannot be proven closed.
    Unproven,
    /// Old, but its final file is missing (`None`) or not a regular file (its kind): it
    /// may hold the only copy of data. Never deleted; needs a look.
    Orphan(Option<Kind>),
    /// Not a regular file (symlink, fifo, directory, ...): never touched.
    NotRegular(Kind),
    /// On another file system than the root (a file bind-mounted into the tree).
    OtherFs,
    /// Under `chat_history/{user}/profile/`, which maintenance never touches (SPEC §1).
    Protected,
    /// Changed, moved or replaced between the decision and the deletion: kept.
    Changed(String),
    /// The deletion (or the checks just before it) failed with an I/O error.
    Failed(String),
}

impl Reason {
    /// A stable code for reports and JSON.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::Stale | Reason::Deleted => "stale",
            Reason::Young => "young",
            Reason::Open => "open",
            Reason::Locked => "locked",
            Reason::Unproven => "unproven",
            Reason::Orphan(_) => "orphan",
            Reason::NotRegular(_) => "not_regular",
            Reason::OtherFs => "other_fs",
            Reason::Protected => "protected",
            Reason::Changed(_) => "changed",
            Reason::Failed(_) => "failed",
        }
    }

    /// Whether an operator should look at it (exit 1, or 4 for a failure).
    pub fn needs_look(&self) -> bool {
        matches!(
            self,
            Reason::Orphan(_) | Reason::Unproven | Reason::Changed(_) | Reason::Failed(_)
        )
    }
}

/// One temporary found by the walk.
#[derive(Clone, Debug)]
pub struct Temporary {
    /// Index of its directory in [`Walk::dirs`].
    pub dir: u32,
    /// Its name in that directory.
    pub name: OsString,
    /// Identity, size and times when it was found.
    pub stamp: Stamp,
    /// The decision so far.
    pub reason: Reason,
}

impl Temporary {
    /// Its final file's name (`a.json` for `a.json.tmp.123`).
    pub fn final_name(&self) -> &OsStr {
        temp_final_name(&self.name).expect("only temporaries are recorded")
    }
}

/// A directory that holds at least one temporary.
#[derive(Clone, Debug)]
pub struct WalkedDir {
    /// Path relative to the root.
    pub rel: PathBuf,
    /// Its identity when it was listed; it must still be this directory at deletion.
    pub stamp: Stamp,
}

/// What the walk found.
#[derive(Debug, Default)]
pub struct Walk {
    /// Directories holding temporaries.
    pub dirs: Vec<WalkedDir>,
    /// Every temporary, in walk order.
    pub temps: Vec<Temporary>,
    /// Directories not entered (another file system, too deep, a symlinked data
    /// directory), with the reason; not an error.
    pub not_entered: Vec<Problem>,
    /// What went wrong (a directory that cannot be listed, an entry that cannot be
    /// stated), with the path.
    pub failures: Vec<Problem>,
    /// What needs a look without being a failure (a symlinked data directory, the
    /// temporaries limit reached).
    pub problems: Vec<Problem>,
    /// Directories listed.
    pub dirs_walked: u64,
    /// Entries looked at.
    pub entries: u64,
    /// Whether [`TEMPORARIES_MAX`] was reached (the rest wait for the next run).
    pub truncated: bool,
}

/// The root as the walk holds it: a descriptor and its identity.
#[derive(Debug)]
pub struct Anchor {
    /// The root path (canonical), for reports.
    pub path: PathBuf,
    /// The open root directory.
    pub fd: OwnedFd,
    /// Its identity: device and mount every entered directory must share.
    pub stamp: Stamp,
}

impl Anchor {
    /// Opens the root.
    ///
    /// # Errors
    /// The OS error, naming the path.
    pub fn open(path: &Path) -> tmpa_core::Result<Anchor> {
        let io = |e: Errno| tmpa_core::Error::Io {
            op: "open root",
            path: path.to_path_buf(),
            source: e.into(),
        };
        let fd = fsops::open_dir_path(path).map_err(io)?;
        let stamp = fsops::stat_fd(fd.as_fd()).map_err(io)?;
        Ok(Anchor {
            path: path.to_path_buf(),
            fd,
            stamp,
        })
    }

    /// Whether a directory with this stamp is on the root's file system (same device
    /// and, where the kernel says, the same mount).
    fn same_fs(&self, st: &Stamp) -> bool {
        st.dev == self.stamp.dev
            && match (st.mnt_id, self.stamp.mnt_id) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

/// The age rule: the cutoff is `now - older_than`; a file changed after it is young.
#[derive(Clone, Copy, Debug)]
pub struct Cutoff(pub Time);

struct Level {
    stream: Dir,
    fd: OwnedFd,
    rel: PathBuf,
    stamp: Stamp,
    id: Option<u32>,
}

/// Walks the data directories of the root and decides, for every temporary, everything
/// that does not need the `/proc` scan (kind, file system, age, final file).
pub fn walk(anchor: &Anchor, cutoff: Cutoff) -> Walk {
    let mut w = Walk::default();
    for data in DATA_DIRS {
        let rel = PathBuf::from(data);
        match fsops::open_dir_at(anchor.fd.as_fd(), OsStr::new(data)) {
            Ok(fd) => walk_tree(anchor, cutoff, fd, rel, &mut w),
            Err(Errno::NOENT) => {}
            Err(Errno::LOOP | Errno::NOTDIR) => {
                let path = anchor.path.join(&rel);
                if is_symlink(anchor.fd.as_fd(), OsStr::new(data)) {
                    w.problems.push(Problem {
                        path,
                        reason: "data directory is a symlink (not followed, not cleaned)".into(),
                    });
                }
            }
            Err(e) => w.failures.push(Problem {
                path: anchor.path.join(&rel),
                reason: format!("cannot open: {}", io_text(e)),
            }),
        }
    }
    w
}

fn is_symlink(dir: BorrowedFd<'_>, name: &OsStr) -> bool {
    fsops::stat_at(dir, name).is_ok_and(|s| s.kind == Kind::Symlink)
}

fn io_text(e: Errno) -> String {
    std::io::Error::from(e).to_string()
}

/// Depth-first over one data directory, one open stream per level.
fn walk_tree(anchor: &Anchor, cutoff: Cutoff, top: OwnedFd, rel: PathBuf, w: &mut Walk) {
    let mut stack: Vec<Level> = Vec::new();
    if let Some(level) = enter(anchor, top, rel, w) {
        stack.push(level);
    }
    loop {
        let depth = stack.len();
        let Some(level) = stack.last_mut() else {
            break;
        };
        let entry = match level.stream.read() {
            None => {
                stack.pop();
                continue;
            }
            Some(Err(e)) => {
                w.failures.push(Problem {
                    path: anchor.path.join(&level.rel),
                    reason: format!("cannot list: {}", io_text(e)),
                });
                stack.pop();
                continue;
            }
            Some(Ok(entry)) => entry,
        };
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        w.entries += 1;
        if temp_final_name(name).is_some() {
            record_temporary(anchor, cutoff, level, name, w);
            // A directory named like a temporary is kept (not regular) and still walked.
        }
        let is_dir = match entry.file_type() {
            FileType::Directory => true,
            FileType::Unknown => {
                fsops::stat_at(level.fd.as_fd(), name).is_ok_and(|s| s.kind == Kind::Directory)
            }
            _ => false,
        };
        if !is_dir {
            continue;
        }
        let rel = level.rel.join(name);
        if depth > DEPTH_MAX {
            w.not_entered.push(Problem {
                path: anchor.path.join(&rel),
                reason: format!("deeper than {DEPTH_MAX} levels (not entered)"),
            });
            continue;
        }
        match fsops::open_dir_at(level.fd.as_fd(), name) {
            Ok(fd) => {
                if let Some(next) = enter(anchor, fd, rel, w) {
                    stack.push(next);
                }
            }
            // Gone, or swapped for a symlink or a file since it was listed: not followed.
            Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR) => {}
            Err(e) => w.failures.push(Problem {
                path: anchor.path.join(&rel),
                reason: format!("cannot open: {}", io_text(e)),
            }),
        }
    }
}

/// Checks a freshly opened directory (same file system as the root) and starts listing it.
fn enter(anchor: &Anchor, fd: OwnedFd, rel: PathBuf, w: &mut Walk) -> Option<Level> {
    let path = anchor.path.join(&rel);
    let stamp = match fsops::stat_fd(fd.as_fd()) {
        Ok(s) => s,
        Err(e) => {
            w.failures.push(Problem {
                path,
                reason: format!("cannot stat: {}", io_text(e)),
            });
            return None;
        }
    };
    if !anchor.same_fs(&stamp) {
        w.not_entered.push(Problem {
            path,
            reason: "on another file system (not entered)".into(),
        });
        return None;
    }
    let stream = match Dir::read_from(fd.as_fd()) {
        Ok(s) => s,
        Err(e) => {
            w.failures.push(Problem {
                path,
                reason: format!("cannot list: {}", io_text(e)),
            });
            return None;
        }
    };
    w.dirs_walked += 1;
    Some(Level {
        stream,
        fd,
        rel,
        stamp,
        id: None,
    })
}

/// Stats one temporary and records it with the decision the walk can make alone.
fn record_temporary(
    anchor: &Anchor,
    cutoff: Cutoff,
    level: &mut Level,
    name: &OsStr,
    w: &mut Walk,
) {
    if w.temps.len() >= TEMPORARIES_MAX {
        if !w.truncated {
            w.truncated = true;
            w.problems.push(Problem {
                path: anchor.path.clone(),
                reason: format!(
                    "more than {TEMPORARIES_MAX} temporaries: the rest are left for the next run"
                ),
            });
        }
        return;
    }
    let stamp = match fsops::stat_at(level.fd.as_fd(), name) {
        Ok(s) => s,
        Err(Errno::NOENT) => return, // renamed over its final file meanwhile: done
        Err(e) => {
            w.failures.push(Problem {
                path: anchor.path.join(&level.rel).join(name),
                reason: format!("cannot stat: {}", io_text(e)),
            });
            return;
        }
    };
    let reason = if is_protected(&level.rel) {
        Reason::Protected
    } else {
        first_decision(anchor, cutoff, level.fd.as_fd(), name, &stamp)
    };
    let id = *level.id.get_or_insert_with(|| {
        w.dirs.push(WalkedDir {
            rel: level.rel.clone(),
            stamp: level.stamp,
        });
        u32::try_from(w.dirs.len() - 1).expect("fewer directories than TEMPORARIES_MAX")
    });
    w.temps.push(Temporary {
        dir: id,
        name: name.to_os_string(),
        stamp,
        reason,
    });
}

/// Whether a directory (relative to the root) is in `chat_history/{user}/profile/`.
///
/// # Examples
/// ```
/// use std::path::Path;
/// use tmpa_tmpclean::walk::is_protected;
/// assert!(is_protected(Path::new("chat_history/u1/profile")));
/// assert!(!is_protected(Path::new("chat_history/u1/sessions")));
/// ```
pub fn is_protected(rel: &Path) -> bool {
    let mut c = rel.components().map(|c| c.as_os_str());
    c.next() == Some(OsStr::new("chat_history"))
        && c.next().is_some()
        && c.next() == Some(OsStr::new("profile"))
}

/// Kind, file system, age, final file; in that order, so that the reason given is the
/// first that keeps the file. A young temporary without a final file is a write in
/// progress, not an orphan.
fn first_decision(
    anchor: &Anchor,
    cutoff: Cutoff,
    dir: BorrowedFd<'_>,
    name: &OsStr,
    st: &Stamp,
) -> Reason {
    if st.kind != Kind::File {
        return Reason::NotRegular(st.kind);
    }
    if st.dev != anchor.stamp.dev {
        return Reason::OtherFs;
    }
    if st.changed() > cutoff.0 {
        return Reason::Young;
    }
    match final_kind(dir, name) {
        Some(Kind::File) => Reason::Stale,
        other => Reason::Orphan(other),
    }
}

/// The kind of the final file of temporary `name` in `dir`, `None` when there is none.
pub fn final_kind(dir: BorrowedFd<'_>, name: &OsStr) -> Option<Kind> {
    let f = temp_final_name(name)?;
    fsops::stat_at(dir, f).ok().map(|s| s.kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_directories_are_protected() {
        assert!(is_protected(Path::new("chat_history/u1/profile")));
        assert!(is_protected(Path::new("chat_history/u1/profile/a/b")));
        assert!(!is_protected(Path::new("chat_history/u1/sessions")));
        assert!(!is_protected(Path::new("chat_history/profile")));
        assert!(!is_protected(Path::new("notifications/u1/profile")));
    }
}
