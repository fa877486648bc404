//! tmpa-patrol on real trees: each check in its ok, warning and critical state, the three
//! output shapes (Nagios line, docs/OPERATIONS.md "tmpa-patrol" JSON, Prometheus textfile), the plugin exit codes,
//! the incremental cache, log flagging, and that the data tree is never touched.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tmpa_tests::{Run, Tmpfs, Tree, age, bin, event_json};

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);
/// The nine checks of docs/OPERATIONS.md "tmpa-patrol", the file system and the growth
/// check, in report order.
const CHECKS: [&str; 11] = [
    "service",
    "directories",
    "inbox_files",
    "token_stats_files",
    "inodes",
    "file_system",
    "tmp_files",
    "corrupt_json",
    "compact_events_last_success",
    "archive_history_last_success",
    "growth",
];
const RUNNING: &str =
    "echo 'app                              RUNNING   pid 4242, uptime 3 days, 1:02:03'";

/// Runs the patrol with `--json` and returns the exit code and the document.
fn patrol_json(t: &Tree, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let r = t.run("tmpa-patrol", &all);
    (r.code, r.json())
}

fn check<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["checks"]
        .as_array()
        .expect("checks array")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {doc:#}"))
}

fn status_of(doc: &Value, name: &str) -> String {
    check(doc, name)["status"]
        .as_str()
        .expect("status string")
        .to_owned()
}

/// `n` tiny files `{prefix}{i}.json` in `dir`, written as fast as the file system allows.
fn many_files(dir: &Path, prefix: &str, from: usize, to: usize) {
    fs::create_dir_all(dir).expect("mkdir");
    for i in from..to {
        fs::write(dir.join(format!("{prefix}{i}.json")), b"{}").expect("write");
    }
}

