//! What the delete step left in `{root}/.tmpa/quarantine/` (docs/OPERATIONS.md "The
//! quarantine"): files in flight (a run killed during a delete step; its task's next run
//! finishes them) and files kept aside (a newer file took their name; only an operator
//! decides). Both warn on the check of the task that left them (`tmp_files` for
//! tmp_cleanup); the patrol never touches them.

use std::path::Path;

use serde::Serialize;
use tmpa_core::Root;
use tmpa_core::maintenance::{Dir, Kind, path_text, root_dir};
use tmpa_maint::quarantine_rel;

use crate::{Check, FINDINGS_MAX, Status};

/// Directories below a task's area that are walked at most (the programs' own mirrors of
/// the tree are far shallower).
const DEPTH_MAX: usize = 64;

/// What one task left in the quarantine.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TaskQuarantine {
    /// The task.
    pub task: String,
    /// Files in `in-flight/{task}/`.
    pub in_flight: u64,
    /// Files in `kept/{task}/`.
    pub kept: u64,
    /// The first of them, as paths.
    pub paths: Vec<String>,
}

/// What is in the quarantine, per task (tasks with nothing there are left out).
#[derive(Clone, Debug, Default, Serialize)]
pub struct QuarantineInfo {
    /// Per task.
    pub tasks: Vec<TaskQuarantine>,
}

impl QuarantineInfo {
    /// Files kept aside and in flight, over all tasks.
    pub fn totals(&self) -> (u64, u64) {
        self.tasks
            .iter()
            .fold((0, 0), |(k, f), t| (k + t.kept, f + t.in_flight))
    }
}

/// Counts the quarantine's files, per task.
pub fn scan(root: &Root) -> QuarantineInfo {
    let mut info = QuarantineInfo::default();
    let Ok(base) = root_dir(root).open_dir(quarantine_rel()) else {
        return info;
    };
    for (area, kept) in [("in-flight", false), ("kept", true)] {
        let Ok(area_dir) = base.open_dir(area) else {
            continue;
        };
        let Ok(tasks) = area_dir.names(|_| true) else {
            continue;
        };
        for task in tasks {
            let Ok(dir) = area_dir.open_dir(&task) else {
                continue;
            };
            let name = task.to_string_lossy().into_owned();
            let pos = match info.tasks.iter().position(|t| t.task == name) {
                Some(p) => p,
                None => {
                    info.tasks.push(TaskQuarantine {
                        task: name,
                        ..TaskQuarantine::default()
                    });
                    info.tasks.len() - 1
                }
            };
            let t = &mut info.tasks[pos];
            let mut paths = std::mem::take(&mut t.paths);
            let n = count_files(&dir, 0, &mut paths);
            t.paths = paths;
            if kept {
                t.kept += n;
            } else {
                t.in_flight += n;
            }
        }
    }
    info.tasks.retain(|t| t.kept + t.in_flight > 0);
    info.tasks.sort_by(|a, b| a.task.cmp(&b.task));
    info
}

fn count_files(dir: &Dir, depth: usize, paths: &mut Vec<String>) -> u64 {
    let Ok(names) = dir.names(|_| true) else {
        return 0;
    };
    let mut n = 0;
    for name in names {
        match dir.stat(&name) {
            Ok(Some(m)) if m.kind == Kind::Directory => {
                if depth < DEPTH_MAX
                    && let Ok(sub) = dir.open_dir(&name)
                {
                    n += count_files(&sub, depth + 1, paths);
                }
            }
            Ok(Some(_)) => {
                n += 1;
                if paths.len() < FINDINGS_MAX {
                    paths.push(path_text(&dir.join(&name)));
                }
            }
            _ => {}
        }
    }
    n
}

/// Adds what `task` left in the quarantine to `check` (a warning when anything is there).
pub fn annotate(check: &mut Check, info: &QuarantineInfo, task: &str) {
    let Some(t) = info.tasks.iter().find(|t| t.task == task) else {
        return;
    };
    check.status = check.status.worst(Status::Warning);
    let area = |a: &str| path_text(&Path::new(".tmpa/quarantine").join(a).join(task));
    if t.kept > 0 {
        check.detail.push_str(&format!(
            "; {} file(s) kept aside in {} (a newer file took their name during a deletion: compare each with the file at its path and keep one)",
            t.kept,
            area("kept")
        ));
    }
    if t.in_flight > 0 {
        check.detail.push_str(&format!(
            "; {} file(s) in {} (a run was killed during a deletion: the next run of {task} finishes it)",
            t.in_flight,
            area("in-flight")
        ));
    }
}
