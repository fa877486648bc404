//! tmpa-core on hostile ground: an immutable directory or file (`chattr +i`), a full file
//! system (a 64 KiB tmpfs), symlinks and regular files where directories belong, a corrupt
//! or hijacked `_summary.json`, and names that try to leave the root. Every failure names
//! its path and leaves nothing behind: no temporary, no partial file, the old content
//! intact, nothing written outside the root.
//!
//! `chattr` and `mount` need root and a file system that supports them; a test that cannot
//! set up its scenario says so on stderr and passes without checking anything.

#![allow(
    clippy::disallowed_methods,
    reason = "tests build and break trees by path"
)]

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use tmpa_core::maintenance::SUMMARY_NAME;
use tmpa_core::{Day, Error, Event, EventId, NameKind, NotificationId, Root, SessionId, UserId};

const DAY: &str = "2026-11-01";

fn day() -> Day {
    DAY.parse().unwrap()
}

fn event(id: &str, prompt: u64) -> Event {
    Event::from_json(
        format!(
            r#"{{"id":"{id}","ts":"{DAY}T10:00:00Z","user_id":"u1","model":"m",
                "prompt_tokens":{prompt},"completion_tokens":1}}"#
        )
        .as_bytes(),
    )
    .unwrap()
}

/// `dir/root` made a TMPA root with the given data directories. Tests look at `dir` to
/// see that nothing was written outside the root.
fn root_in(dir: &Path, data_dirs: &[&str]) -> Root {
    let path = dir.join("root");
    fs::create_dir(&path).unwrap();
    for d in data_dirs {
        fs::create_dir(path.join(d)).unwrap();
    }
    Root::open(&path).unwrap()
}

/// An entry of a tree as [`snapshot`] records it.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Dir,
    File(Vec<u8>),
    Link(PathBuf),
}

/// Every entry under `dir` (symlinks not followed) with its content.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Entry> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(base).unwrap().to_path_buf();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                out.insert(rel, Entry::Link(fs::read_link(&path).unwrap()));
            } else if meta.is_dir() {
                out.insert(rel, Entry::Dir);
                walk(base, &path, out);
            } else {
                out.insert(rel, Entry::File(fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// Asserts that `e`'s message and chain name `path`.
fn assert_names(e: &Error, path: &Path) {
    let shown = path.to_str().unwrap();
    assert!(e.to_string().contains(shown), "{e} does not name {shown}");
    assert!(e.chain().contains(shown));
}

/// `chattr +i` on a path, undone (`chattr -i`) on drop, also when the test panics.
struct Immutable(PathBuf);

impl Immutable {
    /// `None` (with a message) when `chattr` is missing, not root, or unsupported here.
    fn set(path: &Path) -> Option<Immutable> {
        let ok = Command::new("chattr")
            .arg("+i")
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        support::prerequisite(
            ok,
            &format!(
                "chattr +i {} failed (needs root and ext4/xfs/btrfs)",
                path.display()
            ),
        )?;
        Some(Immutable(path.to_path_buf()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let ok = Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("WARNING: chattr -i {} failed", self.0.display());
        }
    }
}

/// A small tmpfs mounted on a directory, unmounted on drop, also when the test panics.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` (with a message) when `mount` is missing or not permitted.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        support::prerequisite(
            ok,
            &format!("cannot mount a tmpfs on {} (needs root)", dir.display()),
        )?;
        Some(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let umount = |lazy: bool| {
            let mut cmd = Command::new("umount");
            if lazy {
                cmd.arg("-l");
            }
            cmd.arg(&self.0).status().is_ok_and(|s| s.success())
        };
        if !umount(false) && !umount(true) {
            eprintln!("WARNING: could not unmount {}", self.0.display());
        }
    }
}

/// Fills the file system holding `dir` with one file, until it refuses a single byte.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = fs::File::create(&path).unwrap();
    for chunk in [4096, 512, 1] {
        while f.write_all(&vec![b'x'; chunk]).is_ok() {}
    }
    path
}

fn is_enospc(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.raw_os_error() == Some(28))
}

