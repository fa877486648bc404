//! A run in progress: set up in one step ([`Run::start`] with its [`Setup`]): the lock,
//! the run record of a run not yet finished, the recovery of killed runs; then what the
//! work asks of it (plan admission, receipts, the lock still held). How it ends is
//! `finish.rs`'s.

use std::path::Path;

use chrono::{DateTime, Local};
use tmpa_core::Root;
use tmpa_core::maintenance::{line_text, path_text};

use crate::args::Mode;
use crate::exit::StartError;
use crate::lock::Lock;
use crate::output::{header_line, rfc3339};
use crate::plan::{Admission, Applying, Candidate, Noted, Refusal, Saving};
use crate::quarantine::{self, Quarantine};
use crate::receipt::{Deletion, Receipt, ReceiptLine, Recovered};
use crate::record::{RunRecord, Task, read_run_record, write_run_record};

mod finish;

pub use finish::Ending;

/// Opens the root named by the flag (or `TMPA_ROOT`, which clap folds into the flag), else
/// the current directory.
///
/// # Errors
/// [`tmpa_core::Error::NotRoot`] or [`tmpa_core::Error::OpenRoot`] (both exit 2).
pub fn resolve_root(flag: Option<&Path>) -> tmpa_core::Result<Root> {
    Root::open(flag.unwrap_or(Path::new(".")))
}

/// What a run is given at its start besides its program, task, root and mode: the plan
/// it saves (`--save-plan`, a dry run) or applies (`--apply-plan`, checked already), and
/// its pace. The default: none of these, full speed.
#[derive(Debug, Default)]
pub struct Setup {
    /// `--save-plan`: the file, open.
    pub(crate) saving: Option<Saving>,
    /// `--apply-plan`: the plan, checked against this program, task and root.
    pub(crate) applying: Option<Applying>,
    /// `--pace`.
    pub(crate) pace: std::time::Duration,
}

/// A run in progress: the root, the held lock, the mode, the start time and the receipt.
#[derive(Debug)]
pub struct Run {
    program: &'static str,
    task: Task,
    root: Root,
    mode: Mode,
    started: DateTime<Local>,
    receipt: Option<Receipt>,
    /// A dry run: what a real run would delete (the plan), as lines (to save) or as a sum.
    would_delete: Noted,
    /// A dry run with `--save-plan`: where the plan goes.
    saving: Option<Saving>,
    /// A real run with `--apply-plan`: the plan being applied.
    applying: Option<Applying>,
    /// The planned groups this run kept because they are not as planned ([`Run::admit`]).
    refused: Vec<Refusal>,
    /// `--pace`: the pause after each batch of deletions.
    pace: std::time::Duration,
    /// Where the delete step moves files (`{root}/.tmpa/quarantine/in-flight/{task}/{run}`).
    quarantine: Quarantine,
    /// What the recovery of killed runs found in the quarantine at the start.
    recovered: Vec<Recovered>,
    /// The record the previous run left (read before this run wrote its own at start):
    /// what it carries forward, and the plan it compares with.
    previous: Option<RunRecord>,
    /// This run's id: the stem of its receipt, the name of its quarantine directories.
    run_id: String,
    lock: Lock,
}

