//! tmpa-tmpclean on real trees: each decision (stale, young, open, orphan, not a regular
//! file, another file system), odd names, symlinks and loops, dry runs, JSON, locks, usage
//! errors and an immutable directory.
//!
//! "Not open" is proven by the kernel (a file lease), whatever `/proc` shows: the tests
//! run the program plainly, in its own pid namespace beside a process that holds a
//! temporary open, with a lease broken mid-deletion, and with `/proc` as the only evidence.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tmpa_tests::{Immutable, Run, Tree, bin, is_root};

const BIN: &str = "tmpa-tmpclean";
/// The age threshold the tests use (tmpclean's floor). The program runs with its clock
/// `tmpa_tests::CLOCK_AHEAD_SECS` ahead (ctime cannot be set back), so a file passes it a
/// moment after it was written.
const OLD: &str = "1m";
const WAIT: Duration = Duration::from_millis(1300);

/// Runs the program on `t`.
fn clean(t: &Tree, args: &[&str]) -> Option<Run> {
    Some(t.run(BIN, args))
}

/// As [`clean`], while another process (a `sleep` with the file as its stdin) holds
/// `held` open for reading; with `prefix`, the program runs behind it (`unshare ...`).
fn clean_holding(t: &Tree, held: &Path, prefix: &[&str], args: &[&str]) -> Run {
    let mut holder = Command::new("sleep")
        .arg("30")
        .stdin(fs::File::open(held).expect("open held file"))
        .spawn()
        .expect("spawn holder");
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).args(tmpa_tests::program_args(BIN));
            c
        }
        None => bin(BIN),
    };
    let out = cmd
        .env_remove("TMPA_ROOT")
        .arg("--root")
        .arg(t.root())
        .args(args)
        .output()
        .expect("run");
    let _ = holder.kill();
    let _ = holder.wait();
    out.into()
}

/// A temporary (and, when `with_final`, its final file) at `rel`.
fn temp(t: &Tree, rel: &str, with_final: bool) -> PathBuf {
    let p = t.file(rel, format!("partial write of {rel}"));
    if with_final {
        let fin = tmpa_core::temp_final_name(p.file_name().expect("name")).expect("a temporary");
        t.file(Path::new(rel).with_file_name(fin), "{\"final\":true}");
    }
    p
}

fn receipts(t: &Tree) -> Vec<Value> {
    tmpa_tests::receipt_lines(t.root(), "tmp_cleanup")
}

fn run_record(t: &Tree) -> Value {
    serde_json::from_slice(&fs::read(t.root().join(".tmpa/runs/tmp_cleanup.json")).expect("record"))
        .expect("record is JSON")
}

/// The line of the text report that names `path` (paths are printed as `path_text` does).
fn line_for<'a>(r: &'a Run, path: &Path) -> &'a str {
    let shown = tmpa_core::maintenance::path_text(
        &fs::canonicalize(path.parent().expect("parent"))
            .expect("canon")
            .join(path.file_name().expect("name")),
    );
    r.stdout
        .lines()
        .find(|l| l.contains(&format!(" {shown}: ")))
        .unwrap_or_else(|| panic!("no line for {shown} in:\n{}", r.stdout))
}

