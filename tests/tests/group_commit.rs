//! The group commit of `record_event` (tmpa-core/src/fs/commit.rs) and its commit order
//! (tmpa-core/src/fs/journal.rs) under kills and power cuts: several threads of one process
//! record events (`tmpa-recorders`, which prints `ok {id}` the instant a call returned),
//! and the process is killed at every step that makes a file durable: the file's fsync or
//! write-back, the rename, the directory's fsync (`strace -e
//! inject=fsync:signal=SIGKILL:when=N`: the call is not made). Every call that returned is
//! there, whole; no event file is half there; recording again finishes the job.
//!
//! The power cut: the same, in an ext4 or XFS image mounted on a loop device, shut down at
//! the kill without flushing its journal (`FS_IOC_SHUTDOWN`, `xfs_io -x -c shutdown`),
//! then mounted again (the journal replayed): what was not made durable is gone, as after
//! a power cut. Every call that returned before the cut is still there. On these two the
//! library writes a file back instead of fsyncing it and lets the directory's one journal
//! commit cover it; the cut checks that a rename is never durable without the content.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use tmpa_core::Event;
use tmpa_tests::loopfs::{Layout, LoopFs, injectable, killed_at};

const THREADS: &str = "3";
const EVENTS: usize = 6;
const DAY: &str = "2026-11-01";

/// The ids `tmpa-recorders` said returned `Ok`.
fn returned(stdout: &[u8]) -> BTreeSet<String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("ok "))
        .map(str::to_owned)
        .collect()
}

/// Every event file of the day is a whole, valid event of its name; returns their ids.
fn whole_events(root: &Path, what: &str) -> BTreeSet<String> {
    let dir = root.join("token_stats").join(DAY);
    let mut ids = BTreeSet::new();
    let Ok(entries) = fs::read_dir(&dir) else {
        return ids;
    };
    for e in entries {
        let name = e.expect("entry").file_name().to_string_lossy().into_owned();
        let Some(id) = name
            .strip_prefix("evt_")
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue; // temporaries of killed calls are tmpclean's
        };
        let bytes = fs::read(dir.join(&name)).expect("read");
        let e = Event::from_json(&bytes)
            .unwrap_or_else(|err| panic!("{what}: {name} is not whole: {err} ({bytes:?})"));
        assert_eq!(e.id().as_str(), id, "{what}: {name}");
        ids.insert(id.to_owned());
    }
    ids
}

fn recorders(root: &Path, kill_at: Option<(&str, usize)>) -> std::process::Output {
    killed_at("tmpa-recorders", kill_at)
        .arg(root)
        .args([THREADS, &EVENTS.to_string()])
        .output()
        .expect("run tmpa-recorders")
}

/// The calls that make a new file durable, in either order (fs/journal.rs).
const STEPS: [&str; 3] = ["fsync", "sync_file_range", "renameat2"];

fn new_root(at: &Path) -> PathBuf {
    let root = at.join("root");
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(root.join("token_stats")).expect("root");
    root
}

/// After the kill (or the cut): what returned is there and whole, and recording the same
/// events again completes the day.
fn check_and_finish(root: &Path, said: &BTreeSet<String>, what: &str) {
    let present = whole_events(root, what);
    let missing: Vec<_> = said.difference(&present).collect();
    assert!(missing.is_empty(), "{what}: returned but lost: {missing:?}");
    let again = recorders(root, None);
    assert!(again.status.success(), "{what}: again: {again:?}");
    assert_eq!(whole_events(root, what).len(), 3 * EVENTS, "{what}");
}

