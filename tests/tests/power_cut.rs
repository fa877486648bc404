//! tmpa-compact and tmpa-archive under power cuts. Each job writes what it makes
//! (`_compacted.json`, a session's `.json.gz`) and only then deletes what that holds, so
//! the data must read the same after a power cut at any step, and a rerun must finish the
//! job. On ext4 with a journal and XFS the library writes a new file back rather than
//! fsyncing it, and lets the directory's one journal commit cover it
//! (tmpa-core/src/fs/journal.rs): these tests check that no delete step runs ahead of
//! that commit.
//!
//! Each cut: the data made durable (`sync`); then the job, killed (`strace -e
//! inject=CALL:signal=SIGKILL:when=N`: the call is not made) at the Nth write-back, fsync,
//! rename or unlink; then the file system is shut down without flushing its journal and
//! mounted again ([`tmpa_tests::loopfs`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tmpa_core::{SessionId, UserId};
use tmpa_tests::loopfs::{Layout, injectable, killed_at};

const DAY: &str = "2026-11-01";
/// Threads and events per thread of `tmpa-recorders`: 8 events.
const RECORDERS: [&str; 2] = ["2", "4"];
const USERS: [&str; 2] = ["alice", "bob"];
const SESSIONS: usize = 3;

/// The steps of a job that make something durable or remove something.
const STEPS: [&str; 4] = ["sync_file_range", "fsync", "renameat2", "unlinkat"];

/// A maintenance job that makes a file and then deletes what it holds.
#[derive(Clone, Copy, Debug)]
enum Job {
    /// tmpa-compact of one day of loose events.
    Compact,
    /// tmpa-archive of old sessions.
    Archive,
}

impl Job {
    fn program(self) -> &'static str {
        match self {
            Job::Compact => "tmpa-compact",
            Job::Archive => "tmpa-archive",
        }
    }

    fn args(self) -> &'static [&'static str] {
        match self {
            Job::Compact => &["--day", DAY],
            Job::Archive => &[],
        }
    }

    /// A fresh root under `at` with the job's data, made durable.
    fn fresh_root(self, at: &Path) -> PathBuf {
        let root = at.join("root");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("token_stats")).expect("root");
        match self {
            Job::Compact => {
                let out = Command::new(&tmpa_tests::program_args("tmpa-recorders")[0])
                    .arg(&root)
                    .args(RECORDERS)
                    .output()
                    .expect("run tmpa-recorders");
                assert!(out.status.success(), "{out:?}");
            }
            Job::Archive => {
                for user in USERS {
                    let dir = root.join(format!("chat_history/{user}/sessions"));
                    std::fs::create_dir_all(&dir).expect("sessions");
                    for i in 0..SESSIONS {
                        let path = dir.join(format!("s{i}.json"));
                        let body = serde_json::json!({"session": i, "user": user,
                            "messages": ["hello", "again"]});
                        std::fs::write(&path, body.to_string()).expect("session");
                        tmpa_tests::age(&path, Duration::from_secs(40 * 86_400));
                    }
                }
            }
        }
        // The data is durable before the cut: the cut is about the job.
        Command::new("sync").status().expect("sync");
        root
    }

    /// The data as the library reads it: each event's JSON by id, or each session's
    /// bytes by user and id. A problem the library reports fails the test.
    fn read(self, root: &Path, what: &str) -> BTreeMap<String, String> {
        let rt = tmpa_core::Root::open(root).expect("root");
        match self {
            Job::Compact => {
                let read = rt
                    .read_day(DAY.parse().expect("day"))
                    .expect("read the day");
                assert!(read.problems.is_empty(), "{what}: {:?}", read.problems);
                read.events
                    .iter()
                    .map(|e| {
                        let json = String::from_utf8_lossy(e.json_bytes()).into_owned();
                        (e.id().as_str().to_owned(), json)
                    })
                    .collect()
            }
            Job::Archive => USERS
                .iter()
                .flat_map(|user| (0..SESSIONS).map(move |i| (*user, format!("s{i}"))))
                .map(|(user, id)| {
                    let u = UserId::new(user.to_owned()).expect("user");
                    let s = SessionId::new(id.clone()).expect("session");
                    let bytes = rt
                        .read_session(&u, &s)
                        .unwrap_or_else(|e| panic!("{what}: {user}/{id}: {}", e.chain()));
                    (
                        format!("{user}/{id}"),
                        String::from_utf8_lossy(&bytes).into_owned(),
                    )
                })
                .collect(),
        }
    }

    /// What the job leaves live once it has finished: loose event files, live sessions.
    fn left_live(self, root: &Path) -> usize {
        let (dirs, prefix): (Vec<PathBuf>, &str) = match self {
            Job::Compact => (vec![root.join("token_stats").join(DAY)], "evt_"),
            Job::Archive => (
                USERS
                    .iter()
                    .map(|u| root.join(format!("chat_history/{u}/sessions")))
                    .collect(),
                "s",
            ),
        };
        dirs.iter()
            .flat_map(|d| std::fs::read_dir(d).expect("list"))
            .filter(|e| {
                let name = e.as_ref().expect("entry").file_name();
                let name = name.to_string_lossy();
                name.starts_with(prefix) && name.ends_with(".json")
            })
            .count()
    }

    fn run(self, root: &Path, kill_at: Option<(&str, usize)>) -> std::process::Output {
        killed_at(self.program(), kill_at)
            .arg("--root")
            .arg(root)
            .args(self.args())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", self.program()))
    }
}

