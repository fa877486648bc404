//! How a file written through [`super::AtomicFile`] is made durable before its rename, by
//! the file system it is on (docs/FORMAT.md "Temporaries").
//!
//! The portable order takes two journal commits: fsync the file (its data, its inode and
//! the temporary's entry), rename, fsync the directory. On a file system whose journal
//! commits every metadata change in the order it was made, and that writes the data a
//! commit depends on before that commit, one commit is enough:
//!
//! 1. write the file's data back and wait for it (`sync_file_range` with `WAIT_BEFORE |
//!    WRITE | WAIT_AFTER`). When that returns, the data is on the device (perhaps only in
//!    its volatile cache) and every change to the file's metadata that the data needs
//!    (blocks allocated, unwritten extents converted, the size on disk) has been made in
//!    the journal's running transaction or an earlier one. Both file systems hold this
//!    already for their own `fsync`, which waits the same way and then commits the
//!    transaction the file's last change is in;
//! 2. rename the temporary into place: a later change, so in the same transaction or a
//!    later one;
//! 3. fsync the directory: commits the transaction that holds the rename and, the journal
//!    being ordered, every earlier one; the commit record is written with a cache flush
//!    before it (`REQ_PREFLUSH`), which makes the data of step 1 durable too.
//!
//! After a power cut the journal holds a prefix of the changes: the final name exists only
//! if the rename was committed, and then so was everything the file's content needed. A
//! reader never finds a half-written file at the final name, and a call that returned
//! (step 3 done) is durable: the same promises as the portable order.
//!
//! This holds for ext4 with a journal (ext3 too, through the same driver; with or without
//! fast commits, which log every inode changed since the last full commit) and XFS. Every
//! other file system gets the portable order: ext4 without a journal (an ext2 layout, or
//! `mkfs -O ^has_journal`), btrfs (whose fsync of a directory logs only that directory),
//! tmpfs, NFS, FUSE and every file system this module does not know.
//!
//! Whether an ext4 has a journal is read from sysfs (`/sys/fs/ext4/{device}/journal_task`
//! says `<none>` without one, `/proc/fs/jbd2/{device}-8` exists with an internal one);
//! when neither can be read, the answer is the portable order. The answer is remembered
//! per mount (its unique id, Linux 6.8) and otherwise asked again at every commit.
//!
//! Where the system refuses `sync_file_range` (`ENOSYS`, `EPERM`: a seccomp filter, a
//! sandbox), the file is fsynced instead ([`refused`]); systemd's `@system-service`, which
//! the programs' units allow, includes it.
//!
//! `sync_file_range` has no safe wrapper in `rustix` or `nix`: [`write_back`] is one of the
//! two audited `unsafe` calls of the workspace (the other is fs/lease.rs).

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use super::Dir;
use super::fstype::{EXT4_MAGIC, XFS_MAGIC};

/// What makes a new file's content durable before it is renamed into place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ContentSync {
    /// `fsync` the file: right on every file system; two journal commits per file with the
    /// directory's fsync after the rename.
    Fsync,
    /// Write the data back and wait (no commit); the directory's fsync after the rename
    /// commits the file's metadata with it (ext4 with a journal, XFS; see the module docs).
    WriteBack,
}

/// `STATX_MNT_ID_UNIQUE` (Linux 6.8): a mount id that is never reused.
const STATX_MNT_ID_UNIQUE: u32 = 0x4000;

/// The answers for mounts this process has written to, by (device, unique mount id).
static BY_MOUNT: Mutex<BTreeMap<(u64, u64), ContentSync>> = Mutex::new(BTreeMap::new());

/// How a new file in `dir` is made durable before its rename.
pub(crate) fn content_sync(dir: &Dir) -> ContentSync {
    let flags = rustix::fs::StatxFlags::from_bits_retain(STATX_MNT_ID_UNIQUE);
    // Without statx (Linux before 4.11) nothing is known: the portable order.
    let Ok(st) = rustix::fs::statx(&dir.fd, "", rustix::fs::AtFlags::EMPTY_PATH, flags) else {
        return ContentSync::Fsync;
    };
    let device = (st.stx_dev_major, st.stx_dev_minor);
    let mount = (st.stx_mask & STATX_MNT_ID_UNIQUE != 0)
        .then(|| (rustix::fs::makedev(device.0, device.1), st.stx_mnt_id));
    let remembered = |key| {
        let map = BY_MOUNT.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&key).copied()
    };
    if let Some(known) = mount.and_then(remembered) {
        return known;
    }
    let answer = ask(dir, device);
    if let Some(key) = mount {
        let mut map = BY_MOUNT.lock().unwrap_or_else(PoisonError::into_inner);
        map.insert(key, answer);
    }
    answer
}

/// Asks the file system of `dir`, on the block device `device` (its type, and sysfs for
/// an ext4's journal).
fn ask(dir: &Dir, device: (u32, u32)) -> ContentSync {
    let Ok(fs) = dir.fs_type() else {
        return ContentSync::Fsync;
    };
    let ordered = match fs.magic {
        XFS_MAGIC => true,
        EXT4_MAGIC => ext4_has_journal(Path::new("/sys"), Path::new("/proc"), device) == Some(true),
        _ => false,
    };
    if ordered {
        ContentSync::WriteBack
    } else {
        ContentSync::Fsync
    }
}

