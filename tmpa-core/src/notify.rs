//! Notifications: `notifications/{user}/inbox/ntf_{id}.json` and their read receipts
//! `notifications/{user}/ack/ntf_{id}.ack`, live, or archived by tmpa-archive into
//! `notifications/{user}/archive/acked-{n}-{digest}.tar.gz` (`notify_archive.rs`), or,
//! when `{root}/tmpa.toml` names an object store, into its object
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
    /// In an archive in the object store `{root}/tmpa.toml` names (acknowledged).
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

impl Root {
    /// Delivers a notification: writes `inbox/ntf_{id}.json` atomically (a redelivery
    /// with the same id replaces it).
    ///
    /// # Errors
    /// [`crate::Error::Io`] / [`crate::Error::Unsafe`] naming the path.
    ///
    /// # Examples
    /// ```
    /// use tmpa_core::{NotificationId, Root, UserId};
    /// let dir = tempfile::tempdir().unwrap();
    /// std::fs::create_dir(dir.path().join("notifications")).unwrap();
    /// let root = Root::open(dir.path()).unwrap();
    /// let (u, n) = (UserId::new("u1").unwrap(), NotificationId::new("42").unwrap());
    /// root.deliver(&u, &n, &serde_json::json!({"text": "hello"})).unwrap();
    /// assert_eq!(root.unacked(&u).unwrap(), vec![n.clone()]);
    /// root.ack(&u, &n).unwrap();
    /// root.ack(&u, &n).unwrap(); // idempotent
    /// assert!(root.is_acked(&u, &n).unwrap());
    /// assert!(root.unacked(&u).unwrap().is_empty());
    /// ```
    pub fn deliver(&self, user: &UserId, id: &NotificationId, body: &Value) -> Result<PathBuf> {
        let dir = self.hold_dir(&rel::inbox(user))?;
        let name = format!("ntf_{id}.json");
        let bytes = serde_json::to_vec(body).expect("a JSON value always serializes");
        crate::fs::write_in(&dir, OsStr::new(&name), &bytes, false)?;
        Ok(dir.join(&name))
    }

    /// Acknowledges a notification: writes `ack/ntf_{id}.ack` with `{"acked_at": now}`.
    /// Acknowledging twice keeps the first receipt.
    ///
    /// # Errors
    /// [`crate::Error::Io`] / [`crate::Error::Unsafe`] naming the path.
    pub fn ack(&self, user: &UserId, id: &NotificationId) -> Result<PathBuf> {
        let dir = self.hold_dir(&rel::ack(user))?;
        let name = format!("ntf_{id}.ack");
        let body = serde_json::json!({ "acked_at": chrono::Local::now().to_rfc3339() });
        match crate::fs::write_in(&dir, OsStr::new(&name), body.to_string().as_bytes(), true) {
            Err(e) if e.io_kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
            Ok(()) => {}
        }
        Ok(dir.join(&name))
    }

    /// Whether the notification is acknowledged: its `ack/ntf_{id}.ack` exists, or (when
    /// it is not in the inbox) it is archived, locally or in the object store, which only
    /// acknowledged notifications are. A notification delivered again after it was
    /// archived is the live one: acknowledged when it has an ack.
    ///
    /// A call that gets past the live files and the local archives reads `tmpa.toml` and,
    /// when it names a store, lists the user's archives there and reads their indexes
    /// (one object at a time, each whole: at most 128 MiB).
    ///
    /// # Errors
    /// [`crate::Error::Io`] when the ack file's presence cannot be determined;
    /// [`crate::Error::Corrupt`] when an archive that had to be looked into is not one;
    /// [`crate::Error::Config`], [`crate::Error::Store`] and
    /// [`crate::Error::StoreUnsupported`] as for [`Root::read_session`].
    ///
    /// # Examples
    /// ```
    /// use tmpa_core::{NotificationId, Root, UserId};
    /// let dir = tempfile::tempdir().unwrap();
    /// std::fs::create_dir(dir.path().join("notifications")).unwrap();
    /// let root = Root::open(dir.path()).unwrap();
    /// let (u, n) = (UserId::new("u1").unwrap(), NotificationId::new("7").unwrap());
    /// assert!(!root.is_acked(&u, &n).unwrap()); // never delivered
    /// root.deliver(&u, &n, &serde_json::json!(1)).unwrap();
    /// assert!(!root.is_acked(&u, &n).unwrap());
    /// root.ack(&u, &n).unwrap();
    /// assert!(root.is_acked(&u, &n).unwrap());
    /// ```
    pub fn is_acked(&self, user: &UserId, id: &NotificationId) -> Result<bool> {
        if let Some(dir) = self.open_dir_if_any(&rel::ack(user))?
            && dir.stat(format!("ntf_{id}.ack"))?.is_some()
        {
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
    /// archives, then in the object store `{root}/tmpa.toml` names (if any; read at each
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
    /// [`Root::read_session`].
    ///
    /// # Examples
    /// ```
    /// use tmpa_core::{NotificationId, Root, UserId};
    /// let dir = tempfile::tempdir().unwrap();
    /// std::fs::create_dir(dir.path().join("notifications")).unwrap();
    /// let root = Root::open(dir.path()).unwrap();
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
            Error::io(
                "read notification",
                self.path().join(rel::inbox(user)).join(&name),
                rustix::io::Errno::NOENT.into(),
            )
        };
        if let Some(n) = self.find_archived(user, id)? {
            return Ok(n.body);
        }
        let Some(config) = self.archive_config()? else {
            return Err(not_found());
        };
        match stored::read(self, &config, user, id)? {
            Some(n) => Ok(n.body),
            None => Err(not_found()),
        }
    }

