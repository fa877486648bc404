//! # tmpa-archive (archive_history)
//!
//! Weekly archival of chat sessions: every `chat_history/{user}/sessions/{session}.json`
//! not modified for `--older-than` (default 30 days) goes through gzip into a version of
//! its archive (`chat_history/{user}/archive/{session}.json.gz` the first time,
//! `archive/versions/{n}/{session}.json.gz` for a chat resumed after its archival), read
//! back and compared byte for byte with the session, recorded in a fsynced receipt
//! (path, size, SHA-256), and only then deleted from `sessions/`. Acknowledged
//! notifications whose ack is older than `--notifications-older-than` (default 90 days)
//! go per user in batches into `notifications/{user}/archive/acked-{n}-{digest}.tar.gz`
//! the same way ([`notify`]). With an object store (`{root}/tmpa.toml` `[archive] url =
//! "s3://bucket/prefix"`), both go to its objects of the same names below
//! `{prefix}/{user}/` instead.
//!
//! Every unit (a session, a local archive moved with `--migrate-local`, a batch of
//! notifications, the acks an archive already holds) goes through **one pipeline**
//! (`pipeline.rs`) over either **tier** (`tier.rs`: the tree's archive directories or
//! the store): open and build, look at what is already there, the plan's admission,
//! write or put, read back and compare, dispose, take back.
//!
//! Invariants:
//! - A file is deleted only after an archive holding its bytes was read back from where
//!   it is kept and compared, its receipt line is fsynced, and its directory entry is
//!   still the same file (inode, size, mtime, ctime) that was read (`Run::dispose`).
//! - No archive is ever overwritten: a local one is written under a temporary name and
//!   renamed without replacing; an object is put conditionally (`If-None-Match: *`, or a
//!   HEAD first where the store has no conditional put). An archive already holding the
//!   same data completes an interrupted run; an earlier version of a session makes the
//!   live file the next version beside it; anything else is a conflict: everything kept
//!   (exit 1), with a remedy that keeps the live file.
//! - No archive is left that no deletion relies on: a plan being applied admits a unit
//!   before its archive is made (`Run::admit`), and an archive whose sources all changed
//!   before their deletion is taken back (the local one through the delete step, an
//!   object only if it is still the one put: `Store::delete_own`).
//! - `profile/`, temporaries (`*.tmp*`, tmpa-tmpclean's business) and anything that is not
//!   a session, notification or ack regular file are never touched. Symlinks are never
//!   followed: every directory is held by descriptor from the root down.
//! - One user's failure (permission, immutable directory, full disk) is reported and the
//!   run goes on with the other users; a file verified but not deleted is named (exit 4).
//! - A session larger than the library's limit (`SESSION_BYTES_MAX`, 256 MiB) is reported
//!   and left live: memory and time per session are bounded; the archives held in memory
//!   at once are bounded by `store::IN_FLIGHT_BYTES_MAX`.
//! - A store that cannot be reached, is too slow or keeps failing leaves every file not
//!   yet verified in place (exit 4); after its first such failure no further request is
//!   made in the run.
//! - `--dry-run` writes nothing, locally or to the store; it reads what a real run would
//!   compare (archives, the store's listings and objects), so that its plan names the
//!   very archive (and version) each file would be held by.
//! - A run that deletes archives only where the library reads them: a `--to` other than
//!   the library's store is refused unless the run deletes nothing.

mod gz;
mod history;
mod lonely;
mod migrate;
pub mod notify;
mod pipeline;
mod report;
mod session;
pub mod store;
mod tier;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tmpa_core::maintenance::store::Store;
use tmpa_core::maintenance::{Dir, Kind, path_text, root_dir};
use tmpa_core::{Error, Problem, ProblemKind, Root, StoreErrorKind, StoreUrl, UserId};
use tmpa_maint::{CommonArgs, ExitStatus, Mode, Progress, Run, StartError, Task};

use report::counts;
pub use report::{
    Action, BatchReport, Body, Counts, Destination, NotificationCounts, Origin, Report,
    SessionReport, StoredObject, report_status,
};
pub use store::StoreRun;
use tier::Tiers;

/// Program name, as in the logs.
pub const PROGRAM: &str = "tmpa-archive";
/// Task, as in `.tmpa/runs/archive_history.json`.
pub const TASK: Task = Task::ArchiveHistory;

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
    /// (s3://bucket/prefix, gs://bucket/prefix, az://container/prefix, file:///dir). A
    /// store other than the one the library reads is for trying it: with --dry-run or
    /// --no-delete only (a run that deletes is refused, exit 2: the backend could not
    /// read what it archived there) [default: the [archive] url of {root}/tmpa.toml,
    /// else the local archive/ directories]
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
    tmpa_maint::run_program::<Args, _>(prepared, &args.common, mode, |run| {
        let report = archive(run, args, store.as_ref());
        let status = report_status(&report);
        (report, status)
    })
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
    let mode = Mode::of_flags(args.common.dry_run, args.no_delete);
    where_the_library_reads(&root, args, config.as_ref().map(|c| &c.url), mode)?;
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