/// Old temporaries whose final file exists are deleted, both the Python backend's
/// `{final}.tmp` and the library's `{final}.tmp.{suffix}`; the fsynced receipt names each
/// with its SHA-256 and final file; the run record counts them; a second run has nothing
/// left to do.
#[test]
fn stale_temporaries_with_final_are_deleted_with_a_receipt() {
    let t = Tree::new();
    let py = temp(&t, "notifications/u1/inbox/ntf_1.json.tmp", true);
    let lib = temp(
        &t,
        "token_stats/2026-11-01/_compacted.json.tmp.4711-0-ff",
        true,
    );
    let ses = temp(&t, "chat_history/u1/sessions/s1.json.tmp.123-abc", true);
    let want_sha = tmpa_core::maintenance::sha256_hex(&fs::read(&py).expect("read"));
    std::thread::sleep(WAIT);
    let Some(r) = clean(&t, &["--older-than", OLD]) else {
        return;
    };
    assert_eq!(r.code, 0, "{r:?}");
    for p in [&py, &lib, &ses] {
        assert!(!p.exists(), "{} still there:\n{}", p.display(), r.stdout);
        assert!(
            line_for(&r, p).starts_with("deleted      stale"),
            "{}",
            r.stdout
        );
    }
    assert!(t.root().join("notifications/u1/inbox/ntf_1.json").exists());
    let rec = receipts(&t);
    assert_eq!(rec.len(), 3, "{rec:?}");
    let py_line = rec
        .iter()
        .find(|l| {
            l["file"]
                .as_str()
                .is_some_and(|f| f.ends_with("ntf_1.json.tmp"))
        })
        .expect("receipt names the temporary");
    assert_eq!(py_line["sha256"].as_str(), Some(want_sha.as_str()));
    assert!(
        py_line["held_by"]
            .as_str()
            .expect("final")
            .ends_with("inbox/ntf_1.json")
    );
    assert_eq!(py_line["verified_by"], "stale_temporary");
    assert_eq!(py_line["not_open"], "lease");
    let record = run_record(&t);
    assert_eq!(record["counts"]["deleted"], 3);
    assert_eq!(record["exit_code"], 0);
    assert_eq!(record["dry_run"], false);
    let Some(again) = clean(&t, &["--older-than", OLD]) else {
        return;
    };
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(run_record(&t)["counts"]["temporaries"], 0);
}

/// An old temporary without its final file may hold the only copy of some data: kept,
/// named, exit 1. One whose "final file" is a directory is an orphan too.
#[test]
fn old_orphan_is_kept_and_reported() {
    let t = Tree::new();
    let orphan = temp(&t, "notifications/u1/inbox/ntf_9.json.tmp", false);
    let odd = temp(&t, "token_stats/2026-11-01/evt_d.json.tmp", false);
    fs::create_dir(t.root().join("token_stats/2026-11-01/evt_d.json")).expect("mkdir");
    std::thread::sleep(WAIT);
    let Some(r) = clean(&t, &["--older-than", OLD]) else {
        return;
    };
    assert_eq!(r.code, 1, "{r:?}");
    assert!(orphan.exists() && odd.exists());
    assert!(
        line_for(&r, &orphan).contains("keep         orphan"),
        "{}",
        r.stdout
    );
    assert!(
        line_for(&r, &orphan).contains("no final file"),
        "{}",
        r.stdout
    );
    assert!(
        line_for(&r, &odd).contains("a directory, not a regular file"),
        "{}",
        r.stdout
    );
    assert_eq!(run_record(&t)["counts"]["orphan"], 2);
    assert!(receipts(&t).is_empty(), "nothing deleted, no receipt");
}

