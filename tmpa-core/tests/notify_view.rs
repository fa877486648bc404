//! The view a process keeps of each user's inbox (tmpa-core/src/notify_view.rs) against a
//! fresh listing, over every kind of change an inbox sees: deliveries and acks by the
//! library and by another writer (files put in place by hand), a receipt written before
//! its notification, an archival's two deletions, temporaries, renames within and out of
//! the inbox, entries that are not regular files, `inbox/` and `ack/` removed, recreated
//! or moved aside, and the inotify queue overflowing. After each change (or a few),
//! `unacked` and `inbox` agree with a listing made here with `std::fs`.
//!
//! The same property runs watched (inotify) and polled (`TMPA_SUMMARY_WATCH=0`, in a child
//! process: the choice is made per process). Then many threads deliver, acknowledge and
//! archive while others read: every delivery and every acknowledgement that returned
//! before a read began is in its answer.

#![allow(
    clippy::disallowed_methods,
    reason = "tests build and break trees by path"
)]

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use proptest::prelude::*;
use tmpa_core::{Error, InboxQuery, NotificationId, Root, UserId};

const USER: &str = "u1";
/// Set in the child that runs the property polled.
const POLLED_CHILD: &str = "TMPA_NOTIFY_VIEW_POLLED_CHILD";

/// The tests of this file one at a time: they share the process's inotify queue, and a
/// test's reads would empty it before another's flood overflows it.
fn alone() -> std::sync::MutexGuard<'static, ()> {
    static QUEUE: Mutex<()> = Mutex::new(());
    QUEUE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Clone, Copy, Debug)]
enum Place {
    Inbox,
    Ack,
}

#[derive(Clone, Copy, Debug)]
enum Replace {
    /// `rm -r` the directory.
    Remove,
    /// `rm -r`, then an empty one made again.
    Recreate,
    /// Moved aside with what it holds, an empty one made in its place.
    MoveAside,
}

