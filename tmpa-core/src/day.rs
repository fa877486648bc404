//! A day of usage events: scanning `token_stats/{day}/`, merging `_compacted.json` with the
//! loose `evt_{id}.json` files, and the `_compacted.json` format.
//!
//! Scanning never stops at a bad file: every file that cannot be used is returned as a
//! [`Problem`] with its path and reason, and the rest of the day is still read. Symlinks
//! are never followed, FIFOs and devices never opened for reading in a way that blocks,
//! and no file larger than its limit is read into memory.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::atomic::AtomicFile;
use crate::error::{Error, Result};
use crate::event::{Event, event_id_from_file_name};
use crate::names::Day;
use crate::root::{Root, read_bounded, read_bounded_with_meta};

/// Largest loose event file read, in bytes. Real events are a few hundred bytes.
pub const EVENT_BYTES_MAX: u64 = 1 << 20;
/// Largest `_compacted.json` read, in bytes (about three million events).
pub const COMPACTED_BYTES_MAX: u64 = 1 << 30;
/// Name of the merged events file of a day.
pub const COMPACTED_NAME: &str = "_compacted.json";
/// Name of the summary cache of a day.
pub const SUMMARY_NAME: &str = "_summary.json";

/// A path as text for logs and JSON: as it is when it is UTF-8 without control
/// characters, else quoted and escaped (`"evt_\xFF.json"`, `"a\nb"`), so that one
/// problem is always one line and every report serializes.
///
/// # Examples
/// ```
/// use std::path::Path;
/// use tmpa_core::day::path_text;
/// assert_eq!(path_text(Path::new("/a/evt_1.json")), "/a/evt_1.json");
/// assert_eq!(path_text(Path::new("/a/b\nc")), "\"/a/b\\nc\"");
/// ```
pub fn path_text(path: &Path) -> String {
    match path.to_str() {
        Some(s) if !s.chars().any(char::is_control) => s.to_owned(),
        _ => format!("{path:?}"),
    }
}

/// Serializes a path with [`path_text`] (serde refuses paths that are not UTF-8).
///
/// # Errors
/// Whatever the serializer returns for a string.
pub fn serialize_path<S: serde::Serializer>(
    path: &Path,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&path_text(path))
}

/// A file that could not be used, and why.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Problem {
    /// The file concerned.
    #[serde(serialize_with = "serialize_path")]
    pub path: PathBuf,
    /// What is wrong, in words.
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", path_text(&self.path), self.reason)
    }
}

impl Problem {
    fn from_error(path: &Path, e: &Error) -> Problem {
        let reason = match e {
            Error::Corrupt { reason, .. } => reason.clone(),
            Error::InvalidEvent { reason } => reason.clone(),
            other => other.chain(),
        };
        Problem {
            path: path.to_path_buf(),
            reason,
        }
    }
}

/// A valid loose event file.
#[derive(Clone, Debug)]
pub struct LooseEvent {
    /// Its path, as shown in reports.
    pub path: PathBuf,
    /// Its file name.
    pub name: OsString,
    /// The event it holds.
    pub event: Event,
    /// SHA-256 of the file's bytes, lower-case hex.
    pub sha256: String,
    /// Size of the file in bytes.
    pub bytes: u64,
    /// Inode number (deleting in inode order is measurably faster on ext4).
    pub ino: u64,
}

/// The state of a day's `_compacted.json`.
#[derive(Clone, Debug)]
pub enum Compacted {
    /// There is none.
    Absent,
    /// It was read and is valid.
    Valid {
        /// Its events, in file order (sorted by `ts`, `id`).
        events: Vec<Event>,
        /// Its stamp (size and mtime), for the summary's consistency check.
        stamp: FileStamp,
    },
    /// It exists but cannot be used; it must then be left untouched.
    Corrupt(Problem),
}

/// Inode, size and modification time of a file: a cheap fingerprint that changes when the
/// file is replaced by rename (new inode) or rewritten in place (size or mtime).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    /// Inode number.
    pub ino: u64,
    /// Size in bytes.
    pub len: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
}

