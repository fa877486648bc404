//! A user's notification archives in the object store, read when `tmpa.toml` names one
//! (feature `object-store`; without it, a store in `tmpa.toml` is an error).

/// Notifications archived in the object store.
#[cfg(feature = "object-store")]
mod client {
    use super::super::*;
    use crate::notify_archive::NOTIFICATION_ARCHIVE_BYTES_MAX;
    use crate::store::client::Store;

    /// Calls `visit` with the name and index of each of the user's archives in the
    /// store, one at a time (each object read whole, bounded). An archive removed
    /// between the listing and its read is passed over.
    pub(in crate::notify) fn visit_indexes(
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
    pub(in crate::notify) fn latest(
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
    pub(in crate::notify) fn read(
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
mod client {
    use super::super::*;

    pub(in crate::notify) fn visit_indexes(
        root: &Root,
        config: &ArchiveConfig,
        _user: &UserId,
        _visit: impl FnMut(&str, &[IndexEntry]),
    ) -> Result<()> {
        Err(config.unsupported(root.path()))
    }

    pub(in crate::notify) fn latest(
        root: &Root,
        config: &ArchiveConfig,
        _user: &UserId,
        _id: &NotificationId,
    ) -> Result<Option<String>> {
        Err(config.unsupported(root.path()))
    }

    pub(in crate::notify) fn read(
        root: &Root,
        config: &ArchiveConfig,
        _user: &UserId,
        _id: &NotificationId,
    ) -> Result<Option<(ArchivedNotification, String)>> {
        Err(config.unsupported(root.path()))
    }
}

pub(super) use client::*;
