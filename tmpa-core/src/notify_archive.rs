//! Archived notifications: `notifications/{user}/archive/acked-{n}-{digest}.tar.gz`, one
//! file per batch of acknowledged notifications (tmpa-archive writes them; the library
//! reads them). A gzipped tar: first `index.json` (every notification's id, size,
//! SHA-256 and times, and its ack's), then per notification, in the index's order,
//! `inbox/ntf_{id}.json` and `ack/ntf_{id}.ack` with their exact bytes. `tar tzf` lists
//! it; the library reads it one member at a time, so memory stays bounded by the index
//! and one notification.
//!
//! The name says how many notifications the file holds (`n`, which tmpa-patrol sums
//! without opening it) and the first 16 hex digits of the SHA-256 of its index: the same
//! batch always gets the same name, so a run that was killed before it deleted the
//! sources finds its own archive again and compares instead of writing another.

use std::io::{self, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fs::Dir;
use crate::names::NotificationId;
use crate::text::sha256_hex;

/// Largest notification (and ack) read into memory, live or archived, in bytes.
pub const NOTIFICATION_BYTES_MAX: u64 = 1 << 20;
/// Largest archive file or object, in bytes: a batch holds at most 64 MiB of
/// notifications and acks plus one of each (tmpa-archive's limit), its tar headers
/// (1 KiB a notification, 4096 at most) and its index; gzip at level 0 adds 5 bytes per
/// 64 KiB. An archive in an object store is read whole, so this bounds that read.
pub const NOTIFICATION_ARCHIVE_BYTES_MAX: u64 = 128 << 20;
/// Largest index of an archive, in bytes: bounds what one archive costs to look into.
const INDEX_BYTES_MAX: u64 = 16 << 20;
/// The archive format's version (the index's `format`).
const FORMAT: u32 = 1;
const INDEX_NAME: &str = "index.json";

/// One notification and its ack, as archived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivedNotification {
    /// Its id.
    pub id: NotificationId,
    /// The exact bytes of `inbox/ntf_{id}.json`.
    pub body: Vec<u8>,
    /// Its modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// The exact bytes of `ack/ntf_{id}.ack`.
    pub ack: Vec<u8>,
    /// The ack's modification time (when it was acknowledged), ns since the epoch.
    pub acked_ns: i64,
}

/// What an archive's index says of one notification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// Its id.
    pub id: String,
    /// Size of the notification in bytes.
    pub bytes: u64,
    /// SHA-256 of the notification, lower-case hex.
    pub sha256: String,
    /// Its modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Size of the ack in bytes.
    pub ack_bytes: u64,
    /// SHA-256 of the ack, lower-case hex.
    pub ack_sha256: String,
    /// The ack's modification time, ns since the epoch.
    pub acked_ns: i64,
}

#[derive(Serialize, Deserialize)]
struct Index {
    format: u32,
    notifications: Vec<IndexEntry>,
}

impl ArchivedNotification {
    fn index_entry(&self) -> IndexEntry {
        IndexEntry {
            id: self.id.to_string(),
            bytes: self.body.len() as u64,
            sha256: sha256_hex(&self.body),
            mtime_ns: self.mtime_ns,
            ack_bytes: self.ack.len() as u64,
            ack_sha256: sha256_hex(&self.ack),
            acked_ns: self.acked_ns,
        }
    }
}

fn index_json(batch: &[ArchivedNotification]) -> Vec<u8> {
    entries_json(
        batch
            .iter()
            .map(ArchivedNotification::index_entry)
            .collect(),
    )
}

fn entries_json(notifications: Vec<IndexEntry>) -> Vec<u8> {
    let index = Index {
        format: FORMAT,
        notifications,
    };
    serde_json::to_vec(&index).expect("an index always serializes")
}

/// The file name of the archive of `batch`: `acked-{n}-{16 hex}.tar.gz`.
pub fn archive_name(batch: &[ArchivedNotification]) -> String {
    name_of(batch.len(), &index_json(batch))
}

/// The file name an archive whose index is `index` has: what a reader of the index
/// alone checks the name against (the name's digest is the index's), so that an index
/// read without the rest of the archive is known to be the one its name promises.
pub fn archive_name_of_index(index: &[IndexEntry]) -> String {
    name_of(index.len(), &entries_json(index.to_vec()))
}

fn name_of(n: usize, index_json: &[u8]) -> String {
    let digest = sha256_hex(index_json);
    format!("acked-{n}-{}.tar.gz", &digest[..16])
}

