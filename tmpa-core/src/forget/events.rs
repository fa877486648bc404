//! Erasing a user's usage events from one day: their loose files, their lines of
//! `_compacted.json` (rewritten through the compactor's writer and read back), and the
//! day's summary cache.

use super::*;

/// Erases the user's events from one day directory: loose files, then `_compacted.json`
/// (rewritten and read back), then the day's summary cache.
pub(super) fn erase_day(
    dir: &Dir,
    day: Day,
    user: &UserId,
    report: &mut ForgetReport,
) -> Result<()> {
    let mut changed = false;
    for name in event_names(dir)? {
        match crate::day::read_loose_stamped(dir, &name) {
            Ok((event, _)) if event.user_id() == user.as_str() => {
                if !erase(dir, &name, Entry::File)? {
                    continue;
                }
                report.event_files.push(dir.join(&name));
                report.events_erased += 1;
                changed = true;
            }
            Ok(_) => {}
            Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => report.unreadable_events.push(dir.join(&name)),
        }
    }
    if changed {
        dir.sync()?;
    }
    if let Some(erased) = rewrite_compacted(dir, day, user)? {
        report.compacted_rewritten.push(dir.join(COMPACTED_NAME));
        report.events_erased += erased;
        changed = true;
    }
    if (changed || summary_names(dir, user)) && erase(dir, OsStr::new(SUMMARY_NAME), Entry::File)? {
        dir.sync()?;
        report.summaries_removed.push(dir.join(SUMMARY_NAME));
    }
    if changed {
        // What this process keeps of the day is recomputed from the files.
        crate::incremental::forget(dir)?;
    }
    Ok(())
}

/// Rewrites the day's `_compacted.json` without the user's events when it holds any:
/// through the compactor's writer (atomic, fsynced), then read back from the disk and
/// compared byte for byte. Returns how many events were erased (`None`: none were there).
pub(super) fn rewrite_compacted(dir: &Dir, day: Day, user: &UserId) -> Result<Option<u64>> {
    let path = dir.join(COMPACTED_NAME);
    let Some((file, _)) = open_compacted(dir)? else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(file, COMPACTED_BYTES_MAX + 1),
        &mut bytes,
    )
    .map_err(|e| Error::io("read", &path, e))?;
    // Strict: a damaged day cannot be rewritten without losing what its damaged lines
    // held (other users' events among them).
    let events = crate::compacted::parse_compacted(&bytes, &path, day)?;
    let before = events.len();
    let kept: Vec<_> = events
        .into_iter()
        .filter(|e| e.user_id() != user.as_str())
        .collect();
    let erased = (before - kept.len()) as u64;
    if erased == 0 {
        return Ok(None);
    }
    crate::compacted::write_compacted(dir, day, &kept)?;
    let Some((disk, _)) = open_compacted(dir)? else {
        return Err(Error::NotForgotten {
            path,
            reason: "the rewritten day vanished before it was read back".into(),
        });
    };
    let mut back = ReadBack::new(std::io::BufReader::new(disk));
    crate::compacted::write_compacted_to(&mut back, day, &kept)
        .map_err(|e| Error::io("read back", &path, e))?;
    if !back
        .finish()
        .map_err(|e| Error::io("read back", &path, e))?
    {
        return Err(Error::NotForgotten {
            path,
            reason: "the rewritten day does not read back as written (the disk may be \
                     failing; call again)"
                .into(),
        });
    }
    Ok(Some(erased))
}

/// Whether the day's `_summary.json` names the user (or cannot be read, so might).
pub(super) fn summary_names(dir: &Dir, user: &UserId) -> bool {
    match dir.read(SUMMARY_NAME, SUMMARY_BYTES_MAX) {
        Ok((bytes, _)) => serde_json::from_slice::<serde_json::Value>(&bytes).map_or(true, |v| {
            v.get("by_user")
                .and_then(|b| b.get(user.as_str()))
                .is_some()
        }),
        Err(e) => e.io_kind() != std::io::ErrorKind::NotFound,
    }
}
