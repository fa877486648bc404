//! # tmpa-archive (archive_history)
//!
//! Weekly archival of chat sessions: every `chat_history/{user}/sessions/{session}.json`
//! not modified for `--older-than` (default 30 days) is streamed through gzip into
//! `chat_history/{user}/archive/{session}.json.gz`, verified by decompressing the archive
//! from disk and comparing it byte for byte with the session, recorded in a fsynced
//! receipt (path, size, SHA-256), and only then deleted from `sessions/`.
//!
//! Invariants:
//! - A session is deleted only after its archive read back equal from disk, its receipt
//!   line is fsynced, and its directory entry is still the same file (inode, size, mtime,
//!   ctime) that was read.
//! - An existing archive is never overwritten: equal bytes complete an interrupted run,
//!   other bytes are a conflict (both kept, exit 1).
//! - A session rewritten while it is read is kept and retried next run; an archive this
//!   run made of its old bytes is taken back.
//! - `profile/`, temporaries (`*.json.tmp*`, tmpa-tmpclean's business) and anything that
//!   is not a `{session}.json` regular file are never touched. Symlinks are never followed:
//!   every directory is held by descriptor from the root down.
//! - One user's failure (permission, immutable directory, full disk) is reported and the
//!   run goes on with the other users.
//! - A session larger than the library's limit (`SESSION_BYTES_MAX`, 256 MiB) is reported
//!   and left live: memory and time per session are bounded.

pub mod session;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tmpa_core::maintenance::{
    Dir, Kind, SESSION_BYTES_MAX, path_text, root_dir, serialize_path, temp_final_name,
};
use tmpa_core::{Error, Problem, ProblemKind, Root, SessionId, UserId};
use tmpa_maint::{
    CommonArgs, Deletion, Doomed, ExitStatus, Kept, Mode, Outcome, Planned, Progress, Proof, Run,
    StartError, Task,
};

pub use session::{Action, Options, Prepared};

/// Program name, as in the logs.
pub const PROGRAM: &str = "tmpa-archive";
/// Task, as in `.tmpa/runs/archive_history.json`.
pub const TASK: Task = Task::ArchiveHistory;
/// Sessions handled between two receipt writes: bounds what a crash can leave archived but
/// not yet deleted (the next run completes those) and the memory of one batch.
const BATCH_MAX: usize = 256;

/// Gzip old chat sessions into archive/, verify them from disk, then delete them
/// (archive_history).
///
/// Runs weekly from cron. A session is deleted only after its archive has been
/// decompressed from disk and compared byte for byte with it.
#[derive(clap::Parser, Debug)]
#[command(name = "tmpa-archive", version, about)]
pub struct Args {
    /// Flags every program takes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Archive sessions not modified for this long: a whole number and a unit (s, m, h, d,
    /// w), e.g. 12h, 30d, 2w
    #[arg(long, value_name = "AGE", default_value = "30d", value_parser = tmpa_maint::parse_age)]
    pub older_than: Duration,
    /// gzip compression level, 0 (none) to 9 (smallest)
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(0..=9))]
    pub level: u32,
    /// Write and verify archives, but delete no session (a rollout step between --dry-run
    /// and a real run; the next real run deletes them as already archived)
    #[arg(long, conflicts_with_all = ["dry_run", "apply_plan"])]
    pub no_delete: bool,
}

/// What happened to one session old enough to archive.
#[derive(Clone, Debug, Serialize)]
pub struct SessionReport {
    /// The user.
    pub user: String,
    /// The session id.
    pub session: String,
    /// The session file.
    #[serde(serialize_with = "serialize_path")]
    pub path: PathBuf,
    /// What was (or would be) done.
    pub action: Action,
    /// Whether the session file was deleted (always false in a dry run).
    pub deleted: bool,
    /// Size of the session in bytes.
    pub bytes: u64,
    /// Size of its archive in bytes, when one exists.
    pub archive_bytes: Option<u64>,
    /// SHA-256 of the session's bytes.
    pub sha256: Option<String>,
    /// Whether the session is valid JSON (archived either way: archival preserves bytes).
    pub valid_json: Option<bool>,
    /// Details in words.
    pub detail: String,
}