impl Run {
    /// Takes the lock of `task` on `root`, starts the clock and writes the run record of
    /// a run that has not finished (a run killed from now on shows as one that did not;
    /// a record that cannot be written, on a full disk say, is a warning on stderr and the
    /// run goes on); a run that deletes then finishes the delete steps of killed runs
    /// (their outcome is the first lines of its receipt). Everything the run is given
    /// comes in `setup`: nothing is set after.
    ///
    /// # Errors
    /// [`StartError::Locked`] (exit 3) or [`StartError::Core`] from [`Lock::acquire`], the
    /// recovery, or the receipt of what it recovered.
    pub fn start(
        program: &'static str,
        task: Task,
        root: Root,
        mode: Mode,
        setup: Setup,
    ) -> Result<Run, StartError> {
        let lock = Lock::acquire(&root, task)?;
        let started = Local::now();
        let run_id = run_id(started);
        let previous = read_run_record(&root, task.as_str()).ok().flatten();
        let mut record = RunRecord::new(
            task.as_str(),
            rfc3339(started),
            mode.is_plan(),
            previous.as_ref(),
        );
        record.program = Some(program.to_owned());
        record.root = Some(path_text(root.path()));
        record.run = Some(run_id.clone());
        if let Err(e) = write_run_record(&root, &record) {
            // A full disk is the usual cause, and this run may be what frees it (a day
            // compacted, sessions archived): the work goes on and says what fails, and
            // the record is written again at the end.
            eprintln!(
                "{program}: warning: cannot write the run record at the start (the run goes on): {}",
                line_text(&e.chain())
            );
        }
        let recovered = if mode.deletes() {
            quarantine::recover(&root, task, &run_id)?
        } else {
            Vec::new()
        };
        // The plan's lines are kept only to be saved; otherwise their sum is its digest.
        let would_delete = if setup.saving.is_some() {
            Noted::Lines(Vec::new())
        } else {
            Noted::Sum(crate::plan::DeletionSum::default())
        };
        let mut run = Run {
            program,
            task,
            root,
            mode,
            started,
            receipt: None,
            would_delete,
            saving: setup.saving,
            applying: setup.applying,
            refused: Vec::new(),
            pace: setup.pace,
            quarantine: Quarantine::new(task, run_id.clone()),
            recovered,
            previous,
            run_id,
            lock,
        };
        if !run.recovered.is_empty() {
            // The killed run's receipt says "delete" of each; this one says what became
            // of them.
            let lines: Vec<ReceiptLine> = run
                .recovered
                .iter()
                .cloned()
                .map(ReceiptLine::Recovered)
                .collect();
            run.record_receipt(&lines)?;
        }
        Ok(run)
    }

