//! A run from start to end: root, lock, the log's first line, the work, the run record,
//! the report and the log's last line.

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Local, SecondsFormat};
use serde::Serialize;
use tmpa_core::Root;
use tmpa_core::maintenance::{line_text, path_text};

use crate::args::{CommonArgs, Mode};
use crate::exit::{ExitStatus, StartError};
use crate::lock::Lock;
use crate::plan::{
    self, Admission, Applying, Candidate, Noted, PLAN_FORMAT, Plan, Refusal, Saving,
};
use crate::quarantine::{self, Quarantine};
use crate::receipt::{Deletion, Receipt, ReceiptLine, Recovered};
use crate::record::{RunRecord, Task, read_run_record, write_run_record};
use crate::user::{Became, become_user};

/// Now, in local time, as RFC 3339 with seconds.
pub fn now_rfc3339() -> String {
    rfc3339(Local::now())
}

fn rfc3339(t: DateTime<Local>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// Opens the root named by the flag (or `TMPA_ROOT`, which clap folds into the flag), else
/// the current directory.
///
/// # Errors
/// [`tmpa_core::Error::NotRoot`] or [`tmpa_core::Error::OpenRoot`] (both exit 2).
pub fn resolve_root(flag: Option<&Path>) -> tmpa_core::Result<Root> {
    Root::open(flag.unwrap_or(Path::new(".")))
}

/// A run in progress: the root, the held lock, the mode, the start time and the receipt.
#[derive(Debug)]
pub struct Run {
    program: &'static str,
    task: Task,
    root: Root,
    mode: Mode,
    started: DateTime<Local>,
    receipt: Option<Receipt>,
    /// A dry run: what a real run would delete (the plan), as lines or hashes.
    would_delete: Noted,
    /// A dry run with `--save-plan`: where the plan goes.
    saving: Option<Saving>,
    /// A real run with `--apply-plan`: the plan being applied.
    applying: Option<Applying>,
    /// The planned groups this run kept because they are not as planned ([`Run::admit`]).
    refused: Vec<Refusal>,
    /// `--pace`: the pause after each batch of deletions.
    pub(crate) pace: std::time::Duration,
    /// Where the delete step moves files (`{root}/.tmpa/quarantine/in-flight/{task}/{run}`).
    quarantine: Quarantine,
    /// What the recovery of killed runs found in the quarantine at the start.
    recovered: Vec<Recovered>,
    /// The record the previous run left (read before this run wrote its own at start):
    /// what it carries forward, and the plan it compares with.
    previous: Option<RunRecord>,
    /// This run's id: the stem of its receipt, the name of its quarantine directories.
    run_id: String,
    lock: Lock,
}

impl Run {
    /// Takes the lock of `task` on `root`, starts the clock and writes the run record of
    /// a run that has not finished (a run killed from now on shows as one that did not;
    /// a record that cannot be written, on a full disk say, is a warning on stderr and the
    /// run goes on).
    ///
    /// # Errors
    /// [`StartError::Locked`] (exit 3) or [`StartError::Core`] from [`Lock::acquire`].
    pub fn start(
        program: &'static str,
        task: Task,
        root: Root,
        mode: Mode,
    ) -> Result<Run, StartError> {
        let lock = Lock::acquire(&root, task)?;
        let started = Local::now();
        let run_id = run_id(started);
        let previous = read_run_record(&root, task.as_str()).ok().flatten();
        let mut record = RunRecord::new(
            task.as_str(),
            rfc3339(started),
            mode.is_plan(),
            previous.as_ref(),
        );
        record.program = Some(program.to_owned());
        record.root = Some(path_text(root.path()));
        record.run = Some(run_id.clone());
        if let Err(e) = write_run_record(&root, &record) {
            // A full disk is the usual cause, and this run may be what frees it (a day
            // compacted, sessions archived): the work goes on and says what fails, and
            // the record is written again at the end.
            eprintln!(
                "{program}: warning: cannot write the run record at the start (the run goes on): {}",
                line_text(&e.chain())
            );
        }
        let recovered = if mode.deletes() {
            quarantine::recover(&root, task, &run_id)?
        } else {
            Vec::new()
        };
        let mut run = Run {
            program,
            task,
            root,
            mode,
            started,
            receipt: None,
            would_delete: Noted::Sum(plan::DeletionSum::default()),
            saving: None,
            applying: None,
            refused: Vec::new(),
            pace: std::time::Duration::ZERO,
            quarantine: Quarantine::new(task, run_id.clone()),
            recovered,
            previous,
            run_id,
            lock,
        };
        if !run.recovered.is_empty() {
            // The killed run's receipt says "delete" of each; this one says what became
            // of them.
            let lines: Vec<ReceiptLine> = run
                .recovered
                .iter()
                .cloned()
                .map(ReceiptLine::Recovered)
                .collect();
            run.record_receipt(&lines)?;
        }
        Ok(run)
    }

    /// The root and the run's quarantine, for the delete step.
    pub(crate) fn quarantine(&mut self) -> (&Root, &mut Quarantine) {
        (&self.root, &mut self.quarantine)
    }

    /// What the recovery of killed runs did at the start of this run (real runs only).
    pub fn recovered(&self) -> &[Recovered] {
        &self.recovered
    }

    /// A dry run: notes that a real run would delete this (the line its receipt would
    /// get); the notes make the run's plan. A real run ignores it.
    pub fn would_delete(&mut self, line: Deletion) {
        if self.mode.is_plan() {
            self.would_delete.push(line);
        }
    }

    /// The one plan admission of every program: whether `group`, files that go together
    /// (an event file; a session; a notification and its ack; a batch of notifications
    /// and acks; a temporary), takes part in this run. Without a plan, always. Applying
    /// a plan, only when the plan lists every file of the group with exactly the stamp
    /// (and SHA-256, and place that would hold its data, when given) it has now: a group
    /// the plan does not list is left for the next run without a word; one it lists
    /// otherwise is kept, and this run reports it itself, naming the file that is not as
    /// planned (`problem:` lines, exit 1).
    ///
    /// Call it before the work that a deletion relies on (an archive written, a file
    /// compacted), so that nothing is made for files that are then kept: once with what
    /// a listing knows (stamps), and again with SHA-256 and the place of the data once
    /// known.
    pub fn admit(&mut self, group: &[Candidate<'_>]) -> Admission {
        let Some(a) = &mut self.applying else {
            return Admission::Admitted;
        };
        let (admission, mut refused) = a.admit(group);
        self.refused.append(&mut refused);
        admission
    }

    /// The groups this run kept because the plan does not list them as they are (what
    /// [`Run::admit`] refused), in the order met.
    pub fn refused(&self) -> &[Refusal] {
        &self.refused
    }

    /// The plan being applied, if any (the delete path checks every deletion against it).
    pub(crate) fn applying_mut(&mut self) -> Option<&mut Applying> {
        self.applying.as_mut()
    }

    /// The root.
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// `--pace`: in a program that reads many files, the least pause per
    /// [`PACE_BATCH`](crate::PACE_BATCH) files read (deletions pause at least a sixteenth
    /// of it every 16, see [`Run::dispose`]; every paced step also pauses five times its
    /// own time, see [`Pacer`](crate::Pacer)); zero runs at full speed.
    pub fn pace(&self) -> std::time::Duration {
        self.pace
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether this is a dry run.
    pub fn dry_run(&self) -> bool {
        self.mode.is_plan()
    }

    /// The log's first line: time, program, mode and root.
    pub fn header(&self, real_mode: &str) -> String {
        header_line(self.program, &self.mode.label(real_mode), &self.root)
    }

    /// Appends lines to this run's receipt (creating it on first use) and fsyncs it.
    ///
    /// # Errors
    /// [`tmpa_core::Error::Io`] naming the receipt; the caller must then not delete.
    pub(crate) fn record_receipt(&mut self, lines: &[ReceiptLine]) -> tmpa_core::Result<()> {
        assert!(
            self.mode.writes(),
            "only a run that writes deletes (or takes back) and writes receipts"
        );
        if self.receipt.is_none() {
            self.receipt = Some(Receipt::create(&self.root, self.task, &self.run_id)?);
        }
        self.receipt.as_mut().expect("created above").append(lines)
    }

    /// Whether this run still holds its lock by name ([`Lock::still_held`]): asked before
    /// each batch of deletions, so that a run whose lock file someone removed or replaced
    /// (and another run may have taken anew) deletes nothing more.
    ///
    /// # Errors
    /// [`tmpa_core::Error::Io`] naming the lock file when it no longer names this run's.
    pub(crate) fn check_lock(&self) -> tmpa_core::Result<()> {
        self.lock.still_held(&self.root)
    }

    /// This run's id (`{start time}-{16 hex digits}`): the stem of its receipt and the
    /// name of its quarantine directories.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Writes the run record and returns it with the log's last line.
    ///
    /// # Errors
    /// [`tmpa_core::Error::Io`] when the run record cannot be written.
    pub fn finish(
        mut self,
        exit: ExitStatus,
        counts: &impl Serialize,
    ) -> tmpa_core::Result<Ending> {
        self.quarantine.tidy(&self.root);
        let finished = Local::now();
        let duration_secs = (finished - self.started).as_seconds_f64().max(0.0);
        let counts = serde_json::to_value(counts).expect("counts always serialize");
        let previous = self.previous.take();
        let dry_run = self.mode.is_plan();
        let success = !dry_run && exit <= ExitStatus::NeedsLook;
        let (last_at, last_dur, last_exit) = if success {
            (
                Some(rfc3339(self.started)),
                Some(duration_secs),
                Some(exit.code()),
            )
        } else {
            previous
                .as_ref()
                .and_then(|p| p.last_success().ok().flatten())
                .map_or((None, None, None), |s| {
                    (Some(s.at), Some(s.duration_secs), Some(s.exit_code))
                })
        };
        let root_text = path_text(self.root.path());
        // The plan itself only when it is saved; its digest for every dry run.
        let noted = std::mem::replace(
            &mut self.would_delete,
            Noted::Sum(plan::DeletionSum::default()),
        );
        let (plan, plan_digest) = match noted {
            // A task that never deletes (the snapshot) has no plan to review.
            _ if !dry_run || !self.task.deletes() => (None, None),
            Noted::Lines(lines) => {
                let plan = Plan::new(
                    self.program,
                    self.task,
                    &root_text,
                    rfc3339(self.started),
                    lines,
                );
                let digest = plan.digest.clone();
                (Some(plan), Some(digest))
            }
            Noted::Sum(sum) => (
                None,
                Some(plan::digest_of(
                    PLAN_FORMAT,
                    self.program,
                    self.task,
                    &root_text,
                    plan::Rest::Sum(sum),
                )),
            ),
        };
        let plan_streak = plan_digest.as_ref().map(|d| match &previous {
            Some(p) if p.dry_run && p.plan_digest.as_ref() == Some(d) => {
                p.plan_streak.unwrap_or(1) + 1
            }
            _ => 1,
        });
        let previous_plan = previous
            .as_ref()
            .filter(|p| p.dry_run)
            .and_then(|p| p.plan_digest.clone());
        let mut exit = exit;
        let mut notes = Vec::new();
        if let (Some(plan), Some(saving)) = (&plan, &self.saving) {
            match saving.write(&plan.to_json()) {
                Ok(()) => notes.push(format!(
                    "plan of {} deletions saved to {}",
                    plan.deletions.len(),
                    path_text(&saving.path)
                )),
                Err(e) => {
                    eprintln!(
                        "{}: error: cannot save the plan to {}: {}",
                        self.program,
                        path_text(&saving.path),
                        line_text(&e.to_string())
                    );
                    exit = exit.worst(ExitStatus::Failure);
                }
            }
        }
        let applied_plan = self.applying.as_ref().map(|a| a.digest.clone());
        let record = RunRecord {
            task: self.task.as_str().to_owned(),
            started_at: rfc3339(self.started),
            finished_at: rfc3339(finished),
            dry_run,
            exit_code: exit.code(),
            program: Some(self.program.to_owned()),
            root: Some(path_text(self.root.path())),
            duration_secs: Some(duration_secs),
            counts: Some(counts.clone()),
            receipt: self.receipt.as_ref().map(|r| path_text(&r.path)),
            last_success_at: last_at,
            last_success_duration_secs: last_dur,
            last_success_exit_code: last_exit,
            plan_digest: plan_digest.clone(),
            plan_streak,
            applied_plan: applied_plan.clone(),
            run: Some(self.run_id.clone()),
            finished: true,
            pid: None,
        };
        write_run_record(&self.root, &record)?;
        let mut line = footer_line(self.program, exit, &counts);
        if let Some(d) = &plan_digest {
            // The digest alone: on an unchanged tree, consecutive dry runs print the same
            // text (docs/OPERATIONS.md "Exit codes"); how it compares with the previous one is the plan note.
            line.push_str(&format!(" plan={}", Plan::short_digest(d)));
        }
        if let Some(d) = &applied_plan {
            line.push_str(&format!(" applied_plan={}", Plan::short_digest(d)));
        }
        for n in notes {
            eprintln!("{}: {}", self.program, line_text(&n));
        }
        let plan_note = plan_digest
            .as_deref()
            .zip(plan_streak)
            .map(|(d, streak)| plan_note(self.program, d, previous_plan.as_deref(), streak));
        Ok(Ending {
            record,
            footer: line,
            plan_note,
        })
    }
}

/// A run's name among the runs of its task, `{start time}-{16 hex digits}`: the stem of
/// its receipt and the name of its quarantine directories. The 64 bits are the kernel's
/// (`getrandom`): no two runs share an id, whatever their pids (every container's first
/// process is pid 1) and however the clock steps, and no one can tell a run's id before
/// the run makes its files, so no one can plant anything at their names. The time comes
/// first so that a listing sorts by start.
fn run_id(started: DateTime<Local>) -> String {
    let mut random = [0u8; 8];
    let mut filled = 0;
    while filled < random.len() {
        match rustix::rand::getrandom(&mut random[filled..], rustix::rand::GetRandomFlags::empty())
        {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            // getrandom(2) fails only before the kernel's pool is initialised (never
            // with these flags: it waits) or without the call (Linux < 3.17).
            Err(e) => panic!("getrandom: {e}"),
        }
    }
    format!(
        "{}-{:016x}",
        started.format("%Y%m%dT%H%M%S%z"),
        u64::from_le_bytes(random)
    )
}

/// What a run leaves when it ends: its record, the log's last line, and for a dry run the
/// plan note.
#[derive(Debug)]
pub struct Ending {
    /// The run record written.
    pub record: RunRecord,
    /// The log's last line (on stdout, or stderr with `--json`).
    pub footer: String,
    /// A dry run's plan note: whether its plan is the previous dry run's. Printed on
    /// stderr after the last line, so that a cron log (`>> log 2>&1`) ends with it while
    /// stdout stays the same from dry run to dry run on an unchanged tree.
    pub plan_note: Option<String>,
}

/// A dry run's plan note: `{time} {program} plan 3f2a9c1e07b4: the same as the previous
/// dry run's (3 dry runs in a row)`.
fn plan_note(program: &str, digest: &str, previous: Option<&str>, streak: u32) -> String {
    let short = Plan::short_digest(digest);
    let words = match previous {
        None => "no earlier dry run to compare with".to_owned(),
        Some(p) if p == digest => {
            format!("the same as the previous dry run's ({streak} dry runs in a row)")
        }
        Some(p) => format!(
            "differs from the previous dry run's {} (a new plan)",
            Plan::short_digest(p)
        ),
    };
    format!("{} {program} plan {short}: {words}", now_rfc3339())
}

/// The log's first line: `{time} {program} {mode} root={root}`.
pub fn header_line(program: &str, mode: &str, root: &Root) -> String {
    format!(
        "{} {program} {mode} root={}",
        now_rfc3339(),
        path_text(root.path())
    )
}

/// The log's last line: `{time} {program} finished: {counts} exit={code} ({words})`, the
/// counts as `key=value` in key order.
pub fn footer_line(program: &str, exit: ExitStatus, counts: &serde_json::Value) -> String {
    let counts: Vec<String> = counts
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => format!("{k}={}", line_text(s)),
                    other => format!("{k}={other}"),
                })
                .collect()
        })
        .unwrap_or_default();
    let counts: String = counts.iter().map(|c| format!("{c} ")).collect();
    format!(
        "{} {program} finished: {counts}exit={} ({})",
        now_rfc3339(),
        exit.code(),
        exit.describe()
    )
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
            eprint!("\r\x1b[K{}", line_text(msg.as_ref()));
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
    /// The program's counts (a struct of its own).
    type Counts: Serialize;
    /// The totals (`deleted=3 kept=1 ...`).
    fn counts(&self) -> &Self::Counts;
    /// Records the exit code the run ended with (it is part of the JSON report).
    fn set_exit_code(&mut self, code: u8);
    /// The text report, one line per item, sorted; without the first and last log lines.
    fn render_text(&self) -> String;
}

