//! tmpa-archive's report: what happened to each session and notification batch, the
//! totals that go into the run record and the log's last line, the exit status they call
//! for, and the text an operator reads (`--json` is the report serialised).

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;
use tmpa_core::Problem;
use tmpa_core::maintenance::store::PutGuard;
use tmpa_core::maintenance::{line_text, path_text, serialize_path};
use tmpa_maint::{ExitStatus, Mode};

/// What was found or done for one unit (a session, a local archive moved, a batch of
/// notifications).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A new archive was written and verified; the sources are deleted (or would be).
    Archive,
    /// An archive already held exactly the sources' data (an interrupted run): the
    /// sources are deleted (or would be).
    Complete,
    /// An archive holds other data, or one that cannot be read as this source's: all
    /// kept.
    Conflict,
    /// The source changed while it was being archived: kept, retried next run.
    Changed,
    /// The archive did not read back equal to the sources: all kept.
    VerificationFailed,
    /// An I/O error (full disk, permission, immutable directory) or a store that could
    /// not be reached: the sources are kept.
    Failed,
    /// A local archive to move (`--migrate-local`) is not valid gzip: kept, not moved.
    Corrupt,
}

impl Action {
    /// The word the text report shows, for a real run or a dry run.
    pub fn word(self, dry_run: bool) -> &'static str {
        match (self, dry_run) {
            (Action::Archive, false) => "archived",
            (Action::Archive, true) => "would archive",
            (Action::Complete, false) => "completed",
            (Action::Complete, true) => "would complete",
            (Action::Conflict, _) => "conflict",
            (Action::Changed, _) => "changed",
            (Action::VerificationFailed, _) => "verification failed",
            (Action::Failed, _) => "failed",
            (Action::Corrupt, _) => "corrupt",
        }
    }

    /// Whether the sources may be deleted once the receipt is written.
    pub fn deletes_source(self) -> bool {
        matches!(self, Action::Archive | Action::Complete)
    }

    /// The exit status it calls for.
    pub fn status(self) -> ExitStatus {
        match self {
            Action::Failed => ExitStatus::Failure,
            Action::Conflict | Action::VerificationFailed | Action::Corrupt => {
                ExitStatus::NeedsLook
            }
            Action::Archive | Action::Complete | Action::Changed => ExitStatus::Ok,
        }
    }
}

/// An archive object as read back from the store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StoredObject {
    /// Its URL (`s3://bucket/prefix/user/session.json.gz`).
    pub url: String,
    /// Its size in bytes (`None` in a dry run, which writes nothing).
    pub bytes: Option<u64>,
    /// Its ETag, as the store gave it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Its version, on a versioned bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// SHA-256 of its bytes as read back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// What happened to one session old enough to archive.
#[derive(Clone, Debug, Serialize)]
pub struct SessionReport {
    /// The user.
    pub user: String,
    /// The session id.
    pub session: String,
    /// The session file.
    #[serde(serialize_with = "serialize_path")]
    pub path: PathBuf,
    /// What was (or would be) done.
    pub action: Action,
    /// Whether the session file was deleted (always false in a dry run).
    pub deleted: bool,
    /// Size of the session in bytes.
    pub bytes: u64,
    /// Size of its archive in bytes, when one exists.
    pub archive_bytes: Option<u64>,
    /// SHA-256 of the session's bytes.
    pub sha256: Option<String>,
    /// Whether the session is valid JSON (archived either way: archival preserves bytes).
    pub valid_json: Option<bool>,
    /// Details in words.
    pub detail: String,
    /// What was archived: `sessions` (a live session) or `archive` (a local archive moved
    /// to the store with `--migrate-local`).
    pub from: Origin,
    /// The object that holds it, when archiving to a store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<StoredObject>,
    /// The version of its archive that holds (or would hold) it: 1 for
    /// `archive/{session}.json.gz`, `n` for `archive/versions/{n}/` (a chat resumed
    /// after its archival, docs/FORMAT.md "Archived session").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
}

/// Where an archived item came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// `sessions/{session}.json`.
    Sessions,
    /// `archive/{session}.json.gz` (`--migrate-local`).
    Archive,
}

