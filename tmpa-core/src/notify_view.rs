//! What a process keeps of the inboxes it listed: per user, the live notifications
//! (`inbox/ntf_{id}.json`) and whether each has its receipt (`ack/ntf_{id}.ack`), kept
//! current between calls by what the kernel says changed, as the incremental summaries
//! are (`incremental/`). [`Root::unacked`], [`Root::inbox`] and
//! [`Root::list_notifications`] read the live notifications from here.
//!
//! # How a call knows what changed
//! - **Watched** (a local file system, inotify available): `inbox/` and `ack/` each have
//!   an inotify watch in the process's one registry (`watch.rs`), added *before* the
//!   full listing that fills the view, so nothing that changes after that listing goes
//!   unseen. A call opens both directories (as every call does: a directory replaced or
//!   removed shows as another inode, or none), reads the queue without blocking, and
//!   looks again, with one `fstatat` each, at the receipt and then the inbox entry of
//!   every id the queue names: an unchanged inbox costs one `read` that finds the queue
//!   empty, and N changed names cost N look-ups. The names kept are those a listing
//!   counts (`ntf_{id}.json`, `ntf_{id}.ack` with a valid id): temporaries never are.
//! - **Polled** (no inotify, [`WATCH_ENV`](crate::watch::WATCH_ENV)`=0`, a network or
//!   FUSE file system, where another host's changes raise no event): each call lists
//!   both directories, as the view's full listing does, and nothing is kept.
//! - A full listing is the fallback, and the view is filled anew: the first call for a
//!   user, after either directory was replaced, created or removed (another inode, or
//!   none), after the queue overflowed or a watch was lost (the directory moved or
//!   deleted), after a failed look-up, and every
//!   [`RESYNC_SECS`](crate::watch::RESYNC_SECS) in any case.
//!
//! # Invariants
//! - The receipt is read before the inbox entry, by a listing (`ack/` then `inbox/`) and
//!   by a look-up alike. tmpa-archive deletes the inbox file before the receipt, so an
//!   acknowledgement that returned before a call began is seen: its notification is
//!   either acknowledged or already gone from the inbox when the call reads it.
//! - The view holds live notifications only. A receipt without its inbox entry (written
//!   first, or left by an archival) is not kept: the inbox entry's arrival is an event,
//!   and its look-up reads the receipt.
//!
//! # Not guaranteed
//! - A process keeps at most [`USERS_MAX`] users' views, and at most [`LIVE_MAX`] live
//!   notifications in all (the least recently used views go first); each costs about 80
//!   bytes and its id's length. An inbox larger than that is polled.
//! - A snapshot: a delivery or an acknowledgement concurrent with a call may or may not
//!   be in its answer.
//! - A forked child starts afresh (its own watches; nothing of its parent's views).

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::fs::{Dir, Kind};
use crate::names::{NotificationId, UserId};
use crate::root::{Root, rel};
use crate::watch::{Changes, PerProcess, RESYNC_SECS, Watch};

/// Users whose views a process keeps.
pub const USERS_MAX: usize = 64;
/// Live notifications a process keeps in all its views.
pub const LIVE_MAX: usize = 1 << 18;

/// A live notification's id, and whether its receipt exists.
pub(crate) type Live = (NotificationId, bool);

/// One user's live notifications as this process knows them.
#[derive(Debug)]
struct View {
    /// Device and inode of `inbox/`.
    inbox_key: (u64, u64),
    /// Device and inode of `ack/`; `None`: there was none.
    ack_key: Option<(u64, u64)>,
    inbox_watch: Option<Watch>,
    ack_watch: Option<Watch>,
    /// Every live notification, and whether it is acknowledged.
    live: BTreeMap<NotificationId, bool>,
    /// Whether `live` describes the directories (else the next call lists them).
    ready: bool,
    last_sync: Instant,
}

/// The directories of one user, as a call opened them.
struct Dirs<'a> {
    root: &'a Root,
    user: &'a UserId,
    inbox: &'a Dir,
    inbox_key: (u64, u64),
    ack: Option<&'a Dir>,
    ack_key: Option<(u64, u64)>,
}

impl View {
    fn new(inbox_key: (u64, u64)) -> View {
        View {
            inbox_key,
            ack_key: None,
            inbox_watch: None,
            ack_watch: None,
            live: BTreeMap::new(),
            ready: false,
            last_sync: Instant::now(),
        }
    }

