//! The tmpa-tmpclean binary: parses flags, runs, maps the outcome to the exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = tmpa_tmpclean::Args::parse();
    tmpa_maint::exit(tmpa_tmpclean::PROGRAM, tmpa_tmpclean::run(&args))
}
