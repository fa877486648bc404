//! The object-store client (feature `object-store`): Apache Arrow's `object_store` behind
//! a blocking API, on a tokio current-thread runtime that this type creates and owns, so
//! that no caller needs a runtime (and a caller inside one still works: the request then
//! runs on a thread of its own).
//!
//! What it promises:
//! - [`Store::put_new`] never replaces an object: a conditional put (`If-None-Match: *`,
//!   `PutMode::Create`) where the store has one; where it does not (the store answers
//!   "not implemented", or `AWS_CONDITIONAL_PUT=disabled`), a HEAD first, and
//!   [`Store::put_mode`] says so for the report.
//! - Every request has a time limit ([`ArchiveConfig::timeout`]; 5 s to connect) and
//!   transient failures (connection errors, timeouts, 5xx, 429) are retried
//!   [`RETRIES_MAX`] times with exponential backoff from 100 ms to 5 s, within
//!   [`RETRY_WINDOW`]. After that the error is [`StoreErrorKind::Unavailable`].
//! - Reads are bounded ([`Store::get`] refuses an object over its `bytes_max`).
//!
//! Not promised: that a store which silently ignores `If-None-Match` (some old
//! S3-compatible servers) refuses an overwrite. The HEAD that tmpa-archive makes before
//! each upload narrows that to a race with another writer of the same key.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::path::{Path as ObjectPath, PathPart};
use object_store::{
    BackoffConfig, ClientConfigKey, GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
    PutPayload, RetryConfig,
};

use object_store::client::{
    HttpClient, HttpConnector, HttpRequest, HttpRequestBody, ReqwestConnector,
};
use object_store::signer::{HeaderName, HeaderValue, Method, SignedUrlOptions, Signer};

mod delete;
mod list;

use super::config::{ArchiveConfig, StoreScheme, StoreUrl};
use super::credentials::Credentials;
use super::local::LocalStore;
pub use super::object::{ObjectInfo, ObjectKey, PutNew, Removal};
use crate::error::{Error, Result, StoreErrorKind};
use crate::names::{SessionId, UserId};
use crate::versions::{
    VERSIONS_DIR, archive_file_name, session_of_archive_name, version_of_dir, version_rel,
};
use delete::ConditionalDelete;
pub use list::LISTED_OBJECTS_MAX;

/// Retries of a failed request (transient failures only).
pub const RETRIES_MAX: usize = 3;
/// No retry starts later than this after the first attempt.
pub const RETRY_WINDOW: Duration = Duration::from_secs(120);
/// Time to establish a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How [`Store::put_new`] keeps from replacing an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PutGuard {
    /// A conditional put (`If-None-Match: *`): the store itself refuses to replace.
    Conditional,
    /// The store has no conditional put: a HEAD before the put (another writer of the
    /// same key between the two could be overwritten).
    HeadFirst,
}

impl PutGuard {
    /// In words, for reports.
    pub fn words(self) -> &'static str {
        match self {
            PutGuard::Conditional => "conditional put (If-None-Match: *): never overwrites",
            PutGuard::HeadFirst => {
                "no conditional put on this store: HEAD before each put (a concurrent writer of the same key could be overwritten)"
            }
        }
    }
}

/// Where the objects are: a cloud store through Arrow's client, or a directory through
/// the file layer (never following a symlink below the configured directory).
enum Backend {
    Cloud {
        inner: Arc<dyn ObjectStore>,
        paged: Arc<dyn PaginatedListStore>,
        /// S3: signs the conditional DELETE that `object_store` has no call for, sent by
        /// `http` ([`Store::delete_own`]). `None` for GCS and Azure.
        delete: Option<ConditionalDelete>,
    },
    Local(LocalStore),
}

