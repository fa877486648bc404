//! The one archive pipeline, over any source and either tier. A unit is what becomes one
//! archive: a session (one file, one version), a local archive moved to the store
//! (`--migrate-local`), a batch of notifications (N inbox files and N acks), or the
//! acks an archive already holds (a run stopped between its two deletions). Each goes
//! through the same steps:
//!
//! 1. **open**: the unit reads its files (each from its descriptor, with its stamp),
//!    builds the archive's bytes in memory (within the run's [`InFlight`] budget), and
//!    says where an archive of it may already be and where a new one goes;
//! 2. **look**: an archive already there is read back and compared: the same data
//!    completes an interrupted run; other data is a newer version's cue (sessions) or a
//!    conflict; one that is not readable, or not of this source, is a conflict;
//! 3. **admit**: the run's one plan admission ([`Run::admit`]), with the files' SHA-256
//!    and where their data would be held, *before* anything is written, so that no
//!    archive is made that no deletion will rely on;
//! 4. **write or put**: never replacing anything ([`Tier::create`]); then **read back
//!    and compare**: the archive read from where it is kept, its identity (inode, ETag)
//!    and SHA-256 checked against what was written, and its content compared with the
//!    sources ([`Unit::compare`]);
//! 5. **dispose**: the verified files handed to [`Run::dispose`] (receipt line fsynced
//!    first; each deleted only if still the file that was read), in two stages when a
//!    file may go only after another (an ack after its notification);
//! 6. **take back**: an archive this run made for sources that all changed before their
//!    deletion (they stay, newer) is removed again through the tier's own
//!    identity-checked removal ([`Tier::take_back`]).
//!
//! A dry run does 1 to 3 (reading, never writing), and its plan notes what step 5 would
//! delete. Steps 1 to 4 run for several units at once (the tier says how many); 5 and 6
//! run for all of them together, so that one receipt write covers a batch.

use std::sync::Mutex;

use tmpa_core::maintenance::{Dir, Stamp, path_text, sha256_hex};
use tmpa_core::{Error, UserId};
use tmpa_maint::{Admission, Candidate, Deletion, Doomed, Kept, Mode, Outcome, Run};

use crate::report::Action;
use crate::store::InFlight;
use crate::tier::{Created, Held, Holds, Place, TakenBack, Tier, Tiers};

/// What an archive found (or read back) holds, compared with the unit's sources.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Exactly the sources' data.
    Same,
    /// Other data of the same kind: an earlier version of the session, another batch.
    Other,
    /// Nothing this unit can take for one of its archives (not readable, not gzip, an
    /// archive of another session), and why.
    Foreign(String),
}

/// What an existing archive holding other data means for a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Other {
    /// The sources are a newer version: a new archive goes to the unit's `new` place.
    NewVersion,
    /// A conflict: everything is kept.
    Conflict,
}

/// A file of a unit, deleted once its archive is verified.
#[derive(Debug)]
pub(crate) struct Member<'d> {
    /// Its directory, held by descriptor.
    pub(crate) dir: &'d Dir,
    /// Its name there.
    pub(crate) name: String,
    /// Its identity and times when it was read.
    pub(crate) stamp: Stamp,
    /// SHA-256 of what was read.
    pub(crate) sha256: String,
    /// Deleted only after this member (its index in the unit) was: an ack after its
    /// notification, so that a run stopped between the two leaves an ack whose
    /// notification is archived, never a notification that looks unread.
    pub(crate) after: Option<usize>,
}

impl Member<'_> {
    /// The file, as receipts and plans name it.
    pub(crate) fn file(&self) -> String {
        path_text(&self.dir.join(&self.name))
    }
}

/// What a unit reported of its sources when it read them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Facts {
    /// SHA-256 of the source (a session, a local archive), when read whole.
    pub(crate) sha256: Option<String>,
    /// Whether the source is valid JSON (sessions).
    pub(crate) valid_json: Option<bool>,
}

