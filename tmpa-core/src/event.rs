//! Usage events (`token_stats/{day}/evt_{id}.json`) and recording them.

use std::cmp::Ordering;

use chrono::{DateTime, FixedOffset};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::json;
use crate::names::{Day, EventId};
use crate::root::{Root, rel};

/// Largest loose event file read, in bytes. Real events are a few hundred bytes.
pub const EVENT_BYTES_MAX: u64 = 1 << 20;

/// A valid usage event: a JSON object with `id`, `ts` (RFC 3339), `user_id`, `model`
/// (strings) and `prompt_tokens`, `completion_tokens` (non-negative integers).
///
/// All other fields are kept exactly as they were read and written back unchanged. The
/// event is held as its canonical JSON (keys sorted, no spaces) plus the fields the
/// library uses, so a day of events costs little more memory than its bytes; two events
/// are equal as JSON exactly when their canonical bytes are equal.
///
/// # Examples
/// ```
/// use tmpa_core::Event;
/// let e = Event::from_json(br#"{"id":"a1","ts":"2026-11-23T10:00:00Z","user_id":"u1",
///   "model":"m","prompt_tokens":3,"completion_tokens":4,"trace":{"x":[1,2]}}"#).unwrap();
/// assert_eq!(e.id().as_str(), "a1");
/// assert_eq!(e.day().to_string(), "2026-11-23");
/// assert_eq!(e.to_map()["trace"]["x"][1], 2);
/// assert!(Event::from_json(br#"{"id":"a1"}"#).is_err()); // fields missing
/// ```
///
/// Every value is kept exactly: numbers keep the text they were written with (a Python
/// `int` of 30 digits, a `Decimal` of 20 decimals, `1e-400`), strings their characters.
/// An object that names a key twice is refused (readers disagree on which value counts).
///
/// # Not guaranteed
/// - The original formatting: an event is written back as canonical JSON (keys sorted,
///   no spaces, strings escaped as serde_json escapes them).
/// - That [`Event::to_map`] keeps every number exactly: it is a `serde_json` map, whose
///   numbers are 64-bit integers or `f64`; [`Event::json_bytes`] is exact.
/// - That `user_id` or `model` name anything: they are free strings, never paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    id: EventId,
    ts: DateTime<FixedOffset>,
    user_id: Box<str>,
    model: Box<str>,
    prompt_tokens: u64,
    completion_tokens: u64,
    json: Box<[u8]>,
}

impl Event {
    /// Parses and validates an event from JSON bytes.
    ///
    /// # Errors
    /// [`Error::InvalidEvent`] saying what is wrong (not JSON, a missing or mistyped field).
    pub fn from_json(bytes: &[u8]) -> Result<Event> {
        RawEvent::from_json(bytes).map(Event::from_raw)
    }

    /// Validates an event given as a JSON value.
    ///
    /// # Errors
    /// [`Error::InvalidEvent`] saying which field is missing or mistyped.
    pub fn from_value(v: Value) -> Result<Event> {
        RawEvent::from_value(v).map(Event::from_raw)
    }

    /// The event of a validated [`RawEvent`], made canonical.
    pub(crate) fn from_raw(raw: RawEvent) -> Event {
        let mut json = Vec::new();
        raw.write_canonical(&mut json);
        Event {
            user_id: raw.user_id().into(),
            model: raw.model().into(),
            ts: raw.ts,
            prompt_tokens: raw.prompt_tokens,
            completion_tokens: raw.completion_tokens,
            json: json.into_boxed_slice(),
            id: raw.id,
        }
    }

    /// The event id.
    pub fn id(&self) -> &EventId {
        &self.id
    }

    /// The timestamp.
    pub fn ts(&self) -> DateTime<FixedOffset> {
        self.ts
    }

    /// The day the event belongs to: the date of `ts` in its own offset.
    pub fn day(&self) -> Day {
        Day::from_date(self.ts.date_naive())
    }

    /// The user id (any string; not used as a path).
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// The model name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Prompt tokens.
    pub fn prompt_tokens(&self) -> u64 {
        self.prompt_tokens
    }

    /// Completion tokens.
    pub fn completion_tokens(&self) -> u64 {
        self.completion_tokens
    }

    /// The whole object, including fields this library does not know (parsed anew from
    /// the canonical bytes on each call).
    pub fn to_map(&self) -> Map<String, Value> {
        serde_json::from_slice(&self.json).expect("canonical event JSON always parses")
    }

    /// The canonical JSON of the event (keys sorted, no spaces): the same event always
    /// gives the same bytes.
    pub fn json_bytes(&self) -> &[u8] {
        &self.json
    }

    /// `evt_{id}.json`.
    pub fn file_name(&self) -> String {
        event_file_name(&self.id)
    }

