//! `--prometheus FILE`: the report in the text exposition format that node_exporter's
//! textfile collector reads, written atomically (a temporary `FILE.tmp.*`, which the
//! collector ignores since it reads only `*.prom`, renamed over `FILE`).
//!
//! Every metric is a gauge with HELP and TYPE lines; label values are escaped.

use std::fmt::Write as _;
use std::path::Path;

use crate::{Report, Status};

/// A metric family being written: HELP and TYPE once, then its samples.
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn new<'a>(out: &'a mut String, name: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(out, "# TYPE {name} gauge");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let _ = write!(self.out, "{name}");
        if !labels.is_empty() {
            let l: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                .collect();
            let _ = write!(self.out, "{{{}}}", l.join(","));
        }
        let _ = writeln!(self.out, " {}", number(value));
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn number(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x.is_infinite() {
        if x > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if x.fract() == 0.0 && x.abs() < 9.0e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

fn status_value(s: Status) -> f64 {
    f64::from(s.code())
}

fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs() as f64)
}

/// The metrics of a report.
pub fn render(report: &Report) -> String {
    let mut s = String::new();
    head(&mut s, 1.0, status_value(report.status));
    let n = "tmpa_patrol_duration_seconds";
    Family::new(&mut s, n, "Wall time of the patrol.").sample(n, &[], report.duration_secs);

    let n = "tmpa_quarantine_files";
    let (kept, in_flight) = report.quarantine.totals();
    let mut f = Family::new(
        &mut s,
        n,
        "Files in .tmpa/quarantine: kept aside for an operator (area=kept), or left by a killed run (area=in_flight).",
    );
    f.sample(n, &[("area", "kept")], kept as f64);
    f.sample(n, &[("area", "in_flight")], in_flight as f64);

    let n = "tmpa_check_status";
    let mut f = Family::new(
        &mut s,
        n,
        "Status of each patrol check: 0 ok, 1 warning, 2 critical, 3 unknown.",
    );
    for c in &report.checks {
        f.sample(n, &[("check", c.name)], status_value(c.status));
    }
    let n = "tmpa_check_skipped";
    let mut f = Family::new(
        &mut s,
        n,
        "1 when a check is not configured and left out of the overall status.",
    );
    for c in &report.checks {
        f.sample(n, &[("check", c.name)], if c.skipped { 1.0 } else { 0.0 });
    }
    let n = "tmpa_check_value";
    let mut f = Family::new(
        &mut s,
        n,
        "Main number of each check: entries of the largest directory, percent of inodes used, stale temporaries, corrupt files, seconds since the job last succeeded, 1 when the service runs.",
    );
    for c in &report.checks {
        if let Some(v) = c.value {
            f.sample(n, &[("check", c.name)], v);
        }
    }

    if let Some(scrub) = &report.scrub {
        let n = "tmpa_scrub_damaged_files";
        Family::new(
            &mut s,
            n,
            "Compacted days and archives that failed their checksums when --scrub last read them (each the only copy of its data).",
        )
        .sample(n, &[], scrub.damaged as f64);
        let n = "tmpa_scrub_checked_bytes";
        Family::new(&mut s, n, "Bytes --scrub read in this patrol.").sample(
            n,
            &[],
            scrub.bytes_checked as f64,
        );
        if let Some(t) = scrub.last_pass_completed_unix {
            let n = "tmpa_scrub_last_pass_completed_timestamp_seconds";
            Family::new(
                &mut s,
                n,
                "When --scrub last finished reading every compacted day and archive.",
            )
            .sample(n, &[], t as f64);
        }
    }
    if let Some(up) = report.archive_store.reachable {
        let n = "tmpa_archive_store_up";
        let url = report.archive_store.url.as_deref().unwrap_or("");
        Family::new(
            &mut s,
            n,
            "1 when the archive store answered the patrol's probe (--check-archive-store), 0 when it did not.",
        )
        .sample(n, &[("url", url)], if up { 1.0 } else { 0.0 });
    }

    if !report.file_system.kind.is_empty() {
        let n = "tmpa_file_system_info";
        let fs = &report.file_system;
        Family::new(
            &mut s,
            n,
            "Always 1: the root's file system (type) and its family (local, network, fuse, overlay, unknown); off a local disk some promises are weaker (the file_system check says which).",
        )
        .sample(n, &[("type", &fs.kind), ("family", &fs.family)], 1.0);
    }

    let t = &report.tree;
    for (n, help, v) in [
        (
            "tmpa_tree_directories",
            "Directories listed by the patrol's walk.",
            t.dirs,
        ),
        (
            "tmpa_tree_entries",
            "Entries seen by the patrol's walk.",
            t.entries,
        ),
        ("tmpa_inboxes", "Inbox directories.", t.inboxes),
        (
            "tmpa_token_stats_day_directories",
            "Day directories under token_stats/.",
            t.days,
        ),
        (
            "tmpa_json_files",
            "JSON files in the data tree.",
            t.json_files,
        ),
        (
            "tmpa_tmp_files",
            "Temporaries (fresh or stale) in the data tree.",
            t.tmp_files,
        ),
    ] {
        Family::new(&mut s, n, help).sample(n, &[], v as f64);
    }

    type Getter = fn(&crate::jobs::JobInfo) -> Option<f64>;
    let job_metrics: [(&str, &str, Getter); 7] = [
        (
            "tmpa_job_last_success_timestamp_seconds",
            "When the job's last successful real run started (Unix time).",
            |j| j.last_success_unix,
        ),
        (
            "tmpa_job_last_success_duration_seconds",
            "Duration of the job's last successful real run.",
            |j| j.last_success_duration_secs,
        ),
        (
            "tmpa_job_last_success_exit_code",
            "Exit code of the job's last successful real run (0, or 1: needs a look).",
            |j| j.last_success_exit_code.map(f64::from),
        ),
        (
            "tmpa_job_last_run_timestamp_seconds",
            "When the job's last run (dry or real) started (Unix time).",
            |j| j.last_run_unix,
        ),
        (
            "tmpa_job_last_run_duration_seconds",
            "Duration of the job's last run.",
            |j| j.last_run_duration_secs,
        ),
        (
            "tmpa_job_last_run_exit_code",
            "Exit code of the job's last run that is not going on; 4 for one that did not finish (killed).",
            |j| j.last_run_exit_code.map(f64::from),
        ),
        (
            "tmpa_job_running",
            "1 while a run of the job is going on (its record says it has not finished and its process is alive), else 0.",
            |j| j.running.map(|r| if r { 1.0 } else { 0.0 }),
        ),
    ];
    for (n, help, get) in job_metrics {
        let mut f = Family::new(&mut s, n, help);
        for j in &report.jobs {
            if let Some(v) = get(j) {
                f.sample(n, &[("task", j.task)], v);
            }
        }
    }
    let g = &report.growth;
    type ItemGetter = fn(&crate::history::Item) -> Option<f64>;
    let growth_metrics: [(&str, &str, ItemGetter); 3] = [
        (
            "tmpa_growth_since_last_run",
            "Change of a count since the previous patrol (temporaries, corrupt_json, or one of the largest directories).",
            |i| i.delta.map(|d| d as f64),
        ),
        (
            "tmpa_growth_per_hour",
            "Change of a count per hour, over the time since the previous patrol.",
            |i| i.per_hour,
        ),
        (
            "tmpa_growth_streak_runs",
            "Patrols in a row in which a count grew by more than --growth-warning.",
            |i| Some(f64::from(i.streak)),
        ),
    ];
    for (n, help, get) in growth_metrics {
        let mut f = Family::new(&mut s, n, help);
        for i in &g.items {
            if let Some(v) = get(i) {
                let path = i.path.as_deref().unwrap_or("");
                f.sample(n, &[("count", i.what.as_str()), ("path", path)], v);
            }
        }
    }
    let n = "tmpa_job_log_violations";
    let mut f = Family::new(
        &mut s,
        n,
        "Deletions after a failed verification of the same path found in the job's log.",
    );
    for j in &report.jobs {
        f.sample(n, &[("task", j.task)], j.log_violations as f64);
    }
    s
}

fn head(s: &mut String, up: f64, status: f64) {
    let n = "tmpa_patrol_up";
    Family::new(
        s,
        n,
        "1 when the patrol could check the root, 0 when it could not.",
    )
    .sample(n, &[], up);
    let n = "tmpa_patrol_status";
    Family::new(
        s,
        n,
        "Overall patrol status: 0 ok, 1 warning, 2 critical, 3 unknown.",
    )
    .sample(n, &[], status);
    let n = "tmpa_patrol_last_run_timestamp_seconds";
    Family::new(s, n, "When the patrol last ran (Unix time).").sample(n, &[], now_unix());
}

/// The metrics of a patrol that could not check (not a root, bad flags).
pub fn render_down() -> String {
    let mut s = String::new();
    head(&mut s, 0.0, status_value(Status::Unknown));
    s
}

/// Writes `text` to `path` atomically.
///
/// # Errors
/// [`tmpa_core::Error::Io`] naming the path (missing directory, no permission, full disk).
pub fn write(path: &Path, text: &str) -> tmpa_core::Result<()> {
    tmpa_core::write(path, text.as_bytes())
}
