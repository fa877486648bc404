//! Forgetting: a user's data removed on request (a GDPR erasure), everywhere the tree keeps
//! it (docs/OPERATIONS.md "Forgetting a user").
//!
//! - **Sessions**: the live file, every local version (`archive/{session}.json.gz`,
//!   `archive/versions/{n}/{session}.json.gz`), every version in the object store, and the
//!   temporaries of each of those names.
//! - **Notifications**: the inbox file and its ack, and every archived copy: a batch
//!   (`acked-{n}-{16 hex}.tar.gz`, locally or in the store) that holds other notifications
//!   of the user is **rewritten** without the forgotten ones through the archives' one
//!   verified path ([`crate::notify_archive::write_archive`], written new without
//!   replacing, read back from where it is kept and compared whole with
//!   [`crate::notify_archive::same_batch`]), and only then is the old batch deleted (in
//!   the store, by a delete conditional on the ETag it was read with).
//! - **Usage events** ([`Root::forget_user`] only): **erased**, not pseudonymized (a
//!   pseudonym kept with its key is still personal data). The user's loose
//!   `evt_{id}.json` files are deleted; each `_compacted.json` holding the user's events is
//!   rewritten without them through the compactor's writer and read back byte for byte
//!   ([`crate::compacted::ReadBack`]); each day changed (or whose `_summary.json` names the
//!   user) loses its `_summary.json` cache, which the next summary rebuilds. Past days'
//!   totals change accordingly.
//!
//! Every deletion is made durable (the directory fsynced), every rewrite through
//! [`crate::fs::AtomicFile`]. Every step is idempotent, and each looks for what is left
//! rather than remembering what it did, so a forget stopped anywhere (a kill, a crash, a
//! store that failed) is finished by calling it again.
//!
//! The maintenance programs that could write the data back are kept out for the whole
//! call by their own locks (`state_lock.rs`): tmpa-archive's (`archive_history`: it
//! copies sessions and notifications into archives) always, and tmpa-compact's
//! (`compact_events`: it copies loose events into `_compacted.json`) when events are
//! erased.

mod batch;
mod erase;
mod events;
mod stored;

use batch::{split_batch, temp_of, write_local_batch};
use erase::{Entry, erase, remove_named, remove_tree};
use events::erase_day;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::compacted::{COMPACTED_BYTES_MAX, COMPACTED_NAME, ReadBack, open_compacted};
use crate::day::{SUMMARY_NAME, event_names};
use crate::error::{Error, Result};
use crate::fs::{AtomicFile, Dir, Kind, temp_final_name};
use crate::names::{Day, NotificationId, SessionId, UserId};
use crate::notify_archive::{
    ArchivedNotification, NOTIFICATION_ARCHIVE_BYTES_MAX, archive_name, archive_names,
    read_archive, same_batch, write_archive,
};
use crate::root::{Root, rel};
use crate::state_lock::{ARCHIVE_TASK, COMPACT_TASK, StateLocks};
use crate::store::ArchiveConfig;
use crate::versions::{LocalVersions, archive_file_name};

/// How long a forget waits by default for a maintenance job that holds a lock it needs.
pub const LOCK_WAIT_DEFAULT: Duration = Duration::from_secs(30);
/// Deepest directory a forgotten user's directories are walked to (as tmpa-snapshot).
const DEPTH_MAX: usize = 32;
/// gzip level of a rewritten notification batch (tmpa-archive's default `--level`).
const BATCH_LEVEL: u32 = 6;
/// Largest `_summary.json` read to see whether it names the user (a larger one is
/// removed unread: it is a cache).
const SUMMARY_BYTES_MAX: u64 = 64 << 20;

/// tmpa-archive's memory of orphan acks, in `.tmpa/archive/`.
const ORPHAN_ACKS_NAME: &str = "orphan_acks.json";
/// Its bound, as tmpa-archive reads it.
const ORPHAN_ACKS_BYTES_MAX: u64 = 64 << 20;

/// What to forget ([`Root::forget`]).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Forget<'a> {
    /// One chat session of a user, every version of it.
    Session(&'a UserId, &'a SessionId),
    /// One notification of a user, its ack, and every archived copy.
    Notification(&'a UserId, &'a NotificationId),
    /// Everything of a user: `chat_history/{user}/` and `notifications/{user}/` whole
    /// (profile included), the user's archives in the store, and the user's usage events.
    User(&'a UserId),
}

