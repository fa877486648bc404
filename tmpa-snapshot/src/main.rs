//! The tmpa-snapshot binary: parses flags, runs, maps the outcome to the exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = tmpa_snapshot::Args::parse();
    tmpa_maint::exit(tmpa_snapshot::PROGRAM, tmpa_snapshot::run(&args))
}
