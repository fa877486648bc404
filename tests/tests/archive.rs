//! tmpa-archive on real trees: archival with verification before deletion, interrupted
//! runs, conflicts, sessions rewritten while archived, symlinks, odd names, full disks,
//! immutable directories, dry runs, locks and kills.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tmpa_core::{Root, SessionId, UserId};
use tmpa_tests::{Immutable, Tmpfs, Tree, age, bin, normalize};

const MONTH: Duration = Duration::from_secs(40 * 86_400);

/// Writes `chat_history/{user}/sessions/{name}.json` aged `how_old`; returns its path.
fn session(t: &Tree, user: &str, name: &str, body: &[u8], how_old: Duration) -> PathBuf {
    let p = t.file(format!("chat_history/{user}/sessions/{name}.json"), body);
    age(&p, how_old);
    p
}

fn body(user: &str, name: &str, n: usize) -> Vec<u8> {
    let msgs: Vec<Value> = (0..n)
        .map(|i| serde_json::json!({"role": if i % 2 == 0 {"user"} else {"assistant"}, "text": format!("message {i} of {name} for {user}")}))
        .collect();
    serde_json::to_vec(&serde_json::json!({"session": name, "messages": msgs})).expect("json")
}

fn gunzip(path: &Path) -> Vec<u8> {
    let out = Command::new("gzip")
        .arg("-dc")
        .arg(path)
        .output()
        .expect("run gzip");
    assert!(out.status.success(), "gzip -dc {}: {out:?}", path.display());
    out.stdout
}

fn archive_path(t: &Tree, user: &str, name: &str) -> PathBuf {
    t.root()
        .join(format!("chat_history/{user}/archive/{name}.json.gz"))
}

/// Version `n` of a session's local archive (docs/FORMAT.md "Archived session").
fn version_path(t: &Tree, user: &str, name: &str, n: u32) -> PathBuf {
    if n == 1 {
        return archive_path(t, user, name);
    }
    t.root().join(format!(
        "chat_history/{user}/archive/versions/{n}/{name}.json.gz"
    ))
}

/// Every receipt line of every archival run (a torn last line from a kill is skipped).
fn receipts(t: &Tree) -> Vec<Value> {
    tmpa_tests::receipt_lines_after_kills(t.root(), "archive_history")
}

/// Old sessions are archived (readable by `gzip -dc`), verified, receipted and deleted;
/// young sessions, profile/ and temporaries are untouched; a second run changes nothing.
#[test]
fn archives_old_sessions_and_leaves_the_rest() {
    let t = Tree::new();
    let mut old = BTreeMap::new();
    for user in ["alice", "bob"] {
        for i in 0..3 {
            let name = format!("s{i}");
            let b = body(user, &name, 5 + i);
            session(&t, user, &name, &b, MONTH);
            old.insert((user, name), b);
        }
        session(
            &t,
            user,
            "fresh",
            b"{\"new\":true}",
            Duration::from_secs(3600),
        );
        let prof = t.file(format!("chat_history/{user}/profile/p.json"), b"{}");
        age(&prof, MONTH);
        let tmp = t.file(format!("chat_history/{user}/sessions/s9.json.tmp"), b"{");
        age(&tmp, MONTH);
    }
    fs::set_permissions(
        t.root().join("chat_history/alice/sessions/s1.json"),
        fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    let r = t.run("tmpa-archive", &[]);
    assert_eq!(r.code, 0, "{r:?}");
    for ((user, name), b) in &old {
        let live = t
            .root()
            .join(format!("chat_history/{user}/sessions/{name}.json"));
        assert!(!live.exists(), "{} not deleted", live.display());
        assert_eq!(&gunzip(&archive_path(&t, user, name)), b);
    }
    let mode = fs::metadata(archive_path(&t, "alice", "s1"))
        .expect("archive")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "archive must stay as private as the session"
    );
    for user in ["alice", "bob"] {
        assert!(
            t.root()
                .join(format!("chat_history/{user}/sessions/fresh.json"))
                .exists()
        );
        assert!(
            t.root()
                .join(format!("chat_history/{user}/sessions/s9.json.tmp"))
                .exists()
        );
        assert!(
            t.root()
                .join(format!("chat_history/{user}/profile/p.json"))
                .exists()
        );
    }
    let rec = receipts(&t);
    assert_eq!(rec.len(), old.len());
    for line in &rec {
        let file = line["file"].as_str().expect("file");
        let (user, name) = old
            .keys()
            .find(|(u, n)| file.ends_with(&format!("{u}/sessions/{n}.json")))
            .expect("receipt names an archived session");
        assert_eq!(
            line["sha256"].as_str().expect("sha"),
            tmpa_core::maintenance::sha256_hex(&old[&(*user, name.clone())])
        );
        assert_eq!(line["line"], "delete");
        assert_eq!(line["verified_by"], "archive_read_back");
        assert!(line["stamp"]["ino"].as_u64().is_some(), "{line}");
    }
    let record: Value = serde_json::from_slice(
        &fs::read(t.root().join(".tmpa/runs/archive_history.json")).expect("run record"),
    )
    .expect("json");
    assert_eq!(record["task"], "archive_history");
    assert_eq!(record["counts"]["deleted"], 6);
    assert_eq!(record["counts"]["young"], 2);
    let before = t.snapshot();
    let r2 = t.run("tmpa-archive", &[]);
    assert_eq!(r2.code, 0, "{r2:?}");
    assert_eq!(t.snapshot(), before, "a second run must change nothing");
}

