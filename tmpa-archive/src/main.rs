//! The tmpa-archive binary: parses flags, runs, maps the outcome to the exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = tmpa_archive::Args::parse();
    tmpa_maint::exit("tmpa-archive", tmpa_archive::run(&args))
}
