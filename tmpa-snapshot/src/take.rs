//! The snapshot pass: one descriptor walk of the tree, each regular file hard-linked or
//! copied into the destination, which is built under a private name and published by one
//! rename only when every file was taken.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::Path;

use rustix::fs::{Timespec, Timestamps};
use rustix::io::Errno;
use serde::Serialize;
use tmpa_core::maintenance::{
    CONFIG_NAME, DATA_DIRS, Dir, Kind, Meta, STATE_DIR, SUMMARY_NAME, path_text, root_dir,
    temp_final_name, write_in,
};
use tmpa_core::{Problem, ProblemKind, Root};
use tmpa_maint::{Task, read_run_record};

use crate::destination::{Destination, Method};
use crate::{PROBLEMS_LISTED_MAX, Report};

/// The parts of `.tmpa/` a snapshot keeps: what the runs did and deleted, and the
/// quarantine, where a run killed in its delete step left files that may hold the only
/// copy of their data until the next run of that task finishes or puts them back
/// (docs/OPERATIONS.md "The quarantine"); a restored tree's next run does the same.
const STATE_KEPT: [&str; 3] = ["receipts", "runs", "quarantine"];
/// Deepest directory entered below a data directory (the tree is 4 deep; `profile/` is
/// the backend's and may be deeper).
const DEPTH_MAX: usize = 32;
/// The snapshot program's run record in `.tmpa/runs/`, which a snapshot leaves out.
const OWN_RUN_RECORD: &str = "snapshot.json";
/// The snapshot's own record, in its `.tmpa/`.
pub const MANIFEST_NAME: &str = "snapshot.json";
/// The tasks that write receipts and quarantine directories.
const DELETING_TASKS: [Task; 3] = [Task::CompactEvents, Task::ArchiveHistory, Task::TmpCleanup];
/// Run directories of one task's `quarantine/in-flight/` looked at (a killed run leaves
/// one; the directory may be the tree owner's, who could fill it with names).
const IN_FLIGHT_RUNS_MAX: usize = 1024;

/// What a snapshot took and left out (the run record's `counts`, the log's last line).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    /// Regular files taken.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Directories of the data tree made (those of `.tmpa/` not counted, so that dry
    /// runs of an unchanged tree say the same).
    pub dirs: u64,
    /// Files taken as hard links.
    pub linked: u64,
    /// Files taken as copies (all with `--copy`; else `tmpa.toml`, the run records, the
    /// receipts of runs that did not finish, and where a link was refused: another mount
    /// of the file system, `protected_hardlinks`, the link limit).
    pub copied: u64,
    /// `_summary.json` caches left out.
    pub summaries_left_out: u64,
    /// Temporaries left out.
    pub temporaries_left_out: u64,
    /// Symlinks, fifos, sockets, devices, and directories deeper than 32 levels, left out
    /// (each a problem).
    pub not_regular: u64,
    /// Entries at the top of the root that are not part of the tree, left out.
    pub other_left_out: u64,
    /// Files gone between the listing and the link or copy (deleted by the backend).
    pub vanished: u64,
    /// Files or directories that could not be read or taken: any stops the pass, and
    /// nothing is published.
    pub failed: u64,
}

/// Why a pass stopped: the destination cannot be written (full, read-only, gone).
pub type Fatal = tmpa_core::Error;

