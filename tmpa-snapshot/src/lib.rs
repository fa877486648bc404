//! # tmpa-snapshot (backups and the restore drill)
//!
//! `--to DIR` takes a point-in-time, consistent copy of a TMPA tree for a backup program
//! to read at leisure; `--verify DIR` checks such a copy, or a tree restored from a
//! backup, the way the restore drill needs.
//!
//! **Consistent** means: the snapshot holds the locks of the three maintenance programs
//! (`compact_events`, `archive_history`, `tmp_cleanup`) for the whole pass, so no event
//! moves from its loose file into `_compacted.json`, no session into its archive and no
//! temporary away while the tree is read. Every write the backend finished before the
//! pass started is in the snapshot (a loose or compacted event, a live or archived
//! session, a notification with its ack); a write finished during the pass may or may not
//! be, never in part. A maintenance run that starts meanwhile finds its lock held and
//! exits 3 at once (the next scheduled run does its work); the snapshot itself waits for
//! the locks at most `--wait` (1 hour by default: a paced compaction runs for minutes),
//! taking all three or none so that it never holds up a job while it waits, then exits 3.
//!
//! **How**: every file of the tree is written as a new inode (temporary, then rename),
//! so a hard link captures a file exactly as it was when linked; on the root's file
//! system the snapshot is hard links (about 3 s for 100,000 files on a cold cache,
//! docs/PERFORMANCE.md), with `--copy` or on another file system it is a copy (content,
//! mode, owner when run as root, mtime; each file and directory fsynced). Whatever the
//! method, `tmpa.toml`, the run records and the receipts of runs that did not finish are
//! copied: a file the programs trust, or one that may still change, never gets a second
//! name from a snapshot, so any number of kept snapshots leaves the jobs as they were. It
//! is built in `.{name}.partial` beside `DIR` and renamed to `DIR` only when every file
//! was taken: a file that cannot be (EIO, a full disk, a quota) stops the pass, nothing is
//! published, the partial build is removed, exit 4.
//!
//! **Where**: `DIR` is reached from `/` one directory at a time without following a
//! symlink, through directories only root may write (or sticky ones of root's, as `/tmp`):
//! a directory on the way that another user could write, or a symlink there, could
//! redirect root's snapshot, and is refused (exit 2).
//!
//! **What**: `notifications/`, `token_stats/`, `chat_history/`, `tmpa.toml`, and of
//! `.tmpa/` the receipts, run records and the quarantine (a killed run's files between
//! their move aside and their unlink, which the next run of its task deletes or puts
//! back: in a restored tree as in the live one). Left out: `_summary.json` (a cache,
//! rebuilt on the first read), temporaries, `.tmpa/` internals (locks, spill, the
//! patrol's state), anything else at the top of the root, and anything that is not a
//! regular file or a directory (a symlink is never followed, and named as a problem).
//!
//! Invariants: every open, stat, link and mkdir goes through tmpa-core's descriptor-based
//! file layer (`Dir`); nothing in the root is written or deleted (the run record, lock
//! files and their notes under `.tmpa/` aside); a file linked into the snapshot is checked
//! to be a regular file there, and taken back (from the snapshot only) when it is not.

mod destination;
mod take;
mod verify;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use tmpa_core::Problem;
use tmpa_core::maintenance::{path_text, serialize_path};
use tmpa_maint::{CommonArgs, ExitStatus, Lock, Mode, Run, StartError, Task, parse_age};

pub use crate::destination::{Destination, Method};
pub use crate::take::Counts;
pub use crate::verify::{VerifyCounts, VerifyReport, verify};

/// Program name, as in the logs.
pub const PROGRAM: &str = "tmpa-snapshot";
/// Task, as in `.tmpa/runs/snapshot.json` and `.tmpa/locks/snapshot.lock`.
pub const TASK: Task = Task::Snapshot;
/// The maintenance programs' locks a snapshot holds for its pass.
pub const HELD_TASKS: [Task; 3] = [Task::CompactEvents, Task::ArchiveHistory, Task::TmpCleanup];
/// How many problems a report lists (the counts are always exact).
pub const PROBLEMS_LISTED_MAX: usize = 1000;