impl FileStamp {
    /// The stamp of `meta`.
    pub fn of(meta: &fs::Metadata) -> FileStamp {
        FileStamp {
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

/// The stamps of the entries `names` of `dir` (without following symlinks), in the order
/// given. An entry gone since it was listed is left out: the result describes the
/// directory as it is now.
pub fn stamp_entries(dir: &Path, names: &[OsString]) -> Vec<(OsString, FileStamp)> {
    names
        .iter()
        .filter_map(|n| {
            let m = fs::symlink_metadata(dir.join(n)).ok()?;
            Some((n.clone(), FileStamp::of(&m)))
        })
        .collect()
}

/// Everything found in one day directory.
#[derive(Clone, Debug)]
pub struct DayScan {
    /// The day.
    pub day: Day,
    /// `token_stats/{day}`.
    pub dir: PathBuf,
    /// `_compacted.json`.
    pub compacted: Compacted,
    /// The valid loose events, sorted by file name.
    pub loose: Vec<LooseEvent>,
    /// Loose files that cannot be used (corrupt, odd names, symlinks), sorted by path.
    pub problems: Vec<Problem>,
    /// Names of every `evt_*.json` entry seen (valid or not), sorted.
    pub event_names: Vec<OsString>,
}

impl Root {
    /// Scans one day directory: reads `_compacted.json` and every loose event.
    ///
    /// # Errors
    /// Only when the day directory itself cannot be listed or is a symlink
    /// ([`Error::Unsafe`]); every problem with a file inside is in
    /// [`DayScan::problems`] or [`Compacted::Corrupt`].
    pub fn scan_day(&self, day: Day) -> Result<DayScan> {
        let dir = self.day_dir(day);
        check_real_dir(&dir)?;
        scan_dir(day, &dir, &dir)
    }

    /// The valid events of a day, from `_compacted.json` and loose files, each id once,
    /// sorted by (`ts`, `id`), with every file that could not be used reported.
    ///
    /// When a loose event has the id of a compacted one with other content, the compacted
    /// one is returned and the conflict reported.
    ///
    /// A day without a directory has no events (it is not an error).
    ///
    /// # Errors
    /// As [`Root::scan_day`], but a missing day directory is an empty day.
    pub fn read_day(&self, day: Day) -> Result<DayRead> {
        if self.day_missing(day) {
            return Ok(DayRead {
                events: Vec::new(),
                problems: Vec::new(),
            });
        }
        let scan = self.scan_day(day)?;
        let mut problems = scan.problems.clone();
        let compacted: &[Event] = match &scan.compacted {
            Compacted::Valid { events, .. } => events,
            Compacted::Absent => &[],
            Compacted::Corrupt(p) => {
                problems.push(p.clone());
                &[]
            }
        };
        let merged = merge(compacted, &scan.loose);
        for &i in &merged.conflicts {
            problems.push(conflict_problem(&scan.loose[i]));
        }
        problems.sort();
        Ok(DayRead {
            events: merged.events.into_iter().cloned().collect(),
            problems,
        })
    }
}

impl Root {
    /// Whether the day has no directory at all (nothing was ever recorded for it).
    pub(crate) fn day_missing(&self, day: Day) -> bool {
        fs::symlink_metadata(self.day_dir(day))
            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Scans a day directory reached through `op_dir` (an ordinary path, or a
/// [`DirHandle`](crate::dirfd::DirHandle)'s operational path), reporting every path
/// under `shown_dir`. The caller has made sure `op_dir` is a real directory.
///
/// # Errors
/// [`Error::Io`] when the directory cannot be listed.
pub fn scan_dir(day: Day, op_dir: &Path, shown_dir: &Path) -> Result<DayScan> {
    let names = read_event_names(op_dir).map_err(|e| match e {
        Error::Io { op, source, .. } => Error::Io {
            op,
            path: shown_dir.to_path_buf(),
            source,
        },
        other => other,
    })?;
    let compacted = match read_compacted(&op_dir.join(COMPACTED_NAME), day) {
        Compacted::Corrupt(p) => Compacted::Corrupt(Problem {
            path: shown_dir.join(COMPACTED_NAME),
            reason: shown(&p.reason, op_dir, shown_dir),
        }),
        other => other,
    };
    let (loose, mut problems) = read_all_loose(op_dir, shown_dir, &names);
    problems.sort();
    Ok(DayScan {
        day,
        dir: shown_dir.to_path_buf(),
        compacted,
        loose,
        problems,
        event_names: names,
    })
}

/// `message` with the operational directory replaced by the one shown in reports.
fn shown(message: &str, op_dir: &Path, shown_dir: &Path) -> String {
    if op_dir == shown_dir {
        return message.to_owned();
    }
    message.replace(&*op_dir.to_string_lossy(), &shown_dir.to_string_lossy())
}

/// The problem reported for a loose event that conflicts with its compacted version.
pub fn conflict_problem(l: &LooseEvent) -> Problem {
    Problem {
        path: l.path.clone(),
        reason: format!(
            "conflict: event {} is already compacted with different content",
            l.event.id()
        ),
    }
}

/// The events of a day and the problems met reading it.
#[derive(Clone, Debug)]
pub struct DayRead {
    /// Valid events, each id once, sorted by (`ts`, `id`).
    pub events: Vec<Event>,
    /// Files that could not be used, with reasons.
    pub problems: Vec<Problem>,
}

/// Lists the `evt_*.json` entries of a day directory, sorted, refusing a symlinked directory.
///
/// # Errors
/// [`Error::Unsafe`] if `dir` is a symlink or not a directory, [`Error::Io`] if it cannot
/// be listed.
pub fn list_event_names(dir: &Path) -> Result<Vec<OsString>> {
    check_real_dir(dir)?;
    read_event_names(dir)
}

/// Refuses a path that is a symlink or not a directory.
fn check_real_dir(dir: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(dir).map_err(|e| Error::io("stat", dir, e))?;
    if meta.file_type().is_symlink() {
        return Err(Error::Unsafe {
            path: dir.to_path_buf(),
            reason: "is a symlink (not followed)",
        });
    }
    if !meta.is_dir() {
        return Err(Error::Unsafe {
            path: dir.to_path_buf(),
            reason: "is not a directory",
        });
    }
    Ok(())
}

/// The sorted `evt_*.json` names in `dir` (no check of `dir` itself).
///
/// # Errors
/// [`Error::Io`] when `dir` cannot be listed.
pub fn read_event_names(dir: &Path) -> Result<Vec<OsString>> {
    let rd = fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let name = entry.file_name();
        let b = name.as_bytes();
        if b.starts_with(b"evt_") && b.ends_with(b".json") {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Below this many files a day is read on the calling thread: threads cost more than
/// they save.
const PARALLEL_FILES_MIN: usize = 512;
/// At most this many reader threads: reading small files is syscall- and parse-bound, and
/// more threads than cores only add contention.
const READ_THREADS_MAX: usize = 4;

/// Reads and validates every named loose file, on several threads for large days. The
/// result is in `names` order whatever the threading.
fn read_all_loose(
    dir: &Path,
    shown_dir: &Path,
    names: &[OsString],
) -> (Vec<LooseEvent>, Vec<Problem>) {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(READ_THREADS_MAX);
    if threads < 2 || names.len() < PARALLEL_FILES_MIN {
        return read_loose_chunk(dir, shown_dir, names);
    }
    let chunk = names.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = names
            .chunks(chunk)
            .map(|part| s.spawn(move || read_loose_chunk(dir, shown_dir, part)))
            .collect();
        let mut loose = Vec::with_capacity(names.len());
        let mut problems = Vec::new();
        for h in handles {
            let (l, p) = h.join().expect("a reader thread panicked");
            loose.extend(l);
            problems.extend(p);
        }
        (loose, problems)
    })
}

fn read_loose_chunk(
    dir: &Path,
    shown_dir: &Path,
    names: &[OsString],
) -> (Vec<LooseEvent>, Vec<Problem>) {
    let mut loose = Vec::with_capacity(names.len());
    let mut problems = Vec::new();
    for name in names {
        let path = dir.join(name);
        match read_loose(&path, name) {
            Ok(mut l) => {
                l.path = shown_dir.join(name);
                loose.push(l);
            }
            // A file removed since listing (by a concurrent compaction, or the backend):
            // it is simply not part of this scan.
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                let p = Problem::from_error(&path, &e);
                problems.push(Problem {
                    path: shown_dir.join(name),
                    reason: shown(&p.reason, dir, shown_dir),
                });
            }
        }
    }
    (loose, problems)
}

fn read_loose(path: &Path, name: &std::ffi::OsStr) -> Result<LooseEvent> {
    let corrupt = |reason: String| Error::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let name = name
        .to_str()
        .ok_or_else(|| corrupt("file name is not valid UTF-8".into()))?;
    let (bytes, meta) = read_bounded_with_meta(path, EVENT_BYTES_MAX)?;
    let event = Event::from_json(&bytes)?;
    let expected = event_id_from_file_name(name).unwrap_or_default();
    if event.id().as_str() != expected {
        return Err(corrupt(format!(
            "id {:?} differs from the file name",
            event.id().as_str()
        )));
    }
    Ok(LooseEvent {
        path: path.to_path_buf(),
        name: OsString::from(name),
        event,
        sha256: sha256_hex(&bytes),
        bytes: bytes.len() as u64,
        ino: meta.ino(),
    })
}

/// SHA-256 of `bytes` as lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Reads and validates a `_compacted.json`.
pub fn read_compacted(path: &Path, day: Day) -> Compacted {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Compacted::Absent,
        Err(e) => {
            return Compacted::Corrupt(Problem::from_error(path, &Error::io("stat", path, e)));
        }
    };
    let stamp = FileStamp::of(&meta);
    match read_bounded(path, COMPACTED_BYTES_MAX).and_then(|b| parse_compacted(&b, path, day)) {
        Ok(events) => Compacted::Valid { events, stamp },
        Err(e) => Compacted::Corrupt(Problem::from_error(path, &e)),
    }
}

/// Parses and validates the bytes of a `_compacted.json` of `day`.
///
/// Events are parsed one at a time, so memory holds the validated events (about their
/// size in bytes) and never the JSON tree of the whole file.
///
/// # Errors
/// [`Error::Corrupt`] naming `path` when it is not the format: wrong `format` or `day`, an
/// unknown top-level field, an invalid event (with its index), an id twice, or events out
/// of order.
pub fn parse_compacted(bytes: &[u8], path: &Path, day: Day) -> Result<Vec<Event>> {
    let corrupt = |reason: String| Error::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let doc: CompactedDoc =
        serde_json::from_slice(bytes).map_err(|e| corrupt(format!("not a compacted file: {e}")))?;
    if doc.format != 1 {
        return Err(corrupt(format!("unknown format {}", doc.format)));
    }
    if doc.day != day.to_string() {
        return Err(corrupt(format!("holds day {:?}, expected {day}", doc.day)));
    }
    let events = doc.events;
    let mut seen = HashSet::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        if !seen.insert(e.id()) {
            return Err(corrupt(format!("event id {} appears twice", e.id())));
        }
        if i > 0 && events[i - 1].cmp_ts_id(e).is_gt() {
            return Err(corrupt(format!("event #{i} is out of (ts, id) order")));
        }
    }
    Ok(events)
}

/// `{"format", "day", "events"}`, with events validated as they stream by.
struct CompactedDoc {
    format: u32,
    day: String,
    events: Vec<Event>,
}

impl<'de> serde::Deserialize<'de> for CompactedDoc {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_map(DocVisitor)
    }
}

struct DocVisitor;

impl<'de> serde::de::Visitor<'de> for DocVisitor {
    type Value = CompactedDoc;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object {\"format\", \"day\", \"events\"}")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<CompactedDoc, A::Error> {
        use serde::de::Error as _;
        let (mut format, mut day, mut events) = (None, None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "format" => format = Some(map.next_value()?),
                "day" => day = Some(map.next_value()?),
                "events" => events = Some(map.next_value::<EventList>()?.0),
                // Rewriting would drop an unknown field: refuse the file instead.
                other => return Err(A::Error::custom(format!("unknown field {other:?}"))),
            }
        }
        Ok(CompactedDoc {
            format: format.ok_or_else(|| A::Error::missing_field("format"))?,
            day: day.ok_or_else(|| A::Error::missing_field("day"))?,
            events: events.ok_or_else(|| A::Error::missing_field("events"))?,
        })
    }
}

struct EventList(Vec<Event>);

impl<'de> serde::Deserialize<'de> for EventList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_seq(EventListVisitor)
    }
}

