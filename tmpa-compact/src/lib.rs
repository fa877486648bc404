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

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use serde::Serialize;
use tmpa_core::day::{
    COMPACTED_NAME, Compacted, DayScan, FileStamp, LooseEvent, Merge, Problem, SUMMARY_NAME,
    compacted_matches, conflict_problem, merge, scan_dir, write_compacted,
};
use tmpa_core::dirfd::DirHandle;
use tmpa_core::program::{CommonArgs, ExitStatus, Progress, Run};
use tmpa_core::summary::{Summary, read_cached, source_stamp, write_summary};
use tmpa_core::{Day, Error, Event, Root};

/// Program name, as in the logs.
pub const PROGRAM: &str = "tmpa-compact";
/// Task name, as in `.tmpa/runs/compact_events.json`.
pub const TASK: &str = "compact_events";

/// Merge each past day's loose usage events into `_compacted.json` (compact_events).
///
/// Runs nightly from cron. Deletes a loose event file only after its event has been
/// read back, equal, from the durable `_compacted.json`.
#[derive(clap::Parser, Debug)]
#[command(name = "tmpa-compact", version, about, long_about = None)]
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
    #[arg(long, conflicts_with = "dry_run")]
    pub no_delete: bool,
}

/// What happened to one day.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DayReport {
    /// The day.
    pub day: String,
    /// `compacted`, `unchanged`, `planned` (dry run), `skipped` (corrupt compacted file
    /// or unsafe directory) or `failed` (I/O error).
    pub status: &'static str,
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
    #[serde(serialize_with = "tmpa_core::day::serialize_path")]
    pub root: PathBuf,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Per day, in date order.
    pub days: Vec<DayReport>,
    /// Problems outside any day (symlinked or odd entries in token_stats/).
    pub problems: Vec<Problem>,
    /// Totals over all days.
    pub counts: BTreeMap<String, u64>,
    /// The exit code.
    pub exit_code: u8,
}

/// Runs the program: resolves the root, takes the lock, compacts, reports.
///
/// # Errors
/// Start-up errors only (not a root: exit 2; locked: exit 3); everything after start-up
/// is reported per day and reflected in the returned status.
pub fn run(args: &Args) -> tmpa_core::Result<ExitStatus> {
    let mode = if args.no_delete {
        "COMPACT-NO-DELETE"
    } else {
        "COMPACT"
    };
    tmpa_core::program::run_program(PROGRAM, TASK, &args.common, mode, |run| {
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
        if d.status == "failed" {
            status = status.worst(ExitStatus::Failure);
        } else if !d.problems.is_empty() || d.status == "skipped" {
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
        reports.push(compact_day(run, *day, args.no_delete));
    }
    progress.clear();
    let mut counts = BTreeMap::new();
    counts.insert("days".to_owned(), reports.len() as u64);
    let deleted_key = if run.dry_run() {
        "would_delete"
    } else {
        "deleted"
    };
    for d in &reports {
        for (k, v) in [
            ("merged", d.merged),
            ("duplicates", d.duplicates),
            ("conflicts", d.conflicts),
            ("corrupt", d.corrupt),
            (deleted_key, d.deleted),
            ("kept", d.kept),
            ("days_failed", usize::from(d.status == "failed")),
            ("days_skipped", usize::from(d.status == "skipped")),
        ] {
            *counts.entry(k.to_owned()).or_insert(0) += v as u64;
        }
    }
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
    let dir = root.token_stats_dir();
    let mut days = Vec::new();
    let mut problems = Vec::new();
    // Every path below is built under token_stats/: if that is a symlink, all of them
    // would lead outside the root.
    if fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink()) {
        problems.push(Problem {
            path: dir,
            reason: "is a symlink (not followed)".into(),
        });
        return (days, problems);
    }
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (days, problems),
        Err(e) => {
            problems.push(Problem {
                path: dir,
                reason: format!("cannot list: {e}"),
            });
            return (days, problems);
        }
    };
    let before = args.before.unwrap_or_else(Day::today_local);
    for entry in rd.flatten() {
        let Some(day) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<Day>().ok())
        else {
            continue;
        };
        let wanted = match args.day {
            Some(d) => d == day,
            None => day < before,
        };
        if !wanted {
            continue;
        }
        match entry.file_type() {
            Ok(t) if t.is_dir() => days.push(day),
            Ok(t) if t.is_symlink() => problems.push(Problem {
                path: entry.path(),
                reason: "day directory is a symlink (not followed)".into(),
            }),
            _ => problems.push(Problem {
                path: entry.path(),
                reason: "named like a day but not a directory".into(),
            }),
        }
    }
    days.sort();
    problems.sort();
    (days, problems)
}

