//! Property tests of tmpa-core's invariants, through the public API only:
//! a day's read is the union of what was recorded (each id once, whatever was compacted),
//! a summary is a fold of the events (whatever state the cache was left in), and exactly
//! the temporary names of docs/FORMAT.md "Temporaries" map back to a final name.

#![allow(
    clippy::disallowed_methods,
    reason = "tests build and break trees by path"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use proptest::prelude::*;
use tmpa_core::maintenance::{SUMMARY_NAME, write_compacted};
use tmpa_core::{AtomicFile, Day, Event, Root, Summary, temp_final_name};

/// The days events fall on; few, so that days collect several events and compactions.
const DAYS: [&str; 3] = ["2026-11-01", "2026-11-02", "2026-12-31"];
/// Offsets of `ts`: an event's day is the date written in its own offset.
const OFFSETS: [&str; 4] = ["Z", "+00:00", "+05:30", "-08:00"];
/// Few users and models, so that `by_user` and `by_model` group several events.
const USERS: [&str; 3] = ["u1", "alice@example.com", "../not/a/path"];
const MODELS: [&str; 3] = ["m-small", "m-large", "m x"];

/// What the test means to record: enough to write the JSON and to know the expected day.
#[derive(Clone, Debug)]
struct Spec {
    day: usize,
    secs: u32,
    offset: usize,
    user: usize,
    model: usize,
    prompt: u64,
    completion: u64,
    extra: Option<String>,
}

impl Spec {
    fn day(&self) -> &'static str {
        DAYS[self.day]
    }

    fn json(&self, id: &str) -> String {
        let s = self.secs;
        let ts = format!(
            "{}T{:02}:{:02}:{:02}{}",
            self.day(),
            s / 3600,
            s / 60 % 60,
            s % 60,
            OFFSETS[self.offset]
        );
        let mut v = serde_json::json!({
            "id": id,
            "ts": ts,
            "user_id": USERS[self.user],
            "model": MODELS[self.model],
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
        });
        if let Some(x) = &self.extra {
            // An unknown field, nested: it must come back unchanged.
            v["trace"] = serde_json::json!({"note": x, "list": [1, 2.5, null]});
        }
        v.to_string()
    }
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0..DAYS.len(),
        // Few distinct seconds, so that equal timestamps (ordered by id) happen.
        prop_oneof![0u32..86_400, (0u32..4).prop_map(|s| s * 3600)],
        0..OFFSETS.len(),
        0..USERS.len(),
        0..MODELS.len(),
        0u64..2_000_000,
        0u64..2_000_000,
        proptest::option::of("[a-z \"\\\\é]{0,12}"),
    )
        .prop_map(
            |(day, secs, offset, user, model, prompt, completion, extra)| Spec {
                day,
                secs,
                offset,
                user,
                model,
                prompt,
                completion,
                extra,
            },
        )
}

/// One step of a run: record event `i` of the batch (again, if it was already), or compact
/// a day the way tmpa-compact does (merge into `_compacted.json`, delete the loose files).
#[derive(Clone, Debug)]
enum Op {
    Record(usize),
    Compact(usize),
}

fn ops(events: usize) -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        6 => (0..events).prop_map(Op::Record),
        1 => (0..DAYS.len()).prop_map(Op::Compact),
    ];
    proptest::collection::vec(op, 0..events * 2)
}

fn batch() -> impl Strategy<Value = (Vec<Spec>, Vec<Op>)> {
    proptest::collection::vec(spec(), 1..16).prop_flat_map(|specs| {
        let n = specs.len();
        (Just(specs), ops(n))
    })
}

fn new_root() -> (tempfile::TempDir, Root) {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("token_stats")).unwrap();
    let root = Root::open(dir.path()).unwrap();
    (dir, root)
}

/// The events of the batch, built from JSON; ids are unique within a batch (`e{i}`).
fn events_of(specs: &[Spec]) -> Vec<Event> {
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| Event::from_json(s.json(&format!("e{i}")).as_bytes()).unwrap())
        .collect()
}

