//! Faults the OS can give, against every program: a read-only file system under the data
//! (EROFS), a read-only root (no state directory), and permission denied (EACCES) for a
//! program run as the backend's user. Nothing is lost, the failure is named with its path,
//! the exit status says so, and the next run after the fault clears finishes the job.
//! (Full disks are in compact.rs and archive.rs; EIO cannot be produced here: the kernel
//! has no device-mapper for an error target.)

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tmpa_tests::{Run, Tree, age, bin, is_root, strace_works};

const D1: &str = "2026-11-01";
const D2: &str = "2026-11-02";
const OLD: Duration = Duration::from_secs(60 * 86_400);

/// A mount undone (lazily) on drop.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount(args: &[&str], target: &Path) -> Option<Mounted> {
    let ok = Command::new("mount")
        .args(args)
        .arg(target)
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| Mounted(target.to_path_buf()))
}

fn remount(target: &Path, mode: &str) -> bool {
    Command::new("mount")
        .args(["-o", &format!("remount,{mode}")])
        .arg(target)
        .status()
        .is_ok_and(|s| s.success())
}

/// A tree with work for every program under `root`: loose events on two past days, old
/// sessions of two users, stale temporaries next to their final files.
fn busy_tree_at(root: &Path) {
    let file = |rel: String, body: String| {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, body).expect("write");
        p
    };
    for day in [D1, D2] {
        for i in 0..5u64 {
            let id = format!("{day}-{i}");
            file(
                format!("token_stats/{day}/evt_{id}.json"),
                tmpa_tests::event_json(&id, &format!("{day}T12:00:00Z"), "u", "m", i, 1),
            );
        }
    }
    for user in ["ann", "bob"] {
        for s in 0..3 {
            let p = file(
                format!("chat_history/{user}/sessions/s{s}.json"),
                format!("{{\"s\":{s}}}"),
            );
            age(&p, OLD);
        }
        let fin = file(
            format!("notifications/{user}/inbox/ntf_1.json"),
            "{}".into(),
        );
        let tmp = fin.with_file_name("ntf_1.json.tmp");
        fs::write(&tmp, "{").expect("temporary");
        age(&tmp, OLD);
    }
}

fn busy_tree() -> Tree {
    let t = Tree::new();
    busy_tree_at(t.root());
    t
}

fn run(root: &Path, program: &str, args: &[&str]) -> Run {
    let mut cmd = bin(program);
    let r: Run = cmd
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("run")
        .into();
    assert!(!r.stderr.contains("panicked"), "{program}: {r:?}");
    r
}

fn loose_events(root: &Path, day: &str) -> usize {
    fs::read_dir(root.join("token_stats").join(day))
        .expect("day")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("evt_"))
        .count()
}

/// The data sits on a file system that turns read-only (the state directory `.tmpa/` is
/// bound from another, writable one): compaction, archival and cleanup fail with exit 4
/// naming "Read-only file system" and change nothing; patrol still checks. Once the file
/// system is writable again (and the state directory back on it: the delete step moves
/// files into `.tmpa/quarantine/`, which must be on the data's mount), each program
/// finishes the job.
#[test]
fn read_only_data_file_system() {
    let Some(fsys) = tmpa_tests::prerequisite(
        tmpa_tests::Tmpfs::mount("16m", 10_000),
        "needs root to mount a tmpfs",
    ) else {
        return;
    };
    let root = fsys.path().join("root");
    busy_tree_at(&root);
    let state = tempfile::tempdir().expect("state dir");
    fs::create_dir_all(root.join(".tmpa")).expect("mkdir");
    let bind_arg = state.path().to_str().expect("utf-8 temp path").to_owned();
    let Some(state_mount) = tmpa_tests::prerequisite(
        mount(&["--bind", &bind_arg], &root.join(".tmpa")),
        "cannot bind-mount",
    ) else {
        return;
    };
    assert!(remount(fsys.path(), "ro"), "remount read-only");
    let before = tmpa_tests::snapshot(&root, &[".tmpa"]);
    for (program, task, args) in [
        (
            "tmpa-compact",
            "compact_events",
            &["--before", "2026-11-03"][..],
        ),
        ("tmpa-archive", "archive_history", &[]),
        ("tmpa-tmpclean", "tmp_cleanup", &["--older-than", "1m"]),
    ] {
        let r = run(&root, program, args);
        assert_eq!(r.code, 4, "{program}: {r:?}");
        assert!(
            r.stdout.contains("Read-only file system"),
            "{program} did not say why:\n{}",
            r.stdout
        );
        assert_eq!(tmpa_tests::snapshot(&root, &[".tmpa"]), before, "{program}");
        let record = fs::read(root.join(format!(".tmpa/runs/{task}.json"))).expect("run record");
        let record: serde_json::Value = serde_json::from_slice(&record).expect("json");
        assert_eq!(record["exit_code"], 4);
    }
    let p = run(&root, "tmpa-patrol", &["--json"]);
    assert_ne!(p.code, 3, "patrol must still check a read-only tree: {p:?}");
    // The nine checks of docs/OPERATIONS.md "tmpa-patrol", the file system and growth.
    assert!(p.json()["checks"].as_array().is_some_and(|c| c.len() == 11));

    drop(state_mount);
    assert!(remount(fsys.path(), "rw"), "remount read-write");
    for (program, args) in [
        ("tmpa-compact", &["--before", "2026-11-03"][..]),
        ("tmpa-archive", &[]),
        ("tmpa-tmpclean", &["--older-than", "1m"]),
    ] {
        let r = run(&root, program, args);
        assert_eq!(r.code, 0, "{program} after the fault: {r:?}");
    }
    for day in [D1, D2] {
        assert_eq!(
            loose_events(&root, day),
            0,
            "{day} not compacted after the fault"
        );
    }
    assert!(root.join("chat_history/ann/archive/s0.json.gz").exists());
    assert!(!root.join("notifications/ann/inbox/ntf_1.json.tmp").exists());
}