    /// The live notifications now, those `keep` keeps (see the module docs).
    fn current(&mut self, d: &Dirs<'_>, keep: &impl Fn(bool) -> bool) -> Result<Vec<Live>> {
        let same_dirs = (self.inbox_key, self.ack_key) == (d.inbox_key, d.ack_key);
        let due = self.last_sync.elapsed() >= Duration::from_secs(RESYNC_SECS);
        if self.ready && same_dirs && !due && self.update(d)? {
            return Ok(self
                .live
                .iter()
                .filter(|(_, acked)| keep(**acked))
                .map(|(id, acked)| (id.clone(), *acked))
                .collect());
        }
        self.full(d, keep)
    }

    /// Applies what the watches report; `false` when they cannot tell (a full listing
    /// must).
    fn update(&mut self, d: &Dirs<'_>) -> Result<bool> {
        let Some(inbox_watch) = &mut self.inbox_watch else {
            return Ok(false);
        };
        let inbox = inbox_watch.take();
        let ack = match &mut self.ack_watch {
            Some(w) => w.take(),
            None => Changes::default(),
        };
        if [&inbox, &ack].iter().any(|c| c.lost || c.gone) {
            return Ok(false);
        }
        let ids: HashSet<&[u8]> = (inbox.names.iter().filter_map(|n| stem(n, b".json")))
            .chain(ack.names.iter().filter_map(|n| stem(n, b".ack")))
            .collect();
        // Until every id is looked at: a failed look-up leaves changes unapplied.
        self.ready = false;
        for id in ids {
            let id = std::str::from_utf8(id)
                .ok()
                .and_then(|id| NotificationId::new(id).ok())
                .expect("the watches keep valid ids only");
            let acked = match d.ack {
                Some(ack) => ack.stat(format!("ntf_{id}.ack"))?.is_some(),
                None => false,
            };
            let live = d
                .inbox
                .stat(format!("ntf_{id}.json"))?
                .is_some_and(|m| m.kind == Kind::File);
            if live {
                self.live.insert(id, acked);
            } else {
                self.live.remove(&id);
            }
        }
        self.ready = true;
        Ok(true)
    }

    /// Watches both directories (kept when still good), then lists them whole.
    fn full(&mut self, d: &Dirs<'_>, keep: &impl Fn(bool) -> bool) -> Result<Vec<Live>> {
        self.ready = false;
        self.live.clear();
        if self.inbox_key != d.inbox_key {
            self.inbox_watch = None;
        }
        if self.ack_key != d.ack_key || d.ack.is_none() {
            self.ack_watch = None;
        }
        (self.inbox_key, self.ack_key) = (d.inbox_key, d.ack_key);
        // What is queued up to now is about to be listed: taken and dropped.
        let inbox_path = d.root.path().join(rel::inbox(d.user));
        self.inbox_watch = rewatch(self.inbox_watch.take(), d.inbox, &inbox_path, is_inbox_name);
        if let Some(ack) = d.ack {
            let ack_path = d.root.path().join(rel::ack(d.user));
            self.ack_watch = rewatch(self.ack_watch.take(), ack, &ack_path, is_ack_name);
        }
        self.last_sync = Instant::now();
        let watched = self.inbox_watch.is_some() && (d.ack.is_none() || self.ack_watch.is_some());
        if !watched {
            return list(d.inbox, d.ack, keep);
        }
        let all = list(d.inbox, d.ack, |_| true)?;
        if all.len() > LIVE_MAX {
            (self.inbox_watch, self.ack_watch) = (None, None);
            return Ok(all.into_iter().filter(|(_, a)| keep(*a)).collect());
        }
        let out = all.iter().filter(|(_, a)| keep(*a)).cloned().collect();
        // Sorted already: the map is built in one pass.
        self.live = all.into_iter().collect();
        self.ready = true;
        Ok(out)
    }
}

/// `old` when the kernel still has it (its changes dropped), else a new watch.
fn rewatch(
    old: Option<Watch>,
    dir: &Dir,
    path: &std::path::Path,
    wanted: crate::watch::NameFilter,
) -> Option<Watch> {
    if let Some(mut w) = old
        && !w.take().gone
    {
        return Some(w);
    }
    Watch::add(dir, path, wanted)
}

