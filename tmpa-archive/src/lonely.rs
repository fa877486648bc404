//! Old acks whose notification is not in the inbox ("lonely"). Two cases:
//!
//! - a run stopped between its two deletions (the notification archived and deleted,
//!   its ack not yet): an archive holds the notification with exactly this ack, and the
//!   ack goes through the pipeline on the strength of that archive (read whole and
//!   compared first);
//! - an ack whose notification never existed, or was lost (an **orphan**): no archive
//!   holds it. It is kept, and reported once, with what to do; the run remembers it
//!   (`.tmpa/archive/orphan_acks.json`: the ack's stamp and SHA-256, and the names of the
//!   archives already searched), so that later runs count it without reading those
//!   archives again, and without asking for a look again.
//!
//! Looking for a lonely ack reads only the archives' indexes, each checked against the
//! digest its name carries (an index read alone is then the one the archive was written
//! with); only an archive that holds the ack is read whole, by the pipeline. An archive's
//! name is the digest of its index, so an archive searched once never needs searching
//! again for the same ack: a known orphan is looked for only in archives that appeared
//! since (restored by hand, say). A lonely ack the run has not met before is looked for
//! in every archive.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tmpa_core::maintenance::{
    Dir, Meta, NOTIFICATION_ARCHIVE_BYTES_MAX, NOTIFICATION_BYTES_MAX, STATE_DIR, Stamp, path_text,
    read_archive, root_dir, sha256_hex, write_in,
};
use tmpa_core::{NotificationId, Problem, ProblemKind, Root, UserId};
use tmpa_maint::{Admission, Candidate, Kept, Mode, Outcome, Run};

use crate::pipeline::{self, Early, Facts, Member, Opened, Other, Seen, Unit};
use crate::report::Report;
use crate::tier::{Holds, Place, Tier, Tiers};

/// The memory of orphan acks, relative to the root.
const MEMORY_DIR: &str = "archive";
const MEMORY_NAME: &str = "orphan_acks.json";
/// Largest memory read: beyond it, it is started afresh (every orphan reported once more).
const MEMORY_BYTES_MAX: u64 = 64 << 20;
const MEMORY_FORMAT: u32 = 1;

/// What earlier runs learnt of orphan acks, per user.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Memory {
    format: u32,
    users: BTreeMap<String, UserMemory>,
    #[serde(skip)]
    changed: bool,
}

/// One user's orphan acks, and the archives already searched for them.
#[derive(Debug, Default, Serialize, Deserialize)]
struct UserMemory {
    /// Names of archives (local or stored) whose index was searched.
    searched: BTreeSet<String>,
    /// The orphans reported, each as it was then.
    acks: Vec<KnownOrphan>,
}

/// An orphan ack as it was when it was reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct KnownOrphan {
    id: String,
    sha256: String,
    stamp: Stamp,
}

impl Memory {
    /// The memory of `root`, or an empty one when there is none (or it cannot be read:
    /// then every orphan is reported once more).
    pub(crate) fn load(root: &Root) -> Memory {
        let dir = root_dir(root).open_dir(Path::new(STATE_DIR).join(MEMORY_DIR));
        let read = dir.and_then(|d| d.read(MEMORY_NAME, MEMORY_BYTES_MAX));
        match read
            .ok()
            .and_then(|(b, _)| serde_json::from_slice::<Memory>(&b).ok())
        {
            Some(m) if m.format == MEMORY_FORMAT => m,
            _ => Memory {
                format: MEMORY_FORMAT,
                ..Memory::default()
            },
        }
    }

    /// Writes the memory back, atomically, when a run that writes changed it.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file.
    pub(crate) fn save(&self, root: &Root, mode: Mode) -> tmpa_core::Result<()> {
        if !self.changed || !mode.writes() {
            return Ok(());
        }
        let dir = root_dir(root).create_dir_all(Path::new(STATE_DIR).join(MEMORY_DIR))?;
        let json = serde_json::to_vec_pretty(self).expect("the memory always serializes");
        write_in(&dir, OsStr::new(MEMORY_NAME), &json, false)
    }
}

/// A lonely ack, read.
#[derive(Clone, Debug)]
struct Lonely {
    id: NotificationId,
    stamp: Stamp,
    sha256: String,
}

