//! The Python package `tmpa`: tmpa-core for the Python backend, so the backend and the
//! maintenance programs share one implementation of the formats and of durability.
//!
//! Every call releases the GIL while it does I/O. JSON crosses the boundary as text
//! through Python's own `json` module, so Python values map to JSON exactly as
//! `json.dumps`/`json.loads` map them (NaN and infinities are refused), and numbers keep
//! their text (a 30-digit int stays one). Arguments are taken in Python's terms: names
//! (users, notification ids, sessions) as `str` or `int`, days as `"YYYY-MM-DD"` or a
//! `datetime.date`, data as a bytes-like object; anything else is a `TypeError` saying
//! what was expected.
//!
//! Library errors become Python exceptions that name the path once: [`tmpa_core::Error::Io`]
//! an `OSError` with `errno`, `strerror` and `filename` (so `FileNotFoundError`,
//! `PermissionError`, ... as usual), a file that exists with other content
//! `FileExistsError`, bad names, events and notifications `ValueError`, corrupt files
//! `tmpa.CorruptError` (a `ValueError`), a directory that is not a root
//! `tmpa.NotARootError` (a `ValueError`), a path leading through a symlink or out of the
//! root `tmpa.UnsafePathError` (an `OSError`), a `tmpa.toml` that cannot be used
//! `tmpa.ConfigError` (a `ValueError`, `.path`), an object store that fails or that this
//! build cannot reach `tmpa.StoreError` (an `OSError`, `.url` and `.kind`), and a root
//! directory replaced since it was opened `tmpa.RootReplacedError` (an `OSError` with
//! `errno.ESTALE`, never a `FileNotFoundError`: call `Root.reopen()`), a maintenance
//! job's lock that a forget waited for in vain `BlockingIOError` (`errno.EAGAIN`,
//! `.filename` the lock, `.task` and `.holder` the job), data that could not be forgotten
//! an `OSError` with `errno.EIO`.
//!
//! Built with tmpa-core's `object-store` feature: sessions and notifications archived in
//! the object store the configuration names are read and listed like local ones.

mod args;
mod errors;

use std::path::PathBuf;
use std::sync::{PoisonError, RwLock};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use tmpa_core::{
    Acked, Event, Forget, ForgetReport, InboxQuery, NotificationId, NotificationLocation,
    SessionLocation,
};

use args::*;
use errors::*;

/// An opened TMPA root.
///
/// ```python
/// root = tmpa.Root("/opt/app")
/// root.record_event({"id": "a1", "ts": "2026-11-23T10:00:00Z", "user_id": "u1",
///                    "model": "m", "prompt_tokens": 3, "completion_tokens": 4})
/// ```
#[pyclass(frozen, module = "tmpa")]
struct Root {
    /// Replaced by `reopen`; every call takes a clone (one `Arc`) and works on it.
    inner: RwLock<tmpa_core::Root>,
}