/// Runs `f` until it does not fail for want of space, for at most a second. A file
/// deleted here can keep its pages a moment longer: another test's `Command::spawn`
/// forks this process, and the child holds copies of every descriptor until its exec.
fn once_space_is_freed<T>(mut f: impl FnMut() -> tmpa_core::Result<T>) -> T {
    for _ in 0..50 {
        match f() {
            Err(e) if is_enospc(&e) => std::thread::sleep(std::time::Duration::from_millis(20)),
            other => return other.unwrap(),
        }
    }
    f().unwrap()
}

/// Writing into an immutable directory fails naming the path; the old file stays, no
/// temporary appears.
#[test]
fn write_into_immutable_directory_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("state.json");
    tmpa_core::write(&dest, b"old").unwrap();
    let Some(_guard) = Immutable::set(dir.path()) else {
        return;
    };
    let e = tmpa_core::write(&dest, b"new").unwrap_err();
    assert_names(&e, &dest);
    assert_eq!(e.io_kind(), std::io::ErrorKind::PermissionDenied);
    assert_eq!(names(dir.path()), ["state.json"]);
    assert_eq!(fs::read(&dest).unwrap(), b"old");
}

/// Replacing an immutable file fails at the rename, after the temporary was written: the
/// error names the path, the temporary is removed, the old content stays.
#[test]
fn replacing_immutable_file_removes_the_written_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("state.json");
    tmpa_core::write(&dest, b"old").unwrap();
    let Some(_guard) = Immutable::set(&dest) else {
        return;
    };
    let e = tmpa_core::write(&dest, &vec![b'n'; 100_000]).unwrap_err();
    assert_names(&e, &dest);
    assert_eq!(names(dir.path()), ["state.json"]);
    assert_eq!(fs::read(&dest).unwrap(), b"old");
}

/// Recording into an immutable day directory fails naming the day; nothing changes. The
/// process answers the summary from what it read, writing nothing; a process that reads
/// the day afresh (a stale cache) still answers, the failed rewrite listed as a problem.
#[test]
fn record_event_into_immutable_day_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_in(dir.path(), &["token_stats"]);
    root.record_event(&event("e1", 10)).unwrap();
    root.summary(day()).unwrap();
    root.record_event(&event("e2", 20)).unwrap(); // the cache on disk is now stale
    let day_dir = day_dir(&root, day());
    let Some(_guard) = Immutable::set(&day_dir) else {
        return;
    };
    let before = snapshot(dir.path());
    let e = root.record_event(&event("e3", 30)).unwrap_err();
    assert_names(&e, &day_dir.join("evt_e3.json"));
    let s = root.summary(day()).unwrap();
    assert!(!s.rebuilt);
    assert_eq!(s.summary.totals.prompt_tokens, 30);
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    tmpa_core::maintenance::forget_summary(&root, day()).unwrap();
    let s = root.summary(day()).unwrap();
    assert!(s.rebuilt);
    assert_eq!(s.summary.totals.prompt_tokens, 30);
    assert_eq!(s.problems.len(), 1, "{:?}", s.problems);
    assert_eq!(s.problems[0].path, day_dir.join(SUMMARY_NAME));
    assert_eq!(snapshot(dir.path()), before);
}

/// On a full file system a too-large write fails naming the path; no temporary is left
/// and the old content stays.
#[test]
fn write_on_full_file_system_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let Some(_mount) = Tmpfs::mount(&mnt, "64k") else {
        return;
    };
    let dest = mnt.join("state.json");
    tmpa_core::write(&dest, &vec![b'o'; 8192]).unwrap();
    for size in [60 * 1024, 1 << 20] {
        let e = tmpa_core::write(&dest, &vec![b'n'; size]).unwrap_err();
        assert_names(&e, &dest);
        assert!(is_enospc(&e), "{size} bytes: {}", e.chain());
        assert_eq!(names(&mnt), ["state.json"], "{size} bytes");
        assert_eq!(fs::read(&dest).unwrap(), vec![b'o'; 8192]);
    }
    // The space the failed writes took is free again: a write that fits succeeds.
    once_space_is_freed(|| tmpa_core::write(&dest, &vec![b'n'; 48 * 1024]));
    assert_eq!(names(&mnt), ["state.json"]);
}

