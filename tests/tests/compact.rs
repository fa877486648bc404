//! tmpa-compact on real trees: merging, verification before deletion, corrupt input,
//! conflicts, dry runs, locks, crashes, full disks, immutable days and concurrent writers.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tmpa_core::{Day, Root};
use tmpa_tests::{Immutable, Tmpfs, Tree, bin, event_json, is_root};

const D1: &str = "2026-11-01";
const D2: &str = "2026-11-02";
const D3: &str = "2026-11-03";

fn compacted_ids(tree: &Tree, day: &str) -> Vec<String> {
    let doc: Value = serde_json::from_slice(
        &fs::read(
            tree.root()
                .join(format!("token_stats/{day}/_compacted.json")),
        )
        .expect("compacted exists"),
    )
    .expect("compacted is JSON");
    doc["events"]
        .as_array()
        .expect("events array")
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect()
}

fn loose_names(tree: &Tree, day: &str) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(tree.root().join(format!("token_stats/{day}")))
        .expect("day dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("evt_"))
        .collect();
    v.sort();
    v
}

fn summary(tree: &Tree, day: &str) -> Value {
    serde_json::from_slice(
        &fs::read(tree.root().join(format!("token_stats/{day}/_summary.json"))).expect("summary"),
    )
    .expect("summary is JSON")
}

/// Every receipt line of every compaction run (a torn last line from a kill is skipped).
fn receipts(tree: &Tree) -> Vec<Value> {
    tmpa_tests::receipt_lines_after_kills(tree.root(), "compact_events")
}

/// Three past days of events are merged, verified, summarised and their loose files deleted;
/// the receipt names every deleted file with its SHA-256; a second run changes nothing.
#[test]
fn compacts_past_days_and_second_run_is_a_no_op() {
    let t = Tree::new();
    let mut hashes = BTreeMap::new();
    for (day, n) in [(D1, 3), (D2, 5), (D3, 2)] {
        for i in 0..n {
            let p = t.event(
                day,
                &format!("{day}-{i}"),
                &format!("u{}", i % 2),
                10 + i,
                1,
            );
            hashes.insert(
                p.clone(),
                tmpa_core::maintenance::sha256_hex(&fs::read(&p).expect("read")),
            );
        }
    }
    let r = t.run("tmpa-compact", &["--before", "2026-11-04"]);
    assert_eq!(r.code, 0, "{r:?}");
    for (day, n) in [(D1, 3u64), (D2, 5), (D3, 2)] {
        assert_eq!(compacted_ids(&t, day).len() as u64, n);
        assert!(loose_names(&t, day).is_empty(), "{day}: loose files left");
        let s = summary(&t, day);
        assert_eq!(s["events"], n);
        let prompt: u64 = (0..n).map(|i| 10 + i).sum();
        assert_eq!(s["prompt_tokens"], prompt);
        assert_eq!(s["total_tokens"], prompt + n);
        assert_eq!(s["by_model"]["gpt-x"]["events"], n);
    }
    let rec = receipts(&t);
    assert_eq!(rec.len(), hashes.len());
    for line in &rec {
        let file = PathBuf::from(line["file"].as_str().expect("file"));
        let rel = file
            .strip_prefix(fs::canonicalize(t.root()).expect("canon"))
            .expect("under root");
        assert_eq!(
            line["sha256"].as_str(),
            Some(hashes[&t.root().join(rel)].as_str())
        );
        assert_eq!(line["line"], "delete");
        assert_eq!(line["verified_by"], "compacted_event");
        assert!(line["stamp"]["ino"].as_u64().is_some(), "{line}");
    }
    let record: Value = serde_json::from_slice(
        &fs::read(t.root().join(".tmpa/runs/compact_events.json")).expect("record"),
    )
    .expect("json");
    assert_eq!(record["exit_code"], 0);
    assert_eq!(record["dry_run"], false);
    assert_eq!(record["counts"]["deleted"], 10);

    let before = t.snapshot();
    let r2 = t.run("tmpa-compact", &["--before", "2026-11-04"]);
    assert_eq!(r2.code, 0, "{r2:?}");
    assert_eq!(
        t.snapshot(),
        before,
        "a run with nothing new must change nothing"
    );
}

/// The output is deterministic: the same set of events gives byte-identical files whatever
/// the order they were written or compacted in.
#[test]
fn same_events_give_byte_identical_output() {
    let (a, b) = (Tree::new(), Tree::new());
    for i in 0..6 {
        a.event(D1, &format!("e{i}"), "u", i, i);
    }
    for i in (0..6).rev() {
        b.event(D1, &format!("e{i}"), "u", i, i);
        if i == 3 {
            // b compacts half way: the rest arrives "late".
            assert_eq!(b.run("tmpa-compact", &["--day", D1]).code, 0);
        }
    }
    assert_eq!(a.run("tmpa-compact", &["--day", D1]).code, 0);
    assert_eq!(b.run("tmpa-compact", &["--day", D1]).code, 0);
    let read =
        |t: &Tree, f: &str| fs::read(t.root().join(format!("token_stats/{D1}/{f}"))).expect("read");
    assert_eq!(read(&a, "_compacted.json"), read(&b, "_compacted.json"));
    // The summary's `source` stamp holds the compacted file's mtime; all else is identical.
    let without_source = |t: &Tree| {
        let mut v: Value = serde_json::from_slice(&read(t, "_summary.json")).expect("json");
        v.as_object_mut().expect("object").remove("source");
        v
    };
    assert_eq!(without_source(&a), without_source(&b));
}

