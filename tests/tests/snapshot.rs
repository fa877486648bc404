//! tmpa-snapshot: consistent copies beside a live writer and the maintenance programs,
//! what is left out, hostile trees, the destination's rules, and a real backup with
//! restic restored and verified.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tmpa_core::{Event, NotificationId, Root, SessionId, UserId};
use tmpa_tests::{Tmpfs, Tree, age, bin, event_json, strace_inject};

const DAYS: u64 = 86_400;

/// Runs tmpa-snapshot with `args` (no `--root`).
fn snap(args: &[&Path]) -> tmpa_tests::Run {
    bin("tmpa-snapshot")
        .args(args)
        .output()
        .expect("run tmpa-snapshot")
        .into()
}

/// `tmpa-snapshot --root {root} --to {to} {extra}`.
fn take(root: &Path, to: &Path, extra: &[&str]) -> tmpa_tests::Run {
    bin("tmpa-snapshot")
        .arg("--root")
        .arg(root)
        .arg("--to")
        .arg(to)
        .args(extra)
        .output()
        .expect("run tmpa-snapshot")
        .into()
}

/// `tmpa-snapshot --verify {dir}`.
fn verify(dir: &Path) -> tmpa_tests::Run {
    snap(&[Path::new("--verify"), dir])
}

/// Every path under `dir`, relative, sorted.
fn paths(dir: &Path) -> BTreeSet<PathBuf> {
    tmpa_tests::snapshot(dir, &[]).into_keys().collect()
}

/// A write the writer finished, and how to find it in a tree.
#[derive(Clone, Debug)]
enum Write {
    Event { day: String, id: String },
    Session { user: String, name: String },
    Acked { user: String, id: String },
}

/// What a tree holds, read through the library: events (compacted or loose), sessions
/// (live or archived), notifications that are there with their ack.
struct Contents {
    events: BTreeSet<(String, String)>,
    sessions: BTreeSet<(String, String)>,
    acked: BTreeSet<(String, String)>,
}

impl Contents {
    fn of(dir: &Path) -> Contents {
        let root = Root::open(dir).expect("a root");
        let mut events = BTreeSet::new();
        for day in ["2026-01-01", "2026-01-02"] {
            let read = root.read_day(day.parse().expect("day")).expect("read day");
            events.extend(
                read.events
                    .iter()
                    .map(|e| (day.to_owned(), e.id().to_string())),
            );
        }
        let u1 = UserId::new("u1").expect("user");
        let sessions = root
            .list_sessions(&u1)
            .expect("sessions")
            .into_iter()
            .map(|(s, _)| ("u1".to_owned(), s.to_string()))
            .collect();
        let u2 = UserId::new("u2").expect("user");
        let mut acked = BTreeSet::new();
        if let Ok(inbox) = fs::read_dir(dir.join("notifications/u2/inbox")) {
            for e in inbox.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(id) = name
                    .strip_prefix("ntf_")
                    .and_then(|n| n.strip_suffix(".json"))
                else {
                    continue;
                };
                let nid = NotificationId::new(id).expect("id");
                if root.is_acked(&u2, &nid).expect("ack read") {
                    acked.insert(("u2".to_owned(), id.to_owned()));
                }
            }
        }
        Contents {
            events,
            sessions,
            acked,
        }
    }

    fn holds(&self, w: &Write) -> bool {
        match w {
            Write::Event { day, id } => self.events.contains(&(day.clone(), id.clone())),
            Write::Session { user, name } => self.sessions.contains(&(user.clone(), name.clone())),
            Write::Acked { user, id } => self.acked.contains(&(user.clone(), id.clone())),
        }
    }
}