/// Refuses a run that would delete what it archived where the library does not read
/// archives: sessions and notifications archived there could no longer be read by the
/// backend (`Root::read_session` looks where the library's own configuration says). A
/// `--to` other than the library's store is for trying a store: with `--dry-run` or
/// `--no-delete`, which delete nothing. (Without `--to`, the programs and the library
/// read the same files in the same order: `/etc/tmpa/tmpa.toml`, then the tree's.)
///
/// # Errors
/// [`StartError::Usage`] (exit 2) saying where each would look and what to do.
fn where_the_library_reads(
    root: &Root,
    args: &Args,
    ours: Option<&StoreUrl>,
    mode: Mode,
) -> Result<(), StartError> {
    if args.to.is_none() || !mode.deletes() {
        return Ok(());
    }
    let config_file = path_text(&root.path().join(tmpa_core::maintenance::CONFIG_NAME));
    let theirs = match root.archive_config() {
        Ok(c) => c.map(|c| c.url),
        Err(e) => {
            return Err(StartError::Usage(format!(
                "the library cannot read its configuration ({}), so it could not find what \
                 this run archives; nothing done",
                e.chain()
            )));
        }
    };
    if ours == theirs.as_ref() {
        return Ok(());
    }
    let name = |u: Option<&StoreUrl>| {
        u.map_or_else(
            || "the local archive/ directories".to_owned(),
            ToString::to_string,
        )
    };
    Err(StartError::Usage(format!(
        "--to {}: the backend reads archives from {} ({config_file}), so what this run \
         deleted once archived there could not be read back by the library. Name that store \
         in {config_file} first, or try it with --dry-run or --no-delete (which delete \
         nothing); nothing done",
        name(ours),
        name(theirs.as_ref()),
    )))
}

/// Archives the old sessions of every user of the run's root, to `store` when there is
/// one (and, with `--migrate-local`, moves the local archives there), then every user's
/// old acknowledged notifications: every unit through the one pipeline.
pub fn archive(run: &mut Run, args: &Args, store: Option<&StoreRun>) -> Report {
    let body = Body {
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
        failed: false,
        tally: report::Tally::default(),
    };
    let mut report = Report::new(run, body, Counts::default());
    let root = run.root().clone();
    let tiers = Tiers::new(&root, store);
    if let Some(sr) = store {
        // One cheap request before any work: a store that cannot be reached leaves every
        // session in place at the cost of one timeout.
        if let Err(e) = sr.store.probe() {
            let _ = sr.down.set(e.chain());
        }
    }
    let cutoff = |age: Duration| {
        SystemTime::now()
            .checked_sub(age)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    };
    let opts = history::Options {
        cutoff: cutoff(args.older_than),
        level: args.level,
        migrate_local: args.migrate_local,
    };
    let users = list_users(&root, "chat_history", &mut report.problems);
    let progress = Progress::new();
    let mut listed = session::Listed::default();
    for (i, user) in users.iter().enumerate() {
        progress.show(format!(
            "{PROGRAM}: user {user} ({}/{})",
            i + 1,
            users.len()
        ));
        let outcome = history::archive_user(run, &tiers, user, opts, &mut report, &mut listed);
        if let Err(e) = outcome {
            user_not_archived(&mut report, &root, ("chat_history", user), "user", &e);
        }
    }
    progress.clear();
    let nopts = notify::Options {
        cutoff: cutoff(args.notifications_older_than),
        level: args.level,
    };
    let mut memory = lonely::Memory::load(&root);
    for user in list_users(&root, "notifications", &mut report.problems) {
        let outcome = notify::archive_user(run, &tiers, &user, nopts, &mut report, &mut memory);
        if let Err(e) = outcome {
            user_not_archived(
                &mut report,
                &root,
                ("notifications", &user),
                "notifications of",
                &e,
            );
        }
    }
    if let Err(e) = memory.save(&root, run.mode()) {
        report.failed = true;
        report.problems.push(Problem::new(
            e.path()
                .map_or_else(|| root.path().join(".tmpa"), Path::to_path_buf),
            ProblemKind::Unreadable,
            format!("the memory of orphan acks cannot be written: {}", e.chain()),
        ));
    }
    if let Some(sr) = store {
        let put = report
            .sessions
            .iter()
            .any(|s| s.object.is_some() && s.action == Action::Archive)
            || report
                .notification_batches
                .iter()
                .any(|b| b.object.is_some() && b.action == Action::Archive);
        if run.mode().writes() && put {
            report.destination.put_guard = Some(sr.store.put_mode());
        }
        if let Some(why) = sr.down.get() {
            report.failed = true;
            report.destination.unavailable = Some(why.clone());
            report.problems.push(Problem::new(
                root.path().join("chat_history"),
                ProblemKind::Unreadable,
                format!(
                    "the store {} failed ({why}); every session and notification not yet verified was left in place",
                    sr.store.url()
                ),
            ));
        }
    }
    report.problems.sort();
    let notifications = std::mem::take(&mut report.counts.notifications);
    report.counts = counts(
        &report,
        run.mode(),
        users.len() as u64,
        listed.seen,
        listed.young,
    );
    report.counts.beside_temporary = listed.beside_temporary;
    report.counts.notifications = notifications;
    let sessions_deleted = report
        .counts
        .deletions
        .deleted
        .or(report.counts.deletions.would_delete)
        .unwrap_or(0);
    let deleted = sessions_deleted
        + report
            .notification_batches
            .iter()
            .map(|b| 2 * b.deleted)
            .sum::<u64>()
        + report.counts.notifications.acks_completed;
    report.counts.deletions = tmpa_maint::DeleteCount::of(run.mode(), deleted);
    report
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

/// The directory `rel` of the root, held by descriptor; `None` when missing.
pub(crate) fn open_if_any(root: &Root, rel: &Path) -> tmpa_core::Result<Option<Dir>> {
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
