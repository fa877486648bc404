//! Proving stale temporaries not open, and deleting them.
//!
//! In batches of directories: re-open each directory from the root (without following a
//! symlink; it must still be the directory that was listed), open each temporary
//! read-only and check it is the same unchanged file, then ask the kernel for a write
//! lease on it. A lease is granted only when no other open file description of the file
//! exists anywhere on the machine (any pid, mount or user namespace; mapped files
//! included), and it is held through the hash, the receipt, the last checks and the
//! `unlinkat`: whoever opens the file meanwhile waits, the lease shows broken, and the
//! file is kept. Where no lease can be had, `/proc` is evidence (see [`crate::inuse`]).
//! A dry run takes the same path and releases each lease at once.

use std::io::Read;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tmpa_core::maintenance::{Dir, Kind, Lease, LeaseRefused, Meta, path_text};
use tmpa_core::{Problem, ProblemKind};
use tmpa_maint::{Admission, Candidate, Deletion, Doomed, Kept, NotOpenProof, Outcome, Proof, Run};

use crate::inuse::{InUse, Use};
use crate::walk::{Anchor, Reason, Temporary, Walk, final_kind};

/// Most directories held open at once (one batch).
pub const BATCH_DIRS_MAX: usize = 256;
/// Most temporaries of one batch: each holds a leased descriptor until its deletion, and
/// one receipt write (one fsync) covers the batch. With [`BATCH_DIRS_MAX`] it keeps well
/// below the default limit of 1024 open files.
pub const BATCH_FILES_MAX: usize = 512;

/// How the run proves temporaries closed.
#[derive(Debug)]
pub struct Prover {
    /// `--proc-shows-all-writers`: accept `/proc` as proof where no lease can be had.
    pub trust_proc: bool,
    /// Why neither a lease nor `/proc` proves anything on the root's file system, if they
    /// do not: a network, FUSE, overlay or unknown file system without
    /// `--writers-use-this-mount`, where both see only the opens made through this mount
    /// on this host.
    pub blind_fs: Option<String>,
    /// `--older-than`, for the receipt.
    pub older_than: Duration,
    /// The `/proc` scan, made once when first needed (`Err`: it did not finish in time).
    in_use: Option<Result<InUse, String>>,
    /// The root's device, for the scan.
    dev: u64,
    /// Why `/proc` is no longer asked: a scan that did not finish in time (its thread may
    /// still be stuck on a dead mount) stops every later proof by `/proc` in the run.
    hung: std::sync::OnceLock<String>,
}

/// Longest wait for one scan of `/proc`: a `stat` through `/proc/{pid}/fd/*` of a file on
/// a dead network mount can block, and the run must not.
pub const PROC_SCAN_TIMEOUT: Duration = Duration::from_secs(10);

impl Prover {
    /// A prover for the temporaries of the root held by `anchor`, by the rules of `args`.
    pub fn new(anchor: &Anchor, args: &crate::Args) -> Prover {
        Prover {
            trust_proc: args.proc_shows_all_writers,
            blind_fs: blind_fs(&anchor.dir, args.writers_use_this_mount),
            older_than: args.older_than,
            in_use: None,
            dev: anchor.meta.stamp.dev,
            hung: std::sync::OnceLock::new(),
        }
    }

