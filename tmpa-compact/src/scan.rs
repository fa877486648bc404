//! Reading a day for compaction: `_compacted.json` once (validated, its summary folded, its
//! ids hashed, its events kept in memory only when it is small next to the budget), then
//! the loose files in batches on every core, each event copied into the arena as canonical
//! JSON with a fixed-size record; when the records outgrow the budget they are sorted and
//! spilled as a run.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use tmpa_core::maintenance::{
    COMPACTED_BYTES_MAX, COMPACTED_NAME, Dir, PARALLEL_FILES_MIN, READ_THREADS_MAX, RawEvent,
    Stamp, SummaryFold, VisitError, cores_up_to, fold_within_budget, is_event_name, open_compacted,
    read_loose_raw, visit_compacted, visit_compacted_slice,
};
use tmpa_core::{Day, Error, Problem, Root};

use crate::arena::Arena;
use crate::names::NameSort;
use crate::record::{Class, CompactedRec, Instant, LooseRec, cmp_key};
use crate::spill::{PositionedReader, Spill};

/// Names read per chunk (on every core, then moved into the day's records).
const READ_CHUNK_NAMES: usize = 4096;
/// Bytes of events the readers of one chunk hold at most (plus one event per reader):
/// a chunk ends at [`READ_CHUNK_NAMES`] files or at this many bytes, whichever comes
/// first, so that the readers' buffers are bounded whatever the size of the events.
pub(crate) const READ_CHUNK_BYTES: usize = 8 << 20;
/// The share of the budget that a batch of the listing holds (names and inode numbers,
/// sorted by inode): with the default budget, a day of up to about 100,000 files of long
/// names (a 100-byte id) is read in one pass in inode order.
const LISTING_SHARE: usize = 8;
/// The share of the budget that the names of the loose files left on disk hold
/// ([`NameSort`]: beyond it they are spilled in sorted runs).
const NAMES_SHARE: usize = 16;
/// A `_compacted.json` up to this share of the budget is held in memory (its canonical
/// bytes and records take about its size again); a larger one is re-read from disk by
/// each pass of the merge.
const COMPACTED_IN_MEMORY_SHARE: u64 = 4;
/// Buffer of a streamed `_compacted.json`.
const STREAM_BUF_BYTES: usize = 256 << 10;
/// A run is never smaller than this, whatever else the budget holds.
pub(crate) const RUN_BYTES_MIN: usize = 32 << 10;

/// What compaction is told per day.
#[derive(Clone, Copy, Debug)]
pub struct DayOptions {
    /// Bytes of event data held in memory before runs are spilled to disk
    /// (`--memory-budget`).
    pub memory_budget_bytes: u64,
    /// Whether a plan is being applied (`--apply-plan`): then only the loose files it
    /// lists, unchanged, are merged.
    pub applying_plan: bool,
    /// `--pace`: when not zero, loose files are read on one thread in batches of
    /// [`tmpa_maint::PACE_BATCH`] with a pause after each ([`tmpa_maint::Pacer`]: at least
    /// this, and five times what the batch took), so that a live service writing to the
    /// same disk finds the device's queue nearly empty most of the time.
    pub pace: std::time::Duration,
    /// The hash of an event id, for the index of compacted ids; tests substitute a weak
    /// one to exercise collisions.
    pub(crate) id_hash: fn(&[u8]) -> u64,
}

impl DayOptions {
    /// Options with a memory budget of `memory_budget_bytes`.
    pub fn new(memory_budget_bytes: u64, applying_plan: bool) -> DayOptions {
        DayOptions {
            memory_budget_bytes,
            applying_plan,
            pace: std::time::Duration::ZERO,
            id_hash,
        }
    }
}

/// Decides, while a plan is applied, whether a loose file read (`evt_{id}.json`, its stamp
/// and SHA-256) takes part in this run; one that does not is left for the next run.
pub(crate) type Admit<'a> = dyn FnMut(&OsStr, &Stamp, &[u8; 32]) -> bool + 'a;