fn rfc3339_ago(ago: Duration) -> String {
    let t = chrono::Local::now() - chrono::Duration::from_std(ago).expect("duration");
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// A run record as tmpa-core writes it, by hand: the last run started `run_ago` ago with
/// `exit`; the last success (if any) started `success_ago` ago and took 60 s.
fn record(
    t: &Tree,
    task: &str,
    run_ago: Duration,
    exit: u8,
    dry_run: bool,
    success: Option<(Duration, u8)>,
) {
    let doc = json!({
        "task": task,
        "program": "tmpa-x",
        "root": t.root().display().to_string(),
        "started_at": rfc3339_ago(run_ago),
        "finished_at": rfc3339_ago(run_ago.saturating_sub(Duration::from_secs(60))),
        "duration_secs": 60.0,
        "dry_run": dry_run,
        "exit_code": exit,
        "counts": {"deleted": 3},
        "receipt": null,
        "last_success_at": success.map(|(ago, _)| rfc3339_ago(ago)),
        "last_success_duration_secs": success.map(|_| 60.0),
        "last_success_exit_code": success.map(|(_, code)| code),
    });
    t.file(
        format!(".tmpa/runs/{task}.json"),
        serde_json::to_vec_pretty(&doc).expect("json"),
    );
}

/// Both jobs succeeded an hour ago.
fn healthy_jobs(t: &Tree) {
    record(t, "compact_events", HOUR, 0, false, Some((HOUR, 0)));
    record(t, "archive_history", HOUR, 0, false, Some((HOUR, 0)));
}

/// A small healthy tree: a few events, a compacted day, an inbox, a session.
fn healthy_tree() -> Tree {
    let t = Tree::new();
    t.event("2026-11-01", "a1", "u1", 3, 4);
    t.event("2026-11-01", "a2", "u2", 5, 6);
    t.file(
        "token_stats/2026-10-31/_compacted.json",
        format!(
            "{{\"format\":1,\"day\":\"2026-10-31\",\"events\":[{}]}}",
            event_json("b1", "2026-10-31T10:00:00Z", "u1", "m", 1, 2)
        ),
    );
    t.file("notifications/u1/inbox/ntf_1.json", br#"{"title":"hi"}"#);
    t.file("notifications/u1/ack/ntf_1.ack", b"");
    t.file("chat_history/u1/sessions/s1.json", br#"{"messages":[]}"#);
    t.file("chat_history/u1/profile/p.json", br#"{"name":"x"}"#);
    healthy_jobs(&t);
    t
}

/// A healthy tree with a running service is ok on every check: exit 0, docs/OPERATIONS.md "tmpa-patrol" JSON with
/// the eleven checks in order, each with name, status, value and detail.
#[test]
fn healthy_tree_is_ok_and_json_matches_spec() {
    let t = healthy_tree();
    let (code, doc) = patrol_json(&t, &["--service-cmd", RUNNING]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["status"], "ok");
    let names: Vec<&str> = doc["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, CHECKS);
    for c in doc["checks"].as_array().expect("checks") {
        assert_eq!(c["status"], "ok", "{c:#}");
        assert!(c["detail"].is_string(), "{c:#}");
        assert!(c["value"].is_number(), "{c:#}");
        assert!(c.get("name").is_some() && c.get("status").is_some());
    }
    assert_eq!(check(&doc, "corrupt_json")["value"], 0);
    assert_eq!(check(&doc, "service")["value"], 1);
}

/// The text output starts with a Nagios status line carrying perfdata with thresholds,
/// then the log header line, the table, and a last line with the exit code.
#[test]
fn text_output_is_a_nagios_line_then_a_table() {
    let t = healthy_tree();
    let r = t.run("tmpa-patrol", &["--service-cmd", RUNNING]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let lines: Vec<&str> = r.stdout.lines().collect();
    let (summary, perf) = lines[0].split_once(" | ").expect("perfdata after ' | '");
    assert!(summary.starts_with("TMPA OK - "), "{summary}");
    let items: BTreeMap<&str, &str> = perf
        .split(' ')
        .map(|i| i.split_once('=').expect("label=value"))
        .collect();
    assert!(
        items["inbox_files_max"].ends_with(";5000;10000;0"),
        "{perf}"
    );
    assert!(items["token_stats_files_max"].ends_with(";5000;10000;0"));
    assert!(items["inodes_used"].contains("%;70;85;0"));
    assert!(items["compact_events_last_success_age"].ends_with("s;;86400;0"));
    assert!(items["archive_history_last_success_age"].ends_with("s;;691200;0"));
    assert!(
        lines[1].contains("tmpa-patrol PATROL root="),
        "{}",
        lines[1]
    );
    assert!(lines[2].starts_with("CHECK"));
    for name in CHECKS {
        assert!(r.stdout.contains(&format!("\n{name} ")), "{name} row");
    }
    let last = lines.last().expect("last line");
    assert!(
        last.contains("tmpa-patrol finished:") && last.ends_with("exit=0 (ok)"),
        "{last}"
    );
}

/// An inbox of 5000 entries is ok, 5001 a warning, 10001 critical; the finding names it.
#[test]
fn inbox_files_ok_warning_critical() {
    let t = healthy_tree();
    let inbox = t.root().join("notifications/u9/inbox");
    many_files(&inbox, "ntf_", 0, 5000);
    let (_, doc) = patrol_json(&t, &[]);
    assert_eq!(status_of(&doc, "inbox_files"), "ok");
    assert_eq!(check(&doc, "inbox_files")["value"], 5000);

    many_files(&inbox, "ntf_", 5000, 5001);
    let (code, doc) = patrol_json(&t, &[]);
    assert_eq!(status_of(&doc, "inbox_files"), "warning");
    assert_eq!(check(&doc, "inbox_files")["value"], 5001);
    assert_eq!(code, 1);
    assert!(
        check(&doc, "inbox_files")["findings"][0]
            .as_str()
            .expect("finding")
            .starts_with("notifications/u9/inbox: 5001")
    );

    many_files(&inbox, "ntf_", 5001, 10001);
    let (code, doc) = patrol_json(&t, &[]);
    assert_eq!(status_of(&doc, "inbox_files"), "critical");
    assert_eq!(check(&doc, "inbox_files")["value"], 10001);
    assert_eq!(code, 2);
    // Thresholds are flags.
    let (code, doc) = patrol_json(
        &t,
        &[
            "--inbox-files-warning",
            "20000",
            "--inbox-files-critical",
            "30000",
        ],
    );
    assert_eq!(status_of(&doc, "inbox_files"), "ok");
    assert_eq!(code, 0);
}

/// A day directory of 5001 entries is a warning, 10001 critical.
#[test]
fn token_stats_files_ok_warning_critical() {
    let t = healthy_tree();
    let (_, doc) = patrol_json(&t, &[]);
    assert_eq!(status_of(&doc, "token_stats_files"), "ok");
    let day = t.root().join("token_stats/2026-11-02");
    // Events must be valid to keep corrupt_json out of the picture: write real ones.
    let write = |from: usize, to: usize| {
        for i in from..to {
            fs::write(
                day.join(format!("evt_e{i}.json")),
                event_json(&format!("e{i}"), "2026-11-02T01:00:00Z", "u", "m", 1, 1),
            )
            .expect("write");
        }
    };
    fs::create_dir_all(&day).expect("mkdir");
    write(0, 5001);
    let (code, doc) = patrol_json(&t, &[]);
    assert_eq!(status_of(&doc, "token_stats_files"), "warning", "{doc:#}");
    assert_eq!(check(&doc, "token_stats_files")["value"], 5001);
    assert_eq!(status_of(&doc, "corrupt_json"), "ok");
    assert_eq!(code, 1);
    write(5001, 10001);
    let (code, doc) = patrol_json(&t, &[]);
    assert_eq!(status_of(&doc, "token_stats_files"), "critical");
    assert_eq!(code, 2);
}

/// Inode thresholds are flags: the real usage against 0 % is critical, against the
/// defaults it is whatever the file system says.
#[test]
fn inodes_thresholds_via_flags() {
    let t = healthy_tree();
    let (_, doc) = patrol_json(&t, &[]);
    let used = check(&doc, "inodes")["value"]
        .as_f64()
        .expect("inodes value");
    let expect = if used > 85.0 {
        "critical"
    } else if used > 70.0 {
        "warning"
    } else {
        "ok"
    };
    assert_eq!(status_of(&doc, "inodes"), expect);
    if used > 0.0 {
        let (_, doc) = patrol_json(&t, &["--inodes-warning", "0", "--inodes-critical", "100"]);
        assert_eq!(status_of(&doc, "inodes"), "warning");
        let (code, doc) = patrol_json(&t, &["--inodes-warning", "0", "--inodes-critical", "0"]);
        assert_eq!(status_of(&doc, "inodes"), "critical");
        assert_eq!(code, 2);
    }
    // A warning above the critical threshold is a usage error: unknown.
    let r = t.run(
        "tmpa-patrol",
        &["--inodes-warning", "90", "--inodes-critical", "80"],
    );
    assert_eq!(r.code, 3, "{}", r.stdout);
    assert!(r.stdout.starts_with("TMPA UNKNOWN - "), "{}", r.stdout);
}

/// On a tmpfs with 100 inodes (root only), filling 75 and then 90 of them turns the check
/// to warning and then critical.
#[test]
fn inodes_on_a_small_tmpfs() {
    let Some(fsys) =
        tmpa_tests::prerequisite(Tmpfs::mount("4m", 100), "needs root to mount a tmpfs")
    else {
        return;
    };
    let root = fsys.path();
    for d in ["notifications", "token_stats", "chat_history"] {
        fs::create_dir(root.join(d)).expect("mkdir");
    }
    let run = |args: &[&str]| -> Value {
        let r: Run = bin("tmpa-patrol")
            .arg("--root")
            .arg(root)
            .arg("--json")
            .args(args)
            .output()
            .expect("run")
            .into();
        r.json()
    };
    let pct = |doc: &Value| check(doc, "inodes")["value"].as_f64().expect("pct");
    let doc = run(&[]);
    assert_eq!(status_of(&doc, "inodes"), "ok", "{doc:#}");
    let fill = |doc: &Value, to_pct: f64| {
        let now = pct(doc);
        let n = ((to_pct - now) as usize).max(1);
        let dir = root.join("chat_history/fill");
        fs::create_dir_all(&dir).expect("mkdir");
        let have = fs::read_dir(&dir).expect("list").count();
        for i in have..have + n {
            fs::write(dir.join(format!("f{i}")), b"").expect("write");
        }
    };
    fill(&doc, 75.0);
    let doc = run(&[]);
    assert_eq!(status_of(&doc, "inodes"), "warning", "{}", pct(&doc));
    fill(&doc, 90.0);
    let doc = run(&[]);
    assert_eq!(status_of(&doc, "inodes"), "critical", "{}", pct(&doc));
}

/// A missing required directory, a symlinked one, or one that is a file is critical;
/// `--required-dirs` narrows the set.
#[test]
fn missing_directories_are_critical() {
    let t = Tree::bare();
    fs::create_dir(t.root().join("token_stats")).expect("mkdir");
    healthy_jobs(&t);
    let (code, doc) = patrol_json(&t, &[]);
    assert_eq!(status_of(&doc, "directories"), "critical");
    assert_eq!(check(&doc, "directories")["value"], 2);
    let detail = check(&doc, "directories")["detail"]
        .as_str()
        .expect("detail");
    assert!(
        detail.contains("notifications/ is missing") && detail.contains("chat_history/ is missing"),
        "{detail}"
    );
    assert_eq!(code, 2);

    let elsewhere = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(elsewhere.path(), t.root().join("chat_history")).expect("symlink");
    fs::write(t.root().join("notifications"), b"").expect("file");
    let (_, doc) = patrol_json(&t, &[]);
    let detail = check(&doc, "directories")["detail"]
        .as_str()
        .expect("detail");
    assert!(detail.contains("chat_history/ is a symlink"), "{detail}");
    assert!(
        detail.contains("notifications/ is not a directory"),
        "{detail}"
    );

    let (code, doc) = patrol_json(&t, &["--required-dirs", "token_stats"]);
    assert_eq!(status_of(&doc, "directories"), "ok", "{doc:#}");
    assert_eq!(code, 0);
}

/// No run record, a dry run only, a stale success and a success that finished with exit 1
/// or was followed by a failed run: critical, critical, critical, warning, warning.
#[test]
fn job_checks_read_the_run_records() {
    let t = healthy_tree();
    fs::remove_file(t.root().join(".tmpa/runs/compact_events.json")).expect("rm");
    let (code, doc) = patrol_json(&t, &[]);
    assert_eq!(status_of(&doc, "compact_events_last_success"), "critical");
    assert!(check(&doc, "compact_events_last_success")["value"].is_null());
    assert!(
        check(&doc, "compact_events_last_success")["detail"]
            .as_str()
            .expect("detail")
            .contains("never run")
    );
    assert_eq!(code, 2);

    // Dry runs do not count.
    record(&t, "compact_events", HOUR, 0, true, None);
    let (_, doc) = patrol_json(&t, &[]);
    assert_eq!(status_of(&doc, "compact_events_last_success"), "critical");

    // Stale: the last success is 25 h old; the last run (an hour ago) failed with exit 4.
    record(&t, "compact_events", HOUR, 4, false, Some((25 * HOUR, 0)));
    let (_, doc) = patrol_json(&t, &[]);
    let c = check(&doc, "compact_events_last_success");
    assert_eq!(c["status"], "critical", "{c:#}");
    let age = c["value"].as_f64().expect("age");
    assert!((24.0 * 3600.0..25.0 * 3600.0).contains(&age), "{age}");
    // The window is a flag.
    let (_, doc) = patrol_json(&t, &["--compact-window", "26h"]);
    assert_eq!(status_of(&doc, "compact_events_last_success"), "warning");

    // Fresh success, but a later run failed: warning.
    record(&t, "compact_events", HOUR, 4, false, Some((3 * HOUR, 0)));
    let (code, doc) = patrol_json(&t, &[]);
    assert_eq!(status_of(&doc, "compact_events_last_success"), "warning");
    assert_eq!(code, 1);

    // Fresh success with exit 1 (finished, something to look at): warning.
    record(&t, "compact_events", HOUR, 1, false, Some((HOUR, 1)));
    let (_, doc) = patrol_json(&t, &[]);
    assert_eq!(status_of(&doc, "compact_events_last_success"), "warning");

    // The weekly job has an 8-day window.
    record(&t, "archive_history", 7 * DAY, 0, false, Some((7 * DAY, 0)));
    let (_, doc) = patrol_json(&t, &[]);
    assert_eq!(status_of(&doc, "archive_history_last_success"), "ok");
    record(&t, "archive_history", 9 * DAY, 0, false, Some((9 * DAY, 0)));
    let (_, doc) = patrol_json(&t, &[]);
    assert_eq!(status_of(&doc, "archive_history_last_success"), "critical");

    // A run record that is not one: unknown.
    t.file(".tmpa/runs/archive_history.json", b"{not json");
    let (_, doc) = patrol_json(&t, &[]);
    assert_eq!(status_of(&doc, "archive_history_last_success"), "unknown");
}

/// A run record holding only the mandatory fields of docs/FORMAT.md "Program state" (another tool's, or an older
/// version's) is understood: a real run with exit 0 or 1 is the last success, finished at
/// its `finished_at`; a dry run or a failed run is none.
#[test]
fn minimal_run_records_are_understood() {
    let t = healthy_tree();
    let minimal = |exit: u8, dry: bool, started: Duration, finished: Duration| {
        format!(
            r#"{{"task":"compact_events","started_at":"{}","finished_at":"{}","dry_run":{dry},"exit_code":{exit}}}"#,
            rfc3339_ago(started),
            rfc3339_ago(finished)
        )
    };
    t.file(
        ".tmpa/runs/compact_events.json",
        minimal(0, false, 2 * HOUR, HOUR),
    );
    let (_, doc) = patrol_json(&t, &[]);
    let c = check(&doc, "compact_events_last_success");
    assert_eq!(c["status"], "ok", "{c:#}");
    let age = c["value"].as_f64().expect("age");
    assert!(
        (3500.0..3700.0).contains(&age),
        "age from finished_at: {age}"
    );
    assert!(
        c["detail"].as_str().expect("detail").contains("took 1h 0m"),
        "{c:#}"
    );

    t.file(
        ".tmpa/runs/compact_events.json",
        minimal(1, false, 2 * HOUR, HOUR),
    );
    let (_, doc) = patrol_json(&t, &[]);
    assert_eq!(status_of(&doc, "compact_events_last_success"), "warning");

    for (exit, dry) in [(0, true), (4, false)] {
        t.file(
            ".tmpa/runs/compact_events.json",
            minimal(exit, dry, 2 * HOUR, HOUR),
        );
        let (_, doc) = patrol_json(&t, &[]);
        let c = check(&doc, "compact_events_last_success");
        assert_eq!(c["status"], "critical", "exit {exit} dry {dry}: {c:#}");
        assert!(
            c["detail"]
                .as_str()
                .expect("detail")
                .contains("no successful real run"),
            "{c:#}"
        );
    }
}

/// A service command that prints RUNNING is ok; one that fails is critical; one that hangs
/// is killed at the timeout and critical; none given is skipped and ignored overall.
#[test]
fn service_running_failing_hanging_and_skipped() {
    let t = healthy_tree();
    let (code, doc) = patrol_json(&t, &[]);
    let s = check(&doc, "service");
    assert_eq!(s["status"], "unknown");
    assert_eq!(s["skipped"], true);
    assert!(
        s["detail"]
            .as_str()
            .expect("detail")
            .contains("not configured")
    );
    assert_eq!(doc["status"], "ok");
    assert_eq!(code, 0);

    let (code, doc) = patrol_json(&t, &["--service-cmd", RUNNING]);
    assert_eq!(status_of(&doc, "service"), "ok");
    assert_eq!(code, 0);

    let (code, doc) = patrol_json(
        &t,
        &[
            "--service-cmd",
            "echo 'app STOPPED   Nov 25 07:00 AM'; exit 3",
        ],
    );
    let s = check(&doc, "service");
    assert_eq!(s["status"], "critical");
    assert!(
        s["detail"].as_str().expect("detail").contains("STOPPED"),
        "{s:#}"
    );
    assert_eq!(s["value"], 0);
    assert_eq!(code, 2);

    // Exit 0 without the word is not running either.
    let (_, doc) = patrol_json(&t, &["--service-cmd", "true"]);
    assert_eq!(status_of(&doc, "service"), "critical");

    let started = Instant::now();
    let (code, doc) = patrol_json(
        &t,
        &[
            "--service-cmd",
            "sleep 30; echo RUNNING",
            "--service-timeout",
            "1s",
        ],
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the timeout did not hit"
    );
    let s = check(&doc, "service");
    assert_eq!(s["status"], "critical");
    assert!(
        s["detail"]
            .as_str()
            .expect("detail")
            .contains("no answer within 1s"),
        "{s:#}"
    );
    assert_eq!(code, 2);
}

/// The patrol's JSON report with its clock `ahead` of the real one (libfaketime): file
/// times are the file system's, so every file is that much older; ctime cannot be set
/// back, and a test cannot wait days.
fn patrol_json_ahead(t: &Tree, ahead: &str, args: &[&str]) -> (i32, Value) {
    let r: tmpa_tests::Run = tmpa_tests::bin("tmpa-patrol")
        .arg("--root")
        .arg(t.root())
        .arg("--json")
        .args(args)
        .env(
            "LD_PRELOAD",
            "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        )
        .env("FAKETIME", ahead)
        .env("NO_FAKE_STAT", "1")
        .output()
        .expect("patrol")
        .into();
    (r.code, r.json())
}

/// Fresh temporaries are writes in flight (ok); stale ones, unchanged (mtime and ctime,
/// tmpa-tmpclean's rule) for longer than --tmp-older-than, are a warning, many critical; a
/// temporary whose mtime alone is old is not stale (its inode changed since); names that
/// only look like temporaries are not counted.
#[test]
fn tmp_files_ok_warning_critical() {
    let t = healthy_tree();
    t.file("token_stats/2026-11-01/evt_a3.json.tmp.77-1-ab", b"{");
    t.file("chat_history/u1/sessions/s2.json.tmp", b"{");
    t.file("notifications/u1/inbox/ntf_a.json.tmp.4242.9f3a", b"{");
    t.file("chat_history/u1/profile/x.tmpl", b"");
    t.file("chat_history/u1/profile/x.tmpfoo", b"");
    let (_, doc) = patrol_json(&t, &[]);
    let c = check(&doc, "tmp_files");
    assert_eq!(c["status"], "ok", "{c:#}");
    assert_eq!(c["value"], 0);
    assert!(
        c["detail"].as_str().expect("detail").contains("(3 in all)"),
        "dotted suffixes count too: {c:#}"
    );

    // An mtime set back (a copy that kept its times, `touch -d`) is not an old file: its
    // ctime says it changed now, as tmpa-tmpclean reads it too.
    age(
        &t.root().join("chat_history/u1/sessions/s2.json.tmp"),
        3 * DAY,
    );
    let (_, doc) = patrol_json(&t, &[]);
    assert_eq!(status_of(&doc, "tmp_files"), "ok", "{doc:#}");

    // Three days on, all three are stale.
    let (code, doc) = patrol_json_ahead(&t, "+3d", &[]);
    let c = check(&doc, "tmp_files");
    assert_eq!(c["status"], "warning", "{c:#}");
    assert_eq!(c["value"], 3, "{c:#}");
    assert!(
        c["findings"]
            .as_array()
            .expect("findings")
            .contains(&Value::from("chat_history/u1/sessions/s2.json.tmp")),
        "{c:#}"
    );
    assert_eq!(code, 2, "the job checks are critical then too");
    let (_, doc) = patrol_json_ahead(&t, "+3d", &["--tmp-critical", "1"]);
    assert_eq!(status_of(&doc, "tmp_files"), "critical");
    let (_, doc) = patrol_json_ahead(&t, "+3d", &["--tmp-older-than", "4d"]);
    assert_eq!(status_of(&doc, "tmp_files"), "ok");
}

/// Corrupt JSON of every kind is found and named: an event that is not JSON, one whose id
/// differs from its name, one missing a field, a compacted file out of format, a session
/// that is not an object, a symlink; more than --corrupt-critical is critical.
#[test]
fn corrupt_json_ok_warning_critical() {
    let t = healthy_tree();
    let (_, doc) = patrol_json(&t, &[]);
    assert_eq!(status_of(&doc, "corrupt_json"), "ok");

    t.file("token_stats/2026-11-01/evt_bad1.json", b"{\"id\":");
    let (code, doc) = patrol_json(&t, &[]);
    let c = check(&doc, "corrupt_json");
    assert_eq!(c["status"], "warning", "{c:#}");
    assert_eq!(c["value"], 1);
    assert!(
        c["findings"][0]
            .as_str()
            .expect("finding")
            .starts_with("token_stats/2026-11-01/evt_bad1.json: ")
    );
    assert_eq!(code, 1);

    t.file(
        "token_stats/2026-11-01/evt_other.json",
        event_json("not-other", "2026-11-01T12:00:00Z", "u", "m", 1, 1),
    );
    t.file(
        "token_stats/2026-11-01/evt_nofield.json",
        br#"{"id":"nofield"}"#,
    );
    t.file(
        "token_stats/2026-11-03/_compacted.json",
        br#"{"format":1,"day":"2026-11-04","events":[]}"#,
    );
    t.file("chat_history/u1/sessions/s9.json", b"[1,2]");
    std::os::unix::fs::symlink(
        "/etc/passwd",
        t.root().join("notifications/u1/inbox/ntf_l.json"),
    )
    .expect("symlink");
    let (code, doc) = patrol_json(&t, &["--corrupt-critical", "5"]);
    let c = check(&doc, "corrupt_json");
    assert_eq!(c["status"], "critical", "{c:#}");
    assert_eq!(c["value"], 6);
    let text = c["findings"].to_string();
    for needle in [
        "evt_other.json: holds id",
        "evt_nofield.json: ",
        "_compacted.json: holds day",
        "s9.json: not a JSON object",
        "ntf_l.json: is not a regular file",
    ] {
        assert!(text.contains(needle), "{needle} in {text}");
    }
    assert_eq!(code, 2);
}

/// With --incremental the second patrol parses nothing unchanged; a file rewritten in
/// place (same size) is parsed again and found; --full parses everything.
#[test]
fn incremental_cache_reparses_only_changes() {
    let t = healthy_tree();
    let parsed = |doc: &Value| -> u64 {
        let d = check(doc, "corrupt_json")["detail"]
            .as_str()
            .expect("detail")
            .to_owned();
        let (_, rest) = d.split_once('(').expect("(");
        rest.split(' ').next().expect("n").parse().expect("number")
    };
    let (_, first) = patrol_json(&t, &["--incremental"]);
    let total = parsed(&first);
    assert!(total >= 6, "{first:#}");
    assert!(t.root().join(".tmpa/patrol/json-cache").is_dir());

    let (_, second) = patrol_json(&t, &["--incremental"]);
    assert_eq!(parsed(&second), 0, "{second:#}");
    assert_eq!(status_of(&second, "corrupt_json"), "ok");

    // Same size, different bytes, written in place.
    let session = t.root().join("chat_history/u1/sessions/s1.json");
    let len = fs::metadata(&session).expect("meta").len() as usize;
    fs::write(&session, "x".repeat(len)).expect("overwrite");
    let (_, third) = patrol_json(&t, &["--incremental"]);
    assert_eq!(parsed(&third), 1, "{third:#}");
    assert_eq!(status_of(&third, "corrupt_json"), "warning");
    // The corrupt verdict is cached too: still reported without a re-parse.
    let (_, fourth) = patrol_json(&t, &["--incremental"]);
    assert_eq!(parsed(&fourth), 0);
    assert_eq!(status_of(&fourth, "corrupt_json"), "warning");

    let (_, full) = patrol_json(&t, &["--incremental", "--full"]);
    assert_eq!(parsed(&full), total);
    let (_, expired) = patrol_json(&t, &["--incremental", "--cache-max-age", "0s"]);
    assert_eq!(parsed(&expired), total);
    // A new file is parsed alone.
    t.event("2026-11-01", "a9", "u1", 1, 1);
    let (_, fifth) = patrol_json(&t, &["--incremental"]);
    assert_eq!(parsed(&fifth), 1);
}

/// The patrol writes nothing in the data tree, whatever it finds and whichever flags.
#[test]
fn patrol_leaves_the_data_tree_untouched() {
    let t = healthy_tree();
    t.file("token_stats/2026-11-01/evt_bad.json", b"nope");
    t.file("chat_history/u1/sessions/old.json.tmp", b"{");
    age(
        &t.root().join("chat_history/u1/sessions/old.json.tmp"),
        5 * DAY,
    );
    many_files(&t.root().join("notifications/u2/inbox"), "ntf_", 0, 50);
    let before = t.snapshot();
    let out = tempfile::tempdir().expect("tempdir");
    let prom = out.path().join("tmpa.prom");
    let prom_arg = prom.to_str().expect("utf-8");
    for args in [
        vec![],
        vec!["--json"],
        vec!["--incremental", "--prometheus", prom_arg],
        vec!["--incremental", "--full", "--service-cmd", RUNNING],
    ] {
        let r = t.run("tmpa-patrol", &args);
        assert_eq!(r.code, 1, "{args:?}: {}", r.stdout);
        assert_eq!(t.snapshot(), before, "{args:?} changed the data tree");
    }
}

/// Not a root, a bad flag, a bad age: unknown (3) with a status line, never clap's 2; the
/// Prometheus file then says the patrol is down. --help exits 0.
#[test]
fn exit_codes_follow_the_plugin_convention() {
    let t = Tree::bare();
    let out = tempfile::tempdir().expect("tempdir");
    let prom = out.path().join("tmpa.prom");
    let r = t.run(
        "tmpa-patrol",
        &["--prometheus", prom.to_str().expect("utf-8")],
    );
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stdout.starts_with("TMPA UNKNOWN - cannot check: "),
        "{}",
        r.stdout
    );
    assert!(r.stderr.contains("not a TMPA root"), "{}", r.stderr);
    let text = fs::read_to_string(&prom).expect("prom written");
    let samples = parse_exposition(&text);
    assert_eq!(samples[&("tmpa_patrol_up".to_owned(), String::new())], 0.0);
    assert_eq!(
        samples[&("tmpa_patrol_status".to_owned(), String::new())],
        3.0
    );

    let r = t.run("tmpa-patrol", &["--json"]);
    assert_eq!(r.code, 3);
    assert_eq!(r.json()["status"], "unknown");

    let good = healthy_tree();
    for args in [
        &["--no-such-flag"][..],
        &["--service-timeout", "ten"],
        &["--log", "nightly=/tmp/x.log"],
        &["--inbox-files-warning", "-1"],
    ] {
        let r = good.run("tmpa-patrol", args);
        assert_eq!(r.code, 3, "{args:?}: {r:?}");
        assert!(
            r.stdout.starts_with("TMPA UNKNOWN - usage error"),
            "{args:?}: {}",
            r.stdout
        );
    }
    // Metrics that cannot be written make a healthy patrol unknown: the monitor would
    // otherwise keep reading the last file.
    let r = good.run(
        "tmpa-patrol",
        &["--prometheus", "/nonexistent-dir/tmpa.prom"],
    );
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stderr.contains("cannot write the Prometheus file"),
        "{}",
        r.stderr
    );
    let r: Run = bin("tmpa-patrol")
        .arg("--help")
        .output()
        .expect("run")
        .into();
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("--service-cmd"));
}

/// A strict reader of the Prometheus text exposition format: HELP and TYPE at most once per
/// family and before its samples, a family's samples together, valid metric and label
/// names, escaped label values, float values, no duplicate series. Returns
/// (name, labels) → value.
fn parse_exposition(text: &str) -> BTreeMap<(String, String), f64> {
    fn metric_name_ok(s: &str) -> bool {
        let mut c = s.chars();
        c.next()
            .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
            && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
    }
    fn label_name_ok(s: &str) -> bool {
        let mut c = s.chars();
        c.next()
            .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
            && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
            && !s.starts_with("__")
    }
    fn value(s: &str) -> f64 {
        match s {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            _ => s.parse().unwrap_or_else(|_| panic!("bad value {s:?}")),
        }
    }
    /// Parses `{a="x",b="y"}` from the start of `s`; returns the canonical labels and the rest.
    fn labels(s: &str) -> (String, &str) {
        let mut out = Vec::new();
        let mut rest = s.strip_prefix('{').expect("{");
        loop {
            if let Some(r) = rest.strip_prefix('}') {
                return (out.join(","), r);
            }
            let eq = rest.find('=').expect("label =");
            let name = &rest[..eq];
            assert!(label_name_ok(name), "label name {name:?}");
            rest = rest[eq + 1..].strip_prefix('"').expect("opening quote");
            let mut val = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                let (i, c) = chars.next().expect("closing quote");
                match c {
                    '"' => break i,
                    '\\' => match chars.next().expect("escape").1 {
                        '\\' => val.push('\\'),
                        '"' => val.push('"'),
                        'n' => val.push('\n'),
                        other => panic!("bad escape \\{other}"),
                    },
                    '\n' => panic!("raw newline in label value"),
                    c => val.push(c),
                }
            };
            out.push(format!("{name}={val}"));
            rest = &rest[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }
    let mut help = BTreeSet::new();
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut finished_families = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut samples = BTreeMap::new();
    assert!(text.ends_with('\n'), "the file ends with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, doc) = rest.split_once(' ').expect("HELP name doc");
            assert!(metric_name_ok(name) && !doc.is_empty(), "{line}");
            assert!(help.insert(name.to_owned()), "HELP twice for {name}");
            assert!(
                !samples.keys().any(|(n, _): &(String, String)| n == name),
                "HELP after samples"
            );
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(metric_name_ok(name), "{line}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(
                typed.insert(name.to_owned(), kind.to_owned()).is_none(),
                "TYPE twice: {name}"
            );
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).expect("sample");
        let name = &line[..name_end];
        assert!(metric_name_ok(name), "metric name {name:?}");
        assert!(typed.contains_key(name), "sample before TYPE: {line}");
        assert!(
            !finished_families.contains(name),
            "family {name} not contiguous"
        );
        if current.as_deref() != Some(name)
            && let Some(prev) = current.replace(name.to_owned())
        {
            finished_families.insert(prev);
        }
        let (lbls, rest) = if line[name_end..].starts_with('{') {
            labels(&line[name_end..])
        } else {
            (String::new(), &line[name_end..])
        };
        let parts: Vec<&str> = rest.split_whitespace().collect();
        assert!(
            (1..=2).contains(&parts.len()) && rest.starts_with(' '),
            "value (and optional timestamp): {line}"
        );
        if let Some(ts) = parts.get(1) {
            ts.parse::<i64>().expect("timestamp");
        }
        let v = value(parts[0]);
        assert!(
            samples.insert((name.to_owned(), lbls), v).is_none(),
            "duplicate series: {line}"
        );
    }
    samples
}

/// The Prometheus file parses strictly, carries every check's status, the values, the
/// jobs' last-success times and durations (tmpclean's last run too), and is replaced
/// atomically (a new inode, no
/// temporary left beside it).
#[test]
fn prometheus_file_parses_and_is_replaced_atomically() {
    let t = healthy_tree();
    t.file("token_stats/2026-11-01/evt_bad.json", b"nope");
    // tmpclean, in its dry-run rollout: exported though it has no check of its own.
    record(&t, "tmp_cleanup", HOUR, 0, true, None);
    let out = tempfile::tempdir().expect("tempdir");
    let prom = out.path().join("tmpa.prom");
    fs::write(&prom, b"# stale\n").expect("write");
    let ino_before = fs::metadata(&prom).expect("meta").ino();
    let r = t.run(
        "tmpa-patrol",
        &[
            "--prometheus",
            prom.to_str().expect("utf-8"),
            "--service-cmd",
            RUNNING,
        ],
    );
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_ne!(
        fs::metadata(&prom).expect("meta").ino(),
        ino_before,
        "replaced by rename"
    );
    let names: Vec<String> = fs::read_dir(out.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["tmpa.prom"], "no temporary left behind");
    let text = fs::read_to_string(&prom).expect("read");
    let s = parse_exposition(&text);
    let get = |name: &str, labels: &str| -> f64 {
        *s.get(&(name.to_owned(), labels.to_owned()))
            .unwrap_or_else(|| panic!("{name}{{{labels}}} missing in\n{text}"))
    };
    for name in CHECKS {
        let v = get("tmpa_check_status", &format!("check={name}"));
        assert!((0.0..=3.0).contains(&v));
    }
    assert_eq!(get("tmpa_check_status", "check=corrupt_json"), 1.0);
    assert_eq!(get("tmpa_check_status", "check=service"), 0.0);
    assert_eq!(get("tmpa_check_value", "check=corrupt_json"), 1.0);
    assert_eq!(get("tmpa_patrol_status", ""), 1.0);
    assert_eq!(get("tmpa_patrol_up", ""), 1.0);
    let now = chrono::Utc::now().timestamp() as f64;
    for task in ["compact_events", "archive_history"] {
        let at = get(
            "tmpa_job_last_success_timestamp_seconds",
            &format!("task={task}"),
        );
        assert!((now - at - 3600.0).abs() < 120.0, "{task}: {at} vs {now}");
        assert_eq!(
            get(
                "tmpa_job_last_success_duration_seconds",
                &format!("task={task}")
            ),
            60.0
        );
        assert_eq!(
            get("tmpa_job_last_run_exit_code", &format!("task={task}")),
            0.0
        );
    }
    // tmpclean's runs are exported too: its last (dry) run, no success yet.
    assert_eq!(get("tmpa_job_last_run_exit_code", "task=tmp_cleanup"), 0.0);
    let at = get("tmpa_job_last_run_timestamp_seconds", "task=tmp_cleanup");
    assert!(
        (now - at - 3600.0).abs() < 120.0,
        "tmp_cleanup: {at} vs {now}"
    );
    assert!(!text.contains("tmpa_job_last_success_timestamp_seconds{task=\"tmp_cleanup\"}"));
    // Every family has HELP and TYPE.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = &line[..line.find(['{', ' ']).expect("sample")];
        assert!(text.contains(&format!("# HELP {name} ")), "{name}");
        assert!(text.contains(&format!("# TYPE {name} gauge")), "{name}");
    }
}

/// A job log where a path is deleted after its verification failed in the same run makes
/// the job critical and names the line; the job's last 50 lines come with the report.
/// The same deletion in a later run (after a header line) is not flagged.
#[test]
fn log_deletion_after_failed_verification_is_critical() {
    let t = healthy_tree();
    let logs = tempfile::tempdir().expect("tempdir");
    let log = logs.path().join("compact.log");
    let mut text = String::new();
    for i in 0..80 {
        text.push_str(&format!("filler line {i}\n"));
    }
    text.push_str("2026-11-25T02:30:00+00:00 tmpa-compact COMPACT root=/opt/app\n");
    text.push_str("  problem: verification failed: /opt/app/token_stats/2026-11-01/evt_x.json does not read back\n");
    text.push_str("deleted /opt/app/token_stats/2026-11-01/evt_x.json\n");
    text.push_str(
        "2026-11-25T02:40:00+00:00 tmpa-compact finished: deleted=1 exit=1 (needs a look)\n",
    );
    fs::write(&log, &text).expect("write log");
    let arg = format!("compact_events={}", log.display());
    let (code, doc) = patrol_json(&t, &["--log", &arg]);
    let c = check(&doc, "compact_events_last_success");
    assert_eq!(c["status"], "critical", "{c:#}");
    assert!(
        c["detail"]
            .as_str()
            .expect("detail")
            .contains("1 deletion(s) after a failed verification")
    );
    assert!(
        c["findings"][0]
            .as_str()
            .expect("finding")
            .contains("line 83"),
        "{c:#}"
    );
    let tail = c["log_tail"].as_array().expect("tail");
    assert_eq!(tail.len(), 50);
    assert_eq!(
        tail[49],
        "2026-11-25T02:40:00+00:00 tmpa-compact finished: deleted=1 exit=1 (needs a look)"
    );
    assert_eq!(code, 2);
    // The text report shows the tail too.
    let r = t.run("tmpa-patrol", &["--log", &arg]);
    assert!(r.stdout.contains("last 50 log lines:") && r.stdout.contains("| filler line 79"));

    // A later run may delete what failed once and then verified; a healthy job shows no tail.
    fs::write(
        &log,
        "t tmpa-compact COMPACT root=/opt/app\nverification failed: /opt/app/a/evt_y.json\n\
         t tmpa-compact COMPACT root=/opt/app\ndeleted /opt/app/a/evt_y.json\n",
    )
    .expect("write log");
    let (code, doc) = patrol_json(&t, &["--log", &arg]);
    let c = check(&doc, "compact_events_last_success");
    assert_eq!(c["status"], "ok", "{c:#}");
    assert!(c.get("log_tail").is_none());
    assert_eq!(code, 0);

    // An unhealthy job shows its tail even without a violation.
    record(&t, "compact_events", HOUR, 4, false, None);
    let (_, doc) = patrol_json(&t, &["--log", &arg]);
    let c = check(&doc, "compact_events_last_success");
    assert_eq!(c["status"], "critical");
    assert_eq!(c["log_tail"].as_array().expect("tail").len(), 4);
}

/// The patrol with `--json --journal TASK=UNIT` reading the journal in `dir`: its exit
/// code and the check of `task` (`{task}_last_success`).
fn job_check_from_journal(t: &Tree, task: &str, unit: &str, dir: &Path) -> (i32, Value) {
    let (code, doc) = patrol_json(
        t,
        &[
            "--journal",
            &format!("{task}={unit}"),
            "--journal-directory",
            &dir.display().to_string(),
        ],
    );
    (code, check(&doc, &format!("{task}_last_success")).clone())
}

/// [`job_check_from_journal`] for compaction.
fn compact_check_from_journal(t: &Tree, dir: &Path) -> (i32, Value) {
    job_check_from_journal(t, "compact_events", "tmpa-compact.service", dir)
}

/// `--journal TASK=UNIT` reads the unit's journal as `--log` reads a file: a deletion after
/// a failed verification in one run is critical and named, with the job's last 50 lines;
/// another unit's entries and runs older than the lookback (8 days) are not read; a clean
/// real run is ok; and a journal that cannot be read is a warning, never "nothing wrong".
#[test]
fn journal_deletion_after_failed_verification_is_critical() {
    let t = healthy_tree();
    let dirs = tempfile::tempdir().expect("tempdir");
    let compact = "tmpa-compact.service";
    let mut entries = vec![
        // Nine days ago: out of the lookback.
        (
            compact,
            9 * DAY,
            "t tmpa-compact COMPACT root=/opt/app".to_owned(),
        ),
        (
            compact,
            9 * DAY,
            "verification failed: /opt/app/token_stats/2026-11-01/evt_old.json".to_owned(),
        ),
        (
            compact,
            9 * DAY,
            "deleted /opt/app/token_stats/2026-11-01/evt_old.json".to_owned(),
        ),
        // Another unit.
        (
            "tmpa-archive.service",
            HOUR,
            "t tmpa-archive ARCHIVE root=/opt/app".to_owned(),
        ),
        (
            "tmpa-archive.service",
            HOUR,
            "verification failed: /opt/app/chat_history/u1/sessions/s9.json".to_owned(),
        ),
        (
            "tmpa-archive.service",
            HOUR,
            "deleted /opt/app/chat_history/u1/sessions/s9.json".to_owned(),
        ),
        (
            compact,
            2 * HOUR,
            "2026-11-25T02:30:00+00:00 tmpa-compact COMPACT root=/opt/app".to_owned(),
        ),
    ];
    for i in 0..80 {
        entries.push((compact, 2 * HOUR, format!("filler line {i}")));
    }
    entries.extend([
        (compact, 2 * HOUR, "  problem: verification failed: /opt/app/token_stats/2026-11-01/evt_x.json does not read back".to_owned()),
        (compact, 2 * HOUR, "deleted /opt/app/token_stats/2026-11-01/evt_x.json".to_owned()),
        (compact, 2 * HOUR, "2026-11-25T02:40:00+00:00 tmpa-compact finished: deleted=1 exit=1 (needs a look)".to_owned()),
    ]);
    let bad = dirs.path().join("bad");
    if tmpa_tests::journal(&bad, &entries).is_none() {
        return;
    }
    let (code, c) = compact_check_from_journal(&t, &bad);
    assert_eq!(c["status"], "critical", "{c:#}");
    let detail = c["detail"].as_str().expect("detail");
    assert!(
        detail.contains(
            "1 deletion(s) after a failed verification in the journal of tmpa-compact.service"
        ),
        "{detail}"
    );
    let findings = c["findings"].as_array().expect("findings");
    assert_eq!(findings.len(), 1, "{c:#}");
    assert!(
        findings[0]
            .as_str()
            .expect("finding")
            .contains("evt_x.json")
    );
    let tail = c["log_tail"].as_array().expect("tail");
    assert_eq!(tail.len(), 50);
    assert_eq!(
        tail[48],
        "deleted /opt/app/token_stats/2026-11-01/evt_x.json"
    );
    assert_eq!(
        tail[49],
        "2026-11-25T02:40:00+00:00 tmpa-compact finished: deleted=1 exit=1 (needs a look)"
    );
    assert_eq!(code, 2);
    // The archive job reads its own unit: one violation there, none of compaction's.
    let (_, c) = job_check_from_journal(&t, "archive_history", "tmpa-archive.service", &bad);
    assert_eq!(
        c["findings"].as_array().expect("findings").len(),
        1,
        "{c:#}"
    );
    assert!(
        c["findings"][0]
            .as_str()
            .expect("finding")
            .contains("s9.json")
    );

    // What a real run prints, as the unit's journal holds it, is healthy.
    let ok_tree = healthy_tree();
    let run = ok_tree.run("tmpa-compact", &[]);
    assert!(run.code <= 1, "{run:?}");
    let lines: Vec<(&str, Duration, String)> = run
        .stdout
        .lines()
        .chain(run.stderr.lines())
        .map(|l| (compact, HOUR, l.to_owned()))
        .collect();
    assert!(lines.len() >= 2, "{run:?}");
    let good = dirs.path().join("good");
    tmpa_tests::journal(&good, &lines).expect("journal");
    let (code, c) = compact_check_from_journal(&ok_tree, &good);
    assert_eq!(c["status"], "ok", "{c:#}");
    assert!(c.get("log_tail").is_none());
    assert_eq!(code, 0, "{c:#}");

    // A journal that cannot be read: the check says so and is not ok.
    let missing = dirs.path().join("missing");
    let (code, c) = compact_check_from_journal(&ok_tree, &missing);
    assert_eq!(c["status"], "warning", "{c:#}");
    let detail = c["detail"].as_str().expect("detail");
    assert!(
        detail.contains("cannot read its log: the journal of tmpa-compact.service")
            && detail.contains("journalctl exit"),
        "{detail}"
    );
    assert_eq!(code, 1);
    // Nor is a directory without a journal in it, which journalctl reads as empty.
    let empty = dirs.path().join("empty");
    fs::create_dir(&empty).expect("mkdir");
    let (code, c) = compact_check_from_journal(&ok_tree, &empty);
    assert_eq!(c["status"], "warning", "{c:#}");
    assert!(
        c["detail"]
            .as_str()
            .expect("detail")
            .contains("no journal files"),
        "{c:#}"
    );
    assert_eq!(code, 1);
}

/// As the patrol unit runs it (`User=` the tree's owner): a user who may not read the
/// jobs' journal is told so, a warning, and never given a clean bill; the same user in
/// the journal's group (the unit's `SupplementaryGroups=systemd-journal`) reads it and
/// finds the deletion that went wrong.
#[test]
fn a_journal_the_patrol_may_not_read_is_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let Some(()) = tmpa_tests::prerequisite(
        tmpa_tests::is_root(),
        "needs root to give the tree and the journal away",
    ) else {
        return;
    };
    const OWNER: u32 = 4244;
    const JOURNAL_GROUP: u32 = 4245;
    let bins = tmpa_tests::ReachableBins::copy(&["tmpa-patrol"]);
    let t = healthy_tree();
    fs::set_permissions(t.root(), fs::Permissions::from_mode(0o755)).expect("chmod");
    tmpa_tests::chown_tree(t.root(), OWNER, OWNER);
    let dirs = tempfile::tempdir().expect("tempdir");
    fs::set_permissions(dirs.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let dir = dirs.path().join("journal");
    let unit = "tmpa-compact.service";
    let entries = [
        "t tmpa-compact COMPACT root=/opt/app",
        "verification failed: /opt/app/token_stats/2026-11-01/evt_q.json",
        "deleted /opt/app/token_stats/2026-11-01/evt_q.json",
    ]
    .map(|m| (unit, HOUR, m.to_owned()));
    if tmpa_tests::journal(&dir, &entries).is_none() {
        return;
    }
    // As journald keeps it: the directory open to all, the files to root and the group.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    for f in fs::read_dir(&dir).expect("read_dir") {
        let f = f.expect("entry").path();
        std::os::unix::fs::lchown(&f, Some(0), Some(JOURNAL_GROUP)).expect("chown");
        fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).expect("chmod");
    }
    let patrol = |groups: &str| {
        let out = std::process::Command::new("setpriv")
            .args([
                format!("--reuid={OWNER}"),
                format!("--regid={OWNER}"),
                groups.to_owned(),
                "--".into(),
            ])
            .args(bins.program_args("tmpa-patrol"))
            .arg("--root")
            .arg(t.root())
            .args(["--json", "--journal", &format!("compact_events={unit}")])
            .arg("--journal-directory")
            .arg(&dir)
            .output()
            .expect("setpriv");
        let r = tmpa_tests::Run::from(out).started();
        (r.code, r.json())
    };
    let (code, doc) = patrol("--clear-groups");
    let c = check(&doc, "compact_events_last_success");
    assert_eq!(c["status"], "warning", "{c:#}");
    let detail = c["detail"].as_str().expect("detail");
    assert!(
        detail.contains("cannot read its log: the journal of tmpa-compact.service"),
        "{detail}"
    );
    assert!(detail.contains("permission"), "{detail}");
    assert_eq!(code, 1);

    let (code, doc) = patrol(&format!("--groups={JOURNAL_GROUP}"));
    let c = check(&doc, "compact_events_last_success");
    assert_eq!(c["status"], "critical", "{c:#}");
    assert!(
        c["findings"][0]
            .as_str()
            .expect("finding")
            .contains("evt_q.json"),
        "{c:#}"
    );
    assert_eq!(code, 2);
}

/// Symlinks inside the tree are never followed: a symlinked inbox pointing at a crowded
/// directory is not counted, a symlinked day pointing at corrupt files is not read, and a
/// FIFO named like an event does not block the patrol.
#[test]
fn symlinks_and_fifos_are_never_followed() {
    let t = healthy_tree();
    let outside = tempfile::tempdir().expect("tempdir");
    many_files(outside.path(), "ntf_", 0, 5001);
    fs::write(outside.path().join("evt_x.json"), b"not json").expect("write");
    fs::create_dir_all(t.root().join("notifications/u7")).expect("mkdir");
    std::os::unix::fs::symlink(outside.path(), t.root().join("notifications/u7/inbox"))
        .expect("symlink");
    std::os::unix::fs::symlink(outside.path(), t.root().join("token_stats/2026-11-09"))
        .expect("symlink");
    let fifo = t.root().join("token_stats/2026-11-01/evt_fifo.json");
    tmpa_tests::mkfifo(&fifo);
    let started = Instant::now();
    let (_, doc) = patrol_json(&t, &[]);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(status_of(&doc, "inbox_files"), "ok", "{doc:#}");
    assert_eq!(check(&doc, "inbox_files")["value"], 1);
    let c = check(&doc, "corrupt_json");
    // Only the FIFO is reported (not a regular file); nothing behind the symlinks.
    assert_eq!(c["value"], 1, "{c:#}");
    assert!(
        c["findings"][0]
            .as_str()
            .expect("finding")
            .contains("evt_fifo.json: is not a regular file")
    );
}

/// The growth item of `what` in a `--json` report.
fn growth_item<'a>(doc: &'a Value, what: &str) -> &'a Value {
    doc["growth"]["items"]
        .as_array()
        .expect("growth items")
        .iter()
        .find(|i| i["what"] == what)
        .unwrap_or_else(|| panic!("no growth item {what} in {doc:#}"))
}

