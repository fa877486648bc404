//! Model-based property test across all the programs: random sequences of backend writes
//! (events, late events, sessions, rewrites, crash leftovers), compactions, archivals,
//! temporary cleanups, dry runs of each, and runs killed at random points, checked after
//! every step against a plain in-memory model: no event or session lost or duplicated,
//! summaries exact, every deletion covered by a receipt, no orphan temporary deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use proptest::prelude::*;
use tmpa_core::{Day, Event, Root, SessionId, UserId};
use tmpa_tests::{Tree, age, bin, event_json};

const DAYS: [&str; 2] = ["2026-10-01", "2026-10-02"];
const USERS: [&str; 2] = ["ann", "bob"];
const OLD: Duration = Duration::from_secs(60 * 86_400);

#[derive(Clone, Copy, Debug)]
enum Program {
    Compact,
    Archive,
    Tmpclean,
}

impl Program {
    fn bin(self) -> &'static str {
        match self {
            Program::Compact => "tmpa-compact",
            Program::Archive => "tmpa-archive",
            Program::Tmpclean => "tmpa-tmpclean",
        }
    }

    fn args(self) -> &'static [&'static str] {
        match self {
            Program::Compact => &["--before", "2026-11-01"],
            Program::Archive => &["--older-than", "30d"],
            Program::Tmpclean => &["--older-than", "1m"],
        }
    }

    fn task(self) -> &'static str {
        match self {
            Program::Compact => "compact_events",
            Program::Archive => "archive_history",
            Program::Tmpclean => "tmp_cleanup",
        }
    }
}

#[derive(Clone, Debug)]
enum Step {
    /// The backend records `n` events on a day (late ones when the day is compacted).
    Events { day: usize, n: u8 },
    /// The backend writes a new session, old enough to archive or not.
    NewSession { user: usize, old: bool },
    /// The backend rewrites a live session (found by index among the live ones); a
    /// rewritten session is recent again.
    Rewrite { pick: usize },
    /// A backend crash leftover: a stale `{final}.tmp` next to a live file, or an orphan.
    Leftover { orphan: bool, pick: usize },
    /// A program's real run.
    Run(Program),
    /// A program's dry run: must change nothing.
    Dry(Program),
    /// A program killed after this many microseconds.
    Killed(Program, u32),
}

fn program() -> impl Strategy<Value = Program> {
    prop_oneof![
        Just(Program::Compact),
        Just(Program::Archive),
        Just(Program::Tmpclean)
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..DAYS.len(), 1..15u8).prop_map(|(day, n)| Step::Events { day, n }),
        3 => (0..USERS.len(), any::<bool>()).prop_map(|(user, old)| Step::NewSession { user, old }),
        1 => any::<usize>().prop_map(|pick| Step::Rewrite { pick }),
        1 => (any::<bool>(), any::<usize>()).prop_map(|(orphan, pick)| Step::Leftover { orphan, pick }),
        3 => program().prop_map(Step::Run),
        1 => program().prop_map(Step::Dry),
        2 => (program(), 0..30_000u32).prop_map(|(p, us)| Step::Killed(p, us)),
    ]
}

/// What the tree must hold.
#[derive(Default)]
struct Model {
    events: BTreeMap<usize, BTreeMap<String, (u64, u64)>>,
    /// (user, session) -> latest bytes.
    sessions: BTreeMap<(usize, String), Vec<u8>>,
    /// Temporaries the test left: path -> orphan?
    temps: BTreeMap<PathBuf, bool>,
    /// Every data file ever written (events and sessions), for the receipt check.
    written: BTreeSet<PathBuf>,
    next: u64,
}

struct World {
    tree: Tree,
    root: Root,
    canon: PathBuf,
}

/// tmpa-tmpclean deletes nothing while some process on the host cannot be inspected
/// (a sandbox's init, even for root); it then runs where every process can be, so that
/// its deletions are exercised too.
fn command(p: Program) -> std::process::Command {
    match p {
        Program::Tmpclean => bin(p.bin()),
        _ => bin(p.bin()),
    }
}

impl World {
    fn run(&self, p: Program, dry: bool) -> (i32, String) {
        let mut cmd = command(p);
        cmd.arg("--root").arg(self.tree.root()).args(p.args());
        if dry {
            cmd.arg("--dry-run");
        }
        let out = cmd.output().expect("run");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    fn kill(&self, p: Program, after_us: u32) {
        let mut child = command(p)
            .arg("--root")
            .arg(self.tree.root())
            .args(p.args())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_micros(u64::from(after_us)));
        let _ = child.kill();
        child.wait().expect("reap");
        // A program run behind `unshare` dies a moment after it (parent-death signal):
        // wait until its lock is free, as the next cron run would find it.
        let lock = self.canon.join(format!(".tmpa/locks/{}.lock", p.task()));
        for _ in 0..200 {
            match fs::File::open(&lock).map(|f| f.try_lock()) {
                Ok(Err(fs::TryLockError::WouldBlock)) => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => break,
            }
        }
    }

