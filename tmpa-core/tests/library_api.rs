//! The library's strictness, as a backend meets it (issue 40): `ack` of an id never
//! delivered, of an archived one, and twice; `deliver` of an existing id with the same
//! value, another value, concurrently, over a receipt whose notification was archived;
//! a root replaced under a running service and `Root::reopen`; `unacked` and `inbox` from
//! one listing of each directory.

#![allow(
    clippy::disallowed_methods,
    reason = "tests build and break trees by path"
)]

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use tmpa_core::maintenance::{ArchivedNotification, Dir, archive_name, write_archive};
use tmpa_core::{
    Acked, AtomicFile, Error, Event, InboxQuery, NotificationId, Root, SessionId, UserId,
};

fn user() -> UserId {
    UserId::new("u1").unwrap()
}

fn nid(s: &str) -> NotificationId {
    NotificationId::new(s).unwrap()
}

/// Every path under `dir`, with the bytes of each file: what a call must leave alone.
fn tree(dir: &Path) -> BTreeSet<(PathBuf, Vec<u8>)> {
    let mut out = BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p.clone());
                out.insert((p, Vec::new()));
            } else {
                let bytes = fs::read(&p).unwrap();
                out.insert((p, bytes));
            }
        }
    }
    out
}

/// Archives `(id, body)` of `u1` into `notifications/u1/archive/` as tmpa-archive would
/// (both acknowledged), and deletes their inbox files and, unless `keep_acks`, acks.
fn archive_locally(root: &Root, notes: &[(&str, &[u8])], keep_acks: bool) -> PathBuf {
    let batch: Vec<ArchivedNotification> = notes
        .iter()
        .map(|(id, body)| ArchivedNotification {
            id: nid(id),
            body: body.to_vec(),
            mtime_ns: 1_700_000_000_000_000_000,
            ack: br#"{"acked_at":"then"}"#.to_vec(),
            acked_ns: 1_700_000_001_000_000_000,
        })
        .collect();
    let dir = root.path().join("notifications/u1/archive");
    fs::create_dir_all(&dir).unwrap();
    let name = archive_name(&batch);
    let held = Dir::open_path(&dir).unwrap();
    let mut out = AtomicFile::create_in(&held, OsStr::new(&name)).unwrap();
    std::io::Write::write_all(&mut out, &write_archive(Vec::new(), &batch, 6).unwrap()).unwrap();
    out.commit_new().unwrap();
    for (id, _) in notes {
        let _ = fs::remove_file(
            root.path()
                .join(format!("notifications/u1/inbox/ntf_{id}.json")),
        );
        if !keep_acks {
            let _ = fs::remove_file(
                root.path()
                    .join(format!("notifications/u1/ack/ntf_{id}.ack")),
            );
        }
    }
    dir.join(name)
}

/// `ack` of an id never delivered is NotFound naming its inbox path, and creates nothing,
/// not even the user's directory; `is_acked` says false; the next archival has no orphan.
#[test]
fn ack_of_an_id_never_delivered_is_not_found_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::create(dir.path()).unwrap();
    let before = tree(dir.path());
    let e = root.ack(&user(), &nid("7")).unwrap_err();
    assert_eq!(e.io_kind(), ErrorKind::NotFound, "{e}");
    assert_eq!(
        e.path(),
        Some(
            root.path()
                .join("notifications/u1/inbox/ntf_7.json")
                .as_path()
        )
    );
    assert_eq!(tree(dir.path()), before);
    assert!(!root.is_acked(&user(), &nid("7")).unwrap());
    // A user with other notifications: still nothing created for this id.
    root.deliver(&user(), &nid("8"), &serde_json::json!(8))
        .unwrap();
    let before = tree(dir.path());
    assert_eq!(
        root.ack(&user(), &nid("7")).unwrap_err().io_kind(),
        ErrorKind::NotFound
    );
    assert_eq!(tree(dir.path()), before);
}

