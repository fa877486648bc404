//! A day of usage events: scanning `token_stats/{day}/`, merging `_compacted.json` with the
//! loose `evt_{id}.json` files, and the `_compacted.json` format.
//!
//! Scanning never stops at a bad file: every file that cannot be used is returned as a
//! [`Problem`] with its path and reason, and the rest of the day is still read. Symlinks
//! are never followed, FIFOs and devices never opened for reading in a way that blocks,
//! and no file larger than its limit is read into memory.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
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

/// A file that could not be used, and why.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Problem {
    /// The file concerned.
    pub path: PathBuf,
    /// What is wrong, in words.
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
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
    /// Its path.
    pub path: PathBuf,
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

/// Size and modification time of a file: a cheap fingerprint of a file that is only ever
/// replaced by rename.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    /// Size in bytes.
    pub len: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
}

impl FileStamp {
    /// The stamp of `meta`.
    pub fn of(meta: &fs::Metadata) -> FileStamp {
        FileStamp {
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
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
        let names = list_event_names(&dir)?;
        let compacted = read_compacted(&dir.join(COMPACTED_NAME), day);
        let (loose, mut problems) = read_all_loose(&dir, &names);
        problems.sort();
        Ok(DayScan {
            day,
            dir,
            compacted,
            loose,
            problems,
            event_names: names,
        })
    }

    /// The valid events of a day, from `_compacted.json` and loose files, each id once,
    /// sorted by (`ts`, `id`), with every file that could not be used reported.
    ///
    /// When a loose event has the id of a compacted one with other content, the compacted
    /// one is returned and the conflict reported.
    ///
    /// # Errors
    /// As [`Root::scan_day`].
    pub fn read_day(&self, day: Day) -> Result<DayRead> {
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
            events: merged.events,
            problems,
        })
    }
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
fn read_all_loose(dir: &Path, names: &[OsString]) -> (Vec<LooseEvent>, Vec<Problem>) {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(READ_THREADS_MAX);
    if threads < 2 || names.len() < PARALLEL_FILES_MIN {
        return read_loose_chunk(dir, names);
    }
    let chunk = names.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = names
            .chunks(chunk)
            .map(|part| s.spawn(move || read_loose_chunk(dir, part)))
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

fn read_loose_chunk(dir: &Path, names: &[OsString]) -> (Vec<LooseEvent>, Vec<Problem>) {
    let mut loose = Vec::with_capacity(names.len());
    let mut problems = Vec::new();
    for name in names {
        let path = dir.join(name);
        match read_loose(&path, name) {
            Ok(l) => loose.push(l),
            // A file removed since listing (by a concurrent compaction, or the backend):
            // it is simply not part of this scan.
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => problems.push(Problem::from_error(&path, &e)),
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

#[derive(Deserialize)]
struct CompactedDoc {
    format: u32,
    day: String,
    events: Vec<Value>,
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
/// # Errors
/// [`Error::Corrupt`] naming `path` when it is not the format: wrong `format` or `day`, an
/// invalid event (with its index), an id twice, or events out of order.
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
    let mut events = Vec::with_capacity(doc.events.len());
    let mut seen = HashSet::with_capacity(doc.events.len());
    for (i, v) in doc.events.into_iter().enumerate() {
        let e = Event::from_value(v).map_err(|e| corrupt(format!("event #{i}: {}", e.chain())))?;
        if !seen.insert(e.id().clone()) {
            return Err(corrupt(format!("event id {} appears twice", e.id())));
        }
        if let Some(prev) = events.last()
            && Event::cmp_ts_id(prev, &e).is_gt()
        {
            return Err(corrupt(format!("event #{i} is out of (ts, id) order")));
        }
        events.push(e);
    }
    Ok(events)
}

/// Writes the canonical `_compacted.json` bytes of `day` with `events` (which must be
/// sorted by (`ts`, `id`) with unique ids) to `out`: one event a line, keys sorted, so the
/// same set of events always gives the same bytes.
///
/// # Errors
/// Whatever `out` returns.
pub fn write_compacted_to(out: &mut impl Write, day: Day, events: &[Event]) -> std::io::Result<()> {
    debug_assert!(events.windows(2).all(|w| w[0].cmp_ts_id(&w[1]).is_lt()));
    write!(out, "{{\"format\":1,\"day\":\"{day}\",\"events\":[")?;
    for (i, e) in events.iter().enumerate() {
        out.write_all(if i == 0 { b"\n" } else { b",\n" })?;
        serde_json::to_writer(&mut *out, e.as_map())?;
    }
    out.write_all(b"\n]}\n")
}

/// Writes `_compacted.json` of `day` atomically (see [`write_compacted_to`]).
///
/// # Errors
/// [`Error::Io`] naming the path.
pub fn write_compacted(path: &Path, day: Day, events: &[Event]) -> Result<()> {
    let mut f = AtomicFile::create(path)?;
    write_compacted_to(&mut f, day, events).map_err(|e| Error::io("write", f.tmp_path(), e))?;
    f.commit()
}

/// The result of merging compacted and loose events.
#[derive(Clone, Debug, Default)]
pub struct Merge {
    /// All events, each id once, sorted by (`ts`, `id`).
    pub events: Vec<Event>,
    /// Indexes (into the loose slice) of events that were not compacted yet.
    pub added: Vec<usize>,
    /// Indexes of loose events already compacted with the same content.
    pub duplicates: Vec<usize>,
    /// Indexes of loose events already compacted with other content.
    pub conflicts: Vec<usize>,
}

/// Merges a day's compacted events with its valid loose events. Never loses one: a
/// conflicting loose event is left out of `events` but listed in `conflicts`.
pub fn merge(compacted: &[Event], loose: &[LooseEvent]) -> Merge {
    let by_id: HashMap<&str, &Event> = compacted.iter().map(|e| (e.id().as_str(), e)).collect();
    let mut m = Merge::default();
    for (i, l) in loose.iter().enumerate() {
        match by_id.get(l.event.id().as_str()) {
            None => m.added.push(i),
            Some(c) if c.as_map() == l.event.as_map() => m.duplicates.push(i),
            Some(_) => m.conflicts.push(i),
        }
    }
    m.events = compacted.to_vec();
    m.events
        .extend(m.added.iter().map(|&i| loose[i].event.clone()));
    m.events.sort_by(Event::cmp_ts_id);
    m
}
