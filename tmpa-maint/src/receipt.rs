//! Receipts: an append-only, fsynced JSON-lines record of what a run deleted,
//! `{root}/.tmpa/receipts/{task}/{run}.jsonl` (`{run}`: the run's id, see
//! `crate::run::RunId`). Each line is written and fsynced **before** the file it names is
//! deleted.
//!
//! # Security
//! The receipts' directory is the tree owner's. A receipt is created `O_EXCL` under a
//! name no one can predict (its run's id ends in 64 random bits), never following a
//! symlink, so no name planted there in advance (a FIFO that would block the run, a link
//! to a file of root's that it would append to) is ever opened; it is a regular file of
//! this program's user with one name, checked on the descriptor. Read back (by the
//! recovery of a killed run) only when it is still such a file ([`read_deletions`]), line
//! by line, each line at most [`RECEIPT_LINE_BYTES_MAX`] and the whole at most
//! [`RECEIPT_READ_BYTES_MAX`]: what a receipt cannot prove is put back, never deleted.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tmpa_core::Root;
use tmpa_core::maintenance::{Dir, Kind, Meta, STATE_DIR, Stamp, root_dir};

use crate::record::Task;
use crate::trust::{Distrust, links_believed, runner_uid};

/// Longest receipt line read back; a longer one is skipped unread (a real line is well
/// under 20 KiB: a path of 4096 bytes, escaped, and a held-by URL).
pub const RECEIPT_LINE_BYTES_MAX: usize = 64 << 10;
/// Most bytes of one receipt read back: a receipt holds a line (about 500 bytes) per
/// deleted file, so this covers a run that deleted about eight million files; the
/// recovery stops earlier when it found what it looked for.
pub const RECEIPT_READ_BYTES_MAX: u64 = 4 << 30;

/// One line of a receipt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "line", rename_all = "snake_case")]
pub enum ReceiptLine {
    /// A file about to be deleted, with where its data now is and why that is proven.
    Delete(Deletion),
    /// A file a `delete` line named that was kept after all (changed at the last check,
    /// or its deletion failed).
    Kept {
        /// The file.
        file: String,
        /// Why it was kept.
        reason: String,
    },
    /// A file a killed run left in the quarantine, and what this run did with it.
    Recovered(Recovered),
}

/// What the recovery of a killed run did with one file it found in the quarantine (a
/// `recovered` line of the receipt of the run that recovered it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovered {
    /// Where the file was before the killed run moved it (its path below the root).
    pub file: String,
    /// What became of it.
    #[serde(flatten)]
    pub action: RecoveredAction,
}

/// What the recovery did with a file left in the quarantine by a killed run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum RecoveredAction {
    /// The killed run's receipt names exactly this inode, unchanged: its delete step was
    /// finished.
    Deleted,
    /// Not the file its receipt names (or no receipt line names it): moved back under its
    /// name.
    Restored,
    /// Not the file its receipt names, and a newer file has its name (or, with `why`,
    /// the file system has no way to put it back that could not replace one): kept in
    /// `quarantine/kept/`, never deleted.
    Kept {
        /// Where it is kept.
        at: String,
        /// Why it could not go back, when not because its name is taken.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        why: Option<String>,
    },
    /// It could not be dealt with; it stays where it is and the next run tries again.
    Failed {
        /// Why.
        error: String,
    },
}

impl Recovered {
    /// Whether an operator should look (exit 1).
    pub fn needs_look(&self) -> bool {
        matches!(
            self.action,
            RecoveredAction::Kept { .. } | RecoveredAction::Failed { .. }
        )
    }

