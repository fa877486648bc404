//! Chat sessions as units of the pipeline (`pipeline.rs`): a live session becomes one
//! version of its archive (gzip of exactly its bytes, its name and mtime in the header),
//! and with `--migrate-local` a local archive becomes the object of the same version.
//!
//! Versions (docs/FORMAT.md "Archived session"; the names are tmpa-core's): a session
//! is compared with its newest archived version, locally or in the store. The same bytes
//! complete an interrupted run; other bytes, in an archive that is a version of this
//! session, make the live file the next version, one above every version found; an
//! archive that is not readable, not gzip, or of another session is a conflict: the live
//! file is kept, and the report says how to clear it without touching the live file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Seek};
use std::path::PathBuf;
use std::time::SystemTime;

use tmpa_core::maintenance::{
    Dir, Kind, LocalVersions, Meta, SESSION_BYTES_MAX, Stamp, VERSION_MAX, archive_file_name,
    line_text, path_text, temp_final_name,
};
use tmpa_core::{Error, Problem, ProblemKind, SessionId, UserId};
use tmpa_maint::{Admission, Candidate, Kept, Mode, Outcome, Run};

use crate::gz::{
    CHUNK_BYTES, bounded, gzip, hash_and_check, open_source, same_bytes, source_unchanged,
};
use crate::pipeline::{Done, Early, Facts, Member, Opened, Other, Seen, Unit};
use crate::report::{Action, Origin, Report, SessionReport};
use crate::tier::{Holds, Place, TakenBack, Tier, Tiers};

/// What a listing found besides the sessions to archive.
#[derive(Debug, Default)]
pub(crate) struct Listed {
    /// Session files seen.
    pub(crate) seen: u64,
    /// Sessions too recent.
    pub(crate) young: u64,
    /// Old sessions left live because a temporary of their name lies beside them.
    pub(crate) beside_temporary: u64,
}

/// One user's sessions, and every archived version of them that the run can see.
pub(crate) struct UserSessions<'d> {
    pub(crate) user: &'d UserId,
    pub(crate) sessions: Option<Dir>,
    pub(crate) local: Option<LocalVersions>,
    /// The versions after the first in the store (one listing).
    pub(crate) stored: BTreeMap<SessionId, Vec<u32>>,
    pub(crate) level: u32,
}

/// Applying a plan: whether the file `name` of `dir` (as listed) is one it lists
/// unchanged (the run names a changed one itself).
pub(crate) fn admitted(run: &mut Run, dir: &Dir, name: &str, meta: &Meta) -> bool {
    let file = path_text(&dir.join(name));
    let group = [Candidate {
        file: &file,
        stamp: &meta.stamp,
        sha256: None,
        held_by: None,
    }];
    run.admit(&group) == Admission::Admitted
}

/// Every version directory of the user's local archive, oldest first.
pub(crate) fn local_versions(local: &LocalVersions) -> Vec<(u32, &Dir)> {
    (1..=local.highest_dir())
        .filter_map(|n| local.dir(n).map(|d| (n, d)))
        .collect()
}