/// On a full disk `record_event` fails naming the event file and leaves no trace; reads
/// and the summary still work (the cache rewrite failure is reported); with space again
/// the event records.
#[test]
fn record_event_on_full_disk_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let Some(_mount) = Tmpfs::mount(&mnt, "64k") else {
        return;
    };
    let root = root_in(&mnt, &["token_stats"]);
    root.record_event(&event("e1", 10)).unwrap();
    let filler = fill(&mnt);
    let day_dir = day_dir(&root, day());
    let before = snapshot(&day_dir);

    let e = root.record_event(&event("e2", 20)).unwrap_err();
    assert_names(&e, &day_dir.join("evt_e2.json"));
    assert!(is_enospc(&e), "{}", e.chain());
    assert_eq!(snapshot(&day_dir), before);

    let read = root.read_day(day()).unwrap();
    assert_eq!(read.events, vec![event("e1", 10)]);
    assert!(read.problems.is_empty());
    let s = root.summary(day()).unwrap();
    assert_eq!(s.summary.totals.prompt_tokens, 10);
    assert_eq!(s.problems.len(), 1, "{:?}", s.problems);
    assert!(
        s.problems[0].reason.contains("summary"),
        "{}",
        s.problems[0]
    );
    assert_eq!(snapshot(&day_dir), before);

    fs::remove_file(filler).unwrap();
    once_space_is_freed(|| root.record_event(&event("e2", 20)));
    assert_eq!(root.read_day(day()).unwrap().events.len(), 2);
}

/// `write_file` through a directory that is a symlink to the outside is refused and
/// writes nothing there.
#[test]
fn write_file_through_symlinked_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_in(dir.path(), &["chat_history"]);
    let decoy = dir.path().join("decoy");
    fs::create_dir(&decoy).unwrap();
    fs::create_dir(root.path().join("chat_history/u2")).unwrap();
    std::os::unix::fs::symlink(&decoy, root.path().join("chat_history/u1")).unwrap();
    std::os::unix::fs::symlink(&decoy, root.path().join("chat_history/u2/profile")).unwrap();
    let before = snapshot(dir.path());
    for (rel, link) in [
        ("chat_history/u1/profile/p.json", "chat_history/u1"),
        ("chat_history/u1/p.json", "chat_history/u1"),
        ("chat_history/u2/profile/p.json", "chat_history/u2/profile"),
    ] {
        let e = root.write_file(rel, b"{}").unwrap_err();
        assert!(matches!(e, Error::Unsafe { .. }), "{rel}: {e}");
        assert_names(&e, &root.path().join(link));
    }
    assert_eq!(snapshot(dir.path()), before);
}

/// `write_file` through a path component that is a regular file is refused; the file
/// is unchanged.
#[test]
fn write_file_through_regular_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_in(dir.path(), &["chat_history"]);
    fs::write(root.path().join("chat_history/u1"), b"not a dir").unwrap();
    let before = snapshot(dir.path());
    let e = root
        .write_file("chat_history/u1/profile/p.json", b"{}")
        .unwrap_err();
    assert!(matches!(e, Error::Unsafe { .. }), "{e}");
    assert_names(&e, &root.path().join("chat_history/u1"));
    assert_eq!(snapshot(dir.path()), before);
}

/// `write_file` refuses absolute paths and `..`, and writes nothing anywhere.
#[test]
fn write_file_refuses_paths_that_leave_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_in(dir.path(), &["chat_history"]);
    let before = snapshot(dir.path());
    let abs = dir.path().join("abs.json");
    for rel in [
        "../escape.json",
        "chat_history/../../escape.json",
        "chat_history/./x/../../../escape.json",
        abs.to_str().unwrap(),
        "",
        ".",
        "..",
    ] {
        let e = root.write_file(rel, b"{}").unwrap_err();
        assert!(matches!(e, Error::Unsafe { .. }), "{rel:?}: {e}");
    }
    assert_eq!(snapshot(dir.path()), before);
}