/// A unit opened: its sources read and its archive built.
pub(crate) struct Opened<'d, O> {
    /// What the unit needs to compare an archive with its sources.
    pub(crate) open: O,
    /// The archive's bytes (`None` in a dry run, which writes nothing, and for a unit
    /// that never writes one).
    pub(crate) bytes: Option<Vec<u8>>,
    /// Where an archive that may already hold the same data is, to compare first.
    pub(crate) existing: Option<Place>,
    /// Where a new archive goes; `None` for a unit that never writes one.
    pub(crate) new: Option<Place>,
    /// What `existing` holding other data means.
    pub(crate) other: Other,
    /// The files deleted once the archive is verified, in deletion order.
    pub(crate) members: Vec<Member<'d>>,
    /// Permission bits of a new local archive (the source's: it is as private).
    pub(crate) mode: u32,
    /// Largest archive read back.
    pub(crate) bytes_max: u64,
    /// What the archive holds.
    pub(crate) holds: Holds,
    /// What the unit found of its sources.
    pub(crate) facts: Facts,
}

/// A unit that stopped before its archive was made or found: what happened, in words.
#[derive(Debug)]
pub(crate) struct Early {
    pub(crate) action: Action,
    pub(crate) detail: String,
    pub(crate) facts: Facts,
}

impl Early {
    pub(crate) fn new(action: Action, detail: impl Into<String>) -> Early {
        Early {
            action,
            detail: detail.into(),
            facts: Facts::default(),
        }
    }
}

/// A source of archives: what becomes one archive, and how it is compared with one.
pub(crate) trait Unit<'d>: Sync {
    /// What [`Unit::compare`] needs between the steps (an open file, the batch read).
    type Open: Send;
    /// The user whose data it is.
    fn user(&self) -> &UserId;
    /// The file a take-back's receipt names as newer (its first source).
    fn source(&self) -> String;
    /// Bytes of memory it holds while in flight (its archive and the copy read back).
    fn charge(&self) -> u64;
    /// Step 1: reads the sources and builds the archive (not in a dry run).
    fn open(&self, tiers: &Tiers<'_>, mode: Mode) -> Result<Opened<'d, Self::Open>, Early>;
    /// Compares an archive's bytes with the sources. The error is the sources' I/O error.
    fn compare(&self, open: &mut Self::Open, got: &[u8]) -> tmpa_core::Result<Seen>;
    /// Whether the sources are still the files that were read (before the receipt).
    fn unchanged(&self, _open: &Self::Open) -> bool {
        true
    }
}

/// What became of one unit.
#[derive(Debug)]
pub(crate) struct Done {
    pub(crate) action: Action,
    /// In words, for the report; empty when there is nothing to add.
    pub(crate) detail: String,
    /// The archive that holds (or, in a dry run, would hold) the data.
    pub(crate) held: Option<Held>,
    /// What the unit found of its sources.
    pub(crate) facts: Facts,
    /// Each member (in the unit's order) and what became of it; `None` when it was not
    /// offered for deletion (its unit not verified, or the member it goes after kept).
    pub(crate) fates: Vec<(String, Option<Outcome>)>,
    /// Whether the plan being applied admitted the unit (else it is not reported: the
    /// run reports the file that is not as planned).
    pub(crate) admitted: bool,
    /// The archive this run made was taken back (or why it could not be).
    pub(crate) taken_back: Option<TakenBack>,
}

/// A unit after steps 1 to 4.
struct Step<'d> {
    done: Done,
    members: Vec<Member<'d>>,
    /// The sources changed after the archive was written: take it back.
    take_back: bool,
}

impl Step<'_> {
    fn early(e: Early) -> Step<'static> {
        Step {
            done: Done {
                action: e.action,
                detail: e.detail,
                held: None,
                facts: e.facts,
                fates: Vec::new(),
                admitted: true,
                taken_back: None,
            },
            members: Vec::new(),
            take_back: false,
        }
    }
}

/// Runs `units` through the pipeline: steps 1 to 4 on the write tier's threads, then
/// 5 and 6 for all of them. Returns what became of each, in order.
///
/// # Errors
/// The receipt cannot be written (nothing of these units was deleted), or the
/// directories' fsync after the deletions failed.
pub(crate) fn archive<'d, U: Unit<'d>>(
    run: &mut Run,
    tiers: &Tiers<'_>,
    units: &[U],
) -> tmpa_core::Result<Vec<Done>> {
    let mode = run.mode();
    let steps = {
        // Admission (step 3) is the run's: one at a time.
        let shared = Mutex::new(&mut *run);
        tiers.map(units, |u| {
            prepare(&shared, tiers, &tiers.in_flight, mode, u)
        })
    };
    finish(run, tiers, units, steps)
}

