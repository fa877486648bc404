//! Archiving one chat session: stream it through gzip into `archive/{session}.json.gz`,
//! verify the archive by decompressing it from disk and comparing it byte for byte with
//! the source, and say whether the source may now be deleted.
//!
//! Nothing here deletes a source: [`archive_one`] returns a [`Prepared`] that the caller
//! deletes only after writing the receipt, and only if the source is still the file archived (`source_unchanged`).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, Write};
use std::path::Path;

use flate2::{Compression, GzBuilder};
use serde::de::IgnoredAny;
use sha2::{Digest, Sha256};
use tmpa_core::Error;
use tmpa_core::maintenance::{AtomicFile, Dir, Kind, Meta, Stamp, path_text};

/// Chunk size for streaming a session and comparing it with its archive.
pub(crate) const CHUNK_BYTES: usize = 128 * 1024;

/// What was found or done for one session that was old enough to archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A new archive was written and verified; the source is deleted (or would be).
    Archive,
    /// The archive already held exactly the session's bytes (an interrupted run): the source
    /// is deleted (or would be).
    Complete,
    /// The archive holds other bytes, or is not valid gzip: both kept.
    Conflict,
    /// The session changed while it was being archived: kept, retried next run.
    Changed,
    /// The archive did not read back equal to the session: both kept.
    VerificationFailed,
    /// An I/O error (full disk, permission, immutable directory) or a store that could
    /// not be reached: the session is kept.
    Failed,
    /// A local archive to move (`--migrate-local`) is not valid gzip: kept, not moved.
    Corrupt,
}

impl Action {
    /// The word the text report shows, for a real run or a dry run.
    pub fn word(self, dry_run: bool) -> &'static str {
        match (self, dry_run) {
            (Action::Archive, false) => "archived",
            (Action::Archive, true) => "would archive",
            (Action::Complete, false) => "completed",
            (Action::Complete, true) => "would complete",
            (Action::Conflict, _) => "conflict",
            (Action::Changed, _) => "changed",
            (Action::VerificationFailed, _) => "verification failed",
            (Action::Failed, _) => "failed",
            (Action::Corrupt, _) => "corrupt",
        }
    }

    /// Whether the source may be deleted once the receipt is written.
    pub fn deletes_source(self) -> bool {
        matches!(self, Action::Archive | Action::Complete)
    }
}

/// The outcome of archiving one session.
#[derive(Debug)]
pub struct Prepared {
    /// What happened.
    pub action: Action,
    /// In words, for the report (names the paths concerned).
    pub detail: String,
    /// SHA-256 of the session's bytes, when they were read whole.
    pub sha256: Option<String>,
    /// Size of the archive, when one was written or found.
    pub archive_bytes: Option<u64>,
    /// Whether the session is valid JSON (`None` when it was not read whole).
    pub valid_json: Option<bool>,
    /// Inode of an archive written by this run (so that it can be taken back if the
    /// source changes before it is deleted).
    pub written_ino: Option<u64>,
    /// The session's identity and times when it was read.
    pub stamp: Stamp,
    /// The object in the store that holds (or would hold) the data, when archiving to a
    /// store.
    pub object: Option<StoredObject>,
    /// Whether this run created that object (so that it can be taken back if the source
    /// changes before it is deleted).
    pub wrote_object: bool,
}

/// An archive object as read back from the store.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoredObject {
    /// Its URL (`s3://bucket/prefix/user/session.json.gz`).
    pub url: String,
    /// Its size in bytes (`None` in a dry run, which contacts no store).
    pub bytes: Option<u64>,
    /// Its ETag, as the store gave it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Its version, on a versioned bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// SHA-256 of its bytes as read back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl Prepared {
    /// Removes the archive this run wrote for the session (when it did), because the
    /// session changed before it could be deleted: the live file is newer.
    pub fn take_back(&self, archive: &Dir, archive_name: &str) {
        if let Some(ino) = self.written_ino {
            take_back(archive, archive_name, ino);
        }
    }

    /// Size of the session in bytes.
    pub fn bytes(&self) -> u64 {
        self.stamp.size
    }

    /// A session read with `stamp`, nothing decided yet.
    pub(crate) fn new(stamp: Stamp) -> Prepared {
        Prepared {
            action: Action::Failed,
            detail: String::new(),
            sha256: None,
            archive_bytes: None,
            valid_json: None,
            written_ino: None,
            stamp,
            object: None,
            wrote_object: false,
        }
    }
}

/// Options of an archival.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// gzip level, 0 to 9.
    pub level: u32,
    /// Plan only: read and compare, write nothing.
    pub dry_run: bool,
}