    /// Every notification of a user, sorted by id: those in the inbox (acknowledged when
    /// their ack exists) and the archived ones not in the inbox (acknowledged), locally
    /// ([`NotificationLocation::Archived`]) or in the object store `{root}/tmpa.toml`
    /// names ([`NotificationLocation::Stored`]; one listing request, then a GET of each
    /// of the user's archives there). A notification found in several places is listed
    /// once, where [`Root::read_notification`] finds it. Names that are not
    /// `ntf_{id}.json` with a valid id are left out; an ack without its notification lists
    /// nothing.
    ///
    /// Memory: the list, plus one archive's index at a time (an archive in the store is
    /// read whole: at most 128 MiB).
    ///
    /// # Errors
    /// [`crate::Error::Io`] when a directory cannot be listed (a missing one is empty) or
    /// an archive opened; [`crate::Error::Corrupt`] when an archive's index is not valid;
    /// [`crate::Error::Config`], [`crate::Error::Store`] and
    /// [`crate::Error::StoreUnsupported`] as for [`Root::read_session`].
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
        let acked = self.list_stems(&rel::ack(user), ".ack")?;
        let mut out: Vec<NotificationInfo> = self
            .list_stems(&rel::inbox(user), ".json")?
            .into_iter()
            .filter_map(|s| {
                let id = NotificationId::new(s.strip_prefix("ntf_")?).ok()?;
                Some(NotificationInfo {
                    id,
                    location: NotificationLocation::Live,
                    acked: acked.binary_search(&s).is_ok(),
                })
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
    /// not `ntf_{id}.json` with a valid id (temporaries, odd names) are skipped. Archived
    /// notifications, local or in the store, are all acknowledged: this never needs to
    /// look at them (and makes no request to a store).
    ///
    /// # Errors
    /// [`crate::Error::Io`] when the inbox or the ack directory cannot be listed (a
    /// missing directory is an empty one).
    pub fn unacked(&self, user: &UserId) -> Result<Vec<NotificationId>> {
        let acked = self.list_stems(&rel::ack(user), ".ack")?;
        let mut out: Vec<NotificationId> = self
            .list_stems(&rel::inbox(user), ".json")?
            .into_iter()
            .filter(|s| s.starts_with("ntf_") && acked.binary_search(s).is_err())
            .filter_map(|s| NotificationId::new(s.strip_prefix("ntf_")?).ok())
            .collect();
        out.sort();
        Ok(out)
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

    /// The archived copy of `id` in the store (the latest when several archives hold it).
    pub(super) fn read(
        root: &Root,
        config: &ArchiveConfig,
        user: &UserId,
        id: &NotificationId,
    ) -> Result<Option<ArchivedNotification>> {
        let Some(name) = latest(root, config, user, id)? else {
            return Ok(None);
        };
        let store = Store::open(config)?;
        let key = store.notification_key(user, &name);
        let Some((bytes, _)) = store.get(&key, NOTIFICATION_ARCHIVE_BYTES_MAX)? else {
            return Ok(None);
        };
        let shown = std::path::PathBuf::from(store.object_url(&key));
        find_in_archive(&bytes[..], &shown, id)
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
    ) -> Result<Option<ArchivedNotification>> {
        Err(config.unsupported(root.path()))
    }
}
