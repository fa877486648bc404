//! # tmpa-patrol (the nine-item checklist, and growth)
//!
//! Checks a TMPA root the way the operations card asks, in one walk of the tree, and
//! reports in the three shapes monitoring wants: a Nagios-style first line with perfdata
//! plus a human table, `--json` (docs/OPERATIONS.md "tmpa-patrol"), and `--prometheus FILE` for node_exporter's
//! textfile collector.
//!
//! The checks, by name: `service`, `directories`, `inbox_files`, `token_stats_files`,
//! `inodes`, `file_system` (the root's file system, and off a local disk which promises
//! are weaker there), `tmp_files`, `corrupt_json`, `compact_events_last_success`,
//! `archive_history_last_success`, and `growth`: the counts of temporaries,
//! corrupt files and the largest directories against the patrol's previous runs
//! (remembered in `{root}/.tmpa/patrol/history.json`), warning when one keeps growing run
//! after run. Each has a status (ok, warning, critical, unknown), a value and a detail;
//! every threshold is a flag whose default is the card's. With `--scrub`, a twelfth,
//! `scrub`: compacted days and archives read against their checksums, a bounded share per
//! patrol (`scrub.rs`). `--watch INTERVAL` repeats the
//! patrol after a deployment: one line per interval with what changed, then a verdict.
//!
//! Invariants:
//! - Read-only in the data tree: it takes no lock and writes nothing there. The only
//!   files it writes are the `--prometheus` file (atomically), its history
//!   (`{root}/.tmpa/patrol/history.json`, atomically; not in `--watch`), with
//!   `--incremental` its JSON-check cache under `{root}/.tmpa/patrol/`, and with `--scrub`
//!   where the scrub stopped (`{root}/.tmpa/patrol/scrub.json`), all atomically; and,
//!   off a local disk, the `file_system` check's probe files in `{root}/.tmpa/patrol/`,
//!   removed at once.
//! - One walk of the three data directories feeds every file-based check; symlinks are
//!   never followed, reads are bounded in size and never block on a FIFO.
//! - Exit code is the monitoring-plugin convention: 0 ok, 1 warning, 2 critical,
//!   3 unknown. A patrol that cannot check at all (not a root, bad flag) exits 3.

mod args;
mod check;
pub mod corrupt;
pub mod filesystem;
pub mod history;
pub mod jobs;
pub mod logs;
pub mod notify;
pub mod prom;
pub mod quarantine;
mod render;
pub mod scrub;
pub mod service;
pub mod store;
pub mod walk;
mod watch;

use std::path::Path;
use std::process::ExitCode;
use std::time::{Instant, SystemTime};

use serde::Serialize;
use tmpa_core::Root;
use tmpa_core::maintenance::{line_text, path_text, root_dir};
use tmpa_maint::{now_rfc3339, resolve_root};

pub use args::Args;
use args::validate;
pub use check::{CHECK_NAMES, Check, FINDINGS_MAX, Perf, Status};
use render::one_line;
pub use render::{fmt_num, footer_line, nagios_line, render_table};
use tmpa_maint::out;

/// Program name, as in the logs.
pub const PROGRAM: &str = "tmpa-patrol";

/// The whole patrol's report (`--json`: docs/OPERATIONS.md "tmpa-patrol" plus a few fields).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Overall status: the worst of the checks that ran.
    pub status: Status,
    /// The checks, in [`CHECK_NAMES`] order.
    pub checks: Vec<Check>,
    /// The canonical root.
    pub root: String,
    /// When the patrol ran (RFC 3339).
    pub checked_at: String,
    /// Wall time of the patrol.
    pub duration_secs: f64,
    /// What the job checks read from the run records, then the records exported only
    /// (`jobs::EXPORTED_ONLY`).
    pub jobs: Vec<jobs::JobInfo>,
    /// Where archives go, and (with `--check-archive-store`) whether the store answers.
    pub archive_store: store::StoreInfo,
    /// Numbers from the walk, for the metrics.
    pub tree: walk::Totals,
    /// The root's file system, and what its probe found.
    pub file_system: filesystem::FsInfo,
    /// What the delete step left in `.tmpa/quarantine/`, per task.
    pub quarantine: quarantine::QuarantineInfo,
    /// How the counts grew since the previous patrol.
    pub growth: history::Growth,
    /// This patrol's counts, as the history remembers them.
    #[serde(skip)]
    pub sample: history::Sample,
    /// What `--scrub` read in this patrol.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scrub: Option<scrub::ScrubInfo>,
}

impl Report {
    /// The overall status of `checks`: the worst of those not skipped.
    pub fn overall(checks: &[Check]) -> Status {
        checks
            .iter()
            .filter(|c| !c.skipped)
            .fold(Status::Ok, |s, c| s.worst(c.status))
    }

