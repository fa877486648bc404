//! Where archives are: the tree's own archive directories ([`LocalTier`]) or the object
//! store `tmpa.toml` names ([`StoreTier`]). The pipeline (`pipeline.rs`) is the same
//! for both; a tier says only how to look at, read, create and take back one archive, at
//! how many threads, and what the receipt's proof is. Nothing else in tmpa-archive asks
//! which tier it has.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use tmpa_core::maintenance::store::{ObjectKey, PutNew, Removal};
use tmpa_core::maintenance::{
    AtomicFile, Dir, IndexEntry, NOTIFICATION_ARCHIVE_BYTES_MAX, NOTIFICATION_ARCHIVE_DIR, Stamp,
    archive_file_name, archive_name_of_index, archive_names, path_text, read_archive, root_dir,
    version_of_dir, version_rel,
};
use tmpa_core::{Error, Root, SessionId, UserId};
use tmpa_maint::{Deletion, Doomed, Outcome, Proof, Run};

use crate::report::StoredObject;
use crate::store::{IN_FLIGHT_BYTES_MAX, InFlight, StoreRun};

/// Where one archive is (or goes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// A file of the tree: its directory (relative to the root) and its name.
    Local {
        /// The directory, relative to the root.
        dir: PathBuf,
        /// The file's name.
        name: String,
    },
    /// An object of the store.
    Store(ObjectKey),
}

impl Place {
    /// The version of a session's archive this place is (1 at the user's level, `n` in
    /// `versions/{n}/`); `None` for a notification archive's object.
    pub(crate) fn version(&self) -> Option<u32> {
        match self {
            Place::Local { dir, .. } => {
                let last = dir.file_name()?.to_str()?;
                Some(version_of_dir(last).unwrap_or(1))
            }
            Place::Store(key) => key.version(),
        }
    }
}

/// What a tier says of an archive it holds.
#[derive(Clone, Debug, Default)]
pub(crate) struct Info {
    /// Its size in bytes.
    pub(crate) size: u64,
    /// Its ETag (the store's; `None` locally).
    pub(crate) etag: Option<String>,
    /// Its version, on a versioned bucket.
    pub(crate) version: Option<String>,
    /// Its identity (a local file).
    pub(crate) stamp: Option<Stamp>,
}

impl Info {
    /// Whether `other` (what a read answered) is the very archive `self` describes (what
    /// a create answered): the same ETag, or the same inode.
    pub(crate) fn same_archive(&self, other: &Info) -> Result<(), String> {
        if let (Some(a), Some(b)) = (&self.etag, &other.etag)
            && a != b
        {
            return Err(format!(
                "was stored with ETag {a} but reads back with ETag {b}"
            ));
        }
        if let (Some(a), Some(b)) = (&self.stamp, &other.stamp)
            && !a.same_inode(b)
        {
            return Err("was replaced by another file right after it was written".into());
        }
        Ok(())
    }
}

/// What [`Tier::create`] did.
#[derive(Debug)]
pub(crate) enum Created {
    /// The archive was created, with this identity.
    New(Info),
    /// Something was already there: nothing was written.
    Exists,
}

/// What an archive holds, for the receipt's proof.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Holds {
    /// A chat session (one version).
    Session,
    /// This many notifications and their acks.
    Notifications(u64),
}

/// An archive the pipeline found or made, as the receipt and the report name it.
#[derive(Clone, Debug)]
pub(crate) struct Held {
    /// Where it is.
    pub(crate) place: Place,
    /// Where it is, in words: a path or an object's URL.
    pub(crate) shown: String,
    /// What the tier said of it when it was read back.
    pub(crate) info: Info,
    /// SHA-256 of its bytes as read back.
    pub(crate) sha256: String,
    /// What it holds.
    pub(crate) holds: Holds,
    /// This run created it (what the create answered): it may be taken back.
    pub(crate) written: Option<Info>,
}

