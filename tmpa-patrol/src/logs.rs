//! A job's output, read for the job checks: the file its cron line appends to
//! (`--log TASK=PATH`) or the journal of its systemd unit (`--journal TASK=UNIT`, read with
//! `journalctl`). Either way the patrol gets the same lines, in the order they were
//! written, and looks for a deletion that follows a failed verification of the same path
//! within one run; the last [`LOG_TAIL_LINES`] come with a job that is not healthy.
//!
//! Invariants:
//! - Bounded: at most [`LOG_BYTES_MAX`] bytes of the newest output are read, from a file
//!   (seeking to its end; a FIFO never blocks) or from `journalctl` (newest first, at
//!   most [`JOURNAL_LINES_MAX`] entries of the last [`JOURNAL_LOOKBACK`], killed after
//!   [`JOURNAL_TIMEOUT`]).
//! - A source that cannot be read is an error naming it, never an empty log: a patrol
//!   that cannot see the journal must not report that no deletion went wrong.
//! - A log file opened before the patrol became `--user` ([`open_before_switch`]) is read
//!   through that descriptor: the jobs' logs stay root's and adm's, and the patrol's user
//!   needs no group that would also let the backend read the system's logs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use tmpa_core::maintenance::{line_text, path_text};

use crate::one_line;
use crate::service::{Limits, run_command};

/// Lines of a job's log shown when it is not healthy.
pub const LOG_TAIL_LINES: usize = 50;
/// Bytes read from the end of a log (logrotate keeps it smaller; a longer log is
/// scanned over its last this many bytes only), and of `journalctl`'s output.
pub const LOG_BYTES_MAX: u64 = 32 << 20;
/// Characters kept of each log line shown.
const LOG_LINE_CHARS_MAX: usize = 400;
/// Paths remembered per run as having failed verification.
const FAILED_PATHS_MAX: usize = 100_000;
/// How far back the journal is read: the runs of the last eight days, which hold the
/// weekly archive job's last run (a file log holds about a week too: logrotate rotates
/// it weekly).
pub const JOURNAL_LOOKBACK: Duration = Duration::from_secs(8 * 86_400);
/// Journal entries read at most (newest first).
pub const JOURNAL_LINES_MAX: usize = 500_000;
/// How long `journalctl` may take before it is killed.
pub const JOURNAL_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a job's output is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogSource {
    /// The file the job's cron line appends to.
    File(PathBuf),
    /// The journal of the job's systemd unit (`tmpa-compact.service`), the system's or
    /// the one in `directory` (`journalctl --directory`).
    Journal {
        /// The unit, as `journalctl --unit` takes it.
        unit: String,
        /// A journal directory other than the system's.
        directory: Option<PathBuf>,
    },
}

impl fmt::Display for LogSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(p) => f.write_str(&path_text(p)),
            Self::Journal { unit, directory } => {
                write!(f, "the journal of {}", line_text(unit))?;
                if let Some(d) = directory {
                    write!(f, " in {}", path_text(d))?;
                }
                Ok(())
            }
        }
    }
}

impl LogSource {
    /// Reads the source's newest output and scans it (`now` bounds the journal's
    /// lookback).
    ///
    /// # Errors
    /// A message when the source cannot be read.
    pub fn scan(&self, now: SystemTime) -> Result<LogScan, String> {
        let read = match self {
            Self::File(p) => read_file_end(p)?,
            Self::Journal { unit, directory } => read_journal(unit, directory.as_deref(), now)?,
        };
        let lines = read.lines();
        Ok(LogScan {
            tail: lines[lines.len().saturating_sub(LOG_TAIL_LINES)..]
                .iter()
                .map(|l| one_line(l, LOG_LINE_CHARS_MAX))
                .collect(),
            violations: violations(&lines),
        })
    }
}

/// Whether `unit` is a unit name `journalctl --unit` takes as exactly that unit (letters,
/// digits and `:_.@-`, not starting with `-`): no glob, which would match others.
pub fn is_unit_name(unit: &str) -> bool {
    !unit.is_empty()
        && !unit.starts_with('-')
        && unit
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":_.@-".contains(c))
}

