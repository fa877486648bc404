//! tmpa-core used from many threads at once (docs/RELIABILITY.md "Durability"): writers recording events into a day
//! that does not exist yet while readers read the day and its summary. No reader ever sees
//! a problem or a duplicate, and once the writers are done the day and the summary hold
//! exactly what was recorded.

#![allow(
    clippy::disallowed_methods,
    reason = "tests build and break trees by path"
)]

use std::collections::BTreeSet;
use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tmpa_core::{Day, Event, Root};

const DAY: &str = "2026-11-01";
const WRITERS: u64 = 4;
const EVENTS_PER_WRITER: u64 = 60;
const READERS: usize = 3;

fn event(writer: u64, i: u64) -> Event {
    let v = serde_json::json!({
        "id": format!("w{writer}-{i:03}"),
        // Many equal timestamps: the order must fall back on the id.
        "ts": format!("{DAY}T{:02}:00:00+01:00", i % 24),
        "user_id": format!("u{}", i % 3),
        "model": format!("m{writer}"),
        "prompt_tokens": i,
        "completion_tokens": writer,
    });
    Event::from_value(v).unwrap()
}

/// Four writers record 240 events into one new day (each also re-recording some) while
/// three readers loop over `read_day` and `summary`: every read is clean and
/// self-consistent, and the final day and summary hold exactly the 240 events.
#[test]
fn writers_and_readers_on_one_day() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("token_stats")).unwrap();
    let root = Root::open(dir.path()).unwrap();
    let day: Day = DAY.parse().unwrap();
    let done = Arc::new(AtomicBool::new(false));

    let reads = std::thread::scope(|s| {
        let readers: Vec<_> = (0..READERS)
            .map(|_| {
                let (root, done) = (&root, Arc::clone(&done));
                s.spawn(move || {
                    let mut reads = 0u32;
                    while !done.load(Ordering::Relaxed) {
                        let read = root.read_day(day).unwrap();
                        assert!(read.problems.is_empty(), "{:?}", read.problems);
                        let ids: BTreeSet<_> = read.events.iter().map(|e| e.id()).collect();
                        assert_eq!(ids.len(), read.events.len(), "an id twice");
                        assert!(read.events.is_sorted_by(|a, b| a.cmp_ts_id(b).is_le()));
                        let sum = root.summary(day).unwrap();
                        assert!(sum.problems.is_empty(), "{:?}", sum.problems);
                        assert!(sum.summary.is_self_consistent());
                        assert!(sum.summary.totals.events <= WRITERS * EVENTS_PER_WRITER);
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let root = &root;
                s.spawn(move || {
                    for i in 0..EVENTS_PER_WRITER {
                        root.record_event(&event(w, i)).unwrap();
                        if i % 5 == 0 {
                            // Recording again is harmless, even while others read.
                            root.record_event(&event(w, i / 2)).unwrap();
                        }
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
        readers.into_iter().map(|r| r.join().unwrap()).sum::<u32>()
    });
    assert!(reads > 0);

    let all: Vec<Event> = (0..WRITERS)
        .flat_map(|w| (0..EVENTS_PER_WRITER).map(move |i| event(w, i)))
        .collect();
    let mut want = all.clone();
    want.sort_by(|a, b| a.cmp_ts_id(b));
    let read = root.read_day(day).unwrap();
    assert!(read.problems.is_empty(), "{:?}", read.problems);
    assert_eq!(read.events, want);

    let sum = root.summary(day).unwrap().summary;
    assert_eq!(sum.totals.events, WRITERS * EVENTS_PER_WRITER);
    let prompt: u64 = all.iter().map(Event::prompt_tokens).sum();
    let completion: u64 = all.iter().map(Event::completion_tokens).sum();
    assert_eq!(sum.totals.prompt_tokens, prompt);
    assert_eq!(sum.totals.completion_tokens, completion);
    assert_eq!(sum.totals.total_tokens, prompt + completion);
    for w in 0..WRITERS {
        assert_eq!(sum.by_model[&format!("m{w}")].events, EVENTS_PER_WRITER);
    }
    assert!(!root.summary(day).unwrap().rebuilt);
    // No temporary left by any writer.
    let leftovers: Vec<_> = fs::read_dir(day_dir(&root, day))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| tmpa_core::temp_final_name(n).is_some())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// `{root}/token_stats/{day}`.
fn day_dir(root: &Root, day: Day) -> std::path::PathBuf {
    root.path().join("token_stats").join(day.to_string())
}

/// What tmpa-compact does to a day, as one step: every event read into `_compacted.json`
/// (written and made durable first), then the loose files it holds deleted.
fn compact_once(root: &Root, day: Day) {
    let dir = day_dir(root, day);
    let read = root.read_day(day).unwrap();
    assert!(read.problems.is_empty(), "{:?}", read.problems);
    let held = tmpa_core::maintenance::Dir::open_path(&dir).unwrap();
    tmpa_core::maintenance::write_compacted(&held, day, &read.events).unwrap();
    for e in &read.events {
        let _ = fs::remove_file(dir.join(e.file_name()));
    }
}

/// Writers record while readers take summaries and a compactor compacts the day over and
/// over: every summary is clean and self-consistent, counts at least every event whose
/// `record_event` returned before it began and never more than were recorded, and the
/// last one is exactly the fold of everything recorded.
#[test]
fn writers_readers_and_compaction_at_once() {
    use std::sync::atomic::AtomicU64;
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("token_stats")).unwrap();
    let root = Root::open(dir.path()).unwrap();
    let day: Day = DAY.parse().unwrap();
    let returned = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut reads = 0u32;
                    while !done.load(Ordering::SeqCst) {
                        let before = returned.load(Ordering::SeqCst);
                        let sum = root.summary(day).unwrap();
                        assert!(sum.problems.is_empty(), "{:?}", sum.problems);
                        assert!(sum.summary.is_self_consistent());
                        let n = sum.summary.totals.events;
                        assert!(n >= before, "{n} counted, {before} had returned before");
                        assert!(n <= WRITERS * EVENTS_PER_WRITER);
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        let compactor = s.spawn(|| {
            let mut runs = 0u32;
            while !done.load(Ordering::SeqCst) {
                if day_dir(&root, day).exists() {
                    compact_once(&root, day);
                    runs += 1;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            runs
        });
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (root, returned) = (&root, &returned);
                s.spawn(move || {
                    for i in 0..EVENTS_PER_WRITER {
                        root.record_event(&event(w, i)).unwrap();
                        returned.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::SeqCst);
        assert!(compactor.join().unwrap() > 0);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
    });
    compact_once(&root, day);
    let all: Vec<Event> = (0..WRITERS)
        .flat_map(|w| (0..EVENTS_PER_WRITER).map(move |i| event(w, i)))
        .collect();
    let sum = root.summary(day).unwrap();
    assert!(sum.problems.is_empty(), "{:?}", sum.problems);
    let mut got = sum.summary;
    got.source.clear();
    assert_eq!(got, tmpa_core::Summary::compute(day, &all));
}