impl Root {
    /// The root the next call works on.
    fn root(&self) -> tmpa_core::Root {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[pymethods]
impl Root {
    /// Opens `path` as a TMPA root (it must hold notifications/, token_stats/ or
    /// chat_history/; `Root.create` makes one).
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let inner = py.detach(|| tmpa_core::Root::open(&path)).map_err(to_py)?;
        Ok(Root {
            inner: RwLock::new(inner),
        })
    }

    /// Makes `path` a root and opens it: creates the directory if missing (its parent must
    /// exist) and notifications/, token_stats/ and chat_history/ in it, each durably.
    /// Idempotent.
    #[staticmethod]
    fn create(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let inner = py
            .detach(|| tmpa_core::Root::create(&path))
            .map_err(to_py)?;
        Ok(Root {
            inner: RwLock::new(inner),
        })
    }

    /// Opens again the directory the root's path names now, after a restore replaced it
    /// (`RootReplacedError`); this object then works on the new one, in every thread.
    fn reopen(&self, py: Python<'_>) -> PyResult<()> {
        let current = self.root();
        let fresh = py.detach(|| current.reopen()).map_err(to_py)?;
        *self.inner.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }

    /// The canonical path of the root.
    #[getter]
    fn path(&self) -> PathBuf {
        self.root().path().to_path_buf()
    }

    fn __repr__(&self) -> String {
        format!("tmpa.Root({:?})", path_text(self.root().path()))
    }

    /// Writes `data` to `path` (relative to the root, or absolute inside it) atomically and
    /// durably, creating missing directories (never through a symlink). Returns the path.
    fn write_atomic(
        &self,
        py: Python<'_>,
        path: PathBuf,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<PathBuf> {
        let data = bytes_arg(data, "data")?;
        let root = self.root();
        let rel = match path.strip_prefix(root.path()) {
            Ok(r) if path.is_absolute() => r.to_path_buf(),
            _ => path,
        };
        py.detach(|| root.write_file(&rel, &data)).map_err(to_py)
    }

    /// Records a usage event (a mapping with at least id, ts, user_id, model,
    /// prompt_tokens, completion_tokens; other keys are kept): writes
    /// `token_stats/{day}/evt_{id}.json` atomically. Returns the path.
    fn record_event(&self, py: Python<'_>, event: &Bound<'_, PyAny>) -> PyResult<PathBuf> {
        let bytes = dumps(&mapping_arg(event, "event")?)?;
        let root = self.root();
        py.detach(|| {
            let e = Event::from_json(&bytes)?;
            root.record_event(&e)
        })
        .map_err(to_py)
    }

    /// Delivers a notification (any JSON value) to a user's inbox as
    /// `inbox/ntf_{id}.json`. The id is `id`, else `notification["id"]`. Idempotent with
    /// the same value; FileExistsError with another. Returns the id.
    #[pyo3(signature = (user, notification, id = None))]
    fn deliver(
        &self,
        py: Python<'_>,
        user: &Bound<'_, PyAny>,
        notification: &Bound<'_, PyAny>,
        id: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<String> {
        let id = match id {
            Some(i) => name_arg(i, "id")?,
            None => {
                let given = notification
                    .cast::<PyDict>()
                    .ok()
                    .and_then(|d| d.get_item("id").ok().flatten())
                    .ok_or_else(|| {
                        PyValueError::new_err("the notification has no \"id\"; pass id=")
                    })?;
                name_arg(&given, "the notification's \"id\"")?
            }
        };
        let (u, n) = (
            user_arg(user)?,
            NotificationId::new(id.clone()).map_err(to_py)?,
        );
        let json = dumps(notification)?;
        let root = self.root();
        py.detach(|| root.deliver_json(&u, &n, &json))
            .map_err(to_py)?;
        Ok(id)
    }

    /// Acknowledges a notification (idempotent: the first receipt is kept). Returns the
    /// path of the receipt, or None for an archived notification (acknowledged already).
    /// FileNotFoundError for an id never delivered; nothing is then created.
    fn ack(
        &self,
        py: Python<'_>,
        user: &Bound<'_, PyAny>,
        id: &Bound<'_, PyAny>,
    ) -> PyResult<Option<PathBuf>> {
        let (u, n) = (user_arg(user)?, notification_arg(id)?);
        let root = self.root();
        match py.detach(|| root.ack(&u, &n)).map_err(to_py)? {
            Acked::Receipt(path) => Ok(Some(path)),
            // Archived, or a way this version does not know: nothing was written.
            _ => Ok(None),
        }
    }

    /// Whether a notification has been acknowledged (an archived one always has).
    fn is_acked(
        &self,
        py: Python<'_>,
        user: &Bound<'_, PyAny>,
        id: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let (u, n) = (user_arg(user)?, notification_arg(id)?);
        let root = self.root();
        py.detach(|| root.is_acked(&u, &n)).map_err(to_py)
    }

    /// The bytes of a notification, live (`inbox/ntf_{id}.json`) or archived by
    /// tmpa-archive (exactly the bytes it had in the inbox).
    fn read_notification<'py>(
        &self,
        py: Python<'py>,
        user: &Bound<'py, PyAny>,
        id: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let (u, n) = (user_arg(user)?, notification_arg(id)?);
        let root = self.root();
        let bytes = py
            .detach(|| root.read_notification(&u, &n))
            .map_err(to_py)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// A user's notifications as `(id, "live" | "archived" | "stored", acked)`, sorted by
    /// id ("stored": archived in the object store the configuration names).
    fn list_notifications(
        &self,
        py: Python<'_>,
        user: &Bound<'_, PyAny>,
    ) -> PyResult<Vec<(String, String, bool)>> {
        let u = user_arg(user)?;
        let root = self.root();
        let list = py.detach(|| root.list_notifications(&u)).map_err(to_py)?;
        Ok(list
            .into_iter()
            .map(|n| {
                let where_ = match n.location {
                    NotificationLocation::Live => "live",
                    NotificationLocation::Stored => "stored",
                    // Archived, or a place this version does not know: archived somewhere.
                    _ => "archived",
                };
                (n.id.to_string(), where_.to_owned(), n.acked)
            })
            .collect())
    }

    /// The ids of a user's notifications that have not been acknowledged, sorted.
    fn unacked(&self, py: Python<'_>, user: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
        let u = user_arg(user)?;
        let root = self.root();
        let ids = py.detach(|| root.unacked(&u)).map_err(to_py)?;
        Ok(ids.into_iter().map(String::from).collect())
    }

    /// The live notifications of a user, sorted by id, as dicts
    /// `{"id": str, "acked": bool, "body": bytes}`: one call for a page of notifications.
    /// `unacked_only`: without a read receipt only; `after`: ids after this one; `limit`:
    /// at most so many.
    #[pyo3(signature = (user, *, unacked_only = false, after = None, limit = None))]
    fn inbox<'py>(
        &self,
        py: Python<'py>,
        user: &Bound<'py, PyAny>,
        unacked_only: bool,
        after: Option<&Bound<'py, PyAny>>,
        limit: Option<usize>,
    ) -> PyResult<Bound<'py, PyList>> {
        let u = user_arg(user)?;
        let query = InboxQuery {
            unacked_only,
            after: after.map(notification_arg).transpose()?,
            limit,
        };
        let root = self.root();
        let items = py.detach(|| root.inbox(&u, &query)).map_err(to_py)?;
        let out = PyList::empty(py);
        for item in items {
            let d = PyDict::new(py);
            d.set_item("id", item.id.as_str())?;
            d.set_item("acked", item.acked)?;
            d.set_item("body", PyBytes::new(py, &item.body))?;
            out.append(d)?;
        }
        Ok(out)
    }

    /// A day's valid events (compacted and loose, each id once, sorted by ts then id), as
    /// dicts. Corrupt files are skipped; `read_day` lists them.
    fn day_events<'py>(
        &self,
        py: Python<'py>,
        day: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let d = day_arg(day)?;
        let root = self.root();
        let read = py.detach(|| root.read_day(d)).map_err(to_py)?;
        events_list(py, &read.events)
    }

