//! cron/monitoring/: the Prometheus alert rules and the Grafana dashboard the package
//! ships, checked by promtool and tested (`promtool test rules`) against the series a real
//! tmpa-patrol writes (as shipped: no service check configured, as on a host without
//! supervisord) after real runs of the programs: quiet through a correct dry-run rollout
//! and a healthy real period, firing when a job fails (a bad flag, a run killed before it
//! finished), stops, stops succeeding or deletes after a failed verification, when the
//! patrol stops or its metrics never arrive. The metrics file passes `promtool check
//! metrics`. (packaging.rs runs the same rules on the series of the documented rollout of
//! the installed package.)

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use tmpa_tests::{Run, Tree};

/// The scenarios' sampling interval (the patrol's schedule) and length in steps (3 days).
const STEP_SECS: i64 = 300;
const STEPS: i64 = 3 * 86_400 / STEP_SECS;
/// What node_exporter's scrape adds to every series.
const TARGET: [(&str, &str); 2] = [("instance", "db1"), ("job", "node")];

fn monitoring_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .join("cron/monitoring")
}

/// promtool, which this machine and CI must have: a missing one fails the test.
fn promtool() -> Command {
    let ok = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "promtool is missing: apt-get install prometheus (tests/check.sh installs it)"
    );
    Command::new("promtool")
}

/// One sample of the patrol's metrics file.
#[derive(Clone, Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text exposition format as the patrol writes it (no timestamps).
fn parse_samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}').expect("closing brace")),
            None => (series, ""),
        };
        let labels = labels
            .split("\",")
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once("=\"").expect("label");
                (k.to_owned(), v.trim_end_matches('"').to_owned())
            })
            .collect();
        out.push(Sample {
            name: name.to_owned(),
            labels,
            value: value.parse().expect("value"),
        });
    }
    out
}

/// A tree in the state `runs` leaves it: each maintenance program run on it as cron
/// would (`extra` flags: `--dry-run` for the rollout, none for real runs), then the
/// patrol's metrics, as node_exporter would read them.
fn patrol_after_runs(extra: &[&str]) -> Vec<Sample> {
    let (t, _store) = tree_after_runs(extra);
    parse_samples(&patrol_metrics(&t))
}

/// A tree with a day of events and an archive store, after each maintenance program ran
/// on it with `extra`; and the store.
fn tree_after_runs(extra: &[&str]) -> (Tree, tempfile::TempDir) {
    let t = Tree::new();
    t.event("2026-01-05", "e1", "u1", 3, 4);
    let store = tempfile::tempdir().expect("store");
    t.file(
        "tmpa.toml",
        format!("[archive]\nurl = \"file://{}\"\n", store.path().display()),
    );
    for (program, args) in [
        ("tmpa-compact", vec![]),
        ("tmpa-archive", vec!["--older-than", "30d"]),
        ("tmpa-tmpclean", vec!["--older-than", "24h"]),
    ] {
        let r = t.run(program, &[args.as_slice(), extra].concat());
        assert_eq!(r.code, 0, "{program}: {r:?}");
    }
    (t, store)
}

/// The metrics file the patrol writes for `t`, as the schedule runs it (no service
/// command: none is configured as shipped), with the archive store probed.
fn patrol_metrics(t: &Tree) -> String {
    let out = tempfile::tempdir().expect("out");
    let prom = out.path().join("tmpa.prom");
    let r: Run = t.run(
        "tmpa-patrol",
        &[
            "--check-archive-store",
            "--prometheus",
            prom.to_str().expect("utf-8"),
        ],
    );
    assert!(matches!(r.code, 0..=2), "patrol: {r:?}");
    fs::read_to_string(&prom).expect("metrics")
}

/// A series as promtool writes it, with the scrape's labels.
fn series_text(s: &Sample) -> String {
    let mut labels = s.labels.clone();
    for (k, v) in TARGET {
        labels.insert(k.to_owned(), v.to_owned());
    }
    let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{}{{{}}}", s.name, l.join(","))
}

