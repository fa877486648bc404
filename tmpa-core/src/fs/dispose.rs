//! The verified delete step: delete a file only if it is still exactly the file that
//! was verified, without a window in which another file under its name could be deleted.
//!
//! Linux has no call that unlinks "this inode only": `unlinkat` removes whatever the name
//! points to when the call runs, so a check by name followed by an unlink by name deletes
//! a file that a writer renamed over the name in between (a session resumed, an event
//! rewritten) without ever looking at it. Mail stores and package managers solve this by
//! moving the entry first, and so does [`dispose`]:
//!
//! 1. the entry is checked by name: a regular file with exactly the verified [`Stamp`]
//!    (ctime included), its lease (if any) intact, and the caller's last check passes;
//! 2. it is moved into a directory that only this program uses (the quarantine, on the
//!    same file system) under a name nobody else knows ([`Dir::move_aside`]:
//!    `renameat2(RENAME_NOREPLACE)`, or a plain `renameat` where the file system has no
//!    such flag, NFS, SMB and FUSE: either moves exactly the one inode at the name at that
//!    instant). From now on no writer can reach it by name: a writer that saves meanwhile
//!    creates a new file under the old name, which is never touched;
//! 3. what was moved is checked again where nobody else can change the name: the same
//!    inode, size and mtime ([`Stamp::same_but_ctime`]; the move itself changed
//!    the ctime, which was checked in step 1), and for a leased temporary the lease still
//!    held with no break pending and held on that very inode;
//! 4. only then is it unlinked from the quarantine.
//!
//! If step 3 finds another file (a writer replaced the verified one just before the
//! move) or a pending lease break (a writer is opening it), the moved file is put back
//! under its name only by an exclusive operation ([`Dir::move_noreplace`]:
//! `RENAME_NOREPLACE`, else a hard link, which fails if the name exists). If a newer file
//! has taken the name meanwhile, the moved file is never deleted: it stays in the
//! quarantine ([`Disposal::Superseded`]) for the caller to keep and report; so it does
//! where the file system has no exclusive operation at all ([`Disposal::CannotPutBack`]).
//!
//! No step unlinks a name another process can use: the only `unlinkat` is of the private
//! name in the quarantine, after the check of what is there.
//!
//! A kill at any step leaves the file either at its name or in the quarantine, never
//! deleted unverified; the programs' next run finds it there and finishes the job
//! (tmpa-maint's recovery: deleted when its receipt line names exactly this inode, else
//! put back).
//!
//! # Not guaranteed
//! A process that already had the file open before step 1 (not through a fresh `open`)
//! can still write into it after step 3; only a lease ([`super::Lease`]) rules that out.

use std::ffi::OsStr;

use super::{Dir, Kind, Lease, Meta, Stamp};
use crate::error::Error;

/// What the file must still be for [`dispose`] to delete it.
#[derive(Debug)]
pub struct Expected<'a> {
    /// The stamp taken when its data was verified.
    pub stamp: Stamp,
    /// A write lease held on it (tmpclean's temporaries): deleted only while the lease is
    /// held on that very inode with no break pending.
    pub lease: Option<&'a Lease>,
}

/// Why [`dispose`] kept a file at its name.
#[derive(Debug)]
pub enum Keep {
    /// The entry is not the verified file (another inode, size, mtime or ctime; or not a
    /// regular file), before or after it was moved aside (then it was put back).
    Changed,
    /// The entry was gone before it could be moved aside.
    Gone,
    /// Someone opened the leased file (a break is pending): it was never moved, or was
    /// put back before the lease was released, so the opener finds it at its name.
    LeaseBroken,
    /// The caller's last check refused, in words.
    Refused(String),
    /// The entry cannot be moved aside here (another mount: `EXDEV`; an immutable or
    /// append-only file or directory, a sticky directory: `EPERM`; a read-only file
    /// system): kept, with the reason.
    CannotMove(Error),
}

/// What [`dispose`] did with one file.
#[derive(Debug)]
pub enum Disposal {
    /// Moved aside, found to be exactly the verified file, and unlinked.
    Deleted,
    /// Kept at its name (never moved, or moved and put back), and why.
    Kept(Keep),
    /// Moved aside and found not to be the verified file, but a newer file took its name
    /// before it could be put back: it stays in the quarantine under the name it was
    /// moved to. Never deleted; the caller keeps and reports it.
    Superseded,
    /// Moved aside and found not to be the verified file, and the file system has no
    /// exclusive way to put it back (neither `RENAME_NOREPLACE` nor hard links: a plain
    /// rename could replace a newer file): it stays in the quarantine under the name it
    /// was moved to, with the error that says so. Never deleted; the caller keeps and
    /// reports it.
    CannotPutBack(Error),
    /// An operation failed after the move: the file is in the quarantine under the name
    /// it was moved to (`aside: true`), or an operation before it failed and it is at its
    /// name (`aside: false`).
    Failed {
        /// What failed.
        error: Error,
        /// Whether the file is in the quarantine.
        aside: bool,
    },
}

