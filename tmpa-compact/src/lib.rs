//! # tmpa-compact (compact_events)
//!
//! For every day directory strictly before today (or `--before`, or one `--day`), merges
//! the day's valid loose `evt_{id}.json` files into `_compacted.json`, rewrites
//! `_summary.json`, re-reads the compacted file from disk to verify every event about to be
//! deleted is there and equal, records a receipt (path + SHA-256 of each file), and only
//! then deletes those loose files.
//!
//! Invariants:
//! - A loose file is deleted only if its event was read back equal from the durable
//!   `_compacted.json`, its receipt line is fsynced, and its inode, size and mtime are still
//!   what was read (a file replaced meanwhile is kept).
//! - A corrupt or unreadable `_compacted.json` is never overwritten: the day is skipped.
//! - Corrupt loose files and conflicts are kept and reported (exit 1), never counted.
//! - Days are independent; one failing day does not stop the others.
//! - The same set of events always gives byte-identical output; a run with nothing new
//!   writes nothing.

mod arena;
mod day;
mod merge;
mod names;
mod record;
mod scan;
mod size;
mod spill;
#[cfg(test)]
mod tests;

use std::fmt::Write as _;

use serde::Serialize;
use tmpa_core::maintenance::{Kind, map_ordered_on, root_dir};
use tmpa_core::{Day, Error, Problem, ProblemKind, Root};
use tmpa_maint::{CommonArgs, ExitStatus, Mode, Progress, Run, StartError, Task};

pub use day::{SharedRun, compact_day};

/// Days compacted at once at full speed (see [`compact`]).
const DAYS_AT_ONCE: usize = 2;
pub use scan::DayOptions;
pub use size::{MEMORY_BUDGET_BYTES_MIN, MEMORY_BUDGET_DEFAULT, parse_memory_budget};

/// Program name, as in the logs.
pub const PROGRAM: &str = "tmpa-compact";
/// Task, as in `.tmpa/runs/compact_events.json`.
pub const TASK: Task = Task::CompactEvents;

/// Merge each past day's loose usage events into `_compacted.json` (compact_events).
///
/// Runs nightly from cron. Deletes a loose event file only after its event has been
/// read back, equal, from the durable `_compacted.json`.
#[derive(clap::Parser, Debug)]
#[command(name = "tmpa-compact", version, about)]
pub struct Args {
    /// Flags every program takes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Compact the days strictly before this day [default: today, local time]
    #[arg(long, value_name = "YYYY-MM-DD", conflicts_with = "day")]
    pub before: Option<Day>,
    /// Compact only this day (any day, today included)
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub day: Option<Day>,
    /// Write and verify `_compacted.json` and `_summary.json`, but delete no loose file
    /// (a rollout step between --dry-run and a real run; the next real run deletes them
    /// as verified duplicates)
    #[arg(long, conflicts_with_all = ["dry_run", "apply_plan"])]
    pub no_delete: bool,
    /// Memory for one day's events (binary units: K, M, G). A larger day is merged from
    /// sorted runs spilled to a temporary file in {root}/.tmpa/spill/, so any day compacts
    /// in about this much memory; at least 64K
    #[arg(long, value_name = "SIZE", default_value = MEMORY_BUDGET_DEFAULT,
          value_parser = parse_memory_budget)]
    pub memory_budget: u64,
}

/// What became of one day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DayStatus {
    /// Merged, written, verified (and its loose files deleted, unless `--no-delete`).
    Compacted,
    /// Nothing new: nothing written or deleted.
    #[default]
    Unchanged,
    /// A dry run's plan.
    Planned,
    /// Left untouched: its `_compacted.json` is corrupt or its directory unsafe.
    Skipped,
    /// An I/O error stopped it.
    Failed,
}

impl DayStatus {
    /// The word of the text report.
    pub fn word(self) -> &'static str {
        match self {
            DayStatus::Compacted => "compacted",
            DayStatus::Unchanged => "unchanged",
            DayStatus::Planned => "planned",
            DayStatus::Skipped => "skipped",
            DayStatus::Failed => "failed",
        }
    }
}

/// What happened to one day.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DayReport {
    /// The day.
    pub day: String,
    /// What became of it.
    pub status: DayStatus,
    /// Valid loose event files found.
    pub loose: usize,
    /// Events already in `_compacted.json` before the run.
    pub already_compacted: usize,
    /// Loose events not compacted yet (merged, or to merge in a dry run).
    pub merged: usize,
    /// Loose events already compacted with the same content.
    pub duplicates: usize,
    /// Loose events already compacted with other content (kept).
    pub conflicts: usize,
    /// Loose files that cannot be used (kept).
    pub corrupt: usize,
    /// Loose files deleted (or that a real run would delete, in a dry run).
    pub deleted: usize,
    /// Loose files kept because they changed after being read, or failed verification.
    pub kept: usize,
    /// Loose files left for the next run because the plan being applied does not list
    /// them.
    pub not_in_plan: usize,
    /// Loose files left for the next run because a temporary of their name lies beside
    /// them (a write of the same file that died, or is going on): deleting the final file
    /// would leave the temporary an orphan, and a rename of it would bring back a file
    /// that may be torn. tmpa-tmpclean removes a stale one while the final file is there;
    /// the next run deletes the file.
    #[serde(skip_serializing_if = "is_zero")]
    pub beside_temporary: usize,
    /// Events in `_compacted.json` after the run.
    pub events: usize,
    /// Whether `_summary.json` was (or would be) rewritten.
    pub summary_rewritten: bool,
    /// Every file that needs a look, with the reason.
    pub problems: Vec<Problem>,
    /// The error that stopped this day, if any.
    pub error: Option<String>,
    /// Sorted runs spilled to disk because the day did not fit `--memory-budget` (0: it
    /// was merged in memory).
    pub spilled_runs: usize,
}

