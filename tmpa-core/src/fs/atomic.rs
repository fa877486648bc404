//! Atomic, durable file replacement (docs/FORMAT.md "Temporaries") in a held directory.
//!
//! Every file the library or a program creates or replaces goes through [`AtomicFile`]:
//! write a temporary in the same directory, fsync it (where the journal is ordered, write
//! it back instead: fs/journal.rs), rename it over `{final}`, fsync the directory. A
//! reader sees the old file or the new one, never a part; after [`AtomicFile::commit`]
//! returns, both the content and the directory entry are on stable storage (as far as the
//! file system honours fsync).
//!
//! Ownership and mode: a replaced file keeps its mode (and, when running as root, its owner
//! and group); a new file gets mode `0644` less the umask and, when running as root, the
//! owner and group of its directory, so that a tree owned by the backend's user stays
//! writable by that user after a root cron job touched it.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::journal::ContentSync;
use super::{Dir, Kind, Meta, chown_to, temp};
use crate::error::{Error, Result};

/// Buffer size of the streaming writer: large enough that one `write` syscall carries a
/// whole small file, small enough to be irrelevant next to a day of events.
const BUF_BYTES: usize = 64 * 1024;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A file being written that replaces `{final}` only on [`commit`](AtomicFile::commit).
///
/// # Guarantees
/// Nothing is visible at the final name before `commit`; after it returns, the content
/// and the directory entry are durable. The temporary lives in the same directory, held
/// by descriptor: a directory renamed or swapped for a symlink meanwhile cannot lead the
/// write elsewhere.
///
/// # Not guaranteed
/// [`commit_new`](AtomicFile::commit_new) is exclusive (it never replaces a file that
/// exists, however close two writers come) on every file system with
/// `renameat2(RENAME_NOREPLACE)` or hard links: local ones, NFS, SMB with hard links,
/// bindfs and sshfs. On one with neither (s3fs, gcsfuse, rclone mount) it checks the
/// name, then renames: a file another process creates at that name in between is
/// replaced.
///
/// A process killed between creating and committing leaves its temporary behind (its
/// name is a temporary's, docs/FORMAT.md "Temporaries": `tmpa-tmpclean` removes it once stale). Dropping an
/// `AtomicFile` without committing removes the temporary on a best-effort basis; call
/// [`discard`](AtomicFile::discard) to learn whether that worked.
///
/// # Examples
/// ```
/// use std::io::Write;
/// let dir = tempfile::tempdir().unwrap();
/// let dest = dir.path().join("big.json");
/// let mut f = tmpa_core::AtomicFile::create(&dest).unwrap();
/// f.write_all(b"{\"format\":1}").unwrap();
/// assert!(!dest.exists()); // nothing visible before commit
/// f.commit().unwrap();
/// assert_eq!(std::fs::read(&dest).unwrap(), b"{\"format\":1}");
/// ```
#[derive(Debug)]
pub struct AtomicFile {
    out: Option<BufWriter<File>>,
    dir: Dir,
    tmp: OsString,
    dest: OsString,
}

impl AtomicFile {
    /// Starts writing `dest` (its directory must exist; symlinks in its path are followed,
    /// as for any path a caller gives; `dest` itself is replaced, never followed).
    ///
    /// # Errors
    /// [`Error::Io`] naming the path when the directory cannot be opened or the temporary
    /// created (missing or unwritable directory, full disk).
    pub fn create(dest: impl AsRef<Path>) -> Result<AtomicFile> {
        let dest = dest.as_ref();
        let name = dest
            .file_name()
            .ok_or_else(|| Error::io("create", dest, io::Error::other("no file name")))?;
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir = Dir::open_path(parent)?;
        AtomicFile::create_in(&dir, name)
    }

    /// Starts writing the entry `name` of `dir`.
    ///
    /// # Errors
    /// [`Error::Io`] naming the temporary when it cannot be created.
    pub fn create_in(dir: &Dir, name: &OsStr) -> Result<AtomicFile> {
        let previous = dir.stat(name)?.filter(|m| m.kind == Kind::File);
        let mode = previous.as_ref().map_or(0o644, |m| m.mode);
        let dir = dir.try_clone()?;
        let (file, tmp) = create_unique(&dir, name, mode)?;
        let atomic = AtomicFile {
            out: Some(BufWriter::with_capacity(BUF_BYTES, file)),
            dir,
            tmp,
            dest: name.to_os_string(),
        };
        atomic.fix_owner_and_mode(previous.as_ref(), mode)?;
        Ok(atomic)
    }

    /// Gives the temporary the mode (and, as root, the owner) it must have; each call is
    /// skipped when the file already has it, because every metadata change costs a journal
    /// update at fsync time.
    fn fix_owner_and_mode(&self, previous: Option<&Meta>, mode: u32) -> Result<()> {
        let file = self.file();
        let current = Meta::of_fd(file).map_err(|e| self.tmp_error("stat", e))?;
        if previous.is_some() && current.mode != mode {
            // The umask stripped bits of the mode the old file had.
            self.set_mode(mode)?;
        }
        if !rustix::process::geteuid().is_root() {
            return Ok(());
        }
        let (uid, gid) = match previous {
            Some(m) => (m.uid, m.gid),
            None => {
                let d = self.dir.meta()?;
                (d.uid, d.gid)
            }
        };
        chown_to(file, uid, gid).map_err(|e| self.tmp_error("chown", e))
    }

