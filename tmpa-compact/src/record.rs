//! What compaction holds per event: a fixed-size record (sort key, where its bytes are,
//! and for a loose file its stamp and SHA-256), never a string or a parsed tree.

use std::cmp::Ordering;
use std::io::{self, Read, Write};

use tmpa_core::maintenance::Stamp;

use crate::arena::{Arena, Span};

/// `ts` as an instant: what `_compacted.json` is sorted by first (then the id's bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Instant {
    pub(crate) secs: i64,
    pub(crate) nanos: u32,
}

impl From<(i64, u32)> for Instant {
    fn from((secs, nanos): (i64, u32)) -> Instant {
        Instant { secs, nanos }
    }
}

/// The order of `_compacted.json`: by instant, then by id.
pub(crate) fn cmp_key(a: (Instant, &[u8]), b: (Instant, &[u8])) -> Ordering {
    a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1))
}

/// What is known of a loose event's place in the merge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// Not in `_compacted.json`: merged, and its file deleted.
    Added,
    /// Its id is in `_compacted.json` with the same bytes: its file deleted.
    Duplicate,
    /// Its id is in `_compacted.json` with other bytes: kept and reported.
    Conflict,
    /// Its id's hash is among those of `_compacted.json`: a duplicate, a conflict, or (a
    /// hash collision) new; the merge decides.
    Suspect,
    /// A suspect that met no compacted event of the same (`ts`, `id`): a conflict with
    /// another `ts`, or new; decided by looking its id up in `_compacted.json`.
    Pending,
}

impl Class {
    /// Whether the loose file goes once the compacted file is verified.
    pub(crate) fn deletes(self) -> bool {
        matches!(self, Class::Added | Class::Duplicate)
    }
}

/// A valid loose event: 112 bytes here plus its canonical JSON and id in the arena.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LooseRec {
    pub(crate) instant: Instant,
    /// Canonical JSON, then the id.
    pub(crate) span: Span,
    pub(crate) id_len: u16,
    /// Index into the day's classes.
    pub(crate) ordinal: u32,
    pub(crate) stamp: Stamp,
    pub(crate) sha256: [u8; 32],
}

impl LooseRec {
    pub(crate) fn json<'a>(&self, arena: &'a Arena) -> &'a [u8] {
        json_and_id(arena, self.span, self.id_len).0
    }

    pub(crate) fn id<'a>(&self, arena: &'a Arena) -> &'a [u8] {
        json_and_id(arena, self.span, self.id_len).1
    }
}

/// The canonical JSON and the id an arena span holds, one after the other.
fn json_and_id(arena: &Arena, span: Span, id_len: u16) -> (&[u8], &[u8]) {
    let b = arena.get(span);
    b.split_at(b.len() - usize::from(id_len))
}

/// A compacted event held in memory (when `_compacted.json` is small next to the budget).
#[derive(Clone, Copy, Debug)]
pub(crate) struct CompactedRec {
    pub(crate) instant: Instant,
    /// Canonical JSON, then the id.
    pub(crate) span: Span,
    pub(crate) id_len: u16,
}

impl CompactedRec {
    pub(crate) fn json<'a>(&self, arena: &'a Arena) -> &'a [u8] {
        json_and_id(arena, self.span, self.id_len).0
    }

    pub(crate) fn id<'a>(&self, arena: &'a Arena) -> &'a [u8] {
        json_and_id(arena, self.span, self.id_len).1
    }
}

/// Bytes of a record's fixed part in a spill file: json length (4), id length (2),
/// seconds (8), nanoseconds (4), ordinal (4), stamp (5 × 8), SHA-256 (32).
const SPILLED_HEAD_BYTES: usize = 4 + 2 + 8 + 4 + 4 + 40 + 32;

/// Writes a loose record and its bytes as one spill record.
pub(crate) fn write_spilled(out: &mut impl Write, rec: &LooseRec, arena: &Arena) -> io::Result<()> {
    let json = rec.json(arena);
    let id = rec.id(arena);
    let mut head = [0u8; SPILLED_HEAD_BYTES];
    let mut at = 0;
    let mut put = |b: &[u8]| {
        head[at..at + b.len()].copy_from_slice(b);
        at += b.len();
    };
    put(&u32::try_from(json.len())
        .expect("an event is smaller than 4 GiB")
        .to_le_bytes());
    put(&rec.id_len.to_le_bytes());
    put(&rec.instant.secs.to_le_bytes());
    put(&rec.instant.nanos.to_le_bytes());
    put(&rec.ordinal.to_le_bytes());
    put(&rec.stamp.dev.to_le_bytes());
    put(&rec.stamp.ino.to_le_bytes());
    put(&rec.stamp.size.to_le_bytes());
    put(&rec.stamp.mtime_ns.to_le_bytes());
    put(&rec.stamp.ctime_ns.to_le_bytes());
    put(&rec.sha256);
    out.write_all(&head)?;
    out.write_all(id)?;
    out.write_all(json)
}

