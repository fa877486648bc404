//! The patrol's memory: the counts of its previous runs (temporaries, corrupt files, the
//! largest directories) in `{root}/.tmpa/patrol/history.json`, and the `growth` check
//! they feed: how much each count grew since the last run and per hour, and whether it
//! kept growing run after run (the card's post-deploy rule: "if `.tmp` keeps growing,
//! check the backend's error logs first").

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tmpa_core::Root;
use tmpa_core::maintenance::{STATE_DIR, root_dir, write_in};

use crate::{Check, Perf, Status, jobs::fmt_age};

/// The file, in `{root}/.tmpa/patrol/`.
pub const HISTORY_NAME: &str = "history.json";
/// Runs remembered (the oldest are dropped): eight hours of the crontab's five-minute
/// patrols.
pub const HISTORY_RUNS_MAX: usize = 96;
/// Largest directories remembered per run.
pub const LARGEST_MAX: usize = 5;
/// Largest history file read.
const HISTORY_BYTES_MAX: u64 = 4 << 20;
const FORMAT: u32 = 1;

/// The patrol's state directory, relative to the root.
fn state_rel() -> PathBuf {
    Path::new(STATE_DIR).join("patrol")
}

/// A directory and its number of entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirCount {
    /// Relative to the root.
    pub path: String,
    /// Entries.
    pub entries: u64,
}

/// What one patrol run counted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// When (Unix seconds).
    pub at_unix: i64,
    /// Temporaries in the data tree, fresh or stale.
    pub temporaries: u64,
    /// Corrupt JSON files (`None` when they could not be counted).
    pub corrupt: Option<u64>,
    /// The largest inboxes and day directories, largest first.
    pub largest: Vec<DirCount>,
}

/// The runs remembered, oldest first.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct History {
    /// Always 1 (the format of this file).
    pub format: u32,
    /// Oldest first, at most [`HISTORY_RUNS_MAX`].
    pub samples: Vec<Sample>,
}

impl History {
    /// The history of `root`; empty when there is none, or it cannot be read or parsed (a
    /// damaged history starts again; it is only ever a comparison).
    pub fn load(root: &Root) -> History {
        root_dir(root)
            .open_dir(state_rel())
            .and_then(|d| d.read(HISTORY_NAME, HISTORY_BYTES_MAX))
            .ok()
            .and_then(|(b, _)| serde_json::from_slice::<History>(&b).ok())
            .filter(|h| h.format == FORMAT)
            .unwrap_or_default()
    }

    /// Adds `sample`, dropping the oldest beyond [`HISTORY_RUNS_MAX`].
    pub fn push(&mut self, sample: Sample) {
        self.format = FORMAT;
        self.samples.push(sample);
        let extra = self.samples.len().saturating_sub(HISTORY_RUNS_MAX);
        self.samples.drain(..extra);
    }

    /// Writes the history atomically to `{root}/.tmpa/patrol/history.json`.
    ///
    /// # Errors
    /// [`tmpa_core::Error::Io`] naming the directory or file.
    pub fn save(&self, root: &Root) -> tmpa_core::Result<()> {
        let dir = root_dir(root).create_dir_all(state_rel())?;
        let mut bytes = serde_json::to_vec(self).expect("a history serializes");
        bytes.push(b'\n');
        write_in(&dir, OsStr::new(HISTORY_NAME), &bytes, false)
    }
}

/// What is tracked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tracked {
    /// Temporaries, fresh or stale.
    Temporaries,
    /// Corrupt JSON files.
    CorruptJson,
    /// One of the largest directories (its path is given).
    Directory,
}

impl Tracked {
    /// The name in reports and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Tracked::Temporaries => "temporaries",
            Tracked::CorruptJson => "corrupt_json",
            Tracked::Directory => "directory",
        }
    }
}

/// The growth of one count.
#[derive(Clone, Debug, Serialize)]
pub struct Item {
    /// What.
    pub what: Tracked,
    /// The directory, for [`Tracked::Directory`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Now.
    pub now: u64,
    /// At the previous run (`None`: not counted then).
    pub previous: Option<u64>,
    /// `now - previous`.
    pub delta: Option<i64>,
    /// The change per hour over the time since the previous run.
    pub per_hour: Option<f64>,
    /// Runs in a row (this one included) in which it grew by more than
    /// `--growth-warning`.
    pub streak: u32,
}

impl Item {
    fn label(&self) -> String {
        self.path
            .clone()
            .unwrap_or_else(|| self.what.as_str().to_owned())
    }
}

/// Growth since the previous run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Growth {
    /// When the previous run was (Unix seconds), if there was one.
    pub previous_at_unix: Option<i64>,
    /// Seconds since then.
    pub interval_secs: Option<i64>,
    /// Each count.
    pub items: Vec<Item>,
}

/// The thresholds of the `growth` check.
#[derive(Clone, Copy, Debug)]
pub struct Thresholds {
    /// Temporaries and corrupt files grow in a run when they rose by more than this.
    pub per_run: u64,
    /// A directory grows in a run when it gained more than this many entries (a day's
    /// directory gains events all day: only a flood counts).
    pub dir_per_run: u64,
    /// Warning when a count grew in this many runs in a row.
    pub runs: u32,
}

fn value_of(s: &Sample, what: Tracked, path: Option<&str>) -> Option<u64> {
    match what {
        Tracked::Temporaries => Some(s.temporaries),
        Tracked::CorruptJson => s.corrupt,
        Tracked::Directory => s
            .largest
            .iter()
            .find(|d| Some(d.path.as_str()) == path)
            .map(|d| d.entries),
    }
}

