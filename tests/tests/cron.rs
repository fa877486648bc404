//! cron/: the crontab, the package's /etc/cron.d/tmpa made from it, the systemd units and
//! the logrotate snippet call the binaries the package installs in /usr/bin, with flags
//! their `--help` lists, on the card's schedule, at the same gentle priority; all of them
//! take their settings from /etc/default/tmpa (cron/tmpa.default), as sh and systemd read
//! it, the units' user and writable paths through cron/tmpa-generator; the cron.d file
//! runs nothing as installed and the configuration as shipped deletes nothing; the units
//! pass `systemd-analyze security` and `verify`, and their system call filters allow
//! every call the programs make (traced by strace).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use tmpa_docgen::BIN_DIR;
use tmpa_tests::{ReachableBins, Run, Tree, bin, target_dir};

/// The binaries this workspace builds.
const PROGRAMS: [&str; 4] = [
    "tmpa-compact",
    "tmpa-archive",
    "tmpa-tmpclean",
    "tmpa-patrol",
];
/// The programs that delete, and so are installed in --dry-run.
const DELETING: [&str; 3] = ["tmpa-compact", "tmpa-archive", "tmpa-tmpclean"];
/// The production root of the shipped configuration.
const ROOT: &str = "/opt/app";
/// Where the configuration is installed; every job and unit reads it there.
const CONFIG: &str = "/etc/default/tmpa";
/// What every job of the crontab runs before its program: the configuration, exported
/// (`set -a`); then the program, started as root, which becomes `TMPA_USER` itself once
/// it has read what only root may (no runuser: the archive's credentials file is root's).
const JOB_PREFIX: [&str; 6] = ["set", "-a", "&&", ".", CONFIG, "&&"];

fn cron_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .join("cron")
}

fn read(rel: &str) -> String {
    let p = cron_dir().join(rel);
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A program's `--help`, built and run once per test process.
fn help(program: &str) -> String {
    static CACHE: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    cache
        .entry(program.to_owned())
        .or_insert_with(|| {
            let r: Run = bin(program)
                .arg("--help")
                .output()
                .expect("run --help")
                .into();
            assert_eq!(r.code, 0, "{program} --help: {}", r.stderr);
            r.stdout
        })
        .clone()
}

/// Splits a command line as sh (and systemd's ExecStart=) do for plain words and single
/// or double quotes.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    assert!(quote.is_none(), "unbalanced quote in {s:?}");
    if in_word {
        out.push(cur);
    }
    out
}

/// A program invocation: the program's name and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Call {
    program: String,
    args: Vec<String>,
}

/// Checks that `argv` calls one of our binaries by its installed path with flags its
/// `--help` lists; returns the call.
fn check_call(argv: &[String], context: &str) -> Call {
    let path = argv
        .first()
        .unwrap_or_else(|| panic!("{context}: empty command"));
    let program = path
        .strip_prefix(BIN_DIR)
        .unwrap_or_else(|| panic!("{context}: {path} is not under {BIN_DIR}"));
    assert!(
        PROGRAMS.contains(&program),
        "{context}: {program} is not a binary of this workspace"
    );
    let help = help(program);
    let listed: BTreeSet<&str> = help
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| w.starts_with("--"))
        .collect();
    for a in &argv[1..] {
        if let Some(flag) = a.strip_prefix("--") {
            let flag = format!("--{}", flag.split('=').next().unwrap_or(flag));
            assert!(
                listed.contains(flag.as_str()),
                "{context}: {program} --help does not list {flag} (it lists {listed:?})"
            );
        }
    }
    Call {
        program: program.to_owned(),
        args: argv[1..].to_vec(),
    }
}

/// How gently a job runs: what `nice`, `chrt` and `ionice` set in a crontab line, and
/// `Nice=`, `CPUSchedulingPolicy=`, `IOSchedulingClass=` and `IOSchedulingPriority=` in a
/// unit. The two must agree.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Priority {
    nice: Option<i32>,
    cpu_policy: Option<String>,
    io_class: Option<String>,
    io_priority: Option<u32>,
}

impl Priority {
    /// The priority the maintenance jobs run at (nice 19, SCHED_BATCH, idle I/O).
    fn lowest() -> Priority {
        Priority {
            nice: Some(19),
            cpu_policy: Some("batch".into()),
            io_class: Some("idle".into()),
            io_priority: None,
        }
    }

    /// Parses the wrappers at the start of `argv` (`nice -n N`, `chrt --batch 0`,
    /// `ionice -c C [-n P]`); returns the priority and the rest of the command.
    fn from_wrappers<'a>(mut argv: &'a [String], context: &str) -> (Priority, &'a [String]) {
        let mut p = Priority::default();
        loop {
            let w: Vec<&str> = argv.iter().take(5).map(String::as_str).collect();
            match w.as_slice() {
                ["nice", "-n", n, ..] => {
                    p.nice = Some(n.parse().expect("nice value"));
                    argv = &argv[3..];
                }
                ["chrt", "--batch" | "-b", "0", ..] => {
                    p.cpu_policy = Some("batch".into());
                    argv = &argv[3..];
                }
                ["ionice", "-c", class, rest @ ..] => {
                    p.io_class = Some(
                        match *class {
                            "1" => "realtime",
                            "2" => "best-effort",
                            "3" => "idle",
                            c => panic!("{context}: ionice -c {c}"),
                        }
                        .into(),
                    );
                    if let ["-n", n, ..] = rest {
                        p.io_priority = Some(n.parse().expect("ionice level"));
                        argv = &argv[5..];
                    } else {
                        argv = &argv[3..];
                    }
                }
                [w, ..] if ["nice", "chrt", "ionice"].contains(w) => {
                    panic!("{context}: {w} used in a form this test does not read: {argv:?}")
                }
                _ => return (p, argv),
            }
        }
    }

    /// The priority a unit's [Service] section sets.
    fn of_unit(u: &Unit) -> Priority {
        let one = |k: &str| {
            let v = get(u, "Service", k);
            assert!(v.len() <= 1, "{k} set twice");
            v.first().map(|s| (*s).to_owned())
        };
        Priority {
            nice: one("Nice").map(|n| n.parse().expect("Nice=")),
            cpu_policy: one("CPUSchedulingPolicy"),
            io_class: one("IOSchedulingClass"),
            io_priority: one("IOSchedulingPriority")
                .map(|n| n.parse().expect("IOSchedulingPriority=")),
        }
    }
}

/// Whether `field` is a valid crontab time field with values in `lo..=hi` (`names`, if
/// any, stand for `lo`, `lo + 1`, ...).
fn field_ok(field: &str, lo: u32, hi: u32, names: &[&str]) -> bool {
    let value = |s: &str| -> Option<u32> {
        if let Ok(n) = s.parse::<u32>() {
            return (lo..=hi).contains(&n).then_some(n);
        }
        names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(s))
            .map(|i| lo + i as u32)
    };
    !field.is_empty()
        && field.split(',').all(|item| {
            let (range, step) = match item.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (item, None),
            };
            let step_ok = step.is_none_or(|s| s.parse::<u32>().is_ok_and(|n| n >= 1 && n <= hi));
            let range_ok = range == "*"
                || match range.split_once('-') {
                    Some((a, b)) => matches!((value(a), value(b)), (Some(a), Some(b)) if a <= b),
                    None => value(range).is_some() && step.is_none(),
                };
            step_ok && range_ok
        })
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Whether `fields` are five valid crontab time fields.
fn time_fields_ok(fields: &[&str]) -> bool {
    let limits: [(u32, u32, &[&str]); 5] = [
        (0, 59, &[]),
        (0, 23, &[]),
        (1, 31, &[]),
        (1, 12, &MONTHS),
        (0, 7, &DAYS),
    ];
    fields.len() == 5
        && fields
            .iter()
            .zip(limits)
            .all(|(f, (lo, hi, names))| field_ok(f, lo, hi, names))
}