/// How a series evolves over a scenario: its value at each step (seconds from its start),
/// or None for no sample.
type Timeline<'a> = &'a dyn Fn(&Sample, i64) -> Option<f64>;

/// promtool's input series for the patrol's samples under `timeline`.
fn input_series(samples: &[Sample], timeline: Timeline) -> Vec<Value> {
    samples
        .iter()
        .map(|s| {
            let values: Vec<String> = (0..=STEPS)
                .map(|i| timeline(s, i * STEP_SECS).map_or("_".to_owned(), |v| v.to_string()))
                .collect();
            json!({"series": series_text(s), "values": values.join(" ")})
        })
        .collect()
}

/// The patrol's samples as they were, every five minutes: the patrol's own time advancing
/// with the clock, the jobs run again daily at the hour they last ran (`now` is the
/// patrol's clock when it wrote them, mapped to the scenario's 0; archive_history weekly).
fn as_scheduled(now: f64) -> impl Fn(&Sample, i64) -> Option<f64> {
    move |s: &Sample, t: i64| {
        let t = t as f64;
        let task = s.labels.get("task").map(String::as_str);
        Some(match s.name.as_str() {
            "tmpa_patrol_last_run_timestamp_seconds" => t,
            n if n.ends_with("_timestamp_seconds") => {
                let first = s.value - now; // <= 0: before the scenario started
                let period = if task == Some("archive_history") {
                    7.0 * 86_400.0
                } else {
                    86_400.0
                };
                first + ((t - first) / period).floor() * period
            }
            _ => s.value,
        })
    }
}

/// The value of the patrol's own clock in `samples`.
fn patrol_now(samples: &[Sample]) -> f64 {
    samples
        .iter()
        .find(|s| s.name == "tmpa_patrol_last_run_timestamp_seconds")
        .expect("the patrol's clock")
        .value
}

/// At `eval`, no alert is firing or even pending.
fn expect_quiet(eval: &str) -> Value {
    json!({"expr": "ALERTS", "eval_time": eval, "exp_samples": []})
}

/// An alert expected to fire: its name, its labels besides the name, state and severity,
/// and its severity.
type Firing<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

/// At `eval`, exactly the alerts `firing` fire (others may be pending, on their way to a
/// later check).
fn expect_firing(eval: &str, firing: &[Firing]) -> Value {
    let samples: Vec<Value> = firing
        .iter()
        .map(|(name, extra, severity)| {
            let mut labels: BTreeMap<&str, &str> = BTreeMap::from([
                ("alertname", *name),
                ("alertstate", "firing"),
                ("severity", *severity),
            ]);
            labels.extend(extra.iter().copied());
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            json!({"labels": format!("ALERTS{{{}}}", l.join(", ")), "value": 1})
        })
        .collect();
    json!({"expr": "ALERTS{alertstate=\"firing\"}", "eval_time": eval, "exp_samples": samples})
}

/// A real compaction of `t` (a past day of loose events), killed with SIGKILL once it has
/// started (its run record says it has not finished): paced to a minute a step, so that
/// it is still going when the signal comes.
fn killed_compaction(t: &Tree) {
    for i in 0..40 {
        t.event("2026-01-06", &format!("k{i}"), "u1", 1, 1);
    }
    let mut child = tmpa_tests::bin("tmpa-compact")
        .arg("--root")
        .arg(t.root())
        .args(["--pace", "60s"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("tmpa-compact");
    let record = t.root().join(".tmpa/runs/compact_events.json");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let started = fs::read(&record)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|r| r["finished"] == false && r["dry_run"] == false);
        if started {
            break;
        }
        assert!(std::time::Instant::now() < until, "the run never started");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().expect("kill");
    child.wait().expect("wait");
}

/// Runs `promtool test rules` on the shipped rules with these test groups.
fn promtool_test(tests: Vec<Value>) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("tmpa.test.yml");
    let doc = json!({
        "rule_files": [monitoring_dir().join("tmpa.rules.yml")],
        "evaluation_interval": "1m",
        "tests": tests,
    });
    // JSON is YAML: promtool reads it as it is.
    fs::write(&file, serde_json::to_vec_pretty(&doc).expect("json")).expect("write");
    promtool()
        .args(["test", "rules"])
        .arg(&file)
        .output()
        .expect("promtool")
        .into()
}