    fn file(&self) -> &File {
        self.out
            .as_ref()
            .expect("AtomicFile used after commit")
            .get_ref()
    }

    fn tmp_error(&self, op: &'static str, e: io::Error) -> Error {
        self.dir.error(op, &self.tmp, e)
    }

    /// The path this file will replace, as reports show it.
    pub fn dest(&self) -> PathBuf {
        self.dir.join(&self.dest)
    }

    /// The temporary being written, as reports show it.
    pub fn tmp_path(&self) -> PathBuf {
        self.dir.join(&self.tmp)
    }

    /// Sets the permission bits the final file will have (through the open descriptor),
    /// e.g. to keep an archive as private as the file it was made from. The umask does
    /// not apply.
    ///
    /// # Errors
    /// [`Error::Io`] naming the temporary.
    pub fn set_mode(&self, mode: u32) -> Result<()> {
        rustix::fs::fchmod(self.file(), rustix::fs::Mode::from_raw_mode(mode & 0o7777))
            .map_err(|e| self.tmp_error("chmod", e.into()))
    }

    /// Writes what was written so far to the disk (flush and `fdatasync`), so that a
    /// large file goes out in steps a live service's own writes can pass between, rather
    /// than in one burst at [`commit`](AtomicFile::commit). Not needed for durability:
    /// `commit` syncs everything.
    ///
    /// # Errors
    /// An I/O error of the flush or the sync (e.g. no space left on the device).
    pub fn sync_data(&mut self) -> io::Result<()> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| io::Error::other("AtomicFile already finished"))?;
        out.flush()?;
        out.get_ref().sync_data()
    }

    /// Flushes, fsyncs, renames over the final name and fsyncs the directory. The
    /// directory fsync is a group commit: writers of this process that renamed into the
    /// same directory at about the same time share one (fs/commit.rs); each still returns
    /// only after an fsync that started after its own rename.
    ///
    /// # Errors
    /// [`Error::Io`] naming the path; the temporary has then been removed.
    pub fn commit(self) -> Result<()> {
        self.finish(false)
    }

    /// Like [`commit`](AtomicFile::commit), but never replaces an existing file.
    ///
    /// # Errors
    /// An [`Error::Io`] of kind `AlreadyExists` naming the final path when it exists; the
    /// existing file is untouched and the temporary removed.
    pub fn commit_new(self) -> Result<()> {
        self.finish(true)
    }

    /// Writes `bytes` as the new entry `name` of `dir` with the permission bits `mode`
    /// (the umask does not apply), never replacing a file there
    /// ([`commit_new`](AtomicFile::commit_new)).
    ///
    /// # Errors
    /// As [`commit_new`](AtomicFile::commit_new): kind `AlreadyExists` when the name is
    /// taken, the file there untouched; a failed write names the final path.
    pub fn write_new_in(dir: &Dir, name: &OsStr, bytes: &[u8], mode: u32) -> Result<()> {
        let mut out = AtomicFile::create_in(dir, name)?;
        out.set_mode(mode)?;
        out.write_all(bytes)
            .and_then(|()| out.flush())
            .map_err(|e| Error::io("write", dir.join(name), e))?;
        out.commit_new()
    }

    /// Removes the temporary without touching the final name.
    ///
    /// # Errors
    /// [`Error::Io`] when the temporary cannot be removed.
    pub fn discard(mut self) -> Result<()> {
        self.out = None;
        self.dir.unlink(&self.tmp)
    }

    fn finish(mut self, no_replace: bool) -> Result<()> {
        let out = self.out.take().expect("AtomicFile finished twice");
        let result = self.sync_and_rename(out, no_replace);
        if result.is_err() {
            // Best effort; the error that matters is the one we return.
            let _ = self.dir.unlink(&self.tmp);
        }
        result?;
        // Shared with the other writers of this process that renamed into the same
        // directory meanwhile (fs/commit.rs): still an fsync that started after this
        // rename.
        super::commit::sync_dir(&self.dir)
    }

    fn sync_and_rename(&self, out: BufWriter<File>, no_replace: bool) -> Result<()> {
        let file = out
            .into_inner()
            .map_err(|e| self.tmp_error("write", e.into_error()))?;
        // The directory's fsync in `finish` commits the rename; where the journal is
        // ordered it commits the file's metadata with it (fs/journal.rs).
        match super::journal::content_sync(&self.dir) {
            ContentSync::Fsync => file.sync_all().map_err(|e| self.tmp_error("fsync", e))?,
            ContentSync::WriteBack => match super::journal::write_back(&file) {
                Ok(()) => {}
                // A seccomp filter or a sandbox that refuses the call: the file's own
                // fsync is right everywhere.
                Err(e) if super::journal::refused(&e) => {
                    file.sync_all().map_err(|e| self.tmp_error("fsync", e))?;
                }
                Err(e) => return Err(self.tmp_error("write back", e)),
            },
        }
        drop(file);
        if !no_replace {
            return self.dir.rename(&self.tmp, &self.dest);
        }
        match self.dir.rename_noreplace(&self.tmp, &self.dest) {
            // Neither RENAME_NOREPLACE nor hard links (s3fs, gcsfuse, rclone mount): the
            // most this file system allows is a check, then a rename (see "Not
            // guaranteed").
            Err(e) if e.io_kind() == io::ErrorKind::Unsupported => {
                if self.dir.stat(&self.dest)?.is_some() {
                    return Err(self.dir.error(
                        "rename",
                        &self.dest,
                        io::Error::from_raw_os_error(rustix::io::Errno::EXIST.raw_os_error()),
                    ));
                }
                self.dir.rename(&self.tmp, &self.dest)
            }
            other => other,
        }
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out
            .as_mut()
            .ok_or_else(|| io::Error::other("AtomicFile already finished"))?
            .write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.out
            .as_mut()
            .ok_or_else(|| io::Error::other("AtomicFile already finished"))?
            .write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.out.as_mut() {
            Some(o) => o.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = self.dir.unlink(&self.tmp);
        }
    }
}