/// The hash of an event id: SipHash with fixed keys (the same in every run).
fn id_hash(id: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = std::hash::DefaultHasher::new();
    h.write(id);
    h.finish()
}

/// Where the compacted events come from, in each pass of the merge.
#[derive(Debug)]
pub(crate) enum CompactedSrc {
    /// No `_compacted.json`.
    Absent,
    /// Held in memory, in file order.
    Memory {
        arena: Arena,
        recs: Vec<CompactedRec>,
    },
    /// Re-read from the file opened at the scan (the same inode, whatever is renamed over
    /// its name meanwhile), checked unchanged around each pass.
    Stream {
        file: File,
        stamp: Stamp,
        path: PathBuf,
    },
}

impl CompactedSrc {
    /// Calls `f` with each compacted event's instant, id and canonical JSON, in file
    /// order.
    ///
    /// # Errors
    /// `f`'s error; an [`Error::Io`] reading the file; an error naming it when it changed
    /// since the scan.
    pub(crate) fn for_each(
        &self,
        day: Day,
        mut f: impl FnMut(Instant, &[u8], &[u8]) -> tmpa_core::Result<()>,
    ) -> tmpa_core::Result<()> {
        match self {
            CompactedSrc::Absent => Ok(()),
            CompactedSrc::Memory { arena, recs } => recs
                .iter()
                .try_for_each(|r| f(r.instant, r.id(arena), r.json(arena))),
            CompactedSrc::Stream { file, stamp, path } => {
                let unchanged = || -> tmpa_core::Result<()> {
                    let now = tmpa_core::maintenance::Meta::of_fd(file)
                        .map_err(|e| Error::io("stat", path, e))?;
                    // Not the ctime: replacing the name (the new `_compacted.json`)
                    // unlinks this inode, which changes its ctime and nothing else.
                    if now.stamp.same_but_ctime(stamp) {
                        Ok(())
                    } else {
                        Err(Error::io(
                            "read",
                            path,
                            std::io::Error::other("changed while it was being compacted"),
                        ))
                    }
                };
                unchanged()?;
                let input = BufReader::with_capacity(
                    STREAM_BUF_BYTES,
                    PositionedReader {
                        file,
                        pos: 0,
                        end: u64::MAX,
                    },
                );
                let mut scratch = Vec::new();
                visit_compacted(input, path, day, |e| {
                    scratch.clear();
                    e.write_canonical(&mut scratch);
                    f(e.instant().into(), e.id().as_str().as_bytes(), &scratch)
                })
                .map_err(|e| match e {
                    VisitError::File(e) | VisitError::Visitor(e) => e,
                })?;
                unchanged()
            }
        }
    }

    /// Memory it holds, in bytes.
    fn bytes(&self) -> usize {
        match self {
            CompactedSrc::Memory { arena, recs } => {
                arena.bytes() + recs.capacity() * size_of::<CompactedRec>()
            }
            CompactedSrc::Absent | CompactedSrc::Stream { .. } => 0,
        }
    }
}

/// A day's `_compacted.json`, read once.
#[derive(Debug)]
pub(crate) struct CompactedDay {
    pub(crate) src: CompactedSrc,
    /// The file read, held open, if there is one.
    pub(crate) file: Option<File>,
    /// Its stamp.
    pub(crate) stamp: Option<Stamp>,
    /// The hashes of its ids, sorted.
    ids: Vec<u64>,
    /// Its events.
    pub(crate) events: u64,
    /// Its events folded into the summary.
    pub(crate) fold: SummaryFold,
}

impl CompactedDay {
    /// Whether some compacted id may be `id` (exactly when its hash is among theirs).
    fn may_hold(&self, hash: u64) -> bool {
        self.ids.binary_search(&hash).is_ok()
    }

    /// Memory it holds, in bytes.
    pub(crate) fn bytes(&self) -> usize {
        self.src.bytes() + self.ids.capacity() * size_of::<u64>()
    }
}