fn is_inbox_name(name: &OsStr) -> bool {
    stem(name, b".json").is_some_and(is_valid_id)
}

fn is_ack_name(name: &OsStr) -> bool {
    stem(name, b".ack").is_some_and(is_valid_id)
}

fn is_valid_id(id: &[u8]) -> bool {
    std::str::from_utf8(id).is_ok_and(|id| NotificationId::new(id).is_ok())
}

// -- the process's views -------------------------------------------------------------------

/// A view, by the device and inode of its `inbox/`, with the live notifications it kept
/// when last used.
#[derive(Debug)]
struct Known {
    inbox_key: (u64, u64),
    view: Arc<Mutex<View>>,
    live: usize,
}

/// The views this process keeps, most recently used last.
static VIEWS: PerProcess<Vec<Known>> = PerProcess::new();

/// The view of the inbox `inbox_key`, made when new; the least recently used one beyond
/// [`USERS_MAX`] is forgotten (its watches go with the last reference to it).
fn view_of(inbox_key: (u64, u64)) -> Arc<Mutex<View>> {
    VIEWS.with(|views| {
        if let Some(i) = views.iter().position(|k| k.inbox_key == inbox_key) {
            let known = views.remove(i);
            let view = Arc::clone(&known.view);
            views.push(known);
            return view;
        }
        if views.len() >= USERS_MAX {
            views.remove(0);
        }
        let view = Arc::new(Mutex::new(View::new(inbox_key)));
        views.push(Known {
            inbox_key,
            view: Arc::clone(&view),
            live: 0,
        });
        view
    })
}

/// Records how many live notifications the view of `inbox_key` keeps (`None`: none, it
/// is not kept), then forgets the least recently used views while more than
/// [`LIVE_MAX`] are kept in all.
fn account(inbox_key: (u64, u64), kept: Option<usize>) {
    VIEWS.with(|views| {
        if let Some(i) = views.iter().position(|k| k.inbox_key == inbox_key) {
            match kept {
                Some(n) => views[i].live = n,
                None => {
                    views.remove(i);
                }
            }
        }
        let mut total: usize = views.iter().map(|k| k.live).sum();
        while total > LIVE_MAX {
            total -= views.remove(0).live;
        }
    });
}

fn lock(view: &Mutex<View>) -> MutexGuard<'_, View> {
    view.lock().unwrap_or_else(|poisoned| {
        // A panic during an update may have left it half done: list again.
        let mut v = poisoned.into_inner();
        v.ready = false;
        v
    })
}

fn key_of(dir: &Dir) -> Result<(u64, u64)> {
    let m = dir.meta()?;
    Ok(m.stamp.inode())
}

/// The live notifications of `user`, whose `inbox/` and `ack/` (if any) the caller
/// opened, sorted by id, with whether each is acknowledged: those `keep` keeps (given
/// that flag). From the process's view when the directories are watched, else from a
/// listing (see the module docs).
///
/// # Errors
/// When a directory cannot be listed or an entry looked up.
pub(crate) fn live(
    root: &Root,
    user: &UserId,
    inbox: &Dir,
    ack: Option<&Dir>,
    keep: impl Fn(bool) -> bool,
) -> Result<Vec<Live>> {
    if !crate::watch::watchable(inbox) {
        return list(inbox, ack, keep);
    }
    let d = Dirs {
        root,
        user,
        inbox,
        inbox_key: key_of(inbox)?,
        ack,
        ack_key: ack.map(key_of).transpose()?,
    };
    let view = view_of(d.inbox_key);
    let mut v = lock(&view);
    view.clear_poison();
    let out = v.current(&d, &keep);
    let kept = v.ready.then_some(v.live.len());
    drop(v);
    account(d.inbox_key, kept);
    out
}

// -- the listing ---------------------------------------------------------------------------

/// What every notification's file name starts with.
const STEM_PREFIX: &[u8] = b"ntf_";

/// The `{id}` of `ntf_{id}{ext}`, as bytes.
fn stem<'a>(name: &'a OsStr, ext: &[u8]) -> Option<&'a [u8]> {
    name.as_bytes().strip_prefix(STEM_PREFIX)?.strip_suffix(ext)
}

