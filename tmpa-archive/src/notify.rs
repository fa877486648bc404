//! Acknowledged notifications as units of the pipeline (`pipeline.rs`): per user, the
//! notifications whose ack is older than `--notifications-older-than` go in batches into
//! one archive each, `acked-{n}-{digest}.tar.gz` (tmpa-core's format: each
//! notification's name, exact bytes and time, and its ack's), in the user's
//! `notifications/{user}/archive/` or, with a store, the object of that name beside the
//! user's sessions. The pipeline writes it without replacing anything, reads it back and
//! compares it member by member, writes the receipt, and deletes the inbox files, and
//! after each its ack, through the one delete step.
//!
//! Never touched: an unacknowledged notification, one whose ack is younger than the
//! cutoff, temporaries, anything that is not a regular `ntf_{id}.json` / `ntf_{id}.ack`.
//! An old ack without its notification is settled by `lonely.rs`. A notification
//! rewritten or delivered again during the run is kept (its ack too) and reported.
//!
//! Applying a plan: a notification (its inbox file and ack together) takes part only
//! when the plan lists both unchanged, and a batch only when the plan holds each of its
//! files in that very archive; otherwise the run names the file that changed and keeps
//! the whole batch, and no archive is written for it.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tmpa_core::maintenance::{
    ArchivedNotification, Dir, Kind, Meta, NOTIFICATION_ARCHIVE_BYTES_MAX, NOTIFICATION_BYTES_MAX,
    Stamp, archive_name, path_text, same_batch, sha256_hex, temp_final_name, write_archive,
};
use tmpa_core::{Error, NotificationId, Problem, ProblemKind, UserId};
use tmpa_maint::{Admission, Candidate, Mode, Outcome, Run};

use crate::pipeline::{self, Done, Early, Facts, Member, Opened, Other, Seen, Unit};
use crate::report::{Action, BatchReport, Report};
use crate::tier::{Holds, TakenBack, Tiers};

/// Notifications per archive: bounds one archive's index (what a library lookup reads
/// from each archive) and what a crash can leave archived but not yet deleted. Not
/// session.rs's `BATCH_MAX` (sessions between two receipt writes).
const NOTIFICATIONS_PER_ARCHIVE_MAX: usize = 4096;
/// Bytes of notifications and acks held in memory for one batch.
const BATCH_BYTES_MAX: u64 = 64 << 20;

/// What the run asks of the notifications.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Options {
    /// Notifications whose ack was modified before this are archived.
    pub(crate) cutoff: SystemTime,
    /// gzip level, 0 to 9.
    pub(crate) level: u32,
}

/// A notification read from the inbox with its ack, about to be archived.
struct Read {
    n: ArchivedNotification,
    stamp: Stamp,
    ack_stamp: Stamp,
}

/// Archives `user`'s acknowledged notifications older than the cutoff (and settles the
/// old acks without their notification), reporting into `report`.
///
/// # Errors
/// A directory of the user that cannot be opened or listed, or a receipt that cannot be
/// written: the caller reports the user as not archived.
pub(crate) fn archive_user(
    run: &mut Run,
    tiers: &Tiers<'_>,
    user: &UserId,
    opts: Options,
    report: &mut Report,
    memory: &mut crate::lonely::Memory,
) -> tmpa_core::Result<()> {
    let root = run.root().clone();
    let base = Path::new("notifications").join(user.as_str());
    let Some(acks) = crate::open_if_any(&root, &base.join("ack"))? else {
        return Ok(());
    };
    let inbox = crate::open_if_any(&root, &base.join("inbox"))?;
    let (old, lonely) = old_acks(&acks, inbox.as_ref(), opts.cutoff, report)?;
    crate::lonely::settle(run, tiers, user, &acks, lonely, report, memory)?;
    let Some(inbox) = inbox else {
        return Ok(());
    };
    let mut batch = Vec::new();
    let mut bytes = 0u64;
    for (id, meta, ack_meta) in old {
        if !admitted(run, (&inbox, &meta), (&acks, &ack_meta), &id) {
            continue;
        }
        let Some(r) = read_one(&inbox, &acks, &id, report) else {
            continue;
        };
        bytes += r.stamp.size + r.ack_stamp.size;
        batch.push(r);
        if batch.len() == NOTIFICATIONS_PER_ARCHIVE_MAX || bytes >= BATCH_BYTES_MAX {
            archive_batch(
                run,
                tiers,
                (user, &inbox, &acks),
                std::mem::take(&mut batch),
                opts,
                report,
            )?;
            bytes = 0;
        }
    }
    if !batch.is_empty() {
        archive_batch(run, tiers, (user, &inbox, &acks), batch, opts, report)?;
    }
    Ok(())
}