/// A SIGKILL at every fsync and rename of several threads recording at once: every call
/// that returned is there, whole, and nothing is half written.
#[test]
fn kill_at_every_fsync_of_a_group_commit() {
    let Some(()) =
        tmpa_tests::prerequisite(tmpa_tests::strace_works(), "strace cannot inject here")
    else {
        return;
    };
    let t = tempfile::tempdir().expect("tempdir");
    let mut kills = 0;
    for call in ["fsync", "renameat2"] {
        for n in 1..=2 * EVENTS + 2 {
            let root = new_root(t.path());
            let out = recorders(&root, Some((call, n)));
            let said = returned(&out.stdout);
            let what = format!("kill at {call} #{n} of a thread ({} returned)", said.len());
            kills += usize::from(!out.status.success());
            check_and_finish(&root, &said, &what);
        }
    }
    assert!(kills > 2 * EVENTS, "only {kills} kills landed");
}

/// A power cut at every step (fsync, write-back, rename) of several threads recording at
/// once, on `layout`: every call that returned before the cut survives it, whole, and no
/// event file is there without its content.
fn power_cut_at_every_step(layout: Layout) {
    let Some(disk) = injectable(layout) else {
        return;
    };
    let (mut cuts, mut lost_unreturned) = (0, 0);
    for call in STEPS {
        for n in 1..=2 * EVENTS + 2 {
            let root = new_root(&disk.mnt());
            // The root itself is made durable first: the cut is about the recorders' calls.
            Command::new("sync").status().expect("sync");
            let out = recorders(&root, Some((call, n)));
            disk.power_cut();
            let said = returned(&out.stdout);
            let what = format!(
                "{layout:?}: power cut at {call} #{n} of a thread ({} returned)",
                said.len()
            );
            let cut = !out.status.success();
            cuts += usize::from(cut);
            let present = whole_events(&root, &what);
            lost_unreturned += 3 * EVENTS - present.len();
            check_and_finish(&root, &said, &what);
            if !cut {
                break; // fewer such calls than n: the later ones would not cut either
            }
        }
    }
    assert!(cuts > EVENTS, "{layout:?}: only {cuts} cuts landed");
    // The cut is real: calls that had not returned were lost at least once.
    assert!(
        lost_unreturned > 0,
        "{layout:?}: no cut lost anything: not a power cut"
    );
}

/// ext4 with its journal: one journal commit per file (fs/journal.rs).
#[test]
fn power_cut_at_every_step_of_a_group_commit_on_ext4() {
    power_cut_at_every_step(Layout::Ext4);
}

/// ext4 with fast commits: the directory's fsync may be a fast commit, which must still
/// carry the file's blocks and size with its name.
#[test]
fn power_cut_at_every_step_of_a_group_commit_on_ext4_with_fast_commits() {
    power_cut_at_every_step(Layout::Ext4FastCommit);
}

/// XFS: one log force per file (fs/journal.rs).
#[test]
fn power_cut_at_every_step_of_a_group_commit_on_xfs() {
    power_cut_at_every_step(Layout::Xfs);
}

/// `tmpa-recorders ROOT THREADS EVENTS` under strace, with `inject` (`sync_file_range:error=EPERM`)
/// if given: it must succeed; returns how many fsyncs and write-backs the temporaries got.
fn temporaries_synced(
    root: &Path,
    threads: usize,
    events: usize,
    inject: Option<&str>,
) -> (usize, usize) {
    let log = tempfile::NamedTempFile::new().expect("log");
    let mut strace = Command::new("strace");
    strace.args(["-f", "-qq", "-y", "-e", "trace=fsync,sync_file_range"]);
    if let Some(inject) = inject {
        strace.arg("-e").arg(format!("inject={inject}"));
    }
    let out = strace
        .arg("-o")
        .arg(log.path())
        .args(tmpa_tests::program_args("tmpa-recorders"))
        .arg(root)
        .args([threads.to_string(), events.to_string()])
        .output()
        .expect("strace tmpa-recorders");
    assert!(out.status.success(), "{inject:?}: {out:?}");
    let text = fs::read_to_string(log.path()).expect("strace log");
    let on_temporary = |call: &str| {
        text.lines()
            .filter(|l| l.contains(&format!("{call}(")) && l.contains(".json.tmp."))
            .count()
    };
    (on_temporary("fsync"), on_temporary("sync_file_range"))
}