/// `n` fresh temporaries more in the tree (a backend failing its writes leaves these).
fn more_temporaries(t: &Tree, from: usize, n: usize) {
    for i in from..from + n {
        t.file(format!("token_stats/2026-11-01/evt_t{i}.json.tmp.{i}"), "{");
    }
}

/// The patrol remembers its counts in .tmpa/patrol/history.json and reports the growth
/// since its last run and per hour; temporaries growing in three runs in a row are a
/// warning (text, JSON and Prometheus), which clears when they stop growing.
#[test]
fn growth_across_runs_warns_when_temporaries_keep_growing() {
    let t = healthy_tree();
    let prom = t.root().join("metrics.prom");
    let prom_arg = prom.to_str().expect("utf-8").to_owned();
    let args = ["--service-cmd", RUNNING, "--prometheus", &prom_arg];
    let (code, doc) = patrol_json(&t, &args);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(status_of(&doc, "growth"), "ok");
    assert!(
        check(&doc, "growth")["detail"]
            .as_str()
            .expect("detail")
            .starts_with("first run"),
        "{doc:#}"
    );
    assert!(t.root().join(".tmpa/patrol/history.json").is_file());
    for (run, expect) in [(1, "ok"), (2, "ok"), (3, "warning")] {
        more_temporaries(&t, run * 10, 2);
        let (code, doc) = patrol_json(&t, &args);
        let tmp = growth_item(&doc, "temporaries");
        assert_eq!(tmp["delta"], 2, "{doc:#}");
        assert_eq!(tmp["streak"], run, "{doc:#}");
        assert!(tmp["per_hour"].as_f64().expect("per hour") > 0.0, "{doc:#}");
        assert_eq!(status_of(&doc, "growth"), expect, "{doc:#}");
        assert_eq!(code, if expect == "ok" { 0 } else { 1 }, "{doc:#}");
    }
    let metrics = fs::read_to_string(&prom).expect("metrics");
    assert!(
        metrics.contains("tmpa_growth_since_last_run{count=\"temporaries\",path=\"\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tmpa_growth_streak_runs{count=\"temporaries\",path=\"\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tmpa_check_status{check=\"growth\"} 1"),
        "{metrics}"
    );
    // More runs of growth are needed with --growth-runs 5; the text report says so.
    more_temporaries(&t, 90, 1);
    let r = t.run(
        "tmpa-patrol",
        &["--service-cmd", RUNNING, "--growth-runs", "5"],
    );
    assert_eq!(r.code, 0, "{}", r.stdout);
    let row = r
        .stdout
        .lines()
        .find(|l| l.starts_with("growth "))
        .expect("growth row");
    assert!(row.contains("temporaries 7 (+1,"), "{row}");
    // Stopped growing: ok again.
    let (code, doc) = patrol_json(&t, &args);
    assert_eq!(
        (code, status_of(&doc, "growth")),
        (0, "ok".to_owned()),
        "{doc:#}"
    );
    assert_eq!(growth_item(&doc, "temporaries")["streak"], 0);
}

