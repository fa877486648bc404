//! One day directory as a process knows it ([`DayState`]): every loose file's
//! contribution, the compacted ids, the watch, and how a call brings it up to date (the
//! changes the watch reports, a poll, or a full read).

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::compacted::{COMPACTED_NAME, Compacted, read_compacted};
use crate::day::{
    SUMMARY_NAME, conflict_problem_of, event_names, is_event_name, read_loose_stamped,
    read_loose_stamped_all,
};
use crate::error::Result;
use crate::event::Event;
use crate::fs::{Dir, Kind, Stamp};
use crate::names::Day;
use crate::problem::{Problem, ProblemKind};
use crate::summary::{SummaryRead, read_cached, source_stamp, write_summary};
use crate::watch::{RESYNC_SECS, Watch};

use super::tally::{Contrib, Interned, Sums, Tally};

/// A file read within this long of its last change is read again by the next poll: its
/// stamp could not show a second change in the same timestamp tick.
pub(super) const RACY_NS: i64 = 1_000_000_000;

/// What a loose file is to the day.
#[derive(Clone, Debug)]
pub(super) enum Entry {
    /// A new event, counted.
    Counted(Contrib),
    /// The same event as the compacted one of its id: not counted again.
    Duplicate,
    /// Another event than the compacted one of its id: not counted, a problem.
    Conflict(Problem),
    /// Not a valid event of its name: not counted, a problem.
    Corrupt(Problem),
    /// Counted in the cached summary the day started from; what it adds is not known, so
    /// a change to it needs a full read.
    FromCache,
}

#[derive(Clone, Debug)]
pub(super) struct Loose {
    /// The stamp of the file read (or `lstat`ed, for [`Entry::FromCache`]).
    stamp: Option<Stamp>,
    entry: Entry,
    /// Read within [`RACY_NS`] of its last change.
    racy: bool,
}

/// What changed since the last call, as far as the call knows.
#[derive(Debug, Default)]
pub(super) struct Changes {
    /// Loose names to read again.
    names: HashSet<OsString>,
    /// `_compacted.json` changed: a full read.
    compacted: bool,
    /// The queue overflowed, or the directory was moved: poll.
    lost: bool,
    /// The watch is gone (the directory deleted, its file system unmounted, or the watch
    /// belongs to another process's registry): a full read, which watches it again.
    gone: bool,
}

/// Why an incremental update cannot go on: a full read does.
pub(super) struct NeedsFullRead;

/// One day directory as this process knows it.
#[derive(Debug)]
pub(super) struct DayState {
    pub(super) day: Day,
    /// Device and inode of the day directory.
    key: (u64, u64),
    /// Whether `sums` and `loose` describe the directory (else the next call reads it all).
    pub(super) ready: bool,
    sums: Sums,
    users: Interned,
    models: Interned,
    loose: HashMap<OsString, Loose>,
    /// The stamp of `_compacted.json` read (`None`: there was none).
    compacted_stamp: Option<Stamp>,
    /// The compacted events' ids and content hashes; `None` until needed when the day
    /// started from the cache.
    compacted_ids: Option<HashMap<Box<str>, u64>>,
    compacted_problems: Vec<Problem>,
    /// The inotify watch of the directory.
    pub(super) watch: Option<Watch>,
    last_sync: Instant,
}

impl DayState {
    pub(super) fn new(day: Day, key: (u64, u64)) -> DayState {
        DayState {
            day,
            key,
            ready: false,
            sums: Sums::default(),
            users: Interned::default(),
            models: Interned::default(),
            loose: HashMap::new(),
            compacted_stamp: None,
            compacted_ids: None,
            compacted_problems: Vec::new(),
            watch: None,
            last_sync: Instant::now(),
        }
    }

    pub(super) fn contrib(&mut self, e: &Event) -> Contrib {
        Contrib {
            user: self.users.get(e.user_id()),
            model: self.models.get(e.model()),
            prompt: e.prompt_tokens(),
            completion: e.completion_tokens(),
        }
    }