/// A test group: these series every five minutes, these expectations.
fn group(series: Vec<Value>, expectations: Vec<Value>) -> Value {
    json!({"interval": "5m", "input_series": series, "promql_expr_test": expectations})
}

/// promtool accepts the shipped rules; each alert has a `for:` (but the one that must
/// never wait), a severity and a runbook that is a section of OPERATIONS.md.
#[test]
fn alert_rules_pass_promtool_and_point_into_operations() {
    let rules = monitoring_dir().join("tmpa.rules.yml");
    let r: Run = promtool()
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool")
        .into();
    assert_eq!(r.code, 0, "{r:?}");
    let text = fs::read_to_string(&rules).expect("rules");
    let ops =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/OPERATIONS.md"))
            .expect("OPERATIONS.md");
    let alerts: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 10, "{alerts:?}");
    let repository = workspace_repository();
    for (i, alert) in alerts.iter().enumerate() {
        let body = text.split("- alert: ").nth(i + 1).expect("body");
        // A link an Alertmanager or a pager can open, from wherever Prometheus runs.
        assert!(
            body.contains(&format!(
                "runbook_url: \"{repository}/blob/main/docs/OPERATIONS.md#"
            )),
            "{alert}: runbook_url into the repository's OPERATIONS.md"
        );
        assert!(
            body.contains("\n        for: ") || *alert == "TmpaDeletionAfterFailedVerification",
            "{alert}: no for:"
        );
        assert!(body.contains("severity: "), "{alert}: no severity");
        let anchor = alert.to_ascii_lowercase();
        assert!(
            body.contains(&format!("OPERATIONS.md#{anchor}\"")),
            "{alert}: runbook"
        );
        assert!(
            ops.contains(&format!("\n#### {alert}\n")),
            "OPERATIONS.md has no section #### {alert}"
        );
    }
}

/// The workspace's `repository` (Cargo.toml), where the runbook links point.
fn workspace_repository() -> String {
    let toml = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml"))
        .expect("Cargo.toml");
    toml.lines()
        .find_map(|l| l.strip_prefix("repository = \""))
        .and_then(|r| r.strip_suffix('"'))
        .expect("repository in [workspace.package]")
        .to_owned()
}

/// The patrol's metrics file passes `promtool check metrics` (names, units, HELP and
/// TYPE) after dry runs and after real runs; the service check, not configured as
/// shipped, is exported as skipped.
#[test]
fn patrol_metrics_pass_promtool_check_metrics() {
    for extra in [&["--dry-run"][..], &[]] {
        let (t, _store) = tree_after_runs(extra);
        let text = patrol_metrics(&t);
        let mut child = promtool()
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool");
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), text.as_bytes())
            .expect("write");
        let r: Run = child.wait_with_output().expect("promtool").into();
        assert_eq!(
            r.code, 0,
            "promtool check metrics:\n{}{}\n{text}",
            r.stdout, r.stderr
        );
        assert!(
            text.contains("tmpa_check_skipped{check=\"service\"} 1"),
            "{text}"
        );
    }
}

