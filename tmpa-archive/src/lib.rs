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
//!
//! Acknowledged notifications whose ack is older than `--notifications-older-than`
//! (default 90 days) are archived per user in batches into
//! `notifications/{user}/archive/acked-{n}-{digest}.tar.gz`, verified from disk and
//! receipted the same way, then their inbox files and acks deleted ([`notify`]); the
//! library reads them there. With a store, each batch is the object
//! `{prefix}/{user}/acked-{n}-{digest}.tar.gz` instead, stored and verified exactly as a
//! session's object is (below), and the library reads it from the store.
//!
//! With an object store (`{root}/tmpa.toml` `[archive] url = "s3://bucket/prefix"`, or
//! `--to URL` for one run), the same invariants hold with the object
//! `{prefix}/{user}/{session}.json.gz` in place of the local archive ([`store`]):
//! - An object is never replaced: a HEAD first, then a conditional put where the store
//!   has one (the report says which); an object already there is compared.
//! - A session is deleted only after its object, read back from the store with the ETag
//!   its put returned and the bytes that were sent, decompressed to exactly the session's
//!   bytes on disk, and after the receipt line (object URL, size, ETag, SHA-256 of the
//!   object and of the session) is fsynced.
//! - A store that cannot be reached, is too slow or keeps failing leaves every session
//!   not yet verified in place (exit 4); after its first such failure no further request
//!   is made in the run.
//! - `--dry-run` makes no request at all: it lists what would be uploaded.
//! - `--migrate-local` moves local archives to the store the same way (the local archive
//!   is deleted through the same deletion path once the object reads back equal).

pub mod notify;
mod report;
pub mod session;
pub mod store;
mod tier;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tmpa_core::maintenance::store::Store;
use tmpa_core::maintenance::{Dir, Kind, SESSION_BYTES_MAX, path_text, root_dir, temp_final_name};
use tmpa_core::{Error, Problem, ProblemKind, Root, SessionId, StoreErrorKind, StoreUrl, UserId};
use tmpa_maint::{
    CommonArgs, Deletion, Doomed, ExitStatus, Kept, Mode, Outcome, Planned, Progress, Proof, Run,
    StartError, Task,
};

use report::counts;
pub use report::{Counts, Destination, Origin, Report, SessionReport, render_text, report_status};
pub use session::{Action, Options, StoredObject};
pub use store::{SourceKind, StoreRun};
use tier::Tier;

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
    /// Archive acknowledged notifications whose ack is this old (into
    /// notifications/{user}/archive/): a whole number and a unit (s, m, h, d, w)
    #[arg(long, value_name = "AGE", default_value = "90d", value_parser = tmpa_maint::parse_age)]
    pub notifications_older_than: Duration,
    /// gzip compression level, 0 (none) to 9 (smallest)
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(0..=9))]
    pub level: u32,
    /// Write and verify archives, but delete no session (a rollout step between --dry-run
    /// and a real run; the next real run deletes them as already archived)
    #[arg(long, conflicts_with_all = ["dry_run", "apply_plan"])]
    pub no_delete: bool,
    /// Archive to this object store for this run, instead of what {root}/tmpa.toml says
    /// (s3://bucket/prefix, gs://bucket/prefix, az://container/prefix, file:///dir)
    /// [default: the [archive] url of {root}/tmpa.toml, else the local archive/ directories]
    #[arg(long, value_name = "URL")]
    pub to: Option<StoreUrl>,
    /// Also move the local archives (chat_history/*/archive/*.json.gz) to the store: each
    /// is uploaded as it is, read back and compared, then removed locally
    #[arg(long)]
    pub migrate_local: bool,
    /// The object store's credentials and settings, as NAME=value lines (AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL; GOOGLE_*, AZURE_*), over those
    /// of the environment; read before the program becomes --user, so the file may be
    /// root's alone (0600), and never put in any environment. Only a file root or this
    /// program's user could have written alone is believed
    /// [default: /etc/tmpa/archive.env, when it exists]
    #[arg(long, value_name = "FILE", env = "TMPA_ARCHIVE_CREDENTIALS")]
    pub credentials: Option<PathBuf>,
}

impl tmpa_maint::Program for Args {
    const NAME: &'static str = PROGRAM;
    const TASK: Task = TASK;
    const REAL_MODE: &'static str = "ARCHIVE";

