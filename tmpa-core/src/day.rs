//! A day of usage events: scanning `token_stats/{day}/`, merging `_compacted.json` with the
//! loose `evt_{id}.json` files, and the `_compacted.json` format.
//!
//! Scanning never stops at a bad file: every file that cannot be used is returned as a
//! [`Problem`] with its path and reason, and the rest of the day is still read. Symlinks
//! are never followed, FIFOs and devices never opened for reading in a way that blocks,
//! and no file larger than its limit is read into memory.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::event::{EVENT_BYTES_MAX, Event, RawEvent, event_file_name, event_id_from_file_name};
use crate::fs::{AtomicFile, Dir, Kind, Meta, Stamp};
use crate::names::{Day, EventId};
use crate::problem::{Problem, ProblemKind};
use crate::root::{Root, rel};

/// Largest `_compacted.json` read, in bytes (about three million events).
pub const COMPACTED_BYTES_MAX: u64 = 1 << 30;
/// Name of the merged events file of a day.
pub const COMPACTED_NAME: &str = "_compacted.json";
/// Name of the summary cache of a day.
pub const SUMMARY_NAME: &str = "_summary.json";

/// The state of a day's `_compacted.json`.
#[derive(Clone, Debug)]
pub enum Compacted {
    /// There is none.
    Absent,
    /// It was read and is valid: its events, in file order (sorted by `ts`, `id`).
    Valid(Vec<Event>),
    /// It exists but cannot be used; it must then be left untouched.
    Corrupt(Problem),
}

impl Root {
    /// The valid events of a day, from `_compacted.json` and loose files, each id once,
    /// sorted by (`ts`, `id`), with every file that could not be used reported.
    ///
    /// When a loose event has the id of a compacted one with other content, the compacted
    /// one is returned and the conflict reported. A day without a directory has no events
    /// (it is not an error).
    ///
    /// # Errors
    /// Only when the day directory itself cannot be opened or listed ([`Error::Io`]), or is
    /// a symlink or not a directory ([`Error::Unsafe`]); every problem with a file inside
    /// is in [`DayRead::problems`].
    ///
    /// # Examples
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// std::fs::create_dir(dir.path().join("token_stats")).unwrap();
    /// let root = tmpa_core::Root::open(dir.path()).unwrap();
    /// let e = tmpa_core::Event::from_json(br#"{"id":"a1","ts":"2026-11-23T10:00:00Z",
    ///   "user_id":"u1","model":"m","prompt_tokens":3,"completion_tokens":4}"#).unwrap();
    /// root.record_event(&e).unwrap();
    /// let day = root.read_day(e.day()).unwrap();
    /// assert_eq!(day.events, vec![e]);
    /// assert!(day.problems.is_empty());
    /// assert!(root.read_day("2020-01-01".parse().unwrap()).unwrap().events.is_empty());
    /// ```
    pub fn read_day(&self, day: Day) -> Result<DayRead> {
        let Some(dir) = self.open_dir_if_any(&rel::day(day))? else {
            return Ok(DayRead {
                events: Vec::new(),
                problems: Vec::new(),
            });
        };
        let names = event_names(&dir)?;
        let (loose, mut problems) = read_all_loose(&dir, &names);
        let compacted = match read_compacted(&dir, day) {
            Compacted::Valid(events) => events,
            Compacted::Absent => Vec::new(),
            Compacted::Corrupt(p) => {
                problems.push(p);
                Vec::new()
            }
        };
        let merged = merge(&compacted, &loose);
        for &i in &merged.conflicts {
            problems.push(conflict_problem_of(&dir, loose[i].id()));
        }
        problems.sort();
        Ok(DayRead {
            events: merged.events.into_iter().cloned().collect(),
            problems,
        })
    }
}

/// The problem reported for the loose event `id` that conflicts with its compacted version.
pub fn conflict_problem_of(dir: &Dir, id: &EventId) -> Problem {
    Problem::new(
        dir.join(event_file_name(id)),
        ProblemKind::Conflict,
        format!("conflict: event {id} is already compacted with different content"),
    )
}

/// The events of a day and the problems met reading it ([`Root::read_day`], which has an
/// example).
///
/// # Not guaranteed
/// A read is not a snapshot of the day as of one instant: an event recorded (or
/// compacted) while the day is being read may or may not be in it, but never twice and
/// never in part.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DayRead {
    /// Valid events, each id once, sorted by (`ts`, `id`).
    pub events: Vec<Event>,
    /// Files that could not be used, with their kind and reason, sorted by path.
    pub problems: Vec<Problem>,
}

