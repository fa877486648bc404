//! What the Debian package ships beside the five binaries, generated from the sources that
//! own it, so that none of it can drift from them:
//!
//! - a man page per program from its clap definition (`clap_mangen`: name, synopsis, the
//!   long about, every option as `--help` lists it), followed by the sections clap has no
//!   field for (exit status, environment, files, see also);
//! - bash, zsh and fish completions from the same definitions (`clap_complete`);
//! - `tmpa(8)`, the page of `/usr/sbin/tmpa` (cron/tmpa, a shell script: no clap
//!   definition), from [`WRAPPER`] ([`wrapper_man_page`]);
//! - `/etc/cron.d/tmpa` from root's crontab `cron/tmpa.crontab` ([`cron_d`]): the same
//!   jobs with the user column, every job commented out, each deleting program's mode
//!   read from `/etc/default/tmpa` ([`Program::mode_variable`]), which the package ships
//!   with every one in `--dry-run`: installing the package never starts a deletion.
//!
//! The binary `tmpa-docgen OUT_DIR` writes all of it; `packaging/build-deb` packs it.

pub mod reference;

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Command, CommandFactory};
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, italic, roman};

/// Where the package installs the programs; every scheduled job calls them there.
pub const BIN_DIR: &str = "/usr/bin/";

/// What a program does to the tree, which decides its exit statuses and its files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A program that deletes after verifying (compact, archive, tmpclean): exit statuses
    /// 0 to 4 (docs/OPERATIONS.md "Exit codes"), a lock, a run record and receipts under `{root}/.tmpa/`.
    Maintenance {
        /// The task name of its run record and receipts (`compact_events`, ...).
        task: &'static str,
    },
    /// The read-only checklist: monitoring-plugin exit statuses (0 ok to 3 unknown).
    Patrol,
    /// Backups (tmpa-snapshot): run by an operator or a backup job, never scheduled by
    /// the package; exit statuses 0 to 4, holds the maintenance programs' locks.
    Snapshot,
}

/// One of the workspace's programs.
#[derive(Clone, Copy)]
pub struct Program {
    /// The binary's name (`tmpa-compact`).
    pub name: &'static str,
    /// What it does to the tree.
    pub kind: Kind,
    command: fn() -> Command,
}

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Program")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// Programs are the same when their names are: there is one of each.
impl PartialEq for Program {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Program {}

impl Program {
    /// The program's full clap command, as its binary parses it.
    pub fn command(&self) -> Command {
        (self.command)()
    }

    /// Whether the package schedules it (a crontab line, a systemd timer): every program
    /// but the snapshot, which a backup job runs when it backs up.
    pub fn scheduled(&self) -> bool {
        self.kind != Kind::Snapshot
    }

    /// The variable of `/etc/default/tmpa` that holds a deleting program's mode flag
    /// (`TMPA_COMPACT_MODE` for `tmpa-compact`: `--dry-run`, `--no-delete` or empty),
    /// which its cron line and unit pass unquoted, so that an empty value is no argument;
    /// `None` for a program that never deletes.
    pub fn mode_variable(&self) -> Option<String> {
        match self.kind {
            Kind::Maintenance { .. } => Some(format!(
                "TMPA_{}_MODE",
                self.name.trim_start_matches("tmpa-").to_ascii_uppercase()
            )),
            Kind::Patrol | Kind::Snapshot => None,
        }
    }
}

/// The five programs: the four of the operations card, then the snapshot.
pub const PROGRAMS: [Program; 5] = [
    Program {
        name: "tmpa-compact",
        kind: Kind::Maintenance {
            task: "compact_events",
        },
        command: tmpa_compact::Args::command,
    },
    Program {
        name: "tmpa-archive",
        kind: Kind::Maintenance {
            task: "archive_history",
        },
        command: tmpa_archive::Args::command,
    },
    Program {
        name: "tmpa-tmpclean",
        kind: Kind::Maintenance {
            task: "tmp_cleanup",
        },
        command: tmpa_tmpclean::Args::command,
    },
    Program {
        name: "tmpa-patrol",
        kind: Kind::Patrol,
        command: tmpa_patrol::Args::command,
    },
    Program {
        name: "tmpa-snapshot",
        kind: Kind::Snapshot,
        command: tmpa_snapshot::Args::command,
    },
];

/// The program called `name`, if it is one of [`PROGRAMS`].
pub fn program(name: &str) -> Option<&'static Program> {
    PROGRAMS.iter().find(|p| p.name == name)
}