    /// One scan of `/proc` on a thread of its own, waited for at most
    /// [`PROC_SCAN_TIMEOUT`]; `Err` (and no later scan in this run) when it takes longer.
    fn timed_scan(&self) -> Result<InUse, String> {
        if let Some(why) = self.hung.get() {
            return Err(why.clone());
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let dev = self.dev;
        // Detached: a scan stuck on a dead mount is left behind, never waited for.
        std::thread::spawn(move || {
            let _ = tx.send(InUse::scan(&crate::inuse::proc_dir(), dev));
        });
        rx.recv_timeout(PROC_SCAN_TIMEOUT).map_err(|_| {
            let why = format!(
                "a scan of /proc took more than {} s (a process with a file open on a hung mount?)",
                PROC_SCAN_TIMEOUT.as_secs()
            );
            self.hung.get_or_init(|| why).clone()
        })
    }

    /// The `/proc` verdict for a temporary no lease could be had on: `Ok(())` when it is
    /// proven closed, else the reason to keep it.
    fn proc_verdict(&mut self, ino: u64, no_lease: &std::io::Error) -> Result<(), Reason> {
        if self.in_use.is_none() {
            self.in_use = Some(self.timed_scan());
        }
        let scan = self.in_use.as_ref().expect("scanned above");
        judge(scan, ino, self.trust_proc, no_lease)
    }

    /// Just before the deletion of a temporary proven closed by `/proc`: `/proc` read again
    /// (the first scan is minutes old by now in a large run). `None` when it still shows
    /// the file closed, else why it is kept.
    fn recheck(&self, ino: u64) -> Option<String> {
        let no_lease = std::io::Error::other("none was granted");
        let scan = self.timed_scan();
        judge(&scan, ino, self.trust_proc, &no_lease)
            .err()
            .map(|reason| {
                format!(
                    "/proc read again: {} just before deletion (kept)",
                    reason.detail("")
                )
            })
    }
}

/// Why a lease or `/proc` proves nothing on the file system of `root`, if they do not
/// (see [`Prover::blind_fs`]); a file system that cannot be asked counts as unknown.
fn blind_fs(root: &Dir, writers_use_this_mount: bool) -> Option<String> {
    if writers_use_this_mount {
        return None;
    }
    let fs = match root.fs_type() {
        Ok(fs) if fs.lease_sees_every_opener() => return None,
        Ok(fs) => fs.to_string(),
        Err(e) => format!("an unknown file system ({})", e.chain()),
    };
    Some(format!(
        "the root is on {fs}, where a file lease and /proc see only the opens made through \
         this mount on this host (not another host's, not a writer's underneath the mount): \
         pass --writers-use-this-mount (TMPA_WRITERS_USE_THIS_MOUNT=yes) if that is every writer"
    ))
}

/// What a `/proc` scan says of the inode `ino`, by the rule of `--proc-shows-all-writers`.
fn judge(
    scan: &Result<InUse, String>,
    ino: u64,
    trust: bool,
    no_lease: &std::io::Error,
) -> Result<(), Reason> {
    let scan = match scan {
        Ok(s) => s,
        Err(why) => {
            return Err(Reason::Unproven(format!(
                "no file lease here ({no_lease}) and {why}"
            )));
        }
    };
    match scan.verdict(ino) {
        Use::Open => Err(Reason::Open),
        Use::Locked => Err(Reason::Locked),
        _ if !trust => Err(Reason::Unproven(format!(
            "no file lease here ({no_lease}) and /proc is not accepted as proof without \
             --proc-shows-all-writers"
        ))),
        _ => match scan.absent() {
            Some(why) => Err(Reason::Unproven(format!(
                "no file lease here ({no_lease}) and no /proc to look in ({why})"
            ))),
            None => Ok(()),
        },
    }
}

/// A temporary proven not open, with what its receipt says.
struct Proven {
    temp: usize,
    proof: NotOpenProof,
    lease: Option<Lease>,
    sha256: String,
}

/// Proves (and, in a real run, deletes) every `Stale` temporary of `walk` (indexes in
/// `order`, grouped by directory), updating each reason. Returns the failures that
/// concern no single temporary (a directory fsync), and stops deleting when a receipt
/// cannot be written.
pub fn settle(
    run: &mut Run,
    anchor: &Anchor,
    walk: &mut Walk,
    order: &[usize],
    prover: &mut Prover,
) -> Vec<Problem> {
    let mut failures = Vec::new();
    let stale: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&i| walk.temps[i].reason == Reason::Stale(None))
        .collect();
    let mut rest = &stale[..];
    while !rest.is_empty() {
        let len = batch_len(walk, rest);
        let (batch, tail) = rest.split_at(len);
        rest = tail;
        if !settle_batch(run, anchor, walk, batch, prover, &mut failures) {
            for &i in rest {
                walk.temps[i].reason =
                    Reason::Failed("not attempted: an earlier receipt could not be written".into());
            }
            break;
        }
    }
    failures
}

/// How many of `rest` (grouped by directory) fit in one batch.
fn batch_len(walk: &Walk, rest: &[usize]) -> usize {
    let mut dirs = 0;
    let mut last = None;
    for (n, &i) in rest.iter().enumerate() {
        if n >= BATCH_FILES_MAX {
            return n;
        }
        let d = walk.temps[i].dir;
        if last != Some(d) {
            if dirs == BATCH_DIRS_MAX {
                return n;
            }
            dirs += 1;
            last = Some(d);
        }
    }
    rest.len()
}

