//! The documented rollout, as a new operator does it on the installed package (the issue
//! "day three for the operator"): install into a throwaway root, configure
//! /etc/default/tmpa (the tree's owner as `TMPA_USER`, no service check: a host without
//! supervisord), the patrol alone, three nights of dry runs, a plan saved where only root
//! can read it and applied, real runs, a backup snapshot, a run killed midway, a bad value
//! in the configuration. Each step is checked against what docs/OPERATIONS.md says the
//! operator sees, and the metrics the patrol wrote along the way go through the shipped
//! alert rules (`promtool test rules`): quiet through the rollout and the real runs, and
//! TmpaJobFailing within the hour of the kill and of the bad value.
//!
//! The nights are days of a clock moved ahead with libfaketime (`FAKETIME=+Nd`); file
//! times stay the file system's, so the tree ages as the days pass.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tmpa_tests::{Run, Tree, age};

use super::{deb, dpkg, dpkg_root};

/// The backend's user in this test: `nobody`, the tree's owner.
const OWNER: (u32, u32) = (65_534, 65_534);
const DAY: i64 = 86_400;
/// The faked clock: libfaketime, as tmpa_tests uses it.
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The installed package in a throwaway root, and the operator's view of it.
struct Host {
    root: tempfile::TempDir,
    /// The data tree (`TMPA_ROOT`).
    tree: Tree,
    /// node_exporter's textfile directory (`TMPA_METRICS_DIR`).
    metrics: tempfile::TempDir,
    /// Each patrol's metrics file, with the day it was written on.
    samples: Vec<(i64, String)>,
}