/// Whether `name` is a loose event file name (`evt_*.json`).
pub fn is_event_name(name: &OsStr) -> bool {
    let b = name.as_bytes();
    b.starts_with(b"evt_") && b.ends_with(b".json")
}

/// The sorted `evt_*.json` names of a day directory.
///
/// # Errors
/// [`Error::Io`] when the directory cannot be listed.
pub fn event_names(dir: &Dir) -> Result<Vec<OsString>> {
    dir.names(is_event_name)
}

/// The stamps of the entries `names` of `dir` (not following symlinks), in the order
/// given. An entry gone since it was listed is left out: the result describes the
/// directory as it is now.
pub fn stamp_entries(dir: &Dir, names: &[OsString]) -> Vec<(OsString, Stamp)> {
    names
        .iter()
        .filter_map(|n| Some((n.clone(), dir.stat(n).ok()??.stamp)))
        .collect()
}

/// Below this many files a day is read on the calling thread: threads cost more than
/// they save.
const PARALLEL_FILES_MIN: usize = 512;
/// At most this many reader threads: reading small files is syscall- and parse-bound, and
/// more threads than cores only add contention.
const READ_THREADS_MAX: usize = 4;

/// Reads and validates every named loose file, on several threads for large days. The
/// result is in `names` order whatever the threading.
fn read_all_loose(dir: &Dir, names: &[OsString]) -> (Vec<Event>, Vec<Problem>) {
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

fn read_loose_chunk(dir: &Dir, names: &[OsString]) -> (Vec<Event>, Vec<Problem>) {
    let mut loose = Vec::with_capacity(names.len());
    let mut problems = Vec::new();
    for name in names {
        match read_loose(dir, name) {
            Ok(l) => loose.push(l),
            // A file removed since listing (by a concurrent compaction, or the backend):
            // it is simply not part of this scan.
            Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => problems.push(Problem::from_error(&dir.join(name), e)),
        }
    }
    (loose, problems)
}

/// A valid loose event file as compaction reads it: the event not yet made canonical,
/// the SHA-256 of the file's bytes and the stamp of the file read.
#[derive(Clone, Debug)]
pub struct LooseRaw {
    /// The event it holds.
    pub event: RawEvent,
    /// SHA-256 of the file's bytes.
    pub sha256: [u8; 32],
    /// Identity and times of the file that was read (from its descriptor).
    pub stamp: Stamp,
}

/// Reads and validates one loose event file, as the library's reads need it.
///
/// # Errors
/// As [`read_loose_raw`].
fn read_loose(dir: &Dir, name: &OsStr) -> Result<Event> {
    read_valid_loose(dir, name).map(|(event, _, _)| Event::from_raw(event))
}

/// Reads and validates one loose event file as compaction needs it: the event as parsed,
/// the SHA-256 of the file's bytes and the stamp of the file read.
///
/// # Errors
/// [`Error::Corrupt`] naming the file when it is not a valid event of its name; an
/// [`Error::Io`] of kind `NotFound` when it is gone.
pub fn read_loose_raw(dir: &Dir, name: &OsStr) -> Result<LooseRaw> {
    let (event, bytes, meta) = read_valid_loose(dir, name)?;
    // What compaction will keep, checked against the file as read by a comparison that
    // shares nothing with the canonical form but the parser: a file whose value it could
    // not keep exactly is never deleted.
    let as_read = std::str::from_utf8(&bytes).unwrap_or_default();
    let kept = std::str::from_utf8(event.canonical()).unwrap_or_default();
    if !crate::json::same_value(as_read, kept) {
        return Err(Error::Corrupt {
            path: dir.join(name),
            reason: "its canonical form would not hold the same value (kept as it is)".into(),
        });
    }
    Ok(LooseRaw {
        event,
        sha256: Sha256::digest(&bytes).into(),
        stamp: meta.stamp,
    })
}

/// Reads the loose event file `name` and checks that it is a valid event of its name;
/// the event as parsed, the bytes read and their file's metadata.
fn read_valid_loose(dir: &Dir, name: &OsStr) -> Result<(RawEvent, Vec<u8>, Meta)> {
    let corrupt = |reason: String| Error::Corrupt {
        path: dir.join(name),
        reason,
    };
    let text = name
        .to_str()
        .ok_or_else(|| corrupt("file name is not valid UTF-8".into()))?;
    let (bytes, meta) = dir.read(name, EVENT_BYTES_MAX)?;
    let event = RawEvent::from_json(&bytes).map_err(|e| match e {
        Error::InvalidEvent { reason } => corrupt(reason),
        other => other,
    })?;
    let expected = event_id_from_file_name(text).unwrap_or_default();
    if event.id().as_str() != expected {
        return Err(corrupt(format!(
            "id {:?} differs from the file name",
            event.id().as_str()
        )));
    }
    Ok((event, bytes, meta))
}

/// SHA-256 of `bytes` as lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// `bytes` as lower-case hex (a SHA-256 as receipts write it).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Reads and validates the `_compacted.json` of the day directory `dir`.
pub fn read_compacted(dir: &Dir, day: Day) -> Compacted {
    let path = dir.join(COMPACTED_NAME);
    match dir.read(COMPACTED_NAME, COMPACTED_BYTES_MAX) {
        Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => Compacted::Absent,
        Err(e) => Compacted::Corrupt(Problem::from_error(&path, e)),
        Ok((bytes, _)) => match parse_compacted(&bytes, &path, day) {
            Ok(events) => Compacted::Valid(events),
            Err(e) => Compacted::Corrupt(Problem::from_error(&path, e)),
        },
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
    let mut events = Vec::new();
    visit_compacted_slice(bytes, path, day, |e| {
        events.push(Event::from_raw(e));
        Ok::<(), std::convert::Infallible>(())
    })
    .map_err(VisitError::into_file_error)?;
    let mut seen = HashSet::with_capacity(events.len());
    for e in &events {
        if !seen.insert(e.id()) {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                reason: format!("event id {} appears twice", e.id()),
            });
        }
    }
    Ok(events)
}