    pub(super) fn problems(&self) -> Vec<Problem> {
        let mut p: Vec<Problem> = self.compacted_problems.clone();
        p.extend(self.loose.values().filter_map(|l| match &l.entry {
            Entry::Conflict(p) | Entry::Corrupt(p) => Some(p.clone()),
            _ => None,
        }));
        p.sort();
        p
    }

    pub(super) fn read(&self, rebuilt: bool) -> SummaryRead {
        SummaryRead {
            summary: self.sums.summary(self.day, &self.users, &self.models),
            rebuilt,
            problems: self.problems(),
        }
    }

    /// The day's summary now (see the module docs).
    pub(super) fn summary(&mut self, dir: &Dir, watch_path: &Path) -> Result<SummaryRead> {
        if self.ready {
            match self.changes(dir) {
                Ok(changes) => {
                    if let Ok(()) = self.apply(dir, changes) {
                        return Ok(self.read(false));
                    }
                }
                Err(e) => {
                    self.ready = false;
                    return Err(e);
                }
            }
        }
        self.full(dir, watch_path)
    }

    /// What changed since the last call: from the watch's queue, or by polling.
    pub(super) fn changes(&mut self, dir: &Dir) -> Result<Changes> {
        let mut changes = match &mut self.watch {
            Some(w) => Changes::of(w.take()),
            None => Changes {
                lost: true,
                ..Changes::default()
            },
        };
        if changes.gone {
            self.watch = None;
            changes.compacted = true;
            return Ok(changes);
        }
        if changes.lost || self.last_sync.elapsed() >= Duration::from_secs(RESYNC_SECS) {
            self.poll(dir, &mut changes)?;
        }
        Ok(changes)
    }

