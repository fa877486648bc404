//! Archived notifications follow the tmpa.toml store like sessions do: tmpa-archive puts
//! each batch as the object `{prefix}/{user}/acked-{n}-{16 hex}.tar.gz` (beside the
//! user's sessions), reads it back from the store and compares it before it deletes the
//! inbox files and acks through the one delete step (receipts `store_read_back`), and
//! the library (as a backend process) still answers every read from the store. Against a
//! `file://` store and a real S3-compatible server (moto on 127.0.0.1, started by this
//! test process; a missing moto fails these tests), with a proxy that makes the store
//! fail: a store that refuses, one that dies mid-run, a corrupted read-back, a dry run.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use tmpa_core::maintenance::{read_archive, sha256_hex};
use tmpa_tests::s3::{Fault, FaultProxy, S3Server};
use tmpa_tests::{Run, Tree, age, bin};

const DAY: Duration = Duration::from_secs(86_400);

/// Per (user, id): the notification's bytes, whether it is acknowledged, and whether
/// a run archives it (acknowledged 200 days ago).
type Want = BTreeMap<(String, String), Expect>;
type Expect = (Vec<u8>, bool, bool);

/// The server this file shares (each test its own bucket). These tests are about the
/// store: without moto they fail, they do not skip.
fn server() -> &'static S3Server {
    static SERVER: OnceLock<S3Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        S3Server::start().expect(
            "moto[server] is a prerequisite of these tests (tests/check.sh installs it into target/py-venv; or set TMPA_TEST_PYTHON)",
        )
    })
}

