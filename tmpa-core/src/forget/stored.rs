//! The user's archives in the object store: session versions and notification batches
//! removed, a batch holding notifications that stay rewritten (put anew, read back, the
//! old object deleted on its ETag). A build without the `object-store` feature refuses
//! before anything is removed.

#[cfg(feature = "object-store")]
mod client {
    use super::super::batch::batch_bytes;
    use super::super::*;
    use crate::store::client::{ObjectKey, Removal, Store};

    /// Deletes the stored versions of `session` (every session of the user when `None`).
    pub(in crate::forget) fn forget_session(
        _root: &Root,
        config: &ArchiveConfig,
        user: &UserId,
        session: Option<&SessionId>,
        report: &mut ForgetReport,
    ) -> Result<()> {
        let store = Store::open(config)?;
        let mut keys = Vec::new();
        match session {
            Some(s) => {
                keys.push(store.version_key(user, s, 1));
                if let Some(later) = store.later_versions(user)?.remove(s) {
                    keys.extend(later.into_iter().map(|n| store.version_key(user, s, n)));
                }
            }
            None => {
                let first = store.list_sessions(user)?;
                let later = store.later_versions(user)?;
                for s in first.keys() {
                    keys.push(store.version_key(user, s, 1));
                }
                for (s, ns) in later {
                    keys.extend(ns.into_iter().map(|n| store.version_key(user, &s, n)));
                }
            }
        }
        for key in keys {
            if delete(&store, &key, None)? {
                report.store_objects.push(store.object_url(&key));
            }
        }
        Ok(())
    }

    /// Rewrites (or deletes) the user's batches in the store that hold a notification
    /// `forgotten` names: the new batch put without replacing, read back from the store
    /// and checked, then the old one deleted if it is still the object that was read.
    pub(in crate::forget) fn forget_batches(
        _root: &Root,
        config: &ArchiveConfig,
        user: &UserId,
        forgotten: &dyn Fn(&str) -> bool,
        report: &mut ForgetReport,
    ) -> Result<()> {
        let store = Store::open(config)?;
        for name in store.list_notification_archives(user)? {
            let key = store.notification_key(user, &name);
            let url = store.object_url(&key);
            let Some((bytes, info)) = store.get(&key, NOTIFICATION_ARCHIVE_BYTES_MAX)? else {
                continue;
            };
            let Some((kept, removed)) = split_batch(&bytes[..], Path::new(&url), forgotten)? else {
                continue;
            };
            if !kept.is_empty() {
                let new = put_batch(&store, user, &kept)?;
                report.batches_rewritten.push(BatchRewrite {
                    old: url.clone(),
                    new,
                    removed,
                    kept: kept.len() as u64,
                });
            }
            let etag = info.etag.as_deref();
            if delete(&store, &key, etag.map(|t| (t, info.version.as_deref())))? && kept.is_empty()
            {
                report.store_objects.push(url);
            }
        }
        Ok(())
    }

    /// Puts the batch `kept` as a new object (one already there with its name is
    /// compared instead), reads it back from the store and checks it; its URL.
    fn put_batch(store: &Store, user: &UserId, kept: &[ArchivedNotification]) -> Result<String> {
        let (name, bytes) = batch_bytes(kept, Path::new("new batch"))?;
        let key = store.notification_key(user, &name);
        let url = store.object_url(&key);
        store.put_new(&key, bytes)?;
        let not = |reason: String| Error::NotForgotten {
            path: PathBuf::from(&url),
            reason,
        };
        let Some((back, _)) = store.get(&key, NOTIFICATION_ARCHIVE_BYTES_MAX)? else {
            return Err(not(
                "the rewritten batch is not in the store after its put".into()
            ));
        };
        match same_batch(&back[..], Path::new(&url), kept) {
            Ok(true) => Ok(url),
            Ok(false) => Err(not(
                "the rewritten batch does not hold exactly the notifications kept (the old \
                 batch stays)"
                    .into(),
            )),
            Err(why) => Err(not(format!(
                "the rewritten batch does not read back: {why} (the old batch stays)"
            ))),
        }
    }

    /// Deletes the object at `key`: conditionally on the ETag it was read with when
    /// given (`read`), else on the ETag a HEAD gives; where the store has no conditional
    /// delete, unconditionally. `Ok(false)` when there was no object.
    fn delete(store: &Store, key: &ObjectKey, read: Option<(&str, Option<&str>)>) -> Result<bool> {
        let url = || PathBuf::from(store.object_url(key));
        let mut read = read.map(|(t, v)| (t.to_owned(), v.map(str::to_owned)));
        for _ in 0..crate::store::client::RETRIES_MAX {
            let (etag, version) = match read.take() {
                Some(tv) => tv,
                None => match store.head(key)? {
                    None => return Ok(false),
                    Some(info) => match info.etag {
                        Some(t) => (t, info.version),
                        None => return store.delete_any(key),
                    },
                },
            };
            match store.delete_own(key, &etag, version.as_deref())? {
                Removal::Deleted => return Ok(true),
                // Replaced since it was read (or gone): look again.
                Removal::NotOurs => {}
                Removal::Unsupported(_) => return store.delete_any(key),
            }
        }
        Err(Error::NotForgotten {
            path: url(),
            reason: "the object was replaced each time it was to be deleted".into(),
        })
    }
}

/// Without the `object-store` feature: a store in `tmpa.toml` is an error, never
/// "nothing there to forget".
#[cfg(not(feature = "object-store"))]
mod client {
    use super::super::*;

    pub(in crate::forget) fn forget_session(
        root: &Root,
        config: &ArchiveConfig,
        _user: &UserId,
        _session: Option<&SessionId>,
        _report: &mut ForgetReport,
    ) -> Result<()> {
        Err(config.unsupported(root.path()))
    }

    pub(in crate::forget) fn forget_batches(
        root: &Root,
        config: &ArchiveConfig,
        _user: &UserId,
        _forgotten: &dyn Fn(&str) -> bool,
        _report: &mut ForgetReport,
    ) -> Result<()> {
        Err(config.unsupported(root.path()))
    }
}

pub(super) use client::*;