    /// A day's events and the files that could not be used:
    /// `{"events": [...], "problems": [{"path": ..., "kind": ..., "reason": ...}]}`.
    fn read_day<'py>(
        &self,
        py: Python<'py>,
        day: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let d = day_arg(day)?;
        let root = self.root();
        let read = py.detach(|| root.read_day(d)).map_err(to_py)?;
        let out = PyDict::new(py);
        out.set_item("events", events_list(py, &read.events)?)?;
        let problems = serde_json::to_vec(&read.problems).expect("problems serialize");
        out.set_item("problems", loads(py, &problems)?)?;
        Ok(out)
    }

    /// A day's summary (docs/FORMAT.md's `_summary.json` as a dict) plus `"problems"`: the
    /// files (or lines of `_compacted.json`) it could not count, each
    /// `{"path", "kind", "reason"[, "line"]}`. Empty problems: the totals cover every event
    /// of the day; otherwise they cover only what could be read, and the problems say what
    /// was left out.
    fn summary<'py>(
        &self,
        py: Python<'py>,
        day: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let d = day_arg(day)?;
        let root = self.root();
        let read = py.detach(|| root.summary(d)).map_err(to_py)?;
        let out = loads(py, &read.summary.to_json())?;
        let problems = serde_json::to_vec(&read.problems).expect("problems serialize");
        out.set_item("problems", loads(py, &problems)?)?;
        Ok(out)
    }

    /// Writes a live chat session, `chat_history/{user}/sessions/{session}.json`,
    /// atomically (replacing the previous version). `data` is bytes-like (a str is a
    /// TypeError: encode it). Returns the path.
    fn write_session(
        &self,
        py: Python<'_>,
        user: &Bound<'_, PyAny>,
        session: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<PathBuf> {
        let (u, s) = (user_arg(user)?, session_arg(session)?);
        let data = bytes_arg(data, "data")?;
        let root = self.root();
        py.detach(|| root.write_session(&u, &s, &data))
            .map_err(to_py)
    }

    /// The bytes of a chat session, live or archived (decompressed): the live file, else
    /// its newest archived version, locally or in the object store the configuration
    /// names.
    fn read_session<'py>(
        &self,
        py: Python<'py>,
        user: &Bound<'py, PyAny>,
        session: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let (u, s) = (user_arg(user)?, session_arg(session)?);
        let root = self.root();
        let bytes = py.detach(|| root.read_session(&u, &s)).map_err(to_py)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Deletes one chat session of a user everywhere: live, every archived version
    /// locally and in the object store. Returns a `ForgetReport` (what went where; all
    /// lists empty when nothing was left). Idempotent. Waits at most `lock_wait` seconds
    /// for a running tmpa-archive (then `BlockingIOError`, nothing changed).
    #[pyo3(signature = (user, session, *, lock_wait = 30.0))]
    fn delete_session<'py>(
        &self,
        py: Python<'py>,
        user: &Bound<'py, PyAny>,
        session: &Bound<'py, PyAny>,
        lock_wait: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (u, s) = (user_arg(user)?, session_arg(session)?);
        let options = lock_wait_arg(lock_wait)?;
        forget(py, self.root(), move |r| {
            r.forget(Forget::Session(&u, &s), &options)
        })
    }

    /// Deletes one notification of a user everywhere: the inbox file, its ack, and every
    /// archived copy (a batch holding others is rewritten without it, verified, then the
    /// old one deleted). Returns a `ForgetReport`. Idempotent; `lock_wait` as for
    /// `delete_session`.
    #[pyo3(signature = (user, id, *, lock_wait = 30.0))]
    fn delete_notification<'py>(
        &self,
        py: Python<'py>,
        user: &Bound<'py, PyAny>,
        id: &Bound<'py, PyAny>,
        lock_wait: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (u, n) = (user_arg(user)?, notification_arg(id)?);
        let options = lock_wait_arg(lock_wait)?;
        forget(py, self.root(), move |r| {
            r.forget(Forget::Notification(&u, &n), &options)
        })
    }

    /// Forgets a user (a data-deletion request): `chat_history/{user}/` and
    /// `notifications/{user}/` whole, the user's archives in the object store, and every
    /// usage event of the user, loose or compacted (erased: past days' totals change).
    /// Returns a `ForgetReport`. Idempotent: a forget interrupted anywhere is finished by
    /// calling it again. Waits at most `lock_wait` seconds for a running tmpa-archive or
    /// tmpa-compact (then `BlockingIOError`, nothing changed).
    #[pyo3(signature = (user, *, lock_wait = 30.0))]
    fn forget_user<'py>(
        &self,
        py: Python<'py>,
        user: &Bound<'py, PyAny>,
        lock_wait: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let u = user_arg(user)?;
        let options = lock_wait_arg(lock_wait)?;
        forget(py, self.root(), move |r| {
            r.forget(Forget::User(&u), &options)
        })
    }

    /// A user's sessions as `(session, "live" | "archived" | "stored")`, sorted by
    /// session ("stored": in the object store the configuration names).
    fn list_sessions(
        &self,
        py: Python<'_>,
        user: &Bound<'_, PyAny>,
    ) -> PyResult<Vec<(String, String)>> {
        let u = user_arg(user)?;
        let root = self.root();
        let list = py.detach(|| root.list_sessions(&u)).map_err(to_py)?;
        Ok(list
            .into_iter()
            .map(|(s, loc)| {
                let where_ = match loc {
                    SessionLocation::Live => "live",
                    SessionLocation::Archived => "archived",
                    SessionLocation::Stored => "stored",
                    // A place this version does not know: archived somewhere.
                    _ => "archived",
                };
                (s.to_string(), where_.to_owned())
            })
            .collect())
    }
}