/// `ack` twice keeps the first receipt; `ack` of a notification archived locally (with
/// or without its receipt left) is a no-op success that writes nothing.
#[test]
fn ack_twice_and_ack_of_an_archived_notification() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::create(dir.path()).unwrap();
    root.deliver(&user(), &nid("1"), &serde_json::json!({"n": 1}))
        .unwrap();
    let Acked::Receipt(receipt) = root.ack(&user(), &nid("1")).unwrap() else {
        panic!("a receipt")
    };
    let first = fs::read(&receipt).unwrap();
    assert_eq!(
        root.ack(&user(), &nid("1")).unwrap(),
        Acked::Receipt(receipt.clone())
    );
    assert_eq!(fs::read(&receipt).unwrap(), first);

    archive_locally(&root, &[("1", br#"{"n":1}"#), ("2", b"2")], false);
    let before = tree(dir.path());
    assert_eq!(root.ack(&user(), &nid("1")).unwrap(), Acked::Archived);
    assert_eq!(root.ack(&user(), &nid("2")).unwrap(), Acked::Archived);
    assert_eq!(tree(dir.path()), before, "an archived ack writes nothing");
    assert!(root.is_acked(&user(), &nid("2")).unwrap());
}

/// `deliver` of an existing id: the same value (compared as JSON, whatever its spelling in
/// the file) is a no-op that leaves the file as it is; another value is a conflict naming
/// the file, which stays with its receipt.
#[test]
fn deliver_is_idempotent_with_the_same_value_and_refuses_another() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::create(dir.path()).unwrap();
    let (u, n) = (user(), nid("42"));
    let path = root
        .deliver(&u, &n, &serde_json::json!({"a": 1, "b": [true, null]}))
        .unwrap();
    assert_eq!(fs::read(&path).unwrap(), br#"{"a":1,"b":[true,null]}"#);
    root.deliver(&u, &n, &serde_json::json!({"b": [true, null], "a": 1}))
        .unwrap();
    // A file the backend's old code wrote, spaces and 1.0 included: the same value.
    fs::write(&path, b"{ \"a\": 1.0, \"b\": [true, null] }\n").unwrap();
    let before = tree(dir.path());
    root.deliver(&u, &n, &serde_json::json!({"a": 1, "b": [true, null]}))
        .unwrap();
    assert_eq!(tree(dir.path()), before);
    root.ack(&u, &n).unwrap();
    let before = tree(dir.path());
    let e = root
        .deliver(&u, &n, &serde_json::json!({"a": 2}))
        .unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    assert_eq!(e.io_kind(), ErrorKind::AlreadyExists);
    assert_eq!(e.path(), Some(path.as_path()));
    assert_eq!(
        tree(dir.path()),
        before,
        "nothing replaced, no temporary left"
    );
    assert!(root.is_acked(&u, &n).unwrap());
}

/// Eight threads deliver one id at once, each with its own value: exactly one writes,
/// the seven others get a conflict, and the file holds the one value that won. With one
/// value, all eight succeed.
#[test]
fn concurrent_deliveries_of_one_id_have_one_winner() {
    for round in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::create(dir.path()).unwrap();
        let n = nid(&format!("r{round}"));
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let (root, n) = (&root, &n);
                    s.spawn(move || root.deliver(&user(), n, &serde_json::json!({"writer": i})))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let won: Vec<usize> = (0..8).filter(|&i| results[i].is_ok()).collect();
        assert_eq!(won.len(), 1, "round {round}: {results:?}");
        for r in results.iter().filter(|r| r.is_err()) {
            assert_eq!(r.as_ref().unwrap_err().io_kind(), ErrorKind::AlreadyExists);
        }
        let body = root.read_notification(&user(), &n).unwrap();
        assert_eq!(body, format!(r#"{{"writer":{}}}"#, won[0]).into_bytes());
        let inbox = dir.path().join("notifications/u1/inbox");
        assert_eq!(
            fs::read_dir(&inbox).unwrap().count(),
            1,
            "no temporary left"
        );

        let same: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let root = &root;
                    s.spawn(move || root.deliver(&user(), &nid("same"), &serde_json::json!("x")))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(same.iter().all(Result::is_ok), "{same:?}");
    }
}

/// A receipt whose notification was archived (the archival stopped between its two
/// deletions): delivering the archived value again is a no-op that makes no new live
/// notification; another value is a conflict naming the archive; a receipt that no
/// archive explains is in the way (AlreadyExists naming it) rather than marking a new
/// notification as read.
#[test]
fn deliver_over_a_receipt_without_its_notification() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::create(dir.path()).unwrap();
    let u = user();
    for id in ["1", "orphan"] {
        root.deliver(&u, &nid(id), &serde_json::json!({"n": id}))
            .unwrap();
        root.ack(&u, &nid(id)).unwrap();
    }
    let archive = archive_locally(&root, &[("1", br#"{"n":"1"}"#)], true);
    fs::remove_file(root.path().join("notifications/u1/inbox/ntf_orphan.json")).unwrap();
    let before = tree(dir.path());
    root.deliver(&u, &nid("1"), &serde_json::json!({"n": "1"}))
        .unwrap();
    let e = root
        .deliver(&u, &nid("1"), &serde_json::json!({"n": "changed"}))
        .unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    assert_eq!(e.path(), Some(archive.as_path()));
    let e = root
        .deliver(&u, &nid("orphan"), &serde_json::json!({"n": "new"}))
        .unwrap_err();
    assert_eq!(e.io_kind(), ErrorKind::AlreadyExists, "{e}");
    assert_eq!(
        e.path(),
        Some(
            root.path()
                .join("notifications/u1/ack/ntf_orphan.ack")
                .as_path()
        )
    );
    assert_eq!(tree(dir.path()), before, "no live notification made");
    assert!(root.unacked(&u).unwrap().is_empty());
}

/// An id archived with its receipt is not looked for (documented): delivered again, it
/// is a new live notification, unread, and reads take it before the archived copy.
#[test]
fn deliver_after_a_whole_archival_is_a_new_notification() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::create(dir.path()).unwrap();
    let u = user();
    archive_locally(&root, &[("1", b"\"old\"")], false);
    root.deliver(&u, &nid("1"), &serde_json::json!("new"))
        .unwrap();
    assert_eq!(root.read_notification(&u, &nid("1")).unwrap(), b"\"new\"");
    assert!(!root.is_acked(&u, &nid("1")).unwrap());
    assert_eq!(root.unacked(&u).unwrap(), vec![nid("1")]);
}

/// `deliver_json` keeps every number's text; a body larger than a reader reads, or not
/// JSON, is refused before anything is written.
#[test]
fn deliver_json_keeps_numbers_and_refuses_what_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::create(dir.path()).unwrap();
    let u = user();
    root.deliver_json(
        &u,
        &nid("big"),
        br#"{"n": 123456789012345678901234567890, "f": 0.10000000000000000001}"#,
    )
    .unwrap();
    assert_eq!(
        root.read_notification(&u, &nid("big")).unwrap(),
        br#"{"f":0.10000000000000000001,"n":123456789012345678901234567890}"#
    );
    let before = tree(dir.path());
    let huge = format!("\"{}\"", "x".repeat(1 << 20));
    for bad in [huge.as_bytes(), b"{", b"{\"a\":1,\"a\":2}", b"1 2"] {
        let e = root.deliver_json(&u, &nid("bad"), bad).unwrap_err();
        assert!(matches!(e, Error::InvalidNotification { .. }), "{e}");
        assert_eq!(e.io_kind(), ErrorKind::InvalidInput);
    }
    assert_eq!(tree(dir.path()), before);
}

/// `unacked`, `list_notifications` and `inbox` agree: regular files named `ntf_{id}.json`
/// only (no directory, temporary or odd name), acks matched by id whatever the sort of
/// their file names ("a-b" after "a" though "ntf_a-b.ack" sorts before "ntf_a.ack").
#[test]
fn listings_match_acks_by_id_and_skip_what_is_not_a_notification() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::create(dir.path()).unwrap();
    let u = user();
    for id in ["a", "a-b", "a.b", "b"] {
        root.deliver(&u, &nid(id), &serde_json::json!(id)).unwrap();
    }
    root.ack(&u, &nid("a-b")).unwrap();
    let inbox = dir.path().join("notifications/u1/inbox");
    fs::create_dir(inbox.join("ntf_dir.json")).unwrap();
    fs::write(inbox.join("ntf_c.json.tmp.1-2-3"), b"{").unwrap();
    fs::write(inbox.join("other.json"), b"{}").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", inbox.join("ntf_link.json")).unwrap();
    let ids = |v: Vec<NotificationId>| v.into_iter().map(String::from).collect::<Vec<_>>();
    assert_eq!(ids(root.unacked(&u).unwrap()), ["a", "a.b", "b"]);
    let listed: Vec<_> = root
        .list_notifications(&u)
        .unwrap()
        .into_iter()
        .map(|n| (n.id.to_string(), n.acked))
        .collect();
    let want = [("a", false), ("a-b", true), ("a.b", false), ("b", false)];
    assert_eq!(listed, want.map(|(i, a)| (i.to_owned(), a)));
    let items = root.inbox(&u, &InboxQuery::default()).unwrap();
    let got: Vec<_> = items
        .iter()
        .map(|i| (i.id.to_string(), i.acked, i.body.clone()))
        .collect();
    let want: Vec<_> = want
        .iter()
        .map(|(i, a)| ((*i).to_owned(), *a, format!("\"{i}\"").into_bytes()))
        .collect();
    assert_eq!(got, want);
}

/// `inbox` pages: after an id, at most `limit`, unacknowledged only; a user without an
/// inbox has none.
#[test]
fn inbox_pages() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::create(dir.path()).unwrap();
    let u = user();
    for i in 0..10 {
        root.deliver(&u, &nid(&format!("{i:02}")), &serde_json::json!(i))
            .unwrap();
    }
    for i in [1, 2, 5] {
        root.ack(&u, &nid(&format!("{i:02}"))).unwrap();
    }
    let mut seen = Vec::new();
    let mut q = InboxQuery {
        unacked_only: true,
        limit: Some(3),
        ..InboxQuery::default()
    };
    loop {
        let page = root.inbox(&u, &q).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3 && page.iter().all(|i| !i.acked));
        q.after = Some(page.last().unwrap().id.clone());
        seen.extend(page.into_iter().map(|i| i.id.to_string()));
    }
    assert_eq!(seen, ["00", "03", "04", "06", "07", "08", "09"]);
    assert!(
        root.inbox(&UserId::new("nobody").unwrap(), &InboxQuery::default())
            .unwrap()
            .is_empty()
    );
}

