//! The walk: streams the three data directories through directory descriptors and keeps
//! only the temporaries (docs/FORMAT.md "Temporaries"), each with its stamp and a first decision.
//!
//! Memory is bounded by the depth of the tree (one open directory stream per level,
//! at most [`DEPTH_MAX`]) plus the temporaries found (at most [`TEMPORARIES_MAX`]); the
//! other entries are looked at once, by name and `d_type`, and forgotten.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use tmpa_core::maintenance::{
    DATA_DIRS, Dir, Entries, FinalName, Kind, Meta, root_dir, temporary_of,
};
use tmpa_core::{Error, Problem, ProblemKind, Root};

pub use crate::reason::Reason;

/// Deepest directory entered below a data directory (the layout needs 3; deeper trees
/// are reported, not entered, so a bind-mount loop cannot recurse without end).
pub const DEPTH_MAX: usize = 32;
/// Most temporaries held by one run; the rest wait for the next run (reported).
pub const TEMPORARIES_MAX: usize = 500_000;

/// One temporary found by the walk.
#[derive(Clone, Debug)]
pub struct Temporary {
    /// Index of its directory in [`Walk::dirs`].
    pub dir: u32,
    /// Its name in that directory.
    pub name: OsString,
    /// Its final file's name (for a long name's abbreviated temporary, the entry it
    /// stands for; else what the name says before `.tmp`).
    pub final_name: OsString,
    /// Identity, size, times and kind when it was found.
    pub meta: Meta,
    /// The decision so far.
    pub reason: Reason,
}

/// A directory that holds at least one temporary.
#[derive(Clone, Debug)]
pub struct WalkedDir {
    /// Path relative to the root.
    pub rel: PathBuf,
    /// Its identity when it was listed; it must still be this directory at deletion.
    pub meta: Meta,
}

/// What the walk found.
#[derive(Debug, Default)]
pub struct Walk {
    /// Directories holding temporaries.
    pub dirs: Vec<WalkedDir>,
    /// Every temporary, in walk order.
    pub temps: Vec<Temporary>,
    /// Directories not entered (another file system, too deep), with the reason; not an
    /// error.
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

/// The root as the walk holds it: its directory and identity.
#[derive(Debug)]
pub struct Anchor {
    /// The root, held by descriptor.
    pub dir: Dir,
    /// Its identity: the device every entered directory must share.
    pub meta: Meta,
    /// Its mount id, where the kernel says: every entered directory must share it too.
    pub mount_id: Option<u64>,
}

impl Anchor {
    /// Holds the root of `root`.
    ///
    /// # Errors
    /// [`Error::Io`] naming the root.
    pub fn open(root: &Root) -> tmpa_core::Result<Anchor> {
        let dir = root_dir(root).try_clone()?;
        let meta = dir.meta()?;
        let mount_id = dir.mount_id();
        Ok(Anchor {
            dir,
            meta,
            mount_id,
        })
    }