    /// The order of `_compacted.json`: by `ts` (as an instant), then by `id`.
    pub fn cmp_ts_id(&self, other: &Event) -> Ordering {
        self.ts.cmp(&other.ts).then_with(|| self.id.cmp(&other.id))
    }
}

/// An event parsed and validated, before it is made canonical: the JSON object with the
/// fields the library checks, exactly as [`Event::from_json`] checks them (an [`Event`] is
/// built from one). Compaction writes its canonical bytes straight into its own buffers
/// ([`RawEvent::write_canonical`]) instead of keeping an [`Event`] per event.
///
/// # Examples
/// ```
/// use tmpa_core::maintenance::RawEvent;
/// let raw = RawEvent::from_json(br#"{"ts":"2026-11-23T10:00:00+01:00","id":"a1","user_id":"u1",
///   "model":"m","prompt_tokens":3,"completion_tokens":4}"#).unwrap();
/// assert_eq!((raw.id().as_str(), raw.user_id(), raw.prompt_tokens()), ("a1", "u1", 3));
/// assert_eq!(raw.instant(), (1_795_424_400, 0)); // 09:00 UTC
/// let mut canonical = Vec::new();
/// raw.write_canonical(&mut canonical);
/// let e = tmpa_core::Event::from_json(&canonical).unwrap();
/// assert_eq!(e.json_bytes(), &canonical[..]);
/// ```
#[derive(Clone, Debug)]
pub struct RawEvent {
    id: EventId,
    ts: DateTime<FixedOffset>,
    prompt_tokens: u64,
    completion_tokens: u64,
    user_id: Box<str>,
    model: Box<str>,
    /// The canonical JSON (keys sorted, no spaces, numbers as written).
    canonical: Box<[u8]>,
}

impl RawEvent {
    /// Parses and validates an event from JSON bytes.
    ///
    /// # Errors
    /// [`Error::InvalidEvent`] saying what is wrong (not JSON, a missing or mistyped field).
    pub fn from_json(bytes: &[u8]) -> Result<RawEvent> {
        let raw: &RawValue = serde_json::from_slice(bytes).map_err(|e| Error::InvalidEvent {
            reason: format!("not valid JSON: {e}"),
        })?;
        RawEvent::from_raw_value(raw)
    }

    /// Validates an event given as a JSON value.
    ///
    /// # Errors
    /// [`Error::InvalidEvent`] saying which field is missing or mistyped.
    pub fn from_value(v: Value) -> Result<RawEvent> {
        let text = serde_json::to_string(&v).expect("a JSON value always serializes");
        RawEvent::from_json(text.as_bytes())
    }

    /// Validates an event given as raw JSON text, keeping every value exactly.
    pub(crate) fn from_raw_value(raw: &RawValue) -> Result<RawEvent> {
        if !raw.get().trim_start().starts_with('{') {
            return Err(invalid("not a JSON object".into()));
        }
        let members = json::sorted_members(raw).map_err(invalid)?;
        let field = |k: &str| {
            members
                .binary_search_by(|(key, _)| key.as_ref().cmp(k))
                .ok()
                .map(|i| members[i].1)
        };
        let id = str_field(field("id"), "id")?;
        let id = EventId::new(&id).map_err(|e| invalid(format!("\"id\": {e}")))?;
        let ts_s = str_field(field("ts"), "ts")?;
        let ts = DateTime::parse_from_rfc3339(&ts_s)
            .map_err(|e| invalid(format!("\"ts\" {ts_s:?} is not RFC 3339: {e}")))?;
        let user_id = str_field(field("user_id"), "user_id")?;
        let model = str_field(field("model"), "model")?;
        let prompt_tokens = uint_field(field("prompt_tokens"), "prompt_tokens")?;
        let completion_tokens = uint_field(field("completion_tokens"), "completion_tokens")?;
        let mut canonical = Vec::with_capacity(raw.get().len());
        json::write_canonical(raw, &mut canonical).map_err(invalid)?;
        Ok(RawEvent {
            id,
            ts,
            prompt_tokens,
            completion_tokens,
            user_id: user_id.into(),
            model: model.into(),
            canonical: canonical.into_boxed_slice(),
        })
    }

    /// The event id.
    pub fn id(&self) -> &EventId {
        &self.id
    }

    /// The timestamp.
    pub fn ts(&self) -> DateTime<FixedOffset> {
        self.ts
    }

    /// The timestamp as an instant: seconds since the epoch (UTC) and nanoseconds. Ordering
    /// these pairs orders events exactly as [`Event::cmp_ts_id`] orders their `ts`.
    pub fn instant(&self) -> (i64, u32) {
        (self.ts.timestamp(), self.ts.timestamp_subsec_nanos())
    }