    /// Adds to `changes` every file whose stamp differs from what was read, every new
    /// file, every racy one, and whether `_compacted.json` changed.
    pub(super) fn poll(&mut self, dir: &Dir, changes: &mut Changes) -> Result<()> {
        let names = event_names(dir)?;
        let listed: HashSet<&OsString> = names.iter().collect();
        for name in self.loose.keys() {
            if !listed.contains(name) {
                changes.names.insert(name.clone());
            }
        }
        for name in &names {
            let now = dir.stat(name)?.map(|m| m.stamp);
            match self.loose.get(name) {
                Some(l) if l.stamp == now && !l.racy => {}
                _ => {
                    changes.names.insert(name.clone());
                }
            }
        }
        if compacted_stamp(dir)? != self.compacted_stamp {
            changes.compacted = true;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Brings the sums up to date with `changes`, reading only the files named.
    pub(super) fn apply(
        &mut self,
        dir: &Dir,
        changes: Changes,
    ) -> std::result::Result<(), NeedsFullRead> {
        if changes.compacted {
            return Err(NeedsFullRead);
        }
        let mut gone = false;
        for name in changes.names {
            gone |= self.update(dir, name)?;
        }
        // A loose file gone may have been compacted since the changes were taken: then
        // its event is in the new `_compacted.json`, which a full read counts.
        if gone && compacted_stamp(dir).map_err(|_| NeedsFullRead)? != self.compacted_stamp {
            return Err(NeedsFullRead);
        }
        Ok(())
    }

    /// Reads the loose file `name` again and replaces what it counted; whether it is gone.
    pub(super) fn update(
        &mut self,
        dir: &Dir,
        name: OsString,
    ) -> std::result::Result<bool, NeedsFullRead> {
        if let Some(Loose {
            entry: Entry::FromCache,
            ..
        }) = self.loose.get(&name)
        {
            return Err(NeedsFullRead);
        }
        let new = match read_loose_stamped(dir, &name) {
            Ok((event, stamp)) => Some(Loose {
                stamp: Some(stamp),
                racy: is_racy(&stamp),
                entry: self.classify(dir, &event)?,
            }),
            Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                let stamp = dir.stat(&name).ok().flatten().map(|m| m.stamp);
                Some(Loose {
                    stamp,
                    racy: true,
                    entry: Entry::Corrupt(Problem::from_error(&dir.join(&name), e)),
                })
            }
        };
        if let Some(Loose {
            entry: Entry::Counted(c),
            ..
        }) = self.loose.remove(&name)
        {
            self.sums.sub(&c);
        }
        let gone = new.is_none();
        if let Some(new) = new {
            if let Entry::Counted(c) = &new.entry {
                self.sums.add(c);
            }
            self.loose.insert(name, new);
        }
        Ok(gone)
    }

    /// Whether a loose event is new, the same as its compacted copy, or another event.
    pub(super) fn classify(
        &mut self,
        dir: &Dir,
        e: &Event,
    ) -> std::result::Result<Entry, NeedsFullRead> {
        if self.compacted_ids.is_none() {
            if self.compacted_stamp.is_none() {
                self.compacted_ids = Some(HashMap::new());
            } else {
                // Started from the cache: the compacted ids are read once, when a new
                // loose file needs them. A damaged file needs the full read's problems.
                match read_compacted(dir, self.day) {
                    Compacted::Valid(events) => {
                        self.compacted_ids = Some(ids_of(&events));
                    }
                    _ => return Err(NeedsFullRead),
                }
            }
        }
        let ids = self.compacted_ids.as_ref().expect("set above");
        Ok(match ids.get(e.id().as_str()) {
            None => Entry::Counted(self.contrib(e)),
            Some(&h) if h == content_hash(e) => Entry::Duplicate,
            Some(_) => Entry::Conflict(conflict_problem_of(dir, e.id())),
        })
    }

    /// Reads the whole day (or takes the cached summary, when it is current), after
    /// making sure the watch is in place, so that whatever changes from here on is seen.
    pub(super) fn full(&mut self, dir: &Dir, watch_path: &Path) -> Result<SummaryRead> {
        let key = self.key;
        let (day, watch) = (self.day, self.watch.take());
        *self = DayState::new(day, key);
        // Everything queued up to now is about to be read: taken and dropped. A watch the
        // kernel removed (the inode of a deleted directory, whose number this one reuses)
        // is replaced.
        self.watch = watch.and_then(|mut w| (!w.take().gone).then_some(w));
        if self.watch.is_none() {
            self.watch = Watch::add(dir, watch_path, is_watched_name);
        }
        self.last_sync = Instant::now();
        let names = event_names(dir)?;
        self.compacted_stamp = compacted_stamp(dir)?;
        if let Some(read) = self.take_cache(dir, &names)? {
            self.ready = true;
            return Ok(read);
        }
        // The loose files first, then `_compacted.json`: an event that compaction moves
        // meanwhile is gone from the first read only once it is in the second (compaction
        // deletes a loose file only after the compacted file holding it is durable).
        let reads = read_loose_stamped_all(dir, &names);
        match read_compacted(dir, day) {
            Compacted::Absent => {}
            Compacted::Valid(events) => self.count_compacted(&events),
            Compacted::Damaged(s) => {
                self.count_compacted(&s.events);
                self.compacted_problems = s.problems;
            }
            Compacted::Corrupt(p) => {
                self.compacted_ids = Some(HashMap::new());
                self.compacted_problems = vec![p];
            }
        }
        if self.compacted_ids.is_none() {
            self.compacted_ids = Some(HashMap::new());
        }
        for (name, read) in names.iter().zip(reads) {
            let loose = match read {
                Ok((event, stamp)) => Loose {
                    stamp: Some(stamp),
                    racy: is_racy(&stamp),
                    entry: match self.classify(dir, &event) {
                        Ok(entry) => entry,
                        Err(NeedsFullRead) => unreachable!("the compacted ids are known"),
                    },
                },
                Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => Loose {
                    stamp: dir.stat(name).ok().flatten().map(|m| m.stamp),
                    racy: true,
                    entry: Entry::Corrupt(Problem::from_error(&dir.join(name), e)),
                },
            };
            if let Entry::Counted(c) = &loose.entry {
                self.sums.add(c);
            }
            self.loose.insert(name.clone(), loose);
        }
        self.ready = true;
        let mut read = self.read(true);
        if read.problems.is_empty() && self.quiet() {
            read.summary.source = self.stamp();
            if let Err(e) = write_summary(dir, &read.summary) {
                read.problems.push(Problem::new(
                    dir.join(SUMMARY_NAME),
                    ProblemKind::Unreadable,
                    format!("could not rewrite the summary cache: {}", e.chain()),
                ));
            }
        }
        Ok(read)
    }

    /// The cached summary, when its stamp says it is the day as listed: every loose file
    /// then counts as [`Entry::FromCache`].
    pub(super) fn take_cache(
        &mut self,
        dir: &Dir,
        names: &[OsString],
    ) -> Result<Option<SummaryRead>> {
        let Some(cached) = read_cached(dir, self.day) else {
            return Ok(None);
        };
        let mut stamps = Vec::with_capacity(names.len());
        for n in names {
            if let Some(m) = dir.stat(n)? {
                stamps.push((n.clone(), m.stamp));
            }
        }
        if cached.source != source_stamp(self.compacted_stamp, &stamps) {
            return Ok(None);
        }
        self.sums.all = Tally::of(&cached.totals);
        for (name, t) in &cached.by_user {
            let k = self.users.get(name);
            self.sums.by_user.insert(k, Tally::of(t));
        }
        for (name, t) in &cached.by_model {
            let k = self.models.get(name);
            self.sums.by_model.insert(k, Tally::of(t));
        }
        for (name, stamp) in stamps {
            self.loose.insert(
                name,
                Loose {
                    stamp: Some(stamp),
                    entry: Entry::FromCache,
                    racy: is_racy(&stamp),
                },
            );
        }
        Ok(Some(SummaryRead {
            summary: cached,
            rebuilt: false,
            problems: Vec::new(),
        }))
    }

    pub(super) fn count_compacted(&mut self, events: &[Event]) {
        for e in events {
            let c = self.contrib(e);
            self.sums.add(&c);
        }
        self.compacted_ids = Some(ids_of(events));
    }

    /// Whether nothing changed since the full read began, as far as the watch tells (a
    /// polled day cannot tell cheaply: its cache's stamp is the one of the files read, so
    /// a file changed since shows as a stale cache).
    pub(super) fn quiet(&mut self) -> bool {
        match &mut self.watch {
            Some(w) => {
                let c = w.take();
                let quiet = c.is_empty();
                w.put_back(c);
                quiet
            }
            None => true,
        }
    }

    /// The cache's consistency stamp of the files as they were read.
    pub(super) fn stamp(&self) -> String {
        let loose: Vec<(OsString, Stamp)> = self
            .loose
            .iter()
            .filter_map(|(n, l)| Some((n.clone(), l.stamp?)))
            .collect();
        source_stamp(self.compacted_stamp, &loose)
    }
}

pub(super) fn ids_of(events: &[Event]) -> HashMap<Box<str>, u64> {
    events
        .iter()
        .map(|e| (e.id().as_str().into(), content_hash(e)))
        .collect()
}

/// A hash of an event's canonical JSON: equal events have equal hashes.
pub(super) fn content_hash(e: &Event) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    e.json_bytes().hash(&mut h);
    h.finish()
}

pub(super) fn compacted_stamp(dir: &Dir) -> Result<Option<Stamp>> {
    Ok(dir
        .stat(COMPACTED_NAME)?
        .filter(|m| m.kind == Kind::File)
        .map(|m| m.stamp))
}

/// Whether a file read now could change again without its stamp showing it.
pub(super) fn is_racy(stamp: &Stamp) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(i64::MAX, |d| {
            i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
        });
    now.saturating_sub(stamp.changed_ns()) < RACY_NS
}

/// The names whose changes a day's watch records: the loose events and `_compacted.json`.
pub(super) fn is_watched_name(name: &OsStr) -> bool {
    name == COMPACTED_NAME || is_event_name(name)
}

impl Changes {
    pub(super) fn of(c: crate::watch::Changes) -> Changes {
        let mut names = c.names;
        let compacted = names.remove(OsStr::new(COMPACTED_NAME));
        Changes {
            names,
            compacted,
            lost: c.lost,
            gone: c.gone,
        }
    }
}