/// A tree where each of `users` has `old` notifications acknowledged 200 days ago
/// (`o0`, `o1`, ...), one acknowledged 10 days ago (`young`) and one never read
/// (`unread`), archiving to `url`.
fn tree(users: &[&str], old: usize, url: &str) -> (Tree, Want) {
    let t = Tree::new();
    let mut want = Want::new();
    for user in users {
        let mut add = |id: String, acked: Option<Duration>| {
            let body = format!(r#"{{"to":"{user}","id":"{id}","text":"notification {id}"}}"#);
            let p = t.file(format!("notifications/{user}/inbox/ntf_{id}.json"), &body);
            age(&p, DAY * 300);
            if let Some(a) = acked {
                let ack = t.file(
                    format!("notifications/{user}/ack/ntf_{id}.ack"),
                    format!(r#"{{"acked_at":"{} days ago"}}"#, a.as_secs() / 86_400),
                );
                age(&ack, a);
            }
            let archived = acked.is_some_and(|a| a > DAY * 90);
            let key = ((*user).to_owned(), id);
            want.insert(key, (body.into_bytes(), acked.is_some(), archived));
        };
        for i in 0..old {
            add(format!("o{i}"), Some(DAY * 200));
        }
        add("young".into(), Some(DAY * 10));
        add("unread".into(), None);
    }
    t.file("tmpa.toml", format!("[archive]\nurl = \"{url}\"\n"));
    (t, want)
}

/// Runs tmpa-archive on `t`, with the S3 environment for `port` when given.
fn archive(t: &Tree, port: Option<u16>, args: &[&str]) -> Run {
    let mut cmd = bin("tmpa-archive");
    if let Some(p) = port {
        S3Server::env(&mut cmd, p);
    }
    cmd.arg("--root")
        .arg(t.root())
        .args(args)
        .output()
        .expect("run tmpa-archive")
        .into()
}

/// The library as a backend process (tmpa-notifications), with the S3 environment for
/// `port` when given: its stdout, or its error.
fn library(t: &Tree, port: Option<u16>, args: &[&str]) -> Result<String, String> {
    let mut cmd = bin("tmpa-notifications");
    if let Some(p) = port {
        S3Server::env(&mut cmd, p);
    }
    let out = cmd
        .arg(t.root())
        .args(args)
        .output()
        .expect("run tmpa-notifications");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("utf-8"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Every notification of `want` reads back exactly through the library, with its ack
/// state, listed where it is (`stored` when `in_store` says its batch went to the store,
/// else `live`); `unacked` lists exactly the unread.
fn reads_back(t: &Tree, port: Option<u16>, want: &Want, in_store: impl Fn(&str) -> bool) {
    let mut users: BTreeMap<&str, Vec<(&str, &Expect)>> = BTreeMap::new();
    for ((user, id), w) in want {
        users.entry(user).or_default().push((id, w));
    }
    for (user, notes) in users {
        let mut listed = String::new();
        let mut unacked = String::new();
        for (id, (body, acked, archived)) in &notes {
            let loc = if *archived && in_store(user) {
                "stored"
            } else {
                "live"
            };
            let ack = if *acked { "acked" } else { "unacked" };
            listed.push_str(&format!("{id} {loc} {ack}\n"));
            if !acked {
                unacked.push_str(&format!("{id}\n"));
            }
            let read = library(t, port, &[user, id]).expect("read_notification");
            assert_eq!(read.as_bytes(), &body[..], "{user}/{id}");
            let is_acked = library(t, port, &[user, id, "--acked"]).expect("is_acked");
            assert_eq!(is_acked, format!("{acked}\n"), "{user}/{id}");
        }
        assert_eq!(library(t, port, &[user]).expect("list"), listed, "{user}");
        let got = library(t, port, &[user, "--unacked"]).expect("unacked");
        assert_eq!(got, unacked, "{user}");
    }
    let missing = library(t, port, &["alice", "never-delivered"]).unwrap_err();
    assert!(missing.contains("No such file"), "{missing}");
}

/// The ids an archive's bytes hold, each with its bytes and its ack's, every member
/// checked against the index.
fn archive_members(bytes: &[u8]) -> BTreeMap<String, (Vec<u8>, Vec<u8>)> {
    let mut out = BTreeMap::new();
    read_archive(
        bytes,
        Path::new("object"),
        |_| true,
        |n| {
            out.insert(n.id.to_string(), (n.body, n.ack));
            true
        },
    )
    .expect("a notification archive");
    out
}

/// Every receipt line of the archive runs of `t`.
fn receipts(t: &Tree) -> Vec<Value> {
    tmpa_tests::receipt_lines(t.root(), "archive_history")
}

/// What the tree holds of notifications (inbox, ack and local archives), as a snapshot.
fn notifications_snapshot(t: &Tree) -> BTreeMap<std::path::PathBuf, String> {
    tmpa_tests::snapshot(&t.root().join("notifications"), &[])
}

/// Old acknowledged notifications go to a directory store, one object per user beside
/// where its sessions would be, and nothing to a local archive; each inbox file and ack
/// is deleted after a receipt line naming the object, its ETag and SHA-256; the young
/// and the unread stay; the library reads and lists them from the store; a rerun changes
/// nothing.
#[test]
fn notifications_go_to_a_file_store_and_read_back() {
    let store = tempfile::tempdir().expect("store dir");
    let url = format!("file://{}", store.path().display());
    let (t, want) = tree(&["alice", "b b"], 5, &url);
    let r = archive(&t, None, &["--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["counts"]["notifications_archived"], 10, "{r:?}");
    for user in ["alice", "b b"] {
        let objects: Vec<_> = fs::read_dir(store.path().join(user))
            .expect("user's directory in the store")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        assert_eq!(objects.len(), 1, "{objects:?}");
        assert!(
            objects[0].starts_with("acked-5-") && objects[0].ends_with(".tar.gz"),
            "{objects:?}"
        );
        let bytes = fs::read(store.path().join(user).join(&objects[0])).expect("object");
        let members = archive_members(&bytes);
        assert_eq!(members.len(), 5);
        for (id, (body, _)) in &members {
            assert_eq!(&want[&(user.to_owned(), id.clone())].0, body, "{user}/{id}");
        }
        assert!(
            !t.root()
                .join(format!("notifications/{user}/archive"))
                .exists()
        );
        let inbox = t.root().join(format!("notifications/{user}/inbox"));
        let mut left: Vec<_> = fs::read_dir(&inbox)
            .expect("inbox")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        left.sort();
        assert_eq!(left, ["ntf_unread.json", "ntf_young.json"]);
    }
    let lines = receipts(&t);
    assert_eq!(lines.len(), 20, "{lines:?}");
    for l in &lines {
        assert_eq!(l["verified_by"], "store_read_back", "{l}");
        let held_by = l["held_by"].as_str().expect("held_by");
        let object = held_by.strip_prefix("file://").expect("a file:// URL");
        assert!(
            held_by.starts_with(&format!("{url}/")) && held_by.contains("/acked-5-"),
            "{l}"
        );
        let bytes = fs::read(object).expect("the object the receipt names");
        assert_eq!(l["object_sha256"], sha256_hex(&bytes), "{l}");
        assert_eq!(l["object_bytes"], bytes.len(), "{l}");
        assert!(l["etag"].as_str().is_some_and(|e| !e.is_empty()), "{l}");
    }
    reads_back(&t, None, &want, |_| true);
    let before = (t.snapshot(), tmpa_tests::snapshot(store.path(), &[]));
    let again = archive(&t, None, &[]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(
        (t.snapshot(), tmpa_tests::snapshot(store.path(), &[])),
        before
    );
}

/// An ack left behind by a run stopped between its two deletions is deleted on the
/// strength of the store's archive that holds its notification with exactly that ack
/// (receipt `store_read_back`); an ack no archive holds is kept and reported (exit 1),
/// once: later runs count it as known, without reading the archives again (exit 0). A
/// dry run reads the store to decide both, and deletes nothing.
#[test]
fn a_leftover_ack_is_completed_from_the_store_and_an_orphan_kept() {
    let store = tempfile::tempdir().expect("store dir");
    let url = format!("file://{}", store.path().display());
    let (t, want) = tree(&["alice"], 3, &url);
    let ack = t.root().join("notifications/alice/ack/ntf_o1.ack");
    let saved = fs::read(&ack).expect("ack");
    let first = archive(&t, None, &[]);
    assert_eq!(first.code, 0, "{first:?}");
    assert!(!ack.exists());
    fs::write(&ack, &saved).expect("restore ack");
    age(&ack, DAY * 200);
    let orphan = t.file("notifications/alice/ack/ntf_gone.ack", b"{}");
    age(&orphan, DAY * 200);
    let dry = archive(&t, None, &["--dry-run", "--json"]);
    assert_eq!(dry.code, 1, "{dry:?}");
    assert_eq!(dry.json()["counts"]["acks_completed"], 1, "{dry:?}");
    assert_eq!(dry.json()["counts"]["orphan_acks"], 1, "{dry:?}");
    assert!(ack.exists() && orphan.exists());
    let receipts_before = receipts(&t).len();
    let r = archive(&t, None, &["--json"]);
    assert_eq!(r.code, 1, "{r:?}");
    let report = r.json();
    assert_eq!(report["counts"]["acks_completed"], 1, "{report}");
    assert_eq!(report["counts"]["orphan_acks"], 1, "{report}");
    assert!(!ack.exists());
    assert!(orphan.exists());
    let lines = receipts(&t);
    assert_eq!(lines.len(), receipts_before + 1);
    // Its first deletion, and this run's: both on the strength of the same object.
    let of_ack: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["file"]
                .as_str()
                .is_some_and(|f| f.ends_with("/ntf_o1.ack"))
        })
        .collect();
    assert_eq!(of_ack.len(), 2, "{lines:?}");
    for l in of_ack {
        assert_eq!(l["verified_by"], "store_read_back", "{l}");
        assert!(
            l["held_by"]
                .as_str()
                .is_some_and(|h| h.starts_with(&format!("{url}/alice/acked-3-"))),
            "{l}"
        );
    }
    reads_back(&t, None, &want, |_| true);
    // Reported once: the next run counts it as known, exit 0.
    let again = archive(&t, None, &["--json"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(again.json()["counts"]["orphan_acks"], 0, "{again:?}");
    assert_eq!(again.json()["counts"]["orphan_acks_known"], 1, "{again:?}");
    assert!(orphan.exists());
}

/// A dry run to a directory store saves a plan naming each object it would write (and
/// writes none); applying the plan archives exactly those notifications, with receipt
/// lines that match the plan's.
#[test]
fn a_plan_to_a_file_store_is_applied() {
    let store = tempfile::tempdir().expect("store dir");
    let url = format!("file://{}", store.path().display());
    let (t, want) = tree(&["alice"], 4, &url);
    let plan = t.root().join(".tmpa/plan.json");
    let plan_arg = plan.to_str().expect("utf-8");
    let before = t.snapshot();
    let dry = archive(&t, None, &["--dry-run", "--save-plan", plan_arg]);
    assert_eq!(dry.code, 0, "{dry:?}");
    assert_eq!(t.snapshot(), before);
    assert!(tmpa_tests::snapshot(store.path(), &[]).is_empty());
    let saved: Value = serde_json::from_slice(&fs::read(&plan).expect("plan")).expect("json");
    let planned = saved["deletions"].as_array().expect("deletions");
    assert_eq!(planned.len(), 8, "{saved}");
    for d in planned {
        assert_eq!(d["verified_by"], "store_read_back", "{d}");
        assert!(
            d["held_by"]
                .as_str()
                .is_some_and(|h| h.starts_with(&format!("{url}/alice/acked-4-"))),
            "{d}"
        );
    }
    let applied = archive(&t, None, &["--apply-plan", plan_arg]);
    assert_eq!(applied.code, 0, "{applied:?}");
    let lines = receipts(&t);
    assert_eq!(lines.len(), 8, "{lines:?}");
    for l in &lines {
        let p = planned
            .iter()
            .find(|d| d["file"] == l["file"])
            .unwrap_or_else(|| panic!("not in the plan: {l}"));
        assert_eq!(p["held_by"], l["held_by"], "{l}");
    }
    reads_back(&t, None, &want, |_| true);
}

/// Old acknowledged notifications go to S3 next to the user's sessions (one object per
/// batch), verified by read-back; receipts name the object; the library, as a backend
/// with the store's environment, reads and lists them from the store; a rerun changes
/// nothing.
#[test]
fn notifications_go_to_s3_and_the_library_reads_them_there() {
    let s = server();
    s.create_bucket("notes-s3");
    let (t, want) = tree(&["alice"], 4, "s3://notes-s3/host-a");
    let session = t.file("chat_history/alice/sessions/s0.json", b"{\"m\":1}");
    age(&session, DAY * 40);
    let r = archive(&t, Some(s.port()), &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("store: s3://notes-s3/host-a (conditional put"),
        "{}",
        r.stdout
    );
    let keys = s.keys("notes-s3", "host-a/");
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys[0].starts_with("host-a/alice/acked-4-") && keys[0].ends_with(".tar.gz"));
    assert_eq!(keys[1], "host-a/alice/s0.json.gz");
    let object = s.get_object("notes-s3", &keys[0]).expect("object");
    let members = archive_members(&object);
    assert_eq!(members.len(), 4);
    for (id, (body, _)) in &members {
        assert_eq!(&want[&("alice".to_owned(), id.clone())].0, body, "{id}");
    }
    let lines: Vec<Value> = receipts(&t)
        .into_iter()
        .filter(|l| {
            l["file"]
                .as_str()
                .is_some_and(|f| f.contains("/notifications/"))
        })
        .collect();
    assert_eq!(lines.len(), 8, "{lines:?}");
    for l in &lines {
        assert_eq!(l["verified_by"], "store_read_back", "{l}");
        assert_eq!(l["held_by"], format!("s3://notes-s3/{}", keys[0]), "{l}");
        assert_eq!(l["object_sha256"], sha256_hex(&object), "{l}");
        assert!(l["etag"].as_str().is_some_and(|e| !e.is_empty()), "{l}");
    }
    reads_back(&t, Some(s.port()), &want, |_| true);
    let before = t.snapshot();
    let again = archive(&t, Some(s.port()), &[]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(t.snapshot(), before);
    assert_eq!(s.keys("notes-s3", "host-a/"), keys);
}

/// A store that refuses (its bucket does not exist): nothing is deleted, nothing
/// written, exit 4, and the report says the store failed.
#[test]
fn a_refusing_store_leaves_every_notification() {
    let s = server();
    let (t, want) = tree(&["alice"], 3, "s3://no-such-bucket/host-a");
    let before = t.snapshot();
    let r = archive(&t, Some(s.port()), &[]);
    assert_eq!(r.code, 4, "{r:?}");
    assert!(
        r.stdout.contains("left in place") && r.stdout.contains("s3://no-such-bucket/host-a"),
        "{}",
        r.stdout
    );
    assert_eq!(t.snapshot(), before);
    assert!(receipts(&t).is_empty());
    for ((user, id), (body, ..)) in &want {
        let read = library(&t, Some(s.port()), &[user, id]).expect("a live read");
        assert_eq!(read.as_bytes(), &body[..], "{user}/{id}");
    }
}

/// The store dies in the middle of a run (after the probe and a few batches, every
/// connection is refused): exit 4; every notification deleted had its batch verified
/// in the store, every other one is still in its inbox with its ack, byte for byte; the
/// next run, with the store back, finishes and everything reads back from the store.
#[test]
fn the_store_dying_mid_run_deletes_only_what_it_verified() {
    let s = server();
    s.create_bucket("notes-dies");
    let users = ["u1", "u2", "u3", "u4", "u5", "u6"];
    let (t, want) = tree(&users, 3, "s3://notes-dies/host-a");
    // The probe (1), then HEAD, PUT, GET per user's batch: the store dies during the
    // fourth user's requests.
    let proxy = FaultProxy::start(s.port(), Fault::DieAfter(10), || {});
    let r = archive(&t, Some(proxy.port()), &[]);
    assert_eq!(r.code, 4, "{r:?}");
    assert!(r.stdout.contains("left in place"), "{}", r.stdout);
    let (mut done, mut kept) = (0, 0);
    for user in users {
        let keys = s.keys("notes-dies", &format!("host-a/{user}/"));
        let stored = match keys.as_slice() {
            [] => BTreeMap::new(),
            [key] => archive_members(&s.get_object("notes-dies", key).expect("object")),
            more => panic!("{more:?}"),
        };
        for ((u, id), (body, _, archived)) in &want {
            if u != user || !archived {
                continue;
            }
            let inbox = t
                .root()
                .join(format!("notifications/{user}/inbox/ntf_{id}.json"));
            let ack = t
                .root()
                .join(format!("notifications/{user}/ack/ntf_{id}.ack"));
            match fs::read(&inbox) {
                Ok(live) => {
                    kept += 1;
                    assert_eq!(&live, body, "{user}/{id} changed");
                    assert!(ack.exists(), "{user}/{id} kept without its ack");
                }
                Err(_) => {
                    done += 1;
                    assert!(!ack.exists(), "{user}/{id}: ack left behind");
                    assert_eq!(
                        stored.get(id).map(|(b, _)| b),
                        Some(body),
                        "{user}/{id} deleted but not in the store"
                    );
                }
            }
        }
    }
    assert!(done > 0 && kept > 0, "done {done}, kept {kept}");
    let again = archive(&t, Some(s.port()), &[]);
    assert_eq!(again.code, 0, "{again:?}");
    reads_back(&t, Some(s.port()), &want, |_| true);
}

/// The store hands back other bytes than were stored: verification fails, every
/// notification and ack is kept (exit 1) and no receipt names them; once the store reads
/// back right, the next run completes the batch from the object that is there.
#[test]
fn a_corrupted_read_back_keeps_the_notifications() {
    let s = server();
    s.create_bucket("notes-corrupt");
    let (t, want) = tree(&["alice"], 3, "s3://notes-corrupt/host-a");
    let before = notifications_snapshot(&t);
    let proxy = FaultProxy::start(s.port(), Fault::CorruptGet, || {});
    let r = archive(&t, Some(proxy.port()), &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout
            .contains("verification failed 3 notifications of alice"),
        "{}",
        r.stdout
    );
    assert_eq!(notifications_snapshot(&t), before);
    assert!(receipts(&t).is_empty());
    let again = archive(&t, Some(s.port()), &[]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(
        again.stdout.contains("completed 3 notifications of alice"),
        "{}",
        again.stdout
    );
    reads_back(&t, Some(s.port()), &want, |_| true);
}

/// A dry run lists the batches it would store, with their object URLs; it reads the
/// store (to compare what is there, as a real run would) and writes nothing to it.
#[test]
fn a_dry_run_reads_the_store_and_writes_nothing() {
    let s = server();
    s.create_bucket("notes-dry");
    let (t, _) = tree(&["alice"], 3, "s3://notes-dry/host-a");
    let proxy = FaultProxy::start(s.port(), Fault::None, || {});
    let before = t.snapshot();
    let r = archive(&t, Some(proxy.port()), &["--dry-run"]);
    assert_eq!(r.code, 0, "{r:?}");
    let writes = proxy.writes();
    assert!(
        writes.is_empty(),
        "a dry run wrote to the store: {writes:?}"
    );
    assert!(s.keys("notes-dry", "").is_empty());
    assert_eq!(t.snapshot(), before);
    assert!(
        r.stdout.contains(
            "would archive 3 notifications of alice into s3://notes-dry/host-a/alice/acked-3-"
        ),
        "{}",
        r.stdout
    );
}

/// The library's strictness against notifications archived in a `file://` store: `ack`
/// of one is a no-op that writes nothing; with a receipt left behind (a run stopped
/// between its deletions), `deliver` of the archived value is a no-op and of another
/// value a conflict naming the object; an id never delivered is NotFound, and nothing is
/// created for it.
#[test]
fn ack_and_deliver_against_the_store() {
    use tmpa_core::{Acked, Error, NotificationId, Root, UserId};
    let store = tempfile::tempdir().expect("store dir");
    let url = format!("file://{}", store.path().display());
    let (t, want) = tree(&["alice"], 2, &url);
    let ack = t.root().join("notifications/alice/ack/ntf_o1.ack");
    let saved = fs::read(&ack).expect("ack");
    let r = archive(&t, None, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let root = Root::open(t.root()).expect("root");
    let (alice, o0, o1) = (
        UserId::new("alice").unwrap(),
        NotificationId::new("o0").unwrap(),
        NotificationId::new("o1").unwrap(),
    );
    let before = notifications_snapshot(&t);
    assert_eq!(root.ack(&alice, &o0).expect("ack"), Acked::Archived);
    assert_eq!(
        notifications_snapshot(&t),
        before,
        "an archived ack writes nothing"
    );

    fs::write(&ack, &saved).expect("the receipt left behind");
    let before = notifications_snapshot(&t);
    let body: Value = serde_json::from_slice(&want[&("alice".into(), "o1".into())].0).unwrap();
    root.deliver(&alice, &o1, &body)
        .expect("the archived value: a no-op");
    let e = root
        .deliver(&alice, &o1, &serde_json::json!({"other": 1}))
        .expect_err("another value");
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    let held = e.path().expect("a path").to_string_lossy().into_owned();
    assert!(held.starts_with(&format!("{url}/alice/acked-2-")), "{held}");
    assert_eq!(notifications_snapshot(&t), before, "nothing delivered");

    let never = NotificationId::new("never").unwrap();
    let e = root.ack(&alice, &never).expect_err("never delivered");
    assert_eq!(e.io_kind(), std::io::ErrorKind::NotFound, "{e}");
    assert_eq!(notifications_snapshot(&t), before);
    let bob = UserId::new("bob").unwrap();
    assert!(root.ack(&bob, &never).is_err());
    assert!(!t.root().join("notifications/bob").exists());
}
