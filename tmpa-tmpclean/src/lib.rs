//! # tmpa-tmpclean (tmp_cleanup)
//!
//! Finds the leftovers of interrupted atomic writes (docs/FORMAT.md "Temporaries": `{final}.tmp` and
//! `{final}.tmp.{suffix}`, as [`tmpa_core::temp_final_name`] defines them) under
//! `notifications/`, `token_stats/` and `chat_history/`, decides for each one whether it
//! may go, says why, and deletes only the stale ones. It replaces the operators'
//! `find /opt/app -name "*.tmp*" -delete`.
//!
//! A temporary is deleted only when all of these hold (otherwise it is kept, with the
//! first reason that applies):
//!
//! 1. it is not under `chat_history/{user}/profile/` (`protected`: never touched, docs/FORMAT.md "The tree");
//! 2. it is a regular file (`not_regular`: symlinks, fifos, directories are never touched);
//! 3. it is on the root's file system (`other_fs`);
//! 4. neither its mtime nor its ctime is within `--older-than`, default 24h (`young`);
//! 5. its final file exists in the same directory as a regular file (`orphan`: kept,
//!    reported, exit 1, because it may hold the only copy of some data);
//! 6. it is proven not open. The proof is the kernel's: a write lease
//!    (`fcntl(F_SETLEASE, F_WRLCK)`) is granted only when no other open file description
//!    of the file exists, in any process of any pid, mount or user namespace, mapped
//!    files included (`open` when refused); it is held through the receipt and the
//!    `unlinkat`, so a process opening the file meanwhile waits and the file is kept.
//!    Where no lease can be had (NFS, overlay; a file of another user without
//!    `CAP_LEASE`), `/proc` is evidence: a file it shows open or locked is kept
//!    (`open`, `locked`); one it does not is kept as `unproven` (exit 1) unless
//!    `--proc-shows-all-writers` states that `/proc` shows every process that can write
//!    the tree. Off a local file system (NFS, SMB, FUSE, overlay) a lease and `/proc`
//!    see only this host's opens through this mount, so neither is proof unless
//!    `--writers-use-this-mount` states that every writer is such a one. Each decision
//!    says which proof it rests on: `not open (lease)` or `not open (/proc)`.
//!
//! Invariants:
//! - Never follows a symlink: every directory is reached from the root by descriptor
//!   (tmpa-core's file layer) and every stat, open and unlink is relative to one, so a
//!   directory swapped for a symlink mid-run cannot lead out of the root.
//! - Never enters `.tmpa/`, anything outside the three data directories, or a directory on
//!   another file system or mount than the root.
//! - Never deletes anything that is not a temporary, and deletes through the workspace's
//!   one deletion path: a fsynced receipt line (path, size, SHA-256, stamp, final file,
//!   proof), then, with the lease still intact, the same inode with the same size, mtime
//!   and ctime and its final file still there, then `unlinkat`, then a directory fsync.
//! - A dry run takes the same path up to the deletion (leases are taken and released at
//!   once) and changes nothing outside `.tmpa/`; its output (like every run's) is sorted
//!   and deterministic.
//! - Memory: one open directory stream per level of the walk, plus the temporaries (at most
//!   [`walk::TEMPORARIES_MAX`]); the other files are seen once and forgotten.
//!
//! It never deletes an orphan, never reads or writes a final file, and never retries: what
//! it keeps, the next run looks at again.
//!
//! Exit status (docs/OPERATIONS.md "Exit codes"): 0 when nothing needs a look (young, open, locked, not regular,
//! protected and other-file-system temporaries are normal); 1 for an orphan, an unproven
//! temporary, one that changed between decision and deletion, a symlinked data directory
//! or the [`walk::TEMPORARIES_MAX`] limit; 4 for an I/O failure (a directory that cannot
//! be listed, a deletion refused, e.g. in a `chattr +i` directory, a receipt that cannot
//! be written). A failure on one file is reported with its path and the others go on;
//! a temporary whose receipt line was written but whose deletion failed gets a second
//! receipt line saying it was not deleted.

pub mod act;
pub mod inuse;
mod reason;
pub mod walk;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tmpa_core::maintenance::{line_text, path_text, serialize_path};
use tmpa_core::{Problem, ProblemKind};
use tmpa_maint::{
    CommonArgs, ExitStatus, Mode, NotOpenProof, Progress, Run, StartError, Task, parse_age,
};

