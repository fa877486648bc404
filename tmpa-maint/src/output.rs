//! What a program prints besides its report: the log's first and last lines (on stdout,
//! or stderr under `--json`), stdout that survives a closed pipe, and progress shown only
//! on a terminal.

use std::io::{self, IsTerminal, Write};

use chrono::{DateTime, Local, SecondsFormat};
use tmpa_core::Root;
use tmpa_core::maintenance::{line_text, path_text};

use crate::exit::ExitStatus;

/// Now, in local time, as RFC 3339 with seconds.
pub fn now_rfc3339() -> String {
    rfc3339(Local::now())
}

/// `t` as RFC 3339 with seconds: every time a run record or a log line holds.
pub(crate) fn rfc3339(t: DateTime<Local>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// The log's first line: `{time} {program} {mode} root={root}`.
pub fn header_line(program: &str, mode: &str, root: &Root) -> String {
    format!(
        "{} {program} {mode} root={}",
        now_rfc3339(),
        path_text(root.path())
    )
}

/// The log's last line: `{time} {program} finished: {counts} exit={code} ({words})`, the
/// counts as `key=value` in key order.
pub fn footer_line(program: &str, exit: ExitStatus, counts: &serde_json::Value) -> String {
    let counts: Vec<String> = counts
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => format!("{k}={}", line_text(s)),
                    other => format!("{k}={other}"),
                })
                .collect()
        })
        .unwrap_or_default();
    let counts: String = counts.iter().map(|c| format!("{c} ")).collect();
    format!(
        "{} {program} finished: {counts}exit={} ({})",
        now_rfc3339(),
        exit.code(),
        exit.describe()
    )
}

/// Progress on stderr, shown only when stderr is a terminal (never in a cron log).
#[derive(Debug)]
pub struct Progress {
    on: bool,
}

impl Progress {
    /// A progress line that prints only on a terminal.
    pub fn new() -> Progress {
        Progress {
            on: io::stderr().is_terminal(),
        }
    }

    /// Replaces the progress line.
    pub fn show(&self, msg: impl AsRef<str>) {
        if self.on {
            eprint!("\r\x1b[K{}", line_text(msg.as_ref()));
        }
    }

    /// Clears the progress line.
    pub fn clear(&self) {
        if self.on {
            eprint!("\r\x1b[K");
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

/// Prints a log line (first or last): on stdout, or on stderr when stdout carries the
/// `--json` report, so that stdout stays one JSON document.
pub fn log_line(json: bool, line: &str) {
    if json {
        eprintln!("{line}");
    } else {
        out(&format!("{line}\n"));
    }
}

/// Writes `text` to stdout. A closed stdout (`tmpa-compact --dry-run | head`) is not an
/// error worth a panic: the run's work, run record and exit status stand; the rest of
/// the output is dropped.
pub fn out(text: &str) {
    let mut stdout = io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_line_lists_counts_in_key_order_then_the_exit() {
        let counts = serde_json::json!({"kept": 1, "deleted": 3, "note": "a\nb"});
        let line = footer_line("tmpa-x", ExitStatus::NeedsLook, &counts);
        let (time, rest) = line.split_once(' ').expect("time first");
        assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok(), "{time}");
        assert_eq!(
            rest,
            format!(
                "tmpa-x finished: deleted=3 kept=1 note=a\\nb exit=1 ({})",
                ExitStatus::NeedsLook.describe()
            )
        );
        let none = footer_line("tmpa-x", ExitStatus::Ok, &serde_json::json!({}));
        assert!(none.ends_with(" tmpa-x finished: exit=0 (ok)"), "{none}");
    }
}