/// One crontab entry.
#[derive(Debug, Clone)]
struct Entry {
    /// The five time fields.
    fields: [String; 5],
    /// The user column of a cron.d line.
    user: Option<String>,
    /// Whether the command starts with `test -x PROGRAM &&`.
    guarded: bool,
    /// How gently it runs.
    priority: Priority,
    /// What it runs.
    call: Call,
    /// The log it appends to.
    log: String,
    /// The command as written, after the time fields (and user column).
    command: String,
}

/// Parses a job line: five time fields, the user column when `user_column`, then the
/// command (optionally `test -x PROGRAM &&`, then wrappers, the program, its arguments,
/// `>> LOG 2>&1`).
fn parse_job(line: &str, context: &str, user_column: bool) -> Entry {
    assert!(
        !line.starts_with('@'),
        "{context}: use five fields, not @shortcuts"
    );
    let mut rest = line;
    let mut fields: Vec<String> = Vec::new();
    for _ in 0..5 + usize::from(user_column) {
        rest = rest.trim_start();
        let end = rest
            .find(char::is_whitespace)
            .unwrap_or_else(|| panic!("{context}: fewer than five fields"));
        fields.push(rest[..end].to_owned());
        rest = &rest[end..];
    }
    let user = user_column.then(|| fields.pop().expect("user column"));
    let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
    assert!(time_fields_ok(&refs), "{context}: bad time fields {refs:?}");
    // cron turns an unescaped % into a newline.
    assert!(!rest.contains('%'), "{context}: % in a command");
    let command = rest.trim().to_owned();
    let argv = words(rest);
    let (guarded, argv) = match argv.as_slice() {
        [t, x, path, and, rest @ ..] if t == "test" && x == "-x" && and == "&&" => {
            assert!(
                rest.iter().any(|w| w == path),
                "{context}: test -x {path} guards another program: {rest:?}"
            );
            (true, rest)
        }
        _ => (false, argv.as_slice()),
    };
    let prefix = JOB_PREFIX.map(str::to_owned);
    assert!(
        argv.starts_with(&prefix),
        "{context}: a job reads {CONFIG}: {argv:?}"
    );
    let argv = &argv[prefix.len()..];
    assert!(
        !argv.iter().any(|w| w == "&&" || w == ";" || w == "|"),
        "{context}: one command per job: {argv:?}"
    );
    let (priority, argv) = Priority::from_wrappers(argv, context);
    let n = argv.len();
    assert!(
        n >= 4 && argv[n - 3] == ">>" && argv[n - 1] == "2>&1",
        "{context}: must end with '>> /var/log/tmpa/NAME.log 2>&1': {argv:?}"
    );
    let log = argv[n - 2].clone();
    assert!(
        log.starts_with("/var/log/tmpa/") && log.ends_with(".log"),
        "{context}: log {log}"
    );
    let call = check_call(&argv[..n - 3], context);
    Entry {
        fields: fields.try_into().expect("five"),
        user,
        guarded,
        priority,
        call,
        log,
        command,
    }
}

/// An environment line (`NAME=value`), if `line` is one.
fn env_line(line: &str) -> Option<(String, String)> {
    let (name, value) = line.split_once('=')?;
    let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    ok.then(|| (name.to_owned(), value.to_owned()))
}

/// A crontab's entries and its environment lines.
struct Crontab {
    entries: Vec<Entry>,
    env: BTreeMap<String, String>,
    /// Job lines that are commented out (cron.d).
    commented: Vec<Entry>,
}

/// Parses a crontab (`user_column`: cron.d format). A comment whose first five words are
/// valid time fields is a commented-out job, and is parsed as one.
fn parse_crontab(name: &str, text: &str, user_column: bool) -> Crontab {
    let mut tab = Crontab {
        entries: Vec::new(),
        env: BTreeMap::new(),
        commented: Vec::new(),
    };
    for (i, line) in text.lines().enumerate() {
        let context = format!("{name}:{}", i + 1);
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let first: Vec<&str> = comment.split_whitespace().take(5).collect();
            if time_fields_ok(&first) {
                tab.commented
                    .push(parse_job(comment, &context, user_column));
            }
            continue;
        }
        if let Some((name, value)) = env_line(line) {
            assert!(
                !line.contains(char::is_whitespace),
                "{context}: an environment line is NAME=value"
            );
            tab.env.insert(name, value);
            continue;
        }
        tab.entries.push(parse_job(line, &context, user_column));
    }
    tab
}

/// Root's crontab, cron/tmpa.crontab.
fn crontab() -> Crontab {
    let tab = parse_crontab("tmpa.crontab", &read("tmpa.crontab"), false);
    assert!(
        tab.commented.is_empty(),
        "no commented-out jobs in the crontab"
    );
    tab
}

#[test]
fn field_validation_rejects_out_of_range_and_malformed() {
    assert!(field_ok("*/5", 0, 59, &[]));
    assert!(field_ok("0,30", 0, 59, &[]));
    assert!(field_ok("1-5", 0, 7, &[]));
    assert!(field_ok("sun", 0, 7, &["sun"]));
    assert!(!field_ok("60", 0, 59, &[]));
    assert!(!field_ok("5-1", 0, 59, &[]));
    assert!(!field_ok("*/0", 0, 59, &[]));
    assert!(!field_ok("", 0, 59, &[]));
    assert!(!field_ok("0", 1, 31, &[]));
    assert!(!field_ok("x", 0, 23, &[]));
    assert!(!time_fields_ok(&["m", "h", "dom", "mon", "dow"]));
}

/// The wrappers are read as the tools read them.
#[test]
fn priority_wrappers_are_read() {
    let argv: Vec<String> = words("nice -n 19 chrt --batch 0 ionice -c 3 /usr/bin/x --a");
    let (p, rest) = Priority::from_wrappers(&argv, "t");
    assert_eq!(p, Priority::lowest());
    assert_eq!(rest, ["/usr/bin/x", "--a"]);
    let argv: Vec<String> = words("ionice -c 2 -n 7 nice -n 10 /usr/bin/x");
    let (p, rest) = Priority::from_wrappers(&argv, "t");
    let want = Priority {
        nice: Some(10),
        cpu_policy: None,
        io_class: Some("best-effort".into()),
        io_priority: Some(7),
    };
    assert_eq!((p, rest), (want, &argv[8..]));
}

/// Every non-comment crontab line is an environment line or a valid five-field entry that
/// calls one of this workspace's binaries (installed path) with flags its --help lists,
/// appending to its own log; the schedule is the card's; the maintenance jobs run at the
/// lowest priority, the patrol below normal.
#[test]
fn crontab_lines_are_valid_and_call_our_binaries() {
    let Crontab { entries, env, .. } = crontab();
    assert!(
        !env.contains_key("TMPA_ROOT"),
        "the root is {CONFIG}'s, not the crontab's"
    );
    let by_program: BTreeMap<&str, &Entry> = entries
        .iter()
        .map(|e| (e.call.program.as_str(), e))
        .collect();
    assert_eq!(by_program.len(), entries.len(), "one line per program");
    assert_eq!(by_program.keys().copied().collect::<Vec<_>>(), {
        let mut p = PROGRAMS.to_vec();
        p.sort_unstable();
        p
    });
    let when = |p: &str| by_program[p].fields.join(" ");
    assert_eq!(when("tmpa-compact"), "30 2 * * *", "compaction daily 02:30");
    assert_eq!(when("tmpa-archive"), "30 3 * * 0", "archival Sunday 03:30");
    assert_eq!(
        when("tmpa-patrol"),
        "*/5 * * * *",
        "patrol every five minutes"
    );
    let tmpclean = &by_program["tmpa-tmpclean"].fields;
    assert!(
        tmpclean[0].parse::<u32>().is_ok()
            && tmpclean[1].parse::<u32>().is_ok()
            && tmpclean[2..] == ["*", "*", "*"],
        "tmpclean once a day: {tmpclean:?}"
    );
    let args = |p: &str| by_program[p].call.args.join(" ");
    assert!(args("tmpa-archive").contains("--older-than 30d"));
    assert!(args("tmpa-tmpclean").contains("--older-than 24h"));
    assert!(args("tmpa-patrol").contains("--prometheus ${TMPA_METRICS_DIR}/tmpa.prom"));
    let logs: BTreeSet<&str> = entries.iter().map(|e| e.log.as_str()).collect();
    assert_eq!(logs.len(), entries.len(), "each job its own log");
    for e in &entries {
        assert!(!e.guarded, "root's crontab runs the programs unguarded");
        if DELETING.contains(&e.call.program.as_str()) {
            assert_eq!(e.priority, Priority::lowest(), "{}", e.call.program);
        } else {
            assert!(
                e.priority.nice.is_some_and(|n| n > 0) && e.priority.io_class.is_some(),
                "{}: {:?}",
                e.call.program,
                e.priority
            );
        }
    }
}