/// The whole root is read-only, so not even the lock can be taken: each program exits 4
/// naming the state directory, writes nothing; patrol still reports the tree.
#[test]
fn read_only_root_fails_before_any_work() {
    let t = busy_tree();
    let root = t.root().to_str().expect("utf-8 temp path").to_owned();
    let Some(()) = tmpa_tests::prerequisite(is_root(), "needs root to make read-only bind mounts")
    else {
        return;
    };
    let Some(_ro) =
        tmpa_tests::prerequisite(mount(&["--bind", &root], t.root()), "cannot bind-mount")
    else {
        return;
    };
    assert!(remount(t.root(), "bind,ro"), "remount read-only");
    let before = t.snapshot();
    for program in ["tmpa-compact", "tmpa-archive", "tmpa-tmpclean"] {
        let r = run(t.root(), program, &["--dry-run"]);
        assert_eq!(r.code, 4, "{program}: {r:?}");
        assert!(
            r.stderr.contains(".tmpa") && r.stderr.contains("Read-only file system"),
            "{program} did not name the state directory and the cause:\n{}",
            r.stderr
        );
    }
    let p = run(t.root(), "tmpa-patrol", &["--json"]);
    assert_ne!(p.code, 3, "patrol must still check: {p:?}");
    assert_eq!(t.snapshot(), before);
    assert!(!t.root().join(".tmpa").exists());
}

