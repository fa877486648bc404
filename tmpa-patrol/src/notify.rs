//! Archived notifications: how many acknowledged notifications tmpa-archive holds in
//! `notifications/*/archive/`, for the `inbox_files` check (whose count is of the live
//! inbox entries only). Counted from the archives' names (`acked-{n}-{digest}.tar.gz`
//! says `n`): no archive is opened, and nothing is written.

use serde::Serialize;
use tmpa_core::Root;
use tmpa_core::maintenance::{Kind, NOTIFICATION_ARCHIVE_DIR, archive_count, root_dir};

use crate::{Check, Perf};

/// What the archives of notifications hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Archived {
    /// Archive files.
    pub archives: u64,
    /// Notifications in them (an interrupted run may have archived some twice).
    pub notifications: u64,
}

/// Sums the archives of every user's `notifications/{user}/archive/`; directories that
/// cannot be listed (or are symlinks, never followed) count as empty: the walk's
/// `directories` check reports them.
pub fn archived(root: &Root) -> Archived {
    let mut total = Archived::default();
    let Ok(users) = root_dir(root).open_dir("notifications") else {
        return total;
    };
    let Ok(entries) = users.entries() else {
        return total;
    };
    for user in entries.flatten() {
        if user.kind.is_some_and(|k| k != Kind::Directory) {
            continue;
        }
        let rel = std::path::Path::new(&user.name).join(NOTIFICATION_ARCHIVE_DIR);
        let Ok(dir) = users.open_dir(&rel) else {
            continue;
        };
        let Ok(names) = dir.entries() else {
            continue;
        };
        for n in names
            .flatten()
            .filter_map(|e| archive_count(e.name.to_str()?))
        {
            total.archives += 1;
            total.notifications += n;
        }
    }
    total
}

/// Adds the archived total to the `inbox_files` check: its detail and a perfdata item.
pub fn annotate(check: &mut Check, archived: &Archived) {
    check.detail.push_str(&format!(
        "; {} acknowledged notifications archived in {} archives (not counted)",
        archived.notifications, archived.archives
    ));
    check.perf.push(Perf {
        label: "notifications_archived",
        value: Some(archived.notifications as f64),
        uom: "",
        warn: None,
        crit: None,
    });
}
