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

mod salvage;
mod visit;
mod write;

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

pub use salvage::{Salvaged, salvage_compacted};
pub use visit::{VisitError, visit_compacted, visit_compacted_slice};
pub use write::{CompactedWriter, ReadBack, write_compacted, write_compacted_to};