/// A day directory that is a symlink to the outside: recording, reading and summarising
/// are refused, and nothing is written or read there.
#[test]
fn symlinked_day_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_in(dir.path(), &["token_stats"]);
    let decoy = dir.path().join("decoy");
    fs::create_dir(&decoy).unwrap();
    // An event the decoy holds must not be counted as the day's.
    fs::write(decoy.join("evt_d1.json"), event("d1", 99).json_bytes()).unwrap();
    let day_dir = day_dir(&root, day());
    std::os::unix::fs::symlink(&decoy, &day_dir).unwrap();
    let before = snapshot(dir.path());

    let e = root.record_event(&event("e1", 1)).unwrap_err();
    assert!(matches!(e, Error::Unsafe { .. }), "{e}");
    assert_names(&e, &day_dir);
    let e = root.read_day(day()).unwrap_err();
    assert!(matches!(e, Error::Unsafe { .. }), "{e}");
    let e = root.summary(day()).unwrap_err();
    assert!(matches!(e, Error::Unsafe { .. }), "{e}");
    assert_eq!(snapshot(dir.path()), before);
}

/// `token_stats` itself a symlink to the outside: recording is refused, nothing written.
#[test]
fn symlinked_token_stats_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_in(dir.path(), &["chat_history"]);
    let decoy = dir.path().join("decoy");
    fs::create_dir(&decoy).unwrap();
    std::os::unix::fs::symlink(&decoy, root.path().join("token_stats")).unwrap();
    let before = snapshot(dir.path());
    let e = root.record_event(&event("e1", 1)).unwrap_err();
    assert!(matches!(e, Error::Unsafe { .. }), "{e}");
    assert_names(&e, &root.path().join("token_stats"));
    assert_eq!(snapshot(dir.path()), before);
}

/// A day "directory" that is a regular file: recording is refused, the file unchanged.
#[test]
fn day_that_is_a_regular_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_in(dir.path(), &["token_stats"]);
    fs::write(day_dir(&root, day()), b"oops").unwrap();
    let before = snapshot(dir.path());
    let e = root.record_event(&event("e1", 1)).unwrap_err();
    assert!(matches!(e, Error::Unsafe { .. }), "{e}");
    assert_names(&e, &day_dir(&root, day()));
    assert!(root.read_day(day()).is_err());
    assert_eq!(snapshot(dir.path()), before);
}

/// A notification user directory that is a symlink: deliver and ack are refused.
#[test]
fn symlinked_notification_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_in(dir.path(), &["notifications"]);
    let decoy = dir.path().join("decoy");
    fs::create_dir(&decoy).unwrap();
    let user = UserId::new("u1").unwrap();
    std::os::unix::fs::symlink(&decoy, root.path().join("notifications").join("u1")).unwrap();
    let before = snapshot(dir.path());
    let id = NotificationId::new("42").unwrap();
    let e = root
        .deliver(&user, &id, &serde_json::json!({"t": 1}))
        .unwrap_err();
    assert!(matches!(e, Error::Unsafe { .. }), "{e}");
    let e = root.ack(&user, &id).unwrap_err();
    assert!(matches!(e, Error::Unsafe { .. }), "{e}");
    assert_eq!(snapshot(dir.path()), before);
}

/// An event file that is a symlink is never followed: recording that id is a conflict,
/// reading reports it, and its target is neither read as the day's nor written.
#[test]
fn symlinked_event_file_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_in(dir.path(), &["token_stats"]);
    let decoy = dir.path().join("decoy.json");
    fs::write(&decoy, event("e1", 1).json_bytes()).unwrap();
    let day_dir = day_dir(&root, day());
    fs::create_dir(&day_dir).unwrap();
    std::os::unix::fs::symlink(&decoy, day_dir.join("evt_e1.json")).unwrap();
    let before = snapshot(dir.path());

    let e = root.record_event(&event("e1", 1)).unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    assert_names(&e, &day_dir.join("evt_e1.json"));
    let read = root.read_day(day()).unwrap();
    assert!(read.events.is_empty());
    assert_eq!(read.problems.len(), 1);
    assert_eq!(read.problems[0].path, day_dir.join("evt_e1.json"));
    assert_eq!(snapshot(dir.path()), before);
}

