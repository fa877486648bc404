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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tmpa_core::day::{Problem, path_text, serialize_path};
use tmpa_core::dirfd::DirHandle;
use tmpa_core::program::{CommonArgs, ExitStatus, Progress, Run};
use tmpa_core::session::SESSION_BYTES_MAX;
use tmpa_core::{Error, Root, SessionId, UserId};

pub use session::{Action, Options};

/// Program name, as in the logs.
pub const PROGRAM: &str = "tmpa-archive";
/// Task name, as in `.tmpa/runs/archive_history.json`.
pub const TASK: &str = "archive_history";
/// Sessions handled between two receipt writes: bounds what a crash can leave archived but
/// not yet deleted (the next run completes those) and the memory of one batch.
const BATCH_MAX: usize = 256;

/// Gzip old chat sessions into archive/, verify them from disk, then delete them
/// (archive_history).
///
/// Runs weekly from cron. A session is deleted only after its archive has been
/// decompressed from disk and compared byte for byte with it.
#[derive(clap::Parser, Debug)]
#[command(name = "tmpa-archive", version, about, long_about = None)]
pub struct Args {
    /// Flags every program takes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Archive sessions not modified for this long: a whole number and a unit (s, m, h, d,
    /// w), e.g. 12h, 30d, 2w
    #[arg(long, value_name = "AGE", default_value = "30d", value_parser = tmpa_core::program::parse_age)]
    pub older_than: Duration,
    /// gzip compression level, 0 (none) to 9 (smallest)
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(0..=9))]
    pub level: u32,
    /// Write and verify archives, but delete no session (a rollout step between --dry-run
    /// and a real run; the next real run deletes them as already archived)
    #[arg(long, conflicts_with = "dry_run")]
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
    pub counts: BTreeMap<String, u64>,
    /// The exit code.
    pub exit_code: u8,
    #[serde(skip)]
    failed: bool,
}

/// Runs the program: resolves the root, takes the lock, archives, reports.
///
/// # Errors
/// Start-up errors only (not a root: exit 2; locked: exit 3); everything after start-up
/// is reported per session and reflected in the returned status.
pub fn run(args: &Args) -> tmpa_core::Result<ExitStatus> {
    let mode = if args.no_delete {
        "ARCHIVE-NO-DELETE"
    } else {
        "ARCHIVE"
    };
    tmpa_core::program::run_program(PROGRAM, TASK, &args.common, mode, |run| {
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
        counts: BTreeMap::new(),
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
            let path = match &e {
                Error::Io { path, .. } | Error::Unsafe { path, .. } => path.clone(),
                _ => run.root().chat_history_dir().join(user.as_str()),
            };
            report.failed |= failed;
            report.problems.push(Problem {
                path,
                reason: format!("user {user} not archived: {}", e.chain()),
            });
        }
    }
    progress.clear();
    report.problems.sort();
    report.counts = counts(&report, users.len() as u64, seen, young);
    report
}

fn counts(report: &Report, users: u64, seen: u64, young: u64) -> BTreeMap<String, u64> {
    let mut c = BTreeMap::new();
    let deleted_key = if report.dry_run {
        "would_delete"
    } else {
        "deleted"
    };
    for key in [
        "archived",
        "completed",
        "conflicts",
        "changed",
        "verification_failed",
        "failed",
        "invalid_json",
        deleted_key,
        "bytes_in",
        "bytes_out",
    ] {
        c.insert(key.to_owned(), 0);
    }
    c.insert("users".to_owned(), users);
    c.insert("sessions".to_owned(), seen);
    c.insert("young".to_owned(), young);
    c.insert("problems".to_owned(), report.problems.len() as u64);
    for s in &report.sessions {
        let key = match s.action {
            Action::Archive => "archived",
            Action::Complete => "completed",
            Action::Conflict => "conflicts",
            Action::Changed => "changed",
            Action::VerificationFailed => "verification_failed",
            Action::Failed => "failed",
        };
        *c.get_mut(key).expect("inserted above") += 1;
        if s.valid_json == Some(false) {
            *c.get_mut("invalid_json").expect("inserted above") += 1;
        }
        let gone = if report.dry_run {
            s.action.deletes_source()
        } else {
            s.deleted
        };
        if gone {
            *c.get_mut(deleted_key).expect("inserted above") += 1;
            *c.get_mut("bytes_in").expect("inserted above") += s.bytes;
            *c.get_mut("bytes_out").expect("inserted above") += s.archive_bytes.unwrap_or(0);
        }
    }
    c
}

