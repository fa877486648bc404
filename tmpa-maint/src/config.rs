//! Where a program's archives go, believed only from files that root or this program's
//! user could have written alone: the tree's owner must not steer a root run.
//!
//! Sources, first found wins: `--to` (the command line, the caller's), then
//! [`ETC_CONFIG_DIR`]`/tmpa.toml` (with `/`, `/etc` and `/etc/tmpa` each owned by root or
//! this program's user and writable by no one else), then `{root}/tmpa.toml`, which is
//! used only when it is a regular file owned by root or this program's user, writable by
//! neither its group nor everyone, whose other names (a hard-link backup's), if any,
//! only someone who may write it could have made (`crate::trust::links_believed`). Any
//! other `tmpa.toml` stops the
//! run (exit 2) naming the file and why. The library (the backend, which owns the tree)
//! reads the same two files in the same order, without the checks of who wrote them
//! (`Root::archive_config`), so both name the same store.

use std::path::Path;

pub use tmpa_core::maintenance::ETC_CONFIG_DIR;
use tmpa_core::maintenance::{
    CONFIG_NAME, Dir, Meta, etc_config_dirs, is_whole, path_text, read_config_text, root_dir,
};
use tmpa_core::{ArchiveConfig, Credentials, Root, StoreUrl};

use crate::exit::StartError;
use crate::trust::{only_runner_writes, trusted_file};

/// Where tmpa-archive's credentials are when `--credentials` does not say: root's file,
/// read before the program becomes `TMPA_USER` (the package ships it, 0600, empty).
pub const CREDENTIALS_FILE: &str = "/etc/tmpa/archive.env";
/// Largest credentials file read.
const CREDENTIALS_BYTES_MAX: u64 = 64 << 10;

/// The store's credentials from `path`, else from [`CREDENTIALS_FILE`] when it exists
/// (none when it does not). Believed only from a regular file that root or this
/// program's user could have written alone, in a directory no one else may write: a
/// file another user could write could send the archives elsewhere
/// (`AWS_ENDPOINT_URL`).
///
/// # Errors
/// [`StartError::Usage`] (exit 2) naming the file: it cannot be read (a run that is not
/// root's, of root's file), or is not `NAME=value` lines; [`StartError::Untrusted`] when
/// another user could have written it or its directory.
pub fn read_credentials(path: Option<&Path>) -> Result<Credentials, StartError> {
    let default = Path::new(CREDENTIALS_FILE);
    let path = match path {
        Some(p) => p,
        None if default.exists() => default,
        None => return Ok(Credentials::default()),
    };
    let usage = |why: String| {
        StartError::Usage(format!(
            "credentials {}: {why}; nothing done",
            path_text(path)
        ))
    };
    let file = std::fs::File::open(path).map_err(|e| {
        usage(format!(
            "cannot read it ({e}): it is root's alone; run tmpa-archive as root (sudo tmpa \
             archive ...), which reads it before it becomes TMPA_USER"
        ))
    })?;
    let untrusted = |p: &Path, why| StartError::Untrusted {
        path: p.to_path_buf(),
        why,
    };
    let meta = Meta::of_fd(&file).map_err(|e| usage(e.to_string()))?;
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    let dir =
        std::fs::File::open(parent.unwrap_or(Path::new("."))).map_err(|e| usage(format!("{e}")))?;
    let dmeta = Meta::of_fd(&dir).map_err(|e| usage(e.to_string()))?;
    trusted_file(&meta, &dmeta).map_err(|why| untrusted(path, why))?;
    if let Some(parent) = parent {
        only_runner_writes(&dmeta).map_err(|why| untrusted(parent, why))?;
    }
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut std::io::Read::take(&file, CREDENTIALS_BYTES_MAX),
        &mut text,
    )
    .map_err(|e| usage(format!("cannot read it: {e}")))?;
    Credentials::parse(&text).map_err(usage)
}

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
    Ok(chosen(to, file))
}