/// How many notifications the archive named `name` holds; `None` when `name` is not an
/// archive's name (a temporary, anything else).
pub fn archive_count(name: &str) -> Option<u64> {
    let rest = name.strip_prefix("acked-")?.strip_suffix(".tar.gz")?;
    let (n, digest) = rest.split_once('-')?;
    let hex = digest.len() == 16 && digest.bytes().all(|b| b.is_ascii_hexdigit());
    n.parse().ok().filter(|_| hex)
}

fn member_names(id: &str) -> (String, String) {
    (format!("inbox/ntf_{id}.json"), format!("ack/ntf_{id}.ack"))
}

/// Writes the archive of `batch` (gzip at `level`, 0 to 9) into `out` and returns it.
/// The bytes depend only on the batch.
///
/// # Errors
/// The writer's I/O error.
pub fn write_archive<W: Write>(
    out: W,
    batch: &[ArchivedNotification],
    level: u32,
) -> io::Result<W> {
    let gz = flate2::GzBuilder::new().write(out, flate2::Compression::new(level));
    // tar writes each 512-byte header and each small member on its own: gzip gets them
    // in large pieces (one deflate call per small write costs a window copy each).
    let mut tar = tar::Builder::new(io::BufWriter::with_capacity(256 << 10, gz));
    tar.mode(tar::HeaderMode::Deterministic);
    append(&mut tar, INDEX_NAME, &index_json(batch), 0)?;
    for n in batch {
        let (body, ack) = member_names(n.id.as_str());
        append(&mut tar, &body, &n.body, n.mtime_ns)?;
        append(&mut tar, &ack, &n.ack, n.acked_ns)?;
    }
    tar.into_inner()?
        .into_inner()
        .map_err(io::IntoInnerError::into_error)?
        .finish()
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    bytes: &[u8],
    mtime_ns: i64,
) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(seconds(mtime_ns));
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, name, bytes)
}

/// Reads the archive `file` (a file, or an object's bytes; shown as `shown` in errors): its index first; then, when
/// `wanted(index)`, its members in order, each checked against the index and handed to
/// `visit` until it returns `false`; when every member was visited, the stream is read
/// to its end, so that the gzip trailer's checksum covers the index too. Memory: the
/// index and one notification. (A lookup of one notification reads and checks only its
/// members, and stops there; an index-only read checks only the index.)
///
/// Returns the index.
///
/// # Errors
/// [`Error::Corrupt`] naming `shown` when it is not an archive of this format, or a
/// member is missing, misnamed, larger than [`NOTIFICATION_BYTES_MAX`] or not what the
/// index says, or, read whole, when another member follows the last or the stream fails
/// its gzip checksum.
pub fn read_archive<R: Read>(
    file: R,
    shown: &Path,
    wanted: impl FnOnce(&[IndexEntry]) -> bool,
    visit: impl FnMut(ArchivedNotification) -> bool,
) -> Result<Vec<IndexEntry>> {
    read_members(file, shown, None, wanted, visit)
}

/// [`read_archive`], reading and checking only the members of `only` when given (the
/// others are passed over unread).
fn read_members<R: Read>(
    file: R,
    shown: &Path,
    only: Option<&str>,
    wanted: impl FnOnce(&[IndexEntry]) -> bool,
    mut visit: impl FnMut(ArchivedNotification) -> bool,
) -> Result<Vec<IndexEntry>> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut entries = archive
        .entries()
        .map_err(|e| corrupt(shown, &e.to_string()))?;
    let (bytes, _) = next_member(&mut entries, shown, INDEX_NAME, INDEX_BYTES_MAX)?;
    let index: Index = serde_json::from_slice(&bytes)
        .map_err(|e| corrupt(shown, &format!("index.json is not valid: {e}")))?;
    if index.format != FORMAT {
        return Err(corrupt(shown, &format!("unknown format {}", index.format)));
    }
    if !wanted(&index.notifications) {
        return Ok(index.notifications);
    }
    for e in &index.notifications {
        let (body_name, ack_name) = member_names(&e.id);
        if only.is_some_and(|id| id != e.id) {
            skip_member(&mut entries, shown, &body_name)?;
            skip_member(&mut entries, shown, &ack_name)?;
            continue;
        }
        let id = NotificationId::new(e.id.as_str())
            .map_err(|_| corrupt(shown, &format!("{:?} is not a notification id", e.id)))?;
        let (body, mtime_s) = next_member(&mut entries, shown, &body_name, NOTIFICATION_BYTES_MAX)?;
        let (ack, acked_s) = next_member(&mut entries, shown, &ack_name, NOTIFICATION_BYTES_MAX)?;
        let n = ArchivedNotification {
            id,
            body,
            mtime_ns: e.mtime_ns,
            ack,
            acked_ns: e.acked_ns,
        };
        // Checked again after reading: the index and the members agree, bytes and times.
        let same = n.index_entry() == *e
            && mtime_s == seconds(e.mtime_ns)
            && acked_s == seconds(e.acked_ns);
        if !same {
            return Err(corrupt(
                shown,
                &format!("{body_name} is not what index.json says"),
            ));
        }
        if !visit(n) {
            // A lookup that found its member: it was checked against the index above.
            return Ok(index.notifications);
        }
    }
    // Read to the end: nothing after the last member the index names, then the gzip
    // trailer, whose CRC-32 and length the decoder checks only at the end of the stream.
    // Without this, damage to index.json's times (which no member's checksum covers)
    // would read as a different batch instead of an error.
    match entries.next() {
        None => {}
        Some(Ok(e)) => {
            return Err(corrupt(
                shown,
                &format!(
                    "holds {} after the last member index.json names",
                    String::from_utf8_lossy(&e.path_bytes())
                ),
            ));
        }
        Some(Err(e)) => return Err(corrupt(shown, &format!("cannot read its end: {e}"))),
    }
    io::copy(&mut archive.into_inner(), &mut io::sink())
        .map_err(|e| corrupt(shown, &format!("cannot read its end: {e}")))?;
    Ok(index.notifications)
}