/// Reads the `_compacted.json` of the day directory `dir`.
///
/// # Errors
/// The problem that makes it unusable (then the day must be left untouched): not the
/// format, an id twice, unreadable.
pub(crate) fn scan_compacted(
    dir: &Dir,
    day: Day,
    opts: &DayOptions,
) -> Result<CompactedDay, Problem> {
    let path = dir.join(COMPACTED_NAME);
    let unusable = |e: Error| Problem::from_error(&path, e);
    let mut c = CompactedDay {
        src: CompactedSrc::Absent,
        file: None,
        stamp: None,
        ids: Vec::new(),
        events: 0,
        fold: SummaryFold::new(day),
    };
    let Some((file, meta)) = open_compacted(dir).map_err(unusable)? else {
        return Ok(c);
    };
    c.stamp = Some(meta.stamp);
    let mut fold = SummaryFold::new(day);
    let mut ids = Vec::new();
    let mut count = |e: &RawEvent| {
        fold.add(
            e.user_id(),
            e.model(),
            e.prompt_tokens(),
            e.completion_tokens(),
        );
        ids.push((opts.id_hash)(e.id().as_str().as_bytes()));
    };
    if meta.stamp.size <= opts.memory_budget_bytes / COMPACTED_IN_MEMORY_SHARE {
        let mut bytes = Vec::with_capacity(usize::try_from(meta.stamp.size).unwrap_or(0));
        (&file)
            .take(COMPACTED_BYTES_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| unusable(Error::io("read", &path, e)))?;
        let (mut arena, mut recs, mut scratch) = (Arena::default(), Vec::new(), Vec::new());
        visit_compacted_slice(&bytes, &path, day, |e| {
            count(&e);
            scratch.clear();
            e.write_canonical(&mut scratch);
            let id = e.id().as_str().as_bytes();
            recs.push(CompactedRec {
                instant: e.instant().into(),
                span: arena.push(&scratch, id),
                id_len: id_len(id),
            });
            Ok::<(), std::convert::Infallible>(())
        })
        .map_err(|e| unusable(e.into_file_error()))?;
        recs.shrink_to_fit();
        c.src = CompactedSrc::Memory { arena, recs };
    } else {
        let input = BufReader::with_capacity(
            STREAM_BUF_BYTES,
            PositionedReader {
                file: &file,
                pos: 0,
                end: u64::MAX,
            },
        );
        visit_compacted(input, &path, day, |e| {
            count(&e);
            Ok::<(), std::convert::Infallible>(())
        })
        .map_err(|e| unusable(e.into_file_error()))?;
        c.src = CompactedSrc::Stream {
            file: file
                .try_clone()
                .map_err(|e| unusable(Error::io("open", &path, e)))?,
            stamp: meta.stamp,
            path: path.clone(),
        };
    }
    c.file = Some(file);
    ids.sort_unstable();
    c.events = ids.len() as u64;
    c.ids = ids;
    c.fold = fold;
    check_unique_ids(&c, day, opts, &path).map_err(unusable)?;
    Ok(c)
}

/// The id length as the records hold it (ids are at most 246 bytes).
fn id_len(id: &[u8]) -> u16 {
    u16::try_from(id.len()).expect("an event id is at most 246 bytes")
}

/// An id twice in `_compacted.json` makes it corrupt. Equal hashes are looked at once
/// more, exactly (they are rare: the same id, or a collision).
fn check_unique_ids(
    c: &CompactedDay,
    day: Day,
    opts: &DayOptions,
    path: &std::path::Path,
) -> tmpa_core::Result<()> {
    let mut twice: Vec<u64> = c
        .ids
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    if twice.is_empty() {
        return Ok(());
    }
    twice.dedup();
    let mut seen: HashMap<Vec<u8>, ()> = HashMap::new();
    c.src.for_each(day, |_, id, _| {
        if twice.binary_search(&(opts.id_hash)(id)).is_err() {
            return Ok(());
        }
        if seen.insert(id.to_vec(), ()).is_some() {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                reason: format!("event id {} appears twice", String::from_utf8_lossy(id)),
            });
        }
        Ok(())
    })
}

