//! One day of compaction: read, classify, write `_compacted.json`, read it back and
//! compare, write `_summary.json`, then delete the verified loose files in chunks through
//! the one deletion path.

use std::ffi::OsStr;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use tmpa_core::maintenance::{
    AtomicFile, COMPACTED_NAME, CompactedWriter, Dir, Kind, ReadBack, SourceStamper, Stamp,
    SummaryFold, conflict_problem_of, hex, is_event_name, open_compacted, parse_compacted,
    path_text, read_cached, root_dir, salvage_compacted, source_stamp, write_summary,
};
use tmpa_core::{Day, Error, EventId, Problem, ProblemKind, Root, Summary};
use tmpa_maint::{Admission, Candidate, Proof, Run};

use crate::merge::{Cursor, Discard, Findings, Sink, merge_pass, resolve_pending};
use crate::names::NameSort;
use crate::record::Class;
use crate::scan::{
    Admit, CompactedDay, DayOptions, LooseDay, event_file_name_of, scan_compacted, scan_loose,
};
use crate::spill::PositionedReader;
use crate::{DayReport, DayStatus};

mod delete;

use delete::Holder;

/// The run, shared by the days compacted at once (see [`crate::compact`]): each takes it
/// for a call (a chunk of deletions, a plan lookup), never across its reads.
pub type SharedRun<'r> = std::sync::Mutex<&'r mut Run>;