/// A `_summary.json` that is a symlink to the outside is replaced by a real file; its
/// target is not written.
#[test]
fn symlinked_summary_is_replaced_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_in(dir.path(), &["token_stats"]);
    root.record_event(&event("e1", 5)).unwrap();
    let decoy = dir.path().join("decoy.json");
    fs::write(&decoy, b"precious").unwrap();
    let path = day_dir(&root, day()).join(SUMMARY_NAME);
    std::os::unix::fs::symlink(&decoy, &path).unwrap();

    let s = root.summary(day()).unwrap();
    assert!(s.rebuilt);
    assert_eq!(s.summary.totals.prompt_tokens, 5);
    assert!(fs::symlink_metadata(&path).unwrap().is_file());
    assert_eq!(fs::read(&decoy).unwrap(), b"precious");
}

/// A corrupt, truncated, foreign or self-contradicting `_summary.json` is rebuilt from the
/// events and rewritten by a process that reads the day afresh, after which the process
/// answers from what it read.
#[test]
fn corrupt_summary_is_rebuilt_and_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_in(dir.path(), &["token_stats"]);
    root.record_event(&event("e1", 5)).unwrap();
    root.record_event(&event("e2", 7)).unwrap();
    let path = day_dir(&root, day()).join(SUMMARY_NAME);
    let good = root.summary(day()).unwrap().summary;
    assert_eq!(good.totals.prompt_tokens, 12);
    let good_json = fs::read(&path).unwrap();
    let good_value: serde_json::Value = serde_json::from_slice(&good_json).unwrap();
    let edited = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = good_value.clone();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    let corruptions: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("garbage", b"\x00\xff not json".to_vec()),
        ("truncated", good_json[..good_json.len() / 2].to_vec()),
        ("an array", b"[1, 2, 3]".to_vec()),
        ("another format", edited(&|v| v["format"] = 2.into())),
        ("another day", edited(&|v| v["day"] = "2026-11-02".into())),
        ("negative", edited(&|v| v["events"] = (-1).into())),
        ("totals off", edited(&|v| v["prompt_tokens"] = 999.into())),
        (
            "a user too many",
            edited(&|v| {
                v["by_user"]["ghost"] = serde_json::json!({"events": 1, "prompt_tokens": 1,
                    "completion_tokens": 0, "total_tokens": 1});
            }),
        ),
        ("stamp missing", edited(&|v| v["source"] = "".into())),
    ];
    for (what, bytes) in corruptions {
        fs::write(&path, &bytes).unwrap();
        tmpa_core::maintenance::forget_summary(&root, day()).unwrap();
        let s = root.summary(day()).unwrap();
        assert!(s.rebuilt, "{what}: not rebuilt");
        assert!(s.problems.is_empty(), "{what}: {:?}", s.problems);
        assert_eq!(s.summary, good, "{what}");
        assert_eq!(fs::read(&path).unwrap(), good_json, "{what}: not rewritten");
        assert!(!root.summary(day()).unwrap().rebuilt, "{what}: read again");
    }
    assert_eq!(
        names(&day_dir(&root, day())),
        ["_summary.json", "evt_e1.json", "evt_e2.json"]
    );
}

