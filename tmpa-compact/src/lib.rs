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

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tmpa_core::maintenance::{
    COMPACTED_NAME, Compacted, DayScan, Dir, Kind, LooseEvent, Merge, Stamp, compacted_matches,
    conflict_problem, event_names, merge, path_text, read_cached, root_dir, scan_day,
    serialize_path, source_stamp, stamp_entries, write_compacted, write_summary,
};
use tmpa_core::{Day, Error, Event, Problem, ProblemKind, Root, Summary};
use tmpa_maint::{
    CommonArgs, Deletion, Doomed, ExitStatus, Mode, Outcome, Planned, Progress, Proof, Run,
    StartError, Task,
};

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
    /// Events in `_compacted.json` after the run.
    pub events: usize,
    /// Whether `_summary.json` was (or would be) rewritten.
    pub summary_rewritten: bool,
    /// Every file that needs a look, with the reason.
    pub problems: Vec<Problem>,
    /// The error that stopped this day, if any.
    pub error: Option<String>,
}

/// The whole run's report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `tmpa-compact`.
    pub program: &'static str,
    /// The canonical root.
    #[serde(serialize_with = "serialize_path")]
    pub root: PathBuf,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Per day, in date order.
    pub days: Vec<DayReport>,
    /// Problems outside any day (symlinked or odd entries in token_stats/).
    pub problems: Vec<Problem>,
    /// Totals over all days.
    pub counts: Counts,
    /// The exit code.
    pub exit_code: u8,
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
    /// Days an I/O error stopped.
    pub days_failed: u64,
    /// Days left untouched (corrupt `_compacted.json`, unsafe directory).
    pub days_skipped: u64,
}

