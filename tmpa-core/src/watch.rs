//! The process's one inotify instance, shared by the caches that learn from the kernel
//! what changed in a directory instead of looking at every entry again: the incremental
//! summaries (`incremental/`, a watch per day directory) and the notification views
//! (`notify_view.rs`, a watch per `inbox/` and per `ack/`).
//!
//! A [`Watch`] is one directory's watch. Its changes are the names of the entries created,
//! deleted, renamed in or out, written or whose attributes changed, as far as the
//! watch's own filter keeps them, or that it `lost` some (the queue overflowed, too many
//! names piled up, the directory itself was moved or deleted) or is `gone` (the kernel
//! removed it, or it belongs to another process's instance). Reading the queue never
//! blocks: a call on a directory where nothing changed costs one `read` that finds the
//! queue empty.
//!
//! # Guarantees
//! - The kernel queues an event before the call that changed the directory returns
//!   (`rename`, `unlink`, `openat(O_CREAT)` ...), so a [`Watch::take`] that begins after
//!   such a call returned, in any thread or process, sees it, unless it reports `lost`.
//! - Every queued event goes to the watch it names and nowhere else: one directory has
//!   at most one [`Watch`] in the process (a second [`Watch::add`] of a watched directory
//!   is refused, and that caller polls), so no consumer takes another's events.
//!
//! # Not guaranteed
//! - A change the kernel does not report: another host's on a network file system
//!   ([`crate::fs::FsType::inotify_sees_every_change`] says where a watch is added at
//!   all), a write through `mmap` or through a hard link from another directory. The
//!   consumers also check everything every [`RESYNC_SECS`].
//! - A forked child inherits nothing: its first call makes its own instance, and every
//!   watch made before the fork is `gone` there.
//!
//! Locks: the registry's lock is the innermost; it is held only for map look-ups and the
//! queue's `read`, and nothing is locked while it is held.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rustix::fs::inotify::{self, ReadFlags, WatchFlags};

use crate::fs::Dir;

/// `TMPA_SUMMARY_WATCH=0` in the environment: nothing is watched, every cache polls (a
/// process that must not use an inotify instance; the tests of the polled mode). Read at
/// every [`Watch::add`].
pub(crate) const WATCH_ENV: &str = "TMPA_SUMMARY_WATCH";
/// A watched directory is also checked whole this often (see the module docs).
pub(crate) const RESYNC_SECS: u64 = 60;
/// Names remembered for one watch between two takes; beyond, the watch reports `lost`.
const PENDING_NAMES_MAX: usize = 1 << 16;
/// Bytes read from the inotify queue at a time.
const QUEUE_BUF_BYTES: usize = 64 << 10;

/// What changed in a watched directory since the last [`Watch::take`].
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// The names the watch's filter kept, each once, in no order.
    pub(crate) names: HashSet<OsString>,
    /// Some changes were not recorded (the queue overflowed, more than
    /// [`PENDING_NAMES_MAX`] names, or the directory itself was moved or deleted): the
    /// consumer looks at the whole directory.
    pub(crate) lost: bool,
    /// The watch no longer exists (the kernel removed it: the directory is deleted or
    /// its file system unmounted; or it was made by the process before a fork): the
    /// consumer looks at the whole directory and watches it anew.
    pub(crate) gone: bool,
}

impl Changes {
    /// Whether nothing at all changed.
    pub(crate) fn is_empty(&self) -> bool {
        self.names.is_empty() && !self.lost && !self.gone
    }
}

/// Which names of a directory a watch records (the others are dropped as they are read).
pub(crate) type NameFilter = fn(&OsStr) -> bool;

#[derive(Debug)]
struct Pending {
    changes: Changes,
    wanted: NameFilter,
}

#[derive(Debug)]
struct Registry {
    pid: u32,
    /// This instance among those the process made (a new one after a fork).
    instance: u64,
    inotify: Option<OwnedFd>,
    /// Whether creating the inotify instance failed (not tried again in this process).
    inotify_failed: bool,
    pending: HashMap<i32, Pending>,
    /// Queue overflows seen: every watch reports `lost` once after one.
    overflows: u64,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);
/// Numbers the registries this process makes.
static INSTANCES: AtomicU64 = AtomicU64::new(0);

fn pid() -> u32 {
    rustix::process::getpid()
        .as_raw_nonzero()
        .get()
        .unsigned_abs()
}

/// This process's registry, locked (a new one after a fork: the inherited descriptor is
/// closed, and every watch made before is `gone`).
fn registry() -> MutexGuard<'static, Option<Registry>> {
    let mut guard = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    let pid = pid();
    if guard.as_ref().is_none_or(|r| r.pid != pid) {
        *guard = Some(Registry {
            pid,
            instance: INSTANCES.fetch_add(1, Ordering::Relaxed) + 1,
            inotify: None,
            inotify_failed: false,
            pending: HashMap::new(),
            overflows: 0,
        });
    }
    guard
}

