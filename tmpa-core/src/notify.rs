//! Notifications: `notifications/{user}/inbox/ntf_{id}.json` and their read receipts
//! `notifications/{user}/ack/ntf_{id}.ack`.

use std::io;
use std::path::PathBuf;

use serde_json::Value;

use crate::atomic;
use crate::error::{Error, Result};
use crate::names::{NotificationId, UserId};
use crate::root::{Root, list_stems};

impl Root {
    /// Delivers a notification: writes `inbox/ntf_{id}.json` atomically (a redelivery
    /// with the same id replaces it).
    ///
    /// # Errors
    /// [`Error::Io`] / [`Error::Unsafe`] naming the path.
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
        let dir = self.hold_dir(&self.inbox_dir(user))?;
        let name = format!("ntf_{id}.json");
        let bytes = serde_json::to_vec(body).expect("a JSON value always serializes");
        atomic::write(dir.op(&name), &bytes).map_err(|e| dir.shown_error(e))?;
        Ok(dir.shown(&name))
    }

    /// Acknowledges a notification: writes `ack/ntf_{id}.ack` with `{"acked_at": now}`.
    /// Acknowledging twice keeps the first receipt.
    ///
    /// # Errors
    /// [`Error::Io`] / [`Error::Unsafe`] naming the path.
    pub fn ack(&self, user: &UserId, id: &NotificationId) -> Result<PathBuf> {
        let dir = self.hold_dir(&self.ack_dir(user))?;
        let name = format!("ntf_{id}.ack");
        let path = dir.shown(&name);
        let body = serde_json::json!({ "acked_at": chrono::Local::now().to_rfc3339() });
        match atomic::write_new(dir.op(&name), body.to_string().as_bytes()) {
            Err(e) if e.io_kind() == Some(io::ErrorKind::AlreadyExists) => Ok(path),
            Err(e) => Err(dir.shown_error(e)),
            Ok(()) => Ok(path),
        }
    }

    /// Whether `ack/ntf_{id}.ack` exists.
    ///
    /// # Errors
    /// [`Error::Io`] when the ack file's presence cannot be determined.
    pub fn is_acked(&self, user: &UserId, id: &NotificationId) -> Result<bool> {
        let path = self.ack_dir(user).join(format!("ntf_{id}.ack"));
        path.try_exists().map_err(|e| Error::io("stat", path, e))
    }

    /// The notifications in a user's inbox without an ack, sorted by id. Names that are
    /// not `ntf_{id}.json` with a valid id (temporaries, odd names) are skipped.
    ///
    /// # Errors
    /// [`Error::Io`] when the inbox or the ack directory cannot be listed (a missing
    /// directory is an empty one).
    pub fn unacked(&self, user: &UserId) -> Result<Vec<NotificationId>> {
        let acked = list_stems(&self.ack_dir(user), ".ack")?;
        let mut out: Vec<NotificationId> = list_stems(&self.inbox_dir(user), ".json")?
            .into_iter()
            .filter(|s| s.starts_with("ntf_") && acked.binary_search(s).is_err())
            .filter_map(|s| NotificationId::new(s.strip_prefix("ntf_")?).ok())
            .collect();
        out.sort();
        Ok(out)
    }
}
