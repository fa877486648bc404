//! Incremental summaries: each process keeps what it knows of the days it summarised
//! (every loose file's contribution, the compacted ids) and, between two calls, learns
//! what changed in the day directory from the kernel (inotify) instead of looking at every
//! file again. [`Root::summary`] is built on it.
//!
//! # How a call knows what changed
//! - **Watched** (a local file system, inotify available): the day directory has an
//!   inotify watch, added *before* the first full read, so nothing that changes after
//!   that read goes unseen. The kernel queues an event for every entry created, renamed in
//!   or out, deleted, written (`IN_MODIFY`, `IN_CLOSE_WRITE`) or whose attributes change,
//!   synchronously, before the call that changed it returns. A summary call reads the
//!   queue (one `read` that finds it empty when nothing changed) and re-reads exactly the
//!   files it names: checking a current summary costs O(1), and N new events cost N reads.
//!   A file rewritten in place is one of those events, whatever its size and mtime.
//! - **Polled** (no inotify, `TMPA_SUMMARY_WATCH=0`, or a network or FUSE file system, where other hosts' changes
//!   raise no event): each call lists the directory and `lstat`s each file (O(files), as the
//!   cache's stamp check always did), and re-reads only the files whose stamp (device,
//!   inode, size, mtime, ctime) changed, those that are new, and those read in the same
//!   second as their last change ("racily clean", as git calls it: a second change within
//!   the file system's timestamp granularity would not show in the stamp).
//! - Either way, every [`RESYNC_SECS`](crate::watch::RESYNC_SECS) a watched day is also checked as a polled one, so a
//!   change the kernel does not report (a write through a hard link in another directory, a
//!   write through `mmap`, the watch lost) is seen within that bound; and a full read from
//!   the events stays the fallback: after the queue overflowed or the watch was lost (then a
//!   poll), after `_compacted.json` changed, and when a file counted from the cache (whose
//!   contribution is not known) changed or went.
//!
//! # When `_summary.json` is written
//! Only after a full read of every event of the day found no problem and nothing changed
//! while it read (watched) — never on an incremental answer. A rewrite is durable (two
//! fsyncs) and changes the directory (which wakes every watcher), and for a live day it is
//! stale within milliseconds; the process answers from memory. The file serves what
//! memory cannot: the first call of a new process on a quiet day (one listing and one
//! `lstat` per file, no event read), and compaction's check that a day is settled. A day
//! with problems is never cached, so a cached summary is always a whole one.
//!
//! The inotify instance and its queue are the process's one watch registry
//! (`watch.rs`), which the notification views share.
//!
//! Locks: the list of days, then a day's, then the watch registry's (the queue), never
//! the other way round; the list's is held only to find a day, the registry's only for
//! map look-ups and the queue's `read`.
//!
//! # Not guaranteed
//! - A process keeps at most [`DAYS_MAX`] days (the least recently summarised goes),
//!   about 150 bytes per loose file of each.
//! - A forked child starts afresh (its own inotify instance, nothing of its parent's).

mod state;
mod tally;

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::Result;
use crate::fs::Dir;
use crate::names::Day;
use crate::root::{Root, rel};
use crate::summary::{Summary, SummaryRead};
use crate::watch::PerProcess;

use state::DayState;

/// Days a process keeps between calls.
pub const DAYS_MAX: usize = 8;

