//! # tmpa-tmpclean (tmp_cleanup)
//!
//! Finds the leftovers of interrupted atomic writes (SPEC §2: `{final}.tmp` and
//! `{final}.tmp.{suffix}`, as [`tmpa_core::temp_final_name`] defines them) under
//! `notifications/`, `token_stats/` and `chat_history/`, decides for each one whether it
//! may go, says why, and deletes only the stale ones. It replaces the operators'
//! `find /opt/app -name "*.tmp*" -delete`.
//!
//! A temporary is deleted only when all of these hold (otherwise it is kept, with the
//! first reason that applies):
//!
//! 1. it is not under `chat_history/{user}/profile/` (`protected`: never touched, SPEC §1);
//! 2. it is a regular file (`not_regular`: symlinks, fifos, directories are never touched);
//! 3. it is on the root's file system (`other_fs`);
//! 4. neither its mtime nor its ctime is within `--older-than`, default 24h (`young`);
//! 5. its final file exists in the same directory as a regular file (`orphan`: kept,
//!    reported, exit 1, because it may hold the only copy of some data);
//! 6. no process has it open or mapped (`open`), none holds a lock on it (`locked`), and
//!    every process could be inspected (`unproven`: kept, exit 1). `/proc` is scanned
//!    once per run, and only when some temporary passed 1-5.
//!
//! Invariants:
//! - Never follows a symlink: directories are opened one component at a time with
//!   `O_NOFOLLOW | O_DIRECTORY` and every stat, open and unlink is relative to a directory
//!   descriptor, so a directory swapped for a symlink mid-run cannot lead out of the root.
//! - Never enters `.tmpa/`, anything outside the three data directories, or a directory on
//!   another file system or mount than the root.
//! - Never deletes anything that is not a temporary, and deletes a temporary only after its
//!   receipt line (path, size, SHA-256 of the content, final file) is fsynced and a last
//!   check finds the same inode with the same size, mtime and ctime, and its final file
//!   still there. Each directory is fsynced after its deletions.
//! - A dry run takes the same path up to the deletion and changes nothing outside
//!   `.tmpa/`; its output (like every run's) is sorted and deterministic.
//! - Memory: one open directory stream per level of the walk, plus the temporaries (at most
//!   [`walk::TEMPORARIES_MAX`]); the other files are seen once and forgotten.
//!
//! It never deletes an orphan, never reads or writes a final file, and never retries: what
//! it keeps, the next run looks at again.
//!
//! Exit status (SPEC §3): 0 when nothing needs a look (young, open, locked, not regular,
//! protected and other-file-system temporaries are normal); 1 for an orphan, an unproven
//! temporary, one that changed between decision and deletion, a symlinked data directory
//! or the [`walk::TEMPORARIES_MAX`] limit; 4 for an I/O failure (a directory that cannot
//! be listed, a deletion refused, e.g. in a `chattr +i` directory, a receipt that cannot
//! be written). A failure on one file is reported with its path and the others go on;
//! a temporary whose receipt line was written but whose deletion failed gets a second
//! receipt line saying it was not deleted.

pub mod act;
pub mod fsops;
pub mod inuse;
pub mod walk;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tmpa_core::Problem;
use tmpa_core::day::path_text;
use tmpa_core::program::{CommonArgs, ExitStatus, Progress, Run, parse_age};

use crate::inuse::{InUse, Use};
use crate::walk::{Anchor, Cutoff, Reason, Walk};

/// Program name, as in the logs.
pub const PROGRAM: &str = "tmpa-tmpclean";
/// Task name, as in `.tmpa/runs/tmp_cleanup.json`.
pub const TASK: &str = "tmp_cleanup";

/// Remove stale atomic-write temporaries (`*.tmp`, `*.tmp.*`) from a TMPA tree (tmp_cleanup).
///
/// Deletes a temporary only when it is a regular file unchanged (mtime and ctime) for
/// --older-than, its final file exists, and no process has it open, mapped or locked.
/// Orphans (no final file) are kept and reported (exit 1). Never follows a symlink, never
/// leaves the root's file system, never enters .tmpa/, never touches
/// chat_history/*/profile/. Exit: 0 ok, 1 needs a look, 2 usage, 3 locked, 4 I/O failure.
/// Every deletion is preceded by a fsynced receipt in .tmpa/receipts/tmp_cleanup/.
#[derive(clap::Parser, Debug)]
#[command(name = "tmpa-tmpclean", version)]
pub struct Args {
    /// Flags every program takes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Delete only temporaries whose mtime and ctime are both older than this
    /// (a whole number and a unit: s, m, h, d, w)
    #[arg(long, value_name = "AGE", default_value = "24h", value_parser = parse_age)]
    pub older_than: Duration,
}