/// The notification `id` from the archive `file`, when it holds it.
///
/// # Errors
/// As [`read_archive`].
pub fn find_in_archive<R: Read>(
    file: R,
    shown: &Path,
    id: &NotificationId,
) -> Result<Option<ArchivedNotification>> {
    let mut found = None;
    read_members(
        file,
        shown,
        Some(id.as_str()),
        |index| index.iter().any(|e| e.id == id.as_str()),
        |n| {
            if n.id == *id {
                found = Some(n);
                return false;
            }
            true
        },
    )?;
    Ok(found)
}

/// Passes over the next member, which must be `name`, without reading it.
fn skip_member<R: Read>(entries: &mut tar::Entries<'_, R>, shown: &Path, name: &str) -> Result<()> {
    match entries.next() {
        Some(Ok(e)) if &*e.path_bytes() == name.as_bytes() => Ok(()),
        Some(Ok(e)) => Err(corrupt(
            shown,
            &format!(
                "holds {} where {name} belongs",
                String::from_utf8_lossy(&e.path_bytes())
            ),
        )),
        Some(Err(e)) => Err(corrupt(shown, &format!("cannot read {name}: {e}"))),
        None => Err(corrupt(shown, &format!("ends before {name}"))),
    }
}

fn seconds(ns: i64) -> u64 {
    u64::try_from(ns.div_euclid(1_000_000_000)).unwrap_or(0)
}

/// The next member, which must be `name`, read whole if at most `bytes_max` bytes, with
/// its header's mtime in seconds.
fn next_member<R: Read>(
    entries: &mut tar::Entries<'_, R>,
    shown: &Path,
    name: &str,
    bytes_max: u64,
) -> Result<(Vec<u8>, u64)> {
    let mut entry = match entries.next() {
        Some(Ok(e)) => e,
        Some(Err(e)) => return Err(corrupt(shown, &format!("cannot read {name}: {e}"))),
        None => return Err(corrupt(shown, &format!("ends before {name}"))),
    };
    let path = entry.path_bytes().into_owned();
    if path != name.as_bytes() {
        return Err(corrupt(
            shown,
            &format!(
                "holds {} where {name} belongs",
                String::from_utf8_lossy(&path)
            ),
        ));
    }
    if entry.size() > bytes_max {
        return Err(corrupt(
            shown,
            &format!("{name} is larger than {bytes_max} bytes"),
        ));
    }
    let mtime = entry.header().mtime().unwrap_or(u64::MAX);
    let mut out = Vec::with_capacity(usize::try_from(entry.size()).unwrap_or(0));
    (&mut entry)
        .take(bytes_max + 1)
        .read_to_end(&mut out)
        .map_err(|e| corrupt(shown, &format!("cannot read {name}: {e}")))?;
    Ok((out, mtime))
}

fn corrupt(shown: &Path, reason: &str) -> Error {
    Error::Corrupt {
        path: shown.to_path_buf(),
        reason: format!("not a notification archive: {reason}"),
    }
}

/// The archives in `dir` (names `acked-{n}-{digest}.tar.gz`), sorted.
///
/// # Errors
/// [`Error::Io`] naming the directory.
pub fn archive_names(dir: &Dir) -> Result<Vec<String>> {
    Ok(dir
        .names(|n| n.to_str().and_then(archive_count).is_some())?
        .into_iter()
        .filter_map(|n| n.into_string().ok())
        .collect())
}