/// Opens the `_compacted.json` of the day directory `dir` for reading, refusing before
/// reading a byte what the library's day read refuses; `None` when there is none.
///
/// # Errors
/// [`Error::Corrupt`] naming it when it is a symlink, not a regular file or larger than
/// [`COMPACTED_BYTES_MAX`]; [`Error::Io`] when it cannot be opened.
pub fn open_compacted(dir: &Dir) -> Result<Option<(std::fs::File, Meta)>> {
    let path = dir.join(COMPACTED_NAME);
    let corrupt = |reason: String| Error::Corrupt {
        path: path.clone(),
        reason,
    };
    let file = match dir.open_read(COMPACTED_NAME) {
        Ok(f) => f,
        Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(corrupt("is a symlink (not followed)".into()));
        }
        Err(e) => return Err(e),
    };
    let meta = Meta::of_fd(&file).map_err(|e| Error::io("stat", &path, e))?;
    if meta.kind != Kind::File {
        return Err(corrupt("is not a regular file".into()));
    }
    if meta.stamp.size > COMPACTED_BYTES_MAX {
        return Err(corrupt(format!(
            "larger than the limit of {COMPACTED_BYTES_MAX} bytes (not read)"
        )));
    }
    Ok(Some((file, meta)))
}

/// Why a visit of a `_compacted.json` ([`visit_compacted`]) stopped.
#[derive(Debug)]
pub enum VisitError<E> {
    /// The file is not the format ([`Error::Corrupt`] naming it) or could not be read
    /// ([`Error::Io`]).
    File(Error),
    /// The visitor returned this error; the visit stopped there.
    Visitor(E),
}

impl VisitError<std::convert::Infallible> {
    /// The file's error (a visitor that cannot fail leaves no other).
    pub fn into_file_error(self) -> Error {
        match self {
            VisitError::File(e) => e,
            VisitError::Visitor(never) => match never {},
        }
    }
}

/// Streams the events of a `_compacted.json` of `day` read from `reader` through `f`, one
/// at a time and in file order, validating the format as it goes: `format` 1, the `day`,
/// no unknown top-level field, each event valid, events in (`ts`, `id`) order. Memory holds
/// one event at a time, whatever the size of the file. Returns the number of events.
///
/// Whether an id appears twice is the caller's to check (it takes memory per event).
/// Events are passed to `f` before the whole file is known to be valid: a caller acts on
/// them only once the visit returned `Ok`.
///
/// # Errors
/// [`VisitError::File`] with an [`Error::Corrupt`] naming `path` as [`parse_compacted`]
/// says it, or an [`Error::Io`] when reading fails; [`VisitError::Visitor`] when `f`
/// returned an error.
pub fn visit_compacted<R: std::io::Read, E>(
    reader: R,
    path: &Path,
    day: Day,
    f: impl FnMut(RawEvent) -> std::result::Result<(), E>,
) -> std::result::Result<u64, VisitError<E>> {
    let mut read = StashRead {
        inner: reader,
        error: None,
    };
    let result = {
        let mut de = serde_json::Deserializer::from_reader(&mut read);
        visit_with(&mut de, path, day, f)
    };
    match (result, read.error) {
        (Err(VisitError::File(_)), Some(e)) => Err(VisitError::File(Error::io("read", path, e))),
        (r, _) => r,
    }
}