/// The root removed and restored under a running service: every call fails with
/// RootReplaced (never NotFound, never an empty answer), writes nothing into either
/// tree; after `reopen`, every call works on the restored tree.
#[test]
fn a_replaced_root_says_so_until_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app");
    let root = Root::create(&path).unwrap();
    let (u, n, s) = (user(), nid("1"), SessionId::new("s1").unwrap());
    let e = Event::from_json(
        br#"{"id":"a1","ts":"2026-11-23T10:00:00Z","user_id":"u1","model":"m","prompt_tokens":3,"completion_tokens":4}"#,
    )
    .unwrap();
    root.record_event(&e).unwrap();
    root.deliver(&u, &n, &serde_json::json!(1)).unwrap();
    root.write_session(&u, &s, b"{}").unwrap();
    // The restore: a copy of the tree in its place, the old one removed.
    let old = dir.path().join("app.old");
    fs::rename(&path, &old).unwrap();
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(&old)
        .arg(&path)
        .status()
        .unwrap();
    assert!(cp.success());
    fs::remove_dir_all(&old).unwrap();
    let before = tree(&path);
    let day = e.day();
    let calls: Vec<(&str, tmpa_core::Result<()>)> = vec![
        ("unacked", root.unacked(&u).map(drop)),
        ("inbox", root.inbox(&u, &InboxQuery::default()).map(drop)),
        ("list_notifications", root.list_notifications(&u).map(drop)),
        ("is_acked", root.is_acked(&u, &n).map(drop)),
        (
            "read_notification",
            root.read_notification(&u, &n).map(drop),
        ),
        ("ack", root.ack(&u, &n).map(drop)),
        (
            "deliver",
            root.deliver(&u, &nid("2"), &serde_json::json!(2)).map(drop),
        ),
        ("read_day", root.read_day(day).map(drop)),
        ("summary", root.summary(day).map(drop)),
        ("record_event", root.record_event(&e).map(drop)),
        ("read_session", root.read_session(&u, &s).map(drop)),
        ("list_sessions", root.list_sessions(&u).map(drop)),
        ("write_session", root.write_session(&u, &s, b"{}").map(drop)),
        (
            "write_file",
            root.write_file("chat_history/u1/profile/p.json", b"{}")
                .map(drop),
        ),
    ];
    for (what, r) in calls {
        let e = r.expect_err(what);
        assert!(matches!(e, Error::RootReplaced { .. }), "{what}: {e}");
        assert_eq!(e.io_kind(), ErrorKind::StaleNetworkFileHandle, "{what}");
        assert_eq!(e.path(), Some(root.path()), "{what}");
        assert!(e.to_string().contains("replaced"), "{what}: {e}");
    }
    assert_eq!(
        tree(&path),
        before,
        "nothing written into the restored tree"
    );
    let root = root.reopen().unwrap();
    assert_eq!(root.unacked(&u).unwrap(), vec![n.clone()]);
    assert_eq!(root.read_day(day).unwrap().events, vec![e]);
    assert_eq!(root.read_session(&u, &s).unwrap(), b"{}");
    root.ack(&u, &n).unwrap();
}