/// The run, for one call.
fn lock<'a, 'r>(run: &'a SharedRun<'r>) -> std::sync::MutexGuard<'a, &'r mut Run> {
    // A panic elsewhere while holding it leaves the run as it was: go on with it.
    run.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Read buffer of the comparison with the file on disk.
const COMPARE_BUF_BYTES: usize = 256 << 10;

/// Compacts one day; never panics on bad input, never returns early without a report.
/// In [`tmpa_maint::Mode::KeepSources`] everything is written and verified but no loose
/// file is deleted.
pub fn compact_day(run: &SharedRun<'_>, day: Day, opts: &DayOptions) -> DayReport {
    let mut r = DayReport {
        day: day.to_string(),
        ..DayReport::default()
    };
    // Held by descriptor from here on: a directory swapped for a symlink meanwhile
    // cannot lead any read, write or delete of this run out of the root.
    let rel = Path::new("token_stats").join(day.to_string());
    let root = lock(run).root().clone();
    let dir = match root_dir(&root).open_dir(&rel) {
        Ok(h) => h,
        Err(e) => {
            r.status = if matches!(e, Error::Unsafe { .. }) {
                DayStatus::Skipped
            } else {
                DayStatus::Failed
            };
            r.error = Some(e.chain());
            return r;
        }
    };
    if let Some(r) = settled_day(&dir, day) {
        return r;
    }
    let compacted = match scan_compacted(&dir, day, opts) {
        Ok(c) => c,
        Err(mut p) => {
            r.status = DayStatus::Skipped;
            let (lost, lines) = what_compacting_would_lose(&dir, day, opts);
            p.reason = format!(
                "{} (day left untouched: {lost}; it may hold the only copy of deleted events)",
                p.reason
            );
            r.problems.push(p);
            r.problems.extend(lines);
            return r;
        }
    };
    let scanned = if opts.applying_plan {
        let mut admit = |name: &OsStr, stamp: &Stamp, sha: &[u8; 32]| {
            admit_planned(run, &dir, name, stamp, sha, &mut r)
        };
        let admit: &mut Admit<'_> = &mut admit;
        scan_loose(&root, &dir, day, &compacted, opts, Some(admit))
    } else {
        scan_loose(&root, &dir, day, &compacted, opts, None)
    };
    let loose = match scanned {
        Ok(l) => l,
        Err(e) => {
            r.status = DayStatus::Failed;
            r.error = Some(e.chain());
            return r;
        }
    };
    r.loose = loose.count();
    r.corrupt = loose.problems.len();
    r.already_compacted = usize::try_from(compacted.events).unwrap_or(usize::MAX);
    r.spilled_runs = loose.spill.as_ref().map_or(0, |s| s.runs());
    let mut work = DayWork {
        root: &root,
        dir: &dir,
        day,
        compacted,
        loose,
        conflicts: Vec::new(),
        duplicates: 0,
        added: 0,
        pace: opts.pace,
    };
    r.problems.append(&mut work.loose.problems);
    let outcome = work.classify().and_then(|()| {
        r.merged = count(work.added);
        r.duplicates = count(work.duplicates);
        r.conflicts = work.conflicts.len();
        r.events = count(work.compacted.events + work.added);
        for id in &work.conflicts {
            r.problems.push(conflict_problem_of(&dir, id));
        }
        if lock(run).dry_run() {
            work.plan(run, &mut r)
        } else {
            work.act(run, &mut r)
        }
    });
    if let Err(e) = outcome {
        r.status = DayStatus::Failed;
        r.error = Some(e.chain());
    }
    r.problems.sort();
    r
}

/// Applying a plan: whether the loose file `name` takes part in this run (the one plan
/// admission, [`tmpa_maint::Run::admit`], which reports a changed file itself). Only the
/// files the plan lists, unchanged, do; the others are left for the next run.
fn admit_planned(
    run: &SharedRun<'_>,
    dir: &Dir,
    name: &OsStr,
    stamp: &Stamp,
    sha: &[u8; 32],
    r: &mut DayReport,
) -> bool {
    let file = path_text(&dir.join(name));
    let sha = hex(sha);
    let group = [Candidate {
        file: &file,
        stamp,
        sha256: Some(&sha),
        held_by: None,
    }];
    match lock(run).admit(&group) {
        Admission::Admitted => true,
        Admission::NotInPlan => {
            r.not_in_plan += 1;
            false
        }
        Admission::Refused => {
            r.kept += 1;
            false
        }
    }
}

fn count(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// What building on the damaged `_compacted.json` of `dir` would lose, in words, and a
/// problem for each of its damaged lines ([`salvage_compacted`]); only the words when the
/// file is too large to read whole within a quarter of the memory budget.
fn what_compacting_would_lose(dir: &Dir, day: Day, opts: &DayOptions) -> (String, Vec<Problem>) {
    let path = dir.join(COMPACTED_NAME);
    let unknown = || "compacting it would lose what cannot be read of it".to_owned();
    let small = |m: &tmpa_core::maintenance::Meta| {
        m.stamp.size <= opts.memory_budget_bytes / 4 && m.kind == Kind::File
    };
    let bytes = match dir.stat(COMPACTED_NAME) {
        Ok(Some(m)) if small(&m) => match dir.read(COMPACTED_NAME, m.stamp.size) {
            Ok((b, _)) => b,
            Err(_) => return (unknown(), Vec::new()),
        },
        _ => return (unknown(), Vec::new()),
    };
    let strict = match parse_compacted(&bytes, &path, day) {
        Ok(_) => return (unknown(), Vec::new()),
        Err(e) => e,
    };
    let s = salvage_compacted(&bytes, &path, day, strict);
    let lines: Vec<Problem> = s
        .problems
        .into_iter()
        .filter(|p| p.line.is_some())
        .collect();
    let words = match s.lost {
        Some(lost) => format!(
            "compacting it would lose {lost} of its {} events ({} readable)",
            lost + s.events.len() as u64,
            s.events.len()
        ),
        None => format!(
            "{} events of it are readable, without checksums to tell whether they are intact",
            s.events.len()
        ),
    };
    (words, lines)
}

/// A day with no loose event file whose summary's stamp matches the directory is settled:
/// nothing to merge, delete or rewrite. Recognising it costs one listing and one `lstat`,
/// so nightly runs do not re-read the whole history. (A `_compacted.json` damaged in place
/// without a change of size or mtime is not noticed here; tmpa-patrol's corrupt_json check
/// parses it.) The listing stops at the first loose file and holds no name: a day of
/// millions of them is read within the budget by [`scan_loose`] alone.
fn settled_day(dir: &Dir, day: Day) -> Option<DayReport> {
    if has_loose_file(dir).unwrap_or(true) {
        return None;
    }
    let cached = read_cached(dir, day)?;
    let compacted = dir.stat(COMPACTED_NAME).ok()??;
    if compacted.kind != Kind::File || cached.source != source_stamp(Some(compacted.stamp), &[]) {
        return None;
    }
    let events = usize::try_from(cached.totals.events).ok()?;
    Some(DayReport {
        day: day.to_string(),
        status: DayStatus::Unchanged,
        already_compacted: events,
        events,
        ..DayReport::default()
    })
}

/// Whether `dir` holds a loose event file (`evt_*.json`), by a listing that stops at
/// the first.
fn has_loose_file(dir: &Dir) -> tmpa_core::Result<bool> {
    for entry in dir.entries()? {
        if is_event_name(&entry?.name) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A day read, being compacted.
struct DayWork<'d> {
    /// The root, where a spill file goes.
    root: &'d Root,
    dir: &'d Dir,
    day: Day,
    compacted: CompactedDay,
    loose: LooseDay,
    conflicts: Vec<EventId>,
    duplicates: u64,
    added: u64,
    /// `--pace` (the new `_compacted.json` written in steps when not zero).
    pace: std::time::Duration,
}

impl DayWork<'_> {
    /// One merge pass of the day into `sink`.
    fn pass(&mut self, sink: &mut dyn Sink) -> tmpa_core::Result<Findings> {
        let mut cursor = match &self.loose.spill {
            Some(spill) => Cursor::runs(spill)?,
            None => Cursor::memory(&self.loose.recs, &self.loose.arena),
        };
        merge_pass(
            &self.compacted.src,
            self.day,
            self.dir.path(),
            &mut cursor,
            &mut self.loose.classes,
            sink,
        )
    }

    /// Decides every loose event: new, duplicate or conflict. Only events whose id's hash
    /// is among the compacted ids need a pass of the merge (and, for those that meet no
    /// compacted event of their `ts`, an exact look-up of their ids).
    fn classify(&mut self) -> tmpa_core::Result<()> {
        if self.loose.suspects > 0 {
            let found = self.pass(&mut Discard)?;
            self.duplicates += found.duplicates;
            self.conflicts.extend(found.conflicts);
            let resolved = resolve_pending(
                &self.compacted.src,
                self.day,
                found.pending,
                &mut self.loose.classes,
                &mut self.loose.fold,
            )?;
            self.conflicts.extend(resolved.conflicts);
        }
        self.added = self
            .loose
            .classes
            .iter()
            .filter(|c| **c == Class::Added)
            .count() as u64;
        debug_assert!(
            !self
                .loose
                .classes
                .iter()
                .any(|c| matches!(c, Class::Suspect | Class::Pending))
        );
        self.conflicts.sort();
        Ok(())
    }

    fn events(&self) -> u64 {
        self.compacted.events + self.added
    }

    fn to_delete(&self) -> u64 {
        self.added + self.duplicates
    }

    /// The summary of the merged events (the compacted ones and the new ones).
    fn summary(&self) -> Summary {
        let mut fold = self.compacted.fold.clone();
        fold.absorb(self.loose.fold.clone());
        debug_assert_eq!(fold.events(), self.events());
        SummaryFold::finish(fold)
    }

    /// Dry run: what [`DayWork::act`] would do, changing nothing.
    fn plan(&mut self, run: &SharedRun<'_>, r: &mut DayReport) -> tmpa_core::Result<()> {
        // A new _compacted.json would be written when there is something new: its stamp
        // is not known yet.
        let stamp = self.compacted.stamp.filter(|_| self.added == 0);
        // A day with problems is never cached (see `act`): its stamp is not needed.
        if self.events() > 0 && r.problems.is_empty() {
            let mut summary = self.summary();
            summary.source = self.stamp_after(stamp, false)?;
            r.summary_rewritten =
                !summary_is_current(self.dir, self.day, &summary, stamp.is_some());
        }
        // The plan lists each file with the receipt line a real run would write for it:
        // the same disposal as a real run's, which the dry run's mode turns into notes.
        self.delete(run, Holder::Planned, r)?;
        r.status = DayStatus::Planned;
        Ok(())
    }

    /// Where the deleted loose files' data is held, as receipts say it.
    fn held_by(&self) -> (String, Proof) {
        (
            path_text(&self.dir.join(COMPACTED_NAME)),
            Proof::CompactedEvent {
                day: self.day.to_string(),
                held_events: self.events(),
            },
        )
    }

    /// Real run: write, verify, summary, receipt, delete.
    fn act(&mut self, run: &SharedRun<'_>, r: &mut DayReport) -> tmpa_core::Result<()> {
        if self.events() == 0 {
            r.status = DayStatus::Unchanged;
            return Ok(());
        }
        // Rewrite when there is something new, or when the file on disk is not the
        // canonical form of its own events (written by another tool): verification
        // compares bytes.
        let wrote = self.added > 0 || !self.matches_disk()?;
        if wrote {
            self.write()?;
        }
        // The compacted file verified is held open: its stamp is the one that must still
        // be there when the loose files go.
        let (held_file, held) = match open_compacted(self.dir)? {
            Some((f, m)) => (Some(f), Some(m.stamp)),
            None => (None, None),
        };
        let verified = self.to_delete() == 0
            || match &held_file {
                Some(f) => self.read_back(f)?,
                None => false,
            };
        if !verified {
            let reason = format!(
                "verification failed: {} does not read back as written (kept)",
                self.dir.join(COMPACTED_NAME).display()
            );
            self.each_deletable(|name, _, _| {
                r.kept += 1;
                r.problems.push(Problem::new(
                    self.dir.join(name),
                    ProblemKind::Corrupt,
                    reason.clone(),
                ));
                Ok(())
            })?;
        }
        let deleting = lock(run).mode().deletes() && verified && self.to_delete() > 0;
        // The summary is written before any deletion, so a crash after a deletion never
        // leaves a summary that misses the deleted events. A day with problems (corrupt or
        // conflicting loose files stay) is never cached: a cached summary is always a
        // whole day's (tmpa-core's `Root::summary`).
        if r.problems.is_empty() {
            let mut summary = self.summary();
            summary.source = self.stamp_after(held, !deleting)?;
            if !summary_is_current(self.dir, self.day, &summary, true) {
                write_summary(self.dir, &summary)?;
                r.summary_rewritten = true;
            }
        }
        if deleting {
            if !wrote && let Some(f) = &held_file {
                // An existing `_compacted.json` holds the loose events (an earlier run
                // wrote it, then stopped): made durable, file and directory, before any
                // source goes on its strength. A file this run wrote is durable already.
                let path = self.dir.join(COMPACTED_NAME);
                f.sync_all().map_err(|e| Error::io("fsync", &path, e))?;
                self.dir.sync()?;
            }
            self.delete(run, Holder::Verified(held), r)?;
        }
        r.status = if self.added == 0 && r.deleted == 0 && !r.summary_rewritten {
            DayStatus::Unchanged
        } else {
            DayStatus::Compacted
        };
        Ok(())
    }

    /// Whether the `_compacted.json` read is exactly the canonical form of its events.
    fn matches_disk(&mut self) -> tmpa_core::Result<bool> {
        let Some(file) = self.compacted.file.take() else {
            return Ok(false);
        };
        let same = self.read_back(&file);
        self.compacted.file = Some(file);
        same
    }

    /// Whether `file` holds exactly the bytes the merged events serialize to: the
    /// comparison streams both sides, in constant memory.
    fn read_back(&mut self, file: &File) -> tmpa_core::Result<bool> {
        let path = self.dir.join(COMPACTED_NAME);
        let disk = BufReader::with_capacity(
            COMPARE_BUF_BYTES,
            PositionedReader {
                file,
                pos: 0,
                end: u64::MAX,
            },
        );
        self.serialize_into(ReadBack::new(disk), "read", &path)?
            .finish()
            .map_err(|e| Error::io("read", &path, e))
    }

    /// Writes `_compacted.json` atomically from one merge pass.
    fn write(&mut self) -> tmpa_core::Result<()> {
        let f = AtomicFile::create_in(self.dir, COMPACTED_NAME.as_ref())?;
        let tmp = f.tmp_path();
        let paced = PacedFile {
            file: f,
            unsynced: 0,
            pacer: tmpa_maint::Pacer::new(self.pace),
        };
        // On an error the AtomicFile is dropped with the writer: its temporary goes.
        self.serialize_into(paced, "write", &tmp)?.file.commit()
    }

    /// Serializes the merged events as `_compacted.json` into `out` in one merge pass
    /// and gives `out` back; an error is `op` on `path`.
    fn serialize_into<W: std::io::Write>(
        &mut self,
        out: W,
        op: &'static str,
        path: &Path,
    ) -> tmpa_core::Result<W> {
        let writer = CompactedWriter::start(out, self.day).map_err(|e| Error::io(op, path, e))?;
        let mut sink = FileSink { writer, op, path };
        self.pass(&mut sink)?;
        sink.writer.finish().map_err(|e| Error::io(op, path, e))
    }

    /// The consistency stamp of the day directory as it will be once the loose files to
    /// delete are gone (or, with `keeping`, all still there). The names that stay are
    /// gathered with the ones the scan did not load ([`NameSort`]: spilled in sorted runs
    /// beyond its share of the budget) and stamped one at a time in name order, as they
    /// are now (one gone meanwhile is left out). Called once per day: it takes them.
    ///
    /// # Errors
    /// [`Error::Io`] naming a spill file.
    fn stamp_after(
        &mut self,
        compacted: Option<Stamp>,
        keeping: bool,
    ) -> tmpa_core::Result<String> {
        let mut remaining = std::mem::replace(&mut self.loose.unloaded, NameSort::new(0));
        for id in &self.conflicts {
            remaining.push(self.root, &event_file_name_of(id.as_str().as_bytes()))?;
        }
        if keeping && self.to_delete() > 0 {
            self.each_deletable(|name, _, _| remaining.push(self.root, &name))?;
        }
        let mut stamp = SourceStamper::new(compacted);
        remaining.for_each(self.root, |name| {
            if let Some(now) = self.dir.stat(name).ok().flatten() {
                stamp.add(name, &now.stamp);
            }
            Ok(())
        })?;
        Ok(stamp.finish())
    }
}

/// Bytes of a `_compacted.json` written between two `fdatasync`s in a paced run.
const PACE_WRITE_BYTES: usize = 256 << 10;

/// The new `_compacted.json`; in a paced run (`--pace`) written to the disk every
/// [`PACE_WRITE_BYTES`] with a pause after each ([`tmpa_maint::Pacer`]), so that a live service's fsyncs never
/// wait behind the whole file's writeback at commit.
struct PacedFile {
    file: AtomicFile,
    unsynced: usize,
    pacer: tmpa_maint::Pacer,
}

impl std::io::Write for PacedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        if self.pacer.is_paced() {
            self.unsynced += n;
            if self.unsynced >= PACE_WRITE_BYTES {
                self.unsynced = 0;
                self.file.sync_data()?;
                self.pacer.pause(1);
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// A sink writing the canonical `_compacted.json` into a writer (the new file, or the
/// comparison with the file on disk).
struct FileSink<'p, W: std::io::Write> {
    writer: CompactedWriter<W>,
    op: &'static str,
    path: &'p Path,
}

impl<W: std::io::Write> Sink for FileSink<'_, W> {
    fn event(&mut self, json: &[u8]) -> tmpa_core::Result<()> {
        self.writer
            .event(json)
            .map_err(|e| Error::io(self.op, self.path, e))
    }
}

/// Whether the cached summary already says exactly `summary` (when `compare_source`, its
/// stamp too).
fn summary_is_current(dir: &Dir, day: Day, summary: &Summary, compare_source: bool) -> bool {
    read_cached(dir, day).is_some_and(|c| {
        let mut c = c;
        if !compare_source {
            c.source.clone_from(&summary.source);
        }
        &c == summary
    })
}
