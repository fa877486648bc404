//! `--verify DIR`: the restore drill's check of a snapshot or a restored tree, through
//! tmpa-core's own readers (the day read that merges and compares compacted and loose
//! events, the summary computation, the archive decompression).

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::IgnoredAny;
use tmpa_core::maintenance::{
    Dir, Kind, NOTIFICATION_BYTES_MAX, SESSION_BYTES_MAX, STATE_DIR, VERSIONS_DIR, gunzip_bounded,
    map_ordered, read_archive, root_dir, serialize_path, temp_final_name, version_of_dir,
};
use tmpa_core::{Day, Problem, ProblemKind, Root, Summary};
use tmpa_maint::{ExitStatus, StartError, header_line, log_line, now_rfc3339, out};

use crate::PROBLEMS_LISTED_MAX;
use crate::take::MANIFEST_NAME;

/// How a file's bytes become the JSON they hold (an archive's gunzip).
type Decode = fn(&[u8], &Path, u64) -> tmpa_core::Result<Vec<u8>>;

/// What a verification read.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyCounts {
    /// Day directories read.
    pub days: u64,
    /// Valid events (compacted and loose, each id once).
    pub events: u64,
    /// Live sessions read.
    pub sessions: u64,
    /// Local archives decompressed.
    pub archives: u64,
    /// Notifications read.
    pub notifications: u64,
    /// Archives of acknowledged notifications read whole, every member checked against
    /// its index.
    pub notification_archives: u64,
    /// Notifications (with their acks) in those archives.
    pub archived_notifications: u64,
    /// Read receipts (acks) seen.
    pub acks: u64,
    /// Temporaries seen (not read; not a problem: leftovers of writes in progress).
    pub temporaries: u64,
    /// Problems found.
    pub problems: u64,
}

/// The verification's report.
#[derive(Debug, Serialize)]
pub struct VerifyReport {
    /// The tree checked.
    #[serde(serialize_with = "serialize_path")]
    pub dir: PathBuf,
    /// The snapshot's own record (`.tmpa/snapshot.json`), when the tree is a snapshot.
    pub snapshot: Option<serde_json::Value>,
    /// Where `tmpa.toml` sends archives, when to an object store: those sessions are not
    /// in the tree, and were not checked.
    pub archive_store: Option<String>,
    /// What was read.
    pub counts: VerifyCounts,
    /// Each problem, at most [`PROBLEMS_LISTED_MAX`], sorted by path.
    pub problems: Vec<Problem>,
    /// 0 (every file good) or 1.
    pub exit_code: u8,
}

/// Runs `--verify DIR`: prints the report and the log lines, returns 0 or 1.
///
/// # Errors
/// [`StartError::Core`] when `DIR` is not a TMPA tree (exit 2).
pub fn run(dir: &Path, json: bool) -> Result<ExitStatus, StartError> {
    let root = Root::open(dir)?;
    log_line(json, &header_line(crate::PROGRAM, "VERIFY", &root));
    let report = verify(&root);
    let status = if report.problems.is_empty() {
        ExitStatus::Ok
    } else {
        ExitStatus::NeedsLook
    };
    if json {
        let mut doc = serde_json::to_string_pretty(&report).expect("a report serializes");
        doc.push('\n');
        out(&doc);
    } else {
        out(&render_text(&report));
    }
    let c = &report.counts;
    log_line(
        json,
        &format!(
            "{} {} verified: days={} events={} sessions={} archives={} notifications={} notification_archives={} problems={} exit={} ({})",
            now_rfc3339(),
            crate::PROGRAM,
            c.days,
            c.events,
            c.sessions,
            c.archives,
            c.notifications,
            c.notification_archives,
            c.problems,
            status.code(),
            status.describe()
        ),
    );
    Ok(status)
}

/// Reads every file of the tree at `root` and reports each one that a restore could not
/// use. Writes nothing.
///
/// # Examples
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let day = dir.path().join("token_stats/2026-11-23");
/// std::fs::create_dir_all(&day).unwrap();
/// std::fs::write(day.join("evt_a.json"), br#"{"id":"a","ts":"2026-11-23T10:00:00Z",
///   "user_id":"u1","model":"m","prompt_tokens":3,"completion_tokens":4}"#).unwrap();
/// let root = tmpa_core::Root::open(dir.path()).unwrap();
/// let report = tmpa_snapshot::verify(&root);
/// assert_eq!((report.counts.events, report.exit_code), (1, 0));
/// std::fs::write(day.join("evt_b.json"), b"not json").unwrap();
/// let report = tmpa_snapshot::verify(&root);
/// assert!(report.problems[0].path.ends_with("evt_b.json"));
/// assert_eq!(report.exit_code, 1);
/// ```
pub fn verify(root: &Root) -> VerifyReport {
    let mut v = Verifier::default();
    v.days(root);
    v.chat_history(root);
    v.notifications(root);
    let archive_store = match root.archive_config() {
        Ok(Some(c)) => Some(c.url.to_string()),
        Ok(None) => None,
        Err(e) => {
            let path = e.path().unwrap_or(root.path()).to_path_buf();
            v.problem(Problem::from_error(&path, e));
            None
        }
    };
    let snapshot = root_dir(root)
        .open_dir(STATE_DIR)
        .ok()
        .and_then(|d| d.read(MANIFEST_NAME, 1 << 20).ok())
        .and_then(|(b, _)| serde_json::from_slice(&b).ok());
    v.problems.sort();
    v.problems.truncate(PROBLEMS_LISTED_MAX);
    let exit_code = u8::from(v.counts.problems > 0);
    VerifyReport {
        dir: root.path().to_path_buf(),
        snapshot,
        archive_store,
        counts: v.counts,
        problems: v.problems,
        exit_code,
    }
}