/// A day's loose events, read.
#[derive(Debug)]
pub(crate) struct LooseDay {
    /// The canonical JSON and ids of the records held.
    pub(crate) arena: Arena,
    /// The records held: all of them sorted when nothing was spilled, else none.
    pub(crate) recs: Vec<LooseRec>,
    /// The runs on disk, when the day did not fit the budget.
    pub(crate) spill: Option<Spill>,
    /// What is known of each record, by ordinal.
    pub(crate) classes: Vec<Class>,
    /// `evt_*` names listed that gave no record (corrupt, odd, gone since listed, or not
    /// admitted by the plan being applied).
    pub(crate) unloaded: NameSort,
    /// Why each corrupt or odd file cannot be used.
    pub(crate) problems: Vec<Problem>,
    /// The loose events known to be new, folded into the summary.
    pub(crate) fold: SummaryFold,
    /// Records whose id's hash is among the compacted ones (the merge decides them).
    pub(crate) suspects: u64,
}

impl LooseDay {
    /// Valid loose events read.
    pub(crate) fn count(&self) -> usize {
        self.classes.len()
    }

    /// Memory the current run takes (its records, and its bytes rounded up to chunks):
    /// what is compared with the budget. The memory held is at most about twice the
    /// records' part of it (a vector's spare capacity), and stays at that once a run has
    /// been spilled: the next run reuses it.
    fn run_bytes(&self) -> usize {
        self.arena.in_use() + self.recs.len() * size_of::<LooseRec>()
    }

    fn sort(&mut self) {
        let arena = &self.arena;
        self.recs
            .sort_unstable_by(|a, b| cmp_key((a.instant, a.id(arena)), (b.instant, b.id(arena))));
    }

    /// Sorts the records held and writes them to the spill file as one run.
    fn spill_run(&mut self, root: &Root) -> tmpa_core::Result<()> {
        if self.recs.is_empty() {
            return Ok(());
        }
        self.sort();
        if self.spill.is_none() {
            self.spill = Some(Spill::create(root)?);
        }
        let spill = self.spill.as_mut().expect("created above");
        spill.write_run(&self.recs, &self.arena)?;
        self.recs.clear();
        self.arena.clear();
        Ok(())
    }
}

/// Reads every loose event file of the day directory `dir`, listing it in batches.
///
/// # Errors
/// When the directory cannot be listed, or the spill file cannot be written.
pub(crate) fn scan_loose(
    root: &Root,
    dir: &Dir,
    day: Day,
    compacted: &CompactedDay,
    opts: &DayOptions,
    mut admit: Option<&mut Admit<'_>>,
) -> tmpa_core::Result<LooseDay> {
    let budget = usize::try_from(opts.memory_budget_bytes).unwrap_or(usize::MAX);
    // The listing batch and the names left come out of the budget too.
    let listing_bytes_max = budget / LISTING_SHARE;
    let run_bytes_max = budget
        .saturating_sub(compacted.bytes())
        .saturating_sub(listing_bytes_max)
        .saturating_sub(budget / NAMES_SHARE)
        .max(RUN_BYTES_MIN);
    let mut l = LooseDay {
        arena: Arena::with_chunk_bytes(run_bytes_max / 8),
        recs: Vec::new(),
        spill: None,
        classes: Vec::new(),
        unloaded: NameSort::new(budget / NAMES_SHARE),
        problems: Vec::new(),
        fold: SummaryFold::new(day),
        suspects: 0,
    };
    let threads = cores_up_to(READ_THREADS_MAX);
    // Paced: one read at a time in the device's queue, and a pause per batch.
    let mut pacer = tmpa_maint::Pacer::new(opts.pace);
    let paced = pacer.is_paced();
    let chunk_names = if paced {
        tmpa_maint::PACE_BATCH
    } else {
        READ_CHUNK_NAMES
    };
    let mut entries = dir.entries()?;
    let mut names = Names::default();
    loop {
        names.clear();
        for entry in entries.by_ref() {
            let entry = entry?;
            if is_event_name(&entry.name) {
                names.push(entry.ino, &entry.name);
                // At least a read chunk's worth, whatever the budget.
                if names.len() >= READ_CHUNK_NAMES && names.bytes() >= listing_bytes_max {
                    break;
                }
            }
        }
        if names.len() == 0 {
            break;
        }
        // Read in inode order: the inode tables and the files' blocks are then read in
        // disk order (2x faster cold than directory order on ext4 at 50k files).
        names.sort_by_inode();
        let mut start = 0;
        while start < names.len() {
            if paced && start > 0 {
                pacer.pause(1);
            }
            let chunk = start..names.len().min(start + chunk_names);
            let threads = if paced || chunk.len() < PARALLEL_FILES_MIN {
                1
            } else {
                threads
            };
            let (outs, next) = read_batch(dir, &names, chunk, threads, compacted, opts);
            for out in outs {
                take_batch(root, &mut l, out, admit.as_deref_mut(), |l| {
                    if l.run_bytes() > run_bytes_max {
                        l.spill_run(root)?;
                    }
                    Ok(())
                })?;
            }
            start = next;
        }
    }
    if l.spill.is_some() {
        l.spill_run(root)?;
        l.arena = Arena::default();
        l.recs = Vec::new();
    } else {
        l.sort();
    }
    l.problems.sort();
    Ok(l)
}