/// A value kept per process: a forked child starts from `T::default()` (it must not use
/// its parent's locks, which a thread that does not exist in the child may hold, nor its
/// watches).
#[derive(Debug)]
pub(crate) struct PerProcess<T> {
    inner: Mutex<Option<(u32, T)>>,
}

impl<T: Default> PerProcess<T> {
    pub(crate) const fn new() -> PerProcess<T> {
        PerProcess {
            inner: Mutex::new(None),
        }
    }

    /// Runs `f` on this process's value, under its lock.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let pid = pid();
        if guard.as_ref().is_none_or(|(p, _)| *p != pid) {
            *guard = Some((pid, T::default()));
        }
        f(&mut guard.as_mut().expect("set above").1)
    }
}

/// Whether a directory may be watched: [`WATCH_ENV`] does not say no, and its file system
/// reports every change to this kernel's inotify
/// ([`crate::fs::FsType::inotify_sees_every_change`]). Costs an `fstatfs`.
pub(crate) fn watchable(dir: &Dir) -> bool {
    std::env::var_os(WATCH_ENV).is_none_or(|v| v != "0")
        && dir.fs_type().is_ok_and(|t| t.inotify_sees_every_change())
}

/// One mask for every watch: adding a watch of a watched directory replaces its mask,
/// which must then still say what its consumer needs.
const MASK: WatchFlags = WatchFlags::CREATE
    .union(WatchFlags::MOVED_TO)
    .union(WatchFlags::MOVED_FROM)
    .union(WatchFlags::DELETE)
    .union(WatchFlags::MODIFY)
    .union(WatchFlags::CLOSE_WRITE)
    .union(WatchFlags::ATTRIB)
    .union(WatchFlags::DELETE_SELF)
    .union(WatchFlags::MOVE_SELF)
    .union(WatchFlags::ONLYDIR)
    .union(WatchFlags::DONT_FOLLOW)
    .union(WatchFlags::EXCL_UNLINK);

/// Whether `path` names the directory of device and inode `key` (not following a
/// symlink at its end).
fn names(path: &Path, key: (u64, u64)) -> bool {
    rustix::fs::statat(rustix::fs::CWD, path, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| (st.st_dev, st.st_ino) == key)
}

/// One directory's inotify watch in this process; removed when dropped.
#[derive(Debug)]
pub(crate) struct Watch {
    instance: u64,
    wd: i32,
    /// The registry's overflow count when this watch last took its changes.
    overflows: u64,
    /// The path it was added by, and the directory's device and inode: what a watch
    /// renewed after an overflow must still name.
    path: PathBuf,
    key: (u64, u64),
}

