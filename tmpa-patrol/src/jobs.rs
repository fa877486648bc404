//! `compact_events_last_success` and `archive_history_last_success`: the run records
//! (`{root}/.tmpa/runs/{task}.json`) say when each job last succeeded; `--log` adds the
//! job's log.
//!
//! A success is a real run (not a dry run) that finished its work, exit 0 or 1; the
//! record carries the last one forward through failed runs. A record a run wrote as it
//! started (`"finished": false`) is a run going on while its process is alive (`kill(pid,
//! 0)`: the patrol must see the jobs' processes, as it does on their host), else a run
//! that did not finish: killed, or the machine stopped under it, which counts as exit 4. Its age is measured from
//! when it *finished* (start + duration), so tonight's run, while it is still running,
//! does not make last night's look too old.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, FixedOffset};
use serde::Serialize;
use tmpa_core::Root;
use tmpa_maint::{LastSuccess, RunRecord, read_run_record};

use crate::logs::LogSource;
use crate::{Args, Check, FINDINGS_MAX, Perf, Status};

pub use crate::check::TASKS;
/// Tasks whose run record is exported as metrics (`tmpa_job_*`) without a check of their
/// own: tmpclean's runs, for the alert rules (a failing or stopped cleanup), while the
/// checklist keeps its nine items (`tmp_files` already watches what tmpclean leaves).
pub const EXPORTED_ONLY: [&str; 1] = ["tmp_cleanup"];
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
    /// Whether it is going on now (its record says it has not finished, and its process
    /// is alive); its exit code is then not known yet.
    pub running: Option<bool>,
    /// Whether it finished (false: killed, or the machine stopped under it).
    pub last_run_finished: Option<bool>,
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

/// Whether the process `pid` exists (`kill(pid, 0)`: answered without /proc; a process
/// of another user answers EPERM, which is alive too).
fn alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    !matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
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
    check(root, &spec, now, &[]).1
}

/// Runs one job check, reading each of the job's `logs`.
pub fn check(root: &Root, spec: &Spec, now: SystemTime, logs: &[LogSource]) -> (Check, JobInfo) {
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
            let running = !r.finished && r.pid.is_some_and(alive);
            info.running = Some(running);
            info.last_run_finished = Some(r.finished || running);
            info.last_run_dry_run = Some(r.dry_run);
            let dry = if r.dry_run { " (dry run)" } else { "" };
            let last_run = if running {
                format!(
                    "a run{dry} started {} is going on (pid {})",
                    r.started_at,
                    r.pid.unwrap_or_default()
                )
            } else {
                info.last_run_exit_code = Some(r.exit_code);
                if r.finished {
                    format!("last run {} exit {}{dry}", r.started_at, r.exit_code)
                } else {
                    format!(
                        "last run {}{dry} did not finish (killed, or the machine stopped; \
                         counted as exit {})",
                        r.started_at, r.exit_code
                    )
                }
            };
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
    let mut unread = Vec::new();
    for source in logs {
        match source.scan(now) {
            Ok(scan) => {
                info.log_violations += scan.violations.len();
                if !scan.violations.is_empty() {
                    status = Status::Critical;
                    detail = format!(
                        "{} deletion(s) after a failed verification in {source}; {detail}",
                        scan.violations.len(),
                    );
                    let room = FINDINGS_MAX.saturating_sub(findings.len());
                    findings.extend(
                        scan.violations
                            .into_iter()
                            .take(room)
                            .map(|v| format!("{source}: {v}")),
                    );
                }
                // The tail of the last source that has one.
                if !scan.tail.is_empty() {
                    tail = scan.tail;
                }
            }
            Err(e) => unread.push(format!("{source}: {e}")),
        }
    }
    if status == Status::Ok {
        tail.clear();
    }
    if !unread.is_empty() {
        // The log is where a deletion that went wrong would show: not reading it is not
        // "none went wrong".
        if status == Status::Ok {
            status = Status::Warning;
        }
        detail.push_str(&format!("; cannot read its log: {}", unread.join("; ")));
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
    // A run going on has no outcome yet: the last success stands.
    let running = !r.finished && r.pid.is_some_and(alive);
    let base = if running {
        format!("{base}; {last_run}")
    } else {
        base
    };
    if !success.is_this_run && r.exit_code >= 2 && !running {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_well() {
        assert_eq!(fmt_age(40.0), "40s");
        assert_eq!(fmt_age(3700.0), "1h 1m");
        assert_eq!(fmt_age(90_000.0), "1d 1h");
    }
}
