//! Notifications: `notifications/{user}/inbox/ntf_{id}.json` and their read receipts
//! `notifications/{user}/ack/ntf_{id}.ack`, live, or archived by tmpa-archive into
//! `notifications/{user}/archive/acked-{n}-{digest}.tar.gz` (`notify_archive.rs`), or,
//! when the configuration (`Root::archive_config`) names an object store, into its object
//! `{prefix}/{user}/acked-{n}-{digest}.tar.gz`. Every read answers the same whether a
//! notification is live, archived locally or in the store; like sessions, it looks live
//! first, then in the local archives, then in the store (read at each call that gets
//! that far).

mod read;
mod stored;

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