/// A spill record read back: the fixed part, and the id then the JSON in `bytes`.
#[derive(Debug, Default)]
pub(crate) struct Spilled {
    pub(crate) instant: Option<Instant>,
    pub(crate) ordinal: u32,
    pub(crate) stamp: Option<Stamp>,
    pub(crate) sha256: [u8; 32],
    id_len: usize,
    pub(crate) bytes: Vec<u8>,
}

impl Spilled {
    pub(crate) fn id(&self) -> &[u8] {
        &self.bytes[..self.id_len]
    }

    pub(crate) fn json(&self) -> &[u8] {
        &self.bytes[self.id_len..]
    }

    pub(crate) fn key(&self) -> (Instant, &[u8]) {
        (self.instant.expect("a record was read"), self.id())
    }

    /// Reads the next record into `self`; `false` at the end of the input.
    pub(crate) fn read_from(&mut self, input: &mut impl Read) -> io::Result<bool> {
        let mut head = [0u8; SPILLED_HEAD_BYTES];
        match input.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(e),
        }
        let mut at = 0;
        let mut take = |n: usize| {
            let b = &head[at..at + n];
            at += n;
            b
        };
        let json_len = u32::from_le_bytes(take(4).try_into().expect("4 bytes")) as usize;
        let id_len = usize::from(u16::from_le_bytes(take(2).try_into().expect("2 bytes")));
        let secs = i64::from_le_bytes(take(8).try_into().expect("8 bytes"));
        let nanos = u32::from_le_bytes(take(4).try_into().expect("4 bytes"));
        self.ordinal = u32::from_le_bytes(take(4).try_into().expect("4 bytes"));
        let mut u64_at = || u64::from_le_bytes(take(8).try_into().expect("8 bytes"));
        let (dev, ino, size) = (u64_at(), u64_at(), u64_at());
        let (mtime, ctime) = (u64_at(), u64_at());
        self.sha256.copy_from_slice(take(32));
        self.instant = Some(Instant { secs, nanos });
        self.stamp = Some(Stamp {
            dev,
            ino,
            size,
            mtime_ns: mtime as i64,
            ctime_ns: ctime as i64,
        });
        self.id_len = id_len;
        self.bytes.resize(id_len + json_len, 0);
        input
            .read_exact(&mut self.bytes)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => io::Error::new(
                    io::ErrorKind::InvalidData,
                    "spill file ends inside a record",
                ),
                _ => e,
            })?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_spilled_reads_back_the_same() {
        let mut arena = Arena::default();
        let span = arena.push(br#"{"id":"a\u00e9"}"#, "aé".as_bytes());
        let rec = LooseRec {
            instant: Instant {
                secs: -5,
                nanos: 999_999_999,
            },
            span,
            id_len: 3,
            ordinal: 77,
            stamp: Stamp {
                dev: 1,
                ino: u64::MAX,
                size: 12,
                mtime_ns: -3,
                ctime_ns: i64::MAX,
            },
            sha256: [7; 32],
        };
        let mut buf = Vec::new();
        write_spilled(&mut buf, &rec, &arena).unwrap();
        write_spilled(&mut buf, &rec, &arena).unwrap();
        let mut input = &buf[..];
        let mut s = Spilled::default();
        for _ in 0..2 {
            assert!(s.read_from(&mut input).unwrap());
            assert_eq!(s.key(), (rec.instant, "aé".as_bytes()));
            assert_eq!(s.json(), rec.json(&arena));
            assert_eq!(
                (s.ordinal, s.stamp, s.sha256),
                (77, Some(rec.stamp), [7; 32])
            );
        }
        assert!(!s.read_from(&mut input).unwrap());
        let torn = &buf[..buf.len() - 1];
        let mut input = &torn[buf.len() / 2..];
        assert!(
            s.read_from(&mut input).is_err(),
            "a torn record is an error"
        );
    }
}
