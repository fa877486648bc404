//! Off the local disk: the delete step, the library's writes and the snapshot's publish on
//! a real FUSE file system (bindfs, which like NFS and SMB answers
//! `renameat2(RENAME_NOREPLACE)` with `EINVAL`), and on a local disk where that `EINVAL`
//! is injected from outside with strace. A backend that writes in the instant before a
//! delete (the instant stretched with `delay_enter`) never loses its write; a kill at any
//! step of the fallback leaves everything recoverable; tmpa-tmpclean never deletes a
//! temporary that a writer underneath the mount holds.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tmpa_tests::fuse::Bindfs;
use tmpa_tests::{Run, Tree, age, events_in_days, program_args, strace_works};

const D1: &str = "2026-11-01";
const OLD: Duration = Duration::from_secs(120 * 86_400);
/// How long the stretched system call waits, in microseconds.
const STRETCH_US: u64 = 500_000;
/// When the writer acts after the receipt line appeared: well inside the stretch.
const WRITER_AFTER: Duration = Duration::from_millis(100);

/// Where the tree is.
#[derive(Clone, Copy, Debug)]
enum On {
    /// Through a bindfs mount of the tree.
    Fuse,
    /// On the local disk, every `renameat2` answering `EINVAL` as on NFS.
    Einval,
}

const BOTH: [On; 2] = [On::Fuse, On::Einval];

/// A tree at `{base}/app`, and how the programs reach it (the mount covers `{base}`, so
/// a snapshot can go beside the tree on the same file system).
struct Place {
    on: On,
    base: tempfile::TempDir,
    _mount: Option<Bindfs>,
    root: PathBuf,
}

impl Place {
    /// `None` (the test returns) when bindfs cannot be had and skipping is allowed.
    fn new(on: On) -> Option<Place> {
        assert!(strace_works(), "strace cannot inject here");
        let base = tempfile::tempdir().expect("tempdir");
        for d in ["notifications", "token_stats", "chat_history"] {
            fs::create_dir_all(base.path().join("app").join(d)).expect("mkdir");
        }
        let fuse = match on {
            On::Fuse => Some(Bindfs::mount(base.path())?),
            On::Einval => None,
        };
        let root = fuse.as_ref().map_or(base.path(), Bindfs::path).join("app");
        Some(Place {
            on,
            base,
            _mount: fuse,
            root,
        })
    }

    /// The root as the programs and the backend see it.
    fn root(&self) -> &Path {
        &self.root
    }

    /// The root's real directory, underneath the mount.
    fn underneath(&self) -> PathBuf {
        self.base.path().join("app")
    }

    /// Writes `rel` below the root as the backend does (through the mount).
    fn file(&self, rel: impl AsRef<Path>, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.root().join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir -p");
        fs::write(&p, bytes).expect("write");
        p
    }

    /// `program --root {root} args` under strace with `injects` (on the local disk, also
    /// `renameat2` answering `EINVAL`); tmpclean is told that every writer uses this mount.
    fn command(&self, program: &str, injects: &[String], args: &[&str]) -> Command {
        let mut cmd = Command::new("strace");
        cmd.args(["-f", "-qq", "-o", "/dev/null"]);
        if matches!(self.on, On::Einval) {
            cmd.args(["-e", "inject=renameat2:error=EINVAL"]);
        }
        for i in injects {
            cmd.arg("-e").arg(format!("inject={i}"));
        }
        cmd.args(program_args(program))
            .env_remove("TMPA_ROOT")
            .env_remove("TMPA_WRITERS_USE_THIS_MOUNT")
            .arg("--root")
            .arg(self.root())
            .args(args);
        if program == "tmpa-tmpclean" {
            cmd.arg("--writers-use-this-mount");
        }
        cmd
    }

    fn run(&self, program: &str, args: &[&str]) -> Run {
        let r: Run = self
            .command(program, &[], args)
            .output()
            .expect("strace")
            .into();
        assert!(!r.stderr.contains("panicked"), "{r:?}");
        r
    }