/// The whole run's report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `tmpa-archive`.
    pub program: &'static str,
    /// The canonical root.
    #[serde(serialize_with = "serialize_path")]
    pub root: PathBuf,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// `--older-than`, in seconds.
    pub older_than_secs: u64,
    /// Every session old enough to archive, by user then session.
    pub sessions: Vec<SessionReport>,
    /// Files and directories that need a look (symlinks, odd names, invalid JSON), and
    /// per-user failures.
    pub problems: Vec<Problem>,
    /// Totals.
    pub counts: Counts,
    /// The exit code.
    pub exit_code: u8,
    #[serde(skip)]
    failed: bool,
}

/// Totals of a run (the run record's `counts` and the log's last line).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    /// Users looked at.
    pub users: u64,
    /// Session files seen.
    pub sessions: u64,
    /// Sessions too recent to archive.
    pub young: u64,
    /// Sessions archived (new archive written and verified).
    pub archived: u64,
    /// Sessions whose archive already held their bytes (an interrupted run completed).
    pub completed: u64,
    /// Sessions whose archive holds other bytes (both kept).
    pub conflicts: u64,
    /// Sessions that changed while being archived (kept, retried next run).
    pub changed: u64,
    /// Archives that did not read back equal (both kept).
    pub verification_failed: u64,
    /// Sessions an I/O error stopped.
    pub failed: u64,
    /// Sessions that are not valid JSON (archived as they are).
    pub invalid_json: u64,
    /// Files deleted (real runs) or that a real run would delete (dry runs).
    #[serde(flatten)]
    pub deletions: tmpa_maint::DeleteCount,
    /// Bytes of the sessions deleted (or to delete).
    pub bytes_in: u64,
    /// Bytes of their archives.
    pub bytes_out: u64,
    /// Problems reported.
    pub problems: u64,
}

/// Runs the program: resolves the root, takes the lock, archives, reports.
///
/// # Errors
/// Start-up errors only (not a root: exit 2; locked: exit 3); everything after start-up
/// is reported per session and reflected in the returned status.
pub fn run(args: &Args) -> Result<ExitStatus, StartError> {
    let mode = Mode::of_flags(args.common.dry_run, args.no_delete);
    tmpa_maint::run_program(PROGRAM, TASK, &args.common, mode, "ARCHIVE", |run| {
        let report = archive(run, args);
        let status = report_status(&report);
        (report, status)
    })
}

/// The exit status a report calls for: 4 if anything failed (I/O), 1 if anything needs a
/// look (conflict, failed verification, symlink, invalid JSON), else 0.
pub fn report_status(report: &Report) -> ExitStatus {
    let mut status = ExitStatus::Ok;
    if !report.problems.is_empty() {
        status = ExitStatus::NeedsLook;
    }
    for s in &report.sessions {
        status = status.worst(match s.action {
            Action::Failed => ExitStatus::Failure,
            Action::Conflict | Action::VerificationFailed => ExitStatus::NeedsLook,
            _ if s.valid_json == Some(false) => ExitStatus::NeedsLook,
            _ => ExitStatus::Ok,
        });
    }
    if report.failed {
        status = status.worst(ExitStatus::Failure);
    }
    status
}

/// Archives the old sessions of every user of the run's root.
pub fn archive(run: &mut Run, args: &Args) -> Report {
    let mut report = Report {
        program: PROGRAM,
        root: run.root().path().to_path_buf(),
        dry_run: run.dry_run(),
        older_than_secs: args.older_than.as_secs(),
        sessions: Vec::new(),
        problems: Vec::new(),
        counts: Counts::default(),
        exit_code: 0,
        failed: false,
    };
    let cutoff = SystemTime::now()
        .checked_sub(args.older_than)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let users = list_users(run.root(), &mut report.problems);
    let progress = Progress::new();
    let mut young = 0u64;
    let mut seen = 0u64;
    for (i, user) in users.iter().enumerate() {
        progress.show(format!(
            "{PROGRAM}: user {user} ({}/{})",
            i + 1,
            users.len()
        ));
        let mut u = UserRun {
            user,
            cutoff,
            args,
            report: &mut report,
            young: 0,
            seen: 0,
        };
        let outcome = u.archive_user(run);
        young += u.young;
        seen += u.seen;
        if let Err(e) = outcome {
            let failed = !matches!(e, Error::Unsafe { .. });
            let path = e.path().map_or_else(
                || run.root().path().join("chat_history").join(user.as_str()),
                Path::to_path_buf,
            );
            report.failed |= failed;
            report.problems.push(Problem::new(
                path,
                if failed {
                    ProblemKind::Unreadable
                } else {
                    ProblemKind::Unsafe
                },
                format!("user {user} not archived: {}", e.chain()),
            ));
        }
    }
    progress.clear();
    report.problems.sort();
    report.counts = counts(&report, users.len() as u64, seen, young);
    report
}