/// The names of the user's sessions old enough to archive, sorted, with their metadata.
/// Young ones are counted; symlinks, odd names and non-regular files named like sessions
/// are reported.
pub(crate) fn old_sessions(
    dir: &Dir,
    cutoff: SystemTime,
    report: &mut Report,
    counted: &mut Listed,
) -> tmpa_core::Result<Vec<(String, SessionId, Meta)>> {
    let cutoff_ns = cutoff
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    let mut old = Vec::new();
    // A session with a temporary of its name beside it is being written, or its last
    // write died: not idle, left live (tmpa_maint::finals_with_temporaries).
    let beside = tmpa_maint::finals_with_temporaries(dir)?;
    for entry in dir.entries()? {
        let name = entry?.name;
        if temp_final_name(&name).is_some() || !name.as_encoded_bytes().ends_with(b".json") {
            continue; // temporaries are tmpa-tmpclean's; other files are not sessions
        }
        counted.seen += 1;
        if beside.contains(&name) {
            counted.beside_temporary += 1;
            continue;
        }
        let shown = dir.join(&name);
        let problem = |report: &mut Report, kind, why: String| {
            report.problems.push(Problem::new(shown.clone(), kind, why));
        };
        let id = name
            .to_str()
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|s| SessionId::new(s).ok());
        let Some(id) = id else {
            problem(
                report,
                ProblemKind::Corrupt,
                "named like a session but not a valid session id (left alone)".into(),
            );
            continue;
        };
        let meta = match dir.stat(&name) {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            Err(e) => {
                problem(
                    report,
                    ProblemKind::Unreadable,
                    format!("cannot stat: {}", e.chain()),
                );
                continue;
            }
        };
        if meta.kind == Kind::Symlink {
            problem(
                report,
                ProblemKind::Unsafe,
                "is a symlink (not followed)".into(),
            );
        } else if meta.kind != Kind::File {
            problem(
                report,
                ProblemKind::Unsafe,
                "is not a regular file (left alone)".into(),
            );
        } else if meta.stamp.mtime_ns > cutoff_ns {
            counted.young += 1;
        } else if meta.stamp.size > SESSION_BYTES_MAX {
            // The library refuses to read a session this large, live or archived:
            // archiving it would not make it any more usable. It needs a look.
            problem(
                report,
                ProblemKind::Corrupt,
                format!("larger than the session limit of {SESSION_BYTES_MAX} bytes (left live)"),
            );
        } else {
            old.push((format!("{id}.json"), id, meta));
        }
    }
    old.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(old)
}

