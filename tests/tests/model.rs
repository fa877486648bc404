//! Model-based property test: random sequences of backend writes (on-time and late
//! events), compactions, dry runs and compactions killed at random points, checked after
//! every step against a plain in-memory model: no event lost, none duplicated, summaries
//! exact, every deleted loose file covered by a receipt.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use tmpa_core::{Day, Event, Root};
use tmpa_tests::{Tree, bin, event_json};

const DAYS: [&str; 3] = ["2026-10-01", "2026-10-02", "2026-10-03"];

#[derive(Clone, Debug)]
enum Step {
    /// The backend records `n` events on a day (late ones when the day is compacted).
    Write { day: usize, n: u8, tokens: u16 },
    /// A full compaction run.
    Compact,
    /// A dry run: must change nothing.
    DryRun,
    /// A compaction killed after this many microseconds.
    Killed { after_us: u32 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..DAYS.len(), 1..20u8, 0..5000u16).prop_map(|(day, n, tokens)| Step::Write { day, n, tokens }),
        2 => Just(Step::Compact),
        1 => Just(Step::DryRun),
        2 => (0..40_000u32).prop_map(|after_us| Step::Killed { after_us }),
    ]
}

/// What the tree must hold: every recorded event, per day.
#[derive(Default)]
struct Model {
    days: BTreeMap<usize, BTreeMap<String, (u64, u64)>>,
    next_id: u64,
}

fn run_compact(root: &Path, extra: &[&str]) -> i32 {
    bin("tmpa-compact")
        .arg("--root")
        .arg(root)
        .args(["--before", "2026-11-01"])
        .args(extra)
        .output()
        .expect("run")
        .status
        .code()
        .unwrap_or(-1)
}

fn receipted_files(root: &Path) -> BTreeSet<String> {
    tmpa_tests::receipt_lines_after_kills(root, "compact_events")
        .iter()
        .map(|v| v["file"].as_str().expect("file").to_owned())
        .collect()
}

fn check(
    tree: &Tree,
    root: &Root,
    model: &Model,
    ever_written: &BTreeSet<String>,
) -> Result<(), TestCaseError> {
    for (i, d) in DAYS.iter().enumerate() {
        let day: Day = d.parse().expect("day");
        let expected = model.days.get(&i).cloned().unwrap_or_default();
        if expected.is_empty() {
            continue;
        }
        let read = root.read_day(day).expect("read day");
        prop_assert!(read.problems.is_empty(), "{:?}", read.problems);
        let got: BTreeMap<String, (u64, u64)> = read
            .events
            .iter()
            .map(|e: &Event| {
                (
                    e.id().to_string(),
                    (e.prompt_tokens(), e.completion_tokens()),
                )
            })
            .collect();
        prop_assert_eq!(got.len(), read.events.len(), "an id twice");
        prop_assert_eq!(&got, &expected, "day {}", d);
        let s = root.summary(day).expect("summary").summary;
        prop_assert_eq!(s.totals.events, expected.len() as u64);
        prop_assert_eq!(
            s.totals.prompt_tokens,
            expected.values().map(|v| v.0).sum::<u64>()
        );
        prop_assert_eq!(
            s.totals.completion_tokens,
            expected.values().map(|v| v.1).sum::<u64>()
        );
    }
    // Every loose file that was written and is gone was receipted first.
    let receipted = receipted_files(&fs::canonicalize(tree.root()).expect("canon"));
    for p in ever_written {
        if !Path::new(p).exists() {
            prop_assert!(receipted.contains(p), "{} deleted without a receipt", p);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 50, ..ProptestConfig::default() })]

    /// Whatever the interleaving of writes, runs and kills, the tree always holds exactly
    /// the recorded events, summaries agree, and no file is deleted without a receipt.
    #[test]
    fn compaction_never_loses_or_duplicates(steps in prop::collection::vec(step(), 1..14)) {
        let tree = Tree::new();
        let root = Root::open(tree.root()).expect("root");
        let canon = fs::canonicalize(tree.root()).expect("canon");
        let mut model = Model::default();
        let mut written = BTreeSet::new();
        for s in steps {
            match s {
                Step::Write { day, n, tokens } => {
                    for _ in 0..n {
                        model.next_id += 1;
                        let id = format!("m{:06}", model.next_id);
                        let (p, c) = (u64::from(tokens) + model.next_id, model.next_id % 7);
                        let e = Event::from_json(
                            event_json(&id, &format!("{}T{:02}:00:00Z", DAYS[day], model.next_id % 24), "u", "m", p, c).as_bytes(),
                        ).expect("event");
                        let path = root.record_event(&e).expect("record");
                        written.insert(canon.join(path.strip_prefix(root.path()).expect("inside")).display().to_string());
                        model.days.entry(day).or_default().insert(id, (p, c));
                    }
                }
                Step::Compact => {
                    prop_assert_eq!(run_compact(tree.root(), &[]), 0);
                }
                Step::DryRun => {
                    let before = tree.snapshot();
                    prop_assert_eq!(run_compact(tree.root(), &["--dry-run"]), 0);
                    prop_assert_eq!(tree.snapshot(), before);
                }
                Step::Killed { after_us } => {
                    let mut child = bin("tmpa-compact")
                        .arg("--root").arg(tree.root()).args(["--before", "2026-11-01"])
                        .stdout(std::process::Stdio::null())
                        .spawn().expect("spawn");
                    std::thread::sleep(Duration::from_micros(u64::from(after_us)));
                    let _ = child.kill();
                    child.wait().expect("reap");
                }
            }
            check(&tree, &root, &model, &written)?;
        }
        // And a final clean run always finishes the job.
        prop_assert_eq!(run_compact(tree.root(), &[]), 0);
        check(&tree, &root, &model, &written)?;
        for d in DAYS {
            let dir = tree.root().join("token_stats").join(d);
            if dir.exists() {
                prop_assert!(fs::read_dir(&dir).expect("ls").flatten().all(|e| !e.file_name().to_string_lossy().starts_with("evt_")));
            }
        }
    }
}