/// The configuration as shipped (cron/tmpa.default): `NAME=value` lines in the subset
/// that systemd's `EnvironmentFile=` and sh read alike (checked: sh's values are these).
fn config() -> BTreeMap<String, String> {
    config_of(&read("tmpa.default"))
}

/// Parses a configuration in that subset: no `export`, no `$`, a value with spaces in
/// double quotes (which both strip).
fn config_of(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = env_line(line).unwrap_or_else(|| panic!("not NAME=value: {line}"));
        assert!(
            !value.contains(['$', '`', '\\', '\'']),
            "{line}: sh and systemd differ on $, `, \\ and '"
        );
        let value = match value.strip_prefix('"') {
            Some(v) => v.strip_suffix('"').expect("closing quote").to_owned(),
            None => {
                assert!(
                    !value.contains([' ', '"']),
                    "{line}: quote a value with spaces"
                );
                value
            }
        };
        out.insert(name, value);
    }
    out
}

/// Writes a configuration: the shipped one with `changes` (name, value) made.
fn write_config(path: &Path, changes: &[(&str, &str)]) {
    let mut conf = config();
    for (k, v) in changes {
        conf.insert((*k).to_owned(), (*v).to_owned());
    }
    let text: String = conf.iter().map(|(k, v)| format!("{k}=\"{v}\"\n")).collect();
    fs::write(path, text).expect("write config");
}

/// A unit's ExecStart= with its variables expanded as systemd does (systemd.service(5),
/// "Command lines"): `$NAME` as a word of its own becomes the value split at whitespace
/// (nothing when empty); `${NAME}` becomes the value as it is, within its word.
fn expand_exec(exec: &[String], env: &BTreeMap<String, String>) -> Vec<String> {
    let value = |name: &str| env.get(name).cloned().unwrap_or_default();
    let mut out = Vec::new();
    for w in exec {
        if let Some(name) = w.strip_prefix('$').filter(|n| !n.starts_with('{')) {
            out.extend(value(name).split_whitespace().map(str::to_owned));
            continue;
        }
        let mut word = w.clone();
        while let Some(at) = word.find("${") {
            let end = at + word[at..].find('}').expect("closing brace");
            word.replace_range(at..=end, &value(&word[at + 2..end]));
        }
        out.push(word);
    }
    out
}

/// The shipped configuration reads the same to sh (the cron lines, tmpa-generator) as to
/// systemd's parser (the units), and installs every deleting program in --dry-run, paced,
/// on the production root, as root, with Debian's node_exporter directory.
#[test]
fn configuration_installs_every_program_in_dry_run() {
    let conf = config();
    let sh = Command::new("sh")
        .arg("-c")
        .arg("set -a && . \"$1\" && env")
        .arg("sh")
        .arg(cron_dir().join("tmpa.default"))
        .env_clear()
        .output()
        .expect("sh");
    assert!(sh.status.success(), "sh cannot read it: {sh:?}");
    let by_sh: BTreeMap<String, String> = String::from_utf8_lossy(&sh.stdout)
        .lines()
        .filter_map(env_line)
        .filter(|(k, _)| conf.contains_key(k))
        .collect();
    assert_eq!(by_sh, conf, "sh and systemd read tmpa.default alike");
    for p in DELETING {
        let var = tmpa_docgen::program(p).and_then(|p| p.mode_variable());
        let var = var.unwrap_or_else(|| panic!("{p}: no mode variable"));
        assert_eq!(
            conf.get(&var).map(String::as_str),
            Some("--dry-run"),
            "{var}"
        );
    }
    let pace = tmpa_maint::parse_pause(&conf["TMPA_PACE"]).expect("TMPA_PACE");
    assert!(!pace.is_zero(), "the jobs are paced as installed");
    assert_eq!(conf["TMPA_ROOT"], ROOT);
    assert_eq!(conf["TMPA_USER"], "root");
    assert_eq!(
        conf["TMPA_METRICS_DIR"],
        "/var/lib/prometheus/node-exporter"
    );
}

/// A crontab job as sh runs it, with the configuration, the programs and the logs moved:
/// `/etc/default/tmpa` → `conf`, `/usr/bin/tmpa-*` → their copies in `bins` (reachable by
/// any user, as a program started as `$TMPA_USER` needs), `/var/log/tmpa/` → `logs`.
/// Returns the run; fails at once when the job's program never started (its log says why).
fn run_cron_job(e: &Entry, conf: &Path, logs: &Path, bins: &ReachableBins) -> Run {
    let r: Run = cron_job_command(e, conf, logs, bins)
        .output()
        .expect("sh")
        .into();
    let log = logs.join(e.log.rsplit('/').next().expect("log name"));
    let log = fs::read_to_string(&log).unwrap_or_default();
    tmpa_tests::assert_started(r.code, &format!("{}{log}", r.stderr));
    r
}

/// The command [`run_cron_job`] runs.
fn cron_job_command(e: &Entry, conf: &Path, logs: &Path, bins: &ReachableBins) -> Command {
    let mut line = e.command.replace(CONFIG, &conf.display().to_string());
    for p in PROGRAMS {
        let copy = bins.path(p).display().to_string();
        line = line.replace(&format!("{BIN_DIR}{p} "), &format!("{copy} "));
    }
    let line = line.replace("/var/log/tmpa/", &format!("{}/", logs.display()));
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(&line)
        .env_clear()
        .env("PATH", "/usr/bin:/bin");
    sh
}

