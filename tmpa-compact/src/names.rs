//! The names of a day's loose files that stay on disk (not read, not admitted by the plan
//! being applied, or every one when the run deletes nothing): what the summary's
//! consistency stamp covers, in byte order. They are held within a share of the memory
//! budget whatever their number: gathered end to end in one buffer, sorted and spilled as
//! a run to an unnamed spill file ([`Spill`]) whenever the buffer outgrows its share, and
//! merged back from the runs at the end, each name once.
//!
//! No other part of compaction holds more than a batch of a day's names: the listing is
//! read in batches (`scan.rs`) and the deletions go in chunks (`day.rs`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;

use tmpa_core::{Error, Root};

use crate::spill::Spill;

/// Runs merged at once; more are first merged in groups of this many into runs of a new
/// spill file (one more pass over the names), so that the merge's buffers stay bounded
/// whatever the number of runs.
const FAN_IN_MAX: usize = 64;
/// Read buffer of one run in a merge: [`FAN_IN_MAX`] of them take 512 KiB.
const RUN_BUF_BYTES: usize = 8 << 10;
/// What a name held costs besides its bytes: its offset and length.
const ENTRY_BYTES: usize = size_of::<(u32, u8)>();

/// File names gathered within a memory bound, given back sorted, each once.
#[derive(Debug)]
pub(crate) struct NameSort {
    /// What the buffer may hold.
    bytes_max: usize,
    /// The names held, end to end: allocated at the first name, never grown.
    bytes: Vec<u8>,
    /// Offset and length of each name held, in `bytes`: allocated with it, never grown.
    list: Vec<(u32, u8)>,
    /// The runs spilled so far.
    spill: Option<Spill>,
}

impl NameSort {
    /// An empty set that holds at most `bytes_max` bytes of names in memory, or (for a
    /// bound smaller than that) the longest name.
    pub(crate) fn new(bytes_max: usize) -> NameSort {
        NameSort {
            bytes_max,
            bytes: Vec::new(),
            list: Vec::new(),
            spill: None,
        }
    }

    /// Memory held, in bytes.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.bytes.capacity() + self.list.capacity() * ENTRY_BYTES
    }

    /// Sorted runs spilled to disk so far.
    #[cfg(test)]
    fn runs(&self) -> usize {
        self.spill.as_ref().map_or(0, Spill::runs)
    }

    /// Adds `name` (a file name: at most 255 bytes). When the buffer is full, the names
    /// it holds are first spilled as a sorted run.
    ///
    /// # Errors
    /// [`Error::Io`] naming the spill file.
    pub(crate) fn push(&mut self, root: &Root, name: &OsStr) -> tmpa_core::Result<()> {
        if self.list.capacity() == 0 {
            // An eighth for the entries: room for names of 56 bytes on average, and
            // longer ones (`evt_` and `.json` around an id) fill the bytes first.
            let entries = (self.bytes_max / 8 / ENTRY_BYTES).max(1);
            self.list.reserve_exact(entries);
            let names = self
                .bytes_max
                .saturating_sub(self.list.capacity() * ENTRY_BYTES);
            self.bytes.reserve_exact(names.max(usize::from(u8::MAX)));
        }
        let full = self.list.len() == self.list.capacity()
            || self.bytes.len() + name.len() > self.bytes.capacity();
        if full {
            self.spill_run(root)?;
        }
        let offset = u32::try_from(self.bytes.len()).expect("a buffer under 4 GiB");
        let len = u8::try_from(name.len()).expect("a file name is at most 255 bytes");
        self.bytes.extend_from_slice(name.as_bytes());
        self.list.push((offset, len));
        Ok(())
    }

    /// Calls `f` with every name added, once each, in byte order (`OsStr`'s order).
    ///
    /// # Errors
    /// `f`'s; [`Error::Io`] naming a spill file.
    pub(crate) fn for_each(
        mut self,
        root: &Root,
        mut f: impl FnMut(&OsStr) -> tmpa_core::Result<()>,
    ) -> tmpa_core::Result<()> {
        if self.spill.is_none() {
            self.sort();
            let mut last: Option<&[u8]> = None;
            for &entry in &self.list {
                let name = self.name(entry);
                if last != Some(name) {
                    f(OsStr::from_bytes(name))?;
                }
                last = Some(name);
            }
            return Ok(());
        }
        // The last names go to disk too, so that the merge takes runs only; the buffer's
        // memory is then given back before the merge takes its own.
        if !self.list.is_empty() {
            self.spill_run(root)?;
        }
        let mut spill = self.spill.take().expect("spilled above");
        drop(self);
        while spill.runs() > FAN_IN_MAX {
            let mut fewer = Spill::create(root)?;
            for first in (0..spill.runs()).step_by(FAN_IN_MAX) {
                let mut run = fewer.run_writer();
                merge(
                    &spill,
                    first..spill.runs().min(first + FAN_IN_MAX),
                    |name| write_name(&mut run, name).map_err(|e| run.error(e)),
                )?;
                run.finish()?;
            }
            spill = fewer;
        }
        merge(&spill, 0..spill.runs(), |name| f(OsStr::from_bytes(name)))
    }

    fn name(&self, (offset, len): (u32, u8)) -> &[u8] {
        let start = offset as usize;
        &self.bytes[start..start + usize::from(len)]
    }

    /// Sorts the names held.
    fn sort(&mut self) {
        let mut list = std::mem::take(&mut self.list);
        list.sort_unstable_by(|&a, &b| self.name(a).cmp(self.name(b)));
        self.list = list;
    }

    /// Writes the names held to the spill file as one sorted run, and forgets them.
    fn spill_run(&mut self, root: &Root) -> tmpa_core::Result<()> {
        self.sort();
        if self.spill.is_none() {
            self.spill = Some(Spill::create(root)?);
        }
        let spill = self.spill.as_mut().expect("created above");
        let mut run = spill.run_writer();
        for &(offset, len) in &self.list {
            let start = offset as usize;
            let name = &self.bytes[start..start + usize::from(len)];
            write_name(&mut run, name).map_err(|e| run.error(e))?;
        }
        run.finish()?;
        self.bytes.clear();
        self.list.clear();
        Ok(())
    }
}

