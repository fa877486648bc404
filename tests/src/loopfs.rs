//! File system images on loop devices for the power-cut tests: ext4 with and without a
//! journal, and XFS, made fresh, mounted at a fresh directory, and shut down without
//! flushing their journal (`FS_IOC_SHUTDOWN` through `xfs_io -x -c shutdown`): mounted
//! again, they hold what was durable at the cut, as after a power cut.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A file system to make in an image.
#[derive(Clone, Copy, Debug)]
pub enum Layout {
    /// `mkfs.ext4` as it comes: with a journal.
    Ext4,
    /// ext4 without a journal (`-O ^has_journal`).
    Ext4NoJournal,
    /// ext4 with fast commits (`-O fast_commit`): an fsync may log only what changed
    /// since the last full commit, in its own area.
    Ext4FastCommit,
    /// `mkfs.xfs` (its log is always there).
    Xfs,
}

impl Layout {
    /// The command that makes this file system in the image `img`.
    pub fn mkfs(self, img: &Path) -> Command {
        let (program, args): (&str, &[&str]) = match self {
            Layout::Ext4 => ("mkfs.ext4", &["-q", "-F"]),
            Layout::Ext4NoJournal => ("mkfs.ext4", &["-q", "-F", "-O", "^has_journal"]),
            Layout::Ext4FastCommit => ("mkfs.ext4", &["-q", "-F", "-O", "fast_commit"]),
            Layout::Xfs => ("mkfs.xfs", &["-q", "-f"]),
        };
        let mut c = Command::new(program);
        c.args(args).arg(img);
        c
    }

    /// The image's size: XFS wants at least 300 MiB (sparse: only what is written is on
    /// the disk).
    pub fn bytes(self) -> u64 {
        match self {
            Layout::Xfs => 320 << 20,
            _ => 64 << 20,
        }
    }

    /// Whether the library makes a new file durable with one journal commit here.
    pub fn one_commit(self) -> bool {
        !matches!(self, Layout::Ext4NoJournal)
    }
}

/// A file system image on a loop device, mounted at a fresh directory; unmounted on drop.
///
/// Each power cut goes on with a copy of the image (`disk-{cuts}.img`): another test that
/// made a mount namespace meanwhile (`unshare --mount`) holds a copy of this mount, which
/// keeps the shut-down file system alive after our `umount`, and mounting the same image
/// again would reuse its loop device and get that dead file system back (`EIO`).
pub struct LoopFs {
    dir: tempfile::TempDir,
    cuts: std::cell::Cell<u32>,
    layout: Layout,
}

impl LoopFs {
    /// Makes the file system in a sparse image and mounts it; `None` when not root, or
    /// when mkfs or the mount fails (no loop device, no mkfs.xfs).
    pub fn new(layout: Layout) -> Option<LoopFs> {
        if !crate::is_root() {
            return None;
        }
        let dir = tempfile::tempdir().ok()?;
        let img = dir.path().join("disk-0.img");
        fs::File::create(&img).ok()?.set_len(layout.bytes()).ok()?;
        if !layout.mkfs(&img).output().is_ok_and(|o| o.status.success()) {
            return None;
        }
        let fs = LoopFs {
            dir,
            cuts: std::cell::Cell::new(0),
            layout,
        };
        fs::create_dir(fs.mnt()).ok()?;
        fs.mount().then_some(fs)
    }

    /// Where it is mounted.
    pub fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    fn image(&self) -> PathBuf {
        self.dir
            .path()
            .join(format!("disk-{}.img", self.cuts.get()))
    }

    fn mount(&self) -> bool {
        // XFS refuses a second file system with the same UUID, and the copy after a cut
        // has its original's, which a mount namespace may keep alive (above).
        let options = match self.layout {
            Layout::Xfs => "loop,nouuid",
            Layout::Ext4 | Layout::Ext4NoJournal | Layout::Ext4FastCommit => "loop",
        };
        Command::new("mount")
            .args(["-o", options])
            .arg(self.image())
            .arg(self.mnt())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn umount(&self) {
        let s = Command::new("umount").arg(self.mnt()).status();
        assert!(s.is_ok_and(|s| s.success()), "umount");
    }

    /// Cuts the power: the file system stops, its journal not flushed; mounted again, it
    /// holds what was durable.
    pub fn power_cut(&self) {
        let s = Command::new("xfs_io")
            .args(["-x", "-c", "shutdown"])
            .arg(self.mnt())
            .status();
        assert!(s.is_ok_and(|s| s.success()), "xfs_io shutdown");
        self.umount();
        // The image holds what was durable at the cut: boot a copy of it.
        let cut = self.image();
        self.cuts.set(self.cuts.get() + 1);
        let copied = Command::new("cp")
            .arg("--sparse=always")
            .arg(&cut)
            .arg(self.image())
            .status();
        assert!(copied.is_ok_and(|s| s.success()), "copy the image");
        let _ = fs::remove_file(&cut);
        assert!(self.mount(), "mount after the cut");
    }
}

/// A [`LoopFs`] of `layout` where strace can inject faults: what a power-cut test needs
/// (see [`crate::prerequisite`] for what happens when it is missing).
pub fn injectable(layout: Layout) -> Option<LoopFs> {
    crate::prerequisite(crate::strace_works(), "strace cannot inject here")?;
    crate::prerequisite(LoopFs::new(layout), "root, mkfs and a loop device")
}

/// The program `program` (a workspace binary), killed with SIGKILL at the `n`th call of
/// `call` when `kill_at` is given (`strace -e inject=CALL:signal=SIGKILL:when=N`: the
/// call is not made); without it, the program alone.
pub fn killed_at(program: &str, kill_at: Option<(&str, usize)>) -> Command {
    match kill_at {
        Some((call, n)) => {
            crate::strace_inject(&format!("{call}:signal=SIGKILL:when={n}"), program)
        }
        None => crate::bin(program),
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.mnt()).status();
    }
}