struct EventListVisitor;

impl<'de> serde::de::Visitor<'de> for EventListVisitor {
    type Value = EventList;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of events")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<EventList, A::Error> {
        use serde::de::Error as _;
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(v) = seq.next_element::<Value>()? {
            let e = Event::from_value(v)
                .map_err(|e| A::Error::custom(format!("event #{}: {}", out.len(), e.chain())))?;
            out.push(e);
        }
        Ok(EventList(out))
    }
}

/// Writes the canonical `_compacted.json` bytes of `day` with `events` (which must be
/// sorted by (`ts`, `id`) with unique ids) to `out`: one event a line, keys sorted, so the
/// same set of events always gives the same bytes.
///
/// # Errors
/// Whatever `out` returns.
pub fn write_compacted_to<I>(out: &mut impl Write, day: Day, events: I) -> std::io::Result<()>
where
    I: IntoIterator,
    I::Item: Borrow<Event>,
{
    write!(out, "{{\"format\":1,\"day\":\"{day}\",\"events\":[")?;
    for (i, e) in events.into_iter().enumerate() {
        out.write_all(if i == 0 { b"\n" } else { b",\n" })?;
        out.write_all(e.borrow().json_bytes())?;
    }
    out.write_all(b"\n]}\n")
}

/// Writes `_compacted.json` of `day` atomically (see [`write_compacted_to`]).
///
/// # Errors
/// [`Error::Io`] naming the path.
pub fn write_compacted<I>(path: &Path, day: Day, events: I) -> Result<()>
where
    I: IntoIterator,
    I::Item: Borrow<Event>,
{
    let mut f = AtomicFile::create(path)?;
    write_compacted_to(&mut f, day, events).map_err(|e| Error::io("write", f.tmp_path(), e))?;
    f.commit()
}