impl Host {
    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    /// Sets `name=value` in the installed /etc/default/tmpa, as an operator edits it.
    fn configure(&self, name: &str, value: &str) {
        let conf = self.path("etc/default/tmpa");
        let text = fs::read_to_string(&conf).expect("config");
        let prefix = format!("{name}=");
        assert!(
            text.lines().any(|l| l.starts_with(&prefix)),
            "{name} is a setting of the shipped file"
        );
        let edited: String = text
            .lines()
            .map(|l| {
                if l.starts_with(&prefix) {
                    format!("{prefix}{value}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        fs::write(&conf, edited).expect("edit");
    }

    /// The command of `program`'s line in the installed /etc/cron.d/tmpa, uncommented as
    /// the operator uncomments it, with the installed paths moved into the throwaway root.
    fn cron_command(&self, program: &str) -> String {
        let cron_d = fs::read_to_string(self.path("etc/cron.d/tmpa")).expect("cron.d");
        let guard = format!("test -x /usr/bin/{program} &&");
        let line = cron_d
            .lines()
            .find(|l| l.starts_with('#') && l.contains(&guard))
            .unwrap_or_else(|| panic!("no line for {program}:\n{cron_d}"));
        let command = &line[line.find(" root ").expect("the user column") + 6..];
        let r = self.root.path().display().to_string();
        command
            .replace("/usr/bin/", &format!("{r}/usr/bin/"))
            .replace("/etc/default/tmpa", &format!("{r}/etc/default/tmpa"))
            .replace("/var/log/tmpa/", &format!("{r}/var/log/tmpa/"))
    }

    /// Runs `program`'s cron line with sh, as root's cron does, on `day`.
    fn cron(&self, program: &str, day: i64) -> Run {
        faked(
            Command::new("sh").arg("-c").arg(self.cron_command(program)),
            day,
        )
        .env_clear_keep()
        .output()
        .expect("sh")
        .into()
    }

    /// `sudo tmpa PROGRAM ARGS` on `day`, with the installed wrapper and programs.
    fn tmpa(&self, args: &[&str], day: i64) -> Run {
        faked(
            Command::new("sh")
                .arg(self.path("usr/sbin/tmpa"))
                .args(args)
                .env("TMPA_CONFIG_FILE", self.path("etc/default/tmpa"))
                .env("TMPA_BIN_DIR", self.path("usr/bin")),
            day,
        )
        .output()
        .expect("tmpa")
        .into()
    }

    /// The patrol's cron line on `day`; keeps the metrics it wrote, and returns the run
    /// and the lines it added to its log.
    fn patrol(&mut self, day: i64) -> (Run, usize) {
        let log = self.path("var/log/tmpa/patrol.log");
        let before = fs::read_to_string(&log).map_or(0, |t| t.lines().count());
        let r = self.cron("tmpa-patrol", day);
        let after = fs::read_to_string(&log).map_or(0, |t| t.lines().count());
        let prom = fs::read_to_string(self.metrics.path().join("tmpa.prom")).expect("metrics");
        self.samples.push((day, prom));
        (r, after - before)
    }

    /// The last lines a job's cron log got from its last run.
    fn log(&self, job: &str) -> String {
        fs::read_to_string(self.path(&format!("var/log/tmpa/{job}.log"))).unwrap_or_default()
    }

    /// The last run of `job`: its log from its last first line on.
    fn last_run(&self, job: &str, program: &str) -> String {
        let log = self.log(job);
        let at = log
            .match_indices(&format!(" {program} "))
            .map(|(i, _)| log[..i].rfind('\n').map_or(0, |n| n + 1))
            .filter(|&start| {
                let line = &log[start..];
                line.split_whitespace()
                    .nth(3)
                    .is_some_and(|w| w.starts_with("root="))
            })
            .last()
            .unwrap_or(0);
        log[at..].to_owned()
    }

    /// The nightly runs of archival and tmpclean on `day`, as their cron lines run them
    /// (the night's compaction is the caller's): each exits 0.
    fn other_jobs(&self, day: i64) {
        for (program, job) in [("tmpa-archive", "archive"), ("tmpa-tmpclean", "tmpclean")] {
            let r = self.cron(program, day);
            assert_eq!(r.code, 0, "{program} day {day}: {r:?}\n{}", self.log(job));
        }
    }

    fn record(&self, task: &str) -> Value {
        let p = self.tree.root().join(format!(".tmpa/runs/{task}.json"));
        serde_json::from_slice(&fs::read(&p).expect("run record")).expect("json")
    }
}

/// `cmd` with its clock `day` days ahead (libfaketime); file times stay real.
fn faked(cmd: &mut Command, day: i64) -> &mut Command {
    cmd.env("LD_PRELOAD", FAKETIME_LIB)
        .env("FAKETIME", format!("+{day}d"))
        .env("NO_FAKE_STAT", "1")
}

/// A clean environment for a cron line, as cron gives one (its PATH), keeping only the
/// clock the test set.
trait CronEnv {
    fn env_clear_keep(&mut self) -> &mut Self;
}

impl CronEnv for Command {
    fn env_clear_keep(&mut self) -> &mut Self {
        let keep: Vec<(String, String)> = self
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_str()?.to_owned(), v?.to_str()?.to_owned())))
            .collect();
        self.env_clear().env("PATH", "/usr/bin:/bin").envs(keep)
    }
}

/// A day `offset` days from today, as the tree names its day directories.
fn day_name(offset: i64) -> String {
    (chrono::Local::now().date_naive() + chrono::Duration::days(offset))
        .format("%Y-%m-%d")
        .to_string()
}

/// The metric samples of a patrol's file: series (name and labels) → value.
fn samples(text: &str) -> BTreeMap<(String, BTreeMap<String, String>), f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("series value");
            let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
            let labels = labels
                .strip_suffix('}')
                .expect("}")
                .split("\",")
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once("=\"").expect("label");
                    (k.to_owned(), v.trim_end_matches('"').to_owned())
                })
                .collect();
            ((name.to_owned(), labels), value.parse().expect("value"))
        })
        .collect()
}

/// The value the patrol's file of `text` has for `name{task}`.
fn job_metric(text: &str, name: &str, task: &str) -> Option<f64> {
    samples(text)
        .into_iter()
        .find(|((n, l), _)| n == name && l.get("task").is_some_and(|t| t == task))
        .map(|(_, v)| v)
}