    /// Runs `program` with `syscall` stretched; `write` acts in the stretch, once the run
    /// has written its receipt line (it is then between its receipt and its deletions).
    fn in_the_gap(
        &self,
        program: &str,
        task: &str,
        args: &[&str],
        syscall: &str,
        write: impl FnOnce(),
    ) -> Run {
        let mut child: Child = self
            .command(
                program,
                &[format!("{syscall}:delay_enter={STRETCH_US}")],
                args,
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("strace");
        tmpa_tests::wait_for_receipt_line(&mut child, self.root(), task);
        std::thread::sleep(WRITER_AFTER);
        write();
        let r: Run = child.wait_with_output().expect("wait").into();
        assert!(!r.stderr.contains("panicked"), "{r:?}");
        assert!(matches!(r.code, 0 | 1), "{:?} {syscall}: {r:?}", self.on);
        r
    }

    /// Every file below `.tmpa/quarantine`.
    fn quarantined(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.root().join(".tmpa/quarantine"), &mut out);
        out.sort();
        out
    }
}

fn walk(d: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(d) else { return };
    for e in rd.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&e.path(), out);
        } else {
            out.push(e.path());
        }
    }
}

/// The stretched calls: the move aside (a plain `renameat` where `RENAME_NOREPLACE` is
/// refused) and the unlink in the quarantine.
const GAPS: [&str; 2] = ["renameat", "unlinkat"];

/// Runs `race` on a fresh tree in each place (bindfs, `EINVAL` injected) with each gap
/// stretched in turn, `what` naming both; afterwards nothing may be left in the quarantine.
fn in_every_place_and_gap(race: impl Fn(&Place, &str, &str)) {
    for on in BOTH {
        for gap in GAPS {
            let Some(p) = Place::new(on) else { return };
            let what = format!("{on:?} {gap}");
            race(&p, gap, &what);
            assert!(p.quarantined().is_empty(), "{what}: {:?}", p.quarantined());
        }
    }
}

/// The backend rewrites an event of a past day in the instant compaction deletes its
/// loose file: the rewritten event is live afterwards, and the next run reports the
/// conflict instead of dropping either version.
#[test]
fn an_event_rewritten_in_the_gap_is_never_deleted() {
    in_every_place_and_gap(|p, gap, what| {
        let event = |n| tmpa_tests::event_json("e1", &format!("{D1}T12:00:00Z"), "u", "m", n, n);
        let e = p.file(format!("token_stats/{D1}/evt_e1.json"), event(1));
        let rewritten = event(7);
        p.in_the_gap(
            "tmpa-compact",
            "compact_events",
            &["--day", D1],
            gap,
            || {
                tmpa_tests::save_by_rename(&e, &rewritten);
            },
        );
        let live = fs::read_to_string(&e);
        assert_eq!(live.ok().as_deref(), Some(&rewritten[..]), "{what}");
        let again = p.run("tmpa-compact", &["--day", D1]);
        assert_eq!(
            again.code, 1,
            "{what}: the conflict needs a look: {again:?}"
        );
        assert!(e.exists(), "{what}");
    });
}