/// [`visit_compacted`] over the bytes of a whole file.
///
/// # Errors
/// As [`visit_compacted`].
pub fn visit_compacted_slice<E>(
    bytes: &[u8],
    path: &Path,
    day: Day,
    f: impl FnMut(RawEvent) -> std::result::Result<(), E>,
) -> std::result::Result<u64, VisitError<E>> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    visit_with(&mut de, path, day, f)
}

fn visit_with<'de, R: serde_json::de::Read<'de>, E>(
    de: &mut serde_json::Deserializer<R>,
    path: &Path,
    day: Day,
    mut f: impl FnMut(RawEvent) -> std::result::Result<(), E>,
) -> std::result::Result<u64, VisitError<E>> {
    use serde::Deserializer as _;
    let corrupt = |reason: String| {
        VisitError::File(Error::Corrupt {
            path: path.to_path_buf(),
            reason,
        })
    };
    let mut visit = Visit {
        f: &mut f,
        day,
        stop: None,
        events: 0,
        last: None,
    };
    let parsed = de
        .deserialize_map(DocVisitor { visit: &mut visit })
        .and_then(|()| de.end());
    match (parsed, visit.stop) {
        (Ok(()), None) => Ok(visit.events),
        (_, Some(Stop::Visitor(e))) => Err(VisitError::Visitor(e)),
        (_, Some(Stop::Format(reason))) => Err(corrupt(reason)),
        (Err(e), None) => Err(corrupt(format!("not a compacted file: {e}"))),
    }
}

/// A reader that keeps its first error, so that an I/O error is reported as one (with
/// its kind) rather than as a JSON syntax error.
struct StashRead<R> {
    inner: R,
    error: Option<std::io::Error>,
}

impl<R: std::io::Read> std::io::Read for StashRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if self.error.is_none() {
                self.error = Some(std::io::Error::new(e.kind(), e.to_string()));
            }
        })
    }
}

/// Why the visit stopped before the parser did.
enum Stop<E> {
    Visitor(E),
    Format(String),
}

struct Visit<'f, F, E> {
    f: &'f mut F,
    day: Day,
    stop: Option<Stop<E>>,
    events: u64,
    /// The (instant, id) of the previous event, for the order check.
    last: Option<((i64, u32), String)>,
}

impl<F: FnMut(RawEvent) -> std::result::Result<(), E>, E> Visit<'_, F, E> {
    /// Checks `format` and `day` as soon as both are known (before the events, in a
    /// canonical file).
    fn check_head(&mut self, format: Option<u32>, day: Option<&str>) -> bool {
        if let Some(format) = format
            && format != 1
        {
            self.stop = Some(Stop::Format(format!("unknown format {format}")));
            return false;
        }
        if let (Some(_), Some(day)) = (format, day)
            && day != self.day.to_string()
        {
            self.stop = Some(Stop::Format(format!(
                "holds day {day:?}, expected {}",
                self.day
            )));
            return false;
        }
        true
    }

    fn event(&mut self, e: RawEvent) -> bool {
        let key = e.instant();
        if let Some((last_key, last_id)) = &mut self.last {
            if (*last_key, last_id.as_str()) > (key, e.id().as_str()) {
                self.stop = Some(Stop::Format(format!(
                    "event #{} is out of (ts, id) order",
                    self.events
                )));
                return false;
            }
            *last_key = key;
            last_id.clear();
            last_id.push_str(e.id().as_str());
        } else {
            self.last = Some((key, e.id().as_str().to_owned()));
        }
        self.events += 1;
        match (self.f)(e) {
            Ok(()) => true,
            Err(err) => {
                self.stop = Some(Stop::Visitor(err));
                false
            }
        }
    }
}

/// `{"format", "day", "events"}`, with events validated and visited as they stream by.
struct DocVisitor<'v, 'f, F, E> {
    visit: &'v mut Visit<'f, F, E>,
}