/// The text report: what the tree is, what was read, each problem.
fn render_text(r: &VerifyReport) -> String {
    let mut s = String::new();
    if let Some(m) = &r.snapshot {
        let _ = writeln!(
            s,
            "  a snapshot of {} taken at {}",
            m["root"].as_str().unwrap_or("?"),
            m["taken_at"].as_str().unwrap_or("?")
        );
    }
    let c = &r.counts;
    let _ = writeln!(
        s,
        "  read {} days ({} events), {} sessions, {} archives, {} notifications ({} acks), {} notification archives ({} notifications); {} temporaries not read",
        c.days,
        c.events,
        c.sessions,
        c.archives,
        c.notifications,
        c.acks,
        c.notification_archives,
        c.archived_notifications,
        c.temporaries
    );
    if let Some(url) = &r.archive_store {
        let _ = writeln!(
            s,
            "  note: tmpa.toml sends archives to {url}: the sessions archived there are not in this tree and were not checked"
        );
    }
    for p in &r.problems {
        let _ = writeln!(s, "  problem: {p}");
    }
    let _ = writeln!(
        s,
        "  {}",
        if c.problems == 0 {
            "every file is good: the tree can be restored".to_owned()
        } else {
            format!("{} problems", c.problems)
        }
    );
    s
}

#[derive(Default)]
struct Verifier {
    counts: VerifyCounts,
    problems: Vec<Problem>,
}

impl Verifier {
    fn problem(&mut self, p: Problem) {
        self.counts.problems += 1;
        self.problems.push(p);
    }

    /// Every day: its events read and merged by the library (a corrupt file, or a loose
    /// event that differs from its compacted copy, is a problem) and its summary computed.
    fn days(&mut self, root: &Root) {
        let Some(ts) = self.open_if_any(root_dir(root), "token_stats") else {
            return;
        };
        let mut days = Vec::new();
        for (name, kind) in self.list(&ts) {
            let day = name.to_str().and_then(|n| n.parse::<Day>().ok());
            match (day, kind) {
                (Some(d), Kind::Directory) => days.push(d),
                _ => self.problem(Problem::new(
                    ts.join(&name),
                    ProblemKind::Unsafe,
                    format!("{}, not a day directory (YYYY-MM-DD)", kind.words()),
                )),
            }
        }
        let reads = map_ordered(&days, |&day| (day, root.read_day(day)));
        for (day, read) in reads {
            self.counts.days += 1;
            match read {
                Ok(read) => {
                    self.counts.events += read.events.len() as u64;
                    let summary = Summary::compute(day, &read.events);
                    if !summary.is_self_consistent() {
                        self.problem(Problem::new(
                            ts.join(day.to_string()),
                            ProblemKind::Corrupt,
                            "the day's summary cannot be rebuilt consistently",
                        ));
                    }
                    for p in read.problems {
                        self.problem(p);
                    }
                }
                Err(e) => self.problem(Problem::from_error(&ts.join(day.to_string()), e)),
            }
        }
    }

    /// Every user's live sessions (JSON) and local archives (gzip of JSON).
    fn chat_history(&mut self, root: &Root) {
        let Some(ch) = self.open_if_any(root_dir(root), "chat_history") else {
            return;
        };
        for user in self.subdirs(&ch) {
            if let Some(sessions) = self.open_if_any(&user, "sessions") {
                self.counts.sessions +=
                    self.json_files(&sessions, ".json", SESSION_BYTES_MAX, None);
            }
            if let Some(archive) = self.open_if_any(&user, "archive") {
                self.counts.archives += self.json_files(
                    &archive,
                    ".json.gz",
                    SESSION_BYTES_MAX,
                    Some(gunzip_bounded),
                );
                // The later versions of sessions resumed after their archival.
                if let Some(versions) = self.open_if_any(&archive, VERSIONS_DIR) {
                    for (name, kind) in self.list(&versions) {
                        let Some(n) = name.to_str().filter(|n| version_of_dir(n).is_some()) else {
                            continue;
                        };
                        if kind != Kind::Directory {
                            self.problem(not_regular(
                                &versions.join(&name),
                                kind,
                                "a version directory",
                            ));
                            continue;
                        }
                        if let Some(dir) = self.open_if_any(&versions, n) {
                            self.counts.archives += self.json_files(
                                &dir,
                                ".json.gz",
                                SESSION_BYTES_MAX,
                                Some(gunzip_bounded),
                            );
                        }
                    }
                }
            }
        }
    }