#[derive(Clone, Debug)]
enum Op {
    /// `Root::deliver` (refused when a receipt without its notification is in the way).
    Deliver { id: u8 },
    /// `Root::ack` (refused when the notification is not there).
    Ack { id: u8 },
    /// Another writer: a temporary renamed into the inbox.
    DeliverByHand { id: u8 },
    /// Another writer: a receipt, whether or not its notification exists (yet).
    AckByHand { id: u8 },
    /// tmpa-archive's deletions: the inbox file, then the receipt.
    Archive { id: u8 },
    /// A temporary of `ntf_{id}` in the inbox or the acks, left there or deleted.
    Temp { id: u8, place: Place, keep: bool },
    /// `inbox/ntf_{from}.json` renamed to `ntf_{to}.json` (replacing it).
    Rename { from: u8, to: u8 },
    /// `inbox/ntf_{id}.json` moved out of the inbox.
    MoveOut { id: u8 },
    /// A directory, or a symlink to a notification, named `inbox/ntf_{id}.json`.
    NotAFile { id: u8, symlink: bool },
    /// The inbox or the ack directory replaced.
    Replace { place: Place, how: Replace },
    /// More events than the inotify queue holds (attribute changes of a temporary), then
    /// a delivery by hand that only a listing after the overflow can see.
    Overflow { id: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0u8..10;
    let place = prop_oneof![Just(Place::Inbox), Just(Place::Ack)];
    let how = prop_oneof![
        Just(Replace::Remove),
        Just(Replace::Recreate),
        Just(Replace::MoveAside)
    ];
    prop_oneof![
        4 => id.clone().prop_map(|id| Op::Deliver { id }),
        3 => id.clone().prop_map(|id| Op::Ack { id }),
        3 => id.clone().prop_map(|id| Op::DeliverByHand { id }),
        2 => id.clone().prop_map(|id| Op::AckByHand { id }),
        2 => id.clone().prop_map(|id| Op::Archive { id }),
        2 => (id.clone(), place.clone(), any::<bool>())
            .prop_map(|(id, place, keep)| Op::Temp { id, place, keep }),
        1 => (id.clone(), id.clone()).prop_map(|(from, to)| Op::Rename { from, to }),
        1 => id.clone().prop_map(|id| Op::MoveOut { id }),
        1 => (id.clone(), any::<bool>()).prop_map(|(id, symlink)| Op::NotAFile { id, symlink }),
        1 => (place, how).prop_map(|(place, how)| Op::Replace { place, how }),
        1 => id.prop_map(|id| Op::Overflow { id }),
    ]
}

fn user() -> UserId {
    UserId::new(USER).unwrap()
}

fn nid(id: u8) -> NotificationId {
    NotificationId::new(format!("n{id}")).unwrap()
}

fn dir_of(root: &Path, place: Place) -> PathBuf {
    let sub = match place {
        Place::Inbox => "inbox",
        Place::Ack => "ack",
    };
    root.join("notifications").join(USER).join(sub)
}

fn file_of(root: &Path, place: Place, id: u8) -> PathBuf {
    let ext = match place {
        Place::Inbox => "json",
        Place::Ack => "ack",
    };
    dir_of(root, place).join(format!("ntf_n{id}.{ext}"))
}

/// Writes `path` as another writer would: a temporary beside it, renamed over it.
fn put(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let tmp = PathBuf::from(format!("{}.tmp.by-hand", path.display()));
    fs::write(&tmp, bytes).unwrap();
    // Not over a directory of that name (Op::NotAFile): the temporary stays, as another
    // writer's failed rename would leave it.
    let _ = fs::rename(&tmp, path);
}

/// The inotify queue's size in events (`max_queued_events`).
fn queue_events_max() -> usize {
    fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(16_384)
}

fn apply(r: &Path, root: &Root, op: &Op) {
    let u = user();
    match *op {
        Op::Deliver { id } => {
            let _ = root.deliver(&u, &nid(id), &serde_json::json!({ "n": id }));
        }
        Op::Ack { id } => {
            let _ = root.ack(&u, &nid(id));
        }
        Op::DeliverByHand { id } => put(&file_of(r, Place::Inbox, id), b"{\"by\":\"hand\"}"),
        Op::AckByHand { id } => put(&file_of(r, Place::Ack, id), b"{}"),
        Op::Archive { id } => {
            let _ = fs::remove_file(file_of(r, Place::Inbox, id));
            let _ = fs::remove_file(file_of(r, Place::Ack, id));
        }
        Op::Temp { id, place, keep } => {
            let dir = dir_of(r, place);
            fs::create_dir_all(&dir).unwrap();
            let ext = if matches!(place, Place::Inbox) {
                "json"
            } else {
                "ack"
            };
            let tmp = dir.join(format!("ntf_n{id}.{ext}.tmp.{}", if keep { 1 } else { 2 }));
            fs::write(&tmp, b"{").unwrap();
            if !keep {
                fs::remove_file(&tmp).unwrap();
            }
        }
        Op::Rename { from, to } => {
            let _ = fs::rename(file_of(r, Place::Inbox, from), file_of(r, Place::Inbox, to));
        }
        Op::MoveOut { id } => {
            let aside = r
                .join("notifications")
                .join(USER)
                .join(format!("moved-{id}"));
            let _ = fs::rename(file_of(r, Place::Inbox, id), aside);
        }
        Op::NotAFile { id, symlink } => {
            let path = file_of(r, Place::Inbox, id);
            if path.symlink_metadata().is_ok() {
                return;
            }
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            if symlink {
                let target = file_of(r, Place::Inbox, (id + 1) % 10);
                std::os::unix::fs::symlink(target, &path).unwrap();
            } else {
                fs::create_dir(&path).unwrap();
            }
        }
        Op::Replace { place, how } => {
            let dir = dir_of(r, place);
            if !dir.exists() {
                return;
            }
            match how {
                Replace::Remove => fs::remove_dir_all(&dir).unwrap(),
                Replace::Recreate => {
                    fs::remove_dir_all(&dir).unwrap();
                    fs::create_dir(&dir).unwrap();
                }
                Replace::MoveAside => {
                    let aside = dir.with_extension("old");
                    let _ = fs::remove_dir_all(&aside);
                    fs::rename(&dir, &aside).unwrap();
                    fs::create_dir(&dir).unwrap();
                }
            }
        }
        Op::Overflow { id } => {
            let dir = dir_of(r, Place::Inbox);
            fs::create_dir_all(&dir).unwrap();
            let tmps = [dir.join("flood.tmp.1"), dir.join("flood.tmp.2")];
            for t in &tmps {
                fs::write(t, b"").unwrap();
            }
            // Alternating between two files: the kernel merges only an event equal to the
            // last one queued.
            for i in 0..queue_events_max() + 64 {
                let mode = if i % 4 < 2 { 0o644 } else { 0o600 };
                fs::set_permissions(&tmps[i % 2], fs::Permissions::from_mode(mode)).unwrap();
            }
            for t in &tmps {
                fs::remove_file(t).unwrap();
            }
            put(&file_of(r, Place::Inbox, id), b"{\"after\":\"overflow\"}");
        }
    }
}

/// The live notifications as a fresh listing made here says: `(id, acked)`, sorted.
fn fresh(r: &Path) -> Vec<(String, bool)> {
    let ids = |place: Place, ext: &str| -> BTreeSet<String> {
        let Ok(entries) = fs::read_dir(dir_of(r, place)) else {
            return BTreeSet::new();
        };
        entries
            .map(|e| e.unwrap())
            .filter(|e| matches!(place, Place::Ack) || e.file_type().unwrap().is_file())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let id = name.strip_prefix("ntf_")?.strip_suffix(ext)?.to_owned();
                NotificationId::new(&id).is_ok().then_some(id)
            })
            .collect()
    };
    let acked = ids(Place::Ack, ".ack");
    ids(Place::Inbox, ".json")
        .into_iter()
        .map(|id| {
            let a = acked.contains(&id);
            (id, a)
        })
        .collect()
}