/// Steps 1 to 4 for one unit.
fn prepare<'d, U: Unit<'d>>(
    run: &Mutex<&mut Run>,
    tiers: &Tiers<'_>,
    in_flight: &InFlight,
    mode: Mode,
    u: &U,
) -> Step<'d> {
    let _share = in_flight.take(u.charge());
    let mut o = match u.open(tiers, mode) {
        Ok(o) => o,
        Err(e) => return Step::early(e),
    };
    let mut done = Done {
        action: Action::Archive,
        detail: String::new(),
        held: None,
        facts: std::mem::take(&mut o.facts),
        fates: Vec::new(),
        admitted: true,
        taken_back: None,
    };
    let failed = |mut done: Done, tier: &dyn Tier, e: &Error| {
        tier.note(e);
        done.action = Action::Failed;
        done.detail = format!("left in place: {}", e.chain());
        Step {
            done,
            members: Vec::new(),
            take_back: false,
        }
    };
    let untried = |mut done: Done, why: String| {
        done.action = Action::Failed;
        done.detail = why;
        Step {
            done,
            members: Vec::new(),
            take_back: false,
        }
    };
    // Step 2: an archive already there.
    let mut target = o.new.clone();
    if let Some(place) = o.existing.clone() {
        let tier = tiers.of(&place);
        if let Some(why) = tier.untried() {
            return untried(done, why);
        }
        let looked = look(tier, &place, o.bytes_max, o.holds, |got| {
            u.compare(&mut o.open, got)
        });
        match looked {
            Err(e) => return failed(done, tier, &e),
            Ok(None) => {}
            Ok(Some((Seen::Same, held))) => {
                done.action = Action::Complete;
                done.detail = format!(
                    "{} already holds these bytes (an earlier run was interrupted)",
                    held.shown
                );
                done.held = Some(held);
                target = None;
            }
            Ok(Some((Seen::Other, held))) if o.other == Other::NewVersion => {
                done.detail = format!("a newer version than {}", held.shown);
            }
            Ok(Some((Seen::Other, held))) => {
                done.action = Action::Conflict;
                done.detail = format!(
                    "{} holds other data (all kept; compare them: the next run compares again)",
                    held.shown
                );
            }
            Ok(Some((Seen::Foreign(why), held))) => {
                done.action = Action::Conflict;
                done.detail = format!("{} {why}", held.shown);
            }
        }
    }
    if done.action == Action::Conflict {
        return Step {
            done,
            members: Vec::new(),
            take_back: false,
        };
    }
    // Step 3: the plan admits the unit as it is now, held where it would be.
    let held_by = match (&done.held, &target) {
        (Some(h), _) => h.shown.clone(),
        (None, Some(place)) => tiers.of(place).shown(place),
        (None, None) => {
            done.action = Action::Conflict;
            done.detail = "no archive holds its data (kept)".into();
            return Step {
                done,
                members: Vec::new(),
                take_back: false,
            };
        }
    };
    let files: Vec<String> = o.members.iter().map(Member::file).collect();
    let group: Vec<Candidate<'_>> = o
        .members
        .iter()
        .zip(&files)
        .map(|(m, file)| Candidate {
            file,
            stamp: &m.stamp,
            sha256: Some(&m.sha256),
            held_by: Some(&held_by),
        })
        .collect();
    let admission = run
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .admit(&group);
    if admission != Admission::Admitted {
        done.admitted = false;
        return Step {
            done,
            members: Vec::new(),
            take_back: false,
        };
    }
    // Step 4: write or put, read back and compare (a dry run notes where it would go).
    if let Some(place) = target {
        let tier = tiers.of(&place);
        if !mode.writes() {
            done.held = Some(Held {
                shown: held_by,
                place,
                info: crate::tier::Info::default(),
                sha256: String::new(),
                holds: o.holds,
                written: None,
            });
        } else {
            if let Some(why) = tier.untried() {
                return untried(done, why);
            }
            let bytes = o.bytes.take().unwrap_or_default();
            let how = (o.mode, o.bytes_max, o.holds);
            let made = create_verified(tier, &place, bytes, how, |got| u.compare(&mut o.open, got));
            match made {
                Err(e) => return failed(done, tier, &e),
                Ok((action, held, detail)) => {
                    done.action = action;
                    done.held = held;
                    done.detail = join(&detail, &done.detail);
                }
            }
        }
    } else if let (Action::Complete, Some(held)) = (done.action, &done.held)
        && mode.deletes()
    {
        // The sources go on the strength of an archive an earlier run wrote and may not
        // have synced (it stopped in between).
        let tier = tiers.of(&held.place);
        if let Err(e) = tier.make_durable(&held.place) {
            return failed(done, tier, &e);
        }
    }
    // Rewritten while being archived: kept, and an archive made of the old bytes is
    // taken back (the live file is newer, so nothing is lost).
    let mut take_back = false;
    if done.action.deletes_source() && !u.unchanged(&o.open) {
        take_back = done.held.as_ref().is_some_and(|h| h.written.is_some());
        done.action = Action::Changed;
        done.detail = "changed while being archived (kept; retried next run)".into();
    }
    Step {
        done,
        members: o.members,
        take_back,
    }
}

