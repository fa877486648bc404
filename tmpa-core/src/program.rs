//! Plumbing shared by the four maintenance programs: root resolution, the per-program
//! lock, run records, receipts, the log's first and last lines, and exit codes (SPEC §3).
//!
//! Written once here so the programs cannot drift apart in how they lock, log or exit.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, IsTerminal, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{DateTime, Local, SecondsFormat};
use serde::{Deserialize, Serialize};

use crate::atomic::{self, sync_dir};
use crate::error::{Error, Result};
use crate::root::Root;

/// How a run ended (SPEC §3). Higher is worse; a run reports the worst it met.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ExitStatus {
    /// 0: done, nothing to report.
    Ok,
    /// 1: finished, but something needs a look; nothing unverified was deleted.
    NeedsLook,
    /// 2: usage or configuration error; nothing written.
    Usage,
    /// 3: another run of the same program holds the lock on this root.
    Locked,
    /// 4: any other failure (I/O, no space).
    Failure,
}

impl ExitStatus {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Ok => 0,
            ExitStatus::NeedsLook => 1,
            ExitStatus::Usage => 2,
            ExitStatus::Locked => 3,
            ExitStatus::Failure => 4,
        }
    }

    /// The worse of two statuses.
    pub fn worst(self, other: ExitStatus) -> ExitStatus {
        self.max(other)
    }

    /// A few words for the log's last line.
    pub fn describe(self) -> &'static str {
        match self {
            ExitStatus::Ok => "ok",
            ExitStatus::NeedsLook => "needs a look",
            ExitStatus::Usage => "usage error",
            ExitStatus::Locked => "locked by another run",
            ExitStatus::Failure => "failure",
        }
    }

    /// The status a start-up error maps to: a bad root or name is a usage error, a held
    /// lock is 3, anything else 4.
    pub fn of_error(e: &Error) -> ExitStatus {
        match e {
            Error::NotRoot { .. } | Error::InvalidName { .. } => ExitStatus::Usage,
            Error::Io {
                op: "open root", ..
            } => ExitStatus::Usage,
            Error::Locked { .. } => ExitStatus::Locked,
            _ => ExitStatus::Failure,
        }
    }
}

impl From<ExitStatus> for ExitCode {
    fn from(s: ExitStatus) -> ExitCode {
        ExitCode::from(s.code())
    }
}

/// Flags every maintenance program takes.
#[cfg(feature = "cli")]
#[derive(clap::Args, Clone, Debug)]
pub struct CommonArgs {
    /// The TMPA root to work on [default: the current directory]
    #[arg(long, env = "TMPA_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Plan and print exactly what a real run would do; change nothing outside {root}/.tmpa/
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as one JSON document on stdout (log lines go to stderr)
    #[arg(long)]
    pub json: bool,
}

/// Opens the root named by the flag (or `TMPA_ROOT`, which clap folds into the flag), else
/// the current directory.
///
/// # Errors
/// [`Error::NotRoot`] or [`Error::Io`] (both exit 2).
pub fn resolve_root(flag: Option<&Path>) -> Result<Root> {
    match flag {
        Some(p) => Root::open(p),
        None => {
            let cwd = std::env::current_dir().map_err(|e| Error::io("open root", ".", e))?;
            Root::open(cwd)
        }
    }
}

/// Now, in local time, as RFC 3339 with seconds.
pub fn now_rfc3339() -> String {
    rfc3339(Local::now())
}

