//! `corrupt_json`: every `.json` file of the data tree parsed, bounded in size, on every
//! core; with `--incremental`, only the files that changed since they were last parsed.
//!
//! What "valid" means depends on where a file lies: a loose event must be a valid event
//! whose `id` matches its name (docs/FORMAT.md "The tree"); a `_compacted.json` must be the whole format
//! (sorted, unique, valid events); a session and a `_summary.json` must be a JSON object;
//! anything else must be well-formed JSON. Syntax-only checks use `IgnoredAny`, so a large
//! session costs its bytes and not a JSON tree.
//!
//! ## The incremental cache
//! Under `{root}/.tmpa/patrol/json-cache/`, 256 bucket files (by a hash of the file's
//! directory), each a line per file: size, mtime, ctime, inode, when it was checked, the
//! verdict and the path. A file whose four keys are unchanged and whose verdict is younger
//! than `--cache-max-age` is not read again. Only buckets that changed are rewritten (each
//! atomically), so a patrol every five minutes on a million files rewrites a few small
//! files, not one large one.
//!
//! Trade-off: a file whose bytes change while its size, mtime, ctime and inode do not
//! (a disk or file-system fault, a write to the raw device) is missed until its verdict
//! is older than `--cache-max-age` or `--full` is given. Ordinary writes, renames and even
//! `touch -d` change the ctime, which no user can set.

use std::collections::HashMap;
use std::convert::Infallible;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::de::IgnoredAny;
use tmpa_core::maintenance::{
    COMPACTED_BYTES_MAX, Dir, EVENT_BYTES_MAX, READ_THREADS_MAX, SESSION_BYTES_MAX, STATE_DIR,
    Streamed, cores_up_to, event_id_from_file_name, for_each_ordered, parse_compacted, root_dir,
    write_in,
};
use tmpa_core::{Error, Event, Root};

use crate::walk::{HeldDir, JsonFile, JsonKind, Stamp, Walk};
use crate::{Check, FINDINGS_MAX, Perf, Status, rel_text};

/// Largest `.json` read that is neither an event, a compacted file nor a session.
pub const OTHER_BYTES_MAX: u64 = 64 << 20;
/// Largest cache bucket read.
pub const BUCKET_BYTES_MAX: u64 = 256 << 20;
/// Number of cache buckets.
pub const BUCKETS: usize = 256;
/// Fewer files than this are parsed on the calling thread (threads would cost more).
const PARALLEL_FILES_MIN: usize = 256;
/// Files a worker takes at a time.
const CHUNK: usize = 32;
const CACHE_HEADER: &str = "tmpa-patrol json-cache v2";

/// How the check runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Use and update the cache.
    pub incremental: bool,
    /// Ignore the cache (but rebuild it).
    pub full: bool,
    /// Re-parse a cached file whose verdict is older than this.
    pub cache_max_age: Duration,
    /// Warning when more than this many files are corrupt.
    pub warning: u64,
    /// Critical when more than this many files are corrupt.
    pub critical: u64,
}

/// The verdict on one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Valid.
    Ok,
    /// Corrupt, with the reason.
    Corrupt(String),
    /// Could not be read (permissions, I/O); not cached.
    Unreadable(String),
    /// Gone since the walk (deleted by compaction): not counted.
    Gone,
}

/// A verdict and the stamp of the bytes it is about (from the open descriptor), when
/// they were read.
#[derive(Clone, Debug)]
struct Outcome {
    verdict: Verdict,
    stamp: Option<Stamp>,
    checked_at: u64,
    from_cache: bool,
}

