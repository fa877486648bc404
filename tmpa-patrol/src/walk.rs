//! The one walk of the tree that feeds `directories`, `inbox_files`, `token_stats_files`,
//! `tmp_files` and `corrupt_json`.
//!
//! Only the three data directories are walked (`.tmpa/` is the programs' own state).
//! Every directory is held by descriptor (tmpa-core's file layer), so symlinks are never
//! followed: an entry's type comes from the directory listing (`d_type`, or `fstatat`
//! where the file system does not fill it in). The walk stats only what a check needs:
//! temporaries (for their age) and `.json` files (for the cache key).

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tmpa_core::Root;
use tmpa_core::maintenance::{
    COMPACTED_NAME, DATA_DIRS, Dir, Entries, Kind, SUMMARY_NAME, map_ordered_on, root_dir,
    temporary_of,
};

pub use tmpa_core::maintenance::Stamp;

use crate::{Args, Check, FINDINGS_MAX, Perf, Status, rel_text};

/// Deepest directory walked, counted from the root. The tree is four levels deep; a
/// deeper one is a mistake or an attack, reported rather than followed down.
pub const DEPTH_MAX: usize = 16;

/// Most `.json` files remembered for parsing (about 250 bytes each in memory with their
/// verdicts, so at most about 1 GB). Beyond it, the rest are counted but not parsed, and
/// `corrupt_json` is a warning that says so.
pub const JSON_FILES_MAX: usize = 4_000_000;
/// Threads that `stat` the listed files (more than cores: they mostly wait on inodes).
/// Not `READ_THREADS_MAX`, which caps CPU-bound parsing at the cores (tmpa-core par.rs
/// "Thread counts"): this one is a number of requests in flight, on any machine.
const STAT_THREADS: usize = 4;
/// Files a `stat` worker takes at a time.
const STAT_CHUNK: usize = 4096;

/// What a `.json` file is, from where it lies; decides how it is validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JsonKind {
    /// `token_stats/{day}/evt_{id}.json`: a full event check (docs/FORMAT.md "The tree"); the id is taken
    /// from the file name when it is checked (not held in memory for every file).
    Event,
    /// `token_stats/{day}/_compacted.json`: the whole format.
    Compacted {
        /// The day of its directory.
        day: tmpa_core::Day,
    },
    /// `chat_history/{user}/sessions/{session}.json` and `_summary.json`: a JSON object.
    Object,
    /// Any other `.json`: well-formed JSON.
    Other,
}

/// A `.json` file found by the walk.
#[derive(Clone, Debug)]
pub struct JsonFile {
    /// Its path.
    pub path: PathBuf,
    /// Its directory: an index into [`Walk::dirs`].
    pub dir: u32,
    /// Its stamp when listed (`None` when it is not a regular file).
    pub stamp: Option<Stamp>,
    /// How to validate it.
    pub kind: JsonKind,
}

/// Counts from the walk, for the report and the metrics.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    /// Directories listed.
    pub dirs: u64,
    /// Entries seen (files, directories, anything).
    pub entries: u64,
    /// Inbox directories.
    pub inboxes: u64,
    /// Day directories under token_stats/.
    pub days: u64,
    /// `.json` files.
    pub json_files: u64,
    /// Temporaries (docs/FORMAT.md "Temporaries"), fresh or stale.
    pub tmp_files: u64,
}

/// Everything the walk found.
#[derive(Debug, Default)]
pub struct Walk {
    /// Required directories that are missing, symlinks or not directories.
    pub missing: Vec<String>,
    /// Directories that could not be listed, or were too deep to enter.
    pub errors: Vec<String>,
    /// Each inbox and its number of entries.
    pub inboxes: Vec<(PathBuf, u64)>,
    /// Each day directory and its number of entries.
    pub days: Vec<(PathBuf, u64)>,
    /// Each temporary and its modification time.
    pub tmp: Vec<(PathBuf, SystemTime)>,
    /// The `.json` files, up to [`JSON_FILES_MAX`].
    pub json: Vec<JsonFile>,
    /// The directories of the `.json` files, relative to the root.
    pub dirs: Vec<PathBuf>,
    /// `.json` files beyond [`JSON_FILES_MAX`], not parsed.
    pub json_not_listed: u64,
    /// Totals.
    pub totals: Totals,
}