/// A temporary written just now is a write in progress: kept as young (default 24h),
/// with or without a final file, exit 0.
#[test]
fn fresh_temporary_is_kept_as_young() {
    let t = Tree::new();
    let a = temp(&t, "token_stats/2026-11-25/evt_a.json.tmp", true);
    let b = temp(&t, "token_stats/2026-11-25/evt_b.json.tmp.1-2", false);
    let r = t.run(BIN, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(a.exists() && b.exists());
    assert!(
        line_for(&r, &a).contains("keep         young"),
        "{}",
        r.stdout
    );
    assert!(
        line_for(&r, &b).contains("keep         young"),
        "{}",
        r.stdout
    );
}

/// Age counts by ctime too: a temporary whose mtime was set two days back (by `touch`,
/// which sets ctime to now) is still young.
#[test]
fn old_mtime_with_recent_ctime_is_young() {
    let t = Tree::new();
    let p = temp(&t, "chat_history/u1/sessions/s.json.tmp", true);
    tmpa_tests::age(&p, Duration::from_secs(2 * 86_400));
    let r = t.run(BIN, &["--older-than", "1d"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(p.exists());
    assert!(line_for(&r, &p).contains("young"), "{}", r.stdout);
}

/// A stale temporary that a live process holds open is kept as open; once the process is
/// gone the next run deletes it.
#[test]
fn temporary_held_open_by_a_live_process_is_kept() {
    let t = Tree::new();
    let held = temp(&t, "notifications/u2/inbox/ntf_5.json.tmp.9-x", true);
    let free = temp(&t, "notifications/u2/inbox/ntf_6.json.tmp", true);
    std::thread::sleep(WAIT);
    let r = clean_holding(&t, &held, &[], &["--older-than", OLD]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        held.exists(),
        "an open temporary was deleted:\n{}",
        r.stdout
    );
    assert!(
        line_for(&r, &held).contains("keep         open"),
        "{}",
        r.stdout
    );
    assert!(!free.exists());
    let Some(r2) = clean(&t, &["--older-than", OLD]) else {
        return;
    };
    assert_eq!(r2.code, 0, "{r2:?}");
    assert!(!held.exists(), "closed now, so deleted:\n{}", r2.stdout);
}

/// `foo.json.tmpl`, `x.tmpfoo` and other look-alikes are not temporaries; nothing outside
/// the three data directories (`.tmpa/`, other top-level directories) is looked at.
#[test]
fn non_temporaries_and_other_directories_are_untouched() {
    let t = Tree::new();
    for rel in [
        "notifications/u1/inbox/foo.json.tmpl",
        "notifications/u1/inbox/x.tmpfoo",
        "notifications/u1/inbox/x.tmp.",
        "notifications/u1/inbox/.tmp",
        "token_stats/2026-11-01/evt_1.json",
        "token_stats/2026-11-01/tmp",
    ] {
        t.file(rel, "keep me");
    }
    temp(&t, ".tmpa/state.json.tmp", true);
    temp(&t, "elsewhere/data.json.tmp", true);
    std::thread::sleep(WAIT);
    let before = t.snapshot();
    let Some(r) = clean(&t, &["--older-than", OLD]) else {
        return;
    };
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(run_record(&t)["counts"]["temporaries"], 0, "{}", r.stdout);
    assert_eq!(t.snapshot(), before);
    assert!(
        t.root().join(".tmpa/state.json.tmp").exists(),
        ".tmpa/ is never walked"
    );
}

/// `chat_history/{user}/profile/` is never touched by maintenance (docs/FORMAT.md "The tree"): its stale
/// temporaries are listed as protected and kept, exit 0.
#[test]
fn profile_temporaries_are_protected() {
    let t = Tree::new();
    let p = temp(&t, "chat_history/u1/profile/avatar.json.tmp", true);
    let s = temp(&t, "chat_history/u1/sessions/s.json.tmp", true);
    std::thread::sleep(WAIT);
    let Some(r) = clean(&t, &["--older-than", OLD]) else {
        return;
    };
    assert_eq!(r.code, 0, "{r:?}");
    assert!(p.exists());
    assert!(
        line_for(&r, &p).contains("keep         protected"),
        "{}",
        r.stdout
    );
    assert!(!s.exists());
}

/// A symlink named like a temporary that points at a file outside the root is kept as
/// "not a regular file": neither the link nor its target is touched. A fifo likewise.
#[test]
fn symlink_temporary_pointing_outside_is_left_alone() {
    let t = Tree::new();
    let outside = tempfile::tempdir().expect("tempdir");
    let secret = outside.path().join("secret.json");
    fs::write(&secret, "outside data").expect("write");
    t.file("chat_history/u1/sessions/s.json", "{}");
    let link = t.root().join("chat_history/u1/sessions/s.json.tmp");
    std::os::unix::fs::symlink(&secret, &link).expect("symlink");
    tmpa_tests::age(&link, Duration::from_secs(3 * 86_400));
    let fifo = t.root().join("chat_history/u1/sessions/f.json.tmp");
    tmpa_tests::mkfifo(&fifo);
    t.file("chat_history/u1/sessions/f.json", "{}");
    let outside_before = tmpa_tests::snapshot(outside.path(), &[]);
    std::thread::sleep(WAIT);
    let Some(r) = clean(&t, &["--older-than", OLD]) else {
        return;
    };
    assert_eq!(r.code, 0, "{r:?}");
    assert!(line_for(&r, &link).contains("not_regular"), "{}", r.stdout);
    assert!(line_for(&r, &link).contains("a symlink"), "{}", r.stdout);
    assert!(line_for(&r, &fifo).contains("a fifo"), "{}", r.stdout);
    assert!(fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()));
    assert!(fifo.exists());
    assert_eq!(tmpa_tests::snapshot(outside.path(), &[]), outside_before);
}

/// Symlinked directories are never followed: a loop back to the root, a link to a
/// directory outside holding "temporaries", and a data directory that is itself a
/// symlink (reported, exit 1). The run ends and touches nothing through them.
#[test]
fn symlinked_directories_and_loops_are_not_followed() {
    let t = Tree::bare();
    fs::create_dir_all(t.root().join("notifications/u1/inbox")).expect("mkdir");
    fs::create_dir(t.root().join("chat_history")).expect("mkdir");
    let outside = tempfile::tempdir().expect("tempdir");
    fs::write(outside.path().join("x.json"), "{}").expect("w");
    fs::write(outside.path().join("x.json.tmp"), "outside temp").expect("w");
    std::os::unix::fs::symlink("../..", t.root().join("notifications/u1/inbox/loop")).expect("ln");
    std::os::unix::fs::symlink(t.root(), t.root().join("chat_history/root")).expect("ln");
    std::os::unix::fs::symlink(outside.path(), t.root().join("chat_history/out")).expect("ln");
    std::os::unix::fs::symlink(outside.path(), t.root().join("token_stats")).expect("ln");
    let inside = temp(&t, "notifications/u1/inbox/ntf_1.json.tmp", true);
    let outside_before = tmpa_tests::snapshot(outside.path(), &[]);
    std::thread::sleep(WAIT);
    let Some(r) = clean(&t, &["--older-than", OLD]) else {
        return;
    };
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout.contains("data directory is a symlink"),
        "{}",
        r.stdout
    );
    assert!(!inside.exists(), "{}", r.stdout);
    assert_eq!(run_record(&t)["counts"]["temporaries"], 1, "{}", r.stdout);
    assert_eq!(tmpa_tests::snapshot(outside.path(), &[]), outside_before);
    assert!(fs::symlink_metadata(t.root().join("notifications/u1/inbox/loop")).is_ok());
}

/// A tmpfs mounted inside the root is another file system: not entered, said so, and its
/// temporaries untouched (root only).
#[test]
fn tmpfs_mounted_inside_the_root_is_not_entered() {
    let Some(()) = tmpa_tests::prerequisite(is_root(), "mounting a tmpfs needs root") else {
        return;
    };
    struct Mount(PathBuf);
    impl Drop for Mount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let t = Tree::new();
    let mnt = t.root().join("token_stats/2026-11-01");
    fs::create_dir_all(&mnt).expect("mkdir");
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    let Some(()) = tmpa_tests::prerequisite(ok, "cannot mount a tmpfs here") else {
        return;
    };
    let _mount = Mount(mnt.clone());
    let on_tmpfs = temp(&t, "token_stats/2026-11-01/evt_1.json.tmp", true);
    let local = temp(&t, "token_stats/2026-11-02/evt_2.json.tmp", true);
    std::thread::sleep(WAIT);
    let Some(r) = clean(&t, &["--older-than", OLD]) else {
        return;
    };
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        on_tmpfs.exists(),
        "a file on another file system was deleted"
    );
    assert!(!local.exists());
    assert!(
        r.stdout.contains("on another file system (not entered)"),
        "{}",
        r.stdout
    );
    assert_eq!(run_record(&t)["counts"]["not_entered"], 1);
}