    /// A check by name.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }
}

/// Runs every check on `root`. Writes nothing except the JSON-check cache (with
/// `--incremental`, under `{root}/.tmpa/patrol/`).
///
/// # Examples
/// ```
/// use clap::Parser;
/// use tmpa_patrol::{Args, Status, patrol};
/// let dir = tempfile::tempdir().unwrap();
/// for d in ["notifications", "token_stats", "chat_history"] {
///     std::fs::create_dir(dir.path().join(d)).unwrap();
/// }
/// std::fs::create_dir_all(dir.path().join("token_stats/2026-11-01")).unwrap();
/// std::fs::write(dir.path().join("token_stats/2026-11-01/evt_a.json"), b"{").unwrap();
/// let root = tmpa_core::Root::open(dir.path()).unwrap();
/// let args = Args::parse_from(["tmpa-patrol"]);
/// let report = patrol(&root, &args);
/// let corrupt = report.check("corrupt_json").unwrap();
/// assert_eq!((corrupt.status, corrupt.value), (Status::Warning, Some(1.0)));
/// // No job has ever run on this root.
/// assert_eq!(report.status, Status::Critical);
/// ```
pub fn patrol(root: &Root, args: &Args) -> Report {
    patrol_against(root, args, &history::History::load(root).samples)
}

/// [`patrol`], its growth measured against `past` (the samples of earlier patrols, oldest
/// first).
pub fn patrol_against(root: &Root, args: &Args, past: &[history::Sample]) -> Report {
    let started = Instant::now();
    let checked_at = now_rfc3339();
    let now = SystemTime::now();
    // The service command runs while the tree is walked: both mostly wait.
    let (service, (tree_checks, totals, largest, file_system)) = std::thread::scope(|s| {
        let service = s.spawn(|| service::check(args.service_cmd.as_deref(), args.service_timeout));
        let tree = tree_checks(root, args, now);
        (
            service.join().unwrap_or_else(|_| {
                Check::new(
                    "service",
                    Status::Unknown,
                    None,
                    "the service check panicked".into(),
                )
            }),
            tree,
        )
    });
    let mut checks = vec![service];
    checks.extend(tree_checks);
    let quarantine = quarantine::scan(root);
    if let Some(tmp) = checks.iter_mut().find(|c| c.name == "tmp_files") {
        quarantine::annotate(tmp, &quarantine, "tmp_cleanup");
    }
    let mut infos = Vec::new();
    let mut archive_store = store::StoreInfo::default();
    for spec in jobs::specs(args) {
        let logs = args.log_sources(spec.task);
        let (mut check, info) = jobs::check(root, &spec, now, &logs);
        if spec.task == "archive_history" {
            archive_store = store::annotate(root, &mut check, args.check_archive_store);
        }
        quarantine::annotate(&mut check, &quarantine, spec.task);
        checks.push(check);
        infos.push(info);
    }
    let corrupt = checks
        .iter()
        .find(|c| c.name == "corrupt_json")
        .filter(|c| c.status != Status::Unknown)
        .and_then(|c| c.value)
        .map(|v| v as u64);
    let sample = history::Sample {
        at_unix: now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
        temporaries: totals.tmp_files,
        corrupt,
        largest,
    };
    let thresholds = growth_thresholds(args);
    let growth = history::growth(past, &sample, thresholds);
    checks.push(history::check(&growth, thresholds));
    infos.extend(jobs::EXPORTED_ONLY.map(|task| jobs::info(root, task, now)));
    debug_assert_eq!(
        checks.iter().map(|c| c.name).collect::<Vec<_>>(),
        CHECK_NAMES
    );
    Report {
        status: Report::overall(&checks),
        checks,
        root: path_text(root.path()),
        checked_at,
        duration_secs: started.elapsed().as_secs_f64(),
        jobs: infos,
        archive_store,
        tree: totals,
        file_system,
        quarantine,
        growth,
        sample,
        scrub: None,
    }
}

/// The growth check's thresholds from the flags.
fn growth_thresholds(args: &Args) -> history::Thresholds {
    history::Thresholds {
        per_run: args.growth_warning,
        dir_per_run: args.growth_dir_warning,
        runs: args.growth_runs,
    }
}