fn counts(report: &Report, users: u64, seen: u64, young: u64) -> Counts {
    let mut c = Counts {
        users,
        sessions: seen,
        young,
        problems: report.problems.len() as u64,
        ..Counts::default()
    };
    let mut deleted = 0;
    for s in &report.sessions {
        *match s.action {
            Action::Archive => &mut c.archived,
            Action::Complete => &mut c.completed,
            Action::Conflict => &mut c.conflicts,
            Action::Changed => &mut c.changed,
            Action::VerificationFailed => &mut c.verification_failed,
            Action::Failed => &mut c.failed,
        } += 1;
        if s.valid_json == Some(false) {
            c.invalid_json += 1;
        }
        let gone = if report.dry_run {
            s.action.deletes_source()
        } else {
            s.deleted
        };
        if gone {
            deleted += 1;
            c.bytes_in += s.bytes;
            c.bytes_out += s.archive_bytes.unwrap_or(0);
        }
    }
    c.deletions =
        tmpa_maint::DeleteCount::of(tmpa_maint::Mode::of_flags(report.dry_run, false), deleted);
    c
}

/// The users of `chat_history/`, sorted; entries that are not safe to enter are reported.
fn list_users(root: &Root, problems: &mut Vec<Problem>) -> Vec<UserId> {
    let path = root.path().join("chat_history");
    let dir = match root_dir(root).open_dir("chat_history") {
        Ok(d) => d,
        Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(Error::Unsafe { .. }) => {
            problems.push(Problem::new(
                path,
                ProblemKind::Unsafe,
                "is a symlink (not followed)",
            ));
            return Vec::new();
        }
        Err(e) => {
            problems.push(Problem::new(
                path,
                ProblemKind::Unreadable,
                format!("cannot list: {}", e.chain()),
            ));
            return Vec::new();
        }
    };
    let entries = match dir.entries() {
        Ok(e) => e,
        Err(e) => {
            problems.push(Problem::new(
                path,
                ProblemKind::Unreadable,
                format!("cannot list: {}", e.chain()),
            ));
            return Vec::new();
        }
    };
    let mut users = Vec::new();
    for entry in entries.flatten() {
        let path = dir.join(&entry.name);
        let Some(user) = entry.name.to_str().and_then(|n| UserId::new(n).ok()) else {
            problems.push(Problem::new(
                path,
                ProblemKind::Corrupt,
                "not a valid user id (left alone)",
            ));
            continue;
        };
        let kind = entry
            .kind
            .or_else(|| dir.stat(&entry.name).ok().flatten().map(|m| m.kind));
        match kind {
            Some(Kind::Directory) => users.push(user),
            Some(Kind::Symlink) => problems.push(Problem::new(
                path,
                ProblemKind::Unsafe,
                "user directory is a symlink (not followed)",
            )),
            _ => problems.push(Problem::new(
                path,
                ProblemKind::Unsafe,
                "not a directory (left alone)",
            )),
        }
    }
    users.sort();
    users
}

/// One user's share of the run.
struct UserRun<'a> {
    user: &'a UserId,
    cutoff: SystemTime,
    args: &'a Args,
    report: &'a mut Report,
    young: u64,
    seen: u64,
}

