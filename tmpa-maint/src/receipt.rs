//! Receipts: an append-only, fsynced JSON-lines record of what a run deleted,
//! `{root}/.tmpa/receipts/{task}/{start time}-{pid}.jsonl`. Each line is written and
//! fsynced **before** the file it names is deleted.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tmpa_core::Root;
use tmpa_core::maintenance::{Dir, STATE_DIR, Stamp, root_dir};

use crate::record::Task;

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
    Recovered(crate::quarantine::Recovered),
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

impl Receipt {
    /// Creates the receipt of the run `run_id` (`{run_id}.jsonl`).
    pub(crate) fn create(root: &Root, task: Task, run_id: &str) -> tmpa_core::Result<Receipt> {
        let dir = root_dir(root)
            .create_dir_all(Path::new(STATE_DIR).join("receipts").join(task.as_str()))?;
        let name = format!("{run_id}.jsonl");
        let file = dir.open_append(OsStr::new(&name), 0o644)?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
        use crate::quarantine::{Recovered, RecoveredAction};
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