/// Reads what is at `place` and compares it; `None` when nothing is there. An archive
/// the tier refuses to read (not a regular file, a symlink, too large) is one this unit
/// cannot take for its own.
fn look(
    tier: &dyn Tier,
    place: &Place,
    bytes_max: u64,
    holds: Holds,
    compare: impl FnOnce(&[u8]) -> tmpa_core::Result<Seen>,
) -> tmpa_core::Result<Option<(Seen, Held)>> {
    let shown = tier.shown(place);
    let held = |info, sha256| Held {
        place: place.clone(),
        shown: shown.clone(),
        info,
        sha256,
        holds,
        written: None,
    };
    let (got, info) = match tier.read(place, bytes_max) {
        Ok(Some(read)) => read,
        Ok(None) => return Ok(None),
        Err(e @ (Error::Corrupt { .. } | Error::Unsafe { .. })) => {
            let why = format!("cannot be read back: {} (all kept)", e.chain());
            return Ok(Some((
                Seen::Foreign(why),
                held(Default::default(), String::new()),
            )));
        }
        Err(
            e @ Error::Store {
                kind: tmpa_core::StoreErrorKind::TooLarge,
                ..
            },
        ) => {
            let why = format!("cannot be read back: {} (all kept)", e.chain());
            return Ok(Some((
                Seen::Foreign(why),
                held(Default::default(), String::new()),
            )));
        }
        Err(e) => return Err(e),
    };
    let sha = sha256_hex(&got);
    let seen = compare(&got)?;
    Ok(Some((seen, held(info, sha))))
}

/// Creates the archive at `place` (never replacing one), reads it back from the tier,
/// checks it is what was written (identity, size, SHA-256) and compares it with the
/// sources. Returns what was done, what holds the data, and details.
fn create_verified(
    tier: &dyn Tier,
    place: &Place,
    bytes: Vec<u8>,
    (mode, bytes_max, holds): (u32, u64, Holds),
    mut compare: impl FnMut(&[u8]) -> tmpa_core::Result<Seen>,
) -> tmpa_core::Result<(Action, Option<Held>, String)> {
    let shown = tier.shown(place);
    let sent_sha = sha256_hex(&bytes);
    let sent_len = bytes.len() as u64;
    let written = match tier.create(place, bytes, mode)? {
        Created::New(info) => info,
        Created::Exists => {
            // Another writer, between the look and the create.
            return Ok(match look(tier, place, bytes_max, holds, compare)? {
                Some((Seen::Same, held)) => (
                    Action::Complete,
                    Some(held),
                    format!(
                        "{shown} already holds these bytes (it appeared while this run was writing it)"
                    ),
                ),
                Some(_) => (
                    Action::Conflict,
                    None,
                    format!(
                        "{shown} appeared while this run was writing it (all kept; the next run compares)"
                    ),
                ),
                None => (
                    Action::Changed,
                    None,
                    format!(
                        "{shown} appeared and vanished while this run was writing it (kept; retried next run)"
                    ),
                ),
            });
        }
    };
    let failed = |why: String, held: Option<Held>| {
        Ok((
            Action::VerificationFailed,
            held,
            format!("verification failed: {shown} {why} (all kept)"),
        ))
    };
    // Read back from where it is kept, not from anything this process kept.
    let Some((got, info)) = tier.read(place, bytes_max)? else {
        return failed("is missing right after it was stored".into(), None);
    };
    let held = Held {
        place: place.clone(),
        shown: shown.clone(),
        sha256: sha256_hex(&got),
        info,
        holds,
        written: Some(written),
    };
    if let Err(why) = held.written.as_ref().expect("set").same_archive(&held.info) {
        return failed(why, Some(held));
    }
    if held.info.size != sent_len || held.sha256 != sent_sha {
        let why = format!(
            "reads back as other bytes than were stored ({} bytes, {sent_len} sent)",
            got.len()
        );
        return failed(why, Some(held));
    }
    match compare(&got)? {
        Seen::Same => Ok((Action::Archive, Some(held), String::new())),
        Seen::Other => failed("does not hold the sources' bytes".into(), Some(held)),
        Seen::Foreign(why) => failed(format!("cannot be read back: {why}"), Some(held)),
    }
}