/// How a forget runs.
///
/// # Examples
/// ```
/// let o = tmpa_core::ForgetOptions::default();
/// assert_eq!(o.lock_wait, tmpa_core::LOCK_WAIT_DEFAULT);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ForgetOptions {
    /// How long to wait for a maintenance job that holds a lock the forget needs, before
    /// failing with [`Error::Locked`] (default [`LOCK_WAIT_DEFAULT`], 30 s; zero: do not
    /// wait).
    pub lock_wait: Duration,
}

impl Default for ForgetOptions {
    fn default() -> Self {
        ForgetOptions {
            lock_wait: LOCK_WAIT_DEFAULT,
        }
    }
}

impl ForgetOptions {
    /// The options with `lock_wait`.
    pub fn with_lock_wait(lock_wait: Duration) -> ForgetOptions {
        ForgetOptions { lock_wait }
    }
}

/// What a forget removed, and where. Every list is sorted; an empty report means there was
/// nothing left to forget (a second call after a complete one).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ForgetReport {
    /// Live files deleted: sessions, inbox files and acks, temporaries of them, and for a
    /// whole user every other file of `chat_history/{user}/` and `notifications/{user}/`,
    /// and tmpa-archive's memory of orphan acks when it names the user.
    pub live_files: Vec<PathBuf>,
    /// Local archived session versions deleted (`archive/…json.gz`, every version).
    pub archive_versions: Vec<PathBuf>,
    /// Objects deleted from the store (URLs): session versions, and notification batches
    /// that held nothing else.
    pub store_objects: Vec<String>,
    /// Notification batches (local paths or object URLs) that held other notifications
    /// too, rewritten without the forgotten ones.
    pub batches_rewritten: Vec<BatchRewrite>,
    /// Local notification batches deleted whole (they held nothing else).
    pub batches_deleted: Vec<PathBuf>,
    /// Loose usage events (`evt_{id}.json`) deleted.
    pub event_files: Vec<PathBuf>,
    /// `_compacted.json` files rewritten without the user's events.
    pub compacted_rewritten: Vec<PathBuf>,
    /// Usage events erased: loose files deleted plus compacted entries removed (an event
    /// both loose and compacted, a compaction stopped before it deleted the loose file,
    /// counts twice).
    pub events_erased: u64,
    /// `_summary.json` caches removed (the next summary of the day rebuilds it).
    pub summaries_removed: Vec<PathBuf>,
    /// Loose event files that could not be read, so whose user is unknown: kept, and
    /// named here for someone to look at (tmpa-patrol reports them as corrupt too).
    pub unreadable_events: Vec<PathBuf>,
}

/// A notification batch rewritten without forgotten notifications
/// ([`ForgetReport::batches_rewritten`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct BatchRewrite {
    /// The batch deleted (a local path or an object URL).
    pub old: String,
    /// The batch written in its place, verified before the old one went.
    pub new: String,
    /// Notifications left out.
    pub removed: u64,
    /// Notifications kept, each read back exactly.
    pub kept: u64,
}

impl ForgetReport {
    /// How many things were removed or rewritten, in all (0: nothing was left to forget).
    pub fn total(&self) -> usize {
        self.live_files.len()
            + self.archive_versions.len()
            + self.store_objects.len()
            + self.batches_rewritten.len()
            + self.batches_deleted.len()
            + self.event_files.len()
            + self.compacted_rewritten.len()
            + self.summaries_removed.len()
    }

    fn sort(&mut self) {
        self.live_files.sort();
        self.archive_versions.sort();
        self.store_objects.sort();
        self.batches_rewritten.sort_by(|a, b| a.old.cmp(&b.old));
        self.batches_deleted.sort();
        self.event_files.sort();
        self.compacted_rewritten.sort();
        self.summaries_removed.sort();
        self.unreadable_events.sort();
    }
}

impl Root {
    /// Deletes one chat session of a user everywhere: the live file, every archived
    /// version, locally and in the object store, and the temporaries of those names
    /// ([`Root::forget`] with the default options).
    ///
    /// # Errors
    /// As [`Root::forget`].
    ///
    /// # Examples
    /// ```
    /// use tmpa_core::{Root, SessionId, UserId};
    /// let dir = tempfile::tempdir().unwrap();
    /// let root = Root::create(dir.path()).unwrap();
    /// let (u, s) = (UserId::new("u1").unwrap(), SessionId::new("s1").unwrap());
    /// root.write_session(&u, &s, b"{}").unwrap();
    /// assert_eq!(root.delete_session(&u, &s).unwrap().live_files.len(), 1);
    /// assert!(root.read_session(&u, &s).is_err());
    /// assert_eq!(root.delete_session(&u, &s).unwrap().total(), 0); // idempotent
    /// ```
    pub fn delete_session(&self, user: &UserId, session: &SessionId) -> Result<ForgetReport> {
        self.forget(Forget::Session(user, session), &ForgetOptions::default())
    }

