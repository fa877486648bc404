//! Where a program's archives go, believed only from files that root or this program's
//! user could have written alone: the tree's owner must not steer a root run.
//!
//! Sources, first found wins: `--to` (the command line, the caller's), then
//! [`ETC_CONFIG_DIR`]`/tmpa.toml` (with `/`, `/etc` and `/etc/tmpa` each owned by root or
//! this program's user and writable by no one else), then `{root}/tmpa.toml`, which is
//! used only when it is a regular file with one link, owned by root or this program's
//! user and writable by neither its group nor everyone. Any other `tmpa.toml` stops the
//! run (exit 2) naming the file and why. The library (the backend, which owns the tree)
//! reads the same two files in the same order, without the checks of who wrote them
//! (`Root::archive_config`), so both name the same store.

use std::path::Path;

pub use tmpa_core::maintenance::ETC_CONFIG_DIR;
use tmpa_core::maintenance::{
    CONFIG_NAME, Dir, etc_config_dirs, is_whole, read_config_text, root_dir,
};
use tmpa_core::{ArchiveConfig, Root, StoreUrl};

use crate::exit::StartError;
use crate::trust::{only_runner_writes, trusted_file};

/// The archive configuration a program run on `root` uses: `to` (the command line) over
/// `/etc/tmpa/tmpa.toml` over `{root}/tmpa.toml` (the timeout from the file when `to`
/// names the store); `None` for the local `archive/` directories.
///
/// # Errors
/// [`StartError::Untrusted`] (exit 2) naming a `tmpa.toml`, or a directory on the way to
/// `/etc/tmpa`, that another user could have written; [`StartError::Usage`] for a file
/// that cannot be read or used.
pub fn archive_config(
    root: &Root,
    to: Option<&StoreUrl>,
) -> Result<Option<ArchiveConfig>, StartError> {
    let file = match etc_config()? {
        Some(found) => found,
        None => trusted_config_in(root_dir(root))?,
    };
    Ok(match (to, file) {
        (Some(url), Some(file)) => Some(ArchiveConfig {
            url: url.clone(),
            ..file
        }),
        (Some(url), None) => Some(ArchiveConfig::for_url(url.clone())),
        (None, file) => file,
    })
}

/// `/etc/tmpa/tmpa.toml`: `Some` when the file exists (`Some(None)`: it has no
/// `[archive]` table), every directory on the way checked.
fn etc_config() -> Result<Option<Option<ArchiveConfig>>, StartError> {
    let usage = |e: tmpa_core::Error| StartError::Usage(e.chain());
    let etc = Path::new(ETC_CONFIG_DIR);
    let dirs = etc_config_dirs(etc).map_err(usage)?;
    // Each directory on the way, even when /etc/tmpa is missing: one that others may
    // write is where they could make it.
    for dir in &dirs {
        check_dir(dir)?;
    }
    let dir = dirs.last().expect("/ at least");
    if !is_whole(&dirs, etc) || dir.stat(CONFIG_NAME).map_err(usage)?.is_none() {
        return Ok(None);
    }
    trusted_config_in(dir).map(Some)
}

fn check_dir(dir: &Dir) -> Result<(), StartError> {
    let meta = dir.meta().map_err(|e| StartError::Usage(e.chain()))?;
    only_runner_writes(&meta).map_err(|why| StartError::Untrusted {
        path: dir.path().to_path_buf(),
        why,
    })
}

/// `tmpa.toml` in `dir`, when this program may believe it.
fn trusted_config_in(dir: &Dir) -> Result<Option<ArchiveConfig>, StartError> {
    let usage = |e: tmpa_core::Error| StartError::Usage(e.chain());
    let Some((text, meta)) = read_config_text(dir).map_err(usage)? else {
        return Ok(None);
    };
    let shown = dir.join(CONFIG_NAME);
    trusted_file(&meta).map_err(|why| StartError::Untrusted {
        path: shown.clone(),
        why,
    })?;
    ArchiveConfig::parse(&text, &shown).map_err(usage)
}
