//! The deletion: for the temporaries decided `Stale`, in batches of directories, re-open
//! each directory from the root without following symlinks, hash each file, write and
//! fsync the receipt, re-check each file and remove it relative to its directory, fsync
//! the directory.

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::io::Errno;
use sha2::{Digest, Sha256};
use tmpa_core::Problem;
use tmpa_core::day::path_text;
use tmpa_core::program::Run;

use crate::fsops::{self, Kind};
use crate::walk::{Anchor, Reason, Temporary, Walk, final_kind};

/// Most directories held open at once (one batch); keeps well below the default limit of
/// 1024 open files.
pub const BATCH_DIRS_MAX: usize = 256;
/// Most temporaries covered by one receipt write (one fsync).
pub const BATCH_FILES_MAX: usize = 4096;
/// Threads that fsync a batch's directories together.
pub const SYNC_THREADS: usize = 16;

/// A temporary about to be deleted, with what its receipt line says.
struct Pending {
    temp: usize,
    entry: serde_json::Value,
}

/// Deletes every `Stale` temporary of `walk` (indexes in `order`, grouped by directory),
/// updating each reason to `Deleted`, `Changed` or `Failed`. Returns the failures that
/// concern no single temporary (a directory fsync). Stops deleting when a receipt cannot
/// be written.
pub fn delete_stale(
    run: &mut Run,
    anchor: &Anchor,
    walk: &mut Walk,
    order: &[usize],
) -> Vec<Problem> {
    let mut failures = Vec::new();
    let stale: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&i| walk.temps[i].reason == Reason::Stale)
        .collect();
    let mut rest = &stale[..];
    while !rest.is_empty() {
        let len = batch_len(walk, rest);
        let (batch, tail) = rest.split_at(len);
        rest = tail;
        if !delete_batch(run, anchor, walk, batch, &mut failures) {
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
        let d = walk.temps[i].dir;
        if last != Some(d) {
            if dirs == BATCH_DIRS_MAX || n >= BATCH_FILES_MAX {
                return n;
            }
            dirs += 1;
            last = Some(d);
        }
    }
    rest.len()
}

/// One batch. Returns false when the receipt could not be written (nothing deleted).
fn delete_batch(
    run: &mut Run,
    anchor: &Anchor,
    walk: &mut Walk,
    batch: &[usize],
    failures: &mut Vec<Problem>,
) -> bool {
    let mut open: Vec<(u32, OwnedFd)> = Vec::new();
    let mut pending: Vec<Pending> = Vec::new();
    for &i in batch {
        let d = walk.temps[i].dir;
        if open.last().is_none_or(|(od, _)| *od != d) {
            // A directory that cannot be re-opened is tried again for each of its
            // temporaries: each then says why it was kept.
            match reopen_dir(anchor, walk, d) {
                Ok(fd) => open.push((d, fd)),
                Err(reason) => {
                    walk.temps[i].reason = reason;
                    continue;
                }
            }
        }
        let fd = &open.last().expect("opened above").1;
        let path = shown(anchor, walk, &walk.temps[i]);
        match receipt_entry(fd.as_fd(), anchor, walk, &walk.temps[i], &path) {
            Ok(entry) => pending.push(Pending { temp: i, entry }),
            Err(reason) => walk.temps[i].reason = reason,
        }
    }
    if pending.is_empty() {
        return true;
    }
    let entries: Vec<serde_json::Value> = pending.iter().map(|p| p.entry.clone()).collect();
    if let Err(e) = run.record_receipt(&entries) {
        for p in &pending {
            walk.temps[p.temp].reason =
                Reason::Failed(format!("receipt not written, not deleted: {}", e.chain()));
        }
        return false;
    }
    let mut not_deleted = Vec::new();
    for p in &pending {
        let t = &walk.temps[p.temp];
        let fd = &open
            .iter()
            .find(|(d, _)| *d == t.dir)
            .expect("pending dirs are open")
            .1;
        let reason = remove_checked(fd.as_fd(), t);
        if reason != Reason::Deleted {
            not_deleted.push(serde_json::json!({
                "file": p.entry["file"],
                "not_deleted": crate::detail(&reason, ""),
            }));
        }
        walk.temps[p.temp].reason = reason;
    }
    for (d, e) in sync_dirs(&open) {
        failures.push(Problem {
            path: anchor.path.join(&walk.dirs[d as usize].rel),
            reason: format!("fsync after deletion: {}", std::io::Error::from(e)),
        });
    }
    if !not_deleted.is_empty() {
        // Best effort: the receipt already says these were about to go; say they did not.
        let _ = run.record_receipt(&not_deleted);
    }
    true
}