/// Deletes the entry `name` of `dir` if it is still exactly the file described by
/// `expected`, by moving it to `aside_name` in `aside` (a directory on the same file
/// system that only the caller uses), checking it there and unlinking it there; see the
/// module's documentation for each step and what happens on a mismatch. `last_check` runs
/// after the first check of the entry, immediately before the move: `Some(reason)` keeps
/// the file.
///
/// The directories are not fsynced here: the caller fsyncs them after a batch.
pub fn dispose(
    dir: &Dir,
    name: &OsStr,
    aside: &Dir,
    aside_name: &OsStr,
    expected: &Expected<'_>,
    last_check: impl FnOnce() -> Option<String>,
) -> Disposal {
    let lease_intact = || expected.lease.is_none_or(Lease::intact);
    if !lease_intact() {
        return Disposal::Kept(Keep::LeaseBroken);
    }
    match dir.stat(name) {
        Ok(Some(m)) if m.kind == Kind::File && m.stamp == expected.stamp => {}
        Ok(Some(_)) => return Disposal::Kept(Keep::Changed),
        Ok(None) => return Disposal::Kept(Keep::Gone),
        Err(error) => {
            return Disposal::Failed {
                error,
                aside: false,
            };
        }
    }
    if let Some(why) = last_check() {
        return Disposal::Kept(Keep::Refused(why));
    }
    // As close to the move as can be: an opener that arrived during the checks is
    // waiting for the lease now.
    if !lease_intact() {
        return Disposal::Kept(Keep::LeaseBroken);
    }
    if let Err(e) = dir.move_aside(name, aside, aside_name) {
        return match e.io_kind() {
            std::io::ErrorKind::NotFound => Disposal::Kept(Keep::Gone),
            // Another mount: if this one is read-only, that is the reason worth saying
            // (the kernel checks the mounts before their writability).
            std::io::ErrorKind::CrossesDevices if dir.on_read_only_mount() => {
                Disposal::Kept(Keep::CannotMove(dir.error(
                    "delete",
                    name,
                    std::io::Error::from_raw_os_error(rustix::io::Errno::ROFS.raw_os_error()),
                )))
            }
            _ => Disposal::Kept(Keep::CannotMove(e)),
        };
    }
    let moved = match aside.stat(aside_name) {
        Ok(Some(m)) => m,
        Ok(None) => {
            // Only this program uses the quarantine: nothing else removes its entries.
            return Disposal::Failed {
                error: aside.error(
                    "check",
                    aside_name,
                    std::io::Error::from(std::io::ErrorKind::NotFound),
                ),
                aside: true,
            };
        }
        Err(error) => return Disposal::Failed { error, aside: true },
    };
    let why_not = if !is_expected(&moved, &expected.stamp) {
        Some(Keep::Changed)
    } else if !expected
        .lease
        .is_none_or(|l| lease_on(l, &moved.stamp) && l.intact())
    {
        Some(Keep::LeaseBroken)
    } else {
        None
    };
    if let Some(keep) = why_not {
        return put_back(dir, name, aside, aside_name, keep);
    }
    match aside.unlink(aside_name) {
        Ok(()) => Disposal::Deleted,
        // Back under its name, where a person looks for it, for the next run to retry.
        // If a newer file has the name, this verified one waits in the quarantine, where
        // the next run's recovery deletes it on the strength of its receipt line.
        Err(error) => match aside.move_noreplace(aside_name, dir, name) {
            Ok(()) => Disposal::Failed {
                error,
                aside: false,
            },
            Err(_) => Disposal::Failed { error, aside: true },
        },
    }
}

/// Whether a file this program moved is the verified one.
fn is_expected(moved: &Meta, expected: &Stamp) -> bool {
    moved.kind == Kind::File && moved.stamp.same_but_ctime(expected)
}

/// Whether `lease` is held on the inode `stamp` describes (read through the lease's own
/// descriptor).
fn lease_on(lease: &Lease, stamp: &Stamp) -> bool {
    Meta::of_fd(lease.file()).is_ok_and(|m| m.stamp.same_inode(stamp))
}