/// Runs `ops`, returning for each day the indexes of the events recorded on it.
fn run(root: &Root, specs: &[Spec], events: &[Event], ops: &[Op]) -> Vec<BTreeSet<usize>> {
    let mut recorded = vec![BTreeSet::new(); DAYS.len()];
    for op in ops {
        match *op {
            Op::Record(i) => {
                let path = root.record_event(&events[i]).unwrap();
                assert!(path.ends_with(format!("token_stats/{}/evt_e{i}.json", specs[i].day())));
                recorded[specs[i].day].insert(i);
            }
            Op::Compact(d) => compact(root, d, events, &recorded[d]),
        }
    }
    recorded
}

/// What tmpa-compact does to a day: everything recorded goes into `_compacted.json`, then
/// the loose files are deleted.
fn compact(root: &Root, d: usize, events: &[Event], recorded: &BTreeSet<usize>) {
    let day: Day = DAYS[d].parse().unwrap();
    let dir = day_dir(root, day);
    if !dir.exists() {
        return;
    }
    let merged = expected_order(events, recorded);
    write_compacted(
        &tmpa_core::maintenance::Dir::open_path(&dir).unwrap(),
        day,
        &merged,
    )
    .unwrap();
    for entry in fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name();
        if name.as_bytes().starts_with(b"evt_") {
            fs::remove_file(dir.join(name)).unwrap();
        }
    }
}

/// The recorded events sorted by (`ts` as an instant, `id`), computed without the library.
fn expected_order(events: &[Event], recorded: &BTreeSet<usize>) -> Vec<Event> {
    let mut out: Vec<&Event> = recorded.iter().map(|&i| &events[i]).collect();
    out.sort_by_key(|e| {
        let ts = e.to_map()["ts"].as_str().unwrap().to_owned();
        let instant = chrono::DateTime::parse_from_rfc3339(&ts).unwrap();
        (instant, e.to_map()["id"].as_str().unwrap().to_owned())
    });
    out.into_iter().cloned().collect()
}

/// Per-group counts (events, prompt, completion, total), folded by hand.
type Fold = (u64, u64, u64, u64);

fn fold_add(f: &mut Fold, s: &Spec) {
    f.0 += 1;
    f.1 += s.prompt;
    f.2 += s.completion;
    f.3 += s.prompt + s.completion;
}

/// The summary of the recorded events of a day, folded from the specs (not the library).
fn expected_summary(
    specs: &[Spec],
    recorded: &BTreeSet<usize>,
) -> (Fold, BTreeMap<String, Fold>, BTreeMap<String, Fold>) {
    let mut total = Fold::default();
    let mut by_user = BTreeMap::<String, Fold>::new();
    let mut by_model = BTreeMap::<String, Fold>::new();
    for &i in recorded {
        let s = &specs[i];
        fold_add(&mut total, s);
        fold_add(by_user.entry(USERS[s.user].to_owned()).or_default(), s);
        fold_add(by_model.entry(MODELS[s.model].to_owned()).or_default(), s);
    }
    (total, by_user, by_model)
}

fn assert_summary_is_fold(s: &Summary, specs: &[Spec], recorded: &BTreeSet<usize>, day: &str) {
    let as_fold = |t: &tmpa_core::Totals| {
        (
            t.events,
            t.prompt_tokens,
            t.completion_tokens,
            t.total_tokens,
        )
    };
    let (total, by_user, by_model) = expected_summary(specs, recorded);
    assert_eq!(s.format, 1);
    assert_eq!(s.day, day);
    assert_eq!(as_fold(&s.totals), total);
    let got_users: BTreeMap<String, Fold> = s
        .by_user
        .iter()
        .map(|(k, v)| (k.clone(), as_fold(v)))
        .collect();
    let got_models: BTreeMap<String, Fold> = s
        .by_model
        .iter()
        .map(|(k, v)| (k.clone(), as_fold(v)))
        .collect();
    assert_eq!(got_users, by_user);
    assert_eq!(got_models, by_model);
}