/// What a directory is, from its path relative to the root.
#[derive(Clone, Copy, PartialEq, Eq)]
enum DirKind {
    Inbox,
    Day,
    Other,
}

fn dir_kind(rel: &[&[u8]]) -> DirKind {
    match rel {
        [b"notifications", _, b"inbox"] => DirKind::Inbox,
        [b"token_stats", _] => DirKind::Day,
        _ => DirKind::Other,
    }
}

fn json_kind(rel: &[&[u8]], name: &[u8]) -> JsonKind {
    let text = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_owned);
    match rel {
        [b"token_stats", day] => {
            if name.starts_with(b"evt_") {
                return JsonKind::Event;
            }
            if name == COMPACTED_NAME.as_bytes()
                && let Some(day) = text(day).and_then(|d| d.parse().ok())
            {
                return JsonKind::Compacted { day };
            }
            if name == SUMMARY_NAME.as_bytes() {
                return JsonKind::Object;
            }
            JsonKind::Other
        }
        [b"chat_history", _, b"sessions"] => JsonKind::Object,
        _ => JsonKind::Other,
    }
}

/// Walks the three data directories of `root` once, and checks that `required` exist.
pub fn walk(root: &Root, required: &[String]) -> Walk {
    let mut w = Walk::default();
    let top = root_dir(root);
    for d in required {
        match top.open_dir(d) {
            Ok(_) => {}
            Err(tmpa_core::Error::Unsafe { .. }) => {
                let link = top
                    .stat(d)
                    .ok()
                    .flatten()
                    .is_some_and(|m| m.kind == Kind::Symlink);
                w.missing.push(if link {
                    format!("{d}/ is a symlink (not followed)")
                } else {
                    format!("{d}/ is not a directory")
                });
            }
            Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => {
                w.missing.push(format!("{d}/ is missing"));
            }
            Err(e) => w.missing.push(format!("{d}/: {}", io_words(&e))),
        }
    }
    let mut to_stat = Vec::new();
    for d in DATA_DIRS {
        if let Ok(dir) = top.open_dir(d) {
            walk_tree(root, dir, PathBuf::from(d), &mut w, &mut to_stat);
        }
    }
    stat_json(root, &mut w, &to_stat);
    w.inboxes.sort();
    w.days.sort();
    w.tmp.sort();
    w.totals.inboxes = w.inboxes.len() as u64;
    w.totals.days = w.days.len() as u64;
    w.totals.tmp_files = w.tmp.len() as u64;
    w
}

