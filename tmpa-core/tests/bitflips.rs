//! A damaged byte in `_compacted.json` (the only copy of a compacted day) is never a silent
//! change: one bit flipped at every byte of the file, whatever it holds (structure, a
//! digit of a count, a letter of an id or user, the checksum table), and the day read
//! back through `read_day` and `summary`.
//!
//! Every read either says nothing changed and returns exactly the original events, or
//! names a problem; what it returns is always a subset of the original events, unchanged;
//! the summary is the fold of what the read returned, carries the same problems, and the
//! good `_summary.json` on disk is never overwritten by a damaged day's numbers.

use std::fs;

use tmpa_core::maintenance::{Dir, SUMMARY_NAME, write_compacted};
use tmpa_core::{Day, Event, Root, Summary};

const DAY: &str = "2026-11-23";

fn events() -> Vec<Event> {
    let specs = [
        ("a1", "10:00:00Z", "u1", 6225, 48, r#""note":"plain""#),
        (
            "b7",
            "11:02:00Z",
            "ü-2",
            31,
            9,
            r#""nested":{"k":[1,2.5,"x\"y"]}"#,
        ),
        (
            "c3",
            "11:02:00Z",
            "u1",
            1,
            0,
            r#""big":123456789012345678901234567890"#,
        ),
        (
            "d4",
            "23:59:59.999+00:00",
            "Zoë",
            900,
            12,
            r#""tiny":1e-400"#,
        ),
    ];
    specs
        .iter()
        .map(|(id, t, u, p, c, extra)| {
            Event::from_json(
                format!(
                    r#"{{"id":"{id}","ts":"{DAY}T{t}","user_id":"{u}","model":"gpt-4o","prompt_tokens":{p},"completion_tokens":{c},{extra}}}"#
                )
                .as_bytes(),
            )
            .unwrap()
        })
        .collect()
}

/// One bit flipped at every byte: no read is silently wrong.
#[test]
fn a_flipped_bit_anywhere_is_never_a_silent_change() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("token_stats").join(DAY);
    fs::create_dir_all(&dir).unwrap();
    let root = Root::open(t.path()).unwrap();
    let day: Day = DAY.parse().unwrap();
    let original = events();
    write_compacted(&Dir::open_path(&dir).unwrap(), day, &original).unwrap();
    let path = dir.join("_compacted.json");
    let good = fs::read(&path).unwrap();
    let good_summary = root.summary(day).unwrap();
    assert!(good_summary.problems.is_empty());
    assert_eq!(
        good_summary.summary.totals.prompt_tokens,
        6225 + 31 + 1 + 900
    );
    let cached = fs::read(dir.join(SUMMARY_NAME)).unwrap();

    let (mut noticed, mut salvaged) = (0, 0);
    for i in 0..good.len() {
        for bit in [0u8, 5] {
            let mut bad = good.clone();
            bad[i] ^= 1 << bit;
            // In place, as a disk's damage would be.
            fs::write(&path, &bad).unwrap();
            let what = format!(
                "byte {i} ({:?}) bit {bit}",
                char::from(good[i]).escape_default().to_string()
            );
            let read = root.read_day(day).unwrap();
            for e in &read.events {
                assert!(
                    original.contains(e),
                    "{what}: a changed event returned: {e:?}"
                );
            }
            if read.problems.is_empty() {
                assert_eq!(read.events, original, "{what}: silently different");
            } else {
                noticed += 1;
                salvaged += read.events.len();
                assert!(
                    read.problems
                        .iter()
                        .all(|p| p.path == path || p.path.starts_with(&dir)),
                    "{what}: {:?}",
                    read.problems
                );
            }
            let s = root.summary(day).unwrap();
            let mut got = s.summary.clone();
            got.source.clear();
            assert_eq!(got, Summary::compute(day, &read.events), "{what}");
            assert_eq!(s.problems, read.problems, "{what}");
            assert_eq!(
                fs::read(dir.join(SUMMARY_NAME)).unwrap(),
                cached,
                "{what}: the cache was rewritten"
            );
        }
    }
    fs::write(&path, &good).unwrap();
    assert_eq!(root.read_day(day).unwrap().events, original);
    // Every flip changes the file, so every one must have been noticed; most lines
    // survive a single flip.
    assert_eq!(noticed, good.len() * 2);
    assert!(
        salvaged >= noticed * 2,
        "{salvaged} events salvaged in {noticed} reads"
    );
}

/// The issue's two cases: an hour `10` → `00` (out of order) and a digit of
/// `prompt_tokens` changed: the rest of the day is read, the damaged line named.
#[test]
fn the_reported_cases_name_their_line() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("token_stats").join(DAY);
    fs::create_dir_all(&dir).unwrap();
    let root = Root::open(t.path()).unwrap();
    let day: Day = DAY.parse().unwrap();
    write_compacted(&Dir::open_path(&dir).unwrap(), day, events()).unwrap();
    let path = dir.join("_compacted.json");
    let good = String::from_utf8(fs::read(&path).unwrap()).unwrap();
    for (from, to, line) in [
        ("T10:00:00Z", "T00:00:00Z", 2),
        ("\"prompt_tokens\":6225", "\"prompt_tokens\":6235", 2),
        ("\"user_id\":\"Zoë\"", "\"user_id\":\"Zoe\"", 5),
    ] {
        fs::write(&path, good.replacen(from, to, 1)).unwrap();
        let s = root.summary(day).unwrap();
        assert_eq!(s.summary.totals.events, 3, "{to}");
        let lines: Vec<_> = s.problems.iter().filter_map(|p| p.line).collect();
        assert_eq!(lines, [line], "{to}: {:?}", s.problems);
        assert!(
            s.problems.iter().any(|p| p.reason.contains("checksum")),
            "{to}: {:?}",
            s.problems
        );
    }
}
