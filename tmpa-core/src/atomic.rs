//! Atomic, durable file replacement (SPEC §2).
//!
//! Every file the library or a program creates or replaces goes through [`AtomicFile`]:
//! write `{final}.tmp.{unique}` in the same directory, fsync it, rename it over `{final}`,
//! fsync the directory. A reader sees the old file or the new one, never a part; after
//! [`AtomicFile::commit`] returns, both the content and the directory entry are on stable
//! storage (as far as the file system honours fsync).
//!
//! Ownership and mode: a replaced file keeps its mode (and, when running as root, its owner
//! and group); a new file gets mode `0644` less the umask and, when running as root, the
//! owner and group of its directory, so that a tree owned by the backend's user stays
//! writable by that user after a root cron job touched it.
//!
//! Not guaranteed: the parent directory must already exist and is not created; a symlink
//! at `{final}` is replaced by the file (the link's target is never written).

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Buffer size of the streaming writer: large enough that one `write` syscall carries a
/// whole small file, small enough to be irrelevant next to a day of events.
const BUF_BYTES: usize = 64 * 1024;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// `O_NOFOLLOW | O_CLOEXEC`, for opening files that must not be symlinks.
pub(crate) fn nofollow_flags() -> i32 {
    (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC).bits() as i32
}

/// A file being written that replaces `{final}` only on [`commit`](AtomicFile::commit).
///
/// Dropping it without committing removes the temporary file (best effort); call
/// [`discard`](AtomicFile::discard) to learn whether that removal worked.
///
/// # Examples
/// ```
/// use std::io::Write;
/// let dir = tempfile::tempdir().unwrap();
/// let dest = dir.path().join("_compacted.json");
/// let mut f = tmpa_core::AtomicFile::create(&dest).unwrap();
/// f.write_all(b"{\"format\":1}").unwrap();
/// assert!(!dest.exists()); // nothing visible before commit
/// f.commit().unwrap();
/// assert_eq!(std::fs::read(&dest).unwrap(), b"{\"format\":1}");
/// ```
#[derive(Debug)]
pub struct AtomicFile {
    out: Option<BufWriter<File>>,
    tmp: PathBuf,
    dest: PathBuf,
}

impl AtomicFile {
    /// Creates the temporary file `{dest}.tmp.{unique}` next to `dest`.
    ///
    /// # Errors
    /// [`Error::Io`] naming the temporary path when it cannot be created (missing or
    /// unwritable directory, full disk, name too long).
    pub fn create(dest: impl AsRef<Path>) -> Result<AtomicFile> {
        let dest = dest.as_ref().to_path_buf();
        let dir = parent_of(&dest);
        let name = dest
            .file_name()
            .ok_or_else(|| Error::io("create", &dest, io::Error::other("no file name")))?;
        let previous = match fs::symlink_metadata(&dest) {
            Ok(m) if m.file_type().is_file() => Some(m),
            _ => None,
        };
        let mode = previous.as_ref().map_or(0o644, |m| m.mode() & 0o7777);
        let (file, tmp) = create_unique(dir, name, mode)?;
        let atomic = AtomicFile {
            out: Some(BufWriter::with_capacity(BUF_BYTES, file)),
            tmp,
            dest,
        };
        atomic.fix_owner_and_mode(previous.as_ref(), mode)?;
        Ok(atomic)
    }

