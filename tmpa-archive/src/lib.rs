//! tmpa-archive: see SPEC and docs/ARCHITECTURE.md. Filled in by its own issue.

use std::path::PathBuf;

use tmpa_core::program::{ExitStatus, resolve_root};

/// Command-line arguments.
#[derive(clap::Parser, Debug)]
#[command(name = "tmpa-archive", version, about)]
pub struct Args {
    /// The TMPA root to work on [default: the current directory]
    #[arg(long, env = "TMPA_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
}

/// Runs the program.
///
/// # Errors
/// A root that is not a TMPA root.
pub fn run(args: &Args) -> tmpa_core::Result<ExitStatus> {
    let _root = resolve_root(args.root.as_deref())?;
    eprintln!("tmpa-archive: not implemented yet");
    Ok(ExitStatus::Failure)
}