fn rfc3339(t: DateTime<Local>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// The lock a program holds on a root for the duration of its run: an OS file lock
/// (`flock`, via std's `File::try_lock`) on `{root}/.tmpa/locks/{task}.lock`.
///
/// The OS releases it when the process dies, however it dies, so a killed run never
/// leaves a stale lock. The file holds the holder's pid and start time, for the message
/// that a second run prints.
#[derive(Debug)]
pub struct Lock {
    _file: File,
    path: PathBuf,
}

impl Lock {
    /// Takes the lock of `task` on `root` without waiting.
    ///
    /// # Errors
    /// [`Error::Locked`] naming the holder when another process holds it; [`Error::Io`]
    /// when the state directory cannot be made or the lock file opened.
    pub fn acquire(root: &Root, task: &str) -> Result<Lock> {
        let dir = root.ensure_dir(&root.state_dir().join("locks"))?;
        let path = dir.join(format!("{task}.lock"));
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("open lock", &path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(Error::Locked {
                    path,
                    holder: if holder.is_empty() {
                        "unknown".into()
                    } else {
                        holder.to_owned()
                    },
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
        }
        let note = format!("pid {} since {}\n", std::process::id(), now_rfc3339());
        // The note is informational: failing to write it must not fail the run.
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(note.as_bytes()));
        Ok(Lock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What every run leaves in `{root}/.tmpa/runs/{task}.json`, dry or not.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// `compact_events`, `archive_history` or `tmp_cleanup`.
    pub task: String,
    /// The binary that ran.
    pub program: String,
    /// The canonical root (escaped as by [`path_text`](crate::day::path_text)).
    pub root: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub finished_at: String,
    /// Wall time of the run.
    pub duration_secs: f64,
    /// Whether it was a dry run.
    pub dry_run: bool,
    /// The exit code it ended with.
    pub exit_code: u8,
    /// The program's counts (files deleted, events merged, ...).
    pub counts: BTreeMap<String, u64>,
    /// The receipt of what this run deleted, if it deleted anything.
    #[serde(default)]
    pub receipt: Option<String>,
    /// When the last real run that finished its work (exit 0 or 1) started, this one or an
    /// earlier one; carried forward by runs that do not succeed.
    #[serde(default)]
    pub last_success_at: Option<String>,
    /// Duration of that run.
    #[serde(default)]
    pub last_success_duration_secs: Option<f64>,
    /// Exit code of that run (0, or 1 when it finished but left something to look at).
    #[serde(default)]
    pub last_success_exit_code: Option<u8>,
}

/// Path of the run record of `task`.
pub fn run_record_path(root: &Root, task: &str) -> PathBuf {
    root.state_dir().join("runs").join(format!("{task}.json"))
}

/// Reads the run record of `task`, if there is one.
///
/// # Errors
/// [`Error::Io`] when it exists but cannot be read, [`Error::Corrupt`] when it is not a
/// run record.
pub fn read_run_record(root: &Root, task: &str) -> Result<Option<RunRecord>> {
    let path = run_record_path(root, task);
    let bytes = match crate::root::read_bounded(&path, 1 << 20) {
        Ok(b) => b,
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::Corrupt {
            path,
            reason: format!("not a run record: {e}"),
        })
}

/// A run in progress: the root, the held lock, the start time and the receipt.
#[derive(Debug)]
pub struct Run {
    program: &'static str,
    task: &'static str,
    root: Root,
    dry_run: bool,
    started: DateTime<Local>,
    receipt: Option<Receipt>,
    _lock: Lock,
}

impl Run {
    /// Takes the lock of `task` on `root` and starts the clock.
    ///
    /// # Errors
    /// [`Error::Locked`] (exit 3) or [`Error::Io`] from [`Lock::acquire`].
    pub fn start(
        program: &'static str,
        task: &'static str,
        root: Root,
        dry_run: bool,
    ) -> Result<Run> {
        let lock = Lock::acquire(&root, task)?;
        Ok(Run {
            program,
            task,
            root,
            dry_run,
            started: Local::now(),
            receipt: None,
            _lock: lock,
        })
    }

    /// The root.
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// Whether this is a dry run.
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// The log's first line: time, program, mode and root.
    pub fn header(&self, real_mode: &str) -> String {
        header_line(
            self.program,
            if self.dry_run { "DRY-RUN" } else { real_mode },
            &self.root,
        )
    }

    /// Appends entries to this run's receipt (creating it on first use) and fsyncs it.
    /// Call it **before** deleting what the entries describe: a deletion is then always
    /// covered by a durable receipt, even if the run is killed right after.
    ///
    /// # Errors
    /// [`Error::Io`] naming the receipt; the caller must then not delete.
    pub fn record_receipt(&mut self, entries: &[serde_json::Value]) -> Result<()> {
        assert!(
            !self.dry_run,
            "a dry run deletes nothing and writes no receipt"
        );
        if self.receipt.is_none() {
            self.receipt = Some(Receipt::create(&self.root, self.task, self.started)?);
        }
        self.receipt
            .as_mut()
            .expect("created above")
            .append(entries)
    }

    /// Writes the run record and returns the log's last line.
    ///
    /// # Errors
    /// [`Error::Io`] when the run record cannot be written.
    pub fn finish(
        self,
        exit: ExitStatus,
        counts: &BTreeMap<String, u64>,
    ) -> Result<(RunRecord, String)> {
        let finished = Local::now();
        let duration_secs = (finished - self.started).as_seconds_f64().max(0.0);
        let previous = read_run_record(&self.root, self.task).ok().flatten();
        let success = !self.dry_run && exit <= ExitStatus::NeedsLook;
        let (last_at, last_dur, last_exit) = if success {
            (
                Some(rfc3339(self.started)),
                Some(duration_secs),
                Some(exit.code()),
            )
        } else {
            previous.map_or((None, None, None), |p| {
                (
                    p.last_success_at,
                    p.last_success_duration_secs,
                    p.last_success_exit_code,
                )
            })
        };
        let record = RunRecord {
            task: self.task.to_owned(),
            program: self.program.to_owned(),
            root: crate::day::path_text(self.root.path()),
            started_at: rfc3339(self.started),
            finished_at: rfc3339(finished),
            duration_secs,
            dry_run: self.dry_run,
            exit_code: exit.code(),
            counts: counts.clone(),
            receipt: self
                .receipt
                .as_ref()
                .map(|r| crate::day::path_text(&r.path)),
            last_success_at: last_at,
            last_success_duration_secs: last_dur,
            last_success_exit_code: last_exit,
        };
        let dir = self.root.ensure_dir(&self.root.state_dir().join("runs"))?;
        let json = serde_json::to_vec_pretty(&record).expect("a run record always serializes");
        atomic::write(dir.join(format!("{}.json", self.task)), &json)?;
        let line = footer_line(self.program, exit, counts);
        Ok((record, line))
    }
}

/// The log's first line: `{time} {program} {mode} root={root}`.
pub fn header_line(program: &str, mode: &str, root: &Root) -> String {
    format!(
        "{} {program} {mode} root={}",
        now_rfc3339(),
        root.path().display()
    )
}

/// The log's last line: `{time} {program} finished: {counts} exit={code} ({words})`.
pub fn footer_line(program: &str, exit: ExitStatus, counts: &BTreeMap<String, u64>) -> String {
    let counts: Vec<String> = counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "{} {program} finished: {} exit={} ({})",
        now_rfc3339(),
        counts.join(" "),
        exit.code(),
        exit.describe()
    )
}

/// An append-only, fsynced JSON-lines record of what a run deleted:
/// `{root}/.tmpa/receipts/{task}/{start time}-{pid}.jsonl`.
#[derive(Debug)]
struct Receipt {
    file: File,
    path: PathBuf,
}

impl Receipt {
    fn create(root: &Root, task: &str, started: DateTime<Local>) -> Result<Receipt> {
        let dir = root.ensure_dir(&root.state_dir().join("receipts").join(task))?;
        let path = dir.join(format!(
            "{}-{}.jsonl",
            started.format("%Y%m%dT%H%M%S%z"),
            std::process::id()
        ));
        let file = File::options()
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| Error::io("create receipt", &path, e))?;
        sync_dir(&dir)?;
        Ok(Receipt { file, path })
    }

    fn append(&mut self, entries: &[serde_json::Value]) -> Result<()> {
        let mut buf = Vec::with_capacity(entries.len() * 200);
        for e in entries {
            serde_json::to_writer(&mut buf, e).expect("a JSON value always serializes");
            buf.push(b'\n');
        }
        self.file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Error::io("write receipt", &self.path, e))
    }
}

/// Progress on stderr, shown only when stderr is a terminal (never in a cron log).
#[derive(Debug)]
pub struct Progress {
    on: bool,
}

impl Progress {
    /// A progress line that prints only on a terminal.
    pub fn new() -> Progress {
        Progress {
            on: io::stderr().is_terminal(),
        }
    }

    /// Replaces the progress line.
    pub fn show(&self, msg: impl AsRef<str>) {
        if self.on {
            eprint!("\r\x1b[K{}", msg.as_ref());
        }
    }

    /// Clears the progress line.
    pub fn clear(&self) {
        if self.on {
            eprint!("\r\x1b[K");
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

/// Ends a program: prints a start-up error with its whole cause chain on stderr and maps
/// the outcome to the process exit code. The only place a program's exit code is decided.
pub fn exit(program: &str, outcome: Result<ExitStatus>) -> ExitCode {
    match outcome {
        Ok(status) => status.into(),
        Err(e) => {
            eprintln!("{program}: error: {}", e.chain());
            ExitStatus::of_error(&e).into()
        }
    }
}

/// Prints a log line (first or last): on stdout, or on stderr when stdout carries the
/// `--json` report, so that stdout stays one JSON document.
pub fn log_line(json: bool, line: &str) {
    if json {
        eprintln!("{line}");
    } else {
        out(&format!("{line}\n"));
    }
}

/// Writes `text` to stdout. A closed stdout (`tmpa-compact --dry-run | head`) is not an
/// error worth a panic: the run's work, run record and exit status stand; the rest of
/// the output is dropped.
pub fn out(text: &str) {
    let mut stdout = io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

/// A program's report: what `--json` prints, what the text output shows, and the counts
/// that go into the run record and the log's last line.
pub trait Report: Serialize {
    /// The totals (`deleted=3 kept=1 ...`).
    fn counts(&self) -> &BTreeMap<String, u64>;
    /// Records the exit code the run ended with (it is part of the JSON report).
    fn set_exit_code(&mut self, code: u8);
    /// The text report, one line per item, sorted; without the first and last log lines.
    fn render_text(&self) -> String;
}

/// Runs a maintenance program the same way for every program: resolves the root (flag,
/// `TMPA_ROOT`, current directory), takes the task's lock, prints the log's first line
/// (`mode`, or `DRY-RUN`), lets `work` do the run and judge it, then [`conclude`]s.
///
/// # Errors
/// Start-up errors only (not a root: exit 2; locked: exit 3); everything after start-up
/// is `work`'s to report, and shows in the returned status.
#[cfg(feature = "cli")]
pub fn run_program<R: Report>(
    program: &'static str,
    task: &'static str,
    common: &CommonArgs,
    mode: &str,
    work: impl FnOnce(&mut Run) -> (R, ExitStatus),
) -> Result<ExitStatus> {
    let root = resolve_root(common.root.as_deref())?;
    let mut run = Run::start(program, task, root, common.dry_run)?;
    log_line(common.json, &run.header(mode));
    let (mut report, status) = work(&mut run);
    Ok(conclude(run, status, common.json, &mut report))
}

/// Implements [`Report`] for a program's report type that has the fields
/// `counts: BTreeMap<String, u64>` and `exit_code: u8`, with a function
/// `render_text(&Report) -> String` in scope: what every program's report looks like.
#[macro_export]
macro_rules! impl_report {
    ($report:ty) => {
        impl $crate::program::Report for $report {
            fn counts(&self) -> &::std::collections::BTreeMap<String, u64> {
                &self.counts
            }

            fn set_exit_code(&mut self, code: u8) {
                self.exit_code = code;
            }

            fn render_text(&self) -> String {
                render_text(self)
            }
        }
    };
}

/// Ends a run the same way for every program: writes the run record (a failure to write
/// it makes the run exit 4), prints the report as text or as one JSON document, then the
/// log's last line. Returns the final status.
pub fn conclude(run: Run, status: ExitStatus, json: bool, report: &mut impl Report) -> ExitStatus {
    let program = run.program;
    let (status, footer) = match run.finish(status, report.counts()) {
        Ok((_, line)) => (status, line),
        Err(e) => {
            eprintln!(
                "{program}: error: cannot write the run record: {}",
                e.chain()
            );
            let status = ExitStatus::Failure;
            (status, footer_line(program, status, report.counts()))
        }
    };
    report.set_exit_code(status.code());
    if json {
        let mut doc = serde_json::to_string_pretty(report).expect("a report always serializes");
        doc.push('\n');
        out(&doc);
    } else {
        out(&report.render_text());
    }
    log_line(json, &footer);
    status
}

/// Parses an age such as `90s`, `15m`, `12h`, `30d` or `2w` (a whole number and one unit).
///
/// # Errors
/// A message saying what is wrong, for clap to print (exit 2).
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use tmpa_core::program::parse_age;
/// assert_eq!(parse_age("12h").unwrap(), Duration::from_secs(12 * 3600));
/// assert_eq!(parse_age("2w").unwrap(), Duration::from_secs(14 * 86_400));
/// assert!(parse_age("12").is_err());
/// assert!(parse_age("-1d").is_err());
/// ```
pub fn parse_age(s: &str) -> std::result::Result<std::time::Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| {
        format!("{s:?}: expected a whole number and a unit (s, m, h, d, w), e.g. 30d")
    })?;
    let secs_per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("{s:?}: unknown unit {unit:?}; use s, m, h, d or w")),
    };
    n.checked_mul(secs_per)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{s:?}: too large"))
}