    /// The program's name.
    pub fn program(&self) -> &'static str {
        self.program
    }

    /// The root and the run's quarantine, for the delete step.
    pub(crate) fn quarantine(&mut self) -> (&Root, &mut Quarantine) {
        (&self.root, &mut self.quarantine)
    }

    /// What the recovery of killed runs did at the start of this run (real runs only).
    pub fn recovered(&self) -> &[Recovered] {
        &self.recovered
    }

    /// A dry run: notes that a real run would delete this (the line its receipt would
    /// get); the notes make the run's plan. A real run ignores it.
    pub fn would_delete(&mut self, line: Deletion) {
        if self.mode.is_plan() {
            self.would_delete.push(line);
        }
    }

    /// The one plan admission of every program: whether `group`, files that go together
    /// (an event file; a session; a notification and its ack; a batch of notifications
    /// and acks; a temporary), takes part in this run. Without a plan, always. Applying
    /// a plan, only when the plan lists every file of the group with exactly the stamp
    /// (and SHA-256, and place that would hold its data, when given) it has now: a group
    /// the plan does not list is left for the next run without a word; one it lists
    /// otherwise is kept, and this run reports it itself, naming the file that is not as
    /// planned (`problem:` lines, exit 1).
    ///
    /// Call it before the work that a deletion relies on (an archive written, a file
    /// compacted), so that nothing is made for files that are then kept: once with what
    /// a listing knows (stamps), and again with SHA-256 and the place of the data once
    /// known.
    pub fn admit(&mut self, group: &[Candidate<'_>]) -> Admission {
        let Some(a) = &mut self.applying else {
            return Admission::Admitted;
        };
        let (admission, mut refused) = a.admit(group);
        self.refused.append(&mut refused);
        admission
    }

    /// The groups this run kept because the plan does not list them as they are (what
    /// [`Run::admit`] refused), in the order met.
    pub fn refused(&self) -> &[Refusal] {
        &self.refused
    }

    /// The files of the plan being applied that the run never came to (gone, or no
    /// longer candidates): not deleted, worth a look.
    pub(crate) fn unseen(&self) -> Vec<String> {
        self.applying
            .as_ref()
            .map(|a| a.unseen().into_iter().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// The plan being applied, if any (the delete path checks every deletion against it).
    pub(crate) fn applying_mut(&mut self) -> Option<&mut Applying> {
        self.applying.as_mut()
    }

    /// The root.
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// `--pace`: in a program that reads many files, the least pause per
    /// [`PACE_BATCH`](crate::PACE_BATCH) files read (deletions pause at least a sixteenth
    /// of it every 16, see [`Run::dispose`]; every paced step also pauses five times its
    /// own time, see [`Pacer`](crate::Pacer)); zero runs at full speed.
    pub fn pace(&self) -> std::time::Duration {
        self.pace
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether this is a dry run.
    pub fn dry_run(&self) -> bool {
        self.mode.is_plan()
    }

    /// The log's first line: time, program, mode and root.
    pub fn header(&self, real_mode: &str) -> String {
        header_line(self.program, &self.mode.label(real_mode), &self.root)
    }

    /// Appends lines to this run's receipt (creating it on first use) and fsyncs it.
    ///
    /// # Errors
    /// [`tmpa_core::Error::Io`] naming the receipt; the caller must then not delete.
    pub(crate) fn record_receipt(&mut self, lines: &[ReceiptLine]) -> tmpa_core::Result<()> {
        assert!(
            self.mode.writes(),
            "only a run that writes deletes (or takes back) and writes receipts"
        );
        if self.receipt.is_none() {
            self.receipt = Some(Receipt::create(&self.root, self.task, &self.run_id)?);
        }
        self.receipt.as_mut().expect("created above").append(lines)
    }

    /// Whether this run still holds its lock by name ([`Lock::still_held`]): asked before
    /// each batch of deletions, so that a run whose lock file someone removed or replaced
    /// (and another run may have taken anew) deletes nothing more.
    ///
    /// # Errors
    /// [`tmpa_core::Error::Io`] naming the lock file when it no longer names this run's.
    pub(crate) fn check_lock(&self) -> tmpa_core::Result<()> {
        self.lock.still_held(&self.root)
    }

    /// This run's id (`{start time}-{16 hex digits}`): the stem of its receipt and the
    /// name of its quarantine directories.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }
}

/// A run's name among the runs of its task, `{start time}-{16 hex digits}`: the stem of
/// its receipt and the name of its quarantine directories. The 64 bits are the kernel's
/// (`getrandom`): no two runs share an id, whatever their pids (every container's first
/// process is pid 1) and however the clock steps, and no one can tell a run's id before
/// the run makes its files, so no one can plant anything at their names. The time comes
/// first so that a listing sorts by start.
fn run_id(started: DateTime<Local>) -> String {
    let mut random = [0u8; 8];
    let mut filled = 0;
    while filled < random.len() {
        match rustix::rand::getrandom(&mut random[filled..], rustix::rand::GetRandomFlags::empty())
        {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            // getrandom(2) fails only before the kernel's pool is initialised (never
            // with these flags: it waits) or without the call (Linux < 3.17).
            Err(e) => panic!("getrandom: {e}"),
        }
    }
    format!(
        "{}-{:016x}",
        started.format("%Y%m%dT%H%M%S%z"),
        u64::from_le_bytes(random)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_never_repeat_and_sort_by_start() {
        let now = Local::now();
        let ids: std::collections::BTreeSet<String> = (0..1000).map(|_| run_id(now)).collect();
        assert_eq!(ids.len(), 1000);
        let id = ids.first().expect("ids");
        let (time, random) = id.rsplit_once('-').expect("time-random");
        assert_eq!(random.len(), 16, "{id}");
        assert!(random.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        assert_eq!(time, now.format("%Y%m%dT%H%M%S%z").to_string());
        let later = run_id(now + chrono::Duration::seconds(1));
        assert!(ids.iter().all(|i| *i < later), "{later}");
    }

    use crate::ExitStatus;
    use crate::plan::Plan;
    use crate::testing::{DAY, deletion, tree};

    fn start(root: &Root, mode: Mode, setup: Setup) -> Run {
        Run::start("tmpa-test", Task::CompactEvents, root.clone(), mode, setup).unwrap()
    }

    fn line(t: &tempfile::TempDir, name: &str) -> Deletion {
        std::fs::write(t.path().join(DAY).join(name), name).unwrap();
        deletion(
            &tmpa_core::maintenance::Dir::open_path(&t.path().join(DAY)).unwrap(),
            name,
        )
    }

    /// Started, a run holds its task's lock and says in its record that it has not
    /// finished, under its id; finished, its record says how it ended, and the lock is
    /// free again.
    #[test]
    fn a_run_is_recorded_unfinished_at_its_start_and_finished_at_its_end() {
        let (_t, root) = tree();
        let run = start(&root, Mode::Real, Setup::default());
        let at_start = read_run_record(&root, "compact_events").unwrap().unwrap();
        assert!(!at_start.finished);
        assert_eq!(at_start.run.as_deref(), Some(run.run_id()));
        assert_eq!(at_start.program.as_deref(), Some("tmpa-test"));
        assert!(matches!(
            Lock::acquire(&root, Task::CompactEvents),
            Err(StartError::Locked { .. })
        ));
        let id = run.run_id().to_owned();
        let end = run
            .finish(ExitStatus::NeedsLook, &serde_json::json!({"deleted": 2}))
            .unwrap();
        assert!(end.record.finished);
        assert_eq!(end.record.run.as_deref(), Some(id.as_str()));
        assert_eq!(end.record.exit_code, 1);
        assert_eq!(end.record.counts, Some(serde_json::json!({"deleted": 2})));
        // A real run that needs at most a look is a success.
        assert_eq!(end.record.last_success_exit_code, Some(1));
        assert_eq!(
            end.record.last_success_at.as_deref(),
            Some(end.record.started_at.as_str())
        );
        assert!(
            end.footer
                .contains(" tmpa-test finished: deleted=2 exit=1 ("),
            "{}",
            end.footer
        );
        assert!(end.plan_note.is_none());
        assert_eq!(
            read_run_record(&root, "compact_events").unwrap().unwrap(),
            end.record
        );
        Lock::acquire(&root, Task::CompactEvents).unwrap();
    }

    /// A dry run or a failed run is no success: the previous success is carried forward.
    #[test]
    fn the_last_success_is_carried_forward_by_runs_that_are_not_one() {
        let (_t, root) = tree();
        let ok = start(&root, Mode::Real, Setup::default())
            .finish(ExitStatus::Ok, &serde_json::json!({}))
            .unwrap()
            .record;
        for (mode, exit) in [
            (Mode::Plan, ExitStatus::Ok),
            (Mode::Real, ExitStatus::Failure),
        ] {
            let end = start(&root, mode, Setup::default())
                .finish(exit, &serde_json::json!({}))
                .unwrap();
            assert_eq!(end.record.last_success_at, ok.last_success_at, "{mode:?}");
            assert_eq!(end.record.last_success_exit_code, Some(0), "{mode:?}");
            assert_eq!(end.record.dry_run, mode.is_plan());
        }
    }

    /// Dry runs that would delete the same files have the same plan digest, counted in a
    /// streak that a different plan starts again; the note on stderr says which.
    #[test]
    fn consecutive_dry_runs_compare_their_plans() {
        let (t, root) = tree();
        let a = line(&t, "evt_a.json");
        let b = line(&t, "evt_b.json");
        let dry = |lines: &[&Deletion]| {
            let mut run = start(&root, Mode::Plan, Setup::default());
            for l in lines {
                run.would_delete((*l).clone());
            }
            run.finish(ExitStatus::Ok, &serde_json::json!({})).unwrap()
        };
        let first = dry(&[&a, &b]);
        let digest = first
            .record
            .plan_digest
            .clone()
            .expect("a dry run's plan digest");
        assert_eq!(first.record.plan_streak, Some(1));
        assert!(
            first
                .plan_note
                .unwrap()
                .ends_with("no earlier dry run to compare with")
        );
        assert!(
            first
                .footer
                .ends_with(&format!(" plan={}", Plan::short_digest(&digest)))
        );
        let second = dry(&[&a, &b]);
        assert_eq!(second.record.plan_digest.as_deref(), Some(digest.as_str()));
        assert_eq!(second.record.plan_streak, Some(2));
        assert!(second.plan_note.unwrap().ends_with("(2 dry runs in a row)"));
        let other = dry(&[&a]);
        assert_ne!(other.record.plan_digest.as_deref(), Some(digest.as_str()));
        assert_eq!(other.record.plan_streak, Some(1));
        assert!(other.plan_note.unwrap().ends_with("(a new plan)"));
        // A real run keeps no plan; it notes nothing of what a dry run would delete.
        let real = start(&root, Mode::Real, Setup::default());
        let end = real.finish(ExitStatus::Ok, &serde_json::json!({})).unwrap();
        assert!(end.record.plan_digest.is_none() && end.plan_note.is_none());
    }

    /// `--save-plan` is part of the setup: the dry run keeps its lines and writes the
    /// plan, whose digest is the one its record keeps (the same as without saving).
    #[test]
    fn a_saved_plan_is_the_plan_the_record_names() {
        let (t, root) = tree();
        let a = line(&t, "evt_a.json");
        let unsaved = {
            let mut run = start(&root, Mode::Plan, Setup::default());
            run.would_delete(a.clone());
            run.finish(ExitStatus::Ok, &serde_json::json!({})).unwrap()
        };
        let out = tempfile::tempdir().unwrap();
        let path = out.path().join("plan.json");
        let setup = Setup {
            saving: Some(Saving::open(&path).unwrap()),
            ..Setup::default()
        };
        let mut run = start(&root, Mode::Plan, setup);
        run.would_delete(a);
        let end = run.finish(ExitStatus::Ok, &serde_json::json!({})).unwrap();
        assert_eq!(end.record.plan_digest, unsaved.record.plan_digest);
        let saved = std::fs::read(&path).unwrap();
        let plan = Plan::check(
            &path,
            &saved,
            "tmpa-test",
            Task::CompactEvents,
            &path_text(root.path()),
        )
        .unwrap();
        assert_eq!(Some(plan.digest), end.record.plan_digest);
        assert_eq!(plan.deletions.len(), 1);
    }

    /// A real run first finishes what a killed run left in the quarantine: the
    /// `recovered` lines open its receipt; a dry run recovers nothing.
    #[test]
    fn a_real_run_recovers_a_killed_run_s_files_before_its_work() {
        let (t, root) = tree();
        let left = t
            .path()
            .join(".tmpa/quarantine/in-flight/compact_events/killed/token_stats/2026-11-01");
        std::fs::create_dir_all(&left).unwrap();
        std::fs::write(left.join("evt_k.json"), "{}").unwrap();
        let dry = start(&root, Mode::Plan, Setup::default());
        assert!(dry.recovered().is_empty());
        drop(dry);
        let run = start(&root, Mode::Real, Setup::default());
        assert_eq!(run.recovered().len(), 1);
        let receipt = t
            .path()
            .join(".tmpa/receipts/compact_events")
            .join(format!("{}.jsonl", run.run_id()));
        let text = std::fs::read_to_string(receipt).unwrap();
        assert!(text.starts_with(r#"{"line":"recovered","#), "{text}");
        assert!(t.path().join("token_stats/2026-11-01/evt_k.json").is_file());
        let end = run.finish(ExitStatus::Ok, &serde_json::json!({})).unwrap();
        assert!(end.record.receipt.is_some());
    }
}
