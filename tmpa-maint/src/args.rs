//! The flags every program takes (and what a command line clap refused seems to ask
//! for: [`Invocation`]), the three modes a run can be in, and ages.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// Flags every maintenance program takes.
#[derive(clap::Args, Clone, Debug)]
pub struct CommonArgs {
    /// The TMPA root to work on [default: the current directory]
    #[arg(long, env = "TMPA_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Plan and print exactly what a real run would do; change nothing outside {root}/.tmpa/
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as one JSON document on stdout (log lines go to stderr)
    #[arg(long)]
    pub json: bool,
    /// With --dry-run: also write the plan to FILE (JSON: every file a real run would
    /// delete, with the stamp and SHA-256 it would verify and what would hold its data),
    /// for review and --apply-plan
    #[arg(long, value_name = "FILE", requires = "dry_run")]
    pub save_plan: Option<PathBuf>,
    /// Delete exactly what the plan in FILE lists (made by --dry-run --save-plan): each file
    /// only if it is still the same file and its data is still where the plan says; files
    /// not in the plan are left for the next run. A plan for another program or root, of an
    /// incompatible version, or torn, is refused (exit 2)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["dry_run", "save_plan"])]
    pub apply_plan: Option<PathBuf>,
    /// Run gently beside a live service writing to the same disk: work in small steps,
    /// each followed by a pause of at least this, and long enough that the run works at
    /// most a sixth of the time (so a disk slowed by the service slows the run), up to
    /// 16 times this. Deletions go in steps of 16, each committed (directory fsync), with at
    /// least a sixteenth of this pause; tmpa-compact also reads one file at a time, 256 a
    /// step, and writes _compacted.json 256 KiB a step, each synced (fdatasync). The run
    /// takes longer; what it does is the same. The crontab and the systemd units pass 20ms;
    /// 0 (the default) runs at full speed, e.g. for a catch-up by hand
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = parse_pause)]
    pub pace: Duration,
    /// Started as root, do the work as USER (its uid, gid and groups from /etc/passwd and
    /// /etc/group), for good, as the scheduled jobs do: only after reading --apply-plan,
    /// opening --save-plan and taking the credentials from the environment, so that these
    /// may be root's alone. Started as USER: nothing to do; as another user: refused
    /// (exit 2). root or empty: run as started
    #[arg(long, env = "TMPA_USER", value_name = "USER")]
    pub user: Option<String>,
    /// Diagnostics of the libraries beneath the program (see [`Diagnostics`]).
    #[command(flatten)]
    pub diagnostics: Diagnostics,
}

impl CommonArgs {
    /// What these flags say about the run, for the record of one that does not start.
    pub fn invocation(&self) -> Invocation {
        Invocation {
            root: self.root.clone(),
            dry_run: self.dry_run,
            json: self.json,
            user: self.user.clone(),
        }
    }
}

/// What the command line says about a run, enough to record one that did not start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Invocation {
    /// `--root` (else `TMPA_ROOT`, else the current directory).
    pub root: Option<PathBuf>,
    /// `--dry-run`.
    pub dry_run: bool,
    /// `--json`: the log lines go to stderr.
    pub json: bool,
    /// `--user` (else `TMPA_USER`).
    pub user: Option<String>,
}

impl Invocation {
    /// The invocation a command line clap refused seems to ask for: `--root DIR` or
    /// `--root=DIR` (else `TMPA_ROOT`), `--dry-run`, `--json`, `--user` (else
    /// `TMPA_USER`), wherever they are.
    ///
    /// # Examples
    /// ```
    /// use tmpa_maint::Invocation;
    /// let raw = ["tmpa-compact", "--dryrun", "--root=/srv/a", "--json"].map(Into::into);
    /// let i = Invocation::from_raw(&raw);
    /// assert_eq!(i.root.as_deref(), Some("/srv/a".as_ref()));
    /// assert!(!i.dry_run && i.json);
    /// ```
    pub fn from_raw(raw: &[OsString]) -> Invocation {
        let value = |flag: &str| -> Option<OsString> {
            let eq = format!("{flag}=");
            raw.iter().enumerate().skip(1).find_map(|(i, a)| {
                let s = a.to_str()?;
                if s == flag {
                    raw.get(i + 1).cloned()
                } else {
                    s.strip_prefix(&eq).map(OsString::from)
                }
            })
        };
        let has = |flag: &str| raw.iter().skip(1).any(|a| a == flag);
        let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        Invocation {
            root: value("--root")
                .or_else(|| env("TMPA_ROOT"))
                .map(PathBuf::from),
            dry_run: has("--dry-run"),
            json: has("--json"),
            user: value("--user")
                .or_else(|| env("TMPA_USER"))
                .and_then(|u| u.into_string().ok()),
        }
    }
}