/// Compacts one day; never panics on bad input, never returns early without a report.
/// With `no_delete`, everything is written and verified but no loose file is deleted.
pub fn compact_day(run: &mut Run, day: Day, no_delete: bool) -> DayReport {
    let mut r = DayReport {
        day: day.to_string(),
        ..DayReport::default()
    };
    // Held by descriptor from here on: a directory swapped for a symlink meanwhile
    // cannot lead any read, write or delete of this run out of the root.
    let dir = match DirHandle::open(run.root(), &run.root().day_dir(day)) {
        Ok(h) => h,
        Err(e) => {
            r.status = if matches!(e, Error::Unsafe { .. }) {
                "skipped"
            } else {
                "failed"
            };
            r.error = Some(e.chain());
            return r;
        }
    };
    if let Some(r) = settled_day(&dir, day) {
        return r;
    }
    let scan = match scan_dir(day, dir.op_path(), dir.display()) {
        Ok(s) => s,
        Err(e) => {
            r.status = "failed";
            r.error = Some(e.chain());
            return r;
        }
    };
    r.loose = scan.loose.len();
    r.corrupt = scan.problems.len();
    r.problems.extend(scan.problems.iter().cloned());
    let compacted = match &scan.compacted {
        Compacted::Corrupt(p) => {
            r.status = "skipped";
            r.problems.push(Problem {
                path: p.path.clone(),
                reason: format!(
                    "{} (day left untouched: it may hold the only copy of deleted events)",
                    p.reason
                ),
            });
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
        r.problems.push(conflict_problem(&scan.loose[i]));
    }
    let outcome = if run.dry_run() {
        plan_day(&dir, &scan, &m, &mut r)
    } else {
        act_day(run, &dir, &scan, &m, no_delete, &mut r)
    };
    if let Err(e) = outcome {
        r.status = "failed";
        r.error = Some(dir.describe(&e.chain()));
    }
    r.problems.sort();
    r
}

/// A day with no loose event file whose summary's stamp matches the directory is settled:
/// nothing to merge, delete or rewrite. Recognising it costs one listing and one `lstat`,
/// so nightly runs do not re-read the whole history. (A `_compacted.json` damaged in place
/// without a change of size or mtime is not noticed here; tmpa-patrol's corrupt_json check
/// parses it.)
fn settled_day(dir: &DirHandle, day: Day) -> Option<DayReport> {
    let names = tmpa_core::day::read_event_names(dir.op_path()).ok()?;
    if !names.is_empty() {
        return None;
    }
    let cached = read_cached(&dir.op(SUMMARY_NAME), day)?;
    let compacted = fs::symlink_metadata(dir.op(COMPACTED_NAME)).ok()?;
    if !compacted.is_file() || cached.source != source_stamp(Some(FileStamp::of(&compacted)), &[]) {
        return None;
    }
    let events = usize::try_from(cached.totals.events).ok()?;
    Some(DayReport {
        day: day.to_string(),
        status: "unchanged",
        already_compacted: events,
        events,
        ..DayReport::default()
    })
}

/// Dry run: what [`act_day`] would do, changing nothing.
fn plan_day(
    dir: &DirHandle,
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
    r.status = "planned";
    Ok(())
}

/// Real run: write, verify, receipt, delete.
fn act_day(
    run: &mut Run,
    dir: &DirHandle,
    scan: &DayScan,
    m: &Merge,
    no_delete: bool,
    r: &mut DayReport,
) -> tmpa_core::Result<()> {
    let cpath = dir.op(COMPACTED_NAME);
    if m.events.is_empty() {
        r.status = "unchanged";
        return Ok(());
    }
    // Rewrite when there is something new, or when the file on disk is not the canonical
    // form of its own events (written by another tool): verification compares bytes.
    if !m.added.is_empty() || !compacted_matches(&cpath, scan.day, m.events.iter().copied())? {
        write_compacted(&cpath, scan.day, m.events.iter().copied())?;
    }
    let to_delete: Vec<usize> = m.added.iter().chain(&m.duplicates).copied().collect();
    let verified =
        to_delete.is_empty() || compacted_matches(&cpath, scan.day, m.events.iter().copied())?;
    if !verified {
        for &i in &to_delete {
            r.problems.push(Problem {
                path: scan.loose[i].path.clone(),
                reason: format!(
                    "verification failed: {} does not read back as written (kept)",
                    dir.shown(COMPACTED_NAME).display()
                ),
            });
        }
        r.kept += to_delete.len();
    }
    let verified: Vec<usize> = if no_delete || !verified {
        Vec::new()
    } else {
        to_delete
    };

    // The summary is written before any deletion, so a crash after a deletion never leaves
    // a summary that misses the deleted events.
    let cmeta = fs::symlink_metadata(&cpath).map_err(|e| Error::io("stat", &cpath, e))?;
    let remaining = remaining_names(scan, &verified, &[]);
    let summary = day_summary(
        dir,
        scan.day,
        &m.events,
        Some(FileStamp::of(&cmeta)),
        &remaining,
    );
    if !summary_is_current(dir, scan.day, &summary, true) {
        write_summary(&dir.op(SUMMARY_NAME), &summary)?;
        r.summary_rewritten = true;
    }
    r.deleted = delete_verified(run, dir, scan, &verified, m.events.len(), r)?;
    r.status = if m.added.is_empty() && r.deleted == 0 && !r.summary_rewritten {
        "unchanged"
    } else {
        "compacted"
    };
    Ok(())
}

/// Writes the receipt for `verified`, then deletes each file that is still the one that was
/// read (same inode, size and mtime), in inode order, then fsyncs the directory.
fn delete_verified(
    run: &mut Run,
    dir: &DirHandle,
    scan: &DayScan,
    verified: &[usize],
    held_events: usize,
    r: &mut DayReport,
) -> tmpa_core::Result<usize> {
    if verified.is_empty() {
        return Ok(0);
    }
    let entries: Vec<serde_json::Value> = verified
        .iter()
        .map(|&i| {
            let l = &scan.loose[i];
            serde_json::json!({
                "day": scan.day.to_string(),
                "file": tmpa_core::day::path_text(&l.path),
                "sha256": l.sha256,
                "bytes": l.bytes,
                "held_by": tmpa_core::day::path_text(&dir.shown(COMPACTED_NAME)),
                "held_events": held_events,
                "verified": true,
            })
        })
        .collect();
    run.record_receipt(&entries)?;
    let mut order: Vec<&LooseEvent> = verified.iter().map(|&i| &scan.loose[i]).collect();
    order.sort_by_key(|l| l.ino);
    let mut deleted = 0;
    for l in order {
        if !still_same(dir, l) {
            r.kept += 1;
            r.problems.push(Problem {
                path: l.path.clone(),
                reason: "changed after it was read (kept; the next run looks again)".into(),
            });
            continue;
        }
        match fs::remove_file(dir.op(&l.name)) {
            Ok(()) => deleted += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("delete", &l.path, e)),
        }
    }
    tmpa_core::atomic::sync_dir(dir.op_path())?;
    Ok(deleted)
}

