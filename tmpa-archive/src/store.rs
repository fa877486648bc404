//! Archiving to an object store: one session (or, with `--migrate-local`, one local
//! archive) is gzipped in memory, put without overwriting, read back from the store,
//! checked against the put (ETag, SHA-256 of the bytes), decompressed and compared byte
//! for byte with the source on disk. Nothing here deletes a local file: like
//! [`crate::session::archive_one`], it returns a [`Prepared`] that the caller deletes
//! through the one deletion path, after the receipt.
//!
//! A store that fails (unreachable, too slow, answering errors after the retries) trips
//! [`StoreRun::down`]: the sessions not yet tried are left in place without another
//! request, so a dead store costs one timeout, not one per session.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::Path;
use std::sync::{Condvar, Mutex, OnceLock};

use flate2::{Compression, GzBuilder};
use sha2::Digest;
use tmpa_core::maintenance::store::{ObjectInfo, ObjectKey, PutNew, Store};
use tmpa_core::maintenance::{Dir, Meta, SESSION_BYTES_MAX, sha256_hex};
use tmpa_core::{Error, SessionId, StoreErrorKind, UserId};

use crate::session::{
    Action, CHUNK_BYTES, Options, Prepared, StoredObject, Tee, failed_early, hash_and_check,
    json_valid, open_source, same_bytes, source_unchanged,
};

/// Bytes of sessions the store's threads may hold in memory at once: each holds a
/// session's compressed bytes and, while verifying, the copy read back (charged as twice
/// the session's size). A session larger than this alone runs by itself, so a run's
/// memory is at most this or twice the largest session ([`SESSION_BYTES_MAX`]), plus the
/// client's constant, whatever the number of threads.
pub const IN_FLIGHT_BYTES_MAX: u64 = 128 << 20;

/// What the store's threads hold in memory, bounded by a byte budget.
#[derive(Debug)]
pub struct InFlight {
    budget: u64,
    used: Mutex<u64>,
    freed: Condvar,
}

/// A share of an [`InFlight`] budget, given back on drop.
#[derive(Debug)]
pub struct Share<'a> {
    of: &'a InFlight,
    bytes: u64,
}