/// How the summary cache is damaged before it is read again.
#[derive(Clone, Debug)]
enum Damage {
    /// Left as it is.
    None,
    /// Arbitrary bytes.
    Garbage(Vec<u8>),
    /// Cut after `n` bytes.
    Truncated(usize),
    /// One more event than there is, everywhere, still self-consistent, with the stamp of
    /// another state of the day: a stale cache. (The same lie under the current stamp is
    /// undetectable by design: the stamp is the consistency check, see summary.rs.)
    Stale,
    /// Totals that disagree with `by_user` (stamp kept).
    Inconsistent,
    /// The summary of another day (stamp kept).
    OtherDay,
    /// Removed.
    Deleted,
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        Just(Damage::None),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Damage::Garbage),
        (0usize..400).prop_map(Damage::Truncated),
        Just(Damage::Stale),
        Just(Damage::Inconsistent),
        Just(Damage::OtherDay),
        Just(Damage::Deleted),
    ]
}

fn apply_damage(path: &Path, damage: &Damage) {
    if !path.exists() {
        return;
    }
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
    match damage {
        Damage::None => return,
        Damage::Garbage(b) => return fs::write(path, b).unwrap(),
        Damage::Truncated(n) => {
            let b = fs::read(path).unwrap();
            return fs::write(path, &b[..(*n).min(b.len().saturating_sub(1))]).unwrap();
        }
        Damage::Deleted => return fs::remove_file(path).unwrap(),
        Damage::Stale => {
            // Self-consistent: only the stamp can tell that it is stale.
            v["source"] = "v1:00000000000000000000000000000000".into();
            let bump = |t: &mut serde_json::Value| {
                t["events"] = (t["events"].as_u64().unwrap() + 1).into();
            };
            bump(&mut v);
            for group in ["by_user", "by_model"] {
                let map = v[group].as_object_mut().unwrap();
                match map.values_mut().next() {
                    Some(first) => bump(first),
                    None => {
                        map.insert(
                            "ghost".into(),
                            serde_json::json!({"events": 1, "prompt_tokens": 0,
                                "completion_tokens": 0, "total_tokens": 0}),
                        );
                    }
                }
            }
        }
        Damage::Inconsistent => {
            v["prompt_tokens"] = (v["prompt_tokens"].as_u64().unwrap() + 7).into();
            v["total_tokens"] = (v["total_tokens"].as_u64().unwrap() + 7).into();
        }
        Damage::OtherDay => v["day"] = "1999-01-01".into(),
    }
    fs::write(path, serde_json::to_vec(&v).unwrap()).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Random events recorded (some twice), days compacted in between: each day reads back
    /// as exactly the set recorded on it, each id once, sorted by (ts, id).
    #[test]
    fn day_read_is_the_union_of_what_was_recorded((specs, ops) in batch()) {
        let (_dir, root) = new_root();
        let events = events_of(&specs);
        let recorded = run(&root, &specs, &events, &ops);
        for (d, set) in recorded.iter().enumerate() {
            let read = root.read_day(DAYS[d].parse().unwrap()).unwrap();
            prop_assert!(read.problems.is_empty(), "{:?}", read.problems);
            let want = expected_order(&events, set);
            let got_ids: Vec<&str> = read.events.iter().map(|e| e.id().as_str()).collect();
            let want_ids: Vec<&str> = want.iter().map(|e| e.id().as_str()).collect();
            prop_assert_eq!(got_ids, want_ids);
            // Equal as JSON, unknown fields included.
            prop_assert_eq!(&read.events, &want);
        }
    }

    /// The summary equals a fold of the recorded events: computed, answered again, and
    /// after new events, both by this process (incrementally) and by a new one that finds
    /// the cache corrupted, stale or inconsistent and reads the day again.
    #[test]
    fn summary_is_a_fold_of_the_events(
        (specs, ops) in batch(),
        more in proptest::collection::vec(spec(), 0..4),
        damage in damage(),
    ) {
        let (_dir, root) = new_root();
        let events = events_of(&specs);
        let mut recorded = run(&root, &specs, &events, &ops);
        for (d, set) in recorded.iter().enumerate() {
            let day: Day = DAYS[d].parse().unwrap();
            let evs = expected_order(&events, set);
            assert_summary_is_fold(&Summary::compute(day, &evs), &specs, set, DAYS[d]);
            let first = root.summary(day).unwrap();
            prop_assert!(first.problems.is_empty(), "{:?}", first.problems);
            assert_summary_is_fold(&first.summary, &specs, set, DAYS[d]);
            let cached = root.summary(day).unwrap();
            assert_summary_is_fold(&cached.summary, &specs, set, DAYS[d]);
            if !set.is_empty() {
                prop_assert!(!cached.rebuilt, "a consistent cache was rebuilt");
            }
            apply_damage(&day_dir(&root, day).join(SUMMARY_NAME), &damage);
        }
        // Stale: events recorded after the cache was written (ids after the batch's).
        let mut all_specs = specs.clone();
        for s in &more {
            let i = all_specs.len();
            let e = Event::from_json(s.json(&format!("e{i}")).as_bytes()).unwrap();
            root.record_event(&e).unwrap();
            recorded[s.day].insert(i);
            all_specs.push(s.clone());
        }
        for (d, set) in recorded.iter().enumerate() {
            let day: Day = DAYS[d].parse().unwrap();
            // This process: what it knew, and only the new files read.
            let again = root.summary(day).unwrap();
            prop_assert!(again.problems.is_empty(), "{:?}", again.problems);
            assert_summary_is_fold(&again.summary, &all_specs, set, DAYS[d]);
            // A new process: the damaged or stale cache is noticed and the day read again.
            tmpa_core::maintenance::forget_summary(&root, day).unwrap();
            let fresh = root.summary(day).unwrap();
            prop_assert!(fresh.problems.is_empty(), "{:?}", fresh.problems);
            assert_summary_is_fold(&fresh.summary, &all_specs, set, DAYS[d]);
            if set.is_empty() {
                continue;
            }
            // Whatever was read again was also rewritten: the file on disk is the fold.
            let on_disk: Summary = serde_json::from_slice(
                &fs::read(day_dir(&root, day).join(SUMMARY_NAME)).unwrap(),
            ).unwrap();
            assert_summary_is_fold(&on_disk, &all_specs, set, DAYS[d]);
            prop_assert!(!root.summary(day).unwrap().rebuilt);
        }
    }
}