/// What was decided for one temporary.
#[derive(Clone, Debug, Serialize)]
pub struct Decision {
    /// The temporary.
    #[serde(serialize_with = "tmpa_core::day::serialize_path")]
    pub path: PathBuf,
    /// Its final file (which it would have replaced).
    #[serde(rename = "final", serialize_with = "tmpa_core::day::serialize_path")]
    pub final_path: PathBuf,
    /// `deleted`, `would_delete` (dry run) or `keep`.
    pub action: &'static str,
    /// `stale`, `young`, `open`, `locked`, `unproven`, `orphan`, `not_regular`,
    /// `other_fs`, `protected`, `changed` or `failed`.
    pub reason: &'static str,
    /// The reason in words.
    pub detail: String,
    /// Size in bytes when it was found.
    pub bytes: u64,
    /// Whether an operator should look at it.
    pub needs_look: bool,
}

/// The whole run's report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `tmpa-tmpclean`.
    pub program: &'static str,
    /// The canonical root.
    #[serde(serialize_with = "tmpa_core::day::serialize_path")]
    pub root: PathBuf,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// `--older-than`, in seconds.
    pub older_than_secs: u64,
    /// Every temporary found, sorted by path.
    pub temporaries: Vec<Decision>,
    /// Directories not entered (another file system, too deep), sorted.
    pub not_entered: Vec<Problem>,
    /// What went wrong or needs a look outside any single temporary, sorted.
    pub problems: Vec<Problem>,
    /// Totals.
    pub counts: BTreeMap<String, u64>,
    /// The exit code.
    pub exit_code: u8,
    /// Whether an I/O failure happened (exit 4).
    #[serde(skip)]
    pub failed: bool,
}

/// Runs the program: resolves the root, takes the lock, cleans, reports.
///
/// # Errors
/// Start-up errors only (not a root: exit 2; locked: exit 3); everything after start-up
/// is reported per file and reflected in the returned status.
pub fn run(args: &Args) -> tmpa_core::Result<ExitStatus> {
    let mode = "CLEAN";
    tmpa_core::program::run_program(PROGRAM, TASK, &args.common, mode, |run| {
        let report = clean(run, args.older_than, SystemTime::now());
        let status = report_status(&report);
        (report, status)
    })
}

/// The exit status a report calls for: 4 after an I/O failure, 1 if anything needs a
/// look (orphan, unproven, changed, problem), else 0.
pub fn report_status(report: &Report) -> ExitStatus {
    if report.failed {
        ExitStatus::Failure
    } else if !report.problems.is_empty() || report.temporaries.iter().any(|d| d.needs_look) {
        ExitStatus::NeedsLook
    } else {
        ExitStatus::Ok
    }
}

/// The age cutoff: files changed after `now - older_than` are young.
fn cutoff(now: SystemTime, older_than: Duration) -> Cutoff {
    let since = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(older_than);
    Cutoff((
        i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        since.subsec_nanos(),
    ))
}

/// Walks, decides and (unless a dry run) deletes; never panics on odd input.
pub fn clean(run: &mut Run, older_than: Duration, now: SystemTime) -> Report {
    let progress = Progress::new();
    let root = run.root().path().to_path_buf();
    let mut problems = Vec::new();
    let mut failed = false;
    let mut w = Walk::default();
    let anchor = match Anchor::open(&root) {
        Ok(a) => Some(a),
        Err(e) => {
            failed = true;
            problems.push(Problem {
                path: root.clone(),
                reason: e.chain(),
            });
            None
        }
    };
    if let Some(anchor) = &anchor {
        progress.show(format!("{PROGRAM}: walking {}", root.display()));
        w = walk::walk(anchor, cutoff(now, older_than));
        if w.temps.iter().any(|t| t.reason == Reason::Stale) {
            progress.show(format!("{PROGRAM}: scanning /proc"));
            let in_use = InUse::scan(&inuse::proc_dir(), anchor.stamp.dev);
            apply_in_use(&mut w, &in_use, &root, &mut problems);
        }
        let order = sorted_order(&w);
        if !run.dry_run() {
            progress.show(format!("{PROGRAM}: deleting"));
            let fs_failures = act::delete_stale(run, anchor, &mut w, &order);
            failed |= !fs_failures.is_empty();
            problems.extend(fs_failures);
        }
    }
    progress.clear();
    failed |= !w.failures.is_empty();
    problems.append(&mut w.failures);
    problems.append(&mut w.problems);
    problems.sort();
    w.not_entered.sort();
    build_report(run.dry_run(), &root, older_than, w, problems, failed)
}