impl Root {
    /// A day's summary, kept up to date by this process: the first call reads the day
    /// (or takes `_summary.json` when its stamp says it is current), later calls read only
    /// the files that changed since, as the kernel reports them (inotify; polled on file
    /// systems where it cannot see every change). Checking a current summary costs O(1);
    /// N new events cost N reads. tmpa-core/src/incremental/ has the details.
    ///
    /// `_summary.json` is written only after a full read of the day that met no problem
    /// while nothing changed; never on every call (see `incremental/mod.rs`: "When
    /// `_summary.json` is written"). A failure to write it (read-only file system,
    /// permissions) does not fail the call: it is listed in `problems`.
    ///
    /// A day whose files could not all be read (a corrupt loose file, a damaged line of
    /// `_compacted.json`) gets the summary of what could, with `problems` naming the rest,
    /// on every call until it is repaired; it is never cached. [`SummaryRead::complete`]
    /// turns that into an error. A day without a directory gets an empty summary, and no
    /// directory is created.
    ///
    /// # Not guaranteed
    /// - A snapshot: events recorded while the call runs may or may not be counted.
    /// - Seeing a change the kernel does not report (a write through a hard link from
    ///   another directory, through `mmap`, or from another host) before the next full
    ///   check of the day's files, at most a minute later.
    ///
    /// # Errors
    /// As [`Root::read_day`]: only when the day directory cannot be opened or listed.
    ///
    /// # Examples
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// std::fs::create_dir(dir.path().join("token_stats")).unwrap();
    /// let root = tmpa_core::Root::open(dir.path()).unwrap();
    /// let e = tmpa_core::Event::from_json(br#"{"id":"a1","ts":"2026-11-23T10:00:00Z",
    ///   "user_id":"u1","model":"m","prompt_tokens":3,"completion_tokens":4}"#).unwrap();
    /// root.record_event(&e).unwrap();
    /// let day = "2026-11-23".parse().unwrap();
    /// let first = root.summary(day).unwrap();
    /// assert!(first.rebuilt);
    /// assert_eq!(first.summary.totals.total_tokens, 7);
    /// let second = root.summary(day).unwrap(); // from what this process knows
    /// assert!(!second.rebuilt);
    /// assert_eq!(second.complete().unwrap().totals.events, 1);
    /// ```
    pub fn summary(&self, day: Day) -> Result<SummaryRead> {
        let Some(dir) = self.open_dir_if_any(&rel::day(day))? else {
            // Nothing recorded that day: an empty summary, and no directory created.
            return Ok(SummaryRead {
                summary: Summary::compute(day, []),
                rebuilt: false,
                problems: Vec::new(),
            });
        };
        summary(&dir, day, &self.path().join(rel::day(day)))
    }
}

// -- the process's days ---------------------------------------------------------------------

/// A day directory's device and inode, and what this process knows of it.
type KnownDay = ((u64, u64), Arc<Mutex<DayState>>);

/// The days this process knows, most recently used last.
static DAYS: PerProcess<Vec<KnownDay>> = PerProcess::new();

/// The state of the day directory `key`, created when new; the least recently used day
/// beyond [`DAYS_MAX`] is forgotten (its watch goes with the last reference to it).
fn day_state(key: (u64, u64), day: Day) -> Arc<Mutex<DayState>> {
    DAYS.with(|days| {
        if let Some(i) = days.iter().position(|(k, _)| *k == key) {
            let entry = days.remove(i);
            let state = Arc::clone(&entry.1);
            days.push(entry);
            return state;
        }
        if days.len() >= DAYS_MAX {
            days.remove(0);
        }
        let state = Arc::new(Mutex::new(DayState::new(day, key)));
        days.push((key, Arc::clone(&state)));
        state
    })
}

/// The summary of the day directory `dir` (device and inode `key`) of `day`, reachable by
/// `watch_path`, kept up to date incrementally (see the module docs).
///
/// # Errors
/// When the directory cannot be listed or a file in it `lstat`ed.
pub(crate) fn summary(dir: &Dir, day: Day, watch_path: &Path) -> Result<SummaryRead> {
    let meta = dir.meta()?;
    let key = meta.stamp.inode();
    let state = day_state(key, day);
    let mut st = state.lock().unwrap_or_else(|poisoned| {
        // A panic during an update may have left it half done: start again.
        let mut st = poisoned.into_inner();
        st.ready = false;
        st
    });
    state.clear_poison();
    if st.day != day {
        // The inode of a deleted day directory, reused by another day's.
        st.day = day;
        st.ready = false;
    }
    st.summary(dir, watch_path)
}

/// Forgets what this process knows of the day directory `dir` (and removes its watch):
/// its next summary starts from the cache or a full read, as in a new process.
///
/// # Errors
/// When `dir` cannot be stat'ed.
pub(crate) fn forget(dir: &Dir) -> Result<()> {
    let meta = dir.meta()?;
    let key = meta.stamp.inode();
    let state = DAYS.with(|days| {
        let i = days.iter().position(|(k, _)| *k == key)?;
        Some(days.remove(i).1)
    });
    // The watch goes now, even while another thread still holds the day: the next
    // summary watches the directory anew. Never the day's lock inside the list's.
    if let Some(state) = state {
        state.lock().unwrap_or_else(PoisonError::into_inner).watch = None;
    }
    Ok(())
}