impl Watch {
    /// Watches the directory `dir`, which `path` names (inotify takes a path, not a
    /// descriptor), recording the names `wanted` keeps. `None` when the directory is not
    /// to be watched, and the caller polls: not [`watchable`], `path` does not name `dir` both
    /// before and after the watch is added, the directory is watched already in this
    /// process, or inotify refuses (no instance, no watch left).
    pub(crate) fn add(dir: &Dir, path: &Path, wanted: NameFilter) -> Option<Watch> {
        if !watchable(dir) {
            return None;
        }
        let meta = dir.meta().ok()?;
        let key = meta.stamp.inode();
        if !names(path, key) {
            return None;
        }
        let mut guard = registry();
        let reg = guard.as_mut().expect("made by registry()");
        if reg.inotify.is_none() && !reg.inotify_failed {
            match inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK) {
                Ok(fd) => reg.inotify = Some(fd),
                Err(_) => reg.inotify_failed = true,
            }
        }
        let fd = reg.inotify.as_ref()?;
        let wd = inotify::add_watch(fd, path, MASK).ok()?;
        if reg.pending.contains_key(&wd) {
            // Watched already (the kernel gives the same descriptor for the same inode):
            // its events belong to the first consumer.
            return None;
        }
        if !names(path, key) {
            let _ = inotify::remove_watch(fd, wd);
            return None;
        }
        reg.pending.insert(
            wd,
            Pending {
                changes: Changes::default(),
                wanted,
            },
        );
        Some(Watch {
            instance: reg.instance,
            wd,
            overflows: reg.overflows,
            path: path.to_path_buf(),
            key,
        })
    }

    /// Reads what the kernel queued, for every watch of the process, and takes what
    /// concerns this one.
    pub(crate) fn take(&mut self) -> Changes {
        let mut guard = registry();
        let reg = guard.as_mut().expect("made by registry()");
        let gone = Changes {
            gone: true,
            ..Changes::default()
        };
        if reg.instance != self.instance {
            return gone;
        }
        drain(reg);
        let Some(p) = reg.pending.get_mut(&self.wd) else {
            return gone;
        };
        let mut changes = std::mem::take(&mut p.changes);
        if reg.overflows != self.overflows {
            self.overflows = reg.overflows;
            changes.lost = true;
            if !self.renew(reg) {
                if reg.pending.remove(&self.wd).is_some()
                    && let Some(fd) = &reg.inotify
                {
                    let _ = inotify::remove_watch(fd, self.wd);
                }
                return gone;
            }
        }
        changes
    }

    /// After an overflow: makes sure the kernel still has this watch, on the directory
    /// it was added for. The kernel's notice that it removed a watch (the directory
    /// deleted) may have been among the events lost, and a directory made since may have
    /// the same inode number: a watch believed alive would then report nothing, ever.
    /// Asking to watch the same path again (`IN_MASK_ADD`, the same mask) answers: the
    /// same descriptor when it is alive, a new one when it died (adopted, so the watch
    /// goes on), and the path must name the same directory before and after.
    fn renew(&mut self, reg: &mut Registry) -> bool {
        let Some(fd) = &reg.inotify else {
            return false;
        };
        if !names(&self.path, self.key) {
            return false;
        }
        let Ok(wd) = inotify::add_watch(fd, &self.path, MASK | WatchFlags::MASK_ADD) else {
            return false;
        };
        if wd != self.wd {
            if reg.pending.contains_key(&wd) {
                return false; // another consumer's: not taken over
            }
            let Some(old) = reg.pending.remove(&self.wd) else {
                let _ = inotify::remove_watch(fd, wd);
                return false;
            };
            reg.pending.insert(wd, old);
            self.wd = wd;
        }
        names(&self.path, self.key)
    }

    /// Gives back changes taken but not acted on: the next [`Watch::take`] has them again.
    pub(crate) fn put_back(&self, c: Changes) {
        let mut guard = registry();
        let reg = guard.as_mut().expect("made by registry()");
        if reg.instance != self.instance {
            return;
        }
        if let Some(p) = reg.pending.get_mut(&self.wd) {
            p.changes.names.extend(c.names);
            p.changes.lost |= c.lost;
            p.changes.gone |= c.gone;
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut guard = registry();
        let reg = guard.as_mut().expect("made by registry()");
        if reg.instance != self.instance {
            return;
        }
        // Still there: the kernel has not removed it (its IN_IGNORED not read yet, or
        // never sent).
        if reg.pending.remove(&self.wd).is_some()
            && let Some(fd) = &reg.inotify
        {
            let _ = inotify::remove_watch(fd, self.wd);
        }
    }
}