/// The commit order each file system gets: the write-back and one commit on ext4 with a
/// journal (fast commits or not) and on XFS; the file's own fsync on ext4 without a
/// journal and on tmpfs, where nothing orders a rename after the file's blocks, and on a
/// FUSE mount (bindfs) even over an ext4 with a journal: what the daemon does with a
/// write-back is not known.
#[test]
fn each_file_system_gets_its_commit_order() {
    let Some(()) = tmpa_tests::prerequisite(
        Command::new("strace")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success()),
        "strace",
    ) else {
        return;
    };
    for layout in [
        Layout::Ext4,
        Layout::Ext4FastCommit,
        Layout::Ext4NoJournal,
        Layout::Xfs,
    ] {
        let Some(disk) =
            tmpa_tests::prerequisite(LoopFs::new(layout), "root, mkfs and a loop device")
        else {
            return;
        };
        let (fsyncs, write_backs) = temporaries_synced(&new_root(&disk.mnt()), 2, 4, None);
        let expected = if layout.one_commit() { (0, 8) } else { (8, 0) };
        assert_eq!(
            (fsyncs, write_backs),
            expected,
            "{layout:?}: (fsyncs, write-backs)"
        );
        if matches!(layout, Layout::Ext4) {
            let Some(fuse) = tmpa_tests::fuse::Bindfs::mount(&disk.mnt()) else {
                return;
            };
            assert_eq!(
                temporaries_synced(&new_root(fuse.path()), 2, 4, None),
                (8, 0),
                "bindfs over ext4 with a journal"
            );
        }
    }
    if let Ok(shm) = tempfile::tempdir_in("/dev/shm") {
        assert_eq!(
            temporaries_synced(&new_root(shm.path()), 2, 4, None),
            (8, 0),
            "tmpfs"
        );
    }
}

/// A write-back that fails (`EIO`, as a failing disk gives it) fails the call, naming the
/// temporary: nothing is at the final name, no temporary is left, and the next call
/// records the event.
#[test]
fn a_failed_write_back_fails_the_call_and_leaves_nothing() {
    let Some(disk) = injectable(Layout::Ext4) else {
        return;
    };
    let root = new_root(&disk.mnt());
    let out = tmpa_tests::strace_inject("sync_file_range:error=EIO:when=1", "tmpa-recorders")
        .arg(&root)
        .args(["1", "1"])
        .output()
        .expect("run tmpa-recorders");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        said.starts_with("err t0-0 ")
            && said.contains("write back")
            && said.contains("evt_t0-0.json.tmp.")
            && said.contains("Input/output error"),
        "{said}"
    );
    let day = root.join("token_stats").join(DAY);
    let left: Vec<_> = fs::read_dir(&day)
        .expect("day")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let again = recorders(&root, None);
    assert!(again.status.success(), "{again:?}");
    assert_eq!(whole_events(&root, "again").len(), 3 * EVENTS);
}

/// A write-back the system refuses (`ENOSYS` or `EPERM` from a seccomp filter) is replaced
/// by the file's own fsync: every call succeeds and each temporary was fsynced.
#[test]
fn a_refused_write_back_falls_back_to_the_file_s_fsync() {
    let Some(disk) = injectable(Layout::Ext4) else {
        return;
    };
    for errno in ["ENOSYS", "EPERM"] {
        let root = new_root(&disk.mnt());
        let inject = format!("sync_file_range:error={errno}");
        let (fsyncs, _) = temporaries_synced(&root, 3, EVENTS, Some(&inject));
        assert_eq!(whole_events(&root, errno).len(), 3 * EVENTS, "{errno}");
        assert_eq!(fsyncs, 3 * EVENTS, "{errno}: each temporary fsynced");
    }
}