/// Applying a plan: whether the notification `id` (its inbox file and its ack, as
/// listed) is one the plan lists, both unchanged. The run names a changed one itself.
fn admitted(
    run: &mut Run,
    (inbox, meta): (&Dir, &Meta),
    (acks, ack_meta): (&Dir, &Meta),
    id: &NotificationId,
) -> bool {
    let body = path_text(&inbox.join(format!("ntf_{id}.json")));
    let ack = path_text(&acks.join(format!("ntf_{id}.ack")));
    let group = [
        Candidate {
            file: &body,
            stamp: &meta.stamp,
            sha256: None,
            held_by: None,
        },
        Candidate {
            file: &ack,
            stamp: &ack_meta.stamp,
            sha256: None,
            held_by: None,
        },
    ];
    run.admit(&group) == Admission::Admitted
}

/// The old acks whose notification is in the inbox (with both files' metadata), sorted,
/// and the old acks without one. Young acks are counted; symlinks and odd entries
/// reported.
#[allow(clippy::type_complexity)] // two plain lists of what a listing found
fn old_acks(
    acks: &Dir,
    inbox: Option<&Dir>,
    cutoff: SystemTime,
    report: &mut Report,
) -> tmpa_core::Result<(
    Vec<(NotificationId, Meta, Meta)>,
    Vec<(NotificationId, Meta)>,
)> {
    let cutoff_ns = cutoff
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    let (mut old, mut lonely) = (Vec::new(), Vec::new());
    // A notification or ack with a temporary of its name beside it is being written, or
    // its write died: both stay.
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
        report.counts.notifications.acks += 1;
        let Some(ack_meta) = regular(acks, &name, report) else {
            continue;
        };
        if ack_meta.stamp.mtime_ns > cutoff_ns {
            report.counts.notifications.acks_young += 1;
            continue;
        }
        let inbox_name = format!("ntf_{id}.json");
        if ack_temps.contains(&name) || inbox_temps.contains(OsStr::new(&inbox_name)) {
            report.counts.notifications.notifications_beside_temporary += 1;
            continue;
        }
        let live = match inbox.map(|d| d.stat(&inbox_name)).transpose()? {
            Some(Some(m)) => Some(m),
            _ => None,
        };
        match live {
            None => lonely.push((id, ack_meta)),
            Some(m) if m.kind == Kind::File => old.push((id, m, ack_meta)),
            Some(_) => report.problems.push(Problem::new(
                inbox.expect("listed").join(&inbox_name),
                ProblemKind::Unsafe,
                "is not a regular file (left alone, its ack too)",
            )),
        }
    }
    old.sort_by(|a, b| a.0.cmp(&b.0));
    lonely.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((old, lonely))
}

/// The metadata of `name` when it is a regular file; a symlink or another kind is
/// reported.
pub(crate) fn regular(dir: &Dir, name: &OsStr, report: &mut Report) -> Option<Meta> {
    let problem = |report: &mut Report, kind, why: &str| {
        report
            .problems
            .push(Problem::new(dir.join(name), kind, why));
    };
    match dir.stat(name) {
        Ok(Some(m)) if m.kind == Kind::File => Some(m),
        Ok(Some(_)) => {
            problem(
                report,
                ProblemKind::Unsafe,
                "is not a regular file (not followed, left alone)",
            );
            None
        }
        Ok(None) => None,
        Err(e) => {
            problem(report, ProblemKind::Unreadable, &e.chain());
            None
        }
    }
}