/// Moves every queued inotify event into the pending changes of its watch.
fn drain(reg: &mut Registry) {
    let Some(fd) = &reg.inotify else {
        return;
    };
    let mut buf = vec![MaybeUninit::<u8>::uninit(); QUEUE_BUF_BYTES];
    let mut reader = inotify::Reader::new(fd, &mut buf);
    // Until it is empty (EAGAIN), or anything else: what was not read stays queued.
    while let Ok(event) = reader.next() {
        let flags = event.events();
        if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
            reg.overflows += 1;
            continue;
        }
        if flags.contains(ReadFlags::IGNORED) {
            // The kernel removed the watch (directory deleted, file system unmounted):
            // its consumer reads everything again and watches anew.
            reg.pending.remove(&event.wd());
            continue;
        }
        let Some(p) = reg.pending.get_mut(&event.wd()) else {
            continue;
        };
        let c = &mut p.changes;
        if flags.intersects(ReadFlags::DELETE_SELF | ReadFlags::MOVE_SELF | ReadFlags::UNMOUNT) {
            c.lost = true;
            continue;
        }
        let Some(name) = event.file_name() else {
            continue;
        };
        let name = OsStr::from_bytes(name.to_bytes());
        if c.lost || !(p.wanted)(name) {
            continue;
        }
        if c.names.len() >= PENDING_NAMES_MAX {
            c.lost = true;
            c.names.clear();
        } else {
            c.names.insert(name.to_os_string());
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "tests build and break trees by path"
)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn all(_: &OsStr) -> bool {
        true
    }

    fn json_only(name: &OsStr) -> bool {
        name.as_bytes().ends_with(b".json")
    }

    fn watched(path: &Path, wanted: NameFilter) -> (Dir, Watch) {
        let dir = Dir::open_path(path).unwrap();
        let w = Watch::add(&dir, path, wanted).expect("a temporary directory is watchable");
        (dir, w)
    }

    /// A watch records the names its filter keeps, each once, and nothing when nothing
    /// changed; a second watch of the same directory is refused; a dropped one can be
    /// made again.
    #[test]
    fn names_each_once_and_one_watch_per_directory() {
        let t = tempfile::tempdir().unwrap();
        let (dir, mut w) = watched(t.path(), json_only);
        assert!(w.take().is_empty());
        std::fs::write(t.path().join("a.json.tmp.1"), b"1").unwrap();
        std::fs::rename(t.path().join("a.json.tmp.1"), t.path().join("a.json")).unwrap();
        std::fs::write(t.path().join("b.json"), b"1").unwrap();
        std::fs::remove_file(t.path().join("b.json")).unwrap();
        let c = w.take();
        let mut names: Vec<_> = c.names.into_iter().collect();
        names.sort();
        assert_eq!(names, ["a.json", "b.json"]);
        assert!(!c.lost && !c.gone);
        assert!(w.take().is_empty());
        assert!(Watch::add(&dir, t.path(), all).is_none(), "watched twice");
        drop(w);
        assert!(Watch::add(&dir, t.path(), all).is_some());
    }

    /// More events than the kernel's queue holds: the watch reports `lost` once, then
    /// works on.
    #[test]
    fn an_overflow_is_lost_once() {
        let t = tempfile::tempdir().unwrap();
        let (_dir, mut w) = watched(t.path(), json_only);
        let files = [t.path().join("x.tmp"), t.path().join("y.tmp")];
        // Other tests of this process read the same queue: it may take a few floods.
        let lost = (0..10).any(|_| {
            flood(&files);
            w.take().lost
        });
        assert!(lost);
        std::fs::write(t.path().join("c.json"), b"1").unwrap();
        let c = w.take();
        assert!(!c.lost && c.names.contains(OsStr::new("c.json")), "{c:?}");
    }

    /// Changes the attributes of `files` in turns until more events than the queue holds
    /// are queued (the kernel merges only an event equal to the last one queued).
    fn flood(files: &[PathBuf; 2]) {
        let max: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(16_384);
        for f in files {
            std::fs::write(f, b"").unwrap();
        }
        for i in 0..max + 64 {
            let mode = std::fs::Permissions::from_mode(if i % 4 < 2 { 0o644 } else { 0o600 });
            std::fs::set_permissions(&files[i % 2], mode).unwrap();
        }
    }

    /// The kernel removed a watch while the queue was full, so that its notice was lost
    /// (as when the directory is deleted and one made with the same inode number): the
    /// take after the overflow renews it, and the changes after that are seen.
    #[test]
    fn a_watch_removed_unseen_is_renewed_after_an_overflow() {
        let t = tempfile::tempdir().unwrap();
        let files = [t.path().join("x.tmp"), t.path().join("y.tmp")];
        // Other tests of this process read the same queue: it may take a few floods.
        let renewed = (0..10).find_map(|_| {
            let (_dir, mut w) = watched(t.path(), all);
            flood(&files);
            {
                let mut guard = registry();
                let reg = guard.as_mut().unwrap();
                inotify::remove_watch(reg.inotify.as_ref().unwrap(), w.wd).unwrap();
            }
            let c = w.take();
            (c.lost && !c.gone).then_some(w)
        });
        let mut w = renewed.expect("an overflow in ten floods");
        std::fs::write(t.path().join("after"), b"1").unwrap();
        let c = w.take();
        assert!(c.names.contains(OsStr::new("after")), "{c:?}");
    }

    /// The directory deleted: `lost` (its own deletion), then `gone` once the kernel has
    /// removed the watch. (Only once nothing holds it open: a descriptor keeps the inode,
    /// and its deletion unreported, until it is closed. The caches open their directories
    /// anew at each call and compare device and inode for that reason.)
    #[test]
    fn a_deleted_directory_is_gone() {
        let t = tempfile::tempdir().unwrap();
        let sub = t.path().join("d");
        std::fs::create_dir(&sub).unwrap();
        let (dir, mut w) = watched(&sub, all);
        std::fs::remove_dir(&sub).unwrap();
        assert!(w.take().is_empty(), "held open: not yet deleted");
        drop(dir);
        let c = w.take();
        assert!(c.lost || c.gone, "{c:?}");
        assert!(w.take().gone);
    }

    /// `put_back` gives the next take what was taken.
    #[test]
    fn put_back_is_taken_again() {
        let t = tempfile::tempdir().unwrap();
        let (_dir, mut w) = watched(t.path(), all);
        std::fs::write(t.path().join("a"), b"1").unwrap();
        let c = w.take();
        assert!(!c.is_empty());
        w.put_back(c);
        assert!(w.take().names.contains(OsStr::new("a")));
    }
}