/// The users of `chat_history/`, sorted; entries that are not safe to enter are reported.
fn list_users(root: &Root, problems: &mut Vec<Problem>) -> Vec<UserId> {
    let dir = root.chat_history_dir();
    let rd = match fs::symlink_metadata(&dir) {
        Ok(m) if m.file_type().is_symlink() => {
            problems.push(Problem {
                path: dir,
                reason: "is a symlink (not followed)".into(),
            });
            return Vec::new();
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        _ => match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) => {
                problems.push(Problem {
                    path: dir,
                    reason: format!("cannot list: {e}"),
                });
                return Vec::new();
            }
        },
    };
    let mut users = Vec::new();
    for entry in rd.flatten() {
        let path = entry.path();
        let Some(user) = entry.file_name().to_str().and_then(|n| UserId::new(n).ok()) else {
            problems.push(Problem {
                path,
                reason: "not a valid user id (left alone)".into(),
            });
            continue;
        };
        match entry.file_type() {
            Ok(t) if t.is_dir() => users.push(user),
            Ok(t) if t.is_symlink() => problems.push(Problem {
                path,
                reason: "user directory is a symlink (not followed)".into(),
            }),
            _ => problems.push(Problem {
                path,
                reason: "not a directory (left alone)".into(),
            }),
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
        let sessions_path = root.sessions_dir(self.user);
        if fs::symlink_metadata(&sessions_path)
            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
        {
            return Ok(());
        }
        // Held by descriptor: a directory swapped for a symlink meanwhile cannot lead any
        // read, write or delete of this run out of the root.
        let sessions = DirHandle::open(&root, &sessions_path)?;
        let old = self.old_sessions(&sessions)?;
        if old.is_empty() {
            return Ok(());
        }
        let archive = self.archive_dir(&root)?;
        let opts = Options {
            level: self.args.level,
            dry_run: run.dry_run(),
        };
        for batch in old.chunks(BATCH_MAX) {
            self.archive_batch(run, &sessions, archive.as_ref(), batch, opts)?;
        }
        Ok(())
    }

    /// The archive directory, created in a real run; in a dry run `None` when missing.
    fn archive_dir(&self, root: &Root) -> tmpa_core::Result<Option<DirHandle>> {
        let path = root.archive_dir(self.user);
        if self.report.dry_run {
            return match fs::symlink_metadata(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                _ => DirHandle::open(root, &path).map(Some),
            };
        }
        root.ensure_dir(&path)?;
        DirHandle::open(root, &path).map(Some)
    }

    /// The names of the user's sessions old enough to archive, sorted. Young ones are
    /// counted; symlinks, odd names and non-regular files named like sessions are reported.
    fn old_sessions(&mut self, dir: &DirHandle) -> tmpa_core::Result<Vec<(String, SessionId)>> {
        let rd = fs::read_dir(dir.op_path()).map_err(|e| Error::io("list", dir.display(), e))?;
        let mut old = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| Error::io("list", dir.display(), e))?;
            let name = entry.file_name();
            if tmpa_core::temp_final_name(&name).is_some()
                || !name.as_encoded_bytes().ends_with(b".json")
            {
                continue; // temporaries are tmpa-tmpclean's; other files are not sessions
            }
            self.seen += 1;
            let shown = dir.shown(&name);
            let id = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|s| SessionId::new(s).ok());
            let Some(id) = id else {
                self.problem(
                    shown,
                    "named like a session but not a valid session id (left alone)",
                );
                continue;
            };
            let meta = match fs::symlink_metadata(dir.op(&name)) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    self.problem(shown, &format!("cannot stat: {e}"));
                    continue;
                }
            };
            if meta.file_type().is_symlink() {
                self.problem(shown, "is a symlink (not followed)");
            } else if !meta.is_file() {
                self.problem(shown, "is not a regular file (left alone)");
            } else if meta.modified().is_ok_and(|m| m > self.cutoff) {
                self.young += 1;
            } else if meta.len() > SESSION_BYTES_MAX {
                // The library refuses to read a session this large, live or archived:
                // archiving it would not make it any more usable. It needs a look.
                self.problem(
                    shown,
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

    fn problem(&mut self, path: PathBuf, reason: &str) {
        self.report.problems.push(Problem {
            path,
            reason: reason.to_owned(),
        });
    }

    /// Archives and verifies a batch, writes its receipt, then deletes its verified sources.
    fn archive_batch(
        &mut self,
        run: &mut Run,
        sessions: &DirHandle,
        archive: Option<&DirHandle>,
        batch: &[(String, SessionId)],
        opts: Options,
    ) -> tmpa_core::Result<()> {
        let first = self.report.sessions.len();
        // Compression dominates: sessions of a batch are archived on every core.
        let done = tmpa_core::par::map_ordered(batch, |(name, id)| {
            let archive_name = format!("{id}.json.gz");
            let p = session::archive_one(sessions, name, archive, &archive_name, opts);
            (archive_name, p)
        });
        let mut prepared = Vec::with_capacity(batch.len());
        for ((name, id), (archive_name, p)) in batch.iter().zip(done) {
            self.report.sessions.push(SessionReport {
                user: self.user.to_string(),
                session: id.to_string(),
                path: sessions.shown(name),
                action: p.action,
                deleted: false,
                bytes: p.bytes(),
                archive_bytes: p.archive_bytes,
                sha256: p.sha256.clone(),
                valid_json: p.valid_json,
                detail: p.detail.clone(),
            });
            prepared.push((name, archive_name, p));
        }
        if opts.dry_run || self.args.no_delete {
            return Ok(());
        }
        let Some(archive) = archive else {
            return Ok(());
        };
        let entries: Vec<serde_json::Value> = prepared
            .iter()
            .filter(|(_, _, p)| p.action.deletes_source())
            .map(|(name, archive_name, p)| {
                serde_json::json!({
                    "user": self.user.as_str(),
                    "file": path_text(&sessions.shown(name)),
                    "sha256": p.sha256,
                    "bytes": p.bytes(),
                    "held_by": path_text(&archive.shown(archive_name)),
                    "archive_bytes": p.archive_bytes,
                    "verified": true,
                })
            })
            .collect();
        if entries.is_empty() {
            return Ok(());
        }
        // The receipt is durable before the first deletion it covers.
        run.record_receipt(&entries)?;
        for (i, (name, archive_name, p)) in prepared.iter().enumerate() {
            if !p.action.deletes_source() {
                continue;
            }
            let r = &mut self.report.sessions[first + i];
            if !p.still_same(sessions, name) {
                p.take_back(archive, archive_name);
                r.action = Action::Changed;
                r.detail = "changed after it was verified (kept; retried next run)".into();
                continue;
            }
            match fs::remove_file(sessions.op(name)) {
                Ok(()) => r.deleted = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    r.action = Action::Failed;
                    r.detail = format!(
                        "archived and verified, but cannot delete: {e} (kept; the next run completes)"
                    );
                }
            }
        }
        tmpa_core::atomic::sync_dir(sessions.op_path()).map_err(|e| sessions.shown_error(e))
    }
}

tmpa_core::impl_report!(Report);

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