/// Every metric the rules and the dashboard query is one the patrol really writes (after
/// dry runs or real runs, with the archive store probed): a renamed metric would leave an
/// alert that can never fire.
#[test]
fn rules_and_dashboard_query_only_series_the_patrol_writes() {
    let written: BTreeSet<String> = patrol_after_runs(&[])
        .into_iter()
        .chain(patrol_after_runs(&["--dry-run"]))
        .map(|s| s.name)
        .collect();
    for file in ["tmpa.rules.yml", "tmpa-dashboard.json"] {
        let text = fs::read_to_string(monitoring_dir().join(file)).expect("read");
        let used: BTreeSet<String> = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("tmpa_") && !w.ends_with('_'))
            .map(str::to_owned)
            .collect();
        assert!(!used.is_empty(), "{file} queries nothing");
        let unknown: Vec<&String> = used.difference(&written).collect();
        assert!(
            unknown.is_empty(),
            "{file} queries {unknown:?}, which the patrol does not write ({written:?})"
        );
    }
    let dashboard: Value = serde_json::from_str(
        &fs::read_to_string(monitoring_dir().join("tmpa-dashboard.json")).expect("read"),
    )
    .expect("the dashboard is JSON");
    assert!(
        dashboard["panels"].as_array().is_some_and(|p| p.len() >= 4),
        "{dashboard:#}"
    );
}

/// Three days of the documented rollout (the patrol, then every program in --dry-run, each
/// exiting 0 on schedule; the patrol's own *_last_success checks critical throughout),
/// then three days of healthy real runs: no alert fires or is even pending.
#[test]
fn no_alert_during_a_dry_run_rollout_or_healthy_real_runs() {
    let mut tests = Vec::new();
    for extra in [&["--dry-run"][..], &[]] {
        let samples = patrol_after_runs(extra);
        if extra.is_empty() {
            assert!(samples.iter().any(|s| s.name.contains("last_success")));
        } else {
            let critical = samples.iter().any(|s| {
                s.name == "tmpa_check_status"
                    && s.labels["check"] == "compact_events_last_success"
                    && s.value == 2.0
            });
            assert!(critical, "the rollout's checks are critical: {samples:?}");
        }
        let timeline = as_scheduled(patrol_now(&samples));
        let checks = ["0m", "1h", "12h", "25h", "49h", "71h", "72h"]
            .iter()
            .map(|t| expect_quiet(t))
            .collect();
        tests.push(group(input_series(&samples, &timeline), checks));
    }
    let r = promtool_test(tests);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
}

