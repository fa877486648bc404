//! The tmpa-patrol binary: parses flags, runs, maps the outcome to the exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = tmpa_patrol::Args::parse();
    tmpa_core::program::exit("tmpa-patrol", tmpa_patrol::run(&args))
}
