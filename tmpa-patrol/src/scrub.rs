//! `--scrub`: the files that are the only copy of their data, read back against their own
//! checksums, a bounded number of bytes per patrol, resuming where the last one stopped.
//!
//! What is read, in path order: every day's `_compacted.json` (each event against its
//! CRC-32C, docs/FORMAT.md "`_compacted.json`"; a format 1 file has no checksums and is
//! only parsed), every local session archive `chat_history/*/archive/*.json.gz` (gzip's
//! CRC-32 and length), every local notification archive
//! `notifications/*/archive/acked-*.tar.gz` (each member against the SHA-256 of its index,
//! gzip's CRC-32 over the whole stream). A patrol reads files until it has read
//! `--scrub-bytes` (a file is read whole, so a patrol may read one file more than that),
//! then remembers the last file it read in `{root}/.tmpa/patrol/scrub.json` (atomically);
//! the next patrol goes on after it, and a patrol that reaches the last file completes a
//! pass and starts the next one from the first.
//!
//! A damaged file stays in `scrub.json` and makes the `scrub` check critical until a
//! later pass reads it intact (repaired or restored). No pass completed for longer than
//! `--scrub-window` is a warning: the budget is too small for the tree.
//!
//! Reads only; writes nothing but `scrub.json`. Memory: one file's reader (a compacted
//! day is streamed; an archive is read whole, bounded by its format's limit).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tmpa_core::maintenance::{
    COMPACTED_NAME, Dir, NOTIFICATION_ARCHIVE_BYTES_MAX, NOTIFICATION_ARCHIVE_DIR,
    SESSION_BYTES_MAX, STATE_DIR, gunzip_bounded, open_compacted, parse_compacted, read_archive,
    root_dir, salvage_compacted, visit_compacted, write_in,
};
use tmpa_core::{Day, Root};

use crate::{Check, FINDINGS_MAX, Perf, Status};

/// The cursor file, in `{root}/.tmpa/patrol/`.
pub const SCRUB_NAME: &str = "scrub.json";
const FORMAT: u32 = 1;
/// Largest `scrub.json` read.
const STATE_BYTES_MAX: u64 = 16 << 20;
/// Damaged files remembered at most (the count stays exact in the check's value).
const DAMAGED_MAX: usize = 10_000;
/// A damaged `_compacted.json` up to this size is read line by line to name its lines.
const SALVAGE_BYTES_MAX: u64 = 64 << 20;

/// What `scrub.json` holds between patrols.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// The file's format, 1.
    pub format: u32,
    /// The last file read (relative to the root); empty at the start of a pass.
    pub cursor: String,
    /// When the current pass began (Unix seconds).
    pub pass_started_unix: i64,
    /// When the last pass ended, if one did.
    pub last_pass_completed_unix: Option<i64>,
    /// Damaged files (relative path) and why, until a pass reads them intact.
    pub damaged: BTreeMap<String, String>,
}

/// What this patrol's scrub did, for the report and the metrics.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ScrubInfo {
    /// Files read in this patrol.
    pub files_checked: u64,
    /// Bytes read in this patrol.
    pub bytes_checked: u64,
    /// Whether this patrol reached the last file (and so completed a pass).
    pub pass_completed: bool,
    /// When the last complete pass ended (Unix seconds).
    pub last_pass_completed_unix: Option<i64>,
    /// Damaged files known.
    pub damaged: usize,
}

/// The kinds of file scrubbed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Compacted(Day),
    Session,
    Notifications,
}

/// Parses `--scrub-bytes`: a whole number and an optional binary unit (K, M, G).
///
/// # Errors
/// A message for clap.
///
/// # Examples
/// ```
/// assert_eq!(tmpa_patrol::scrub::parse_bytes("64M").unwrap(), 64 << 20);
/// assert!(tmpa_patrol::scrub::parse_bytes("0").is_err());
/// ```
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let (n, unit) = tmpa_maint::number_and_unit(s, "a whole number and a unit, e.g. 256M")?;
    let shift = match unit {
        "" | "B" => 0,
        "K" | "k" | "KiB" => 10,
        "M" | "m" | "MiB" => 20,
        "G" | "g" | "GiB" => 30,
        _ => return Err(format!("{s:?}: unknown unit {unit:?}; use K, M or G")),
    };
    match n.checked_mul(1 << shift) {
        Some(0) => Err(format!("{s:?}: must be more than 0")),
        Some(b) => Ok(b),
        None => Err(format!("{s:?}: too large")),
    }
}