/// Each way a job or the patrol goes wrong raises its alert (and only it): a run that
/// fails, a job that stops running, a job back in dry runs after real ones (no success in
/// its window), a deletion after a failed verification, a patrol that stops, metrics that
/// never arrive.
#[test]
fn each_failure_raises_its_alert() {
    let rollout = patrol_after_runs(&["--dry-run"]);
    let real = patrol_after_runs(&[]);
    let target: Vec<(&str, &str)> = TARGET.to_vec();
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static str)> {
        target
            .iter()
            .copied()
            .chain(extra.iter().copied())
            .collect()
    };
    let is = |s: &Sample, name: &str, task: &str| {
        s.name == name && s.labels.get("task").is_some_and(|t| t == task)
    };

    // compact_events' dry run fails with exit 4 from the start.
    let now = patrol_now(&rollout);
    let sched = as_scheduled(now);
    let failing = |s: &Sample, t: i64| {
        if is(s, "tmpa_job_last_run_exit_code", "compact_events") {
            Some(4.0)
        } else {
            sched(s, t)
        }
    };
    let compact = with(&[("task", "compact_events")]);
    let failing_group = group(
        input_series(&rollout, &failing),
        vec![expect_firing(
            "15m",
            &[("TmpaJobFailing", &compact, "critical")],
        )],
    );

    // tmp_cleanup's line is commented out again: its last run stays where it was.
    let stopped = |s: &Sample, t: i64| {
        if is(s, "tmpa_job_last_run_timestamp_seconds", "tmp_cleanup") {
            Some(s.value - now)
        } else {
            sched(s, t)
        }
    };
    let tmpclean = with(&[("task", "tmp_cleanup")]);
    let stopped_group = group(
        input_series(&rollout, &stopped),
        vec![
            expect_firing("24h", &[]),
            expect_firing("32h", &[("TmpaJobNotRunning", &tmpclean, "critical")]),
        ],
    );

    // After real runs, compaction goes back to dry runs: it runs, but never succeeds.
    let real_now = patrol_now(&real);
    let real_sched = as_scheduled(real_now);
    let no_success = |s: &Sample, t: i64| {
        if s.name.starts_with("tmpa_job_last_success_timestamp")
            && s.labels["task"] == "compact_events"
        {
            Some(s.value - real_now)
        } else {
            real_sched(s, t)
        }
    };
    let no_success_group = group(
        input_series(&real, &no_success),
        vec![
            expect_firing("24h", &[]),
            expect_firing("32h", &[("TmpaJobNoRecentSuccess", &compact, "critical")]),
        ],
    );

    // The log of compaction shows a deletion after a failed verification.
    let violation = |s: &Sample, t: i64| {
        if is(s, "tmpa_job_log_violations", "compact_events") {
            Some(1.0)
        } else {
            sched(s, t)
        }
    };
    let violation_group = group(
        input_series(&rollout, &violation),
        vec![expect_firing(
            "5m",
            &[("TmpaDeletionAfterFailedVerification", &compact, "critical")],
        )],
    );

    // The patrol stops: node_exporter keeps serving its last file.
    let frozen = |s: &Sample, t: i64| {
        if s.name == "tmpa_patrol_last_run_timestamp_seconds" {
            Some(0.0)
        } else {
            sched(s, t)
        }
    };
    let patrol = with(&[]);
    let frozen_group = group(
        input_series(&rollout, &frozen),
        vec![
            expect_firing("20m", &[]),
            expect_firing("40m", &[("TmpaPatrolStale", &patrol, "warning")]),
        ],
    );

    // The metrics never arrive (written where node_exporter does not look).
    let missing_group = group(
        vec![],
        vec![
            expect_firing("20m", &[]),
            expect_firing("35m", &[("TmpaMetricsMissing", &[], "warning")]),
        ],
    );

    // Real series: compaction's command line refused by clap, as a bad value in
    // /etc/default/tmpa makes it (TMPA_COMPACT_MODE=--dryrun), after the dry runs.
    let (t, _store) = tree_after_runs(&["--dry-run"]);
    let r = t.run("tmpa-compact", &["--dryrun"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stdout.contains("exit=2 (usage error)"),
        "the log's last line: {r:?}"
    );
    let usage = parse_samples(&patrol_metrics(&t));
    let usage_group = group(
        input_series(&usage, &as_scheduled(patrol_now(&usage))),
        vec![expect_firing(
            "20m",
            &[("TmpaJobFailing", &compact, "critical")],
        )],
    );

    // Real series: a real compaction killed before it finished (kill -9).
    let (t, _store) = tree_after_runs(&["--dry-run"]);
    killed_compaction(&t);
    let killed = parse_samples(&patrol_metrics(&t));
    let exported = |name: &str| {
        killed
            .iter()
            .find(|s| is(s, name, "compact_events"))
            .map(|s| s.value)
    };
    assert_eq!(
        exported("tmpa_job_last_run_exit_code"),
        Some(4.0),
        "did not finish"
    );
    assert_eq!(exported("tmpa_job_running"), Some(0.0));
    let killed_group = group(
        input_series(&killed, &as_scheduled(patrol_now(&killed))),
        vec![expect_firing(
            "20m",
            &[("TmpaJobFailing", &compact, "critical")],
        )],
    );

    let r = promtool_test(vec![
        usage_group,
        killed_group,
        failing_group,
        stopped_group,
        no_success_group,
        violation_group,
        frozen_group,
        missing_group,
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
}
