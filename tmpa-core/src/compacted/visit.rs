//! Reading `_compacted.json` as a stream of raw events in constant memory, each checked
//! against the file's table of checksums ([`visit_compacted`]).

use super::salvage::parse_table;
use super::*;

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

pub(super) fn visit_with<'de, R: serde_json::de::Read<'de>, E>(
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
pub(super) struct StashRead<R> {
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
pub(super) enum Stop<E> {
    Visitor(E),
    Format(String),
}

pub(super) struct Visit<'f, F, E> {
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
pub(super) struct DocVisitor<'v, 'f, F, E> {
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

pub(super) struct EventsSeed<'v, 'f, F, E> {
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