fn survives_a_power_cut_at_every_step(job: Job, layout: Layout) {
    let Some(disk) = injectable(layout) else {
        return;
    };
    let mut cuts = 0;
    for call in STEPS {
        for n in 1.. {
            let root = job.fresh_root(&disk.mnt());
            let before = job.read(&root, "before");
            assert!(before.len() >= 6, "{before:?}");
            let out = job.run(&root, Some((call, n)));
            let cut = !out.status.success();
            disk.power_cut();
            let what = format!("{job:?} on {layout:?}: power cut at {call} #{n}");
            assert_eq!(job.read(&root, &what), before, "{what}: the data changed");
            let again = job.run(&root, None);
            assert!(again.status.success(), "{what}: the rerun: {again:?}");
            assert_eq!(job.read(&root, &what), before, "{what}: after the rerun");
            assert_eq!(job.left_live(&root), 0, "{what}: the rerun left live files");
            if !cut {
                break; // fewer such calls than n
            }
            cuts += 1;
        }
    }
    assert!(
        cuts >= STEPS.len(),
        "{job:?} on {layout:?}: only {cuts} cuts landed"
    );
}

/// ext4 with its journal: `_compacted.json` is written back and committed with its name.
#[test]
fn compaction_survives_a_power_cut_at_every_step_on_ext4() {
    survives_a_power_cut_at_every_step(Job::Compact, Layout::Ext4);
}

/// ext4 with fast commits: the directory's fsync may be a fast commit.
#[test]
fn compaction_survives_a_power_cut_at_every_step_on_ext4_with_fast_commits() {
    survives_a_power_cut_at_every_step(Job::Compact, Layout::Ext4FastCommit);
}

/// XFS: the same, through its log.
#[test]
fn compaction_survives_a_power_cut_at_every_step_on_xfs() {
    survives_a_power_cut_at_every_step(Job::Compact, Layout::Xfs);
}

/// ext4 with its journal: a session's archive is written back and committed with its
/// name before the session is deleted.
#[test]
fn archival_survives_a_power_cut_at_every_step_on_ext4() {
    survives_a_power_cut_at_every_step(Job::Archive, Layout::Ext4);
}

/// XFS: the same, through its log.
#[test]
fn archival_survives_a_power_cut_at_every_step_on_xfs() {
    survives_a_power_cut_at_every_step(Job::Archive, Layout::Xfs);
}