/// The checks fed by the walk, plus inodes and the file system; the walk's totals, the
/// largest directories and the file system.
fn tree_checks(
    root: &Root,
    args: &Args,
    now: SystemTime,
) -> (
    Vec<Check>,
    walk::Totals,
    Vec<history::DirCount>,
    filesystem::FsInfo,
) {
    let w = walk::walk(root, &args.required_dirs);
    let (fs_check, fs_info) = filesystem::check(root);
    let mut largest: Vec<history::DirCount> = w
        .inboxes
        .iter()
        .chain(&w.days)
        .map(|(p, n)| history::DirCount {
            path: rel_text(root, p),
            entries: *n,
        })
        .collect();
    largest.sort_by(|a, b| b.entries.cmp(&a.entries).then_with(|| a.path.cmp(&b.path)));
    largest.truncate(history::LARGEST_MAX);
    let mut checks = vec![
        walk::directories_check(&w),
        walk::count_check(
            "inbox_files",
            "inbox_files_max",
            ("inbox", "inboxes"),
            root,
            &w.inboxes,
            args.inbox_files_warning,
            args.inbox_files_critical,
        ),
        walk::count_check(
            "token_stats_files",
            "token_stats_files_max",
            ("day directory", "day directories"),
            root,
            &w.days,
            args.token_stats_files_warning,
            args.token_stats_files_critical,
        ),
        inodes_check(root, args),
        fs_check,
        walk::tmp_check(root, &w, args, now),
    ];
    if let Some(inbox) = checks.iter_mut().find(|c| c.name == "inbox_files") {
        notify::annotate(inbox, &notify::archived(root));
    }
    let opts = corrupt::Options {
        incremental: args.incremental,
        full: args.full,
        cache_max_age: args.cache_max_age,
        warning: args.corrupt_warning,
        critical: args.corrupt_critical,
    };
    checks.push(corrupt::check(root, &w, &opts, now));
    (checks, w.totals, largest, fs_info)
}

/// `inodes`: the share of the root's file system's inodes in use (statvfs).
fn inodes_check(root: &Root, args: &Args) -> Check {
    let name = "inodes";
    let st = match rustix::fs::fstatvfs(root_dir(root)) {
        Ok(st) => st,
        Err(e) => {
            return Check::new(
                name,
                Status::Unknown,
                None,
                format!("statvfs {}: {e}", path_text(root.path())),
            );
        }
    };
    let mut check = if st.f_files == 0 {
        // btrfs and some network file systems have no fixed inode table.
        Check::new(
            name,
            Status::Ok,
            Some(0.0),
            "the file system reports no inode limit".into(),
        )
    } else {
        let used = st.f_files.saturating_sub(st.f_ffree);
        let pct = (used as f64 * 1000.0 / st.f_files as f64).round() / 10.0;
        Check::new(
            name,
            Status::of_threshold(pct, args.inodes_warning, args.inodes_critical),
            Some(pct),
            format!(
                "{pct}% of inodes used ({used} of {}, {} free); warning >{}%, critical >{}%",
                st.f_files, st.f_ffree, args.inodes_warning, args.inodes_critical
            ),
        )
    };
    check.perf.push(Perf {
        label: "inodes_used",
        value: check.value,
        uom: "%",
        warn: Some(args.inodes_warning),
        crit: Some(args.inodes_critical),
    });
    check
}

/// Runs the program: checks, prints, writes the Prometheus file; returns the overall
/// status (the exit code). Never fails: what cannot be checked is `unknown`.
pub fn run(args: &Args) -> Status {
    tmpa_maint::init_diagnostics(&args.diagnostics);
    if let Err(msg) = validate(args) {
        return cannot_check(args, &format!("usage error: {msg}"));
    }
    // What only root may read is opened first; then the patrol is --user, before it starts
    // any thread (the service command's, the walk's).
    logs::open_before_switch(args.logs.iter().map(|(_, p)| p.as_path()));
    if let Err(e) = tmpa_maint::become_user(args.user.as_deref()) {
        return cannot_check(args, &e.chain());
    }
    let root = match resolve_root(args.root.as_deref()) {
        Ok(r) => r,
        Err(e) => return cannot_check(args, &e.chain()),
    };
    if let Some(interval) = args.watch {
        return watch::watch(&root, args, interval);
    }
    let header = tmpa_maint::header_line(PROGRAM, "PATROL", &root);
    let mut hist = history::History::load(&root);
    let mut report = patrol_against(&root, args, &hist.samples);
    if args.scrub {
        let (check, info) = scrub::run(
            &root,
            args.scrub_bytes,
            args.scrub_window,
            SystemTime::now(),
        );
        report.checks.push(check);
        report.scrub = Some(info);
        report.status = Report::overall(&report.checks);
    }
    hist.push(report.sample.clone());
    if let Err(e) = hist.save(&root) {
        // The checks stand; the next run compares with an older run, or with none.
        eprintln!(
            "{PROGRAM}: warning: cannot remember this run's counts: {}",
            e.chain()
        );
    }
    let mut status = report.status;
    if let Some(Err(e)) = args
        .prometheus
        .as_ref()
        .map(|path| prom::write(path, &prom::render(&report)))
    {
        eprintln!(
            "{PROGRAM}: error: cannot write the Prometheus file: {}",
            line_text(&e.chain())
        );
        // The checks stand; the metrics did not reach the collector.
        status = status.worst(Status::Unknown);
    }
    report.status = status;
    if args.json {
        eprintln!("{header}");
        out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&report).expect("the report serializes")
        ));
    } else {
        out(&format!(
            "{}\n{header}\n{}",
            nagios_line(&report),
            render_table(&report)
        ));
    }
    let footer = footer_line(&report);
    if args.json {
        eprintln!("{footer}");
    } else {
        out(&format!("{footer}\n"));
    }
    status
}

