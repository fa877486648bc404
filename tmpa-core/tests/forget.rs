//! Forgetting (issue 40): `delete_session`, `delete_notification` and `forget_user` remove
//! the data live and in the local archives (every session version; a notification batch
//! holding others rewritten without it, the others reading back exactly), erase the
//! user's usage events from loose files and compacted days (summaries follow, checksums
//! stay valid), are idempotent, and wait for (or name) a maintenance job holding a lock.
//! The object store, kills and the real programs: tests/tests/forget.rs.

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use tmpa_core::maintenance::{
    ArchivedNotification, Dir, parse_compacted, read_archive, write_archive, write_compacted,
};
use tmpa_core::{
    Day, Error, Event, Forget, ForgetOptions, NotificationId, Root, SessionId, SessionLocation,
    UserId,
};

fn root() -> (tempfile::TempDir, Root) {
    let t = tempfile::tempdir().unwrap();
    let root = Root::create(t.path()).unwrap();
    (t, root)
}

fn user(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn put(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

fn event(id: &str, user: &str, ts: &str, prompt: u64) -> Event {
    Event::from_value(serde_json::json!({"id": id, "ts": ts, "user_id": user,
        "model": "m", "prompt_tokens": prompt, "completion_tokens": 1}))
    .unwrap()
}

fn note(id: &str, body: &str) -> ArchivedNotification {
    ArchivedNotification {
        id: NotificationId::new(id).unwrap(),
        body: body.as_bytes().to_vec(),
        mtime_ns: 1_700_000_000_000_000_000,
        ack: br#"{"acked_at":"2026-01-01T00:00:00Z"}"#.to_vec(),
        acked_ns: 1_700_000_100_000_000_000,
    }
}

/// Writes a batch archive of `notes` for `user` as tmpa-archive would; its path.
fn batch(t: &Path, user: &str, notes: &[ArchivedNotification]) -> std::path::PathBuf {
    let name = tmpa_core::maintenance::archive_name(notes);
    let p = t.join(format!("notifications/{user}/archive/{name}"));
    put(&p, &write_archive(Vec::new(), notes, 6).unwrap());
    p
}

fn batches(t: &Path, user: &str) -> Vec<std::path::PathBuf> {
    let dir = t.join(format!("notifications/{user}/archive"));
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<_> = rd.map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

fn archived(p: &Path) -> Vec<ArchivedNotification> {
    let mut out = Vec::new();
    read_archive(
        fs::File::open(p).unwrap(),
        p,
        |_| true,
        |n| {
            out.push(n);
            true
        },
    )
    .unwrap();
    out
}

/// A session live and in three local versions (1, 2, 5) goes everywhere, with its
/// temporaries; another session of the user and another user's same session stay.
#[test]
fn delete_session_removes_the_live_file_and_every_local_version() {
    let (t, root) = root();
    let (u, s, other) = (
        user("u1"),
        SessionId::new("s1").unwrap(),
        SessionId::new("s2").unwrap(),
    );
    root.write_session(&u, &s, b"v4 live").unwrap();
    let a = t.path().join("chat_history/u1/archive");
    put(&a.join("s1.json.gz"), &gz(b"v1"));
    put(&a.join("versions/2/s1.json.gz"), &gz(b"v2"));
    put(&a.join("versions/5/s1.json.gz"), &gz(b"v5"));
    put(&a.join("versions/5/s1.json.gz.tmp.77-1-aa"), b"half");
    put(&a.join("s2.json.gz"), &gz(b"other"));
    put(
        &t.path().join("chat_history/u1/sessions/s1.json.tmp.9-9-9"),
        b"torn",
    );
    root.write_session(&user("u2"), &s, b"u2's").unwrap();

    let r = root.delete_session(&u, &s).unwrap();
    assert_eq!(r.live_files.len(), 2, "{r:?}");
    assert_eq!(r.archive_versions.len(), 4, "{r:?}");
    assert!(r.store_objects.is_empty() && r.events_erased == 0);
    let e = root.read_session(&u, &s).unwrap_err();
    assert_eq!(e.io_kind(), std::io::ErrorKind::NotFound, "{e}");
    assert_eq!(
        root.list_sessions(&u).unwrap(),
        vec![(other.clone(), SessionLocation::Archived)]
    );
    assert_eq!(root.read_session(&u, &other).unwrap(), b"other");
    assert_eq!(root.read_session(&user("u2"), &s).unwrap(), b"u2's");
    for p in [
        "s1.json.gz",
        "versions/2/s1.json.gz",
        "versions/5/s1.json.gz",
    ] {
        assert!(!a.join(p).exists(), "{p}");
    }
    // Idempotent: nothing left, nothing done, no error.
    assert_eq!(root.delete_session(&u, &s).unwrap().total(), 0);
    // A session never written: the same.
    let none = SessionId::new("never").unwrap();
    assert_eq!(root.delete_session(&u, &none).unwrap().total(), 0);
}

/// A notification in a batch with two others of the user: the batch is rewritten
/// without it (the others read back exactly, acks and times included), the live copy
/// of a redelivery and its ack go too; a batch holding only it is deleted whole.
#[test]
fn delete_notification_rewrites_the_batch_and_removes_live_copy_and_ack() {
    let (t, root) = root();
    let u = user("u1");
    let (a, b, c) = (
        note("a", r#"{"n":1}"#),
        note("b", r#"{"n":2}"#),
        note("c", "3"),
    );
    let old = batch(t.path(), "u1", &[a.clone(), b.clone(), c.clone()]);
    let only_b = batch(t.path(), "u1", std::slice::from_ref(&b));
    let u2 = batch(t.path(), "u2", std::slice::from_ref(&b));
    let u2_bytes = fs::read(&u2).unwrap();
    let id = NotificationId::new("b").unwrap();
    root.deliver_json(&u, &id, br#"{"n":2,"again":true}"#)
        .unwrap();
    root.ack(&u, &id).unwrap();

    let r = root.delete_notification(&u, &id).unwrap();
    assert_eq!(r.live_files.len(), 2, "inbox and ack: {r:?}");
    assert_eq!(r.batches_rewritten.len(), 1, "{r:?}");
    assert_eq!(r.batches_deleted, vec![only_b.clone()]);
    let rw = &r.batches_rewritten[0];
    assert_eq!((rw.removed, rw.kept), (1, 2));
    assert_eq!(rw.old, old.display().to_string());
    assert!(!old.exists() && !only_b.exists());
    let now = batches(t.path(), "u1");
    assert_eq!(now.len(), 1, "{now:?}");
    assert_eq!(now[0].display().to_string(), rw.new);
    assert_eq!(archived(&now[0]), vec![a.clone(), c.clone()]);
    let e = root.read_notification(&u, &id).unwrap_err();
    assert_eq!(e.io_kind(), std::io::ErrorKind::NotFound, "{e}");
    assert!(!root.is_acked(&u, &id).unwrap());
    assert_eq!(root.read_notification(&u, &a.id).unwrap(), a.body);
    assert_eq!(root.read_notification(&u, &c.id).unwrap(), c.body);
    assert!(root.is_acked(&u, &c.id).unwrap());
    // Another user's batch holding the same id is not touched.
    assert_eq!(fs::read(&u2).unwrap(), u2_bytes);
    assert!(!t.path().join("notifications/u1/ack/ntf_b.ack").exists());
    // Idempotent.
    assert_eq!(root.delete_notification(&u, &id).unwrap().total(), 0);
    assert_eq!(batches(t.path(), "u1"), now);
}

/// A forget stopped after it wrote the new batch but before it deleted the old one (the
/// state a kill leaves) is finished by the next call, which finds its batch already
/// written, checks it and deletes the old one.
#[test]
fn a_rewrite_stopped_before_the_old_batch_went_is_finished_by_the_next_call() {
    let (t, root) = root();
    let u = user("u1");
    let (a, b) = (note("a", "1"), note("b", "2"));
    let old = batch(t.path(), "u1", &[a.clone(), b.clone()]);
    let new = batch(t.path(), "u1", std::slice::from_ref(&a));
    let r = root
        .delete_notification(&u, &NotificationId::new("b").unwrap())
        .unwrap();
    assert_eq!(r.batches_rewritten.len(), 1, "{r:?}");
    assert_eq!(batches(t.path(), "u1"), vec![new.clone()]);
    assert_eq!(archived(&new), vec![a]);
    assert!(!old.exists());
}

/// A damaged batch is never rewritten (that would lose what its damaged part held) and
/// never deleted: the error names it, and nothing else of it changes.
#[test]
fn a_damaged_batch_is_named_and_kept() {
    let (t, root) = root();
    let u = user("u1");
    let p = batch(t.path(), "u1", &[note("a", "1"), note("b", "2")]);
    let mut bytes = fs::read(&p).unwrap();
    let n = bytes.len();
    bytes[n - 6] ^= 0xff; // the gzip trailer's CRC
    fs::write(&p, &bytes).unwrap();
    let e = root
        .delete_notification(&u, &NotificationId::new("b").unwrap())
        .unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert_eq!(e.path(), Some(p.as_path()));
    assert_eq!(fs::read(&p).unwrap(), bytes);
}

fn day() -> Day {
    "2026-11-23".parse().unwrap()
}

/// Writes a compacted day of `events` (sorted) into the tree.
fn compact(t: &Path, events: &[Event]) {
    let dir = t.join("token_stats/2026-11-23");
    fs::create_dir_all(&dir).unwrap();
    let d = Dir::open_path(&dir).unwrap();
    let mut sorted = events.to_vec();
    sorted.sort_by(Event::cmp_ts_id);
    write_compacted(&d, day(), &sorted).unwrap();
}

/// The user's events are erased from the compacted day (rewritten with valid checksums,
/// the others' events exactly as they were) and the loose files; the summary, cached
/// before, no longer counts or names the user; the user's whole trees go.
#[test]
fn forget_user_erases_events_from_compacted_days_and_loose_files() {
    let (t, root) = root();
    let (u1, u2) = (user("u1"), user("u2"));
    let kept = vec![
        event("k1", "u2", "2026-11-23T09:00:00Z", 100),
        event("k2", "u2", "2026-11-23T11:00:00Z", 7),
    ];
    let gone = [
        event("g1", "u1", "2026-11-23T10:00:00Z", 50),
        event("g2", "u1", "2026-11-23T12:00:00Z", 60),
    ];
    let mut all = kept.clone();
    all.extend(gone.iter().cloned());
    compact(t.path(), &all);
    root.record_event(&event("g3", "u1", "2026-11-23T13:00:00Z", 70))
        .unwrap();
    root.record_event(&event("k3", "u2", "2026-11-23T14:00:00Z", 3))
        .unwrap();
    let before = root.summary(day()).unwrap().complete().unwrap();
    assert_eq!(before.totals.events, 6);
    // The cache a compaction would have left.
    let summary_path = t.path().join("token_stats/2026-11-23/_summary.json");
    tmpa_core::maintenance::write_summary(
        &Dir::open_path(&t.path().join("token_stats/2026-11-23")).unwrap(),
        &before,
    )
    .unwrap();
    root.write_session(&u1, &SessionId::new("s").unwrap(), b"x")
        .unwrap();
    root.write_file("chat_history/u1/profile/p.json", b"{}")
        .unwrap();
    let n = NotificationId::new("1").unwrap();
    root.deliver_json(&u1, &n, b"1").unwrap();
    root.ack(&u1, &n).unwrap();
    batch(t.path(), "u1", &[note("old", "0")]);
    root.deliver_json(&u2, &n, b"2").unwrap();
    let memory = t.path().join(".tmpa/archive/orphan_acks.json");
    put(
        &memory,
        br#"{"format":1,"users":{"u1":{"searched":[],"acks":[]}}}"#,
    );

    let r = root.forget_user(&u1).unwrap();
    assert!(!memory.exists(), "tmpa-archive's memory named u1");
    assert_eq!(r.events_erased, 3, "{r:?}");
    assert_eq!(r.event_files.len(), 1);
    assert_eq!(r.compacted_rewritten.len(), 1);
    assert_eq!(r.summaries_removed, vec![summary_path.clone()]);
    assert_eq!(r.batches_deleted.len(), 1, "{r:?}");
    assert_eq!(
        r.live_files.len(),
        5,
        "session, profile, inbox, ack, memory: {r:?}"
    );
    assert!(!t.path().join("chat_history/u1").exists());
    assert!(!t.path().join("notifications/u1").exists());
    assert_eq!(root.read_notification(&u2, &n).unwrap(), b"2");

    // The compacted day reads strictly (every checksum valid) and holds exactly the
    // other user's events, byte for byte as before.
    let path = t.path().join("token_stats/2026-11-23/_compacted.json");
    let bytes = fs::read(&path).unwrap();
    assert_eq!(parse_compacted(&bytes, &path, day()).unwrap(), kept);
    let read = root.read_day(day()).unwrap();
    assert!(read.problems.is_empty(), "{:?}", read.problems);
    assert!(read.events.iter().all(|e| e.user_id() == "u2"));
    assert_eq!(read.events.len(), 3);
    let after = root.summary(day()).unwrap().complete().unwrap();
    assert_eq!(after.totals.events, 3);
    assert_eq!(after.totals.prompt_tokens, 110);
    assert!(!after.by_user.contains_key("u1"), "{after:?}");
    // A new process (no memory of the day) agrees.
    tmpa_core::maintenance::forget_summary(&root, day()).unwrap();
    let fresh = root.summary(day()).unwrap().complete().unwrap();
    assert_eq!(fresh, after);

    // Idempotent: nothing left.
    let again = root.forget_user(&u1).unwrap();
    assert_eq!(again.total(), 0, "{again:?}");
    assert_eq!(fs::read(&path).unwrap(), bytes, "not rewritten again");
}

/// A compacted day that is damaged cannot be rewritten without losing its damaged
/// lines: the forget fails naming the file and the line, and leaves it as it was.
#[test]
fn a_damaged_compacted_day_is_named_and_left_untouched() {
    let (t, root) = root();
    compact(
        t.path(),
        &[
            event("a", "u1", "2026-11-23T10:00:00Z", 10),
            event("b", "u2", "2026-11-23T11:00:00Z", 20),
        ],
    );
    let path = t.path().join("token_stats/2026-11-23/_compacted.json");
    let text = fs::read_to_string(&path)
        .unwrap()
        .replace("\"prompt_tokens\":20", "\"prompt_tokens\":29");
    fs::write(&path, &text).unwrap();
    let e = root.forget_user(&user("u1")).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("_compacted.json"), "{e}");
    assert_eq!(fs::read_to_string(&path).unwrap(), text);
}

/// A maintenance job holding tmpa-archive's lock: the forget waits for it (bounded), and
/// when it is still held, fails with `Locked` naming the job and changes nothing; once
/// it is released, the forget goes ahead. tmpa-compact's lock stops a forget of a user,
/// not of a session.
#[test]
fn a_held_maintenance_lock_is_waited_for_then_named() {
    let (t, root) = root();
    let (u, s) = (user("u1"), SessionId::new("s").unwrap());
    root.write_session(&u, &s, b"x").unwrap();
    let locks = t.path().join(".tmpa/locks");
    fs::create_dir_all(&locks).unwrap();
    let held = fs::File::create(locks.join("archive_history.lock")).unwrap();
    held.try_lock().unwrap();
    fs::write(
        locks.join("archive_history.holder"),
        "pid 4242 since 2026-11-25T02:30:00+01:00\n",
    )
    .unwrap();
    let quick = ForgetOptions::with_lock_wait(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let e = root.forget(Forget::Session(&u, &s), &quick).unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(300));
    let Error::Locked {
        task, holder, path, ..
    } = &e
    else {
        panic!("{e}")
    };
    assert_eq!(*task, "archive_history");
    assert_eq!(holder, "pid 4242 since 2026-11-25T02:30:00+01:00");
    assert_eq!(path, &locks.join("archive_history.lock"));
    assert_eq!(e.io_kind(), std::io::ErrorKind::WouldBlock);
    assert!(e.to_string().contains("archive_history"), "{e}");
    assert_eq!(root.read_session(&u, &s).unwrap(), b"x", "nothing changed");

    // Released while the forget waits: it goes ahead.
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        drop(held);
    });
    let patient = ForgetOptions::with_lock_wait(Duration::from_secs(10));
    let r = root.forget(Forget::Session(&u, &s), &patient).unwrap();
    release.join().unwrap();
    assert_eq!(r.live_files.len(), 1);
    let note = fs::read_to_string(locks.join("archive_history.holder")).unwrap();
    assert!(
        note.starts_with(&format!("pid {} since ", std::process::id())),
        "{note}"
    );

    // tmpa-compact's lock: a user's forget waits for it, a session's does not.
    let compact = fs::File::create(locks.join("compact_events.lock")).unwrap();
    compact.try_lock().unwrap();
    root.forget(Forget::Session(&u, &s), &quick).unwrap();
    let e = root.forget(Forget::User(&u), &quick).unwrap_err();
    assert!(
        matches!(&e, Error::Locked { task, .. } if *task == "compact_events"),
        "{e}"
    );
    // The archive lock is not kept while the forget waits for the compaction's.
    let archive = fs::File::open(locks.join("archive_history.lock")).unwrap();
    archive.try_lock().unwrap();
}

/// Bad names are refused before anything is looked at, as everywhere else.
#[test]
fn bad_names_are_refused() {
    for bad in ["", ".", "..", "a/b", "a\0b"] {
        assert!(matches!(UserId::new(bad), Err(Error::InvalidName { .. })));
    }
    assert!(SessionId::new("a.json.tmp").is_err());
}

/// A compacted day that held only the user's events is rewritten empty: it still reads
/// strictly, and the day sums to nothing.
#[test]
fn a_day_of_only_the_user_s_events_is_left_empty_and_valid() {
    let (t, root) = root();
    compact(t.path(), &[event("a", "u1", "2026-11-23T10:00:00Z", 10)]);
    let r = root.forget_user(&user("u1")).unwrap();
    assert_eq!(r.events_erased, 1);
    let path = t.path().join("token_stats/2026-11-23/_compacted.json");
    let bytes = fs::read(&path).unwrap();
    assert!(parse_compacted(&bytes, &path, day()).unwrap().is_empty());
    let s = root.summary(day()).unwrap().complete().unwrap();
    assert_eq!(s.totals.events, 0);
    assert!(s.by_user.is_empty());
}