/// Where a run archives to.
#[derive(Clone, Debug, Serialize)]
pub struct Destination {
    /// `local` (each user's `archive/`) or the store's URL.
    pub url: String,
    /// How objects are kept from being replaced (stores only; known once a put was made).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub put_guard: Option<PutGuard>,
    /// Why the store was given up on in this run, if it was (every session not yet
    /// verified was left in place).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

/// The whole run's report: the head every program's report has, around [`Body`].
pub type Report = tmpa_maint::Report<Body>;

/// What tmpa-archive's report holds beside the head every program's report has.
#[derive(Debug, Serialize)]
pub struct Body {
    /// `--older-than`, in seconds.
    pub older_than_secs: u64,
    /// Where archives go.
    pub destination: Destination,
    /// Every session old enough to archive, by user then session (then, with
    /// `--migrate-local`, each user's local archives).
    pub sessions: Vec<SessionReport>,
    /// `--notifications-older-than`, in seconds.
    pub notifications_older_than_secs: u64,
    /// Every archive of acknowledged notifications written, completed or attempted, by
    /// user.
    pub notification_batches: Vec<BatchReport>,
    /// Files and directories that need a look (symlinks, odd names, invalid JSON, acks
    /// without their notification), and per-user failures.
    pub problems: Vec<Problem>,
    #[serde(skip)]
    pub(crate) failed: bool,
    /// Deletions that failed, and archives taken back (copied into the counts).
    #[serde(skip)]
    pub(crate) tally: Tally,
}

/// What the pipeline counted beside the units' own reports.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Tally {
    pub(crate) deletions_failed: u64,
    pub(crate) taken_back: u64,
    /// Inbox files and acks of batches deleted (or that a real run would delete).
    pub(crate) notification_files_deleted: u64,
}

/// Totals of a run (the run record's `counts` and the log's last line).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    /// Users looked at.
    pub users: u64,
    /// Session files seen.
    pub sessions: u64,
    /// Sessions too recent to archive.
    pub young: u64,
    /// Sessions old enough, left live because a temporary of their name lies beside them
    /// (a write of it going on, or one that died; tmpa_maint::finals_with_temporaries).
    #[serde(skip_serializing_if = "crate::is_zero_u64")]
    pub beside_temporary: u64,
    /// Sessions archived (new archive written and verified).
    pub archived: u64,
    /// Sessions whose archive already held their bytes (an interrupted run completed).
    pub completed: u64,
    /// Sessions whose archive holds other bytes (both kept).
    pub conflicts: u64,
    /// Sessions that changed while being archived (kept, retried next run).
    pub changed: u64,
    /// Archives that did not read back equal (both kept).
    pub verification_failed: u64,
    /// Sessions an I/O error (or a failing store) stopped.
    pub failed: u64,
    /// Local archives to move that are not valid gzip (`--migrate-local`; kept).
    pub corrupt: u64,
    /// Sessions that are not valid JSON (archived as they are).
    pub invalid_json: u64,
    /// Sessions deleted (real runs) or that a real run would delete (dry runs).
    #[serde(flatten)]
    pub deletions: tmpa_maint::DeleteCount,
    /// Bytes of the sessions deleted (or to delete).
    pub bytes_in: u64,
    /// Bytes of their archives.
    pub bytes_out: u64,
    /// Notifications archived, and what else the notification archival found.
    #[serde(flatten)]
    pub notifications: NotificationCounts,
    /// Files (sessions, inbox files, acks, local archives) verified elsewhere whose
    /// deletion failed (kept; the next run completes): each a `problem:` line, exit 4.
    pub deletions_failed: u64,
    /// Archives this run made and took back, because every file they held changed
    /// before its deletion (those stay, newer).
    pub taken_back: u64,
    /// Problems reported.
    pub problems: u64,
}

/// The exit status a report calls for: 4 if anything failed (I/O), 1 if anything needs a
/// look (conflict, failed verification, symlink, invalid JSON), else 0.
pub fn report_status(report: &Report) -> ExitStatus {
    let mut status = ExitStatus::Ok;
    if !report.problems.is_empty() {
        status = ExitStatus::NeedsLook;
    }
    for s in &report.sessions {
        status = status.worst(s.action.status());
        if s.valid_json == Some(false) {
            status = status.worst(ExitStatus::NeedsLook);
        }
    }
    for b in &report.notification_batches {
        status = status.worst(b.action.status());
    }
    if report.failed {
        status = status.worst(ExitStatus::Failure);
    }
    status
}

pub(crate) fn counts(report: &Report, mode: Mode, users: u64, seen: u64, young: u64) -> Counts {
    let mut c = Counts {
        users,
        sessions: seen,
        young,
        problems: report.problems.len() as u64,
        deletions_failed: report.tally.deletions_failed,
        taken_back: report.tally.taken_back,
        ..Counts::default()
    };
    let mut deleted = 0;
    for s in &report.sessions {
        *match s.action {
            Action::Archive => &mut c.archived,
            Action::Complete => &mut c.completed,
            Action::Conflict => &mut c.conflicts,
            Action::Changed => &mut c.changed,
            Action::VerificationFailed => &mut c.verification_failed,
            Action::Failed => &mut c.failed,
            Action::Corrupt => &mut c.corrupt,
        } += 1;
        if s.valid_json == Some(false) {
            c.invalid_json += 1;
        }
        let gone = if mode.is_plan() {
            s.action.deletes_source()
        } else {
            s.deleted
        };
        if gone {
            deleted += 1;
            c.bytes_in += s.bytes;
            c.bytes_out += s.archive_bytes.unwrap_or(0);
        }
    }
    c.deletions = tmpa_maint::DeleteCount::of(mode, deleted);
    c
}

