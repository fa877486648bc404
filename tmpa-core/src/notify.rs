//! Notifications: `notifications/{user}/inbox/ntf_{id}.json` and their read receipts
//! `notifications/{user}/ack/ntf_{id}.ack`, live, or archived by tmpa-archive into
//! `notifications/{user}/archive/acked-{n}-{digest}.tar.gz` (`notify_archive.rs`). Every
//! read answers the same whether a notification is live or archived.

use std::ffi::OsStr;
use std::io;
use std::path::PathBuf;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::fs::Dir;
use crate::names::{NotificationId, UserId};
use crate::notify_archive::{
    ArchivedNotification, NOTIFICATION_BYTES_MAX, archive_names, find_in_archive, read_archive,
};
use crate::root::{Root, rel};

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
    /// it is not in the inbox) it is archived, which only acknowledged notifications are.
    /// A notification delivered again after it was archived is the live one: acknowledged
    /// when it has an ack.
    ///
    /// # Errors
    /// [`crate::Error::Io`] when the ack file's presence cannot be determined;
    /// [`crate::Error::Corrupt`] when an archive that had to be looked into is not one.
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
        Ok(self.archived_in(user, id)?.is_some())
    }

    /// The bytes of a notification, live (`inbox/ntf_{id}.json`) or archived (then
    /// exactly the bytes it had in the inbox). When an archival was interrupted before it
    /// deleted the inbox file, the live file is returned: it is the newer or an equal
    /// copy.
    ///
    /// # Errors
    /// [`crate::Error::Io`] of kind `NotFound` when neither exists;
    /// [`crate::Error::Corrupt`] when the file is larger than 1 MiB, a symlink, or an
    /// archive that had to be read is not valid.
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
        match self.find_archived(user, id)? {
            Some(n) => Ok(n.body),
            None => Err(Error::io(
                "read notification",
                self.path().join(rel::inbox(user)).join(&name),
                rustix::io::Errno::NOENT.into(),
            )),
        }
    }

    /// Every notification of a user, sorted by id: those in the inbox (acknowledged when
    /// their ack exists) and the archived ones not in the inbox (acknowledged). Names that
    /// are not `ntf_{id}.json` with a valid id are left out; an ack without its
    /// notification lists nothing.
    ///
    /// Memory: the list, plus one archive's index at a time.
    ///
    /// # Errors
    /// [`crate::Error::Io`] when a directory cannot be listed (a missing one is empty) or
    /// an archive opened; [`crate::Error::Corrupt`] when an archive's index is not valid.
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
        self.visit_archive_indexes(user, |index| {
            for e in index {
                let Ok(id) = NotificationId::new(e.id.as_str()) else {
                    continue;
                };
                out.push(NotificationInfo {
                    id,
                    location: NotificationLocation::Archived,
                    acked: true,
                });
            }
        })?;
        // Live sorts before Archived: where both exist, the live one is listed.
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
        mut visit: impl FnMut(&[crate::notify_archive::IndexEntry]),
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
    /// not `ntf_{id}.json` with a valid id (temporaries, odd names) are skipped.
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
fn read_index(dir: &Dir, name: &str) -> Result<Vec<crate::notify_archive::IndexEntry>> {
    read_archive(dir.open_read(name)?, &dir.join(name), |_| false, |_| false)
}