fn state_rel() -> PathBuf {
    Path::new(STATE_DIR).join("patrol")
}

fn load(root: &Root) -> State {
    root_dir(root)
        .open_dir(state_rel())
        .and_then(|d| d.read(SCRUB_NAME, STATE_BYTES_MAX))
        .ok()
        .and_then(|(b, _)| serde_json::from_slice::<State>(&b).ok())
        .filter(|s| s.format == FORMAT)
        .unwrap_or_default()
}

fn save(root: &Root, state: &State) -> tmpa_core::Result<()> {
    let dir = root_dir(root).create_dir_all(state_rel())?;
    let mut bytes = serde_json::to_vec_pretty(state).expect("a scrub state serializes");
    bytes.push(b'\n');
    write_in(&dir, OsStr::new(SCRUB_NAME), &bytes, false)
}

/// The files to scrub, sorted by path (relative to the root), with their kind.
fn files(root: &Root) -> Vec<(String, Kind)> {
    let top = root_dir(root);
    let mut out = Vec::new();
    let subdirs = |rel: &str| -> Vec<String> {
        top.open_dir(rel)
            .and_then(|d| d.names(|_| true))
            .map(|v| v.into_iter().filter_map(|n| n.into_string().ok()).collect())
            .unwrap_or_default()
    };
    for day in subdirs("token_stats") {
        if let Ok(d) = day.parse::<Day>() {
            out.push((
                format!("token_stats/{day}/{COMPACTED_NAME}"),
                Kind::Compacted(d),
            ));
        }
    }
    for user in subdirs("chat_history") {
        for name in subdirs(&format!("chat_history/{user}/archive")) {
            if name.ends_with(".json.gz") {
                out.push((format!("chat_history/{user}/archive/{name}"), Kind::Session));
            }
        }
    }
    for user in subdirs("notifications") {
        let rel = format!("notifications/{user}/{NOTIFICATION_ARCHIVE_DIR}");
        for name in subdirs(&rel) {
            if name.starts_with("acked-") && name.ends_with(".tar.gz") {
                out.push((format!("{rel}/{name}"), Kind::Notifications));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Reads one file against its checksums: the bytes read, or why it is damaged. `None`
/// when it is gone (a day without a compacted file, an archive deleted since the listing).
fn verify(root: &Root, rel: &str, kind: Kind) -> Option<Result<u64, String>> {
    let rel = Path::new(rel);
    let dir = root_dir(root).open_dir(rel.parent()?).ok()?;
    let name = rel.file_name()?;
    let shown = dir.join(name);
    match kind {
        Kind::Compacted(day) => verify_compacted(&dir, &shown, day),
        Kind::Session => Some(match dir.read(name, SESSION_BYTES_MAX) {
            Ok((bytes, _)) => gunzip_bounded(&bytes, &shown, SESSION_BYTES_MAX)
                .map(|_| bytes.len() as u64)
                .map_err(|e| e.to_string()),
            Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => Err(e.chain()),
        }),
        Kind::Notifications => Some(match dir.read(name, NOTIFICATION_ARCHIVE_BYTES_MAX) {
            Ok((bytes, _)) => read_archive(&bytes[..], &shown, |_| true, |_| true)
                .map(|_| bytes.len() as u64)
                .map_err(|e| e.to_string()),
            Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => Err(e.chain()),
        }),
    }
}

/// A `_compacted.json` streamed against its checksums; a damaged one small enough is read
/// again line by line to name its damaged lines.
fn verify_compacted(dir: &Dir, shown: &Path, day: Day) -> Option<Result<u64, String>> {
    let (file, meta) = match open_compacted(dir) {
        Ok(Some(f)) => f,
        Ok(None) => return None,
        Err(e) => return Some(Err(e.to_string())),
    };
    let size = meta.stamp.size;
    let streamed = visit_compacted(
        BufReader::with_capacity(256 << 10, file),
        shown,
        day,
        |_| Ok::<(), std::convert::Infallible>(()),
    );
    let Err(e) = streamed else {
        return Some(Ok(size));
    };
    let e = e.into_file_error();
    if size > SALVAGE_BYTES_MAX {
        return Some(Err(e.to_string()));
    }
    let Ok((bytes, _)) = dir.read(COMPACTED_NAME, SALVAGE_BYTES_MAX) else {
        return Some(Err(e.to_string()));
    };
    let strict = match parse_compacted(&bytes, shown, day) {
        Ok(_) => return Some(Ok(size)), // replaced meanwhile by an intact file
        Err(strict) => strict,
    };
    let s = salvage_compacted(&bytes, shown, day, strict);
    let lines: Vec<String> = s
        .problems
        .iter()
        .filter_map(|p| p.line)
        .take(10)
        .map(|n| n.to_string())
        .collect();
    let lost = s
        .lost
        .map_or(String::new(), |n| format!(", {n} events lost"));
    Some(Err(format!(
        "{e}; damaged lines: {}{lost}",
        lines.join(", ")
    )))
}

/// `7d`, `36h` or `90s`: a window as the flag takes it.
fn words(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(86_400) {
        format!("{}d", s / 86_400)
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else {
        format!("{s}s")
    }
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Runs this patrol's share of the scrub and returns the `scrub` check.
pub fn run(root: &Root, bytes_max: u64, window: Duration, now: SystemTime) -> (Check, ScrubInfo) {
    let mut state = load(root);
    state.format = FORMAT;
    if state.cursor.is_empty() && state.pass_started_unix == 0 {
        state.pass_started_unix = unix(now);
    }
    let mut info = ScrubInfo::default();
    let all = files(root);
    let start = all.partition_point(|(p, _)| p.as_str() <= state.cursor.as_str());
    for (rel, kind) in &all[start..] {
        if info.bytes_checked >= bytes_max {
            break;
        }
        state.cursor.clone_from(rel);
        match verify(root, rel, *kind) {
            None => {
                state.damaged.remove(rel);
            }
            Some(Ok(n)) => {
                info.files_checked += 1;
                info.bytes_checked += n;
                state.damaged.remove(rel);
            }
            Some(Err(why)) => {
                info.files_checked += 1;
                if state.damaged.len() < DAMAGED_MAX || state.damaged.contains_key(rel) {
                    state.damaged.insert(rel.clone(), why);
                }
            }
        }
    }
    if all.last().is_none_or(|(last, _)| state.cursor >= *last) {
        info.pass_completed = true;
        state.last_pass_completed_unix = Some(unix(now));
        state.cursor.clear();
        state.pass_started_unix = unix(now);
    }
    info.last_pass_completed_unix = state.last_pass_completed_unix;
    info.damaged = state.damaged.len();
    let saved = save(root, &state);
    (check(&state, &info, window, now, saved.err()), info)
}

fn check(
    state: &State,
    info: &ScrubInfo,
    window: Duration,
    now: SystemTime,
    save_error: Option<tmpa_core::Error>,
) -> Check {
    let damaged = state.damaged.len();
    let since_pass = state
        .last_pass_completed_unix
        .unwrap_or(state.pass_started_unix);
    let late = unix(now) - since_pass > window.as_secs() as i64;
    let (status, mut detail) = if damaged > 0 {
        (
            Status::Critical,
            format!(
                "{damaged} damaged file(s): the only copy of their data; restore or repair them"
            ),
        )
    } else if late {
        (
            Status::Warning,
            format!(
                "no complete pass in {}; raise --scrub-bytes or patrol more often",
                words(window)
            ),
        )
    } else {
        (Status::Ok, "no damaged file".to_owned())
    };
    detail.push_str(&format!(
        "; {} file(s), {} bytes read this patrol{}",
        info.files_checked,
        info.bytes_checked,
        if info.pass_completed {
            ", pass completed"
        } else {
            ""
        }
    ));
    if let Some(e) = save_error {
        detail.push_str(&format!(
            "; cannot remember where it stopped: {}",
            e.chain()
        ));
    }
    let mut c = Check::new("scrub", status, Some(damaged as f64), detail);
    c.findings = state
        .damaged
        .iter()
        .take(FINDINGS_MAX)
        .map(|(p, why)| format!("{p}: {why}"))
        .collect();
    c.perf = vec![Perf {
        label: "scrub_damaged",
        value: Some(damaged as f64),
        uom: "",
        warn: None,
        crit: Some(0.0),
    }];
    c
}
