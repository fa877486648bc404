//! `tmpa-docgen OUT_DIR`: writes the TMPA programs' man pages, shell completions and
//! `/etc/cron.d/tmpa` into OUT_DIR (see the library's docs); `packaging/build-deb` runs it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

/// Generate the TMPA programs' man pages, shell completions and /etc/cron.d/tmpa.
///
/// Writes OUT_DIR/man/man1/tmpa-*.1, OUT_DIR/completions/{bash,zsh,fish}/ and
/// OUT_DIR/cron.d/tmpa from the programs' clap definitions and root's crontab; or, with
/// --reference FILE, the flags and exit statuses page (docs/REFERENCE.md).
#[derive(Parser, Debug)]
#[command(name = "tmpa-docgen", version)]
struct Cli {
    /// Directory to write into (created when missing)
    #[arg(required_unless_present = "reference")]
    out_dir: Option<PathBuf>,
    /// Write the reference page of every program's flags and exit statuses to FILE
    /// instead (docs/REFERENCE.md)
    #[arg(long, value_name = "FILE", conflicts_with = "out_dir")]
    reference: Option<PathBuf>,
    /// Root's crontab, the one source of the schedule
    #[arg(long, value_name = "FILE", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../cron/tmpa.crontab"))]
    crontab: PathBuf,
    /// The man pages' date, YYYY-MM-DD [default: the day of SOURCE_DATE_EPOCH, else none]
    #[arg(long, value_name = "YYYY-MM-DD")]
    date: Option<String>,
}

fn main() -> ExitCode {
    match run(&Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tmpa-docgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    if let Some(file) = &cli.reference {
        std::fs::write(file, tmpa_docgen::reference::reference())
            .with_context(|| format!("write {}", file.display()))?;
        println!("tmpa-docgen: wrote {}", file.display());
        return Ok(());
    }
    let Some(out_dir) = &cli.out_dir else {
        anyhow::bail!("OUT_DIR or --reference FILE is required");
    };
    let crontab = std::fs::read_to_string(&cli.crontab)
        .with_context(|| format!("read {}", cli.crontab.display()))?;
    let date = match &cli.date {
        Some(d) => d.clone(),
        None => source_date()?,
    };
    let written = tmpa_docgen::generate(out_dir, &crontab, &date)?;
    println!(
        "tmpa-docgen: {} files in {}",
        written.len(),
        out_dir.display()
    );
    Ok(())
}

/// The UTC day of `SOURCE_DATE_EPOCH` (reproducible builds: build-deb sets it to the last
/// commit's time), or "" when it is not set.
fn source_date() -> Result<String> {
    let Ok(epoch) = std::env::var("SOURCE_DATE_EPOCH") else {
        return Ok(String::new());
    };
    let secs: i64 = epoch
        .trim()
        .parse()
        .with_context(|| format!("SOURCE_DATE_EPOCH={epoch:?} is not a number of seconds"))?;
    let t = chrono::DateTime::from_timestamp(secs, 0)
        .with_context(|| format!("SOURCE_DATE_EPOCH={epoch} is out of range"))?;
    Ok(t.format("%Y-%m-%d").to_string())
}
