//! Archiving acknowledged notifications: per user, the notifications whose ack is older
//! than `--notifications-older-than` go in batches into
//! `notifications/{user}/archive/acked-{n}-{digest}.tar.gz` (tmpa-core's format: each
//! notification's name, exact bytes and time, and its ack's), written atomically without
//! replacing anything, read back from disk and compared member by member, receipted, and
//! only then are the inbox files, and after them their acks, deleted through the one
//! deletion path.
//!
//! With an object store (the run's [`StoreRun`], from `tmpa.toml` or `--to`), each batch
//! goes instead into the object `{prefix}/{user}/acked-{n}-{digest}.tar.gz`, beside the
//! user's sessions, through the one store path of sessions (`store::put_verified`:
//! HEAD, a put that never replaces, GET, ETag and SHA-256 against the put, every member
//! compared), and the deletions' receipts say `store_read_back` with the object's URL.
//! A store that fails leaves every batch not yet verified in place; a dry run makes no
//! request.
//!
//! Never touched: an unacknowledged notification, one whose ack is younger than the
//! cutoff, temporaries, anything that is not a regular `ntf_{id}.json` / `ntf_{id}.ack`.
//! An old ack without its notification is kept and reported (exit 1), unless an archive
//! holds its notification with exactly that ack (a run stopped between the two
//! deletions): then it is deleted on the strength of that archive. A notification
//! rewritten or delivered again during the run is kept (its ack too) and reported.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;
use tmpa_core::maintenance::store::ObjectKey;
use tmpa_core::maintenance::{
    ArchivedNotification, AtomicFile, Dir, Kind, Meta, NOTIFICATION_ARCHIVE_BYTES_MAX,
    NOTIFICATION_ARCHIVE_DIR, NOTIFICATION_BYTES_MAX, Stamp, archive_name, archive_names,
    path_text, read_archive, root_dir, serialize_path, sha256_hex, temp_final_name, write_archive,
};
use tmpa_core::{Error, NotificationId, Problem, ProblemKind, UserId};
use tmpa_maint::{Deletion, Doomed, Kept, Outcome, Planned, Proof, Run};

use crate::session::StoredObject;
use crate::store::{StoreRun, Verdict};

/// Notifications per archive: bounds one archive's index (what a library lookup reads
/// from each archive) and what a crash can leave archived but not yet deleted.
const BATCH_MAX: usize = 4096;
/// Bytes of notifications and acks held in memory for one batch.
const BATCH_BYTES_MAX: u64 = 64 << 20;

/// What became of one batch of a user's acknowledged notifications.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchAction {
    /// A new archive was written and verified; the sources are deleted (or would be).
    Archive,
    /// The archive already held exactly this batch (an interrupted run): the sources are
    /// deleted (or would be).
    Complete,
    /// An archive of that name holds other bytes, or cannot be read: all kept.
    Conflict,
    /// The object this run stored does not read back as stored, or not as the batch:
    /// all kept.
    VerificationFailed,
    /// An I/O error (full disk, permission) or a store that failed: all kept.
    Failed,
}

impl BatchAction {
    fn deletes_sources(self) -> bool {
        matches!(self, BatchAction::Archive | BatchAction::Complete)
    }

    fn word(self, dry_run: bool) -> &'static str {
        match (self, dry_run) {
            (BatchAction::Archive, false) => "archived",
            (BatchAction::Archive, true) => "would archive",
            (BatchAction::Complete, false) => "completed",
            (BatchAction::Complete, true) => "would complete",
            (BatchAction::Conflict, _) => "conflict",
            (BatchAction::VerificationFailed, _) => "verification failed",
            (BatchAction::Failed, _) => "failed",
        }
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
    pub action: BatchAction,
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
    /// Old acks without their notification (kept, reported).
    pub orphan_acks: u64,
    /// Old acks without their notification that could not be compared with the store's
    /// archives (a dry run makes no request; a store that failed gets none): kept, for
    /// the next real run to decide.
    pub acks_not_compared: u64,
    /// Archives written (or that would be).
    pub notification_archives: u64,
    /// Old acks left, their notification too, because a temporary of the notification's
    /// or the ack's name lies beside it (tmpa_maint::finals_with_temporaries).
    #[serde(skip_serializing_if = "crate::is_zero_u64")]
    pub notifications_beside_temporary: u64,
}