impl tmpa_maint::ReportBody for Body {
    type Counts = Counts;

    /// The report as text: where archives go (with a store), one line per problem, one line
    /// per session acted on, sorted.
    fn render_text(report: &Report) -> String {
        let mut s = String::new();
        if report.destination.url != "local" {
            let _ = writeln!(
                s,
                "  store: {}{}",
                report.destination.url,
                match (report.dry_run, report.destination.put_guard) {
                    (true, _) => " (dry run: read, nothing written)".to_owned(),
                    (false, Some(g)) => format!(" ({})", g.words()),
                    (false, None) => String::new(),
                }
            );
        }
        for p in &report.problems {
            let _ = writeln!(s, "  problem: {p}");
        }
        for b in &report.notification_batches {
            let _ = writeln!(s, "{}", render_batch(b, report.dry_run));
        }
        for r in &report.sessions {
            let size = match r.archive_bytes {
                Some(a) => format!("{} -> {a} bytes", r.bytes),
                None => format!("{} bytes", r.bytes),
            };
            let word = match (r.from, r.action, report.dry_run) {
                (Origin::Archive, Action::Archive, false) => "moved",
                (Origin::Archive, Action::Archive, true) => "would move",
                (_, action, dry) => action.word(dry),
            };
            let _ = writeln!(
                s,
                "{word} {} ({size}){}{}",
                path_text(&r.path),
                if r.detail.is_empty() { "" } else { ": " },
                line_text(&r.detail),
            );
            if r.valid_json == Some(false) {
                let _ = writeln!(
                    s,
                    "  problem: {}: not valid JSON (archived as it is: archival preserves bytes)",
                    path_text(&r.path)
                );
            }
        }
        s
    }
}

/// One archive of a user's notifications (or one that would be written).
#[derive(Clone, Debug, Serialize)]
pub struct BatchReport {
    /// The user.
    pub user: String,
    /// The archive: its path, or with a store its object's URL.
    #[serde(serialize_with = "serialize_path")]
    pub archive: PathBuf,
    /// What was (or would be) done.
    pub action: Action,
    /// Notifications in the batch.
    pub notifications: u64,
    /// Notifications deleted from the inbox (with their acks); in a dry run, that would be.
    pub deleted: u64,
    /// Bytes of the notifications and acks of the batch.
    pub bytes_in: u64,
    /// Size of the archive, when one was written or found.
    pub archive_bytes: Option<u64>,
    /// Notifications kept because they changed after they were read (rewritten, delivered
    /// again): their inbox files.
    pub changed: Vec<String>,
    /// Details in words.
    pub detail: String,
    /// The object that holds the batch, when archiving to a store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<StoredObject>,
}

/// Totals of the notification archival (in the run's counts).
#[derive(Clone, Debug, Default, Serialize)]
pub struct NotificationCounts {
    /// Acks looked at.
    pub acks: u64,
    /// Acks younger than `--notifications-older-than` (their notifications left).
    pub acks_young: u64,
    /// Notifications archived (or that would be).
    pub notifications_archived: u64,
    /// Notifications kept because they changed during the run.
    pub notifications_changed: u64,
    /// Acks whose notification an archive already held (an interrupted run completed).
    pub acks_completed: u64,
    /// Old acks without their notification found by this run, that no archive holds
    /// (kept, each reported once with what to do).
    pub orphan_acks: u64,
    /// Old acks without their notification that an earlier run reported (kept, not
    /// looked for again in the archives it searched then).
    pub orphan_acks_known: u64,
    /// Old acks without their notification that could not be compared with the store's
    /// archives (a store that failed gets no request): kept, for the next run to decide.
    pub acks_not_compared: u64,
    /// Archives written (or that would be).
    pub notification_archives: u64,
    /// Old acks left, their notification too, because a temporary of the notification's
    /// or the ack's name lies beside it (tmpa_maint::finals_with_temporaries).
    #[serde(skip_serializing_if = "crate::is_zero_u64")]
    pub notifications_beside_temporary: u64,
}

/// One line of the text report for a batch (and one per notification kept because it
/// changed).
fn render_batch(b: &BatchReport, dry_run: bool) -> String {
    let size = match b.archive_bytes {
        Some(a) => format!("{} -> {a} bytes", b.bytes_in),
        None => format!("{} bytes", b.bytes_in),
    };
    let mut s = format!(
        "{} {} notifications of {} into {} ({size}){}{}",
        b.action.word(dry_run),
        b.notifications,
        b.user,
        path_text(&b.archive),
        if b.detail.is_empty() { "" } else { ": " },
        b.detail,
    );
    for f in &b.changed {
        s.push_str(&format!(
            "\n  changed {f}: rewritten after it was read (kept with its ack; the next run looks again)"
        ));
    }
    s
}