    /// One line of the text report.
    pub fn words(&self) -> String {
        match &self.action {
            RecoveredAction::Deleted => format!(
                "  recovered: {}: deleted from the quarantine (a killed run's verified deletion, finished)",
                self.file
            ),
            RecoveredAction::Restored => format!(
                "  recovered: {}: moved back from the quarantine (a killed run had not verified it)",
                self.file
            ),
            RecoveredAction::Kept { at, why: None } => format!(
                "  problem: {}: a killed run moved it aside and a newer file has its name; kept at {at} (compare and keep one)",
                self.file
            ),
            RecoveredAction::Kept { at, why: Some(why) } => format!(
                "  problem: {}: a killed run moved it aside and it cannot go back: {why}; kept at {at} (move it back if its name is free, else compare and keep one)",
                self.file
            ),
            RecoveredAction::Failed { error } => format!(
                "  problem: {}: left in the quarantine by a killed run, not recovered: {error}",
                self.file
            ),
        }
    }
}

/// What a receipt says of a file before it is deleted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deletion {
    /// The file (escaped as by `path_text`).
    pub file: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// SHA-256 of its bytes, lower-case hex.
    pub sha256: String,
    /// Its identity and times when its data was read: the deletion happens only if the
    /// entry still has exactly these.
    pub stamp: Stamp,
    /// Where its data is now (a path or an object URL).
    pub held_by: String,
    /// How that was verified.
    #[serde(flatten)]
    pub proof: Proof,
}

/// How a deletion was proven safe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verified_by", rename_all = "snake_case")]
pub enum Proof {
    /// The event was read back, equal, from the durable `_compacted.json` (`held_by`),
    /// which holds `held_events` events.
    CompactedEvent {
        /// The day.
        day: String,
        /// Events in `held_by`.
        held_events: u64,
    },
    /// The archive (`held_by`) was read back from where it is stored and decompressed to
    /// exactly the session's bytes.
    ArchiveReadBack {
        /// The session's user.
        user: String,
        /// Size of the archive.
        archive_bytes: u64,
    },
    /// The notification or ack was read back, byte for byte and with its time, from the
    /// notification archive `held_by` (a `tar.gz` of `notifications` acknowledged
    /// notifications) decompressed from disk (tmpa-archive).
    NotificationArchive {
        /// The notification's user.
        user: String,
        /// Size of the archive in bytes.
        archive_bytes: u64,
        /// Notifications the archive holds.
        notifications: u64,
    },
    /// The object (`held_by`, its URL) was read back from the object store, with the ETag
    /// its put returned, and decompressed to exactly the source's bytes (tmpa-archive to
    /// a store; with `--migrate-local`, the source is a local archive and the object holds
    /// the same data).
    StoreReadBack {
        /// The session's user.
        user: String,
        /// Size of the object in bytes.
        object_bytes: u64,
        /// The object's ETag, as the store gave it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        etag: Option<String>,
        /// The object's version, on a versioned bucket.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
        /// SHA-256 of the object's bytes as read back, lower-case hex.
        object_sha256: String,
    },
    /// An archive this run wrote (`file`) of a source (`held_by`) that changed after the
    /// archive was verified, so that the source was kept: the source, newer, stays, and
    /// no deletion relies on the archive, which is taken back (tmpa-archive).
    TakenBack {
        /// The source's user.
        user: String,
    },
    /// A leftover of a completed atomic write: its final file (`held_by`) exists, it was
    /// unchanged for `older_than_secs`, and it was proven not open.
    StaleTemporary {
        /// `--older-than`, in seconds.
        older_than_secs: u64,
        /// What proved it not open.
        not_open: NotOpenProof,
    },
}

/// What proved a temporary not open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotOpenProof {
    /// The kernel granted a write lease: no other open file description exists anywhere;
    /// held until after the deletion.
    Lease,
    /// No process that `/proc` shows has it open, mapped or locked (the operator stated
    /// that `/proc` shows every process that can write the tree).
    Proc,
}

impl NotOpenProof {
    /// Words for reports: `not open (lease)`, `not open (/proc)`.
    pub fn words(self) -> &'static str {
        match self {
            NotOpenProof::Lease => "not open (lease)",
            NotOpenProof::Proc => "not open (/proc)",
        }
    }
}

/// An open receipt file.
#[derive(Debug)]
pub(crate) struct Receipt {
    file: File,
    dir: Dir,
    name: String,
    pub(crate) path: PathBuf,
}

/// `.tmpa/receipts/{task}`, relative to the root.
fn receipts_rel(task: Task) -> PathBuf {
    Path::new(STATE_DIR).join("receipts").join(task.as_str())
}

