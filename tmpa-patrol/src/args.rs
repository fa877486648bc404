//! The patrol's flags (`Args`) and the check that a set of thresholds makes sense
//! before anything runs (`validate`: a contradictory set is a usage error, exit 3).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tmpa_maint::parse_age;

use crate::check::TASKS;
use crate::logs::{self, LogSource};

/// Check a TMPA root against the nine-item operations checklist (read-only), and how its
/// counts grew since the last patrol.
///
/// Exit status follows the monitoring-plugin convention: 0 ok, 1 warning, 2 critical,
/// 3 unknown (including "cannot check": not a TMPA root, bad flag). Each run remembers its
/// counts (temporaries, corrupt files, largest directories) in
/// {root}/.tmpa/patrol/history.json for the growth check.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "tmpa-patrol", version, about)]
pub struct Args {
    /// The TMPA root to check [default: the current directory]
    #[arg(long, env = "TMPA_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Print the report as one JSON document on stdout (log lines go to stderr)
    #[arg(long)]
    pub json: bool,
    /// Also write the report in node_exporter textfile format to FILE, atomically
    #[arg(long, value_name = "FILE")]
    pub prometheus: Option<PathBuf>,
    /// Diagnostics of the libraries beneath the patrol (`-v`/`-q`, as every program).
    #[command(flatten)]
    pub diagnostics: tmpa_maint::Diagnostics,
    /// Started as root, patrol as USER (its uid, gid and groups from /etc/passwd and
    /// /etc/group), for good, as the scheduled patrol does: only after opening the --log
    /// files, so that these may stay root's and adm's. Started as USER: nothing to do;
    /// as another user: cannot check (exit 3). root or empty: run as started
    #[arg(long, env = "TMPA_USER", value_name = "USER")]
    pub user: Option<String>,

    /// Command that must exit 0 and print RUNNING, run with `sh -c` (e.g. "supervisorctl
    /// status app", or "systemctl is-active --quiet app && echo RUNNING"); it gets only
    /// PATH, LANG, LC_* and TZ of the patrol's environment [default: none, or empty: the
    /// check is skipped and says it is not configured]
    #[arg(long, value_name = "CMD", env = "TMPA_SERVICE_CMD")]
    pub service_cmd: Option<String>,
    /// Kill the service command after this long (it is then critical)
    #[arg(long, value_name = "AGE", default_value = "10s", value_parser = parse_age)]
    pub service_timeout: Duration,