/// Reads a notification and its ack (each from its descriptor, with the stamp of what
/// was read); `None` when either is gone, too large or unreadable (reported).
fn read_one(inbox: &Dir, acks: &Dir, id: &NotificationId, report: &mut Report) -> Option<Read> {
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
            report.problems.push(Problem::new(
                path,
                kind,
                format!("not archived: {}", e.chain()),
            ));
            None
        }
    }
}

/// One batch through the pipeline, and its report.
fn archive_batch(
    run: &mut Run,
    tiers: &Tiers<'_>,
    (user, inbox, acks): (&UserId, &Dir, &Dir),
    batch: Vec<Read>,
    opts: Options,
    report: &mut Report,
) -> tmpa_core::Result<()> {
    let unit = BatchUnit {
        user,
        inbox,
        acks,
        bytes_in: batch.iter().map(|r| r.stamp.size + r.ack_stamp.size).sum(),
        batch,
        level: opts.level,
    };
    let done = pipeline::archive(run, tiers, std::slice::from_ref(&unit))?;
    for d in done {
        unit.report(tiers, d, report);
    }
    Ok(())
}

/// A batch of a user's acknowledged notifications: one archive.
struct BatchUnit<'d> {
    user: &'d UserId,
    inbox: &'d Dir,
    acks: &'d Dir,
    batch: Vec<Read>,
    bytes_in: u64,
    level: u32,
}

impl<'d> Unit<'d> for BatchUnit<'d> {
    type Open = Vec<ArchivedNotification>;

    fn user(&self) -> &UserId {
        self.user
    }

    fn source(&self) -> String {
        self.batch.first().map_or_else(String::new, |r| {
            path_text(&self.inbox.join(format!("ntf_{}.json", r.n.id)))
        })
    }

    fn charge(&self) -> u64 {
        self.bytes_in.saturating_mul(2)
    }

    fn open(
        &self,
        tiers: &Tiers<'_>,
        mode: Mode,
    ) -> Result<Opened<'d, Vec<ArchivedNotification>>, Early> {
        let notes: Vec<ArchivedNotification> = self.batch.iter().map(|r| r.n.clone()).collect();
        let name = archive_name(&notes);
        let place = tiers.write().notifications(self.user, &name);
        let bytes = if mode.writes() {
            let bytes = write_archive(Vec::new(), &notes, self.level)
                .map_err(|e| Early::new(Action::Failed, format!("compress: {e}")))?;
            // Bounded like every read of it: an archive the library could not read back
            // is never stored.
            if bytes.len() as u64 > NOTIFICATION_ARCHIVE_BYTES_MAX {
                return Err(Early::new(
                    Action::Failed,
                    format!(
                        "the batch compresses to {} bytes, more than {NOTIFICATION_ARCHIVE_BYTES_MAX}",
                        bytes.len()
                    ),
                ));
            }
            Some(bytes)
        } else {
            None
        };
        let mut members = Vec::with_capacity(2 * self.batch.len());
        for r in &self.batch {
            members.push(Member {
                dir: self.inbox,
                name: format!("ntf_{}.json", r.n.id),
                stamp: r.stamp,
                sha256: sha256_hex(&r.n.body),
                after: None,
            });
        }
        for (i, r) in self.batch.iter().enumerate() {
            // The ack after its notification: a run stopped between the two leaves an
            // ack whose notification is archived, which the next run completes; the
            // other order would leave a notification that looks unread.
            members.push(Member {
                dir: self.acks,
                name: format!("ntf_{}.ack", r.n.id),
                stamp: r.ack_stamp,
                sha256: sha256_hex(&r.n.ack),
                after: Some(i),
            });
        }
        Ok(Opened {
            open: notes,
            bytes,
            existing: Some(place.clone()),
            new: Some(place),
            other: Other::Conflict,
            members,
            // Notifications are private to their user: so is their archive.
            mode: 0o600,
            bytes_max: NOTIFICATION_ARCHIVE_BYTES_MAX,
            holds: Holds::Notifications(self.batch.len() as u64),
            facts: Facts::default(),
        })
    }

    fn compare(
        &self,
        notes: &mut Vec<ArchivedNotification>,
        got: &[u8],
    ) -> tmpa_core::Result<Seen> {
        Ok(match same_batch(got, Path::new("the archive"), notes) {
            Ok(true) => Seen::Same,
            Ok(false) => Seen::Other,
            Err(why) => Seen::Foreign(format!("does not read back: {why} (all kept)")),
        })
    }
}