/// Take a point-in-time, consistent copy of a TMPA tree for backups (--to), or check a
/// snapshot or restored tree (--verify).
///
/// --to holds the locks of tmpa-compact, tmpa-archive and tmpa-tmpclean for the pass (a
/// run of theirs that starts meanwhile exits 3), and takes notifications/, token_stats/,
/// chat_history/ and .tmpa/{receipts,runs,quarantine}/ as hard links (same file system;
/// every file of the tree is a new inode when written, so a link keeps it as it was) or,
/// with --copy or on another file system, as fsynced copies; tmpa.toml, run records and
/// the receipts of unfinished runs are always copied. Leaves out _summary.json,
/// temporaries, .tmpa/ internals and anything not a regular file or directory (symlinks
/// are never followed). DIR is reached from / without a symlink, through directories only
/// root may write. Built in .{name}.partial and renamed to DIR only when every file was
/// taken (else exit 4, nothing published, the partial build removed).
/// --verify reads every file of DIR: every event valid, compacted and loose copies of an
/// id equal, every archive decompressing to JSON, every day's summary computable; exit 0
/// or 1, each problem named. Exit: 0 ok, 1 needs a look, 2 usage, 3 locked, 4 failure.
#[derive(clap::Parser, Debug)]
#[command(name = "tmpa-snapshot", version)]
pub struct Args {
    /// The TMPA root to snapshot [default: the current directory]
    #[arg(long, env = "TMPA_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Where the snapshot goes: a directory that does not exist yet, outside the root
    #[arg(long, value_name = "DIR", required_unless_present = "verify")]
    pub to: Option<PathBuf>,
    /// Check the snapshot or restored tree DIR instead (read-only; --root is not used)
    #[arg(long, value_name = "DIR", conflicts_with_all = ["to", "copy", "dry_run", "wait"])]
    pub verify: Option<PathBuf>,
    /// Copy every file (fsynced) even on the root's file system, instead of hard links:
    /// the snapshot then shares no inode with the live tree
    #[arg(long)]
    pub copy: bool,
    /// Say what the snapshot would take (files, bytes, what is left out); take nothing,
    /// hold no maintenance lock
    #[arg(long)]
    pub dry_run: bool,
    /// Wait this long at most for a running tmpa-compact, tmpa-archive or tmpa-tmpclean to
    /// finish (their locks; none is held while waiting), then exit 3 (a whole number and a
    /// unit: s, m, h; 0s: do not wait). The default covers a paced compaction or a weekly
    /// archival of a large tree
    #[arg(long, value_name = "AGE", default_value = "1h", value_parser = parse_age,
          conflicts_with = "dry_run")]
    pub wait: Duration,
    /// Print the report as one JSON document on stdout (log lines go to stderr)
    #[arg(long)]
    pub json: bool,
    /// Diagnostics of the libraries beneath the program (`-v`/`-q`, as every program).
    #[command(flatten)]
    pub diagnostics: tmpa_maint::Diagnostics,
}

/// The whole snapshot run's report: the head every program's report has, around
/// [`Body`].
pub type Report = tmpa_maint::Report<Body>;

/// What tmpa-snapshot's report holds beside the head every program's report has.
#[derive(Debug, Serialize)]
pub struct Body {
    /// Where the snapshot went (or would go).
    #[serde(serialize_with = "serialize_path")]
    pub to: PathBuf,
    /// Hard links or copies, and why copies.
    pub method: Method,
    /// Wall time of the pass in seconds (`null` for a dry run, whose output is the same
    /// from run to run on an unchanged tree).
    pub secs: Option<f64>,
    /// Entries left out as problems (symlinks and other non-regular files) and files
    /// that could not be taken, at most [`PROBLEMS_LISTED_MAX`].
    pub problems: Vec<Problem>,
    /// Why the pass stopped, when it did (the snapshot is then not published).
    pub failure: Option<String>,
}

impl tmpa_maint::ReportBody for Body {
    type Counts = Counts;

