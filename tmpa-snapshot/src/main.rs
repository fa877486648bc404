//! The tmpa-snapshot binary: parses flags, runs, maps the outcome to the exit code (tmpa_maint::main).

use std::process::ExitCode;

fn main() -> ExitCode {
    tmpa_maint::main::<tmpa_snapshot::Args>()
}
