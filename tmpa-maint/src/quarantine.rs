//! The quarantine: where the delete step moves a file between its last check and its
//! unlink (`tmpa_core::maintenance::dispose`), and where a file that must not be deleted
//! but cannot go back under its name is kept for an operator.
//!
//! ```text
//! {root}/.tmpa/quarantine/in-flight/{task}/{run}/{path below the root}
//! {root}/.tmpa/quarantine/kept/{task}/{run}/{path below the root}
//! ```
//!
//! `{run}` is the run's id (the receipt being `{root}/.tmpa/receipts/{task}/{run}.jsonl`),
//! and below it a file keeps the path it had below the root, so a person (and the next
//! run) can always tell where it came from. `in-flight/` holds a file only for the
//! instant of its delete step, or after a kill in that instant: the next real run of the
//! same task ([`recover`]) deletes it when its receipt has a `delete` line for exactly
//! that inode (its size and mtime unchanged), and otherwise moves it back under its name.
//! `kept/` holds files that a newer file replaced while they were aside: no program
//! deletes them; the patrol reports them. A run holds a lock (`flock`) on its own
//! directory for as long as it lives, so that no recovery ever takes a live run's files
//! for a killed run's, even when the task's lock was taken from it ([`crate::Lock`]).
//!
//! # Security
//! `quarantine/`, `in-flight/`, `kept/` and the `{task}` directories are shared by the
//! runs of every user and may be the tree owner's. A run's own directory `{run}` is not:
//! it is made new (`mkdir`, never reusing an entry) by the run, owned by the run's user,
//! mode 0700, and everything below it is made by the run too. So no one else can rename
//! a file out of it while it waits there (a user's file deleted by root is beyond the
//! tree owner's reach), nor put anything in it. The recovery believes only such
//! directories: one of another user (planted, or left by an older version) is left
//! alone and named (exit 1), never put back. A file it does put back goes only into a
//! directory its owner could have written (its owner's, or any for a file of root's):
//! where the tree's owner replaced a user's directory with one of its own, the file is
//! kept in `kept/` instead. Reads are bounded: at most [`RUNS_MAX`] runs and
//! [`FILES_MAX`] files per recovery (the rest waits for the next run), receipts as
//! `crate::receipt::read_deletions` reads them.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;
use rustix::io::Errno;
use tmpa_core::Root;
use tmpa_core::maintenance::{Dir, Kind, Meta, STATE_DIR, Stamp, path_text, root_dir};

use crate::receipt::{Recovered, RecoveredAction, read_deletions};
use crate::record::Task;
use crate::trust::{Distrust, own_state_dir, runner_uid};

/// `{root}/.tmpa/quarantine`, relative to the root.
pub fn quarantine_rel() -> PathBuf {
    Path::new(STATE_DIR).join("quarantine")
}

/// Where files wait for the instant of their deletion.
const IN_FLIGHT: &str = "in-flight";
/// Where files that must not be deleted and cannot go back are kept.
const KEPT: &str = "kept";
/// Directories below a run's quarantine directory: the deepest path of the tree
/// (`chat_history/{user}/archive`, a temporary anywhere tmpclean walks) is well within.
const DEPTH_MAX: usize = 64;
/// Entries of `in-flight/{task}/` one recovery looks at (a killed run leaves one).
pub const RUNS_MAX: usize = 1024;
/// Files one recovery deals with (a killed run leaves at most a chunk of deletions);
/// the rest wait for the next run.
pub const FILES_MAX: usize = 1 << 16;
/// A run's own quarantine directory: its user's alone.
const RUN_DIR_MODE: u32 = 0o700;

/// A run's quarantine directories, made on first use.
#[derive(Debug)]
pub(crate) struct Quarantine {
    task: Task,
    run_id: String,
    /// `in-flight/{task}/{run}`, this run's own, once made.
    run_dir: Option<Dir>,
    /// Mirrors of the source directories: (path below the root, directory).
    mirrors: Vec<(PathBuf, Dir)>,
}

