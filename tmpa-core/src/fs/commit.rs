//! Group commit of directory entries: the directory fsync that makes a rename durable,
//! shared by every writer of the process that renamed into the same directory before it
//! started (PostgreSQL's `commit_delay` and RocksDB's write groups, without the delay).
//!
//! A writer that has renamed its file into place joins the directory's *open batch*. If
//! no fsync of that directory is running, it leads: it closes the batch (later writers
//! join the next one), fsyncs the directory once, and hands the outcome to every member.
//! If one is running, it waits; when that fsync ends, one waiting member leads the next
//! batch. A lone writer never waits for anybody: it joins an empty batch and leads it at
//! once.
//!
//! # Guarantees
//! [`sync_dir`] returns `Ok` only after an fsync of the directory that *started after*
//! the caller joined, and so after its rename, has returned `Ok`: exactly what a private
//! fsync would have promised. An fsync that fails fails every member of its batch (with
//! its errno), since none can know its entry durable.
//!
//! # Not guaranteed
//! Sharing across processes: each process has its own batches. (The file system's
//! journal already merges the commits that several processes ask for at the same time;
//! docs/PERFORMANCE.md "Group commit" has what was measured.)
//!
//! After a `fork`, the child starts with batches of its own: a batch its parent was
//! syncing at that instant (whose leader did not cross into the child) is never waited
//! for. Only a fork at the very instant another thread holds the registry's lock, for the
//! few instructions of a map look-up, could leave the child's registry locked.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, Weak};

use super::{Dir, Meta};
use crate::error::Result;

/// Directories remembered at once before dead entries are swept: a backend writes into
/// a few day directories at a time, so this is never reached in steady use.
const REGISTRY_SWEEP_LEN: usize = 64;

/// The outcome of one directory fsync, as every member of its batch gets it.
#[derive(Clone, Debug)]
enum Outcome {
    Synced,
    /// The OS error (its errno when it has one, so that Python sees the same `OSError`).
    Failed {
        errno: Option<i32>,
        kind: io::ErrorKind,
        text: String,
    },
}

impl Outcome {
    fn of(r: &io::Result<()>) -> Outcome {
        match r {
            Ok(()) => Outcome::Synced,
            Err(e) => Outcome::Failed {
                errno: e.raw_os_error(),
                kind: e.kind(),
                text: e.to_string(),
            },
        }
    }

    fn into_result(self) -> io::Result<()> {
        match self {
            Outcome::Synced => Ok(()),
            Outcome::Failed {
                errno: Some(errno), ..
            } => Err(io::Error::from_raw_os_error(errno)),
            Outcome::Failed { kind, text, .. } => Err(io::Error::new(kind, text)),
        }
    }
}

/// The writers covered by one fsync of the directory.
#[derive(Debug, Default)]
struct Batch {
    outcome: OnceLock<Outcome>,
}

#[derive(Debug)]
struct State {
    /// The batch new members join; closed (replaced) when its leader starts the fsync.
    open: Arc<Batch>,
    /// Whether an fsync of this directory is running (its batch is closed).
    syncing: bool,
}

/// The batches of one directory (device and inode) in this process.
#[derive(Debug)]
struct Committer {
    pid: u32,
    state: Mutex<State>,
    ended: Condvar,
}