    fn invocation(&self) -> Option<tmpa_maint::Invocation> {
        Some(self.common.invocation())
    }

    fn run(&self) -> Result<ExitStatus, StartError> {
        run(self)
    }
}

/// Runs the program: resolves the root, takes the lock, archives, reports.
///
/// # Errors
/// Start-up errors only (not a root: exit 2; locked: exit 3); everything after start-up
/// is reported per session and reflected in the returned status.
pub fn run(args: &Args) -> Result<ExitStatus, StartError> {
    let mode = Mode::of_flags(args.common.dry_run, args.no_delete);
    // Started as root: the credentials are read from root's file first; then the switch
    // to --user, which also makes this process's memory root's alone (not dumpable).
    let credentials = tmpa_maint::read_credentials(args.credentials.as_deref())?;
    let prepared = tmpa_maint::prepare(&args.common)?;
    let store = open_store(args, &credentials)?;
    tmpa_maint::run_program(
        prepared,
        PROGRAM,
        TASK,
        &args.common,
        mode,
        "ARCHIVE",
        |run| {
            let report = archive(run, args, store.as_ref());
            let status = report_status(&report);
            (report, status)
        },
    )
}

/// The store this run archives to: `--to`, else `{root}/tmpa.toml`'s `[archive] url`;
/// `None` for the local `archive/` directories. Makes no request.
///
/// # Errors
/// A usage error (exit 2) naming the file or URL and the problem: a `tmpa.toml` that
/// cannot be used, a client that cannot be set up from the URL and the environment,
/// `--migrate-local` without a store. A root that cannot be opened as in every program.
pub fn open_store(
    args: &Args,
    credentials: &tmpa_core::Credentials,
) -> Result<Option<StoreRun>, StartError> {
    let root = tmpa_maint::resolve_root(args.common.root.as_deref())?;
    let usage = |e: Error| StartError::Usage(e.chain());
    let config = tmpa_maint::archive_config(&root, args.to.as_ref())?;
    let Some(config) = config else {
        if args.migrate_local {
            return Err(StartError::Usage(format!(
                "--migrate-local moves local archives to an object store, but none is configured: set [archive] url in {} or give --to URL",
                path_text(&root.path().join(tmpa_core::maintenance::CONFIG_NAME))
            )));
        }
        return Ok(None);
    };
    match Store::open_with(
        &config,
        tmpa_core::maintenance::store::RETRIES_MAX,
        credentials,
    ) {
        Ok(store) => Ok(Some(StoreRun::new(store))),
        Err(
            e @ Error::Store {
                kind: StoreErrorKind::Config,
                ..
            },
        ) => Err(usage(e)),
        Err(e) => Err(StartError::Core(e)),
    }
}

