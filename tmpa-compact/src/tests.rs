//! The streamed, spilled compaction against the library's own reading of a day: whatever
//! the events (same instants in other offsets, late events, duplicates, conflicts with the
//! same and with another `ts`, corrupt files), the budget (in memory, or runs spilled with
//! `_compacted.json` re-read from disk) and the id hash (a good one, or one that makes every
//! id collide), `_compacted.json` holds exactly the canonical bytes of the events
//! `Root::read_day` returns, the summary counts exactly those, and only conflicts and
//! corrupt files are left.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use proptest::prelude::*;
use tmpa_core::maintenance::{COMPACTED_NAME, write_compacted, write_compacted_to};
use tmpa_core::{Day, Event, Root, Summary};
use tmpa_maint::{Mode, Run, Setup};

use crate::scan::{DayOptions, RUN_BYTES_MIN};
use crate::{DayStatus, PROGRAM, TASK, compact_day};

const DAY: &str = "2026-11-01";

/// One event of a scenario: its id, instant (one of a few, so that many are equal, each
/// written in one of two offsets), tokens and a padding field (so that a few hundred
/// events outgrow a small budget).
#[derive(Clone, Debug)]
struct Ev {
    id: String,
    hour: u8,
    plus_one: bool,
    prompt: u64,
    pad: usize,
}

impl Ev {
    fn json(&self) -> String {
        let ts = if self.plus_one {
            format!("{DAY}T{:02}:00:00+01:00", self.hour + 1)
        } else {
            format!("{DAY}T{:02}:00:00Z", self.hour)
        };
        format!(
            r#"{{"id":{},"ts":"{ts}","user_id":"u{}","model":"m{}","prompt_tokens":{},"completion_tokens":1,"pad":"{}","x":{{"b":[1.5,2],"a":null}}}}"#,
            serde_json::to_string(&self.id).unwrap(),
            self.prompt % 3,
            self.prompt % 2,
            self.prompt,
            "p".repeat(self.pad)
        )
    }
}

/// What happens to an event of the scenario.
#[derive(Clone, Copy, Debug)]
enum Fate {
    /// Only a loose file.
    Loose,
    /// Only in `_compacted.json`.
    Compacted,
    /// In both, the same (a crash between write and delete).
    Duplicate,
    /// In both, the loose one with other tokens (same `ts`).
    ConflictSameTs,
    /// In both, the loose one at another instant.
    ConflictOtherTs,
}

fn scenario() -> impl Strategy<Value = (Vec<(Ev, Fate)>, usize)> {
    let ev = (0u32..400, 0u8..4, any::<bool>(), 0u64..50, 150usize..300).prop_map(
        |(n, hour, plus_one, prompt, pad)| Ev {
            // A few ids with characters JSON escapes or that sort oddly.
            id: match n % 50 {
                0 => format!("q\"{n}"),
                1 => format!("é{n}"),
                _ => format!("{n}"),
            },
            hour,
            plus_one,
            prompt,
            pad,
        },
    );
    let fate = prop_oneof![
        6 => Just(Fate::Loose),
        3 => Just(Fate::Compacted),
        3 => Just(Fate::Duplicate),
        1 => Just(Fate::ConflictSameTs),
        1 => Just(Fate::ConflictOtherTs),
    ];
    (
        proptest::collection::vec((ev, fate), 150..320),
        0usize..3, // corrupt loose files
    )
}

/// Writes the scenario's day under `root`; returns nothing but the tree.
fn build(root: &Path, events: &[(Ev, Fate)], corrupt: usize) {
    let dir = root.join(format!("token_stats/{DAY}"));
    fs::create_dir_all(&dir).unwrap();
    let mut seen = BTreeSet::new();
    let mut compacted = Vec::new();
    for (e, fate) in events {
        if !seen.insert(e.id.clone()) {
            continue; // each id once in the scenario
        }
        let loose = |json: String| fs::write(dir.join(format!("evt_{}.json", e.id)), json).unwrap();
        let event = Event::from_json(e.json().as_bytes()).unwrap();
        match fate {
            Fate::Loose => loose(e.json()),
            Fate::Compacted => compacted.push(event),
            Fate::Duplicate => {
                compacted.push(event);
                loose(e.json());
            }
            Fate::ConflictSameTs => {
                compacted.push(event);
                loose(
                    e.json()
                        .replace("\"completion_tokens\":1", "\"completion_tokens\":2"),
                );
            }
            Fate::ConflictOtherTs => {
                compacted.push(event);
                let mut other = e.clone();
                other.hour = (e.hour + 1) % 4;
                loose(other.json());
            }
        }
    }
    compacted.sort_by(Event::cmp_ts_id);
    if !compacted.is_empty() {
        let held = tmpa_core::maintenance::Dir::open_path(&dir).unwrap();
        write_compacted(&held, DAY.parse().unwrap(), &compacted).unwrap();
    }
    for i in 0..corrupt {
        fs::write(dir.join(format!("evt_bad{i}.json")), "{\"id\":").unwrap();
    }
}

