//! The day summary: its format (`_summary.json`, a cache) and [`Root::summary`](crate::Root::summary), which
//! keeps it up to date in memory (`incremental/`).
//!
//! **The cache's consistency stamp.** A cached summary carries a `source` stamp: a SHA-256
//! over the inode, size and mtime (ns) of `_compacted.json` and of every `evt_*.json` in
//! the day directory, with their names, sorted (`v3:`; `v1:` and `v2:` stamps, of caches
//! that may have been written for days with problems, are never taken). Checking it costs
//! one listing and one `lstat` per loose file, never a read of the events: it is what a
//! new process does on its first summary of a day, and compaction to know a day settled.
//! A cache is only written for a day read whole without a problem. The summary is also
//! checked on its own (totals equal the sums over `by_user` and `by_model`,
//! `total_tokens = prompt_tokens + completion_tokens`). Not detected by the stamp: a file
//! edited in place by hand keeping its size and its mtime to the nanosecond; a process
//! that keeps the day (inotify) sees even that.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::day::SUMMARY_NAME;
use crate::error::Result;
use crate::event::Event;
use crate::fs::{Dir, Stamp};
use crate::names::Day;
use crate::problem::Problem;
use crate::text::hex;

/// Largest `_summary.json` read, in bytes.
const SUMMARY_BYTES_MAX: u64 = 64 << 20;

/// Counts over a set of events: the day's, or one user's or model's ([`Summary`]).
///
/// Sums saturate at `u64::MAX` rather than wrap.
///
/// # Examples
/// ```
/// use tmpa_core::{Event, Summary};
/// let e = Event::from_json(br#"{"id":"a","ts":"2026-11-23T10:00:00Z","user_id":"u",
///   "model":"m","prompt_tokens":3,"completion_tokens":4}"#).unwrap();
/// let t = Summary::compute("2026-11-23".parse().unwrap(), [&e]).by_model["m"];
/// assert_eq!((t.events, t.prompt_tokens, t.completion_tokens, t.total_tokens), (1, 3, 4, 7));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Number of events.
    pub events: u64,
    /// Sum of `prompt_tokens`.
    pub prompt_tokens: u64,
    /// Sum of `completion_tokens`.
    pub completion_tokens: u64,
    /// `prompt_tokens + completion_tokens`.
    pub total_tokens: u64,
}

impl Totals {
    fn add(&mut self, prompt_tokens: u64, completion_tokens: u64) {
        self.events = self.events.saturating_add(1);
        self.prompt_tokens = self.prompt_tokens.saturating_add(prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(completion_tokens);
        self.total_tokens = self
            .total_tokens
            .saturating_add(prompt_tokens.saturating_add(completion_tokens));
    }

    fn plus(mut self, o: &Totals) -> Totals {
        self.events = self.events.saturating_add(o.events);
        self.prompt_tokens = self.prompt_tokens.saturating_add(o.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(o.completion_tokens);
        self.total_tokens = self.total_tokens.saturating_add(o.total_tokens);
        self
    }
}

/// A day's summary (`_summary.json`, format 1).
///
/// # Examples
/// ```
/// use tmpa_core::{Event, Summary};
/// let e = Event::from_json(br#"{"id":"a","ts":"2026-11-23T10:00:00Z","user_id":"u",
///   "model":"m","prompt_tokens":3,"completion_tokens":4}"#).unwrap();
/// let s = Summary::compute("2026-11-23".parse().unwrap(), [&e]);
/// assert_eq!(s.totals.total_tokens, 7);
/// assert_eq!(s.by_user["u"].events, 1);
/// ```
///
/// # Not guaranteed
/// As a cache file, `_summary.json` is only as current as its consistency stamp can tell
/// (see [`Root::summary`](crate::Root::summary)): a hand edit of an event file in place that keeps its size and
/// its mtime to the nanosecond is not noticed until the day changes otherwise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Always 1.
    pub format: u32,
    /// `YYYY-MM-DD`.
    pub day: String,
    /// Over every valid event of the day.
    #[serde(flatten)]
    pub totals: Totals,
    /// Per `user_id`.
    pub by_user: BTreeMap<String, Totals>,
    /// Per `model`.
    pub by_model: BTreeMap<String, Totals>,
    /// The consistency stamp of the day directory this summary was computed for (see the
    /// module docs); empty when unknown.
    #[serde(default)]
    pub source: String,
}

impl Summary {
    /// Folds `events` into a summary (with an empty `source`).
    pub fn compute<'a>(day: Day, events: impl IntoIterator<Item = &'a Event>) -> Summary {
        let mut fold = SummaryFold::new(day);
        for e in events {
            fold.add(
                e.user_id(),
                e.model(),
                e.prompt_tokens(),
                e.completion_tokens(),
            );
        }
        fold.finish()
    }

