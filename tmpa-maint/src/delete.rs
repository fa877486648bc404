//! The one deletion path of the workspace: verify → receipt → the verified delete step
//! (check, move aside into the quarantine, check again, unlink: tmpa-core's
//! [`dispose`](tmpa_core::maintenance::dispose)) → directory fsync.
//!
//! A program hands its verified candidates to [`Run::dispose`] whatever its mode, and
//! the mode decides (docs/OPERATIONS.md "Rolling out: dry run first"): a dry run notes
//! each in the run's plan ([`Outcome::WouldDelete`]), `--no-delete` leaves each for the
//! next real run ([`Outcome::Left`]), a real run deletes each through the verified delete
//! step. Compaction, archival (sessions, notifications, acks) and tmpclean all go through
//! it; nothing else in the workspace removes a data file.

use std::ffi::OsString;

use tmpa_core::maintenance::{
    Dir, Disposal, Expected, Keep, Lease, Stamp, THREADS_MAX, dispose, map_ordered_on,
};

use crate::args::Mode;
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
    /// Moved aside for deletion and found to be another file than the verified one (a
    /// writer replaced it in that instant), and a newer file took its name before it
    /// could be put back: kept in the quarantine (`at`), never deleted; an operator
    /// compares the two.
    Superseded {
        /// Where it is kept.
        at: String,
    },
    /// Moved aside for deletion and found to be another file than the verified one, on a
    /// file system with no exclusive way to put it back (neither `RENAME_NOREPLACE` nor
    /// hard links: a plain rename could replace a newer file at its name): kept in the
    /// quarantine (`at`), never deleted; an operator moves it back if its name is free.
    Stranded {
        /// Where it is kept.
        at: String,
    },
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
            Kept::Superseded { at } => format!(
                "replaced by a writer as it was deleted, and replaced again before it could be put back: kept at {at} (compare it with the file at its name)"
            ),
            Kept::Stranded { at } => format!(
                "replaced by a writer as it was deleted, and this file system has no way to put it back that could not replace a newer file (neither RENAME_NOREPLACE nor hard links): kept at {at} (move it back if its name is free, else compare the two)"
            ),
        }
    }

    /// Whether an operator should look at it (the run exits 1): a file kept in the
    /// quarantine.
    pub fn needs_look(&self) -> bool {
        matches!(self, Kept::Superseded { .. } | Kept::Stranded { .. })
    }
}

/// What became of one doomed file.
#[derive(Debug)]
pub enum Outcome {
    /// Deleted (its receipt line was durable first).
    Deleted,
    /// A dry run: a real run would delete it; the plan has the receipt line it would
    /// write.
    WouldDelete,
    /// `--no-delete`: verified and left in place; the next real run deletes it.
    Left,
    /// Kept, and why.
    Kept(Kept),
    /// The deletion failed (permission, immutable directory, another mount, I/O error):
    /// kept at its name, or (when the error names the quarantine) in the quarantine,
    /// where the next run finishes it.
    Failed(tmpa_core::Error),
}

impl Outcome {
    /// Whether it counts in the run's `deleted` (real) or `would_delete` (dry run).
    pub fn counts_as_deleted(&self) -> bool {
        matches!(self, Outcome::Deleted | Outcome::WouldDelete)
    }
}

/// What [`Run::dispose`] did with a batch.
#[derive(Debug)]
#[must_use]
pub struct Disposed {
    /// One outcome per candidate, in the order given.
    pub outcomes: Vec<Outcome>,
    /// Directories whose fsync after the deletions failed (real runs): the deletions
    /// happened but are not known to be durable.
    pub sync_failures: Vec<tmpa_core::Error>,
}

impl Disposed {
    /// How many count as deleted (or, in a dry run, would be).
    pub fn deleted(&self) -> u64 {
        self.outcomes
            .iter()
            .filter(|o| o.counts_as_deleted())
            .count() as u64
    }