/// Runs the program: resolves the root, takes the lock, compacts, reports.
///
/// # Errors
/// Start-up errors only (not a root: exit 2; locked: exit 3); everything after start-up
/// is reported per day and reflected in the returned status.
pub fn run(args: &Args) -> Result<ExitStatus, StartError> {
    let mode = Mode::of_flags(args.common.dry_run, args.no_delete);
    tmpa_maint::run_program(PROGRAM, TASK, &args.common, mode, "COMPACT", |run| {
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

/// Compacts every selected day of the run's root.
pub fn compact(run: &mut Run, args: &Args) -> Report {
    let (days, problems) = select_days(run.root(), args);
    let progress = Progress::new();
    let mut reports = Vec::with_capacity(days.len());
    for (i, day) in days.iter().enumerate() {
        progress.show(format!("{PROGRAM}: day {day} ({}/{})", i + 1, days.len()));
        reports.push(compact_day(run, *day));
    }
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
        deleted += d.deleted as u64;
        counts.days_failed += u64::from(d.status == DayStatus::Failed);
        counts.days_skipped += u64::from(d.status == DayStatus::Skipped);
    }
    counts.deletions = tmpa_maint::DeleteCount::of(run.mode(), deleted);
    Report {
        program: PROGRAM,
        root: run.root().path().to_path_buf(),
        dry_run: run.dry_run(),
        days: reports,
        problems,
        counts,
        exit_code: 0,
    }
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

/// Compacts one day; never panics on bad input, never returns early without a report.
/// In [`Mode::KeepSources`] everything is written and verified but no loose file is
/// deleted.
pub fn compact_day(run: &mut Run, day: Day) -> DayReport {
    let mut r = DayReport {
        day: day.to_string(),
        ..DayReport::default()
    };
    // Held by descriptor from here on: a directory swapped for a symlink meanwhile
    // cannot lead any read, write or delete of this run out of the root.
    let rel = Path::new("token_stats").join(day.to_string());
    let dir = match root_dir(run.root()).open_dir(&rel) {
        Ok(h) => h,
        Err(e) => {
            r.status = if matches!(e, Error::Unsafe { .. }) {
                DayStatus::Skipped
            } else {
                DayStatus::Failed
            };
            r.error = Some(e.chain());
            return r;
        }
    };
    if let Some(r) = settled_day(&dir, day) {
        return r;
    }
    let mut scan = match scan_day(&dir, day) {
        Ok(s) => s,
        Err(e) => {
            r.status = DayStatus::Failed;
            r.error = Some(e.chain());
            return r;
        }
    };
    keep_planned(run, &dir, &mut scan, &mut r);
    r.loose = scan.loose.len();
    r.corrupt = scan.problems.len();
    r.problems.extend(scan.problems.iter().cloned());
    let compacted = match &scan.compacted {
        Compacted::Corrupt(p) => {
            r.status = DayStatus::Skipped;
            let mut p = p.clone();
            p.reason = format!(
                "{} (day left untouched: it may hold the only copy of deleted events)",
                p.reason
            );
            r.problems.push(p);
            return r;
        }
        Compacted::Absent => &[][..],
        Compacted::Valid { events, .. } => &events[..],
    };
    r.already_compacted = compacted.len();
    let m = merge(compacted, &scan.loose);
    r.merged = m.added.len();
    r.duplicates = m.duplicates.len();
    r.conflicts = m.conflicts.len();
    r.events = m.events.len();
    for &i in &m.conflicts {
        r.problems.push(conflict_problem(&dir, &scan.loose[i]));
    }
    let outcome = if run.dry_run() {
        plan_day(run, &dir, &scan, &m, &mut r)
    } else {
        act_day(run, &dir, &scan, &m, &mut r)
    };
    if let Err(e) = outcome {
        r.status = DayStatus::Failed;
        r.error = Some(e.chain());
    }
    r.problems.sort();
    r
}

/// A day with no loose event file whose summary's stamp matches the directory is settled:
/// nothing to merge, delete or rewrite. Recognising it costs one listing and one `lstat`,
/// so nightly runs do not re-read the whole history. (A `_compacted.json` damaged in place
/// without a change of size or mtime is not noticed here; tmpa-patrol's corrupt_json check
/// parses it.)
fn settled_day(dir: &Dir, day: Day) -> Option<DayReport> {
    let names = event_names(dir).ok()?;
    if !names.is_empty() {
        return None;
    }
    let cached = read_cached(dir, day)?;
    let compacted = dir.stat(COMPACTED_NAME).ok()??;
    if compacted.kind != Kind::File || cached.source != source_stamp(Some(compacted.stamp), &[]) {
        return None;
    }
    let events = usize::try_from(cached.totals.events).ok()?;
    Some(DayReport {
        day: day.to_string(),
        status: DayStatus::Unchanged,
        already_compacted: events,
        events,
        ..DayReport::default()
    })
}

/// Dry run: what [`act_day`] would do, changing nothing.
fn plan_day(
    run: &mut Run,
    dir: &Dir,
    scan: &DayScan,
    m: &Merge,
    r: &mut DayReport,
) -> tmpa_core::Result<()> {
    let remaining = remaining_names(scan, &m.added, &m.duplicates);
    let stamp = match (&scan.compacted, m.added.is_empty()) {
        (Compacted::Valid { stamp, .. }, true) => Some(*stamp),
        _ => None, // a new _compacted.json would be written: its stamp is not known yet
    };
    let summary = day_summary(dir, scan.day, &m.events, stamp, &remaining);
    r.summary_rewritten =
        !m.events.is_empty() && !summary_is_current(dir, scan.day, &summary, stamp.is_some());
    r.deleted = m.added.len() + m.duplicates.len();
    for &i in m.added.iter().chain(&m.duplicates) {
        run.would_delete(deletion(dir, scan.day, &scan.loose[i], m.events.len()));
    }
    r.status = DayStatus::Planned;
    Ok(())
}

/// Real run: write, verify, receipt, delete.
fn act_day(
    run: &mut Run,
    dir: &Dir,
    scan: &DayScan,
    m: &Merge,
    r: &mut DayReport,
) -> tmpa_core::Result<()> {
    if m.events.is_empty() {
        r.status = DayStatus::Unchanged;
        return Ok(());
    }
    // Rewrite when there is something new, or when the file on disk is not the canonical
    // form of its own events (written by another tool): verification compares bytes.
    if !m.added.is_empty() || !compacted_matches(dir, scan.day, m.events.iter().copied())? {
        write_compacted(dir, scan.day, m.events.iter().copied())?;
    }
    let to_delete: Vec<usize> = m.added.iter().chain(&m.duplicates).copied().collect();
    // The stamp of the compacted file that is verified: it must still be that file when
    // the loose files go.
    let held = dir
        .stat(COMPACTED_NAME)?
        .filter(|c| c.kind == Kind::File)
        .map(|c| c.stamp);
    let verified =
        to_delete.is_empty() || compacted_matches(dir, scan.day, m.events.iter().copied())?;
    if !verified {
        for &i in &to_delete {
            r.problems.push(Problem::new(
                dir.join(&scan.loose[i].name),
                ProblemKind::Corrupt,
                format!(
                    "verification failed: {} does not read back as written (kept)",
                    dir.join(COMPACTED_NAME).display()
                ),
            ));
        }
        r.kept += to_delete.len();
    }
    let verified: Vec<usize> = if !run.mode().deletes() || !verified {
        Vec::new()
    } else {
        to_delete
    };

    // The summary is written before any deletion, so a crash after a deletion never leaves
    // a summary that misses the deleted events.
    let remaining = remaining_names(scan, &verified, &[]);
    let summary = day_summary(dir, scan.day, &m.events, held, &remaining);
    if !summary_is_current(dir, scan.day, &summary, true) {
        write_summary(dir, &summary)?;
        r.summary_rewritten = true;
    }
    r.deleted = delete_verified(run, dir, scan, &verified, held, m.events.len(), r)?;
    r.status = if m.added.is_empty() && r.deleted == 0 && !r.summary_rewritten {
        DayStatus::Unchanged
    } else {
        DayStatus::Compacted
    };
    Ok(())
}

/// Deletes the verified loose files through the one deletion path (receipt first; each
/// file only if it is still exactly the file that was read), in inode order, which is
/// measurably faster on ext4.
fn delete_verified(
    run: &mut Run,
    dir: &Dir,
    scan: &DayScan,
    verified: &[usize],
    held: Option<Stamp>,
    held_events: usize,
    r: &mut DayReport,
) -> tmpa_core::Result<usize> {
    if verified.is_empty() {
        return Ok(0);
    }
    // The compacted file verified above must still be the one there (only a hand edit
    // could change it: another compaction waits for the lock).
    if held.is_none() || dir.stat(COMPACTED_NAME)?.map(|c| c.stamp) != held {
        for &i in verified {
            r.kept += 1;
            r.problems.push(Problem::new(
                dir.join(&scan.loose[i].name),
                ProblemKind::Corrupt,
                format!(
                    "{} changed after it was verified (kept)",
                    dir.join(COMPACTED_NAME).display()
                ),
            ));
        }
        return Ok(0);
    }
    let mut doomed: Vec<Doomed<'_>> = verified
        .iter()
        .map(|&i| {
            let l = &scan.loose[i];
            Doomed {
                dir,
                name: l.name.clone(),
                stamp: l.stamp,
                line: deletion(dir, scan.day, l, held_events),
                lease: None,
            }
        })
        .collect();
    doomed.sort_by_key(|d| d.stamp.ino);
    let names: Vec<OsString> = doomed.iter().map(|d| d.name.clone()).collect();
    let (outcomes, sync_failures) = run.delete_verified(doomed, |_| None)?;
    let mut deleted = 0;
    for (name, outcome) in names.iter().zip(outcomes) {
        match outcome {
            Outcome::Deleted => deleted += 1,
            Outcome::Kept(tmpa_maint::Kept::Gone) => {}
            Outcome::Kept(k) => {
                r.kept += 1;
                r.problems
                    .push(Problem::new(dir.join(name), ProblemKind::Unsafe, k.words()));
            }
            Outcome::Failed(e) => return Err(e),
        }
    }
    if let Some(e) = sync_failures.into_iter().next() {
        return Err(e);
    }
    Ok(deleted)
}

/// The receipt line of a loose file deleted because its event is in the day's
/// `_compacted.json` (holding `held_events` events); a dry run's plan lists the same.
fn deletion(dir: &Dir, day: Day, l: &LooseEvent, held_events: usize) -> Deletion {
    Deletion {
        file: path_text(&dir.join(&l.name)),
        bytes: l.stamp.size,
        sha256: l.sha256.clone(),
        stamp: l.stamp,
        held_by: path_text(&dir.join(COMPACTED_NAME)),
        proof: Proof::CompactedEvent {
            day: day.to_string(),
            held_events: held_events as u64,
        },
    }
}

/// Applying a plan: keeps in `scan` only the loose files the plan lists, unchanged; the
/// others are left for the next run (a changed one is reported).
fn keep_planned(run: &mut Run, dir: &Dir, scan: &mut DayScan, r: &mut DayReport) {
    scan.loose.retain(|l| {
        let file = path_text(&dir.join(&l.name));
        match run.planned(&file) {
            Planned::NoPlan => true,
            Planned::NotInPlan => {
                r.not_in_plan += 1;
                false
            }
            Planned::Listed(p) if p.stamp == l.stamp && p.sha256 == l.sha256 => true,
            Planned::Listed(_) => {
                r.kept += 1;
                r.problems.push(Problem::new(
                    dir.join(&l.name),
                    ProblemKind::Conflict,
                    "changed since the plan was made (kept; the next run looks again)",
                ));
                false
            }
        }
    });
}

/// Names of the `evt_*.json` entries that remain once `gone` (indexes into `scan.loose`)
/// are deleted.
fn remaining_names(scan: &DayScan, gone: &[usize], also_gone: &[usize]) -> Vec<OsString> {
    let gone: HashSet<&std::ffi::OsStr> = gone
        .iter()
        .chain(also_gone)
        .map(|&i| scan.loose[i].name.as_os_str())
        .collect();
    scan.event_names
        .iter()
        .filter(|n| !gone.contains(n.as_os_str()))
        .cloned()
        .collect()
}

/// The summary of `events` with the stamp of the directory as it will be once only
/// `remaining` loose files are left (they are not touched, so their stamps hold).
fn day_summary(
    dir: &Dir,
    day: Day,
    events: &[&Event],
    compacted: Option<Stamp>,
    remaining: &[OsString],
) -> Summary {
    let mut s = Summary::compute(day, events.iter().copied());
    let loose = stamp_entries(dir, remaining);
    s.source = source_stamp(compacted, &loose);
    s
}

/// Whether the cached summary already says exactly `summary` (when `compare_source`, its
/// stamp too).
fn summary_is_current(dir: &Dir, day: Day, summary: &Summary, compare_source: bool) -> bool {
    read_cached(dir, day).is_some_and(|c| {
        let mut c = c;
        if !compare_source {
            c.source.clone_from(&summary.source);
        }
        &c == summary
    })
}

tmpa_maint::impl_report!(Report, Counts);

/// The report as text: one line per day, one indented line per problem, sorted.
pub fn render_text(report: &Report) -> String {
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
            } else {
                "current"
            },
        );
        if d.not_in_plan > 0 {
            let _ = writeln!(
                s,
                "  {} loose files not in the plan being applied: left for the next run",
                d.not_in_plan
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