/// The package's version, the workspace's: the version every program prints.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Exit statuses of the maintenance programs (docs/OPERATIONS.md "Exit codes"; README's table).
const MAINTENANCE_EXIT: [(&str, &str); 5] = [
    ("0", "Done, nothing to report."),
    (
        "1",
        "Finished, but something needs a look (verification failed, corrupt input, conflict, \
         orphan); nothing unverified was deleted. Read the problem: lines of the output.",
    ),
    (
        "2",
        "Usage or configuration error (bad flag, bad date, not a TMPA root); nothing written but the run record (none outside a root).",
    ),
    (
        "3",
        "Another run of the same program holds the lock on this root.",
    ),
    ("4", "Any other failure (I/O error, no space left)."),
];

/// Exit statuses of tmpa-snapshot (the maintenance programs' numbers, its own meanings).
const SNAPSHOT_EXIT: [(&str, &str); 5] = [
    (
        "0",
        "Done: the snapshot is complete, or --verify found every file good.",
    ),
    (
        "1",
        "Needs a look: entries left out of the snapshot (symlinks and other non-regular \
         files, files that could not be read), or the problems --verify names.",
    ),
    (
        "2",
        "Usage error (bad flag, not a TMPA root, a destination that exists, is inside the \
         root, or has a partial build left by an interrupted run); nothing written.",
    ),
    (
        "3",
        "Another snapshot, or (after --wait) tmpa-compact, tmpa-archive or tmpa-tmpclean, \
         holds its lock on this root.",
    ),
    (
        "4",
        "Failure writing the snapshot (no space, I/O error): DIR is not made, the partial \
         build is left and named.",
    ),
];

/// Exit statuses of tmpa-patrol: the monitoring-plugin convention (docs/OPERATIONS.md "tmpa-patrol").
const PATROL_EXIT: [(&str, &str); 4] = [
    ("0", "OK: every check that ran is ok."),
    ("1", "WARNING: at least one warning, no critical."),
    ("2", "CRITICAL: at least one critical."),
    (
        "3",
        "UNKNOWN: a check could not run, or the patrol could not check at all (not a TMPA \
         root, bad flag).",
    ),
];

/// How a program is scheduled by the package, read from the crontab: what its man page's
/// FILES section names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schedule {
    /// The log its job appends to (`/var/log/tmpa/compact.log`).
    pub log: Option<String>,
    /// The metrics file given to `--prometheus` (patrol).
    pub prometheus: Option<String>,
}

/// Renders `program`'s man page: clap_mangen's sections from the clap definition, then
/// EXIT STATUS, ENVIRONMENT, FILES and SEE ALSO. `date` is the footer's date
/// (`YYYY-MM-DD`, empty for none).
///
/// # Errors
///
/// Only those of writing into memory, which do not happen; the signature is clap_mangen's.
pub fn man_page(program: &Program, schedule: &Schedule, date: &str) -> io::Result<Vec<u8>> {
    let mut cmd = program.command();
    cmd.build();
    let man = Man::new(cmd.clone())
        .date(date)
        .source(format!("tmpa {VERSION}"))
        .manual("TMPA Manual");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    if cmd.get_after_long_help().is_some() || cmd.get_after_help().is_some() {
        man.render_extra_section(&mut out)?;
    }
    let mut extra = Roff::new();
    exit_status(&mut extra, program.kind);
    environment(&mut extra, &cmd);
    files(&mut extra, program, schedule);
    extra.to_writer(&mut out)?;
    man.render_version_section(&mut out)?;
    see_also(program).to_writer(&mut out)?;
    Ok(out)
}

/// A `.TP` list item: `term` in bold, then `text`.
fn item(roff: &mut Roff, term: &str, text: &str) {
    roff.control("TP", [])
        .text([bold(term)])
        .text([roman(text)]);
}