/// `--to` over the file's URL, keeping the file's timeout; the file alone; else local.
fn chosen(to: Option<&StoreUrl>, file: Option<ArchiveConfig>) -> Option<ArchiveConfig> {
    match (to, file) {
        (Some(url), Some(file)) => Some(ArchiveConfig {
            url: url.clone(),
            ..file
        }),
        (Some(url), None) => Some(ArchiveConfig::for_url(url.clone())),
        (None, file) => file,
    }
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
    let dir_meta = dir.meta().map_err(usage)?;
    trusted_file(&meta, &dir_meta).map_err(|why| StartError::Untrusted {
        path: shown.clone(),
        why,
    })?;
    ArchiveConfig::parse(&text, &shown).map_err(usage)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    use super::*;

    /// A directory of this user's alone (0700), as a tree's root or /etc/tmpa would be.
    fn own_dir() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        t
    }

    fn write(path: &Path, text: &str, mode: u32) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn url(text: &str) -> StoreUrl {
        text.parse().unwrap()
    }

    /// A `tmpa.toml` of this user's, writable by no one else, is read; without an
    /// `[archive]` table, or without a file, archives are local.
    #[test]
    fn a_trusted_config_is_read_and_a_missing_one_means_local() {
        let t = own_dir();
        let dir = Dir::open_path(t.path()).unwrap();
        assert!(trusted_config_in(&dir).unwrap().is_none(), "no file");
        write(
            &t.path().join(CONFIG_NAME),
            "[archive]\nurl = \"s3://bucket/tmpa\"\ntimeout_secs = 7\n",
            0o644,
        );
        let c = trusted_config_in(&dir)
            .unwrap()
            .expect("an [archive] table");
        assert_eq!(c.url, url("s3://bucket/tmpa"));
        assert_eq!(c.timeout, Duration::from_secs(7));
        write(&t.path().join(CONFIG_NAME), "# nothing\n", 0o644);
        assert!(
            trusted_config_in(&dir).unwrap().is_none(),
            "no [archive] table"
        );
    }

    /// A `tmpa.toml` that others may write could send the archives anywhere: refused
    /// (exit 2), naming the file; one that does not parse is a usage error naming it.
    #[test]
    fn a_config_others_may_write_or_that_does_not_parse_stops_the_run() {
        let t = own_dir();
        let dir = Dir::open_path(t.path()).unwrap();
        let file = t.path().join(CONFIG_NAME);
        write(&file, "[archive]\nurl = \"s3://b/p\"\n", 0o666);
        let e = trusted_config_in(&dir).unwrap_err();
        let StartError::Untrusted { path, .. } = &e else {
            panic!("{e}")
        };
        assert_eq!(path, &file);
        assert_eq!(e.status(), crate::ExitStatus::Usage);
        write(&file, "[archive]\nurl = 3\n", 0o644);
        let e = trusted_config_in(&dir).unwrap_err();
        assert!(matches!(e, StartError::Usage(_)), "{e}");
        assert!(e.to_string().contains(CONFIG_NAME), "{e}");
    }

    /// `--to` names the store and keeps the file's timeout; the file alone decides
    /// without it; neither: local archives.
    #[test]
    fn the_command_line_names_the_store_over_the_file() {
        let file = ArchiveConfig {
            url: url("s3://file/p"),
            timeout: Duration::from_secs(9),
        };
        let to = url("gs://flag/q");
        let c = chosen(Some(&to), Some(file.clone())).unwrap();
        assert_eq!((c.url, c.timeout), (to.clone(), Duration::from_secs(9)));
        let c = chosen(Some(&to), None).unwrap();
        assert_eq!(c.url, to);
        assert_eq!(c.timeout, ArchiveConfig::for_url(to.clone()).timeout);
        assert_eq!(chosen(None, Some(file.clone())).unwrap().url, file.url);
        assert!(chosen(None, None).is_none());
    }

    /// Credentials are read from a file of this user's alone; one others may write, or
    /// in a directory others may write, is refused; one that cannot be read, or is not
    /// `NAME=value` lines, is a usage error naming it.
    #[test]
    fn credentials_only_from_a_file_no_one_else_could_write() {
        let t = own_dir();
        let file = t.path().join("archive.env");
        write(
            &file,
            "# keys\nAWS_ACCESS_KEY_ID=AK\nAWS_SECRET_ACCESS_KEY='s k'\n",
            0o600,
        );
        let c = read_credentials(Some(&file)).unwrap();
        assert_eq!(
            c.names().collect::<Vec<_>>(),
            ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
        );
        write(&file, "AWS_ACCESS_KEY_ID=AK\n", 0o666);
        let e = read_credentials(Some(&file)).unwrap_err();
        assert!(
            matches!(e, StartError::Untrusted { ref path, .. } if *path == file),
            "{e}"
        );
        write(&file, "AWS_ACCESS_KEY_ID=AK\n", 0o600);
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = read_credentials(Some(&file)).unwrap_err();
        assert!(
            matches!(e, StartError::Untrusted { ref path, .. } if path == t.path()),
            "{e}"
        );
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        write(&file, "export AWS_REGION=x\n", 0o600);
        let e = read_credentials(Some(&file)).unwrap_err();
        assert!(e.to_string().contains("not NAME=value"), "{e}");
        let e = read_credentials(Some(&t.path().join("missing.env"))).unwrap_err();
        assert!(matches!(e, StartError::Usage(_)), "{e}");
        assert!(e.to_string().contains("missing.env"), "{e}");
    }
}
