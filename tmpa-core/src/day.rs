//! A day of usage events: scanning `token_stats/{day}/` and merging `_compacted.json`
//! (its format is `compacted/`) with the loose `evt_{id}.json` files.
//!
//! Scanning never stops at a bad file: every file that cannot be used is returned as a
//! [`Problem`] with its path and reason, and the rest of the day is still read. Symlinks
//! are never followed, FIFOs and devices never opened for reading in a way that blocks,
//! and no file larger than its limit is read into memory.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use sha2::{Digest, Sha256};

use crate::compacted::{Compacted, read_compacted};
use crate::error::{Error, Result};
use crate::event::{EVENT_BYTES_MAX, Event, RawEvent, event_file_name, event_id_from_file_name};
use crate::fs::{Dir, Meta, Stamp};
use crate::names::{Day, EventId};
use crate::problem::{Problem, ProblemKind};
use crate::root::{Root, rel};

/// Name of the summary cache of a day.
pub const SUMMARY_NAME: &str = "_summary.json";

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
            // What could be trusted, and a problem for each damaged line: never a day that
            // silently lost (or changed) an event.
            Compacted::Damaged(salvaged) => {
                problems.extend(salvaged.problems);
                salvaged.events
            }
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

/// Below this many files a day is read on the calling thread: threads cost more than
/// they save (the library's day read and tmpa-compact's alike).
pub const PARALLEL_FILES_MIN: usize = 512;
/// At most this many threads read a day's small files: the reads are syscall- and
/// parse-bound, and more threads than cores only add contention.
pub const READ_THREADS_MAX: usize = 4;

/// Reads and validates every named loose file, on several threads for large days. The
/// result is in `names` order whatever the threading.
fn read_all_loose(dir: &Dir, names: &[OsString]) -> (Vec<Event>, Vec<Problem>) {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(READ_THREADS_MAX);
    if threads < 2 || names.len() < PARALLEL_FILES_MIN {
        return read_loose_chunk(dir, names);
    }
    let parts: Vec<&[OsString]> = names.chunks(names.len().div_ceil(threads)).collect();
    let mut loose = Vec::with_capacity(names.len());
    let mut problems = Vec::new();
    for (l, p) in crate::par::map_ordered_on(threads, &parts, |part| read_loose_chunk(dir, part)) {
        loose.extend(l);
        problems.extend(p);
    }
    (loose, problems)
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

/// Reads every named loose file with the stamp of the file read (from its descriptor), in
/// `names` order, on several threads for large days: what the incremental summary keeps
/// per file.
pub(crate) fn read_loose_stamped_all(dir: &Dir, names: &[OsString]) -> Vec<Result<(Event, Stamp)>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(READ_THREADS_MAX);
    let read = |part: &[OsString]| -> Vec<Result<(Event, Stamp)>> {
        part.iter().map(|n| read_loose_stamped(dir, n)).collect()
    };
    if threads < 2 || names.len() < PARALLEL_FILES_MIN {
        return read(names);
    }
    let parts: Vec<&[OsString]> = names.chunks(names.len().div_ceil(threads)).collect();
    crate::par::map_ordered_on(threads, &parts, |p| read(p))
        .into_iter()
        .flatten()
        .collect()
}

/// Reads and validates one loose event file, with the stamp of the file read.
///
/// # Errors
/// As [`read_loose_raw`].
pub(crate) fn read_loose_stamped(dir: &Dir, name: &OsStr) -> Result<(Event, Stamp)> {
    read_valid_loose(dir, name).map(|(event, _, meta)| (Event::from_raw(event), meta.stamp))
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
#[allow(
    clippy::disallowed_methods,
    reason = "tests build and break trees by path"
)]
mod tests {
    use super::*;
    use std::path::Path;

    use crate::compacted::*;
    use crate::fs::Kind;

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
                format!(r#"{{"format":3,"day":"2026-11-01","events":[{e}]}}"#),
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