/// The growth of each count of `now` against `past` (oldest first).
pub fn growth(past: &[Sample], now: &Sample, t: Thresholds) -> Growth {
    let prev = past.last();
    let interval = prev.map(|p| (now.at_unix - p.at_unix).max(1));
    let mut tracked: Vec<(Tracked, Option<String>)> =
        vec![(Tracked::Temporaries, None), (Tracked::CorruptJson, None)];
    tracked.extend(
        now.largest
            .iter()
            .map(|d| (Tracked::Directory, Some(d.path.clone()))),
    );
    let items = tracked
        .into_iter()
        .filter_map(|(what, path)| {
            let cur = value_of(now, what, path.as_deref())?;
            let previous = prev.and_then(|p| value_of(p, what, path.as_deref()));
            let delta = previous.map(|p| cur as i64 - p as i64);
            let per_hour = delta
                .zip(interval)
                .map(|(d, secs)| d as f64 * 3600.0 / secs as f64);
            // Runs in a row, newest first, in which the count grew by more than the
            // threshold.
            let mut streak = 0;
            let mut later = cur;
            let over = if what == Tracked::Directory {
                t.dir_per_run
            } else {
                t.per_run
            };
            for s in past.iter().rev() {
                match value_of(s, what, path.as_deref()) {
                    Some(v) if later > v && later - v > over => {
                        streak += 1;
                        later = v;
                    }
                    _ => break,
                }
            }
            Some(Item {
                what,
                path,
                now: cur,
                previous,
                delta,
                per_hour,
                streak,
            })
        })
        .collect();
    Growth {
        previous_at_unix: prev.map(|p| p.at_unix),
        interval_secs: interval,
        items,
    }
}

/// The `growth` check: warning when a count grew in `--growth-runs` runs in a row.
pub fn check(g: &Growth, t: Thresholds) -> Check {
    let name = "growth";
    let longest = g.items.iter().map(|i| i.streak).max().unwrap_or(0);
    let Some(interval) = g.interval_secs else {
        let mut c = Check::new(
            name,
            Status::Ok,
            Some(0.0),
            "first run: nothing to compare with yet (the counts are remembered from now on)".into(),
        );
        c.perf.push(perf(0.0, t));
        return c;
    };
    let growing: Vec<&Item> = g.items.iter().filter(|i| i.streak >= t.runs).collect();
    let status = if growing.is_empty() {
        Status::Ok
    } else {
        Status::Warning
    };
    let mut detail = format!("since the last run {} ago: ", fmt_age(interval as f64));
    let parts: Vec<String> = g.items.iter().map(words).collect();
    detail.push_str(&parts.join(", "));
    let _ = write!(
        detail,
        "; warning when temporaries or corrupt files grow by more than {} (a directory by more than {} entries) in {} runs in a row",
        t.per_run, t.dir_per_run, t.runs
    );
    let mut c = Check::new(name, status, Some(f64::from(longest)), detail);
    c.findings = growing
        .iter()
        .map(|i| {
            format!(
                "{} grew in {} runs in a row (now {})",
                i.label(),
                i.streak,
                i.now
            )
        })
        .collect();
    c.perf.push(perf(f64::from(longest), t));
    c
}

fn perf(v: f64, t: Thresholds) -> Perf {
    Perf {
        label: "growth_streak_runs",
        value: Some(v),
        uom: "",
        warn: Some(f64::from(t.runs.saturating_sub(1))),
        crit: None,
    }
}

/// `temporaries 12 (+5, +25/h)`.
pub fn words(i: &Item) -> String {
    match (i.delta, i.per_hour) {
        (Some(d), Some(h)) => format!("{} {} ({d:+}, {:+}/h)", i.label(), i.now, h.round() as i64),
        _ => format!("{} {} (new)", i.label(), i.now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: i64, tmp: u64) -> Sample {
        Sample {
            at_unix: at,
            temporaries: tmp,
            corrupt: Some(0),
            largest: vec![DirCount {
                path: "token_stats/2026-12-01".into(),
                entries: 10,
            }],
        }
    }

    const T: Thresholds = Thresholds {
        per_run: 0,
        dir_per_run: 0,
        runs: 3,
    };

    #[test]
    fn streak_counts_consecutive_growth_only() {
        let past = [
            sample(0, 5),
            sample(600, 1),
            sample(1200, 2),
            sample(1800, 3),
        ];
        let g = growth(&past, &sample(2400, 7), T);
        let tmp = &g.items[0];
        assert_eq!((tmp.previous, tmp.delta, tmp.streak), (Some(3), Some(4), 3));
        assert_eq!(tmp.per_hour, Some(24.0));
        assert_eq!(check(&g, T).status, Status::Warning);
        // The directory stayed at 10 entries: no growth.
        assert_eq!(g.items[2].streak, 0);
    }

    #[test]
    fn growth_within_the_threshold_does_not_count() {
        let past = [sample(0, 1), sample(600, 2), sample(1200, 3)];
        let t = Thresholds {
            per_run: 1,
            dir_per_run: 1,
            runs: 2,
        };
        let g = growth(&past, &sample(1800, 4), t);
        assert_eq!(g.items[0].streak, 0);
        assert_eq!(check(&g, t).status, Status::Ok);
    }

    #[test]
    fn first_run_is_ok_and_says_so() {
        let g = growth(&[], &sample(0, 100), T);
        let c = check(&g, T);
        assert_eq!(c.status, Status::Ok);
        assert!(c.detail.starts_with("first run"));
    }

    #[test]
    fn history_keeps_the_newest_runs() {
        let mut h = History::default();
        for i in 0..(HISTORY_RUNS_MAX as i64 + 10) {
            h.push(sample(i, 0));
        }
        assert_eq!(h.samples.len(), HISTORY_RUNS_MAX);
        assert_eq!(h.samples[0].at_unix, 10);
    }
}
