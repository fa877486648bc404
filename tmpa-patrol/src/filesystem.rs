//! The `file_system` check: what the root's file system is, and which promises are
//! weaker there (docs/OPERATIONS.md "Network and FUSE file systems").
//!
//! On a local file system every promise holds. On a network, FUSE, overlay or unknown one
//! the patrol probes, in its own `.tmpa/patrol/`, whether the file system has
//! `RENAME_NOREPLACE` or hard links: with either, every exclusive move of the file layer
//! holds (the delete step, the library's never-replacing writes); with neither it warns,
//! because a write that must not replace a file is then a check and a rename, and the
//! delete step cannot put back a file a writer replaced. In every case off a local disk
//! the detail says what tmpa-tmpclean needs to prove a temporary closed.

use serde::Serialize;
use tmpa_core::Root;
use tmpa_core::maintenance::{FsFamily, FsType, MovesProbe, STATE_DIR, path_text, root_dir};

use crate::{Check, Status};

/// What the report says of the root's file system.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FsInfo {
    /// Its name (`ext4`, `nfs`, `fuse`, `unknown (f_type 0x...)`); empty when unknown.
    #[serde(rename = "type")]
    pub kind: String,
    /// `local`, `network`, `fuse`, `overlay` or `unknown`.
    pub family: String,
    /// What the probe found (off a local disk only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moves: Option<MovesProbe>,
}

/// The `file_system` check, and what it found.
pub fn check(root: &Root) -> (Check, FsInfo) {
    let name = "file_system";
    let dir = root_dir(root);
    let fs = match dir.fs_type() {
        Ok(fs) => fs,
        Err(e) => {
            return (
                Check::new(name, Status::Unknown, None, e.chain()),
                FsInfo::default(),
            );
        }
    };
    let mut info = FsInfo {
        kind: fs.to_string(),
        family: family_word(fs.family).into(),
        moves: None,
    };
    if fs.family == FsFamily::Local {
        let detail = format!("{fs}: a local file system, every promise holds");
        return (Check::new(name, Status::Ok, Some(0.0), detail), info);
    }
    let tmpclean = "tmpa-tmpclean proves a temporary closed only with \
                    --writers-use-this-mount (TMPA_WRITERS_USE_THIS_MOUNT=yes), where every \
                    writer uses this mount on this host";
    let probe = dir
        .create_dir_all(std::path::Path::new(STATE_DIR).join("patrol"))
        .and_then(|d| d.probe_moves());
    let (status, detail) = match probe {
        Ok(m) => {
            info.moves = Some(m);
            moves_verdict(fs, m, tmpclean)
        }
        Err(e) => (
            Status::Warning,
            format!(
                "{fs} ({}): cannot tell whether it has RENAME_NOREPLACE or hard links: \
                 the probe in {} failed: {}; {tmpclean}",
                family_word(fs.family),
                path_text(&root.path().join(STATE_DIR).join("patrol")),
                e.chain()
            ),
        ),
    };
    let value = if status == Status::Ok { 0.0 } else { 1.0 };
    (Check::new(name, status, Some(value), detail), info)
}

/// The status and words for a file system off the local disk whose moves were probed.
fn moves_verdict(fs: FsType, m: MovesProbe, tmpclean: &str) -> (Status, String) {
    let family = family_word(fs.family);
    if m.rename_noreplace {
        return (
            Status::Ok,
            format!("{fs} ({family}): RENAME_NOREPLACE works; {tmpclean}"),
        );
    }
    if m.hard_links {
        return (
            Status::Ok,
            format!(
                "{fs} ({family}): no RENAME_NOREPLACE; the programs move files aside by \
                 rename and put them back by hard link, which is as safe; {tmpclean}"
            ),
        );
    }
    (
        Status::Warning,
        format!(
            "{fs} ({family}): neither RENAME_NOREPLACE nor hard links: a write that must not \
             replace a file (record_event, deliver, archives) is a check then a rename, and \
             a file a writer replaces during its deletion is kept in the quarantine instead \
             of put back (docs/OPERATIONS.md \"Network and FUSE file systems\"); {tmpclean}"
        ),
    )
}

fn family_word(f: FsFamily) -> &'static str {
    match f {
        FsFamily::Local => "local",
        FsFamily::Network => "network",
        FsFamily::Fuse => "fuse",
        FsFamily::Overlay => "overlay",
        FsFamily::Unknown => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_the_local_disk_only_missing_both_moves_warns() {
        let nfs = FsType::of_magic(0x6969);
        let with = |r, l| {
            moves_verdict(
                nfs,
                MovesProbe {
                    rename_noreplace: r,
                    hard_links: l,
                },
                "T",
            )
        };
        assert_eq!(with(true, true).0, Status::Ok);
        let (s, words) = with(false, true);
        assert_eq!(s, Status::Ok);
        assert!(
            words.starts_with("nfs (network): no RENAME_NOREPLACE"),
            "{words}"
        );
        let (s, words) = with(false, false);
        assert_eq!(s, Status::Warning);
        assert!(
            words.contains("neither RENAME_NOREPLACE nor hard links"),
            "{words}"
        );
        assert!(words.ends_with("; T"), "{words}");
    }
}