/// The library reads a session back whether it is live, archived by tmpa-archive, or
/// archived by a plain `gzip`; and lists each once.
#[test]
fn library_reads_live_and_archived_sessions() {
    let t = Tree::new();
    let a = body("u", "by-tool", 3);
    session(&t, "u", "by-tool", &a, MONTH);
    let live = body("u", "live", 2);
    session(&t, "u", "live", &live, Duration::from_secs(60));
    let plain = body("u", "by-gzip", 4);
    let p = t.file("chat_history/u/archive/by-gzip.json", &plain);
    assert!(
        Command::new("gzip")
            .arg(&p)
            .status()
            .expect("gzip")
            .success()
    );
    assert_eq!(t.run("tmpa-archive", &[]).code, 0);
    let root = Root::open(t.root()).expect("root");
    let u = UserId::new("u").expect("user");
    let read = |s: &str| {
        root.read_session(&u, &SessionId::new(s).expect("id"))
            .expect("read")
    };
    assert_eq!(read("by-tool"), a);
    assert_eq!(read("by-gzip"), plain);
    assert_eq!(read("live"), live);
    let listed: Vec<String> = root
        .list_sessions(&u)
        .expect("list")
        .into_iter()
        .map(|(id, _)| id.to_string())
        .collect();
    assert_eq!(listed, vec!["by-gzip", "by-tool", "live"]);
}