/// The last run record of `task` on `root`.
fn run_record(root: &Path, task: &str) -> serde_json::Value {
    let p = root.join(format!(".tmpa/runs/{task}.json"));
    serde_json::from_slice(&fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .expect("run record")
}

/// Each crontab line, run by sh as cron does with the shipped configuration (its root and
/// metrics directory moved to temporary ones), plans and deletes nothing: every deleting
/// program leaves a dry-run record and its files; the patrol writes its metrics.
#[test]
fn cron_lines_run_in_dry_run_with_the_shipped_configuration() {
    let Crontab { entries, .. } = crontab();
    let scratch = tempfile::tempdir().expect("tempdir");
    let t = Tree::new();
    let evt = t.event("2026-01-05", "e1", "u1", 3, 4);
    let conf = scratch.path().join("tmpa");
    let root = t.root().display().to_string();
    let metrics = scratch.path().display().to_string();
    write_config(
        &conf,
        &[("TMPA_ROOT", &root), ("TMPA_METRICS_DIR", &metrics)],
    );
    let bins = ReachableBins::copy(&PROGRAMS);
    for e in &entries {
        let r = run_cron_job(e, &conf, scratch.path(), &bins);
        let p = e.call.program.as_str();
        let log = fs::read_to_string(scratch.path().join(e.log.rsplit('/').next().expect("name")))
            .unwrap_or_default();
        if p == "tmpa-patrol" {
            // Critical (no real run has succeeded yet), the metrics written; no service
            // check is configured as shipped, and it says so, counting for nothing.
            let prom = fs::read_to_string(scratch.path().join("tmpa.prom"))
                .unwrap_or_else(|e| panic!("{p}: {e}: {r:?} {log}"));
            assert!(
                prom.contains("tmpa_check_skipped{check=\"service\"} 1"),
                "{p}: {prom}"
            );
            assert!(log.contains("not configured"), "{p}: {log}");
            continue;
        }
        assert_eq!(r.code, 0, "{p}: {r:?}\n{log}");
        let task = match tmpa_docgen::program(p).map(|p| p.kind) {
            Some(tmpa_docgen::Kind::Maintenance { task }) => task,
            other => panic!("{p}: {other:?}"),
        };
        assert_eq!(run_record(t.root(), task)["dry_run"], true, "{p}: {log}");
        assert!(log.contains(" DRY-RUN "), "{p}: {log}");
    }
    assert!(evt.exists(), "nothing deleted");
}

/// Moving compaction to real runs is the one line the docs say (`TMPA_COMPACT_MODE=`),
/// and with `TMPA_USER` the tree's owner both the cron line (the program becomes the user itself) and the unit
/// (ExecStart= as systemd expands it, run as the generator's `User=`) compact a tree that
/// user owns: loose events merged and deleted, new files the owner's, no root needed.
#[test]
fn one_line_of_the_configuration_makes_compaction_real_as_the_tree_owner() {
    let Some(()) = tmpa_tests::prerequisite(
        tmpa_tests::is_root(),
        "needs root to run the jobs as another user",
    ) else {
        return;
    };
    let bins = ReachableBins::copy(&PROGRAMS);
    let scratch = tempfile::tempdir().expect("tempdir");
    let conf = scratch.path().join("tmpa");
    let Crontab { entries, .. } = crontab();
    let cron_line = entries
        .iter()
        .find(|e| e.call.program == "tmpa-compact")
        .expect("compact line");
    let service = unit("systemd/tmpa-compact.service");
    for how in ["cron", "unit"] {
        let t = Tree::new();
        let evt = t.event("2026-01-05", "e1", "u1", 3, 4);
        t.event("2026-01-05", "e2", "u1", 1, 1);
        tmpa_tests::chown_tree(t.root(), 65_534, 65_534);
        let root = t.root().display().to_string();
        write_config(
            &conf,
            &[
                ("TMPA_ROOT", &root),
                ("TMPA_USER", "nobody"),
                ("TMPA_COMPACT_MODE", ""),
            ],
        );
        let r: Run = if how == "cron" {
            run_cron_job(cron_line, &conf, scratch.path(), &bins)
        } else {
            let env = config_of(&fs::read_to_string(&conf).expect("conf"));
            // The generator refuses a root under /tmp (the units' PrivateTmp=), where
            // the test's tree is: its User= is read from the same settings elsewhere.
            let unit_conf = scratch.path().join("unit-conf");
            write_config(
                &unit_conf,
                &[("TMPA_USER", "nobody"), ("TMPA_COMPACT_MODE", "")],
            );
            let generated = scratch.path().join("generator");
            let user = generated_user(&unit_conf, &generated, "tmpa-compact");
            assert_eq!(user, "nobody", "the unit's User=");
            let exec = expand_exec(&words(get(&service, "Service", "ExecStart")[0]), &env);
            Run::from(
                Command::new("/usr/sbin/runuser")
                    .args(["-u", &user, "--"])
                    .arg(bins.path("tmpa-compact"))
                    .args(&exec[1..])
                    .env_clear()
                    .envs(&env)
                    .output()
                    .expect("run"),
            )
            .started()
        };
        assert!(matches!(r.code, 0), "{how}: {r:?}");
        let record = run_record(t.root(), "compact_events");
        assert_eq!(record["dry_run"], false, "{how}: a real run");
        assert!(
            !evt.exists(),
            "{how}: the loose events were compacted and deleted"
        );
        let compacted = t.root().join("token_stats/2026-01-05/_compacted.json");
        let owner =
            std::os::unix::fs::MetadataExt::uid(&fs::metadata(&compacted).expect("compacted"));
        assert_eq!(owner, 65_534, "{how}: written as the tree's owner");
    }
}

/// The `User=` tmpa-generator gives `service` for the configuration `conf` (written into
/// `out`), root when it gives none.
fn generated_user(conf: &Path, out: &Path, service: &str) -> String {
    let r = run_generator(conf, out);
    assert_eq!(r.code, 0, "tmpa-generator: {r:?}");
    let dropin = out.join(format!("{service}.service.d/50-tmpa-config.conf"));
    let text = fs::read_to_string(&dropin).expect("drop-in");
    text.lines()
        .find_map(|l| l.strip_prefix("User="))
        .unwrap_or("root")
        .to_owned()
}

/// Runs cron/tmpa-generator on the configuration `conf`, into `out`.
fn run_generator(conf: &Path, out: &Path) -> Run {
    Command::new("sh")
        .arg(cron_dir().join("tmpa-generator"))
        .arg(out)
        .env("TMPA_CONFIG_FILE", conf)
        .output()
        .expect("sh")
        .into()
}

/// tmpa-generator turns the configuration into each service's drop-in: the root (and the
/// patrol's metrics directory) writable, the data directories read-only to the patrol,
/// `User=` unless root; a value systemd could misread (a relative path, a space, a bad
/// user name) is named on stderr and every service made to fail instead of running with a
/// default nobody chose.
#[test]
fn generator_writes_the_configured_user_and_paths() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let conf = scratch.path().join("tmpa");
    let dropin = |out: &Path, p: &str| {
        fs::read_to_string(out.join(format!("{p}.service.d/50-tmpa-config.conf"))).expect("drop-in")
    };
    let out = scratch.path().join("shipped");
    write_config(&conf, &[]);
    assert_eq!(run_generator(&conf, &out).code, 0);
    for p in PROGRAMS {
        let text = dropin(&out, p);
        let u = parse_unit(&text);
        assert_eq!(get(&u, "Service", "User"), Vec::<&str>::new(), "{p}: root");
        let rw = get(&u, "Service", "ReadWritePaths").join(" ");
        if p == "tmpa-patrol" {
            assert_eq!(rw, format!("-{ROOT} -/var/lib/prometheus/node-exporter"));
            assert_eq!(
                get(&u, "Service", "ReadOnlyPaths").join(" "),
                format!("-{ROOT}/notifications -{ROOT}/token_stats -{ROOT}/chat_history")
            );
        } else {
            assert_eq!(rw, format!("-{ROOT}"), "{p}");
        }
    }
    let out = scratch.path().join("owner");
    write_config(&conf, &[("TMPA_USER", "app"), ("TMPA_ROOT", "/srv/data")]);
    assert_eq!(run_generator(&conf, &out).code, 0);
    for p in PROGRAMS {
        let u = parse_unit(&dropin(&out, p));
        // tmpa-archive starts as root, reads its credentials, then becomes app itself.
        let want: &[&str] = if p == "tmpa-archive" { &[] } else { &["app"] };
        assert_eq!(get(&u, "Service", "User"), want, "{p}");
    }
    let u = parse_unit(&dropin(&out, "tmpa-archive"));
    assert_eq!(get(&u, "Service", "ReadWritePaths"), ["-/srv/data"]);
    // A root the sandbox hides (PrivateTmp=, ProtectHome=): named in the journal, every
    // unit refuses to run; exit 0, since cron (not sandboxed) may be what runs the jobs.
    for (name, hidden) in [
        ("TMPA_ROOT", "/tmp/op-app"),
        ("TMPA_ROOT", "/var/tmp/app"),
        ("TMPA_ROOT", "/home/app/data"),
        ("TMPA_ROOT", "/root/app"),
        ("TMPA_METRICS_DIR", "/run/user/0/metrics"),
    ] {
        let out = scratch
            .path()
            .join(format!("hidden-{}", hidden.replace('/', "_")));
        write_config(&conf, &[(name, hidden)]);
        let r = run_generator(&conf, &out);
        assert_eq!(r.code, 0, "{name}={hidden}: {r:?}");
        assert!(
            r.stderr.contains(&format!("{name}=\"{hidden}\"")) && r.stderr.contains("sandbox"),
            "{r:?}"
        );
        for p in PROGRAMS {
            let u = parse_unit(&dropin(&out, p));
            let exec = get(&u, "Service", "ExecStart");
            assert!(
                exec.len() == 2 && exec[1].contains("sandbox") && exec[1].contains("exit 2"),
                "{p}: {exec:?}"
            );
        }
    }
    for (name, bad) in [
        ("TMPA_ROOT", "srv/data"),
        ("TMPA_ROOT", "/srv/my data"),
        ("TMPA_USER", "app;rm"),
        ("TMPA_METRICS_DIR", ""),
    ] {
        let out = scratch.path().join(format!("bad-{name}-{}", bad.len()));
        write_config(&conf, &[(name, bad)]);
        let r = run_generator(&conf, &out);
        assert_eq!(r.code, 1, "{name}={bad:?}: {r:?}");
        assert!(r.stderr.contains(&format!("{name}=\"{bad}\"")), "{r:?}");
        assert!(r.stderr.contains(&conf.display().to_string()), "{r:?}");
        for p in PROGRAMS {
            let u = parse_unit(&dropin(&out, p));
            let exec = get(&u, "Service", "ExecStart");
            assert_eq!(
                exec.len(),
                2,
                "{p}: ExecStart reset, then the refusal: {exec:?}"
            );
            assert!(
                exec[1].contains("exit 2") && exec[1].contains("not valid"),
                "{exec:?}"
            );
            assert!(get(&u, "Service", "User").is_empty(), "{p}");
        }
    }
}