/// The archives of one version directory (`{session}.json.gz` regular files), sorted;
/// other entries are left alone, symlinks reported.
pub(crate) fn local_archives(
    dir: &Dir,
    report: &mut Report,
) -> tmpa_core::Result<Vec<(String, SessionId, Meta)>> {
    let mut out = Vec::new();
    for entry in dir.entries()? {
        let name = entry?.name;
        let Some(id) = tmpa_core::maintenance::session_of_archive_name(&name) else {
            continue; // temporaries, version directories and files that are not archives
        };
        match dir.stat(&name)? {
            Some(m) if m.kind == Kind::File => out.push((archive_file_name(&id), id, m)),
            Some(m) if m.kind == Kind::Symlink => report.problems.push(Problem::new(
                dir.join(&name),
                ProblemKind::Unsafe,
                "is a symlink (not followed, not moved)",
            )),
            _ => {}
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

impl UserSessions<'_> {
    /// Where version `n` of `id` is: in the store when `in_store`, else locally.
    pub(crate) fn place(&self, tiers: &Tiers<'_>, id: &SessionId, n: u32, in_store: bool) -> Place {
        match (&tiers.store, in_store) {
            (Some(s), true) => s.session(self.user, id, n),
            _ => tiers.local.session(self.user, id, n),
        }
    }

    /// The newest archived version of `id` (where it is), and the number a new version
    /// gets: one above every version found, locally and in the store.
    ///
    /// # Errors
    /// The store's HEAD of version 1 (asked only when the listing found no later one).
    fn versions(
        &self,
        tiers: &Tiers<'_>,
        id: &SessionId,
    ) -> tmpa_core::Result<(Option<Place>, u32)> {
        let local = match &self.local {
            Some(l) => l.of(id)?.last().map(|(n, _)| *n),
            None => None,
        };
        let stored = match &tiers.store {
            None => None,
            Some(s) => match self.stored.get(id).and_then(|v| v.last()) {
                Some(n) => Some(*n),
                None => {
                    let key = s.run.store.version_key(self.user, id, 1);
                    s.run.store.head(&key)?.map(|_| 1)
                }
            },
        };
        let newest = match (local, stored) {
            (Some(l), Some(s)) if s > l => Some((s, true)),
            (Some(l), _) => Some((l, false)),
            (None, Some(s)) => Some((s, true)),
            (None, None) => None,
        };
        let next = newest.map_or(1, |(n, _)| n + 1);
        Ok((newest.map(|(n, st)| self.place(tiers, id, n, st)), next))
    }
}

/// A live session: one file, one version of its archive.
pub(crate) struct SessionUnit<'d> {
    pub(crate) ctx: &'d UserSessions<'d>,
    pub(crate) dir: &'d Dir,
    pub(crate) id: SessionId,
    pub(crate) name: String,
    pub(crate) size: u64,
}

/// A session (or local archive) opened: its file (compared again with what an archive
/// holds).
pub(crate) struct SessionOpen {
    pub(crate) file: File,
    pub(crate) stamp: Stamp,
}

impl<'d> Unit<'d> for SessionUnit<'d> {
    type Open = SessionOpen;

    fn user(&self) -> &UserId {
        self.ctx.user
    }

    fn source(&self) -> String {
        path_text(&self.dir.join(&self.name))
    }

    fn charge(&self) -> u64 {
        // The compressed bytes and the copy read back: at most the session twice.
        self.size.saturating_mul(2)
    }

    fn open(&self, tiers: &Tiers<'_>, mode: Mode) -> Result<Opened<'d, SessionOpen>, Early> {
        let (mut file, stamp) =
            open_source(self.dir, &self.name).map_err(|e| Early::new(Action::Failed, e.chain()))?;
        let shown = self.dir.join(&self.name);
        let fail = |e: Error| Early::new(Action::Failed, e.chain());
        let (sha, valid, bytes) = if mode.writes() {
            let (sha, valid, gz) = gzip(&mut file, &shown, stamp, self.ctx.level).map_err(fail)?;
            // Rewritten while we read it: nothing is stored, retried next run.
            if Meta::of_fd(&file).map(|m| m.stamp).ok() != Some(stamp) {
                return Err(Early::new(
                    Action::Changed,
                    "changed while being archived (kept; retried next run)",
                ));
            }
            (sha, valid, Some(gz))
        } else {
            let (sha, valid) = hash_and_check(&mut file, &shown).map_err(fail)?;
            (sha, valid, None)
        };
        let facts = Facts {
            sha256: Some(sha.clone()),
            valid_json: Some(valid),
        };
        // A store that failed gets no more requests in this run.
        if let Some(why) = tiers.store.as_ref().and_then(|s| s.run.untried()) {
            return Err(Early {
                action: Action::Failed,
                detail: why,
                facts,
            });
        }
        let (existing, next) = match self.ctx.versions(tiers, &self.id) {
            Ok(v) => v,
            Err(e) => {
                if let Some(s) = &tiers.store {
                    s.run.note(&e);
                }
                return Err(Early {
                    action: Action::Failed,
                    detail: format!("left in place: {}", e.chain()),
                    facts,
                });
            }
        };
        if next > VERSION_MAX {
            return Err(Early {
                action: Action::Conflict,
                detail: format!(
                    "archived {VERSION_MAX} times already: kept live (it needs a look)"
                ),
                facts,
            });
        }
        let mode_bits = Meta::of_fd(&file).map_or(0o600, |m| m.mode);
        Ok(Opened {
            open: SessionOpen { file, stamp },
            bytes,
            existing,
            new: Some(self.ctx.place(tiers, &self.id, next, tiers.store.is_some())),
            other: Other::NewVersion,
            members: vec![Member {
                dir: self.dir,
                name: self.name.clone(),
                stamp,
                sha256: sha,
                after: None,
            }],
            mode: mode_bits,
            bytes_max: SESSION_BYTES_MAX,
            holds: Holds::Session,
            facts,
        })
    }

    fn compare(&self, open: &mut SessionOpen, got: &[u8]) -> tmpa_core::Result<Seen> {
        let shown = self.dir.join(&self.name);
        open.file
            .rewind()
            .map_err(|e| Error::io("seek", &shown, e))?;
        let mut gz = flate2::read::MultiGzDecoder::new(got);
        let same = same_bytes(
            bounded(&mut gz),
            BufReader::with_capacity(CHUNK_BYTES, &mut open.file),
        )
        .map_err(|e| Error::io("read", &shown, e))?;
        let remedy = "the live session is kept: it is the newest copy. Check that archive and \
                      move it out of the archive (keep it elsewhere if unsure); the next run then \
                      archives the session as a new version";
        Ok(match same {
            Ok(true) => Seen::Same,
            Err(why) => Seen::Foreign(format!("is not a readable archive ({why}): {remedy}")),
            Ok(false) => {
                let ours = format!("{}.json", self.id);
                match gz.header().and_then(|h| h.filename()) {
                    Some(n) if n != ours.as_bytes() => Seen::Foreign(format!(
                        "is an archive of {}, not of this session: {remedy}",
                        line_text(&String::from_utf8_lossy(n))
                    )),
                    _ => Seen::Other,
                }
            }
        })
    }

    fn unchanged(&self, open: &SessionOpen) -> bool {
        source_unchanged(&open.file, self.dir, &self.name, &open.stamp)
    }
}

impl SessionUnit<'_> {
    pub(crate) fn report(&self, done: Done, from: Origin, report: &mut Report) {
        let path = self.dir.join(&self.name);
        report_unit(report, self.ctx.user, &self.id, path, self.size, done, from);
    }
}

