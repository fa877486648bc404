//! `tmpa.toml`: where archived sessions and notifications live. Read by every build of
//! the library, with or without the `object-store` feature, so that a tree whose archives
//! are in a store is never mistaken for one whose archives are all local.
//!
//! Two places, the first found wins, for the library as for the programs
//! (`tmpa_maint::archive_config`, which also takes `--to` and checks who could have
//! written each file): [`ETC_CONFIG_DIR`]`/tmpa.toml`, the machine's, then
//! `{root}/tmpa.toml`, the tree's.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::fs::{Dir, Meta};

/// Name of the configuration file in the root.
pub const CONFIG_NAME: &str = "tmpa.toml";
/// The machine's configuration directory: a `tmpa.toml` here takes the place of the
/// tree's, for the library and the programs alike.
pub const ETC_CONFIG_DIR: &str = "/etc/tmpa";
/// Largest configuration file read, in bytes.
const CONFIG_BYTES_MAX: u64 = 64 << 10;
/// Default time one request to the store may take before it counts as failed (it is
/// then retried, see [`ArchiveConfig::timeout`]).
pub const TIMEOUT_SECS_DEFAULT: u64 = 30;
/// Bounds of `timeout_secs`.
const TIMEOUT_SECS_RANGE: std::ops::RangeInclusive<u64> = 1..=3600;

/// Characters an archive URL may not hold: those S3 and GCS advise against in keys,
/// which the client would percent-encode (so the keys would not start with the prefix
/// as written).
const KEY_CHARS_REFUSED: &str = "\\{}^%`[]\"<>~#|*?";

/// The kinds of object store an archive URL can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StoreScheme {
    /// `s3://bucket/prefix`: Amazon S3 or an S3-compatible store (MinIO, Ceph RGW, ...).
    S3,
    /// `gs://bucket/prefix`: Google Cloud Storage.
    Gcs,
    /// `az://container/prefix`: Azure Blob Storage (the account from the environment).
    Azure,
    /// `file:///absolute/path`: a directory (another disk, an NFS mount).
    File,
}

impl StoreScheme {
    fn of(scheme: &str) -> Option<StoreScheme> {
        match scheme {
            "s3" => Some(StoreScheme::S3),
            "gs" => Some(StoreScheme::Gcs),
            "az" => Some(StoreScheme::Azure),
            "file" => Some(StoreScheme::File),
            _ => None,
        }
    }

    /// The URL scheme, without `://`.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreScheme::S3 => "s3",
            StoreScheme::Gcs => "gs",
            StoreScheme::Azure => "az",
            StoreScheme::File => "file",
        }
    }
}

/// A validated archive URL: a scheme, a bucket (container; empty for `file://`) and a key
/// prefix of plain segments (a path for `file://`).
///
/// # Examples
/// ```
/// use tmpa_core::{StoreScheme, StoreUrl};
/// let u: StoreUrl = "s3://chat-archive/tmpa/host-a/".parse().unwrap();
/// assert_eq!((u.scheme(), u.bucket(), u.prefix()), (StoreScheme::S3, "chat-archive", "tmpa/host-a"));
/// assert_eq!(u.to_string(), "s3://chat-archive/tmpa/host-a");
/// let f: StoreUrl = "file:///srv/archive".parse().unwrap();
/// assert_eq!((f.bucket(), f.prefix()), ("", "srv/archive"));
/// assert!("s3://bucket/../x".parse::<StoreUrl>().is_err());
/// assert!("ftp://host/x".parse::<StoreUrl>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StoreUrl {
    scheme: StoreScheme,
    bucket: String,
    prefix: String,
}

impl StoreUrl {
    /// The kind of store.
    pub fn scheme(&self) -> StoreScheme {
        self.scheme
    }

    /// The bucket (or container); empty for `file://`.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key prefix, segments joined by `/`, without leading or trailing `/` (may be
    /// empty). For `file://`, the directory without its leading `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The directory of a `file://` URL.
    pub fn file_dir(&self) -> Option<PathBuf> {
        (self.scheme == StoreScheme::File).then(|| Path::new("/").join(&self.prefix))
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.bucket)?;
        if self.scheme == StoreScheme::File || !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

impl FromStr for StoreUrl {
    type Err = String;

