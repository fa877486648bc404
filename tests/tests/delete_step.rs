//! The one delete step with the backend live: a writer acting in the exact instant between
//! a program's last check and its delete (the instant stretched from outside with
//! `strace -e inject=SYSCALL:delay_enter=US`) never loses its write; a kill at every
//! system call of the step leaves each file at its name or in the quarantine, and the
//! next run finishes; an existing holder is made durable before a source goes on its
//! strength; `--older-than` has a floor.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tmpa_tests::{Run, Tree, age, bin, events_in_days, strace_works};

const D1: &str = "2026-11-01";
const OLD: Duration = Duration::from_secs(60 * 86_400);
/// How long the stretched system call waits, in microseconds.
const STRETCH_US: u64 = 2_000_000;
/// When the writer acts after the receipt line appeared: well inside the stretch.
const WRITER_AFTER: Duration = Duration::from_millis(300);

/// Runs `program` on `root` under strace with every call of `syscall` delayed.
fn stretched(program: &str, syscall: &str, root: &Path, args: &[&str]) -> Child {
    tmpa_tests::strace_inject(&format!("{syscall}:delay_enter={STRETCH_US}"), program)
        .arg("--root")
        .arg(root)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("strace")
}

fn finish(child: Child) -> Run {
    let r: Run = child.wait_with_output().expect("wait").into();
    assert!(!r.stderr.contains("panicked"), "{r:?}");
    r
}

/// Every regular file below `.tmpa/quarantine` of `root`.
fn quarantined(root: &Path) -> Vec<PathBuf> {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root.join(".tmpa/quarantine"), &mut out);
    out.sort();
    out
}

fn old_session(t: &Tree, user: &str, session: &str, body: &str) -> PathBuf {
    let p = t.file(format!("chat_history/{user}/sessions/{session}.json"), body);
    age(&p, OLD);
    p
}