/// One user's notification archival.
pub(crate) struct NotifyRun<'a> {
    pub(crate) user: &'a UserId,
    /// Where archives go: the store, or (`None`) the user's `archive/`.
    pub(crate) store: Option<&'a StoreRun>,
    pub(crate) cutoff: SystemTime,
    pub(crate) level: u32,
    pub(crate) batches: &'a mut Vec<BatchReport>,
    pub(crate) problems: &'a mut Vec<Problem>,
    pub(crate) counts: &'a mut NotificationCounts,
    /// Files deleted (or that would be).
    pub(crate) deleted: u64,
}

/// A notification read from the inbox with its ack, about to be archived.
struct Read {
    n: ArchivedNotification,
    stamp: Stamp,
    ack_stamp: Stamp,
}

impl NotifyRun<'_> {
    /// Archives the user's acknowledged notifications older than the cutoff.
    pub(crate) fn archive_user(&mut self, run: &mut Run) -> tmpa_core::Result<()> {
        let root = run.root().clone();
        let base = Path::new("notifications").join(self.user.as_str());
        let Some(acks) = crate::open_if_any(&root, &base.join("ack"))? else {
            return Ok(());
        };
        let inbox = crate::open_if_any(&root, &base.join("inbox"))?;
        let (mut old, lonely) = self.old_acks(&acks, inbox.as_ref())?;
        if let Some(inbox) = &inbox {
            self.keep_planned(run, inbox, &acks, &mut old);
        }
        if old.is_empty() && lonely.is_empty() {
            return Ok(());
        }
        let rel = base.join(NOTIFICATION_ARCHIVE_DIR);
        // With a store, the local directory is only read (archives written before the
        // store was configured).
        let archive = if run.mode().writes() && self.store.is_none() {
            Some(root_dir(&root).create_dir_all(&rel)?)
        } else {
            crate::open_if_any(&root, &rel)?
        };
        let shown_archive = archive
            .as_ref()
            .map_or_else(|| root.path().join(&rel), |d| d.path().to_path_buf());
        self.lonely_acks(run, &acks, archive.as_ref(), lonely)?;
        let Some(inbox) = inbox else {
            return Ok(());
        };
        let mut batch = Vec::new();
        let mut bytes = 0u64;
        for id in old {
            let Some(r) = self.read_one(&inbox, &acks, &id) else {
                continue;
            };
            bytes += r.stamp.size + r.ack_stamp.size;
            batch.push(r);
            if batch.len() == BATCH_MAX || bytes >= BATCH_BYTES_MAX {
                self.batch(
                    run,
                    (&inbox, &acks),
                    (archive.as_ref(), &shown_archive),
                    &batch,
                )?;
                batch.clear();
                bytes = 0;
            }
        }
        if !batch.is_empty() {
            self.batch(
                run,
                (&inbox, &acks),
                (archive.as_ref(), &shown_archive),
                &batch,
            )?;
        }
        Ok(())
    }

    /// The ids of the old acks whose notification is in the inbox, sorted, and of the old
    /// acks without one. Young acks are counted; symlinks and odd entries reported.
    fn old_acks(
        &mut self,
        acks: &Dir,
        inbox: Option<&Dir>,
    ) -> tmpa_core::Result<(Vec<NotificationId>, Vec<NotificationId>)> {
        let cutoff_ns = self
            .cutoff
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        let (mut old, mut lonely) = (Vec::new(), Vec::new());
        // A notification or ack with a temporary of its name beside it is being written,
        // or its write died: both stay.
        let ack_temps = tmpa_maint::finals_with_temporaries(acks)?;
        let inbox_temps = match inbox {
            Some(d) => tmpa_maint::finals_with_temporaries(d)?,
            None => Default::default(),
        };
        for entry in acks.entries()? {
            let name = entry?.name;
            let Some(id) = id_of(&name, ".ack") else {
                continue; // temporaries and files that are not acks
            };
            self.counts.acks += 1;
            let Some(meta) = self.regular(acks, &name) else {
                continue;
            };
            if meta.stamp.mtime_ns > cutoff_ns {
                self.counts.acks_young += 1;
                continue;
            }
            let inbox_name = format!("ntf_{id}.json");
            if ack_temps.contains(&name) || inbox_temps.contains(OsStr::new(&inbox_name)) {
                self.counts.notifications_beside_temporary += 1;
                continue;
            }
            let live = match inbox.map(|d| d.stat(&inbox_name)).transpose()? {
                Some(Some(m)) => Some(m),
                _ => None,
            };
            match live {
                None => lonely.push(id),
                Some(m) if m.kind == Kind::File => old.push(id),
                Some(_) => self.problem(
                    inbox.expect("listed").join(&inbox_name),
                    ProblemKind::Unsafe,
                    "is not a regular file (left alone, its ack too)",
                ),
            }
        }
        old.sort();
        lonely.sort();
        Ok((old, lonely))
    }

    /// The metadata of `name` when it is a regular file; a symlink or another kind is
    /// reported.
    fn regular(&mut self, dir: &Dir, name: &OsStr) -> Option<Meta> {
        match dir.stat(name) {
            Ok(Some(m)) if m.kind == Kind::File => Some(m),
            Ok(Some(_)) => {
                self.problem(
                    dir.join(name),
                    ProblemKind::Unsafe,
                    "is not a regular file (not followed, left alone)",
                );
                None
            }
            Ok(None) => None,
            Err(e) => {
                self.problem(dir.join(name), ProblemKind::Unreadable, &e.chain());
                None
            }
        }
    }

    /// Applying a plan: keeps only the notifications whose inbox file and ack it lists,
    /// unchanged.
    fn keep_planned(
        &mut self,
        run: &mut Run,
        inbox: &Dir,
        acks: &Dir,
        ids: &mut Vec<NotificationId>,
    ) {
        ids.retain(|id| {
            [
                (inbox, format!("ntf_{id}.json")),
                (acks, format!("ntf_{id}.ack")),
            ]
            .iter()
            .all(
                |(dir, name)| match run.planned(&path_text(&dir.join(name))) {
                    Planned::NoPlan => true,
                    Planned::NotInPlan => false,
                    Planned::Listed(p) => {
                        let now = dir.stat(name).ok().flatten().map(|m| m.stamp);
                        now == Some(p.stamp)
                    }
                },
            )
        });
    }

    /// Reads a notification and its ack (each from its descriptor, with the stamp of what
    /// was read); `None` when either is gone, too large or unreadable (reported).
    fn read_one(&mut self, inbox: &Dir, acks: &Dir, id: &NotificationId) -> Option<Read> {
        let name = format!("ntf_{id}.json");
        let ack_name = format!("ntf_{id}.ack");
        let read = |dir: &Dir, name: &str| dir.read(name, NOTIFICATION_BYTES_MAX);
        match (read(inbox, &name), read(acks, &ack_name)) {
            (Ok((body, meta)), Ok((ack, ack_meta))) => Some(Read {
                n: ArchivedNotification {
                    id: id.clone(),
                    body,
                    mtime_ns: meta.stamp.mtime_ns,
                    ack,
                    acked_ns: ack_meta.stamp.mtime_ns,
                },
                stamp: meta.stamp,
                ack_stamp: ack_meta.stamp,
            }),
            (Err(e), _) | (_, Err(e)) if e.io_kind() == io::ErrorKind::NotFound => None,
            (Err(e), _) | (_, Err(e)) => {
                let kind = match e {
                    Error::Corrupt { .. } => ProblemKind::Corrupt,
                    _ => ProblemKind::Unreadable,
                };
                let path = e
                    .path()
                    .map_or_else(|| inbox.join(&name), Path::to_path_buf);
                self.problem(path, kind, &format!("not archived: {}", e.chain()));
                None
            }
        }
    }

    /// Archives one batch, verifies it from disk (or from the store), then deletes its
    /// inbox files and, after each, its ack, through the one deletion path.
    fn batch(
        &mut self,
        run: &mut Run,
        (inbox, acks): (&Dir, &Dir),
        (archive, shown_archive): (Option<&Dir>, &Path),
        batch: &[Read],
    ) -> tmpa_core::Result<()> {
        let notes: Vec<ArchivedNotification> = batch.iter().map(|r| r.n.clone()).collect();
        let name = archive_name(&notes);
        let mut report = BatchReport {
            user: self.user.to_string(),
            archive: shown_archive.join(&name),
            action: BatchAction::Failed,
            notifications: batch.len() as u64,
            deleted: 0,
            bytes_in: batch.iter().map(|r| r.stamp.size + r.ack_stamp.size).sum(),
            archive_bytes: None,
            changed: Vec::new(),
            detail: String::new(),
            object: None,
        };
        match (self.store, archive.filter(|_| run.mode().writes())) {
            (Some(sr), _) => {
                let key = sr.store.notification_key(self.user, &name);
                let url = sr.store.object_url(&key);
                report.archive = PathBuf::from(&url);
                report.object = Some(StoredObject {
                    url,
                    ..StoredObject::default()
                });
                if run.mode().writes() {
                    store_batch(sr, &key, &notes, self.level, &mut report);
                } else {
                    report.action = BatchAction::Archive;
                    report.detail = "dry run: the store is not contacted".into();
                }
            }
            (None, None) => report.action = BatchAction::Archive,
            (None, Some(dir)) => match write_and_verify(dir, &name, &notes, self.level) {
                Ok((action, bytes, detail)) => {
                    report.action = action;
                    report.archive_bytes = Some(bytes);
                    report.detail = detail;
                }
                Err(e) => report.detail = e.chain(),
            },
        }
        let i = self.batches.len();
        self.batches.push(report);
        if !self.batches[i].action.deletes_sources() {
            return Ok(());
        }
        self.counts.notification_archives += 1;
        let (held_by, proof) = self.held_by(&self.batches[i], batch.len() as u64);
        let bodies: Vec<Doomed<'_>> = batch
            .iter()
            .map(|r| {
                let name = format!("ntf_{}.json", r.n.id);
                doomed(inbox, name, (&r.n.body, r.stamp), &held_by, &proof)
            })
            .collect();
        let ack_of = |r: &Read| {
            let name = format!("ntf_{}.ack", r.n.id);
            doomed(acks, name, (&r.n.ack, r.ack_stamp), &held_by, &proof)
        };
        // Inbox files first: a run stopped between the two leaves an ack whose
        // notification is archived, which the next run completes; the other order would
        // leave a notification that looks unread. Per mode (Run::dispose): noted in a dry
        // run's plan, left by --no-delete (with their acks), or deleted.
        let (outcomes, bodies_synced) = run.dispose(bodies, |_| None)?.split();
        let mut then_acks = Vec::new();
        let mut archived = 0u64;
        for (r, outcome) in batch.iter().zip(outcomes) {
            let file = path_text(&inbox.join(format!("ntf_{}.json", r.n.id)));
            match outcome {
                Outcome::Deleted | Outcome::WouldDelete | Outcome::Kept(Kept::Gone) => {
                    archived += 1;
                    then_acks.push(ack_of(r));
                }
                Outcome::Left => archived += 1,
                Outcome::Kept(k) => {
                    self.counts.notifications_changed += 1;
                    self.batches[i].changed.push(file.clone());
                    let kind = if k.needs_look() {
                        ProblemKind::Conflict
                    } else {
                        continue;
                    };
                    self.problem(PathBuf::from(file), kind, &k.words());
                }
                Outcome::Failed(e) => self.problem(
                    PathBuf::from(file),
                    ProblemKind::Unreadable,
                    &format!("archived and verified, but cannot delete: {} (kept; the next run completes)", e.chain()),
                ),
            }
        }
        let n_bodies = then_acks.len() as u64;
        let of_acks = run.dispose(then_acks, |_| None)?;
        self.deleted += n_bodies + of_acks.deleted();
        self.batches[i].deleted = n_bodies;
        self.counts.notifications_archived += archived;
        let (_, acks_synced) = of_acks.split();
        bodies_synced.and(acks_synced)
    }

    /// Where a batch's notifications are now and how that was verified, for the receipt.
    fn held_by(&self, b: &BatchReport, notifications: u64) -> (String, Proof) {
        let user = self.user.to_string();
        match &b.object {
            Some(o) => (o.url.clone(), store_proof(user, o)),
            None => (
                path_text(&b.archive),
                Proof::NotificationArchive {
                    user,
                    archive_bytes: b.archive_bytes.unwrap_or(0),
                    notifications,
                },
            ),
        }
    }

    /// Old acks without their notification: deleted when an archive (local, or in the
    /// store) holds their notification with exactly these bytes (a run stopped between
    /// its two deletions), else kept and reported.
    fn lonely_acks(
        &mut self,
        run: &mut Run,
        acks: &Dir,
        archive: Option<&Dir>,
        lonely: Vec<NotificationId>,
    ) -> tmpa_core::Result<()> {
        if lonely.is_empty() {
            return Ok(());
        }
        // Which archive holds each (only the lonely ids are kept from the indexes): where
        // it is, how that was verified, and the SHA-256 of the ack it holds. Each archive
        // is read whole, every member checked against its index and the stream against
        // its gzip checksum, before its index may vouch for a deletion.
        let mut held: HashMap<String, (String, Proof, String)> = HashMap::new();
        if let Some(dir) = archive {
            for name in archive_names(dir)? {
                let file = dir.open_read(&name)?;
                let bytes = Meta::of_fd(&file).map_or(0, |m| m.stamp.size);
                let index = read_archive(file, &dir.join(&name), |_| true, |_| true)?;
                let n = index.len() as u64;
                for e in index {
                    if lonely.binary_search_by(|id| id.as_str().cmp(&e.id)).is_ok() {
                        let proof = Proof::NotificationArchive {
                            user: self.user.to_string(),
                            archive_bytes: bytes,
                            notifications: n,
                        };
                        let held_by = path_text(&dir.join(&name));
                        held.insert(e.id, (held_by, proof, e.ack_sha256));
                    }
                }
            }
        }
        let mut compared = true;
        if let Some(sr) = self.store {
            compared = run.mode().writes() && sr.untried().is_none();
            if compared && let Err(e) = self.store_holders(sr, &lonely, &mut held) {
                sr.note(&e);
                compared = false;
                self.problem(
                    acks.path().to_path_buf(),
                    ProblemKind::Unreadable,
                    &format!(
                        "acks without their notification kept: the store's archives cannot be read: {}",
                        e.chain()
                    ),
                );
            }
        }
        let mut doomed = Vec::new();
        for id in &lonely {
            let name = format!("ntf_{id}.ack");
            let read = acks.read(&name, NOTIFICATION_BYTES_MAX);
            let (ack, meta) = match read {
                Ok(r) => r,
                Err(e) if e.io_kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    self.problem(acks.join(&name), ProblemKind::Unreadable, &e.chain());
                    continue;
                }
            };
            let sha = sha256_hex(&ack);
            match held.get(id.as_str()) {
                Some((held_by, proof, ack_sha)) if *ack_sha == sha => {
                    doomed.push(self::doomed(acks, name, (&ack, meta.stamp), held_by, proof));
                }
                _ if !compared => self.counts.acks_not_compared += 1,
                _ => {
                    self.counts.orphan_acks += 1;
                    let reason = format!(
                        "an ack without its notification (inbox/ntf_{id}.json is missing and no archive holds it with this ack): kept"
                    );
                    self.problem(acks.join(&name), ProblemKind::Conflict, &reason);
                }
            }
        }
        let disposed = run.dispose(doomed, |_| None)?;
        self.counts.acks_completed += disposed.deleted();
        self.deleted += disposed.deleted();
        disposed.split().1
    }

    /// Adds to `held` the lonely acks whose notification an archive in the store holds
    /// (local archives found first are kept), each archive read back whole from the store.
    fn store_holders(
        &self,
        sr: &StoreRun,
        lonely: &[NotificationId],
        held: &mut HashMap<String, (String, Proof, String)>,
    ) -> tmpa_core::Result<()> {
        for name in sr.store.list_notification_archives(self.user)? {
            let key = sr.store.notification_key(self.user, &name);
            let Some((bytes, info)) = sr.store.get(&key, NOTIFICATION_ARCHIVE_BYTES_MAX)? else {
                continue;
            };
            let url = sr.store.object_url(&key);
            let index = read_archive(&bytes[..], Path::new(&url), |_| true, |_| true)?;
            let object = StoredObject {
                url: url.clone(),
                bytes: Some(info.size),
                etag: info.etag,
                version: info.version,
                sha256: Some(sha256_hex(&bytes)),
            };
            for e in index {
                if lonely.binary_search_by(|id| id.as_str().cmp(&e.id)).is_ok()
                    && !held.contains_key(&e.id)
                {
                    let proof = store_proof(self.user.to_string(), &object);
                    held.insert(e.id, (url.clone(), proof, e.ack_sha256));
                }
            }
        }
        Ok(())
    }

    fn problem(&mut self, path: PathBuf, kind: ProblemKind, reason: &str) {
        self.problems.push(Problem::new(path, kind, reason));
    }
}