    /// The root's path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Whether a directory is on the root's file system (same device and, where the kernel
    /// says, the same mount).
    fn same_fs(&self, dir: &Dir, meta: &Meta) -> bool {
        meta.stamp.same_device(&self.meta.stamp)
            && match (dir.mount_id(), self.mount_id) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

/// The age rule: a file changed (mtime or ctime) after `cutoff_ns` is young.
#[derive(Clone, Copy, Debug)]
pub struct Cutoff(pub i64);

struct Level {
    dir: Dir,
    rel: PathBuf,
    meta: Meta,
    id: Option<u32>,
    stream: Entries,
}

/// Walks the data directories of the root and decides, for every temporary, everything
/// that does not need to know whether it is open (kind, file system, age, final file).
pub fn walk(anchor: &Anchor, cutoff: Cutoff) -> Walk {
    let mut w = Walk::default();
    for data in DATA_DIRS {
        match anchor.dir.open_dir(data) {
            Ok(d) => walk_tree(anchor, cutoff, d, PathBuf::from(data), &mut w),
            Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => {}
            Err(Error::Unsafe { path, .. }) => {
                if anchor
                    .dir
                    .stat(data)
                    .ok()
                    .flatten()
                    .is_some_and(|m| m.kind == Kind::Symlink)
                {
                    w.problems.push(Problem::new(
                        path,
                        ProblemKind::Unsafe,
                        "data directory is a symlink (not followed, not cleaned)",
                    ));
                }
            }
            Err(e) => w.failures.push(Problem::new(
                anchor.path().join(data),
                ProblemKind::Unreadable,
                format!("cannot open: {}", io_text(&e)),
            )),
        }
    }
    w
}

/// The operating system's words for an error, without the path (reports add it).
fn io_text(e: &Error) -> String {
    match e {
        Error::Io { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// Depth-first over one data directory, one open stream per level.
fn walk_tree(anchor: &Anchor, cutoff: Cutoff, top: Dir, rel: PathBuf, w: &mut Walk) {
    let mut stack: Vec<Level> = Vec::new();
    if let Some(level) = enter(anchor, top, rel, w) {
        stack.push(level);
    }
    loop {
        let depth = stack.len();
        let Some(level) = stack.last_mut() else {
            break;
        };
        let entry = match level.stream.next() {
            None => {
                stack.pop();
                continue;
            }
            Some(Err(e)) => {
                w.failures.push(Problem::new(
                    anchor.path().join(&level.rel),
                    ProblemKind::Unreadable,
                    format!("cannot list: {}", io_text(&e)),
                ));
                stack.pop();
                continue;
            }
            Some(Ok(entry)) => entry,
        };
        let name = entry.name;
        w.entries += 1;
        if temporary_of(&name).is_some() {
            record_temporary(anchor, cutoff, level, &name, w);
            // A directory named like a temporary is kept (not regular) and still walked.
        }
        let kind = match entry.kind {
            Some(k) => Some(k),
            None => level.dir.stat(&name).ok().flatten().map(|m| m.kind),
        };
        if kind != Some(Kind::Directory) {
            continue;
        }
        let rel = level.rel.join(&name);
        if depth > DEPTH_MAX {
            w.not_entered.push(Problem::new(
                anchor.path().join(&rel),
                ProblemKind::Unsafe,
                format!("deeper than {DEPTH_MAX} levels (not entered)"),
            ));
            continue;
        }
        match level.dir.open_dir(&name) {
            Ok(d) => {
                if let Some(next) = enter(anchor, d, rel, w) {
                    stack.push(next);
                }
            }
            // Gone, or swapped for a symlink or a file since it was listed: not followed.
            Err(Error::Unsafe { .. }) => {}
            Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => w.failures.push(Problem::new(
                anchor.path().join(&rel),
                ProblemKind::Unreadable,
                format!("cannot open: {}", io_text(&e)),
            )),
        }
    }
}

/// Checks a freshly opened directory (same file system as the root).
fn enter(anchor: &Anchor, dir: Dir, rel: PathBuf, w: &mut Walk) -> Option<Level> {
    let path = anchor.path().join(&rel);
    let meta = match dir.meta() {
        Ok(m) => m,
        Err(e) => {
            w.failures.push(Problem::new(
                path,
                ProblemKind::Unreadable,
                format!("cannot stat: {}", io_text(&e)),
            ));
            return None;
        }
    };
    if !anchor.same_fs(&dir, &meta) {
        w.not_entered.push(Problem::new(
            path,
            ProblemKind::Unsafe,
            "on another file system (not entered)",
        ));
        return None;
    }
    let stream = match dir.entries() {
        Ok(s) => s,
        Err(e) => {
            w.failures.push(Problem::new(
                path,
                ProblemKind::Unreadable,
                format!("cannot list: {}", io_text(&e)),
            ));
            return None;
        }
    };
    w.dirs_walked += 1;
    Some(Level {
        dir,
        rel,
        meta,
        id: None,
        stream,
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
            w.problems.push(Problem::new(
                anchor.path(),
                ProblemKind::Unsafe,
                format!(
                    "more than {TEMPORARIES_MAX} temporaries: the rest are left for the next run"
                ),
            ));
        }
        return;
    }
    let meta = match level.dir.stat(name) {
        Ok(Some(m)) => m,
        Ok(None) => return, // renamed over its final file meanwhile: done
        Err(e) => {
            w.failures.push(Problem::new(
                anchor.path().join(&level.rel).join(name),
                ProblemKind::Unreadable,
                format!("cannot stat: {}", io_text(&e)),
            ));
            return;
        }
    };
    let (final_name, final_kind) = final_of(&level.dir, name);
    let reason = if is_protected(&level.rel) {
        Reason::Protected
    } else {
        first_decision(anchor, cutoff, &meta, final_kind)
    };
    let id = *level.id.get_or_insert_with(|| {
        w.dirs.push(WalkedDir {
            rel: level.rel.clone(),
            meta: level.meta,
        });
        u32::try_from(w.dirs.len() - 1).expect("fewer directories than TEMPORARIES_MAX")
    });
    w.temps.push(Temporary {
        dir: id,
        name: name.to_os_string(),
        final_name,
        meta,
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
    meta: &Meta,
    final_kind: Option<Kind>,
) -> Reason {
    if meta.kind != Kind::File {
        return Reason::NotRegular(meta.kind);
    }
    if !meta.stamp.same_device(&anchor.meta.stamp) {
        return Reason::OtherFs;
    }
    if meta.stamp.changed_ns() > cutoff.0 {
        return Reason::Young;
    }
    match final_kind {
        Some(Kind::File) => Reason::Stale(None),
        other => Reason::Orphan(other),
    }
}

/// The final file of the temporary `name` in `dir`: its name and kind (`None` when there
/// is none). A long name's abbreviated temporary stands for the entry it matches.
pub fn final_of(dir: &Dir, name: &OsStr) -> (OsString, Option<Kind>) {
    let kind_of = |n: &OsStr| dir.stat(n).ok().flatten().map(|m| m.kind);
    match temporary_of(name) {
        None => (OsString::new(), None),
        Some(FinalName::Exact(f)) => (f.to_os_string(), kind_of(f)),
        Some(FinalName::Abbreviated(a)) => {
            if let Some(k) = kind_of(a.exact) {
                return (a.exact.to_os_string(), Some(k));
            }
            let found = dir
                .entries()
                .into_iter()
                .flatten()
                .flatten()
                .find(|e| a.matches(&e.name));
            match found {
                Some(e) => {
                    let k = kind_of(&e.name);
                    (e.name, k)
                }
                None => (a.exact.to_os_string(), None),
            }
        }
    }
}

/// The kind of the final file `final_name` in `dir` now.
pub fn final_kind(dir: &Dir, final_name: &OsStr) -> Option<Kind> {
    if final_name.is_empty() {
        return None;
    }
    dir.stat(final_name).ok().flatten().map(|m| m.kind)
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
