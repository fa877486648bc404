//! The group commit of `record_event` (tmpa-core/src/fs/commit.rs) under kills and power
//! cuts: several threads of one process record events (`tmpa-recorders`, which prints
//! `ok {id}` the instant a call returned), and the process is killed at every fsync it
//! makes, the file's and the directory's (`strace -e inject=fsync:signal=SIGKILL:when=N`:
//! the fsync is not made). Every call that returned is there, whole; no event file is half
//! there; recording again finishes the job.
//!
//! The power cut: the same, in an ext4 image mounted on a loop device, shut down at the
//! kill without flushing its journal (`FS_IOC_SHUTDOWN`, `xfs_io -x -c shutdown`), then
//! mounted again (the journal replayed): what was not made durable is gone, as after a
//! power cut. Every call that returned before the cut is still there.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use tmpa_core::Event;

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

fn recorders(root: &Path, inject: Option<usize>) -> std::process::Output {
    let program = tmpa_tests::program_args("tmpa-recorders");
    let mut cmd = match inject {
        Some(n) => {
            let mut c = Command::new("strace");
            c.args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=fsync", "-e"])
                .arg(format!("inject=fsync:signal=SIGKILL:when={n}"))
                .args(program);
            c
        }
        None => Command::new(&program[0]),
    };
    cmd.arg(root)
        .args([THREADS, &EVENTS.to_string()])
        .output()
        .expect("run tmpa-recorders")
}

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

/// A SIGKILL at every fsync of several threads recording at once: every call that returned
/// is there, whole, and nothing is half written.
#[test]
fn kill_at_every_fsync_of_a_group_commit() {
    let Some(()) =
        tmpa_tests::prerequisite(tmpa_tests::strace_works(), "strace cannot inject here")
    else {
        return;
    };
    let t = tempfile::tempdir().expect("tempdir");
    let mut kills = 0;
    for n in 1..=2 * EVENTS + 2 {
        let root = new_root(t.path());
        let out = recorders(&root, Some(n));
        let said = returned(&out.stdout);
        let what = format!("kill at fsync #{n} of a thread ({} returned)", said.len());
        kills += usize::from(!out.status.success());
        check_and_finish(&root, &said, &what);
    }
    assert!(kills > EVENTS, "only {kills} kills landed");
}

/// An ext4 image on a loop device, mounted at a fresh directory; unmounted on drop.
///
/// Each power cut goes on with a copy of the image (`disk-{cuts}.img`): another test that
/// made a mount namespace meanwhile (`unshare --mount`) holds a copy of this mount, which
/// keeps the shut-down file system alive after our `umount`, and mounting the same image
/// again would reuse its loop device and get that dead file system back (`EIO`).
struct LoopFs {
    dir: tempfile::TempDir,
    cuts: std::cell::Cell<u32>,
}

impl LoopFs {
    fn new() -> Option<LoopFs> {
        if !tmpa_tests::is_root() {
            return None;
        }
        let dir = tempfile::tempdir().ok()?;
        let img = dir.path().join("disk-0.img");
        fs::File::create(&img).ok()?.set_len(64 << 20).ok()?;
        let ok = |c: &mut Command| c.output().is_ok_and(|o| o.status.success());
        if !ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img)) {
            return None;
        }
        let fs = LoopFs {
            dir,
            cuts: std::cell::Cell::new(0),
        };
        fs::create_dir(fs.mnt()).ok()?;
        fs.mount().then_some(fs)
    }

    fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    fn image(&self) -> PathBuf {
        self.dir
            .path()
            .join(format!("disk-{}.img", self.cuts.get()))
    }

    fn mount(&self) -> bool {
        Command::new("mount")
            .args(["-o", "loop"])
            .arg(self.image())
            .arg(self.mnt())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn umount(&self) {
        let s = Command::new("umount").arg(self.mnt()).status();
        assert!(s.is_ok_and(|s| s.success()), "umount");
    }

    /// Cuts the power: the file system stops, its journal not flushed; mounted again, it
    /// holds what was durable.
    fn power_cut(&self) {
        let s = Command::new("xfs_io")
            .args(["-x", "-c", "shutdown"])
            .arg(self.mnt())
            .status();
        assert!(s.is_ok_and(|s| s.success()), "xfs_io shutdown");
        self.umount();
        // The image holds what was durable at the cut: boot a copy of it.
        let cut = self.image();
        self.cuts.set(self.cuts.get() + 1);
        let copied = Command::new("cp")
            .arg("--sparse=always")
            .arg(&cut)
            .arg(self.image())
            .status();
        assert!(copied.is_ok_and(|s| s.success()), "copy the image");
        let _ = fs::remove_file(&cut);
        assert!(self.mount(), "mount after the cut");
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.mnt()).status();
    }
}

/// A power cut at every fsync of several threads recording at once: every call that
/// returned before the cut survives it, whole.
#[test]
fn power_cut_at_every_fsync_of_a_group_commit() {
    let Some(()) =
        tmpa_tests::prerequisite(tmpa_tests::strace_works(), "strace cannot inject here")
    else {
        return;
    };
    let Some(disk) = tmpa_tests::prerequisite(LoopFs::new(), "root, mkfs.ext4 and a loop device")
    else {
        return;
    };
    let (mut cut_before_end, mut lost_unreturned) = (0, 0);
    for n in 1..=2 * EVENTS + 2 {
        let root = new_root(&disk.mnt());
        // The root itself is made durable first: the cut is about the recorders' calls.
        Command::new("sync").status().expect("sync");
        let out = recorders(&root, Some(n));
        disk.power_cut();
        let said = returned(&out.stdout);
        let what = format!(
            "power cut at fsync #{n} of a thread ({} returned)",
            said.len()
        );
        cut_before_end += usize::from(!out.status.success());
        let present = whole_events(&root, &what);
        lost_unreturned += 3 * EVENTS - present.len();
        check_and_finish(&root, &said, &what);
    }
    assert!(cut_before_end > EVENTS, "only {cut_before_end} cuts landed");
    // The cut is real: calls that had not returned were lost at least once.
    assert!(lost_unreturned > 0, "no cut lost anything: not a power cut");
}
