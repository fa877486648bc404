//! The tmpa-patrol binary: parses flags, runs, maps the outcome to the exit code.
//!
//! Exit codes follow the monitoring-plugin convention (0 ok, 1 warning, 2 critical,
//! 3 unknown); a usage error is 3, not clap's 2, which a monitor would read as critical.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match tmpa_patrol::Args::try_parse() {
        Ok(args) => tmpa_patrol::run(&args).into(),
        Err(e) => tmpa_patrol::usage_error(&e),
    }
}
