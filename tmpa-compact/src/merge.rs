//! The merge of a day: the compacted events (in file order, from memory or re-read from
//! the file) and the loose events (one sorted run in memory, or k sorted runs read back
//! from the spill file) walked together in (`ts`, `id`) order, each output event handed to
//! a sink: a discarding one (to classify), the new `_compacted.json`, or the read-back
//! comparison with the file on disk (to verify).
//!
//! A loose event whose id's hash is among the compacted ids ([`Class::Suspect`]) is decided
//! where the walk meets it: a compacted event with the same (`ts`, `id`) and the same bytes
//! makes it a duplicate, with other bytes a conflict; none makes it [`Class::Pending`],
//! settled by [`resolve_pending`] (a conflict with another `ts`, or a hash collision).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::path::Path;

use tmpa_core::maintenance::{RawEvent, SummaryFold, event_file_name, same_json_value};
use tmpa_core::{Day, Error, EventId};

use crate::arena::Arena;
use crate::record::{Class, Instant, LooseRec, cmp_key};
use crate::scan::CompactedSrc;
use crate::spill::{RunReader, Spill};

/// Where the events of a pass go.
pub(crate) trait Sink {
    /// The next event of the output, as canonical JSON.
    ///
    /// # Errors
    /// The sink's, naming its file.
    fn event(&mut self, json: &[u8]) -> tmpa_core::Result<()>;
}

/// A sink that keeps nothing (a pass that only classifies).
pub(crate) struct Discard;

impl Sink for Discard {
    fn event(&mut self, _json: &[u8]) -> tmpa_core::Result<()> {
        Ok(())
    }
}

/// The loose event under a cursor.
pub(crate) struct Head<'a> {
    pub(crate) instant: Instant,
    pub(crate) id: &'a [u8],
    pub(crate) json: &'a [u8],
    pub(crate) ordinal: u32,
}

/// The loose events of a day in (`ts`, `id`) order.
pub(crate) enum Cursor<'a> {
    /// One sorted run in memory.
    Memory {
        recs: &'a [LooseRec],
        arena: &'a Arena,
        next: usize,
    },
    /// The runs of the spill file, merged k ways.
    Runs {
        readers: Vec<RunReader<'a>>,
        /// The live readers by their heads' keys, smallest on top (ties: the lower
        /// index): each step costs log k, not k.
        heap: BinaryHeap<Reverse<HeapKey>>,
        /// The reader whose head is the smallest (taken off the heap).
        min: Option<usize>,
        /// A spare id buffer, so that a step allocates nothing.
        spare: Vec<u8>,
    },
}

/// A reader's head in the merge's heap: its (`ts`, `id`) key, copied (ids are at most 246
/// bytes), and the reader's index.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct HeapKey {
    instant: Instant,
    id: Vec<u8>,
    reader: usize,
}

/// Read buffers of all the runs together, at most.
const RUN_BUFFERS_BYTES: usize = 8 << 20;