    /// Gives the temporary the mode (and, as root, the owner) it must have; each call is
    /// skipped when the file already has it, because every metadata change costs a journal
    /// update at fsync time.
    fn fix_owner_and_mode(&self, previous: Option<&fs::Metadata>, mode: u32) -> Result<()> {
        let file = self.file();
        let current = file
            .metadata()
            .map_err(|e| Error::io("stat", &self.tmp, e))?;
        if previous.is_some() && current.mode() & 0o7777 != mode {
            // The umask stripped bits of the mode the old file had.
            file.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io("chmod", &self.tmp, e))?;
        }
        if !rustix::process::geteuid().is_root() {
            return Ok(());
        }
        let (uid, gid) = match previous {
            Some(m) => (m.uid(), m.gid()),
            None => {
                let dir = parent_of(&self.dest);
                let m = fs::metadata(dir).map_err(|e| Error::io("stat", dir, e))?;
                (m.uid(), m.gid())
            }
        };
        if (current.uid(), current.gid()) == (uid, gid) {
            return Ok(());
        }
        std::os::unix::fs::fchown(file, Some(uid), Some(gid))
            .map_err(|e| Error::io("chown", &self.tmp, e))
    }

    fn file(&self) -> &File {
        self.out
            .as_ref()
            .expect("AtomicFile used after commit")
            .get_ref()
    }

    /// The final path this file will replace.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// The temporary path being written.
    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    /// Sets the permission bits the final file will have (through the open descriptor,
    /// never by path), e.g. to keep an archive as private as the file it was made from.
    /// The umask does not apply.
    ///
    /// # Errors
    /// [`Error::Io`] naming the temporary path.
    pub fn set_mode(&self, mode: u32) -> Result<()> {
        self.file()
            .set_permissions(fs::Permissions::from_mode(mode & 0o7777))
            .map_err(|e| Error::io("chmod", &self.tmp, e))
    }

    /// Flushes, fsyncs, renames over the final path and fsyncs the directory.
    ///
    /// # Errors
    /// [`Error::Io`] naming the path; the temporary file has then been removed.
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

    /// Removes the temporary file without touching the final path.
    ///
    /// # Errors
    /// [`Error::Io`] when the temporary cannot be removed.
    pub fn discard(mut self) -> Result<()> {
        self.out = None;
        fs::remove_file(&self.tmp).map_err(|e| Error::io("remove", &self.tmp, e))
    }

    fn finish(mut self, no_replace: bool) -> Result<()> {
        let out = self.out.take().expect("AtomicFile finished twice");
        let result = self.sync_and_rename(out, no_replace);
        if result.is_err() {
            // Best effort; the error that matters is the one we return.
            let _ = fs::remove_file(&self.tmp);
        }
        result?;
        sync_dir(parent_of(&self.dest))
    }

    fn sync_and_rename(&self, out: BufWriter<File>, no_replace: bool) -> Result<()> {
        let file = out
            .into_inner()
            .map_err(|e| Error::io("write", &self.tmp, e.into_error()))?;
        file.sync_all()
            .map_err(|e| Error::io("fsync", &self.tmp, e))?;
        drop(file);
        if no_replace {
            rename_noreplace(&self.tmp, &self.dest)
        } else {
            fs::rename(&self.tmp, &self.dest).map_err(|e| Error::io("rename", &self.dest, e))
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
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

fn parent_of(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

fn create_unique(dir: &Path, name: &OsStr, mode: u32) -> Result<(File, PathBuf)> {
    // A stale temporary from a crashed process with the same pid is possible; retry.
    for _ in 0..64 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut tmp_name = name.to_os_string();
        tmp_name.push(format!(".tmp.{}-{n}-{nanos:x}", std::process::id()));
        let tmp = dir.join(tmp_name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(nofollow_flags())
            .open(&tmp)
        {
            Ok(f) => return Ok((f, tmp)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io("create", tmp, e)),
        }
    }
    Err(Error::io(
        "create",
        dir.join(name),
        io::Error::other("could not find a free temporary name"),
    ))
}

fn rename_noreplace(from: &Path, to: &Path) -> Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        // File systems without RENAME_NOREPLACE: a hard link is equally exclusive.
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
            fs::hard_link(from, to).map_err(|e| Error::io("link", to, e))?;
            fs::remove_file(from).map_err(|e| Error::io("remove", from, e))
        }
        Err(e) => Err(Error::io("rename", to, e.into())),
    }
}

