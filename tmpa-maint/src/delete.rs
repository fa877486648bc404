//! The one deletion path of the workspace: verify → receipt → re-check → `unlinkat` →
//! directory fsync. Compaction, archival and tmpclean all delete through
//! [`Run::delete_verified`]; nothing else in the workspace removes a data file.

use std::ffi::OsString;

use tmpa_core::maintenance::{Dir, Kind, Lease, Stamp};

use crate::receipt::{Deletion, ReceiptLine};
use crate::run::Run;

/// A file whose data the caller has verified to be durably elsewhere, about to be deleted.
#[derive(Debug)]
pub struct Doomed<'a> {
    /// Its directory, held by descriptor.
    pub dir: &'a Dir,
    /// Its name in `dir`.
    pub name: OsString,
    /// Its identity and times when its data was read and verified.
    pub stamp: Stamp,
    /// What the receipt says of it.
    pub line: Deletion,
    /// A write lease held on it (tmpclean): the deletion happens only while the lease is
    /// intact, and the lease is released only after the `unlinkat`.
    pub lease: Option<Lease>,
}

/// Why a doomed file was kept after all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kept {
    /// Its entry is no longer the file that was verified (another inode, size, mtime or
    /// ctime, or not a regular file).
    Changed,
    /// Its entry is gone (someone else removed it).
    Gone,
    /// Someone opened it while its lease was held (the opener waited; the file is kept).
    LeaseBroken,
    /// The caller's last check refused, in words (e.g. "its final file disappeared").
    Refused(String),
    /// A plan is being applied and this deletion is not the one it lists (not in the plan,
    /// changed since, or its data now held elsewhere), in words.
    NotAsPlanned(String),
}

impl Kept {
    /// The reason in words, for reports and the receipt's `kept` line.
    pub fn words(&self) -> String {
        match self {
            Kept::Changed => {
                "changed after it was verified (kept; the next run looks again)".into()
            }
            Kept::Gone => "gone before it could be deleted".into(),
            Kept::LeaseBroken => {
                "opened by another process during deletion (lease broken; kept)".into()
            }
            Kept::Refused(why) | Kept::NotAsPlanned(why) => why.clone(),
        }
    }
}

/// What became of one doomed file.
#[derive(Debug)]
pub enum Outcome {
    /// Deleted (its receipt line was durable first).
    Deleted,
    /// Kept, and why.
    Kept(Kept),
    /// The deletion failed (permission, immutable directory, I/O error): kept.
    Failed(tmpa_core::Error),
}

/// Directories fsynced together after a batch: concurrent fsyncs are committed together
/// by ext4 and xfs (one journal commit for many directories).
const SYNC_THREADS: usize = 16;
/// Files per `--pace` pause: a paced run pauses for `--pace` per this many files read (see
/// tmpa-compact) or deleted.
pub const PACE_BATCH: usize = 256;
/// In a paced run, deletions between two directory fsyncs, each followed by the same
/// share of `--pace`: each fsync commits a journal transaction of this many unlinks at
/// most, so a live service's own fsync never waits behind the metadata of a whole day's
/// deletions. (At full speed the directory is fsynced once, after the batch: every
/// fsync is a journal commit and a cache flush of the disk.)
const PACED_SYNC_BATCH: usize = PACE_BATCH / PACED_SHARE as usize;
const PACED_SHARE: u32 = 4;