/// A `_summary.json` that is a directory: the summary is still computed, the failed
/// rewrite reported with the path, the directory untouched, no temporary left.
#[test]
fn summary_path_that_is_a_directory_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_in(dir.path(), &["token_stats"]);
    root.record_event(&event("e1", 5)).unwrap();
    let path = day_dir(&root, day()).join(SUMMARY_NAME);
    fs::create_dir(&path).unwrap();
    fs::write(path.join("inside"), b"x").unwrap();
    let s = root.summary(day()).unwrap();
    assert_eq!(s.summary.totals.prompt_tokens, 5);
    assert_eq!(s.problems.len(), 1, "{:?}", s.problems);
    assert_eq!(s.problems[0].path, path);
    assert_eq!(
        names(&day_dir(&root, day())),
        ["_summary.json", "evt_e1.json"]
    );
    assert_eq!(names(&path), ["inside"]);
}

/// Values that try `../`, `/`, NUL, control characters or emptiness are refused as every
/// kind of name, and as a day.
#[test]
fn names_that_try_to_escape_are_refused() {
    let bad = [
        "",
        ".",
        "..",
        "../x",
        "../../etc/passwd",
        "x/../../y",
        "/",
        "/etc/passwd",
        "a/b",
        "a\0b",
        "\0",
    ];
    for s in bad {
        let checks = [
            (NameKind::Event, EventId::new(s).err()),
            (NameKind::User, UserId::new(s).err()),
            (NameKind::Session, SessionId::new(s).err()),
            (NameKind::Notification, NotificationId::new(s).err()),
        ];
        for (kind, err) in checks {
            match err {
                Some(Error::InvalidName { kind: k, value, .. }) => {
                    assert_eq!((k, value.as_str()), (kind, s));
                }
                other => panic!("{kind} {s:?}: {other:?}"),
            }
        }
        assert!(
            matches!(s.parse::<Day>(), Err(Error::InvalidName { .. })),
            "day {s:?}"
        );
    }
    for s in ["../2026-11-01", "2026-11-01/..", "2026-11-01\0"] {
        assert!(s.parse::<Day>().is_err(), "day {s:?}");
    }
}

/// An event whose `id` field tries to leave its directory is refused before anything is
/// written; one found on disk is reported as corrupt and not counted.
#[test]
fn event_with_escaping_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_in(dir.path(), &["token_stats"]);
    let day_dir = day_dir(&root, day());
    fs::create_dir(&day_dir).unwrap();
    let before = snapshot(dir.path());
    let ids = [
        serde_json::json!("../x"),
        serde_json::json!("../../../etc/cron.d/x"),
        serde_json::json!("/etc/x"),
        serde_json::json!("a/b"),
        serde_json::json!("x\u{0}y"),
        serde_json::json!(""),
        serde_json::json!(".."),
        serde_json::json!(42),
        serde_json::Value::Null,
    ];
    for id in &ids {
        let v = serde_json::json!({"id": id, "ts": format!("{DAY}T10:00:00Z"),
            "user_id": "u1", "model": "m", "prompt_tokens": 1, "completion_tokens": 1});
        let e = Event::from_value(v.clone()).unwrap_err();
        assert!(matches!(e, Error::InvalidEvent { .. }), "{id}: {e}");
        assert!(e.to_string().contains("\"id\""), "{id}: {e}");
        let e = Event::from_json(v.to_string().as_bytes()).unwrap_err();
        assert!(matches!(e, Error::InvalidEvent { .. }), "{id}: {e}");
    }
    assert_eq!(snapshot(dir.path()), before);

    // Dropped in by someone else under a plausible name: reported, never counted.
    let v = serde_json::json!({"id": "../x", "ts": format!("{DAY}T10:00:00Z"),
        "user_id": "u1", "model": "m", "prompt_tokens": 1, "completion_tokens": 1});
    fs::write(day_dir.join("evt_x.json"), v.to_string()).unwrap();
    let read = root.read_day(day()).unwrap();
    assert!(read.events.is_empty());
    assert_eq!(read.problems.len(), 1);
    assert_eq!(read.problems[0].path, day_dir.join("evt_x.json"));
    let s = root.summary(day()).unwrap();
    assert_eq!(s.summary.totals.events, 0);
}