/// Whether the directory entry is still the file that was read and verified.
fn still_same(dir: &DirHandle, l: &LooseEvent) -> bool {
    fs::symlink_metadata(dir.op(&l.name))
        .is_ok_and(|m| m.is_file() && m.ino() == l.ino && m.len() == l.bytes)
}

/// Names of the `evt_*.json` entries that remain once `gone` (indexes into `scan.loose`)
/// are deleted.
fn remaining_names(scan: &DayScan, gone: &[usize], also_gone: &[usize]) -> Vec<OsString> {
    let gone: HashSet<&std::ffi::OsStr> = gone
        .iter()
        .chain(also_gone)
        .filter_map(|&i| scan.loose[i].path.file_name())
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
    dir: &DirHandle,
    day: Day,
    events: &[&Event],
    compacted: Option<FileStamp>,
    remaining: &[OsString],
) -> Summary {
    let mut s = Summary::compute(day, events.iter().copied());
    let loose = tmpa_core::day::stamp_entries(dir.op_path(), remaining);
    s.source = source_stamp(compacted, &loose);
    s
}

/// Whether the cached summary already says exactly `summary` (when `compare_source`, its
/// stamp too).
fn summary_is_current(dir: &DirHandle, day: Day, summary: &Summary, compare_source: bool) -> bool {
    read_cached(&dir.op(SUMMARY_NAME), day).is_some_and(|c| {
        let mut c = c;
        if !compare_source {
            c.source.clone_from(&summary.source);
        }
        &c == summary
    })
}

tmpa_core::impl_report!(Report);

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
            d.status,
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
        if let Some(e) = &d.error {
            let _ = writeln!(s, "  error: {e}");
        }
        for p in &d.problems {
            let _ = writeln!(s, "  problem: {p}");
        }
    }
    s
}
