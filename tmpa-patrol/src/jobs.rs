//! `compact_events_last_success` and `archive_history_last_success`: the run records
//! (`{root}/.tmpa/runs/{task}.json`) say when each job last succeeded; `--log` adds the
//! job's log.
//!
//! A success is a real run (not a dry run) that finished its work, exit 0 or 1; the
//! record carries the last one forward through failed runs. Its age is measured from
//! when it *finished* (start + duration), so tonight's run, while it is still running,
//! does not make last night's look too old.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, FixedOffset};
use serde::Serialize;
use tmpa_core::Root;
use tmpa_core::maintenance::path_text;
use tmpa_maint::{LastSuccess, RunRecord, read_run_record};

use crate::{Args, Check, FINDINGS_MAX, Perf, Status, one_line};

/// The tasks a job check watches (and `--log` accepts).
pub const TASKS: [&str; 2] = ["compact_events", "archive_history"];
/// Tasks whose run record is exported as metrics (`tmpa_job_*`) without a check of their
/// own: tmpclean's runs, for the alert rules (a failing or stopped cleanup), while the
/// checklist keeps its nine items (`tmp_files` already watches what tmpclean leaves).
pub const EXPORTED_ONLY: [&str; 1] = ["tmp_cleanup"];
/// Lines of a job's log shown when it is not healthy.
pub const LOG_TAIL_LINES: usize = 50;
/// Bytes read from the end of a log (logrotate keeps it smaller; a longer log is
/// scanned over its last this many bytes only).
pub const LOG_BYTES_MAX: u64 = 32 << 20;
/// Characters kept of each log line shown.
const LOG_LINE_CHARS_MAX: usize = 400;
/// Paths remembered per run as having failed verification.
const FAILED_PATHS_MAX: usize = 100_000;

/// One job check.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Check name.
    pub name: &'static str,
    /// Task name (run record).
    pub task: &'static str,
    /// Longest acceptable time since the last success finished.
    pub window: Duration,
    /// The flag that sets the window, for messages.
    pub flag: &'static str,
}

/// The two job checks with the windows from `args`.
pub fn specs(args: &Args) -> [Spec; 2] {
    [
        Spec {
            name: "compact_events_last_success",
            task: "compact_events",
            window: args.compact_window,
            flag: "--compact-window",
        },
        Spec {
            name: "archive_history_last_success",
            task: "archive_history",
            window: args.archive_window,
            flag: "--archive-window",
        },
    ]
}

/// What the run record says, for the report and the metrics.
#[derive(Clone, Debug, Default, Serialize)]
pub struct JobInfo {
    /// The task.
    pub task: &'static str,
    /// When the last run (of any kind) started.
    pub last_run_at: Option<String>,
    /// The same, as Unix seconds.
    pub last_run_unix: Option<f64>,
    /// Its duration.
    pub last_run_duration_secs: Option<f64>,
    /// Its exit code.
    pub last_run_exit_code: Option<u8>,
    /// Whether it was a dry run.
    pub last_run_dry_run: Option<bool>,
    /// When the last success started.
    pub last_success_at: Option<String>,
    /// The same, as Unix seconds.
    pub last_success_unix: Option<f64>,
    /// Its duration.
    pub last_success_duration_secs: Option<f64>,
    /// Its exit code (0, or 1: finished but left something to look at).
    pub last_success_exit_code: Option<u8>,
    /// Seconds since the last success finished.
    pub last_success_age_secs: Option<f64>,
    /// Deletions after a failed verification found in the job's log.
    pub log_violations: usize,
}

fn parse_time(s: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(s).ok()
}

fn unix(t: DateTime<FixedOffset>) -> f64 {
    t.timestamp() as f64 + f64::from(t.timestamp_subsec_millis()) / 1000.0
}

/// `3d 4h`, `5h 2m`, `12m 5s`, `40s`.
pub fn fmt_age(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {sec}s")
    } else {
        format!("{sec}s")
    }
}

/// What the run record of `task` says, for the metrics only (see [`EXPORTED_ONLY`]): the
/// same reading as a check's, with no window and no log.
pub fn info(root: &Root, task: &'static str, now: SystemTime) -> JobInfo {
    let spec = Spec {
        name: task,
        task,
        window: Duration::MAX,
        flag: "",
    };
    check(root, &spec, now, None).1
}

