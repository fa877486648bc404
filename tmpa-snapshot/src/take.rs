//! The snapshot pass: one descriptor walk of the tree, each regular file hard-linked or
//! copied into the destination, which is built under a private name and published by one
//! rename.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Timespec, Timestamps};
use rustix::io::Errno;
use serde::Serialize;
use tmpa_core::maintenance::{
    CONFIG_NAME, DATA_DIRS, Dir, Kind, Meta, STATE_DIR, SUMMARY_NAME, path_text, root_dir,
    temp_final_name, write_in,
};
use tmpa_core::{Problem, ProblemKind, Root};
use tmpa_maint::StartError;

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

/// How the files are taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Hard links (the destination is on the root's file system).
    Link,
    /// Copies, because `--copy` asked.
    CopyAsked,
    /// Copies, because the destination is on another file system.
    CopyOtherFs,
}

impl Method {
    /// A few words for the report.
    pub fn words(self) -> &'static str {
        match self {
            Method::Link => "hard links",
            Method::CopyAsked => "copies, --copy",
            Method::CopyOtherFs => "copies: another file system",
        }
    }

    fn copies(self) -> bool {
        self != Method::Link
    }
}

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
    /// Files taken as copies (all with `--copy`; else where a link was refused: another
    /// mount of the file system, `protected_hardlinks`, the link limit).
    pub copied: u64,
    /// `_summary.json` caches left out.
    pub summaries_left_out: u64,
    /// Temporaries left out.
    pub temporaries_left_out: u64,
    /// Symlinks, fifos, sockets, devices left out (each a problem).
    pub not_regular: u64,
    /// Entries at the top of the root that are not part of the tree, left out.
    pub other_left_out: u64,
    /// Files gone between the listing and the link or copy (deleted by the backend).
    pub vanished: u64,
    /// Files that could not be read (each a problem).
    pub failed: u64,
}

/// A checked destination: its parent held by descriptor, the names of the snapshot and
/// of its partial build.
#[derive(Debug)]
pub struct Destination {
    path: PathBuf,
    parent: Dir,
    name: OsString,
    partial: OsString,
    method: Method,
}

impl Destination {
    /// Checks `to` for a snapshot of `root`: a new name in an existing directory, outside
    /// the root, with no partial build left by an interrupted run.
    ///
    /// # Errors
    /// [`StartError::Usage`] saying what is wrong; [`StartError::Core`] when the parent
    /// cannot be opened.
    pub fn check(root: &Root, to: &Path, copy: bool) -> Result<Destination, StartError> {
        let name = to
            .file_name()
            .filter(|n| !n.as_bytes().starts_with(b"."))
            .ok_or_else(|| {
                StartError::Usage(format!(
                    "--to {}: give a directory name that does not start with '.'",
                    path_text(to)
                ))
            })?
            .to_owned();
        let parent_path = match to.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let canonical = std::fs::canonicalize(&parent_path).map_err(|e| {
            StartError::Usage(format!(
                "--to {}: its parent directory cannot be used: {e}",
                path_text(to)
            ))
        })?;
        if canonical.join(&name).starts_with(root.path()) {
            return Err(StartError::Usage(format!(
                "--to {}: is inside the root {}; a snapshot goes outside the tree",
                path_text(to),
                path_text(root.path())
            )));
        }
        let parent = Dir::open_path(&canonical)?;
        if parent.stat(&name)?.is_some() {
            return Err(StartError::Usage(format!(
                "--to {}: exists; a snapshot goes to a new directory",
                path_text(to)
            )));
        }
        let mut partial = OsString::from(".");
        partial.push(&name);
        partial.push(".partial");
        if parent.stat(&partial)?.is_some() {
            return Err(StartError::Usage(format!(
                "{}: left by an interrupted snapshot; remove it (rm -r) and run again",
                path_text(&parent.join(&partial))
            )));
        }
        let same_fs = parent
            .meta()?
            .stamp
            .same_device(&root_dir(root).meta()?.stamp);
        let method = match (copy, same_fs) {
            (true, _) => Method::CopyAsked,
            (false, false) => Method::CopyOtherFs,
            (false, true) => Method::Link,
        };
        Ok(Destination {
            path: canonical.join(&name),
            parent,
            name,
            partial,
            method,
        })
    }

    /// Where the snapshot goes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Links or copies.
    pub fn method(&self) -> Method {
        self.method
    }
}

/// Why a pass stopped: the destination cannot be written (full, read-only, gone).
pub type Fatal = tmpa_core::Error;

