//! The incremental summary (tmpa-core/src/incremental/) against a full read, over every
//! kind of change a day directory sees: events recorded and recorded again, loose files
//! deleted, rewritten in place (same size too), replaced by rename, damaged; the day
//! compacted; `_compacted.json` damaged; loose copies of compacted events, equal and not.
//! After each change the summary this process keeps equals the fold of the day as read
//! whole, and carries the same problems; a new process (the day forgotten) agrees too.
//!
//! The same property runs watched (inotify) and polled (`TMPA_SUMMARY_WATCH=0`, in a child
//! process: the choice is made per process).

#![allow(
    clippy::disallowed_methods,
    reason = "tests build and break trees by path"
)]

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use tmpa_core::maintenance::{Dir, forget_summary, write_compacted};
use tmpa_core::{Day, Event, Root, Summary};

const DAY: &str = "2026-11-01";
const USERS: [&str; 3] = ["u1", "u2", "u 3"];
/// Set in the child that runs the property polled.
const POLLED_CHILD: &str = "TMPA_INCREMENTAL_POLLED_CHILD";

#[derive(Clone, Debug)]
enum Op {
    /// Record event `id` (with counts from `n`).
    Record { id: u8, n: u32 },
    /// Delete the loose file of `id` (if any).
    Delete { id: u8 },
    /// Rewrite the loose file of `id` in place with other counts of the same width (so
    /// the same size), or a wider one.
    InPlace { id: u8, n: u32 },
    /// Replace the loose file of `id` by a rename (a repair, or another event).
    Rename { id: u8, n: u32 },
    /// Overwrite the loose file of `id` with something that is not an event.
    Garbage { id: u8 },
    /// Compact the day: every readable event into `_compacted.json`, the loose files gone.
    Compact,
    /// Flip a bit of `_compacted.json` (if there is one) at this fraction of its length.
    Damage { at: u16 },
    /// Write a loose copy of a compacted event: the same (a duplicate) or not (a conflict).
    Copy { same: bool },
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0u8..12;
    prop_oneof![
        4 => (id.clone(), 0u32..1000).prop_map(|(id, n)| Op::Record { id, n }),
        1 => id.clone().prop_map(|id| Op::Delete { id }),
        2 => (id.clone(), 0u32..2000).prop_map(|(id, n)| Op::InPlace { id, n }),
        1 => (id.clone(), 0u32..1000).prop_map(|(id, n)| Op::Rename { id, n }),
        1 => id.prop_map(|id| Op::Garbage { id }),
        1 => Just(Op::Compact),
        1 => any::<u16>().prop_map(|at| Op::Damage { at }),
        1 => any::<bool>().prop_map(|same| Op::Copy { same }),
    ]
}

fn event_json(id: u8, n: u32) -> String {
    format!(
        r#"{{"completion_tokens":{},"id":"e{id}","model":"m{}","prompt_tokens":{n},"ts":"{DAY}T{:02}:00:00Z","user_id":"{}"}}"#,
        n % 7,
        n % 2,
        n % 24,
        USERS[(n % 3) as usize]
    )
}

fn day() -> Day {
    DAY.parse().unwrap()
}

fn day_dir(root: &Root) -> PathBuf {
    root.path().join("token_stats").join(DAY)
}

fn loose(root: &Root, id: u8) -> PathBuf {
    day_dir(root).join(format!("evt_e{id}.json"))
}

