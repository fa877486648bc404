//! Notifications: `notifications/{user}/inbox/ntf_{id}.json` and their read receipts
//! `notifications/{user}/ack/ntf_{id}.ack`, live, or archived by tmpa-archive into
//! `notifications/{user}/archive/acked-{n}-{digest}.tar.gz` (`notify_archive.rs`), or,
//! when the configuration (`Root::archive_config`) names an object store, into its object
//! `{prefix}/{user}/acked-{n}-{digest}.tar.gz`. Every read answers the same whether a
//! notification is live, archived locally or in the store; like sessions, it looks live
//! first, then in the local archives, then in the store (read at each call that gets
//! that far).

use std::ffi::OsStr;
use std::io;
use std::path::PathBuf;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::fs::Dir;
use crate::names::{NotificationId, UserId};
use crate::notify_archive::{
    ArchivedNotification, IndexEntry, NOTIFICATION_BYTES_MAX, archive_names, find_in_archive,
    read_archive,
};
use crate::notify_view::Live;
use crate::root::{Root, rel};
use crate::store::ArchiveConfig;

/// Where a notification is ([`Root::list_notifications`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum NotificationLocation {
    /// `inbox/ntf_{id}.json`.
    Live,
    /// In an archive of `archive/` (acknowledged: only acknowledged notifications are
    /// archived).
    Archived,
    /// In an archive in the object store the configuration names (acknowledged).
    Stored,
}

/// One notification of a user, with where it is and whether it is acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NotificationInfo {
    /// Its id.
    pub id: NotificationId,
    /// Where it is.
    pub location: NotificationLocation,
    /// Whether it is acknowledged.
    pub acked: bool,
}

/// A live notification with its bytes and whether it is acknowledged ([`Root::inbox`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboxItem {
    /// Its id.
    pub id: NotificationId,
    /// Whether its read receipt exists.
    pub acked: bool,
    /// The exact bytes of `inbox/ntf_{id}.json`.
    pub body: Vec<u8>,
}

/// Which live notifications [`Root::inbox`] returns, by id: by default every one.
///
/// # Examples
/// ```
/// use tmpa_core::{InboxQuery, NotificationId};
/// let page = InboxQuery { unacked_only: true, limit: Some(50), ..InboxQuery::default() };
/// let next = InboxQuery { after: Some(NotificationId::new("0042").unwrap()), ..page.clone() };
/// assert!(next.unacked_only && next.limit == Some(50));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InboxQuery {
    /// Only those without a read receipt. Default: false.
    pub unacked_only: bool,
    /// Only ids after this one (the last id of the previous page). Default: from the first.
    pub after: Option<NotificationId>,
    /// At most this many. Default: no limit (memory: every body, each at most 1 MiB).
    pub limit: Option<usize>,
}

/// How a notification was acknowledged ([`Root::ack`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Acked {
    /// Its read receipt `ack/ntf_{id}.ack`: written by this call, or already there (the
    /// first receipt is kept).
    Receipt(PathBuf),
    /// It is archived, locally or in the object store (only acknowledged notifications
    /// are): nothing was written.
    Archived,
}