/// Bytes that can appear in a file name: anything but `/` and NUL.
fn name_byte() -> impl Strategy<Value = u8> {
    any::<u8>().prop_filter("not in file names", |b| *b != b'/' && *b != 0)
}

fn os(bytes: Vec<u8>) -> OsString {
    OsString::from_vec(bytes)
}

/// The final names `name` can be the temporary of, by docs/FORMAT.md "Temporaries" (`{final}.tmp`, or
/// `{final}.tmp.{suffix}` with any non-empty suffix, dots included), found by trying every
/// split of the name (an oracle independent of the library's parsing).
fn readings(name: &[u8]) -> BTreeSet<Vec<u8>> {
    let mut out = BTreeSet::new();
    for cut in 1..name.len() {
        let (head, rest) = name.split_at(cut);
        let Some(after) = rest.strip_prefix(b".tmp") else {
            continue;
        };
        if after.is_empty() || (after[0] == b'.' && after.len() > 1) {
            out.insert(head.to_vec());
        }
    }
    out
}

/// Pieces from which names close to temporaries are assembled.
const PIECES: [&str; 10] = [
    "a", ".", "tmp", ".tmp", ".tmp.", ".tmpl", "tmpfoo", "-", "1", "é",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// `{final}.tmp` and `{final}.tmp.{suffix}` (suffix non-empty, dots included) map to
    /// `final`, when the suffix itself holds no temporary's shape (`.tmp` at its end or
    /// before a dot: then the longer reading wins).
    #[test]
    fn temporary_maps_back_to_its_final_name(
        fin in proptest::collection::vec(name_byte(), 1..40),
        suffix in proptest::collection::vec(name_byte(), 1..20),
    ) {
        let fin = os(fin);
        let mut backend = fin.clone();
        backend.push(".tmp");
        prop_assert_eq!(temp_final_name(&backend), Some(fin.as_os_str()));
        // `{final}.tmp.tmp` is also `{final}.tmp`'s backend temporary; the library reads it
        // that way (see `names_near_temporaries_map_only_when_they_are_temporaries`).
        let mut whole = b".".to_vec();
        whole.extend_from_slice(&suffix);
        prop_assume!(readings(&whole).is_empty());
        prop_assume!(suffix != b"tmp");
        let mut ours = backend.clone();
        ours.push(".");
        ours.push(os(suffix));
        prop_assert_eq!(temp_final_name(&ours), Some(fin.as_os_str()));
    }

    /// Names built from pieces like `.tmp`, `.tmpl`, `tmpfoo`, `.` map to a final name
    /// exactly when they have a temporary's shape, and then to a right one.
    #[test]
    fn names_near_temporaries_map_only_when_they_are_temporaries(
        pieces in proptest::collection::vec(0..PIECES.len(), 0..8),
    ) {
        let name: String = pieces.iter().map(|&i| PIECES[i]).collect();
        let valid = readings(name.as_bytes());
        match temp_final_name(OsStr::new(&name)) {
            None => prop_assert!(valid.is_empty(), "{name:?} not recognised, could be {valid:?}"),
            Some(f) => {
                // Of several readings, the longest final name (the writer appended its
                // `.tmp…` to the end of the name).
                let longest = valid.iter().max_by_key(|v| v.len());
                prop_assert_eq!(Some(&f.as_bytes().to_vec()), longest, "{:?}", name);
            }
        }
    }

    /// Arbitrary names without `.tmp` in them are never temporaries.
    #[test]
    fn names_without_tmp_never_map(name in proptest::collection::vec(name_byte(), 0..40)) {
        prop_assume!(!name.windows(4).any(|w| w == b".tmp"));
        let name = os(name);
        prop_assert_eq!(temp_final_name(&name), None);
    }
}