/// Names listed, with their inode numbers, in one buffer.
#[derive(Debug, Default)]
struct Names {
    bytes: Vec<u8>,
    /// Inode number, offset and length of each name in `bytes`.
    list: Vec<(u64, u32, u8)>,
}

impl Names {
    /// Memory held, about: what the names take, and as much again of spare capacity at
    /// most (a vector grows by doubling; the next batch reuses it).
    fn bytes(&self) -> usize {
        2 * (self.bytes.len() + self.list.len() * size_of::<(u64, u32, u8)>())
    }

    fn push(&mut self, ino: u64, name: &OsStr) {
        let offset = u32::try_from(self.bytes.len()).expect("names of a batch under 4 GiB");
        // A file name is at most 255 bytes.
        let len = u8::try_from(name.len()).expect("a file name is at most 255 bytes");
        self.bytes.extend_from_slice(name.as_bytes());
        self.list.push((ino, offset, len));
    }

    fn len(&self) -> usize {
        self.list.len()
    }

    fn get(&self, i: usize) -> &OsStr {
        let (_, offset, len) = self.list[i];
        let start = offset as usize;
        OsStr::from_bytes(&self.bytes[start..start + usize::from(len)])
    }

    fn sort_by_inode(&mut self) {
        self.list.sort_unstable_by_key(|&(ino, _, _)| ino);
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.list.clear();
    }
}

/// Moves what one reader found into the day's records, calling `after_each` after each
/// one (which spills the run when it outgrows the budget).
fn take_batch(
    root: &Root,
    l: &mut LooseDay,
    out: ReaderOut,
    mut admit: Option<&mut Admit<'_>>,
    mut after_each: impl FnMut(&mut LooseDay) -> tmpa_core::Result<()>,
) -> tmpa_core::Result<()> {
    for it in &out.items {
        let json_end = it.offset + it.json_len;
        let id_end = json_end + usize::from(it.id_len);
        let id = &out.bytes[json_end..id_end];
        if let Some(admit) = admit.as_deref_mut() {
            let name = event_file_name_of(id);
            if !admit(&name, &it.stamp, &it.sha256) {
                l.unloaded.push(root, &name)?;
                continue;
            }
        }
        if !it.suspect {
            let user_end = id_end + it.user_len;
            let text = |r: std::ops::Range<usize>| {
                std::str::from_utf8(&out.bytes[r]).expect("copied from a JSON string")
            };
            l.fold.add(
                text(id_end..user_end),
                text(user_end..user_end + it.model_len),
                it.prompt_tokens,
                it.completion_tokens,
            );
        }
        let span = l.arena.push(&out.bytes[it.offset..json_end], id);
        let ordinal = u32::try_from(l.classes.len()).expect("fewer than 4G events a day");
        l.classes.push(if it.suspect {
            Class::Suspect
        } else {
            Class::Added
        });
        l.suspects += u64::from(it.suspect);
        l.recs.push(LooseRec {
            instant: it.instant,
            span,
            id_len: it.id_len,
            ordinal,
            stamp: it.stamp,
            sha256: it.sha256,
        });
        after_each(l)?;
    }
    for name in &out.unloaded {
        l.unloaded.push(root, name)?;
    }
    l.problems.extend(out.problems);
    Ok(())
}