/// A damaged history is not an error: the patrol starts a new one.
#[test]
fn a_damaged_history_starts_again() {
    let t = healthy_tree();
    t.file(".tmpa/patrol/history.json", "{ not json");
    let (code, doc) = patrol_json(&t, &["--service-cmd", RUNNING]);
    assert_eq!(code, 0, "{doc:#}");
    assert!(
        check(&doc, "growth")["detail"]
            .as_str()
            .expect("detail")
            .starts_with("first run")
    );
    let saved: Value = serde_json::from_slice(
        &fs::read(t.root().join(".tmpa/patrol/history.json")).expect("history"),
    )
    .expect("history is JSON again");
    assert_eq!(saved["samples"].as_array().expect("samples").len(), 1);
}

/// `--watch 1s --for 3s` after a deployment: a line per interval saying what changed (the
/// temporaries a failing backend leaves), then a verdict and the worst status as the exit
/// code; the history is left to the scheduled patrols.
#[test]
fn watch_prints_each_interval_then_a_verdict() {
    let t = healthy_tree();
    assert_eq!(t.run("tmpa-patrol", &["--service-cmd", RUNNING]).code, 0);
    let history = fs::read(t.root().join(".tmpa/patrol/history.json")).expect("history");
    let child = bin("tmpa-patrol")
        .arg("--root")
        .arg(t.root())
        .args(["--service-cmd", RUNNING, "--watch", "1s", "--for", "3s"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(1500));
    more_temporaries(&t, 0, 4);
    let r: Run = child.wait_with_output().expect("wait").into();
    assert_eq!(r.code, 0, "{}", r.stdout);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines[0].contains("tmpa-patrol WATCH root="), "{}", r.stdout);
    let intervals: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains(" OK ") && !l.contains("tmpa-patrol"))
        .collect();
    assert_eq!(intervals.len(), 4, "{}", r.stdout);
    assert!(
        intervals.iter().any(|l| l.contains("temporaries 4 (+4,")),
        "{}",
        r.stdout
    );
    let verdict = lines.last().expect("verdict");
    assert!(
        verdict.contains("watch verdict: OK after 4 patrols")
            && verdict.contains("temporaries 4 (+4,")
            && verdict.ends_with("exit=0"),
        "{verdict}"
    );
    assert_eq!(
        fs::read(t.root().join(".tmpa/patrol/history.json")).expect("history"),
        history
    );
}