/// A `user_id` or `model` that looks like a path is data, never a path: the event is
/// recorded in its day directory and nothing else is created.
#[test]
fn user_id_that_looks_like_a_path_stays_data() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_in(dir.path(), &["token_stats"]);
    let v = serde_json::json!({"id": "e1", "ts": format!("{DAY}T10:00:00Z"),
        "user_id": "../../etc", "model": "/etc/passwd", "prompt_tokens": 1,
        "completion_tokens": 2});
    let e = Event::from_value(v).unwrap();
    let path = root.record_event(&e).unwrap();
    assert_eq!(path, day_dir(&root, day()).join("evt_e1.json"));
    let s = root.summary(day()).unwrap().summary;
    assert_eq!(s.by_user["../../etc"].total_tokens, 3);
    assert_eq!(s.by_model["/etc/passwd"].events, 1);
    let created: Vec<PathBuf> = snapshot(dir.path()).into_keys().collect();
    let want: Vec<PathBuf> = [
        "root",
        "root/token_stats",
        "root/token_stats/2026-11-01",
        "root/token_stats/2026-11-01/_summary.json",
        "root/token_stats/2026-11-01/evt_e1.json",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    assert_eq!(created, want);
}

/// A loose event file that was corrupt when the summary was cached, then repaired by an
/// atomic rename (how the Python backend writes), must be counted by the next summary.
#[test]
fn summary_sees_a_loose_event_replaced_under_the_same_name() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_in(dir.path(), &["token_stats"]);
    root.record_event(&event("e1", 1)).unwrap();
    let day_dir = day_dir(&root, day());
    fs::write(day_dir.join("evt_e2.json"), b"{\"id\":\"e2\",trunc").unwrap();
    let first = root.summary(day()).unwrap();
    assert_eq!(first.summary.totals.events, 1);
    assert_eq!(first.problems.len(), 1, "{:?}", first.problems);

    let tmp = day_dir.join("evt_e2.json.tmp");
    fs::write(&tmp, event("e2", 5).json_bytes()).unwrap();
    fs::rename(&tmp, day_dir.join("evt_e2.json")).unwrap();
    assert_eq!(root.read_day(day()).unwrap().events.len(), 2);
    let second = root.summary(day()).unwrap();
    assert_eq!(
        second.summary.totals.events, 2,
        "stale summary returned (rebuilt: {})",
        second.rebuilt
    );
}

/// A day directory full of hostile entries (FIFO, directory, oversized sparse file,
/// non-UTF-8 name, symlink, empty file, id differing from the name) is read without
/// hanging: the valid event is returned and every other entry reported with its path.
#[test]
fn hostile_entries_in_a_day_are_reported_not_fatal() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let root = root_in(dir.path(), &["token_stats"]);
    root.record_event(&event("e1", 3)).unwrap();
    let d = day_dir(&root, day());
    let fifo_ok = Command::new("mkfifo")
        .arg(d.join("evt_fifo.json"))
        .status()
        .is_ok_and(|s| s.success());
    assert!(fifo_ok, "mkfifo failed");
    fs::create_dir(d.join("evt_dir.json")).unwrap();
    let big = fs::File::create(d.join("evt_big.json")).unwrap();
    big.set_len(tmpa_core::maintenance::EVENT_BYTES_MAX + 1)
        .unwrap();
    let odd = std::ffi::OsStr::from_bytes(b"evt_\xff.json");
    fs::write(d.join(odd), event("e5", 1).json_bytes()).unwrap();
    let outside = dir.path().join("outside.json");
    fs::write(&outside, event("link", 1).json_bytes()).unwrap();
    std::os::unix::fs::symlink(&outside, d.join("evt_link.json")).unwrap();
    fs::write(d.join("evt_empty.json"), b"").unwrap();
    fs::write(d.join("evt_e9.json"), event("e8", 1).json_bytes()).unwrap();

    let read = root.read_day(day()).unwrap();
    assert_eq!(read.events, vec![event("e1", 3)]);
    let mut reported: Vec<PathBuf> = read.problems.iter().map(|p| p.path.clone()).collect();
    reported.sort();
    let mut want: Vec<PathBuf> = [
        "evt_fifo.json",
        "evt_dir.json",
        "evt_big.json",
        "evt_link.json",
        "evt_empty.json",
        "evt_e9.json",
    ]
    .iter()
    .map(|n| d.join(n))
    .chain([d.join(odd)])
    .collect();
    want.sort();
    assert_eq!(reported, want, "{:?}", read.problems);
    let s = root.summary(day()).unwrap();
    assert_eq!(s.summary.totals.events, 1);
    assert_eq!(s.summary.totals.prompt_tokens, 3);
}