/// Takes the snapshot of `root` into `dest` (a dry run counts what it would take).
/// `still_consistent` is asked last, before the snapshot is published (the caller's
/// maintenance locks still held by name).
///
/// # Errors
/// The first failure: a file or directory of the tree that cannot be read, the
/// destination that cannot be written (full, read-only, gone), `still_consistent`'s
/// refusal. Nothing is then published, and the partial build is removed (its error
/// names it when it could not be).
pub fn take(
    root: &Root,
    dest: &Destination,
    dry_run: bool,
    report: &mut Report,
    still_consistent: impl FnOnce() -> Result<(), Fatal>,
) -> Result<(), Fatal> {
    let src = root_dir(root);
    let mut t = Taker {
        method: dest.method,
        as_root: rustix::process::geteuid().is_root(),
        unfinished: unfinished_receipts(root),
        report,
    };
    let Some(top) = (if dry_run {
        None
    } else {
        Some(dest.parent.create_dir_new(&dest.partial, 0o700)?)
    }) else {
        return t.top(src, None);
    };
    let built = t
        .top(src, Some(&top))
        .and_then(|()| t.manifest(root, &top))
        .and_then(|()| finish_dir(&top, &src.meta()?, t.as_root))
        .and_then(|()| still_consistent());
    if let Err(e) = built {
        drop(top);
        let partial = dest.parent.join(&dest.partial);
        let fate =
            match remove_tree(&dest.parent, &dest.partial, 0).and_then(|()| dest.parent.sync()) {
                Ok(()) => format!(
                    "nothing published; the incomplete snapshot {} was removed",
                    path_text(&partial)
                ),
                Err(r) => format!(
                    "nothing published; the incomplete snapshot {} could not be removed ({}): \
                 remove it (rm -r)",
                    path_text(&partial),
                    r.chain()
                ),
            };
        return Err(tmpa_core::Error::io(
            "snapshot",
            partial,
            io::Error::other(format!("{}; {fate}", e.chain())),
        ));
    }
    dest.parent.publish_dir(&dest.partial, &dest.name)?;
    dest.parent.sync()
}

/// The receipts a snapshot copies rather than links, as `(task, file name)`: those of
/// runs that did not finish (their record says so, or their files wait in the in-flight
/// quarantine), the only receipts that anyone could still be writing or that a restored
/// tree's next run reads; every other receipt is closed for good and safe to link.
fn unfinished_receipts(root: &Root) -> BTreeSet<(OsString, OsString)> {
    let mut out = BTreeSet::new();
    for task in DELETING_TASKS {
        let key = |id: &OsStr| {
            let mut file = id.to_os_string();
            file.push(".jsonl");
            (OsString::from(task.as_str()), file)
        };
        if let Ok(Some(r)) = read_run_record(root, task.as_str())
            && !r.finished
            && let Some(id) = &r.run
        {
            out.insert(key(OsStr::new(id)));
        }
        let rel = Path::new(STATE_DIR)
            .join("quarantine/in-flight")
            .join(task.as_str());
        if let Ok(dir) = root_dir(root).open_dir(rel) {
            let mut n = 0;
            let _ = dir.visit_entries(|id, _, _| {
                if n < IN_FLIGHT_RUNS_MAX {
                    n += 1;
                    out.insert(key(id));
                }
            });
        }
    }
    out
}

/// Removes the directory `name` of `parent` and everything below it, never following a
/// symlink (the snapshot's own partial build).
#[allow(
    clippy::disallowed_methods,
    reason = "the snapshot's own partial build, made by this run in the destination"
)]
fn remove_tree(parent: &Dir, name: &OsStr, depth: usize) -> Result<(), Fatal> {
    let dir = parent.open_dir(name)?;
    if depth <= DEPTH_MAX + 4 {
        for entry in dir.names(|_| true)? {
            match dir.stat(&entry)? {
                Some(m) if m.kind == Kind::Directory => remove_tree(&dir, &entry, depth + 1)?,
                Some(_) => dir.unlink(&entry)?,
                None => {}
            }
        }
    }
    parent.remove_dir(name)
}

struct Taker<'r> {
    method: Method,
    as_root: bool,
    /// Receipts to copy rather than link ([`unfinished_receipts`]).
    unfinished: BTreeSet<(OsString, OsString)>,
    report: &'r mut Report,
}

/// Where in the tree a directory is: `token_stats/` has summaries to leave out,
/// `.tmpa/runs/` the snapshot's own run record and files that are copied, receipts some
/// that are copied.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Area {
    TokenStats,
    Runs,
    Receipts,
    /// The quarantine.
    State,
    Other,
}

/// How one file is taken.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Take {
    /// As the method says: a hard link on the root's file system.
    AsMethod,
    /// Copied whatever the method: a file that a program may later trust (a second link
    /// would be one more name of it) or change in place.
    Copy,
}

