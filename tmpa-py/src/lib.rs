//! The Python package `tmpa`: tmpa-core for the Python backend, so the backend and the
//! maintenance programs share one implementation of the formats and of durability.
//!
//! Every call releases the GIL while it does I/O. JSON crosses the boundary as text
//! through Python's own `json` module, so Python values map to JSON exactly as
//! `json.dumps`/`json.loads` map them (NaN and infinities are refused). Library errors
//! become Python exceptions that name the path: [`tmpa_core::Error::Io`] an `OSError` with
//! `errno` and `filename` (so `FileNotFoundError`, `PermissionError`, ... as usual), bad
//! names and events `ValueError`, corrupt files `tmpa.CorruptError` (a `ValueError`), a
//! directory that is not a root `tmpa.NotARootError` (a `ValueError`), a path leading
//! through a symlink or out of the root `tmpa.UnsafePathError` (an `OSError`), a
//! `{root}/tmpa.toml` that cannot be used `tmpa.ConfigError` (a `ValueError`, `.path`),
//! an object store that fails or that this build cannot reach `tmpa.StoreError` (an
//! `OSError`, `.url` and `.kind`).
//!
//! Built with tmpa-core's `object-store` feature: sessions archived in the object store
//! that `{root}/tmpa.toml` names are read and listed like local ones.

use std::path::{Path, PathBuf};

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use tmpa_core::{Day, Error, Event, NotificationId, SessionId, UserId};

pyo3::create_exception!(
    _tmpa,
    NotARootError,
    PyValueError,
    "The directory holds none of notifications/, token_stats/, chat_history/."
);
pyo3::create_exception!(
    _tmpa,
    CorruptError,
    PyValueError,
    "A file does not follow its format; `.path` names it."
);
pyo3::create_exception!(
    _tmpa,
    ConfigError,
    PyValueError,
    "{root}/tmpa.toml cannot be used; `.path` names it."
);
pyo3::create_exception!(
    _tmpa,
    StoreError,
    PyOSError,
    "The object store holding archived sessions failed or cannot be used; `.url` names the object, `.kind` says how (e.g. \"unavailable\", \"denied\")."
);
pyo3::create_exception!(
    _tmpa,
    UnsafePathError,
    PyOSError,
    "A path leads through a symlink, through a non-directory, or out of the root."
);

/// Maps a library error to the Python exception described in the module docs.
fn to_py(e: Error) -> PyErr {
    let message = e.chain();
    match e {
        Error::Io { path, source, .. } | Error::OpenRoot { path, source } => {
            match source.raw_os_error() {
                // OSError(errno, strerror, filename) picks the errno's subclass itself.
                Some(errno) => PyOSError::new_err((errno, message, path_text(&path))),
                None => PyOSError::new_err(message),
            }
        }
        Error::NotRoot { .. } => NotARootError::new_err(message),
        Error::Corrupt { path, .. } => with_path(CorruptError::new_err(message), &path),
        Error::Unsafe { path, .. } => with_path(UnsafePathError::new_err(message), &path),
        Error::Conflict { path } => PyOSError::new_err((libc_eexist(), message, path_text(&path))),
        Error::InvalidName { .. } | Error::InvalidEvent { .. } => PyValueError::new_err(message),
        Error::Config { path, .. } => with_path(ConfigError::new_err(message), &path),
        Error::Store { url, kind, .. } => {
            let kind = serde_json::to_value(kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            with_attrs(
                StoreError::new_err(message),
                &[("url", url), ("kind", kind)],
            )
        }
        Error::StoreUnsupported { url, .. } => with_attrs(
            StoreError::new_err(message),
            &[("url", url), ("kind", "unsupported".to_owned())],
        ),
        // A kind of error this version does not know: an OSError of the kind it amounts to.
        other => PyOSError::new_err(other.chain()),
    }
}

/// A path as text: as it is when it is UTF-8, else with its bytes escaped.
fn path_text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// `EEXIST`, without a libc dependency for one constant.
fn libc_eexist() -> i32 {
    std::io::Error::from(std::io::ErrorKind::AlreadyExists)
        .raw_os_error()
        .unwrap_or(17)
}

/// Sets `.path` on the exception's value.
fn with_path(err: PyErr, path: &Path) -> PyErr {
    Python::attach(|py| {
        let _ = err.value(py).setattr("path", path_text(path));
    });
    err
}

/// Sets string attributes on the exception's value.
fn with_attrs(err: PyErr, attrs: &[(&str, String)]) -> PyErr {
    Python::attach(|py| {
        for (k, v) in attrs {
            let _ = err.value(py).setattr(*k, v);
        }
    });
    err
}

/// `json.dumps(obj)` as bytes.
fn dumps(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let json = obj.py().import("json")?;
    let kwargs = PyDict::new(obj.py());
    kwargs.set_item("allow_nan", false)?;
    let text: String = json
        .call_method("dumps", (obj,), Some(&kwargs))?
        .extract()?;
    Ok(text.into_bytes())
}

/// `json.loads(bytes)`.
fn loads<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?
        .call_method1("loads", (PyBytes::new(py, bytes),))
}

