//! tmpa-compact on days larger than its memory budget: the runs spilled to
//! `.tmpa/spill/` give the bytes the in-memory merge gives, and neither a kill nor a full
//! disk during the spill loses an event or leaves a spill file behind. A small
//! `--memory-budget` makes a few thousand events spill, so the tests stay fast.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use tmpa_core::Root;
use tmpa_tests::{Tmpfs, Tree, bin, event_json};

const D1: &str = "2026-11-01";
const D2: &str = "2026-11-02";
/// The smallest budget the flag takes: a few hundred events fill it.
const SMALL: &str = "64K";

/// Writes `n` loose events of `day` under `root`, with many equal instants (and the same
/// instant written in two offsets) so that the (ts, id) order is exercised, some ids JSON
/// escapes, and a field per event that makes them about 300 bytes.
fn events(root: &Path, day: &str, n: usize, first: usize) {
    let dir = root.join(format!("token_stats/{day}"));
    fs::create_dir_all(&dir).expect("mkdir");
    for i in first..first + n {
        let id = if i % 97 == 0 {
            format!("é{i:05}")
        } else {
            format!("{i:05}")
        };
        let ts = if i % 2 == 0 {
            format!("{day}T{:02}:00:00Z", i % 5)
        } else {
            format!("{day}T{:02}:00:00+01:00", i % 5 + 1)
        };
        let body = event_json(&id, &ts, &format!("u{}", i % 7), "m", i as u64, 1)
            .replace('}', &format!(r#","trace":"{}"}}"#, "t".repeat(150)));
        fs::write(dir.join(format!("evt_{id}.json")), body).expect("write");
    }
}

fn loose_count(root: &Path, day: &str) -> usize {
    fs::read_dir(root.join(format!("token_stats/{day}")))
        .map(|rd| {
            rd.filter(|e| {
                e.as_ref()
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .starts_with("evt_")
            })
            .count()
        })
        .unwrap_or(0)
}

/// Whether the file system of `dir` creates unnamed files (`O_TMPFILE`), which the
/// spill file is where it can.
fn unnamed_files_work(dir: &Path) -> bool {
    use rustix::fs::{Mode, OFlags, open};
    open(
        dir,
        OFlags::RDWR | OFlags::TMPFILE,
        Mode::from_raw_mode(0o600),
    )
    .is_ok()
}

fn compacted(root: &Path, day: &str) -> Vec<u8> {
    fs::read(root.join(format!("token_stats/{day}/_compacted.json"))).expect("compacted")
}

/// The summary without its stamp (which holds the compacted file's inode and mtime).
fn summary(root: &Path, day: &str) -> Value {
    let mut v: Value = serde_json::from_slice(
        &fs::read(root.join(format!("token_stats/{day}/_summary.json"))).expect("summary"),
    )
    .expect("json");
    v.as_object_mut().expect("object").remove("source");
    v
}

/// Files left in `.tmpa/spill/` (none, once a run has ended, however it ended).
fn spill_files(root: &Path) -> Vec<String> {
    fs::read_dir(root.join(".tmpa/spill")).map_or_else(
        |_| Vec::new(),
        |rd| {
            rd.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        },
    )
}

fn copy_tree(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .expect("cp");
    assert!(status.success());
}

/// A day merged from sorted runs spilled to disk gives byte for byte the
/// `_compacted.json` and the summary of the same day merged in memory, with late events,
/// duplicates and conflicts (same and other `ts`), and the same report; the report says
/// it spilled; no spill file is left.
#[test]
fn spilled_day_gives_the_bytes_of_the_in_memory_merge() {
    let (mem, spilled) = (Tree::new(), Tree::new());
    events(mem.root(), D1, 1500, 0);
    // A first run compacts half, the rest arrives "late"; some arrive twice (a crash
    // between write and delete) and two with other content.
    assert_eq!(
        mem.run("tmpa-compact", &["--day", D1, "--no-delete"]).code,
        0
    );
    events(mem.root(), D1, 1500, 1500);
    let dir = mem.root().join(format!("token_stats/{D1}"));
    fs::write(
        dir.join("evt_00010.json"),
        event_json("00010", &format!("{D1}T00:00:00Z"), "u3", "m", 10, 99),
    )
    .expect("same ts, other content");
    fs::write(
        dir.join("evt_00011.json"),
        event_json("00011", &format!("{D1}T23:00:00Z"), "u4", "m", 11, 1),
    )
    .expect("other ts");
    fs::write(dir.join("evt_bad.json"), "{\"id\":").expect("corrupt");
    copy_tree(mem.root(), spilled.root());

    let a = mem.run("tmpa-compact", &["--day", D1, "--json"]);
    let b = spilled.run(
        "tmpa-compact",
        &["--day", D1, "--json", "--memory-budget", SMALL],
    );
    assert_eq!((a.code, b.code), (1, 1), "{a:?}\n{b:?}");
    assert_eq!(compacted(mem.root(), D1), compacted(spilled.root(), D1));
    assert_eq!(summary(mem.root(), D1), summary(spilled.root(), D1));
    let (ja, jb) = (a.json(), b.json());
    let day = |j: &Value| {
        let mut d = j["days"][0].clone();
        d.as_object_mut().expect("object").remove("spilled_runs");
        d.to_string()
    };
    assert_eq!(
        day(&ja).replace(&mem.root().display().to_string(), "<R>"),
        day(&jb).replace(&spilled.root().display().to_string(), "<R>")
    );
    assert_eq!(ja["days"][0]["spilled_runs"], 0);
    assert!(
        jb["days"][0]["spilled_runs"].as_u64().expect("runs") > 1,
        "{}",
        jb["days"][0]
    );
    assert_eq!(jb["days"][0]["conflicts"], 2);
    assert_eq!(jb["days"][0]["duplicates"], 1498);
    assert_eq!(jb["days"][0]["events"], 3000);
    assert_eq!(
        loose_count(spilled.root(), D1),
        3,
        "two conflicts and a corrupt file"
    );
    assert!(spill_files(spilled.root()).is_empty());
}

/// Killed with SIGKILL again and again while it reads a large day in runs spilled to
/// disk, then let finish: no event lost or counted twice, every loose file deleted, and
/// no spill file left; a leftover planted as a killed run could leave one is removed.
#[test]
fn sigkill_during_the_spill_loses_nothing_and_leaves_no_spill_file() {
    let t = Tree::new();
    let n = 8000;
    events(t.root(), D1, n, 0);
    let args = ["--day", D1, "--memory-budget", SMALL];
    // Scale kill times to this machine: a dry run reads and spills the whole day.
    let started = Instant::now();
    let dry = t.run(
        "tmpa-compact",
        &[&args[..], &["--dry-run", "--json"]].concat(),
    );
    let plan_us = started.elapsed().as_micros() as u64;
    assert!(
        dry.json()["days"][0]["spilled_runs"]
            .as_u64()
            .expect("runs")
            > 1,
        "the day must spill for this test to mean anything"
    );
    let unnamed = unnamed_files_work(&t.root().join(".tmpa/spill"));
    let (mut kills, mut before_any_deletion) = (0, 0);
    for k in 0..12u64 {
        let mut child = bin("tmpa-compact")
            .arg("--root")
            .arg(t.root())
            .args(args)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_micros(plan_us / 10 + plan_us * k / 16));
        if child.try_wait().expect("wait").is_none() {
            child.kill().expect("kill");
            kills += 1;
        }
        child.wait().expect("reap");
        let left = loose_count(t.root(), D1);
        // With unnamed files a kill can leave nothing; without, a kill in the instant
        // between creating the named file and unlinking it leaves one (swept below).
        assert!(
            !unnamed || spill_files(t.root()).is_empty(),
            "a killed run left {:?}",
            spill_files(t.root())
        );
        if left == n {
            before_any_deletion += 1;
        }
        if left == 0 {
            break;
        }
    }
    eprintln!("{kills} kills, {before_any_deletion} before any deletion, over {n} events");
    assert!(
        kills > 0 && before_any_deletion > 0,
        "no run was killed while reading: the test proved nothing"
    );
    // What a kill between creating the spill file and unlinking it leaves.
    let leftover = t.file(".tmpa/spill/compact_events.4242.1f.spill", "runs");
    let r = t.run("tmpa-compact", &[&args[..], &["--json"]].concat());
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["spill_leftovers_removed"], 1);
    assert!(!leftover.exists());
    assert!(spill_files(t.root()).is_empty());
    assert_eq!(loose_count(t.root(), D1), 0);
    let read = Root::open(t.root())
        .expect("root")
        .read_day(D1.parse().expect("day"))
        .expect("read");
    assert_eq!(read.events.len(), n, "every event exactly once");
    assert!(read.problems.is_empty(), "{:?}", read.problems);
    assert_eq!(summary(t.root(), D1)["events"], n as u64);
    let prompt: u64 = (0..n as u64).sum();
    assert_eq!(summary(t.root(), D1)["prompt_tokens"], prompt);
}