/// Archives session `name` of `sessions` into `archive_name` of `archive` (`None` in a dry
/// run when the archive directory does not exist yet). `shown_*` are the ordinary paths for
/// reports. Never deletes, never overwrites an existing archive.
pub fn archive_one(
    sessions: &Dir,
    name: &str,
    archive: Option<&Dir>,
    archive_name: &str,
    opts: Options,
) -> Prepared {
    let shown = sessions.join(name);
    let shown_archive = archive.map_or_else(
        || sessions.path().with_file_name("archive").join(archive_name),
        |a| a.join(archive_name),
    );
    let (mut source, stamp) = match open_source(sessions, name) {
        Ok(opened) => opened,
        Err(e) => return failed_early(e),
    };
    let mut p = Prepared::new(stamp);
    let existing = archive.and_then(|a| a.stat(archive_name).ok().flatten());
    let result = match existing {
        Some(m) => compare_existing(
            &mut p,
            (&mut source, &shown),
            archive.expect("exists"),
            archive_name,
            &m,
            !opts.dry_run,
        ),
        None => write_new_archive(&mut p, (&mut source, &shown), archive, archive_name, opts),
    };
    if let Err(e) = result {
        p.action = Action::Failed;
        p.detail = e.chain();
        return p;
    }
    // A session rewritten while we read it is retried next run; an archive this run made
    // of the old bytes is taken back (the live file is newer, so nothing is lost).
    if p.action.deletes_source() && !source_unchanged(&source, sessions, name, &stamp) {
        if let (Some(a), Some(ino)) = (archive, p.written_ino) {
            take_back(a, archive_name, ino);
            p.written_ino = None;
        }
        p.action = Action::Changed;
        p.detail = "changed while being archived (kept; retried next run)".into();
    }
    if p.detail.is_empty() {
        p.detail = match p.action {
            Action::Archive => format!("-> {}", path_text(&shown_archive)),
            Action::Complete => format!(
                "{} already holds these bytes (an earlier run was interrupted)",
                path_text(&shown_archive)
            ),
            _ => String::new(),
        };
    }
    p
}

/// Opens the file `name` of `dir` to archive it, with the stamp of what was opened (from
/// its descriptor: the file the archive is made of is the one later deletions check).
///
/// # Errors
/// The open or stat error naming the file; [`Error::Corrupt`] when it is not a regular
/// file.
pub(crate) fn open_source(dir: &Dir, name: &str) -> Result<(File, Stamp), Error> {
    let source = dir.open_read(name)?;
    match Meta::of_fd(&source) {
        Ok(m) if m.kind == Kind::File => Ok((source, m.stamp)),
        Ok(_) => Err(Error::Corrupt {
            path: dir.join(name),
            reason: "not a regular file".into(),
        }),
        Err(e) => Err(dir.error("stat", name, e)),
    }
}

pub(crate) fn failed_early(err: Error) -> Prepared {
    let mut p = Prepared::new(Stamp {
        dev: 0,
        ino: 0,
        size: 0,
        mtime_ns: 0,
        ctime_ns: 0,
    });
    p.detail = err.chain();
    p
}

/// Whether the open source and its directory entry still match `stamp`.
pub(crate) fn source_unchanged(source: &File, dir: &Dir, name: &str, stamp: &Stamp) -> bool {
    Meta::of_fd(source).is_ok_and(|m| m.stamp == *stamp)
        && dir
            .stat(name)
            .ok()
            .flatten()
            .is_some_and(|m| m.stamp == *stamp)
}

/// Removes the archive this run wrote, if the entry is still that file: the one removal
/// of the workspace outside the deletion path, and it only undoes this run's own write
/// (the live session, which is newer, stays).
fn take_back(archive: &Dir, archive_name: &str, ino: u64) {
    if archive
        .stat(archive_name)
        .ok()
        .flatten()
        .is_some_and(|m| m.stamp.ino == ino)
    {
        // Best effort: a leftover archive of an older version is reported as a conflict
        // by the next run, never silently replaced.
        let _ = archive.unlink(archive_name);
        let _ = archive.sync();
    }
}

/// An archive already exists: it completes an interrupted run when it holds exactly the
/// session's bytes, and is a conflict otherwise. It is never rewritten.
fn compare_existing(
    p: &mut Prepared,
    (source, source_shown): (&mut File, &Path),
    archive: &Dir,
    archive_name: &str,
    meta: &Meta,
    make_durable: bool,
) -> tmpa_core::Result<()> {
    let shown = archive.join(archive_name);
    if meta.kind != Kind::File {
        p.action = Action::Conflict;
        p.detail = format!(
            "{} exists but is not a regular file (both kept)",
            path_text(&shown)
        );
        return Ok(());
    }
    p.archive_bytes = Some(meta.stamp.size);
    match archive_equals_source(archive, archive_name, source, source_shown)? {
        Ok(true) => p.action = Action::Complete,
        Ok(false) => {
            p.action = Action::Conflict;
            p.detail = format!(
                "{} holds different bytes (both kept; compare them and remove the wrong one)",
                path_text(&shown)
            );
        }
        Err(reason) => {
            p.action = Action::Conflict;
            p.detail = format!(
                "{} cannot be read back: {reason} (both kept)",
                path_text(&shown)
            );
        }
    }
    if p.action == Action::Complete && make_durable {
        // The session is deleted on the strength of an archive an earlier run wrote and
        // may not have synced (it stopped in between): file and directory are made
        // durable first.
        archive
            .open_read(archive_name)?
            .sync_all()
            .map_err(|e| Error::io("fsync", &shown, e))?;
        archive.sync()?;
    }
    if p.action == Action::Complete {
        let (sha, valid) = hash_and_check(source, source_shown)?;
        p.sha256 = Some(sha);
        p.valid_json = Some(valid);
    }
    Ok(())
}