impl Quarantine {
    pub(crate) fn new(task: Task, run_id: String) -> Quarantine {
        Quarantine {
            task,
            run_id,
            run_dir: None,
            mirrors: Vec::new(),
        }
    }

    /// The directory that files of `source` (held by descriptor, below the root) are
    /// moved to for their delete step, made on first use below this run's own directory.
    ///
    /// # Errors
    /// When `source` is not below the root, or the directory cannot be made (the run's
    /// directory already exists: no run id repeats, so something was planted there).
    pub(crate) fn aside_for(&mut self, root: &Root, source: &Dir) -> tmpa_core::Result<&Dir> {
        let rel = below_root(root, source)?;
        if let Some(i) = self.mirrors.iter().position(|(r, _)| *r == rel) {
            return Ok(&self.mirrors[i].1);
        }
        if self.run_dir.is_none() {
            let area = root_dir(root).create_dir_all(area_rel(IN_FLIGHT, self.task))?;
            let made = area.create_dir_new(OsStr::new(&self.run_id), RUN_DIR_MODE)?;
            // Locked for the run's life: another run's recovery leaves a live run's
            // directory alone (see `recover`). Where directories cannot be locked (NFS),
            // the task's lock is all there is, as it was.
            let _ = rustix::fs::flock(&made, FlockOperation::NonBlockingLockExclusive);
            self.run_dir = Some(made);
        }
        let run_dir = self.run_dir.as_ref().expect("made above");
        // Below the run's own directory, every directory made is this user's too (a new
        // directory takes its parent's owner).
        let dir = run_dir.create_dir_all(&rel)?;
        self.mirrors.push((rel, dir));
        Ok(&self.mirrors.last().expect("pushed above").1)
    }

    /// Moves a superseded file (see `Disposal::Superseded`) from `in-flight/` to `kept/`,
    /// where no program deletes it; returns where it is now, as text.
    pub(crate) fn keep(
        &self,
        root: &Root,
        source: &Dir,
        name: &OsStr,
    ) -> tmpa_core::Result<String> {
        let rel = below_root(root, source)?;
        let aside = self
            .mirrors
            .iter()
            .find(|(r, _)| *r == rel)
            .map(|(_, d)| d)
            .expect("a superseded file was moved aside through this quarantine");
        keep_aside(root, self.task, &self.run_id, aside, name, &rel)
    }

    /// Removes this run's empty quarantine directories (best effort: a leftover empty
    /// directory is removed by the next run's recovery).
    pub(crate) fn tidy(&mut self, root: &Root) {
        self.mirrors.clear();
        let Some(made) = self.run_dir.take() else {
            return;
        };
        if let Ok(area) = root_dir(root).open_dir(area_rel(IN_FLIGHT, self.task))
            && is_same_dir(&area, OsStr::new(&self.run_id), &made)
        {
            let _ = remove_empty_tree(&area, OsStr::new(&self.run_id), 0);
        }
    }
}

/// `quarantine/{area}/{task}`, relative to the root.
fn area_rel(area: &str, task: Task) -> PathBuf {
    quarantine_rel().join(area).join(task.as_str())
}

/// Whether the entry `name` of `parent` is the directory `held`.
fn is_same_dir(parent: &Dir, name: &OsStr, held: &Dir) -> bool {
    match (parent.stat(name), held.meta()) {
        (Ok(Some(m)), Ok(h)) => m.kind == Kind::Directory && m.stamp.same_inode(&h.stamp),
        _ => false,
    }
}

/// The path of `dir` below the root.
fn below_root(root: &Root, dir: &Dir) -> tmpa_core::Result<PathBuf> {
    dir.path()
        .strip_prefix(root.path())
        .map(Path::to_path_buf)
        .map_err(|_| {
            dir.error(
                "move aside",
                "",
                std::io::Error::other("the directory is not below the root"),
            )
        })
}