/// An interrupted run left an archive with the same bytes: the next run just deletes the
/// source. An archive of other bytes of this session (an earlier version) makes the live
/// file the next version, beside it. An archive that is not gzip, or of another session,
/// is a conflict: the live file kept, exit 1, the archive never overwritten, and a remedy
/// that keeps the live file.
#[test]
fn existing_archives_complete_add_a_version_or_conflict() {
    let t = Tree::new();
    let same = body("u", "same", 3);
    session(&t, "u", "same", &same, MONTH);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&same).expect("gz");
    t.file(
        "chat_history/u/archive/same.json.gz",
        gz.finish().expect("gz"),
    );

    let differs = body("u", "differs", 3);
    session(&t, "u", "differs", &differs, MONTH);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(b"{\"other\":1}").expect("gz");
    let other_gz = gz.finish().expect("gz");
    t.file("chat_history/u/archive/differs.json.gz", &other_gz);

    session(&t, "u", "notgz", b"{}", MONTH);
    t.file("chat_history/u/archive/notgz.json.gz", b"plain text");

    session(&t, "u", "foreign", b"{\"mine\":1}", MONTH);
    let mut gz = flate2::GzBuilder::new()
        .filename("someone-else.json")
        .write(Vec::new(), flate2::Compression::fast());
    gz.write_all(b"{\"theirs\":1}").expect("gz");
    let foreign_gz = gz.finish().expect("gz");
    t.file("chat_history/u/archive/foreign.json.gz", &foreign_gz);

    let r = t.run("tmpa-archive", &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(!t.root().join("chat_history/u/sessions/same.json").exists());
    assert_eq!(gunzip(&archive_path(&t, "u", "same")), same);
    assert!(r.stdout.contains("completed"), "{}", r.stdout);
    assert!(
        !t.root()
            .join("chat_history/u/sessions/differs.json")
            .exists()
    );
    assert_eq!(
        fs::read(archive_path(&t, "u", "differs")).expect("archive"),
        other_gz,
        "the earlier version is never rewritten"
    );
    assert_eq!(gunzip(&version_path(&t, "u", "differs", 2)), differs);
    let root = Root::open(t.root()).expect("root");
    let u = UserId::new("u").expect("user");
    let differs_id = SessionId::new("differs").expect("id");
    assert_eq!(root.read_session(&u, &differs_id).expect("read"), differs);
    for name in ["notgz", "foreign"] {
        assert!(
            t.root()
                .join(format!("chat_history/u/sessions/{name}.json"))
                .exists(),
            "{name} deleted despite a conflict"
        );
        let line = r
            .stdout
            .lines()
            .find(|l| l.starts_with("conflict") && l.contains(&format!("{name}.json")))
            .unwrap_or_else(|| panic!("{name} conflict not reported:\n{}", r.stdout));
        assert!(
            line.contains("the live session is kept") && !line.contains("remove the wrong one"),
            "{line}"
        );
    }
    assert_eq!(
        fs::read(archive_path(&t, "u", "notgz")).expect("archive"),
        b"plain text"
    );
    assert_eq!(
        fs::read(archive_path(&t, "u", "foreign")).expect("archive"),
        foreign_gz
    );
    assert!(r.stdout.contains("someone-else.json"), "{}", r.stdout);
    // Moving the unreadable archive aside, as the report says, clears the conflict: the
    // next run archives the live session, exit 0.
    fs::rename(
        archive_path(&t, "u", "notgz"),
        t.root().with_file_name("notgz.json.gz.checked"),
    )
    .expect("mv");
    fs::rename(
        archive_path(&t, "u", "foreign"),
        t.root().with_file_name("foreign.json.gz.checked"),
    )
    .expect("mv");
    let r = t.run("tmpa-archive", &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        root.read_session(&u, &SessionId::new("foreign").expect("id"))
            .expect("read"),
        b"{\"mine\":1}"
    );
}