impl InFlight {
    /// A budget of `budget` bytes.
    pub fn new(budget: u64) -> InFlight {
        InFlight {
            budget,
            used: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// Waits until `bytes` fit beside what the other threads hold (or nothing else is
    /// held: a share larger than the budget runs alone), then takes them.
    pub fn take(&self, bytes: u64) -> Share<'_> {
        let mut used = self
            .used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while *used > 0 && used.saturating_add(bytes) > self.budget {
            used = self
                .freed
                .wait(used)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *used += bytes;
        Share { of: self, bytes }
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        *self
            .used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Share<'_> {
    fn drop(&mut self) {
        let mut used = self
            .of
            .used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *used -= self.bytes;
        self.of.freed.notify_all();
    }
}

/// A run's store and whether it has failed.
#[derive(Debug)]
pub struct StoreRun {
    /// The client.
    pub store: Store,
    /// Set at the first failure of the store itself (not of one object): why. Every
    /// session after it is left in place untried.
    pub down: OnceLock<String>,
    /// The session bytes the threads hold at once.
    pub in_flight: InFlight,
}

impl StoreRun {
    /// A run on `store`, not failed yet.
    pub fn new(store: Store) -> StoreRun {
        StoreRun {
            store,
            down: OnceLock::new(),
            in_flight: InFlight::new(IN_FLIGHT_BYTES_MAX),
        }
    }

    /// Records `e` as the store's failure when it is one (not an object's).
    pub(crate) fn note(&self, e: &Error) {
        if matches!(
            e,
            Error::Store {
                kind: StoreErrorKind::Unavailable | StoreErrorKind::Denied,
                ..
            }
        ) {
            let _ = self.down.set(e.chain());
        }
    }

    /// The words for a session (or a batch of notifications) left untried because the
    /// store is down.
    pub(crate) fn untried(&self) -> Option<String> {
        self.down.get().map(|why| {
            format!(
                "left in place, not tried: the store {} failed earlier in this run ({why})",
                self.store.url()
            )
        })
    }
}

/// What is archived: a live session (gzipped here) or a local archive (moved as it is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// `sessions/{session}.json`.
    Session,
    /// `archive/{session}.json.gz` (`--migrate-local`).
    LocalArchive,
}

/// Archives the file `name` of `dir` (a session, or a local archive with
/// [`SourceKind::LocalArchive`]) as the object of `user`'s `session`. Never deletes a
/// local file, never overwrites an object.
pub fn archive_one(
    dir: &Dir,
    name: &str,
    (user, session): (&UserId, &SessionId),
    kind: SourceKind,
    sr: &StoreRun,
    opts: Options,
) -> Prepared {
    let shown = dir.join(name);
    let key = sr.store.key(user, session);
    let url = sr.store.object_url(&key);
    let (mut source, stamp) = match open_source(dir, name) {
        Ok(opened) => opened,
        Err(e) => return failed_early(e),
    };
    let mut p = Prepared::new(stamp);
    p.object = Some(StoredObject {
        url: url.clone(),
        ..StoredObject::default()
    });
    if let Some(why) = sr.untried() {
        p.detail = why;
        return p;
    }
    let result = match kind {
        SourceKind::Session => session_to_store(&mut p, (&mut source, &shown), sr, &key, opts),
        SourceKind::LocalArchive => archive_to_store(&mut p, (&mut source, &shown), sr, &key, opts),
    };
    if let Err(e) = result {
        sr.note(&e);
        p.action = Action::Failed;
        p.detail = format!("left in place: {}", e.chain());
        return p;
    }
    if p.action.deletes_source() && !source_unchanged(&source, dir, name, &stamp) {
        take_back(&mut p, sr, &key);
        p.action = Action::Changed;
        p.detail = "changed while being archived (kept; retried next run)".into();
    }
    if p.detail.is_empty() {
        p.detail = match (p.action, opts.dry_run) {
            (Action::Archive, true) => format!("-> {url} (dry run: the store is not contacted)"),
            (Action::Archive, false) => format!("-> {url}"),
            (Action::Complete, _) => {
                format!("{url} already holds these bytes (an earlier run was interrupted)")
            }
            _ => String::new(),
        };
    }
    p
}

/// Removes the object this run created for a source that changed before it could be
/// deleted (the live file is newer, so nothing is lost). Best effort: a leftover is
/// compared, never replaced, by the next run.
fn take_back(p: &mut Prepared, sr: &StoreRun, key: &ObjectKey) {
    let etag = p.object.as_ref().and_then(|o| o.etag.clone());
    if let (true, Some(etag)) = (p.wrote_object, etag) {
        let _ = sr.store.delete_own(key, &etag);
        p.wrote_object = false;
    }
}

/// A live session: gzip it in memory (hashing it and checking its JSON on the way), then
/// store it.
fn session_to_store(
    p: &mut Prepared,
    (source, shown): (&mut File, &Path),
    sr: &StoreRun,
    key: &ObjectKey,
    opts: Options,
) -> tmpa_core::Result<()> {
    if opts.dry_run {
        let (sha, valid) = hash_and_check(source, shown)?;
        p.sha256 = Some(sha);
        p.valid_json = Some(valid);
        p.action = Action::Archive;
        return Ok(());
    }
    // The compressed bytes and the copy read back, held until the session is verified.
    let _share = sr.in_flight.take(p.stamp.size.saturating_mul(2));
    let inner_name = shown
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let gz = GzBuilder::new()
        .filename(inner_name.as_bytes())
        .mtime(u32::try_from((p.stamp.mtime_ns / 1_000_000_000).max(0)).unwrap_or(0))
        .write(
            Vec::with_capacity(usize::try_from(p.stamp.size / 4).unwrap_or(0)),
            Compression::new(opts.level),
        );
    let mut tee = Tee::new(&mut *source, gz);
    let valid = json_valid(&mut tee).map_err(|e| Error::io("read", shown, e))?;
    let Tee { hash, out: gz, .. } = tee;
    let bytes = gz.finish().map_err(|e| Error::io("compress", shown, e))?;
    p.sha256 = Some(format!("{:x}", hash.finalize()));
    p.valid_json = Some(valid);
    // Rewritten while we read it: nothing is stored, the session is retried next run.
    if Meta::of_fd(&*source).map(|m| m.stamp).ok() != Some(p.stamp) {
        p.action = Action::Changed;
        p.detail = "changed while being archived (kept; retried next run)".into();
        return Ok(());
    }
    store_verified(p, (source, shown), sr, key, bytes, Compare::Decompressed)
}

/// A local archive (`--migrate-local`): check it is gzip holding a session, then store
/// its bytes as they are.
fn archive_to_store(
    p: &mut Prepared,
    (source, shown): (&mut File, &Path),
    sr: &StoreRun,
    key: &ObjectKey,
    opts: Options,
) -> tmpa_core::Result<()> {
    let _share = sr.in_flight.take(p.stamp.size.saturating_mul(2));
    let mut bytes = Vec::with_capacity(usize::try_from(p.stamp.size).unwrap_or(0));
    (&mut *source)
        .take(SESSION_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("read", shown, e))?;
    if bytes.len() as u64 != p.stamp.size {
        p.action = Action::Changed;
        p.detail = "changed while being read (kept; retried next run)".into();
        return Ok(());
    }
    p.sha256 = Some(sha256_hex(&bytes));
    let mut dec = flate2::read::MultiGzDecoder::new(&bytes[..]).take(SESSION_BYTES_MAX + 1);
    let mut tee = Tee::new(&mut dec, io::sink());
    match json_valid(&mut tee) {
        Ok(valid) => p.valid_json = Some(valid),
        Err(e) => {
            p.action = Action::Corrupt;
            p.detail = format!("not valid gzip ({e}): kept, not moved");
            return Ok(());
        }
    }
    p.action = Action::Archive;
    if opts.dry_run {
        return Ok(());
    }
    store_verified(p, (source, shown), sr, key, bytes, Compare::Raw)
}

/// How an object is compared with its source.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Compare {
    /// The source is the session: the object must decompress to its bytes.
    Decompressed,
    /// The source is a local archive: the object must hold its bytes (or, for an object
    /// found already there, decompress to what the local archive decompresses to).
    Raw,
}

/// Puts `bytes` as `key` unless an object is there (then compares it), and verifies
/// what the store holds against the source on disk.
fn store_verified(
    p: &mut Prepared,
    (source, shown): (&mut File, &Path),
    sr: &StoreRun,
    key: &ObjectKey,
    bytes: Vec<u8>,
    how: Compare,
) -> tmpa_core::Result<()> {
    let put = put_verified(sr, key, bytes, SESSION_BYTES_MAX, |got| {
        equals_source(got, source, shown, how)
    })?;
    p.wrote_object = put.wrote;
    if put.object.bytes.is_some() {
        p.archive_bytes = put.object.bytes;
    }
    p.object = Some(put.object);
    p.action = match put.verdict {
        Verdict::Stored => Action::Archive,
        Verdict::AlreadyThere => Action::Complete,
        Verdict::Conflict => Action::Conflict,
        Verdict::VerificationFailed => Action::VerificationFailed,
        Verdict::Vanished => Action::Changed,
    };
    p.detail = put.detail;
    Ok(())
}

/// What [`put_verified`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The object was created, read back from the store and equals the source.
    Stored,
    /// An object was already there and holds the source's data (an interrupted run).
    AlreadyThere,
    /// An object was already there with other data, or one that cannot be read: both
    /// kept.
    Conflict,
    /// The object this run created does not read back as stored, or not as the source.
    VerificationFailed,
    /// The object that was there vanished before it could be compared.
    Vanished,
}