/// Implements [`Report`] for a program's report type that has the fields
/// `counts: Counts` and `exit_code: u8`, with a function `render_text(&Report) -> String`
/// in scope: what every program's report looks like.
#[macro_export]
macro_rules! impl_report {
    ($report:ty, $counts:ty) => {
        impl $crate::Report for $report {
            type Counts = $counts;

            fn counts(&self) -> &$counts {
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

/// How many files a run deleted, or (a dry run) would delete: one of the two keys, in a
/// program's counts (`#[serde(flatten)]`) and so in its run record and last log line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DeleteCount {
    /// Deleted (real runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted: Option<u64>,
    /// A real run would delete (dry runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_delete: Option<u64>,
}

impl DeleteCount {
    /// `n` deletions, under the key the mode calls for.
    pub fn of(mode: Mode, n: u64) -> DeleteCount {
        if mode.is_plan() {
            DeleteCount {
                deleted: None,
                would_delete: Some(n),
            }
        } else {
            DeleteCount {
                deleted: Some(n),
                would_delete: None,
            }
        }
    }
}

/// What a run takes from before it becomes `--user` ([`prepare`]).
#[derive(Debug)]
pub struct Prepared {
    /// `--apply-plan`: the file and its bytes.
    applying: Option<(PathBuf, Vec<u8>)>,
    /// `--save-plan`: the file, open.
    saving: Option<Saving>,
    /// Who the program now runs as.
    pub became: Became,
}

/// Everything a maintenance program does before it touches the root, in this order: the
/// diagnostics `-v`/`-q` ask for; the files of the command line only root may reach
/// (`--apply-plan` read, `--save-plan` opened); then `--user` ([`become_user`]). Call it
/// first, before any thread is started.
///
/// # Errors
/// [`StartError::Usage`] (exit 2): a plan file that cannot be read or opened, a user
/// that cannot be had.
pub fn prepare(common: &CommonArgs) -> Result<Prepared, StartError> {
    crate::args::init_diagnostics(&common.diagnostics);
    let applying = match &common.apply_plan {
        Some(path) => Some((path.clone(), Plan::read(path)?)),
        None => None,
    };
    let saving = common.save_plan.as_deref().map(Saving::open).transpose()?;
    let became = become_user(common.user.as_deref())?;
    Ok(Prepared {
        applying,
        saving,
        became,
    })
}

/// Runs a maintenance program the same way for every program: resolves the root (flag,
/// `TMPA_ROOT`, current directory), takes the task's lock, prints the log's first line
/// (`DRY-RUN`, `{real_mode}-NO-DELETE` or `{real_mode}`), lets `work` do the run and judge
/// it, then [`conclude`]s. `prepared` is what [`prepare`] made of `common`.
///
/// # Errors
/// Start-up errors only (not a root: exit 2; locked: exit 3); everything after start-up
/// is `work`'s to report, and shows in the returned status.
pub fn run_program<R: Report>(
    prepared: Prepared,
    program: &'static str,
    task: Task,
    common: &CommonArgs,
    mode: Mode,
    real_mode: &str,
    work: impl FnOnce(&mut Run) -> (R, ExitStatus),
) -> Result<ExitStatus, StartError> {
    let root = resolve_root(common.root.as_deref())?;
    // A plan that may not be applied is refused before anything is done (exit 2).
    let applying = match &prepared.applying {
        Some((path, bytes)) => Some(Applying::new(Plan::check(
            path,
            bytes,
            program,
            task,
            &path_text(root.path()),
        )?)),
        None => None,
    };
    let mut run = Run::start(program, task, root, mode)?;
    if prepared.saving.is_some() {
        run.would_delete = Noted::Lines(Vec::new());
    }
    run.saving = prepared.saving;
    run.applying = applying;
    run.pace = common.pace;
    log_line(common.json, &run.header(real_mode));
    let (mut report, status) = work(&mut run);
    Ok(conclude(run, status, common.json, &mut report))
}

/// Ends a run the same way for every program: writes the run record (a failure to write
/// it makes the run exit 4), prints the report as text or as one JSON document, then the
/// log's last line. Returns the final status.
pub fn conclude(run: Run, status: ExitStatus, json: bool, report: &mut impl Report) -> ExitStatus {
    let program = run.program;
    // Planned files the run never came to: gone, or no longer candidates. Not deleted;
    // worth a look.
    let unseen: Vec<String> = run
        .applying
        .as_ref()
        .map(|a| a.unseen().into_iter().map(str::to_owned).collect())
        .unwrap_or_default();
    let refused = run.refused.clone();
    let status = if unseen.is_empty() && refused.is_empty() {
        status
    } else {
        status.worst(ExitStatus::NeedsLook)
    };
    let recovered = run.recovered.clone();
    let status = if recovered.iter().any(Recovered::needs_look) {
        status.worst(ExitStatus::NeedsLook)
    } else {
        status
    };
    let counts = serde_json::to_value(report.counts()).expect("counts always serialize");
    let (status, footer, plan_note) = match run.finish(status, report.counts()) {
        Ok(end) => (status, end.footer, end.plan_note),
        Err(e) => {
            eprintln!(
                "{program}: error: cannot write the run record: {}",
                line_text(&e.chain())
            );
            let status = ExitStatus::Failure;
            (status, footer_line(program, status, &counts), None)
        }
    };
    report.set_exit_code(status.code());
    if json {
        let mut doc = serde_json::to_value(&*report).expect("a report always serializes");
        if let (false, Some(map)) = (recovered.is_empty(), doc.as_object_mut()) {
            map.insert(
                "recovered".into(),
                serde_json::to_value(&recovered).expect("recoveries always serialize"),
            );
        }
        if let (false, Some(map)) = (refused.is_empty(), doc.as_object_mut()) {
            map.insert(
                "plan_kept".into(),
                serde_json::to_value(&refused).expect("refusals always serialize"),
            );
        }
        let mut doc = serde_json::to_string_pretty(&doc).expect("a report always serializes");
        doc.push('\n');
        out(&doc);
    } else {
        let mut text = String::new();
        for r in &recovered {
            text.push_str(&r.words());
            text.push('\n');
        }
        text.push_str(&report.render_text());
        out(&text);
    }
    for r in &refused {
        log_line(
            json,
            &format!(
                "  problem: {}: {}",
                line_text(&r.file),
                line_text(&r.words())
            ),
        );
    }
    for f in &unseen {
        log_line(
            json,
            &format!(
                "  problem: {}: in the plan but not deleted (gone, or no longer a candidate)",
                line_text(f)
            ),
        );
    }
    log_line(json, &footer);
    if let Some(note) = plan_note {
        eprintln!("{}", line_text(&note));
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_never_repeat_and_sort_by_start() {
        let now = Local::now();
        let ids: std::collections::BTreeSet<String> = (0..1000).map(|_| run_id(now)).collect();
        assert_eq!(ids.len(), 1000);
        let id = ids.first().expect("ids");
        let (time, random) = id.rsplit_once('-').expect("time-random");
        assert_eq!(random.len(), 16, "{id}");
        assert!(random.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        assert_eq!(time, now.format("%Y%m%dT%H%M%S%z").to_string());
        let later = run_id(now + chrono::Duration::seconds(1));
        assert!(ids.iter().all(|i| *i < later), "{later}");
    }
}
