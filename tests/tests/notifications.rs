//! tmpa-archive's notification archival on real trees: acknowledged notifications older
//! than `--notifications-older-than` leave the inbox for an archive the library still
//! reads; unacknowledged and recent ones stay; orphan acks are reported; notifications
//! delivered or acknowledged during the run are never lost; kills at every system call
//! that matters lose nothing; dry runs, plans and receipts as for sessions.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tmpa_core::{NotificationId, NotificationLocation, Root, UserId};
use tmpa_tests::{Run, Tree, age, bin};

const DAY: Duration = Duration::from_secs(86_400);

/// What a notification should be after any run: its bytes, and whether it is acked.
type Want = BTreeMap<(String, String), (Vec<u8>, bool)>;

/// Delivers `ntf_{id}.json` to `user` with `body`, delivered `delivered` ago and (when
/// `acked` is some) acknowledged that long ago.
fn notification(
    t: &Tree,
    want: &mut Want,
    (user, id): (&str, &str),
    body: &[u8],
    delivered: Duration,
    acked: Option<Duration>,
) {
    let p = t.file(format!("notifications/{user}/inbox/ntf_{id}.json"), body);
    age(&p, delivered);
    if let Some(a) = acked {
        let ack = t.file(
            format!("notifications/{user}/ack/ntf_{id}.ack"),
            format!(r#"{{"acked_at":"{} days ago"}}"#, a.as_secs() / 86_400),
        );
        age(&ack, a);
    }
    want.insert((user.into(), id.into()), (body.to_vec(), acked.is_some()));
}

/// Every notification of `want` reads back exactly through the library, with its ack
/// state, live or archived; `unacked` lists exactly the unacknowledged ones.
fn nothing_lost(root: &Path, want: &Want) {
    let r = Root::open(root).expect("root");
    let mut users: BTreeMap<&str, Vec<(&str, bool)>> = BTreeMap::new();
    for ((user, id), (_, acked)) in want {
        users.entry(user).or_default().push((id, *acked));
    }
    for (user, ids) in users {
        let u = UserId::new(user).expect("user");
        let listed: BTreeMap<String, bool> = r
            .list_notifications(&u)
            .expect("list")
            .into_iter()
            .map(|n| (n.id.to_string(), n.acked))
            .collect();
        let expected: BTreeMap<String, bool> =
            ids.iter().map(|(id, a)| ((*id).to_owned(), *a)).collect();
        assert_eq!(listed, expected, "list_notifications of {user}");
        let unacked: Vec<String> = r
            .unacked(&u)
            .expect("unacked")
            .iter()
            .map(ToString::to_string)
            .collect();
        let want_unacked: Vec<String> = ids
            .iter()
            .filter(|(_, a)| !a)
            .map(|(id, _)| (*id).to_owned())
            .collect();
        assert_eq!(unacked, want_unacked, "unacked of {user}");
    }
    // Reads by id: every one in a small tree, a spread sample of a large one (each read of
    // an archived notification looks into the user's archive indexes).
    let step = (want.len() / 400).max(1);
    for ((user, id), (body, acked)) in want.iter().step_by(step) {
        let (u, n) = (
            UserId::new(user.as_str()).unwrap(),
            NotificationId::new(id.as_str()).unwrap(),
        );
        assert_eq!(
            &r.read_notification(&u, &n).expect("read"),
            body,
            "{user}/{id}"
        );
        assert_eq!(r.is_acked(&u, &n).expect("is_acked"), *acked, "{user}/{id}");
    }
}

/// The inbox and ack entries of `user`, sorted.
fn live(root: &Path, user: &str, dir: &str) -> Vec<String> {
    let Ok(rd) = fs::read_dir(root.join(format!("notifications/{user}/{dir}"))) else {
        return Vec::new();
    };
    let mut out: Vec<String> = rd
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

fn archives(root: &Path, user: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(root.join(format!("notifications/{user}/archive")))
        .map(|rd| rd.map(|e| e.expect("entry").path()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// A user with 20,000 notifications over two years, most acknowledged: after one run the
/// inbox holds only the unacknowledged and the recently acknowledged, the rest sit in a
/// few archives that `tar tzf` lists, and every notification reads back exactly through
/// the library; a second run changes nothing.
#[test]
fn twenty_thousand_notifications_over_two_years() {
    let t = Tree::new();
    let mut want = Want::new();
    let mut stay = Vec::new();
    for i in 0..20_000u64 {
        let id = format!("{i:06}");
        let delivered = DAY * u32::try_from(730 - i * 730 / 20_000).unwrap();
        let body = format!(r#"{{"n":{i},"text":"notification {i} of two years"}}"#);
        // Every 10th is never read; the others are read a day after delivery.
        let acked = (i % 10 != 0).then(|| delivered.saturating_sub(DAY));
        if acked.is_none_or(|a| a < DAY * 90) {
            stay.push(format!("ntf_{id}.json"));
        }
        notification(
            &t,
            &mut want,
            ("u1", &id),
            body.as_bytes(),
            delivered,
            acked,
        );
    }
    let r = t.run("tmpa-archive", &["--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let report = r.json();
    let archived = report["counts"]["notifications_archived"].as_u64().unwrap();
    assert_eq!(archived as usize, 20_000 - stay.len());
    assert_eq!(live(t.root(), "u1", "inbox"), stay);
    let files = archives(t.root(), "u1");
    assert_eq!(files.len(), archived.div_ceil(4096) as usize, "{files:?}");
    let listed = Command::new("tar")
        .arg("tzf")
        .arg(&files[0])
        .output()
        .expect("tar");
    assert!(String::from_utf8_lossy(&listed.stdout).starts_with("index.json\ninbox/ntf_"));
    nothing_lost(t.root(), &want);
    let in_archives = Root::open(t.root())
        .unwrap()
        .list_notifications(&UserId::new("u1").unwrap())
        .unwrap()
        .iter()
        .filter(|n| n.location == NotificationLocation::Archived)
        .count();
    assert_eq!(in_archives as u64, archived);
    let again = t.run("tmpa-archive", &[]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(archives(t.root(), "u1"), files);
    assert_eq!(live(t.root(), "u1", "inbox"), stay);
}

/// A small tree of two users: old acknowledged, old unacknowledged, recently acknowledged,
/// an id that needs a long name in tar and one with odd characters.
fn small_tree() -> (Tree, Want) {
    let t = Tree::new();
    let mut want = Want::new();
    let long = "L".repeat(200);
    for user in ["alice", "bob"] {
        for (id, acked) in [
            ("1", Some(DAY * 200)),
            ("2", Some(DAY * 120)),
            ("new", Some(DAY)),
            ("unread", None),
            ("sp ace\\ \u{e9}\n", Some(DAY * 100)),
            (long.as_str(), Some(DAY * 300)),
        ] {
            let body = format!(r#"{{"for":"{user}","id":{id:?}}}"#);
            notification(&t, &mut want, (user, id), body.as_bytes(), DAY * 365, acked);
        }
    }
    (t, want)
}

/// Old acknowledged notifications leave the inbox with their acks, the rest stay; the
/// receipt names each inbox file and ack with the archive that holds it.
#[test]
fn archives_old_acknowledged_only_and_receipts_both_files() {
    let (t, want) = small_tree();
    let r = t.run("tmpa-archive", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for user in ["alice", "bob"] {
        assert_eq!(
            live(t.root(), user, "inbox"),
            ["ntf_new.json", "ntf_unread.json"]
        );
        assert_eq!(live(t.root(), user, "ack"), ["ntf_new.ack"]);
        assert_eq!(archives(t.root(), user).len(), 1);
    }
    nothing_lost(t.root(), &want);
    let lines = tmpa_tests::receipt_lines(t.root(), "archive_history");
    assert_eq!(lines.len(), 2 * 2 * 4, "{lines:?}");
    for l in &lines {
        assert_eq!(l["verified_by"], "notification_archive", "{l}");
        assert_eq!(l["notifications"], 4, "{l}");
        assert!(
            l["held_by"].as_str().unwrap().contains("/archive/acked-4-"),
            "{l}"
        );
    }
}

/// A dry run changes nothing and lists what a real run would archive; its saved plan,
/// applied, archives exactly that.
#[test]
fn dry_run_and_plan() {
    let (t, want) = small_tree();
    let before = t.snapshot();
    let plan = t.root().join(".tmpa/plan.json");
    let plan_arg = plan.to_str().unwrap();
    let dry = t.run("tmpa-archive", &["--dry-run", "--save-plan", plan_arg]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(
        dry.stdout
            .contains("would archive 4 notifications of alice"),
        "{}",
        dry.stdout
    );
    assert_eq!(before, t.snapshot(), "a dry run changed the tree");
    let applied = t.run("tmpa-archive", &["--apply-plan", plan_arg]);
    assert_eq!(applied.code, 0, "{}", applied.stderr);
    assert_eq!(
        live(t.root(), "alice", "inbox"),
        ["ntf_new.json", "ntf_unread.json"]
    );
    nothing_lost(t.root(), &want);
}

/// `--no-delete` (the rollout step between a dry run and real runs) writes and verifies
/// the archives and deletes nothing: every inbox file and ack stays, and the run reports
/// no deletion; the next real run deletes them as already archived.
#[test]
fn no_delete_writes_archives_and_deletes_nothing() {
    let (t, want) = small_tree();
    let r = t.run("tmpa-archive", &["--no-delete", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let counts = &r.json()["counts"];
    assert_eq!(counts["deleted"], 0, "{counts}");
    assert_eq!(counts["notifications_archived"], 8, "{counts}");
    for user in ["alice", "bob"] {
        assert_eq!(live(t.root(), user, "inbox").len(), 6, "{user}");
        assert_eq!(live(t.root(), user, "ack").len(), 5, "{user}");
        assert_eq!(archives(t.root(), user).len(), 1, "{user}");
    }
    assert!(tmpa_tests::receipt_lines(t.root(), "archive_history").is_empty());
    nothing_lost(t.root(), &want);
    let real = t.run("tmpa-archive", &["--json"]);
    assert_eq!(real.code, 0, "{}", real.stderr);
    assert_eq!(real.json()["counts"]["deleted"], 16);
    assert_eq!(
        live(t.root(), "alice", "inbox"),
        ["ntf_new.json", "ntf_unread.json"]
    );
    nothing_lost(t.root(), &want);
}

/// An old ack whose notification is gone is kept and reported (exit 1); an ack whose
/// notification an archive holds with exactly that ack (a run stopped between the two
/// deletions) is completed.
#[test]
fn orphan_ack_is_kept_and_a_leftover_ack_completed() {
    let (t, want) = small_tree();
    let orphan = t.file("notifications/alice/ack/ntf_gone.ack", b"{}");
    age(&orphan, DAY * 200);
    let ack1 = t.root().join("notifications/bob/ack/ntf_1.ack");
    let saved = fs::read(&ack1).unwrap();
    let first = t.run("tmpa-archive", &[]);
    assert_eq!(first.code, 1, "{}", first.stdout);
    assert!(
        first
            .stdout
            .contains("ntf_gone.ack: an ack without its notification"),
        "{}",
        first.stdout
    );
    assert!(orphan.exists());
    // bob's ack of 1 comes back as a stopped run would leave it.
    fs::write(&ack1, &saved).unwrap();
    age(&ack1, DAY * 200);
    let second = t.run("tmpa-archive", &["--json"]);
    // The orphan was reported once: this run counts it and exits 0.
    assert_eq!(second.code, 0, "{second:?}");
    let counts = &second.json()["counts"];
    assert_eq!(counts["acks_completed"], 1, "{counts}");
    assert_eq!(counts["orphan_acks"], 0, "{counts}");
    assert_eq!(counts["orphan_acks_known"], 1, "{counts}");
    assert!(!ack1.exists());
    assert!(orphan.exists());
    nothing_lost(t.root(), &want);
    // An orphan rewritten (another ack at that name) is another one: reported again.
    fs::write(&orphan, b"{\"again\":1}").unwrap();
    age(&orphan, DAY * 200);
    let third = t.run("tmpa-archive", &[]);
    assert_eq!(third.code, 1, "{third:?}");
    assert!(third.stdout.contains("ntf_gone.ack"), "{}", third.stdout);
}

/// A plan applied after one of its notifications was written again (the backend's own
/// temporary and rename): the run names that notification's file; the rest of its batch
/// is kept too (the plan holds them in an archive that would now be another), and no
/// archive is written that no deletion relies on. Other users' batches go as planned;
/// the next run archives the kept ones, nothing lost.
#[test]
fn a_plan_applied_after_a_notification_changed_names_it_and_writes_no_orphan_archive() {
    let (t, mut want) = small_tree();
    let plan = t.root().with_file_name("notify-plan.json");
    let plan_arg = plan.to_str().unwrap();
    let dry = t.run("tmpa-archive", &["--dry-run", "--save-plan", plan_arg]);
    assert_eq!(dry.code, 0, "{dry:?}");
    let inbox = t.root().join("notifications/alice/inbox");
    let rewritten = br#"{"for":"alice","id":"2","edited":true}"#;
    fs::write(inbox.join("ntf_2.json.tmp"), rewritten).unwrap();
    fs::rename(inbox.join("ntf_2.json.tmp"), inbox.join("ntf_2.json")).unwrap();
    want.insert(("alice".into(), "2".into()), (rewritten.to_vec(), true));
    let applied = t.run("tmpa-archive", &["--apply-plan", plan_arg]);
    let _ = fs::remove_file(&plan);
    assert_eq!(applied.code, 1, "{applied:?}");
    let named = format!(
        "problem: {}: changed since the plan was made",
        inbox.join("ntf_2.json").display()
    );
    assert!(applied.stdout.contains(&named), "{}", applied.stdout);
    assert!(
        !applied.stdout.contains("rewritten after it was read")
            && !applied.stdout.contains("in the plan but not deleted"),
        "{}",
        applied.stdout
    );
    assert!(
        archives(t.root(), "alice").is_empty(),
        "an archive no deletion relies on: {:?}",
        archives(t.root(), "alice")
    );
    assert_eq!(live(t.root(), "alice", "inbox").len(), 6);
    assert_eq!(live(t.root(), "alice", "ack").len(), 5);
    assert_eq!(archives(t.root(), "bob").len(), 1);
    assert_eq!(
        live(t.root(), "bob", "inbox"),
        ["ntf_new.json", "ntf_unread.json"]
    );
    nothing_lost(t.root(), &want);
    let next = t.run("tmpa-archive", &[]);
    assert_eq!(next.code, 0, "{next:?}");
    assert_eq!(archives(t.root(), "alice").len(), 1);
    assert_eq!(
        live(t.root(), "alice", "inbox"),
        ["ntf_new.json", "ntf_unread.json"]
    );
    nothing_lost(t.root(), &want);
}

/// An immutable `ack/` (`chattr +i`): the notifications are archived and leave the
/// inbox, but their acks cannot be deleted: each is named, and the run exits 4 (a stale
/// ack would mark a notification delivered again under its id as read). Once `ack/` is
/// writable again, the next run deletes them on the strength of the archive (exit 0).
#[test]
fn an_immutable_ack_directory_is_reported_and_fails_the_run() {
    let (t, want) = small_tree();
    let acks = t.root().join("notifications/alice/ack");
    let Some(guard) = tmpa_tests::prerequisite(
        tmpa_tests::Immutable::set(&acks),
        "chattr +i not available (needs root and a supporting fs)",
    ) else {
        return;
    };
    let r = t.run("tmpa-archive", &["--json"]);
    assert_eq!(r.code, 4, "{r:?}");
    let report = r.json();
    assert_eq!(report["counts"]["deletions_failed"], 4, "{report}");
    let problems: Vec<String> = report["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| p.to_string())
        .collect();
    for id in ["1", "2"] {
        assert!(
            problems
                .iter()
                .any(|p| p.contains(&format!("ntf_{id}.ack")) && p.contains("cannot delete")),
            "{problems:?}"
        );
    }
    assert_eq!(
        live(t.root(), "alice", "inbox"),
        ["ntf_new.json", "ntf_unread.json"]
    );
    assert_eq!(live(t.root(), "alice", "ack").len(), 5);
    assert_eq!(live(t.root(), "bob", "ack"), ["ntf_new.ack"]);
    drop(guard);
    let next = t.run("tmpa-archive", &["--json"]);
    assert_eq!(next.code, 0, "{next:?}");
    assert_eq!(
        next.json()["counts"]["acks_completed"],
        4,
        "{}",
        next.stdout
    );
    assert_eq!(live(t.root(), "alice", "ack"), ["ntf_new.ack"]);
    nothing_lost(t.root(), &want);
}

/// Orphan acks beside 1000 archives: the first run reads each archive's index once
/// (only the index: the first member) and reports the orphans; later runs know them and
/// read no archive at all (counted under strace), exit 0.
#[test]
fn orphan_acks_beside_a_thousand_archives_are_searched_once() {
    let Some(()) = tmpa_tests::prerequisite(tmpa_tests::strace_works(), "strace") else {
        return;
    };
    let t = Tree::new();
    let dir = t.root().join("notifications/u/archive");
    fs::create_dir_all(&dir).unwrap();
    for i in 0..1000 {
        let n = tmpa_core::maintenance::ArchivedNotification {
            id: NotificationId::new(format!("a{i}")).unwrap(),
            body: format!(r#"{{"n":{i}}}"#).into_bytes(),
            mtime_ns: 1_000_000_000,
            ack: b"{}".to_vec(),
            acked_ns: 1_000_000_000,
        };
        let batch = [n];
        let name = tmpa_core::maintenance::archive_name(&batch);
        let bytes = tmpa_core::maintenance::write_archive(Vec::new(), &batch, 1).unwrap();
        fs::write(dir.join(name), bytes).unwrap();
    }
    for id in ["x", "y", "z"] {
        let p = t.file(format!("notifications/u/ack/ntf_{id}.ack"), b"{}");
        age(&p, DAY * 200);
    }
    let opens = |json: &str| -> (Run, usize) {
        let trace = t.root().with_file_name("orphans.strace");
        let out = Command::new("strace")
            .args(["-f", "-qq", "-e", "trace=openat,openat2", "-o"])
            .arg(&trace)
            .args(tmpa_tests::program_args("tmpa-archive"))
            .arg("--root")
            .arg(t.root())
            .arg(json)
            .output()
            .expect("strace");
        let text = fs::read_to_string(&trace).unwrap_or_default();
        let _ = fs::remove_file(&trace);
        let n = text
            .lines()
            .filter(|l| l.contains("acked-1-") && !l.contains("ENOENT"))
            .count();
        (out.into(), n)
    };
    let (first, read) = opens("--json");
    assert_eq!(first.code, 1, "{first:?}");
    assert_eq!(first.json()["counts"]["orphan_acks"], 3, "{}", first.stdout);
    assert_eq!(read, 1000, "each archive's index read once");
    let (second, read) = opens("--json");
    assert_eq!(second.code, 0, "{second:?}");
    assert_eq!(
        second.json()["counts"]["orphan_acks_known"],
        3,
        "{}",
        second.stdout
    );
    assert_eq!(read, 0, "a known orphan costs no archive read");
}

/// Runs tmpa-archive on `root` under strace with every `renameat2` delayed by `us`.
fn stretched(root: &Path, us: u64) -> std::process::Child {
    Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e"])
        .arg(format!("inject=renameat2:delay_enter={us}"))
        .args(tmpa_tests::program_args("tmpa-archive"))
        .env_remove("TMPA_ROOT")
        .arg("--root")
        .arg(root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("strace")
}

/// While a run deletes (each move aside stretched), the backend's own code rewrites a
/// notification (tmp + rename, as before the library), the library delivers a new one and
/// acknowledges an unread one: the rewritten one is kept with its ack and reported, the
/// others untouched, nothing lost. The library refuses to deliver the rewritten id again
/// with other content (it never replaces a notification).
#[test]
fn delivered_and_acknowledged_during_the_run() {
    let Some(()) =
        tmpa_tests::prerequisite(tmpa_tests::strace_works(), "strace cannot inject here")
    else {
        return;
    };
    let (t, mut want) = small_tree();
    let mut child = stretched(t.root(), 300_000);
    tmpa_tests::wait_for_receipt_line(&mut child, t.root(), "archive_history");
    let r = Root::open(t.root()).unwrap();
    let alice = UserId::new("alice").unwrap();
    let inbox = t.root().join("notifications/alice/inbox");
    let rewritten = serde_json::to_vec(&serde_json::json!({"again": "2"})).unwrap();
    fs::write(inbox.join("ntf_2.json.tmp"), &rewritten).unwrap();
    fs::rename(inbox.join("ntf_2.json.tmp"), inbox.join("ntf_2.json")).unwrap();
    want.insert(("alice".into(), "2".into()), (rewritten, true));
    let body = serde_json::json!({"again": "new2"});
    r.deliver(&alice, &NotificationId::new("new2").unwrap(), &body)
        .unwrap();
    want.insert(
        ("alice".into(), "new2".into()),
        (serde_json::to_vec(&body).unwrap(), false),
    );
    r.ack(&alice, &NotificationId::new("unread").unwrap())
        .unwrap();
    want.get_mut(&("alice".into(), "unread".into())).unwrap().1 = true;
    let e = r
        .deliver(
            &alice,
            &NotificationId::new("2").unwrap(),
            &serde_json::json!({"third": 3}),
        )
        .unwrap_err();
    assert_eq!(e.io_kind(), std::io::ErrorKind::AlreadyExists, "{e}");
    let run: Run = child.wait_with_output().expect("wait").into();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("changed ") && run.stdout.contains("ntf_2.json"),
        "{}",
        run.stdout
    );
    assert!(t.root().join("notifications/alice/ack/ntf_2.ack").exists());
    nothing_lost(t.root(), &want);
}

/// A SIGKILL at every call of each system call that matters (the archive's write, its
/// rename and fsync, the delete step's renameat2 and unlinkat): after every kill nothing
/// is lost, and the next run finishes (exit 0, only the young and unread left live, the
/// quarantine empty).
#[test]
fn kill_at_every_syscall_loses_nothing() {
    let Some(()) =
        tmpa_tests::prerequisite(tmpa_tests::strace_works(), "strace cannot inject here")
    else {
        return;
    };
    let mut kills = 0;
    for syscall in ["write", "renameat2", "fsync", "fdatasync", "unlinkat"] {
        for n in 1..=300 {
            let (t, want) = small_tree();
            let r: Run = Command::new("strace")
                .args(["-f", "-qq", "-o", "/dev/null", "-e"])
                .arg(format!("inject={syscall}:signal=SIGKILL:when={n}"))
                .args(tmpa_tests::program_args("tmpa-archive"))
                .env_remove("TMPA_ROOT")
                .arg("--root")
                .arg(t.root())
                .output()
                .expect("strace")
                .into();
            let killed = r.code != 0;
            nothing_lost(t.root(), &want);
            let again = t.run("tmpa-archive", &[]);
            assert_eq!(again.code, 0, "after a kill at {syscall} #{n}: {again:?}");
            nothing_lost(t.root(), &want);
            for user in ["alice", "bob"] {
                assert_eq!(
                    live(t.root(), user, "inbox"),
                    ["ntf_new.json", "ntf_unread.json"],
                    "{syscall} #{n}"
                );
                assert_eq!(
                    live(t.root(), user, "ack"),
                    ["ntf_new.ack"],
                    "{syscall} #{n}"
                );
            }
            let q = t.root().join(".tmpa/quarantine/in-flight");
            let left = Command::new("find")
                .arg(&q)
                .args(["-type", "f"])
                .output()
                .unwrap();
            assert!(left.stdout.is_empty(), "{syscall} #{n}: {left:?}");
            if !killed {
                break;
            }
            kills += 1;
        }
    }
    assert!(kills > 20, "only {kills} kills landed");
}

/// The binary takes --notifications-older-than and refuses a bad value (exit 2).
#[test]
fn notifications_older_than_is_parsed() {
    let (t, _) = small_tree();
    let r = t.run(
        "tmpa-archive",
        &["--notifications-older-than", "1000d", "--json"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["counts"]["notifications_archived"], 0);
    let bad = bin("tmpa-archive")
        .args(["--notifications-older-than", "soon"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

/// After an archival, the patrol's inbox check counts only the live inbox entries and
/// reports the archived total, from the archives' names.
#[test]
fn patrol_counts_live_inbox_files_and_reports_the_archived_total() {
    let (t, _) = small_tree();
    assert_eq!(t.run("tmpa-archive", &[]).code, 0);
    let r = t.run("tmpa-patrol", &["--json"]);
    let doc = r.json();
    let inbox = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "inbox_files")
        .unwrap();
    assert_eq!(inbox["value"], 2, "{inbox}");
    let detail = inbox["detail"].as_str().unwrap();
    assert!(
        detail.ends_with("; 8 acknowledged notifications archived in 2 archives (not counted)"),
        "{detail}"
    );
}
