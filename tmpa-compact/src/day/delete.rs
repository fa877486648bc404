//! The last step of a day: its verified loose files deleted in chunks through the one
//! deletion path (a dry run notes them in its plan instead), each with the receipt line
//! that names the `_compacted.json` holding its event.

use std::ffi::{OsStr, OsString};

use tmpa_core::maintenance::{COMPACTED_NAME, Dir, Stamp, hex, path_text};
use tmpa_core::{Problem, ProblemKind};
use tmpa_maint::{Deletion, Doomed, Outcome, Proof};

use super::{COMPARE_BUF_BYTES, DayWork, SharedRun, lock};
use crate::DayReport;
use crate::scan::event_file_name_of;

/// Loose files deleted per call of the deletion path: bounds the receipt lines and names
/// held at once (about 0.5 KiB each) whatever the day.
const DELETE_CHUNK: usize = 8192;

impl DayWork<'_> {
    /// Calls `f` with the name, stamp and SHA-256 of every loose file to delete, in
    /// inode order for a day held in memory (measurably faster on ext4), run by run for a
    /// spilled one.
    pub(super) fn each_deletable(
        &self,
        mut f: impl FnMut(OsString, Stamp, [u8; 32]) -> tmpa_core::Result<()>,
    ) -> tmpa_core::Result<()> {
        let classes = &self.loose.classes;
        match &self.loose.spill {
            None => {
                let arena = &self.loose.arena;
                let mut order: Vec<u32> = (0..self.loose.recs.len() as u32)
                    .filter(|&i| classes[self.loose.recs[i as usize].ordinal as usize].deletes())
                    .collect();
                order.sort_unstable_by_key(|&i| self.loose.recs[i as usize].stamp.ino);
                for i in order {
                    let rec = &self.loose.recs[i as usize];
                    f(event_file_name_of(rec.id(arena)), rec.stamp, rec.sha256)?;
                }
                Ok(())
            }
            Some(spill) => {
                for i in 0..spill.runs() {
                    let mut reader = spill.reader(i, COMPARE_BUF_BYTES);
                    while reader.advance()? {
                        let s = reader.head().expect("advanced");
                        if classes[s.ordinal as usize].deletes() {
                            let stamp = s.stamp.expect("a record was read");
                            f(event_file_name_of(s.id()), stamp, s.sha256)?;
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// Deletes the verified loose files through the one deletion path, a chunk at a time
    /// (each chunk in inode order): receipt first, each file only if it is still exactly
    /// the file that was read, and only while the compacted file is still the one
    /// verified.
    pub(super) fn delete(
        &self,
        run: &SharedRun<'_>,
        held: Holder,
        r: &mut DayReport,
    ) -> tmpa_core::Result<()> {
        let (held_by, proof) = self.held_by();
        // Listed now, just before the deletions: a temporary of the same name is a write
        // of that file that died or is going on; its final file stays while it is there.
        let beside = tmpa_maint::finals_with_temporaries(self.dir)?;
        let mut chunk: Vec<(OsString, Stamp, [u8; 32])> = Vec::with_capacity(DELETE_CHUNK);
        let flush = |chunk: &mut Vec<(OsString, Stamp, [u8; 32])>,
                     r: &mut DayReport|
         -> tmpa_core::Result<()> {
            chunk.sort_unstable_by_key(|(_, stamp, _)| stamp.ino);
            let result = self.delete_chunk(run, chunk, held, &held_by, &proof, r);
            chunk.clear();
            result
        };
        self.each_deletable(|name, stamp, sha| {
            if beside.contains(&name) {
                r.beside_temporary += 1;
                return Ok(());
            }
            chunk.push((name, stamp, sha));
            if chunk.len() == DELETE_CHUNK {
                flush(&mut chunk, r)?;
            }
            Ok(())
        })?;
        flush(&mut chunk, r)
    }

    fn delete_chunk(
        &self,
        run: &SharedRun<'_>,
        chunk: &[(OsString, Stamp, [u8; 32])],
        held: Holder,
        held_by: &str,
        proof: &Proof,
        r: &mut DayReport,
    ) -> tmpa_core::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        let dir = self.dir;
        // The compacted file verified above must still be the one there (only a hand edit
        // could change it: another compaction waits for the lock).
        if let Holder::Verified(held) = held
            && (held.is_none() || dir.stat(COMPACTED_NAME)?.map(|c| c.stamp) != held)
        {
            for (name, _, _) in chunk {
                r.kept += 1;
                r.problems.push(Problem::new(
                    dir.join(name),
                    ProblemKind::Corrupt,
                    format!(
                        "{} changed after it was verified (kept)",
                        dir.join(COMPACTED_NAME).display()
                    ),
                ));
            }
            return Ok(());
        }
        let doomed: Vec<Doomed<'_>> = chunk
            .iter()
            .map(|(name, stamp, sha)| Doomed {
                dir,
                name: name.clone(),
                stamp: *stamp,
                line: deletion(dir, name, *stamp, sha, held_by, proof),
                lease: None,
            })
            .collect();
        // Held for the chunk: another day's thread reads, merges and writes meanwhile.
        let (outcomes, synced) = lock(run).dispose(doomed, |_| None)?.split();
        for ((name, _, _), outcome) in chunk.iter().zip(outcomes) {
            match outcome {
                Outcome::Deleted | Outcome::WouldDelete => r.deleted += 1,
                Outcome::Left | Outcome::Kept(tmpa_maint::Kept::Gone) => {}
                Outcome::Kept(k) => {
                    r.kept += 1;
                    r.problems
                        .push(Problem::new(dir.join(name), ProblemKind::Unsafe, k.words()));
                }
                Outcome::Failed(e) => return Err(e),
            }
        }
        synced
    }
}

/// What must still hold a day's loose events when their files go.
#[derive(Clone, Copy, Debug)]
pub(super) enum Holder {
    /// A dry run: the `_compacted.json` a real run would write and verify first.
    Planned,
    /// The `_compacted.json` verified, by its stamp (`None`: there is none, so nothing
    /// goes).
    Verified(Option<Stamp>),
}

/// The receipt line of a loose file deleted because its event is in the day's
/// `_compacted.json`; a dry run's plan lists the same.
fn deletion(
    dir: &Dir,
    name: &OsStr,
    stamp: Stamp,
    sha: &[u8; 32],
    held_by: &str,
    proof: &Proof,
) -> Deletion {
    Deletion {
        file: path_text(&dir.join(name)),
        bytes: stamp.size,
        sha256: hex(sha),
        stamp,
        held_by: held_by.to_owned(),
        proof: proof.clone(),
    }
}