impl Root {
    /// Delivers a notification: writes `inbox/ntf_{id}.json` (the value as compact JSON,
    /// keys sorted) atomically and durably, never replacing another notification.
    ///
    /// Delivering an id again is idempotent when the value is the same (compared as JSON
    /// values, numbers as exact decimals: `{"a":1}` and `{ "a": 1.0 }` are the same), and
    /// refused when it is not: the notification delivered first stays, with its read
    /// receipt. Two processes delivering one id at once: one writes, the other compares
    /// with what it wrote.
    ///
    /// An id whose read receipt exists without its inbox file (an acknowledged
    /// notification being archived, or archived with its receipt left behind) is looked
    /// up in the archives, locally then in the store: the same value is a no-op, another
    /// is refused, and an id found nowhere is refused too, naming the receipt (a new
    /// notification under it would be taken as read). An id archived with its receipt
    /// is not looked for (that would cost a read of every archive, and of the store, on
    /// every delivery): keep ids unique, as event ids across days; delivered again, it
    /// is a new live notification, and reads take it before the archived one.
    ///
    /// # Errors
    /// [`crate::Error::Conflict`] (kind `AlreadyExists`) naming the existing notification
    /// (its inbox file, or the archive holding it) when it holds another value;
    /// [`crate::Error::Io`] of kind `AlreadyExists` naming the receipt when a receipt
    /// without a notification is in the way; [`crate::Error::InvalidNotification`] when
    /// the JSON is larger than 1 MiB (what readers read); [`crate::Error::Io`] /
    /// [`crate::Error::Unsafe`] naming the path; [`crate::Error::RootReplaced`].
    ///
    /// # Examples
    /// ```
    /// use tmpa_core::{NotificationId, Root, UserId};
    /// let dir = tempfile::tempdir().unwrap();
    /// let root = Root::create(dir.path()).unwrap();
    /// let (u, n) = (UserId::new("u1").unwrap(), NotificationId::new("42").unwrap());
    /// root.deliver(&u, &n, &serde_json::json!({"text": "hello"})).unwrap();
    /// root.deliver(&u, &n, &serde_json::json!({"text": "hello"})).unwrap(); // the same: a no-op
    /// let e = root.deliver(&u, &n, &serde_json::json!({"text": "other"})).unwrap_err();
    /// assert_eq!(e.io_kind(), std::io::ErrorKind::AlreadyExists);
    /// assert_eq!(root.unacked(&u).unwrap(), vec![n.clone()]);
    /// root.ack(&u, &n).unwrap();
    /// root.ack(&u, &n).unwrap(); // idempotent
    /// assert!(root.is_acked(&u, &n).unwrap());
    /// assert!(root.unacked(&u).unwrap().is_empty());
    /// ```
    pub fn deliver(&self, user: &UserId, id: &NotificationId, body: &Value) -> Result<PathBuf> {
        let bytes = serde_json::to_vec(body).expect("a JSON value always serializes");
        self.deliver_canonical(user, id, &bytes)
    }

    /// [`Root::deliver`] of a notification given as JSON text, kept exactly: keys sorted,
    /// no whitespace, every number with the text it was written with (a 30-digit integer
    /// stays one; [`serde_json::Value`] would make it a float). What the Python package
    /// delivers.
    ///
    /// # Errors
    /// As [`Root::deliver`]; [`crate::Error::InvalidNotification`] when `json` is not one
    /// JSON value, or names a key twice in an object.
    ///
    /// # Examples
    /// ```
    /// use tmpa_core::{NotificationId, Root, UserId};
    /// let dir = tempfile::tempdir().unwrap();
    /// let root = Root::create(dir.path()).unwrap();
    /// let (u, n) = (UserId::new("u1").unwrap(), NotificationId::new("1").unwrap());
    /// root.deliver_json(&u, &n, br#"{ "n": 123456789012345678901234567890, "a": 1 }"#).unwrap();
    /// assert_eq!(root.read_notification(&u, &n).unwrap(), br#"{"a":1,"n":123456789012345678901234567890}"#);
    /// assert!(root.deliver_json(&u, &n, b"{").is_err());
    /// ```
    pub fn deliver_json(&self, user: &UserId, id: &NotificationId, json: &[u8]) -> Result<PathBuf> {
        let invalid = |reason: String| Error::InvalidNotification { reason };
        let raw: &serde_json::value::RawValue =
            serde_json::from_slice(json).map_err(|e| invalid(format!("not JSON: {e}")))?;
        let mut bytes = Vec::with_capacity(json.len());
        crate::json::write_canonical(raw, &mut bytes).map_err(invalid)?;
        self.deliver_canonical(user, id, &bytes)
    }