/// The whole run's report: the head every program's report has, around [`Body`].
pub type Report = tmpa_maint::Report<Body>;

/// What tmpa-compact's report holds beside the head every program's report has.
#[derive(Debug, Serialize)]
pub struct Body {
    /// Per day, in date order.
    pub days: Vec<DayReport>,
    /// Problems outside any day (symlinked or odd entries in token_stats/).
    pub problems: Vec<Problem>,
    /// Spill files left by a run killed as it created one, removed by this run.
    #[serde(skip_serializing_if = "is_zero")]
    pub spill_leftovers_removed: usize,
}

/// Totals over all days (the run record's `counts` and the log's last line).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    /// Days looked at.
    pub days: u64,
    /// Loose events merged (or to merge).
    pub merged: u64,
    /// Loose events already compacted with the same content.
    pub duplicates: u64,
    /// Loose events compacted with other content (kept).
    pub conflicts: u64,
    /// Corrupt loose files (kept).
    pub corrupt: u64,
    /// Files deleted (real runs) or that a real run would delete (dry runs).
    #[serde(flatten)]
    pub deletions: tmpa_maint::DeleteCount,
    /// Loose files kept because they changed or failed verification.
    pub kept: u64,
    /// Loose files left for the next run because a temporary of their name lies beside
    /// them (see [`DayReport::beside_temporary`]).
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub beside_temporary: u64,
    /// Days an I/O error stopped.
    pub days_failed: u64,
    /// Days left untouched (corrupt `_compacted.json`, unsafe directory).
    pub days_skipped: u64,
}

impl tmpa_maint::Program for Args {
    const NAME: &'static str = PROGRAM;
    const TASK: Task = TASK;
    const REAL_MODE: &'static str = "COMPACT";

    fn invocation(&self) -> Option<tmpa_maint::Invocation> {
        Some(self.common.invocation())
    }

    fn run(&self) -> Result<ExitStatus, StartError> {
        run(self)
    }
}

/// Runs the program: resolves the root, takes the lock, compacts, reports.
///
/// # Errors
/// Start-up errors only (not a root: exit 2; locked: exit 3); everything after start-up
/// is reported per day and reflected in the returned status.
pub fn run(args: &Args) -> Result<ExitStatus, StartError> {
    let mode = Mode::of_flags(args.common.dry_run, args.no_delete);
    let prepared = tmpa_maint::prepare(&args.common)?;
    tmpa_maint::run_program::<Args, _>(prepared, &args.common, mode, |run| {
        let report = compact(run, args);
        let status = report_status(&report);
        (report, status)
    })
}