    fn live_sessions(&self, model: &Model) -> Vec<(usize, String)> {
        model
            .sessions
            .keys()
            .filter(|(u, s)| self.session_path(*u, s).exists())
            .cloned()
            .collect()
    }

    fn session_path(&self, user: usize, s: &str) -> PathBuf {
        self.canon
            .join(format!("chat_history/{}/sessions/{s}.json", USERS[user]))
    }

    /// Every file named by a complete receipt line of `task`.
    fn receipted(&self, task: &str) -> BTreeSet<PathBuf> {
        let mut out = BTreeSet::new();
        let Ok(rd) = fs::read_dir(self.canon.join(".tmpa/receipts").join(task)) else {
            return out;
        };
        for e in rd.flatten() {
            let text = fs::read_to_string(e.path()).expect("receipt");
            let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
            for line in complete.lines() {
                let v: serde_json::Value = serde_json::from_str(line).expect("receipt line");
                if let Some(f) = v["file"].as_str() {
                    out.insert(PathBuf::from(f));
                }
            }
        }
        out
    }
}

fn apply(w: &World, m: &mut Model, step: &Step) -> Result<(), TestCaseError> {
    match step {
        Step::Events { day, n } => {
            for _ in 0..*n {
                m.next += 1;
                let id = format!("e{:06}", m.next);
                let (p, c) = (m.next * 3, m.next % 11);
                let ts = format!("{}T{:02}:00:00Z", DAYS[*day], m.next % 24);
                let e = Event::from_json(event_json(&id, &ts, "ann", "m", p, c).as_bytes())
                    .expect("event");
                let path = w.root.record_event(&e).expect("record");
                m.written.insert(path);
                m.events.entry(*day).or_default().insert(id, (p, c));
            }
        }
        Step::NewSession { user, old } => {
            m.next += 1;
            let s = format!("s{:05}", m.next);
            let body = format!("{{\"session\":\"{s}\",\"v\":{}}}", m.next).into_bytes();
            write_session(w, m, *user, &s, body, *old);
        }
        Step::Rewrite { pick } => {
            let live = w.live_sessions(m);
            if !live.is_empty() {
                let (u, s) = live[pick % live.len()].clone();
                m.next += 1;
                let body = format!("{{\"session\":\"{s}\",\"rewritten\":{}}}", m.next).into_bytes();
                write_session(w, m, u, &s, body, false);
            }
        }
        Step::Leftover { orphan, pick } => {
            m.next += 1;
            let path = if *orphan {
                w.canon
                    .join(format!("chat_history/ann/sessions/gone{}.json.tmp", m.next))
            } else {
                let live: Vec<&PathBuf> = m.written.iter().filter(|p| p.exists()).collect();
                if live.is_empty() {
                    return Ok(());
                }
                let mut name = live[pick % live.len()].clone().into_os_string();
                name.push(".tmp");
                PathBuf::from(name)
            };
            fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            fs::write(&path, b"{\"half\":").expect("leftover");
            age(&path, OLD);
            m.temps.insert(path, *orphan);
        }
        Step::Run(p) => {
            let (code, out) = w.run(*p, false);
            prop_assert!(!out.contains("panicked"), "{out}");
            let ok: &[i32] = match p {
                // Orphans (the test's, and a killed archival's temporaries) are exit 1.
                Program::Tmpclean => &[0, 1],
                _ => &[0],
            };
            prop_assert!(ok.contains(&code), "{:?} exit {code}:\n{out}", p);
        }
        Step::Dry(p) => {
            let before = w.tree.snapshot();
            let (code, out) = w.run(*p, true);
            prop_assert!([0, 1].contains(&code), "{out}");
            prop_assert_eq!(
                w.tree.snapshot(),
                before,
                "a dry run of {:?} changed the tree",
                p
            );
        }
        Step::Killed(p, us) => w.kill(*p, *us),
    }
    Ok(())
}

fn write_session(w: &World, m: &mut Model, user: usize, s: &str, body: Vec<u8>, old: bool) {
    let rel = format!("chat_history/{}/sessions/{s}.json", USERS[user]);
    let path = w.root.write_file(&rel, &body).expect("write session");
    if old {
        age(&path, OLD);
    }
    m.written.insert(path);
    m.sessions.insert((user, s.to_owned()), body);
}