/// The backend: records events (on two past days, which compaction takes), sessions (made
/// old enough to archive) and notifications with their acks, without pause, logging each
/// write once it has completed.
fn writer(root: PathBuf, stop: Arc<AtomicBool>, log: Arc<Mutex<Vec<Write>>>) {
    let rt = Root::open(&root).expect("root");
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let day = if n.is_multiple_of(2) {
            "2026-01-01"
        } else {
            "2026-01-02"
        };
        let id = format!("w{n}");
        let e = Event::from_json(
            event_json(&id, &format!("{day}T10:00:00Z"), "u1", "m", n, 1).as_bytes(),
        )
        .expect("event");
        rt.record_event(&e).expect("record");
        let mut done = vec![Write::Event {
            day: day.into(),
            id,
        }];
        if n.is_multiple_of(5) {
            let (u, s) = (
                UserId::new("u1").expect("user"),
                SessionId::new(format!("s{n}")).expect("session"),
            );
            let p = rt
                .write_session(&u, &s, br#"{"messages":[1]}"#)
                .expect("session");
            age(&p, Duration::from_secs(60 * DAYS));
            done.push(Write::Session {
                user: "u1".into(),
                name: format!("s{n}"),
            });
        }
        if n.is_multiple_of(3) {
            let (u, nid) = (
                UserId::new("u2").expect("user"),
                NotificationId::new(format!("n{n}")).expect("id"),
            );
            rt.deliver(&u, &nid, &serde_json::json!({"n": n}))
                .expect("deliver");
            rt.ack(&u, &nid).expect("ack");
            done.push(Write::Acked {
                user: "u2".into(),
                id: format!("n{n}"),
            });
        }
        log.lock().expect("log").extend(done);
    }
}

/// A writer records events, sessions and notifications without pause while tmpa-compact
/// and tmpa-archive run in loops and snapshots are taken: every write completed before a
/// snapshot started is in it, and --verify passes on each.
#[test]
fn snapshots_beside_a_live_writer_and_maintenance_lose_nothing() {
    let t = Tree::new();
    let out = tempfile::tempdir().expect("tempdir");
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let w = {
        let (root, stop, log) = (t.root().to_path_buf(), stop.clone(), log.clone());
        std::thread::spawn(move || writer(root, stop, log))
    };
    let maint = |program: &'static str, args: &'static [&'static str]| {
        let (root, stop) = (t.root().to_path_buf(), stop.clone());
        std::thread::spawn(move || {
            let mut ran = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = bin(program)
                    .arg("--root")
                    .arg(&root)
                    .args(args)
                    .output()
                    .expect("run");
                let code = r.status.code();
                // 3: the snapshot (or the other program's lock) held it: expected.
                assert!(
                    matches!(code, Some(0 | 3)),
                    "{program} exit {code:?}: {}",
                    String::from_utf8_lossy(&r.stderr)
                );
                ran += usize::from(code == Some(0));
                // Scheduled runs, not a run that never lets go of its lock.
                std::thread::sleep(Duration::from_millis(150));
            }
            ran
        })
    };
    let compact = maint("tmpa-compact", &[]);
    let archive = maint("tmpa-archive", &["--older-than", "30d"]);
    let mut taken = Vec::new();
    for i in 0..4 {
        std::thread::sleep(Duration::from_millis(500));
        let before: Vec<Write> = log.lock().expect("log").clone();
        let to = out.path().join(format!("snap{i}"));
        let r = take(t.root(), &to, &["--wait", "30s"]);
        assert_eq!(r.code, 0, "{r:?}");
        taken.push((to, before));
    }
    stop.store(true, Ordering::Relaxed);
    w.join().expect("writer");
    let (compacted, archived) = (
        compact.join().expect("compact"),
        archive.join().expect("archive"),
    );
    assert!(
        compacted > 0 && archived > 0,
        "maintenance ran: {compacted} {archived}"
    );
    for (to, before) in &taken {
        assert!(
            before.len() > 10,
            "the writer wrote before {}",
            to.display()
        );
        let held = Contents::of(to);
        for write in before {
            assert!(held.holds(write), "{write:?} missing from {}", to.display());
        }
        let v = verify(to);
        assert_eq!(v.code, 0, "{v:?}");
    }
    // Compaction and archival did their work between the snapshots.
    let last = &taken.last().expect("snapshots").0;
    assert!(
        last.join("token_stats/2026-01-01/_compacted.json")
            .is_file()
    );
    assert!(
        fs::read_dir(last.join("chat_history/u1/archive"))
            .expect("archives in the snapshot")
            .count()
            > 0
    );
}