/// The exit status a report calls for: 4 if a day failed, 1 if anything needs a look.
pub fn report_status(report: &Report) -> ExitStatus {
    let mut status = if report.problems.is_empty() {
        ExitStatus::Ok
    } else {
        ExitStatus::NeedsLook
    };
    for d in &report.days {
        if d.status == DayStatus::Failed {
            status = status.worst(ExitStatus::Failure);
        } else if !d.problems.is_empty() || d.status == DayStatus::Skipped {
            status = status.worst(ExitStatus::NeedsLook);
        }
    }
    status
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// Compacts every selected day of the run's root.
pub fn compact(run: &mut Run, args: &Args) -> Report {
    let (days, mut problems) = select_days(run.root(), args);
    // This run holds the lock: a spill file there is a killed run's.
    let spill_leftovers_removed = match spill::sweep_leftovers(run.root()) {
        Ok(n) => n,
        Err(e) => {
            let path = run.root().path().join(spill::spill_dir_rel());
            problems.push(Problem::new(
                path,
                ProblemKind::Unreadable,
                format!("cannot remove leftover spill files: {}", e.chain()),
            ));
            0
        }
    };
    // At full speed two days go at once: one day's deletions (metadata, the journal)
    // overlap the next day's reads (the disk), each with half the memory budget. A paced
    // run keeps to one day at a time.
    let workers = if run.pace().is_zero() && run.mode().deletes() && days.len() > 1 {
        DAYS_AT_ONCE
    } else {
        1
    };
    let opts = DayOptions {
        pace: run.pace(),
        ..DayOptions::new(
            args.memory_budget / workers as u64,
            args.common.apply_plan.is_some(),
        )
    };
    let progress = Progress::new();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let reports = {
        let shared: SharedRun<'_> = std::sync::Mutex::new(&mut *run);
        map_ordered_on(workers, &days, |day| {
            let r = compact_day(&shared, *day, &opts);
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            progress.show(format!("{PROGRAM}: day {day} done ({n}/{})", days.len()));
            r
        })
    };
    progress.clear();
    let mut counts = Counts {
        days: reports.len() as u64,
        ..Counts::default()
    };
    let mut deleted = 0;
    for d in &reports {
        counts.merged += d.merged as u64;
        counts.duplicates += d.duplicates as u64;
        counts.conflicts += d.conflicts as u64;
        counts.corrupt += d.corrupt as u64;
        counts.kept += d.kept as u64;
        counts.beside_temporary += d.beside_temporary as u64;
        deleted += d.deleted as u64;
        counts.days_failed += u64::from(d.status == DayStatus::Failed);
        counts.days_skipped += u64::from(d.status == DayStatus::Skipped);
    }
    counts.deletions = tmpa_maint::DeleteCount::of(run.mode(), deleted);
    let body = Body {
        days: reports,
        problems,
        spill_leftovers_removed,
    };
    Report::new(run, body, counts)
}

/// The day directories to compact, sorted, and the entries of `token_stats/` that look
/// like days but are not safe to enter.
fn select_days(root: &Root, args: &Args) -> (Vec<Day>, Vec<Problem>) {
    let mut days = Vec::new();
    let mut problems = Vec::new();
    // Every day is opened below token_stats/: if that is a symlink, all of them would lead
    // outside the root.
    let dir = match root_dir(root).open_dir("token_stats") {
        Ok(d) => d,
        Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => return (days, problems),
        Err(e) => {
            let path = root.path().join("token_stats");
            problems.push(match e {
                Error::Unsafe { .. } => {
                    Problem::new(path, ProblemKind::Unsafe, "is a symlink (not followed)")
                }
                other => Problem::new(
                    path,
                    ProblemKind::Unreadable,
                    format!("cannot list: {}", other.chain()),
                ),
            });
            return (days, problems);
        }
    };
    let entries = match dir.entries() {
        Ok(e) => e,
        Err(e) => {
            problems.push(Problem::from_error(dir.path(), e));
            return (days, problems);
        }
    };
    let before = args.before.unwrap_or_else(Day::today_local);
    for entry in entries.flatten() {
        let Some(day) = entry.name.to_str().and_then(|n| n.parse::<Day>().ok()) else {
            continue;
        };
        let wanted = match args.day {
            Some(d) => d == day,
            None => day < before,
        };
        if !wanted {
            continue;
        }
        let kind = match entry.kind {
            Some(k) => Some(k),
            None => dir.stat(&entry.name).ok().flatten().map(|m| m.kind),
        };
        let path = dir.join(&entry.name);
        match kind {
            Some(Kind::Directory) => days.push(day),
            Some(Kind::Symlink) => problems.push(Problem::new(
                path,
                ProblemKind::Unsafe,
                "day directory is a symlink (not followed)",
            )),
            _ => problems.push(Problem::new(
                path,
                ProblemKind::Unsafe,
                "named like a day but not a directory",
            )),
        }
    }
    days.sort();
    problems.sort();
    (days, problems)
}

impl tmpa_maint::ReportBody for Body {
    type Counts = Counts;

    /// The report as text: one line per day, one indented line per problem, sorted.
    fn render_text(report: &Report) -> String {
        let mut s = String::new();
        let del = if report.dry_run {
            "would_delete"
        } else {
            "deleted"
        };
        for p in &report.problems {
            let _ = writeln!(s, "  problem: {p}");
        }
        for d in &report.days {
            let _ = writeln!(
                s,
                "{} {}: loose={} already_compacted={} merged={} duplicates={} conflicts={} corrupt={} {del}={} kept={} events={} summary={}",
                d.day,
                d.status.word(),
                d.loose,
                d.already_compacted,
                d.merged,
                d.duplicates,
                d.conflicts,
                d.corrupt,
                d.deleted,
                d.kept,
                d.events,
                if d.summary_rewritten {
                    "rewritten"
                } else if d.problems.is_empty() {
                    "current"
                } else {
                    // A day with problems is never cached.
                    "none"
                },
            );
            if d.spilled_runs > 0 {
                // The day did not fit the memory budget: say so on its own line, so that the
                // day line keeps one shape.
                let _ = writeln!(
                    s,
                    "  note: larger than --memory-budget: merged from sorted runs spilled to disk (runs={})",
                    d.spilled_runs
                );
            }
            if d.not_in_plan > 0 {
                let _ = writeln!(
                    s,
                    "  {} loose files not in the plan being applied: left for the next run",
                    d.not_in_plan
                );
            }
            if d.beside_temporary > 0 {
                let _ = writeln!(
                    s,
                    "  {} loose files with a temporary of their name beside them: left for the next run (tmpa-tmpclean removes a stale temporary first)",
                    d.beside_temporary
                );
            }
            if let Some(e) = &d.error {
                let _ = writeln!(s, "  error: {e}");
            }
            for p in &d.problems {
                let _ = writeln!(s, "  problem: {p}");
            }
        }
        s
    }
}