    /// Deletes one notification of a user everywhere: the inbox file, its ack, and every
    /// archived copy (a batch holding others is rewritten without it, verified, before
    /// the old batch goes) ([`Root::forget`] with the default options).
    ///
    /// # Errors
    /// As [`Root::forget`].
    ///
    /// # Examples
    /// ```
    /// use tmpa_core::{NotificationId, Root, UserId};
    /// let dir = tempfile::tempdir().unwrap();
    /// let root = Root::create(dir.path()).unwrap();
    /// let (u, n) = (UserId::new("u1").unwrap(), NotificationId::new("1").unwrap());
    /// root.deliver(&u, &n, &serde_json::json!({"text": "hi"})).unwrap();
    /// root.ack(&u, &n).unwrap();
    /// assert_eq!(root.delete_notification(&u, &n).unwrap().live_files.len(), 2);
    /// assert!(root.read_notification(&u, &n).is_err());
    /// ```
    pub fn delete_notification(&self, user: &UserId, id: &NotificationId) -> Result<ForgetReport> {
        self.forget(Forget::Notification(user, id), &ForgetOptions::default())
    }

    /// Forgets a user: `chat_history/{user}/` and `notifications/{user}/` whole (every
    /// session and version, profile, inbox, acks, batches), the user's sessions and
    /// batches in the object store, and every usage event whose `user_id` is the user's,
    /// loose or compacted, on every day ([`Root::forget`] with the default options).
    ///
    /// # Errors
    /// As [`Root::forget`].
    ///
    /// # Examples
    /// ```
    /// use tmpa_core::{Event, Root, UserId};
    /// let dir = tempfile::tempdir().unwrap();
    /// let root = Root::create(dir.path()).unwrap();
    /// let e = Event::from_json(br#"{"id":"a1","ts":"2026-11-23T10:00:00Z","user_id":"u1",
    ///   "model":"m","prompt_tokens":3,"completion_tokens":4}"#).unwrap();
    /// root.record_event(&e).unwrap();
    /// let report = root.forget_user(&UserId::new("u1").unwrap()).unwrap();
    /// assert_eq!(report.events_erased, 1);
    /// assert!(root.read_day(e.day()).unwrap().events.is_empty());
    /// ```
    pub fn forget_user(&self, user: &UserId) -> Result<ForgetReport> {
        self.forget(Forget::User(user), &ForgetOptions::default())
    }