impl<'a> Cursor<'a> {
    /// A cursor over the records in memory.
    pub(crate) fn memory(recs: &'a [LooseRec], arena: &'a Arena) -> Cursor<'a> {
        Cursor::Memory {
            recs,
            arena,
            next: 0,
        }
    }

    /// A cursor over every run of `spill`, with at most [`RUN_BUFFERS_BYTES`] of buffers.
    ///
    /// # Errors
    /// Reading the spill file.
    pub(crate) fn runs(spill: &'a Spill) -> tmpa_core::Result<Cursor<'a>> {
        let buf = (RUN_BUFFERS_BYTES / spill.runs().max(1)).clamp(4 << 10, 1 << 20);
        let mut readers = Vec::with_capacity(spill.runs());
        let mut heap = BinaryHeap::with_capacity(spill.runs());
        for i in 0..spill.runs() {
            let mut r = spill.reader(i, buf);
            r.advance()?;
            if let Some(h) = r.head() {
                let (instant, id) = h.key();
                heap.push(Reverse(HeapKey {
                    instant,
                    id: id.to_vec(),
                    reader: i,
                }));
            }
            readers.push(r);
        }
        let mut c = Cursor::Runs {
            readers,
            heap,
            min: None,
            spare: Vec::new(),
        };
        c.pop_min();
        Ok(c)
    }

    /// Takes the smallest head off the heap (its id buffer kept for the next push).
    fn pop_min(&mut self) {
        if let Cursor::Runs {
            heap, min, spare, ..
        } = self
        {
            *min = heap.pop().map(|Reverse(k)| {
                *spare = k.id;
                k.reader
            });
        }
    }

    /// The smallest loose event not passed yet.
    pub(crate) fn peek(&self) -> Option<Head<'_>> {
        match self {
            Cursor::Memory { recs, arena, next } => recs.get(*next).map(|r| Head {
                instant: r.instant,
                id: r.id(arena),
                json: r.json(arena),
                ordinal: r.ordinal,
            }),
            Cursor::Runs { readers, min, .. } => {
                min.and_then(|m| readers[m].head()).map(|h| Head {
                    instant: h.key().0,
                    id: h.id(),
                    json: h.json(),
                    ordinal: h.ordinal,
                })
            }
        }
    }

    /// Passes the smallest loose event.
    ///
    /// # Errors
    /// Reading the spill file.
    pub(crate) fn advance(&mut self) -> tmpa_core::Result<()> {
        match self {
            Cursor::Memory { next, .. } => *next += 1,
            Cursor::Runs {
                readers,
                heap,
                min,
                spare,
            } => {
                if let Some(m) = *min {
                    readers[m].advance()?;
                    if let Some(h) = readers[m].head() {
                        let (instant, id) = h.key();
                        let mut buf = std::mem::take(spare);
                        buf.clear();
                        buf.extend_from_slice(id);
                        heap.push(Reverse(HeapKey {
                            instant,
                            id: buf,
                            reader: m,
                        }));
                    }
                }
                self.pop_min();
            }
        }
        Ok(())
    }
}

/// A loose event that met no compacted event of its (`ts`, `id`) although its id's hash is
/// among theirs.
#[derive(Debug)]
pub(crate) struct Pending {
    ordinal: u32,
    id: Vec<u8>,
    json: Vec<u8>,
}

/// What a pass found out.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    /// Suspects that met their compacted twin with other bytes.
    pub(crate) conflicts: Vec<EventId>,
    /// Suspects that met none.
    pub(crate) pending: Vec<Pending>,
    /// Suspects that met their compacted twin with the same bytes.
    pub(crate) duplicates: u64,
    /// Events handed to the sink.
    pub(crate) events: u64,
}

/// One pass of the merge: every compacted event and every loose event of class
/// [`Class::Added`] to `sink` in (`ts`, `id`) order, each id once; suspects met are
/// decided (see the module docs).
///
/// # Errors
/// The sink's; reading the compacted file or the spill file; an event classified new that
/// meets a compacted one of the same id (never: it would be written twice).
pub(crate) fn merge_pass(
    compacted: &CompactedSrc,
    day: Day,
    dir: &Path,
    loose: &mut Cursor<'_>,
    classes: &mut [Class],
    sink: &mut dyn Sink,
) -> tmpa_core::Result<Findings> {
    let mut found = Findings::default();
    compacted.for_each(day, |instant, id, json| {
        while let Some(h) = loose.peek() {
            if cmp_key((h.instant, h.id), (instant, id)).is_ge() {
                break;
            }
            take_alone(&h, classes, sink, &mut found)?;
            loose.advance()?;
        }
        if let Some(h) = loose.peek()
            && (h.instant, h.id) == (instant, id)
        {
            meet(&h, json, dir, classes, &mut found)?;
            loose.advance()?;
        }
        found.events += 1;
        sink.event(json)
    })?;
    while let Some(h) = loose.peek() {
        take_alone(&h, classes, sink, &mut found)?;
        loose.advance()?;
    }
    Ok(found)
}