fn copy_tree(from: &Path, to: &Path) {
    for e in walk(from) {
        let rel = e.strip_prefix(from).unwrap();
        let dest = to.join(rel);
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(&e, dest).unwrap();
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Every id of the form `n` collides with every other of the same length.
fn weak_hash(id: &[u8]) -> u64 {
    id.len() as u64
}

fn compact(root: &Path, opts: &DayOptions) -> crate::DayReport {
    let root = Root::open(root).unwrap();
    let mut run = Run::start(PROGRAM, TASK, root, Mode::Real, Setup::default()).unwrap();
    compact_day(&std::sync::Mutex::new(&mut run), DAY.parse().unwrap(), opts)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("TMPA_PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(12),
        ..ProptestConfig::default()
    })]

    #[test]
    fn spilled_streamed_and_colliding_merges_give_the_library_s_bytes(
        (events, corrupt) in scenario()
    ) {
        let original = tempfile::tempdir().unwrap();
        std::fs::create_dir(original.path().join("token_stats")).unwrap();
        build(original.path(), &events, corrupt);
        let day: Day = DAY.parse().unwrap();
        let expected = Root::open(original.path()).unwrap().read_day(day).unwrap();
        let mut want = Vec::new();
        write_compacted_to(&mut want, day, &expected.events).unwrap();
        let want_summary = Summary::compute(day, &expected.events);
        let loose_bytes: u64 = fs::read_dir(original.path().join(format!("token_stats/{DAY}")))
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().starts_with("evt_"))
            .map(|e| e.metadata().unwrap().len())
            .sum();
        let conflicts = expected
            .problems
            .iter()
            .filter(|p| p.kind == tmpa_core::ProblemKind::Conflict)
            .count();

        let configs = [
            ("in memory", DayOptions::new(256 << 20, false)),
            ("spilled", DayOptions::new(4 << 10, false)),
            ("colliding ids", DayOptions { id_hash: weak_hash, ..DayOptions::new(256 << 20, false) }),
            ("spilled, colliding ids", DayOptions { id_hash: weak_hash, ..DayOptions::new(4 << 10, false) }),
        ];
        for (what, opts) in configs {
            let t = tempfile::tempdir().unwrap();
            copy_tree(original.path(), t.path());
            let r = compact(t.path(), &opts);
            prop_assert!(r.error.is_none(), "{what}: {r:?}");
            prop_assert_eq!(r.status, DayStatus::Compacted, "{}", what);
            prop_assert_eq!(r.conflicts, conflicts, "{}", what);
            prop_assert_eq!(r.corrupt, corrupt, "{}", what);
            prop_assert_eq!(r.events, expected.events.len(), "{}", what);
            if what.starts_with("spilled") {
                // A run is never smaller than RUN_BYTES_MIN, whatever the budget: a day
                // whose loose events hold less than two of them may fit in one.
                if loose_bytes > 2 * RUN_BYTES_MIN as u64 {
                    prop_assert!(r.spilled_runs > 1, "{what}: not spilled ({loose_bytes} loose bytes): {r:?}");
                }
            } else {
                prop_assert_eq!(r.spilled_runs, 0, "{}", what);
            }
            let dir = t.path().join(format!("token_stats/{DAY}"));
            let got = fs::read(dir.join(COMPACTED_NAME)).unwrap();
            prop_assert!(got == want, "{what}: _compacted.json differs from the library's events");
            let cached = tmpa_core::maintenance::read_cached(
                &tmpa_core::maintenance::Dir::open_path(&dir).unwrap(),
                day,
            );
            if conflicts + corrupt == 0 {
                let mut summary = cached.expect("a summary");
                summary.source.clear();
                prop_assert_eq!(&summary, &want_summary, "{}", what);
            } else {
                // A day with problems is never cached.
                prop_assert!(cached.is_none(), "{what}: a summary cached beside problems");
            }
            let left = fs::read_dir(&dir)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("evt_"))
                .count();
            prop_assert_eq!(left, conflicts + corrupt, "{}: loose files left", what);
            prop_assert_eq!(
                fs::read_dir(t.path().join(".tmpa/spill")).map_or(0, Iterator::count),
                0,
                "{}: a spill file was left",
                what
            );
        }
    }
}