/// One batch. Returns false when the receipt could not be written (nothing deleted).
fn settle_batch(
    run: &mut Run,
    anchor: &Anchor,
    walk: &mut Walk,
    batch: &[usize],
    prover: &mut Prover,
    failures: &mut Vec<Problem>,
) -> bool {
    let mut open: Vec<(u32, Dir)> = Vec::new();
    let mut proven: Vec<Proven> = Vec::new();
    for &i in batch {
        let d = walk.temps[i].dir;
        if open.last().is_none_or(|(od, _)| *od != d) {
            // A directory that cannot be re-opened is tried again for each of its
            // temporaries: each then says why it was kept.
            match reopen_dir(anchor, walk, d) {
                Ok(dir) => open.push((d, dir)),
                Err(reason) => {
                    walk.temps[i].reason = reason;
                    continue;
                }
            }
        }
        let dir = &open.last().expect("opened above").1;
        let file = path_text(&dir.join(&walk.temps[i].name));
        let group = [Candidate {
            file: &file,
            stamp: &walk.temps[i].meta.stamp,
            sha256: None,
            held_by: None,
        }];
        match run.admit(&group) {
            Admission::Admitted => {}
            Admission::NotInPlan => {
                walk.temps[i].reason = Reason::NotInPlan;
                continue;
            }
            // The run names it itself (`problem:` line).
            Admission::Refused => {
                walk.temps[i].reason = Reason::Changed("changed since the plan was made".into());
                continue;
            }
        }
        match prove(dir, &walk.temps[i], prover) {
            Ok((proof, lease, sha256)) => proven.push(Proven {
                temp: i,
                proof,
                // A run that deletes nothing keeps no lease past its proof: a writer that
                // reopens the temporary must not wait on it for the rest of the batch.
                lease: lease.filter(|_| run.mode().deletes()),
                sha256,
            }),
            Err(reason) => walk.temps[i].reason = reason,
        }
    }
    if proven.is_empty() {
        return true;
    }
    let dir_of = |t: &Temporary| {
        &open
            .iter()
            .find(|(d, _)| *d == t.dir)
            .expect("proven dirs are open")
            .1
    };
    let older_than_secs = prover.older_than.as_secs();
    let temps: Vec<usize> = proven.iter().map(|p| p.temp).collect();
    let proofs: Vec<NotOpenProof> = proven.iter().map(|p| p.proof).collect();
    let doomed: Vec<Doomed<'_>> = proven
        .into_iter()
        .map(|p| {
            let t = &walk.temps[p.temp];
            let dir = dir_of(t);
            Doomed {
                dir,
                name: t.name.clone(),
                stamp: t.meta.stamp,
                line: deletion(dir, t, p.sha256, p.proof, older_than_secs),
                lease: p.lease,
            }
        })
        .collect();
    let finals: Vec<std::ffi::OsString> = temps
        .iter()
        .map(|&i| walk.temps[i].final_name.clone())
        .collect();
    let prover = &*prover;
    let last_check = |d: &Doomed<'_>| {
        let i = doomed_index(&temps, walk, d);
        if final_kind(d.dir, &finals[i]) != Some(Kind::File) {
            return Some("its final file disappeared just before deletion (kept)".to_owned());
        }
        // Without a lease nothing stops another process from opening the file after the
        // proof: /proc is asked again now.
        match proofs[i] {
            NotOpenProof::Proc => prover.recheck(d.stamp.ino),
            _ => None,
        }
    };
    // Per mode (Run::dispose): a dry run's plan gets the receipt line a real run would
    // write and each lease is released at once; a real run deletes.
    let result = run.dispose(doomed, last_check);
    let (outcomes, sync_failures) = match result {
        Ok(r) => (r.outcomes, r.sync_failures),
        Err(e) => {
            for &i in &temps {
                walk.temps[i].reason =
                    Reason::Failed(format!("receipt not written, not deleted: {}", e.chain()));
            }
            return false;
        }
    };
    for ((&i, outcome), proof) in temps.iter().zip(outcomes).zip(proofs) {
        walk.temps[i].reason = match outcome {
            Outcome::Deleted => Reason::Deleted(proof),
            Outcome::WouldDelete | Outcome::Left => Reason::Stale(Some(proof)),
            Outcome::Kept(Kept::LeaseBroken) => Reason::Changed(Kept::LeaseBroken.words()),
            Outcome::Kept(Kept::Refused(why) | Kept::NotAsPlanned(why)) => Reason::Changed(why),
            Outcome::Kept(Kept::Gone) => Reason::Changed("gone just before deletion".into()),
            Outcome::Kept(k @ (Kept::Superseded { .. } | Kept::Stranded { .. })) => {
                Reason::Failed(k.words())
            }
            Outcome::Kept(Kept::Changed) => Reason::Changed(
                "changed just before deletion (kept; the next run looks again)".into(),
            ),
            Outcome::Failed(e) => Reason::Failed(format!("delete: {}", io_words(&e))),
        };
    }
    for e in sync_failures {
        failures.push(Problem::new(
            e.path()
                .map(std::path::Path::to_path_buf)
                .unwrap_or_default(),
            ProblemKind::Unreadable,
            format!("fsync after deletion: {}", io_words(&e)),
        ));
    }
    true
}