/// Whether `dir` or a directory in it (journald keeps one per machine id) holds a
/// journal file.
fn has_journal_files(dir: &Path) -> bool {
    let is_journal = |name: &std::ffi::OsStr| {
        let name = name.to_string_lossy();
        name.ends_with(".journal") || name.ends_with(".journal~")
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        // journalctl names the problem (missing, not permitted).
        return true;
    };
    entries.flatten().any(|e| {
        is_journal(&e.file_name())
            || (e.file_type().is_ok_and(|t| t.is_dir())
                && std::fs::read_dir(e.path())
                    .is_ok_and(|sub| sub.flatten().any(|f| is_journal(&f.file_name()))))
    })
}

/// The newest output of a source, as read: one text, borrowed line by line by the scan.
struct Output {
    text: String,
    /// `journalctl --reverse` prints the newest entry first.
    newest_first: bool,
    /// The oldest line was cut by the byte bound.
    oldest_cut: bool,
}

impl Output {
    /// The lines, oldest first, without the one the bound cut.
    fn lines(&self) -> Vec<&str> {
        let mut lines: Vec<&str> = self.text.lines().collect();
        if self.newest_first {
            lines.reverse();
        }
        if self.oldest_cut && !lines.is_empty() {
            lines.remove(0);
        }
        lines
    }
}

/// What a job's log says.
#[derive(Clone, Debug, Default)]
pub struct LogScan {
    /// Its last [`LOG_TAIL_LINES`] lines.
    pub tail: Vec<String>,
    /// One message per deletion that follows a failed verification of the same path in
    /// the same run.
    pub violations: Vec<String>,
}

/// The log files opened before the patrol became `--user`, by the path given.
static OPENED: OnceLock<BTreeMap<PathBuf, File>> = OnceLock::new();

/// Opens the log files `paths` (the `--log` files) for the rest of the process, before a
/// patrol started as root becomes `--user`; a file that cannot be opened now is opened
/// by its path when it is read, and its error reported then. Call it once.
pub fn open_before_switch<'a>(paths: impl IntoIterator<Item = &'a Path>) {
    let opened = paths
        .into_iter()
        .filter_map(|p| open_log(p).ok().map(|f| (p.to_owned(), f)))
        .collect();
    let _ = OPENED.set(opened);
}

/// Opens a log for reading, never blocking on a FIFO.
fn open_log(path: &Path) -> std::io::Result<File> {
    let nonblock = rustix::fs::OFlags::NONBLOCK.bits() as i32;
    File::options().read(true).custom_flags(nonblock).open(path)
}

