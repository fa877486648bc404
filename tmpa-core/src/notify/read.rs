//! Reading notifications: one by id (live, then the local archives' indexes, then the
//! store's), a user's list, and the unacknowledged ones and the inbox from the view this
//! process keeps (`notify_view.rs`).

use super::*;

impl Root {
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
    pub(super) fn find_archived(
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
    pub(super) fn archived_in(
        &self,
        user: &UserId,
        id: &NotificationId,
    ) -> Result<Option<(Dir, String)>> {
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
    pub(super) fn visit_archive_indexes(
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
    pub(super) fn live_notifications(
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

/// The index of the archive `name` of `dir`.
pub(super) fn read_index(dir: &Dir, name: &str) -> Result<Vec<IndexEntry>> {
    read_archive(dir.open_read(name)?, &dir.join(name), |_| false, |_| false)
}
