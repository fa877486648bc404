//! cron/: the crontab, the systemd units and the logrotate snippet call the binaries this
//! workspace builds, with flags their `--help` lists, on the card's schedule.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use tmpa_tests::{Run, Tree, bin};

/// The binaries this workspace builds.
const PROGRAMS: [&str; 4] = [
    "tmpa-compact",
    "tmpa-archive",
    "tmpa-tmpclean",
    "tmpa-patrol",
];
const BIN_DIR: &str = "/usr/local/bin/";

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
#[derive(Debug, Clone)]
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

/// One crontab entry.
#[derive(Debug)]
struct Entry {
    /// The five time fields.
    fields: [String; 5],
    /// What it runs.
    call: Call,
    /// The log it appends to.
    log: String,
}

/// The crontab's entries and its environment lines.
fn crontab() -> (Vec<Entry>, BTreeMap<String, String>) {
    let text = read("tmpa.crontab");
    let mut entries = Vec::new();
    let mut env = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let context = format!("tmpa.crontab:{}", i + 1);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let first = line.split_whitespace().next().expect("a word");
        if let Some((name, value)) = first.split_once('=').filter(|(n, _)| {
            n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !n.is_empty()
        }) {
            assert_eq!(line, first, "{context}: an environment line is NAME=value");
            env.insert(name.to_owned(), value.to_owned());
            continue;
        }
        assert!(
            !line.starts_with('@'),
            "{context}: use five fields, not @shortcuts"
        );
        let mut rest = line;
        let mut fields: Vec<String> = Vec::new();
        for _ in 0..5 {
            rest = rest.trim_start();
            let end = rest
                .find(char::is_whitespace)
                .unwrap_or_else(|| panic!("{context}: fewer than five fields"));
            fields.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
        let limits: [(u32, u32, &[&str]); 5] = [
            (0, 59, &[]),
            (0, 23, &[]),
            (1, 31, &[]),
            (
                1,
                12,
                &[
                    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
                    "dec",
                ],
            ),
            (0, 7, &["sun", "mon", "tue", "wed", "thu", "fri", "sat"]),
        ];
        for (f, (lo, hi, names)) in fields.iter().zip(limits) {
            assert!(
                field_ok(f, lo, hi, names),
                "{context}: bad field {f:?} (range {lo}-{hi})"
            );
        }
        // cron turns an unescaped % into a newline.
        assert!(!rest.contains('%'), "{context}: % in a command");
        let argv = words(rest);
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
        let call = check_call(&argv[..n - 3], &context);
        let fields: [String; 5] = fields.try_into().expect("five");
        entries.push(Entry { fields, call, log });
    }
    (entries, env)
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
}

/// Every non-comment crontab line is an environment line or a valid five-field entry that
/// calls one of this workspace's binaries (installed path) with flags its --help lists,
/// appending to its own log; the schedule is the card's.
#[test]
fn crontab_lines_are_valid_and_call_our_binaries() {
    let (entries, env) = crontab();
    assert_eq!(env.get("TMPA_ROOT").map(String::as_str), Some("/opt/app"));
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
    assert!(
        args("tmpa-patrol")
            .contains("--prometheus /var/lib/node_exporter/textfile_collector/tmpa.prom")
    );
    let logs: BTreeSet<&str> = entries.iter().map(|e| e.log.as_str()).collect();
    assert_eq!(logs.len(), entries.len(), "each job its own log");
}

/// The crontab's arguments are accepted by the real programs: each maintenance line runs
/// as a dry run on an empty tree and exits 0; the patrol line (paths moved into a temporary
/// directory) is not a usage error.
#[test]
fn crontab_arguments_parse_in_the_real_programs() {
    let (entries, _) = crontab();
    let out = tempfile::tempdir().expect("tempdir");
    for Entry { call, .. } in entries {
        let t = Tree::new();
        let mut args: Vec<String> = call.args.clone();
        if call.program == "tmpa-patrol" {
            for a in &mut args {
                if a.starts_with("/var/") {
                    *a = out.path().join("tmpa.prom").display().to_string();
                } else if let Some((task, _)) = a.split_once("=/var/log/") {
                    *a = format!("{task}={}", out.path().join("job.log").display());
                }
            }
        } else {
            args.push("--dry-run".into());
        }
        let r: Run = bin(&call.program)
            .env("TMPA_ROOT", t.root())
            .args(&args)
            .output()
            .expect("run")
            .into();
        if call.program == "tmpa-patrol" {
            // supervisorctl is absent here: critical (2), but never a usage error (3).
            assert!(matches!(r.code, 0..=2), "{} {args:?}: {r:?}", call.program);
            assert!(out.path().join("tmpa.prom").exists());
        } else {
            assert_eq!(r.code, 0, "{} {args:?}: {r:?}", call.program);
        }
    }
}

/// `key=value` lines of a unit file, by section.
fn unit(rel: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut section = String::new();
    for line in read(rel).lines() {
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
            .unwrap_or_else(|| panic!("{rel}: {line}"));
        out.entry(section.clone())
            .or_default()
            .push((k.trim().to_owned(), v.trim().to_owned()));
    }
    out
}

fn get<'a>(
    u: &'a BTreeMap<String, Vec<(String, String)>>,
    section: &str,
    key: &str,
) -> Vec<&'a str> {
    u.get(section)
        .map(|kv| {
            kv.iter()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
                .collect()
        })
        .unwrap_or_default()
}

/// Each program has a oneshot service whose ExecStart calls it with listed flags, on the
/// production root, appending to its log; and a timer on the crontab's schedule
/// (validated by systemd-analyze where it exists).
#[test]
fn systemd_units_mirror_the_crontab() {
    let (entries, _) = crontab();
    let analyze = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok();
    let expected_calendar = BTreeMap::from([
        ("tmpa-compact", "*-*-* 02:30:00"),
        ("tmpa-archive", "Sun *-*-* 03:30:00"),
        ("tmpa-patrol", "*:0/5"),
    ]);
    for Entry {
        call: cron_call,
        log: cron_log,
        ..
    } in &entries
    {
        let p = cron_call.program.as_str();
        let service = unit(&format!("systemd/{p}.service"));
        let context = format!("{p}.service");
        assert_eq!(get(&service, "Service", "Type"), ["oneshot"], "{context}");
        assert_eq!(
            get(&service, "Service", "Environment"),
            ["TMPA_ROOT=/opt/app"],
            "{context}"
        );
        let exec = get(&service, "Service", "ExecStart");
        assert_eq!(exec.len(), 1, "{context}: one ExecStart");
        let call = check_call(&words(exec[0]), &context);
        assert_eq!(
            call.args, cron_call.args,
            "{context}: same arguments as the crontab"
        );
        assert_eq!(
            get(&service, "Service", "StandardOutput"),
            [format!("append:{cron_log}").as_str()],
            "{context}"
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
        if analyze {
            let out = Command::new("systemd-analyze")
                .args(["calendar", cal[0]])
                .output()
                .expect("systemd-analyze");
            assert!(
                out.status.success(),
                "{context}: systemd-analyze calendar {:?}",
                cal[0]
            );
        }
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

/// Every log the crontab and the units write is rotated by the logrotate snippet, and
/// each stanza is well formed.
#[test]
fn logrotate_covers_every_log() {
    let (entries, _) = crontab();
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