/// Applies the `/proc` verdict to every temporary still `Stale`.
fn apply_in_use(w: &mut Walk, in_use: &InUse, root: &std::path::Path, problems: &mut Vec<Problem>) {
    let mut unproven = 0;
    for t in w.temps.iter_mut().filter(|t| t.reason == Reason::Stale) {
        t.reason = match in_use.verdict(t.stamp.ino) {
            Use::Unused => Reason::Stale,
            Use::Open => Reason::Open,
            Use::Locked => Reason::Locked,
            Use::Unproven => {
                unproven += 1;
                Reason::Unproven
            }
        };
    }
    if unproven > 0 {
        problems.push(Problem {
            path: root.to_path_buf(),
            reason: format!(
                "{unproven} stale temporaries kept: {}",
                in_use.blind().unwrap_or("some process cannot be inspected")
            ),
        });
    }
}

/// Indexes of the temporaries sorted by (directory, name): the order of the report and
/// of the deletions (which keeps each directory's deletions together).
fn sorted_order(w: &Walk) -> Vec<usize> {
    let mut order: Vec<usize> = (0..w.temps.len()).collect();
    order.sort_by(|&a, &b| {
        let (ta, tb) = (&w.temps[a], &w.temps[b]);
        (&w.dirs[ta.dir as usize].rel, &ta.name).cmp(&(&w.dirs[tb.dir as usize].rel, &tb.name))
    });
    order
}

fn build_report(
    dry_run: bool,
    root: &std::path::Path,
    older_than: Duration,
    w: Walk,
    problems: Vec<Problem>,
    mut failed: bool,
) -> Report {
    let order = sorted_order(&w);
    let older = age_text(older_than);
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for key in [
        "temporaries",
        "kept",
        if dry_run { "would_delete" } else { "deleted" },
        "young",
        "open",
        "locked",
        "unproven",
        "orphan",
        "not_regular",
        "other_fs",
        "protected",
        "changed",
        "failed",
    ] {
        counts.insert(key.to_owned(), 0);
    }
    counts.insert("dirs".to_owned(), w.dirs_walked);
    counts.insert("entries".to_owned(), w.entries);
    counts.insert("not_entered".to_owned(), w.not_entered.len() as u64);
    let mut temporaries = Vec::with_capacity(order.len());
    for i in order {
        let t = &w.temps[i];
        let dir = root.join(&w.dirs[t.dir as usize].rel);
        let action = match t.reason {
            Reason::Deleted => "deleted",
            Reason::Stale if dry_run => "would_delete",
            // A real run attempts every stale temporary; none is left Stale.
            _ => "keep",
        };
        *counts.entry("temporaries".to_owned()).or_default() += 1;
        let count_key = match action {
            "keep" => {
                *counts.entry("kept".to_owned()).or_default() += 1;
                t.reason.code()
            }
            other => other,
        };
        *counts.entry(count_key.to_owned()).or_default() += 1;
        failed |= matches!(t.reason, Reason::Failed(_));
        temporaries.push(Decision {
            path: dir.join(&t.name),
            final_path: dir.join(t.final_name()),
            action,
            reason: t.reason.code(),
            detail: detail(&t.reason, &older),
            bytes: t.stamp.size,
            needs_look: t.reason.needs_look(),
        });
    }
    Report {
        program: PROGRAM,
        root: root.to_path_buf(),
        dry_run,
        older_than_secs: older_than.as_secs(),
        temporaries,
        not_entered: w.not_entered,
        problems,
        counts,
        exit_code: 0,
        failed,
    }
}

/// A reason in words (stable from run to run: no times, no pids).
pub(crate) fn detail(reason: &Reason, older: &str) -> String {
    match reason {
        Reason::Stale => {
            format!("unchanged for at least {older}, final file present, not open or locked")
        }
        Reason::Deleted => format!(
            "unchanged for at least {older}, final file present, not open or locked; receipt written"
        ),
        Reason::Young => format!("changed within {older} (a write may be in progress)"),
        Reason::Open => "open or mapped by a running process".into(),
        Reason::Locked => "locked by a running process".into(),
        Reason::Unproven => {
            "cannot prove it is closed: some process cannot be inspected (needs a look)".into()
        }
        Reason::Orphan(None) => {
            "no final file: may hold the only copy of its data (kept, needs a look)".into()
        }
        Reason::Orphan(Some(k)) => format!(
            "its final file is {}, not a regular file (kept, needs a look)",
            k.words()
        ),
        Reason::NotRegular(k) => format!("is {} (never followed or deleted)", k.words()),
        Reason::OtherFs => "on another file system than the root (not touched)".into(),
        Reason::Protected => "in a profile/ directory, which maintenance never touches".into(),
        Reason::Changed(s) => s.clone(),
        Reason::Failed(s) => format!("not deleted: {s}"),
    }
}

