//! Notifications: `notifications/{user}/inbox/ntf_{id}.json` and their read receipts
//! `notifications/{user}/ack/ntf_{id}.ack`.

use std::ffi::OsStr;
use std::io;
use std::path::PathBuf;

use serde_json::Value;

use crate::error::Result;
use crate::names::{NotificationId, UserId};
use crate::root::{Root, rel};

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

    /// Whether `ack/ntf_{id}.ack` exists.
    ///
    /// # Errors
    /// [`crate::Error::Io`] when the ack file's presence cannot be determined.
    pub fn is_acked(&self, user: &UserId, id: &NotificationId) -> Result<bool> {
        let Some(dir) = self.open_dir_if_any(&rel::ack(user))? else {
            return Ok(false);
        };
        Ok(dir.stat(format!("ntf_{id}.ack"))?.is_some())
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