impl Run {
    /// Deletes `doomed`, in the order given: first one receipt line each, appended and
    /// fsynced; then for each, immediately before its `unlinkat`, the last checks: its
    /// lease (if any) intact, its entry still a regular file with exactly the stamp that
    /// was verified, and `last_check` (`None` to go on, or why to keep it); then each
    /// directory is fsynced. A file kept after its receipt line gets a `kept` line. In a
    /// paced run (`--pace`), every 64 unlinks the current directory is fsynced and the run
    /// pauses for a quarter of `--pace`, which leaves a live service's writes room on the
    /// same disk.
    ///
    /// Returns the outcomes in the order of `doomed`, and the directories whose fsync
    /// failed.
    ///
    /// # Errors
    /// When the receipt cannot be written: then nothing was deleted.
    ///
    /// # Panics
    /// In a run whose mode does not delete.
    pub fn delete_verified<'a>(
        &mut self,
        doomed: Vec<Doomed<'a>>,
        last_check: impl Fn(&Doomed<'a>) -> Option<String>,
    ) -> tmpa_core::Result<(Vec<Outcome>, Vec<tmpa_core::Error>)> {
        assert!(self.mode().deletes(), "only a real run deletes");
        if doomed.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        // Applying a plan: only what it lists, as it lists it.
        let not_as_planned: Vec<Option<String>> = match self.applying_mut() {
            Some(a) => doomed.iter().map(|d| a.check(&d.line).err()).collect(),
            None => vec![None; doomed.len()],
        };
        let lines: Vec<ReceiptLine> = doomed
            .iter()
            .zip(&not_as_planned)
            .filter(|(_, refused)| refused.is_none())
            .map(|(d, _)| ReceiptLine::Delete(d.line.clone()))
            .collect();
        if !lines.is_empty() {
            self.record_receipt(&lines)?;
        }
        let mut outcomes = Vec::with_capacity(doomed.len());
        let mut kept_lines = Vec::new();
        let mut dirs: Vec<&'a Dir> = Vec::new();
        let mut unlinked = 0usize;
        for (d, refused) in doomed.into_iter().zip(not_as_planned) {
            if let Some(why) = refused {
                outcomes.push(Outcome::Kept(Kept::NotAsPlanned(why)));
                continue;
            }
            let outcome = remove_one(&d, &last_check);
            if !matches!(outcome, Outcome::Deleted) {
                let reason = match &outcome {
                    Outcome::Kept(k) => k.words(),
                    Outcome::Failed(e) => format!("not deleted: {}", e.chain()),
                    Outcome::Deleted => unreachable!(),
                };
                kept_lines.push(ReceiptLine::Kept {
                    file: d.line.file.clone(),
                    reason,
                });
            }
            if dirs.last().is_none_or(|last| !std::ptr::eq(*last, d.dir)) {
                dirs.push(d.dir);
            }
            // The lease (if any) is released here, after the unlink: a waiting opener
            // goes on at once.
            drop(d);
            if matches!(outcome, Outcome::Deleted) {
                unlinked += 1;
                if !self.pace.is_zero() && unlinked.is_multiple_of(PACED_SYNC_BATCH) {
                    // A small journal commit now, then room for the live service.
                    let _ = dirs.last().map(|d| d.sync());
                    std::thread::sleep(self.pace / PACED_SHARE);
                }
            }
            outcomes.push(outcome);
        }
        dirs.sort_by_key(|d| std::ptr::from_ref::<Dir>(d) as usize);
        dirs.dedup_by(|a, b| std::ptr::eq(*a, *b));
        let sync_failures = sync_all(&dirs);
        if !kept_lines.is_empty() {
            // Best effort: the receipt already says these were about to go; say they did not.
            let _ = self.record_receipt(&kept_lines);
        }
        Ok((outcomes, sync_failures))
    }
}

fn remove_one<'a>(d: &Doomed<'a>, last_check: &impl Fn(&Doomed<'a>) -> Option<String>) -> Outcome {
    let lease_ok = || d.lease.as_ref().is_none_or(Lease::intact);
    if !lease_ok() {
        return Outcome::Kept(Kept::LeaseBroken);
    }
    match d.dir.stat(&d.name) {
        Ok(Some(m)) if m.kind == Kind::File && m.stamp == d.stamp => {}
        Ok(Some(_)) => return Outcome::Kept(Kept::Changed),
        Ok(None) => return Outcome::Kept(Kept::Gone),
        Err(e) => return Outcome::Failed(e),
    }
    if let Some(why) = last_check(d) {
        return Outcome::Kept(Kept::Refused(why));
    }
    // Once more, as close to the unlink as can be: an opener that arrived during the
    // checks is waiting for the lease now.
    if !lease_ok() {
        return Outcome::Kept(Kept::LeaseBroken);
    }
    match d.dir.unlink(&d.name) {
        Ok(()) => Outcome::Deleted,
        Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => Outcome::Kept(Kept::Gone),
        Err(e) => Outcome::Failed(e),
    }
}

/// Fsyncs every directory, several at once; returns the failures.
fn sync_all(dirs: &[&Dir]) -> Vec<tmpa_core::Error> {
    if dirs.len() < 2 {
        return dirs.iter().filter_map(|d| d.sync().err()).collect();
    }
    let per_thread = dirs.len().div_ceil(SYNC_THREADS).max(1);
    std::thread::scope(|s| {
        let workers: Vec<_> = dirs
            .chunks(per_thread)
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .filter_map(|d| d.sync().err())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("an fsync thread does not panic"))
            .collect()
    })
}
