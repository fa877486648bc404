//! One user's chat history through the pipeline (`pipeline.rs`): the old sessions, each a
//! [`SessionUnit`] (`session.rs`), then with `--migrate-local` the local archives, each a
//! [`MigrateUnit`] (`migrate.rs`), in batches between two receipt writes.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use tmpa_core::UserId;
use tmpa_core::maintenance::LocalVersions;
use tmpa_maint::Run;

use crate::migrate::MigrateUnit;
use crate::pipeline;
use crate::report::{Origin, Report};
use crate::session::{
    Listed, SessionUnit, UserSessions, admitted, local_archives, local_versions, old_sessions,
};
use crate::tier::Tiers;

/// Sessions handled between two receipt writes: bounds what a crash can leave archived but
/// not yet deleted (the next run completes those) and the memory of one batch.
const BATCH_MAX: usize = 256;

/// What the run asks of the sessions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Options {
    /// Sessions modified before this are archived.
    pub(crate) cutoff: SystemTime,
    /// gzip level, 0 to 9.
    pub(crate) level: u32,
    /// Also move the local archives to the store.
    pub(crate) migrate_local: bool,
}

/// Archives `user`'s old sessions (then, with `--migrate-local`, moves the user's local
/// archives to the store), reporting into `report`.
///
/// # Errors
/// A directory of the user that cannot be opened or listed, the store's listing, or a
/// receipt that cannot be written: the caller reports the user as not archived.
pub(crate) fn archive_user(
    run: &mut Run,
    tiers: &Tiers<'_>,
    user: &UserId,
    opts: Options,
    report: &mut Report,
    counted: &mut Listed,
) -> tmpa_core::Result<()> {
    let root = run.root().clone();
    let base = Path::new("chat_history").join(user.as_str());
    // Held by descriptor: a directory swapped for a symlink meanwhile cannot lead any
    // read, write or delete of this run out of the root.
    let sessions = crate::open_if_any(&root, &base.join("sessions"))?;
    let mut old = match &sessions {
        Some(dir) => old_sessions(dir, opts.cutoff, report, counted)?,
        None => Vec::new(),
    };
    if let Some(dir) = &sessions {
        old.retain(|(name, _, meta)| admitted(run, dir, name, meta));
    }
    let migrate = opts.migrate_local && tiers.store.is_some();
    if old.is_empty() && !migrate {
        return Ok(());
    }
    let local = match crate::open_if_any(&root, &base.join("archive"))? {
        Some(dir) => Some(LocalVersions::open(dir)?),
        None => None,
    };
    let stored = match &tiers.store {
        Some(s) if !old.is_empty() => match s.run.untried() {
            Some(_) => BTreeMap::new(),
            None => match s.run.store.later_versions(user) {
                Ok(v) => v,
                Err(e) => {
                    s.run.note(&e);
                    BTreeMap::new()
                }
            },
        },
        _ => BTreeMap::new(),
    };
    let ctx = UserSessions {
        user,
        sessions,
        local,
        stored,
        level: opts.level,
    };
    if let Some(dir) = &ctx.sessions {
        let units: Vec<SessionUnit<'_>> = old
            .into_iter()
            .map(|(name, id, meta)| SessionUnit {
                ctx: &ctx,
                dir,
                id,
                name,
                size: meta.stamp.size,
            })
            .collect();
        for chunk in units.chunks(BATCH_MAX) {
            let done = pipeline::archive(run, tiers, chunk)?;
            for (u, d) in chunk.iter().zip(done) {
                u.report(d, Origin::Sessions, report);
            }
        }
    }
    if migrate && let Some(local) = &ctx.local {
        let mut units = Vec::new();
        for (n, dir) in local_versions(local) {
            for (name, id, meta) in local_archives(dir, report)? {
                if admitted(run, dir, &name, &meta) {
                    units.push(MigrateUnit {
                        ctx: &ctx,
                        dir,
                        id,
                        n,
                        name,
                        size: meta.stamp.size,
                    });
                }
            }
        }
        for chunk in units.chunks(BATCH_MAX) {
            let done = pipeline::archive(run, tiers, chunk)?;
            for (u, d) in chunk.iter().zip(done) {
                u.report(d, Origin::Archive, report);
            }
        }
    }
    Ok(())
}