/// Moves a file that turned out not to be the verified one back under its name.
fn put_back(dir: &Dir, name: &OsStr, aside: &Dir, aside_name: &OsStr, keep: Keep) -> Disposal {
    match aside.move_noreplace(aside_name, dir, name) {
        Ok(()) => Disposal::Kept(keep),
        Err(e) if e.io_kind() == std::io::ErrorKind::AlreadyExists => Disposal::Superseded,
        Err(e) if e.io_kind() == std::io::ErrorKind::Unsupported => Disposal::CannotPutBack(e),
        Err(error) => Disposal::Failed { error, aside: true },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn setup() -> (tempfile::TempDir, Dir, Dir) {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("d")).unwrap();
        std::fs::create_dir_all(t.path().join("q")).unwrap();
        let top = Dir::open_path(t.path()).unwrap();
        let d = top.open_dir("d").unwrap();
        let q = top.open_dir("q").unwrap();
        (t, d, q)
    }

    fn stamp_of(d: &Dir, name: &str) -> Stamp {
        d.stat(name).unwrap().unwrap().stamp
    }

    fn expect(stamp: Stamp) -> Expected<'static> {
        Expected { stamp, lease: None }
    }

    fn entries(p: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    /// Every case again as on NFS, SMB or FUSE, which have no `RENAME_NOREPLACE`: the
    /// same outcomes, and never an unlink of the shared name.
    #[test]
    fn every_case_holds_without_rename_noreplace() {
        crate::fs::moves::without_rename_flags(|| {
            deletes_the_verified_file_and_leaves_nothing_aside();
            a_file_replaced_before_the_check_is_kept();
            a_file_replaced_between_check_and_move_is_put_back();
            a_superseded_file_stays_aside();
            gone_refused_and_unmovable_files_are_kept_at_their_name();
        });
    }

    #[test]
    fn deletes_the_verified_file_and_leaves_nothing_aside() {
        let (t, d, q) = setup();
        std::fs::write(t.path().join("d/f"), b"one").unwrap();
        let e = expect(stamp_of(&d, "f"));
        let r = dispose(&d, "f".as_ref(), &q, "f".as_ref(), &e, || None);
        assert!(matches!(r, Disposal::Deleted), "{r:?}");
        assert!(entries(&t.path().join("d")).is_empty());
        assert!(entries(&t.path().join("q")).is_empty());
    }

    #[test]
    fn a_file_replaced_before_the_check_is_kept() {
        let (t, d, q) = setup();
        std::fs::write(t.path().join("d/f"), b"one").unwrap();
        let e = expect(stamp_of(&d, "f"));
        std::fs::write(t.path().join("d/f.new"), b"two").unwrap();
        std::fs::rename(t.path().join("d/f.new"), t.path().join("d/f")).unwrap();
        let r = dispose(&d, "f".as_ref(), &q, "f".as_ref(), &e, || None);
        assert!(matches!(r, Disposal::Kept(Keep::Changed)), "{r:?}");
        assert_eq!(std::fs::read(t.path().join("d/f")).unwrap(), b"two");
    }

    /// The writer's rename lands between the check and the move (done by the last
    /// check): the new file is moved, found to be another inode, and put back.
    #[test]
    fn a_file_replaced_between_check_and_move_is_put_back() {
        let (t, d, q) = setup();
        std::fs::write(t.path().join("d/f"), b"one").unwrap();
        let e = expect(stamp_of(&d, "f"));
        let p = t.path().to_path_buf();
        let r = dispose(&d, "f".as_ref(), &q, "f".as_ref(), &e, || {
            std::fs::write(p.join("d/f.new"), b"two").unwrap();
            std::fs::rename(p.join("d/f.new"), p.join("d/f")).unwrap();
            None
        });
        assert!(matches!(r, Disposal::Kept(Keep::Changed)), "{r:?}");
        assert_eq!(std::fs::read(t.path().join("d/f")).unwrap(), b"two");
        assert!(entries(&t.path().join("q")).is_empty());
    }

    /// A file moved aside that is not the verified one, whose name a newer file took
    /// meanwhile, stays in the quarantine: neither version is deleted.
    #[test]
    fn a_superseded_file_stays_aside() {
        let (t, d, q) = setup();
        std::fs::write(t.path().join("d/f"), b"one").unwrap();
        std::fs::write(t.path().join("d/f.new"), b"two").unwrap();
        std::fs::rename(t.path().join("d/f.new"), t.path().join("d/f")).unwrap();
        // As if the first check had passed: move by hand, then a newer write.
        d.move_aside("f".as_ref(), &q, "f".as_ref()).unwrap();
        std::fs::write(t.path().join("d/f"), b"three").unwrap();
        let r = put_back(&d, "f".as_ref(), &q, "f".as_ref(), Keep::Changed);
        assert!(matches!(r, Disposal::Superseded), "{r:?}");
        assert_eq!(std::fs::read(t.path().join("d/f")).unwrap(), b"three");
        assert_eq!(std::fs::read(t.path().join("q/f")).unwrap(), b"two");
    }

    #[test]
    fn gone_refused_and_unmovable_files_are_kept_at_their_name() {
        let (t, d, q) = setup();
        std::fs::write(t.path().join("d/f"), b"one").unwrap();
        let e = expect(stamp_of(&d, "f"));
        let r = dispose(&d, "f".as_ref(), &q, "f".as_ref(), &e, || Some("no".into()));
        assert!(
            matches!(r, Disposal::Kept(Keep::Refused(ref w)) if w == "no"),
            "{r:?}"
        );
        // The quarantine name is taken: the move is refused, the file stays.
        std::fs::write(t.path().join("q/f"), b"other").unwrap();
        let r = dispose(&d, "f".as_ref(), &q, "f".as_ref(), &e, || None);
        assert!(matches!(r, Disposal::Kept(Keep::CannotMove(_))), "{r:?}");
        assert_eq!(std::fs::read(t.path().join("d/f")).unwrap(), b"one");
        std::fs::remove_file(t.path().join("d/f")).unwrap();
        let r = dispose(&d, "f".as_ref(), &q, "g".as_ref(), &e, || None);
        assert!(matches!(r, Disposal::Kept(Keep::Gone)), "{r:?}");
    }
}
