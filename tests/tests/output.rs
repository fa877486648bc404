//! Snapshot tests (insta) of what each program prints, text and JSON (and the patrol's
//! Prometheus file), on fixed trees: the operator reads the text, the patrol, alerting and
//! scripts read the JSON and the metrics, and a change to any
//! shows here as a reviewed diff (`cargo insta review`, or `INSTA_UPDATE=always` and
//! `git diff tests/tests/snapshots/`), not as a `contains()` that still passes.
//!
//! What changes from run to run is filtered out before comparing: timestamps, the
//! temporary root's path, durations, process ids in run names. Everything else (counts,
//! order, wording, hashes of fixed contents, exit codes) must be exactly the same.

use std::time::Duration;

use tmpa_tests::{Run, Tree, age};

const DAY: Duration = Duration::from_secs(86_400);

/// The filters for a run on `t`: its root's path, times, durations, pids.
fn settings(t: &Tree) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path("snapshots");
    s.set_prepend_module_to_snapshot(false);
    let root = t.root().to_str().expect("utf-8 temp path").to_owned();
    s.add_filter(&regex_escape(&root), "[ROOT]");
    s.add_filter(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)",
        "[TIME]",
    );
    s.add_filter(r"\d{8}T\d{6}[+-]\d{4}-\d+", "[RUN]");
    s.add_filter(
        r#""(duration_secs|secs|last_success_duration_secs)": [0-9.e-]+"#,
        r#""$1": [SECS]"#,
    );
    s.add_filter(r" in \d+\.\d+ s", " in [SECS] s");
    // A dry run's plan digest covers the root's path; a notification archive's name and
    // size, the notifications' times (set relative to now).
    s.add_filter(r"plan([= ])[0-9a-f]{12}", "plan$1[PLAN]");
    s.add_filter(r"acked-(\d+)-[0-9a-f]{16}", "acked-$1-[DIGEST]");
    s.add_filter(
        r"notifications of (\S+) into (\S+) \((\d+) -> \d+ bytes\)",
        "notifications of $1 into $2 ($3 -> [TAR] bytes)",
    );
    s
}

/// `text` with the characters a regex treats specially escaped.
fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if r"\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A run's exit code, stdout and stderr, as one text to snapshot.
fn shown(r: &Run) -> String {
    format!(
        "exit: {}\n--- stdout\n{}--- stderr\n{}",
        r.code, r.stdout, r.stderr
    )
}

/// Past days with events of two users, one of them with a number no 64-bit type holds
/// and a decimal longer than a double's (kept exactly, as written), and one corrupt file.
fn events_tree() -> Tree {
    let t = Tree::new();
    t.event("2026-11-01", "a1", "u1", 100, 20);
    t.event("2026-11-01", "a2", "u1", 7, 3);
    // Numbers beyond 64 bits and long decimals are kept exactly, as written.
    t.file(
        "token_stats/2026-11-01/evt_b1.json",
        r#"{"id":"b1","ts":"2026-11-01T10:00:00Z","user_id":"u2","model":"m","prompt_tokens":12,"completion_tokens":5,"request":1000000000000000000001,"cost":0.10000000000000000000001}"#,
    );
    t.event("2026-11-02", "c1", "u2", 1, 1);
    t.file("token_stats/2026-11-01/evt_bad.json", "{not json");
    t
}

#[test]
fn compact_text_and_json() {
    let t = events_tree();
    settings(&t).bind(|| {
        let dry = t.run("tmpa-compact", &["--before", "2026-11-03", "--dry-run"]);
        insta::assert_snapshot!("compact_dry_run", shown(&dry));
        let real = t.run("tmpa-compact", &["--before", "2026-11-03", "--json"]);
        insta::assert_snapshot!("compact_real_json", shown(&real));
        let again = t.run("tmpa-compact", &["--before", "2026-11-03"]);
        insta::assert_snapshot!("compact_again", shown(&again));
    });
}