/// The root removed and not restored: RootReplaced too. A root that is still there
/// answers "none" for a user it has never seen, as before.
#[test]
fn a_removed_root_says_so_and_a_present_one_answers_none() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app");
    let root = Root::create(&path).unwrap();
    let nobody = UserId::new("nobody").unwrap();
    assert!(root.unacked(&nobody).unwrap().is_empty());
    assert!(root.list_sessions(&nobody).unwrap().is_empty());
    assert!(
        root.read_day("2026-01-01".parse().unwrap())
            .unwrap()
            .events
            .is_empty()
    );
    fs::remove_dir_all(&path).unwrap();
    let e = root.unacked(&nobody).unwrap_err();
    assert!(matches!(e, Error::RootReplaced { .. }), "{e}");
    assert!(root.reopen().is_err());
}

/// `Root::create` makes the three data directories in a new or existing directory,
/// idempotently, and refuses a data directory that is a symlink.
#[test]
fn create_is_idempotent_and_never_follows_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app");
    Root::create(&path).unwrap();
    fs::write(path.join("notifications/keep"), b"x").unwrap();
    let before = tree(&path);
    Root::create(&path).unwrap();
    assert_eq!(tree(&path), before);
    let other = dir.path().join("other");
    fs::create_dir(&other).unwrap();
    std::os::unix::fs::symlink(dir.path(), other.join("token_stats")).unwrap();
    let e = Root::create(&other).unwrap_err();
    assert!(matches!(e, Error::Unsafe { .. }), "{e}");
    assert!(Root::create(dir.path().join("no/parent")).is_err());
}
