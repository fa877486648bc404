//! # tmpa-maint
//!
//! The machinery the maintenance programs (`tmpa-compact`, `tmpa-archive`,
//! `tmpa-tmpclean`, `tmpa-patrol`, `tmpa-snapshot`) share, written once so that they cannot drift apart in
//! how they start, lock, delete, record, log or exit (docs/OPERATIONS.md "Exit codes"):
//!
//! - [`CommonArgs`] (`--root`, `--dry-run`, `--json`), [`Mode`] (plan, write without
//!   deleting, real), [`parse_age`];
//! - [`main`]: every program's `main`; a run that cannot start (a command line clap
//!   refuses, a refusal, a held lock) still leaves a run record;
//! - [`prepare`]: what only root may read is read, then `--user` ([`become_user`]);
//! - [`run_program`]: root, lock ([`Lock`]), a run record that says "not finished", the
//!   log's first line, the work, then [`conclude`]: run record ([`RunRecord`]), report
//!   ([`Report`]), the log's last line;
//! - the one deletion path ([`Run::dispose`]): a typed, fsynced receipt line
//!   ([`Deletion`]) before each deletion, the full [`Stamp`](tmpa_core::maintenance::Stamp)
//!   re-checked (and a file lease still intact, for tmpclean) immediately before
//!   `unlinkat`, then a directory fsync;
//! - reviewed plans ([`Plan`]): a dry run's exact list of deletions, saved with
//!   `--save-plan` and applied, re-verified, with `--apply-plan`;
//! - [`ExitStatus`], decided from error kinds ([`StartError`]), never from message text.
//!
//! A backend embedding `tmpa-core` never compiles this crate.

mod args;
mod config;
mod delete;
mod exit;
mod lock;
mod output;
mod pace;
mod plan;
mod program;
mod quarantine;
mod receipt;
mod record;
mod report;
mod run;
mod temps;
#[cfg(test)]
mod testing;
mod trust;
mod user;

pub use args::{
    CommonArgs, Diagnostics, Invocation, Mode, init_diagnostics, number_and_unit, parse_age,
    parse_pause,
};
pub use config::{CREDENTIALS_FILE, ETC_CONFIG_DIR, archive_config, read_credentials};
pub use delete::{Disposed, Doomed, Kept, Outcome, PACE_BATCH};
pub use exit::{ExitStatus, StartError, exit};
pub use lock::Lock;
pub use output::{Progress, footer_line, header_line, log_line, now_rfc3339, out};
pub use pace::{BUSY_SHARE, Pacer};
pub use plan::{Admission, Applying, Candidate, PLAN_FORMAT, Plan, Refusal};
pub use program::{Prepared, Program, main, prepare, run_program};
pub use quarantine::quarantine_rel;
pub use receipt::{Deletion, NotOpenProof, Proof, ReceiptLine, Recovered, RecoveredAction};
pub use record::{LastSuccess, RunRecord, Task, read_run_record, write_run_record};
pub use report::{DeleteCount, Report, ReportBody, conclude};
pub use run::{Ending, Run, Setup, resolve_root};
pub use temps::finals_with_temporaries;
pub use trust::{
    Distrust, links_believed, only_runner_writes, own_state_dir, protected_hardlinks, runner_uid,
    trusted_file,
};
pub use user::{Account, Became, become_user};