    /// Directories that must exist as real directories in the root, comma-separated
    #[arg(
        long,
        value_name = "DIRS",
        value_delimiter = ',',
        default_value = "notifications,token_stats,chat_history"
    )]
    pub required_dirs: Vec<String>,

    /// Warn when an inbox holds more than this many entries
    #[arg(long, value_name = "N", default_value_t = 5000)]
    pub inbox_files_warning: u64,
    /// Critical when an inbox holds more than this many entries
    #[arg(long, value_name = "N", default_value_t = 10000)]
    pub inbox_files_critical: u64,
    /// Warn when a token_stats day directory holds more than this many entries
    #[arg(long, value_name = "N", default_value_t = 5000)]
    pub token_stats_files_warning: u64,
    /// Critical when a token_stats day directory holds more than this many entries
    #[arg(long, value_name = "N", default_value_t = 10000)]
    pub token_stats_files_critical: u64,

    /// Warn when more than this percentage of the file system's inodes is used
    #[arg(long, value_name = "PCT", default_value_t = 70.0)]
    pub inodes_warning: f64,
    /// Critical when more than this percentage of the file system's inodes is used
    #[arg(long, value_name = "PCT", default_value_t = 85.0)]
    pub inodes_critical: f64,

    /// A temporary unchanged for this long, neither its content (mtime) nor its inode
    /// (ctime), is stale: tmpa-tmpclean's rule and --older-than
    #[arg(long, value_name = "AGE", default_value = "48h", value_parser = parse_age)]
    pub tmp_older_than: Duration,
    /// Warn when more than this many stale temporaries exist
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub tmp_warning: u64,
    /// Critical when more than this many stale temporaries exist
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub tmp_critical: u64,

    /// Warn when more than this many JSON files are corrupt
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub corrupt_warning: u64,
    /// Critical when more than this many JSON files are corrupt
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub corrupt_critical: u64,
    /// Re-parse only JSON files whose size, mtime, ctime or inode changed since they
    /// were last checked (cache in {root}/.tmpa/patrol/)
    #[arg(long)]
    pub incremental: bool,
    /// With --incremental: ignore the cache, parse every file, and rebuild the cache
    #[arg(long, requires = "incremental")]
    pub full: bool,
    /// With --incremental: re-parse a file whose cached verdict is older than this,
    /// changed or not
    #[arg(long, value_name = "AGE", default_value = "24h", value_parser = parse_age)]
    pub cache_max_age: Duration,

    /// compact_events must have succeeded (a real run, exit 0 or 1) this recently
    #[arg(long, value_name = "AGE", default_value = "24h", value_parser = parse_age)]
    pub compact_window: Duration,
    /// archive_history must have succeeded this recently (weekly job: 7 days + 1)
    #[arg(long, value_name = "AGE", default_value = "8d", value_parser = parse_age)]
    pub archive_window: Duration,
    /// A job's log file, as its cron line appends to it (TASK is compact_events or
    /// archive_history); repeatable. Its last 50 lines are shown when the job is not
    /// healthy, and a deletion that follows a failed verification of the same path is
    /// critical
    #[arg(long = "log", value_name = "TASK=PATH", value_parser = parse_log_arg)]
    pub logs: Vec<(String, PathBuf)>,
    /// A job's systemd unit whose journal is read as --log reads a file (e.g.
    /// compact_events=tmpa-compact.service), with journalctl over the last 8 days; the
    /// patrol needs to be root or in group systemd-journal
    #[arg(long = "journal", value_name = "TASK=UNIT", value_parser = parse_journal_arg)]
    pub journals: Vec<(String, String)>,
    /// With --journal: read the journal files in DIR instead of the system's
    /// (journalctl --directory), e.g. a container's persisted journal
    #[arg(long, value_name = "DIR", requires = "journals")]
    pub journal_directory: Option<PathBuf>,
    /// Make one cheap request to the archive store that {root}/tmpa.toml names (a listing
    /// of at most one key, 10 s at most): archive_history_last_success is critical when
    /// the store cannot be reached
    #[arg(long)]
    pub check_archive_store: bool,

    /// Read compacted days and local archives against their checksums, at most
    /// --scrub-bytes per patrol, resuming where the last patrol stopped
    /// ({root}/.tmpa/patrol/scrub.json); adds the scrub check, critical while a damaged
    /// file is known
    #[arg(long)]
    pub scrub: bool,
    /// With --scrub: bytes read per patrol (a file is read whole)
    #[arg(long, value_name = "SIZE", default_value = "64M",
          value_parser = crate::scrub::parse_bytes, requires = "scrub")]
    pub scrub_bytes: u64,
    /// With --scrub: warn when no complete pass ended within this long
    #[arg(long, value_name = "AGE", default_value = "7d", value_parser = parse_age,
          requires = "scrub")]
    pub scrub_window: Duration,

    /// growth: temporaries and corrupt files grow in a run when their count rose by more
    /// than this since the previous patrol
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub growth_warning: u64,
    /// growth: one of the five largest directories grows in a run when it gained more
    /// than this many entries since the previous patrol
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub growth_dir_warning: u64,
    /// growth: warn when a count grew in this many patrols in a row
    #[arg(long, value_name = "RUNS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub growth_runs: u32,
    /// After a deployment: patrol every INTERVAL (e.g. 1m), one line per interval with
    /// what changed, then a verdict and the exit status of the worst check; until --for is
    /// over, or until interrupted (Ctrl-C, SIGTERM). Does not add to the history
    #[arg(long, value_name = "INTERVAL", value_parser = parse_age)]
    pub watch: Option<Duration>,
    /// With --watch: stop after this long (e.g. 30m)
    #[arg(long = "for", value_name = "DURATION", requires = "watch", value_parser = parse_age)]
    pub watch_for: Option<Duration>,
    /// With --watch, for a deploy gate: judge only what changed since the watch began.
    /// The first patrol is the baseline; a check counts when it gets worse than it was
    /// then (a warning that was there before, or the job checks' critical of the dry-run
    /// weeks, does not), and the exit status is the worst such change (0 when none)
    #[arg(long, requires = "watch")]
    pub since_deploy: bool,
}