/// Runs one job check.
pub fn check(root: &Root, spec: &Spec, now: SystemTime, log: Option<&Path>) -> (Check, JobInfo) {
    let mut info = JobInfo {
        task: spec.task,
        ..JobInfo::default()
    };
    let now_unix = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let window = spec.window.as_secs_f64();
    let (mut status, mut detail) = match read_run_record(root, spec.task) {
        Err(e) => (
            Status::Unknown,
            format!("cannot read the run record: {}", e.chain()),
        ),
        Ok(None) => (
            Status::Critical,
            format!(
                "no run record: {} has never run on this root (.tmpa/runs/{}.json)",
                spec.task, spec.task
            ),
        ),
        Ok(Some(r)) => {
            info.last_run_at = Some(r.started_at.clone());
            info.last_run_unix = parse_time(&r.started_at).map(unix);
            info.last_run_duration_secs = r.duration_secs.or_else(|| {
                let (s, f) = (parse_time(&r.started_at)?, parse_time(&r.finished_at)?);
                Some((unix(f) - unix(s)).max(0.0))
            });
            info.last_run_exit_code = Some(r.exit_code);
            info.last_run_dry_run = Some(r.dry_run);
            let last_run = format!(
                "last run {} exit {}{}",
                r.started_at,
                r.exit_code,
                if r.dry_run { " (dry run)" } else { "" }
            );
            match r.last_success() {
                Ok(None) => (
                    Status::Critical,
                    format!("no successful real run yet; {last_run}"),
                ),
                Err(why) => (Status::Unknown, why),
                Ok(Some(s)) => {
                    info.last_success_at = Some(s.at.clone());
                    info.last_success_duration_secs = Some(s.duration_secs);
                    info.last_success_exit_code = Some(s.exit_code);
                    let started = unix(s.started);
                    info.last_success_unix = Some(started);
                    let finished = started + s.duration_secs;
                    // A clock that went back is not a job that ran in the future.
                    let age = (now_unix - finished).max(0.0);
                    info.last_success_age_secs = Some(age);
                    judge(spec, &r, &s, age, window, &last_run)
                }
            }
        }
    };
    let mut findings = Vec::new();
    let mut tail = Vec::new();
    if let Some(path) = log {
        match scan_log(path) {
            Ok(scan) => {
                info.log_violations = scan.violations.len();
                if !scan.violations.is_empty() {
                    status = Status::Critical;
                    detail = format!(
                        "{} deletion(s) after a failed verification in {}; {detail}",
                        scan.violations.len(),
                        path_text(path)
                    );
                    findings = scan.violations.into_iter().take(FINDINGS_MAX).collect();
                }
                if status != Status::Ok {
                    tail = scan.tail;
                }
            }
            Err(e) => detail.push_str(&format!("; log {}: {e}", path_text(path))),
        }
    }
    let mut c = Check::new(spec.name, status, info.last_success_age_secs, detail);
    c.findings = findings;
    c.log_tail = tail;
    c.perf.push(Perf {
        label: if spec.task == "compact_events" {
            "compact_events_last_success_age"
        } else {
            "archive_history_last_success_age"
        },
        value: info.last_success_age_secs.map(f64::round),
        uom: "s",
        warn: None,
        crit: Some(window),
    });
    (c, info)
}

/// The status of a job with a last success `age` seconds ago.
fn judge(
    spec: &Spec,
    r: &RunRecord,
    success: &LastSuccess,
    age: f64,
    window: f64,
    last_run: &str,
) -> (Status, String) {
    let base = format!(
        "last success {} (took {}, finished {} ago)",
        success.at,
        fmt_age(success.duration_secs),
        fmt_age(age)
    );
    if age > window {
        return (
            Status::Critical,
            format!(
                "{base}: older than {} ({}); {last_run}",
                fmt_age(window),
                spec.flag
            ),
        );
    }
    if !success.is_this_run && r.exit_code >= 2 {
        return (
            Status::Warning,
            format!("{base}; but the {last_run} (see its log)"),
        );
    }
    if success.exit_code == 1 {
        return (
            Status::Warning,
            format!(
                "{base} with exit 1: finished, but something needs a look (see its log and report)"
            ),
        );
    }
    (Status::Ok, base)
}

/// What a job's log says.
#[derive(Clone, Debug, Default)]
pub struct LogScan {
    /// Its last [`LOG_TAIL_LINES`] lines.
    pub tail: Vec<String>,
    /// One message per deletion that follows a failed verification of the same path in
    /// the same run.
    pub violations: Vec<String>,
}

/// Reads the end of a log (at most [`LOG_BYTES_MAX`] bytes; never blocks on a FIFO).
///
/// # Errors
/// A message when it cannot be opened or read, or is not a regular file.
pub fn scan_log(path: &Path) -> Result<LogScan, String> {
    let nonblock = rustix::fs::OFlags::NONBLOCK.bits() as i32;
    let mut f = File::options()
        .read(true)
        .custom_flags(nonblock)
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = f.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let start = meta.len().saturating_sub(LOG_BYTES_MAX);
    f.seek(SeekFrom::Start(start)).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    f.take(LOG_BYTES_MAX)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        // The first line was cut by the seek.
        lines.remove(0);
    }
    let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..]
        .iter()
        .map(|l| one_line(l, LOG_LINE_CHARS_MAX))
        .collect();
    Ok(LogScan {
        tail,
        violations: violations(&lines),
    })
}