    /// Every user's notifications (JSON) and acks (present).
    fn notifications(&mut self, root: &Root) {
        let Some(nd) = self.open_if_any(root_dir(root), "notifications") else {
            return;
        };
        for user in self.subdirs(&nd) {
            if let Some(inbox) = self.open_if_any(&user, "inbox") {
                self.counts.notifications +=
                    self.json_files(&inbox, ".json", NOTIFICATION_BYTES_MAX, None);
            }
            if let Some(ack) = self.open_if_any(&user, "ack") {
                self.counts.acks += self.files(&ack, ".ack").len() as u64;
            }
            if let Some(archive) = self.open_if_any(&user, "archive") {
                self.notification_archives(&archive);
            }
        }
    }

    /// Reads each archive of acknowledged notifications of `dir` whole: its index, and
    /// every notification and ack checked against it (tmpa-core's reader).
    fn notification_archives(&mut self, dir: &Dir) {
        for name in self.files(dir, ".tar.gz") {
            let path = dir.join(&name);
            let read = dir
                .open_read(&name)
                .and_then(|f| read_archive(f, &path, |_| true, |_| true));
            match read {
                Ok(index) => {
                    self.counts.notification_archives += 1;
                    self.counts.archived_notifications += index.len() as u64;
                }
                Err(e) => self.problem(Problem::from_error(&path, e)),
            }
        }
    }

    /// Reads each `*{ext}` file of `dir` (at most `bytes_max`), decodes it (`gunzip`, for
    /// archives) and checks it is JSON; returns how many there were.
    fn json_files(&mut self, dir: &Dir, ext: &str, bytes_max: u64, decode: Option<Decode>) -> u64 {
        let names = self.files(dir, ext);
        for name in &names {
            let path = dir.join(name);
            let bytes = dir.read(name, bytes_max).and_then(|(b, _)| match decode {
                Some(d) => d(&b, &path, bytes_max),
                None => Ok(b),
            });
            match bytes {
                Ok(b) => self.json(&path, &b),
                Err(e) => self.problem(Problem::from_error(&path, e)),
            }
        }
        names.len() as u64
    }

    fn json(&mut self, path: &Path, bytes: &[u8]) {
        if let Err(e) = serde_json::from_slice::<IgnoredAny>(bytes) {
            self.problem(Problem::new(
                path,
                ProblemKind::Corrupt,
                format!("not JSON: {e}"),
            ));
        }
    }

    /// The directory `name` of `dir`; a missing one is empty, a symlink a problem.
    fn open_if_any(&mut self, dir: &Dir, name: &str) -> Option<Dir> {
        match dir.open_dir(name) {
            Ok(d) => Some(d),
            Err(e) if e.io_kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                self.problem(Problem::from_error(&dir.join(name), e));
                None
            }
        }
    }

    /// The entries of `dir` with their kinds, sorted; a listing error is a problem.
    fn list(&mut self, dir: &Dir) -> Vec<(std::ffi::OsString, Kind)> {
        let names = match dir.names(|_| true) {
            Ok(n) => n,
            Err(e) => {
                self.problem(Problem::from_error(dir.path(), e));
                return Vec::new();
            }
        };
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            match dir.stat(&n) {
                Ok(Some(m)) => out.push((n, m.kind)),
                Ok(None) => {}
                Err(e) => self.problem(Problem::from_error(&dir.join(&n), e)),
            }
        }
        out
    }

    /// The user directories of a data directory (anything else is a problem).
    fn subdirs(&mut self, dir: &Dir) -> Vec<Dir> {
        let mut out = Vec::new();
        for (name, kind) in self.list(dir) {
            if kind != Kind::Directory {
                self.problem(not_regular(&dir.join(&name), kind, "a user directory"));
                continue;
            }
            match dir.open_dir(&name) {
                Ok(d) => out.push(d),
                Err(e) => self.problem(Problem::from_error(&dir.join(&name), e)),
            }
        }
        out
    }

    /// The regular files of `dir` named `*{ext}`, temporaries counted and left out, any
    /// other kind of entry with such a name a problem.
    fn files(&mut self, dir: &Dir, ext: &str) -> Vec<std::ffi::OsString> {
        let mut out = Vec::new();
        for (name, kind) in self.list(dir) {
            if temp_final_name(&name).is_some() {
                self.counts.temporaries += 1;
            } else if !name.as_encoded_bytes().ends_with(ext.as_bytes()) {
                continue;
            } else if kind == Kind::File {
                out.push(name);
            } else {
                self.problem(not_regular(&dir.join(&name), kind, "a regular file"));
            }
        }
        out
    }
}

fn not_regular(path: &Path, kind: Kind, expected: &str) -> Problem {
    Problem::new(
        path,
        ProblemKind::Unsafe,
        format!("{} where {expected} was expected", kind.words()),
    )
}
