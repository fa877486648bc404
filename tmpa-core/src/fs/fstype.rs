//! What kind of file system a directory is on (`fstatfs`), for the promises that depend
//! on it: a file lease sees every opener only on a local file system, and only local file
//! systems are sure to have `RENAME_NOREPLACE`.

use std::fmt;

use super::Dir;
use crate::error::Result;

/// The family of a file system, as far as the programs' promises go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FsFamily {
    /// A disk or memory file system of this kernel (ext4, xfs, btrfs, tmpfs, zfs, ...):
    /// every process that opens a file does it through this kernel.
    Local,
    /// A network or cluster file system (NFS, SMB/CIFS, CephFS, 9p, GFS2, OCFS2, Lustre,
    /// AFS): other hosts may open and write the same files.
    Network,
    /// A FUSE file system (sshfs, bindfs, gcsfuse, s3fs, rclone mount, virtiofs): the
    /// kernel sees only the opens made through this mount; the process behind it, or
    /// another host, writes what this kernel never sees.
    Fuse,
    /// An overlay file system: files of its upper directory can be opened beside it.
    Overlay,
    /// A file system this program does not know: treated as the weakest.
    Unknown,
}

/// A directory's file system: its family and its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FsType {
    /// What the promises depend on.
    pub family: FsFamily,
    /// The file system's usual name (`ext4`, `nfs`, `fuse`), or `unknown`.
    pub name: &'static str,
    /// `f_type` as `fstatfs` gives it (the kernel's magic number).
    pub magic: u64,
}

/// `f_type` of ext2, ext3 and ext4 (one driver).
pub(crate) const EXT4_MAGIC: u64 = 0xEF53;
/// `f_type` of XFS.
pub(crate) const XFS_MAGIC: u64 = 0x5846_5342;

/// Known `f_type` magic numbers (linux/magic.h and the file systems' own headers).
const KNOWN: &[(u64, &str, FsFamily)] = &[
    (EXT4_MAGIC, "ext4", FsFamily::Local),
    (XFS_MAGIC, "xfs", FsFamily::Local),
    (0x9123_683E, "btrfs", FsFamily::Local),
    (0x0102_1994, "tmpfs", FsFamily::Local),
    (0x8584_58F6, "ramfs", FsFamily::Local),
    (0x2FC1_2FC1, "zfs", FsFamily::Local),
    (0xF2F5_2010, "f2fs", FsFamily::Local),
    (0xCA45_1A4E, "bcachefs", FsFamily::Local),
    (0x3153_464A, "jfs", FsFamily::Local),
    (0x5265_4973, "reiserfs", FsFamily::Local),
    (0x3434, "nilfs2", FsFamily::Local),
    (0x4D44, "vfat", FsFamily::Local),
    (0x2011_BAB0, "exfat", FsFamily::Local),
    (0x7366_746E, "ntfs3", FsFamily::Local),
    (0x6969, "nfs", FsFamily::Network),
    (0x517B, "smb", FsFamily::Network),
    (0xFF53_4D42, "cifs", FsFamily::Network),
    (0xFE53_4D42, "smb2", FsFamily::Network),
    (0x00C3_6400, "ceph", FsFamily::Network),
    (0x0102_1997, "9p", FsFamily::Network),
    (0x0116_1970, "gfs2", FsFamily::Network),
    (0x7461_636F, "ocfs2", FsFamily::Network),
    (0x0BD0_0BD0, "lustre", FsFamily::Network),
    (0x5346_414F, "afs", FsFamily::Network),
    (0x6B41_4653, "afs", FsFamily::Network),
    (0x6573_5546, "fuse", FsFamily::Fuse),
    (0x794C_7630, "overlay", FsFamily::Overlay),
];

impl FsType {
    /// The file system of the magic number `magic`.
    pub fn of_magic(magic: u64) -> FsType {
        let (name, family) = KNOWN
            .iter()
            .find(|(m, _, _)| *m == magic)
            .map_or(("unknown", FsFamily::Unknown), |(_, n, f)| (*n, *f));
        FsType {
            family,
            name,
            magic,
        }
    }

    /// Whether a file lease granted here proves that no process anywhere has the file open:
    /// only on a local file system, where every opener goes through this kernel.
    pub fn lease_sees_every_opener(self) -> bool {
        self.family == FsFamily::Local
    }

    /// Whether inotify reports every change of a directory here: on a local file system
    /// and an overlay (whose writers go through the overlay, in a container), where every
    /// change passes through this kernel; not on a network or FUSE file system, where
    /// another host, or the process behind the mount, changes what this kernel never sees.
    pub fn inotify_sees_every_change(self) -> bool {
        matches!(self.family, FsFamily::Local | FsFamily::Overlay)
    }
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.family {
            FsFamily::Unknown => write!(f, "unknown (f_type {:#x})", self.magic),
            _ => f.write_str(self.name),
        }
    }
}

impl Dir {
    /// The file system this directory is on (`fstatfs`).
    ///
    /// # Errors
    /// [`crate::Error::Io`] naming the directory.
    pub fn fs_type(&self) -> Result<FsType> {
        let st = rustix::fs::fstatfs(&self.fd).map_err(|e| self.error("statfs", "", e))?;
        #[allow(clippy::unnecessary_cast)] // the field type differs between targets
        let magic = st.f_type as u64;
        Ok(FsType::of_magic(magic))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_families() {
        assert_eq!(FsType::of_magic(0x6969).family, FsFamily::Network);
        assert_eq!(FsType::of_magic(0x6573_5546).to_string(), "fuse");
        assert!(FsType::of_magic(0xEF53).lease_sees_every_opener());
        assert!(!FsType::of_magic(0x6573_5546).lease_sees_every_opener());
        let odd = FsType::of_magic(0x1234);
        assert_eq!(odd.family, FsFamily::Unknown);
        assert_eq!(odd.to_string(), "unknown (f_type 0x1234)");
        assert!(!odd.lease_sees_every_opener());
        assert!(FsType::of_magic(0x794C_7630).inotify_sees_every_change());
        assert!(!FsType::of_magic(0x6969).inotify_sees_every_change());
        assert!(!odd.inotify_sees_every_change());
    }

    #[test]
    fn a_temporary_directory_is_on_a_known_file_system() {
        let t = tempfile::tempdir().unwrap();
        let d = Dir::open_path(t.path()).unwrap();
        let fs = d.fs_type().unwrap();
        assert_ne!(fs.family, FsFamily::Unknown, "{fs}");
    }
}
