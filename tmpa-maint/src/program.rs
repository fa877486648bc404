//! A maintenance program's `main`: parses the command line, runs, and gives every run a
//! run record, those that never start too. A command line clap refuses (a bad value in
//! `/etc/default/tmpa`: `TMPA_COMPACT_MODE=--dryrun`), a refusal, another run holding the
//! lock: each prints the log's first and last lines around its error and leaves a record
//! with its exit code, so that the alert on a failing job sees it within minutes
//! (docs/OPERATIONS.md "TmpaJobFailing"). And the run itself, the same for every program:
//! [`prepare`] (what only root may read, then `--user`), then [`run_program`] (root, plan
//! checked, [`Run::start`], the work, [`conclude`]).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::error::ErrorKind;
use tmpa_core::maintenance::{line_text, path_text};

use crate::args::{CommonArgs, Invocation, Mode};
use crate::exit::{ExitStatus, StartError};
use crate::output::{footer_line, header_line, log_line, now_rfc3339};
use crate::plan::{Applying, Plan, Saving};
use crate::record::{RunRecord, Task, read_run_record, write_run_record};
use crate::report::{Report, ReportBody, conclude};
use crate::run::{Run, Setup, resolve_root};
use crate::user::{Became, become_user};

/// A maintenance program, as [`main`] runs it.
pub trait Program: clap::Parser {
    /// The binary's name (`tmpa-compact`).
    const NAME: &'static str;
    /// Its task (run record, lock).
    const TASK: Task;
    /// The word of the log's first line for a real run (`COMPACT`).
    const REAL_MODE: &'static str;
    /// What the parsed flags say, for the record of a run that fails to start; `None`
    /// when this invocation is not a run on a root (`tmpa-snapshot --verify`).
    fn invocation(&self) -> Option<Invocation>;
    /// What a refused command line says; `None` when it is not a run on a root.
    fn invocation_of_raw(raw: &[OsString]) -> Option<Invocation> {
        Some(Invocation::from_raw(raw))
    }
    /// The run.
    ///
    /// # Errors
    /// Start-up errors (see [`StartError::status`]).
    fn run(&self) -> Result<ExitStatus, StartError>;
}

/// The `main` of a maintenance program: parses the command line, runs, and maps the
/// outcome to the exit code (the only place it is decided). A run that cannot start
/// prints the log's first line, its error and the last line, and leaves a run record.
pub fn main<P: Program>() -> ExitCode {
    let raw: Vec<OsString> = std::env::args_os().collect();
    let args = match P::try_parse_from(&raw) {
        Ok(args) => args,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let Some(inv) = P::invocation_of_raw(&raw) else {
                let _ = e.print();
                return ExitStatus::Usage.into();
            };
            // As the run would have been: as the configured user.
            let _ = become_user(inv.user.as_deref());
            let print = || {
                let _ = e.print();
            };
            return not_started::<P>(&inv, ExitStatus::Usage, print).into();
        }
    };
    match args.run() {
        Ok(status) => status.into(),
        Err(e) => {
            let print = || eprintln!("{}: error: {}", P::NAME, line_text(&e.chain()));
            match args.invocation() {
                Some(inv) => {
                    // A refusal before the switch (a plan file that cannot be read) is
                    // recorded as the user too.
                    let _ = become_user(inv.user.as_deref());
                    not_started::<P>(&inv, e.status(), print).into()
                }
                None => {
                    print();
                    e.status().into()
                }
            }
        }
    }
}

/// A run that did not start: the log's first line, `print_error`, the last line, and a
/// run record (finished, with `status`) when the root can be opened.
fn not_started<P: Program>(
    inv: &Invocation,
    status: ExitStatus,
    print_error: impl FnOnce(),
) -> ExitStatus {
    let mode = Mode::of_flags(inv.dry_run, false).label(P::REAL_MODE);
    let root = resolve_root(inv.root.as_deref());
    match &root {
        Ok(root) => log_line(inv.json, &header_line(P::NAME, &mode, root)),
        Err(_) => log_line(
            inv.json,
            &format!("{} {} {mode} root=(none)", now_rfc3339(), P::NAME),
        ),
    }
    print_error();
    let mut status = status;
    match &root {
        Ok(root) => {
            let previous = read_run_record(root, P::TASK.as_str()).ok().flatten();
            let mut record = RunRecord::new(
                P::TASK.as_str(),
                now_rfc3339(),
                inv.dry_run,
                previous.as_ref(),
            );
            record.finished = true;
            record.pid = None;
            record.exit_code = status.code();
            record.program = Some(P::NAME.to_owned());
            record.root = Some(tmpa_core::maintenance::path_text(root.path()));
            record.duration_secs = Some(0.0);
            if let Err(e) = write_run_record(root, &record) {
                eprintln!(
                    "{}: error: cannot write the run record: {}",
                    P::NAME,
                    line_text(&e.chain())
                );
                status = status.worst(ExitStatus::Failure);
            }
        }
        Err(e) => eprintln!(
            "{}: no run record: the root cannot be opened ({})",
            P::NAME,
            line_text(&e.chain())
        ),
    }
    log_line(
        inv.json,
        &footer_line(P::NAME, status, &serde_json::json!({})),
    );
    status
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

/// Runs the program `P` the same way for every program, as its [`Program`] constants say
/// (the name, task and mode word that a run that never starts records too): resolves the
/// root (flag, `TMPA_ROOT`, current directory), takes the task's lock, prints the log's
/// first line (`DRY-RUN`, `{REAL_MODE}-NO-DELETE` or `{REAL_MODE}`), lets `work` do the
/// run and judge it, then [`conclude`]s. `prepared` is what [`prepare`] made of `common`.
///
/// # Errors
/// Start-up errors only (not a root: exit 2; locked: exit 3); everything after start-up
/// is `work`'s to report, and shows in the returned status.
pub fn run_program<P: Program, B: ReportBody>(
    prepared: Prepared,
    common: &CommonArgs,
    mode: Mode,
    work: impl FnOnce(&mut Run) -> (Report<B>, ExitStatus),
) -> Result<ExitStatus, StartError> {
    let (program, task) = (P::NAME, P::TASK);
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
    let setup = Setup {
        saving: prepared.saving,
        applying,
        pace: common.pace,
    };
    let mut run = Run::start(program, task, root, mode, setup)?;
    log_line(common.json, &run.header(P::REAL_MODE));
    let (mut report, status) = work(&mut run);
    Ok(conclude(run, status, common.json, &mut report))
}