/// Only days strictly before --before (default: today) are touched.
#[test]
fn today_is_left_alone() {
    let t = Tree::new();
    let today = Day::today_local().to_string();
    t.event(&today, "now", "u", 1, 1);
    t.event(D1, "old", "u", 1, 1);
    assert_eq!(t.run("tmpa-compact", &[]).code, 0);
    assert_eq!(loose_names(&t, &today), vec!["evt_now.json"]);
    assert!(
        !t.root()
            .join(format!("token_stats/{today}/_compacted.json"))
            .exists()
    );
    assert!(loose_names(&t, D1).is_empty());
}

/// Corrupt, empty, truncated and misnamed loose files are kept and reported by path with
/// the reason; the valid events of the same day are still compacted; exit 1.
#[test]
fn corrupt_loose_files_are_kept_and_named() {
    let t = Tree::new();
    t.event(D1, "good", "u", 5, 5);
    let bad = [
        ("evt_empty.json", String::new()),
        ("evt_trunc.json", "{\"id\":\"trunc\",\"ts\":".to_owned()),
        (
            "evt_noid.json",
            r#"{"ts":"2026-11-01T00:00:00Z"}"#.to_owned(),
        ),
        (
            "evt_other.json",
            event_json("different", "2026-11-01T00:00:00Z", "u", "m", 1, 1),
        ),
        (
            "evt_neg.json",
            event_json("neg", "2026-11-01T00:00:00Z", "u", "m", 1, 1).replace(":1,", ":-1,"),
        ),
        (
            "evt_dotdot.json",
            event_json("../../etc", "2026-11-01T00:00:00Z", "u", "m", 1, 1),
        ),
    ];
    for (name, body) in &bad {
        t.file(format!("token_stats/{D1}/{name}"), body);
    }
    let bomb = "[".repeat(100_000);
    t.file(format!("token_stats/{D1}/evt_bomb.json"), &bomb);
    let r = t.run("tmpa-compact", &["--day", D1]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(compacted_ids(&t, D1), vec!["good"]);
    let left = loose_names(&t, D1);
    for (name, _) in &bad {
        assert!(left.contains(&name.to_string()), "{name} was deleted");
        assert!(
            r.stdout.contains(name),
            "{name} not reported:\n{}",
            r.stdout
        );
    }
    assert!(left.contains(&"evt_bomb.json".to_owned()));
    assert!(
        r.stdout.contains("differs from the file name"),
        "{}",
        r.stdout
    );
    // A day with problems is never cached: a cached summary is always a whole day's.
    assert!(
        !t.root()
            .join(format!("token_stats/{D1}/_summary.json"))
            .exists()
    );
}

/// Odd names: a non-UTF-8 name, a symlinked event pointing outside the root and a FIFO
/// are reported and never followed, read or deleted.
#[test]
fn odd_entries_are_reported_not_followed() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let t = Tree::new();
    let outside = tempfile::tempdir().expect("tempdir");
    let secret = outside.path().join("evt_secret.json");
    fs::write(
        &secret,
        event_json("link", "2026-11-01T00:00:00Z", "u", "m", 1, 1),
    )
    .expect("write");
    t.event(D1, "ok", "u", 1, 1);
    let day = t.root().join(format!("token_stats/{D1}"));
    std::os::unix::fs::symlink(&secret, day.join("evt_link.json")).expect("symlink");
    fs::write(day.join(OsStr::from_bytes(b"evt_\xff.json")), b"{}").expect("odd name");
    tmpa_tests::mkfifo(&day.join("evt_fifo.json"));
    let r = t.run("tmpa-compact", &["--day", D1]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("symlink"), "{}", r.stdout);
    assert!(r.stdout.contains("not valid UTF-8"), "{}", r.stdout);
    assert!(r.stdout.contains("not a regular file"), "{}", r.stdout);
    assert_eq!(compacted_ids(&t, D1), vec!["ok"]);
    assert!(fs::symlink_metadata(day.join("evt_link.json")).is_ok());
    assert!(day.join(OsStr::from_bytes(b"evt_\xff.json")).exists());
    assert!(day.join("evt_fifo.json").exists());
    assert!(secret.exists());
}