/// Fsyncs a directory, making the entries created or renamed in it durable.
///
/// # Errors
/// [`Error::Io`] naming the directory.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// Writes `bytes` to `dest` atomically and durably, replacing any previous file.
///
/// # Errors
/// [`Error::Io`] naming the path; no temporary file is left behind.
///
/// # Examples
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let p = dir.path().join("a.json");
/// tmpa_core::write(&p, b"{}").unwrap();
/// tmpa_core::write(&p, b"{\"v\":2}").unwrap();
/// assert_eq!(std::fs::read(&p).unwrap(), b"{\"v\":2}");
/// assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
/// ```
pub fn write(dest: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(dest)?;
    f.write_all(bytes)
        .map_err(|e| Error::io("write", f.tmp_path(), e))?;
    f.commit()
}

/// Writes `bytes` to `dest` atomically and durably unless `dest` already exists.
///
/// # Errors
/// An [`Error::Io`] of kind `AlreadyExists` when `dest` exists (it is left untouched), or
/// any other [`Error::Io`] naming the path.
pub fn write_new(dest: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(dest)?;
    f.write_all(bytes)
        .map_err(|e| Error::io("write", f.tmp_path(), e))?;
    f.commit_new()
}

/// If `name` is a temporary file name (SPEC §2), the name of the file it would replace.
///
/// Temporaries are `{final}.tmp` and `{final}.tmp.{suffix}` where `{final}` is not empty and
/// `{suffix}` is not empty and holds no `.`. Anything else (`x.tmpl`, `x.tmpfoo`,
/// `x.tmp.` or `.tmp`) is not a temporary.
///
/// # Examples
/// ```
/// use std::ffi::OsStr;
/// use tmpa_core::temp_final_name;
/// assert_eq!(temp_final_name(OsStr::new("a.json.tmp")), Some(OsStr::new("a.json")));
/// assert_eq!(temp_final_name(OsStr::new("a.json.tmp.4711-0-ff")), Some(OsStr::new("a.json")));
/// assert_eq!(temp_final_name(OsStr::new("a.json.tmpl")), None);
/// assert_eq!(temp_final_name(OsStr::new("x.tmpfoo")), None);
/// ```
pub fn temp_final_name(name: &OsStr) -> Option<&OsStr> {
    let b = name.as_bytes();
    let head = if let Some(h) = b.strip_suffix(b".tmp") {
        h
    } else {
        let dot = b.iter().rposition(|&c| c == b'.')?;
        let (head, suffix) = (&b[..dot], &b[dot + 1..]);
        if suffix.is_empty() {
            return None;
        }
        head.strip_suffix(b".tmp")?
    };
    if head.is_empty() || head.contains(&b'/') {
        return None;
    }
    Some(OsStr::from_bytes(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_without_commit_removes_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("x.json");
        let mut f = AtomicFile::create(&dest).unwrap();
        f.write_all(b"partial").unwrap();
        let tmp = f.tmp_path().to_path_buf();
        assert!(tmp.exists());
        assert_eq!(
            temp_final_name(tmp.file_name().unwrap()),
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
        fs::write(&dest, b"old").unwrap();
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o600)).unwrap();
        write(&dest, b"new").unwrap();
        assert_eq!(fs::metadata(&dest).unwrap().mode() & 0o7777, 0o600);
    }

    #[test]
    fn write_new_refuses_existing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("x.json");
        write_new(&dest, b"one").unwrap();
        let e = write_new(&dest, b"two").unwrap_err();
        assert_eq!(e.io_kind(), Some(io::ErrorKind::AlreadyExists));
        assert_eq!(fs::read(&dest).unwrap(), b"one");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_directory_names_path() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("nope/x.json");
        let e = write(&dest, b"x").unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn symlink_at_destination_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, b"precious").unwrap();
        let dest = dir.path().join("x.json");
        std::os::unix::fs::symlink(&target, &dest).unwrap();
        write(&dest, b"new").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"precious");
        assert!(fs::symlink_metadata(&dest).unwrap().is_file());
    }
}