/// The package's /etc/cron.d/tmpa, as tmpa-docgen makes it from the crontab: the same
/// environment and the same jobs (time fields, priority, program, arguments, log) with
/// the user column root, every one commented out and guarded by `test -x`, the deleting
/// programs taking their mode from the configuration right after the program.
#[test]
fn cron_d_is_the_crontab_commented_out() {
    let text = tmpa_docgen::cron_d(&read("tmpa.crontab")).expect("cron.d");
    let d = parse_crontab("cron.d/tmpa", &text, true);
    let tab = crontab();
    assert!(
        d.entries.is_empty(),
        "no job of the package's cron.d runs as installed: {:?}",
        d.entries
    );
    assert_eq!(d.env, tab.env, "the same environment");
    assert!(text.contains("NOTHING HERE RUNS AS INSTALLED"), "{text}");
    assert_eq!(d.commented.len(), tab.entries.len(), "every job, once");
    for (job, cron) in d.commented.iter().zip(&tab.entries) {
        let p = cron.call.program.as_str();
        assert_eq!(job.user.as_deref(), Some("root"), "{p}");
        assert!(job.guarded, "{p}: test -x guard");
        assert_eq!(job.fields, cron.fields, "{p}");
        assert_eq!(job.priority, cron.priority, "{p}");
        assert_eq!(job.log, cron.log, "{p}");
        assert_eq!(job.call.program, p);
        assert_eq!(job.call.args, cron.call.args, "{p}");
        if DELETING.contains(&p) {
            let var = tmpa_docgen::program(p).and_then(|p| p.mode_variable());
            assert_eq!(job.call.args.first(), var.map(|v| format!("${v}")).as_ref());
        }
    }
}

/// A unit file: `key=value` lines by section.
type Unit = BTreeMap<String, Vec<(String, String)>>;

/// Parses a unit file of cron/ by its relative path.
fn unit(rel: &str) -> Unit {
    parse_unit(&read(rel))
}

/// Parses a unit file's `key=value` lines by section.
fn parse_unit(text: &str) -> Unit {
    let mut out: Unit = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_owned();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not key=value: {line}"));
        out.entry(section.clone())
            .or_default()
            .push((k.trim().to_owned(), v.trim().to_owned()));
    }
    out
}

fn get<'a>(u: &'a Unit, section: &str, key: &str) -> Vec<&'a str> {
    u.get(section)
        .map(|kv| {
            kv.iter()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
                .collect()
        })
        .unwrap_or_default()
}

/// `systemd-analyze`, which this machine and CI must have: a missing one fails the test
/// instead of letting the units go unchecked.
fn systemd_analyze() -> Command {
    let ok = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "systemd-analyze is missing: apt-get install systemd (tests/check.sh installs it)"
    );
    Command::new("systemd-analyze")
}

/// The three jobs that read and delete in bulk pace themselves (`--pace`, not 0, with the
/// shipped configuration): the priority wrapper alone leaves a live service's writes
/// waiting (docs/PERFORMANCE.md); the units pass the same arguments (checked below).
#[test]
fn bulk_jobs_pace_themselves() {
    let Crontab { entries, .. } = crontab();
    for program in ["tmpa-compact", "tmpa-archive", "tmpa-tmpclean"] {
        let e = entries
            .iter()
            .find(|e| e.call.program == program)
            .unwrap_or_else(|| panic!("no {program} line"));
        let args = expand_exec(&e.call.args, &config());
        let at = args.iter().position(|a| a == "--pace");
        let pace = at.and_then(|i| args.get(i + 1));
        assert!(
            pace.is_some_and(|p| p != "0" && tmpa_maint::parse_pause(p).is_ok_and(|d| !d.is_zero())),
            "{program}: the crontab line passes no --pace: {:?}",
            e.call.args
        );
    }
}

/// Each program has a oneshot service whose ExecStart calls it with listed flags, with
/// the configuration's settings, appending to its log, at the crontab's priority; and a timer on the
/// crontab's schedule (validated by systemd-analyze calendar).
#[test]
fn systemd_units_mirror_the_crontab() {
    let Crontab { entries, .. } = crontab();
    let expected_calendar = BTreeMap::from([
        ("tmpa-compact", "*-*-* 02:30:00"),
        ("tmpa-archive", "Sun *-*-* 03:30:00"),
        ("tmpa-patrol", "*:0/5"),
    ]);
    for Entry {
        call: cron_call,
        log: cron_log,
        priority: cron_priority,
        ..
    } in &entries
    {
        let p = cron_call.program.as_str();
        let service = unit(&format!("systemd/{p}.service"));
        let context = format!("{p}.service");
        assert_eq!(get(&service, "Service", "Type"), ["oneshot"], "{context}");
        assert_eq!(
            get(&service, "Service", "EnvironmentFile"),
            [CONFIG],
            "{context}: the settings are the configuration's"
        );
        assert!(
            get(&service, "Service", "Environment").is_empty(),
            "{context}: no setting of its own"
        );
        let exec = get(&service, "Service", "ExecStart");
        assert_eq!(exec.len(), 1, "{context}: one ExecStart");
        let call = check_call(&words(exec[0]), &context);
        assert_eq!(
            call.args,
            journal_for_log(&cron_call.args),
            "{context}: the crontab's arguments, reading the jobs' journal where cron reads \
             their logs"
        );
        // The unit's output goes to the journal; cron's goes to its log file.
        assert!(cron_log.starts_with("/var/log/tmpa/"), "{context}");
        for key in ["StandardOutput", "StandardError"] {
            assert!(
                get(&service, "Service", key).is_empty(),
                "{context}: {key}= would take the output away from the journal"
            );
        }
        assert_eq!(
            &Priority::of_unit(&service),
            cron_priority,
            "{context}: the crontab's nice/chrt/ionice"
        );
        assert!(
            !service.contains_key("Install"),
            "{context}: only the timer can be enabled"
        );

        let timer = unit(&format!("systemd/{p}.timer"));
        let context = format!("{p}.timer");
        assert_eq!(
            get(&timer, "Timer", "Unit"),
            [format!("{p}.service").as_str()],
            "{context}"
        );
        assert_eq!(
            get(&timer, "Install", "WantedBy"),
            ["timers.target"],
            "{context}"
        );
        let cal = get(&timer, "Timer", "OnCalendar");
        assert_eq!(cal.len(), 1, "{context}: one OnCalendar");
        if let Some(want) = expected_calendar.get(p) {
            assert_eq!(cal[0], *want, "{context}");
        }
        let out = systemd_analyze()
            .args(["calendar", cal[0]])
            .output()
            .expect("systemd-analyze");
        assert!(
            out.status.success(),
            "{context}: systemd-analyze calendar {:?}",
            cal[0]
        );
    }
    let files: BTreeSet<String> = fs::read_dir(cron_dir().join("systemd"))
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files.len(),
        2 * PROGRAMS.len(),
        "one service and one timer each: {files:?}"
    );
}