/// Reads the source whole once more for its SHA-256 (for the receipt) and JSON validity.
pub(crate) fn hash_and_check(source: &mut File, shown: &Path) -> tmpa_core::Result<(String, bool)> {
    source.rewind().map_err(|e| Error::io("seek", shown, e))?;
    let mut tee = Tee::new(&mut *source, io::sink());
    let valid = json_valid(&mut tee).map_err(|e| Error::io("read", shown, e))?;
    Ok((format!("{:x}", tee.hash.finalize()), valid))
}

/// Streams the source through gzip into a new archive (a temporary in the archive
/// directory, committed without replacing anything), then verifies it from disk.
fn write_new_archive(
    p: &mut Prepared,
    (source, source_shown): (&mut File, &Path),
    archive: Option<&Dir>,
    archive_name: &str,
    opts: Options,
) -> tmpa_core::Result<()> {
    let Some(archive) = archive.filter(|_| !opts.dry_run) else {
        // Dry run: read the session as a real run would (hash, JSON check), write nothing.
        let (sha, valid) = hash_and_check(source, source_shown)?;
        p.sha256 = Some(sha);
        p.valid_json = Some(valid);
        p.action = Action::Archive;
        return Ok(());
    };
    let out = AtomicFile::create_in(archive, OsStr::new(archive_name))?;
    // The archive is as private as the session it holds.
    let mode = Meta::of_fd(&*source)
        .map_err(|e| Error::io("stat", source_shown, e))?
        .mode;
    out.set_mode(mode & 0o777)?;
    let inner_name = archive_name.strip_suffix(".gz").unwrap_or(archive_name);
    let gz = GzBuilder::new()
        .filename(inner_name.as_bytes())
        .mtime(u32::try_from((p.stamp.mtime_ns / 1_000_000_000).max(0)).unwrap_or(0))
        .write(out, Compression::new(opts.level));
    let mut tee = Tee::new(&mut *source, gz);
    // An error here is either reading the session or writing the archive (full disk):
    // name both.
    let valid = json_valid(&mut tee).map_err(|e| {
        archive.error(
            "archive",
            "",
            io::Error::new(
                e.kind(),
                format!("{} into it: {e}", path_text(source_shown)),
            ),
        )
    })?;
    let Tee { hash, out: gz, .. } = tee;
    let out = gz
        .finish()
        .map_err(|e| archive.error("compress", archive_name, e))?;
    p.sha256 = Some(format!("{:x}", hash.finalize()));
    p.valid_json = Some(valid);
    // Rewritten while we read it: nothing is committed, the session is retried next run.
    let now = Meta::of_fd(&*source).map(|m| m.stamp);
    if now.ok() != Some(p.stamp) {
        out.discard()?;
        p.action = Action::Changed;
        p.detail = "changed while being archived (kept; retried next run)".into();
        return Ok(());
    }
    match out.commit_new() {
        Ok(()) => {}
        Err(e) if e.io_kind() == io::ErrorKind::AlreadyExists => {
            p.action = Action::Conflict;
            p.detail = format!(
                "{} appeared while this run was writing it (both kept; the next run compares)",
                path_text(&archive.join(archive_name))
            );
            return Ok(());
        }
        Err(e) => return Err(e),
    }
    let written = archive.stat(archive_name)?.ok_or_else(|| {
        archive.error(
            "stat",
            archive_name,
            io::Error::from(io::ErrorKind::NotFound),
        )
    })?;
    p.written_ino = Some(written.stamp.ino);
    p.archive_bytes = Some(written.stamp.size);
    // Verification: decompress what is on disk and compare with the session's bytes.
    match archive_equals_source(archive, archive_name, source, source_shown)? {
        Ok(true) => p.action = Action::Archive,
        Ok(false) | Err(_) => {
            p.action = Action::VerificationFailed;
            p.detail = format!(
                "verification failed: {} does not decompress to the session's bytes (both kept)",
                path_text(&archive.join(archive_name))
            );
        }
    }
    Ok(())
}

