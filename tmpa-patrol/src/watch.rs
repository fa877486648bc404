//! `--watch INTERVAL [--for DURATION]`: the observation mode after a deployment. The
//! patrol runs every interval; each prints one line with how the counts changed and which
//! checks changed status; at the end a verdict, and the exit status of the worst check
//! seen. The growth is measured against the previous interval (the first line against the
//! last saved patrol); the history file is left to the scheduled patrols.
//!
//! With `--since-deploy` the verdict is a deploy gate's: the first patrol is the
//! baseline, and only a check that got worse than it was then counts (its worst status
//! is the exit status); what was already wrong before (a warning, the job checks'
//! critical through the dry-run weeks) is listed, not counted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tmpa_core::Root;
use tmpa_maint::now_rfc3339;

use crate::history::{self, HISTORY_RUNS_MAX, Item, Sample, Tracked};
use crate::{Args, PROGRAM, Report, Status, jobs::fmt_age, out, prom};

/// How often a sleeping watch looks at the clock and the stop flag.
const TICK: Duration = Duration::from_millis(100);

/// Runs the watch; returns the worst status seen (the exit code).
pub(crate) fn watch(root: &Root, args: &Args, interval: Duration) -> Status {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Without the handler the signal ends the watch without a verdict: still safe.
        let _ = signal_hook::flag::register(sig, Arc::clone(&stop));
    }
    let started = Instant::now();
    let deadline = args.watch_for.map(|d| started + d);
    let mut past = history::History::load(root).samples;
    log(args.json, &tmpa_maint::header_line(PROGRAM, "WATCH", root));
    let mut worst = Status::Ok;
    let mut worst_checks: BTreeMap<&'static str, Status> = BTreeMap::new();
    let mut before: Option<BTreeMap<&'static str, Status>> = None;
    let mut baseline: Option<BTreeMap<&'static str, Status>> = None;
    let mut worsened: BTreeMap<&'static str, Status> = BTreeMap::new();
    let mut first: Option<Sample> = None;
    let mut patrols: u32 = 0;
    loop {
        let report = crate::patrol_against(root, args, &past);
        patrols += 1;
        if let Some(Err(e)) = args
            .prometheus
            .as_ref()
            .map(|p| prom::write(p, &prom::render(&report)))
        {
            eprintln!(
                "{PROGRAM}: error: cannot write the Prometheus file: {}",
                e.chain()
            );
        }
        let statuses: BTreeMap<&'static str, Status> = report
            .checks
            .iter()
            .filter(|c| !c.skipped)
            .map(|c| (c.name, c.status))
            .collect();
        print_interval(args.json, &report, before.as_ref(), &statuses);
        worst = worst.worst(report.status);
        for (name, st) in &statuses {
            let w = worst_checks.entry(name).or_insert(Status::Ok);
            *w = w.worst(*st);
        }
        let base = baseline.get_or_insert_with(|| statuses.clone());
        for (name, st) in &statuses {
            let was = base.get(name).copied().unwrap_or(Status::Ok);
            if st.severity() > was.severity() {
                let w = worsened.entry(name).or_insert(*st);
                *w = w.worst(*st);
            }
        }
        before = Some(statuses);
        first.get_or_insert_with(|| report.sample.clone());
        past.push(report.sample);
        let extra = past.len().saturating_sub(HISTORY_RUNS_MAX);
        past.drain(..extra);
        let next = started + interval * patrols;
        if deadline.is_some_and(|d| next > d) || !sleep_until(next, &stop) {
            break;
        }
    }
    let last = past.last().cloned();
    let gate = args.since_deploy.then(|| Gate {
        worst: worsened.values().fold(Status::Ok, |s, w| s.worst(*w)),
        worsened: &worsened,
        before: baseline.as_ref(),
    });
    print_verdict(
        args,
        worst,
        &worst_checks,
        patrols,
        started.elapsed(),
        first.zip(last),
        gate.as_ref(),
    );
    gate.map_or(worst, |g| g.worst)
}

/// `--since-deploy`: what got worse than at the first patrol.
struct Gate<'a> {
    /// The worst status among the checks that got worse (Ok when none did): the exit
    /// status.
    worst: Status,
    /// Each check that got worse, at its worst.
    worsened: &'a BTreeMap<&'static str, Status>,
    /// The statuses at the first patrol.
    before: Option<&'a BTreeMap<&'static str, Status>>,
}