    /// Whether the summary agrees with itself: totals equal the sums per user and per
    /// model, and `total_tokens` is `prompt_tokens + completion_tokens` everywhere.
    pub fn is_self_consistent(&self) -> bool {
        let sum = |m: &BTreeMap<String, Totals>| m.values().fold(Totals::default(), Totals::plus);
        let each_ok =
            |t: &Totals| t.total_tokens == t.prompt_tokens.saturating_add(t.completion_tokens);
        self.format == 1
            && each_ok(&self.totals)
            && self.by_user.values().all(each_ok)
            && self.by_model.values().all(each_ok)
            && sum(&self.by_user) == self.totals
            && sum(&self.by_model) == self.totals
    }

    /// The canonical bytes of the summary (pretty JSON, keys in a fixed order).
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a summary always serializes");
        v.push(b'\n');
        v
    }
}

/// A [`Summary`] built one event at a time, holding only the totals (per user and per
/// model) and never the events: what compaction folds while it reads a day.
///
/// Folds can be built apart (one per reader thread) and [`absorb`](SummaryFold::absorb)ed
/// into one: sums saturate at `u64::MAX` and never go down, so the result does not depend
/// on the order.
///
/// # Examples
/// ```
/// use tmpa_core::maintenance::SummaryFold;
/// let day = "2026-11-23".parse().unwrap();
/// let (mut a, mut b) = (SummaryFold::new(day), SummaryFold::new(day));
/// a.add("u1", "m", 3, 4);
/// b.add("u2", "m", 1, 0);
/// a.absorb(b);
/// let s = a.finish();
/// assert_eq!((s.totals.events, s.totals.total_tokens, s.by_model["m"].events), (2, 8, 2));
/// ```
#[derive(Clone, Debug)]
pub struct SummaryFold {
    summary: Summary,
}

impl SummaryFold {
    /// An empty fold for `day`.
    pub fn new(day: Day) -> SummaryFold {
        SummaryFold {
            summary: Summary {
                format: 1,
                day: day.to_string(),
                totals: Totals::default(),
                by_user: BTreeMap::new(),
                by_model: BTreeMap::new(),
                source: String::new(),
            },
        }
    }

    /// Counts one event.
    pub fn add(&mut self, user_id: &str, model: &str, prompt_tokens: u64, completion_tokens: u64) {
        let s = &mut self.summary;
        s.totals.add(prompt_tokens, completion_tokens);
        totals_of(&mut s.by_user, user_id).add(prompt_tokens, completion_tokens);
        totals_of(&mut s.by_model, model).add(prompt_tokens, completion_tokens);
    }

    /// Adds everything `other` counted.
    pub fn absorb(&mut self, other: SummaryFold) {
        let (s, o) = (&mut self.summary, other.summary);
        s.totals = s.totals.plus(&o.totals);
        for (into, from) in [(&mut s.by_user, o.by_user), (&mut s.by_model, o.by_model)] {
            for (k, t) in from {
                let e = into.entry(k).or_default();
                *e = e.plus(&t);
            }
        }
    }

    /// Events counted so far.
    pub fn events(&self) -> u64 {
        self.summary.totals.events
    }

    /// The summary (with an empty `source`).
    pub fn finish(self) -> Summary {
        self.summary
    }
}

/// The totals of `key`, created empty the first time; allocates only for a new key.
fn totals_of<'m>(m: &'m mut BTreeMap<String, Totals>, key: &str) -> &'m mut Totals {
    if !m.contains_key(key) {
        m.insert(key.to_owned(), Totals::default());
    }
    m.get_mut(key).expect("inserted above")
}

/// The consistency stamp of a day directory state (see the module docs): the compacted
/// file's stamp and each loose event file's name and stamp, in name order.
pub fn source_stamp(compacted: Option<Stamp>, loose: &[(OsString, Stamp)]) -> String {
    let mut loose: Vec<&(OsString, Stamp)> = loose.iter().collect();
    loose.sort_by(|a, b| a.0.cmp(&b.0));
    let mut stamper = SourceStamper::new(compacted);
    for (n, s) in loose {
        stamper.add(n, s);
    }
    stamper.finish()
}