impl Verdict {
    /// Whether the source may be deleted once the receipt is written.
    pub(crate) fn verified(self) -> bool {
        matches!(self, Verdict::Stored | Verdict::AlreadyThere)
    }
}

/// An object put (or found) and verified by [`put_verified`].
#[derive(Debug)]
pub(crate) struct Put {
    pub(crate) verdict: Verdict,
    /// What the store answered (URL always; size, ETag, SHA-256 once read back).
    pub(crate) object: StoredObject,
    /// Whether this run created the object.
    pub(crate) wrote: bool,
    /// In words, for the report; empty when there is nothing to add.
    pub(crate) detail: String,
}

/// The one way an object is stored: a HEAD first (an object there is compared, never
/// replaced), else a put that never replaces one ([`Store::put_new`]), then a GET of at
/// most `bytes_max` bytes, its ETag and SHA-256 checked against the put, and its bytes
/// handed to `compare`, which says whether they hold the source's data (the source read
/// again from disk). The outer error is the store's or the source's I/O error; the inner
/// one of `compare` says why the object cannot be read.
pub(crate) fn put_verified(
    sr: &StoreRun,
    key: &ObjectKey,
    bytes: Vec<u8>,
    bytes_max: u64,
    mut compare: impl FnMut(&[u8]) -> tmpa_core::Result<Result<bool, String>>,
) -> tmpa_core::Result<Put> {
    let store = &sr.store;
    let url = store.object_url(key);
    let mut put = Put {
        verdict: Verdict::VerificationFailed,
        object: StoredObject {
            url: url.clone(),
            ..StoredObject::default()
        },
        wrote: false,
        detail: String::new(),
    };
    // A HEAD first, even on a store with conditional put: a rerun after an interruption
    // then costs no upload, and a store that ignores If-None-Match cannot overwrite an
    // object that was already there.
    if store.head(key)?.is_some() {
        compare_existing(&mut put, sr, key, bytes_max, &mut compare, "")?;
        return Ok(put);
    }
    let sent_sha = sha256_hex(&bytes);
    let sent_len = bytes.len() as u64;
    let (put_etag, put_version) = match store.put_new(key, bytes)? {
        PutNew::Exists => {
            compare_existing(
                &mut put,
                sr,
                key,
                bytes_max,
                &mut compare,
                " (it appeared while this run was writing it)",
            )?;
            return Ok(put);
        }
        PutNew::Created { etag, version } => (etag, version),
    };
    put.wrote = true;
    put.object.etag.clone_from(&put_etag);
    put.object.version.clone_from(&put_version);
    let failed = |put: &mut Put, why: String| {
        put.verdict = Verdict::VerificationFailed;
        put.detail = format!("verification failed: {url} {why} (both kept)");
    };
    // Read back from the store, not from anything this process kept.
    let Some((got, info)) = store.get(key, bytes_max)? else {
        failed(&mut put, "is missing right after it was stored".into());
        return Ok(put);
    };
    record(&mut put.object, &got, &info);
    if let (Some(sent), Some(read)) = (&put_etag, &info.etag)
        && sent != read
    {
        failed(
            &mut put,
            format!("was stored with ETag {sent} but reads back with ETag {read}"),
        );
        return Ok(put);
    }
    if info.size != sent_len || sha256_hex(&got) != sent_sha {
        failed(
            &mut put,
            format!(
                "reads back as other bytes than were stored ({} bytes, {sent_len} sent)",
                got.len()
            ),
        );
        return Ok(put);
    }
    match compare(&got)? {
        Ok(true) => put.verdict = Verdict::Stored,
        Ok(false) => failed(&mut put, "does not hold the source's bytes".into()),
        Err(why) => failed(&mut put, format!("cannot be read back: {why}")),
    }
    Ok(put)
}