fn check(w: &World, m: &Model) -> Result<(), TestCaseError> {
    for (i, d) in DAYS.iter().enumerate() {
        let Some(want) = m.events.get(&i) else {
            continue;
        };
        let day: Day = d.parse().expect("day");
        let read = w.root.read_day(day).expect("read day");
        prop_assert!(read.problems.is_empty(), "{:?}", read.problems);
        let got: BTreeMap<String, (u64, u64)> = read
            .events
            .iter()
            .map(|e| {
                (
                    e.id().to_string(),
                    (e.prompt_tokens(), e.completion_tokens()),
                )
            })
            .collect();
        prop_assert_eq!(got.len(), read.events.len(), "an id twice");
        prop_assert_eq!(&got, want, "events of {}", d);
        let s = w.root.summary(day).expect("summary").summary;
        prop_assert_eq!(s.totals.events, want.len() as u64);
        prop_assert_eq!(
            s.totals.prompt_tokens,
            want.values().map(|v| v.0).sum::<u64>()
        );
    }
    for (u, user) in USERS.iter().enumerate() {
        let uid = UserId::new(*user).expect("user");
        let want: BTreeSet<String> = m
            .sessions
            .keys()
            .filter(|(x, _)| *x == u)
            .map(|(_, s)| s.clone())
            .collect();
        let listed: Vec<String> = w
            .root
            .list_sessions(&uid)
            .expect("list")
            .into_iter()
            .map(|(s, _)| s.to_string())
            .collect();
        prop_assert_eq!(listed.len(), want.len(), "a session listed twice or lost");
        prop_assert_eq!(listed.into_iter().collect::<BTreeSet<_>>(), want);
    }
    for ((u, s), body) in &m.sessions {
        let got = w
            .root
            .read_session(
                &UserId::new(USERS[*u]).expect("user"),
                &SessionId::new(s.as_str()).expect("id"),
            )
            .expect("session readable");
        prop_assert_eq!(
            &got,
            body,
            "session {}/{} lost its latest bytes",
            USERS[*u],
            s
        );
    }
    for (t, orphan) in &m.temps {
        if *orphan {
            prop_assert!(t.exists(), "orphan temporary {} deleted", t.display());
        }
    }
    // Every deletion is covered by a receipt of the program that made it.
    let (compact, archive, clean) = (
        w.receipted(Program::Compact.task()),
        w.receipted(Program::Archive.task()),
        w.receipted(Program::Tmpclean.task()),
    );
    for p in &m.written {
        // The backend never deletes in this test: whatever is gone, a program deleted.
        if !p.exists() {
            prop_assert!(
                compact.contains(p) || archive.contains(p),
                "{} deleted without a receipt",
                p.display()
            );
        }
    }
    for t in m.temps.keys() {
        if !t.exists() {
            prop_assert!(
                clean.contains(t),
                "{} deleted without a receipt",
                t.display()
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 40, ..ProptestConfig::default() })]

    /// Whatever the interleaving of backend writes and of the programs' runs, dry runs and
    /// kills, the tree always holds exactly what the backend wrote, and a final clean run
    /// of each program finishes every job.
    #[test]
    fn programs_never_lose_or_duplicate(steps in prop::collection::vec(step(), 1..16)) {
        let tree = Tree::new();
        let root = Root::open(tree.root()).expect("root");
        let canon = root.path().to_path_buf();
        let w = World { tree, root, canon };
        let mut m = Model::default();
        for s in &steps {
            apply(&w, &mut m, s)?;
            check(&w, &m)?;
        }
        // A file with a stale temporary of its name beside it is left by compaction and
        // archival until tmpa-tmpclean has removed that temporary: they run again after it.
        for p in [Program::Compact, Program::Archive, Program::Tmpclean, Program::Compact, Program::Archive] {
            let (code, out) = w.run(p, false);
            prop_assert!([0, 1].contains(&code), "{out}");
        }
        check(&w, &m)?;
        // A leftover whose final file still exists is stale garbage: the clean run removed it.
        for (t, orphan) in &m.temps {
            let fin = t.with_file_name(tmpa_core::temp_final_name(t.file_name().expect("name")).expect("a temporary"));
            if !orphan && fin.exists() {
                prop_assert!(!t.exists(), "stale {} kept", t.display());
            }
        }
        for d in DAYS {
            let dir = w.canon.join("token_stats").join(d);
            if dir.exists() {
                // Only temporaries may be left (an orphan, whose final file never existed,
                // which tmpa-tmpclean keeps by design).
                prop_assert!(fs::read_dir(&dir).expect("ls").flatten()
                    .all(|e| !e.file_name().to_string_lossy().starts_with("evt_")
                        || tmpa_core::temp_final_name(&e.file_name()).is_some()),
                    "loose events left in {}", d);
            }
        }
        for (u, s) in m.sessions.keys() {
            let p = w.session_path(*u, s);
            if p.exists() {
                let age = fs::metadata(&p).expect("meta").modified().expect("mtime")
                    .elapsed().unwrap_or_default();
                prop_assert!(age < Duration::from_secs(30 * 86_400), "old session {} not archived", p.display());
            }
        }
    }
}