/// Whether the file at `path` holds exactly the canonical `_compacted.json` bytes of `day`
/// with `events`. Streams both sides: memory stays constant whatever the size.
///
/// This is the verification before deletion: the file is read back from disk (through
/// the page cache, after the fsync of [`write_compacted`]) and compared byte for byte
/// with what the events serialize to.
///
/// # Errors
/// [`Error::Io`] when the file cannot be opened or read (a missing file is `Ok(false)`).
pub fn compacted_matches<I>(path: &Path, day: Day, events: I) -> Result<bool>
where
    I: IntoIterator,
    I::Item: Borrow<Event>,
{
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = match fs::File::options()
        .read(true)
        .custom_flags(crate::atomic::nofollow_flags())
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let mut cmp = CompareWriter {
        disk: std::io::BufReader::with_capacity(256 * 1024, file),
        scratch: Vec::new(),
        equal: true,
    };
    write_compacted_to(&mut cmp, day, events).map_err(|e| Error::io("read", path, e))?;
    let mut rest = [0u8; 1];
    let at_end =
        std::io::Read::read(&mut cmp.disk, &mut rest).map_err(|e| Error::io("read", path, e))? == 0;
    Ok(cmp.equal && at_end)
}

/// A writer that compares what is written with what a reader holds.
struct CompareWriter<R> {
    disk: R,
    scratch: Vec<u8>,
    equal: bool,
}