/// Names with spaces, a newline and invalid UTF-8 are handled like any other: deleted
/// when stale, each reported on exactly one line (escaped), and the JSON report parses.
#[test]
fn odd_names_are_handled() {
    let t = Tree::new();
    let dir = t.root().join("notifications/u 1/inbox");
    fs::create_dir_all(&dir).expect("mkdir");
    let names: [&[u8]; 3] = [b"with space.json", b"new\nline.json", b"bad\xff.json"];
    let mut temps = Vec::new();
    for n in names {
        fs::write(dir.join(OsStr::from_bytes(n)), "{}").expect("final");
        let mut tmp = n.to_vec();
        tmp.extend_from_slice(b".tmp");
        let p = dir.join(OsStr::from_bytes(&tmp));
        fs::write(&p, "partial").expect("tmp");
        temps.push(p);
    }
    let orphan = dir.join(OsStr::from_bytes(b"orphan\xfe\n.json.tmp.1"));
    fs::write(&orphan, "only copy").expect("orphan");
    std::thread::sleep(WAIT);
    let Some(dry) = clean(&t, &["--older-than", OLD, "--dry-run", "--json"]) else {
        return;
    };
    assert_eq!(dry.code, 1, "{dry:?}");
    let doc = dry.json();
    let list = doc["temporaries"].as_array().expect("temporaries");
    assert_eq!(list.len(), 4, "{doc}");
    let Some(r) = clean(&t, &["--older-than", OLD]) else {
        return;
    };
    assert_eq!(r.code, 1, "{r:?}");
    for p in &temps {
        assert!(!p.exists(), "{p:?} not deleted:\n{}", r.stdout);
    }
    assert!(orphan.exists());
    // header + 4 decisions + footer: the newline in a name never splits a line.
    assert_eq!(r.stdout.lines().count(), 6, "{}", r.stdout);
    assert!(r.stdout.contains(r"new\nline.json.tmp"), "{}", r.stdout);
    assert!(r.stdout.contains(r"bad\xFF.json.tmp"), "{}", r.stdout);
}