    /// Forgets `what` (docs/OPERATIONS.md "Forgetting a user"), holding the maintenance
    /// locks that keep a program from writing it back meanwhile: tmpa-archive's always,
    /// tmpa-compact's too for a whole user (whose events are rewritten). A lock held by a
    /// running job is waited for, at most `options.lock_wait`, all or none (never one
    /// held while waiting for another).
    ///
    /// The order keeps every reader's answer whole: archived copies go before the live
    /// file (a reader never finds an older archived copy once the live one is gone), the
    /// inbox file before its ack (as tmpa-archive does).
    ///
    /// # Guarantees
    /// - Idempotent: what is already gone is not an error; a second call finds nothing
    ///   and returns an empty report. A call stopped anywhere (killed, a crash, a store
    ///   that failed) is finished by calling again: each step looks for what is left.
    /// - Durable: when it returns `Ok`, every deletion and rewrite is on stable storage
    ///   (each directory fsynced; rewrites through the atomic writer).
    /// - A batch of notifications or a compacted day is replaced only by a file read back
    ///   from the disk (or the store) equal to what was meant: the other notifications and
    ///   the other users' events are kept exactly.
    ///
    /// # Not guaranteed
    /// - That the backend does not write the data again meanwhile (a new event or a
    ///   delivery for the user): stop writing for the user first.
    /// - Copies outside the tree and its store: backups and snapshots (docs/OPERATIONS.md
    ///   says what to do), other objects below the user's prefix in the store than
    ///   sessions and notification batches, temporaries of event files (their name does
    ///   not say whose they are; tmpa-tmpclean removes them), loose event files that
    ///   cannot be read (named in [`ForgetReport::unreadable_events`]).
    ///
    /// # Errors
    /// [`Error::Locked`] naming the job that holds a needed lock past `lock_wait` (nothing
    /// changed); [`Error::Corrupt`] naming a batch or a `_compacted.json` that does not
    /// read strictly (it could not be rewritten without losing others' data: repair it,
    /// then call again); [`Error::NotForgotten`] naming an archive that did not read back
    /// as written, or an object the store kept; [`Error::Io`], [`Error::Store`],
    /// [`Error::Config`], [`Error::StoreUnsupported`] (a store configured, without the
    /// `object-store` feature) and [`Error::RootReplaced`] as for the other calls. What
    /// was removed before the error stays removed.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use tmpa_core::{Forget, ForgetOptions, Root, UserId};
    /// let dir = tempfile::tempdir().unwrap();
    /// let root = Root::create(dir.path()).unwrap();
    /// let u = UserId::new("u1").unwrap();
    /// let options = ForgetOptions::with_lock_wait(Duration::from_secs(5));
    /// assert_eq!(root.forget(Forget::User(&u), &options).unwrap().total(), 0);
    /// ```
    pub fn forget(&self, what: Forget<'_>, options: &ForgetOptions) -> Result<ForgetReport> {
        let tasks: &[&'static str] = match what {
            Forget::User(_) => &[ARCHIVE_TASK, COMPACT_TASK],
            Forget::Session(..) | Forget::Notification(..) => &[ARCHIVE_TASK],
        };
        let _locks = StateLocks::take(self, tasks, options.lock_wait)?;
        let config = self.archive_config()?;
        let mut report = ForgetReport::default();
        match what {
            Forget::Session(user, session) => {
                self.forget_session(user, session, config.as_ref(), &mut report)?;
            }
            Forget::Notification(user, id) => {
                let forgotten = |n: &str| n == id.as_str();
                if let Some(config) = &config {
                    stored::forget_batches(self, config, user, &forgotten, &mut report)?;
                }
                self.forget_local_batches(user, &forgotten, &mut report)?;
                self.forget_live_notification(user, id, &mut report)?;
            }
            Forget::User(user) => self.forget_whole_user(user, config.as_ref(), &mut report)?,
        }
        report.sort();
        Ok(report)
    }

    fn forget_session(
        &self,
        user: &UserId,
        session: &SessionId,
        config: Option<&ArchiveConfig>,
        report: &mut ForgetReport,
    ) -> Result<()> {
        if let Some(config) = config {
            stored::forget_session(self, config, user, Some(session), report)?;
        }
        let archive_name = archive_file_name(session);
        if let Some(dir) = self.open_dir_if_any(&rel::archive(user))? {
            let versions = LocalVersions::open(dir)?;
            for n in 1..=versions.highest_dir() {
                if let Some(d) = versions.dir(n) {
                    let removed = remove_named(d, |name| {
                        name == archive_name.as_str() || temp_of(name, &archive_name)
                    })?;
                    report.archive_versions.extend(removed);
                }
            }
        }
        if let Some(dir) = self.open_dir_if_any(&rel::sessions(user))? {
            let live = rel::session_file(session);
            let removed = remove_named(&dir, |name| name == live.as_str() || temp_of(name, &live))?;
            report.live_files.extend(removed);
        }
        Ok(())
    }