impl Taker<'_> {
    /// The top of the root: the data directories, `tmpa.toml`,
    /// `.tmpa/{receipts,runs,quarantine}`.
    fn top(&mut self, src: &Dir, dst: Option<&Dir>) -> Result<(), Fatal> {
        for e in src.entries()? {
            let e = e?;
            let name = e.name.to_string_lossy();
            let wanted =
                DATA_DIRS.contains(&name.as_ref()) || name == CONFIG_NAME || name == STATE_DIR;
            if !wanted {
                self.report.counts.other_left_out += 1;
            }
        }
        for d in DATA_DIRS {
            let area = if d == "token_stats" {
                Area::TokenStats
            } else {
                Area::Other
            };
            self.entry(src, dst, OsStr::new(d), None, area, 0)?;
        }
        match src.stat(CONFIG_NAME)? {
            // Copied: the programs trust it, and a second name would be one more.
            Some(m) if m.kind == Kind::File => {
                self.file(src, dst, OsStr::new(CONFIG_NAME), Take::Copy)?
            }
            Some(m) => self.not_regular(&src.join(CONFIG_NAME), m.kind),
            None => {}
        }
        let state = match src.open_dir(STATE_DIR) {
            Ok(d) => d,
            Err(e) if e.io_kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e @ tmpa_core::Error::Unsafe { .. }) => {
                self.report.counts.not_regular += 1;
                self.problem(Problem::from_error(&src.join(STATE_DIR), e));
                return Ok(());
            }
            Err(e) => return Err(self.fatal(e)),
        };
        let state_dst = match dst {
            Some(d) => Some(d.create_dir_new(OsStr::new(STATE_DIR), 0o700)?),
            None => None,
        };
        for d in STATE_KEPT {
            if state.stat(d)?.is_some() {
                let area = match d {
                    "runs" => Area::Runs,
                    "receipts" => Area::Receipts,
                    _ => Area::State,
                };
                self.entry(&state, state_dst.as_ref(), OsStr::new(d), None, area, 1)?;
            }
        }
        if let Some(sd) = &state_dst {
            finish_dir(sd, &state.meta()?, self.as_root)?;
        }
        Ok(())
    }

    /// One entry of `src`: a directory is entered, a regular file taken, the rest left out.
    fn entry(
        &mut self,
        src: &Dir,
        dst: Option<&Dir>,
        name: &OsStr,
        kind: Option<Kind>,
        area: Area,
        depth: usize,
    ) -> Result<(), Fatal> {
        let kind = match kind {
            Some(k) => k,
            None => match src.stat(name) {
                Ok(Some(m)) => m.kind,
                Ok(None) => {
                    self.report.counts.vanished += 1;
                    return Ok(());
                }
                Err(e) => return Err(self.fatal(e)),
            },
        };
        match kind {
            Kind::Directory => self.dir(src, dst, name, area, depth),
            Kind::File if temp_final_name(name).is_some() => {
                self.report.counts.temporaries_left_out += 1;
                Ok(())
            }
            Kind::File if area == Area::TokenStats && name == SUMMARY_NAME => {
                self.report.counts.summaries_left_out += 1;
                Ok(())
            }
            // The live tree's record of its snapshots: the snapshot has its own
            // (`.tmpa/snapshot.json`), and a dry run must not see the last one's.
            Kind::File if area == Area::Runs && name == OWN_RUN_RECORD => Ok(()),
            // Run records are copied: small, and the restored tree's runs read them.
            Kind::File if area == Area::Runs => self.file(src, dst, name, Take::Copy),
            Kind::File if area == Area::Receipts && self.is_unfinished(src, name) => {
                self.file(src, dst, name, Take::Copy)
            }
            Kind::File => self.file(src, dst, name, Take::AsMethod),
            other => {
                self.not_regular(&src.join(name), other);
                Ok(())
            }
        }
    }

    fn dir(
        &mut self,
        src: &Dir,
        dst: Option<&Dir>,
        name: &OsStr,
        area: Area,
        depth: usize,
    ) -> Result<(), Fatal> {
        if depth >= DEPTH_MAX {
            // Left out, like a symlink: no data directory is this deep.
            self.report.counts.not_regular += 1;
            self.problem(Problem::new(
                src.join(name),
                ProblemKind::Unsafe,
                format!("deeper than {DEPTH_MAX} levels: not entered, left out of the snapshot"),
            ));
            return Ok(());
        }
        let sub = match src.open_dir(name) {
            Ok(d) => d,
            // Swapped for a symlink since it was listed: never followed.
            Err(e @ tmpa_core::Error::Unsafe { .. }) => {
                self.report.counts.not_regular += 1;
                self.problem(Problem::from_error(&src.join(name), e));
                return Ok(());
            }
            Err(e) if e.io_kind() == io::ErrorKind::NotFound => {
                self.report.counts.vanished += 1;
                return Ok(());
            }
            Err(e) => return Err(self.fatal(e)),
        };
        let sub_dst = match dst {
            Some(d) => Some(d.create_dir_new(name, 0o700)?),
            None => None,
        };
        if matches!(area, Area::TokenStats | Area::Other) {
            self.report.counts.dirs += 1;
        }
        let entries = sub.entries().map_err(|e| self.fatal(e))?;
        for e in entries {
            let e = e.map_err(|e| self.fatal(e))?;
            self.entry(&sub, sub_dst.as_ref(), &e.name, e.kind, area, depth + 1)?;
        }
        if let Some(sd) = &sub_dst {
            finish_dir(sd, &sub.meta()?, self.as_root)?;
        }
        Ok(())
    }

    /// Whether the receipt `name` of `src` (`receipts/{task}/`) is one of a run that did
    /// not finish.
    fn is_unfinished(&self, src: &Dir, name: &OsStr) -> bool {
        let task = src.path().file_name().unwrap_or_default().to_os_string();
        self.unfinished.contains(&(task, name.to_os_string()))
    }

    /// Takes the regular file `name` of `src`: a hard link (checked to be a regular file
    /// once linked), else (or when `how` says) a copy.
    fn file(&mut self, src: &Dir, dst: Option<&Dir>, name: &OsStr, how: Take) -> Result<(), Fatal> {
        let Some(dst) = dst else {
            // A dry run: what a real run would take.
            match src.stat(name) {
                Ok(Some(m)) if m.kind == Kind::File => self.taken(m.stamp.size),
                Ok(Some(m)) => self.not_regular(&src.join(name), m.kind),
                Ok(None) => self.report.counts.vanished += 1,
                Err(e) => return Err(self.fatal(e)),
            }
            return Ok(());
        };
        if !self.method.copies() && how == Take::AsMethod {
            match src.link_into(name, dst, name) {
                Ok(()) => return self.check_link(src, dst, name),
                Err(e) => match e.raw_os_error().map(Errno::from_raw_os_error) {
                    Some(Errno::NOENT) => {
                        self.report.counts.vanished += 1;
                        return Ok(());
                    }
                    // Another mount of the file system, protected_hardlinks, the link
                    // limit: this file is copied instead.
                    Some(Errno::XDEV | Errno::PERM | Errno::MLINK) => {}
                    _ => return Err(self.fatal(e)),
                },
            }
        }
        self.copy(src, dst, name)
    }

    /// What was linked must be a regular file: a name swapped for a symlink (or anything
    /// else) between the listing and the link is taken back out of the snapshot.
    fn check_link(&mut self, src: &Dir, dst: &Dir, name: &OsStr) -> Result<(), Fatal> {
        match dst.stat(name)? {
            Some(m) if m.kind == Kind::File => {
                self.report.counts.linked += 1;
                self.taken(m.stamp.size);
            }
            Some(m) => {
                #[allow(
                    clippy::disallowed_methods,
                    reason = "a link this run just made in its own partial snapshot"
                )]
                dst.unlink(name)?;
                self.not_regular(&src.join(name), m.kind);
            }
            None => self.report.counts.vanished += 1,
        }
        Ok(())
    }

    /// Copies the regular file `name` of `src` into `dst` with its mode, owner (as root)
    /// and mtime, fsynced.
    fn copy(&mut self, src: &Dir, dst: &Dir, name: &OsStr) -> Result<(), Fatal> {
        let mut from = match src.open_read(name) {
            Ok(f) => f,
            Err(e) if e.io_kind() == io::ErrorKind::NotFound => {
                self.report.counts.vanished += 1;
                return Ok(());
            }
            Err(e) if e.raw_os_error() == Some(Errno::LOOP.raw_os_error()) => {
                self.not_regular(&src.join(name), Kind::Symlink);
                return Ok(());
            }
            Err(e) => return Err(self.fatal(e)),
        };
        let meta = Meta::of_fd(&from).map_err(|e| self.fatal(src.error("stat", name, e)))?;
        if meta.kind != Kind::File {
            self.not_regular(&src.join(name), meta.kind);
            return Ok(());
        }
        let mut to = dst.create_new(name, 0o600)?;
        // Either side may have failed (EIO reading the tree; EDQUOT, EFBIG, ENOSPC
        // writing the copy): a snapshot without this file is not one.
        let bytes = io::copy(&mut from, &mut to).map_err(|e| {
            self.fatal(tmpa_core::Error::io(
                "copy",
                src.join(name),
                io::Error::new(e.kind(), format!("{e}, to {}", path_text(&dst.join(name)))),
            ))
        })?;
        let write_err = |e: io::Error| dst.error("write", name, e);
        set_meta(&to, &meta, self.as_root).map_err(write_err)?;
        to.sync_all().map_err(write_err)?;
        self.report.counts.copied += 1;
        self.taken(bytes);
        Ok(())
    }

    /// The snapshot's own record, `.tmpa/snapshot.json`: when and what was taken.
    fn manifest(&self, root: &Root, top: &Dir) -> Result<(), Fatal> {
        let state = top.create_dir_all(STATE_DIR)?;
        let doc = serde_json::json!({
            "format": 1,
            "program": crate::PROGRAM,
            "version": env!("CARGO_PKG_VERSION"),
            "root": path_text(root.path()),
            "taken_at": tmpa_maint::now_rfc3339(),
            "method": self.method,
            "counts": self.report.counts,
        });
        let mut bytes = serde_json::to_vec_pretty(&doc).expect("the manifest serializes");
        bytes.push(b'\n');
        write_in(&state, OsStr::new(MANIFEST_NAME), &bytes, true)
    }

    fn taken(&mut self, bytes: u64) {
        self.report.counts.files += 1;
        self.report.counts.bytes += bytes;
    }

    fn not_regular(&mut self, path: &Path, kind: Kind) {
        self.report.counts.not_regular += 1;
        self.problem(Problem::new(
            path,
            ProblemKind::Unsafe,
            format!("{}: not followed, left out of the snapshot", kind.words()),
        ));
    }

    /// A failure that stops the pass: counted, and handed back for `?`.
    fn fatal(&mut self, e: Fatal) -> Fatal {
        self.report.counts.failed += 1;
        e
    }

    fn problem(&mut self, p: Problem) {
        if self.report.problems.len() < PROBLEMS_LISTED_MAX {
            self.report.problems.push(p);
        }
    }
}

/// Gives a copied file or a made directory the source's mode, owner (as root) and mtime.
fn set_meta(fd: impl std::os::fd::AsFd, meta: &Meta, as_root: bool) -> io::Result<()> {
    if as_root {
        rustix::fs::fchown(
            &fd,
            Some(rustix::fs::Uid::from_raw(meta.uid)),
            Some(rustix::fs::Gid::from_raw(meta.gid)),
        )?;
    }
    rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(meta.mode))?;
    let mtime = Timespec {
        tv_sec: meta.stamp.mtime_ns.div_euclid(1_000_000_000),
        tv_nsec: meta.stamp.mtime_ns.rem_euclid(1_000_000_000) as _,
    };
    rustix::fs::futimens(
        &fd,
        &Timestamps {
            last_access: mtime,
            last_modification: mtime,
        },
    )?;
    Ok(())
}

/// Ends a directory of the snapshot: the source's mode, owner and mtime, then fsync.
fn finish_dir(dir: &Dir, meta: &Meta, as_root: bool) -> Result<(), Fatal> {
    set_meta(dir, meta, as_root).map_err(|e| dir.error("set mode, owner and mtime", "", e))?;
    dir.sync()
}