/// The report line of one session (or local archive moved), from what the pipeline did.
pub(crate) fn report_unit(
    report: &mut Report,
    user: &UserId,
    id: &SessionId,
    path: PathBuf,
    size: u64,
    done: Done,
    from: Origin,
) {
    if !done.admitted {
        return; // the run names what is not as planned
    }
    let mut r = SessionReport {
        user: user.to_string(),
        session: id.to_string(),
        path,
        action: done.action,
        deleted: false,
        bytes: size,
        archive_bytes: None,
        sha256: done.facts.sha256,
        valid_json: done.facts.valid_json,
        detail: done.detail,
        from,
        object: None,
        version: None,
    };
    if let Some(h) = &done.held {
        r.version = h.place.version();
        r.archive_bytes = (!h.sha256.is_empty()).then_some(h.info.size);
        if r.action == Action::Archive {
            r.detail = crate::pipeline::join(&format!("-> {}", h.shown), &r.detail);
        }
        r.object = h.object();
    }
    if let Some((_, outcome)) = done.fates.into_iter().next() {
        match outcome {
            Some(Outcome::Deleted) => r.deleted = true,
            // A dry run's plan has it; --no-delete leaves it: the action says what a real
            // run does.
            Some(Outcome::WouldDelete | Outcome::Left | Outcome::Kept(Kept::Gone)) | None => {}
            Some(Outcome::Kept(k)) => {
                if k.needs_look() {
                    report.problems.push(Problem::new(
                        r.path.clone(),
                        ProblemKind::Conflict,
                        k.words(),
                    ));
                }
                r.action = Action::Changed;
                r.detail = "changed after it was verified (kept; retried next run)".into();
            }
            Some(Outcome::Failed(e)) => {
                report.tally.deletions_failed += 1;
                r.action = Action::Failed;
                r.detail = format!(
                    "archived and verified, but cannot delete: {} (kept; the next run completes)",
                    e.chain()
                );
            }
        }
    }
    match done.taken_back {
        Some(TakenBack::Removed) => report.tally.taken_back += 1,
        Some(TakenBack::Left(why)) => {
            let at = done
                .held
                .as_ref()
                .map_or(String::new(), |h| h.shown.clone());
            r.detail = format!("{}; its archive {at} stays: {why}", r.detail);
        }
        None => {}
    }
    report.sessions.push(r);
}