/// A program's exit statuses: (code, meaning).
pub fn exit_statuses(kind: Kind) -> &'static [(&'static str, &'static str)] {
    match kind {
        Kind::Maintenance { .. } => &MAINTENANCE_EXIT,
        Kind::Snapshot => &SNAPSHOT_EXIT,
        Kind::Patrol => &PATROL_EXIT,
    }
}

/// What the patrol's EXIT STATUS says before its table.
pub const PATROL_EXIT_NOTE: &str =
    "The monitoring-plugin convention, so that it works as a Nagios or Icinga check as it is:";

fn exit_status(roff: &mut Roff, kind: Kind) {
    roff.control("SH", ["EXIT STATUS"]);
    if kind == Kind::Patrol {
        roff.text([roman(PATROL_EXIT_NOTE)]);
    }
    for (code, meaning) in exit_statuses(kind) {
        item(roff, code, meaning);
    }
}

/// Every environment variable a flag reads, from the clap definition.
fn environment(roff: &mut Roff, cmd: &Command) {
    let vars: Vec<_> = cmd
        .get_arguments()
        .filter_map(|a| Some((a.get_env()?.to_string_lossy().into_owned(), a)))
        .collect();
    if vars.is_empty() {
        return;
    }
    roff.control("SH", ["ENVIRONMENT"]);
    for (var, arg) in vars {
        let flag = arg
            .get_long()
            .map_or_else(|| arg.get_id().to_string(), |l| format!("--{l}"));
        let help = arg
            .get_long_help()
            .or_else(|| arg.get_help())
            .map(|h| format!(": {h}"))
            .unwrap_or_default();
        item(
            roff,
            &var,
            &format!("The value of {flag} when the flag is not given{help}"),
        );
    }
}

fn files(roff: &mut Roff, program: &Program, schedule: &Schedule) {
    roff.control("SH", ["FILES"]);
    roff.text([
        italic("ROOT"),
        roman(" is the TMPA root: --root, else TMPA_ROOT, else the current directory."),
    ]);
    let state = |rest: &str| format!("ROOT/.tmpa/{rest}");
    match program.kind {
        Kind::Maintenance { task } => {
            item(
                roff,
                &state(&format!("runs/{task}.json")),
                "The run record every run leaves, dry or not: start and end times, dry_run, \
                 exit_code and the counts. tmpa-patrol reads it.",
            );
            item(
                roff,
                &state(&format!("receipts/{task}/")),
                "One JSON-lines receipt per real run that deletes, fsynced before the \
                 deletions: each deleted file, its SHA-256 and where its data now is.",
            );
            item(
                roff,
                &state(&format!("locks/{task}.lock")),
                "Held for the whole run; another run of the same program on the same root \
                 exits 3.",
            );
        }
        Kind::Snapshot => {
            item(
                roff,
                &state("runs/snapshot.json"),
                "The run record every snapshot leaves, dry or not: times, exit_code and the \
                 counts (files, bytes, what was left out).",
            );
            item(
                roff,
                &state("locks/"),
                "snapshot.lock for the run, and for a real snapshot's pass the locks of \
                 compact_events, archive_history and tmp_cleanup: a run of theirs that starts \
                 meanwhile exits 3.",
            );
            item(
                roff,
                "DIR/.tmpa/snapshot.json",
                "In the snapshot: when it was taken, of which root, how, and its counts.",
            );
        }
        Kind::Patrol => {
            item(
                roff,
                &state("runs/*.json"),
                "The maintenance programs' run records, read for the *_last_success checks.",
            );
            item(
                roff,
                &state("patrol/"),
                "history.json (each run's counts, for the growth check) and the \
                 --incremental cache: the patrol's only writes inside the root.",
            );
            if let Some(prom) = &schedule.prometheus {
                item(
                    roff,
                    prom,
                    "The metrics the scheduled job writes (--prometheus) for node_exporter's \
                     textfile collector, replaced atomically.",
                );
            }
        }
    }
    if let Some(log) = &schedule.log {
        item(
            roff,
            log,
            "The job's log when cron runs it (each run appends its whole output); rotated \
             by /etc/logrotate.d/tmpa. Run by its systemd unit, the job logs to the journal \
             instead: journalctl -u followed by the program's name.",
        );
    }
    if program.kind
        == (Kind::Maintenance {
            task: "archive_history",
        })
    {
        item(
            roff,
            "/etc/tmpa/archive.env",
            "The object store's keys (--credentials' default), root's alone: read before \
             the program becomes --user, never put in an environment.",
        );
    }
    if !program.scheduled() {
        return;
    }
    item(
        roff,
        "/etc/default/tmpa",
        "The jobs' settings, read by the cron lines and the units: the root, the user they \
         run as, each deleting program's mode (installed as --dry-run), the pace and the \
         metrics directory.",
    );
    item(
        roff,
        "/etc/cron.d/tmpa",
        "The schedule for cron, installed with every job commented out.",
    );
    item(
        roff,
        &format!(
            "/usr/lib/systemd/system/{0}.service, {0}.timer",
            program.name
        ),
        "The same job as a hardened systemd service and its timer, installed disabled. Use \
         either cron.d or the timers, not both.",
    );
}