/// The receipt line of a temporary about to be deleted (and of a plan's entry for it).
fn deletion(
    dir: &Dir,
    t: &Temporary,
    sha256: String,
    proof: NotOpenProof,
    older_than_secs: u64,
) -> Deletion {
    Deletion {
        file: path_text(&dir.join(&t.name)),
        bytes: t.meta.stamp.size,
        sha256,
        stamp: t.meta.stamp,
        held_by: path_text(&dir.join(&t.final_name)),
        proof: Proof::StaleTemporary {
            older_than_secs,
            not_open: proof,
        },
    }
}

/// Which of `temps` a doomed entry is (the delete path hands entries back in order, but
/// the check sees only the entry).
fn doomed_index(temps: &[usize], walk: &Walk, d: &Doomed<'_>) -> usize {
    temps
        .iter()
        .position(|&i| walk.temps[i].name == d.name && walk.temps[i].meta.stamp == d.stamp)
        .expect("every doomed entry is one of the batch")
}

/// The operating system's words for an error, without the path.
fn io_words(e: &tmpa_core::Error) -> String {
    match e {
        tmpa_core::Error::Io { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// Re-opens a directory from the root, refusing symlinks on the way, and checks that it is
/// still the directory that was listed.
fn reopen_dir(anchor: &Anchor, walk: &Walk, d: u32) -> Result<Dir, Reason> {
    let wd = &walk.dirs[d as usize];
    let dir = match anchor.dir.open_dir(&wd.rel) {
        Ok(dir) => dir,
        Err(tmpa_core::Error::Unsafe { .. }) => {
            return Err(Reason::Changed(
                "its directory was moved or replaced by a symlink since it was listed (kept)"
                    .into(),
            ));
        }
        Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => {
            return Err(Reason::Changed(
                "its directory was moved or replaced by a symlink since it was listed (kept)"
                    .into(),
            ));
        }
        Err(e) => {
            return Err(Reason::Failed(format!(
                "re-open directory: {}",
                io_words(&e)
            )));
        }
    };
    match dir.meta() {
        Ok(m) if m.stamp.same_inode(&wd.meta.stamp) => Ok(dir),
        Ok(_) => Err(Reason::Changed(
            "its directory was replaced since it was listed (kept)".into(),
        )),
        Err(e) => Err(Reason::Failed(format!("stat directory: {}", io_words(&e)))),
    }
}

/// Opens the temporary read-only, checks it is the unchanged file that was found, and
/// proves it not open: a write lease (held, in a real run, until its deletion), else the
/// `/proc` evidence. Reads it whole for its SHA-256 (through the same descriptor:
/// reading breaks no lease of its own).
fn prove(
    dir: &Dir,
    t: &Temporary,
    prover: &mut Prover,
) -> Result<(NotOpenProof, Option<Lease>, String), Reason> {
    let changed =
        || Reason::Changed("changed since it was listed (kept; the next run looks again)".into());
    let file = match dir.open_read(&t.name) {
        Ok(f) => f,
        Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => return Err(changed()),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(changed());
        }
        Err(e) => return Err(Reason::Failed(format!("open: {}", io_words(&e)))),
    };
    let same = |f: &std::fs::File| {
        Meta::of_fd(f).is_ok_and(|m| m.kind == Kind::File && m.stamp == t.meta.stamp)
    };
    if !same(&file) {
        return Err(changed());
    }
    let (proof, lease, mut file_ref) = match Lease::take(file) {
        Ok(lease) => (NotOpenProof::Lease, Some(lease), None),
        Err((_, LeaseRefused::Busy)) => return Err(Reason::Open),
        Err((file, LeaseRefused::Unavailable(e))) => {
            prover.proc_verdict(t.meta.stamp.ino, &e)?;
            (NotOpenProof::Proc, None, Some(file))
        }
    };
    // Open on this host through this mount is open anywhere; the converse holds only where
    // the operator stated that every writer is such a one (the lease, if any, is released
    // here).
    if let Some(why) = &prover.blind_fs {
        return Err(Reason::Unproven(why.clone()));
    }
    // After the lease: the file it covers must still be the one that was found.
    let f: &std::fs::File = match (&lease, &file_ref) {
        (Some(l), _) => l.file(),
        (None, Some(f)) => f,
        (None, None) => unreachable!("a lease or a file"),
    };
    if !same(f) {
        return Err(changed());
    }
    let mut reader: &std::fs::File = f;
    let sha256 = hash_exact(&mut reader, t.meta.stamp.size).ok_or_else(changed)?;
    if !same(f) {
        return Err(changed());
    }
    file_ref.take();
    Ok((proof, lease, sha256))
}

/// The SHA-256 of exactly `size` bytes read to the end; `None` when the length differs.
fn hash_exact(r: &mut impl Read, size: u64) -> Option<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total: u64 = 0;
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                total += n as u64;
                if total > size {
                    return None;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    (total == size).then(|| format!("{:x}", hasher.finalize()))
}
