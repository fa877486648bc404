//! What a file is and when it last changed, as `fstat` says: [`Stamp`] (identity and
//! last change, compared before anything is deleted), [`Kind`] and [`Meta`].

use std::io;
use std::os::fd::AsFd;

use rustix::fs::FileType;

/// Identity and last change of a file: device, inode, size, and modification and
/// status-change times in nanoseconds. Taken when data is read and compared again
/// immediately before the file is deleted: any rewrite (new inode by rename, or size,
/// mtime or ctime in place) shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Stamp {
    /// Device (`st_dev`).
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Last modification of the content, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Last change of the inode (content, mode, owner, links, rename), nanoseconds since
    /// the epoch; cannot be set by a user.
    pub ctime_ns: i64,
}

impl Stamp {
    pub(crate) fn of(st: &rustix::fs::Stat) -> Stamp {
        let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
        Stamp {
            dev: st.st_dev,
            ino: st.st_ino,
            size: u64::try_from(st.st_size).unwrap_or(0),
            #[allow(clippy::unnecessary_cast)] // the field types differ between targets
            mtime_ns: ns(st.st_mtime as i64, st.st_mtime_nsec as i64),
            #[allow(clippy::unnecessary_cast)]
            ctime_ns: ns(st.st_ctime as i64, st.st_ctime_nsec as i64),
        }
    }

    /// The later of mtime and ctime: the last time anything about the file changed.
    pub fn changed_ns(&self) -> i64 {
        self.mtime_ns.max(self.ctime_ns)
    }

    /// On the same file system (device): what a walk that must not cross into another
    /// mount, or a hard link (which cannot cross one), asks.
    pub fn same_device(&self, other: &Stamp) -> bool {
        self.dev == other.dev
    }

    /// The same inode: device and inode number (what a `rename` over the name changes).
    pub fn same_inode(&self, other: &Stamp) -> bool {
        self.inode() == other.inode()
    }

    /// Device and inode number: the file's identity as a key (of a map of directories,
    /// say), for which [`Stamp::same_inode`] is the comparison.
    pub fn inode(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }

    /// The same inode with the same content as far as the inode tells: device, inode,
    /// size and mtime, but not ctime. A `rename` of the file itself, or the unlink of
    /// another of its links, changes its ctime and nothing else, so this is the
    /// comparison for a file this program just moved (the delete step) or whose name
    /// another file replaced (a compacted file read while the next one is committed);
    /// everywhere else the whole stamp (`==`) is compared, ctime included, which also
    /// shows a content rewrite that restored the mtime (`touch -d`).
    pub fn same_but_ctime(&self, other: &Stamp) -> bool {
        self.same_inode(other) && (self.size, self.mtime_ns) == (other.size, other.mtime_ns)
    }
}

/// What kind of entry a name is, as `fstatat` says without following it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link (never followed).
    Symlink,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A character or block device.
    Device,
    /// Anything else.
    Other,
}

impl Kind {
    pub(super) fn of_type(t: FileType) -> Kind {
        match t {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Directory,
            FileType::Symlink => Kind::Symlink,
            FileType::Fifo => Kind::Fifo,
            FileType::Socket => Kind::Socket,
            FileType::CharacterDevice | FileType::BlockDevice => Kind::Device,
            FileType::Unknown => Kind::Other,
        }
    }

    /// A few words for reports ("a symlink").
    pub fn words(self) -> &'static str {
        match self {
            Kind::File => "a regular file",
            Kind::Directory => "a directory",
            Kind::Symlink => "a symlink",
            Kind::Fifo => "a fifo",
            Kind::Socket => "a socket",
            Kind::Device => "a device",
            Kind::Other => "an unknown kind of file",
        }
    }
}

/// What `fstatat` says of one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Identity, size and times.
    pub stamp: Stamp,
    /// Kind of entry.
    pub kind: Kind,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Hard links to it (`st_nlink`).
    pub links: u64,
}

impl Meta {
    pub(super) fn of(st: &rustix::fs::Stat) -> Meta {
        Meta {
            stamp: Stamp::of(st),
            kind: Kind::of_type(FileType::from_raw_mode(st.st_mode)),
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            #[allow(clippy::unnecessary_cast)] // the field type differs between targets
            links: st.st_nlink as u64,
        }
    }

    /// The metadata of an open file.
    ///
    /// # Errors
    /// The OS error.
    pub fn of_fd(fd: impl AsFd) -> io::Result<Meta> {
        Ok(Meta::of(&rustix::fs::fstat(fd)?))
    }
}
