//! Modes and owners of written files (docs/FORMAT.md "Temporaries"), as cron's root sees them: a replaced file
//! keeps its mode and owner; a new file and a new directory take the owner and group of
//! the directory they are made in, so the backend's user can still write there. They need
//! root (`support::prerequisite`).

mod support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use tmpa_core::{Event, Root};

/// The backend's user and group, as ids no real account is likely to have.
const BACKEND_UID: u32 = 4711;
const BACKEND_GID: u32 = 4712;

/// `Some(())` as root; see [`support::prerequisite`].
fn root() -> Option<()> {
    support::prerequisite(
        rustix::process::geteuid().is_root(),
        "ownership tests need root",
    )
}

fn owner(path: &Path) -> (u32, u32) {
    let m = fs::symlink_metadata(path).unwrap();
    (m.uid(), m.gid())
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// Root replacing a backend-owned 0600 file keeps its owner and mode; a new file in a
/// backend-owned directory becomes the backend's.
#[test]
fn replaced_file_keeps_owner_and_mode_new_file_takes_the_directory_owner() {
    let Some(()) = root() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(BACKEND_UID), Some(BACKEND_GID)).unwrap();

    let old = dir.path().join("old.json");
    fs::write(&old, b"old").unwrap();
    std::os::unix::fs::chown(&old, Some(BACKEND_UID + 1), Some(BACKEND_GID + 1)).unwrap();
    fs::set_permissions(&old, fs::Permissions::from_mode(0o600)).unwrap();
    tmpa_core::write(&old, b"new").unwrap();
    assert_eq!(fs::read(&old).unwrap(), b"new");
    assert_eq!(owner(&old), (BACKEND_UID + 1, BACKEND_GID + 1));
    assert_eq!(mode(&old), 0o600);

    let new = dir.path().join("new.json");
    tmpa_core::write(&new, b"x").unwrap();
    assert_eq!(owner(&new), (BACKEND_UID, BACKEND_GID));
    assert_eq!(mode(&new) & 0o600, 0o600, "the owner can read and write it");
    assert_eq!(mode(&new) & 0o022, 0, "nobody else can write it");
}

/// Recording an event as root into a backend-owned tree: the new day directory and the
/// event file (and the summary cache) belong to the backend.
#[test]
fn directories_and_events_made_by_root_belong_to_the_tree_owner() {
    let Some(()) = root() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("token_stats");
    fs::create_dir(&stats).unwrap();
    std::os::unix::fs::chown(&stats, Some(BACKEND_UID), Some(BACKEND_GID)).unwrap();
    let root = Root::open(dir.path()).unwrap();
    let e = Event::from_json(
        br#"{"id":"e1","ts":"2026-11-01T10:00:00Z","user_id":"u","model":"m",
            "prompt_tokens":1,"completion_tokens":2}"#,
    )
    .unwrap();
    let path = root.record_event(&e).unwrap();
    let day_dir = path.parent().unwrap();
    assert_eq!(owner(day_dir), (BACKEND_UID, BACKEND_GID));
    assert_eq!(owner(&path), (BACKEND_UID, BACKEND_GID));
    root.summary(e.day()).unwrap();
    let summary = day_dir.join(tmpa_core::maintenance::SUMMARY_NAME);
    assert_eq!(owner(&summary), (BACKEND_UID, BACKEND_GID));

    let file = root
        .write_file("token_stats/deep/er/x.json", b"{}")
        .unwrap();
    for p in [stats.join("deep"), stats.join("deep/er"), file.clone()] {
        assert_eq!(owner(&p), (BACKEND_UID, BACKEND_GID), "{}", p.display());
    }
}