/// Run as the backend's user (not root), a day directory and a user directory it may not
/// enter are failures named with their paths (exit 4); the other day and the other user
/// are done.
#[test]
fn permission_denied_for_the_backend_user() {
    let Some(()) = tmpa_tests::prerequisite(
        is_root() && Command::new("setpriv").arg("--help").output().is_ok(),
        "needs root and setpriv to run as another user",
    ) else {
        return;
    };
    let bins = tmpa_tests::ReachableBins::copy(&["tmpa-compact", "tmpa-archive", "tmpa-patrol"]);
    let t = busy_tree();
    // The whole tree belongs to nobody, but for two directories.
    tmpa_tests::chown_tree(t.root(), 65534, 65534);
    let (day, user) = (
        t.root().join("token_stats").join(D1),
        t.root().join("chat_history/bob"),
    );
    for d in [&day, &user] {
        std::os::unix::fs::chown(d, Some(0), Some(0)).expect("chown");
        fs::set_permissions(d, fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    let as_nobody = |program: &str, args: &[&str]| -> Run {
        let r: Run = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .args(bins.program_args(program))
            .arg("--root")
            .arg(t.root())
            .args(args)
            .env_remove("TMPA_ROOT")
            .output()
            .expect("setpriv")
            .into();
        let r = r.started();
        assert!(!r.stderr.contains("panicked"), "{r:?}");
        r
    };
    let r = as_nobody("tmpa-compact", &["--before", "2026-11-03"]);
    assert_eq!(r.code, 4, "{r:?}");
    assert!(
        r.stdout.contains(&format!("token_stats/{D1}")),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("Permission denied"), "{}", r.stdout);
    assert_eq!(
        loose_events(t.root(), D2),
        0,
        "the readable day must still be compacted"
    );
    assert_eq!(
        fs::read_dir(&day).expect("d1").count(),
        5,
        "the unreadable day untouched"
    );

    let r = as_nobody("tmpa-archive", &[]);
    assert_eq!(r.code, 4, "{r:?}");
    assert!(r.stdout.contains("chat_history/bob"), "{}", r.stdout);
    assert!(
        t.root()
            .join("chat_history/ann/archive/s0.json.gz")
            .exists()
    );
    assert!(user.join("sessions/s0.json").exists());

    let p = as_nobody("tmpa-patrol", &["--json"]);
    assert!(
        p.stdout.contains("Permission denied") || p.stdout.contains("permission"),
        "patrol must say it could not read part of the tree:\n{}",
        p.stdout
    );
}

/// What must hold after any run on a [`busy_tree_at`] tree, however it ended: every event
/// of both days readable exactly once, every session readable with its bytes, every final
/// file next to a temporary still there.
fn nothing_lost(root: &Path) {
    let r = tmpa_core::Root::open(root).expect("root");
    for day in [D1, D2] {
        let read = r.read_day(day.parse().expect("day")).expect("read day");
        assert_eq!(read.events.len(), 5, "{day}: {:?}", read.problems);
    }
    for user in ["ann", "bob"] {
        let u = tmpa_core::UserId::new(user).expect("user");
        for s in 0..3 {
            let sid = tmpa_core::SessionId::new(format!("s{s}")).expect("session");
            assert_eq!(
                r.read_session(&u, &sid).expect("session readable"),
                format!("{{\"s\":{s}}}").as_bytes()
            );
        }
        assert!(
            root.join(format!("notifications/{user}/inbox/ntf_1.json"))
                .exists()
        );
    }
}

/// EIO from the disk at the Nth fsync (or fdatasync) of a run, for every N up to past the
/// last one (injected from outside with `strace -e inject=...:error=EIO:when=N`):
/// compaction, archival and cleanup each end with exit 0 (the fault came after the last
/// sync), or report the failure (exit 4) having lost nothing; a run without the fault
/// then finishes the job.
#[test]
fn eio_at_every_sync_loses_nothing() {
    let Some(()) = tmpa_tests::prerequisite(strace_works(), "strace cannot inject faults here")
    else {
        return;
    };
    for (program, args) in [
        ("tmpa-compact", &["--before", "2026-11-03"][..]),
        ("tmpa-archive", &[]),
        ("tmpa-tmpclean", &["--older-than", "1m"]),
    ] {
        let mut reached_the_end = false;
        for n in 1..=40 {
            let t = busy_tree();
            if program == "tmpa-tmpclean" {
                std::thread::sleep(Duration::from_millis(1100)); // the temporaries' ctime ages
            }
            let r: Run =
                tmpa_tests::strace_inject(&format!("fsync,fdatasync:error=EIO:when={n}"), program)
                    .arg("--root")
                    .arg(t.root())
                    .args(args)
                    .output()
                    .expect("strace")
                    .into();
            assert!(!r.stderr.contains("panicked"), "{program} n={n}: {r:?}");
            assert!(matches!(r.code, 0 | 4), "{program} n={n}: {r:?}");
            nothing_lost(t.root());
            if r.code == 4 {
                assert!(
                    r.stdout.contains("Input/output error")
                        || r.stderr.contains("Input/output error"),
                    "{program} n={n} did not say why: {r:?}"
                );
                let again = run(t.root(), program, args);
                assert_eq!(again.code, 0, "{program} after EIO at sync {n}: {again:?}");
                nothing_lost(t.root());
            } else {
                eprintln!(
                    "{program}: EIO at each of its first {} syncs handled",
                    n - 1
                );
                reached_the_end = true;
                break;
            }
        }
        assert!(
            reached_the_end,
            "{program}: more than 40 syncs in one small run?"
        );
    }
}

/// EIO at every `unlinkat`: nothing is deleted, each file is reported kept with a
/// `kept` receipt line after its `delete` line, exit 4; the next run deletes them.
#[test]
fn eio_at_every_unlink_keeps_the_files_and_says_so() {
    let Some(()) = tmpa_tests::prerequisite(strace_works(), "strace cannot inject faults here")
    else {
        return;
    };
    let t = busy_tree();
    let r: Run = tmpa_tests::strace_inject("unlinkat:error=EIO", "tmpa-compact")
        .args(["--before", "2026-11-03", "--root"])
        .arg(t.root())
        .output()
        .expect("strace")
        .into();
    assert_eq!(r.code, 4, "{r:?}");
    assert_eq!(loose_events(t.root(), D1), 5);
    nothing_lost(t.root());
    let receipts = fs::read_dir(t.root().join(".tmpa/receipts/compact_events"))
        .expect("receipts")
        .map(|e| fs::read_to_string(e.expect("e").path()).expect("read"))
        .collect::<String>();
    let lines: Vec<serde_json::Value> = receipts
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let deletes = lines.iter().filter(|l| l["line"] == "delete").count();
    let kept = lines.iter().filter(|l| l["line"] == "kept").count();
    assert!(deletes > 0 && kept > 0, "{receipts}");
    let again = run(t.root(), "tmpa-compact", &["--before", "2026-11-03"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(loose_events(t.root(), D1), 0);
    nothing_lost(t.root());
}