/// A dry run changes nothing in the tree, prints the same text twice apart from times,
/// says DRY-RUN, and the real run then deletes exactly what it said it would.
#[test]
fn dry_run_changes_nothing_and_is_stable() {
    let t = Tree::new();
    let stale = [
        temp(&t, "notifications/u1/inbox/ntf_1.json.tmp", true),
        temp(&t, "token_stats/2026-11-01/evt_1.json.tmp.5-a", true),
        temp(&t, "chat_history/u9/sessions/s.json.tmp", true),
    ];
    let orphan = temp(&t, "chat_history/u9/sessions/gone.json.tmp", false);
    t.file("token_stats/2026-11-01/evt_2.json.tmpl", "not a temporary");
    std::thread::sleep(WAIT);
    let before = t.snapshot();
    let args = ["--older-than", OLD, "--dry-run"];
    let Some(r1) = clean(&t, &args) else { return };
    let Some(r2) = clean(&t, &args) else { return };
    assert_eq!(r1.code, 1, "{r1:?}");
    assert_eq!(t.snapshot(), before, "a dry run changed the tree");
    tmpa_tests::assert_same_dry_runs(t.root(), &r1, &r2);
    for p in &stale {
        assert!(
            line_for(&r1, p).starts_with("would_delete stale"),
            "{}",
            r1.stdout
        );
    }
    assert!(line_for(&r1, &orphan).contains("orphan"), "{}", r1.stdout);
    assert!(r1.stdout.contains("would_delete=3"), "{}", r1.stdout);
    assert!(receipts(&t).is_empty());
    assert_eq!(run_record(&t)["dry_run"], true);
    let Some(real) = clean(&t, &["--older-than", OLD]) else {
        return;
    };
    assert_eq!(real.code, 1, "{real:?}");
    assert!(stale.iter().all(|p| !p.exists()));
    assert!(orphan.exists());
    assert_eq!(run_record(&t)["counts"]["deleted"], 3);
}