/// A run's first line, as `program::header_line` writes it: `{time} tmpa-x {MODE} root=..`.
fn is_run_header(line: &str) -> bool {
    let w: Vec<&str> = line.split_whitespace().take(4).collect();
    w.len() == 4 && w[1].starts_with("tmpa-") && w[3].starts_with("root=")
}

/// Words of a line that look like paths (`a/b`, `x.json`), stripped of punctuation.
fn path_words(line: &str) -> Vec<&str> {
    line.split_whitespace()
        .map(|w| w.trim_matches(|c: char| ":,;()[]{}\"'`".contains(c)))
        .filter(|w| {
            w.contains('/')
                || w.rsplit_once('.').is_some_and(|(head, ext)| {
                    !head.is_empty()
                        && !ext.is_empty()
                        && ext.chars().all(|c| c.is_ascii_alphanumeric())
                        && ext.chars().any(|c| c.is_ascii_alphabetic())
                })
        })
        .collect()
}

fn base_name(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// Whether two spellings name the same path (one may be relative to the root).
fn same_path(a: &str, b: &str) -> bool {
    a == b || a.ends_with(&format!("/{b}")) || b.ends_with(&format!("/{a}"))
}

fn is_deletion(lower: &str) -> bool {
    let says = ["deleted", "deleting", "removed", "unlinked"]
        .iter()
        .any(|w| lower.contains(w));
    let denies = [
        "not deleted",
        "not delete",
        "would delete",
        "would_delete",
        "kept",
    ]
    .iter()
    .any(|w| lower.contains(w));
    says && !denies
}

/// Deletions that follow a failed verification of the same path within one run (a run
/// starts at its header line; the next night may legitimately delete a file that failed
/// once and then verified). A path may be spelled absolute in one line and relative to
/// the root in the other.
///
/// # Examples
/// ```
/// use tmpa_patrol::jobs::violations;
/// let log = [
///     "2026-11-25T02:30:00+01:00 tmpa-compact COMPACT root=/opt/app",
///     "verification failed: /opt/app/token_stats/2026-11-01/evt_a.json (kept)",
///     "deleted token_stats/2026-11-01/evt_a.json",
/// ];
/// assert_eq!(violations(&log).len(), 1);
/// assert!(violations(&log[..2]).is_empty());
/// ```
pub fn violations(lines: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    // Base name → (full spelling, line number) of each path that failed verification.
    let mut failed: HashMap<String, Vec<(String, usize)>> = HashMap::new();
    let mut remembered = 0usize;
    let mut reported = HashSet::new();
    for (i, line) in lines.iter().enumerate() {
        if is_run_header(line) {
            failed.clear();
            remembered = 0;
            continue;
        }
        let lower = line.to_lowercase();
        if lower.contains("verification failed") {
            for p in path_words(line) {
                if remembered < FAILED_PATHS_MAX {
                    remembered += 1;
                    failed
                        .entry(base_name(p).to_owned())
                        .or_default()
                        .push((p.to_owned(), i + 1));
                }
            }
            continue;
        }
        if !is_deletion(&lower) {
            continue;
        }
        for p in path_words(line) {
            let Some(cands) = failed.get(base_name(p)) else {
                continue;
            };
            if let Some((_, at)) = cands.iter().find(|(f, _)| same_path(f, p))
                && reported.insert((i, p.to_owned()))
            {
                out.push(format!(
                    "line {}: {p} deleted after its verification failed (line {at})",
                    i + 1
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletion_after_failed_verification_is_found() {
        let log = [
            "2026-11-25T02:30:00+00:00 tmpa-compact COMPACT root=/opt/app",
            "verification failed: /opt/app/token_stats/2026-11-01/evt_a.json does not read back",
            "deleted token_stats/2026-11-01/evt_a.json",
            "deleted token_stats/2026-11-01/evt_b.json",
        ];
        let v = violations(&log);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("evt_a.json") && v[0].contains("line 3"));
    }

    #[test]
    fn a_new_run_may_delete_what_failed_before() {
        let log = [
            "t tmpa-compact COMPACT root=/opt/app",
            "verification failed: /a/evt_a.json",
            "t tmpa-compact COMPACT root=/opt/app",
            "deleted /a/evt_a.json",
        ];
        assert!(violations(&log).is_empty());
    }

    #[test]
    fn kept_and_dry_run_lines_are_not_deletions() {
        let log = [
            "verification failed: /a/evt_a.json (kept)",
            "/a/evt_a.json: not deleted",
            "would delete /a/evt_a.json",
            "t tmpa-compact finished: deleted=3 exit=1 (needs a look)",
        ];
        assert!(violations(&log).is_empty());
    }

    #[test]
    fn ages_read_well() {
        assert_eq!(fmt_age(40.0), "40s");
        assert_eq!(fmt_age(3700.0), "1h 1m");
        assert_eq!(fmt_age(90_000.0), "1d 1h");
    }
}