pub use crate::reason::{Reason, ReasonCode};
use crate::walk::{Anchor, Cutoff, Walk};

/// Program name, as in the logs.
pub const PROGRAM: &str = "tmpa-tmpclean";
/// Task, as in `.tmpa/runs/tmp_cleanup.json`.
pub const TASK: Task = Task::TmpCleanup;

/// Remove stale atomic-write temporaries (`*.tmp`, `*.tmp.*`) from a TMPA tree (tmp_cleanup).
///
/// Deletes a temporary only when it is a regular file unchanged (mtime and ctime) for
/// --older-than, its final file exists, and it is proven not open: by the kernel, which
/// grants a file lease only when no other process anywhere (any container, any pid
/// namespace) has the file open or mapped, and holds it until the deletion; where no lease
/// can be had (NFS, overlay), /proc is only evidence (see --proc-shows-all-writers); off a
/// local file system (NFS, SMB, FUSE) neither proves anything unless every writer uses
/// this mount on this host (see --writers-use-this-mount).
/// Each decision names its proof: "not open (lease)" or "not open (/proc)". Orphans (no
/// final file) are kept and reported (exit 1). Never follows a symlink, never leaves the
/// root's file system, never enters .tmpa/, never touches chat_history/*/profile/. Exit: 0
/// ok, 1 needs a look, 2 usage, 3 locked, 4 I/O failure. Every deletion is preceded by a
/// fsynced receipt in .tmpa/receipts/tmp_cleanup/.
#[derive(clap::Parser, Debug)]
#[command(name = "tmpa-tmpclean", version)]
pub struct Args {
    /// Flags every program takes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Delete only temporaries whose mtime and ctime are both older than this
    /// (a whole number and a unit: s, m, h, d, w; at least 1m)
    #[arg(long, value_name = "AGE", default_value = "24h", value_parser = parse_older_than)]
    pub older_than: Duration,
    /// Where no file lease can be had (NFS, FUSE, overlay file systems; a file of another
    /// user without CAP_LEASE), accept /proc as proof that a temporary is not open. Pass it
    /// only where /proc shows every process that can write the tree: not in a container
    /// beside the application's, not where another host mounts the tree. Without it such
    /// temporaries are kept as "unproven" (exit 1).
    #[arg(long)]
    pub proc_shows_all_writers: bool,
    /// State that every process that writes the tree runs on this host and writes through
    /// this mount (not from another host sharing the export, not underneath a FUSE or
    /// overlay mount). Where the root is on a network, FUSE, overlay or unknown file
    /// system, a file lease (and /proc) sees only such writers, so without this statement
    /// what they show is evidence, not proof: such temporaries are kept as "unproven"
    /// (exit 1). Not needed on a local file system. Also set by
    /// TMPA_WRITERS_USE_THIS_MOUNT=yes (in /etc/default/tmpa)
    #[arg(long, env = "TMPA_WRITERS_USE_THIS_MOUNT", value_parser = clap::builder::BoolishValueParser::new())]
    pub writers_use_this_mount: bool,
}

/// What is done with a temporary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Deleted by this run.
    Deleted,
    /// A real run would delete it (dry run).
    WouldDelete,
    /// Kept.
    Keep,
}

impl Action {
    /// The word of the text report.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Deleted => "deleted",
            Action::WouldDelete => "would_delete",
            Action::Keep => "keep",
        }
    }
}

/// What was decided for one temporary.
#[derive(Clone, Debug, Serialize)]
pub struct Decision {
    /// The temporary.
    #[serde(serialize_with = "serialize_path")]
    pub path: PathBuf,
    /// Its final file (which it would have replaced).
    #[serde(rename = "final", serialize_with = "serialize_path")]
    pub final_path: PathBuf,
    /// What is done with it.
    pub action: Action,
    /// Why.
    pub reason: ReasonCode,
    /// What proved it not open, when something did.
    pub proof: Option<NotOpenProof>,
    /// The reason in words.
    pub detail: String,
    /// Size in bytes when it was found.
    pub bytes: u64,
    /// Whether an operator should look at it.
    pub needs_look: bool,
}