/// `kept/{task}/{run}`: made new for this user alone, or (a run's second kept file, or
/// the recovery of the same killed run again) opened when it already is this user's
/// alone.
fn kept_run_dir(root: &Root, task: Task, run_id: &str) -> tmpa_core::Result<Dir> {
    let area = root_dir(root).create_dir_all(area_rel(KEPT, task))?;
    let name = OsStr::new(run_id);
    match area.create_dir_new(name, RUN_DIR_MODE) {
        Ok(d) => Ok(d),
        Err(e) if e.io_kind() == std::io::ErrorKind::AlreadyExists => {
            let dir = area.open_dir(name)?;
            own_state_dir(&dir.meta()?)
                .map_err(|why| area.error("use", name, std::io::Error::other(why.to_string())))?;
            Ok(dir)
        }
        Err(e) => Err(e),
    }
}

/// Moves `name` from `aside` to the same name in `kept/{task}/{run}/{rel}`, never
/// replacing anything there; returns the new path as text.
fn keep_aside(
    root: &Root,
    task: Task,
    run_id: &str,
    aside: &Dir,
    name: &OsStr,
    rel: &Path,
) -> tmpa_core::Result<String> {
    let kept = kept_run_dir(root, task, run_id)?.create_dir_all(rel)?;
    // From one private name to another: no writer knows either, so where the file system
    // has no RENAME_NOREPLACE a plain rename to the (checked absent) name is exact.
    aside.move_aside(name, &kept, name)?;
    kept.sync()?;
    Ok(path_text(&kept.join(name)))
}