fn see_also(program: &Program) -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["SEE ALSO"]);
    let mut refs: Vec<String> = PROGRAMS
        .iter()
        .filter(|p| p.name != program.name)
        .map(|p| format!("{}(1)", p.name))
        .collect();
    refs.extend(
        [
            "crontab(5)",
            "systemd.timer(5)",
            "systemd.exec(5)",
            "logrotate(8)",
        ]
        .map(String::from),
    );
    let mut inlines = Vec::new();
    for (i, r) in refs.iter().enumerate() {
        let (name, section) = r.split_once('(').expect("name(section)");
        inlines.push(bold(name));
        inlines.push(roman(format!(
            "({section}{}",
            if i + 1 < refs.len() { ", " } else { "" }
        )));
    }
    roff.text(inlines);
    roff.control("PP", []).text([roman(
        "/usr/share/doc/tmpa/OPERATIONS.md (installing, the dry-run rollout, what each alert \
         means), /usr/share/doc/tmpa/FORMAT.md (the data tree and its file formats).",
    )]);
    roff
}

/// `/usr/sbin/tmpa` (cron/tmpa): a program by hand, as its scheduled job runs it.
pub const WRAPPER: &str = "tmpa";

/// The page of [`WRAPPER`], `tmpa(8)`: what it does, the programs it runs, the settings
/// it takes from `/etc/default/tmpa`, who the programs run as.
///
/// # Errors
///
/// Only those of writing into memory, which do not happen.
pub fn wrapper_man_page(date: &str) -> io::Result<Vec<u8>> {
    let mut r = Roff::new();
    r.control(
        "TH",
        ["tmpa", "8", date, &format!("tmpa {VERSION}"), "TMPA Manual"],
    );
    r.control("SH", ["NAME"]);
    r.text([roman(
        "tmpa - run a TMPA program by hand as its scheduled job runs it",
    )]);
    r.control("SH", ["SYNOPSIS"]);
    r.text([
        bold("sudo tmpa"),
        roman(" "),
        italic("PROGRAM"),
        roman(" ["),
        italic("ARGUMENTS"),
        roman("...]"),
    ]);
    r.control("SH", ["DESCRIPTION"]);
    r.text([roman(
        "Reads /etc/default/tmpa (root's: run it as root), exports its settings as every \
         line of /etc/cron.d/tmpa does, and runs /usr/bin/tmpa-PROGRAM with ARGUMENTS. \
         PROGRAM is compact, archive, tmpclean, patrol or snapshot. The program gets the \
         root (TMPA_ROOT, unless --root is given), the user the jobs run as (TMPA_USER) \
         and the patrol's service check (TMPA_SERVICE_CMD). The modes (TMPA_*_MODE) and \
         the pace are the schedule's: by hand, give --dry-run or --pace yourself.",
    )]);
    r.control("PP", []).text([roman(
        "Started as root, tmpa-compact, tmpa-archive, tmpa-tmpclean and tmpa-patrol first \
         read and open what only root may (--apply-plan, --save-plan, the patrol's --log \
         files, tmpa-archive's /etc/tmpa/archive.env), then become TMPA_USER for good: \
         their files in the tree are the owner's, as the jobs' are, and a plan may still \
         be saved where only root can write. tmpa-snapshot stays root: it only reads the \
         tree, and writes a backup that keeps the files' owners.",
    )]);
    r.control("SH", ["EXAMPLES"]);
    for example in [
        "sudo tmpa compact --dry-run",
        "sudo tmpa archive --dry-run --save-plan /root/archive-plan.json",
        "sudo tmpa archive --apply-plan /root/archive-plan.json",
        "sudo tmpa patrol --watch 1m --for 30m --since-deploy",
        "sudo tmpa snapshot --to /var/backups/tmpa/snap-1",
    ] {
        r.control("PP", []).text([bold(example)]);
    }
    r.control("SH", ["EXIT STATUS"]);
    r.text([roman(
        "The program's (see its page); 2 when PROGRAM is unknown or /etc/default/tmpa \
         cannot be read.",
    )]);
    r.control("SH", ["ENVIRONMENT"]);
    item(
        &mut r,
        "TMPA_CONFIG_FILE",
        "Another configuration file than /etc/default/tmpa.",
    );
    item(
        &mut r,
        "TMPA_BIN_DIR",
        "Where the programs are, instead of /usr/bin.",
    );
    r.control("SH", ["FILES"]);
    item(
        &mut r,
        "/etc/default/tmpa",
        "The jobs' settings, read by the cron lines, the units and tmpa.",
    );
    item(
        &mut r,
        "/etc/tmpa/archive.env",
        "The object store's keys, root's alone, read by tmpa-archive itself.",
    );
    r.control("SH", ["SEE ALSO"]);
    let names: Vec<String> = PROGRAMS.iter().map(|p| format!("{}(1)", p.name)).collect();
    r.text([roman(names.join(", "))]);
    r.control("PP", []).text([roman(
        "/usr/share/doc/tmpa/OPERATIONS.md, \"Running a program by hand\".",
    )]);
    let mut out = Vec::new();
    r.to_writer(&mut out)?;
    Ok(out)
}