/// Totals of a run (the run record's `counts` and the log's last line).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    /// Temporaries found.
    pub temporaries: u64,
    /// Temporaries kept.
    pub kept: u64,
    /// Files deleted (real runs) or that a real run would delete (dry runs).
    #[serde(flatten)]
    pub deletions: tmpa_maint::DeleteCount,
    /// Kept: changed within `--older-than`.
    pub young: u64,
    /// Kept: open or mapped.
    pub open: u64,
    /// Kept: locked.
    pub locked: u64,
    /// Kept: not proven closed.
    pub unproven: u64,
    /// Kept: no final file.
    pub orphan: u64,
    /// Kept: not a regular file.
    pub not_regular: u64,
    /// Kept: on another file system.
    pub other_fs: u64,
    /// Kept: under `profile/`.
    pub protected: u64,
    /// Kept: changed between decision and deletion.
    pub changed: u64,
    /// Kept: an I/O error.
    pub failed: u64,
    /// Kept: not in the plan being applied.
    pub not_in_plan: u64,
    /// Directories listed.
    pub dirs: u64,
    /// Entries looked at.
    pub entries: u64,
    /// Directories not entered.
    pub not_entered: u64,
}

/// The whole run's report: the head every program's report has, around [`Body`].
pub type Report = tmpa_maint::Report<Body>;

/// What tmpa-tmpclean's report holds beside the head every program's report has.
#[derive(Debug, Serialize)]
pub struct Body {
    /// `--older-than`, in seconds.
    pub older_than_secs: u64,
    /// Every temporary found, sorted by path.
    pub temporaries: Vec<Decision>,
    /// Directories not entered (another file system, too deep), sorted.
    pub not_entered: Vec<Problem>,
    /// What went wrong or needs a look outside any single temporary, sorted.
    pub problems: Vec<Problem>,
    /// Whether an I/O failure happened (exit 4).
    #[serde(skip)]
    pub failed: bool,
}

impl tmpa_maint::Program for Args {
    const NAME: &'static str = PROGRAM;
    const TASK: Task = TASK;
    const REAL_MODE: &'static str = "CLEAN";

    fn invocation(&self) -> Option<tmpa_maint::Invocation> {
        Some(self.common.invocation())
    }

    fn run(&self) -> Result<ExitStatus, StartError> {
        run(self)
    }
}

