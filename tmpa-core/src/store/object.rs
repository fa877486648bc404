//! The store's vocabulary, shared by the client and its local-directory backend: an
//! object's key ([`ObjectKey`]), what the store says of it ([`ObjectInfo`]), and what a
//! put or a delete did ([`PutNew`], [`Removal`]).

use object_store::path::Path as ObjectPath;

use crate::versions::version_of_dir;

/// What the store says about one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its size in bytes.
    pub size: u64,
    /// Its ETag, when the store gives one.
    pub etag: Option<String>,
    /// Its version, on a versioned bucket.
    pub version: Option<String>,
}

/// What [`Store::put_new`](super::client::Store::put_new) did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutNew {
    /// The object was created with this ETag and version.
    Created {
        /// The ETag the store answered.
        etag: Option<String>,
        /// The version, on a versioned bucket.
        version: Option<String>,
    },
    /// An object was already there: nothing was written.
    Exists,
}

/// An archive object's key: `{prefix}/{user}/{session}.json.gz` (a session's first
/// version), `{prefix}/{user}/versions/{n}/{session}.json.gz` (its version `n`), or
/// `{prefix}/{user}/acked-{n}-{16 hex}.tar.gz` for notifications; each name one key
/// segment (characters S3 advises against are percent-encoded; a `file://` store uses
/// the names as they are, one directory entry each).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectKey {
    pub(super) path: ObjectPath,
    pub(super) user: String,
    /// The directories between the user's and the name (`versions/{n}`), if any.
    pub(super) dirs: Vec<String>,
    pub(super) name: String,
}

impl ObjectKey {
    /// The version of a session's archive this key is ([`Store::version_key`](super::client::Store::version_key)); `None`
    /// for a notification archive's key.
    pub fn version(&self) -> Option<u32> {
        match self.dirs.as_slice() {
            [] => self.name.ends_with(".json.gz").then_some(1),
            [_, n] => version_of_dir(n),
            _ => None,
        }
    }

    pub(crate) fn user(&self) -> &str {
        &self.user
    }

    pub(crate) fn dirs(&self) -> &[String] {
        &self.dirs
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

/// What [`Store::delete_own`](super::client::Store::delete_own) did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removal {
    /// The object was exactly the one given (ETag, or version), and is deleted.
    Deleted,
    /// Another object is at the key, or none: nothing was deleted.
    NotOurs,
    /// This store (or this client for it) has no delete that acts on that very object
    /// only: nothing was deleted, for the reason given.
    Unsupported(String),
}