/// A watch stopped by SIGTERM still gives its verdict, and exits with the worst status
/// seen (critical: compaction has never run here); with --json every line is a document.
#[test]
fn watch_until_stopped_exits_with_the_worst_status() {
    let t = healthy_tree();
    fs::remove_file(t.root().join(".tmpa/runs/compact_events.json")).expect("rm");
    let child = bin("tmpa-patrol")
        .arg("--root")
        .arg(t.root())
        .args(["--service-cmd", RUNNING, "--watch", "1s", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(1500));
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .expect("kill");
    let started = Instant::now();
    let r: Run = child.wait_with_output().expect("wait").into();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped promptly"
    );
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    let docs: Vec<Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(docs.len() >= 3, "{}", r.stdout);
    assert_eq!(docs[0]["status"], "critical");
    let verdict = docs.last().expect("verdict");
    assert_eq!(verdict["verdict"], "critical");
    assert_eq!(verdict["exit_code"], 2);
    assert!(
        verdict["worst_not_ok"]
            .as_array()
            .expect("list")
            .contains(&json!("compact_events_last_success=critical")),
        "{verdict:#}"
    );
}

/// A deploy gate (`--watch --since-deploy`) judges what got worse after the first patrol:
/// the job checks' critical of the dry-run weeks and a corrupt file that was there before
/// do not count (exit 0, listed "as before the deploy"); a corrupt file on a tree that had
/// none is a change (exit 1, "worse").
#[test]
fn watch_since_deploy_counts_only_what_got_worse() {
    let gate = |t: &Tree, after: &dyn Fn(&Tree)| -> Run {
        let child = bin("tmpa-patrol")
            .arg("--root")
            .arg(t.root())
            .args(["--watch", "1s", "--for", "2s", "--since-deploy"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(1300));
        after(t);
        child.wait_with_output().expect("wait").into()
    };
    // The dry-run weeks: no real run has succeeded (critical), a corrupt event already.
    let t = healthy_tree();
    fs::remove_file(t.root().join(".tmpa/runs/compact_events.json")).expect("rm");
    t.file("token_stats/2026-11-01/evt_bad.json", b"{");
    let r = gate(&t, &|t| {
        t.file("token_stats/2026-11-01/evt_bad2.json", b"{");
    });
    let verdict = r.stdout.lines().last().expect("verdict");
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(
        verdict.contains("verdict since the deploy: OK")
            && verdict.contains("no check got worse")
            && verdict.contains("compact_events_last_success=critical")
            && verdict.contains("corrupt_json=warning"),
        "{verdict}"
    );
    // Without --since-deploy the same watch is critical: no use as a gate.
    let plain: Run = bin("tmpa-patrol")
        .arg("--root")
        .arg(t.root())
        .args(["--watch", "1s", "--for", "1s"])
        .output()
        .expect("watch")
        .into();
    assert_eq!(plain.code, 2, "{}", plain.stdout);

    // A clean tree that gets a corrupt file during the watch.
    let t = healthy_tree();
    let r = gate(&t, &|t| {
        t.file("token_stats/2026-11-01/evt_bad.json", b"{");
    });
    let verdict = r.stdout.lines().last().expect("verdict");
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        verdict.contains("WARNING") && verdict.contains("worse: corrupt_json ok->warning"),
        "{verdict}"
    );
}