    /// Rewrites (or deletes, when nothing else is in them) the user's local batches that
    /// hold a notification `forgotten` says is to go.
    fn forget_local_batches(
        &self,
        user: &UserId,
        forgotten: &dyn Fn(&str) -> bool,
        report: &mut ForgetReport,
    ) -> Result<()> {
        let Some(dir) = self.open_dir_if_any(&rel::notification_archive(user))? else {
            return Ok(());
        };
        for name in archive_names(&dir)? {
            let shown = dir.join(&name);
            let file = match dir.open_read(&name) {
                Ok(f) => f,
                Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let Some((kept, removed)) = split_batch(file, &shown, forgotten)? else {
                continue;
            };
            if !kept.is_empty() {
                let new = write_local_batch(&dir, &kept)?;
                report.batches_rewritten.push(BatchRewrite {
                    old: shown.display().to_string(),
                    new: dir.join(&new).display().to_string(),
                    removed,
                    kept: kept.len() as u64,
                });
            } else {
                report.batches_deleted.push(shown);
            }
            erase(&dir, OsStr::new(&name), Entry::File)?;
            dir.sync()?;
        }
        Ok(())
    }

    fn forget_live_notification(
        &self,
        user: &UserId,
        id: &NotificationId,
        report: &mut ForgetReport,
    ) -> Result<()> {
        // The notification before its ack, as tmpa-archive: a reader (which reads the
        // acks first) never sees the notification unread in between.
        let body = format!("ntf_{id}.json");
        if let Some(dir) = self.open_dir_if_any(&rel::inbox(user))? {
            let removed = remove_named(&dir, |n| n == body.as_str() || temp_of(n, &body))?;
            report.live_files.extend(removed);
        }
        let ack = format!("ntf_{id}.ack");
        if let Some(dir) = self.open_dir_if_any(&rel::ack(user))? {
            let removed = remove_named(&dir, |n| n == ack.as_str() || temp_of(n, &ack))?;
            report.live_files.extend(removed);
        }
        Ok(())
    }

    fn forget_whole_user(
        &self,
        user: &UserId,
        config: Option<&ArchiveConfig>,
        report: &mut ForgetReport,
    ) -> Result<()> {
        if let Some(config) = config {
            stored::forget_session(self, config, user, None, report)?;
            stored::forget_batches(self, config, user, &|_| true, report)?;
        }
        // Archives first, named as such, then the rest of each tree.
        if let Some(dir) = self.open_dir_if_any(&rel::archive(user))? {
            let mut removed = Vec::new();
            remove_tree(&dir, 0, &mut removed)?;
            let (versions, other): (Vec<_>, Vec<_>) = removed
                .into_iter()
                .partition(|p| p.to_string_lossy().ends_with(".json.gz"));
            report.archive_versions.extend(versions);
            report.live_files.extend(other);
        }
        if let Some(dir) = self.open_dir_if_any(&rel::notification_archive(user))? {
            let mut removed = Vec::new();
            remove_tree(&dir, 0, &mut removed)?;
            report.batches_deleted.extend(removed);
        }
        for (parent, name) in [
            (rel::chat_history(), user.as_str()),
            (PathBuf::from("notifications"), user.as_str()),
        ] {
            let Some(parent) = self.open_dir_if_any(&parent)? else {
                continue;
            };
            let dir = match parent.open_dir(name) {
                Ok(d) => d,
                Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            remove_tree(&dir, 0, &mut report.live_files)?;
            drop(dir);
            if erase(&parent, OsStr::new(name), Entry::EmptyDir)? {
                parent.sync()?;
            }
        }
        self.forget_orphan_acks_memory(user, report)?;
        self.erase_events(user, report)
    }

    /// tmpa-archive's memory of orphan acks (docs/FORMAT.md "Program state",
    /// `archive/orphan_acks.json`) names users and their notification ids: when it names
    /// this one it goes (safe to delete: the next run searches again), under the archive
    /// lock this call holds.
    fn forget_orphan_acks_memory(&self, user: &UserId, report: &mut ForgetReport) -> Result<()> {
        let Some(dir) = self.open_dir_if_any(&Path::new(crate::root::STATE_DIR).join("archive"))?
        else {
            return Ok(());
        };
        let names_user = match dir.read(ORPHAN_ACKS_NAME, ORPHAN_ACKS_BYTES_MAX) {
            Ok((bytes, _)) => serde_json::from_slice::<serde_json::Value>(&bytes)
                .map_or(true, |v| {
                    v.get("users").and_then(|u| u.get(user.as_str())).is_some()
                }),
            Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => false,
            Err(_) => true,
        };
        if names_user && erase(&dir, OsStr::new(ORPHAN_ACKS_NAME), Entry::File)? {
            dir.sync()?;
            report.live_files.push(dir.join(ORPHAN_ACKS_NAME));
        }
        Ok(())
    }

    /// Erases the user's usage events from every day of `token_stats/`.
    fn erase_events(&self, user: &UserId, report: &mut ForgetReport) -> Result<()> {
        let Some(stats) = self.open_dir_if_any(&rel::token_stats())? else {
            return Ok(());
        };
        let mut days: Vec<(Day, OsString)> = Vec::new();
        for entry in stats.entries()? {
            let entry = entry?;
            let Some(day) = entry.name.to_str().and_then(|s| s.parse::<Day>().ok()) else {
                continue;
            };
            if day.to_string().as_str() == entry.name {
                days.push((day, entry.name));
            }
        }
        days.sort();
        for (day, name) in days {
            let dir = match stats.open_dir(&name) {
                Ok(d) => d,
                Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => continue,
                // A file or a symlink with a day's name holds no day: passed over.
                Err(Error::Unsafe { .. }) => continue,
                Err(e) => return Err(e),
            };
            erase_day(&dir, day, user, report)?;
        }
        Ok(())
    }
}