/// The receipt's proof for files whose data the object `o` holds, read back from the
/// store.
fn store_proof(user: String, o: &StoredObject) -> Proof {
    Proof::StoreReadBack {
        user,
        object_bytes: o.bytes.unwrap_or(0),
        etag: o.etag.clone(),
        version: o.version.clone(),
        object_sha256: o.sha256.clone().unwrap_or_default(),
    }
}

/// Writes the archive of `batch` to the store as the object `key` (never replacing
/// one; an equal one completes an interrupted run) and verifies it read back from the
/// store, every member compared with the batch, through the store path of sessions.
/// A failure of the store itself stops every later request of the run.
fn store_batch(
    sr: &StoreRun,
    key: &ObjectKey,
    batch: &[ArchivedNotification],
    level: u32,
    report: &mut BatchReport,
) {
    if let Some(why) = sr.untried() {
        report.action = BatchAction::Failed;
        report.detail = why;
        return;
    }
    let shown = report.archive.clone();
    let put = write_archive(Vec::new(), batch, level)
        .map_err(|e| Error::io("compress", &shown, e))
        .and_then(|bytes| {
            // Bounded like every read of it: an archive the library could not read back
            // is never stored.
            if bytes.len() as u64 > NOTIFICATION_ARCHIVE_BYTES_MAX {
                return Err(Error::Corrupt {
                    path: shown.clone(),
                    reason: format!(
                        "the batch compresses to {} bytes, more than {NOTIFICATION_ARCHIVE_BYTES_MAX}",
                        bytes.len()
                    ),
                });
            }
            crate::store::put_verified(sr, key, bytes, NOTIFICATION_ARCHIVE_BYTES_MAX, |got| {
                Ok(same_batch(got, &shown, batch))
            })
        });
    match put {
        Err(e) => {
            sr.note(&e);
            report.action = BatchAction::Failed;
            report.detail = format!("left in place: {}", e.chain());
        }
        Ok(put) => {
            report.action = match put.verdict {
                Verdict::Stored => BatchAction::Archive,
                Verdict::AlreadyThere => BatchAction::Complete,
                Verdict::Conflict | Verdict::Vanished => BatchAction::Conflict,
                Verdict::VerificationFailed => BatchAction::VerificationFailed,
            };
            debug_assert_eq!(put.verdict.verified(), report.action.deletes_sources());
            report.archive_bytes = put.object.bytes;
            report.object = Some(put.object);
            report.detail = put.detail;
        }
    }
}