/// A disk that fills up while the runs are spilled (a small tmpfs): the day fails with
/// exit 4 naming the spill file and the problem, nothing is lost or deleted, no spill
/// file is left, and the next run after space returns completes.
#[test]
fn full_disk_during_the_spill_loses_nothing() {
    let Some(fs_) =
        tmpa_tests::prerequisite(Tmpfs::mount("8m", 10_000), "needs root to mount a tmpfs")
    else {
        return;
    };
    let root = fs_.path();
    fs::create_dir_all(root.join("token_stats")).expect("mkdir");
    events(root, D1, 600, 0);
    events(root, D2, 600, 600);
    let run = |extra: &[&str]| -> tmpa_tests::Run {
        bin("tmpa-compact")
            .arg("--root")
            .arg(root)
            .args(["--before", "2026-11-04", "--memory-budget", SMALL])
            .args(extra)
            .output()
            .expect("run")
            .into()
    };
    // A dry run makes the state directory (lock, run record, spill directory) while
    // there is room, so that the spill is the first thing the full disk refuses.
    let dry = run(&["--dry-run", "--json"]);
    assert!(
        dry.json()["days"][0]["spilled_runs"]
            .as_u64()
            .expect("runs")
            > 1
    );
    let filler = root.join("filler");
    let _ = fs::write(&filler, vec![0u8; 8 << 20]);
    let r = run(&[]);
    assert_eq!(r.code, 4, "{r:?}");
    assert!(
        r.stdout.contains(".tmpa/spill/") && r.stdout.contains("No space left"),
        "the error names the spill file and the problem:\n{}",
        r.stdout
    );
    assert!(r.stdout.contains(&format!("{D1} failed")), "{}", r.stdout);
    assert!(spill_files(root).is_empty(), "{:?}", spill_files(root));
    let count = || tmpa_tests::events_in_days(root, &[D1, D2]);
    assert_eq!(count(), 1200, "nothing lost on a full disk");
    assert_eq!(loose_count(root, D1) + loose_count(root, D2), 1200);
    fs::remove_file(&filler).expect("free space");
    let r = run(&[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(count(), 1200);
    assert_eq!(loose_count(root, D1) + loose_count(root, D2), 0);
    assert!(spill_files(root).is_empty());
}

/// --memory-budget takes binary units and refuses what is not a size or is too small
/// (exit 2, nothing written but the run record).
#[test]
fn memory_budget_is_checked() {
    let t = Tree::new();
    t.event(D1, "a", "u", 1, 1);
    for bad in ["12", "1.5G", "2MB", "lots", ""] {
        let r = t.run("tmpa-compact", &["--memory-budget", bad]);
        assert_eq!(r.code, 2, "{bad}: {r:?}");
        assert!(r.stderr.contains("memory-budget"), "{bad}: {}", r.stderr);
    }
    tmpa_tests::only_a_usage_error_record(t.root(), "compact_events");
    let help = t.run("tmpa-compact", &["--help"]);
    assert!(
        help.stdout.contains("--memory-budget") && help.stdout.contains("256MiB"),
        "{}",
        help.stdout
    );
    assert_eq!(t.run("tmpa-compact", &["--memory-budget", "1G"]).code, 0);
}

/// What peak RSS may exceed `--memory-budget` by, whatever the events: the readers' chunk
/// (8 MiB), the spill runs' read buffers (8 MiB), one event per reader thread in its
/// forms (file, parsed, canonical: about 3 × 1 MiB each), the write and read-back
/// buffers, and the program itself (a debug build here).
const RSS_OVER_BUDGET_MAX: u64 = 40 << 20;

/// Peak RSS of `program args` in bytes, measured by the kernel for that child alone
/// (`getrusage(RUSAGE_CHILDREN)` of a Python parent that runs only it), with its exit code.
fn peak_rss(program: &str, args: &[&str]) -> (i32, u64) {
    let exe = bin(program).get_program().to_owned();
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import resource, subprocess, sys\n\
             r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n\
             print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)",
        ])
        .arg(exe)
        .args(args)
        .output()
        .expect("run python3");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text
        .split_whitespace()
        .map(|w| w.parse::<i64>().expect("a number"));
    let code = it.next().expect("exit code") as i32;
    let kib = it.next().expect("maxrss") as u64;
    (code, kib << 10)
}