/// `evt_{id}.json` of an id held as bytes (valid UTF-8: it came out of a JSON string).
pub(crate) fn event_file_name_of(id: &[u8]) -> OsString {
    let mut name = Vec::with_capacity(id.len() + 9);
    name.extend_from_slice(b"evt_");
    name.extend_from_slice(id);
    name.extend_from_slice(b".json");
    OsString::from_vec(name)
}

/// One event read by a reader thread: its canonical JSON, id, user id and model, end to
/// end at `offset` in the reader's bytes, and what the summary counts.
struct Item {
    instant: Instant,
    offset: usize,
    json_len: usize,
    id_len: u16,
    user_len: usize,
    model_len: usize,
    prompt_tokens: u64,
    completion_tokens: u64,
    suspect: bool,
    stamp: Stamp,
    sha256: [u8; 32],
}

/// What one reader thread found in a batch.
struct ReaderOut {
    bytes: Vec<u8>,
    items: Vec<Item>,
    unloaded: Vec<OsString>,
    problems: Vec<Problem>,
}

/// Reads files of `names` from `chunk.start` on `threads` threads, each taking the next
/// name when done, until the chunk ends or the readers hold [`READ_CHUNK_BYTES`]; returns
/// what they read and the index of the first name not read.
fn read_batch(
    dir: &Dir,
    names: &Names,
    chunk: std::ops::Range<usize>,
    threads: usize,
    compacted: &CompactedDay,
    opts: &DayOptions,
) -> (Vec<ReaderOut>, usize) {
    let new_out = || ReaderOut {
        bytes: Vec::new(),
        items: Vec::new(),
        unloaded: Vec::new(),
        problems: Vec::new(),
    };
    let (outs, read) =
        fold_within_budget(threads, chunk.len(), READ_CHUNK_BYTES, new_out, |out, i| {
            let before = out.bytes.len();
            read_one(dir, names.get(chunk.start + i), compacted, opts, out);
            out.bytes.len() - before
        });
    (outs, chunk.start + read)
}

fn read_one(
    dir: &Dir,
    name: &OsStr,
    compacted: &CompactedDay,
    opts: &DayOptions,
    out: &mut ReaderOut,
) {
    let l = match read_loose_raw(dir, name) {
        Ok(l) => l,
        Err(e) => {
            // A file removed since listing (by the backend) is simply not part of this
            // run; anything else is reported.
            if e.io_kind() != std::io::ErrorKind::NotFound {
                out.problems.push(Problem::from_error(&dir.join(name), e));
            }
            out.unloaded.push(name.to_os_string());
            return;
        }
    };
    let e = &l.event;
    let id = e.id().as_str().as_bytes();
    let offset = out.bytes.len();
    e.write_canonical(&mut out.bytes);
    let json_len = out.bytes.len() - offset;
    out.bytes.extend_from_slice(id);
    out.bytes.extend_from_slice(e.user_id().as_bytes());
    out.bytes.extend_from_slice(e.model().as_bytes());
    out.items.push(Item {
        instant: e.instant().into(),
        offset,
        json_len,
        id_len: id_len(id),
        user_len: e.user_id().len(),
        model_len: e.model().len(),
        prompt_tokens: e.prompt_tokens(),
        completion_tokens: e.completion_tokens(),
        suspect: compacted.may_hold((opts.id_hash)(id)),
        stamp: l.stamp,
        sha256: l.sha256,
    });
}