/// `a` and `b`, either of which may be empty, in one phrase.
pub(crate) fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (_, true) => a.to_owned(),
        (true, false) => b.to_owned(),
        (false, false) => format!("{a} ({b})"),
    }
}

/// Whether a member kept at its last check leaves its unit's archive unneeded: it is
/// still there (changed, or not as planned), newer than the archive.
fn kept_live(outcome: Option<&Outcome>) -> bool {
    matches!(
        outcome,
        Some(Outcome::Kept(
            Kept::Changed | Kept::NotAsPlanned(_) | Kept::Refused(_) | Kept::LeaseBroken
        ))
    )
}

/// Whether a member's deletion lets the members that go after it go too.
fn gone(outcome: Option<&Outcome>) -> bool {
    matches!(
        outcome,
        Some(Outcome::Deleted | Outcome::WouldDelete | Outcome::Left | Outcome::Kept(Kept::Gone))
    )
}

/// Steps 5 and 6 for every unit: the verified members disposed of (first those that go
/// first, then those that go after them), then the archives no deletion relies on taken
/// back.
fn finish<'d, U: Unit<'d>>(
    run: &mut Run,
    tiers: &Tiers<'_>,
    units: &[U],
    mut steps: Vec<Step<'d>>,
) -> tmpa_core::Result<Vec<Done>> {
    for s in &mut steps {
        s.done.fates = s.members.iter().map(|m| (m.file(), None)).collect();
    }
    let mut synced = Ok(());
    for first in [true, false] {
        let mut at = Vec::new();
        let mut doomed = Vec::new();
        for ((i, s), u) in steps.iter().enumerate().zip(units) {
            let Some(held) = s
                .done
                .held
                .as_ref()
                .filter(|_| s.done.action.deletes_source())
            else {
                continue;
            };
            let tier = tiers.of(&held.place);
            for (j, m) in s.members.iter().enumerate() {
                let offer = match m.after {
                    None => first,
                    Some(k) => !first && gone(s.done.fates[k].1.as_ref()),
                };
                if !offer {
                    continue;
                }
                at.push((i, j));
                doomed.push(Doomed {
                    dir: m.dir,
                    name: m.name.clone().into(),
                    stamp: m.stamp,
                    line: Deletion {
                        file: s.done.fates[j].0.clone(),
                        bytes: m.stamp.size,
                        sha256: m.sha256.clone(),
                        stamp: m.stamp,
                        held_by: held.shown.clone(),
                        proof: tier.proof(u.user(), held),
                    },
                    lease: None,
                });
            }
        }
        if doomed.is_empty() {
            continue;
        }
        // Per mode: noted in a dry run's plan, left by --no-delete, or deleted (the
        // receipt durable before the first deletion it covers).
        let (outcomes, stage_synced) = run.dispose(doomed, |_| None)?.split();
        for ((i, j), outcome) in at.into_iter().zip(outcomes) {
            steps[i].done.fates[j].1 = Some(outcome);
        }
        synced = synced.and(stage_synced);
    }
    for (s, u) in steps.iter_mut().zip(units) {
        let kept = !s.members.is_empty()
            && s.members
                .iter()
                .zip(&s.done.fates)
                .filter(|(m, _)| m.after.is_none())
                .all(|(_, (_, o))| kept_live(o.as_ref()));
        let wrote = s.done.held.as_ref().is_some_and(|h| h.written.is_some());
        if (s.take_back || (kept && s.done.action.deletes_source())) && wrote {
            let held = s.done.held.as_ref().expect("wrote");
            let tier = tiers.of(&held.place);
            s.done.taken_back = Some(tier.take_back(run, u.user(), held, &u.source()));
        }
    }
    synced?;
    Ok(steps.into_iter().map(|s| s.done).collect())
}
