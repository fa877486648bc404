//! How a run ends ([`Run::finish`]), one job a function: the quarantine tidied, the plan
//! made of a dry run's notes (saved with `--save-plan`, its digest compared with the
//! previous dry run's), the last success carried forward or replaced, the run record
//! written, and the log's last line.

use chrono::{DateTime, Local};
use serde::Serialize;
use tmpa_core::maintenance::{line_text, path_text};

use super::Run;
use crate::exit::ExitStatus;
use crate::output::{footer_line, now_rfc3339, rfc3339};
use crate::plan::{self, DeletionSum, Noted, PLAN_FORMAT, Plan};
use crate::record::{RunRecord, write_run_record};

/// What a run leaves when it ends: its record, the log's last line, and for a dry run the
/// plan note.
#[derive(Debug)]
pub struct Ending {
    /// The run record written.
    pub record: RunRecord,
    /// The log's last line (on stdout, or stderr with `--json`).
    pub footer: String,
    /// A dry run's plan note: whether its plan is the previous dry run's. Printed on
    /// stderr after the last line, so that a cron log (`>> log 2>&1`) ends with it while
    /// stdout stays the same from dry run to dry run on an unchanged tree.
    pub plan_note: Option<String>,
}

/// A dry run's plan: the plan itself when it is to be saved, and its digest.
#[derive(Debug, Default)]
struct Planned {
    plan: Option<Plan>,
    digest: Option<String>,
}

/// The last success a record carries: when, how long, with which exit code.
type LastSuccess = (Option<String>, Option<f64>, Option<u8>);

impl Run {
    /// Ends the run: writes the run record and returns it with the log's last line.
    ///
    /// # Errors
    /// [`tmpa_core::Error::Io`] when the run record cannot be written.
    pub fn finish(
        mut self,
        exit: ExitStatus,
        counts: &impl Serialize,
    ) -> tmpa_core::Result<Ending> {
        self.quarantine.tidy(&self.root);
        let finished = Local::now();
        let counts = serde_json::to_value(counts).expect("counts always serialize");
        let planned = self.plan();
        let (exit, saved) = match &planned.plan {
            Some(plan) => self.save_plan(plan, exit),
            None => (exit, None),
        };
        let record = self.record(exit, finished, counts.clone(), &planned);
        write_run_record(&self.root, &record)?;
        if let Some(note) = saved {
            eprintln!("{}: {}", self.program, line_text(&note));
        }
        let footer = self.footer(exit, &counts, &record);
        let plan_note =
            record
                .plan_digest
                .as_deref()
                .zip(record.plan_streak)
                .map(|(digest, streak)| {
                    let previous = self.previous_plan();
                    plan_note(self.program, digest, previous.as_deref(), streak)
                });
        Ok(Ending {
            record,
            footer,
            plan_note,
        })
    }

    /// A dry run's plan, made of its notes: the plan itself only when it is saved; its
    /// digest for every dry run of a task that deletes (the snapshot has none to review).
    fn plan(&mut self) -> Planned {
        let noted = std::mem::replace(&mut self.would_delete, Noted::Sum(DeletionSum::default()));
        if !self.mode.is_plan() || !self.task.deletes() {
            return Planned::default();
        }
        let root_text = path_text(self.root.path());
        match noted {
            Noted::Lines(lines) => {
                let plan = Plan::new(
                    self.program,
                    self.task,
                    &root_text,
                    rfc3339(self.started),
                    lines,
                );
                let digest = Some(plan.digest.clone());
                Planned {
                    plan: Some(plan),
                    digest,
                }
            }
            Noted::Sum(sum) => Planned {
                plan: None,
                digest: Some(plan::digest_of(
                    PLAN_FORMAT,
                    self.program,
                    self.task,
                    &root_text,
                    plan::Rest::Sum(sum),
                )),
            },
        }
    }

    /// `--save-plan`: writes the plan, and says where once the run is recorded; a plan
    /// that cannot be saved makes the run exit 4.
    fn save_plan(&self, plan: &Plan, exit: ExitStatus) -> (ExitStatus, Option<String>) {
        let Some(saving) = &self.saving else {
            return (exit, None);
        };
        match saving.write(&plan.to_json()) {
            Ok(()) => {
                let note = format!(
                    "plan of {} deletions saved to {}",
                    plan.deletions.len(),
                    path_text(&saving.path)
                );
                (exit, Some(note))
            }
            Err(e) => {
                eprintln!(
                    "{}: error: cannot save the plan to {}: {}",
                    self.program,
                    path_text(&saving.path),
                    line_text(&e.to_string())
                );
                (exit.worst(ExitStatus::Failure), None)
            }
        }
    }

