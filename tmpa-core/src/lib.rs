//! # tmpa-core
//!
//! The library a backend embeds to keep its data as a TMPA tree of small JSON files
//! (docs/FORMAT.md "The tree"): one usage event, one notification, one chat session per file, each written
//! atomically and durably, readable while the maintenance programs (`tmpa-compact`,
//! `tmpa-archive`, `tmpa-tmpclean`, `tmpa-patrol`) work on the same tree.
//!
//! Everything goes through a [`Root`]:
//!
//! | call | what it does |
//! |---|---|
//! | [`Root::open`], [`Root::create`], [`Root::reopen`] | opens and checks a root; makes one; opens again what its path names after a restore ([`Error::RootReplaced`]) |
//! | [`Root::record_event`] | writes `token_stats/{day}/evt_{id}.json` (never replaces another event) |
//! | [`Root::read_day`] | a day's events, compacted and loose, each id once, with the files it could not use |
//! | [`Root::summary`] | a day's totals, kept up to date in memory by the process (only changed files read), with what it could not count |
//! | [`Root::deliver`], [`Root::deliver_json`] | writes `notifications/{user}/inbox/ntf_{id}.json` (never replaces another notification: the same value again is a no-op) |
//! | [`Root::ack`], [`Root::is_acked`], [`Root::unacked`], [`Root::inbox`], [`Root::read_notification`], [`Root::list_notifications`] | read receipts (of delivered notifications only), live or archived notifications |
//! | [`Root::write_session`], [`Root::read_session`], [`Root::list_sessions`] | chat sessions, live or archived (locally or in an object store) |
//! | [`Root::delete_session`], [`Root::delete_notification`], [`Root::forget_user`], [`Root::forget`] | a user's data removed live, in the local archives (every version, batches rewritten without it) and in the store, with the user's usage events erased; a [`ForgetReport`] of what went where |
//! | [`Root::archive_config`] | where archives go: `/etc/tmpa/tmpa.toml`, else `{root}/tmpa.toml` |
//! | [`Root::write_file`] | any other file of the tree, atomically |
//!
//! Values are typed: [`Event`] (validated, kept as canonical JSON), [`Summary`],
//! [`DayRead`] with its [`Problem`]s, and names that cannot leave their directory
//! ([`Day`], [`EventId`], [`UserId`], [`SessionId`], [`NotificationId`]). Every failure
//! is an [`Error`] naming the path. [`write()`] and [`AtomicFile`] write any file outside a
//! root the same way; [`temp_final_name`] recognises the temporaries writers leave.
//!
//! ```
//! use tmpa_core::{Event, Root};
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::create_dir(dir.path().join("token_stats")).unwrap();
//! let root = Root::open(dir.path()).unwrap();
//! let e = Event::from_json(br#"{"id":"a1","ts":"2026-11-23T10:00:00Z","user_id":"u1",
//!   "model":"m","prompt_tokens":3,"completion_tokens":4}"#).unwrap();
//! root.record_event(&e).unwrap();
//! assert_eq!(root.read_day(e.day()).unwrap().events, vec![e]);
//! ```
//!
//! # What is guaranteed
//! - Durability: when a call that writes returns `Ok`, the file and its directory entry
//!   are on stable storage (fsync of the file, rename, fsync of the directory; on ext4
//!   with a journal and XFS the file is written back instead of fsynced and the
//!   directory's one journal commit covers it; the writers of a process that renamed
//!   into one directory share its fsync, each returning only after one that began after
//!   its own rename). A crash at
//!   any instant leaves the old file or the new one, never a part; a killed writer may
//!   leave a temporary (`{final}.tmp.{unique}`) that `tmpa-tmpclean` removes.
//! - Containment: no call follows a symlink inside the root or reaches outside it, even
//!   if the tree is changed while the call runs; nothing needs `/proc`.
//! - Concurrency: safe from many threads and processes at once and while the maintenance
//!   programs run; a reader sees whole files only.
//!
//! # What is not guaranteed
//! - Reads are bounded (an event file 1 MiB, a session 256 MiB): larger files are
//!   reported, not read.
//! - Event ids are the backend's to keep unique; [`Root::record_event`] refuses to replace
//!   a loose event with other content, but does not look into compacted days.
//! - A [`Root`] keeps acting on the directory it opened even if that is renamed later;
//!   one removed and replaced (a restore) makes its calls fail with
//!   [`Error::RootReplaced`] until [`Root::reopen`].
//! - Notification ids are the backend's to keep unique too: [`Root::deliver`] refuses to
//!   replace a live notification, but does not look into the archives for an id whose
//!   notification and receipt were both archived.
//!
//! # Features
//! - `maintenance` (off by default): the file layer and format internals that the
//!   workspace's maintenance programs build on (the module `maintenance` when enabled).
//!   A backend does not need it; it has no stability promise.
//! - `object-store` (off by default): archived sessions and notifications in the object
//!   store that `tmpa.toml` names (`[archive] url = "s3://bucket/prefix"`, also
//!   `gs://`, `az://`, `file://`) are read by [`Root::read_session`],
//!   [`Root::read_notification`] and [`Root::is_acked`] and listed by
//!   [`Root::list_sessions`] and [`Root::list_notifications`]. It brings Apache Arrow's
//!   `object_store` (with rustls) and a tokio runtime that the library creates inside the
//!   calls that need it. Without it, those calls fail with [`Error::StoreUnsupported`] on
//!   such a tree (when they get past the live files and the local archives) rather than
//!   report the archived data missing.