impl Held {
    /// The object, as the report shows it, when this archive is one (in a store).
    pub(crate) fn object(&self) -> Option<StoredObject> {
        let Place::Store(_) = self.place else {
            return None;
        };
        // Read back (found, or written): its size; a dry run's new object has none yet.
        let read = !self.sha256.is_empty();
        Some(StoredObject {
            url: self.shown.clone(),
            bytes: read.then_some(self.info.size),
            etag: self.info.etag.clone(),
            version: self.info.version.clone(),
            sha256: read.then(|| self.sha256.clone()),
        })
    }
}

/// What [`Tier::take_back`] did with an archive this run made.
#[derive(Debug)]
pub(crate) enum TakenBack {
    /// Removed.
    Removed,
    /// Left where it is, and why (not the archive this run made any more, or the tier
    /// cannot remove only that one).
    Left(String),
}

/// A place archives are kept.
pub(crate) trait Tier: Sync {
    /// Where version `n` of `user`'s `session` is kept here (docs/FORMAT.md "Archived
    /// session").
    fn session(&self, user: &UserId, session: &SessionId, n: u32) -> Place;
    /// Where the archive `name` of `user`'s notifications is kept here.
    fn notifications(&self, user: &UserId, name: &str) -> Place;
    /// The names of `user`'s notification archives kept here.
    fn notification_archives(&self, user: &UserId) -> tmpa_core::Result<Vec<String>>;
    /// The index of the notification archive at `place` (only its first member where the
    /// tier can read a part), checked against the digest its name carries; `None` when it
    /// vanished.
    fn notification_index(&self, place: &Place) -> tmpa_core::Result<Option<Vec<IndexEntry>>>;
    /// Where `place` is, as reports and receipts name it (a path or a URL).
    fn shown(&self, place: &Place) -> String;
    /// What is at `place`, read whole if at most `bytes_max` bytes.
    fn read(&self, place: &Place, bytes_max: u64) -> tmpa_core::Result<Option<(Vec<u8>, Info)>>;
    /// Creates `place` with `bytes` (a local file with permission bits `mode`), never
    /// replacing anything: a temporary renamed without replacing, or a conditional put.
    fn create(&self, place: &Place, bytes: Vec<u8>, mode: u32) -> tmpa_core::Result<Created>;
    /// Makes an archive an earlier run wrote durable before a deletion relies on it.
    fn make_durable(&self, place: &Place) -> tmpa_core::Result<()>;
    /// The receipt's proof for files whose data `held` holds.
    fn proof(&self, user: &UserId, held: &Held) -> Proof;
    /// Removes the archive `held` that this run created, whose source (`source`, a
    /// file of the tree) changed after it was verified and stays: only that very
    /// archive, never another that took its place.
    fn take_back(&self, run: &mut Run, user: &UserId, held: &Held, source: &str) -> TakenBack;
    /// Units in flight at once.
    fn threads(&self) -> usize;
    /// Notes `e` when it is a failure of the tier itself (not of one archive): after it,
    /// [`Tier::untried`] says why nothing more is tried.
    fn note(&self, e: &Error);
    /// Why no more is tried in this run, once the tier failed.
    fn untried(&self) -> Option<String>;
}

/// The tiers of a run: the tree's archive directories always (they are read, and written
/// when no store is configured), and the store when one is.
pub(crate) struct Tiers<'a> {
    pub(crate) local: LocalTier,
    pub(crate) store: Option<StoreTier<'a>>,
    /// The bytes of archives held in memory at once, whatever the tier.
    pub(crate) in_flight: InFlight,
}

