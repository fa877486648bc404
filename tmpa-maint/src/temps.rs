//! The rule the deleting programs share for a file with a temporary of its name beside it
//! (`evt_a.json` and `evt_a.json.tmp.42`): the file is not deleted while the temporary is
//! there. The temporary is a write of that file that died or is going on; deleting the
//! file would make the temporary an orphan (tmpa-tmpclean keeps those, exit 1), and
//! renaming the orphan onto the final name, by hand, could put a torn or stale copy in
//! front of what the file's data became (an archive, `_compacted.json`). tmpa-tmpclean
//! removes a stale temporary while its final file is there; the next run then deletes
//! the file.

use std::collections::HashSet;
use std::ffi::OsString;

use tmpa_core::maintenance::{Dir, temp_final_name};

/// The final names of the temporaries in `dir`, listed now.
///
/// # Errors
/// [`tmpa_core::Error::Io`] naming the directory when it cannot be listed.
pub fn finals_with_temporaries(dir: &Dir) -> tmpa_core::Result<HashSet<OsString>> {
    let mut finals = HashSet::new();
    for e in dir.entries()? {
        if let Some(f) = temp_final_name(&e?.name) {
            finals.insert(f.to_os_string());
        }
    }
    Ok(finals)
}