    /// The report as text: what was taken, how, in how long; then each problem.
    fn render_text(report: &Report) -> String {
        let c = &report.counts;
        let mut s = String::new();
        let verb = if report.dry_run { "would take" } else { "took" };
        let _ = writeln!(
            s,
            "  {verb} {} files, {} bytes, {} directories into {} ({}){}",
            c.files,
            c.bytes,
            c.dirs,
            path_text(&report.to),
            report.method.words(),
            report
                .secs
                .map(|t| format!(" in {t:.2} s"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            s,
            "  left out: {} summaries (_summary.json), {} temporaries, {} not regular files, {} other top-level entries",
            c.summaries_left_out, c.temporaries_left_out, c.not_regular, c.other_left_out
        );
        for p in &report.problems {
            let _ = writeln!(s, "  problem: {p}");
        }
        if let Some(f) = &report.failure {
            let _ = writeln!(s, "  failed: {f}");
        }
        s
    }
}

impl tmpa_maint::Program for Args {
    const NAME: &'static str = PROGRAM;
    const TASK: Task = TASK;
    const REAL_MODE: &'static str = "SNAPSHOT";

    fn invocation(&self) -> Option<tmpa_maint::Invocation> {
        // --verify reads a snapshot, not a root: no run record.
        self.verify.is_none().then(|| tmpa_maint::Invocation {
            root: self.root.clone(),
            dry_run: self.dry_run,
            json: self.json,
            user: None,
        })
    }

    fn invocation_of_raw(raw: &[std::ffi::OsString]) -> Option<tmpa_maint::Invocation> {
        let verify = raw.iter().any(|a| {
            a.to_str()
                .is_some_and(|a| a == "--verify" || a.starts_with("--verify="))
        });
        (!verify).then(|| tmpa_maint::Invocation {
            user: None,
            ..tmpa_maint::Invocation::from_raw(raw)
        })
    }

    fn run(&self) -> Result<ExitStatus, StartError> {
        run(self)
    }
}

/// Runs the program: `--verify`, or a snapshot `--to`.
///
/// # Errors
/// Start-up errors (not a root, a destination that exists or is inside the root: exit
/// 2; another snapshot running: exit 3).
pub fn run(args: &Args) -> Result<ExitStatus, StartError> {
    if let Some(dir) = &args.verify {
        tmpa_maint::init_diagnostics(&args.diagnostics);
        return verify::run(dir, args.json);
    }
    let to = args
        .to
        .clone()
        .ok_or_else(|| StartError::Usage("--to DIR or --verify DIR is required".into()))?;
    let common = CommonArgs {
        root: args.root.clone(),
        dry_run: args.dry_run,
        json: args.json,
        save_plan: None,
        apply_plan: None,
        pace: Duration::ZERO,
        // The snapshot runs as it was started (see `Args`): a backup written where only
        // root may write, with the files' owners kept.
        user: None,
        diagnostics: args.diagnostics,
    };
    let mode = Mode::of_flags(args.dry_run, false);
    let prepared = tmpa_maint::prepare(&common)?;
    let root = tmpa_maint::resolve_root(args.root.as_deref())?;
    // The destination is checked before the run starts: a bad one is a usage error.
    let dest = Destination::check(&root, &to, args.copy)?;
    drop(root);
    tmpa_maint::run_program::<Args, _>(prepared, &common, mode, |run| {
        snapshot(run, &dest, args.wait)
    })
}

/// The pass: the maintenance locks (not for a dry run), then the walk.
fn snapshot(run: &mut Run, dest: &Destination, wait: Duration) -> (Report, ExitStatus) {
    let started = Instant::now();
    let body = Body {
        to: dest.path().to_path_buf(),
        method: dest.method(),
        secs: None,
        problems: Vec::new(),
        failure: None,
    };
    let mut report = Report::new(run, body, Counts::default());
    let locks = if run.dry_run() {
        Vec::new()
    } else {
        match hold_maintenance_locks(run, wait) {
            Ok(locks) => locks,
            Err(e) => {
                let status = e.status();
                report.failure = Some(e.chain());
                eprintln!("{PROGRAM}: error: {}", e.chain());
                return (report, status);
            }
        }
    };
    let root = run.root().clone();
    // The locks still held by name once every file is taken: if someone removed one
    // meanwhile, a maintenance run may have moved files during the pass.
    let still_consistent = || locks.iter().try_for_each(|l| l.still_held(&root));
    let outcome = take::take(
        run.root(),
        dest,
        run.dry_run(),
        &mut report,
        still_consistent,
    );
    if !run.dry_run() {
        report.secs = Some(started.elapsed().as_secs_f64());
    }
    let status = match outcome {
        Err(e) => {
            report.failure = Some(e.chain());
            eprintln!("{PROGRAM}: error: {}", e.chain());
            ExitStatus::Failure
        }
        Ok(()) if report.counts.not_regular > 0 => ExitStatus::NeedsLook,
        Ok(()) => ExitStatus::Ok,
    };
    (report, status)
}

/// How often a snapshot waiting for the maintenance locks tries them again.
const WAIT_POLL: Duration = Duration::from_millis(250);

/// Takes the locks of [`HELD_TASKS`], all of them or none: while one is held by a
/// maintenance run, the others are let go again, so that a waiting snapshot never holds
/// up a job; tried again every [`WAIT_POLL`] for at most `wait`, saying once on stderr
/// what it waits for.
///
/// # Errors
/// [`StartError::Locked`] naming a lock still held when the wait is over; any other
/// refusal of a lock at once.
fn hold_maintenance_locks(run: &Run, wait: Duration) -> Result<Vec<Lock>, StartError> {
    let deadline = Instant::now() + wait;
    let mut said = false;
    loop {
        let mut locks = Vec::with_capacity(HELD_TASKS.len());
        let mut busy = None;
        for task in HELD_TASKS {
            match Lock::take(run.root(), task) {
                Ok(l) => locks.push(l),
                Err(e @ StartError::Locked { .. }) => {
                    busy = Some(e);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        let Some(busy) = busy else {
            for l in &locks {
                l.write_note(run.root());
            }
            return Ok(locks);
        };
        drop(locks);
        let now = Instant::now();
        if now >= deadline {
            return Err(busy);
        }
        if !said {
            eprintln!(
                "{} {PROGRAM}: waiting up to {} for {}",
                tmpa_maint::now_rfc3339(),
                age_words(wait),
                busy.chain()
            );
            said = true;
        }
        std::thread::sleep(WAIT_POLL.min(deadline - now));
    }
}

/// `wait` as `--wait` takes it: `1h`, `30m`, `45s`.
fn age_words(wait: Duration) -> String {
    match wait.as_secs() {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