/// A connection to the archive store of a root.
///
/// # Examples
/// ```
/// use tmpa_core::maintenance::store::Store;
/// use tmpa_core::{ArchiveConfig, SessionId, UserId};
/// let dir = tempfile::tempdir().unwrap();
/// let url = format!("file://{}", dir.path().display()).parse().unwrap();
/// let store = Store::open(&ArchiveConfig::for_url(url)).unwrap();
/// let key = store.key(&UserId::new("u1").unwrap(), &SessionId::new("s1").unwrap());
/// assert!(store.head(&key).unwrap().is_none());
/// assert!(matches!(store.put_new(&key, b"x".to_vec()).unwrap(), tmpa_core::maintenance::store::PutNew::Created { .. }));
/// assert!(matches!(store.put_new(&key, b"y".to_vec()).unwrap(), tmpa_core::maintenance::store::PutNew::Exists));
/// assert_eq!(store.get(&key, 10).unwrap().unwrap().0, b"x");
/// assert_eq!(store.object_url(&key), format!("file://{}/u1/s1.json.gz", dir.path().display()));
/// ```
pub struct Store {
    url: StoreUrl,
    base: ObjectPath,
    backend: Backend,
    head_first: AtomicBool,
    /// Set when the server answered 501 Not Implemented to a conditional put
    /// (`If-None-Match`): it has none, and `put_new` falls back to HEAD first.
    conditional_refused: Arc<AtomicBool>,
    /// Always `Some` until dropped.
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Store {
    fn drop(&mut self) {
        // Dropping a runtime waits for its blocking pool, which tokio forbids inside the
        // caller's own runtime: there, let it go without waiting (every request of this
        // store has completed by now).
        if let Some(rt) = self.rt.take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.url.to_string())
            .field("put_mode", &self.put_mode())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Sets up the client for `config` from the store's standard environment
    /// (credentials, region, endpoint). Makes no request.
    ///
    /// # Errors
    /// [`Error::Store`] of kind [`StoreErrorKind::Config`] naming the URL: a runtime or
    /// client that cannot be set up (missing region or credentials are found at the first
    /// request instead), or a `file://` directory that does not exist.
    pub fn open(config: &ArchiveConfig) -> Result<Store> {
        Store::open_with_retries(config, RETRIES_MAX)
    }

    /// [`Store::open`] with `retries` retries of a transient failure instead of
    /// [`RETRIES_MAX`] (a monitoring probe that must answer quickly).
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_with_retries(config: &ArchiveConfig, retries: usize) -> Result<Store> {
        Store::open_with(config, retries, &Credentials::default())
    }

    /// [`Store::open_with_retries`], with `credentials` over the environment's settings.
    ///
    /// # Errors
    /// As [`Store::open`]; also a configuration error naming a setting of `credentials`
    /// the scheme's client does not know (a misspelt name would otherwise be ignored).
    pub fn open_with(
        config: &ArchiveConfig,
        retries: usize,
        credentials: &Credentials,
    ) -> Result<Store> {
        let url = &config.url;
        let shown = url.to_string();
        let fail = |source: Box<dyn std::error::Error + Send + Sync>| Error::Store {
            op: "set up the client for",
            url: shown.clone(),
            kind: StoreErrorKind::Config,
            source: Some(source),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| fail(Box::new(e)))?;
        let _ctx = rt.enter();
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: retries,
            retry_timeout: RETRY_WINDOW,
        };
        let timeout = humantime_secs(config.timeout);
        let connect = humantime_secs(CONNECT_TIMEOUT);
        let cloud_url = format!("{}://{}", url.scheme().as_str(), url.bucket());
        let conditional_refused = Arc::new(AtomicBool::new(false));
        let watch = || WatchConditional {
            refused: conditional_refused.clone(),
        };
        let cloud = |s: Arc<dyn ObjectStore>, p: Arc<dyn PaginatedListStore>| Backend::Cloud {
            inner: s,
            paged: p,
            delete: None,
        };
        let unknown = |names: Vec<&str>| {
            fail(
                format!(
                    "{}: not a setting of this store's client (misspelt?)",
                    names.join(", ")
                )
                .into(),
            )
        };
        let (backend, base) = match url.scheme() {
            StoreScheme::S3 => {
                use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey as K};
                let (known, other) = credentials.keys::<K>("AWS_");
                if !other.is_empty() {
                    return Err(unknown(other));
                }
                let builder = known
                    .into_iter()
                    .fold(AmazonS3Builder::from_env(), |b, (k, v)| b.with_config(k, v))
                    .with_url(cloud_url)
                    .with_http_connector(watch())
                    .with_retry(retry)
                    .with_config(K::Client(ClientConfigKey::Timeout), timeout.clone())
                    .with_config(K::Client(ClientConfigKey::ConnectTimeout), connect.clone());
                // The conditional DELETE goes out through a client of the same options
                // (plain http allowed or not, timeouts), signed with the same credentials.
                let allow_http = builder
                    .get_config_value(&K::Client(ClientConfigKey::AllowHttp))
                    .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
                let s = Arc::new(builder.build().map_err(|e| fail(Box::new(e)))?);
                let options = object_store::ClientOptions::new()
                    .with_allow_http(allow_http)
                    .with_config(ClientConfigKey::Timeout, timeout)
                    .with_config(ClientConfigKey::ConnectTimeout, connect);
                let http = ReqwestConnector::default()
                    .connect(&options)
                    .map_err(|e| fail(Box::new(e)))?;
                let backend = Backend::Cloud {
                    inner: s.clone(),
                    paged: s.clone(),
                    delete: Some(ConditionalDelete { signer: s, http }),
                };
                (backend, prefix_path(url))
            }
            StoreScheme::Gcs => {
                use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey as K};
                let (known, other) = credentials.keys::<K>("GOOGLE_");
                if !other.is_empty() {
                    return Err(unknown(other));
                }
                let b = known
                    .into_iter()
                    .fold(GoogleCloudStorageBuilder::from_env(), |b, (k, v)| {
                        b.with_config(k, v)
                    });
                let s = Arc::new(
                    b.with_url(cloud_url)
                        .with_http_connector(watch())
                        .with_retry(retry)
                        .with_config(K::Client(ClientConfigKey::Timeout), timeout)
                        .with_config(K::Client(ClientConfigKey::ConnectTimeout), connect)
                        .build()
                        .map_err(|e| fail(Box::new(e)))?,
                );
                (cloud(s.clone(), s), prefix_path(url))
            }
            StoreScheme::Azure => {
                use object_store::azure::{AzureConfigKey as K, MicrosoftAzureBuilder};
                let (known, other) = credentials.keys::<K>("AZURE_");
                if !other.is_empty() {
                    return Err(unknown(other));
                }
                let b = known
                    .into_iter()
                    .fold(MicrosoftAzureBuilder::from_env(), |b, (k, v)| {
                        b.with_config(k, v)
                    });
                let s = Arc::new(
                    b.with_url(cloud_url)
                        .with_http_connector(watch())
                        .with_retry(retry)
                        .with_config(K::Client(ClientConfigKey::Timeout), timeout)
                        .with_config(K::Client(ClientConfigKey::ConnectTimeout), connect)
                        .build()
                        .map_err(|e| fail(Box::new(e)))?,
                );
                (cloud(s.clone(), s), prefix_path(url))
            }
            StoreScheme::File => {
                // Through the file layer: atomic, fsynced, never following a symlink
                // below the directory. The directory must exist (like a bucket); the
                // probe says so when it does not.
                let dir = url.file_dir().unwrap_or_default();
                (
                    Backend::Local(super::local::LocalStore::new(dir)),
                    prefix_path(url),
                )
            }
        };
        drop(_ctx);
        Ok(Store {
            url: url.clone(),
            base,
            backend,
            head_first: AtomicBool::new(false),
            conditional_refused,
            rt: Some(rt),
        })
    }

    /// The store's URL (scheme, bucket, prefix).
    pub fn url(&self) -> &StoreUrl {
        &self.url
    }

    /// How [`Store::put_new`] keeps from replacing objects (learnt at the first put).
    pub fn put_mode(&self) -> PutGuard {
        if self.head_first.load(Ordering::Relaxed) {
            PutGuard::HeadFirst
        } else {
            PutGuard::Conditional
        }
    }

    /// The key of a session's first archived version, `{prefix}/{user}/{session}.json.gz`.
    pub fn key(&self, user: &UserId, session: &SessionId) -> ObjectKey {
        self.version_key(user, session, 1)
    }

    /// The key of version `n` of a session's archive: [`Store::key`] for 1, else
    /// `{prefix}/{user}/versions/{n}/{session}.json.gz` (crate `versions` module).
    ///
    /// # Panics
    /// When `n` is 0 or above [`crate::maintenance::VERSION_MAX`].
    pub fn version_key(&self, user: &UserId, session: &SessionId, n: u32) -> ObjectKey {
        let name = archive_file_name(session);
        let dirs: Vec<String> = version_rel(n)
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        let mut path = self.user_dir(user);
        for d in &dirs {
            path = path.join(PathPart::from(d.as_str()));
        }
        ObjectKey {
            path: path.join(PathPart::from(name.as_str())),
            user: user.as_str().to_owned(),
            dirs,
            name,
        }
    }

    /// The key of an archive of a user's acknowledged notifications,
    /// `{prefix}/{user}/acked-{n}-{16 hex}.tar.gz`: beside the user's sessions, from which
    /// its name cannot be mistaken (they end in `.json.gz`).
    ///
    /// # Panics
    /// When `archive` is not such a name ([`crate::maintenance::archive_count`]).
    pub fn notification_key(&self, user: &UserId, archive: &str) -> ObjectKey {
        assert!(
            crate::notify_archive::archive_count(archive).is_some(),
            "{archive:?} is not the name of a notification archive"
        );
        ObjectKey {
            path: self.user_dir(user).join(PathPart::from(archive)),
            user: user.as_str().to_owned(),
            dirs: Vec::new(),
            name: archive.to_owned(),
        }
    }

    fn user_dir(&self, user: &UserId) -> ObjectPath {
        self.base.clone().join(PathPart::from(user.as_str()))
    }

    /// The object's URL, as reports and receipts name it: `s3://bucket/prefix/user/s.json.gz`.
    pub fn object_url(&self, key: &ObjectKey) -> String {
        let rel = key
            .path
            .prefix_match(&self.base)
            .map(|parts| {
                parts
                    .map(|p| p.as_ref().to_owned())
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .unwrap_or_else(|| key.path.to_string());
        format!("{}/{rel}", self.url)
    }

    /// Runs `fut` on this store's runtime, from any thread.
    fn block_on<F: Future + Send>(&self, fut: F) -> F::Output
    where
        F::Output: Send,
    {
        let rt = self
            .rt
            .as_ref()
            .expect("the runtime lives as long as the store");
        if tokio::runtime::Handle::try_current().is_ok() {
            // Inside the caller's runtime, blocking on another would panic: a thread of
            // our own waits instead.
            std::thread::scope(|s| {
                s.spawn(|| rt.block_on(fut))
                    .join()
                    .expect("a store request does not panic")
            })
        } else {
            rt.block_on(fut)
        }
    }

    fn error(&self, op: &'static str, key: &ObjectKey, e: object_store::Error) -> Error {
        store_error(op, self.object_url(key), e)
    }

    /// The object's size and ETag; `None` when there is none.
    ///
    /// # Errors
    /// [`Error::Store`] naming the object URL.
    pub fn head(&self, key: &ObjectKey) -> Result<Option<ObjectInfo>> {
        let inner = match &self.backend {
            Backend::Local(l) => return l.head(l.at(key), self.object_url(key)),
            Backend::Cloud { inner, .. } => inner,
        };
        match self.block_on(inner.head(&key.path)) {
            Ok(m) => Ok(Some(ObjectInfo {
                size: m.size,
                etag: m.e_tag,
                version: m.version,
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("head", key, e)),
        }
    }

    /// The object's bytes (at most `bytes_max`) and what the store says of them; `None`
    /// when there is no such object.
    ///
    /// # Errors
    /// [`Error::Store`] naming the object URL; of kind [`StoreErrorKind::TooLarge`] when
    /// it holds more than `bytes_max` bytes (not read).
    pub fn get(&self, key: &ObjectKey, bytes_max: u64) -> Result<Option<(Vec<u8>, ObjectInfo)>> {
        let url = || self.object_url(key);
        let too_large = |size: u64| Error::Store {
            op: "get",
            url: url(),
            kind: StoreErrorKind::TooLarge,
            source: Some(format!("{size} bytes, more than {bytes_max}").into()),
        };
        let inner = match &self.backend {
            Backend::Local(l) => return l.get(l.at(key), bytes_max, url()),
            Backend::Cloud { inner, .. } => inner,
        };
        let fut = async {
            let got = match inner.get_opts(&key.path, GetOptions::default()).await {
                Ok(g) => g,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(self.error("get", key, e)),
            };
            if got.meta.size > bytes_max {
                return Err(too_large(got.meta.size));
            }
            let info = ObjectInfo {
                size: got.meta.size,
                etag: got.meta.e_tag.clone(),
                version: got.meta.version.clone(),
            };
            let mut bytes = Vec::with_capacity(usize::try_from(got.meta.size).unwrap_or(0));
            let mut stream = got.into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.error("get", key, e))?;
                if (bytes.len() + chunk.len()) as u64 > bytes_max {
                    return Err(too_large((bytes.len() + chunk.len()) as u64));
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(Some((bytes, info)))
        };
        self.block_on(fut)
    }

    /// Creates the object with `bytes`, never replacing one: [`PutNew::Exists`] when one
    /// is there. See [`Store::put_mode`] for how.
    ///
    /// # Errors
    /// [`Error::Store`] naming the object URL.
    pub fn put_new(&self, key: &ObjectKey, bytes: Vec<u8>) -> Result<PutNew> {
        let inner = match &self.backend {
            Backend::Local(l) => {
                return l.put_new(l.at(key), &bytes, self.object_url(key));
            }
            Backend::Cloud { inner, .. } => inner,
        };
        let payload = PutPayload::from(bytes);
        if !self.head_first.load(Ordering::Relaxed) {
            let opts = PutOptions::from(PutMode::Create);
            match self.block_on(inner.put_opts(&key.path, payload.clone(), opts)) {
                Ok(r) => {
                    return Ok(PutNew::Created {
                        etag: r.e_tag,
                        version: r.version,
                    });
                }
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => return Ok(PutNew::Exists),
                Err(object_store::Error::NotImplemented { .. }) => {
                    self.head_first.store(true, Ordering::Relaxed);
                }
                // The server has no conditional put (501 to If-None-Match, retried as a
                // server error, then reported as a generic failure): not a store that is
                // down, a store without the feature.
                Err(_) if self.conditional_refused.load(Ordering::Relaxed) => {
                    self.head_first.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(self.error("put", key, e)),
            }
        }
        if self.head(key)?.is_some() {
            return Ok(PutNew::Exists);
        }
        let opts = PutOptions::from(PutMode::Overwrite);
        match self.block_on(inner.put_opts(&key.path, payload, opts)) {
            Ok(r) => Ok(PutNew::Created {
                etag: r.e_tag,
                version: r.version,
            }),
            Err(e) => Err(self.error("put", key, e)),
        }
    }

    /// One cheap request that proves the store answers and the credentials are accepted:
    /// a listing of at most one key under the prefix (for `file://`, that the directory
    /// exists, and its first entry).
    ///
    /// # Errors
    /// [`Error::Store`] naming the store's URL.
    pub fn probe(&self) -> Result<()> {
        let shown = self.url.to_string();
        let paged = match &self.backend {
            Backend::Local(l) => return l.probe(shown),
            Backend::Cloud { paged, .. } => paged,
        };
        let prefix = format!("{}/", self.base);
        let prefix = if self.base.as_ref().is_empty() {
            None
        } else {
            Some(prefix)
        };
        let opts = PaginatedListOptions {
            max_keys: Some(1),
            ..PaginatedListOptions::default()
        };
        let result = self
            .block_on(paged.list_paginated(prefix.as_deref(), opts))
            .map(drop);
        result.map_err(|e| store_error("list", shown, e))
    }
}

/// Connects through reqwest as object_store does by default, watching for a server that
/// answers 501 Not Implemented to a conditional request (`If-None-Match`).
#[derive(Debug)]
struct WatchConditional {
    refused: Arc<AtomicBool>,
}

impl object_store::client::HttpConnector for WatchConditional {
    fn connect(
        &self,
        options: &object_store::ClientOptions,
    ) -> object_store::Result<object_store::client::HttpClient> {
        let inner = object_store::client::ReqwestConnector::default().connect(options)?;
        Ok(object_store::client::HttpClient::new(WatchedClient {
            inner,
            refused: self.refused.clone(),
        }))
    }
}

#[derive(Debug)]
struct WatchedClient {
    inner: object_store::client::HttpClient,
    refused: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl object_store::client::HttpService for WatchedClient {
    async fn call(
        &self,
        req: object_store::client::HttpRequest,
    ) -> std::result::Result<object_store::client::HttpResponse, object_store::client::HttpError>
    {
        let conditional = req.headers().contains_key("if-none-match");
        let resp = self.inner.execute(req).await?;
        if conditional && resp.status().as_u16() == 501 {
            self.refused.store(true, Ordering::Relaxed);
        }
        Ok(resp)
    }
}

/// The prefix of a cloud URL as a key path.
fn prefix_path(url: &StoreUrl) -> ObjectPath {
    ObjectPath::from_iter(url.prefix().split('/').filter(|s| !s.is_empty()))
}

/// A duration as object_store's configuration wants it (humantime).
fn humantime_secs(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

/// An object_store error as the library's, with its kind.
fn store_error(op: &'static str, url: String, e: object_store::Error) -> Error {
    use object_store::Error as E;
    let kind = match &e {
        E::NotFound { .. } => StoreErrorKind::NotFound,
        E::AlreadyExists { .. } => StoreErrorKind::AlreadyExists,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => StoreErrorKind::Denied,
        E::NotImplemented { .. } | E::NotSupported { .. } => StoreErrorKind::Unsupported,
        E::Precondition { .. } | E::NotModified { .. } | E::InvalidPath { .. } => {
            StoreErrorKind::Other
        }
        E::UnknownConfigurationKey { .. } => StoreErrorKind::Config,
        // Transport failures, timeouts and server errors that outlived the retries: the
        // store, not the object, is the problem.
        _ => StoreErrorKind::Unavailable,
    };
    Error::Store {
        op,
        url,
        kind,
        source: Some(Box::new(e)),
    }
}