    /// Parses `s3://bucket[/prefix]`, `gs://bucket[/prefix]`, `az://container[/prefix]`
    /// or `file:///absolute/dir`. Refused: other schemes, a missing bucket, query strings
    /// or fragments, empty, `.` or `..` segments, control characters, spaces and the
    /// characters object keys would have to escape (`\ { } ^ % ` [ ] " < > ~ # | * ?`), so
    /// that the prefix is exactly the keys' (and for `file://`, the directory's).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (scheme_text, rest) = s
            .split_once("://")
            .ok_or_else(|| format!("{s:?} is not a URL (expected e.g. s3://bucket/prefix)"))?;
        let scheme = StoreScheme::of(scheme_text).ok_or_else(|| {
            format!(
                "{s:?}: unsupported scheme {scheme_text:?} (use s3://, gs://, az:// or file://)"
            )
        })?;
        if let Some(c) = rest
            .chars()
            .find(|c| c.is_control() || c.is_whitespace() || KEY_CHARS_REFUSED.contains(*c))
        {
            return Err(format!("{s:?}: the character {c:?} is not allowed"));
        }
        let (bucket, path) = match scheme {
            StoreScheme::File => {
                let path = rest.strip_prefix('/').ok_or_else(|| {
                    format!("{s:?}: a file:// URL needs an absolute path (file:///srv/archive)")
                })?;
                (String::new(), path)
            }
            _ => {
                let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(format!(
                        "{s:?}: no bucket (expected {scheme_text}://bucket/prefix)"
                    ));
                }
                (bucket.to_owned(), path)
            }
        };
        let path = path.strip_suffix('/').unwrap_or(path);
        if !path.is_empty() {
            for seg in path.split('/') {
                if seg.is_empty() || seg == "." || seg == ".." {
                    return Err(format!(
                        "{s:?}: the prefix has an empty, '.' or '..' segment"
                    ));
                }
            }
        }
        if scheme == StoreScheme::File && path.is_empty() {
            return Err(format!(
                "{s:?}: refusing the file system's root as an archive"
            ));
        }
        Ok(StoreUrl {
            scheme,
            bucket,
            prefix: path.to_owned(),
        })
    }
}

impl<'de> Deserialize<'de> for StoreUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for StoreUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Where archived sessions go and are read from: the `[archive]` table of
/// `{root}/tmpa.toml`.
///
/// ```toml
/// [archive]
/// url = "s3://chat-archive/tmpa/host-a"   # or gs://, az://, file:///abs/dir
/// timeout_secs = 30                       # optional: one request's limit
/// ```
///
/// Credentials and endpoints are never in the file: they come from each store's standard
/// environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
/// `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP` for S3; `GOOGLE_SERVICE_ACCOUNT` for GCS;
/// `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY` for Azure).
///
/// # Examples
/// ```
/// use tmpa_core::ArchiveConfig;
/// let c = ArchiveConfig::parse("[archive]\nurl = \"s3://b/p\"\n", "tmpa.toml".as_ref()).unwrap();
/// assert_eq!(c.unwrap().url.to_string(), "s3://b/p");
/// let e = ArchiveConfig::parse("[archive]\nulr = \"s3://b/p\"\n", "tmpa.toml".as_ref()).unwrap_err();
/// assert!(e.to_string().starts_with("tmpa.toml: "), "{e}");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveConfig {
    /// The store and prefix.
    pub url: StoreUrl,
    /// How long one request may take (connecting included) before it counts as failed
    /// and is retried. Default 30 seconds (`timeout_secs` in `[archive]`).
    pub timeout: Duration,
}

