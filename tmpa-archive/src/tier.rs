//! Where a batch of sessions is archived: the user's local `archive/` directory or the
//! object store `tmpa.toml` names. The batch pipeline in `lib.rs` (archive and verify
//! each source, then dispose of the verified ones through the one delete step) is the
//! same for both; only the four things here differ: how one source is archived and
//! verified, on how many threads, what then holds its data (the receipt's `held_by` and
//! proof), and how a copy is taken back when its source changed after all.

use tmpa_core::maintenance::{Dir, map_ordered, map_ordered_on, path_text};
use tmpa_core::{SessionId, UserId};
use tmpa_maint::Proof;

use crate::session::{self, Options, Prepared};
use crate::store::{self, SourceKind, StoreRun};

/// Sessions in flight at once to a store: its latency, not the CPU, bounds a batch
/// (their bytes in memory are bounded by [`store::IN_FLIGHT_BYTES_MAX`]).
const STORE_THREADS: usize = 8;

/// Where archives go.
pub(crate) enum Tier<'a> {
    /// `chat_history/{user}/archive/`, held by descriptor; `None` in a dry run when it
    /// does not exist yet.
    Local(Option<Dir>),
    /// The object store.
    Store(&'a StoreRun),
}

impl Tier<'_> {
    /// `f` over the batch, in order: on every core for local archives (gzip dominates),
    /// on [`STORE_THREADS`] for a store (its latency does).
    pub(crate) fn map<T, R>(&self, batch: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R>
    where
        T: Sync,
        R: Send,
    {
        match self {
            Tier::Local(_) => map_ordered(batch, f),
            Tier::Store(_) => map_ordered_on(STORE_THREADS, batch, f),
        }
    }

    /// Archives the file `name` of `dir` as `user`'s `id`, and verifies it: never
    /// deletes, never overwrites.
    pub(crate) fn archive(
        &self,
        (dir, kind): (&Dir, SourceKind),
        name: &str,
        (user, id): (&UserId, &SessionId),
        opts: Options,
    ) -> Prepared {
        match self {
            Tier::Local(archive) => {
                session::archive_one(dir, name, archive.as_ref(), &archive_name(id), opts)
            }
            Tier::Store(sr) => store::archive_one(dir, name, (user, id), kind, sr, opts),
        }
    }

    /// What holds the data of a verified source, as its receipt line says: where (a
    /// path or an object's URL) and how that was verified.
    pub(crate) fn holder(
        &self,
        sources: &Dir,
        (user, id): (&UserId, &SessionId),
        p: &Prepared,
    ) -> (String, Proof) {
        match self {
            Tier::Local(archive) => {
                let name = archive_name(id);
                // In a dry run the directory may not exist yet: where it would be.
                let path = archive.as_ref().map_or_else(
                    || sources.path().with_file_name("archive").join(&name),
                    |a| a.join(&name),
                );
                (
                    path_text(&path),
                    Proof::ArchiveReadBack {
                        user: user.to_string(),
                        archive_bytes: p.archive_bytes.unwrap_or(0),
                    },
                )
            }
            Tier::Store(_) => {
                let object = p.object.clone().unwrap_or_default();
                (
                    object.url,
                    Proof::StoreReadBack {
                        user: user.to_string(),
                        object_bytes: object.bytes.unwrap_or(0),
                        etag: object.etag,
                        version: object.version,
                        object_sha256: object.sha256.unwrap_or_default(),
                    },
                )
            }
        }
    }

    /// Undoes this run's copy of a source that changed after it was verified (kept):
    /// the archive file it wrote, or the object it put (only that very version).
    pub(crate) fn take_back(&self, (user, id): (&UserId, &SessionId), p: &Prepared) {
        match self {
            Tier::Local(Some(archive)) => p.take_back(archive, &archive_name(id)),
            Tier::Local(None) => {}
            Tier::Store(sr) => {
                if p.wrote_object
                    && let Some(etag) = p.object.as_ref().and_then(|o| o.etag.as_deref())
                {
                    let _ = sr.store.delete_own(&sr.store.key(user, id), etag);
                }
            }
        }
    }
}

/// A session's local archive: `{session}.json.gz`.
fn archive_name(id: &SessionId) -> String {
    format!("{id}.json.gz")
}