fn apply(root: &Root, op: &Op) {
    let dir = day_dir(root);
    match *op {
        Op::Record { id, n } => {
            // A different event under a recorded id is refused: that is fine here.
            let _ = root.record_event(&Event::from_json(event_json(id, n).as_bytes()).unwrap());
        }
        Op::Delete { id } => {
            let _ = fs::remove_file(loose(root, id));
        }
        Op::InPlace { id, n } => {
            if let Ok(mut f) = fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(loose(root, id))
            {
                f.write_all(event_json(id, n).as_bytes()).unwrap();
            }
        }
        Op::Rename { id, n } => {
            let tmp = dir.join(format!("evt_e{id}.json.tmp"));
            fs::write(&tmp, event_json(id, n)).unwrap();
            fs::rename(&tmp, loose(root, id)).unwrap();
        }
        Op::Garbage { id } => {
            if loose(root, id).exists() {
                fs::write(loose(root, id), b"{\"id\":").unwrap();
            }
        }
        Op::Compact => {
            let read = root.read_day(day()).unwrap();
            if read
                .problems
                .iter()
                .any(|p| p.path.ends_with("_compacted.json"))
            {
                return; // tmpa-compact leaves a damaged day untouched
            }
            let held = Dir::open_path(&dir).unwrap();
            write_compacted(&held, day(), &read.events).unwrap();
            let kept: BTreeSet<String> = read.events.iter().map(|e| e.file_name()).collect();
            for e in fs::read_dir(&dir).unwrap() {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                if kept.contains(&name) {
                    fs::remove_file(dir.join(name)).unwrap();
                }
            }
        }
        Op::Damage { at } => {
            let path = dir.join("_compacted.json");
            if let Ok(mut bytes) = fs::read(&path)
                && !bytes.is_empty()
            {
                let i = (usize::from(at) * bytes.len()) >> 16;
                bytes[i] ^= 1 << (at % 8);
                // In place, as the damage of a disk would be (no rename).
                fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .write_all(&bytes)
                    .unwrap();
            }
        }
        Op::Copy { same } => {
            let Ok(events) = compacted_events(&dir) else {
                return;
            };
            if let Some(e) = events.first() {
                let id = e.id().as_str();
                let text = if same {
                    String::from_utf8(e.json_bytes().to_vec()).unwrap()
                } else {
                    let n = 5000 + e.prompt_tokens() as u32;
                    event_json(id[1..].parse().unwrap(), n)
                };
                fs::write(dir.join(format!("evt_{id}.json")), text).unwrap();
            }
        }
    }
}

fn compacted_events(dir: &Path) -> Result<Vec<Event>, ()> {
    let bytes = fs::read(dir.join("_compacted.json")).map_err(drop)?;
    tmpa_core::maintenance::parse_compacted(&bytes, &dir.join("_compacted.json"), day())
        .map_err(drop)
}

/// What a full read says: the fold of the day's events, and the problems' paths and lines.
fn full(root: &Root) -> (Summary, Vec<(PathBuf, Option<u64>)>) {
    let read = root.read_day(day()).unwrap();
    let problems = read
        .problems
        .iter()
        .map(|p| (p.path.clone(), p.line))
        .collect();
    (Summary::compute(day(), &read.events), problems)
}

fn check(root: &Root, after: &str) -> Result<(), TestCaseError> {
    let (want, want_problems) = full(root);
    let got = root.summary(day()).unwrap();
    let mut got_summary = got.summary.clone();
    got_summary.source.clear();
    prop_assert_eq!(&got_summary, &want, "after {}", after);
    let got_problems: Vec<_> = got
        .problems
        .iter()
        .filter(|p| !p.path.ends_with("_summary.json"))
        .map(|p| (p.path.clone(), p.line))
        .collect();
    prop_assert_eq!(got_problems, want_problems, "problems after {}", after);
    Ok(())
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir_all(t.path().join("token_stats").join(DAY)).unwrap();
    let root = Root::open(t.path()).unwrap();
    check(&root, "nothing")?;
    for (i, op) in ops.iter().enumerate() {
        apply(&root, op);
        check(&root, &format!("op #{i} {op:?}"))?;
        if i % 5 == 4 {
            // A new process: from the cache (when it is current) or a full read.
            forget_summary(&root, day()).unwrap();
            check(&root, &format!("op #{i} {op:?}, afresh"))?;
        }
    }
    // Never a cached summary with problems: what is on disk is a whole day's.
    let on_disk = day_dir(&root).join("_summary.json");
    if let Ok(bytes) = fs::read(&on_disk) {
        let cached: Summary = serde_json::from_slice(&bytes).unwrap();
        let (_, problems) = full(&root);
        if problems.is_empty() {
            let (want, _) = full(&root);
            if cached.totals != want.totals {
                // Stale is allowed (the process answers from memory), but then its stamp
                // says so: a new process does not take it.
                forget_summary(&root, day()).unwrap();
                prop_assert!(root.summary(day()).unwrap().rebuilt);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Watched (inotify): after every change, the summary kept equals a full read.
    #[test]
    fn incremental_equals_full_read(ops in proptest::collection::vec(op(), 1..40)) {
        if std::env::var_os(POLLED_CHILD).is_some() {
            // The polled child runs only the polled test.
            return Ok(());
        }
        run(&ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// The body of the polled run (does nothing unless run as the child below).
    #[test]
    fn polled_child(ops in proptest::collection::vec(op(), 1..40)) {
        if std::env::var_os(POLLED_CHILD).is_none() {
            return Ok(());
        }
        run(&ops)?;
    }
}

/// Polled (no inotify, every call lists and stats): the same property, in a child process
/// whose environment says `TMPA_SUMMARY_WATCH=0`.
#[test]
fn incremental_equals_full_read_when_polled() {
    support::run_polled_child("polled_child", POLLED_CHILD);
}
