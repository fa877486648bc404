//! The `_compacted.json` format (docs/FORMAT.md "`_compacted.json`"): reading it whole or
//! as a stream of raw events in constant memory, writing it canonically, and comparing a
//! written file with what it should hold (`ReadBack`) without holding either. The day
//! read (`day.rs`) and tmpa-compact build on it.
//!
//! **Checksums.** Format 2 (what [`CompactedWriter`] writes) ends with `"crc32c"`: the
//! CRC-32C of each event's canonical JSON, eight hex digits an event, in file order. Every
//! read checks every event against it, so a damaged byte anywhere in an event (a digit of
//! a count, a letter of a user id, a quote) is an error, never a different number. A
//! damaged file is refused whole by the strict readers ([`visit_compacted`],
//! [`parse_compacted`]); [`salvage_compacted`] reads it line by line instead, keeping every
//! event whose line still matches its checksum and naming each line that does not.
//! Format 1 (files written before) has no checksums and still reads.

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
use crate::problem::{Problem, ProblemKind};

/// Largest `_compacted.json` read, in bytes (about three million events).
pub const COMPACTED_BYTES_MAX: u64 = 1 << 30;
/// Name of the merged events file of a day.
pub const COMPACTED_NAME: &str = "_compacted.json";
/// The format [`CompactedWriter`] writes: 2, with a checksum per event. Format 1 (no
/// checksums) still reads.
pub const COMPACTED_FORMAT: u32 = 2;
/// How far ahead in the checksum table [`salvage_compacted`] looks for the checksum of a
/// line whose predecessors were damaged (lines lost or split): far enough for a damaged
/// block of the disk, near enough that a chance match (one in 2^32 per entry) stays rare.
const SALVAGE_WINDOW: usize = 4096;

/// The CRC-32C of an event's canonical JSON: its entry in a format 2 file's `"crc32c"`.
pub fn event_crc(canonical: &[u8]) -> u32 {
    // CRC-32/ISCSI is CRC-32C (Castagnoli); the value fits 32 bits.
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, canonical) as u32
}

/// The state of a day's `_compacted.json`.
#[derive(Clone, Debug)]
pub enum Compacted {
    /// There is none.
    Absent,
    /// It was read and is valid: its events, in file order (sorted by `ts`, `id`).
    Valid(Vec<Event>),
    /// It is damaged: the events that could be trusted (read line by line, each against
    /// its checksum), and a problem for each line that could not, and for what was lost.
    /// It must be left untouched.
    Damaged(Salvaged),
    /// It exists but cannot be used at all (not a regular file, unreadable); it must then
    /// be left untouched.
    Corrupt(Problem),
}

