//! The tmpa-compact binary: parses flags, runs, maps the outcome to the exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = tmpa_compact::Args::parse();
    tmpa_maint::exit(tmpa_compact::PROGRAM, tmpa_compact::run(&args))
}