/// A symlinked day directory that points outside the root is not followed; the files it
/// points at stay untouched.
#[test]
fn symlinked_day_directory_is_not_followed() {
    let t = Tree::new();
    let outside = tempfile::tempdir().expect("tempdir");
    fs::write(
        outside.path().join("evt_x.json"),
        event_json("x", "2026-11-01T00:00:00Z", "u", "m", 1, 1),
    )
    .expect("w");
    std::os::unix::fs::symlink(outside.path(), t.root().join(format!("token_stats/{D1}")))
        .expect("symlink");
    t.event(D2, "y", "u", 1, 1);
    let before = tmpa_tests::snapshot(outside.path(), &[]);
    let r = t.run("tmpa-compact", &["--before", "2026-11-04"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("symlink"), "{}", r.stdout);
    assert_eq!(tmpa_tests::snapshot(outside.path(), &[]), before);
    assert_eq!(compacted_ids(&t, D2), vec!["y"]);
}

/// A corrupt `_compacted.json` may be the only copy of deleted events: that day is left
/// untouched (not overwritten, no loose file deleted), reported, and other days proceed.
#[test]
fn corrupt_compacted_file_leaves_the_day_untouched() {
    let t = Tree::new();
    t.file(
        format!("token_stats/{D1}/_compacted.json"),
        "{\"format\":1,\"day\":\"2026-11-01\",\"events\":[{\"id\"",
    );
    t.event(D1, "late", "u", 1, 1);
    t.event(D2, "fine", "u", 1, 1);
    let day1 = tmpa_tests::snapshot(&t.root().join(format!("token_stats/{D1}")), &[]);
    let r = t.run("tmpa-compact", &["--before", "2026-11-04"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("_compacted.json"), "{}", r.stdout);
    assert!(r.stdout.contains("left untouched"), "{}", r.stdout);
    assert_eq!(
        tmpa_tests::snapshot(&t.root().join(format!("token_stats/{D1}")), &[]),
        day1
    );
    assert_eq!(compacted_ids(&t, D2), vec!["fine"]);
}

/// A damaged byte in a compacted day (one digit of a count): compaction refuses to build
/// on it, says what it would lose and names the damaged line; nothing is written or
/// deleted; once the file is restored, the day compacts.
#[test]
fn damaged_compacted_file_is_refused_with_what_it_would_lose() {
    let t = Tree::new();
    for i in 0..3 {
        t.event(D1, &format!("e{i}"), "u", 6225 + i, 1);
    }
    assert_eq!(t.run("tmpa-compact", &["--day", D1]).code, 0);
    let path = t.root().join(format!("token_stats/{D1}/_compacted.json"));
    let good = fs::read_to_string(&path).expect("compacted");
    assert!(good.starts_with("{\"format\":2,"), "{good}");
    fs::write(&path, good.replacen("6226", "6236", 1)).expect("damage");
    t.event(D1, "late", "u", 1, 1);
    let day = tmpa_tests::snapshot(&t.root().join(format!("token_stats/{D1}")), &[]);
    let r = t.run("tmpa-compact", &["--day", D1]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout
            .contains("compacting it would lose 1 of its 3 events (2 readable)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("_compacted.json:3: fails its checksum"),
        "{}",
        r.stdout
    );
    assert_eq!(
        tmpa_tests::snapshot(&t.root().join(format!("token_stats/{D1}")), &[]),
        day
    );
    fs::write(&path, &good).expect("restore");
    assert_eq!(t.run("tmpa-compact", &["--day", D1]).code, 0);
    assert_eq!(compacted_ids(&t, D1).len(), 4);
}

/// A loose event whose id is already compacted with other content is a conflict: both
/// kept, reported, exit 1. The same id with the same content is just a duplicate: deleted.
#[test]
fn conflicts_are_kept_duplicates_are_deleted() {
    let t = Tree::new();
    t.event(D1, "a", "u", 1, 1);
    t.event(D1, "b", "u", 2, 2);
    assert_eq!(t.run("tmpa-compact", &["--day", D1]).code, 0);
    let compacted_before =
        fs::read(t.root().join(format!("token_stats/{D1}/_compacted.json"))).expect("c");
    t.event(D1, "a", "u", 1, 1); // same content: a duplicate
    t.event(D1, "b", "u", 99, 2); // same id, other content: a conflict
    let r = t.run("tmpa-compact", &["--day", D1]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("conflict"), "{}", r.stdout);
    assert!(r.stdout.contains("evt_b.json"), "{}", r.stdout);
    assert_eq!(loose_names(&t, D1), vec!["evt_b.json"]);
    assert_eq!(
        fs::read(t.root().join(format!("token_stats/{D1}/_compacted.json"))).expect("c"),
        compacted_before
    );
    assert_eq!(
        summary(&t, D1)["prompt_tokens"],
        3,
        "the conflicting event is never counted"
    );
}

/// A corrupt `_summary.json` is rebuilt; a missing one is written.
#[test]
fn corrupt_summary_is_rebuilt() {
    let t = Tree::new();
    t.event(D1, "a", "u", 4, 6);
    assert_eq!(t.run("tmpa-compact", &["--day", D1]).code, 0);
    t.file(format!("token_stats/{D1}/_summary.json"), "{not json");
    assert_eq!(t.run("tmpa-compact", &["--day", D1]).code, 0);
    assert_eq!(summary(&t, D1)["total_tokens"], 10);
    fs::remove_file(t.root().join(format!("token_stats/{D1}/_summary.json"))).expect("rm");
    assert_eq!(t.run("tmpa-compact", &["--day", D1]).code, 0);
    assert_eq!(summary(&t, D1)["total_tokens"], 10);
}

/// A dry run changes nothing in the tree (contents, names, mtimes), prints the same text
/// twice apart from times, and its --json plan matches what the real run then does.
#[test]
fn dry_run_changes_nothing_and_is_stable() {
    let t = Tree::new();
    for i in 0..4 {
        t.event(D1, &format!("e{i}"), "u", 1, 1);
    }
    t.event(D2, "z", "u", 1, 1);
    t.file(format!("token_stats/{D2}/evt_bad.json"), "nope");
    let before = t.snapshot();
    let r1 = t.run("tmpa-compact", &["--dry-run", "--before", "2026-11-04"]);
    let r2 = t.run("tmpa-compact", &["--dry-run", "--before", "2026-11-04"]);
    assert_eq!(r1.code, 1);
    assert_eq!(t.snapshot(), before);
    tmpa_tests::assert_same_dry_runs(t.root(), &r1, &r2);
    assert!(r1.stdout.contains("would_delete=4"), "{}", r1.stdout);
    let plan = t
        .run(
            "tmpa-compact",
            &["--dry-run", "--json", "--before", "2026-11-04"],
        )
        .json();
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["counts"]["would_delete"], 5);
    let real = t
        .run("tmpa-compact", &["--json", "--before", "2026-11-04"])
        .json();
    assert_eq!(real["counts"]["deleted"], plan["counts"]["would_delete"]);
    assert_eq!(real["exit_code"], 1);
}

/// Usage errors exit 2 and write nothing: not a TMPA root, a bad date, an unknown flag.
#[test]
fn usage_errors_exit_2() {
    tmpa_tests::assert_refuses_non_root("tmpa-compact");
    let t = Tree::new();
    assert_eq!(t.run("tmpa-compact", &["--before", "2026-13-01"]).code, 2);
    assert_eq!(t.run("tmpa-compact", &["--frobnicate"]).code, 2);
    let env = bin("tmpa-compact")
        .env("TMPA_ROOT", t.root())
        .arg("--dry-run")
        .output()
        .expect("run");
    assert_eq!(env.status.code(), Some(0), "TMPA_ROOT is honoured");
}

/// While one compaction holds the lock, a second exits 3, names the holder and changes
/// nothing.
#[test]
fn second_run_exits_3_while_locked() {
    let t = Tree::new();
    t.event(D1, "a", "u", 1, 1);
    assert_eq!(t.run("tmpa-compact", &["--dry-run", "--day", D1]).code, 0); // creates .tmpa/locks
    let lock = fs::File::options()
        .read(true)
        .write(true)
        .open(t.root().join(".tmpa/locks/compact_events.lock"))
        .expect("lock file");
    lock.lock().expect("take the lock");
    let before = t.snapshot();
    let r = t.run("tmpa-compact", &["--day", D1]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("lock held by"), "{}", r.stderr);
    assert_eq!(t.snapshot(), before);
    drop(lock);
    assert_eq!(t.run("tmpa-compact", &["--day", D1]).code, 0);
}

/// Killed with SIGKILL at random moments over a large day, again and again, then let
/// finish: no event lost, none counted twice, summary exact, every deletion in a receipt.
#[test]
fn sigkill_at_random_moments_loses_nothing() {
    let t = Tree::new();
    let n = 20_000u64;
    let dir = t.root().join(format!("token_stats/{D1}"));
    fs::create_dir_all(&dir).expect("mkdir");
    for i in 0..n {
        fs::write(
            dir.join(format!("evt_{i:05}.json")),
            event_json(
                &format!("{i:05}"),
                &format!("2026-11-01T{:02}:00:00Z", i % 24),
                &format!("u{}", i % 7),
                "m",
                i,
                1,
            ),
        )
        .expect("write");
    }
    // Scale kill times to this machine: a dry run reads and plans the whole day. The
    // first kills come early (a sixteenth of that), so that some land even when the
    // machine's load fell after the dry run was timed.
    let started = Instant::now();
    assert_eq!(t.run("tmpa-compact", &["--dry-run", "--day", D1]).code, 0);
    let plan_us = started.elapsed().as_micros() as u64;
    let mut seed = seed();
    let (mut kills, mut mid_delete) = (0, 0);
    for k in 0..40u64 {
        let mut child = bin("tmpa-compact")
            .arg("--root")
            .arg(t.root())
            .args(["--day", D1])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_micros(
            plan_us * (k + 1) / 16 + next(&mut seed) % (plan_us / 4 + 1),
        ));
        if child.try_wait().expect("wait").is_none() {
            child.kill().expect("kill");
            kills += 1;
        }
        child.wait().expect("reap");
        let left = loose_names(&t, D1).len() as u64;
        if left == 0 {
            break;
        }
        if left < n {
            mid_delete += 1;
        }
    }
    eprintln!(
        "sigkill test: {kills} kills, {mid_delete} with part of the day deleted, over {n} events"
    );
    assert!(kills > 0, "no run was killed: the test proved nothing");
    let r = t.run("tmpa-compact", &["--day", D1]);
    assert_eq!(r.code, 0, "{r:?}");
    let ids = compacted_ids(&t, D1);
    let expected: Vec<String> = {
        let mut v: Vec<(u64, String)> = (0..n).map(|i| (i % 24, format!("{i:05}"))).collect();
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    };
    assert_eq!(
        ids, expected,
        "every event exactly once, in (ts, id) order (after {kills} kills)"
    );
    let s = summary(&t, D1);
    assert_eq!(s["events"], n);
    assert_eq!(s["prompt_tokens"], n * (n - 1) / 2);
    assert!(loose_names(&t, D1).is_empty());
    let receipted: std::collections::HashSet<String> = receipts(&t)
        .iter()
        .map(|l| l["file"].as_str().expect("file").to_owned())
        .collect();
    assert_eq!(
        receipted.len() as u64,
        n,
        "every deleted file is in a receipt"
    );
    let root = Root::open(t.root()).expect("root");
    assert_eq!(
        root.read_day(D1.parse().expect("day"))
            .expect("read")
            .events
            .len() as u64,
        n
    );
}

/// A writer keeps adding events to the day being compacted, across several runs: every
/// event ends up compacted exactly once; none is lost.
#[test]
fn concurrent_writer_loses_nothing() {
    let t = Tree::new();
    let root = Root::open(t.root()).expect("root");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let root = root.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 500 {
                let e = tmpa_core::Event::from_json(
                    event_json(&format!("w{n:06}"), "2026-11-01T10:00:00Z", "u", "m", 1, 0)
                        .as_bytes(),
                )
                .expect("event");
                root.record_event(&e).expect("record");
                n += 1;
            }
            n
        })
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut runs = 0;
    while Instant::now() < deadline {
        let r = t.run("tmpa-compact", &["--day", D1]);
        assert_eq!(r.code, 0, "{r:?}");
        runs += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().expect("writer");
    assert_eq!(t.run("tmpa-compact", &["--day", D1]).code, 0);
    let ids = compacted_ids(&t, D1);
    assert_eq!(ids.len() as u64, written, "after {runs} runs");
    assert_eq!(summary(&t, D1)["events"], written);
}