/// Finishes the delete steps of earlier runs of `task` that were killed in the middle
/// (see the module's documentation); skips `current_run`. Call with the task's lock held.
///
/// Returns what was done, file by file.
///
/// # Errors
/// Only when the quarantine directory itself cannot be listed.
pub(crate) fn recover(
    root: &Root,
    task: Task,
    current_run: &str,
) -> tmpa_core::Result<Vec<Recovered>> {
    let runs = match root_dir(root).open_dir(area_rel(IN_FLIGHT, task)) {
        Ok(d) => d,
        Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    // Names only, at most RUNS_MAX of them: the directory is the tree owner's, who may
    // fill it.
    let mut ids = Vec::new();
    runs.visit_entries(|name, _, _| {
        if ids.len() < RUNS_MAX && name != OsStr::new(current_run) {
            ids.push(name.to_os_string());
        }
    })?;
    ids.sort();
    let mut done = Vec::new();
    let mut files_left = FILES_MAX;
    for run_id in ids {
        let shown = runs.join(&run_id);
        let run_dir = match open_own(&runs, &run_id) {
            Ok(Some(d)) => d,
            // Someone else's, and empty: nothing to recover, nothing to say.
            Ok(None) => continue,
            Err(error) => {
                done.push(Recovered {
                    file: path_text(&shown),
                    action: RecoveredAction::Failed { error },
                });
                continue;
            }
        };
        let Some(id) = run_id.to_str() else { continue };
        let mut found = Found::default();
        found.walk(&run_dir, Path::new(""), 0, &mut files_left);
        // What the killed run's receipt proves (nothing when it is missing, torn before
        // the line, or not believed: then every file goes back).
        let stamps: Vec<Stamp> = found.files.iter().map(|f| f.meta.stamp).collect();
        let verified = read_deletions(root, task, id, &stamps).unwrap_or_default();
        let ctx = Recovery {
            root,
            task,
            run_id: id,
        };
        done.extend(found.failures);
        for f in &found.files {
            let dir = &found.dirs[f.dir];
            done.push(ctx.one(dir, f, verified.contains(&f.meta.stamp)));
        }
        drop(found.dirs);
        if is_same_dir(&runs, &run_id, &run_dir) {
            let _ = remove_empty_tree(&runs, &run_id, 0);
        }
        if files_left == 0 {
            break;
        }
    }
    Ok(done)
}

/// The run directory `name` of `runs` when it is this program's user's alone and no live
/// run holds it (locked, in the returned descriptor, until the recovery is done); `None`
/// when a live run holds it, or it is someone else's and empty (or not there); else why
/// it is left alone.
fn open_own(runs: &Dir, name: &OsStr) -> Result<Option<Dir>, String> {
    let meta = match runs.stat(name) {
        Ok(Some(m)) => m,
        Ok(None) => return Ok(None),
        Err(e) => return Err(e.chain()),
    };
    let why = match own_state_dir(&meta) {
        Ok(()) => match runs.open_dir(name) {
            Ok(d) if d.meta().is_ok_and(|m| m.stamp.same_inode(&meta.stamp)) => {
                // A live run holds its directory's lock (`Quarantine::aside_for`): the
                // lock of the task was taken from it, and its files are in flight, not
                // left by a kill.
                return match rustix::fs::flock(&d, FlockOperation::NonBlockingLockExclusive) {
                    Err(Errno::WOULDBLOCK) => Ok(None),
                    _ => Ok(Some(d)),
                };
            }
            Ok(_) => return Err("replaced while it was opened: left alone".into()),
            Err(e) => return Err(e.chain()),
        },
        Err(why) => why,
    };
    if meta.kind == Kind::Directory
        && let Ok(d) = runs.open_dir(name)
        && let Ok(mut entries) = d.entries()
        && entries.next().is_none()
    {
        return Ok(None);
    }
    Err(format!("not believed: {why}"))
}

/// A file found in a run's quarantine directory.
struct FoundFile {
    /// Index of its directory in [`Found::dirs`].
    dir: usize,
    /// Its directory's path below the root.
    rel: PathBuf,
    name: OsString,
    meta: Meta,
}

/// What a run's quarantine directory holds.
#[derive(Default)]
struct Found {
    dirs: Vec<Dir>,
    files: Vec<FoundFile>,
    failures: Vec<Recovered>,
}

impl Found {
    /// Collects every file below `dir`, which mirrors the directory `rel` of the root;
    /// at most `files_left` more. Directories below must be this user's (it made them;
    /// whatever their mode, no one else can reach them below its run's 0700 directory);
    /// another is named, not entered.
    fn walk(&mut self, dir: &Dir, rel: &Path, depth: usize, files_left: &mut usize) {
        let names = match dir.names(|_| true) {
            Ok(n) => n,
            Err(e) => {
                self.failures.push(failed(dir.path(), &e.chain()));
                return;
            }
        };
        let Ok(held) = dir.try_clone() else { return };
        self.dirs.push(held);
        let index = self.dirs.len() - 1;
        for name in names {
            if *files_left == 0 {
                return;
            }
            let meta = match dir.stat(&name) {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(e) => {
                    self.failures.push(failed(&dir.join(&name), &e.chain()));
                    continue;
                }
            };
            match meta.kind {
                Kind::Directory if depth < DEPTH_MAX => {
                    if meta.uid != runner_uid() {
                        let why = format!(
                            "not believed: {}",
                            Distrust::StateOwner {
                                uid: meta.uid,
                                runner: runner_uid()
                            }
                        );
                        self.failures.push(failed(&dir.join(&name), &why));
                        continue;
                    }
                    match dir.open_dir(&name) {
                        Ok(sub) => self.walk(&sub, &rel.join(&name), depth + 1, files_left),
                        Err(e) => self.failures.push(failed(&dir.join(&name), &e.chain())),
                    }
                }
                _ => {
                    *files_left -= 1;
                    self.files.push(FoundFile {
                        dir: index,
                        rel: rel.to_path_buf(),
                        name,
                        meta,
                    });
                }
            }
        }
    }
}

struct Recovery<'a> {
    root: &'a Root,
    task: Task,
    run_id: &'a str,
}

