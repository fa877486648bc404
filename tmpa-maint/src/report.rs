//! A program's report, written once for every program: [`Report`] is the head every
//! report has (`program`, `root`, `dry_run`, `counts`, `exit_code`) around the program's
//! own body ([`ReportBody`]), and [`conclude`] ends a run the same way for every program:
//! its final status, its run record, the report as text or as one JSON document, then the
//! log's last lines.

use std::ops::{Deref, DerefMut};
use std::path::PathBuf;

use serde::Serialize;
use tmpa_core::maintenance::{line_text, serialize_path};

use crate::args::Mode;
use crate::exit::ExitStatus;
use crate::output::{footer_line, log_line, out};
use crate::plan::Refusal;
use crate::receipt::Recovered;
use crate::run::Run;

/// What a program's report holds of its own, beside the head every report has.
pub trait ReportBody: Serialize + std::fmt::Debug + Sized {
    /// The program's totals (`deleted=3 kept=1 ...`): the run record's `counts` and the
    /// log's last line.
    type Counts: Serialize + std::fmt::Debug;
    /// The text report, one line per item, sorted; without the first and last log lines.
    fn render_text(report: &Report<Self>) -> String;
}

/// Every program's report: what `--json` prints (the body's fields beside the head's, in
/// one object), what the text output shows ([`ReportBody::render_text`]), and the counts
/// that go into the run record and the log's last line. The body's fields read through it
/// (`report.days`).
#[derive(Debug, Serialize)]
pub struct Report<B: ReportBody> {
    /// The program.
    pub program: &'static str,
    /// The canonical root.
    #[serde(serialize_with = "serialize_path")]
    pub root: PathBuf,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// What the program reports of its own.
    #[serde(flatten)]
    pub body: B,
    /// Totals.
    pub counts: B::Counts,
    /// The exit code.
    pub exit_code: u8,
}

impl<B: ReportBody> Report<B> {
    /// The report of `run` (program, root, mode), with `body` and `counts`; the exit code
    /// is set when the run ends ([`conclude`]).
    pub fn new(run: &Run, body: B, counts: B::Counts) -> Report<B> {
        Report {
            program: run.program(),
            root: run.root().path().to_path_buf(),
            dry_run: run.dry_run(),
            body,
            counts,
            exit_code: 0,
        }
    }

    /// The text report ([`ReportBody::render_text`]).
    pub fn render_text(&self) -> String {
        B::render_text(self)
    }
}

impl<B: ReportBody> Deref for Report<B> {
    type Target = B;
    fn deref(&self) -> &B {
        &self.body
    }
}

impl<B: ReportBody> DerefMut for Report<B> {
    fn deref_mut(&mut self) -> &mut B {
        &mut self.body
    }
}

/// How many files a run deleted, or (a dry run) would delete: one of the two keys, in a
/// program's counts (`#[serde(flatten)]`) and so in its run record and last log line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DeleteCount {
    /// Deleted (real runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted: Option<u64>,
    /// A real run would delete (dry runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_delete: Option<u64>,
}

impl DeleteCount {
    /// `n` deletions, under the key the mode calls for.
    pub fn of(mode: Mode, n: u64) -> DeleteCount {
        if mode.is_plan() {
            DeleteCount {
                deleted: None,
                would_delete: Some(n),
            }
        } else {
            DeleteCount {
                deleted: Some(n),
                would_delete: None,
            }
        }
    }
}

/// Ends a run the same way for every program: writes the run record (a failure to write
/// it makes the run exit 4), prints the report as text or as one JSON document, then the
/// log's last line. Returns the final status.
pub fn conclude<B: ReportBody>(
    run: Run,
    status: ExitStatus,
    json: bool,
    report: &mut Report<B>,
) -> ExitStatus {
    let program = run.program();
    // Planned files the run never came to: gone, or no longer candidates. Not deleted;
    // worth a look.
    let unseen = run.unseen();
    let refused = run.refused().to_vec();
    let recovered = run.recovered().to_vec();
    let status = status_with_leftovers(status, &unseen, &refused, &recovered);
    let (status, footer, plan_note) = match run.finish(status, &report.counts) {
        Ok(end) => (status, end.footer, end.plan_note),
        Err(e) => {
            eprintln!(
                "{program}: error: cannot write the run record: {}",
                line_text(&e.chain())
            );
            let status = ExitStatus::Failure;
            let counts = serde_json::to_value(&report.counts).expect("counts always serialize");
            (status, footer_line(program, status, &counts), None)
        }
    };
    report.exit_code = status.code();
    if json {
        out(&json_document(report, &recovered, &refused));
    } else {
        let mut text = String::new();
        for r in &recovered {
            text.push_str(&r.words());
            text.push('\n');
        }
        text.push_str(&report.render_text());
        out(&text);
    }
    for line in leftover_lines(&refused, &unseen) {
        log_line(json, &line);
    }
    log_line(json, &footer);
    if let Some(note) = plan_note {
        eprintln!("{}", line_text(&note));
    }
    status
}

/// `status`, made "needs a look" by what the run leaves for an operator: planned files it
/// never came to or kept, files of killed runs it could not recover.
fn status_with_leftovers(
    status: ExitStatus,
    unseen: &[String],
    refused: &[Refusal],
    recovered: &[Recovered],
) -> ExitStatus {
    if unseen.is_empty() && refused.is_empty() && !recovered.iter().any(Recovered::needs_look) {
        status
    } else {
        status.worst(ExitStatus::NeedsLook)
    }
}

/// The `--json` document: the report, with what the recovery did and what the plan
/// being applied kept, when there is any.
fn json_document<B: ReportBody>(
    report: &Report<B>,
    recovered: &[Recovered],
    refused: &[Refusal],
) -> String {
    let mut doc = serde_json::to_value(report).expect("a report always serializes");
    if let (false, Some(map)) = (recovered.is_empty(), doc.as_object_mut()) {
        map.insert(
            "recovered".into(),
            serde_json::to_value(recovered).expect("recoveries always serialize"),
        );
    }
    if let (false, Some(map)) = (refused.is_empty(), doc.as_object_mut()) {
        map.insert(
            "plan_kept".into(),
            serde_json::to_value(refused).expect("refusals always serialize"),
        );
    }
    let mut doc = serde_json::to_string_pretty(&doc).expect("a report always serializes");
    doc.push('\n');
    doc
}

/// The `problem:` log lines of planned files kept or never come to.
fn leftover_lines(refused: &[Refusal], unseen: &[String]) -> Vec<String> {
    let kept = refused.iter().map(|r| {
        format!(
            "  problem: {}: {}",
            line_text(&r.file),
            line_text(&r.words())
        )
    });
    let unseen = unseen.iter().map(|f| {
        format!(
            "  problem: {}: in the plan but not deleted (gone, or no longer a candidate)",
            line_text(f)
        )
    });
    kept.chain(unseen).collect()
}