/// Fsyncs every directory of a batch, from [`SYNC_THREADS`] threads at once: the file
/// system commits concurrent fsyncs together (ext4 and xfs group them into one journal
/// commit), so a batch of 256 directories costs a few commits instead of 256. Returns the
/// directories whose fsync failed.
fn sync_dirs(open: &[(u32, OwnedFd)]) -> Vec<(u32, Errno)> {
    let per_thread = open.len().div_ceil(SYNC_THREADS).max(1);
    std::thread::scope(|s| {
        let workers: Vec<_> = open
            .chunks(per_thread)
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .filter_map(|(d, fd)| fsops::sync_dir(fd.as_fd()).err().map(|e| (*d, e)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("an fsync thread does not panic"))
            .collect()
    })
}

fn shown(anchor: &Anchor, walk: &Walk, t: &Temporary) -> std::path::PathBuf {
    anchor
        .path
        .join(&walk.dirs[t.dir as usize].rel)
        .join(&t.name)
}

/// Re-opens a directory from the root, refusing symlinks on the way, and checks that it is
/// still the directory that was listed.
fn reopen_dir(anchor: &Anchor, walk: &Walk, d: u32) -> Result<OwnedFd, Reason> {
    let dir = &walk.dirs[d as usize];
    let fd = match fsops::open_dir_below(anchor.fd.as_fd(), &dir.rel) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR) => {
            return Err(Reason::Changed(
                "its directory was moved or replaced by a symlink since it was listed (kept)"
                    .into(),
            ));
        }
        Err(e) => {
            return Err(Reason::Failed(format!(
                "re-open directory: {}",
                std::io::Error::from(e)
            )));
        }
    };
    match fsops::stat_fd(fd.as_fd()) {
        Ok(st) if st.dev == dir.stamp.dev && st.ino == dir.stamp.ino => Ok(fd),
        Ok(_) => Err(Reason::Changed(
            "its directory was replaced since it was listed (kept)".into(),
        )),
        Err(e) => Err(Reason::Failed(format!(
            "stat directory: {}",
            std::io::Error::from(e)
        ))),
    }
}

/// Reads the file (through a no-follow descriptor, checked to be the same unchanged
/// inode before and after) and returns its receipt line.
fn receipt_entry(
    dir: BorrowedFd<'_>,
    anchor: &Anchor,
    walk: &Walk,
    t: &Temporary,
    path: &std::path::Path,
) -> Result<serde_json::Value, Reason> {
    let changed =
        || Reason::Changed("changed since it was listed (kept; the next run looks again)".into());
    let fd = match fsops::open_file_at(dir, &t.name) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::LOOP) => return Err(changed()),
        Err(e) => return Err(Reason::Failed(format!("open: {}", std::io::Error::from(e)))),
    };
    let before = fsops::stat_fd(fd.as_fd())
        .map_err(|e| Reason::Failed(format!("stat: {}", std::io::Error::from(e))))?;
    if !before.same_file_unchanged(&t.stamp) {
        return Err(changed());
    }
    let mut file = std::fs::File::from(fd);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut read_total: u64 = 0;
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                read_total += n as u64;
                if read_total > t.stamp.size {
                    return Err(changed());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Reason::Failed(format!("read: {e}"))),
        }
    }
    let after = fsops::stat_fd(file.as_fd())
        .map_err(|e| Reason::Failed(format!("stat: {}", std::io::Error::from(e))))?;
    if read_total != t.stamp.size || !after.same_file_unchanged(&t.stamp) {
        return Err(changed());
    }
    let final_path = anchor
        .path
        .join(&walk.dirs[t.dir as usize].rel)
        .join(t.final_name());
    Ok(serde_json::json!({
        "file": path_text(path),
        "final": path_text(&final_path),
        "bytes": t.stamp.size,
        "sha256": format!("{:x}", hasher.finalize()),
        "dev": t.stamp.dev,
        "ino": t.stamp.ino,
        "mtime": t.stamp.mtime.0,
        "ctime": t.stamp.ctime.0,
        "reason": "stale temporary: unchanged for --older-than, final file present, not open or locked",
    }))
}

/// The last check and the removal: same unchanged inode, final file still a regular file.
fn remove_checked(dir: BorrowedFd<'_>, t: &Temporary) -> Reason {
    match fsops::stat_at(dir, &t.name) {
        Ok(st) if st.same_file_unchanged(&t.stamp) => {}
        Ok(_) | Err(Errno::NOENT) => {
            return Reason::Changed(
                "changed just before deletion (kept; the next run looks again)".into(),
            );
        }
        Err(e) => return Reason::Failed(format!("stat: {}", std::io::Error::from(e))),
    }
    if final_kind(dir, &t.name) != Some(Kind::File) {
        return Reason::Changed("its final file disappeared just before deletion (kept)".into());
    }
    match fsops::unlink_at(dir, OsStr::new(&t.name)) {
        Ok(()) => Reason::Deleted,
        Err(Errno::NOENT) => Reason::Changed("gone just before deletion".into()),
        Err(e) => Reason::Failed(format!("delete: {}", std::io::Error::from(e))),
    }
}