/// Runs the program: resolves the root, takes the lock, cleans, reports.
///
/// # Errors
/// Start-up errors only (not a root: exit 2; locked: exit 3); everything after start-up
/// is reported per file and reflected in the returned status.
pub fn run(args: &Args) -> Result<ExitStatus, StartError> {
    let mode = Mode::of_flags(args.common.dry_run, false);
    let prepared = tmpa_maint::prepare(&args.common)?;
    tmpa_maint::run_program::<Args, _>(prepared, &args.common, mode, |run| {
        let report = clean(run, args, SystemTime::now());
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

/// The shortest `--older-than`: a temporary younger than this may be a write between its
/// writer's close and its rename (a slow fsync, a paused process), which no lease sees.
pub const OLDER_THAN_MIN: Duration = Duration::from_secs(60);

/// `--older-than`: an age of at least [`OLDER_THAN_MIN`].
///
/// # Errors
/// The reason in words, for clap (exit 2).
pub fn parse_older_than(s: &str) -> Result<Duration, String> {
    let d = parse_age(s)?;
    if d < OLDER_THAN_MIN {
        return Err(format!(
            "{s:?} is below the floor of 1m: a temporary younger than a minute may be a write between its writer's close and rename"
        ));
    }
    Ok(d)
}

/// The age cutoff: files changed after `now - older_than` are young.
fn cutoff(now: SystemTime, older_than: Duration) -> Cutoff {
    let since = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(older_than);
    Cutoff(i64::try_from(since.as_nanos()).unwrap_or(i64::MAX))
}

/// Walks, decides, proves and (unless a dry run) deletes; never panics on odd input.
pub fn clean(run: &mut Run, args: &Args, now: SystemTime) -> Report {
    let progress = Progress::new();
    let root = run.root().path().to_path_buf();
    let mut problems = Vec::new();
    let mut failed = false;
    let mut w = Walk::default();
    match Anchor::open(run.root()) {
        Ok(anchor) => {
            progress.show(format!("{PROGRAM}: walking {}", root.display()));
            w = walk::walk(&anchor, cutoff(now, args.older_than));
            let order = sorted_order(&w);
            progress.show(format!("{PROGRAM}: proving and deleting"));
            let mut prover = act::Prover::new(&anchor, args);
            let fs_failures = act::settle(run, &anchor, &mut w, &order, &mut prover);
            failed |= !fs_failures.is_empty();
            problems.extend(fs_failures);
            let unproven = w
                .temps
                .iter()
                .filter(|t| matches!(t.reason, Reason::Unproven(_)))
                .count();
            if unproven > 0 {
                let why = match &prover.blind_fs {
                    Some(_) => {
                        "the root is not on a local file system, where neither a file lease \
                         nor /proc sees every writer (see --writers-use-this-mount)"
                    }
                    None => {
                        "no file lease could be had on them and /proc is not proof enough \
                         (see --proc-shows-all-writers)"
                    }
                };
                problems.push(Problem::new(
                    &root,
                    ProblemKind::Unreadable,
                    format!("{unproven} stale temporaries kept: {why}"),
                ));
            }
        }
        Err(e) => {
            failed = true;
            problems.push(Problem::from_error(&root, e));
        }
    }
    progress.clear();
    failed |= !w.failures.is_empty();
    problems.append(&mut w.failures);
    problems.append(&mut w.problems);
    problems.sort();
    w.not_entered.sort();
    build_report(run, args.older_than, w, problems, failed)
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
    run: &Run,
    older_than: Duration,
    w: Walk,
    problems: Vec<Problem>,
    mut failed: bool,
) -> Report {
    let (root, mode) = (run.root().path(), run.mode());
    let order = sorted_order(&w);
    let older = age_text(older_than);
    let mut counts = Counts {
        dirs: w.dirs_walked,
        entries: w.entries,
        not_entered: w.not_entered.len() as u64,
        ..Counts::default()
    };
    let mut gone = 0;
    let mut temporaries = Vec::with_capacity(order.len());
    for i in order {
        let t = &w.temps[i];
        let dir = root.join(&w.dirs[t.dir as usize].rel);
        let action = match t.reason {
            Reason::Deleted(_) => Action::Deleted,
            Reason::Stale(Some(_)) if mode.is_plan() => Action::WouldDelete,
            // A real run attempts every stale temporary; none is left Stale.
            _ => Action::Keep,
        };
        counts.temporaries += 1;
        if action == Action::Keep {
            counts.kept += 1;
            *match t.reason.code() {
                ReasonCode::Young => &mut counts.young,
                ReasonCode::Open => &mut counts.open,
                ReasonCode::Locked => &mut counts.locked,
                ReasonCode::Unproven => &mut counts.unproven,
                ReasonCode::Orphan => &mut counts.orphan,
                ReasonCode::NotRegular => &mut counts.not_regular,
                ReasonCode::OtherFs => &mut counts.other_fs,
                ReasonCode::Protected => &mut counts.protected,
                ReasonCode::Changed => &mut counts.changed,
                ReasonCode::Failed | ReasonCode::Stale => &mut counts.failed,
                ReasonCode::NotInPlan => &mut counts.not_in_plan,
            } += 1;
        } else {
            gone += 1;
        }
        failed |= matches!(t.reason, Reason::Failed(_));
        temporaries.push(Decision {
            path: dir.join(&t.name),
            final_path: dir.join(&t.final_name),
            action,
            reason: t.reason.code(),
            proof: t.reason.proof(),
            detail: t.reason.detail(&older),
            bytes: t.meta.stamp.size,
            needs_look: t.reason.needs_look(),
        });
    }
    counts.deletions = tmpa_maint::DeleteCount::of(mode, gone);
    let body = Body {
        older_than_secs: older_than.as_secs(),
        temporaries,
        not_entered: w.not_entered,
        problems,
        failed,
    };
    Report::new(run, body, counts)
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

impl tmpa_maint::ReportBody for Body {
    type Counts = Counts;

    /// The report as text: one line per temporary (`action reason path: detail`), sorted by
    /// path, then the directories not entered and the problems.
    fn render_text(report: &Report) -> String {
        let mut s = String::new();
        for d in &report.temporaries {
            let _ = writeln!(
                s,
                "{:<12} {:<11} {}: {}",
                d.action.as_str(),
                d.reason.as_str(),
                path_text(&d.path),
                line_text(&d.detail)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_text_uses_the_largest_whole_unit() {
        assert_eq!(age_text(Duration::from_secs(86_400)), "1d");
        assert_eq!(age_text(Duration::from_secs(3600 * 36)), "36h");
        assert_eq!(age_text(Duration::from_secs(14 * 86_400)), "2w");
        assert_eq!(age_text(Duration::from_secs(90)), "90s");
        assert_eq!(age_text(Duration::from_secs(0)), "0s");
    }
}
