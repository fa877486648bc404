//! The quarantine: where the delete step moves a file between its last check and its
//! unlink (`tmpa_core::maintenance::dispose`), and where a file that must not be deleted
//! but cannot go back under its name is kept for an operator.
//!
//! ```text
//! {root}/.tmpa/quarantine/in-flight/{task}/{run}/{path below the root}
//! {root}/.tmpa/quarantine/kept/{task}/{run}/{path below the root}
//! ```
//!
//! `{run}` is the run's receipt stem (`{start time}-{pid}`, the receipt being
//! `{root}/.tmpa/receipts/{task}/{run}.jsonl`), and below it a file keeps the path it had
//! below the root, so a person (and the next run) can always tell where it came from.
//! `in-flight/` holds a file only for the instant of its delete step, or after a kill in
//! that instant: the next real run of the same task ([`recover`]) deletes it when its
//! receipt has a `delete` line for exactly that inode (its size and mtime unchanged), and
//! otherwise moves it back under its name. `kept/` holds files that a newer file replaced
//! while they were aside: no program deletes them; the patrol reports them.

use std::ffi::{OsStr, OsString};
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tmpa_core::Root;
use tmpa_core::maintenance::{Dir, Kind, STATE_DIR, Stamp, path_text, root_dir};

use crate::receipt::ReceiptLine;
use crate::record::Task;

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

/// A run's quarantine directories, made on first use.
#[derive(Debug)]
pub(crate) struct Quarantine {
    task: Task,
    run_id: String,
    /// Mirrors of the source directories: (path below the root, directory).
    mirrors: Vec<(PathBuf, Dir)>,
}

impl Quarantine {
    pub(crate) fn new(task: Task, run_id: String) -> Quarantine {
        Quarantine {
            task,
            run_id,
            mirrors: Vec::new(),
        }
    }

    /// The directory that files of `source` (held by descriptor, below the root) are
    /// moved to for their delete step, made on first use.
    ///
    /// # Errors
    /// When `source` is not below the root, or the directory cannot be made.
    pub(crate) fn aside_for(&mut self, root: &Root, source: &Dir) -> tmpa_core::Result<&Dir> {
        let rel = below_root(root, source)?;
        if let Some(i) = self.mirrors.iter().position(|(r, _)| *r == rel) {
            return Ok(&self.mirrors[i].1);
        }
        let dir = root_dir(root).create_dir_all(self.run_rel(IN_FLIGHT).join(&rel))?;
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
        keep_aside(root, aside, name, &self.run_rel(KEPT).join(&rel))
    }

    /// Removes this run's empty quarantine directories (best effort: a leftover empty
    /// directory is removed by the next run's recovery).
    pub(crate) fn tidy(&mut self, root: &Root) {
        self.mirrors.clear();
        let rel = self.run_rel(IN_FLIGHT);
        let Some(parent) = rel.parent() else { return };
        if let Ok(dir) = root_dir(root).open_dir(parent) {
            let _ = remove_empty_tree(&dir, OsStr::new(&self.run_id), 0);
        }
    }

    fn run_rel(&self, area: &str) -> PathBuf {
        quarantine_rel()
            .join(area)
            .join(self.task.as_str())
            .join(&self.run_id)
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

/// Moves `name` from `aside` to the same name in `kept_rel` (below the root), never
/// replacing anything there; returns the new path as text.
fn keep_aside(
    root: &Root,
    aside: &Dir,
    name: &OsStr,
    kept_rel: &Path,
) -> tmpa_core::Result<String> {
    let kept = root_dir(root).create_dir_all(kept_rel)?;
    // From one private name to another: no writer knows either, so where the file system
    // has no RENAME_NOREPLACE a plain rename to the (checked absent) name is exact.
    aside.move_aside(name, &kept, name)?;
    kept.sync()?;
    Ok(path_text(&kept.join(name)))
}

/// What the recovery of a killed run did with one file it found in the quarantine (a
/// `recovered` line of the receipt of the run that recovered it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovered {
    /// Where the file was before the killed run moved it (its path below the root).
    pub file: String,
    /// What became of it.
    #[serde(flatten)]
    pub action: RecoveredAction,
}

/// What the recovery did with a file left in the quarantine by a killed run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum RecoveredAction {
    /// The killed run's receipt names exactly this inode, unchanged: its delete step was
    /// finished.
    Deleted,
    /// Not the file its receipt names (or no receipt line names it): moved back under its
    /// name.
    Restored,
    /// Not the file its receipt names, and a newer file has its name (or, with `why`,
    /// the file system has no way to put it back that could not replace one): kept in
    /// `quarantine/kept/`, never deleted.
    Kept {
        /// Where it is kept.
        at: String,
        /// Why it could not go back, when not because its name is taken.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        why: Option<String>,
    },
    /// It could not be dealt with; it stays where it is and the next run tries again.
    Failed {
        /// Why.
        error: String,
    },
}

impl Recovered {
    /// Whether an operator should look (exit 1).
    pub fn needs_look(&self) -> bool {
        matches!(
            self.action,
            RecoveredAction::Kept { .. } | RecoveredAction::Failed { .. }
        )
    }