/// Whether the archive read from `r` holds exactly `batch`, in order; `Err` says why it
/// cannot be read.
fn same_batch(
    r: impl io::Read,
    shown: &Path,
    batch: &[ArchivedNotification],
) -> Result<bool, String> {
    let mut equal = 0usize;
    let read = read_archive(
        r,
        shown,
        |_| true,
        |n| {
            let same = batch.get(equal) == Some(&n);
            equal += usize::from(same);
            same
        },
    );
    match read {
        Ok(index) => Ok(index.len() == batch.len() && equal == batch.len()),
        Err(e) => Err(e.chain()),
    }
}

/// A file of `dir` whose bytes (read with `stamp`) the archive `held_by` holds.
fn doomed<'d>(
    dir: &'d Dir,
    name: String,
    (bytes, stamp): (&[u8], Stamp),
    held_by: &str,
    proof: &Proof,
) -> Doomed<'d> {
    Doomed {
        dir,
        line: Deletion {
            file: path_text(&dir.join(&name)),
            bytes: stamp.size,
            sha256: sha256_hex(bytes),
            stamp,
            held_by: held_by.to_owned(),
            proof: proof.clone(),
        },
        name: name.into(),
        stamp,
        lease: None,
    }
}

/// The id of `ntf_{id}{ext}`, when `name` is one and not a temporary.
fn id_of(name: &OsStr, ext: &str) -> Option<NotificationId> {
    if temp_final_name(name).is_some() {
        return None;
    }
    let id = name.to_str()?.strip_prefix("ntf_")?.strip_suffix(ext)?;
    NotificationId::new(id).ok()
}

