//! The `_compacted.json` format (docs/FORMAT.md "The tree"): reading it whole or as a
//! stream of raw events in constant memory, writing it canonically, and comparing a
//! written file with what it should hold (`ReadBack`) without holding either. The day
//! read (`day.rs`) and tmpa-compact build on it.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fmt;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::event::{Event, RawEvent};
use crate::fs::{AtomicFile, Dir, Kind, Meta};
use crate::names::Day;
use crate::problem::Problem;

/// Largest `_compacted.json` read, in bytes (about three million events).
pub const COMPACTED_BYTES_MAX: u64 = 1 << 30;
/// Name of the merged events file of a day.
pub const COMPACTED_NAME: &str = "_compacted.json";
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