impl<'de, F: FnMut(RawEvent) -> std::result::Result<(), E>, E> serde::de::Visitor<'de>
    for DocVisitor<'_, '_, F, E>
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object {\"format\", \"day\", \"events\"}")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<(), A::Error> {
        use serde::de::Error as _;
        let stopped = || A::Error::custom("stopped");
        let (mut format, mut day, mut events) = (None::<u32>, None::<String>, false);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "format" => format = Some(map.next_value()?),
                "day" => day = Some(map.next_value()?),
                "events" => {
                    map.next_value_seed(EventsSeed {
                        visit: &mut *self.visit,
                    })?;
                    events = true;
                }
                // Rewriting would drop an unknown field: refuse the file instead.
                other => return Err(A::Error::custom(format!("unknown field {other:?}"))),
            }
            if self.visit.stop.is_some() || !self.visit.check_head(format, day.as_deref()) {
                return Err(stopped());
            }
        }
        format.ok_or_else(|| A::Error::missing_field("format"))?;
        let day = day.ok_or_else(|| A::Error::missing_field("day"))?;
        if !events {
            return Err(A::Error::missing_field("events"));
        }
        if !self.visit.check_head(format, Some(&day)) {
            return Err(stopped());
        }
        Ok(())
    }
}

struct EventsSeed<'v, 'f, F, E> {
    visit: &'v mut Visit<'f, F, E>,
}

impl<'de, F: FnMut(RawEvent) -> std::result::Result<(), E>, E> serde::de::DeserializeSeed<'de>
    for EventsSeed<'_, '_, F, E>
{
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, F: FnMut(RawEvent) -> std::result::Result<(), E>, E> serde::de::Visitor<'de>
    for EventsSeed<'_, '_, F, E>
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of events")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<(), A::Error> {
        use serde::de::Error as _;
        while let Some(v) = seq.next_element::<Box<serde_json::value::RawValue>>()? {
            let e = RawEvent::from_raw_value(&v).map_err(|e| {
                A::Error::custom(format!("event #{}: {}", self.visit.events, e.chain()))
            })?;
            if !self.visit.event(e) {
                return Err(A::Error::custom("stopped"));
            }
        }
        Ok(())
    }
}

/// Writes the canonical `_compacted.json` of a day one event at a time: exactly the bytes
/// [`write_compacted_to`] writes for the same events, without holding them.
///
/// # Examples
/// ```
/// use tmpa_core::maintenance::CompactedWriter;
/// let mut w = CompactedWriter::start(Vec::new(), "2026-11-01".parse().unwrap()).unwrap();
/// w.event(br#"{"id":"a"}"#).unwrap();
/// w.event(br#"{"id":"b"}"#).unwrap();
/// let out = w.finish().unwrap();
/// assert_eq!(out, b"{\"format\":1,\"day\":\"2026-11-01\",\"events\":[\n{\"id\":\"a\"},\n{\"id\":\"b\"}\n]}\n");
/// ```
#[derive(Debug)]
pub struct CompactedWriter<W: Write> {
    out: W,
    events: u64,
}

impl<W: Write> CompactedWriter<W> {
    /// Writes the head of the file.
    ///
    /// # Errors
    /// Whatever `out` returns.
    pub fn start(mut out: W, day: Day) -> std::io::Result<Self> {
        write!(out, "{{\"format\":1,\"day\":\"{day}\",\"events\":[")?;
        Ok(CompactedWriter { out, events: 0 })
    }

    /// Writes the next event's canonical bytes (the caller keeps them in (`ts`, `id`)
    /// order, each id once).
    ///
    /// # Errors
    /// Whatever `out` returns.
    pub fn event(&mut self, canonical: &[u8]) -> std::io::Result<()> {
        self.out
            .write_all(if self.events == 0 { b"\n" } else { b",\n" })?;
        self.out.write_all(canonical)?;
        self.events += 1;
        Ok(())
    }

    /// Events written so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Writes the end of the file and hands back the writer.
    ///
    /// # Errors
    /// Whatever `out` returns.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.out.write_all(b"\n]}\n")?;
        Ok(self.out)
    }
}

/// A writer that compares what is written with what `disk` reads, byte for byte: the
/// verification of a file written, read back from disk. Memory stays constant.
///
/// # Examples
/// ```
/// use std::io::Write;
/// use tmpa_core::maintenance::ReadBack;
/// let mut same = ReadBack::new(&b"abc"[..]);
/// same.write_all(b"ab").unwrap();
/// same.write_all(b"c").unwrap();
/// assert!(same.finish().unwrap());
/// let mut longer = ReadBack::new(&b"abcd"[..]);
/// longer.write_all(b"abc").unwrap();
/// assert!(!longer.finish().unwrap()); // a byte more on disk
/// ```
#[derive(Debug)]
pub struct ReadBack<R> {
    disk: R,
    scratch: Vec<u8>,
    equal: bool,
}