/// Archives the old sessions of every user of the run's root, to `store` when there is
/// one (and, with `--migrate-local`, moves the local archives there).
pub fn archive(run: &mut Run, args: &Args, store: Option<&StoreRun>) -> Report {
    let mut report = Report {
        program: PROGRAM,
        root: run.root().path().to_path_buf(),
        dry_run: run.dry_run(),
        older_than_secs: args.older_than.as_secs(),
        destination: Destination {
            url: store.map_or_else(|| "local".to_owned(), |s| s.store.url().to_string()),
            put_guard: None,
            unavailable: None,
        },
        sessions: Vec::new(),
        notifications_older_than_secs: args.notifications_older_than.as_secs(),
        notification_batches: Vec::new(),
        problems: Vec::new(),
        counts: Counts::default(),
        exit_code: 0,
        failed: false,
    };
    let cutoff = SystemTime::now()
        .checked_sub(args.older_than)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let users = list_users(run.root(), "chat_history", &mut report.problems);
    if let Some(sr) = store.filter(|_| run.mode().writes()) {
        // One cheap request before any work: a store that cannot be reached leaves every
        // session in place at the cost of one timeout.
        if let Err(e) = sr.store.probe() {
            let _ = sr.down.set(e.chain());
        }
    }
    let progress = Progress::new();
    let mut young = 0u64;
    let mut seen = 0u64;
    let mut beside_temporary = 0u64;
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
            store,
            report: &mut report,
            young: 0,
            seen: 0,
            beside_temporary: 0,
        };
        let outcome = u.archive_user(run);
        young += u.young;
        seen += u.seen;
        beside_temporary += u.beside_temporary;
        if let Err(e) = outcome {
            user_not_archived(&mut report, run.root(), ("chat_history", user), "user", &e);
        }
    }
    progress.clear();
    let (ncounts, ndeleted) = archive_notifications(run, args, store, &mut report);
    if let Some(sr) = store {
        let put = report
            .sessions
            .iter()
            .any(|s| s.object.is_some() && s.action == Action::Archive)
            || report
                .notification_batches
                .iter()
                .any(|b| b.object.is_some() && b.action == notify::BatchAction::Archive);
        if run.mode().writes() && put {
            report.destination.put_guard = Some(sr.store.put_mode());
        }
        if let Some(why) = sr.down.get() {
            report.failed = true;
            report.destination.unavailable = Some(why.clone());
            report.problems.push(Problem::new(
                run.root().path().join("chat_history"),
                ProblemKind::Unreadable,
                format!(
                    "the store {} failed ({why}); every session and notification not yet verified was left in place",
                    sr.store.url()
                ),
            ));
        }
    }
    report.problems.sort();
    report.counts = counts(&report, users.len() as u64, seen, young);
    report.counts.beside_temporary = beside_temporary;
    report.counts.notifications = ncounts;
    let sessions_deleted = report
        .counts
        .deletions
        .deleted
        .or(report.counts.deletions.would_delete);
    report.counts.deletions =
        tmpa_maint::DeleteCount::of(run.mode(), sessions_deleted.unwrap_or(0) + ndeleted);
    report
}

/// Archives every user's old acknowledged notifications ([`notify`]), to `store` when
/// there is one; returns the counts and the files deleted (or that a real run would
/// delete).
fn archive_notifications(
    run: &mut Run,
    args: &Args,
    store: Option<&StoreRun>,
    report: &mut Report,
) -> (notify::NotificationCounts, u64) {
    let cutoff = SystemTime::now()
        .checked_sub(args.notifications_older_than)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut counts = notify::NotificationCounts::default();
    let mut deleted = 0;
    for user in list_users(run.root(), "notifications", &mut report.problems) {
        let mut u = notify::NotifyRun {
            user: &user,
            store,
            cutoff,
            level: args.level,
            batches: &mut report.notification_batches,
            problems: &mut report.problems,
            counts: &mut counts,
            deleted: 0,
        };
        let outcome = u.archive_user(run);
        deleted += u.deleted;
        if let Err(e) = outcome {
            user_not_archived(
                report,
                run.root(),
                ("notifications", &user),
                "notifications of",
                &e,
            );
        }
    }
    (counts, deleted)
}

/// A user of `data` whose archival stopped on `e`: a problem naming the file (or the
/// user's directory) and why; a failure of the run (exit 4) unless the tree was unsafe
/// to enter, which needs a look (exit 1).
fn user_not_archived(
    report: &mut Report,
    root: &Root,
    (data, user): (&str, &UserId),
    what: &str,
    e: &Error,
) {
    let failed = !matches!(e, Error::Unsafe { .. });
    report.failed |= failed;
    let path = e.path().map_or_else(
        || root.path().join(data).join(user.as_str()),
        Path::to_path_buf,
    );
    let kind = if failed {
        ProblemKind::Unreadable
    } else {
        ProblemKind::Unsafe
    };
    report.problems.push(Problem::new(
        path,
        kind,
        format!("{what} {user} not archived: {}", e.chain()),
    ));
}