/// A chat resumed after its archival, three times over: every run after a resume exits
/// 0 and archives the session again, into a new version beside the old ones (none ever
/// rewritten); the library reads the live file while there is one and the newest version
/// after, lists the session once, and every version stays readable by `gzip -dc`.
#[test]
fn a_chat_resumed_after_archival_three_times_over() {
    let t = Tree::new();
    let root = Root::open(t.root()).expect("root");
    let (u, s) = (
        UserId::new("u").expect("user"),
        SessionId::new("chat").expect("id"),
    );
    let mut versions: Vec<Vec<u8>> = Vec::new();
    for round in 0..4 {
        let b = body("u", "chat", 3 + 2 * round);
        session(&t, "u", "chat", &b, MONTH);
        assert_eq!(root.read_session(&u, &s).expect("live"), b);
        versions.push(b.clone());
        let r = t.run("tmpa-archive", &[]);
        assert_eq!(r.code, 0, "round {round}: {r:?}");
        assert!(
            !t.root().join("chat_history/u/sessions/chat.json").exists(),
            "round {round}"
        );
        assert_eq!(root.read_session(&u, &s).expect("archived"), b);
        assert_eq!(
            root.list_sessions(&u).expect("list"),
            vec![(s.clone(), tmpa_core::SessionLocation::Archived)]
        );
        for (i, v) in versions.iter().enumerate() {
            let n = u32::try_from(i).expect("small") + 1;
            assert_eq!(&gunzip(&version_path(&t, "u", "chat", n)), v, "version {n}");
        }
        let again = t.run("tmpa-archive", &[]);
        assert_eq!(again.code, 0, "{again:?}");
        assert!(
            !again.stdout.lines().any(|l| l.starts_with("archived")),
            "{}",
            again.stdout
        );
    }
    let versions_dir = t.root().join("chat_history/u/archive/versions");
    let mut dirs: Vec<String> = fs::read_dir(&versions_dir)
        .expect("versions/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    assert_eq!(dirs, ["2", "3", "4"]);
}

/// A session that is not valid JSON is still archived byte for byte (archival preserves
/// bytes), and reported with its path (exit 1).
#[test]
fn invalid_json_is_archived_and_reported() {
    let t = Tree::new();
    let junk = b"{\"messages\": [1, 2, oops".to_vec();
    session(&t, "u", "junk", &junk, MONTH);
    let bomb = "[".repeat(100_000);
    session(&t, "u", "bomb", bomb.as_bytes(), MONTH);
    let r = t.run("tmpa-archive", &["--json"]);
    assert_eq!(r.code, 1, "{r:?}");
    let j = r.json();
    assert_eq!(j["counts"]["invalid_json"], 2);
    assert_eq!(j["counts"]["deleted"], 2);
    assert_eq!(gunzip(&archive_path(&t, "u", "junk")), junk);
    assert_eq!(gunzip(&archive_path(&t, "u", "bomb")), bomb.as_bytes());
    let text = t.run("tmpa-archive", &["--dry-run"]);
    assert_eq!(text.code, 0, "already archived: nothing left to report");
}

/// A dry run leaves the tree byte-identical, prints what a real run would do, and two dry
/// runs print the same text apart from times.
#[test]
fn dry_run_changes_nothing_and_is_stable() {
    let t = Tree::new();
    for i in 0..5 {
        session(&t, "u", &format!("s{i}"), &body("u", "s", i), MONTH);
    }
    session(&t, "v", "young", b"{}", Duration::from_secs(10));
    let before = t.snapshot();
    let a = t.run("tmpa-archive", &["--dry-run"]);
    let b = t.run("tmpa-archive", &["--dry-run"]);
    assert_eq!(a.code, 0, "{a:?}");
    assert_eq!(t.snapshot(), before);
    assert!(!t.root().join("chat_history/u/archive").exists());
    tmpa_tests::assert_same_dry_runs(t.root(), &a, &b);
    assert_eq!(
        a.stdout
            .lines()
            .filter(|l| l.starts_with("would archive"))
            .count(),
        5,
        "{}",
        a.stdout
    );
    assert!(a.stdout.contains("would_delete=5"), "{}", a.stdout);
    let j = t.run("tmpa-archive", &["--dry-run", "--json"]).json();
    assert_eq!(j["dry_run"], true);
    assert_eq!(j["sessions"].as_array().expect("sessions").len(), 5);
    let record: Value = serde_json::from_slice(
        &fs::read(t.root().join(".tmpa/runs/archive_history.json")).expect("record"),
    )
    .expect("json");
    assert_eq!(record["dry_run"], true);
}

/// --older-than accepts 12h, 30d, 2w; bad flags and a non-root are usage errors (exit 2)
/// that write nothing.
#[test]
fn flags_and_usage_errors() {
    let t = Tree::new();
    session(&t, "u", "day-old", b"{}", Duration::from_secs(86_400));
    assert_eq!(t.run("tmpa-archive", &["--older-than", "2w"]).code, 0);
    assert!(
        t.root()
            .join("chat_history/u/sessions/day-old.json")
            .exists()
    );
    assert_eq!(t.run("tmpa-archive", &["--older-than", "12h"]).code, 0);
    assert!(
        !t.root()
            .join("chat_history/u/sessions/day-old.json")
            .exists()
    );
    for bad in [
        &["--older-than", "30"][..],
        &["--older-than", "-1d"],
        &["--level", "10"],
        &["--dry-run", "--no-delete"],
    ] {
        let r = t.run("tmpa-archive", bad);
        assert_eq!(r.code, 2, "{bad:?}: {r:?}");
    }
    tmpa_tests::assert_refuses_non_root("tmpa-archive");
}

/// While one archival holds the lock, a second exits 3 and changes nothing.
#[test]
fn second_run_is_refused_while_locked() {
    let t = Tree::new();
    session(&t, "u", "s", b"{}", MONTH);
    let lock_dir = t.root().join(".tmpa/locks");
    fs::create_dir_all(&lock_dir).expect("mkdir");
    let lock = fs::File::create(lock_dir.join("archive_history.lock")).expect("lock file");
    lock.lock().expect("flock");
    let before = t.snapshot();
    let r = t.run("tmpa-archive", &[]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("lock"), "{}", r.stderr);
    assert_eq!(t.snapshot(), before);
}

/// --no-delete writes and verifies archives but deletes nothing; the next real run
/// completes them.
#[test]
fn no_delete_then_real_run_completes() {
    let t = Tree::new();
    let b = body("u", "s", 4);
    session(&t, "u", "s", &b, MONTH);
    assert_eq!(t.run("tmpa-archive", &["--no-delete"]).code, 0);
    assert!(t.root().join("chat_history/u/sessions/s.json").exists());
    assert_eq!(gunzip(&archive_path(&t, "u", "s")), b);
    let r = t.run("tmpa-archive", &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("completed"), "{}", r.stdout);
    assert!(!t.root().join("chat_history/u/sessions/s.json").exists());
}

/// Symlinked sessions, a symlinked sessions/ or archive/ directory and a symlinked user
/// directory pointing outside the root are reported and never followed: nothing outside
/// the root changes; the other users are archived.
#[test]
fn symlinks_out_of_the_root_are_not_followed() {
    let t = Tree::new();
    let outside = tempfile::tempdir().expect("tempdir");
    fs::create_dir_all(outside.path().join("sessions")).expect("mkdir");
    let secret = outside.path().join("sessions/secret.json");
    fs::write(&secret, b"{\"secret\":1}").expect("write");
    age(&secret, MONTH);
    let decoy_before = tmpa_tests::snapshot(outside.path(), &[]);

    session(&t, "ok", "s", b"{}", MONTH);
    // A symlink named like a session.
    fs::create_dir_all(t.root().join("chat_history/a/sessions")).expect("mkdir");
    std::os::unix::fs::symlink(&secret, t.root().join("chat_history/a/sessions/link.json"))
        .expect("symlink");
    // sessions/ itself a symlink.
    fs::create_dir_all(t.root().join("chat_history/b")).expect("mkdir");
    std::os::unix::fs::symlink(
        outside.path().join("sessions"),
        t.root().join("chat_history/b/sessions"),
    )
    .expect("symlink");
    // archive/ a symlink to the outside.
    session(&t, "c", "s", b"{}", MONTH);
    std::os::unix::fs::symlink(outside.path(), t.root().join("chat_history/c/archive"))
        .expect("symlink");
    // The user directory a symlink.
    std::os::unix::fs::symlink(outside.path(), t.root().join("chat_history/d")).expect("symlink");

    let r = t.run("tmpa-archive", &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(tmpa_tests::snapshot(outside.path(), &[]), decoy_before);
    assert!(!t.root().join("chat_history/ok/sessions/s.json").exists());
    assert!(t.root().join("chat_history/c/sessions/s.json").exists());
    for p in [
        "chat_history/a/sessions/link.json",
        "chat_history/b/sessions",
        "chat_history/c/archive",
        "chat_history/d",
    ] {
        assert!(r.stdout.contains(p), "{p} not reported:\n{}", r.stdout);
    }
}

/// Odd names: spaces and unicode are archived; a newline is shown escaped on one line; a
/// non-UTF-8 name is reported and left alone; the --json report stays valid.
#[test]
fn odd_names() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let t = Tree::new();
    session(&t, "u", "with space", b"{}", MONTH);
    session(&t, "u", "émoji-☃", b"{}", MONTH);
    let dir = t.root().join("chat_history/u/sessions");
    let bad = dir.join(OsStr::from_bytes(b"bad\xff.json"));
    fs::write(&bad, b"{}").expect("write");
    age(&bad, MONTH);
    let nl = dir.join("new\nline.json");
    fs::write(&nl, b"{}").expect("write");
    age(&nl, MONTH);
    let r = t.run("tmpa-archive", &["--json"]);
    assert_eq!(r.code, 1, "{r:?}");
    let j = r.json();
    assert!(bad.exists(), "non-UTF-8 name must be left alone");
    assert!(!dir.join("with space.json").exists());
    assert!(!dir.join("émoji-☃.json").exists());
    let problems = j["problems"].to_string();
    assert!(problems.contains("bad\\\\xFF"), "{problems}");
    let text = t.run("tmpa-archive", &[]);
    for line in text.stdout.lines() {
        assert!(
            !line.starts_with("line.json"),
            "a name split a line: {line:?}"
        );
    }
}

/// A session rewritten (by atomic rename) in a loop while archival runs is never lost:
/// afterwards the live file, or else the archive, holds the last content written.
#[test]
fn session_rewritten_during_archival_is_never_lost() {
    let t = Tree::new();
    let p = session(&t, "u", "hot", &vec![b' '; 1 << 20], MONTH);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (p, stop) = (p.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let mut b = format!("{{\"v\":{n}}}").into_bytes();
                b.resize(1 << 20, b' ');
                tmpa_core::write(&p, &b).expect("rewrite");
                age(&p, MONTH);
            }
            n
        })
    };
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut runs = 0;
    while Instant::now() < deadline {
        let r = t.run("tmpa-archive", &[]);
        assert!(r.code == 0 || r.code == 1, "{r:?}");
        runs += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let last = writer.join().expect("writer");
    let mut want = format!("{{\"v\":{last}}}").into_bytes();
    want.resize(1 << 20, b' ');
    let got = match fs::read(&p) {
        Ok(b) => b,
        Err(_) => gunzip(&archive_path(&t, "u", "hot")),
    };
    assert!(runs > 1);
    assert_eq!(got.len(), want.len());
    assert!(
        got == want,
        "the last version written was lost ({runs} runs)"
    );
}