/// Takes the snapshot of `root` into `dest` (a dry run counts what it would take).
///
/// # Errors
/// The first failure writing the destination; the partial build is then left, named.
pub fn take(
    root: &Root,
    dest: &Destination,
    dry_run: bool,
    report: &mut Report,
) -> Result<(), Fatal> {
    let src = root_dir(root);
    let mut t = Taker {
        method: dest.method,
        as_root: rustix::process::geteuid().is_root(),
        report,
    };
    let top = if dry_run {
        None
    } else {
        Some(dest.parent.create_dir_new(&dest.partial, 0o700)?)
    };
    let pass = t.top(src, top.as_ref());
    let top = match (pass, top) {
        (Err(e), Some(_)) => {
            return Err(tmpa_core::Error::io(
                "snapshot",
                dest.parent.join(&dest.partial),
                io::Error::other(format!(
                    "{}; the incomplete snapshot is left there: remove it (rm -r)",
                    e.chain()
                )),
            ));
        }
        (Err(e), None) => return Err(e),
        (Ok(()), None) => return Ok(()),
        (Ok(()), Some(top)) => top,
    };
    t.manifest(root, &top)?;
    finish_dir(&top, &src.meta()?, t.as_root)?;
    dest.parent.publish_dir(&dest.partial, &dest.name)?;
    dest.parent.sync()
}

struct Taker<'r> {
    method: Method,
    as_root: bool,
    report: &'r mut Report,
}

/// Where in the tree a directory is: `token_stats/` has summaries to leave out,
/// `.tmpa/runs/` the snapshot's own run record.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Area {
    TokenStats,
    Runs,
    /// The rest of `.tmpa/` that is kept (receipts, quarantine).
    State,
    Other,
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
        if src.stat(CONFIG_NAME)?.is_some() {
            self.entry(src, dst, OsStr::new(CONFIG_NAME), None, Area::Other, 0)?;
        }
        let state = match src.open_dir(STATE_DIR) {
            Ok(d) => d,
            Err(e) if e.io_kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                self.problem(Problem::from_error(&src.join(STATE_DIR), e));
                return Ok(());
            }
        };
        let state_dst = match dst {
            Some(d) => Some(d.create_dir_new(OsStr::new(STATE_DIR), 0o700)?),
            None => None,
        };
        for d in STATE_KEPT {
            if state.stat(d)?.is_some() {
                let area = if d == "runs" { Area::Runs } else { Area::State };
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
                Err(e) => {
                    self.failed(Problem::from_error(&src.join(name), e));
                    return Ok(());
                }
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
            Kind::File => self.file(src, dst, name),
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
            self.failed(Problem::new(
                src.join(name),
                ProblemKind::Unreadable,
                format!("deeper than {DEPTH_MAX} levels: not entered"),
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
            Err(e) => {
                self.failed(Problem::from_error(&src.join(name), e));
                return Ok(());
            }
        };
        let sub_dst = match dst {
            Some(d) => Some(d.create_dir_new(name, 0o700)?),
            None => None,
        };
        if matches!(area, Area::TokenStats | Area::Other) {
            self.report.counts.dirs += 1;
        }
        let entries = match sub.entries() {
            Ok(e) => e,
            Err(e) => {
                self.failed(Problem::from_error(sub.path(), e));
                return Ok(());
            }
        };
        for e in entries {
            match e {
                Ok(e) => self.entry(&sub, sub_dst.as_ref(), &e.name, e.kind, area, depth + 1)?,
                Err(e) => {
                    self.failed(Problem::from_error(sub.path(), e));
                    break;
                }
            }
        }
        if let Some(sd) = &sub_dst {
            finish_dir(sd, &sub.meta()?, self.as_root)?;
        }
        Ok(())
    }

    /// Takes the regular file `name` of `src`: a hard link (checked to be a regular file
    /// once linked), else a copy.
    fn file(&mut self, src: &Dir, dst: Option<&Dir>, name: &OsStr) -> Result<(), Fatal> {
        let Some(dst) = dst else {
            // A dry run: what a real run would take.
            match src.stat(name) {
                Ok(Some(m)) if m.kind == Kind::File => self.taken(m.stamp.size),
                Ok(Some(m)) => self.not_regular(&src.join(name), m.kind),
                Ok(None) => self.report.counts.vanished += 1,
                Err(e) => self.failed(Problem::from_error(&src.join(name), e)),
            }
            return Ok(());
        };
        if !self.method.copies() {
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
                    _ => return Err(e),
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
            Err(e) => {
                self.failed(Problem::from_error(&src.join(name), e));
                return Ok(());
            }
        };
        let meta = Meta::of_fd(&from).map_err(|e| src.error("stat", name, e))?;
        if meta.kind != Kind::File {
            self.not_regular(&src.join(name), meta.kind);
            return Ok(());
        }
        let mut to = dst.create_new(name, 0o600)?;
        let bytes = match io::copy(&mut from, &mut to) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::StorageFull => {
                return Err(dst.error("write", name, e));
            }
            Err(e) => {
                // Which side failed is not known; a full or broken destination fails
                // again on the next file's create, so the pass goes on for now.
                drop(to);
                dst.unlink(name)?;
                self.failed(Problem::from_error(
                    &src.join(name),
                    src.error("copy", name, e),
                ));
                return Ok(());
            }
        };
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

    fn failed(&mut self, p: Problem) {
        self.report.counts.failed += 1;
        self.problem(p);
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
