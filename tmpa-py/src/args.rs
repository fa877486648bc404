//! Arguments as Python callers give them: names as `str` (or `int` ids), days as `str` or
//! `datetime.date`, bytes-like data, any mapping for JSON, lock waits in seconds.

use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyInt, PyMemoryView, PyString};
use tmpa_core::{Day, ForgetOptions, NotificationId, SessionId, UserId};

use crate::errors::*;

/// `json.dumps(obj)` as bytes.
pub(crate) fn dumps(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let json = obj.py().import("json")?;
    let kwargs = PyDict::new(obj.py());
    kwargs.set_item("allow_nan", false)?;
    let text: String = json
        .call_method("dumps", (obj,), Some(&kwargs))?
        .extract()?;
    Ok(text.into_bytes())
}

/// `json.loads(bytes)`.
pub(crate) fn loads<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?
        .call_method1("loads", (PyBytes::new(py, bytes),))
}

/// The type's name, for a `TypeError`.
pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map_or_else(|_| "?".to_owned(), |n| n.to_string())
}

/// A name argument (user, notification id, session): a `str`, or an `int` (not a
/// `bool`) written in decimal.
pub(crate) fn name_arg(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<String> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(s.to_cow()?.into_owned());
    }
    if obj.is_instance_of::<PyInt>() && !obj.is_instance_of::<pyo3::types::PyBool>() {
        return Ok(obj.str()?.to_cow()?.into_owned());
    }
    Err(PyTypeError::new_err(format!(
        "{what} must be str or int, not {}",
        type_name(obj)
    )))
}

pub(crate) fn user_arg(obj: &Bound<'_, PyAny>) -> PyResult<UserId> {
    UserId::new(name_arg(obj, "user")?).map_err(to_py)
}

pub(crate) fn notification_arg(obj: &Bound<'_, PyAny>) -> PyResult<NotificationId> {
    NotificationId::new(name_arg(obj, "id")?).map_err(to_py)
}

pub(crate) fn session_arg(obj: &Bound<'_, PyAny>) -> PyResult<SessionId> {
    SessionId::new(name_arg(obj, "session")?).map_err(to_py)
}

/// A day argument: `"YYYY-MM-DD"` or a `datetime.date` (not a `datetime.datetime`, whose
/// day depends on a time zone: pass `dt.date()`).
pub(crate) fn day_arg(obj: &Bound<'_, PyAny>) -> PyResult<Day> {
    if let Ok(s) = obj.cast::<PyString>() {
        return s.to_cow()?.parse::<Day>().map_err(to_py);
    }
    let datetime = obj.py().import("datetime")?;
    let is = |class: &str| -> PyResult<bool> { obj.is_instance(&datetime.getattr(class)?) };
    if is("date")? && !is("datetime")? {
        let (y, m, d): (i32, u32, u32) = (
            obj.getattr("year")?.extract()?,
            obj.getattr("month")?.extract()?,
            obj.getattr("day")?.extract()?,
        );
        let date = chrono_date(y, m, d)
            .ok_or_else(|| PyValueError::new_err(format!("invalid day {y:04}-{m:02}-{d:02}")))?;
        return Ok(date);
    }
    Err(PyTypeError::new_err(format!(
        "day must be a str 'YYYY-MM-DD' or a datetime.date, not {}{}",
        type_name(obj),
        if is("datetime")? {
            " (pass its .date())"
        } else {
            ""
        }
    )))
}

/// The [`Day`] of a calendar date, through its text (tmpa-py does not depend on chrono).
pub(crate) fn chrono_date(y: i32, m: u32, d: u32) -> Option<Day> {
    format!("{y:04}-{m:02}-{d:02}").parse().ok()
}

/// A data argument: a bytes-like object (`bytes`, `bytearray`, `memoryview`). A `str` is
/// refused, as by a file opened in binary mode: encode it.
pub(crate) fn bytes_arg(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u8>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(b.to_vec());
    }
    if obj.is_instance_of::<PyMemoryView>() {
        let b = obj
            .py()
            .import("builtins")?
            .getattr("bytes")?
            .call1((obj,))?;
        return Ok(b.cast::<PyBytes>()?.as_bytes().to_vec());
    }
    let hint = if obj.is_instance_of::<PyString>() {
        " (encode it: data.encode())"
    } else {
        ""
    };
    Err(PyTypeError::new_err(format!(
        "{what} must be a bytes-like object, not {}{hint}",
        type_name(obj)
    )))
}

/// A mapping argument as a `dict` (`json.dumps` takes no other mapping).
pub(crate) fn mapping_arg<'py>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Bound<'py, PyAny>> {
    if obj.is_instance_of::<PyDict>() {
        return Ok(obj.clone());
    }
    let py = obj.py();
    let mapping = py.import("collections.abc")?.getattr("Mapping")?;
    if obj.is_instance(&mapping)? {
        return py.import("builtins")?.getattr("dict")?.call1((obj,));
    }
    Err(PyTypeError::new_err(format!(
        "{what} must be a mapping (a dict), not {}",
        type_name(obj)
    )))
}

/// The `lock_wait` argument of the forget calls: seconds, finite and not negative.
pub(crate) fn lock_wait_arg(secs: f64) -> PyResult<ForgetOptions> {
    if !secs.is_finite() || secs < 0.0 {
        return Err(PyValueError::new_err(format!(
            "lock_wait must be a finite number of seconds, not negative: {secs}"
        )));
    }
    Ok(ForgetOptions::with_lock_wait(Duration::from_secs_f64(secs)))
}