impl Gate<'_> {
    /// The checks not ok at the first patrol that did not get worse: `name=status`.
    fn as_before(&self) -> Vec<String> {
        self.before
            .map(|b| {
                b.iter()
                    .filter(|(n, st)| **st != Status::Ok && !self.worsened.contains_key(*n))
                    .map(|(n, st)| format!("{n}={}", word(*st)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The checks that got worse: `name was->worst`.
    fn changes(&self) -> Vec<String> {
        self.worsened
            .iter()
            .map(|(n, st)| {
                let was = self
                    .before
                    .and_then(|b| b.get(n).copied())
                    .unwrap_or(Status::Ok);
                format!("{n} {}->{}", word(was), word(*st))
            })
            .collect()
    }
}

/// Sleeps until `t`; false when a stop was asked for meanwhile.
fn sleep_until(t: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= t {
            return true;
        }
        std::thread::sleep(TICK.min(t - now));
    }
}

/// The counts a line shows: temporaries, corrupt files and the largest directory.
fn headline(items: &[Item]) -> Vec<&Item> {
    let dir = items.iter().find(|i| i.what == Tracked::Directory);
    items
        .iter()
        .filter(|i| i.what != Tracked::Directory)
        .chain(dir)
        .collect()
}

/// Checks whose status differs from the previous interval: `tmp_files ok->warning`.
fn changes(
    before: Option<&BTreeMap<&'static str, Status>>,
    now: &BTreeMap<&'static str, Status>,
) -> Vec<String> {
    let Some(before) = before else {
        return Vec::new();
    };
    now.iter()
        .filter_map(|(name, st)| {
            let was = before.get(name).copied().unwrap_or(Status::Unknown);
            (was != *st).then(|| format!("{name} {}->{}", word(was), word(*st)))
        })
        .collect()
}

fn word(s: Status) -> String {
    format!("{s:?}").to_lowercase()
}

fn not_ok(now: &BTreeMap<&'static str, Status>) -> Vec<String> {
    now.iter()
        .filter(|(_, st)| **st != Status::Ok)
        .map(|(n, st)| format!("{n}={}", word(*st)))
        .collect()
}

fn print_interval(
    json: bool,
    report: &Report,
    before: Option<&BTreeMap<&'static str, Status>>,
    now: &BTreeMap<&'static str, Status>,
) {
    let items = headline(&report.growth.items);
    let changed = changes(before, now);
    // Which checks are not ok: on the first line; later lines say what changed.
    let bad = if before.is_none() {
        not_ok(now)
    } else {
        Vec::new()
    };
    if json {
        let doc = json!({
            "at": report.checked_at,
            "status": report.status,
            "growth": items,
            "changed": changed,
            "not_ok": bad,
        });
        out(&format!("{doc}\n"));
        return;
    }
    let counts: Vec<String> = items.iter().map(|i| history::words(i)).collect();
    let mut line = format!(
        "{} {} {}",
        report.checked_at,
        report.status.word(),
        counts.join(", ")
    );
    if !changed.is_empty() {
        line.push_str(&format!("; changed: {}", changed.join(", ")));
    }
    if !bad.is_empty() {
        line.push_str(&format!("; not ok: {}", bad.join(", ")));
    }
    out(&format!("{line}\n"));
}

fn print_verdict(
    args: &Args,
    worst: Status,
    worst_checks: &BTreeMap<&'static str, Status>,
    patrols: u32,
    took: Duration,
    span: Option<(Sample, Sample)>,
    gate: Option<&Gate<'_>>,
) {
    let thresholds = crate::growth_thresholds(args);
    let overall: Vec<Item> = span
        .map(|(a, b)| history::growth(&[a], &b, thresholds).items)
        .unwrap_or_default();
    let items = headline(&overall);
    let bad = not_ok(worst_checks);
    if args.json {
        let mut doc = json!({
            "verdict": gate.map_or(worst, |g| g.worst),
            "patrols": patrols,
            "secs": took.as_secs_f64(),
            "growth": items,
            "worst_not_ok": bad,
            "exit_code": gate.map_or(worst, |g| g.worst).code(),
        });
        if let (Some(g), Some(map)) = (gate, doc.as_object_mut()) {
            map.insert(
                "since_deploy".into(),
                json!({
                    "worst_seen": worst,
                    "worse": g.changes(),
                    "as_before": g.as_before(),
                }),
            );
        }
        out(&format!("{doc}\n"));
        return;
    }
    let counts: Vec<String> = items.iter().map(|i| history::words(i)).collect();
    if let Some(g) = gate {
        let worse = g.changes();
        let before = g.as_before();
        out(&format!(
            "{} {PROGRAM} watch verdict since the deploy: {} after {patrols} patrols in {}: {}{}{} exit={}\n",
            now_rfc3339(),
            g.worst.word(),
            fmt_age(took.as_secs_f64()),
            counts.join(", "),
            if worse.is_empty() {
                "; no check got worse;".to_owned()
            } else {
                format!("; worse: {};", worse.join(", "))
            },
            if before.is_empty() {
                String::new()
            } else {
                format!(
                    " as before the deploy (not counted): {};",
                    before.join(", ")
                )
            },
            g.worst.code()
        ));
        return;
    }
    out(&format!(
        "{} {PROGRAM} watch verdict: {} after {patrols} patrols in {}: {}{} exit={}\n",
        now_rfc3339(),
        worst.word(),
        fmt_age(took.as_secs_f64()),
        counts.join(", "),
        if bad.is_empty() {
            "; every check stayed ok;".to_owned()
        } else {
            format!("; worst: {};", bad.join(", "))
        },
        worst.code()
    ));
}

/// A log line: stdout, or stderr with `--json`.
fn log(json: bool, line: &str) {
    if json {
        eprintln!("{line}");
    } else {
        out(&format!("{line}\n"));
    }
}