    /// The outcomes, and whether the deletions are durable: `Err` with the first
    /// directory whose fsync failed.
    pub fn split(self) -> (Vec<Outcome>, tmpa_core::Result<()>) {
        let synced = match self.sync_failures.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        };
        (self.outcomes, synced)
    }
}

/// Files per `--pace` pause: a paced run pauses for at least `--pace` per this many files
/// read (see tmpa-compact) or deleted, and longer after a slow step ([`crate::Pacer`]).
pub const PACE_BATCH: usize = 256;
/// In a paced run, deletions between two directory fsyncs, each followed by a pause of
/// at least the same share of `--pace` (16 files, `--pace / 16`: the rate of one `--pace`
/// per [`PACE_BATCH`] files) and at least five times the step's own time
/// ([`crate::Pacer`]). Whatever the run unlinked since its last fsync is carried by
/// the next journal commit, and with it the freed blocks' discards: when that commit is
/// the live service's own fsync, the service pays for it. Sixteen keeps that share
/// small; measured beside a writer (docs/PERFORMANCE.md, "Latency"), 64 raised its p99
/// during deletions about twice as much, at the same speed. (At full speed the directory
/// is fsynced once, after the batch: every fsync is a journal commit and a cache flush
/// of the disk.)
const PACED_SYNC_BATCH: usize = PACE_BATCH / PACED_SHARE as usize;
const PACED_SHARE: u32 = 16;

impl Run {
    /// Disposes of `doomed` (files whose data the caller verified to be durably
    /// elsewhere) as the run's mode says: a dry run notes each in its plan
    /// ([`Run::would_delete`]) and releases it; `--no-delete` leaves each; a real run
    /// deletes them through the verified delete step (`Run::delete_verified`'s steps:
    /// receipt first, check, move aside, check again, unlink, directory fsync).
    ///
    /// # Errors
    /// A real run's receipt cannot be written: then nothing was deleted.
    pub fn dispose<'a>(
        &mut self,
        doomed: Vec<Doomed<'a>>,
        last_check: impl Fn(&Doomed<'a>) -> Option<String>,
    ) -> tmpa_core::Result<Disposed> {
        let outcomes = match self.mode() {
            Mode::Plan => doomed
                .into_iter()
                .map(|d| {
                    self.would_delete(d.line);
                    Outcome::WouldDelete
                })
                .collect(),
            Mode::KeepSources => doomed.iter().map(|_| Outcome::Left).collect(),
            Mode::Real => {
                let (outcomes, sync_failures) =
                    self.delete_verified(doomed, last_check, AsPlanned::Checked)?;
                return Ok(Disposed {
                    outcomes,
                    sync_failures,
                });
            }
        };
        Ok(Disposed {
            outcomes,
            sync_failures: Vec::new(),
        })
    }