/// The file name each shell looks a command's completion up by, in its directory.
pub fn completion_file_name(shell: Shell, program: &str) -> String {
    match shell {
        Shell::Zsh => format!("_{program}"),
        Shell::Fish => format!("{program}.fish"),
        // bash-completion loads `completions/{command}` when the command is first completed.
        _ => program.to_owned(),
    }
}

/// `program`'s completion script for `shell`.
pub fn completion(program: &Program, shell: Shell) -> Vec<u8> {
    let mut cmd = program.command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, program.name, &mut out);
    out
}

/// The shells the package ships completions for, with their directory under `OUT_DIR`.
pub const SHELLS: [(Shell, &str); 3] = [
    (Shell::Bash, "completions/bash"),
    (Shell::Zsh, "completions/zsh"),
    (Shell::Fish, "completions/fish"),
];

/// One job line of root's crontab.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    /// The five time fields, as written.
    pub when: [String; 5],
    /// The command, as written (wrappers, the program, its arguments, the redirection).
    pub command: String,
    /// The program it runs (one of [`PROGRAMS`]), called by its path under [`BIN_DIR`].
    pub program: &'static Program,
}

impl Job {
    /// The log the command appends to (`>> FILE`).
    pub fn log(&self) -> Option<&str> {
        self.word_after(">>")
    }

    /// The word after `flag` in the command.
    fn word_after(&self, flag: &str) -> Option<&str> {
        let mut words = self.command.split_whitespace();
        words.find(|w| *w == flag)?;
        words.next()
    }

    /// What the program's man page says about how it is scheduled.
    pub fn schedule(&self) -> Schedule {
        Schedule {
            log: self.log().map(str::to_owned),
            // `"${TMPA_METRICS_DIR}/tmpa.prom"`: the path as the man page names it.
            prometheus: self
                .word_after("--prometheus")
                .map(|w| w.trim_matches('"').to_owned()),
        }
    }
}