/// Writes the archive `name` of `batch` into `dir` (never replacing a file), or finds
/// it already there, and compares it, read back from disk, with the batch. Returns what
/// was done, the archive's size, and details.
fn write_and_verify(
    dir: &Dir,
    name: &str,
    batch: &[ArchivedNotification],
    level: u32,
) -> tmpa_core::Result<(BatchAction, u64, String)> {
    let shown = dir.join(name);
    let existed = dir.stat(name)?.is_some();
    if !existed {
        let mut out = AtomicFile::create_in(dir, OsStr::new(name))?;
        // Notifications are private to their user: so is their archive.
        out.set_mode(0o600)?;
        out = write_archive(out, batch, level).map_err(|e| Error::io("write", &shown, e))?;
        out.flush().map_err(|e| Error::io("write", &shown, e))?;
        match out.commit_new() {
            Ok(()) => {}
            Err(e) if e.io_kind() == io::ErrorKind::AlreadyExists => {
                return Ok((
                    BatchAction::Conflict,
                    0,
                    "appeared while this run was writing it (all kept; the next run compares)"
                        .into(),
                ));
            }
            Err(e) => return Err(e),
        }
    }
    let file = dir.open_read(name)?;
    let meta = Meta::of_fd(&file).map_err(|e| Error::io("stat", &shown, e))?;
    if existed {
        // Deleting on the strength of an archive an earlier run may not have synced.
        file.sync_all().map_err(|e| Error::io("fsync", &shown, e))?;
        dir.sync()?;
    }
    let action = if existed {
        BatchAction::Complete
    } else {
        BatchAction::Archive
    };
    match same_batch(file, &shown, batch) {
        Ok(true) => Ok((action, meta.stamp.size, String::new())),
        Ok(false) => Ok((
            BatchAction::Conflict,
            meta.stamp.size,
            "holds other notifications than this batch (all kept; compare them)".into(),
        )),
        Err(why) => Ok((
            BatchAction::Conflict,
            meta.stamp.size,
            format!("does not read back: {why} (all kept)"),
        )),
    }
}

/// One line of the text report for a batch (and one per notification kept because it
/// changed).
pub(crate) fn render_batch(b: &BatchReport, dry_run: bool) -> String {
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