fn check(r: &Path, root: &Root, after: &str) -> Result<(), TestCaseError> {
    let want = fresh(r);
    let want_unacked: Vec<String> = want
        .iter()
        .filter(|(_, a)| !a)
        .map(|(id, _)| id.clone())
        .collect();
    let got: Vec<String> = root
        .unacked(&user())
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    prop_assert_eq!(&got, &want_unacked, "unacked after {}", after);
    let page = root.inbox(&user(), &InboxQuery::default()).unwrap();
    let got: Vec<(String, bool)> = page.iter().map(|i| (i.id.to_string(), i.acked)).collect();
    prop_assert_eq!(&got, &want, "inbox after {}", after);
    let q = InboxQuery {
        unacked_only: true,
        ..InboxQuery::default()
    };
    let got: Vec<String> = root
        .inbox(&user(), &q)
        .unwrap()
        .iter()
        .map(|i| i.id.to_string())
        .collect();
    prop_assert_eq!(&got, &want_unacked, "inbox(unacked_only) after {}", after);
    Ok(())
}

fn run(ops: &[(Op, bool)]) -> Result<(), TestCaseError> {
    let _alone = alone();
    let t = tempfile::tempdir().unwrap();
    let root = Root::create(t.path()).unwrap();
    // Another handle on the same root shares the process's views.
    let other = Root::open(t.path()).unwrap();
    let r = root.path().to_path_buf();
    check(&r, &root, "nothing")?;
    for (i, (op, then_check)) in ops.iter().enumerate() {
        apply(&r, &root, op);
        // Some changes pile up between two calls.
        if *then_check {
            let by = if i % 3 == 0 { &other } else { &root };
            check(&r, by, &format!("op #{i} {op:?}"))?;
        }
    }
    check(&r, &root, "the end")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Watched (inotify): after every change, the view kept equals a fresh listing.
    #[test]
    fn view_equals_fresh_listing(ops in proptest::collection::vec((op(), any::<bool>()), 1..40)) {
        if std::env::var_os(POLLED_CHILD).is_some() {
            return Ok(());
        }
        run(&ops)?;
    }

    /// The body of the polled run (does nothing unless run as the child below).
    #[test]
    fn polled_child(ops in proptest::collection::vec((op(), any::<bool>()), 1..40)) {
        if std::env::var_os(POLLED_CHILD).is_none() {
            return Ok(());
        }
        run(&ops)?;
    }
}