/// What a snapshot leaves out: summaries, temporaries, .tmpa/ internals and foreign
/// top-level entries; what it keeps: the data, tmpa.toml, receipts and run records.
#[test]
fn leaves_out_caches_temporaries_and_internals() {
    let t = Tree::new();
    t.event("2026-01-01", "a", "u1", 1, 2);
    t.file("token_stats/2026-01-01/_summary.json", "{}");
    t.file("token_stats/2026-01-01/evt_b.json.tmp.1-2-3", "{");
    t.file("chat_history/u1/sessions/s1.json", "{}");
    t.file("chat_history/u1/sessions/s1.json.tmp", "{");
    t.file("chat_history/u1/profile/avatar.png", "png");
    t.file("notifications/u2/inbox/ntf_n.json", "{}");
    t.file("notifications/u2/ack/ntf_n.ack", "{}");
    t.file("tmpa.toml", "");
    t.file(".tmpa/receipts/compact_events/1-2.jsonl", "{}\n");
    t.file(".tmpa/runs/compact_events.json", "{}");
    t.file(".tmpa/locks/compact_events.lock", "pid 1");
    t.file(".tmpa/spill/compact_events.1.0.spill", "x");
    t.file(
        ".tmpa/quarantine/in-flight/compact_events/R/token_stats/2026-01-01/evt_q.json",
        "{}",
    );
    t.file(".tmpa/patrol/json-cache/00", "x");
    t.file("app/config.py", "x");
    let out = tempfile::tempdir().expect("tempdir");
    let to = out.path().join("s");
    let r = take(t.root(), &to, &["--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let files: BTreeSet<PathBuf> = paths(&to)
        .into_iter()
        .filter(|p| to.join(p).is_file())
        .collect();
    let want: BTreeSet<PathBuf> = [
        "token_stats/2026-01-01/evt_a.json",
        "chat_history/u1/sessions/s1.json",
        "chat_history/u1/profile/avatar.png",
        "notifications/u2/inbox/ntf_n.json",
        "notifications/u2/ack/ntf_n.ack",
        "tmpa.toml",
        ".tmpa/receipts/compact_events/1-2.jsonl",
        ".tmpa/runs/compact_events.json",
        ".tmpa/quarantine/in-flight/compact_events/R/token_stats/2026-01-01/evt_q.json",
        ".tmpa/snapshot.json",
    ]
    .into_iter()
    .map(PathBuf::from)
    .collect();
    assert_eq!(files, want);
    let c = &r.json()["counts"];
    assert_eq!(c["summaries_left_out"], 1);
    assert_eq!(c["temporaries_left_out"], 2);
    assert_eq!(c["other_left_out"], 1);
    assert_eq!(c["linked"], 9);
    // Hard links: the very inodes of the live tree.
    let ino = |p: &Path| fs::metadata(p).expect("stat").ino();
    assert_eq!(
        ino(&to.join("token_stats/2026-01-01/evt_a.json")),
        ino(&t.root().join("token_stats/2026-01-01/evt_a.json"))
    );
}

/// Symlinks planted in the tree (to a file, to a directory outside, in place of a day)
/// are never followed: left out and named, exit 1; nothing from outside the root is taken.
#[test]
fn hostile_symlinks_are_left_out_and_named() {
    let t = Tree::new();
    let outside = tempfile::tempdir().expect("tempdir");
    fs::write(outside.path().join("secret"), "secret").expect("write");
    t.event("2026-01-01", "a", "u1", 1, 2);
    symlink(
        outside.path().join("secret"),
        t.root().join("token_stats/2026-01-01/evt_s.json"),
    )
    .expect("symlink");
    symlink(outside.path(), t.root().join("token_stats/2026-01-02")).expect("symlink");
    fs::create_dir_all(t.root().join("chat_history")).expect("mkdir");
    symlink(outside.path(), t.root().join("chat_history/u9")).expect("symlink");
    let out = tempfile::tempdir().expect("tempdir");
    let to = out.path().join("s");
    let r = take(t.root(), &to, &[]);
    assert_eq!(r.code, 1, "{r:?}");
    for planted in [
        "token_stats/2026-01-01/evt_s.json",
        "token_stats/2026-01-02",
        "chat_history/u9",
    ] {
        assert!(
            r.stdout
                .contains(&format!("{}: a symlink", t.root().join(planted).display())),
            "{planted} not named: {}",
            r.stdout
        );
    }
    for p in paths(&to) {
        let m = fs::symlink_metadata(to.join(&p)).expect("lstat");
        assert!(!m.file_type().is_symlink(), "{} is a symlink", p.display());
        assert!(!p.ends_with("secret"), "took {}", p.display());
    }
    assert_eq!(verify(&to).code, 0);
}

/// The destination must be new and outside the root; a partial build left by an
/// interrupted run is refused by name (exit 2 each time, nothing written).
#[test]
fn destination_rules() {
    let t = Tree::new();
    t.event("2026-01-01", "a", "u1", 1, 2);
    let inside = t.root().join("token_stats/snap");
    let r = take(t.root(), &inside, &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("inside the root"), "{}", r.stderr);
    assert!(!inside.exists());
    let out = tempfile::tempdir().expect("tempdir");
    fs::create_dir(out.path().join("exists")).expect("mkdir");
    let r = take(t.root(), &out.path().join("exists"), &[]);
    assert_eq!(r.code, 2, "{r:?}");
    fs::create_dir(out.path().join(".s.partial")).expect("mkdir");
    let r = take(t.root(), &out.path().join("s"), &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains(".s.partial"), "{}", r.stderr);
    assert!(!out.path().join("s").exists());
}

/// A dry run says what it would take and takes nothing; two on an unchanged tree print
/// the same.
#[test]
fn dry_run_takes_nothing() {
    let t = Tree::new();
    t.event("2026-01-01", "a", "u1", 1, 2);
    t.event("2026-01-01", "b", "u1", 3, 4);
    let out = tempfile::tempdir().expect("tempdir");
    let to = out.path().join("s");
    let a = take(t.root(), &to, &["--dry-run"]);
    let b = take(t.root(), &to, &["--dry-run"]);
    assert_eq!(a.code, 0, "{a:?}");
    assert!(a.stdout.contains("would take 2 files"), "{}", a.stdout);
    tmpa_tests::assert_same_dry_runs(t.root(), &a, &b);
    assert!(!to.exists());
    assert_eq!(fs::read_dir(out.path()).expect("ls").count(), 0);
}

/// While tmpa-compact holds its lock the snapshot exits 3, or waits (--wait) until the
/// lock is released and then takes it.
#[test]
fn waits_for_the_maintenance_locks_or_exits_3() {
    let t = Tree::new();
    t.event("2026-01-01", "a", "u1", 1, 2);
    let root = tmpa_core::Root::open(t.root()).expect("root");
    let held = tmpa_maint::Lock::acquire(&root, tmpa_maint::Task::CompactEvents).expect("lock");
    let out = tempfile::tempdir().expect("tempdir");
    let r = take(t.root(), &out.path().join("a"), &[]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(!out.path().join("a").exists());
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        drop(held);
    });
    let r = take(t.root(), &out.path().join("b"), &["--wait", "20s"]);
    release.join().expect("release");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        out.path()
            .join("b/token_stats/2026-01-01/evt_a.json")
            .is_file()
    );
}