/// A run going on (its record written at its start, its process alive) is not a failure:
/// the job check says so and the metrics export it as running, with no exit code; killed,
/// the same record is a run that did not finish, exit 4.
#[test]
fn a_run_going_on_is_not_a_failure_and_a_killed_one_is() {
    let t = healthy_tree();
    for i in 0..40 {
        t.event("2026-11-02", &format!("k{i}"), "u1", 1, 1);
    }
    let mut child = bin("tmpa-compact")
        .arg("--root")
        .arg(t.root())
        .args(["--pace", "60s"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("compact");
    let record = t.root().join(".tmpa/runs/compact_events.json");
    let until = Instant::now() + Duration::from_secs(60);
    while !fs::read(&record)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .is_some_and(|r| r["finished"] == false)
    {
        assert!(Instant::now() < until, "the run never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    let metrics = |t: &Tree| -> (Value, String) {
        let out = tempfile::tempdir().expect("tempdir");
        let prom = out.path().join("tmpa.prom");
        let (_, doc) = patrol_json(t, &["--prometheus", prom.to_str().expect("utf-8")]);
        (doc, fs::read_to_string(&prom).expect("metrics"))
    };
    let (doc, prom) = metrics(&t);
    let detail = check(&doc, "compact_events_last_success")["detail"].to_string();
    assert!(detail.contains("is going on (pid"), "{detail}");
    assert!(
        prom.contains("tmpa_job_running{task=\"compact_events\"} 1"),
        "{prom}"
    );
    assert!(
        !prom.contains("tmpa_job_last_run_exit_code{task=\"compact_events\"}"),
        "no exit code yet: {prom}"
    );
    child.kill().expect("kill");
    child.wait().expect("wait");
    let (doc, prom) = metrics(&t);
    let c = check(&doc, "compact_events_last_success");
    assert!(c["detail"].to_string().contains("did not finish"), "{c:#}");
    assert_eq!(
        c["status"], "warning",
        "an earlier success is recent: {c:#}"
    );
    assert!(
        prom.contains("tmpa_job_running{task=\"compact_events\"} 0"),
        "{prom}"
    );
    assert!(
        prom.contains("tmpa_job_last_run_exit_code{task=\"compact_events\"} 4"),
        "{prom}"
    );
}

/// The service command comes from TMPA_SERVICE_CMD (as /etc/default/tmpa exports it);
/// empty, as shipped, the check is skipped and says how to configure it; the command gets
/// none of the patrol's other variables (a key in its environment stays there).
#[test]
fn service_command_from_the_configuration() {
    let t = healthy_tree();
    let run = |cmd: &str| -> Value {
        let r: Run = bin("tmpa-patrol")
            .arg("--root")
            .arg(t.root())
            .arg("--json")
            .env("TMPA_SERVICE_CMD", cmd)
            .env("AWS_SECRET_ACCESS_KEY", "k")
            .output()
            .expect("patrol")
            .into();
        check(&r.json(), "service").clone()
    };
    let c = run("");
    assert_eq!(c["skipped"], true, "{c:#}");
    assert!(
        c["detail"].to_string().contains("TMPA_SERVICE_CMD"),
        "{c:#}"
    );
    assert_eq!(run("echo RUNNING")["status"], "ok");
    let c = run("test -z \"$AWS_SECRET_ACCESS_KEY\" && echo RUNNING");
    assert_eq!(
        c["status"], "ok",
        "the command's environment is bare: {c:#}"
    );
}