/// Polled (no inotify, every call lists): the same property, in a child process whose
/// environment says `TMPA_SUMMARY_WATCH=0`.
#[test]
fn view_equals_fresh_listing_when_polled() {
    support::run_polled_child("polled_child", POLLED_CHILD);
}

/// What the writers did to one user's notifications.
#[derive(Clone, Debug, Default)]
struct Log {
    /// Ids whose delivery was called.
    begun: BTreeSet<String>,
    /// Ids whose delivery returned.
    delivered: BTreeSet<String>,
    /// Ids whose acknowledgement was called (its receipt may show before it returns).
    ack_begun: BTreeSet<String>,
    /// Ids whose acknowledgement returned.
    acked: BTreeSet<String>,
}

/// Four threads deliver and acknowledge, one archives acknowledged notifications (inbox
/// file, then receipt) and one delivers as another process would (a rename into the
/// inbox), over two users, while three readers (two handles on the root) call `unacked`:
/// every delivery that returned before a call began is in its answer unless an
/// acknowledgement of it had begun by the end of the call, no acknowledgement that returned before it is, and nothing
/// appears that was never delivered.
#[test]
fn every_write_that_returned_before_a_read_is_seen() {
    let _alone = alone();
    const WRITERS: usize = 4;
    const PER_WRITER: usize = 40;
    let t = tempfile::tempdir().unwrap();
    let root = Root::create(t.path()).unwrap();
    let other = Root::open(t.path()).unwrap();
    let users = [UserId::new("a").unwrap(), UserId::new("b").unwrap()];
    let log: Vec<Mutex<Log>> = users.iter().map(|_| Mutex::default()).collect();
    let done = AtomicBool::new(false);
    let reads = std::thread::scope(|s| {
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let (root, users, log) = (&root, &users, &log);
            writers.push(s.spawn(move || {
                for i in 0..PER_WRITER {
                    let k = (w + i) % 2;
                    let id = NotificationId::new(format!("w{w}-{i:03}")).unwrap();
                    log[k].lock().unwrap().begun.insert(id.to_string());
                    root.deliver(&users[k], &id, &serde_json::json!(i)).unwrap();
                    log[k].lock().unwrap().delivered.insert(id.to_string());
                    if i % 2 == 0 {
                        log[k].lock().unwrap().ack_begun.insert(id.to_string());
                        root.ack(&users[k], &id).unwrap();
                        log[k].lock().unwrap().acked.insert(id.to_string());
                    }
                }
            }));
        }
        let by_hand = {
            let (r, log) = (root.path().to_path_buf(), &log);
            s.spawn(move || {
                for i in 0..PER_WRITER {
                    let name = format!("h-{i:03}");
                    let inbox = r.join("notifications/a/inbox");
                    log[0].lock().unwrap().begun.insert(name.clone());
                    put(&inbox.join(format!("ntf_{name}.json")), b"1");
                    log[0].lock().unwrap().delivered.insert(name);
                }
            })
        };
        let archiver = {
            let (r, users, log, done) = (root.path().to_path_buf(), &users, &log, &done);
            s.spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    for (k, u) in users.iter().enumerate() {
                        let acked: Vec<String> =
                            log[k].lock().unwrap().acked.iter().cloned().collect();
                        for id in acked.iter().step_by(3) {
                            let user_dir = r.join("notifications").join(u.as_str());
                            let _ = fs::remove_file(user_dir.join(format!("inbox/ntf_{id}.json")));
                            let _ = fs::remove_file(user_dir.join(format!("ack/ntf_{id}.ack")));
                        }
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            })
        };
        let mut readers = Vec::new();
        for n in 0..3 {
            let (by, users, log, done) = (if n == 0 { &other } else { &root }, &users, &log, &done);
            readers.push(s.spawn(move || {
                let mut reads = 0u32;
                while !done.load(Ordering::Relaxed) {
                    let k = (n + reads as usize) % 2;
                    let before = log[k].lock().unwrap().clone();
                    let got: BTreeSet<String> = by
                        .unacked(&users[k])
                        .unwrap()
                        .iter()
                        .map(ToString::to_string)
                        .collect();
                    let after = log[k].lock().unwrap().clone();
                    for id in &before.delivered {
                        assert!(
                            got.contains(id) || after.ack_begun.contains(id),
                            "{id}, delivered before the call, is missing"
                        );
                    }
                    for id in &before.acked {
                        assert!(
                            !got.contains(id),
                            "{id}, acknowledged before the call, is unacked"
                        );
                    }
                    for id in &got {
                        assert!(after.begun.contains(id), "{id} was never delivered");
                    }
                    reads += 1;
                }
                reads
            }));
        }
        for w in writers {
            w.join().unwrap();
        }
        by_hand.join().unwrap();
        done.store(true, Ordering::Relaxed);
        archiver.join().unwrap();
        readers
            .into_iter()
            .map(|r| r.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert!(reads.iter().all(|&n| n > 0), "{reads:?}");
    for (k, u) in users.iter().enumerate() {
        let log = log[k].lock().unwrap().clone();
        let want: Vec<String> = log.delivered.difference(&log.acked).cloned().collect();
        let got: Vec<String> = root
            .unacked(u)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, want, "user {u} at the end");
    }
}