impl<R: std::io::Read> Write for CompareWriter<R> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.equal {
            self.scratch.resize(buf.len(), 0);
            match self.disk.read_exact(&mut self.scratch) {
                Ok(()) => self.equal = self.scratch == buf,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => self.equal = false,
                Err(e) => return Err(e),
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The result of merging compacted and loose events.
#[derive(Clone, Debug, Default)]
pub struct Merge<'a> {
    /// All events, each id once, sorted by (`ts`, `id`).
    pub events: Vec<&'a Event>,
    /// Indexes (into the loose slice) of events that were not compacted yet.
    pub added: Vec<usize>,
    /// Indexes of loose events already compacted with the same content.
    pub duplicates: Vec<usize>,
    /// Indexes of loose events already compacted with other content.
    pub conflicts: Vec<usize>,
}

/// Merges a day's compacted events with its valid loose events. Never loses one: a
/// conflicting loose event is left out of `events` but listed in `conflicts`.
pub fn merge<'a>(compacted: &'a [Event], loose: &'a [LooseEvent]) -> Merge<'a> {
    let by_id: HashMap<&str, &Event> = compacted.iter().map(|e| (e.id().as_str(), e)).collect();
    let mut m = Merge::default();
    for (i, l) in loose.iter().enumerate() {
        match by_id.get(l.event.id().as_str()) {
            None => m.added.push(i),
            Some(c) if c.json_bytes() == l.event.json_bytes() => m.duplicates.push(i),
            Some(_) => m.conflicts.push(i),
        }
    }
    m.events = compacted.iter().collect();
    m.events.extend(m.added.iter().map(|&i| &loose[i].event));
    m.events.sort_by(|a, b| a.cmp_ts_id(b));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str, ts: &str) -> Event {
        Event::from_json(
            format!(
                r#"{{"id":"{id}","ts":"{ts}","user_id":"u","model":"m","prompt_tokens":1,"completion_tokens":2,"x":[1.5,{{"b":1,"a":2}}]}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn compacted_round_trip_and_byte_verification() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(COMPACTED_NAME);
        let day: Day = "2026-11-01".parse().unwrap();
        let events = vec![
            ev("a", "2026-11-01T01:00:00Z"),
            ev("b", "2026-11-01T02:00:00Z"),
        ];
        write_compacted(&path, day, &events).unwrap();
        assert!(compacted_matches(&path, day, &events).unwrap());
        assert_eq!(
            parse_compacted(&fs::read(&path).unwrap(), &path, day).unwrap(),
            events
        );
        assert!(
            !compacted_matches(&path, day, &events[..1]).unwrap(),
            "fewer events"
        );
        let full = fs::read(&path).unwrap();
        fs::write(&path, &full[..full.len() - 3]).unwrap();
        assert!(
            !compacted_matches(&path, day, &events).unwrap(),
            "truncated"
        );
        let mut longer = full.clone();
        longer.push(b' ');
        fs::write(&path, &longer).unwrap();
        assert!(
            !compacted_matches(&path, day, &events).unwrap(),
            "trailing byte"
        );
        fs::remove_file(&path).unwrap();
        assert!(!compacted_matches(&path, day, &events).unwrap(), "missing");
    }

    #[test]
    fn parse_compacted_refuses_what_it_cannot_rewrite_faithfully() {
        let p = Path::new("/x/_compacted.json");
        let day: Day = "2026-11-01".parse().unwrap();
        let e = String::from_utf8(ev("a", "2026-11-01T01:00:00Z").json_bytes().to_vec()).unwrap();
        for (doc, why) in [
            (
                format!(r#"{{"format":1,"day":"2026-11-01","events":[{e}],"extra":1}}"#),
                "unknown field",
            ),
            (
                format!(r#"{{"format":2,"day":"2026-11-01","events":[{e}]}}"#),
                "unknown format",
            ),
            (
                format!(r#"{{"format":1,"day":"2026-11-02","events":[{e}]}}"#),
                "holds day",
            ),
            (
                format!(r#"{{"format":1,"day":"2026-11-01","events":[{e},{e}]}}"#),
                "appears twice",
            ),
            (
                r#"{"format":1,"day":"2026-11-01","events":[{"id":"a"}]}"#.to_owned(),
                "event #0",
            ),
            (
                r#"{"format":1,"day":"2026-11-01"}"#.to_owned(),
                "missing field",
            ),
        ] {
            let err = parse_compacted(doc.as_bytes(), p, day)
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{why}: {err}");
        }
    }
}