/// The fixed examples of docs/FORMAT.md "Temporaries": what is and is not a temporary.
#[test]
fn spec_examples_of_temporary_names() {
    for (name, fin) in [
        ("a.json.tmp", Some("a.json")),
        ("a.json.tmp.4711-0-ff", Some("a.json")),
        ("evt_1.json.tmp.x", Some("evt_1.json")),
        (".tmp.x", None),
        (".tmp", None),
        ("x.tmpl", None),
        ("x.tmpfoo", None),
        ("x.tmp.", None),
        ("x.tmp.a.b", Some("x")),
        ("ntf_a.json.tmp.4242.9f3a", Some("ntf_a.json")),
        ("x.tmp..", Some("x")),
        ("x.json", None),
        ("tmp", None),
        ("", None),
    ] {
        assert_eq!(
            temp_final_name(OsStr::new(name)),
            fin.map(OsStr::new),
            "{name:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// The temporary `AtomicFile` creates maps back to the final name it will replace.
    #[test]
    fn atomic_file_temporary_maps_back(
        fin in proptest::collection::vec(name_byte(), 1..120),
    ) {
        prop_assume!(fin != b"." && fin != b"..");
        let dir = tempfile::tempdir().unwrap();
        let fin = os(fin);
        let dest = dir.path().join(&fin);
        let f = AtomicFile::create(&dest).unwrap();
        let tmp = f.tmp_path().to_path_buf();
        prop_assert_eq!(tmp.parent(), Some(dir.path()));
        prop_assert_eq!(temp_final_name(tmp.file_name().unwrap()), Some(fin.as_os_str()));
        drop(f);
        prop_assert!(!tmp.exists());
    }
}

/// `{root}/token_stats/{day}`.
fn day_dir(root: &Root, day: Day) -> std::path::PathBuf {
    root.path().join("token_stats").join(day.to_string())
}