/// A full disk while archiving: nothing is lost, the run exits 4 naming the problem, and
/// the next run after space returns completes.
#[test]
fn full_disk_mid_run_loses_nothing() {
    let Some(fsys) =
        tmpa_tests::prerequisite(Tmpfs::mount("2m", 1000), "needs root to mount a tmpfs")
    else {
        return;
    };
    let root = fsys.path().join("root");
    for d in ["chat_history", "token_stats"] {
        fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    // Incompressible sessions: each archive needs about as much space as its session.
    let mut seed = 0x1234_5678_u64;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                b'a' + (seed % 26) as u8
            })
            .collect()
    };
    let mut sessions = BTreeMap::new();
    for i in 0..6 {
        let p = root.join(format!("chat_history/u/sessions/s{i}.json"));
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        let mut b = b"\"".to_vec();
        b.extend(noise(150_000));
        b.push(b'"');
        fs::write(&p, &b).expect("write");
        age(&p, MONTH);
        sessions.insert(i, b);
    }
    fs::create_dir_all(root.join("chat_history/u/archive")).expect("mkdir");
    // Fill the rest of the disk but ~60 KiB: no archive fits.
    let filler = fsys.path().join("filler");
    let free = rustix::fs::statvfs(fsys.path()).expect("statvfs");
    let avail = free.f_bavail * free.f_frsize;
    fs::write(&filler, vec![0u8; (avail.saturating_sub(60_000)) as usize]).expect("fill");
    let r = bin("tmpa-archive")
        .arg("--root")
        .arg(&root)
        .output()
        .expect("run");
    assert_eq!(r.status.code(), Some(4), "{r:?}");
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(stdout.contains("No space left"), "{stdout}");
    for (i, b) in &sessions {
        let p = root.join(format!("chat_history/u/sessions/s{i}.json"));
        assert_eq!(&fs::read(&p).expect("session kept"), b);
    }
    fs::remove_file(&filler).expect("free space");
    let r = bin("tmpa-archive")
        .arg("--root")
        .arg(&root)
        .output()
        .expect("run");
    assert_eq!(r.status.code(), Some(0), "{r:?}");
    let root = Root::open(&root).expect("root");
    let u = UserId::new("u").expect("user");
    for (i, b) in &sessions {
        let id = SessionId::new(format!("s{i}")).expect("id");
        assert_eq!(&root.read_session(&u, &id).expect("archived"), b);
        assert!(
            root.list_sessions(&u)
                .expect("list")
                .contains(&(id.clone(), tmpa_core::SessionLocation::Archived))
        );
    }
}