/// Reports a patrol that could not check anything (bad flags, not a root): unknown, with
/// a status line, a JSON document and a Prometheus file that say so, so that a stale
/// metrics file does not keep reporting the last good state.
fn cannot_check(args: &Args, msg: &str) -> Status {
    let status = Status::Unknown;
    eprintln!("{PROGRAM}: error: {}", line_text(msg));
    if let Some(Err(e)) = args
        .prometheus
        .as_ref()
        .map(|path| prom::write(path, &prom::render_down()))
    {
        eprintln!(
            "{PROGRAM}: error: cannot write the Prometheus file: {}",
            e.chain()
        );
    }
    if args.json {
        let doc = serde_json::json!({
            "status": status,
            "checks": [],
            "error": msg,
        });
        out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&doc).expect("JSON serializes")
        ));
    } else {
        out(&format!(
            "TMPA UNKNOWN - cannot check: {}\n",
            one_line(msg, 200)
        ));
    }
    status
}

/// Handles a command-line error from clap: help and version print and exit 0; anything
/// else is a usage error, which for a monitoring plugin is 3 (unknown), not 2
/// (critical).
pub fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let _ = e.print();
    let first = e.to_string();
    let first = first.lines().next().unwrap_or("bad arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    out(&format!(
        "TMPA UNKNOWN - usage error: {}\n",
        one_line(first, 200)
    ));
    Status::Unknown.into()
}

/// A path relative to the root, as text for reports.
pub(crate) fn rel_text(root: &Root, path: &Path) -> String {
    path_text(path.strip_prefix(root.path()).unwrap_or(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{parse_journal_arg, parse_log_arg};
    use crate::render::perf_item;

    #[test]
    fn worst_prefers_known_problems_over_unknown() {
        assert_eq!(Status::Unknown.worst(Status::Warning), Status::Warning);
        assert_eq!(Status::Ok.worst(Status::Unknown), Status::Unknown);
        assert_eq!(Status::Critical.worst(Status::Unknown), Status::Critical);
    }

    #[test]
    fn thresholds_are_strictly_above() {
        assert_eq!(Status::of_threshold(5000.0, 5000.0, 10000.0), Status::Ok);
        assert_eq!(
            Status::of_threshold(5001.0, 5000.0, 10000.0),
            Status::Warning
        );
        assert_eq!(
            Status::of_threshold(10001.0, 5000.0, 10000.0),
            Status::Critical
        );
    }

    #[test]
    fn skipped_checks_do_not_count() {
        let mut c = Check::new("service", Status::Unknown, None, "not configured".into());
        c.skipped = true;
        let ok = Check::new("inodes", Status::Ok, Some(1.0), String::new());
        assert_eq!(Report::overall(&[c, ok]), Status::Ok);
    }

    #[test]
    fn perfdata_shapes() {
        let p = Perf {
            label: "inodes_used",
            value: Some(73.25),
            uom: "%",
            warn: Some(70.0),
            crit: Some(85.0),
        };
        assert_eq!(perf_item(&p), "inodes_used=73.25%;70;85;0");
        let u = Perf { value: None, ..p };
        assert_eq!(perf_item(&u), "inodes_used=U;70;85;0");
    }

    #[test]
    fn log_arg_needs_a_known_task() {
        assert!(parse_log_arg("compact_events=/var/log/x").is_ok());
        assert!(parse_log_arg("compact=/var/log/x").is_err());
        assert!(parse_log_arg("compact_events=").is_err());
        assert!(parse_log_arg("nothing").is_err());
    }

    #[test]
    fn journal_arg_needs_a_known_task_and_one_unit() {
        assert_eq!(
            parse_journal_arg("compact_events=tmpa-compact.service"),
            Ok(("compact_events".into(), "tmpa-compact.service".into()))
        );
        assert!(parse_journal_arg("archive_history=tmpa@x.service").is_ok());
        assert!(parse_journal_arg("compact=tmpa-compact.service").is_err());
        assert!(parse_journal_arg("compact_events=").is_err());
        // A pattern would match other units; an option would be journalctl's.
        assert!(parse_journal_arg("compact_events=tmpa-*").is_err());
        assert!(parse_journal_arg("compact_events=--file=/x").is_err());
        assert!(parse_journal_arg("compact_events=a b").is_err());
    }
}