/// Creates a new temporary for `name` in `dir` (see [`temp::temp_name_for`]).
fn create_unique(dir: &Dir, name: &OsStr, mode: u32) -> Result<(File, OsString)> {
    // A stale temporary from a crashed process with the same pid is possible; retry.
    for _ in 0..64 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let unique = format!("{}-{n}-{nanos:x}", std::process::id());
        let tmp = temp::temp_name_for(name, &unique);
        match dir.create_new(&tmp, mode) {
            Ok(f) => return Ok((f, tmp)),
            Err(e) if e.io_kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(dir.error(
        "create",
        name,
        io::Error::other("could not find a free temporary name"),
    ))
}

/// Writes `bytes` to the entry `name` of `dir` atomically and durably, replacing it.
///
/// # Errors
/// [`Error::Io`] naming the path; no temporary is left behind.
pub(crate) fn write_in(dir: &Dir, name: &OsStr, bytes: &[u8], no_replace: bool) -> Result<()> {
    let mut f = AtomicFile::create_in(dir, name)?;
    f.write_all(bytes).map_err(|e| f.tmp_error("write", e))?;
    if no_replace {
        f.commit_new()
    } else {
        f.commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn drop_without_commit_removes_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("x.json");
        let mut f = AtomicFile::create(&dest).unwrap();
        f.write_all(b"partial").unwrap();
        let tmp = f.tmp_path();
        assert!(tmp.exists());
        assert_eq!(
            temp::temp_final_name(tmp.file_name().unwrap()),
            Some(OsStr::new("x.json"))
        );
        drop(f);
        assert!(!tmp.exists());
        assert!(!dest.exists());
    }

    #[test]
    fn replaced_file_keeps_mode() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("x.json");
        std::fs::write(&dest, b"old").unwrap();
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600)).unwrap();
        crate::write(&dest, b"new").unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&dest).unwrap().mode() & 0o7777, 0o600);
    }

    #[test]
    fn commit_new_refuses_existing() {
        let t = tempfile::tempdir().unwrap();
        let dir = Dir::open_path(t.path()).unwrap();
        let name = OsStr::new("x.json");
        write_in(&dir, name, b"one", true).unwrap();
        let e = write_in(&dir, name, b"two", true).unwrap_err();
        assert_eq!(e.io_kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(t.path().join(name)).unwrap(), b"one");
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_directory_names_path() {
        let dir = tempfile::tempdir().unwrap();
        let e = crate::write(dir.path().join("nope/x.json"), b"x").unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn symlink_at_destination_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"precious").unwrap();
        let dest = dir.path().join("x.json");
        std::os::unix::fs::symlink(&target, &dest).unwrap();
        crate::write(&dest, b"new").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        assert!(std::fs::symlink_metadata(&dest).unwrap().is_file());
    }

    #[test]
    fn a_name_too_long_for_its_temporary_gets_a_short_one() {
        let t = tempfile::tempdir().unwrap();
        let dir = Dir::open_path(t.path()).unwrap();
        let name = format!("evt_{}.json", "i".repeat(240));
        assert_eq!(name.len(), 249);
        let f = AtomicFile::create_in(&dir, OsStr::new(&name)).unwrap();
        let tmp = f.tmp_path();
        let tmp_name = tmp.file_name().unwrap();
        assert!(tmp_name.len() <= 255, "{}", tmp_name.len());
        match temp::temporary_of(tmp_name) {
            Some(temp::FinalName::Abbreviated(a)) => assert!(a.matches(OsStr::new(&name))),
            other => panic!("{other:?}"),
        }
        f.commit().unwrap();
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
    }
}