    fn deliver_canonical(
        &self,
        user: &UserId,
        id: &NotificationId,
        bytes: &[u8],
    ) -> Result<PathBuf> {
        if bytes.len() as u64 > NOTIFICATION_BYTES_MAX {
            return Err(Error::InvalidNotification {
                reason: format!(
                    "{} bytes as JSON, more than the {NOTIFICATION_BYTES_MAX} a reader reads",
                    bytes.len()
                ),
            });
        }
        let name = format!("ntf_{id}.json");
        let inbox = self.hold_dir(&rel::inbox(user))?;
        let path = inbox.join(&name);
        // Bounded: each turn but the last ends with the inbox file gone, which only an
        // archival (of an acknowledged notification) does.
        for _ in 0..3 {
            if inbox.stat(&name)?.is_none()
                && let Some(receipt) = self.receipt(user, id)?
            {
                return self.deliver_over_receipt(user, id, bytes, receipt);
            }
            match crate::fs::write_in(&inbox, OsStr::new(&name), bytes, true) {
                Err(e) if e.io_kind() == io::ErrorKind::AlreadyExists => {}
                other => return other.map(|()| path).map_err(|e| self.or_replaced(e)),
            }
            match inbox.read(&name, NOTIFICATION_BYTES_MAX) {
                Ok((old, _)) => return same_or_conflict(&old, bytes, path),
                Err(e) if e.io_kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict { path })
    }

    /// Delivery of an id whose receipt exists without its inbox file: a no-op when an
    /// archive holds the same value, refused otherwise.
    fn deliver_over_receipt(
        &self,
        user: &UserId,
        id: &NotificationId,
        bytes: &[u8],
        receipt: PathBuf,
    ) -> Result<PathBuf> {
        if let Some((dir, name)) = self.archived_in(user, id)? {
            let path = dir.join(&name);
            let archived = find_in_archive(dir.open_read(&name)?, &path, id)?;
            if let Some(n) = archived {
                return same_or_conflict(&n.body, bytes, path);
            }
        }
        if let Some(config) = self.archive_config()?
            && let Some((n, url)) = stored::read(self, &config, user, id)?
        {
            return same_or_conflict(&n.body, bytes, PathBuf::from(url));
        }
        Err(Error::io(
            "deliver: a read receipt without its notification is in the way",
            receipt,
            rustix::io::Errno::EXIST.into(),
        ))
    }

    /// The path of the notification's read receipt, when it exists.
    fn receipt(&self, user: &UserId, id: &NotificationId) -> Result<Option<PathBuf>> {
        let Some(dir) = self.open_dir_if_any(&rel::ack(user))? else {
            return Ok(None);
        };
        let name = format!("ntf_{id}.ack");
        Ok(dir.stat(&name)?.map(|_| dir.join(&name)))
    }

    /// Acknowledges a notification: writes `ack/ntf_{id}.ack` with `{"acked_at": now}`
    /// when the notification is in the inbox. Acknowledging twice keeps the first receipt;
    /// an archived notification (locally or in the object store: only acknowledged ones
    /// are archived) is acknowledged already, and nothing is written. Nothing is created
    /// for an id never delivered, not even the user's directory.
    ///
    /// A call that finds neither the notification nor its receipt looks in the archives,
    /// as [`Root::is_acked`] does (with a store: one listing and each of the user's
    /// archives read).
    ///
    /// # Errors
    /// [`crate::Error::Io`] of kind `NotFound` naming `inbox/ntf_{id}.json` when the
    /// notification was never delivered (or is gone); [`crate::Error::Io`] /
    /// [`crate::Error::Unsafe`] naming the path; [`crate::Error::Corrupt`],
    /// [`crate::Error::Config`], [`crate::Error::Store`] and
    /// [`crate::Error::StoreUnsupported`] as for [`Root::is_acked`];
    /// [`crate::Error::RootReplaced`].
    ///
    /// # Examples
    /// ```
    /// use tmpa_core::{Acked, NotificationId, Root, UserId};
    /// let dir = tempfile::tempdir().unwrap();
    /// let root = Root::create(dir.path()).unwrap();
    /// let (u, n) = (UserId::new("u1").unwrap(), NotificationId::new("7").unwrap());
    /// let e = root.ack(&u, &n).unwrap_err(); // never delivered
    /// assert_eq!(e.io_kind(), std::io::ErrorKind::NotFound);
    /// assert!(!dir.path().join("notifications/u1").exists());
    /// root.deliver(&u, &n, &serde_json::json!(1)).unwrap();
    /// let Acked::Receipt(path) = root.ack(&u, &n).unwrap() else { panic!() };
    /// assert!(path.ends_with("notifications/u1/ack/ntf_7.ack"));
    /// ```
    pub fn ack(&self, user: &UserId, id: &NotificationId) -> Result<Acked> {
        if let Some(receipt) = self.receipt(user, id)? {
            return Ok(Acked::Receipt(receipt));
        }
        let name = format!("ntf_{id}.json");
        let inbox = self.open_dir_if_any(&rel::inbox(user))?;
        if let Some(inbox) = &inbox
            && inbox.stat(&name)?.is_some()
        {
            let dir = self.hold_dir(&rel::ack(user))?;
            let ack = format!("ntf_{id}.ack");
            let body = serde_json::json!({ "acked_at": chrono::Local::now().to_rfc3339() });
            match crate::fs::write_in(&dir, OsStr::new(&ack), body.to_string().as_bytes(), true) {
                Err(e) if e.io_kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(self.or_replaced(e)),
                Ok(()) => {}
            }
            return Ok(Acked::Receipt(dir.join(&ack)));
        }
        if self.archived_in(user, id)?.is_some() {
            return Ok(Acked::Archived);
        }
        if let Some(config) = self.archive_config()?
            && stored::latest(self, &config, user, id)?.is_some()
        {
            return Ok(Acked::Archived);
        }
        let missing = self.path().join(rel::inbox(user)).join(&name);
        Err(self.or_replaced(Error::io(
            "acknowledge",
            missing,
            rustix::io::Errno::NOENT.into(),
        )))
    }

    /// Whether the notification is acknowledged: its `ack/ntf_{id}.ack` exists, or (when
    /// it is not in the inbox) it is archived, locally or in the object store, which only
    /// acknowledged notifications are. A notification delivered again after it was
    /// archived is the live one: acknowledged when it has an ack. An id never delivered
    /// is not acknowledged.
    ///
    /// A call that gets past the live files and the local archives reads `tmpa.toml` and,
    /// when it names a store, lists the user's archives there and reads their indexes
    /// (one object at a time, each whole: at most 128 MiB).
    ///
    /// # Errors
    /// [`crate::Error::Io`] when the ack file's presence cannot be determined;
    /// [`crate::Error::Corrupt`] when an archive that had to be looked into is not one;
    /// [`crate::Error::Config`], [`crate::Error::Store`] and
    /// [`crate::Error::StoreUnsupported`] as for [`Root::read_session`];
    /// [`crate::Error::RootReplaced`].
    ///
    /// # Examples
    /// ```
    /// use tmpa_core::{NotificationId, Root, UserId};
    /// let dir = tempfile::tempdir().unwrap();
    /// let root = Root::create(dir.path()).unwrap();
    /// let (u, n) = (UserId::new("u1").unwrap(), NotificationId::new("7").unwrap());
    /// assert!(!root.is_acked(&u, &n).unwrap()); // never delivered
    /// root.deliver(&u, &n, &serde_json::json!(1)).unwrap();
    /// assert!(!root.is_acked(&u, &n).unwrap());
    /// root.ack(&u, &n).unwrap();
    /// assert!(root.is_acked(&u, &n).unwrap());
    /// ```
    pub fn is_acked(&self, user: &UserId, id: &NotificationId) -> Result<bool> {
        if self.receipt(user, id)?.is_some() {
            return Ok(true);
        }
        if let Some(dir) = self.open_dir_if_any(&rel::inbox(user))?
            && dir.stat(format!("ntf_{id}.json"))?.is_some()
        {
            return Ok(false);
        }
        if self.archived_in(user, id)?.is_some() {
            return Ok(true);
        }
        let Some(config) = self.archive_config()? else {
            return Ok(false);
        };
        Ok(stored::latest(self, &config, user, id)?.is_some())
    }

    /// The bytes of a notification, live (`inbox/ntf_{id}.json`) or archived (then
    /// exactly the bytes it had in the inbox): looked for live, then in the local
    /// archives, then in the object store the configuration names (if any; read at each
    /// call that gets that far). When an archival was interrupted before it deleted the
    /// inbox file, the live file is returned: it is the newer or an equal copy. Within
    /// the local archives, or within the store, the copy with the latest modification
    /// time is returned; a local copy is returned before any in the store (as for
    /// sessions).
    ///
    /// # Errors
    /// [`crate::Error::Io`] of kind `NotFound` when none exists;
    /// [`crate::Error::Corrupt`] when the file is larger than 1 MiB, a symlink, or an
    /// archive that had to be read is not valid; [`crate::Error::Config`],
    /// [`crate::Error::Store`] and [`crate::Error::StoreUnsupported`] as for
    /// [`Root::read_session`]; [`crate::Error::RootReplaced`].
    ///
    /// # Examples
    /// ```
    /// use tmpa_core::{NotificationId, Root, UserId};
    /// let dir = tempfile::tempdir().unwrap();
    /// let root = Root::create(dir.path()).unwrap();
    /// let (u, n) = (UserId::new("u1").unwrap(), NotificationId::new("42").unwrap());
    /// root.deliver(&u, &n, &serde_json::json!({"text": "hi"})).unwrap();
    /// assert_eq!(root.read_notification(&u, &n).unwrap(), br#"{"text":"hi"}"#);
    /// let none = NotificationId::new("43").unwrap();
    /// assert_eq!(root.read_notification(&u, &none).unwrap_err().io_kind(), std::io::ErrorKind::NotFound);
    /// ```
    pub fn read_notification(&self, user: &UserId, id: &NotificationId) -> Result<Vec<u8>> {
        let name = format!("ntf_{id}.json");
        if let Some(dir) = self.open_dir_if_any(&rel::inbox(user))? {
            match dir.read(&name, NOTIFICATION_BYTES_MAX) {
                Err(e) if e.io_kind() == io::ErrorKind::NotFound => {}
                other => return other.map(|(b, _)| b),
            }
        }
        let not_found = || {
            self.or_replaced(Error::io(
                "read notification",
                self.path().join(rel::inbox(user)).join(&name),
                rustix::io::Errno::NOENT.into(),
            ))
        };
        if let Some(n) = self.find_archived(user, id)? {
            return Ok(n.body);
        }
        let Some(config) = self.archive_config()? else {
            return Err(not_found());
        };
        match stored::read(self, &config, user, id)? {
            Some((n, _)) => Ok(n.body),
            None => Err(not_found()),
        }
    }

    /// Every notification of a user, sorted by id: those in the inbox (acknowledged when
    /// their ack exists) and the archived ones not in the inbox (acknowledged), locally
    /// ([`NotificationLocation::Archived`]) or in the object store the configuration
    /// names ([`NotificationLocation::Stored`]; one listing request, then a GET of each
    /// of the user's archives there). A notification found in several places is listed
    /// once, where [`Root::read_notification`] finds it. Live ones are listed as by
    /// [`Root::unacked`] (regular files named `ntf_{id}.json` with a valid id); an ack
    /// without its notification lists nothing.
    ///
    /// Memory: the list, plus one archive's index at a time (an archive in the store is
    /// read whole: at most 128 MiB).
    ///
    /// # Errors
    /// [`crate::Error::Io`] when a directory cannot be listed (a missing one is empty) or
    /// an archive opened; [`crate::Error::Corrupt`] when an archive's index is not valid;
    /// [`crate::Error::Config`], [`crate::Error::Store`] and
    /// [`crate::Error::StoreUnsupported`] as for [`Root::read_session`];
    /// [`crate::Error::RootReplaced`].
    ///
    /// # Examples
    /// ```
    /// use tmpa_core::{NotificationId, NotificationInfo, NotificationLocation, Root, UserId};
    /// let dir = tempfile::tempdir().unwrap();
    /// std::fs::create_dir(dir.path().join("notifications")).unwrap();
    /// let root = Root::open(dir.path()).unwrap();
    /// let (u, n) = (UserId::new("u1").unwrap(), NotificationId::new("1").unwrap());
    /// root.deliver(&u, &n, &serde_json::json!(1)).unwrap();
    /// let info = NotificationInfo { id: n, location: NotificationLocation::Live, acked: false };
    /// assert_eq!(root.list_notifications(&u).unwrap(), vec![info]);
    /// ```
    pub fn list_notifications(&self, user: &UserId) -> Result<Vec<NotificationInfo>> {
        let mut out: Vec<NotificationInfo> = self
            .live_notifications(user, |_| true)?
            .map(|(_, live)| live)
            .unwrap_or_default()
            .into_iter()
            .map(|(id, acked)| NotificationInfo {
                id,
                location: NotificationLocation::Live,
                acked,
            })
            .collect();
        let mut add = |index: &[IndexEntry], location| {
            for e in index {
                let Ok(id) = NotificationId::new(e.id.as_str()) else {
                    continue;
                };
                out.push(NotificationInfo {
                    id,
                    location,
                    acked: true,
                });
            }
        };
        self.visit_archive_indexes(user, |index| add(index, NotificationLocation::Archived))?;
        if let Some(config) = self.archive_config()? {
            stored::visit_indexes(self, &config, user, |_, index| {
                add(index, NotificationLocation::Stored);
            })?;
        }
        // Live sorts before Archived before Stored: the first place is listed.
        out.sort();
        out.dedup_by(|b, a| a.id == b.id);
        Ok(out)
    }

    /// The archived copy of a notification; when several archives hold it (an
    /// interrupted run, or a notification archived, delivered again and archived again),
    /// the one with the latest modification time.
    fn find_archived(
        &self,
        user: &UserId,
        id: &NotificationId,
    ) -> Result<Option<ArchivedNotification>> {
        let Some((dir, name)) = self.archived_in(user, id)? else {
            return Ok(None);
        };
        find_in_archive(dir.open_read(&name)?, &dir.join(&name), id)
    }

    /// The archive that holds a notification (its directory and name), from the indexes
    /// alone; the latest copy when several do.
    fn archived_in(&self, user: &UserId, id: &NotificationId) -> Result<Option<(Dir, String)>> {
        let Some(dir) = self.open_dir_if_any(&rel::notification_archive(user))? else {
            return Ok(None);
        };
        let mut best: Option<(i64, String)> = None;
        for name in archive_names(&dir)? {
            let index = read_index(&dir, &name)?;
            if let Some(e) = index.iter().find(|e| e.id == id.as_str())
                && best.as_ref().is_none_or(|(t, _)| e.mtime_ns > *t)
            {
                best = Some((e.mtime_ns, name));
            }
        }
        Ok(best.map(|(_, name)| (dir, name)))
    }

    /// Calls `visit` with the index of each of the user's archives, one at a time.
    fn visit_archive_indexes(
        &self,
        user: &UserId,
        mut visit: impl FnMut(&[IndexEntry]),
    ) -> Result<()> {
        let Some(dir) = self.open_dir_if_any(&rel::notification_archive(user))? else {
            return Ok(());
        };
        for name in archive_names(&dir)? {
            visit(&read_index(&dir, &name)?);
        }
        Ok(())
    }

    /// The notifications in a user's inbox without an ack, sorted by id. Names that are
    /// not `ntf_{id}.json` with a valid id (temporaries, odd names), and entries that are
    /// not regular files, are skipped. Archived notifications, local or in the store, are
    /// all acknowledged: this never needs to look at them (and makes no request to a
    /// store).
    ///
    /// Cost, on a local file system: the process keeps a view of each user's inbox and
    /// acks, filled by the first call and kept current by inotify, so a call opens the two
    /// directories, reads the watch queue without blocking and looks up (one `fstatat`
    /// each for the ack and the inbox entry) only the ids the kernel says changed since
    /// the last call: O(1) for an unchanged inbox, O(N) for N changes, then the answer
    /// copied out. Elsewhere (network and FUSE file systems, `TMPA_SUMMARY_WATCH=0`), and
    /// for a view to fill: one listing of `ack/` and one of `inbox/`, then nothing per
    /// entry but comparing names (a `stat` only of an entry whose kind the file system's
    /// listing does not give).
    ///
    /// Every delivery and acknowledgement that returned before the call began, in any
    /// thread or process, is in the answer.
    ///
    /// # Not guaranteed
    /// - The view is per process: at most 64 users' views, and 262,144 live
    ///   notifications in all (the least recently used go; about 80 bytes each and the
    ///   id's length); a larger inbox is listed at each call.
    /// - A change the kernel does not report to inotify (another host's, on a file system
    ///   that is not recognised as network or FUSE) is seen within 60 s, when the view is
    ///   listed again whole.
    /// - A snapshot: a delivery or acknowledgement concurrent with the call may or may
    ///   not be in it.
    ///
    /// # Errors
    /// [`crate::Error::Io`] when the inbox or the ack directory cannot be listed, or an
    /// entry looked up (a missing directory is an empty one);
    /// [`crate::Error::RootReplaced`].
    ///
    /// # Examples
    /// ```
    /// use tmpa_core::{NotificationId, Root, UserId};
    /// let dir = tempfile::tempdir().unwrap();
    /// let root = Root::create(dir.path()).unwrap();
    /// let u = UserId::new("u1").unwrap();
    /// for n in ["b", "a", "c"] {
    ///     root.deliver(&u, &NotificationId::new(n).unwrap(), &serde_json::json!(n)).unwrap();
    /// }
    /// root.ack(&u, &NotificationId::new("b").unwrap()).unwrap();
    /// let ids: Vec<String> = root.unacked(&u).unwrap().iter().map(|n| n.to_string()).collect();
    /// assert_eq!(ids, ["a", "c"]);
    /// ```
    pub fn unacked(&self, user: &UserId) -> Result<Vec<NotificationId>> {
        let live = self.live_notifications(user, |acked| !acked)?;
        Ok(live.map_or_else(Vec::new, |(_, live)| {
            live.into_iter().map(|(id, _)| id).collect()
        }))
    }

    /// The live notifications of a user (those in `inbox/`), sorted by id, each with its
    /// bytes and whether it is acknowledged: what a page of notifications shows, in one
    /// call. `query` narrows it (unacknowledged only, after an id, at most so many).
    ///
    /// Cost: the ids as [`Root::unacked`] finds them, then one read of each notification
    /// returned. A notification archived between the listing and its read (which only
    /// acknowledged ones are) is left out. Memory: the bodies returned, each at most
    /// 1 MiB; use [`InboxQuery::limit`] and [`InboxQuery::after`] to page a large inbox.
    ///
    /// # Errors
    /// As [`Root::unacked`]; [`crate::Error::Corrupt`] naming a notification that is
    /// larger than 1 MiB or not a regular file; [`crate::Error::Io`] naming one that
    /// cannot be read.
    ///
    /// # Examples
    /// ```
    /// use tmpa_core::{InboxQuery, NotificationId, Root, UserId};
    /// let dir = tempfile::tempdir().unwrap();
    /// let root = Root::create(dir.path()).unwrap();
    /// let u = UserId::new("u1").unwrap();
    /// for n in ["1", "2", "3"] {
    ///     root.deliver(&u, &NotificationId::new(n).unwrap(), &serde_json::json!({"n": n})).unwrap();
    /// }
    /// root.ack(&u, &NotificationId::new("2").unwrap()).unwrap();
    /// let all = root.inbox(&u, &InboxQuery::default()).unwrap();
    /// assert_eq!(all.iter().map(|i| i.acked).collect::<Vec<_>>(), [false, true, false]);
    /// assert_eq!(all[0].body, br#"{"n":"1"}"#);
    /// let q = InboxQuery { unacked_only: true, after: Some(NotificationId::new("1").unwrap()), limit: Some(1) };
    /// let page = root.inbox(&u, &q).unwrap();
    /// assert_eq!(page.len(), 1);
    /// assert_eq!(page[0].id.as_str(), "3");
    /// ```
    pub fn inbox(&self, user: &UserId, query: &InboxQuery) -> Result<Vec<InboxItem>> {
        let keep = |acked: bool| !(query.unacked_only && acked);
        let Some((dir, live)) = self.live_notifications(user, keep)? else {
            return Ok(Vec::new());
        };
        let start = query
            .after
            .as_ref()
            .map_or(0, |after| live.partition_point(|(id, _)| id <= after));
        let mut out = Vec::new();
        for (id, acked) in live.into_iter().skip(start) {
            if query.limit.is_some_and(|l| out.len() >= l) {
                break;
            }
            match dir.read(format!("ntf_{id}.json"), NOTIFICATION_BYTES_MAX) {
                Ok((body, _)) => out.push(InboxItem { id, acked, body }),
                Err(e) if e.io_kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The live notifications of a user that `keep` keeps (given whether each has its
    /// ack), sorted by id, with that flag, and the inbox they are in: from this process's
    /// view of the user's `inbox/` and `ack/` (`notify_view.rs`), which a call brings up
    /// to date from what the kernel says changed, or from one listing of each.
    fn live_notifications(
        &self,
        user: &UserId,
        keep: impl Fn(bool) -> bool,
    ) -> Result<Option<(Dir, Vec<Live>)>> {
        let Some(inbox) = self.open_dir_if_any(&rel::inbox(user))? else {
            return Ok(None);
        };
        let ack = self.open_dir_if_any(&rel::ack(user))?;
        let live = crate::notify_view::live(self, user, &inbox, ack.as_ref(), keep)
            .map_err(|e| self.or_replaced(e))?;
        Ok(Some((inbox, live)))
    }

    /// The names in the directory `rel` that are valid UTF-8, end with `ext` and are not
    /// temporaries, with `ext` stripped, sorted. A missing directory is an empty one.
    pub(crate) fn list_stems(&self, rel: &std::path::Path, ext: &str) -> Result<Vec<String>> {
        let Some(dir) = self.open_dir_if_any(rel)? else {
            return Ok(Vec::new());
        };
        let mut out: Vec<String> = dir
            .names(|n| crate::fs::temp_final_name(n).is_none())?
            .into_iter()
            .filter_map(|n| Some(n.to_str()?.strip_suffix(ext)?.to_owned()))
            .collect();
        out.sort();
        Ok(out)
    }
}

/// `Ok(path)` when `old` and `new` hold the same JSON value (or the same bytes), else a
/// conflict naming `path`.
fn same_or_conflict(old: &[u8], new: &[u8], path: PathBuf) -> Result<PathBuf> {
    let same = old == new
        || matches!(
            (std::str::from_utf8(old), std::str::from_utf8(new)),
            (Ok(a), Ok(b)) if crate::json::same_value(a, b)
        );
    if same {
        Ok(path)
    } else {
        Err(Error::Conflict { path })
    }
}

/// The index of the archive `name` of `dir`.
fn read_index(dir: &Dir, name: &str) -> Result<Vec<IndexEntry>> {
    read_archive(dir.open_read(name)?, &dir.join(name), |_| false, |_| false)
}

/// Notifications archived in the object store.
#[cfg(feature = "object-store")]
mod stored {
    use super::*;
    use crate::notify_archive::NOTIFICATION_ARCHIVE_BYTES_MAX;
    use crate::store::client::Store;

    /// Calls `visit` with the name and index of each of the user's archives in the
    /// store, one at a time (each object read whole, bounded). An archive removed
    /// between the listing and its read is passed over.
    pub(super) fn visit_indexes(
        _root: &Root,
        config: &ArchiveConfig,
        user: &UserId,
        mut visit: impl FnMut(&str, &[IndexEntry]),
    ) -> Result<()> {
        let store = Store::open(config)?;
        for name in store.list_notification_archives(user)? {
            let key = store.notification_key(user, &name);
            let Some((bytes, _)) = store.get(&key, NOTIFICATION_ARCHIVE_BYTES_MAX)? else {
                continue;
            };
            let shown = std::path::PathBuf::from(store.object_url(&key));
            visit(
                &name,
                &read_archive(&bytes[..], &shown, |_| false, |_| false)?,
            );
        }
        Ok(())
    }

    /// The store's archive that holds `id`, from the indexes alone; the latest copy when
    /// several do.
    pub(super) fn latest(
        root: &Root,
        config: &ArchiveConfig,
        user: &UserId,
        id: &NotificationId,
    ) -> Result<Option<String>> {
        let mut best: Option<(i64, String)> = None;
        visit_indexes(root, config, user, |name, index| {
            if let Some(e) = index.iter().find(|e| e.id == id.as_str())
                && best.as_ref().is_none_or(|(t, _)| e.mtime_ns > *t)
            {
                best = Some((e.mtime_ns, name.to_owned()));
            }
        })?;
        Ok(best.map(|(_, name)| name))
    }

    /// The archived copy of `id` in the store (the latest when several archives hold it),
    /// with the URL of the object holding it.
    pub(super) fn read(
        root: &Root,
        config: &ArchiveConfig,
        user: &UserId,
        id: &NotificationId,
    ) -> Result<Option<(ArchivedNotification, String)>> {
        let Some(name) = latest(root, config, user, id)? else {
            return Ok(None);
        };
        let store = Store::open(config)?;
        let key = store.notification_key(user, &name);
        let Some((bytes, _)) = store.get(&key, NOTIFICATION_ARCHIVE_BYTES_MAX)? else {
            return Ok(None);
        };
        let url = store.object_url(&key);
        let found = find_in_archive(&bytes[..], std::path::Path::new(&url), id)?;
        Ok(found.map(|n| (n, url)))
    }
}

/// Without the `object-store` feature: a store in `tmpa.toml` is an error, never "not
/// archived".
#[cfg(not(feature = "object-store"))]
mod stored {
    use super::*;

    pub(super) fn visit_indexes(
        root: &Root,
        config: &ArchiveConfig,
        _user: &UserId,
        _visit: impl FnMut(&str, &[IndexEntry]),
    ) -> Result<()> {
        Err(config.unsupported(root.path()))
    }

    pub(super) fn latest(
        root: &Root,
        config: &ArchiveConfig,
        _user: &UserId,
        _id: &NotificationId,
    ) -> Result<Option<String>> {
        Err(config.unsupported(root.path()))
    }

    pub(super) fn read(
        root: &Root,
        config: &ArchiveConfig,
        _user: &UserId,
        _id: &NotificationId,
    ) -> Result<Option<(ArchivedNotification, String)>> {
        Err(config.unsupported(root.path()))
    }
}