/// The operating system's words for an error, without the path.
fn io_words(e: &tmpa_core::Error) -> String {
    match e {
        tmpa_core::Error::Io { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// Stats the listed regular `.json` files (`to_stat`: indices into `w.json`) on several
/// threads: on a large tree the walk's time is these `stat`s (inode reads), and several in
/// flight at once finish sooner, warm or cold. A file gone since the listing (deleted by
/// compaction, say) is dropped: it is not corrupt.
fn stat_json(root: &Root, w: &mut Walk, to_stat: &[usize]) {
    // Chunks of consecutive files (the walk lists a directory's files together), each
    // stat'ed relative to its directory's descriptor.
    let chunks: Vec<&[usize]> = to_stat.chunks(STAT_CHUNK).collect();
    let (json, dirs) = (&w.json, &w.dirs);
    let stamps: Vec<Option<Stamp>> = map_ordered_on(STAT_THREADS, &chunks, |chunk| {
        stat_chunk(root, dirs, json, chunk)
    })
    .into_iter()
    .flatten()
    .collect();
    let mut gone = Vec::new();
    for (&i, stamp) in to_stat.iter().zip(stamps) {
        match stamp {
            Some(s) => w.json[i].stamp = Some(s),
            None => gone.push(i),
        }
    }
    if !gone.is_empty() {
        let mut k = 0;
        w.json.retain(|_| {
            let keep = gone.binary_search(&k).is_err();
            k += 1;
            keep
        });
    }
}

/// Stamps of the files `chunk` (indices into `json`), `None` for one that is gone.
fn stat_chunk(
    root: &Root,
    dirs: &[PathBuf],
    json: &[JsonFile],
    chunk: &[usize],
) -> Vec<Option<Stamp>> {
    let mut held = HeldDir::default();
    chunk
        .iter()
        .map(|&i| {
            let f = &json[i];
            let dir = held.get(root, dirs, f.dir)?;
            let m = dir.stat(f.path.file_name()?).ok()??;
            (m.kind == Kind::File).then_some(m.stamp)
        })
        .collect()
}

/// The directory of the last file looked at, held by descriptor, reopened from the root
/// when the next file is in another.
#[derive(Default)]
pub(crate) struct HeldDir {
    last: Option<(u32, Option<Dir>)>,
}

impl HeldDir {
    /// The directory `index` of `dirs`, `None` when it cannot be opened (gone, or now a
    /// symlink).
    pub(crate) fn get(&mut self, root: &Root, dirs: &[PathBuf], index: u32) -> Option<&Dir> {
        if self.last.as_ref().is_none_or(|(i, _)| *i != index) {
            let dir = root_dir(root).open_dir(&dirs[index as usize]).ok();
            self.last = Some((index, dir));
        }
        self.last.as_ref()?.1.as_ref()
    }
}

struct Level {
    dir: Dir,
    rel: PathBuf,
    stream: Entries,
    kind: DirKind,
    entries: u64,
    json_dir: Option<u32>,
}

/// Depth-first over one data directory, one open stream per level.
fn walk_tree(root: &Root, top: Dir, rel: PathBuf, w: &mut Walk, to_stat: &mut Vec<usize>) {
    let mut stack: Vec<Level> = Vec::new();
    if let Some(l) = enter(root, top, rel, w) {
        stack.push(l);
    }
    while let Some(level) = stack.last_mut() {
        let entry = match level.stream.next() {
            None => {
                let done = stack.pop().expect("a level");
                leave(root, done, w);
                continue;
            }
            Some(Err(e)) => {
                w.errors.push(format!(
                    "{}: listing stopped: {}",
                    rel_text(root, &root.path().join(&level.rel)),
                    io_words(&e)
                ));
                let done = stack.pop().expect("a level");
                leave(root, done, w);
                continue;
            }
            Some(Ok(e)) => e,
        };
        level.entries += 1;
        let name: OsString = entry.name;
        let kind = match entry.kind {
            Some(k) => Some(k),
            None => level.dir.stat(&name).ok().flatten().map(|m| m.kind),
        };
        let path = root.path().join(&level.rel).join(&name);
        if kind == Some(Kind::Directory) {
            let depth = level.rel.components().count();
            if depth + 1 >= DEPTH_MAX {
                w.errors.push(format!(
                    "{}: deeper than {DEPTH_MAX} levels, not walked",
                    rel_text(root, &path)
                ));
                continue;
            }
            let child_rel = level.rel.join(&name);
            match level.dir.open_dir(&name) {
                Ok(d) => {
                    if let Some(l) = enter(root, d, child_rel, w) {
                        stack.push(l);
                    }
                }
                // Removed since it was listed (an emptied day, say), or swapped for a
                // symlink: nothing to check.
                Err(tmpa_core::Error::Unsafe { .. }) => {}
                Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => w.errors.push(format!(
                    "{}: cannot list: {}",
                    rel_text(root, &path),
                    io_words(&e)
                )),
            }
            continue;
        }
        if temporary_of(&name).is_some() {
            // The age of the entry itself, never of a link's target, by tmpa-tmpclean's
            // rule: since its last change, of content (mtime) or inode (ctime, which no
            // one can set back), so that both call the same file stale.
            if let Ok(Some(m)) = level.dir.stat(&name) {
                let changed = SystemTime::UNIX_EPOCH
                    + Duration::from_nanos(u64::try_from(m.stamp.changed_ns()).unwrap_or(0));
                w.tmp.push((path, changed));
            }
            continue;
        }
        if name.as_bytes().ends_with(b".json") {
            w.totals.json_files += 1;
            if w.json.len() >= JSON_FILES_MAX {
                w.json_not_listed += 1;
                continue;
            }
            // Regular files are stat'ed after the walk, all at once (`stat_json`).
            if kind == Some(Kind::File) {
                to_stat.push(w.json.len());
            }
            let rel_parts: Vec<&[u8]> = level
                .rel
                .components()
                .map(|c| c.as_os_str().as_bytes())
                .collect();
            let jkind = json_kind(&rel_parts, name.as_bytes());
            let dir = *level.json_dir.get_or_insert_with(|| {
                w.dirs.push(level.rel.clone());
                u32::try_from(w.dirs.len() - 1).expect("fewer directories than files")
            });
            w.json.push(JsonFile {
                path,
                dir,
                stamp: None,
                kind: jkind,
            });
        }
    }
}

/// Starts listing a directory.
fn enter(root: &Root, dir: Dir, rel: PathBuf, w: &mut Walk) -> Option<Level> {
    let stream = match dir.entries() {
        Ok(s) => s,
        Err(e) => {
            w.errors.push(format!(
                "{}: cannot list: {}",
                rel_text(root, &root.path().join(&rel)),
                io_words(&e)
            ));
            return None;
        }
    };
    w.totals.dirs += 1;
    let parts: Vec<&[u8]> = rel.components().map(|c| c.as_os_str().as_bytes()).collect();
    let kind = dir_kind(&parts);
    Some(Level {
        dir,
        rel,
        stream,
        kind,
        entries: 0,
        json_dir: None,
    })
}

/// Records a directory once it is listed whole.
fn leave(root: &Root, level: Level, w: &mut Walk) {
    w.totals.entries += level.entries;
    let path = root.path().join(&level.rel);
    match level.kind {
        DirKind::Inbox => w.inboxes.push((path, level.entries)),
        DirKind::Day => w.days.push((path, level.entries)),
        DirKind::Other => {}
    }
}

/// `directories`: required directories exist as real directories; every directory of
/// the data tree could be listed.
pub fn directories_check(w: &Walk) -> Check {
    let (status, detail) = if !w.missing.is_empty() {
        (Status::Critical, w.missing.join("; "))
    } else if !w.errors.is_empty() {
        (
            Status::Warning,
            format!(
                "{} director{} could not be walked",
                w.errors.len(),
                if w.errors.len() == 1 { "y" } else { "ies" }
            ),
        )
    } else {
        (
            Status::Ok,
            format!(
                "required directories present; {} directories walked",
                w.totals.dirs
            ),
        )
    };
    let mut c = Check::new("directories", status, Some(w.missing.len() as f64), detail);
    c.findings = w.errors.iter().take(FINDINGS_MAX).cloned().collect();
    c.perf.push(Perf {
        label: "directories_missing",
        value: c.value,
        uom: "",
        warn: None,
        crit: Some(0.0),
    });
    c
}

/// `inbox_files` / `token_stats_files`: the largest directory's entry count against the
/// thresholds; findings list every directory over the warning threshold, largest first.
pub fn count_check(
    name: &'static str,
    label: &'static str,
    (what, whats): (&str, &str),
    root: &Root,
    dirs: &[(PathBuf, u64)],
    warning: u64,
    critical: u64,
) -> Check {
    let max = dirs
        .iter()
        .max_by_key(|(p, n)| (*n, std::cmp::Reverse(p.clone())));
    let value = max.map_or(0, |(_, n)| *n);
    let status = Status::of_threshold(value as f64, warning as f64, critical as f64);
    let mut over: Vec<&(PathBuf, u64)> = dirs.iter().filter(|(_, n)| *n > warning).collect();
    over.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let detail = match max {
        None => format!("no {whats} found"),
        Some((p, n)) => format!(
            "largest {what} {} has {n} entries ({} {whats}, {} over {warning}); warning >{warning}, critical >{critical}",
            rel_text(root, p),
            dirs.len(),
            over.len(),
        ),
    };
    let mut c = Check::new(name, status, Some(value as f64), detail);
    c.findings = over
        .iter()
        .take(FINDINGS_MAX)
        .map(|(p, n)| format!("{}: {n} entries", rel_text(root, p)))
        .collect();
    c.perf.push(Perf {
        label,
        value: c.value,
        uom: "",
        warn: Some(warning as f64),
        crit: Some(critical as f64),
    });
    c
}

/// `tmp_files`: temporaries unchanged (mtime and ctime) for longer than
/// `--tmp-older-than`, against the thresholds. A
/// fresh temporary is a write in flight and normal; a stale one is a write that died,
/// which tmpa-tmpclean should have removed (or an orphan it keeps for a person).
pub fn tmp_check(root: &Root, w: &Walk, args: &Args, now: SystemTime) -> Check {
    let stale: Vec<&(PathBuf, SystemTime)> = w
        .tmp
        .iter()
        .filter(|(_, m)| now.duration_since(*m).unwrap_or(Duration::ZERO) > args.tmp_older_than)
        .collect();
    let n = stale.len() as u64;
    let status = Status::of_threshold(n as f64, args.tmp_warning as f64, args.tmp_critical as f64);
    let detail = format!(
        "{n} temporaries older than {} ({} in all); warning >{}, critical >{}",
        crate::jobs::fmt_age(args.tmp_older_than.as_secs_f64()),
        w.tmp.len(),
        args.tmp_warning,
        args.tmp_critical
    );
    let mut c = Check::new("tmp_files", status, Some(n as f64), detail);
    c.findings = stale
        .iter()
        .take(FINDINGS_MAX)
        .map(|(p, _)| rel_text(root, p))
        .collect();
    c.perf.push(Perf {
        label: "tmp_files_stale",
        value: c.value,
        uom: "",
        warn: Some(args.tmp_warning as f64),
        crit: Some(args.tmp_critical as f64),
    });
    c.perf.push(Perf {
        label: "tmp_files",
        value: Some(w.tmp.len() as f64),
        uom: "",
        warn: None,
        crit: None,
    });
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_layout() {
        assert!(dir_kind(&[b"notifications", b"u1", b"inbox"]) == DirKind::Inbox);
        assert!(dir_kind(&[b"token_stats", b"2026-11-01"]) == DirKind::Day);
        assert!(dir_kind(&[b"notifications", b"u1", b"ack"]) == DirKind::Other);
        assert_eq!(
            json_kind(&[b"token_stats", b"2026-11-01"], b"evt_a.json"),
            JsonKind::Event
        );
        assert!(matches!(
            json_kind(&[b"token_stats", b"2026-11-01"], b"_compacted.json"),
            JsonKind::Compacted { .. }
        ));
        assert_eq!(
            json_kind(&[b"token_stats", b"junk"], b"_compacted.json"),
            JsonKind::Other
        );
        assert_eq!(
            json_kind(&[b"chat_history", b"u", b"sessions"], b"s.json"),
            JsonKind::Object
        );
    }
}