/// The users of `data` (`chat_history` or `notifications`), sorted; entries that are not
/// safe to enter are reported.
fn list_users(root: &Root, data: &str, problems: &mut Vec<Problem>) -> Vec<UserId> {
    let path = root.path().join(data);
    let dir = match root_dir(root).open_dir(data) {
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
    store: Option<&'a StoreRun>,
    report: &'a mut Report,
    young: u64,
    seen: u64,
    /// Old sessions left live because a temporary of their name lies beside them.
    beside_temporary: u64,
}

impl UserRun<'_> {
    /// Archives the user's old sessions in batches (then, with `--migrate-local`, moves
    /// the user's local archives to the store).
    fn archive_user(&mut self, run: &mut Run) -> tmpa_core::Result<()> {
        let root = run.root().clone();
        let user_rel = Path::new("chat_history").join(self.user.as_str());
        let opts = Options {
            level: self.args.level,
            dry_run: run.dry_run(),
        };
        // Held by descriptor: a directory swapped for a symlink meanwhile cannot lead any
        // read, write or delete of this run out of the root.
        let sessions = open_if_any(&root, &user_rel.join("sessions"))?;
        let old = match &sessions {
            Some(dir) => {
                let mut old = self.old_sessions(dir)?;
                self.keep_planned(run, dir, &mut old);
                old
            }
            None => Vec::new(),
        };
        if let (Some(sessions), false) = (&sessions, old.is_empty()) {
            let tier = match self.store {
                None => {
                    Tier::Local(self.archive_dir(&root, &user_rel.join("archive"), run.mode())?)
                }
                Some(sr) => Tier::Store(sr),
            };
            for batch in old.chunks(BATCH_MAX) {
                self.batch(run, &tier, (sessions, SourceKind::Session), batch, opts)?;
            }
        }
        if let (Some(sr), true) = (self.store, self.args.migrate_local) {
            let Some(archive) = open_if_any(&root, &user_rel.join("archive"))? else {
                return Ok(());
            };
            let mut local = self.local_archives(&archive)?;
            self.keep_planned(run, &archive, &mut local);
            let tier = Tier::Store(sr);
            for batch in local.chunks(BATCH_MAX) {
                self.batch(
                    run,
                    &tier,
                    (&archive, SourceKind::LocalArchive),
                    batch,
                    opts,
                )?;
            }
        }
        Ok(())
    }

    /// The user's local archives (`{session}.json.gz` regular files), sorted; other
    /// entries are left alone, symlinks reported.
    fn local_archives(&mut self, dir: &Dir) -> tmpa_core::Result<Vec<(String, SessionId)>> {
        let mut out = Vec::new();
        for entry in dir.entries()? {
            let name = entry?.name;
            let Some(id) = name
                .to_str()
                .filter(|_| temp_final_name(&name).is_none())
                .and_then(|n| n.strip_suffix(".json.gz"))
                .and_then(|s| SessionId::new(s).ok())
            else {
                continue; // temporaries and files that are not archives
            };
            match dir.stat(&name)? {
                Some(m) if m.kind == Kind::File => out.push((format!("{id}.json.gz"), id)),
                Some(m) if m.kind == Kind::Symlink => self.problem(
                    dir.join(&name),
                    ProblemKind::Unsafe,
                    "is a symlink (not followed, not moved)",
                ),
                _ => {}
            }
        }
        out.sort();
        Ok(out)
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
        // A session with a temporary of its name beside it is being written, or its
        // last write died: not idle, left live (tmpa_maint::finals_with_temporaries).
        let beside = tmpa_maint::finals_with_temporaries(dir)?;
        for entry in dir.entries()? {
            let name = entry?.name;
            if temp_final_name(&name).is_some() || !name.as_encoded_bytes().ends_with(b".json") {
                continue; // temporaries are tmpa-tmpclean's; other files are not sessions
            }
            if beside.contains(&name) {
                self.seen += 1;
                self.beside_temporary += 1;
                continue;
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

    /// Applying a plan: keeps only the files it lists (unchanged: the stamp is checked
    /// here, the SHA-256 when the file is read); the others wait for the next run.
    fn keep_planned(&mut self, run: &mut Run, dir: &Dir, files: &mut Vec<(String, SessionId)>) {
        files.retain(|(name, _)| {
            let file = path_text(&dir.join(name));
            match run.planned(&file) {
                Planned::NoPlan => true,
                Planned::NotInPlan => false,
                Planned::Listed(p) => {
                    let now = dir.stat(name).ok().flatten().map(|m| m.stamp);
                    if now == Some(p.stamp) {
                        true
                    } else {
                        self.report.problems.push(Problem::new(
                            dir.join(name),
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

    /// One batch, whatever the tier: each source archived and verified (on the tier's
    /// threads), reported, then the verified ones disposed of through the one delete step
    /// (receipt first, each only if still the same file).
    fn batch(
        &mut self,
        run: &mut Run,
        tier: &Tier<'_>,
        (dir, kind): (&Dir, SourceKind),
        batch: &[(String, SessionId)],
        opts: Options,
    ) -> tmpa_core::Result<()> {
        let first = self.report.sessions.len();
        let user = self.user;
        let done = tier.map(batch, |(name, id)| {
            tier.archive((dir, kind), name, (user, id), opts)
        });
        let from = match kind {
            SourceKind::Session => Origin::Sessions,
            SourceKind::LocalArchive => Origin::Archive,
        };
        let mut prepared = Vec::with_capacity(batch.len());
        for ((name, id), p) in batch.iter().zip(done) {
            self.report
                .sessions
                .push(SessionReport::prepared(user, id, dir.join(name), &p, from));
            prepared.push((first + prepared.len(), name.as_str(), id, p));
        }
        let doomed: Vec<Verified<'_>> = prepared
            .iter()
            .filter(|(.., p)| p.action.deletes_source())
            .map(|(i, name, id, p)| {
                let (held_by, proof) = tier.holder(dir, (user, id), p);
                Verified {
                    report: *i,
                    id,
                    name,
                    prepared: p,
                    held_by,
                    proof,
                }
            })
            .collect();
        self.delete_batch(run, dir, doomed, |v| {
            tier.take_back((user, v.id), v.prepared)
        })
    }

    /// Deletes the verified sources of a batch from `dir` through the one deletion path
    /// (receipt first, each only if still the same file); a source that changed after
    /// its verification is kept, and `take_back` undoes this run's copy of its old bytes.
    fn delete_batch(
        &mut self,
        run: &mut Run,
        dir: &Dir,
        verified: Vec<Verified<'_>>,
        take_back: impl Fn(&Verified<'_>),
    ) -> tmpa_core::Result<()> {
        if verified.is_empty() {
            return Ok(());
        }
        let line = |v: &Verified<'_>| Deletion {
            file: path_text(&dir.join(v.name)),
            bytes: v.prepared.bytes(),
            sha256: v.prepared.sha256.clone().unwrap_or_default(),
            stamp: v.prepared.stamp,
            held_by: v.held_by.clone(),
            proof: v.proof.clone(),
        };
        let doomed: Vec<Doomed<'_>> = verified
            .iter()
            .map(|v| Doomed {
                dir,
                name: v.name.into(),
                stamp: v.prepared.stamp,
                line: line(v),
                lease: None,
            })
            .collect();
        // Per mode: noted in a dry run's plan, left by --no-delete, or deleted (the
        // receipt durable before the first deletion it covers).
        let (outcomes, synced) = run.dispose(doomed, |_| None)?.split();
        for (v, outcome) in verified.iter().zip(outcomes) {
            match outcome {
                Outcome::Deleted => self.report.sessions[v.report].deleted = true,
                // A dry run's plan has it; --no-delete leaves it: the report's action
                // says what a real run does.
                Outcome::WouldDelete | Outcome::Left | Outcome::Kept(Kept::Gone) => {}
                Outcome::Kept(_) => {
                    take_back(v);
                    let r = &mut self.report.sessions[v.report];
                    r.action = Action::Changed;
                    r.detail = "changed after it was verified (kept; retried next run)".into();
                }
                Outcome::Failed(e) => {
                    let r = &mut self.report.sessions[v.report];
                    r.action = Action::Failed;
                    r.detail = format!(
                        "archived and verified, but cannot delete: {} (kept; the next run completes)",
                        e.chain()
                    );
                }
            }
        }
        synced
    }
}

/// A source whose data is verified to be held elsewhere, about to be deleted.
struct Verified<'a> {
    /// Its index in the report's sessions.
    report: usize,
    /// Its session.
    id: &'a SessionId,
    /// Its name in its directory.
    name: &'a str,
    /// What archiving it found.
    prepared: &'a session::Prepared,
    /// Where its data is now (a path or an object URL).
    held_by: String,
    /// How that was verified.
    proof: Proof,
}

/// The directory `rel` of the root, held by descriptor; `None` when missing.
fn open_if_any(root: &Root, rel: &Path) -> tmpa_core::Result<Option<Dir>> {
    match root_dir(root).open_dir(rel) {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// For `skip_serializing_if`: counts that are new and rare stay out of reports and run
/// records while they are zero.
pub(crate) fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}