/// An object is already there: it completes an interrupted run when it holds the
/// source's data, and is a conflict otherwise. It is never replaced.
fn compare_existing(
    put: &mut Put,
    sr: &StoreRun,
    key: &ObjectKey,
    bytes_max: u64,
    compare: &mut impl FnMut(&[u8]) -> tmpa_core::Result<Result<bool, String>>,
    note: &str,
) -> tmpa_core::Result<()> {
    let url = sr.store.object_url(key);
    let Some((got, info)) = sr.store.get(key, bytes_max)? else {
        // Deleted between the HEAD and the GET: the next run writes it.
        put.verdict = Verdict::Vanished;
        put.detail = format!("{url} vanished while being compared (kept; retried next run)");
        return Ok(());
    };
    record(&mut put.object, &got, &info);
    match compare(&got)? {
        Ok(true) => {
            put.verdict = Verdict::AlreadyThere;
            if !note.is_empty() {
                put.detail = format!("{url} already holds these bytes{note}");
            }
        }
        Ok(false) => {
            put.verdict = Verdict::Conflict;
            put.detail = format!(
                "{url} holds different bytes{note} (both kept; compare them and remove the wrong one)"
            );
        }
        Err(why) => {
            put.verdict = Verdict::Conflict;
            put.detail = format!("{url} cannot be read back: {why}{note} (both kept)");
        }
    }
    Ok(())
}