fn day(s: &str) -> PyResult<Day> {
    s.parse::<Day>()
        .map_err(|e| PyValueError::new_err(format!("invalid day {s:?}: {e}")))
}

/// An opened TMPA root.
///
/// ```python
/// root = tmpa.Root("/opt/app")
/// root.record_event({"id": "a1", "ts": "2026-11-23T10:00:00Z", "user_id": "u1",
///                    "model": "m", "prompt_tokens": 3, "completion_tokens": 4})
/// ```
#[pyclass(frozen, module = "tmpa")]
struct Root {
    inner: tmpa_core::Root,
}

#[pymethods]
impl Root {
    /// Opens `path` as a TMPA root (it must hold notifications/, token_stats/ or
    /// chat_history/).
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let inner = py.detach(|| tmpa_core::Root::open(&path)).map_err(to_py)?;
        Ok(Root { inner })
    }

    /// The canonical path of the root.
    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.path().to_path_buf()
    }

    fn __repr__(&self) -> String {
        format!("tmpa.Root({:?})", path_text(self.inner.path()))
    }

    /// Writes `data` to `path` (relative to the root, or absolute inside it) atomically and
    /// durably, creating missing directories (never through a symlink). Returns the path.
    fn write_atomic(&self, py: Python<'_>, path: PathBuf, data: Vec<u8>) -> PyResult<PathBuf> {
        let rel = match path.strip_prefix(self.inner.path()) {
            Ok(r) if path.is_absolute() => r.to_path_buf(),
            _ => path,
        };
        py.detach(|| self.inner.write_file(&rel, &data))
            .map_err(to_py)
    }

    /// Records a usage event (a dict with at least id, ts, user_id, model, prompt_tokens,
    /// completion_tokens; other keys are kept): writes `token_stats/{day}/evt_{id}.json`
    /// atomically. Returns the path.
    fn record_event(&self, py: Python<'_>, event: &Bound<'_, PyAny>) -> PyResult<PathBuf> {
        let bytes = dumps(event)?;
        py.detach(|| {
            let e = Event::from_json(&bytes)?;
            self.inner.record_event(&e)
        })
        .map_err(to_py)
    }

    /// Delivers a notification (any JSON value) to a user's inbox as
    /// `inbox/ntf_{id}.json`. The id is `id`, else `notification["id"]`. Returns the id.
    #[pyo3(signature = (user, notification, id = None))]
    fn deliver(
        &self,
        py: Python<'_>,
        user: &str,
        notification: &Bound<'_, PyAny>,
        id: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<String> {
        let id = match id {
            Some(i) => i.str()?.to_string(),
            None => notification
                .get_item("id")
                .map_err(|_| PyValueError::new_err("the notification has no \"id\"; pass id="))?
                .str()?
                .to_string(),
        };
        let (u, n) = (
            UserId::new(user).map_err(to_py)?,
            NotificationId::new(id.clone()).map_err(to_py)?,
        );
        let body: serde_json::Value = serde_json::from_slice(&dumps(notification)?)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        py.detach(|| self.inner.deliver(&u, &n, &body))
            .map_err(to_py)?;
        Ok(id)
    }

    /// Acknowledges a notification (idempotent: the first receipt is kept). Returns the
    /// path of the receipt.
    fn ack(&self, py: Python<'_>, user: &str, id: &str) -> PyResult<PathBuf> {
        let (u, n) = (
            UserId::new(user).map_err(to_py)?,
            NotificationId::new(id).map_err(to_py)?,
        );
        py.detach(|| self.inner.ack(&u, &n)).map_err(to_py)
    }

    /// Whether a notification has been acknowledged (an archived one always has).
    fn is_acked(&self, py: Python<'_>, user: &str, id: &str) -> PyResult<bool> {
        let (u, n) = (
            UserId::new(user).map_err(to_py)?,
            NotificationId::new(id).map_err(to_py)?,
        );
        py.detach(|| self.inner.is_acked(&u, &n)).map_err(to_py)
    }

    /// The bytes of a notification, live (`inbox/ntf_{id}.json`) or archived by
    /// tmpa-archive (exactly the bytes it had in the inbox).
    fn read_notification<'py>(
        &self,
        py: Python<'py>,
        user: &str,
        id: &str,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let (u, n) = (
            UserId::new(user).map_err(to_py)?,
            NotificationId::new(id).map_err(to_py)?,
        );
        let bytes = py
            .detach(|| self.inner.read_notification(&u, &n))
            .map_err(to_py)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// A user's notifications as `(id, "live" | "archived" | "stored", acked)`, sorted by
    /// id ("stored": archived in the object store `tmpa.toml` names).
    fn list_notifications(
        &self,
        py: Python<'_>,
        user: &str,
    ) -> PyResult<Vec<(String, String, bool)>> {
        let u = UserId::new(user).map_err(to_py)?;
        let list = py
            .detach(|| self.inner.list_notifications(&u))
            .map_err(to_py)?;
        Ok(list
            .into_iter()
            .map(|n| {
                let where_ = match n.location {
                    tmpa_core::NotificationLocation::Live => "live",
                    tmpa_core::NotificationLocation::Stored => "stored",
                    // Archived, or a place this version does not know: archived somewhere.
                    _ => "archived",
                };
                (n.id.to_string(), where_.to_owned(), n.acked)
            })
            .collect())
    }

    /// The ids of a user's notifications that have not been acknowledged, sorted.
    fn unacked(&self, py: Python<'_>, user: &str) -> PyResult<Vec<String>> {
        let u = UserId::new(user).map_err(to_py)?;
        let ids = py.detach(|| self.inner.unacked(&u)).map_err(to_py)?;
        Ok(ids.into_iter().map(|i| i.to_string()).collect())
    }

    /// A day's valid events (compacted and loose, each id once, sorted by ts then id), as
    /// dicts. Corrupt files are skipped; `read_day` lists them.
    fn day_events<'py>(&self, py: Python<'py>, day: &str) -> PyResult<Bound<'py, PyList>> {
        let d = self::day(day)?;
        let read = py.detach(|| self.inner.read_day(d)).map_err(to_py)?;
        events_list(py, &read.events)
    }

    /// A day's events and the files that could not be used:
    /// `{"events": [...], "problems": [{"path": ..., "reason": ...}]}`.
    fn read_day<'py>(&self, py: Python<'py>, day: &str) -> PyResult<Bound<'py, PyDict>> {
        let d = self::day(day)?;
        let read = py.detach(|| self.inner.read_day(d)).map_err(to_py)?;
        let out = PyDict::new(py);
        out.set_item("events", events_list(py, &read.events)?)?;
        let problems = serde_json::to_vec(&read.problems).expect("problems serialize");
        out.set_item("problems", loads(py, &problems)?)?;
        Ok(out)
    }

    /// A day's summary (docs/FORMAT.md's `_summary.json` as a dict): the cached file when it is
    /// consistent with the day, else rebuilt from the events and rewritten.
    fn summary<'py>(&self, py: Python<'py>, day: &str) -> PyResult<Bound<'py, PyAny>> {
        let d = self::day(day)?;
        let read = py.detach(|| self.inner.summary(d)).map_err(to_py)?;
        loads(py, &read.summary.to_json())
    }

    /// Writes a live chat session, `chat_history/{user}/sessions/{session}.json`,
    /// atomically (replacing the previous version). Returns the path.
    fn write_session(
        &self,
        py: Python<'_>,
        user: &str,
        session: &str,
        data: Vec<u8>,
    ) -> PyResult<PathBuf> {
        let (u, s) = (
            UserId::new(user).map_err(to_py)?,
            SessionId::new(session).map_err(to_py)?,
        );
        py.detach(|| self.inner.write_session(&u, &s, &data))
            .map_err(to_py)
    }

    /// The bytes of a chat session, live or archived (decompressed): the live file, else
    /// its newest archived version, locally or in the object store `{root}/tmpa.toml`
    /// names.
    fn read_session<'py>(
        &self,
        py: Python<'py>,
        user: &str,
        session: &str,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let (u, s) = (
            UserId::new(user).map_err(to_py)?,
            SessionId::new(session).map_err(to_py)?,
        );
        let bytes = py
            .detach(|| self.inner.read_session(&u, &s))
            .map_err(to_py)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// A user's sessions as `(session, "live" | "archived" | "stored")`, sorted by
    /// session ("stored": in the object store `{root}/tmpa.toml` names).
    fn list_sessions(&self, py: Python<'_>, user: &str) -> PyResult<Vec<(String, String)>> {
        let u = UserId::new(user).map_err(to_py)?;
        let list = py.detach(|| self.inner.list_sessions(&u)).map_err(to_py)?;
        Ok(list
            .into_iter()
            .map(|(s, loc)| {
                let where_ = match loc {
                    tmpa_core::SessionLocation::Live => "live",
                    tmpa_core::SessionLocation::Archived => "archived",
                    tmpa_core::SessionLocation::Stored => "stored",
                    // A place this version does not know: archived somewhere.
                    _ => "archived",
                };
                (s.to_string(), where_.to_owned())
            })
            .collect())
    }
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
fn write_atomic(py: Python<'_>, path: PathBuf, data: Vec<u8>) -> PyResult<()> {
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
    m.add_class::<Root>()?;
    m.add_function(wrap_pyfunction!(write_atomic, m)?)?;
    m.add_function(wrap_pyfunction!(temp_final_name, m)?)?;
    m.add("NotARootError", m.py().get_type::<NotARootError>())?;
    m.add("CorruptError", m.py().get_type::<CorruptError>())?;
    m.add("UnsafePathError", m.py().get_type::<UnsafePathError>())?;
    m.add("ConfigError", m.py().get_type::<ConfigError>())?;
    m.add("StoreError", m.py().get_type::<StoreError>())?;
    Ok(())
}
