//! Listing a user's archives in the store: sessions and their versions, notification
//! batches; each key decoded back to the names it stands for.

use super::*;

/// Most objects one listing returns (a user's archived sessions).
pub const LISTED_OBJECTS_MAX: usize = 1_000_000;

impl Store {
    /// The sessions archived in the store for `user`, each with its newest version
    /// (one listing of the user's prefix). Objects that are not `{session}.json.gz` with
    /// a valid session name, at the user's level or in a version directory, are left out.
    ///
    /// # Errors
    /// [`Error::Store`] naming the user's prefix; of kind [`StoreErrorKind::TooLarge`]
    /// past [`LISTED_OBJECTS_MAX`] objects.
    pub fn list_sessions(&self, user: &UserId) -> Result<BTreeMap<SessionId, u32>> {
        let mut out = BTreeMap::new();
        for rel in self.list_user(user, None)? {
            if let Some((id, n)) = session_version_of(&rel) {
                let newest = out.entry(id).or_insert(n);
                *newest = (*newest).max(n);
            }
        }
        Ok(out)
    }

    /// The versions after the first of every session of `user` in the store
    /// (`versions/{n}/{session}.json.gz`), ascending: one listing of the user's
    /// `versions/`, which holds only sessions that came back after their archival.
    ///
    /// # Errors
    /// As [`Store::list_sessions`].
    pub fn later_versions(&self, user: &UserId) -> Result<BTreeMap<SessionId, Vec<u32>>> {
        let mut out: BTreeMap<SessionId, Vec<u32>> = BTreeMap::new();
        for rel in self.list_user(user, Some(VERSIONS_DIR))? {
            if let Some((id, n)) = session_version_of(&rel).filter(|(_, n)| *n > 1) {
                out.entry(id).or_default().push(n);
            }
        }
        for v in out.values_mut() {
            v.sort_unstable();
            v.dedup();
        }
        Ok(out)
    }

    /// The names of the archives of acknowledged notifications in the store for `user`
    /// (`acked-{n}-{16 hex}.tar.gz`), sorted; other objects are left out.
    ///
    /// # Errors
    /// As [`Store::list_sessions`].
    pub fn list_notification_archives(&self, user: &UserId) -> Result<Vec<String>> {
        let mut out: Vec<String> = self
            .list_user(user, None)?
            .into_iter()
            .filter_map(|mut rel| {
                (rel.len() == 1 && crate::notify_archive::archive_count(&rel[0]).is_some())
                    .then(|| rel.remove(0))
            })
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The objects below the user's prefix (or its directory `sub`), each as its key
    /// segments below the user's prefix, decoded.
    fn list_user(&self, user: &UserId, sub: Option<&str>) -> Result<Vec<Vec<String>>> {
        let mut dir = self.user_dir(user);
        let shown = format!(
            "{}/{}/{}",
            self.url,
            PathPart::from(user.as_str()).as_ref(),
            sub.map(|s| format!("{s}/")).unwrap_or_default()
        );
        let inner = match &self.backend {
            Backend::Local(l) => return l.list(user.as_str(), sub, shown),
            Backend::Cloud { inner, .. } => inner,
        };
        let user_depth = dir.parts().count();
        if let Some(sub) = sub {
            dir = dir.join(PathPart::from(sub));
        }
        let fut = async {
            let mut out = Vec::new();
            let mut stream = inner.list(Some(&dir));
            let mut seen = 0usize;
            while let Some(meta) = stream.next().await {
                let meta = meta.map_err(|e| store_error("list", shown.clone(), e))?;
                seen += 1;
                if seen > LISTED_OBJECTS_MAX {
                    return Err(Error::Store {
                        op: "list",
                        url: shown.clone(),
                        kind: StoreErrorKind::TooLarge,
                        source: Some(format!("more than {LISTED_OBJECTS_MAX} objects").into()),
                    });
                }
                out.push(
                    meta.location
                        .parts()
                        .skip(user_depth)
                        .map(|p| percent_decode(p.as_ref()))
                        .collect(),
                );
            }
            Ok(out)
        };
        self.block_on(fut)
    }
}

/// Decodes the `%XX` escapes of a key segment.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The session and version a key below a user's prefix stands for: `[{session}.json.gz]`
/// is version 1, `[versions, {n}, {session}.json.gz]` version `n`.
fn session_version_of(rel: &[String]) -> Option<(SessionId, u32)> {
    match rel {
        [name] => Some((session_of_archive_name(OsStr::new(name))?, 1)),
        [dir, n, name] if dir == VERSIONS_DIR => Some((
            session_of_archive_name(OsStr::new(name))?,
            version_of_dir(n)?,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_escape_what_s3_advises_against_and_decode_back() {
        for name in ["plain", "a b", "50%", "x#y", "é", "a?b*c"] {
            let part = PathPart::from(name);
            assert_eq!(percent_decode(part.as_ref()), name, "{}", part.as_ref());
        }
        assert_eq!(percent_decode("%2E%2E"), "..");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