/// The most `systemd-analyze security` may rate each service (0 is best, 10 worst): the
/// root jobs that delete 2.0; the archive 2.5, which starts as root to read its
/// credentials and keeps CAP_SETUID and CAP_SETGID to become TMPA_USER itself (none left
/// after); the patrol, which runs a service command, 4.0.
const EXPOSURE_MAX: [(&str, f64); 4] = [
    ("tmpa-compact", 2.0),
    ("tmpa-archive", 2.5),
    ("tmpa-tmpclean", 2.0),
    ("tmpa-patrol", 4.0),
];

/// `systemd-analyze security --offline=true --threshold` of the unit at `path`: its overall
/// exposure (0 best, 10 worst), whether it is within `max` (the tool's exit status) and
/// the tool's table.
fn security(path: &Path, max: f64) -> (f64, bool, String) {
    let out = systemd_analyze()
        .args(["security", "--offline=true", "--no-pager"])
        // The threshold is in tenths of the printed exposure.
        .arg(format!("--threshold={}", (max * 10.0).round()))
        .arg(path)
        .output()
        .expect("systemd-analyze security");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = stdout
        .lines()
        .find_map(|l| {
            l.split_once("Overall exposure level for ")?
                .1
                .split_once(": ")
        })
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "{}: no overall exposure in:\n{stdout}\n{}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            )
        });
    (exposure, out.status.success(), stdout.into_owned())
}

/// Each service passes `systemd-analyze security --offline=true --threshold` at its bar,
/// and holds the sandbox the bar was reached with: nothing writable but what
/// tmpa-generator adds (the root, and for the patrol the metrics directory: tested
/// above), exactly the capabilities the program needs, no network but the archive's
/// (IPv4/IPv6 and unix sockets, for an object store).
#[test]
fn systemd_units_pass_the_security_bar() {
    let caps = |extra: &[&str]| -> BTreeSet<String> {
        [
            "CAP_DAC_READ_SEARCH",
            "CAP_DAC_OVERRIDE",
            "CAP_CHOWN",
            "CAP_FOWNER",
        ]
        .iter()
        .chain(extra)
        .map(|s| (*s).to_owned())
        .collect()
    };
    // The measure works: an unhardened unit is rated UNSAFE and fails the 2.0 bar.
    let bare = tempfile::tempdir().expect("tempdir");
    let bare = bare.path().join("bare.service");
    fs::write(&bare, "[Service]\nExecStart=/usr/bin/true\n").expect("write");
    let (exposure, passed, _) = security(&bare, 2.0);
    assert!(exposure > 9.0 && !passed, "bare unit: {exposure} {passed}");
    for (p, max) in EXPOSURE_MAX {
        let rel = format!("systemd/{p}.service");
        let (exposure, passed, table) = security(&cron_dir().join(&rel), max);
        println!("{p}.service: exposure {exposure} (bar {max})");
        assert!(
            passed && exposure <= max,
            "{rel}: exposure {exposure} > {max}:\n{table}"
        );

        let u = unit(&rel);
        let one = |k: &str| get(&u, "Service", k).join(" ");
        assert_eq!(one("ProtectSystem"), "strict", "{rel}");
        assert_eq!(one("NoNewPrivileges"), "yes", "{rel}");
        assert_eq!(
            one("SystemCallFilter").split(' ').next(),
            Some("@system-service"),
            "{rel}"
        );
        assert_eq!(
            one("ReadWritePaths"),
            "",
            "{rel}: the writable paths are tmpa-generator's, from the configuration"
        );
        let want_caps = match p {
            "tmpa-tmpclean" => caps(&["CAP_LEASE"]),
            "tmpa-archive" => caps(&["CAP_SETUID", "CAP_SETGID"]),
            _ => caps(&[]),
        };
        let have_caps: BTreeSet<String> = one("CapabilityBoundingSet")
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        assert_eq!(have_caps, want_caps, "{rel}: CapabilityBoundingSet");
        assert_eq!(one("AmbientCapabilities"), "", "{rel}");
        if p == "tmpa-archive" {
            assert_eq!(one("PrivateNetwork"), "", "{rel}: keeps the network");
            assert_eq!(
                one("RestrictAddressFamilies"),
                "AF_INET AF_INET6 AF_UNIX",
                "{rel}"
            );
        } else {
            assert_eq!(one("PrivateNetwork"), "yes", "{rel}");
        }
    }
}

