//! The patrol's text shapes: the Nagios-style first line with perfdata, the human
//! table, and the log's last line (`--json` is the report serialised; `prom.rs` the
//! Prometheus textfile).

use std::fmt::Write as _;

use tmpa_core::maintenance::line_text;
use tmpa_maint::now_rfc3339;

use crate::{Check, PROGRAM, Perf, Report, Status};

/// `s` on one line, at most `chars_max` characters.
pub(crate) fn one_line(s: &str, chars_max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= chars_max {
        flat
    } else {
        let mut t: String = flat.chars().take(chars_max.saturating_sub(3)).collect();
        t.push_str("...");
        t
    }
}

/// The Nagios status line: `TMPA {STATUS} - {summary} | {perfdata}`. The summary names
/// each check that is not ok (worst first) with its detail; `|` never appears before the
/// perfdata.
pub fn nagios_line(report: &Report) -> String {
    let mut bad: Vec<&Check> = report
        .checks
        .iter()
        .filter(|c| !c.skipped && c.status != Status::Ok)
        .collect();
    bad.sort_by_key(|c| std::cmp::Reverse(c.status.severity()));
    let summary = if bad.is_empty() {
        let ran = report.checks.iter().filter(|c| !c.skipped).count();
        format!("{ran} checks ok")
    } else {
        bad.iter()
            .map(|c| format!("{}: {}", c.name, one_line(&c.detail, 120)))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let summary = summary.replace('|', "/");
    let perf: Vec<String> = report
        .checks
        .iter()
        .flat_map(|c| c.perf.iter())
        .map(perf_item)
        .collect();
    format!(
        "TMPA {} - {summary} | {}",
        report.status.word(),
        perf.join(" ")
    )
}

pub(crate) fn perf_item(p: &Perf) -> String {
    let num = |v: Option<f64>| v.map(fmt_num).unwrap_or_default();
    let value = p.value.map_or_else(|| "U".to_owned(), fmt_num);
    let uom = if p.value.is_some() { p.uom } else { "" };
    format!("{}={value}{uom};{};{};0", p.label, num(p.warn), num(p.crit))
}

/// A number as text: integers without a fraction, others with up to 3 decimals.
pub fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        format!("{}", x as i64)
    } else {
        let s = format!("{x:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// The human table: one row per check, then its findings and log lines indented.
pub fn render_table(report: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{:<30} {:<8} {:>10}  DETAIL", "CHECK", "STATUS", "VALUE");
    for c in &report.checks {
        let status = if c.skipped {
            "skipped".to_owned()
        } else {
            format!("{:?}", c.status).to_lowercase()
        };
        let value = c.value.map_or_else(|| "-".to_owned(), fmt_num);
        let _ = writeln!(
            s,
            "{:<30} {status:<8} {value:>10}  {}",
            c.name,
            line_text(&c.detail)
        );
        for f in &c.findings {
            let _ = writeln!(s, "    {}", line_text(f));
        }
        if !c.log_tail.is_empty() {
            let _ = writeln!(s, "    last {} log lines:", c.log_tail.len());
            for l in &c.log_tail {
                let _ = writeln!(s, "    | {}", line_text(l));
            }
        }
    }
    s
}

/// The log's last line: time, counts per status, exit code.
pub fn footer_line(report: &Report) -> String {
    let count = |st: Status| {
        report
            .checks
            .iter()
            .filter(|c| !c.skipped && c.status == st)
            .count()
    };
    let skipped = report.checks.iter().filter(|c| c.skipped).count();
    format!(
        "{} {PROGRAM} finished: ok={} warning={} critical={} unknown={} skipped={skipped} exit={} ({})",
        now_rfc3339(),
        count(Status::Ok),
        count(Status::Warning),
        count(Status::Critical),
        count(Status::Unknown),
        report.status.code(),
        format!("{:?}", report.status).to_lowercase(),
    )
}