/// Settles `user`'s lonely acks: each one an archive holds with exactly its bytes goes
/// through the pipeline; the others are orphans (reported once) or, when the store could
/// not be asked, left for the next run.
///
/// # Errors
/// The user's archive directory cannot be listed, or a receipt cannot be written.
pub(crate) fn settle(
    run: &mut Run,
    tiers: &Tiers<'_>,
    user: &UserId,
    acks: &Dir,
    lonely: Vec<(NotificationId, Meta)>,
    report: &mut Report,
    memory: &mut Memory,
) -> tmpa_core::Result<()> {
    let mut found = Vec::new();
    for (id, meta) in lonely {
        let name = format!("ntf_{id}.ack");
        let file = path_text(&acks.join(&name));
        let group = [Candidate {
            file: &file,
            stamp: &meta.stamp,
            sha256: None,
            held_by: None,
        }];
        if run.admit(&group) != Admission::Admitted {
            continue;
        }
        match acks.read(&name, NOTIFICATION_BYTES_MAX) {
            Ok((bytes, m)) => found.push(Lonely {
                id,
                stamp: m.stamp,
                sha256: sha256_hex(&bytes),
            }),
            Err(e) if e.io_kind() == io::ErrorKind::NotFound => {}
            Err(e) => report.problems.push(Problem::new(
                acks.join(&name),
                ProblemKind::Unreadable,
                e.chain(),
            )),
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    let mem = memory.users.entry(user.to_string()).or_default();
    let known = |l: &Lonely| {
        mem.acks
            .iter()
            .any(|k| k.id == l.id.as_str() && k.sha256 == l.sha256 && k.stamp == l.stamp)
    };
    let all_known = found.iter().all(known);
    // Where the user's archives are, and which to search: all of them for an ack not met
    // before, else only those not searched yet.
    let mut search = Search::of(tiers, user)?;
    let wanted: BTreeSet<&str> = found.iter().map(|l| l.id.as_str()).collect();
    let mut held: HashMap<String, (Place, String, u64)> = HashMap::new();
    let mut searched = BTreeSet::new();
    for (name, place) in &search.archives {
        if all_known && mem.searched.contains(name) {
            continue;
        }
        let tier = tiers.of(place);
        if tier.untried().is_some() {
            search.compared = false;
            continue;
        }
        let index = match tier.notification_index(place) {
            Ok(Some(index)) => index,
            Ok(None) => continue,
            Err(e) => {
                tier.note(&e);
                report.problems.push(Problem::new(
                    PathBuf::from(tier.shown(place)),
                    ProblemKind::Corrupt,
                    format!(
                        "searched for acks without their notification: {}",
                        e.chain()
                    ),
                ));
                continue;
            }
        };
        searched.insert(name.clone());
        let n = index.len() as u64;
        for e in index {
            if wanted.contains(e.id.as_str()) && !held.contains_key(&e.id) {
                held.insert(e.id, (place.clone(), e.ack_sha256, n));
            }
        }
    }
    // The acks an archive holds, grouped by archive, through the pipeline.
    let mut units: BTreeMap<String, AckUnit<'_>> = BTreeMap::new();
    let mut orphans = Vec::new();
    for l in found {
        match held.get(l.id.as_str()) {
            Some((place, ack_sha, n)) if *ack_sha == l.sha256 => {
                let key = tiers.of(place).shown(place);
                units
                    .entry(key)
                    .or_insert_with(|| AckUnit {
                        user,
                        acks,
                        place: place.clone(),
                        notifications: *n,
                        found: Vec::new(),
                    })
                    .found
                    .push(l);
            }
            _ if !search.compared => report.counts.notifications.acks_not_compared += 1,
            _ => orphans.push(l),
        }
    }
    for unit in units.into_values() {
        let done = pipeline::archive(run, tiers, std::slice::from_ref(&unit))?;
        for d in done {
            unit.report(d, report);
        }
    }
    let mem = memory.users.entry(user.to_string()).or_default();
    let mut now = Vec::new();
    for l in &orphans {
        let k = KnownOrphan {
            id: l.id.to_string(),
            sha256: l.sha256.clone(),
            stamp: l.stamp,
        };
        if mem.acks.contains(&k) {
            report.counts.notifications.orphan_acks_known += 1;
        } else {
            report.counts.notifications.orphan_acks += 1;
            report.problems.push(Problem::new(
                acks.join(format!("ntf_{}.ack", l.id)),
                ProblemKind::Conflict,
                format!(
                    "an ack without its notification: inbox/ntf_{id}.json is missing and no archive holds it with this ack (kept). \
                     It would mark a notification delivered again under this id as read. If the notification was never delivered, \
                     remove this ack; if it was lost, restore it into inbox/ (the next run archives both). Reported once: later runs \
                     count it as orphan_acks_known without searching these archives again",
                    id = l.id
                ),
            ));
        }
        now.push(k);
    }
    // Remembered only by a run that writes: a dry run reports a new orphan, and so does
    // the real run after it.
    if run.mode().writes() {
        mem.searched.extend(searched);
        mem.acks = now;
        memory.changed = true;
    }
    if memory
        .users
        .get(user.as_str())
        .is_some_and(|m| m.acks.is_empty())
    {
        memory.users.remove(user.as_str());
    }
    Ok(())
}

/// The user's archives, local and in the store, by name.
#[derive(Default)]
struct Search {
    archives: Vec<(String, Place)>,
    /// False when the store's archives could not be listed or read (a failed store):
    /// an ack not found may then be in one of them.
    compared: bool,
}

impl Search {
    /// Every archive of `user` in `tiers`; a tier that fails is noted (and an ack not
    /// found is then not called an orphan).
    fn of(tiers: &Tiers<'_>, user: &UserId) -> tmpa_core::Result<Search> {
        let mut search = Search {
            archives: Vec::new(),
            compared: true,
        };
        for name in tiers.local.notification_archives(user)? {
            search
                .archives
                .push((name.clone(), tiers.local.notifications(user, &name)));
        }
        let Some(s) = &tiers.store else {
            return Ok(search);
        };
        if s.untried().is_some() {
            search.compared = false;
            return Ok(search);
        }
        match s.notification_archives(user) {
            Ok(names) => {
                for name in names {
                    let place = s.notifications(user, &name);
                    search.archives.push((name, place));
                }
            }
            Err(e) => {
                s.note(&e);
                search.compared = false;
            }
        }
        Ok(search)
    }
}

/// The lonely acks one archive holds with exactly their bytes: deleted on its strength.
struct AckUnit<'d> {
    user: &'d UserId,
    acks: &'d Dir,
    place: Place,
    notifications: u64,
    found: Vec<Lonely>,
}

impl<'d> Unit<'d> for AckUnit<'d> {
    type Open = ();

    fn user(&self) -> &UserId {
        self.user
    }

    fn source(&self) -> String {
        String::new()
    }

    fn charge(&self) -> u64 {
        0
    }

    fn open(&self, _tiers: &Tiers<'_>, _mode: Mode) -> Result<Opened<'d, ()>, Early> {
        Ok(Opened {
            open: (),
            bytes: None,
            existing: Some(self.place.clone()),
            new: None,
            other: Other::Conflict,
            members: self
                .found
                .iter()
                .map(|l| Member {
                    dir: self.acks,
                    name: format!("ntf_{}.ack", l.id),
                    stamp: l.stamp,
                    sha256: l.sha256.clone(),
                    after: None,
                })
                .collect(),
            mode: 0o600,
            bytes_max: NOTIFICATION_ARCHIVE_BYTES_MAX,
            holds: Holds::Notifications(self.notifications),
            facts: Facts::default(),
        })
    }

    /// Every member of the archive read and checked against its index, and the stream
    /// to its end (only an archive read so vouches for a deletion); each ack's id there
    /// with exactly its bytes.
    fn compare(&self, _open: &mut (), got: &[u8]) -> tmpa_core::Result<Seen> {
        let index = match read_archive(got, Path::new("the archive"), |_| true, |_| true) {
            Ok(index) => index,
            Err(e) => {
                return Ok(Seen::Foreign(format!(
                    "does not read back: {} (acks kept)",
                    e.chain()
                )));
            }
        };
        let holds = self.found.iter().all(|l| {
            index
                .iter()
                .any(|e| e.id == l.id.as_str() && e.ack_sha256 == l.sha256)
        });
        Ok(if holds { Seen::Same } else { Seen::Other })
    }
}

impl AckUnit<'_> {
    fn report(&self, done: pipeline::Done, report: &mut Report) {
        if !done.admitted {
            return;
        }
        if !done.action.deletes_source() {
            report.problems.push(Problem::new(
                self.acks.path().to_path_buf(),
                ProblemKind::Conflict,
                format!("acks without their notification kept: {}", done.detail),
            ));
            return;
        }
        for (file, outcome) in done.fates {
            match outcome {
                Some(Outcome::Deleted | Outcome::WouldDelete) => {
                    report.counts.notifications.acks_completed += 1;
                }
                Some(Outcome::Left | Outcome::Kept(Kept::Gone)) | None => {}
                Some(Outcome::Kept(k)) => report.problems.push(Problem::new(
                    PathBuf::from(file),
                    ProblemKind::Conflict,
                    k.words(),
                )),
                Some(Outcome::Failed(e)) => {
                    report.tally.deletions_failed += 1;
                    report.failed = true;
                    report.problems.push(Problem::new(
                        PathBuf::from(file),
                        ProblemKind::Unreadable,
                        format!(
                            "its notification is archived, but it cannot be deleted: {} (kept; the next run completes)",
                            e.chain()
                        ),
                    ));
                }
            }
        }
    }
}
