//! Compaction keeps every value exactly: big integers, long decimals, exponents beyond
//! `f64`, escapes and nesting, as a Python backend writes them (an `int`, a `Decimal`).
//! Random events are written as loose files, compacted by the real program (which then
//! deletes the loose files), and Python's `json` with `Decimal` compares each event in
//! `_compacted.json` with the file as it was written.

use std::fmt::Write as _;
use std::fs;
use std::process::Command;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tmpa_tests::Tree;

const DAY: &str = "2026-11-01";

/// A JSON number as text, of the kinds a float would change.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        "-?[1-9][0-9]{19,40}",                  // beyond u64 and f64's 17 digits
        "-?(0|[1-9][0-9]{0,3})\\.[0-9]{18,30}", // long decimals
        "-?[1-9](\\.[0-9]{1,20})?[eE][-+]?[1-9][0-9]{2,3}", // exponents beyond f64's range
        "-?(0|[1-9][0-9]{0,5})(\\.[0-9]{1,6})?", // ordinary ones
        Just("-0".to_owned()),
        Just("-0.0".to_owned()),
        Just("1.0E+2".to_owned()),
        Just("1e-400".to_owned()),
    ]
}

/// A JSON string as text, with escapes of every kind.
fn string() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            "[a-z0-9 ]{1,5}",
            Just("\\n".to_owned()),
            Just("\\\"".to_owned()),
            Just("\\\\".to_owned()),
            Just("\\/".to_owned()),
            Just("\\u00e9".to_owned()),
            Just("\\u0001".to_owned()),
            Just("\\ud83d\\ude00".to_owned()),
            Just("é€😀".to_owned()),
        ],
        0..6,
    )
    .prop_map(|parts| format!("\"{}\"", parts.concat()))
}

/// Any JSON value as text, nested up to a few levels, with spaces here and there.
fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        number(),
        string(),
        Just("true".to_owned()),
        Just("null".to_owned()),
    ];
    leaf.prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5)
                .prop_map(|v| format!("[ {} ]", v.join(" , "))),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..5).prop_map(|m| {
                let members: Vec<String> =
                    m.iter().map(|(k, v)| format!("\"{k}\" : {v}")).collect();
                format!("{{ {} }}", members.join(", "))
            }),
        ]
    })
}

/// An event file's text: the required fields, then extra fields of any value.
fn event_text(id: usize, extra: &[(String, String)]) -> String {
    let mut s = format!(
        r#"{{ "id": "e{id}", "ts": "{DAY}T10:00:{:02}Z", "user_id": "u", "model": "m",
  "prompt_tokens": {id}, "completion_tokens": 1"#,
        id % 60
    );
    for (k, v) in extra {
        let _ = write!(s, ",\n  \"x_{k}\": {v}");
    }
    s.push_str(" }\n");
    s
}

const COMPARE: &str = r#"
import json, sys, glob, os
from decimal import Decimal
loose_dir, compacted = sys.argv[1], sys.argv[2]
with open(compacted) as f:
    doc = json.load(f, parse_float=Decimal)
by_id = {e["id"]: e for e in doc["events"]}
n = 0
for p in sorted(glob.glob(os.path.join(loose_dir, "evt_*.json"))):
    with open(p) as f:
        want = json.load(f, parse_float=Decimal)
    got = by_id.get(want["id"])
    if got != want:
        print("differs:", p, repr(want), repr(got))
        sys.exit(1)
    n += 1
if n != len(by_id):
    print("counts differ:", n, len(by_id))
    sys.exit(1)
print("same", n)
"#;

