//! Run records: what every run leaves in `{root}/.tmpa/runs/{task}.json`, dry or not.
//!
//! A run writes its record twice: when it starts (holding its lock), with `"finished":
//! false`, its pid, and the exit code a run that never finishes counts as (4); and when it
//! ends, with its outcome. A run killed in between leaves the first: "did not finish".
//! A run that cannot start (a usage error, a refusal, another run holding the lock) writes
//! one record, finished, with its exit code (docs/FORMAT.md "Program state").

use std::ffi::OsStr;
use std::path::Path;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};
use tmpa_core::Root;
use tmpa_core::maintenance::{STATE_DIR, root_dir, write_in};

/// The maintenance tasks that leave run records (docs/OPERATIONS.md "Exit codes").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// `tmpa-compact`.
    CompactEvents,
    /// `tmpa-archive`.
    ArchiveHistory,
    /// `tmpa-tmpclean`.
    TmpCleanup,
    /// `tmpa-snapshot`.
    Snapshot,
}

impl Task {
    /// The task's name, as in `.tmpa/runs/{task}.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Task::CompactEvents => "compact_events",
            Task::ArchiveHistory => "archive_history",
            Task::TmpCleanup => "tmp_cleanup",
            Task::Snapshot => "snapshot",
        }
    }

    /// Whether the task deletes (its dry runs have a plan); the snapshot only copies.
    pub fn deletes(self) -> bool {
        self != Task::Snapshot
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A run record. the mandatory fields of docs/FORMAT.md "Program state" (`task`, `started_at`, `finished_at`,
/// `dry_run`, `exit_code`) are all a record needs to be understood; the programs of
/// this workspace also write the rest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// `compact_events`, `archive_history`, `tmp_cleanup` (or another tool's task name).
    pub task: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub finished_at: String,
    /// Whether it was a dry run.
    pub dry_run: bool,
    /// The exit code it ended with.
    pub exit_code: u8,
    /// The binary that ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// The canonical root (escaped as by `path_text`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// Wall time of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<f64>,
    /// The program's counts (files deleted, events merged, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<serde_json::Value>,
    /// The receipt of what this run deleted, if it deleted anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
    /// When the last real run that finished its work (exit 0 or 1) started, this one or an
    /// earlier one; carried forward by runs that do not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<String>,
    /// Duration of that run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_duration_secs: Option<f64>,
    /// Exit code of that run (0, or 1 when it finished but left something to look at).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_exit_code: Option<u8>,
    /// A dry run's plan digest (SHA-256 of what it would delete; see `--save-plan`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_digest: Option<String>,
    /// How many dry runs in a row, this one included, had that plan digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_streak: Option<u32>,
    /// The digest of the plan a real run applied (`--apply-plan`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_plan: Option<String>,
    /// `false` in the record a run writes as it starts: the run is going on, or was
    /// killed ("did not finish"; its `exit_code` is then 4 and `finished_at` its start).
    /// Absent (true) once it finished.
    #[serde(default = "finished_default", skip_serializing_if = "is_true")]
    pub finished: bool,
    /// The process of a run that has not finished, to tell one going on (alive) from one
    /// killed (gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

fn finished_default() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// The last successful real run a record tells of.
#[derive(Clone, Debug, PartialEq)]
pub struct LastSuccess {
    /// When it started (RFC 3339, as written).
    pub at: String,
    /// When it started.
    pub started: DateTime<FixedOffset>,
    /// How long it took.
    pub duration_secs: f64,
    /// Its exit code (0 or 1).
    pub exit_code: u8,
    /// Whether it is the run this record describes (not one carried forward).
    pub is_this_run: bool,
}

impl RunRecord {
    /// A record of a run of `task` (started at `started_at`, RFC 3339) with no outcome
    /// yet: not finished, exit 4, `finished_at` its start; the fields carried forward
    /// from `previous` (the last success). Its writer sets the rest.
    pub fn new(
        task: &str,
        started_at: String,
        dry_run: bool,
        previous: Option<&RunRecord>,
    ) -> Self {
        let success = previous.and_then(|p| p.last_success().ok().flatten());
        RunRecord {
            task: task.to_owned(),
            finished_at: started_at.clone(),
            started_at,
            dry_run,
            exit_code: crate::ExitStatus::Failure.code(),
            program: None,
            root: None,
            duration_secs: None,
            counts: None,
            receipt: None,
            last_success_at: success.as_ref().map(|s| s.at.clone()),
            last_success_duration_secs: success.as_ref().map(|s| s.duration_secs),
            last_success_exit_code: success.as_ref().map(|s| s.exit_code),
            plan_digest: None,
            plan_streak: None,
            applied_plan: None,
            finished: false,
            pid: Some(std::process::id()),
        }
    }

    /// Whether this record's own run was a success: a real run that finished its work.
    pub fn is_success(&self) -> bool {
        self.finished && !self.dry_run && self.exit_code <= 1
    }

    /// The last success: the carried-forward fields when present; else, for a record
    /// holding only the mandatory fields (docs/FORMAT.md "Program state"), this run itself if it succeeded (from its
    /// `started_at` and `finished_at`).
    ///
    /// # Errors
    /// A message naming the field whose time is not RFC 3339.
    pub fn last_success(&self) -> Result<Option<LastSuccess>, String> {
        let time = |field: &str, s: &str| {
            DateTime::parse_from_rfc3339(s).map_err(|_| format!("{field} {s:?} is not RFC 3339"))
        };
        if let Some(at) = &self.last_success_at {
            let started = time("last_success_at", at)?;
            return Ok(Some(LastSuccess {
                at: at.clone(),
                started,
                duration_secs: self.last_success_duration_secs.unwrap_or(0.0),
                exit_code: self.last_success_exit_code.unwrap_or(0),
                is_this_run: *at == self.started_at,
            }));
        }
        if !self.is_success() {
            return Ok(None);
        }
        let started = time("started_at", &self.started_at)?;
        let finished = time("finished_at", &self.finished_at)?;
        let duration_secs = self
            .duration_secs
            .unwrap_or_else(|| (finished - started).as_seconds_f64().max(0.0));
        Ok(Some(LastSuccess {
            at: self.started_at.clone(),
            started,
            duration_secs,
            exit_code: self.exit_code,
            is_this_run: true,
        }))
    }
}

/// The state directory's `runs/` below the root.
pub(crate) fn runs_rel() -> std::path::PathBuf {
    Path::new(STATE_DIR).join("runs")
}

/// Writes `record` as `{root}/.tmpa/runs/{task}.json`, atomically (the one writer of run
/// records).
///
/// # Errors
/// [`tmpa_core::Error::Io`] naming the directory or the file.
pub fn write_run_record(root: &Root, record: &RunRecord) -> tmpa_core::Result<()> {
    let dir = root_dir(root).create_dir_all(runs_rel())?;
    let json = serde_json::to_vec_pretty(record).expect("a run record always serializes");
    write_in(
        &dir,
        OsStr::new(&format!("{}.json", record.task)),
        &json,
        false,
    )
}

/// Reads the run record of `task` (a task name as written in the file name), if there is
/// one.
///
/// # Errors
/// [`tmpa_core::Error::Io`] when it exists but cannot be read, [`tmpa_core::Error::Corrupt`]
/// when it does not hold the mandatory fields (docs/FORMAT.md "Program state").
pub fn read_run_record(root: &Root, task: &str) -> tmpa_core::Result<Option<RunRecord>> {
    let dir = match root_dir(root).open_dir(runs_rel()) {
        Ok(d) => d,
        Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let name = format!("{task}.json");
    let bytes = match dir.read(&name, 1 << 20) {
        Ok((b, _)) => b,
        Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| tmpa_core::Error::Corrupt {
            path: dir.join(&name),
            reason: format!("not a run record: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_with_only_the_mandatory_fields_tells_its_success() {
        let r: RunRecord = serde_json::from_str(
            r#"{"task":"compact_events","started_at":"2026-11-24T02:30:00+00:00",
                "finished_at":"2026-11-24T02:31:40+00:00","dry_run":false,"exit_code":0}"#,
        )
        .unwrap();
        let s = r.last_success().unwrap().unwrap();
        assert_eq!(s.at, "2026-11-24T02:30:00+00:00");
        assert!((s.duration_secs - 100.0).abs() < 1e-9);
        assert!(s.is_this_run);
        let dry = RunRecord {
            dry_run: true,
            ..r.clone()
        };
        assert_eq!(dry.last_success().unwrap(), None);
        let failed = RunRecord {
            exit_code: 4,
            ..r.clone()
        };
        assert_eq!(failed.last_success().unwrap(), None);
        // A record written at a run's start carries the last success, is none itself.
        let started = RunRecord::new(
            "compact_events",
            "2026-11-25T02:30:00+00:00".into(),
            false,
            Some(&r),
        );
        assert!(!started.finished && !started.is_success());
        assert_eq!(started.exit_code, 4);
        let s = started.last_success().unwrap().unwrap();
        assert_eq!(s.at, "2026-11-24T02:30:00+00:00");
        assert!(!s.is_this_run);
        let json = serde_json::to_value(&started).unwrap();
        assert_eq!(json["finished"], false);
        let back: RunRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, started);
        // A finished record says nothing of it: older readers see what they saw.
        assert!(serde_json::to_value(&r).unwrap().get("finished").is_none());
    }
}