    /// The user id.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// The model name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Prompt tokens.
    pub fn prompt_tokens(&self) -> u64 {
        self.prompt_tokens
    }

    /// Completion tokens.
    pub fn completion_tokens(&self) -> u64 {
        self.completion_tokens
    }

    /// Appends the canonical JSON of the event (keys sorted, no spaces, every number as
    /// it was written) to `out`: the bytes [`Event::json_bytes`] holds for the same event.
    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.canonical);
    }

    /// The canonical JSON of the event.
    pub fn canonical(&self) -> &[u8] {
        &self.canonical
    }
}

/// `evt_{id}.json`.
pub fn event_file_name(id: &EventId) -> String {
    format!("evt_{id}.json")
}

/// The id in an event file name `evt_{id}.json`, if the name has that shape.
pub fn event_id_from_file_name(name: &str) -> Option<&str> {
    name.strip_prefix("evt_")?.strip_suffix(".json")
}

fn invalid(reason: String) -> Error {
    Error::InvalidEvent { reason }
}

fn str_field(v: Option<&RawValue>, k: &str) -> Result<String> {
    match v {
        Some(v) => serde_json::from_str::<String>(v.get())
            .map_err(|_| invalid(format!("\"{k}\" is not a string"))),
        None => Err(invalid(format!("missing field \"{k}\""))),
    }
}

/// A non-negative integer written as one (`3`; not `3.0` or `3e0`), up to `u64::MAX`.
fn uint_field(v: Option<&RawValue>, k: &str) -> Result<u64> {
    match v {
        Some(v) => {
            let text = v.get().trim();
            text.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| text.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| invalid(format!("\"{k}\" is not a non-negative integer")))
        }
        None => Err(invalid(format!("missing field \"{k}\""))),
    }
}

impl Root {
    /// Records an event: writes `token_stats/{day}/evt_{id}.json` atomically, where `day`
    /// is the date of its `ts` in its own offset.
    ///
    /// Recording the same event twice is harmless; recording a different event under an
    /// id that already has a loose file is refused, so a recorded event is never replaced.
    /// When the call returns `Ok`, the file and its directory entry are durable, also when
    /// another call had written it (that one may not have returned yet). Writers of one
    /// process that record into the same day at the same time share the directory's fsync
    /// (a group commit); each still returns only after an fsync that began after its own
    /// rename.
    /// (An id that compaction already moved into `_compacted.json` is not looked up: ids
    /// are the backend's to keep unique, and the compactor reports such a conflict.)
    ///
    /// # Errors
    /// [`Error::Conflict`] when `evt_{id}.json` exists with other content; [`Error::Io`]
    /// or [`Error::Unsafe`] naming the path when the day directory cannot be made or
    /// written.
    ///
    /// # Examples
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// std::fs::create_dir(dir.path().join("token_stats")).unwrap();
    /// let root = tmpa_core::Root::open(dir.path()).unwrap();
    /// let e = tmpa_core::Event::from_json(br#"{"id":"a1","ts":"2026-11-23T10:00:00Z",
    ///   "user_id":"u1","model":"m","prompt_tokens":3,"completion_tokens":4}"#).unwrap();
    /// let path = root.record_event(&e).unwrap();
    /// assert!(path.ends_with("token_stats/2026-11-23/evt_a1.json"));
    /// root.record_event(&e).unwrap(); // idempotent
    /// ```
    pub fn record_event(&self, event: &Event) -> Result<std::path::PathBuf> {
        // Held by descriptor: a day directory swapped for a symlink meanwhile cannot lead
        // the write out of the root.
        let dir = self.hold_dir(&rel::day(event.day()))?;
        let name = event.file_name();
        let path = dir.join(&name);
        match crate::fs::write_in(&dir, name.as_ref(), event.json_bytes(), true) {
            Ok(()) => Ok(path),
            Err(e) if e.io_kind() == std::io::ErrorKind::AlreadyExists => {
                let same = dir
                    .read(&name, EVENT_BYTES_MAX)
                    .ok()
                    .and_then(|(b, _)| Event::from_json(&b).ok())
                    .is_some_and(|old| old == *event);
                if same {
                    // Another call (of this process or another) put it there and may not
                    // have made it durable yet: this call returns only once it is, file
                    // and entry. Gone since (compaction moved it into a `_compacted.json`
                    // it made durable first) is as good.
                    match dir.open_read(&name) {
                        Ok(f) => f.sync_all().map_err(|e| Error::io("fsync", &path, e))?,
                        Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                    crate::fs::sync_dir(&dir)?;
                    Ok(path)
                } else {
                    Err(Error::Conflict { path })
                }
            }
            Err(e) => Err(e),
        }
    }
}