/// A loose event with no compacted event of the same (`ts`, `id`).
fn take_alone(
    h: &Head<'_>,
    classes: &mut [Class],
    sink: &mut dyn Sink,
    found: &mut Findings,
) -> tmpa_core::Result<()> {
    let class = &mut classes[h.ordinal as usize];
    match *class {
        Class::Added => {
            found.events += 1;
            sink.event(h.json)
        }
        Class::Suspect => {
            *class = Class::Pending;
            found.pending.push(Pending {
                ordinal: h.ordinal,
                id: h.id.to_vec(),
                json: h.json.to_vec(),
            });
            Ok(())
        }
        Class::Duplicate | Class::Conflict | Class::Pending => Ok(()),
    }
}

/// Whether two canonical events hold the same value in other spellings.
fn same_spelled_otherwise(a: &[u8], b: &[u8]) -> bool {
    match (std::str::from_utf8(a), std::str::from_utf8(b)) {
        (Ok(a), Ok(b)) => same_json_value(a, b),
        _ => false,
    }
}

/// A loose event and the compacted event of the same (`ts`, `id`).
fn meet(
    h: &Head<'_>,
    compacted_json: &[u8],
    dir: &Path,
    classes: &mut [Class],
    found: &mut Findings,
) -> tmpa_core::Result<()> {
    let class = &mut classes[h.ordinal as usize];
    match *class {
        // The same bytes; or the same value spelled otherwise (a `_compacted.json` written
        // before numbers kept their text holds `1e2` as `100.0`): the event is held.
        Class::Suspect
            if h.json == compacted_json || same_spelled_otherwise(h.json, compacted_json) =>
        {
            *class = Class::Duplicate;
            found.duplicates += 1;
        }
        Class::Suspect => {
            *class = Class::Conflict;
            found.conflicts.push(event_id(h.id)?);
        }
        Class::Duplicate | Class::Conflict => {}
        Class::Added | Class::Pending => {
            let id = event_id(h.id)?;
            return Err(Error::io(
                "merge",
                dir.join(event_file_name(&id)),
                std::io::Error::other(
                    "classified as new but already compacted (internal error; nothing deleted)",
                ),
            ));
        }
    }
    Ok(())
}

fn event_id(id: &[u8]) -> tmpa_core::Result<EventId> {
    let id = std::str::from_utf8(id).map_err(|_| Error::InvalidEvent {
        reason: "an event id read back is not UTF-8".into(),
    })?;
    EventId::new(id)
}

/// What [`resolve_pending`] decided.
#[derive(Debug, Default)]
pub(crate) struct Resolved {
    /// Pending events whose id is in `_compacted.json` (with another `ts`): conflicts.
    pub(crate) conflicts: Vec<EventId>,
    /// Pending events whose id is not there (their hash collided): new after all.
    pub(crate) added: u64,
}

/// Decides the pending events by looking their ids up in `_compacted.json`, exactly. The
/// ones found new are folded into `fold`.
///
/// # Errors
/// Reading the compacted file.
pub(crate) fn resolve_pending(
    compacted: &CompactedSrc,
    day: Day,
    pending: Vec<Pending>,
    classes: &mut [Class],
    fold: &mut SummaryFold,
) -> tmpa_core::Result<Resolved> {
    let mut r = Resolved::default();
    if pending.is_empty() {
        return Ok(r);
    }
    let wanted: HashSet<&[u8]> = pending.iter().map(|p| p.id.as_slice()).collect();
    let mut found: HashSet<Vec<u8>> = HashSet::new();
    compacted.for_each(day, |_, id, _| {
        if wanted.contains(id) {
            found.insert(id.to_vec());
        }
        Ok(())
    })?;
    for p in &pending {
        let class = &mut classes[p.ordinal as usize];
        if found.contains(&p.id) {
            *class = Class::Conflict;
            r.conflicts.push(event_id(&p.id)?);
        } else {
            *class = Class::Added;
            r.added += 1;
            let e = RawEvent::from_json(&p.json)?;
            fold.add(
                e.user_id(),
                e.model(),
                e.prompt_tokens(),
                e.completion_tokens(),
            );
        }
    }
    Ok(r)
}