/// Old and young sessions, old acknowledged and unread notifications.
fn archive_tree() -> Tree {
    let t = Tree::new();
    let old = t.file("chat_history/u1/sessions/s_old.json", r#"{"m":["hello"]}"#);
    age(&old, DAY * 60);
    t.file("chat_history/u1/sessions/s_new.json", r#"{"m":[]}"#);
    let bad = t.file("chat_history/u2/sessions/s_bad.json", "{");
    age(&bad, DAY * 60);
    for (id, acked) in [("n1", true), ("n2", false)] {
        let n = t.file(
            format!("notifications/u3/inbox/ntf_{id}.json"),
            format!(r#"{{"id":"{id}"}}"#),
        );
        age(&n, DAY * 200);
        if acked {
            let a = t.file(format!("notifications/u3/ack/ntf_{id}.ack"), "{}");
            age(&a, DAY * 150);
        }
    }
    t
}

#[test]
fn archive_text_and_json() {
    let t = archive_tree();
    settings(&t).bind(|| {
        let dry = t.run("tmpa-archive", &["--older-than", "30d", "--dry-run"]);
        insta::assert_snapshot!("archive_dry_run", shown(&dry));
        let real = t.run("tmpa-archive", &["--older-than", "30d"]);
        insta::assert_snapshot!("archive_real", shown(&real));
        let json = t.run("tmpa-archive", &["--older-than", "30d", "--json"]);
        insta::assert_snapshot!("archive_again_json", shown(&json));
    });
}

#[test]
fn tmpclean_text() {
    let t = Tree::new();
    t.file("notifications/u1/inbox/ntf_1.json", "{}");
    t.file("notifications/u1/inbox/ntf_1.json.tmp", "{");
    t.file("notifications/u1/inbox/ntf_2.json.tmp", "{");
    settings(&t).bind(|| {
        let dry = t.run("tmpa-tmpclean", &["--older-than", "1m", "--dry-run"]);
        insta::assert_snapshot!("tmpclean_dry_run", shown(&dry));
        let real = t.run("tmpa-tmpclean", &["--older-than", "1m"]);
        insta::assert_snapshot!("tmpclean_real", shown(&real));
    });
}

#[test]
fn snapshot_dry_run_and_verify() {
    let t = events_tree();
    let out = tempfile::tempdir().expect("tempdir");
    let to = out.path().join("snap");
    settings(&t).bind(|| {
        let mut s = insta::Settings::clone_current();
        let dest = out.path().to_str().expect("utf-8").to_owned();
        s.add_filter(&regex_escape(&dest), "[DEST]");
        s.bind(|| {
            let to_arg = to.to_str().expect("utf-8");
            let dry = t.run("tmpa-snapshot", &["--to", to_arg, "--dry-run"]);
            insta::assert_snapshot!("snapshot_dry_run", shown(&dry));
            assert_eq!(t.run("tmpa-snapshot", &["--to", to_arg]).code, 0);
            let v: Run = tmpa_tests::bin("tmpa-snapshot")
                .arg("--verify")
                .arg(&to)
                .output()
                .expect("run")
                .into();
            insta::assert_snapshot!("snapshot_verify", shown(&v));
        });
    });
}

/// A tree with something for each of the patrol's checks to say: events, a compacted
/// day, an inbox, a session, a corrupt event file, a temporary, and both jobs' run
/// records, written as the programs write them, of runs that succeeded 2h 30m 30s ago (the
/// ages the patrol prints keep to the minute for 30 seconds).
fn patrol_tree() -> Tree {
    let t = events_tree();
    t.file("notifications/u1/inbox/ntf_1.json", r#"{"title":"hi"}"#);
    t.file("chat_history/u1/sessions/s1.json", r#"{"m":[]}"#);
    t.file("notifications/u1/inbox/ntf_2.json.tmp", "{");
    let started = chrono::Local::now() - chrono::Duration::seconds(2 * 3600 + 30 * 60 + 30);
    let at =
        |t: chrono::DateTime<chrono::Local>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
    for task in ["compact_events", "archive_history"] {
        let record = serde_json::json!({
            "task": task,
            "program": "tmpa-x",
            "root": t.root().display().to_string(),
            "started_at": at(started),
            "finished_at": at(started + chrono::Duration::seconds(60)),
            "duration_secs": 60.0,
            "dry_run": false,
            "exit_code": 0,
            "counts": {"deleted": 3},
            "receipt": null,
            "last_success_at": at(started),
            "last_success_duration_secs": 60.0,
            "last_success_exit_code": 0,
        });
        t.file(
            format!(".tmpa/runs/{task}.json"),
            serde_json::to_vec_pretty(&record).expect("json"),
        );
    }
    t
}

/// What varies in the patrol's output from machine to machine and run to run besides the
/// filters of every program: the file system under the temporary root (its type, its
/// inodes), the jobs' ages in seconds, Unix times, the history's interval.
fn patrol_settings(t: &Tree) -> insta::Settings {
    let mut s = settings(t);
    s.add_filter(
        r"\d+(\.\d+)?% of inodes used \(\d+ of \d+, \d+ free\)",
        "[PCT]% of inodes used ([USED] of [TOTAL], [FREE] free)",
    );
    s.add_filter(r"inodes_used=\d+(\.\d+)?%", "inodes_used=[PCT]%");
    s.add_filter(r"(inodes +ok) +[0-9.]+", "$1 [PCT]");
    s.add_filter(
        r#"("name": "(inodes|\w+_last_success)",\n\s+"status": "\w+",\n\s+"value": )[0-9.e-]+"#,
        "$1[N]",
    );
    s.add_filter(r"(_last_success +\w+) +[0-9.]+", "$1 [AGE]");
    s.add_filter(r"(_last_success_age)=\d+s", "$1=[AGE]s");
    s.add_filter(
        r#""(last_success_age_secs|interval_secs)": [0-9.e-]+"#,
        r#""$1": [SECS]"#,
    );
    s.add_filter(
        r#"(tmpa_check_value\{check="(inodes|\w+_last_success)"\}) [0-9.e-]+"#,
        "$1 [N]",
    );
    s.add_filter(r"(tmpa_patrol_duration_seconds) [0-9.e-]+", "$1 [SECS]");
    s.add_filter(r"\b(ext4|tmpfs|xfs|btrfs|overlay|zfs)\b", "[FS]");
    s.add_filter(r"\b1\d{9}(\.\d+)?\b", "[UNIX]");
    s.add_filter(r"\b\d+s ago\b", "[AGO] ago");
    s
}

#[test]
fn patrol_text_json_and_prometheus() {
    let t = patrol_tree();
    let service =
        "echo 'app                              RUNNING   pid 4242, uptime 3 days, 1:02:03'";
    let prom_dir = tempfile::tempdir().expect("tempdir");
    let prom = prom_dir.path().join("tmpa.prom");
    patrol_settings(&t).bind(|| {
        let text = t.run("tmpa-patrol", &["--service-cmd", service]);
        insta::assert_snapshot!("patrol_text", shown(&text));
        let json = t.run(
            "tmpa-patrol",
            &[
                "--service-cmd",
                service,
                "--json",
                "--prometheus",
                prom.to_str().expect("utf-8"),
            ],
        );
        insta::assert_snapshot!("patrol_json", shown(&json));
        let metrics = std::fs::read_to_string(&prom).expect("the Prometheus file");
        insta::assert_snapshot!("patrol_prometheus", metrics);
    });
}