impl<'a> Tiers<'a> {
    /// The tiers of `root`, writing to `store` when there is one.
    pub(crate) fn new(root: &Root, store: Option<&'a StoreRun>) -> Tiers<'a> {
        Tiers {
            local: LocalTier { root: root.clone() },
            store: store.map(|run| StoreTier { run }),
            in_flight: InFlight::new(IN_FLIGHT_BYTES_MAX),
        }
    }

    /// The tier new archives go to.
    pub(crate) fn write(&self) -> &dyn Tier {
        match &self.store {
            Some(s) => s,
            None => &self.local,
        }
    }

    /// The tier that holds `place`.
    pub(crate) fn of(&self, place: &Place) -> &dyn Tier {
        match (place, &self.store) {
            (Place::Store(_), Some(s)) => s,
            (Place::Store(_), None) => unreachable!("an object's place without a store"),
            (Place::Local { .. }, _) => &self.local,
        }
    }

    /// `f` over `items`, in order, on as many threads as the write tier wants.
    pub(crate) fn map<T: Sync, R: Send>(&self, items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
        tmpa_core::maintenance::map_ordered_on(self.write().threads(), items, f)
    }
}

/// The tree's archive directories (`chat_history/{user}/archive/...`,
/// `notifications/{user}/archive/`), reached by descriptor from the root.
pub(crate) struct LocalTier {
    root: Root,
}

impl LocalTier {
    fn parts(place: &Place) -> (&Path, &str) {
        match place {
            Place::Local { dir, name } => (dir, name),
            Place::Store(_) => unreachable!("an object is not a local place"),
        }
    }

    fn open(&self, dir: &Path) -> tmpa_core::Result<Option<Dir>> {
        crate::open_if_any(&self.root, dir)
    }
}

impl Tier for LocalTier {
    fn session(&self, user: &UserId, session: &SessionId, n: u32) -> Place {
        Place::Local {
            dir: Path::new("chat_history")
                .join(user.as_str())
                .join("archive")
                .join(version_rel(n)),
            name: archive_file_name(session),
        }
    }

    fn notifications(&self, user: &UserId, name: &str) -> Place {
        Place::Local {
            dir: notification_dir(user),
            name: name.to_owned(),
        }
    }

    fn notification_archives(&self, user: &UserId) -> tmpa_core::Result<Vec<String>> {
        match self.open(&notification_dir(user))? {
            Some(d) => archive_names(&d),
            None => Ok(Vec::new()),
        }
    }