/// The lines of the end of a log file (at most [`LOG_BYTES_MAX`] bytes; never blocks on
/// a FIFO), through the descriptor opened before the switch when there is one.
fn read_file_end(path: &Path) -> Result<Output, String> {
    let own;
    let f = match OPENED.get().and_then(|m| m.get(path)) {
        Some(f) => f,
        None => {
            own = open_log(path).map_err(|e| e.to_string())?;
            &own
        }
    };
    let meta = f.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let start = meta.len().saturating_sub(LOG_BYTES_MAX);
    // Positioned reads: the descriptor may be read again by the next patrol of a watch.
    let mut bytes = vec![0; usize::try_from(meta.len() - start).unwrap_or(0)];
    let mut got = 0;
    while got < bytes.len() {
        match f.read_at(&mut bytes[got..], start + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    bytes.truncate(got);
    Ok(Output {
        text: String::from_utf8_lossy(&bytes).into_owned(),
        newest_first: false,
        // The first line was cut by the seek.
        oldest_cut: start > 0,
    })
}

/// The messages the journal holds for `unit` over the last [`JOURNAL_LOOKBACK`], oldest
/// first, read newest first with `journalctl` so that the bound keeps the newest.
fn read_journal(unit: &str, directory: Option<&Path>, now: SystemTime) -> Result<Output, String> {
    let since = now
        .checked_sub(JOURNAL_LOOKBACK)
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let mut cmd = Command::new("journalctl");
    cmd.arg(format!("--unit={unit}"))
        .arg(format!("--since=@{since}"))
        .arg(format!("--lines={JOURNAL_LINES_MAX}"))
        // Not --quiet: it would also silence the notices that say journalctl saw nothing
        // it may read, which are checked below.
        .args(["--reverse", "--output=cat", "--all", "--no-pager"]);
    if let Some(d) = directory {
        // journalctl reads an empty or wrong directory as an empty journal, silently.
        if !has_journal_files(d) {
            return Err(format!(
                "no journal files (*.journal) in {} or its subdirectories",
                path_text(d)
            ));
        }
        cmd.arg("--directory").arg(d);
    }
    let limits = Limits {
        stdout: LOG_BYTES_MAX as usize,
        stderr: 64 * 1024,
    };
    let o = run_command(cmd, JOURNAL_TIMEOUT, limits)
        .map_err(|e| format!("cannot run journalctl: {e}"))?;
    let said = o
        .stderr
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| one_line(l, 300));
    match o.status {
        None => {
            return Err(format!(
                "journalctl gave no answer within {}s (killed)",
                JOURNAL_TIMEOUT.as_secs()
            ));
        }
        Some(s) if !s.success() => {
            let how = s
                .code()
                .map_or_else(|| "killed by a signal".to_owned(), |c| format!("exit {c}"));
            return Err(format!(
                "journalctl {how}: {}",
                said.unwrap_or_else(|| "no message".into())
            ));
        }
        Some(_) => {}
    }
    // journalctl run by a user who may not read the system journal shows that user's own
    // entries only, exits 0 and says so on stderr: that is not an empty log.
    if o.stderr.contains("not seeing messages") || o.stderr.contains("insufficient permissions") {
        return Err(format!(
            "journalctl cannot read the system's entries as this user (run the patrol as \
             root or in group systemd-journal): {}",
            said.unwrap_or_default()
        ));
    }
    // Nor is a system that keeps no journal (journald's Storage=none).
    if o.stderr.contains("No journal files were found") {
        return Err(
            "journalctl found no journal files (does journald keep any? Storage= in \
             journald.conf)"
                .into(),
        );
    }
    let mut text = o.stdout;
    if text.trim_end() == "-- No entries --" {
        text.clear();
    }
    Ok(Output {
        text,
        newest_first: true,
        oldest_cut: o.stdout_truncated,
    })
}

/// A run's first line, as `program::header_line` writes it: `{time} tmpa-x {MODE} root=..`.
fn is_run_header(line: &str) -> bool {
    let w: Vec<&str> = line.split_whitespace().take(4).collect();
    w.len() == 4 && w[1].starts_with("tmpa-") && w[3].starts_with("root=")
}

/// Words of a line that look like paths (`a/b`, `x.json`), stripped of punctuation.
fn path_words(line: &str) -> Vec<&str> {
    line.split_whitespace()
        .map(|w| w.trim_matches(|c: char| ":,;()[]{}\"'`".contains(c)))
        .filter(|w| {
            w.contains('/')
                || w.rsplit_once('.').is_some_and(|(head, ext)| {
                    !head.is_empty()
                        && !ext.is_empty()
                        && ext.chars().all(|c| c.is_ascii_alphanumeric())
                        && ext.chars().any(|c| c.is_ascii_alphabetic())
                })
        })
        .collect()
}

fn base_name(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// Whether two spellings name the same path (one may be relative to the root).
fn same_path(a: &str, b: &str) -> bool {
    a == b || a.ends_with(&format!("/{b}")) || b.ends_with(&format!("/{a}"))
}

fn is_deletion(lower: &str) -> bool {
    let says = ["deleted", "deleting", "removed", "unlinked"]
        .iter()
        .any(|w| lower.contains(w));
    let denies = [
        "not deleted",
        "not delete",
        "would delete",
        "would_delete",
        "kept",
    ]
    .iter()
    .any(|w| lower.contains(w));
    says && !denies
}

/// Deletions that follow a failed verification of the same path within one run (a run
/// starts at its header line; the next night may legitimately delete a file that failed
/// once and then verified). A path may be spelled absolute in one line and relative to
/// the root in the other.
///
/// # Examples
/// ```
/// use tmpa_patrol::logs::violations;
/// let log = [
///     "2026-11-25T02:30:00+01:00 tmpa-compact COMPACT root=/opt/app",
///     "verification failed: /opt/app/token_stats/2026-11-01/evt_a.json (kept)",
///     "deleted token_stats/2026-11-01/evt_a.json",
/// ];
/// assert_eq!(violations(&log).len(), 1);
/// assert!(violations(&log[..2]).is_empty());
/// ```
pub fn violations(lines: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    // Base name → (full spelling, line number) of each path that failed verification.
    let mut failed: HashMap<String, Vec<(String, usize)>> = HashMap::new();
    let mut remembered = 0usize;
    let mut reported = HashSet::new();
    for (i, line) in lines.iter().enumerate() {
        if is_run_header(line) {
            failed.clear();
            remembered = 0;
            continue;
        }
        let lower = line.to_lowercase();
        if lower.contains("verification failed") {
            for p in path_words(line) {
                if remembered < FAILED_PATHS_MAX {
                    remembered += 1;
                    failed
                        .entry(base_name(p).to_owned())
                        .or_default()
                        .push((p.to_owned(), i + 1));
                }
            }
            continue;
        }
        if !is_deletion(&lower) {
            continue;
        }
        for p in path_words(line) {
            let Some(cands) = failed.get(base_name(p)) else {
                continue;
            };
            if let Some((_, at)) = cands.iter().find(|(f, _)| same_path(f, p))
                && reported.insert((i, p.to_owned()))
            {
                out.push(format!(
                    "line {}: {p} deleted after its verification failed (line {at})",
                    i + 1
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_reads_oldest_first_without_the_cut_line() {
        let file = Output {
            text: "ut line\nb\nc\n".into(),
            newest_first: false,
            oldest_cut: true,
        };
        assert_eq!(file.lines(), ["b", "c"]);
        let journal = Output {
            text: "c\nb\na cut\n".into(),
            newest_first: true,
            oldest_cut: true,
        };
        assert_eq!(journal.lines(), ["b", "c"]);
        let whole = Output {
            text: "c\nb\n".into(),
            newest_first: true,
            oldest_cut: false,
        };
        assert_eq!(whole.lines(), ["b", "c"]);
    }

    #[test]
    fn deletion_after_failed_verification_is_found() {
        let log = [
            "2026-11-25T02:30:00+00:00 tmpa-compact COMPACT root=/opt/app",
            "verification failed: /opt/app/token_stats/2026-11-01/evt_a.json does not read back",
            "deleted token_stats/2026-11-01/evt_a.json",
            "deleted token_stats/2026-11-01/evt_b.json",
        ];
        let v = violations(&log);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("evt_a.json") && v[0].contains("line 3"));
    }

    #[test]
    fn a_new_run_may_delete_what_failed_before() {
        let log = [
            "t tmpa-compact COMPACT root=/opt/app",
            "verification failed: /a/evt_a.json",
            "t tmpa-compact COMPACT root=/opt/app",
            "deleted /a/evt_a.json",
        ];
        assert!(violations(&log).is_empty());
    }

    #[test]
    fn kept_and_dry_run_lines_are_not_deletions() {
        let log = [
            "verification failed: /a/evt_a.json (kept)",
            "/a/evt_a.json: not deleted",
            "would delete /a/evt_a.json",
            "t tmpa-compact finished: deleted=3 exit=1 (needs a look)",
        ];
        assert!(violations(&log).is_empty());
    }
}