/// `TASK=VALUE` with a known task.
fn task_and(s: &str, example: &str) -> Result<(String, String), String> {
    let (task, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected {example}"))?;
    if !TASKS.contains(&task) {
        return Err(format!(
            "{task:?}: unknown task; use one of {}",
            TASKS.join(", ")
        ));
    }
    if value.is_empty() {
        return Err(format!("{s:?}: nothing after '='; expected {example}"));
    }
    Ok((task.to_owned(), value.to_owned()))
}

pub(crate) fn parse_log_arg(s: &str) -> Result<(String, PathBuf), String> {
    let (task, path) = task_and(
        s,
        "TASK=PATH, e.g. compact_events=/var/log/tmpa/compact.log",
    )?;
    Ok((task, PathBuf::from(path)))
}

pub(crate) fn parse_journal_arg(s: &str) -> Result<(String, String), String> {
    let (task, unit) = task_and(s, "TASK=UNIT, e.g. compact_events=tmpa-compact.service")?;
    if !logs::is_unit_name(&unit) {
        return Err(format!(
            "{unit:?}: not a unit name (letters, digits and :_.@-, no pattern)"
        ));
    }
    Ok((task, unit))
}

impl Args {
    /// Where `task`'s output is read from, in the order given: its `--log` files, then
    /// its `--journal` units.
    pub(crate) fn log_sources(&self, task: &str) -> Vec<LogSource> {
        let files = self
            .logs
            .iter()
            .filter(|(t, _)| t == task)
            .map(|(_, p)| LogSource::File(p.clone()));
        let units = self
            .journals
            .iter()
            .filter(|(t, _)| t == task)
            .map(|(_, unit)| LogSource::Journal {
                unit: unit.clone(),
                directory: self.journal_directory.clone(),
            });
        files.chain(units).collect()
    }
}

/// Thresholds checked before running, so that a contradictory set is a usage error.
pub(crate) fn validate(args: &Args) -> Result<(), String> {
    let pairs = [
        (
            "--inbox-files",
            args.inbox_files_warning as f64,
            args.inbox_files_critical as f64,
        ),
        (
            "--token-stats-files",
            args.token_stats_files_warning as f64,
            args.token_stats_files_critical as f64,
        ),
        ("--inodes", args.inodes_warning, args.inodes_critical),
        ("--tmp", args.tmp_warning as f64, args.tmp_critical as f64),
        (
            "--corrupt",
            args.corrupt_warning as f64,
            args.corrupt_critical as f64,
        ),
    ];
    for (flag, w, c) in pairs {
        if !(w.is_finite() && c.is_finite()) || w > c {
            return Err(format!(
                "{flag}-warning ({w}) must be a number not above {flag}-critical ({c})"
            ));
        }
    }
    if args.service_timeout.is_zero() {
        return Err("--service-timeout must be more than 0s".into());
    }
    if args.watch.is_some_and(|w| w.is_zero()) {
        return Err("--watch must be at least 1s".into());
    }
    for d in &args.required_dirs {
        let p = Path::new(d);
        if d.is_empty()
            || !p
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
        {
            return Err(format!(
                "--required-dirs: {d:?} must be a relative path without '..'"
            ));
        }
    }
    Ok(())
}