/// On another file system the snapshot copies (fsynced, mode and mtime kept); on a full
/// one it stops with exit 4, leaves its partial build named, and never publishes DIR.
#[test]
fn copies_across_file_systems_and_stops_on_a_full_one() {
    let t = Tree::new();
    for i in 0..20 {
        t.event("2026-01-01", &format!("e{i}"), "u1", i, 1);
    }
    let session = t.file("chat_history/u1/sessions/s1.json", vec![b' '; 300_000]);
    fs::write(&session, format!("[{}1]", " ".repeat(300_000))).expect("write");
    age(&session, Duration::from_secs(3 * DAYS));
    let roomy = Tmpfs::mount("16m", 10_000).expect("tmpfs (the tests run as root)");
    let to = roomy.path().join("s");
    let r = take(t.root(), &to, &["--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["method"], "copy_other_fs");
    assert_eq!(r.json()["counts"]["copied"], 21);
    let copied = to.join("chat_history/u1/sessions/s1.json");
    let (a, b) = (
        fs::metadata(&session).expect("stat"),
        fs::metadata(&copied).expect("stat"),
    );
    assert_eq!(
        (a.mtime(), a.mode(), a.len()),
        (b.mtime(), b.mode(), b.len())
    );
    assert_eq!(verify(&to).code, 0);

    let full = Tmpfs::mount("128k", 10_000).expect("tmpfs (the tests run as root)");
    let to = full.path().join("s");
    let r = take(t.root(), &to, &[]);
    assert_eq!(r.code, 4, "{r:?}");
    assert!(!to.exists());
    assert!(r.stderr.contains(".s.partial"), "{}", r.stderr);
}

/// --verify names every problem of a restored tree (a corrupt event, a loose event that
/// differs from its compacted copy, an archive that is not gzip, a session that is not
/// JSON) and exits 1; a good tree exits 0; a directory that is not a tree exits 2.
#[test]
fn verify_names_each_problem() {
    let t = Tree::new();
    t.event("2026-01-01", "a", "u1", 1, 2);
    t.event("2026-01-01", "b", "u1", 1, 2);
    assert_eq!(t.run("tmpa-compact", &[]).code, 0);
    assert_eq!(verify(t.root()).code, 0);
    t.file(
        "token_stats/2026-01-01/evt_a.json",
        event_json("a", "2026-01-01T12:00:00Z", "u1", "gpt-x", 99, 2),
    );
    t.file("token_stats/2026-01-02/evt_c.json", "{");
    t.file("chat_history/u1/archive/s1.json.gz", "not gzip");
    t.file("chat_history/u1/sessions/s2.json", "not json");
    let r = verify(t.root());
    assert_eq!(r.code, 1, "{r:?}");
    for bad in [
        "token_stats/2026-01-01/evt_a.json",
        "token_stats/2026-01-02/evt_c.json",
        "chat_history/u1/archive/s1.json.gz",
        "chat_history/u1/sessions/s2.json",
    ] {
        assert!(
            r.stdout
                .contains(&format!("problem: {}", t.root().join(bad).display())),
            "{bad} not named:\n{}",
            r.stdout
        );
    }
    let bare = Tree::bare();
    assert_eq!(verify(bare.root()).code, 2);
}

/// A tree with compacted and loose events, live and archived sessions, and its snapshot
/// in `work/snap`.
fn backed_up_tree(work: &Path) -> (Tree, PathBuf) {
    let t = Tree::new();
    for i in 0..30 {
        t.event("2026-01-01", &format!("e{i}"), "u1", i, 1);
    }
    assert_eq!(t.run("tmpa-compact", &[]).code, 0);
    t.event("2026-01-01", "late", "u1", 7, 7);
    t.file("chat_history/u1/sessions/s1.json", r#"{"m":[]}"#);
    let old = t.file("chat_history/u1/sessions/s0.json", r#"{"m":[0]}"#);
    age(&old, Duration::from_secs(60 * DAYS));
    assert_eq!(t.run("tmpa-archive", &["--older-than", "30d"]).code, 0);
    let snap_dir = work.join("snap");
    assert_eq!(take(t.root(), &snap_dir, &[]).code, 0);
    (t, snap_dir)
}

/// The restore drill's checks on a restored tree: `--verify` passes, every event and the
/// archived session read back, the run records came back.
fn restored_tree_is_whole(tree: &Path) {
    let v = verify(tree);
    assert_eq!(v.code, 0, "{v:?}");
    assert_eq!(tmpa_tests::events_in_days(tree, &["2026-01-01"]), 31);
    let rt = Root::open(tree).expect("root");
    let u = UserId::new("u1").expect("user");
    assert_eq!(
        rt.read_session(&u, &SessionId::new("s0").expect("s"))
            .expect("archived"),
        br#"{"m":[0]}"#
    );
    assert!(tree.join(".tmpa/runs/archive_history.json").is_file());
}

/// The OPERATIONS.md recipe with restic (Debian's package): snapshot, back up, restore,
/// verify.
#[test]
fn restic_backup_of_a_snapshot_restores_and_verifies() {
    let work = tempfile::tempdir().expect("tempdir");
    let (_t, snap_dir) = backed_up_tree(work.path());
    let repo = work.path().join("repo");
    let restic = |args: &[&str], dir: &Path| {
        let o = Command::new("restic")
            .args(args)
            .current_dir(dir)
            .env("RESTIC_REPOSITORY", &repo)
            .env("RESTIC_PASSWORD", "drill")
            .env("RESTIC_CACHE_DIR", work.path().join("cache"))
            .output()
            .expect("restic is installed (tests/check.sh installs Debian's package)");
        assert!(
            o.status.success(),
            "restic {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    restic(&["init"], work.path());
    restic(&["backup", "--quiet", "."], &snap_dir);
    let restored = work.path().join("restored");
    restic(
        &[
            "restore",
            "latest",
            "--target",
            restored.to_str().expect("utf-8"),
        ],
        work.path(),
    );
    // restic keeps the path it was given; find the tree it restored.
    let tree = [
        restored.clone(),
        restored.join(snap_dir.strip_prefix("/").expect("absolute")),
    ]
    .into_iter()
    .find(|p| p.join("token_stats").is_dir())
    .expect("restored tree");
    restored_tree_is_whole(&tree);
}

/// The OPERATIONS.md recipe with borg (Debian's borgbackup): snapshot, `borg create`
/// from inside it, `borg extract` into an empty directory, verify.
#[test]
fn borg_backup_of_a_snapshot_restores_and_verifies() {
    let work = tempfile::tempdir().expect("tempdir");
    let (_t, snap_dir) = backed_up_tree(work.path());
    let repo = work.path().join("repo");
    let borg = |args: &[&str], dir: &Path| {
        let o = Command::new("borg")
            .args(args)
            .current_dir(dir)
            .env("BORG_REPO", &repo)
            .env("BORG_BASE_DIR", work.path().join("borg-home"))
            .env("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes")
            .env("BORG_RELOCATED_REPO_ACCESS_IS_OK", "yes")
            .output()
            .expect("borg is installed (tests/check.sh installs Debian's borgbackup)");
        assert!(
            o.status.success(),
            "borg {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    borg(&["init", "--encryption=none"], work.path());
    borg(
        &["create", "--files-cache=mtime,size,inode", "::drill", "."],
        &snap_dir,
    );
    let restored = work.path().join("restored");
    fs::create_dir(&restored).expect("mkdir");
    borg(&["extract", "::drill"], &restored);
    restored_tree_is_whole(&restored);
}

/// A compaction killed in its delete step leaves a file in the quarantine that may be
/// the only copy of its event: the snapshot takes it, and the restored tree's next
/// compaction puts it back (the receipt's inode is not the restored one) and keeps it
/// as a duplicate of nothing: no event is lost.
#[test]
fn a_killed_run_s_quarantine_comes_back_and_is_finished_after_a_restore() {
    let t = Tree::new();
    t.event("2026-01-01", "a", "u1", 1, 1);
    let moved = t.event("2026-01-01", "b", "u1", 2, 2);
    let aside = t.root().join(
        ".tmpa/quarantine/in-flight/compact_events/20260102T023000+0000-4242/token_stats/2026-01-01/evt_b.json",
    );
    fs::create_dir_all(aside.parent().expect("parent")).expect("mkdir");
    fs::rename(&moved, &aside).expect("move aside");
    let work = tempfile::tempdir().expect("tempdir");
    let snap_dir = work.path().join("snap");
    let r = take(t.root(), &snap_dir, &["--copy"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        snap_dir
            .join(aside.strip_prefix(t.root()).expect("below the root"))
            .is_file()
    );
    let c = bin("tmpa-compact")
        .arg("--root")
        .arg(&snap_dir)
        .output()
        .expect("tmpa-compact");
    let c: tmpa_tests::Run = c.into();
    assert_eq!(c.code, 0, "{c:?}");
    assert!(c.stdout.contains("recovered:"), "{}", c.stdout);
    assert_eq!(tmpa_tests::events_in_days(&snap_dir, &["2026-01-01"]), 2);
}

/// `tmpa-snapshot --root {root} --to {to}` under strace, with `inject`.
fn take_traced(root: &Path, to: &Path, inject: &str) -> tmpa_tests::Run {
    strace_inject(inject, "tmpa-snapshot")
        .arg("--root")
        .arg(root)
        .arg("--to")
        .arg(to)
        .output()
        .expect("strace is installed (tests/check.sh installs it)")
        .into()
}

/// A small tree of every kind of file, for the fault tests.
fn small_tree() -> Tree {
    let t = Tree::new();
    for i in 0..5 {
        t.event("2026-01-01", &format!("e{i}"), "u1", i, 1);
    }
    t.file("chat_history/u1/sessions/s1.json", "{}");
    t.file("notifications/u2/inbox/ntf_n.json", "{}");
    t.file("notifications/u2/ack/ntf_n.ack", "{}");
    t
}

/// EIO at the Nth fsync, for every N up to past the last one, and at a link: DIR is
/// never half a snapshot. Either the snapshot is complete (exit 0; or exit 4 when only
/// what follows its publication failed: the parent's fsync, the run record), or DIR is
/// not there at all (exit 4, the partial build named, or nothing built when the record the
/// run writes as it starts could not be written); the error is said, and the live tree
/// never changes.
#[test]
fn eio_at_any_sync_or_link_never_publishes_half_a_snapshot() {
    let t = small_tree();
    let before = t.snapshot();
    // What every later snapshot holds (the first run of the program adds .tmpa/runs/).
    let reference = tempfile::tempdir().expect("tempdir");
    for name in ["first", "s"] {
        assert_eq!(take(t.root(), &reference.path().join(name), &[]).code, 0);
    }
    let complete = paths(&reference.path().join("s"));
    let mut reached_the_end = false;
    for n in 1..=60 {
        let out = tempfile::tempdir().expect("tempdir");
        let to = out.path().join("s");
        let r = take_traced(
            t.root(),
            &to,
            &format!("fsync,fdatasync:error=EIO:when={n}"),
        );
        assert!(!r.stderr.contains("panicked"), "n={n}: {r:?}");
        assert_eq!(t.snapshot(), before, "n={n} changed the live tree");
        match r.code {
            0 => {
                assert_eq!(verify(&to).code, 0, "n={n}");
                reached_the_end = true;
                break;
            }
            4 => {
                assert!(r.stderr.contains("Input/output error"), "n={n}: {r:?}");
                if to.exists() {
                    assert_eq!(paths(&to), complete, "n={n}: half a snapshot published");
                    assert_eq!(verify(&to).code, 0, "n={n}");
                } else if r.stderr.contains("/.tmpa/runs") && !r.stdout.contains("took") {
                    // The run record of its start: nothing built.
                    assert!(!out.path().join(".s.partial").exists(), "n={n}: {r:?}");
                } else {
                    assert!(r.stderr.contains(".s.partial"), "n={n}: {r:?}");
                }
            }
            code => panic!("n={n}: exit {code}: {r:?}"),
        }
    }
    assert!(reached_the_end, "more than 60 syncs in a small snapshot?");
    let out = tempfile::tempdir().expect("tempdir");
    let to = out.path().join("s");
    let r = take_traced(t.root(), &to, "linkat:error=EIO:when=3");
    assert_eq!(r.code, 4, "{r:?}");
    assert!(!to.exists());
    assert!(r.stderr.contains(".s.partial"), "{r:?}");
    assert_eq!(t.snapshot(), before);
}

/// A snapshot killed in the middle of its pass leaves no DIR, only its partial build,
/// which the next run names and refuses (exit 2) until it is removed; the maintenance
/// locks die with it.
#[test]
fn a_killed_snapshot_leaves_only_its_partial_build() {
    let t = small_tree();
    let out = tempfile::tempdir().expect("tempdir");
    let to = out.path().join("s");
    // Each link takes 200 ms: the kill lands in the middle of the pass.
    let mut child = strace_inject("linkat:delay_enter=200000", "tmpa-snapshot")
        .arg("--root")
        .arg(t.root())
        .arg("--to")
        .arg(&to)
        .spawn()
        .expect("strace");
    let partial = out.path().join(".s.partial");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !partial.join("notifications").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the pass never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The snapshot itself, not strace: its pid is in the lock it holds.
    let holder = fs::read_to_string(t.root().join(".tmpa/locks/snapshot.lock")).expect("lock");
    let pid: i32 = holder
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("lock note {holder:?}"));
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .expect("kill");
    child.wait().expect("wait");
    assert!(!to.exists());
    assert!(partial.is_dir());
    let r = take(t.root(), &to, &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains(".s.partial"), "{}", r.stderr);
    fs::remove_dir_all(&partial).expect("rm -r");
    let r = take(t.root(), &to, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(verify(&to).code, 0);
}

/// A tree owner swaps files for symlinks to a secret outside the root while the snapshot
/// links them (each link stretched to 50 ms by strace): what it links is checked in the
/// snapshot, so no symlink and nothing of the secret ends up there; each swapped file is
/// named (exit 1). With --copy the same (opened without following).
#[test]
fn files_swapped_for_symlinks_mid_snapshot_are_not_taken() {
    let outside = tempfile::tempdir().expect("tempdir");
    let secret = outside.path().join("secret");
    fs::write(&secret, "SECRET").expect("write");
    for copy in [false, true] {
        let t = Tree::new();
        let day = t.root().join("token_stats/2026-01-01");
        for i in 0..10 {
            t.event("2026-01-01", &format!("e{i}"), "u1", i, 1);
        }
        let out = tempfile::tempdir().expect("tempdir");
        let to = out.path().join("s");
        let (inject, extra) = if copy {
            ("openat:delay_enter=50000", &["--copy"][..])
        } else {
            ("linkat:delay_enter=50000", &[][..])
        };
        let child = strace_inject(inject, "tmpa-snapshot")
            .arg("--root")
            .arg(t.root())
            .arg("--to")
            .arg(&to)
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("strace");
        let partial = out.path().join(".s.partial/token_stats");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !partial.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the pass never started"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        for i in 0..10 {
            let link = day.join(format!("evt_e{i}.json.swap"));
            symlink(&secret, &link).expect("symlink");
            fs::rename(&link, day.join(format!("evt_e{i}.json"))).expect("swap");
        }
        let r: tmpa_tests::Run = child.wait_with_output().expect("wait").into();
        assert_eq!(r.code, 1, "copy={copy}: {r:?}");
        assert!(
            r.stdout.contains(": a symlink"),
            "copy={copy}: {}",
            r.stdout
        );
        for p in paths(&to) {
            let full = to.join(&p);
            let m = fs::symlink_metadata(&full).expect("lstat");
            assert!(
                !m.file_type().is_symlink(),
                "copy={copy}: {} is a symlink",
                p.display()
            );
            if m.is_file() {
                let bytes = fs::read(&full).expect("read");
                assert_ne!(
                    bytes,
                    b"SECRET",
                    "copy={copy}: {} holds the secret",
                    p.display()
                );
            }
        }
        assert_eq!(verify(&to).code, 0, "copy={copy}");
    }
}

/// Names as hostile as the format allows (spaces, a newline, backslashes, non-UTF-8
/// bytes) are taken as they are, linked or copied, and verified.
#[test]
fn hostile_names_are_taken_as_they_are() {
    use std::os::unix::ffi::OsStrExt;
    let t = Tree::new();
    let odd = ["s p a c e", "new\nline", "back\\slash", "\u{e9}t\u{e9}"];
    for name in odd {
        t.file(format!("chat_history/u 1/sessions/{name}.json"), "{}");
        t.file(format!("notifications/u\\2/inbox/ntf_{name}.json"), "[]");
    }
    let raw = std::ffi::OsStr::from_bytes(b"bad\xffutf8.json");
    fs::write(t.root().join("chat_history/u 1/sessions").join(raw), "{}").expect("write");
    let out = tempfile::tempdir().expect("tempdir");
    for (dir, extra) in [("linked", &[][..]), ("copied", &["--copy"][..])] {
        let to = out.path().join(dir);
        let r = take(t.root(), &to, extra);
        assert_eq!(r.code, 0, "{r:?}");
        for name in odd {
            assert!(
                to.join(format!("chat_history/u 1/sessions/{name}.json"))
                    .is_file()
            );
            assert!(
                to.join(format!("notifications/u\\2/inbox/ntf_{name}.json"))
                    .is_file()
            );
        }
        assert!(to.join("chat_history/u 1/sessions").join(raw).is_file());
        let v = verify(&to);
        assert_eq!(v.code, 0, "{v:?}");
        assert!(v.stdout.contains("5 sessions"), "{}", v.stdout);
    }
}