/// Validates one file, read through its directory (`held` keeps the last one open).
fn validate(
    root: &Root,
    dirs: &[PathBuf],
    held: &mut HeldDir,
    file: &JsonFile,
) -> (Verdict, Option<Stamp>) {
    if file.stamp.is_none() {
        return (
            Verdict::Corrupt("is not a regular file (symlinks are not followed)".into()),
            None,
        );
    }
    let Some(dir) = held.get(root, dirs, file.dir) else {
        // Its directory is gone (or swapped for a symlink) since the walk.
        return (Verdict::Gone, None);
    };
    let Some(name) = file.path.file_name() else {
        return (Verdict::Gone, None);
    };
    let bytes_max = match file.kind {
        JsonKind::Event => EVENT_BYTES_MAX,
        JsonKind::Compacted { .. } => COMPACTED_BYTES_MAX,
        JsonKind::Object => SESSION_BYTES_MAX,
        JsonKind::Other => OTHER_BYTES_MAX,
    };
    let (bytes, meta) = match dir.read(name, bytes_max) {
        Ok(r) => r,
        Err(e) if e.io_kind() == io::ErrorKind::NotFound => return (Verdict::Gone, None),
        Err(Error::Corrupt { reason, .. }) => return (Verdict::Corrupt(reason), None),
        Err(e) => return (Verdict::Unreadable(e.chain()), None),
    };
    let stamp = Some(meta.stamp);
    let verdict = match &file.kind {
        JsonKind::Event => match Event::from_json(&bytes) {
            Ok(e) if Some(e.id().as_str()) == event_id(&file.path) => Verdict::Ok,
            Ok(e) => Verdict::Corrupt(format!(
                "holds id {:?} but its name says {:?}",
                e.id().as_str(),
                event_id(&file.path).unwrap_or("(not UTF-8)")
            )),
            Err(e) => Verdict::Corrupt(e.to_string()),
        },
        JsonKind::Compacted { day } => match parse_compacted(&bytes, &file.path, *day) {
            Ok(_) => Verdict::Ok,
            Err(Error::Corrupt { reason, .. }) => Verdict::Corrupt(reason),
            Err(e) => Verdict::Corrupt(e.to_string()),
        },
        JsonKind::Object => {
            let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
            if first != Some(&b'{') {
                Verdict::Corrupt("not a JSON object".into())
            } else {
                syntax(&bytes)
            }
        }
        JsonKind::Other => syntax(&bytes),
    };
    (verdict, stamp)
}

/// The `{id}` of `evt_{id}.json`.
fn event_id(path: &Path) -> Option<&str> {
    path.file_name()?.to_str().and_then(event_id_from_file_name)
}

fn syntax(bytes: &[u8]) -> Verdict {
    match serde_json::from_slice::<IgnoredAny>(bytes) {
        Ok(_) => Verdict::Ok,
        Err(e) => Verdict::Corrupt(format!("not valid JSON: {e}")),
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Validates `files[i]` for every `i` in `todo`, on every core when there are enough,
/// handing each result to `record` on the calling thread as it comes, in `todo` order (so
/// results never pile up in memory beside the outcomes).
fn validate_all(
    root: &Root,
    w: &Walk,
    todo: &[usize],
    mut record: impl FnMut(usize, (Verdict, Option<Stamp>)),
) {
    let (files, dirs) = (&w.json, &w.dirs);
    let how = Streamed {
        threads: cores_up_to(READ_THREADS_MAX),
        chunk: CHUNK,
        sequential_below: PARALLEL_FILES_MIN,
    };
    let done: Result<(), Infallible> = for_each_ordered(
        how,
        todo,
        HeldDir::default,
        |held, &i| validate(root, dirs, held, &files[i]),
        |k, r| {
            record(todo[k], r);
            Ok(())
        },
    );
    match done {
        Ok(()) => {}
        Err(never) => match never {},
    }
}

/// `corrupt_json`.
pub fn check(root: &Root, w: &Walk, opts: &Options, now: SystemTime) -> Check {
    let files = &w.json;
    let now_secs = unix_secs(now);
    let mut outcomes: Vec<Option<Outcome>> = vec![None; files.len()];
    let mut notes = Vec::new();
    let mut cache = if opts.incremental {
        Some(Cache::new(root, files))
    } else {
        None
    };
    let todo: Vec<usize> = match &mut cache {
        Some(c) => c.lookup(root, files, opts, now_secs, &mut outcomes),
        None => (0..files.len()).collect(),
    };
    let parsed = todo.len();
    validate_all(root, w, &todo, |i, (verdict, stamp)| {
        outcomes[i] = Some(Outcome {
            verdict,
            stamp,
            checked_at: now_secs,
            from_cache: false,
        });
    });
    if let Some(Err(e)) = cache.as_ref().map(|c| c.save(root, files, &outcomes)) {
        notes.push(format!("cache not saved: {e}"));
    }
    summarize(root, w, opts, &outcomes, parsed, &notes)
}

fn summarize(
    root: &Root,
    w: &Walk,
    opts: &Options,
    outcomes: &[Option<Outcome>],
    parsed: usize,
    notes: &[String],
) -> Check {
    let mut bad: Vec<String> = Vec::new();
    let mut unreadable = 0u64;
    let mut corrupt = 0u64;
    let mut cached = 0u64;
    for (f, o) in w.json.iter().zip(outcomes) {
        let Some(o) = o else { continue };
        cached += u64::from(o.from_cache);
        match &o.verdict {
            Verdict::Ok | Verdict::Gone => {}
            Verdict::Corrupt(r) => {
                corrupt += 1;
                bad.push(format!("{}: {r}", rel_text(root, &f.path)));
            }
            Verdict::Unreadable(r) => {
                unreadable += 1;
                bad.push(format!("{}: cannot read: {r}", rel_text(root, &f.path)));
            }
        }
    }
    bad.sort();
    let n = corrupt + unreadable;
    let mut status = Status::of_threshold(n as f64, opts.warning as f64, opts.critical as f64);
    let mut detail = format!(
        "{corrupt} corrupt, {unreadable} unreadable of {} JSON files ({parsed} parsed, {cached} unchanged since checked); warning >{}, critical >{}",
        w.totals.json_files, opts.warning, opts.critical
    );
    if w.json_not_listed > 0 {
        status = status.worst(Status::Warning);
        detail.push_str(&format!(
            "; {} files beyond {} not checked",
            w.json_not_listed,
            crate::walk::JSON_FILES_MAX
        ));
    }
    for n in notes {
        detail.push_str("; ");
        detail.push_str(n);
    }
    let mut c = Check::new("corrupt_json", status, Some(n as f64), detail);
    c.findings = bad.into_iter().take(FINDINGS_MAX).collect();
    c.perf.push(Perf {
        label: "corrupt_json",
        value: c.value,
        uom: "",
        warn: Some(opts.warning as f64),
        crit: Some(opts.critical as f64),
    });
    c.perf.push(Perf {
        label: "json_files",
        value: Some(w.totals.json_files as f64),
        uom: "",
        warn: None,
        crit: None,
    });
    c
}

/// One cached verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    stamp: Stamp,
    checked_at: u64,
    corrupt: Option<String>,
}

/// The incremental cache: which bucket each file falls in, which buckets must be
/// rewritten.
struct Cache {
    /// `.tmpa/patrol/json-cache`, relative to the root.
    rel: PathBuf,
    /// Files (indices) per bucket.
    members: Vec<Vec<usize>>,
    /// Buckets to rewrite.
    dirty: Vec<bool>,
}

/// FNV-1a of the file's directory, relative to the root: a file never changes bucket,
/// and a day or an inbox lands in one bucket.
fn bucket_of(rel_dir: &[u8]) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in rel_dir {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % BUCKETS as u64) as usize
}

