//! tmpa-compact under power cuts: the nightly job writes `_compacted.json` and only then
//! deletes the loose files it holds, so the day must read the same events after a power
//! cut at any step, and a rerun must finish the job. On ext4 with a journal and XFS the
//! library writes `_compacted.json` back rather than fsyncing it, and lets the directory's
//! one journal commit cover it (tmpa-core/src/fs/journal.rs): these tests check that the
//! delete step never runs ahead of that commit.
//!
//! Each cut: a day of events recorded by `tmpa-recorders`, made durable (`sync`); then
//! tmpa-compact, killed (`strace -e inject=CALL:signal=SIGKILL:when=N`: the call is not
//! made) at the Nth write-back, fsync, rename or unlink; then the file system is shut down
//! without flushing its journal and mounted again ([`tmpa_tests::loopfs`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use tmpa_tests::loopfs::{Layout, LoopFs};

const DAY: &str = "2026-11-01";
/// Threads and events per thread of `tmpa-recorders`: 8 events.
const RECORDERS: [&str; 2] = ["2", "4"];

/// The steps of compaction that make something durable or remove something.
const STEPS: [&str; 4] = ["sync_file_range", "fsync", "renameat2", "unlinkat"];

/// The day as the library reads it, by id (each event's JSON), and its problems.
fn day(root: &Path, what: &str) -> BTreeMap<String, String> {
    let rt = tmpa_core::Root::open(root).expect("root");
    let read = rt
        .read_day(DAY.parse().expect("day"))
        .expect("read the day");
    assert!(read.problems.is_empty(), "{what}: {:?}", read.problems);
    read.events
        .iter()
        .map(|e| {
            let json = String::from_utf8(e.json_bytes().to_vec()).expect("utf-8");
            (e.id().as_str().to_owned(), json)
        })
        .collect()
}

/// Loose event files left in the day's directory.
fn loose(root: &Path) -> usize {
    std::fs::read_dir(root.join("token_stats").join(DAY))
        .expect("day")
        .filter(|e| {
            let name = e.as_ref().expect("entry").file_name();
            let name = name.to_string_lossy();
            name.starts_with("evt_") && name.ends_with(".json")
        })
        .count()
}

fn compact(root: &Path, inject: Option<(&str, usize)>) -> std::process::Output {
    let program = tmpa_tests::program_args("tmpa-compact");
    let mut cmd = match inject {
        Some((call, n)) => {
            let mut c = Command::new("strace");
            c.args(["-f", "-qq", "-o", "/dev/null", "-e"])
                .arg(format!("trace={call}"))
                .arg("-e")
                .arg(format!("inject={call}:signal=SIGKILL:when={n}"))
                .args(program);
            c
        }
        None => Command::new(&program[0]),
    };
    cmd.arg("--root")
        .arg(root)
        .args(["--day", DAY])
        .env_remove("TMPA_ROOT")
        .output()
        .expect("run tmpa-compact")
}

fn new_day(at: &Path) -> PathBuf {
    let root = at.join("root");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("token_stats")).expect("root");
    let out = Command::new(&tmpa_tests::program_args("tmpa-recorders")[0])
        .arg(&root)
        .args(RECORDERS)
        .output()
        .expect("run tmpa-recorders");
    assert!(out.status.success(), "{out:?}");
    // The day is durable before the cut: the cut is about compaction.
    Command::new("sync").status().expect("sync");
    root
}

fn compaction_survives_a_power_cut_at_every_step(layout: Layout) {
    let Some(()) =
        tmpa_tests::prerequisite(tmpa_tests::strace_works(), "strace cannot inject here")
    else {
        return;
    };
    let Some(disk) = tmpa_tests::prerequisite(LoopFs::new(layout), "root, mkfs and a loop device")
    else {
        return;
    };
    let mut cuts = 0;
    for call in STEPS {
        for n in 1.. {
            let root = new_day(&disk.mnt());
            let before = day(&root, "before");
            assert_eq!(before.len(), 8);
            let out = compact(&root, Some((call, n)));
            let cut = !out.status.success();
            disk.power_cut();
            let what = format!("{layout:?}: power cut at {call} #{n} of tmpa-compact");
            assert_eq!(day(&root, &what), before, "{what}: the day changed");
            let again = compact(&root, None);
            assert!(again.status.success(), "{what}: the rerun: {again:?}");
            assert_eq!(day(&root, &what), before, "{what}: after the rerun");
            assert_eq!(loose(&root), 0, "{what}: the rerun left loose files");
            if !cut {
                break; // fewer such calls than n
            }
            cuts += 1;
        }
    }
    assert!(cuts >= STEPS.len(), "{layout:?}: only {cuts} cuts landed");
}

/// ext4 with its journal: `_compacted.json` is written back and committed with its name.
#[test]
fn compaction_survives_a_power_cut_at_every_step_on_ext4() {
    compaction_survives_a_power_cut_at_every_step(Layout::Ext4);
}

/// XFS: the same, through its log.
#[test]
fn compaction_survives_a_power_cut_at_every_step_on_xfs() {
    compaction_survives_a_power_cut_at_every_step(Layout::Xfs);
}
