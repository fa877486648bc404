//! Reviewed plans (`--dry-run --save-plan FILE`, then `--apply-plan FILE`) for the three
//! programs that delete: the plan lists exactly what a real run would delete, with the
//! stamp and SHA-256 it would verify and what would hold the data; applying it deletes
//! that and nothing else, keeps what changed (exit 1), leaves what is new for the next
//! run, and refuses a plan for another program or root, of an incompatible version, or
//! torn (exit 2, nothing done). Dry runs record their plan's digest and say whether it is
//! the previous dry run's.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tmpa_tests::{Run, Tree, age};

const D1: &str = "2026-11-01";
const OLD: Duration = Duration::from_secs(60 * 86_400);

/// A plan file outside the tree (a plan is not part of the data), removed with it.
struct PlanFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl AsRef<Path> for PlanFile {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl std::ops::Deref for PlanFile {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.path
    }
}

impl PlanFile {
    /// A dry run of `program` on `t` with `args` that saves its plan here (exit 0).
    fn save(&self, t: &Tree, program: &str, args: &[&str]) -> Run {
        let path = self.path.to_str().expect("utf-8 path");
        let r = t.run(
            program,
            &[args, &["--dry-run", "--save-plan", path]].concat(),
        );
        assert_eq!(r.code, 0, "{r:?}");
        r
    }

    /// `program` on `t` with `args`, applying the plan saved here.
    fn apply(&self, t: &Tree, program: &str, args: &[&str]) -> Run {
        let path = self.path.to_str().expect("utf-8 path");
        t.run(program, &[args, &["--apply-plan", path]].concat())
    }
}

fn plan_file(_t: &Tree) -> PlanFile {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("plan.json");
    PlanFile { _dir: dir, path }
}

fn read_plan(p: &Path) -> Value {
    serde_json::from_slice(&fs::read(p).expect("plan")).expect("plan is JSON")
}

fn planned_files(plan: &Value) -> Vec<String> {
    plan["deletions"]
        .as_array()
        .expect("deletions")
        .iter()
        .map(|d| d["file"].as_str().expect("file").to_owned())
        .collect()
}

/// A dry run's plan note: its stderr's last line (in a cron log, the log's last line).
fn note(r: &Run) -> &str {
    r.stderr.lines().last().unwrap_or_default()
}

fn last_line(r: &Run) -> &str {
    r.stdout.lines().last().unwrap_or_default()
}