/// `systemd-analyze verify` accepts every unit (no unknown key, no bad value, the
/// ExecStart binary present) in a root laid out as the package installs it: the units in
/// usr/lib/systemd/system with tmpa-generator's drop-ins from the shipped configuration,
/// the programs in usr/bin. Skipped, with the reason printed, where
/// verify cannot run offline at all (a trivial unit fails too).
#[test]
fn systemd_units_verify() {
    let root = tempfile::tempdir().expect("tempdir");
    let units = root.path().join("usr/lib/systemd/system");
    fs::create_dir_all(&units).expect("mkdir");
    fs::create_dir_all(root.path().join("usr/bin")).expect("mkdir");
    for p in PROGRAMS {
        bin(p);
        fs::copy(target_dir().join(p), root.path().join("usr/bin").join(p)).expect("copy");
    }
    fs::write(
        units.join("canary.service"),
        "[Service]\nType=oneshot\nExecStart=/usr/bin/tmpa-patrol --version\n",
    )
    .expect("write");
    let verify = |names: &[String]| {
        let out = systemd_analyze()
            .args(["verify", "--man=no", "--recursive-errors=no"])
            .arg(format!("--root={}", root.path().display()))
            .args(names.iter().map(|n| units.join(n)))
            .output()
            .expect("systemd-analyze verify");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = verify(&["canary.service".to_owned()]);
    let Some(()) = tmpa_tests::prerequisite(
        ok,
        &format!("systemd-analyze verify cannot run offline here: {err}"),
    ) else {
        return;
    };
    // As installed: the configuration, and tmpa-generator's drop-ins from it.
    let etc = root.path().join("etc/default");
    fs::create_dir_all(&etc).expect("mkdir");
    fs::copy(cron_dir().join("tmpa.default"), etc.join("tmpa")).expect("copy");
    let generated = run_generator(
        &etc.join("tmpa"),
        &root.path().join("run/systemd/generator"),
    );
    assert_eq!(generated.code, 0, "{generated:?}");
    let mut names = Vec::new();
    for e in fs::read_dir(cron_dir().join("systemd")).expect("list") {
        let e = e.expect("entry");
        fs::copy(e.path(), units.join(e.file_name())).expect("copy");
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    let (ok, err) = verify(&names);
    assert!(
        ok && err.trim().is_empty(),
        "systemd-analyze verify {names:?}:\n{err}"
    );

    // OPERATIONS.md's latency target for the service's own unit, as the operator adds it
    // (`systemctl edit supervisor.service`), is a setting systemd knows.
    let ops = fs::read_to_string(cron_dir().join("../docs/OPERATIONS.md")).expect("OPERATIONS.md");
    let at = ops
        .find("IODeviceLatencyTargetSec=/")
        .expect("OPERATIONS.md: the latency target's drop-in");
    let start = ops[..at].rfind("```ini").expect("its ```ini block") + "```ini".len();
    let end = at + ops[at..].find("```").expect("the block's end");
    let drop_in: String = ops[start..end]
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(
        units.join("supervisor.service"),
        "[Service]\nExecStart=/usr/bin/tmpa-patrol --version\n",
    )
    .expect("write");
    let d = units.join("supervisor.service.d");
    fs::create_dir_all(&d).expect("mkdir");
    fs::write(d.join("override.conf"), &drop_in).expect("write");
    let (ok, err) = verify(&["supervisor.service".to_owned()]);
    assert!(
        ok && err.trim().is_empty(),
        "OPERATIONS.md's drop-in {drop_in:?}:\n{err}"
    );
}

/// Every log the crontab writes is rotated by the logrotate snippet (the units log to the
/// journal), and each stanza is well formed.
#[test]
fn logrotate_covers_every_log() {
    let Crontab { entries, .. } = crontab();
    let text = read("logrotate/tmpa");
    let mut covered = BTreeSet::new();
    let mut depth = 0;
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        if let Some(head) = line.strip_suffix('{') {
            assert_eq!(depth, 0, "nested stanza: {line}");
            depth = 1;
            covered.extend(head.split_whitespace().map(str::to_owned));
        } else if line == "}" {
            assert_eq!(depth, 1, "unbalanced }}");
            depth = 0;
        } else {
            assert_eq!(depth, 1, "directive outside a stanza: {line}");
            let directive = line.split_whitespace().next().expect("word");
            assert!(
                [
                    "daily",
                    "weekly",
                    "monthly",
                    "rotate",
                    "compress",
                    "delaycompress",
                    "missingok",
                    "notifempty",
                    "create",
                    "su",
                    "maxage",
                    "dateext",
                ]
                .contains(&directive),
                "unexpected directive {directive}"
            );
        }
    }
    assert_eq!(depth, 0);
    for Entry { call, log, .. } in &entries {
        assert!(
            covered.contains(log),
            "{log} ({}) is not rotated",
            call.program
        );
    }
}

/// The system calls of each seccomp group `systemd-analyze syscall-filter` knows, groups
/// expanded.
fn syscall_groups() -> BTreeMap<String, BTreeSet<String>> {
    let out = systemd_analyze()
        .args(["syscall-filter", "--no-pager"])
        .output()
        .expect("systemd-analyze syscall-filter");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut raw: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut group = String::new();
    for line in text.lines() {
        let item = line.trim();
        if item.is_empty() || item.starts_with('#') {
            continue;
        }
        if line.starts_with('@') {
            group = item.to_owned();
        } else if !group.is_empty() {
            raw.entry(group.clone()).or_default().push(item.to_owned());
        }
    }
    fn expand(raw: &BTreeMap<String, Vec<String>>, g: &str, out: &mut BTreeSet<String>) {
        for item in raw.get(g).unwrap_or_else(|| panic!("unknown group {g}")) {
            if item.starts_with('@') {
                expand(raw, item, out);
            } else {
                out.insert(item.clone());
            }
        }
    }
    raw.keys()
        .map(|g| {
            let mut set = BTreeSet::new();
            expand(&raw, g, &mut set);
            (g.clone(), set)
        })
        .collect()
}

/// The system calls a unit's `SystemCallFilter=` lines allow: the allow list, less every
/// `~` deny list after it.
fn allowed_syscalls(u: &Unit, groups: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<String> {
    let names = |list: &str| -> BTreeSet<String> {
        list.split_whitespace()
            .flat_map(|n| match groups.get(n) {
                Some(set) => set.clone(),
                None => BTreeSet::from([n.to_owned()]),
            })
            .collect()
    };
    let mut allowed = groups["@default"].clone();
    for line in get(u, "Service", "SystemCallFilter") {
        match line.strip_prefix('~') {
            Some(deny) => allowed.retain(|s| !names(deny).contains(s)),
            None => allowed.extend(names(line)),
        }
    }
    allowed
}

/// A patrol's arguments with each job's log file (`--log TASK=/var/log/tmpa/X.log`, as
/// the crontab reads it) replaced by the job's unit's journal (`--journal
/// TASK=tmpa-X.service`, as the units read it); other arguments unchanged.
fn journal_for_log(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--log" {
            let v = it.next().expect("--log TASK=PATH");
            let (task, path) = v.split_once('=').expect("TASK=PATH");
            let name = path
                .strip_prefix("/var/log/tmpa/")
                .and_then(|f| f.strip_suffix(".log"))
                .unwrap_or_else(|| panic!("--log {v}: not a job log under /var/log/tmpa"));
            out.push("--journal".to_owned());
            out.push(format!("{task}=tmpa-{name}.service"));
        } else {
            out.push(a.clone());
        }
    }
    out
}

/// The system calls `argv` makes, its children's included, traced by strace.
fn traced_syscalls(argv: &[String], root: &Path, scratch: &Path) -> BTreeSet<String> {
    let trace = scratch.join("trace");
    let status = Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(&trace)
        .args(argv)
        .env("TMPA_ROOT", root)
        .output()
        .expect("strace is missing: apt-get install strace (tests/check.sh installs it)");
    assert!(
        matches!(status.status.code(), Some(0..=2)),
        "{argv:?}: {status:?}"
    );
    fs::read_to_string(&trace)
        .expect("trace")
        .lines()
        .filter_map(|l| {
            // "1234 openat(AT_FDCWD, ...) = 3"; resumptions and signals are not calls.
            let call = l.split_once(' ')?.1.trim_start();
            let name = &call[..call.find('(')?];
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                .then(|| name.to_owned())
        })
        .collect()
}