impl ArchiveConfig {
    /// What a build without the `object-store` feature answers for anything archived
    /// in this store, for the tree at `root`: an error naming the file and the URL, never
    /// "not archived".
    #[cfg(not(feature = "object-store"))]
    pub(crate) fn unsupported(&self, root: &Path) -> Error {
        Error::StoreUnsupported {
            path: root.join(super::CONFIG_NAME),
            url: self.url.to_string(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    archive: Option<ArchiveTable>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ArchiveTable {
    url: StoreUrl,
    timeout_secs: Option<u64>,
}

impl ArchiveConfig {
    /// The configuration for `url` with the default timeout (`tmpa-archive --to URL`).
    pub fn for_url(url: StoreUrl) -> ArchiveConfig {
        ArchiveConfig {
            url,
            timeout: Duration::from_secs(TIMEOUT_SECS_DEFAULT),
        }
    }

    /// Parses the text of a `tmpa.toml` (`shown` names it in errors). `None` when it has
    /// no `[archive]` table (archives are local).
    ///
    /// # Errors
    /// [`Error::Config`] naming `shown` and the problem (bad TOML, an unknown key, a URL
    /// that cannot be used, a timeout out of range).
    pub fn parse(text: &str, shown: &Path) -> Result<Option<ArchiveConfig>> {
        let bad = |reason: String| Error::Config {
            path: shown.to_path_buf(),
            reason,
        };
        let file: ConfigFile = toml::from_str(text).map_err(|e| {
            let msg = e.message().to_owned();
            match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    bad(format!("line {line}: {msg}"))
                }
                None => bad(msg),
            }
        })?;
        let Some(table) = file.archive else {
            return Ok(None);
        };
        let secs = table.timeout_secs.unwrap_or(TIMEOUT_SECS_DEFAULT);
        if !TIMEOUT_SECS_RANGE.contains(&secs) {
            return Err(bad(format!(
                "[archive] timeout_secs = {secs}: must be from {} to {}",
                TIMEOUT_SECS_RANGE.start(),
                TIMEOUT_SECS_RANGE.end()
            )));
        }
        Ok(Some(ArchiveConfig {
            url: table.url,
            timeout: Duration::from_secs(secs),
        }))
    }

    /// The configuration the library uses for the tree `root`: [`ETC_CONFIG_DIR`]`/tmpa.toml`
    /// when it exists, else `{root}/tmpa.toml` (each read never through a symlink). `None`
    /// when neither exists, or the one read has no `[archive]` table.
    pub(crate) fn load(root: &Dir) -> Result<Option<ArchiveConfig>> {
        ArchiveConfig::load_with(Path::new(ETC_CONFIG_DIR), root)
    }

    /// [`ArchiveConfig::load`] with the machine's directory at `etc`.
    fn load_with(etc: &Path, root: &Dir) -> Result<Option<ArchiveConfig>> {
        let unsafe_dir = |e: Error| match e {
            Error::Unsafe { path, reason } => Error::Config {
                path,
                reason: reason.to_string(),
            },
            other => other,
        };
        let dirs = etc_config_dirs(etc).map_err(unsafe_dir)?;
        if is_whole(&dirs, etc)
            && let Some(dir) = dirs.last()
            && let Some((text, _)) = read_config_text(dir)?
        {
            return ArchiveConfig::parse(&text, &dir.join(CONFIG_NAME));
        }
        match read_config_text(root)? {
            Some((text, _)) => ArchiveConfig::parse(&text, &root.join(CONFIG_NAME)),
            None => Ok(None),
        }
    }
}

/// The text of `tmpa.toml` in `dir` (never through a symlink, at most 64 KiB) and the
/// metadata of the file read, for a caller that decides whether to believe it; `None`
/// when there is no such file.
///
/// # Errors
/// [`Error::Config`] naming the file when it is not a regular file, too large or not
/// UTF-8; [`Error::Io`] when it cannot be read.
pub fn read_config_text(dir: &Dir) -> Result<Option<(String, Meta)>> {
    let shown = dir.join(CONFIG_NAME);
    let (bytes, meta) = match dir.read(CONFIG_NAME, CONFIG_BYTES_MAX) {
        Ok(read) => read,
        Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(Error::Corrupt { reason, .. }) => {
            return Err(Error::Config {
                path: shown,
                reason,
            });
        }
        Err(e) => return Err(e),
    };
    let text = String::from_utf8(bytes).map_err(|_| Error::Config {
        path: shown,
        reason: "not UTF-8 text".into(),
    })?;
    Ok(Some((text, meta)))
}

/// The directories from `/` toward `etc` (an absolute path, usually [`ETC_CONFIG_DIR`])
/// that exist, `/` first, each opened below the one before without following a symlink,
/// for a caller that checks who could write them: all of them, `etc` last, when `etc`
/// exists ([`is_whole`] says), else those down to the last that exists.
///
/// # Errors
/// [`Error::Unsafe`] naming a directory on the way that is a symlink or not a directory;
/// [`Error::Io`] when one cannot be opened.
pub fn etc_config_dirs(etc: &Path) -> Result<Vec<Dir>> {
    let mut dirs = vec![Dir::open_path(Path::new("/"))?];
    for component in etc.iter().skip(1) {
        let next = dirs.last().expect("/ at least").open_dir(component);
        match next {
            Ok(dir) => dirs.push(dir),
            Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        }
    }
    Ok(dirs)
}

/// Whether `dirs`, from [`etc_config_dirs`]`(etc)`, reach `etc` itself.
pub fn is_whole(dirs: &[Dir], etc: &Path) -> bool {
    dirs.len() == etc.iter().count()
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "tests build and break trees by path"
)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<ArchiveConfig>> {
        ArchiveConfig::parse(text, Path::new("/r/tmpa.toml"))
    }

    #[test]
    fn urls_of_every_scheme_parse_and_print_back() {
        for (s, shown) in [
            ("s3://b", "s3://b"),
            ("s3://b/", "s3://b"),
            ("s3://b/a/b/", "s3://b/a/b"),
            ("gs://bucket.example/x", "gs://bucket.example/x"),
            ("az://container/host-1", "az://container/host-1"),
            ("file:///srv/archive/", "file:///srv/archive"),
        ] {
            let u: StoreUrl = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(u.to_string(), shown);
        }
    }

    #[test]
    fn bad_urls_say_why() {
        for (s, why) in [
            ("bucket/prefix", "not a URL"),
            ("http://h/b", "unsupported scheme"),
            ("s3:///p", "no bucket"),
            ("s3://b//p", "empty"),
            ("s3://b/a/../c", "'..'"),
            ("s3://b/a b", "not allowed"),
            ("s3://b/p?x=1", "not allowed"),
            ("file://host/dir", "absolute path"),
            ("file:///", "root"),
        ] {
            let e = s.parse::<StoreUrl>().unwrap_err();
            assert!(e.contains(why), "{s}: {e}");
        }
    }

    #[test]
    fn the_file_names_itself_and_the_line() {
        let e = parse("[archive]\nurl = \"s3://b\"\nulr = 1\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("/r/tmpa.toml: line 3"), "{msg}");
        assert!(msg.contains("ulr"), "{msg}");
        let e = parse("[archive]\nurl = \"ftp://x\"\n").unwrap_err();
        assert!(e.to_string().contains("unsupported scheme"), "{e}");
        let e = parse("[archive]\nurl = \"s3://b\"\ntimeout_secs = 0\n").unwrap_err();
        assert!(e.to_string().contains("timeout_secs"), "{e}");
        assert!(matches!(
            parse("[archive\n").unwrap_err(),
            Error::Config { .. }
        ));
    }

    /// The machine's tmpa.toml takes the place of the tree's; without it, the tree's
    /// counts; a symlinked machine directory is an error naming it, never a fallback.
    #[test]
    fn the_machine_s_file_comes_before_the_tree_s() {
        let t = tempfile::tempdir().unwrap();
        let (etc, tree) = (t.path().join("etc/tmpa"), t.path().join("tree"));
        std::fs::create_dir_all(&tree).unwrap();
        let root = Dir::open_path(&tree).unwrap();
        let url = |c: Option<ArchiveConfig>| c.map(|c| c.url.to_string());
        assert_eq!(url(ArchiveConfig::load_with(&etc, &root).unwrap()), None);
        std::fs::write(tree.join(CONFIG_NAME), "[archive]\nurl = \"s3://tree/p\"\n").unwrap();
        let got = ArchiveConfig::load_with(&etc, &root).unwrap();
        assert_eq!(url(got).as_deref(), Some("s3://tree/p"));
        std::fs::create_dir_all(&etc).unwrap();
        let got = ArchiveConfig::load_with(&etc, &root).unwrap();
        assert_eq!(
            url(got).as_deref(),
            Some("s3://tree/p"),
            "an empty /etc/tmpa"
        );
        std::fs::write(etc.join(CONFIG_NAME), "[archive]\nurl = \"s3://etc/p\"\n").unwrap();
        let got = ArchiveConfig::load_with(&etc, &root).unwrap();
        assert_eq!(url(got).as_deref(), Some("s3://etc/p"));
        std::fs::write(etc.join(CONFIG_NAME), "# archives are local\n").unwrap();
        assert_eq!(url(ArchiveConfig::load_with(&etc, &root).unwrap()), None);
        let moved = t.path().join("etc/elsewhere");
        std::fs::rename(&etc, &moved).unwrap();
        std::os::unix::fs::symlink(&moved, &etc).unwrap();
        let e = ArchiveConfig::load_with(&etc, &root).unwrap_err();
        assert!(matches!(e, Error::Config { .. }), "{e}");
        assert!(e.to_string().contains("symlink"), "{e}");
    }

    #[test]
    fn no_archive_table_means_local() {
        assert_eq!(parse("").unwrap(), None);
        let c = parse("[archive]\nurl = \"s3://b/p\"\ntimeout_secs = 5\n")
            .unwrap()
            .unwrap();
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(c.url.prefix(), "p");
    }
}