/// A day of 120 events of 500 KB (60 MB) compacted with `--memory-budget 4M` peaks within
/// the budget plus [`RSS_OVER_BUDGET_MAX`] (before reads were sized by bytes, the whole day
/// was held: about 1.1 times its size), and writes every event.
#[test]
fn large_events_compact_within_the_memory_budget() {
    let t = Tree::new();
    let dir = t.root().join(format!("token_stats/{D1}"));
    fs::create_dir_all(&dir).expect("mkdir");
    let pad = "p".repeat(500_000);
    for i in 0..120u64 {
        let id = format!("big{i:04}");
        let body = event_json(&id, &format!("{D1}T{:02}:00:00Z", i % 24), "u1", "m", i, 1)
            .replace('}', &format!(r#","pad":"{pad}"}}"#));
        fs::write(dir.join(format!("evt_{id}.json")), body).expect("write");
    }
    let budget = 4u64 << 20;
    let root = t.root().to_str().expect("UTF-8 root");
    let (code, rss) = peak_rss("tmpa-compact", &["--root", root, "--memory-budget", "4M"]);
    assert_eq!(code, 0);
    assert!(
        rss <= budget + RSS_OVER_BUDGET_MAX,
        "peak RSS {} MiB over a 4 MiB budget (+{} MiB allowed)",
        rss >> 20,
        RSS_OVER_BUDGET_MAX >> 20
    );
    let day = Root::open(t.root())
        .expect("root")
        .read_day(D1.parse().expect("day"))
        .expect("read");
    assert_eq!(day.events.len(), 120);
    assert_eq!(
        fs::read_dir(&dir).expect("ls").count(),
        2,
        "compacted and summary"
    );
}

/// Writes `n` empty loose files of `day` under `root`, each named by an id of the longest
/// length (246 bytes: a name of 255), so that holding a day's names costs about 300 bytes
/// a file.
fn long_names(root: &Path, day: &str, n: usize) {
    let dir = root.join(format!("token_stats/{day}"));
    fs::create_dir_all(&dir).expect("mkdir");
    for i in 0..n {
        let id = format!("{i:0>246}");
        fs::File::create(dir.join(format!("evt_{id}.json"))).expect("create");
    }
}

/// A day's loose names are never all held at once before the scan (which reads them in
/// batches within the budget): the peak RSS of a run over a day of 60,000 long names
/// that it then leaves (its `_compacted.json` is corrupt) is within 2 MiB of the same
/// run over a day of 1,000. (It used to list and sort every name first: 300 bytes a
/// name, 18 MiB here, so that 5 million names took 1.5 GB whatever `--memory-budget`
/// said.)
#[test]
fn a_day_s_names_are_not_held_whole_before_the_scan() {
    // Peak RSS of a real run and of a dry run over a day of `n` names.
    let peaks = |n: usize| -> [u64; 2] {
        let t = Tree::new();
        long_names(t.root(), D1, n);
        t.file(format!("token_stats/{D1}/_compacted.json"), "{\"format\":");
        let root = t.root().to_str().expect("UTF-8 root");
        let args = ["--root", root, "--day", D1, "--memory-budget", "1M"];
        [&args[..], &[&args[..], &["--dry-run"]].concat()].map(|args| {
            let (code, rss) = peak_rss("tmpa-compact", args);
            assert_eq!(code, 1, "the day is left untouched and reported");
            assert_eq!(loose_count(t.root(), D1), n, "nothing deleted");
            rss
        })
    };
    let (small, large) = (peaks(1_000), peaks(60_000));
    for (i, mode) in ["real run", "dry run"].iter().enumerate() {
        eprintln!(
            "{mode}: peak RSS {} KiB at 1,000 names, {} KiB at 60,000",
            small[i] >> 10,
            large[i] >> 10
        );
        assert!(
            large[i] <= small[i] + (2 << 20),
            "{mode}: 59,000 more names of 255 bytes took {} KiB more",
            large[i].saturating_sub(small[i]) >> 10
        );
    }
}

/// A day merged from runs spilled to disk whose loose files all stay (`--no-delete`) has
/// the summary stamp of the same day merged in memory, each loose file's name and stamp
/// merged back in name order from sorted runs of names spilled beside it: a run with the
/// default budget then finds the summary current. (A spilled day's stamp used to be left
/// empty: its summary was rewritten by every run.)
#[test]
fn a_spilled_day_kept_whole_is_stamped_as_in_memory() {
    let t = Tree::new();
    events(t.root(), D1, 3000, 0);
    let small = t.run(
        "tmpa-compact",
        &[
            "--day",
            D1,
            "--no-delete",
            "--json",
            "--memory-budget",
            SMALL,
        ],
    );
    assert_eq!(small.code, 0, "{small:?}");
    let day = &small.json()["days"][0];
    assert!(day["spilled_runs"].as_u64().expect("runs") > 1, "{day}");
    assert_eq!(day["summary_rewritten"], true);
    let source = |t: &Tree| {
        let v: Value = serde_json::from_slice(
            &fs::read(t.root().join(format!("token_stats/{D1}/_summary.json"))).expect("read"),
        )
        .expect("json");
        v["source"].as_str().expect("source").to_owned()
    };
    let spilled = source(&t);
    assert!(spilled.starts_with("v3:"), "{spilled}");
    for budget in ["256M", SMALL] {
        let again = t.run(
            "tmpa-compact",
            &[
                "--day",
                D1,
                "--no-delete",
                "--json",
                "--memory-budget",
                budget,
            ],
        );
        assert_eq!(again.code, 0, "{again:?}");
        let day = &again.json()["days"][0];
        assert_eq!(day["summary_rewritten"], false, "{budget}: {day}");
        assert_eq!(day["status"], "unchanged", "{budget}: {day}");
    }
    assert_eq!(source(&t), spilled);
    assert_eq!(loose_count(t.root(), D1), 3000);
    assert!(spill_files(t.root()).is_empty());
}