/// promtool's input series from the patrols' files, one sample every five minutes from
/// day 0 to `end_secs`: what node_exporter served at each instant (the newest file; the
/// patrol runs every five minutes, so its own time is the instant's), with the times
/// mapped to promtool's clock (0 at the first patrol).
fn input_series(taken: &[(i64, String)], end_secs: i64) -> Vec<Value> {
    let parsed: Vec<(i64, BTreeMap<_, f64>)> = taken
        .iter()
        .map(|(day, text)| (*day, samples(text)))
        .collect();
    let base = parsed[0]
        .1
        .iter()
        .find(|((n, _), _)| n == "tmpa_patrol_last_run_timestamp_seconds")
        .map(|(_, v)| *v)
        .expect("the patrol's clock");
    let keys: BTreeSet<(String, BTreeMap<String, String>)> =
        parsed.iter().flat_map(|(_, s)| s.keys().cloned()).collect();
    keys.into_iter()
        .map(|key| {
            let values: Vec<String> = (0..=end_secs / 300)
                .map(|i| {
                    let t = i * 300;
                    let Some((_, s)) = parsed.iter().rev().find(|(day, _)| day * DAY <= t) else {
                        return "_".to_owned();
                    };
                    match s.get(&key) {
                        None => "_".to_owned(),
                        Some(_) if key.0 == "tmpa_patrol_last_run_timestamp_seconds" => {
                            t.to_string()
                        }
                        Some(v) if key.0.ends_with("_timestamp_seconds") => {
                            ((v - base).round() as i64).to_string()
                        }
                        Some(v) => v.to_string(),
                    }
                })
                .collect();
            let mut labels = key.1.clone();
            labels.insert("instance".into(), "db1".into());
            labels.insert("job".into(), "node".into());
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            json!({"series": format!("{}{{{}}}", key.0, l.join(",")), "values": values.join(" ")})
        })
        .collect()
}

/// At `eval`, exactly `firing` fire (by name and task), and nothing else fires or waits
/// (`firing` empty: no alert at all, not even pending).
fn expect(eval: &str, firing: &[(&str, &str)]) -> Value {
    if firing.is_empty() {
        return json!({"expr": "ALERTS", "eval_time": eval, "exp_samples": []});
    }
    let samples: Vec<Value> = firing
        .iter()
        .map(|(name, task)| {
            json!({"labels": format!(
                "ALERTS{{alertname=\"{name}\", alertstate=\"firing\", instance=\"db1\", job=\"node\", severity=\"critical\", task=\"{task}\"}}"
            ), "value": 1})
        })
        .collect();
    json!({"expr": "ALERTS", "eval_time": eval, "exp_samples": samples})
}

/// The shipped alert rules, installed by the package, on these series.
fn promtool_test(rules: &Path, series: Vec<Value>, checks: Vec<Value>) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rollout.test.yml");
    let doc = json!({
        "rule_files": [rules],
        "evaluation_interval": "1m",
        "tests": [{"interval": "5m", "input_series": series, "promql_expr_test": checks}],
    });
    fs::write(&file, serde_json::to_vec(&doc).expect("json")).expect("write");
    Command::new("promtool")
        .args(["test", "rules"])
        .arg(&file)
        .output()
        .expect("promtool is missing: apt-get install prometheus")
        .into()
}

/// The first number after `marker` in `text` (`about 15` → 15), commas allowed.
fn number_after(text: &str, marker: &str) -> u64 {
    let at = text
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker:?} in {text}"))
        + marker.len();
    text[at..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("no number after {marker:?}"))
}