    /// One line of the text report.
    pub fn words(&self) -> String {
        match &self.action {
            RecoveredAction::Deleted => format!(
                "  recovered: {}: deleted from the quarantine (a killed run's verified deletion, finished)",
                self.file
            ),
            RecoveredAction::Restored => format!(
                "  recovered: {}: moved back from the quarantine (a killed run had not verified it)",
                self.file
            ),
            RecoveredAction::Kept { at, why: None } => format!(
                "  problem: {}: a killed run moved it aside and a newer file has its name; kept at {at} (compare and keep one)",
                self.file
            ),
            RecoveredAction::Kept { at, why: Some(why) } => format!(
                "  problem: {}: a killed run moved it aside and it cannot go back: {why}; kept at {at} (move it back if its name is free, else compare and keep one)",
                self.file
            ),
            RecoveredAction::Failed { error } => format!(
                "  problem: {}: left in the quarantine by a killed run, not recovered: {error}",
                self.file
            ),
        }
    }
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
    let rel = quarantine_rel().join(IN_FLIGHT).join(task.as_str());
    let runs = match root_dir(root).open_dir(&rel) {
        Ok(d) => d,
        Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut done = Vec::new();
    for run_id in runs.names(|n| n != OsStr::new(current_run))? {
        let Some(id) = run_id.to_str() else { continue };
        let verified = verified_stamps(root, task, id);
        let run_dir = match runs.open_dir(&run_id) {
            Ok(d) => d,
            Err(e) => {
                done.push(Recovered {
                    file: path_text(&runs.join(&run_id)),
                    action: RecoveredAction::Failed { error: e.chain() },
                });
                continue;
            }
        };
        let ctx = Recovery {
            root,
            verified: &verified,
            kept_rel: quarantine_rel().join(KEPT).join(task.as_str()).join(id),
        };
        ctx.walk(&run_dir, Path::new(""), 0, &mut done);
        let _ = remove_empty_tree(&runs, &run_id, 0);
    }
    Ok(done)
}

/// The stamps the `delete` lines of a run's receipt name (a torn last line is skipped).
fn verified_stamps(root: &Root, task: Task, run_id: &str) -> Vec<Stamp> {
    let rel = Path::new(STATE_DIR).join("receipts").join(task.as_str());
    let Ok(dir) = root_dir(root).open_dir(rel) else {
        return Vec::new();
    };
    let Ok(file) = dir.open_read(format!("{run_id}.jsonl")) else {
        return Vec::new();
    };
    std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| match serde_json::from_str::<ReceiptLine>(&l) {
            Ok(ReceiptLine::Delete(d)) => Some(d.stamp),
            _ => None,
        })
        .collect()
}

struct Recovery<'a> {
    root: &'a Root,
    verified: &'a [Stamp],
    kept_rel: PathBuf,
}

impl Recovery<'_> {
    /// Deals with every file below `dir`, which mirrors the directory `rel` of the root.
    fn walk(&self, dir: &Dir, rel: &Path, depth: usize, done: &mut Vec<Recovered>) {
        let names = match dir.names(|_| true) {
            Ok(n) => n,
            Err(e) => {
                done.push(failed(dir.path(), &e));
                return;
            }
        };
        for name in names {
            let meta = match dir.stat(&name) {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(e) => {
                    done.push(failed(&dir.join(&name), &e));
                    continue;
                }
            };
            match meta.kind {
                Kind::Directory if depth < DEPTH_MAX => match dir.open_dir(&name) {
                    Ok(sub) => self.walk(&sub, &rel.join(&name), depth + 1, done),
                    Err(e) => done.push(failed(&dir.join(&name), &e)),
                },
                _ => done.push(self.one(dir, &name, rel, meta.stamp)),
            }
        }
    }

    fn one(&self, aside: &Dir, name: &OsString, rel: &Path, stamp: Stamp) -> Recovered {
        let file = path_text(&self.root.path().join(rel).join(name));
        let verified = self.verified.iter().any(|v| stamp.same_but_ctime(v));
        let action = if verified {
            match aside.unlink(name) {
                Ok(()) => RecoveredAction::Deleted,
                Err(e) => RecoveredAction::Failed { error: e.chain() },
            }
        } else {
            self.restore(aside, name, rel)
        };
        Recovered { file, action }
    }

    fn restore(&self, aside: &Dir, name: &OsStr, rel: &Path) -> RecoveredAction {
        let home = match root_dir(self.root).create_dir_all(rel) {
            Ok(d) => d,
            Err(e) => return RecoveredAction::Failed { error: e.chain() },
        };
        match aside.move_noreplace(name, &home, name) {
            Ok(()) => match home.sync() {
                Ok(()) => RecoveredAction::Restored,
                Err(e) => RecoveredAction::Failed { error: e.chain() },
            },
            Err(e) if e.io_kind() == std::io::ErrorKind::AlreadyExists => {
                self.keep(aside, name, rel, None)
            }
            Err(e) if e.io_kind() == std::io::ErrorKind::Unsupported => {
                self.keep(aside, name, rel, Some(e.chain()))
            }
            Err(e) => RecoveredAction::Failed { error: e.chain() },
        }
    }
}

impl Recovery<'_> {
    /// Moves a file that cannot go back under its name to `kept/`.
    fn keep(&self, aside: &Dir, name: &OsStr, rel: &Path, why: Option<String>) -> RecoveredAction {
        match keep_aside(self.root, aside, name, &self.kept_rel.join(rel)) {
            Ok(at) => RecoveredAction::Kept { at, why },
            Err(e) => RecoveredAction::Failed { error: e.chain() },
        }
    }
}

fn failed(path: &Path, e: &tmpa_core::Error) -> Recovered {
    Recovered {
        file: path_text(path),
        action: RecoveredAction::Failed { error: e.chain() },
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
    parent.remove_dir(name)
}