    /// Takes back files this run itself wrote and no deletion relies on: an archive of a
    /// source that changed after the archive was verified (the source, newer, stays).
    /// Through the same steps as every deletion (receipt line first, check, move aside,
    /// check again, unlink, directory fsync), in every mode that writes (a `--no-delete`
    /// run takes back its own archives too: it deletes no source). No plan lists such a
    /// file, so none is asked: the plan's files are the sources.
    ///
    /// # Errors
    /// The receipt cannot be written: then nothing was deleted.
    ///
    /// # Panics
    /// In a dry run, which writes nothing to take back.
    pub fn take_back<'a>(&mut self, doomed: Vec<Doomed<'a>>) -> tmpa_core::Result<Disposed> {
        let (outcomes, sync_failures) =
            self.delete_verified(doomed, |_| None, AsPlanned::NotAsked)?;
        Ok(Disposed {
            outcomes,
            sync_failures,
        })
    }

    /// Deletes `doomed`, in the order given: first one receipt line each, appended and
    /// fsynced; then for each the verified delete step
    /// ([`dispose`](tmpa_core::maintenance::dispose)): its lease (if any) intact, its
    /// entry still a regular file with exactly the stamp that was verified, and
    /// `last_check` (`None` to go on, or why to keep it); then it is moved into the run's
    /// quarantine, checked there again (and its lease), and only then unlinked; a file
    /// that turns out to be another is put back. Then each directory is fsynced. A file kept after its receipt line gets a `kept` line. In a
    /// paced run (`--pace`), every 16 unlinks the current directory is fsynced and the run
    /// pauses ([`crate::Pacer`]: at least a sixteenth of `--pace`, and five times what the
    /// 16 took), which leaves a live service's writes room on the same disk.
    ///
    /// Returns the outcomes in the order of `doomed`, and the directories whose fsync
    /// failed.
    ///
    /// # Errors
    /// When the receipt cannot be written: then nothing was deleted.
    ///
    /// # Panics
    /// In a run whose mode does not delete (with [`AsPlanned::NotAsked`]: in a dry run).
    fn delete_verified<'a>(
        &mut self,
        doomed: Vec<Doomed<'a>>,
        last_check: impl Fn(&Doomed<'a>) -> Option<String>,
        planned: AsPlanned,
    ) -> tmpa_core::Result<(Vec<Outcome>, Vec<tmpa_core::Error>)> {
        match planned {
            AsPlanned::Checked => assert!(self.mode().deletes(), "only a real run deletes"),
            AsPlanned::NotAsked => {
                assert!(self.mode().writes(), "a dry run has nothing to take back")
            }
        }
        if doomed.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        // Applying a plan: only what it lists, as it lists it.
        let not_as_planned: Vec<Option<String>> = match (planned, self.applying_mut()) {
            (AsPlanned::Checked, Some(a)) => {
                doomed.iter().map(|d| a.check(&d.line).err()).collect()
            }
            _ => vec![None; doomed.len()],
        };
        let lines: Vec<ReceiptLine> = doomed
            .iter()
            .zip(&not_as_planned)
            .filter(|(_, refused)| refused.is_none())
            .map(|(d, _)| ReceiptLine::Delete(d.line.clone()))
            .collect();
        if !lines.is_empty() {
            // Still this run's lock, by name: if someone took it away, another run may
            // be deleting beside this one.
            self.check_lock()?;
            self.record_receipt(&lines)?;
        }
        let mut outcomes = Vec::with_capacity(doomed.len());
        let mut kept_lines = Vec::new();
        let mut dirs: Vec<&'a Dir> = Vec::new();
        let mut unlinked = 0usize;
        let mut pacer = crate::Pacer::new(self.pace());
        for (d, refused) in doomed.into_iter().zip(not_as_planned) {
            if let Some(why) = refused {
                outcomes.push(Outcome::Kept(Kept::NotAsPlanned(why)));
                continue;
            }
            let outcome = remove_one(self, &d, &last_check);
            if !matches!(outcome, Outcome::Deleted) {
                let reason = match &outcome {
                    Outcome::Kept(k) => k.words(),
                    Outcome::Failed(e) => format!("not deleted: {}", e.chain()),
                    Outcome::Deleted | Outcome::WouldDelete | Outcome::Left => unreachable!(),
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
                if pacer.is_paced() && unlinked.is_multiple_of(PACED_SYNC_BATCH) {
                    // A small journal commit now, then room for the live service.
                    let _ = dirs.last().map(|d| d.sync());
                    pacer.pause(PACED_SHARE);
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

/// Whether the deletions of a call are checked against the plan being applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AsPlanned {
    /// Data files: each must be the one the plan lists.
    Checked,
    /// Files the run itself wrote (taken back): no plan lists them.
    NotAsked,
}

/// The verified delete step for one doomed file, in the run's quarantine.
fn remove_one<'a>(
    run: &mut Run,
    d: &Doomed<'a>,
    last_check: &impl Fn(&Doomed<'a>) -> Option<String>,
) -> Outcome {
    let (root, quarantine) = run.quarantine();
    let aside = match quarantine.aside_for(root, d.dir) {
        Ok(a) => a,
        Err(e) => return Outcome::Failed(e),
    };
    let expected = Expected {
        stamp: d.stamp,
        lease: d.lease.as_ref(),
    };
    match dispose(d.dir, &d.name, aside, &d.name, &expected, || last_check(d)) {
        Disposal::Deleted => Outcome::Deleted,
        Disposal::Kept(Keep::Changed) => Outcome::Kept(Kept::Changed),
        Disposal::Kept(Keep::Gone) => Outcome::Kept(Kept::Gone),
        Disposal::Kept(Keep::LeaseBroken) => Outcome::Kept(Kept::LeaseBroken),
        Disposal::Kept(Keep::Refused(why)) => Outcome::Kept(Kept::Refused(why)),
        Disposal::Kept(Keep::CannotMove(e)) => Outcome::Failed(e),
        Disposal::Superseded => match quarantine.keep(root, d.dir, &d.name) {
            Ok(at) => Outcome::Kept(Kept::Superseded { at }),
            // Still in the in-flight quarantine: the next run's recovery keeps it.
            Err(e) => Outcome::Failed(e),
        },
        Disposal::CannotPutBack(_) => match quarantine.keep(root, d.dir, &d.name) {
            Ok(at) => Outcome::Kept(Kept::Stranded { at }),
            Err(e) => Outcome::Failed(e),
        },
        Disposal::Failed { error, .. } => Outcome::Failed(error),
    }
}

/// Fsyncs every directory, several at once (ext4 and xfs commit concurrent fsyncs in one
/// journal transaction); returns the failures.
fn sync_all(dirs: &[&Dir]) -> Vec<tmpa_core::Error> {
    map_ordered_on(THREADS_MAX, dirs, |d| d.sync().err())
        .into_iter()
        .flatten()
        .collect()
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "tests build and break trees by path"
)]
mod tests {
    use std::ffi::OsStr;
    use std::path::Path;

    use tmpa_core::maintenance::{Dir, root_dir};

    use super::*;
    use crate::args::Mode;
    use crate::record::Task;
    use crate::testing::{deletion, start, tree};

    fn doomed<'a>(dir: &'a Dir, name: &str) -> Doomed<'a> {
        let line = deletion(dir, name);
        Doomed {
            dir,
            name: name.into(),
            stamp: line.stamp,
            line,
            lease: None,
        }
    }

    fn receipt_lines(root: &Path) -> Vec<String> {
        let dir = root.join(".tmpa/receipts/compact_events");
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
            out.extend(text.lines().map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["line"].as_str().unwrap().to_owned()
            }));
        }
        out
    }

    /// Deleted, changed, gone and refused files: one receipt line each before anything
    /// happens, a `kept` line for each kept, the outcomes in order, nothing left aside.
    #[test]
    fn outcomes_and_receipt_lines() {
        let (t, root) = tree();
        let day = t.path().join("token_stats/2026-11-01");
        for n in ["a.json", "b.json", "c.json", "d.json"] {
            std::fs::write(day.join(n), n).unwrap();
        }
        let root_path = root.path().to_path_buf();
        let mut run = start(&root, Task::CompactEvents, Mode::Real);
        let dir = root_dir(run.root())
            .open_dir("token_stats/2026-11-01")
            .unwrap();
        let all = vec![
            doomed(&dir, "a.json"),
            doomed(&dir, "b.json"),
            doomed(&dir, "c.json"),
            doomed(&dir, "d.json"),
        ];
        // b is replaced by a writer, c removed by someone else, d refused by the caller.
        std::fs::write(day.join("b.new"), "newer").unwrap();
        std::fs::rename(day.join("b.new"), day.join("b.json")).unwrap();
        std::fs::remove_file(day.join("c.json")).unwrap();
        let (outcomes, sync_failures) = run
            .delete_verified(
                all,
                |d| (d.name == OsStr::new("d.json")).then(|| "not today".to_owned()),
                AsPlanned::Checked,
            )
            .unwrap();
        assert!(sync_failures.is_empty());
        let words: Vec<String> = outcomes
            .iter()
            .map(|o| match o {
                Outcome::Deleted => "deleted".to_owned(),
                Outcome::WouldDelete | Outcome::Left => unreachable!("a real run"),
                Outcome::Kept(k) => k.words(),
                Outcome::Failed(e) => e.chain(),
            })
            .collect();
        assert_eq!(words[0], "deleted");
        assert!(words[1].starts_with("changed"), "{words:?}");
        assert!(words[2].starts_with("gone"), "{words:?}");
        assert_eq!(words[3], "not today");
        assert!(!day.join("a.json").exists());
        assert_eq!(
            std::fs::read_to_string(day.join("b.json")).unwrap(),
            "newer"
        );
        assert!(day.join("d.json").exists());
        assert_eq!(
            receipt_lines(&root_path),
            [
                "delete", "delete", "delete", "delete", "kept", "kept", "kept"
            ]
        );
        drop(run);
        let q = root_path.join(".tmpa/quarantine/in-flight/compact_events");
        let left: Vec<_> = walk_files(&q);
        assert!(left.is_empty(), "{left:?}");
    }

    fn walk_files(p: &Path) -> Vec<std::path::PathBuf> {
        let Ok(rd) = std::fs::read_dir(p) else {
            return Vec::new();
        };
        rd.flatten()
            .flat_map(|e| {
                if e.file_type().unwrap().is_dir() {
                    walk_files(&e.path())
                } else {
                    vec![e.path()]
                }
            })
            .collect()
    }

    /// Every mode takes the same candidates: a dry run notes them (its plan), changing
    /// nothing and writing no receipt; --no-delete leaves them; only a real run deletes,
    /// receipt first.
    #[test]
    fn dispose_per_mode() {
        for mode in [Mode::Plan, Mode::KeepSources, Mode::Real] {
            let (t, root) = tree();
            let day = t.path().join("token_stats/2026-11-01");
            for n in ["a.json", "b.json"] {
                std::fs::write(day.join(n), n).unwrap();
            }
            let root_path = root.path().to_path_buf();
            let mut run = start(&root, Task::CompactEvents, mode);
            let dir = root_dir(run.root())
                .open_dir("token_stats/2026-11-01")
                .unwrap();
            let disposed = run
                .dispose(vec![doomed(&dir, "a.json"), doomed(&dir, "b.json")], |_| {
                    None
                })
                .unwrap();
            assert_eq!(
                disposed.deleted(),
                if mode == Mode::KeepSources { 0 } else { 2 }
            );
            let (outcomes, synced) = disposed.split();
            synced.unwrap();
            for o in &outcomes {
                match (mode, o) {
                    (Mode::Plan, Outcome::WouldDelete)
                    | (Mode::KeepSources, Outcome::Left)
                    | (Mode::Real, Outcome::Deleted) => {}
                    _ => panic!("{mode:?}: {o:?}"),
                }
            }
            let left = day.join("a.json").exists() && day.join("b.json").exists();
            assert_eq!(left, !mode.deletes(), "{mode:?}");
            let receipts = root_path.join(".tmpa/receipts/compact_events");
            if mode.deletes() {
                assert_eq!(receipt_lines(&root_path), ["delete", "delete"]);
            } else {
                assert!(!receipts.exists(), "{mode:?} wrote a receipt");
            }
        }
    }

    /// A run that does not delete never reaches the delete path.
    #[test]
    #[should_panic(expected = "only a real run deletes")]
    fn a_dry_run_cannot_delete() {
        let (_t, root) = tree();
        let mut run = start(&root, Task::CompactEvents, Mode::Plan);
        let _ = run.delete_verified(Vec::new(), |_| None, AsPlanned::Checked);
    }

    /// Nor does it take anything back: it wrote nothing.
    #[test]
    #[should_panic(expected = "a dry run has nothing to take back")]
    fn a_dry_run_takes_nothing_back() {
        let (_t, root) = tree();
        let mut run = start(&root, Task::ArchiveHistory, Mode::Plan);
        let _ = run.take_back(Vec::new());
    }
}