/// Notes what the store answered for the report and the receipt.
fn record(object: &mut StoredObject, got: &[u8], info: &ObjectInfo) {
    object.bytes = Some(info.size);
    object.etag.clone_from(&info.etag);
    object.version.clone_from(&info.version);
    object.sha256 = Some(sha256_hex(got));
}

/// Whether the object's bytes `got` hold the source's data (read again from disk). The
/// outer error is an I/O error on the source; the inner one says why the object cannot
/// be read (not gzip, truncated).
fn equals_source(
    got: &[u8],
    source: &mut File,
    shown: &Path,
    how: Compare,
) -> tmpa_core::Result<Result<bool, String>> {
    source.rewind().map_err(|e| Error::io("seek", shown, e))?;
    let result = match how {
        Compare::Decompressed => same_bytes(
            bounded(flate2::read::MultiGzDecoder::new(got)),
            io::BufReader::with_capacity(CHUNK_BYTES, &mut *source),
        ),
        Compare::Raw => {
            // Byte for byte first (an object this run stored); else the same session
            // compressed otherwise (an object a local run stored before) counts too.
            match same_bytes(got, io::BufReader::with_capacity(CHUNK_BYTES, &mut *source)) {
                Ok(Ok(true)) => Ok(Ok(true)),
                Ok(_) => {
                    source.rewind().map_err(|e| Error::io("seek", shown, e))?;
                    let local = bounded(flate2::read::MultiGzDecoder::new(
                        io::BufReader::with_capacity(CHUNK_BYTES, &mut *source),
                    ));
                    same_bytes(bounded(flate2::read::MultiGzDecoder::new(got)), local)
                }
                Err(e) => Err(e),
            }
        }
    };
    result.map_err(|e| Error::io("read", shown, e))
}

/// At most one byte more than a session may hold: a decompression bomb stops there.
fn bounded<R: Read>(r: R) -> io::Take<R> {
    r.take(SESSION_BYTES_MAX + 1)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;

    /// Eight threads taking shares never hold more than the budget together, and a share
    /// larger than the budget runs alone.
    #[test]
    fn in_flight_never_exceeds_its_budget() {
        let f = InFlight::new(100);
        let peak = AtomicU64::new(0);
        std::thread::scope(|s| {
            for i in 0..8u64 {
                let (f, peak) = (&f, &peak);
                s.spawn(move || {
                    for n in [30, 60, 150, 10] {
                        let share = f.take(n + i);
                        peak.fetch_max(f.used(), Ordering::SeqCst);
                        assert!(f.used() <= 100 || f.used() == n + i, "{}", f.used());
                        std::thread::sleep(Duration::from_millis(2));
                        drop(share);
                    }
                });
            }
        });
        assert_eq!(f.used(), 0);
        assert!(peak.load(Ordering::SeqCst) >= 150);
    }
}