impl Receipt {
    /// Creates the receipt of the run `run_id` (`{run_id}.jsonl`): a new file (`O_EXCL`,
    /// never following a symlink), checked on its descriptor to be a regular file of
    /// this program's user with one name.
    ///
    /// # Errors
    /// [`tmpa_core::Error::Io`] naming the receipt: it cannot be made, or its name is
    /// taken (kind `AlreadyExists`: no run id repeats, so something was planted there).
    pub(crate) fn create(root: &Root, task: Task, run_id: &str) -> tmpa_core::Result<Receipt> {
        let dir = root_dir(root).create_dir_all(receipts_rel(task))?;
        let name = format!("{run_id}.jsonl");
        let file = dir.create_new(OsStr::new(&name), 0o644)?;
        let meta = Meta::of_fd(&file).map_err(|e| dir.error("stat", &name, e))?;
        // What O_EXCL made: anything else is a bug of the file layer, not a plant.
        assert!(
            meta.kind == Kind::File && meta.links == 1 && meta.uid == runner_uid(),
            "a receipt made with O_EXCL is a new regular file of this program's user"
        );
        dir.sync()?;
        Ok(Receipt {
            file,
            path: dir.join(&name),
            dir,
            name,
        })
    }

    pub(crate) fn append(&mut self, lines: &[ReceiptLine]) -> tmpa_core::Result<()> {
        let mut buf = Vec::with_capacity(lines.len() * 300);
        for l in lines {
            serde_json::to_writer(&mut buf, l).expect("a receipt line always serializes");
            buf.push(b'\n');
        }
        self.file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| self.dir.error("write receipt", &self.name, e))
    }
}

/// What the receipt of the run `run_id` of `task` proves of `wanted`: the stamps among
/// them that a complete `delete` line names (same inode, size and mtime; the move into
/// the quarantine changed the ctime). Read only when the receipt is a regular file of
/// this program's user whose other names, if any, could only have been made by someone
/// who may write it (a receipt it did not write proves nothing), and within the bounds
/// of [`RECEIPT_LINE_BYTES_MAX`] and [`RECEIPT_READ_BYTES_MAX`]; stops as soon as every
/// stamp is found.
///
/// # Errors
/// Why the receipt was not believed or read; what it proves is then nothing (the
/// caller puts the files back).
pub(crate) fn read_deletions(
    root: &Root,
    task: Task,
    run_id: &str,
    wanted: &[Stamp],
) -> Result<HashSet<Stamp>, String> {
    let dir = root_dir(root)
        .open_dir(receipts_rel(task))
        .map_err(|e| e.chain())?;
    let name = format!("{run_id}.jsonl");
    let file = dir.open_read(&name).map_err(|e| e.chain())?;
    let meta = Meta::of_fd(&file).map_err(|e| dir.error("stat", &name, e).chain())?;
    let untrusted = |why: Distrust| format!("{}: not believed: {why}", dir.join(&name).display());
    if meta.kind != Kind::File {
        return Err(untrusted(Distrust::Kind(meta.kind)));
    }
    if meta.uid != runner_uid() {
        return Err(untrusted(Distrust::Owner {
            uid: meta.uid,
            runner: runner_uid(),
        }));
    }
    links_believed(&meta, &dir.meta().map_err(|e| e.chain())?).map_err(untrusted)?;
    let mut found = HashSet::new();
    let reader = std::io::BufReader::with_capacity(64 << 10, file.take(RECEIPT_READ_BYTES_MAX));
    let result = for_each_line(reader, RECEIPT_LINE_BYTES_MAX, |line| {
        if let Ok(ReceiptLine::Delete(d)) = serde_json::from_slice::<ReceiptLine>(line)
            && let Some(w) = wanted.iter().find(|w| w.same_but_ctime(&d.stamp))
        {
            found.insert(*w);
        }
        found.len() < wanted.len()
    });
    result.map_err(|e| dir.error("read", &name, e).chain())?;
    Ok(found)
}