impl BatchUnit<'_> {
    /// The batch's report line, and what became of each of its files.
    fn report(&self, tiers: &Tiers<'_>, done: Done, report: &mut Report) {
        if !done.admitted {
            return; // the run names what is not as planned
        }
        let n = self.batch.len();
        let name = archive_name(&self.batch.iter().map(|r| r.n.clone()).collect::<Vec<_>>());
        let place = tiers.write().notifications(self.user, &name);
        let mut b = BatchReport {
            user: self.user.to_string(),
            archive: PathBuf::from(tiers.of(&place).shown(&place)),
            action: done.action,
            notifications: n as u64,
            deleted: 0,
            bytes_in: self.bytes_in,
            archive_bytes: None,
            changed: Vec::new(),
            detail: done.detail,
            object: None,
        };
        if let Some(h) = &done.held {
            b.archive_bytes = (!h.sha256.is_empty()).then_some(h.info.size);
            b.object = h.object();
        }
        let c = &mut report.counts.notifications;
        if done.action.deletes_source() {
            c.notification_archives += 1;
        }
        let mut problems = Vec::new();
        for (i, (file, outcome)) in done.fates.into_iter().enumerate() {
            let body = i < n;
            if outcome.as_ref().is_some_and(Outcome::counts_as_deleted) {
                report.body.tally.notification_files_deleted += 1;
            }
            match outcome {
                Some(
                    Outcome::Deleted | Outcome::WouldDelete | Outcome::Kept(tmpa_maint::Kept::Gone),
                ) if body => {
                    c.notifications_archived += 1;
                    b.deleted += 1;
                }
                Some(Outcome::Left) if body => c.notifications_archived += 1,
                // Acks that went (or were left) with their notification; nothing offered.
                None
                | Some(
                    Outcome::Deleted
                    | Outcome::WouldDelete
                    | Outcome::Left
                    | Outcome::Kept(tmpa_maint::Kept::Gone),
                ) => {}
                Some(Outcome::Kept(k)) => {
                    if body {
                        c.notifications_changed += 1;
                        b.changed.push(file.clone());
                    }
                    if k.needs_look() || !body {
                        problems.push(Problem::new(
                            PathBuf::from(file),
                            ProblemKind::Conflict,
                            k.words(),
                        ));
                    }
                }
                Some(Outcome::Failed(e)) => {
                    report.body.tally.deletions_failed += 1;
                    report.body.failed = true;
                    problems.push(Problem::new(
                        PathBuf::from(file),
                        ProblemKind::Unreadable,
                        format!(
                            "archived and verified, but cannot delete: {} (kept; the next run completes)",
                            e.chain()
                        ),
                    ));
                }
            }
        }
        report.problems.append(&mut problems);
        match done.taken_back {
            Some(TakenBack::Removed) => report.tally.taken_back += 1,
            Some(TakenBack::Left(why)) => {
                b.detail = pipeline::join(&b.detail, &format!("its archive stays: {why}"));
            }
            None => {}
        }
        report.notification_batches.push(b);
    }
}

/// The id of `ntf_{id}{ext}`, when `name` is one and not a temporary.
pub(crate) fn id_of(name: &OsStr, ext: &str) -> Option<NotificationId> {
    if temp_final_name(name).is_some() {
        return None;
    }
    let id = name.to_str()?.strip_prefix("ntf_")?.strip_suffix(ext)?;
    NotificationId::new(id).ok()
}