    fn notification_index(&self, place: &Place) -> tmpa_core::Result<Option<Vec<IndexEntry>>> {
        let (dir, name) = Self::parts(place);
        let Some(d) = self.open(dir)? else {
            return Ok(None);
        };
        // Only the first member is decompressed.
        let index = match d.open_read(name) {
            Ok(f) => read_archive(f, &d.join(name), |_| false, |_| false)?,
            Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        checked_index(index, name, &d.join(name)).map(Some)
    }

    fn shown(&self, place: &Place) -> String {
        let (dir, name) = Self::parts(place);
        path_text(&self.root.path().join(dir).join(name))
    }

    fn read(&self, place: &Place, bytes_max: u64) -> tmpa_core::Result<Option<(Vec<u8>, Info)>> {
        let (dir, name) = Self::parts(place);
        let Some(d) = self.open(dir)? else {
            return Ok(None);
        };
        match d.read(name, bytes_max) {
            Ok((bytes, meta)) => Ok(Some((
                bytes,
                Info {
                    size: meta.stamp.size,
                    stamp: Some(meta.stamp),
                    ..Info::default()
                },
            ))),
            Err(e) if e.io_kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn create(&self, place: &Place, bytes: Vec<u8>, mode: u32) -> tmpa_core::Result<Created> {
        let (dir, name) = Self::parts(place);
        // New directories (archive/, archive/versions/{n}/) take their parent's owner.
        let d = root_dir(&self.root).create_dir_all(dir)?;
        match AtomicFile::write_new_in(&d, OsStr::new(name), &bytes, mode & 0o777) {
            Ok(()) => {}
            Err(e) if e.io_kind() == std::io::ErrorKind::AlreadyExists => {
                return Ok(Created::Exists);
            }
            Err(e) => return Err(e),
        }
        let meta = d.stat(name)?.ok_or_else(|| {
            d.error(
                "stat",
                name,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        })?;
        Ok(Created::New(Info {
            size: meta.stamp.size,
            stamp: Some(meta.stamp),
            ..Info::default()
        }))
    }

    fn make_durable(&self, place: &Place) -> tmpa_core::Result<()> {
        let (dir, name) = Self::parts(place);
        let Some(d) = self.open(dir)? else {
            return Ok(());
        };
        d.open_read(name)?
            .sync_all()
            .map_err(|e| Error::io("fsync", d.join(name), e))?;
        d.sync()
    }

    fn proof(&self, user: &UserId, held: &Held) -> Proof {
        match held.holds {
            Holds::Session => Proof::ArchiveReadBack {
                user: user.to_string(),
                archive_bytes: held.info.size,
            },
            Holds::Notifications(notifications) => Proof::NotificationArchive {
                user: user.to_string(),
                archive_bytes: held.info.size,
                notifications,
            },
        }
    }

    fn take_back(&self, run: &mut Run, user: &UserId, held: &Held, source: &str) -> TakenBack {
        let (dir, name) = Self::parts(&held.place);
        let Some(stamp) = held.written.as_ref().and_then(|w| w.stamp) else {
            return TakenBack::Left("not written by this run".into());
        };
        let d = match self.open(dir) {
            Ok(Some(d)) => d,
            Ok(None) => return TakenBack::Left("gone".into()),
            Err(e) => return TakenBack::Left(e.chain()),
        };
        let doomed = Doomed {
            dir: &d,
            name: name.into(),
            stamp,
            line: Deletion {
                file: held.shown.clone(),
                bytes: stamp.size,
                sha256: held.sha256.clone(),
                stamp,
                held_by: source.to_owned(),
                proof: Proof::TakenBack {
                    user: user.to_string(),
                },
            },
            lease: None,
        };
        // The one delete step: receipt line, check, move aside, check, unlink.
        match run.take_back(vec![doomed]) {
            Err(e) => TakenBack::Left(e.chain()),
            Ok(disposed) => match disposed.split() {
                (outcomes, Ok(())) => match outcomes.into_iter().next() {
                    Some(Outcome::Deleted) => TakenBack::Removed,
                    Some(Outcome::Kept(k)) => TakenBack::Left(k.words()),
                    Some(Outcome::Failed(e)) => TakenBack::Left(e.chain()),
                    Some(Outcome::WouldDelete | Outcome::Left) | None => {
                        TakenBack::Left("not removed".into())
                    }
                },
                (_, Err(e)) => TakenBack::Left(e.chain()),
            },
        }
    }

    fn threads(&self) -> usize {
        // gzip dominates: every core.
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
    }

    fn note(&self, _e: &Error) {}

    fn untried(&self) -> Option<String> {
        None
    }
}

/// A user's notification archives in the tree, relative to the root.
fn notification_dir(user: &UserId) -> PathBuf {
    Path::new("notifications")
        .join(user.as_str())
        .join(NOTIFICATION_ARCHIVE_DIR)
}

/// `index`, when it is the one the archive's name `name` promises (its digest).
fn checked_index(
    index: Vec<IndexEntry>,
    name: &str,
    shown: &Path,
) -> tmpa_core::Result<Vec<IndexEntry>> {
    if archive_name_of_index(&index) != name {
        return Err(Error::Corrupt {
            path: shown.to_path_buf(),
            reason: "its index is not the one its name's digest promises".into(),
        });
    }
    Ok(index)
}

/// Units in flight at once to a store: its latency, not the CPU, bounds a batch (their
/// bytes in memory are bounded by [`crate::store::IN_FLIGHT_BYTES_MAX`]).
const STORE_THREADS: usize = 8;

/// The object store of the run.
pub(crate) struct StoreTier<'a> {
    pub(crate) run: &'a StoreRun,
}

impl StoreTier<'_> {
    fn key(place: &Place) -> &ObjectKey {
        match place {
            Place::Store(key) => key,
            Place::Local { .. } => unreachable!("a local place is not an object"),
        }
    }
}

impl Tier for StoreTier<'_> {
    fn session(&self, user: &UserId, session: &SessionId, n: u32) -> Place {
        Place::Store(self.run.store.version_key(user, session, n))
    }

    fn notifications(&self, user: &UserId, name: &str) -> Place {
        Place::Store(self.run.store.notification_key(user, name))
    }

    fn notification_archives(&self, user: &UserId) -> tmpa_core::Result<Vec<String>> {
        self.run.store.list_notification_archives(user)
    }

    fn notification_index(&self, place: &Place) -> tmpa_core::Result<Option<Vec<IndexEntry>>> {
        let key = Self::key(place);
        let shown = PathBuf::from(self.run.store.object_url(key));
        // An object is read whole: the client has no ranged read.
        let Some((bytes, _)) = self.run.store.get(key, NOTIFICATION_ARCHIVE_BYTES_MAX)? else {
            return Ok(None);
        };
        let index = read_archive(&bytes[..], &shown, |_| false, |_| false)?;
        let name = shown
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        checked_index(index, &name, &shown).map(Some)
    }

    fn shown(&self, place: &Place) -> String {
        self.run.store.object_url(Self::key(place))
    }

    fn read(&self, place: &Place, bytes_max: u64) -> tmpa_core::Result<Option<(Vec<u8>, Info)>> {
        Ok(self
            .run
            .store
            .get(Self::key(place), bytes_max)?
            .map(|(bytes, i)| {
                (
                    bytes,
                    Info {
                        size: i.size,
                        etag: i.etag,
                        version: i.version,
                        stamp: None,
                    },
                )
            }))
    }

    fn create(&self, place: &Place, bytes: Vec<u8>, _mode: u32) -> tmpa_core::Result<Created> {
        let size = bytes.len() as u64;
        Ok(match self.run.store.put_new(Self::key(place), bytes)? {
            PutNew::Exists => Created::Exists,
            PutNew::Created { etag, version } => Created::New(Info {
                size,
                etag,
                version,
                stamp: None,
            }),
        })
    }

    fn make_durable(&self, _place: &Place) -> tmpa_core::Result<()> {
        // A store's put is durable when it answers.
        Ok(())
    }

    fn proof(&self, user: &UserId, held: &Held) -> Proof {
        Proof::StoreReadBack {
            user: user.to_string(),
            object_bytes: held.info.size,
            etag: held.info.etag.clone(),
            version: held.info.version.clone(),
            object_sha256: held.sha256.clone(),
        }
    }

    fn take_back(&self, _run: &mut Run, _user: &UserId, held: &Held, _source: &str) -> TakenBack {
        let Some(written) = &held.written else {
            return TakenBack::Left("not written by this run".into());
        };
        let Some(etag) = &written.etag else {
            return TakenBack::Left("the store gave no ETag to tell it by".into());
        };
        let key = Self::key(&held.place);
        match self
            .run
            .store
            .delete_own(key, etag, written.version.as_deref())
        {
            Ok(Removal::Deleted) => TakenBack::Removed,
            Ok(Removal::NotOurs) => {
                TakenBack::Left("another object has its key now (not removed)".into())
            }
            Ok(Removal::Unsupported(why)) => TakenBack::Left(format!(
                "{why}: left in the store (an older copy of data that stays live; delete it by hand if unwanted)"
            )),
            Err(e) => {
                self.note(&e);
                TakenBack::Left(e.chain())
            }
        }
    }

    fn threads(&self) -> usize {
        STORE_THREADS
    }

    fn note(&self, e: &Error) {
        self.run.note(e);
    }

    fn untried(&self) -> Option<String> {
        self.run.untried()
    }
}