/// More users than a process keeps views of, each changed between two rounds: the views
/// evicted and made again still answer what a fresh listing says.
#[test]
fn more_users_than_the_process_keeps() {
    let _alone = alone();
    const USERS: usize = 80;
    let t = tempfile::tempdir().unwrap();
    let root = Root::create(t.path()).unwrap();
    let users: Vec<UserId> = (0..USERS)
        .map(|i| UserId::new(format!("u{i}")).unwrap())
        .collect();
    let inbox = |u: &UserId| {
        root.path()
            .join("notifications")
            .join(u.as_str())
            .join("inbox")
    };
    for (i, u) in users.iter().enumerate() {
        for n in 0..=(i % 4) {
            put(&inbox(u).join(format!("ntf_{n}.json")), b"1");
        }
    }
    for round in 0..3 {
        for (i, u) in users.iter().enumerate() {
            let want: Vec<String> = (0..=(i % 4))
                .map(|n| n.to_string())
                .chain((0..round).map(|r| format!("r{r}")))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let got: Vec<String> = root
                .unacked(u)
                .unwrap()
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(got, want, "user {u} in round {round}");
            put(&inbox(u).join(format!("ntf_r{round}.json")), b"1");
        }
    }
}

/// The root removed and another put at its path (a restore): `unacked` says so
/// ([`Error::RootReplaced`]) instead of answering from the view of the old tree, and the
/// reopened root answers from the new one.
#[test]
fn a_replaced_root_is_not_answered_from_the_view() {
    let _alone = alone();
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("app");
    let root = Root::create(&path).unwrap();
    let u = user();
    root.deliver(&u, &nid(1), &serde_json::json!(1)).unwrap();
    assert_eq!(root.unacked(&u).unwrap(), vec![nid(1)]);
    fs::rename(&path, t.path().join("app.old")).unwrap();
    fs::remove_dir_all(t.path().join("app.old")).unwrap();
    let restored = Root::create(&path).unwrap();
    restored
        .deliver(&u, &nid(2), &serde_json::json!(2))
        .unwrap();
    let e = root.unacked(&u).unwrap_err();
    assert!(matches!(e, Error::RootReplaced { .. }), "{e}");
    assert_eq!(root.reopen().unwrap().unacked(&u).unwrap(), vec![nid(2)]);
    assert_eq!(restored.unacked(&u).unwrap(), vec![nid(2)]);
}