impl<R: std::io::Read> ReadBack<R> {
    /// Compares what will be written with what `disk` holds.
    pub fn new(disk: R) -> ReadBack<R> {
        ReadBack {
            disk,
            scratch: Vec::new(),
            equal: true,
        }
    }

    /// Whether everything written so far was equal and `disk` holds nothing more.
    ///
    /// # Errors
    /// The error reading `disk`.
    pub fn finish(mut self) -> std::io::Result<bool> {
        if !self.equal {
            return Ok(false);
        }
        let mut rest = [0u8; 1];
        Ok(self.disk.read(&mut rest)? == 0)
    }
}

impl<R: std::io::Read> Write for ReadBack<R> {
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
    let mut w = CompactedWriter::start(out, day)?;
    for e in events {
        w.event(e.borrow().json_bytes())?;
    }
    w.finish().map(drop)
}

/// Writes `_compacted.json` of `day` into the day directory `dir` atomically (see
/// [`write_compacted_to`]).
///
/// # Errors
/// [`Error::Io`] naming the path.
pub fn write_compacted<I>(dir: &Dir, day: Day, events: I) -> Result<()>
where
    I: IntoIterator,
    I::Item: Borrow<Event>,
{
    let mut f = AtomicFile::create_in(dir, OsStr::new(COMPACTED_NAME))?;
    write_compacted_to(&mut f, day, events).map_err(|e| Error::io("write", f.tmp_path(), e))?;
    f.commit()
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
pub fn merge<'a>(compacted: &'a [Event], loose: &'a [Event]) -> Merge<'a> {
    let by_id: HashMap<&str, &Event> = compacted.iter().map(|e| (e.id().as_str(), e)).collect();
    let mut m = Merge::default();
    for (i, l) in loose.iter().enumerate() {
        match by_id.get(l.id().as_str()) {
            None => m.added.push(i),
            Some(c) if c.json_bytes() == l.json_bytes() => m.duplicates.push(i),
            Some(_) => m.conflicts.push(i),
        }
    }
    m.events = compacted.iter().collect();
    m.events.extend(m.added.iter().map(|&i| &loose[i]));
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

    /// Whether the `_compacted.json` of `dir` holds exactly the canonical bytes of `day`
    /// with `events`, read back through [`ReadBack`] as compaction verifies it (a missing
    /// or non-regular file is `false`).
    fn compacted_matches(dir: &Dir, day: Day, events: &[Event]) -> Result<bool> {
        let path = dir.join(COMPACTED_NAME);
        let file = match dir.open_read(COMPACTED_NAME) {
            Ok(f) => f,
            Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        if crate::fs::Meta::of_fd(&file).is_ok_and(|m| m.kind != Kind::File) {
            return Ok(false);
        }
        let mut cmp = ReadBack::new(std::io::BufReader::new(file));
        write_compacted_to(&mut cmp, day, events).map_err(|e| Error::io("read", &path, e))?;
        cmp.finish().map_err(|e| Error::io("read", &path, e))
    }

    #[test]
    fn compacted_round_trip_and_byte_verification() {
        let t = tempfile::tempdir().unwrap();
        let dir = Dir::open_path(t.path()).unwrap();
        let path = t.path().join(COMPACTED_NAME);
        let day: Day = "2026-11-01".parse().unwrap();
        let events = vec![
            ev("a", "2026-11-01T01:00:00Z"),
            ev("b", "2026-11-01T02:00:00Z"),
        ];
        write_compacted(&dir, day, &events).unwrap();
        assert!(compacted_matches(&dir, day, &events).unwrap());
        assert_eq!(
            parse_compacted(&std::fs::read(&path).unwrap(), &path, day).unwrap(),
            events
        );
        assert!(
            !compacted_matches(&dir, day, &events[..1]).unwrap(),
            "fewer events"
        );
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() - 3]).unwrap();
        assert!(!compacted_matches(&dir, day, &events).unwrap(), "truncated");
        let mut longer = full.clone();
        longer.push(b' ');
        std::fs::write(&path, &longer).unwrap();
        assert!(
            !compacted_matches(&dir, day, &events).unwrap(),
            "trailing byte"
        );
        std::fs::remove_file(&path).unwrap();
        assert!(!compacted_matches(&dir, day, &events).unwrap(), "missing");
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