/// A full disk (small tmpfs) mid-run: nothing lost, exit 4, and the next run after space
/// returns completes.
#[test]
fn full_disk_loses_nothing_and_next_run_completes() {
    let Some(fs_) =
        tmpa_tests::prerequisite(Tmpfs::mount("6m", 10_000), "needs root to mount a tmpfs")
    else {
        return;
    };
    let root = fs_.path();
    fs::create_dir_all(root.join("token_stats")).expect("mkdir");
    let mut total = 0;
    for (day, n) in [(D1, 400), (D2, 400)] {
        let dir = root.join(format!("token_stats/{day}"));
        fs::create_dir_all(&dir).expect("mkdir");
        for i in 0..n {
            let id = format!("{day}-{i:04}");
            fs::write(
                dir.join(format!("evt_{id}.json")),
                event_json(&id, &format!("{day}T01:00:00Z"), "u", "m", 1, 1),
            )
            .expect("w");
            total += 1;
        }
    }
    // Fill what is left so that writing _compacted.json fails.
    let filler = root.join("filler");
    let _ = fs::write(&filler, vec![0u8; 8 << 20]);
    let run = || -> tmpa_tests::Run {
        bin("tmpa-compact")
            .arg("--root")
            .arg(root)
            .args(["--before", "2026-11-04"])
            .output()
            .expect("run")
            .into()
    };
    let r = run();
    assert_eq!(r.code, 4, "{r:?}");
    assert!(
        r.stdout.contains("No space left") || r.stderr.contains("No space left"),
        "{r:?}"
    );
    let count = |root: &Path| tmpa_tests::events_in_days(root, &[D1, D2]);
    assert_eq!(count(root), total, "nothing lost on a full disk");
    fs::remove_file(&filler).expect("free space");
    let r = run();
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(count(root), total);
    for d in [D1, D2] {
        assert!(
            fs::read_dir(root.join(format!("token_stats/{d}")))
                .expect("ls")
                .all(|e| {
                    !e.expect("e")
                        .file_name()
                        .to_string_lossy()
                        .starts_with("evt_")
                })
        );
    }
}

