//! Writing `_compacted.json` canonically ([`CompactedWriter`]) and comparing a written
//! file with what it should hold without holding either ([`ReadBack`]).

use super::*;

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