/// The live notifications that `keep` keeps (given whether each has its ack), sorted by
/// id, with that flag: one listing of `ack/` then one of `inbox/` (in that order: see
/// the module docs), names compared as bytes, nothing allocated per entry but what is
/// returned. An inbox entry counts when the listing says it is a regular file (a `stat`
/// only where the file system does not say) and its name is `ntf_{id}.json` with a valid
/// id; an ack counts by its name alone (its presence is what counts, docs/FORMAT.md).
///
/// # Errors
/// When a directory cannot be listed, or an entry of unknown kind `stat`ed.
pub(crate) fn list(
    inbox: &Dir,
    ack: Option<&Dir>,
    keep: impl Fn(bool) -> bool,
) -> Result<Vec<Live>> {
    let mut acked = Names::default();
    if let Some(dir) = ack {
        dir.visit_entries(|name, _, _| {
            if let Some(id) = stem(name, b".ack") {
                acked.push(id);
            }
        })?;
        acked.sort();
    }
    let mut ids = Names::default();
    let mut kind_unknown = Vec::new();
    inbox.visit_entries(|name, kind, _| {
        if let Some(id) = stem(name, b".json") {
            match kind {
                Some(Kind::File) => ids.push(id),
                None => kind_unknown.push(name.to_os_string()),
                Some(_) => {}
            }
        }
    })?;
    for name in kind_unknown {
        if inbox.stat(&name)?.is_some_and(|m| m.kind == Kind::File)
            && let Some(id) = stem(&name, b".json")
        {
            ids.push(id);
        }
    }
    ids.sort();
    // Both sorted: one pass over each.
    let mut acks = acked.iter().peekable();
    let mut out = Vec::new();
    for id in ids.iter() {
        while acks.next_if(|a| *a < id).is_some() {}
        let is_acked = acks.peek() == Some(&id);
        if !keep(is_acked) {
            continue;
        }
        if let Some(id) = std::str::from_utf8(id)
            .ok()
            .and_then(|id| NotificationId::new(id).ok())
        {
            out.push((id, is_acked));
        }
    }
    Ok(out)
}

/// Names (as bytes) in one buffer, sortable without an allocation per name: a large
/// listing's names cost their bytes and 16 bytes each.
#[derive(Default)]
struct Names {
    bytes: Vec<u8>,
    /// Per name: its first 8 bytes as a big-endian number (zero-padded), its start and
    /// its length. Sorting by the number first orders most names by one integer
    /// comparison, and the same as by their bytes: a shorter name padded with zeros
    /// sorts first, and a tie is broken by the bytes themselves.
    spans: Vec<(u64, u32, u32)>,
}

impl Names {
    fn push(&mut self, name: &[u8]) {
        let mut head = [0u8; 8];
        let n = name.len().min(8);
        head[..n].copy_from_slice(&name[..n]);
        let start = u32::try_from(self.bytes.len()).expect("a listing's names fit in 4 GiB");
        let len = u32::try_from(name.len()).expect("a name is at most 255 bytes");
        self.bytes.extend_from_slice(name);
        self.spans.push((u64::from_be_bytes(head), start, len));
    }

    fn get(&self, (_, start, len): (u64, u32, u32)) -> &[u8] {
        &self.bytes[start as usize..][..len as usize]
    }

    fn sort(&mut self) {
        let mut spans = std::mem::take(&mut self.spans);
        spans.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| self.get(*a).cmp(self.get(*b))));
        self.spans = spans;
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.spans.iter().map(|s| self.get(*s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bounds `Root::unacked`'s docs state.
    #[test]
    fn the_documented_bounds() {
        assert_eq!((USERS_MAX, LIVE_MAX, RESYNC_SECS), (64, 262_144, 60));
    }

    /// Names as the watches keep them: notifications and receipts with a valid id, never
    /// a temporary.
    #[test]
    fn watched_names() {
        assert!(is_inbox_name(OsStr::new("ntf_42.json")));
        assert!(!is_inbox_name(OsStr::new("ntf_42.json.tmp.1")));
        assert!(!is_inbox_name(OsStr::new("ntf_a.tmp.json"))); // its id would be a temporary's
        assert!(!is_inbox_name(OsStr::new("ntf_42.ack")));
        assert!(is_ack_name(OsStr::new("ntf_42.ack")));
        assert!(!is_ack_name(OsStr::new("ntf_42.ack.tmp")));
        assert!(!is_ack_name(OsStr::new("ntf_.ack")));
    }
}
