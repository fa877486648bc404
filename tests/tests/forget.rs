//! Forgetting a user (issue 40) beside the real programs and the object store: data that
//! tmpa-archive put in a `file://` store and in a real S3-compatible server (moto, started
//! by this test process: a missing moto fails these tests) is removed from it, a batch
//! holding other notifications rewritten there; a forget killed at every deletion, rename
//! and fsync (`strace -e inject=…:signal=SIGKILL:when=N`) is finished by running it again;
//! and a tmpa-archive or tmpa-compact run started while a forget works is refused by the
//! lock it holds, so it cannot write back what is being forgotten.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use tmpa_core::maintenance::{ArchivedNotification, read_archive};
use tmpa_core::{Day, NotificationId, Root, SessionId, SessionLocation, UserId};
use tmpa_tests::s3::S3Server;
use tmpa_tests::{Tree, age, bin, strace_inject, strace_works};

const DAY: Duration = Duration::from_secs(86_400);

fn server() -> &'static S3Server {
    static SERVER: OnceLock<S3Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        S3Server::start().expect(
            "moto[server] is a prerequisite of these tests (tests/check.sh installs it into target/py-venv; or set TMPA_TEST_PYTHON)",
        )
    })
}

/// A tree where `u1` and `u2` each have old sessions (`s1` archived twice, so in two
/// versions, and `s2`), four notifications acknowledged 200 days ago (`a`..`d`, one
/// batch per user once archived), an unread one, events on one day, and
/// `tmpa.toml` naming `url` (none when `None`).
fn tree(url: Option<&str>) -> Tree {
    let t = Tree::new();
    for u in ["u1", "u2"] {
        for id in ["a", "b", "c", "d"] {
            let p = t.file(
                format!("notifications/{u}/inbox/ntf_{id}.json"),
                format!(r#"{{"for":"{u}","id":"{id}"}}"#),
            );
            age(&p, DAY * 300);
            let a = t.file(format!("notifications/{u}/ack/ntf_{id}.ack"), "{}");
            age(&a, DAY * 200);
        }
        t.file(format!("notifications/{u}/inbox/ntf_new.json"), "1");
        t.event("2026-11-23", &format!("{u}-e1"), u, 10, 1);
        t.event("2026-11-23", &format!("{u}-e2"), u, 20, 2);
    }
    if let Some(url) = url {
        t.file("tmpa.toml", format!("[archive]\nurl = \"{url}\"\n"));
    }
    t
}

/// Writes (or rewrites) the sessions of both users, aged past `--older-than`.
fn sessions(t: &Tree, version: u32) {
    for u in ["u1", "u2"] {
        let p = t.file(
            format!("chat_history/{u}/sessions/s1.json"),
            format!(r#"{{"user":"{u}","v":{version}}}"#),
        );
        age(&p, DAY * 40);
        if version == 1 {
            let p = t.file(format!("chat_history/{u}/sessions/s2.json"), "{}");
            age(&p, DAY * 40);
        }
    }
}

fn with_env(cmd: &mut std::process::Command, port: Option<u16>) -> &mut std::process::Command {
    if let Some(p) = port {
        S3Server::env(cmd, p);
    }
    cmd
}

/// Archives everything old twice (a session resumed in between), compacts the day, as
/// the jobs would.
fn maintain(t: &Tree, port: Option<u16>) {
    sessions(t, 1);
    for version in [2, 3] {
        let out = with_env(&mut bin("tmpa-archive"), port)
            .arg("--root")
            .arg(t.root())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        sessions(t, version);
    }
    let out = bin("tmpa-compact")
        .arg("--root")
        .arg(t.root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// Runs tmpa-forget; its exit code, report and stderr.
fn forget(t: &Tree, port: Option<u16>, args: &[&str]) -> (i32, Value, String) {
    let out = with_env(&mut bin("tmpa-forget"), port)
        .arg(t.root())
        .args(args)
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (
        out.status.code().unwrap_or(-1),
        report,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn user(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

/// What the library (this process: local archives and `file://` stores) reads of a user: sessions with their bytes, notifications with bytes and ack state, and the
/// day's events.
fn reads(t: &Tree, u: &str) -> String {
    let root = Root::open(t.root()).unwrap();
    let u = user(u);
    let mut out = String::new();
    for (s, loc) in root.list_sessions(&u).unwrap() {
        let b = root.read_session(&u, &s).unwrap();
        out += &format!("session {s} {loc:?} {}\n", String::from_utf8_lossy(&b));
    }
    for n in root.list_notifications(&u).unwrap() {
        let b = root.read_notification(&u, &n.id).unwrap();
        out += &format!(
            "notification {} {:?} {} {}\n",
            n.id,
            n.location,
            n.acked,
            String::from_utf8_lossy(&b)
        );
    }
    let day: Day = "2026-11-23".parse().unwrap();
    for e in root.read_day(day).unwrap().events {
        if e.user_id() == u.as_str() {
            out += &format!("event {}\n", e.id());
        }
    }
    out
}

/// Every file below `dir`, relative.
fn files(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.insert(e.path().strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out
}

/// Nothing of u1 is anywhere in the tree (or the `file://` store `store`), and the day
/// still reads strictly with u2's events.
fn u1_is_gone(t: &Tree, store: Option<&Path>) {
    for f in files(t.root()) {
        assert!(!f.contains("u1"), "left: {f}");
    }
    if let Some(s) = store {
        assert!(!s.join("u1").exists() || files(&s.join("u1")).is_empty());
    }
    let day = t.root().join("token_stats/2026-11-23");
    let compacted = day.join("_compacted.json");
    if compacted.exists() {
        let bytes = fs::read(&compacted).unwrap();
        let events = tmpa_core::maintenance::parse_compacted(
            &bytes,
            &compacted,
            "2026-11-23".parse().unwrap(),
        )
        .unwrap();
        assert!(events.iter().all(|e| e.user_id() == "u2"));
    }
    let root = Root::open(t.root()).unwrap();
    let summary = root
        .summary("2026-11-23".parse().unwrap())
        .unwrap()
        .complete()
        .unwrap();
    assert_eq!(summary.totals.events, 2);
    assert!(!summary.by_user.contains_key("u1"));
}

/// A `file://` store: sessions (three versions of s1) and batches that tmpa-archive put
/// there are removed by `forget_user`; u2's objects and data read back exactly as before.
#[test]
fn forget_user_removes_what_the_archive_put_in_a_file_store() {
    let store = tempfile::tempdir().unwrap();
    let url = format!("file://{}", store.path().display());
    let t = tree(Some(&url));
    maintain(&t, None);
    let u1_objects = files(&store.path().join("u1"));
    assert!(
        u1_objects.contains("versions/2/s1.json.gz") && u1_objects.len() >= 4,
        "{u1_objects:?}"
    );
    let u2_before = reads(&t, "u2");
    let u2_objects = files(&store.path().join("u2"));

    let (code, r, err) = forget(&t, None, &["user", "u1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        r["store_objects"].as_array().unwrap().len(),
        u1_objects.len(),
        "{r}"
    );
    assert_eq!(r["events_erased"], 2, "{r}");
    u1_is_gone(&t, Some(store.path()));
    assert_eq!(reads(&t, "u1"), "");
    assert_eq!(reads(&t, "u2"), u2_before);
    assert_eq!(files(&store.path().join("u2")), u2_objects);
    // Again: nothing left to do.
    let (code, r, err) = forget(&t, None, &["user", "u1"]);
    assert_eq!(code, 0, "{err}");
    assert!(r["store_objects"].as_array().unwrap().is_empty(), "{r}");
}

/// A `file://` store: one notification of a stored batch of four is forgotten: the batch
/// is rewritten in the store without it (the three others read back exactly, acknowledged)
/// and the old object removed; one session's every version goes, the other stays.
#[test]
fn delete_notification_and_session_in_a_file_store() {
    let store = tempfile::tempdir().unwrap();
    let url = format!("file://{}", store.path().display());
    let t = tree(Some(&url));
    maintain(&t, None);
    let root = Root::open(t.root()).unwrap();
    let u = user("u1");
    let before: Vec<_> = root.list_notifications(&u).unwrap();
    let old: Vec<String> = files(&store.path().join("u1"))
        .into_iter()
        .filter(|f| f.starts_with("acked-"))
        .collect();
    assert_eq!(old.len(), 1, "{old:?}");

    let (code, r, err) = forget(&t, None, &["notification", "u1", "b"]);
    assert_eq!(code, 0, "{err}");
    let rw = &r["batches_rewritten"][0];
    assert_eq!(
        (rw["removed"].as_u64(), rw["kept"].as_u64()),
        (Some(1), Some(3)),
        "{r}"
    );
    let now: Vec<String> = files(&store.path().join("u1"))
        .into_iter()
        .filter(|f| f.starts_with("acked-"))
        .collect();
    assert_eq!(now.len(), 1);
    assert_ne!(now, old);
    let mut kept = Vec::new();
    let p = store.path().join("u1").join(&now[0]);
    read_archive(
        fs::File::open(&p).unwrap(),
        &p,
        |_| true,
        |n: ArchivedNotification| {
            kept.push(n.id.to_string());
            true
        },
    )
    .unwrap();
    assert_eq!(kept, ["a", "c", "d"]);
    let b = NotificationId::new("b").unwrap();
    let after = root.list_notifications(&u).unwrap();
    assert_eq!(after.len(), before.len() - 1);
    assert!(after.iter().all(|n| n.id != b));
    for n in &after {
        if n.id.as_str() != "new" {
            assert!(n.acked, "{n:?}");
            assert_eq!(
                root.read_notification(&u, &n.id).unwrap(),
                format!(r#"{{"for":"u1","id":"{}"}}"#, n.id).into_bytes()
            );
        }
    }
    assert!(root.read_notification(&u, &b).is_err());

    let s1 = SessionId::new("s1").unwrap();
    let (code, r, err) = forget(&t, None, &["session", "u1", "s1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["store_objects"].as_array().unwrap().len(), 2, "{r}");
    assert_eq!(r["live_files"].as_array().unwrap().len(), 1, "{r}");
    assert!(root.read_session(&u, &s1).is_err());
    assert_eq!(
        root.list_sessions(&u).unwrap(),
        vec![(SessionId::new("s2").unwrap(), SessionLocation::Stored)]
    );
}

/// A real S3-compatible server (moto): the same, through the S3 client, its conditional
/// DELETE and conditional put; u2's objects keep their bytes.
#[test]
fn forget_in_an_s3_store() {
    let s = server();
    s.create_bucket("forget-s3");
    let t = tree(Some("s3://forget-s3/host-a"));
    maintain(&t, Some(s.port()));
    let keys = |p: &str| s.keys("forget-s3", &format!("host-a/{p}/"));
    let u1 = keys("u1");
    assert!(u1.len() >= 4, "{u1:?}");
    let u2: Vec<(String, Vec<u8>)> = keys("u2")
        .into_iter()
        .map(|k| {
            let b = s.get_object("forget-s3", &k).unwrap();
            (k, b)
        })
        .collect();

    let (code, r, err) = forget(&t, Some(s.port()), &["notification", "u1", "c"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["batches_rewritten"].as_array().unwrap().len(), 1, "{r}");
    let batch: Vec<String> = keys("u1")
        .into_iter()
        .filter(|k| k.contains("/acked-3-"))
        .collect();
    assert_eq!(batch.len(), 1, "{:?}", keys("u1"));

    let (code, r, err) = forget(&t, Some(s.port()), &["user", "u1"]);
    assert_eq!(code, 0, "{err}");
    assert!(!r["store_objects"].as_array().unwrap().is_empty(), "{r}");
    assert!(keys("u1").is_empty(), "{:?}", keys("u1"));
    for (k, b) in &u2 {
        assert_eq!(s.get_object("forget-s3", k).as_ref(), Some(b), "{k}");
    }
    for f in files(t.root()) {
        assert!(!f.contains("u1"), "left: {f}");
    }
    let (code, r, err) = forget(&t, Some(s.port()), &["user", "u1"]);
    assert_eq!(code, 0, "{err}");
    assert!(r["store_objects"].as_array().unwrap().is_empty(), "{r}");
}

/// A forget of u1 killed at its Nth `unlinkat`, `renameat2` or `fsync`, for every N
/// until one run is not killed: running it again finishes it, and leaves exactly what a
/// forget that was never interrupted leaves.
#[test]
fn a_forget_killed_anywhere_is_finished_by_running_it_again() {
    assert!(strace_works(), "strace is a prerequisite of this test");
    let clean = tree(None);
    maintain(&clean, None);
    let (code, _, err) = forget(&clean, None, &["notification", "u1", "a"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = forget(&clean, None, &["user", "u1"]);
    assert_eq!(code, 0, "{err}");
    let want = reads(&clean, "u2");
    let mut kills = 0;
    for syscall in ["unlinkat", "renameat2", "fsync"] {
        for n in 1..=60 {
            let t = tree(None);
            maintain(&t, None);
            // A notification's forget first, so a batch is rewritten under the kills too.
            let out = strace_inject(&format!("{syscall}:signal=SIGKILL:when={n}"), "tmpa-forget")
                .arg(t.root())
                .args(["notification", "u1", "a"])
                .output()
                .unwrap();
            let notification_done = out.status.success();
            if notification_done {
                let out =
                    strace_inject(&format!("{syscall}:signal=SIGKILL:when={n}"), "tmpa-forget")
                        .arg(t.root())
                        .args(["user", "u1"])
                        .output()
                        .unwrap();
                if out.status.success() {
                    break;
                }
            }
            kills += 1;
            if !notification_done {
                let (code, _, err) = forget(&t, None, &["notification", "u1", "a"]);
                assert_eq!(code, 0, "{syscall} {n}: {err}");
                let root = Root::open(t.root()).unwrap();
                assert!(
                    root.read_notification(&user("u1"), &NotificationId::new("a").unwrap())
                        .is_err()
                );
                assert_eq!(
                    root.read_notification(&user("u1"), &NotificationId::new("b").unwrap())
                        .unwrap(),
                    br#"{"for":"u1","id":"b"}"#
                );
            }
            let (code, _, err) = forget(&t, None, &["user", "u1"]);
            assert_eq!(code, 0, "killed at {syscall} {n}, then: {err}");
            u1_is_gone(&t, None);
            assert_eq!(reads(&t, "u2"), want, "killed at {syscall} {n}");
            let (code, r, err) = forget(&t, None, &["user", "u1"]);
            assert_eq!(code, 0, "{err}");
            assert_eq!(r["events_erased"], 0, "{r}");
        }
    }
    assert!(kills > 20, "only {kills} kills: the injection did not bite");
}

/// A tmpa-archive run, and a tmpa-compact run, started while a forget of u1 works (held
/// in its first deletion by strace for 2 s) are refused by the lock the forget holds
/// (exit 3, naming the forget's process), and after the forget nothing of u1 came back.
/// Without the locks, the archive would put u1's sessions into an archive meanwhile.
#[test]
fn maintenance_started_during_a_forget_is_locked_out() {
    assert!(strace_works(), "strace is a prerequisite of this test");
    let t = tree(None);
    sessions(&t, 1);
    let child = strace_inject("unlinkat:delay_enter=2000000:when=1", "tmpa-forget")
        .arg(t.root())
        .args(["user", "u1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the forget holds its locks (its note is written once it has them).
    let note = t.root().join(".tmpa/locks/compact_events.holder");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !fs::read_to_string(&note).is_ok_and(|n| n.contains("tmpa-core")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the forget never took its locks"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let archive = t.run("tmpa-archive", &[]);
    assert_eq!(archive.code, 3, "{}", archive.stderr);
    let said = format!("{}{}", archive.stdout, archive.stderr);
    assert!(said.contains("tmpa-core"), "{said}");
    let compact = t.run("tmpa-compact", &[]);
    assert_eq!(compact.code, 3, "{}", compact.stderr);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    // Now the programs run, and find nothing of u1 to write back.
    assert_eq!(t.run("tmpa-archive", &[]).code, 0);
    assert_eq!(t.run("tmpa-compact", &[]).code, 0);
    for f in files(t.root()) {
        assert!(!f.contains("u1"), "came back: {f}");
    }
}

/// Where `flock` wants a descriptor open for writing (NFS emulates it with byte-range
/// locks: `EBADF` on a read-only one, injected here at each lock's first try), the
/// library takes the maintenance locks on the same file opened for writing, as the
/// programs do, and the forget goes on; a lock file of another user is then refused,
/// naming it, before anything is removed.
#[test]
fn a_forget_locks_for_writing_where_flock_wants_a_writer() {
    assert!(strace_works(), "strace is a prerequisite of this test");
    let t = tree(None);
    maintain(&t, None);
    let log = t.root().with_file_name("forget.strace");
    let run = |t: &Tree| {
        Command::new("strace")
            .args(["-f", "-qq", "-o"])
            .arg(&log)
            .args([
                "-e",
                "trace=openat,flock",
                "-e",
                "inject=flock:error=EBADF:when=1+2",
            ])
            .args(tmpa_tests::program_args("tmpa-forget"))
            .arg(t.root())
            .args(["user", "u1"])
            .env_remove("TMPA_ROOT")
            .output()
            .unwrap()
    };
    let out = run(&t);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    u1_is_gone(&t, None);
    let trace = std::fs::read_to_string(&log).unwrap();
    for task in ["archive_history", "compact_events"] {
        assert!(
            trace
                .lines()
                .any(|l| l.contains(&format!("\"{task}.lock\", O_WRONLY"))),
            "{task}.lock was never opened for writing:\n{trace}"
        );
    }
    // Another user's lock file is never opened for writing: refused, nothing removed.
    let Some(()) = tmpa_tests::prerequisite(tmpa_tests::is_root(), "chown needs root") else {
        return;
    };
    let t = tree(None);
    maintain(&t, None);
    let before = reads(&t, "u1");
    let lock = t.root().join(".tmpa/locks/archive_history.lock");
    if !lock.exists() {
        fs::write(&lock, "").unwrap();
    }
    std::os::unix::fs::chown(&lock, Some(4242), Some(4242)).unwrap();
    let out = run(&t);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("archive_history.lock") && err.contains("uid 4242"),
        "{err}"
    );
    assert_eq!(reads(&t, "u1"), before, "something was removed");
}