/// A user resumes a 120-day-old chat in the instant its session is deleted after
/// archival: the resumed session is the live one afterwards, read through the library.
#[test]
fn a_session_resumed_in_the_gap_is_never_deleted() {
    in_every_place_and_gap(|p, gap, what| {
        let live = p.file(
            "chat_history/u1/sessions/s1.json",
            r#"{"messages":["old"]}"#,
        );
        age(&live, OLD);
        p.in_the_gap("tmpa-archive", "archive_history", &[], gap, || {
            tmpa_tests::save_by_rename(&live, r#"{"messages":["old","new"]}"#);
        });
        let bytes = tmpa_core::Root::open(p.root())
            .expect("root")
            .read_session(&"u1".parse().unwrap(), &"s1".parse().unwrap())
            .expect("read");
        assert_eq!(bytes, br#"{"messages":["old","new"]}"#, "{what}");
    });
}

/// The backend re-delivers an archived, acknowledged notification in the instant its
/// inbox file is deleted: the new inbox file is live afterwards.
#[test]
fn a_notification_redelivered_in_the_gap_is_never_deleted() {
    in_every_place_and_gap(|p, gap, what| {
        let inbox = p.file("notifications/u1/inbox/ntf_1.json", r#"{"v":1}"#);
        age(&inbox, OLD);
        let ack = p.file("notifications/u1/ack/ntf_1.ack", r#"{"acked_at":"then"}"#);
        age(&ack, OLD);
        p.in_the_gap("tmpa-archive", "archive_history", &[], gap, || {
            tmpa_tests::save_by_rename(&inbox, r#"{"v":2}"#);
        });
        let live = fs::read_to_string(&inbox);
        assert_eq!(live.ok().as_deref(), Some(r#"{"v":2}"#), "{what}");
    });
}

/// A writer that reuses a fixed temporary name reopens a stale temporary while tmpclean
/// deletes it: its save succeeds and its file is live.
#[test]
fn a_temporary_reopened_in_the_gap_is_never_lost() {
    in_every_place_and_gap(|p, gap, what| {
        let fin = p.file("notifications/u1/inbox/ntf_1.json", "{}");
        p.file("notifications/u1/inbox/ntf_1.json.tmp", "{\"stale\"");
        let mut saved = None;
        let args = ["--older-than", "1m"];
        p.in_the_gap("tmpa-tmpclean", "tmp_cleanup", &args, gap, || {
            saved = Some(tmpa_tests::save_through_fixed_temporary(&fin));
        });
        let w = saved.expect("the writer ran");
        let live = fs::read_to_string(&fin).ok();
        if w.status.success() {
            assert_eq!(live.as_deref(), Some(r#"{"saved":true}"#), "{what}");
        } else {
            // A path-based FUSE daemon (bindfs, sshfs) forgets a file that was moved
            // aside and linked back while an open of it waited for the lease: that open
            // fails (ENOENT) and the writer sees the error; it wrote nothing yet, and
            // nothing is lost. Only there.
            assert!(matches!(p.on, On::Fuse), "{what}: {w:?}");
            let err = String::from_utf8_lossy(&w.stderr);
            assert!(err.contains("FileNotFoundError"), "{what}: {err}");
            assert_eq!(live.as_deref(), Some("{}"), "{what}");
        }
    });
}

/// The three programs' work, small: loose events of a past day, an old session, an old
/// acknowledged notification, a stale temporary.
fn small_tree(p: &Place) {
    for i in 0..3 {
        p.file(
            format!("token_stats/{D1}/evt_e{i}.json"),
            tmpa_tests::event_json(
                &format!("e{i}"),
                &format!("{D1}T12:00:0{i}Z"),
                "u",
                "m",
                i,
                1,
            ),
        );
    }
    age(
        &p.file("chat_history/u1/sessions/s1.json", r#"{"s":1}"#),
        OLD,
    );
    age(
        &p.file("notifications/u1/inbox/ntf_1.json", r#"{"n":1}"#),
        OLD,
    );
    age(&p.file("notifications/u1/ack/ntf_1.ack", "{}"), OLD);
    p.file("notifications/u1/inbox/ntf_2.json", "{}");
    p.file("notifications/u1/inbox/ntf_2.json.tmp", "{");
}

/// Nothing the backend wrote is lost: every event once, the session and the notification
/// live or archived with their bytes, the final file of the temporary.
fn nothing_lost(p: &Place, what: &str) {
    assert_eq!(events_in_days(p.root(), &[D1]), 3, "{what}");
    let rt = tmpa_core::Root::open(p.root()).expect("root");
    let u1 = "u1".parse().unwrap();
    let s = rt.read_session(&u1, &"s1".parse().unwrap()).expect(what);
    assert_eq!(s, br#"{"s":1}"#, "{what}");
    let n = rt
        .read_notification(&u1, &"1".parse().unwrap())
        .expect(what);
    assert_eq!(n, br#"{"n":1}"#, "{what}");
    assert!(
        p.root().join("notifications/u1/inbox/ntf_2.json").exists(),
        "{what}"
    );
}

/// A SIGKILL at every call of the fallback's system calls (the plain rename aside, the
/// link back, the unlinks) in each deleting program: each file is at its name or in the
/// quarantine's in-flight area, nothing is lost, and the next run finishes the job and
/// leaves the quarantine empty.
#[test]
fn kills_at_every_step_of_the_fallback_lose_nothing() {
    let programs: [(&str, &[&str]); 3] = [
        ("tmpa-compact", &["--day", D1]),
        ("tmpa-archive", &[]),
        ("tmpa-tmpclean", &["--older-than", "1m"]),
    ];
    for on in BOTH {
        let mut kills = 0;
        for (program, args) in programs {
            for syscall in ["renameat", "linkat", "unlinkat"] {
                for n in 1..=100 {
                    let Some(p) = Place::new(on) else { return };
                    small_tree(&p);
                    let what = format!("{on:?} {program} {syscall} #{n}");
                    let r: Run = p
                        .command(
                            program,
                            &[format!("{syscall}:signal=SIGKILL:when={n}")],
                            args,
                        )
                        .output()
                        .expect("strace")
                        .into();
                    nothing_lost(&p, &what);
                    for q in p.quarantined() {
                        assert!(
                            q.to_string_lossy().contains("/quarantine/in-flight/"),
                            "{what}: {q:?}"
                        );
                    }
                    let again = p.run(program, args);
                    assert_eq!(again.code, 0, "{what}: {again:?}");
                    nothing_lost(&p, &what);
                    assert!(p.quarantined().is_empty(), "{what}: {:?}", p.quarantined());
                    if matches!(r.code, 0 | 1) {
                        break;
                    }
                    kills += 1;
                }
            }
        }
        assert!(kills > 10, "{on:?}: only {kills} kills landed");
    }
    tmpa_tests::faketime_leftovers_removed();
}

/// Every call of the library a backend makes works on the FUSE mount and with
/// `RENAME_NOREPLACE` refused, and a recorded event is never replaced by another under
/// its id, however close two writers come (eight threads, each its own content: exactly
/// one wins).
#[test]
fn the_library_holds_off_the_local_disk() {
    for on in BOTH {
        let Some(p) = Place::new(on) else { return };
        let empty = p.root().join("lib");
        fs::create_dir(&empty).expect("mkdir");
        let mut cmd = Command::new("strace");
        cmd.args(["-f", "-qq", "-o", "/dev/null"]);
        if matches!(on, On::Einval) {
            cmd.args(["-e", "inject=renameat2:error=EINVAL"]);
        }
        let r: Run = cmd
            .args(program_args("tmpa-libcalls"))
            .arg(&empty)
            .output()
            .expect("tmpa-libcalls")
            .into();
        assert_eq!(r.code, 0, "{on:?}: {r:?}");
    }
    let Some(p) = Place::new(On::Fuse) else {
        return;
    };
    let root = tmpa_core::Root::open(p.root()).expect("root");
    for round in 0..20 {
        let id = format!("race{round}");
        let wins: Vec<bool> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|k| {
                    let (root, id) = (&root, &id);
                    s.spawn(move || {
                        let json =
                            tmpa_tests::event_json(id, &format!("{D1}T12:00:00Z"), "u", "m", k, 1);
                        let e = tmpa_core::Event::from_json(json.as_bytes()).expect("event");
                        match root.record_event(&e) {
                            Ok(_) => true,
                            Err(tmpa_core::Error::Conflict { .. }) => false,
                            Err(other) => panic!("{other}"),
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        assert_eq!(
            wins.iter().filter(|w| **w).count(),
            1,
            "round {round}: {wins:?}"
        );
        let dir = p.root().join(format!("token_stats/{D1}"));
        let left: Vec<_> = fs::read_dir(&dir)
            .expect("day")
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().contains(&format!("evt_{id}.json")))
            .collect();
        assert_eq!(left.len(), 1, "round {round}: no temporary left: {left:?}");
    }
}

/// A temporary that a writer underneath the FUSE mount holds open (on the backing
/// directory, where the mount's kernel side cannot see it) is never deleted: off a local
/// disk a lease is evidence, not proof, and the temporary is kept as unproven unless the
/// operator states that every writer uses the mount; with that statement, a temporary no
/// one holds is deleted.
#[test]
fn tmpclean_never_deletes_what_a_writer_underneath_holds() {
    let Some(p) = Place::new(On::Fuse) else {
        return;
    };
    p.file("notifications/u1/inbox/ntf_1.json", "{}");
    p.file("notifications/u1/inbox/ntf_1.json.tmp", "{\"partial\"");
    let underneath = p.underneath().join("notifications/u1/inbox/ntf_1.json.tmp");
    let mut holder = Command::new("python3")
        .args([
            "-c",
            "import sys, time\nf = open(sys.argv[1], 'a')\nprint('open', flush=True)\ntime.sleep(60)",
        ])
        .arg(&underneath)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().expect("stdout")),
        &mut line,
    )
    .expect("the holder's line");
    let r: Run = tmpa_tests::clock_ahead(&mut tmpa_tests::bin("tmpa-tmpclean"))
        .env_remove("TMPA_WRITERS_USE_THIS_MOUNT")
        .arg("--root")
        .arg(p.root())
        .args(["--older-than", "1m"])
        .output()
        .expect("tmpclean")
        .into();
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(r.code, 1, "{r:?}");
    assert!(underneath.exists(), "deleted under its writer: {r:?}");
    assert!(r.stdout.contains("unproven"), "{}", r.stdout);
    assert!(
        r.stdout.contains("--writers-use-this-mount"),
        "{}",
        r.stdout
    );
    // The operator's statement, with no writer left: the lease is proof.
    let r: Run = tmpa_tests::clock_ahead(&mut tmpa_tests::bin("tmpa-tmpclean"))
        .env("TMPA_WRITERS_USE_THIS_MOUNT", "yes")
        .arg("--root")
        .arg(p.root())
        .args(["--older-than", "1m"])
        .output()
        .expect("tmpclean")
        .into();
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!underneath.exists(), "{r:?}");
    tmpa_tests::faketime_leftovers_removed();
}

/// tmpa-snapshot publishes on a file system without `RENAME_NOREPLACE` (it claims the
/// name with a new directory, then renames the build over that empty directory), and
/// never replaces a directory that is there.
#[test]
fn snapshots_publish_off_the_local_disk() {
    for on in BOTH {
        let Some(p) = Place::new(on) else { return };
        small_tree(&p);
        let to = p.root().with_file_name("snap");
        let r: Run = p
            .command("tmpa-snapshot", &[], &["--to", to.to_str().expect("utf-8")])
            .output()
            .expect("snapshot")
            .into();
        assert_eq!(r.code, 0, "{on:?}: {r:?}");
        assert!(to.join(".tmpa/snapshot.json").is_file(), "{on:?}");
        assert!(!p.root().with_file_name(".snap.partial").exists(), "{on:?}");
        let again: Run = p
            .command("tmpa-snapshot", &[], &["--to", to.to_str().expect("utf-8")])
            .output()
            .expect("snapshot")
            .into();
        assert_eq!(
            again.code, 2,
            "{on:?}: an existing --to is refused: {again:?}"
        );
        assert!(to.join(".tmpa/snapshot.json").is_file(), "{on:?}");
    }
}

/// The patrol names the root's file system and, off the local disk, what the programs do
/// there (a rename aside, a hard link back) and what tmpclean needs.
#[test]
fn the_patrol_reports_the_file_system() {
    let Some(p) = Place::new(On::Fuse) else {
        return;
    };
    let r = tmpa_tests::bin("tmpa-patrol")
        .arg("--root")
        .arg(p.root())
        .arg("--json")
        .output()
        .expect("patrol");
    let doc: serde_json::Value = serde_json::from_slice(&r.stdout).expect("json");
    let check = doc["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "file_system")
        .cloned()
        .expect("file_system check");
    assert_eq!(check["status"], "ok", "{check}");
    let detail = check["detail"].as_str().expect("detail");
    assert!(
        detail.starts_with("fuse (fuse): no RENAME_NOREPLACE"),
        "{detail}"
    );
    assert!(detail.contains("--writers-use-this-mount"), "{detail}");
    assert_eq!(doc["file_system"]["moves"]["hard_links"], true, "{doc}");
    let leftovers: Vec<_> = fs::read_dir(p.root().join(".tmpa/patrol"))
        .expect("patrol dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".probe-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "the probe leaves nothing: {leftovers:?}"
    );
    let local = Tree::new();
    let r = local.run("tmpa-patrol", &["--json"]);
    let doc = r.json();
    assert_eq!(doc["file_system"]["family"], "local", "{doc}");
}
