//! What one check says: its [`Status`] (ordered from ok to unknown, the plugin exit
//! codes), its perfdata ([`Perf`]) and the [`Check`] itself as `--json` prints it; the
//! checks' names in report order, and the tasks the job checks watch.

use std::process::ExitCode;

use serde::Serialize;

/// The checks, in report order.
pub const CHECK_NAMES: [&str; 11] = [
    "service",
    "directories",
    "inbox_files",
    "token_stats_files",
    "inodes",
    "file_system",
    "tmp_files",
    "corrupt_json",
    "compact_events_last_success",
    "archive_history_last_success",
    "growth",
];

/// The tasks a job check watches (and `--log` and `--journal` accept): here, below both
/// the flags that name them and the job checks.
pub const TASKS: [&str; 2] = ["compact_events", "archive_history"];

/// How many paths a check lists at most (the count is always exact).
pub const FINDINGS_MAX: usize = 20;

/// The outcome of one check (or of the whole patrol).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// 0: fine.
    Ok,
    /// 1: needs a look soon.
    Warning,
    /// 2: needs a look now.
    Critical,
    /// 3: could not be checked.
    Unknown,
}

impl Status {
    /// The plugin exit code.
    pub fn code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Warning => 1,
            Status::Critical => 2,
            Status::Unknown => 3,
        }
    }

    /// The word on the Nagios status line.
    pub fn word(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warning => "WARNING",
            Status::Critical => "CRITICAL",
            Status::Unknown => "UNKNOWN",
        }
    }

    /// Severity for combining: critical > warning > unknown > ok (the usual plugin
    /// rule: a known problem outranks a check that could not run).
    pub(crate) fn severity(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Unknown => 1,
            Status::Warning => 2,
            Status::Critical => 3,
        }
    }

    /// The worse of two statuses.
    pub fn worst(self, other: Status) -> Status {
        if other.severity() > self.severity() {
            other
        } else {
            self
        }
    }

    /// The status of `value` against "more than `warning`" / "more than `critical`".
    ///
    /// # Examples
    /// ```
    /// use tmpa_patrol::Status;
    /// assert_eq!(Status::of_threshold(5000.0, 5000.0, 10000.0), Status::Ok);
    /// assert_eq!(Status::of_threshold(5001.0, 5000.0, 10000.0), Status::Warning);
    /// assert_eq!(Status::of_threshold(10001.0, 5000.0, 10000.0), Status::Critical);
    /// ```
    pub fn of_threshold(value: f64, warning: f64, critical: f64) -> Status {
        if value > critical {
            Status::Critical
        } else if value > warning {
            Status::Warning
        } else {
            Status::Ok
        }
    }
}

impl From<Status> for ExitCode {
    fn from(s: Status) -> ExitCode {
        ExitCode::from(s.code())
    }
}

/// One perfdata item (Nagios) / one number of a check.
#[derive(Clone, Debug, PartialEq)]
pub struct Perf {
    /// Label, e.g. `inbox_files_max`.
    pub label: &'static str,
    /// The value; `None` prints as `U`.
    pub value: Option<f64>,
    /// Unit of measure: "", "%", "s".
    pub uom: &'static str,
    /// Warning threshold.
    pub warn: Option<f64>,
    /// Critical threshold.
    pub crit: Option<f64>,
}

/// The result of one check.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// One of [`CHECK_NAMES`].
    pub name: &'static str,
    /// Its status.
    pub status: Status,
    /// Its main number (null when it could not be measured).
    #[serde(serialize_with = "serialize_number")]
    pub value: Option<f64>,
    /// What was found, in a few words.
    pub detail: String,
    /// Paths or lines behind the detail (at most [`FINDINGS_MAX`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<String>,
    /// The job's last log lines (only for a job check that is not ok, with `--log` or
    /// `--journal`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub log_tail: Vec<String>,
    /// Not configured: shown as unknown but left out of the overall status.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    /// Perfdata items.
    #[serde(skip)]
    pub perf: Vec<Perf>,
}

impl Check {
    /// A check with no findings, log or perfdata.
    pub fn new(name: &'static str, status: Status, value: Option<f64>, detail: String) -> Check {
        Check {
            name,
            status,
            value,
            detail,
            findings: Vec::new(),
            log_tail: Vec::new(),
            skipped: false,
            perf: Vec::new(),
        }
    }
}

/// Integral values serialize as JSON integers, others as floats, `None` as null.
fn serialize_number<S: serde::Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match *v {
        Some(x) if x.fract() == 0.0 && x.abs() < 9.0e15 => s.serialize_i64(x as i64),
        Some(x) if x.is_finite() => s.serialize_f64(x),
        _ => s.serialize_none(),
    }
}