impl Recovery<'_> {
    fn one(&self, aside: &Dir, f: &FoundFile, verified: bool) -> Recovered {
        let file = path_text(&self.root.path().join(&f.rel).join(&f.name));
        let action = if verified {
            #[allow(
                clippy::disallowed_methods,
                reason = "a file in the run's own locked quarantine whose data is verified held"
            )]
            match aside.unlink(&f.name) {
                Ok(()) => RecoveredAction::Deleted,
                Err(e) => RecoveredAction::Failed { error: e.chain() },
            }
        } else {
            self.restore(aside, f)
        };
        Recovered { file, action }
    }

    fn restore(&self, aside: &Dir, f: &FoundFile) -> RecoveredAction {
        let home = match root_dir(self.root).open_dir(&f.rel) {
            Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => {
                root_dir(self.root).create_dir_all(&f.rel)
            }
            other => other,
        };
        let home = match home {
            Ok(d) => d,
            Err(e) => return RecoveredAction::Failed { error: e.chain() },
        };
        match home.meta() {
            Ok(h) if could_have_put(&h, &f.meta) => {}
            Ok(h) => {
                let why = format!(
                    "its directory {} is uid {}'s (mode {:04o}), which its owner (uid {}) could not have written: never moved there",
                    path_text(home.path()),
                    h.uid,
                    h.mode,
                    f.meta.uid
                );
                return self.keep(aside, f, Some(why));
            }
            Err(e) => return RecoveredAction::Failed { error: e.chain() },
        }
        match aside.move_noreplace(&f.name, &home, &f.name) {
            Ok(()) => match home.sync() {
                Ok(()) => RecoveredAction::Restored,
                Err(e) => RecoveredAction::Failed { error: e.chain() },
            },
            Err(e) if e.io_kind() == std::io::ErrorKind::AlreadyExists => self.keep(aside, f, None),
            Err(e) if e.io_kind() == std::io::ErrorKind::Unsupported => {
                self.keep(aside, f, Some(e.chain()))
            }
            Err(e) => RecoveredAction::Failed { error: e.chain() },
        }
    }

    /// Moves a file that cannot go back under its name to `kept/`.
    fn keep(&self, aside: &Dir, f: &FoundFile, why: Option<String>) -> RecoveredAction {
        match keep_aside(self.root, self.task, self.run_id, aside, &f.name, &f.rel) {
            Ok(at) => RecoveredAction::Kept { at, why },
            Err(e) => RecoveredAction::Failed { error: e.chain() },
        }
    }
}

/// Whether the owner of the file `file` could have put it in the directory `dir`: its
/// own directory, writable by it; or any, for a file of root's. A directory another user
/// owns is refused even when its mode lets everyone write: the tree's owner could have
/// made it so, to be handed another user's file.
fn could_have_put(dir: &Meta, file: &Meta) -> bool {
    file.uid == 0 || (dir.uid == file.uid && dir.mode & 0o200 != 0)
}

fn failed(path: &Path, error: &str) -> Recovered {
    Recovered {
        file: path_text(path),
        action: RecoveredAction::Failed {
            error: error.to_owned(),
        },
    }
}

/// Removes the directory `name` of `parent` and every empty directory below it; stops at
/// anything that is not an empty directory.
fn remove_empty_tree(parent: &Dir, name: &OsStr, depth: usize) -> tmpa_core::Result<()> {
    if depth > DEPTH_MAX {
        return Ok(());
    }
    let dir = parent.open_dir(name)?;
    for sub in dir.names(|_| true)? {
        if dir.stat(&sub)?.is_some_and(|m| m.kind == Kind::Directory) {
            let _ = remove_empty_tree(&dir, &sub, depth + 1);
        }
    }
    #[allow(
        clippy::disallowed_methods,
        reason = "a directory of the run's own quarantine; rmdir removes only an empty one"
    )]
    parent.remove_dir(name)
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "tests build and break trees by path"
)]
mod tests;