/// Names the backend can write are names the library takes: a 240-byte event id (its
/// file `evt_{id}.json` is 249 bytes, too long for `{final}.tmp.{unique}`: the library
/// uses its short temporary), the longest id whose file fits 255 bytes, and names with
/// dots, dashes, backslashes and control characters. One byte more is refused.
#[test]
fn every_name_the_backend_can_write_records() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_in(dir.path(), &["token_stats", "notifications"]);
    for id in [
        "i".repeat(240),
        "j".repeat(246),
        ".dot".into(),
        "-dash".into(),
        "a\\b".into(),
        "tab\there".into(),
        "x..y".into(),
    ] {
        let e = Event::from_value(
            serde_json::json!({"id": id, "ts": format!("{DAY}T10:00:00Z"),
            "user_id": "u1", "model": "m", "prompt_tokens": 1, "completion_tokens": 1}),
        )
        .unwrap();
        let p = root.record_event(&e).unwrap();
        assert_eq!(p.file_name().unwrap().len(), id.len() + "evt_.json".len());
        assert_eq!(
            fs::read_dir(p.parent().unwrap())
                .unwrap()
                .filter(|e| {
                    tmpa_core::temp_final_name(&e.as_ref().unwrap().file_name()).is_some()
                })
                .count(),
            0,
            "a temporary was left behind for {id:?}"
        );
    }
    let read = root.read_day(day()).unwrap();
    assert_eq!(read.events.len(), 7, "{:?}", read.problems);
    assert!(read.problems.is_empty(), "{:?}", read.problems);
    assert!(EventId::new("k".repeat(247)).is_err());
    let u = UserId::new("u".repeat(255)).unwrap();
    let n = NotificationId::new("n".repeat(246)).unwrap();
    root.deliver(&u, &n, &serde_json::json!({})).unwrap();
    root.ack(&u, &n).unwrap();
    assert!(root.is_acked(&u, &n).unwrap());
}

/// A day directory swapped for a symlink to the outside *while* events are recorded (a
/// hostile process racing the check): nothing may be written outside the root.
#[test]
fn day_directory_swapped_for_a_symlink_during_writes() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let root = root_in(dir.path(), &["token_stats"]);
    let decoy = dir.path().join("decoy");
    fs::create_dir(&decoy).unwrap();
    let day_dir = day_dir(&root, day());
    fs::create_dir(&day_dir).unwrap();
    let link = root.path().join("token_stats").join("link");
    std::os::unix::fs::symlink(&decoy, &link).unwrap();
    let stop = AtomicBool::new(false);
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            // Atomic exchanges: the day path is always either the directory or the link.
            let swap = || {
                use rustix::fs::{CWD, RenameFlags, renameat_with};
                renameat_with(CWD, &day_dir, CWD, &link, RenameFlags::EXCHANGE).unwrap();
            };
            while !stop.load(Ordering::Relaxed) {
                swap();
                swap();
            }
        });
        let mut i = 0;
        while started.elapsed() < std::time::Duration::from_secs(2)
            && fs::read_dir(&decoy).unwrap().next().is_none()
        {
            // Refusals are fine; writing outside is not.
            let _ = root.record_event(&event(&format!("e{i}"), 1));
            i += 1;
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert_eq!(
        names(&decoy),
        Vec::<String>::new(),
        "written outside the root"
    );
}

/// `{root}/token_stats/{day}`.
fn day_dir(root: &Root, day: Day) -> PathBuf {
    root.path().join("token_stats").join(day.to_string())
}