    /// The previous dry run's plan digest, if the previous run was a dry run.
    fn previous_plan(&self) -> Option<String> {
        self.previous
            .as_ref()
            .filter(|p| p.dry_run)
            .and_then(|p| p.plan_digest.clone())
    }

    /// How many dry runs in a row, this one included, had the plan `digest`.
    fn plan_streak(&self, digest: &str) -> u32 {
        match &self.previous {
            Some(p) if p.dry_run && p.plan_digest.as_deref() == Some(digest) => {
                p.plan_streak.unwrap_or(1) + 1
            }
            _ => 1,
        }
    }

    /// This run, when it is a success (a real run that needs at most a look); else the
    /// previous record's last success, carried forward.
    fn last_success(&self, exit: ExitStatus, duration_secs: f64) -> LastSuccess {
        if !self.mode.is_plan() && exit <= ExitStatus::NeedsLook {
            return (
                Some(rfc3339(self.started)),
                Some(duration_secs),
                Some(exit.code()),
            );
        }
        self.previous
            .as_ref()
            .and_then(|p| p.last_success().ok().flatten())
            .map_or((None, None, None), |s| {
                (Some(s.at), Some(s.duration_secs), Some(s.exit_code))
            })
    }

    /// The run record of the finished run.
    fn record(
        &self,
        exit: ExitStatus,
        finished: DateTime<Local>,
        counts: serde_json::Value,
        planned: &Planned,
    ) -> RunRecord {
        let duration_secs = (finished - self.started).as_seconds_f64().max(0.0);
        let (last_success_at, last_success_duration_secs, last_success_exit_code) =
            self.last_success(exit, duration_secs);
        RunRecord {
            task: self.task.as_str().to_owned(),
            started_at: rfc3339(self.started),
            finished_at: rfc3339(finished),
            dry_run: self.mode.is_plan(),
            exit_code: exit.code(),
            program: Some(self.program.to_owned()),
            root: Some(path_text(self.root.path())),
            duration_secs: Some(duration_secs),
            counts: Some(counts),
            receipt: self.receipt.as_ref().map(|r| path_text(&r.path)),
            last_success_at,
            last_success_duration_secs,
            last_success_exit_code,
            plan_digest: planned.digest.clone(),
            plan_streak: planned.digest.as_deref().map(|d| self.plan_streak(d)),
            applied_plan: self.applying.as_ref().map(|a| a.digest.clone()),
            run: Some(self.run_id.clone()),
            finished: true,
            pid: None,
        }
    }

    /// The log's last line, with the plan made or applied.
    fn footer(&self, exit: ExitStatus, counts: &serde_json::Value, record: &RunRecord) -> String {
        let mut line = footer_line(self.program, exit, counts);
        if let Some(d) = &record.plan_digest {
            // The digest alone: on an unchanged tree, consecutive dry runs print the same
            // text (docs/OPERATIONS.md "Exit codes"); how it compares with the previous one
            // is the plan note.
            line.push_str(&format!(" plan={}", Plan::short_digest(d)));
        }
        if let Some(d) = &record.applied_plan {
            line.push_str(&format!(" applied_plan={}", Plan::short_digest(d)));
        }
        line
    }
}

/// A dry run's plan note: `{time} {program} plan 3f2a9c1e07b4: the same as the previous
/// dry run's (3 dry runs in a row)`.
fn plan_note(program: &str, digest: &str, previous: Option<&str>, streak: u32) -> String {
    let short = Plan::short_digest(digest);
    let words = match previous {
        None => "no earlier dry run to compare with".to_owned(),
        Some(p) if p == digest => {
            format!("the same as the previous dry run's ({streak} dry runs in a row)")
        }
        Some(p) => format!(
            "differs from the previous dry run's {} (a new plan)",
            Plan::short_digest(p)
        ),
    };
    format!("{} {program} plan {short}: {words}", now_rfc3339())
}