/// `86400s` as `24h`, `7d` as `1w`: the largest whole unit.
fn age_text(d: Duration) -> String {
    let s = d.as_secs();
    for (unit, secs) in [("w", 7 * 86_400), ("d", 86_400), ("h", 3600), ("m", 60)] {
        if s >= secs && s.is_multiple_of(secs) {
            return format!("{}{unit}", s / secs);
        }
    }
    format!("{s}s")
}

tmpa_core::impl_report!(Report);

/// The report as text: one line per temporary (`action reason path: detail`), sorted by
/// path, then the directories not entered and the problems.
pub fn render_text(report: &Report) -> String {
    let mut s = String::new();
    for d in &report.temporaries {
        let _ = writeln!(
            s,
            "{:<12} {:<11} {}: {}",
            d.action,
            d.reason,
            path_text(&d.path),
            d.detail
        );
    }
    for p in &report.not_entered {
        let _ = writeln!(s, "  not entered: {p}");
    }
    for p in &report.problems {
        let _ = writeln!(s, "  problem: {p}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use tmpa_core::Root;

    /// A root with `notifications/u1/inbox/{a,b}.json` and their temporaries, a run on it,
    /// and a walk that sees every temporary as old (a cutoff an hour ahead).
    fn walked() -> (tempfile::TempDir, Run, Anchor, Walk) {
        let t = tempfile::tempdir().unwrap();
        let inbox = t.path().join("notifications/u1/inbox");
        std::fs::create_dir_all(&inbox).unwrap();
        for n in ["a", "b"] {
            std::fs::write(inbox.join(format!("{n}.json")), b"{}").unwrap();
            std::fs::write(inbox.join(format!("{n}.json.tmp")), b"partial").unwrap();
        }
        let root = Root::open(t.path()).unwrap();
        let run = Run::start(PROGRAM, TASK, root.clone(), false).unwrap();
        let anchor = Anchor::open(root.path()).unwrap();
        let later = SystemTime::now() + Duration::from_secs(3600);
        let w = walk::walk(&anchor, cutoff(later, Duration::ZERO));
        assert_eq!(w.temps.len(), 2);
        assert!(w.temps.iter().all(|t| t.reason == Reason::Stale), "{w:?}");
        (t, run, anchor, w)
    }

    #[test]
    fn directory_swapped_for_a_symlink_after_the_walk_leads_nowhere() {
        let (t, mut run, anchor, mut w) = walked();
        let outside = tempfile::tempdir().unwrap();
        for n in ["a.json", "a.json.tmp", "b.json", "b.json.tmp"] {
            std::fs::write(outside.path().join(n), b"outside").unwrap();
        }
        let inbox = t.path().join("notifications/u1/inbox");
        std::fs::rename(&inbox, t.path().join("notifications/u1/moved")).unwrap();
        std::os::unix::fs::symlink(outside.path(), &inbox).unwrap();
        let order = sorted_order(&w);
        let failures = act::delete_stale(&mut run, &anchor, &mut w, &order);
        assert!(failures.is_empty(), "{failures:?}");
        assert!(
            w.temps
                .iter()
                .all(|t| matches!(t.reason, Reason::Changed(_))),
            "{w:?}"
        );
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 4);
        assert!(t.path().join("notifications/u1/moved/a.json.tmp").exists());
    }

    #[test]
    fn temporary_changed_after_the_walk_is_kept_the_other_deleted() {
        let (t, mut run, anchor, mut w) = walked();
        let inbox = t.path().join("notifications/u1/inbox");
        std::fs::write(inbox.join("a.json.tmp"), b"rewritten, longer").unwrap();
        let order = sorted_order(&w);
        let failures = act::delete_stale(&mut run, &anchor, &mut w, &order);
        assert!(failures.is_empty(), "{failures:?}");
        let by_name = |n: &str| &w.temps.iter().find(|t| t.name == n).unwrap().reason;
        assert!(matches!(by_name("a.json.tmp"), Reason::Changed(_)));
        assert_eq!(by_name("b.json.tmp"), &Reason::Deleted);
        assert!(inbox.join("a.json.tmp").exists());
        assert!(!inbox.join("b.json.tmp").exists());
        assert!(inbox.join("b.json").exists());
    }

    #[test]
    fn age_text_uses_the_largest_whole_unit() {
        assert_eq!(age_text(Duration::from_secs(86_400)), "1d");
        assert_eq!(age_text(Duration::from_secs(3600 * 36)), "36h");
        assert_eq!(age_text(Duration::from_secs(14 * 86_400)), "2w");
        assert_eq!(age_text(Duration::from_secs(90)), "90s");
        assert_eq!(age_text(Duration::from_secs(0)), "0s");
    }
}