/// `-v`/`-q`: how much the libraries beneath a program say on stderr, through `tracing`
/// (the object-store client's retries and its HTTP client's connections, say). Warnings
/// by default; `-v` adds each retry of the store, `-vv` the HTTP client's debug lines,
/// `-q` silences them. The program's own log lines (first line, `problem:` lines,
/// totals) are its record, read by operators and the patrol: no flag removes them.
pub type Diagnostics = clap_verbosity_flag::Verbosity<clap_verbosity_flag::WarnLevel>;

/// Sends the diagnostics `-v`/`-q` ask for to stderr; the first call of a process wins.
pub fn init_diagnostics(level: &Diagnostics) {
    // A second subscriber (a test running several programs in one process) is refused by
    // tracing; the first one stands.
    let _ = tracing_subscriber::fmt()
        .with_max_level(level.tracing_level_filter())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// What a run may change. One code path serves all three: they differ only where the
/// run would write or delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `--dry-run`: read, decide and report; change nothing outside `{root}/.tmpa/`.
    Plan,
    /// `--no-delete`: write and verify what holds the data, delete nothing (a rollout
    /// step; the next real run deletes what is then verified).
    KeepSources,
    /// Write, verify, receipt, delete.
    Real,
}

impl Mode {
    /// The mode the flags ask for.
    pub fn of_flags(dry_run: bool, no_delete: bool) -> Mode {
        match (dry_run, no_delete) {
            (true, _) => Mode::Plan,
            (false, true) => Mode::KeepSources,
            (false, false) => Mode::Real,
        }
    }

    /// Whether the run changes nothing outside `.tmpa/`.
    pub fn is_plan(self) -> bool {
        self == Mode::Plan
    }

    /// Whether the run writes (archives, compacted files, summaries).
    pub fn writes(self) -> bool {
        self != Mode::Plan
    }

    /// Whether the run deletes what it verified.
    pub fn deletes(self) -> bool {
        self == Mode::Real
    }

    /// The word of the log's first line: `DRY-RUN`, `{real}-NO-DELETE` or `{real}`.
    pub fn label(self, real: &str) -> String {
        match self {
            Mode::Plan => "DRY-RUN".to_owned(),
            Mode::KeepSources => format!("{real}-NO-DELETE"),
            Mode::Real => real.to_owned(),
        }
    }
}

/// Splits a command-line quantity such as `30d` or `256MiB` into its whole number and
/// the unit after it (possibly empty), the shared first step of the flags' parsers.
///
/// # Errors
/// `"{s:?}: expected {expected}"` when `s` does not start with a whole number that fits
/// in a `u64`.
///
/// # Examples
/// ```
/// use tmpa_maint::number_and_unit;
/// assert_eq!(number_and_unit("30d", "a number").unwrap(), (30, "d"));
/// assert_eq!(number_and_unit("512", "a number").unwrap(), (512, ""));
/// assert!(number_and_unit("-1d", "a number").is_err());
/// ```
pub fn number_and_unit<'s>(s: &'s str, expected: &str) -> Result<(u64, &'s str), String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n = num
        .parse()
        .map_err(|_| format!("{s:?}: expected {expected}"))?;
    Ok((n, unit))
}

/// Parses a pause: `0`, or a whole number of milliseconds or seconds (`20ms`, `1s`).
///
/// # Errors
/// A message saying what is wrong, for clap to print (exit 2).
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use tmpa_maint::parse_pause;
/// assert_eq!(parse_pause("20ms").unwrap(), Duration::from_millis(20));
/// assert_eq!(parse_pause("0").unwrap(), Duration::ZERO);
/// assert!(parse_pause("20").is_err());
/// assert!(parse_pause("2m").is_err()); // a pause between batches is short: ms or s
/// ```
pub fn parse_pause(s: &str) -> Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let (n, unit) = number_and_unit(s, "0 or a whole number and a unit (ms, s), e.g. 20ms")?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" if n <= 60 => Ok(Duration::from_secs(n)),
        "s" => Err(format!("{s:?}: at most 60s")),
        _ => Err(format!("{s:?}: unknown unit {unit:?}; use ms or s")),
    }
}

/// Parses an age such as `90s`, `15m`, `12h`, `30d` or `2w` (a whole number and one unit).
///
/// # Errors
/// A message saying what is wrong, for clap to print (exit 2).
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use tmpa_maint::parse_age;
/// assert_eq!(parse_age("12h").unwrap(), Duration::from_secs(12 * 3600));
/// assert_eq!(parse_age("2w").unwrap(), Duration::from_secs(14 * 86_400));
/// assert!(parse_age("12").is_err());
/// assert!(parse_age("-1d").is_err());
/// ```
pub fn parse_age(s: &str) -> Result<Duration, String> {
    let (n, unit) = number_and_unit(s, "a whole number and a unit (s, m, h, d, w), e.g. 30d")?;
    let secs_per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("{s:?}: unknown unit {unit:?}; use s, m, h, d or w")),
    };
    n.checked_mul(secs_per)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?}: too large"))
}