impl Committer {
    fn new(pid: u32) -> Committer {
        Committer {
            pid,
            state: Mutex::new(State {
                open: Arc::new(Batch::default()),
                syncing: false,
            }),
            ended: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing is left half-done under this lock: a panic elsewhere changes nothing.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Joins the open batch and returns once a `sync` that started after this call has
    /// ended, leading it (calling `sync`) when nobody else is syncing.
    fn commit(&self, sync: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        let mut st = self.lock();
        let mine = Arc::clone(&st.open);
        loop {
            if let Some(outcome) = mine.outcome.get() {
                return outcome.clone().into_result();
            }
            if !st.syncing {
                // A batch is closed only by a leader that sets `syncing` until it has
                // published the outcome: an unfinished batch with nobody syncing is
                // still the open one, so this caller's.
                debug_assert!(Arc::ptr_eq(&st.open, &mine));
                st.open = Arc::new(Batch::default());
                st.syncing = true;
                drop(st);
                let result = sync();
                let _ = mine.outcome.set(Outcome::of(&result));
                let mut st = self.lock();
                st.syncing = false;
                drop(st);
                self.ended.notify_all();
                return result;
            }
            st = self.ended.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

type Key = (u64, u64);

/// This process's committers, by directory.
#[derive(Debug, Default)]
struct Registry {
    pid: u32,
    dirs: HashMap<Key, Weak<Committer>>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

/// The committer of the directory `key` for this process.
fn committer(key: Key) -> Arc<Committer> {
    let pid = rustix::process::getpid()
        .as_raw_nonzero()
        .get()
        .unsigned_abs();
    let mut reg = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    let reg = match &mut *reg {
        Some(r) if r.pid == pid => r,
        // First use, or a forked child: nothing of the parent's batches is ours.
        other => other.insert(Registry {
            pid,
            dirs: HashMap::new(),
        }),
    };
    if let Some(c) = reg.dirs.get(&key).and_then(Weak::upgrade)
        && c.pid == pid
    {
        return c;
    }
    if reg.dirs.len() >= REGISTRY_SWEEP_LEN {
        reg.dirs.retain(|_, w| w.strong_count() > 0);
    }
    let c = Arc::new(Committer::new(pid));
    reg.dirs.insert(key, Arc::downgrade(&c));
    c
}

/// Makes every entry the caller changed in `dir` before this call durable, sharing the
/// directory fsync with the other writers of this process (see the module docs).
///
/// # Errors
/// [`crate::Error::Io`] naming the directory when it cannot be stat'ed or when the fsync
/// that covers this call failed.
pub(crate) fn sync_dir(dir: &Dir) -> Result<()> {
    let meta = Meta::of_fd(&dir.fd).map_err(|e| dir.error("stat", "", e))?;
    // Every member holds its directory open while it waits, so two descriptors with the
    // same device and inode are the same directory for the whole commit.
    let key = meta.stamp.inode();
    committer(key)
        .commit(|| rustix::fs::fsync(&dir.fd).map_err(io::Error::from))
        .map_err(|e| dir.error("fsync directory", "", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn a_lone_writer_leads_its_own_batch() {
        let t = tempfile::tempdir().unwrap();
        let dir = Dir::open_path(t.path()).unwrap();
        for _ in 0..3 {
            sync_dir(&dir).unwrap();
        }
        let key = {
            let m = Meta::of_fd(&dir.fd).unwrap();
            m.stamp.inode()
        };
        let c = committer(key);
        let st = c.lock();
        assert!(!st.syncing);
        assert!(st.open.outcome.get().is_none());
    }

    #[test]
    fn many_threads_share_commits_and_all_return() {
        let t = tempfile::tempdir().unwrap();
        let dir = Dir::open_path(t.path()).unwrap();
        std::thread::scope(|s| {
            for w in 0..8 {
                let dir = &dir;
                s.spawn(move || {
                    let mine = dir.try_clone().unwrap();
                    for i in 0..20 {
                        let name = format!("f{w}-{i}");
                        super::super::write_in(&mine, OsStr::new(&name), b"x", true).unwrap();
                    }
                });
            }
        });
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 160);
    }

    /// The protocol itself, with a sync that records which "renames" (a counter taken
    /// before joining) had happened when it started: every caller returns only after a
    /// sync that started after its own rename ended, and syncs are shared.
    #[test]
    fn each_caller_is_covered_by_a_sync_that_started_after_it() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let c = Committer::new(0);
        let renamed = AtomicU64::new(0);
        // The highest rename covered by a sync that has ended.
        let durable = AtomicU64::new(0);
        let syncs = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..50 {
                        let mine = renamed.fetch_add(1, Ordering::SeqCst) + 1;
                        c.commit(|| {
                            let covers = renamed.load(Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_micros(200));
                            syncs.fetch_add(1, Ordering::SeqCst);
                            durable.fetch_max(covers, Ordering::SeqCst);
                            Ok(())
                        })
                        .unwrap();
                        assert!(durable.load(Ordering::SeqCst) >= mine, "returned uncovered");
                    }
                });
            }
        });
        let n = syncs.load(Ordering::SeqCst);
        assert!(n < 400, "{n} syncs for 400 commits: nothing shared");
    }

    /// A failed sync fails every member of its batch; the next batch tries again.
    #[test]
    fn a_failed_sync_fails_its_whole_batch() {
        let c = Committer::new(0);
        let e = c
            .commit(|| Err(io::Error::from_raw_os_error(5)))
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(5));
        c.commit(|| Ok(())).unwrap();
    }

    #[test]
    fn a_failed_fsync_fails_its_members_with_its_errno() {
        let e = Outcome::of(&Err(io::Error::from_raw_os_error(5))).into_result();
        assert_eq!(e.unwrap_err().raw_os_error(), Some(5));
        assert!(Outcome::of(&Ok(())).into_result().is_ok());
    }
}