/// Archives an old session while a user resumes it (tmp + rename) 0.3 s into the
/// stretched `syscall`; the resumed version must be the live one afterwards, read back
/// through the library, with nothing left in the quarantine.
fn resume_during(syscall: &str) -> Run {
    assert!(strace_works(), "strace cannot inject here");
    let t = Tree::new();
    let live = old_session(&t, "u1", "s1", r#"{"messages":["old"]}"#);
    let mut child = stretched("tmpa-archive", syscall, t.root(), &[]);
    tmpa_tests::wait_for_receipt_line(&mut child, t.root(), "archive_history");
    std::thread::sleep(WRITER_AFTER);
    tmpa_tests::save_by_rename(&live, r#"{"messages":["old","new"]}"#);
    let r = finish(child);
    assert!(matches!(r.code, 0 | 1), "{r:?}");
    let rt = tmpa_core::Root::open(t.root()).expect("root");
    let bytes = rt
        .read_session(&"u1".parse().unwrap(), &"s1".parse().unwrap())
        .expect("read");
    assert_eq!(bytes, br#"{"messages":["old","new"]}"#, "{syscall}");
    assert!(
        quarantined(t.root()).is_empty(),
        "{:?}",
        quarantined(t.root())
    );
    let kept = tmpa_tests::receipt_lines(t.root(), "archive_history")
        .into_iter()
        .filter(|l| l["line"] == "kept")
        .count();
    Run {
        code: r.code,
        stdout: format!("{}\nkept lines: {kept}", r.stdout),
        stderr: r.stderr,
    }
}

/// A user resumes a 30-day-old chat in the instant its session is being deleted (the
/// unlink stretched to 2 s): the resumed session is never deleted; the receipt and the
/// report stand for the old version, which is in the archive.
#[test]
fn session_resumed_during_its_unlink_keeps_the_new_version() {
    // Deleted (the old version, moved aside before the save) or kept (the save landed
    // before the move, on a slow machine): the resumed version is live either way.
    resume_during("unlinkat");
}

/// The resumed session lands just before the move into the quarantine (the move
/// stretched): what is moved is the new version, found not to be the verified file, and
/// put back; the archive of the old version is taken back; nothing is lost.
#[test]
fn session_resumed_during_its_move_is_put_back() {
    let r = resume_during("renameat2");
    assert!(
        r.stdout.contains("changed"),
        "the run says the session changed:\n{}",
        r.stdout
    );
    assert!(r.stdout.contains("kept lines: 1"), "{}", r.stdout);
}

/// The backend rewrites an event of a past day (same id, tmp + rename) in the instant its
/// loose file is being deleted: the rewritten event is never deleted, and the next
/// compaction reports it as a conflict rather than dropping either version.
#[test]
fn event_rewritten_during_its_delete_is_kept() {
    assert!(strace_works(), "strace cannot inject here");
    for syscall in ["unlinkat", "renameat2"] {
        let t = Tree::new();
        let e = t.event(D1, "e1", "u", 1, 1);
        let mut child = stretched("tmpa-compact", syscall, t.root(), &["--day", D1]);
        tmpa_tests::wait_for_receipt_line(&mut child, t.root(), "compact_events");
        std::thread::sleep(WRITER_AFTER);
        let rewritten = tmpa_tests::event_json("e1", &format!("{D1}T12:00:00Z"), "u", "m", 7, 7);
        tmpa_tests::save_by_rename(&e, &rewritten);
        let r = finish(child);
        assert!(matches!(r.code, 0 | 1), "{syscall}: {r:?}");
        assert_eq!(
            fs::read_to_string(&e).expect("the rewritten event is there"),
            rewritten,
            "{syscall}"
        );
        let again = t.run("tmpa-compact", &["--day", D1]);
        assert_eq!(
            again.code, 1,
            "{syscall}: a conflict needs a look: {again:?}"
        );
        assert!(e.exists(), "{syscall}: the conflicting event is kept");
        assert!(quarantined(t.root()).is_empty(), "{syscall}");
    }
}

/// A writer that reuses a fixed temporary name (Python's `open(x.tmp, "w")`, write,
/// fsync, `os.rename`) opens the stale temporary while tmpclean holds its lease and is
/// moving it: the open waits, tmpclean sees the break after the move, puts the file back
/// and releases the lease; the writer's save succeeds. With the unlink stretched instead,
/// the writer creates a new temporary under the free name and saves too.
#[test]
fn writer_reopening_a_stale_temporary_saves() {
    assert!(strace_works(), "strace cannot inject here");
    for (syscall, words) in [("renameat2", "lease broken"), ("unlinkat", "deleted")] {
        let t = Tree::new();
        let fin = t.file("notifications/u1/inbox/ntf_1.json", "{}");
        t.file("notifications/u1/inbox/ntf_1.json.tmp", "{\"stale\"");
        let mut child = stretched("tmpa-tmpclean", syscall, t.root(), &["--older-than", "1m"]);
        tmpa_tests::wait_for_receipt_line(&mut child, t.root(), "tmp_cleanup");
        std::thread::sleep(WRITER_AFTER);
        let w = tmpa_tests::save_through_fixed_temporary(&fin);
        let r = finish(child);
        assert!(
            w.status.success() && String::from_utf8_lossy(&w.stdout).contains("saved"),
            "{syscall}: the writer's save failed: {w:?}\ntmpclean: {r:?}"
        );
        assert_eq!(
            fs::read_to_string(&fin).expect("final"),
            r#"{"saved":true}"#
        );
        assert!(
            r.stdout.contains(words),
            "{syscall}: expected {words:?} in:\n{}",
            r.stdout
        );
        assert!(quarantined(t.root()).is_empty(), "{syscall}");
    }
}

/// The three programs' work, small: three loose events of a past day, two old sessions,
/// a stale temporary.
fn small_tree() -> Tree {
    let t = Tree::new();
    for i in 0..3 {
        t.event(D1, &format!("e{i}"), "u", i, 1);
    }
    old_session(&t, "u1", "s1", r#"{"s":1}"#);
    old_session(&t, "u1", "s2", r#"{"s":2}"#);
    t.file("notifications/u1/inbox/ntf_1.json", "{}");
    t.file("notifications/u1/inbox/ntf_1.json.tmp", "{");
    t
}

/// Nothing the backend wrote is lost: every event once, every session live or archived
/// with its bytes, the final file of the temporary.
fn nothing_lost(root: &Path) {
    assert_eq!(events_in_days(root, &[D1]), 3);
    let rt = tmpa_core::Root::open(root).expect("root");
    for (s, body) in [("s1", r#"{"s":1}"#), ("s2", r#"{"s":2}"#)] {
        let bytes = rt
            .read_session(&"u1".parse().unwrap(), &s.parse().unwrap())
            .expect("session readable");
        assert_eq!(bytes, body.as_bytes());
    }
    assert!(root.join("notifications/u1/inbox/ntf_1.json").exists());
}

/// A SIGKILL at every call of each system call of the delete step (the move, the checks,
/// the unlink, the syncs), in each deleting program: after every kill each file is at its
/// name or in the quarantine's in-flight area and nothing is lost; the next run finishes
/// the job (deleting what its receipt verified, putting back the rest) and leaves the
/// quarantine empty.
#[test]
fn kill_at_every_syscall_of_the_step_loses_nothing() {
    assert!(strace_works(), "strace cannot inject here");
    let programs: [(&str, &[&str]); 3] = [
        ("tmpa-compact", &["--day", D1]),
        ("tmpa-archive", &[]),
        ("tmpa-tmpclean", &["--older-than", "1m"]),
    ];
    let mut kills = 0;
    for (program, args) in programs {
        for syscall in ["renameat2", "newfstatat", "unlinkat", "fsync"] {
            for n in 1..=200 {
                let t = small_tree();
                let r: Run = tmpa_tests::strace_inject(
                    &format!("{syscall}:signal=SIGKILL:when={n}"),
                    program,
                )
                .arg("--root")
                .arg(t.root())
                .args(args)
                .output()
                .expect("strace")
                .into();
                let killed = r.code != 0 && r.code != 1;
                nothing_lost(t.root());
                for q in quarantined(t.root()) {
                    assert!(
                        q.to_string_lossy().contains("/quarantine/in-flight/"),
                        "{program} {syscall} #{n}: {q:?}"
                    );
                }
                let again = t.run(program, args);
                assert_eq!(
                    again.code, 0,
                    "{program} after a kill at {syscall} #{n}: {again:?}"
                );
                nothing_lost(t.root());
                assert!(
                    quarantined(t.root()).is_empty(),
                    "{program} {syscall} #{n}: {:?}",
                    quarantined(t.root())
                );
                if !killed {
                    break;
                }
                kills += 1;
            }
        }
    }
    tmpa_tests::faketime_leftovers_removed();
    assert!(kills > 20, "only {kills} kills landed");
}

/// A run killed with a file in the quarantine: the next run says what it recovered and
/// finishes the deletion its receipt verified; a file whose inode the receipt does not
/// name is moved back under its name, or kept aside when a newer file has the name.
#[test]
fn recovery_finishes_verified_deletions_and_puts_back_the_rest() {
    let t = Tree::new();
    let e = t.event(D1, "e1", "u", 1, 1);
    let first = t.run("tmpa-compact", &["--day", D1, "--no-delete"]);
    assert_eq!(first.code, 0, "{first:?}");
    // A killed run: its receipt names e1's inode; e1 and two strangers sit in its
    // quarantine (one whose name is free, one whose name a newer file has).
    let run_id = "20261201T023000+0000-4242";
    let aside = t
        .root()
        .join(".tmpa/quarantine/in-flight/compact_events")
        .join(run_id)
        .join("token_stats")
        .join(D1);
    fs::create_dir_all(&aside).expect("mkdir");
    let stamp = stamp_of(&e);
    let receipt = t.root().join(".tmpa/receipts/compact_events");
    fs::create_dir_all(&receipt).expect("mkdir");
    let line = serde_json::json!({
        "line": "delete", "file": e.to_string_lossy(), "bytes": stamp["size"],
        "sha256": "00", "stamp": stamp, "held_by": "x", "verified_by": "compacted_event",
        "day": D1, "held_events": 1,
    });
    fs::write(receipt.join(format!("{run_id}.jsonl")), format!("{line}\n")).expect("receipt");
    fs::rename(&e, aside.join("evt_e1.json")).expect("move aside");
    let stranger = tmpa_tests::event_json("e2", &format!("{D1}T13:00:00Z"), "u", "m", 2, 2);
    fs::write(aside.join("evt_e2.json"), &stranger).expect("stranger");
    fs::write(aside.join("evt_e3.json"), "{\"older\":1}").expect("older");
    t.file(format!("token_stats/{D1}/evt_e3.json"), "{\"newer\":1}");
    let r = t.run("tmpa-compact", &["--day", D1, "--json"]);
    assert_eq!(r.code, 1, "a file kept aside needs a look: {r:?}");
    let doc = r.json();
    let actions: Vec<(String, String)> = doc["recovered"]
        .as_array()
        .expect("recovered")
        .iter()
        .map(|x| {
            (
                x["file"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_owned(),
                x["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("evt_e1.json".to_owned(), "deleted".to_owned()),
            ("evt_e2.json".to_owned(), "restored".to_owned()),
            ("evt_e3.json".to_owned(), "kept".to_owned()),
        ]
    );
    let kept = t
        .root()
        .join(".tmpa/quarantine/kept/compact_events")
        .join(run_id)
        .join("token_stats")
        .join(D1)
        .join("evt_e3.json");
    assert_eq!(
        fs::read_to_string(&kept).expect("kept aside"),
        "{\"older\":1}"
    );
    assert!(!aside.exists(), "the killed run's quarantine is tidied");
    let recovered: Vec<String> = tmpa_tests::receipt_lines(t.root(), "compact_events")
        .into_iter()
        .filter(|l| l["line"] == "recovered")
        .map(|l| l["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        recovered,
        ["deleted", "restored", "kept"],
        "the receipt says so"
    );
    // The stranger is back and compacted like any loose event.
    assert_eq!(events_in_days(t.root(), &[D1]), 2);
}

fn stamp_of(p: &Path) -> serde_json::Value {
    use std::os::unix::fs::MetadataExt;
    let m = fs::symlink_metadata(p).expect("stat");
    serde_json::json!({
        "dev": m.dev(), "ino": m.ino(), "size": m.size(),
        "mtime_ns": m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        "ctime_ns": m.ctime() * 1_000_000_000 + m.ctime_nsec(),
    })
}

/// Trace lines (`strace -y`) of `program` on `root`: fsyncs and renames, with the paths
/// of their descriptors.
fn traced(program: &str, root: &Path, args: &[&str]) -> (Run, String) {
    let log = tempfile::NamedTempFile::new().expect("log");
    let r: Run = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-y",
            "-e",
            "trace=fsync,fdatasync,renameat2,unlinkat",
            "-o",
        ])
        .arg(log.path())
        .arg(bin(program).get_program())
        .env_remove("TMPA_ROOT")
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("strace")
        .into();
    (r, fs::read_to_string(log.path()).expect("trace"))
}

/// Index of the first trace line holding every needle.
fn first(trace: &str, needles: &[&str]) -> Option<usize> {
    trace
        .lines()
        .position(|l| needles.iter().all(|n| l.contains(n)))
}

/// A `_compacted.json` that already holds the loose events (an earlier run wrote it and
/// stopped before deleting) is fsynced, file and directory, before the first loose file
/// is moved to its deletion; likewise an archive that already holds a session.
#[test]
fn existing_holders_are_made_durable_before_a_source_goes() {
    let t = Tree::new();
    t.event(D1, "e1", "u", 1, 1);
    let written = t.run("tmpa-compact", &["--day", D1, "--no-delete"]);
    assert_eq!(written.code, 0, "{written:?}");
    let (r, trace) = traced("tmpa-compact", t.root(), &["--day", D1]);
    assert_eq!(r.code, 0, "{r:?}");
    let moved = first(&trace, &["renameat2", "evt_e1.json", "quarantine"]).expect(&trace);
    let file_sync = first(&trace, &["fsync(", "_compacted.json>"]).expect(&trace);
    let day_sync = first(&trace, &["fsync(", &format!("{D1}>")]).expect(&trace);
    assert!(file_sync < moved && day_sync < moved, "{trace}");

    old_session(&t, "u1", "s1", r#"{"s":1}"#);
    let written = t.run("tmpa-archive", &["--no-delete"]);
    assert_eq!(written.code, 0, "{written:?}");
    let (r, trace) = traced("tmpa-archive", t.root(), &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let moved = first(&trace, &["renameat2", "s1.json", "quarantine"]).expect(&trace);
    let file_sync = first(&trace, &["fsync(", "s1.json.gz>"]).expect(&trace);
    let dir_sync = first(&trace, &["fsync(", "/archive>"]).expect(&trace);
    assert!(file_sync < moved && dir_sync < moved, "{trace}");
}

/// `--older-than` below a minute is refused (exit 2, nothing done): a temporary that young
/// may be between its writer's close and rename.
#[test]
fn older_than_has_a_floor() {
    let t = Tree::new();
    t.file("notifications/u1/inbox/ntf_1.json", "{}");
    let tmp = t.file("notifications/u1/inbox/ntf_1.json.tmp", "{");
    for age in ["0s", "1s", "59s"] {
        let r = t.run("tmpa-tmpclean", &["--older-than", age]);
        assert_eq!(r.code, 2, "{age}: {r:?}");
        assert!(r.stderr.contains("floor of 1m"), "{age}: {}", r.stderr);
        assert!(tmp.exists());
    }
    let r = t.run("tmpa-tmpclean", &["--older-than", "1m", "--dry-run"]);
    assert_eq!(r.code, 0, "{r:?}");
}

/// The patrol reports what the delete step left in the quarantine, on the check of the
/// task that left it (a warning), in its JSON and in its metrics; it touches none of it.
#[test]
fn patrol_reports_the_quarantine() {
    let t = Tree::new();
    t.event(D1, "e1", "u", 1, 1);
    let kept = t.file(
        format!(".tmpa/quarantine/kept/compact_events/20261201T023000+0000-1/token_stats/{D1}/evt_e9.json"),
        "{}",
    );
    let in_flight = t.file(
        ".tmpa/quarantine/in-flight/tmp_cleanup/20261201T023000+0000-2/notifications/u1/inbox/ntf_1.json.tmp",
        "{",
    );
    let prom = tempfile::tempdir().expect("tempdir");
    let prom_file = prom.path().join("tmpa.prom");
    let r = t.run(
        "tmpa-patrol",
        &["--json", "--prometheus", prom_file.to_str().expect("utf-8")],
    );
    let doc = r.json();
    let check = |name: &str| {
        doc["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .expect(name)
    };
    let compact = check("compact_events_last_success");
    assert!(
        compact["detail"]
            .as_str()
            .unwrap()
            .contains("1 file(s) kept aside"),
        "{compact}"
    );
    assert_ne!(compact["status"], "ok", "{compact}");
    let tmp = check("tmp_files");
    assert!(
        tmp["detail"]
            .as_str()
            .unwrap()
            .contains("in-flight/tmp_cleanup"),
        "{tmp}"
    );
    assert_ne!(tmp["status"], "ok", "{tmp}");
    let tasks = doc["quarantine"]["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    let metrics = fs::read_to_string(&prom_file).expect("metrics");
    assert!(
        metrics.contains("tmpa_quarantine_files{area=\"kept\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tmpa_quarantine_files{area=\"in_flight\"} 1"),
        "{metrics}"
    );
    assert!(
        kept.exists() && in_flight.exists(),
        "the patrol touches nothing"
    );
}