/// [`source_stamp`] made one loose file at a time, for a caller that cannot hold every
/// name of a day (tmpa-compact, which merges them from sorted runs on disk).
///
/// The loose files must be added in name order (`OsStr`'s, bytes), each once: the stamp
/// is the same as [`source_stamp`]'s of the same entries only then. That is not checked.
///
/// # Examples
/// ```
/// use tmpa_core::maintenance::{SourceStamper, Stamp, source_stamp};
/// let s = |ino| Stamp { dev: 1, ino, size: 9, mtime_ns: 5, ctime_ns: 5 };
/// let mut stamper = SourceStamper::new(None);
/// stamper.add("evt_a.json".as_ref(), &s(1));
/// stamper.add("evt_b.json".as_ref(), &s(2));
/// let loose = [("evt_b.json".into(), s(2)), ("evt_a.json".into(), s(1))];
/// assert_eq!(stamper.finish(), source_stamp(None, &loose));
/// ```
#[derive(Clone, Debug)]
pub struct SourceStamper {
    h: Sha256,
}

impl SourceStamper {
    /// A stamp of the state with the compacted file `compacted` (`None`: there is none).
    pub fn new(compacted: Option<Stamp>) -> SourceStamper {
        let mut h = Sha256::new();
        match compacted {
            Some(s) => h.update(format!("compacted{}", stamp_line(&s))),
            None => h.update("compacted none\n"),
        }
        SourceStamper { h }
    }

    /// Adds the loose file `name` with its stamp (after every name before it).
    pub fn add(&mut self, name: &OsStr, stamp: &Stamp) {
        self.h.update(name.as_bytes());
        self.h.update(stamp_line(stamp));
    }

    /// The stamp.
    pub fn finish(self) -> String {
        format!("v3:{}", &hex(&self.h.finalize())[..32])
    }
}

/// What a stamp hashes of a file's stamp.
fn stamp_line(s: &Stamp) -> String {
    format!(" {} {} {}\n", s.ino, s.size, s.mtime_ns)
}

/// A day's summary as [`Root::summary`](crate::Root::summary) returns it (see its example).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SummaryRead {
    /// The summary of every event of the day that could be read. Its `source` is the
    /// cache's stamp when it came from the cache or was written to it, else empty.
    pub summary: Summary,
    /// Whether every event of the day was read for it (the first summary of a day in this
    /// process without a current cache, or after `_compacted.json` changed); `false` when
    /// it came from what this process knew and the files that changed, or from the cache.
    pub rebuilt: bool,
    /// What it could not count, on every call until it is repaired: a corrupt or
    /// conflicting loose file, a damaged line of `_compacted.json` (with its `line`); and
    /// a failed rewrite of the cache. Empty: the totals cover every event of the day.
    pub problems: Vec<Problem>,
}

impl SummaryRead {
    /// The summary, only if it covers every event of the day.
    ///
    /// # Errors
    /// [`crate::Error::Corrupt`] naming the first file (and line) it could not count.
    pub fn complete(self) -> Result<Summary> {
        match self
            .problems
            .iter()
            .find(|p| !p.path.ends_with(crate::day::SUMMARY_NAME))
        {
            None => Ok(self.summary),
            Some(p) => Err(crate::error::Error::Corrupt {
                path: p.path.clone(),
                reason: match p.line {
                    Some(n) => format!("line {n}: {}", p.reason),
                    None => p.reason.clone(),
                },
            }),
        }
    }
}

/// Reads the cached summary of the day directory `dir`; `None` when missing, unreadable,
/// of another day or not self-consistent.
pub fn read_cached(dir: &Dir, day: Day) -> Option<Summary> {
    let (bytes, _) = dir.read(SUMMARY_NAME, SUMMARY_BYTES_MAX).ok()?;
    let s: Summary = serde_json::from_slice(&bytes).ok()?;
    (s.day == day.to_string() && s.is_self_consistent()).then_some(s)
}

/// Writes `summary` into the day directory `dir` atomically.
///
/// # Errors
/// [`crate::Error::Io`] naming the path.
pub fn write_summary(dir: &Dir, summary: &Summary) -> Result<()> {
    crate::fs::write_in(dir, OsStr::new(SUMMARY_NAME), &summary.to_json(), false)
}
