//! Removing what a forget names: the one place it deletes by name.

use super::*;

/// What [`erase`] removes.
#[derive(Clone, Copy, Debug)]
pub(super) enum Entry {
    /// A file (or any entry that is not a directory).
    File,
    /// An empty directory.
    EmptyDir,
}

/// Removes the entry `name` of `dir`: `Ok(true)` when it was there, `Ok(false)` when it
/// was already gone (a forget run again after a kill). The one place a forget deletes by
/// name (see clippy.toml): what it names is the forgotten data itself, whatever holds the
/// name now (everything below the user's directories, an event read and found to be the
/// user's, whose id no other content may take), and the maintenance locks the forget
/// holds keep the programs from writing any of it back meanwhile.
#[allow(
    clippy::disallowed_methods,
    reason = "forgetting erases the user's data by name, under the maintenance locks"
)]
pub(super) fn erase(dir: &Dir, name: &OsStr, what: Entry) -> Result<bool> {
    let removed = match what {
        Entry::File => dir.unlink(name),
        Entry::EmptyDir => dir.remove_dir(name),
    };
    match removed {
        Ok(()) => Ok(true),
        Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Deletes the non-directory entries of `dir` that `pick` names, then fsyncs `dir`;
/// returns their paths. One already gone is not an error.
pub(super) fn remove_named(dir: &Dir, pick: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>> {
    let names = dir.names(|n| n.to_str().is_some_and(&pick))?;
    let mut out = Vec::new();
    for name in names {
        if dir.stat(&name)?.is_some_and(|m| m.kind == Kind::Directory) {
            continue;
        }
        if erase(dir, &name, Entry::File)? {
            out.push(dir.join(&name));
        }
    }
    if !out.is_empty() {
        dir.sync()?;
    }
    Ok(out)
}

/// Deletes everything below `dir` (never following a symlink: one is deleted as an
/// entry), each directory fsynced after its entries went; pushes each file's path.
pub(super) fn remove_tree(dir: &Dir, depth: usize, removed: &mut Vec<PathBuf>) -> Result<()> {
    if depth > DEPTH_MAX {
        return Err(Error::NotForgotten {
            path: dir.path().to_path_buf(),
            reason: format!("deeper than {DEPTH_MAX} directories (not walked)"),
        });
    }
    let mut any = false;
    for entry in dir.entries()? {
        let entry = entry?;
        let kind = match entry.kind {
            Some(k) => Some(k),
            None => dir.stat(&entry.name)?.map(|m| m.kind),
        };
        match kind {
            None => continue,
            Some(Kind::Directory) => {
                let sub = match dir.open_dir(&entry.name) {
                    Ok(d) => d,
                    Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                remove_tree(&sub, depth + 1, removed)?;
                drop(sub);
                any |= erase(dir, &entry.name, Entry::EmptyDir)?;
            }
            Some(_) => {
                if erase(dir, &entry.name, Entry::File)? {
                    any = true;
                    removed.push(dir.join(&entry.name));
                }
            }
        }
    }
    if any {
        dir.sync()?;
    }
    Ok(())
}