/// An immutable day directory (`chattr +i`) is reported and the other days are compacted;
/// exit 4.
#[test]
fn immutable_day_is_reported_others_proceed() {
    let Some(()) = tmpa_tests::prerequisite(is_root(), "needs root for chattr") else {
        return;
    };
    let t = Tree::new();
    t.event(D1, "stuck", "u", 1, 1);
    t.event(D2, "free", "u", 1, 1);
    let Some(guard) = tmpa_tests::prerequisite(
        Immutable::set(&t.root().join(format!("token_stats/{D1}"))),
        "chattr +i not supported here",
    ) else {
        return;
    };
    let r = t.run("tmpa-compact", &["--before", "2026-11-04"]);
    assert_eq!(r.code, 4, "{r:?}");
    assert!(r.stdout.contains(&format!("{D1} failed")), "{}", r.stdout);
    assert_eq!(loose_names(&t, D1), vec!["evt_stuck.json"]);
    assert_eq!(compacted_ids(&t, D2), vec!["free"]);
    drop(guard);
    assert_eq!(t.run("tmpa-compact", &["--before", "2026-11-04"]).code, 0);
    assert_eq!(compacted_ids(&t, D1), vec!["stuck"]);
}

/// Run as root on a tree owned by the backend's user, the files compaction creates belong
/// to that user.
#[test]
fn created_files_belong_to_the_tree_owner() {
    let Some(()) = tmpa_tests::prerequisite(is_root(), "needs root") else {
        return;
    };
    let t = Tree::new();
    t.event(D1, "a", "u", 1, 1);
    let (uid, gid) = (4242u32, 4343u32);
    for p in [
        t.root().join("token_stats"),
        t.root().join(format!("token_stats/{D1}")),
    ] {
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).expect("chown");
    }
    assert_eq!(t.run("tmpa-compact", &["--day", D1]).code, 0);
    for f in ["_compacted.json", "_summary.json"] {
        let m = fs::metadata(t.root().join(format!("token_stats/{D1}/{f}"))).expect("meta");
        assert_eq!((m.uid(), m.gid()), (uid, gid), "{f}");
    }
}