/// Decompresses the archive from disk and compares it with the source from its start.
/// The outer error is an I/O error on the source; the inner one says why the archive
/// cannot be read back (not gzip, truncated, unreadable).
fn archive_equals_source(
    archive: &Dir,
    archive_name: &str,
    source: &mut File,
    source_shown: &Path,
) -> tmpa_core::Result<Result<bool, String>> {
    let file = match archive.open_read(archive_name) {
        Ok(f) => f,
        Err(e) => return Ok(Err(e.chain())),
    };
    source
        .rewind()
        .map_err(|e| Error::io("seek", source_shown, e))?;
    let gz = flate2::read::MultiGzDecoder::new(BufReader::with_capacity(CHUNK_BYTES, file));
    same_bytes(gz, &mut *source).map_err(|e| Error::io("read", source_shown, e))
}

/// Compares two streams byte for byte. An error reading `a` (the archive) is a reason in
/// the inner result; an error reading `b` (the source) is the outer error.
pub(crate) fn same_bytes(a: impl Read, b: impl Read) -> io::Result<Result<bool, String>> {
    let mut a = BufReader::with_capacity(CHUNK_BYTES, a);
    let mut b = BufReader::with_capacity(CHUNK_BYTES, b);
    loop {
        let ab = match io::BufRead::fill_buf(&mut a) {
            Ok(x) => x,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let bb = io::BufRead::fill_buf(&mut b)?;
        if ab.is_empty() || bb.is_empty() {
            return Ok(Ok(ab.is_empty() && bb.is_empty()));
        }
        let n = ab.len().min(bb.len());
        if ab[..n] != bb[..n] {
            return Ok(Ok(false));
        }
        io::BufRead::consume(&mut a, n);
        io::BufRead::consume(&mut b, n);
    }
}

/// Reads the whole of `tee` (so every byte reaches its output and hash) and says whether it
/// was one valid JSON document. Only I/O errors are errors.
pub(crate) fn json_valid<R: Read, W: Write>(tee: &mut Tee<R, W>) -> io::Result<bool> {
    let parsed = {
        let reader = BufReader::with_capacity(CHUNK_BYTES, &mut *tee);
        serde_json::from_reader::<_, IgnoredAny>(reader)
    };
    if let Some(e) = tee.error.take() {
        return Err(e);
    }
    // A parse error stops reading early: the rest must still be archived.
    io::copy(tee, &mut io::sink())?;
    if let Some(e) = tee.error.take() {
        return Err(e);
    }
    Ok(parsed.is_ok())
}

/// A reader that copies everything it reads to `out` and into a SHA-256.
pub(crate) struct Tee<R, W> {
    inner: R,
    pub(crate) out: W,
    pub(crate) hash: Sha256,
    error: Option<io::Error>,
}

impl<R, W> Tee<R, W> {
    pub(crate) fn new(inner: R, out: W) -> Self {
        Tee {
            inner,
            out,
            hash: Sha256::new(),
            error: None,
        }
    }
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf).inspect_err(|e| {
            self.error = Some(io::Error::new(e.kind(), e.to_string()));
        })?;
        self.hash.update(&buf[..n]);
        if let Err(e) = self.out.write_all(&buf[..n]) {
            let kind = e.kind();
            let msg = e.to_string();
            self.error = Some(e);
            return Err(io::Error::new(kind, msg));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bytes_compares_streams_of_any_chunking() {
        let a = vec![7u8; 300_000];
        let mut b = a.clone();
        assert_eq!(same_bytes(&a[..], &b[..]).unwrap(), Ok(true));
        b[299_999] = 8;
        assert_eq!(same_bytes(&a[..], &b[..]).unwrap(), Ok(false));
        assert_eq!(same_bytes(&a[..10], &a[..11]).unwrap(), Ok(false));
        assert_eq!(same_bytes(&[][..], &[][..]).unwrap(), Ok(true));
    }

    #[test]
    fn tee_passes_every_byte_even_after_a_parse_error() {
        let input = b"{\"a\": [1, 2, oops]} and trailing bytes".to_vec();
        let mut out = Vec::new();
        let mut tee = Tee::new(&input[..], &mut out);
        assert!(!json_valid(&mut tee).unwrap());
        drop(tee);
        assert_eq!(out, input);
        let mut out = Vec::new();
        let mut tee = Tee::new(&b"{\"ok\": true}\n"[..], &mut out);
        assert!(json_valid(&mut tee).unwrap());
    }

    #[test]
    fn json_nesting_bomb_is_invalid_not_a_crash() {
        let bomb = "[".repeat(100_000);
        let mut tee = Tee::new(bomb.as_bytes(), io::sink());
        assert!(!json_valid(&mut tee).unwrap());
    }
}
