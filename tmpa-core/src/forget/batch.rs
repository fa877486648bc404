//! A notification batch without the forgotten notifications: split, written anew
//! beside the old one (never replacing anything), for the caller to read back.

use super::*;

/// Reads a batch whole and checks it (every member, the gzip trailer); `None` when it
/// holds nothing `forgotten` names, else the notifications to keep and how many go.
pub(super) fn split_batch(
    r: impl std::io::Read,
    shown: &Path,
    forgotten: &dyn Fn(&str) -> bool,
) -> Result<Option<(Vec<ArchivedNotification>, u64)>> {
    let mut all = Vec::new();
    let mut any = false;
    read_archive(
        r,
        shown,
        |index| {
            any = index.iter().any(|e| forgotten(&e.id));
            any
        },
        |n| {
            all.push(n);
            true
        },
    )?;
    if !any {
        return Ok(None);
    }
    let before = all.len();
    all.retain(|n| !forgotten(n.id.as_str()));
    let removed = (before - all.len()) as u64;
    Ok(Some((all, removed)))
}

/// The bytes of the batch `kept`, bounded as every reader bounds an archive.
pub(super) fn batch_bytes(
    kept: &[ArchivedNotification],
    shown: &Path,
) -> Result<(String, Vec<u8>)> {
    let bytes = write_archive(Vec::new(), kept, BATCH_LEVEL)
        .map_err(|e| Error::io("compress", shown, e))?;
    if bytes.len() as u64 > NOTIFICATION_ARCHIVE_BYTES_MAX {
        return Err(Error::NotForgotten {
            path: shown.to_path_buf(),
            reason: format!(
                "the rewritten batch compresses to {} bytes, more than {NOTIFICATION_ARCHIVE_BYTES_MAX}",
                bytes.len()
            ),
        });
    }
    Ok((archive_name(kept), bytes))
}

/// Writes the batch `kept` into `dir` as tmpa-archive writes one (new, never replacing:
/// one already there under the same name, a forget stopped before it deleted the old
/// batch, is compared instead), then reads it back from the disk and checks it holds
/// exactly `kept`. Returns its name.
pub(super) fn write_local_batch(dir: &Dir, kept: &[ArchivedNotification]) -> Result<String> {
    let (name, bytes) = batch_bytes(kept, &dir.join("new batch"))?;
    let shown = dir.join(&name);
    // Notifications are private to their user: so is their archive.
    match AtomicFile::write_new_in(dir, OsStr::new(&name), &bytes, 0o600) {
        Ok(()) => {}
        Err(e) if e.io_kind() == std::io::ErrorKind::AlreadyExists => {
            // Made durable as if written now: the old batch goes on its strength.
            dir.open_read(&name)?
                .sync_all()
                .map_err(|e| Error::io("fsync", &shown, e))?;
            dir.sync()?;
        }
        Err(e) => return Err(e),
    }
    match same_batch(dir.open_read(&name)?, &shown, kept) {
        Ok(true) => Ok(name),
        Ok(false) => Err(Error::NotForgotten {
            path: shown,
            reason: "the rewritten batch does not hold exactly the notifications kept (the \
                     old batch stays)"
                .into(),
        }),
        Err(why) => Err(Error::NotForgotten {
            path: shown,
            reason: format!("the rewritten batch does not read back: {why} (the old batch stays)"),
        }),
    }
}

/// Whether `name` is a temporary of `final_name` (docs/FORMAT.md "Temporaries").
pub(super) fn temp_of(name: &str, final_name: &str) -> bool {
    temp_final_name(OsStr::new(name)).is_some_and(|f| f == OsStr::new(final_name))
}