fn seed() -> u64 {
    let s = std::env::var("TMPA_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("time")
                .as_nanos() as u64
        });
    eprintln!("seed {s} (set TMPA_TEST_SEED to replay)");
    s | 1
}

fn next(s: &mut u64) -> u64 {
    // xorshift64*: enough randomness for kill timings.
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    s.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// --no-delete writes and verifies the compacted file and summary but keeps every loose
/// file; the next real run deletes them as verified duplicates.
#[test]
fn no_delete_keeps_loose_files_until_a_real_run() {
    let t = Tree::new();
    t.event(D1, "a", "u", 1, 2);
    t.event(D1, "b", "u", 3, 4);
    let r = t.run("tmpa-compact", &["--day", D1, "--no-delete"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .lines()
            .next()
            .expect("header")
            .contains("COMPACT-NO-DELETE")
    );
    assert_eq!(compacted_ids(&t, D1), vec!["a", "b"]);
    assert_eq!(loose_names(&t, D1), vec!["evt_a.json", "evt_b.json"]);
    assert_eq!(summary(&t, D1)["total_tokens"], 10);
    assert!(receipts(&t).is_empty(), "nothing deleted, no receipt");
    let r = t.run("tmpa-compact", &["--day", D1]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("duplicates=2"), "{}", r.stdout);
    assert!(loose_names(&t, D1).is_empty());
    assert_eq!(summary(&t, D1)["total_tokens"], 10);
    assert_eq!(
        t.run("tmpa-compact", &["--day", D1, "--no-delete", "--dry-run"])
            .code,
        2
    );
}

/// A settled day is recognised from its summary stamp without re-reading its events, yet a
/// `_compacted.json` replaced afterwards (here by garbage) is noticed and reported.
#[test]
fn settled_day_is_rechecked_when_its_compacted_file_changes() {
    let t = Tree::new();
    t.event(D1, "a", "u", 1, 1);
    assert_eq!(t.run("tmpa-compact", &["--day", D1]).code, 0);
    let r = t.run("tmpa-compact", &["--day", D1]);
    assert!(
        r.stdout
            .contains(&format!("{D1} unchanged: loose=0 already_compacted=1")),
        "{}",
        r.stdout
    );
    std::thread::sleep(Duration::from_millis(20));
    t.file(format!("token_stats/{D1}/_compacted.json"), "garbage");
    let r = t.run("tmpa-compact", &["--day", D1]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("left untouched"), "{}", r.stdout);
}

/// A valid `_compacted.json` written by another tool (pretty-printed, other key order) is
/// rewritten in canonical form; its events are kept and duplicates then deleted.
#[test]
fn foreign_compacted_file_is_rewritten_canonically() {
    let t = Tree::new();
    let e = event_json("a", "2026-11-01T01:00:00Z", "u", "m", 3, 4);
    let ev: Value = serde_json::from_str(&e).expect("json");
    let doc = serde_json::json!({"events": [ev], "day": D1, "format": 1});
    t.file(
        format!("token_stats/{D1}/_compacted.json"),
        serde_json::to_string_pretty(&doc).expect("json"),
    );
    t.file(format!("token_stats/{D1}/evt_a.json"), &e);
    let r = t.run("tmpa-compact", &["--day", D1]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(loose_names(&t, D1).is_empty());
    let text = fs::read_to_string(t.root().join(format!("token_stats/{D1}/_compacted.json")))
        .expect("read");
    assert!(
        text.starts_with(
            "{\"format\":2,\"day\":\"2026-11-01\",\"events\":[\n{\"completion_tokens\":4"
        ),
        "{text}"
    );
    assert_eq!(summary(&t, D1)["total_tokens"], 7);
}

/// A `token_stats/` that is a symlink to a directory outside the root is not followed:
/// reported, exit 1, the outside untouched.
#[test]
fn symlinked_token_stats_is_not_followed() {
    let t = Tree::bare();
    fs::create_dir(t.root().join("notifications")).expect("mkdir");
    let outside = tempfile::tempdir().expect("tempdir");
    let day = outside.path().join(D1);
    fs::create_dir(&day).expect("mkdir");
    fs::write(
        day.join("evt_x.json"),
        event_json("x", "2026-11-01T00:00:00Z", "u", "m", 1, 1),
    )
    .expect("w");
    std::os::unix::fs::symlink(outside.path(), t.root().join("token_stats")).expect("symlink");
    let before = tmpa_tests::snapshot(outside.path(), &[]);
    for args in [&["--dry-run"][..], &[]] {
        let r = t.run("tmpa-compact", args);
        assert_eq!(r.code, 1, "{r:?}");
        assert!(
            r.stdout.contains("token_stats: is a symlink"),
            "{}",
            r.stdout
        );
    }
    assert_eq!(tmpa_tests::snapshot(outside.path(), &[]), before);
}

/// A loose file rewritten in place after it was read and verified, keeping its inode and
/// size (only its mtime and ctime change), is not deleted: the last check before each
/// `unlinkat` compares the whole stamp (device, inode, size, mtime, ctime). The rewrite
/// lands while the receipt's fdatasync is slowed down with strace.
#[test]
fn loose_file_rewritten_in_place_after_verification_is_kept() {
    let Some(()) = tmpa_tests::prerequisite(
        tmpa_tests::strace_works(),
        "strace cannot inject faults here",
    ) else {
        return;
    };
    let t = Tree::new();
    let mut files = Vec::new();
    for i in 0..4 {
        files.push(t.event(D1, &format!("e{i}"), "u", 1, 1));
    }
    let touched = files[2].clone();
    let mut child = tmpa_tests::strace_inject("fdatasync:delay_enter=2000000", "tmpa-compact")
        .args(["--day", D1, "--root"])
        .arg(t.root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("strace");
    // The receipt's line is written before its (slowed) fdatasync and the deletions.
    tmpa_tests::wait_for_receipt_line(&mut child, t.root(), "compact_events");
    let before = fs::metadata(&touched).expect("stat");
    // Same bytes, same inode, same size: only the times change.
    let bytes = fs::read(&touched).expect("read");
    fs::OpenOptions::new()
        .write(true)
        .open(&touched)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes))
        .expect("rewrite in place");
    let after = fs::metadata(&touched).expect("stat");
    assert_eq!((before.ino(), before.len()), (after.ino(), after.len()));
    let r: tmpa_tests::Run = child.wait_with_output().expect("wait").into();
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        touched.exists(),
        "deleted although it changed after verification:\n{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("changed after it was verified"),
        "{}",
        r.stdout
    );
    for f in files.iter().filter(|f| **f != touched) {
        assert!(!f.exists(), "{} not deleted", f.display());
    }
    assert_eq!(compacted_ids(&t, D1).len(), 4);
    let kept: Vec<Value> = receipts(&t)
        .into_iter()
        .filter(|l| l["line"] == "kept")
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(
        kept[0]["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("evt_e2.json"))
    );
    // The next run deletes it as a verified duplicate.
    let again = t.run("tmpa-compact", &["--day", D1]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(!touched.exists());
}

/// `--pace` (what the crontab and the units pass): the day is read one file at a time
/// with a pause per 256 files, the new `_compacted.json` goes to the disk in steps
/// (`fdatasync` per 256 KiB) and deletions pause per 16; the bytes are those of a run at
/// full speed, which pauses never. Seen from outside with strace.
#[test]
fn paced_run_pauses_and_writes_the_same_bytes() {
    let Some(()) = tmpa_tests::prerequisite(tmpa_tests::strace_works(), "no working strace") else {
        return;
    };
    const EVENTS: usize = 1200;
    let run = |pace: &str| -> (Vec<u8>, usize, usize, usize) {
        let t = Tree::new();
        for i in 0..EVENTS {
            t.event(D1, &format!("{i:05}-{}", "p".repeat(160)), "u", i as u64, 1);
        }
        let (out, text) = traced_compact(
            &t,
            &[
                "-e",
                "trace=nanosleep,clock_nanosleep,fdatasync,clone,clone3",
            ],
            pace,
        );
        assert!(out.status.success(), "{pace}: {out:?}");
        let count = |call: &str| text.lines().filter(|l| l.contains(call)).count();
        let sleeps = count("nanosleep(");
        let datasyncs = count("fdatasync(");
        let threads = count("clone(") + count("clone3(");
        let dir = t.root().join(format!("token_stats/{D1}"));
        assert_eq!(
            loose_names(&t, D1).len(),
            0,
            "{pace}: every event compacted"
        );
        (
            fs::read(dir.join("_compacted.json")).expect("compacted"),
            sleeps,
            datasyncs,
            threads,
        )
    };
    let (fast, fast_sleeps, fast_datasyncs, fast_threads) = run("0");
    let (paced, sleeps, datasyncs, threads) = run("1ms");
    assert_eq!(paced, fast, "the same _compacted.json");
    assert!(fast.len() > 256 << 10, "a file of several steps");
    assert_eq!(fast_sleeps, 0, "full speed never pauses");
    if std::thread::available_parallelism().is_ok_and(|n| n.get() > 1) {
        assert!(fast_threads > 0, "full speed reads on several threads");
    }
    // 1200 files read: 4 pauses; 1200 deleted: 75; the file: one step per 256 KiB.
    assert!(sleeps >= EVENTS / 256 + EVENTS / 16, "pauses: {sleeps}");
    assert!(
        datasyncs >= fast_datasyncs + fast.len() / (256 << 10),
        "steps: {datasyncs} (at full speed {fast_datasyncs})"
    );
    assert_eq!(threads, 0, "a paced run reads on its own thread");
}

/// `--pace` yields more when the disk is slow: each step's pause is at least five times
/// the step's own time (the run works at most a sixth of the time), up to 16 times
/// `--pace`. Every open is delayed from outside (strace) by 200 µs, so reading 256 files
/// takes over 51 ms: the pauses after those steps are then at least 256 ms, where
/// `--pace` alone asks for 20, and none is longer than 320.
#[test]
fn paced_run_pauses_longer_when_its_steps_are_slow() {
    let Some(()) =
        tmpa_tests::prerequisite(tmpa_tests::strace_works(), "no strace that injects delays")
    else {
        return;
    };
    const EVENTS: usize = 800;
    let t = Tree::new();
    for i in 0..EVENTS {
        t.event(D1, &format!("{i:05}"), "u", i as u64, 1);
    }
    let (out, text) = traced_compact(
        &t,
        &[
            "-e",
            "trace=nanosleep,clock_nanosleep,openat",
            "-e",
            "inject=openat:delay_enter=200",
        ],
        "20ms",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(loose_names(&t, D1).len(), 0, "every event compacted");
    // The pauses asked for, in milliseconds, from `{tv_sec=S, tv_nsec=N}`.
    let pauses: Vec<f64> = text
        .lines()
        .filter(|l| l.contains("nanosleep("))
        .filter_map(|l| {
            let num = |key: &str| -> Option<f64> {
                let rest = &l[l.find(key)? + key.len()..];
                let end = rest.find(|c: char| !c.is_ascii_digit())?;
                rest[..end].parse().ok()
            };
            Some(num("tv_sec=")? * 1e3 + num("tv_nsec=")? / 1e6)
        })
        .collect();
    // 800 files: three steps of reading after the first, each of 256 delayed opens.
    let long = pauses.iter().filter(|&&p| p >= 256.0).count();
    assert!(long >= 2, "pauses after slow reads: {pauses:?}");
    assert!(
        pauses.iter().all(|&p| p <= 320.0 + 1e-6),
        "no pause over 16 x --pace: {pauses:?}"
    );
    assert!(
        pauses.iter().all(|&p| p >= 20.0 / 16.0 - 1e-6),
        "every pause at least its share of --pace: {pauses:?}"
    );
}

/// `tmpa-compact --before D2 --pace PACE` on `t`, under strace with `strace_args` (which
/// calls to trace, what to inject): its output and the trace.
fn traced_compact(t: &Tree, strace_args: &[&str], pace: &str) -> (std::process::Output, String) {
    let trace = t.root().parent().expect("parent").join(format!(
        "{}.strace",
        t.root().file_name().expect("name").to_string_lossy()
    ));
    let out = Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(&trace)
        .args(strace_args)
        .arg(bin("tmpa-compact").get_program())
        .env_remove("TMPA_ROOT")
        .arg("--root")
        .arg(t.root())
        .args(["--before", D2, "--pace", pace])
        .output()
        .expect("strace");
    let text = fs::read_to_string(&trace).expect("trace");
    fs::remove_file(&trace).expect("rm trace");
    (out, text)
}

/// A loose event with a temporary of its name beside it (a write of the same file that
/// died) is merged but not deleted: deleting it would leave the temporary an orphan. The
/// run exits 0 and says so (`beside_temporary`); once tmpa-tmpclean removed the
/// temporary, the next run deletes the event as a verified duplicate.
#[test]
fn a_loose_event_with_a_temporary_beside_it_stays() {
    let t = Tree::new();
    let e1 = t.event("2026-01-05", "e1", "u1", 3, 4);
    let e2 = t.event("2026-01-05", "e2", "u1", 1, 1);
    let tmp = t.file(
        "token_stats/2026-01-05/evt_e1.json.tmp.77",
        fs::read(&e1).expect("event"),
    );
    let r = t.run("tmpa-compact", &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(e1.exists() && !e2.exists(), "{}", r.stdout);
    assert!(
        r.stdout.contains("beside_temporary=1") && r.stdout.contains("left for the next run"),
        "{}",
        r.stdout
    );
    fs::remove_file(&tmp).expect("rm");
    let r = t.run("tmpa-compact", &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        !e1.exists(),
        "deleted once the temporary is gone: {}",
        r.stdout
    );
    assert_eq!(tmpa_tests::events_in_days(t.root(), &["2026-01-05"]), 2);
}

/// Where `flock` wants a descriptor open for writing (NFS: `EBADF` on a read-only one,
/// injected at the lock's first try), a run locks the same file opened for writing and
/// compacts; a lock file of another user is then refused (exit 2, naming it), nothing
/// touched.
#[test]
fn a_run_locks_for_writing_where_flock_wants_a_writer() {
    assert!(tmpa_tests::strace_works(), "strace is a prerequisite");
    let t = Tree::new();
    t.event(D1, "e1", "u", 1, 2);
    let root = t.root().to_str().expect("UTF-8");
    let run = || {
        tmpa_tests::strace_inject("flock:error=EBADF:when=1", "tmpa-compact")
            .args(["--root", root])
            .output()
            .expect("strace")
    };
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(compacted_ids(&t, D1), ["e1"]);
    assert!(loose_names(&t, D1).is_empty());
    let Some(()) = tmpa_tests::prerequisite(is_root(), "chown needs root") else {
        return;
    };
    t.event(D1, "e2", "u", 1, 2);
    let lock = t.root().join(".tmpa/locks/compact_events.lock");
    std::os::unix::fs::chown(&lock, Some(4242), Some(4242)).expect("chown");
    let out = run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("compact_events.lock"), "{err}");
    assert_eq!(loose_names(&t, D1), ["evt_e2.json"]);
}