impl UserRun<'_> {
    /// Archives the user's old sessions in batches.
    fn archive_user(&mut self, run: &mut Run) -> tmpa_core::Result<()> {
        let root = run.root().clone();
        let user_rel = Path::new("chat_history").join(self.user.as_str());
        // Held by descriptor: a directory swapped for a symlink meanwhile cannot lead any
        // read, write or delete of this run out of the root.
        let sessions = match root_dir(&root).open_dir(user_rel.join("sessions")) {
            Ok(d) => d,
            Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut old = self.old_sessions(&sessions)?;
        self.keep_planned(run, &sessions, &mut old);
        if old.is_empty() {
            return Ok(());
        }
        let archive = self.archive_dir(&root, &user_rel.join("archive"), run.mode())?;
        let opts = Options {
            level: self.args.level,
            dry_run: run.dry_run(),
        };
        for batch in old.chunks(BATCH_MAX) {
            self.archive_batch(run, &sessions, archive.as_ref(), batch, opts)?;
        }
        Ok(())
    }

    /// The archive directory, created in a run that writes; in a dry run `None` when
    /// missing.
    fn archive_dir(&self, root: &Root, rel: &Path, mode: Mode) -> tmpa_core::Result<Option<Dir>> {
        if mode.writes() {
            return root_dir(root).create_dir_all(rel).map(Some);
        }
        match root_dir(root).open_dir(rel) {
            Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => Ok(None),
            other => other.map(Some),
        }
    }

    /// The names of the user's sessions old enough to archive, sorted. Young ones are
    /// counted; symlinks, odd names and non-regular files named like sessions are reported.
    fn old_sessions(&mut self, dir: &Dir) -> tmpa_core::Result<Vec<(String, SessionId)>> {
        let cutoff_ns = self
            .cutoff
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        let mut old = Vec::new();
        for entry in dir.entries()? {
            let name = entry?.name;
            if temp_final_name(&name).is_some() || !name.as_encoded_bytes().ends_with(b".json") {
                continue; // temporaries are tmpa-tmpclean's; other files are not sessions
            }
            self.seen += 1;
            let shown = dir.join(&name);
            let id = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|s| SessionId::new(s).ok());
            let Some(id) = id else {
                self.problem(
                    shown,
                    ProblemKind::Corrupt,
                    "named like a session but not a valid session id (left alone)",
                );
                continue;
            };
            let meta = match dir.stat(&name) {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(e) => {
                    self.problem(
                        shown,
                        ProblemKind::Unreadable,
                        &format!("cannot stat: {}", e.chain()),
                    );
                    continue;
                }
            };
            if meta.kind == Kind::Symlink {
                self.problem(shown, ProblemKind::Unsafe, "is a symlink (not followed)");
            } else if meta.kind != Kind::File {
                self.problem(
                    shown,
                    ProblemKind::Unsafe,
                    "is not a regular file (left alone)",
                );
            } else if meta.stamp.mtime_ns > cutoff_ns {
                self.young += 1;
            } else if meta.stamp.size > SESSION_BYTES_MAX {
                // The library refuses to read a session this large, live or archived:
                // archiving it would not make it any more usable. It needs a look.
                self.problem(
                    shown,
                    ProblemKind::Corrupt,
                    &format!(
                        "larger than the session limit of {SESSION_BYTES_MAX} bytes (left live)"
                    ),
                );
            } else {
                old.push((format!("{id}.json"), id));
            }
        }
        old.sort();
        Ok(old)
    }

    /// The receipt line of a session deleted because `archive` holds it.
    fn deletion(&self, sessions: &Dir, name: &str, archive: &Path, p: &Prepared) -> Deletion {
        Deletion {
            file: path_text(&sessions.join(name)),
            bytes: p.bytes(),
            sha256: p.sha256.clone().unwrap_or_default(),
            stamp: p.stamp,
            held_by: path_text(archive),
            proof: Proof::ArchiveReadBack {
                user: self.user.to_string(),
                archive_bytes: p.archive_bytes.unwrap_or(0),
            },
        }
    }

    /// Applying a plan: keeps only the sessions it lists (unchanged: the stamp is
    /// checked here, the SHA-256 when the session is read); the others wait for the next
    /// run.
    fn keep_planned(&mut self, run: &mut Run, sessions: &Dir, old: &mut Vec<(String, SessionId)>) {
        old.retain(|(name, _)| {
            let file = path_text(&sessions.join(name));
            match run.planned(&file) {
                Planned::NoPlan => true,
                Planned::NotInPlan => false,
                Planned::Listed(p) => {
                    let now = sessions.stat(name).ok().flatten().map(|m| m.stamp);
                    if now == Some(p.stamp) {
                        true
                    } else {
                        self.report.problems.push(Problem::new(
                            sessions.join(name),
                            ProblemKind::Conflict,
                            "changed since the plan was made (kept; the next run looks again)",
                        ));
                        false
                    }
                }
            }
        });
    }

    fn problem(&mut self, path: PathBuf, kind: ProblemKind, reason: &str) {
        self.report.problems.push(Problem::new(path, kind, reason));
    }

    /// Archives and verifies a batch, then deletes its verified sources through the one
    /// deletion path (receipt first, each source only if still the same file).
    fn archive_batch(
        &mut self,
        run: &mut Run,
        sessions: &Dir,
        archive: Option<&Dir>,
        batch: &[(String, SessionId)],
        opts: Options,
    ) -> tmpa_core::Result<()> {
        let first = self.report.sessions.len();
        // Compression dominates: sessions of a batch are archived on every core.
        let done = tmpa_core::maintenance::map_ordered(batch, |(name, id)| {
            let archive_name = format!("{id}.json.gz");
            let p = session::archive_one(sessions, name, archive, &archive_name, opts);
            (archive_name, p)
        });
        let mut prepared = Vec::with_capacity(batch.len());
        for ((name, id), (archive_name, p)) in batch.iter().zip(done) {
            self.report.sessions.push(SessionReport {
                user: self.user.to_string(),
                session: id.to_string(),
                path: sessions.join(name),
                action: p.action,
                deleted: false,
                bytes: p.bytes(),
                archive_bytes: p.archive_bytes,
                sha256: p.sha256.clone(),
                valid_json: p.valid_json,
                detail: p.detail.clone(),
            });
            prepared.push((first + prepared.len(), name, archive_name, p));
        }
        let archive_path = |archive_name: &str| match archive {
            Some(a) => a.join(archive_name),
            None => sessions.path().with_file_name("archive").join(archive_name),
        };
        let deletable: Vec<_> = prepared
            .iter()
            .filter(|(_, _, _, p)| p.action.deletes_source())
            .collect();
        if run.mode().is_plan() {
            // The plan gets the receipt lines a real run would write.
            for (_, name, archive_name, p) in &deletable {
                run.would_delete(self.deletion(sessions, name, &archive_path(archive_name), p));
            }
        }
        if !run.mode().deletes() {
            return Ok(());
        }
        let Some(archive) = archive else {
            return Ok(());
        };
        let doomed: Vec<Doomed<'_>> = deletable
            .iter()
            .map(|(_, name, archive_name, p)| Doomed {
                dir: sessions,
                name: name.into(),
                stamp: p.stamp,
                line: self.deletion(sessions, name, &archive.join(archive_name), p),
                lease: None,
            })
            .collect();
        if doomed.is_empty() {
            return Ok(());
        }
        // The receipt is durable before the first deletion it covers.
        let (outcomes, sync_failures) = run.delete_verified(doomed, |_| None)?;
        for ((i, _, archive_name, p), outcome) in deletable.iter().zip(outcomes) {
            let r = &mut self.report.sessions[*i];
            match outcome {
                Outcome::Deleted => r.deleted = true,
                Outcome::Kept(Kept::Gone) => {}
                Outcome::Kept(_) => {
                    p.take_back(archive, archive_name);
                    r.action = Action::Changed;
                    r.detail = "changed after it was verified (kept; retried next run)".into();
                }
                Outcome::Failed(e) => {
                    r.action = Action::Failed;
                    r.detail = format!(
                        "archived and verified, but cannot delete: {} (kept; the next run completes)",
                        e.chain()
                    );
                }
            }
        }
        match sync_failures.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

tmpa_maint::impl_report!(Report, Counts);

/// The report as text: one line per session acted on, one line per problem, sorted.
pub fn render_text(report: &Report) -> String {
    let mut s = String::new();
    for p in &report.problems {
        let _ = writeln!(s, "  problem: {p}");
    }
    for r in &report.sessions {
        let size = match r.archive_bytes {
            Some(a) => format!("{} -> {a} bytes", r.bytes),
            None => format!("{} bytes", r.bytes),
        };
        let _ = writeln!(
            s,
            "{} {} ({size}){}{}",
            r.action.word(report.dry_run),
            path_text(&r.path),
            if r.detail.is_empty() { "" } else { ": " },
            r.detail,
        );
        if r.valid_json == Some(false) {
            let _ = writeln!(
                s,
                "  problem: {}: not valid JSON (archived as it is: archival preserves bytes)",
                path_text(&r.path)
            );
        }
    }
    s
}