/// A name as a run holds it: its length in one byte, then its bytes.
fn write_name(out: &mut impl Write, name: &[u8]) -> io::Result<()> {
    let len = u8::try_from(name.len()).expect("a file name is at most 255 bytes");
    out.write_all(&[len])?;
    out.write_all(name)
}

/// Reads the next name of a run into `name`; `false` at the run's end.
fn read_name(input: &mut impl Read, name: &mut Vec<u8>) -> io::Result<bool> {
    let mut len = [0u8; 1];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    name.resize(usize::from(len[0]), 0);
    input.read_exact(name).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            io::Error::new(io::ErrorKind::InvalidData, "spill file ends inside a name")
        }
        _ => e,
    })?;
    Ok(true)
}

/// Merges the sorted runs `runs` of `spill`, calling `f` with each name once, in order.
fn merge(
    spill: &Spill,
    runs: std::ops::Range<usize>,
    mut f: impl FnMut(&[u8]) -> tmpa_core::Result<()>,
) -> tmpa_core::Result<()> {
    let read_error = |e| Error::io("read", spill.path(), e);
    let mut readers = Vec::with_capacity(runs.len());
    // Each run's next name, smallest on top (ties: the lower run, which is as good).
    let mut heads = BinaryHeap::with_capacity(runs.len());
    for (k, i) in runs.enumerate() {
        let mut input = spill.run(i, RUN_BUF_BYTES);
        let mut head = Vec::new();
        if read_name(&mut input, &mut head).map_err(read_error)? {
            heads.push(Reverse((head, k)));
        }
        readers.push(input);
    }
    // The name given last, whose buffer is reused once the next one differs.
    let mut last: Vec<u8> = Vec::new();
    let mut any = false;
    while let Some(Reverse((name, k))) = heads.pop() {
        if !any || name != last {
            f(&name)?;
            any = true;
        }
        let mut next = std::mem::replace(&mut last, name);
        if read_name(&mut readers[k], &mut next).map_err(read_error)? {
            heads.push(Reverse((next, k)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::*;

    fn root() -> (tempfile::TempDir, Root) {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(tmp.path().join("token_stats")).expect("mkdir");
        let root = Root::open(tmp.path()).expect("root");
        (tmp, root)
    }

    /// Names with repeats, in an order that is not theirs, some prefixes of others (the
    /// order the summary's stamp hashes them in is the bytes', `OsStr`'s).
    fn names(n: usize) -> Vec<OsString> {
        (0..n)
            .map(|i| {
                let k = (i * 7919) % (n / 2 + 1);
                let tail = if k.is_multiple_of(3) { "" } else { "-x" };
                OsString::from(format!("evt_{k:x}{tail}.json"))
            })
            .collect()
    }

    fn sorted_once(root: &Root, bytes_max: usize, input: &[OsString]) -> (Vec<OsString>, usize) {
        let mut s = NameSort::new(bytes_max);
        for n in input {
            s.push(root, n).expect("push");
            assert!(
                s.bytes() <= bytes_max.max(usize::from(u8::MAX) + ENTRY_BYTES),
                "held {} over {bytes_max}",
                s.bytes()
            );
        }
        let runs = s.runs();
        let mut out = Vec::new();
        s.for_each(root, |n| {
            out.push(n.to_os_string());
            Ok(())
        })
        .expect("for_each");
        (out, runs)
    }

    /// In memory, spilled in a few runs, and spilled in more runs than one merge takes
    /// (merged in two passes): the same names, sorted as `OsStr` sorts them, each once;
    /// the buffer never holds more than its bound; and no spill file keeps a name.
    #[test]
    fn names_come_back_sorted_once_whatever_the_bound() {
        let (_tmp, root) = root();
        let input = names(20_000);
        let mut expected = input.clone();
        expected.sort();
        expected.dedup();
        for (bytes_max, spilled) in [(16 << 20, false), (64 << 10, true), (2 << 10, true)] {
            let (out, runs) = sorted_once(&root, bytes_max, &input);
            assert_eq!(out, expected, "bound {bytes_max}");
            assert_eq!(runs > 0, spilled, "bound {bytes_max}: {runs} runs");
            if bytes_max == 2 << 10 {
                assert!(
                    runs > FAN_IN_MAX * 2,
                    "{runs} runs: more than one merge takes"
                );
            }
        }
        let spill_dir = root.path().join(crate::spill::spill_dir_rel());
        assert_eq!(std::fs::read_dir(spill_dir).expect("spill dir").count(), 0);
        let (out, _) = sorted_once(&root, 1 << 10, &[]);
        assert!(out.is_empty());
    }
}
