//! A real FUSE file system for the tests: bindfs (Debian's package `bindfs`), which
//! mounts a view of a directory through a FUSE daemon, as sshfs, gcsfuse or rclone do.
//! Like NFS and SMB it answers `renameat2(RENAME_NOREPLACE)` with `EINVAL`, and its
//! kernel side grants file leases that see only the opens made through the mount.

use std::path::Path;
use std::process::Command;

/// A bindfs mount of a directory at a fresh mount point, unmounted on drop.
pub struct Bindfs {
    mount: tempfile::TempDir,
}

impl Bindfs {
    /// Mounts a view of `backing` (which stays the real directory: a write there is a
    /// write "underneath the mount"). `None` when root, `/dev/fuse` or bindfs is missing
    /// and [`crate::ALLOW_SKIP`] is set; otherwise that is a failure naming what is
    /// missing (tests/check.sh installs bindfs).
    ///
    /// # Panics
    /// When bindfs is available but the mount fails.
    pub fn mount(backing: &Path) -> Option<Bindfs> {
        crate::prerequisite(
            crate::is_root() && Path::new("/dev/fuse").exists(),
            "root and /dev/fuse, to mount bindfs",
        )?;
        crate::prerequisite(
            Command::new("bindfs").arg("--version").output().is_ok(),
            "bindfs (apt-get install bindfs)",
        )?;
        let mount = tempfile::tempdir().expect("mount point");
        crate::run_ok(Command::new("bindfs").arg(backing).arg(mount.path()));
        let on = Bindfs { mount };
        let fs = tmpa_core::maintenance::Dir::open_path(on.path())
            .and_then(|d| d.fs_type())
            .expect("statfs of the mount");
        assert_eq!(fs.to_string(), "fuse", "bindfs mounted something else");
        Some(on)
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.mount.path()
    }
}

impl Drop for Bindfs {
    fn drop(&mut self) {
        // Lazily: a test that failed may still have a process in the mount.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.mount.path())
            .status();
    }
}