/// Random events with exotic numbers and strings survive compaction exactly, as Python's
/// `json` with `Decimal` reads them; the loose files were deleted (the compaction ran).
#[test]
fn compaction_keeps_every_value_exactly() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(16);
    let mut runner = TestRunner::new(Config {
        cases,
        ..Config::default()
    });
    let events = prop::collection::vec(prop::collection::vec(("[a-z]{1,3}", value()), 0..5), 1..12);
    runner
        .run(&events, |events| {
            let t = Tree::new();
            let originals = tempfile::tempdir().expect("tempdir");
            for (i, extra) in events.iter().enumerate() {
                let mut extra = extra.clone();
                extra.sort();
                extra.dedup_by(|a, b| a.0 == b.0);
                let text = event_text(i, &extra);
                t.file(format!("token_stats/{DAY}/evt_e{i}.json"), &text);
                fs::write(originals.path().join(format!("evt_e{i}.json")), &text)
                    .expect("keep the original");
            }
            let r = t.run("tmpa-compact", &["--day", DAY]);
            prop_assert_eq!(r.code, 0, "{:?}", r);
            let left = fs::read_dir(t.root().join("token_stats").join(DAY))
                .expect("day")
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("evt_"))
                .count();
            prop_assert_eq!(left, 0, "loose files left: {:?}", r);
            let out = Command::new("python3")
                .args(["-c", COMPARE])
                .arg(originals.path())
                .arg(
                    t.root()
                        .join("token_stats")
                        .join(DAY)
                        .join("_compacted.json"),
                )
                .output()
                .expect("python3");
            prop_assert!(
                out.status.success(),
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(())
        })
        .unwrap();
}

/// An event whose object names a key twice is not compacted (readers disagree on which
/// value counts): it is kept and reported as corrupt.
#[test]
fn a_key_written_twice_keeps_the_file() {
    let t = Tree::new();
    let p = t.file(
        format!("token_stats/{DAY}/evt_d.json"),
        format!(
            r#"{{"id":"d","ts":"{DAY}T10:00:00Z","user_id":"u","model":"m","prompt_tokens":1,"completion_tokens":1,"x":{{"a":1,"a":2}}}}"#
        ),
    );
    let r = t.run("tmpa-compact", &["--day", DAY]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(p.exists());
    assert!(r.stdout.contains("appears twice"), "{}", r.stdout);
}

/// A `_compacted.json` written before numbers kept their text holds `1e2` as `100.0`: it
/// still reads, and a loose file of the same event spelled `1e2` (an interrupted run's
/// leftover) is a duplicate, deleted, not a conflict; the compacted file keeps `100.0`
/// (rewritten in format 2, with its checksums).
#[test]
fn an_old_spelling_of_the_same_value_is_a_duplicate() {
    let t = Tree::new();
    let head =
        format!(r#""id":"a","model":"m","prompt_tokens":1,"ts":"{DAY}T10:00:00Z","user_id":"u""#);
    let compacted = t.file(
        format!("token_stats/{DAY}/_compacted.json"),
        format!(
            "{{\"format\":1,\"day\":\"{DAY}\",\"events\":[\n{{\"completion_tokens\":1,{head},\"x\":100.0}}\n]}}\n"
        ),
    );
    let before = fs::read(&compacted).expect("read");
    let loose = t.file(
        format!("token_stats/{DAY}/evt_a.json"),
        format!("{{\"completion_tokens\":1,{head},\"x\":1e2}}"),
    );
    let r = t.run("tmpa-compact", &["--day", DAY]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!loose.exists(), "the duplicate goes");
    let after = String::from_utf8(fs::read(&compacted).expect("read")).expect("utf-8");
    let kept = String::from_utf8(before).expect("utf-8");
    let event_line = kept.lines().nth(1).expect("the event line");
    assert!(after.starts_with("{\"format\":2,"), "{after}");
    assert_eq!(after.lines().nth(1), Some(event_line), "{after}");
    assert_eq!(tmpa_tests::events_in_days(t.root(), &[DAY]), 1);
    // Another value is a conflict, kept.
    let other = t.file(
        format!("token_stats/{DAY}/evt_a.json"),
        format!("{{\"completion_tokens\":1,{head},\"x\":100.000000000000000001}}"),
    );
    let r = t.run("tmpa-compact", &["--day", DAY]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(other.exists());
}