/// The rollout of docs/OPERATIONS.md on the installed package, each step checked against
/// what the page says the operator will see, and the shipped alert rules run on the
/// metrics the patrol wrote meanwhile.
#[test]
fn the_documented_rollout_as_a_new_operator() {
    let Some(()) = tmpa_tests::prerequisite(
        tmpa_tests::is_root(),
        "needs root (dpkg into a throwaway root, jobs that become the tree's owner)",
    ) else {
        return;
    };
    // Installing: the package (built once for the packaging tests) into a throwaway root.
    let deb = deb().display().to_string();
    let started = Instant::now();
    let root = dpkg_root();
    dpkg(root.path(), &["-i", &deb]);
    let mut host = Host {
        root,
        tree: Tree::new(),
        metrics: tempfile::tempdir().expect("metrics"),
        samples: Vec::new(),
    };

    // The backend's tree: past days of events, today's, an old session and a fresh one,
    // all the owner's; node_exporter's directory, which the owner may write (OPERATIONS.md
    // gives it with setfacl; here, its owner).
    let t = &host.tree;
    for d in [-3, -2, -1, 0] {
        for i in 0..3 {
            t.event(&day_name(d), &format!("d{}e{i}", d + 3), "u1", 3, 4);
        }
    }
    let old = t.file(
        "chat_history/u1/sessions/s-old.json",
        br#"{"messages":[1]}"#,
    );
    age(&old, Duration::from_secs(60 * DAY as u64));
    t.file(
        "chat_history/u1/sessions/s-new.json",
        br#"{"messages":[2]}"#,
    );
    let tree_root = t.root().to_path_buf();
    tmpa_tests::chown_tree(&tree_root, OWNER.0, OWNER.1);
    std::os::unix::fs::chown(host.metrics.path(), Some(OWNER.0), Some(OWNER.1)).expect("chown");

    // Configuring: the root, the tree's owner, the metrics directory. TMPA_SERVICE_CMD
    // stays empty, as shipped: this host has no supervisord.
    host.configure("TMPA_ROOT", &tree_root.display().to_string());
    host.configure("TMPA_USER", "nobody");
    host.configure(
        "TMPA_METRICS_DIR",
        &host.metrics.path().display().to_string(),
    );
    let conf = fs::read_to_string(host.path("etc/default/tmpa")).expect("config");
    assert!(
        conf.contains("\nTMPA_SERVICE_CMD=\n"),
        "no service check as shipped"
    );
    let data_before = host.tree.snapshot();

    // Day 0, the patrol alone: the job checks critical ("never run"), the service check
    // "not configured", skipped.
    let (r, _) = host.patrol(0);
    assert_eq!(r.code, 2, "critical: no job has run: {r:?}");
    let log = host.log("patrol");
    assert!(
        log.contains("compact_events_last_success")
            && log.contains("no run record: compact_events has never run"),
        "{log}"
    );
    assert!(log.contains("not configured"), "{log}");
    let day0 = &host.samples[0].1;
    assert!(
        day0.contains("tmpa_check_skipped{check=\"service\"} 1"),
        "{day0}"
    );
    assert!(day0.contains("tmpa_patrol_up 1"), "{day0}");

    // Days 1 to 3: the three dry runs a night. Each log's first line says DRY-RUN, the
    // tree outside .tmpa/ is as it was, every record says dry_run; the plans of archival
    // and tmpclean settle ("the same as the previous dry run's (3 dry runs in a row)"),
    // compaction's changes every night (a new day's events).
    let mut rollout_lines = 0;
    for day in 1..=3 {
        for i in 0..3 {
            host.tree
                .event(&day_name(day), &format!("n{day}e{i}"), "u2", 1, 1);
        }
        tmpa_tests::chown_tree(&tree_root.join("token_stats"), OWNER.0, OWNER.1);
        for (program, job) in [
            ("tmpa-compact", "compact"),
            ("tmpa-archive", "archive"),
            ("tmpa-tmpclean", "tmpclean"),
        ] {
            let r = host.cron(program, day);
            assert_eq!(r.code, 0, "{program} day {day}: {r:?}\n{}", host.log(job));
            let run = host.last_run(job, program);
            let first = run.lines().next().expect("a first line");
            assert!(
                first.contains(&format!(" {program} DRY-RUN root=")),
                "{first}"
            );
            let note = run.lines().last().expect("the plan note");
            let settled = format!("the same as the previous dry run's ({day} dry runs in a row)");
            match (program, day) {
                (_, 1) => assert!(note.contains("no earlier dry run"), "{note}"),
                ("tmpa-compact", _) => assert!(note.contains("differs from"), "{note}"),
                _ => assert!(note.contains(&settled), "{program} day {day}: {note}"),
            }
        }
        for task in ["compact_events", "archive_history", "tmp_cleanup"] {
            assert_eq!(host.record(task)["dry_run"], true, "{task}");
        }
        let (r, lines) = host.patrol(day);
        assert_eq!(r.code, 2, "the job checks, critical by design: {r:?}");
        rollout_lines = rollout_lines.max(lines);
    }
    let changed: Vec<_> = host
        .tree
        .snapshot()
        .into_iter()
        .filter(|(p, _)| !data_before.contains_key(p) && !p.starts_with("token_stats"))
        .collect();
    assert!(
        changed.is_empty(),
        "the dry runs changed the tree: {changed:?}"
    );
    assert!(old.exists());

    // Review the plan, saved where only root can read it, by the job's user.
    let private = host.path("root");
    fs::create_dir_all(&private).expect("mkdir");
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).expect("chmod");
    let plan = private.join("archive-plan.json");
    let plan_arg = plan.display().to_string();
    let r = host.tmpa(&["archive", "--dry-run", "--save-plan", &plan_arg], 3);
    assert_eq!(r.code, 0, "{r:?}");
    let saved: Value = serde_json::from_slice(&fs::read(&plan).expect("plan")).expect("plan");
    assert_eq!(
        saved["deletions"].as_array().map(Vec::len),
        Some(1),
        "{saved}"
    );

    // Day 4: real runs. One line each (TMPA_*_MODE=); archival applies the reviewed plan
    // first (`sudo tmpa archive --apply-plan`); the logs' first lines no longer say
    // DRY-RUN; receipts; a snapshot for the backup into a directory only root can reach,
    // after which the jobs (as the owner) still run; the patrol is green.
    for mode in [
        "TMPA_COMPACT_MODE",
        "TMPA_ARCHIVE_MODE",
        "TMPA_TMPCLEAN_MODE",
    ] {
        host.configure(mode, "");
    }
    // A temporary a writer left beside its final file (stale by the fourth day).
    host.tree.event(&day_name(-2), "stale", "u1", 1, 1);
    let tmp = host.tree.file(
        format!("token_stats/{}/evt_stale.json.tmp.9", day_name(-2)),
        b"{",
    );
    tmpa_tests::chown_tree(&tree_root.join("token_stats"), OWNER.0, OWNER.1);
    let r = host.tmpa(&["archive", "--apply-plan", &plan_arg], 4);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!old.exists(), "the planned session was archived");
    for (program, job) in [
        ("tmpa-compact", "compact"),
        ("tmpa-archive", "archive"),
        ("tmpa-tmpclean", "tmpclean"),
    ] {
        let r = host.cron(program, 4);
        assert_eq!(r.code, 0, "{program}: {r:?}\n{}", host.log(job));
        let first = host.last_run(job, program);
        let first = first.lines().next().expect("first line");
        assert!(
            !first.contains("DRY-RUN") && first.contains(" root="),
            "{first}"
        );
    }
    assert!(
        !tmp.exists(),
        "tmpclean removed the stale temporary beside its final file"
    );
    assert!(
        tmpa_tests::receipt_lines(&tree_root, "compact_events").len() >= 9,
        "receipts of the deleted loose events"
    );
    let snap = private.join("snap");
    let r = host.tmpa(&["snapshot", "--to", &snap.display().to_string()], 4);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(snap.join(".tmpa/snapshot.json").is_file());
    let (r, healthy_lines) = host.patrol(4);
    assert_eq!(
        r.code,
        0,
        "green after the first real night: {r:?}\n{}",
        host.log("patrol")
    );

    // Day 5: a compaction killed midway (paced, to be killed while it runs): the patrol
    // says it did not finish, and exports exit 4.
    host.configure("TMPA_PACE", "60s");
    for i in 0..40 {
        host.tree.event(&day_name(4), &format!("k{i}"), "u1", 1, 1);
    }
    tmpa_tests::chown_tree(&tree_root.join("token_stats"), OWNER.0, OWNER.1);
    let mut job = faked(
        Command::new("sh")
            .arg("-c")
            .arg(host.cron_command("tmpa-compact")),
        5,
    )
    .env_clear_keep()
    .spawn()
    .expect("sh");
    let until = Instant::now() + Duration::from_secs(60);
    let pid = loop {
        let r = fs::read(tree_root.join(".tmpa/runs/compact_events.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        if let Some(pid) = r
            .filter(|r| r["finished"] == false)
            .and_then(|r| r["pid"].as_u64())
        {
            break pid;
        }
        assert!(Instant::now() < until, "the compaction never started");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .expect("kill")
            .success()
    );
    let _ = job.wait();
    tmpa_tests::faketime_leftovers_removed();
    host.other_jobs(5);
    let (_, _) = host.patrol(5);
    assert!(
        host.log("patrol").contains("did not finish"),
        "{}",
        host.log("patrol")
    );
    let killed = &host.samples.last().expect("sample").1;
    assert_eq!(
        job_metric(killed, "tmpa_job_last_run_exit_code", "compact_events"),
        Some(4.0)
    );

    // Day 6: the next night finishes the job; green again.
    host.configure("TMPA_PACE", "20ms");
    let r = host.cron("tmpa-compact", 6);
    assert_eq!(r.code, 0, "{r:?}\n{}", host.log("compact"));
    host.other_jobs(6);
    let (r, _) = host.patrol(6);
    assert_eq!(r.code, 0, "{r:?}");

    // Day 7: a bad value in /etc/default/tmpa. The run exits 2, its log has the first
    // line, clap's message naming the value, and the last line; the record says 2.
    host.configure("TMPA_COMPACT_MODE", "--dryrun");
    let r = host.cron("tmpa-compact", 7);
    assert_eq!(r.code, 2, "{r:?}");
    let run = host.last_run("compact", "tmpa-compact");
    assert!(
        run.contains("--dryrun") && run.contains("finished: exit=2 (usage error)"),
        "{run}"
    );
    assert_eq!(host.record("compact_events")["exit_code"], 2);
    host.other_jobs(7);
    host.patrol(7);

    // The shipped rules on what the patrol wrote: nothing through the rollout, the real
    // runs and the backup; TmpaJobFailing within the hour of the kill and of the bad
    // value, and quiet again once a night went well.
    let rules = host.path("usr/share/tmpa/monitoring/tmpa.rules.yml");
    let series = input_series(&host.samples, 7 * DAY + 3600);
    let mut checks: Vec<Value> = ["0m", "12h", "25h", "49h", "73h", "95h", "97h", "119h"]
        .iter()
        .map(|t| expect(t, &[]))
        .collect();
    checks.push(expect("120h20m", &[("TmpaJobFailing", "compact_events")]));
    checks.push(expect("144h30m", &[]));
    checks.push(expect("168h20m", &[("TmpaJobFailing", "compact_events")]));
    let r = promtool_test(&rules, series, checks);
    assert_eq!(
        r.code, 0,
        "promtool test rules:\n{}\n{}",
        r.stdout, r.stderr
    );

    // The patrol's log, as logrotate's comment sizes it: lines a run, healthy and with
    // the job checks' log tails (the dry-run nights), within the numbers it gives.
    println!("patrol log: {healthy_lines} lines a healthy run, {rollout_lines} in the rollout");
    let logrotate = fs::read_to_string(host.path("etc/logrotate.d/tmpa")).expect("logrotate");
    let (low, high) = (
        number_after(&logrotate, "a day: about"),
        number_after(&logrotate, "to about"),
    );
    for (what, lines) in [("healthy", healthy_lines), ("rollout", rollout_lines)] {
        let per_day = lines as u64 * 288;
        assert!(
            per_day * 10 >= low * 7 && per_day * 10 <= high * 13,
            "{what}: {lines} lines a patrol, {per_day} a day; logrotate says {low} to {high}"
        );
    }
    println!(
        "rollout: {} patrols, {healthy_lines}/{rollout_lines} lines each, in {:.1} s (package built before)",
        host.samples.len(),
        started.elapsed().as_secs_f64()
    );
}