/// Calls `each` with every complete line of `reader` (without its newline) no longer
/// than `line_max` bytes, until it returns `false`; a longer line is skipped without
/// being held in memory, as is a last line without its newline (a torn write). Memory:
/// `line_max` plus the reader's buffer, whatever the input.
///
/// # Errors
/// A read error.
pub(crate) fn for_each_line(
    mut reader: impl BufRead,
    line_max: usize,
    mut each: impl FnMut(&[u8]) -> bool,
) -> std::io::Result<()> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let buf = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(());
        }
        let (chunk, ends_line) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], true),
            None => (buf, false),
        };
        if !too_long {
            if line.len() + chunk.len() > line_max {
                too_long = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let used = chunk.len() + usize::from(ends_line);
        reader.consume(used);
        if ends_line {
            if !too_long && !each(&line) {
                return Ok(());
            }
            line.clear();
            too_long = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_within_their_bound_and_torn_or_long_ones_skipped() {
        let text = b"one\ntwo-is-long\n\nthree\ntorn".to_vec();
        for cap in [1, 2, 3, 7, 64] {
            let reader = std::io::BufReader::with_capacity(cap, &text[..]);
            let mut seen = Vec::new();
            for_each_line(reader, 5, |l| {
                seen.push(String::from_utf8(l.to_vec()).unwrap());
                true
            })
            .unwrap();
            assert_eq!(seen, ["one", "", "three"], "buffer of {cap}");
        }
        // Stopped by the caller.
        let mut n = 0;
        for_each_line(&b"a\nb\nc\n"[..], 5, |_| {
            n += 1;
            n < 2
        })
        .unwrap();
        assert_eq!(n, 2);
    }

    #[test]
    fn a_huge_line_without_a_newline_is_never_held() {
        // 64 MiB of zeros: a sparse receipt with no newline, read through a 64 KiB
        // buffer with a 64 KiB line bound.
        let zeros = std::io::repeat(0).take(64 << 20);
        let reader = std::io::BufReader::with_capacity(64 << 10, zeros);
        let mut lines = 0;
        for_each_line(reader, RECEIPT_LINE_BYTES_MAX, |_| {
            lines += 1;
            true
        })
        .unwrap();
        assert_eq!(lines, 0);
    }

    #[test]
    fn lines_are_typed_and_read_back() {
        let line = ReceiptLine::Delete(Deletion {
            file: "/r/token_stats/2026-11-01/evt_a.json".into(),
            bytes: 120,
            sha256: "ab".repeat(32),
            stamp: Stamp {
                dev: 1,
                ino: 2,
                size: 120,
                mtime_ns: 3,
                ctime_ns: 4,
            },
            held_by: "/r/token_stats/2026-11-01/_compacted.json".into(),
            proof: Proof::CompactedEvent {
                day: "2026-11-01".into(),
                held_events: 7,
            },
        });
        let text = serde_json::to_string(&line).unwrap();
        assert!(text.contains(r#""line":"delete""#), "{text}");
        assert!(
            text.contains(r#""verified_by":"compacted_event""#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<ReceiptLine>(&text).unwrap(), line);
    }

    #[test]
    fn recovered_lines_are_typed_and_read_back() {
        for action in [
            RecoveredAction::Deleted,
            RecoveredAction::Restored,
            RecoveredAction::Kept {
                at: "/r/.tmpa/quarantine/kept/x".into(),
                why: None,
            },
            RecoveredAction::Kept {
                at: "/r/.tmpa/quarantine/kept/y".into(),
                why: Some("neither RENAME_NOREPLACE nor hard links".into()),
            },
            RecoveredAction::Failed {
                error: "EIO".into(),
            },
        ] {
            let line = ReceiptLine::Recovered(Recovered {
                file: "/r/token_stats/2026-11-01/evt_a.json".into(),
                action,
            });
            let text = serde_json::to_string(&line).unwrap();
            assert!(text.contains(r#""line":"recovered""#), "{text}");
            assert_eq!(serde_json::from_str::<ReceiptLine>(&text).unwrap(), line);
        }
    }
}