/// Runs a forget with the GIL released and returns its report as a dict.
fn forget<'py>(
    py: Python<'py>,
    root: tmpa_core::Root,
    what: impl FnOnce(&tmpa_core::Root) -> tmpa_core::Result<ForgetReport> + Send,
) -> PyResult<Bound<'py, PyAny>> {
    let report = py.detach(|| what(&root)).map_err(to_py)?;
    let json = serde_json::to_vec(&report)
        .map_err(|e| PyValueError::new_err(format!("a path of the report is not UTF-8: {e}")))?;
    loads(py, &json)
}

fn events_list<'py>(py: Python<'py>, events: &[Event]) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for e in events {
        list.append(loads(py, e.json_bytes())?)?;
    }
    Ok(list)
}

/// Writes `data` to `path` atomically and durably (tmp in the same directory, fsync,
/// rename, directory fsync). The directory must exist.
#[pyfunction]
fn write_atomic(py: Python<'_>, path: PathBuf, data: &Bound<'_, PyAny>) -> PyResult<()> {
    let data = bytes_arg(data, "data")?;
    py.detach(|| tmpa_core::write(&path, &data)).map_err(to_py)
}

/// If `name` is a temporary file name (`{final}.tmp` or `{final}.tmp.{suffix}`), the
/// final name it stands for, else None.
#[pyfunction]
fn temp_final_name(name: &str) -> Option<String> {
    tmpa_core::temp_final_name(std::ffi::OsStr::new(name)).map(|n| n.to_string_lossy().into_owned())
}

/// The `tmpa._tmpa` extension module (re-exported by `tmpa`).
#[pymodule]
fn _tmpa(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<Root>()?;
    m.add_function(wrap_pyfunction!(write_atomic, m)?)?;
    m.add_function(wrap_pyfunction!(temp_final_name, m)?)?;
    m.add("NotARootError", m.py().get_type::<NotARootError>())?;
    m.add("CorruptError", m.py().get_type::<CorruptError>())?;
    m.add("UnsafePathError", m.py().get_type::<UnsafePathError>())?;
    m.add("ConfigError", m.py().get_type::<ConfigError>())?;
    m.add("StoreError", m.py().get_type::<StoreError>())?;
    m.add("RootReplacedError", m.py().get_type::<RootReplacedError>())?;
    Ok(())
}