/// An immutable archive directory (`chattr +i`): that user's sessions are kept and
/// reported (exit 4); the other users are archived.
#[test]
fn immutable_archive_dir_fails_one_user_only() {
    let t = Tree::new();
    session(&t, "locked", "s", b"{\"a\":1}", MONTH);
    session(&t, "open", "s", b"{\"b\":1}", MONTH);
    let dir = t.root().join("chat_history/locked/archive");
    fs::create_dir_all(&dir).expect("mkdir");
    let Some(_guard) = tmpa_tests::prerequisite(
        Immutable::set(&dir),
        "chattr +i not available (needs root and a supporting fs)",
    ) else {
        return;
    };
    let r = t.run("tmpa-archive", &[]);
    assert_eq!(r.code, 4, "{r:?}");
    assert!(r.stdout.contains("chat_history/locked"), "{}", r.stdout);
    assert_eq!(
        fs::read(t.root().join("chat_history/locked/sessions/s.json")).expect("kept"),
        b"{\"a\":1}"
    );
    assert!(!t.root().join("chat_history/open/sessions/s.json").exists());
    assert!(archive_path(&t, "open", "s").exists());
}

/// SIGKILL at random moments over thousands of sessions, then a clean run: every session
/// exists exactly once (archived), with identical bytes; every deletion has a receipt.
#[test]
fn killed_again_and_again_loses_nothing() {
    let t = Tree::new();
    let mut want = BTreeMap::new();
    for i in 0..2000 {
        let user = format!("u{}", i % 7);
        let name = format!("s{i:05}");
        let b = body(&user, &name, 1 + i % 9);
        session(&t, &user, &name, &b, MONTH);
        want.insert((user, name), b);
    }
    let mut rng = 0x9e37_79b9_u64;
    let mut kills = 0;
    for _ in 0..25 {
        rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let delay = Duration::from_millis(5 + (rng >> 33) % 60);
        let mut child = bin("tmpa-archive")
            .arg("--root")
            .arg(t.root())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(delay);
        if child.try_wait().expect("wait").is_none() {
            kills += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        // After every kill: each session is still somewhere, whole.
        let root = Root::open(t.root()).expect("root");
        for ((user, name), b) in want.iter().step_by(97) {
            let got = root
                .read_session(
                    &UserId::new(user.as_str()).expect("u"),
                    &SessionId::new(name.as_str()).expect("s"),
                )
                .expect("session readable after a kill");
            assert_eq!(&got, b);
        }
    }
    let r = t.run("tmpa-archive", &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let root = Root::open(t.root()).expect("root");
    for ((user, name), b) in &want {
        let (u, s) = (
            UserId::new(user.as_str()).expect("u"),
            SessionId::new(name.as_str()).expect("s"),
        );
        assert!(
            root.list_sessions(&u)
                .expect("list")
                .contains(&(s.clone(), tmpa_core::SessionLocation::Archived)),
            "{user}/{name} still live"
        );
        assert_eq!(&root.read_session(&u, &s).expect("archived"), b);
    }
    let deleted: std::collections::BTreeSet<String> = receipts(&t)
        .iter()
        .map(|l| l["file"].as_str().expect("file").to_owned())
        .collect();
    assert_eq!(deleted.len(), want.len(), "every deletion has a receipt");
    assert!(
        kills > 0,
        "no run was killed mid-way: the test proves nothing"
    );
    eprintln!("{kills} runs killed mid-way");
}

/// The run's output names the program, mode and root on its first line and the totals and
/// exit status on its last; times and the root aside, it is stable.
#[test]
fn log_lines() {
    let t = Tree::new();
    session(&t, "u", "s", b"{}", MONTH);
    let r = t.run("tmpa-archive", &[]);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(
        lines[0].contains("tmpa-archive ARCHIVE root="),
        "{}",
        r.stdout
    );
    let last = lines.last().expect("last line");
    assert!(
        last.contains("finished:") && last.contains("exit=0"),
        "{last}"
    );
    let n = normalize(&r.stdout, &fs::canonicalize(t.root()).expect("canon"));
    assert!(
        n.contains("archived <ROOT>/chat_history/u/sessions/s.json"),
        "{n}"
    );
}

/// Run as root on a tree owned by the backend's user, the archive directory and the
/// archives it creates belong to that user (the backend must still manage them).
#[test]
fn created_archives_belong_to_the_tree_owner() {
    use std::os::unix::fs::MetadataExt;
    let Some(()) = tmpa_tests::prerequisite(tmpa_tests::is_root(), "needs root") else {
        return;
    };
    let t = Tree::new();
    session(&t, "u", "s", b"{}", MONTH);
    let (uid, gid) = (4242u32, 4343u32);
    for p in ["chat_history", "chat_history/u", "chat_history/u/sessions"] {
        std::os::unix::fs::chown(t.root().join(p), Some(uid), Some(gid)).expect("chown");
    }
    assert_eq!(t.run("tmpa-archive", &[]).code, 0);
    for p in [
        t.root().join("chat_history/u/archive"),
        archive_path(&t, "u", "s"),
    ] {
        let m = fs::metadata(&p).expect("meta");
        assert_eq!((m.uid(), m.gid()), (uid, gid), "{}", p.display());
    }
}

/// A session with a temporary of its name beside it (a write of it going on, or one that
/// died) is not archived: deleting it would leave the temporary an orphan that a person
/// might rename in front of the archive. It is counted (`beside_temporary`), the run
/// exits 0, and once the temporary is gone the next run archives it.
#[test]
fn a_session_with_a_temporary_beside_it_stays_live() {
    let t = Tree::new();
    let b = body("alice", "s0", 5);
    session(&t, "alice", "s0", &b, MONTH);
    session(&t, "alice", "s1", &body("alice", "s1", 6), MONTH);
    let tmp = t.file("chat_history/alice/sessions/s0.json.tmp.4242", b"{\"torn");
    age(&tmp, MONTH);
    let r = t.run("tmpa-archive", &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let live = t.root().join("chat_history/alice/sessions/s0.json");
    assert!(live.exists(), "kept live beside its temporary");
    assert!(
        !t.root()
            .join("chat_history/alice/sessions/s1.json")
            .exists()
    );
    assert!(r.stdout.contains("beside_temporary=1"), "{}", r.stdout);
    fs::remove_file(&tmp).expect("rm");
    let r = t.run("tmpa-archive", &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!live.exists(), "archived once the temporary is gone");
    assert_eq!(&gunzip(&archive_path(&t, "alice", "s0")), &b);
}