/// Whether the ext4 on the block device `dev` has a journal, as sysfs and procfs under
/// `sys` and `proc` say; `None` when they do not say.
fn ext4_has_journal(sys: &Path, proc: &Path, (major, minor): (u32, u32)) -> Option<bool> {
    // /sys/dev/block/M:m links to the device's directory, whose name is the one ext4 uses.
    let link = std::fs::read_link(sys.join(format!("dev/block/{major}:{minor}"))).ok()?;
    let name = link.file_name()?.to_str()?;
    match std::fs::read_to_string(sys.join("fs/ext4").join(name).join("journal_task")) {
        Ok(text) => Some(text.trim() != "<none>"),
        // Older kernels have no journal_task: jbd2 names an internal journal after the
        // device and the journal's inode (8).
        Err(e) if e.kind() == io::ErrorKind::NotFound => proc
            .join("fs/jbd2")
            .join(format!("{name}-8"))
            .try_exists()
            .ok()
            .filter(|&present| present),
        Err(_) => None,
    }
}

/// Writes `file`'s dirty pages back and waits for them, without a journal commit or a
/// cache flush (`sync_file_range(fd, 0, 0, WAIT_BEFORE | WRITE | WAIT_AFTER)`). Reports a
/// write-back error of the file (`EIO`, `ENOSPC`) as `fsync` would.
///
/// # Errors
/// The call's errno.
#[allow(unsafe_code)]
pub(crate) fn write_back(file: &File) -> io::Result<()> {
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: sync_file_range takes a descriptor and three integers and reads or writes no
    // memory of this process; the descriptor belongs to `file`, borrowed for the call, so
    // it stays open until the call returns.
    let r = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, flags) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether `write_back` failed because the call is not allowed or not there (a seccomp
/// filter, a sandbox such as gVisor), not because the write failed: the caller then
/// fsyncs the file instead.
pub(crate) fn refused(e: &io::Error) -> bool {
    [libc::ENOSYS, libc::EPERM, libc::EINVAL, libc::EOPNOTSUPP]
        .iter()
        .any(|&errno| e.raw_os_error() == Some(errno))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;

    /// A fake /sys and /proc with one device `254:0` named `vda`.
    fn fake(journal_task: Option<&str>, jbd2: bool) -> (tempfile::TempDir, std::path::PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let sys = t.path().join("sys");
        fs::create_dir_all(sys.join("dev/block")).unwrap();
        std::os::unix::fs::symlink(
            "../../devices/pci0000:00/virtio1/block/vda",
            sys.join("dev/block/254:0"),
        )
        .unwrap();
        fs::create_dir_all(sys.join("fs/ext4/vda")).unwrap();
        if let Some(text) = journal_task {
            fs::write(sys.join("fs/ext4/vda/journal_task"), text).unwrap();
        }
        fs::create_dir_all(t.path().join("proc/fs/jbd2")).unwrap();
        if jbd2 {
            fs::create_dir(t.path().join("proc/fs/jbd2/vda-8")).unwrap();
        }
        (t, sys)
    }

    #[test]
    fn sysfs_says_whether_an_ext4_has_a_journal() {
        let at = |t: &tempfile::TempDir, dev| {
            ext4_has_journal(&t.path().join("sys"), &t.path().join("proc"), dev)
        };
        let (t, _) = fake(Some("<none>\n"), false);
        assert_eq!(at(&t, (254, 0)), Some(false));
        let (t, _) = fake(Some("31776\n"), true);
        assert_eq!(at(&t, (254, 0)), Some(true));
        // An older kernel: no journal_task; jbd2's directory tells.
        let (t, _) = fake(None, true);
        assert_eq!(at(&t, (254, 0)), Some(true));
        let (t, _) = fake(None, false);
        assert_eq!(at(&t, (254, 0)), None);
        // A device sysfs does not know.
        assert_eq!(at(&t, (8, 1)), None);
    }

    #[test]
    fn a_memory_file_system_gets_the_portable_order() {
        // /dev/shm is tmpfs wherever it exists; elsewhere the test says nothing.
        let Ok(t) = tempfile::tempdir_in("/dev/shm") else {
            return;
        };
        let d = Dir::open_path(t.path()).unwrap();
        assert_eq!(content_sync(&d), ContentSync::Fsync);
        // Asked again: the remembered answer is the same.
        assert_eq!(content_sync(&d), ContentSync::Fsync);
    }

    #[test]
    fn write_back_of_a_written_file_and_of_a_clean_one() {
        let t = tempfile::tempdir().unwrap();
        let mut f = File::create(t.path().join("f")).unwrap();
        f.write_all(b"data").unwrap();
        write_back(&f).unwrap();
        let ro = File::open(t.path().join("f")).unwrap();
        // A descriptor open only for reading can be written back (nothing is dirty).
        write_back(&ro).unwrap();
    }
}