fn rel_bytes<'a>(root: &Root, p: &'a Path) -> &'a [u8] {
    p.strip_prefix(root.path())
        .unwrap_or(p)
        .as_os_str()
        .as_bytes()
}

fn bucket_name(b: usize) -> String {
    format!("{b:02x}.cache")
}

impl Cache {
    fn new(root: &Root, files: &[JsonFile]) -> Cache {
        let mut members = vec![Vec::new(); BUCKETS];
        for (i, f) in files.iter().enumerate() {
            let rel = f.path.strip_prefix(root.path()).unwrap_or(&f.path);
            let dir = rel.parent().unwrap_or(Path::new(""));
            members[bucket_of(dir.as_os_str().as_bytes())].push(i);
        }
        Cache {
            rel: Path::new(STATE_DIR).join("patrol").join("json-cache"),
            members,
            dirty: vec![false; BUCKETS],
        }
    }

    /// Fills `outcomes` from the cache where a file is unchanged and its verdict fresh;
    /// returns the files to parse.
    fn lookup(
        &mut self,
        root: &Root,
        files: &[JsonFile],
        opts: &Options,
        now_secs: u64,
        outcomes: &mut [Option<Outcome>],
    ) -> Vec<usize> {
        let dir = root_dir(root).open_dir(&self.rel).ok();
        let mut todo = Vec::new();
        for b in 0..BUCKETS {
            let name = bucket_name(b);
            let existing = match &dir {
                Some(d) if !opts.full => read_bucket(d, &name),
                _ => None,
            };
            let exists = dir
                .as_ref()
                .is_some_and(|d| d.stat(&name).ok().flatten().is_some());
            let Some(map) = existing else {
                self.dirty[b] = !self.members[b].is_empty() || exists;
                todo.extend_from_slice(&self.members[b]);
                continue;
            };
            let mut hits = 0usize;
            for &i in &self.members[b] {
                let f = &files[i];
                let hit = f.stamp.and_then(|s| {
                    let e = map.get(rel_bytes(root, &f.path))?;
                    let fresh =
                        now_secs.saturating_sub(e.checked_at) < opts.cache_max_age.as_secs();
                    (e.stamp == s && fresh).then_some(e)
                });
                match hit {
                    Some(e) => {
                        hits += 1;
                        outcomes[i] = Some(Outcome {
                            verdict: e.corrupt.clone().map_or(Verdict::Ok, Verdict::Corrupt),
                            stamp: Some(e.stamp),
                            checked_at: e.checked_at,
                            from_cache: true,
                        });
                    }
                    None => todo.push(i),
                }
            }
            // Rewrite when a file is new or changed, or one was deleted.
            self.dirty[b] = hits != self.members[b].len() || hits != map.len();
        }
        todo
    }