/// Compaction: the plan lists each loose file with its stamp and SHA-256 and the
/// `_compacted.json` that would hold it; applied, exactly those go; an event recorded
/// after the plan stays loose (not in the plan), one rewritten after it is kept (exit 1).
#[test]
fn compaction_plan_is_exact_and_applied_as_is() {
    let t = Tree::new();
    let files: Vec<PathBuf> = (0..4)
        .map(|i| t.event(D1, &format!("e{i}"), "u", 1, 1))
        .collect();
    let plan = plan_file(&t);
    plan.save(&t, "tmpa-compact", &["--before", "2026-11-02"]);
    let p = read_plan(&plan);
    assert_eq!(p["program"], "tmpa-compact");
    assert_eq!(p["task"], "compact_events");
    assert!(
        p["root"]
            .as_str()
            .is_some_and(|r| r.ends_with(t.root().file_name().expect("n").to_str().expect("u"))),
        "{p}"
    );
    assert_eq!(p["digest"].as_str().expect("digest").len(), 64);
    assert_eq!(planned_files(&p).len(), 4);
    // A dry run that saves nothing keeps only hashes of the lines: the same digest, and
    // the streak goes on.
    let again = t.run("tmpa-compact", &["--before", "2026-11-02", "--dry-run"]);
    let record: Value = serde_json::from_slice(
        &fs::read(t.root().join(".tmpa/runs/compact_events.json")).expect("record"),
    )
    .expect("json");
    assert_eq!(record["plan_digest"], p["digest"], "{again:?}");
    assert!(
        note(&again).contains("the same as the previous dry run's (2 dry runs in a row)"),
        "{again:?}"
    );
    for d in p["deletions"].as_array().expect("d") {
        assert_eq!(d["sha256"].as_str().expect("sha").len(), 64);
        assert!(d["stamp"]["ino"].as_u64().is_some());
        assert!(
            d["held_by"]
                .as_str()
                .expect("held")
                .ends_with("_compacted.json")
        );
        assert_eq!(d["verified_by"], "compacted_event");
    }
    assert!(
        files.iter().all(|f| f.exists()),
        "a dry run deleted something"
    );
    // After the plan: a new event, and one planned file rewritten with other bytes.
    let late = t.event(D1, "late", "u", 1, 1);
    fs::write(
        &files[1],
        tmpa_tests::event_json("e1", &format!("{D1}T12:00:00Z"), "u", "m", 9, 9),
    )
    .expect("rewrite");
    let r = plan.apply(&t, "tmpa-compact", &["--before", "2026-11-02"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        late.exists(),
        "not in the plan: left for the next run\n{}",
        r.stdout
    );
    assert!(
        files[1].exists(),
        "changed since the plan: kept\n{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("changed since the plan was made"),
        "{}",
        r.stdout
    );
    for i in [0, 2, 3] {
        assert!(
            !files[i].exists(),
            "{} planned and unchanged: deleted",
            files[i].display()
        );
    }
    assert!(last_line(&r).contains("applied_plan="), "{}", r.stdout);
    let record: Value = serde_json::from_slice(
        &fs::read(t.root().join(".tmpa/runs/compact_events.json")).expect("record"),
    )
    .expect("json");
    assert_eq!(record["applied_plan"], p["digest"]);
    // The next ordinary run finishes the job.
    let r = t.run("tmpa-compact", &["--before", "2026-11-02"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!late.exists() && !files[1].exists());
    let read = tmpa_core::Root::open(t.root())
        .expect("root")
        .read_day(D1.parse().expect("day"))
        .expect("read");
    assert_eq!(read.events.len(), 5, "{:?}", read.problems);
}

/// Archival: planned sessions are archived and deleted; one touched after the plan is
/// kept; a session that became old after the plan is left.
#[test]
fn archive_plan_is_applied_as_is() {
    let t = Tree::new();
    let mut sessions = Vec::new();
    for i in 0..3 {
        let p = t.file(
            format!("chat_history/u1/sessions/s{i}.json"),
            format!("{{\"i\":{i}}}"),
        );
        age(&p, OLD);
        sessions.push(p);
    }
    let plan = plan_file(&t);
    plan.save(&t, "tmpa-archive", &[]);
    let p = read_plan(&plan);
    assert_eq!(planned_files(&p).len(), 3);
    assert!(
        p["deletions"][0]["held_by"]
            .as_str()
            .expect("h")
            .ends_with("archive/s0.json.gz")
    );
    let newcomer = t.file("chat_history/u1/sessions/s9.json", "{}");
    age(&newcomer, OLD);
    fs::write(&sessions[2], b"{\"i\":2,\"more\":true}").expect("rewrite");
    age(&sessions[2], OLD);
    let r = plan.apply(&t, "tmpa-archive", &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        !sessions[0].exists() && !sessions[1].exists(),
        "{}",
        r.stdout
    );
    assert!(sessions[2].exists(), "changed: kept\n{}", r.stdout);
    assert!(newcomer.exists(), "not in the plan\n{}", r.stdout);
    assert!(t.root().join("chat_history/u1/archive/s0.json.gz").exists());
    assert!(!t.root().join("chat_history/u1/archive/s9.json.gz").exists());
}

/// Tmp cleanup: the plan lists each stale temporary with its proof; applied, exactly those
/// go (each proven again, lease and all); a temporary that went stale later is left.
#[test]
fn tmpclean_plan_is_applied_as_is() {
    let t = Tree::new();
    let mk = |n: &str| {
        t.file(format!("notifications/u1/inbox/{n}.json"), "{}");
        t.file(format!("notifications/u1/inbox/{n}.json.tmp"), "{")
    };
    let a = mk("ntf_a");
    let b = mk("ntf_b");
    std::thread::sleep(Duration::from_millis(1300));
    let plan = plan_file(&t);
    plan.save(&t, "tmpa-tmpclean", &["--older-than", "1m"]);
    let p = read_plan(&plan);
    assert_eq!(planned_files(&p).len(), 2);
    assert_eq!(p["deletions"][0]["not_open"], "lease");
    let c = mk("ntf_c");
    std::thread::sleep(Duration::from_millis(1300));
    let r = plan.apply(&t, "tmpa-tmpclean", &["--older-than", "1m"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!a.exists() && !b.exists(), "{}", r.stdout);
    assert!(c.exists(), "not in the plan\n{}", r.stdout);
    assert!(r.stdout.contains("not_in_plan"), "{}", r.stdout);
}

/// A plan for another program, for another root, of an incompatible version or format,
/// torn, or edited (its digest no longer matches) is refused: exit 2, nothing changed.
#[test]
fn plans_that_may_not_be_applied_are_refused() {
    let t = Tree::new();
    for i in 0..3 {
        t.event(D1, &format!("e{i}"), "u", 1, 1);
    }
    let plan = plan_file(&t);
    plan.save(&t, "tmpa-compact", &["--before", "2026-11-02"]);
    let good = fs::read_to_string(&plan).expect("plan");
    let other = Tree::new();
    other.event(D1, "x", "u", 1, 1);
    let before = (t.snapshot(), other.snapshot());
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut v: Value = serde_json::from_str(&good).expect("json");
        f(&mut v);
        serde_json::to_string(&v).expect("json")
    };
    let cases: Vec<(&str, String, &str, &Tree)> = vec![
        ("another program", good.clone(), "tmpa-tmpclean", &t),
        ("another root", good.clone(), "tmpa-compact", &other),
        (
            "incompatible version",
            edit(&|v| v["version"] = "9.9.0".into()),
            "tmpa-compact",
            &t,
        ),
        (
            "another format",
            edit(&|v| v["format"] = 3.into()),
            "tmpa-compact",
            &t,
        ),
        (
            "torn",
            good[..good.len() / 2].to_owned(),
            "tmpa-compact",
            &t,
        ),
        (
            "edited",
            edit(&|v| v["deletions"][0]["bytes"] = 1.into()),
            "tmpa-compact",
            &t,
        ),
    ];
    for (what, text, program, tree) in cases {
        fs::write(&plan, text).expect("write plan");
        let args: Vec<&str> = if program == "tmpa-tmpclean" {
            vec![
                "--older-than",
                "1m",
                "--apply-plan",
                plan.to_str().expect("p"),
            ]
        } else {
            vec![
                "--before",
                "2026-11-02",
                "--apply-plan",
                plan.to_str().expect("p"),
            ]
        };
        let r = tree.run(program, &args);
        assert_eq!(r.code, 2, "{what}: {r:?}");
        assert!(r.stderr.contains("nothing done"), "{what}: {}", r.stderr);
        assert_eq!(
            (t.snapshot(), other.snapshot()),
            before,
            "{what}: something changed"
        );
    }
    let r = t.run("tmpa-compact", &["--save-plan", plan.to_str().expect("p")]);
    assert_eq!(r.code, 2, "--save-plan needs --dry-run: {r:?}");
}

/// Each dry run records its plan's digest; its plan note (stderr's last line, so a cron
/// log's last line) says whether it is the previous dry run's, and how many in a row:
/// "stable for three nights" in one line. Stdout stays the same from run to run.
#[test]
fn dry_runs_say_whether_their_plan_is_the_previous_one() {
    let t = Tree::new();
    for i in 0..3 {
        t.event(D1, &format!("e{i}"), "u", 1, 1);
    }
    let args = ["--before", "2026-11-02", "--dry-run"];
    let first = t.run("tmpa-compact", &args);
    assert!(
        note(&first).contains("no earlier dry run to compare with"),
        "{}",
        first.stderr
    );
    let second = t.run("tmpa-compact", &args);
    let third = t.run("tmpa-compact", &args);
    assert!(
        note(&second).contains("the same as the previous dry run's (2 dry runs in a row)"),
        "{}",
        second.stderr
    );
    assert!(
        note(&third).contains("the same as the previous dry run's (3 dry runs in a row)"),
        "{}",
        third.stderr
    );
    // Stdout stays the same from dry run to dry run on an unchanged tree (docs/OPERATIONS.md "Exit codes"): the
    // digest is in the last line, the comparison in the note.
    tmpa_tests::assert_same_dry_runs(t.root(), &second, &third);
    tmpa_tests::assert_same_dry_runs(t.root(), &first, &second);
    assert!(last_line(&first).contains(" plan="), "{}", first.stdout);
    let record: Value = serde_json::from_slice(
        &fs::read(t.root().join(".tmpa/runs/compact_events.json")).expect("record"),
    )
    .expect("json");
    assert_eq!(record["plan_streak"], 3);
    assert_eq!(record["plan_digest"].as_str().expect("digest").len(), 64);
    t.event(D1, "new", "u", 1, 1);
    let fourth = t.run("tmpa-compact", &args);
    assert!(
        note(&fourth).contains("differs from the previous dry run's"),
        "{}",
        fourth.stderr
    );
}