#![cfg_attr(not(feature = "maintenance"), allow(dead_code, unused_imports))]

mod compacted;
mod day;
mod error;
mod event;
mod forget;
mod fs;
mod incremental;
mod json;
mod names;
mod notify;
mod notify_archive;
mod notify_view;
mod par;
mod problem;
mod root;
mod session;
mod state_lock;
mod store;
mod summary;
mod text;
mod versions;
mod watch;

pub use day::DayRead;
pub use error::{Error, NameKind, Result, StoreErrorKind, UnsafeReason};
pub use event::Event;
pub use forget::{BatchRewrite, Forget, ForgetOptions, ForgetReport, LOCK_WAIT_DEFAULT};
pub use fs::{AtomicFile, temp_final_name};
pub use names::{Day, EventId, NotificationId, SessionId, UserId};
pub use notify::{Acked, InboxItem, InboxQuery, NotificationInfo, NotificationLocation};
pub use problem::{Problem, ProblemKind};
pub use root::Root;
pub use session::SessionLocation;
pub use store::{ArchiveConfig, Credentials, StoreScheme, StoreUrl};
pub use summary::{Summary, SummaryRead, Totals};

/// Writes `bytes` to `dest` atomically and durably, replacing any previous file (its mode,
/// and as root its owner, are kept). The directory must exist; symlinks in the path are
/// followed as for any path a caller gives, but `dest` itself is replaced, never
/// followed.
///
/// # Errors
/// [`Error::Io`] naming the path; no temporary is left behind.
///
/// # Examples
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let p = dir.path().join("a.json");
/// tmpa_core::write(&p, b"{}").unwrap();
/// tmpa_core::write(&p, b"{\"v\":2}").unwrap();
/// assert_eq!(std::fs::read(&p).unwrap(), b"{\"v\":2}");
/// assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
/// ```
pub fn write(dest: impl AsRef<std::path::Path>, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let mut f = AtomicFile::create(dest)?;
    f.write_all(bytes)
        .map_err(|e| Error::io("write", f.tmp_path(), e))?;
    f.commit()
}

impl Root {
    /// Writes `bytes` atomically to `rel`, a relative path inside the root, creating
    /// missing directories (never through a symlink).
    ///
    /// # Errors
    /// [`Error::Unsafe`] when `rel` is absolute, holds `..`, or leads through a symlink;
    /// [`Error::Io`] naming the path; [`Error::RootReplaced`].
    ///
    /// # Examples
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// std::fs::create_dir(dir.path().join("chat_history")).unwrap();
    /// let root = tmpa_core::Root::open(dir.path()).unwrap();
    /// root.write_file("chat_history/u1/profile/p.json", b"{}").unwrap();
    /// assert!(root.write_file("../escape", b"x").is_err());
    /// ```
    pub fn write_file(
        &self,
        rel: impl AsRef<std::path::Path>,
        bytes: &[u8],
    ) -> Result<std::path::PathBuf> {
        let rel = rel.as_ref();
        let unsafe_path = || Error::Unsafe {
            path: rel.to_path_buf(),
            reason: UnsafeReason::NotAName,
        };
        if !rel
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
        {
            return Err(unsafe_path());
        }
        let name = rel.file_name().ok_or_else(unsafe_path)?;
        let dir = self.hold_dir(rel.parent().unwrap_or(std::path::Path::new("")))?;
        fs::write_in(&dir, name, bytes, false).map_err(|e| self.or_replaced(e))?;
        Ok(dir.join(name))
    }
}

#[cfg(feature = "maintenance")]
pub mod maintenance {
    //! The file layer and format internals the maintenance programs build on (through
    //! `tmpa-maint`). Enabled by the `maintenance` feature; a backend does not need it,
    //! and it carries no stability promise.
    //!
    //! - The one file layer: [`Dir`] (a directory held by descriptor: `openat2`/`openat`,
    //!   `fstatat`, `renameat2`, `linkat`, `unlinkat`, `mkdirat`, `fsync`; never a
    //!   symlink, never `/proc`), [`Stamp`], [`Meta`], [`Kind`], [`AtomicFile`],
    //!   [`Lease`] (file leases), temporaries ([`temp_final_name`], [`temporary_of`]).
    //! - The day formats one event at a time, so that a day of any size compacts in
    //!   bounded memory: events as parsed ([`RawEvent`], [`read_loose_raw`]), the
    //!   canonical `_compacted.json` streamed ([`visit_compacted`], [`parse_compacted`]),
    //!   written ([`CompactedWriter`], [`write_compacted`]) and compared with the disk
    //!   ([`ReadBack`]), the summary folded ([`SummaryFold`]) and its consistency stamp
    //!   ([`source_stamp`], or [`SourceStamper`] one file at a time).