/// Reads and validates the `_compacted.json` of the day directory `dir`: strictly, and line
/// by line ([`salvage_compacted`]) when that fails.
pub fn read_compacted(dir: &Dir, day: Day) -> Compacted {
    let path = dir.join(COMPACTED_NAME);
    match dir.read(COMPACTED_NAME, COMPACTED_BYTES_MAX) {
        Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => Compacted::Absent,
        Err(e) => Compacted::Corrupt(Problem::from_error(&path, e)),
        Ok((bytes, _)) => match parse_compacted(&bytes, &path, day) {
            Ok(events) => Compacted::Valid(events),
            Err(strict) => Compacted::Damaged(salvage_compacted(&bytes, &path, day, strict)),
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
        crcs: Vec::new(),
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
    /// The checksum of each event read, for the table of a format 2 file (4 bytes an
    /// event).
    crcs: Vec<u32>,
}

impl<F: FnMut(RawEvent) -> std::result::Result<(), E>, E> Visit<'_, F, E> {
    /// Checks `format` and `day` as soon as both are known (before the events, in a
    /// canonical file).
    fn check_head(&mut self, format: Option<u32>, day: Option<&str>) -> bool {
        if let Some(format) = format
            && format != 1
            && format != COMPACTED_FORMAT
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

    /// Checks every event read against the checksum table (`"crc32c"`) of a format 2
    /// file; a format 1 file has none.
    fn check_table(&mut self, format: u32, table: Option<&str>) -> bool {
        let reason = match (format, table) {
            (1, None) => return true,
            (1, Some(_)) => "a format 1 file has no \"crc32c\"".to_owned(),
            (_, None) => "missing field \"crc32c\"".to_owned(),
            (_, Some(table)) => match parse_table(table) {
                None => "\"crc32c\" is not eight hex digits an event".to_owned(),
                Some(t) if t.len() != self.crcs.len() => format!(
                    "\"crc32c\" lists {} events, the file holds {}",
                    t.len(),
                    self.crcs.len()
                ),
                Some(t) => match t.iter().zip(&self.crcs).position(|(a, b)| a != b) {
                    None => return true,
                    Some(i) => format!("event #{i} (line {}) fails its checksum", i + 2),
                },
            },
        };
        self.stop = Some(Stop::Format(reason));
        false
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
        self.crcs.push(event_crc(e.canonical()));
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
        let mut table = None::<String>;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "format" => format = Some(map.next_value()?),
                "day" => day = Some(map.next_value()?),
                "crc32c" => table = Some(map.next_value()?),
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
        let format = format.ok_or_else(|| A::Error::missing_field("format"))?;
        let day = day.ok_or_else(|| A::Error::missing_field("day"))?;
        if !events {
            return Err(A::Error::missing_field("events"));
        }
        if !self.visit.check_head(Some(format), Some(&day))
            || !self.visit.check_table(format, table.as_deref())
        {
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
/// [`write_compacted_to`] writes for the same events, without holding them (it keeps the
/// four bytes of each event's checksum for the table at the end).
///
/// # Examples
/// ```
/// use tmpa_core::maintenance::{CompactedWriter, event_crc};
/// let mut w = CompactedWriter::start(Vec::new(), "2026-11-01".parse().unwrap()).unwrap();
/// w.event(br#"{"id":"a"}"#).unwrap();
/// w.event(br#"{"id":"b"}"#).unwrap();
/// let out = String::from_utf8(w.finish().unwrap()).unwrap();
/// let crcs = format!("{:08x}{:08x}", event_crc(br#"{"id":"a"}"#), event_crc(br#"{"id":"b"}"#));
/// assert_eq!(out, format!("{{\"format\":2,\"day\":\"2026-11-01\",\"events\":[\n\
///     {{\"id\":\"a\"}},\n{{\"id\":\"b\"}}\n],\"crc32c\":\"{crcs}\"}}\n"));
/// ```
#[derive(Debug)]
pub struct CompactedWriter<W: Write> {
    out: W,
    events: u64,
    crcs: Vec<u32>,
}

impl<W: Write> CompactedWriter<W> {
    /// Writes the head of the file.
    ///
    /// # Errors
    /// Whatever `out` returns.
    pub fn start(mut out: W, day: Day) -> std::io::Result<Self> {
        write!(
            out,
            "{{\"format\":{COMPACTED_FORMAT},\"day\":\"{day}\",\"events\":["
        )?;
        Ok(CompactedWriter {
            out,
            events: 0,
            crcs: Vec::new(),
        })
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
        self.crcs.push(event_crc(canonical));
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
        self.out.write_all(b"\n],\"crc32c\":\"")?;
        let mut hex = Vec::with_capacity(8 * 512);
        for chunk in self.crcs.chunks(512) {
            hex.clear();
            for c in chunk {
                write!(hex, "{c:08x}")?;
            }
            self.out.write_all(&hex)?;
        }
        self.out.write_all(b"\"}\n")?;
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

/// The checksums of a `"crc32c"` table: eight lower-case hex digits an event.
fn parse_table(table: &str) -> Option<Vec<u32>> {
    let b = table.as_bytes();
    if !b.len().is_multiple_of(8) || !b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    b.chunks(8)
        .map(|c| u32::from_str_radix(std::str::from_utf8(c).ok()?, 16).ok())
        .collect()
}

/// What a line-by-line read of a damaged `_compacted.json` kept ([`salvage_compacted`]).
#[derive(Clone, Debug)]
pub struct Salvaged {
    /// The events that could be trusted: each line that matched its checksum (format 2),
    /// or that is a valid event (format 1, or format 2 whose table is damaged, which
    /// `problems` then says), each id once, in file order.
    pub events: Vec<Event>,
    /// A problem for each line that could not be used (with its line number), for events
    /// that were lost, and for what else is wrong with the file; never empty.
    pub problems: Vec<Problem>,
    /// Events the file held that were not kept, when its checksum table says how many.
    pub lost: Option<u64>,
}

/// One line of a `_compacted.json` read as an event.
struct Candidate {
    line: u64,
    raw: RawEvent,
    crc: u32,
}

/// Reads the bytes of a `_compacted.json` of `day` that the strict reader refused
/// (`strict` says why), line by line: the canonical layout puts the head on line 1, one
/// event a line, and the end (with the checksum table of format 2) on the last line.
///
/// Each event line is parsed alone and, in format 2, matched with the next entries of the
/// checksum table (up to a few thousand ahead, so that lines lost or split by the damage
/// do not shift the rest): a line whose event matches is kept; a line that is not an event,
/// or whose event matches no entry, is a problem naming the line. Table entries no line
/// matched are events lost, and a last problem says how many. When the table itself is
/// damaged, every valid event is kept and a problem says they were read without
/// verification. A head that names another day or format is a problem of line 1, and the
/// lines are read all the same (a damaged digit of the day must not lose the day).
///
/// # Examples
/// ```
/// use tmpa_core::maintenance::{CompactedWriter, salvage_compacted};
/// let day = "2026-11-01".parse().unwrap();
/// let ev = |id: &str, n: u32| format!(r#"{{"completion_tokens":1,"id":"{id}","model":"m","prompt_tokens":{n},"ts":"2026-11-01T10:00:00Z","user_id":"u"}}"#);
/// let mut w = CompactedWriter::start(Vec::new(), day).unwrap();
/// for (id, n) in [("a", 10), ("b", 20), ("c", 30)] {
///     w.event(ev(id, n).as_bytes()).unwrap();
/// }
/// let good = String::from_utf8(w.finish().unwrap()).unwrap();
/// let bad = good.replace(r#""prompt_tokens":20"#, r#""prompt_tokens":29"#); // one digit
/// let path = std::path::Path::new("_compacted.json");
/// let strict = tmpa_core::maintenance::parse_compacted(bad.as_bytes(), path, day).unwrap_err();
/// let s = salvage_compacted(bad.as_bytes(), path, day, strict);
/// let kept: Vec<_> = s.events.iter().map(|e| e.id().as_str()).collect();
/// assert_eq!(kept, ["a", "c"]);
/// let lines: Vec<_> = s.problems.iter().filter_map(|p| p.line).collect();
/// assert_eq!(lines, [3]); // the line of "b"
/// assert_eq!(s.lost, Some(1));
/// ```
pub fn salvage_compacted(bytes: &[u8], path: &Path, day: Day, strict: Error) -> Salvaged {
    let problem = |reason: String| Problem::new(path, ProblemKind::Corrupt, reason);
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    while lines.last().is_some_and(|l| l.trim_ascii().is_empty()) {
        lines.pop();
    }
    let mut s = Salvaged {
        events: Vec::new(),
        problems: Vec::new(),
        lost: None,
    };
    let head = |format: u32| format!("{{\"format\":{format},\"day\":\"{day}\",\"events\":[");
    let first = lines.first().copied().unwrap_or_default();
    let format = if first == head(COMPACTED_FORMAT).as_bytes() {
        COMPACTED_FORMAT
    } else if first == head(1).as_bytes() {
        1
    } else {
        s.problems.push(
            problem(format!(
                "not the head of a compacted file of {day}: damaged, another day's, or not \
                 written by tmpa"
            ))
            .at_line(1),
        );
        let last = lines.last().copied().unwrap_or_default();
        if last.windows(10).any(|w| w == b"\"crc32c\":\"") {
            COMPACTED_FORMAT
        } else {
            1
        }
    };
    // The end: `],"crc32c":"…"}` (format 2) or `]}` (format 1) on the last line.
    let last_no = lines.len();
    let (body_end, table) = match lines.last() {
        Some(l) if lines.len() > 1 && l.starts_with(b"]") => {
            let table = if format == COMPACTED_FORMAT {
                let t = l
                    .strip_prefix(b"],\"crc32c\":\"")
                    .and_then(|r| r.strip_suffix(b"\"}"))
                    .and_then(|t| std::str::from_utf8(t).ok())
                    .and_then(parse_table);
                if t.is_none() {
                    s.problems.push(
                        problem(
                            "the checksum table is damaged: events read without verification"
                                .into(),
                        )
                        .at_line(last_no as u64),
                    );
                }
                t
            } else {
                if *l != b"]}" {
                    s.problems.push(
                        problem("not the end of a compacted file".into()).at_line(last_no as u64),
                    );
                }
                None
            };
            (lines.len() - 1, table)
        }
        _ => {
            s.problems.push(problem(
                "the file stops before its end (truncated or damaged)".into(),
            ));
            (lines.len(), None)
        }
    };
    let mut candidates = Vec::new();
    for (i, line) in lines.iter().enumerate().take(body_end).skip(1) {
        let no = i as u64 + 1;
        let text = line.strip_suffix(b",").unwrap_or(line);
        match RawEvent::from_json(text) {
            Ok(raw) => candidates.push(Candidate {
                line: no,
                crc: event_crc(raw.canonical()),
                raw,
            }),
            Err(e) => s
                .problems
                .push(problem(format!("not an event: {}", e.chain())).at_line(no)),
        }
    }
    let kept = match &table {
        Some(t) => {
            let (kept, lost, mut problems) = align(candidates, t, &problem);
            s.problems.append(&mut problems);
            if lost > 0 {
                s.problems.push(problem(format!(
                    "{lost} of the {} events its checksum table lists could not be read",
                    t.len()
                )));
            }
            s.lost = Some(lost);
            kept
        }
        None => candidates,
    };
    let mut seen = HashSet::with_capacity(kept.len());
    let mut last: Option<((i64, u32), String)> = None;
    for c in kept {
        let key = (c.raw.instant(), c.raw.id().as_str().to_owned());
        if !seen.insert(key.1.clone()) {
            s.problems.push(
                problem(format!(
                    "event id {} appears twice (the first is kept)",
                    key.1
                ))
                .at_line(c.line),
            );
            continue;
        }
        if last.as_ref().is_some_and(|l| *l > key) {
            s.problems
                .push(problem("event out of (ts, id) order (kept)".into()).at_line(c.line));
        }
        last = Some(key);
        s.events.push(Event::from_raw(c.raw));
    }
    if s.problems.is_empty() {
        // The strict reader saw something the lines do not show (e.g. an unknown field):
        // never a silent pass.
        s.problems.push(Problem::from_error(path, strict));
    }
    s.problems.sort();
    s
}

/// Matches event lines with a checksum table in order: the kept lines, the number of
/// table entries no line matched, and a problem for each line that matched none.
fn align(
    candidates: Vec<Candidate>,
    table: &[u32],
    problem: &dyn Fn(String) -> Problem,
) -> (Vec<Candidate>, u64, Vec<Problem>) {
    let (mut kept, mut problems, mut next) = (Vec::new(), Vec::new(), 0usize);
    for c in candidates {
        let ahead = &table[next.min(table.len())..table.len().min(next + SALVAGE_WINDOW)];
        match ahead.iter().position(|&t| t == c.crc) {
            Some(k) => {
                next += k + 1;
                kept.push(c);
            }
            None => problems.push(
                problem(format!(
                    "fails its checksum (event {:?} as the line reads now)",
                    c.raw.id().as_str()
                ))
                .at_line(c.line),
            ),
        }
    }
    let lost = (table.len() - kept.len()) as u64;
    (kept, lost, problems)
}