    /// Rewrites the dirty buckets, each atomically.
    fn save(
        &self,
        root: &Root,
        files: &[JsonFile],
        outcomes: &[Option<Outcome>],
    ) -> Result<(), String> {
        if !self.dirty.iter().any(|d| *d) {
            return Ok(());
        }
        let dir = root_dir(root)
            .create_dir_all(&self.rel)
            .map_err(|e| e.chain())?;
        for b in (0..BUCKETS).filter(|b| self.dirty[*b]) {
            let mut lines: Vec<String> = Vec::with_capacity(self.members[b].len());
            for &i in &self.members[b] {
                let Some(o) = &outcomes[i] else { continue };
                let Some(s) = o.stamp else { continue };
                let corrupt = match &o.verdict {
                    Verdict::Ok => None,
                    Verdict::Corrupt(r) => Some(r.as_str()),
                    // Transient: read again next time.
                    Verdict::Unreadable(_) | Verdict::Gone => continue,
                };
                lines.push(format!(
                    "{} {} {} {} {} {} {} {}",
                    s.size,
                    s.mtime_ns,
                    s.ctime_ns,
                    s.ino,
                    s.dev,
                    o.checked_at,
                    escape(rel_bytes(root, &files[i].path)),
                    corrupt.map_or_else(
                        || "ok".to_owned(),
                        |r| format!("bad:{}", escape(r.as_bytes()))
                    ),
                ));
            }
            lines.sort();
            let mut text =
                String::with_capacity(lines.iter().map(|l| l.len() + 1).sum::<usize>() + 32);
            text.push_str(CACHE_HEADER);
            text.push('\n');
            for l in lines {
                text.push_str(&l);
                text.push('\n');
            }
            write_in(&dir, OsStr::new(&bucket_name(b)), text.as_bytes(), false)
                .map_err(|e| e.chain())?;
        }
        Ok(())
    }
}

/// Reads one bucket: path relative to the root → entry. `None` when missing or not a cache
/// file of this version (it is then rebuilt).
fn read_bucket(dir: &Dir, name: &str) -> Option<HashMap<Vec<u8>, Entry>> {
    let (bytes, _) = dir.read(name, BUCKET_BYTES_MAX).ok()?;
    let text = std::str::from_utf8(&bytes).ok()?;
    let mut lines = text.lines();
    if lines.next()? != CACHE_HEADER {
        return None;
    }
    let mut map = HashMap::new();
    for line in lines {
        let f: Vec<&str> = line.split(' ').collect();
        let [len, mtime, ctime, ino, dev, checked, rel, verdict] = f[..] else {
            return None;
        };
        let stamp = Stamp {
            size: len.parse().ok()?,
            mtime_ns: mtime.parse().ok()?,
            ctime_ns: ctime.parse().ok()?,
            ino: ino.parse().ok()?,
            dev: dev.parse().ok()?,
        };
        let corrupt = match verdict {
            "ok" => None,
            v => Some(String::from_utf8(unescape(v.strip_prefix("bad:")?)?).ok()?),
        };
        map.insert(
            unescape(rel)?,
            Entry {
                stamp,
                checked_at: checked.parse().ok()?,
                corrupt,
            },
        );
    }
    Some(map)
}

/// Bytes as one space-free printable word: `%XX` for anything but `!`..`~` (and `%`).
fn escape(b: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(b.len());
    for &c in b {
        if (0x21..=0x7e).contains(&c) && c != b'%' {
            s.push(c as char);
        } else {
            let _ = write!(s, "%{c:02X}");
        }
    }
    s
}

fn unescape(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_round_trips_hostile_names() {
        for s in [&b"a b"[..], b"evt_\xff.json", b"x%y\nz", b""] {
            let e = escape(s);
            assert!(!e.contains(' ') && !e.contains('\n'));
            assert_eq!(unescape(&e).unwrap(), s);
        }
    }

    #[test]
    fn a_day_stays_in_one_bucket() {
        assert_eq!(
            bucket_of(b"token_stats/2026-11-01"),
            bucket_of(b"token_stats/2026-11-01")
        );
        assert!(bucket_of(b"x") < BUCKETS);
    }
}