    pub use crate::compacted::{
        COMPACTED_BYTES_MAX, COMPACTED_FORMAT, COMPACTED_NAME, CompactedWriter, ReadBack, Salvaged,
        VisitError, event_crc, open_compacted, parse_compacted, salvage_compacted, visit_compacted,
        visit_compacted_slice, write_compacted, write_compacted_to,
    };
    pub use crate::day::{
        LooseRaw, PARALLEL_FILES_MIN, READ_THREADS_MAX, SUMMARY_NAME, conflict_problem_of,
        event_names, is_event_name, read_loose_raw,
    };
    pub use crate::event::{EVENT_BYTES_MAX, RawEvent, event_file_name, event_id_from_file_name};
    pub use crate::fs::{
        Abbreviation, AtomicFile, Dir, Disposal, Entries, Entry, Expected, FinalName, FsFamily,
        FsType, Keep, Kind, Lease, LeaseRefused, Meta, MovesProbe, Stamp, TEMP_NAME_BYTES_MAX,
        dispose, temp_final_name, temporary_of,
    };
    pub use crate::json::same_value as same_json_value;
    pub use crate::notify_archive::{
        ArchivedNotification, IndexEntry, NOTIFICATION_ARCHIVE_BYTES_MAX, NOTIFICATION_BYTES_MAX,
        archive_count, archive_name, archive_name_of_index, archive_names, read_archive,
        same_batch, write_archive,
    };
    pub use crate::par::{
        Streamed, THREADS_MAX, cores_up_to, fold_within_budget, for_each_ordered, map_ordered,
        map_ordered_on,
    };
    pub use crate::root::rel::NOTIFICATION_ARCHIVE_DIR;
    pub use crate::root::{DATA_DIRS, STATE_DIR};
    pub use crate::session::{SESSION_BYTES_MAX, gunzip_bounded};
    pub use crate::state_lock::{
        LOCK_MODE, LockRules, LockTry, holder_note, lock_names, take_lock_file,
    };
    pub use crate::store::{
        CONFIG_NAME, ETC_CONFIG_DIR, TIMEOUT_SECS_DEFAULT, etc_config_dirs, is_whole,
        read_config_text,
    };
    pub use crate::summary::{
        SourceStamper, SummaryFold, read_cached, source_stamp, write_summary,
    };
    pub use crate::text::{hex, sha256_hex};
    pub use crate::text::{line_text, name_text, path_text, serialize_path};
    pub use crate::versions::{
        LocalVersions, VERSION_MAX, VERSIONS_DIR, archive_file_name, session_of_archive_name,
        version_of_dir, version_rel,
    };

    /// The archive store's client (feature `object-store`), for tmpa-archive and
    /// tmpa-patrol.
    #[cfg(feature = "object-store")]
    pub mod store {
        pub use crate::store::client::{
            LISTED_OBJECTS_MAX, ObjectInfo, ObjectKey, PutGuard, PutNew, RETRIES_MAX, RETRY_WINDOW,
            Removal, Store,
        };
    }

    /// Forgets what this process keeps of `day` of `root` for its summaries (docs of
    /// [`crate::Root::summary`]): the next summary of that day starts from `_summary.json`
    /// or a full read, as in a new process.
    ///
    /// # Errors
    /// When the day directory cannot be opened (a day without one has nothing to forget).
    pub fn forget_summary(root: &crate::Root, day: crate::Day) -> crate::Result<()> {
        match root.open_dir_if_any(&crate::root::rel::day(day))? {
            Some(dir) => crate::incremental::forget(&dir),
            None => Ok(()),
        }
    }

    /// The root directory, held by descriptor.
    pub fn root_dir(root: &crate::Root) -> &Dir {
        root.dir()
    }

    /// Writes `bytes` to the entry `name` of `dir` atomically; with `no_replace`, never
    /// replacing an existing file (an error of kind `AlreadyExists`).
    ///
    /// # Errors
    /// [`crate::Error::Io`] naming the path.
    pub fn write_in(
        dir: &Dir,
        name: &std::ffi::OsStr,
        bytes: &[u8],
        no_replace: bool,
    ) -> crate::Result<()> {
        crate::fs::write_in(dir, name, bytes, no_replace)
    }
}
