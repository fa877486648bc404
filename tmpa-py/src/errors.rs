//! The library's errors in Python's terms: its exception classes, and each `Error` as the
//! `OSError` subclass or `ValueError` a Python caller expects, with `.path` and the rest.

use std::path::Path;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyString;
use tmpa_core::Error;

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
    "tmpa.toml cannot be used; `.path` names it."
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
pyo3::create_exception!(
    _tmpa,
    RootReplacedError,
    PyOSError,
    "The root directory was removed or replaced (a restore) since this Root opened it; `.filename` is the root. Call Root.reopen()."
);

/// Maps a library error to the Python exception described in the module docs.
pub(crate) fn to_py(e: Error) -> PyErr {
    Python::attach(|py| match e {
        Error::Io {
            op,
            ref path,
            ref source,
        } => os_error(py, source, Some(op), path).unwrap_or_else(|| PyOSError::new_err(e.chain())),
        Error::OpenRoot {
            ref path,
            ref source,
        } => os_error(py, source, None, path).unwrap_or_else(|| PyOSError::new_err(e.chain())),
        Error::NotRoot { .. } => NotARootError::new_err(e.to_string()),
        Error::Corrupt { ref path, .. } => with_path(py, CorruptError::new_err(e.chain()), path),
        Error::Unsafe { ref path, .. } => with_path(py, UnsafePathError::new_err(e.chain()), path),
        Error::Conflict { path } => PyOSError::new_err((
            errno(py, "EEXIST"),
            "already exists with different content",
            path_text(&path),
        )),
        Error::InvalidName {
            kind,
            ref value,
            reason,
        } => {
            let shown = PyString::new(py, value)
                .repr()
                .map_or_else(|_| format!("{value:?}"), |r| r.to_string());
            PyValueError::new_err(format!("invalid {kind} {shown}: {reason}"))
        }
        Error::InvalidEvent { .. } | Error::InvalidNotification { .. } => {
            PyValueError::new_err(e.to_string())
        }
        Error::Config { ref path, .. } => with_path(py, ConfigError::new_err(e.chain()), path),
        Error::Store { ref url, kind, .. } => {
            let kind = serde_json::to_value(kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let url = url.clone();
            with_attrs(
                py,
                StoreError::new_err(e.chain()),
                &[("url", url), ("kind", kind)],
            )
        }
        Error::StoreUnsupported { ref url, .. } => {
            let url = url.clone();
            with_attrs(
                py,
                StoreError::new_err(e.chain()),
                &[("url", url), ("kind", "unsupported".to_owned())],
            )
        }
        Error::RootReplaced { path, source } => RootReplacedError::new_err((
            errno(py, "ESTALE"),
            format!(
                "the root directory was removed or replaced since it was opened: call Root.reopen() ({})",
                source.chain()
            ),
            path_text(&path),
        )),
        Error::Locked {
            ref path,
            task,
            ref holder,
            ..
        } => {
            let (holder, task) = (holder.clone(), task.to_owned());
            with_attrs(
                py,
                PyOSError::new_err((errno(py, "EAGAIN"), e.to_string(), path_text(path))),
                &[("task", task), ("holder", holder)],
            )
        }
        Error::NotForgotten { ref path, .. } => {
            PyOSError::new_err((errno(py, "EIO"), e.to_string(), path_text(path)))
        }
        // A kind of error this version does not know: an OSError with the whole text.
        other => PyOSError::new_err(other.chain()),
    })
}

/// `OSError(errno, "{op}: {strerror}", filename)`, which Python turns into the errno's
/// subclass (`FileNotFoundError`, ...); `None` for an error without an OS error number.
pub(crate) fn os_error(
    py: Python<'_>,
    source: &std::io::Error,
    op: Option<&str>,
    path: &Path,
) -> Option<PyErr> {
    let errno = source.raw_os_error()?;
    let strerror = py
        .import("os")
        .and_then(|os| os.call_method1("strerror", (errno,)))
        .and_then(|s| s.extract::<String>())
        .unwrap_or_else(|_| source.to_string());
    let message = match op {
        Some(op) => format!("{op}: {strerror}"),
        None => strerror,
    };
    Some(PyOSError::new_err((errno, message, path_text(path))))
}

/// The value of `errno.{name}` (`EEXIST`, `ESTALE`): Python's, for this platform.
pub(crate) fn errno(py: Python<'_>, name: &str) -> i32 {
    py.import("errno")
        .and_then(|m| m.getattr(name))
        .and_then(|v| v.extract())
        .unwrap_or(0)
}

/// A path as text: as it is when it is UTF-8, else with its bytes escaped.
pub(crate) fn path_text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Sets `.path` on the exception's value.
pub(crate) fn with_path(py: Python<'_>, err: PyErr, path: &Path) -> PyErr {
    let _ = err.value(py).setattr("path", path_text(path));
    err
}

/// Sets string attributes on the exception's value.
pub(crate) fn with_attrs(py: Python<'_>, err: PyErr, attrs: &[(&str, String)]) -> PyErr {
    for (k, v) in attrs {
        let _ = err.value(py).setattr(*k, v);
    }
    err
}