/// --json prints one document listing every temporary with its action, reason and final
/// file; the log lines go to stderr.
#[test]
fn json_report_lists_every_decision() {
    let t = Tree::new();
    temp(&t, "notifications/u1/inbox/ntf_1.json.tmp", true);
    temp(&t, "notifications/u1/inbox/ntf_2.json.tmp", false);
    let r = t.run(BIN, &["--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let doc = r.json();
    assert_eq!(doc["program"], BIN);
    assert_eq!(doc["dry_run"], false);
    assert_eq!(doc["older_than_secs"], 86_400);
    assert_eq!(doc["exit_code"], 0);
    let list = doc["temporaries"].as_array().expect("list");
    assert_eq!(list.len(), 2);
    assert!(
        list[0]["path"]
            .as_str()
            .expect("path")
            .ends_with("ntf_1.json.tmp")
    );
    assert!(
        list[0]["final"]
            .as_str()
            .expect("final")
            .ends_with("ntf_1.json")
    );
    for d in list {
        assert_eq!(d["action"], "keep");
        assert_eq!(d["reason"], "young");
    }
    assert_eq!(doc["counts"]["young"], 2);
    assert!(r.stderr.contains("tmpa-tmpclean CLEAN"), "{}", r.stderr);
    assert!(r.stderr.contains("finished:"), "{}", r.stderr);
}

/// While another run holds the lock, a second run exits 3 and changes nothing.
#[test]
fn held_lock_exits_3() {
    let t = Tree::new();
    let tmp = temp(&t, "notifications/u1/inbox/ntf_1.json.tmp", true);
    let locks = t.root().join(".tmpa/locks");
    fs::create_dir_all(&locks).expect("mkdir");
    let lock = fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(locks.join("tmp_cleanup.lock"))
        .expect("lock file");
    lock.try_lock().expect("take the lock");
    std::thread::sleep(WAIT);
    let r = t.run(BIN, &["--older-than", OLD]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("lock"), "{}", r.stderr);
    assert!(tmp.exists());
    drop(lock);
}

/// Usage errors exit 2 and write nothing but their run record (so that the alert on a
/// failing job sees them): not a TMPA root (no record: nowhere to write it), a bad
/// --older-than, an unknown flag; the log's first and last lines are printed around
/// clap's message.
#[test]
fn usage_errors_exit_2() {
    tmpa_tests::assert_refuses_non_root(BIN);
    let t = Tree::new();
    let before = t.snapshot();
    assert_eq!(t.run(BIN, &["--older-than", "12"]).code, 2);
    assert_eq!(t.run(BIN, &["--older-than", "-1d"]).code, 2);
    let r = t.run(BIN, &["--frobnicate"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--frobnicate"), "clap's message: {r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(
        lines.len() == 2
            && lines[0].contains(" tmpa-tmpclean CLEAN root=")
            && lines[1].contains("finished: exit=2 (usage error)"),
        "{r:?}"
    );
    assert_eq!(t.snapshot(), before, "the tree is as it was");
    let state: Vec<String> = walk_names(&t.root().join(".tmpa"));
    assert_eq!(
        state,
        ["runs", "runs/tmp_cleanup.json"],
        "only the run record"
    );
    let record: serde_json::Value = serde_json::from_slice(
        &fs::read(t.root().join(".tmpa/runs/tmp_cleanup.json")).expect("record"),
    )
    .expect("json");
    assert_eq!(
        (record["exit_code"].as_u64(), record["finished"].as_bool()),
        (Some(2), None)
    );
}

/// Every path below `dir`, relative, sorted.
fn walk_names(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("ls") {
            let p = e.expect("entry").path();
            out.push(p.strip_prefix(dir).expect("below").display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// An immutable directory (chattr +i) holding a stale temporary: its deletion fails, is
/// reported with the path, the receipt says it was not deleted, exit 4; the temporaries
/// elsewhere are still deleted and nothing else is lost (root only).
#[test]
fn immutable_directory_is_reported_and_nothing_else_lost() {
    let Some(()) = tmpa_tests::prerequisite(is_root(), "chattr +i needs root") else {
        return;
    };
    let t = Tree::new();
    let stuck = temp(&t, "notifications/u1/inbox/ntf_1.json.tmp", true);
    let fine = temp(&t, "notifications/u2/inbox/ntf_2.json.tmp", true);
    let dir = t.root().join("notifications/u1/inbox");
    std::thread::sleep(WAIT);
    let Some(_imm) = tmpa_tests::prerequisite(Immutable::set(&dir), "chattr +i not supported here")
    else {
        return;
    };
    let Some(r) = clean(&t, &["--older-than", OLD]) else {
        return;
    };
    assert_eq!(r.code, 4, "{r:?}");
    assert!(stuck.exists());
    assert!(dir.join("ntf_1.json").exists());
    assert!(!fine.exists());
    assert!(t.root().join("notifications/u2/inbox/ntf_2.json").exists());
    let line = line_for(&r, &stuck);
    assert!(line.contains("keep         failed"), "{}", r.stdout);
    assert!(line.contains("not deleted"), "{}", r.stdout);
    let rec = receipts(&t);
    assert!(
        rec.iter().any(|l| l["line"] == "kept"
            && l["reason"]
                .as_str()
                .is_some_and(|r| r.contains("not deleted"))
            && l["file"]
                .as_str()
                .is_some_and(|f| f.ends_with("u1/inbox/ntf_1.json.tmp"))),
        "{rec:?}"
    );
    assert_eq!(run_record(&t)["exit_code"], 4);
}

/// A plain run deletes a stale temporary nobody has open, on the kernel's word (a file
/// lease), even where `/proc` cannot show every process (this sandbox hides pid 1's
/// descriptors even from root): the decision says `not open (lease)`.
#[test]
fn plain_run_proves_not_open_by_lease_whatever_proc_shows() {
    let t = Tree::new();
    let p = temp(&t, "notifications/u1/inbox/ntf_1.json.tmp", true);
    std::thread::sleep(WAIT);
    let r = t.run(BIN, &["--older-than", OLD]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!p.exists());
    assert!(
        line_for(&r, &p).contains("deleted      stale")
            && line_for(&r, &p).contains("not open (lease)"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains(" deleted=1 "), "{}", r.stdout);
}

/// A cron container beside the application's has its own pid namespace: its `/proc`
/// shows none of the application's processes. A temporary the application holds open is
/// still kept (the kernel refuses the lease), and a free one deleted.
#[test]
fn temporary_held_open_outside_the_pid_namespace_is_kept() {
    let probe = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status();
    let Some(()) = tmpa_tests::prerequisite(
        probe.is_ok_and(|s| s.success()),
        "cannot make a pid namespace here (unshare)",
    ) else {
        return;
    };
    let t = Tree::new();
    let held = temp(&t, "notifications/u1/inbox/ntf_1.json.tmp.4242.9f3a", true);
    let free = temp(&t, "notifications/u1/inbox/ntf_2.json.tmp", true);
    std::thread::sleep(WAIT);
    let r = clean_holding(
        &t,
        &held,
        &["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"],
        &["--older-than", OLD],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        held.exists(),
        "a temporary held open outside was deleted:\n{}",
        r.stdout
    );
    assert!(
        line_for(&r, &held).contains("keep         open"),
        "{}",
        r.stdout
    );
    assert!(!free.exists(), "{}", r.stdout);
}

/// A temporary mapped into memory by a process that has closed its descriptor is still
/// in use: kept as open.
#[test]
fn mapped_temporary_is_kept() {
    let t = Tree::new();
    let mapped = temp(&t, "chat_history/u1/sessions/s.json.tmp", true);
    std::thread::sleep(WAIT);
    let mut holder = Command::new("python3")
        .args([
            "-c",
            "import mmap,sys,time\nf=open(sys.argv[1],'rb')\nm=mmap.mmap(f.fileno(),0,access=mmap.ACCESS_READ)\nf.close()\nprint('mapped',flush=True)\ntime.sleep(30)",
        ])
        .arg(&mapped)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("read");
    assert_eq!(line.trim(), "mapped");
    let r = t.run(BIN, &["--older-than", OLD]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        mapped.exists(),
        "a mapped temporary was deleted:\n{}",
        r.stdout
    );
    assert!(
        line_for(&r, &mapped).contains("keep         open"),
        "{}",
        r.stdout
    );
}

/// Someone opens a temporary while tmpclean holds its lease, between the receipt and the
/// deletion (the receipt's fsync is slowed down with strace): the lease shows broken, the
/// file is kept and said so, and the opener goes on with the file intact.
#[test]
fn lease_broken_during_deletion_keeps_the_file() {
    let Some(()) = tmpa_tests::prerequisite(
        tmpa_tests::strace_works(),
        "strace cannot inject faults here",
    ) else {
        return;
    };
    let t = Tree::new();
    let p = temp(&t, "notifications/u1/inbox/ntf_1.json.tmp", true);
    std::thread::sleep(WAIT);
    let mut child = tmpa_tests::strace_inject("fdatasync:delay_enter=3000000", BIN)
        .arg("--root")
        .arg(t.root())
        .args(["--older-than", OLD])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("strace");
    // The receipt's fdatasync is the first; tmpclean holds the lease through it. Its line
    // is written once the lease is held: wait for it rather than guess a time.
    tmpa_tests::wait_for_receipt_line(&mut child, t.root(), "tmp_cleanup");
    let opened = std::time::Instant::now();
    let content = fs::read(&p).expect("the opener waits for the lease, then reads the file");
    let waited = opened.elapsed();
    let r: Run = child.wait_with_output().expect("wait").into();
    assert_eq!(r.code, 1, "{r:?}");
    assert!(content.starts_with(b"partial write"), "{content:?}");
    assert!(
        p.exists(),
        "deleted although its lease was broken:\n{}",
        r.stdout
    );
    let line = line_for(&r, &p);
    assert!(
        line.contains("keep         changed") && line.contains("lease broken"),
        "{}",
        r.stdout
    );
    assert!(
        waited > Duration::from_millis(200),
        "the open did not wait for the lease ({waited:?})"
    );
    let rec = receipts(&t);
    assert!(rec.iter().any(|l| l["line"] == "kept"), "{rec:?}");
}

/// The library's short temporary of a very long name (`{160 bytes}~{16 hex}.tmp.{unique}`,
/// used when `{final}.tmp.{unique}` would not fit in 255 bytes) is recognised: stale with
/// its final file present, it is deleted; the patrol counts it.
#[test]
fn short_temporary_of_a_long_name_is_recognised() {
    use sha2::Digest as _;
    let t = Tree::new();
    let id = "i".repeat(240);
    let fin = t.event("2026-11-01", &id, "u", 1, 1);
    let name = fin
        .file_name()
        .expect("name")
        .to_str()
        .expect("utf-8")
        .to_owned();
    let hash: String = sha2::Sha256::digest(name.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let short = fin.with_file_name(format!("{}~{hash}.tmp.4242-0-ff", &name[..160]));
    fs::write(&short, b"{\"partial\"").expect("write");
    assert!(short.file_name().expect("n").len() <= 255);
    let p = t.run("tmpa-patrol", &["--json"]);
    let tmp = p.json()["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "tmp_files")
        .expect("tmp_files")
        .clone();
    assert!(
        tmp["detail"].as_str().expect("d").contains("(1 in all)"),
        "{tmp:#}"
    );
    std::thread::sleep(WAIT);
    let r = clean(&t, &["--older-than", OLD]).expect("run");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!short.exists(), "{}", r.stdout);
    assert!(fin.exists());
    let line = line_for(&r, &short);
    assert!(line.starts_with("deleted      stale"), "{}", r.stdout);
}