/// A line of root's crontab.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// Empty, or a `#` comment.
    Text(String),
    /// `NAME=value`.
    Env(String),
    /// A job.
    Job(Job),
}

/// Reads root's crontab (five time fields, then the command).
///
/// # Errors
///
/// A job line with fewer than five fields, or one that does not call one of [`PROGRAMS`]
/// by its path under [`BIN_DIR`]: the generator refuses rather than ship a line it does
/// not understand.
pub fn parse_crontab(text: &str) -> Result<Vec<Line>> {
    let mut lines = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let is_env = line.split_once('=').is_some_and(|(name, _)| {
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
        if line.is_empty() || line.starts_with('#') {
            lines.push(Line::Text(line.to_owned()));
            continue;
        }
        if is_env {
            lines.push(Line::Env(line.to_owned()));
            continue;
        }
        let mut rest = line;
        let mut when: Vec<String> = Vec::with_capacity(5);
        for _ in 0..5 {
            let end = rest
                .find(char::is_whitespace)
                .with_context(|| format!("crontab line {}: fewer than five fields", i + 1))?;
            when.push(rest[..end].to_owned());
            rest = rest[end..].trim_start();
        }
        let program = rest
            .split_whitespace()
            .find_map(|w| w.strip_prefix(BIN_DIR).and_then(program))
            .with_context(|| {
                format!(
                    "crontab line {}: calls none of the programs under {BIN_DIR}: {rest}",
                    i + 1
                )
            })?;
        lines.push(Line::Job(Job {
            when: when.try_into().expect("five fields"),
            command: rest.to_owned(),
            program,
        }));
    }
    Ok(lines)
}

/// The jobs of root's crontab.
///
/// # Errors
///
/// Those of [`parse_crontab`].
pub fn crontab_jobs(text: &str) -> Result<Vec<Job>> {
    Ok(parse_crontab(text)?
        .into_iter()
        .filter_map(|l| match l {
            Line::Job(j) => Some(j),
            _ => None,
        })
        .collect())
}

/// The comment that opens `/etc/cron.d/tmpa`, in place of the crontab's own header.
const CRON_D_HEADER: &str = "\
# /etc/cron.d/tmpa: the TMPA maintenance jobs, installed by the tmpa package.
#
# NOTHING HERE RUNS AS INSTALLED: every job line below is commented out. Each job reads
# /etc/default/tmpa as it starts: the root, the user it runs as, the mode of each program
# that deletes (installed as TMPA_COMPACT_MODE=--dry-run and so on: plan and log, delete
# nothing), the pace and the metrics directory.
# Roll out as /usr/share/doc/tmpa/OPERATIONS.md says:
#   1. uncomment the tmpa-patrol line (it only reads, and writes its metrics);
#   2. uncomment the other three, and compare two or three nights of their dry-run logs;
#   3. then empty each program's TMPA_*_MODE in /etc/default/tmpa, one line each.
# Use this file or the systemd timers (tmpa-*.timer, installed disabled), not both.
# This is a conffile: your edits are kept across upgrades.
#
# Generated by tmpa-docgen from root's crontab in the source tree (cron/tmpa.crontab):
# the same jobs, with cron.d's user column (root) after the five time fields, each run
# only while its program is installed (test -x: a removed package leaves this file).";

/// `/etc/cron.d/tmpa`, made from root's crontab: the crontab's opening comment replaced by
/// a header saying the jobs are off until an operator turns them on, `root` added after
/// the time fields, every job commented out and guarded by `test -x PROGRAM &&`.
///
/// # Errors
///
/// Those of [`parse_crontab`]; a job of a deleting program that does not take its mode
/// from [`Program::mode_variable`] (unquoted, so that an empty value is no argument), or
/// that names a mode flag itself: the mode is the configuration's, in one place.
pub fn cron_d(crontab: &str) -> Result<String> {
    let lines = parse_crontab(crontab)?;
    let body = lines
        .iter()
        .position(|l| !matches!(l, Line::Text(t) if t.starts_with('#')))
        .unwrap_or(lines.len());
    let mut out = String::from(CRON_D_HEADER);
    out.push('\n');
    for line in &lines[body..] {
        match line {
            Line::Text(t) if t.starts_with("# m ") => {
                out.push_str("# m   h   dom mon dow  user  command\n");
            }
            Line::Text(t) | Line::Env(t) => {
                out.push_str(t);
                out.push('\n');
            }
            Line::Job(job) => {
                check_mode(job)?;
                // Debian policy 9.5.1: a removed (not purged) package leaves its cron.d
                // file, so each job checks that its program is still installed.
                let guard = format!("test -x {BIN_DIR}{} &&", job.program.name);
                out.push_str(&format!(
                    "#{}  root  {guard} {}\n",
                    job.when.join(" "),
                    job.command
                ));
            }
        }
    }
    Ok(out)
}

/// A deleting program's job takes its mode from its variable alone.
fn check_mode(job: &Job) -> Result<()> {
    let words: Vec<&str> = job.command.split_whitespace().collect();
    let name = job.program.name;
    if let Some(flag) = words
        .iter()
        .find(|w| ["--dry-run", "--no-delete"].contains(w))
    {
        bail!("{name}: {flag} in the crontab: the mode is /etc/default/tmpa's");
    }
    if let Some(var) = job.program.mode_variable() {
        let path = format!("{BIN_DIR}{name}");
        let at = words.iter().position(|w| *w == path);
        if at.and_then(|i| words.get(i + 1)) != Some(&format!("${var}").as_str()) {
            bail!("{name}: the crontab does not pass ${var} (unquoted) right after {path}");
        }
    }
    Ok(())
}

/// Writes into `out_dir`: `man/man1/{program}.1`, `completions/{bash,zsh,fish}/...` and
/// `cron.d/tmpa`, from the programs' clap definitions and root's crontab (`crontab`, its
/// text). Returns the files written.
///
/// # Errors
///
/// The crontab's ([`cron_d`]), or an I/O error naming the file.
pub fn generate(out_dir: &Path, crontab: &str, date: &str) -> Result<Vec<PathBuf>> {
    let jobs = crontab_jobs(crontab)?;
    let mut written = Vec::new();
    let mut write = |rel: String, bytes: &[u8]| -> Result<()> {
        let path = out_dir.join(rel);
        let dir = path.parent().expect("a file under out_dir");
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        fs::write(&path, bytes).with_context(|| format!("write {}", path.display()))?;
        written.push(path);
        Ok(())
    };
    for program in &PROGRAMS {
        let schedule = jobs
            .iter()
            .find(|j| j.program.name == program.name)
            .map(Job::schedule)
            .unwrap_or_default();
        let page = man_page(program, &schedule, date)
            .with_context(|| format!("render {}'s man page", program.name))?;
        write(format!("man/man1/{}.1", program.name), &page)?;
        for (shell, dir) in SHELLS {
            write(
                format!("{dir}/{}", completion_file_name(shell, program.name)),
                &completion(program, shell),
            )?;
        }
    }
    let page = wrapper_man_page(date).context("render tmpa(8)")?;
    write(format!("man/man8/{WRAPPER}.8"), &page)?;
    write("cron.d/tmpa".to_owned(), cron_d(crontab)?.as_bytes())?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRONTAB: &str = "\
# root's crontab header
# second header line
SHELL=/bin/sh

# m   h   dom mon dow  command
# compaction
30 2 * * *  nice -n 19 /usr/bin/tmpa-compact $TMPA_COMPACT_MODE --x >> /var/log/tmpa/compact.log 2>&1
*/5 * * * * /usr/bin/tmpa-patrol --prometheus /p.prom >> /var/log/tmpa/patrol.log 2>&1
";

    #[test]
    fn cron_d_comments_every_job() {
        let d = cron_d(CRONTAB).unwrap();
        assert!(d.starts_with(CRON_D_HEADER));
        assert!(!d.contains("root's crontab header"), "{d}");
        assert!(d.contains("\nSHELL=/bin/sh\n"));
        assert!(d.contains("\n# m   h   dom mon dow  user  command\n"));
        assert!(d.contains(
            "\n#30 2 * * *  root  test -x /usr/bin/tmpa-compact && nice -n 19 \
             /usr/bin/tmpa-compact $TMPA_COMPACT_MODE --x >> /var/log/tmpa/compact.log 2>&1\n"
        ));
        assert!(d.contains(
            "\n#*/5 * * * *  root  test -x /usr/bin/tmpa-patrol && /usr/bin/tmpa-patrol \
             --prometheus /p.prom >> /var/log/tmpa/patrol.log 2>&1\n"
        ));
    }

    /// The mode is the configuration's: a deleting job without its variable, with it
    /// quoted (an empty value would be an empty argument), or with a mode flag of its own
    /// is refused.
    #[test]
    fn cron_d_refuses_a_job_whose_mode_is_not_its_variable() {
        assert!(cron_d("30 2 * * * /usr/bin/tmpa-compact --x\n").is_err());
        assert!(cron_d("30 2 * * * /usr/bin/tmpa-compact \"$TMPA_COMPACT_MODE\"\n").is_err());
        assert!(cron_d("30 2 * * * /usr/bin/tmpa-compact $TMPA_ARCHIVE_MODE\n").is_err());
        assert!(cron_d("30 2 * * * /usr/bin/tmpa-compact $TMPA_COMPACT_MODE --dry-run\n").is_err());
        assert!(cron_d("30 2 * * * /usr/bin/tmpa-compact $TMPA_COMPACT_MODE\n").is_ok());
        assert_eq!(program("tmpa-patrol").unwrap().mode_variable(), None);
    }

    #[test]
    fn crontab_lines_the_generator_does_not_understand_are_refused() {
        assert!(parse_crontab("30 2 * * /usr/bin/tmpa-compact\n").is_err());
        assert!(parse_crontab("30 2 * * * /usr/local/bin/tmpa-compact\n").is_err());
        assert!(parse_crontab("30 2 * * * /usr/bin/tmpa-other\n").is_err());
    }

    #[test]
    fn schedule_is_read_from_the_job() {
        let jobs = crontab_jobs(CRONTAB).unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(
            jobs[1].schedule(),
            Schedule {
                log: Some("/var/log/tmpa/patrol.log".into()),
                prometheus: Some("/p.prom".into()),
            }
        );
        assert_eq!(jobs[0].program.name, "tmpa-compact");
    }

    /// Every long flag clap knows appears in the man page, the extra sections follow in
    /// man-pages(7) order, and EXIT STATUS lists the program's codes.
    #[test]
    fn man_page_lists_every_flag_and_the_extra_sections() {
        for p in &PROGRAMS {
            let page = man_page(p, &Schedule::default(), "2026-01-02").unwrap();
            let page = String::from_utf8(page).unwrap();
            let title = format!("\n.TH {} 1 2026-01-02 \"tmpa {VERSION}\"", p.name);
            assert!(page.contains(&title), "{}: {page}", p.name);
            for arg in p.command().get_arguments() {
                if let Some(long) = arg.get_long() {
                    let roff = format!("\\-\\-{}", long.replace('-', "\\-"));
                    assert!(page.contains(&roff), "{}: --{long} missing", p.name);
                }
            }
            let at = |s: &str| page.find(&format!(".SH {s}\n")).unwrap_or(usize::MAX);
            let order = [
                at("OPTIONS"),
                at("\"EXIT STATUS\""),
                at("ENVIRONMENT"),
                at("FILES"),
                at("\"SEE ALSO\""),
            ];
            assert!(
                order.is_sorted() && order[4] < usize::MAX,
                "{}: {order:?}",
                p.name
            );
            let exit = &page[order[1]..order[2]];
            let codes: Vec<&str> = exit
                .lines()
                .filter_map(|l| l.strip_prefix("\\fB")?.strip_suffix("\\fR"))
                .collect();
            let want: &[&str] = match p.kind {
                Kind::Maintenance { .. } | Kind::Snapshot => &["0", "1", "2", "3", "4"],
                Kind::Patrol => &["0", "1", "2", "3"],
            };
            assert_eq!(codes, want, "{}", p.name);
        }
    }
}