/// Every system call the programs make doing their real work (each maintenance program
/// deleting on a tree owned by another user, as root: the chown and write paths; the
/// patrol with its service command and metrics file) is one the unit's
/// `SystemCallFilter=` allows: a call outside it would fail with EPERM under systemd.
#[test]
fn units_allow_every_syscall_the_programs_make() {
    let groups = syscall_groups();
    let scratch = tempfile::tempdir().expect("tempdir");
    let t = Tree::new();
    for i in 0..5 {
        t.event("2026-01-05", &format!("e{i}"), "u1", 3, 4);
    }
    let session = t.file("chat_history/u1/sessions/s1.json", br#"{"m":[]}"#);
    tmpa_tests::age(&session, std::time::Duration::from_secs(60 * 86_400));
    let fin = t.event("2026-01-06", "f1", "u1", 1, 1);
    t.file(
        "token_stats/2026-01-06/evt_f1.json.tmp.42",
        fs::read(&fin).expect("final"),
    );
    if tmpa_tests::is_root() {
        // The backend's files belong to another user: the root jobs chown what they make.
        tmpa_tests::chown_tree(t.root(), 65_534, 65_534);
    }
    for p in PROGRAMS {
        let service = unit(&format!("systemd/{p}.service"));
        // Real runs, as the configuration says once the rollout is done.
        let mut env = config();
        for mode in env.iter_mut().filter(|(k, _)| k.ends_with("_MODE")) {
            mode.1.clear();
        }
        let exec = expand_exec(&words(get(&service, "Service", "ExecStart")[0]), &env);
        let mut argv = vec![bin(p).get_program().to_string_lossy().into_owned()];
        if p == "tmpa-patrol" {
            // A service command, as an operator sets TMPA_SERVICE_CMD: its sh runs too.
            argv.extend(["--service-cmd".to_owned(), "echo RUNNING".to_owned()]);
        }
        if p == "tmpa-archive" && tmpa_tests::is_root() {
            // Its unit starts it as root; it becomes the tree's owner itself (TMPA_USER):
            // the calls of the switch (setgroups, setresgid, setresuid, prctl) too.
            argv.extend(["--user".to_owned(), "nobody".to_owned()]);
        }
        for a in &exec[1..] {
            argv.push(if a.ends_with("/tmpa.prom") {
                scratch.path().join("tmpa.prom").display().to_string()
            } else {
                a.clone()
            });
        }
        if argv.iter().any(|a| a == "--journal") {
            // The jobs' journal, read by the journalctl the patrol runs: a real one, with
            // a failing run in it, in place of the system's.
            let dir = scratch.path().join("journal");
            let entries = [
                "t tmpa-compact COMPACT root=/x",
                "verification failed: /x/token_stats/d/evt_a.json",
                "deleted /x/token_stats/d/evt_a.json",
            ]
            .map(|m| {
                (
                    "tmpa-compact.service",
                    std::time::Duration::from_secs(60),
                    m.to_owned(),
                )
            });
            if tmpa_tests::journal(&dir, &entries).is_none() {
                return;
            }
            argv.extend(["--journal-directory".to_owned(), dir.display().to_string()]);
        }
        if p == "tmpa-tmpclean" || p == "tmpa-archive" {
            // Old enough for this tree: what a real night deletes.
            let at = argv
                .iter()
                .position(|a| a == "--older-than")
                .expect("--older-than");
            argv[at + 1] = "0s".into();
        }
        let calls = traced_syscalls(&argv, t.root(), scratch.path());
        assert!(
            calls.contains("openat") && calls.len() > 20,
            "{p}: {calls:?}"
        );
        let allowed = allowed_syscalls(&service, &groups);
        let denied: Vec<&String> = calls.difference(&allowed).collect();
        assert!(
            denied.is_empty(),
            "{p} makes system calls its unit's SystemCallFilter= refuses: {denied:?}"
        );
    }
    assert!(!session.exists(), "the archive run did its work");
}

/// The pid of the running program `name` whose environment holds `needle` (read as root).
fn pid_of(name: &str, needle: &str) -> Option<u32> {
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = fs::read_to_string(e.path().join("comm")).ok()?;
        let env = fs::read(e.path().join("environ")).ok()?;
        let has = env.windows(needle.len()).any(|w| w == needle.as_bytes());
        (comm.trim() == name && has).then_some(pid)
    })
}

/// The object store's keys never reach the backend's user: tmpa-archive's cron line,
/// started as root with `TMPA_USER` the tree's owner, reads them from a root-only file
/// (not from any environment), signs its first request with them, and meanwhile runs as
/// the owner (uid, gid) with a memory and an environment that user cannot read
/// (`/proc/PID/environ` is root's), while the key file itself is unreadable to it. Killed
/// there, the run leaves a record that says it did not finish.
#[test]
fn the_archive_keeps_the_store_keys_from_the_backends_user() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::PermissionsExt;
    let Some(()) = tmpa_tests::prerequisite(
        tmpa_tests::is_root(),
        "needs root to start the job as cron does",
    ) else {
        return;
    };
    const KEY_ID: &str = "AKIATMPATESTKEY";
    const SECRET: &str = "tmpa-secret-never-in-an-environment";
    // A stand-in for the store: it takes the first request, tells the test what it was,
    // and holds it unanswered until the test is done looking at the job.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let server = std::thread::spawn(move || {
        let (conn, _) = listener.accept().expect("accept");
        let mut head = String::new();
        let mut r = BufReader::new(conn.try_clone().expect("clone"));
        while r.read_line(&mut head).is_ok_and(|n| n > 2) && !head.ends_with("\r\n\r\n") {}
        let _ = tx.send(head);
        std::thread::sleep(std::time::Duration::from_secs(30));
        drop(conn);
    });

    let scratch = tempfile::tempdir().expect("tempdir");
    let keys = scratch.path().join("archive.env");
    fs::write(
        &keys,
        format!(
            "AWS_ACCESS_KEY_ID={KEY_ID}\nAWS_SECRET_ACCESS_KEY=\"{SECRET}\"\nAWS_REGION=us-east-1\n\
             AWS_ENDPOINT_URL=http://127.0.0.1:{port}\nAWS_ALLOW_HTTP=true\n"
        ),
    )
    .expect("keys");
    fs::set_permissions(&keys, fs::Permissions::from_mode(0o600)).expect("chmod");
    let t = Tree::new();
    let session = t.file("chat_history/u1/sessions/s1.json", br#"{"m":[]}"#);
    tmpa_tests::age(&session, std::time::Duration::from_secs(60 * 86_400));
    t.file("tmpa.toml", "[archive]\nurl = \"s3://bucket/tmpa\"\n");
    tmpa_tests::chown_tree(t.root(), 65_534, 65_534);
    let conf = scratch.path().join("tmpa");
    let root = t.root().display().to_string();
    write_config(
        &conf,
        &[
            ("TMPA_ROOT", &root),
            ("TMPA_USER", "nobody"),
            ("TMPA_ARCHIVE_MODE", ""),
            ("TMPA_ARCHIVE_CREDENTIALS", &keys.display().to_string()),
        ],
    );
    let Crontab { entries, .. } = crontab();
    let line = entries
        .iter()
        .find(|e| e.call.program == "tmpa-archive")
        .expect("archive line");
    let bins = ReachableBins::copy(&PROGRAMS);
    let mut job = cron_job_command(line, &conf, scratch.path(), &bins)
        .spawn()
        .expect("sh");
    let head = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the archive's first request");
    let pid = pid_of("tmpa-archive", &root).expect("the archive's process");
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let ids = |key: &str| -> Vec<String> {
        let line = status.lines().find(|l| l.starts_with(key)).expect(key);
        line.split_whitespace().skip(1).map(str::to_owned).collect()
    };
    let environ = fs::read(format!("/proc/{pid}/environ")).expect("environ, as root");
    let as_owner = |what: &str| -> bool {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "cat",
                what,
            ])
            .output()
            .expect("setpriv")
            .status
            .success()
    };
    let environ_readable = as_owner(&format!("/proc/{pid}/environ"));
    let keys_readable = as_owner(&keys.display().to_string());
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    let _ = job.wait();
    drop(server);

    assert!(
        head.contains(&format!("Credential={KEY_ID}/")),
        "the request was signed with the file's key: {head}"
    );
    assert_eq!(
        ids("Uid:"),
        ["65534"; 4],
        "the job runs as the tree's owner"
    );
    assert_eq!(ids("Gid:"), ["65534"; 4], "and its group");
    let env = String::from_utf8_lossy(&environ);
    assert!(
        !env.contains(SECRET) && !env.contains(KEY_ID),
        "the keys are in no environment: {env}"
    );
    assert!(
        !environ_readable,
        "the owner cannot read the job's environment"
    );
    assert!(!keys_readable, "nor the key file");
    let record = run_record(t.root(), "archive_history");
    assert_eq!(
        record["finished"], false,
        "killed: did not finish: {record}"
    );
    assert!(session.exists(), "nothing was archived or deleted");
}
